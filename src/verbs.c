/* verbs.c: ls, show, explore, export, verify, gc (STUB). */
#include "chkpt.h"

#define STUB(fn) int fn(PyObject *module, chkpt_cli *cli) { \
    PyErr_SetString(PyExc_NotImplementedError, #fn); return -1; }
STUB(chkpt_verb_ls)
STUB(chkpt_verb_show)
STUB(chkpt_verb_explore)
STUB(chkpt_verb_export)
STUB(chkpt_verb_verify)
STUB(chkpt_verb_gc)
