/* cost.c: what snapshots cost, when -f auto may take the next one, and
 * --keep-auto (see cost.h for the rule). */
#include "cost.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define GIB (1024.0 * 1024.0 * 1024.0)

long long
chkpt_cost_private_memory(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (f == NULL) {
        return -1;
    }
    long long size, resident, shared;
    int n = fscanf(f, "%lld %lld %lld", &size, &resident, &shared);
    fclose(f);
    if (n != 3) {
        return -1;
    }
    return (resident - shared) * (long long)sysconf(_SC_PAGESIZE);
}

void
chkpt_cost_account(chkpt_cost *b, double started, long long rss,
                     double cpu, double wall, double ready, uint64_t bytes)
{
    if (cpu < 0) {
        cpu = 0;
    }
    /* The disk's bandwidth as the children saw it: the bytes of one that
     * wrote much over its lifetime (the disk writes them back while it
     * computes, and a loaded machine makes it slower: both err towards a
     * slower disk). */
    if (bytes >= CHKPT_AUTO_BANDWIDTH_SAMPLE && wall > 0) {
        double bw = (double)bytes / wall;
        b->bandwidth = b->bandwidth > 0 ? (b->bandwidth + bw) / 2 : bw;
    }
    double bw = b->bandwidth > 0 ? b->bandwidth : CHKPT_AUTO_GUESS_BANDWIDTH;
    /* its disk time: its bytes at that speed, or the time it was alive,
     * neither on a CPU nor waiting for one (syncing), if longer */
    double io = wall - cpu - (ready > 0 ? ready : 0);
    if (io < (double)bytes / bw) {
        io = (double)bytes / bw;
    }
    b->cpu += cpu;
    b->io += io;
    b->bytes += bytes;
    b->n++;
    if (started >= b->last_start) {
        b->last_start = started;
        b->last_cpu = cpu;
        b->last_io = io;
        b->last_rss = rss;
    }
}

static double
later(double a, double b)
{
    return a > b ? a : b;
}

double
chkpt_cost_next_auto(chkpt_cost *b, double run_start)
{
    if (b->since == 0 || run_start < b->since) {
        b->since = run_start;
    }
    long long rss = chkpt_cost_private_memory();
    double p_cpu, p_io;
    if (b->n == 0) {
        double m = rss > 0 ? (double)rss : 0;
        p_cpu = m / GIB * CHKPT_AUTO_GUESS_CPU_PER_GIB;
        p_io = m / CHKPT_AUTO_GUESS_BANDWIDTH;
    }
    else {
        double grow = rss > 0 && b->last_rss > 0 && rss > b->last_rss
                      ? (double)rss / (double)b->last_rss : 1.0;
        p_cpu = b->last_cpu * grow;
        p_io = b->last_io * grow;
    }
    double base = b->last_start > 0 ? b->last_start : run_start;
    double t = base + CHKPT_AUTO_MIN_INTERVAL;
    t = later(t, base + later(p_cpu, p_io) / CHKPT_AUTO_BUDGET);
    t = later(t, run_start + (b->cpu + p_cpu) / CHKPT_AUTO_BUDGET);
    t = later(t, run_start + (b->io + p_io) / CHKPT_AUTO_BUDGET);
    return t;
}

void
chkpt_cost_report(const chkpt_cost *b)
{
    if (b->n == 0) {
        return;
    }
    double wall = b->since > 0 ? chkpt_monotonic() - b->since : 0;
    if (wall <= 0) {
        return;
    }
    chkpt_warn("%lu snapshot process(es) over %.1f s: %.2f s of CPU (%.1f%%), "
               "%.2f s of disk time (%.1f%%), %.1f MB written (the disk seen "
               "at %.0f MB/s)", b->n, wall, b->cpu, 100.0 * b->cpu / wall,
               b->io, 100.0 * b->io / wall, (double)b->bytes / 1e6,
               (b->bandwidth > 0 ? b->bandwidth
                                 : CHKPT_AUTO_GUESS_BANDWIDTH) / 1e6);
}

long
chkpt_keep_auto_value(const CheckpointObject *ck)
{
    if (ck->keep_auto >= 0) {
        return ck->keep_auto;
    }
    return chkpt_freq_auto(ck->frequency_ms) ? CHKPT_DEFAULT_KEEP_AUTO : 0;
}

/* The meta dict of the snapshot at path, or NULL (no exception) when it
 * cannot be read: gc deals with damaged ones. */
static PyObject *
read_meta(CheckpointObject *ck, const char *path)
{
    char err[CHKPT_ERRLEN];
    chkpt_snapreader *r = chkpt_snap_open(path, err, sizeof(err));
    if (r == NULL) {
        return NULL;
    }
    size_t len;
    const char *meta = chkpt_snap_meta(r, &len);
    PyObject *s = meta ? PyUnicode_DecodeUTF8(meta, (Py_ssize_t)len,
                                              "surrogatepass") : NULL;
    chkpt_snap_close(r);
    chkpt_state *st = chkpt_get_state(ck->module);
    PyObject *d = s ? PyObject_CallMethod(st->json_module, "loads", "O", s)
                    : NULL;
    Py_XDECREF(s);
    if (d != NULL && !PyDict_Check(d)) {
        Py_CLEAR(d);
    }
    PyErr_Clear();
    return d;
}

/* Is meta's kind kind? */
static int
kind_is(PyObject *meta, chkpt_kind kind)
{
    PyObject *k = PyDict_GetItemString(meta, "kind");      /* borrowed */
    return k != NULL && PyUnicode_Check(k)
           && PyUnicode_CompareWithASCIIString(k, chkpt_kind_name(kind)) == 0;
}

/* Is the snapshot at path an automatic one of the script? 1, or 0 (also
 * when it cannot be read). */
static int
is_own_auto(CheckpointObject *ck, const char *path)
{
    PyObject *d = read_meta(ck, path);
    if (d == NULL) {
        return 0;
    }
    PyObject *script = PyDict_GetItemString(d, "script");
    int own = kind_is(d, CHKPT_KIND_AUTO) && script != NULL
              && PyObject_RichCompareBool(script, ck->script_path, Py_EQ) == 1;
    Py_DECREF(d);
    PyErr_Clear();
    return own;
}

int
chkpt_budget_pinned(CheckpointObject *ck, const char *dir, char ***pinned,
                    size_t *npinned)
{
    char err[CHKPT_ERRLEN] = "";
    char **paths = NULL;
    size_t n = 0, kept = 0;
    *pinned = NULL;
    *npinned = 0;
    if (chkpt_store_list(dir, &paths, &n, err, sizeof(err)) < 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        PyObject *d = read_meta(ck, paths[i]);
        int pin = d != NULL && (kind_is(d, CHKPT_KIND_CRASH) || kind_is(d, CHKPT_KIND_SIGNAL));
        Py_XDECREF(d);
        if (pin) {
            paths[kept++] = paths[i];
        }
        else {
            free(paths[i]);
        }
    }
    *pinned = paths;
    *npinned = kept;
    return 0;
}

/* The deletions reach the disk before any data goes: a manifest that came
 * back after a crash would name chunks that are gone. */
static int
sync_dir(const char *dir)
{
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/snapshots", dir);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int
chkpt_keep_auto_prune(CheckpointObject *ck, long keep)
{
    if (keep <= 0 || ck->store == NULL) {
        return 0;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", chkpt_store_dir(ck->store));
    char err[CHKPT_ERRLEN] = "";
    char **paths = NULL;
    size_t n = 0;
    if (chkpt_store_list(dir, &paths, &n, err, sizeof(err)) < 0) {
        chkpt_warn("cannot keep the newest %ld automatic snapshots: %s", keep, err);
        return -1;
    }
    /* the script's automatic ones, oldest first: all but the newest keep go */
    size_t own = 0;
    for (size_t i = n; i-- > 0;) {
        if (!is_own_auto(ck, paths[i])) {
            free(paths[i]);
            paths[i] = NULL;
        }
        else if (++own <= (size_t)keep) {
            free(paths[i]);
            paths[i] = NULL;
        }
    }
    int removed = 0, rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (paths[i] == NULL) {
            continue;
        }
        if (unlink(paths[i]) < 0 && errno != ENOENT) {
            snprintf(err, sizeof(err), "cannot remove %.300s: %s",
                     paths[i], strerror(errno));
            rc = -1;
            break;
        }
        removed++;
    }
    chkpt_free_list(paths, n);
    if (removed > 0 && rc == 0) {
        if (sync_dir(dir) < 0) {
            snprintf(err, sizeof(err), "cannot sync %.300s/snapshots: %s",
                     dir, strerror(errno));
            rc = -1;
        }
        else {
            /* keeps every snapshot left, sweeps the data none uses */
            rc = chkpt_store_gc(dir, LONG_MAX, NULL, NULL, err, sizeof(err));
        }
    }
    if (rc < 0) {
        chkpt_warn("cannot keep the newest %ld automatic snapshots: %s", keep, err);
        return -1;
    }
    return removed;
}
