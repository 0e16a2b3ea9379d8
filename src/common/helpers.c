/* helpers.c: the shared helpers of helpers.h (warnings, warn-once, describing an
 * exception, the clock, dict and file helpers). Calls nothing of the
 * engine's own but this file. */
#include "helpers.h"
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

double
chkpt_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- warnings ---- */

static void
write_stderr_line(const char *line)
{
    PyObject *err = PySys_GetObject("stderr");     /* borrowed */
    if (err != NULL && err != Py_None) {
        if (PyFile_WriteString(line, err) == 0
            && PyFile_WriteString("\n", err) == 0) {
            PyObject *r = PyObject_CallMethod(err, "flush", NULL);
            if (r != NULL) {
                Py_DECREF(r);
                return;
            }
        }
        PyErr_Clear();
    }
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

void
chkpt_warn(const char *fmt, ...)
{
    char buf[2048];
    int n = snprintf(buf, sizeof(buf), "chkpt: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    va_end(ap);
    /* one line, whatever the message held */
    for (char *p = buf; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    write_stderr_line(buf);
    chkpt_error_restore(&saved);
}

void
chkpt_warn_py(const char *pyfmt, ...)
{
    chkpt_saved_error e;
    chkpt_error_save(&e);
    va_list ap;
    va_start(ap, pyfmt);
    PyObject *s = PyUnicode_FromFormatV(pyfmt, ap);
    va_end(ap);
    const char *u = s ? PyUnicode_AsUTF8(s) : NULL;
    if (u != NULL) {
        chkpt_warn("%s", u);
    }
    else {
        PyErr_Clear();
        chkpt_warn("%s", pyfmt);
    }
    Py_XDECREF(s);
    chkpt_error_restore(&e);
}

void
chkpt_warn_exc(const char *what)
{
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    PyObject *value = chkpt_error_value(&saved);
    PyObject *text = value ? chkpt_exc_text(value) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    if (msg == NULL) {
        PyErr_Clear();
        msg = "error";
    }
    chkpt_warn("%s: %s", what, msg);
    Py_XDECREF(text);
    chkpt_error_discard(&saved);
}

/* ---- once per run ---- */

int
chkpt_once(PyObject *set, PyObject *key)
{
    int seen = PySet_Contains(set, key);
    if (seen != 0) {
        return seen < 0 ? -1 : 0;
    }
    return PySet_Add(set, key) < 0 ? -1 : 1;
}

int
chkpt_once_str(PyObject *set, const char *key)
{
    PyObject *k = PyUnicode_FromString(key);
    if (k == NULL) {
        return -1;
    }
    int r = chkpt_once(set, k);
    Py_DECREF(k);
    return r;
}

/* ---- exceptions ---- */

PyObject *
chkpt_exc_text(PyObject *exc)
{
    const char *tname = Py_TYPE(exc)->tp_name;
    PyObject *s = PyObject_Str(exc);
    if (s == NULL) {
        PyErr_Clear();
    }
    PyObject *r = s != NULL && PyUnicode_GET_LENGTH(s) > 0
                  ? PyUnicode_FromFormat("%s: %U", tname, s)
                  : PyUnicode_FromString(tname);
    Py_XDECREF(s);
    return r;
}

PyObject *
chkpt_describe_pending(void)
{
    chkpt_saved_error e;
    chkpt_error_save(&e);
    PyObject *exc = chkpt_error_value(&e);
    PyObject *r = exc ? chkpt_exc_text(exc) : NULL;
    PyErr_Clear();
    chkpt_error_restore(&e);
    return r;
}

/* ---- dicts, files ---- */

PyObject *
chkpt_dict_get(PyObject *d, const char *key)
{
    if (d == NULL || !PyDict_Check(d)) {
        return NULL;
    }
    return PyDict_GetItemString(d, key);     /* borrowed */
}

PyObject *
chkpt_read_fp(FILE *fp, PyObject *filename)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int failed = 0;
    /* malloc, not PyMem: the loop runs without the GIL */
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap);
            if (nb == NULL) {
                failed = ENOMEM;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp)) {
                failed = errno ? errno : EIO;
            }
            break;
        }
    }
    Py_END_ALLOW_THREADS
    PyObject *data = NULL;
    if (failed == ENOMEM) {
        PyErr_NoMemory();
    }
    else if (failed) {
        errno = failed;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, filename);
    }
    else {
        data = PyBytes_FromStringAndSize(buf ? buf : "", (Py_ssize_t)len);
    }
    free(buf);
    return data;
}

PyObject *
chkpt_read_file(PyObject *path)
{
    PyObject *fs = PyUnicode_EncodeFSDefault(path);
    if (fs == NULL) {
        return NULL;
    }
    FILE *f;
    Py_BEGIN_ALLOW_THREADS
    f = fopen(PyBytes_AS_STRING(fs), "rbe");
    Py_END_ALLOW_THREADS
    Py_DECREF(fs);
    if (f == NULL) {
        return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    }
    PyObject *data = chkpt_read_fp(f, path);
    fclose(f);
    return data;
}
