#include "conv_int.h"

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

void *cv_by_id;         /* tsearch: struct sb_conv * by id */
static void *cv_by_client;     /* tsearch: struct client_key * by channel + client id */
size_t cv_nall, cv_nopen, cv_nloaded;
struct sb_conv_settings cv_settings = { 20, 86400, 300 };
static struct sb_conv *cv_dirty_head;

struct client_key {
    char *key;              /* channel "\x1f" client_id */
    struct sb_conv *conv;
};


const char *const cv_state_names[SB_CONV_STATE_COUNT] = { "bot", "queued", "agent", "closed" };
const char *const cv_author_kinds[5] = { "client", "bot", "agent", "system", "note" };

/* cv_allowed[from][to] */
const unsigned char cv_allowed[SB_CONV_STATE_COUNT][SB_CONV_STATE_COUNT] = {
    /* to:        bot queued agent closed */
    /* bot    */ { 0, 1, 1, 1 },
    /* queued */ { 1, 0, 1, 1 },
    /* agent  */ { 1, 1, 0, 1 },
    /* closed */ { 1, 0, 0, 0 },
};

void sb_conv_configure(const struct sb_conv_settings *s)
{
    cv_settings = *s;
    if (cv_settings.recent_messages < 1)
        cv_settings.recent_messages = 1;
}

const char *sb_conv_state_name(enum sb_conv_state s) { return cv_state_names[s]; }

int sb_conv_parse_state(const char *name, enum sb_conv_state *out)
{
    int i;
    for (i = 0; i < SB_CONV_STATE_COUNT; i++)
        if (strcmp(name, cv_state_names[i]) == 0) {
            *out = (enum sb_conv_state)i;
            return 0;
        }
    return -1;
}

int sb_conv_transition_allowed(enum sb_conv_state from, enum sb_conv_state to) { return cv_allowed[from][to]; }

size_t sb_conv_count(void) { return cv_nall; }
size_t sb_conv_open_count(void) { return cv_nopen; }
size_t sb_conv_loaded_count(void) { return cv_nloaded; }

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

const char cv_empty_array[] = "[]", cv_empty_object[] = "{}";

char *cv_json_dup(const char *s, const char *empty)
{
    if (!s || strcmp(s, empty) == 0)
        return (char *)empty;
    if (strcmp(s, cv_empty_array) == 0)
        return (char *)cv_empty_array;
    if (strcmp(s, cv_empty_object) == 0)
        return (char *)cv_empty_object;
    return sb_xstrdup(s);
}

void cv_json_free(char *s)
{
    if (s != cv_empty_array && s != cv_empty_object)
        free(s);
}


const char *cv_author_kind(const char *s)
{
    size_t i;
    for (i = 0; i < sizeof cv_author_kinds / sizeof *cv_author_kinds; i++)
        if (s && strcmp(s, cv_author_kinds[i]) == 0)
            return cv_author_kinds[i];
    return NULL;
}

static int cv_cmp_id(const void *a, const void *b)
{
    return strcmp(((const struct sb_conv *)a)->id, ((const struct sb_conv *)b)->id);
}

int cv_cmp_key(const void *a, const void *b)
{
    /* struct client_key and struct seen_key both start with the key */
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *cv_join_key(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *k = sb_xmalloc(la + lb + 2);
    memcpy(k, a, la);
    k[la] = '\x1f';
    memcpy(k + la + 1, b, lb + 1);
    return k;
}

void cv_msg_free(struct sb_msg *m)
{
    if (!m)
        return;
    free(m->author_name);
    free(m->author_id);
    free(m->text);
    cv_json_free(m->attachments);
    cv_json_free(m->buttons);
    cv_json_free(m->provider_ids);
    free(m);
}

void cv_seen_free(void *p)
{
    struct seen_key *s = p;
    free(s->key);
    free(s);
}

static void cv_free(struct sb_conv *c)
{
    int i;
    free(c->channel);
    free(c->client_id);
    free(c->desk);
    free(c->group);
    free(c->agent);
    free(c->status);
    cv_json_free(c->tags);
    cv_json_free(c->profile);
    cv_json_free(c->data);
    for (i = 0; i < c->nrecent; i++)
        cv_msg_free(c->recent[i]);
    free(c->recent);
    tdestroy(c->keys, cv_seen_free);
    free(c);
}

static void cv_client_key_free(void *p)
{
    struct client_key *k = p;
    free(k->key);
    free(k);
}

static void cv_dirty_unlink(struct sb_conv *c)
{
    if (!c->dirty)
        return;
    if (c->dirty_prev)
        c->dirty_prev->dirty_next = c->dirty_next;
    else
        cv_dirty_head = c->dirty_next;
    if (c->dirty_next)
        c->dirty_next->dirty_prev = c->dirty_prev;
    c->dirty_prev = c->dirty_next = NULL;
    c->dirty = 0;
}

void cv_index(struct sb_conv *c)
{
    struct client_key *k = sb_xcalloc(1, sizeof *k);
    k->key = cv_join_key(c->channel, c->client_id);
    k->conv = c;
    tsearch(c, &cv_by_id, cv_cmp_id);
    tsearch(k, &cv_by_client, cv_cmp_key);
    cv_nloaded++;
    c->last_used = sb_now_mono();
}

/* Takes c out of memory's indexes; the struct goes with its last reference. */
void cv_unindex(struct sb_conv *c)
{
    char *key;
    struct client_key **found;
    if (c->gone)
        return;
    key = cv_join_key(c->channel, c->client_id);
    found = tfind(&key, &cv_by_client, cv_cmp_key);
    if (found && (*found)->conv == c) {
        struct client_key *k = *found;
        tdelete(k, &cv_by_client, cv_cmp_key);
        cv_client_key_free(k);
    }
    free(key);
    tdelete(c, &cv_by_id, cv_cmp_id);
    cv_dirty_unlink(c);
    c->gone = 1;
    cv_nloaded--;
    if (c->refs == 0)
        cv_free(c);
}

void sb_conv_ref(struct sb_conv *c) { c->refs++; }

void sb_conv_unref(struct sb_conv *c)
{
    if (--c->refs == 0 && c->gone)
        cv_free(c);
}

struct sb_conv *sb_conv_loaded(const char *id)
{
    struct sb_conv probe, **found;
    if (strlen(id) != SB_ID_LEN)
        return NULL;
    memcpy(probe.id, id, SB_ID_LEN + 1);
    found = tfind(&probe, &cv_by_id, cv_cmp_id);
    return found ? *found : NULL;
}

struct sb_conv *sb_conv_loaded_by_client(const char *channel, const char *client_id)
{
    char *key = cv_join_key(channel, client_id);
    struct client_key **found = tfind(&key, &cv_by_client, cv_cmp_key);
    free(key);
    return found ? (*found)->conv : NULL;
}

/* Rows */

static void row_of(const struct sb_conv *c, struct store_conversation *r)
{
    r->id = c->id;
    r->channel = c->channel;
    r->client_id = c->client_id;
    r->state = cv_state_names[c->state];
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
    while (cv_dirty_head) {
        struct sb_conv *c = cv_dirty_head;
        cv_dirty_unlink(c);
        write_row(c);
    }
}

void cv_mark_dirty(struct sb_conv *c)
{
    if (c->dirty || c->gone)
        return;
    c->dirty = 1;
    c->dirty_prev = NULL;
    c->dirty_next = cv_dirty_head;
    if (cv_dirty_head)
        cv_dirty_head->dirty_prev = c;
    cv_dirty_head = c;
}

/* Ownership */

static void hand_over(struct sb_conv *c);

static void lock_end(void *data, uint64_t seq)
{
    struct sb_conv *c = data;
    int cap = cv_settings.recent_messages;
    if (c->mutated) {
        c->mutated = 0;
        c->write_seq = seq;
        cv_mark_dirty(c);
    }
    /* the window grew while the owner appended; keep the newest */
    if (c->nrecent > cap) {
        int drop = c->nrecent - cap, i;
        for (i = 0; i < drop; i++)
            cv_msg_free(c->recent[i]);
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

void cv_take(struct sb_conv *c, struct sb_txn *t)
{
    c->owner = t;
    sb_conv_ref(c);
    /* A row still waiting for the flush holds what the previous owner
     * wrote: it goes into the open batch now, before t changes anything. */
    if (c->dirty) {
        cv_dirty_unlink(c);
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
        cv_take(c, w->txn);
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
        cv_take(c, t);
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

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_family(out, "switchboard_conversations", "gauge",
                      "Conversations stored (all), not closed (open), and held in memory (loaded).");
    evbuffer_add_printf(out, "switchboard_conversations{state=\"all\"} %zu\n"
                             "switchboard_conversations{state=\"open\"} %zu\n"
                             "switchboard_conversations{state=\"loaded\"} %zu\n", cv_nall, cv_nopen, cv_nloaded);
}

int sb_conv_start(void)
{
    int64_t all = 0, open = 0;
    store_set_flush_hook(flush_dirty);
    if (store_count_conversations(&all, &open))
        return -1;
    cv_nall = (size_t)all;
    cv_nopen = (size_t)open;
    sb_metrics_register(render_metrics);
    return 0;
}

static void free_tree_conv(void *p)
{
    struct sb_conv *c = p;
    /* at exit every runtime is closed: no handle refers to it any more */
    cv_free(c);
}

void sb_conv_free_all(void)
{
    cv_dirty_head = NULL;
    cv_change_free();
    tdestroy(cv_by_client, cv_client_key_free);
    tdestroy(cv_by_id, free_tree_conv);
    cv_by_client = cv_by_id = NULL;
    cv_nall = cv_nopen = cv_nloaded = 0;
}
