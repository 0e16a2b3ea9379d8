/* capture.h: what capture.c takes from the files split out of it, the
 * lower parts of capture (layer 3 in chkpt.h's map): pickler.c, the
 * pickler's plumbing, and salience.c, which variables a snapshot holds.
 * Both call base only; capture.c calls them. */
#ifndef CHKPT_CAPTURE_H
#define CHKPT_CAPTURE_H

#include "chkpt.h"

/* ---- pickler.c ---- */

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
/* pickler_cls(sink, **kwargs).dump(obj), the sink holding at most budget
 * bytes (limit, --max-pickle-size, names it in the message): the in-band
 * bytes, or NULL with the exception set (*over when the budget stopped
 * it). */
PyObject *chkpt_pickle_bounded(chkpt_state *st, PyObject *pickler_cls,
                               PyObject *kwargs, PyObject *obj,
                               long long budget, long long limit, int *over);
/* copyreg._slotnames patched while a snapshot pickles, so that no
 * __slotnames__ cache is left on the script's classes. */
typedef struct {
    PyObject *copyreg, *orig;
} chkpt_slotnames_patch;
void chkpt_slotnames_install(chkpt_slotnames_patch *p);
void chkpt_slotnames_uninstall(chkpt_slotnames_patch *p);
/* Called from chkpt_capture_init: creates the sink's type. */
int chkpt_pickler_init(PyObject *module);

/* ---- salience.c ---- */

/* Never captured: definitions and machinery rather than data. */
int chkpt_is_excluded(chkpt_state *st, PyObject *name, PyObject *obj);
/* Captured all the same: passed to track() (a function or class of the
 * script), under a name that is not __dunder__. Never raises. */
int chkpt_is_tracked_anyway(CheckpointObject *ck, PyObject *name, PyObject *obj);
/* Is tp from a tracked library (Checkpoint.track_library)? */
int chkpt_is_library_type(CheckpointObject *ck, PyTypeObject *tp);
/* 1 salient, 0 not, -1 error; seen is a scratch set. */
int chkpt_is_salient(CheckpointObject *ck, PyObject *obj, PyObject *seen);

#endif
