#include <string.h>

#include "conv.h"
#include "outbox.h"
#include "tests.h"

static void test_utf8(void)
{
    CHECK(sb_utf8_valid("plain", 5));
    CHECK(sb_utf8_valid("\xd0\x9f\xd1\x80\xd0\xb8", 6));          /* Cyrillic */
    CHECK(sb_utf8_valid("\xf0\x9f\x98\x80", 4));                  /* emoji */
    CHECK(!sb_utf8_valid("\xff", 1));
    CHECK(!sb_utf8_valid("\xc0\xaf", 2));                         /* overlong '/' */
    CHECK(!sb_utf8_valid("\xed\xa0\x80", 3));                     /* surrogate */
    CHECK(!sb_utf8_valid("\xf4\x90\x80\x80", 4));                 /* beyond U+10FFFF */
    CHECK(!sb_utf8_valid("\xe2\x82", 2));                         /* truncated */
}

static void test_transitions(void)
{
    CHECK(sb_conv_transition_allowed(SB_CONV_BOT, SB_CONV_QUEUED));
    CHECK(sb_conv_transition_allowed(SB_CONV_QUEUED, SB_CONV_AGENT));
    CHECK(sb_conv_transition_allowed(SB_CONV_AGENT, SB_CONV_CLOSED));
    CHECK(sb_conv_transition_allowed(SB_CONV_CLOSED, SB_CONV_BOT));
    CHECK(sb_conv_transition_allowed(SB_CONV_AGENT, SB_CONV_BOT));
    CHECK(!sb_conv_transition_allowed(SB_CONV_CLOSED, SB_CONV_AGENT));
    CHECK(!sb_conv_transition_allowed(SB_CONV_CLOSED, SB_CONV_QUEUED));
    CHECK(!sb_conv_transition_allowed(SB_CONV_BOT, SB_CONV_BOT));
}

static void test_ids(void)
{
    char a[SB_ID_LEN + 1], b[SB_ID_LEN + 1];
    size_t i;
    sb_new_id(a);
    sb_new_id(b);
    CHECK(strlen(a) == SB_ID_LEN);
    CHECK(strcmp(a, b) != 0);
    for (i = 0; i < SB_ID_LEN; i++)
        CHECK((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f'));
}

static void test_backoff(void)
{
    struct sb_outbox_settings s = { 5, 3600, 1.0, 10.0, 4, 30, 0, 86400 };
    sb_outbox_configure(&s);
    CHECK(sb_outbox_backoff(1, 1.0) == 1.0);
    CHECK(sb_outbox_backoff(1, 0.0) == 0.5);    /* jitter keeps at least half the step */
    CHECK(sb_outbox_backoff(3, 1.0) == 4.0);
    CHECK(sb_outbox_backoff(10, 1.0) == 10.0);  /* capped */
    CHECK(sb_outbox_backoff(10, 0.0) == 5.0);
}

const struct test_case conv_tests[] = {
    { "conv: UTF-8 validation", test_utf8 },
    { "conv: state transitions", test_transitions },
    { "conv: generated ids", test_ids },
    { "outbox: backoff with jitter", test_backoff },
    { NULL, NULL },
};
