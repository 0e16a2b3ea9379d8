/* hooks.c: deciding when an automatic snapshot is due.
 *
 * Between snapshots nothing of chkpt runs in the script's thread: a timer
 * thread sleeps for the frequency, then asks the main thread (through
 * Py_AddPendingCall) to *arm* a line hook.
 * The first line of the script's own code that runs after that takes the
 * snapshot and disarms the hook, so snapshots happen at line boundaries
 * of the script, never inside library code.
 *
 *   3.12+  sys.monitoring (PEP 669), our own tool id: LINE events are set
 *          on the script's code objects only (set_local_events), never
 *          globally: global LINE events would report every line that
 *          library code runs for the first time while armed (an `import
 *          sklearn` runs ~180k of them: +0.9 s of CPU when armed through
 *          it), and each change of the global events makes every code
 *          object instrument itself again when it next runs. The script's
 *          code objects are learnt from PY_START events, on for good and
 *          DISABLE'd once reported (each code object reports once in the
 *          run: a generator too, at its first start), and from the stack
 *          when arming (code started before chkpt was installed).
 *   3.11   the C-level trace function (PyEval_SetTrace), set only while
 *          armed; a library frame gets f_trace_lines = False at its call
 *          event, so that it reports no lines.
 *
 * While the script has a tracer of its own (pdb, coverage, its own
 * sys.settrace), that tracer wins: the hook stays off and a due snapshot is
 * taken from the pending call itself. On 3.11 there is one tracer per
 * thread; on 3.13 another tool's LINE events hide the instruction event that
 * breakpoint() stops on, so an audit hook turns our events off the moment
 * the script calls sys.settrace.
 *
 * -f 0 keeps the hook armed for good (a snapshot per executed line of the
 * script); -f -1 never arms it (manual snapshots only). -f auto has no
 * period: the timer sleeps until the time the writer's budget gives
 * (child.c, cost.h), and the pending call asks again before it arms,
 * since the children's costs are learnt as they are reaped.
 *
 * The timer thread blocks every signal, and is not alive while the script's
 * own os.fork() or os.forkpty() runs (see "the script's own fork").
 */
#include "chkpt.h"
#include "cost.h"
#include "child.h"
#include "timer.h"
#include "run.h"
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define USE_MONITORING (PY_VERSION_HEX >= 0x030C0000)

typedef struct {
    CheckpointObject *ck;          /* strong ref while installed */
    chkpt_timer timer;             /* the timer thread; its lock guards
                                      the fields "under mutex" */
    int restart;                   /* under mutex: a snapshot just ended */
    long long period_ms;           /* under mutex: 0 = no timer,
                                      CHKPT_FREQUENCY_AUTO: due_at */
    long long tick_period;         /* under mutex: the period next_tick is for */
    double next_tick;              /* under mutex: monotonic s, 0 = none; kept
                                      while the timer is stopped for a fork */
    double due_at;                 /* under mutex: -f auto's next time */
    double run_start;              /* monotonic s the hooks were installed */
    atomic_int pending;            /* pending calls queued, not yet run */
    atomic_int arm_pending;        /* an arming request is queued */
    double limit_deadline;        /* under mutex: monotonic s, 0 = none */
    atomic_uint limit_gen;        /* which capture the time limit is for */
    atomic_uint fired_gen;         /* limit_gen when its deadline passed */
    atomic_int active;             /* cleared at uninstall */
    int armed;                     /* main thread only */
    unsigned long main_thread;
    pid_t pid;                     /* of the process that installed them */
#if USE_MONITORING
    int tool_id;                   /* -1 when none could be had */
    PyObject *monitoring;          /* sys.monitoring */
    PyObject *disable;             /* sys.monitoring.DISABLE */
    long line_event;               /* sys.monitoring.events.LINE */
    long start_event;              /* sys.monitoring.events.PY_START */
    int start_on;                  /* PY_START is on (set_start_events) */
    PyObject *line_callback;       /* our C function objects */
    PyObject *start_callback;
    PyObject *set_local_events;    /* sys.monitoring.set_local_events */
    PyObject *script_codes;        /* id -> code: the script's, seen so far */
#endif
} hooks_state;

static void restart_period(hooks_state *h);

/* Returns -1 with the exception set when the capture was interrupted by an
 * exception that belongs to the script (Ctrl-C, its signal handler's
 * SystemExit): it goes on into the script, at the line being run. */
static int
take_auto_snapshot(CheckpointObject *ck, PyFrameObject *frame)
{
    chkpt_snapshot_request rq = {.kind = CHKPT_KIND_AUTO, .frame = frame};
    PyObject *r = chkpt_snapshot_take(ck, &rq);
    restart_period((hooks_state *)ck->hooks);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        chkpt_warn_exc("automatic snapshot failed");
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

static int in_forked_child(hooks_state *h);

/* The running Checkpoint, for the hooks that get no argument: 3.11's trace
 * function (installed without a trace object so that the script's
 * sys.gettrace() still says None) and the audit hook. */
static CheckpointObject *
running_checkpoint(void)
{
    /* a sys.modules lookup, not an import: this runs on every line event */
    PyObject *name = PyUnicode_FromString("chkpt._chkpt");
    PyObject *mod = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (mod == NULL) {
        PyErr_Clear();
        return NULL;
    }
    CheckpointObject *ck = (CheckpointObject *)chkpt_get_state(mod)->singleton;
    Py_DECREF(mod);
    return ck;
}

/* ---- arming and disarming the line hook (main thread, GIL held) ---- */

#if USE_MONITORING

/* LINE events on one of the script's code objects, or none. */
static int
set_code_events(hooks_state *h, PyObject *code, int on)
{
    PyObject *r = PyObject_CallFunction(h->set_local_events, "iOl", h->tool_id,
                                        code, on ? h->line_event : 0L);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Remembers a code object of the script's (LINE events on it if armed). */
static int
add_script_code(hooks_state *h, PyObject *code)
{
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL) {
        return -1;
    }
    int known = PyDict_Contains(h->script_codes, key);
    int r = known != 0 ? known : PyDict_SetItem(h->script_codes, key, code);
    Py_DECREF(key);
    if (known == 0 && r == 0 && h->armed) {
        r = set_code_events(h, code, 1);
    }
    return r < 0 ? -1 : 0;
}

/* The script's frames on the stack: where control comes back to. */
static int
add_stack_codes(hooks_state *h)
{
    CheckpointObject *ck = h->ck;
    PyFrameObject *cur = (PyFrameObject *)Py_XNewRef(PyEval_GetFrame());
    int rc = 0;
    while (cur != NULL && rc == 0) {
        PyCodeObject *code = PyFrame_GetCode(cur);
        if (chkpt_is_script_code(ck, code)) {
            rc = add_script_code(h, (PyObject *)code);
        }
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(cur);
        Py_DECREF(cur);
        cur = back;
    }
    Py_XDECREF(cur);
    return rc;
}

static int
set_line_events(hooks_state *h, int on)
{
    if (h->tool_id < 0) {
        return -1;
    }
    if (on && add_stack_codes(h) < 0) {
        goto error;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *code;
    while (PyDict_Next(h->script_codes, &pos, &key, &code)) {
        if (set_code_events(h, code, on) < 0) {
            goto error;
        }
    }
    return 0;
error:
    chkpt_warn_exc("cannot set the line hook");
    return -1;
}

/* PY_START callback: (code, offset). Learns the script's code objects as
 * they start (LINE events on at once if armed), and notes them in
 * ck->ran_code when statements.c keeps it (3.11 needs no hook for that:
 * statements.c reads the code objects' warm-up counters). */
static PyObject *
start_callback(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    CheckpointObject *ck = (CheckpointObject *)self;
    hooks_state *h = (hooks_state *)ck->hooks;
    if (h == NULL || nargs < 1 || !PyCode_Check(args[0])) {
        Py_RETURN_NONE;
    }
    if (chkpt_is_script_code(ck, (PyCodeObject *)args[0])) {
        if (add_script_code(h, args[0]) < 0) {
            chkpt_warn_exc("cannot set the line hook");
        }
        /* statements.c's dependencies: the script's code that ran */
        chkpt_statements_code_ran(ck, args[0]);
    }
    /* known from now on (its LINE events are set at each arming) */
    return Py_NewRef(h->disable);
}

/* LINE callback: (code, line_number). Raises into the script only what
 * belongs to it (see take_auto_snapshot). */
static PyObject *
line_callback(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    CheckpointObject *ck = (CheckpointObject *)self;
    hooks_state *h = (hooks_state *)ck->hooks;
    if (h == NULL || nargs < 1 || !PyCode_Check(args[0])) {
        Py_RETURN_NONE;
    }
    if (!chkpt_is_script_code(ck, (PyCodeObject *)args[0])) {
        /* library code: never report this location again */
        return Py_NewRef(h->disable);
    }
    if (PyThread_get_thread_ident() != h->main_thread || ck->in_snapshot
        || !h->armed || in_forked_child(h)) {
        Py_RETURN_NONE;
    }
    if (!chkpt_freq_every_line(ck->frequency_ms)) {
        h->armed = 0;
        set_line_events(h, 0);
    }
    if (take_auto_snapshot(ck, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static const PyMethodDef line_callback_def = {
    "chkpt_line", (PyCFunction)(void (*)(void))line_callback, METH_FASTCALL,
    "chkpt's LINE callback"
};

static const PyMethodDef start_callback_def = {
    "chkpt_start", (PyCFunction)(void (*)(void))start_callback, METH_FASTCALL,
    "chkpt's PY_START callback"
};

/* sys.monitoring.events.NAME */
static long
event_bit(PyObject *events, const char *name)
{
    PyObject *v = PyObject_GetAttrString(events, name);
    long bit = v ? PyLong_AsLong(v) : -1;
    Py_XDECREF(v);
    return bit;
}

static int
monitoring_install(hooks_state *h)
{
    h->tool_id = -1;
    h->monitoring = PySys_GetObject("monitoring");     /* borrowed */
    if (h->monitoring == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "sys.monitoring is missing");
        return -1;
    }
    Py_INCREF(h->monitoring);
    h->disable = PyObject_GetAttrString(h->monitoring, "DISABLE");
    if (h->disable == NULL) {
        return -1;
    }
    PyObject *events = PyObject_GetAttrString(h->monitoring, "events");
    if (events == NULL) {
        return -1;
    }
    h->line_event = event_bit(events, "LINE");
    h->start_event = h->line_event < 0 ? -1 : event_bit(events, "PY_START");
    Py_DECREF(events);
    if (h->start_event < 0) {
        return -1;
    }
    h->set_local_events = PyObject_GetAttrString(h->monitoring, "set_local_events");
    h->script_codes = h->set_local_events ? PyDict_New() : NULL;
    if (h->script_codes == NULL) {
        return -1;
    }
    /* Tool ids 0-2 and 5 are conventionally the debugger's, coverage's,
     * the profiler's and the optimizer's: take a free one of the others. */
    static const int candidates[] = {4, 3};
    for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
        PyObject *r = PyObject_CallMethod(h->monitoring, "use_tool_id", "is",
                                          candidates[i], "chkpt");
        if (r != NULL) {
            Py_DECREF(r);
            h->tool_id = candidates[i];
            break;
        }
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            return -1;
        }
        PyErr_Clear();
    }
    if (h->tool_id < 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "no free sys.monitoring tool id (3 and 4 are taken)");
        return -1;
    }
    h->line_callback = PyCFunction_New((PyMethodDef *)&line_callback_def,
                                       (PyObject *)h->ck);
    if (h->line_callback == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethod(h->monitoring, "register_callback", "ilO",
                                      h->tool_id, h->line_event,
                                      h->line_callback);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    h->start_callback = PyCFunction_New((PyMethodDef *)&start_callback_def,
                                        (PyObject *)h->ck);
    if (h->start_callback == NULL) {
        return -1;
    }
    r = PyObject_CallMethod(h->monitoring, "register_callback", "ilO",
                            h->tool_id, h->start_event, h->start_callback);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    /* for good: changing the global events would re-instrument every code
     * object; each code object reports once anyway */
    r = PyObject_CallMethod(h->monitoring, "set_events", "il", h->tool_id,
                            h->start_event);
    Py_XDECREF(r);
    h->start_on = r != NULL;
    return r == NULL ? -1 : 0;
}

/* 3.13: while another tool has events on a code object (our PY_START, on
 * every one), the opcode event that pdb's breakpoint() asks for to stop
 * on its own line never comes (it stops on the next line: plain 3.13.0
 * shows the same with any tool's PY_START on). So PY_START is off while
 * the script may have a tracer, and back on at the next arming without
 * one; the code objects started meanwhile are not known to statements.c. */
static void
set_start_events(hooks_state *h, int on)
{
#if PY_VERSION_HEX >= 0x030D0000
    if (h->tool_id < 0 || h->start_on == on) {
        return;
    }
    PyObject *r = PyObject_CallMethod(h->monitoring, "set_events", "il",
                                      h->tool_id, on ? h->start_event : 0L);
    if (r == NULL) {
        PyErr_Clear();
        return;
    }
    Py_DECREF(r);
    h->start_on = on;
    if (!on) {
        chkpt_statements_code_partial(h->ck);
    }
#else
    (void)h;
    (void)on;
#endif
}

static void
monitoring_uninstall(hooks_state *h)
{
    if (h->tool_id >= 0) {
        chkpt_saved_error saved;
        chkpt_error_save(&saved);
        PyObject *r = PyObject_CallMethod(h->monitoring, "set_events", "ii",
                                          h->tool_id, 0);
        Py_XDECREF(r);
        Py_ssize_t pos = 0;
        PyObject *key, *code;
        while (h->script_codes != NULL
               && PyDict_Next(h->script_codes, &pos, &key, &code)) {
            r = PyObject_CallFunction(h->set_local_events, "iOi", h->tool_id,
                                      code, 0);
            Py_XDECREF(r);
        }
        long events[2] = {h->line_event, h->start_event};
        for (int i = 0; i < 2; i++) {
            if (events[i] > 0) {
                r = PyObject_CallMethod(h->monitoring, "register_callback",
                                        "ilO", h->tool_id, events[i], Py_None);
                Py_XDECREF(r);
            }
        }
        r = PyObject_CallMethod(h->monitoring, "free_tool_id", "i", h->tool_id);
        Py_XDECREF(r);
        PyErr_Clear();
        chkpt_error_restore(&saved);
        h->tool_id = -1;
    }
    Py_CLEAR(h->line_callback);
    Py_CLEAR(h->start_callback);
    Py_CLEAR(h->set_local_events);
    Py_CLEAR(h->script_codes);
    Py_CLEAR(h->disable);
    Py_CLEAR(h->monitoring);
}

/* Is the script tracing itself (sys.settrace, PyEval_SetTrace)? */
static int
foreign_tracer(void)
{
    return PyThreadState_Get()->c_tracefunc != NULL;
}

static void
arm(hooks_state *h)
{
    if (!atomic_load(&h->active) || foreign_tracer()) {
        return;
    }
    set_start_events(h, 1);
    if (!h->armed && set_line_events(h, 1) == 0) {
        h->armed = 1;
    }
}

static void
disarm(hooks_state *h)
{
    if (h->armed) {
        h->armed = 0;
        set_line_events(h, 0);
    }
}

#else /* 3.11: the C trace function */

static int trace_function(PyObject *, PyFrameObject *, int, PyObject *);

/* The Checkpoint whose trace function is set: 3.11 gives a C trace
 * function only its trace object, which stays NULL (sys.gettrace() says
 * None), and a module lookup on every event of the armed hook is time the
 * script pays. Main thread, GIL held. */
static CheckpointObject *traced_ck;

/* Sets (ck) or clears (NULL) our trace function. PyEval_SetTrace would
 * raise the "sys.settrace" audit event, which the script's own audit hooks
 * would see each time chkpt arms: the fields it sets are set here
 * directly, as 3.11's _PyEval_SetTrace does (3.11 is frozen; runner.c
 * reaches into the thread state likewise). Only called with no tracer or
 * ours installed. */
static void
set_own_trace(CheckpointObject *ck)
{
    int on = ck != NULL;
    traced_ck = ck;
    PyThreadState *ts = PyThreadState_Get();
    PyObject *old = ts->c_traceobj;
    ts->c_traceobj = NULL;
    ts->c_tracefunc = on ? trace_function : NULL;
    ts->cframe->use_tracing =
        ts->tracing == 0 && (ts->c_tracefunc != NULL || ts->c_profilefunc != NULL)
        ? 255 : 0;
    Py_XDECREF(old);
}

static int
trace_function(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    if (what != PyTrace_LINE && what != PyTrace_CALL) {
        return 0;
    }
    CheckpointObject *ck = traced_ck;
    hooks_state *h = ck ? (hooks_state *)ck->hooks : NULL;
    if (h == NULL || ck->in_snapshot || in_forked_child(h)) {
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    int mine = chkpt_is_script_code(ck, code);
    Py_DECREF(code);
    if (!mine) {
        /* library code: no more line events from this frame (an import
         * run while armed would report each of its lines) */
        if (PyObject_SetAttrString((PyObject *)frame, "f_trace_lines",
                                   Py_False) < 0) {
            PyErr_Clear();
        }
        return 0;
    }
    if (what == PyTrace_CALL) {
        return 0;
    }
    if (!chkpt_freq_every_line(ck->frequency_ms)) {
        h->armed = 0;
        set_own_trace(NULL);
    }
    return take_auto_snapshot(ck, frame);
}

/* Is the innermost frame of this thread the script's own code? */
static int
script_code_running(CheckpointObject *ck)
{
    PyFrameObject *frame = PyEval_GetFrame();       /* borrowed */
    if (frame == NULL) {
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);
    int mine = chkpt_is_script_code(ck, code);
    Py_DECREF(code);
    return mine;
}

/* Is a tracer other than ours installed (the script's, a debugger's)? */
static int
foreign_tracer(void)
{
    PyThreadState *ts = PyThreadState_Get();
    return ts->c_tracefunc != NULL && ts->c_tracefunc != trace_function;
}

static void
arm(hooks_state *h)
{
    if (!atomic_load(&h->active)) {
        return;
    }
    PyThreadState *ts = PyThreadState_Get();
    if (ts->c_tracefunc == trace_function) {
        h->armed = 1;
        return;
    }
    if (foreign_tracer()) {
        h->armed = 0;
        return;
    }
    set_own_trace(h->ck);
    h->armed = 1;
}

static void
disarm(hooks_state *h)
{
    PyThreadState *ts = PyThreadState_Get();
    if (ts->c_tracefunc == trace_function) {
        set_own_trace(NULL);
    }
    h->armed = 0;
}

#endif

/* In a child the script forked (os.fork, multiprocessing's fork workers)
 * there is no timer thread, and automatic snapshots would mix into the
 * parent's store: they stop there (manual ones still work). Noticed lazily,
 * on the hook's own events, so nothing is registered with os.fork. */
static int
in_forked_child(hooks_state *h)
{
    if (h->pid == getpid()) {
        return 0;
    }
    if (atomic_load(&h->active)) {
        h->timer.started = 0;
        h->main_thread = PyThread_get_thread_ident();
        disarm(h);
        atomic_store(&h->active, 0);
        atomic_store(&h->pending, 0);
    }
    return 1;
}

/* ---- the timer thread ---- */

/* -f auto: the timer wakes at due_at (the start over of timer_next). */
static void
set_due(hooks_state *h, double due)
{
    chkpt_timer_lock(&h->timer);
    h->due_at = due;
    h->restart = 1;
    chkpt_timer_wake(&h->timer);
    chkpt_timer_unlock(&h->timer);
}

/* Under -f auto, does the next snapshot fit the budget now? If not, the
 * timer is set for when it will. Always 1 under the other frequencies.
 * Main thread, GIL held. */
static int
budget_allows(hooks_state *h)
{
    if (!chkpt_freq_auto(h->ck->frequency_ms)) {
        return 1;
    }
    double due = chkpt_writer_next_auto(h->ck, h->run_start);
    if (due <= chkpt_monotonic()) {
        return 1;
    }
    set_due(h, due);
    return 0;
}

/* Runs on the main thread between two bytecodes, like a signal handler:
 * what it raises (only what belongs to the script, see take_auto_snapshot)
 * surfaces there. */
static int
pending_arm(void *arg)
{
    hooks_state *h = (hooks_state *)arg;
    int rc = 0;
    /* the frequency may have changed since the request was posted */
    if (!in_forked_child(h) && atomic_load(&h->active) && !h->ck->in_snapshot
        && !chkpt_freq_manual(h->ck->frequency_ms)
        && PyThread_get_thread_ident() == h->main_thread
        && budget_allows(h)) {
        if (!foreign_tracer()) {
#if !USE_MONITORING
            if (!chkpt_freq_every_line(h->ck->frequency_ms)
                && !script_code_running(h->ck)) {
                /* 3.11: armed, the trace function would see every call
                 * of the library running now (a whole fit() until the
                 * script's next line: 1.5x on scikit-learn's examples at
                 * -f 100): the snapshot is taken at once, from where the
                 * script is, as under a tracer below */
                rc = take_auto_snapshot(h->ck, NULL);
            }
            else
#endif
            arm(h);
        }
        else if (!chkpt_freq_every_line(h->ck->frequency_ms)) {
            /* the script's tracer wins: snapshot where the script is */
            disarm(h);
            rc = take_auto_snapshot(h->ck, NULL);
        }
        /* -f 0 under a tracer: no per-line snapshots until it is gone */
    }
    atomic_store(&h->arm_pending, 0);
    atomic_fetch_sub(&h->pending, 1);
    return rc;
}

/* Queues func for the main thread; the GIL is held. At most one arming
 * request is queued at a time (the main thread may be busy in C code for a
 * long while). A full queue drops the request: the next one retries. */
static void
queue_request(hooks_state *h, int (*func)(void *))
{
    int arming = func == pending_arm;
    if (arming && atomic_exchange(&h->arm_pending, 1)) {
        return;
    }
    atomic_fetch_add(&h->pending, 1);
    if (Py_AddPendingCall(func, h) != 0) {
        atomic_fetch_sub(&h->pending, 1);
        if (arming) {
            atomic_store(&h->arm_pending, 0);
        }
    }
}

/* Audit hook: the script is about to change its tracer. On 3.12+ our LINE
 * events go off at once (on 3.11 the script's tracer replaces ours), and a
 * request posted here re-evaluates once the new tracer is in place: it
 * re-arms -f 0 when the tracer was removed. */
static int
audit_hook(const char *event, PyObject *args, void *unused)
{
    (void)args;
    (void)unused;
    if (strcmp(event, "sys.settrace") != 0
        && strcmp(event, "sys._settraceallthreads") != 0) {
        return 0;
    }
    chkpt_saved_error saved;
    chkpt_error_save(&saved);
    CheckpointObject *ck = running_checkpoint();
    hooks_state *h = ck ? (hooks_state *)ck->hooks : NULL;
    if (h != NULL && atomic_load(&h->active) && !in_forked_child(h)) {
#if USE_MONITORING
        disarm(h);
        set_start_events(h, 0);
#endif
        if (chkpt_freq_every_line(ck->frequency_ms)) {
            queue_request(h, pending_arm);
        }
    }
    PyErr_Clear();
    chkpt_error_restore(&saved);
    return 0;
}

/* Audit hooks belong to the process and cannot be removed: one is added
 * for the process's lifetime and finds the running Checkpoint itself. */
static void
add_audit_hook(void)
{
    static atomic_int added;
    if (atomic_exchange(&added, 1)) {
        return;
    }
    if (PySys_AddAuditHook(audit_hook, NULL) < 0) {
        PyErr_Clear();
        chkpt_warn("cannot add an audit hook: under a debugger, automatic "
                   "snapshots may hide a breakpoint() stop");
    }
}

/* Runs on the main thread when a snapshot overran its time limit: the
 * exception surfaces in the Python code the capture is running (a hostile
 * __reduce__ or __getstate__), which makes the capture skip that object.
 * It is raised only if that same capture is still running, so it can
 * never reach the script. */
static int
pending_interrupt(void *arg)
{
    hooks_state *h = (hooks_state *)arg;
    int raise = atomic_load(&h->active) && h->ck->in_snapshot
                && atomic_load(&h->limit_gen) == atomic_load(&h->fired_gen);
    atomic_fetch_sub(&h->pending, 1);
    if (raise) {
        PyErr_SetString(PyExc_TimeoutError,
                        "chkpt gave up pickling this object: its time budget is used up");
        return -1;
    }
    return 0;
}

/* Posts a request to the main thread. Before 3.13, a pending call added by
 * a thread that is not the main one does not set the main thread's eval
 * breaker (it is computed for the calling thread); holding the GIL while
 * adding it makes the main thread recompute it when it takes the GIL back,
 * so the request is seen within the switch interval. Called with the
 * timer's lock held; releases it meanwhile. */
static void
post_request(hooks_state *h, int (*func)(void *))
{
    chkpt_timer_unlock(&h->timer);
    PyGILState_STATE g = PyGILState_Ensure();
    queue_request(h, func);
    PyGILState_Release(g);
    chkpt_timer_lock(&h->timer);
}

/* The period counts from the end of the last automatic snapshot: a
 * snapshot that takes longer than the period must not be followed at once
 * by the next one, or the script would never get to run. */
static void
restart_period(hooks_state *h)
{
    if (h == NULL || in_forked_child(h)) {
        return;
    }
    if (chkpt_freq_auto(h->ck->frequency_ms)) {
        /* a child was just started: the timer looks again once it ended */
        set_due(h, chkpt_writer_next_auto(h->ck, h->run_start));
        return;
    }
    chkpt_timer_lock(&h->timer);
    h->restart = 1;
    chkpt_timer_wake(&h->timer);
    chkpt_timer_unlock(&h->timer);
}

/* The timer thread (chkpt_timer): when it acts next, the earlier of the
 * tick (the period, or -f auto's due time) and a capture's time limit. */
static double
timer_next(void *arg, double now)
{
    hooks_state *h = (hooks_state *)arg;
    if (h->period_ms != h->tick_period || h->restart) {     /* start over */
        h->tick_period = h->period_ms;
        h->restart = 0;
        h->next_tick = chkpt_freq_periodic(h->tick_period)
                       ? now + (double)h->tick_period / 1000.0
                       : chkpt_freq_auto(h->tick_period)
                       ? h->due_at : 0;
    }
    double wake = h->next_tick;
    if (h->limit_deadline > 0 && (wake == 0 || h->limit_deadline < wake)) {
        wake = h->limit_deadline;
    }
    return wake;
}

/* What is due: the capture's time limit passed (its Python code is
 * interrupted), a tick (the hook is armed). */
static void
timer_fire(void *arg, double now)
{
    hooks_state *h = (hooks_state *)arg;
    if (h->limit_deadline > 0 && now >= h->limit_deadline) {
        h->limit_deadline = 0;
        atomic_store(&h->fired_gen, atomic_load(&h->limit_gen));
        post_request(h, pending_interrupt);
    }
    if (h->next_tick > 0 && now >= h->next_tick) {
        /* -f auto: the request sets the next time; this one is in case
         * it never runs (a queue full) */
        h->next_tick = now + (chkpt_freq_periodic(h->tick_period)
                              ? (double)h->tick_period / 1000.0
                              : CHKPT_AUTO_MIN_INTERVAL);
        post_request(h, pending_arm);
    }
}

/* ---- the script's own fork ----
 *
 * os.fork() and os.forkpty() (multiprocessing's fork start method calls
 * the former) count the process's threads once the child exists and, from
 * 3.12 on, warn when there are more than one (3.12 counts before the
 * after-in-parent callbacks, 3.13.0 after them); the child gets the
 * forking thread only. So, for a fork from the main thread, the timer
 * thread ends before the call and starts again once it has returned, in
 * the parent: its audit hooks, at-fork callbacks, the fork and the count
 * all see python's threads only. A refused or failed fork returns too.
 *
 * posix's two builtins are wrapped in place: the function objects stay
 * (os.fork is posix.fork, same name, doc and signature), their method
 * definitions are copies whose C function calls posix's own between
 * stopping and restarting the timer. Nothing is registered with
 * os.register_at_fork and no audit event is raised. */

/* Process-wide, as the function objects they patch (a function object
 * points at its PyMethodDef for life): posix's own definitions, and the
 * copies that call the wrappers. Set once, with the GIL held. */
static PyMethodDef *posix_fork_def, *posix_forkpty_def;
static PyMethodDef fork_def, forkpty_def;

static PyObject *
around_fork(PyMethodDef *posix_def, PyObject *self, PyObject *unused)
{
    CheckpointObject *ck = running_checkpoint();
    hooks_state *h = ck ? (hooks_state *)ck->hooks : NULL;
    int paused = 0;
    if (h != NULL && h->timer.started && atomic_load(&h->active)
        && !in_forked_child(h)
        && PyThread_get_thread_ident() == h->main_thread) {
        /* from another thread python warns anyway: two threads */
        chkpt_timer_stop(&h->timer, 1);
        paused = 1;
    }
    PyObject *r = posix_def->ml_meth(self, unused);
    /* (the run cannot end while its main thread is in here) */
    if (paused && ck->hooks == h && atomic_load(&h->active)
        && !in_forked_child(h)) {
        if (chkpt_timer_start(&h->timer) < 0) {
            chkpt_saved_error saved;
            chkpt_error_save(&saved);
            chkpt_warn("cannot restart the timer thread after a fork; "
                       "automatic snapshots are off");
            chkpt_error_restore(&saved);
        }
    }
    return r;
}

static PyObject *
fork_wrapper(PyObject *self, PyObject *unused)
{
    return around_fork(posix_fork_def, self, unused);
}

static PyObject *
forkpty_wrapper(PyObject *self, PyObject *unused)
{
    return around_fork(posix_forkpty_def, self, unused);
}

static void
wrap_one(PyObject *posix, const char *name, PyMethodDef **posix_def,
         PyMethodDef *copy, PyCFunction wrapper)
{
    PyObject *fn = PyObject_GetAttrString(posix, name);
    if (fn == NULL) {
        PyErr_Clear();          /* not on this platform */
        return;
    }
    PyCFunctionObject *f = (PyCFunctionObject *)fn;
    /* posix's own builtin, as 3.11-3.13 define it, and not wrapped yet */
    if (PyCFunction_Check(fn) && f->m_self == posix
        && f->m_ml->ml_flags == METH_NOARGS && f->m_ml != copy) {
        *posix_def = f->m_ml;
        *copy = *f->m_ml;
        copy->ml_meth = wrapper;
        f->m_ml = copy;
    }
    Py_DECREF(fn);
}

/* Once per process, like the audit hook: the wrappers find the running
 * Checkpoint themselves and do nothing more when there is none. */
static void
wrap_fork(void)
{
    static int wrapped;         /* under the GIL */
    if (wrapped) {
        return;
    }
    wrapped = 1;
    PyObject *name = PyUnicode_FromString("posix");
    PyObject *posix = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (posix == NULL) {
        PyErr_Clear();
        return;
    }
    wrap_one(posix, "fork", &posix_fork_def, &fork_def, fork_wrapper);
    wrap_one(posix, "forkpty", &posix_forkpty_def, &forkpty_def,
             forkpty_wrapper);
    Py_DECREF(posix);
}

/* The time limit of a capture running on the main thread
 * (chkpt_capture_env): once it has passed, the Python code the capture runs
 * (a hostile __reduce__ that never returns) gets a TimeoutError at its
 * next bytecode, so the capture can skip that object. Never raised once
 * lifted (seconds <= 0). */
static void
capture_time_limit(void *arg, double seconds)
{
    CheckpointObject *ck = (CheckpointObject *)arg;
    hooks_state *h = (hooks_state *)ck->hooks;
    if (h == NULL || in_forked_child(h)) {
        return;
    }
    chkpt_timer_lock(&h->timer);
    atomic_fetch_add(&h->limit_gen, 1);       /* a fired request is void */
    if (seconds <= 0) {
        h->limit_deadline = 0;
    }
    else {
        h->limit_deadline = chkpt_monotonic() + seconds;
        chkpt_timer_wake(&h->timer);
    }
    chkpt_timer_unlock(&h->timer);
}

/* The timer period for the current frequency: 0 means no timer. */
static long long
timer_period(CheckpointObject *ck)
{
    return chkpt_freq_periodic(ck->frequency_ms)
           || chkpt_freq_auto(ck->frequency_ms) ? ck->frequency_ms : 0;
}

int
chkpt_hooks_reconfigure(CheckpointObject *ck)
{
    hooks_state *h = (hooks_state *)ck->hooks;
    if (h == NULL || in_forked_child(h)) {
        return 0;       /* not running yet: the value is used at install */
    }
    chkpt_timer_lock(&h->timer);
    h->period_ms = timer_period(ck);
    /* a change to auto: the pending call then asks the budget */
    h->due_at = chkpt_monotonic() + CHKPT_AUTO_MIN_INTERVAL;
    chkpt_timer_wake(&h->timer);
    chkpt_timer_unlock(&h->timer);
    if (chkpt_freq_every_line(ck->frequency_ms)) {
        arm(h);
    }
    else {
        disarm(h);
    }
    return 0;
}

int
chkpt_hooks_install(CheckpointObject *ck)
{
    if (ck->hooks != NULL) {
        return 0;
    }
    hooks_state *h = PyMem_RawCalloc(1, sizeof(hooks_state));
    if (h == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    h->ck = (CheckpointObject *)Py_NewRef(ck);
    h->main_thread = PyThread_get_thread_ident();
    h->pid = getpid();
    atomic_init(&h->pending, 0);
    atomic_init(&h->arm_pending, 0);
    atomic_init(&h->limit_gen, 0);
    atomic_init(&h->fired_gen, 0);
    atomic_init(&h->active, 1);
    chkpt_timer_init(&h->timer, timer_next, timer_fire, h);
    h->period_ms = timer_period(ck);
    h->tick_period = -1;
    h->run_start = chkpt_monotonic();
    /* -f auto asks the budget first a second in: a shorter script takes
     * no automatic snapshot, and one that is still starting up is small */
    h->due_at = h->run_start + CHKPT_AUTO_MIN_INTERVAL;
    ck->hooks = h;
    chkpt_snapshot_set_time_limit(ck, capture_time_limit, ck);
#if USE_MONITORING
    if (monitoring_install(h) < 0) {
        chkpt_warn_exc("automatic snapshots are off");
        monitoring_uninstall(h);
        return 0;       /* the script runs on; manual snapshots still work */
    }
#endif
    add_audit_hook();
    wrap_fork();
    if (chkpt_timer_start(&h->timer) < 0) {
        chkpt_warn("cannot start the timer thread; automatic snapshots "
                   "are off");
    }
    if (chkpt_freq_every_line(ck->frequency_ms)) {
        arm(h);
    }
    return 0;
}

void
chkpt_hooks_uninstall(CheckpointObject *ck)
{
    hooks_state *h = (hooks_state *)ck->hooks;
    if (h == NULL) {
        return;
    }
    /* in a forked child: no timer thread to stop, and its mutex may have
     * been held by the parent's timer thread at the fork */
    int child = in_forked_child(h);
    chkpt_snapshot_set_time_limit(ck, NULL, NULL);
    atomic_store(&h->active, 0);
    chkpt_timer_stop(&h->timer, 0);
    disarm(h);
#if USE_MONITORING
    monitoring_uninstall(h);
#endif
    /* A request may still be queued: let it run (it sees !active) before
     * its argument is freed. */
    while (atomic_load(&h->pending) > 0) {
        chkpt_saved_error saved;
        chkpt_error_save(&saved);
        if (Py_MakePendingCalls() < 0) {
            PyErr_Clear();
        }
        chkpt_error_restore(&saved);
        if (atomic_load(&h->pending) > 0) {
            /* not on the main thread, or the queue is busy: leak rather
             * than risk a use after free */
            ck->hooks = NULL;
            return;
        }
    }
    if (!child) {
        chkpt_timer_destroy(&h->timer);
    }
    ck->hooks = NULL;
    Py_DECREF(h->ck);
    PyMem_RawFree(h);
}
