/* Runtime-independent key/value state with optional TTL. Values are kept
 * as JSON so any runtime (old or new, after a reload) can read them. */
#ifndef SB_KVSTATE_H
#define SB_KVSTATE_H

#include <stddef.h>

/* ttl <= 0: no expiry. The value is copied. */
void sb_kv_set(const char *key, const char *json, size_t json_len, double ttl);
/* Returns the JSON or NULL if absent/expired; valid until the next change. */
const char *sb_kv_get(const char *key, size_t *len);
int sb_kv_delete(const char *key);
/* Drops expired entries; returns how many. */
size_t sb_kv_sweep(void);
size_t sb_kv_count(void);
void sb_kv_free_all(void);
/* Loads what the store holds (start-up, before the store thread runs). */
int sb_kv_load(void);

#endif
