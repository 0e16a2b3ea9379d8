/* signals.c: snapshots on SIGTERM, SIGUSR1 and Ctrl-C.
 *
 * SIGTERM and SIGUSR1: where their disposition is python's default
 * (SIG_DFL) when the script starts, chkpt installs a handler through
 * python's own signal machinery (signal.signal): python's C handler only
 * trips a flag, and python calls ours on the main thread at its next safe
 * point (also from inside time.sleep and other interrupted calls). It takes
 * a 'signal' snapshot of the innermost frame running the script's code (as
 * an automatic snapshot), then for SIGTERM ends the process by SIGTERM
 * exactly as the default disposition would have (no flush, no atexit);
 * after SIGUSR1 the script goes on. The handler object compares and hashes
 * equal to SIG_DFL, so that signal.getsignal() and signal.signal() give the
 * script Handlers.SIG_DFL as under plain python; a handler the script
 * installs replaces it as it would replace SIG_DFL.
 *
 * SIGINT keeps python's own default_int_handler: its KeyboardInterrupt,
 * when uncaught, gets a 'signal' snapshot from crash.c (the frames of the
 * traceback, of that moment) before python prints it and dies by SIGINT.
 *
 * One signal snapshot at a time: a SIGTERM that arrives during one (its
 * handler re-entered from Python code the capture runs) is remembered and
 * honoured once it is written; anything else re-entering is ignored (a
 * Ctrl-C raises its KeyboardInterrupt through the capture, which stops and
 * writes nothing). A watchdog thread ends the process as it would have
 * ended once the deadline (--signal-deadline) passes. The store publishes
 * a snapshot atomically: a SIGKILL at any point leaves the store
 * consistent (docs/FORMAT.md).
 */
#include "chkpt.h"
#include "child.h"
#include "timer.h"
#include "run.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    PyTypeObject *handler_type;
    PyObject *handler;              /* the HandlerObject installed */
    int installed_term, installed_usr1;
    int busy;                       /* a signal snapshot in flight */
    int term_pending;               /* SIGTERM arrived during it */
    int usr1_pending;               /* SIGUSR1 arrived during it */
    /* the deadline watchdog (a timer thread of its own: it must act while
     * the main thread holds the GIL, stuck) */
    chkpt_timer watchdog;
    int signum;                     /* under its lock */
    double until;                   /* under its lock: monotonic */
    pid_t pid;                      /* the process that installed them */
} signals_state;

/* Ends the process by signum with its default disposition, as python
 * would have ended without a handler. */
static void
die_by(int signum)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(signum, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signum);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    kill(getpid(), signum);
    /* a default disposition of SIGTERM/SIGINT ends the process at once */
    _exit(128 + signum);
}

/* Past the deadline: one line, then the end the signal would have been.
 * The watchdog thread and the arrival timer may both get here at about
 * the same moment; the line is written once (a lock-free flag: this runs
 * in a signal handler too). */
static void
give_up_and_die(int signum)
{
    static atomic_flag said = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&said)) {
        static const char msg[] = "chkpt: the signal snapshot did not finish "
                                  "within --signal-deadline; not written\n";
        ssize_t w = write(2, msg, sizeof(msg) - 1);
        (void)w;
    }
    die_by(signum);
}

/* ---- the OS-level layer under python's handler ----
 *
 * Python's own C handler only trips a flag; the snapshot (and the death
 * after it) waits for the main thread's next bytecode. Two things cannot
 * wait for that: a forked child of the script (multiprocessing's workers)
 * must die at once as the default disposition it inherited would make it
 * (a SIGTERM that lands just before the worker blocks in a semaphore was
 * otherwise never acted on, and Pool.terminate() waited for it forever),
 * and the --signal-deadline must count from the signal's arrival, not from
 * the moment a long C call returns to python. So under python's handler
 * chkpt installs one of its own, which does those two things and then
 * calls python's. These statics exist because a signal handler has no
 * other way to reach its state; they are written only while the handler
 * is not installed (install/uninstall, on the main thread). */
static struct sigaction python_action[NSIG];  /* python's C handler */
static volatile sig_atomic_t layered[NSIG];   /* ours is under python's */
static pid_t layer_pid;                       /* the script's process */
static chkpt_ktimer deadline_timer;           /* SIGTERM's arrival deadline */
static long long layer_deadline_ms;

static void
layer_handler(int signum, siginfo_t *info, void *uctx)
{
    int saved_errno = errno;
    if (getpid() != layer_pid) {
        die_by(signum);
    }
    if (info != NULL && info->si_code == SI_TIMER) {
        /* the deadline armed when the SIGTERM arrived has passed */
        give_up_and_die(signum);
    }
    /* armed once: a second SIGTERM does not push the deadline back */
    if (signum == SIGTERM && deadline_timer.ok
        && !chkpt_ktimer_armed(&deadline_timer)) {
        chkpt_ktimer_arm(&deadline_timer, (double)layer_deadline_ms / 1000.0);
    }
    struct sigaction *py = &python_action[signum];
    if (py->sa_flags & SA_SIGINFO) {
        py->sa_sigaction(signum, info, uctx);
    }
    else if (py->sa_handler != SIG_DFL && py->sa_handler != SIG_IGN) {
        py->sa_handler(signum);
    }
    errno = saved_errno;
}

/* Puts chkpt's handler under python's for signum (python's must be the
 * one installed now); 0, or -1 when it could not (python's stays). */
static int
layer_install(int signum, long long deadline_ms)
{
    if (sigaction(signum, NULL, &python_action[signum]) != 0) {
        return -1;
    }
    layer_pid = getpid();
    layer_deadline_ms = deadline_ms;
    if (signum == SIGTERM && !deadline_timer.ok) {
        (void)chkpt_ktimer_create(&deadline_timer, SIGTERM);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = layer_handler;
    sa.sa_mask = python_action[signum].sa_mask;
    sa.sa_flags = (python_action[signum].sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
    if (sigaction(signum, &sa, NULL) != 0) {
        return -1;
    }
    layered[signum] = 1;
    return 0;
}

/* Takes chkpt's handler out from under python's, if it is still there
 * (a handler the script installed since replaced it already). */
static void
layer_uninstall(int signum)
{
    if (!layered[signum]) {
        return;
    }
    struct sigaction now;
    if (sigaction(signum, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO)
        && now.sa_sigaction == layer_handler) {
        sigaction(signum, &python_action[signum], NULL);
    }
    if (signum == SIGTERM) {
        chkpt_ktimer_arm(&deadline_timer, 0);
    }
    layered[signum] = 0;
}

/* The watchdog (chkpt_timer): past the deadline, the process ends as the
 * signal would have ended it. */
static double
watchdog_next(void *arg, double now)
{
    return ((signals_state *)arg)->until;
}

static void
watchdog_fire(void *arg, double now)
{
    give_up_and_die(((signals_state *)arg)->signum);
}

/* The watchdog's thread blocks every signal (chkpt_timer): python's
 * handlers must keep running on the main thread, woken by the signals
 * sent to the process. */
static void
watchdog_start(signals_state *s, int signum, long long ms)
{
    chkpt_timer_lock(&s->watchdog);
    s->signum = signum;
    s->until = chkpt_monotonic() + (double)ms / 1000.0;
    chkpt_timer_unlock(&s->watchdog);
    (void)chkpt_timer_start(&s->watchdog);
}

/* The snapshot finished: the watchdog stands down. */
static void
watchdog_stop(signals_state *s)
{
    chkpt_timer_stop(&s->watchdog, 0);
}

/* ---- the handler object ---- */

/* One snapshot for signum, SIGTERM's under the --signal-deadline
 * watchdog: as chkpt_snapshot_take returns. */
static PyObject *
take_signal_snapshot(CheckpointObject *ck, signals_state *s, int signum)
{
    if (signum == SIGTERM) {
        watchdog_start(s, signum, ck->signal_deadline_ms);
    }
    PyObject *name = PyUnicode_FromString(signum == SIGTERM ? "SIGTERM" : "SIGUSR1");
    chkpt_snapshot_request rq = {.kind = CHKPT_KIND_SIGNAL, .name = name};
    PyObject *r = name ? chkpt_snapshot_take(ck, &rq) : NULL;
    Py_XDECREF(name);
    watchdog_stop(s);
    return r;
}

static PyObject *
handler_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    int signum;
    PyObject *frame;
    if (!PyArg_ParseTuple(args, "iO:chkpt signal handler", &signum, &frame)) {
        return NULL;
    }
    PyObject *module = PyType_GetModule(Py_TYPE(self));
    chkpt_state *st = module ? chkpt_get_state(module) : NULL;
    if (st == NULL || st->singleton == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    CheckpointObject *ck = (CheckpointObject *)st->singleton;
    signals_state *s = (signals_state *)ck->signals;
    if (s == NULL) {
        Py_RETURN_NONE;
    }
    if (getpid() != s->pid) {
        /* a forked child (multiprocessing's workers): the default
         * disposition it inherited from the script, no snapshot */
        die_by(signum);
    }
    if (s->busy) {
        /* re-entered from Python code the capture runs (or the wait for
         * its child): remembered, as the kernel remembers a blocked one */
        if (signum == SIGTERM) {
            s->term_pending = 1;
        }
        else {
            s->usr1_pending = 1;
        }
        Py_RETURN_NONE;
    }
    s->busy = 1;
    PyObject *r;
    for (;;) {
        s->usr1_pending = 0;
        r = take_signal_snapshot(ck, s, signum);
        if (signum == SIGTERM || s->term_pending || !s->usr1_pending
            || r == NULL) {
            break;
        }
        Py_DECREF(r);           /* a SIGUSR1 came meanwhile: one more */
    }
    s->busy = 0;
    if (signum == SIGTERM || s->term_pending) {
        /* whatever the capture gave: python would be gone already */
        PyErr_Clear();
        die_by(SIGTERM);
    }
    if (r == NULL) {
        return NULL;        /* a KeyboardInterrupt that came meanwhile */
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* The handler is an int equal to SIG_DFL (a callable subclass of int):
 * signal.getsignal() and signal.signal() turn it into Handlers.SIG_DFL as
 * they turn python's own default, while python's C code, which recognises
 * SIG_DFL only as an exact int, calls it. It holds nothing: the running
 * Checkpoint is the module's singleton. */
static PyType_Slot handler_slots[] = {
    {Py_tp_doc, "chkpt's handler of SIGTERM and SIGUSR1 (stands for SIG_DFL)."},
    {Py_tp_call, handler_call},
    {0, NULL}
};

static PyType_Spec handler_spec = {
    .name = "chkpt._chkpt.SignalHandler",
    .basicsize = 0,
    .itemsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = handler_slots,
};

/* ---- installing ---- */

/* _signal.getsignal(signum) is exactly SIG_DFL (python's default): 1, 0
 * or -1 with an exception. */
static int
is_default(PyObject *sigmod, int signum, PyObject *mine)
{
    PyObject *h = PyObject_CallMethod(sigmod, "getsignal", "i", signum);
    if (h == NULL) {
        return -1;
    }
    int r = PyLong_CheckExact(h) && h != mine
            && PyLong_AsLong(h) == (long)(intptr_t)SIG_DFL;
    Py_DECREF(h);
    return PyErr_Occurred() ? -1 : r;
}

static int
set_handler(PyObject *sigmod, int signum, PyObject *h)
{
    PyObject *old = PyObject_CallMethod(sigmod, "signal", "iO", signum, h);
    Py_XDECREF(old);
    return old == NULL ? -1 : 0;
}

void
chkpt_signals_install(CheckpointObject *ck)
{
    signals_state *s = (signals_state *)ck->signals;
    if (s == NULL) {
        s = PyMem_Calloc(1, sizeof(*s));
        if (s == NULL) {
            return;
        }
        chkpt_timer_init(&s->watchdog, watchdog_next, watchdog_fire, s);
        ck->signals = s;
    }
    PyObject *sigmod = PyImport_ImportModule("_signal");
    if (sigmod == NULL) {
        chkpt_warn_exc("no snapshots on signals");
        return;
    }
    s->pid = getpid();
    if (s->handler == NULL) {
        s->handler_type = (PyTypeObject *)PyType_FromModuleAndSpec(
            ck->module, &handler_spec, (PyObject *)&PyLong_Type);
        PyObject *h = s->handler_type
                      ? PyObject_CallFunction((PyObject *)s->handler_type, "l",
                                              (long)(intptr_t)SIG_DFL) : NULL;
        if (h == NULL) {
            Py_DECREF(sigmod);
            chkpt_warn_exc("no snapshots on signals");
            return;
        }
        s->handler = h;
    }
    int d = is_default(sigmod, SIGTERM, s->handler);
    s->installed_term = d == 1 && set_handler(sigmod, SIGTERM, s->handler) == 0;
    d = d < 0 ? -1 : is_default(sigmod, SIGUSR1, s->handler);
    s->installed_usr1 = d == 1 && set_handler(sigmod, SIGUSR1, s->handler) == 0;
    /* the layer is best effort: without it python's handler alone runs */
    if (s->installed_term) {
        (void)layer_install(SIGTERM, ck->signal_deadline_ms);
    }
    if (s->installed_usr1) {
        (void)layer_install(SIGUSR1, ck->signal_deadline_ms);
    }
    if (PyErr_Occurred()) {
        chkpt_warn_exc("no snapshots on signals");
    }
    Py_DECREF(sigmod);
}

void
chkpt_signals_uninstall(CheckpointObject *ck)
{
    signals_state *s = (signals_state *)ck->signals;
    if (s == NULL || s->handler == NULL) {
        return;
    }
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    PyObject *sigmod = PyImport_ImportModule("_signal");
    int sigs[2] = {s->installed_term ? SIGTERM : 0, s->installed_usr1 ? SIGUSR1 : 0};
    for (int k = 0; k < 2 && sigmod != NULL; k++) {
        if (sigs[k] == 0) {
            continue;
        }
        layer_uninstall(sigs[k]);
        /* still ours: python's default again (the script's own stays) */
        PyObject *h = PyObject_CallMethod(sigmod, "getsignal", "i", sigs[k]);
        if (h == s->handler) {
            PyObject *dfl = PyLong_FromLong((long)(intptr_t)SIG_DFL);
            if (dfl == NULL || set_handler(sigmod, sigs[k], dfl) < 0) {
                PyErr_Clear();
            }
            Py_XDECREF(dfl);
        }
        Py_XDECREF(h);
    }
    s->installed_term = s->installed_usr1 = 0;
    /* nothing of chkpt's must keep the module (and through its singleton
     * the script's __main__) alive into python's finalization */
    Py_CLEAR(s->handler);
    Py_CLEAR(s->handler_type);
    Py_XDECREF(sigmod);
    PyErr_Clear();
    chkpt_error_restore(&saved);
}

void
chkpt_signals_deadline_start(CheckpointObject *ck, int signum)
{
    signals_state *s = (signals_state *)ck->signals;
    if (s != NULL && !s->watchdog.started) {
        watchdog_start(s, signum, ck->signal_deadline_ms);
    }
}

void
chkpt_signals_deadline_stop(CheckpointObject *ck)
{
    signals_state *s = (signals_state *)ck->signals;
    if (s != NULL) {
        watchdog_stop(s);
    }
}
