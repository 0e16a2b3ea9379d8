/* load.c: reading snapshots back, anywhere.
 *
 * A variable is one pickle stream plus its out-of-band buffers. Buffers are
 * mapped from the store (MAP_PRIVATE, writable: arrays come back writable,
 * nothing is read or copied until touched) and handed to a subclass of the
 * C unpickler whose find_class resolves the script's own names:
 *
 *   - `__main__` and the sibling modules whose source the snapshot keeps:
 *       * inside the run of that same script: the live module, so that
 *         isinstance holds and enum members are identical;
 *       * anywhere else: a module rebuilt from the saved source, executing
 *         only its definitions (imports, def, class, and assignments that
 *         build definitions or constants), each statement on its own so one
 *         failure does not stop the others. Rebuilt modules are registered
 *         in sys.modules under a private name (their classes pickle and copy)
 *         and cached per set of sources. rebuild.c does the rebuilding;
 *         this file reads the sources out of the snapshot for it.
 *   - anything else: the normal import.
 *
 * A variable that cannot be rebuilt becomes a chkpt.Unloadable stand-in
 * (one `chkpt:` warning), or SnapshotError with strict=True. Damaged bytes
 * are always a SnapshotError.
 */
#include "chkpt.h"
#include "read.h"
#include <string.h>
#include <sys/stat.h>
#include <stdarg.h>

/* ------------------------------------------------------------------ */
/* Unloadable                                                          */

typedef struct {
    PyObject_HEAD
    PyObject *name, *module, *qualname, *error;
} UnloadableObject;

static PyObject *
unloadable_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "module", "qualname", "error", NULL};
    PyObject *name, *module, *qualname, *error = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "UOO|O:Unloadable", kwlist,
                                     &name, &module, &qualname, &error)) {
        return NULL;
    }
    UnloadableObject *self = (UnloadableObject *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        return NULL;
    }
    self->name = Py_NewRef(name);
    self->module = Py_NewRef(module);
    self->qualname = Py_NewRef(qualname);
    self->error = Py_NewRef(error);
    return (PyObject *)self;
}

static int
unloadable_traverse(UnloadableObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->name);
    Py_VISIT(self->module);
    Py_VISIT(self->qualname);
    Py_VISIT(self->error);
    return 0;
}

static int
unloadable_clear(UnloadableObject *self)
{
    Py_CLEAR(self->name);
    Py_CLEAR(self->module);
    Py_CLEAR(self->qualname);
    Py_CLEAR(self->error);
    return 0;
}

static void
unloadable_dealloc(UnloadableObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    unloadable_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
unloadable_repr(UnloadableObject *self)
{
    if (self->error != Py_None) {
        return PyUnicode_FromFormat("<chkpt.Unloadable %R: %S.%S could not be "
                                    "loaded: %S>", self->name, self->module,
                                    self->qualname, self->error);
    }
    return PyUnicode_FromFormat("<chkpt.Unloadable %R: %S.%S could not be loaded>",
                                self->name, self->module, self->qualname);
}

static PyObject *
unloadable_reduce(UnloadableObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("O(OOOO)", Py_TYPE(self), self->name, self->module,
                         self->qualname, self->error);
}

static PyMethodDef unloadable_methods[] = {
    {"__reduce__", (PyCFunction)unloadable_reduce, METH_NOARGS, NULL},
    {NULL}
};

static PyMemberDef unloadable_members[] = {
    {"name", Py_T_OBJECT_EX, offsetof(UnloadableObject, name), Py_READONLY,
     "the variable's name"},
    {"module", Py_T_OBJECT_EX, offsetof(UnloadableObject, module), Py_READONLY,
     "module of the class that could not be resolved"},
    {"qualname", Py_T_OBJECT_EX, offsetof(UnloadableObject, qualname), Py_READONLY,
     "qualified name of that class"},
    {"error", Py_T_OBJECT_EX, offsetof(UnloadableObject, error), Py_READONLY,
     "why it could not be loaded (str)"},
    {NULL}
};

static PyType_Slot unloadable_slots[] = {
    {Py_tp_doc, "Unloadable(name, module, qualname, error)\n\nStands in for a "
                "variable of a snapshot that could not be rebuilt (its class's "
                "module is not installed, its __setstate__ raised, ...)."},
    {Py_tp_new, unloadable_new},
    {Py_tp_dealloc, unloadable_dealloc},
    {Py_tp_traverse, unloadable_traverse},
    {Py_tp_clear, unloadable_clear},
    {Py_tp_repr, unloadable_repr},
    {Py_tp_methods, unloadable_methods},
    {Py_tp_members, unloadable_members},
    {0, NULL}
};

PyType_Spec chkpt_unloadable_spec = {
    .name = "chkpt.Unloadable",
    .basicsize = sizeof(UnloadableObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = unloadable_slots,
};

/* ------------------------------------------------------------------ */
/* MappedBuffer: owns a mapping of one stream, exposes it writable      */

typedef struct {
    PyObject_HEAD
    void *addr;
    size_t maplen;
    Py_ssize_t len;
    Py_ssize_t exports;
    char empty[1];
} MappedBufferObject;

static int
mappedbuffer_getbuffer(MappedBufferObject *self, Py_buffer *view, int flags)
{
    void *p = self->addr ? self->addr : (void *)self->empty;
    if (PyBuffer_FillInfo(view, (PyObject *)self, p, self->len, 0, flags) < 0) {
        return -1;
    }
    self->exports++;
    return 0;
}

static void
mappedbuffer_releasebuffer(MappedBufferObject *self, Py_buffer *view)
{
    self->exports--;
}

static void
mappedbuffer_dealloc(MappedBufferObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->addr != NULL) {
        chkpt_unmap(self->addr, self->maplen);
        self->addr = NULL;
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
mappedbuffer_repr(MappedBufferObject *self)
{
    return PyUnicode_FromFormat("<chkpt.MappedBuffer %zd bytes>", self->len);
}

static PyObject *
mappedbuffer_len_get(MappedBufferObject *self, void *Py_UNUSED(c))
{
    return PyLong_FromSsize_t(self->len);
}

static PyGetSetDef mappedbuffer_getset[] = {
    {"nbytes", (getter)mappedbuffer_len_get, NULL, "length in bytes", NULL},
    {NULL}
};

static PyType_Slot mappedbuffer_slots[] = {
    {Py_tp_doc, "A stream of a snapshot mapped from the store (copy-on-write)."},
    {Py_tp_dealloc, mappedbuffer_dealloc},
    {Py_tp_repr, mappedbuffer_repr},
    {Py_tp_getset, mappedbuffer_getset},
    {Py_bf_getbuffer, mappedbuffer_getbuffer},
    {Py_bf_releasebuffer, mappedbuffer_releasebuffer},
    {0, NULL}
};

static PyType_Spec mappedbuffer_spec = {
    .name = "chkpt._chkpt.MappedBuffer",
    .basicsize = sizeof(MappedBufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = mappedbuffer_slots,
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

/* getattr along a dotted qualified name */
static PyObject *
getattr_chain(PyObject *obj, PyObject *qualname)
{
    PyObject *dot = PyUnicode_FromString(".");
    PyObject *parts = dot ? PyUnicode_Split(qualname, dot, -1) : NULL;
    Py_XDECREF(dot);
    if (parts == NULL) {
        return NULL;
    }
    PyObject *cur = Py_NewRef(obj);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        if (PyUnicode_CompareWithASCIIString(part, "<locals>") == 0) {
            PyErr_Format(PyExc_AttributeError,
                         "cannot resolve local object %R", qualname);
            Py_CLEAR(cur);
            break;
        }
        Py_SETREF(cur, PyObject_GetAttr(cur, part));
        if (cur == NULL) {
            break;
        }
    }
    Py_DECREF(parts);
    return cur;
}

static int
same_path(PyObject *a, PyObject *b)
{
    if (a == NULL || b == NULL || !PyUnicode_Check(a) || !PyUnicode_Check(b)) {
        return 0;
    }
    int r = PyUnicode_Compare(a, b) == 0;
    PyErr_Clear();
    return r;
}


/* ------------------------------------------------------------------ */
/* the load context: one per load() call                               */

/* What one load() (or one check_class) works with. It lives on the C stack
 * of that call; the Unpickler reaches it through `capsule`, set as its
 * _chkpt_ctx attribute only while it runs (None otherwise). */
typedef struct {
    chkpt_snapreader *reader;   /* the open snapshot */
    PyObject *meta;             /* its meta dict (borrowed) */
    PyObject *path;             /* its manifest path (borrowed) */
    PyObject *sources;          /* meta["sources"], or {} (owned) */
    PyObject *live;             /* {name: live module} when running that
                                   same script (owned) */
    PyObject *group;            /* the rebuild group, made on first need
                                   (owned, or NULL) */
    PyObject *failed;           /* (module, qualname, error) of the last
                                   failed find_class (owned, or NULL) */
    PyObject *capsule;          /* points here (owned) */
} load_ctx;

#define CTX_CAPSULE "chkpt.load.ctx"

static PyObject *
read_stream_bytes(PyObject *module, chkpt_snapreader *r, Py_ssize_t idx,
                  PyObject *path)
{
    if (idx < 0 || (size_t)idx >= chkpt_snap_nstreams(r)) {
        PyErr_Clear();          /* an index that did not fit: same answer */
        return chkpt_snapshot_error(module, "%S: stream %zd does not exist", path, idx);
    }
    uint64_t len = chkpt_snap_stream_len(r, (size_t)idx);
    if (len > (uint64_t)PY_SSIZE_T_MAX) {
        return chkpt_snapshot_error(module, "%S: stream %zd is too large", path, idx);
    }
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (b == NULL) {
        return NULL;
    }
    char err[CHKPT_ERRLEN] = "";
    int rc;
    char *dst = PyBytes_AS_STRING(b);
    Py_BEGIN_ALLOW_THREADS
    rc = chkpt_snap_read_stream(r, (size_t)idx, dst, err, sizeof(err));
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(b);
        return chkpt_snapshot_error(module, "%S is damaged: %s", path, err);
    }
    return b;
}

static PyObject *
map_stream(PyObject *module, chkpt_snapreader *r, Py_ssize_t idx, PyObject *path)
{
    chkpt_state *st = chkpt_get_state(module);
    if (idx < 0 || (size_t)idx >= chkpt_snap_nstreams(r)) {
        PyErr_Clear();          /* an index that did not fit: same answer */
        return chkpt_snapshot_error(module, "%S: stream %zd does not exist", path, idx);
    }
    uint64_t len = chkpt_snap_stream_len(r, (size_t)idx);
    if (len > (uint64_t)PY_SSIZE_T_MAX) {
        return chkpt_snapshot_error(module, "%S: stream %zd is too large", path, idx);
    }
    void *addr = NULL;
    size_t maplen = 0;
    char err[CHKPT_ERRLEN] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = chkpt_snap_map_stream(r, (size_t)idx, &addr, &maplen, err, sizeof(err));
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        return chkpt_snapshot_error(module, "%S is damaged: %s", path, err);
    }
    MappedBufferObject *mb = PyObject_New(MappedBufferObject, st->MappedBuffer_Type);
    if (mb == NULL) {
        if (addr != NULL) {
            chkpt_unmap(addr, maplen);
        }
        return NULL;
    }
    mb->addr = addr;
    mb->maplen = maplen;
    mb->len = (Py_ssize_t)len;
    mb->exports = 0;
    mb->empty[0] = 0;
    return (PyObject *)mb;
}

/* live modules when the running script is the snapshot's script */
static PyObject *
live_modules(PyObject *module, PyObject *meta, PyObject *sources)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *live = PyDict_New();
    if (live == NULL) {
        return NULL;
    }
    PyObject *script = chkpt_dict_get(meta, "script");
    PyObject *main = NULL;
    if (st->singleton != NULL) {
        CheckpointObject *ck = (CheckpointObject *)st->singleton;
        if (same_path(ck->script_path, script) && ck->main_module != Py_None) {
            main = ck->main_module;
        }
    }
    if (main == NULL) {
        PyObject *m = PyDict_GetItemString(PyImport_GetModuleDict(), "__main__");
        if (m != NULL && PyModule_Check(m)) {
            PyObject *f = PyModule_GetFilenameObject(m);
            if (f != NULL) {
                PyObject *osp = PyImport_ImportModule("os.path");
                PyObject *abs = osp ? PyObject_CallMethod(osp, "abspath", "O", f) : NULL;
                if (abs != NULL && same_path(abs, script)) {
                    main = m;
                }
                Py_XDECREF(abs);
                Py_XDECREF(osp);
                Py_DECREF(f);
            }
            PyErr_Clear();
        }
    }
    if (main == NULL) {
        return live;
    }
    if (PyDict_SetItemString(live, "__main__", main) < 0) {
        Py_DECREF(live);
        return NULL;
    }
    /* siblings imported by the live run from the same files */
    Py_ssize_t pos = 0;
    PyObject *name, *ent;
    while (sources != NULL && PyDict_Next(sources, &pos, &name, &ent)) {
        PyObject *m = PyDict_GetItemWithError(PyImport_GetModuleDict(), name);
        if (m == NULL || !PyModule_Check(m)) {
            PyErr_Clear();
            continue;
        }
        PyObject *f = PyModule_GetFilenameObject(m);
        if (f == NULL) {
            PyErr_Clear();
            continue;
        }
        if (same_path(f, chkpt_dict_get(ent, "path"))
            && PyDict_SetItem(live, name, m) < 0) {
            Py_DECREF(f);
            Py_DECREF(live);
            return NULL;
        }
        Py_DECREF(f);
    }
    return live;
}

/* Fills ctx for the snapshot open in r; ctx_clear undoes it (also after a
 * failure here). */
static int
ctx_init(load_ctx *ctx, PyObject *module, chkpt_snapreader *r, PyObject *meta,
         PyObject *path, PyObject *sources)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->reader = r;
    ctx->meta = meta;
    ctx->path = path;
    ctx->sources = sources ? Py_NewRef(sources) : PyDict_New();
    if (ctx->sources == NULL) {
        return -1;
    }
    ctx->live = live_modules(module, meta, sources);
    if (ctx->live == NULL) {
        return -1;
    }
    ctx->capsule = PyCapsule_New(ctx, CTX_CAPSULE, NULL);
    return ctx->capsule == NULL ? -1 : 0;
}

static void
ctx_clear(load_ctx *ctx)
{
    Py_CLEAR(ctx->sources);
    Py_CLEAR(ctx->live);
    Py_CLEAR(ctx->group);
    Py_CLEAR(ctx->failed);
    Py_CLEAR(ctx->capsule);
    ctx->reader = NULL;
}

/* The ctx of a running Unpickler, or NULL (no exception) outside a load. */
static load_ctx *
unpickler_ctx(PyObject *self)
{
    PyObject *cap = PyObject_GetAttrString(self, "_chkpt_ctx");
    if (cap == NULL) {
        PyErr_Clear();
        return NULL;
    }
    load_ctx *ctx = PyCapsule_IsValid(cap, CTX_CAPSULE)
                    ? PyCapsule_GetPointer(cap, CTX_CAPSULE) : NULL;
    Py_DECREF(cap);
    return ctx;
}

/* ------------------------------------------------------------------ */
/* the rebuild group of a snapshot's sources                           */

/* Reads the snapshot's sources into srcs {name: bytes}, paths {name: path}
 * and specs {name: spec} (for __main__ run with -m: the name its relative
 * imports start from). */
static int
read_sources(PyObject *module, load_ctx *ctx, PyObject *srcs, PyObject *paths,
             PyObject *specs)
{
    Py_ssize_t pos = 0;
    PyObject *name, *ent;
    while (PyDict_Next(ctx->sources, &pos, &name, &ent)) {
        PyObject *sidx = chkpt_dict_get(ent, "stream");
        PyObject *spath = chkpt_dict_get(ent, "path");
        if (sidx == NULL || !PyLong_Check(sidx)) {
            chkpt_snapshot_error(module, "%S: malformed source entry for %R", ctx->path,
                           name);
            return -1;
        }
        PyObject *b = read_stream_bytes(module, ctx->reader,
                                        PyLong_AsSsize_t(sidx), ctx->path);
        if (b == NULL) {
            return -1;
        }
        int rc = PyDict_SetItem(srcs, name, b);
        Py_DECREF(b);
        if (rc < 0 || PyDict_SetItem(paths, name, spath ? spath : Py_None) < 0) {
            return -1;
        }
        PyObject *spec = chkpt_dict_get(ent, "spec");
        if (spec != NULL && PyUnicode_Check(spec)
            && PyDict_SetItem(specs, name, spec) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The cache key of a group: every (name, path, spec, source), sorted. */
static PyObject *
group_key(PyObject *srcs, PyObject *paths, PyObject *specs)
{
    PyObject *items = PyList_New(0);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *b;
    while (PyDict_Next(srcs, &pos, &name, &b)) {
        PyObject *spec = PyDict_GetItem(specs, name);
        PyObject *t = PyTuple_Pack(4, name, PyDict_GetItem(paths, name),
                                   spec ? spec : Py_None, b);
        if (t == NULL || PyList_Append(items, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(items);
            return NULL;
        }
        Py_DECREF(t);
    }
    PyObject *key = PyList_Sort(items) < 0 ? NULL : PyList_AsTuple(items);
    Py_DECREF(items);
    return key;
}

/* A stable private name for a group: a digest of its names and sources. */
static PyObject *
group_tag(PyObject *key)
{
    PyObject *hashlib = PyImport_ImportModule("hashlib");
    PyObject *hobj = hashlib ? PyObject_CallMethod(hashlib, "blake2b", "()") : NULL;
    Py_XDECREF(hashlib);
    for (Py_ssize_t i = 0; hobj && i < PyTuple_GET_SIZE(key); i++) {
        PyObject *t = PyTuple_GET_ITEM(key, i);
        PyObject *rs = PyObject_Repr(PyTuple_GET_ITEM(t, 0));
        PyObject *rb = rs ? PyUnicode_AsUTF8String(rs) : NULL;
        PyObject *u1 = rb ? PyObject_CallMethod(hobj, "update", "(O)", rb) : NULL;
        PyObject *u2 = u1 ? PyObject_CallMethod(hobj, "update", "(O)",
                                                PyTuple_GET_ITEM(t, 3)) : NULL;
        Py_XDECREF(rs);
        Py_XDECREF(rb);
        Py_XDECREF(u1);
        if (u2 == NULL) {
            Py_CLEAR(hobj);
        }
        Py_XDECREF(u2);
    }
    PyObject *hex = hobj ? PyObject_CallMethod(hobj, "hexdigest", NULL) : NULL;
    Py_XDECREF(hobj);
    if (hex == NULL) {
        return NULL;
    }
    PyObject *tag = PyUnicode_Substring(hex, 0, 12);
    Py_DECREF(hex);
    return tag;
}

/* The rebuild group of this snapshot's sources (cached across loads), or
 * NULL with an exception. Borrowed from ctx. */
static PyObject *
ctx_group(PyObject *module, load_ctx *ctx)
{
    chkpt_state *st = chkpt_get_state(module);
    if (ctx->group != NULL) {
        return ctx->group;
    }
    if (ctx->reader == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "chkpt: the snapshot is closed");
        return NULL;
    }
    PyObject *srcs = PyDict_New(), *paths = PyDict_New(), *specs = PyDict_New();
    PyObject *key = NULL, *group = NULL;
    if (srcs == NULL || paths == NULL || specs == NULL
        || read_sources(module, ctx, srcs, paths, specs) < 0
        || (key = group_key(srcs, paths, specs)) == NULL) {
        goto done;
    }
    group = Py_XNewRef(PyDict_GetItemWithError(st->load_cache, key));
    if (group == NULL && !PyErr_Occurred()) {
        PyObject *tag = group_tag(key);
        group = tag ? chkpt_rebuild_group_new(module, srcs, paths, specs, tag)
                    : NULL;
        Py_XDECREF(tag);
        if (group != NULL && PyDict_SetItem(st->load_cache, key, group) < 0) {
            Py_CLEAR(group);
        }
    }
done:
    Py_XDECREF(srcs);
    Py_XDECREF(paths);
    Py_XDECREF(specs);
    Py_XDECREF(key);
    ctx->group = group;
    return group;
}

/* ------------------------------------------------------------------ */
/* find_class                                                          */

static PyObject *
resolve_in_sources(PyObject *module, load_ctx *ctx, PyObject *modname,
                   PyObject *qualname)
{
    /* live module of the running script first */
    PyObject *lm = PyDict_GetItemWithError(ctx->live, modname);
    if (lm != NULL) {
        PyObject *obj = getattr_chain(lm, qualname);
        if (obj != NULL) {
            return obj;
        }
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();          /* not defined (yet): the saved one */
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *group = ctx_group(module, ctx);
    if (group == NULL) {
        return NULL;
    }
    PyObject *m = chkpt_rebuild_module(module, group, modname);
    if (m == NULL) {
        return NULL;
    }
    PyObject *obj = getattr_chain(m, qualname);
    Py_DECREF(m);
    if (obj == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyObject *why = chkpt_rebuild_reason(module, group, modname, qualname);
        PyErr_Clear();
        if (why != NULL) {
            PyErr_Format(PyExc_ImportError, "%U.%U could not be rebuilt from the "
                         "snapshot's source: %U", modname, qualname, why);
            Py_DECREF(why);
        }
        else {
            PyErr_Format(PyExc_ImportError, "%U.%U is not defined by the "
                         "snapshot's source of %U", modname, qualname, modname);
        }
    }
    return obj;
}

/* remembers which class failed, for the stand-in; keeps the exception */
static void
remember_failure(load_ctx *ctx, PyObject *modname, PyObject *qualname)
{
    PyObject *err = chkpt_describe_pending();
    chkpt_saved_error e;
    chkpt_error_save(&e);
    PyObject *t = err ? PyTuple_Pack(3, modname, qualname, err) : NULL;
    if (t == NULL) {
        PyErr_Clear();
    }
    Py_XSETREF(ctx->failed, t);
    chkpt_error_restore(&e);
    Py_XDECREF(err);
}

/* find_class(self, module, name) of chkpt's Unpickler */
static PyObject *
unpickler_find_class(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    chkpt_state *st = chkpt_get_state(module);
    if (nargs != 3 || !PyUnicode_Check(args[1]) || !PyUnicode_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "find_class(module, name) takes two str");
        return NULL;
    }
    PyObject *self = args[0], *modname = args[1], *qualname = args[2];
    load_ctx *ctx = unpickler_ctx(self);
    PyObject *obj = NULL;
    int ours = ctx != NULL
               && PyDict_GetItemWithError(ctx->sources, modname) != NULL;
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (ours) {
        obj = resolve_in_sources(module, ctx, modname, qualname);
    }
    else if (ctx != NULL && PyUnicode_CompareWithASCIIString(modname, "__main__") == 0
             && PyDict_GetItemString(ctx->live, "__main__") == NULL) {
        PyErr_Format(PyExc_ImportError, "__main__.%U: the snapshot keeps no source "
                     "of its script", qualname);
    }
    else {
        PyObject *base = (PyObject *)st->Unpickler_Type->tp_base;
        PyObject *fc = PyObject_GetAttrString(base, "find_class");
        obj = fc ? PyObject_CallFunctionObjArgs(fc, self, modname, qualname, NULL)
                 : NULL;
        Py_XDECREF(fc);
    }
    if (obj == NULL && ctx != NULL
        && !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        remember_failure(ctx, modname, qualname);
    }
    return obj;
}

static PyMethodDef find_class_def = {
    "find_class", (PyCFunction)(void (*)(void))unpickler_find_class, METH_FASTCALL,
    "find_class(module, name): the snapshot's own classes for the script's "
    "modules (live when running that script, else rebuilt from the saved source)."
};


/* ------------------------------------------------------------------ */
/* resolving, opening                                                  */

static PyObject *
default_dir(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    if (st->singleton != NULL) {
        return Py_NewRef(((CheckpointObject *)st->singleton)->output_dir);
    }
    return PyUnicode_FromString(CHKPT_DEFAULT_OUTPUT_DIR);
}

static int
is_dir(PyObject *fs)
{
    struct stat sb;
    return stat(PyBytes_AS_STRING(fs), &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int
is_file(PyObject *fs)
{
    struct stat sb;
    return stat(PyBytes_AS_STRING(fs), &sb) == 0 && S_ISREG(sb.st_mode);
}

/* newest manifest of the store at fs; NULL with no error if it has none,
 * with SnapshotError if it cannot be listed (not a store, a newer format) */
static PyObject *
newest_in(PyObject *module, PyObject *fs)
{
    char **paths = NULL;
    size_t n = 0;
    char err[CHKPT_ERRLEN] = "";
    if (chkpt_store_list(PyBytes_AS_STRING(fs), &paths, &n, err, sizeof(err)) < 0) {
        return chkpt_snapshot_error(module, "%s: %s", PyBytes_AS_STRING(fs), err);
    }
    PyObject *r = NULL;
    if (n > 0) {
        r = PyUnicode_DecodeFSDefault(paths[n - 1]);
    }
    chkpt_free_list(paths, n);
    return r;
}

PyObject *
chkpt_resolve_snapshot(PyObject *module, PyObject *snapshot)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *p;
    if (Py_TYPE(snapshot) == st->SnapshotInfo_Type) {
        p = PyObject_GetAttrString(snapshot, "path");
    }
    else {
        p = PyOS_FSPath(snapshot);
    }
    if (p == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "a snapshot is a SnapshotInfo or a path, "
                         "not %.100s", Py_TYPE(snapshot)->tp_name);
        }
        return NULL;
    }
    if (PyBytes_Check(p)) {
        Py_SETREF(p, PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(p),
                                                      PyBytes_GET_SIZE(p)));
        if (p == NULL) {
            return NULL;
        }
    }
    PyObject *osp = PyImport_ImportModule("os.path");
    PyObject *abs = osp ? PyObject_CallMethod(osp, "abspath", "O", p) : NULL;
    Py_XDECREF(osp);
    if (abs == NULL) {
        Py_DECREF(p);
        return NULL;
    }
    PyObject *fs = PyUnicode_EncodeFSDefault(abs);
    if (fs == NULL) {
        Py_DECREF(p);
        Py_DECREF(abs);
        return NULL;
    }
    PyObject *res = NULL;
    if (is_file(fs)) {
        res = Py_NewRef(abs);
    }
    else if (is_dir(fs)) {
        res = newest_in(module, fs);
    }
    else if (PyUnicode_FindChar(p, '/', 0, PyUnicode_GET_LENGTH(p), 1) == -1) {
        /* a bare snapshot id: look in the default store */
        PyObject *d = default_dir(module);
        PyObject *cand = d ? PyUnicode_FromFormat("%U/snapshots/%U.ckpt", d, p) : NULL;
        PyObject *cfs = cand ? PyUnicode_EncodeFSDefault(cand) : NULL;
        if (cfs != NULL && is_file(cfs)) {
            osp = PyImport_ImportModule("os.path");
            res = osp ? PyObject_CallMethod(osp, "abspath", "O", cand) : NULL;
            Py_XDECREF(osp);
        }
        Py_XDECREF(d);
        Py_XDECREF(cand);
        Py_XDECREF(cfs);
        PyErr_Clear();
    }
    if (res == NULL && !PyErr_Occurred()) {
        chkpt_snapshot_error(module, "no snapshot at %U", p);
    }
    else if (res == NULL
             && !PyErr_ExceptionMatches(chkpt_get_state(module)->SnapshotError)) {
        PyErr_Clear();
        chkpt_snapshot_error(module, "no snapshot at %U", p);
    }
    Py_DECREF(p);
    Py_DECREF(abs);
    Py_DECREF(fs);
    return res;
}

/* Resolve + open + meta (for show): the reader is closed again. */
PyObject *
chkpt_load_meta(PyObject *module, PyObject *snapshot, PyObject **path_out)
{
    PyObject *path = chkpt_resolve_snapshot(module, snapshot);
    if (path == NULL) {
        return NULL;
    }
    PyObject *meta = NULL;
    chkpt_snapreader *r = chkpt_snapshot_open(module, path, &meta);
    if (r == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    chkpt_snap_close(r);
    if (path_out) {
        *path_out = path;
    }
    else {
        Py_DECREF(path);
    }
    return meta;
}

static int
check_owner(PyObject *module, PyObject *manifest)
{
    /* DIR/snapshots/<id>.ckpt -> DIR */
    PyObject *osp = PyImport_ImportModule("os.path");
    if (osp == NULL) {
        return -1;
    }
    PyObject *d1 = PyObject_CallMethod(osp, "dirname", "O", manifest);
    PyObject *d2 = d1 ? PyObject_CallMethod(osp, "dirname", "O", d1) : NULL;
    Py_DECREF(osp);
    Py_XDECREF(d1);
    PyObject *fs = d2 ? PyUnicode_EncodeFSDefault(d2) : NULL;
    Py_XDECREF(d2);
    if (fs == NULL) {
        return -1;
    }
    char err[CHKPT_ERRLEN] = "";
    int rc = chkpt_store_check_owner(PyBytes_AS_STRING(fs), err, sizeof(err));
    Py_DECREF(fs);
    if (rc < 0) {
        chkpt_snapshot_error(module, "refusing to load %U: %s", manifest, err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* load                                                                */

static PyObject *
names_filter(PyObject *names)
{
    if (names == Py_None) {
        return Py_NewRef(Py_None);
    }
    if (PyUnicode_Check(names)) {
        return Py_BuildValue("{O:O}", names, Py_True);
    }
    PyObject *d = PyDict_New();
    PyObject *it = d ? PyObject_GetIter(names) : NULL;
    if (it == NULL) {
        Py_XDECREF(d);
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_SetString(PyExc_TypeError, "names must be a list of variable names");
        }
        return NULL;
    }
    PyObject *n;
    while ((n = PyIter_Next(it)) != NULL) {
        if (!PyUnicode_Check(n)) {
            PyErr_Format(PyExc_TypeError, "names must be str, not %.100s",
                         Py_TYPE(n)->tp_name);
            Py_DECREF(n);
            Py_DECREF(it);
            Py_DECREF(d);
            return NULL;
        }
        int rc = PyDict_SetItem(d, n, Py_True);
        Py_DECREF(n);
        if (rc < 0) {
            Py_DECREF(it);
            Py_DECREF(d);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* the class a variable needed, for the stand-in: the failed find_class,
 * else the variable's own type from meta */
static void
failed_class(load_ctx *ctx, PyObject *var, PyObject **mod, PyObject **qual)
{
    PyObject *f = ctx->failed;
    if (f != NULL && PyTuple_Check(f) && PyTuple_GET_SIZE(f) == 3) {
        *mod = Py_NewRef(PyTuple_GET_ITEM(f, 0));
        *qual = Py_NewRef(PyTuple_GET_ITEM(f, 1));
        return;
    }
    PyObject *t = chkpt_dict_get(var, "type");
    PyObject *tm = chkpt_dict_get(var, "type_module");
    if (t != NULL && tm != NULL && PyUnicode_Check(t) && PyUnicode_Check(tm)
        && PyUnicode_GET_LENGTH(t) > PyUnicode_GET_LENGTH(tm)) {
        *mod = Py_NewRef(tm);
        *qual = PyUnicode_Substring(t, PyUnicode_GET_LENGTH(tm) + 1,
                                    PyUnicode_GET_LENGTH(t));
        if (*qual != NULL) {
            return;
        }
        PyErr_Clear();
        Py_CLEAR(*mod);
    }
    *mod = PyUnicode_FromString("?");
    *qual = Py_NewRef(t && PyUnicode_Check(t) ? t : Py_None);
}

/* The out-of-band buffers of a variable, mapped: a new list. */
static PyObject *
map_buffers(PyObject *module, load_ctx *ctx, PyObject *bidx)
{
    Py_ssize_t nb = bidx ? PyList_GET_SIZE(bidx) : 0;
    PyObject *buffers = PyList_New(nb);
    if (buffers == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *bi = PyList_GET_ITEM(bidx, i);
        PyObject *mb = PyLong_Check(bi)
            ? map_stream(module, ctx->reader, PyLong_AsSsize_t(bi), ctx->path)
            : chkpt_snapshot_error(module, "%U: malformed buffer entry", ctx->path);
        if (mb == NULL) {
            Py_DECREF(buffers);
            return NULL;
        }
        PyList_SET_ITEM(buffers, i, mb);
    }
    return buffers;
}

/* Runs chkpt's Unpickler over one pickle, with ctx reachable from its
 * find_class while it runs. */
static PyObject *
unpickle(PyObject *module, load_ctx *ctx, PyObject *data, PyObject *buffers)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *io = PyImport_ImportModule("io");
    PyObject *file = io ? PyObject_CallMethod(io, "BytesIO", "O", data) : NULL;
    Py_XDECREF(io);
    PyObject *up = NULL, *obj = NULL;
    if (file != NULL) {
        PyObject *args = PyTuple_Pack(1, file);
        PyObject *kw = args ? Py_BuildValue("{s:O}", "buffers", buffers) : NULL;
        up = kw ? PyObject_Call((PyObject *)st->Unpickler_Type, args, kw) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(kw);
        Py_DECREF(file);
    }
    if (up == NULL) {
        return NULL;
    }
    Py_CLEAR(ctx->failed);
    if (PyObject_SetAttrString(up, "_chkpt_ctx", ctx->capsule) == 0) {
        obj = PyObject_CallMethod(up, "load", NULL);
    }
    chkpt_saved_error e;
    chkpt_error_save(&e);
    if (PyObject_SetAttrString(up, "_chkpt_ctx", Py_None) < 0) {
        PyErr_Clear();
    }
    chkpt_error_restore(&e);
    Py_DECREF(up);
    return obj;
}

/* Loads one variable; NULL with an exception when it cannot be (*damaged
 * set when its bytes are the cause). */
static PyObject *
load_one(PyObject *module, load_ctx *ctx, PyObject *var, int *damaged)
{
    PyObject *pidx = chkpt_dict_get(var, "pickle");
    PyObject *bidx = chkpt_dict_get(var, "buffers");
    *damaged = 1;
    if (pidx == NULL || !PyLong_Check(pidx) || (bidx && !PyList_Check(bidx))) {
        return chkpt_snapshot_error(module, "%U: malformed variable entry", ctx->path);
    }
    PyObject *data = read_stream_bytes(module, ctx->reader,
                                       PyLong_AsSsize_t(pidx), ctx->path);
    if (data == NULL) {
        return NULL;
    }
    PyObject *buffers = map_buffers(module, ctx, bidx);
    if (buffers == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    *damaged = 0;
    PyObject *obj = unpickle(module, ctx, data, buffers);
    Py_DECREF(data);
    Py_DECREF(buffers);
    return obj;
}

/* The object already loaded for the variable this one is "same_as" (the
 * script bound both names to one object), or NULL: load it from its own
 * entry (which repeats the other's streams) when the other was not loaded
 * (names=). New reference; NULL with an exception only on error. */
static PyObject *
same_object(PyObject *loaded, PyObject *var)
{
    PyObject *same = chkpt_dict_get(var, "same_as");
    if (same == NULL || !PyUnicode_Check(same)) {
        return NULL;
    }
    PyObject *obj = PyDict_GetItemWithError(loaded, same);
    return Py_XNewRef(obj);
}

/* Every requested name must be a variable of the snapshot (KeyError). */
static int
check_names(PyObject *filter, PyObject *vars, PyObject *path)
{
    if (filter == Py_None) {
        return 0;
    }
    Py_ssize_t pos = 0;
    PyObject *n, *v;
    while (PyDict_Next(filter, &pos, &n, &v)) {
        int found = 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(vars) && !found; i++) {
            PyObject *vn = chkpt_dict_get(PyList_GET_ITEM(vars, i), "name");
            found = vn != NULL && PyUnicode_Check(vn) && PyUnicode_Compare(vn, n) == 0;
        }
        if (!found) {
            PyErr_Format(PyExc_KeyError, "no variable %R in snapshot %U", n, path);
            return -1;
        }
    }
    return 0;
}

/* strict=True: SnapshotError for the variable, caused by the pending
 * exception. */
static void
raise_unloadable(PyObject *module, PyObject *name, PyObject *path,
                 PyObject *mod, PyObject *qual, PyObject *err)
{
    chkpt_saved_error cause;
    chkpt_error_save(&cause);
    chkpt_snapshot_error(module, "cannot load variable %R of %U (%S.%S): %S",
                   name, path, mod, qual, err);
    chkpt_saved_error raised;
    chkpt_error_save(&raised);
    PyObject *exc = chkpt_error_value(&raised);
    PyObject *why = chkpt_error_value(&cause);
    if (exc != NULL && why != NULL) {
        PyException_SetCause(exc, Py_NewRef(why));      /* steals */
    }
    chkpt_error_discard(&cause);
    chkpt_error_restore(&raised);
}

/* A variable that did not load (the exception pending): SnapshotError with
 * strict, else a warning and its chkpt.Unloadable stand-in. */
static PyObject *
unloadable(PyObject *module, load_ctx *ctx, PyObject *var, PyObject *name,
           int strict)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *mod = NULL, *qual = NULL, *obj = NULL;
    failed_class(ctx, var, &mod, &qual);
    PyObject *err = ctx->failed && PyTuple_Check(ctx->failed)
        ? Py_NewRef(PyTuple_GET_ITEM(ctx->failed, 2))
        : chkpt_describe_pending();
    if (strict) {
        raise_unloadable(module, name, ctx->path, mod, qual, err);
    }
    else {
        PyErr_Clear();
        chkpt_warn_py("variable '%U' of %U cannot be loaded (%S.%S: %S); it is a "
                      "chkpt.Unloadable stand-in", name, ctx->path, mod, qual, err);
        obj = PyObject_CallFunction((PyObject *)st->Unloadable_Type, "OOOO", name,
                                    mod ? mod : Py_None, qual ? qual : Py_None,
                                    err ? err : Py_None);
    }
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    Py_XDECREF(err);
    return obj;
}

/* The variables of the snapshot (those in filter unless it is None) into
 * a new dict. */
static PyObject *
load_variables(PyObject *module, load_ctx *ctx, PyObject *vars,
               PyObject *filter, int strict)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(vars); i++) {
        PyObject *var = PyList_GET_ITEM(vars, i);
        PyObject *name = chkpt_dict_get(var, "name");
        if (name == NULL || !PyUnicode_Check(name)) {
            continue;
        }
        int want = filter == Py_None ? 1 : PyDict_Contains(filter, name);
        if (want <= 0) {
            if (want < 0) {
                Py_CLEAR(result);
                break;
            }
            continue;
        }
        int damaged = 0;
        PyObject *obj = same_object(result, var);
        if (obj == NULL && !PyErr_Occurred()) {
            obj = load_one(module, ctx, var, &damaged);
            if (obj == NULL && !damaged
                && !PyErr_ExceptionMatches(st->SnapshotError)
                && !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
                && !PyErr_ExceptionMatches(PyExc_MemoryError)) {
                obj = unloadable(module, ctx, var, name, strict);
            }
        }
        int rc = obj == NULL ? -1 : PyDict_SetItem(result, name, obj);
        Py_XDECREF(obj);
        if (rc < 0) {
            Py_CLEAR(result);
            break;
        }
    }
    return result;
}

/* The int at key of dict d, or -1. */
static Py_ssize_t
int_at(PyObject *d, const char *key)
{
    PyObject *v = chkpt_dict_get(d, key);
    return v && PyLong_Check(v) ? PyLong_AsSsize_t(v) : -1;
}

/* The variables of a crash snapshot's scope (chkpt_load_scope), in their
 * order: the chosen frame's locals come after, so over, its module's
 * globals. A snapshot without a traceback: all of them. New reference. */
static PyObject *
select_scope(PyObject *path, PyObject *meta, PyObject *vars, PyObject *scope)
{
    PyObject *tb = chkpt_dict_get(meta, "traceback");
    if (tb == NULL || !PyList_Check(tb)) {
        if (scope != NULL && scope != Py_None) {
            PyErr_Format(PyExc_ValueError, "%U has no frames (only crash "
                         "snapshots and Ctrl-C ones have)", path);
            return NULL;
        }
        return Py_NewRef(vars);
    }
    Py_ssize_t frame = -1;
    PyObject *mod = NULL;
    int want_locals = 1, want_globals = 1;
    if (scope == NULL || scope == Py_None) {
        frame = int_at(meta, "frame");
    }
    else if (PyLong_Check(scope)) {
        frame = PyLong_AsSsize_t(scope);
        if (frame == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    else if (PyTuple_Check(scope) && PyTuple_GET_SIZE(scope) == 2
             && PyUnicode_Check(PyTuple_GET_ITEM(scope, 0))) {
        PyObject *what = PyTuple_GET_ITEM(scope, 0);
        want_locals = PyUnicode_CompareWithASCIIString(what, "locals") == 0;
        want_globals = !want_locals;
        if (want_locals) {
            frame = PyLong_Check(PyTuple_GET_ITEM(scope, 1))
                    ? PyLong_AsSsize_t(PyTuple_GET_ITEM(scope, 1)) : -1;
        }
        else {
            mod = PyTuple_GET_ITEM(scope, 1);
        }
    }
    else {
        PyErr_SetString(PyExc_TypeError, "frame must be an int or None");
        return NULL;
    }
    if (mod == NULL) {
        PyObject *fe = frame >= 0 && frame < PyList_GET_SIZE(tb)
                       ? PyList_GET_ITEM(tb, frame) : NULL;
        if (chkpt_dict_get(fe, "saved") != Py_True) {
            PyErr_Format(PyExc_ValueError, "frame %zd of %U has no saved "
                         "variables (see its meta['traceback'])", frame, path);
            return NULL;
        }
        mod = chkpt_dict_get(fe, "module");
    }
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < PyList_GET_SIZE(vars); i++) {
        PyObject *var = PyList_GET_ITEM(vars, i);
        PyObject *g = chkpt_dict_get(var, "globals");
        Py_ssize_t f = int_at(var, "frame");
        int keep;
        if (g != NULL) {
            keep = want_globals && mod != NULL
                   && PyObject_RichCompareBool(g, mod, Py_EQ) == 1;
        }
        else if (f >= 0) {
            keep = want_locals && f == frame;
        }
        else {
            keep = 1;
        }
        if (keep && PyList_Append(out, var) < 0) {
            Py_CLEAR(out);
        }
    }
    return out;
}

PyObject *
chkpt_load(PyObject *module, PyObject *snapshot, PyObject *names, int strict)
{
    return chkpt_load_scope(module, snapshot, names, strict, NULL);
}

PyObject *
chkpt_load_scope(PyObject *module, PyObject *snapshot, PyObject *names,
                 int strict, PyObject *scope)
{
    PyObject *path = chkpt_resolve_snapshot(module, snapshot);
    if (path == NULL) {
        return NULL;
    }
    PyObject *filter = names_filter(names);
    PyObject *meta = NULL, *result = NULL, *selected = NULL;
    chkpt_snapreader *r = NULL;
    if (filter == NULL || check_owner(module, path) < 0
        || (r = chkpt_snapshot_open(module, path, &meta)) == NULL) {
        goto done;
    }
    chkpt_syspath_extend(meta);     /* modules from the script's own entries */
    PyObject *vars = chkpt_dict_get(meta, "variables");
    PyObject *sources = chkpt_dict_get(meta, "sources");
    if (vars == NULL || !PyList_Check(vars)) {
        chkpt_snapshot_error(module, "%U: the snapshot's metadata has no variables", path);
        goto done;
    }
    if (sources == NULL || !PyDict_Check(sources)) {
        sources = NULL;
    }
    /* a crash snapshot: one frame's variables */
    selected = select_scope(path, meta, vars, scope);
    if (selected == NULL) {
        goto done;
    }
    vars = selected;
    if (check_names(filter, vars, path) < 0) {
        goto done;
    }
    load_ctx ctx;
    if (ctx_init(&ctx, module, r, meta, path, sources) == 0) {
        result = load_variables(module, &ctx, vars, filter, strict);
    }
    ctx_clear(&ctx);
done:
    if (r != NULL) {
        chkpt_snap_close(r);
    }
    Py_XDECREF(meta);
    Py_XDECREF(selected);
    Py_XDECREF(filter);
    Py_DECREF(path);
    return result;
}

/* The snapshot's modules rebuilt from its sources (the same, cached ones
 * that loading its variables resolves classes in), for `debug`. */
PyObject *
chkpt_rebuilt_modules(PyObject *module, PyObject *snapshot)
{
    PyObject *path = chkpt_resolve_snapshot(module, snapshot);
    if (path == NULL) {
        return NULL;
    }
    PyObject *meta = NULL, *result = NULL;
    chkpt_snapreader *r = NULL;
    if (check_owner(module, path) < 0
        || (r = chkpt_snapshot_open(module, path, &meta)) == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    chkpt_syspath_extend(meta);
    PyObject *sources = chkpt_dict_get(meta, "sources");
    if (sources != NULL && !PyDict_Check(sources)) {
        sources = NULL;
    }
    load_ctx ctx;
    PyObject *group = NULL;
    if (ctx_init(&ctx, module, r, meta, path, sources) == 0) {
        /* never the running script's live modules: debug runs elsewhere */
        Py_SETREF(ctx.live, PyDict_New());
        group = ctx.live ? ctx_group(module, &ctx) : NULL;
        result = group ? PyDict_New() : NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *ent;
    while (result != NULL && sources != NULL && PyDict_Next(sources, &pos, &name, &ent)) {
        PyObject *m = chkpt_rebuild_module(module, group, name);
        if (m == NULL || PyDict_SetItem(result, name, m) < 0) {
            Py_XDECREF(m);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(m);
    }
    ctx_clear(&ctx);
    chkpt_snap_close(r);
    Py_XDECREF(meta);
    Py_DECREF(path);
    return result;
}

/* For check_class: is the top-level package of modname installed (or in
 * a directory the script added to sys.path)? NULL if so (or unknown), else
 * the reason. */
static PyObject *
not_installed(PyObject *meta, PyObject *modname)
{
    /* find_spec of the top-level package: nothing imported */
    PyObject *dot = PyUnicode_FromString(".");
    PyObject *parts = dot ? PyUnicode_Split(modname, dot, 1) : NULL;
    Py_XDECREF(dot);
    if (parts == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *top = PyList_GET_ITEM(parts, 0);
    PyObject *res = NULL;
    if (PyDict_GetItemWithError(PyImport_GetModuleDict(), top) == NULL) {
        PyObject *util = PyImport_ImportModule("importlib.util");
        PyObject *spec = util ? PyObject_CallMethod(util, "find_spec", "O", top)
                              : NULL;
        Py_XDECREF(util);
        if (spec == Py_None) {
            res = chkpt_syspath_missing(meta, top);
            if (res == Py_None) {
                Py_CLEAR(res);      /* found where the script found it */
            }
        }
        Py_XDECREF(spec);
    }
    PyErr_Clear();
    Py_DECREF(parts);
    return res;
}

/* For show: can this (module, qualname) be resolved, without loading any
 * variable? Returns None if yes, else the reason (str). */
PyObject *
chkpt_check_class(PyObject *module, PyObject *snapshot_path, PyObject *meta,
                  PyObject *modname, PyObject *qualname)
{
    PyObject *sources = chkpt_dict_get(meta, "sources");
    int ours = sources && PyDict_Check(sources)
               && PyDict_GetItemWithError(sources, modname) != NULL;
    PyErr_Clear();
    PyObject *res = NULL;
    if (!ours) {
        res = not_installed(meta, modname);
        return res ? res : Py_NewRef(Py_None);
    }
    /* the script's own: rebuild (definitions only) and look it up, with
     * the imports load would find */
    chkpt_syspath_extend(meta);
    PyObject *mt = NULL;
    chkpt_snapreader *r = chkpt_snapshot_open(module, snapshot_path, &mt);
    if (r == NULL) {
        PyObject *why = chkpt_describe_pending();
        PyErr_Clear();
        return why;
    }
    Py_DECREF(mt);
    load_ctx ctx;
    if (ctx_init(&ctx, module, r, meta, snapshot_path, sources) == 0) {
        PyObject *obj = resolve_in_sources(module, &ctx, modname, qualname);
        if (obj == NULL) {
            res = chkpt_describe_pending();
        }
        Py_XDECREF(obj);
    }
    ctx_clear(&ctx);
    PyErr_Clear();
    chkpt_snap_close(r);
    return res ? res : Py_NewRef(Py_None);
}


/* ------------------------------------------------------------------ */
/* listing                                                             */

PyObject *
chkpt_snapshots(PyObject *module, PyObject *dir)
{
    PyObject *d;
    int defaulted = dir == Py_None;
    if (defaulted) {
        d = default_dir(module);
    }
    else {
        d = PyOS_FSPath(dir);
        if (d != NULL && PyBytes_Check(d)) {
            Py_SETREF(d, PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(d),
                                                          PyBytes_GET_SIZE(d)));
        }
    }
    if (d == NULL) {
        return NULL;
    }
    PyObject *osp = PyImport_ImportModule("os.path");
    PyObject *abs = osp ? PyObject_CallMethod(osp, "abspath", "O", d) : NULL;
    Py_XDECREF(osp);
    Py_DECREF(d);
    if (abs == NULL) {
        return NULL;
    }
    PyObject *fs = PyUnicode_EncodeFSDefault(abs);
    if (fs == NULL) {
        Py_DECREF(abs);
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        goto done;
    }
    if (!is_dir(fs)) {
        if (!defaulted) {
            Py_CLEAR(list);
            chkpt_snapshot_error(module, "no snapshot store at %U", abs);
        }
        goto done;
    }
    char **paths = NULL;
    size_t n = 0;
    char err[CHKPT_ERRLEN] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = chkpt_store_list(PyBytes_AS_STRING(fs), &paths, &n, err, sizeof(err));
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_CLEAR(list);
        chkpt_snapshot_error(module, "%U: %s", abs, err);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *p = PyUnicode_DecodeFSDefault(paths[i]);
        if (p == NULL) {
            PyErr_Clear();
            continue;
        }
        PyObject *meta = NULL;
        chkpt_snapreader *r = chkpt_snapshot_open(module, p, &meta);
        if (r == NULL) {
            if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
                Py_DECREF(p);
                Py_CLEAR(list);
                break;
            }
            chkpt_warn_exc("skipping a damaged snapshot");
            Py_DECREF(p);
            continue;
        }
        chkpt_snap_close(r);
        PyObject *si = chkpt_snapinfo_new(module, p, meta);
        Py_DECREF(meta);
        Py_DECREF(p);
        if (si == NULL || PyList_Append(list, si) < 0) {
            Py_XDECREF(si);
            if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
                Py_CLEAR(list);
                break;
            }
            chkpt_warn_exc("skipping a damaged snapshot");
            continue;
        }
        Py_DECREF(si);
    }
    chkpt_free_list(paths, n);
done:
    Py_DECREF(fs);
    Py_DECREF(abs);
    return list;
}

/* ------------------------------------------------------------------ */
/* init                                                                */

int
chkpt_load_init(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    st->MappedBuffer_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &mappedbuffer_spec, NULL);
    if (st->MappedBuffer_Type == NULL) {
        return -1;
    }
    st->load_cache = PyDict_New();
    if (st->load_cache == NULL || chkpt_rebuild_init(module) < 0) {
        return -1;
    }
    /* Unpickler: a heap subclass of the C _pickle.Unpickler whose
     * find_class is C (bound like a method through instancemethod) */
    PyObject *cpickle = PyImport_ImportModule("_pickle");
    PyObject *base = cpickle ? PyObject_GetAttrString(cpickle, "Unpickler") : NULL;
    Py_XDECREF(cpickle);
    if (base == NULL) {
        return -1;
    }
    PyObject *fc = PyCFunction_NewEx(&find_class_def, module, NULL);
    PyObject *meth = fc ? PyInstanceMethod_New(fc) : NULL;
    Py_XDECREF(fc);
    PyObject *ns = meth ? Py_BuildValue("{s:O,s:s,s:s}", "find_class", meth,
                                        "__module__", "chkpt._chkpt", "__doc__",
                                        "Unpickler of chkpt snapshots.") : NULL;
    Py_XDECREF(meth);
    PyObject *tp = ns ? PyObject_CallFunction((PyObject *)&PyType_Type, "s(O)O",
                                              "Unpickler", base, ns) : NULL;
    Py_XDECREF(ns);
    Py_DECREF(base);
    if (tp == NULL) {
        return -1;
    }
    st->Unpickler_Type = (PyTypeObject *)tp;
    return 0;
}
