#include "conv.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/buffer.h>

#include "log.h"
#include "metrics.h"
#include "store.h"
#include "txn.h"
#include "util.h"

static void *by_id;         /* tsearch: struct sb_conv * by id */
static void *by_client;     /* tsearch: struct client_key * by channel + client id */
static size_t nall, nopen, nloaded;
static int64_t next_event_id = 1;
static struct sb_conv_settings settings = { 20, 86400, 300 };
static struct sb_conv *dirty_head;

struct client_key {
    char *key;              /* channel "\x1f" client_id */
    struct sb_conv *conv;
};

struct seen_key {
    char *key;
    char message_id[SB_ID_LEN + 1];
    double created;
};

static const char *const state_names[SB_CONV_STATE_COUNT] = { "bot", "queued", "agent", "closed" };
static const char *const author_kinds[] = { "client", "bot", "agent", "system" };

/* allowed[from][to] */
static const unsigned char allowed[SB_CONV_STATE_COUNT][SB_CONV_STATE_COUNT] = {
    /* to:        bot queued agent closed */
    /* bot    */ { 0, 1, 1, 1 },
    /* queued */ { 1, 0, 1, 1 },
    /* agent  */ { 1, 1, 0, 1 },
    /* closed */ { 1, 0, 0, 0 },
};

void sb_conv_configure(const struct sb_conv_settings *s)
{
    settings = *s;
    if (settings.recent_messages < 1)
        settings.recent_messages = 1;
}

const char *sb_conv_state_name(enum sb_conv_state s) { return state_names[s]; }

int sb_conv_parse_state(const char *name, enum sb_conv_state *out)
{
    int i;
    for (i = 0; i < SB_CONV_STATE_COUNT; i++)
        if (strcmp(name, state_names[i]) == 0) {
            *out = (enum sb_conv_state)i;
            return 0;
        }
    return -1;
}

int sb_conv_transition_allowed(enum sb_conv_state from, enum sb_conv_state to) { return allowed[from][to]; }

size_t sb_conv_count(void) { return nall; }
size_t sb_conv_open_count(void) { return nopen; }
size_t sb_conv_loaded_count(void) { return nloaded; }

/* Ids are time-ordered: 11 hex digits of milliseconds since the epoch, then
 * 9 of a per-process counter that starts at a random value. New rows then
 * land at the right edge of the store's indexes (few pages touched per
 * commit), and ids stay unique across restarts because time moves on. */
void sb_new_id(char out[SB_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    static uint64_t counter;
    static int seeded;
    uint64_t ms = (uint64_t)(sb_now_wall() * 1000.0), c;
    int i;
    if (!seeded) {
        if (getrandom(&counter, sizeof counter, 0) != (ssize_t)sizeof counter)
            counter = (uint64_t)ms * 2654435761u;
        seeded = 1;
    }
    c = counter++;
    for (i = 10; i >= 0; i--, ms >>= 4)
        out[i] = hex[ms & 15];
    for (i = 19; i >= 11; i--, c >>= 4)
        out[i] = hex[c & 15];
    out[SB_ID_LEN] = '\0';
}

int sb_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str, *end = s + len;
    while (s < end) {
        unsigned c = *s;
        size_t n;
        unsigned cp;
        if (c < 0x80) {
            s++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if ((size_t)(end - s) <= n)
            return 0;
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i] & 0x3f);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        s += n + 1;
    }
    return 1;
}

/* Memory: the empty JSON values most fields hold are shared, not copied. */

static const char empty_array[] = "[]", empty_object[] = "{}";

static char *json_dup(const char *s, const char *empty)
{
    if (!s || strcmp(s, empty) == 0)
        return (char *)empty;
    if (strcmp(s, empty_array) == 0)
        return (char *)empty_array;
    if (strcmp(s, empty_object) == 0)
        return (char *)empty_object;
    return sb_xstrdup(s);
}

static void json_free(char *s)
{
    if (s != empty_array && s != empty_object)
        free(s);
}

static char *dup_or_null(const char *s) { return s ? sb_xstrdup(s) : NULL; }

static const char *author_kind_of(const char *s)
{
    size_t i;
    for (i = 0; i < sizeof author_kinds / sizeof *author_kinds; i++)
        if (s && strcmp(s, author_kinds[i]) == 0)
            return author_kinds[i];
    return NULL;
}

static int cmp_conv_id(const void *a, const void *b)
{
    return strcmp(((const struct sb_conv *)a)->id, ((const struct sb_conv *)b)->id);
}

static int cmp_key(const void *a, const void *b)
{
    /* struct client_key and struct seen_key both start with the key */
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join_key(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *k = sb_xmalloc(la + lb + 2);
    memcpy(k, a, la);
    k[la] = '\x1f';
    memcpy(k + la + 1, b, lb + 1);
    return k;
}

static void msg_free(struct sb_msg *m)
{
    if (!m)
        return;
    free(m->author_name);
    free(m->author_id);
    free(m->text);
    json_free(m->attachments);
    json_free(m->buttons);
    json_free(m->provider_ids);
    free(m);
}

static void seen_free(void *p)
{
    struct seen_key *s = p;
    free(s->key);
    free(s);
}

static void conv_free(struct sb_conv *c)
{
    int i;
    free(c->channel);
    free(c->client_id);
    free(c->desk);
    free(c->group);
    free(c->agent);
    free(c->status);
    json_free(c->tags);
    json_free(c->profile);
    json_free(c->data);
    for (i = 0; i < c->nrecent; i++)
        msg_free(c->recent[i]);
    free(c->recent);
    tdestroy(c->keys, seen_free);
    free(c);
}

static void client_key_free(void *p)
{
    struct client_key *k = p;
    free(k->key);
    free(k);
}

static void dirty_unlink(struct sb_conv *c)
{
    if (!c->dirty)
        return;
    if (c->dirty_prev)
        c->dirty_prev->dirty_next = c->dirty_next;
    else
        dirty_head = c->dirty_next;
    if (c->dirty_next)
        c->dirty_next->dirty_prev = c->dirty_prev;
    c->dirty_prev = c->dirty_next = NULL;
    c->dirty = 0;
}

static void index_conv(struct sb_conv *c)
{
    struct client_key *k = sb_xcalloc(1, sizeof *k);
    k->key = join_key(c->channel, c->client_id);
    k->conv = c;
    tsearch(c, &by_id, cmp_conv_id);
    tsearch(k, &by_client, cmp_key);
    nloaded++;
    c->last_used = sb_now_mono();
}

/* Takes c out of memory's indexes; the struct goes with its last reference. */
static void unindex_conv(struct sb_conv *c)
{
    char *key;
    struct client_key **found;
    if (c->gone)
        return;
    key = join_key(c->channel, c->client_id);
    found = tfind(&key, &by_client, cmp_key);
    if (found && (*found)->conv == c) {
        struct client_key *k = *found;
        tdelete(k, &by_client, cmp_key);
        client_key_free(k);
    }
    free(key);
    tdelete(c, &by_id, cmp_conv_id);
    dirty_unlink(c);
    c->gone = 1;
    nloaded--;
    if (c->refs == 0)
        conv_free(c);
}

void sb_conv_ref(struct sb_conv *c) { c->refs++; }

void sb_conv_unref(struct sb_conv *c)
{
    if (--c->refs == 0 && c->gone)
        conv_free(c);
}

struct sb_conv *sb_conv_loaded(const char *id)
{
    struct sb_conv probe, **found;
    if (strlen(id) != SB_ID_LEN)
        return NULL;
    memcpy(probe.id, id, SB_ID_LEN + 1);
    found = tfind(&probe, &by_id, cmp_conv_id);
    return found ? *found : NULL;
}

struct sb_conv *sb_conv_loaded_by_client(const char *channel, const char *client_id)
{
    char *key = join_key(channel, client_id);
    struct client_key **found = tfind(&key, &by_client, cmp_key);
    free(key);
    return found ? (*found)->conv : NULL;
}

/* Rows */

static void row_of(const struct sb_conv *c, struct store_conversation *r)
{
    r->id = c->id;
    r->channel = c->channel;
    r->client_id = c->client_id;
    r->state = state_names[c->state];
    r->desk = c->desk;
    r->group = c->group;
    r->agent = c->agent;
    r->status = c->status;
    r->tags = c->tags;
    r->profile = c->profile;
    r->data = c->data;
    r->last_seq = c->last_seq;
    r->created = c->created;
    r->updated = c->updated;
}

static void write_row(struct sb_conv *c)
{
    struct store_conversation r;
    row_of(c, &r);
    store_submit(store_put_conversation(&r));
}

/* The store's flush hook: one row per conversation changed since the last
 * batch left, however many transactions changed it. */
static void flush_dirty(void)
{
    while (dirty_head) {
        struct sb_conv *c = dirty_head;
        dirty_unlink(c);
        write_row(c);
    }
}

static void mark_dirty(struct sb_conv *c)
{
    if (c->dirty || c->gone)
        return;
    c->dirty = 1;
    c->dirty_prev = NULL;
    c->dirty_next = dirty_head;
    if (dirty_head)
        dirty_head->dirty_prev = c;
    dirty_head = c;
}

/* Ownership */

static void hand_over(struct sb_conv *c);

static void lock_end(void *data, uint64_t seq)
{
    struct sb_conv *c = data;
    int cap = settings.recent_messages;
    if (c->mutated) {
        c->mutated = 0;
        c->write_seq = seq;
        mark_dirty(c);
    }
    /* the window grew while the owner appended; keep the newest */
    if (c->nrecent > cap) {
        int drop = c->nrecent - cap, i;
        for (i = 0; i < drop; i++)
            msg_free(c->recent[i]);
        memmove(c->recent, c->recent + drop, (size_t)cap * sizeof *c->recent);
        c->nrecent = cap;
    }
    c->last_used = sb_now_mono();
    hand_over(c);
}

static void lock_abort(void *data)
{
    struct sb_conv *c = data;
    c->mutated = 0;
    hand_over(c);
}

static const struct sb_txn_effect_ops lock_ops = { lock_end, lock_abort, NULL, NULL };

static void take(struct sb_conv *c, struct sb_txn *t)
{
    c->owner = t;
    sb_conv_ref(c);
    /* A row still waiting for the flush holds what the previous owner
     * wrote: it goes into the open batch now, before t changes anything. */
    if (c->dirty) {
        dirty_unlink(c);
        write_row(c);
    }
    sb_txn_effect(t, &lock_ops, c);
}

/* The owner ended: the first in line owns it now. Each waiter's reference
 * passes to whoever its wake-up resumes, who drops it. */
static void hand_over(struct sb_conv *c)
{
    struct sb_conv_waiter *w = c->waiters;
    c->owner = NULL;
    if (w && !c->gone) {
        c->waiters = w->next;
        if (!c->waiters)
            c->waiters_tail = NULL;
        sb_txn_set_waiting(w->txn, NULL);
        take(c, w->txn);
        w->wake(w);
    } else {
        /* gone: every waiter is told, and looks it up again */
        while (w) {
            struct sb_conv_waiter *next = w->next;
            c->waiters = next;
            sb_txn_set_waiting(w->txn, NULL);
            w->wake(w);
            w = next;
        }
        c->waiters_tail = NULL;
    }
    sb_conv_unref(c);
}

enum sb_conv_acquire sb_conv_acquire(struct sb_conv *c, struct sb_txn *t)
{
    struct sb_txn *o;
    int hops;
    if (c->owner == t)
        return SB_CONV_ACQUIRED;
    if (!c->owner) {
        take(c, t);
        return SB_CONV_ACQUIRED;
    }
    /* Waiting would close a circle of transactions waiting on each other. */
    for (o = c->owner, hops = 0; o && hops < 64; hops++) {
        const struct sb_conv *w = sb_txn_waiting(o);
        if (!w)
            break;
        o = w->owner;
        if (o == t)
            return SB_CONV_DEADLOCK;
    }
    return SB_CONV_BUSY;
}

void sb_conv_wait(struct sb_conv *c, struct sb_conv_waiter *w)
{
    w->next = NULL;
    if (c->waiters_tail)
        c->waiters_tail->next = w;
    else
        c->waiters = w;
    c->waiters_tail = w;
    sb_txn_set_waiting(w->txn, c);
    sb_conv_ref(c);
}

void sb_conv_cancel_wait(struct sb_conv *c, struct sb_conv_waiter *w)
{
    struct sb_conv_waiter **p, *prev = NULL;
    for (p = &c->waiters; *p; prev = *p, p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            if (c->waiters_tail == w)
                c->waiters_tail = prev;
            sb_txn_set_waiting(w->txn, NULL);
            sb_conv_unref(c);
            return;
        }
    }
}

/* Changes and how each is put back */

static void event_op(struct sb_txn *t, struct sb_conv *c, const char *type, const char *data)
{
    sb_txn_write(t, store_insert_event(next_event_id++, c->id, type, data, sb_now_wall()));
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
    nall--;
    if (c->state != SB_CONV_CLOSED)
        nopen--;
    unindex_conv(c);
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
    c->tags = (char *)empty_array;
    c->profile = json_dup(profile, empty_object);
    c->data = (char *)empty_object;
    c->created = c->updated = sb_now_wall();
    index_conv(c);
    nall++;
    nopen++;
    /* owned first: an abort puts back in reverse order, so the creation is
     * undone before the ownership is handed to anyone waiting */
    take(c, t);
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
        msg_free(c->recent[c->nrecent - 1]);
        c->nrecent--;
    }
    if (c->last_seq == u->seq)
        c->last_seq = u->seq - 1;
    /* the window must end at last_seq again */
    while (c->nrecent > 0 && c->recent[c->nrecent - 1]->seq > c->last_seq) {
        msg_free(c->recent[c->nrecent - 1]);
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
    const char *kind = author_kind_of(f->author_kind);

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
    m->author_name = dup_or_null(f->author_name);
    m->author_id = dup_or_null(f->author_id);
    m->text_len = f->text ? f->text_len : 0;
    m->text = sb_xmalloc(m->text_len + 1);
    if (m->text_len)
        memcpy(m->text, f->text, m->text_len);
    m->text[m->text_len] = '\0';
    m->attachments = json_dup(f->attachments, empty_array);
    m->buttons = json_dup(f->buttons, empty_array);
    m->provider_ids = json_dup(f->provider_ids, empty_object);
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
            json_free(*slot);
        else
            free(*slot);
        *slot = u->old;
    } else if (u->is_json) {
        json_free(u->old);
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
        json_free(u->old);
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
    *slot = is_json ? json_dup(value, empty) : dup_or_null(value);
    sb_txn_effect(t, &field_ops, u);
}

void sb_conv_set_provider_ids(struct sb_txn *t, struct sb_conv *c, const char *message_id, const char *json)
{
    struct sb_msg *m = recent_find(c, message_id);
    sb_txn_write(t, store_set_message_provider_ids(message_id, json));
    if (m)
        replace(t, c, &m->provider_ids, json, 1, empty_object, m->seq);
}

struct state_undo {
    struct sb_conv *c;
    enum sb_conv_state from;
    double updated;
};

static void count_state(enum sb_conv_state from, enum sb_conv_state to)
{
    if (from == SB_CONV_CLOSED && to != SB_CONV_CLOSED)
        nopen++;
    if (to == SB_CONV_CLOSED && from != SB_CONV_CLOSED)
        nopen--;
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
    if (!allowed[from][to])
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
    ev_str("from", state_names[from]);
    ev_str("to", state_names[to]);
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
        slot = &c->tags, is_json = 1, empty = empty_array;
    else if (!strcmp(field, "client"))
        slot = &c->profile, is_json = 1, empty = empty_object;
    else if (!strcmp(field, "data"))
        slot = &c->data, is_json = 1, empty = empty_object;
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

static struct seen_key *key_find(const struct sb_conv *c, const char *key)
{
    struct seen_key probe, **found;
    probe.key = (char *)key;
    found = tfind(&probe, &c->keys, cmp_key);
    return found ? *found : NULL;
}

const char *sb_conv_seen(const struct sb_conv *c, const char *key)
{
    struct seen_key *s = key_find(c, key);
    if (!s || s->created < sb_now_wall() - settings.dedupe_window)
        return NULL;
    return s->message_id;
}

/* Puts a key in memory; returns the entry it replaced (an expired one), if any. */
static struct seen_key *key_put(struct sb_conv *c, const char *key, const char *message_id, double created)
{
    struct seen_key *s = sb_xcalloc(1, sizeof *s), **found, *old = NULL;
    s->key = sb_xstrdup(key);
    snprintf(s->message_id, sizeof s->message_id, "%s", message_id);
    s->created = created;
    found = tsearch(s, &c->keys, cmp_key);
    if (*found != s) {
        old = *found;
        tdelete(old, &c->keys, cmp_key);
        tsearch(s, &c->keys, cmp_key);
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
    tdelete(u->added, &u->c->keys, cmp_key);
    seen_free(u->added);
    if (u->replaced)
        tsearch(u->replaced, &u->c->keys, cmp_key);
    sb_conv_unref(u->c);
    free(u);
}

static void key_commit(void *data)
{
    struct key_undo *u = data;
    if (u->replaced)
        seen_free(u->replaced);
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
    u->replaced = key_put(c, key, message_id, now);
    u->added = key_find(c, key);
    sb_txn_effect(t, &key_ops, u);
    sb_txn_write(t, store_insert_key(c->id, key, message_id, now));
}

/* Loading on demand */

static char *col_dup(const struct store_row *r, int i) { return r->text[i] ? sb_xstrdup(r->text[i]) : NULL; }

static struct sb_conv *conv_from_row(const struct store_row *r)
{
    struct sb_conv *c = sb_xcalloc(1, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", r->text[0]);
    c->channel = col_dup(r, 1);
    c->client_id = col_dup(r, 2);
    if (!c->channel || !c->client_id || sb_conv_parse_state(r->text[3] ? r->text[3] : "", &c->state))
        c->state = SB_CONV_CLOSED;
    if (!c->channel)
        c->channel = sb_xstrdup("");
    if (!c->client_id)
        c->client_id = sb_xstrdup("");
    c->desk = col_dup(r, 4);
    c->group = col_dup(r, 5);
    c->agent = col_dup(r, 6);
    c->status = r->text[7] ? sb_xstrdup(r->text[7]) : sb_xstrdup("open");
    c->tags = json_dup(r->text[8], empty_array);
    c->profile = json_dup(r->text[9], empty_object);
    c->data = json_dup(r->text[10], empty_object);
    c->last_seq = (int64_t)r->num[11];
    c->created = r->num[12];
    c->updated = r->num[13];
    return c;
}

struct load {
    char *id, *channel, *client_id;
    sb_conv_load_fn fn;
    void *arg;
};

static struct sb_conv *loaded_by(const struct load *l)
{
    return l->client_id ? sb_conv_loaded_by_client(l->channel, l->client_id) : sb_conv_loaded(l->id);
}

static void load_done(void *arg, const struct store_rows *rows, const char *error)
{
    struct load *l = arg;
    struct sb_conv *c = loaded_by(l);
    int i, n = store_rows_count(rows);
    if (!c && error) {
        l->fn(l->arg, NULL, error);
        goto done;
    }
    if (!c) {
        for (i = 0; i < n; i++) {
            struct store_row r;
            int tag;
            store_rows_get(rows, i, &r, &tag);
            if (tag == 0 && !c && r.text[0] && strlen(r.text[0]) == SB_ID_LEN && !sb_conv_loaded(r.text[0])) {
                c = conv_from_row(&r);
                index_conv(c);
            } else if (tag == 1 && c && r.text[0] && r.text[1]) {
                struct seen_key *old = key_put(c, r.text[0], r.text[1], r.num[2]);
                if (old)
                    seen_free(old);
            }
        }
    }
    l->fn(l->arg, c, NULL);
done:
    free(l->id);
    free(l->channel);
    free(l->client_id);
    free(l);
}

void sb_conv_load(const char *id, const char *channel, const char *client_id, sb_conv_load_fn fn, void *arg)
{
    struct load *l = sb_xcalloc(1, sizeof *l);
    l->id = id ? sb_xstrdup(id) : NULL;
    l->channel = channel ? sb_xstrdup(channel) : NULL;
    l->client_id = client_id ? sb_xstrdup(client_id) : NULL;
    l->fn = fn;
    l->arg = arg;
    if (!client_id && (!id || strlen(id) != SB_ID_LEN)) {
        load_done(l, NULL, NULL);   /* not an id: no such conversation */
        return;
    }
    store_fetch_conversation(id, channel, client_id, sb_now_wall() - settings.dedupe_window, load_done, l);
}

struct want {
    struct sb_conv *c;
    int64_t from, to;
    sb_conv_messages_fn fn;
    void *arg;
};

static struct sb_msg *msg_from_row(const struct store_row *r)
{
    struct sb_msg *m = sb_xcalloc(1, sizeof *m);
    snprintf(m->id, sizeof m->id, "%s", r->text[2] ? r->text[2] : "");
    m->seq = (int64_t)r->num[1];
    m->author_kind = author_kind_of(r->text[3]);
    if (!m->author_kind)
        m->author_kind = author_kinds[3];
    m->author_name = col_dup(r, 4);
    m->author_id = col_dup(r, 5);
    m->text_len = r->text[6] ? r->len[6] : 0;
    m->text = sb_xmalloc(m->text_len + 1);
    if (m->text_len)
        memcpy(m->text, r->text[6], m->text_len);
    m->text[m->text_len] = '\0';
    m->attachments = json_dup(r->text[7], empty_array);
    m->buttons = json_dup(r->text[8], empty_array);
    m->provider_ids = json_dup(r->text[9], empty_object);
    m->created = r->num[10];
    return m;
}

static void want_done(void *arg, const struct store_rows *rows, const char *error)
{
    struct want *w = arg;
    struct sb_conv *c = w->c;
    int i, n = store_rows_count(rows), k = 0;
    struct sb_msg **older;
    if (error) {
        w->fn(w->arg, error);
        goto done;
    }
    /* Older messages go in front of the window when they still join it. */
    older = sb_xcalloc((size_t)n + 1, sizeof *older);
    for (i = 0; i < n; i++) {
        struct store_row r;
        store_rows_get(rows, i, &r, NULL);
        older[k++] = msg_from_row(&r);
    }
    {
        int64_t oldest = c->nrecent ? c->recent[0]->seq : c->last_seq + 1;
        int joins = k > 0 && older[k - 1]->seq == oldest - 1 && !c->gone;
        if (joins) {
            while (c->nrecent + k > c->recent_cap) {
                c->recent_cap = c->recent_cap ? c->recent_cap * 2 : 4;
                c->recent = sb_xrealloc(c->recent, (size_t)c->recent_cap * sizeof *c->recent);
            }
            memmove(c->recent + k, c->recent, (size_t)c->nrecent * sizeof *c->recent);
            memcpy(c->recent, older, (size_t)k * sizeof *older);
            c->nrecent += k;
        } else {
            for (i = 0; i < k; i++)
                msg_free(older[i]);
        }
    }
    free(older);
    w->fn(w->arg, NULL);
done:
    sb_conv_unref(c);
    free(w);
}

void sb_conv_want_messages(struct sb_conv *c, int n, sb_conv_messages_fn fn, void *arg)
{
    int64_t want = n < c->last_seq ? n : c->last_seq;
    struct want *w;
    if (c->nrecent >= want) {
        fn(arg, NULL);
        return;
    }
    w = sb_xcalloc(1, sizeof *w);
    w->c = c;
    w->to = c->last_seq - c->nrecent;
    w->from = c->last_seq - want + 1;
    w->fn = fn;
    w->arg = arg;
    sb_conv_ref(c);
    store_fetch_messages(c->id, w->from, w->to, want_done, w);
}

/* Sweeping */

static struct sb_conv **sweep_list;
static size_t sweep_len, sweep_cap, sweep_held;
static double sweep_mono, sweep_wall;

static struct seen_key **old_keys;
static size_t nold_keys, old_keys_cap;

static void collect_old_key(const void *node, VISIT which, void *closure)
{
    struct seen_key *s = *(struct seen_key *const *)node;
    (void)closure;
    if ((which == postorder || which == leaf) && s->created < sweep_wall - settings.dedupe_window) {
        if (nold_keys == old_keys_cap) {
            old_keys_cap = old_keys_cap ? old_keys_cap * 2 : 16;
            old_keys = sb_xrealloc(old_keys, old_keys_cap * sizeof *old_keys);
        }
        old_keys[nold_keys++] = s;
    }
}

static void collect_idle(const void *node, VISIT which, void *closure)
{
    struct sb_conv *c = *(struct sb_conv *const *)node;
    double idle;
    (void)closure;
    if (which != postorder && which != leaf)
        return;
    if (c->keys) {
        size_t i;
        nold_keys = 0;
        twalk_r(c->keys, collect_old_key, NULL);
        for (i = 0; i < nold_keys; i++) {
            tdelete(old_keys[i], &c->keys, cmp_key);
            seen_free(old_keys[i]);
        }
    }
    if (c->owner || c->waiters || c->dirty || c->write_seq > store_committed_seq())
        return;
    idle = sweep_mono - c->last_used;
    if (c->state == SB_CONV_CLOSED ? idle < 1.0 : idle < settings.idle_unload)
        return;
    if (c->refs) {
        sweep_held++;   /* only script handles keep it: garbage, often */
        return;
    }
    if (sweep_len == sweep_cap) {
        sweep_cap = sweep_cap ? sweep_cap * 2 : 64;
        sweep_list = sb_xrealloc(sweep_list, sweep_cap * sizeof *sweep_list);
    }
    sweep_list[sweep_len++] = c;
}

size_t sb_conv_sweep(void)
{
    size_t i;
    sweep_mono = sb_now_mono();
    sweep_wall = sb_now_wall();
    sweep_len = sweep_held = 0;
    twalk_r(by_id, collect_idle, NULL);
    for (i = 0; i < sweep_len; i++)
        unindex_conv(sweep_list[i]);
    free(sweep_list);
    sweep_list = NULL;
    sweep_len = sweep_cap = 0;
    free(old_keys);
    old_keys = NULL;
    old_keys_cap = nold_keys = 0;
    return sweep_held;
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_family(out, "switchboard_conversations", "gauge",
                      "Conversations stored (all), not closed (open), and held in memory (loaded).");
    evbuffer_add_printf(out, "switchboard_conversations{state=\"all\"} %zu\n"
                             "switchboard_conversations{state=\"open\"} %zu\n"
                             "switchboard_conversations{state=\"loaded\"} %zu\n", nall, nopen, nloaded);
}

int sb_conv_start(void)
{
    int64_t all = 0, open = 0;
    store_set_flush_hook(flush_dirty);
    next_event_id = store_max_event_id() + 1;
    if (store_count_conversations(&all, &open))
        return -1;
    nall = (size_t)all;
    nopen = (size_t)open;
    sb_metrics_register(render_metrics);
    return 0;
}

static void free_tree_conv(void *p)
{
    struct sb_conv *c = p;
    /* at exit every runtime is closed: no handle refers to it any more */
    conv_free(c);
}

void sb_conv_free_all(void)
{
    dirty_head = NULL;
    if (scratch)
        evbuffer_free(scratch);
    scratch = NULL;
    tdestroy(by_client, client_key_free);
    tdestroy(by_id, free_tree_conv);
    by_client = by_id = NULL;
    nall = nopen = nloaded = 0;
}
