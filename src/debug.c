/* debug.c: `python -m chkpt debug SNAPSHOT` (written below). */
#include "chkpt.h"

int
chkpt_verb_debug(PyObject *module, chkpt_cli *cli)
{
    PyErr_SetString(PyExc_NotImplementedError, "debug");
    return -1;
}
