#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum sb_log_level min_level = SB_LOG_INFO;

void sb_log_set_level(enum sb_log_level level) { min_level = level; }

int sb_log_enabled(enum sb_log_level level) { return level >= min_level; }

static const char *const level_names[] = { "debug", "info", "warn", "error" };

const char *sb_log_level_name(enum sb_log_level level) { return level_names[level]; }

int sb_log_parse_level(const char *name, enum sb_log_level *out)
{
    int i;
    for (i = 0; i < 4; i++) {
        if (name && strcmp(name, level_names[i]) == 0) {
            *out = (enum sb_log_level)i;
            return 0;
        }
    }
    return -1;
}

size_t sb_log_format_value(char *buf, size_t size, const char *value, size_t len)
{
    size_t i, o = 0;
    int quote = len == 0;
    for (i = 0; i < len && !quote; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c == 0x7f)
            quote = 1;
    }
#define PUT(ch) do { if (o + 1 < size) buf[o] = (ch); o++; } while (0)
    if (quote)
        PUT('"');
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '"' || c == '\\') {
            PUT('\\');
            PUT((char)c);
        } else if (c == '\n') {
            PUT('\\'); PUT('n');
        } else if (c == '\r') {
            PUT('\\'); PUT('r');
        } else if (c == '\t') {
            PUT('\\'); PUT('t');
        } else if (c < 0x20 || c == 0x7f) {
            static const char hex[] = "0123456789abcdef";
            PUT('\\'); PUT('x'); PUT(hex[c >> 4]); PUT(hex[c & 15]);
        } else {
            PUT((char)c);
        }
    }
    if (quote)
        PUT('"');
#undef PUT
    if (size)
        buf[o < size ? o : size - 1] = '\0';
    return o;
}

/* Log lines are capped so one huge field cannot flood stderr. */
#define LOG_LINE_MAX 8192

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
};

static void line_add_raw(struct line *l, const char *s, size_t n)
{
    if (l->len + n >= LOG_LINE_MAX - 1)
        n = LOG_LINE_MAX - 2 > l->len ? LOG_LINE_MAX - 2 - l->len : 0;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void line_add_pair(struct line *l, const char *key, const char *value, size_t len)
{
    char tmp[LOG_LINE_MAX];
    size_t n;
    line_add_raw(l, " ", 1);
    line_add_raw(l, key, strlen(key));
    line_add_raw(l, "=", 1);
    if (len > 2000)
        len = 2000; /* a field is truncated, the line still ends with a newline */
    n = sb_log_format_value(tmp, sizeof tmp, value, len);
    line_add_raw(l, tmp, n < sizeof tmp ? n : sizeof tmp - 1);
}

static void line_start(struct line *l, enum sb_log_level level)
{
    struct timespec ts;
    struct tm tm;
    char stamp[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    l->len = (size_t)snprintf(l->buf, sizeof l->buf, "ts=%s.%03ldZ level=%s", stamp,
                              ts.tv_nsec / 1000000, level_names[level]);
}

static void line_flush(struct line *l)
{
    ssize_t w;
    size_t off = 0;
    l->buf[l->len++] = '\n';
    /* One write per line keeps lines whole when several processes share stderr. */
    while (off < l->len) {
        w = write(2, l->buf + off, l->len - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}

void sb_log(enum sb_log_level level, const char *msg, ...)
{
    static __thread struct line l;   /* the store thread logs too */
    va_list ap;
    const char *k;
    if (level < min_level)
        return;
    line_start(&l, level);
    line_add_pair(&l, "msg", msg, strlen(msg));
    va_start(ap, msg);
    while ((k = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        if (!v)
            break;
        line_add_pair(&l, k, v, strlen(v));
    }
    va_end(ap);
    line_flush(&l);
}

void sb_log_pairs(enum sb_log_level level, const char *msg, size_t n,
                  const char *const *keys, const char *const *values, const size_t *value_lens)
{
    static __thread struct line l;   /* the store thread logs too */
    size_t i;
    if (level < min_level)
        return;
    line_start(&l, level);
    line_add_pair(&l, "msg", msg, strlen(msg));
    for (i = 0; i < n; i++)
        line_add_pair(&l, keys[i], values[i], value_lens[i]);
    line_flush(&l);
}
