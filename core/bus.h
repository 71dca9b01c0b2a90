/* The event bus: engine events (docs/events.md) read back from the durable
 * journal once the writes that caused them committed, for subscribers
 * (script handlers run as jobs, through the runner the job layer
 * registers) and for readers such as the SSE streams.
 *
 * Journal ids follow commit order (store.h), so a position in the journal
 * is one number: everything up to it has been seen. Every reader keeps its
 * own; readers close to the head share one window of recent events in
 * memory (the tail), readers further behind read from the store, a page
 * at a time, as they have room. A burst of events never grows memory
 * without bound.
 *
 * Subscribers keep a durable cursor ("every event <= N is done"), written
 * as system writes a second at a time, not per event. Per subscriber, the
 * events of one conversation are handled one at a time in id order;
 * different conversations run at once up to events.concurrency. A failing
 * handler is retried with backoff and in the end logged as dead; the
 * cursor then moves past it. Delivery is at-least-once: events handled
 * after the last cursor write are handled again after a crash. */
#ifndef SB_BUS_H
#define SB_BUS_H

#include <stddef.h>
#include <stdint.h>

struct sb_txn;

/* One event as handlers and readers see it. Shared (counted) between the
 * tail, subscribers' windows and readers. */
struct sb_bus_event {
    int64_t id;
    char *name;              /* "message.created", ... */
    char *conversation;      /* "" for an event without a conversation */
    char *channel;           /* the conversation's channel, NULL when unknown */
    double at;               /* when it was journaled (Unix seconds) */
    int depth;               /* handler generations that led to it */
    char *data;              /* JSON object */
    char *json;              /* {"id":...,"name":...,"conversation":...,"at":...,"data":...} */
    size_t json_len;
    int refs;
};

void sb_bus_event_ref(struct sb_bus_event *ev);
void sb_bus_event_unref(struct sb_bus_event *ev);

/* Event names and subscription patterns: an exact name, "prefix.*" (every
 * name starting with "prefix.") or "*". */
extern const char *const sb_bus_names[];
int sb_bus_known_name(const char *name);
/* 0 when pattern is valid, else -1 with the reason in err. */
int sb_bus_check_pattern(const char *pattern, char *err, size_t err_size);
int sb_bus_pattern_match(const char *pattern, const char *name);

/* What a reader outside the engine wants: events matching one of the
 * patterns (none: all), of one conversation (NULL: any) and, when
 * restricted, only of conversations in the listed channels; an event
 * without a conversation then passes only when desk_needle is set and its
 * data has that text (`"desk":"<name>"`: an agent of that desk sees its
 * colleagues' status changes, not other desks'). */
struct sb_bus_filter {
    char **patterns;
    int npatterns;
    char *conversation;
    char **channels;
    int nchannels;
    int restricted;
    char *desk_needle;
};
struct sb_bus_filter *sb_bus_filter_new(void);
void sb_bus_filter_add_pattern(struct sb_bus_filter *f, const char *pattern);
void sb_bus_filter_add_channel(struct sb_bus_filter *f, const char *channel);
int sb_bus_filter_match(const struct sb_bus_filter *f, const struct sb_bus_event *ev);
void sb_bus_filter_free(struct sb_bus_filter *f);

/* Journals an engine event without a conversation (agent.status_changed's
 * "agent_status") as part of t: it commits with t's other writes or not at all. */
void sb_bus_journal(struct sb_txn *t, const char *type, const char *data_json);

/* Readers. A reader gets every event with id > after that it wants, in id
 * order, as fast as it has room. */
struct sb_bus_reader;
struct sb_bus_reader_ops {
    int (*room)(void *arg);                                     /* events it can take now */
    int (*wants)(void *arg, const struct sb_bus_event *ev);     /* its filter */
    /* refs the event if it keeps it; returns 0 when it wants no more now */
    int (*take)(void *arg, struct sb_bus_event *ev);
};
struct sb_bus_reader *sb_bus_reader_new(int64_t after, const struct sb_bus_reader_ops *ops, void *arg);
/* It has room again: looked at from the loop, soon. */
void sb_bus_reader_kick(struct sb_bus_reader *r);
/* Every event <= the result has been taken or was not wanted. */
int64_t sb_bus_reader_position(const struct sb_bus_reader *r);
/* Stops it; no callback runs after this returns. */
void sb_bus_reader_free(struct sb_bus_reader *r);

/* The newest journal id given out: a reader starting there gets what
 * commits from now on. */
int64_t sb_bus_head(void);

/* Subscribers. A load declares its subscriptions (sb_bus_declare, at the
 * top level of scripts; txn is the load's transaction, which records the
 * starting cursor of one seen for the first time); they take effect when
 * the load is swapped in and replace the previous load's. A subscriber a
 * load no longer declares keeps its cursor for events.keep_cursors
 * seconds. */
void sb_bus_declare(struct sb_txn *load_txn, unsigned gen, const char *id, const char *pattern);
void sb_bus_commit_load(unsigned gen);
void sb_bus_discard_load(unsigned gen);

/* The job layer runs handlers: run(a, d) starts a job that reports with
 * sb_bus_handled (it ended well; seq is the batch its writes joined, 0 if
 * none) or sb_bus_failed. */
struct sb_bus_attempt;
struct sb_bus_dispatch {
    const char *subscriber;
    const struct sb_bus_event *event;
    int attempt;                 /* 1 for the first */
};
typedef void (*sb_bus_run_fn)(struct sb_bus_attempt *a, const struct sb_bus_dispatch *d);
void sb_bus_set_runner(sb_bus_run_fn fn);
void sb_bus_handled(struct sb_bus_attempt *a, uint64_t seq);
void sb_bus_failed(struct sb_bus_attempt *a, const char *reason);

struct sb_bus_settings {
    int concurrency;             /* handler jobs at once, all subscribers together */
    int max_attempts;            /* of one event, before it is dead */
    double retry_max;            /* seconds between two attempts, at most */
    double keep_cursors;         /* seconds a subscriber no load declares keeps its cursor */
};
void sb_bus_configure(const struct sb_bus_settings *s);
/* Start-up, before the store thread runs: the stored cursors. */
int sb_bus_load(void);
/* Handlers start running (once a runtime exists). */
void sb_bus_start(void);
/* Graceful stop: no new handler jobs; cursors are written now. */
void sb_bus_pause(void);
/* Forgets cursors of subscribers gone for longer than keep_cursors (periodic). */
void sb_bus_sweep(void);
void sb_bus_free_all(void);

#endif
