/* Structured logs: one logfmt line per event on stderr.
 *   ts=2026-11-21T23:59:00.123Z level=info msg=listening addr=127.0.0.1:8080
 */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stddef.h>

enum sb_log_level { SB_LOG_DEBUG, SB_LOG_INFO, SB_LOG_WARN, SB_LOG_ERROR };

void sb_log_set_level(enum sb_log_level level);
int sb_log_enabled(enum sb_log_level level);
/* Returns 0 and sets *out for "debug", "info", "warn", "error"; -1 otherwise. */
int sb_log_parse_level(const char *name, enum sb_log_level *out);
const char *sb_log_level_name(enum sb_log_level level);

/* Fields follow msg as key, value string pairs ending with NULL. A NULL value
 * ends the list too, so optional fields go last. */
void sb_log(enum sb_log_level level, const char *msg, ...) __attribute__((sentinel));
/* Same, with n pairs given as arrays (keys[i], values[i], value_lens[i]). */
void sb_log_pairs(enum sb_log_level level, const char *msg, size_t n,
                  const char *const *keys, const char *const *values, const size_t *value_lens);

/* Formats one logfmt value into buf (quoted when needed); used by tests. */
size_t sb_log_format_value(char *buf, size_t size, const char *value, size_t len);

#endif
