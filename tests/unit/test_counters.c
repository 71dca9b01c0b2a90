#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "counters.h"
#include "tests.h"

#define NO_LIMIT 1000

static char *rendered(void)
{
    struct evbuffer *b = evbuffer_new();
    size_t n;
    char *s;
    sb_counters_render(b);
    n = evbuffer_get_length(b);
    s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static struct sb_counter_label label(const char *name, const char *value)
{
    struct sb_counter_label l = { name, value, strlen(value) };
    return l;
}

static int name_ok(const char *name) { return sb_counter_name_problem(name, strlen(name)) == NULL; }

static int label_ok(const char *name, const char *value)
{
    struct sb_counter_label l = label(name, value);
    return sb_counter_label_problem(&l) == NULL;
}

static void test_names(void)
{
    char longest[SB_COUNTER_NAME_MAX + 2];
    CHECK(name_ok("a_total"));
    CHECK(name_ok("acme_api_errors_total"));
    CHECK(name_ok("v2_calls_total"));
    CHECK(!name_ok(""));
    CHECK(!name_ok("_total"));
    CHECK(!name_ok("errors"));
    CHECK(!name_ok("Errors_total"));
    CHECK(!name_ok("api-errors_total"));
    CHECK(!name_ok("1st_total"));
    CHECK(!name_ok("_x_total"));
    CHECK(!name_ok("errors_total_"));
    CHECK(!name_ok("switchboard_x_total"));
    CHECK(strstr(sb_counter_name_problem("switchboard_x_total", 19), "reserved") != NULL);
    memset(longest, 'a', SB_COUNTER_NAME_MAX);
    memcpy(longest + SB_COUNTER_NAME_MAX - 6, "_total", 7);
    CHECK(name_ok(longest));                              /* 100 bytes */
    memset(longest, 'a', SB_COUNTER_NAME_MAX + 1);
    memcpy(longest + SB_COUNTER_NAME_MAX + 1 - 6, "_total", 7);
    CHECK(!name_ok(longest));                             /* 101 bytes */
    CHECK(strstr(sb_counter_name_problem(longest, strlen(longest)), "100 bytes") != NULL);
}

static void test_labels(void)
{
    char value[SB_COUNTER_VALUE_MAX + 2];
    struct sb_counter_label with_nul = { "status", "a\0b", 3 };
    CHECK(label_ok("status", "503"));
    CHECK(label_ok("_private", ""));
    CHECK(label_ok("a1_b", "x"));
    CHECK(!label_ok("", "x"));
    CHECK(!label_ok("Status", "x"));
    CHECK(!label_ok("1x", "x"));
    CHECK(!label_ok("a-b", "x"));
    CHECK(!label_ok("__name__", "x"));
    CHECK(strstr(sb_counter_label_problem(&with_nul), "NUL") != NULL);
    memset(value, 'v', SB_COUNTER_VALUE_MAX);
    value[SB_COUNTER_VALUE_MAX] = '\0';
    CHECK(label_ok("v", value));                          /* 128 bytes */
    value[SB_COUNTER_VALUE_MAX] = 'v';
    value[SB_COUNTER_VALUE_MAX + 1] = '\0';
    CHECK(!label_ok("v", value));                         /* 129 bytes */
}

/* Families by name, series by labels sorted by name then value, whatever
 * order they were counted or given in; values escaped. */
static void test_render_is_sorted_and_escaped(void)
{
    struct sb_counter_label a[2], b[2], q[1];
    char *text;
    a[0] = label("status", "503");
    a[1] = label("instance", "main");
    b[0] = label("instance", "main");
    b[1] = label("status", "503");
    q[0] = label("why", "say \"no\"\\\n");
    CHECK(sb_counter_add("zeta_total", NULL, 0, 1, NO_LIMIT) == SB_COUNTER_COUNTED);
    CHECK(sb_counter_add("acme_errors_total", a, 2, 2, NO_LIMIT) == SB_COUNTER_COUNTED);
    CHECK(sb_counter_add("acme_errors_total", b, 2, 3, NO_LIMIT) == SB_COUNTER_COUNTED);  /* the same series */
    b[0] = label("instance", "backup");
    CHECK(sb_counter_add("acme_errors_total", b, 2, 1, NO_LIMIT) == SB_COUNTER_COUNTED);
    CHECK(sb_counter_add("acme_errors_total", q, 1, 1, NO_LIMIT) == SB_COUNTER_COUNTED);
    CHECK(sb_counters_series() == 4);
    text = rendered();
    CHECK_STR(text,
              "# HELP acme_errors_total Counted by scripts (metrics.count).\n"
              "# TYPE acme_errors_total counter\n"
              "acme_errors_total{instance=\"backup\",status=\"503\"} 1\n"
              "acme_errors_total{instance=\"main\",status=\"503\"} 5\n"
              "acme_errors_total{why=\"say \\\"no\\\"\\\\\\n\"} 1\n"
              "# HELP zeta_total Counted by scripts (metrics.count).\n"
              "# TYPE zeta_total counter\n"
              "zeta_total 1\n");
    free(text);
    sb_counters_free_all();
    CHECK(sb_counters_series() == 0);
    text = rendered();
    CHECK_STR(text, "");
    free(text);
}

/* Runs fn with stderr going to a file; returns what was written. */
static char *stderr_of(void (*fn)(void))
{
    char path[] = "/tmp/sb-counters-XXXXXX";
    int fd = mkstemp(path), saved = dup(2);
    char *out = calloc(1, 65536);
    ssize_t n;
    unlink(path);
    fflush(stderr);
    dup2(fd, 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    n = read(fd, out, 65535);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    return out;
}

static int occurrences(const char *text, const char *needle)
{
    int n = 0;
    for (; (text = strstr(text, needle)) != NULL; text++)
        n++;
    return n;
}

static enum sb_counter_outcome count_status(const char *name, const char *status, size_t max)
{
    struct sb_counter_label l = label("status", status);
    return sb_counter_add(name, &l, 1, 1, max);
}

static enum sb_counter_outcome outcomes[8];

static void fill_past_the_limit(void)
{
    outcomes[0] = count_status("a_total", "1", 2);
    outcomes[1] = count_status("a_total", "2", 2);
    outcomes[2] = count_status("a_total", "3", 2);   /* a third series: refused */
    outcomes[3] = count_status("a_total", "4", 2);   /* refused again, not logged again */
    outcomes[4] = count_status("a_total", "1", 2);   /* an existing series still counts */
    outcomes[5] = count_status("b_total", "1", 2);   /* another name: refused, logged once */
    outcomes[6] = count_status("b_total", "1", 2);
}

static void test_series_limit(void)
{
    char *log = stderr_of(fill_past_the_limit);
    char *text;
    CHECK(outcomes[0] == SB_COUNTER_COUNTED && outcomes[1] == SB_COUNTER_COUNTED);
    CHECK(outcomes[2] == SB_COUNTER_FULL && outcomes[3] == SB_COUNTER_FULL);
    CHECK(outcomes[4] == SB_COUNTER_COUNTED);
    CHECK(outcomes[5] == SB_COUNTER_FULL && outcomes[6] == SB_COUNTER_FULL);
    CHECK(sb_counters_series() == 2);
    CHECK(occurrences(log, "series limit reached") == 2);
    CHECK(occurrences(log, "name=a_total") == 1);
    CHECK(occurrences(log, "name=b_total") == 1);
    text = rendered();
    CHECK_STR(text,
              "# HELP a_total Counted by scripts (metrics.count).\n"
              "# TYPE a_total counter\n"
              "a_total{status=\"1\"} 2\n"
              "a_total{status=\"2\"} 1\n");
    free(text);
    /* a higher limit (a reload) lets new series in, the refused name too */
    CHECK(count_status("b_total", "1", 3) == SB_COUNTER_COUNTED);
    CHECK(sb_counters_series() == 3);
    free(log);
    sb_counters_free_all();
}

static void test_refused_input_counts_nothing(void)
{
    struct sb_counter_label nine[9], twice[2], bad[1];
    char names[9][16];
    int i;
    for (i = 0; i < 9; i++) {
        snprintf(names[i], sizeof names[i], "l%d", i);
        nine[i] = label(names[i], "x");
    }
    twice[0] = label("a", "1");
    twice[1] = label("a", "2");
    bad[0] = label("Bad", "1");
    CHECK(sb_counter_add("x_total", NULL, 0, 0, NO_LIMIT) == SB_COUNTER_INVALID);
    CHECK(sb_counter_add("X_total", NULL, 0, 1, NO_LIMIT) == SB_COUNTER_INVALID);
    CHECK(sb_counter_add("x_total", nine, 9, 1, NO_LIMIT) == SB_COUNTER_INVALID);
    CHECK(sb_counter_add("x_total", nine, 8, 1, NO_LIMIT) == SB_COUNTER_COUNTED);
    CHECK(sb_counter_add("x_total", twice, 2, 1, NO_LIMIT) == SB_COUNTER_INVALID);
    CHECK(sb_counter_add("x_total", bad, 1, 1, NO_LIMIT) == SB_COUNTER_INVALID);
    CHECK(sb_counters_series() == 1);
    sb_counters_free_all();
}

static void test_value_stays_at_the_top(void)
{
    char *text;
    CHECK(sb_counter_add("big_total", NULL, 0, UINT64_MAX - 1, NO_LIMIT) == SB_COUNTER_COUNTED);
    CHECK(sb_counter_add("big_total", NULL, 0, 5, NO_LIMIT) == SB_COUNTER_COUNTED);
    text = rendered();
    CHECK(strstr(text, "big_total 18446744073709551615\n") != NULL);
    free(text);
    sb_counters_free_all();
}

const struct test_case counters_tests[] = {
    { "counters: name rules", test_names },
    { "counters: label rules", test_labels },
    { "counters: rendered sorted, same series whatever the label order, values escaped",
      test_render_is_sorted_and_escaped },
    { "counters: the series limit refuses new series, logs once per name", test_series_limit },
    { "counters: refused input counts nothing", test_refused_input_counts_nothing },
    { "counters: a value stays at 2^64-1", test_value_stays_at_the_top },
    { NULL, NULL },
};
