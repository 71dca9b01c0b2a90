/* Inside the outbox: what outbox.c (lanes, the drain, attempts, outcomes),
 * outbox_entry.c (adding and requeueing entries, reading them back,
 * secrets of a call) and outbox_response.c (what a failed response says)
 * share. Not for other modules: they use outbox.h. */
#ifndef SB_OUTBOX_INT_H
#define SB_OUTBOX_INT_H

#include <stddef.h>
#include <stdint.h>

#include "outbox.h"

#define LANE_WINDOW 32            /* entries of one lane kept in memory */

struct sb_http_call;
struct event;

struct ob_lane;
struct addition;

struct ob_entry {
    int64_t id;
    char *conversation_id, *kind, *target, *method, *url, *headers, *body, *data, *on_result, *idem_key;
    char *hints;                  /* declared by the adapter (outbox.h), or NULL */
    size_t body_len;
    int attempts;
    double next_attempt, created;
    uint64_t commit_seq;          /* the batch its insert joined: never attempted before that commits */
    int requeued;                 /* in the set of requeued dead letters */
    struct addition *added_by;    /* the addition that may still take it back (batch failure) */
    struct ob_lane *lane;
    struct ob_entry *prev, *next;
    struct sb_http_call *call;    /* http attempt in flight */
    int running;                  /* a handler job runs for it */
    int refilled;                 /* read back from the store by a lane's refill */
};

struct ob_lane {
    char *name;
    struct ob_entry *head, *tail;
    int nmem;                     /* entries in memory */
    int more;                     /* the store holds pending entries of this lane not in memory */
    int refilling;                /* a fetch of the next window is on its way */
    int added_while_refilling;
    int busy;                     /* an entry of it is being attempted */
    int waiting_commit;
    int queued;                   /* in the ready list, waiting for a delivery slot */
    int kick_queued;              /* in the ob_kick list */
    int uncommitted;              /* delivered entries whose mark has not committed yet */
    uint64_t refill_seq;          /* the batch a refill read after: its entries wait for it */
    struct event *timer;
    struct ob_lane *next_ready, *next_kick;
};

void ob_count_handlers(const char *kind, const char *target, const char *on_result, long delta);

struct addition {
    struct ob_entry *entry;
    char *lane;
    char *job_handler, *result_handler;   /* counted in handler_use.c from its end to its undo */
    int in_memory;                /* after end: in its lane (else only in the store) */
};


extern struct sb_outbox_settings ob_settings;
extern struct sb_outbox_counters ob_counters;
extern void *ob_requeued_ids;     /* tsearch of int64_t ids of dead letters sent again */
extern int64_t ob_next_id;
extern sb_outbox_secret_fn ob_resolve_secret;

int ob_cmp_id(const void *a, const void *b);
void ob_entry_free(struct ob_entry *e);
struct ob_entry *ob_entry_from_row(const struct store_row *r);
struct ob_lane *ob_lane_get(const char *name);
void ob_lane_insert(struct ob_lane *lane, struct ob_entry *e, int at_head);
void ob_lane_remove(struct ob_entry *e);
/* The lane is looked at from the loop's drain, soon. */
void ob_kick(struct ob_lane *lane);
/* Ends the current attempt on e's lane. */
void ob_attempt_over(struct ob_entry *e);
void ob_register_metrics(void);

#endif
