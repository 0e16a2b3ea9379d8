/* module.c: the chkpt._chkpt module: module state (PEP 489 multi-phase
 * init), the Checkpoint, SnapshotInfo and Unloadable heap types, and the
 * functions the Python package re-exports. */
#include "chkpt.h"
#include "writer.h"
#include <stdarg.h>
#include <time.h>

static struct PyModuleDef chkpt_module_def;

chkpt_state *
chkpt_state_from_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &chkpt_module_def);
    if (mod == NULL) {
        return NULL;
    }
    return chkpt_get_state(mod);
}

double
chkpt_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- warnings: one `chkpt:` line on stderr, never raising ---- */

static void
write_stderr_line(const char *line)
{
    PyObject *err = PySys_GetObject("stderr");     /* borrowed */
    if (err != NULL && err != Py_None) {
        if (PyFile_WriteString(line, err) == 0
            && PyFile_WriteString("\n", err) == 0) {
            PyObject *r = PyObject_CallMethod(err, "flush", NULL);
            if (r != NULL) {
                Py_DECREF(r);
                return;
            }
        }
        PyErr_Clear();
    }
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

void
chkpt_warn(const char *fmt, ...)
{
    char buf[2048];
    int n = snprintf(buf, sizeof(buf), "chkpt: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    /* one line, whatever the message held */
    for (char *p = buf; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    write_stderr_line(buf);
    chkpt_error_restore(&saved);
}

void
chkpt_warn_fmt(const char *fmt, ...)
{
    chkpt_saved_error e;
    chkpt_error_save(&e);
    va_list ap;
    va_start(ap, fmt);
    PyObject *s = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    const char *u = s ? PyUnicode_AsUTF8(s) : NULL;
    if (u != NULL) {
        chkpt_warn("%s", u);
    }
    else {
        PyErr_Clear();
        chkpt_warn("%s", fmt);
    }
    Py_XDECREF(s);
    chkpt_error_restore(&e);
}

/* "ExcType: message" of the pending exception (which stays pending). */
PyObject *
chkpt_describe_pending(void)
{
    chkpt_saved_error e;
    chkpt_error_save(&e);
    PyObject *exc = chkpt_error_value(&e);
    PyObject *s = exc ? PyObject_Str(exc) : NULL;
    PyObject *r = NULL;
    if (s != NULL && PyUnicode_GET_LENGTH(s) > 0) {
        r = PyUnicode_FromFormat("%s: %U", Py_TYPE(exc)->tp_name, s);
    }
    else if (exc != NULL) {
        r = PyUnicode_FromString(Py_TYPE(exc)->tp_name);
    }
    Py_XDECREF(s);
    PyErr_Clear();
    chkpt_error_restore(&e);
    return r;
}

void
chkpt_warn_exc(const char *what)
{
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    PyObject *value = chkpt_error_value(&saved);
    const char *tname = value ? Py_TYPE(value)->tp_name : "error";
    PyObject *s = value ? PyObject_Str(value) : NULL;
    const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
    if (msg == NULL) {
        PyErr_Clear();
        msg = "";
    }
    if (msg[0]) {
        chkpt_warn("%s: %s: %s", what, tname, msg);
    }
    else {
        chkpt_warn("%s: %s", what, tname);
    }
    Py_XDECREF(s);
    chkpt_error_discard(&saved);
}

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

/* ---- Checkpoint ---- */

static int
checkpoint_traverse(CheckpointObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->output_dir);
    Py_VISIT(self->tracked);
    Py_VISIT(self->libraries);
    Py_VISIT(self->warned);
    Py_VISIT(self->script_path);
    Py_VISIT(self->script_dir);
    Py_VISIT(self->main_module);
    Py_VISIT(self->sources);
    Py_VISIT(self->deferred);
    return 0;
}

static int
checkpoint_clear(CheckpointObject *self)
{
    Py_CLEAR(self->module);
    Py_CLEAR(self->output_dir);
    Py_CLEAR(self->tracked);
    Py_CLEAR(self->libraries);
    Py_CLEAR(self->warned);
    Py_CLEAR(self->script_path);
    Py_CLEAR(self->script_dir);
    Py_CLEAR(self->main_module);
    Py_CLEAR(self->sources);
    Py_CLEAR(self->deferred);
    return 0;
}

static void
checkpoint_dealloc(CheckpointObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    chkpt_writer_free(self);
    if (self->store != NULL) {
        chkpt_store_close(self->store);
        self->store = NULL;
    }
    checkpoint_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static const char *default_libraries[] = {
    "numpy", "pandas", "polars", "pyarrow", "scipy", "torch", "sklearn",
    "xarray", NULL
};

PyObject *
chkpt_checkpoint_new(PyObject *module, const chkpt_cli *cli)
{
    chkpt_state *st = chkpt_get_state(module);
    CheckpointObject *ck = PyObject_GC_New(CheckpointObject,
                                           st->Checkpoint_Type);
    if (ck == NULL) {
        return NULL;
    }
    ck->module = Py_NewRef(module);
    ck->frequency_ms = cli->frequency_ms;
    ck->min_obj_size = cli->min_obj_size;
    ck->verbosity = cli->verbosity;
    ck->compress_level = cli->compress_level;
    ck->max_store_size = cli->max_store_size;
    ck->max_pickle_size = cli->max_pickle_size > 0
                          ? cli->max_pickle_size : chkpt_default_max_pickle_size();
    ck->output_dir = NULL;
    ck->tracked = PyDict_New();
    ck->libraries = PyList_New(0);
    ck->warned = PySet_New(NULL);
    ck->script_path = Py_NewRef(Py_None);
    ck->script_dir = Py_NewRef(Py_None);
    ck->main_module = Py_NewRef(Py_None);
    ck->sources = PyDict_New();
    ck->store = NULL;
    ck->store_failed = 0;
    ck->seq = 0;
    ck->last_snapshot = chkpt_monotonic();
    ck->in_snapshot = 0;
    ck->hooks = NULL;
    ck->writer = NULL;
    ck->deferred = NULL;
    PyObject_GC_Track(ck);
    if (ck->tracked == NULL || ck->libraries == NULL || ck->warned == NULL
        || ck->sources == NULL) {
        Py_DECREF(ck);
        return NULL;
    }
    for (const char **lib = default_libraries; *lib; lib++) {
        PyObject *s = PyUnicode_FromString(*lib);
        if (s == NULL || PyList_Append(ck->libraries, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(ck);
            return NULL;
        }
        Py_DECREF(s);
    }
    /* output dir is kept absolute: the script may chdir */
    PyObject *os_path = PyImport_ImportModule("os.path");
    if (os_path == NULL) {
        Py_DECREF(ck);
        return NULL;
    }
    PyObject *dir = cli->output_dir;
    PyObject *tmp = NULL;
    if (dir == NULL) {
        dir = tmp = PyUnicode_FromString(CHKPT_DEFAULT_OUTPUT_DIR);
    }
    ck->output_dir = dir ? PyObject_CallMethod(os_path, "abspath", "O", dir)
                         : NULL;
    Py_XDECREF(tmp);
    Py_DECREF(os_path);
    if (ck->output_dir == NULL) {
        Py_DECREF(ck);
        return NULL;
    }
    return (PyObject *)ck;
}

static PyObject *
checkpoint_get_global_singleton(PyObject *cls, PyObject *Py_UNUSED(ignored))
{
    chkpt_state *st = chkpt_state_from_type((PyTypeObject *)cls);
    if (st == NULL) {
        return NULL;
    }
    if (st->singleton == NULL) {
        PyErr_SetString(PyExc_AssertionError,
                        "chkpt is not running: start the script with "
                        "`python -m chkpt script.py`");
        return NULL;
    }
    return Py_NewRef(st->singleton);
}

static PyObject *
checkpoint_track(CheckpointObject *self, PyObject *obj)
{
    PyObject *key = PyLong_FromVoidPtr(obj);
    if (key == NULL) {
        return NULL;
    }
    int r = PyDict_SetItem(self->tracked, key, obj);
    Py_DECREF(key);
    if (r < 0) {
        return NULL;
    }
    return Py_NewRef(obj);
}

static PyObject *
checkpoint_untrack(CheckpointObject *self, PyObject *obj)
{
    PyObject *key = PyLong_FromVoidPtr(obj);
    if (key == NULL) {
        return NULL;
    }
    PyObject *found = PyDict_GetItemWithError(self->tracked, key);
    if (found == NULL) {
        Py_DECREF(key);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "untrack(): object is not tracked");
        }
        return NULL;
    }
    int r = PyDict_DelItem(self->tracked, key);
    Py_DECREF(key);
    if (r < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
checkpoint_track_library(CheckpointObject *self, PyObject *name)
{
    if (!PyUnicode_Check(name) || PyUnicode_GetLength(name) == 0) {
        PyErr_SetString(PyExc_TypeError,
                        "track_library() takes a module name such as 'polars'");
        return NULL;
    }
    int has = PySequence_Contains(self->libraries, name);
    if (has < 0) {
        return NULL;
    }
    if (!has && PyList_Append(self->libraries, name) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
checkpoint_snapshot(CheckpointObject *self, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const kwlist[] = {"name", NULL};
    PyObject *name = Py_None;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "snapshot() takes at most 1 argument");
        return NULL;
    }
    if (nargs == 1) {
        name = args[0];
    }
    else if (nkw == 1) {
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0),
                                             kwlist[0]) != 0) {
            PyErr_Format(PyExc_TypeError,
                         "snapshot() got an unexpected keyword argument '%U'",
                         PyTuple_GET_ITEM(kwnames, 0));
            return NULL;
        }
        name = args[0];
    }
    if (name != Py_None && !PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "snapshot() name must be a str or None");
        return NULL;
    }
    /* the caller's frame: the snapshot is of the code that asked for it */
    PyFrameObject *frame = PyEval_GetFrame();    /* borrowed */
    return chkpt_capture(self, frame, "manual", name);
}

static PyObject *
checkpoint_wait(CheckpointObject *self, PyObject *Py_UNUSED(ignored))
{
    /* snapshots are written by child processes (writer.c) */
    if (chkpt_writer_wait(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
checkpoint_get_frequency(CheckpointObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLongLong(self->frequency_ms);
}

static int
checkpoint_set_frequency(CheckpointObject *self, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL || !PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "frequency must be an int (ms; 0 every line, -1 manual only)");
        return -1;
    }
    long long f = PyLong_AsLongLong(v);
    if (f == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (f < -1) {
        PyErr_SetString(PyExc_ValueError, "frequency must be -1, 0 or a positive number of ms");
        return -1;
    }
    self->frequency_ms = f;
    return chkpt_hooks_reconfigure(self);
}

static PyObject *
checkpoint_get_min_obj_size(CheckpointObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLongLong(self->min_obj_size);
}

static int
checkpoint_set_min_obj_size(CheckpointObject *self, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL || !PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "min_obj_size must be an int (bytes; -1 tracked only)");
        return -1;
    }
    long long z = PyLong_AsLongLong(v);
    if (z == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (z < -1) {
        PyErr_SetString(PyExc_ValueError, "min_obj_size must be -1, 0 or a positive number of bytes");
        return -1;
    }
    self->min_obj_size = z;
    return 0;
}

static PyObject *
checkpoint_get_verbosity(CheckpointObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromLong(self->verbosity);
}

static int
checkpoint_set_verbosity(CheckpointObject *self, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL || !PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "verbosity must be an int");
        return -1;
    }
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    self->verbosity = x < 0 ? 0 : (int)x;
    return 0;
}

static PyObject *
checkpoint_get_output_dir(CheckpointObject *self, void *Py_UNUSED(c))
{
    return Py_NewRef(self->output_dir);
}

static int
checkpoint_set_output_dir(CheckpointObject *self, PyObject *v, void *Py_UNUSED(c))
{
    if (v == NULL) {
        PyErr_SetString(PyExc_TypeError, "output_dir cannot be deleted");
        return -1;
    }
    PyObject *p = PyOS_FSPath(v);
    if (p == NULL) {
        return -1;
    }
    if (!PyUnicode_Check(p)) {
        Py_DECREF(p);
        PyErr_SetString(PyExc_TypeError, "output_dir must be a str path");
        return -1;
    }
    PyObject *os_path = PyImport_ImportModule("os.path");
    if (os_path == NULL) {
        Py_DECREF(p);
        return -1;
    }
    PyObject *abs = PyObject_CallMethod(os_path, "abspath", "O", p);
    Py_DECREF(os_path);
    Py_DECREF(p);
    if (abs == NULL) {
        return -1;
    }
    Py_SETREF(self->output_dir, abs);
    if (self->store != NULL) {
        chkpt_store_close(self->store);
        self->store = NULL;
    }
    self->store_failed = 0;
    return 0;
}

static PyObject *
checkpoint_repr(CheckpointObject *self)
{
    return PyUnicode_FromFormat("<chkpt.Checkpoint output_dir=%R frequency=%lld "
                                "min_obj_size=%lld>", self->output_dir,
                                self->frequency_ms, self->min_obj_size);
}

static PyMethodDef checkpoint_methods[] = {
    {"get_global_singleton", (PyCFunction)checkpoint_get_global_singleton,
     METH_NOARGS | METH_CLASS,
     "Return the Checkpoint of the running script; AssertionError when the "
     "script is not run under chkpt."},
    {"track", (PyCFunction)checkpoint_track, METH_O,
     "Always capture this object (by identity), whatever its size; returns it."},
    {"untrack", (PyCFunction)checkpoint_untrack, METH_O,
     "Stop tracking an object passed to track()."},
    {"track_library", (PyCFunction)checkpoint_track_library, METH_O,
     "Treat objects of types from this module (prefix) as salient."},
    {"snapshot", (PyCFunction)(void (*)(void))checkpoint_snapshot,
     METH_FASTCALL | METH_KEYWORDS,
     "snapshot(name=None): take a snapshot of the caller's variables now; "
     "returns a SnapshotInfo, or None when nothing was saved."},
    {"wait", (PyCFunction)checkpoint_wait, METH_NOARGS,
     "Return once every snapshot taken so far is durable on disk."},
    {NULL}
};

static PyGetSetDef checkpoint_getset[] = {
    {"frequency", (getter)checkpoint_get_frequency,
     (setter)checkpoint_set_frequency,
     "ms between automatic snapshots; 0 every line; -1 manual only", NULL},
    {"min_obj_size", (getter)checkpoint_get_min_obj_size,
     (setter)checkpoint_set_min_obj_size,
     "bytes; objects at least this big are captured; -1 tracked only", NULL},
    {"verbosity", (getter)checkpoint_get_verbosity,
     (setter)checkpoint_set_verbosity, "how much chkpt reports on stderr", NULL},
    {"output_dir", (getter)checkpoint_get_output_dir,
     (setter)checkpoint_set_output_dir, "the store directory (absolute)", NULL},
    {NULL}
};

static PyType_Slot checkpoint_slots[] = {
    {Py_tp_doc, "The checkpointing engine of a script run under chkpt."},
    {Py_tp_dealloc, checkpoint_dealloc},
    {Py_tp_traverse, checkpoint_traverse},
    {Py_tp_clear, checkpoint_clear},
    {Py_tp_methods, checkpoint_methods},
    {Py_tp_getset, checkpoint_getset},
    {Py_tp_repr, checkpoint_repr},
    {0, NULL}
};

static PyType_Spec checkpoint_spec = {
    .name = "chkpt.Checkpoint",
    .basicsize = sizeof(CheckpointObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = checkpoint_slots,
};

/* ---- SnapshotInfo: what `snapshots()` lists and `snapshot()` returns ---- */

typedef struct {
    PyObject_HEAD
    PyObject *path, *name, *kind, *time, *script, *line, *variables, *size,
             *meta;
} SnapshotInfoObject;

#define SI_FIELDS(X) X(path) X(name) X(kind) X(time) X(script) X(line) \
                     X(variables) X(size) X(meta)

static int
snapinfo_traverse(SnapshotInfoObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
#define V(f) Py_VISIT(self->f);
    SI_FIELDS(V)
#undef V
    return 0;
}

static int
snapinfo_clear(SnapshotInfoObject *self)
{
#define C(f) Py_CLEAR(self->f);
    SI_FIELDS(C)
#undef C
    return 0;
}

static void
snapinfo_dealloc(SnapshotInfoObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    snapinfo_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
meta_get(PyObject *meta, const char *key)
{
    PyObject *v = PyDict_GetItemString(meta, key);   /* borrowed */
    return Py_NewRef(v ? v : Py_None);
}

PyObject *
chkpt_snapinfo_new(PyObject *module, PyObject *path, PyObject *meta)
{
    chkpt_state *st = chkpt_get_state(module);
    if (!PyDict_Check(meta)) {
        PyErr_SetString(st->SnapshotError, "snapshot metadata is not a mapping");
        return NULL;
    }
    SnapshotInfoObject *si = PyObject_GC_New(SnapshotInfoObject,
                                             st->SnapshotInfo_Type);
    if (si == NULL) {
        return NULL;
    }
    si->path = Py_NewRef(path);
    si->meta = Py_NewRef(meta);
    si->name = meta_get(meta, "name");
    si->kind = meta_get(meta, "kind");
    si->time = meta_get(meta, "time");
    si->script = meta_get(meta, "script");
    si->line = meta_get(meta, "line");
    si->size = meta_get(meta, "size");
    si->variables = PyList_New(0);
    PyObject_GC_Track(si);
    if (si->variables == NULL) {
        Py_DECREF(si);
        return NULL;
    }
    PyObject *vars = PyDict_GetItemString(meta, "variables");
    if (vars != NULL && PyList_Check(vars)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(vars); i++) {
            PyObject *v = PyList_GET_ITEM(vars, i);
            PyObject *n = PyDict_Check(v) ? PyDict_GetItemString(v, "name") : NULL;
            if (n != NULL && PyList_Append(si->variables, n) < 0) {
                Py_DECREF(si);
                return NULL;
            }
        }
    }
    return (PyObject *)si;
}

static PyObject *
snapinfo_repr(SnapshotInfoObject *self)
{
    return PyUnicode_FromFormat("SnapshotInfo(path=%R, name=%R, kind=%R, "
                                "time=%R, script=%R, line=%R, variables=%R)",
                                self->path, self->name, self->kind, self->time,
                                self->script, self->line, self->variables);
}

static PyObject *
snapinfo_fspath(SnapshotInfoObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->path);
}

static PyMethodDef snapinfo_methods[] = {
    {"__fspath__", (PyCFunction)snapinfo_fspath, METH_NOARGS,
     "The manifest path, so a SnapshotInfo is accepted wherever a path is."},
    {NULL}
};

#define SI_MEMBER(f, doc) \
    {#f, Py_T_OBJECT_EX, offsetof(SnapshotInfoObject, f), Py_READONLY, doc}

static PyMemberDef snapinfo_members[] = {
    SI_MEMBER(path, "path of the snapshot (accepted by load() and every verb)"),
    SI_MEMBER(name, "name given to snapshot(), or None"),
    SI_MEMBER(kind, "'auto', 'manual', 'crash' or 'signal'"),
    SI_MEMBER(time, "when it was taken (seconds since the epoch)"),
    SI_MEMBER(script, "the script's path"),
    SI_MEMBER(line, "line of the script being run"),
    SI_MEMBER(variables, "names of the captured variables"),
    SI_MEMBER(size, "bytes of captured data"),
    SI_MEMBER(meta, "the full metadata dict"),
    {NULL}
};

static PyType_Slot snapinfo_slots[] = {
    {Py_tp_doc, "What a snapshot is: path, name, kind, time, script, line, variables."},
    {Py_tp_dealloc, snapinfo_dealloc},
    {Py_tp_traverse, snapinfo_traverse},
    {Py_tp_clear, snapinfo_clear},
    {Py_tp_repr, snapinfo_repr},
    {Py_tp_members, snapinfo_members},
    {Py_tp_methods, snapinfo_methods},
    {0, NULL}
};

static PyType_Spec snapinfo_spec = {
    .name = "chkpt.SnapshotInfo",
    .basicsize = sizeof(SnapshotInfoObject),
    /* BASETYPE: writer.c's pending SnapshotInfo derives from it */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = snapinfo_slots,
};

/* ---- module functions ---- */

static PyObject *
mod_main(PyObject *module, PyObject *argv)
{
    return chkpt_main(module, argv);
}

static PyObject *
mod_load(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"snapshot", "names", "strict", NULL};
    PyObject *snapshot, *names = Py_None;
    int strict = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$p:load", kwlist,
                                     &snapshot, &names, &strict)) {
        return NULL;
    }
    return chkpt_load(module, snapshot, names, strict);
}

static PyObject *
mod_snapshots(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"dir", NULL};
    PyObject *dir = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:snapshots", kwlist, &dir)) {
        return NULL;
    }
    return chkpt_snapshots(module, dir);
}

static PyMethodDef module_methods[] = {
    {"main", mod_main, METH_O,
     "main(argv): the command line of `python -m chkpt`; returns the exit status."},
    {"load", (PyCFunction)(void (*)(void))mod_load, METH_VARARGS | METH_KEYWORDS,
     "load(snapshot, names=None, *, strict=False) -> dict of variables."},
    {"snapshots", (PyCFunction)(void (*)(void))mod_snapshots,
     METH_VARARGS | METH_KEYWORDS,
     "snapshots(dir=None) -> list of SnapshotInfo, oldest first."},
    {NULL}
};

/* Unloadable is defined in load.c (it owns its layout). */
extern PyType_Spec chkpt_unloadable_spec;

static int
module_exec(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    st->Checkpoint_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &checkpoint_spec, NULL);
    if (st->Checkpoint_Type == NULL
        || PyModule_AddType(module, st->Checkpoint_Type) < 0) {
        return -1;
    }
    st->SnapshotInfo_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &snapinfo_spec, NULL);
    if (st->SnapshotInfo_Type == NULL
        || PyModule_AddType(module, st->SnapshotInfo_Type) < 0) {
        return -1;
    }
    st->Unloadable_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &chkpt_unloadable_spec, NULL);
    if (st->Unloadable_Type == NULL
        || PyModule_AddType(module, st->Unloadable_Type) < 0) {
        return -1;
    }
    st->SnapshotError = PyErr_NewExceptionWithDoc(
        "chkpt.SnapshotError",
        "A snapshot is damaged, unreadable, or cannot be loaded.",
        NULL, NULL);
    if (st->SnapshotError == NULL
        || PyModule_AddObjectRef(module, "SnapshotError", st->SnapshotError) < 0) {
        return -1;
    }
    st->pickle_module = PyImport_ImportModule("pickle");
    if (st->pickle_module == NULL) {
        return -1;
    }
    st->json_module = PyImport_ImportModule("json");
    if (st->json_module == NULL) {
        return -1;
    }
    st->singleton = NULL;
    if (chkpt_load_init(module) < 0 || chkpt_capture_init(module) < 0) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "FORMAT_VERSION", CHKPT_STORE_VERSION) < 0
        || PyModule_AddIntConstant(module, "DEFAULT_FREQUENCY_MS",
                                   CHKPT_DEFAULT_FREQUENCY_MS) < 0
        || PyModule_AddIntConstant(module, "DEFAULT_MIN_OBJ_SIZE",
                                   CHKPT_DEFAULT_MIN_OBJ_SIZE) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    chkpt_state *st = chkpt_get_state(module);
    Py_VISIT(st->Checkpoint_Type);
    Py_VISIT(st->SnapshotInfo_Type);
    Py_VISIT(st->Unloadable_Type);
    Py_VISIT(st->SnapshotError);
    Py_VISIT(st->singleton);
    Py_VISIT(st->pickle_module);
    Py_VISIT(st->json_module);
    Py_VISIT(st->MappedBuffer_Type);
    Py_VISIT(st->Unpickler_Type);
    Py_VISIT(st->PickleSink_Type);
    Py_VISIT(st->load_cache);
    return 0;
}

static int
module_clear(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    Py_CLEAR(st->Checkpoint_Type);
    Py_CLEAR(st->SnapshotInfo_Type);
    Py_CLEAR(st->Unloadable_Type);
    Py_CLEAR(st->SnapshotError);
    Py_CLEAR(st->singleton);
    Py_CLEAR(st->pickle_module);
    Py_CLEAR(st->json_module);
    Py_CLEAR(st->MappedBuffer_Type);
    Py_CLEAR(st->Unpickler_Type);
    Py_CLEAR(st->PickleSink_Type);
    Py_CLEAR(st->load_cache);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL}
};

static struct PyModuleDef chkpt_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "chkpt._chkpt",
    .m_doc = "The C engine of chkpt: automatic checkpointing of Python scripts.",
    .m_size = sizeof(chkpt_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__chkpt(void)
{
    return PyModuleDef_Init(&chkpt_module_def);
}
