#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "conn.h"
#include "log.h"
#include "tests.h"

/* Builds a header list from "Name: value" strings. */
static const char *framing_of(const char *const *lines)
{
    static char why[128];
    struct evkeyvalq h;
    const char *r;
    TAILQ_INIT(&h);
    for (; *lines; lines++) {
        char name[64];
        const char *colon = strchr(*lines, ':');
        size_t n = (size_t)(colon - *lines);
        memcpy(name, *lines, n);
        name[n] = '\0';
        evhttp_add_header(&h, name, colon + 2);
    }
    r = sb_http_framing_error(&h);
    snprintf(why, sizeof why, "%s", r ? r : "");
    evhttp_clear_headers(&h);
    return r ? why : NULL;
}

static void test_framing(void)
{
    static const char *const plain[] = { "Host: x", "Content-Length: 5", NULL };
    static const char *const same[] = { "Content-Length: 5", "content-length: 005", NULL };
    static const char *const differ[] = { "Content-Length: 5", "Content-Length: 6", NULL };
    static const char *const bad_second[] = { "Content-Length: 5", "Content-Length: 5x", NULL };
    static const char *const signed_len[] = { "Content-Length: +5", NULL };
    static const char *const with_te[] = { "Transfer-Encoding: chunked", "Content-Length: 5", NULL };
    static const char *const chunked[] = { "Transfer-Encoding: gzip, Chunked", NULL };
    static const char *const chunked_param[] = { "Transfer-Encoding: chunked ; x=y", NULL };
    static const char *const not_chunked[] = { "Transfer-Encoding: gzip", NULL };
    static const char *const none[] = { "Host: x", NULL };
    CHECK(framing_of(plain) == NULL);
    CHECK(framing_of(same) == NULL);
    CHECK(framing_of(none) == NULL);
    CHECK(framing_of(chunked) == NULL);
    CHECK(framing_of(chunked_param) == NULL);
    CHECK_STR(framing_of(differ), "conflicting Content-Length headers");
    CHECK_STR(framing_of(bad_second), "invalid Content-Length");
    CHECK_STR(framing_of(signed_len), "invalid Content-Length");
    CHECK_STR(framing_of(with_te), "Content-Length together with Transfer-Encoding");
    CHECK_STR(framing_of(not_chunked), "Transfer-Encoding must end with chunked");
}

static void test_effective_cap(void)
{
    CHECK(sb_conn_effective_cap(4096, 1048576, 160) == 4096);
    CHECK(sb_conn_effective_cap(4096, 256, 160) == 96);
    CHECK(sb_conn_effective_cap(4096, 100, 160) == SB_CONN_MIN_CAP);
    CHECK(sb_conn_effective_cap(2, 100, 160) == 2);
}

static int scan_status(const char *head, size_t limit, size_t step)
{
    struct sb_head_scan s;
    size_t i, n = strlen(head);
    sb_head_scan_reset(&s);
    for (i = 0; i < n; i += step)
        sb_head_scan_feed(&s, head + i, n - i < step ? n - i : step);
    return sb_head_scan_status(&s, limit);
}

static void test_head_scan(void)
{
    char big[3000];
    size_t step;
    memset(big, 'a', sizeof big);
    big[sizeof big - 1] = '\0';
    for (step = 1; step <= 4096; step *= 8) {
        char buf[4096];
        CHECK(scan_status("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100, step) == 0);
        /* the request line alone over the limit, ended or not */
        snprintf(buf, sizeof buf, "GET /%s HTTP/1.1\r\n\r\n", big);
        CHECK(scan_status(buf, 2048, step) == 414);
        snprintf(buf, sizeof buf, "GET /%s", big);
        CHECK(scan_status(buf, 2048, step) == 414);
        /* a short request line, headers over the limit */
        snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %s\r\n\r\n", big);
        CHECK(scan_status(buf, 2048, step) == 431);
        snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nX: %s", big);
        CHECK(scan_status(buf, 2048, step) == 431);
        /* what follows the head (a body) is not counted */
        snprintf(buf, sizeof buf, "POST / HTTP/1.1\r\nContent-Length: 2999\r\n\r\n%s", big);
        CHECK(scan_status(buf, 2048, step) == 0);
    }
    /* line ends do not count, as in evhttp: 14 + 4 bytes of lines */
    CHECK(scan_status("GET / HTTP/1.1\r\nA: b\r\n\r\n", 18, 1) == 0);
    CHECK(scan_status("GET / HTTP/1.1\r\nA: b\r\n\r\n", 17, 1) == 431);
    CHECK(scan_status("GET / HTTP/1.1\nA: b\n\n", 17, 1) == 431);
    CHECK(scan_status("GET / HTTP/1.1\r\n", 13, 1) == 414);
}

/* Runs fn with stderr going to a file; returns the lines written. */
static char *capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/sb-unit-XXXXXX";
    int fd = mkstemp(path), saved = dup(2);
    FILE *f;
    char *out;
    long n;
    fflush(stderr);
    dup2(fd, 2);
    fn();
    dup2(saved, 2);
    close(saved);
    f = fdopen(fd, "r");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    out = calloc(1, (size_t)n + 1);
    if (fread(out, 1, (size_t)n, f) != (size_t)n)
        out[0] = '\0';
    fclose(f);
    unlink(path);
    return out;
}

static void flood(void)
{
    int i;
    for (i = 0; i < 50; i++)
        sb_libevent_log_at(1000.0 + i * 0.001, EVENT_LOG_WARN, "Error from accept() call: Too many open files");
    sb_libevent_log_at(1001.5, EVENT_LOG_ERR, "later");
}

static int count(const char *s, const char *needle)
{
    int n = 0;
    for (; (s = strstr(s, needle)) != NULL; s++)
        n++;
    return n;
}

static void test_libevent_log_rate_limit(void)
{
    char *out;
    sb_log_set_level(SB_LOG_INFO);
    out = capture_stderr(flood);
    CHECK(count(out, "\n") == SB_LIBEVENT_LOG_BURST + 2);
    CHECK(count(out, "level=warn msg=\"Error from accept() call: Too many open files\" source=libevent\n") ==
          SB_LIBEVENT_LOG_BURST);
    CHECK(count(out, "msg=\"suppressed 40 libevent messages\" source=libevent\n") == 1);
    CHECK(count(out, "level=error msg=later source=libevent\n") == 1);
    /* the count comes before the line that ended the quiet */
    CHECK(strstr(out, "suppressed 40") && strstr(out, "msg=later") && strstr(out, "suppressed 40") < strstr(out, "msg=later"));
    free(out);
}

const struct test_case conn_tests[] = {
    { "conn: framing headers", test_framing },
    { "conn: effective cap", test_effective_cap },
    { "conn: head scan finds over-long request lines and heads", test_head_scan },
    { "conn: libevent log lines are rate-limited", test_libevent_log_rate_limit },
    { NULL, NULL },
};
