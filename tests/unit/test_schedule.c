#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "schedule.h"
#include "tests.h"

/* Expected instants are written as UTC timestamps and converted without
 * any zone, so they do not depend on the code under test. */
static double utc(const char *iso)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (sscanf(iso, "%d-%d-%dT%d:%d:%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec) != 6) {
        fprintf(stderr, "  bad test timestamp %s\n", iso);
        harness_current_failed = 1;
        return NAN;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (double)timegm(&tm);
}

static void iso(double t, char *buf, size_t size)
{
    time_t tt;
    struct tm tm;
    if (isnan(t)) {
        snprintf(buf, size, "NAN");
        return;
    }
    tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Checks next(spec, zone, after) == want, with both sides shown as UTC
 * timestamps when they differ. */
static void expect_next_at(int line, const char *spec, const char *zone, double after, const char *want)
{
    struct sb_schedule s;
    char err[256], got_s[32], after_s[32];
    double got;
    if (sb_schedule_parse(spec, zone, &s, err, sizeof err) != 0) {
        fprintf(stderr, "  line %d: parse \"%s\" %s failed: %s\n", line, spec, zone ? zone : "(null)", err);
        harness_current_failed = 1;
        return;
    }
    got = sb_schedule_next(&s, after);
    if (isnan(got) || got != utc(want)) {
        iso(got, got_s, sizeof got_s);
        iso(after, after_s, sizeof after_s);
        fprintf(stderr, "  line %d: next(\"%s\" %s, after %s%s) = %s, expected %s\n", line, spec, zone, after_s,
                after != floor(after) ? " + fraction" : "", got_s, want);
        harness_current_failed = 1;
    }
}

#define EXPECT_NEXT(spec, zone, after, want) expect_next_at(__LINE__, spec, zone, after, want)

/* Parses successfully and checks the canonical text. */
static void expect_parse_at(int line, const char *spec, const char *zone, const char *canonical)
{
    struct sb_schedule s;
    char err[256] = "", buf[SB_SCHEDULE_FORMAT_MAX];
    if (sb_schedule_parse(spec, zone, &s, err, sizeof err) != 0) {
        fprintf(stderr, "  line %d: parse \"%s\" failed: %s\n", line, spec, err);
        harness_current_failed = 1;
        return;
    }
    sb_schedule_format(&s, buf, sizeof buf);
    if (strcmp(buf, canonical) != 0) {
        fprintf(stderr, "  line %d: \"%s\" formats as \"%s\", expected \"%s\"\n", line, spec, buf, canonical);
        harness_current_failed = 1;
    }
}

#define EXPECT_PARSE(spec, zone, canonical) expect_parse_at(__LINE__, spec, zone, canonical)

/* Refused, with a message that contains `message`. */
static void expect_error_at(int line, const char *spec, const char *zone, const char *message)
{
    struct sb_schedule s;
    char err[256] = "";
    if (sb_schedule_parse(spec, zone, &s, err, sizeof err) != -1) {
        fprintf(stderr, "  line %d: parse \"%s\" %s succeeded, expected an error\n", line, spec ? spec : "(null)",
                zone ? zone : "(null)");
        harness_current_failed = 1;
        return;
    }
    if (!strstr(err, message)) {
        fprintf(stderr, "  line %d: parse \"%s\": error \"%s\" lacks \"%s\"\n", line, spec ? spec : "(null)", err,
                message);
        harness_current_failed = 1;
    }
}

#define EXPECT_ERROR(spec, zone, message) expect_error_at(__LINE__, spec, zone, message)

static void test_parse_valid(void)
{
    struct sb_schedule s;
    char err[256];

    CHECK(sb_schedule_parse("sat,sun 18:00,10:30", "Europe/Moscow", &s, err, sizeof err) == 0);
    CHECK(s.days == ((1 << 5) | (1 << 6)));
    CHECK(s.ntimes == 2);
    CHECK(s.minutes[0] == 10 * 60 + 30);
    CHECK(s.minutes[1] == 18 * 60);
    CHECK_STR(s.tz, "Europe/Moscow");

    CHECK(sb_schedule_parse("09:00", NULL, &s, err, sizeof err) == 0);
    CHECK(s.days == 0x7f);
    CHECK(s.ntimes == 1 && s.minutes[0] == 540);
    CHECK_STR(s.tz, "UTC");

    EXPECT_PARSE("09:00", NULL, "daily 09:00 UTC");
    EXPECT_PARSE("09:00", "", "daily 09:00 UTC");
    EXPECT_PARSE("daily 00:00", "UTC", "daily 00:00 UTC");
    EXPECT_PARSE("DAILY 23:59", NULL, "daily 23:59 UTC");
    EXPECT_PARSE("* 12:00", NULL, "daily 12:00 UTC");
    EXPECT_PARSE("mon-fri 09:00", "Europe/Berlin", "mon-fri 09:00 Europe/Berlin");
    EXPECT_PARSE("Mon-FRI 09:00", "Europe/Berlin", "mon-fri 09:00 Europe/Berlin");
    EXPECT_PARSE("mon,tue,wed,thu,fri 09:00", "Europe/Berlin", "mon-fri 09:00 Europe/Berlin");
    EXPECT_PARSE("fri,mon-thu 09:00", "Europe/Berlin", "mon-fri 09:00 Europe/Berlin");
    EXPECT_PARSE("fri-mon 08:00", NULL, "fri-mon 08:00 UTC");
    EXPECT_PARSE("sat,sun,fri,mon 08:00", NULL, "fri-mon 08:00 UTC");
    EXPECT_PARSE("sun-sat 08:00", NULL, "daily 08:00 UTC");
    EXPECT_PARSE("mon-sun 08:00", NULL, "daily 08:00 UTC");
    EXPECT_PARSE("sat,sun 10:30,18:00", NULL, "sat,sun 10:30,18:00 UTC");
    EXPECT_PARSE("sun,sat 18:00,10:30,10:30", NULL, "sat,sun 10:30,18:00 UTC");
    EXPECT_PARSE("mon,wed,fri 07:05", NULL, "mon,wed,fri 07:05 UTC");
    EXPECT_PARSE("mon,mon 07:05", NULL, "mon 07:05 UTC");
    EXPECT_PARSE("sun-mon 07:05", NULL, "mon,sun 07:05 UTC");
    EXPECT_PARSE("mon-wed,fri 08:15", NULL, "mon,tue,wed,fri 08:15 UTC");
    EXPECT_PARSE("  tue\t 00:00 \n", NULL, "tue 00:00 UTC");
    EXPECT_PARSE("00:00,01:00,02:00,03:00,04:00,05:00,06:00,07:00,08:00,09:00,10:00,11:00,"
                 "12:00,13:00,14:00,15:00,16:00,17:00,18:00,19:00,20:00,21:00,22:00,23:00",
                 "America/New_York",
                 "daily 00:00,01:00,02:00,03:00,04:00,05:00,06:00,07:00,08:00,09:00,10:00,11:00,"
                 "12:00,13:00,14:00,15:00,16:00,17:00,18:00,19:00,20:00,21:00,22:00,23:00 America/New_York");
    EXPECT_PARSE("09:00", "Etc/GMT+3", "daily 09:00 Etc/GMT+3");

    /* Equal schedules parse to equal bytes, so they can be compared whole. */
    {
        struct sb_schedule a, b;
        CHECK(sb_schedule_parse("mon-fri 09:00,17:30", "Europe/Berlin", &a, err, sizeof err) == 0);
        CHECK(sb_schedule_parse("fri,thu,wed,tue,mon 17:30,09:00", "Europe/Berlin", &b, err, sizeof err) == 0);
        CHECK(memcmp(&a, &b, sizeof a) == 0);
    }
}

static void test_parse_errors(void)
{
    char big[256];
    struct sb_schedule s;
    int i;

    EXPECT_ERROR(NULL, NULL, "empty schedule");
    EXPECT_ERROR("", NULL, "empty schedule");
    EXPECT_ERROR("   ", NULL, "empty schedule");
    EXPECT_ERROR("mon-fri", NULL, "no times after \"mon-fri\"");
    EXPECT_ERROR("daily", NULL, "no times after \"daily\"");
    EXPECT_ERROR("9:00", NULL, "bad time \"9:00\"");
    EXPECT_ERROR("09:0", NULL, "bad time \"09:0\"");
    EXPECT_ERROR("0900", NULL, "bad time \"0900\"");
    EXPECT_ERROR("noon", NULL, "bad time \"noon\"");
    EXPECT_ERROR("09:00:00", NULL, "bad time \"09:00:00\"");
    EXPECT_ERROR("24:00", NULL, "time \"24:00\" out of range");
    EXPECT_ERROR("12:60", NULL, "time \"12:60\" out of range");
    EXPECT_ERROR("09:00,", NULL, "empty time in \"09:00,\"");
    EXPECT_ERROR("09:00,,10:00", NULL, "empty time");
    EXPECT_ERROR("mon 09:00,9:30", NULL, "bad time \"9:30\"");
    EXPECT_ERROR("tues 09:00", NULL, "unknown day \"tues\"");
    EXPECT_ERROR("monday 09:00", NULL, "unknown day \"monday\"");
    EXPECT_ERROR("mon,xyz 09:00", NULL, "unknown day \"xyz\"");
    EXPECT_ERROR("mon-fry 09:00", NULL, "unknown day \"fry\" in range \"mon-fry\"");
    EXPECT_ERROR("mun-fri 09:00", NULL, "unknown day \"mun\" in range \"mun-fri\"");
    EXPECT_ERROR("mon- 09:00", NULL, "unknown day \"\" in range \"mon-\"");
    EXPECT_ERROR("mon-fri-sat 09:00", NULL, "bad day range \"mon-fri-sat\"");
    EXPECT_ERROR("mon-mon 09:00", NULL, "starts and ends on the same day");
    EXPECT_ERROR("mon,,fri 09:00", NULL, "empty day in \"mon,,fri\"");
    EXPECT_ERROR("daily,mon 09:00", NULL, "unknown day \"daily\"");
    EXPECT_ERROR("09:00 mon", NULL, "unknown day \"09:00\"");
    EXPECT_ERROR("sat, sun 10:30", NULL, "too many fields");
    EXPECT_ERROR("mon 09:00 Europe/Berlin", NULL, "too many fields");

    /* 25 distinct times are one too many; repeats do not count. */
    big[0] = '\0';
    for (i = 0; i < 25; i++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "%s%02d:%02d", i ? "," : "", i / 2, (i % 2) * 30);
    EXPECT_ERROR(big, NULL, "too many times (at most 24)");
    big[strlen(big) - 6] = '\0';
    CHECK(sb_schedule_parse(big, NULL, &s, NULL, 0) == 0);
    CHECK(s.ntimes == 24);
    strcat(big, ",00:00");
    CHECK(sb_schedule_parse(big, NULL, &s, NULL, 0) == 0);

    /* A message longer than the caller's buffer is cut, never overrun. */
    {
        char small[8];
        CHECK(sb_schedule_parse("tues 09:00", NULL, &s, small, sizeof small) == -1);
        CHECK(strlen(small) == sizeof small - 1);
    }
}

static void test_parse_zones(void)
{
    const char *old_tzdir = getenv("TZDIR");
    char *saved = old_tzdir ? strdup(old_tzdir) : NULL;
    struct sb_schedule s;
    char err[256];

    EXPECT_ERROR("09:00", "Mars/Olympus_Mons", "unknown time zone \"Mars/Olympus_Mons\" (no zone file");
    EXPECT_ERROR("09:00", "europe/berlin", "unknown time zone \"europe/berlin\"");
    EXPECT_ERROR("09:00", "Europe", "Europe is not a zone file");
    EXPECT_ERROR("09:00", "../zoneinfo/UTC", "only letters, digits and _ + - / are allowed");
    EXPECT_ERROR("09:00", "Europe/../Europe/Berlin", "only letters, digits and _ + - / are allowed");
    EXPECT_ERROR("09:00", "Europe/Berlin ", "only letters, digits");
    EXPECT_ERROR("09:00", "Europe/Berlin\n", "only letters, digits");
    EXPECT_ERROR("09:00", "CET,M3.5.0", "only letters, digits");
    EXPECT_ERROR("09:00", ":Europe/Berlin", "only letters, digits");
    EXPECT_ERROR("09:00", "/usr/share/zoneinfo/UTC", "expected a name like Europe/Berlin");
    EXPECT_ERROR("09:00", "Europe/", "expected a name like Europe/Berlin");
    EXPECT_ERROR("09:00", "Europe//Berlin", "expected a name like Europe/Berlin");
    EXPECT_ERROR("09:00", "A123456789/123456789/123456789/123456789/123456789/123456789/123",
                 "too long (at most 63 characters)");

    /* The zone directory follows $TZDIR, as glibc's lookup does. */
    setenv("TZDIR", "/nonexistent-zoneinfo", 1);
    EXPECT_ERROR("09:00", "Europe/Berlin", "no zone file under /nonexistent-zoneinfo");
    CHECK(sb_schedule_parse("09:00", "UTC", &s, err, sizeof err) == 0); /* UTC needs no file */
    CHECK(sb_schedule_parse("09:00", NULL, &s, err, sizeof err) == 0);
    setenv("TZDIR", "/usr/share/zoneinfo", 1);
    CHECK(sb_schedule_parse("09:00", "Europe/Berlin", &s, err, sizeof err) == 0);
    setenv("TZDIR", "", 1);
    CHECK(sb_schedule_parse("09:00", "Europe/Berlin", &s, err, sizeof err) == 0);
    /* A file that is there but holds no zone (tzdata ships a few). */
    {
        char dir[] = "/tmp/sb-zoneinfo-XXXXXX", path[64];
        FILE *f;
        CHECK(mkdtemp(dir) != NULL);
        snprintf(path, sizeof path, "%s/Notes", dir);
        f = fopen(path, "w");
        CHECK(f != NULL);
        if (f) {
            fputs("# not a TZif file\n", f);
            fclose(f);
        }
        setenv("TZDIR", dir, 1);
        EXPECT_ERROR("09:00", "Notes", "Notes is not a zone file");
        snprintf(path, sizeof path, "%s/Pipe", dir);
        CHECK(mkfifo(path, 0600) == 0);
        EXPECT_ERROR("09:00", "Pipe", "Pipe is not a zone file");
        unlink(path);
        snprintf(path, sizeof path, "%s/Notes", dir);
        EXPECT_ERROR("09:00", "Europe/Berlin", "unknown time zone \"Europe/Berlin\" (no zone file under /tmp/sb-zoneinfo-");
        unlink(path);
        rmdir(dir);
    }
    if (saved)
        setenv("TZDIR", saved, 1);
    else
        unsetenv("TZDIR");
    free(saved);
}

static void test_format(void)
{
    struct sb_schedule s;
    char buf[SB_SCHEDULE_FORMAT_MAX], small[10];
    CHECK(sb_schedule_parse("mon-fri 09:00", "Europe/Berlin", &s, NULL, 0) == 0);
    sb_schedule_format(&s, buf, sizeof buf);
    CHECK_STR(buf, "mon-fri 09:00 Europe/Berlin");
    memset(small, 'x', sizeof small);
    sb_schedule_format(&s, small, sizeof small);
    CHECK_STR(small, "mon-fri 0");
    /* The days and times of the canonical text parse back to the same
     * schedule. */
    {
        struct sb_schedule back;
        const char *specs[] = { "fri-mon 08:00", "sun,tue 00:00,23:59", "mon-wed,fri 08:15", "wed 12:00" };
        size_t i;
        for (i = 0; i < sizeof specs / sizeof *specs; i++) {
            char *tz;
            CHECK(sb_schedule_parse(specs[i], "Asia/Tokyo", &s, NULL, 0) == 0);
            sb_schedule_format(&s, buf, sizeof buf);
            tz = strrchr(buf, ' ');
            *tz++ = '\0';
            CHECK(sb_schedule_parse(buf, tz, &back, NULL, 0) == 0);
            CHECK(memcmp(&s, &back, sizeof s) == 0);
        }
    }
}

static void test_next_utc(void)
{
    struct sb_schedule s;
    /* 2026-01-05 is a Monday. */
    EXPECT_NEXT("09:00", NULL, utc("2026-01-05T08:00:00Z"), "2026-01-05T09:00:00Z");
    EXPECT_NEXT("09:00", NULL, utc("2026-01-05T08:59:59Z") + 0.5, "2026-01-05T09:00:00Z");
    /* Strictly after: a firing instant itself, and a hair past it, move on
     * to the next day. */
    EXPECT_NEXT("09:00", NULL, utc("2026-01-05T09:00:00Z"), "2026-01-06T09:00:00Z");
    EXPECT_NEXT("09:00", NULL, utc("2026-01-05T09:00:00Z") + 0.001, "2026-01-06T09:00:00Z");
    EXPECT_NEXT("09:00", NULL, utc("2026-01-05T09:00:00Z") - 0.001, "2026-01-05T09:00:00Z");
    EXPECT_NEXT("daily 00:00", "UTC", utc("2026-12-31T23:59:59Z"), "2027-01-01T00:00:00Z");
    EXPECT_NEXT("daily 00:00", "UTC", utc("2027-01-01T00:00:00Z"), "2027-01-02T00:00:00Z");
    EXPECT_NEXT("23:59", NULL, utc("2028-02-28T23:59:00Z"), "2028-02-29T23:59:00Z");

    /* Several times a day, given out of order. */
    EXPECT_NEXT("18:00,00:00,12:00,06:00", NULL, utc("2026-01-05T00:00:00Z"), "2026-01-05T06:00:00Z");
    EXPECT_NEXT("18:00,00:00,12:00,06:00", NULL, utc("2026-01-05T06:00:00Z"), "2026-01-05T12:00:00Z");
    EXPECT_NEXT("18:00,00:00,12:00,06:00", NULL, utc("2026-01-05T13:30:00Z"), "2026-01-05T18:00:00Z");
    EXPECT_NEXT("18:00,00:00,12:00,06:00", NULL, utc("2026-01-05T18:00:00Z"), "2026-01-06T00:00:00Z");

    /* Weekday filters across the end of the week. */
    EXPECT_NEXT("mon-fri 09:00", NULL, utc("2026-01-09T08:00:00Z"), "2026-01-09T09:00:00Z"); /* Friday */
    EXPECT_NEXT("mon-fri 09:00", NULL, utc("2026-01-09T09:00:00Z"), "2026-01-12T09:00:00Z"); /* -> Monday */
    EXPECT_NEXT("mon-fri 09:00", NULL, utc("2026-01-10T12:00:00Z"), "2026-01-12T09:00:00Z"); /* Saturday */
    EXPECT_NEXT("sat,sun 10:30,18:00", NULL, utc("2026-01-07T12:00:00Z"), "2026-01-10T10:30:00Z");
    EXPECT_NEXT("sat,sun 10:30,18:00", NULL, utc("2026-01-10T11:00:00Z"), "2026-01-10T18:00:00Z");
    EXPECT_NEXT("sat,sun 10:30,18:00", NULL, utc("2026-01-10T18:00:00Z"), "2026-01-11T10:30:00Z");
    EXPECT_NEXT("sat,sun 10:30,18:00", NULL, utc("2026-01-11T18:00:00Z"), "2026-01-17T10:30:00Z");
    EXPECT_NEXT("fri-mon 23:59", NULL, utc("2026-01-12T23:59:00Z"), "2026-01-16T23:59:00Z");
    EXPECT_NEXT("fri-mon 23:59", NULL, utc("2026-01-16T23:59:00Z"), "2026-01-17T23:59:00Z");
    EXPECT_NEXT("fri-mon 23:59", NULL, utc("2026-01-18T23:59:00Z"), "2026-01-19T23:59:00Z");
    /* A single weekday a whole week ahead, from its own firing instant and
     * from just after it. */
    EXPECT_NEXT("sun 00:00", NULL, utc("2026-01-11T00:00:00Z"), "2026-01-18T00:00:00Z");
    EXPECT_NEXT("wed 12:00", NULL, utc("2026-01-07T12:00:01Z"), "2026-01-14T12:00:00Z");
    EXPECT_NEXT("mon 00:00", NULL, utc("2025-12-29T00:00:00Z"), "2026-01-05T00:00:00Z");

    /* Inputs with no answer. */
    CHECK(sb_schedule_parse("09:00", NULL, &s, NULL, 0) == 0);
    CHECK(isnan(sb_schedule_next(&s, NAN)));
    CHECK(isnan(sb_schedule_next(&s, 1e300)));
    CHECK(isnan(sb_schedule_next(&s, -1e300)));
    CHECK(isnan(sb_schedule_next(NULL, 0)));
    s.days = 0;
    CHECK(isnan(sb_schedule_next(&s, 0)));
}

static void test_next_moscow(void)
{
    /* Moscow keeps UTC+3 all year. */
    EXPECT_NEXT("09:00", "Europe/Moscow", utc("2026-06-01T05:00:00Z"), "2026-06-01T06:00:00Z");
    EXPECT_NEXT("09:00", "Europe/Moscow", utc("2026-06-01T06:00:00Z"), "2026-06-02T06:00:00Z");
    EXPECT_NEXT("09:00", "Europe/Moscow", utc("2026-01-15T07:00:00Z"), "2026-01-16T06:00:00Z");
    /* The weekday is Moscow's: at 21:00Z on Sunday it is already Monday
     * there. */
    EXPECT_NEXT("mon 00:30", "Europe/Moscow", utc("2026-01-11T21:00:00Z"), "2026-01-11T21:30:00Z");
    EXPECT_NEXT("sun 23:00", "Europe/Moscow", utc("2026-01-11T20:00:00Z"), "2026-01-18T20:00:00Z");
    EXPECT_NEXT("mon-fri 00:00,23:30", "Europe/Moscow", utc("2026-01-09T20:30:00Z"), "2026-01-11T21:00:00Z");
}

static void test_next_berlin_dst(void)
{
    /* 2026-03-29: clocks go from 02:00 CET to 03:00 CEST (01:00Z). */
    EXPECT_NEXT("02:30", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
    EXPECT_NEXT("02:00", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
    EXPECT_NEXT("02:59", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
    EXPECT_NEXT("03:00", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
    EXPECT_NEXT("01:59", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T00:59:00Z");
    EXPECT_NEXT("09:00", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T07:00:00Z");
    EXPECT_NEXT("09:00", "Europe/Berlin", utc("2026-03-27T12:00:00Z"), "2026-03-28T08:00:00Z");
    /* After the gap's firing, the next is the next day's 02:30 CEST. */
    EXPECT_NEXT("02:30", "Europe/Berlin", utc("2026-03-29T01:00:00Z"), "2026-03-30T00:30:00Z");
    /* Two times in the gap fire once, at its end. */
    EXPECT_NEXT("02:00,02:30,03:30", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T01:00:00Z");
    EXPECT_NEXT("02:00,02:30,03:30", "Europe/Berlin", utc("2026-03-29T01:00:00Z"), "2026-03-29T01:30:00Z");

    /* 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET (01:00Z), so
     * 02:00-02:59 happen twice; they fire at the first occurrence only. */
    EXPECT_NEXT("02:30", "Europe/Berlin", utc("2026-10-24T12:00:00Z"), "2026-10-25T00:30:00Z");
    EXPECT_NEXT("02:30", "Europe/Berlin", utc("2026-10-25T00:30:00Z"), "2026-10-26T01:30:00Z");
    EXPECT_NEXT("02:30", "Europe/Berlin", utc("2026-10-25T00:45:00Z"), "2026-10-26T01:30:00Z");
    EXPECT_NEXT("02:30", "Europe/Berlin", utc("2026-10-25T01:15:00Z"), "2026-10-26T01:30:00Z");
    EXPECT_NEXT("02:00", "Europe/Berlin", utc("2026-10-24T12:00:00Z"), "2026-10-25T00:00:00Z");
    EXPECT_NEXT("03:00", "Europe/Berlin", utc("2026-10-24T12:00:00Z"), "2026-10-25T02:00:00Z");
    EXPECT_NEXT("01:59", "Europe/Berlin", utc("2026-10-24T12:00:00Z"), "2026-10-24T23:59:00Z");
    EXPECT_NEXT("09:00", "Europe/Berlin", utc("2026-10-24T12:00:00Z"), "2026-10-25T08:00:00Z");
    /* Weekday filter across the change: Friday CEST, then Monday CET. */
    EXPECT_NEXT("mon-fri 09:00", "Europe/Berlin", utc("2026-10-23T07:00:00Z"), "2026-10-26T08:00:00Z");
}

static void test_next_new_york_dst(void)
{
    /* 2026-03-08: 02:00 EST -> 03:00 EDT (07:00Z). */
    EXPECT_NEXT("02:30", "America/New_York", utc("2026-03-07T12:00:00Z"), "2026-03-08T07:00:00Z");
    EXPECT_NEXT("01:59", "America/New_York", utc("2026-03-07T12:00:00Z"), "2026-03-08T06:59:00Z");
    EXPECT_NEXT("03:00", "America/New_York", utc("2026-03-07T12:00:00Z"), "2026-03-08T07:00:00Z");
    EXPECT_NEXT("02:30", "America/New_York", utc("2026-03-08T07:00:00Z"), "2026-03-09T06:30:00Z");
    EXPECT_NEXT("mon-fri 09:00", "America/New_York", utc("2026-03-06T15:00:00Z"), "2026-03-09T13:00:00Z");
    EXPECT_NEXT("sun 12:00", "America/New_York", utc("2026-03-01T17:00:00Z"), "2026-03-08T16:00:00Z");

    /* 2026-11-01: 02:00 EDT -> 01:00 EST (06:00Z); 01:00-01:59 twice. */
    EXPECT_NEXT("01:30", "America/New_York", utc("2026-10-31T12:00:00Z"), "2026-11-01T05:30:00Z");
    EXPECT_NEXT("01:30", "America/New_York", utc("2026-11-01T05:30:00Z"), "2026-11-02T06:30:00Z");
    EXPECT_NEXT("01:30", "America/New_York", utc("2026-11-01T06:10:00Z"), "2026-11-02T06:30:00Z");
    EXPECT_NEXT("sun 01:30", "America/New_York", utc("2026-11-01T05:30:00Z"), "2026-11-08T06:30:00Z");
    EXPECT_NEXT("00:59,01:00,02:00", "America/New_York", utc("2026-11-01T04:00:00Z"), "2026-11-01T04:59:00Z");
    EXPECT_NEXT("00:59,01:00,02:00", "America/New_York", utc("2026-11-01T04:59:00Z"), "2026-11-01T05:00:00Z");
    EXPECT_NEXT("00:59,01:00,02:00", "America/New_York", utc("2026-11-01T05:00:00Z"), "2026-11-01T07:00:00Z");
    EXPECT_NEXT("sat,sun 23:00", "America/New_York", utc("2026-11-01T00:00:00Z"), "2026-11-01T03:00:00Z");
    EXPECT_NEXT("sat,sun 23:00", "America/New_York", utc("2026-11-01T03:00:00Z"), "2026-11-02T04:00:00Z");
}

/* --- an independent oracle ---
 * Walks the zone's clock minute by minute (every zone below changes its
 * offset on whole minutes) and fires where the clock first reaches a listed
 * day and time: where a reading was already passed earlier (the clock set
 * back) it does not fire again, and where the clock jumps over readings it
 * fires at the jump. It shares nothing with resolve() but localtime_r. */

struct oracle_zone {
    char *saved;
};

static void oracle_enter(struct oracle_zone *z, const char *zone)
{
    const char *env = getenv("TZ");
    char value[80];
    z->saved = env ? strdup(env) : NULL;
    snprintf(value, sizeof value, ":%s", zone);
    setenv("TZ", value, 1);
    tzset();
}

static void oracle_leave(struct oracle_zone *z)
{
    if (z->saved)
        setenv("TZ", z->saved, 1);
    else
        unsetenv("TZ");
    tzset();
    free(z->saved);
}

/* The clock's reading at t, as seconds since the epoch read as UTC. */
static long long oracle_wall(time_t t)
{
    struct tm tm;
    localtime_r(&t, &tm);
    return (long long)t + tm.tm_gmtoff;
}

/* Whether a listed (day, time) lies in the readings (lo, hi]. */
static int oracle_crossed(const struct sb_schedule *s, long long lo, long long hi)
{
    long long day;
    int i;
    for (day = lo / 86400 - 1; day <= hi / 86400 + 1; day++) {
        int wd = (int)((day + 3) % 7);
        if (!(s->days & (1 << wd)))
            continue;
        for (i = 0; i < s->ntimes; i++) {
            long long p = day * 86400 + s->minutes[i] * 60;
            if (p > lo && p <= hi)
                return 1;
        }
    }
    return 0;
}

/* Every firing instant in (from, to], in order; returns how many. */
static int oracle_firings(const struct sb_schedule *s, const char *zone, time_t from, time_t to, double *out, int max)
{
    struct oracle_zone oz;
    /* The highest reading so far starts from the 3 hours before `from`,
     * longer than any setting back of the clock in the zones tested. */
    time_t t = from / 60 * 60 - 3 * 3600;
    long long seen;
    int n = 0;
    oracle_enter(&oz, zone);
    seen = oracle_wall(t);
    for (t += 60; t <= to; t += 60) {
        long long w = oracle_wall(t);
        if (w <= seen)
            continue;
        if (t > from && oracle_crossed(s, seen, w) && n < max)
            out[n++] = (double)t;
        seen = w;
    }
    oracle_leave(&oz);
    return n;
}

static double first_after(const double *firings, int n, double after)
{
    int i;
    for (i = 0; i < n; i++)
        if (firings[i] > after)
            return firings[i];
    return NAN;
}

static void check_against_walk(const struct sb_schedule *s, const char *spec, const char *zone, double after,
                               const double *firings, int n, int *failures)
{
    double got = sb_schedule_next(s, after), want = first_after(firings, n, after);
    if (!(got == want) && (*failures)++ < 5) {
        char a[32], g[32], w[32];
        iso(after, a, sizeof a);
        iso(got, g, sizeof g);
        iso(want, w, sizeof w);
        fprintf(stderr, "  next(\"%s\" %s, after %s%s) = %s, clock walk says %s\n", spec, zone, a,
                after != floor(after) ? " + fraction" : "", g, w);
    }
}

static void test_next_matches_clock_walk(void)
{
    /* Whole-hour, half-hour and 45-minute offsets and changes, no
     * changes, and Samoa's skipped day (2011-12-30) besides its DST. */
    static const struct {
        const char *zone;
        int year, changes;
    } zones[] = { { "Europe/Berlin", 2026, 2 },  { "America/New_York", 2026, 2 }, { "Australia/Lord_Howe", 2026, 2 },
                  { "Pacific/Chatham", 2026, 2 }, { "Asia/Kathmandu", 2026, 0 },   { "Europe/Moscow", 2026, 0 },
                  { "Pacific/Apia", 2011, 3 } };
    static const char *const specs[] = { "00:00,01:15,01:30,01:45,02:00,02:15,02:30,02:45,03:00,03:30,03:45",
                                         "sun 02:30", "sat,mon 01:59,23:45", "mon-fri 02:45" };
    double firings[256];
    size_t z, k;
    int checked = 0, failures = 0;
    for (z = 0; z < sizeof zones / sizeof *zones; z++) {
        struct oracle_zone oz;
        time_t changes[8], t;
        long prev;
        int nchanges = 0, c;
        /* The zone's offset changes in that year, found hour by hour; the
         * middle of the year stands in for the zones that have none. */
        char start[32], end[32], middle[32];
        snprintf(start, sizeof start, "%d-01-01T00:00:00Z", zones[z].year);
        snprintf(end, sizeof end, "%d-01-01T00:00:00Z", zones[z].year + 1);
        snprintf(middle, sizeof middle, "%d-06-15T00:00:00Z", zones[z].year);
        oracle_enter(&oz, zones[z].zone);
        t = (time_t)utc(start);
        prev = (long)(oracle_wall(t) - (long long)t);
        for (; t < (time_t)utc(end); t += 3600) {
            long off = (long)(oracle_wall(t) - (long long)t);
            if (off != prev && nchanges < 8)
                changes[nchanges++] = t;
            prev = off;
        }
        oracle_leave(&oz);
        CHECK(nchanges == zones[z].changes);
        if (nchanges == 0)
            changes[nchanges++] = (time_t)utc(middle);

        for (c = 0; c < nchanges; c++) {
            /* `after` runs from a day and a half before the change to a
             * day and a half after; the walk goes 9 days further. */
            time_t from = changes[c] - 36 * 3600, to = changes[c] + 36 * 3600;
            for (k = 0; k < sizeof specs / sizeof *specs; k++) {
                struct sb_schedule s;
                double after;
                int n, i;
                CHECK(sb_schedule_parse(specs[k], zones[z].zone, &s, NULL, 0) == 0);
                n = oracle_firings(&s, zones[z].zone, from, to + 9 * 86400, firings, 256);
                CHECK(n > 0 && n < 256);
                /* On and off the minute, and at, just before and just after
                 * each firing instant. */
                for (after = (double)from; after < (double)to; after += 37 * 60 + 0.5) {
                    check_against_walk(&s, specs[k], zones[z].zone, after, firings, n, &failures);
                    checked++;
                }
                for (i = 0; i < n && firings[i] < (double)to; i++) {
                    check_against_walk(&s, specs[k], zones[z].zone, firings[i], firings, n, &failures);
                    check_against_walk(&s, specs[k], zones[z].zone, firings[i] - 0.5, firings, n, &failures);
                    check_against_walk(&s, specs[k], zones[z].zone, firings[i] + 0.5, firings, n, &failures);
                    checked += 3;
                }
            }
        }
    }
    CHECK(failures == 0);
    CHECK(checked > 2000);
}

/* Hours of the process's local time at the epoch, to see which zone it is
 * in. */
static int local_hour_at_epoch(void)
{
    time_t t = 0;
    struct tm tm;
    localtime_r(&t, &tm);
    return tm.tm_hour;
}

static void test_tz_restored(void)
{
    const char *env = getenv("TZ");
    char *saved = env ? strdup(env) : NULL;
    struct sb_schedule s;
    struct tm before, after;
    time_t t = 1790000000;

    CHECK(sb_schedule_parse("mon-fri 09:00", "Europe/Berlin", &s, NULL, 0) == 0);

    setenv("TZ", "Asia/Tokyo", 1);
    tzset();
    CHECK(local_hour_at_epoch() == 9);
    EXPECT_NEXT("09:00", "Europe/Berlin", utc("2026-03-28T12:00:00Z"), "2026-03-29T07:00:00Z");
    CHECK(!isnan(sb_schedule_next(&s, utc("2026-01-05T00:00:00Z"))));
    CHECK_STR(getenv("TZ"), "Asia/Tokyo");
    CHECK(local_hour_at_epoch() == 9);
    CHECK(timezone == -9 * 3600);

    unsetenv("TZ");
    tzset();
    localtime_r(&t, &before);
    CHECK(!isnan(sb_schedule_next(&s, utc("2026-01-05T00:00:00Z"))));
    CHECK(getenv("TZ") == NULL);
    localtime_r(&t, &after);
    CHECK(before.tm_hour == after.tm_hour && before.tm_gmtoff == after.tm_gmtoff);

    /* A UTC schedule leaves TZ alone altogether. */
    setenv("TZ", "America/New_York", 1);
    tzset();
    EXPECT_NEXT("09:00", NULL, utc("2026-01-05T08:00:00Z"), "2026-01-05T09:00:00Z");
    CHECK_STR(getenv("TZ"), "America/New_York");
    CHECK(local_hour_at_epoch() == 19);

    if (saved)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
    free(saved);
}

#define EXPECT_LOCAL(t, tz, y, mo, d, h, mi, se, wd)                                                      \
    do {                                                                                                 \
        struct sb_local_time lt_;                                                                        \
        char err_[200];                                                                                  \
        int rc_ = sb_schedule_local_time((t), (tz), &lt_, err_, sizeof err_);                           \
        CHECK(rc_ == 0);                                                                                 \
        if (rc_ == 0 && (lt_.year != (y) || lt_.month != (mo) || lt_.day != (d) || lt_.hour != (h) ||    \
                         lt_.min != (mi) || lt_.sec != (se) || lt_.wday != (wd))) {                      \
            fprintf(stderr, "  %s:%d: got %04d-%02d-%02d %02d:%02d:%02d wday %d\n", __FILE__, __LINE__, \
                    lt_.year, lt_.month, lt_.day, lt_.hour, lt_.min, lt_.sec, lt_.wday);                 \
            harness_current_failed = 1;                                                                  \
        }                                                                                                \
    } while (0)

static void test_local_time(void)
{
    const char *env = getenv("TZ");
    char *saved = env ? strdup(env) : NULL;
    struct sb_local_time lt;
    char err[200];

    /* Europe/Berlin, spring forward: 01:59:59 CET, then 03:00:00 CEST (a Sunday) */
    EXPECT_LOCAL(utc("2026-03-29T00:59:59Z"), "Europe/Berlin", 2026, 3, 29, 1, 59, 59, 7);
    EXPECT_LOCAL(utc("2026-03-29T01:00:00Z"), "Europe/Berlin", 2026, 3, 29, 3, 0, 0, 7);
    /* fall back: 02:30 comes twice, CEST then CET */
    EXPECT_LOCAL(utc("2026-10-25T00:30:00Z"), "Europe/Berlin", 2026, 10, 25, 2, 30, 0, 7);
    EXPECT_LOCAL(utc("2026-10-25T01:30:00Z"), "Europe/Berlin", 2026, 10, 25, 2, 30, 0, 7);
    /* across midnight and the week: Monday in Tokyo, still Sunday in UTC */
    EXPECT_LOCAL(utc("2026-01-04T20:00:00Z"), "Asia/Tokyo", 2026, 1, 5, 5, 0, 0, 1);
    EXPECT_LOCAL(utc("2026-01-04T20:00:00Z"), NULL, 2026, 1, 4, 20, 0, 0, 7);
    EXPECT_LOCAL(utc("2026-01-04T20:00:00Z"), "UTC", 2026, 1, 4, 20, 0, 0, 7);
    /* the fraction is dropped, also before 1970 */
    EXPECT_LOCAL(utc("2026-01-05T00:00:00Z") + 0.999, "", 2026, 1, 5, 0, 0, 0, 1);
    EXPECT_LOCAL(-0.5, NULL, 1969, 12, 31, 23, 59, 59, 3);

    CHECK(sb_schedule_local_time(0, "Europe/Berlim", &lt, err, sizeof err) == 2);
    CHECK(strstr(err, "unknown time zone \"Europe/Berlim\"") != NULL);
    CHECK(sb_schedule_local_time(0, "../etc/passwd", &lt, err, sizeof err) == 2);
    CHECK(strstr(err, "../etc/passwd") != NULL);
    CHECK(sb_schedule_local_time(NAN, NULL, &lt, err, sizeof err) == 1);
    CHECK(sb_schedule_local_time(1e15, "Europe/Berlin", &lt, err, sizeof err) == 1);
    CHECK(strstr(err, "out of range") != NULL);

    /* the process's own zone is the same afterwards */
    setenv("TZ", "Asia/Tokyo", 1);
    tzset();
    EXPECT_LOCAL(utc("2026-03-29T01:00:00Z"), "Europe/Berlin", 2026, 3, 29, 3, 0, 0, 7);
    CHECK_STR(getenv("TZ"), "Asia/Tokyo");
    CHECK(local_hour_at_epoch() == 9);

    /* pinned, TZ names the file glibc reads without it (the same local
     * time), and a zone switch puts that value back */
    unsetenv("TZ");
    tzset();
    {
        int hour = local_hour_at_epoch();
        sb_schedule_pin_tz();
        CHECK_STR(getenv("TZ"), ":/etc/localtime");
        tzset();
        CHECK(local_hour_at_epoch() == hour);
    }
    EXPECT_LOCAL(utc("2026-03-29T01:00:00Z"), "Europe/Berlin", 2026, 3, 29, 3, 0, 0, 7);
    CHECK_STR(getenv("TZ"), ":/etc/localtime");
    setenv("TZ", "Asia/Tokyo", 1);
    sb_schedule_pin_tz();   /* a TZ that is set stays as it is */
    CHECK_STR(getenv("TZ"), "Asia/Tokyo");

    if (saved)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
    free(saved);
}

const struct test_case schedule_tests[] = {
    { "schedule: valid specs and canonical text", test_parse_valid },
    { "schedule: each invalid spec names what is wrong", test_parse_errors },
    { "schedule: time zone names are checked against the zone files", test_parse_zones },
    { "schedule: canonical text truncates and parses back", test_format },
    { "schedule: next firing in UTC, weekdays, several times, strictly after", test_next_utc },
    { "schedule: next firing in Europe/Moscow", test_next_moscow },
    { "schedule: Europe/Berlin across both 2026 DST changes", test_next_berlin_dst },
    { "schedule: America/New_York across both 2026 DST changes", test_next_new_york_dst },
    { "schedule: next firing agrees with a minute-by-minute walk of the zone's clock", test_next_matches_clock_walk },
    { "schedule: the process's TZ is the same afterwards", test_tz_restored },
    { "schedule: local time in a zone, across Europe/Berlin's DST changes; TZ pinned", test_local_time },
    { NULL, NULL },
};
