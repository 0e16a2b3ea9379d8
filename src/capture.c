/* capture.c: what goes into a snapshot.
 *
 * chkpt_capture() picks the frame (the caller's for a manual snapshot, the
 * innermost frame running the script's code otherwise), selects its salient
 * variables (locals over its module's globals), pickles each one on its own
 * with protocol 5 and a buffer_callback so that array data goes out of band
 * untouched, and hands the pickles, the buffers (zero-copy: the exports are
 * held while the GIL is released around the store I/O) and the sources of
 * the script and its sibling modules to the store, with a JSON meta
 * document (docs/FORMAT.md, "Snapshot metadata").
 *
 * Nothing here raises into the script: a variable that cannot be pickled is
 * skipped with one `chkpt:` warning per name per run, any other failure is
 * one `chkpt:` line and the snapshot returns None. Only exceptions that
 * are not Exceptions (Ctrl-C's KeyboardInterrupt, a signal handler's
 * SystemExit, raised while a user's __reduce__ runs) propagate, so that the
 * script stops as it would have without chkpt.
 */
#include "chkpt.h"
#include "writer.h"
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>

/* The code objects of the script's Python-level signal handlers. */
static PyObject *
signal_handler_codes(void)
{
    PyObject *codes = PySet_New(NULL);
    PyObject *signal = codes ? PyImport_ImportModule("signal") : NULL;
    PyObject *sigs = signal ? PyObject_CallMethod(signal, "valid_signals", NULL)
                            : NULL;
    PyObject *it = sigs ? PyObject_GetIter(sigs) : NULL;
    PyObject *n;
    while (it != NULL && (n = PyIter_Next(it)) != NULL) {
        PyObject *h = PyObject_CallMethod(signal, "getsignal", "O", n);
        Py_DECREF(n);
        PyObject *code = h ? PyObject_GetAttrString(h, "__code__") : NULL;
        if (code == NULL || PySet_Add(codes, code) < 0) {
            PyErr_Clear();          /* C handlers, SIG_DFL: no code */
        }
        Py_XDECREF(code);
        Py_XDECREF(h);
    }
    int failed = it == NULL || PyErr_Occurred();
    Py_XDECREF(it);
    Py_XDECREF(sigs);
    Py_XDECREF(signal);
    if (failed) {
        Py_XDECREF(codes);
        return NULL;
    }
    return codes;
}

/* Was the pending exception raised in one of the script's signal handlers
 * (which python runs wherever the main thread is, here in a __reduce__)? */
static int
raised_by_signal_handler(void)
{
    chkpt_saved_error e;
    chkpt_error_save(&e);
    PyObject *exc = chkpt_error_value(&e);
    int found = 0;
    PyObject *codes = signal_handler_codes();
    PyObject *tb = (codes && exc) ? PyException_GetTraceback(exc) : NULL;
    while (tb != NULL && tb != Py_None && !found) {
        PyObject *frame = PyObject_GetAttrString(tb, "tb_frame");
        PyObject *code = frame ? PyObject_GetAttrString(frame, "f_code") : NULL;
        found = code ? PySet_Contains(codes, code) == 1 : 0;
        PyObject *next = PyObject_GetAttrString(tb, "tb_next");
        Py_XDECREF(code);
        Py_XDECREF(frame);
        Py_SETREF(tb, next);
    }
    Py_XDECREF(tb);
    Py_XDECREF(codes);
    PyErr_Clear();
    chkpt_error_restore(&e);
    return found;
}

/* Exceptions that belong to the script rather than to the variable being
 * pickled: a KeyboardInterrupt (Ctrl-C while a __reduce__ ran), and any
 * other non-Exception (SystemExit...) raised by the script's own signal
 * handler (a SIGTERM handler calling sys.exit). The capture stops and lets
 * them through. A __reduce__ that itself calls sys.exit is the object's
 * failure: plain python would never have called it. */
static int
script_exception_pending(void)
{
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_Exception)
        || chkpt_in_writer_child()) {
        return 0;       /* in a writer child there is no script to stop */
    }
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return 1;
    }
    return raised_by_signal_handler();
}

/* The key in ck->warned of an object not to be pickled again (it used up
 * its time budget, or interrupted the script): the variable's name with the
 * object's identity and type. */
static PyObject *
no_retry_key(PyObject *vname, PyObject *obj)
{
    return Py_BuildValue("(sONs)", "no retry", vname, PyLong_FromVoidPtr(obj),
                         Py_TYPE(obj)->tp_name);
}


#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#define META_FORMAT 1
#define REPR_LIMIT 160          /* characters of a variable's repr in meta */
#define MODREFS_MAX_PICKLE (64u << 20)  /* skip module_refs beyond this */
#define MEASURE_MAX_DEPTH 64
/* Seconds the Python code run for one variable (its __reduce__, its
 * __repr__, a library's memory_usage) may take: past it, hooks.c makes that
 * code raise TimeoutError and the variable is skipped like any other that
 * cannot be pickled. C-level pickling of plain data is never interrupted. */
#define VARIABLE_BUDGET_S 5.0
/* (the whole snapshot: CHKPT_SNAPSHOT_TIME_BUDGET in chkpt.h) */

/* ------------------------------------------------------------------ */
/* out-of-band buffers collected by the buffer_callback                */

typedef struct {
    Py_buffer *views;
    Py_ssize_t n, cap;
} bufvec;

static void
bufvec_truncate(bufvec *v, Py_ssize_t n)
{
    while (v->n > n) {
        PyBuffer_Release(&v->views[--v->n]);
    }
}

static void
bufvec_free(bufvec *v)
{
    bufvec_truncate(v, 0);
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
    bufvec *v = PyCapsule_GetPointer(capsule, BUFVEC_CAPSULE);
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
/* in-band pickle bytes, held in memory up to a budget                 */

/* The file a pickle.Pickler writes into: it keeps what it is given until
 * the snapshot is written, up to `budget` bytes. The C pickler writes each
 * 64 KiB frame as it is done, and large payloads at once, so a hostile
 * __reduce__ producing gigabytes is stopped before its output is held. */
typedef struct {
    PyObject_HEAD
    PyObject *parts;            /* list of bytes */
    long long total;
    long long budget;           /* what this variable may still add */
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
    if (self->total + len > self->budget) {
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
chkpt_capture_init(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    st->PickleSink_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &sink_spec, NULL);
    if (st->PickleSink_Type == NULL) {
        return -1;
    }
    /* Modules a capture may need, imported before the script runs: a
     * first import during a snapshot would show in the script's own audit
     * hooks (an "import" event). */
    static const char *const needed[] = {"atexit", "signal", "copyreg", "reprlib"};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        PyObject *m = PyImport_ImportModule(needed[i]);
        if (m == NULL) {
            return -1;
        }
        Py_DECREF(m);
    }
    return 0;
}

long long
chkpt_default_max_pickle_size(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    long long quarter = pages > 0 && page > 0 ? (long long)pages * page / 4 : 0;
    return quarter > (256LL << 20) ? quarter : (256LL << 20);
}

/* pickler_cls(sink, **kwargs).dump(obj): the in-band bytes, or NULL with
 * the exception set (*over when the budget stopped it). */
static PyObject *
pickle_bounded(chkpt_state *st, PyObject *pickler_cls, PyObject *kwargs,
               PyObject *obj, long long budget, long long limit, int *over)
{
    *over = 0;
    PickleSinkObject *sink = PyObject_New(PickleSinkObject, st->PickleSink_Type);
    if (sink == NULL) {
        return NULL;
    }
    sink->parts = PyList_New(0);
    sink->total = 0;
    sink->budget = budget;
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
/* "could not be saved": reported once per name, at exit               */

/* A variable that cannot be saved is reported once per name per run. The
 * line is held until the interpreter exits (atexit), with how many
 * snapshots went without it: written at once it would land wherever the
 * script's own stderr output is, possibly inside an unfinished line. With
 * -v it is written at once. The meta's "skipped" has it per snapshot. */
static PyObject *
flush_deferred(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    CheckpointObject *ck = (CheckpointObject *)self;
    PyObject *d = ck->deferred;
    if (d == NULL || !PyDict_Check(d)) {
        Py_RETURN_NONE;
    }
    Py_INCREF(d);
    Py_ssize_t pos = 0;
    PyObject *name, *entry;
    while (PyDict_Next(d, &pos, &name, &entry)) {
        if (!PyList_Check(entry) || PyList_GET_SIZE(entry) != 2) {
            continue;
        }
        PyObject *msg = PyList_GET_ITEM(entry, 0);
        PyObject *count = PyList_GET_ITEM(entry, 1);
        long n = PyLong_Check(count) ? PyLong_AsLong(count) : 1;
        PyErr_Clear();
        chkpt_warn_fmt("%U (left out of %ld snapshot%s)", msg, n, n == 1 ? "" : "s");
    }
    PyDict_Clear(d);
    Py_DECREF(d);
    Py_RETURN_NONE;
}

static PyMethodDef flush_deferred_def = {
    "_chkpt_report_unsaved", (PyCFunction)flush_deferred, METH_NOARGS, NULL
};

/* One more snapshot without vname, whose report is held for the exit:
 * 1 counted, 0 no report held, -1 error. */
static int
count_left_out(CheckpointObject *ck, PyObject *vname)
{
    if (ck->deferred == NULL) {
        return 0;
    }
    PyObject *entry = PyDict_GetItemWithError(ck->deferred, vname);
    if (entry == NULL || !PyList_Check(entry) || PyList_GET_SIZE(entry) != 2) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *one = PyLong_FromLong(1);
    PyObject *n = one ? PyNumber_Add(PyList_GET_ITEM(entry, 1), one) : NULL;
    Py_XDECREF(one);
    return n == NULL || PyList_SetItem(entry, 1, n) < 0 ? -1 : 1;
}

/* Notes that vname could not be saved (msg is the whole line). Returns -1
 * only on a memory error. */
static int
report_unsaved(CheckpointObject *ck, PyObject *vname, PyObject *msg)
{
    int seen = PySet_Contains(ck->warned, vname);
    if (seen < 0) {
        return -1;
    }
    if (ck->verbosity > 0 && !seen) {
        chkpt_warn_fmt("%U", msg);
        return PySet_Add(ck->warned, vname);
    }
    if (ck->verbosity > 0) {
        return 0;
    }
    if (ck->deferred == NULL) {
        PyObject *d = PyDict_New();
        PyObject *atexit = d ? PyImport_ImportModule("atexit") : NULL;
        PyObject *fn = atexit ? PyCFunction_New(&flush_deferred_def, (PyObject *)ck)
                              : NULL;
        PyObject *r = fn ? PyObject_CallMethod(atexit, "register", "(O)", fn) : NULL;
        Py_XDECREF(atexit);
        Py_XDECREF(fn);
        if (r == NULL) {
            /* no atexit: say it now */
            Py_XDECREF(d);
            PyErr_Clear();
            if (seen) {
                return 0;
            }
            chkpt_warn_fmt("%U", msg);
            return PySet_Add(ck->warned, vname);
        }
        Py_DECREF(r);
        ck->deferred = d;
    }
    int counted = count_left_out(ck, vname);
    if (counted != 0) {
        return counted < 0 ? -1 : 0;
    }
    if (seen) {
        return 0;           /* reported already */
    }
    PyObject *entry = Py_BuildValue("[Oi]", msg, 1);
    if (entry == NULL || PyDict_SetItem(ck->deferred, vname, entry) < 0) {
        Py_XDECREF(entry);
        return -1;
    }
    Py_DECREF(entry);
    return PySet_Add(ck->warned, vname);
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

typedef struct {
    PyObject *copyreg, *orig;
} slotnames_patch;

static void
slotnames_install(slotnames_patch *p)
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

static void
slotnames_uninstall(slotnames_patch *p)
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

/* ------------------------------------------------------------------ */
/* which variables                                                     */

static int
is_dunder(PyObject *name)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    if (n < 5) {
        return 0;
    }
    return PyUnicode_READ_CHAR(name, 0) == '_' && PyUnicode_READ_CHAR(name, 1) == '_'
           && PyUnicode_READ_CHAR(name, n - 1) == '_'
           && PyUnicode_READ_CHAR(name, n - 2) == '_';
}

/* Never captured: definitions and machinery rather than data. */
static int
is_excluded(chkpt_state *st, PyObject *name, PyObject *obj)
{
    if (!PyUnicode_Check(name) || is_dunder(name)) {
        return 1;
    }
    PyTypeObject *tp = Py_TYPE(obj);
    if (PyModule_Check(obj) || PyType_Check(obj) || PyFunction_Check(obj)
        || PyCFunction_Check(obj) || PyMethod_Check(obj) || PyCode_Check(obj)
        || PyFrame_Check(obj) || PyInstanceMethod_Check(obj)
        || tp == &PyClassMethod_Type || tp == &PyStaticMethod_Type
        || tp == &PyProperty_Type || tp == &PyMethodDescr_Type
        || tp == &PyWrapperDescr_Type || tp == &PyClassMethodDescr_Type) {
        return 1;
    }
    if (tp == st->Checkpoint_Type || PyType_IsSubtype(tp, st->SnapshotInfo_Type)
        || tp == st->Unloadable_Type) {
        return 1;
    }
    /* type annotations are definitions too: TypeVar, list[int], int | None */
    if (tp == &Py_GenericAliasType || strcmp(tp->tp_name, "types.UnionType") == 0) {
        return 1;
    }
    PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
    if (mod == NULL) {
        PyErr_Clear();
        return 0;
    }
    int typing = PyUnicode_Check(mod)
                 && (PyUnicode_CompareWithASCIIString(mod, "typing") == 0
                     || PyUnicode_CompareWithASCIIString(mod, "typing_extensions") == 0);
    Py_DECREF(mod);
    return typing;
}

/* Is tp from one of the tracked libraries (prefix match on __module__)? */
static int
is_library_type(CheckpointObject *ck, PyTypeObject *tp)
{
    PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
    if (mod == NULL) {
        PyErr_Clear();
        return 0;
    }
    int found = 0;
    if (PyUnicode_Check(mod)) {
        Py_ssize_t mlen = PyUnicode_GET_LENGTH(mod);
        Py_ssize_t nlib = PyList_GET_SIZE(ck->libraries);
        for (Py_ssize_t i = 0; i < nlib && !found; i++) {
            PyObject *lib = PyList_GET_ITEM(ck->libraries, i);
            if (!PyUnicode_Check(lib)) {
                continue;
            }
            Py_ssize_t llen = PyUnicode_GET_LENGTH(lib);
            if (llen > mlen) {
                continue;
            }
            if (PyUnicode_Tailmatch(mod, lib, 0, llen, -1) == 1
                && (llen == mlen || PyUnicode_READ_CHAR(mod, llen) == '.')) {
                found = 1;
            }
        }
    }
    Py_DECREF(mod);
    PyErr_Clear();
    return found;
}

/* Size of what an object holds, measured until `budget` is reached. */
typedef struct {
    CheckpointObject *ck;
    long long total, budget;
    PyObject *seen;           /* set of ids of containers already counted */
} measure;

static int measure_obj(measure *m, PyObject *o, int depth);

static long long
int_attr_or_call(PyObject *o, const char *attr, int call, PyObject *kwargs)
{
    PyObject *v = PyObject_GetAttrString(o, attr);
    if (v == NULL) {
        PyErr_Clear();
        return -1;
    }
    if (call) {
        PyObject *noargs = PyTuple_New(0);
        PyObject *r = noargs ? PyObject_Call(v, noargs, kwargs) : NULL;
        Py_XDECREF(noargs);
        Py_DECREF(v);
        v = r;
        if (v == NULL) {
            PyErr_Clear();
            return -1;
        }
        if (!PyLong_Check(v)) {
            /* pandas DataFrame.memory_usage() gives a Series: sum it */
            PyObject *s = PyObject_CallMethod(v, "sum", NULL);
            Py_DECREF(v);
            v = s;
            if (v == NULL) {
                PyErr_Clear();
                return -1;
            }
        }
    }
    long long n = -1;
    PyObject *i = PyNumber_Index(v);
    if (i != NULL) {
        n = PyLong_AsLongLong(i);
        Py_DECREF(i);
    }
    Py_DECREF(v);
    if (n < 0) {
        PyErr_Clear();
        return -1;
    }
    return n;
}

static long long
library_size(measure *m, PyObject *o)
{
    /* pandas: memory_usage (shallow first; deep only if still small) */
    PyObject *mu = PyObject_GetAttrString(o, "memory_usage");
    if (mu != NULL) {
        Py_DECREF(mu);
        PyObject *kw = Py_BuildValue("{s:O}", "deep", Py_False);
        if (kw == NULL) {
            PyErr_Clear();
            return -1;
        }
        long long n = int_attr_or_call(o, "memory_usage", 1, kw);
        Py_DECREF(kw);
        if (n >= 0 && m->total + n < m->budget) {
            kw = Py_BuildValue("{s:O}", "deep", Py_True);
            if (kw != NULL) {
                long long d = int_attr_or_call(o, "memory_usage", 1, kw);
                Py_DECREF(kw);
                if (d > n) {
                    n = d;
                }
            }
            PyErr_Clear();
        }
        if (n >= 0) {
            return n;
        }
    }
    PyErr_Clear();
    return int_attr_or_call(o, "nbytes", 0, NULL);
}

static long long
shallow_size(PyObject *o)
{
    PyObject *r = PyObject_CallMethod(o, "__sizeof__", NULL);
    long long n = -1;
    if (r != NULL) {
        if (PyLong_Check(r)) {
            n = PyLong_AsLongLong(r);
        }
        Py_DECREF(r);
    }
    if (n < 0) {
        PyErr_Clear();
        n = Py_TYPE(o)->tp_basicsize;
    }
    if (PyObject_IS_GC(o)) {
        n += 16;
    }
    return n;
}

static int
measure_items(measure *m, PyObject *o, int depth)
{
    if (PyDict_Check(o)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (m->total < m->budget && PyDict_Next(o, &pos, &k, &v)) {
            Py_INCREF(k);
            Py_INCREF(v);
            int r = measure_obj(m, k, depth + 1);
            if (r == 0) {
                r = measure_obj(m, v, depth + 1);
            }
            Py_DECREF(k);
            Py_DECREF(v);
            if (r < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (PyList_Check(o) || PyTuple_Check(o)) {
        for (Py_ssize_t i = 0; m->total < m->budget; i++) {
            PyObject *it;
            if (PyList_Check(o)) {
                if (i >= PyList_GET_SIZE(o)) {
                    break;
                }
                it = PyList_GET_ITEM(o, i);
            }
            else {
                if (i >= PyTuple_GET_SIZE(o)) {
                    break;
                }
                it = PyTuple_GET_ITEM(o, i);
            }
            Py_INCREF(it);
            int r = measure_obj(m, it, depth + 1);
            Py_DECREF(it);
            if (r < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (PyAnySet_Check(o)) {
        PyObject *iter = PyObject_GetIter(o);
        if (iter == NULL) {
            return -1;
        }
        PyObject *it;
        while (m->total < m->budget && (it = PyIter_Next(iter)) != NULL) {
            int r = measure_obj(m, it, depth + 1);
            Py_DECREF(it);
            if (r < 0) {
                Py_DECREF(iter);
                return -1;
            }
        }
        Py_DECREF(iter);
        return PyErr_Occurred() ? -1 : 0;
    }
    return 0;
}

static int
measure_obj(measure *m, PyObject *o, int depth)
{
    if (m->total >= m->budget || depth > MEASURE_MAX_DEPTH) {
        return 0;
    }
    PyTypeObject *tp = Py_TYPE(o);
    if (o == Py_None || o == Py_True || o == Py_False || o == Py_Ellipsis) {
        return 0;
    }
    if (tp == &PyFloat_Type) {
        m->total += (long long)sizeof(PyFloatObject);
        return 0;
    }
    if (tp == &PyLong_Type) {
        int overflow;
        (void)PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow == 0) {
            m->total += 32;
            return 0;
        }
        m->total += shallow_size(o);
        return 0;
    }
    if (tp == &PyUnicode_Type) {
        m->total += 56 + (long long)PyUnicode_GET_LENGTH(o) * PyUnicode_KIND(o);
        return 0;
    }
    if (tp == &PyBytes_Type) {
        m->total += 33 + (long long)PyBytes_GET_SIZE(o);
        return 0;
    }
    /* everything else may be shared: count it once */
    PyObject *key = PyLong_FromVoidPtr(o);
    if (key == NULL) {
        return -1;
    }
    int seen = PySet_Contains(m->seen, key);
    if (seen == 0) {
        seen = PySet_Add(m->seen, key) < 0 ? -1 : 0;
    }
    Py_DECREF(key);
    if (seen != 0) {
        return seen < 0 ? -1 : 0;
    }
    if (PyDict_Check(o) || PyList_Check(o) || PyTuple_Check(o)
        || PyAnySet_Check(o)) {
        m->total += shallow_size(o);
        return measure_items(m, o, depth);
    }
    if (PyByteArray_Check(o) || PyComplex_Check(o) || PyLong_Check(o)
        || PyFloat_Check(o) || PyUnicode_Check(o) || PyBytes_Check(o)) {
        m->total += shallow_size(o);
        return 0;
    }
    if (is_library_type(m->ck, tp)) {
        long long n = library_size(m, o);
        m->total += n >= 0 ? n : shallow_size(o);
        return 0;
    }
    if (PyType_Check(o) || PyModule_Check(o) || PyFunction_Check(o)
        || PyCFunction_Check(o) || PyMethod_Check(o) || PyCode_Check(o)) {
        return 0;              /* pickled by reference: costs nothing */
    }
    /* an instance: itself and its __dict__ */
    m->total += shallow_size(o);
    int has_dict = tp->tp_dictoffset != 0;
#ifdef Py_TPFLAGS_MANAGED_DICT
    has_dict = has_dict || (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT);
#endif
    if (has_dict) {
        PyObject *d = PyObject_GenericGetDict(o, NULL);
        if (d == NULL) {
            PyErr_Clear();
            return 0;
        }
        int r = PyDict_Check(d) ? measure_items(m, d, depth) : 0;
        Py_DECREF(d);
        return r;
    }
    return 0;
}

/* 1 salient, 0 not, -1 error */
static int
is_salient(CheckpointObject *ck, PyObject *obj, PyObject *seen)
{
    PyObject *key = PyLong_FromVoidPtr(obj);
    if (key == NULL) {
        return -1;
    }
    PyObject *t = PyDict_GetItemWithError(ck->tracked, key);
    Py_DECREF(key);
    if (t == obj) {
        return 1;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    if (ck->min_obj_size < 0) {
        return 0;
    }
    if (ck->min_obj_size == 0) {
        return 1;
    }
    measure m = {ck, 0, ck->min_obj_size, seen};
    if (PySet_Clear(seen) < 0 || measure_obj(&m, obj, 0) < 0) {
        return -1;
    }
    return m.total >= ck->min_obj_size;
}

/* ------------------------------------------------------------------ */
/* module_refs: the globals a pickle names (STACK_GLOBAL / GLOBAL)      */

typedef struct {
    const char *p;
    Py_ssize_t len;     /* -1: not a string */
} strref;

static int
add_ref(PyObject *refs, const char *mod, Py_ssize_t mlen, const char *name,
        Py_ssize_t nlen)
{
    PyObject *t = Py_BuildValue("(s#s#)", mod, mlen, name, nlen);
    if (t == NULL) {
        PyErr_Clear();     /* not UTF-8: not worth failing for */
        return 0;
    }
    int r = PySet_Add(refs, t);
    Py_DECREF(t);
    return r;
}

/* Walks the opcodes of a protocol 2-5 pickle and collects (module, name)
 * pairs. Returns a new list of [module, name] lists sorted, or None if the
 * pickle uses something this walker does not follow. */
static PyObject *
pickle_module_refs(PyObject *data)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data), i = 0;
    if ((size_t)n > MODREFS_MAX_PICKLE) {
        Py_RETURN_NONE;
    }
    PyObject *refs = PySet_New(NULL);
    if (refs == NULL) {
        return NULL;
    }
    strref *memo = NULL;
    size_t nmemo = 0, capmemo = 0;
    strref last = {NULL, -1}, prev = {NULL, -1};
    int ok = 1;
#define PUSH(ptr, l) do { prev = last; last.p = (const char *)(ptr); \
                          last.len = (l); } while (0)
#define NEED(k) do { if (i + (Py_ssize_t)(k) > n) { ok = 0; goto done; } } while (0)
    while (i < n) {
        unsigned char op = p[i++];
        uint64_t len = 0;
        switch (op) {
        case '.':                       /* STOP */
            goto done;
        case 0x80: NEED(1); i += 1; break;               /* PROTO */
        case 0x95: NEED(8); i += 8; break;               /* FRAME */
        case 0x8c:                                       /* SHORT_BINUNICODE */
            NEED(1); len = p[i]; i += 1; NEED(len);
            PUSH(p + i, (Py_ssize_t)len); i += (Py_ssize_t)len; break;
        case 'X':                                        /* BINUNICODE */
            NEED(4); len = (uint64_t)p[i] | ((uint64_t)p[i+1] << 8)
                          | ((uint64_t)p[i+2] << 16) | ((uint64_t)p[i+3] << 24);
            i += 4; NEED(len);
            PUSH(p + i, (Py_ssize_t)len); i += (Py_ssize_t)len; break;
        case 0x8d: case 0x8e: case 0x96: {               /* *8 */
            NEED(8);
            for (int k = 7; k >= 0; k--) {
                len = (len << 8) | p[i + k];
            }
            i += 8;
            if (len > (uint64_t)(n - i)) {
                ok = 0;
                goto done;
            }
            if (op == 0x8d) {
                PUSH(p + i, (Py_ssize_t)len);
            }
            else {
                PUSH(NULL, -1);
            }
            i += (Py_ssize_t)len;
            break;
        }
        case 'U': case 'C': case 0x8a:                   /* 1-byte length */
            NEED(1); len = p[i]; i += 1; NEED(len);
            i += (Py_ssize_t)len; PUSH(NULL, -1); break;
        case 'T': case 'B': case 0x8b:                   /* 4-byte length */
            NEED(4); len = (uint64_t)p[i] | ((uint64_t)p[i+1] << 8)
                          | ((uint64_t)p[i+2] << 16) | ((uint64_t)p[i+3] << 24);
            i += 4; NEED(len); i += (Py_ssize_t)len; PUSH(NULL, -1); break;
        case 'J': NEED(4); i += 4; PUSH(NULL, -1); break;   /* BININT */
        case 'K': NEED(1); i += 1; PUSH(NULL, -1); break;   /* BININT1 */
        case 'M': NEED(2); i += 2; PUSH(NULL, -1); break;   /* BININT2 */
        case 'G': NEED(8); i += 8; PUSH(NULL, -1); break;   /* BINFLOAT */
        case 0x82: NEED(1); i += 1; PUSH(NULL, -1); break;  /* EXT1 */
        case 0x83: NEED(2); i += 2; PUSH(NULL, -1); break;  /* EXT2 */
        case 0x84: NEED(4); i += 4; PUSH(NULL, -1); break;  /* EXT4 */
        case 0x94:                                       /* MEMOIZE */
        case 'q': case 'r': {                            /* BINPUT, LONG_BINPUT */
            size_t idx = nmemo;
            if (op == 'q') {
                NEED(1); idx = p[i]; i += 1;
            }
            else if (op == 'r') {
                NEED(4); idx = (size_t)p[i] | ((size_t)p[i+1] << 8)
                              | ((size_t)p[i+2] << 16) | ((size_t)p[i+3] << 24);
                i += 4;
            }
            if (idx >= capmemo) {
                size_t cap = capmemo ? capmemo : 64;
                while (cap <= idx) {
                    cap *= 2;
                }
                strref *nm = PyMem_Realloc(memo, cap * sizeof(strref));
                if (nm == NULL) {
                    ok = 0;
                    goto done;
                }
                for (size_t k = capmemo; k < cap; k++) {
                    nm[k].p = NULL;
                    nm[k].len = -1;
                }
                memo = nm;
                capmemo = cap;
            }
            memo[idx] = last;
            if (idx >= nmemo) {
                nmemo = idx + 1;
            }
            break;
        }
        case 'h': case 'j': {                            /* BINGET, LONG_BINGET */
            size_t idx;
            if (op == 'h') {
                NEED(1); idx = p[i]; i += 1;
            }
            else {
                NEED(4); idx = (size_t)p[i] | ((size_t)p[i+1] << 8)
                              | ((size_t)p[i+2] << 16) | ((size_t)p[i+3] << 24);
                i += 4;
            }
            if (idx < nmemo) {
                PUSH(memo[idx].p, memo[idx].len);
            }
            else {
                PUSH(NULL, -1);
            }
            break;
        }
        case 0x93:                                       /* STACK_GLOBAL */
            if (prev.len >= 0 && last.len >= 0) {
                if (add_ref(refs, prev.p, prev.len, last.p, last.len) < 0) {
                    ok = 0;
                    goto done;
                }
            }
            PUSH(NULL, -1);
            break;
        case 'c': {                                      /* GLOBAL (protocol <= 3) */
            const unsigned char *a = p + i;
            const unsigned char *nl1 = memchr(a, '\n', (size_t)(n - i));
            if (nl1 == NULL) {
                ok = 0;
                goto done;
            }
            const unsigned char *b = nl1 + 1;
            const unsigned char *nl2 = memchr(b, '\n', (size_t)(p + n - b));
            if (nl2 == NULL) {
                ok = 0;
                goto done;
            }
            if (add_ref(refs, (const char *)a, nl1 - a, (const char *)b,
                        nl2 - b) < 0) {
                ok = 0;
                goto done;
            }
            i = (nl2 + 1) - p;
            PUSH(NULL, -1);
            break;
        }
        /* no-argument opcodes */
        case '(': case '0': case '1': case '2': case 'N': case 'R': case 'b':
        case 'd': case '}': case 'e': case 'l': case ']': case 'o': case 's':
        case 't': case ')': case 'u': case 'a': case 0x81: case 0x85:
        case 0x86: case 0x87: case 0x88: case 0x89: case 0x8f: case 0x90:
        case 0x91: case 0x92: case 0x97: case 0x98: case 'Q':
            PUSH(NULL, -1);
            break;
        default:
            /* text opcodes of protocol 0/1: not produced with protocol 5 */
            ok = 0;
            goto done;
        }
    }
done:
#undef PUSH
#undef NEED
    PyMem_Free(memo);
    if (PyErr_Occurred()) {
        Py_DECREF(refs);
        return NULL;
    }
    if (!ok) {
        Py_DECREF(refs);
        Py_RETURN_NONE;
    }
    PyObject *lst = PySequence_List(refs);
    Py_DECREF(refs);
    if (lst == NULL || PyList_Sort(lst) < 0) {
        Py_XDECREF(lst);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(lst); k++) {
        PyObject *l = PySequence_List(PyList_GET_ITEM(lst, k));
        if (l == NULL) {
            Py_DECREF(lst);
            return NULL;
        }
        if (PyList_SetItem(lst, k, l) < 0) {   /* steals l, releases the tuple */
            Py_DECREF(lst);
            return NULL;
        }
    }
    return lst;
}

/* ------------------------------------------------------------------ */
/* describing a variable                                               */

static PyObject *
type_name(PyTypeObject *tp)
{
    PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
    PyObject *qual = PyObject_GetAttrString((PyObject *)tp, "__qualname__");
    PyObject *r = NULL;
    if (mod != NULL && qual != NULL && PyUnicode_Check(mod) && PyUnicode_Check(qual)) {
        r = PyUnicode_FromFormat("%U.%U", mod, qual);
    }
    else {
        PyErr_Clear();
        r = PyUnicode_FromString(tp->tp_name);
    }
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    return r;
}

static PyObject *
make_repr_obj(void)
{
    PyObject *reprlib = PyImport_ImportModule("reprlib");
    if (reprlib == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(reprlib, "Repr", NULL);
    Py_DECREF(reprlib);
    if (r == NULL) {
        return NULL;
    }
    static const struct { const char *attr; int v; } limits[] = {
        {"maxlevel", 3}, {"maxtuple", 6}, {"maxlist", 6}, {"maxarray", 6},
        {"maxdict", 4}, {"maxset", 6}, {"maxfrozenset", 6}, {"maxdeque", 6},
        {"maxstring", 60}, {"maxlong", 40}, {"maxother", 100}, {NULL, 0}
    };
    for (int k = 0; limits[k].attr; k++) {
        PyObject *v = PyLong_FromLong(limits[k].v);
        if (v == NULL || PyObject_SetAttrString(r, limits[k].attr, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(r);
            return NULL;
        }
        Py_DECREF(v);
    }
    return r;
}

static const char *
short_type_name(PyTypeObject *tp)
{
    const char *dot = strrchr(tp->tp_name, '.');
    return dot ? dot + 1 : tp->tp_name;
}

/* A short, bounded, single-line description of obj. Never fails: a repr
 * that raises gives "<Type object>". */
static PyObject *
short_repr(CheckpointObject *ck, PyObject *reprobj, PyObject *obj)
{
    PyObject *r = NULL;
    if (is_library_type(ck, Py_TYPE(obj))) {
        PyObject *shape = PyObject_GetAttrString(obj, "shape");
        if (shape != NULL && PyTuple_Check(shape)) {
            PyObject *dtype = PyObject_GetAttrString(obj, "dtype");
            if (dtype == NULL) {
                PyErr_Clear();
                r = PyUnicode_FromFormat("<%s shape=%R>", short_type_name(Py_TYPE(obj)),
                                         shape);
            }
            else {
                r = PyUnicode_FromFormat("<%s shape=%R dtype=%S>",
                                         short_type_name(Py_TYPE(obj)), shape, dtype);
                Py_DECREF(dtype);
            }
        }
        Py_XDECREF(shape);
        PyErr_Clear();
    }
    if (r == NULL && reprobj != NULL) {
        r = PyObject_CallMethod(reprobj, "repr", "(O)", obj);
        if (r != NULL && !PyUnicode_Check(r)) {
            Py_CLEAR(r);
        }
    }
    if (r == NULL) {
        if (script_exception_pending()) {
            return NULL;
        }
        PyErr_Clear();
        return PyUnicode_FromFormat("<%s object>", short_type_name(Py_TYPE(obj)));
    }
    /* one line, bounded */
    PyObject *parts = PyUnicode_Split(r, NULL, -1);
    if (parts != NULL) {
        PyObject *sp = PyUnicode_FromString(" ");
        PyObject *j = sp ? PyUnicode_Join(sp, parts) : NULL;
        Py_XDECREF(sp);
        Py_DECREF(parts);
        if (j != NULL) {
            Py_SETREF(r, j);
        }
    }
    PyErr_Clear();
    if (PyUnicode_GET_LENGTH(r) > REPR_LIMIT) {
        PyObject *head = PyUnicode_Substring(r, 0, REPR_LIMIT - 3);
        PyObject *t = head ? PyUnicode_FromFormat("%U...", head) : NULL;
        Py_XDECREF(head);
        if (t != NULL) {
            Py_SETREF(r, t);
        }
        PyErr_Clear();
    }
    return r;
}

/* ------------------------------------------------------------------ */
/* sources of the script and its sibling modules                        */

static PyObject *
read_file_bytes(PyObject *path)
{
    PyObject *fs = PyUnicode_EncodeFSDefault(path);
    if (fs == NULL) {
        return NULL;
    }
    PyObject *data = NULL;
    FILE *f;
    Py_BEGIN_ALLOW_THREADS
    f = fopen(PyBytes_AS_STRING(fs), "rb");
    Py_END_ALLOW_THREADS
    if (f == NULL) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        Py_DECREF(fs);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap);
            if (nb == NULL) {
                failed = ENOMEM;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                failed = errno ? errno : EIO;
            }
            break;
        }
    }
    fclose(f);
    Py_END_ALLOW_THREADS
    if (failed) {
        errno = failed;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    else {
        data = PyBytes_FromStringAndSize(buf ? buf : "", (Py_ssize_t)len);
    }
    free(buf);
    Py_DECREF(fs);
    return data;
}

/* Source bytes of path, from ck->sources or read once and cached. */
static PyObject *
source_of(CheckpointObject *ck, PyObject *path)
{
    PyObject *b = PyDict_GetItemWithError(ck->sources, path);
    if (b != NULL) {
        return Py_NewRef(b);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    b = read_file_bytes(path);
    if (b == NULL) {
        return NULL;
    }
    if (PyDict_SetItem(ck->sources, path, b) < 0) {
        Py_DECREF(b);
        return NULL;
    }
    return b;
}

/* Collects {module name: source bytes} and {module name: path}. */
static int
collect_sources(CheckpointObject *ck, PyObject *src_bytes, PyObject *src_paths)
{
    if (ck->script_path != NULL && PyUnicode_Check(ck->script_path)) {
        PyObject *b = source_of(ck, ck->script_path);
        if (b == NULL) {
            chkpt_warn_exc("cannot keep the script's source");
        }
        else {
            int r = PyDict_SetItemString(src_bytes, "__main__", b);
            Py_DECREF(b);
            if (r < 0 || PyDict_SetItemString(src_paths, "__main__",
                                              ck->script_path) < 0) {
                return -1;
            }
        }
    }
    if (ck->script_dir == NULL || !PyUnicode_Check(ck->script_dir)) {
        return 0;
    }
    PyObject *mods = PyDict_Copy(PyImport_GetModuleDict());
    if (mods == NULL) {
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *mod;
    int rc = 0;
    while (PyDict_Next(mods, &pos, &name, &mod)) {
        if (!PyUnicode_Check(name) || !PyModule_Check(mod) || mod == ck->main_module
            || PyUnicode_CompareWithASCIIString(name, "__main__") == 0) {
            continue;
        }
        PyObject *file = PyModule_GetFilenameObject(mod);
        if (file == NULL) {
            PyErr_Clear();
            continue;
        }
        int take = 0;
        Py_ssize_t n = PyUnicode_GET_LENGTH(file);
        Py_ssize_t dn = PyUnicode_GET_LENGTH(ck->script_dir);
        if (n > dn + 4 && PyUnicode_Tailmatch(file, ck->script_dir, 0, dn, -1) == 1
            && PyUnicode_READ_CHAR(file, dn) == '/'
            && PyUnicode_FindChar(file, '/', dn + 1, n, 1) == -1) {
            /* a .py file directly in the script's directory */
            PyObject *ext = PyUnicode_FromString(".py");
            take = ext != NULL && PyUnicode_Tailmatch(file, ext, 0, n, 1) == 1
                   && PyUnicode_Compare(file, ck->script_path) != 0;
            Py_XDECREF(ext);
        }
        PyErr_Clear();
        if (take) {
            PyObject *b = source_of(ck, file);
            if (b == NULL) {
                chkpt_warn_exc("cannot keep a sibling module's source");
            }
            else {
                if (PyDict_SetItem(src_bytes, name, b) < 0
                    || PyDict_SetItem(src_paths, name, file) < 0) {
                    rc = -1;
                }
                Py_DECREF(b);
            }
        }
        Py_DECREF(file);
        if (rc < 0) {
            break;
        }
    }
    Py_DECREF(mods);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the snapshot                                                        */

typedef struct {
    const void *data;
    size_t len;
    int flags;
} stream_ref;

typedef struct {
    stream_ref *v;
    size_t n, cap;
} streamvec;

static int
streams_add(streamvec *s, const void *data, size_t len, int flags)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        stream_ref *nv = PyMem_Realloc(s->v, cap * sizeof(stream_ref));
        if (nv == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n].data = data;
    s->v[s->n].len = len;
    s->v[s->n].flags = flags;
    s->n++;
    return 0;
}

/* Items of a locals mapping (dict, or 3.13's FrameLocalsProxy). */
static PyObject *
mapping_items(PyObject *m)
{
    if (PyDict_Check(m)) {
        return PyDict_Items(m);
    }
    return PyMapping_Items(m);
}

static PyFrameObject *
pick_frame(CheckpointObject *ck, PyFrameObject *given)
{
    if (given != NULL) {
        return (PyFrameObject *)Py_NewRef(given);
    }
    PyFrameObject *cur = PyEval_GetFrame();     /* borrowed */
    Py_XINCREF(cur);
    while (cur != NULL) {
        PyCodeObject *code = PyFrame_GetCode(cur);
        int mine = chkpt_is_script_code(ck, code);
        Py_DECREF(code);
        if (mine) {
            return cur;
        }
        PyFrameObject *back = PyFrame_GetBack(cur);
        Py_DECREF(cur);
        cur = back;
    }
    return NULL;
}

static PyObject *
python_version(void)
{
    const char *v = Py_GetVersion();
    size_t n = strcspn(v, " ");
    return PyUnicode_FromStringAndSize(v, (Py_ssize_t)n);
}

static int
set_item(PyObject *d, const char *key, PyObject *v)
{
    if (v == NULL) {
        return -1;
    }
    int r = PyDict_SetItemString(d, key, v);
    Py_DECREF(v);
    return r;
}

/* Appends item, a new reference (NULL after an error), to list. */
static int
append_new(PyObject *list, PyObject *item)
{
    int r = item == NULL ? -1 : PyList_Append(list, item);
    Py_XDECREF(item);
    return r;
}

/* An entry of the meta's "skipped": the variable, its type, why. */
static PyObject *
skipped_entry(PyObject *vname, PyObject *obj, const char *why)
{
    PyObject *tname = type_name(Py_TYPE(obj));
    PyObject *e = tname ? Py_BuildValue("{s:O,s:O,s:s}", "name", vname, "type",
                                        tname, "error", why) : NULL;
    Py_XDECREF(tname);
    return e;
}

/* When obj was saved under an earlier name in this snapshot, adds vname's
 * entry as a copy of that one plus "same_as" (docs/FORMAT.md): 1 added, 0
 * not an alias, -1 error. */
static int
add_alias(PyObject *pickled, PyObject *vars_meta, PyObject *vname, PyObject *obj)
{
    PyObject *idkey = PyLong_FromVoidPtr(obj);
    if (idkey == NULL) {
        return -1;
    }
    PyObject *first = PyDict_GetItemWithError(pickled, idkey);     /* borrowed */
    Py_DECREF(idkey);
    if (first == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    PyObject *target = PyDict_GetItemString(first, "name");        /* borrowed */
    if (target == NULL) {
        return 0;
    }
    PyObject *vm = PyDict_Copy(first);
    int bad = vm == NULL || PyDict_SetItemString(vm, "name", vname) < 0
              || PyDict_SetItemString(vm, "same_as", target) < 0
              || PyList_Append(vars_meta, vm) < 0;
    Py_XDECREF(vm);
    return bad ? -1 : 1;
}

/* Retention by size (--max-store-size), after an automatic snapshot: the
 * oldest snapshots go, never the newest. Runs without the GIL; a failure is
 * reported once per run and the script goes on. */
static void
enforce_store_size(CheckpointObject *ck)
{
    if (ck->store == NULL) {
        return;
    }
    /* a copy: another thread may close ck->store while the GIL is released */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", chkpt_store_dir(ck->store));
    uint64_t max_bytes = (uint64_t)ck->max_store_size;
    char err[CHKPT_ERRLEN] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = chkpt_store_gc_budget(dir, max_bytes, 1, NULL, NULL, err, sizeof(err));
    Py_END_ALLOW_THREADS
    if (rc == 0) {
        return;
    }
    PyObject *key = PyUnicode_FromString("--max-store-size");
    int seen = key ? PySet_Contains(ck->warned, key) : -1;
    if (seen == 0 && PySet_Add(ck->warned, key) == 0) {
        chkpt_warn_fmt("cannot keep %U under --max-store-size: %s",
                 ck->output_dir, err);
    }
    Py_XDECREF(key);
    PyErr_Clear();
}

static PyObject *
capture_impl(CheckpointObject *ck, PyFrameObject *given, const char *kind,
             PyObject *name, int manual)
{
    chkpt_state *st = chkpt_get_state(ck->module);
    PyObject *result = NULL;
    PyObject *locals = NULL, *globals = NULL, *items = NULL, *gitems = NULL;
    PyObject *names_seen = NULL, *measure_seen = NULL, *vars_meta = NULL;
    PyObject *pickled = NULL;   /* id(obj) -> its variable's meta */
    PyObject *skipped = NULL, *pickles = NULL, *pickler_cls = NULL, *kwargs = NULL;
    PyObject *capsule = NULL, *callback = NULL, *reprobj = NULL;
    PyObject *meta = NULL, *src_bytes = NULL, *src_paths = NULL;
    PyObject *src_meta = NULL, *json = NULL, *json_bytes = NULL;
    bufvec bufs = {NULL, 0, 0};
    streamvec streams = {NULL, 0, 0};
    slotnames_patch slotpatch = {NULL, NULL};
    /* ck->warned holds variable names, and this (never an identifier) */
    PyObject *write_failed_key = NULL;
    long long total_size = 0;
    long long inband = 0;       /* pickled bytes held, for --max-pickle-size */
    double t_start = chkpt_monotonic();
    int out_of_time = 0;

    PyFrameObject *frame = pick_frame(ck, given);
    if (frame == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (!manual) {
            Py_RETURN_NONE;      /* the script's code is not running */
        }
    }

    /* the store first: nothing to do if it cannot be opened */
    if (ck->store == NULL) {
        char err[CHKPT_ERRLEN] = "";
        PyObject *fs = PyUnicode_EncodeFSDefault(ck->output_dir);
        if (fs == NULL) {
            goto done;
        }
        int r;
        chkpt_store *s = NULL;
        Py_BEGIN_ALLOW_THREADS
        r = chkpt_store_open(PyBytes_AS_STRING(fs), 1, &s, err, sizeof(err));
        Py_END_ALLOW_THREADS
        Py_DECREF(fs);
        if (r < 0 || s == NULL) {
            if (!ck->store_failed) {
                chkpt_warn_fmt("cannot open the snapshot store %U: %s; no snapshots "
                           "will be written", ck->output_dir, err);
            }
            ck->store_failed = 1;
            result = Py_NewRef(Py_None);
            goto done;
        }
        ck->store = s;
    }

    names_seen = PySet_New(NULL);
    pickled = PyDict_New();
    measure_seen = PySet_New(NULL);
    vars_meta = PyList_New(0);
    skipped = PyList_New(0);
    pickles = PyList_New(0);
    if (!names_seen || !pickled || !measure_seen || !vars_meta || !skipped
        || !pickles) {
        goto done;
    }
    if (frame != NULL) {
        locals = PyFrame_GetLocals(frame);
        globals = PyFrame_GetGlobals(frame);
        if (locals == NULL || globals == NULL) {
            goto done;
        }
        items = mapping_items(locals);
        if (items == NULL) {
            goto done;
        }
        if (globals != locals) {
            gitems = PyDict_Items(globals);
            if (gitems == NULL) {
                goto done;
            }
        }
    }

    pickler_cls = PyObject_GetAttrString(st->pickle_module, "Pickler");
    capsule = PyCapsule_New(&bufs, BUFVEC_CAPSULE, NULL);
    callback = capsule ? PyCFunction_New(&buffer_callback_def, capsule) : NULL;
    kwargs = callback ? Py_BuildValue("{s:i,s:O}", "protocol", 5,
                                      "buffer_callback", callback) : NULL;
    if (pickler_cls == NULL || kwargs == NULL) {
        goto done;
    }
    reprobj = make_repr_obj();
    if (reprobj == NULL) {
        PyErr_Clear();          /* short_repr falls back */
    }

    Py_ssize_t stream_idx = 0;
    slotnames_install(&slotpatch);
    for (int pass = 0; pass < 2; pass++) {
        PyObject *lst = pass == 0 ? items : gitems;
        if (lst == NULL) {
            continue;
        }
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(lst); k++) {
            PyObject *pair = PyList_GET_ITEM(lst, k);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                continue;
            }
            PyObject *vname = PyTuple_GET_ITEM(pair, 0);
            PyObject *obj = PyTuple_GET_ITEM(pair, 1);
            if (is_excluded(st, vname, obj)) {
                continue;
            }
            int dup = PySet_Contains(names_seen, vname);
            if (dup < 0 || (!dup && PySet_Add(names_seen, vname) < 0)) {
                goto done;
            }
            if (dup) {
                continue;          /* shadowed by a local */
            }
            /* bound to an object saved under an earlier name: load gives
             * the same object for both (`train = df`), pickled once */
            int alias = add_alias(pickled, vars_meta, vname, obj);
            if (alias < 0) {
                goto done;
            }
            if (alias) {
                continue;
            }
            /* Python code run for this variable gets VARIABLE_BUDGET_S, within
             * what is left of the snapshot's CHKPT_SNAPSHOT_TIME_BUDGET;
             * budget_stop is called on every path out of this iteration */
            double left = CHKPT_SNAPSHOT_TIME_BUDGET - (chkpt_monotonic() - t_start);
            if (left <= 0) {
                if (!out_of_time) {
                    chkpt_warn_fmt("the snapshot's time budget (%d s) is used up: "
                             "'%U' and the variables after it are not saved",
                             (int)CHKPT_SNAPSHOT_TIME_BUDGET, vname);
                }
                out_of_time = 1;
                if (append_new(skipped, skipped_entry(
                        vname, obj, "the snapshot's time budget was used up")) < 0) {
                    goto done;
                }
                continue;
            }
            /* an object that used up its budget once is not tried again:
             * under -f 0 it would cost its budget on every line */
            PyObject *slow_key = no_retry_key(vname, obj);
            if (slow_key == NULL) {
                goto done;
            }
            int slow = PySet_Contains(ck->warned, slow_key);
            Py_DECREF(slow_key);
            if (slow < 0) {
                goto done;
            }
            if (slow) {
                /* still counted among the snapshots it is left out of */
                if (count_left_out(ck, vname) < 0) {
                    goto done;
                }
                if (append_new(skipped, skipped_entry(
                        vname, obj, "not tried again: it failed before")) < 0) {
                    goto done;
                }
                continue;
            }
            PyObject *label = PyUnicode_FromFormat("variable '%U' (%s)", vname,
                                                   Py_TYPE(obj)->tp_name);
            slow_key = label ? no_retry_key(vname, obj) : NULL;
            if (slow_key != NULL) {
                chkpt_writer_child_object(ck, slow_key, label);
            }
            Py_XDECREF(label);
            Py_XDECREF(slow_key);
            PyErr_Clear();
            chkpt_hooks_budget_start(ck, left < VARIABLE_BUDGET_S ? left : VARIABLE_BUDGET_S);
            int sal = is_salient(ck, obj, measure_seen);
            if (sal <= 0) {
                chkpt_hooks_budget_stop(ck);
                if (sal < 0) {
                    if (script_exception_pending()) {
                        goto done;
                    }
                    PyErr_Clear();     /* could not measure: not salient */
                }
                continue;
            }
            Py_ssize_t first = bufs.n;
            int over;
            PyObject *pk = pickle_bounded(st, pickler_cls, kwargs, obj,
                                          ck->max_pickle_size - inband,
                                          ck->max_pickle_size, &over);
            PyObject *tname = type_name(Py_TYPE(obj));
            if (tname == NULL) {
                chkpt_hooks_budget_stop(ck);
                Py_XDECREF(pk);
                goto done;
            }
            if (pk == NULL || !PyBytes_Check(pk)) {
                chkpt_hooks_budget_stop(ck);
                bufvec_truncate(&bufs, first);
                int to_script = pk == NULL && script_exception_pending();
                if (to_script || over
                    || (pk == NULL && PyErr_ExceptionMatches(PyExc_TimeoutError))) {
                    chkpt_saved_error pending;
                    chkpt_error_save(&pending);
                    PyObject *key = no_retry_key(vname, obj);
                    if (key == NULL || PySet_Add(ck->warned, key) < 0) {
                        PyErr_Clear();
                    }
                    Py_XDECREF(key);
                    chkpt_error_restore(&pending);
                    if (to_script) {
                        Py_DECREF(tname);
                        goto done;
                    }
                }
                if (pk != NULL) {
                    Py_CLEAR(pk);
                    PyErr_SetString(PyExc_TypeError, "the pickler gave no bytes");
                }
                /* skipped: warn once per name per run, record it in meta */
                chkpt_saved_error e;
                PyObject *msg = chkpt_describe_pending();
                chkpt_error_save(&e);
                if (msg == NULL) {
                    PyErr_Clear();
                    msg = PyUnicode_FromString("cannot be pickled");
                }
                PyObject *line = msg ? PyUnicode_FromFormat(
                    "variable '%U' (%U) could not be saved: %U", vname, tname, msg)
                    : NULL;
                if (line == NULL || report_unsaved(ck, vname, line) < 0) {
                    PyErr_Clear();
                }
                Py_XDECREF(line);
                chkpt_error_restore(&e);
                PyErr_Clear();
                int bad = append_new(skipped, msg ? Py_BuildValue(
                    "{s:O,s:O,s:O}", "name", vname, "type", tname, "error", msg) : NULL);
                Py_XDECREF(msg);
                Py_DECREF(tname);
                if (bad) {
                    goto done;
                }
                continue;
            }
            /* pickled: describe it */
            long long vsize = PyBytes_GET_SIZE(pk);
            inband += vsize;
            PyObject *bidx = PyList_New(0);
            PyObject *pidx = PyLong_FromSsize_t(stream_idx);
            if (bidx == NULL || pidx == NULL || PyList_Append(pickles, pk) < 0
                || streams_add(&streams, PyBytes_AS_STRING(pk),
                               (size_t)PyBytes_GET_SIZE(pk), 0) < 0) {
                Py_XDECREF(bidx);
                Py_XDECREF(pidx);
                Py_DECREF(pk);
                Py_DECREF(tname);
                goto done;
            }
            stream_idx++;
            int bad = 0;
            for (Py_ssize_t b = first; b < bufs.n && !bad; b++) {
                PyObject *bi = PyLong_FromSsize_t(stream_idx);
                bad = bi == NULL || PyList_Append(bidx, bi) < 0
                      || streams_add(&streams, bufs.views[b].buf,
                                     (size_t)bufs.views[b].len, 0) < 0;
                Py_XDECREF(bi);
                vsize += bufs.views[b].len;
                stream_idx++;
            }
            PyObject *refs = bad ? NULL : pickle_module_refs(pk);
            Py_DECREF(pk);
            PyObject *rep = refs ? short_repr(ck, reprobj, obj) : NULL;
            chkpt_hooks_budget_stop(ck);
            PyObject *tmod = rep ? PyObject_GetAttrString((PyObject *)Py_TYPE(obj),
                                                          "__module__") : NULL;
            if (tmod != NULL && !PyUnicode_Check(tmod)) {
                Py_SETREF(tmod, Py_NewRef(Py_None));
            }
            PyObject *vm = tmod ? Py_BuildValue(
                "{s:O,s:O,s:O,s:L,s:O,s:O,s:O,s:O}", "name", vname, "type", tname,
                "type_module", tmod, "size", vsize, "repr", rep, "pickle", pidx,
                "buffers", bidx, "module_refs", refs) : NULL;
            Py_XDECREF(tmod);
            Py_XDECREF(rep);
            Py_XDECREF(refs);
            Py_DECREF(bidx);
            Py_DECREF(pidx);
            Py_DECREF(tname);
            PyObject *idkey = vm ? PyLong_FromVoidPtr(obj) : NULL;
            if (idkey == NULL || PyList_Append(vars_meta, vm) < 0
                || PyDict_SetItem(pickled, idkey, vm) < 0) {
                Py_XDECREF(idkey);
                Py_XDECREF(vm);
                goto done;
            }
            Py_DECREF(idkey);
            Py_DECREF(vm);
            total_size += vsize;
        }
    }

    if (!manual && PyList_GET_SIZE(vars_meta) == 0) {
        result = Py_NewRef(Py_None);     /* nothing salient: nothing written */
        goto done;
    }

    /* sources, shared between snapshots */
    src_bytes = PyDict_New();
    src_paths = PyDict_New();
    src_meta = PyDict_New();
    if (!src_bytes || !src_paths || !src_meta
        || collect_sources(ck, src_bytes, src_paths) < 0) {
        goto done;
    }
    {
        Py_ssize_t pos = 0;
        PyObject *mname, *b;
        while (PyDict_Next(src_bytes, &pos, &mname, &b)) {
            PyObject *path = PyDict_GetItemWithError(src_paths, mname);
            if (path == NULL) {
                goto done;
            }
            PyObject *e = Py_BuildValue("{s:O,s:n}", "path", path, "stream",
                                        stream_idx);
            if (e == NULL || PyDict_SetItem(src_meta, mname, e) < 0
                || streams_add(&streams, PyBytes_AS_STRING(b),
                               (size_t)PyBytes_GET_SIZE(b), CHKPT_STREAM_SHARED) < 0) {
                Py_XDECREF(e);
                goto done;
            }
            Py_DECREF(e);
            stream_idx++;
        }
    }

    /* run with -m: the main module's own name, for its relative imports */
    if (ck->main_module != NULL && ck->main_module != Py_None) {
        PyObject *entry = PyDict_GetItemString(src_meta, "__main__");   /* borrowed */
        PyObject *spec = entry ? PyObject_GetAttrString(ck->main_module, "__spec__")
                               : NULL;
        PyObject *sname = spec && spec != Py_None
                          ? PyObject_GetAttrString(spec, "name") : NULL;
        if (sname != NULL && PyUnicode_Check(sname)
            && PyUnicode_CompareWithASCIIString(sname, "__main__") != 0
            && PyDict_SetItemString(entry, "spec", sname) < 0) {
            Py_XDECREF(spec);
            Py_DECREF(sname);
            goto done;
        }
        Py_XDECREF(spec);
        Py_XDECREF(sname);
        PyErr_Clear();
    }

    /* meta */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    meta = PyDict_New();
    if (meta == NULL) {
        goto done;
    }
    PyObject *function = Py_None, *line = NULL;
    PyObject *fn_obj = NULL;
    if (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        fn_obj = PyObject_GetAttrString((PyObject *)code, "co_qualname");
        Py_DECREF(code);
        if (fn_obj == NULL) {
            goto done;
        }
        function = fn_obj;
        line = PyLong_FromLong(PyFrame_GetLineNumber(frame));
    }
    else {
        line = Py_NewRef(Py_None);
    }
    PyObject *argv = PySys_GetObject("argv");       /* borrowed */
    int bad = set_item(meta, "format", PyLong_FromLong(META_FORMAT)) < 0
        || PyDict_SetItemString(meta, "name", name ? name : Py_None) < 0
        || set_item(meta, "kind", PyUnicode_FromString(kind)) < 0
        || set_item(meta, "time", PyFloat_FromDouble((double)ts.tv_sec
                                                     + ts.tv_nsec * 1e-9)) < 0
        || PyDict_SetItemString(meta, "script", ck->script_path) < 0
        || set_item(meta, "line", line) < 0
        || PyDict_SetItemString(meta, "function", function) < 0
        || set_item(meta, "python", python_version()) < 0
        || set_item(meta, "chkpt", PyUnicode_FromString(CHKPT_VERSION)) < 0
        || set_item(meta, "seq", PyLong_FromUnsignedLongLong(ck->seq + 1)) < 0
        || set_item(meta, "pid", PyLong_FromLong((long)getpid())) < 0
        || PyDict_SetItemString(meta, "argv", argv ? argv : Py_None) < 0
        || set_item(meta, "size", PyLong_FromLongLong(total_size)) < 0
        || PyDict_SetItemString(meta, "variables", vars_meta) < 0
        || PyDict_SetItemString(meta, "skipped", skipped) < 0
        || PyDict_SetItemString(meta, "sources", src_meta) < 0;
    Py_XDECREF(fn_obj);
    if (bad) {
        goto done;
    }
    json = PyObject_CallMethod(st->json_module, "dumps", "O", meta);
    if (json == NULL) {
        goto done;
    }
    json_bytes = PyUnicode_AsUTF8String(json);
    if (json_bytes == NULL) {
        goto done;
    }

    write_failed_key = PyUnicode_FromString(" store write failed");
    if (write_failed_key == NULL) {
        goto done;
    }
    /* the I/O, without the GIL; the buffer exports are held */
    {
        char err[CHKPT_ERRLEN] = "";
        char path[PATH_MAX] = "";
        int ok = 0;
        uint64_t written = 0;
        /* Another thread may set ck.output_dir (which closes ck->store)
         * while the GIL is released: the store is ours until the I/O is
         * done, then handed back unless the output dir changed meanwhile. */
        chkpt_store *store = ck->store;
        PyObject *dir_then = Py_NewRef(ck->output_dir);
        ck->store = NULL;
        int level = ck->compress_level;
        PyObject *dir_fs = store ? NULL : PyUnicode_EncodeFSDefault(dir_then);
        if (store == NULL && dir_fs == NULL) {
            Py_DECREF(dir_then);
            goto done;
        }
        Py_BEGIN_ALLOW_THREADS
        /* the store was closed by another thread setting output_dir while
         * the objects were pickled (pickling runs Python code, which lets
         * other threads run): open the one of the new output dir */
        if (store == NULL) {
            chkpt_store_open(PyBytes_AS_STRING(dir_fs), 1, &store, err,
                             sizeof(err));
        }
        chkpt_snapwriter *w = store ? chkpt_snap_begin(store, level, err,
                                                       sizeof(err)) : NULL;
        if (w != NULL) {
            ok = 1;
            for (size_t k = 0; k < streams.n; k++) {
                long got = chkpt_snap_add_stream(w, streams.v[k].data,
                                                 streams.v[k].len,
                                                 streams.v[k].flags, err,
                                                 sizeof(err));
                if (got != (long)k) {
                    if (got >= 0) {
                        snprintf(err, sizeof(err), "store numbered stream %zu as %ld",
                                 k, got);
                    }
                    ok = 0;
                    break;
                }
            }
            if (ok) {
                written = chkpt_snap_bytes_written(w);
                ok = chkpt_snap_commit(w, PyBytes_AS_STRING(json_bytes),
                                       (size_t)PyBytes_GET_SIZE(json_bytes),
                                       path, sizeof(path), err, sizeof(err)) == 0;
            }
            else {
                chkpt_snap_abort(w);
            }
        }
        Py_END_ALLOW_THREADS
        Py_XDECREF(dir_fs);
        if (ck->store == NULL && ck->output_dir == dir_then) {
            ck->store = store;
        }
        else {
            chkpt_store_close(store);
        }
        Py_DECREF(dir_then);
        if (!ok) {
            /* once per run (a full disk fails every snapshot); each with -v */
            int seen = PySet_Contains(ck->warned, write_failed_key);
            if (seen < 0) {
                goto done;
            }
            if (!seen || ck->verbosity > 0) {
                chkpt_warn_fmt("snapshot not written to %U: %s%s", ck->output_dir, err,
                         seen ? "" : " (further failures are reported with -v)");
                if (!seen && PySet_Add(ck->warned, write_failed_key) < 0) {
                    goto done;
                }
            }
            result = Py_NewRef(Py_None);
            goto done;
        }
        ck->seq++;
        ck->last_snapshot = chkpt_monotonic();
        PyObject *p = PyUnicode_DecodeFSDefault(path);
        if (p == NULL) {
            goto done;
        }
        if (ck->verbosity > 0) {
            chkpt_warn_fmt("%s snapshot %zd variable(s), %lld bytes (%llu new) -> %U",
                       kind, PyList_GET_SIZE(vars_meta), total_size,
                       (unsigned long long)written, p);
        }
        result = chkpt_snapinfo_new(ck->module, p, meta);
        Py_DECREF(p);
        if (result != NULL && !manual && ck->max_store_size > 0) {
            enforce_store_size(ck);
        }
    }

done:
    Py_XDECREF(write_failed_key);
    slotnames_uninstall(&slotpatch);
    chkpt_hooks_budget_stop(ck);
    bufvec_free(&bufs);
    PyMem_Free(streams.v);
    Py_XDECREF(frame);
    Py_XDECREF(locals);
    Py_XDECREF(globals);
    Py_XDECREF(items);
    Py_XDECREF(gitems);
    Py_XDECREF(names_seen);
    Py_XDECREF(pickled);
    Py_XDECREF(measure_seen);
    Py_XDECREF(vars_meta);
    Py_XDECREF(skipped);
    Py_XDECREF(pickles);
    Py_XDECREF(pickler_cls);
    Py_XDECREF(kwargs);
    Py_XDECREF(callback);
    Py_XDECREF(capsule);
    Py_XDECREF(reprobj);
    Py_XDECREF(meta);
    Py_XDECREF(src_bytes);
    Py_XDECREF(src_paths);
    Py_XDECREF(src_meta);
    Py_XDECREF(json);
    Py_XDECREF(json_bytes);
    return result;
}

int
chkpt_capture_report_unsaved(CheckpointObject *ck, PyObject *vname, PyObject *msg)
{
    return report_unsaved(ck, vname, msg);
}

PyObject *
chkpt_capture(CheckpointObject *ck, PyFrameObject *frame, const char *kind,
              PyObject *name)
{
    if (ck->in_snapshot || ck->store_failed) {
        Py_RETURN_NONE;        /* re-entered from a __reduce__ or repr */
    }
    /* in a child process (writer.c), unless it cannot be had */
    int handled = 0;
    PyObject *r = chkpt_writer_capture(ck, frame, kind, name, &handled);
    if (handled) {
        return r;
    }
    return chkpt_capture_here(ck, frame, kind, name);
}

PyObject *
chkpt_capture_here(CheckpointObject *ck, PyFrameObject *frame, const char *kind,
                   PyObject *name)
{
    if (ck->in_snapshot || ck->store_failed) {
        Py_RETURN_NONE;
    }
    int manual = strcmp(kind, "manual") == 0;
    ck->in_snapshot = 1;
    chkpt_hooks_budget_start(ck, CHKPT_SNAPSHOT_TIME_BUDGET);
    PyObject *r = capture_impl(ck, frame, kind, name, manual);
    chkpt_hooks_budget_stop(ck);
    ck->in_snapshot = 0;
    if (r == NULL) {
        if (script_exception_pending()) {
            return NULL;
        }
        chkpt_warn_exc("snapshot failed");
        Py_RETURN_NONE;
    }
    return r;
}
