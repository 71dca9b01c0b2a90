#include <stdlib.h>

#include <event2/buffer.h>

#include "log.h"
#include "server.h"
#include "tests.h"
#include "util.h"

static void test_secret_equal(void)
{
    CHECK(sb_secret_equal("abc", 3, "abc", 3));
    CHECK(!sb_secret_equal("abd", 3, "abc", 3));
    CHECK(!sb_secret_equal("ab", 2, "abc", 3));
    CHECK(!sb_secret_equal("abcd", 4, "abc", 3));
    CHECK(!sb_secret_equal("", 0, "", 0)); /* an empty secret never matches */
}

static char *drain(struct evbuffer *b)
{
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    return s;
}

static void test_json_quote(void)
{
    struct evbuffer *b = evbuffer_new();
    char *s;
    sb_json_quote(b, "a\"b\\c\n\x01", 7);
    s = drain(b);
    CHECK_STR(s, "\"a\\\"b\\\\c\\n\\u0001\"");
    free(s);
    sb_error_json(b, "not_found", "no \"route\"");
    s = drain(b);
    CHECK_STR(s, "{\"error\":{\"code\":\"not_found\",\"message\":\"no \\\"route\\\"\"}}");
    free(s);
    evbuffer_free(b);
}

static void test_error_from_lua(void)
{
    struct sb_error e;
    sb_error_from_lua(&e, "scripts/a.lua:12: boom: with colon", "x");
    CHECK_STR(e.file, "scripts/a.lua");
    CHECK(e.line == 12);
    CHECK_STR(e.message, "boom: with colon");
    sb_error_from_lua(&e, "scripts/b.lua:7", "x");
    CHECK_STR(e.file, "scripts/b.lua");
    CHECK(e.line == 7);
    sb_error_from_lua(&e, "not enough memory", "scripts/c.lua");
    CHECK_STR(e.file, "scripts/c.lua");
    CHECK(e.line == 0);
    CHECK_STR(e.message, "not enough memory");
}

static void test_parse_listen(void)
{
    char *host = NULL;
    int port = 0;
    CHECK(sb_parse_listen("127.0.0.1:8080", &host, &port) == 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK(port == 8080);
    free(host);
    CHECK(sb_parse_listen("[::1]:0", &host, &port) == 0);
    CHECK_STR(host, "::1");
    CHECK(port == 0);
    free(host);
    CHECK(sb_parse_listen("localhost", &host, &port) == -1);
    CHECK(sb_parse_listen("h:70000", &host, &port) == -1);
    CHECK(sb_parse_listen("h:12x", &host, &port) == -1);
}

static void test_log_values(void)
{
    char buf[128];
    sb_log_format_value(buf, sizeof buf, "plain", 5);
    CHECK_STR(buf, "plain");
    sb_log_format_value(buf, sizeof buf, "two words", 9);
    CHECK_STR(buf, "\"two words\"");
    sb_log_format_value(buf, sizeof buf, "a\"b\nc", 5);
    CHECK_STR(buf, "\"a\\\"b\\nc\"");
    sb_log_format_value(buf, sizeof buf, "", 0);
    CHECK_STR(buf, "\"\"");
    sb_log_format_value(buf, sizeof buf, "k=v", 3);
    CHECK_STR(buf, "\"k=v\"");
}

const struct test_case util_tests[] = {
    { "util: secret comparison", test_secret_equal },
    { "util: JSON quoting and error bodies", test_json_quote },
    { "util: Lua error positions", test_error_from_lua },
    { "util: listen address parsing", test_parse_listen },
    { "log: logfmt value quoting", test_log_values },
    { NULL, NULL },
};
