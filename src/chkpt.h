/* chkpt.h: what the parts of the engine share, and the map of the parts.
 *
 * Folders, bottom to top, by layer [N]. A file calls only into its own
 * folder or the folders of lower layers; folders of one layer (take/ and
 * read/) are siblings and never call each other; inside a folder, calls
 * between files go one way (no circle). tools/check_layers.py reads the
 * [N] lines, reads the calls from the code, and fails `make test` when
 * one goes against them.
 *
 *   [0] store/   pure C, no Python
 *     store.c        the on-disk store (store.h)
 *     pickle_refs.c  the globals a pickle names, from its opcodes
 *                    (pickle_refs.h)
 *   [1] common/  helpers both halves use (helpers.h, pickler.h, timer.h,
 *            this file)
 *     helpers.c      warnings, warn-once, exceptions, the clock,
 *                    dict/file/path helpers, shared constants
 *     snapinfo.c     the SnapshotInfo type (a read-only value); reading a
 *                    manifest's meta
 *     syspath.c      the sys.path entries the script added: recorded in
 *                    each snapshot, appended again when loading
 *     pickler.c      the pickler's plumbing: protocol 5, out-of-band
 *                    buffers, the bounded sink, the copyreg patch
 *     timer.c        the one timer facility (timer.h): a timer thread
 *                    acting at the times its owner gives (the hooks'
 *                    tick and a capture's time limit, the signal
 *                    watchdog), a kernel timer sending a signal (a
 *                    snapshot child's limits, SIGTERM's arrival deadline)
 *   [2] take/    taking snapshots, bottom to top (capture.h, cost.h, child.h)
 *     select.c       which variables a snapshot holds; which code is the
 *                    script's
 *     capture.c      one snapshot in the process it runs in, step by step:
 *                    selects, pickles, writes to the store. Knows nothing
 *                    of processes: its runner passes a chkpt_capture_env
 *                    (time limit, pid, child or not)
 *     cost.c         what the snapshot processes cost, when -f auto may
 *                    take the next automatic snapshot, --keep-auto
 *     child.c        the snapshot child: spawning (clone), the child's
 *                    work (calls capture), its time limits and deadline,
 *                    reaping, -f 0's coalesced request; and the one entry
 *                    point for a snapshot, chkpt_snapshot_take
 *   [2] read/    reading snapshots back (read.h)
 *     rebuild.c      rebuilds the script's own modules from the sources a
 *                    snapshot keeps, for load.c
 *     load.c         listing, loading, resolving the script's own classes
 *                    (live or rebuilt); the Unloadable type
 *     verbs.c        ls, show, explore, export, verify, gc
 *     debug.c        `debug`: pdb post-mortem on a crash snapshot's frames
 *   [3] run/     the running engine (run.h); asks take/ for snapshots through
 *            chkpt_snapshot_take only, bottom to top:
 *     signals.c      snapshots on SIGTERM and SIGUSR1, the
 *                    --signal-deadline watchdog
 *     crash.c        the snapshot of an uncaught exception: every frame of
 *                    the script in its traceback
 *     statements.c   the script as top-level statements: AST fingerprints,
 *                    boundary snapshots between statements (their child
 *                    runs chkpt_capture_values), --resume (over
 *                    read/load.c); the script's code that ran, as hooks.c
 *                    tells it
 *     hooks.c        when an automatic snapshot is due (sys.monitoring on
 *                    3.12+, the C trace function on 3.11), on its timer
 *                    thread, which also keeps a capture's time limit
 *     checkpoint.c   the Checkpoint type: the engine as the script sees it
 *     runner.c       runs the script or module exactly as `python` would
 *     cli.c          option parsing and verb dispatch for `python -m chkpt`
 *   [4] module.c     creates the module: state, types, the module functions
 *
 * Mutable C globals: none but these, each a fact about the process that
 * code without a Checkpoint at hand reads (a signal handler, a clone child,
 * a hook added once for the process's life):
 *   mutable: child.c writer_child_process   this process is a snapshot child
 *   mutable: signals.c python_action        python's handlers, which ours
 *   mutable: signals.c layered              call from the signal handler
 *   mutable: signals.c layer_pid            the script's process (not a fork)
 *   mutable: signals.c deadline_timer       SIGTERM's arrival deadline, armed
 *   mutable: signals.c layer_deadline_ms    in the signal handler
 *   mutable: signals.c said                 the give-up line, written once
 *   mutable: hooks.c added                  the audit hook (never removable)
 *   mutable: hooks.c wrapped                os.fork wrapped, once per process,
 *   mutable: hooks.c fork_def               with the method definitions the
 *   mutable: hooks.c forkpty_def            wrappers need for as long as
 *   mutable: hooks.c posix_fork_def         os keeps them
 *   mutable: hooks.c posix_forkpty_def
 *   mutable: verbs.c du_total               ls's size sum (nftw's callback
 *                                           takes no argument)
 */
#ifndef CHKPT_H
#define CHKPT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include "store.h"
#include "helpers.h"

#if PY_VERSION_HEX < 0x030C0000
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_READONLY READONLY
#endif

/* version of the engine, recorded in every snapshot (keep in step with
 * chkpt/__init__.py and pyproject.toml) */
#ifndef CHKPT_VERSION
#define CHKPT_VERSION "0.1.0"
#endif

#define CHKPT_DEFAULT_MIN_OBJ_SIZE (1LL << 20)
/* -f auto, the default: automatic snapshots as often as the budget of
 * child.c allows (the children's CPU time and disk time at most
 * CHKPT_AUTO_BUDGET of the run's wall time; README "The default
 * frequency"). Stored in frequency_ms as this negative value. */
#define CHKPT_FREQUENCY_AUTO (-2LL)
#define CHKPT_DEFAULT_FREQUENCY_MS CHKPT_FREQUENCY_AUTO
/* -f -1: manual snapshots only; -f 0: every line where no snapshot is
 * being written; -f N > 0: every N ms. The modes are asked through these
 * predicates, never as literals. */
#define CHKPT_FREQUENCY_MANUAL (-1LL)
#define CHKPT_FREQUENCY_EVERY_LINE 0LL

static inline int
chkpt_freq_auto(long long frequency_ms)
{
    return frequency_ms == CHKPT_FREQUENCY_AUTO;
}

static inline int
chkpt_freq_manual(long long frequency_ms)
{
    return frequency_ms == CHKPT_FREQUENCY_MANUAL;
}

static inline int
chkpt_freq_every_line(long long frequency_ms)
{
    return frequency_ms == CHKPT_FREQUENCY_EVERY_LINE;
}

/* -f N: a period of N ms */
static inline int
chkpt_freq_periodic(long long frequency_ms)
{
    return frequency_ms > 0;
}
/* --keep-auto: the newest automatic snapshots of the script kept in the
 * store under -f auto, when not given (0: all, as with an explicit -f) */
#define CHKPT_DEFAULT_KEEP_AUTO 10L
#define CHKPT_DEFAULT_OUTPUT_DIR "checkpoints"
/* Seconds one snapshot may spend running Python code (__reduce__ and the
 * like) before the object at hand is given up on. */
#define CHKPT_SNAPSHOT_TIME_LIMIT 30.0
/* Milliseconds a SIGTERM/SIGINT snapshot may take before chkpt gives up and
 * the process ends as it would have: well inside the 30 s that Slurm and
 * Kubernetes leave between SIGTERM and SIGKILL. */
#define CHKPT_DEFAULT_SIGNAL_DEADLINE_MS 20000LL

/* What a snapshot is, written in its meta as chkpt_kind_name says. */
typedef enum {
    CHKPT_KIND_AUTO = 0,    /* the hooks' and the boundaries' */
    CHKPT_KIND_MANUAL,      /* ck.snapshot() */
    CHKPT_KIND_CRASH,       /* an uncaught exception */
    CHKPT_KIND_SIGNAL       /* SIGTERM, SIGUSR1, Ctrl-C */
} chkpt_kind;

static inline const char *
chkpt_kind_name(chkpt_kind kind)
{
    switch (kind) {
    case CHKPT_KIND_MANUAL: return "manual";
    case CHKPT_KIND_CRASH: return "crash";
    case CHKPT_KIND_SIGNAL: return "signal";
    default: return "auto";
    }
}

/* Per-module state (PEP 489/573). The few C globals left are facts about
 * the process, not the run: that it is a snapshot child (child.c), the
 * audit hook and fork wrappers added once per process (hooks.c). */
typedef struct {
    PyTypeObject *Checkpoint_Type;
    PyTypeObject *SnapshotInfo_Type;
    PyTypeObject *Unloadable_Type;
    PyObject *SnapshotError;        /* chkpt.SnapshotError (exception class) */
    PyObject *singleton;            /* the running Checkpoint, or NULL */
    PyObject *pickle_module;        /* cached `pickle` */
    PyObject *json_module;          /* cached `json` */
    /* owned by load.c (created in chkpt_load_init) */
    PyTypeObject *MappedBuffer_Type;
    PyTypeObject *Unpickler_Type;
    PyObject *load_cache;           /* dict, for load.c's own use */
    /* owned by rebuild.c (created in chkpt_rebuild_init) */
    PyTypeObject *RebuildGroup_Type;
    /* owned by capture.c (created in chkpt_capture_init) */
    PyTypeObject *PickleSink_Type;
} chkpt_state;

/* Parsed command line (cli.c). */
typedef enum {
    CHKPT_VERB_RUN = 0, CHKPT_VERB_LS, CHKPT_VERB_SHOW, CHKPT_VERB_EXPLORE,
    CHKPT_VERB_EXPORT, CHKPT_VERB_VERIFY, CHKPT_VERB_GC, CHKPT_VERB_HELP,
    CHKPT_VERB_DEBUG
} chkpt_verb;

typedef struct {
    chkpt_verb verb;
    long long frequency_ms;       /* -f: 0 every line, -1 manual only, N ms,
                                     CHKPT_FREQUENCY_AUTO the budget's */
    long keep_auto;               /* --keep-auto N, -1 if not given */
    long long min_obj_size;       /* -z: bytes; 0 every object; -1 tracked only */
    int verbosity;                /* -v count */
    int compress_level;           /* --compress (0 = off) */
    long long max_store_size;     /* --max-store-size: bytes, 0 = no limit */
    long long max_pickle_size;    /* --max-pickle-size: bytes, 0 = default */
    PyObject *output_dir;         /* str (owned) */
    PyObject *target;             /* str: script path, module name, or verb arg */
    int is_module;                /* -m */
    int resume;                   /* --resume */
    PyObject *args;               /* list of str: the script's arguments, or
                                     the verb's remaining arguments (owned) */
    long keep;                    /* gc --keep N, -1 if not given */
    long long signal_deadline_ms; /* --signal-deadline: ms */
    int portable;                 /* export --portable */
} chkpt_cli;

void chkpt_cli_clear(chkpt_cli *cli);

/* The Checkpoint object: one per run (the global singleton). */
typedef struct {
    PyObject_HEAD
    PyObject *module;             /* strong ref to the chkpt._chkpt module */
    long long frequency_ms;
    long long min_obj_size;
    int verbosity;
    int compress_level;
    long long max_store_size;     /* retention after automatic snapshots */
    long keep_auto;               /* the script's newest automatic snapshots
                                     kept (child.c), 0: all */
    long long max_pickle_size;    /* pickled bytes one snapshot may hold */
    PyObject *output_dir;         /* str, absolute */
    PyObject *tracked;            /* dict: id(obj) -> obj (identity set) */
    PyObject *libraries;          /* list of str: tracked library prefixes */
    PyObject *warned;             /* set of variable names already warned about */
    PyObject *warned_once;        /* set of the CHKPT_ONCE_* keys of warnings
                                     given once per run (chkpt_once_str) */
    PyObject *no_retry;           /* set of (name, id, type) of objects not
                                     to be pickled again (capture.c) */
    PyObject *script_path;        /* str: absolute path of the main script, or None */
    PyObject *script_dir;         /* str: its directory (siblings count as the script's) */
    PyObject *main_module;        /* the __main__ module the script runs in */
    PyObject *sources;            /* dict: absolute path -> bytes, the source
                                     of the script (set by the runner, as it
                                     was compiled) and of sibling modules */
    chkpt_store *store;           /* opened lazily at the first snapshot */
    int store_failed;             /* warned once that the store is unusable */
    unsigned long long seq;       /* snapshots taken by this run */
    double last_snapshot;         /* monotonic seconds of the last snapshot */
    int in_snapshot;              /* re-entrancy guard */
    /* the time limit of a capture in this process (hooks.c's timer
     * thread), set by chkpt_snapshot_set_time_limit only */
    void (*time_limit)(void *arg, double seconds);
    void *time_limit_arg;
    void *hooks;                  /* hooks.c private state */
    void *writer;                 /* child.c private state */
    PyObject *deferred;           /* capture.c: dict name -> [message, count]
                                     of variables that could not be saved,
                                     reported at exit (or at once with -v) */
    long long signal_deadline_ms; /* signals.c: time a signal snapshot may take */
    void *signals;                /* signals.c private state */
    PyObject *start_path;         /* syspath.c: sys.path (tuple) as python
                                     set it up for the script, or NULL */
    PyObject *statements;         /* statements.c's state (a capsule), or NULL */
    PyObject *ran_code;           /* set of the script's code objects that
                                     have started (PY_START, 3.12+), for
                                     the boundaries' dependencies; NULL: no
                                     tracking (statements.c's alone) */
    int ran_code_partial;         /* PY_START was off a while (a tracer of
                                     the script's, 3.13): ran_code may miss
                                     some, no boundaries are taken */
} CheckpointObject;

static inline chkpt_state *
chkpt_get_state(PyObject *module)
{
    return (chkpt_state *)PyModule_GetState(module);
}

/* snapinfo.c */
extern PyType_Spec chkpt_snapinfo_spec;
/* Builds a SnapshotInfo from a manifest path and its decoded meta dict. */
PyObject *chkpt_snapinfo_new(PyObject *module, PyObject *path, PyObject *meta);
/* Opens the manifest at path (str): its reader, and its decoded meta dict
 * in *meta_out; NULL with SnapshotError set when it is damaged or of a
 * newer format. */
chkpt_snapreader *chkpt_snapshot_open(PyObject *module, PyObject *path,
                                      PyObject **meta_out);
/* Sets chkpt.SnapshotError with the message PyUnicode_FromFormat makes of
 * fmt; returns NULL. */
PyObject *chkpt_snapshot_error(PyObject *module, const char *fmt, ...);

/* select.c (the rest of it in capture.h) */
/* Is this code object the script's own (main script or a sibling module)? */
int chkpt_is_script_code(CheckpointObject *ck, PyCodeObject *code);

/* syspath.c: the sys.path entries the script added (meta "sys_path") */
/* Notes sys.path as the script starts with it (once; never raises). */
void chkpt_syspath_note_start(CheckpointObject *ck);
/* Sets meta["sys_path"] when the script added entries (never raises). */
void chkpt_syspath_meta(CheckpointObject *ck, PyObject *meta);
/* Appends the snapshot's recorded entries that still exist and are not on
 * sys.path yet (never raises; a pending exception stays). */
void chkpt_syspath_extend(PyObject *meta);
/* Why top-level module `top` cannot be imported, knowing the entries the
 * script added: None when it is found in one that exists, else the reason
 * (saying which directories are gone). NULL with an exception on error. */
PyObject *chkpt_syspath_missing(PyObject *meta, PyObject *top);

#endif
