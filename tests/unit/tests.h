#ifndef SB_TESTS_H
#define SB_TESTS_H
#include "harness.h"
extern const struct test_case util_tests[];
extern const struct test_case route_tests[];
extern const struct test_case kv_tests[];
extern const struct test_case config_tests[];
extern const struct test_case runtime_tests[];
extern const struct test_case conv_tests[];
extern const struct test_case store_tests[];
extern const struct test_case log_tests[];
extern const struct test_case schedule_tests[];
extern const struct test_case conn_tests[];
extern const struct test_case lpattern_tests[];
extern const struct test_case crypto_tests[];
extern const struct test_case outbox_response_tests[];
extern const struct test_case bus_tests[];
extern const struct test_case counters_tests[];
extern const struct test_case bounded_tests[];
#endif
