/* statements.c: the script's module as a sequence of top-level statements,
 * boundary snapshots between them, and --resume.
 *
 *  - prepare: the source is parsed once (ast) and each top-level statement
 *    compiled on its own, with the module's __future__ flags, so the runner
 *    executes them one at a time in __main__'s dict: same code, same line
 *    numbers and tracebacks, no extra frame.
 *  - fingerprints: sha256 of ast.dump (no positions, so comments and
 *    formatting do not count) of a statement, or of a def/class, with the
 *    bodies of the functions nested in it left out: a function's body is a
 *    fingerprint of its own, counted only when the function ran. Which
 *    functions of the script (and of modules in its directory) ran is
 *    ck->ran_code: PY_START events on 3.12+ (hooks.c, each code object
 *    reported once, then DISABLE'd), on 3.11 the code objects' warm-up
 *    counters (a code object that ever started has moved its counter;
 *    a trace function would put every instruction of the script through
 *    3.11's tracing path, far from free).
 *  - boundary: after a statement, when enough time passed since the last
 *    one (and 10x the cost of that one), a snapshot of every picklable
 *    global (capture), with the meta keys of docs/FORMAT.md: the next
 *    statement, the fingerprints of the earlier ones, the dependencies
 *    (function -> fingerprint), the names of all globals, random states.
 *  - --resume: the newest boundary snapshot of this script (by its file
 *    name, not its path) whose earlier statements and dependencies have the
 *    same fingerprints now, and which leaves out no variable a remaining
 *    statement (or any function) names; the skipped statements that only
 *    define (import, def, class) run again, the saved globals and random
 *    states are restored, and the runner goes on from there.
 */
#include "chkpt.h"
#include "capture.h"
#include "child.h"
#include "read.h"
#include "run.h"
#include <string.h>
#include <unistd.h>

#define RESUME_CAPSULE "chkpt.resume"
/* A boundary snapshot is due once this much time went by since the last
 * one (or the start), never more often than -f asks ... */
#define BOUNDARY_MIN_S 2.0
/* ... and once the time since the last one is this many times what that
 * one cost: boundary snapshots take at most ~10% of the run. */
#define BOUNDARY_COST_RATIO 10.0
/* What a boundary snapshot writes per second, roughly (pickle, hash,
 * write): before one is taken, a global holding more than the time since
 * the last one pays for (at BOUNDARY_COST_RATIO) puts it off. */
#define BOUNDARY_WRITE_BPS (200.0 * 1024 * 1024)
/* rejected snapshots named in the resume message */
#define MAX_REASONS 3

enum { C_FUNC, C_AFUNC, C_CLASS, C_EXPR, C_CONST, C_IMPORT, C_IMPFROM,
       C_NAME, C_LAMBDA, C_PASS, C_GLOBAL, C_ATTR, C_ALIAS, C_NCLS };
static const char *const cls_names[C_NCLS] = {
    "FunctionDef", "AsyncFunctionDef", "ClassDef", "Expr", "Constant",
    "Import", "ImportFrom", "Name", "Lambda", "Pass", "Global", "Attribute",
    "alias"
};

/* Names that say the script traces, profiles or debugs itself (the
 * APIs, and the modules and classes of the common tools that call them).
 * Its top-level statements then run as one module (no boundary
 * snapshots): split, each statement would be a frame of its own, which a
 * tracer sees (a call and a return per statement: a profile enabled at the
 * top level would list `<module>` calls python's does not) and a debugger
 * steps differently (`next` on a statement's last line would leave it). */
static const char *const tracing_names[] = {
    "settrace", "setprofile", "breakpoint", "set_trace", "monitoring",
    "_settraceallthreads", "_setprofileallthreads", NULL
};
/* ... and the modules of the debuggers, profilers and tracers that call
 * them, when the script imports one (a name alone would be too broad:
 * np.trace, a variable `profile`). */
static const char *const tracing_modules[] = {
    "pdb", "bdb", "ipdb", "pudb", "debugpy", "pydevd", "remote_pdb",
    "web_pdb", "wdb", "cProfile", "profile", "trace", "yappi",
    "line_profiler", "pyinstrument", "viztracer", "coverage",
    "memory_profiler", NULL
};

typedef struct {
    PyObject *ast;                /* the ast module, imported when needed
                                     (ast.dump: fingerprints) */
    PyObject *cls[C_NCLS];
    PyObject *node_cls;           /* ast.AST, the base of the nodes */
    PyObject *module_cls;         /* ast.Module */
    PyObject *sha256;             /* hashlib.sha256, imported when needed */
    PyObject *tree;               /* ast.Module of the script */
    PyObject *stmts;              /* its body */
    PyObject *codes;              /* code of each statement, or None */
    PyObject *fps;                /* fingerprints of the statements */
    PyObject *defs;               /* file key -> {qualname: fingerprint} */
    PyObject *carried;            /* dependencies of skipped statements */
    PyObject *script_id;          /* the script's file name */
    PyObject *filename;
    char *defonly;                /* per statement: only defines (1); of
                                     a group's first: all of it does */
    char *joined;                 /* per statement: starts on the line the
                                     one before ends on (one unit) */
    int work;                     /* a statement that does more than define
                                     ran since the last boundary */
    int resume;                   /* --resume given */
    int enabled;                  /* boundary snapshots are on */
    pid_t pid;                    /* the run's process (not a fork) */
    double last_end, last_cost;
#if PY_VERSION_HEX < 0x030C0000
    short warm0;                  /* co_warmup of a code never started */
#endif
} statements_state;

static void
rs_free(PyObject *cap)
{
    statements_state *rs = PyCapsule_GetPointer(cap, RESUME_CAPSULE);
    if (rs == NULL) {
        PyErr_Clear();
        return;
    }
    Py_XDECREF(rs->ast);
    for (int i = 0; i < C_NCLS; i++) {
        Py_XDECREF(rs->cls[i]);
    }
    Py_XDECREF(rs->sha256);
    Py_XDECREF(rs->node_cls);
    Py_XDECREF(rs->module_cls);
    Py_XDECREF(rs->tree);
    Py_XDECREF(rs->stmts);
    Py_XDECREF(rs->codes);
    Py_XDECREF(rs->fps);
    Py_XDECREF(rs->defs);
    Py_XDECREF(rs->carried);
    Py_XDECREF(rs->script_id);
    Py_XDECREF(rs->filename);
    PyMem_Free(rs->defonly);
    PyMem_Free(rs->joined);
    PyMem_Free(rs);
}

static statements_state *
get_rs(CheckpointObject *ck)
{
    if (ck->statements == NULL) {
        return NULL;
    }
    return PyCapsule_GetPointer(ck->statements, RESUME_CAPSULE);
}

static int definition_names(statements_state *rs, PyObject *s, PyObject *out);

static int
is_a(statements_state *rs, PyObject *node, int which)
{
    return PyObject_TypeCheck(node, (PyTypeObject *)rs->cls[which]);
}

static int
is_funcdef(statements_state *rs, PyObject *node)
{
    return is_a(rs, node, C_FUNC) || is_a(rs, node, C_AFUNC);
}

/* The nodes directly under node (ast.iter_child_nodes, read from the
 * nodes' _fields, so that splitting a script imports neither ast nor
 * anything else the script would then find in sys.modules): a new list. */
static PyObject *
child_nodes(statements_state *rs, PyObject *node)
{
    PyObject *out = PyList_New(0);
    PyObject *fields = out ? PyObject_GetAttrString(node, "_fields") : NULL;
    Py_ssize_t n = fields && PyTuple_Check(fields) ? PyTuple_GET_SIZE(fields)
                                                   : 0;
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *v = PyObject_GetAttr(node, PyTuple_GET_ITEM(fields, i));
        if (v == NULL) {
            PyErr_Clear();              /* an optional field left unset */
            continue;
        }
        int bad = 0;
        if (PyObject_TypeCheck(v, (PyTypeObject *)rs->node_cls)) {
            bad = PyList_Append(out, v) < 0;
        }
        else if (PyList_Check(v)) {
            for (Py_ssize_t k = 0; !bad && k < PyList_GET_SIZE(v); k++) {
                PyObject *e = PyList_GET_ITEM(v, k);
                bad = PyObject_TypeCheck(e, (PyTypeObject *)rs->node_cls)
                      && PyList_Append(out, e) < 0;
            }
        }
        Py_DECREF(v);
        if (bad) {
            Py_CLEAR(out);
        }
    }
    Py_XDECREF(fields);
    return out;
}

/* node and every node under it, breadth first (ast.walk): a new list. */
static PyObject *
walk_nodes(statements_state *rs, PyObject *node)
{
    PyObject *all = PyList_New(0);
    if (all == NULL || PyList_Append(all, node) < 0) {
        Py_XDECREF(all);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all); i++) {
        PyObject *kids = child_nodes(rs, PyList_GET_ITEM(all, i));
        Py_ssize_t end = PyList_GET_SIZE(all);
        if (kids == NULL
            || PyList_SetSlice(all, end, end, kids) < 0) {
            Py_XDECREF(kids);
            Py_DECREF(all);
            return NULL;
        }
        Py_DECREF(kids);
    }
    return all;
}

/* ---- fingerprints ---- */

/* ast and hashlib, for the fingerprints: imported only where they are
 * computed (a boundary snapshot's child, --resume). 0 or -1. */
static int
need_hashing(statements_state *rs)
{
    if (rs->sha256 != NULL) {
        return 0;
    }
    if (rs->ast == NULL && (rs->ast = PyImport_ImportModule("ast")) == NULL) {
        return -1;
    }
    PyObject *hashlib = PyImport_ImportModule("hashlib");
    rs->sha256 = hashlib ? PyObject_GetAttrString(hashlib, "sha256") : NULL;
    Py_XDECREF(hashlib);
    return rs->sha256 != NULL ? 0 : -1;
}

static PyObject *
sha_hex(statements_state *rs, PyObject *text)
{
    if (need_hashing(rs) < 0) {
        return NULL;
    }
    PyObject *b = PyUnicode_AsUTF8String(text);
    PyObject *h = b ? PyObject_CallOneArg(rs->sha256, b) : NULL;
    Py_XDECREF(b);
    PyObject *hex = h ? PyObject_CallMethod(h, "hexdigest", NULL) : NULL;
    Py_XDECREF(h);
    if (hex == NULL) {
        return NULL;
    }
    PyObject *r = PyUnicode_Substring(hex, 0, 24);
    Py_DECREF(hex);
    return r;
}

/* sha256 of ast.dump(node), the bodies of the functions nested in node
 * (and node's own when it is a statement: a def statement only binds the
 * name) emptied for the time of the dump. */
static PyObject *
fingerprint_of(statements_state *rs, PyObject *node, int own_body)
{
    if (need_hashing(rs) < 0) {
        return NULL;
    }
    PyObject *all = walk_nodes(rs, node);
    PyObject *saved = all ? PyList_New(0) : NULL;
    PyObject *empty = saved ? PyList_New(0) : NULL;
    PyObject *result = NULL;
    if (empty == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all); i++) {
        PyObject *n = PyList_GET_ITEM(all, i);
        if ((n == node && own_body) || !is_funcdef(rs, n)) {
            continue;
        }
        PyObject *body = PyObject_GetAttrString(n, "body");
        PyObject *pair = body ? PyTuple_Pack(2, n, body) : NULL;
        Py_XDECREF(body);
        if (pair == NULL || PyList_Append(saved, pair) < 0
            || PyObject_SetAttrString(n, "body", empty) < 0) {
            Py_XDECREF(pair);
            goto restore;
        }
        Py_DECREF(pair);
    }
    PyObject *dump = PyObject_CallMethod(rs->ast, "dump", "O", node);
    if (dump != NULL) {
        result = sha_hex(rs, dump);
        Py_DECREF(dump);
    }
restore:
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(saved); i++) {
        PyObject *pair = PyList_GET_ITEM(saved, i);
        chkpt_saved_error e;
        chkpt_error_save(&e);
        if (PyObject_SetAttrString(PyTuple_GET_ITEM(pair, 0), "body",
                                   PyTuple_GET_ITEM(pair, 1)) < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&e);
    }
done:
    Py_XDECREF(all);
    Py_XDECREF(saved);
    Py_XDECREF(empty);
    return result;
}

/* A def or class (or a sibling module) as a dependency. */
static PyObject *
fingerprint(statements_state *rs, PyObject *node)
{
    return fingerprint_of(rs, node, 1);
}

/* Every def and class under node into out: qualname (as the compiler
 * names it) -> fingerprint; two of one qualname (a redefinition) hash
 * together. */
static int
collect_defs(statements_state *rs, PyObject *node, PyObject *prefix,
             PyObject *out)
{
    PyObject *list = child_nodes(rs, node);
    if (list == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list) && rc == 0; i++) {
        PyObject *kid = PyList_GET_ITEM(list, i);
        int func = is_funcdef(rs, kid);
        if (!func && !is_a(rs, kid, C_CLASS)) {
            rc = collect_defs(rs, kid, prefix, out);
            continue;
        }
        PyObject *name = PyObject_GetAttrString(kid, "name");
        PyObject *qn = name ? PyUnicode_Concat(prefix, name) : NULL;
        Py_XDECREF(name);
        PyObject *fp = qn ? fingerprint(rs, kid) : NULL;
        PyObject *old = fp ? PyDict_GetItemWithError(out, qn) : NULL;
        if (old != NULL) {
            PyObject *both = PyUnicode_Concat(old, fp);
            Py_SETREF(fp, both ? sha_hex(rs, both) : NULL);
            Py_XDECREF(both);
        }
        PyObject *sub = fp ? PyUnicode_FromFormat(
            func ? "%U.<locals>." : "%U.", qn) : NULL;
        rc = sub == NULL || PyErr_Occurred() || PyDict_SetItem(out, qn, fp) < 0
             || collect_defs(rs, kid, sub, out) < 0 ? -1 : 0;
        Py_XDECREF(qn);
        Py_XDECREF(fp);
        Py_XDECREF(sub);
    }
    Py_DECREF(list);
    return rc;
}

static PyObject *
parse_source(PyObject *source, PyObject *path)
{
    PyObject *bi = PyEval_GetBuiltins();                /* borrowed */
    PyObject *compile = bi ? PyDict_GetItemString(bi, "compile") : NULL;
    if (compile == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no builtin compile");
        return NULL;
    }
    return PyObject_CallFunction(compile, "OOsii", source, path, "exec",
                                 PyCF_ONLY_AST, 1);
}

/* The defs of one of the script's files, as it is now (cached for the
 * run): "__main__" the script, else a file name in its directory. A
 * borrowed dict, or NULL without an exception when the file is gone or
 * does not parse. */
static PyObject *
defs_for(statements_state *rs, CheckpointObject *ck, PyObject *key)
{
    PyObject *d = PyDict_GetItemWithError(rs->defs, key);
    if (d != NULL || PyErr_Occurred()) {
        PyErr_Clear();
        return d;
    }
    PyObject *tree = NULL;
    int main = PyUnicode_CompareWithASCIIString(key, "__main__") == 0;
    if (main) {
        tree = Py_NewRef(rs->tree);
    }
    else if (ck->script_dir != NULL && PyUnicode_Check(ck->script_dir)) {
        PyObject *path = PyUnicode_FromFormat("%U/%U", ck->script_dir, key);
        PyObject *src = path ? chkpt_read_file(path) : NULL;
        tree = src ? parse_source(src, path) : NULL;
        Py_XDECREF(path);
        Py_XDECREF(src);
    }
    d = tree ? PyDict_New() : NULL;
    PyObject *empty = d ? PyUnicode_FromString("") : NULL;
    int bad = empty == NULL || collect_defs(rs, tree, empty, d) < 0;
    if (!bad && !main) {
        /* a sibling's own top level: runs when it is imported */
        PyObject *fp = fingerprint(rs, tree);
        bad = fp == NULL || PyDict_SetItemString(d, "<module>", fp) < 0;
        Py_XDECREF(fp);
    }
    Py_XDECREF(empty);
    Py_XDECREF(tree);
    if (bad) {
        PyErr_Clear();
        Py_CLEAR(d);
        d = Py_NewRef(Py_None);
    }
    int r = PyDict_SetItem(rs->defs, key, d);
    Py_DECREF(d);                       /* rs->defs holds it */
    if (r < 0) {
        PyErr_Clear();
        return NULL;
    }
    return d == Py_None ? NULL : d;
}

/* The dependency a code object of the script stands for: "file:qualname"
 * of the def or class it belongs to (a lambda or comprehension belongs to
 * its enclosing one), "file:<module>" for a sibling's top level; None for
 * the script's own top level, which the statements' fingerprints cover. */
static PyObject *
code_key(statements_state *rs, CheckpointObject *ck, PyCodeObject *code,
         PyObject **fp_out)
{
    *fp_out = NULL;
    PyObject *fn = code->co_filename, *file;
    if (ck->script_path != NULL && PyUnicode_Check(ck->script_path)
        && PyUnicode_Compare(fn, ck->script_path) == 0) {
        file = PyUnicode_FromString("__main__");
    }
    else {
        Py_ssize_t n = PyUnicode_GetLength(fn);
        Py_ssize_t slash = PyUnicode_FindChar(fn, '/', 0, n, -1);
        file = slash >= 0 ? PyUnicode_Substring(fn, slash + 1, n) : NULL;
    }
    PyErr_Clear();
    if (file == NULL) {
        return NULL;
    }
    PyObject *defs = defs_for(rs, ck, file);
    PyObject *qn = PyObject_GetAttrString((PyObject *)code, "co_qualname");
    PyObject *key = NULL;
    while (qn != NULL && defs != NULL) {
        PyObject *fp = PyDict_GetItemWithError(defs, qn);
        if (fp != NULL) {
            *fp_out = Py_NewRef(fp);
            key = PyUnicode_FromFormat("%U:%U", file, qn);
            break;
        }
        Py_ssize_t n = PyUnicode_GetLength(qn);
        Py_ssize_t dot = n > 0 ? PyUnicode_FindChar(qn, '.', 0, n, -1) : -1;
        if (dot < 0) {
            break;
        }
        Py_SETREF(qn, PyUnicode_Substring(qn, 0, dot));
        if (qn != NULL) {
            PyObject *loc = PyUnicode_FromString(".<locals>");
            int tail = loc ? (int)PyUnicode_Tailmatch(qn, loc, 0,
                                                      PY_SSIZE_T_MAX, 1) : -1;
            Py_XDECREF(loc);
            if (tail == 1) {
                Py_SETREF(qn, PyUnicode_Substring(
                    qn, 0, PyUnicode_GetLength(qn) - 9));
            }
        }
    }
    Py_XDECREF(qn);
    Py_DECREF(file);
    PyErr_Clear();
    return key;
}

/* The fingerprint of statement i (computed once). */
static PyObject *
stmt_fp(statements_state *rs, Py_ssize_t i)
{
    while (PyList_GET_SIZE(rs->fps) <= i) {
        Py_ssize_t j = PyList_GET_SIZE(rs->fps);
        PyObject *fp = fingerprint_of(rs, PyList_GET_ITEM(rs->stmts, j), 0);
        if (fp == NULL || PyList_Append(rs->fps, fp) < 0) {
            Py_XDECREF(fp);
            return NULL;
        }
        Py_DECREF(fp);
    }
    return PyList_GET_ITEM(rs->fps, i);
}

static long stmt_attr(statements_state *rs, Py_ssize_t i, const char *name);

static long
stmt_line(statements_state *rs, Py_ssize_t i)
{
    if (i >= PyList_GET_SIZE(rs->stmts)) {
        return -1;
    }
    return stmt_attr(rs, i, "lineno");
}

/* ---- prepare ---- */

/* The compiler flags of the module's `from __future__ import ...`. */
static int
future_flags(PyObject *stmts, statements_state *rs)
{
    int flags = 0;
    PyObject *future = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(stmts); i++) {
        PyObject *s = PyList_GET_ITEM(stmts, i);
        if (!is_a(rs, s, C_IMPFROM)) {
            continue;
        }
        PyObject *mod = PyObject_GetAttrString(s, "module");
        int fut = mod && PyUnicode_Check(mod)
                  && PyUnicode_CompareWithASCIIString(mod, "__future__") == 0;
        Py_XDECREF(mod);
        if (!fut) {
            continue;
        }
        if (future == NULL && (future = PyImport_ImportModule("__future__"))
                               == NULL) {
            return -1;
        }
        PyObject *names = PyObject_GetAttrString(s, "names");
        Py_ssize_t n = names ? PySequence_Length(names) : -1;
        for (Py_ssize_t k = 0; k < n; k++) {
            PyObject *alias = PySequence_GetItem(names, k);
            PyObject *nm = alias ? PyObject_GetAttrString(alias, "name") : NULL;
            PyObject *feat = nm ? PyObject_GetAttr(future, nm) : NULL;
            PyObject *flag = feat ? PyObject_GetAttrString(feat,
                                                           "compiler_flag")
                                  : NULL;
            if (flag != NULL) {
                flags |= (int)PyLong_AsLong(flag);
            }
            Py_XDECREF(alias);
            Py_XDECREF(nm);
            Py_XDECREF(feat);
            Py_XDECREF(flag);
            PyErr_Clear();
        }
        Py_XDECREF(names);
    }
    Py_XDECREF(future);
    PyErr_Clear();
    return flags;
}

/* A statement that only evaluates a string (a docstring after the first
 * statement): it does nothing, and compiled alone it would set __doc__. */
static int
is_noop_string(statements_state *rs, PyObject *s)
{
    if (!is_a(rs, s, C_EXPR)) {
        return 0;
    }
    PyObject *v = PyObject_GetAttrString(s, "value");
    PyObject *c = v && is_a(rs, v, C_CONST) ? PyObject_GetAttrString(v, "value")
                                            : NULL;
    int r = c != NULL && PyUnicode_Check(c);
    Py_XDECREF(v);
    Py_XDECREF(c);
    PyErr_Clear();
    return r;
}

static long
stmt_attr(statements_state *rs, Py_ssize_t i, const char *name)
{
    PyObject *l = PyObject_GetAttrString(PyList_GET_ITEM(rs->stmts, i), name);
    long r = l ? PyLong_AsLong(l) : -1;
    Py_XDECREF(l);
    PyErr_Clear();
    return r;
}

/* Statements that share a line (`a = f(); time.sleep(1)`) are one unit:
 * one code, no boundary inside. Compiled apart, each would start with a
 * line event of that line, which python gives once (-f 0 would snapshot
 * the line twice, a tracer would see it twice). */
static void
join_statements(statements_state *rs)
{
    Py_ssize_t n = PyList_GET_SIZE(rs->stmts);
    Py_ssize_t first = 0;
    for (Py_ssize_t i = 1; i < n; i++) {
        long end = stmt_attr(rs, i - 1, "end_lineno");
        if (end >= 0 && stmt_attr(rs, i, "lineno") == end) {
            rs->joined[i] = 1;
            rs->defonly[first] &= rs->defonly[i];
        }
        else {
            first = i;
        }
    }
}

static int
compile_statements(statements_state *rs)
{
    PyObject *bi = PyEval_GetBuiltins();                /* borrowed */
    PyObject *compile = bi ? PyDict_GetItemString(bi, "compile") : NULL;
    PyObject *modcls = Py_NewRef(rs->module_cls);
    int flags = future_flags(rs->stmts, rs);
    if (compile == NULL || modcls == NULL || flags < 0) {
        Py_XDECREF(modcls);
        return -1;
    }
    join_statements(rs);
    int rc = 0;
    Py_ssize_t n = PyList_GET_SIZE(rs->stmts);
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        Py_ssize_t end = i + 1;
        while (end < n && rs->joined[end]) {
            end++;
        }
        /* a lone string after the first statement does nothing; compiled
         * first in a module it would set __doc__ */
        Py_ssize_t from = i > 0 && is_noop_string(rs,
                              PyList_GET_ITEM(rs->stmts, i)) ? i + 1 : i;
        PyObject *body = PyList_GetSlice(rs->stmts, from, end);
        PyObject *mod = body && from < end
                        ? PyObject_CallFunction(modcls, "O[]", body) : NULL;
        PyObject *code = mod ? PyObject_CallFunction(
            compile, "OOsii", mod, rs->filename, "exec", flags, 1) : NULL;
        Py_XDECREF(body);
        Py_XDECREF(mod);
        if (body != NULL && from == end) {
            code = Py_NewRef(Py_None);
        }
        rc = code == NULL || PyList_Append(rs->codes, code) < 0 ? -1 : 0;
        Py_XDECREF(code);
        /* the rest of the unit: run with its first */
        for (i++; rc == 0 && i < end; i++) {
            rc = PyList_Append(rs->codes, Py_None);
        }
        i--;
    }
    Py_DECREF(modcls);
    return rc;
}

#if PY_VERSION_HEX < 0x030C0000
static int
initial_warmup(statements_state *rs)
{
    PyObject *code = Py_CompileString("def f(): pass\n", "<chkpt>",
                                      Py_file_input);
    if (code == NULL) {
        return -1;
    }
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    rs->warm0 = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        if (PyCode_Check(PyTuple_GET_ITEM(consts, i))) {
            rs->warm0 = ((PyCodeObject *)PyTuple_GET_ITEM(consts, i))->co_warmup;
        }
    }
    Py_DECREF(code);
    return 0;
}
#endif

/* Is v (str) one of list, or (top) its part before the first dot? */
static int
name_in(PyObject *v, const char *const *list, int top)
{
    if (v == NULL || !PyUnicode_Check(v)) {
        return 0;
    }
    PyObject *head = NULL;
    if (top) {
        Py_ssize_t n = PyUnicode_GetLength(v);
        Py_ssize_t dot = PyUnicode_FindChar(v, '.', 0, n, 1);
        head = dot > 0 ? PyUnicode_Substring(v, 0, dot) : Py_NewRef(v);
        v = head;
    }
    int found = 0;
    for (int k = 0; v != NULL && list[k] && !found; k++) {
        found = PyUnicode_CompareWithASCIIString(v, list[k]) == 0;
    }
    Py_XDECREF(head);
    PyErr_Clear();
    return found;
}

/* 1 when the script names a tracing or debugging API (tracing_names) or
 * imports a tool's module (tracing_modules), 0 not, -1 error. */
static int
traces_itself(statements_state *rs)
{
    PyObject *all = walk_nodes(rs, rs->tree);
    if (all == NULL) {
        return -1;
    }
    int found = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all) && !found; i++) {
        PyObject *n = PyList_GET_ITEM(all, i);
        const char *field = is_a(rs, n, C_NAME) ? "id"
                            : is_a(rs, n, C_ATTR) ? "attr"
                            : is_a(rs, n, C_ALIAS) ? "name" : NULL;
        PyObject *v = field ? PyObject_GetAttrString(n, field) : NULL;
        found = name_in(v, tracing_names, 0);
        Py_XDECREF(v);
        if (is_a(rs, n, C_IMPFROM)) {
            v = PyObject_GetAttrString(n, "module");
            found = found || name_in(v, tracing_modules, 1);
            Py_XDECREF(v);
        }
        else if (is_a(rs, n, C_IMPORT)) {
            PyObject *names = PyObject_GetAttrString(n, "names");
            Py_ssize_t m = names ? PySequence_Length(names) : -1;
            for (Py_ssize_t k = 0; k < m && !found; k++) {
                PyObject *alias = PySequence_GetItem(names, k);
                v = alias ? PyObject_GetAttrString(alias, "name") : NULL;
                found = name_in(v, tracing_modules, 1);
                Py_XDECREF(v);
                Py_XDECREF(alias);
            }
            Py_XDECREF(names);
        }
        PyErr_Clear();
    }
    Py_DECREF(all);
    return found;
}

/* The node classes resume reads (cls_names), taken from the tree of a
 * snippet that has one of each: the ast module itself is not imported. */
static int
node_classes(statements_state *rs)
{
    static const char snippet[] =
        "def f(): pass\nasync def g(): pass\nclass C: pass\n'd'\n"
        "import a\nfrom b import c\nx\nlambda: 0\npass\nglobal q\na.b\n";
    PyObject *src = PyBytes_FromString(snippet);
    PyObject *name = src ? PyUnicode_FromString("<chkpt>") : NULL;
    PyObject *tree = name ? parse_source(src, name) : NULL;
    Py_XDECREF(src);
    Py_XDECREF(name);
    if (tree == NULL) {
        return -1;
    }
    rs->module_cls = Py_NewRef((PyObject *)Py_TYPE(tree));
    /* Module -> mod -> AST */
    PyTypeObject *base = Py_TYPE(tree)->tp_base;
    rs->node_cls = base && base->tp_base ? Py_NewRef((PyObject *)base->tp_base)
                                         : NULL;
    PyObject *all = rs->node_cls ? walk_nodes(rs, tree) : NULL;
    Py_DECREF(tree);
    if (all == NULL) {
        return -1;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(all); k++) {
        PyTypeObject *tp = Py_TYPE(PyList_GET_ITEM(all, k));
        const char *dot = strrchr(tp->tp_name, '.');
        const char *short_name = dot ? dot + 1 : tp->tp_name;
        for (int i = 0; i < C_NCLS; i++) {
            if (rs->cls[i] == NULL && strcmp(short_name, cls_names[i]) == 0) {
                rs->cls[i] = Py_NewRef((PyObject *)tp);
            }
        }
    }
    Py_DECREF(all);
    for (int i = 0; i < C_NCLS; i++) {
        if (rs->cls[i] == NULL) {
            PyErr_Format(PyExc_RuntimeError, "no ast.%s", cls_names[i]);
            return -1;
        }
    }
    return 0;
}

/* 1 when a sys.monitoring tool other than chkpt's is in use (a debugger
 * or coverage on 3.12+ that started before the script), 0 not; never an
 * error. */
static int
monitored(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *sys_mon = PySys_GetObject("monitoring");      /* borrowed */
    int used = 0;
    for (int id = 0; sys_mon != NULL && id < 6 && !used; id++) {
        PyObject *name = PyObject_CallMethod(sys_mon, "get_tool", "i", id);
        /* chkpt's own (hooks.c) is in place already under -m */
        used = name != NULL && name != Py_None
               && !(PyUnicode_Check(name)
                    && PyUnicode_CompareWithASCIIString(name, "chkpt") == 0);
        Py_XDECREF(name);
    }
    PyErr_Clear();
    return used;
#else
    return 0;
#endif
}

static int
rs_init(statements_state *rs, PyObject *source, PyObject *filename)
{
    if (node_classes(rs) < 0) {
        return -1;
    }
    rs->filename = Py_NewRef(filename);
    rs->tree = parse_source(source, filename);
    rs->stmts = rs->tree ? PyObject_GetAttrString(rs->tree, "body") : NULL;
    rs->codes = PyList_New(0);
    rs->fps = PyList_New(0);
    rs->defs = PyDict_New();
    rs->carried = PyDict_New();
    if (rs->stmts == NULL || !PyList_Check(rs->stmts) || rs->codes == NULL
        || rs->fps == NULL || rs->defs == NULL || rs->carried == NULL) {
        return -1;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (initial_warmup(rs) < 0) {
        return -1;
    }
#endif
    Py_ssize_t n = PyList_GET_SIZE(rs->stmts);
    rs->defonly = PyMem_Calloc((size_t)n + 1, 1);
    rs->joined = PyMem_Calloc((size_t)n + 1, 1);
    PyObject *scratch = rs->defonly && rs->joined ? PySet_New(NULL) : NULL;
    if (scratch == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int d = definition_names(rs, PyList_GET_ITEM(rs->stmts, i), scratch);
        if (d < 0) {
            Py_DECREF(scratch);
            return -1;
        }
        rs->defonly[i] = (char)d;
    }
    Py_DECREF(scratch);
    return compile_statements(rs);
}

void
chkpt_statements_code_ran(CheckpointObject *ck, PyObject *code)
{
    if (ck->ran_code != NULL && PySet_Add(ck->ran_code, code) < 0) {
        PyErr_Clear();
    }
}

void
chkpt_statements_code_partial(CheckpointObject *ck)
{
    ck->ran_code_partial = 1;
}

void
chkpt_statements_free(CheckpointObject *ck)
{
    Py_CLEAR(ck->statements);
    Py_CLEAR(ck->ran_code);
}

int
chkpt_statements_boundaries_on(CheckpointObject *ck)
{
    long long f = ck->frequency_ms;
    return (chkpt_freq_every_line(f) || chkpt_freq_periodic(f)
            || chkpt_freq_auto(f))
           && ck->min_obj_size >= 0;
}

int
chkpt_statements_prepare(CheckpointObject *ck, PyObject *source,
                     PyObject *filename, int resume)
{
    /* -f -1 (manual snapshots only) and -z -1 (tracked objects only)
     * take no boundary snapshot, which holds every global */
    int enabled = chkpt_statements_boundaries_on(ck);
    if (!enabled && !resume) {
        return 0;           /* the module runs whole, as always */
    }
    statements_state *rs = PyMem_Calloc(1, sizeof(statements_state));
    if (rs == NULL) {
        return 0;
    }
    PyObject *cap = PyCapsule_New(rs, RESUME_CAPSULE, rs_free);
    if (cap == NULL) {
        PyMem_Free(rs);
        PyErr_Clear();
        return 0;
    }
    rs->resume = resume;
    rs->enabled = enabled;
    rs->pid = getpid();
    rs->last_end = chkpt_monotonic();
    if (rs_init(rs, source, filename) < 0) {
        chkpt_warn_exc(resume ? "cannot resume: the script cannot be split "
                                "into statements; running from the start"
                              : "no boundary snapshots");
        Py_DECREF(cap);
        return 0;
    }
    if (!resume) {
        /* under a tracer or debugger already, or one the script sets up:
         * the module runs whole, as under python (see tracing_names) */
        PyThreadState *ts = PyThreadState_Get();
        int traced = ts->c_tracefunc != NULL || ts->c_profilefunc != NULL;
        if (!traced) {
            traced = monitored();
        }
        if (!traced) {
            traced = traces_itself(rs);
        }
        if (traced != 0) {
            PyErr_Clear();
            Py_DECREF(cap);
            return 0;
        }
    }
    PyObject *osp = PyImport_ImportModule("os.path");
    rs->script_id = osp ? PyObject_CallMethod(osp, "basename", "O", filename)
                        : NULL;
    Py_XDECREF(osp);
    if (rs->script_id == NULL) {
        PyErr_Clear();
        Py_DECREF(cap);
        return 0;
    }
    if (enabled && ck->ran_code == NULL) {
        ck->ran_code = PySet_New(NULL);
        if (ck->ran_code == NULL) {
            PyErr_Clear();
        }
    }
    /* the writer's state now, not at the first boundary, while the
     * script runs (see chkpt_statements_boundary) */
    if (enabled && chkpt_writer_setup(ck) < 0) {
        PyErr_Clear();
    }
    Py_XSETREF(ck->statements, cap);
    return 1;
}

Py_ssize_t
chkpt_statements_count(CheckpointObject *ck)
{
    statements_state *rs = get_rs(ck);
    return rs ? PyList_GET_SIZE(rs->codes) : 0;
}

PyObject *
chkpt_statements_code(CheckpointObject *ck, Py_ssize_t i)
{
    return PyList_GET_ITEM(get_rs(ck)->codes, i);
}

/* ---- boundary snapshots ---- */

#if PY_VERSION_HEX < 0x030C0000
/* 3.11: the code objects under code (its constants) that ever started. */
static int
scan_warm(statements_state *rs, PyObject *code, PyObject *ran)
{
    if (((PyCodeObject *)code)->co_warmup != rs->warm0
        && PySet_Add(ran, code) < 0) {
        return -1;
    }
    PyObject *consts = ((PyCodeObject *)code)->co_consts;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c) && scan_warm(rs, c, ran) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The functions of the sibling modules, found through their globals (and
 * their classes' dicts): their code and what it holds. */
static int
scan_siblings(statements_state *rs, CheckpointObject *ck, PyObject *ran,
              PyObject *deps)
{
    PyObject *modules = PySys_GetObject("modules");     /* borrowed */
    PyObject *mods = modules ? PyDict_Values(modules) : NULL;
    if (mods == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(mods); i++) {
        PyObject *m = PyList_GET_ITEM(mods, i);
        if (!PyModule_Check(m) || m == ck->main_module) {
            continue;
        }
        PyObject *file = PyModule_GetFilenameObject(m);
        PyObject *dir = file ? PyUnicode_FromFormat("%U/", ck->script_dir)
                             : NULL;
        int sibling = dir != NULL && PyUnicode_Tailmatch(
            file, dir, 0, PY_SSIZE_T_MAX, -1) == 1;
        Py_XDECREF(file);
        Py_XDECREF(dir);
        PyErr_Clear();
        if (!sibling) {
            continue;
        }
        /* imported: its top level ran (no code object of it is kept) */
        PyObject *fname = PyModule_GetFilenameObject(m);
        Py_ssize_t fl = fname ? PyUnicode_GetLength(fname) : -1;
        Py_ssize_t sl = fl > 0 ? PyUnicode_FindChar(fname, '/', 0, fl, -1) : -1;
        PyObject *base = sl >= 0 ? PyUnicode_Substring(fname, sl + 1, fl)
                                 : NULL;
        PyObject *defs = base ? defs_for(rs, ck, base) : NULL;
        PyObject *fp = defs ? PyDict_GetItemString(defs, "<module>") : NULL;
        PyObject *key = fp ? PyUnicode_FromFormat("%U:<module>", base) : NULL;
        if (key != NULL && PyDict_SetItem(deps, key, fp) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(key);
        Py_XDECREF(base);
        Py_XDECREF(fname);
        PyErr_Clear();
        PyObject *vals = PyDict_Values(PyModule_GetDict(m));
        for (Py_ssize_t k = 0; vals != NULL && k < PyList_GET_SIZE(vals); k++) {
            PyObject *v = PyList_GET_ITEM(vals, k);
            PyObject *inner = PyType_Check(v) ? PyDict_Values(
                ((PyTypeObject *)v)->tp_dict) : PyList_New(0);
            if (inner == NULL || PyList_Append(inner, v) < 0) {
                Py_XDECREF(inner);
                break;
            }
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(inner); j++) {
                PyObject *f = PyList_GET_ITEM(inner, j);
                PyObject *code = PyObject_GetAttrString(f, "__code__");
                if (code == NULL) {
                    PyErr_Clear();
                    PyObject *fn = PyObject_GetAttrString(f, "__func__");
                    code = fn ? PyObject_GetAttrString(fn, "__code__") : NULL;
                    Py_XDECREF(fn);
                    PyErr_Clear();
                }
                if (code != NULL && PyCode_Check(code)
                    && chkpt_is_script_code(ck, (PyCodeObject *)code)
                    && scan_warm(rs, code, ran) < 0) {
                    PyErr_Clear();
                }
                Py_XDECREF(code);
            }
            Py_DECREF(inner);
        }
        Py_XDECREF(vals);
        PyErr_Clear();
    }
    Py_DECREF(mods);
    return 0;
}
#endif

/* The dependencies so far: file:qualname -> fingerprint. */
static PyObject *
dependencies(statements_state *rs, CheckpointObject *ck, Py_ssize_t next)
{
    PyObject *deps = PyDict_Copy(rs->carried);
    if (deps == NULL || ck->ran_code == NULL) {
        return deps;
    }
#if PY_VERSION_HEX < 0x030C0000
    for (Py_ssize_t i = 0; i < next; i++) {
        PyObject *c = PyList_GET_ITEM(rs->codes, i);
        if (PyCode_Check(c) && scan_warm(rs, c, ck->ran_code) < 0) {
            Py_DECREF(deps);
            return NULL;
        }
    }
    if (scan_siblings(rs, ck, ck->ran_code, deps) < 0) {
        Py_DECREF(deps);
        return NULL;
    }
#else
    (void)next;
#endif
    PyObject *it = PyObject_GetIter(ck->ran_code);
    PyObject *code;
    while (it != NULL && (code = PyIter_Next(it)) != NULL) {
        PyObject *fp;
        PyObject *key = code_key(rs, ck, (PyCodeObject *)code, &fp);
        Py_DECREF(code);
        if (key != NULL && PyDict_SetItem(deps, key, fp) < 0) {
            Py_CLEAR(it);
        }
        Py_XDECREF(key);
        Py_XDECREF(fp);
    }
    if (it == NULL || PyErr_Occurred()) {
        Py_XDECREF(it);
        Py_DECREF(deps);
        return NULL;
    }
    Py_DECREF(it);
    return deps;
}

/* The states of the random module and of numpy's legacy global generator
 * (when imported), as JSON-able lists. */
static PyObject *
random_states(void)
{
    PyObject *out = PyDict_New();
    PyObject *modules = PySys_GetObject("modules");     /* borrowed */
    if (out == NULL || modules == NULL) {
        return out;
    }
    PyObject *rnd = PyDict_GetItemString(modules, "random");
    PyObject *st = rnd ? PyObject_CallMethod(rnd, "getstate", NULL) : NULL;
    PyObject *v = st ? Py_BuildValue("[O N O]", PyTuple_GetItem(st, 0),
                                     PySequence_List(PyTuple_GetItem(st, 1)),
                                     PyTuple_GetItem(st, 2)) : NULL;
    if (v != NULL) {
        if (PyDict_SetItemString(out, "random", v) < 0) {
            Py_CLEAR(out);
        }
    }
    Py_XDECREF(st);
    Py_XDECREF(v);
    PyErr_Clear();
    PyObject *npr = out ? PyDict_GetItemString(modules, "numpy.random") : NULL;
    st = npr ? PyObject_CallMethod(npr, "get_state", NULL) : NULL;
    if (st != NULL && PyTuple_Check(st) && PyTuple_GET_SIZE(st) == 5) {
        v = Py_BuildValue("[O N O O O]", PyTuple_GET_ITEM(st, 0),
                          PyObject_CallMethod(PyTuple_GET_ITEM(st, 1),
                                              "tolist", NULL),
                          PyTuple_GET_ITEM(st, 2), PyTuple_GET_ITEM(st, 3),
                          PyTuple_GET_ITEM(st, 4));
        if (v != NULL && PyDict_SetItemString(out, "numpy", v) < 0) {
            Py_CLEAR(out);
        }
        Py_XDECREF(v);
    }
    Py_XDECREF(st);
    PyErr_Clear();
    return out;
}

static PyObject *
global_names(PyObject *globals)
{
    PyObject *names = PyList_New(0);
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (names != NULL && PyDict_Next(globals, &pos, &k, &v)) {
        if (!PyUnicode_Check(k)) {
            continue;
        }
        Py_ssize_t n = PyUnicode_GET_LENGTH(k);
        if (n >= 4 && PyUnicode_READ_CHAR(k, 0) == '_'
            && PyUnicode_READ_CHAR(k, 1) == '_'
            && PyUnicode_READ_CHAR(k, n - 1) == '_'
            && PyUnicode_READ_CHAR(k, n - 2) == '_') {
            continue;
        }
        if (PyList_Append(names, k) < 0) {
            Py_CLEAR(names);
        }
    }
    return names;
}

static PyObject *
boundary_meta(statements_state *rs, CheckpointObject *ck, Py_ssize_t next,
              PyObject *globals, PyObject *rnd)
{
    PyObject *fps = PyList_New(next);
    if (fps == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < next; i++) {
        PyObject *fp = stmt_fp(rs, i);
        if (fp == NULL) {
            Py_DECREF(fps);
            return NULL;
        }
        PyList_SET_ITEM(fps, i, Py_NewRef(fp));
    }
    PyObject *deps = dependencies(rs, ck, next);
    PyObject *names = deps ? global_names(globals) : NULL;
    PyObject *meta = names ? Py_BuildValue(
        "{s:n,s:l,s:s,s:O,s:O,s:O,s:O,s:O}", "statement", next,
        "line", stmt_line(rs, next), "function", "<module>",
        "script_id", rs->script_id, "statements", fps, "deps", deps,
        "globals", names, "random", rnd) : NULL;
    Py_DECREF(fps);
    Py_XDECREF(deps);
    Py_XDECREF(names);
    return meta;
}

/* Every global but the dunder names, as chkpt_capture_values takes them
 * (definitions and machinery it leaves out itself; of kind "auto", a value
 * that cannot be pickled is left out, listed in "skipped"). */
static PyObject *
boundary_entries(PyObject *globals)
{
    PyObject *names = global_names(globals);
    PyObject *entries = names ? PyList_New(0) : NULL;
    PyObject *extra = entries ? PyDict_New() : NULL;
    for (Py_ssize_t i = 0; extra != NULL && i < PyList_GET_SIZE(names); i++) {
        PyObject *v = PyDict_GetItemWithError(globals,
                                              PyList_GET_ITEM(names, i));
        PyObject *e = v ? PyTuple_Pack(3, PyList_GET_ITEM(names, i), v, extra)
                        : NULL;
        if ((e == NULL && PyErr_Occurred())
            || (e != NULL && PyList_Append(entries, e) < 0)) {
            Py_CLEAR(entries);
        }
        Py_XDECREF(e);
        if (entries == NULL) {
            break;
        }
    }
    Py_XDECREF(names);
    Py_XDECREF(extra);
    return entries;
}

/* Does one global hold at least `bytes` bytes (select.c's estimate)?
 * 1 yes, 0 no, -1 error. */
static int
holds_more_than(CheckpointObject *ck, PyObject *globals, long long bytes)
{
    PyObject *seen = PySet_New(NULL);
    if (seen == NULL) {
        return -1;
    }
    /* the size alone: tracked objects count by their size here */
    int big = 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (!big && PyDict_Next(globals, &pos, &k, &v)) {
        if (PyUnicode_Check(k) && !chkpt_is_excluded(chkpt_get_state(ck->module),
                                                     k, v)) {
            big = chkpt_holds_at_least(ck, v, bytes > 0 ? bytes : 1, seen);
        }
    }
    Py_DECREF(seen);
    return big;
}

/* What a boundary snapshot needs: read in the writer's child (or here,
 * when there is none), as the script's process left it at the clone. */
typedef struct {
    statements_state *rs;
    Py_ssize_t next;
    PyObject *globals;
    PyObject *random;             /* random_states(), read before the
                                     clone: a child's after-fork callbacks
                                     reseed the random module */
} boundary_arg;

/* The boundary snapshot itself (chkpt_writer_fn): its meta (fingerprints,
 * dependencies, random states) and every global. Gathered in the child,
 * so that the script's process allocates nothing for it: its garbage
 * collections come where they come under python, and objects of the
 * script finalized at shutdown go in the same order. chkpt's own failure
 * is warned about and gives None. */
static PyObject *
boundary_capture(CheckpointObject *ck, const chkpt_capture_env *env,
                 void *arg)
{
    boundary_arg *a = (boundary_arg *)arg;
    PyObject *extra = boundary_meta(a->rs, ck, a->next, a->globals,
                                    a->random);
    PyObject *entries = extra ? boundary_entries(a->globals) : NULL;
    PyObject *r = entries ? chkpt_capture_values(ck, env, CHKPT_KIND_AUTO,
                                                 entries, extra)
                          : NULL;
    Py_XDECREF(entries);
    Py_XDECREF(extra);
    if (r == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        chkpt_warn_exc("boundary snapshot failed");
        r = Py_NewRef(Py_None);
    }
    return r;
}

int
chkpt_statements_boundary(CheckpointObject *ck, Py_ssize_t next,
                      PyObject *globals)
{
    statements_state *rs = get_rs(ck);
    if (rs == NULL) {
        return 0;
    }
    chkpt_writer_unit_ended(ck, 0);
    if (!rs->enabled || !chkpt_statements_boundaries_on(ck)
        || next >= PyList_GET_SIZE(rs->codes) || ck->store_failed
        || ck->in_snapshot || ck->ran_code_partial) {
        return 0;
    }
    if (!rs->defonly[next - 1]) {
        rs->work = 1;
    }
    /* after the unit statement next - 1 starts */
    while (next < PyList_GET_SIZE(rs->codes) && rs->joined[next]) {
        next++;
    }
    if (next >= PyList_GET_SIZE(rs->codes)) {
        return 0;
    }
    double now = chkpt_monotonic();
    double since = now - rs->last_end;
    double min = chkpt_freq_periodic(ck->frequency_ms)
                 ? (double)ck->frequency_ms / 1000.0 : 0;
    if (min <= 0 || min > BOUNDARY_MIN_S) {
        min = BOUNDARY_MIN_S;
    }
    /* only definitions since the last one: resuming there would run them
     * all again anyway; a snapshot still being written: after the next
     * statement */
    if (!rs->work || since < min
        || since < BOUNDARY_COST_RATIO * rs->last_cost
        || rs->pid != getpid() || chkpt_writer_busy(ck)) {
        return 0;
    }
    /* -f auto: the 2 s and 10x rules above, not the snapshot processes'
     * budget (child.c), which the timer's snapshots use up as soon as it
     * allows one: a boundary would never find room */
    /* What chkpt allocates here must not start a collection of the
     * script's objects that python would not have started here: which
     * generation an object is in decides the order in which cycles are
     * finalized (at exit too). With the collector off, the count of
     * allocations is back where it was once chkpt's temporaries are
     * freed, and a collection comes where it would have. */
    int gc_was_on = PyGC_Disable();
    int big = holds_more_than(ck, globals, (long long)(
        since / BOUNDARY_COST_RATIO * BOUNDARY_WRITE_BPS));
    PyObject *r = NULL;
    PyObject *rnd = big == 0 ? random_states() : NULL;
    if (rnd != NULL) {
        rs->work = 0;
        boundary_arg a = {rs, next, globals, rnd};
        chkpt_snapshot_request rq = {.kind = CHKPT_KIND_AUTO,
                                     .fn = boundary_capture, .arg = &a};
        r = chkpt_snapshot_take(ck, &rq);
        Py_DECREF(rnd);
    }
    else if (big == 0) {
        PyErr_Clear();
        big = 1;                /* no memory: later */
    }
    if (gc_was_on) {
        PyGC_Enable();
    }
    if (big != 0) {
        if (big < 0 && !PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;          /* the script's own exception (Ctrl-C) */
        }
        PyErr_Clear();
        return 0;               /* later, once the work pays for it */
    }
    rs->last_end = chkpt_monotonic();
    if (r == NULL) {
        return -1;              /* the script's own exception (Ctrl-C) */
    }
    chkpt_writer_unit_ended(ck, 1);
    /* what the script paid for it (the clone, with a child); the first
     * one in this process also opened the store, which the next ones do
     * not */
    rs->last_cost = ck->seq > 1 ? rs->last_end - now : 0;
    Py_DECREF(r);
    return 0;
}

/* ---- --resume ---- */

/* The names statement s binds when it only defines (import, def, class)
 * into out; 1 it only defines, 0 it does something else. */
static int
definition_names(statements_state *rs, PyObject *s, PyObject *out)
{
    if (is_funcdef(rs, s) || is_a(rs, s, C_CLASS)) {
        PyObject *n = PyObject_GetAttrString(s, "name");
        int r = n == NULL || PySet_Add(out, n) < 0 ? -1 : 1;
        Py_XDECREF(n);
        return r;
    }
    int imp = is_a(rs, s, C_IMPORT);
    if (!imp && !is_a(rs, s, C_IMPFROM)) {
        return is_noop_string(rs, s) || is_a(rs, s, C_PASS);
    }
    PyObject *names = PyObject_GetAttrString(s, "names");
    Py_ssize_t n = names ? PySequence_Length(names) : -1;
    int r = n < 0 ? -1 : 1;
    for (Py_ssize_t k = 0; k < n && r == 1; k++) {
        PyObject *alias = PySequence_GetItem(names, k);
        PyObject *as = alias ? PyObject_GetAttrString(alias, "asname") : NULL;
        PyObject *nm = as ? PyObject_GetAttrString(alias, "name") : NULL;
        PyObject *bound = NULL;
        if (nm != NULL && as != Py_None) {
            bound = Py_NewRef(as);
        }
        else if (nm != NULL && imp) {
            PyObject *dot = PyUnicode_FromString(".");
            PyObject *parts = dot ? PyUnicode_Split(nm, dot, 1) : NULL;
            bound = parts ? Py_NewRef(PyList_GET_ITEM(parts, 0)) : NULL;
            Py_XDECREF(dot);
            Py_XDECREF(parts);
        }
        else if (nm != NULL
                 && PyUnicode_CompareWithASCIIString(nm, "*") != 0) {
            bound = Py_NewRef(nm);
        }
        /* a star import binds what it binds: not counted (conservative) */
        if (PyErr_Occurred() || (bound != NULL && PySet_Add(out, bound) < 0)) {
            r = -1;
        }
        Py_XDECREF(alias);
        Py_XDECREF(as);
        Py_XDECREF(nm);
        Py_XDECREF(bound);
    }
    Py_XDECREF(names);
    return r;
}

/* Names node mentions (ast.Name ids, global statements) into out; with
 * only_funcs, only those inside functions and lambdas. */
static int
used_names(statements_state *rs, PyObject *node, PyObject *out, int only_funcs)
{
    PyObject *all = walk_nodes(rs, node);
    if (all == NULL) {
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all) && rc == 0; i++) {
        PyObject *n = PyList_GET_ITEM(all, i);
        if (only_funcs) {
            if (is_funcdef(rs, n) || is_a(rs, n, C_LAMBDA)) {
                rc = used_names(rs, n, out, 0);
            }
            continue;
        }
        if (is_a(rs, n, C_NAME)) {
            PyObject *id = PyObject_GetAttrString(n, "id");
            rc = id == NULL || PySet_Add(out, id) < 0 ? -1 : 0;
            Py_XDECREF(id);
        }
        else if (is_a(rs, n, C_GLOBAL)) {
            PyObject *ids = PyObject_GetAttrString(n, "names");
            PyObject *it = ids ? PyObject_GetIter(ids) : NULL;
            PyObject *id;
            while (it != NULL && (id = PyIter_Next(it)) != NULL) {
                if (PySet_Add(out, id) < 0) {
                    rc = -1;
                }
                Py_DECREF(id);
            }
            rc = it == NULL || PyErr_Occurred() ? -1 : rc;
            Py_XDECREF(it);
            Py_XDECREF(ids);
        }
    }
    Py_DECREF(all);
    return rc;
}

/* Why a boundary snapshot cannot be resumed from (str), or None when it
 * can. */
static PyObject *
check_snapshot(statements_state *rs, CheckpointObject *ck, PyObject *meta)
{
    PyObject *kobj = chkpt_dict_get(meta, "statement");
    PyObject *old = chkpt_dict_get(meta, "statements");
    PyObject *deps = chkpt_dict_get(meta, "deps");
    Py_ssize_t k = kobj && PyLong_Check(kobj) ? PyLong_AsSsize_t(kobj) : -1;
    Py_ssize_t n = PyList_GET_SIZE(rs->stmts);
    if (k < 0 || old == NULL || !PyList_Check(old)
        || PyList_GET_SIZE(old) != k || deps == NULL || !PyDict_Check(deps)) {
        PyErr_Clear();
        return PyUnicode_FromString("not a boundary snapshot chkpt can read");
    }
    PyObject *py = chkpt_dict_get(meta, "python");
    PyObject *ours = PyUnicode_FromFormat("%d.%d.", PY_MAJOR_VERSION,
                                          PY_MINOR_VERSION);
    int same_py = py && ours && PyUnicode_Check(py)
                  && PyUnicode_Tailmatch(py, ours, 0, PY_SSIZE_T_MAX, -1) == 1;
    Py_XDECREF(ours);
    if (!same_py) {
        return PyUnicode_FromFormat("taken by Python %S", py ? py : Py_None);
    }
    if (k > n) {
        return PyUnicode_FromFormat("at statement %zd, the script has %zd now",
                                    k + 1, n);
    }
    if (k < n && rs->joined[k]) {
        return PyUnicode_FromFormat(
            "at statement %zd (line %ld), which now shares its line with the "
            "one before", k + 1, stmt_line(rs, k));
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *fp = stmt_fp(rs, i);
        if (fp == NULL) {
            return NULL;
        }
        if (PyObject_RichCompareBool(fp, PyList_GET_ITEM(old, i), Py_EQ) != 1) {
            PyErr_Clear();
            return PyUnicode_FromFormat("statement %zd (line %ld) changed",
                                        i + 1, stmt_line(rs, i));
        }
    }
    Py_ssize_t pos = 0;
    PyObject *key, *fp;
    while (PyDict_Next(deps, &pos, &key, &fp)) {
        PyObject *colon = PyUnicode_FromString(":");
        PyObject *parts = colon && PyUnicode_Check(key)
                          ? PyUnicode_RSplit(key, colon, 1) : NULL;
        Py_XDECREF(colon);
        PyObject *defs = parts && PyList_GET_SIZE(parts) == 2
                         ? defs_for(rs, ck, PyList_GET_ITEM(parts, 0)) : NULL;
        PyObject *now = defs ? PyDict_GetItemWithError(
            defs, PyList_GET_ITEM(parts, 1)) : NULL;
        int same = now != NULL
                   && PyObject_RichCompareBool(now, fp, Py_EQ) == 1;
        Py_XDECREF(parts);
        PyErr_Clear();
        if (!same) {
            return PyUnicode_FromFormat("%U, which ran before it, changed",
                                        key);
        }
    }
    return Py_NewRef(Py_None);
}

/* The globals the snapshot had but neither saved nor gets back from the
 * definitions run again, that a remaining statement or a function of the
 * script names: the snapshot cannot be resumed from (str), else None. */
static PyObject *
check_unsaved(statements_state *rs, PyObject *meta, Py_ssize_t k)
{
    PyObject *names = chkpt_dict_get(meta, "globals");
    PyObject *vars = chkpt_dict_get(meta, "variables");
    if (names == NULL || !PyList_Check(names) || vars == NULL
        || !PyList_Check(vars)) {
        return PyUnicode_FromString("it lists no globals");
    }
    PyObject *have = PySet_New(NULL);
    PyObject *used = have ? PySet_New(NULL) : NULL;
    PyObject *missing = used ? PyList_New(0) : NULL;
    PyObject *r = NULL;
    if (missing == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(vars); i++) {
        PyObject *var = PyList_GET_ITEM(vars, i);
        PyObject *vn = chkpt_dict_get(var, "name");
        if (chkpt_dict_get(var, "standin") != NULL) {
            continue;           /* a stand-in for a value not saved */
        }
        if (vn != NULL && PySet_Add(have, vn) < 0) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        if (definition_names(rs, PyList_GET_ITEM(rs->stmts, i), have) < 0) {
            goto done;
        }
    }
    if (used_names(rs, rs->tree, used, 1) < 0) {
        goto done;
    }
    for (Py_ssize_t i = k; i < PyList_GET_SIZE(rs->stmts); i++) {
        if (used_names(rs, PyList_GET_ITEM(rs->stmts, i), used, 0) < 0) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
        PyObject *nm = PyList_GET_ITEM(names, i);
        int h = PySet_Contains(have, nm);
        int u = h == 0 ? PySet_Contains(used, nm) : 0;
        if (h < 0 || u < 0 || (u && PyList_Append(missing, nm) < 0)) {
            goto done;
        }
    }
    if (PyList_GET_SIZE(missing) == 0) {
        r = Py_NewRef(Py_None);
    }
    else {
        PyObject *sep = PyUnicode_FromString(", ");
        PyObject *j = sep ? PyUnicode_Join(sep, missing) : NULL;
        Py_XDECREF(sep);
        r = j ? PyUnicode_FromFormat("variable(s) %U could not be saved and "
                                     "are used later", j) : NULL;
        Py_XDECREF(j);
    }
done:
    Py_XDECREF(have);
    Py_XDECREF(used);
    Py_XDECREF(missing);
    return r;
}

static int
restore_random(PyObject *meta)
{
    PyObject *rnd = chkpt_dict_get(meta, "random");
    if (rnd == NULL || !PyDict_Check(rnd)) {
        return 0;
    }
    PyObject *py = chkpt_dict_get(rnd, "random");
    if (py != NULL && PyList_Check(py) && PyList_GET_SIZE(py) == 3) {
        PyObject *m = PyImport_ImportModule("random");
        PyObject *ints = m ? PyList_AsTuple(PyList_GET_ITEM(py, 1)) : NULL;
        PyObject *r = ints ? PyObject_CallMethod(
            m, "setstate", "((OOO))", PyList_GET_ITEM(py, 0), ints,
            PyList_GET_ITEM(py, 2)) : NULL;
        Py_XDECREF(m);
        Py_XDECREF(ints);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    PyObject *np = chkpt_dict_get(rnd, "numpy");
    if (np != NULL && PyList_Check(np) && PyList_GET_SIZE(np) == 5) {
        PyObject *npm = PyImport_ImportModule("numpy");
        PyObject *key = npm ? PyObject_CallMethod(
            npm, "asarray", "Os", PyList_GET_ITEM(np, 1), "uint32") : NULL;
        PyObject *nr = key ? PyImport_ImportModule("numpy.random") : NULL;
        PyObject *r = nr ? PyObject_CallMethod(
            nr, "set_state", "((OOOOO))", PyList_GET_ITEM(np, 0), key,
            PyList_GET_ITEM(np, 2), PyList_GET_ITEM(np, 3),
            PyList_GET_ITEM(np, 4)) : NULL;
        Py_XDECREF(npm);
        Py_XDECREF(key);
        Py_XDECREF(nr);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

/* Everything but the dunder names out of globals: __main__ as fresh. */
static void
reset_globals(PyObject *globals)
{
    PyObject *names = global_names(globals);
    for (Py_ssize_t i = 0; names != NULL && i < PyList_GET_SIZE(names); i++) {
        if (PyDict_DelItem(globals, PyList_GET_ITEM(names, i)) < 0) {
            PyErr_Clear();
        }
    }
    Py_XDECREF(names);
    PyErr_Clear();
}

/* Runs the definitions among statements 0..k-1, loads the snapshot's
 * variables into globals, restores the random states. 1 done, 0 the
 * snapshot cannot be loaded (the reason in *why), -1 the script's
 * exception from a definition. */
static int
restore(statements_state *rs, CheckpointObject *ck, PyObject *si, PyObject *meta,
        Py_ssize_t k, PyObject *globals, PyObject **why)
{
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *code = PyList_GET_ITEM(rs->codes, i);
        /* a unit that only defines (its first statement says for all) */
        if (!rs->defonly[i] || code == Py_None) {
            continue;
        }
        PyObject *r = PyEval_EvalCode(code, globals, globals);
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                return -1;          /* Ctrl-C, SystemExit: the script's */
            }
            /* it needs what the statements between did (a class body
             * reading a global): an earlier boundary, or the start */
            PyObject *exc = chkpt_describe_pending();
            PyErr_Clear();
            *why = exc ? PyUnicode_FromFormat(
                "statement %zd (line %ld) does not run on its own (%U)",
                i + 1, stmt_line(rs, i), exc) : NULL;
            Py_XDECREF(exc);
            PyErr_Clear();
            return 0;
        }
        Py_DECREF(r);
    }
    /* load.c resolves __main__'s classes to the live module when the
     * snapshot's script is the running one: it is, wherever it was then */
    PyObject *script = chkpt_dict_get(meta, "script");
    PyObject *ours = ck->script_path;
    ck->script_path = Py_NewRef(script && PyUnicode_Check(script) ? script
                                                                  : ours);
    PyObject *vars = chkpt_load(ck->module, si, Py_None, 1);
    Py_SETREF(ck->script_path, ours);
    /* stand-ins of values not saved stay out (check_unsaved made sure no
     * remaining statement needs them) */
    PyObject *vmeta = chkpt_dict_get(meta, "variables");
    for (Py_ssize_t i = 0; vars != NULL && vmeta != NULL && PyList_Check(vmeta)
                           && i < PyList_GET_SIZE(vmeta); i++) {
        PyObject *var = PyList_GET_ITEM(vmeta, i);
        PyObject *vn = chkpt_dict_get(var, "name");
        if (chkpt_dict_get(var, "standin") != NULL && vn != NULL
            && PyDict_DelItem(vars, vn) < 0) {
            PyErr_Clear();
        }
    }
    if (vars == NULL || PyDict_Update(globals, vars) < 0
        || restore_random(meta) < 0) {
        Py_XDECREF(vars);
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            return -1;
        }
        *why = chkpt_describe_pending();
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(vars);
    PyObject *deps = chkpt_dict_get(meta, "deps");
    if (PyDict_Update(rs->carried, deps) < 0) {
        PyErr_Clear();
    }
    return 1;
}

/* Adds "what: why" to reasons (str list), the first MAX_REASONS only. */
static void
add_reason(PyObject *reasons, PyObject *si, PyObject *meta, PyObject *why)
{
    if (why == NULL || PyList_GET_SIZE(reasons) >= MAX_REASONS) {
        PyErr_Clear();
        return;
    }
    PyObject *line = chkpt_dict_get(meta, "line");
    PyObject *path = PyObject_GetAttrString(si, "path");
    PyObject *osp = path ? PyImport_ImportModule("os.path") : NULL;
    PyObject *base = osp ? PyObject_CallMethod(osp, "basename", "O", path)
                         : NULL;
    Py_XDECREF(path);
    Py_XDECREF(osp);
    PyObject *s = base ? PyUnicode_FromFormat(
        "the one before line %S (%U): %U", line ? line : Py_None, base, why)
        : NULL;
    Py_XDECREF(base);
    if (s != NULL) {
        int dup = PySequence_Contains(reasons, s);
        if (dup == 0 && PyList_Append(reasons, s) < 0) {
            PyErr_Clear();
        }
        Py_DECREF(s);
    }
    PyErr_Clear();
}

static void
say_where(statements_state *rs, CheckpointObject *ck, Py_ssize_t k, PyObject *si,
          PyObject *reasons, Py_ssize_t nfound)
{
    PyObject *sep = PyUnicode_FromString("; ");
    PyObject *why = sep ? PyUnicode_Join(sep, reasons) : NULL;
    Py_XDECREF(sep);
    if (why == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *path = si ? PyObject_GetAttrString(si, "path") : NULL;
    PyErr_Clear();
    if (si != NULL) {
        chkpt_warn_py("resuming %U at line %ld (statement %zd of %zd) from "
                      "%S, statements 1-%zd skipped%s%U",
                      rs->script_id, stmt_line(rs, k), k + 1,
                      PyList_GET_SIZE(rs->stmts), path ? path : Py_None, k,
                      PyList_GET_SIZE(reasons) ? "; later snapshots rejected: "
                                               : "", why);
    }
    else if (nfound == 0) {
        chkpt_warn_py("no snapshot of %U to resume from in %U: running it "
                      "from the start", rs->script_id, ck->output_dir);
    }
    else {
        chkpt_warn_py("no valid snapshot of %U to resume from: running it "
                      "from the start; rejected: %U", rs->script_id, why);
    }
    Py_XDECREF(path);
    Py_DECREF(why);
}

Py_ssize_t
chkpt_statements_start(CheckpointObject *ck, PyObject *globals)
{
    statements_state *rs = get_rs(ck);
    if (rs == NULL) {
        return 0;
    }
    /* the script's own time counts, from its first statement */
    rs->last_end = chkpt_monotonic();
    if (!rs->resume) {
        return 0;
    }
    PyObject *all = chkpt_snapshots(ck->module, ck->output_dir);
    if (all == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            return -1;
        }
        PyErr_Clear();
        all = PyList_New(0);
    }
    PyObject *reasons = all ? PyList_New(0) : NULL;
    if (reasons == NULL) {
        Py_XDECREF(all);
        chkpt_warn_exc("cannot resume; running from the start");
        return 0;
    }
    Py_ssize_t start = 0, nfound = 0;
    PyObject *chosen = NULL;
    for (Py_ssize_t i = PyList_GET_SIZE(all) - 1; i >= 0; i--) {
        PyObject *si = PyList_GET_ITEM(all, i);
        PyObject *meta = PyObject_GetAttrString(si, "meta");
        PyObject *id = meta ? chkpt_dict_get(meta, "script_id") : NULL;
        PyObject *kobj = meta ? chkpt_dict_get(meta, "statement") : NULL;
        if (id == NULL || kobj == NULL || !PyLong_Check(kobj)
            || PyObject_RichCompareBool(id, rs->script_id, Py_EQ) != 1) {
            PyErr_Clear();
            Py_XDECREF(meta);
            continue;
        }
        nfound++;
        Py_ssize_t k = PyLong_AsSsize_t(kobj);
        PyObject *why = check_snapshot(rs, ck, meta);
        if (why == Py_None) {
            Py_SETREF(why, check_unsaved(rs, meta, k));
        }
        if (why != Py_None) {
            add_reason(reasons, si, meta, why);
            Py_XDECREF(why);
            Py_DECREF(meta);
            continue;
        }
        Py_DECREF(why);
        why = NULL;
        int r = restore(rs, ck, si, meta, k, globals, &why);
        if (r == 0) {
            add_reason(reasons, si, meta, why);
            reset_globals(globals);
        }
        Py_XDECREF(why);
        Py_DECREF(meta);
        if (r < 0) {
            Py_DECREF(all);
            Py_DECREF(reasons);
            return -1;
        }
        if (r == 0) {
            continue;
        }
        start = k;
        chosen = si;
        break;
    }
    say_where(rs, ck, start, chosen, reasons, nfound);
    Py_DECREF(all);
    Py_DECREF(reasons);
    rs->last_end = chkpt_monotonic();
    return start;
}
