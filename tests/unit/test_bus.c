/* The event bus's names, patterns and filters (bus.c). */
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "tests.h"

static void test_patterns(void)
{
    char err[200];
    CHECK(sb_bus_check_pattern("*", err, sizeof err) == 0);
    CHECK(sb_bus_check_pattern("livechat.*", err, sizeof err) == 0);
    CHECK(sb_bus_check_pattern("message.created", err, sizeof err) == 0);
    CHECK(sb_bus_check_pattern("message.craeted", err, sizeof err) == -1);
    CHECK(strstr(err, "message.craeted") != NULL);
    CHECK(sb_bus_check_pattern("livechat", err, sizeof err) == -1);
    CHECK(sb_bus_check_pattern("nothing.*", err, sizeof err) == -1);
    CHECK(sb_bus_check_pattern("", err, sizeof err) == -1);
    CHECK(sb_bus_pattern_match("livechat.*", "livechat.ended"));
    CHECK(!sb_bus_pattern_match("livechat.*", "livechatx.ended"));
    CHECK(!sb_bus_pattern_match("tag.added", "tag.removed"));
    CHECK(sb_bus_pattern_match("*", "agent.status_changed"));
}

static struct sb_bus_event event(const char *name, const char *conv, const char *channel)
{
    struct sb_bus_event ev;
    memset(&ev, 0, sizeof ev);
    ev.name = (char *)name;
    ev.conversation = (char *)conv;
    ev.channel = (char *)channel;
    return ev;
}

static void test_filters(void)
{
    struct sb_bus_filter *f = sb_bus_filter_new();
    struct sb_bus_event msg = event("message.created", "c1", "web"), other = event("message.created", "c2", "tg");
    struct sb_bus_event agent = event("agent.status_changed", "", NULL), ended = event("livechat.ended", "c1", "web");
    CHECK(sb_bus_filter_match(f, &msg) && sb_bus_filter_match(f, &agent));   /* nothing given: everything */
    sb_bus_filter_add_pattern(f, "message.created");
    sb_bus_filter_add_pattern(f, "livechat.*");
    CHECK(sb_bus_filter_match(f, &msg) && sb_bus_filter_match(f, &ended) && !sb_bus_filter_match(f, &agent));
    f->conversation = strdup("c1");
    CHECK(sb_bus_filter_match(f, &msg) && !sb_bus_filter_match(f, &other));
    sb_bus_filter_free(f);

    /* a bot-bound reader: its channels' conversations, no agent events */
    f = sb_bus_filter_new();
    f->restricted = 1;
    CHECK(!sb_bus_filter_match(f, &msg));
    sb_bus_filter_add_channel(f, "tg");
    CHECK(sb_bus_filter_match(f, &other) && !sb_bus_filter_match(f, &msg) && !sb_bus_filter_match(f, &agent));
    sb_bus_filter_free(f);
}

const struct test_case bus_tests[] = {
    { "bus: event names and patterns", test_patterns },
    { "bus: filters of readers (patterns, conversation, a bot's channels)", test_filters },
    { NULL, NULL },
};
