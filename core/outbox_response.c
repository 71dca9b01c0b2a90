/* What a failed response says, read where the entry's adapter declared it
 * (outbox.h, hints): the wait before the next attempt and the platform's
 * error text. Nothing declared: the standard Retry-After header (RFC 9110:
 * delta-seconds or an HTTP date) and the start of the body when it is
 * text. Platform facts stay in the adapters; this file knows only where
 * to look. Every input here comes from outside: bounded and checked. */
#include "outbox_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "conv.h"
#include "httpclient.h"
#include "util.h"

#define RETRY_AFTER_MAX 1e9        /* seconds: past any max_age, the entry dies as too old */
#define ERROR_TEXT_MAX 200         /* bytes of the platform's text in a reason */
#define HINT_BODY_MAX (64 * 1024)  /* a larger body is not parsed for hints */
#define HINT_NAME_MAX 128
#define HINT_PATH_SEGMENTS_MAX 16
#define HINT_WHERE_MAX 8

static sb_outbox_json_fn read_json;

void sb_outbox_set_json_reader(sb_outbox_json_fn fn) { read_json = fn; }

/* Declarations */

static int header_char(char c)
{
    /* RFC 9110 tchar */
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static int valid_name(const char *where, const char *name, size_t n)
{
    size_t i, segments = 1, seg_len = 0;
    if (n == 0 || n > HINT_NAME_MAX)
        return 0;
    if (!strcmp(where, "header")) {
        for (i = 0; i < n; i++)
            if (!header_char(name[i]))
                return 0;
        return 1;
    }
    for (i = 0; i < n; i++) {
        if (name[i] == '.') {
            if (seg_len == 0 || ++segments > HINT_PATH_SEGMENTS_MAX)
                return 0;
            seg_len = 0;
        } else if (path_char(name[i])) {
            seg_len++;
        } else {
            return 0;
        }
    }
    return seg_len > 0;
}

/* Splits one line "<what> <where> <name>"; returns 0 if it is not three
 * words. what and where are copied (bounded), name points into the line. */
static int split_line(const char *line, size_t len, char *what, char *where, const char **name, size_t *name_len)
{
    const char *end = line + len, *sp1 = memchr(line, ' ', len), *sp2;
    if (!sp1)
        return 0;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    if (!sp2 || (size_t)(sp1 - line) >= 16 || (size_t)(sp2 - sp1 - 1) >= HINT_WHERE_MAX)
        return 0;
    memcpy(what, line, (size_t)(sp1 - line));
    what[sp1 - line] = '\0';
    memcpy(where, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    where[sp2 - sp1 - 1] = '\0';
    *name = sp2 + 1;
    *name_len = (size_t)(end - sp2 - 1);
    return 1;
}

const char *sb_outbox_hints_check(const char *hints)
{
    const char *p = hints;
    int seen_retry = 0, seen_text = 0;
    while (p && *p) {
        const char *nl = strchr(p, '\n'), *name;
        size_t len = nl ? (size_t)(nl - p) : strlen(p), name_len;
        char what[16], where[HINT_WHERE_MAX];
        if (!split_line(p, len, what, where, &name, &name_len))
            return "hints must be lines \"<what> <where> <name>\"";
        if (!strcmp(what, "retry_after")) {
            if (seen_retry++)
                return "retry_after is declared twice";
            if (strcmp(where, "header") && strcmp(where, "json"))
                return "retry_after must be { header = name } or { json = path }";
        } else if (!strcmp(what, "error_text")) {
            if (seen_text++)
                return "error_text is declared twice";
            if (strcmp(where, "json"))
                return "error_text must be { json = path }";
        } else {
            return "hints declare retry_after or error_text only";
        }
        if (!valid_name(where, name, name_len))
            return !strcmp(where, "header") ? "a header name must be 1-128 characters of a token"
                                            : "a JSON path must be names or indexes (letters, digits, _ or -)"
                                              " joined by dots, at most 128 bytes and 16 parts";
        p = nl ? nl + 1 : p + len;
    }
    return NULL;
}

/* Finds what's declaration; copies where and name (lower-cased for a
 * header, as responses keep them). Returns 0 when it is not declared. */
static int find_hint(const char *hints, const char *what, char *where, char *name)
{
    const char *p = hints;
    while (p && *p) {
        const char *nl = strchr(p, '\n'), *n;
        size_t len = nl ? (size_t)(nl - p) : strlen(p), n_len, i;
        char w[16];
        if (split_line(p, len, w, where, &n, &n_len) && !strcmp(w, what) && n_len <= HINT_NAME_MAX) {
            for (i = 0; i < n_len; i++)
                name[i] = !strcmp(where, "header") && n[i] >= 'A' && n[i] <= 'Z' ? (char)(n[i] - 'A' + 'a') : n[i];
            name[n_len] = '\0';
            return 1;
        }
        p = nl ? nl + 1 : p + len;
    }
    return 0;
}

/* The wait */

static double bounded_wait(double d)
{
    if (!(d >= 0))
        return -1;   /* negative or NaN */
    return d > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : d;
}

/* Retry-After: delta-seconds (digits only) or an HTTP date. */
static double parse_retry_after(const char *v)
{
    char buf[64];
    size_t n, i, digits = 0;
    time_t t;
    double ahead;
    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    for (i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        digits++;
    if (digits == n)
        return digits > 10 ? RETRY_AFTER_MAX : bounded_wait(strtod(buf, NULL));
    t = curl_getdate(buf, NULL);
    if (t == -1)
        return -1;
    ahead = (double)t - sb_now_wall();
    return bounded_wait(ahead > 0 ? ahead : 0);   /* a date in the past: now */
}

static int body_json(const struct sb_http_response *r, const char *path, double *number, char *text, size_t size)
{
    if (!read_json || !r->body || r->body_len == 0 || r->body_len > HINT_BODY_MAX)
        return 0;
    return read_json(r->body, r->body_len, path, number, text, size);
}

double sb_outbox_retry_after(const char *hints, const struct sb_http_response *r)
{
    char where[HINT_WHERE_MAX], name[HINT_NAME_MAX + 1], text[2];
    double number;
    if (!find_hint(hints, "retry_after", where, name))
        return parse_retry_after(sb_http_header(r, "retry-after"));
    if (!strcmp(where, "header"))
        return parse_retry_after(sb_http_header(r, name));
    if (body_json(r, name, &number, text, sizeof text) == 1 && isfinite(number))
        return bounded_wait(number);
    return -1;
}

/* The error text */

/* Copies at most ERROR_TEXT_MAX bytes of s, cut on a character boundary,
 * control characters replaced by spaces. Returns the length, or 0 when s
 * is not UTF-8 text. */
static size_t clean_text(const char *s, size_t n, char *out)
{
    size_t cut = n < ERROR_TEXT_MAX ? n : ERROR_TEXT_MAX, i;
    while (cut < n && cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
        cut--;
    if (memchr(s, '\0', cut) || !sb_utf8_valid(s, cut))
        return 0;
    for (i = 0; i < cut; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c == 0x7f ? ' ' : (char)c;
    }
    out[cut] = '\0';
    while (cut > 0 && out[cut - 1] == ' ')
        out[--cut] = '\0';
    return cut;
}

void sb_outbox_failure_reason(const char *hints, const struct sb_http_response *r, char *out, size_t out_size)
{
    char where[HINT_WHERE_MAX], name[HINT_NAME_MAX + 1], found[ERROR_TEXT_MAX * 4 + 1], text[ERROR_TEXT_MAX + 1];
    size_t len = 0;
    double number;
    if (find_hint(hints, "error_text", where, name)) {
        switch (body_json(r, name, &number, found, sizeof found)) {
        case 1:
            len = (size_t)snprintf(text, sizeof text, "%.15g", number);
            break;
        case 2:
            len = clean_text(found, strlen(found), text);
            break;
        }
    }
    /* not declared, or not where declared (a proxy's page): the body's start */
    if (len == 0 && r->body)
        len = clean_text(r->body, r->body_len, text);
    while (len > 0 && text[0] == ' ')
        memmove(text, text + 1, len--);
    if (len > 0)
        snprintf(out, out_size, "HTTP %ld: %s", r->status, text);
    else
        snprintf(out, out_size, "HTTP %ld", r->status);
}
