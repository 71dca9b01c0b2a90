#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "fixtures.h"
#include "loop.h"
#include "store.h"
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
    q.channel = "web";
    q.limit = 1;
    read_result = NULL;
    store_read_page(STORE_PAGE_CONVERSATIONS, &q, on_read, NULL);
    run_until(NULL, &read_result);
    CHECK(read_result && strstr(read_result, "\"client_id\":\"c2\"") != NULL);   /* newest first */
    CHECK(read_result && strstr(read_result, "\"next_cursor\":\"2\"") != NULL);  /* a full page */
    free(read_result);
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

const struct test_case store_tests[] = {
    { "store: group commit, read after write, reopen", test_group_commit_and_read },
    { "store: a failed batch fails later ones until recovered; system writes go again",
      test_failed_batch_poisons_until_recovered },
    { "store: binary outbox bodies, lane windows", test_binary_bodies_and_lane_windows },
    { "store: schema 1 migrates (idempotency keys, outbox hints)", test_migration_from_v1 },
    { NULL, NULL },
};
