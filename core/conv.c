#include "conv.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/buffer.h>

#include "job.h"
#include "log.h"
#include "store.h"
#include "util.h"

static void *by_id;         /* tsearch: struct sb_conv * by id */
static void *by_client;     /* tsearch: struct client_key * by channel + client id */
static void *seen_keys;     /* tsearch: struct seen * by channel + key */
static size_t nconv, nopen;
static int64_t next_event_id = 1;
static struct sb_conv_settings settings = { 50, 86400 };

struct client_key {
    char *key;              /* channel "\x1f" client_id */
    struct sb_conv *conv;
};

struct seen {
    char *key;              /* channel "\x1f" idempotency key */
    char conversation_id[SB_ID_LEN + 1];
    char message_id[SB_ID_LEN + 1];
    double created;
};

static const char *const state_names[SB_CONV_STATE_COUNT] = { "bot", "queued", "agent", "closed" };

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

size_t sb_conv_count(void) { return nconv; }
size_t sb_conv_open_count(void) { return nopen; }

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

static int cmp_conv_id(const void *a, const void *b)
{
    return strcmp(((const struct sb_conv *)a)->id, ((const struct sb_conv *)b)->id);
}

static int cmp_key(const void *a, const void *b)
{
    /* struct client_key and struct seen both start with the key */
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

static char *dup_or_null(const char *s) { return s ? sb_xstrdup(s) : NULL; }

static void msg_free(struct sb_msg *m)
{
    if (!m)
        return;
    free(m->author_kind);
    free(m->author_name);
    free(m->author_id);
    free(m->text);
    free(m->attachments);
    free(m->buttons);
    free(m->provider_ids);
    free(m);
}

static void conv_free(void *p)
{
    struct sb_conv *c = p;
    int i;
    free(c->channel);
    free(c->client_id);
    free(c->desk);
    free(c->group);
    free(c->agent);
    free(c->status);
    free(c->tags);
    free(c->profile);
    free(c->data);
    for (i = 0; i < c->nrecent; i++)
        msg_free(c->recent[(c->recent_start + i) % settings.recent_messages]);
    free(c->recent);
    free(c);
}

static void client_key_free(void *p)
{
    struct client_key *k = p;
    free(k->key);
    free(k);
}

static void seen_free(void *p)
{
    struct seen *s = p;
    free(s->key);
    free(s);
}

static void index_conv(struct sb_conv *c)
{
    struct client_key *k = sb_xcalloc(1, sizeof *k);
    k->key = join_key(c->channel, c->client_id);
    k->conv = c;
    tsearch(c, &by_id, cmp_conv_id);
    tsearch(k, &by_client, cmp_key);
    nconv++;
    if (c->state != SB_CONV_CLOSED)
        nopen++;
}

struct sb_conv *sb_conv_get(const char *id)
{
    struct sb_conv probe, **found;
    if (strlen(id) != SB_ID_LEN)
        return NULL;
    memcpy(probe.id, id, SB_ID_LEN + 1);
    found = tfind(&probe, &by_id, cmp_conv_id);
    return found ? *found : NULL;
}

struct sb_conv *sb_conv_find(const char *channel, const char *client_id)
{
    char *key = join_key(channel, client_id);
    struct client_key **found = tfind(&key, &by_client, cmp_key);
    free(key);
    return found ? (*found)->conv : NULL;
}

static void note(uint64_t seq)
{
    sb_job_note_write(seq);
}

static struct sb_conv *dirty_head;

static void write_row(struct sb_conv *c)
{
    struct store_op *op = store_op_new(STORE_CONV_UPSERT);
    store_op_str(op, c->id);
    store_op_str(op, c->channel);
    store_op_str(op, c->client_id);
    store_op_str(op, state_names[c->state]);
    store_op_str(op, c->desk);
    store_op_str(op, c->group);
    store_op_str(op, c->agent);
    store_op_str(op, c->status);
    store_op_str(op, c->tags);
    store_op_str(op, c->profile);
    store_op_str(op, c->data);
    store_op_int(op, c->last_seq);
    store_op_real(op, c->created);
    store_op_real(op, c->updated);
    store_submit(op);
}

/* The store's flush hook: one row per conversation changed since the last
 * batch left, however many times it changed. */
static void flush_dirty(void)
{
    while (dirty_head) {
        struct sb_conv *c = dirty_head;
        dirty_head = c->next_dirty;
        c->dirty = 0;
        c->next_dirty = NULL;
        write_row(c);
    }
}

uint64_t sb_conv_persist(struct sb_conv *c)
{
    uint64_t seq;
    c->updated = sb_now_wall();
    if (!c->dirty) {
        c->dirty = 1;
        c->next_dirty = dirty_head;
        dirty_head = c;
    }
    seq = store_reserve();
    note(seq);
    return seq;
}

uint64_t sb_conv_journal(struct sb_conv *c, const char *type, const char *data_json)
{
    struct store_op *op = store_op_new(STORE_EVENT_INSERT);
    uint64_t seq;
    store_op_int(op, next_event_id++);
    store_op_str(op, c->id);
    store_op_str(op, type);
    store_op_str(op, data_json ? data_json : "{}");
    store_op_real(op, sb_now_wall());
    seq = store_submit(op);
    note(seq);
    return seq;
}

/* Scratch buffer for building small JSON texts on the loop thread. */
static struct evbuffer *scratch;

static char *scratch_take(void)
{
    size_t len = evbuffer_get_length(scratch);
    char *out = sb_xmalloc(len + 1);
    evbuffer_remove(scratch, out, len);
    out[len] = '\0';
    return out;
}

/* Event data is written straight into the scratch buffer:
 *   ev_begin(); ev_str("from", a); ev_open("author"); ...; ev_close(); data = ev_end();
 * Strings are quoted, NULL becomes null, ev_raw takes JSON as it is. */
#define EV_DEPTH 4
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

static char *ev_end(void)
{
    evbuffer_add(scratch, "}", 1);
    return scratch_take();
}

/* Journals an event whose data the caller built with ev_begin ... */
static void journal_built(struct sb_conv *c, const char *type)
{
    char *data = ev_end();
    sb_conv_journal(c, type, data);
    free(data);
}

struct sb_conv *sb_conv_create(const char *channel, const char *client_id, const char *profile)
{
    struct sb_conv *c = sb_xcalloc(1, sizeof *c);
    sb_new_id(c->id);
    c->channel = sb_xstrdup(channel);
    c->client_id = sb_xstrdup(client_id);
    c->state = SB_CONV_BOT;
    c->status = sb_xstrdup("open");
    c->tags = sb_xstrdup("[]");
    c->profile = sb_xstrdup(profile ? profile : "{}");
    c->data = sb_xstrdup("{}");
    c->created = c->updated = sb_now_wall();
    c->recent = sb_xcalloc((size_t)settings.recent_messages, sizeof *c->recent);
    index_conv(c);
    sb_conv_persist(c);
    ev_begin();
    ev_str("channel", channel);
    ev_str("client_id", client_id);
    journal_built(c, "created");
    return c;
}

static void ring_push(struct sb_conv *c, struct sb_msg *m)
{
    int cap = settings.recent_messages;
    if (!c->recent)
        c->recent = sb_xcalloc((size_t)cap, sizeof *c->recent);
    if (c->nrecent < cap) {
        c->recent[(c->recent_start + c->nrecent) % cap] = m;
        c->nrecent++;
    } else {
        msg_free(c->recent[c->recent_start]);
        c->recent[c->recent_start] = m;
        c->recent_start = (c->recent_start + 1) % cap;
    }
}

const struct sb_msg *sb_conv_recent(const struct sb_conv *c, int i)
{
    if (i < 0 || i >= c->nrecent)
        return NULL;
    return c->recent[(c->recent_start + c->nrecent - 1 - i) % settings.recent_messages];
}

static struct sb_msg *ring_find(const struct sb_conv *c, const char *id)
{
    int i;
    for (i = c->nrecent - 1; i >= 0; i--) {
        struct sb_msg *m = c->recent[(c->recent_start + i) % settings.recent_messages];
        if (strcmp(m->id, id) == 0)
            return m;
    }
    return NULL;
}

const struct sb_msg *sb_conv_recent_by_id(const struct sb_conv *c, const char *id)
{
    return ring_find(c, id);
}

const struct sb_msg *sb_conv_append(struct sb_conv *c, const struct sb_msg_fields *f, char *err, size_t err_size)
{
    static const char *const kinds[] = { "client", "bot", "agent", "system" };
    struct sb_msg *m;
    struct store_op *op;
    size_t i;
    int kind_ok = 0;
    char seq_s[24];

    for (i = 0; i < 4; i++)
        kind_ok |= f->author_kind && strcmp(f->author_kind, kinds[i]) == 0;
    if (!kind_ok) {
        snprintf(err, err_size, "author kind must be client, bot, agent or system");
        return NULL;
    }
    if (!sb_utf8_valid(f->text ? f->text : "", f->text ? f->text_len : 0) || (f->text && strlen(f->text) != f->text_len)) {
        snprintf(err, err_size, "text is not valid UTF-8");
        return NULL;
    }
    m = sb_xcalloc(1, sizeof *m);
    if (f->id && strlen(f->id) == SB_ID_LEN)
        memcpy(m->id, f->id, SB_ID_LEN + 1);
    else
        sb_new_id(m->id);
    m->seq = ++c->last_seq;
    m->author_kind = sb_xstrdup(f->author_kind);
    m->author_name = dup_or_null(f->author_name);
    m->author_id = dup_or_null(f->author_id);
    m->text = sb_xstrdup(f->text ? f->text : "");
    m->attachments = sb_xstrdup(f->attachments ? f->attachments : "[]");
    m->buttons = sb_xstrdup(f->buttons ? f->buttons : "[]");
    m->provider_ids = sb_xstrdup(f->provider_ids ? f->provider_ids : "{}");
    m->created = sb_now_wall();

    op = store_op_new(STORE_MSG_INSERT);
    store_op_str(op, c->id);
    store_op_int(op, m->seq);
    store_op_str(op, m->id);
    store_op_str(op, m->author_kind);
    store_op_str(op, m->author_name);
    store_op_str(op, m->author_id);
    store_op_str(op, m->text);
    store_op_str(op, m->attachments);
    store_op_str(op, m->buttons);
    store_op_str(op, m->provider_ids);
    store_op_real(op, m->created);
    note(store_submit(op));
    sb_conv_persist(c);

    snprintf(seq_s, sizeof seq_s, "%lld", (long long)m->seq);
    ev_begin();
    ev_str("id", m->id);
    ev_raw("seq", seq_s);
    ev_open("author");
    ev_str("kind", m->author_kind);
    ev_str("name", m->author_name);
    ev_str("id", m->author_id);
    ev_close();
    journal_built(c, "message");
    ring_push(c, m);
    return m;
}

void sb_conv_set_provider_ids(struct sb_conv *c, const char *message_id, const char *json)
{
    struct store_op *op = store_op_new(STORE_MSG_SET_PROVIDER_IDS);
    struct sb_msg *m = ring_find(c, message_id);
    store_op_str(op, message_id);
    store_op_str(op, json);
    note(store_submit(op));
    if (m) {
        free(m->provider_ids);
        m->provider_ids = sb_xstrdup(json);
    }
}

int sb_conv_set_state(struct sb_conv *c, enum sb_conv_state to, const char *reason)
{
    enum sb_conv_state from = c->state;
    if (!allowed[from][to])
        return -1;
    c->state = to;
    if (from == SB_CONV_CLOSED)
        nopen++;
    if (to == SB_CONV_CLOSED)
        nopen--;
    sb_conv_persist(c);
    ev_begin();
    ev_str("from", state_names[from]);
    ev_str("to", state_names[to]);
    ev_str("reason", reason);
    journal_built(c, "state");
    return 0;
}

int sb_conv_set_field(struct sb_conv *c, const char *field, const char *value)
{
    char **slot;
    int is_json = 0;
    if (!strcmp(field, "desk"))
        slot = &c->desk;
    else if (!strcmp(field, "group"))
        slot = &c->group;
    else if (!strcmp(field, "agent"))
        slot = &c->agent;
    else if (!strcmp(field, "status"))
        slot = &c->status;
    else if (!strcmp(field, "tags"))
        slot = &c->tags, is_json = 1;
    else if (!strcmp(field, "client"))
        slot = &c->profile, is_json = 1;
    else if (!strcmp(field, "data"))
        slot = &c->data, is_json = 1;
    else
        return -1;
    if (!strcmp(field, "status") && !value)
        value = "open";
    if (is_json && !value)
        value = strcmp(field, "tags") == 0 ? "[]" : "{}";
    if ((*slot == NULL && value == NULL) || (*slot && value && strcmp(*slot, value) == 0))
        return 0; /* unchanged: nothing to write or journal */
    if (strcmp(field, "data") != 0) {
        void (*put)(const char *, const char *) = is_json ? ev_raw : ev_str;
        ev_begin();
        put("from", *slot);
        put("to", value);
        journal_built(c, field);
    }
    free(*slot);
    *slot = dup_or_null(value);
    sb_conv_persist(c);
    return 0;
}

/* Idempotency keys */

int sb_conv_seen(const char *channel, const char *key, const char **conversation_id, const char **message_id)
{
    char *k = join_key(channel, key);
    struct seen **found = tfind(&k, &seen_keys, cmp_key);
    free(k);
    if (!found || (*found)->created < sb_now_wall() - settings.dedupe_window)
        return 0;
    *conversation_id = (*found)->conversation_id;
    *message_id = (*found)->message_id;
    return 1;
}

static void remember(const char *channel, const char *key, const char *conversation_id, const char *message_id,
                     double created)
{
    struct seen *s = sb_xcalloc(1, sizeof *s), **found;
    s->key = join_key(channel, key);
    snprintf(s->conversation_id, sizeof s->conversation_id, "%s", conversation_id);
    snprintf(s->message_id, sizeof s->message_id, "%s", message_id);
    s->created = created;
    found = tsearch(s, &seen_keys, cmp_key);
    if (*found != s) {
        /* an expired entry with the same key: reuse it */
        memcpy((*found)->conversation_id, s->conversation_id, sizeof s->conversation_id);
        memcpy((*found)->message_id, s->message_id, sizeof s->message_id);
        (*found)->created = created;
        seen_free(s);
    }
}

void sb_conv_remember(const char *channel, const char *key, const char *conversation_id, const char *message_id)
{
    struct store_op *op = store_op_new(STORE_IDEMP_INSERT);
    double now = sb_now_wall();
    remember(channel, key, conversation_id, message_id, now);
    store_op_str(op, channel);
    store_op_str(op, key);
    store_op_str(op, conversation_id);
    store_op_str(op, message_id);
    store_op_real(op, now);
    note(store_submit(op));
}

static struct seen **prune_list;
static size_t prune_len, prune_cap;
static double prune_before;

static void collect_old(const void *node, VISIT which, void *closure)
{
    struct seen *s = *(struct seen *const *)node;
    (void)closure;
    if ((which == postorder || which == leaf) && s->created < prune_before) {
        if (prune_len == prune_cap) {
            prune_cap = prune_cap ? prune_cap * 2 : 64;
            prune_list = sb_xrealloc(prune_list, prune_cap * sizeof *prune_list);
        }
        prune_list[prune_len++] = s;
    }
}

void sb_conv_prune_seen(void)
{
    size_t i;
    prune_before = sb_now_wall() - settings.dedupe_window;
    prune_len = 0;
    twalk_r(seen_keys, collect_old, NULL);
    for (i = 0; i < prune_len; i++) {
        tdelete(prune_list[i], &seen_keys, cmp_key);
        seen_free(prune_list[i]);
    }
    free(prune_list);
    prune_list = NULL;
    prune_len = prune_cap = 0;
}

/* Start-up loading */

static const char *col(const struct store_row *r, int i) { return r->text[i]; }

static void load_conv_row(void *arg, const struct store_row *r)
{
    struct sb_conv *c = sb_xcalloc(1, sizeof *c);
    (void)arg;
    snprintf(c->id, sizeof c->id, "%s", col(r, 0));
    c->channel = sb_xstrdup(col(r, 1));
    c->client_id = sb_xstrdup(col(r, 2));
    if (sb_conv_parse_state(col(r, 3), &c->state))
        c->state = SB_CONV_CLOSED;
    c->desk = dup_or_null(col(r, 4));
    c->group = dup_or_null(col(r, 5));
    c->agent = dup_or_null(col(r, 6));
    c->status = sb_xstrdup(col(r, 7) ? col(r, 7) : "open");
    c->tags = sb_xstrdup(col(r, 8) ? col(r, 8) : "[]");
    c->profile = sb_xstrdup(col(r, 9) ? col(r, 9) : "{}");
    c->data = sb_xstrdup(col(r, 10) ? col(r, 10) : "{}");
    c->last_seq = (int64_t)r->num[11];
    c->created = r->num[12];
    c->updated = r->num[13];
    index_conv(c);
}

static void load_msg_row(void *arg, const struct store_row *r)
{
    struct sb_conv *c = sb_conv_get(col(r, 0));
    struct sb_msg *m;
    (void)arg;
    if (!c)
        return;
    m = sb_xcalloc(1, sizeof *m);
    m->seq = (int64_t)r->num[1];
    snprintf(m->id, sizeof m->id, "%s", col(r, 2));
    m->author_kind = sb_xstrdup(col(r, 3));
    m->author_name = dup_or_null(col(r, 4));
    m->author_id = dup_or_null(col(r, 5));
    m->text = sb_xstrdup(col(r, 6) ? col(r, 6) : "");
    m->attachments = sb_xstrdup(col(r, 7) ? col(r, 7) : "[]");
    m->buttons = sb_xstrdup(col(r, 8) ? col(r, 8) : "[]");
    m->provider_ids = sb_xstrdup(col(r, 9) ? col(r, 9) : "{}");
    m->created = r->num[10];
    ring_push(c, m);
}

static void load_seen_row(void *arg, const struct store_row *r)
{
    (void)arg;
    remember(col(r, 0), col(r, 1), col(r, 2), col(r, 3), r->num[4]);
}

int sb_conv_load(void)
{
    store_set_flush_hook(flush_dirty);
    next_event_id = store_max_id("events") + 1;
    if (store_load_conversations(load_conv_row, NULL) ||
        store_load_recent_messages(settings.recent_messages, load_msg_row, NULL) ||
        store_load_idempotency(sb_now_wall() - settings.dedupe_window, load_seen_row, NULL))
        return -1;
    return 0;
}

void sb_conv_free_all(void)
{
    dirty_head = NULL;
    if (scratch)
        evbuffer_free(scratch);
    scratch = NULL;
    tdestroy(by_client, client_key_free);
    tdestroy(by_id, conv_free);
    tdestroy(seen_keys, seen_free);
    by_client = by_id = seen_keys = NULL;
    nconv = nopen = 0;
}
