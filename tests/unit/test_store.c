#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "fixtures.h"
#include "loop.h"
#include "store.h"
#include "store_int.h"
#include "tests.h"

static int committed_ok = -1;
static char *read_result;
static int fetched = -1;
static char fetched_text[256];
static char fetched_hints[64];
static size_t fetched_len;

static void on_commit(void *arg, int ok)
{
    (void)arg;
    committed_ok = ok;
}

static void on_read(void *arg, const char *json, size_t len, const char *error)
{
    (void)arg;
    (void)len;
    read_result = strdup(json ? json : error);
}

static void run_until(int *flag_ok, char **flag_str)
{
    int i;
    for (i = 0; i < 2000; i++) {
        if ((flag_ok && *flag_ok != -1) || (flag_str && *flag_str))
            return;
        event_base_loop(sb_base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

static void put_conv(const char *id, const char *client, int system)
{
    struct store_conversation c;
    struct store_op *op;
    memset(&c, 0, sizeof c);
    c.id = id;
    c.channel = "web";
    c.client_id = client;
    c.state = "bot";
    c.status = "open";
    c.tags = "[]";
    c.profile = "{}";
    c.data = "{}";
    c.created = c.updated = 1.0;
    op = store_put_conversation(&c);
    if (system)
        store_submit_system(op);
    else
        store_submit(op);
}

static void wait_commit(uint64_t seq)
{
    committed_ok = -1;
    store_when_committed(seq, on_commit, NULL);
    run_until(&committed_ok, NULL);
}

static void test_group_commit_and_read(void)
{
    const char *dir = fixture_dir();
    struct sb_error err;
    struct store_page_query q;
    uint64_t seq;
    int64_t all = 0, open = 0;
    CHECK(store_open(dir, STORE_SYNC_NORMAL, &err) == 0);
    CHECK(store_start() == 0);
    put_conv("aaaaaaaaaaaaaaaaaaaa", "c1", 0);
    put_conv("bbbbbbbbbbbbbbbbbbbb", "c2", 0);
    seq = store_pending_seq();
    CHECK(seq > 0);
    CHECK(store_committed_seq() < seq);
    wait_commit(seq);
    CHECK(committed_ok == 1);
    CHECK(store_committed_seq() >= seq);
    CHECK(store_stats()->batches >= 1);

    memset(&q, 0, sizeof q);
    q.channel[0] = "web";
    q.nchannel = 1;
    q.limit = 1;
    read_result = NULL;
    store_read_page(STORE_PAGE_CONVERSATIONS, &q, on_read, NULL);
    run_until(NULL, &read_result);
    CHECK(read_result && strstr(read_result, "\"client_id\":\"c2\"") != NULL);   /* newest first */
    CHECK(read_result && strstr(read_result, "\"next_cursor\":\"2\"") != NULL);  /* a full page */
    free(read_result);
    read_result = NULL;
    store_close();

    /* reopening runs no migration twice and sees the rows */
    CHECK(store_open(dir, STORE_SYNC_FULL, &err) == 0);
    CHECK(store_count_conversations(&all, &open) == 0);
    CHECK(all == 2 && open == 2);
    store_close();
}

/* A failed batch fails the batches sent after it until the loop recovers,
 * and its system writes go again with the next batch. */
static void test_failed_batch_poisons_until_recovered(void)
{
    const char *dir = fixture_dir();
    struct sb_error err;
    uint64_t failed, later;
    int64_t all = 0, open = 0;
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    put_conv("cccccccccccccccccccc", "same", 0);
    put_conv("dddddddddddddddddddd", "same", 0);   /* UNIQUE(channel, client_id) fails the batch */
    put_conv("eeeeeeeeeeeeeeeeeeee", "kept", 1);   /* a system write in the same batch */
    failed = store_pending_seq();
    wait_commit(failed);
    CHECK(committed_ok == 0);
    CHECK(store_stats()->failures >= 1);
    /* without a batch hook the store recovers by itself; the system write
     * goes again in the next batch */
    later = failed + 1;
    wait_commit(later);
    CHECK(committed_ok == 1);
    /* a waiter asking late about the failed batch hears that it failed */
    committed_ok = -1;
    store_when_committed(failed, on_commit, NULL);
    CHECK(committed_ok == 0);
    store_close();
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    CHECK(store_count_conversations(&all, &open) == 0);
    CHECK(all == 1);   /* only the system write's row */
    store_close();
}

static void on_fetch(void *arg, const struct store_rows *rows, const char *error)
{
    (void)arg;
    fetched = error ? -2 : store_rows_count(rows);
    if (rows && store_rows_count(rows) > 0) {
        struct store_row r;
        store_rows_get(rows, 0, &r, NULL);
        fetched_len = r.len[8];
        memcpy(fetched_text, r.text[8], fetched_len < sizeof fetched_text ? fetched_len : sizeof fetched_text);
        snprintf(fetched_hints, sizeof fetched_hints, "%s", r.n > 15 && r.text[15] ? r.text[15] : "(null)");
    }
}

static int loaded_rows;
static size_t loaded_body_len;
static char loaded_hints[64];

static void count_outbox_row(void *arg, const struct store_row *r)
{
    (void)arg;
    loaded_rows++;
    loaded_body_len = r->len[8];
    snprintf(loaded_hints, sizeof loaded_hints, "%s", r->n > 15 && r->text[15] ? r->text[15] : "(null)");
}

static void test_binary_bodies_and_lane_windows(void)
{
    const char *dir = fixture_dir();
    struct sb_error err;
    struct store_outbox_entry e;
    int64_t total = 0;
    int i;
    static const char body[] = { 'a', 0, 'b', 0, 'c' };
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    memset(&e, 0, sizeof e);
    e.lane = "l";
    e.kind = "http";
    e.target = "t";
    e.url = "http://127.0.0.1/";
    e.body = body;
    e.body_len = sizeof body;
    e.idem_key = "k";
    e.created = 1;
    e.hints = "error_text json description";
    for (i = 1; i <= 5; i++) {
        e.id = i;
        store_submit(store_insert_outbox(&e));
    }
    fetched = -1;
    store_fetch_outbox_lane("l", 2, on_fetch, NULL);
    run_until(&fetched, NULL);
    CHECK(fetched == 2);
    CHECK(fetched_len == sizeof body && memcmp(fetched_text, body, sizeof body) == 0);
    CHECK_STR(fetched_hints, "error_text json description");
    store_close();
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    loaded_rows = 0;
    CHECK(store_load_outbox_pending(3, count_outbox_row, NULL, NULL, &total) == 0);
    CHECK(loaded_rows == 3 && total == 5);
    CHECK(loaded_body_len == sizeof body);   /* not cut at the first NUL */
    CHECK_STR(loaded_hints, "error_text json description");
    store_close();
}

/* A database of schema 1 moves its idempotency keys to their conversations. */
static void test_migration_from_v1(void)
{
    const char *dir = fixture_dir();
    char path[512];
    sqlite3 *db;
    struct sb_error err;
    memset(&err, 0, sizeof err);
    snprintf(path, sizeof path, "%s/switchboard.db", dir);
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    /* the schema a build of schema 1 created, as it was */
    CHECK(sqlite3_exec(db,
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
        "  handler TEXT NOT NULL, data TEXT);"
                       "INSERT INTO idempotency VALUES('web', 'm-1', 'ffffffffffffffffffff', 'm1', 5);"
                       "INSERT INTO outbox(id, lane, kind, target, url, idem_key, state, next_attempt, created)"
                       " VALUES(1, 'l', 'http', 't', 'http://127.0.0.1/', 'k', 'pending', 0, 1);"
                       "PRAGMA user_version = 1;", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    if (store_open(dir, STORE_SYNC_OFF, &err) != 0)
        fprintf(stderr, "  %s\n", err.message);
    CHECK(err.message[0] == '\0');
    {
        int64_t total = 0;
        loaded_rows = 0;
        strcpy(loaded_hints, "?");
        CHECK(store_load_outbox_pending(32, count_outbox_row, NULL, NULL, &total) == 0);
        CHECK(loaded_rows == 1 && total == 1);
        CHECK_STR(loaded_hints, "(null)");   /* schema 3 added the column: nothing declared */
    }
    store_close();
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    {
        sqlite3_stmt *st;
        CHECK(sqlite3_prepare_v2(db, "SELECT conversation_id, key FROM conversation_keys", -1, &st, NULL) == SQLITE_OK);
        CHECK(sqlite3_step(st) == SQLITE_ROW);
        CHECK_STR((const char *)sqlite3_column_text(st, 1), "m-1");
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
}

static struct {
    int n;
    int64_t id[8];
    char name[8][40], conv[8][24], data[8][200];
    int channel_null[8];
} bus_rows;
static int64_t hook_last = -1;
static int64_t bounds[2];

static void on_bus_rows(void *arg, const struct store_rows *rows, const char *error)
{
    int i;
    (void)arg;
    bus_rows.n = error ? -2 : store_rows_count(rows);
    for (i = 0; i < bus_rows.n && i < 8; i++) {
        struct store_row r;
        store_rows_get(rows, i, &r, NULL);
        bus_rows.id[i] = strtoll(r.text[0], NULL, 10);
        snprintf(bus_rows.conv[i], sizeof bus_rows.conv[i], "%s", r.text[1] ? r.text[1] : "(null)");
        bus_rows.channel_null[i] = r.text[2] == NULL;
        snprintf(bus_rows.name[i], sizeof bus_rows.name[i], "%s", r.text[5]);
        snprintf(bus_rows.data[i], sizeof bus_rows.data[i], "%s", r.text[6]);
    }
}

static void on_bounds(void *arg, const struct store_rows *rows, const char *error)
{
    struct store_row r;
    (void)arg;
    fetched = error ? -2 : store_rows_count(rows);
    if (fetched == 1) {
        store_rows_get(rows, 0, &r, NULL);
        bounds[0] = (int64_t)r.num[0];
        bounds[1] = (int64_t)r.num[1];
    }
}

static void on_events_committed(int64_t last) { hook_last = last; }

static void fetch_bus(int64_t after, int limit)
{
    bus_rows.n = -1;
    store_fetch_bus_events(after, limit, on_bus_rows, NULL);
    run_until(&bus_rows.n, NULL);
}

/* Journal ids are given as writes join a batch (in commit order), whatever
 * order the operations were built in; the bus reads back engine events
 * only, with their names and data. */
static void test_journal_ids_and_bus_reads(void)
{
    const char *dir = fixture_dir();
    struct sb_error err;
    struct store_message m;
    struct store_op *late, *early;
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    store_set_events_hook(on_events_committed);
    put_conv("ffffffffffffffffffff", "c9", 0);
    memset(&m, 0, sizeof m);
    m.conversation_id = "ffffffffffffffffffff";
    m.id = "m1";
    m.seq = 1;
    m.author_kind = "client";
    m.text = "hello";
    m.text_len = 5;
    m.attachments = "[]";
    m.buttons = "[]";
    m.provider_ids = "{}";
    m.created = 2;
    store_submit(store_insert_message(&m));
    /* built first, queued last: it gets the last id */
    late = store_insert_event("", "agent_status", "{\"desk\":\"d\",\"agent\":\"a\",\"status\":\"away\"}", 3, 0);
    early = store_insert_event("ffffffffffffffffffff", "status", "{\"from\":\"open\",\"to\":\"x\"}", 3, 0);
    store_submit(early);
    store_submit(store_insert_event("ffffffffffffffffffff", "message",
                                    "{\"id\":\"m1\",\"seq\":1,\"author\":{\"kind\":\"client\"}}", 3, 0));
    store_submit(store_insert_event("ffffffffffffffffffff", "agent", "{\"from\":null,\"to\":\"olga\"}", 3, 1));
    store_submit(late);
    CHECK(store_last_event_id() == 4);
    wait_commit(store_pending_seq());
    CHECK(committed_ok == 1);
    CHECK(hook_last == 4);

    fetch_bus(0, 10);
    CHECK(bus_rows.n == 3);   /* "status" stays in the journal only */
    CHECK(bus_rows.id[0] == 2 && bus_rows.id[1] == 3 && bus_rows.id[2] == 4);
    CHECK_STR(bus_rows.name[0], "message.created");
    CHECK(strstr(bus_rows.data[0], "\"text\":\"hello\"") && strstr(bus_rows.data[0], "\"attachments\":[]"));
    CHECK_STR(bus_rows.name[1], "conversation.assigned");
    CHECK(strstr(bus_rows.data[1], "\"field\":\"agent\"") != NULL);
    CHECK_STR(bus_rows.name[2], "agent.status_changed");
    CHECK_STR(bus_rows.conv[2], "");
    CHECK(bus_rows.channel_null[2] && !bus_rows.channel_null[0]);
    fetch_bus(2, 1);
    CHECK(bus_rows.n == 1 && bus_rows.id[0] == 3);
    fetched = -1;
    store_fetch_event_bounds(on_bounds, NULL);
    run_until(&fetched, NULL);
    CHECK(fetched == 1 && bounds[0] == 1 && bounds[1] == 4);
    store_set_events_hook(NULL);
    store_close();
    /* ids go on after a restart */
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    CHECK(store_last_event_id() == 4);
    store_close();
}

/* A desk's conversations, in the order they were stored (rowid 1 to 8). */
static const struct {
    const char *id, *channel, *state, *desk, *group, *agent, *status;
} desk_rows[] = {
    { "q1", "web", "queued", "d1", "g1", NULL, "open" },
    { "q2", "web", "queued", "d1", "g2", NULL, "open" },
    { "a1", "web", "agent", "d1", "g1", "ann", "open" },
    { "a2", "tg", "agent", "d1", "g1", "bob", "pending" },
    { "a3", "tg", "agent", "d1", "g2", "ann", "open" },
    { "c1", "web", "closed", "d1", "g1", "ann", "solved" },
    { "o1", "web", "queued", "d2", "g1", NULL, "open" },
    { "b1", "web", "bot", NULL, NULL, NULL, "open" },
};

static void put_desk_rows(void)
{
    size_t i;
    for (i = 0; i < sizeof desk_rows / sizeof *desk_rows; i++) {
        struct store_conversation c;
        memset(&c, 0, sizeof c);
        c.id = desk_rows[i].id;
        c.client_id = desk_rows[i].id;
        c.channel = desk_rows[i].channel;
        c.state = desk_rows[i].state;
        c.desk = desk_rows[i].desk;
        c.group = desk_rows[i].group;
        c.agent = desk_rows[i].agent;
        c.status = desk_rows[i].status;
        c.tags = "[]";
        c.profile = c.data = "{}";
        c.created = c.updated = 1.0 + (double)i;
        store_submit(store_put_conversation(&c));
    }
    wait_commit(store_pending_seq());
}

/* Reads a page; returns the answer (or the error), which the next read frees. */
static const char *read_page(enum store_page page, const struct store_page_query *q)
{
    free(read_result);
    read_result = NULL;
    store_read_page(page, q, on_read, NULL);
    run_until(NULL, &read_result);
    return read_result ? read_result : "(no answer)";
}

/* "ids=a,b next=N" of a conversations page, for comparing whole pages. */
static const char *page_summary(const char *json)
{
    static char out[256];
    const char *p = json, *cur;
    size_t n = 0;
    n += (size_t)snprintf(out, sizeof out, "ids=");
    while ((p = strstr(p, "{\"id\":\"")) && n < sizeof out - 8) {
        const char *end;
        p += 7;
        end = strchr(p, '"');
        n += (size_t)snprintf(out + n, sizeof out - n, "%s%.*s", out[n - 1] == '=' ? "" : ",", (int)(end - p), p);
        p = end;
    }
    cur = strstr(json, "\"next_cursor\":");
    snprintf(out + n, sizeof out - n, " next=%.*s", cur ? (int)strcspn(cur + 14, "}") : 4, cur ? cur + 14 : "none");
    return out;
}

static const char *list(const struct store_page_query *q)
{
    return page_summary(read_page(STORE_PAGE_CONVERSATIONS, q));
}

static void query_init(struct store_page_query *q)
{
    memset(q, 0, sizeof q[0]);
    q->limit = 50;
}

static void test_conversation_filters(void)
{
    struct sb_error err;
    struct store_page_query q;
    CHECK(store_open(fixture_dir(), STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    put_desk_rows();

    query_init(&q);
    q.desk = "d1";
    CHECK_STR(list(&q), "ids=c1,a3,a2,a1,q2,q1 next=null");   /* newest first by default */
    q.oldest_first = 1;
    CHECK_STR(list(&q), "ids=q1,q2,a1,a2,a3,c1 next=null");
    /* a group's queue, oldest first */
    q.state[0] = "queued";
    q.nstate = 1;
    q.group = "g1";
    CHECK_STR(list(&q), "ids=q1 next=null");
    q.group = "g2";
    CHECK_STR(list(&q), "ids=q2 next=null");

    /* no agent: agent IS NULL, with and without a desk */
    query_init(&q);
    q.no_agent = 1;
    CHECK_STR(list(&q), "ids=b1,o1,q2,q1 next=null");
    q.desk = "d1";
    CHECK_STR(list(&q), "ids=q2,q1 next=null");
    /* one agent's chats, open ones only */
    query_init(&q);
    q.desk = "d1";
    q.agent = "ann";
    CHECK_STR(list(&q), "ids=c1,a3,a1 next=null");
    q.state[0] = "queued";
    q.state[1] = "agent";
    q.nstate = 2;
    CHECK_STR(list(&q), "ids=a3,a1 next=null");

    /* lists of statuses and channels are INs, ANDed with the rest */
    query_init(&q);
    q.desk = "d1";
    q.status[0] = "pending";
    q.status[1] = "solved";
    q.nstatus = 2;
    CHECK_STR(list(&q), "ids=c1,a2 next=null");
    q.nstatus = 0;
    q.channel[0] = "tg";
    q.nchannel = 1;
    CHECK_STR(list(&q), "ids=a3,a2 next=null");
    q.channel[1] = "web";
    q.nchannel = 2;
    q.state[0] = "agent";
    q.nstate = 1;
    q.status[0] = "open";
    q.nstatus = 1;
    CHECK_STR(list(&q), "ids=a3,a1 next=null");
    q.desk = "d2";
    CHECK_STR(list(&q), "ids= next=null");
    /* values are bound, not pasted into the SQL */
    query_init(&q);
    q.desk = "d1' OR '1'='1";
    CHECK_STR(list(&q), "ids= next=null");
    free(read_result);
    read_result = NULL;
    store_close();
}

static void test_conversation_pages_both_orders(void)
{
    struct sb_error err;
    struct store_page_query q;
    CHECK(store_open(fixture_dir(), STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    put_desk_rows();

    query_init(&q);
    q.desk = "d1";
    q.limit = 2;
    CHECK_STR(list(&q), "ids=c1,a3 next=\"5\"");
    q.cursor = "5";
    CHECK_STR(list(&q), "ids=a2,a1 next=\"3\"");
    q.cursor = "3";
    CHECK_STR(list(&q), "ids=q2,q1 next=\"1\"");
    q.cursor = "1";
    CHECK_STR(list(&q), "ids= next=null");

    q.oldest_first = 1;
    q.limit = 4;
    q.cursor = NULL;
    CHECK_STR(list(&q), "ids=q1,q2,a1,a2 next=\"4\"");
    q.cursor = "4";
    CHECK_STR(list(&q), "ids=a3,c1 next=null");
    /* a cursor keeps the filters: the queue of d1 after q1 */
    q.state[0] = "queued";
    q.nstate = 1;
    q.limit = 1;
    q.cursor = NULL;
    CHECK_STR(list(&q), "ids=q1 next=\"1\"");
    q.cursor = "1";
    CHECK_STR(list(&q), "ids=q2 next=\"2\"");
    q.cursor = "2";
    CHECK_STR(list(&q), "ids= next=null");
    free(read_result);
    read_result = NULL;
    store_close();
}

static void test_conversation_counts(void)
{
    struct sb_error err;
    struct store_page_query q;
    CHECK(store_open(fixture_dir(), STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    put_desk_rows();

    query_init(&q);
    q.desk = "d1";
    q.by = STORE_BY_AGENT;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "{\"ann\":3,\"bob\":1}");   /* no agent: left out */
    q.state[0] = "agent";
    q.nstate = 1;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "{\"ann\":2,\"bob\":1}");
    q.channel[0] = "tg";
    q.nchannel = 1;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "{\"ann\":1,\"bob\":1}");
    q.nchannel = 0;
    q.by = STORE_BY_GROUP;
    q.state[0] = "queued";
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "{\"g1\":1,\"g2\":1}");
    q.state[1] = "agent";
    q.nstate = 2;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "{\"g1\":3,\"g2\":2}");
    q.nstate = 0;
    q.by = STORE_BY_STATUS;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "{\"open\":4,\"pending\":1,\"solved\":1}");
    q.desk = "nobody";
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "{}");
    free(read_result);
    read_result = NULL;
    store_close();
}

/* Queries the interface does not promise to answer are refused with a
 * message, before they reach the store thread. */
static void test_conversation_reads_refused(void)
{
    struct sb_error err;
    struct store_page_query q;
    CHECK(store_open(fixture_dir(), STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    query_init(&q);
    q.by = STORE_BY_AGENT;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "desk is required");
    q.desk = "d1";
    q.by = STORE_BY_NONE;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATION_COUNTS, &q), "by must be agent, group or status");
    query_init(&q);
    q.nstate = STORE_MAX_STATES + 1;
    CHECK_STR(read_page(STORE_PAGE_CONVERSATIONS, &q), "too many values in a filter");
    q.nstate = 1;   /* state[0] is NULL */
    CHECK_STR(read_page(STORE_PAGE_CONVERSATIONS, &q), "a filter value is missing");
    query_init(&q);
    q.cursor = "1 OR 1";
    CHECK_STR(read_page(STORE_PAGE_CONVERSATIONS, &q), "cursor is not valid");
    free(read_result);
    read_result = NULL;
    store_close();
}

/* The plan SQLite makes for a query of this shape, one line per step. */
static void query_plan(const char *path, enum store_page page, const struct store_page_query *q, char *out,
                       size_t size)
{
    struct read_binds b;
    sqlite3 *db;
    sqlite3_stmt *st;
    char *sql = store_read_sql(page, q, &b), *explain = sqlite3_mprintf("EXPLAIN QUERY PLAN %s", sql);
    size_t n = 0;
    out[0] = '\0';
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, explain, -1, &st, NULL) == SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW && n < size)
        n += (size_t)snprintf(out + n, size - n, "%s\n", (const char *)sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
    sqlite3_close(db);
    sqlite3_free(explain);
    sqlite3_free(sql);
}

/* A desk's reads search an index of schema 4, and the queue and an agent's
 * chats come out of it in rowid order, without sorting. */
static void test_desk_reads_use_an_index(void)
{
    const char *dir = fixture_dir();
    char path[512], plan[1024];
    struct sb_error err;
    struct store_page_query q;
    snprintf(path, sizeof path, "%s/switchboard.db", dir);
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    store_close();

    query_init(&q);
    q.desk = "d1";
    q.state[0] = "queued";
    q.nstate = 1;
    q.group = "g1";
    q.oldest_first = 1;
    query_plan(path, STORE_PAGE_CONVERSATIONS, &q, plan, sizeof plan);
    CHECK(strstr(plan, "SEARCH conversations USING INDEX conversations_desk_queue") != NULL);
    CHECK(strstr(plan, "TEMP B-TREE") == NULL);

    query_init(&q);
    q.desk = "d1";
    q.agent = "ann";
    q.state[0] = "agent";
    q.nstate = 1;
    query_plan(path, STORE_PAGE_CONVERSATIONS, &q, plan, sizeof plan);
    CHECK(strstr(plan, "SEARCH conversations USING INDEX conversations_desk_agent") != NULL);
    CHECK(strstr(plan, "TEMP B-TREE") == NULL);

    query_init(&q);
    q.desk = "d1";
    q.status[0] = "open";
    q.nstatus = 1;
    query_plan(path, STORE_PAGE_CONVERSATIONS, &q, plan, sizeof plan);
    CHECK(strstr(plan, "SEARCH conversations USING INDEX conversations_desk_status") != NULL);
    CHECK(strstr(plan, "TEMP B-TREE") == NULL);

    query_init(&q);
    q.desk = "d1";
    q.state[0] = "agent";
    q.nstate = 1;
    q.by = STORE_BY_AGENT;
    query_plan(path, STORE_PAGE_CONVERSATION_COUNTS, &q, plan, sizeof plan);
    CHECK(strstr(plan, "SEARCH conversations USING COVERING INDEX conversations_desk_agent") != NULL);
    q.state[0] = "queued";
    q.by = STORE_BY_GROUP;
    query_plan(path, STORE_PAGE_CONVERSATION_COUNTS, &q, plan, sizeof plan);
    CHECK(strstr(plan, "SEARCH conversations USING COVERING INDEX conversations_desk_queue") != NULL);
    q.nstate = 0;
    q.by = STORE_BY_STATUS;
    query_plan(path, STORE_PAGE_CONVERSATION_COUNTS, &q, plan, sizeof plan);
    CHECK(strstr(plan, "SEARCH conversations USING COVERING INDEX conversations_desk_status") != NULL);
    if (harness_current_failed)
        fprintf(stderr, "  last plan:\n%s", plan);
}

const struct test_case store_tests[] = {
    { "store: journal ids follow the order writes join batches; engine events read back", test_journal_ids_and_bus_reads },
    { "store: group commit, read after write, reopen", test_group_commit_and_read },
    { "store: a failed batch fails later ones until recovered; system writes go again",
      test_failed_batch_poisons_until_recovered },
    { "store: binary outbox bodies, lane windows", test_binary_bodies_and_lane_windows },
    { "store: schema 1 migrates (idempotency keys, outbox hints)", test_migration_from_v1 },
    { "store: conversations filtered by desk, group, agent or none, lists of state, status, channel",
      test_conversation_filters },
    { "store: conversation pages newest or oldest first, cursors keep the filters",
      test_conversation_pages_both_orders },
    { "store: conversation counts by agent, group or status; NULLs left out", test_conversation_counts },
    { "store: reads of conversations the interface does not promise are refused", test_conversation_reads_refused },
    { "store: a desk's lists and counts search a schema 4 index", test_desk_reads_use_an_index },
    { NULL, NULL },
};
