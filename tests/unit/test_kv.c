#include <string.h>
#include <unistd.h>

#include "kvstate.h"
#include "tests.h"

static void test_set_get_delete(void)
{
    size_t len = 0;
    const char *v;
    sb_kv_set("a", "{\"x\":1}", 7, 0);
    v = sb_kv_get("a", &len);
    CHECK(v && len == 7 && memcmp(v, "{\"x\":1}", 7) == 0);
    sb_kv_set("a", "2", 1, 0);
    v = sb_kv_get("a", &len);
    CHECK(v && len == 1 && v[0] == '2');
    CHECK(sb_kv_count() == 1);
    CHECK(sb_kv_delete("a") == 1);
    CHECK(sb_kv_delete("a") == 0);
    CHECK(sb_kv_get("a", &len) == NULL);
    sb_kv_free_all();
}

static void test_ttl(void)
{
    size_t len;
    sb_kv_set("short", "1", 1, 0.01);
    sb_kv_set("long", "1", 1, 100);
    sb_kv_set("forever", "1", 1, 0);
    usleep(30000);
    CHECK(sb_kv_sweep() == 1);
    CHECK(sb_kv_get("short", &len) == NULL);
    CHECK(sb_kv_get("long", &len) != NULL);
    CHECK(sb_kv_get("forever", &len) != NULL);
    sb_kv_set("lazy", "1", 1, 0.01);
    usleep(30000);
    CHECK(sb_kv_get("lazy", &len) == NULL); /* expired on read, before any sweep */
    sb_kv_free_all();
    CHECK(sb_kv_count() == 0);
}

const struct test_case kv_tests[] = {
    { "state: set, get, replace, delete", test_set_get_delete },
    { "state: TTL expiry on read and by sweep", test_ttl },
    { NULL, NULL },
};
