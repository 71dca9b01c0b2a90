/* A tiny unit-test harness: TEST functions with CHECK assertions; main()
 * runs them all and prints "N passed, N failed" (exit 1 on any failure). */
#ifndef SB_HARNESS_H
#define SB_HARNESS_H

#include <stdio.h>
#include <string.h>

extern int harness_current_failed;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            harness_current_failed = 1;                                             \
        }                                                                           \
    } while (0)

#define CHECK_STR(a, b)                                                             \
    do {                                                                            \
        const char *a_ = (a), *b_ = (b);                                            \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                    \
            fprintf(stderr, "  %s:%d: expected \"%s\", got \"%s\"\n", __FILE__, __LINE__, \
                    b_ ? b_ : "(null)", a_ ? a_ : "(null)");                        \
            harness_current_failed = 1;                                             \
        }                                                                           \
    } while (0)

typedef void (*test_fn)(void);

/* Each test file exposes its tests through one of these. */
struct test_case {
    const char *name;
    test_fn fn;
};

#endif
