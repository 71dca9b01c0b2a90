/* Timers owned by the core, independent of any runtime: a timer names its
 * handler, which is looked up in the runtime current when it fires, and
 * keeps its data as JSON. Timers created by the top level of a script
 * belong to that load: they are armed only when the load is swapped in and
 * dropped when a later load replaces it, so a reload never duplicates them.
 * Timers created by handlers survive reloads. */
#ifndef SB_TIMER_H
#define SB_TIMER_H

#include <stddef.h>
#include <stdint.h>

/* Creates a timer; load_generation 0 means "created by a job". data_json
 * may be NULL. Returns the id. */
uint64_t sb_timer_create(double delay, int repeat, const char *handler, const char *data_json,
                         unsigned load_generation);
int sb_timer_cancel(uint64_t id);

/* Arms the timers of generation gen and drops load timers of other ones. */
void sb_timers_commit_load(unsigned gen);
/* Drops the timers a failed load created. */
void sb_timers_discard_load(unsigned gen);
/* Stops firing (shutdown); the timers stay listed. */
void sb_timers_pause(void);
void sb_timers_free_all(void);
size_t sb_timers_pending(void);
/* Restores handler-created timers from the store (start-up). */
int sb_timers_load(void);

#endif
