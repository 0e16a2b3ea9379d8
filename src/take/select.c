/* select.c: which of a frame's variables a snapshot holds. Definitions
 * and machinery never (chkpt_is_excluded), unless tracked
 * (chkpt_is_tracked_anyway); tracked objects and the
 * objects of tracked libraries always; the others when their estimated
 * size reaches --min-obj-size (chkpt_is_salient). And which code is the
 * script's own (chkpt_is_script_code), which decides the frame. Part of
 * capture (capture.h); calls base only. */
#include "capture.h"
#include <string.h>

#define MEASURE_MAX_DEPTH 64
/* What CPython objects cost, for the size estimate of is_salient (64-bit
 * builds; an estimate only: cheaper than asking __sizeof__ of each). */
#define GC_HEADER_BYTES 16      /* PyGC_Head before every GC-tracked object */
#define SMALL_INT_BYTES 32      /* an int that fits in a long long */
#define STR_HEADER_BYTES 56     /* a compact str before its characters */
#define BYTES_HEADER_BYTES 33   /* a bytes object before its data, with its NUL */

/* Is the code the script's own: the main script or a module in its
 * directory (a sibling)? Never raises. */
int
chkpt_is_script_code(CheckpointObject *ck, PyCodeObject *code)
{
    PyObject *fn = code->co_filename;
    if (ck->script_path == NULL || ck->script_path == Py_None
        || fn == NULL || !PyUnicode_Check(fn)) {
        return 0;
    }
    if (PyUnicode_Compare(fn, ck->script_path) == 0) {
        return 1;
    }
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    /* sibling modules: a file directly in the script's directory */
    if (ck->script_dir == NULL || !PyUnicode_Check(ck->script_dir)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GetLength(fn);
    Py_ssize_t slash = PyUnicode_FindChar(fn, '/', 0, n, -1);
    if (slash <= 0) {
        return 0;
    }
    PyObject *dir = PyUnicode_Substring(fn, 0, slash);
    if (dir == NULL) {
        PyErr_Clear();
        return 0;
    }
    int same = PyUnicode_Compare(dir, ck->script_dir) == 0;
    Py_DECREF(dir);
    PyErr_Clear();
    return same;
}


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
int
chkpt_is_excluded(chkpt_state *st, PyObject *name, PyObject *obj)
{
    /* a compiler-made hidden local such as a generator expression's
       iterator '.0', which no code can name */
    if (!PyUnicode_Check(name) || is_dunder(name)
        || (PyUnicode_GET_LENGTH(name) > 0 && PyUnicode_READ_CHAR(name, 0) == '.')) {
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

/* Tracked objects are the script's explicit wish: captured even when they
 * are definitions (a function or class of the script), which automatic
 * salience never picks; one that cannot be pickled (a module) is then
 * reported like any other. Names that are not identifiers or are
 * __dunder__ stay out. 1 tracked, 0 not (never an error). */
int
chkpt_is_tracked_anyway(CheckpointObject *ck, PyObject *name, PyObject *obj)
{
    if (!PyUnicode_Check(name) || is_dunder(name)) {
        return 0;
    }
    PyObject *key = PyLong_FromVoidPtr(obj);
    PyObject *t = key ? PyDict_GetItemWithError(ck->tracked, key) : NULL;
    Py_XDECREF(key);
    PyErr_Clear();
    return t == obj;
}

/* Is tp from one of the tracked libraries (prefix match on __module__)? */
int
chkpt_is_library_type(CheckpointObject *ck, PyTypeObject *tp)
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

/* Size of what an object holds, measured until `limit` is reached. */
typedef struct {
    CheckpointObject *ck;
    long long total, limit;
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
        if (n >= 0 && m->total + n < m->limit) {
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
        n += GC_HEADER_BYTES;
    }
    return n;
}

static int
measure_items(measure *m, PyObject *o, int depth)
{
    if (PyDict_Check(o)) {
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (m->total < m->limit && PyDict_Next(o, &pos, &k, &v)) {
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
        for (Py_ssize_t i = 0; m->total < m->limit; i++) {
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
        while (m->total < m->limit && (it = PyIter_Next(iter)) != NULL) {
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
    if (m->total >= m->limit || depth > MEASURE_MAX_DEPTH) {
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
            m->total += SMALL_INT_BYTES;
            return 0;
        }
        m->total += shallow_size(o);
        return 0;
    }
    if (tp == &PyUnicode_Type) {
        m->total += STR_HEADER_BYTES + (long long)PyUnicode_GET_LENGTH(o) * PyUnicode_KIND(o);
        return 0;
    }
    if (tp == &PyBytes_Type) {
        m->total += BYTES_HEADER_BYTES + (long long)PyBytes_GET_SIZE(o);
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
    if (chkpt_is_library_type(m->ck, tp)) {
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
int
chkpt_holds_at_least(CheckpointObject *ck, PyObject *obj, long long bytes,
                     PyObject *seen)
{
    measure m = {ck, 0, bytes, seen};
    if (PySet_Clear(seen) < 0 || measure_obj(&m, obj, 0) < 0) {
        return -1;
    }
    return m.total >= bytes;
}

int
chkpt_is_salient(CheckpointObject *ck, PyObject *obj, PyObject *seen)
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
    return chkpt_holds_at_least(ck, obj, ck->min_obj_size, seen);
}

