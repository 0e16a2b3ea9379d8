/* pristine.c: keeping a capture free of side effects the script could see.
 *
 * Pickling an instance of a class without __getstate__ makes copyreg cache
 * the class's slot names as `cls.__slotnames__`, a new attribute that
 * `dir(cls)` and `vars(cls)` show. Plain python would never have added it,
 * so while chkpt pickles, copyreg._slotnames is replaced by a wrapper that
 * removes the attribute again when it was not there before.
 */
#include "chkpt.h"

static PyObject *
has_own_slotnames(PyObject *cls, int *has)
{
    PyObject *dict = PyObject_GetAttrString(cls, "__dict__");
    if (dict == NULL) {
        return NULL;
    }
    *has = PyMapping_HasKeyString(dict, "__slotnames__");
    return dict;
}

static PyObject *
slotnames_uncached(PyObject *original, PyObject *cls)
{
    int before = 1;
    PyObject *dict = has_own_slotnames(cls, &before);
    if (dict == NULL) {
        PyErr_Clear();
        before = 1;         /* cannot tell: leave whatever copyreg does */
    }
    Py_XDECREF(dict);
    PyObject *names = PyObject_CallOneArg(original, cls);
    if (names != NULL && !before) {
        if (PyObject_DelAttrString(cls, "__slotnames__") < 0) {
            PyErr_Clear();
        }
    }
    return names;
}

static const PyMethodDef slotnames_def = {
    "_slotnames", (PyCFunction)slotnames_uncached, METH_O,
    "copyreg._slotnames without the cache (installed by chkpt while it pickles)"
};

int
chkpt_pristine_begin(chkpt_pristine *p)
{
    p->copyreg = NULL;
    p->original = NULL;
    p->copyreg = PyImport_ImportModule("copyreg");
    if (p->copyreg == NULL) {
        return -1;
    }
    p->original = PyObject_GetAttrString(p->copyreg, "_slotnames");
    if (p->original == NULL) {
        Py_CLEAR(p->copyreg);
        return -1;
    }
    PyObject *wrapper = PyCFunction_New((PyMethodDef *)&slotnames_def,
                                        p->original);
    if (wrapper == NULL
        || PyObject_SetAttrString(p->copyreg, "_slotnames", wrapper) < 0) {
        Py_XDECREF(wrapper);
        Py_CLEAR(p->original);
        Py_CLEAR(p->copyreg);
        return -1;
    }
    Py_DECREF(wrapper);
    return 0;
}

void
chkpt_pristine_end(chkpt_pristine *p)
{
    if (p->copyreg == NULL) {
        return;
    }
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    if (PyObject_SetAttrString(p->copyreg, "_slotnames", p->original) < 0) {
        PyErr_Clear();
    }
    chkpt_error_restore(&saved);
    Py_CLEAR(p->original);
    Py_CLEAR(p->copyreg);
}
