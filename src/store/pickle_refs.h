/* pickle_refs.h: the walk over a pickle's opcodes that finds the globals
 * (module, name) it names. Pure C (no Python API), because it reads bytes
 * that may come from anywhere: tests/c unit-tests it and tests/fuzz fuzzes
 * it. capture.c turns its results into the meta's module_refs.
 */
#ifndef CHKPT_PICKLE_REFS_H
#define CHKPT_PICKLE_REFS_H

#include <stddef.h>

/* Called once per global found (possibly more than once for the same pair);
 * the strings point into the pickle, are not NUL-terminated and are not
 * checked for UTF-8. Returns 0 to go on, -1 to stop the walk. */
typedef int (*chkpt_pickle_ref_fn)(void *arg, const char *mod, size_t mlen,
                                   const char *name, size_t nlen);

/* Walks the opcodes of a protocol 2-5 pickle of n bytes (STACK_GLOBAL
 * following strings through the memo, and GLOBAL) and calls fn for each
 * (module, name) pair. Returns
 *    1  the walk reached STOP or the end of the data,
 *    0  the pickle uses something this walker does not follow (text opcodes
 *       of protocols 0/1, a truncated argument, a memo index past the data,
 *       no memory): its refs are unknown,
 *   -1  fn returned -1.
 * Never reads outside p[0..n). */
int chkpt_pickle_refs(const unsigned char *p, size_t n,
                      chkpt_pickle_ref_fn fn, void *arg);

#endif
