/* timer.c: the engine's one timer facility (timer.h): a timer thread that
 * acts at the times its owner gives, and a kernel timer that sends a
 * signal. Calls the clock (helpers.h) only. */
#include "chkpt.h"
#include "timer.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* the timer thread                                                     */

void
chkpt_timer_init(chkpt_timer *t, chkpt_timer_next_fn next,
                 chkpt_timer_fire_fn fire, void *arg)
{
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mutex, NULL);
    pthread_cond_init(&t->cond, NULL);
    t->next = next;
    t->fire = fire;
    t->arg = arg;
}

void
chkpt_timer_destroy(chkpt_timer *t)
{
    pthread_mutex_destroy(&t->mutex);
    pthread_cond_destroy(&t->cond);
}

void
chkpt_timer_lock(chkpt_timer *t)
{
    pthread_mutex_lock(&t->mutex);
}

void
chkpt_timer_unlock(chkpt_timer *t)
{
    pthread_mutex_unlock(&t->mutex);
}

void
chkpt_timer_wake(chkpt_timer *t)
{
    pthread_cond_signal(&t->cond);
}

/* Waits on the condition until the monotonic time `until` at most (the
 * condition's clock is the realtime one, python's too). */
static void
wait_until(chkpt_timer *t, double now, double until)
{
    double wait_s = until - now;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)wait_s;
    ts.tv_nsec += (long)((wait_s - (double)(time_t)wait_s) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&t->cond, &t->mutex, &ts);
}

static void *
timer_main(void *arg)
{
    chkpt_timer *t = (chkpt_timer *)arg;
    pthread_mutex_lock(&t->mutex);
    t->tid = (pid_t)syscall(SYS_gettid);
    while (!t->stop) {
        double now = chkpt_monotonic();
        double wake = t->next(t->arg, now);
        if (t->stop) {
            break;
        }
        if (wake == 0) {
            pthread_cond_wait(&t->cond, &t->mutex);
        }
        else if (now < wake) {
            wait_until(t, now, wake);
        }
        else {
            t->fire(t->arg, now);
        }
        /* then everything is asked again */
    }
    pthread_mutex_unlock(&t->mutex);
    return NULL;
}

int
chkpt_timer_start(chkpt_timer *t)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    t->stop = 0;                /* no timer thread runs: no lock needed */
    int rc = pthread_create(&t->thread, NULL, timer_main, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        return -1;
    }
    t->started = 1;
    return 0;
}

/* pthread_join returns as soon as the thread's stack is free; the kernel
 * still counts the thread (in /proc/self/stat, which os.fork() reads) for a
 * few microseconds more, until it is reaped. Waits for that, 100 ms at
 * most; without /proc there is nothing to wait for. GIL released. */
static void
wait_thread_reaped(pid_t tid)
{
    if (tid <= 0) {
        return;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%ld", (long)tid);
    struct stat st;
    struct timespec pause = {0, 10000};
    double give_up = chkpt_monotonic() + 0.1;
    while (stat(path, &st) == 0 && chkpt_monotonic() < give_up) {
        nanosleep(&pause, NULL);
        if (pause.tv_nsec < 1000000L) {
            pause.tv_nsec *= 2;
        }
    }
}

/* Bounded: the thread waits on nothing but the lock, the condition and
 * what its owner's fire waits for (the GIL, released meanwhile). */
void
chkpt_timer_stop(chkpt_timer *t, int until_reaped)
{
    if (!t->started) {
        return;
    }
    pthread_mutex_lock(&t->mutex);
    t->stop = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->mutex);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(t->thread, NULL);
    if (until_reaped) {
        wait_thread_reaped(t->tid);
    }
    Py_END_ALLOW_THREADS
    t->started = 0;
}

/* ------------------------------------------------------------------ */
/* the kernel timer                                                     */

int
chkpt_ktimer_create(chkpt_ktimer *t, int signo)
{
    struct sigevent ev;
    memset(&ev, 0, sizeof(ev));
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = signo;
    t->ok = timer_create(CLOCK_MONOTONIC, &ev, &t->id) == 0;
    return t->ok ? 0 : -1;
}

void
chkpt_ktimer_arm(chkpt_ktimer *t, double seconds)
{
    if (!t->ok) {
        return;
    }
    struct itimerspec its;
    memset(&its, 0, sizeof(its));
    if (seconds > 0) {
        its.it_value.tv_sec = (time_t)seconds;
        its.it_value.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9);
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) {
            its.it_value.tv_nsec = 1;       /* 0 would disarm it */
        }
    }
    timer_settime(t->id, 0, &its, NULL);
}

int
chkpt_ktimer_armed(chkpt_ktimer *t)
{
    struct itimerspec old;
    return t->ok && timer_gettime(t->id, &old) == 0
           && (old.it_value.tv_sec != 0 || old.it_value.tv_nsec != 0);
}

void
chkpt_ktimer_delete(chkpt_ktimer *t)
{
    if (t->ok) {
        timer_delete(t->id);
        t->ok = 0;
    }
}
