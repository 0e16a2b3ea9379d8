/* cost.h: what snapshots cost, and how often -f auto may take them
 * (cost.c).
 *
 * -f auto (the default) takes an automatic snapshot as often as the
 * children that write them stay within a budget: their CPU time, and their
 * disk time (the bytes they write over the disk's bandwidth as they saw it,
 * or the time they were blocked syncing if longer), each at most
 * CHKPT_AUTO_BUDGET of the run's wall time. The writer (child.c) measures
 * every child it reaps and hands the figures here; the hooks (hooks.c) ask
 * when the next automatic snapshot fits.
 *
 * The next snapshot's cost is predicted from the last one's, scaled by the
 * growth of the script's private memory since it started (a state that
 * grows costs more to write); before any child was measured, from that
 * memory and the guesses below. The next snapshot may start once both
 *   its predicted cost <= BUDGET x the time since the last one started, and
 *   everything spent so far plus its predicted cost <= BUDGET x the run's
 *   time so far,
 * so that a burst after a quiet spell is not allowed, and a first snapshot
 * that cost more than guessed is paid back by waiting longer.
 *
 * Also here: --keep-auto, the script's newest automatic snapshots kept in
 * the store (run in the writer child, after it published its snapshot).
 */
#ifndef CHKPT_COST_H
#define CHKPT_COST_H

#include "chkpt.h"
#include <stdint.h>

/* The share of the run's wall time the children may spend, in CPU time and
 * in disk time each. */
#define CHKPT_AUTO_BUDGET 0.05
/* At most one automatic snapshot a second: more often saves little work
 * and each snapshot writes its metadata and syncs the store. */
#define CHKPT_AUTO_MIN_INTERVAL 1.0
/* Before the first child was measured: CPU seconds per GiB of the script's
 * private memory (pickling, hashing and copying into the page cache; this
 * 2-core machine measured 2 s for 1 GiB of numpy arrays, a faster one half
 * that), and the disk's bandwidth (a SATA SSD's or a cloud volume's). */
#define CHKPT_AUTO_GUESS_CPU_PER_GIB 1.0
#define CHKPT_AUTO_GUESS_BANDWIDTH (250.0 * 1000 * 1000)
/* A child that wrote at least this much tells the disk's bandwidth. */
#define CHKPT_AUTO_BANDWIDTH_SAMPLE (16u << 20)

typedef struct {
    double since;               /* monotonic start of the run, 0 unknown */
    double cpu;                 /* seconds, every child measured */
    double io;                  /* seconds of disk time, same */
    double bandwidth;           /* bytes/s the disk was seen at, 0 none */
    uint64_t bytes;             /* written by them */
    unsigned long n;            /* children measured */
    double last_start;          /* monotonic start of the last one, 0 none */
    double last_cpu, last_io;   /* its costs */
    long long last_rss;         /* the script's private memory as it started */
} chkpt_cost;

/* The script's private (anonymous) resident memory in bytes, -1 unknown. */
long long chkpt_cost_private_memory(void);

/* A child ended: started (monotonic), rss (private memory then), cpu (its
 * CPU seconds plus the script's pause to create it), wall (its lifetime),
 * ready (of which it waited for a CPU: a loaded machine is not a slow
 * disk), bytes (it wrote). */
void chkpt_cost_account(chkpt_cost *b, double started, long long rss,
                          double cpu, double wall, double ready,
                          uint64_t bytes);

/* Monotonic time from which the next automatic snapshot fits the budget
 * (run_start: when the run began). No child may be in flight. */
double chkpt_cost_next_auto(chkpt_cost *b, double run_start);

/* One `chkpt:` line saying what the children cost (-v, at exit). */
void chkpt_cost_report(const chkpt_cost *b);

/* In a writer child, after it published path (an automatic snapshot):
 * deletes the script's automatic snapshots older than its newest keep
 * (manual, crash and signal snapshots and other scripts' stay), then the
 * data no remaining snapshot uses. Returns how many were deleted, -1 on a
 * failure (said in one `chkpt:` line). GIL held. */
int chkpt_keep_auto_prune(CheckpointObject *ck, long keep);

/* --keep-auto's value for ck: given, or the default for its frequency. */
long chkpt_keep_auto_value(const CheckpointObject *ck);

/* --max-store-size never removes a crash or signal snapshot: the manifest
 * paths of those in the store at dir, to pin (chkpt_store_gc_budget), in
 * *pinned (free with chkpt_free_list) and *npinned. 0, or -1 when the
 * store cannot be listed. GIL held. */
int chkpt_budget_pinned(CheckpointObject *ck, const char *dir, char ***pinned,
                        size_t *npinned);


#endif
