/* verbs.c: `python -m chkpt ls|show|explore|export|verify|gc`.
 *
 * ls and show read manifests only (never array data), so they are instant
 * whatever the size of the snapshots. Errors are one `chkpt: error: ...`
 * line and exit status 1; usage errors (2) are caught by cli.c.
 */
#include "chkpt.h"
#include "read.h"
#include "pickler.h"      /* chkpt_pickler_kwargs: one protocol 5 setup */
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <stdarg.h>


/* ------------------------------------------------------------------ */
/* output                                                              */

static int
out_obj(PyObject *s)
{
    PyObject *f = PySys_GetObject("stdout");       /* borrowed */
    if (f == NULL || f == Py_None) {
        return 0;
    }
    return PyFile_WriteObject(s, f, Py_PRINT_RAW);
}

static int
outf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *s = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (s == NULL) {
        return -1;
    }
    int r = out_obj(s);
    Py_DECREF(s);
    return r;
}

static void
flush_stdout(void)
{
    PyObject *f = PySys_GetObject("stdout");
    if (f != NULL && f != Py_None) {
        PyObject *r = PyObject_CallMethod(f, "flush", NULL);
        Py_XDECREF(r);
    }
    PyErr_Clear();
}

/* The pending exception as one `chkpt: error:` line; exit status 1.
 * KeyboardInterrupt is left pending (-1) so python reports it. */
static int
fail(void)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        return -1;
    }
    chkpt_saved_error e;
    chkpt_error_save(&e);
    PyObject *exc = chkpt_error_value(&e);
    PyObject *s = exc ? PyObject_Str(exc) : NULL;
    if (s != NULL && PyUnicode_GET_LENGTH(s) > 0) {
        if (exc && PyErr_GivenExceptionMatches(exc, PyExc_KeyError)
            && PyUnicode_GET_LENGTH(s) > 2) {
            /* KeyError's str() quotes the message */
            Py_SETREF(s, PyUnicode_Substring(s, 1, PyUnicode_GET_LENGTH(s) - 1));
        }
        if (s != NULL) {
            chkpt_warn_py("error: %U", s);
        }
    }
    else {
        chkpt_warn("error: %s", exc ? Py_TYPE(exc)->tp_name : "unknown error");
    }
    PyErr_Clear();
    Py_XDECREF(s);
    chkpt_error_discard(&e);
    return 1;
}

static PyObject *
human_size(long long n)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (n < 1024) {
        return PyUnicode_FromFormat("%lld B", n);
    }
    double v = (double)n;
    int u = 0;
    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    char buf[64];
    snprintf(buf, sizeof(buf), v < 10 ? "%.1f %s" : "%.0f %s", v, units[u]);
    return PyUnicode_FromString(buf);
}

static PyObject *
size_of(PyObject *v)
{
    if (v != NULL && PyLong_Check(v)) {
        long long n = PyLong_AsLongLong(v);
        if (!(n == -1 && PyErr_Occurred())) {
            return human_size(n);
        }
        PyErr_Clear();
    }
    return PyUnicode_FromString("?");
}

static PyObject *
local_time(PyObject *t)
{
    double secs = t && PyFloat_Check(t) ? PyFloat_AsDouble(t)
                  : t && PyLong_Check(t) ? PyLong_AsDouble(t) : -1.0;
    PyErr_Clear();
    if (secs < 0) {
        return PyUnicode_FromString("?");
    }
    time_t tt = (time_t)secs;
    struct tm tm;
    char buf[64];
    if (localtime_r(&tt, &tm) == NULL
        || strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm) == 0) {
        return PyUnicode_FromString("?");
    }
    return PyUnicode_FromString(buf);
}

static PyObject *
str_or(PyObject *v, const char *dflt)
{
    if (v == NULL || v == Py_None) {
        return PyUnicode_FromString(dflt);
    }
    return PyObject_Str(v);
}

/* ls's NAME column: the snapshot's name; for a crash snapshot without one,
 * "!" and its exception, so that crashes stand out. */
static PyObject *
name_column(PyObject *meta)
{
    PyObject *name = chkpt_dict_get(meta, "name");
    PyObject *exc = chkpt_dict_get(meta, "exception");
    if ((name == NULL || name == Py_None) && exc != NULL && PyUnicode_Check(exc)) {
        if (PyUnicode_GET_LENGTH(exc) > 40) {
            PyObject *head = PyUnicode_Substring(exc, 0, 37);
            PyObject *r = head ? PyUnicode_FromFormat("! %U...", head) : NULL;
            Py_XDECREF(head);
            return r;
        }
        return PyUnicode_FromFormat("! %U", exc);
    }
    return str_or(name, "-");
}

/* show's VARIABLE column: in a crash snapshot, a frame's local is
 * "name (function)" and a global "name (module)". */
static PyObject *
scoped_name(PyObject *meta, PyObject *var)
{
    PyObject *name = chkpt_dict_get(var, "name");
    PyObject *frame = chkpt_dict_get(var, "frame");
    PyObject *glb = chkpt_dict_get(var, "globals");
    PyObject *tb = chkpt_dict_get(meta, "traceback");
    if (name == NULL || !PyUnicode_Check(name)) {
        return PyUnicode_FromString("?");
    }
    if (frame != NULL && PyLong_Check(frame) && tb != NULL && PyList_Check(tb)) {
        Py_ssize_t i = PyLong_AsSsize_t(frame);
        PyObject *fe = i >= 0 && i < PyList_GET_SIZE(tb) ? PyList_GET_ITEM(tb, i) : NULL;
        PyErr_Clear();
        PyObject *q = chkpt_dict_get(fe, "qualname");
        if (q != NULL) {
            return PyUnicode_FromFormat("%U (%S #%zd)", name, q, i);
        }
    }
    if (glb != NULL && glb != Py_None) {
        return PyUnicode_FromFormat("%U (%S)", name, glb);
    }
    return Py_NewRef(name);
}

/* Prints rows (lists of str) as aligned columns; the last column is not
 * padded. */
static int
print_table(PyObject *rows)
{
    Py_ssize_t ncol = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        Py_ssize_t n = PyList_GET_SIZE(PyList_GET_ITEM(rows, i));
        ncol = n > ncol ? n : ncol;
    }
    Py_ssize_t *w = PyMem_Calloc((size_t)(ncol ? ncol : 1), sizeof(Py_ssize_t));
    if (w == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        for (Py_ssize_t c = 0; c < PyList_GET_SIZE(row); c++) {
            Py_ssize_t l = PyUnicode_GET_LENGTH(PyList_GET_ITEM(row, c));
            w[c] = l > w[c] ? l : w[c];
        }
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows) && rc == 0; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        PyObject *line = PyUnicode_FromString("");
        for (Py_ssize_t c = 0; line && c < PyList_GET_SIZE(row); c++) {
            PyObject *cell = PyList_GET_ITEM(row, c);
            PyObject *padded = c + 1 < PyList_GET_SIZE(row)
                ? PyObject_CallMethod(cell, "ljust", "n", w[c] + 2)
                : Py_NewRef(cell);
            PyObject *nl = padded ? PyUnicode_Concat(line, padded) : NULL;
            Py_XDECREF(padded);
            Py_SETREF(line, nl);
        }
        if (line == NULL) {
            rc = -1;
            break;
        }
        PyObject *stripped = PyObject_CallMethod(line, "rstrip", NULL);
        Py_DECREF(line);
        rc = stripped ? outf("%U\n", stripped) : -1;
        Py_XDECREF(stripped);
    }
    PyMem_Free(w);
    return rc;
}

/* steals the references of the cells; NULL cells make it fail */
static int
add_row(PyObject *rows, int n, ...)
{
    va_list ap;
    va_start(ap, n);
    PyObject *row = PyList_New(n);
    int bad = row == NULL;
    for (int i = 0; i < n; i++) {
        PyObject *cell = va_arg(ap, PyObject *);
        if (cell == NULL || row == NULL) {
            Py_XDECREF(cell);
            bad = 1;
            continue;
        }
        PyList_SET_ITEM(row, i, cell);
    }
    va_end(ap);
    if (bad || PyList_Append(rows, row) < 0) {
        Py_XDECREF(row);
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return -1;
    }
    Py_DECREF(row);
    return 0;
}

/* ------------------------------------------------------------------ */
/* which store, which snapshot                                         */

static PyObject *
store_dir(chkpt_cli *cli)
{
    if (cli->target != NULL) {
        return Py_NewRef(cli->target);
    }
    if (cli->output_dir != NULL) {
        return Py_NewRef(cli->output_dir);
    }
    return PyUnicode_FromString(CHKPT_DEFAULT_OUTPUT_DIR);
}

/* The verb's SNAPSHOT argument: a manifest, a store dir (its newest), or
 * the id of a snapshot of the -o store. */
static PyObject *
snapshot_arg(PyObject *module, chkpt_cli *cli)
{
    if (cli->output_dir != NULL && cli->target != NULL) {
        PyObject *cand = PyUnicode_FromFormat("%U/snapshots/%U.ckpt",
                                              cli->output_dir, cli->target);
        PyObject *fs = cand ? PyUnicode_EncodeFSDefault(cand) : NULL;
        struct stat sb;
        if (fs != NULL && stat(PyBytes_AS_STRING(fs), &sb) == 0
            && S_ISREG(sb.st_mode)) {
            Py_DECREF(fs);
            return cand;
        }
        Py_XDECREF(fs);
        Py_XDECREF(cand);
        PyErr_Clear();
    }
    return Py_NewRef(cli->target);
}

static PyObject *
snapshot_id(PyObject *path)
{
    PyObject *osp = PyImport_ImportModule("os.path");
    PyObject *base = osp ? PyObject_CallMethod(osp, "basename", "O", path) : NULL;
    Py_XDECREF(osp);
    if (base == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(base, "removesuffix", "s", ".ckpt");
    Py_DECREF(base);
    return r;
}

static PyObject *
where_of(PyObject *meta)
{
    PyObject *script = chkpt_dict_get(meta, "script");
    PyObject *line = chkpt_dict_get(meta, "line");
    PyObject *base = NULL;
    if (script != NULL && PyUnicode_Check(script)) {
        PyObject *osp = PyImport_ImportModule("os.path");
        base = osp ? PyObject_CallMethod(osp, "basename", "O", script) : NULL;
        Py_XDECREF(osp);
    }
    if (base == NULL) {
        PyErr_Clear();
        base = PyUnicode_FromString("?");
        if (base == NULL) {
            return NULL;
        }
    }
    PyObject *r = line && line != Py_None ? PyUnicode_FromFormat("%U:%S", base, line)
                                          : Py_NewRef(base);
    Py_DECREF(base);
    return r;
}

/* ------------------------------------------------------------------ */
/* ls                                                                  */

static long long du_total;

static int
du_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)flag;
    (void)ftw;
    du_total += (long long)sb->st_blocks * 512;
    return 0;
}

/* "3: a, b, c" (names cut at 48 characters) */
static PyObject *
variable_names(PyObject *vars)
{
    Py_ssize_t n = vars && PyList_Check(vars) ? PyList_GET_SIZE(vars) : 0;
    PyObject *names = PyList_New(0);
    if (names == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *nm = chkpt_dict_get(PyList_GET_ITEM(vars, i), "name");
        if (nm != NULL && PyUnicode_Check(nm) && PyList_Append(names, nm) < 0) {
            Py_DECREF(names);
            return NULL;
        }
    }
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *j = sep ? PyUnicode_Join(sep, names) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(names);
    if (j == NULL) {
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(j) > 48) {
        PyObject *head = PyUnicode_Substring(j, 0, 45);
        Py_SETREF(j, head ? PyUnicode_FromFormat("%U...", head) : NULL);
        Py_XDECREF(head);
        if (j == NULL) {
            return NULL;
        }
    }
    PyObject *r = n ? PyUnicode_FromFormat("%zd: %U", n, j) : PyUnicode_FromString("0");
    Py_DECREF(j);
    return r;
}

int
chkpt_verb_ls(PyObject *module, chkpt_cli *cli)
{
    PyObject *dir = store_dir(cli);
    if (dir == NULL) {
        return -1;
    }
    PyObject *list = chkpt_snapshots(module, dir);
    if (list == NULL) {
        Py_DECREF(dir);
        return fail();
    }
    PyObject *rows = PyList_New(0);
    int rc = rows == NULL ? -1 : 0;
    if (rc == 0) {
        rc = add_row(rows, 7, PyUnicode_FromString("ID"), PyUnicode_FromString("TIME"),
                     PyUnicode_FromString("KIND"), PyUnicode_FromString("NAME"),
                     PyUnicode_FromString("WHERE"), PyUnicode_FromString("SIZE"),
                     PyUnicode_FromString("VARIABLES"));
    }
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(list); i++) {
        PyObject *si = PyList_GET_ITEM(list, i);
        PyObject *meta = PyObject_GetAttrString(si, "meta");
        PyObject *path = PyObject_GetAttrString(si, "path");
        if (meta == NULL || path == NULL) {
            Py_XDECREF(meta);
            Py_XDECREF(path);
            rc = -1;
            break;
        }
        PyObject *vars = chkpt_dict_get(meta, "variables");
        rc = add_row(rows, 7, snapshot_id(path), local_time(chkpt_dict_get(meta, "time")),
                     str_or(chkpt_dict_get(meta, "kind"), "?"), name_column(meta),
                     where_of(meta), size_of(chkpt_dict_get(meta, "size")),
                     variable_names(vars));
        Py_DECREF(meta);
        Py_DECREF(path);
    }
    if (rc == 0) {
        rc = print_table(rows);
    }
    if (rc == 0) {
        /* what the whole store takes on disk (chunks are shared) */
        PyObject *osp = PyImport_ImportModule("os.path");
        PyObject *abs = osp ? PyObject_CallMethod(osp, "abspath", "O", dir) : NULL;
        Py_XDECREF(osp);
        PyObject *fs = abs ? PyUnicode_EncodeFSDefault(abs) : NULL;
        if (fs == NULL) {
            rc = -1;
        }
        else {
            du_total = 0;
            int walked = nftw(PyBytes_AS_STRING(fs), du_cb, 16, FTW_PHYS) == 0;
            PyObject *h = walked ? human_size(du_total) : PyUnicode_FromString("?");
            rc = h ? outf("%zd snapshot(s) in %U, %U on disk\n",
                          PyList_GET_SIZE(list), abs, h) : -1;
            Py_XDECREF(h);
        }
        Py_XDECREF(abs);
        Py_XDECREF(fs);
    }
    Py_XDECREF(rows);
    Py_DECREF(list);
    Py_DECREF(dir);
    flush_stdout();
    return rc < 0 ? fail() : 0;
}

/* ------------------------------------------------------------------ */
/* show                                                                */

/* Why a variable could not be loaded here, from meta only: the first
 * module_ref that does not resolve. cache: (module, qualname) -> reason. */
static PyObject *
variable_problem(PyObject *module, PyObject *path, PyObject *meta, PyObject *var,
                 PyObject *cache)
{
    PyObject *refs = chkpt_dict_get(var, "module_refs");
    if (refs == NULL || !PyList_Check(refs)) {
        Py_RETURN_NONE;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs); i++) {
        PyObject *ref = PyList_GET_ITEM(refs, i);
        if (!PyList_Check(ref) || PyList_GET_SIZE(ref) != 2) {
            continue;
        }
        PyObject *mod = PyList_GET_ITEM(ref, 0), *qual = PyList_GET_ITEM(ref, 1);
        if (!PyUnicode_Check(mod) || !PyUnicode_Check(qual)) {
            continue;
        }
        PyObject *key = PyTuple_Pack(2, mod, qual);
        if (key == NULL) {
            return NULL;
        }
        PyObject *why = PyDict_GetItemWithError(cache, key);
        if (why != NULL) {
            Py_INCREF(why);
        }
        else if (PyErr_Occurred()) {
            Py_DECREF(key);
            return NULL;
        }
        else {
            why = chkpt_check_class(module, path, meta, mod, qual);
            if (why == NULL || PyDict_SetItem(cache, key, why) < 0) {
                Py_XDECREF(why);
                Py_DECREF(key);
                return NULL;
            }
        }
        Py_DECREF(key);
        if (why != Py_None) {
            PyObject *r = PyUnicode_FromFormat("needs %U.%U: %S", mod, qual, why);
            Py_DECREF(why);
            return r;
        }
        Py_DECREF(why);
    }
    Py_RETURN_NONE;
}

int
chkpt_verb_show(PyObject *module, chkpt_cli *cli)
{
    PyObject *arg = snapshot_arg(module, cli);
    if (arg == NULL) {
        return -1;
    }
    PyObject *path = NULL;
    PyObject *meta = chkpt_load_meta(module, arg, &path);
    Py_DECREF(arg);
    if (meta == NULL) {
        return fail();
    }
    int rc = 0;
    PyObject *rows = NULL, *cache = NULL;
    PyObject *vars = chkpt_dict_get(meta, "variables");
    PyObject *when = local_time(chkpt_dict_get(meta, "time"));
    PyObject *where = where_of(meta);
    PyObject *size = size_of(chkpt_dict_get(meta, "size"));
    PyObject *func = chkpt_dict_get(meta, "function");
    if (when == NULL || where == NULL || size == NULL) {
        rc = -1;
    }
    if (rc == 0) {
        rc = outf("snapshot  %U\n"
                  "name      %S\n"
                  "kind      %S\n"
                  "time      %U\n"
                  "script    %S\n"
                  "where     %U in %S\n"
                  "python    %S, chkpt %S\n"
                  "size      %U in %zd variable(s)\n",
                  path, chkpt_dict_get(meta, "name") ? chkpt_dict_get(meta, "name") : Py_None,
                  chkpt_dict_get(meta, "kind") ? chkpt_dict_get(meta, "kind") : Py_None, when,
                  chkpt_dict_get(meta, "script") ? chkpt_dict_get(meta, "script") : Py_None, where,
                  func ? func : Py_None,
                  chkpt_dict_get(meta, "python") ? chkpt_dict_get(meta, "python") : Py_None,
                  chkpt_dict_get(meta, "chkpt") ? chkpt_dict_get(meta, "chkpt") : Py_None, size,
                  vars && PyList_Check(vars) ? PyList_GET_SIZE(vars) : 0);
    }
    /* a crash snapshot: the traceback python printed */
    PyObject *tbtext = chkpt_dict_get(meta, "exception_text");
    if (rc == 0 && tbtext != NULL && PyUnicode_Check(tbtext)) {
        rc = outf("\n%U\n", tbtext);
    }
    PyObject *sources = chkpt_dict_get(meta, "sources");
    if (rc == 0 && sources && PyDict_Check(sources) && PyDict_GET_SIZE(sources) > 0) {
        PyObject *keys = PyDict_Keys(sources);
        PyObject *sep = PyUnicode_FromString(", ");
        PyObject *j = keys && sep ? PyUnicode_Join(sep, keys) : NULL;
        rc = j ? outf("sources   %U\n", j) : -1;
        Py_XDECREF(keys);
        Py_XDECREF(sep);
        Py_XDECREF(j);
    }
    rows = PyList_New(0);
    cache = PyDict_New();
    if (rows == NULL || cache == NULL) {
        rc = -1;
    }
    if (rc == 0) {
        rc = outf("\n");
    }
    if (rc == 0) {
        rc = add_row(rows, 5, PyUnicode_FromString("VARIABLE"),
                     PyUnicode_FromString("TYPE"), PyUnicode_FromString("SIZE"),
                     PyUnicode_FromString("VALUE"), PyUnicode_FromString(""));
    }
    for (Py_ssize_t i = 0; rc == 0 && vars && PyList_Check(vars)
                           && i < PyList_GET_SIZE(vars); i++) {
        PyObject *var = PyList_GET_ITEM(vars, i);
        PyObject *why = variable_problem(module, path, meta, var, cache);
        if (why == NULL) {
            rc = -1;
            break;
        }
        PyObject *same = chkpt_dict_get(var, "same_as");
        PyObject *standin = chkpt_dict_get(var, "standin");
        PyObject *note = standin != NULL && PyUnicode_Check(standin)
            ? PyUnicode_FromFormat("(saved as a stand-in: %U)", standin)
            : why != Py_None
            ? PyUnicode_FromFormat("! cannot load: %U", why)
            : same != NULL && PyUnicode_Check(same)
            ? PyUnicode_FromFormat("(same object as %U)", same)
            : PyUnicode_FromString("");
        Py_DECREF(why);
        rc = add_row(rows, 5, scoped_name(meta, var),
                     str_or(chkpt_dict_get(var, "type"), "?"), size_of(chkpt_dict_get(var, "size")),
                     str_or(chkpt_dict_get(var, "repr"), ""), note);
    }
    if (rc == 0) {
        rc = print_table(rows);
    }
    PyObject *skipped = chkpt_dict_get(meta, "skipped");
    if (rc == 0 && skipped && PyList_Check(skipped) && PyList_GET_SIZE(skipped) > 0) {
        rc = outf("\nnot saved (could not be pickled):\n");
        for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(skipped); i++) {
            PyObject *s = PyList_GET_ITEM(skipped, i);
            rc = outf("  %S (%S): %S\n", chkpt_dict_get(s, "name") ? chkpt_dict_get(s, "name") : Py_None,
                      chkpt_dict_get(s, "type") ? chkpt_dict_get(s, "type") : Py_None,
                      chkpt_dict_get(s, "error") ? chkpt_dict_get(s, "error") : Py_None);
        }
    }
    Py_XDECREF(when);
    Py_XDECREF(where);
    Py_XDECREF(size);
    Py_XDECREF(rows);
    Py_XDECREF(cache);
    Py_DECREF(meta);
    Py_DECREF(path);
    flush_stdout();
    return rc < 0 ? fail() : 0;
}

/* ------------------------------------------------------------------ */
/* explore                                                             */

int
chkpt_verb_explore(PyObject *module, chkpt_cli *cli)
{
    PyObject *arg = snapshot_arg(module, cli);
    if (arg == NULL) {
        return -1;
    }
    PyObject *path = NULL;
    PyObject *meta = chkpt_load_meta(module, arg, &path);
    if (meta == NULL) {
        Py_DECREF(arg);
        return fail();
    }
    PyObject *ns = chkpt_load(module, path, Py_None, 0);
    Py_DECREF(arg);
    if (ns == NULL) {
        Py_DECREF(meta);
        Py_DECREF(path);
        return fail();
    }
    int rc = 0;
    PyObject *keys = PyDict_Keys(ns);
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *j = keys && sep ? PyUnicode_Join(sep, keys) : NULL;
    PyObject *where = where_of(meta);
    PyObject *banner = j && where ? PyUnicode_FromFormat(
        "chkpt explore: %U\n%S snapshot %S of %U\nvariables: %U\n", path,
        chkpt_dict_get(meta, "kind") ? chkpt_dict_get(meta, "kind") : Py_None,
        chkpt_dict_get(meta, "name") ? chkpt_dict_get(meta, "name") : Py_None, where, j) : NULL;
    Py_XDECREF(keys);
    Py_XDECREF(sep);
    Py_XDECREF(j);
    Py_XDECREF(where);
    if (banner == NULL) {
        rc = -1;
    }
    if (rc == 0) {
        PyObject *name = PyUnicode_FromString("__console__");
        rc = name == NULL || PyDict_SetItemString(ns, "__name__", name) < 0 ? -1 : 0;
        Py_XDECREF(name);
    }
    PyObject *r = NULL;
    if (rc == 0) {
        /* IPython when at a terminal and installed, else code.interact */
        int tty = isatty(0);
        PyObject *ipy = tty ? PyImport_ImportModule("IPython") : NULL;
        if (ipy != NULL) {
            rc = out_obj(banner);
            if (rc == 0) {
                PyObject *fn = PyObject_GetAttrString(ipy, "start_ipython");
                PyObject *args = PyTuple_New(0);
                PyObject *kw = Py_BuildValue("{s:[s],s:O}", "argv", "--no-banner",
                                             "user_ns", ns);
                r = fn && args && kw ? PyObject_Call(fn, args, kw) : NULL;
                Py_XDECREF(fn);
                Py_XDECREF(args);
                Py_XDECREF(kw);
            }
            Py_DECREF(ipy);
        }
        else {
            PyErr_Clear();
            PyObject *code = PyImport_ImportModule("code");
            PyObject *fn = code ? PyObject_GetAttrString(code, "interact") : NULL;
            PyObject *args = PyTuple_New(0);
            PyObject *kw = Py_BuildValue("{s:O,s:O,s:s}", "banner", banner,
                                         "local", ns, "exitmsg", "");
            r = fn && args && kw ? PyObject_Call(fn, args, kw) : NULL;
            Py_XDECREF(code);
            Py_XDECREF(fn);
            Py_XDECREF(args);
            Py_XDECREF(kw);
        }
        if (r == NULL) {
            if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
                /* exit() in the console: leave quietly */
                PyErr_Clear();
            }
            else {
                rc = -1;
            }
        }
        Py_XDECREF(r);
    }
    Py_XDECREF(banner);
    Py_DECREF(ns);
    Py_DECREF(meta);
    Py_DECREF(path);
    flush_stdout();
    return rc < 0 ? fail() : 0;
}

/* ------------------------------------------------------------------ */
/* export                                                              */

/* reducer_override of the export pickler: classes and functions of
 * modules rebuilt from a snapshot are written under their original names
 * (__main__.Point, helpers.Thing), so pickle.load resolves them wherever
 * those modules exist, as it would for a pickle the script made itself. */
static PyObject *
export_reducer_override(PyObject *Py_UNUSED(mod), PyObject *const *args,
                        Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "reducer_override(obj)");
        return NULL;
    }
    PyObject *obj = args[1];
    PyObject *modules = PyImport_GetModuleDict();
    if (PyModule_Check(obj)) {
        PyObject *orig = PyObject_GetAttrString(obj, "__chkpt_source_module__");
        if (orig == NULL) {
            PyErr_Clear();
            Py_RETURN_NOTIMPLEMENTED;
        }
        PyObject *importlib = PyImport_ImportModule("importlib");
        PyObject *imp = importlib ? PyObject_GetAttrString(importlib, "import_module")
                                  : NULL;
        Py_XDECREF(importlib);
        PyObject *r = imp ? Py_BuildValue("(O(O))", imp, orig) : NULL;
        Py_XDECREF(imp);
        Py_DECREF(orig);
        return r;
    }
    if (!PyType_Check(obj) && !PyFunction_Check(obj)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *mname = PyObject_GetAttrString(obj, "__module__");
    if (mname == NULL || !PyUnicode_Check(mname)) {
        Py_XDECREF(mname);
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *m = PyDict_GetItemWithError(modules, mname);
    Py_DECREF(mname);
    if (m == NULL) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (!PyObject_HasAttrString(m, "__chkpt_source_module__")) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *qual = PyObject_GetAttrString(obj, "__qualname__");
    if (qual == NULL) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    /* note it for the user: it resolves only where that module exists */
    PyObject *orig = PyObject_GetAttrString(m, "__chkpt_source_module__");
    PyObject *refs = PyObject_GetAttrString(args[0], "_chkpt_refs");
    PyObject *ref = orig ? PyUnicode_FromFormat("%S.%S", orig, qual) : NULL;
    if (refs == NULL || ref == NULL || !PySet_Check(refs) || PySet_Add(refs, ref) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(orig);
    Py_XDECREF(refs);
    Py_XDECREF(ref);
    PyObject *operator = PyImport_ImportModule("operator");
    PyObject *getter = operator ? PyObject_CallMethod(operator, "attrgetter", "O", qual)
                                : NULL;
    Py_XDECREF(operator);
    Py_DECREF(qual);
    PyObject *r = getter ? Py_BuildValue("(O(O))", getter, m) : NULL;
    Py_XDECREF(getter);
    return r;
}

static PyMethodDef export_override_def = {
    "reducer_override", (PyCFunction)(void (*)(void))export_reducer_override,
    METH_FASTCALL, NULL
};

static PyObject *
export_pickler_type(PyObject *module, PyObject *pickle)
{
    PyObject *base = PyObject_GetAttrString(pickle, "Pickler");
    PyObject *fn = base ? PyCFunction_NewEx(&export_override_def, module, NULL) : NULL;
    PyObject *meth = fn ? PyInstanceMethod_New(fn) : NULL;
    PyObject *ns = meth ? Py_BuildValue("{s:O,s:s}", "reducer_override", meth,
                                        "__module__", "chkpt._chkpt") : NULL;
    PyObject *tp = ns ? PyObject_CallFunction((PyObject *)&PyType_Type, "s(O)O",
                                              "ExportPickler", base, ns) : NULL;
    Py_XDECREF(base);
    Py_XDECREF(fn);
    Py_XDECREF(meth);
    Py_XDECREF(ns);
    return tp;
}

/* note for the user: the pickle names the script's own classes, which
 * resolve only where those modules exist */
static void
note_own_refs(PyObject *name, PyObject *refs)
{
    if (PySet_GET_SIZE(refs) == 0) {
        return;
    }
    PyObject *l = PySequence_List(refs);
    PyObject *sep = PyUnicode_FromString(", ");
    if (l != NULL && PyList_Sort(l) == 0 && sep != NULL) {
        PyObject *j = PyUnicode_Join(sep, l);
        if (j != NULL) {
            chkpt_warn_py("note: '%U' refers to the script's own %U: "
                          "pickle.load resolves them where those "
                          "modules define them (e.g. in the script); "
                          "export --portable carries them in the file",
                          name, j);
            Py_DECREF(j);
        }
    }
    Py_XDECREF(l);
    Py_XDECREF(sep);
    PyErr_Clear();
}

/* Can variable `name` be exported? Pickles it out of band (no data copied).
 * 0 with *why NULL if so, 0 with *why the reason if not, -1 to stop. */
static int
export_probe(PyObject *ptype, PyObject *io, PyObject *name, PyObject *obj,
             PyObject **why)
{
    *why = NULL;
    /* capture's protocol 5 setup: the buffers stay out of band, held in
       bufs until the probe is over */
    chkpt_bufvec bufs = {0};
    PyObject *sink = PyObject_CallMethod(io, "BytesIO", NULL);
    PyObject *kw = sink ? chkpt_pickler_kwargs(&bufs) : NULL;
    PyObject *args = kw ? Py_BuildValue("(O)", sink) : NULL;
    PyObject *p = args ? PyObject_Call(ptype, args, kw) : NULL;
    PyObject *refs = p ? PySet_New(NULL) : NULL;
    PyObject *r = refs && PyObject_SetAttrString(p, "_chkpt_refs", refs) == 0
                  ? PyObject_CallMethod(p, "dump", "(O)", obj) : NULL;
    if (r != NULL) {
        note_own_refs(name, refs);
    }
    Py_XDECREF(refs);
    int rc = 0;
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
            rc = -1;
        }
        else {
            *why = chkpt_describe_pending();
            PyErr_Clear();
            if (*why == NULL) {
                *why = PyUnicode_FromString("cannot be pickled");
            }
            if (*why == NULL) {
                rc = -1;
            }
        }
    }
    Py_XDECREF(r);
    Py_XDECREF(p);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(sink);
    chkpt_bufvec_free(&bufs);
    return rc;
}

/* The variables of ns that can be exported, into good (a warning for each
 * other); their count of the others in *nbad. */
static int
exportable(PyObject *module, PyObject *ptype, PyObject *io, PyObject *ns,
           PyObject *good, Py_ssize_t *nbad)
{
    chkpt_state *st = chkpt_get_state(module);
    Py_ssize_t pos = 0;
    PyObject *name, *obj;
    while (PyDict_Next(ns, &pos, &name, &obj)) {
        PyObject *why = NULL;
        if (Py_TYPE(obj) == st->Unloadable_Type) {
            PyObject *e = PyObject_Repr(obj);
            why = e ? PyUnicode_FromFormat("it could not be loaded: %U", e) : NULL;
            Py_XDECREF(e);
            if (why == NULL) {
                return -1;
            }
        }
        else if (export_probe(ptype, io, name, obj, &why) < 0) {
            return -1;
        }
        if (why != NULL) {
            chkpt_warn_py("'%U' not exported: %U", name, why);
            Py_DECREF(why);
            (*nbad)++;
        }
        else if (PyDict_SetItem(good, name, obj) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Pickles good (what export writes) into tmp, then renames it to out (tmp
 * removed on failure). */
static int
write_export(PyObject *ptype, PyObject *io, PyObject *os, PyObject *good,
             PyObject *tmp, PyObject *out)
{
    int rc = 0;
    PyObject *f = PyObject_CallMethod(io, "open", "Os", tmp, "wb");
    PyObject *args = f ? Py_BuildValue("(O)", f) : NULL;
    PyObject *kw = args ? Py_BuildValue("{s:i}", "protocol", 5) : NULL;
    PyObject *p = kw ? PyObject_Call(ptype, args, kw) : NULL;
    PyObject *refs = p ? PySet_New(NULL) : NULL;
    PyObject *r = refs && PyObject_SetAttrString(p, "_chkpt_refs", refs) == 0
                  ? PyObject_CallMethod(p, "dump", "(O)", good) : NULL;
    Py_XDECREF(refs);
    PyObject *c = NULL;
    if (f != NULL) {
        if (r == NULL) {
            /* close, keeping the error of dump */
            chkpt_saved_error e;
            chkpt_error_save(&e);
            c = PyObject_CallMethod(f, "close", NULL);
            Py_CLEAR(c);
            PyErr_Clear();
            chkpt_error_restore(&e);
        }
        else {
            c = PyObject_CallMethod(f, "close", NULL);
        }
    }
    PyObject *mv = r && c ? PyObject_CallMethod(os, "replace", "OO", tmp, out) : NULL;
    if (mv == NULL) {
        rc = -1;
        chkpt_saved_error e;
        chkpt_error_save(&e);
        PyObject *u = PyObject_CallMethod(os, "unlink", "O", tmp);
        Py_XDECREF(u);
        PyErr_Clear();
        chkpt_error_restore(&e);
    }
    Py_XDECREF(mv);
    Py_XDECREF(c);
    Py_XDECREF(r);
    Py_XDECREF(p);
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(f);
    return rc;
}

/* ---- export --portable ---- */

/* cloudpickle, an optional dependency: NULL with an exception, or NULL
 * without one after the one-line error saying how to get it. */
static PyObject *
portable_import(void)
{
    PyObject *cp = PyImport_ImportModule("cloudpickle");
    if (cp == NULL && PyErr_ExceptionMatches(PyExc_ImportError)) {
        PyErr_Clear();
        chkpt_warn("error: export --portable needs the cloudpickle package "
                   "(pip install cloudpickle)");
    }
    return cp;
}

/* The pickler of export --portable: cloudpickle's, with every module
 * rebuilt from the snapshot's sources (load made them) registered to be
 * pickled by value, so the script's classes and functions travel inside
 * the file and plain pickle.load opens it without chkpt or the script;
 * every other module (numpy, ...) is named, as by pickle. */
static PyObject *
portable_pickler_type(PyObject *cloudpickle)
{
    PyObject *reg = PyObject_GetAttrString(cloudpickle, "register_pickle_by_value");
    PyObject *mods = reg ? PyDict_Values(PyImport_GetModuleDict()) : NULL;
    if (mods == NULL) {
        Py_XDECREF(reg);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(mods); i++) {
        PyObject *m = PyList_GET_ITEM(mods, i);
        if (!PyModule_Check(m) || !PyObject_HasAttrString(m, "__chkpt_source_module__")) {
            continue;
        }
        PyObject *r = PyObject_CallOneArg(reg, m);
        if (r == NULL) {
            Py_DECREF(mods);
            Py_DECREF(reg);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(mods);
    Py_DECREF(reg);
    return PyObject_GetAttrString(cloudpickle, "Pickler");
}

/* An object that pickles as the call `fn(*args)`: an instance of a
 * throwaway class whose __reduce__ gives r = (fn, args). */
static PyObject *
call_on_load(PyObject *r)
{
    PyObject *operator = PyImport_ImportModule("operator");
    PyObject *get = operator ? PyObject_CallMethod(operator, "attrgetter", "s",
                                                   "_chkpt_reduce") : NULL;
    PyObject *meth = get ? PyInstanceMethod_New(get) : NULL;
    PyObject *ns = meth ? Py_BuildValue("{s:O}", "__reduce__", meth) : NULL;
    PyObject *cls = ns ? PyObject_CallFunction((PyObject *)&PyType_Type, "s()O",
                                               "CallOnLoad", ns) : NULL;
    PyObject *obj = cls ? PyObject_CallNoArgs(cls) : NULL;
    if (obj != NULL && PyObject_SetAttrString(obj, "_chkpt_reduce", r) < 0) {
        Py_CLEAR(obj);
    }
    Py_XDECREF(operator);
    Py_XDECREF(get);
    Py_XDECREF(meth);
    Py_XDECREF(ns);
    Py_XDECREF(cls);
    return obj;
}

/* What export --portable dumps: `good` behind a check of the Python
 * version, run by pickle.load before any of the data is read, since the
 * functions cloudpickle carries are bytecode of this version (another one
 * fails or even crashes the interpreter when they are called). Pickles as
 * operator.getitem((exec(CHECK), good), 1): plain stdlib names only. */
static PyObject *
portable_guarded(PyObject *good)
{
    PyObject *sys = PyImport_ImportModule("sys");
    PyObject *vi = sys ? PyObject_GetAttrString(sys, "version_info") : NULL;
    Py_XDECREF(sys);
    if (vi == NULL) {
        return NULL;
    }
    long major = PyLong_AsLong(PyTuple_GetItem(vi, 0));
    long minor = PyLong_AsLong(PyTuple_GetItem(vi, 1));
    Py_DECREF(vi);
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *src = PyUnicode_FromFormat(
        "import sys\n"
        "if sys.version_info[:2] != (%ld, %ld):\n"
        "    raise RuntimeError('this pickle was written by chkpt export --portable "
        "on Python %ld.%ld; its functions are bytecode of that version: open it "
        "with Python %ld.%ld, not %%d.%%d' %% sys.version_info[:2])\n",
        major, minor, major, minor, major, minor);
    PyObject *builtins = PyImport_ImportModule("builtins");
    PyObject *exec = builtins ? PyObject_GetAttrString(builtins, "exec") : NULL;
    PyObject *r = src && exec ? Py_BuildValue("(O(O))", exec, src) : NULL;
    PyObject *guard = r ? call_on_load(r) : NULL;
    PyObject *operator = guard ? PyImport_ImportModule("operator") : NULL;
    PyObject *getitem = operator ? PyObject_GetAttrString(operator, "getitem") : NULL;
    PyObject *top_r = getitem ? Py_BuildValue("(O((OO)i))", getitem, guard, good, 1)
                              : NULL;
    PyObject *top = top_r ? call_on_load(top_r) : NULL;
    Py_XDECREF(src);
    Py_XDECREF(builtins);
    Py_XDECREF(exec);
    Py_XDECREF(r);
    Py_XDECREF(guard);
    Py_XDECREF(operator);
    Py_XDECREF(getitem);
    Py_XDECREF(top_r);
    return top;
}

int
chkpt_verb_export(PyObject *module, chkpt_cli *cli)
{
    chkpt_state *st = chkpt_get_state(module);
    if (cli->args == NULL || !PyList_Check(cli->args) || PyList_GET_SIZE(cli->args) < 1) {
        chkpt_warn("error: the following arguments are required: OUT.pkl");
        return 2;
    }
    PyObject *out = PyList_GET_ITEM(cli->args, 0);
    /* asked for before anything is loaded */
    PyObject *cloudpickle = cli->portable ? portable_import() : NULL;
    if (cli->portable && cloudpickle == NULL) {
        return PyErr_Occurred() ? fail() : 1;
    }
    PyObject *arg = snapshot_arg(module, cli);
    if (arg == NULL) {
        Py_XDECREF(cloudpickle);
        return -1;
    }
    PyObject *ns = chkpt_load(module, arg, Py_None, 0);
    Py_DECREF(arg);
    if (ns == NULL) {
        Py_XDECREF(cloudpickle);
        return fail();
    }
    int rc = 0;
    PyObject *good = PyDict_New();
    PyObject *ptype = cloudpickle ? portable_pickler_type(cloudpickle)
                                  : export_pickler_type(module, st->pickle_module);
    Py_XDECREF(cloudpickle);
    PyObject *io = PyImport_ImportModule("io");
    PyObject *os = PyImport_ImportModule("os");
    PyObject *tmp = PyUnicode_FromFormat("%S.tmp", out);
    PyObject *dumped = NULL;    /* good, behind a version check if portable */
    Py_ssize_t nbad = 0;
    if (good == NULL || ptype == NULL || io == NULL || os == NULL || tmp == NULL
        || exportable(module, ptype, io, ns, good, &nbad) < 0
        || (dumped = cli->portable ? portable_guarded(good)
                                   : Py_NewRef(good)) == NULL
        || write_export(ptype, io, os, dumped, tmp, out) < 0) {
        rc = -1;
    }
    if (rc == 0) {
        rc = outf("exported %zd variable(s) to %S", PyDict_GET_SIZE(good), out);
        if (rc == 0 && nbad > 0) {
            rc = outf(" (%zd could not be exported, see above)", nbad);
        }
        if (rc == 0) {
            rc = outf("\n");
        }
    }
    Py_XDECREF(dumped);
    Py_XDECREF(good);
    Py_XDECREF(ptype);
    Py_XDECREF(io);
    Py_XDECREF(os);
    Py_XDECREF(tmp);
    Py_DECREF(ns);
    flush_stdout();
    return rc < 0 ? fail() : 0;
}

/* ------------------------------------------------------------------ */
/* verify, gc                                                          */

typedef struct {
    PyObject *damaged;      /* list of str lines */
    size_t n;
    int failed;
} verify_acc;

static void
verify_cb(void *arg, const char *path, const char *problem)
{
    verify_acc *acc = arg;
    acc->n++;
    if (problem == NULL || acc->failed) {
        return;
    }
    PyObject *line = PyUnicode_FromFormat("DAMAGED %s: %s", path, problem);
    if (line == NULL || PyList_Append(acc->damaged, line) < 0) {
        acc->failed = 1;
        PyErr_Clear();
    }
    Py_XDECREF(line);
}

/* The store directory a verb names (*dir) and its file-system name
 * (*fs), both new references: 0; 1 when it is not a directory (said);
 * -1 with an exception. */
static int
existing_store(chkpt_cli *cli, PyObject **dir, PyObject **fs)
{
    *dir = store_dir(cli);
    *fs = *dir ? PyUnicode_EncodeFSDefault(*dir) : NULL;
    if (*fs == NULL) {
        Py_CLEAR(*dir);
        return -1;
    }
    struct stat sb;
    if (stat(PyBytes_AS_STRING(*fs), &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        chkpt_warn_py("error: no snapshot store at %U", *dir);
        Py_CLEAR(*fs);
        Py_CLEAR(*dir);
        return 1;
    }
    return 0;
}

int
chkpt_verb_verify(PyObject *module, chkpt_cli *cli)
{
    PyObject *dir, *fs;
    int rc0 = existing_store(cli, &dir, &fs);
    if (rc0 != 0) {
        return rc0;
    }
    verify_acc acc = {PyList_New(0), 0, 0};
    if (acc.damaged == NULL) {
        Py_DECREF(fs);
        Py_DECREF(dir);
        return -1;
    }
    char err[CHKPT_ERRLEN] = "";
    int r = chkpt_store_verify_all(PyBytes_AS_STRING(fs), verify_cb, &acc, err,
                                   sizeof(err));
    int status = 0;
    if (PyList_GET_SIZE(acc.damaged) > 0) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(acc.damaged); i++) {
            if (outf("%U\n", PyList_GET_ITEM(acc.damaged, i)) < 0) {
                PyErr_Clear();
            }
        }
        if (outf("%zd of %zu snapshot(s) damaged\n", PyList_GET_SIZE(acc.damaged),
                 acc.n) < 0) {
            PyErr_Clear();
        }
        status = 1;
    }
    else if (r < 0) {
        chkpt_warn("error: %s", err);
        status = 1;
    }
    else if (outf("%zu snapshot(s) intact\n", acc.n) < 0) {
        PyErr_Clear();
    }
    Py_DECREF(acc.damaged);
    Py_DECREF(fs);
    Py_DECREF(dir);
    flush_stdout();
    return status;
}

int
chkpt_verb_gc(PyObject *module, chkpt_cli *cli)
{
    if (cli->keep < 0) {
        chkpt_warn("error: the following arguments are required: --keep");
        return 2;
    }
    PyObject *dir, *fs;
    int rc0 = existing_store(cli, &dir, &fs);
    if (rc0 != 0) {
        return rc0;
    }
    size_t rs = 0, rch = 0;
    char err[CHKPT_ERRLEN] = "";
    int r;
    long keep = cli->keep;
    Py_BEGIN_ALLOW_THREADS
    r = chkpt_store_gc(PyBytes_AS_STRING(fs), keep, &rs, &rch, err, sizeof(err));
    Py_END_ALLOW_THREADS
    Py_DECREF(fs);
    if (r < 0) {
        chkpt_warn_py("error: gc of %U failed: %s", dir, err);
        Py_DECREF(dir);
        return 1;
    }
    int rc = outf("removed %zu snapshot(s) and %zu chunk(s) from %U\n", rs, rch, dir);
    Py_DECREF(dir);
    flush_stdout();
    return rc < 0 ? fail() : 0;
}
