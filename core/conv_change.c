/* Changes to conversations, each with an effect of its transaction that
 * puts it back if the transaction fails, and the journal events they write. */
#include "conv_int.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "store.h"
#include "txn.h"
#include "util.h"

/* Changes and how each is put back */

static void event_op(struct sb_txn *t, struct sb_conv *c, const char *type, const char *data)
{
    sb_txn_write(t, store_insert_event(c->id, type, data, sb_now_wall(), sb_txn_event_depth(t)));
}

static void changed(struct sb_txn *t, struct sb_conv *c)
{
    c->mutated = 1;
    c->updated = sb_now_wall();
    sb_txn_touch(t);
}

/* Event data is written straight into a scratch buffer:
 *   ev_begin(); ev_str("from", a); ev_open("author"); ...; ev_close(); data = ev_end();
 * Strings are quoted, NULL becomes null, ev_raw takes JSON as it is. */
#define EV_DEPTH 4
static struct evbuffer *scratch;
static int ev_depth, ev_fields[EV_DEPTH];

static void ev_key(const char *key)
{
    if (ev_fields[ev_depth]++)
        evbuffer_add(scratch, ",", 1);
    sb_json_quote(scratch, key, strlen(key));
    evbuffer_add(scratch, ":", 1);
}

static void ev_begin(void)
{
    if (!scratch)
        scratch = evbuffer_new();
    ev_depth = 0;
    ev_fields[0] = 0;
    evbuffer_add(scratch, "{", 1);
}

static void ev_open(const char *key)
{
    ev_key(key);
    ev_fields[++ev_depth] = 0;
    evbuffer_add(scratch, "{", 1);
}

static void ev_close(void)
{
    evbuffer_add(scratch, "}", 1);
    ev_depth--;
}

static void ev_str(const char *key, const char *value)
{
    ev_key(key);
    if (value)
        sb_json_quote(scratch, value, strlen(value));
    else
        evbuffer_add(scratch, "null", 4);
}

static void ev_raw(const char *key, const char *json)
{
    ev_key(key);
    if (!json)
        json = "null";
    evbuffer_add(scratch, json, strlen(json));
}

/* Journals the event built since ev_begin. */
static void ev_journal(struct sb_txn *t, struct sb_conv *c, const char *type)
{
    size_t len;
    char *data;
    evbuffer_add(scratch, "}", 1);
    len = evbuffer_get_length(scratch);
    data = sb_xmalloc(len + 1);
    evbuffer_remove(scratch, data, len);
    data[len] = '\0';
    event_op(t, c, type, data);
    free(data);
}

/* Creation */

static void created_undo(void *data)
{
    struct sb_conv *c = data;
    cv_nall--;
    if (c->state != SB_CONV_CLOSED)
        cv_nopen--;
    cv_unindex(c);
    sb_conv_unref(c);
}

static void created_commit(void *data) { sb_conv_unref(data); }

static const struct sb_txn_effect_ops created_ops = { NULL, created_undo, created_undo, created_commit };

struct sb_conv *sb_conv_create(struct sb_txn *t, const char *channel, const char *client_id, const char *profile)
{
    struct sb_conv *c = sb_xcalloc(1, sizeof *c);
    sb_new_id(c->id);
    c->channel = sb_xstrdup(channel);
    c->client_id = sb_xstrdup(client_id);
    c->state = SB_CONV_BOT;
    c->status = sb_xstrdup("open");
    c->tags = (char *)cv_empty_array;
    c->profile = cv_json_dup(profile, cv_empty_object);
    c->data = (char *)cv_empty_object;
    c->created = c->updated = sb_now_wall();
    cv_index(c);
    cv_nall++;
    cv_nopen++;
    /* owned first: an abort puts back in reverse order, so the creation is
     * undone before the ownership is handed to anyone waiting */
    cv_take(c, t);
    sb_conv_ref(c);
    sb_txn_effect(t, &created_ops, c);
    changed(t, c);
    ev_begin();
    ev_str("channel", channel);
    ev_str("client_id", client_id);
    ev_journal(t, c, "created");
    return c;
}

/* Messages */

struct append_undo {
    struct sb_conv *c;
    int64_t seq;
    double updated;
};

static void append_put_back(void *data)
{
    struct append_undo *u = data;
    struct sb_conv *c = u->c;
    if (c->nrecent > 0 && c->recent[c->nrecent - 1]->seq == u->seq) {
        cv_msg_free(c->recent[c->nrecent - 1]);
        c->nrecent--;
    }
    if (c->last_seq == u->seq)
        c->last_seq = u->seq - 1;
    /* the window must end at last_seq again */
    while (c->nrecent > 0 && c->recent[c->nrecent - 1]->seq > c->last_seq) {
        cv_msg_free(c->recent[c->nrecent - 1]);
        c->nrecent--;
    }
    c->updated = u->updated;
    sb_conv_unref(c);
    free(u);
}

static void append_commit(void *data)
{
    struct append_undo *u = data;
    sb_conv_unref(u->c);
    free(u);
}

static const struct sb_txn_effect_ops append_ops = { NULL, append_put_back, append_put_back, append_commit };

static void recent_push(struct sb_conv *c, struct sb_msg *m)
{
    if (c->nrecent == c->recent_cap) {
        c->recent_cap = c->recent_cap ? c->recent_cap * 2 : 4;
        c->recent = sb_xrealloc(c->recent, (size_t)c->recent_cap * sizeof *c->recent);
    }
    c->recent[c->nrecent++] = m;
}

const struct sb_msg *sb_conv_append(struct sb_txn *t, struct sb_conv *c, const struct sb_msg_fields *f, char *err,
                                    size_t err_size)
{
    struct sb_msg *m;
    struct store_message row;
    struct append_undo *u;
    char seq_s[24];
    const char *kind = cv_author_kind(f->author_kind);

    if (!kind) {
        snprintf(err, err_size, "author kind must be client, bot, agent or system");
        return NULL;
    }
    if (f->text && (memchr(f->text, '\0', f->text_len) || !sb_utf8_valid(f->text, f->text_len))) {
        snprintf(err, err_size, "text must be valid UTF-8 without NUL");
        return NULL;
    }
    m = sb_xcalloc(1, sizeof *m);
    if (f->id && strlen(f->id) == SB_ID_LEN)
        memcpy(m->id, f->id, SB_ID_LEN + 1);
    else
        sb_new_id(m->id);
    u = sb_xcalloc(1, sizeof *u);
    u->c = c;
    u->updated = c->updated;
    sb_conv_ref(c);
    m->seq = ++c->last_seq;
    u->seq = m->seq;
    m->author_kind = kind;
    m->author_name = sb_xstrdup_or_null(f->author_name);
    m->author_id = sb_xstrdup_or_null(f->author_id);
    m->text_len = f->text ? f->text_len : 0;
    m->text = sb_xmalloc(m->text_len + 1);
    if (m->text_len)
        memcpy(m->text, f->text, m->text_len);
    m->text[m->text_len] = '\0';
    m->attachments = cv_json_dup(f->attachments, cv_empty_array);
    m->buttons = cv_json_dup(f->buttons, cv_empty_array);
    m->provider_ids = cv_json_dup(f->provider_ids, cv_empty_object);
    m->created = sb_now_wall();
    recent_push(c, m);
    sb_txn_effect(t, &append_ops, u);
    changed(t, c);

    row.conversation_id = c->id;
    row.id = m->id;
    row.seq = m->seq;
    row.author_kind = m->author_kind;
    row.author_name = m->author_name;
    row.author_id = m->author_id;
    row.text = m->text;
    row.text_len = m->text_len;
    row.attachments = m->attachments;
    row.buttons = m->buttons;
    row.provider_ids = m->provider_ids;
    row.created = m->created;
    sb_txn_write(t, store_insert_message(&row));

    snprintf(seq_s, sizeof seq_s, "%lld", (long long)m->seq);
    ev_begin();
    ev_str("id", m->id);
    ev_raw("seq", seq_s);
    ev_open("author");
    ev_str("kind", m->author_kind);
    ev_str("name", m->author_name);
    ev_str("id", m->author_id);
    ev_close();
    /* what the conversation was when the message came: a rule handled
     * later ("the client wrote on a pending case") must not see what it
     * became meanwhile */
    ev_str("state", cv_state_names[c->state]);
    ev_str("status", c->status);
    ev_journal(t, c, "message");
    return m;
}

const struct sb_msg *sb_conv_recent(const struct sb_conv *c, int i)
{
    if (i < 0 || i >= c->nrecent)
        return NULL;
    return c->recent[c->nrecent - 1 - i];
}

static struct sb_msg *recent_find(const struct sb_conv *c, const char *id)
{
    int i;
    for (i = c->nrecent - 1; i >= 0; i--)
        if (strcmp(c->recent[i]->id, id) == 0)
            return c->recent[i];
    return NULL;
}

const struct sb_msg *sb_conv_recent_by_id(const struct sb_conv *c, const char *id) { return recent_find(c, id); }

/* A string field's previous value, put back on failure. */
struct field_undo {
    struct sb_conv *c;
    char **slot;
    char *old;
    int is_json;
    double updated;
    int64_t msg_seq;          /* provider ids: the message (its slot moves with the window) */
};

static void field_put_back(void *data)
{
    struct field_undo *u = data;
    struct sb_conv *c = u->c;
    char **slot = u->slot;
    if (u->msg_seq) {
        int i;
        slot = NULL;
        for (i = 0; i < c->nrecent; i++)
            if (c->recent[i]->seq == u->msg_seq)
                slot = &c->recent[i]->provider_ids;
    }
    if (slot) {
        if (u->is_json)
            cv_json_free(*slot);
        else
            free(*slot);
        *slot = u->old;
    } else if (u->is_json) {
        cv_json_free(u->old);
    } else {
        free(u->old);
    }
    c->updated = u->updated;
    sb_conv_unref(c);
    free(u);
}

static void field_commit(void *data)
{
    struct field_undo *u = data;
    if (u->is_json)
        cv_json_free(u->old);
    else
        free(u->old);
    sb_conv_unref(u->c);
    free(u);
}

static const struct sb_txn_effect_ops field_ops = { NULL, field_put_back, field_put_back, field_commit };

/* Replaces *slot with value, keeping the old value for the put-back. */
static void replace(struct sb_txn *t, struct sb_conv *c, char **slot, const char *value, int is_json,
                    const char *empty, int64_t msg_seq)
{
    struct field_undo *u = sb_xcalloc(1, sizeof *u);
    u->c = c;
    u->slot = slot;
    u->old = *slot;
    u->is_json = is_json;
    u->updated = c->updated;
    u->msg_seq = msg_seq;
    sb_conv_ref(c);
    *slot = is_json ? cv_json_dup(value, empty) : sb_xstrdup_or_null(value);
    sb_txn_effect(t, &field_ops, u);
}

void sb_conv_set_provider_ids(struct sb_txn *t, struct sb_conv *c, const char *message_id, const char *json)
{
    struct sb_msg *m = recent_find(c, message_id);
    sb_txn_write(t, store_set_message_provider_ids(message_id, json));
    if (m)
        replace(t, c, &m->provider_ids, json, 1, cv_empty_object, m->seq);
}

struct state_undo {
    struct sb_conv *c;
    enum sb_conv_state from;
    double updated;
};

static void count_state(enum sb_conv_state from, enum sb_conv_state to)
{
    if (from == SB_CONV_CLOSED && to != SB_CONV_CLOSED)
        cv_nopen++;
    if (to == SB_CONV_CLOSED && from != SB_CONV_CLOSED)
        cv_nopen--;
}

static void state_put_back(void *data)
{
    struct state_undo *u = data;
    count_state(u->c->state, u->from);
    u->c->state = u->from;
    u->c->updated = u->updated;
    sb_conv_unref(u->c);
    free(u);
}

static void state_commit(void *data)
{
    struct state_undo *u = data;
    sb_conv_unref(u->c);
    free(u);
}

static const struct sb_txn_effect_ops state_ops = { NULL, state_put_back, state_put_back, state_commit };

int sb_conv_set_state(struct sb_txn *t, struct sb_conv *c, enum sb_conv_state to, const char *reason)
{
    enum sb_conv_state from = c->state;
    struct state_undo *u;
    if (!cv_allowed[from][to])
        return -1;
    u = sb_xcalloc(1, sizeof *u);
    u->c = c;
    u->from = from;
    u->updated = c->updated;
    sb_conv_ref(c);
    sb_txn_effect(t, &state_ops, u);
    c->state = to;
    count_state(from, to);
    changed(t, c);
    ev_begin();
    ev_str("from", cv_state_names[from]);
    ev_str("to", cv_state_names[to]);
    ev_str("reason", reason);
    ev_journal(t, c, "state");
    return 0;
}

int sb_conv_set_field(struct sb_txn *t, struct sb_conv *c, const char *field, const char *value)
{
    char **slot;
    int is_json = 0;
    const char *empty = NULL;
    if (!strcmp(field, "desk"))
        slot = &c->desk;
    else if (!strcmp(field, "group"))
        slot = &c->group;
    else if (!strcmp(field, "agent"))
        slot = &c->agent;
    else if (!strcmp(field, "status"))
        slot = &c->status;
    else if (!strcmp(field, "tags"))
        slot = &c->tags, is_json = 1, empty = cv_empty_array;
    else if (!strcmp(field, "client"))
        slot = &c->profile, is_json = 1, empty = cv_empty_object;
    else if (!strcmp(field, "data"))
        slot = &c->data, is_json = 1, empty = cv_empty_object;
    else
        return -1;
    if (!strcmp(field, "status") && !value)
        value = "open";
    if (is_json && !value)
        value = empty;
    if ((*slot == NULL && value == NULL) || (*slot && value && strcmp(*slot, value) == 0))
        return 0; /* unchanged: nothing to write or journal */
    if (strcmp(field, "data") != 0) {
        void (*put)(const char *, const char *) = is_json ? ev_raw : ev_str;
        ev_begin();
        put("from", *slot);
        put("to", value);
        ev_journal(t, c, field);
    }
    replace(t, c, slot, value, is_json, empty, 0);
    changed(t, c);
    return 0;
}

void sb_conv_journal(struct sb_txn *t, struct sb_conv *c, const char *type, const char *data_json)
{
    event_op(t, c, type, data_json);
}

/* Idempotency keys */

struct seen_key *cv_key_find(const struct sb_conv *c, const char *key)
{
    struct seen_key probe, **found;
    probe.key = (char *)key;
    found = tfind(&probe, &c->keys, cv_cmp_key);
    return found ? *found : NULL;
}

const char *sb_conv_seen(const struct sb_conv *c, const char *key)
{
    struct seen_key *s = cv_key_find(c, key);
    if (!s || s->created < sb_now_wall() - cv_settings.dedupe_window)
        return NULL;
    return s->message_id;
}

/* Puts a key in memory; returns the entry it replaced (an expired one), if any. */
struct seen_key *cv_key_put(struct sb_conv *c, const char *key, const char *message_id, double created)
{
    struct seen_key *s = sb_xcalloc(1, sizeof *s), **found, *old = NULL;
    s->key = sb_xstrdup(key);
    snprintf(s->message_id, sizeof s->message_id, "%s", message_id);
    s->created = created;
    found = tsearch(s, &c->keys, cv_cmp_key);
    if (*found != s) {
        old = *found;
        tdelete(old, &c->keys, cv_cmp_key);
        tsearch(s, &c->keys, cv_cmp_key);
    }
    return old;
}

struct key_undo {
    struct sb_conv *c;
    struct seen_key *added, *replaced;
};

static void key_put_back(void *data)
{
    struct key_undo *u = data;
    tdelete(u->added, &u->c->keys, cv_cmp_key);
    cv_seen_free(u->added);
    if (u->replaced)
        tsearch(u->replaced, &u->c->keys, cv_cmp_key);
    sb_conv_unref(u->c);
    free(u);
}

static void key_commit(void *data)
{
    struct key_undo *u = data;
    if (u->replaced)
        cv_seen_free(u->replaced);
    sb_conv_unref(u->c);
    free(u);
}

static const struct sb_txn_effect_ops key_ops = { NULL, key_put_back, key_put_back, key_commit };

void sb_conv_remember(struct sb_txn *t, struct sb_conv *c, const char *key, const char *message_id)
{
    struct key_undo *u = sb_xcalloc(1, sizeof *u);
    double now = sb_now_wall();
    u->c = c;
    sb_conv_ref(c);
    u->replaced = cv_key_put(c, key, message_id, now);
    u->added = cv_key_find(c, key);
    sb_txn_effect(t, &key_ops, u);
    sb_txn_write(t, store_insert_key(c->id, key, message_id, now));
}


void cv_change_free(void)
{
    if (scratch)
        evbuffer_free(scratch);
    scratch = NULL;
}
