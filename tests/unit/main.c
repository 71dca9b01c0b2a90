#include <event2/event.h>
#include <stdlib.h>

#include "harness.h"
#include "tests.h"

struct event_base *sb_base;
int harness_current_failed;

int main(void)
{
    const struct test_case *suites[] = { util_tests, route_tests, kv_tests, config_tests, runtime_tests, conv_tests, store_tests, schedule_tests, conn_tests, log_tests, lpattern_tests, crypto_tests, outbox_response_tests, bus_tests, counters_tests, bounded_tests };
    size_t s;
    int passed = 0, failed = 0;
    sb_base = event_base_new();
    for (s = 0; s < sizeof suites / sizeof *suites; s++) {
        const struct test_case *t;
        for (t = suites[s]; t->name; t++) {
            harness_current_failed = 0;
            t->fn();
            if (harness_current_failed) {
                fprintf(stderr, "FAIL %s\n", t->name);
                failed++;
            } else {
                printf("ok   %s\n", t->name);
                passed++;
            }
        }
    }
    event_base_free(sb_base);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
