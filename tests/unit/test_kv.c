#include <string.h>
#include <unistd.h>

#include "kvstate.h"
#include "tests.h"
#include "txn.h"

/* Sets key in a transaction of its own that ends well (no store here). */
static void set_now(const char *key, const char *json, double ttl)
{
    struct sb_txn *t = sb_txn_new();
    sb_kv_set(t, key, json, strlen(json), ttl);
    sb_txn_end(t);
}

static void test_set_get_delete(void)
{
    size_t len = 0;
    const char *v;
    struct sb_txn *t;
    set_now("a", "{\"x\":1}", 0);
    v = sb_kv_get(NULL, "a", &len);
    CHECK(v && len == 7 && memcmp(v, "{\"x\":1}", 7) == 0);
    set_now("a", "2", 0);
    v = sb_kv_get(NULL, "a", &len);
    CHECK(v && len == 1 && v[0] == '2');
    CHECK(sb_kv_count() == 1);
    t = sb_txn_new();
    CHECK(sb_kv_delete(t, "a") == 1);
    CHECK(sb_kv_delete(t, "a") == 0);          /* the transaction sees its own delete */
    CHECK(sb_kv_get(NULL, "a", &len) != NULL); /* others do not, until it ends */
    sb_txn_end(t);
    CHECK(sb_kv_get(NULL, "a", &len) == NULL);
    sb_kv_free_all();
}

static void test_failed_transaction_changes_nothing(void)
{
    size_t len = 0;
    const char *v;
    struct sb_txn *t;
    set_now("kept", "1", 0);
    t = sb_txn_new();
    sb_kv_set(t, "kept", "2", 1, 0);
    sb_kv_set(t, "new", "3", 1, 0);
    v = sb_kv_get(t, "kept", &len);
    CHECK(v && v[0] == '2');
    CHECK(sb_kv_get(NULL, "new", &len) == NULL);
    sb_txn_abort(t);
    v = sb_kv_get(NULL, "kept", &len);
    CHECK(v && v[0] == '1');
    CHECK(sb_kv_get(NULL, "new", &len) == NULL);
    CHECK(sb_kv_count() == 1);
    sb_kv_free_all();
}

static void test_ttl(void)
{
    size_t len;
    set_now("short", "1", 0.01);
    set_now("long", "1", 100);
    set_now("forever", "1", 0);
    usleep(30000);
    CHECK(sb_kv_sweep() == 1);
    CHECK(sb_kv_get(NULL, "short", &len) == NULL);
    CHECK(sb_kv_get(NULL, "long", &len) != NULL);
    CHECK(sb_kv_get(NULL, "forever", &len) != NULL);
    set_now("lazy", "1", 0.01);
    usleep(30000);
    CHECK(sb_kv_get(NULL, "lazy", &len) == NULL); /* expired on read, before any sweep */
    sb_kv_free_all();
    CHECK(sb_kv_count() == 0);
}

const struct test_case kv_tests[] = {
    { "state: set, get, replace, delete", test_set_get_delete },
    { "state: a failed transaction changes nothing", test_failed_transaction_changes_nothing },
    { "state: TTL expiry on read and by sweep", test_ttl },
    { NULL, NULL },
};
