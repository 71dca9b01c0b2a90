/* Conversations: the C-owned model. The store holds every conversation;
 * memory holds the ones in use (loaded on demand, dropped again when idle
 * or closed), each with its idempotency keys and a window of its recent
 * messages.
 *
 * Every change belongs to a transaction (txn.h) that owns the
 * conversation: a conversation is owned by at most one live transaction,
 * from the moment a job gets hold of it until the job ends, so changes of
 * two jobs never interleave and a failed job's changes can be put back
 * exactly. Another transaction wanting it waits in line (FIFO: the owner
 * hands it over when it ends). */
#ifndef SB_CONV_H
#define SB_CONV_H

#include <stddef.h>
#include <stdint.h>

struct sb_txn;
struct store_rows;

enum sb_conv_state { SB_CONV_BOT, SB_CONV_QUEUED, SB_CONV_AGENT, SB_CONV_CLOSED, SB_CONV_STATE_COUNT };

#define SB_ID_LEN 20  /* hex characters of a generated id */

struct sb_msg {
    char id[SB_ID_LEN + 1];
    int64_t seq;
    const char *author_kind;    /* static */
    char *author_name, *author_id;
    char *text;
    size_t text_len;
    char *attachments;          /* JSON array */
    char *buttons;              /* JSON array */
    char *provider_ids;         /* JSON object */
    double created;
};

struct sb_conv_waiter;

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
    /* the last nrecent messages, oldest first: seqs last_seq-nrecent+1 .. last_seq */
    struct sb_msg **recent;
    int nrecent, recent_cap;
    void *keys;                   /* tsearch tree of idempotency keys */
    struct sb_txn *owner;         /* the live transaction that holds it */
    struct sb_conv_waiter *waiters, *waiters_tail;
    int refs;                     /* handles, the owner and waiters keep it in memory */
    int mutated;                  /* changed by the owner: its row is written when the owner ends */
    int dirty;                    /* its row is written at the next batch flush */
    int gone;                     /* no longer in memory's indexes (creation undone or dropped) */
    uint64_t write_seq;           /* batch of the last transaction that changed it */
    double last_used;
    struct sb_conv *dirty_prev, *dirty_next;
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
    int recent_messages;          /* messages kept in memory per conversation */
    double dedupe_window;         /* seconds an idempotency key is remembered */
    double idle_unload;           /* seconds an unused conversation stays in memory */
};

void sb_conv_configure(const struct sb_conv_settings *s);
/* Counts what the store holds and installs the flush hook (start-up). */
int sb_conv_start(void);
void sb_conv_free_all(void);
size_t sb_conv_count(void);         /* all conversations, stored or in memory */
size_t sb_conv_open_count(void);    /* those not closed */
size_t sb_conv_loaded_count(void);  /* those in memory */

const char *sb_conv_state_name(enum sb_conv_state s);
int sb_conv_parse_state(const char *name, enum sb_conv_state *out);
int sb_conv_transition_allowed(enum sb_conv_state from, enum sb_conv_state to);

/* Lookups in memory only (NULL: not loaded, or unknown). */
struct sb_conv *sb_conv_loaded(const char *id);
struct sb_conv *sb_conv_loaded_by_client(const char *channel, const char *client_id);

/* Loads a conversation from the store (by id when client_id is NULL, else
 * by channel and client id); fn gets it (in memory from then on), or NULL
 * when the store has none, or NULL and an error. A conversation that came
 * into memory meanwhile is the one returned. */
typedef void (*sb_conv_load_fn)(void *arg, struct sb_conv *c, const char *error);
void sb_conv_load(const char *id, const char *channel, const char *client_id, sb_conv_load_fn fn, void *arg);

/* Keeping a conversation in memory while something refers to it. */
void sb_conv_ref(struct sb_conv *c);
void sb_conv_unref(struct sb_conv *c);

/* Ownership. */
enum sb_conv_acquire { SB_CONV_ACQUIRED, SB_CONV_BUSY, SB_CONV_DEADLOCK };
enum sb_conv_acquire sb_conv_acquire(struct sb_conv *c, struct sb_txn *t);
struct sb_conv_waiter {
    struct sb_txn *txn;
    void (*wake)(struct sb_conv_waiter *w);   /* the conversation is now w->txn's */
    struct sb_conv_waiter *next;
};
/* Queues w->txn behind the owner (taking a reference on c); w->wake runs
 * once the conversation was handed over (w->txn owns it then), or, if it
 * is gone meanwhile (c->gone), without it. The woken side drops the
 * reference with sb_conv_unref; cancelling drops it too. */
void sb_conv_wait(struct sb_conv *c, struct sb_conv_waiter *w);
void sb_conv_cancel_wait(struct sb_conv *c, struct sb_conv_waiter *w);

/* Changes: t must own c. Each returns 0, or -1 with a reason in err. */
/* Creates a conversation in state bot, owned by t. profile is JSON or NULL. */
struct sb_conv *sb_conv_create(struct sb_txn *t, const char *channel, const char *client_id, const char *profile);
/* Appends a message; returns it (valid while t owns c) or NULL. */
const struct sb_msg *sb_conv_append(struct sb_txn *t, struct sb_conv *c, const struct sb_msg_fields *f, char *err,
                                    size_t err_size);
int sb_conv_set_state(struct sb_txn *t, struct sb_conv *c, enum sb_conv_state to, const char *reason);
/* Sets a string field ("desk", "group", "agent", "status") or a JSON one
 * ("tags", "client", "data"); journals all but "data". -1 for an unknown field. */
int sb_conv_set_field(struct sb_txn *t, struct sb_conv *c, const char *field, const char *value);
void sb_conv_journal(struct sb_txn *t, struct sb_conv *c, const char *type, const char *data_json);
void sb_conv_set_provider_ids(struct sb_txn *t, struct sb_conv *c, const char *message_id, const char *json);
/* Idempotency keys, per conversation: the message a key stands for (NULL if
 * unseen or older than the dedupe window), and remembering one. */
const char *sb_conv_seen(const struct sb_conv *c, const char *key);
void sb_conv_remember(struct sb_txn *t, struct sb_conv *c, const char *key, const char *message_id);

/* The i-th most recent message in memory (0 = newest), or NULL. */
const struct sb_msg *sb_conv_recent(const struct sb_conv *c, int i);
const struct sb_msg *sb_conv_recent_by_id(const struct sb_conv *c, const char *id);
/* Makes the last n messages available in memory (fetching older ones from
 * the store); fn(arg, error) once they are. */
typedef void (*sb_conv_messages_fn)(void *arg, const char *error);
void sb_conv_want_messages(struct sb_conv *c, int n, sb_conv_messages_fn fn, void *arg);

/* Drops idle conversations from memory and expired keys (periodic).
 * Returns how many could have gone but for script handles still alive
 * (a garbage collection of the runtimes lets them go). */
size_t sb_conv_sweep(void);

/* Random lower-case hex id of SB_ID_LEN characters, time-ordered. */
void sb_new_id(char out[SB_ID_LEN + 1]);
int sb_utf8_valid(const char *s, size_t len);

#endif
