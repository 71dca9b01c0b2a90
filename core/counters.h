/* Counters that scripts name (metrics.count): families of series keyed by
 * labels, rendered on /metrics. A count is made at once, outside any
 * transaction, because it records that something happened (a platform API
 * error) even when the job then fails. The registry is the core's, not a
 * runtime's: series survive reloads and start from zero at each start.
 * Knows nothing of Lua; bind_metrics.c is the binding. */
#ifndef SB_COUNTERS_H
#define SB_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define SB_COUNTER_NAME_MAX 100        /* bytes of a family name */
#define SB_COUNTER_LABELS_MAX 8        /* labels of one series */
#define SB_COUNTER_LABEL_NAME_MAX 100  /* bytes of a label name */
#define SB_COUNTER_VALUE_MAX 128       /* bytes of a label value */

struct sb_counter_label {
    const char *name;    /* NUL-terminated */
    const char *value;   /* value_len bytes, no NUL inside; UTF-8 (the caller checks) */
    size_t value_len;
};

/* Why a family name or a label is refused (a phrase to follow the name in
 * an error), or NULL when it is fine. */
const char *sb_counter_name_problem(const char *name, size_t len);
const char *sb_counter_label_problem(const struct sb_counter_label *label);

/* Outcomes of sb_counter_add:
 *   SB_COUNTER_COUNTED  the series (created if new) grew by n;
 *   SB_COUNTER_FULL     the series is new and max_series series exist in all:
 *                       nothing counted; the first refusal of a family logs a
 *                       warning naming it;
 *   SB_COUNTER_INVALID  a name or label the problem checks refuse, too many
 *                       labels, a label named twice, or n == 0: nothing counted. */
enum sb_counter_outcome { SB_COUNTER_COUNTED, SB_COUNTER_FULL, SB_COUNTER_INVALID };

/* Adds n to the series of family `name` with these labels (in any order:
 * a series is the same whatever order its labels come in). A value that
 * would pass 2^64-1 stays there. */
enum sb_counter_outcome sb_counter_add(const char *name, const struct sb_counter_label *labels, size_t nlabels,
                                       uint64_t n, size_t max_series);

/* Series in all (every family). */
size_t sb_counters_series(void);
/* Families by name, each with its series in the order of their labels
 * (sorted by label name, then by value): the same order at every scrape. */
void sb_counters_render(struct evbuffer *out);
/* Forgets every family and series (exit, tests). */
void sb_counters_free_all(void);

#endif
