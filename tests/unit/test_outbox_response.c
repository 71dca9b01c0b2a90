/* What the outbox reads from a failed response: the declared hints, the
 * wait (Retry-After, or a JSON path) and the error text of a reason. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "httpclient.h"
#include "luajson.h"
#include "outbox.h"
#include "tests.h"

/* A response with at most one header (lower-case name) and a body. */
static struct sb_http_response response(long status, const char *header, const char *value, const char *body)
{
    static char headers[512];
    struct sb_http_response r;
    memset(&r, 0, sizeof r);
    r.ok = 1;
    r.status = status;
    if (header) {
        size_t hl = strlen(header) + 1, vl = strlen(value) + 1;
        memcpy(headers, header, hl);
        memcpy(headers + hl, value, vl);
        r.headers = headers;
        r.headers_len = hl + vl;
        r.nheaders = 1;
    }
    r.body = body;
    r.body_len = body ? strlen(body) : 0;
    return r;
}

static void test_hints_check(void)
{
    CHECK(sb_outbox_hints_check("retry_after header Retry-After") == NULL);
    CHECK(sb_outbox_hints_check("retry_after json parameters.retry_after\nerror_text json description") == NULL);
    CHECK(sb_outbox_hints_check("error_text json errors.1.title") == NULL);
    CHECK(sb_outbox_hints_check("error_text header X-Error") != NULL);        /* text from JSON only */
    CHECK(sb_outbox_hints_check("retry_after body x") != NULL);
    CHECK(sb_outbox_hints_check("wait json x") != NULL);
    CHECK(sb_outbox_hints_check("retry_after json a..b") != NULL);
    CHECK(sb_outbox_hints_check("retry_after json a.b.") != NULL);
    CHECK(sb_outbox_hints_check("retry_after json a b") != NULL);
    CHECK(sb_outbox_hints_check("retry_after header Retry:After") != NULL);
    CHECK(sb_outbox_hints_check("retry_after json x\nretry_after header Y") != NULL);
    CHECK(sb_outbox_hints_check("retry_after json a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q") != NULL);  /* 17 parts */
}

static void test_retry_after_header(void)
{
    struct sb_http_response r;
    char date[64];
    time_t ahead = time(NULL) + 120;
    r = response(429, "retry-after", "7", NULL);
    CHECK(sb_outbox_retry_after(NULL, &r) == 7.0);
    r = response(503, "retry-after", " 0 ", NULL);
    CHECK(sb_outbox_retry_after(NULL, &r) == 0.0);
    r = response(429, "retry-after", "99999999999999", NULL);   /* bounded */
    CHECK(sb_outbox_retry_after(NULL, &r) == 1e9);
    r = response(429, "retry-after", "-5", NULL);
    CHECK(sb_outbox_retry_after(NULL, &r) == -1);
    r = response(429, "retry-after", "soon", NULL);
    CHECK(sb_outbox_retry_after(NULL, &r) == -1);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime(&ahead));
    r = response(429, "retry-after", date, NULL);
    CHECK(sb_outbox_retry_after(NULL, &r) > 100 && sb_outbox_retry_after(NULL, &r) <= 121);
    r = response(429, "retry-after", "Wed, 21 Oct 2015 07:28:00 GMT", NULL);   /* past: at once */
    CHECK(sb_outbox_retry_after(NULL, &r) == 0.0);
    r = response(429, NULL, NULL, "{\"parameters\":{\"retry_after\":7}}");
    CHECK(sb_outbox_retry_after(NULL, &r) == -1);      /* the body means nothing unless declared */
    r = response(429, "x-wait", "3", NULL);
    CHECK(sb_outbox_retry_after("retry_after header X-Wait", &r) == 3.0);
    CHECK(sb_outbox_retry_after(NULL, &r) == -1);
}

static void test_retry_after_json(void)
{
    static const char tg[] = "{\"ok\":false,\"error_code\":429,\"description\":\"Too Many Requests: retry after 7\","
                             "\"parameters\":{\"retry_after\":7}}";
    const char *hint = "retry_after json parameters.retry_after";
    struct sb_http_response r;
    sb_outbox_set_json_reader(sb_json_read_path);
    r = response(429, "retry-after", "30", tg);
    CHECK(sb_outbox_retry_after(hint, &r) == 7.0);      /* the declared place, not the header */
    r = response(429, NULL, NULL, "{\"parameters\":{\"retry_after\":1.5}}");
    CHECK(sb_outbox_retry_after(hint, &r) == 1.5);
    r = response(429, NULL, NULL, "{\"parameters\":{\"retry_after\":-1}}");
    CHECK(sb_outbox_retry_after(hint, &r) == -1);
    r = response(429, NULL, NULL, "{\"parameters\":{\"retry_after\":\"7\"}}");
    CHECK(sb_outbox_retry_after(hint, &r) == -1);
    r = response(429, NULL, NULL, "{\"parameters\":{\"retry_after\":1e300}}");
    CHECK(sb_outbox_retry_after(hint, &r) == 1e9);
    r = response(429, NULL, NULL, "<html>busy</html>");
    CHECK(sb_outbox_retry_after(hint, &r) == -1);
    r = response(429, NULL, NULL, "{\"waits\":[{\"s\":4},{\"s\":9}]}");
    CHECK(sb_outbox_retry_after("retry_after json waits.2.s", &r) == 9.0);
    sb_outbox_set_json_reader(NULL);
}

static void test_failure_reason(void)
{
    static const char blocked[] = "{\"ok\":false,\"error_code\":403,\"description\":\"Forbidden: bot was blocked by the user\"}";
    char reason[300], big[1000];
    struct sb_http_response r;
    sb_outbox_set_json_reader(sb_json_read_path);
    r = response(403, NULL, NULL, blocked);
    sb_outbox_failure_reason("error_text json description", &r, reason, sizeof reason);
    CHECK_STR(reason, "HTTP 403: Forbidden: bot was blocked by the user");
    /* not declared: the start of the body */
    sb_outbox_failure_reason(NULL, &r, reason, sizeof reason);
    CHECK(strncmp(reason, "HTTP 403: {\"ok\":false", 21) == 0);
    /* declared, absent from the body: the body's start again */
    r = response(502, NULL, NULL, "Bad gateway\r\n\tfrom the proxy");
    sb_outbox_failure_reason("error_text json description", &r, reason, sizeof reason);
    CHECK_STR(reason, "HTTP 502: Bad gateway   from the proxy");
    r = response(500, NULL, NULL, NULL);
    sb_outbox_failure_reason(NULL, &r, reason, sizeof reason);
    CHECK_STR(reason, "HTTP 500");
    r = response(500, NULL, NULL, "\xff\xfe binary");
    sb_outbox_failure_reason(NULL, &r, reason, sizeof reason);
    CHECK_STR(reason, "HTTP 500");
    /* bounded: 200 bytes of text, cut on a character boundary */
    memset(big, 0, sizeof big);
    strcpy(big, "a");
    while (strlen(big) + 2 < sizeof big)
        strcat(big, "\xc3\xa9");
    r = response(400, NULL, NULL, big);
    sb_outbox_failure_reason(NULL, &r, reason, sizeof reason);
    CHECK(strlen(reason) == strlen("HTTP 400: ") + 199);
    snprintf(big, sizeof big, "{\"description\":\"%0500d\"}", 7);
    r = response(400, NULL, NULL, big);
    sb_outbox_failure_reason("error_text json description", &r, reason, sizeof reason);
    CHECK(strlen(reason) == strlen("HTTP 400: ") + 200);
    sb_outbox_set_json_reader(NULL);
}

static void test_json_read_path(void)
{
    double n = 0;
    char text[8];
    static const char doc[] = "{\"a\":{\"b\":[10,\"twenty\",{\"c\":null}]},\"s\":\"a long string\"}";
    CHECK(sb_json_read_path(doc, strlen(doc), "a.b.1", &n, text, sizeof text) == 1 && n == 10);
    CHECK(sb_json_read_path(doc, strlen(doc), "a.b.2", &n, text, sizeof text) == 2);
    CHECK_STR(text, "twenty");
    CHECK(sb_json_read_path(doc, strlen(doc), "s", &n, text, sizeof text) == 2);
    CHECK_STR(text, "a long ");                                   /* cut to the buffer */
    CHECK(sb_json_read_path(doc, strlen(doc), "a.b.3.c", &n, text, sizeof text) == 0);   /* null */
    CHECK(sb_json_read_path(doc, strlen(doc), "a.b.4", &n, text, sizeof text) == 0);
    CHECK(sb_json_read_path(doc, strlen(doc), "a", &n, text, sizeof text) == 0);         /* a table */
    CHECK(sb_json_read_path(doc, strlen(doc), "s.x", &n, text, sizeof text) == 0);
    CHECK(sb_json_read_path("{\"a\":", 5, "a", &n, text, sizeof text) == 0);            /* not JSON */
}

const struct test_case outbox_response_tests[] = {
    { "outbox: hints are checked when an entry is added", test_hints_check },
    { "outbox: Retry-After as seconds or a date, bounded", test_retry_after_header },
    { "outbox: a declared JSON path for the wait", test_retry_after_json },
    { "outbox: the platform's error text in the reason", test_failure_reason },
    { "luajson: one value read out of a JSON text", test_json_read_path },
    { NULL, NULL },
};
