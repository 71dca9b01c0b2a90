/* Calendar schedules for timers: "every weekday at 09:00 in Europe/Berlin".
 * Pure functions: no Lua, no libevent, no allocation that outlives a call.
 *
 * Spec grammar (whitespace separates the two fields; none inside a list):
 *
 *   spec  = [ days SP ] times
 *   days  = "daily" | "*" | item { "," item }      default: every day
 *   item  = day | day "-" day                      a range may wrap: fri-mon
 *   day   = "mon" | "tue" | "wed" | "thu" | "fri" | "sat" | "sun"
 *   times = hhmm { "," hhmm }                      at most SB_SCHEDULE_MAX_TIMES
 *   hhmm  = two digits ":" two digits              00:00 .. 23:59
 *
 * Day names and "daily" are case-insensitive. Repeated days or times count
 * once, and times may be given in any order, so "10:30,09:00,09:00" equals
 * "09:00,10:30". A range names two different days ("mon-mon" is refused:
 * a single day is written "mon").
 * Examples: "09:00", "mon-fri 09:00", "sat,sun 10:30,18:00", "daily 00:00",
 * "mon-wed,fri 08:15".
 *
 * The time zone is a separate argument, an IANA name such as
 * "Europe/Moscow". NULL, "" and "UTC" mean UTC and need no zone file; any
 * other name must consist of letters, digits and _ + - / (so no "." and no
 * ".." component), must not start with '/', end with '/' or contain "//",
 * and must name a TZif file under $TZDIR (when set and not empty) or
 * /usr/share/zoneinfo. glibc reads an unknown name as UTC without a word,
 * which is why the name is checked here.
 *
 * Firing times: sb_schedule_next returns the first firing instant strictly
 * after `after`. Each listed local time fires on each listed day of the
 * zone's calendar. Where daylight saving time skips a local time (the
 * spring-forward gap), it fires at the first instant after the gap on that
 * day (02:30 in Europe/Berlin on 2026-03-29 fires at 03:00 CEST); where it
 * repeats a local time (fall-back), it fires once, at the first occurrence.
 * In every case this is the first instant at which the zone's clock reads
 * that day and time or later; so the times of a day a zone skips whole
 * (Pacific/Apia, 2011-12-30) fire once, when its clock jumps. */
#ifndef SB_SCHEDULE_H
#define SB_SCHEDULE_H

#include <stddef.h>

#define SB_SCHEDULE_MAX_TIMES 24
/* Enough for the longest canonical text: days, 24 times, a 63-byte zone. */
#define SB_SCHEDULE_FORMAT_MAX 256

struct sb_schedule {
    unsigned char days; /* bit 0 = Monday ... bit 6 = Sunday */
    int ntimes;
    short minutes[SB_SCHEDULE_MAX_TIMES]; /* sorted minutes after midnight */
    char tz[64];                          /* "UTC" when none was given */
};

/* Returns 0, or -1 with a message naming what is wrong in err (err may be
 * NULL). *out is fully written on success, so two parses of equal specs
 * compare equal byte for byte. */
int sb_schedule_parse(const char *spec, const char *tz, struct sb_schedule *out, char *err,
                      size_t err_size);

/* The first firing instant strictly after `after` (both in seconds since
 * the epoch). Looks at most 8 days ahead, which every parsed schedule
 * fires within. Returns NAN for a schedule that never fires (days or times
 * empty), for an `after` that is not a number or lies outside the years
 * 1900..9999, or when nothing fires in that window. Changes the TZ
 * environment variable while it runs and restores it (set or unset) and
 * glibc's zone state before it returns: not for use from several threads. */
double sb_schedule_next(const struct sb_schedule *s, double after);

/* A zone's clock reading. */
struct sb_local_time {
    int year, month, day;   /* month 1-12, day 1-31 */
    int hour, min, sec;
    int wday;               /* 1 = Monday ... 7 = Sunday */
};

/* The reading of zone tz's clock at t (seconds since the epoch; the
 * fraction is dropped). tz as for sb_schedule_parse (NULL, "" and "UTC":
 * UTC). Returns 0, or the argument that is wrong, 1 for a t that is not a
 * number or lies outside the years 1900..9999, 2 for the zone, with a
 * message naming it in err. Switches TZ as sb_schedule_next does. */
int sb_schedule_local_time(double t, const char *tz, struct sb_local_time *out, char *err, size_t err_size);

/* Call once at start, before any thread. The zone switches above set TZ
 * and put it back; glibc's setenv and unsetenv of a variable the
 * environment lacks move its array, which SQLite's store thread and
 * libcurl's resolver threads may be reading with getenv. Setting TZ now
 * (to ":/etc/localtime", what glibc reads when TZ is unset, if it is
 * unset) makes every later switch a replacement of the value only. */
void sb_schedule_pin_tz(void);

/* Canonical text ("mon-fri 09:00 Europe/Berlin", "daily 00:00,12:00 UTC"),
 * equal for equal schedules: used as a key to keep a schedule's phase
 * across reloads and restarts. A set of days that is one run of three or
 * more (wrapping allowed) is written as a range, any other as a list from
 * Monday on, every day as "daily"; the zone always appears. Truncated to
 * fit size (always NUL-terminated when size > 0). */
void sb_schedule_format(const struct sb_schedule *s, char *buf, size_t size);

#endif
