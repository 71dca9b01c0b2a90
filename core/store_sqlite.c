/* SQLite (WAL) backend of the store. One connection, used only by the store
 * thread once it runs (and by the start-up loaders before that). The loop
 * thread hands over work items (a batch of writes, or a read) through a
 * mutex-protected queue and learns about finished ones through a pipe
 * watched by the event loop.
 *
 * Group commit: writes join the open batch; a batch is handed to the thread
 * as soon as none is in flight, so under load each commit (and each fsync)
 * carries every write that arrived while the previous one was running. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "log.h"
#include "loop.h"

#define SCHEMA_VERSION 1

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

/* One statement per write operation, values bound as ?1, ?2, ... in the
 * order store.h lists them. */
static const char *const write_sql[STORE_OP_COUNT] = {
    [STORE_CONV_UPSERT] =
        "INSERT INTO conversations(id, channel, client_id, state, desk, grp, agent, status, tags, profile,"
        " data, last_seq, created, updated) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
        " ON CONFLICT(id) DO UPDATE SET state=?4, desk=?5, grp=?6, agent=?7, status=?8, tags=?9,"
        " profile=?10, data=?11, last_seq=?12, updated=?14",
    [STORE_MSG_INSERT] =
        "INSERT INTO messages(conversation_id, seq, id, author_kind, author_name, author_id, text,"
        " attachments, buttons, provider_ids, created) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
    [STORE_MSG_SET_PROVIDER_IDS] = "UPDATE messages SET provider_ids=?2 WHERE id=?1",
    [STORE_EVENT_INSERT] = "INSERT INTO events(id, conversation_id, type, data, created) VALUES(?1,?2,?3,?4,?5)",
    [STORE_IDEMP_INSERT] =
        "INSERT OR REPLACE INTO idempotency(channel, key, conversation_id, message_id, created)"
        " VALUES(?1,?2,?3,?4,?5)",
    [STORE_OUTBOX_INSERT] =
        "INSERT INTO outbox(id, conversation_id, lane, kind, target, method, url, headers, body, data,"
        " on_result, idem_key, state, attempts, next_attempt, created)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)",
    [STORE_OUTBOX_UPDATE] =
        "UPDATE outbox SET state=?2, attempts=?3, next_attempt=?4, last_error=?5, finished=?6 WHERE id=?1",
    [STORE_KV_PUT] = "INSERT INTO kv(key, value, expires) VALUES(?1,?2,?3)"
                     " ON CONFLICT(key) DO UPDATE SET value=?2, expires=?3",
    [STORE_KV_DELETE] = "DELETE FROM kv WHERE key=?1",
    [STORE_TIMER_PUT] = "INSERT OR REPLACE INTO timers(id, due, interval, handler, data) VALUES(?1,?2,?3,?4,?5)",
    [STORE_TIMER_DELETE] = "DELETE FROM timers WHERE id=?1",
};

#define CONV_JSON                                                                                   \
    "json_object('id',id,'channel',channel,'client_id',client_id,'state',state,'desk',desk,"       \
    "'group',grp,'agent',agent,'status',status,'tags',json(tags),'client',json(profile),"           \
    "'data',json(data),'created',created,'updated',updated)"
#define MSG_JSON                                                                                    \
    "json_object('id',id,'seq',seq,'author',json_object('kind',author_kind,'name',author_name,"     \
    "'id',author_id),'text',text,'attachments',json(attachments),'buttons',json(buttons),"          \
    "'provider_ids',json(provider_ids),'created',created)"

/* Each read builds its whole answer as one JSON text. Cursors are the
 * sort key of the last item returned, as text. */
static const char *const read_sql[STORE_READ_COUNT] = {
    [STORE_READ_CONVERSATION] =
        "SELECT json_object('conversation', json_insert(json(c.j), '$.messages',"
        "  (SELECT json_group_array(json(m)) FROM (SELECT * FROM (SELECT seq, " MSG_JSON " AS m"
        "   FROM messages WHERE conversation_id=?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq))))"
        " FROM (SELECT " CONV_JSON " AS j FROM conversations WHERE id=?1) AS c",
    [STORE_READ_CONVERSATIONS] =
        "SELECT json_object('conversations', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = ?3 THEN CAST(min(r) AS TEXT) END)"
        " FROM (SELECT rowid AS r, " CONV_JSON " AS j FROM conversations"
        "  WHERE (?1 IS NULL OR state=?1) AND (?2 IS NULL OR channel=?2)"
        "  AND (?4 IS NULL OR rowid < CAST(?4 AS INTEGER)) ORDER BY rowid DESC LIMIT ?3)",
    [STORE_READ_MESSAGES] =
        "SELECT json_object('messages', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = ?2 THEN CAST(max(s) AS TEXT) END)"
        " FROM (SELECT seq AS s, " MSG_JSON " AS j FROM messages WHERE conversation_id=?1"
        "  AND (?3 IS NULL OR seq > CAST(?3 AS INTEGER)) ORDER BY seq LIMIT ?2)",
    [STORE_READ_EVENTS] =
        "SELECT json_object('events', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = ?2 THEN CAST(max(i) AS TEXT) END)"
        " FROM (SELECT id AS i, json_object('id',id,'type',type,'data',json(data),'created',created) AS j"
        "  FROM events WHERE conversation_id=?1 AND (?3 IS NULL OR id > CAST(?3 AS INTEGER))"
        "  ORDER BY id LIMIT ?2)",
    [STORE_READ_OUTBOX_DEAD] =
        "SELECT json_object('dead', json_group_array(json(j)),"
        " 'next_cursor', CASE WHEN count(*) = ?1 THEN CAST(max(i) AS TEXT) END)"
        " FROM (SELECT id AS i, json_object('id',id,'conversation_id',conversation_id,'lane',lane,"
        "  'kind',kind,'target',target,'method',method,'url',url,'attempts',attempts,"
        "  'reason',last_error,'created',created,'died_at',finished) AS j"
        "  FROM outbox WHERE state='dead' AND (?2 IS NULL OR id > CAST(?2 AS INTEGER)) ORDER BY id LIMIT ?1)",
    [STORE_READ_OUTBOX_ENTRY] =
        "SELECT json_object('id',id,'conversation_id',conversation_id,'lane',lane,'kind',kind,"
        " 'target',target,'method',method,'url',url,'headers',headers,'body',CAST(body AS TEXT),"
        " 'data',data,'on_result',on_result,'idem_key',idem_key,'state',state,'attempts',attempts,"
        " 'created',created,'reason',last_error) FROM outbox WHERE id=?1",
};

enum work_kind { WORK_BATCH, WORK_READ, WORK_STOP };

struct work {
    enum work_kind kind;
    uint64_t seq;
    struct store_op *ops, *ops_tail;
    size_t nops;
    store_read_fn read_fn;
    void *read_arg;
    int ok;
    char *result;
    size_t result_len;
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
static sqlite3_stmt *write_stmts[STORE_OP_COUNT];
static sqlite3_stmt *read_stmts[STORE_READ_COUNT];
static sqlite3_stmt *begin_stmt, *commit_stmt, *rollback_stmt;

static pthread_t thread;
static int thread_running;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct work *todo_head, *todo_tail;   /* loop -> thread */
static struct work *done_head, *done_tail;   /* thread -> loop */
static int notify_pipe[2] = { -1, -1 };
static struct event *notify_ev, *submit_ev;

/* loop-thread state */
static struct work *open_batch;
static uint64_t last_seq, committed_seq;
static int batches_in_flight;
static struct waiter *waiters, *waiters_tail;
static struct store_stats stats;
static void (*flush_hook)(void);
static int flushing;

void store_set_flush_hook(void (*hook)(void)) { flush_hook = hook; }

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
uint64_t store_committed_seq(void) { return committed_seq; }
uint64_t store_pending_seq(void) { return open_batch ? open_batch->seq : committed_seq; }

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

struct store_op *store_op_new(int type)
{
    struct store_op *op = sb_xcalloc(1, sizeof *op);
    op->type = type;
    return op;
}

static struct store_value *next_value(struct store_op *op)
{
    if (op->n >= STORE_MAX_VALUES) {
        sb_log(SB_LOG_ERROR, "store: too many values in an operation", NULL);
        abort();
    }
    return &op->v[op->n++];
}

void store_op_null(struct store_op *op) { next_value(op)->type = SV_NULL; }

void store_op_int(struct store_op *op, int64_t i)
{
    struct store_value *v = next_value(op);
    v->type = SV_INT;
    v->i = i;
}

void store_op_real(struct store_op *op, double d)
{
    struct store_value *v = next_value(op);
    v->type = SV_REAL;
    v->d = d;
}

void store_op_text(struct store_op *op, const char *s, size_t len)
{
    struct store_value *v = next_value(op);
    if (!s) {
        v->type = SV_NULL;
        return;
    }
    v->type = SV_TEXT;
    v->s = sb_xmalloc(len + 1);
    memcpy(v->s, s, len);
    v->s[len] = '\0';
    v->len = len;
}

void store_op_str(struct store_op *op, const char *s) { store_op_text(op, s, s ? strlen(s) : 0); }

void store_op_free(struct store_op *op)
{
    int i;
    if (!op)
        return;
    for (i = 0; i < op->n; i++)
        free(op->v[i].s);
    free(op);
}

static void work_free(struct work *w)
{
    while (w->ops) {
        struct store_op *next = w->ops->next;
        store_op_free(w->ops);
        w->ops = next;
    }
    free(w->result);
    free(w);
}

/* Store thread */

static int bind_values(sqlite3_stmt *st, const struct store_op *op)
{
    int i, rc = SQLITE_OK;
    for (i = 0; i < op->n && rc == SQLITE_OK; i++) {
        const struct store_value *v = &op->v[i];
        switch (v->type) {
        case SV_NULL: rc = sqlite3_bind_null(st, i + 1); break;
        case SV_INT: rc = sqlite3_bind_int64(st, i + 1, v->i); break;
        case SV_REAL: rc = sqlite3_bind_double(st, i + 1, v->d); break;
        case SV_TEXT: rc = sqlite3_bind_text(st, i + 1, v->s, (int)v->len, SQLITE_STATIC); break;
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
    int rc = step_done(begin_stmt);
    for (op = w->ops; op && rc == SQLITE_OK; op = op->next) {
        sqlite3_stmt *st = write_stmts[op->type];
        rc = bind_values(st, op);
        if (rc == SQLITE_OK)
            rc = step_done(st);
        else
            sqlite3_reset(st);
    }
    if (rc == SQLITE_OK)
        rc = step_done(commit_stmt);
    if (rc != SQLITE_OK) {
        snprintf(w->error, sizeof w->error, "%s", sqlite3_errmsg(db));
        step_done(rollback_stmt);
        w->ok = 0;
    } else {
        w->ok = 1;
    }
}

static void run_read(struct work *w)
{
    struct store_op *op = w->ops;
    sqlite3_stmt *st = read_stmts[op->type];
    int rc = bind_values(st, op);
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

        if (w->kind == WORK_STOP) {
            free(w);
            return NULL;
        }
        if (w->kind == WORK_BATCH)
            run_batch(w);
        else
            run_read(w);

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

static void submit_open_batch(void)
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
        submit_open_batch();
}

static void batch_finished(struct work *w)
{
    batches_in_flight--;
    if (!w->ok) {
        char seq[24];
        stats.failures++;
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)w->seq);
        sb_log(SB_LOG_ERROR, "store: commit failed", "batch", seq, "error", w->error, NULL);
    }
    committed_seq = w->seq;
    while (waiters && waiters->seq <= w->seq) {
        struct waiter *x = waiters;
        waiters = x->next;
        if (!waiters)
            waiters_tail = NULL;
        x->fn(x->arg, w->ok);
        free(x);
    }
    /* Writes that arrived while this batch was committing go next, together. */
    if (batches_in_flight == 0)
        submit_open_batch();
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
        } else {
            stats.reads++;
            w->read_fn(w->read_arg, w->ok ? w->result : NULL, w->result_len, w->ok ? NULL : w->error);
        }
        work_free(w);
    }
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
    if (open_batch->ops_tail)
        open_batch->ops_tail->next = op;
    else
        open_batch->ops = op;
    open_batch->ops_tail = op;
    open_batch->nops++;
    stats.writes++;
    return open_batch->seq;
}

void store_when_committed(uint64_t seq, store_commit_fn fn, void *arg)
{
    struct waiter *x;
    if (seq == 0 || seq <= committed_seq) {
        fn(arg, 1);
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

void store_read(struct store_op *op, store_read_fn fn, void *arg)
{
    struct work *w;
    if (!thread_running) {
        store_op_free(op);
        fn(arg, NULL, 0, "the store is not open");
        return;
    }
    w = sb_xcalloc(1, sizeof *w);
    w->kind = WORK_READ;
    w->ops = op;
    w->read_fn = fn;
    w->read_arg = arg;
    /* Reads see every write queued before them. */
    run_flush_hook();
    if (open_batch) {
        batches_in_flight++;
        stats.batches++;
        hand_over(open_batch);
        open_batch = NULL;
    }
    hand_over(w);
}

/* Opening, migrations, start-up loading */

static int exec(const char *sql, struct sb_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sb_error_set(err, "store", 0, "%s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int migrate(struct sb_error *err)
{
    sqlite3_stmt *st;
    int version = 0;
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
    if (version < 1) {
        if (exec("BEGIN", err) || exec(schema_v1, err) || exec("PRAGMA user_version = 1", err) ||
            exec("COMMIT", err)) {
            exec("ROLLBACK", NULL);
            return -1;
        }
        sb_log(SB_LOG_INFO, "store: schema created", "version", "1", NULL);
    }
    return 0;
}

static int prepare_all(struct sb_error *err)
{
    int i;
    for (i = 0; i < STORE_OP_COUNT; i++)
        if (sqlite3_prepare_v3(db, write_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &write_stmts[i], NULL) != SQLITE_OK)
            goto fail;
    for (i = 0; i < STORE_READ_COUNT; i++)
        if (sqlite3_prepare_v3(db, read_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &read_stmts[i], NULL) != SQLITE_OK)
            goto fail;
    if (sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin_stmt, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "COMMIT", -1, &commit_stmt, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "ROLLBACK", -1, &rollback_stmt, NULL) != SQLITE_OK)
        goto fail;
    return 0;
fail:
    sb_error_set(err, "store", 0, "cannot prepare statement: %s", sqlite3_errmsg(db));
    return -1;
}

int store_open(const char *data_dir, enum store_sync sync, struct sb_error *err)
{
    char path[1024];
    static const char *const sync_pragma[] = {
        "PRAGMA synchronous = FULL", "PRAGMA synchronous = NORMAL", "PRAGMA synchronous = OFF"
    };
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
    int i;
    if (thread_running) {
        struct work *stop = sb_xcalloc(1, sizeof *stop);
        submit_open_batch();
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
    for (i = 0; i < STORE_OP_COUNT; i++)
        sqlite3_finalize(write_stmts[i]), write_stmts[i] = NULL;
    for (i = 0; i < STORE_READ_COUNT; i++)
        sqlite3_finalize(read_stmts[i]), read_stmts[i] = NULL;
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
}

static int load_rows(const char *sql, double param, int has_param, store_row_fn fn, void *arg)
{
    sqlite3_stmt *st;
    const char *text[STORE_MAX_VALUES];
    double num[STORE_MAX_VALUES];
    struct store_row row;
    int rc, i, n;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sb_log(SB_LOG_ERROR, "store: cannot load", "error", sqlite3_errmsg(db), NULL);
        return -1;
    }
    if (has_param)
        sqlite3_bind_double(st, 1, param);
    n = sqlite3_column_count(st);
    row.n = n;
    row.text = text;
    row.num = num;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (i = 0; i < n && i < STORE_MAX_VALUES; i++) {
            text[i] = (const char *)sqlite3_column_text(st, i);
            num[i] = sqlite3_column_double(st, i);
        }
        fn(arg, &row);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int store_load_conversations(store_row_fn fn, void *arg)
{
    return load_rows("SELECT id, channel, client_id, state, desk, grp, agent, status, tags, profile, data,"
                     " last_seq, created, updated FROM conversations ORDER BY rowid", 0, 0, fn, arg);
}

int store_load_recent_messages(int per_conversation, store_row_fn fn, void *arg)
{
    return load_rows("SELECT m.conversation_id, m.seq, m.id, m.author_kind, m.author_name, m.author_id, m.text,"
                     " m.attachments, m.buttons, m.provider_ids, m.created FROM conversations c"
                     " JOIN messages m ON m.conversation_id = c.id AND m.seq > c.last_seq - ?1"
                     " WHERE c.state != 'closed' ORDER BY c.rowid, m.seq",
                     per_conversation, 1, fn, arg);
}

int store_load_outbox_pending(store_row_fn fn, void *arg)
{
    return load_rows("SELECT id, conversation_id, lane, kind, target, method, url, headers, body, data,"
                     " on_result, idem_key, state, attempts, next_attempt, created FROM outbox"
                     " WHERE state = 'pending' ORDER BY id", 0, 0, fn, arg);
}

int store_load_idempotency(double since, store_row_fn fn, void *arg)
{
    return load_rows("SELECT channel, key, conversation_id, message_id, created FROM idempotency"
                     " WHERE created >= ?1", since, 1, fn, arg);
}

int store_load_kv(store_row_fn fn, void *arg)
{
    return load_rows("SELECT key, value, expires FROM kv", 0, 0, fn, arg);
}

int store_load_timers(store_row_fn fn, void *arg)
{
    return load_rows("SELECT id, due, interval, handler, data FROM timers ORDER BY id", 0, 0, fn, arg);
}

int64_t store_max_id(const char *table)
{
    char sql[128];
    sqlite3_stmt *st;
    int64_t v = 0;
    snprintf(sql, sizeof sql, "SELECT coalesce(max(id), 0) FROM %s", table);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}
