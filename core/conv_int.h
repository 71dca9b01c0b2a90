/* Inside the conversation model: what conv.c (indexes, ownership, rows),
 * conv_change.c (changes and how each is put back) and conv_memory.c
 * (loading on demand, unloading) share. Not for other modules: they use
 * conv.h. */
#ifndef SB_CONV_INT_H
#define SB_CONV_INT_H

#include <stddef.h>
#include <stdint.h>

#include "conv.h"

struct sb_txn;

/* An idempotency key remembered by a conversation. */
struct seen_key {
    char *key;
    char message_id[SB_ID_LEN + 1];
    double created;
};

extern void *cv_by_id;                      /* tsearch: struct sb_conv * by id */
extern size_t cv_nall, cv_nopen, cv_nloaded;
extern struct sb_conv_settings cv_settings;
extern const char *const cv_state_names[SB_CONV_STATE_COUNT];
extern const char *const cv_author_kinds[5];
extern const unsigned char cv_allowed[SB_CONV_STATE_COUNT][SB_CONV_STATE_COUNT];

/* The empty JSON values most fields hold are shared, not copied. */
extern const char cv_empty_array[], cv_empty_object[];
char *cv_json_dup(const char *s, const char *empty);
void cv_json_free(char *s);
/* The static name of an author kind, or NULL when it is not one. */
const char *cv_author_kind(const char *s);
int cv_cmp_key(const void *a, const void *b);
void cv_msg_free(struct sb_msg *m);
void cv_seen_free(void *p);
/* Into and out of memory's indexes (the struct goes with its last reference). */
void cv_index(struct sb_conv *c);
void cv_unindex(struct sb_conv *c);
/* Its row is written at the next batch flush. */
void cv_mark_dirty(struct sb_conv *c);
/* t owns c from now on (c must be free). */
void cv_take(struct sb_conv *c, struct sb_txn *t);
/* Keys in memory: lookup, and putting one (returns the expired entry it replaced). */
struct seen_key *cv_key_find(const struct sb_conv *c, const char *key);
struct seen_key *cv_key_put(struct sb_conv *c, const char *key, const char *message_id, double created);

/* Frees what the changes keep between calls (exit). */
void cv_change_free(void);

#endif
