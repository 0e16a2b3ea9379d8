/* pickler.c: the plumbing of capture's pickler. Out-of-band buffers
 * collected by the buffer_callback (zero-copy: their exports are held until
 * the snapshot is written), the sink that holds a variable's in-band bytes
 * up to --max-pickle-size, and copyreg._slotnames patched so that pickling
 * leaves no cache on the script's classes. Used by the capture (take/)
 * and by export (read/); calls helpers only (pickler.h). */
#include "pickler.h"
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* out-of-band buffers collected by the buffer_callback                */

void
chkpt_bufvec_truncate(chkpt_bufvec *v, Py_ssize_t n)
{
    while (v->n > n) {
        PyBuffer_Release(&v->views[--v->n]);
    }
}

void
chkpt_bufvec_free(chkpt_bufvec *v)
{
    chkpt_bufvec_truncate(v, 0);
    PyMem_Free(v->views);
    v->views = NULL;
    v->cap = 0;
}

#define BUFVEC_CAPSULE "chkpt.capture.bufvec"

/* buffer_callback(picklebuffer): keep contiguous buffers out of band
 * (return False), leave the others in band (return True). */
static PyObject *
buffer_callback(PyObject *capsule, PyObject *pb)
{
    chkpt_bufvec *v = PyCapsule_GetPointer(capsule, BUFVEC_CAPSULE);
    if (v == NULL) {
        return NULL;
    }
    if (v->n == v->cap) {
        Py_ssize_t cap = v->cap ? v->cap * 2 : 16;
        Py_buffer *nv = PyMem_Realloc(v->views, (size_t)cap * sizeof(Py_buffer));
        if (nv == NULL) {
            return PyErr_NoMemory();
        }
        v->views = nv;
        v->cap = cap;
    }
    /* the raw bytes in memory order, as PickleBuffer.raw() gives them: C or
     * Fortran order (numpy records which when it reduces) */
    if (PyObject_GetBuffer(pb, &v->views[v->n], PyBUF_ANY_CONTIGUOUS) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError)) {
            return NULL;
        }
        PyErr_Clear();
        Py_RETURN_TRUE;        /* non-contiguous: serialize in band */
    }
    v->n++;
    Py_RETURN_FALSE;
}

static PyMethodDef buffer_callback_def = {
    "buffer_callback", (PyCFunction)buffer_callback, METH_O, NULL
};

/* ------------------------------------------------------------------ */
/* in-band pickle bytes, held in memory up to a room                 */

/* The file a pickle.Pickler writes into: it keeps what it is given until
 * the snapshot is written, up to `room` bytes. The C pickler writes each
 * 64 KiB frame as it is done, and large payloads at once, so a hostile
 * __reduce__ producing gigabytes is stopped before its output is held. */
typedef struct {
    PyObject_HEAD
    PyObject *parts;            /* list of bytes */
    long long total;
    long long room;           /* what this variable may still add */
    long long limit;            /* --max-pickle-size, for the message */
    int over;
} PickleSinkObject;

static void
sink_dealloc(PickleSinkObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(self->parts);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyObject *
sink_write(PickleSinkObject *self, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t len = view.len;
    if (self->total + len > self->room) {
        PyBuffer_Release(&view);
        self->over = 1;
        return PyErr_Format(PyExc_MemoryError,
                            "pickled, it goes over --max-pickle-size (%lld "
                            "bytes for one snapshot)", self->limit);
    }
    /* bytes are immutable: kept as they are; anything else is copied */
    PyObject *part = PyBytes_CheckExact(data) ? Py_NewRef(data)
                     : PyBytes_FromStringAndSize(view.buf, len);
    PyBuffer_Release(&view);
    if (part == NULL || PyList_Append(self->parts, part) < 0) {
        Py_XDECREF(part);
        return NULL;
    }
    Py_DECREF(part);
    self->total += len;
    return PyLong_FromSsize_t(len);
}

static PyMethodDef sink_methods[] = {
    {"write", (PyCFunction)sink_write, METH_O, NULL},
    {NULL, NULL, 0, NULL}
};

static PyType_Slot sink_slots[] = {
    {Py_tp_doc, "Where chkpt's pickler writes a variable's pickle."},
    {Py_tp_dealloc, sink_dealloc},
    {Py_tp_methods, sink_methods},
    {0, NULL}
};

static PyType_Spec sink_spec = {
    .name = "chkpt._chkpt._PickleSink",
    .basicsize = sizeof(PickleSinkObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = sink_slots,
};

int
chkpt_pickler_init(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    st->PickleSink_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &sink_spec, NULL);
    return st->PickleSink_Type == NULL ? -1 : 0;
}

PyObject *
chkpt_pickler_kwargs(chkpt_bufvec *v)
{
    PyObject *capsule = PyCapsule_New(v, BUFVEC_CAPSULE, NULL);
    PyObject *callback = capsule ? PyCFunction_New(&buffer_callback_def, capsule)
                                 : NULL;
    PyObject *kwargs = callback ? Py_BuildValue("{s:i,s:O}", "protocol", 5,
                                                "buffer_callback", callback)
                                : NULL;
    Py_XDECREF(callback);
    Py_XDECREF(capsule);
    return kwargs;
}

/* the default --max-pickle-size on a machine whose memory is unknown or
 * small */
#define MIN_DEFAULT_PICKLE_SIZE (256LL << 20)

long long
chkpt_default_max_pickle_size(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    long long quarter = pages > 0 && page > 0 ? (long long)pages * page / 4 : 0;
    return quarter > MIN_DEFAULT_PICKLE_SIZE ? quarter : MIN_DEFAULT_PICKLE_SIZE;
}

/* pickler_cls(sink, **kwargs).dump(obj): the in-band bytes, or NULL with
 * the exception set (*over when the room stopped it). */
PyObject *
chkpt_pickle_bounded(chkpt_state *st, PyObject *pickler_cls, PyObject *kwargs,
               PyObject *obj, long long room, long long limit, int *over)
{
    *over = 0;
    PickleSinkObject *sink = PyObject_New(PickleSinkObject, st->PickleSink_Type);
    if (sink == NULL) {
        return NULL;
    }
    sink->parts = PyList_New(0);
    sink->total = 0;
    sink->room = room;
    sink->limit = limit;
    sink->over = 0;
    PyObject *result = NULL;
    PyObject *args = sink->parts ? PyTuple_Pack(1, (PyObject *)sink) : NULL;
    PyObject *pickler = args ? PyObject_Call(pickler_cls, args, kwargs) : NULL;
    Py_XDECREF(args);
    PyObject *r = pickler ? PyObject_CallMethod(pickler, "dump", "(O)", obj) : NULL;
    Py_XDECREF(pickler);
    if (r == NULL) {
        *over = sink->over;
        goto done;
    }
    Py_DECREF(r);
    Py_ssize_t n = PyList_GET_SIZE(sink->parts);
    if (n == 1) {
        result = Py_NewRef(PyList_GET_ITEM(sink->parts, 0));
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)sink->total);
    if (result == NULL) {
        goto done;
    }
    char *dst = PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyList_GET_ITEM(sink->parts, i);
        memcpy(dst, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
        dst += PyBytes_GET_SIZE(part);
    }
done:
    Py_DECREF(sink);
    return result;
}

/* ------------------------------------------------------------------ */
/* pickling without side effects on the script's classes                */

/* object.__reduce_ex__ asks copyreg._slotnames(cls), which caches its
 * answer as cls.__slotnames__: the script would see a new attribute on its
 * classes after a snapshot. While capturing, copyreg._slotnames is this
 * wrapper: same answer, cached in chkpt's own dict, the class left as it
 * was. self = (original _slotnames, cache dict). */
static PyObject *
slotnames_wrapper(PyObject *self, PyObject *cls)
{
    PyObject *orig = PyTuple_GET_ITEM(self, 0);
    PyObject *cache = PyTuple_GET_ITEM(self, 1);
    PyObject *names = PyDict_GetItemWithError(cache, cls);
    if (names != NULL) {
        return Py_NewRef(names);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    names = PyObject_CallOneArg(orig, cls);
    if (names == NULL) {
        return NULL;
    }
    /* type.__reduce_ex__ only asks when the class has no __slotnames__ of
     * its own: whatever is there now was put by the original */
    if (PyType_Check(cls) && PyObject_DelAttrString(cls, "__slotnames__") < 0) {
        PyErr_Clear();
    }
    if (PyDict_SetItem(cache, cls, names) < 0) {
        Py_DECREF(names);
        return NULL;
    }
    return names;
}

static PyMethodDef slotnames_def = {
    "_slotnames", (PyCFunction)slotnames_wrapper, METH_O, NULL
};

void
chkpt_slotnames_install(chkpt_slotnames_patch *p)
{
    p->copyreg = PyImport_ImportModule("copyreg");
    p->orig = p->copyreg ? PyObject_GetAttrString(p->copyreg, "_slotnames") : NULL;
    PyObject *cache = p->orig ? PyDict_New() : NULL;
    PyObject *self = cache ? PyTuple_Pack(2, p->orig, cache) : NULL;
    PyObject *fn = self ? PyCFunction_New(&slotnames_def, self) : NULL;
    if (fn == NULL || PyObject_SetAttrString(p->copyreg, "_slotnames", fn) < 0) {
        PyErr_Clear();          /* pickling still works, with the cache */
        Py_CLEAR(p->orig);
    }
    Py_XDECREF(cache);
    Py_XDECREF(self);
    Py_XDECREF(fn);
}

void
chkpt_slotnames_uninstall(chkpt_slotnames_patch *p)
{
    if (p->copyreg != NULL && p->orig != NULL) {
        chkpt_saved_error e;
        chkpt_error_save(&e);
        if (PyObject_SetAttrString(p->copyreg, "_slotnames", p->orig) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
    }
    Py_CLEAR(p->orig);
    Py_CLEAR(p->copyreg);
}

