/* Small helpers shared by every core module: time, strings, secrets, files. */
#ifndef SB_UTIL_H
#define SB_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#define SB_VERSION "0.1.0"

struct evbuffer;

/* An error that points at a script: every reload/config failure is reported
 * with the file and line it comes from (line 0 when unknown). */
struct sb_error {
    char file[256];
    int line;
    char message[512];
};

void sb_error_set(struct sb_error *err, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Fill err from a Lua message of the form "file:line: text"; falls back to
 * default_file when the message carries no position. */
void sb_error_from_lua(struct sb_error *err, const char *lua_message, const char *default_file);

double sb_now_wall(void);   /* seconds since the epoch */
double sb_now_mono(void);   /* seconds on the monotonic clock */
/* A delay in seconds as libevent takes it. */
struct timeval sb_timeval(double seconds);

void *sb_xmalloc(size_t n);           /* aborts on out-of-memory: callers never see NULL */
void *sb_xcalloc(size_t n, size_t m);
void *sb_xrealloc(void *p, size_t n);
char *sb_xstrdup(const char *s);
char *sb_xstrdup_or_null(const char *s);  /* NULL stays NULL */

/* Compares two secrets in time that depends only on the length of the
 * expected one, so a wrong token cannot be guessed byte by byte. */
int sb_secret_equal(const char *given, size_t given_len, const char *expected, size_t expected_len);

/* Appends s as a quoted JSON string. */
void sb_json_quote(struct evbuffer *out, const char *s, size_t len);

/* Reads a whole file of at most max bytes into a NUL-terminated buffer the
 * caller frees. Returns 0, or -1 with a message in err. */
int sb_read_file(const char *path, size_t max, char **out, size_t *out_len, char *err, size_t err_size);

const char *sb_http_reason(int status);

#endif
