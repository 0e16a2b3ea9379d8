/* helpers.h: the shared helpers every part of the engine may use, one home
 * each (helpers.c): warnings, warn-once, saving a pending exception, the
 * clock, dict/file/path helpers, and the constants more than one part
 * reads. Base calls nothing above it (only Python's C API and libc). */
#ifndef CHKPT_HELPERS_H
#define CHKPT_HELPERS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdio.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* Version of the snapshot meta document (docs/FORMAT.md, "Snapshot
 * metadata"): capture writes it, load refuses a newer one. */
#define CHKPT_META_FORMAT 1

#if defined(__GNUC__) || defined(__clang__)
#define CHKPT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CHKPT_PRINTF(f, a)
#endif

/* ---- warnings: one "chkpt: <message>" line on sys.stderr (C stderr when
 * that fails); never raise, keep any pending exception pending ---- */

/* printf formats (%s, %d, ...): the compiler checks every call. */
void chkpt_warn(const char *fmt, ...) CHKPT_PRINTF(1, 2);
/* PyUnicode_FromFormat formats (%U, %S, %R, ...): for Python objects. The
 * compiler cannot check these; the name says which format it takes. */
void chkpt_warn_py(const char *pyfmt, ...);
/* "what: ExcType: message" of the pending exception, which is cleared. */
void chkpt_warn_exc(const char *what);

/* ---- once per run ---- */

/* For "do this once": adds key to set (a set of keys already acted on).
 * 1 the first time, 0 when key was there already, -1 with an exception. */
int chkpt_once(PyObject *set, PyObject *key);
/* Same, key a C string. */
int chkpt_once_str(PyObject *set, const char *key);

/* ---- exceptions ---- */

/* "ExcType: message" (or "ExcType" when str(exc) is empty or fails) of an
 * exception object; NULL with an exception on a memory error. */
PyObject *chkpt_exc_text(PyObject *exc);
/* The same of the pending exception, which stays pending; NULL (nothing
 * else set) when it cannot be described. */
PyObject *chkpt_describe_pending(void);

/* Saving and restoring a pending exception, on every supported version
 * (PyErr_Fetch is deprecated from 3.12 on). */
typedef struct {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc;
#else
    PyObject *type, *value, *tb;
#endif
} chkpt_saved_error;

static inline void
chkpt_error_save(chkpt_saved_error *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    e->exc = PyErr_GetRaisedException();
#else
    PyErr_Fetch(&e->type, &e->value, &e->tb);
#endif
}

static inline void
chkpt_error_restore(chkpt_saved_error *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(e->exc);
#else
    PyErr_Restore(e->type, e->value, e->tb);
#endif
}

/* The saved exception object, normalized and carrying its traceback on
 * every version (borrowed; NULL when none was pending). */
static inline PyObject *
chkpt_error_value(chkpt_saved_error *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    return e->exc;
#else
    PyErr_NormalizeException(&e->type, &e->value, &e->tb);
    if (e->value != NULL && e->tb != NULL) {
        PyException_SetTraceback(e->value, e->tb);
    }
    return e->value;
#endif
}

/* Drops a saved exception instead of restoring it. */
static inline void
chkpt_error_discard(chkpt_saved_error *e)
{
#if PY_VERSION_HEX >= 0x030C0000
    Py_CLEAR(e->exc);
#else
    Py_CLEAR(e->type);
    Py_CLEAR(e->value);
    Py_CLEAR(e->tb);
#endif
}

/* ---- clock, dicts, files ---- */

/* CLOCK_MONOTONIC in seconds. */
double chkpt_monotonic(void);

/* d[key] (borrowed), or NULL when d is not a dict or has no such key;
 * never sets an exception. */
PyObject *chkpt_dict_get(PyObject *d, const char *key);

/* The whole of an open file as bytes, read with the GIL released; NULL
 * with OSError (naming filename) or MemoryError set. */
PyObject *chkpt_read_fp(FILE *fp, PyObject *filename);
/* The whole file at path (str) as bytes; NULL with OSError set. */
PyObject *chkpt_read_file(PyObject *path);

#endif
