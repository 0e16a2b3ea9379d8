/* runner.c: runs the script exactly as `python script.py args` or
 * `python -m pkg.mod args` would.
 *
 * What python does (Modules/main.c pymain_run_python, Python/pythonrun.c
 * _PyRun_SimpleFileObject, Lib/runpy.py) and what this file copies:
 *
 *  - `__main__` is a fresh module as pylifecycle's add_main_module makes it
 *    (__name__, __doc__, __package__, __loader__, __spec__, then
 *    __annotations__ = {}, __builtins__, __loader__ = BuiltinImporter),
 *    replacing chkpt's own `__main__` in sys.modules.
 *  - a script file: sys.argv = [script as given, *args]; sys.path[0] =
 *    the directory of the script with symlinks resolved (unless -P);
 *    __file__ = the script's path made absolute (not normalised, as
 *    python's _Py_abspath), __cached__ = None, __loader__ =
 *    SourceFileLoader('__main__', __file__) (SourcelessFileLoader for a
 *    .pyc); the source is compiled without inheriting any compiler flag and
 *    evaluated with PyEval_EvalCode; afterwards __file__ and __cached__ are
 *    removed again (not on SystemExit, where python exits from inside).
 *  - a directory or zip file: it becomes sys.path[0] and runpy runs its
 *    `__main__` module (runpy._run_module_as_main('__main__', False)).
 *  - -m: sys.argv = ['-m', *args], sys.path[0] = cwd (unless -P), then
 *    runpy._run_module_as_main(name, True), so runpy's frames show in
 *    tracebacks exactly as under python -m.
 *  - the code runs as if called from python's main(): no frame below it
 *    (chkpt's own `python -m chkpt` frames are hidden: f_back, tracebacks,
 *    traceback.print_stack, pdb's `where` and warnings' stacklevel see only
 *    the script) and the full recursion limit.
 *  - outcome: SystemExit propagates unchanged (python handles it natively);
 *    an uncaught exception is printed by PyErr_Print (sys.excepthook,
 *    sys.last_*) and gives exit status 1; an uncaught KeyboardInterrupt is
 *    printed too, then re-raised with a one-shot silent sys.excepthook, so
 *    that python's main kills the process by SIGINT after finalization.
 */
#include "chkpt.h"
#include "child.h"
#include "capture.h"
#include "run.h"
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <marshal.h>

/* ---- small helpers ---- */

static PyObject *
import_attr(const char *module, const char *attr)
{
    PyObject *m = PyImport_ImportModule(module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_GetAttrString(m, attr);
    Py_DECREF(m);
    return r;
}

/* A str as bytes in the file system encoding, for messages: paths that
 * are not valid UTF-8 print as they were given. Never NULL: "?" when even
 * that fails (the error is cleared). *holder keeps the bytes alive. */
static const char *
printable(PyObject *s, PyObject **holder)
{
    *holder = s ? PyUnicode_EncodeFSDefault(s) : NULL;
    if (*holder == NULL) {
        PyErr_Clear();
        return "?";
    }
    return PyBytes_AS_STRING(*holder);
}

/* sys.flags.safe_path (-P, -I, PYTHONSAFEPATH): python adds no sys.path[0]
 * for the script then. */
static int
safe_path_flag(void)
{
    PyObject *flags = PySys_GetObject("flags");         /* borrowed */
    if (flags == NULL) {
        return 0;
    }
    PyObject *v = PyObject_GetAttrString(flags, "safe_path");
    if (v == NULL) {
        PyErr_Clear();
        return 0;
    }
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    if (r < 0) {
        PyErr_Clear();
        return 0;
    }
    return r;
}

/* sys.flags.inspect (-i, PYTHONINSPECT at start-up): python prints a
 * SystemExit instead of exiting, then gives its prompt. */
static int
inspect_flag(void)
{
    chkpt_saved_error saved;        /* may be called with one pending */
    chkpt_error_save(&saved);
    PyObject *flags = PySys_GetObject("flags");         /* borrowed */
    PyObject *v = flags ? PyObject_GetAttrString(flags, "inspect") : NULL;
    int r = v ? PyObject_IsTrue(v) : 0;
    Py_XDECREF(v);
    if (r < 0) {
        r = 0;
    }
    PyErr_Clear();
    chkpt_error_restore(&saved);
    return r;
}

static PyObject *
getcwd_str(void)
{
    PyObject *os = PyImport_ImportModule("os");
    if (os == NULL) {
        return NULL;
    }
    PyObject *cwd = PyObject_CallMethod(os, "getcwd", NULL);
    Py_DECREF(os);
    return cwd;
}

/* The script's path made absolute as python's _Py_abspath does it: the
 * current directory, a separator and the path, nothing normalised. */
static PyObject *
python_abspath(PyObject *path)
{
    Py_ssize_t n = PyUnicode_GetLength(path);
    if (n < 0) {
        return NULL;
    }
    if (n > 0 && PyUnicode_READ_CHAR(path, 0) == '/') {
        return Py_NewRef(path);
    }
    PyObject *cwd = getcwd_str();
    if (cwd == NULL) {
        return NULL;
    }
    PyObject *r;
    if (n == 0 || PyUnicode_CompareWithASCIIString(path, ".") == 0) {
        r = Py_NewRef(cwd);
    }
    else {
        r = PyUnicode_FromFormat("%U/%U", cwd, path);
    }
    Py_DECREF(cwd);
    return r;
}

/* sys.path[0] for a script, as _PyPathConfig_ComputeSysPath0 computes it:
 * realpath() of the script, up to its last separator (a lone "/" kept).
 * NULL without exception when realpath fails (python then uses the path as
 * given, which we do too). */
static PyObject *
script_path0(PyObject *target)
{
    PyObject *b = PyUnicode_EncodeFSDefault(target);
    if (b == NULL) {
        return NULL;
    }
    char *real = realpath(PyBytes_AS_STRING(b), NULL);
    PyObject *src;
    if (real != NULL) {
        src = PyUnicode_DecodeFSDefault(real);
        free(real);
    }
    else {
        src = Py_NewRef(target);
    }
    Py_DECREF(b);
    if (src == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GetLength(src);
    Py_ssize_t sep = n > 0 ? PyUnicode_FindChar(src, '/', 0, n, -1) : -1;
    if (sep == -2) {
        Py_DECREF(src);
        return NULL;
    }
    Py_ssize_t len = 0;
    if (sep >= 0) {
        len = sep + 1;
        if (len > 1) {
            len--;              /* drop the trailing separator */
        }
    }
    PyObject *r = PyUnicode_Substring(src, 0, len);
    Py_DECREF(src);
    return r;
}

static PyObject *
dirname_of(PyObject *path)
{
    PyObject *os_path = PyImport_ImportModule("os.path");
    if (os_path == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(os_path, "dirname", "O", path);
    Py_DECREF(os_path);
    return r;
}

/* A fresh `__main__` module as python's add_main_module makes it, put in
 * sys.modules. Returns a new reference. */
static PyObject *
new_main_module(void)
{
    PyObject *m = PyModule_New("__main__");
    if (m == NULL) {
        return NULL;
    }
    PyObject *d = PyModule_GetDict(m);                  /* borrowed */
    PyObject *ann = PyDict_New();
    if (ann == NULL || PyDict_SetItemString(d, "__annotations__", ann) < 0) {
        Py_XDECREF(ann);
        goto error;
    }
    Py_DECREF(ann);
    PyObject *bi = PyImport_ImportModule("builtins");
    if (bi == NULL || PyDict_SetItemString(d, "__builtins__", bi) < 0) {
        Py_XDECREF(bi);
        goto error;
    }
    Py_DECREF(bi);
    PyObject *loader = import_attr("_frozen_importlib", "BuiltinImporter");
    if (loader == NULL || PyDict_SetItemString(d, "__loader__", loader) < 0) {
        Py_XDECREF(loader);
        goto error;
    }
    Py_DECREF(loader);
    PyObject *modules = PySys_GetObject("modules");     /* borrowed */
    if (modules == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lost sys.modules");
        goto error;
    }
    if (PyMapping_SetItemString(modules, "__main__", m) < 0) {
        goto error;
    }
    return m;
error:
    Py_DECREF(m);
    return NULL;
}


/* sys.argv[:] = [argv0, *args], in place (the list python made). */
static int
set_argv(PyObject *argv0, PyObject *args)
{
    PyObject *list = PyList_New(1);
    if (list == NULL) {
        return -1;
    }
    PyList_SET_ITEM(list, 0, Py_NewRef(argv0));
    PyObject *full = PySequence_Concat(list, args);
    Py_DECREF(list);
    if (full == NULL) {
        return -1;
    }
    PyObject *argv = PySys_GetObject("argv");           /* borrowed */
    int r;
    if (argv != NULL && PyList_Check(argv)) {
        r = PyList_SetSlice(argv, 0, PyList_GET_SIZE(argv), full);
    }
    else {
        r = PySys_SetObject("argv", full);
    }
    Py_DECREF(full);
    return r;
}

/* sys.path[0] = path0. `python -m chkpt` put the current directory there
 * (unless safe_path, when it put nothing): replace it, or insert when
 * insert is set (an import path, which python inserts even with -P). */
static int
set_path0(PyObject *path0, int insert)
{
    PyObject *path = PySys_GetObject("path");           /* borrowed */
    if (path == NULL || !PyList_Check(path)) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path must be a list");
        return -1;
    }
    if (insert || PyList_GET_SIZE(path) == 0) {
        return PyList_Insert(path, 0, path0);
    }
    return PyList_SetItem(path, 0, Py_NewRef(path0));
}

/* python's flush_io(): flush sys.stderr and sys.stdout, ignoring errors,
 * keeping any pending exception. */
static void
flush_io(void)
{
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    const char *names[] = {"stderr", "stdout"};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]);        /* borrowed */
        if (f != NULL && f != Py_None) {
            PyObject *r = PyObject_CallMethod(f, "flush", NULL);
            if (r == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(r);
        }
    }
    chkpt_error_restore(&saved);
}

/* ---- running as if called from python's main() ----
 *
 * `python -m chkpt` leaves three Python frames (runpy's two and chkpt's
 * __main__) below the place where the script starts, and they would use
 * part of the recursion limit. While the script runs, the thread's
 * current frame is set to none, so the script's first frame has no
 * previous frame, and the recursion counters start from zero as they do
 * under plain python; both are put back afterwards. The fields are those
 * of the public (non-limited) PyThreadState. */
typedef struct {
    struct _PyInterpreterFrame *frame;
    int py_depth;
    int c_depth;
} bottom_state;

#if PY_VERSION_HEX >= 0x030D0000
#define CHKPT_C_RECURSION_LIMIT Py_C_RECURSION_LIMIT
#elif PY_VERSION_HEX >= 0x030C0000
#define CHKPT_C_RECURSION_LIMIT C_RECURSION_LIMIT
#endif

static void
enter_bottom(bottom_state *b)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    b->frame = ts->current_frame;
    ts->current_frame = NULL;
#else
    b->frame = ts->cframe->current_frame;
    ts->cframe->current_frame = NULL;
#endif
#if PY_VERSION_HEX >= 0x030C0000
    b->py_depth = ts->py_recursion_limit - ts->py_recursion_remaining;
    ts->py_recursion_remaining = ts->py_recursion_limit;
    b->c_depth = CHKPT_C_RECURSION_LIMIT - ts->c_recursion_remaining;
    ts->c_recursion_remaining = CHKPT_C_RECURSION_LIMIT;
#else
    b->py_depth = ts->recursion_limit - ts->recursion_remaining;
    ts->recursion_remaining = ts->recursion_limit;
    b->c_depth = 0;
#endif
}

static void
leave_bottom(bottom_state *b)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    ts->current_frame = b->frame;
#else
    ts->cframe->current_frame = b->frame;
#endif
    /* relative, so that a sys.setrecursionlimit() of the script stays */
#if PY_VERSION_HEX >= 0x030C0000
    ts->py_recursion_remaining -= b->py_depth;
    ts->c_recursion_remaining -= b->c_depth;
#else
    ts->recursion_remaining -= b->py_depth;
#endif
}

static void
hooks_install(CheckpointObject *ck)
{
    chkpt_syspath_note_start(ck);      /* the script starts here */
    if (chkpt_hooks_install(ck) < 0) {
        chkpt_warn_exc("automatic snapshots are off");
    }
    chkpt_signals_install(ck);
}

/* Called as the script's code returned: an uncaught exception gets its
 * crash snapshot here, before anything is printed. */
static void
hooks_uninstall(CheckpointObject *ck)
{
    chkpt_crash_snapshot(ck);
    chkpt_signals_uninstall(ck);
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    chkpt_writer_finish(ck);    /* the last snapshot durable */
    chkpt_hooks_uninstall(ck);
    if (PyErr_Occurred()) {
        PyErr_Clear();
    }
    chkpt_error_restore(&saved);
}

/* ---- the outcome ---- */

/* The one-shot sys.excepthook left behind when a KeyboardInterrupt is
 * re-raised out of chkpt (it was printed already): when python's main
 * prints it again, print nothing, put back the script's hook, its
 * traceback and sys.last_traceback. state = (hook, exc, tb). */
static PyObject *
oneshot_excepthook(PyObject *state, PyObject *args)
{
    PyObject *orig = PyTuple_GET_ITEM(state, 0);
    PyObject *exc = PyTuple_GET_ITEM(state, 1);
    PyObject *tb = PyTuple_GET_ITEM(state, 2);
    if (PySys_SetObject("excepthook", orig == Py_None ? NULL : orig) < 0) {
        PyErr_Clear();
    }
    if (PyTuple_GET_SIZE(args) != 3 || PyTuple_GET_ITEM(args, 1) != exc) {
        /* another exception than ours: the script's hook prints it */
        if (orig == Py_None) {
            Py_RETURN_NONE;
        }
        return PyObject_Call(orig, args, NULL);
    }
    if (PyException_SetTraceback(exc, tb) < 0
        || PySys_SetObject("last_traceback", tb) < 0) {
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static PyMethodDef oneshot_def = {
    "excepthook", oneshot_excepthook, METH_VARARGS,
    "chkpt: the KeyboardInterrupt was printed already (one-shot)."
};

/* Re-raises exc (a KeyboardInterrupt already printed); returns NULL. */
static PyObject *
reraise_printed(PyObject *exc)
{
    PyObject *orig = PySys_GetObject("excepthook");     /* borrowed */
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *state = PyTuple_Pack(3, orig ? orig : Py_None, exc,
                                   tb ? tb : Py_None);
    PyObject *hook = state ? PyCFunction_New(&oneshot_def, state) : NULL;
    Py_XDECREF(state);
    if (hook == NULL || PySys_SetObject("excepthook", hook) < 0) {
        Py_XDECREF(hook);
        Py_XDECREF(tb);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(hook);
#if PY_VERSION_HEX >= 0x030C0000
    Py_XDECREF(tb);
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);
#endif
    return NULL;
}

/* An exception other than SystemExit escaped the script: print it as
 * python's main does (PyErr_Print: sys.last_*, sys.excepthook, "Error in
 * sys.excepthook" when the hook fails). For a KeyboardInterrupt (exactly
 * that type, as python checks) *ki receives it, to be re-raised. */
static void
print_uncaught(PyObject **ki)
{
    *ki = NULL;
    if (PyErr_Occurred() == PyExc_KeyboardInterrupt) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
        *ki = Py_NewRef(exc);
        PyErr_SetRaisedException(exc);
#else
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        *ki = Py_XNewRef(value);
        PyErr_Restore(type, value, tb);
#endif
    }
    PyErr_Print();
}

/* ---- compiling and executing the script ---- */

static int
is_pyc(PyObject *filename, PyObject *source)
{
    Py_ssize_t n = PyUnicode_GetLength(filename);
    if (n >= 4) {
        PyObject *ext = PyUnicode_Substring(filename, n - 4, n);
        if (ext == NULL) {
            PyErr_Clear();
            return 0;
        }
        int r = PyUnicode_CompareWithASCIIString(ext, ".pyc") == 0;
        Py_DECREF(ext);
        if (r) {
            return 1;
        }
    }
    /* python also looks at the first two bytes (maybe_pyc_file) */
    if (PyBytes_GET_SIZE(source) >= 2) {
        const unsigned char *p =
            (const unsigned char *)PyBytes_AS_STRING(source);
        unsigned int halfmagic =
            (unsigned int)PyImport_GetMagicNumber() & 0xFFFF;
        if (((unsigned int)p[0] | ((unsigned int)p[1] << 8)) == halfmagic) {
            return 1;
        }
    }
    return 0;
}

/* The code object of a .pyc, checked as python's run_pyc_file does. */
static PyObject *
pyc_code(PyObject *data)
{
    const char *p = PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    long magic = PyImport_GetMagicNumber();
    unsigned char m[4] = {(unsigned char)(magic & 0xff),
                          (unsigned char)((magic >> 8) & 0xff),
                          (unsigned char)((magic >> 16) & 0xff),
                          (unsigned char)((magic >> 24) & 0xff)};
    if (n < 4 || memcmp(p, m, 4) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Bad magic number in .pyc file");
        return NULL;
    }
    PyObject *code = n >= 16 ? PyMarshal_ReadObjectFromString(p + 16, n - 16)
                             : NULL;
    if (code == NULL || !PyCode_Check(code)) {
        Py_XDECREF(code);
        PyErr_Clear();
        PyErr_SetString(PyExc_RuntimeError, "Bad code object in .pyc file");
        return NULL;
    }
    return code;
}

/* The module's top-level statements one at a time (statements.c compiled
 * each), with a boundary snapshot between two when one is due; with
 * --resume from the statement resume picked. Each runs as the whole module
 * would: in globals, no frame of chkpt's around it. */
static PyObject *
statement_loop(CheckpointObject *ck, PyObject *globals)
{
    Py_ssize_t n = chkpt_statements_count(ck);
    Py_ssize_t i = chkpt_statements_start(ck, globals);
    PyObject *result = i < 0 ? NULL : Py_NewRef(Py_None);
    for (; result != NULL && i < n; i++) {
        PyObject *code = chkpt_statements_code(ck, i);     /* borrowed */
        if (code == Py_None) {
            continue;
        }
        PyObject *r = PyEval_EvalCode(code, globals, globals);
        if (r == NULL || chkpt_statements_boundary(ck, i + 1, globals) < 0) {
            Py_CLEAR(result);
        }
        Py_XDECREF(r);
    }
    return result;
}

static PyObject *
run_statements(CheckpointObject *ck, PyObject *globals)
{
    bottom_state bottom;
    hooks_install(ck);
    enter_bottom(&bottom);
    PyObject *result = statement_loop(ck, globals);
    leave_bottom(&bottom);
    hooks_uninstall(ck);
    /* the statements' AST and code are not needed any more */
    chkpt_statements_free(ck);
    return result;
}

/* -m (and a directory's or zip's __main__): runpy's _run_code calls
 * exec(code, globals), exec looked up in runpy's globals. While runpy
 * runs the module, runpy.exec is this function (self: a tuple of the
 * Checkpoint, the --resume flag and a list that says it ran), so the module
 * runs statement by statement under runpy's own two frames, as under
 * python -m; any other exec goes to the builtin. */
static PyObject *
runpy_exec(PyObject *self, PyObject *args)
{
    CheckpointObject *ck = (CheckpointObject *)PyTuple_GET_ITEM(self, 0);
    int resume = PyObject_IsTrue(PyTuple_GET_ITEM(self, 1));
    PyObject *done = PyTuple_GET_ITEM(self, 2);
    PyObject *code, *globals;
    PyObject *main_dict = ck->main_module != Py_None
                          ? PyModule_GetDict(ck->main_module) : NULL;
    PyObject *source = NULL;
    if (PyTuple_GET_SIZE(args) == 2 && PyList_GET_SIZE(done) == 0
        && PyArg_ParseTuple(args, "OO", &code, &globals) && PyCode_Check(code)
        && globals == main_dict && PyUnicode_Check(ck->script_path)
        && PyUnicode_Compare(((PyCodeObject *)code)->co_filename,
                             ck->script_path) == 0) {
        source = PyDict_GetItemWithError(ck->sources, ck->script_path);
    }
    PyErr_Clear();
    if (source != NULL && PyList_Append(done, Py_None) == 0
        && PySys_Audit("exec", "O", code) == 0
        && chkpt_statements_prepare(ck, source, ck->script_path, resume) > 0) {
        return statement_loop(ck, globals);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *builtin = import_attr("builtins", "exec");
    if (builtin == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_Call(builtin, args, NULL);
    Py_DECREF(builtin);
    return r;
}

static PyMethodDef runpy_exec_def = {
    "exec", runpy_exec, METH_VARARGS,
    "chkpt: runs the module run by runpy statement by statement."
};

/* Puts runpy_exec in runpy's globals (1), or leaves them be (0). */
static int
runpy_exec_install(CheckpointObject *ck, int resume)
{
    PyObject *runpy = PyImport_ImportModule("runpy");
    PyObject *done = runpy ? PyList_New(0) : NULL;
    PyObject *state = done ? Py_BuildValue("(OOO)", ck, resume ? Py_True
                                                               : Py_False,
                                           done) : NULL;
    PyObject *f = state ? PyCFunction_New(&runpy_exec_def, state) : NULL;
    int r = f != NULL && PyObject_SetAttrString(runpy, "exec", f) == 0;
    Py_XDECREF(runpy);
    Py_XDECREF(done);
    Py_XDECREF(state);
    Py_XDECREF(f);
    if (!r) {
        chkpt_warn_exc("the module runs whole, without boundary snapshots");
    }
    return r;
}

static void
runpy_exec_uninstall(void)
{
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    PyObject *runpy = PyImport_ImportModule("runpy");
    if (runpy == NULL || PyObject_DelAttrString(runpy, "exec") < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(runpy);
    chkpt_error_restore(&saved);
}

/* Compiles the script's source (bytes) as python compiles a file: its
 * coding declaration, BOM and newlines honoured, no compiler flag
 * inherited (dont_inherit), optimisation level of the interpreter, and
 * executes it in globals, hooks installed. When the source does not
 * compile, python's own file parser runs on the same bytes instead, so a
 * SyntaxError (or a decoding error) reads exactly as under python.
 *
 * This is the one place where the script's code executes: once it
 * compiled, statements.c splits it into top-level statements, run one by one
 * (run_statements), unless boundary snapshots are off (-f -1). */
static PyObject *
exec_main_code(CheckpointObject *ck, PyObject *source, PyObject *filename,
               PyObject *globals, int pyc, int resume)
{
    const char *buf = PyBytes_AS_STRING(source);
    Py_ssize_t len = PyBytes_GET_SIZE(source);
    PyCompilerFlags cf = _PyCompilerFlags_INIT;
    PyObject *code = NULL;
    PyObject *result = NULL;
    bottom_state bottom;

    if (pyc) {
        code = pyc_code(source);
        if (code == NULL) {
            return NULL;
        }
    }
    else if (memchr(buf, '\0', (size_t)len) == NULL) {
        code = Py_CompileStringObject(buf, filename, Py_file_input, &cf, -1);
    }
    if (code == NULL) {
        /* python's file parser reports the error (or, should it accept
         * what the string parser did not, runs the script) */
        chkpt_saved_error saved;
        chkpt_error_save(&saved);
        FILE *fp = len > 0 ? fmemopen((void *)buf, (size_t)len, "rb") : NULL;
        PyObject *fb = fp ? PyUnicode_EncodeFSDefault(filename) : NULL;
        if (fb == NULL) {
            if (fp != NULL) {
                fclose(fp);
            }
            PyErr_Clear();
            chkpt_error_restore(&saved);
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError,
                                "cannot compile the script");
            }
            return NULL;
        }
        chkpt_error_discard(&saved);
        hooks_install(ck);
        enter_bottom(&bottom);
        result = PyRun_FileExFlags(fp, PyBytes_AS_STRING(fb), Py_file_input,
                                   globals, globals, 1, &cf);
        leave_bottom(&bottom);
        hooks_uninstall(ck);
        Py_DECREF(fb);
        return result;
    }
    if (PySys_Audit("exec", "O", code) < 0) {
        Py_DECREF(code);
        return NULL;
    }
    if (pyc && resume) {
        chkpt_warn("cannot resume a compiled .pyc script: running it from "
                   "the start");
    }
    if (!pyc && chkpt_statements_prepare(ck, source, filename, resume) > 0) {
        Py_DECREF(code);
        return run_statements(ck, globals);
    }
    hooks_install(ck);
    enter_bottom(&bottom);
    result = PyEval_EvalCode(code, globals, globals);
    leave_bottom(&bottom);
    hooks_uninstall(ck);
    Py_DECREF(code);
    return result;
}

static void
remove_file_names(PyObject *dict)
{
    if (dict == NULL) {
        return;
    }
    const char *names[] = {"__file__", "__cached__"};
    for (int i = 0; i < 2; i++) {
        if (PyDict_DelItemString(dict, names[i]) < 0) {
            PyErr_Clear();
        }
    }
}

/* What python's main does once the script's code returned `result`:
 * SystemExit propagates, anything else is printed (exit status 1), and a
 * KeyboardInterrupt is then re-raised. For a script file, python removes
 * __file__ and __cached__ from __main__ afterwards (file_dict). */
static PyObject *
finish(PyObject *result, PyObject *file_dict)
{
    if (result != NULL) {
        Py_DECREF(result);
        remove_file_names(file_dict);
        return PyLong_FromLong(0);
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit) && !inspect_flag()) {
        /* python exits from inside PyErr_Print here: __file__ stays.
         * (Under -i, PyErr_Print prints it like any exception, and python
         * goes on to its prompt.) */
        return NULL;
    }
    PyObject *ki;
    print_uncaught(&ki);
    remove_file_names(file_dict);
    if (ki != NULL) {
        return reraise_printed(ki);
    }
    return PyLong_FromLong(1);
}

/* ---- the three kinds of target ---- */

static int
set_str_attr(PyObject **slot, PyObject *value)
{
    Py_XSETREF(*slot, Py_NewRef(value));
    return 0;
}

/* Records what the spec runpy will use says about the script: its path,
 * directory and source. Failures only mean less is known. */
static void
note_spec(CheckpointObject *ck, PyObject *spec)
{
    PyObject *origin = PyObject_GetAttrString(spec, "origin");
    PyObject *has_loc = origin ? PyObject_GetAttrString(spec, "has_location")
                               : NULL;
    int located = has_loc ? PyObject_IsTrue(has_loc) : -1;
    Py_XDECREF(has_loc);
    if (origin == NULL || located <= 0 || !PyUnicode_Check(origin)) {
        PyErr_Clear();
        Py_XDECREF(origin);
        return;
    }
    PyObject *dir = dirname_of(origin);
    if (dir == NULL) {
        PyErr_Clear();
        Py_DECREF(origin);
        return;
    }
    set_str_attr(&ck->script_path, origin);
    set_str_attr(&ck->script_dir, dir);
    Py_DECREF(dir);
    PyObject *loader = PyObject_GetAttrString(spec, "loader");
    PyObject *data = loader ? PyObject_CallMethod(loader, "get_data", "O",
                                                  origin)
                            : NULL;
    Py_XDECREF(loader);
    if (data != NULL && PyBytes_Check(data)) {
        if (PyDict_SetItem(ck->sources, origin, data) < 0) {
            PyErr_Clear();
        }
    }
    PyErr_Clear();
    Py_XDECREF(data);
    Py_DECREF(origin);
}

/* The spec runpy is going to use, found without running anything: the
 * path finder walks the packages' __path__ (or takes a package already
 * imported from sys.modules) instead of importing them. Only for telling
 * the hooks which file is the script before it starts; NULL without an
 * exception when it cannot be known this way. */
static PyObject *
quiet_find_spec(PyObject *modname, int main_of_path0)
{
    PyObject *finder = import_attr("importlib.machinery", "PathFinder");
    if (finder == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *spec = NULL, *path = Py_NewRef(Py_None), *parts = NULL;
    PyObject *modules = PySys_GetObject("modules");     /* borrowed */
    if (main_of_path0) {
        /* a directory or zip file: its __main__, found through sys.path[0] */
        PyObject *syspath = PySys_GetObject("path");    /* borrowed */
        if (syspath == NULL || !PyList_Check(syspath)
            || PyList_GET_SIZE(syspath) == 0) {
            goto done;
        }
        Py_SETREF(path, Py_BuildValue("[O]", PyList_GET_ITEM(syspath, 0)));
        if (path == NULL) {
            goto done;
        }
        spec = PyObject_CallMethod(finder, "find_spec", "OO", modname, path);
        goto done;
    }
    PyObject *dot = PyUnicode_FromString(".");
    if (dot == NULL) {
        goto done;
    }
    parts = PyUnicode_Split(modname, dot, -1);
    Py_DECREF(dot);
    if (parts == NULL) {
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(parts);
    for (Py_ssize_t i = 1; i <= n; i++) {
        PyObject *head = PyList_GetSlice(parts, 0, i);
        PyObject *sep = head ? PyUnicode_FromString(".") : NULL;
        PyObject *full = sep ? PyUnicode_Join(sep, head) : NULL;
        Py_XDECREF(head);
        Py_XDECREF(sep);
        if (full == NULL) {
            goto done;
        }
        PyObject *mod = modules ? PyDict_GetItemWithError(modules, full)
                                : NULL;
        Py_XSETREF(spec, NULL);
        if (mod != NULL) {
            spec = PyObject_GetAttrString(mod, "__spec__");
            Py_SETREF(path, PyObject_GetAttrString(mod, "__path__"));
            if (path == NULL) {
                PyErr_Clear();
                path = Py_NewRef(Py_None);
            }
        }
        else if (!PyErr_Occurred()) {
            spec = PyObject_CallMethod(finder, "find_spec", "OO", full, path);
            if (spec != NULL && spec != Py_None) {
                Py_SETREF(path, PyObject_GetAttrString(
                    spec, "submodule_search_locations"));
            }
        }
        Py_DECREF(full);
        if (spec == NULL || spec == Py_None || path == NULL) {
            goto done;
        }
    }
    if (path != Py_None) {
        /* a package: runpy runs its __main__ submodule */
        PyObject *sub = PyUnicode_FromFormat("%U.__main__", modname);
        if (sub == NULL) {
            goto done;
        }
        Py_SETREF(spec, PyObject_CallMethod(finder, "find_spec", "OO", sub,
                                            path));
        Py_DECREF(sub);
    }
done:
    Py_DECREF(finder);
    Py_XDECREF(path);
    Py_XDECREF(parts);
    if (spec == Py_None) {
        Py_CLEAR(spec);
    }
    PyErr_Clear();
    return spec;
}

/* When the pending SystemExit is runpy's own report of an error finding
 * the module (`sys.exit("%s: %s" % (sys.executable, exc))` directly in
 * _run_module_as_main), returns the message after the executable's name;
 * otherwise NULL. The exception stays pending either way. */
static PyObject *
runpy_error_message(void)
{
    PyObject *msg = NULL;
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    PyObject *value = chkpt_error_value(&saved);
    PyObject *code = value ? PyObject_GetAttrString(value, "code") : NULL;
    PyObject *tb = value ? PyException_GetTraceback(value) : NULL;
    PyObject *exe = PySys_GetObject("executable");      /* borrowed */
    PyObject *prefix = PyUnicode_FromFormat("%S: ", exe ? exe : Py_None);
    if (code == NULL || tb == NULL || prefix == NULL || !PyUnicode_Check(code)
        || !PyTraceBack_Check(tb)
        || ((PyTracebackObject *)tb)->tb_next != NULL) {
        goto done;
    }
    PyFrameObject *frame = ((PyTracebackObject *)tb)->tb_frame;
    PyCodeObject *fcode = PyFrame_GetCode(frame);
    PyObject *globals = PyFrame_GetGlobals(frame);
    PyObject *gname = PyDict_GetItemString(globals, "__name__"); /* borrowed */
    int ours = PyUnicode_CompareWithASCIIString(fcode->co_name,
                                                "_run_module_as_main") == 0
               && gname != NULL && PyUnicode_Check(gname)
               && PyUnicode_CompareWithASCIIString(gname, "runpy") == 0;
    Py_DECREF(fcode);
    Py_DECREF(globals);
    if (!ours
        || PyUnicode_Tailmatch(code, prefix, 0, PY_SSIZE_T_MAX, -1) != 1) {
        goto done;
    }
    msg = PyUnicode_Substring(code, PyUnicode_GetLength(prefix),
                              PyUnicode_GetLength(code));
done:
    Py_XDECREF(code);
    Py_XDECREF(tb);
    Py_XDECREF(prefix);
    PyErr_Clear();
    chkpt_error_restore(&saved);
    return msg;
}

/* runpy runs the module (-m) or the `__main__` of a directory or zip
 * file, exactly as python's pymain_run_module calls it. Returns the exit
 * status, or NULL with the exception to propagate. */
static PyObject *
run_with_runpy(CheckpointObject *ck, PyObject *modname, int alter_argv,
               int resume)
{
    PyObject *spec = quiet_find_spec(modname, !alter_argv);
    if (spec != NULL) {
        note_spec(ck, spec);
        Py_DECREF(spec);
    }
    PyObject *func = import_attr("runpy", "_run_module_as_main");
    if (func == NULL) {
        return NULL;
    }
    if (PySys_Audit("cpython.run_module", "O", modname) < 0) {
        Py_DECREF(func);
        return finish(NULL, NULL);
    }
    bottom_state bottom;
    int split = (chkpt_statements_boundaries_on(ck) || resume)
                && PyUnicode_Check(ck->script_path)
                && runpy_exec_install(ck, resume);
    hooks_install(ck);
    enter_bottom(&bottom);
    PyObject *result = PyObject_CallFunctionObjArgs(
        func, modname, alter_argv ? Py_True : Py_False, NULL);
    leave_bottom(&bottom);
    hooks_uninstall(ck);
    if (split) {
        runpy_exec_uninstall();
    }
    Py_DECREF(func);
    if (result == NULL && PyErr_ExceptionMatches(PyExc_SystemExit)) {
        /* `python: No module named x` becomes `chkpt: No module named x`,
         * with python's exit status 1; for a directory or zip file without
         * __main__, 2 as for a script that cannot be opened */
        PyObject *msg = runpy_error_message();
        if (msg != NULL) {
            PyErr_Clear();
            PyObject *h;
            chkpt_warn("%s", printable(msg, &h));
            Py_XDECREF(h);
            Py_DECREF(msg);
            return PyLong_FromLong(alter_argv ? 1 : 2);
        }
    }
    return finish(result, NULL);
}

static PyObject *
run_script_file(CheckpointObject *ck, PyObject *filename, PyObject *path0,
                PyObject *main_mod, int resume)
{
    PyObject *d = PyModule_GetDict(main_mod);           /* borrowed */
    if (PySys_Audit("cpython.run_file", "O", filename) < 0) {
        return finish(NULL, NULL);
    }
    PyObject *fb = PyUnicode_EncodeFSDefault(filename);
    if (fb == NULL) {
        return NULL;
    }
    FILE *fp = fopen(PyBytes_AS_STRING(fb), "rbe");
    Py_DECREF(fb);
    if (fp == NULL) {
        int err = errno;
        PyObject *r = PyObject_Repr(filename);
        const char *rs = r ? PyUnicode_AsUTF8(r) : NULL;
        if (rs == NULL) {
            Py_XDECREF(r);
            return NULL;
        }
        chkpt_warn("can't open file %s: [Errno %d] %s", rs, err,
                   strerror(err));
        Py_DECREF(r);
        return PyLong_FromLong(2);
    }
    struct stat sb;
    if (fstat(fileno(fp), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(fp);
        PyObject *r = PyObject_Repr(filename);
        const char *rs = r ? PyUnicode_AsUTF8(r) : NULL;
        if (rs == NULL) {
            Py_XDECREF(r);
            return NULL;
        }
        chkpt_warn("%s is a directory, cannot continue", rs);
        Py_DECREF(r);
        return PyLong_FromLong(1);
    }
    PyObject *source = chkpt_read_fp(fp, filename);
    fclose(fp);
    if (source == NULL) {
        return finish(NULL, NULL);
    }
    /* signal handlers (SIGINT) pending since start-up, as python */
    if (Py_MakePendingCalls() < 0) {
        Py_DECREF(source);
        return finish(NULL, NULL);
    }
    int pyc = is_pyc(filename, source);
    PyObject *loader_cls = import_attr(
        "_frozen_importlib_external",
        pyc ? "SourcelessFileLoader" : "SourceFileLoader");
    PyObject *loader = loader_cls
        ? PyObject_CallFunction(loader_cls, "sO", "__main__", filename)
        : NULL;
    Py_XDECREF(loader_cls);
    if (loader == NULL
        || PyDict_SetItemString(d, "__file__", filename) < 0
        || PyDict_SetItemString(d, "__cached__", Py_None) < 0
        || PyDict_SetItemString(d, "__loader__", loader) < 0) {
        Py_XDECREF(loader);
        Py_DECREF(source);
        return NULL;
    }
    Py_DECREF(loader);

    set_str_attr(&ck->script_path, filename);
    set_str_attr(&ck->script_dir, path0);
    if (!pyc && PyDict_SetItem(ck->sources, filename, source) < 0) {
        Py_DECREF(source);
        return NULL;
    }
    PyObject *result = exec_main_code(ck, source, filename, d, pyc, resume);
    Py_DECREF(source);
    flush_io();
    return finish(result, d);
}

/* `python -` (the script piped into stdin): python parses all of stdin,
 * then runs it as the file "<stdin>" (no loader, sys.path[0] = ''). A
 * terminal would give python's interactive prompt: not a script chkpt can
 * run. */
static PyObject *
run_stdin(CheckpointObject *ck, PyObject *main_mod, int resume)
{
    PyObject *d = PyModule_GetDict(main_mod);           /* borrowed */
    if (isatty(fileno(stdin))) {
        chkpt_warn("error: the script cannot be read from a terminal: give "
                   "its file, or pipe it into `python -m chkpt -`");
        return PyLong_FromLong(2);
    }
    if (Py_MakePendingCalls() < 0
        || PySys_Audit("cpython.run_stdin", NULL) < 0) {
        return finish(NULL, NULL);
    }
    PyObject *filename = PyUnicode_FromString("<stdin>");
    if (filename == NULL) {
        return NULL;
    }
    PyObject *source = chkpt_read_fp(stdin, filename);
    if (source == NULL) {
        Py_DECREF(filename);
        return finish(NULL, NULL);
    }
    PyObject *cwd = getcwd_str();
    if (cwd == NULL
        || PyDict_SetItemString(d, "__file__", filename) < 0
        || PyDict_SetItemString(d, "__cached__", Py_None) < 0
        || PyDict_SetItem(ck->sources, filename, source) < 0) {
        Py_XDECREF(cwd);
        Py_DECREF(source);
        Py_DECREF(filename);
        return NULL;
    }
    set_str_attr(&ck->script_path, filename);
    set_str_attr(&ck->script_dir, cwd);
    Py_DECREF(cwd);
    PyObject *result = exec_main_code(ck, source, filename, d, 0, resume);
    Py_DECREF(source);
    Py_DECREF(filename);
    flush_io();
    return finish(result, d);
}

/* ---- the output directory ---- */

/* Can snapshots be written to dir? Nothing is created here (the store
 * creates it at the first snapshot): the directory, or its nearest
 * existing ancestor, must be a writable directory. */
static void
check_output_dir(CheckpointObject *ck)
{
    PyObject *b = PyUnicode_EncodeFSDefault(ck->output_dir);
    if (b == NULL) {
        chkpt_warn_exc("cannot use the output directory");
        chkpt_capture_store_unusable(ck);
        return;
    }
    char *path = PyMem_Malloc((size_t)PyBytes_GET_SIZE(b) + 1);
    if (path == NULL) {
        Py_DECREF(b);
        PyErr_Clear();
        chkpt_capture_store_unusable(ck);
        return;
    }
    memcpy(path, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b) + 1);
    Py_DECREF(b);
    const char *reason = NULL;
    for (;;) {
        struct stat st;
        if (stat(path, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) {
                reason = strerror(ENOTDIR);
            }
            else if (access(path, W_OK | X_OK) != 0) {
                reason = strerror(errno);
            }
            break;
        }
        if (errno != ENOENT) {
            reason = strerror(errno);
            break;
        }
        char *slash = strrchr(path, '/');
        if (slash == NULL) {
            break;
        }
        if (slash == path) {
            slash[1] = '\0';
            if (strcmp(path, "/") == 0 && stat(path, &st) != 0) {
                break;
            }
            continue;
        }
        *slash = '\0';
    }
    PyMem_Free(path);
    if (reason != NULL) {
        PyObject *h;
        chkpt_warn("cannot write snapshots to %s: %s; the script runs "
                   "without snapshots", printable(ck->output_dir, &h), reason);
        Py_XDECREF(h);
        chkpt_capture_store_unusable(ck);
    }
}

/* ---- entry point ---- */

PyObject *
chkpt_run(PyObject *module, chkpt_cli *cli)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *status = NULL;
    PyObject *main_mod = NULL, *filename = NULL, *path0 = NULL;
    PyObject *argv0 = NULL;
    CheckpointObject *ck = (CheckpointObject *)chkpt_checkpoint_new(module,
                                                                     cli);
    if (ck == NULL) {
        return NULL;
    }
    Py_XSETREF(st->singleton, Py_NewRef((PyObject *)ck));
    check_output_dir(ck);

    main_mod = new_main_module();
    if (main_mod == NULL) {
        goto done;
    }
    Py_XSETREF(ck->main_module, Py_NewRef(main_mod));
    int safe_path = safe_path_flag();

    if (cli->is_module) {
        argv0 = PyUnicode_FromString("-m");
        path0 = getcwd_str();
        if (argv0 == NULL || path0 == NULL || set_argv(argv0, cli->args) < 0
            || (!safe_path && set_path0(path0, 0) < 0)) {
            goto done;
        }
        if (ck->verbosity > 0) {
            PyObject *h1, *h2;
            chkpt_warn("running module %s (snapshots to %s)",
                       printable(cli->target, &h1),
                       printable(ck->output_dir, &h2));
            Py_XDECREF(h1);
            Py_XDECREF(h2);
        }
        status = run_with_runpy(ck, cli->target, 1, cli->resume);
        goto done;
    }

    if (set_argv(cli->target, cli->args) < 0) {
        goto done;
    }
    if (PyUnicode_CompareWithASCIIString(cli->target, "-") == 0) {
        path0 = PyUnicode_FromString("");
        if (path0 == NULL || (!safe_path && set_path0(path0, 0) < 0)) {
            goto done;
        }
        status = run_stdin(ck, main_mod, cli->resume);
        goto done;
    }
    filename = python_abspath(cli->target);
    if (filename == NULL) {
        goto done;
    }
    if (ck->verbosity > 0) {
        PyObject *h1, *h2;
        chkpt_warn("running %s (snapshots to %s)", printable(filename, &h1),
                   printable(ck->output_dir, &h2));
        Py_XDECREF(h1);
        Py_XDECREF(h2);
    }
    /* a directory or zip file that an import hook accepts: its __main__ */
    PyObject *importer = PyImport_GetImporter(filename);
    if (importer == NULL) {
        chkpt_warn_exc("failed checking if the script is an import path "
                       "entry");
    }
    else if (importer != Py_None) {
        Py_DECREF(importer);
        if (set_path0(filename, safe_path) < 0) {
            goto done;
        }
        PyObject *name = PyUnicode_FromString("__main__");
        if (name == NULL) {
            goto done;
        }
        status = run_with_runpy(ck, name, 0, cli->resume);
        Py_DECREF(name);
        goto done;
    }
    else {
        Py_DECREF(importer);
    }
    path0 = script_path0(cli->target);
    if (path0 == NULL) {
        goto done;
    }
    if (!safe_path && set_path0(path0, 0) < 0) {
        goto done;
    }
    status = run_script_file(ck, filename, path0, main_mod, cli->resume);

done:
    Py_XDECREF(main_mod);
    Py_XDECREF(filename);
    Py_XDECREF(path0);
    Py_XDECREF(argv0);
    Py_DECREF(ck);
    return status;
}
