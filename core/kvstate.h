/* Key/value state with optional TTL, independent of any runtime. Values
 * are kept as JSON so any runtime (old or new, after a reload) can read
 * them. A job's changes are kept aside in its transaction (the job reads
 * its own changes) and applied when it ends; a failed job changes nothing. */
#ifndef SB_KVSTATE_H
#define SB_KVSTATE_H

#include <stddef.h>

struct sb_txn;

/* ttl <= 0: no expiry. The value is copied. */
void sb_kv_set(struct sb_txn *t, const char *key, const char *json, size_t json_len, double ttl);
/* The JSON as t sees it (t may be NULL), or NULL if absent or expired;
 * valid until the next change. */
const char *sb_kv_get(struct sb_txn *t, const char *key, size_t *len);
/* Returns 1 if the key existed (as t sees it). */
int sb_kv_delete(struct sb_txn *t, const char *key);
/* Drops expired entries; returns how many. */
size_t sb_kv_sweep(void);
size_t sb_kv_count(void);
void sb_kv_free_all(void);
/* Loads what the store holds (start-up, before the store thread runs). */
int sb_kv_load(void);

#endif
