/* checkpoint.c: the Checkpoint type, the engine of one run as the script
 * sees it (chkpt.Checkpoint.get_global_singleton()): its settings as
 * attributes, track()/untrack()/track_library(), snapshot() and wait().
 * Its methods dispatch to capture (snapshot) and hooks (a new frequency),
 * so it sits above them (chkpt.h); the object's layout is in chkpt.h, as
 * every part reads its fields. */
#include "chkpt.h"
#include "child.h"
#include "run.h"
#include "pickler.h"

static int
checkpoint_traverse(CheckpointObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->output_dir);
    Py_VISIT(self->tracked);
    Py_VISIT(self->libraries);
    Py_VISIT(self->warned);
    Py_VISIT(self->warned_once);
    Py_VISIT(self->no_retry);
    Py_VISIT(self->script_path);
    Py_VISIT(self->script_dir);
    Py_VISIT(self->main_module);
    Py_VISIT(self->sources);
    Py_VISIT(self->deferred);
    Py_VISIT(self->start_path);
    Py_VISIT(self->ran_code);
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
    Py_CLEAR(self->warned_once);
    Py_CLEAR(self->no_retry);
    Py_CLEAR(self->script_path);
    Py_CLEAR(self->script_dir);
    Py_CLEAR(self->main_module);
    Py_CLEAR(self->sources);
    Py_CLEAR(self->deferred);
    Py_CLEAR(self->start_path);
    Py_CLEAR(self->statements);
    Py_CLEAR(self->ran_code);
    return 0;
}

static void
checkpoint_dealloc(CheckpointObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    chkpt_writer_free(self);
    chkpt_capture_store_close(self);
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
    ck->keep_auto = cli->keep_auto;
    ck->max_pickle_size = cli->max_pickle_size > 0
                          ? cli->max_pickle_size : chkpt_default_max_pickle_size();
    ck->output_dir = NULL;
    ck->tracked = PyDict_New();
    ck->libraries = PyList_New(0);
    ck->warned = PySet_New(NULL);
    ck->warned_once = PySet_New(NULL);
    ck->no_retry = PySet_New(NULL);
    ck->script_path = Py_NewRef(Py_None);
    ck->script_dir = Py_NewRef(Py_None);
    ck->main_module = Py_NewRef(Py_None);
    ck->sources = PyDict_New();
    chkpt_capture_state_init(ck);
    ck->hooks = NULL;
    ck->writer = NULL;
    ck->signal_deadline_ms = cli->signal_deadline_ms > 0
                             ? cli->signal_deadline_ms
                             : CHKPT_DEFAULT_SIGNAL_DEADLINE_MS;
    ck->signals = NULL;
    ck->start_path = NULL;
    ck->statements = NULL;
    ck->ran_code = NULL;
    ck->ran_code_partial = 0;
    PyObject_GC_Track(ck);
    if (ck->tracked == NULL || ck->libraries == NULL || ck->warned == NULL
        || ck->warned_once == NULL || ck->no_retry == NULL
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
    /* cls is Checkpoint itself (it cannot be subclassed), made by
     * PyType_FromModuleAndSpec: its module's state is at hand */
    chkpt_state *st = PyType_GetModuleState((PyTypeObject *)cls);
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
    chkpt_snapshot_request rq = {.kind = CHKPT_KIND_MANUAL, .frame = frame,
                                 .name = name};
    return chkpt_snapshot_take(self, &rq);
}

static PyObject *
checkpoint_wait(CheckpointObject *self, PyObject *Py_UNUSED(ignored))
{
    /* snapshots are written by child processes (child.c) */
    if (chkpt_writer_wait(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
checkpoint_get_frequency(CheckpointObject *self, void *Py_UNUSED(c))
{
    if (chkpt_freq_auto(self->frequency_ms)) {
        return PyUnicode_FromString("auto");
    }
    return PyLong_FromLongLong(self->frequency_ms);
}

static int
checkpoint_set_frequency(CheckpointObject *self, PyObject *v, void *Py_UNUSED(c))
{
    long long f;
    if (v != NULL && PyUnicode_Check(v)
        && PyUnicode_CompareWithASCIIString(v, "auto") == 0) {
        f = CHKPT_FREQUENCY_AUTO;
    }
    else if (v == NULL || !PyLong_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "frequency must be an int (ms; 0 "
                        "every line, -1 manual only) or 'auto'");
        return -1;
    }
    else {
        f = PyLong_AsLongLong(v);
        if (f == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (f < CHKPT_FREQUENCY_MANUAL) {
            PyErr_SetString(PyExc_ValueError, "frequency must be -1, 0, a "
                            "positive number of ms or 'auto'");
            return -1;
        }
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
    chkpt_capture_store_close(self);
    return 0;
}

static PyObject *
checkpoint_repr(CheckpointObject *self)
{
    PyObject *f = checkpoint_get_frequency(self, NULL);
    if (f == NULL) {
        return NULL;
    }
    PyObject *r = PyUnicode_FromFormat("<chkpt.Checkpoint output_dir=%R "
                                       "frequency=%R min_obj_size=%lld>",
                                       self->output_dir, f, self->min_obj_size);
    Py_DECREF(f);
    return r;
}

static PyMethodDef checkpoint_methods[] = {
    {"get_global_singleton", (PyCFunction)checkpoint_get_global_singleton,
     METH_NOARGS | METH_CLASS,
     "Return the Checkpoint of the running script; AssertionError when the "
     "script is not run under chkpt."},
    {"track", (PyCFunction)checkpoint_track, METH_O,
     "Always capture this object (by identity), whatever its size, even a "
     "function or class of the script; returns it."},
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
     "ms between automatic snapshots; 0 every line; -1 manual only; 'auto' "
     "as often as the budget allows (the default)", NULL},
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

PyType_Spec chkpt_checkpoint_spec = {
    .name = "chkpt.Checkpoint",
    .basicsize = sizeof(CheckpointObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = checkpoint_slots,
};

