/* cli.c: the command line of `python -m chkpt` (STUB: owned by the runner work). */
#include "chkpt.h"

void
chkpt_cli_clear(chkpt_cli *cli)
{
    Py_CLEAR(cli->output_dir);
    Py_CLEAR(cli->target);
    Py_CLEAR(cli->args);
}

PyObject *
chkpt_main(PyObject *module, PyObject *argv)
{
    PyErr_SetString(PyExc_NotImplementedError, "chkpt_main");
    return NULL;
}
