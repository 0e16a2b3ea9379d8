/* writer.h: snapshots written by a child process (writer.c).
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

/* At most this many snapshots are written at a time: one, so that they
 * are published in the order they were taken and what a child learns
 * (an object not to pickle again) is known to the next one ... */
#define CHKPT_WRITER_MAX_CHILDREN 1
/* ... and one more for a boundary snapshot (resume.c): its moment, between
 * two top-level statements, does not come back, and a timer's snapshot in
 * flight then would cost a resume the whole statement before it. */
#define CHKPT_WRITER_SLOTS (CHKPT_WRITER_MAX_CHILDREN + 1)
/* Seconds a child may spend writing and syncing after its capture's own
 * budget (CHKPT_SNAPSHOT_TIME_BUDGET) before it is given up. */
#define CHKPT_WRITER_IO_SECONDS 90.0
/* Seconds the end of the run waits for snapshots still being written (a
 * snapshot still being written then dies with the script, README). */
#define CHKPT_WRITER_EXIT_TIMEOUT 60.0

/* Takes the snapshot in a child. Sets *handled to 0 when the caller should
 * take it in this process instead (the child could not be created, or the
 * memory a copy-on-write child might need is not there); otherwise returns
 * what chkpt_capture returns: a SnapshotInfo that waits for the child when
 * read, None when no snapshot was started, NULL with an exception that
 * belongs to the script. */
PyObject *chkpt_writer_capture(CheckpointObject *ck, PyFrameObject *frame,
                               const char *kind, PyObject *name, int *handled);
/* What a child runs instead of the snapshot of a frame: returns as
 * chkpt_capture does. */
typedef PyObject *(*chkpt_writer_fn)(CheckpointObject *ck, void *arg);
/* As chkpt_writer_capture, the child running fn(ck, arg) (resume.c's
 * boundary snapshots: the values and meta are gathered in the child, so
 * the script's process allocates nothing for them); returns None once the
 * child started (nothing is read back). */
PyObject *chkpt_writer_capture_fn(CheckpointObject *ck, const char *kind,
                                  chkpt_writer_fn fn, void *arg, int *handled);
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
 * the budget (budget.h); run_start: when the run began. Reaps the children
 * that ended. Main thread, GIL held. */
double chkpt_writer_next_auto(CheckpointObject *ck, double run_start);
/* With the script's top-level statements run one unit at a time
 * (resume.c): one unit ended, and the next begins (its module frame is a
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

/* The pid of the script's process (the parent, in a writer child). */
pid_t chkpt_writer_script_pid(void);
/* In a writer child, the time budgets of hooks.c are a timer that ends
 * the child: returns 1 there (seconds <= 0 stops the budget), 0 elsewhere. */
int chkpt_writer_child_budget(CheckpointObject *ck, double seconds);
/* In a writer child, notes the variable being pickled (key: its no-retry
 * key in ck->warned; label: how a warning names it), so that the parent
 * can leave it out of later snapshots if the child dies on it. */
void chkpt_writer_child_object(CheckpointObject *ck, PyObject *key,
                               PyObject *label);

#endif
