#include "schedule.h"

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define ALL_DAYS 0x7f
#define DAY_SECONDS 86400
#define TZ_SIZE sizeof(((struct sb_schedule *)0)->tz)

/* Outside these years struct tm's int fields and time_t conversions are
 * not worth reasoning about, and no timer needs them. */
#define AFTER_MIN -2208988800.0 /* 1900-01-01T00:00:00Z */
#define AFTER_MAX 253402300799.0 /* 9999-12-31T23:59:59Z */

static const char *const day_names[7] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };

/* Quoted pieces of the input are cut to this length so a message stays
 * readable whatever the caller passed. */
#define QUOTE_MAX 40

static int fail(char *err, size_t err_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    if (err && err_size) {
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int quote_len(size_t len)
{
    return (int)(len > QUOTE_MAX ? QUOTE_MAX : len);
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int day_index(const char *p, size_t len)
{
    int i;
    if (len != 3)
        return -1;
    for (i = 0; i < 7; i++)
        if (strncasecmp(p, day_names[i], 3) == 0)
            return i;
    return -1;
}

static int parse_days(const char *p, size_t len, unsigned char *mask, char *err, size_t err_size)
{
    const char *end = p + len, *item = p;
    if ((len == 1 && *p == '*') || (len == 5 && strncasecmp(p, "daily", 5) == 0)) {
        *mask = ALL_DAYS;
        return 0;
    }
    *mask = 0;
    while (item <= end) {
        const char *comma = memchr(item, ',', (size_t)(end - item));
        const char *item_end = comma ? comma : end;
        size_t n = (size_t)(item_end - item);
        const char *dash = memchr(item, '-', n);
        if (n == 0)
            return fail(err, err_size, "empty day in \"%.*s\"", quote_len(len), p);
        if (!dash) {
            int d = day_index(item, n);
            if (d < 0)
                return fail(err, err_size, "unknown day \"%.*s\" (expected mon, tue, wed, thu, fri, sat or sun)",
                            quote_len(n), item);
            *mask |= (unsigned char)(1u << d);
        } else {
            size_t an = (size_t)(dash - item), bn = n - an - 1;
            int a, b;
            if (memchr(dash + 1, '-', bn))
                return fail(err, err_size, "bad day range \"%.*s\" (expected two days, like mon-fri)",
                            quote_len(n), item);
            a = day_index(item, an);
            b = day_index(dash + 1, bn);
            if (a < 0)
                return fail(err, err_size, "unknown day \"%.*s\" in range \"%.*s\" (expected mon, tue, wed, thu, fri, sat or sun)",
                            quote_len(an), item, quote_len(n), item);
            if (b < 0)
                return fail(err, err_size, "unknown day \"%.*s\" in range \"%.*s\" (expected mon, tue, wed, thu, fri, sat or sun)",
                            quote_len(bn), dash + 1, quote_len(n), item);
            /* "mon-mon" could mean one day or, wrapping, the whole week. */
            if (a == b)
                return fail(err, err_size, "day range \"%.*s\" starts and ends on the same day (write just \"%s\")",
                            quote_len(n), item, day_names[a]);
            for (;;) {
                *mask |= (unsigned char)(1u << a);
                if (a == b)
                    break;
                a = (a + 1) % 7;
            }
        }
        if (!comma)
            break;
        item = comma + 1;
    }
    return 0;
}

static int add_time(struct sb_schedule *out, short m)
{
    int i = 0, j;
    while (i < out->ntimes && out->minutes[i] < m)
        i++;
    if (i < out->ntimes && out->minutes[i] == m)
        return 0;
    if (out->ntimes == SB_SCHEDULE_MAX_TIMES)
        return -1;
    for (j = out->ntimes; j > i; j--)
        out->minutes[j] = out->minutes[j - 1];
    out->minutes[i] = m;
    out->ntimes++;
    return 0;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_times(const char *p, size_t len, struct sb_schedule *out, char *err, size_t err_size)
{
    const char *end = p + len, *item = p;
    while (item <= end) {
        const char *comma = memchr(item, ',', (size_t)(end - item));
        const char *item_end = comma ? comma : end;
        size_t n = (size_t)(item_end - item);
        int h, m;
        if (n == 0)
            return fail(err, err_size, "empty time in \"%.*s\"", quote_len(len), p);
        if (n != 5 || !is_digit(item[0]) || !is_digit(item[1]) || item[2] != ':' || !is_digit(item[3]) ||
            !is_digit(item[4]))
            return fail(err, err_size, "bad time \"%.*s\" (expected HH:MM, 00:00 to 23:59)", quote_len(n), item);
        h = (item[0] - '0') * 10 + (item[1] - '0');
        m = (item[3] - '0') * 10 + (item[4] - '0');
        if (h > 23 || m > 59)
            return fail(err, err_size, "time \"%.*s\" out of range (00:00 to 23:59)", quote_len(n), item);
        if (add_time(out, (short)(h * 60 + m)) < 0)
            return fail(err, err_size, "too many times (at most %d)", SB_SCHEDULE_MAX_TIMES);
        if (!comma)
            break;
        item = comma + 1;
    }
    return 0;
}

static int zone_char_ok(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '_' || c == '+' || c == '-' ||
           c == '/';
}

/* glibc falls back to UTC for a zone it cannot load and says nothing, so a
 * typo would shift every firing by hours; the name is held to the shape of
 * IANA names (which also keeps it inside the zone directory) and its file
 * must be a TZif file. */
static int check_zone(const char *tz, char *err, size_t err_size)
{
    size_t len = strlen(tz), i;
    const char *dir = getenv("TZDIR");
    char path[4096], magic[4];
    struct stat st;
    int fd, n;
    if (len >= TZ_SIZE)
        return fail(err, err_size, "time zone name \"%.*s...\" too long (at most %zu characters)", QUOTE_MAX, tz,
                    TZ_SIZE - 1);
    for (i = 0; i < len; i++)
        if (!zone_char_ok(tz[i]))
            return fail(err, err_size, "bad time zone \"%s\": only letters, digits and _ + - / are allowed", tz);
    if (tz[0] == '/' || tz[len - 1] == '/' || strstr(tz, "//"))
        return fail(err, err_size, "bad time zone \"%s\": expected a name like Europe/Berlin", tz);
    if (strcmp(tz, "UTC") == 0)
        return 0;
    if (!dir || !*dir)
        dir = "/usr/share/zoneinfo";
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, tz) >= sizeof path)
        return fail(err, err_size, "unknown time zone \"%s\" (zone directory path too long)", tz);
    /* Non-blocking so that a FIFO in the zone directory cannot stall a
     * reload; anything but a regular file is refused below. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fail(err, err_size, "unknown time zone \"%s\" (no zone file under %s)", tz, dir);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, err_size, "unknown time zone \"%s\" (%s/%s is not a zone file)", tz, dir, tz);
    }
    n = (int)read(fd, magic, sizeof magic);
    close(fd);
    if (n != (int)sizeof magic || memcmp(magic, "TZif", 4) != 0)
        return fail(err, err_size, "unknown time zone \"%s\" (%s/%s is not a zone file)", tz, dir, tz);
    return 0;
}

int sb_schedule_parse(const char *spec, const char *tz, struct sb_schedule *out, char *err, size_t err_size)
{
    const char *p = spec ? spec : "", *f1, *f2 = NULL, *end;
    size_t n1, n2 = 0;
    struct sb_schedule s;

    memset(&s, 0, sizeof s);
    if (err && err_size)
        err[0] = '\0';
    end = p + strlen(p);
    while (p < end && is_space(*p))
        p++;
    while (end > p && is_space(end[-1]))
        end--;
    if (p == end)
        return fail(err, err_size, "empty schedule (expected [DAYS ]HH:MM, like \"mon-fri 09:00\")");
    f1 = p;
    while (p < end && !is_space(*p))
        p++;
    n1 = (size_t)(p - f1);
    while (p < end && is_space(*p))
        p++;
    if (p < end) {
        f2 = p;
        while (p < end && !is_space(*p))
            p++;
        n2 = (size_t)(p - f2);
        while (p < end && is_space(*p))
            p++;
        if (p < end)
            return fail(err, err_size,
                        "too many fields in \"%.*s\" (expected [DAYS ]TIMES, with no spaces inside a list)",
                        quote_len((size_t)(end - f1)), f1);
    }

    if (f2) {
        if (parse_days(f1, n1, &s.days, err, err_size) < 0)
            return -1;
        if (parse_times(f2, n2, &s, err, err_size) < 0)
            return -1;
    } else {
        unsigned char ignored;
        /* A lone field that reads as days is a schedule missing its times,
         * which says more than "bad time \"mon-fri\"". */
        if (!is_digit(f1[0]) && parse_days(f1, n1, &ignored, NULL, 0) == 0)
            return fail(err, err_size, "no times after \"%.*s\" (expected HH:MM after the days)", quote_len(n1), f1);
        s.days = ALL_DAYS;
        if (parse_times(f1, n1, &s, err, err_size) < 0)
            return -1;
    }

    if (!tz || !*tz)
        tz = "UTC";
    if (check_zone(tz, err, err_size) < 0)
        return -1;
    memcpy(s.tz, tz, strlen(tz) + 1);
    *out = s;
    return 0;
}

/* --- firing times --- */

/* Offsets come from localtime_r under the zone set by zone_enter, or are 0
 * for UTC, which needs neither TZ nor a zone file. */
static long offset_at(time_t t, int utc)
{
    struct tm tm;
    if (utc || !localtime_r(&t, &tm))
        return 0;
    return tm.tm_gmtoff;
}

/* The zone's clock reading at t, as seconds since the epoch read as UTC. */
static time_t wall_at(time_t t, int utc)
{
    return t + offset_at(t, utc);
}

/* The first instant at which the zone's clock reads `wall` or later: the
 * one instant for an ordinary time, the first of two when the clock is set
 * back, the end of the gap when it jumps over `wall`. mktime's choice for
 * such times depends on tm_isdst and differs between libcs, so the instant
 * is found from offsets instead: a UTC offset is less than a day, so the
 * offsets one day before and one day after `wall` are the zone's offsets
 * on either side of any change near it. */
static time_t resolve(time_t wall, int utc)
{
    long off_before, off_after;
    time_t ta, tb, lo, hi;
    int va, vb;
    if (utc)
        return wall;
    off_before = offset_at(wall - DAY_SECONDS, utc);
    off_after = offset_at(wall + DAY_SECONDS, utc);
    ta = wall - off_before;
    tb = wall - off_after;
    va = offset_at(ta, utc) == off_before;
    vb = offset_at(tb, utc) == off_after;
    if (va && vb)
        return ta < tb ? ta : tb;
    if (va)
        return ta;
    if (vb)
        return tb;
    /* In a gap: between the two candidates the clock crosses `wall` once. */
    lo = ta < tb ? ta : tb;
    hi = ta < tb ? tb : ta;
    if (wall_at(lo, utc) >= wall || wall_at(hi, utc) < wall)
        return hi;
    while (hi - lo > 1) {
        time_t mid = lo + (hi - lo) / 2;
        if (wall_at(mid, utc) >= wall)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

static long long floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

struct saved_tz {
    char *value; /* NULL when TZ was unset */
};

static int zone_enter(struct saved_tz *sv, const char *tz)
{
    const char *old = getenv("TZ");
    char value[TZ_SIZE + 1];
    sv->value = old ? sb_xstrdup(old) : NULL;
    /* The colon makes glibc read a zone file and never parse the name as
     * a POSIX TZ rule. */
    snprintf(value, sizeof value, ":%s", tz);
    if (setenv("TZ", value, 1) != 0) {
        free(sv->value);
        return -1;
    }
    tzset();
    return 0;
}

static void zone_leave(struct saved_tz *sv)
{
    if (sv->value)
        setenv("TZ", sv->value, 1);
    else
        unsetenv("TZ");
    free(sv->value);
    /* localtime_r does not look at TZ again by itself. */
    tzset();
}

/* Firing instants rise with the local reading they stand for (each is the
 * first instant the clock reaches it), so the first listed time, in day
 * and time order, that lands after `after` is the answer; no reading
 * before the local date of `after` can land after it. */
static double search(const struct sb_schedule *s, double after, int utc)
{
    time_t t0 = (time_t)floor(after);
    long long day0 = floor_div((long long)wall_at(t0, utc), DAY_SECONDS);
    int d, i;

    for (d = 0; d <= 8; d++) {
        long long day = day0 + d;
        /* 1970-01-01 was a Thursday (index 3 from Monday). */
        int wd = (int)(((day + 3) % 7 + 7) % 7);
        if (!(s->days & (1u << wd)))
            continue;
        for (i = 0; i < s->ntimes; i++) {
            time_t wall = (time_t)(day * DAY_SECONDS + s->minutes[i] * 60);
            double t = (double)resolve(wall, utc);
            if (t > after)
                return t;
        }
    }
    return NAN;
}

double sb_schedule_next(const struct sb_schedule *s, double after)
{
    struct saved_tz sv;
    double next;
    int utc, i;
    if (!s || !(s->days & ALL_DAYS) || s->ntimes <= 0 || s->ntimes > SB_SCHEDULE_MAX_TIMES)
        return NAN;
    if (isnan(after) || after < AFTER_MIN || after > AFTER_MAX)
        return NAN;
    if (!memchr(s->tz, '\0', sizeof s->tz))
        return NAN;
    for (i = 0; i < s->ntimes; i++)
        if (s->minutes[i] < 0 || s->minutes[i] >= 24 * 60)
            return NAN;
    utc = !s->tz[0] || strcmp(s->tz, "UTC") == 0;
    if (utc)
        return search(s, after, 1);
    if (zone_enter(&sv, s->tz) < 0)
        return NAN;
    next = search(s, after, 0);
    zone_leave(&sv);
    return next;
}

int sb_schedule_local_time(double t, const char *tz, struct sb_local_time *out, char *err, size_t err_size)
{
    struct saved_tz sv;
    struct tm tm;
    time_t tt;
    int ok;
    if (isnan(t) || t < AFTER_MIN || t > AFTER_MAX) {
        fail(err, err_size, "time out of range (epoch seconds in the years 1900 to 9999)");
        return 1;
    }
    if (!tz || !*tz)
        tz = "UTC";
    if (check_zone(tz, err, err_size) < 0)
        return 2;
    tt = (time_t)floor(t);
    if (strcmp(tz, "UTC") == 0) {
        ok = gmtime_r(&tt, &tm) != NULL;
    } else {
        if (zone_enter(&sv, tz) < 0) {
            fail(err, err_size, "cannot switch to time zone \"%s\"", tz);
            return 2;
        }
        ok = localtime_r(&tt, &tm) != NULL;
        zone_leave(&sv);
    }
    if (!ok) {
        fail(err, err_size, "time out of range (epoch seconds in the years 1900 to 9999)");
        return 1;
    }
    out->year = tm.tm_year + 1900;
    out->month = tm.tm_mon + 1;
    out->day = tm.tm_mday;
    out->hour = tm.tm_hour;
    out->min = tm.tm_min;
    out->sec = tm.tm_sec;
    out->wday = tm.tm_wday == 0 ? 7 : tm.tm_wday;
    return 0;
}

void sb_schedule_pin_tz(void)
{
    if (!getenv("TZ"))
        setenv("TZ", ":/etc/localtime", 1);
}

/* --- canonical text --- */

struct out {
    char *buf;
    size_t size, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (o->len >= o->size)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, o->size - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

static void put_days(struct out *o, unsigned char days)
{
    int i, runs = 0, start = 0, count = 0, first = 1;
    days &= ALL_DAYS;
    if (days == ALL_DAYS) {
        put(o, "daily");
        return;
    }
    if (!days) {
        put(o, "none");
        return;
    }
    for (i = 0; i < 7; i++) {
        if (!(days & (1u << i)))
            continue;
        count++;
        if (!(days & (1u << ((i + 6) % 7)))) {
            runs++;
            start = i;
        }
    }
    /* Two days read better as a list ("sat,sun") than as a range. */
    if (runs == 1 && count >= 3) {
        put(o, "%s-%s", day_names[start], day_names[(start + count - 1) % 7]);
        return;
    }
    for (i = 0; i < 7; i++) {
        if (days & (1u << i)) {
            put(o, "%s%s", first ? "" : ",", day_names[i]);
            first = 0;
        }
    }
}

void sb_schedule_format(const struct sb_schedule *s, char *buf, size_t size)
{
    char tmp[SB_SCHEDULE_FORMAT_MAX];
    struct out o = { tmp, sizeof tmp, 0 };
    int i, n;
    if (!buf || !size)
        return;
    tmp[0] = '\0';
    put_days(&o, s->days);
    n = s->ntimes < 0 ? 0 : s->ntimes > SB_SCHEDULE_MAX_TIMES ? SB_SCHEDULE_MAX_TIMES : s->ntimes;
    for (i = 0; i < n; i++)
        put(&o, "%s%02d:%02d", i ? "," : " ", s->minutes[i] / 60, s->minutes[i] % 60);
    put(&o, " %.*s", (int)sizeof s->tz, s->tz[0] ? s->tz : "UTC");
    snprintf(buf, size, "%s", tmp);
}
