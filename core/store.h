/* The durable store behind a small interface. Writes are semantic
 * operations (insert a message, update an outbox entry, ...) with positional
 * values; they collect in an open batch that is committed as one
 * transaction (group commit). Reads return JSON text. The SQLite backend
 * (store_sqlite.c) runs every statement on its own thread, so the event
 * loop never waits for the disk.
 *
 * Durability contract: store_submit returns the batch number the write
 * joined; store_when_committed(seq, ...) calls back on the loop thread once
 * that batch is durable under the configured sync mode. */
#ifndef SB_STORE_H
#define SB_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum store_sync { STORE_SYNC_FULL, STORE_SYNC_NORMAL, STORE_SYNC_OFF };

enum store_op_type {
    /* id, channel, client_id, state, desk, grp, agent, status, tags, profile, data, last_seq, created, updated */
    STORE_CONV_UPSERT,
    /* conversation_id, seq, id, author_kind, author_name, author_id, text, attachments, buttons, provider_ids, created */
    STORE_MSG_INSERT,
    /* id, provider_ids */
    STORE_MSG_SET_PROVIDER_IDS,
    /* id, conversation_id, type, data, created */
    STORE_EVENT_INSERT,
    /* channel, key, conversation_id, message_id, created */
    STORE_IDEMP_INSERT,
    /* id, conversation_id, lane, kind, target, method, url, headers, body, data, on_result, idem_key,
     * state, attempts, next_attempt, created */
    STORE_OUTBOX_INSERT,
    /* id, state, attempts, next_attempt, last_error, finished */
    STORE_OUTBOX_UPDATE,
    /* key, value, expires */
    STORE_KV_PUT,
    /* key */
    STORE_KV_DELETE,
    /* id, due, interval, handler, data */
    STORE_TIMER_PUT,
    /* id */
    STORE_TIMER_DELETE,
    STORE_OP_COUNT
};

enum store_read_type {
    STORE_READ_CONVERSATION,   /* id, message count -> {"conversation":{...,"messages":[...]}} or null */
    STORE_READ_CONVERSATIONS,  /* state|null, channel|null, limit, cursor|null -> {"conversations":[...],"next_cursor":...} */
    STORE_READ_MESSAGES,       /* conversation id, limit, cursor|null -> {"messages":[...],"next_cursor":...} */
    STORE_READ_EVENTS,         /* conversation id, limit, cursor|null -> {"events":[...],"next_cursor":...} */
    STORE_READ_OUTBOX_DEAD,    /* limit, cursor|null -> {"dead":[...],"next_cursor":...} */
    STORE_READ_OUTBOX_ENTRY,   /* id -> the full entry or null */
    STORE_READ_COUNT
};

#define STORE_MAX_VALUES 16

struct store_value {
    enum { SV_NULL, SV_INT, SV_REAL, SV_TEXT } type;
    int64_t i;
    double d;
    char *s;      /* owned copy */
    size_t len;
};

struct store_op {
    int type;     /* enum store_op_type or enum store_read_type */
    int n;
    struct store_value v[STORE_MAX_VALUES];
    struct store_op *next;
};

/* Builders: values are appended in the order the operation lists them. */
struct store_op *store_op_new(int type);
void store_op_null(struct store_op *op);
void store_op_int(struct store_op *op, int64_t i);
void store_op_real(struct store_op *op, double d);
void store_op_text(struct store_op *op, const char *s, size_t len);  /* s may be NULL: null */
void store_op_str(struct store_op *op, const char *s);               /* NUL-terminated or NULL */
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
/* The open batch's number, opening one if needed (for a write that will be
 * added by the flush hook). */
uint64_t store_reserve(void);
/* Queues a write (taking ownership of op); returns its batch number. */
uint64_t store_submit(struct store_op *op);
/* The batch writes join now (0 when the store is not open). */
uint64_t store_pending_seq(void);
uint64_t store_committed_seq(void);
typedef void (*store_commit_fn)(void *arg, int ok);
/* Calls fn(arg, ok) once batch seq is committed (at once if it is). */
void store_when_committed(uint64_t seq, store_commit_fn fn, void *arg);

/* 1 once store_start ran (reads are possible). */
int store_running(void);
/* Runs a read after every write queued before it; fn gets JSON text (or
 * NULL and an error message) on the loop thread. Takes ownership of op. */
typedef void (*store_read_fn)(void *arg, const char *json, size_t len, const char *error);
void store_read(struct store_op *op, store_read_fn fn, void *arg);

/* Start-up loading, before store_start, on the calling thread. The row
 * callbacks get the columns named in each function's comment. */
struct store_row {
    int n;
    const char *const *text;   /* column values as text (NULL for SQL NULL) */
    const double *num;         /* column values as numbers */
};
typedef void (*store_row_fn)(void *arg, const struct store_row *row);
/* id, channel, client_id, state, desk, grp, agent, status, tags, profile, data, last_seq, created, updated */
int store_load_conversations(store_row_fn fn, void *arg);
/* conversation_id, seq, id, author_kind, author_name, author_id, text, attachments, buttons,
 * provider_ids, created -- the last `per_conversation` messages of each conversation not closed */
int store_load_recent_messages(int per_conversation, store_row_fn fn, void *arg);
/* id, conversation_id, lane, kind, target, method, url, headers, body, data, on_result, idem_key,
 * state, attempts, next_attempt, created -- entries still pending */
int store_load_outbox_pending(store_row_fn fn, void *arg);
/* channel, key, conversation_id, message_id, created -- keys newer than since */
int store_load_idempotency(double since, store_row_fn fn, void *arg);
/* key, value, expires */
int store_load_kv(store_row_fn fn, void *arg);
/* id, due, interval, handler, data */
int store_load_timers(store_row_fn fn, void *arg);
/* Largest ids in use, so new ones never collide after a restart. */
int64_t store_max_id(const char *table);

/* Counters for /metrics. */
struct store_stats {
    uint64_t batches;
    uint64_t writes;
    uint64_t reads;
    uint64_t failures;
};
const struct store_stats *store_stats(void);

#endif
