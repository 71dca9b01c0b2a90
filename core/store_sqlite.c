/* SQLite (WAL) backend of the store. One connection, used only by the store
 * thread once it runs (and by the start-up loaders before that). The loop
 * thread hands over work items (a batch of writes, a read, a fetch)
 * through a mutex-protected queue and learns about finished ones through a
 * pipe watched by the event loop.
 *
 * Group commit: writes join the open batch; a batch is handed to the thread
 * as soon as none is in flight, so under load each commit (and each fsync)
 * carries every write that arrived while the previous one was running.
 *
 * After a failed batch the thread fails every later batch until it sees a
 * resume marker (store_recover), so nothing written on top of the failed
 * writes reaches the disk before the loop has rolled its memory back. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"

#define SCHEMA_VERSION 2
#define MAX_VALUES 16
#define MAX_STATEMENTS 4

static const char *const schema_v1 =
    "CREATE TABLE conversations("
    "  rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    "  channel TEXT NOT NULL, client_id TEXT NOT NULL, state TEXT NOT NULL,"
    "  desk TEXT, grp TEXT, agent TEXT, status TEXT NOT NULL,"
    "  tags TEXT NOT NULL DEFAULT '[]', profile TEXT NOT NULL DEFAULT '{}', data TEXT NOT NULL DEFAULT '{}',"
    "  last_seq INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL,"
    "  UNIQUE(channel, client_id));"
    "CREATE INDEX conversations_state ON conversations(state, rowid);"
    "CREATE INDEX conversations_channel ON conversations(channel, rowid);"
    /* rows append in arrival order; only the small index is keyed by conversation */
    "CREATE TABLE messages("
    "  rowid INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL UNIQUE,"
    "  author_kind TEXT NOT NULL, author_name TEXT, author_id TEXT, text TEXT NOT NULL DEFAULT '',"
    "  attachments TEXT NOT NULL DEFAULT '[]', buttons TEXT NOT NULL DEFAULT '[]',"
    "  provider_ids TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);"
    "CREATE UNIQUE INDEX messages_conversation ON messages(conversation_id, seq);"
    "CREATE TABLE events("
    "  id INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL, type TEXT NOT NULL,"
    "  data TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL);"
    "CREATE INDEX events_conversation ON events(conversation_id, id);"
    "CREATE TABLE idempotency("
    "  channel TEXT NOT NULL, key TEXT NOT NULL, conversation_id TEXT NOT NULL,"
    "  message_id TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY(channel, key)) WITHOUT ROWID;"
    "CREATE TABLE outbox("
    "  id INTEGER PRIMARY KEY, conversation_id TEXT, lane TEXT NOT NULL, kind TEXT NOT NULL,"
    "  target TEXT NOT NULL, method TEXT, url TEXT, headers TEXT, body BLOB, data TEXT,"
    "  on_result TEXT, idem_key TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_attempt REAL NOT NULL, created REAL NOT NULL, last_error TEXT, finished REAL);"
    "CREATE INDEX outbox_state ON outbox(state, id);"
    "CREATE TABLE kv(key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL) WITHOUT ROWID;"
    "CREATE TABLE timers(id INTEGER PRIMARY KEY, due REAL NOT NULL, interval REAL NOT NULL,"
    "  handler TEXT NOT NULL, data TEXT);";

/* v2: idempotency keys belong to a conversation (they are loaded with it),
 * lanes of pending outbox entries are read a window at a time, timers know
 * calendars and failed runs, load-time schedules keep their phase. */
static const char *const schema_v2 =
    "CREATE TABLE conversation_keys("
    "  conversation_id TEXT NOT NULL, key TEXT NOT NULL, message_id TEXT NOT NULL, created REAL NOT NULL,"
    "  PRIMARY KEY(conversation_id, key)) WITHOUT ROWID;"
    "CREATE INDEX conversation_keys_created ON conversation_keys(created);"
    "INSERT OR REPLACE INTO conversation_keys SELECT conversation_id, key, message_id, created FROM idempotency;"
    "DROP TABLE idempotency;"
    "CREATE INDEX outbox_lane ON outbox(lane, id) WHERE state = 'pending';"
    "ALTER TABLE timers ADD COLUMN calendar TEXT;"
    "ALTER TABLE timers ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE schedules(key TEXT PRIMARY KEY, next_due REAL NOT NULL) WITHOUT ROWID;";

enum op_type {
    OP_PUT_CONVERSATION,
    OP_INSERT_MESSAGE,
    OP_SET_PROVIDER_IDS,
    OP_INSERT_EVENT,
    OP_INSERT_KEY,
    OP_INSERT_OUTBOX,
    OP_UPDATE_OUTBOX,
    OP_DELETE_OUTBOX,
    OP_PUT_KV,
    OP_DELETE_KV,
    OP_PUT_TIMER,
    OP_DELETE_TIMER,
    OP_PUT_SCHEDULE,
    OP_DELETE_SCHEDULE,
    OP_PRUNE_OUTBOX,
    OP_PRUNE_KEYS,
    OP_PRUNE_CONVERSATIONS,
    OP_COUNT
};

/* Statements of each write, values bound as ?1, ?2, ... in the order the
 * builders below add them. */
static const char *const write_sql[OP_COUNT][MAX_STATEMENTS] = {
    [OP_PUT_CONVERSATION] = {
        "INSERT INTO conversations(id, channel, client_id, state, desk, grp, agent, status, tags, profile,"
        " data, last_seq, created, updated) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
        " ON CONFLICT(id) DO UPDATE SET state=?4, desk=?5, grp=?6, agent=?7, status=?8, tags=?9,"
        " profile=?10, data=?11, last_seq=?12, updated=?14" },
    [OP_INSERT_MESSAGE] = {
        "INSERT INTO messages(conversation_id, seq, id, author_kind, author_name, author_id, text,"
        " attachments, buttons, provider_ids, created) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)" },
    [OP_SET_PROVIDER_IDS] = { "UPDATE messages SET provider_ids=?2 WHERE id=?1" },
    [OP_INSERT_EVENT] = { "INSERT INTO events(id, conversation_id, type, data, created) VALUES(?1,?2,?3,?4,?5)" },
    [OP_INSERT_KEY] = {
        "INSERT OR REPLACE INTO conversation_keys(conversation_id, key, message_id, created) VALUES(?1,?2,?3,?4)" },
    [OP_INSERT_OUTBOX] = {
        "INSERT INTO outbox(id, conversation_id, lane, kind, target, method, url, headers, body, data,"
        " on_result, idem_key, state, attempts, next_attempt, created)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,'pending',?13,?14,?15)" },
    [OP_UPDATE_OUTBOX] = {
        "UPDATE outbox SET state=?2, attempts=?3, next_attempt=?4, last_error=?5, finished=?6,"
        " created=coalesce(?7, created) WHERE id=?1" },
    [OP_DELETE_OUTBOX] = { "DELETE FROM outbox WHERE id=?1" },
    [OP_PUT_KV] = { "INSERT INTO kv(key, value, expires) VALUES(?1,?2,?3)"
                    " ON CONFLICT(key) DO UPDATE SET value=?2, expires=?3" },
    [OP_DELETE_KV] = { "DELETE FROM kv WHERE key=?1" },
    [OP_PUT_TIMER] = { "INSERT OR REPLACE INTO timers(id, due, interval, handler, data, calendar, attempts)"
                       " VALUES(?1,?2,?3,?4,?5,?6,?7)" },
    [OP_DELETE_TIMER] = { "DELETE FROM timers WHERE id=?1" },
    [OP_PUT_SCHEDULE] = { "INSERT OR REPLACE INTO schedules(key, next_due) VALUES(?1,?2)" },
    [OP_DELETE_SCHEDULE] = { "DELETE FROM schedules WHERE key=?1" },
    [OP_PRUNE_OUTBOX] = {
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state=?1 AND finished < ?2 ORDER BY id LIMIT ?3)" },
    [OP_PRUNE_KEYS] = {
        "DELETE FROM conversation_keys WHERE (conversation_id, key) IN"
        " (SELECT conversation_id, key FROM conversation_keys WHERE created < ?1 LIMIT ?2)" },
    /* the same ordered subquery names the same conversations in each statement of the transaction */
    [OP_PRUNE_CONVERSATIONS] = {
        "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM conversations"
        " WHERE state='closed' AND updated < ?1 ORDER BY rowid LIMIT ?2)",
        "DELETE FROM events WHERE conversation_id IN (SELECT id FROM conversations"
        " WHERE state='closed' AND updated < ?1 ORDER BY rowid LIMIT ?2)",
        "DELETE FROM conversation_keys WHERE conversation_id IN (SELECT id FROM conversations"
        " WHERE state='closed' AND updated < ?1 ORDER BY rowid LIMIT ?2)",
        "DELETE FROM conversations WHERE rowid IN (SELECT rowid FROM conversations"
        " WHERE state='closed' AND updated < ?1 ORDER BY rowid LIMIT ?2)" },
};

#define CONV_JSON                                                                                   \
    "json_object('id',id,'channel',channel,'client_id',client_id,'state',state,'desk',desk,"       \
    "'group',grp,'agent',agent,'status',status,'tags',json(tags),'client',json(profile),"           \
    "'data',json(data),'created',created,'updated',updated)"
#define MSG_JSON                                                                                    \
    "json_object('id',id,'seq',seq,'author',json_object('kind',author_kind,'name',author_name,"     \
    "'id',author_id),'text',text,'attachments',json(attachments),'buttons',json(buttons),"          \
    "'provider_ids',json(provider_ids),'created',created)"

/* Each page read builds its whole answer as one JSON text. Cursors are the
 * sort key of the last item returned, as text. Parameters are bound by
 * name from struct store_page_query. */
static const char *const page_sql[STORE_PAGE_COUNT] = {
    [STORE_PAGE_CONVERSATION] =
        "SELECT json_object('conversation', json_insert(json(c.j), '$.messages',"
        "  (SELECT json_group_array(json(m)) FROM (SELECT * FROM (SELECT seq, " MSG_JSON " AS m"
        "   FROM messages WHERE conversation_id=:id ORDER BY seq DESC LIMIT :messages) ORDER BY seq))))"
        " FROM (SELECT " CONV_JSON " AS j FROM conversations WHERE id=:id) AS c",
    [STORE_PAGE_CONVERSATIONS] =
        "SELECT json_object('conversations', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = :limit THEN CAST(min(r) AS TEXT) END)"
        " FROM (SELECT rowid AS r, " CONV_JSON " AS j FROM conversations"
        "  WHERE (:state IS NULL OR state=:state) AND (:channel IS NULL OR channel=:channel)"
        "  AND (:cursor IS NULL OR rowid < CAST(:cursor AS INTEGER)) ORDER BY rowid DESC LIMIT :limit)",
    [STORE_PAGE_MESSAGES] =
        "SELECT json_object('messages', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = :limit THEN CAST(max(s) AS TEXT) END)"
        " FROM (SELECT seq AS s, " MSG_JSON " AS j FROM messages WHERE conversation_id=:id"
        "  AND (:cursor IS NULL OR seq > CAST(:cursor AS INTEGER)) ORDER BY seq LIMIT :limit)",
    [STORE_PAGE_EVENTS] =
        "SELECT json_object('events', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = :limit THEN CAST(max(i) AS TEXT) END)"
        " FROM (SELECT id AS i, json_object('id',id,'type',type,'data',json(data),'created',created) AS j"
        "  FROM events WHERE conversation_id=:id AND (:cursor IS NULL OR id > CAST(:cursor AS INTEGER))"
        "  ORDER BY id LIMIT :limit)",
    [STORE_PAGE_OUTBOX_DEAD] =
        "SELECT json_object('dead', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = :limit THEN CAST(max(i) AS TEXT) END)"
        " FROM (SELECT id AS i, json_object('id',id,'conversation_id',conversation_id,'lane',lane,"
        "  'kind',kind,'target',target,'method',method,'url',url,'attempts',attempts,"
        "  'reason',last_error,'created',created,'died_at',finished) AS j"
        "  FROM outbox WHERE state='dead' AND (:cursor IS NULL OR id > CAST(:cursor AS INTEGER))"
        "  ORDER BY id LIMIT :limit)",
    [STORE_PAGE_OUTBOX_ENTRY] =
        "SELECT json_object('id',id,'conversation_id',conversation_id,'lane',lane,'kind',kind,"
        " 'target',target,'method',method,'url',url,'state',state,'attempts',attempts,"
        " 'created',created,'reason',last_error,'died_at',finished) FROM outbox WHERE id=:entry_id",
};

#define CONV_COLUMNS "id, channel, client_id, state, desk, grp, agent, status, tags, profile, data, last_seq, created, updated"
#define MSG_COLUMNS "conversation_id, seq, id, author_kind, author_name, author_id, text, attachments, buttons," \
                    " provider_ids, created"
#define OUTBOX_COLUMNS "id, conversation_id, lane, kind, target, method, url, headers, body, data, on_result," \
                       " idem_key, attempts, next_attempt, created"

enum fetch_kind { FETCH_CONV_BY_ID, FETCH_CONV_BY_CLIENT, FETCH_MESSAGES, FETCH_OUTBOX_LANE, FETCH_OUTBOX_ENTRY,
                  FETCH_COUNT };

/* A fetch runs its statements in order; each statement's rows get its
 * index as their tag. */
static const char *const fetch_sql[FETCH_COUNT][2] = {
    [FETCH_CONV_BY_ID] = {
        "SELECT " CONV_COLUMNS " FROM conversations WHERE id=?1",
        "SELECT key, message_id, created FROM conversation_keys WHERE conversation_id=?1 AND created >= ?4" },
    [FETCH_CONV_BY_CLIENT] = {
        "SELECT " CONV_COLUMNS " FROM conversations WHERE channel=?2 AND client_id=?3",
        "SELECT key, message_id, created FROM conversation_keys WHERE created >= ?4 AND conversation_id ="
        " (SELECT id FROM conversations WHERE channel=?2 AND client_id=?3)" },
    [FETCH_MESSAGES] = {
        "SELECT " MSG_COLUMNS " FROM messages WHERE conversation_id=?1 AND seq >= ?5 AND seq <= ?6 ORDER BY seq",
        NULL },
    [FETCH_OUTBOX_LANE] = {
        "SELECT " OUTBOX_COLUMNS " FROM outbox WHERE state='pending' AND lane=?2 ORDER BY id LIMIT ?6",
        NULL },
    [FETCH_OUTBOX_ENTRY] = { "SELECT " OUTBOX_COLUMNS ", state FROM outbox WHERE id=?5", NULL },
};

enum value_type { SV_NULL, SV_INT, SV_REAL, SV_TEXT, SV_BLOB };

struct store_value {
    enum value_type type;
    int64_t i;
    double d;
    char *s;      /* owned copy */
    size_t len;
};

struct store_op {
    enum op_type type;
    int system;   /* the engine's bookkeeping: queued again if its batch fails */
    int n;
    struct store_value v[MAX_VALUES];
    struct store_op *next;
};

enum work_kind { WORK_BATCH, WORK_PAGE, WORK_FETCH, WORK_RESUME, WORK_STOP };

struct fetched_row {
    int tag, n;
    char **text;
    size_t *len;
    double *num;
};

struct store_rows {
    int nrows, cap;
    struct fetched_row *rows;
};

struct work {
    enum work_kind kind;
    uint64_t seq;
    struct store_op *ops, *ops_tail;
    size_t nops;
    enum store_page page;
    struct store_page_query query;   /* strings owned (copied) */
    enum fetch_kind fetch;
    store_read_fn read_fn;
    store_fetch_fn fetch_fn;
    void *arg;
    int ok;
    char *result;
    size_t result_len;
    struct store_rows rows;
    char error[256];
    struct work *next;
};

struct waiter {
    uint64_t seq;
    store_commit_fn fn;
    void *arg;
    struct waiter *next;
};

static sqlite3 *db;
static sqlite3_stmt *write_stmts[OP_COUNT][MAX_STATEMENTS];
static sqlite3_stmt *page_stmts[STORE_PAGE_COUNT];
static sqlite3_stmt *fetch_stmts[FETCH_COUNT][2];
static sqlite3_stmt *begin_stmt, *commit_stmt, *rollback_stmt;

static pthread_t thread;
static int thread_running;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct work *todo_head, *todo_tail;   /* loop -> thread */
static struct work *done_head, *done_tail;   /* thread -> loop */
static int notify_pipe[2] = { -1, -1 };
static struct event *notify_ev, *submit_ev;
static int poisoned;                         /* store thread only: fail batches until a resume marker */

/* loop-thread state */
static struct work *open_batch;
static uint64_t last_seq, finished_seq;
static uint64_t failed_from, failed_through; /* the latest range of batches that failed */
static int batches_in_flight;
static struct waiter *waiters, *waiters_tail;
static struct store_stats stats;
static void (*flush_hook)(void);
static void (*batch_hook)(uint64_t seq, int ok);
static int flushing;
static uint64_t recovered_through;

void store_set_flush_hook(void (*hook)(void)) { flush_hook = hook; }
void store_set_batch_hook(void (*hook)(uint64_t seq, int ok)) { batch_hook = hook; }

/* Lets the flush hook add its coalesced writes to the open batch. */
static void run_flush_hook(void)
{
    if (flush_hook && !flushing) {
        flushing = 1;
        flush_hook();
        flushing = 0;
    }
}

const struct store_stats *store_stats(void) { return &stats; }
uint64_t store_committed_seq(void) { return finished_seq; }
uint64_t store_pending_seq(void) { return open_batch ? open_batch->seq : finished_seq; }

int store_parse_sync(const char *name, enum store_sync *out)
{
    if (!strcmp(name, "full"))
        *out = STORE_SYNC_FULL;
    else if (!strcmp(name, "normal"))
        *out = STORE_SYNC_NORMAL;
    else if (!strcmp(name, "off"))
        *out = STORE_SYNC_OFF;
    else
        return -1;
    return 0;
}

/* Operations */

static struct store_op *op_new(enum op_type type)
{
    struct store_op *op = sb_xcalloc(1, sizeof *op);
    op->type = type;
    return op;
}

static struct store_value *next_value(struct store_op *op)
{
    if (op->n >= MAX_VALUES) {
        sb_log(SB_LOG_ERROR, "store: too many values in an operation", NULL);
        abort();
    }
    return &op->v[op->n++];
}

static void put_null(struct store_op *op) { next_value(op)->type = SV_NULL; }

static void put_int(struct store_op *op, int64_t i)
{
    struct store_value *v = next_value(op);
    v->type = SV_INT;
    v->i = i;
}

static void put_real(struct store_op *op, double d)
{
    struct store_value *v = next_value(op);
    v->type = SV_REAL;
    v->d = d;
}

static void put_bytes(struct store_op *op, const char *s, size_t len, enum value_type type)
{
    struct store_value *v = next_value(op);
    if (!s) {
        v->type = SV_NULL;
        return;
    }
    v->type = type;
    v->s = sb_xmalloc(len + 1);
    memcpy(v->s, s, len);
    v->s[len] = '\0';
    v->len = len;
}

static void put_str(struct store_op *op, const char *s) { put_bytes(op, s, s ? strlen(s) : 0, SV_TEXT); }

struct store_op *store_put_conversation(const struct store_conversation *c)
{
    struct store_op *op = op_new(OP_PUT_CONVERSATION);
    put_str(op, c->id);
    put_str(op, c->channel);
    put_str(op, c->client_id);
    put_str(op, c->state);
    put_str(op, c->desk);
    put_str(op, c->group);
    put_str(op, c->agent);
    put_str(op, c->status);
    put_str(op, c->tags);
    put_str(op, c->profile);
    put_str(op, c->data);
    put_int(op, c->last_seq);
    put_real(op, c->created);
    put_real(op, c->updated);
    return op;
}

struct store_op *store_insert_message(const struct store_message *m)
{
    struct store_op *op = op_new(OP_INSERT_MESSAGE);
    put_str(op, m->conversation_id);
    put_int(op, m->seq);
    put_str(op, m->id);
    put_str(op, m->author_kind);
    put_str(op, m->author_name);
    put_str(op, m->author_id);
    put_bytes(op, m->text ? m->text : "", m->text ? m->text_len : 0, SV_TEXT);
    put_str(op, m->attachments);
    put_str(op, m->buttons);
    put_str(op, m->provider_ids);
    put_real(op, m->created);
    return op;
}

struct store_op *store_set_message_provider_ids(const char *message_id, const char *json)
{
    struct store_op *op = op_new(OP_SET_PROVIDER_IDS);
    put_str(op, message_id);
    put_str(op, json);
    return op;
}

struct store_op *store_insert_event(int64_t id, const char *conversation_id, const char *type, const char *data,
                                    double created)
{
    struct store_op *op = op_new(OP_INSERT_EVENT);
    put_int(op, id);
    put_str(op, conversation_id);
    put_str(op, type);
    put_str(op, data ? data : "{}");
    put_real(op, created);
    return op;
}

struct store_op *store_insert_key(const char *conversation_id, const char *key, const char *message_id, double created)
{
    struct store_op *op = op_new(OP_INSERT_KEY);
    put_str(op, conversation_id);
    put_str(op, key);
    put_str(op, message_id);
    put_real(op, created);
    return op;
}

struct store_op *store_insert_outbox(const struct store_outbox_entry *e)
{
    struct store_op *op = op_new(OP_INSERT_OUTBOX);
    put_int(op, e->id);
    put_str(op, e->conversation_id);
    put_str(op, e->lane);
    put_str(op, e->kind);
    put_str(op, e->target);
    put_str(op, e->method);
    put_str(op, e->url);
    put_str(op, e->headers);
    put_bytes(op, e->body, e->body_len, SV_BLOB);
    put_str(op, e->data);
    put_str(op, e->on_result);
    put_str(op, e->idem_key);
    put_int(op, e->attempts);
    put_real(op, e->next_attempt);
    put_real(op, e->created);
    return op;
}

struct store_op *store_update_outbox(int64_t id, const char *state, int attempts, double next_attempt,
                                     const char *last_error, double finished, double created)
{
    struct store_op *op = op_new(OP_UPDATE_OUTBOX);
    put_int(op, id);
    put_str(op, state);
    put_int(op, attempts);
    put_real(op, next_attempt);
    put_str(op, last_error);
    if (finished > 0)
        put_real(op, finished);
    else
        put_null(op);
    if (created > 0)
        put_real(op, created);
    else
        put_null(op);
    return op;
}

struct store_op *store_delete_outbox(int64_t id)
{
    struct store_op *op = op_new(OP_DELETE_OUTBOX);
    put_int(op, id);
    return op;
}

struct store_op *store_put_kv(const char *key, const char *json, size_t len, double expires)
{
    struct store_op *op = op_new(OP_PUT_KV);
    put_str(op, key);
    put_bytes(op, json, len, SV_TEXT);
    if (expires > 0)
        put_real(op, expires);
    else
        put_null(op);
    return op;
}

struct store_op *store_delete_kv(const char *key)
{
    struct store_op *op = op_new(OP_DELETE_KV);
    put_str(op, key);
    return op;
}

struct store_op *store_put_timer(const struct store_timer *t)
{
    struct store_op *op = op_new(OP_PUT_TIMER);
    put_int(op, t->id);
    put_real(op, t->due);
    put_real(op, t->interval);
    put_str(op, t->handler);
    put_str(op, t->data);
    put_str(op, t->calendar);
    put_int(op, t->attempts);
    return op;
}

struct store_op *store_delete_timer(int64_t id)
{
    struct store_op *op = op_new(OP_DELETE_TIMER);
    put_int(op, id);
    return op;
}

struct store_op *store_put_schedule(const char *key, double next_due)
{
    struct store_op *op = op_new(OP_PUT_SCHEDULE);
    put_str(op, key);
    put_real(op, next_due);
    return op;
}

struct store_op *store_delete_schedule(const char *key)
{
    struct store_op *op = op_new(OP_DELETE_SCHEDULE);
    put_str(op, key);
    return op;
}

struct store_op *store_prune_outbox(const char *state, double before, int limit)
{
    struct store_op *op = op_new(OP_PRUNE_OUTBOX);
    put_str(op, state);
    put_real(op, before);
    put_int(op, limit);
    return op;
}

struct store_op *store_prune_keys(double before, int limit)
{
    struct store_op *op = op_new(OP_PRUNE_KEYS);
    put_real(op, before);
    put_int(op, limit);
    return op;
}

struct store_op *store_prune_conversations(double before, int limit)
{
    struct store_op *op = op_new(OP_PRUNE_CONVERSATIONS);
    put_real(op, before);
    put_int(op, limit);
    return op;
}

void store_op_free(struct store_op *op)
{
    int i;
    if (!op)
        return;
    for (i = 0; i < op->n; i++)
        free(op->v[i].s);
    free(op);
}

static void rows_free(struct store_rows *r)
{
    int i, j;
    for (i = 0; i < r->nrows; i++) {
        for (j = 0; j < r->rows[i].n; j++)
            free(r->rows[i].text[j]);
        free(r->rows[i].text);
        free(r->rows[i].len);
        free(r->rows[i].num);
    }
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static void work_free(struct work *w)
{
    while (w->ops) {
        struct store_op *next = w->ops->next;
        store_op_free(w->ops);
        w->ops = next;
    }
    free((char *)w->query.id);
    free((char *)w->query.state);
    free((char *)w->query.channel);
    free((char *)w->query.cursor);
    rows_free(&w->rows);
    free(w->result);
    free(w);
}

int store_rows_count(const struct store_rows *r) { return r ? r->nrows : 0; }

void store_rows_get(const struct store_rows *r, int i, struct store_row *row, int *tag)
{
    const struct fetched_row *f = &r->rows[i];
    row->n = f->n;
    row->text = (const char *const *)f->text;
    row->len = f->len;
    row->num = f->num;
    if (tag)
        *tag = f->tag;
}

/* Store thread */

static int bind_values(sqlite3_stmt *st, const struct store_op *op)
{
    int i, rc = SQLITE_OK, nparams = sqlite3_bind_parameter_count(st);
    for (i = 0; i < op->n && i < nparams && rc == SQLITE_OK; i++) {
        const struct store_value *v = &op->v[i];
        switch (v->type) {
        case SV_NULL: rc = sqlite3_bind_null(st, i + 1); break;
        case SV_INT: rc = sqlite3_bind_int64(st, i + 1, v->i); break;
        case SV_REAL: rc = sqlite3_bind_double(st, i + 1, v->d); break;
        case SV_TEXT: rc = sqlite3_bind_text(st, i + 1, v->s, (int)v->len, SQLITE_STATIC); break;
        case SV_BLOB: rc = sqlite3_bind_blob(st, i + 1, v->s, (int)v->len, SQLITE_STATIC); break;
        }
    }
    return rc;
}

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void run_batch(struct work *w)
{
    struct store_op *op;
    int rc;
    if (poisoned) {
        snprintf(w->error, sizeof w->error, "an earlier batch failed");
        w->ok = 0;
        return;
    }
    rc = step_done(begin_stmt);
    for (op = w->ops; op && rc == SQLITE_OK; op = op->next) {
        int s;
        for (s = 0; s < MAX_STATEMENTS && write_stmts[op->type][s] && rc == SQLITE_OK; s++) {
            sqlite3_stmt *st = write_stmts[op->type][s];
            rc = bind_values(st, op);
            if (rc == SQLITE_OK)
                rc = step_done(st);
            else
                sqlite3_reset(st);
        }
    }
    if (rc == SQLITE_OK)
        rc = step_done(commit_stmt);
    if (rc != SQLITE_OK) {
        snprintf(w->error, sizeof w->error, "%s", sqlite3_errmsg(db));
        step_done(rollback_stmt);
        w->ok = 0;
        poisoned = 1;
    } else {
        w->ok = 1;
    }
}

static int bind_named_text(sqlite3_stmt *st, const char *name, const char *value)
{
    int i = sqlite3_bind_parameter_index(st, name);
    if (!i)
        return SQLITE_OK;
    return value ? sqlite3_bind_text(st, i, value, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_named_int(sqlite3_stmt *st, const char *name, int64_t value)
{
    int i = sqlite3_bind_parameter_index(st, name);
    return i ? sqlite3_bind_int64(st, i, value) : SQLITE_OK;
}

static void run_page(struct work *w)
{
    sqlite3_stmt *st = page_stmts[w->page];
    const struct store_page_query *q = &w->query;
    int rc = bind_named_text(st, ":id", q->id);
    if (rc == SQLITE_OK) rc = bind_named_text(st, ":state", q->state);
    if (rc == SQLITE_OK) rc = bind_named_text(st, ":channel", q->channel);
    if (rc == SQLITE_OK) rc = bind_named_text(st, ":cursor", q->cursor);
    if (rc == SQLITE_OK) rc = bind_named_int(st, ":limit", q->limit);
    if (rc == SQLITE_OK) rc = bind_named_int(st, ":messages", q->messages);
    if (rc == SQLITE_OK) rc = bind_named_int(st, ":entry_id", q->entry_id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        w->result = sb_xmalloc(n + 1);
        memcpy(w->result, t ? (const char *)t : "", n);
        w->result[n] = '\0';
        w->result_len = n;
        w->ok = 1;
    } else if (rc == SQLITE_DONE) {
        w->result = sb_xstrdup("null");
        w->result_len = 4;
        w->ok = 1;
    } else {
        snprintf(w->error, sizeof w->error, "%s", sqlite3_errmsg(db));
        w->ok = 0;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Copies the current row of st (all columns) into rows. */
static void copy_row(sqlite3_stmt *st, int tag, struct store_rows *rows)
{
    struct fetched_row *f;
    int i, n = sqlite3_column_count(st);
    if (rows->nrows == rows->cap) {
        rows->cap = rows->cap ? rows->cap * 2 : 8;
        rows->rows = sb_xrealloc(rows->rows, (size_t)rows->cap * sizeof *rows->rows);
    }
    f = &rows->rows[rows->nrows++];
    f->tag = tag;
    f->n = n;
    f->text = sb_xcalloc((size_t)n, sizeof *f->text);
    f->len = sb_xcalloc((size_t)n, sizeof *f->len);
    f->num = sb_xcalloc((size_t)n, sizeof *f->num);
    for (i = 0; i < n; i++) {
        if (sqlite3_column_type(st, i) == SQLITE_NULL)
            continue;
        {
            const void *b = sqlite3_column_blob(st, i);
            size_t len = (size_t)sqlite3_column_bytes(st, i);
            f->text[i] = sb_xmalloc(len + 1);
            if (len)
                memcpy(f->text[i], b, len);
            f->text[i][len] = '\0';
            f->len[i] = len;
            f->num[i] = sqlite3_column_double(st, i);
        }
    }
}

static void run_fetch(struct work *w)
{
    int s, rc = SQLITE_OK;
    w->ok = 1;
    for (s = 0; s < 2 && fetch_stmts[w->fetch][s] && rc == SQLITE_OK; s++) {
        sqlite3_stmt *st = fetch_stmts[w->fetch][s];
        rc = bind_values(st, w->ops);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            copy_row(st, s, &w->rows);
            rc = SQLITE_OK;
        }
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    if (rc != SQLITE_OK) {
        snprintf(w->error, sizeof w->error, "%s", sqlite3_errmsg(db));
        w->ok = 0;
        rows_free(&w->rows);
    }
}

static void *store_thread(void *arg)
{
    (void)arg;
    for (;;) {
        struct work *w;
        char byte = 1;
        pthread_mutex_lock(&mu);
        while (!todo_head)
            pthread_cond_wait(&cv, &mu);
        w = todo_head;
        todo_head = w->next;
        if (!todo_head)
            todo_tail = NULL;
        pthread_mutex_unlock(&mu);

        switch (w->kind) {
        case WORK_STOP:
            free(w);
            return NULL;
        case WORK_RESUME:
            poisoned = 0;
            free(w);
            continue;
        case WORK_BATCH: run_batch(w); break;
        case WORK_PAGE: run_page(w); break;
        case WORK_FETCH: run_fetch(w); break;
        }

        pthread_mutex_lock(&mu);
        w->next = NULL;
        if (done_tail)
            done_tail->next = w;
        else
            done_head = w;
        done_tail = w;
        pthread_mutex_unlock(&mu);
        if (write(notify_pipe[1], &byte, 1) < 0 && errno != EAGAIN)
            sb_log(SB_LOG_ERROR, "store: cannot notify the loop", NULL);
    }
}

/* Loop thread */

static void hand_over(struct work *w)
{
    pthread_mutex_lock(&mu);
    w->next = NULL;
    if (todo_tail)
        todo_tail->next = w;
    else
        todo_head = w;
    todo_tail = w;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void send_open_batch(void)
{
    struct work *w;
    run_flush_hook();
    w = open_batch;
    if (!w)
        return;
    open_batch = NULL;
    batches_in_flight++;
    stats.batches++;
    hand_over(w);
}

static void on_submit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (batches_in_flight == 0)
        send_open_batch();
}

static void append_op(struct work *b, struct store_op *op)
{
    op->next = NULL;
    if (b->ops_tail)
        b->ops_tail->next = op;
    else
        b->ops = op;
    b->ops_tail = op;
    b->nops++;
    stats.writes++;
}

uint64_t store_reserve(void)
{
    if (!db)
        return 0;
    if (!open_batch) {
        open_batch = sb_xcalloc(1, sizeof *open_batch);
        open_batch->kind = WORK_BATCH;
        open_batch->seq = ++last_seq;
        if (batches_in_flight == 0 && submit_ev)
            event_active(submit_ev, 0, 0);  /* after the current callback, not during it */
    }
    return open_batch->seq;
}

uint64_t store_submit(struct store_op *op)
{
    if (!db) {
        store_op_free(op);
        return 0;
    }
    store_reserve();
    append_op(open_batch, op);
    return open_batch->seq;
}

uint64_t store_submit_system(struct store_op *op)
{
    op->system = 1;
    return store_submit(op);
}

/* The system writes of a failed batch go again with the next one. */
static void requeue_system_ops(struct work *w)
{
    struct store_op *op = w->ops, *next;
    w->ops = w->ops_tail = NULL;
    for (; op; op = next) {
        next = op->next;
        if (op->system && db) {
            store_reserve();
            append_op(open_batch, op);
            stats.writes--;   /* counted when first queued */
        } else {
            store_op_free(op);
        }
    }
}

static void batch_finished(struct work *w)
{
    batches_in_flight--;
    if (!w->ok) {
        char seq[24];
        stats.failures++;
        if (w->seq > failed_through) {
            if (w->seq != failed_through + 1 || failed_through == 0)
                failed_from = w->seq;
            failed_through = w->seq;
        }
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)w->seq);
        sb_log(SB_LOG_ERROR, "store: commit failed", "batch", seq, "error", w->error, NULL);
    }
    finished_seq = w->seq;
    if (batch_hook)
        batch_hook(w->seq, w->ok);
    else if (!w->ok && w->seq > recovered_through)
        recovered_through = store_recover();   /* nobody to roll back: just go on */
    while (waiters && waiters->seq <= w->seq) {
        struct waiter *x = waiters;
        waiters = x->next;
        if (!waiters)
            waiters_tail = NULL;
        x->fn(x->arg, w->ok);
        free(x);
    }
    if (!w->ok)
        requeue_system_ops(w);
    /* Writes that arrived while this batch was committing go next, together. */
    if (batches_in_flight == 0)
        send_open_batch();
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    struct work *list, *w;
    (void)what;
    (void)arg;
    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&mu);
    list = done_head;
    done_head = done_tail = NULL;
    pthread_mutex_unlock(&mu);
    while (list) {
        w = list;
        list = w->next;
        if (w->kind == WORK_BATCH) {
            batch_finished(w);
        } else if (w->kind == WORK_PAGE) {
            stats.reads++;
            w->read_fn(w->arg, w->ok ? w->result : NULL, w->result_len, w->ok ? NULL : w->error);
        } else {
            stats.reads++;
            w->fetch_fn(w->arg, w->ok ? &w->rows : NULL, w->ok ? NULL : w->error);
        }
        work_free(w);
    }
}

uint64_t store_recover(void)
{
    struct work *resume;
    uint64_t through;
    if (!thread_running)
        return last_seq;
    /* The open batch holds writes made on top of the failed ones: it goes
     * to the thread to fail there, in order, so its waiters hear of it
     * after those of the batches before it. */
    if (open_batch) {
        struct work *w = open_batch;
        open_batch = NULL;
        batches_in_flight++;
        stats.batches++;
        hand_over(w);
    }
    through = last_seq;
    resume = sb_xcalloc(1, sizeof *resume);
    resume->kind = WORK_RESUME;
    hand_over(resume);
    return through;
}

void store_when_committed(uint64_t seq, store_commit_fn fn, void *arg)
{
    struct waiter *x;
    if (seq == 0 || seq <= finished_seq) {
        fn(arg, !(seq >= failed_from && seq <= failed_through && failed_through));
        return;
    }
    x = sb_xcalloc(1, sizeof *x);
    x->seq = seq;
    x->fn = fn;
    x->arg = arg;
    if (waiters_tail)
        waiters_tail->next = x;
    else
        waiters = x;
    waiters_tail = x;
}

int store_running(void) { return thread_running; }

/* Reads see every write queued before them. */
static void hand_over_read(struct work *w)
{
    run_flush_hook();
    if (open_batch) {
        batches_in_flight++;
        stats.batches++;
        hand_over(open_batch);
        open_batch = NULL;
    }
    hand_over(w);
}

static char *dup_or_null(const char *s) { return s ? sb_xstrdup(s) : NULL; }

void store_read_page(enum store_page page, const struct store_page_query *q, store_read_fn fn, void *arg)
{
    struct work *w;
    if (!thread_running) {
        fn(arg, NULL, 0, "the store is not open");
        return;
    }
    w = sb_xcalloc(1, sizeof *w);
    w->kind = WORK_PAGE;
    w->page = page;
    w->query = *q;
    w->query.id = dup_or_null(q->id);
    w->query.state = dup_or_null(q->state);
    w->query.channel = dup_or_null(q->channel);
    w->query.cursor = dup_or_null(q->cursor);
    w->read_fn = fn;
    w->arg = arg;
    hand_over_read(w);
}

/* A fetch's parameters, bound positionally: ?1 id, ?2 text, ?3 text2,
 * ?4 real, ?5 int, ?6 int. */
static void fetch(enum fetch_kind kind, const char *id, const char *t2, const char *t3, double r, int64_t a,
                  int64_t b, store_fetch_fn fn, void *arg)
{
    struct work *w;
    struct store_op *p;
    if (!thread_running) {
        fn(arg, NULL, "the store is not open");
        return;
    }
    w = sb_xcalloc(1, sizeof *w);
    w->kind = WORK_FETCH;
    w->fetch = kind;
    p = op_new(OP_COUNT);
    put_str(p, id);
    put_str(p, t2);
    put_str(p, t3);
    put_real(p, r);
    put_int(p, a);
    put_int(p, b);
    w->ops = w->ops_tail = p;
    w->fetch_fn = fn;
    w->arg = arg;
    hand_over_read(w);
}

void store_fetch_conversation(const char *id, const char *channel, const char *client_id, double keys_since,
                              store_fetch_fn fn, void *arg)
{
    if (client_id)
        fetch(FETCH_CONV_BY_CLIENT, NULL, channel, client_id, keys_since, 0, 0, fn, arg);
    else
        fetch(FETCH_CONV_BY_ID, id, NULL, NULL, keys_since, 0, 0, fn, arg);
}

void store_fetch_messages(const char *conversation_id, int64_t from_seq, int64_t to_seq,
                          store_fetch_fn fn, void *arg)
{
    fetch(FETCH_MESSAGES, conversation_id, NULL, NULL, 0, from_seq, to_seq, fn, arg);
}

void store_fetch_outbox_lane(const char *lane, int limit, store_fetch_fn fn, void *arg)
{
    fetch(FETCH_OUTBOX_LANE, NULL, lane, NULL, 0, 0, limit, fn, arg);
}

void store_fetch_outbox_entry(int64_t id, store_fetch_fn fn, void *arg)
{
    fetch(FETCH_OUTBOX_ENTRY, NULL, NULL, NULL, 0, id, 0, fn, arg);
}

/* Opening, migrations, start-up loading */

static int exec(const char *sql, struct sb_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        if (err)
            sb_error_set(err, "store", 0, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int migrate(struct sb_error *err)
{
    sqlite3_stmt *st;
    int version = 0, v;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > SCHEMA_VERSION) {
        sb_error_set(err, "store", 0, "database schema %d is newer than this build (%d)", version, SCHEMA_VERSION);
        return -1;
    }
    /* Each step moves one version up inside its own transaction. */
    for (v = version + 1; v <= SCHEMA_VERSION; v++) {
        char set[64], vs[16];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v);
        if (exec("BEGIN", err) || exec(v == 1 ? schema_v1 : schema_v2, err) || exec(set, err) ||
            exec("COMMIT", err)) {
            exec("ROLLBACK", NULL);
            return -1;
        }
        snprintf(vs, sizeof vs, "%d", v);
        sb_log(SB_LOG_INFO, version == 0 && v == 1 ? "store: schema created" : "store: schema migrated",
               "version", vs, NULL);
    }
    return 0;
}

static int prepare(const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK ? 0 : -1;
}

static int prepare_all(struct sb_error *err)
{
    int i, s;
    for (i = 0; i < OP_COUNT; i++)
        for (s = 0; s < MAX_STATEMENTS && write_sql[i][s]; s++)
            if (prepare(write_sql[i][s], &write_stmts[i][s]))
                goto fail;
    for (i = 0; i < STORE_PAGE_COUNT; i++)
        if (prepare(page_sql[i], &page_stmts[i]))
            goto fail;
    for (i = 0; i < FETCH_COUNT; i++)
        for (s = 0; s < 2 && fetch_sql[i][s]; s++)
            if (prepare(fetch_sql[i][s], &fetch_stmts[i][s]))
                goto fail;
    if (prepare("BEGIN IMMEDIATE", &begin_stmt) || prepare("COMMIT", &commit_stmt) ||
        prepare("ROLLBACK", &rollback_stmt))
        goto fail;
    return 0;
fail:
    sb_error_set(err, "store", 0, "cannot prepare statement: %s", sqlite3_errmsg(db));
    return -1;
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_counter(out, "switchboard_store_batches_total", "Store transactions (group commits).", stats.batches);
    sb_metrics_counter(out, "switchboard_store_writes_total", "Store write operations.", stats.writes);
    sb_metrics_counter(out, "switchboard_store_reads_total", "Store reads.", stats.reads);
    sb_metrics_counter(out, "switchboard_store_failures_total", "Store transactions that failed.", stats.failures);
}

int store_open(const char *data_dir, enum store_sync sync, struct sb_error *err)
{
    char path[1024];
    static const char *const sync_pragma[] = {
        "PRAGMA synchronous = FULL", "PRAGMA synchronous = NORMAL", "PRAGMA synchronous = OFF"
    };
    static int metrics_registered;
    snprintf(path, sizeof path, "%s/switchboard.db", data_dir);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        sb_error_set(err, path, 0, "cannot open database: %s", db ? sqlite3_errmsg(db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(db, 5000);
    /* A larger checkpoint interval copies each hot page (index roots, the
     * right edge of time-ordered indexes) once per checkpoint instead of
     * many times; the page cache keeps the working set off the disk. */
    if (exec("PRAGMA journal_mode = WAL", err) || exec(sync_pragma[sync], err) ||
        exec("PRAGMA foreign_keys = OFF", err) || exec("PRAGMA wal_autocheckpoint = 8192", err) ||
        exec("PRAGMA cache_size = -65536", err) || exec("PRAGMA journal_size_limit = 67108864", err) ||
        migrate(err) || prepare_all(err))
        goto fail;
    if (!metrics_registered) {
        sb_metrics_register(render_metrics);
        metrics_registered = 1;
    }
    return 0;
fail:
    store_close();
    return -1;
}

int store_start(void)
{
    if (pipe2(notify_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    notify_ev = event_new(sb_base, notify_pipe[0], EV_READ | EV_PERSIST, on_notify, NULL);
    submit_ev = event_new(sb_base, -1, 0, on_submit, NULL);
    event_add(notify_ev, NULL);
    if (pthread_create(&thread, NULL, store_thread, NULL) != 0)
        return -1;
    thread_running = 1;
    return 0;
}

void store_close(void)
{
    int i, s;
    if (thread_running) {
        struct work *stop = sb_xcalloc(1, sizeof *stop);
        send_open_batch();
        stop->kind = WORK_STOP;
        hand_over(stop);
        pthread_join(thread, NULL);
        thread_running = 0;
        /* deliver what finished, so waiters and reads are told */
        if (notify_pipe[0] >= 0)
            on_notify(notify_pipe[0], EV_READ, NULL);
    }
    while (waiters) {
        struct waiter *x = waiters;
        waiters = x->next;
        x->fn(x->arg, 0);
        free(x);
    }
    waiters_tail = NULL;
    if (open_batch) {
        work_free(open_batch);
        open_batch = NULL;
    }
    for (i = 0; i < OP_COUNT; i++)
        for (s = 0; s < MAX_STATEMENTS; s++)
            sqlite3_finalize(write_stmts[i][s]), write_stmts[i][s] = NULL;
    for (i = 0; i < STORE_PAGE_COUNT; i++)
        sqlite3_finalize(page_stmts[i]), page_stmts[i] = NULL;
    for (i = 0; i < FETCH_COUNT; i++)
        for (s = 0; s < 2; s++)
            sqlite3_finalize(fetch_stmts[i][s]), fetch_stmts[i][s] = NULL;
    sqlite3_finalize(begin_stmt);
    sqlite3_finalize(commit_stmt);
    sqlite3_finalize(rollback_stmt);
    begin_stmt = commit_stmt = rollback_stmt = NULL;
    if (db)
        sqlite3_close(db);
    db = NULL;
    if (notify_ev)
        event_free(notify_ev);
    if (submit_ev)
        event_free(submit_ev);
    notify_ev = submit_ev = NULL;
    for (i = 0; i < 2; i++)
        if (notify_pipe[i] >= 0)
            close(notify_pipe[i]), notify_pipe[i] = -1;
    poisoned = 0;
    last_seq = finished_seq = failed_from = failed_through = 0;
    batches_in_flight = 0;
}

/* Runs sql (with an optional integer parameter) and hands each row to fn. */
static int load_rows(const char *sql, int64_t param, int has_param, store_row_fn fn, void *arg)
{
    sqlite3_stmt *st;
    const char *text[MAX_VALUES + 2];
    size_t len[MAX_VALUES + 2];
    double num[MAX_VALUES + 2];
    struct store_row row;
    int rc, i, n;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sb_log(SB_LOG_ERROR, "store: cannot load", "error", sqlite3_errmsg(db), NULL);
        return -1;
    }
    if (has_param)
        sqlite3_bind_int64(st, 1, param);
    n = sqlite3_column_count(st);
    if (n > MAX_VALUES + 2)
        n = MAX_VALUES + 2;
    row.n = n;
    row.text = text;
    row.len = len;
    row.num = num;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (i = 0; i < n; i++) {
            /* blobs are not NUL-terminated: their readers go by len */
            switch (sqlite3_column_type(st, i)) {
            case SQLITE_NULL: text[i] = NULL; break;
            case SQLITE_BLOB: text[i] = (const char *)sqlite3_column_blob(st, i); break;
            default: text[i] = (const char *)sqlite3_column_text(st, i); break;
            }
            len[i] = (size_t)sqlite3_column_bytes(st, i);
            num[i] = sqlite3_column_double(st, i);
            if (!text[i] && sqlite3_column_type(st, i) == SQLITE_BLOB)
                text[i] = "";   /* an empty blob */
        }
        fn(arg, &row);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

struct lane_window {
    store_row_fn fn;
    void *arg;
    void (*lane_has_more)(void *arg, const char *lane);
    int per_lane;
};

static void window_row(void *arg, const struct store_row *r)
{
    struct lane_window *w = arg;
    /* columns: the entry, then its rank in its lane and the lane's size */
    int rank = (int)r->num[15], size = (int)r->num[16];
    w->fn(w->arg, r);
    if (rank == w->per_lane && size > w->per_lane && w->lane_has_more)
        w->lane_has_more(w->arg, r->text[2]);
}

int store_load_outbox_pending(int per_lane, store_row_fn fn, void *arg,
                              void (*lane_has_more)(void *arg, const char *lane), int64_t *pending_total)
{
    struct lane_window w = { fn, arg, lane_has_more, per_lane };
    sqlite3_stmt *st;
    *pending_total = 0;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM outbox WHERE state = 'pending'", -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        *pending_total = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return load_rows("SELECT " OUTBOX_COLUMNS ", rank, size FROM (SELECT *,"
                     " row_number() OVER (PARTITION BY lane ORDER BY id) AS rank,"
                     " count(*) OVER (PARTITION BY lane) AS size FROM outbox WHERE state = 'pending')"
                     " WHERE rank <= ?1 ORDER BY id", per_lane, 1, window_row, &w);
}

int store_load_kv(store_row_fn fn, void *arg)
{
    return load_rows("SELECT key, value, expires FROM kv", 0, 0, fn, arg);
}

int store_load_timers(store_row_fn fn, void *arg)
{
    return load_rows("SELECT id, due, interval, handler, data, calendar, attempts FROM timers ORDER BY id",
                     0, 0, fn, arg);
}

int store_load_schedules(store_row_fn fn, void *arg)
{
    return load_rows("SELECT key, next_due FROM schedules", 0, 0, fn, arg);
}

static int64_t scalar(const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int store_count_conversations(int64_t *all, int64_t *open)
{
    *all = scalar("SELECT count(*) FROM conversations");
    *open = scalar("SELECT count(*) FROM conversations WHERE state != 'closed'");
    return 0;
}

int64_t store_max_event_id(void) { return scalar("SELECT coalesce(max(id), 0) FROM events"); }
int64_t store_max_outbox_id(void) { return scalar("SELECT coalesce(max(id), 0) FROM outbox"); }
int64_t store_max_timer_id(void) { return scalar("SELECT coalesce(max(id), 0) FROM timers"); }
