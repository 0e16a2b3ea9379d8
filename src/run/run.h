/* run.h: what run/ offers: the running engine. checkpoint.c (the
 * Checkpoint type), cli.c (`python -m chkpt`), runner.c (the script run as
 * python would), hooks.c (when an automatic snapshot is due), crash.c and
 * signals.c (their snapshots), statements.c (the script statement by
 * statement, boundary snapshots, --resume).
 *
 * May call: take/ (through child.h's chkpt_snapshot_take), read/, common/
 * and store/ (chkpt.h's map). Called by: module.c only. */
#ifndef CHKPT_RUN_H
#define CHKPT_RUN_H

#include "chkpt.h"

/* checkpoint.c */
extern PyType_Spec chkpt_checkpoint_spec;
PyObject *chkpt_checkpoint_new(PyObject *module, const chkpt_cli *cli);

/* cli.c: entry point of `python -m chkpt`; returns the exit status as an
 * int object, or NULL with an exception (SystemExit/KeyboardInterrupt
 * raised by the script propagate so python handles them natively). */
PyObject *chkpt_main(PyObject *module, PyObject *argv);

/* runner.c */
PyObject *chkpt_run(PyObject *module, chkpt_cli *cli);

/* hooks.c */
int chkpt_hooks_install(CheckpointObject *ck);
void chkpt_hooks_uninstall(CheckpointObject *ck);
/* Called when frequency changes while running. */
int chkpt_hooks_reconfigure(CheckpointObject *ck);

/* crash.c (over take/): with an exception pending (the script's
 * uncaught one), writes the 'crash' snapshot ('signal' for a
 * KeyboardInterrupt); the exception stays pending, untouched. */
void chkpt_crash_snapshot(CheckpointObject *ck);

/* signals.c (over take/): handlers for SIGTERM and SIGUSR1
 * where python's default disposition is in place, for the time the script
 * runs. */
void chkpt_signals_install(CheckpointObject *ck);
void chkpt_signals_uninstall(CheckpointObject *ck);
/* The --signal-deadline watchdog around a snapshot taken for signum: past
 * it, the process dies by signum (its default disposition). */
void chkpt_signals_deadline_start(CheckpointObject *ck, int signum);
void chkpt_signals_deadline_stop(CheckpointObject *ck);

/* statements.c: are boundary snapshots taken (-f N >= 0 or auto, -z not -1)? */
int chkpt_statements_boundaries_on(CheckpointObject *ck);
/* statements.c: the script's module run statement by statement (runner.c).
 * prepare splits the source (bytes) into top-level statements: 1 done, 0
 * it cannot be (run it whole; nothing set). */
int chkpt_statements_prepare(CheckpointObject *ck, PyObject *source,
                         PyObject *filename, int resume);
Py_ssize_t chkpt_statements_count(CheckpointObject *ck);
/* The script's code object `code` started (hooks.c sees PY_START): noted
 * for the dependencies of boundary snapshots. Never raises. */
void chkpt_statements_code_ran(CheckpointObject *ck, PyObject *code);
/* PY_START was off a while (a tracer of the script's, 3.13): what ran is
 * not all known, no more boundaries are taken. */
void chkpt_statements_code_partial(CheckpointObject *ck);
/* The statements were run: their state is dropped. */
void chkpt_statements_free(CheckpointObject *ck);
/* The code of statement i (borrowed), or None for a no-op statement. */
PyObject *chkpt_statements_code(CheckpointObject *ck, Py_ssize_t i);
/* With --resume: picks the resume point, executes the skipped
 * definitions, restores globals and random states into globals; returns
 * the index of the first statement to run, or -1 with the script's
 * exception set. Without --resume: 0. */
Py_ssize_t chkpt_statements_start(CheckpointObject *ck, PyObject *globals);
/* After statement next-1 ran: takes a boundary snapshot when one is due.
 * -1 with an exception that belongs to the script (Ctrl-C). */
int chkpt_statements_boundary(CheckpointObject *ck, Py_ssize_t next,
                          PyObject *globals);

#endif
