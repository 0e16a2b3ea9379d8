/* crash.c: the snapshot of an uncaught exception (kind "crash").
 *
 * Called by the runner when the script's code returned with an exception
 * (not SystemExit), before python's traceback is printed. It walks the
 * exception's traceback and saves, for every frame running the script's own
 * code, all its locals, and all the globals of those frames' modules (no
 * salience filter: a post-mortem needs the small values too), each value
 * that cannot be pickled as a chkpt.Unloadable stand-in keeping its type
 * and repr (capture.c, chkpt_capture_values). The traceback itself goes
 * into the meta as plain data (docs/FORMAT.md, "Crash snapshots"), so that
 * `show` prints it and `debug` rebuilds the frames for pdb.
 *
 * Nothing here changes what python prints or the exit status: the pending
 * exception is put back untouched, and chkpt writes nothing to stderr
 * (unless -v).
 */
#include "chkpt.h"
#include "child.h"
#include "run.h"
#include <signal.h>
#include <string.h>

/* Frames whose locals a crash snapshot keeps, innermost first: a
 * RecursionError's thousand frames would cost time and, in `debug`, the
 * recursion limit; the traceback still lists them all. */
#define CRASH_MAX_FRAMES 200

/* the value of attr of o as a new reference, NULL with an exception */
static PyObject *
attr(PyObject *o, const char *name)
{
    return PyObject_GetAttrString(o, name);
}

/* One traceback entry as plain data. *glb receives the frame's globals and
 * *loc its locals mapping (new references) when it runs the script's code. */
static PyObject *
tb_entry(CheckpointObject *ck, PyObject *tb, PyObject **glb, PyObject **loc)
{
    *glb = *loc = NULL;
    PyObject *frame = attr(tb, "tb_frame");
    PyObject *lineno = frame ? attr(tb, "tb_lineno") : NULL;
    if (lineno == NULL) {
        Py_XDECREF(frame);
        return NULL;
    }
    PyCodeObject *code = PyFrame_GetCode((PyFrameObject *)frame);
    PyObject *qual = attr((PyObject *)code, "co_qualname");
    int mine = chkpt_is_script_code(ck, code);
    PyObject *modname = Py_None;
    PyObject *e = NULL;
    if (qual == NULL) {
        goto done;
    }
    if (mine) {
        *glb = PyFrame_GetGlobals((PyFrameObject *)frame);
        modname = PyDict_GetItemString(*glb, "__name__");      /* borrowed */
        if (modname == NULL || !PyUnicode_Check(modname)) {
            modname = Py_None;
        }
        *loc = PyFrame_GetLocals((PyFrameObject *)frame);
        if (*loc == NULL) {
            goto done;
        }
    }
    e = Py_BuildValue("{s:O,s:O,s:O,s:O,s:i,s:O,s:O}", "filename",
                      code->co_filename, "name", code->co_name, "qualname", qual,
                      "lineno", lineno, "firstlineno", code->co_firstlineno,
                      "script", mine ? Py_True : Py_False, "module", modname);
done:
    if (e == NULL) {
        Py_CLEAR(*glb);
        Py_CLEAR(*loc);
    }
    Py_XDECREF(qual);
    Py_DECREF(code);
    Py_DECREF(lineno);
    Py_DECREF(frame);
    return e;
}

/* Appends (name, value, extra) for every item of mapping m. */
static int
add_entries(PyObject *entries, PyObject *m, PyObject *extra)
{
    PyObject *items = PyDict_Check(m) ? PyDict_Items(m) : PyMapping_Items(m);
    if (items == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2
            || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0))) {
            continue;
        }
        PyObject *t = PyTuple_Pack(3, PyTuple_GET_ITEM(pair, 0),
                                   PyTuple_GET_ITEM(pair, 1), extra);
        if (t == NULL || PyList_Append(entries, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(items);
            return -1;
        }
        Py_DECREF(t);
    }
    Py_DECREF(items);
    return 0;
}

/* The traceback as python prints it (traceback.format_exception), or
 * None when that fails: show prints it. */
static PyObject *
formatted(PyObject *exc)
{
    PyObject *tbmod = PyImport_ImportModule("traceback");
    PyObject *lines = tbmod ? PyObject_CallMethod(tbmod, "format_exception", "O",
                                                  exc) : NULL;
    PyObject *empty = lines ? PyUnicode_FromString("") : NULL;
    PyObject *text = empty ? PyUnicode_Join(empty, lines) : NULL;
    Py_XDECREF(empty);
    Py_XDECREF(lines);
    Py_XDECREF(tbmod);
    if (text == NULL) {
        PyErr_Clear();
        return Py_NewRef(Py_None);
    }
    return text;
}

/* "Type: message" as the last line of python's traceback names it. */
static PyObject *
describe(PyObject *exc)
{
    PyObject *tp = (PyObject *)Py_TYPE(exc);
    PyObject *mod = attr(tp, "__module__");
    PyObject *qual = mod ? attr(tp, "__qualname__") : NULL;
    PyObject *msg = qual ? PyObject_Str(exc) : NULL;
    PyObject *r = NULL;
    if (msg != NULL && PyUnicode_Check(mod) && PyUnicode_Check(qual)) {
        int builtin = PyUnicode_CompareWithASCIIString(mod, "builtins") == 0
                      || PyUnicode_CompareWithASCIIString(mod, "__main__") == 0;
        r = builtin ? PyUnicode_FromFormat("%U", qual)
                    : PyUnicode_FromFormat("%U.%U", mod, qual);
        if (r != NULL && PyUnicode_GET_LENGTH(msg) > 0) {
            Py_SETREF(r, PyUnicode_FromFormat("%U: %U", r, msg));
        }
    }
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    Py_XDECREF(msg);
    if (r == NULL) {
        PyErr_Clear();
        r = PyUnicode_FromString(Py_TYPE(exc)->tp_name);
    }
    return r;
}

/* Builds the entries and the meta additions, and writes the snapshot. */
static int
crash_capture(CheckpointObject *ck, PyObject *exc, chkpt_kind kind)
{
    PyObject *frames = PyList_New(0);       /* traceback entries */
    PyObject *scopes = PyList_New(0);       /* (index, globals, locals) */
    PyObject *entries = PyList_New(0);
    PyObject *seen_globals = PyDict_New();  /* id(globals) -> module name */
    PyObject *extra = NULL, *tb = NULL;
    int rc = -1;
    if (frames == NULL || scopes == NULL || entries == NULL
        || seen_globals == NULL) {
        goto done;
    }
    tb = PyException_GetTraceback(exc);
    if (tb == NULL) {
        rc = 0;         /* no traceback (the script did not compile): no snapshot */
        goto done;
    }
    while (tb != NULL && tb != Py_None) {
        PyObject *glb, *loc;
        PyObject *e = tb_entry(ck, tb, &glb, &loc);
        if (e == NULL || PyList_Append(frames, e) < 0) {
            Py_XDECREF(e);
            Py_XDECREF(glb);
            Py_XDECREF(loc);
            goto done;
        }
        if (glb != NULL) {
            PyObject *s = Py_BuildValue("(nNNO)", PyList_GET_SIZE(frames) - 1,
                                        glb, loc, PyDict_GetItemString(e, "module"));
            if (s == NULL || PyList_Append(scopes, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(e);
                goto done;
            }
            Py_DECREF(s);
        }
        Py_DECREF(e);
        Py_SETREF(tb, attr(tb, "tb_next"));
    }
    if (tb == NULL) {
        goto done;
    }
    Py_ssize_t nscopes = PyList_GET_SIZE(scopes);
    if (nscopes == 0) {
        rc = 0;                 /* nothing of the script's ran: no snapshot */
        goto done;
    }
    Py_ssize_t first = nscopes > CRASH_MAX_FRAMES ? nscopes - CRASH_MAX_FRAMES : 0;
    /* globals first, then the frames outermost first: a reader that knows
     * nothing of "frame" and "globals" sees the failing frame's values win */
    for (int pass = 0; pass < 2; pass++) {
        for (Py_ssize_t k = first; k < nscopes; k++) {
            PyObject *s = PyList_GET_ITEM(scopes, k);
            PyObject *idx = PyTuple_GET_ITEM(s, 0);
            PyObject *glb = PyTuple_GET_ITEM(s, 1);
            PyObject *loc = PyTuple_GET_ITEM(s, 2);
            PyObject *mname = PyTuple_GET_ITEM(s, 3);
            PyObject *fe = PyList_GET_ITEM(frames, PyLong_AsSsize_t(idx));
            if (PyDict_SetItemString(fe, "saved", Py_True) < 0) {
                goto done;
            }
            if (pass == 0) {
                PyObject *key = PyLong_FromVoidPtr(glb);
                int has = key ? PyDict_Contains(seen_globals, key) : -1;
                PyObject *x = has == 0 ? Py_BuildValue("{s:O}", "globals", mname)
                                       : NULL;
                int bad = has < 0 || (has == 0 && (
                    x == NULL || PyDict_SetItem(seen_globals, key, mname) < 0
                    || add_entries(entries, glb, x) < 0));
                Py_XDECREF(x);
                Py_XDECREF(key);
                if (bad) {
                    goto done;
                }
            }
            else if (loc != glb) {       /* a module's frame: its globals */
                PyObject *x = Py_BuildValue("{s:O}", "frame", idx);
                int bad = x == NULL || add_entries(entries, loc, x) < 0;
                Py_XDECREF(x);
                if (bad) {
                    goto done;
                }
            }
        }
    }
    PyObject *last = PyList_GET_ITEM(scopes, nscopes - 1);
    PyObject *lfe = PyList_GET_ITEM(frames, PyLong_AsSsize_t(PyTuple_GET_ITEM(last, 0)));
    PyObject *what = describe(exc);
    extra = Py_BuildValue("{s:O,s:O,s:O,s:O,s:N,s:N}", "traceback", frames,
                          "frame", PyTuple_GET_ITEM(last, 0),
                          "line", PyDict_GetItemString(lfe, "lineno"),
                          "function", PyDict_GetItemString(lfe, "qualname"),
                          "exception", what ? what : Py_NewRef(Py_None),
                          "exception_text", formatted(exc));
    if (extra == NULL) {
        goto done;
    }
    if (kind == CHKPT_KIND_SIGNAL) {
        PyObject *nm = PyUnicode_FromString("SIGINT");
        if (nm == NULL || PyDict_SetItemString(extra, "name", nm) < 0) {
            Py_XDECREF(nm);
            goto done;
        }
        Py_DECREF(nm);
    }
    chkpt_snapshot_request rq = {.kind = kind, .entries = entries,
                                 .extra_meta = extra};
    PyObject *r = chkpt_snapshot_take(ck, &rq);
    if (r == NULL) {
        goto done;
    }
    Py_DECREF(r);
    rc = 0;
done:
    Py_XDECREF(tb);
    Py_XDECREF(frames);
    Py_XDECREF(scopes);
    Py_XDECREF(entries);
    Py_XDECREF(seen_globals);
    Py_XDECREF(extra);
    return rc;
}

void
chkpt_crash_snapshot(CheckpointObject *ck)
{
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_SystemExit)) {
        return;
    }
    /* Ctrl-C: the state of that moment, under the --signal-deadline that
     * python's death by SIGINT must not wait for past a grace period */
    int sigint = PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    PyObject *exc = chkpt_error_value(&saved);
    if (sigint) {
        chkpt_signals_deadline_start(ck, SIGINT);
    }
    if (exc != NULL && crash_capture(ck, exc, sigint ? CHKPT_KIND_SIGNAL
                                                     : CHKPT_KIND_CRASH) < 0) {
        chkpt_warn_exc("crash snapshot failed");
    }
    if (sigint) {
        chkpt_signals_deadline_stop(ck);
    }
    /* what the capture raised (a second Ctrl-C) gives way to the script's
     * own exception, which python prints as it would have */
    PyErr_Clear();
    chkpt_error_restore(&saved);
}
