/* child.c: snapshots taken and written by a child process.
 *
 * At a snapshot the script's process clones itself with the raw clone
 * system call, no CLONE_VM and no exit signal. Such a "clone child" is
 * invisible to the script: waitpid(-1) / os.wait() / subprocess /
 * multiprocessing never see it (only __WCLONE or __WALL waits do), no
 * SIGCHLD is sent, and glibc's fork handling is skipped, so neither
 * pthread_atfork handlers nor Python's os.register_at_fork callbacks run,
 * and Python issues no warning about forking a multi-threaded process.
 *
 * The child keeps the GIL it was cloned with, turns the cyclic GC off (no
 * finalizers), ignores the script's signal handlers, sends its own stdio
 * to /dev/null and sys.stdout/sys.stderr to buffers, runs the capture as
 * before (capture.c: selection, pickling, store I/O, publication), then
 * writes a report into a page it shares with the parent and leaves with
 * _exit (no atexit handlers, no stdio flushes). The report holds the
 * snapshot's path, the `chkpt:` lines the capture wrote (the parent
 * prints them when it reaps the child: the child writes nothing), and the
 * warn-once state the capture changed (ck->warned, ck->warned_once,
 * ck->no_retry, the deferred reports),
 * which the parent merges so that its state stays the one that counts.
 *
 * Deadlines are the kernel's: in the child, hooks.c's time limit become
 * an ITIMER_REAL whose SIGALRM ends the child (5 s per object, then the
 * capture's 30 s and CHKPT_WRITER_IO_SECONDS for the I/O). A child that
 * blocks forever (a lock another thread held when it was cloned) dies at
 * its deadline; the parent then warns once and leaves the object it was
 * pickling out of later snapshots. The store publishes atomically, so a
 * child that dies anywhere leaves nothing half-visible (its temporary files
 * are swept by the next writer's commit or by gc).
 *
 * Reaping is done with WNOHANG polls of our own pids (waitpid(pid,
 * __WCLONE)), at the next snapshot, in ck.wait(), when a SnapshotInfo is
 * read and at the end of the run: no thread of chkpt's is added.
 */
#include "child.h"
#include "helpers.h"
#include "cost.h"
#include "timer.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef __WCLONE
#define __WCLONE 0x80000000
#endif

#define PAGE_SIZE_BYTES (4u << 20)      /* shared with one child, reused */
#define CUR_MAX 4000                    /* the object being pickled */
#define CHILD_KILL_GRACE 2.0            /* after an object's time limit: SIGKILL */
#define CHILD_SETUP_SECONDS 5.0         /* the child's set-up, before its capture */
/* children in a row that did not get through their set-up before it is
 * said (once) */
#define SETUP_STALLS_SAID 3

/* What a child shares with its parent. Read by the parent only after the
 * child has ended (waitpid orders the accesses). */
typedef struct {
    uint32_t done;              /* the report is complete */
    uint32_t len;               /* bytes of report */
    uint32_t cur_len;           /* bytes of cur, 0 outside an object */
    uint32_t limit_ms;         /* the time limit of the object in cur */
    uint32_t set_up;            /* the child got through its set-up */
    double wall;                /* seconds the child lived (cost.c) */
    double ready;               /* of which waiting for a CPU */
    uint64_t wbytes;            /* bytes it wrote */
    char cur[CUR_MAX];          /* JSON of [no-retry key, label] */
    char report[];              /* JSON of the report dict */
} child_page;

#define REPORT_MAX (PAGE_SIZE_BYTES - sizeof(child_page))

typedef struct {
    pid_t pid;                  /* 0: free */
    double started;             /* monotonic */
    child_page *page;           /* mapped once, reused */
    PyObject *info;             /* the PendingInfo handed out, or NULL */
    double clone_s;             /* the script's pause to create it */
    long long rss;              /* the script's private memory then */
} writer_job;

typedef struct {
    writer_job jobs[CHKPT_WRITER_SLOTS];
    pid_t owner;                /* the process whose children these are */
    int in_child;               /* this process is a writer child */
    double hard_deadline;       /* in a child: monotonic end of its life */
    int soft_limit;            /* in a child: SIGALRM raises TimeoutError */
    chkpt_ktimer kill_timer;    /* in a child: SIGKILL at the deadline */
    chkpt_ktimer alarm_timer;   /* in a child: SIGALRM, the time limit */
    int in_time_limit;              /* in a child: an object's time limit runs */
    PyTypeObject *PendingInfo_Type;
    PyObject *stringio;         /* io.StringIO, fetched before any child */
    unsigned long long skipped; /* automatic snapshots skipped: all busy */
    /* -f 0: a due snapshot skipped while the others were written is
     * coalesced; the next line after a child ended takes it, and the last
     * one is taken from the script's module frame at its end (its locals
     * are the module's globals: holding it keeps nothing alive) */
    double coalesced_at;        /* monotonic; 0: none pending */
    /* ck->last_snapshot as the newest child holding another module's
     * frame (not __main__'s variables) started: it does not pay for a
     * request before it */
    double offmain_at;
    PyFrameObject *main_frame;  /* the script's bottom frame, or NULL */
    int main_frame_stale;       /* a new unit began: noted again */
    int line_covered;           /* the next -f 0 line is snapshotted */
    int warned_memory;
    int warned_clone;
    int setup_stalls;           /* children in a row stuck in set-up */
    chkpt_cost cost;        /* what the children cost (-f auto) */
    double child_cap;           /* seconds any child may live (120) */
    double exit_wait;           /* seconds the end of the run waits (60) */
} writer_state;

/* Set once, in a writer child only, right after the clone: a fact about
 * the process, read by code that has no Checkpoint at hand (is there a
 * script to interrupt?). Per process like the state an atfork handler
 * resets, hence a global. */
static int writer_child_process;

/* ------------------------------------------------------------------ */
/* PendingInfo: the SnapshotInfo that snapshot() returns at once        */

/* The pending part, after the SnapshotInfo base (whose size only module.c
 * knows: the offset is the base's basicsize, read at run time). */
typedef struct {
    PyObject *ck;               /* the Checkpoint (strong) */
    PyObject *early;            /* dict: name, kind, time, script, line */
    PyObject *path;             /* NULL while written; str, or None */
    PyObject *resolved;         /* the full SnapshotInfo, once read */
} pending_part;

static pending_part *
pending_of(PyObject *self)
{
    return (pending_part *)((char *)self + Py_TYPE(self)->tp_base->tp_basicsize);
}

static int
pending_traverse(PyObject *self, visitproc visit, void *arg)
{
    pending_part *p = pending_of(self);
    Py_VISIT(p->ck);
    Py_VISIT(p->early);
    Py_VISIT(p->path);
    Py_VISIT(p->resolved);
    return Py_TYPE(self)->tp_base->tp_traverse(self, visit, arg);
}

static int
pending_clear(PyObject *self)
{
    pending_part *p = pending_of(self);
    Py_CLEAR(p->ck);
    Py_CLEAR(p->early);
    Py_CLEAR(p->path);
    Py_CLEAR(p->resolved);
    return Py_TYPE(self)->tp_base->tp_clear(self);
}

static void
pending_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    pending_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int wait_for_info(CheckpointObject *ck, PyObject *info);

/* The full SnapshotInfo (borrowed), waiting for the child if need be. */
static PyObject *
pending_resolve(PyObject *self)
{
    pending_part *p = pending_of(self);
    if (p->resolved != NULL) {
        return p->resolved;
    }
    CheckpointObject *ck = (CheckpointObject *)p->ck;
    if (p->path == NULL && wait_for_info(ck, self) < 0) {
        return NULL;
    }
    if (p->path == NULL) {
        p->path = Py_NewRef(Py_None);   /* its child was lost */
    }
    PyObject *meta = NULL;
    if (p->path != Py_None) {
        chkpt_snapreader *r = chkpt_snapshot_open(ck->module, p->path, &meta);
        if (r != NULL) {
            chkpt_snap_close(r);
        }
        else {
            /* gone already (--max-store-size, gc): what is known */
            PyErr_Clear();
        }
    }
    if (meta == NULL) {
        meta = PyDict_Copy(p->early);
        if (meta == NULL) {
            return NULL;
        }
    }
    p->resolved = chkpt_snapinfo_new(ck->module, p->path, meta);
    Py_DECREF(meta);
    return p->resolved;
}

static PyObject *
pending_get(PyObject *self, void *closure)
{
    PyObject *r = pending_resolve(self);
    return r ? PyObject_GetAttrString(r, (const char *)closure) : NULL;
}

static PyObject *
pending_repr(PyObject *self)
{
    PyObject *r = pending_resolve(self);
    return r ? PyObject_Repr(r) : NULL;
}

static int
pending_bool(PyObject *self)
{
    if (pending_resolve(self) == NULL) {
        return -1;
    }
    return pending_of(self)->path != Py_None;
}

static PyObject *
pending_fspath(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (pending_resolve(self) == NULL) {
        return NULL;
    }
    pending_part *p = pending_of(self);
    if (p->path == Py_None) {
        chkpt_state *st = chkpt_get_state(((CheckpointObject *)p->ck)->module);
        PyErr_SetString(st->SnapshotError,
                        "this snapshot was not written (a chkpt: line said why)");
        return NULL;
    }
    return Py_NewRef(p->path);
}

#define PENDING_FIELD(f, doc) {#f, pending_get, NULL, doc, #f}

static PyGetSetDef pending_getset[] = {
    PENDING_FIELD(path, "path of the snapshot (None if it was not written)"),
    PENDING_FIELD(name, "name given to snapshot(), or None"),
    PENDING_FIELD(kind, "'auto', 'manual', 'crash' or 'signal'"),
    PENDING_FIELD(time, "when it was taken (seconds since the epoch)"),
    PENDING_FIELD(script, "the script's path"),
    PENDING_FIELD(line, "line of the script being run"),
    PENDING_FIELD(variables, "names of the captured variables"),
    PENDING_FIELD(size, "bytes of captured data"),
    PENDING_FIELD(meta, "the full metadata dict"),
    {NULL}
};

static PyMethodDef pending_methods[] = {
    {"__fspath__", (PyCFunction)pending_fspath, METH_NOARGS,
     "The manifest path (waits until the snapshot is written)."},
    {NULL}
};

static PyType_Slot pending_slots[] = {
    {Py_tp_doc, "A snapshot being written: reading it waits until it is."},
    {Py_tp_dealloc, pending_dealloc},
    {Py_tp_traverse, pending_traverse},
    {Py_tp_clear, pending_clear},
    {Py_tp_repr, pending_repr},
    {Py_tp_getset, pending_getset},
    {Py_tp_methods, pending_methods},
    {Py_nb_bool, pending_bool},
    {0, NULL}
};

static PyType_Spec pending_spec = {
    /* the same name as its base: it is a SnapshotInfo to the script */
    .name = "chkpt.SnapshotInfo",
    .basicsize = 0,             /* set at run time */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = pending_slots,
};

static PyObject *
pending_new(writer_state *w, CheckpointObject *ck, PyObject *early)
{
    PyObject *self = PyType_GenericAlloc(w->PendingInfo_Type, 0);
    if (self == NULL) {
        return NULL;
    }
    pending_part *p = pending_of(self);
    p->ck = Py_NewRef((PyObject *)ck);
    p->early = Py_NewRef(early);
    return self;
}

/* The job's info is settled: path (str) or None. */
static void
pending_settle(writer_job *j, PyObject *path)
{
    if (j->info == NULL) {
        return;
    }
    pending_part *p = pending_of(j->info);
    if (p->path == NULL) {
        p->path = Py_NewRef(path);
    }
    Py_CLEAR(j->info);
}

/* ------------------------------------------------------------------ */
/* state                                                                */

/* A limit in seconds from the environment (README "Limits you can
 * shorten"): the default when unset, empty or not a positive number. */
static double
env_seconds(const char *name, double dflt)
{
    const char *v = getenv(name);
    if (v == NULL || *v == '\0') {
        return dflt;
    }
    char *end;
    double d = strtod(v, &end);
    return (*end == '\0' && d > 0 && d < 1e9) ? d : dflt;
}

static writer_state *
get_state(CheckpointObject *ck)
{
    if (ck->writer != NULL) {
        return (writer_state *)ck->writer;
    }
    writer_state *w = PyMem_RawCalloc(1, sizeof(writer_state));
    if (w == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    w->child_cap = env_seconds("CHKPT_CHILD_TIMEOUT", CHKPT_SNAPSHOT_TIME_LIMIT
                                                      + CHKPT_WRITER_IO_SECONDS);
    w->exit_wait = env_seconds("CHKPT_EXIT_TIMEOUT", CHKPT_WRITER_EXIT_TIMEOUT);
    chkpt_state *st = chkpt_get_state(ck->module);
    PyType_Spec spec = pending_spec;
    spec.basicsize = (int)(st->SnapshotInfo_Type->tp_basicsize
                           + (Py_ssize_t)sizeof(pending_part));
    PyObject *bases = PyTuple_Pack(1, (PyObject *)st->SnapshotInfo_Type);
    PyObject *io = bases ? PyImport_ImportModule("io") : NULL;
    w->stringio = io ? PyObject_GetAttrString(io, "StringIO") : NULL;
    Py_XDECREF(io);
    w->PendingInfo_Type = w->stringio ? (PyTypeObject *)PyType_FromModuleAndSpec(
        ck->module, &spec, bases) : NULL;
    Py_XDECREF(bases);
    if (w->PendingInfo_Type == NULL) {
        Py_XDECREF(w->stringio);
        PyMem_RawFree(w);
        return NULL;
    }
    w->owner = getpid();
    ck->writer = w;
    return w;
}

/* In a child the script forked (os.fork): the snapshots in flight are its
 * parent's, not its children; forget them. */
static void
adopt_after_fork(writer_state *w)
{
    if (w->owner == getpid() || w->in_child) {
        return;
    }
    for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
        writer_job *j = &w->jobs[i];
        if (j->pid != 0) {
            j->pid = 0;
            pending_settle(j, Py_None);
        }
    }
    w->owner = getpid();
    w->coalesced_at = 0;        /* the parent's request, not this process's */
}

/* ------------------------------------------------------------------ */
/* the parent: reaping                                                   */

/* The child's report travels as JSON (marshal.loads would be an audit
 * event the script's own hooks could see). Lists inside come back as
 * tuples, so that the keys of the warn-once sets are hashable again. */
static PyObject *
as_tuples(PyObject *o)
{
    if (PyList_Check(o) && PyList_GET_SIZE(o) > 0
        && PyUnicode_Check(PyList_GET_ITEM(o, 0))) {
        return PyList_AsTuple(o);
    }
    return Py_NewRef(o);
}

static PyObject *
json_read(CheckpointObject *ck, const char *buf, uint32_t len)
{
    chkpt_state *st = chkpt_get_state(ck->module);
    PyObject *s = PyUnicode_DecodeUTF8(buf, (Py_ssize_t)len, "surrogatepass");
    PyObject *o = s ? PyObject_CallMethod(st->json_module, "loads", "O", s) : NULL;
    Py_XDECREF(s);
    return o;
}

static PyObject *
json_write(CheckpointObject *ck, PyObject *o)
{
    chkpt_state *st = chkpt_get_state(ck->module);
    /* one argument whatever o is ("O" would spread a tuple over several) */
    PyObject *dumps = PyObject_GetAttrString(st->json_module, "dumps");
    PyObject *s = dumps ? PyObject_CallOneArg(dumps, o) : NULL;
    Py_XDECREF(dumps);
    PyObject *b = s ? PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass") : NULL;
    Py_XDECREF(s);
    return b;
}

/* Applies the child's report: its lines, its warn-once state. */
static void
apply_report(CheckpointObject *ck, PyObject *rep, PyObject **path)
{
    PyObject *lines = PyDict_GetItemString(rep, "lines");      /* borrowed */
    PyObject *deferred = PyDict_GetItemString(rep, "deferred");
    PyObject *warned = PyDict_GetItemString(rep, "warned");
    PyObject *p = PyDict_GetItemString(rep, "path");
    PyObject *failed = PyDict_GetItemString(rep, "store_failed");
    if (lines != NULL && PyList_Check(lines)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(lines); i++) {
            PyObject *l = PyList_GET_ITEM(lines, i);
            /* said already by a child that ran at the same time */
            int said = 0;
            for (Py_ssize_t k = 0; warned != NULL && PyList_Check(warned)
                     && k < PyList_GET_SIZE(warned) && !said; k++) {
                PyObject *key = PyList_GET_ITEM(warned, k);
                if (!PyUnicode_Check(key) || PySet_Contains(ck->warned, key) != 1) {
                    continue;
                }
                PyObject *pat = PyUnicode_FromFormat("variable '%U' ", key);
                said = pat != NULL && PyUnicode_Check(l)
                       && PyUnicode_Find(l, pat, 0, PY_SSIZE_T_MAX, 1) >= 0;
                Py_XDECREF(pat);
            }
            const char *s = !said && PyUnicode_Check(l) ? PyUnicode_AsUTF8(l) : NULL;
            if (s == NULL) {
                PyErr_Clear();
                continue;
            }
            chkpt_warn("%s", strncmp(s, "chkpt: ", 7) == 0 ? s + 7 : s);
        }
    }
    /* the deferred reports first: they look at ck->warned */
    if (deferred != NULL && PyList_Check(deferred)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(deferred); i++) {
            PyObject *e = PyList_GET_ITEM(deferred, i);
            if (!PyList_Check(e) || PyList_GET_SIZE(e) != 3) {
                continue;
            }
            long n = PyLong_AsLong(PyList_GET_ITEM(e, 2));
            for (long k = 0; k < n; k++) {
                if (chkpt_capture_report_unsaved(ck, PyList_GET_ITEM(e, 0),
                                                 PyList_GET_ITEM(e, 1)) < 0) {
                    break;
                }
            }
            PyErr_Clear();
        }
    }
    PyObject *sets[3][2] = {
        {warned, ck->warned},
        {PyDict_GetItemString(rep, "warned_once"), ck->warned_once},
        {PyDict_GetItemString(rep, "no_retry"), ck->no_retry},
    };
    for (int k = 0; k < 3; k++) {
        PyObject *added = sets[k][0];
        for (Py_ssize_t i = 0; added != NULL && PyList_Check(added)
                 && i < PyList_GET_SIZE(added); i++) {
            PyObject *key = as_tuples(PyList_GET_ITEM(added, i));
            if (PySet_Add(sets[k][1], key) < 0) {
                PyErr_Clear();
            }
            Py_DECREF(key);
        }
    }
    if (failed != NULL && PyObject_IsTrue(failed) == 1) {
        chkpt_capture_store_unusable(ck);
    }
    PyErr_Clear();
    if (p != NULL && PyUnicode_Check(p)) {
        *path = Py_NewRef(p);
    }
}

/* The child ended without a report: say why, once per reason. */
static void
report_death(CheckpointObject *ck, writer_job *j, int status)
{
    child_page *pg = j->page;
    writer_state *w = (writer_state *)ck->writer;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    /* killed at the cap (its clock starts after the clone began) */
    int late = (sig == SIGKILL || sig == SIGALRM) && w != NULL
               && chkpt_monotonic() - (j->started - j->clone_s) >= w->child_cap;
    if ((sig == SIGALRM || sig == SIGKILL) && pg->cur_len > 0 && pg->cur_len <= CUR_MAX) {
        /* out of time on one object: leave it out from now on */
        PyObject *cur = json_read(ck, pg->cur, pg->cur_len);
        if (cur != NULL && PyList_Check(cur) && PyList_GET_SIZE(cur) == 2) {
            PyObject *key = as_tuples(PyList_GET_ITEM(cur, 0));
            int first = chkpt_once(ck->no_retry, key);
            Py_DECREF(key);
            if (first == 1) {
                const char *label = PyUnicode_Check(PyList_GET_ITEM(cur, 1))
                    ? PyUnicode_AsUTF8(PyList_GET_ITEM(cur, 1)) : NULL;
                if (late) {
                    chkpt_warn("a snapshot took longer than %g s to write and "
                               "was given up: %s, being pickled then, is left "
                               "out of the next snapshots", w->child_cap,
                               label ? label : "a variable");
                }
                else {
                    chkpt_warn("%s took longer than %.1f s to pickle: it is "
                               "left out of the next snapshots (this one was "
                               "given up)", label ? label : "a variable",
                               pg->limit_ms / 1000.0);
                }
            }
        }
        Py_XDECREF(cur);
        PyErr_Clear();
        return;
    }
    if (sig == SIGKILL && !pg->set_up && w != NULL) {
        /* Killed by its set-up deadline: a lock another thread of the
         * script held at the clone stays held in the copy, where no thread
         * will release it (3.13's import lock was one, before the parent
         * took it for the child; others are not known). Not the
         * script's doing, and the next child is a new copy: said only when
         * it keeps happening; with -f 0 the line's snapshot is owed. */
        if (++w->setup_stalls >= SETUP_STALLS_SAID
            && chkpt_once_str(ck->warned_once, " writer set-up") == 1) {
            chkpt_warn("%d snapshot processes in a row did not start within "
                       "%.0f s (stuck on a lock another thread held): their "
                       "snapshots were lost", w->setup_stalls,
                       CHILD_SETUP_SECONDS);
        }
        if (chkpt_freq_every_line(ck->frequency_ms) && w->coalesced_at == 0) {
            w->coalesced_at = chkpt_monotonic();
        }
        PyErr_Clear();
        return;
    }
    const char *key = late ? " writer deadline" : " writer died";
    if (chkpt_once_str(ck->warned_once, key) == 1) {
        if (late) {
            chkpt_warn("a snapshot took longer than %g s to write and was given up",
                       w->child_cap);
        }
        else if (sig != 0) {
            chkpt_warn("a snapshot was lost: the process writing it was killed "
                       "(signal %d%s)", sig,
                       sig == SIGKILL ? ", out of memory?" : "");
        }
        else {
            chkpt_warn("a snapshot was lost: the process writing it exited "
                       "with status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
    }
    PyErr_Clear();
}

/* The child of job j ended (status from waitpid; -1 if it could not be
 * had): settle its info and apply what it reported. */
static void
finish_job(CheckpointObject *ck, writer_job *j, int status,
           const struct rusage *ru)
{
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    PyObject *path = NULL;
    child_page *pg = j->page;
    writer_state *w = (writer_state *)ck->writer;
    /* reaped: first, since applying the report writes to sys.stderr, which
     * runs Python code, where a pending poll would reap it again (wait4
     * fails, the page still holds the report: its lines said twice) */
    j->pid = 0;
    if (w != NULL) {
        double cpu = ru == NULL ? 0 : (double)ru->ru_utime.tv_sec
            + ru->ru_utime.tv_usec * 1e-6 + (double)ru->ru_stime.tv_sec
            + ru->ru_stime.tv_usec * 1e-6;
        if (pg->set_up) {
            w->setup_stalls = 0;
        }
        int reported = pg->done && pg->wall > 0;
        double wall = reported ? pg->wall : chkpt_monotonic() - j->started;
        chkpt_cost_account(&w->cost, j->started, j->rss, cpu + j->clone_s,
                             wall + j->clone_s, reported ? pg->ready : 0,
                             reported ? pg->wbytes : 0);
    }
    if (pg->done && pg->len > 0 && pg->len <= REPORT_MAX) {
        PyObject *rep = json_read(ck, pg->report, pg->len);
        if (rep != NULL && PyDict_Check(rep)) {
            apply_report(ck, rep, &path);
        }
        Py_XDECREF(rep);
        PyErr_Clear();
    }
    else if (status != -1) {
        report_death(ck, j, status);
    }
    pending_settle(j, path ? path : Py_None);
    Py_XDECREF(path);
    chkpt_error_restore(&saved);
}

/* Has job j ended? Reaps it if so (1), 0 if it runs. */
static int
poll_job(CheckpointObject *ck, writer_job *j)
{
    int status = 0;
    struct rusage ru;
    pid_t r = wait4(j->pid, &status, WNOHANG | __WCLONE, &ru);
    if (r == 0) {
        return 0;
    }
    if (r < 0 && errno == EINTR) {
        return 0;
    }
    finish_job(ck, j, r == j->pid ? status : -1, r == j->pid ? &ru : NULL);
    return 1;
}

static int
in_flight(writer_state *w)
{
    int n = 0;
    for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
        n += w->jobs[i].pid != 0;
    }
    return n;
}

void
chkpt_writer_poll(CheckpointObject *ck)
{
    writer_state *w = (writer_state *)ck->writer;
    if (w == NULL || w->in_child) {
        return;
    }
    adopt_after_fork(w);
    for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
        if (w->jobs[i].pid != 0) {
            poll_job(ck, &w->jobs[i]);
        }
    }
}

/* Sleeps without the GIL until one of the selected jobs' children exits
 * (a pidfd becomes readable then: no poll's lateness added to the wait,
 * which the end of the run pays) or `seconds` passed. */
static void
nap(writer_state *w, PyObject *info, double seconds)
{
    struct pollfd fds[CHKPT_WRITER_SLOTS];
    nfds_t n = 0;
#ifdef SYS_pidfd_open
    for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
        writer_job *j = &w->jobs[i];
        if (j->pid > 0 && (info == NULL || j->info == info)) {
            int fd = (int)syscall(SYS_pidfd_open, j->pid, 0);
            if (fd >= 0) {
                fds[n].fd = fd;
                fds[n].events = POLLIN;
                n++;
            }
        }
    }
#endif
    Py_BEGIN_ALLOW_THREADS
    if (n > 0) {
        (void)poll(fds, n, (int)(seconds * 1000) + 1);
    }
    else {
        struct timespec ts = {0, (long)(seconds * 1e9)};
        nanosleep(&ts, NULL);
    }
    Py_END_ALLOW_THREADS
    for (nfds_t i = 0; i < n; i++) {
        close(fds[i].fd);
    }
}

/* Waits until the jobs selected by want() ended, until the monotonic
 * deadline `until` (0: none). 1 done, 0 out of time, -1 a signal handler
 * raised (only when interruptible). */
static int
wait_jobs(CheckpointObject *ck, writer_state *w, PyObject *info, int any,
          double until, int interruptible)
{
    double pause = 0.0005;
    for (;;) {
        int running = 0, ended = 0;
        for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
            writer_job *j = &w->jobs[i];
            if (j->pid == 0 || (info != NULL && j->info != info)) {
                continue;
            }
            if (poll_job(ck, j)) {
                ended++;
            }
            else {
                running++;
            }
        }
        if (running == 0 || (any && ended > 0)) {
            return 1;
        }
        if (until > 0 && chkpt_monotonic() >= until) {
            return 0;
        }
        nap(w, info, pause);
        pause = pause * 2 < 0.01 ? pause * 2 : 0.01;
        if (interruptible && PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

static int
wait_for_info(CheckpointObject *ck, PyObject *info)
{
    writer_state *w = (writer_state *)ck->writer;
    if (w == NULL) {
        return 0;
    }
    adopt_after_fork(w);
    return wait_jobs(ck, w, info, 0, 0, 1) < 0 ? -1 : 0;
}

int
chkpt_writer_wait(CheckpointObject *ck)
{
    writer_state *w = (writer_state *)ck->writer;
    if (w == NULL || w->in_child) {
        return 0;
    }
    adopt_after_fork(w);
    return wait_jobs(ck, w, NULL, 0, 0, 1) < 0 ? -1 : 0;
}

double
chkpt_writer_next_auto(CheckpointObject *ck, double run_start)
{
    double now = chkpt_monotonic();
    writer_state *w = get_state(ck);
    if (w == NULL) {
        PyErr_Clear();
        return now + CHKPT_AUTO_MIN_INTERVAL;
    }
    if (w->in_child) {
        return now + CHKPT_AUTO_MIN_INTERVAL;
    }
    adopt_after_fork(w);
    chkpt_writer_poll(ck);
    if (in_flight(w) > 0) {
        return now + CHKPT_WRITER_AUTO_POLL;    /* its cost is not known yet */
    }
    return chkpt_cost_next_auto(&w->cost, run_start);
}

static void note_main_frame(CheckpointObject *ck, writer_state *w,
                            PyFrameObject *frame, int walk);
/* The end of the run waits for the snapshots in flight, at most
 * exit_wait seconds (CHKPT_EXIT_TIMEOUT); past that they are given up: the
 * children die with the script (PR_SET_PDEATHSIG). */
static void
wait_at_exit(CheckpointObject *ck, writer_state *w)
{
    if (in_flight(w) == 0) {
        return;
    }
    int r = wait_jobs(ck, w, NULL, 0, chkpt_monotonic() + w->exit_wait, 1);
    if (r > 0) {
        return;
    }
    PyErr_Clear();
    if (r == 0) {
        chkpt_warn("%d snapshot(s) still being written at exit given up "
                   "after waiting %g s", in_flight(w), w->exit_wait);
    }
    else {
        chkpt_warn("%d snapshot(s) still being written at exit given up "
                   "after an interruption", in_flight(w));
    }
}


/* At the end of a -f 0 run, the snapshot coalesced while the last child
 * was written (nothing else was taken after it): from the script's module
 * frame, once every child in flight ended (the end waits for them anyway).
 * Nothing is done when nothing was coalesced. */
static void
take_coalesced(CheckpointObject *ck, writer_state *w)
{
    int paid = ck->last_snapshot > w->coalesced_at
               && ck->last_snapshot != w->offmain_at;
    if (w->coalesced_at == 0 || w->main_frame == NULL
        || !chkpt_freq_every_line(ck->frequency_ms) || paid || in_flight(w) > 0) {
        return;
    }
    w->coalesced_at = 0;
    chkpt_snapshot_request rq = {.kind = CHKPT_KIND_AUTO,
                                 .frame = w->main_frame};
    PyObject *r = chkpt_snapshot_take(ck, &rq);
    if (r == NULL) {
        PyErr_Clear();
        return;
    }
    Py_DECREF(r);
    wait_at_exit(ck, w);
}

void
chkpt_writer_finish(CheckpointObject *ck)
{
    writer_state *w = (writer_state *)ck->writer;
    if (w == NULL || w->in_child) {
        return;
    }
    adopt_after_fork(w);
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    wait_at_exit(ck, w);
    take_coalesced(ck, w);
    if (w->skipped > 0 && ck->verbosity > 0) {
        chkpt_warn("%llu automatic snapshot(s) skipped: %d were being written",
                   w->skipped, CHKPT_WRITER_MAX_CHILDREN);
    }
    if (ck->verbosity > 0) {
        chkpt_cost_report(&w->cost);
    }
    /* the state's type refers to the module, whose state refers to ck: a
     * cycle through C that would keep the script's __main__ alive past its
     * normal teardown (its objects finalized after sys is gone) */
    chkpt_writer_free(ck);
    chkpt_error_restore(&saved);
}

void
chkpt_writer_free(CheckpointObject *ck)
{
    writer_state *w = (writer_state *)ck->writer;
    if (w == NULL) {
        return;
    }
    ck->writer = NULL;
    for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
        writer_job *j = &w->jobs[i];
        pending_settle(j, Py_None);     /* not known: still being written */
        if (j->page != NULL) {
            munmap(j->page, PAGE_SIZE_BYTES);
        }
    }
    Py_XDECREF(w->PendingInfo_Type);
    Py_XDECREF(w->stringio);
    Py_XDECREF(w->main_frame);
    PyMem_RawFree(w);
}

/* ------------------------------------------------------------------ */
/* memory: a copy-on-write child must never get the script OOM-killed  */

static long long
meminfo_available(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) {
            break;
        }
    }
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* Worst case, each child in flight ends up with its own copy of every
 * private page the script has (the script rewrites all its memory while
 * they run): a new child is allowed only if that still fits in what the
 * kernel says is available. */
static int
memory_allows(writer_state *w)
{
    long long avail = meminfo_available();
    long long anon = chkpt_cost_private_memory();
    if (avail < 0 || anon < 0) {
        return 1;
    }
    return anon * (long long)(in_flight(w) + 1) <= avail;
}

/* ------------------------------------------------------------------ */
/* the child                                                            */

/* The writer state of this process if it is a writer child. */
static writer_state *
child_state(CheckpointObject *ck)
{
    writer_state *w = (writer_state *)ck->writer;
    return w != NULL && w->in_child ? w : NULL;
}

static writer_job *
child_job(writer_state *w)
{
    for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
        if (w->jobs[i].pid == -1) {
            return &w->jobs[i];
        }
    }
    return NULL;
}

static void arm_kill(writer_state *w, double until);

/* The capture's time limit in a child (chkpt_capture_env): SIGALRM
 * raises TimeoutError in the Python code it runs, SIGKILL a little later
 * ends the child if that code cannot be interrupted. */
static void
child_time_limit(void *arg, double seconds)
{
    writer_state *w = child_state((CheckpointObject *)arg);
    if (w == NULL) {
        return;
    }
    writer_job *j = child_job(w);
    if (seconds <= 0) {
        w->in_time_limit = 0;
        if (j != NULL) {
            j->page->cur_len = 0;
        }
        chkpt_ktimer_arm(&w->alarm_timer, 0);
        arm_kill(w, 0);
        return;
    }
    if (j != NULL) {
        j->page->limit_ms = (uint32_t)(seconds * 1000);
    }
    w->in_time_limit = 1;
    chkpt_ktimer_arm(&w->alarm_timer, seconds);
    /* code that cannot be interrupted (blocked in C on a lock held by a
     * thread that does not exist here) is ended a little later */
    arm_kill(w, chkpt_monotonic() + seconds + CHILD_KILL_GRACE);
}

/* SIGALRM's Python-level handler in a child: the time limit of the Python code
 * the capture runs is used up. Raised only while a time limit runs, so that it
 * reaches that code (a __reduce__) and the capture skips that object. */
static PyObject *
child_alarm(PyObject *self, PyObject *args)
{
    CheckpointObject *ck = (CheckpointObject *)self;
    writer_state *w = child_state(ck);
    if (w != NULL && w->in_time_limit) {
        PyErr_SetString(PyExc_TimeoutError,
                        "chkpt gave up pickling this object: its time budget is used up");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef child_alarm_def = {
    "_chkpt_budget", (PyCFunction)child_alarm, METH_VARARGS, NULL
};

/* SIGKILL at `until` (monotonic), or at the hard deadline if sooner. */
static void
arm_kill(writer_state *w, double until)
{
    if (until <= 0 || until > w->hard_deadline) {
        until = w->hard_deadline;
    }
    double s = until - chkpt_monotonic();
    chkpt_ktimer_arm(&w->kill_timer, s < 0.001 ? 0.001 : s);
}

/* The child's life ends at hard_deadline whatever it is doing; its time
 * limits are a SIGALRM timer (kernel timers: a child has no threads). */
static void
arm_hard_deadline(writer_state *w)
{
    (void)chkpt_ktimer_create(&w->kill_timer, SIGKILL);
    (void)chkpt_ktimer_create(&w->alarm_timer, SIGALRM);
    arm_kill(w, 0);
}

/* In a child, notes the variable being pickled (chkpt_capture_env), so
 * that the parent can leave it out of later snapshots if the child dies
 * on it. */
static void
child_pickling(void *arg, PyObject *key, PyObject *label)
{
    CheckpointObject *ck = (CheckpointObject *)arg;
    writer_state *w = child_state(ck);
    writer_job *j = w ? child_job(w) : NULL;
    if (j == NULL) {
        return;
    }
    PyObject *t = PyTuple_Pack(2, key, label);
    PyObject *b = t ? json_write(ck, t) : NULL;
    Py_XDECREF(t);
    if (b != NULL && PyBytes_GET_SIZE(b) <= CUR_MAX) {
        memcpy(j->page->cur, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
        j->page->cur_len = (uint32_t)PyBytes_GET_SIZE(b);
    }
    else {
        j->page->cur_len = 0;
    }
    Py_XDECREF(b);
    PyErr_Clear();
}

/* The script's Python-level signal handlers must not run in the child (a
 * signal tripped before the clone would run them there): every handler
 * becomes SIG_IGN, and no wakeup fd is written. Main thread only; from
 * another thread Python runs no handler anyway. */
static void
child_signals(CheckpointObject *ck, writer_state *w)
{
    PyObject *signal = PyImport_ImportModule("signal");   /* imported already */
    PyObject *valid = signal ? PyObject_CallMethod(signal, "valid_signals", NULL) : NULL;
    PyObject *ign = signal ? PyObject_GetAttrString(signal, "SIG_IGN") : NULL;
    PyObject *dfl = signal ? PyObject_GetAttrString(signal, "SIG_DFL") : NULL;
    PyObject *it = valid ? PyObject_GetIter(valid) : NULL;
    PyObject *r = signal ? PyObject_CallMethod(signal, "set_wakeup_fd", "i", -1) : NULL;
    Py_XDECREF(r);
    PyErr_Clear();
    PyObject *sig;
    while (it != NULL && ign != NULL && dfl != NULL && (sig = PyIter_Next(it)) != NULL) {
        PyObject *h = PyObject_CallMethod(signal, "getsignal", "O", sig);
        if (h != NULL && h != Py_None && h != ign && h != dfl
            && PyObject_RichCompareBool(h, ign, Py_EQ) == 0
            && PyObject_RichCompareBool(h, dfl, Py_EQ) == 0) {
            r = PyObject_CallMethod(signal, "signal", "OO", sig, ign);
            Py_XDECREF(r);
        }
        Py_XDECREF(h);
        Py_DECREF(sig);
        PyErr_Clear();
    }
    Py_XDECREF(it);
    Py_XDECREF(valid);
    Py_XDECREF(ign);
    Py_XDECREF(dfl);
    PyErr_Clear();
    /* an object's time limit: SIGALRM raises TimeoutError in the Python code
     * being run (main thread only: elsewhere SIGALRM ends the child) */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigaction(SIGALRM, &sa, NULL);
    PyObject *fn = signal ? PyCFunction_New(&child_alarm_def, (PyObject *)ck) : NULL;
    r = fn ? PyObject_CallMethod(signal, "signal", "iO", SIGALRM, fn) : NULL;
    w->soft_limit = r != NULL;
    Py_XDECREF(r);
    Py_XDECREF(fn);
    Py_XDECREF(signal);
    PyErr_Clear();
    /* Signals are for the script (a ^C, a SIGTERM to its process group,
     * one a __reduce__ sends to "itself"): the child ignores them, and
     * dies with the script (PR_SET_PDEATHSIG). Faults keep their default,
     * and SIGALRM is the time limit's. */
    sa.sa_handler = SIG_IGN;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP || sig == SIGALRM || sig == SIGCHLD
            || sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL
            || sig == SIGABRT || sig == SIGTRAP || sig == SIGSYS || sig == SIGCONT) {
            continue;
        }
        sigaction(sig, &sa, NULL);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

/* sys.stdout and sys.stderr to buffers: the capture's own lines are
 * relayed to the parent, the rest is dropped. */
static void
child_stdio(writer_state *w, PyObject **out, PyObject **err)
{
    *out = PyObject_CallNoArgs(w->stringio);
    *err = PyObject_CallNoArgs(w->stringio);
    if (*out == NULL || *err == NULL || PySys_SetObject("stdout", *out) < 0
        || PySys_SetObject("stderr", *err) < 0) {
        PyErr_Clear();
    }
}

/* What the capture changed in the warn-once state: names added to
 * ck->warned, and reports added to ck->deferred as (name, msg, count). */
static PyObject *
deferred_delta(PyObject *before, PyObject *after)
{
    PyObject *out = PyList_New(0);
    if (out == NULL || after == NULL || !PyDict_Check(after)) {
        return out;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *entry;
    while (PyDict_Next(after, &pos, &name, &entry)) {
        if (!PyList_Check(entry) || PyList_GET_SIZE(entry) != 2) {
            continue;
        }
        long n = PyLong_AsLong(PyList_GET_ITEM(entry, 1));
        PyObject *old = before ? PyDict_GetItemWithError(before, name) : NULL;
        if (old != NULL && PyList_Check(old) && PyList_GET_SIZE(old) == 2) {
            n -= PyLong_AsLong(PyList_GET_ITEM(old, 1));
        }
        PyErr_Clear();
        if (n <= 0) {
            continue;
        }
        PyObject *t = Py_BuildValue("(OOl)", name, PyList_GET_ITEM(entry, 0), n);
        if (t == NULL || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}

/* The deferred reports as they were: name -> [msg, count] copied. */
static PyObject *
deferred_copy(PyObject *d)
{
    PyObject *out = PyDict_New();
    if (out == NULL || d == NULL || !PyDict_Check(d)) {
        return out;
    }
    Py_ssize_t pos = 0;
    PyObject *name, *entry;
    while (PyDict_Next(d, &pos, &name, &entry)) {
        PyObject *c = PyList_Check(entry) ? PyList_GetSlice(entry, 0, 2) : NULL;
        if (c == NULL || PyDict_SetItem(out, name, c) < 0) {
            Py_XDECREF(c);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(c);
    }
    return out;
}

/* The keys of set that were not in before, as a list. */
static PyObject *
set_added(PyObject *set, PyObject *before)
{
    PyObject *d = set && before ? PyNumber_Subtract(set, before) : NULL;
    PyObject *l = d ? PySequence_List(d) : NULL;
    Py_XDECREF(d);
    return l;
}

/* The `chkpt:` lines the capture wrote to the child's sys.stderr. */
static PyObject *
chkpt_lines(PyObject *err)
{
    PyObject *text = err ? PyObject_CallMethod(err, "getvalue", NULL) : NULL;
    PyObject *all = text ? PyUnicode_Splitlines(text, 0) : NULL;
    Py_XDECREF(text);
    PyObject *out = all ? PyList_New(0) : NULL;
    PyObject *prefix = out ? PyUnicode_FromString("chkpt: ") : NULL;
    for (Py_ssize_t i = 0; prefix != NULL && i < PyList_GET_SIZE(all); i++) {
        PyObject *l = PyList_GET_ITEM(all, i);
        if (PyUnicode_Tailmatch(l, prefix, 0, PY_SSIZE_T_MAX, -1) == 1
            && PyList_Append(out, l) < 0) {
            PyErr_Clear();
        }
    }
    Py_XDECREF(prefix);
    Py_XDECREF(all);
    PyErr_Clear();
    return out;
}

/* Writes the report; a report too big for the page loses its lines first. */
static void
child_report(CheckpointObject *ck, writer_job *j, PyObject *rep)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        PyObject *b = json_write(ck, rep);
        if (b != NULL && (size_t)PyBytes_GET_SIZE(b) <= REPORT_MAX) {
            memcpy(j->page->report, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
            j->page->len = (uint32_t)PyBytes_GET_SIZE(b);
            j->page->done = 1;
            Py_DECREF(b);
            return;
        }
        Py_XDECREF(b);
        PyErr_Clear();
        PyObject *none = PyList_New(0);
        if (none == NULL || PyDict_SetItemString(rep, "lines", none) < 0) {
            PyErr_Clear();
        }
        Py_XDECREF(none);
    }
    j->page->len = 0;
    j->page->done = 1;
}

/* Bytes this process wrote (wchar of /proc/self/io), 0 unknown. */
static uint64_t
written_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "re");
    if (f == NULL) {
        return 0;
    }
    char line[128];
    unsigned long long n = 0;
    while (fgets(line, sizeof(line), f) != NULL
           && sscanf(line, "wchar: %llu", &n) != 1) {
    }
    fclose(f);
    return (uint64_t)n;
}

/* Seconds this process waited for a CPU (the second field of
 * /proc/self/schedstat, in ns), 0 unknown. */
static double
ready_seconds(void)
{
    FILE *f = fopen("/proc/self/schedstat", "re");
    if (f == NULL) {
        return 0;
    }
    unsigned long long run, wait;
    int n = fscanf(f, "%llu %llu", &run, &wait);
    fclose(f);
    return n == 2 ? (double)wait * 1e-9 : 0;
}

#if PY_VERSION_HEX >= 0x030D0000
/* The import lock (method: "acquire_lock" or "release_lock"), without
 * running Python code: 0, or -1 with an exception. */
static int
import_lock(const char *method)
{
    PyObject *name = PyUnicode_FromString("_imp");
    PyObject *imp = name ? PyImport_GetModule(name) : NULL;
    PyObject *r = imp ? PyObject_CallMethod(imp, method, NULL) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(imp);
    Py_XDECREF(name);
    return r != NULL ? 0 : -1;
}
#endif

/* The child's whole life; never returns. */
static void
child_main(CheckpointObject *ck, writer_state *w, writer_job *j,
           PyFrameObject *frame, chkpt_kind kind, PyObject *name,
           chkpt_writer_fn fn, void *arg)
{
    double born = chkpt_monotonic();
    w->in_child = 1;
    writer_child_process = 1;
    j->pid = -1;                /* marks the child's own job */
    w->hard_deadline = chkpt_monotonic() + w->child_cap;
    /* first, with nothing but system calls: whatever happens next (a lock
     * another thread held at the clone), the child ends by its deadline,
     * CHILD_SETUP_SECONDS for what comes before the capture */
    arm_hard_deadline(w);
    arm_kill(w, chkpt_monotonic() + CHILD_SETUP_SECONDS);
    /* the script killed (kill -9): its snapshot in flight goes with it */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != w->owner) {
        _exit(4);
    }
    /* the kernel's OOM killer takes this process before the script */
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = write(fd, "1000", 4);
        (void)n;
        close(fd);
    }
    /* fds 0-2 to /dev/null: what anything writes at C level goes nowhere */
    fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2) {
            close(fd);
        }
    }
    /* The GIL, the import lock and the thread states as after a fork: the
     * GIL's lock and condition variables may have been held or waited on
     * by other threads of the script at the clone, and a GIL drop request
     * would make the first release wait for a thread that is not here.
     * This also drops signals tripped before the clone and runs the
     * after-fork-in-child callbacks, here only (never in the script's
     * process), with stdio already going nowhere. */
    /* 3.13's releases the import lock, which PyOS_BeforeFork takes: the
     * parent took it for this child (writer_capture). Not with
     * PyOS_BeforeFork: it first runs the script's before-fork callbacks
     * (logging has one), Python code that, with a GIL drop request
     * pending from the clone (the timer thread waiting for the GIL),
     * drops the GIL and waits forever for a thread that is not here. The
     * runtime lock it also takes is reinitialised by the after-fork. */
    PyOS_AfterFork_Child();
    PyErr_Clear();
    arm_kill(w, 0);             /* set up: the deadline of the whole child */
    j->page->set_up = 1;
    PyGC_Disable();
    child_signals(ck, w);
    PyObject *out = NULL, *err = NULL;
    child_stdio(w, &out, &err);

    PyObject *warned_before = PySet_New(ck->warned);
    PyObject *once_before = PySet_New(ck->warned_once);
    PyObject *retry_before = PySet_New(ck->no_retry);
    PyObject *deferred_before = deferred_copy(ck->deferred);
    int store_failed_before = ck->store_failed;
    chkpt_capture_env env = {
        .time_limit = child_time_limit, .pickling = child_pickling, .arg = ck,
        .script_pid = getppid(), .no_script = 1,
    };
    PyObject *r = fn != NULL ? fn(ck, &env, arg)
                             : chkpt_capture_frame(ck, &env, frame, kind, name);
    if (r == NULL) {
        /* what would have interrupted the script (KeyboardInterrupt or
         * SystemExit raised by a __reduce__) stays here */
        chkpt_warn_exc("a snapshot was given up");
    }
    PyErr_Clear();
    PyObject *path = NULL;
    if (r != NULL && r != Py_None) {
        path = PyObject_GetAttrString(r, "path");
    }
    Py_XDECREF(r);
    PyErr_Clear();
    if (path != NULL && path != Py_None && kind == CHKPT_KIND_AUTO) {
        chkpt_keep_auto_prune(ck, chkpt_keep_auto_value(ck));
        PyErr_Clear();
    }
    PyObject *added_list = set_added(ck->warned, warned_before);
    PyObject *once_list = set_added(ck->warned_once, once_before);
    PyObject *retry_list = set_added(ck->no_retry, retry_before);
    PyObject *ddelta = deferred_delta(deferred_before, ck->deferred);
    PyObject *lines = chkpt_lines(err);
    PyErr_Clear();
    PyObject *rep = Py_BuildValue(
        "{s:O,s:O,s:O,s:O,s:O,s:O,s:i}", "path", path ? path : Py_None,
        "lines", lines ? lines : Py_None,
        "warned", added_list ? added_list : Py_None,
        "warned_once", once_list ? once_list : Py_None,
        "no_retry", retry_list ? retry_list : Py_None,
        "deferred", ddelta ? ddelta : Py_None,
        "store_failed", ck->store_failed && !store_failed_before);
    j->page->wbytes = written_bytes();
    j->page->ready = ready_seconds();
    j->page->wall = chkpt_monotonic() - born;
    if (rep != NULL) {
        child_report(ck, j, rep);
    }
    _exit(rep != NULL ? 0 : 3);
}

/* ------------------------------------------------------------------ */
/* the parent: starting a child                                          */

/* name, kind, time, script, line: what the info says before it is read */
static PyObject *
early_meta(CheckpointObject *ck, PyFrameObject *frame, chkpt_kind kind,
           PyObject *name)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long line = frame ? PyFrame_GetLineNumber(frame) : -1;
    return Py_BuildValue("{s:O,s:s,s:d,s:O,s:N,s:O,s:[]}", "name", name ? name : Py_None,
                         "kind", chkpt_kind_name(kind), "time", (double)ts.tv_sec + ts.tv_nsec * 1e-9,
                         "script", ck->script_path,
                         "line", line >= 0 ? PyLong_FromLong(line) : Py_NewRef(Py_None),
                         "size", Py_None, "variables");
}

static writer_job *
free_job(writer_state *w, int boundary)
{
    if (!boundary && in_flight(w) >= CHKPT_WRITER_MAX_CHILDREN) {
        return NULL;
    }
    for (int i = 0; i < CHKPT_WRITER_SLOTS; i++) {
        if (w->jobs[i].pid == 0) {
            return &w->jobs[i];
        }
    }
    return NULL;
}

/* The outermost frame under FRAME that runs the script's __main__ module
 * code (below it: runpy's, for -m), kept in w->main_frame. */
static void
note_main_frame(CheckpointObject *ck, writer_state *w, PyFrameObject *frame,
                int walk)
{
    if (frame == NULL) {
        frame = PyEval_GetFrame();      /* the line's (borrowed) */
    }
    PyFrameObject *cur = (PyFrameObject *)Py_XNewRef(frame);
    while (cur != NULL) {
        PyCodeObject *code = PyFrame_GetCode(cur);
        int module = (code->co_flags & CO_OPTIMIZED) == 0
                     && chkpt_is_script_code(ck, code);
        Py_DECREF(code);
        if (module) {
            PyObject *g = PyFrame_GetGlobals(cur);
            PyObject *n = g ? PyDict_GetItemString(g, "__name__") : NULL;
            if (n != NULL && PyUnicode_Check(n)
                && PyUnicode_CompareWithASCIIString(n, "__main__") == 0) {
                Py_XSETREF(w->main_frame, (PyFrameObject *)Py_NewRef(cur));
                w->main_frame_stale = 0;
            }
            Py_XDECREF(g);
        }
        PyFrameObject *back = walk ? PyFrame_GetBack(cur) : NULL;
        Py_DECREF(cur);
        cur = back;
    }
}

/* Does a snapshot of FRAME (NULL: the innermost of the script's code) hold
 * the variables of the script's module, those -f 0's coalesced request is
 * for? Yes when its globals are main_frame's (or none is known yet). */
static int
holds_main(CheckpointObject *ck, writer_state *w, PyFrameObject *frame)
{
    if (w->main_frame == NULL) {
        return 1;
    }
    PyFrameObject *cur = (PyFrameObject *)Py_XNewRef(
        frame != NULL ? frame : PyEval_GetFrame());
    while (frame == NULL && cur != NULL) {
        PyCodeObject *code = PyFrame_GetCode(cur);
        int mine = chkpt_is_script_code(ck, code);
        Py_DECREF(code);
        if (mine) {
            break;
        }
        PyFrameObject *back = PyFrame_GetBack(cur);
        Py_DECREF(cur);
        cur = back;
    }
    int holds = 1;
    if (cur != NULL) {
        PyObject *g = PyFrame_GetGlobals(cur);
        PyObject *mg = PyFrame_GetGlobals(w->main_frame);
        holds = g == NULL || g == mg;
        Py_XDECREF(g);
        Py_XDECREF(mg);
        Py_DECREF(cur);
    }
    return holds;
}

void
chkpt_writer_unit_ended(CheckpointObject *ck, int covered)
{
    writer_state *w = (writer_state *)ck->writer;
    if (w != NULL && !w->in_child) {
        w->main_frame_stale = 1;
        w->line_covered = covered && chkpt_freq_every_line(ck->frequency_ms);
    }
}

/* Say once that snapshots are taken in this process instead. */
static void
warn_once(int *flag, const char *msg)
{
    if (!*flag) {
        *flag = 1;
        chkpt_warn("%s", msg);
    }
}

/* A child holding frame's variables just started: it covers -f 0's
 * coalesced request before it when it holds the script's module variables
 * (a sibling module's function does not). */
static void
note_coverage(CheckpointObject *ck, writer_state *w, PyFrameObject *frame)
{
    if (holds_main(ck, w, frame)) {
        w->coalesced_at = 0;
    }
    else {
        w->offmain_at = ck->last_snapshot;
    }
}

/* A snapshot of frame, or (fn not NULL) the one fn takes, in a child. */
static PyObject *
writer_capture(CheckpointObject *ck, PyFrameObject *frame, chkpt_kind kind,
               PyObject *name, chkpt_writer_fn fn, void *arg, int *handled)
{
    *handled = 0;
    writer_state *w = get_state(ck);
    if (w == NULL) {
        PyErr_Clear();
        return NULL;            /* in this process */
    }
    if (w->in_child) {
        return NULL;
    }
    adopt_after_fork(w);
    /* a manual snapshot waits for a free slot, and so does a signal's:
     * SIGTERM ends the process after it, which would take the child in
     * flight (a boundary snapshot, say) with it, and this one too */
    int signal_kind = kind == CHKPT_KIND_SIGNAL;
    int manual = signal_kind || kind == CHKPT_KIND_MANUAL;
    int every_line = fn == NULL && kind == CHKPT_KIND_AUTO
                     && chkpt_freq_every_line(ck->frequency_ms);
    chkpt_writer_poll(ck);
    /* opened here, once, and inherited: a child opening it for itself
     * could meet a store the script is removing, and fail for the run */
    int open = chkpt_capture_open_store(ck);
    if (open <= 0) {
        *handled = open == 0;
        PyErr_Clear();
        if (open == 0) {
            Py_RETURN_NONE;     /* said once; no snapshots */
        }
        return NULL;
    }
    writer_job *j = free_job(w, fn != NULL);
    if (every_line && w->line_covered) {
        w->line_covered = 0;
        *handled = 1;
        Py_RETURN_NONE;
    }
    if (every_line && (w->main_frame == NULL || w->main_frame_stale)) {
        /* the whole stack as a child starts, the line's own frame only
         * otherwise (at most until it is found) */
        note_main_frame(ck, w, frame, j != NULL);
    }
    if (j == NULL || !memory_allows(w)) {
        if (!manual) {
            /* due while the others are written: this one is skipped (with
             * -f 0, coalesced: see take_coalesced) */
            w->skipped++;
            if (every_line && w->coalesced_at == 0) {
                w->coalesced_at = chkpt_monotonic();
            }
            *handled = 1;
            Py_RETURN_NONE;
        }
        /* a manual snapshot waits for the children in flight (a boundary
         * snapshot's too: then its slot is free, and memory is back) */
        if (wait_jobs(ck, w, NULL, 0, 0, 1) < 0) {
            *handled = 1;
            return NULL;
        }
        j = free_job(w, fn != NULL);
        if (j == NULL) {
            return NULL;
        }
        if (!memory_allows(w)) {
            if (!w->warned_memory) {
                w->warned_memory = 1;
                chkpt_warn("not enough memory for a copy-on-write snapshot "
                           "process: snapshots are taken in the script's process");
            }
            return NULL;
        }
    }
    if (j->page == NULL) {
        void *m = mmap(NULL, PAGE_SIZE_BYTES, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            warn_once(&w->warned_clone, "cannot map memory for a snapshot process: "
                      "snapshots are taken in the script's process");
            return NULL;
        }
        j->page = (child_page *)m;
    }
    /* fn's caller reads nothing back: no info, nothing the script's
     * process keeps while the child runs */
    PyObject *early = fn == NULL ? early_meta(ck, frame, kind, name) : NULL;
    PyObject *info = early ? pending_new(w, ck, early)
                           : fn != NULL ? Py_NewRef(Py_None) : NULL;
    Py_XDECREF(early);
    if (info == NULL) {
        PyErr_Clear();
        return NULL;
    }
    j->page->done = 0;
    j->page->set_up = 0;
    j->page->len = 0;
    j->page->cur_len = 0;
    j->page->wall = 0;
    j->page->ready = 0;
    j->page->wbytes = 0;
    j->rss = chkpt_cost_private_memory();
    double clone_at = chkpt_monotonic();
#if PY_VERSION_HEX >= 0x030D0000
    /* the child's after-fork releases the import lock: it must be this
     * thread's there. Taken here, as os.fork does: in the child, a thread
     * of the script importing at the clone would hold it for ever. */
    if (import_lock("acquire_lock") < 0) {
        PyErr_Clear();
        Py_DECREF(info);
        return NULL;
    }
#endif
    /* exit signal 0 and no CLONE_* flag: a copy of this process that only
     * __WCLONE waits see */
    long pid = syscall(SYS_clone, 0L, NULL, NULL, NULL, NULL);
    if (pid == 0) {
        child_main(ck, w, j, frame, kind, name, fn, arg);
        _exit(3);
    }
#if PY_VERSION_HEX >= 0x030D0000
    if (import_lock("release_lock") < 0) {
        PyErr_Clear();
    }
#endif
    if (pid < 0) {
        Py_DECREF(info);
        warn_once(&w->warned_clone, "cannot start a snapshot process: snapshots "
                  "are taken in the script's process");
        return NULL;
    }
    j->pid = (pid_t)pid;
    j->started = chkpt_monotonic();
    j->clone_s = j->started - clone_at;
    chkpt_capture_taken(ck);
    if (fn == NULL) {
        note_coverage(ck, w, frame);
        j->info = Py_NewRef(info);
    }
    *handled = 1;
    if (signal_kind) {
        /* the process ends right after a SIGTERM snapshot (signals.c),
         * which would take the child with it: written before returning */
        wait_jobs(ck, w, info, 0, 0, 0);
    }
    return info;
}

/* What a capture in the script's process is told: the time limit that
 * hooks.c's timer thread keeps (chkpt_snapshot_set_time_limit); in a
 * child, the child's own. */
static void
process_env(CheckpointObject *ck, chkpt_capture_env *env)
{
    if (child_state(ck) != NULL) {
        *env = (chkpt_capture_env){
            .time_limit = child_time_limit, .pickling = child_pickling,
            .arg = ck, .script_pid = getppid(), .no_script = 1,
        };
        return;
    }
    *env = (chkpt_capture_env){
        .time_limit = ck->time_limit, .arg = ck->time_limit_arg,
        .script_pid = getpid(),
    };
}

void
chkpt_snapshot_set_time_limit(CheckpointObject *ck,
                              void (*fn)(void *arg, double seconds), void *arg)
{
    ck->time_limit = fn;
    ck->time_limit_arg = arg;
}

PyObject *
chkpt_snapshot_take(CheckpointObject *ck, const chkpt_snapshot_request *rq)
{
    chkpt_capture_env here;
    process_env(ck, &here);
    if (rq->entries != NULL) {
        return chkpt_capture_values(ck, &here, rq->kind, rq->entries,
                                    rq->extra_meta);
    }
    int handled = 0;
    PyObject *r;
    if (rq->fn != NULL) {
        r = writer_capture(ck, NULL, rq->kind, NULL, rq->fn, rq->arg, &handled);
        return handled ? r : rq->fn(ck, &here, rq->arg);   /* no child: here */
    }
    if (ck->in_snapshot || ck->store_failed) {
        Py_RETURN_NONE;
    }
    /* in a child process, unless it cannot be had */
    r = writer_capture(ck, rq->frame, rq->kind, rq->name, NULL, NULL, &handled);
    if (handled) {
        return r;
    }
    return chkpt_capture_frame(ck, &here, rq->frame, rq->kind, rq->name);
}

int
chkpt_writer_setup(CheckpointObject *ck)
{
    return get_state(ck) != NULL ? 0 : -1;
}

int
chkpt_writer_busy(CheckpointObject *ck)
{
    writer_state *w = (writer_state *)ck->writer;
    if (w == NULL || w->in_child) {
        return 0;
    }
    chkpt_writer_poll(ck);
    return free_job(w, 1) == NULL;
}
