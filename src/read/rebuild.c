/* rebuild.c: rebuilding the script's own modules from the sources a
 * snapshot keeps, so that its classes and functions can be unpickled where
 * the script is not running.
 *
 * A rebuilt module executes only the definitions of its source (imports,
 * def, class, and assignments that build definitions or constants; the
 * AST filter below decides), each statement on its own so one failure does
 * not stop the others; failures are recorded for the message that explains
 * a missing class. Rebuilt modules are registered in sys.modules under a
 * private name (their classes pickle and copy), and their imports go
 * through a rebuilt __import__ that finds the snapshot's other modules
 * first. The modules rebuilt from one set of sources share a group (the
 * RebuildGroup type, which load.c caches per set of sources).
 *
 * load.c reads the sources out of the snapshot and calls in here; this
 * file reads no snapshot and calls nothing above base.
 */
#include "chkpt.h"
#include "read.h"
#include <string.h>

/* ------------------------------------------------------------------ */
/* the group of modules rebuilt from one set of sources                 */

typedef struct {
    PyObject_HEAD
    PyObject *sources;      /* {name: bytes} */
    PyObject *paths;        /* {name: path or None} */
    PyObject *specs;        /* {name: spec name}: __main__ run with -m */
    PyObject *tag;          /* str: in the private names, a digest */
    PyObject *modules;      /* {name: module}: rebuilt, or being rebuilt */
    PyObject *errors;       /* {name: [(lineno, names, error)]} */
    PyObject *import;       /* the rebuilt modules' __import__ (self: us) */
} rebuild_group;

static int
group_traverse(rebuild_group *g, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(g));
    Py_VISIT(g->sources);
    Py_VISIT(g->paths);
    Py_VISIT(g->specs);
    Py_VISIT(g->tag);
    Py_VISIT(g->modules);
    Py_VISIT(g->errors);
    Py_VISIT(g->import);
    return 0;
}

static int
group_clear(rebuild_group *g)
{
    Py_CLEAR(g->sources);
    Py_CLEAR(g->paths);
    Py_CLEAR(g->specs);
    Py_CLEAR(g->tag);
    Py_CLEAR(g->modules);
    Py_CLEAR(g->errors);
    Py_CLEAR(g->import);
    return 0;
}

static void
group_dealloc(rebuild_group *g)
{
    PyTypeObject *tp = Py_TYPE(g);
    PyObject_GC_UnTrack(g);
    group_clear(g);
    tp->tp_free(g);
    Py_DECREF(tp);
}

static PyType_Slot group_slots[] = {
    {Py_tp_traverse, group_traverse},
    {Py_tp_clear, group_clear},
    {Py_tp_dealloc, group_dealloc},
    {Py_tp_doc, "The modules chkpt rebuilt from one set of saved sources."},
    {0, NULL},
};

static PyType_Spec group_spec = {
    .name = "chkpt._chkpt.RebuildGroup",
    .basicsize = sizeof(rebuild_group),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = group_slots,
};

/* ------------------------------------------------------------------ */
/* which statements are definitions (the AST filter)                    */

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

/* ------------------------------------------------------------------ */
/* the rebuilt modules' __import__                                     */

static PyObject *rebuild_module(rebuild_group *g, PyObject *name);

static int
in_sources(rebuild_group *g, PyObject *name)
{
    if (PyUnicode_CompareWithASCIIString(name, "__main__") == 0) {
        return 0;
    }
    return PyDict_Contains(g->sources, name);
}

/* The package a rebuilt module's relative imports start from: its spec
 * name (for __main__ run with -m, the recorded spec; for a sibling, its
 * name), itself when it is a package's __init__. */
static PyObject *
rebuilt_package(rebuild_group *g, PyObject *globals)
{
    PyObject *orig = globals && PyDict_Check(globals)
                     ? PyDict_GetItemString(globals, "__chkpt_source_module__") : NULL;
    if (orig == NULL) {
        return NULL;
    }
    PyObject *spec = PyDict_GetItemWithError(g->specs, orig);
    if (spec == NULL || !PyUnicode_Check(spec)) {
        PyErr_Clear();
        spec = orig;
    }
    PyObject *path = PyDict_GetItemWithError(g->paths, orig);
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
group_module(rebuild_group *g, PyObject *abs)
{
    int has = in_sources(g, abs);
    if (has <= 0) {
        return NULL;
    }
    return rebuild_module(g, abs);
}

/* The absolute name of `name` imported at `level` from a rebuilt module
 * with these globals. */
static PyObject *
absolute_name(rebuild_group *g, PyObject *name, PyObject *globals, int level)
{
    if (level <= 0) {
        return Py_NewRef(name);
    }
    PyObject *pkg = rebuilt_package(g, globals);
    if (pkg == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ImportError, "attempted relative import "
                            "with no known parent package");
        }
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
    PyObject *abs = PyUnicode_GET_LENGTH(name)
                    ? PyUnicode_FromFormat("%U.%U", base, name)
                    : Py_NewRef(base);
    Py_DECREF(base);
    return abs;
}

/* from . import a, b: the package, with the group's submodules set (the
 * interpreter's for names the group does not have) */
static PyObject *
import_from_package(rebuild_group *g, PyObject *abs, PyObject *fromlist)
{
    PyObject *r = group_module(g, abs);
    if (r == NULL && !PyErr_Occurred()) {
        r = PyModule_NewObject(abs);
    }
    PyObject *it = r ? PyObject_GetIter(fromlist) : NULL;
    PyObject *item;
    while (it != NULL && (item = PyIter_Next(it)) != NULL) {
        PyObject *sub = PyUnicode_Check(item)
            ? PyUnicode_FromFormat("%U.%U", abs, item) : NULL;
        PyObject *m = sub ? group_module(g, sub) : NULL;
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
    return r;
}

/* import a.b (a.b the group's): binds a, with a.b set. NULL without an
 * exception when a.b is not the group's. */
static PyObject *
import_dotted(rebuild_group *g, PyObject *abs, Py_ssize_t dot)
{
    PyObject *r = NULL;
    PyObject *top = PyUnicode_Substring(abs, 0, dot);
    PyObject *sub = top ? group_module(g, abs) : NULL;
    if (sub != NULL) {
        PyObject *t = group_module(g, top);
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
    return r;
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
    rebuild_group *g = (rebuild_group *)self;
    int has_from = fromlist != NULL && fromlist != Py_None
                   && PyObject_IsTrue(fromlist) == 1;
    PyErr_Clear();
    PyObject *abs = absolute_name(g, name, globals, level);
    if (abs == NULL) {
        return NULL;
    }
    PyObject *r;
    if (level > 0 && PyUnicode_GET_LENGTH(name) == 0 && has_from) {
        r = import_from_package(g, abs, fromlist);
        Py_DECREF(abs);
        return r;
    }
    Py_ssize_t dot = PyUnicode_FindChar(abs, '.', 0, PyUnicode_GET_LENGTH(abs), 1);
    if (dot >= 0 && !has_from && level == 0) {
        r = import_dotted(g, abs, dot);
    }
    else {
        r = group_module(g, abs);
    }
    if (r == NULL && !PyErr_Occurred()) {
        r = PyImport_ImportModuleLevelObject(abs, globals, locals, fromlist, 0);
    }
    Py_DECREF(abs);
    return r;
}

static PyMethodDef rebuilt_import_def = {
    "__import__", (PyCFunction)(void (*)(void))rebuilt_import,
    METH_VARARGS | METH_KEYWORDS,
    "__import__ of a module rebuilt by chkpt: the snapshot's own modules first."
};

/* ------------------------------------------------------------------ */
/* rebuilding one module                                               */

static int
record_error(rebuild_group *g, PyObject *name, PyObject *lineno,
             PyObject *names, PyObject *err)
{
    PyObject *lst = PyDict_GetItemWithError(g->errors, name);
    if (lst == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        lst = PyList_New(0);
        if (lst == NULL || PyDict_SetItem(g->errors, name, lst) < 0) {
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

/* What one rebuild works with; the fields are borrowed from the group or
 * owned as noted. */
typedef struct {
    rebuild_group *g;
    PyObject *name;         /* the module's name in the snapshot */
    PyObject *src;          /* its source (bytes, borrowed) */
    PyObject *path;         /* its path (borrowed; NULL when unknown) */
    PyObject *private;      /* its name in sys.modules (owned) */
    PyObject *filename;     /* "<chkpt snapshot of PATH>" (owned) */
    PyObject *mod;          /* the module (owned) */
    PyObject *gdict;        /* its dict (borrowed) */
    PyObject *compile;      /* builtins.compile (owned) */
    PyObject *exec;         /* builtins.exec (owned) */
    PyObject *ast;          /* the ast module (owned) */
    long flags;             /* the __future__ compiler flags of the source */
} rebuild;

/* Step 1: the fresh module, with __builtins__ whose __import__ is the
 * group's, registered in sys.modules and in the group. */
static int
new_module(rebuild *rb)
{
    rb->mod = PyModule_NewObject(rb->private);
    if (rb->mod == NULL) {
        return -1;
    }
    rb->gdict = PyModule_GetDict(rb->mod);           /* borrowed */
    PyObject *bmod = PyImport_ImportModule("builtins");
    if (bmod == NULL) {
        return -1;
    }
    PyObject *builtins_copy = PyDict_Copy(PyModule_GetDict(bmod));
    rb->compile = PyObject_GetAttrString(bmod, "compile");
    rb->exec = PyObject_GetAttrString(bmod, "exec");
    Py_DECREF(bmod);
    PyObject *path = rb->path ? rb->path : Py_None;
    int bad = builtins_copy == NULL || rb->compile == NULL || rb->exec == NULL
        || PyDict_SetItemString(builtins_copy, "__import__", rb->g->import) < 0
        || PyDict_SetItemString(rb->gdict, "__builtins__", builtins_copy) < 0
        || PyDict_SetItemString(rb->gdict, "__file__", path) < 0
        || PyDict_SetItemString(rb->gdict, "__chkpt_source_module__", rb->name) < 0
        || PyDict_SetItem(PyImport_GetModuleDict(), rb->private, rb->mod) < 0
        || PyDict_SetItem(rb->g->modules, rb->name, rb->mod) < 0;
    Py_XDECREF(builtins_copy);
    return bad ? -1 : 0;
}

/* Step 2: tracebacks and inspect can show the saved source (best effort) */
static void
cache_source_lines(rebuild *rb)
{
    PyObject *linecache = PyImport_ImportModule("linecache");
    if (linecache != NULL) {
        PyObject *src = rb->src;
        PyObject *cache = PyObject_GetAttrString(linecache, "cache");
        PyObject *text = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(src),
                                              PyBytes_GET_SIZE(src), "replace");
        PyObject *lines = text ? PyObject_CallMethod(text, "splitlines", "O",
                                                     Py_True) : NULL;
        PyObject *entry = lines ? Py_BuildValue("(nOOO)", PyBytes_GET_SIZE(src),
                                                Py_None, lines, rb->filename) : NULL;
        if (cache == NULL || entry == NULL
            || PyObject_SetItem(cache, rb->filename, entry) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(cache);
        Py_XDECREF(text);
        Py_XDECREF(lines);
        Py_XDECREF(entry);
        Py_DECREF(linecache);
    }
    PyErr_Clear();
}

/* Step 3: the __future__ flags, which apply to every statement */
static int
future_flags(rebuild *rb, astctx *a, PyObject *body)
{
    PyObject *future = PyImport_ImportModule("__future__");
    if (future == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *s = PyList_GET_ITEM(body, i);
        if (!is_node(a, s, "ImportFrom")) {
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
                rb->flags |= PyLong_AsLong(fl);
            }
            Py_XDECREF(an);
            Py_XDECREF(feat);
            Py_XDECREF(fl);
            PyErr_Clear();
        }
        Py_XDECREF(aliases);
    }
    Py_DECREF(future);
    return 0;
}

/* Step 4: the definitions: top-level ones, and those inside the
 * `if __name__ == "__main__":` block (true when the snapshot was taken;
 * its other statements are the script's work and are dropped). New list. */
static PyObject *
kept_statements(astctx *a, PyObject *body)
{
    PyObject *kept = PyList_New(0);
    if (kept == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(body); i++) {
        PyObject *s = PyList_GET_ITEM(body, i);
        int bad = 0;
        if (is_def_stmt(a, s)) {
            bad = PyList_Append(kept, s) < 0;
        }
        else if (is_node(a, s, "If")) {
            PyObject *test = node_attr(s, "test");
            PyObject *inner = test && is_main_guard(a, test) ? node_attr(s, "body") : NULL;
            for (Py_ssize_t k = 0; !bad && inner && PyList_Check(inner)
                                   && k < PyList_GET_SIZE(inner); k++) {
                PyObject *t = PyList_GET_ITEM(inner, k);
                bad = is_def_stmt(a, t) && PyList_Append(kept, t) < 0;
            }
            Py_XDECREF(test);
            Py_XDECREF(inner);
        }
        if (bad) {
            Py_DECREF(kept);
            return NULL;
        }
    }
    return kept;
}

/* Step 5: runs one kept statement in the module. 0 when it ran or its
 * failure was recorded (the others go on), -1 to give up. */
static int
run_statement(rebuild *rb, PyObject *Module, PyObject *s)
{
    PyObject *one = PyList_New(1);
    if (one == NULL) {
        return -1;
    }
    PyList_SET_ITEM(one, 0, Py_NewRef(s));
    PyObject *empty = PyList_New(0);
    PyObject *wrap = empty ? PyObject_CallFunction(Module, "OO", one, empty) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(one);
    PyObject *code = wrap ? PyObject_CallFunction(rb->compile, "OOsli", wrap,
                                                  rb->filename, "exec", rb->flags,
                                                  1) : NULL;
    Py_XDECREF(wrap);
    PyObject *r = code ? PyObject_CallFunction(rb->exec, "OO", code, rb->gdict) : NULL;
    Py_XDECREF(code);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    /* one definition failed: note it, go on with the others */
    PyObject *err = chkpt_describe_pending();
    PyErr_Clear();
    PyObject *lineno = node_attr(s, "lineno");
    PyObject *names = stmt_names(s);
    int rr = record_error(rb->g, rb->name, lineno, names, err);
    Py_XDECREF(err);
    Py_XDECREF(lineno);
    Py_XDECREF(names);
    return rr;
}

/* Steps 3 to 5 on the parsed source. */
static int
run_definitions(rebuild *rb, PyObject *tree)
{
    PyObject *body = PyObject_GetAttrString(tree, "body");
    if (body == NULL || !PyList_Check(body)) {
        Py_XDECREF(body);
        return -1;
    }
    astctx a = {rb->ast};
    PyObject *Module = NULL, *kept = NULL;
    int rc = -1;
    if (future_flags(rb, &a, body) < 0
        || (Module = PyObject_GetAttrString(rb->ast, "Module")) == NULL
        || (kept = kept_statements(&a, body)) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(kept); i++) {
        if (run_statement(rb, Module, PyList_GET_ITEM(kept, i)) < 0) {
            goto done;
        }
    }
    rc = 0;
done:
    Py_XDECREF(kept);
    Py_XDECREF(Module);
    Py_DECREF(body);
    return rc;
}

/* Parses the source and runs its definitions; a source that does not parse
 * leaves the module empty (every class will be missing) with the error
 * recorded. */
static int
fill_module(rebuild *rb)
{
    rb->ast = PyImport_ImportModule("ast");
    if (rb->ast == NULL) {
        return -1;
    }
    PyObject *tree = PyObject_CallMethod(rb->ast, "parse", "OO", rb->src,
                                         rb->filename);
    if (tree == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            return -1;
        }
        PyObject *err = chkpt_describe_pending();
        PyErr_Clear();
        int rr = record_error(rb->g, rb->name, NULL, NULL, err);
        Py_XDECREF(err);
        return rr;
    }
    int rc = run_definitions(rb, tree);
    Py_DECREF(tree);
    return rc;
}

/* The names of the module: private (in sys.modules) and filename. */
static int
module_names(rebuild *rb)
{
    PyObject *safe = PyObject_CallMethod(rb->name, "replace", "ss", ".", "_");
    if (safe == NULL) {
        return -1;
    }
    rb->private = PyUnicode_FromFormat("_chkpt_snap_%U_%U", rb->g->tag, safe);
    Py_DECREF(safe);
    if (rb->private == NULL) {
        return -1;
    }
    rb->filename = PyUnicode_FromFormat("<chkpt snapshot of %S>",
                                        rb->path ? rb->path : rb->name);
    return rb->filename == NULL ? -1 : 0;
}

/* Runs the definitions of source `name` of the group in a fresh module
 * registered in sys.modules under a private name. Returns a new reference. */
static PyObject *
rebuild_module(rebuild_group *g, PyObject *name)
{
    PyObject *m = PyDict_GetItemWithError(g->modules, name);
    if (m != NULL) {
        return Py_NewRef(m);      /* done, or being built (circular import) */
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    rebuild rb = {.g = g, .name = name};
    rb.src = PyDict_GetItemWithError(g->sources, name);
    if (rb.src == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ImportError, "the snapshot has no source for %R", name);
        }
        return NULL;
    }
    rb.path = PyDict_GetItemWithError(g->paths, name);
    if (rb.path == NULL && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *result = NULL;
    if (module_names(&rb) == 0 && new_module(&rb) == 0) {
        cache_source_lines(&rb);
        if (fill_module(&rb) == 0) {
            result = Py_NewRef(rb.mod);
        }
    }
    if (result == NULL && rb.mod != NULL) {
        /* do not leave a half-made module behind */
        chkpt_saved_error e;
        chkpt_error_save(&e);
        if (PyDict_DelItem(g->modules, name) < 0) {
            PyErr_Clear();
        }
        if (PyDict_DelItem(PyImport_GetModuleDict(), rb.private) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
    }
    Py_XDECREF(rb.private);
    Py_XDECREF(rb.filename);
    Py_XDECREF(rb.mod);
    Py_XDECREF(rb.compile);
    Py_XDECREF(rb.exec);
    Py_XDECREF(rb.ast);
    return result;
}

/* ------------------------------------------------------------------ */
/* what load.c calls                                                   */

static rebuild_group *
as_group(PyObject *module, PyObject *group)
{
    chkpt_state *st = chkpt_get_state(module);
    if (!Py_IS_TYPE(group, st->RebuildGroup_Type)) {
        PyErr_SetString(PyExc_TypeError, "chkpt: not a rebuild group");
        return NULL;
    }
    return (rebuild_group *)group;
}

PyObject *
chkpt_rebuild_group_new(PyObject *module, PyObject *sources, PyObject *paths,
                        PyObject *specs, PyObject *tag)
{
    chkpt_state *st = chkpt_get_state(module);
    rebuild_group *g = PyObject_GC_New(rebuild_group, st->RebuildGroup_Type);
    if (g == NULL) {
        return NULL;
    }
    g->sources = Py_NewRef(sources);
    g->paths = Py_NewRef(paths);
    g->specs = Py_NewRef(specs);
    g->tag = Py_NewRef(tag);
    g->modules = PyDict_New();
    g->errors = PyDict_New();
    g->import = NULL;
    PyObject_GC_Track(g);
    if (g->modules == NULL || g->errors == NULL) {
        Py_DECREF(g);
        return NULL;
    }
    /* the hook's self is the group: a cycle, which the GC collects */
    g->import = PyCFunction_New(&rebuilt_import_def, (PyObject *)g);
    if (g->import == NULL) {
        Py_DECREF(g);
        return NULL;
    }
    return (PyObject *)g;
}

PyObject *
chkpt_rebuild_module(PyObject *module, PyObject *group, PyObject *name)
{
    rebuild_group *g = as_group(module, group);
    return g ? rebuild_module(g, name) : NULL;
}

/* Why `qualname` is missing from rebuilt module `name`, if a definition
 * failed: "line 3: ModuleNotFoundError: No module named 'extmod'". */
PyObject *
chkpt_rebuild_reason(PyObject *module, PyObject *group, PyObject *name,
                     PyObject *qualname)
{
    rebuild_group *g = as_group(module, group);
    PyObject *lst = g ? PyDict_GetItemWithError(g->errors, name) : NULL;
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

int
chkpt_rebuild_init(PyObject *module)
{
    chkpt_state *st = chkpt_get_state(module);
    st->RebuildGroup_Type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &group_spec, NULL);
    return st->RebuildGroup_Type == NULL ? -1 : 0;
}
