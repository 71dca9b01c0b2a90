/* The SQLite store's schema, statements, operations and start-up loading.
 * store_sqlite.c runs them on the store thread. */
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

sqlite3 *store_db;
sqlite3_stmt *store_write_stmts[OP_COUNT][MAX_STATEMENTS];
sqlite3_stmt *store_page_stmts[STORE_PAGE_COUNT];
sqlite3_stmt *store_fetch_stmts[FETCH_COUNT][2];
sqlite3_stmt *store_begin_stmt, *store_commit_stmt, *store_rollback_stmt;

#define SCHEMA_VERSION 4
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

/* v3: an outbox entry keeps what its adapter declared about the platform's
 * failed responses (where the wait and the error text are); a journal event
 * knows how many handler generations led to it (a guard against handlers
 * feeding on their own events); each bus subscriber keeps its position in
 * the journal. */
static const char *const schema_v3 =
    "ALTER TABLE outbox ADD COLUMN hints TEXT;"
    "ALTER TABLE events ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE event_cursors(subscriber TEXT PRIMARY KEY, cursor INTEGER NOT NULL, seen REAL NOT NULL)"
    "  WITHOUT ROWID;";

/* v4: a desk's lists and counts of conversations (its queue by group, each
 * agent's chats, its cases by status) read an index, not the table. The
 * indexes hold only conversations with a desk: every message rewrites its
 * conversation's row, and a bot's conversation should not pay for three
 * more index entries it never needs (desk = ? implies desk IS NOT NULL,
 * so the desk's queries still use them). */
static const char *const schema_v4 =
    "CREATE INDEX conversations_desk_queue ON conversations(desk, state, grp, rowid) WHERE desk IS NOT NULL;"
    "CREATE INDEX conversations_desk_agent ON conversations(desk, agent, state) WHERE desk IS NOT NULL;"
    "CREATE INDEX conversations_desk_status ON conversations(desk, status, rowid) WHERE desk IS NOT NULL;";

static const char *const schemas[SCHEMA_VERSION + 1] = { NULL, schema_v1, schema_v2, schema_v3, schema_v4 };


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
    [OP_INSERT_EVENT] = {
        "INSERT INTO events(id, conversation_id, type, data, created, depth) VALUES(?1,?2,?3,?4,?5,?6)" },
    [OP_INSERT_KEY] = {
        "INSERT OR REPLACE INTO conversation_keys(conversation_id, key, message_id, created) VALUES(?1,?2,?3,?4)" },
    [OP_INSERT_OUTBOX] = {
        "INSERT INTO outbox(id, conversation_id, lane, kind, target, method, url, headers, body, data,"
        " on_result, idem_key, state, attempts, next_attempt, created, hints)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,'pending',?13,?14,?15,?16)" },
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
    /* never backwards: a cursor write queued again after a failed batch may
     * land after a newer one */
    [OP_PUT_CURSOR] = { "INSERT INTO event_cursors(subscriber, cursor, seen) VALUES(?1,?2,?3)"
                        " ON CONFLICT(subscriber) DO UPDATE SET cursor=max(cursor, ?2), seen=max(seen, ?3)" },
    [OP_DELETE_CURSOR] = { "DELETE FROM event_cursors WHERE subscriber=?1" },
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

#define MSG_JSON                                                                                    \
    "json_object('id',id,'seq',seq,'author',json_object('kind',author_kind,'name',author_name,"     \
    "'id',author_id),'text',text,'attachments',json(attachments),'buttons',json(buttons),"          \
    "'provider_ids',json(provider_ids),'created',created)"

/* Each page read builds its whole answer as one JSON text. Cursors are the
 * sort key of the last item returned, as text. Parameters are bound by
 * name from struct store_page_query. Lists and counts of conversations
 * have no fixed statement: store_read.c builds theirs from their filters. */
static const char *const page_sql[STORE_PAGE_COUNT] = {
    [STORE_PAGE_CONVERSATION] =
        "SELECT json_object('conversation', json_insert(json(c.j), '$.messages',"
        "  (SELECT json_group_array(json(m)) FROM (SELECT * FROM (SELECT seq, " MSG_JSON " AS m"
        "   FROM messages WHERE conversation_id=:id ORDER BY seq DESC LIMIT :messages) ORDER BY seq))))"
        " FROM (SELECT " CONV_JSON " AS j FROM conversations WHERE id=:id) AS c",
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
                       " idem_key, attempts, next_attempt, created, hints"


/* Journal types that are engine events (docs/events.md), with their bus
 * names and data: a field change names its field, a message event carries
 * the message's text and attachments. Every other type stays in the
 * journal only. */
#define BUS_TYPES                                                                                   \
    "('created','message','state','desk','group','agent','tag_added','tag_removed','switch',"      \
    "'livechat_started','livechat_finished','agent_status')"
#define BUS_NAME                                                                                    \
    "CASE e.type WHEN 'created' THEN 'conversation.created' WHEN 'message' THEN 'message.created'" \
    " WHEN 'state' THEN 'conversation.state_changed' WHEN 'tag_added' THEN 'tag.added'"            \
    " WHEN 'tag_removed' THEN 'tag.removed' WHEN 'switch' THEN 'livechat.requested'"               \
    " WHEN 'livechat_started' THEN 'livechat.started' WHEN 'livechat_finished' THEN 'livechat.ended'" \
    " WHEN 'agent_status' THEN 'agent.status_changed' ELSE 'conversation.assigned' END"
#define BUS_DATA                                                                                    \
    "CASE WHEN e.type IN ('desk','group','agent') THEN json_set(e.data, '$.field', e.type)"       \
    " WHEN e.type = 'message' THEN json_set(e.data, '$.text', m.text, '$.attachments', json(m.attachments))" \
    " ELSE json(e.data) END"

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
    [FETCH_BUS_EVENTS] = {
        "SELECT e.id, e.conversation_id, c.channel, e.depth, e.created, " BUS_NAME ", " BUS_DATA
        " FROM events e LEFT JOIN conversations c ON c.id = e.conversation_id"
        " LEFT JOIN messages m ON e.type = 'message' AND m.id = json_extract(e.data, '$.id')"
        " WHERE e.id > ?5 AND e.type IN " BUS_TYPES " ORDER BY e.id LIMIT ?6", NULL },
    [FETCH_EVENT_BOUNDS] = { "SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM events", NULL },
};

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

struct store_op *store_insert_event(const char *conversation_id, const char *type, const char *data, double created,
                                    int depth)
{
    struct store_op *op = op_new(OP_INSERT_EVENT);
    put_int(op, 0);   /* the id, given when the write joins a batch (store_submit) */
    put_str(op, conversation_id);
    put_str(op, type);
    put_str(op, data ? data : "{}");
    put_real(op, created);
    put_int(op, depth);
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
    put_str(op, e->hints);
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

struct store_op *store_put_cursor(const char *subscriber, int64_t cursor, double seen)
{
    struct store_op *op = op_new(OP_PUT_CURSOR);
    put_str(op, subscriber);
    put_int(op, cursor);
    put_real(op, seen);
    return op;
}

struct store_op *store_delete_cursor(const char *subscriber)
{
    struct store_op *op = op_new(OP_DELETE_CURSOR);
    put_str(op, subscriber);
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

/* Opening, migrations, start-up loading */

static int exec(const char *sql, struct sb_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(store_db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        if (err)
            sb_error_set(err, "store", 0, "%s", msg ? msg : sqlite3_errmsg(store_db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int migrate(struct sb_error *err)
{
    sqlite3_stmt *st;
    int version = 0, v;
    if (sqlite3_prepare_v2(store_db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
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
        if (exec("BEGIN", err) || exec(schemas[v], err) || exec(set, err) ||
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
    return sqlite3_prepare_v3(store_db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) == SQLITE_OK ? 0 : -1;
}

static int prepare_all(struct sb_error *err)
{
    int i, s;
    for (i = 0; i < OP_COUNT; i++)
        for (s = 0; s < MAX_STATEMENTS && write_sql[i][s]; s++)
            if (prepare(write_sql[i][s], &store_write_stmts[i][s]))
                goto fail;
    for (i = 0; i < STORE_PAGE_COUNT; i++)
        if (page_sql[i] && prepare(page_sql[i], &store_page_stmts[i]))
            goto fail;
    for (i = 0; i < FETCH_COUNT; i++)
        for (s = 0; s < 2 && fetch_sql[i][s]; s++)
            if (prepare(fetch_sql[i][s], &store_fetch_stmts[i][s]))
                goto fail;
    if (prepare("BEGIN IMMEDIATE", &store_begin_stmt) || prepare("COMMIT", &store_commit_stmt) ||
        prepare("ROLLBACK", &store_rollback_stmt))
        goto fail;
    return 0;
fail:
    sb_error_set(err, "store", 0, "cannot prepare statement: %s", sqlite3_errmsg(store_db));
    return -1;
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
    if (sqlite3_prepare_v2(store_db, sql, -1, &st, NULL) != SQLITE_OK) {
        sb_log(SB_LOG_ERROR, "store: cannot load", "error", sqlite3_errmsg(store_db), NULL);
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
    int rank = (int)r->num[16], size = (int)r->num[17];
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
    if (sqlite3_prepare_v2(store_db, "SELECT count(*) FROM outbox WHERE state = 'pending'", -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        *pending_total = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return load_rows("SELECT " OUTBOX_COLUMNS ", rank, size FROM (SELECT *,"
                     " row_number() OVER (PARTITION BY lane ORDER BY id) AS rank,"
                     " count(*) OVER (PARTITION BY lane) AS size FROM outbox WHERE state = 'pending')"
                     " WHERE rank <= ?1 ORDER BY id", per_lane, 1, window_row, &w);
}

int store_load_outbox_handlers(store_row_fn fn, void *arg)
{
    return load_rows("SELECT kind, target, on_result, count(*) FROM outbox WHERE state = 'pending'"
                     " AND (kind = 'job' OR on_result IS NOT NULL) GROUP BY kind, target, on_result", 0, 0, fn, arg);
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

int store_load_cursors(store_row_fn fn, void *arg)
{
    return load_rows("SELECT subscriber, cursor, seen FROM event_cursors", 0, 0, fn, arg);
}

static int64_t scalar(const char *sql)
{
    sqlite3_stmt *st;
    int64_t v = 0;
    if (sqlite3_prepare_v2(store_db, sql, -1, &st, NULL) != SQLITE_OK)
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

struct store_op *store_params_new(void) { return op_new(OP_COUNT); }
void store_put_str(struct store_op *op, const char *s) { put_str(op, s); }
void store_put_real(struct store_op *op, double d) { put_real(op, d); }
void store_put_int(struct store_op *op, int64_t i) { put_int(op, i); }

int store_sql_open(const char *path, enum store_sync sync, struct sb_error *err)
{
    static const char *const sync_pragma[] = {
        "PRAGMA synchronous = FULL", "PRAGMA synchronous = NORMAL", "PRAGMA synchronous = OFF"
    };
    if (sqlite3_open_v2(path, &store_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        sb_error_set(err, path, 0, "cannot open database: %s", store_db ? sqlite3_errmsg(store_db) : "out of memory");
        return -1;
    }
    sqlite3_busy_timeout(store_db, 5000);
    /* A larger checkpoint interval copies each hot page (index roots, the
     * right edge of time-ordered indexes) once per checkpoint instead of
     * many times; the page cache keeps the working set off the disk. */
    if (exec("PRAGMA journal_mode = WAL", err) || exec(sync_pragma[sync], err) ||
        exec("PRAGMA foreign_keys = OFF", err) || exec("PRAGMA wal_autocheckpoint = 8192", err) ||
        exec("PRAGMA cache_size = -65536", err) || exec("PRAGMA journal_size_limit = 67108864", err) ||
        migrate(err) || prepare_all(err))
        return -1;
    return 0;
}

void store_sql_close(void)
{
    int i, s;
    for (i = 0; i < OP_COUNT; i++)
        for (s = 0; s < MAX_STATEMENTS; s++)
            sqlite3_finalize(store_write_stmts[i][s]), store_write_stmts[i][s] = NULL;
    for (i = 0; i < STORE_PAGE_COUNT; i++)
        sqlite3_finalize(store_page_stmts[i]), store_page_stmts[i] = NULL;
    for (i = 0; i < FETCH_COUNT; i++)
        for (s = 0; s < 2; s++)
            sqlite3_finalize(store_fetch_stmts[i][s]), store_fetch_stmts[i][s] = NULL;
    sqlite3_finalize(store_begin_stmt);
    sqlite3_finalize(store_commit_stmt);
    sqlite3_finalize(store_rollback_stmt);
    store_begin_stmt = store_commit_stmt = store_rollback_stmt = NULL;
    if (store_db)
        sqlite3_close(store_db);
    store_db = NULL;
}
