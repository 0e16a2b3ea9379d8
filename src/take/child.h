/* child.h: the snapshot child (child.c), the top of take/, and the one
 * entry point for a snapshot (chkpt_snapshot_take) that hooks, signals,
 * crash, checkpoint and statements (run/) call.
 *
 * A snapshot is taken in a child that the raw clone system call creates
 * with no exit signal (a "clone child"): it shares nothing with the script
 * but a copy-on-write image of its memory, runs the capture (selection,
 * pickling, hashing, writing, fsync, publication) there and reports back
 * through a shared page. The script's process pays for the clone only.
 */
#ifndef CHKPT_CHILD_H
#define CHKPT_CHILD_H

#include "chkpt.h"
#include "capture.h"

/* At most this many snapshots are written at a time: one, so that they
 * are published in the order they were taken and what a child learns
 * (an object not to pickle again) is known to the next one ... */
#define CHKPT_WRITER_MAX_CHILDREN 1
/* ... and one more for a boundary snapshot (statements.c): its moment, between
 * two top-level statements, does not come back, and a timer's snapshot in
 * flight then would cost a resume the whole statement before it. */
#define CHKPT_WRITER_SLOTS (CHKPT_WRITER_MAX_CHILDREN + 1)
/* Seconds a child may spend writing and syncing after its capture's own
 * time limit (CHKPT_SNAPSHOT_TIME_LIMIT) before it is given up. */
#define CHKPT_WRITER_IO_SECONDS 90.0
/* Seconds the end of the run waits for snapshots still being written (a
 * snapshot still being written then dies with the script, README). */
#define CHKPT_WRITER_EXIT_TIMEOUT 60.0

/* What a child runs instead of the snapshot of a frame (statements.c's
 * boundary snapshots), given how its capture is to run: returns as
 * chkpt_capture_frame does. */
typedef PyObject *(*chkpt_writer_fn)(CheckpointObject *ck,
                                     const chkpt_capture_env *env, void *arg);

/* A snapshot asked for: of a frame, of explicit values, or what fn
 * gathers. */
typedef struct {
    chkpt_kind kind;
    PyFrameObject *frame;   /* NULL: the innermost of the script's code */
    PyObject *name;         /* snapshot()'s name, or NULL */
    /* explicit values (crash snapshots), taken in this process: see
     * chkpt_capture_values */
    PyObject *entries, *extra_meta;
    /* or: a child runs fn(ck, env, arg) (the values and meta gathered
     * there, so the script's process allocates nothing for them); in this
     * process when no child can be had. None once the child started
     * (nothing is read back). */
    chkpt_writer_fn fn;
    void *arg;
} chkpt_snapshot_request;

/* Takes a snapshot: in a child (a frame's: a SnapshotInfo that waits for
 * the child when read), or in this process when no child can be had (the
 * memory a copy-on-write child might need is not there) or for explicit
 * values. None when nothing was written or started, NULL with an
 * exception that belongs to the script (Ctrl-C). chkpt's own failures are
 * warned about and give None. */
PyObject *chkpt_snapshot_take(CheckpointObject *ck,
                              const chkpt_snapshot_request *rq);
/* The time limit a capture in the script's process gets (hooks.c's timer
 * thread keeps it; fn NULL: none): see chkpt_capture_env. */
void chkpt_snapshot_set_time_limit(CheckpointObject *ck,
                                   void (*fn)(void *arg, double seconds),
                                   void *arg);
/* Sets up the writer's state ahead of the first snapshot (which would do
 * it), so that no snapshot allocates it while the script runs: 0, or -1
 * with an exception. */
int chkpt_writer_setup(CheckpointObject *ck);
/* 1 when no boundary snapshot could start now (after reaping the
 * children that ended), 0 when one could. */
int chkpt_writer_busy(CheckpointObject *ck);
/* -f auto: while a child is in flight, how often (seconds) the hooks look
 * whether it ended, to learn its cost. */
#define CHKPT_WRITER_AUTO_POLL 0.25
/* -f auto: the monotonic time from which the next automatic snapshot fits
 * the budget (cost.h); run_start: when the run began. Reaps the children
 * that ended. Main thread, GIL held. */
double chkpt_writer_next_auto(CheckpointObject *ck, double run_start);
/* With the script's top-level statements run one unit at a time
 * (statements.c): one unit ended, and the next begins (its module frame is a
 * new one); covered: a boundary snapshot was just taken there, which is
 * also the -f 0 snapshot of the next unit's first line (nothing ran
 * between them). */
void chkpt_writer_unit_ended(CheckpointObject *ck, int covered);
/* Reaps the children that ended (never blocks). */
void chkpt_writer_poll(CheckpointObject *ck);
/* ck.wait(): until every snapshot started so far has ended. 0, or -1 with
 * the exception of a signal handler (Ctrl-C) that interrupted the wait. */
int chkpt_writer_wait(CheckpointObject *ck);
/* End of the run: waits (at most CHKPT_WRITER_EXIT_TIMEOUT) for the
 * snapshots in flight. Nothing happens when none is. */
void chkpt_writer_finish(CheckpointObject *ck);
void chkpt_writer_free(CheckpointObject *ck);

#endif
