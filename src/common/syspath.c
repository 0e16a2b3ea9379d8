/* syspath.c: the directories the script added to sys.path itself.
 *
 * A script that does `sys.path.insert(0, ".../lib")` imports modules a
 * fresh process cannot find. The runner notes sys.path as python set it up
 * for the script (chkpt_syspath_note_start); each snapshot records the
 * entries added since, absolute (meta "sys_path", docs/FORMAT.md); loading
 * appends those that still exist to sys.path (chkpt_syspath_extend), and
 * `show` says when the one a module needs is gone (chkpt_syspath_missing).
 * Nothing here ever fails a snapshot or a load: errors are dropped.
 */
#include "chkpt.h"

#include <sys/stat.h>

void
chkpt_syspath_note_start(CheckpointObject *ck)
{
    if (ck->start_path != NULL) {
        return;
    }
    chkpt_saved_error e;
    chkpt_error_save(&e);
    PyObject *path = PySys_GetObject("path");           /* borrowed */
    ck->start_path = path != NULL && PyList_Check(path) ? PyList_AsTuple(path)
                                                        : PyTuple_New(0);
    PyErr_Clear();
    chkpt_error_restore(&e);
}

/* The entries of sys.path that were not there when the script started,
 * made absolute, in sys.path order, each once. New list; NULL with an
 * exception on error. */
static PyObject *
added_entries(CheckpointObject *ck)
{
    PyObject *added = PyList_New(0);
    PyObject *path = PySys_GetObject("path");           /* borrowed */
    if (added == NULL || ck->start_path == NULL || path == NULL
        || !PyList_Check(path)) {
        return added;
    }
    PyObject *copy = PyList_AsTuple(path);    /* an import may change it */
    PyObject *osp = copy ? PyImport_ImportModule("os.path") : NULL;
    if (osp == NULL) {
        Py_XDECREF(copy);
        Py_DECREF(added);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(copy); i++) {
        PyObject *entry = PyTuple_GET_ITEM(copy, i);
        if (!PyUnicode_Check(entry)) {
            continue;           /* the path finder ignores them too */
        }
        int old = PySequence_Contains(ck->start_path, entry);
        PyObject *abs = old == 0 ? PyObject_CallMethod(osp, "abspath", "O", entry)
                                 : NULL;
        int dup = abs != NULL ? PySequence_Contains(added, abs) : 0;
        if (old < 0 || (old == 0 && abs == NULL) || dup < 0
            || (abs != NULL && !dup && PyList_Append(added, abs) < 0)) {
            Py_XDECREF(abs);
            Py_DECREF(copy);
            Py_DECREF(osp);
            Py_DECREF(added);
            return NULL;
        }
        Py_XDECREF(abs);
    }
    Py_DECREF(copy);
    Py_DECREF(osp);
    return added;
}

void
chkpt_syspath_meta(CheckpointObject *ck, PyObject *meta)
{
    PyObject *added = added_entries(ck);
    if (added != NULL && PyList_GET_SIZE(added) > 0
        && PyDict_SetItemString(meta, "sys_path", added) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(added);
    PyErr_Clear();              /* the snapshot goes on without the key */
}

/* meta["sys_path"] when it is a list, else NULL (borrowed, no error) */
static PyObject *
recorded(PyObject *meta)
{
    PyObject *l = meta != NULL && PyDict_Check(meta)
                  ? PyDict_GetItemString(meta, "sys_path") : NULL;
    return l != NULL && PyList_Check(l) ? l : NULL;
}

static int
exists(PyObject *entry)
{
    PyObject *fs = PyUnicode_Check(entry) ? PyUnicode_EncodeFSDefault(entry)
                                          : NULL;
    if (fs == NULL) {
        PyErr_Clear();
        return 0;
    }
    struct stat sb;
    int r = stat(PyBytes_AS_STRING(fs), &sb) == 0;
    Py_DECREF(fs);
    return r;
}

void
chkpt_syspath_extend(PyObject *meta)
{
    PyObject *dirs = recorded(meta);
    PyObject *path = PySys_GetObject("path");           /* borrowed */
    if (dirs == NULL || path == NULL || !PyList_Check(path)) {
        return;
    }
    chkpt_saved_error e;
    chkpt_error_save(&e);
    int changed = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dirs); i++) {
        PyObject *d = PyList_GET_ITEM(dirs, i);
        if (!exists(d)) {
            continue;
        }
        /* appended, not inserted: nothing the process finds already is
         * shadowed by the snapshot's directories */
        int in = PySequence_Contains(path, d);
        if (in == 0 && PyList_Append(path, d) == 0) {
            changed = 1;
        }
        PyErr_Clear();
    }
    if (changed) {
        PyObject *importlib = PyImport_ImportModule("importlib");
        PyObject *r = importlib ? PyObject_CallMethod(importlib, "invalidate_caches",
                                                      NULL) : NULL;
        Py_XDECREF(r);
        Py_XDECREF(importlib);
    }
    PyErr_Clear();
    chkpt_error_restore(&e);
}

PyObject *
chkpt_syspath_missing(PyObject *meta, PyObject *top)
{
    PyObject *dirs = recorded(meta);
    PyObject *gone = PyList_New(0);
    PyObject *here = PyList_New(0);
    if (gone == NULL || here == NULL) {
        Py_XDECREF(gone);
        Py_XDECREF(here);
        return NULL;
    }
    for (Py_ssize_t i = 0; dirs != NULL && i < PyList_GET_SIZE(dirs); i++) {
        PyObject *d = PyList_GET_ITEM(dirs, i);
        if (PyUnicode_Check(d) && PyList_Append(exists(d) ? here : gone, d) < 0) {
            Py_DECREF(gone);
            Py_DECREF(here);
            return NULL;
        }
    }
    PyObject *res = NULL;
    if (PyList_GET_SIZE(here) > 0) {
        /* found there? (a spec only: nothing is imported) */
        PyObject *mach = PyImport_ImportModule("importlib.machinery");
        PyObject *finder = mach ? PyObject_GetAttrString(mach, "PathFinder") : NULL;
        PyObject *spec = finder ? PyObject_CallMethod(finder, "find_spec", "OO",
                                                      top, here) : NULL;
        Py_XDECREF(mach);
        Py_XDECREF(finder);
        if (spec != NULL && spec != Py_None) {
            res = Py_NewRef(Py_None);
        }
        Py_XDECREF(spec);
        PyErr_Clear();
    }
    if (res == NULL && PyList_GET_SIZE(gone) > 0) {
        PyObject *sep = PyUnicode_FromString(", ");
        PyObject *j = sep ? PyUnicode_Join(sep, gone) : NULL;
        Py_XDECREF(sep);
        res = j ? PyUnicode_FromFormat(
            "module %R is not installed, and the director%s the script added to "
            "sys.path (%U) %s", top, PyList_GET_SIZE(gone) > 1 ? "ies" : "y", j,
            PyList_GET_SIZE(gone) > 1 ? "are gone" : "is gone") : NULL;
        Py_XDECREF(j);
    }
    else if (res == NULL) {
        res = PyUnicode_FromFormat("module %R is not installed", top);
    }
    Py_DECREF(gone);
    Py_DECREF(here);
    return res;
}
