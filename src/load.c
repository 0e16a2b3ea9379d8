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
 *         and cached per set of sources.
 *   - anything else: the normal import.
 *
 * A variable that cannot be rebuilt becomes a chkpt.Unloadable stand-in
 * (one `chkpt:` warning), or SnapshotError with strict=True. Damaged bytes
 * are always a SnapshotError.
 */
#include "chkpt.h"
#include <string.h>
#include <sys/stat.h>
#include <stdarg.h>


#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* the newest snapshot metadata format this reader knows (capture.c writes it) */
#define LOAD_META_FORMAT 1

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

static PyObject *
snapshot_error(PyObject *module, const char *fmt, ...)
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

static PyObject *
dict_get(PyObject *d, const char *key)
{
    if (d == NULL || !PyDict_Check(d)) {
        return NULL;
    }
    return PyDict_GetItemString(d, key);     /* borrowed */
}

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
/* rebuilding the script's modules from saved sources                   */

/* A "group" is a dict shared by the modules rebuilt from one set of
 * sources:
 *   "sources": {name: bytes}, "paths": {name: path}, "tag": str,
 *   "modules": {name: module}, "errors": {name: [(lineno, names, error)]},
 *   "import": the __import__ of the rebuilt modules */

typedef struct {
    PyObject *ast;
} astctx;

static int
is_node(astctx *a, PyObject *node, const char *cls)
{
    PyObject *t = PyObject_GetAttrString(a->ast, cls);
    if (t == NULL) {
        PyErr_Clear();
        return 0;              /* e.g. ast.TypeAlias before 3.12 */
    }
    int r = PyObject_IsInstance(node, t);
    Py_DECREF(t);
    if (r < 0) {
        PyErr_Clear();
        return 0;
    }
    return r;
}

static PyObject *
node_attr(PyObject *node, const char *attr)
{
    PyObject *v = PyObject_GetAttrString(node, attr);
    if (v == NULL) {
        PyErr_Clear();
    }
    return v;
}

static const char *const factories[] = {
    "namedtuple", "NamedTuple", "Enum", "IntEnum", "StrEnum", "Flag", "IntFlag",
    "TypeVar", "ParamSpec", "TypeVarTuple", "NewType", "TypedDict",
    "make_dataclass", "compile", "getLogger", "object", "frozenset", "tuple",
    "dict", "set", "list", "field", "auto", NULL
};

static int is_def_value(astctx *a, PyObject *v);

static int
all_def_values(astctx *a, PyObject *seq)
{
    if (seq == NULL || !PyList_Check(seq)) {
        return seq == NULL || seq == Py_None;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(seq); i++) {
        PyObject *e = PyList_GET_ITEM(seq, i);
        if (e != Py_None && !is_def_value(a, e)) {
            return 0;
        }
    }
    return 1;
}

static int
is_numeric(astctx *a, PyObject *v)
{
    if (is_node(a, v, "Constant")) {
        PyObject *c = node_attr(v, "value");
        int r = c != NULL && (PyLong_Check(c) || PyFloat_Check(c)) && !PyBool_Check(c);
        Py_XDECREF(c);
        return r;
    }
    if (is_node(a, v, "UnaryOp")) {
        PyObject *o = node_attr(v, "operand");
        int r = o != NULL && is_numeric(a, o);
        Py_XDECREF(o);
        return r;
    }
    return 0;
}

static long long
small_int_constant(astctx *a, PyObject *v)
{
    if (!is_node(a, v, "Constant")) {
        return -1;
    }
    PyObject *c = node_attr(v, "value");
    long long r = -1;
    if (c != NULL && PyLong_Check(c)) {
        int overflow;
        r = PyLong_AsLongLongAndOverflow(c, &overflow);
        if (overflow || r < 0) {
            r = -1;
        }
    }
    PyErr_Clear();
    Py_XDECREF(c);
    return r;
}

/* Is this expression cheap and definition-like (no arbitrary work)? */
static int
is_def_value(astctx *a, PyObject *v)
{
    int r = 0;
    if (is_node(a, v, "Constant") || is_node(a, v, "Name") || is_node(a, v, "Lambda")) {
        return 1;
    }
    if (is_node(a, v, "Attribute")) {
        PyObject *b = node_attr(v, "value");
        r = b != NULL && is_def_value(a, b);
        Py_XDECREF(b);
        return r;
    }
    if (is_node(a, v, "Subscript")) {
        PyObject *b = node_attr(v, "value"), *s = node_attr(v, "slice");
        r = b && s && is_def_value(a, b) && is_def_value(a, s);
        Py_XDECREF(b);
        Py_XDECREF(s);
        return r;
    }
    if (is_node(a, v, "Tuple") || is_node(a, v, "List") || is_node(a, v, "Set")) {
        PyObject *e = node_attr(v, "elts");
        r = e != NULL && all_def_values(a, e);
        Py_XDECREF(e);
        return r;
    }
    if (is_node(a, v, "Dict")) {
        PyObject *k = node_attr(v, "keys"), *e = node_attr(v, "values");
        r = k && e && all_def_values(a, k) && all_def_values(a, e);
        Py_XDECREF(k);
        Py_XDECREF(e);
        return r;
    }
    if (is_node(a, v, "UnaryOp")) {
        PyObject *o = node_attr(v, "operand");
        r = o != NULL && is_def_value(a, o);
        Py_XDECREF(o);
        return r;
    }
    if (is_node(a, v, "BinOp")) {
        PyObject *l = node_attr(v, "left"), *rt = node_attr(v, "right");
        PyObject *op = node_attr(v, "op");
        if (l && rt && op && is_def_value(a, l) && is_def_value(a, rt)) {
            if (is_node(a, op, "Mult")) {
                r = is_numeric(a, l) && is_numeric(a, rt);
            }
            else if (is_node(a, op, "Pow") || is_node(a, op, "LShift")) {
                long long e = small_int_constant(a, rt);
                r = is_numeric(a, l) && e >= 0 && e <= 128;
            }
            else {
                r = 1;          /* +, -, /, //, %, |, &, ^, >> */
            }
        }
        Py_XDECREF(l);
        Py_XDECREF(rt);
        Py_XDECREF(op);
        return r;
    }
    if (is_node(a, v, "Call")) {
        PyObject *f = node_attr(v, "func");
        PyObject *fname = NULL;
        if (f != NULL) {
            fname = is_node(a, f, "Name") ? node_attr(f, "id")
                    : is_node(a, f, "Attribute") ? node_attr(f, "attr") : NULL;
        }
        int known = 0;
        if (fname != NULL && PyUnicode_Check(fname)) {
            for (int i = 0; factories[i] && !known; i++) {
                known = PyUnicode_CompareWithASCIIString(fname, factories[i]) == 0;
            }
        }
        if (known && is_node(a, f, "Attribute")) {
            PyObject *b = node_attr(f, "value");
            known = b != NULL && is_def_value(a, b);
            Py_XDECREF(b);
        }
        Py_XDECREF(f);
        Py_XDECREF(fname);
        if (!known) {
            return 0;
        }
        PyObject *args = node_attr(v, "args"), *kws = node_attr(v, "keywords");
        r = args && kws && all_def_values(a, args);
        for (Py_ssize_t i = 0; r && kws && i < PyList_GET_SIZE(kws); i++) {
            PyObject *kv = node_attr(PyList_GET_ITEM(kws, i), "value");
            r = kv != NULL && is_def_value(a, kv);
            Py_XDECREF(kv);
        }
        Py_XDECREF(args);
        Py_XDECREF(kws);
        return r;
    }
    if (is_node(a, v, "Starred")) {
        PyObject *o = node_attr(v, "value");
        r = o != NULL && is_def_value(a, o);
        Py_XDECREF(o);
        return r;
    }
    return 0;
}

static int
is_def_target(astctx *a, PyObject *t)
{
    if (is_node(a, t, "Name")) {
        return 1;
    }
    if (is_node(a, t, "Tuple") || is_node(a, t, "List")) {
        PyObject *e = node_attr(t, "elts");
        int r = e != NULL && PyList_Check(e);
        for (Py_ssize_t i = 0; r && i < PyList_GET_SIZE(e); i++) {
            r = is_def_target(a, PyList_GET_ITEM(e, i));
        }
        Py_XDECREF(e);
        return r;
    }
    if (is_node(a, t, "Attribute") || is_node(a, t, "Subscript")) {
        return is_def_value(a, t);
    }
    return 0;
}

static int is_def_stmt(astctx *a, PyObject *s);

static int
all_def_stmts(astctx *a, PyObject *body)
{
    if (body == NULL || !PyList_Check(body)) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        if (!is_def_stmt(a, PyList_GET_ITEM(body, i))) {
            return 0;
        }
    }
    return 1;
}

static int
body_attr_defs(astctx *a, PyObject *node, const char *attr)
{
    PyObject *b = node_attr(node, attr);
    int r = b != NULL && all_def_stmts(a, b);
    Py_XDECREF(b);
    return r;
}

static int
is_main_guard(astctx *a, PyObject *test)
{
    if (!is_node(a, test, "Compare")) {
        return 0;
    }
    PyObject *src = PyObject_CallMethod(a->ast, "unparse", "O", test);
    if (src == NULL) {
        PyErr_Clear();
        return 0;
    }
    int r = PyUnicode_Check(src)
            && (PyUnicode_CompareWithASCIIString(src, "__name__ == '__main__'") == 0
                || PyUnicode_CompareWithASCIIString(src, "'__main__' == __name__") == 0);
    Py_DECREF(src);
    return r;
}

static int
has_call(astctx *a, PyObject *expr)
{
    PyObject *it = PyObject_CallMethod(a->ast, "walk", "O", expr);
    if (it == NULL) {
        PyErr_Clear();
        return 1;
    }
    PyObject *iter = PyObject_GetIter(it);
    Py_DECREF(it);
    if (iter == NULL) {
        PyErr_Clear();
        return 1;
    }
    PyObject *n;
    int found = 0;
    while (!found && (n = PyIter_Next(iter)) != NULL) {
        found = is_node(a, n, "Call");
        Py_DECREF(n);
    }
    Py_DECREF(iter);
    PyErr_Clear();
    return found;
}

/* Statements kept when rebuilding: the ones that only define things. */
static int
is_def_stmt(astctx *a, PyObject *s)
{
    if (is_node(a, s, "Import") || is_node(a, s, "ImportFrom")
        || is_node(a, s, "FunctionDef") || is_node(a, s, "AsyncFunctionDef")
        || is_node(a, s, "ClassDef") || is_node(a, s, "TypeAlias")
        || is_node(a, s, "Pass")) {
        return 1;
    }
    if (is_node(a, s, "Assign")) {
        PyObject *ts = node_attr(s, "targets"), *v = node_attr(s, "value");
        int r = ts && v && PyList_Check(ts) && is_def_value(a, v);
        for (Py_ssize_t i = 0; r && i < PyList_GET_SIZE(ts); i++) {
            r = is_def_target(a, PyList_GET_ITEM(ts, i));
        }
        Py_XDECREF(ts);
        Py_XDECREF(v);
        return r;
    }
    if (is_node(a, s, "AnnAssign")) {
        PyObject *t = node_attr(s, "target"), *v = node_attr(s, "value");
        int r = t && is_def_target(a, t) && (v == NULL || v == Py_None
                                             || is_def_value(a, v));
        Py_XDECREF(t);
        Py_XDECREF(v);
        return r;
    }
    if (is_node(a, s, "Try") || is_node(a, s, "TryStar")) {
        if (!body_attr_defs(a, s, "body") || !body_attr_defs(a, s, "orelse")
            || !body_attr_defs(a, s, "finalbody")) {
            return 0;
        }
        PyObject *hs = node_attr(s, "handlers");
        int r = hs != NULL && PyList_Check(hs);
        for (Py_ssize_t i = 0; r && i < PyList_GET_SIZE(hs); i++) {
            r = body_attr_defs(a, PyList_GET_ITEM(hs, i), "body");
        }
        Py_XDECREF(hs);
        return r;
    }
    if (is_node(a, s, "If")) {
        PyObject *test = node_attr(s, "test");
        int r = test && !is_main_guard(a, test) && !has_call(a, test)
                && body_attr_defs(a, s, "body") && body_attr_defs(a, s, "orelse");
        Py_XDECREF(test);
        return r;
    }
    return 0;
}

/* names a statement defines, for error messages ("Point", "np", ...) */
static PyObject *
stmt_names(PyObject *s)
{
    PyObject *r = PyList_New(0);
    if (r == NULL) {
        return NULL;
    }
    PyObject *n = node_attr(s, "name");
    if (n != NULL && PyUnicode_Check(n)) {
        if (PyList_Append(r, n) < 0) {
            PyErr_Clear();
        }
    }
    Py_XDECREF(n);
    PyObject *lst = node_attr(s, "names");        /* import aliases */
    if (lst == NULL) {
        lst = node_attr(s, "targets");
    }
    if (lst == NULL) {
        PyObject *t = node_attr(s, "target");
        if (t != NULL) {
            lst = PyList_New(0);
            if (lst != NULL && PyList_Append(lst, t) < 0) {
                Py_CLEAR(lst);
            }
            Py_DECREF(t);
        }
    }
    if (lst != NULL && PyList_Check(lst)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lst); i++) {
            PyObject *it = PyList_GET_ITEM(lst, i);
            PyObject *x = node_attr(it, "asname");
            if (x == NULL || x == Py_None) {
                Py_XDECREF(x);
                x = node_attr(it, "name");
            }
            if (x == NULL || x == Py_None) {
                Py_XDECREF(x);
                x = node_attr(it, "id");
            }
            if (x != NULL && PyUnicode_Check(x)) {
                /* `import a.b` binds a */
                PyObject *dot = PyUnicode_FromString(".");
                PyObject *parts = dot ? PyUnicode_Split(x, dot, 1) : NULL;
                Py_XDECREF(dot);
                if (parts != NULL && PyList_GET_SIZE(parts) > 0) {
                    if (PyList_Append(r, PyList_GET_ITEM(parts, 0)) < 0) {
                        PyErr_Clear();      /* names are for messages only */
                    }
                }
                Py_XDECREF(parts);
            }
            Py_XDECREF(x);
        }
    }
    Py_XDECREF(lst);
    PyErr_Clear();
    return r;
}

static PyObject *rebuild_module(PyObject *module, PyObject *group, PyObject *name);

static int
in_sources(PyObject *group, PyObject *name)
{
    PyObject *srcs = dict_get(group, "sources");
    if (srcs == NULL || PyUnicode_CompareWithASCIIString(name, "__main__") == 0) {
        return 0;
    }
    return PyDict_Contains(srcs, name);
}

/* The package a rebuilt module's relative imports start from: its spec
 * name (for __main__ run with -m, the recorded spec; for a sibling, its
 * name), itself when it is a package's __init__. */
static PyObject *
rebuilt_package(PyObject *group, PyObject *globals)
{
    PyObject *orig = globals && PyDict_Check(globals)
                     ? PyDict_GetItemString(globals, "__chkpt_source_module__") : NULL;
    if (orig == NULL) {
        return NULL;
    }
    PyObject *specs = dict_get(group, "specs");
    PyObject *spec = specs ? PyDict_GetItemWithError(specs, orig) : NULL;
    if (spec == NULL || !PyUnicode_Check(spec)) {
        PyErr_Clear();
        spec = orig;
    }
    PyObject *paths = dict_get(group, "paths");
    PyObject *path = paths ? PyDict_GetItemWithError(paths, orig) : NULL;
    int is_pkg = 0;
    if (path != NULL && PyUnicode_Check(path)) {
        PyObject *suffix = PyUnicode_FromString("/__init__.py");
        is_pkg = suffix && PyUnicode_Tailmatch(path, suffix, 0,
                                               PyUnicode_GET_LENGTH(path), 1) == 1;
        Py_XDECREF(suffix);
    }
    PyErr_Clear();
    if (is_pkg) {
        return Py_NewRef(spec);
    }
    Py_ssize_t dot = PyUnicode_FindChar(spec, '.', 0, PyUnicode_GET_LENGTH(spec), -1);
    if (dot < 0) {
        return NULL;          /* a top-level module: no package */
    }
    return PyUnicode_Substring(spec, 0, dot);
}

/* Module `abs` of the group for an import statement: rebuilt, or NULL
 * without an exception when the group does not have it. */
static PyObject *
group_module(PyObject *module, PyObject *group, PyObject *abs)
{
    int has = in_sources(group, abs);
    if (has <= 0) {
        return NULL;
    }
    return rebuild_module(module, group, abs);
}

/* __import__ of rebuilt modules: the group's own modules first (absolute,
 * and relative against the module's original package), else the
 * interpreter's import (PyImport_ImportModuleLevelObject is what
 * builtins.__import__ runs; going through builtins would come back here). */
static PyObject *
rebuilt_import(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"name", "globals", "locals", "fromlist", "level", NULL};
    PyObject *name, *globals = NULL, *locals = NULL, *fromlist = NULL;
    int level = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|OOOi:__import__", kwlist,
                                     &name, &globals, &locals, &fromlist, &level)) {
        return NULL;
    }
    /* self = (chkpt module, group) */
    PyObject *module = PyTuple_GET_ITEM(self, 0);
    PyObject *group = PyTuple_GET_ITEM(self, 1);
    int has_from = fromlist != NULL && fromlist != Py_None
                   && PyObject_IsTrue(fromlist) == 1;
    PyErr_Clear();
    PyObject *abs = NULL;
    if (level > 0) {
        PyObject *pkg = rebuilt_package(group, globals);
        if (pkg == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            PyErr_SetString(PyExc_ImportError, "attempted relative import with no "
                            "known parent package");
            return NULL;
        }
        Py_ssize_t cut = PyUnicode_GET_LENGTH(pkg);
        for (int l = 1; l < level && cut >= 0; l++) {
            cut = PyUnicode_FindChar(pkg, '.', 0, cut, -1);
        }
        if (cut < 0) {
            Py_DECREF(pkg);
            PyErr_SetString(PyExc_ImportError, "attempted relative import beyond "
                            "top-level package");
            return NULL;
        }
        PyObject *base = PyUnicode_Substring(pkg, 0, cut);
        Py_DECREF(pkg);
        if (base == NULL) {
            return NULL;
        }
        abs = PyUnicode_GET_LENGTH(name) ? PyUnicode_FromFormat("%U.%U", base, name)
                                         : Py_NewRef(base);
        Py_DECREF(base);
        if (abs == NULL) {
            return NULL;
        }
    }
    else {
        abs = Py_NewRef(name);
    }
    PyObject *r = NULL;
    if (level > 0 && PyUnicode_GET_LENGTH(name) == 0 && has_from) {
        /* from . import a, b: the package with the group's submodules set */
        r = group_module(module, group, abs);
        if (r == NULL && !PyErr_Occurred()) {
            r = PyModule_NewObject(abs);
        }
        PyObject *it = r ? PyObject_GetIter(fromlist) : NULL;
        PyObject *item;
        while (it != NULL && (item = PyIter_Next(it)) != NULL) {
            PyObject *sub = PyUnicode_Check(item)
                ? PyUnicode_FromFormat("%U.%U", abs, item) : NULL;
            PyObject *m = sub ? group_module(module, group, sub) : NULL;
            if (m == NULL && !PyErr_Occurred() && sub != NULL) {
                /* not the snapshot's: the interpreter's */
                m = PyImport_ImportModule(PyUnicode_AsUTF8(sub));
            }
            int bad = m == NULL || PyObject_SetAttr(r, item, m) < 0;
            Py_XDECREF(m);
            Py_XDECREF(sub);
            Py_DECREF(item);
            if (bad) {
                Py_CLEAR(r);
                break;
            }
        }
        Py_XDECREF(it);
        if (r != NULL && PyErr_Occurred()) {
            Py_CLEAR(r);
        }
        Py_DECREF(abs);
        return r;
    }
    Py_ssize_t dot = PyUnicode_FindChar(abs, '.', 0, PyUnicode_GET_LENGTH(abs), 1);
    if (dot >= 0 && !has_from && level == 0) {
        /* import a.b: binds a, with a.b set */
        PyObject *top = PyUnicode_Substring(abs, 0, dot);
        PyObject *sub = top ? group_module(module, group, abs) : NULL;
        if (sub != NULL) {
            PyObject *t = group_module(module, group, top);
            if (t == NULL && !PyErr_Occurred()) {
                t = PyImport_Import(top);
            }
            PyObject *attr = t ? PyUnicode_Substring(abs, dot + 1,
                                                     PyUnicode_GET_LENGTH(abs)) : NULL;
            if (attr != NULL && PyUnicode_FindChar(attr, '.', 0,
                                                   PyUnicode_GET_LENGTH(attr), 1) == -1
                && PyObject_SetAttr(t, attr, sub) == 0) {
                r = Py_NewRef(t);
            }
            Py_XDECREF(attr);
            Py_XDECREF(t);
            Py_DECREF(sub);
        }
        Py_XDECREF(top);
        if (r != NULL || PyErr_Occurred()) {
            Py_DECREF(abs);
            return r;
        }
    }
    else {
        r = group_module(module, group, abs);
        if (r != NULL || PyErr_Occurred()) {
            Py_DECREF(abs);
            return r;
        }
    }
    r = PyImport_ImportModuleLevelObject(abs, globals, locals, fromlist, 0);
    Py_DECREF(abs);
    return r;
}

static PyMethodDef rebuilt_import_def = {
    "__import__", (PyCFunction)(void (*)(void))rebuilt_import,
    METH_VARARGS | METH_KEYWORDS,
    "__import__ of a module rebuilt by chkpt: the snapshot's own modules first."
};

static int
record_error(PyObject *group, PyObject *name, PyObject *lineno, PyObject *names,
             PyObject *err)
{
    PyObject *errors = dict_get(group, "errors");
    if (errors == NULL) {
        return 0;
    }
    PyObject *lst = PyDict_GetItemWithError(errors, name);
    if (lst == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        lst = PyList_New(0);
        if (lst == NULL || PyDict_SetItem(errors, name, lst) < 0) {
            Py_XDECREF(lst);
            return -1;
        }
        Py_DECREF(lst);
    }
    PyObject *t = PyTuple_Pack(3, lineno ? lineno : Py_None, names ? names : Py_None,
                               err ? err : Py_None);
    if (t == NULL) {
        return -1;
    }
    int r = PyList_Append(lst, t);
    Py_DECREF(t);
    return r;
}

/* Runs the definitions of source `name` of the group in a fresh module
 * registered in sys.modules under a private name. Returns a new reference. */
static PyObject *
rebuild_module(PyObject *module, PyObject *group, PyObject *name)
{
    PyObject *mods = dict_get(group, "modules");
    PyObject *srcs = dict_get(group, "sources");
    PyObject *paths = dict_get(group, "paths");
    PyObject *tag = dict_get(group, "tag");
    PyObject *imp = dict_get(group, "import");
    if (!mods || !srcs || !paths || !tag || !imp) {
        PyErr_SetString(PyExc_RuntimeError, "chkpt: malformed rebuild group");
        return NULL;
    }
    PyObject *m = PyDict_GetItemWithError(mods, name);
    if (m != NULL) {
        return Py_NewRef(m);      /* done, or being built (circular import) */
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *src = PyDict_GetItemWithError(srcs, name);
    if (src == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ImportError, "the snapshot has no source for %R", name);
        }
        return NULL;
    }
    PyObject *path = PyDict_GetItemWithError(paths, name);
    if (path == NULL && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *safe = PyObject_CallMethod(name, "replace", "ss", ".", "_");
    if (safe == NULL) {
        return NULL;
    }
    PyObject *private = PyUnicode_FromFormat("_chkpt_snap_%U_%U", tag, safe);
    Py_DECREF(safe);
    if (private == NULL) {
        return NULL;
    }
    PyObject *filename = PyUnicode_FromFormat("<chkpt snapshot of %S>",
                                              path ? path : name);
    PyObject *result = NULL, *ast = NULL, *tree = NULL, *body = NULL;
    PyObject *builtins_copy = NULL, *compile = NULL, *exec = NULL;
    PyObject *mod = NULL, *gdict = NULL;
    if (filename == NULL) {
        goto done;
    }
    mod = PyModule_NewObject(private);
    if (mod == NULL) {
        goto done;
    }
    gdict = PyModule_GetDict(mod);           /* borrowed */
    PyObject *bmod = PyImport_ImportModule("builtins");
    if (bmod == NULL) {
        goto done;
    }
    builtins_copy = PyDict_Copy(PyModule_GetDict(bmod));
    compile = PyObject_GetAttrString(bmod, "compile");
    exec = PyObject_GetAttrString(bmod, "exec");
    Py_DECREF(bmod);
    if (builtins_copy == NULL || compile == NULL || exec == NULL
        || PyDict_SetItemString(builtins_copy, "__import__", imp) < 0
        || PyDict_SetItemString(gdict, "__builtins__", builtins_copy) < 0
        || PyDict_SetItemString(gdict, "__file__", path ? path : Py_None) < 0
        || PyDict_SetItemString(gdict, "__chkpt_source_module__", name) < 0
        || PyDict_SetItem(PyImport_GetModuleDict(), private, mod) < 0
        || PyDict_SetItem(mods, name, mod) < 0) {
        goto done;
    }
    /* tracebacks and inspect can show the saved source */
    PyObject *linecache = PyImport_ImportModule("linecache");
    if (linecache != NULL) {
        PyObject *cache = PyObject_GetAttrString(linecache, "cache");
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(src),
                                              PyBytes_GET_SIZE(src), "replace");
        PyObject *lines = text ? PyObject_CallMethod(text, "splitlines", "O",
                                                     Py_True) : NULL;
        PyObject *entry = lines ? Py_BuildValue("(nOOO)", PyBytes_GET_SIZE(src),
                                                Py_None, lines, filename) : NULL;
        if (cache == NULL || entry == NULL
            || PyObject_SetItem(cache, filename, entry) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(cache);
        Py_XDECREF(text);
        Py_XDECREF(lines);
        Py_XDECREF(entry);
        Py_DECREF(linecache);
    }
    PyErr_Clear();

    ast = PyImport_ImportModule("ast");
    if (ast == NULL) {
        goto done;
    }
    tree = PyObject_CallMethod(ast, "parse", "OO", src, filename);
    if (tree == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            goto done;
        }
        PyObject *err = chkpt_describe_pending();
        PyErr_Clear();
        if (record_error(group, name, NULL, NULL, err) < 0) {
            Py_XDECREF(err);
            goto done;
        }
        Py_XDECREF(err);
        result = Py_NewRef(mod);       /* empty: every class will be missing */
        goto done;
    }
    body = PyObject_GetAttrString(tree, "body");
    if (body == NULL || !PyList_Check(body)) {
        goto done;
    }
    astctx a = {ast};
    /* __future__ flags apply to every statement */
    long flags = 0;
    PyObject *future = PyImport_ImportModule("__future__");
    if (future == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *s = PyList_GET_ITEM(body, i);
        if (!is_node(&a, s, "ImportFrom")) {
            continue;
        }
        PyObject *mname = node_attr(s, "module");
        int is_future = mname && PyUnicode_Check(mname)
                        && PyUnicode_CompareWithASCIIString(mname, "__future__") == 0;
        Py_XDECREF(mname);
        if (!is_future) {
            continue;
        }
        PyObject *aliases = node_attr(s, "names");
        for (Py_ssize_t k = 0; aliases && k < PyList_GET_SIZE(aliases); k++) {
            PyObject *an = node_attr(PyList_GET_ITEM(aliases, k), "name");
            PyObject *feat = an ? PyObject_GetAttr(future, an) : NULL;
            PyObject *fl = feat ? PyObject_GetAttrString(feat, "compiler_flag") : NULL;
            if (fl != NULL && PyLong_Check(fl)) {
                flags |= PyLong_AsLong(fl);
            }
            Py_XDECREF(an);
            Py_XDECREF(feat);
            Py_XDECREF(fl);
            PyErr_Clear();
        }
        Py_XDECREF(aliases);
    }
    Py_DECREF(future);

    PyObject *Module = PyObject_GetAttrString(ast, "Module");
    if (Module == NULL) {
        goto done;
    }
    /* the definitions: top-level ones, and those inside the
     * `if __name__ == "__main__":` block (true when the snapshot was taken;
     * its other statements are the script's work and are dropped) */
    PyObject *kept = PyList_New(0);
    if (kept == NULL) {
        Py_DECREF(Module);
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *s = PyList_GET_ITEM(body, i);
        int bad = 0;
        if (is_def_stmt(&a, s)) {
            bad = PyList_Append(kept, s) < 0;
        }
        else if (is_node(&a, s, "If")) {
            PyObject *test = node_attr(s, "test");
            PyObject *inner = test && is_main_guard(&a, test) ? node_attr(s, "body") : NULL;
            for (Py_ssize_t k = 0; !bad && inner && PyList_Check(inner)
                                   && k < PyList_GET_SIZE(inner); k++) {
                PyObject *t = PyList_GET_ITEM(inner, k);
                bad = is_def_stmt(&a, t) && PyList_Append(kept, t) < 0;
            }
            Py_XDECREF(test);
            Py_XDECREF(inner);
        }
        if (bad) {
            Py_DECREF(kept);
            Py_DECREF(Module);
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(kept); i++) {
        PyObject *s = PyList_GET_ITEM(kept, i);
        PyObject *one = PyList_New(1);
        if (one == NULL) {
            Py_DECREF(kept);
            Py_DECREF(Module);
            goto done;
        }
        PyList_SET_ITEM(one, 0, Py_NewRef(s));
        PyObject *empty = PyList_New(0);
        PyObject *wrap = empty ? PyObject_CallFunction(Module, "OO", one, empty) : NULL;
        Py_XDECREF(empty);
        Py_DECREF(one);
        PyObject *code = wrap ? PyObject_CallFunction(compile, "OOsli", wrap, filename,
                                                      "exec", flags, 1) : NULL;
        Py_XDECREF(wrap);
        PyObject *r = code ? PyObject_CallFunction(exec, "OO", code, gdict) : NULL;
        Py_XDECREF(code);
        if (r != NULL) {
            Py_DECREF(r);
            continue;
        }
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            Py_DECREF(kept);
            Py_DECREF(Module);
            goto done;
        }
        /* one definition failed: note it, go on with the others */
        PyObject *err = chkpt_describe_pending();
        PyErr_Clear();
        PyObject *lineno = node_attr(s, "lineno");
        PyObject *names = stmt_names(s);
        int rr = record_error(group, name, lineno, names, err);
        Py_XDECREF(err);
        Py_XDECREF(lineno);
        Py_XDECREF(names);
        if (rr < 0) {
            Py_DECREF(kept);
            Py_DECREF(Module);
            goto done;
        }
    }
    Py_DECREF(kept);
    Py_DECREF(Module);
    result = Py_NewRef(mod);

done:
    if (result == NULL && mod != NULL) {
        /* do not leave a half-made module behind */
        chkpt_saved_error e;
        chkpt_error_save(&e);
        if (PyDict_DelItem(mods, name) < 0) {
            PyErr_Clear();
        }
        if (PyDict_DelItem(PyImport_GetModuleDict(), private) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
    }
    Py_XDECREF(private);
    Py_XDECREF(filename);
    Py_XDECREF(mod);
    Py_XDECREF(ast);
    Py_XDECREF(tree);
    Py_XDECREF(body);
    Py_XDECREF(builtins_copy);
    Py_XDECREF(compile);
    Py_XDECREF(exec);
    return result;
}

/* ------------------------------------------------------------------ */
/* the load context: one per load() call                               */

/* ctx dict keys:
 *   "reader": capsule of the chkpt_snapreader (None after the load)
 *   "meta": the meta dict,  "sources": meta["sources"] (or {})
 *   "live": {name: live module} when running that same script
 *   "group": the rebuild group, made on first need
 *   "failed": (module, qualname, error) of the last failed find_class */

#define READER_CAPSULE "chkpt.load.reader"

static chkpt_snapreader *
ctx_reader(PyObject *ctx)
{
    PyObject *cap = dict_get(ctx, "reader");
    if (cap == NULL || !PyCapsule_CheckExact(cap)) {
        PyErr_SetString(PyExc_RuntimeError, "chkpt: the snapshot is closed");
        return NULL;
    }
    return PyCapsule_GetPointer(cap, READER_CAPSULE);
}

static PyObject *
read_stream_bytes(PyObject *module, chkpt_snapreader *r, Py_ssize_t idx,
                  PyObject *path)
{
    if (idx < 0 || (size_t)idx >= chkpt_snap_nstreams(r)) {
        PyErr_Clear();          /* an index that did not fit: same answer */
        return snapshot_error(module, "%S: stream %zd does not exist", path, idx);
    }
    uint64_t len = chkpt_snap_stream_len(r, (size_t)idx);
    if (len > (uint64_t)PY_SSIZE_T_MAX) {
        return snapshot_error(module, "%S: stream %zd is too large", path, idx);
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
        return snapshot_error(module, "%S is damaged: %s", path, err);
    }
    return b;
}

static PyObject *
map_stream(PyObject *module, chkpt_snapreader *r, Py_ssize_t idx, PyObject *path)
{
    chkpt_state *st = chkpt_get_state(module);
    if (idx < 0 || (size_t)idx >= chkpt_snap_nstreams(r)) {
        PyErr_Clear();          /* an index that did not fit: same answer */
        return snapshot_error(module, "%S: stream %zd does not exist", path, idx);
    }
    uint64_t len = chkpt_snap_stream_len(r, (size_t)idx);
    if (len > (uint64_t)PY_SSIZE_T_MAX) {
        return snapshot_error(module, "%S: stream %zd is too large", path, idx);
    }
    void *addr = NULL;
    size_t maplen = 0;
    char err[CHKPT_ERRLEN] = "";
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = chkpt_snap_map_stream(r, (size_t)idx, &addr, &maplen, err, sizeof(err));
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        return snapshot_error(module, "%S is damaged: %s", path, err);
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

/* The rebuild group of this snapshot's sources (cached across loads). */
static PyObject *
ctx_group(PyObject *module, PyObject *ctx)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *g = dict_get(ctx, "group");
    if (g != NULL) {
        return Py_NewRef(g);
    }
    chkpt_snapreader *r = ctx_reader(ctx);
    if (r == NULL) {
        return NULL;
    }
    PyObject *sources = dict_get(ctx, "sources");
    PyObject *path = dict_get(ctx, "path");
    PyObject *srcs = PyDict_New(), *paths = PyDict_New(), *specs = PyDict_New();
    PyObject *group = NULL, *key = NULL, *items = NULL;
    if (srcs == NULL || paths == NULL || specs == NULL) {
        goto fail;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *ent;
    while (PyDict_Next(sources, &pos, &name, &ent)) {
        PyObject *sidx = dict_get(ent, "stream");
        PyObject *spath = dict_get(ent, "path");
        if (sidx == NULL || !PyLong_Check(sidx)) {
            snapshot_error(module, "%S: malformed source entry for %R", path, name);
            goto fail;
        }
        PyObject *b = read_stream_bytes(module, r, PyLong_AsSsize_t(sidx), path);
        if (b == NULL) {
            goto fail;
        }
        int rc = PyDict_SetItem(srcs, name, b);
        Py_DECREF(b);
        if (rc < 0 || PyDict_SetItem(paths, name, spath ? spath : Py_None) < 0) {
            goto fail;
        }
        /* __main__ run with -m: the name its relative imports start from */
        PyObject *spec = dict_get(ent, "spec");
        if (spec != NULL && PyUnicode_Check(spec)
            && PyDict_SetItem(specs, name, spec) < 0) {
            goto fail;
        }
    }
    /* cache key: every (name, path, source) of the group */
    items = PyList_New(0);
    if (items == NULL) {
        goto fail;
    }
    pos = 0;
    PyObject *b;
    while (PyDict_Next(srcs, &pos, &name, &b)) {
        PyObject *spec = PyDict_GetItem(specs, name);
        PyObject *t = PyTuple_Pack(4, name, PyDict_GetItem(paths, name),
                                   spec ? spec : Py_None, b);
        if (t == NULL || PyList_Append(items, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    if (PyList_Sort(items) < 0) {
        goto fail;
    }
    key = PyList_AsTuple(items);
    if (key == NULL) {
        goto fail;
    }
    group = PyDict_GetItemWithError(st->load_cache, key);
    if (group != NULL) {
        Py_INCREF(group);
    }
    else {
        if (PyErr_Occurred()) {
            goto fail;
        }
        /* a stable private name: a digest of the sources */
        PyObject *tag = NULL;
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
        if (hex != NULL) {
            tag = PyUnicode_Substring(hex, 0, 12);
            Py_DECREF(hex);
        }
        if (tag == NULL) {
            goto fail;
        }
        group = tag ? Py_BuildValue("{s:O,s:O,s:O,s:O,s:{},s:{}}", "sources", srcs,
                                    "paths", paths, "specs", specs, "tag", tag,
                                    "modules", "errors") : NULL;
        Py_XDECREF(tag);
        if (group == NULL) {
            goto fail;
        }
        /* (module, group) for the import hook; the cycle is collectable */
        PyObject *gself = PyTuple_Pack(2, module, group);
        PyObject *imp = gself ? PyCFunction_New(&rebuilt_import_def, gself) : NULL;
        Py_XDECREF(gself);
        if (imp == NULL || PyDict_SetItemString(group, "import", imp) < 0
            || PyDict_SetItem(st->load_cache, key, group) < 0) {
            Py_XDECREF(imp);
            goto fail;
        }
        Py_DECREF(imp);
    }
    if (PyDict_SetItemString(ctx, "group", group) < 0) {
        goto fail;
    }
    Py_DECREF(srcs);
    Py_DECREF(paths);
    Py_DECREF(specs);
    Py_DECREF(items);
    Py_DECREF(key);
    return group;
fail:
    Py_XDECREF(srcs);
    Py_XDECREF(paths);
    Py_XDECREF(specs);
    Py_XDECREF(items);
    Py_XDECREF(key);
    Py_XDECREF(group);
    return NULL;
}

/* Why `qualname` is missing from rebuilt module `name`, if a definition
 * failed: "line 3: ModuleNotFoundError: No module named 'extmod'". */
static PyObject *
rebuild_reason(PyObject *group, PyObject *name, PyObject *qualname)
{
    PyObject *errors = dict_get(group, "errors");
    PyObject *lst = errors ? PyDict_GetItemWithError(errors, name) : NULL;
    if (lst == NULL || !PyList_Check(lst)) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *dot = PyUnicode_FromString(".");
    PyObject *parts = dot ? PyUnicode_Split(qualname, dot, 1) : NULL;
    Py_XDECREF(dot);
    if (parts == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *top = PyList_GET_ITEM(parts, 0);
    PyObject *res = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lst) && res == NULL; i++) {
        PyObject *t = PyList_GET_ITEM(lst, i);
        PyObject *lineno = PyTuple_GET_ITEM(t, 0);
        PyObject *names = PyTuple_GET_ITEM(t, 1);
        PyObject *err = PyTuple_GET_ITEM(t, 2);
        int match = names == Py_None;       /* the whole module failed */
        if (!match && PyList_Check(names)) {
            match = PySequence_Contains(names, top) == 1;
        }
        if (match) {
            res = lineno == Py_None
                  ? PyUnicode_FromFormat("the saved source does not compile: %S", err)
                  : PyUnicode_FromFormat("its definition (line %S of the saved "
                                         "source) failed: %S", lineno, err);
        }
    }
    Py_DECREF(parts);
    PyErr_Clear();
    return res;
}

static PyObject *
resolve_in_sources(PyObject *module, PyObject *ctx, PyObject *modname,
                   PyObject *qualname)
{
    /* live module of the running script first */
    PyObject *live = dict_get(ctx, "live");
    PyObject *lm = live ? PyDict_GetItemWithError(live, modname) : NULL;
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
    PyObject *m = rebuild_module(module, group, modname);
    if (m == NULL) {
        Py_DECREF(group);
        return NULL;
    }
    PyObject *obj = getattr_chain(m, qualname);
    Py_DECREF(m);
    if (obj == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyObject *why = rebuild_reason(group, modname, qualname);
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
    Py_DECREF(group);
    return obj;
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
    PyObject *ctx = PyObject_GetAttrString(self, "_chkpt_ctx");
    if (ctx == NULL) {
        PyErr_Clear();
    }
    PyObject *obj = NULL;
    PyObject *sources = ctx ? dict_get(ctx, "sources") : NULL;
    int ours = sources != NULL && PyDict_GetItemWithError(sources, modname) != NULL;
    if (PyErr_Occurred()) {
        Py_XDECREF(ctx);
        return NULL;
    }
    if (ours) {
        obj = resolve_in_sources(module, ctx, modname, qualname);
    }
    else if (ctx != NULL && PyUnicode_CompareWithASCIIString(modname, "__main__") == 0
             && dict_get(ctx, "live") != NULL
             && PyDict_GetItemString(dict_get(ctx, "live"), "__main__") == NULL) {
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
        /* remember which class failed, for the stand-in */
        PyObject *err = chkpt_describe_pending();
        chkpt_saved_error e;
        chkpt_error_save(&e);
        PyObject *t = err ? PyTuple_Pack(3, modname, qualname, err) : NULL;
        if (t == NULL || PyDict_SetItemString(ctx, "failed", t) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
        Py_XDECREF(t);
        Py_XDECREF(err);
    }
    Py_XDECREF(ctx);
    return obj;
}

static PyMethodDef find_class_def = {
    "find_class", (PyCFunction)(void (*)(void))unpickler_find_class, METH_FASTCALL,
    "find_class(module, name): the snapshot's own classes for the script's "
    "modules (live when running that script, else rebuilt from the saved source)."
};

/* live modules when the running script is the snapshot's script */
static PyObject *
live_modules(PyObject *module, PyObject *meta, PyObject *sources)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *live = PyDict_New();
    if (live == NULL) {
        return NULL;
    }
    PyObject *script = dict_get(meta, "script");
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
        if (same_path(f, dict_get(ent, "path"))
            && PyDict_SetItem(live, name, m) < 0) {
            Py_DECREF(f);
            Py_DECREF(live);
            return NULL;
        }
        Py_DECREF(f);
    }
    return live;
}

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
        return snapshot_error(module, "%s: %s", PyBytes_AS_STRING(fs), err);
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
        snapshot_error(module, "no snapshot at %U", p);
    }
    else if (res == NULL
             && !PyErr_ExceptionMatches(chkpt_get_state(module)->SnapshotError)) {
        PyErr_Clear();
        snapshot_error(module, "no snapshot at %U", p);
    }
    Py_DECREF(p);
    Py_DECREF(abs);
    Py_DECREF(fs);
    return res;
}

/* Opens a manifest: the reader and its decoded meta dict. */
static chkpt_snapreader *
open_snapshot(PyObject *module, PyObject *path, PyObject **meta_out)
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
        snapshot_error(module, "%U: %s", path, err);
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
        snapshot_error(module, "%U: the snapshot's metadata is damaged", path);
        return NULL;
    }
    PyObject *fmt = PyDict_GetItemString(meta, "format");     /* borrowed */
    long version = fmt != NULL && PyLong_Check(fmt) ? PyLong_AsLong(fmt) : 0;
    PyErr_Clear();
    if (version > LOAD_META_FORMAT) {
        Py_DECREF(meta);
        chkpt_snap_close(r);
        snapshot_error(module, "%U: snapshot metadata format %ld is newer than this "
                       "chkpt supports (%d): upgrade chkpt", path, version,
                       LOAD_META_FORMAT);
        return NULL;
    }
    *meta_out = meta;
    return r;
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
    chkpt_snapreader *r = open_snapshot(module, path, &meta);
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
        snapshot_error(module, "refusing to load %U: %s", manifest, err);
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
failed_class(PyObject *ctx, PyObject *var, PyObject **mod, PyObject **qual)
{
    PyObject *f = dict_get(ctx, "failed");
    if (f != NULL && PyTuple_Check(f) && PyTuple_GET_SIZE(f) == 3) {
        *mod = Py_NewRef(PyTuple_GET_ITEM(f, 0));
        *qual = Py_NewRef(PyTuple_GET_ITEM(f, 1));
        return;
    }
    PyObject *t = dict_get(var, "type");
    PyObject *tm = dict_get(var, "type_module");
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

/* Loads one variable; NULL with an exception when it cannot be. */
static PyObject *
load_one(PyObject *module, chkpt_snapreader *r, PyObject *path, PyObject *ctx,
         PyObject *var, int *damaged)
{
    chkpt_state *st = chkpt_get_state(module);
    PyObject *pidx = dict_get(var, "pickle");
    PyObject *bidx = dict_get(var, "buffers");
    *damaged = 1;
    if (pidx == NULL || !PyLong_Check(pidx) || (bidx && !PyList_Check(bidx))) {
        return snapshot_error(module, "%U: malformed variable entry", path);
    }
    PyObject *data = read_stream_bytes(module, r, PyLong_AsSsize_t(pidx), path);
    if (data == NULL) {
        return NULL;
    }
    Py_ssize_t nb = bidx ? PyList_GET_SIZE(bidx) : 0;
    PyObject *buffers = PyList_New(nb);
    if (buffers == NULL) {
        Py_DECREF(data);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nb; i++) {
        PyObject *bi = PyList_GET_ITEM(bidx, i);
        PyObject *mb = PyLong_Check(bi)
            ? map_stream(module, r, PyLong_AsSsize_t(bi), path)
            : snapshot_error(module, "%U: malformed buffer entry", path);
        if (mb == NULL) {
            Py_DECREF(buffers);
            Py_DECREF(data);
            return NULL;
        }
        PyList_SET_ITEM(buffers, i, mb);
    }
    *damaged = 0;
    PyObject *io = PyImport_ImportModule("io");
    PyObject *file = io ? PyObject_CallMethod(io, "BytesIO", "O", data) : NULL;
    Py_XDECREF(io);
    Py_DECREF(data);
    PyObject *up = NULL, *obj = NULL;
    if (file != NULL) {
        PyObject *args = PyTuple_Pack(1, file);
        PyObject *kw = args ? Py_BuildValue("{s:O}", "buffers", buffers) : NULL;
        up = kw ? PyObject_Call((PyObject *)st->Unpickler_Type, args, kw) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(kw);
        Py_DECREF(file);
    }
    Py_DECREF(buffers);
    if (up != NULL && PyDict_SetItemString(ctx, "failed", Py_None) == 0
        && PyObject_SetAttrString(up, "_chkpt_ctx", ctx) == 0) {
        obj = PyObject_CallMethod(up, "load", NULL);
    }
    if (up != NULL) {
        chkpt_saved_error e;
        chkpt_error_save(&e);
        if (PyObject_SetAttrString(up, "_chkpt_ctx", Py_None) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
    }
    Py_XDECREF(up);
    return obj;
}

/* The object already loaded for the variable this one is "same_as" (the
 * script bound both names to one object), or NULL: load it from its own
 * entry (which repeats the other's streams) when the other was not loaded
 * (names=). New reference; NULL with an exception only on error. */
static PyObject *
same_object(PyObject *loaded, PyObject *var)
{
    PyObject *same = dict_get(var, "same_as");
    if (same == NULL || !PyUnicode_Check(same)) {
        return NULL;
    }
    PyObject *obj = PyDict_GetItemWithError(loaded, same);
    return Py_XNewRef(obj);
}

/* The int at key of dict d, or -1. */
static Py_ssize_t
int_at(PyObject *d, const char *key)
{
    PyObject *v = d && PyDict_Check(d) ? dict_get(d, key) : NULL;
    return v && PyLong_Check(v) ? PyLong_AsSsize_t(v) : -1;
}

/* The variables of a crash snapshot's scope (chkpt_load_scope), in their
 * order: the chosen frame's locals come after, so over, its module's
 * globals. A snapshot without a traceback: all of them. New reference. */
static PyObject *
select_scope(PyObject *module, PyObject *path, PyObject *meta, PyObject *vars,
             PyObject *scope)
{
    PyObject *tb = dict_get(meta, "traceback");
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
        if (fe == NULL || !PyDict_Check(fe) || dict_get(fe, "saved") != Py_True) {
            PyErr_Format(PyExc_ValueError, "frame %zd of %U has no saved "
                         "variables (see its meta['traceback'])", frame, path);
            return NULL;
        }
        mod = dict_get(fe, "module");
    }
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < PyList_GET_SIZE(vars); i++) {
        PyObject *var = PyList_GET_ITEM(vars, i);
        PyObject *g = PyDict_Check(var) ? dict_get(var, "globals") : NULL;
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
    chkpt_state *st = chkpt_get_state(module);
    PyObject *path = chkpt_resolve_snapshot(module, snapshot);
    if (path == NULL) {
        return NULL;
    }
    PyObject *filter = names_filter(names);
    if (filter == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    if (check_owner(module, path) < 0) {
        Py_DECREF(path);
        Py_DECREF(filter);
        return NULL;
    }
    PyObject *meta = NULL;
    chkpt_snapreader *r = open_snapshot(module, path, &meta);
    if (r == NULL) {
        Py_DECREF(path);
        Py_DECREF(filter);
        return NULL;
    }
    PyObject *result = NULL, *ctx = NULL, *cap = NULL, *live = NULL;
    PyObject *vars = dict_get(meta, "variables");
    PyObject *sources = dict_get(meta, "sources");
    PyObject *selected = NULL;
    if (vars == NULL || !PyList_Check(vars)) {
        snapshot_error(module, "%U: the snapshot's metadata has no variables", path);
        goto done;
    }
    /* a crash snapshot: one frame's variables (select_scope) */
    selected = select_scope(module, path, meta, vars, scope);
    if (selected == NULL) {
        goto done;
    }
    vars = selected;
    if (sources == NULL || !PyDict_Check(sources)) {
        sources = NULL;
    }
    /* every requested name must exist */
    if (filter != Py_None) {
        Py_ssize_t pos = 0;
        PyObject *n, *v;
        while (PyDict_Next(filter, &pos, &n, &v)) {
            int found = 0;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(vars) && !found; i++) {
                PyObject *vn = dict_get(PyList_GET_ITEM(vars, i), "name");
                found = vn != NULL && PyUnicode_Check(vn) && PyUnicode_Compare(vn, n) == 0;
            }
            if (!found) {
                PyErr_Format(PyExc_KeyError, "no variable %R in snapshot %U", n, path);
                goto done;
            }
        }
    }
    cap = PyCapsule_New(r, READER_CAPSULE, NULL);
    live = cap ? live_modules(module, meta, sources) : NULL;
    ctx = live ? Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O}", "reader", cap, "meta", meta,
                               "path", path, "sources", sources ? sources : Py_None,
                               "live", live, "failed", Py_None) : NULL;
    if (ctx == NULL) {
        goto done;
    }
    if (sources == NULL) {
        PyObject *empty = PyDict_New();
        if (empty == NULL || PyDict_SetItemString(ctx, "sources", empty) < 0) {
            Py_XDECREF(empty);
            goto done;
        }
        Py_DECREF(empty);
    }
    result = PyDict_New();
    if (result == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(vars); i++) {
        PyObject *var = PyList_GET_ITEM(vars, i);
        PyObject *name = dict_get(var, "name");
        if (name == NULL || !PyUnicode_Check(name)) {
            continue;
        }
        if (filter != Py_None) {
            int want = PyDict_Contains(filter, name);
            if (want < 0) {
                Py_CLEAR(result);
                goto done;
            }
            if (!want) {
                continue;
            }
        }
        int damaged = 0;
        PyObject *obj = same_object(result, var);
        if (obj == NULL) {
            if (PyErr_Occurred()) {
                Py_CLEAR(result);
                goto done;
            }
            obj = load_one(module, r, path, ctx, var, &damaged);
        }
        if (obj == NULL) {
            if (damaged || PyErr_ExceptionMatches(st->SnapshotError)
                || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
                || PyErr_ExceptionMatches(PyExc_MemoryError)) {
                Py_CLEAR(result);
                goto done;
            }
            PyObject *mod = NULL, *qual = NULL;
            failed_class(ctx, var, &mod, &qual);
            PyObject *err = dict_get(ctx, "failed") && PyTuple_Check(dict_get(ctx, "failed"))
                ? Py_NewRef(PyTuple_GET_ITEM(dict_get(ctx, "failed"), 2))
                : chkpt_describe_pending();
            if (strict) {
                chkpt_saved_error cause;
                chkpt_error_save(&cause);
                snapshot_error(module, "cannot load variable %R of %U (%S.%S): %S",
                               name, path, mod, qual, err);
#if PY_VERSION_HEX >= 0x030C0000
                PyObject *exc = PyErr_GetRaisedException();
                if (exc != NULL && cause.exc != NULL) {
                    PyException_SetCause(exc, cause.exc);   /* steals */
                    cause.exc = NULL;
                }
                PyErr_SetRaisedException(exc);
                Py_XDECREF(cause.exc);
#else
                PyObject *t, *v, *tb;
                PyErr_Fetch(&t, &v, &tb);
                PyErr_NormalizeException(&t, &v, &tb);
                PyErr_NormalizeException(&cause.type, &cause.value, &cause.tb);
                if (v != NULL && cause.value != NULL) {
                    PyException_SetCause(v, Py_NewRef(cause.value));
                }
                PyErr_Restore(t, v, tb);
                Py_XDECREF(cause.type);
                Py_XDECREF(cause.value);
                Py_XDECREF(cause.tb);
#endif
                Py_XDECREF(mod);
                Py_XDECREF(qual);
                Py_XDECREF(err);
                Py_CLEAR(result);
                goto done;
            }
            PyErr_Clear();
            chkpt_warn_fmt("variable '%U' of %U cannot be loaded (%S.%S: %S); it is a "
                       "chkpt.Unloadable stand-in", name, path, mod, qual, err);
            obj = PyObject_CallFunction((PyObject *)st->Unloadable_Type, "OOOO", name,
                                        mod ? mod : Py_None, qual ? qual : Py_None,
                                        err ? err : Py_None);
            Py_XDECREF(mod);
            Py_XDECREF(qual);
            Py_XDECREF(err);
            if (obj == NULL) {
                Py_CLEAR(result);
                goto done;
            }
        }
        int rc = PyDict_SetItem(result, name, obj);
        Py_DECREF(obj);
        if (rc < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }

done:
    if (ctx != NULL) {
        chkpt_saved_error e;
        chkpt_error_save(&e);
        if (PyDict_SetItemString(ctx, "reader", Py_None) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
    }
    chkpt_snap_close(r);
    Py_XDECREF(ctx);
    Py_XDECREF(cap);
    Py_XDECREF(live);
    Py_XDECREF(selected);
    Py_XDECREF(meta);
    Py_DECREF(path);
    Py_DECREF(filter);
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
    if (check_owner(module, path) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    PyObject *meta = NULL;
    chkpt_snapreader *r = open_snapshot(module, path, &meta);
    if (r == NULL) {
        Py_DECREF(path);
        return NULL;
    }
    PyObject *result = NULL, *group = NULL;
    PyObject *sources = dict_get(meta, "sources");
    PyObject *cap = PyCapsule_New(r, READER_CAPSULE, NULL);
    PyObject *live = cap ? PyDict_New() : NULL;
    PyObject *empty = live ? PyDict_New() : NULL;
    PyObject *ctx = empty ? Py_BuildValue(
        "{s:O,s:O,s:O,s:O,s:O,s:O}", "reader", cap, "meta", meta, "path", path,
        "sources", sources && PyDict_Check(sources) ? sources : empty,
        "live", live, "failed", Py_None) : NULL;
    group = ctx ? ctx_group(module, ctx) : NULL;
    result = group ? PyDict_New() : NULL;
    Py_ssize_t pos = 0;
    PyObject *name, *ent;
    while (result != NULL && sources != NULL && PyDict_Check(sources)
           && PyDict_Next(sources, &pos, &name, &ent)) {
        PyObject *m = rebuild_module(module, group, name);
        if (m == NULL || PyDict_SetItem(result, name, m) < 0) {
            Py_XDECREF(m);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(m);
    }
    if (ctx != NULL) {
        chkpt_saved_error e;
        chkpt_error_save(&e);
        if (PyDict_SetItemString(ctx, "reader", Py_None) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
    }
    chkpt_snap_close(r);
    Py_XDECREF(group);
    Py_XDECREF(ctx);
    Py_XDECREF(empty);
    Py_XDECREF(live);
    Py_XDECREF(cap);
    Py_XDECREF(meta);
    Py_DECREF(path);
    return result;
}

/* For show: can this (module, qualname) be resolved, without loading any
 * variable? Returns None if yes, else the reason (str). */
PyObject *
chkpt_check_class(PyObject *module, PyObject *snapshot_path, PyObject *meta,
                  PyObject *modname, PyObject *qualname)
{
    PyObject *sources = dict_get(meta, "sources");
    int ours = sources && PyDict_Check(sources)
               && PyDict_GetItemWithError(sources, modname) != NULL;
    PyErr_Clear();
    if (!ours) {
        /* installed? (find_spec of the top-level package: nothing imported) */
        PyObject *dot = PyUnicode_FromString(".");
        PyObject *parts = dot ? PyUnicode_Split(modname, dot, 1) : NULL;
        Py_XDECREF(dot);
        if (parts == NULL) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        PyObject *top = PyList_GET_ITEM(parts, 0);
        PyObject *res = NULL;
        if (PyDict_GetItemWithError(PyImport_GetModuleDict(), top) == NULL) {
            PyObject *util = PyImport_ImportModule("importlib.util");
            PyObject *spec = util ? PyObject_CallMethod(util, "find_spec", "O", top)
                                  : NULL;
            Py_XDECREF(util);
            if (spec == Py_None) {
                res = PyUnicode_FromFormat("module %R is not installed", top);
            }
            Py_XDECREF(spec);
        }
        PyErr_Clear();
        Py_DECREF(parts);
        if (res == NULL) {
            Py_RETURN_NONE;
        }
        return res;
    }
    /* the script's own: rebuild (definitions only) and look it up */
    PyObject *meta_path = snapshot_path;
    PyObject *mt = NULL;
    chkpt_snapreader *r = open_snapshot(module, meta_path, &mt);
    if (r == NULL) {
        PyObject *why = chkpt_describe_pending();
        PyErr_Clear();
        return why;
    }
    Py_DECREF(mt);
    PyObject *res = NULL;
    PyObject *cap = PyCapsule_New(r, READER_CAPSULE, NULL);
    PyObject *live = cap ? live_modules(module, meta, sources) : NULL;
    PyObject *ctx = live ? Py_BuildValue("{s:O,s:O,s:O,s:O,s:O}", "reader", cap,
                                         "meta", meta, "path", snapshot_path,
                                         "sources", sources, "live", live) : NULL;
    if (ctx != NULL) {
        PyObject *obj = resolve_in_sources(module, ctx, modname, qualname);
        if (obj == NULL) {
            res = chkpt_describe_pending();
        }
        Py_XDECREF(obj);
        if (PyDict_SetItemString(ctx, "reader", Py_None) < 0) {
            PyErr_Clear();
        }
    }
    PyErr_Clear();
    chkpt_snap_close(r);
    Py_XDECREF(ctx);
    Py_XDECREF(cap);
    Py_XDECREF(live);
    if (res == NULL) {
        Py_RETURN_NONE;
    }
    return res;
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
            snapshot_error(module, "no snapshot store at %U", abs);
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
        snapshot_error(module, "%U: %s", abs, err);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *p = PyUnicode_DecodeFSDefault(paths[i]);
        if (p == NULL) {
            PyErr_Clear();
            continue;
        }
        PyObject *meta = NULL;
        chkpt_snapreader *r = open_snapshot(module, p, &meta);
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
    if (st->load_cache == NULL) {
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
