/* pickler.h: the pickler's plumbing (pickler.c), shared by the capture
 * (take/) and the export verb (read/): protocol 5 with out-of-band
 * buffers, the bounded sink, the copyreg patch. Calls helpers only. */
#ifndef CHKPT_PICKLER_H
#define CHKPT_PICKLER_H

#include "chkpt.h"

/* The out-of-band buffers of the variables pickled so far: their exports
 * are held until chkpt_bufvec_free. */
typedef struct {
    Py_buffer *views;
    Py_ssize_t n, cap;
} chkpt_bufvec;

/* Releases the buffers from index n on (those of a variable given up). */
void chkpt_bufvec_truncate(chkpt_bufvec *v, Py_ssize_t n);
void chkpt_bufvec_free(chkpt_bufvec *v);
/* The keyword arguments of capture's pickle.Pickler: protocol 5 and a
 * buffer_callback that keeps contiguous buffers out of band, in v (which
 * must outlive every use of the dict). New reference, or NULL. */
PyObject *chkpt_pickler_kwargs(chkpt_bufvec *v);
/* pickler_cls(sink, **kwargs).dump(obj), the sink holding at most room
 * bytes (limit, --max-pickle-size, names it in the message): the in-band
 * bytes, or NULL with the exception set (*over when the room stopped
 * it). */
PyObject *chkpt_pickle_bounded(chkpt_state *st, PyObject *pickler_cls,
                               PyObject *kwargs, PyObject *obj,
                               long long room, long long limit, int *over);
/* copyreg._slotnames patched while a snapshot pickles, so that no
 * __slotnames__ cache is left on the script's classes. */
typedef struct {
    PyObject *copyreg, *orig;
} chkpt_slotnames_patch;
void chkpt_slotnames_install(chkpt_slotnames_patch *p);
void chkpt_slotnames_uninstall(chkpt_slotnames_patch *p);
/* Called from chkpt_capture_init: creates the sink's type. */
int chkpt_pickler_init(PyObject *module);

/* --max-pickle-size when not given: a quarter of physical memory. */
long long chkpt_default_max_pickle_size(void);


#endif
