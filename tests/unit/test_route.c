#include <string.h>

#include "runtime.h"
#include "tests.h"

static void test_compile(void)
{
    struct sb_route r;
    char msg[200];
    CHECK(sb_route_compile(&r, "/v1/channels/{instance}/messages", msg, sizeof msg) == 0);
    CHECK(r.nsegs == 4);
    CHECK_STR(r.segs[2], "{instance}");
    sb_route_free(&r);
    CHECK(sb_route_compile(&r, "no-slash", msg, sizeof msg) == -1);
    CHECK(sb_route_compile(&r, "/a//b", msg, sizeof msg) == -1);
    CHECK(sb_route_compile(&r, "/a/{}", msg, sizeof msg) == -1);
    CHECK(sb_route_compile(&r, "/a/{bad-name}", msg, sizeof msg) == -1);
    CHECK(sb_route_compile(&r, "/", msg, sizeof msg) == 0);
    sb_route_free(&r);
}

static void test_match(void)
{
    struct sb_route r;
    struct sb_route_match m;
    char msg[200];
    CHECK(sb_route_compile(&r, "/v1/conversations/{id}/messages", msg, sizeof msg) == 0);
    CHECK(sb_route_match_path(&r, "/v1/conversations/c-42/messages", &m) == 1);
    CHECK(m.nparams == 1);
    CHECK_STR(m.names[0], "{id}");
    CHECK(m.value_lens[0] == 4 && strncmp(m.values[0], "c-42", 4) == 0);
    CHECK(sb_route_match_path(&r, "/v1/conversations//messages", &m) == 0);
    CHECK(sb_route_match_path(&r, "/v1/conversations/c-42/messages/x", &m) == 0);
    CHECK(sb_route_match_path(&r, "/v1/conversations/c-42", &m) == 0);
    CHECK(sb_route_match_path(&r, "/v1/conversations/c-42/messagesX", &m) == 0);
    sb_route_free(&r);
}

const struct test_case route_tests[] = {
    { "route: pattern compilation", test_compile },
    { "route: path matching and captures", test_match },
    { NULL, NULL },
};
