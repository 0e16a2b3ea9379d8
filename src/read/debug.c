/* debug.c: `python -m chkpt debug SNAPSHOT`, pdb post-mortem on the frames
 * a crash snapshot saved, in a fresh process, anywhere.
 *
 * pdb and its `ll` work on real frames (inspect rejects stand-ins), so the
 * saved frames are made real again: for each saved frame a small function
 * is compiled whose code has the saved co_filename and co_name, whose `def`
 * is at the saved first line and whose body, at the saved line, calls the
 * next frame's function; its parameters are the saved locals, passed in.
 * A module-level frame is module code run in its globals. The globals of
 * each module are the module rebuilt from the snapshot's source (load.c:
 * its definitions) updated with the saved globals. The innermost call
 * builds a traceback over these frames (so pdb's stack is exactly the
 * script's saved frames) and runs pdb.post_mortem on it. The saved source
 * is in linecache with no mtime (rebuilding puts it there), which
 * linecache.checkcache keeps: `list`, `ll`, `where` show the code as it
 * ran, even after the script changed or was deleted.
 *
 * The helper each frame calls, __chkpt_call__, lives in a copy of the
 * builtins given to those globals, so it shows in neither the frames'
 * locals nor the module's globals.
 */
#include "chkpt.h"
#include "read.h"
#include <sys/stat.h>

#define HELPER "__chkpt_call__"

/* A one-line error for bad input; exit status 1. */
static int
debug_error(void)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    PyObject *msg = chkpt_describe_pending();
    PyErr_Clear();
    if (msg != NULL) {
        chkpt_warn_py("error: %U", msg);
        Py_DECREF(msg);
    }
    else {
        chkpt_warn("error: cannot debug this snapshot");
    }
    return 1;
}

/* steps: list of (code, globals) for a module frame or (function, args);
 * state = (steps, [position], number of frames) */
static PyObject *
debug_call(PyObject *state, PyObject *Py_UNUSED(ignored))
{
    PyObject *steps = PyTuple_GET_ITEM(state, 0);
    PyObject *posl = PyTuple_GET_ITEM(state, 1);
    Py_ssize_t pos = PyLong_AsSsize_t(PyList_GET_ITEM(posl, 0));
    if (pos < 0) {
        return NULL;
    }
    PyObject *next = PyLong_FromSsize_t(pos + 1);
    if (next == NULL || PyList_SetItem(posl, 0, next) < 0) {
        return NULL;
    }
    if (pos < PyList_GET_SIZE(steps)) {
        PyObject *step = PyList_GET_ITEM(steps, pos);
        PyObject *what = PyTuple_GET_ITEM(step, 0);
        PyObject *arg = PyTuple_GET_ITEM(step, 1);
        if (PyCode_Check(what)) {
            return PyEval_EvalCode(what, arg, arg);
        }
        return PyObject_Call(what, arg, NULL);
    }
    /* the innermost saved frame called: the traceback over the frames */
    PyObject *linenos = PyTuple_GET_ITEM(state, 2);
    Py_ssize_t n = PyList_GET_SIZE(linenos);
    PyObject *types = PyImport_ImportModule("types");
    PyObject *tbtype = types ? PyObject_GetAttrString(types, "TracebackType") : NULL;
    Py_XDECREF(types);
    if (tbtype == NULL) {
        return NULL;
    }
    PyObject *tb = Py_NewRef(Py_None);
    PyFrameObject *f = PyEval_GetFrame();      /* borrowed */
    Py_XINCREF(f);
    for (Py_ssize_t k = n - 1; k >= 0 && f != NULL; k--) {
        PyObject *lasti = PyObject_GetAttrString((PyObject *)f, "f_lasti");
        PyObject *t = lasti ? PyObject_CallFunction(
            tbtype, "OOOO", tb, f, lasti, PyList_GET_ITEM(linenos, k)) : NULL;
        Py_XDECREF(lasti);
        Py_SETREF(tb, t);
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = back;
        if (tb == NULL) {
            Py_XDECREF(f);
            Py_DECREF(tbtype);
            return NULL;
        }
    }
    Py_XDECREF(f);
    Py_DECREF(tbtype);
    PyObject *pdb = PyImport_ImportModule("pdb");
    PyObject *r = pdb ? PyObject_CallMethod(pdb, "post_mortem", "O", tb) : NULL;
    Py_XDECREF(pdb);
    Py_DECREF(tb);
    return r;
}

static PyMethodDef debug_call_def = {
    HELPER, debug_call, METH_NOARGS,
    "chkpt debug: runs the next saved frame (the innermost opens pdb)."
};

/* Is name usable as a parameter (an identifier, not a keyword)? */
static int
usable_name(PyObject *kw, PyObject *name)
{
    if (!PyUnicode_Check(name) || !PyUnicode_IsIdentifier(name)) {
        return 0;
    }
    int k = PySequence_Contains(kw, name);
    if (k < 0) {
        PyErr_Clear();
        return 0;
    }
    return !k;
}

/* "\n" repeated n times (n >= 0) */
static PyObject *
newlines(long n)
{
    PyObject *nl = PyUnicode_FromString("\n");
    PyObject *r = nl ? PySequence_Repeat(nl, n > 0 ? n : 0) : NULL;
    Py_XDECREF(nl);
    return r;
}

/* The first code object among code's constants. */
static PyObject *
inner_code(PyObject *code)
{
    PyObject *consts = PyObject_GetAttrString(code, "co_consts");
    if (consts == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        if (PyCode_Check(PyTuple_GET_ITEM(consts, i))) {
            PyObject *c = Py_NewRef(PyTuple_GET_ITEM(consts, i));
            Py_DECREF(consts);
            return c;
        }
    }
    Py_DECREF(consts);
    PyErr_SetString(PyExc_RuntimeError, "chkpt debug: no function code compiled");
    return NULL;
}

/* A step for a function frame: a function whose code is the saved frame's
 * (filename, name, qualname, def at firstlineno, call of the next frame at
 * lineno), with locals as its parameters. */
static PyObject *
function_step(PyObject *fe, PyObject *locals, PyObject *globals, PyObject *kw)
{
    PyObject *filename = PyDict_GetItemString(fe, "filename");
    PyObject *name = PyDict_GetItemString(fe, "name");
    PyObject *qual = PyDict_GetItemString(fe, "qualname");
    long first = PyLong_AsLong(PyDict_GetItemString(fe, "firstlineno"));
    long line = PyLong_AsLong(PyDict_GetItemString(fe, "lineno"));
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (first < 1) {
        first = 1;
    }
    if (line < first) {
        line = first;
    }
    PyObject *params = PyList_New(0), *args = PyList_New(0);
    PyObject *src = NULL, *code = NULL, *fcode = NULL, *func = NULL, *step = NULL;
    PyObject *pre = NULL, *mid = NULL, *plist = NULL, *comma = NULL, *argt = NULL;
    if (params == NULL || args == NULL) {
        goto done;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(locals, &pos, &k, &v)) {
        if (usable_name(kw, k)
            && (PyList_Append(params, k) < 0 || PyList_Append(args, v) < 0)) {
            goto done;
        }
    }
    comma = PyUnicode_FromString(", ");
    plist = comma ? PyUnicode_Join(comma, params) : NULL;
    pre = newlines(first - 1);
    mid = line > first ? newlines(line - first) : PyUnicode_FromString("");
    src = plist && pre && mid ? PyUnicode_FromFormat(
        "%Udef __chkpt_frame__(%U):%U%s" HELPER "()\n", pre, plist, mid,
        line > first ? "    " : " ") : NULL;
    code = src ? Py_CompileStringObject(PyUnicode_AsUTF8(src), filename,
                                        Py_file_input, NULL, -1) : NULL;
    PyObject *inner = code ? inner_code(code) : NULL;
    if (inner != NULL) {
        PyObject *empty = PyTuple_New(0);
        PyObject *rep = empty ? PyObject_GetAttrString(inner, "replace") : NULL;
        PyObject *kwargs = rep ? Py_BuildValue("{s:O,s:O}", "co_name", name,
                                               "co_qualname", qual) : NULL;
        fcode = kwargs ? PyObject_Call(rep, empty, kwargs) : NULL;
        Py_XDECREF(kwargs);
        Py_XDECREF(rep);
        Py_XDECREF(empty);
        Py_DECREF(inner);
    }
    func = fcode ? PyFunction_New(fcode, globals) : NULL;
    argt = func ? PyList_AsTuple(args) : NULL;
    step = argt ? PyTuple_Pack(2, func, argt) : NULL;
done:
    Py_XDECREF(params);
    Py_XDECREF(args);
    Py_XDECREF(src);
    Py_XDECREF(code);
    Py_XDECREF(fcode);
    Py_XDECREF(func);
    Py_XDECREF(pre);
    Py_XDECREF(mid);
    Py_XDECREF(plist);
    Py_XDECREF(comma);
    Py_XDECREF(argt);
    return step;
}

/* A step for a module-level frame: module code, run in globals, calling
 * the next frame at the saved line. */
static PyObject *
module_step(PyObject *fe, PyObject *globals)
{
    PyObject *filename = PyDict_GetItemString(fe, "filename");
    long line = PyLong_AsLong(PyDict_GetItemString(fe, "lineno"));
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *pre = newlines(line - 1);
    PyObject *src = pre ? PyUnicode_FromFormat("%U" HELPER "()\n", pre) : NULL;
    PyObject *code = src ? Py_CompileStringObject(PyUnicode_AsUTF8(src), filename,
                                                  Py_file_input, NULL, -1) : NULL;
    PyObject *step = code ? PyTuple_Pack(2, code, globals) : NULL;
    Py_XDECREF(pre);
    Py_XDECREF(src);
    Py_XDECREF(code);
    return step;
}

/* The globals of module mname for the frames: the rebuilt module's
 * namespace with the saved globals over it, and builtins that hold the
 * helper. Cached in gmap. */
static PyObject *
module_globals(PyObject *module, PyObject *path, PyObject *mods, PyObject *gmap,
               PyObject *mname, PyObject *helper)
{
    PyObject *g = PyDict_GetItemWithError(gmap, mname);
    if (g != NULL || PyErr_Occurred()) {
        return Py_XNewRef(g);
    }
    PyObject *m = PyDict_GetItemWithError(mods, mname);       /* borrowed */
    if (m == NULL && PyErr_Occurred()) {
        return NULL;
    }
    g = m ? PyModule_GetDict(m) : PyDict_New();
    if (g == NULL) {
        return NULL;
    }
    if (m != NULL) {
        Py_INCREF(g);
    }
    else if (PyDict_SetItemString(g, "__name__", mname) < 0) {
        Py_DECREF(g);
        return NULL;
    }
    PyObject *scope = Py_BuildValue("(sO)", "globals", mname);
    PyObject *saved = scope ? chkpt_load_scope(module, path, Py_None, 0, scope) : NULL;
    Py_XDECREF(scope);
    PyObject *b = saved ? PyDict_GetItemString(g, "__builtins__") : NULL;
    if (saved != NULL && b == NULL) {
        b = PyEval_GetBuiltins();
    }
    PyObject *bd = b == NULL ? NULL
                   : PyModule_Check(b) ? PyDict_Copy(PyModule_GetDict(b))
                   : PyDict_Check(b) ? PyDict_Copy(b) : NULL;
    if (bd == NULL || PyDict_Update(g, saved) < 0
        || PyDict_SetItemString(bd, HELPER, helper) < 0
        || PyDict_SetItemString(g, "__builtins__", bd) < 0
        || PyDict_SetItem(gmap, mname, g) < 0) {
        if (saved != NULL && bd == NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "chkpt debug: no builtins");
        }
        Py_XDECREF(bd);
        Py_XDECREF(saved);
        Py_DECREF(g);
        return NULL;
    }
    Py_DECREF(bd);
    Py_DECREF(saved);
    return g;
}

/* The saved source of each rebuilt module also under its original path
 * (rebuilding keys it "<chkpt snapshot of PATH>"), where pdb, inspect and
 * tracebacks look for the frames' co_filename; no mtime, so that
 * linecache.checkcache keeps it whatever the file on disk became. */
static int
source_under_paths(PyObject *mods)
{
    PyObject *lc = PyImport_ImportModule("linecache");
    PyObject *cache = lc ? PyObject_GetAttrString(lc, "cache") : NULL;
    Py_XDECREF(lc);
    if (cache == NULL) {
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *m;
    while (PyDict_Next(mods, &pos, &name, &m)) {
        PyObject *file = PyModule_Check(m)
                         ? PyDict_GetItemString(PyModule_GetDict(m), "__file__") : NULL;
        if (file == NULL || !PyUnicode_Check(file)) {
            continue;
        }
        PyObject *key = PyUnicode_FromFormat("<chkpt snapshot of %U>", file);
        PyObject *e = key ? PyObject_GetItem(cache, key) : NULL;
        Py_XDECREF(key);
        if (e == NULL || !PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 4) {
            Py_XDECREF(e);
            PyErr_Clear();
            continue;
        }
        PyObject *entry = Py_BuildValue("(OOOO)", PyTuple_GET_ITEM(e, 0), Py_None,
                                        PyTuple_GET_ITEM(e, 2), file);
        Py_DECREF(e);
        if (entry == NULL || PyObject_SetItem(cache, file, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(cache);
            return -1;
        }
        Py_DECREF(entry);
    }
    Py_DECREF(cache);
    return 0;
}

/* Builds the steps and runs them: the last one opens pdb. */
static int
run_frames(PyObject *module, PyObject *path, PyObject *meta, PyObject *tbl)
{
    int rc = -1;
    PyObject *mods = NULL, *gmap = PyDict_New(), *steps = PyList_New(0);
    PyObject *linenos = PyList_New(0), *posl = NULL, *state = NULL;
    PyObject *helper = NULL, *kw = NULL, *kwmod = NULL;
    if (gmap == NULL || steps == NULL || linenos == NULL) {
        goto done;
    }
    posl = Py_BuildValue("[i]", 0);
    state = posl ? PyTuple_Pack(3, steps, posl, linenos) : NULL;
    helper = state ? PyCFunction_New(&debug_call_def, state) : NULL;
    kwmod = helper ? PyImport_ImportModule("keyword") : NULL;
    kw = kwmod ? PyObject_GetAttrString(kwmod, "kwlist") : NULL;
    mods = kw ? chkpt_rebuilt_modules(module, path) : NULL;
    if (mods == NULL || source_under_paths(mods) < 0) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(tbl); i++) {
        PyObject *fe = PyList_GET_ITEM(tbl, i);
        if (!PyDict_Check(fe) || PyDict_GetItemString(fe, "saved") != Py_True) {
            continue;
        }
        PyObject *mname = PyDict_GetItemString(fe, "module");
        PyObject *name = PyDict_GetItemString(fe, "name");
        PyObject *lineno = PyDict_GetItemString(fe, "lineno");
        if (mname == NULL || name == NULL || !PyUnicode_Check(name)
            || lineno == NULL || !PyLong_Check(lineno)) {
            PyErr_Format(PyExc_ValueError, "%U: malformed traceback entry %zd",
                         path, i);
            goto done;
        }
        PyObject *g = module_globals(module, path, mods, gmap, mname, helper);
        if (g == NULL) {
            goto done;
        }
        PyObject *step;
        if (PyUnicode_CompareWithASCIIString(name, "<module>") == 0) {
            step = module_step(fe, g);
        }
        else {
            PyObject *scope = Py_BuildValue("(sn)", "locals", i);
            PyObject *locals = scope ? chkpt_load_scope(module, path, Py_None, 0,
                                                        scope) : NULL;
            Py_XDECREF(scope);
            step = locals ? function_step(fe, locals, g, kw) : NULL;
            Py_XDECREF(locals);
        }
        Py_DECREF(g);
        if (step == NULL || PyList_Append(steps, step) < 0
            || PyList_Append(linenos, lineno) < 0) {
            Py_XDECREF(step);
            goto done;
        }
        Py_DECREF(step);
    }
    if (PyList_GET_SIZE(steps) == 0) {
        PyErr_Format(PyExc_ValueError, "%U saved no frame of the script", path);
        goto done;
    }
    PyObject *r = debug_call(state, NULL);
    if (r == NULL) {
        goto done;
    }
    Py_DECREF(r);
    rc = 0;
done:
    Py_XDECREF(mods);
    Py_XDECREF(gmap);
    Py_XDECREF(steps);
    Py_XDECREF(linenos);
    Py_XDECREF(posl);
    Py_XDECREF(state);
    Py_XDECREF(helper);
    Py_XDECREF(kw);
    Py_XDECREF(kwmod);
    return rc;
}

/* For a store directory: its newest snapshot with a saved traceback (a
 * crash's, a Ctrl-C's), which is not always its newest snapshot (one still
 * being written when the script crashed is published after the crash's);
 * the store itself when it has none, so that the error names the newest.
 * Anything else as given. New reference, or NULL with an exception. */
static PyObject *
debug_target(PyObject *module, PyObject *target)
{
    PyObject *fs = PyUnicode_EncodeFSDefault(target);
    if (fs == NULL) {
        return NULL;
    }
    struct stat sb;
    int is_dir = stat(PyBytes_AS_STRING(fs), &sb) == 0 && S_ISDIR(sb.st_mode);
    Py_DECREF(fs);
    PyObject *list = is_dir ? chkpt_snapshots(module, target) : NULL;
    if (list == NULL) {
        PyErr_Clear();          /* as given: the resolver says what is wrong */
        return Py_NewRef(target);
    }
    PyObject *found = NULL;
    for (Py_ssize_t i = PyList_GET_SIZE(list); i-- > 0 && found == NULL;) {
        PyObject *meta = PyObject_GetAttrString(PyList_GET_ITEM(list, i), "meta");
        PyObject *tb = meta && PyDict_Check(meta)
                       ? PyDict_GetItemString(meta, "traceback") : NULL;
        if (tb != NULL && PyList_Check(tb)) {
            found = PyObject_GetAttrString(PyList_GET_ITEM(list, i), "path");
        }
        Py_XDECREF(meta);
        PyErr_Clear();
    }
    Py_DECREF(list);
    return found != NULL ? found : Py_NewRef(target);
}

int
chkpt_verb_debug(PyObject *module, chkpt_cli *cli)
{
    PyObject *path = NULL;
    PyObject *target = debug_target(module, cli->target);
    PyObject *meta = target ? chkpt_load_meta(module, target, &path) : NULL;
    Py_XDECREF(target);
    if (meta == NULL) {
        return debug_error();
    }
    PyObject *tbl = PyDict_GetItemString(meta, "traceback");     /* borrowed */
    int rc;
    if (tbl == NULL || !PyList_Check(tbl)) {
        PyObject *kind = PyDict_GetItemString(meta, "kind");
        PyErr_Format(PyExc_ValueError, "%U is a%s %R snapshot: debug needs a crash "
                     "snapshot (one with a saved traceback)", path,
                     kind && PyUnicode_Check(kind)
                     && PyUnicode_CompareWithASCIIString(
                         kind, chkpt_kind_name(CHKPT_KIND_AUTO)) == 0 ? "n" : "",
                     kind ? kind : Py_None);
        rc = debug_error();
    }
    else if (run_frames(module, path, meta, tbl) < 0) {
        rc = debug_error();
    }
    else {
        rc = 0;
    }
    Py_DECREF(meta);
    Py_XDECREF(path);
    return rc;
}
