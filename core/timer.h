/* Timers owned by the core, independent of any runtime. A timer names its
 * handler, which runs (as a job, through the runner the job layer
 * registers) on the runtime current when it fires, and keeps its data as
 * JSON.
 *
 * Kinds:
 * - created by a job: part of the job's transaction (armed when it ends,
 *   never if it fails), kept in the store, restored at start;
 * - created by the top level of a script: belong to that load, armed when
 *   the load is swapped in and dropped when a later load replaces them. A
 *   repeating one keeps its schedule across reloads and restarts: the next
 *   firing is remembered by a key (handler, interval or calendar, data).
 *
 * A repeating timer fires every `interval` seconds or on a calendar
 * (schedule.h). A one-shot timer is removed only when its handler
 * succeeded, in the handler's own transaction; when the handler fails it
 * fires again after a backoff (at-least-once). Ids are never reused. */
#ifndef SB_TIMER_H
#define SB_TIMER_H

#include <stddef.h>
#include <stdint.h>

struct sb_txn;
struct sb_schedule;

struct sb_timer_new {
    double delay;                     /* one-shot: seconds from now */
    double interval;                  /* > 0: repeating every interval seconds */
    const struct sb_schedule *calendar; /* repeating on a calendar (delay, interval ignored) */
    const char *handler;
    const char *data_json;            /* may be NULL */
};

/* By a job (t) or, with t NULL, by the load of generation load_gen.
 * Returns the id. */
uint64_t sb_timer_create(struct sb_txn *t, unsigned load_gen, const struct sb_timer_new *n);
/* When the timer fires next (wall clock), or -1 when there is no such timer. */
double sb_timer_next_due(uint64_t id);
/* Cancels as part of t; returns 1 if the timer exists. */
int sb_timer_cancel(struct sb_txn *t, uint64_t id);

/* The job layer runs handlers: run(id, handler, data_json) starts a job
 * that then reports with sb_timer_ran (before its transaction ends) or
 * sb_timer_failed (after it was aborted). */
typedef void (*sb_timer_run_fn)(uint64_t id, const char *handler, const char *data_json);
void sb_timer_set_runner(sb_timer_run_fn fn);
void sb_timer_ran(uint64_t id, struct sb_txn *t);
void sb_timer_failed(uint64_t id, const char *reason);

/* Arms the timers of generation gen (repeating ones keep the schedule of
 * the same timer in the previous generation, or the one stored) and drops
 * load timers of other generations. */
void sb_timers_commit_load(unsigned gen);
/* Drops the timers a failed load created. */
void sb_timers_discard_load(unsigned gen);
/* Stops firing (shutdown); the timers stay listed. */
void sb_timers_pause(void);
void sb_timers_free_all(void);
size_t sb_timers_pending(void);
/* Restores job-created timers and load-time schedules from the store (start-up). */
int sb_timers_load(void);
/* Longest delay between two attempts of a failing one-shot (seconds). */
void sb_timers_configure(double retry_max);

#endif
