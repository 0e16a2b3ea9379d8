/* cli.c: the command line of `python -m chkpt`.
 *
 *   python -m chkpt [options] [--] script.py [args...]
 *   python -m chkpt [options] -m package.module [args...]
 *   python -m chkpt ls [DIR] | show SNAPSHOT | explore SNAPSHOT
 *                 | export [--portable] SNAPSHOT OUT.pkl | verify [DIR]
 *                 | gc [DIR] --keep N
 *
 * Parsing follows argparse conventions (`-f 5`, `-f5`, `--frequency=5`,
 * `--frequency 5`, bundled `-vv`, unique prefixes of long options), but
 * options end at the script, at `--` or at `-m MOD`: everything after that
 * belongs to the script. A usage error is one line
 * `chkpt: error: <what is wrong>` on stderr and exit status 2.
 */
#include "chkpt.h"
#include "read.h"
#include "run.h"
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

#define USAGE_ERROR 2

static const char usage_text[] =
"usage: python -m chkpt [options] [--] script.py [args...]\n"
"       python -m chkpt [options] -m package.module [args...]\n"
"       python -m chkpt ls [DIR]\n"
"       python -m chkpt show SNAPSHOT\n"
"       python -m chkpt explore SNAPSHOT\n"
"       python -m chkpt export [--portable] SNAPSHOT OUT.pkl\n"
"       python -m chkpt verify [DIR]\n"
"       python -m chkpt gc [DIR] --keep N\n"
"       python -m chkpt debug SNAPSHOT\n";

static const char help_text[] =
"\n"
"Run a Python script exactly as `python script.py args` would, and while it\n"
"runs, snapshot its big variables to disk, so that they can be loaded back\n"
"(chkpt.load) after a crash, a kill, or just later.\n"
"\n"
"The script sees its own __main__ module, sys.argv, sys.path[0], tracebacks\n"
"and exit status exactly as under plain python. Options end at the script\n"
"(or at `--`, or at `-m MODULE`): everything after it is passed to the\n"
"script, so `python -m chkpt job.py -v -f 3` gives `-v -f 3` to job.py.\n"
"Use `--` before a script whose name is one of the verbs below.\n"
"\n"
"options:\n"
"  -h, --help            show this help message and exit\n"
"  --version             show chkpt's version and exit\n"
"  -m MODULE             run a library module as a script, like python -m\n"
"  --resume              continue from the last snapshot still valid for the\n"
"                        script as it is now: skip the top-level statements\n"
"                        it holds, load their results, run the rest; runs\n"
"                        from the start when there is none\n"
"  -z BYTES, --min-obj-size BYTES\n"
"                        snapshot variables at least this big; K, M and G\n"
"                        suffixes are accepted (1K = 1024 bytes). 0: every\n"
"                        picklable data object; -1: only the objects the\n"
"                        script tracks explicitly (Checkpoint.track).\n"
"                        Default: 1M\n"
"  -o DIR, --output-dir DIR\n"
"                        where snapshots are stored. Default: ./checkpoints\n"
"  -f MS, --frequency MS\n"
"                        take an automatic snapshot every MS milliseconds.\n"
"                        0: at every executed line of the script; -1: only\n"
"                        when the script calls Checkpoint.snapshot(); auto:\n"
"                        as often as the snapshots' CPU and disk time stay\n"
"                        within 5%% of the run's time. Default: auto\n"
"  -v, --verbose         say on stderr what chkpt does; -vv for more\n"
"  --compress LEVEL      compress stored data with zstd at LEVEL (1-19);\n"
"                        0 (the default) stores it uncompressed\n"
"  --max-store-size SIZE after each automatic snapshot, delete the oldest\n"
"                        snapshots (never the newest) and the data only they\n"
"                        used until the directory holds at most SIZE bytes;\n"
"                        K, M and G suffixes accepted. Default: no limit\n"
"  --keep-auto N         keep the script's newest N automatic snapshots in\n"
"                        the store, delete older ones (never a manual, crash\n"
"                        or signal snapshot) and the data only they used;\n"
"                        0 keeps them all. Default: %ld with -f auto, 0\n"
"                        with an explicit -f MS\n"
"  --max-pickle-size SIZE\n"
"                        pickled bytes one snapshot may hold in memory before\n"
"                        they are written (array data, saved without a copy,\n"
"                        does not count): a variable that would go over is\n"
"                        skipped with a warning. Default: a quarter of RAM\n"
"  --signal-deadline MS  how long after SIGTERM (after an uncaught Ctrl-C,\n"
"                        after its snapshot starts) chkpt may take before\n"
"                        it gives up and the process ends as it would\n"
"                        have. Default: %lld\n"
"\n"
"verbs (work on a snapshot directory, default ./checkpoints):\n"
"  ls [DIR]              list the snapshots, oldest first\n"
"  show SNAPSHOT         print what a snapshot holds\n"
"  explore SNAPSHOT      open an interactive console with its variables\n"
"  export [--portable] SNAPSHOT OUT.pkl\n"
"                        write its variables as one plain pickle file;\n"
"                        --portable carries the script's classes and\n"
"                        functions inside it (needs cloudpickle), so that\n"
"                        pickle.load opens it without chkpt or the script\n"
"  verify [DIR]          check every snapshot and chunk for damage\n"
"  gc [DIR] --keep N     keep the newest N snapshots, delete the rest and\n"
"                        the data no remaining snapshot uses\n"
"  debug SNAPSHOT        pdb post-mortem on a crash snapshot's frames\n"
"\n"
"A SNAPSHOT is the path of a snapshot (as `ls` prints it) or a snapshot\n"
"directory, meaning its newest snapshot.\n"
"\n"
"Lines chkpt itself writes to stderr start with `chkpt:`. Exit status: the\n"
"script's own; 2 for a usage error or a script that cannot be opened.\n";

/* ---- output helpers ---- */

static int
write_stdout(const char *text)
{
    PyObject *out = PySys_GetObject("stdout");      /* borrowed */
    if (out == NULL || out == Py_None) {
        fputs(text, stdout);
        fflush(stdout);
        return 0;
    }
    if (PyFile_WriteString(text, out) < 0) {
        return -1;
    }
    PyObject *r = PyObject_CallMethod(out, "flush", NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* One `chkpt: error: ...` line; returns the usage exit status. */
static int
usage_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    chkpt_warn("error: %s", msg);
    return USAGE_ERROR;
}

/* ---- option table ---- */

typedef enum {
    OPT_HELP, OPT_VERSION, OPT_MODULE, OPT_MIN_OBJ_SIZE, OPT_OUTPUT_DIR,
    OPT_FREQUENCY, OPT_VERBOSE, OPT_COMPRESS, OPT_MAX_STORE_SIZE,
    OPT_MAX_PICKLE_SIZE, OPT_KEEP, OPT_PORTABLE, OPT_SIGNAL_DEADLINE,
    OPT_KEEP_AUTO, OPT_RESUME
} opt_id;

typedef struct {
    opt_id id;
    char short_name;            /* 0 if none */
    const char *long_name;      /* without "--", NULL if none */
    int takes_value;
    const char *display;        /* as argparse names it in messages */
} opt_def;

static const opt_def options[] = {
    {OPT_HELP, 'h', "help", 0, "-h/--help"},
    {OPT_VERSION, 0, "version", 0, "--version"},
    {OPT_MODULE, 'm', NULL, 1, "-m"},
    {OPT_MIN_OBJ_SIZE, 'z', "min-obj-size", 1, "-z/--min-obj-size"},
    {OPT_OUTPUT_DIR, 'o', "output-dir", 1, "-o/--output-dir"},
    {OPT_FREQUENCY, 'f', "frequency", 1, "-f/--frequency"},
    {OPT_VERBOSE, 'v', "verbose", 0, "-v/--verbose"},
    {OPT_COMPRESS, 0, "compress", 1, "--compress"},
    {OPT_MAX_STORE_SIZE, 0, "max-store-size", 1, "--max-store-size"},
    {OPT_MAX_PICKLE_SIZE, 0, "max-pickle-size", 1, "--max-pickle-size"},
    {OPT_KEEP, 0, "keep", 1, "--keep"},
    {OPT_KEEP_AUTO, 0, "keep-auto", 1, "--keep-auto"},
    {OPT_SIGNAL_DEADLINE, 0, "signal-deadline", 1, "--signal-deadline"},
    {OPT_PORTABLE, 0, "portable", 0, "--portable"},     /* export only */
    {OPT_RESUME, 0, "resume", 0, "--resume"},
};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static const opt_def *
find_short(char c)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (options[i].short_name == c) {
            return &options[i];
        }
    }
    return NULL;
}

/* Exact match, else a unique prefix (as argparse allows). *ambiguous is set
 * when several options share the prefix. */
static const opt_def *
find_long(const char *name, size_t len, int *ambiguous)
{
    const opt_def *found = NULL;
    int count = 0;
    *ambiguous = 0;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const char *ln = options[i].long_name;
        if (ln == NULL) {
            continue;
        }
        if (strlen(ln) == len && strncmp(ln, name, len) == 0) {
            return &options[i];
        }
        if (len > 0 && strncmp(ln, name, len) == 0) {
            found = &options[i];
            count++;
        }
    }
    if (count > 1) {
        *ambiguous = 1;
        return NULL;
    }
    return found;
}

/* ---- value parsing ---- */

/* -f auto (any case, surrounding whitespace allowed as for numbers) */
static int
is_auto(const char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    if (strncasecmp(s, "auto", 4) != 0) {
        return 0;
    }
    for (s += 4; *s == ' ' || *s == '\t'; s++) {
    }
    return *s == '\0';
}

/* A decimal integer as int() reads it (argparse's type=int): optional sign,
 * surrounding whitespace and digit-separating underscores allowed. -1 (no
 * exception) when it is not one, or does not fit a long long. */
static int
parse_int(const char *s, long long *out)
{
    char *end;
    PyObject *v = PyLong_FromString(s, &end, 10);
    if (v == NULL) {
        PyErr_Clear();
        return -1;
    }
    long long n = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return -1;
    }
    *out = n;
    return 0;
}

/* An integer with an optional K/M/G suffix (powers of 1024), optionally
 * followed by B or iB: 512, 64K, 1M, 2GiB, 10kb. */
static int
parse_size(const char *s, long long *out)
{
    char num[64];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(num)) {
        return -1;
    }
    memcpy(num, s, n + 1);
    long long mult = 1;
    /* strip an optional "B" / "iB" then the unit letter */
    size_t end = n;
    if (end > 0 && (num[end - 1] == 'b' || num[end - 1] == 'B')) {
        end--;
        if (end > 0 && (num[end - 1] == 'i' || num[end - 1] == 'I')) {
            end--;
        }
        if (end == 0 || strchr("kKmMgG", num[end - 1]) == NULL) {
            /* "B" alone (bytes) is fine, "iB" alone is not */
            if (end != n - 1) {
                return -1;
            }
        }
    }
    if (end > 0) {
        switch (num[end - 1]) {
        case 'k': case 'K': mult = 1LL << 10; end--; break;
        case 'm': case 'M': mult = 1LL << 20; end--; break;
        case 'g': case 'G': mult = 1LL << 30; end--; break;
        default: break;
        }
    }
    num[end] = '\0';
    long long v;
    if (parse_int(num, &v) < 0) {
        return -1;
    }
    if (mult != 1) {
        if (v < 0) {
            return -1;
        }
        if (v > LLONG_MAX / mult) {
            return -1;
        }
        v *= mult;
    }
    *out = v;
    return 0;
}

/* ---- the parser ---- */

typedef struct {
    PyObject *argv;             /* list of str (borrowed) */
    PyObject *bargv;            /* the same as bytes, in the file system
                                   encoding: arguments that are not valid
                                   UTF-8 (file names) parse too (owned) */
    Py_ssize_t n;
    Py_ssize_t i;               /* next argument */
    int help;
    int version;
} parser;

static const char *
arg_at(parser *p, Py_ssize_t i)
{
    return PyBytes_AS_STRING(PyList_GET_ITEM(p->bargv, i));
}

static int apply_value(chkpt_cli *cli, parser *p, const opt_def *opt,
                       PyObject *value, const char *v);

/* Applies one option with its value (NULL for flags). Returns 0, a usage
 * exit status (> 0), or -1 with an exception. */
static int
apply_option(chkpt_cli *cli, parser *p, const opt_def *opt, PyObject *value)
{
    const char *v = NULL;
    PyObject *vb = NULL;
    if (value != NULL) {
        vb = PyUnicode_EncodeFSDefault(value);
        if (vb == NULL) {
            return -1;
        }
        v = PyBytes_AS_STRING(vb);
    }
    int r = apply_value(cli, p, opt, value, v);
    Py_XDECREF(vb);
    return r;
}

/* The value of a numeric option: an int, or with `size` a size with an
 * optional K/M/G suffix, in [min, max]. Returns 0 (and *out) or a usage
 * exit status. */
static int
number_value(const opt_def *opt, const char *v, int size, long long min,
             long long max, long long *out)
{
    long long n;
    if ((size ? parse_size(v, &n) : parse_int(v, &n)) < 0) {
        return size ? usage_error("argument %s: invalid size value: '%s' (an "
                                  "integer of bytes, K, M or G suffix allowed)",
                                  opt->display, v)
                    : usage_error("argument %s: invalid int value: '%s'",
                                  opt->display, v);
    }
    if (n < min || n > max) {
        return max == LLONG_MAX || max == LONG_MAX
               ? usage_error("argument %s: must be >= %lld (got %lld)",
                             opt->display, min, n)
               : usage_error("argument %s: must be between %lld and %lld "
                             "(got %lld)", opt->display, min, max, n);
    }
    *out = n;
    return 0;
}

static int
apply_value(chkpt_cli *cli, parser *p, const opt_def *opt, PyObject *value,
            const char *v)
{
    long long n;
    int rc;
    switch (opt->id) {
    case OPT_HELP:
        p->help = 1;
        return 0;
    case OPT_VERSION:
        p->version = 1;
        return 0;
    case OPT_VERBOSE:
        cli->verbosity++;
        return 0;
    case OPT_RESUME:
        cli->resume = 1;
        return 0;
    case OPT_MODULE:
        Py_XSETREF(cli->target, Py_NewRef(value));
        cli->is_module = 1;
        return 0;
    case OPT_OUTPUT_DIR:
        if (v[0] == '\0') {
            return usage_error("argument %s: expected a directory, got ''",
                               opt->display);
        }
        Py_XSETREF(cli->output_dir, Py_NewRef(value));
        return 0;
    case OPT_MIN_OBJ_SIZE:
        return number_value(opt, v, 1, -1, LLONG_MAX, &cli->min_obj_size);
    case OPT_FREQUENCY:
        if (is_auto(v)) {
            cli->frequency_ms = CHKPT_FREQUENCY_AUTO;
            return 0;
        }
        return number_value(opt, v, 0, CHKPT_FREQUENCY_MANUAL, LLONG_MAX,
                            &cli->frequency_ms);
    case OPT_KEEP_AUTO:
        rc = number_value(opt, v, 0, 0, LONG_MAX, &n);
        if (rc == 0) {
            cli->keep_auto = (long)n;
        }
        return rc;
    case OPT_COMPRESS:
        rc = number_value(opt, v, 0, 0, 19, &n);
        if (rc == 0) {
            cli->compress_level = (int)n;
        }
        return rc;
    case OPT_MAX_STORE_SIZE:
        return number_value(opt, v, 1, 0, LLONG_MAX, &cli->max_store_size);
    case OPT_MAX_PICKLE_SIZE:
        return number_value(opt, v, 1, 1, LLONG_MAX, &cli->max_pickle_size);
    case OPT_SIGNAL_DEADLINE:
        return number_value(opt, v, 0, 1, 3600000, &cli->signal_deadline_ms);
    case OPT_PORTABLE:
        cli->portable = 1;
        return 0;
    case OPT_KEEP:
        rc = number_value(opt, v, 0, 0, LONG_MAX, &n);
        if (rc == 0) {
            cli->keep = (long)n;
        }
        return rc;
    }
    return 0;
}

/* Parses the option at p->i (which starts with '-' and is not "-" or
 * "--"). verb: the one being parsed (--keep is gc's, --portable export's).
 * Returns 0, a usage exit status, or -1 with an exception. */
/* The value of an option that takes one: attached to it (`--opt=V`,
 * `-oV`: attached != NULL) or the next argument. Returns 0 with a new
 * reference in *value, a usage exit status, or -1 with an exception. */
static int
option_value(parser *p, const opt_def *opt, const char *attached,
             PyObject **value)
{
    if (attached != NULL) {
        *value = PyUnicode_DecodeFSDefault(attached);
        return *value == NULL ? -1 : 0;
    }
    if (p->i < p->n) {
        *value = Py_NewRef(PyList_GET_ITEM(p->argv, p->i));
        p->i++;
        return 0;
    }
    return usage_error("argument %s: expected one argument", opt->display);
}

static int
parse_option(chkpt_cli *cli, parser *p, chkpt_verb verb, int allow_run)
{
    const char *arg = arg_at(p, p->i);
    p->i++;
    if (arg[1] == '-') {
        /* --long or --long=value */
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int ambiguous;
        const opt_def *opt = find_long(name, len, &ambiguous);
        if (opt != NULL && ((opt->id == OPT_KEEP && verb != CHKPT_VERB_GC)
                            || (opt->id == OPT_PORTABLE
                                && verb != CHKPT_VERB_EXPORT))) {
            opt = NULL;
        }
        if (opt != NULL && !allow_run && opt->id != OPT_HELP
            && opt->id != OPT_KEEP && opt->id != OPT_PORTABLE
            && opt->id != OPT_OUTPUT_DIR) {
            opt = NULL;
        }
        if (opt == NULL) {
            if (ambiguous) {
                return usage_error("ambiguous option: --%.*s could match "
                                   "several options", (int)len, name);
            }
            return usage_error("unrecognized arguments: %s", arg);
        }
        PyObject *value = NULL;
        if (opt->takes_value) {
            int r = option_value(p, opt, eq ? eq + 1 : NULL, &value);
            if (r != 0) {
                return r;
            }
        }
        else if (eq != NULL) {
            return usage_error("argument %s: ignored explicit argument '%s'",
                               opt->display, eq + 1);
        }
        int r = apply_option(cli, p, opt, value);
        Py_XDECREF(value);
        return r;
    }
    /* a cluster of short options: -vv, -f5, -vf 5, -mpkg.mod */
    const opt_def *prev = NULL;
    for (const char *c = arg + 1; *c; c++) {
        const opt_def *opt = find_short(*c);
        if (opt != NULL && !allow_run && opt->id != OPT_HELP
            && opt->id != OPT_OUTPUT_DIR) {
            opt = NULL;
        }
        if (opt == NULL) {
            if (c == arg + 1) {
                return usage_error("unrecognized arguments: %s", arg);
            }
            return usage_error("argument %s: ignored explicit argument '%s'",
                               prev->display, c);
        }
        prev = opt;
        if (!opt->takes_value) {
            int r = apply_option(cli, p, opt, NULL);
            if (r != 0) {
                return r;
            }
            continue;
        }
        PyObject *value = NULL;
        int r = option_value(p, opt, c[1] != '\0' ? c + 1 : NULL, &value);
        if (r != 0) {
            return r;
        }
        r = apply_option(cli, p, opt, value);
        Py_DECREF(value);
        return r;
    }
    return 0;
}

static const struct {
    const char *name;
    chkpt_verb verb;
    int min_pos, max_pos;       /* positional arguments after the verb */
} verbs[] = {
    {"ls", CHKPT_VERB_LS, 0, 1},
    {"show", CHKPT_VERB_SHOW, 1, 1},
    {"explore", CHKPT_VERB_EXPLORE, 1, 1},
    {"export", CHKPT_VERB_EXPORT, 2, 2},
    {"verify", CHKPT_VERB_VERIFY, 0, 1},
    {"gc", CHKPT_VERB_GC, 0, 1},
    {"debug", CHKPT_VERB_DEBUG, 1, 1},
};
#define N_VERBS (sizeof(verbs) / sizeof(verbs[0]))

static const char *verb_required[] = {
    NULL, NULL, "SNAPSHOT", "SNAPSHOT", "SNAPSHOT, OUT.pkl", NULL, NULL, NULL,
    "SNAPSHOT"
};

static int
list_tail(PyObject *argv, Py_ssize_t from, PyObject **out)
{
    PyObject *tail = PyList_GetSlice(argv, from, PyList_GET_SIZE(argv));
    if (tail == NULL) {
        return -1;
    }
    Py_XSETREF(*out, tail);
    return 0;
}

/* The arguments after a verb: positionals, --keep (gc), --portable
 * (export), -o, -h. */
static int
parse_verb_args(chkpt_cli *cli, parser *p, size_t vi)
{
    PyObject *pos = PyList_New(0);
    if (pos == NULL) {
        return -1;
    }
    int only_pos = 0;
    int r = 0;
    while (p->i < p->n) {
        const char *a = arg_at(p, p->i);
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            p->i++;
            continue;
        }
        if (!only_pos && a[0] == '-' && a[1] != '\0') {
            r = parse_option(cli, p, verbs[vi].verb, 0);
            if (r != 0) {
                goto done;
            }
            continue;
        }
        if (PyList_Append(pos, PyList_GET_ITEM(p->argv, p->i)) < 0) {
            r = -1;
            goto done;
        }
        p->i++;
    }
    if (p->help || p->version) {
        goto done;
    }
    Py_ssize_t npos = PyList_GET_SIZE(pos);
    if (npos < verbs[vi].min_pos) {
        r = usage_error("the following arguments are required: %s",
                        npos == 0 ? verb_required[verbs[vi].verb] : "OUT.pkl");
        goto done;
    }
    if (npos > verbs[vi].max_pos) {
        PyObject *extra = PyList_GetSlice(pos, verbs[vi].max_pos, npos);
        PyObject *sep = extra ? PyUnicode_FromString(" ") : NULL;
        PyObject *joined = sep ? PyUnicode_Join(sep, extra) : NULL;
        Py_XDECREF(extra);
        Py_XDECREF(sep);
        PyObject *jb = joined ? PyUnicode_EncodeFSDefault(joined) : NULL;
        Py_XDECREF(joined);
        if (jb == NULL) {
            r = -1;
            goto done;
        }
        r = usage_error("unrecognized arguments: %s", PyBytes_AS_STRING(jb));
        Py_DECREF(jb);
        goto done;
    }
    if (verbs[vi].verb == CHKPT_VERB_GC && cli->keep < 0) {
        r = usage_error("the following arguments are required: --keep");
        goto done;
    }
    if (npos >= 1) {
        Py_XSETREF(cli->target, Py_NewRef(PyList_GET_ITEM(pos, 0)));
    }
    if (list_tail(pos, npos >= 1 ? 1 : 0, &cli->args) < 0) {
        r = -1;
    }
done:
    Py_DECREF(pos);
    return r;
}

static int parse_args(chkpt_cli *cli, parser *p, int *done);

/* Fills cli from argv. Returns 0 when there is something to run, a usage
 * exit status (> 0) after writing the error line, or -1 with an exception.
 * *done is set when help/version was printed (exit status 0). */
static int
parse_command_line(chkpt_cli *cli, PyObject *argv, int *done)
{
    parser p = {argv, NULL, PyList_GET_SIZE(argv), 0, 0, 0};
    int r;
    *done = 0;
    p.bargv = PyList_New(p.n);
    if (p.bargv == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < p.n; i++) {
        PyObject *b = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(argv, i));
        if (b == NULL) {
            Py_DECREF(p.bargv);
            return -1;
        }
        PyList_SET_ITEM(p.bargv, i, b);
    }
    r = parse_args(cli, &p, done);
    Py_DECREF(p.bargv);
    return r;
}

static int
parse_args(chkpt_cli *cli, parser *pp, int *done)
{
    parser p = *pp;
    PyObject *argv = p.argv;
    int r;
    while (p.i < p.n && cli->target == NULL) {
        const char *a = arg_at(&p, p.i);
        if (strcmp(a, "--") == 0) {
            p.i++;
            if (p.i < p.n) {
                cli->target = Py_NewRef(PyList_GET_ITEM(argv, p.i));
                p.i++;
            }
            break;
        }
        if (a[0] == '-' && a[1] != '\0') {
            r = parse_option(cli, &p, CHKPT_VERB_RUN, 1);
            if (r != 0) {
                return r;
            }
            if (p.help || p.version) {
                break;
            }
            continue;
        }
        /* the first positional: a verb or the script */
        for (size_t vi = 0; vi < N_VERBS; vi++) {
            if (strcmp(a, verbs[vi].name) == 0) {
                p.i++;
                cli->verb = verbs[vi].verb;
                r = parse_verb_args(cli, &p, vi);
                if (r != 0) {
                    return r;
                }
                goto finished;
            }
        }
        cli->target = Py_NewRef(PyList_GET_ITEM(argv, p.i));
        p.i++;
    }
    if (!p.help && !p.version) {
        if (cli->target == NULL) {
            if (cli->is_module) {
                return usage_error("argument -m: expected one argument");
            }
            return usage_error("the following arguments are required: "
                               "script (or -m MODULE)");
        }
        if (list_tail(argv, p.i, &cli->args) < 0) {
            return -1;
        }
    }
finished:
    if (p.help) {
        char buf[sizeof(help_text) + 64];
        snprintf(buf, sizeof(buf), help_text, CHKPT_DEFAULT_KEEP_AUTO,
                 CHKPT_DEFAULT_SIGNAL_DEADLINE_MS);
        if (write_stdout(usage_text) < 0 || write_stdout(buf) < 0) {
            return -1;
        }
        *done = 1;
        return 0;
    }
    if (p.version) {
        PyObject *pkg = PyImport_ImportModule("chkpt");
        PyObject *ver = pkg ? PyObject_GetAttrString(pkg, "__version__")
                            : NULL;
        Py_XDECREF(pkg);
        PyObject *line = ver ? PyUnicode_FromFormat("chkpt %S\n", ver) : NULL;
        Py_XDECREF(ver);
        const char *s = line ? PyUnicode_AsUTF8(line) : NULL;
        if (s == NULL || write_stdout(s) < 0) {
            Py_XDECREF(line);
            return -1;
        }
        Py_DECREF(line);
        *done = 1;
        return 0;
    }
    return 0;
}

void
chkpt_cli_clear(chkpt_cli *cli)
{
    Py_CLEAR(cli->output_dir);
    Py_CLEAR(cli->target);
    Py_CLEAR(cli->args);
}

PyObject *
chkpt_main(PyObject *module, PyObject *argv)
{
    if (!PyList_Check(argv)) {
        PyObject *l = PySequence_List(argv);
        if (l == NULL) {
            return NULL;
        }
        argv = l;
    }
    else {
        Py_INCREF(argv);
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(argv); i++) {
        if (!PyUnicode_Check(PyList_GET_ITEM(argv, i))) {
            PyErr_Format(PyExc_TypeError, "main() argument %zd must be str, "
                         "not %.100s", i,
                         Py_TYPE(PyList_GET_ITEM(argv, i))->tp_name);
            Py_DECREF(argv);
            return NULL;
        }
    }
    chkpt_cli cli = {
        .verb = CHKPT_VERB_RUN,
        .frequency_ms = CHKPT_DEFAULT_FREQUENCY_MS,
        .min_obj_size = CHKPT_DEFAULT_MIN_OBJ_SIZE,
        .verbosity = 0,
        .compress_level = 0,
        .max_store_size = 0,
        .max_pickle_size = 0,
        .output_dir = NULL,
        .target = NULL,
        .is_module = 0,
        .args = NULL,
        .keep = -1,
        .keep_auto = -1,
        .signal_deadline_ms = CHKPT_DEFAULT_SIGNAL_DEADLINE_MS,
        .portable = 0,
    };
    int done;
    int r = parse_command_line(&cli, argv, &done);
    Py_DECREF(argv);
    PyObject *result = NULL;
    if (r < 0) {
        goto finally;
    }
    if (r > 0) {
        result = PyLong_FromLong(r);
        goto finally;
    }
    if (done) {
        result = PyLong_FromLong(0);
        goto finally;
    }
    if (cli.args == NULL) {
        cli.args = PyList_New(0);
        if (cli.args == NULL) {
            goto finally;
        }
    }
    if (cli.verb == CHKPT_VERB_RUN) {
        result = chkpt_run(module, &cli);
        goto finally;
    }
    int status;
    switch (cli.verb) {
    case CHKPT_VERB_LS: status = chkpt_verb_ls(module, &cli); break;
    case CHKPT_VERB_SHOW: status = chkpt_verb_show(module, &cli); break;
    case CHKPT_VERB_EXPLORE: status = chkpt_verb_explore(module, &cli); break;
    case CHKPT_VERB_EXPORT: status = chkpt_verb_export(module, &cli); break;
    case CHKPT_VERB_VERIFY: status = chkpt_verb_verify(module, &cli); break;
    case CHKPT_VERB_GC: status = chkpt_verb_gc(module, &cli); break;
    case CHKPT_VERB_DEBUG: status = chkpt_verb_debug(module, &cli); break;
    default: status = 0; break;
    }
    if (status >= 0) {
        result = PyLong_FromLong(status);
    }
finally:
    chkpt_cli_clear(&cli);
    return result;
}
