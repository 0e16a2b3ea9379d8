/* timer.h: the engine's one timer facility (timer.c), for every deadline
 * it keeps: the hooks' periodic tick and -f auto's due time, a capture's
 * time limit, the --signal-deadline watchdog, a snapshot child's limits.
 *
 * Two forms of the same thing, a deadline that acts when it passes:
 *   chkpt_timer    a thread (every signal blocked) that sleeps until the
 *                  earliest time its owner asks for and then calls it; for
 *                  the script's process, where a thread may run.
 *   chkpt_ktimer   a kernel timer (timer_create) that sends a signal: no
 *                  thread (a snapshot child after clone has none), armed
 *                  async-signal-safely (from a signal handler).
 * Calls nothing of the engine's but the clock (helpers.h). */
#ifndef CHKPT_TIMER_H
#define CHKPT_TIMER_H

#include <pthread.h>
#include <signal.h>
#include <sys/types.h>
#include <time.h>

/* ---- the timer thread ---- */

typedef struct chkpt_timer chkpt_timer;
/* Called on the timer thread with the timer's lock held: next gives the
 * monotonic time to act at (0: none; sleep until woken), fire acts once it
 * has come (now: the clock). Both may unlock and lock again meanwhile
 * (chkpt_timer_unlock), then see the state afresh. */
typedef double (*chkpt_timer_next_fn)(void *arg, double now);
typedef void (*chkpt_timer_fire_fn)(void *arg, double now);

struct chkpt_timer {
    pthread_mutex_t mutex;      /* guards the owner's state too */
    pthread_cond_t cond;
    pthread_t thread;
    pid_t tid;                  /* its kernel id (read after the join) */
    int started;                /* owner's thread: a timer thread runs */
    int stop;                   /* under mutex */
    chkpt_timer_next_fn next;
    chkpt_timer_fire_fn fire;
    void *arg;
};

void chkpt_timer_init(chkpt_timer *t, chkpt_timer_next_fn next,
                      chkpt_timer_fire_fn fire, void *arg);
void chkpt_timer_destroy(chkpt_timer *t);
/* Starts the thread with every signal blocked, so that a signal sent to
 * the process goes to a thread of the script as under python, never to
 * it. 0, or -1 when no thread could be created. */
int chkpt_timer_start(chkpt_timer *t);
/* Ends the thread and joins it (GIL held: released meanwhile; the lock
 * not held). until_reaped: also waits (100 ms at most) until the kernel
 * no longer counts it (os.fork() counts the threads). */
void chkpt_timer_stop(chkpt_timer *t, int until_reaped);
void chkpt_timer_lock(chkpt_timer *t);
void chkpt_timer_unlock(chkpt_timer *t);
/* The state next reads changed (lock held): it is asked again. */
void chkpt_timer_wake(chkpt_timer *t);

/* ---- the kernel timer ---- */

typedef struct {
    timer_t id;
    int ok;                     /* created */
} chkpt_ktimer;

/* A timer on CLOCK_MONOTONIC that sends signo to the process: 0, or -1
 * (t->ok stays 0 and arming it does nothing). */
int chkpt_ktimer_create(chkpt_ktimer *t, int signo);
/* Fires seconds from now; seconds <= 0 disarms it. Async-signal-safe. */
void chkpt_ktimer_arm(chkpt_ktimer *t, double seconds);
/* Is it armed (not fired nor disarmed)? Async-signal-safe. */
int chkpt_ktimer_armed(chkpt_ktimer *t);
void chkpt_ktimer_delete(chkpt_ktimer *t);

#endif
