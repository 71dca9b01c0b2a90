#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "fixtures.h"
#include "loop.h"
#include "store.h"
#include "tests.h"

static int committed_ok = -1;
static char *read_result;

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

static void conv_upsert(const char *id, const char *client)
{
    struct store_op *op = store_op_new(STORE_CONV_UPSERT);
    store_op_str(op, id);
    store_op_str(op, "web");
    store_op_str(op, client);
    store_op_str(op, "bot");
    store_op_null(op);
    store_op_null(op);
    store_op_null(op);
    store_op_str(op, "open");
    store_op_str(op, "[]");
    store_op_str(op, "{}");
    store_op_str(op, "{}");
    store_op_int(op, 0);
    store_op_real(op, 1.0);
    store_op_real(op, 1.0);
    store_submit(op);
}

static int rows;
static void count_row(void *arg, const struct store_row *r)
{
    (void)arg;
    (void)r;
    rows++;
}

static void test_group_commit_and_read(void)
{
    const char *dir = fixture_dir();
    struct sb_error err;
    struct store_op *op;
    uint64_t seq;
    CHECK(store_open(dir, STORE_SYNC_NORMAL, &err) == 0);
    CHECK(store_start() == 0);
    conv_upsert("aaaaaaaaaaaaaaaaaaaa", "c1");
    conv_upsert("bbbbbbbbbbbbbbbbbbbb", "c2");
    seq = store_pending_seq();
    CHECK(seq > 0);
    CHECK(store_committed_seq() < seq);
    committed_ok = -1;
    store_when_committed(seq, on_commit, NULL);
    run_until(&committed_ok, NULL);
    CHECK(committed_ok == 1);
    CHECK(store_committed_seq() >= seq);
    CHECK(store_stats()->batches >= 1);

    op = store_op_new(STORE_READ_CONVERSATIONS);
    store_op_null(op);
    store_op_str(op, "web");
    store_op_int(op, 1);
    store_op_null(op);
    read_result = NULL;
    store_read(op, on_read, NULL);
    run_until(NULL, &read_result);
    CHECK(read_result && strstr(read_result, "\"client_id\":\"c2\"") != NULL);   /* newest first */
    CHECK(read_result && strstr(read_result, "\"next_cursor\":\"2\"") != NULL);  /* a full page */
    free(read_result);
    store_close();

    /* reopening runs no migration twice and sees the rows */
    CHECK(store_open(dir, STORE_SYNC_FULL, &err) == 0);
    rows = 0;
    CHECK(store_load_conversations(count_row, NULL) == 0);
    CHECK(rows == 2);
    store_close();
}

static void test_failed_batch_is_reported(void)
{
    const char *dir = fixture_dir();
    struct sb_error err;
    CHECK(store_open(dir, STORE_SYNC_OFF, &err) == 0);
    CHECK(store_start() == 0);
    conv_upsert("cccccccccccccccccccc", "same");
    conv_upsert("dddddddddddddddddddd", "same");   /* UNIQUE(channel, client_id) fails the batch */
    committed_ok = -1;
    store_when_committed(store_pending_seq(), on_commit, NULL);
    run_until(&committed_ok, NULL);
    CHECK(committed_ok == 0);
    CHECK(store_stats()->failures >= 1);
    store_close();
}

const struct test_case store_tests[] = {
    { "store: group commit, read after write, reopen", test_group_commit_and_read },
    { "store: a failing batch reports failure to its waiters", test_failed_batch_is_reported },
    { NULL, NULL },
};
