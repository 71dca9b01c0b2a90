#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

void sb_error_set(struct sb_error *err, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return;
    snprintf(err->file, sizeof err->file, "%s", file ? file : "");
    err->line = line;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

void sb_error_from_lua(struct sb_error *err, const char *msg, const char *default_file)
{
    /* Lua positions look like "chunkname:123: text" (or a bare
     * "chunkname:123"); the chunk name is the
     * script path, which may itself contain ':' only in odd setups, so the
     * first ":<digits>: " wins. */
    const char *p;
    if (!msg)
        msg = "(no message)";
    for (p = strchr(msg, ':'); p; p = strchr(p + 1, ':')) {
        const char *d = p + 1;
        int line = 0;
        if (*d < '0' || *d > '9')
            continue;
        while (*d >= '0' && *d <= '9' && line < 100000000)
            line = line * 10 + (*d++ - '0');
        if (d[0] != ':' && d[0] != '\0')
            continue;
        if (*d)
            d++;
        while (*d == ' ')
            d++;
        size_t flen = (size_t)(p - msg);
        if (flen >= sizeof err->file)
            flen = sizeof err->file - 1;
        memcpy(err->file, msg, flen);
        err->file[flen] = '\0';
        err->line = line;
        snprintf(err->message, sizeof err->message, "%s", d);
        return;
    }
    sb_error_set(err, default_file, 0, "%s", msg);
}

double sb_now_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double sb_now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void *sb_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("switchboard: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *sb_xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) {
        fputs("switchboard: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *sb_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("switchboard: out of memory\n", stderr);
        abort();
    }
    return q;
}

char *sb_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = sb_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *sb_xstrdup_or_null(const char *s) { return s ? sb_xstrdup(s) : NULL; }

struct timeval sb_timeval(double seconds)
{
    struct timeval tv;
    if (!(seconds > 0))
        seconds = 0;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}

int sb_secret_equal(const char *given, size_t given_len, const char *expected, size_t expected_len)
{
    /* Walk the expected secret in full whatever is given; fold every
     * difference, including the length, into one accumulator. */
    volatile unsigned char diff = (unsigned char)(given_len != expected_len);
    size_t i;
    for (i = 0; i < expected_len; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)expected[i]);
    }
    return expected_len > 0 && diff == 0;
}

void sb_json_quote(struct evbuffer *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    evbuffer_add(out, "\"", 1);
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
            u[4] = hex[c >> 4]; u[5] = hex[c & 15];
        } else {
            continue;
        }
        if (i > run)
            evbuffer_add(out, s + run, i - run);
        if (esc)
            evbuffer_add(out, esc, strlen(esc));
        else
            evbuffer_add(out, u, 6);
        run = i + 1;
    }
    if (len > run)
        evbuffer_add(out, s + run, len - run);
    evbuffer_add(out, "\"", 1);
}

int sb_read_file(const char *path, size_t max, char **out, size_t *out_len, char *err, size_t err_size)
{
    FILE *f = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 4096;
    int rc = -1;

    f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot open: %s", strerror(errno));
        goto done;
    }
    buf = sb_xmalloc(cap + 1);
    for (;;) {
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (len > max) {
            snprintf(err, err_size, "file larger than %zu bytes", max);
            goto done;
        }
        if (n == 0) {
            if (ferror(f)) {
                snprintf(err, err_size, "read error: %s", strerror(errno));
                goto done;
            }
            break;
        }
        if (len == cap) {
            cap *= 2;
            buf = sb_xrealloc(buf, cap + 1);
        }
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    buf = NULL;
    rc = 0;
done:
    free(buf);
    if (f)
        fclose(f);
    return rc;
}

const char *sb_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}
