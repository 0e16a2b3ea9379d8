/* read.h: what read/ offers: reading snapshots back. load.c (listing,
 * loading, resolving the script's classes live or rebuilt, the Unloadable
 * type), rebuild.c (the script's modules rebuilt from saved sources, for
 * load.c), verbs.c (ls, show, explore, export, verify, gc), debug.c (pdb
 * post-mortem on a crash snapshot).
 *
 * May call: common/ and store/ (chkpt.h's map); never take/ nor run/.
 * Called by: run/ (the CLI's verbs, --resume) and module.c. */
#ifndef CHKPT_READ_H
#define CHKPT_READ_H

#include "chkpt.h"

/* debug.c (over load): `python -m chkpt debug SNAPSHOT`; the exit
 * status or -1. */
int chkpt_verb_debug(PyObject *module, chkpt_cli *cli);
/* rebuild.c (called by load.c only) */
/* Creates the RebuildGroup type; called by chkpt_load_init. */
int chkpt_rebuild_init(PyObject *module);
/* A group for the modules rebuilt from one set of sources: sources
 * {name: bytes}, paths {name: path or None}, specs {name: spec name}, tag
 * (str, part of the private module names). */
PyObject *chkpt_rebuild_group_new(PyObject *module, PyObject *sources,
                                  PyObject *paths, PyObject *specs,
                                  PyObject *tag);
/* Module `name` of the group, rebuilt on first use (new reference). */
PyObject *chkpt_rebuild_module(PyObject *module, PyObject *group,
                               PyObject *name);
/* Why qualname is missing from rebuilt module name (a recorded failure),
 * or NULL with no exception when nothing explains it. */
PyObject *chkpt_rebuild_reason(PyObject *module, PyObject *group,
                               PyObject *name, PyObject *qualname);
/* load.c */
extern PyType_Spec chkpt_unloadable_spec;
/* Called from module init: creates load.c's types and state. */
int chkpt_load_init(PyObject *module);
PyObject *chkpt_load(PyObject *module, PyObject *snapshot, PyObject *names,
                     int strict);
/* chkpt_load with a choice of a crash snapshot's scope: NULL or None the
 * failing frame, an int a frame (index in meta["traceback"]) with its
 * module's globals, ("locals", i) frame i's locals only, ("globals", name)
 * module name's globals only. Other snapshots ignore it. */
PyObject *chkpt_load_scope(PyObject *module, PyObject *snapshot, PyObject *names,
                           int strict, PyObject *scope);
/* {module name: module rebuilt from the snapshot's sources} (debug). */
PyObject *chkpt_rebuilt_modules(PyObject *module, PyObject *snapshot);
PyObject *chkpt_snapshots(PyObject *module, PyObject *dir);
/* Resolves a SnapshotInfo, a path to a manifest, or a path to a store dir
 * (meaning its newest snapshot) to a manifest path (new ref) or NULL with
 * SnapshotError set. */
PyObject *chkpt_resolve_snapshot(PyObject *module, PyObject *snapshot);
/* Resolves and opens a snapshot and returns its meta dict (the manifest
 * path in *path_out if not NULL); reads no variable data. */
PyObject *chkpt_load_meta(PyObject *module, PyObject *snapshot,
                          PyObject **path_out);
/* Can the class modname.qualname a variable needs be resolved where we are?
 * None if so, else the reason (str). Reads sources only, never data. */
PyObject *chkpt_check_class(PyObject *module, PyObject *snapshot_path,
                            PyObject *meta, PyObject *modname,
                            PyObject *qualname);

/* verbs.c: each returns the exit status, or -1 with an exception. */
int chkpt_verb_ls(PyObject *module, chkpt_cli *cli);
int chkpt_verb_show(PyObject *module, chkpt_cli *cli);
int chkpt_verb_explore(PyObject *module, chkpt_cli *cli);
int chkpt_verb_export(PyObject *module, chkpt_cli *cli);
int chkpt_verb_verify(PyObject *module, chkpt_cli *cli);
int chkpt_verb_gc(PyObject *module, chkpt_cli *cli);

#endif
