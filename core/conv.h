/* Conversations: the C-owned model. Every conversation is in memory (its
 * fields, and the last few messages while it is open) and in the store;
 * every change is written to the store and journaled as an event. */
#ifndef SB_CONV_H
#define SB_CONV_H

#include <stddef.h>
#include <stdint.h>

enum sb_conv_state { SB_CONV_BOT, SB_CONV_QUEUED, SB_CONV_AGENT, SB_CONV_CLOSED, SB_CONV_STATE_COUNT };

#define SB_ID_LEN 20  /* hex characters of a generated id */

struct sb_msg {
    char id[SB_ID_LEN + 1];
    int64_t seq;
    char *author_kind;
    char *author_name;
    char *author_id;
    char *text;
    char *attachments;   /* JSON array */
    char *buttons;       /* JSON array */
    char *provider_ids;  /* JSON object */
    double created;
};

struct sb_conv {
    char id[SB_ID_LEN + 1];
    char *channel;
    char *client_id;
    enum sb_conv_state state;
    char *desk, *group, *agent;   /* NULL when unset */
    char *status;
    char *tags;                   /* JSON array */
    char *profile;                /* JSON object */
    char *data;                   /* JSON object: scripts' own per-conversation data */
    int64_t last_seq;
    double created, updated;
    struct sb_msg **recent;       /* ring of the last messages, oldest first from recent_start */
    int nrecent, recent_start;
    int dirty;                    /* its row is written at the next batch flush */
    int handles;                  /* Lua handles pointing here (see bind_conv.c) */
    struct sb_conv *next_dirty;
};

/* Fields of a new message; JSON fields may be NULL for empty. */
struct sb_msg_fields {
    const char *id;               /* NULL: generated */
    const char *author_kind;      /* client | bot | agent | system */
    const char *author_name, *author_id;
    const char *text;
    size_t text_len;
    const char *attachments, *buttons, *provider_ids;
};

struct sb_conv_settings {
    int recent_messages;
    double dedupe_window;
};

void sb_conv_configure(const struct sb_conv_settings *s);
/* Loads every conversation and the recent messages of open ones. */
int sb_conv_load(void);
void sb_conv_free_all(void);
size_t sb_conv_count(void);
size_t sb_conv_open_count(void);

const char *sb_conv_state_name(enum sb_conv_state s);
int sb_conv_parse_state(const char *name, enum sb_conv_state *out);
int sb_conv_transition_allowed(enum sb_conv_state from, enum sb_conv_state to);

struct sb_conv *sb_conv_get(const char *id);
struct sb_conv *sb_conv_find(const char *channel, const char *client_id);
/* Creates and persists a conversation in state bot. profile is JSON or NULL. */
struct sb_conv *sb_conv_create(const char *channel, const char *client_id, const char *profile);

/* Marks the row for writing; changes to a conversation are coalesced into
 * one row per store batch. Returns the batch the row will join. */
uint64_t sb_conv_persist(struct sb_conv *c);
uint64_t sb_conv_journal(struct sb_conv *c, const char *type, const char *data_json);
/* Appends a message; returns it (owned by the conversation's ring, valid
 * until the next append) or NULL with a reason in err. */
const struct sb_msg *sb_conv_append(struct sb_conv *c, const struct sb_msg_fields *f, char *err, size_t err_size);
/* Replaces a message's provider ids (store, and the ring if it is there). */
void sb_conv_set_provider_ids(struct sb_conv *c, const char *message_id, const char *json);
/* Changes state with a journaled reason; -1 if the transition is not allowed. */
int sb_conv_set_state(struct sb_conv *c, enum sb_conv_state to, const char *reason);
/* Sets a string field ("desk", "group", "agent", "status") or a JSON one
 * ("tags", "client", "data"); journals all but "data". */
int sb_conv_set_field(struct sb_conv *c, const char *field, const char *value);
/* The i-th most recent message in memory (0 = newest), or NULL. */
const struct sb_msg *sb_conv_recent(const struct sb_conv *c, int i);
/* A message in memory by id, or NULL. */
const struct sb_msg *sb_conv_recent_by_id(const struct sb_conv *c, const char *id);

/* Per-channel idempotency keys for inbound messages. */
int sb_conv_seen(const char *channel, const char *key, const char **conversation_id, const char **message_id);
void sb_conv_remember(const char *channel, const char *key, const char *conversation_id, const char *message_id);
void sb_conv_prune_seen(void);

/* Random lower-case hex id of SB_ID_LEN characters. */
void sb_new_id(char out[SB_ID_LEN + 1]);
int sb_utf8_valid(const char *s, size_t len);

#endif
