/* load.c: reading snapshots back (STUB). */
#include "chkpt.h"

typedef struct {
    PyObject_HEAD
} UnloadableObject;

static PyType_Slot unloadable_slots[] = {
    {0, NULL}
};

PyType_Spec chkpt_unloadable_spec = {
    .name = "chkpt.Unloadable",
    .basicsize = sizeof(UnloadableObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = unloadable_slots,
};

PyObject *
chkpt_load(PyObject *module, PyObject *snapshot, PyObject *names, int strict)
{
    PyErr_SetString(PyExc_NotImplementedError, "load");
    return NULL;
}

PyObject *
chkpt_snapshots(PyObject *module, PyObject *dir)
{
    return PyList_New(0);
}

PyObject *
chkpt_resolve_snapshot(PyObject *module, PyObject *snapshot)
{
    PyErr_SetString(PyExc_NotImplementedError, "resolve");
    return NULL;
}

int
chkpt_load_init(PyObject *module)
{
    return 0;
}
