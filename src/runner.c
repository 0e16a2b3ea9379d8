/* runner.c: runs the script exactly as `python` would (STUB). */
#include "chkpt.h"

PyObject *
chkpt_run(PyObject *module, chkpt_cli *cli)
{
    PyErr_SetString(PyExc_NotImplementedError, "chkpt_run");
    return NULL;
}
