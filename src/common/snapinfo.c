/* snapinfo.c: the SnapshotInfo type, what snapshots() lists and
 * snapshot() returns: a read-only view of one snapshot's meta document
 * (path, name, kind, time, script, line, variables, size, meta). A value
 * type; and the reading of a manifest's meta. Calls helpers and store
 * only. */
#include "chkpt.h"
#include <stdarg.h>

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
    PyObject *v = chkpt_dict_get(meta, key);
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

PyType_Spec chkpt_snapinfo_spec = {
    .name = "chkpt.SnapshotInfo",
    .basicsize = sizeof(SnapshotInfoObject),
    /* BASETYPE: child.c's pending SnapshotInfo derives from it */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = snapinfo_slots,
};

/* ------------------------------------------------------------------ */
/* reading a manifest's meta (the reader for load.c, the meta alone for
 * a snapshot child's SnapshotInfo) */

PyObject *
chkpt_snapshot_error(PyObject *module, const char *fmt, ...)
{
    chkpt_state *st = chkpt_get_state(module);
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg != NULL) {
        PyErr_SetObject(st->SnapshotError, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

chkpt_snapreader *
chkpt_snapshot_open(PyObject *module, PyObject *path, PyObject **meta_out)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *fs = PyUnicode_EncodeFSDefault(path);
    if (fs == NULL) {
        return NULL;
    }
    char err[CHKPT_ERRLEN] = "";
    chkpt_snapreader *r;
    Py_BEGIN_ALLOW_THREADS
    r = chkpt_snap_open(PyBytes_AS_STRING(fs), err, sizeof(err));
    Py_END_ALLOW_THREADS
    Py_DECREF(fs);
    if (r == NULL) {
        chkpt_snapshot_error(module, "%U: %s", path, err);
        return NULL;
    }
    size_t len = 0;
    const char *m = chkpt_snap_meta(r, &len);
    PyObject *s = m ? PyUnicode_DecodeUTF8(m, (Py_ssize_t)len, "strict") : NULL;
    PyObject *meta = s ? PyObject_CallMethod(st->json_module, "loads", "O", s) : NULL;
    Py_XDECREF(s);
    if (meta == NULL || !PyDict_Check(meta)) {
        Py_XDECREF(meta);
        PyErr_Clear();
        chkpt_snap_close(r);
        chkpt_snapshot_error(module, "%U: the snapshot's metadata is damaged", path);
        return NULL;
    }
    PyObject *fmt = PyDict_GetItemString(meta, "format");     /* borrowed */
    long version = fmt != NULL && PyLong_Check(fmt) ? PyLong_AsLong(fmt) : 0;
    PyErr_Clear();
    if (version > CHKPT_META_FORMAT) {
        Py_DECREF(meta);
        chkpt_snap_close(r);
        chkpt_snapshot_error(module, "%U: snapshot metadata format %ld is newer than this "
                       "chkpt supports (%d): upgrade chkpt", path, version,
                       CHKPT_META_FORMAT);
        return NULL;
    }
    *meta_out = meta;
    return r;
}
