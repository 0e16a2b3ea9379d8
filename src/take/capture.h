/* capture.h: the bottom of take/, the capture of one snapshot in the
 * process it runs in: capture.c (selection, pickling, writing to the
 * store, step by step) and select.c (which variables a snapshot holds).
 * It knows nothing of processes: what it needs from whoever runs it (the
 * child layer, child.c) comes in a chkpt_capture_env. Calls common/ and
 * store/ only. */
#ifndef CHKPT_CAPTURE_H
#define CHKPT_CAPTURE_H

#include "chkpt.h"
#include "pickler.h"

/* What the runner of a capture tells it (child.c fills it in). */
typedef struct {
    /* Bounds the Python code the capture runs from now on (a hostile
     * __reduce__): past seconds it gets a TimeoutError at its next
     * bytecode; seconds <= 0 lifts the limit. NULL: no limit. */
    void (*time_limit)(void *arg, double seconds);
    /* The variable about to be pickled (key: its no-retry key; label: how
     * a warning names it), noted so that a parent can leave it out if the
     * process dies on it. NULL: not noted. */
    void (*pickling)(void *arg, PyObject *key, PyObject *label);
    void *arg;
    pid_t script_pid;       /* the script's process (meta "pid") */
    int no_script;          /* no script runs in this process (a snapshot
                               child): an exception that would be the
                               script's is the object's */
} chkpt_capture_env;

/* ---- capture.c ---- */

/* Snapshot of frame (NULL: the innermost frame running the script's code)
 * taken here: a SnapshotInfo, None when nothing was written, or NULL with
 * an exception that belongs to the script (Ctrl-C). chkpt's own failures
 * are warned about and give None. */
PyObject *chkpt_capture_frame(CheckpointObject *ck,
                              const chkpt_capture_env *env,
                              PyFrameObject *frame, chkpt_kind kind,
                              PyObject *name);
/* A snapshot of explicit values instead of a frame's salient variables
 * (crash and boundary snapshots): entries is a list of (name, value,
 * extra), extra a dict merged into the variable's meta entry; extra_meta's
 * keys are merged into the snapshot's meta. A crash or signal snapshot
 * saves every value, one that cannot be pickled as a chkpt.Unloadable
 * stand-in keeping its type and repr (meta key "standin"); an automatic
 * one leaves such a value out. Returns as chkpt_capture_frame does. */
PyObject *chkpt_capture_values(CheckpointObject *ck,
                               const chkpt_capture_env *env, chkpt_kind kind,
                               PyObject *entries, PyObject *extra_meta);
/* The Checkpoint's fields capture.c alone writes. As a run starts: no
 * store open nor known unusable, no snapshot taken or in progress, nothing
 * deferred. */
void chkpt_capture_state_init(CheckpointObject *ck);
/* No snapshot can be written this run (said once by whoever found it). */
void chkpt_capture_store_unusable(CheckpointObject *ck);
/* The store is closed (a new output directory, or the end): the next
 * snapshot opens it again, and it may be usable again. */
void chkpt_capture_store_close(CheckpointObject *ck);
/* A snapshot was taken (here, or started in a child): seq and
 * last_snapshot. */
void chkpt_capture_taken(CheckpointObject *ck);
/* 1 the store is open (once per run), 0 it cannot be (said once), -1 error */
int chkpt_capture_open_store(CheckpointObject *ck);
/* Notes that vname could not be saved (msg: the whole line), as the capture
 * does: warned once, or held for the exit report. -1 on a memory error. */
int chkpt_capture_report_unsaved(CheckpointObject *ck, PyObject *vname,
                                 PyObject *msg);
/* Called from module init: creates capture's types, imports what a
 * snapshot needs. */
int chkpt_capture_init(PyObject *module);

/* ---- select.c ---- */

/* Never captured: definitions and machinery rather than data. */
int chkpt_is_excluded(chkpt_state *st, PyObject *name, PyObject *obj);
/* Captured all the same: passed to track() (a function or class of the
 * script), under a name that is not __dunder__. Never raises. */
int chkpt_is_tracked_anyway(CheckpointObject *ck, PyObject *name, PyObject *obj);
/* Is tp from a tracked library (Checkpoint.track_library)? */
int chkpt_is_library_type(CheckpointObject *ck, PyTypeObject *tp);
/* Does obj hold at least bytes (> 0), by the measure -z uses? 1, 0, or -1
 * on an error; seen is a scratch set. */
int chkpt_holds_at_least(CheckpointObject *ck, PyObject *obj, long long bytes,
                         PyObject *seen);
/* 1 salient, 0 not, -1 error; seen is a scratch set. */
int chkpt_is_salient(CheckpointObject *ck, PyObject *obj, PyObject *seen);

#endif
