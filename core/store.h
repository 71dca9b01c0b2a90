/* The durable store behind a small interface that speaks in the model's
 * terms: conversations, messages, events, idempotency keys, outbox entries,
 * key/value state, timers and schedules. The SQLite backend
 * (store_sqlite.c) runs every statement on its own thread, so the event
 * loop never waits for the disk.
 *
 * Writes are built as operations (store_put_conversation, ...) and queued
 * either as part of a job's transaction (txn.c hands them over in one
 * piece when the job ends: store_submit) or as system writes
 * (store_submit_system: bookkeeping of the engine itself, such as an
 * outbox delivery's outcome). Queued writes collect in the open batch,
 * which is committed as one SQLite transaction (group commit).
 *
 * Durability contract: store_submit returns the batch number the writes
 * joined; store_when_committed(seq, ...) calls back on the loop thread once
 * that batch is durable under the configured sync mode, or failed.
 *
 * Failure contract: when a batch fails, every batch after it that already
 * left for the store thread fails too (nothing that may depend on the
 * failed writes is committed) until the loop calls store_recover(); the
 * batch hook (store_set_batch_hook) learns each outcome in order, so the
 * layer above can roll memory back. System writes of a failed batch are
 * queued again; transaction writes are dropped. */
#ifndef SB_STORE_H
#define SB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum store_sync { STORE_SYNC_FULL, STORE_SYNC_NORMAL, STORE_SYNC_OFF };

struct store_op;

/* Records, as the model knows them. Strings may be NULL (absent) unless
 * said otherwise; JSON fields hold JSON text. */
struct store_conversation {
    const char *id, *channel, *client_id;   /* required */
    const char *state;                       /* bot | queued | agent | closed */
    const char *desk, *group, *agent, *status;
    const char *tags;                        /* JSON array */
    const char *profile, *data;              /* JSON objects */
    int64_t last_seq;
    double created, updated;
};

struct store_message {
    const char *conversation_id, *id;
    int64_t seq;
    const char *author_kind, *author_name, *author_id;
    const char *text;
    size_t text_len;
    const char *attachments, *buttons, *provider_ids;   /* JSON */
    double created;
};

struct store_outbox_entry {
    int64_t id;
    const char *conversation_id, *lane, *kind, *target, *method, *url, *headers;
    const char *body;
    size_t body_len;                          /* bodies may hold any byte */
    const char *data, *on_result, *idem_key;
    int attempts;
    double next_attempt, created;
    const char *hints;                        /* what the adapter declared about failed responses, or NULL */
};

struct store_timer {
    int64_t id;
    double due, interval;                     /* interval 0: one-shot (or calendar) */
    const char *handler, *data, *calendar;    /* calendar: canonical schedule text or NULL */
    int attempts;                             /* failed runs of a one-shot so far */
};

/* Write operations. Each returns a new operation for store_submit,
 * store_submit_system or a transaction. */
struct store_op *store_put_conversation(const struct store_conversation *c);
struct store_op *store_insert_message(const struct store_message *m);
struct store_op *store_set_message_provider_ids(const char *message_id, const char *json);
/* A journal event. Its id is given when the write joins a batch, so ids
 * follow commit order: a read that returns event N saw every event below N
 * that will ever commit. conversation_id "" for engine events without a
 * conversation; depth: handler generations that led to it. */
struct store_op *store_insert_event(const char *conversation_id, const char *type, const char *data, double created,
                                    int depth);
struct store_op *store_insert_key(const char *conversation_id, const char *key, const char *message_id, double created);
struct store_op *store_insert_outbox(const struct store_outbox_entry *e);
/* state: pending | delivered | dead. created > 0 replaces the entry's
 * creation time (a requeued dead letter starts a new life). */
struct store_op *store_update_outbox(int64_t id, const char *state, int attempts, double next_attempt,
                                     const char *last_error, double finished, double created);
struct store_op *store_delete_outbox(int64_t id);
struct store_op *store_put_kv(const char *key, const char *json, size_t len, double expires);
struct store_op *store_delete_kv(const char *key);
struct store_op *store_put_timer(const struct store_timer *t);
struct store_op *store_delete_timer(int64_t id);
/* The next firing of a script's load-time schedule, by its key. */
struct store_op *store_put_schedule(const char *key, double next_due);
struct store_op *store_delete_schedule(const char *key);
/* A subscriber's position in the journal (every event <= cursor is done);
 * seen: when a load last declared it. Never moves a stored cursor back. */
struct store_op *store_put_cursor(const char *subscriber, int64_t cursor, double seen);
struct store_op *store_delete_cursor(const char *subscriber);
/* Retention: each deletes at most `limit` rows older than `before`
 * (finished outbox entries by their end, keys by their creation, closed
 * conversations with their messages, events and keys by their last change). */
struct store_op *store_prune_outbox(const char *state, double before, int limit);
struct store_op *store_prune_keys(double before, int limit);
struct store_op *store_prune_conversations(double before, int limit);
void store_op_free(struct store_op *op);

int store_open(const char *data_dir, enum store_sync sync, struct sb_error *err);
/* Starts the store thread; from then on only the loop thread submits. */
int store_start(void);
/* Commits what is pending, stops the thread, closes the database. */
void store_close(void);
int store_parse_sync(const char *name, enum store_sync *out);

/* Called just before the open batch leaves for the store thread, so that
 * writers can add what they coalesced (one row per changed conversation). */
void store_set_flush_hook(void (*hook)(void));
/* Called on the loop thread for every finished batch, in batch order,
 * before its waiters: ok 0 means it was rolled back. */
void store_set_batch_hook(void (*hook)(uint64_t seq, int ok));
/* Queues a write in the open batch (taking ownership); returns its batch. */
uint64_t store_submit(struct store_op *op);
/* The same for the engine's own bookkeeping: queued again if its batch fails. */
uint64_t store_submit_system(struct store_op *op);
/* The open batch's number, opening one if needed. */
uint64_t store_reserve(void);
/* The batch writes join now (the last committed one when none is open). */
uint64_t store_pending_seq(void);
/* The newest batch number given out (open, in flight or finished): a read
 * queued now sees no write of a later batch. */
uint64_t store_last_seq(void);
uint64_t store_committed_seq(void);
typedef void (*store_commit_fn)(void *arg, int ok);
/* Calls fn(arg, ok) once batch seq has finished (at once if it has). */
void store_when_committed(uint64_t seq, store_commit_fn fn, void *arg);
/* After a failed batch: drops the open batch (its waiters are told it
 * failed; its system writes move to a new batch) and lets the store thread
 * commit again once the batches already sent have failed. Returns the last
 * batch number that fails with it. */
uint64_t store_recover(void);

/* 1 once store_start ran (reads are possible). */
int store_running(void);

/* The newest journal event id given out (its batch may not have committed). */
int64_t store_last_event_id(void);
/* The newest journal event id in a batch already sent to the store thread:
 * a read queued now runs after that batch committed (or failed). */
int64_t store_sent_event_id(void);
/* Called on the loop thread when a batch holding journal events committed,
 * with the newest id it held. */
void store_set_events_hook(void (*hook)(int64_t last_id));

/* Reads for the API: each answer is one JSON text, built by the store,
 * in the shapes docs/conversations.md documents for the read API. Cursors
 * are opaque decimal strings. */
enum store_page {
    STORE_PAGE_CONVERSATION,   /* id, messages -> {"conversation":{..., "messages":[...]}} or null */
    STORE_PAGE_CONVERSATIONS,  /* filters, order, limit, cursor -> {"conversations":[...],"next_cursor":...} */
    STORE_PAGE_MESSAGES,       /* id, limit, cursor -> {"messages":[...],"next_cursor":...} */
    STORE_PAGE_EVENTS,         /* id, limit, cursor -> {"events":[...],"next_cursor":...} */
    STORE_PAGE_OUTBOX_DEAD,    /* limit, cursor -> {"dead":[...],"next_cursor":...} */
    STORE_PAGE_OUTBOX_ENTRY,   /* entry_id -> the entry (id, lane, kind, target, method, url, state, attempts, created, reason, died_at) or null */
    STORE_PAGE_CONVERSATION_COUNTS, /* filters (desk required), by -> {"<value>": count, ...} */
    STORE_PAGE_COUNT
};
/* The most values a filter of conversations may list (an IN). */
#define STORE_MAX_STATES 4
#define STORE_MAX_STATUSES 8
#define STORE_MAX_CHANNELS 64
/* The column conversations are counted by. */
enum store_count_by { STORE_BY_NONE, STORE_BY_AGENT, STORE_BY_GROUP, STORE_BY_STATUS };
struct store_page_query {
    const char *id, *cursor;   /* NULL: not given */
    /* Filters of conversations, all ANDed; NULL or 0 values: not given. */
    const char *desk, *group, *agent;
    int no_agent;              /* only conversations without an agent */
    const char *state[STORE_MAX_STATES];
    const char *status[STORE_MAX_STATUSES];
    const char *channel[STORE_MAX_CHANNELS];
    int nstate, nstatus, nchannel;
    int oldest_first;          /* conversations: oldest first (the default is newest first) */
    enum store_count_by by;
    int limit, messages;
    int64_t entry_id;
};
/* fn gets JSON text (or NULL and an error message) on the loop thread,
 * after every write queued before the read. */
typedef void (*store_read_fn)(void *arg, const char *json, size_t len, const char *error);
void store_read_page(enum store_page page, const struct store_page_query *q, store_read_fn fn, void *arg);

/* Rows fetched for the model (on demand loading), copied for the loop
 * thread. Columns are given as text (NULL for SQL NULL), with lengths and
 * numeric values. */
struct store_row {
    int n;
    const char *const *text;
    const size_t *len;
    const double *num;
};
struct store_rows;
int store_rows_count(const struct store_rows *r);
/* The i-th row; tag says which query of a fetch it came from. */
void store_rows_get(const struct store_rows *r, int i, struct store_row *row, int *tag);
typedef void (*store_fetch_fn)(void *arg, const struct store_rows *rows, const char *error);
/* A conversation by id (client_id NULL) or by channel and client id, with
 * its idempotency keys newer than keys_since. Row tag 0: the conversation
 * (columns as store_load_conversation_row lists); tag 1: keys (key,
 * message_id, created). */
void store_fetch_conversation(const char *id, const char *channel, const char *client_id, double keys_since,
                              store_fetch_fn fn, void *arg);
/* Messages of a conversation with from_seq <= seq <= to_seq, oldest first
 * (columns as store_load_message lists). */
void store_fetch_messages(const char *conversation_id, int64_t from_seq, int64_t to_seq,
                          store_fetch_fn fn, void *arg);
/* The first `limit` pending outbox entries of one lane, oldest first. */
void store_fetch_outbox_lane(const char *lane, int limit, store_fetch_fn fn, void *arg);
/* One outbox entry, whatever its state (columns as below, then state). */
void store_fetch_outbox_entry(int64_t id, store_fetch_fn fn, void *arg);
/* Journal events that are engine events (docs/events.md) with id > after,
 * oldest first, at most limit: id, conversation_id, channel (NULL when the
 * conversation is gone or there is none), depth, created, bus name, data
 * (JSON). It reads what committed: the open batch is not sent ahead of it.
 * A read returning fewer than limit rows saw every event up to
 * store_sent_event_id() as it was when the read was asked for. */
void store_fetch_bus_events(int64_t after, int limit, store_fetch_fn fn, void *arg);
/* The oldest and newest event id the journal holds (0, 0 when empty). */
void store_fetch_event_bounds(store_fetch_fn fn, void *arg);

/* Column orders of the rows above and of the start-up loaders:
 * conversation: id, channel, client_id, state, desk, grp, agent, status,
 *               tags, profile, data, last_seq, created, updated
 * message:      conversation_id, seq, id, author_kind, author_name,
 *               author_id, text, attachments, buttons, provider_ids, created
 * outbox:       id, conversation_id, lane, kind, target, method, url,
 *               headers, body, data, on_result, idem_key, attempts,
 *               next_attempt, created, hints
 * kv:           key, value, expires
 * timer:        id, due, interval, handler, data, calendar, attempts
 * schedule:     key, next_due */
typedef void (*store_row_fn)(void *arg, const struct store_row *row);

/* Start-up loading, before store_start, on the calling thread. */
/* Pending outbox entries: at most per_lane of each lane, in id order;
 * lane_has_more is called for each lane that holds more than that, and
 * pending_total receives how many are pending in all. */
int store_load_outbox_pending(int per_lane, store_row_fn fn, void *arg,
                              void (*lane_has_more)(void *arg, const char *lane), int64_t *pending_total);
int store_load_kv(store_row_fn fn, void *arg);
int store_load_timers(store_row_fn fn, void *arg);
/* Pending outbox entries that name handlers, counted: kind, target, on_result, count. */
int store_load_outbox_handlers(store_row_fn fn, void *arg);
int store_load_schedules(store_row_fn fn, void *arg);
/* Subscribers' cursors: subscriber, cursor, seen. */
int store_load_cursors(store_row_fn fn, void *arg);
/* How many conversations there are, and how many are not closed. */
int store_count_conversations(int64_t *all, int64_t *open);
/* Largest ids in use, so new ones never collide after a restart. */
int64_t store_max_event_id(void);
int64_t store_max_outbox_id(void);
int64_t store_max_timer_id(void);

/* Counters for /metrics. */
struct store_stats {
    uint64_t batches;
    uint64_t writes;
    uint64_t reads;
    uint64_t failures;
};
const struct store_stats *store_stats(void);

#endif
