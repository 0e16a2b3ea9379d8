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
#include "capture.h"
#include "pickle_refs.h"
#include "cost.h"
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
script_exception_pending(const chkpt_capture_env *env)
{
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_Exception)
        || env->no_script) {
        return 0;       /* in a snapshot child there is no script to stop */
    }
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return 1;
    }
    return raised_by_signal_handler();
}

/* The key in ck->no_retry of an object not to be pickled again (it used up
 * its time limit, or interrupted the script): the variable's name with the
 * object's identity and type. */
static PyObject *
no_retry_key(PyObject *vname, PyObject *obj)
{
    return Py_BuildValue("(sONs)", "no retry", vname, PyLong_FromVoidPtr(obj),
                         Py_TYPE(obj)->tp_name);
}


/* keys in ck->warned_once: warnings given once per run */
#define ONCE_STORE_SIZE "max-store-size"
#define ONCE_WRITE_FAILED "store write failed"
#define REPR_LIMIT 160          /* characters of a variable's repr in meta */
#define MODREFS_MAX_PICKLE (64u << 20)  /* skip module_refs beyond this */
/* Seconds the Python code run for one variable (its __reduce__, its
 * __repr__, a library's memory_usage) may take: past it, hooks.c makes that
 * code raise TimeoutError and the variable is skipped like any other that
 * cannot be pickled. C-level pickling of plain data is never interrupted. */
#define VARIABLE_TIME_LIMIT_S 5.0
/* (the whole snapshot: CHKPT_SNAPSHOT_TIME_LIMIT in chkpt.h) */

int
chkpt_capture_init(PyObject *module)
{
    if (chkpt_pickler_init(module) < 0) {
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
        chkpt_warn_py("%U (left out of %ld snapshot%s)", msg, n, n == 1 ? "" : "s");
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
    if (ck->verbosity > 0) {
        int first = chkpt_once(ck->warned, vname);
        if (first == 1) {
            chkpt_warn_py("%U", msg);
        }
        return first < 0 ? -1 : 0;
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
            int first = chkpt_once(ck->warned, vname);
            if (first == 1) {
                chkpt_warn_py("%U", msg);
            }
            return first < 0 ? -1 : 0;
        }
        Py_DECREF(r);
        ck->deferred = d;
    }
    int counted = count_left_out(ck, vname);
    if (counted != 0) {
        return counted < 0 ? -1 : 0;
    }
    int first = chkpt_once(ck->warned, vname);
    if (first <= 0) {
        return first;           /* reported already, or an error */
    }
    PyObject *entry = Py_BuildValue("[Oi]", msg, 1);
    if (entry == NULL || PyDict_SetItem(ck->deferred, vname, entry) < 0) {
        Py_XDECREF(entry);
        return -1;
    }
    Py_DECREF(entry);
    return 0;
}

/* ------------------------------------------------------------------ */
/* module_refs: the globals a pickle names (STACK_GLOBAL / GLOBAL)      */

static int
add_ref(void *refs, const char *mod, size_t mlen, const char *name,
        size_t nlen)
{
    PyObject *t = Py_BuildValue("(s#s#)", mod, (Py_ssize_t)mlen, name,
                                (Py_ssize_t)nlen);
    if (t == NULL) {
        PyErr_Clear();     /* not UTF-8: not worth failing for */
        return 0;
    }
    int r = PySet_Add((PyObject *)refs, t);
    Py_DECREF(t);
    return r;
}

/* The (module, name) pairs a protocol 2-5 pickle names (pickle_refs.c
 * walks it). Returns a new list of [module, name] lists sorted, or None if
 * the pickle uses something the walker does not follow. */
static PyObject *
pickle_module_refs(PyObject *data)
{
    size_t n = (size_t)PyBytes_GET_SIZE(data);
    if (n > MODREFS_MAX_PICKLE) {
        Py_RETURN_NONE;
    }
    PyObject *refs = PySet_New(NULL);
    if (refs == NULL) {
        return NULL;
    }
    int r = chkpt_pickle_refs((const unsigned char *)PyBytes_AS_STRING(data),
                              n, add_ref, refs);
    if (r < 0) {
        Py_DECREF(refs);
        return NULL;
    }
    if (r == 0) {
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
short_repr(CheckpointObject *ck, const chkpt_capture_env *env,
           PyObject *reprobj, PyObject *obj)
{
    PyObject *r = NULL;
    if (chkpt_is_library_type(ck, Py_TYPE(obj))) {
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
        if (script_exception_pending(env)) {
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
    b = chkpt_read_file(path);
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
    /* Which modules are siblings, read without a reference taken: in a
     * writer child every object written to (a refcount too) is a page
     * copied, and sys.modules holds a thousand modules (sklearn's). Only
     * what matches is held, then read; no Python code runs meanwhile. */
    PyObject *found = PyList_New(0);
    PyObject *dunder_file = found ? PyUnicode_InternFromString("__file__") : NULL;
    if (dunder_file == NULL) {
        Py_XDECREF(found);
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *mod;
    while (PyDict_Next(PyImport_GetModuleDict(), &pos, &name, &mod)) {
        if (!PyUnicode_Check(name) || !PyModule_Check(mod) || mod == ck->main_module
            || PyUnicode_CompareWithASCIIString(name, "__main__") == 0) {
            continue;
        }
        PyObject *d = PyModule_GetDict(mod);
        PyObject *file = d ? PyDict_GetItemWithError(d, dunder_file) : NULL;
        if (file == NULL || !PyUnicode_Check(file)
            || PyUnicode_Tailmatch(file, ck->script_dir, 0,
                                   PyUnicode_GET_LENGTH(ck->script_dir), -1) != 1) {
            PyErr_Clear();
            continue;
        }
        PyObject *pair = PyTuple_Pack(2, name, mod);
        if (pair == NULL || PyList_Append(found, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(found);
            Py_DECREF(dunder_file);
            return -1;
        }
        Py_DECREF(pair);
    }
    Py_DECREF(dunder_file);
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(found) && rc == 0; i++) {
        name = PyTuple_GET_ITEM(PyList_GET_ITEM(found, i), 0);
        mod = PyTuple_GET_ITEM(PyList_GET_ITEM(found, i), 1);
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
            if (b == NULL && PyErr_ExceptionMatches(PyExc_NotADirectoryError)) {
                /* the script is a zip application: its modules' sources
                   are in the archive, not files (a warning here would
                   come at every snapshot) */
                PyErr_Clear();
            }
            else if (b == NULL) {
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
    }
    Py_DECREF(found);
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
 * oldest snapshots go, never the newest nor a crash or signal snapshot
 * (the ones a user looks for). Runs without the GIL; a failure is
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
    char **pinned;
    size_t npinned;
    int rc = chkpt_budget_pinned(ck, dir, &pinned, &npinned);
    if (rc == 0) {
        Py_BEGIN_ALLOW_THREADS
        rc = chkpt_store_gc_budget(dir, max_bytes, 1, pinned, npinned, NULL,
                                   NULL, err, sizeof(err));
        Py_END_ALLOW_THREADS
        chkpt_free_list(pinned, npinned);
    }
    else {
        snprintf(err, sizeof(err), "cannot list its snapshots");
    }
    if (rc == 0) {
        return;
    }
    if (chkpt_once_str(ck->warned_once, ONCE_STORE_SIZE) == 1) {
        chkpt_warn_py("cannot keep %U under --max-store-size: %s",
                      ck->output_dir, err);
    }
    PyErr_Clear();
}

/* One snapshot in the making, carried through the steps of capture_impl.
 * The steps, in order:
 *   capture_open_store   the store, opened once per run (or per output dir)
 *   capture_select       the frame's variables: (name, object) candidates
 *   capture_pickle       each candidate: salience, pickle, description
 *   capture_add_sources  the script's and sibling modules' sources
 *   capture_build_meta   the meta document, as JSON bytes
 *   capture_write        the streams and the meta into the store (no GIL)
 *   capture_publish      the SnapshotInfo, retention
 * Everything up to capture_select runs in the script's process and runs no
 * Python code of the script; everything from capture_pickle to
 * capture_write only reads what select found, which is the seam where a
 * writer in another process (a forked child) takes over. */
typedef struct {
    CheckpointObject *ck;
    chkpt_state *st;
    const chkpt_capture_env *env; /* from whoever runs the capture */
    chkpt_kind kind;
    PyObject *name;               /* borrowed: the snapshot's name, or NULL */
    int manual;
    double t_start;               /* monotonic: the snapshot's time limit */
    /* chkpt_capture_values: the values to save instead of a frame's */
    PyObject *entries;            /* borrowed: list of (name, object, extra) */
    PyObject *extra_meta;         /* borrowed: merged into the meta, or NULL */
    /* capture_select */
    PyFrameObject *frame;         /* NULL: manual, outside the script's code */
    PyObject *candidates;         /* list of (name, object): locals first,
                                     then globals not shadowed by a local;
                                     with entries, (name, object, extra) */
    /* capture_pickle */
    PyObject *pickler_cls, *kwargs, *reprobj;
    chkpt_bufvec bufs;                  /* out-of-band buffers (exports held) */
    chkpt_slotnames_patch slotpatch;
    PyObject *pickles;            /* list of bytes: keeps streams' data alive */
    PyObject *pickled;            /* id(obj) -> its variable's meta */
    PyObject *measure_seen;       /* scratch set for chkpt_is_salient */
    PyObject *vars_meta;          /* list: meta "variables" */
    PyObject *skipped;            /* list: meta "skipped" */
    long long total_size;         /* bytes of captured data */
    long long inband;             /* pickled bytes held, for --max-pickle-size */
    int out_of_time;              /* the snapshot's time limit is used up */
    /* streams in store order: each pickle then its buffers, then sources */
    streamvec streams;
    /* capture_add_sources */
    PyObject *src_bytes;          /* module name -> bytes (streams' data) */
    PyObject *src_meta;           /* meta "sources" */
    /* capture_build_meta */
    PyObject *meta, *json_bytes;
    /* capture_write */
    char path[PATH_MAX];          /* the manifest written */
    uint64_t written;             /* new bytes the store wrote */
} capture_ctx;

/* Sets (seconds > 0) or lifts the limit on the Python code the capture
 * runs, through its runner (chkpt_capture_env). */
static void
time_limit(capture_ctx *c, double seconds)
{
    if (c->env->time_limit != NULL) {
        c->env->time_limit(c->env->arg, seconds);
    }
}

static void
capture_ctx_clear(capture_ctx *c)
{
    chkpt_slotnames_uninstall(&c->slotpatch);
    time_limit(c, 0);
    chkpt_bufvec_free(&c->bufs);
    PyMem_Free(c->streams.v);
    c->streams.v = NULL;
    Py_CLEAR(c->frame);
    Py_CLEAR(c->candidates);
    Py_CLEAR(c->pickler_cls);
    Py_CLEAR(c->kwargs);
    Py_CLEAR(c->reprobj);
    Py_CLEAR(c->pickles);
    Py_CLEAR(c->pickled);
    Py_CLEAR(c->measure_seen);
    Py_CLEAR(c->vars_meta);
    Py_CLEAR(c->skipped);
    Py_CLEAR(c->src_bytes);
    Py_CLEAR(c->src_meta);
    Py_CLEAR(c->meta);
    Py_CLEAR(c->json_bytes);
}

/* 1 the store is open, 0 it cannot be (warned once; no snapshot), -1
 * error. */
static int
capture_open_store(capture_ctx *c)
{
    CheckpointObject *ck = c->ck;
    if (ck->store != NULL) {
        return 1;
    }
    char err[CHKPT_ERRLEN] = "";
    PyObject *fs = PyUnicode_EncodeFSDefault(ck->output_dir);
    if (fs == NULL) {
        return -1;
    }
    int r;
    chkpt_store *s = NULL;
    Py_BEGIN_ALLOW_THREADS
    r = chkpt_store_open(PyBytes_AS_STRING(fs), 1, &s, err, sizeof(err));
    Py_END_ALLOW_THREADS
    Py_DECREF(fs);
    if (r < 0 || s == NULL) {
        if (!ck->store_failed) {
            chkpt_warn_py("cannot open the snapshot store %U: %s; no snapshots "
                          "will be written", ck->output_dir, err);
        }
        chkpt_capture_store_unusable(ck);
        return 0;
    }
    ck->store = s;
    return 1;
}

/* Appends to c->candidates the (name, object) pairs of items that are not
 * excluded (definitions, machinery; unless tracked) nor named already (a
 * global shadowed by a local). */
static int
select_from(capture_ctx *c, PyObject *items, PyObject *names_seen)
{
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(items); k++) {
        PyObject *pair = PyList_GET_ITEM(items, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            continue;
        }
        PyObject *vname = PyTuple_GET_ITEM(pair, 0);
        PyObject *obj = PyTuple_GET_ITEM(pair, 1);
        if (chkpt_is_excluded(c->st, vname, obj)
            && !chkpt_is_tracked_anyway(c->ck, vname, obj)) {
            continue;
        }
        int dup = PySet_Contains(names_seen, vname);
        if (dup < 0 || (!dup && PySet_Add(names_seen, vname) < 0)) {
            return -1;
        }
        if (!dup && PyList_Append(c->candidates, pair) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The frame's variables: locals over its module's globals. */
static int
capture_select(capture_ctx *c)
{
    c->candidates = PyList_New(0);
    if (c->candidates == NULL) {
        return -1;
    }
    if (c->entries != NULL) {
        /* explicit values: all of them but definitions and machinery;
         * names repeat, one scope (frame, module) each */
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(c->entries); k++) {
            PyObject *e = PyList_GET_ITEM(c->entries, k);
            if (PyTuple_Check(e) && PyTuple_GET_SIZE(e) == 3
                && !chkpt_is_excluded(c->st, PyTuple_GET_ITEM(e, 0),
                                      PyTuple_GET_ITEM(e, 1))
                && PyList_Append(c->candidates, e) < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (c->frame == NULL) {
        return 0;
    }
    PyObject *locals = PyFrame_GetLocals(c->frame);
    PyObject *globals = PyFrame_GetGlobals(c->frame);
    PyObject *names_seen = PySet_New(NULL);
    PyObject *items = locals ? mapping_items(locals) : NULL;
    PyObject *gitems = globals && globals != locals ? PyDict_Items(globals) : NULL;
    int rc = -1;
    if (names_seen != NULL && items != NULL && globals != NULL
        && (gitems != NULL || globals == locals)
        && select_from(c, items, names_seen) == 0
        && (gitems == NULL || select_from(c, gitems, names_seen) == 0)) {
        rc = 0;
    }
    Py_XDECREF(locals);
    Py_XDECREF(globals);
    Py_XDECREF(names_seen);
    Py_XDECREF(items);
    Py_XDECREF(gitems);
    return rc;
}

/* The variable could not be pickled (pk NULL with the exception pending,
 * or not bytes, or over the size cap): it is not tried again when it
 * used up its time limit, warned about once per name per run and recorded in
 * the meta's "skipped". -1 on an error, or on an exception for the script
 * (still pending). */
static int
record_unsaved(capture_ctx *c, PyObject *vname, PyObject *obj, PyObject *pk,
               int over, PyObject *tname)
{
    CheckpointObject *ck = c->ck;
    int to_script = pk == NULL && script_exception_pending(c->env);
    if (to_script || over
        || (pk == NULL && PyErr_ExceptionMatches(PyExc_TimeoutError))) {
        chkpt_saved_error pending;
        chkpt_error_save(&pending);
        PyObject *key = no_retry_key(vname, obj);
        if (key == NULL || PySet_Add(ck->no_retry, key) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(key);
        chkpt_error_restore(&pending);
        if (to_script) {
            return -1;
        }
    }
    if (pk != NULL) {
        PyErr_SetString(PyExc_TypeError, "the pickler gave no bytes");
    }
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
    int bad = append_new(c->skipped, msg ? Py_BuildValue(
        "{s:O,s:O,s:O}", "name", vname, "type", tname, "error", msg) : NULL);
    Py_XDECREF(msg);
    return bad ? -1 : 0;
}

static int merge_extra(PyObject *vm, PyObject *extra);

/* The variable was pickled into pk, its buffers are c->bufs from index
 * first on: adds them to the streams and its entry to the meta. Stops the
 * variable's time limit once its Python code (repr) has run. */
static int
record_pickled(capture_ctx *c, PyObject *vname, PyObject *obj, PyObject *pk,
               Py_ssize_t first, PyObject *tname, PyObject *extra,
               PyObject *standin, int no_repr)
{
    CheckpointObject *ck = c->ck;
    long long vsize = PyBytes_GET_SIZE(pk);
    c->inband += vsize;
    PyObject *bidx = PyList_New(0);
    PyObject *pidx = PyLong_FromSize_t(c->streams.n);
    if (bidx == NULL || pidx == NULL || PyList_Append(c->pickles, pk) < 0
        || streams_add(&c->streams, PyBytes_AS_STRING(pk),
                       (size_t)PyBytes_GET_SIZE(pk), 0) < 0) {
        Py_XDECREF(bidx);
        Py_XDECREF(pidx);
        time_limit(c, 0);
        return -1;
    }
    int bad = 0;
    for (Py_ssize_t b = first; b < c->bufs.n && !bad; b++) {
        PyObject *bi = PyLong_FromSize_t(c->streams.n);
        bad = bi == NULL || PyList_Append(bidx, bi) < 0
              || streams_add(&c->streams, c->bufs.views[b].buf,
                             (size_t)c->bufs.views[b].len, 0) < 0;
        Py_XDECREF(bi);
        vsize += c->bufs.views[b].len;
    }
    PyObject *refs = bad ? NULL : pickle_module_refs(pk);
    /* no_repr: no more Python code of obj's may run (its time limit is gone) */
    PyObject *rep = refs == NULL ? NULL
        : no_repr ? PyUnicode_FromFormat("<%s object>", short_type_name(Py_TYPE(obj)))
        : short_repr(ck, c->env, c->reprobj, obj);
    time_limit(c, 0);
    PyObject *tmod = rep ? PyObject_GetAttrString((PyObject *)Py_TYPE(obj),
                                                  "__module__") : NULL;
    if (tmod != NULL && !PyUnicode_Check(tmod)) {
        Py_SETREF(tmod, Py_NewRef(Py_None));
    }
    PyObject *vm = tmod ? Py_BuildValue(
        "{s:O,s:O,s:O,s:L,s:O,s:O,s:O,s:O}", "name", vname, "type", tname,
        "type_module", tmod, "size", vsize, "repr", rep, "pickle", pidx,
        "buffers", bidx, "module_refs", refs) : NULL;
    if (vm != NULL && ((standin != NULL
                        && PyDict_SetItemString(vm, "standin", standin) < 0)
                       || (extra != NULL && merge_extra(vm, extra) < 0))) {
        Py_CLEAR(vm);
    }
    Py_XDECREF(tmod);
    Py_XDECREF(rep);
    Py_XDECREF(refs);
    Py_DECREF(bidx);
    Py_DECREF(pidx);
    PyObject *idkey = vm ? PyLong_FromVoidPtr(obj) : NULL;
    int r = idkey == NULL || PyList_Append(c->vars_meta, vm) < 0
            || PyDict_SetItem(c->pickled, idkey, vm) < 0 ? -1 : 0;
    Py_XDECREF(idkey);
    Py_XDECREF(vm);
    if (r == 0) {
        c->total_size += vsize;
    }
    return r;
}

/* Before a variable's Python code runs: 1 go on with its time limit (seconds
 * in *limit), 0 leave it out (recorded), -1 error. Left out: everything
 * once the snapshot's time limit is used up, and an object that used up
 * its time limit before (under -f 0 it would cost its time limit on every line). */
static int
variable_time_limit(capture_ctx *c, PyObject *vname, PyObject *obj, double *limit)
{
    double left = CHKPT_SNAPSHOT_TIME_LIMIT - (chkpt_monotonic() - c->t_start);
    if (left <= 0) {
        if (!c->out_of_time) {
            chkpt_warn_py("the snapshot's time budget (%d s) is used up: "
                          "'%U' and the variables after it are not saved",
                          (int)CHKPT_SNAPSHOT_TIME_LIMIT, vname);
        }
        c->out_of_time = 1;
        return append_new(c->skipped, skipped_entry(
            vname, obj, "the snapshot's time budget was used up"));
    }
    PyObject *slow_key = no_retry_key(vname, obj);
    if (slow_key == NULL) {
        return -1;
    }
    int slow = PySet_Contains(c->ck->no_retry, slow_key);
    Py_DECREF(slow_key);
    if (slow < 0) {
        return -1;
    }
    if (slow) {
        /* still counted among the snapshots it is left out of */
        if (count_left_out(c->ck, vname) < 0) {
            return -1;
        }
        return append_new(c->skipped, skipped_entry(
            vname, obj, "not tried again: it failed before"));
    }
    *limit = left < VARIABLE_TIME_LIMIT_S ? left : VARIABLE_TIME_LIMIT_S;
    return 1;
}

/* Sets the keys of extra in a variable's meta entry, after removing the
 * scope keys an alias copied from its first name's entry. same_as names a
 * variable of the same scope (a frame's locals, a module's globals): an
 * alias of another scope's value keeps only its copy of the streams. */
static int
merge_extra(PyObject *vm, PyObject *extra)
{
    static const char *const scoped[] = {"frame", "globals", NULL};
    int other_scope = 0;
    for (int k = 0; scoped[k]; k++) {
        PyObject *key = PyUnicode_FromString(scoped[k]);
        PyObject *was = key ? PyDict_GetItemWithError(vm, key) : NULL;
        PyObject *now = key ? PyDict_GetItemWithError(extra, key) : NULL;
        if (key == NULL || PyErr_Occurred()) {
            Py_XDECREF(key);
            return -1;
        }
        if (was != now && (was == NULL || now == NULL
                           || PyObject_RichCompareBool(was, now, Py_EQ) != 1)) {
            other_scope = 1;
        }
        int bad = was != NULL && PyDict_DelItem(vm, key) < 0;
        Py_DECREF(key);
        if (bad) {
            return -1;
        }
    }
    if (other_scope && PyDict_GetItemString(vm, "same_as") != NULL
        && PyDict_DelItemString(vm, "same_as") < 0) {
        return -1;
    }
    return PyDict_Update(vm, extra);
}

/* The pickle of a chkpt.Unloadable standing in for obj, which could not be
 * pickled: its type's module and qualname, and as error why, with its repr
 * (rep NULL when no Python code of obj's may run any more). */
static PyObject *
standin_pickle(capture_ctx *c, PyObject *vname, PyObject *obj, PyObject *why,
               PyObject *rep)
{
    PyObject *tp = (PyObject *)Py_TYPE(obj);
    PyObject *mod = PyObject_GetAttrString(tp, "__module__");
    PyObject *qual = mod ? PyObject_GetAttrString(tp, "__qualname__") : NULL;
    if (qual == NULL || !PyUnicode_Check(mod) || !PyUnicode_Check(qual)) {
        PyErr_Clear();
        Py_XSETREF(mod, PyUnicode_FromString("builtins"));
        Py_XSETREF(qual, PyUnicode_FromString(Py_TYPE(obj)->tp_name));
    }
    PyObject *err = rep ? PyUnicode_FromFormat("%U; its repr: %U", why, rep)
                        : Py_NewRef(why);
    PyObject *s = mod && qual && err
        ? PyObject_CallFunction((PyObject *)c->st->Unloadable_Type, "OOOO", vname,
                                mod, qual, err)
        : NULL;
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    Py_XDECREF(err);
    if (s == NULL) {
        return NULL;
    }
    int over;
    PyObject *pk = chkpt_pickle_bounded(c->st, c->pickler_cls, c->kwargs, s,
                                        LLONG_MAX, LLONG_MAX, &over);
    Py_DECREF(s);
    return pk;
}

/* One of chkpt_capture_values' values: saved whatever its size, as a
 * stand-in keeping its type and repr when it cannot be pickled (or its
 * time limit, or the snapshot's, is gone), so that no value loses the
 * snapshot. 0 done, -1 error (an exception for the script among them). */
static int
capture_value(capture_ctx *c, PyObject *vname, PyObject *obj, PyObject *extra)
{
    CheckpointObject *ck = c->ck;
    const char *gave_up = NULL;
    double left = CHKPT_SNAPSHOT_TIME_LIMIT - (chkpt_monotonic() - c->t_start);
    PyObject *slow_key = no_retry_key(vname, obj);
    int slow = slow_key ? PySet_Contains(ck->no_retry, slow_key) : -1;
    Py_XDECREF(slow_key);
    if (slow < 0) {
        return -1;
    }
    if (left <= 0) {
        gave_up = "the snapshot's time budget was used up";
    }
    else if (slow) {
        gave_up = "not tried again: it failed before";
    }
    Py_ssize_t first = c->bufs.n;
    int over = 0;
    PyObject *pk = NULL;
    if (gave_up == NULL) {
        time_limit(c, left < VARIABLE_TIME_LIMIT_S ? left : VARIABLE_TIME_LIMIT_S);
        pk = chkpt_pickle_bounded(c->st, c->pickler_cls, c->kwargs, obj,
                                  ck->max_pickle_size - c->inband,
                                  ck->max_pickle_size, &over);
    }
    PyObject *tname = type_name(Py_TYPE(obj));
    if (tname == NULL) {
        time_limit(c, 0);
        Py_XDECREF(pk);
        return -1;
    }
    PyObject *why = NULL;
    if (pk == NULL || !PyBytes_Check(pk)) {
        chkpt_bufvec_truncate(&c->bufs, first);
        if (gave_up == NULL && pk == NULL && script_exception_pending(c->env)) {
            time_limit(c, 0);
            Py_DECREF(tname);
            return -1;          /* Ctrl-C meanwhile: the script's */
        }
        if (c->kind == CHKPT_KIND_AUTO) {
            /* a boundary snapshot (statements.c): left out, as an automatic
             * snapshot leaves it out, no stand-in */
            time_limit(c, 0);
            PyObject *msg = NULL;
            if (gave_up == NULL) {
                if (pk == NULL && (over || PyErr_ExceptionMatches(
                                               PyExc_TimeoutError))) {
                    /* never again: it would cost its time limit each time */
                    PyObject *key = no_retry_key(vname, obj);
                    if (key == NULL || PySet_Add(ck->no_retry, key) < 0) {
                        PyErr_Clear();
                    }
                    Py_XDECREF(key);
                }
                msg = pk == NULL ? chkpt_describe_pending()
                                 : PyUnicode_FromString("no bytes");
                PyErr_Clear();
            }
            /* not warned about: an open file is expected among globals */
            int r = append_new(c->skipped, Py_BuildValue(
                "{s:O,s:O,s:s}", "name", vname, "type", tname, "error",
                gave_up ? gave_up : "cannot be pickled"));
            if (msg != NULL && r == 0) {
                PyObject *last = PyList_GET_ITEM(
                    c->skipped, PyList_GET_SIZE(c->skipped) - 1);
                if (PyDict_SetItemString(last, "error", msg) < 0) {
                    r = -1;
                }
            }
            Py_XDECREF(msg);
            Py_XDECREF(pk);
            Py_DECREF(tname);
            return r;
        }
        if (gave_up != NULL) {
            why = PyUnicode_FromString(gave_up);
        }
        else {
            if (pk != NULL) {
                Py_CLEAR(pk);
                PyErr_SetString(PyExc_TypeError, "the pickler gave no bytes");
            }
            PyObject *msg = chkpt_describe_pending();
            PyErr_Clear();
            why = msg ? PyUnicode_FromFormat("could not be pickled (%U)", msg)
                      : PyUnicode_FromString("could not be pickled");
            Py_XDECREF(msg);
        }
        PyObject *rep = why && gave_up == NULL ? short_repr(ck, c->env, c->reprobj, obj)
                                               : NULL;
        pk = why && (rep || gave_up) ? standin_pickle(c, vname, obj, why, rep) : NULL;
        Py_XDECREF(rep);
        if (pk == NULL) {
            time_limit(c, 0);
            Py_XDECREF(why);
            Py_DECREF(tname);
            return -1;
        }
    }
    int r = record_pickled(c, vname, obj, pk, first, tname, extra, why,
                           gave_up != NULL);
    Py_XDECREF(why);
    Py_DECREF(tname);
    Py_DECREF(pk);
    return r;
}

/* One variable: an alias of one saved already, or measured and, when
 * salient, pickled. 0 done (saved or not), -1 error (an exception for the
 * script among them). Python code run for it gets VARIABLE_TIME_LIMIT_S within
 * what is left of the snapshot's time limit; the limit is lifted on every
 * path out. */
static int
capture_variable(capture_ctx *c, PyObject *vname, PyObject *obj, PyObject *extra)
{
    CheckpointObject *ck = c->ck;
    /* bound to an object saved under an earlier name: load gives the same
     * object for both (`train = df`), pickled once */
    int alias = add_alias(c->pickled, c->vars_meta, vname, obj);
    if (alias > 0 && extra != NULL) {
        alias = merge_extra(PyList_GET_ITEM(c->vars_meta,
                                            PyList_GET_SIZE(c->vars_meta) - 1),
                            extra) < 0 ? -1 : 1;
    }
    if (alias != 0) {
        return alias < 0 ? -1 : 0;
    }
    if (c->entries != NULL) {
        return capture_value(c, vname, obj, extra);
    }
    double limit = 0;
    int go = variable_time_limit(c, vname, obj, &limit);
    if (go <= 0) {
        return go;
    }
    if (c->env->pickling != NULL) {
        /* if the child dies on it, its parent leaves it out from then on */
        PyObject *label = PyUnicode_FromFormat("variable '%U' (%s)", vname,
                                               Py_TYPE(obj)->tp_name);
        PyObject *key = label ? no_retry_key(vname, obj) : NULL;
        if (key != NULL) {
            c->env->pickling(c->env->arg, key, label);
        }
        Py_XDECREF(label);
        Py_XDECREF(key);
        PyErr_Clear();
    }
    time_limit(c, limit);
    int sal = chkpt_is_salient(ck, obj, c->measure_seen);
    if (sal <= 0) {
        time_limit(c, 0);
        if (sal < 0) {
            if (script_exception_pending(c->env)) {
                return -1;
            }
            PyErr_Clear();     /* could not measure: not salient */
        }
        return 0;
    }
    Py_ssize_t first = c->bufs.n;
    int over;
    PyObject *pk = chkpt_pickle_bounded(c->st, c->pickler_cls, c->kwargs, obj,
                                  ck->max_pickle_size - c->inband,
                                  ck->max_pickle_size, &over);
    PyObject *tname = type_name(Py_TYPE(obj));
    int r;
    if (tname == NULL) {
        time_limit(c, 0);
        r = -1;
    }
    else if (pk == NULL || !PyBytes_Check(pk)) {
        time_limit(c, 0);
        chkpt_bufvec_truncate(&c->bufs, first);
        r = record_unsaved(c, vname, obj, pk, over, tname);
    }
    else {
        r = record_pickled(c, vname, obj, pk, first, tname, NULL, NULL, 0);
    }
    Py_XDECREF(tname);
    Py_XDECREF(pk);
    return r;
}

/* Pickles every candidate (capture_variable) with one Pickler setup:
 * protocol 5, out-of-band buffers collected into c->bufs. */
static int
capture_pickle(capture_ctx *c)
{
    c->pickled = PyDict_New();
    c->measure_seen = PySet_New(NULL);
    c->vars_meta = PyList_New(0);
    c->skipped = PyList_New(0);
    c->pickles = PyList_New(0);
    if (!c->pickled || !c->measure_seen || !c->vars_meta || !c->skipped
        || !c->pickles) {
        return -1;
    }
    c->pickler_cls = PyObject_GetAttrString(c->st->pickle_module, "Pickler");
    c->kwargs = chkpt_pickler_kwargs(&c->bufs);
    if (c->pickler_cls == NULL || c->kwargs == NULL) {
        return -1;
    }
    c->reprobj = make_repr_obj();
    if (c->reprobj == NULL) {
        PyErr_Clear();          /* short_repr falls back */
    }
    chkpt_slotnames_install(&c->slotpatch);
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(c->candidates); k++) {
        PyObject *pair = PyList_GET_ITEM(c->candidates, k);
        if (capture_variable(c, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1),
                             PyTuple_GET_SIZE(pair) == 3
                             ? PyTuple_GET_ITEM(pair, 2) : NULL) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The sources of the script and its sibling modules, as shared streams
 * (stored once whatever the number of snapshots). */
static int
capture_add_sources(capture_ctx *c)
{
    CheckpointObject *ck = c->ck;
    PyObject *src_paths = PyDict_New();
    c->src_bytes = PyDict_New();
    c->src_meta = PyDict_New();
    if (!c->src_bytes || !src_paths || !c->src_meta
        || collect_sources(ck, c->src_bytes, src_paths) < 0) {
        Py_XDECREF(src_paths);
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *mname, *b;
    while (PyDict_Next(c->src_bytes, &pos, &mname, &b)) {
        PyObject *path = PyDict_GetItemWithError(src_paths, mname);
        PyObject *e = path ? Py_BuildValue("{s:O,s:n}", "path", path, "stream",
                                           (Py_ssize_t)c->streams.n) : NULL;
        if (e == NULL || PyDict_SetItem(c->src_meta, mname, e) < 0
            || streams_add(&c->streams, PyBytes_AS_STRING(b),
                           (size_t)PyBytes_GET_SIZE(b), CHKPT_STREAM_SHARED) < 0) {
            Py_XDECREF(e);
            Py_DECREF(src_paths);
            return -1;
        }
        Py_DECREF(e);
    }
    Py_DECREF(src_paths);

    /* run with -m: the main module's own name, for its relative imports */
    if (ck->main_module != NULL && ck->main_module != Py_None) {
        PyObject *entry = PyDict_GetItemString(c->src_meta, "__main__"); /* borrowed */
        PyObject *spec = entry ? PyObject_GetAttrString(ck->main_module, "__spec__")
                               : NULL;
        PyObject *sname = spec && spec != Py_None
                          ? PyObject_GetAttrString(spec, "name") : NULL;
        if (sname != NULL && PyUnicode_Check(sname)
            && PyUnicode_CompareWithASCIIString(sname, "__main__") != 0
            && PyDict_SetItemString(entry, "spec", sname) < 0) {
            Py_XDECREF(spec);
            Py_DECREF(sname);
            return -1;
        }
        Py_XDECREF(spec);
        Py_XDECREF(sname);
        PyErr_Clear();
    }
    return 0;
}

/* The meta document (docs/FORMAT.md, "Snapshot metadata") and its JSON. */
static int
capture_build_meta(capture_ctx *c)
{
    CheckpointObject *ck = c->ck;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    c->meta = PyDict_New();
    if (c->meta == NULL) {
        return -1;
    }
    PyObject *function = Py_None, *line = NULL;
    PyObject *fn_obj = NULL;
    if (c->frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(c->frame);
        fn_obj = PyObject_GetAttrString((PyObject *)code, "co_qualname");
        Py_DECREF(code);
        if (fn_obj == NULL) {
            return -1;
        }
        function = fn_obj;
        line = PyLong_FromLong(PyFrame_GetLineNumber(c->frame));
    }
    else {
        line = Py_NewRef(Py_None);
    }
    PyObject *meta = c->meta;
    PyObject *argv = PySys_GetObject("argv");       /* borrowed */
    int bad = set_item(meta, "format", PyLong_FromLong(CHKPT_META_FORMAT)) < 0
        || PyDict_SetItemString(meta, "name", c->name ? c->name : Py_None) < 0
        || set_item(meta, "kind", PyUnicode_FromString(chkpt_kind_name(c->kind))) < 0
        || set_item(meta, "time", PyFloat_FromDouble((double)ts.tv_sec
                                                     + ts.tv_nsec * 1e-9)) < 0
        || PyDict_SetItemString(meta, "script", ck->script_path) < 0
        || set_item(meta, "line", line) < 0
        || PyDict_SetItemString(meta, "function", function) < 0
        || set_item(meta, "python", python_version()) < 0
        || set_item(meta, "chkpt", PyUnicode_FromString(CHKPT_VERSION)) < 0
        || set_item(meta, "seq", PyLong_FromUnsignedLongLong(ck->seq + 1)) < 0
        || set_item(meta, "pid", PyLong_FromLong((long)c->env->script_pid)) < 0
        || PyDict_SetItemString(meta, "argv", argv ? argv : Py_None) < 0
        || set_item(meta, "size", PyLong_FromLongLong(c->total_size)) < 0
        || PyDict_SetItemString(meta, "variables", c->vars_meta) < 0
        || PyDict_SetItemString(meta, "skipped", c->skipped) < 0
        || PyDict_SetItemString(meta, "sources", c->src_meta) < 0;
    Py_XDECREF(fn_obj);
    if (bad || (c->extra_meta != NULL && PyDict_Update(meta, c->extra_meta) < 0)) {
        return -1;
    }
    chkpt_syspath_meta(c->ck, meta);
    PyObject *json = PyObject_CallMethod(c->st->json_module, "dumps", "O", meta);
    if (json == NULL) {
        return -1;
    }
    c->json_bytes = PyUnicode_AsUTF8String(json);
    Py_DECREF(json);
    return c->json_bytes == NULL ? -1 : 0;
}

/* The store I/O of the streams and meta, without the GIL (the buffer
 * exports are held): 0 on success, -1 with the reason in err. */
static int
write_streams(capture_ctx *c, chkpt_store *store, int level, char *err,
              size_t errlen)
{
    chkpt_snapwriter *w = chkpt_snap_begin(store, level, err, errlen);
    if (w == NULL) {
        return -1;
    }
    for (size_t k = 0; k < c->streams.n; k++) {
        long got = chkpt_snap_add_stream(w, c->streams.v[k].data,
                                         c->streams.v[k].len,
                                         c->streams.v[k].flags, err, errlen);
        if (got != (long)k) {
            if (got >= 0) {
                snprintf(err, errlen, "store numbered stream %zu as %ld", k, got);
            }
            chkpt_snap_abort(w);
            return -1;
        }
    }
    c->written = chkpt_snap_bytes_written(w);
    return chkpt_snap_commit(w, PyBytes_AS_STRING(c->json_bytes),
                             (size_t)PyBytes_GET_SIZE(c->json_bytes),
                             c->path, sizeof(c->path), err, errlen) == 0 ? 0 : -1;
}

/* Writes and commits the snapshot: 1 written (c->path), 0 not (warned once
 * per run, each time with -v), -1 error. */
static int
capture_write(capture_ctx *c)
{
    CheckpointObject *ck = c->ck;
    char err[CHKPT_ERRLEN] = "";
    int ok = 0;
    /* Another thread may set ck.output_dir (which closes ck->store) while
     * the GIL is released: the store is ours until the I/O is done, then
     * handed back unless the output dir changed meanwhile. */
    chkpt_store *store = ck->store;
    PyObject *dir_then = Py_NewRef(ck->output_dir);
    ck->store = NULL;
    int level = ck->compress_level;
    PyObject *dir_fs = store ? NULL : PyUnicode_EncodeFSDefault(dir_then);
    if (store == NULL && dir_fs == NULL) {
        Py_DECREF(dir_then);
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    /* the store was closed by another thread setting output_dir while the
     * objects were pickled (pickling runs Python code, which lets other
     * threads run): open the one of the new output dir */
    if (store == NULL) {
        chkpt_store_open(PyBytes_AS_STRING(dir_fs), 1, &store, err, sizeof(err));
    }
    ok = store != NULL && write_streams(c, store, level, err, sizeof(err)) == 0;
    Py_END_ALLOW_THREADS
    Py_XDECREF(dir_fs);
    if (ck->store == NULL && ck->output_dir == dir_then) {
        ck->store = store;
    }
    else {
        chkpt_store_close(store);
    }
    Py_DECREF(dir_then);
    if (ok) {
        return 1;
    }
    /* once per run (a full disk fails every snapshot); each with -v */
    int first = chkpt_once_str(ck->warned_once, ONCE_WRITE_FAILED);
    if (first < 0) {
        return -1;
    }
    if (first || ck->verbosity > 0) {
        chkpt_warn_py("snapshot not written to %U: %s%s", ck->output_dir,
                      err, first ? " (further failures are reported with -v)"
                                 : "");
    }
    return 0;
}

/* The snapshot is written: counts it, says so with -v, applies retention
 * after an automatic one. Its SnapshotInfo, or NULL on an error. */
static PyObject *
capture_publish(capture_ctx *c)
{
    CheckpointObject *ck = c->ck;
    chkpt_capture_taken(ck);
    PyObject *p = PyUnicode_DecodeFSDefault(c->path);
    if (p == NULL) {
        return NULL;
    }
    if (ck->verbosity > 0) {
        chkpt_warn_py("%s snapshot %zd variable(s), %lld bytes (%llu new) -> %U",
                      chkpt_kind_name(c->kind), PyList_GET_SIZE(c->vars_meta), c->total_size,
                      (unsigned long long)c->written, p);
    }
    PyObject *result = chkpt_snapinfo_new(ck->module, p, c->meta);
    Py_DECREF(p);
    if (result != NULL && !c->manual && ck->max_store_size > 0) {
        enforce_store_size(ck);
    }
    return result;
}

/* The snapshot, step by step (see capture_ctx): a SnapshotInfo, None when
 * nothing was written, NULL on an error. */
static PyObject *
capture_impl(CheckpointObject *ck, const chkpt_capture_env *env,
             PyFrameObject *given, chkpt_kind kind, PyObject *name, int manual,
             PyObject *entries, PyObject *extra_meta)
{
    capture_ctx c = {
        .ck = ck, .st = chkpt_get_state(ck->module), .env = env, .kind = kind,
        .name = name, .manual = manual, .t_start = chkpt_monotonic(),
        .entries = entries, .extra_meta = extra_meta,
    };
    c.frame = entries ? NULL : pick_frame(ck, given);
    if (c.frame == NULL && entries == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        if (!manual) {
            Py_RETURN_NONE;      /* the script's code is not running */
        }
    }
    PyObject *result = NULL;
    int open = capture_open_store(&c);      /* nothing to do without it */
    if (open <= 0) {
        result = open == 0 ? Py_NewRef(Py_None) : NULL;
        goto done;
    }
    if (capture_select(&c) < 0 || capture_pickle(&c) < 0) {
        goto done;
    }
    if (entries == NULL && PyList_GET_SIZE(c.vars_meta) == 0) {
        /* nothing salient: nothing written, and snapshot() gives None
           (given entries are written as given) */
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (capture_add_sources(&c) < 0 || capture_build_meta(&c) < 0) {
        goto done;
    }
    int written = capture_write(&c);
    if (written > 0) {
        result = capture_publish(&c);
    }
    else if (written == 0) {
        result = Py_NewRef(Py_None);
    }
done:
    capture_ctx_clear(&c);
    return result;
}

/* The fields of the Checkpoint capture.c alone writes (tp_clear aside):
 * store, store_failed, seq, last_snapshot, in_snapshot, deferred. */

void
chkpt_capture_state_init(CheckpointObject *ck)
{
    ck->store = NULL;
    ck->store_failed = 0;
    ck->seq = 0;
    ck->last_snapshot = chkpt_monotonic();
    ck->in_snapshot = 0;
    ck->deferred = NULL;
}

void
chkpt_capture_store_close(CheckpointObject *ck)
{
    if (ck->store != NULL) {
        chkpt_store_close(ck->store);
        ck->store = NULL;
    }
    ck->store_failed = 0;
}

void
chkpt_capture_store_unusable(CheckpointObject *ck)
{
    ck->store_failed = 1;
}

void
chkpt_capture_taken(CheckpointObject *ck)
{
    ck->seq++;
    ck->last_snapshot = chkpt_monotonic();
}

int
chkpt_capture_open_store(CheckpointObject *ck)
{
    capture_ctx c = {.ck = ck};
    return capture_open_store(&c);
}

int
chkpt_capture_report_unsaved(CheckpointObject *ck, PyObject *vname, PyObject *msg)
{
    return report_unsaved(ck, vname, msg);
}

/* Runs one capture under the snapshot's time limit, once at a time:
 * chkpt's own failures become one warning and None; an exception of the
 * script's (Ctrl-C) is passed on. */
static PyObject *
run_capture(CheckpointObject *ck, const chkpt_capture_env *env,
            PyFrameObject *frame, chkpt_kind kind, PyObject *name, int manual,
            PyObject *entries, PyObject *extra_meta)
{
    if (ck->in_snapshot || ck->store_failed) {
        Py_RETURN_NONE;        /* re-entered from a __reduce__ or repr */
    }
    ck->in_snapshot = 1;
    capture_ctx limit = {.env = env};
    time_limit(&limit, CHKPT_SNAPSHOT_TIME_LIMIT);
    PyObject *r = capture_impl(ck, env, frame, kind, name, manual, entries,
                               extra_meta);
    time_limit(&limit, 0);
    ck->in_snapshot = 0;
    if (r == NULL) {
        if (script_exception_pending(env)) {
            return NULL;
        }
        chkpt_warn_exc("snapshot failed");
        Py_RETURN_NONE;
    }
    return r;
}

PyObject *
chkpt_capture_frame(CheckpointObject *ck, const chkpt_capture_env *env,
                    PyFrameObject *frame, chkpt_kind kind, PyObject *name)
{
    return run_capture(ck, env, frame, kind, name, kind == CHKPT_KIND_MANUAL,
                       NULL, NULL);
}

PyObject *
chkpt_capture_values(CheckpointObject *ck, const chkpt_capture_env *env,
                     chkpt_kind kind, PyObject *entries, PyObject *extra_meta)
{
    return run_capture(ck, env, NULL, kind, NULL, 0, entries, extra_meta);
}
