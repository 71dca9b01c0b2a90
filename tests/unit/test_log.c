#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tests.h"

#define LINES_PER_THREAD 20000

static pthread_barrier_t start_together;

static void *log_many(void *arg)
{
    const char *who = arg;
    int i;
    pthread_barrier_wait(&start_together);
    for (i = 0; i < LINES_PER_THREAD; i++) {
        char n[16];
        snprintf(n, sizeof n, "%d", i);
        sb_log(SB_LOG_INFO, "from a thread", "who", who, "n", n, "pad",
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL);
    }
    return NULL;
}

/* Two threads log at once (the loop and the store thread do): every line
 * comes out whole, none mixed with another. */
static void test_lines_stay_whole_across_threads(void)
{
    int fds[2], saved = dup(2), whole = 0, broken = 0;
    pthread_t a, b;
    FILE *in;
    char line[16384];
    char *tmp = strdup("/tmp/sb-log-XXXXXX");
    fds[0] = mkstemp(tmp);
    CHECK(fds[0] >= 0);
    unlink(tmp);
    free(tmp);
    fds[1] = dup(fds[0]);
    dup2(fds[1], 2);
    pthread_barrier_init(&start_together, NULL, 2);
    pthread_create(&a, NULL, log_many, "alpha");
    pthread_create(&b, NULL, log_many, "beta");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    pthread_barrier_destroy(&start_together);
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    lseek(fds[0], 0, SEEK_SET);
    in = fdopen(fds[0], "r");
    while (fgets(line, sizeof line, in)) {
        int ok = strncmp(line, "ts=", 3) == 0 && strstr(line, " msg=\"from a thread\" who=") != NULL &&
                 (strstr(line, "who=alpha n=") || strstr(line, "who=beta n=")) &&
                 strstr(line + 3, "ts=") == NULL && line[strlen(line) - 1] == '\n';
        if (ok)
            whole++;
        else
            broken++;
    }
    fclose(in);
    CHECK(broken == 0);
    CHECK(whole == 2 * LINES_PER_THREAD);
}

const struct test_case log_tests[] = {
    { "log: lines stay whole when two threads log", test_lines_stay_whole_across_threads },
    { NULL, NULL },
};
