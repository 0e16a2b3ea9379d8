/* module.c: the chkpt._chkpt module and nothing else: module state (PEP
 * 489 multi-phase init), the types of the other files added to it, and the
 * table of module-level functions, each a dispatch to the part it names.
 * The top of the layering (chkpt.h): it may call every part. */
#include "chkpt.h"
#include "child.h"
#include "read.h"
#include "run.h"

/* ---- module functions ---- */

/* In the running script, the snapshots it took are listed and loaded once
 * written: "the newest snapshot" is then the one it took last. */
static int
wait_for_own_snapshots(PyObject *module)
{
    PyObject *ck = chkpt_get_state(module)->singleton;
    return ck != NULL ? chkpt_writer_wait((CheckpointObject *)ck) : 0;
}

static PyObject *
mod_main(PyObject *module, PyObject *argv)
{
    return chkpt_main(module, argv);
}

static PyObject *
mod_load(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"snapshot", "names", "strict", "frame", NULL};
    PyObject *snapshot, *names = Py_None, *frame = Py_None;
    int strict = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$pO:load", kwlist,
                                     &snapshot, &names, &strict, &frame)) {
        return NULL;
    }
    if (frame != Py_None && !PyLong_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "load(): frame must be an int or None");
        return NULL;
    }
    if (wait_for_own_snapshots(module) < 0) {
        return NULL;
    }
    return chkpt_load_scope(module, snapshot, names, strict, frame);
}

static PyObject *
mod_snapshots(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"dir", NULL};
    PyObject *dir = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:snapshots", kwlist, &dir)) {
        return NULL;
    }
    if (wait_for_own_snapshots(module) < 0) {
        return NULL;
    }
    return chkpt_snapshots(module, dir);
}

static PyMethodDef module_methods[] = {
    {"main", mod_main, METH_O,
     "main(argv): the command line of `python -m chkpt`; returns the exit status."},
    {"load", (PyCFunction)(void (*)(void))mod_load, METH_VARARGS | METH_KEYWORDS,
     "load(snapshot, names=None, *, strict=False, frame=None) -> dict of "
     "variables.\n\nframe: for a crash snapshot, the index in "
     "meta['traceback'] of the frame whose locals (over its module's globals) "
     "to give; None, the failing frame."},
    {"snapshots", (PyCFunction)(void (*)(void))mod_snapshots,
     METH_VARARGS | METH_KEYWORDS,
     "snapshots(dir=None) -> list of SnapshotInfo, oldest first."},
    {NULL}
};

static int
module_exec(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    st->Checkpoint_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &chkpt_checkpoint_spec, NULL);
    if (st->Checkpoint_Type == NULL
        || PyModule_AddType(module, st->Checkpoint_Type) < 0) {
        return -1;
    }
    st->SnapshotInfo_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &chkpt_snapinfo_spec, NULL);
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
        || PyModule_AddStringConstant(module, "DEFAULT_FREQUENCY", "auto") < 0
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
    Py_VISIT(st->RebuildGroup_Type);
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
    Py_CLEAR(st->RebuildGroup_Type);
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
