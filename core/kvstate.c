#include "kvstate.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "txn.h"
#include "util.h"

struct kv_entry {
    char *key;
    char *json;
    size_t json_len;
    double expires;   /* wall clock; 0: never */
};

/* A change kept aside by a live transaction; json NULL deletes. Once the
 * transaction ended it remembers what it replaced, to put it back. */
struct kv_change {
    struct sb_txn *txn;
    char *key;
    char *json;
    size_t json_len;
    double expires;
    struct kv_entry *replaced;   /* after end: the entry it replaced (or NULL) */
    struct kv_change *prev, *next;
};

static void *tree;
static size_t count;
static struct kv_change *pending;   /* changes of live transactions, newest first */

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct kv_entry *)a)->key, ((const struct kv_entry *)b)->key);
}

static void entry_free(void *p)
{
    struct kv_entry *e = p;
    if (!e)
        return;
    free(e->key);
    free(e->json);
    free(e);
}

static struct kv_entry *lookup(const char *key)
{
    struct kv_entry probe, **found;
    probe.key = (char *)key;
    found = tfind(&probe, &tree, by_key);
    return found ? *found : NULL;
}

static void pending_unlink(struct kv_change *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        pending = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void change_free(struct kv_change *c)
{
    free(c->key);
    free(c->json);
    free(c);
}

/* Puts e in the tree in place of what is there; returns what was there. */
static struct kv_entry *tree_replace(const char *key, struct kv_entry *e)
{
    struct kv_entry *old = lookup(key);
    if (old) {
        tdelete(old, &tree, by_key);
        count--;
    }
    if (e) {
        tsearch(e, &tree, by_key);
        count++;
    }
    return old;
}

static void change_end(void *data, uint64_t seq)
{
    struct kv_change *c = data;
    struct kv_entry *e = NULL;
    (void)seq;
    pending_unlink(c);
    if (c->json) {
        e = sb_xcalloc(1, sizeof *e);
        e->key = sb_xstrdup(c->key);
        e->json = c->json;
        e->json_len = c->json_len;
        e->expires = c->expires;
        c->json = NULL;
    }
    c->replaced = tree_replace(c->key, e);
}

static void change_abort(void *data)
{
    struct kv_change *c = data;
    pending_unlink(c);
    change_free(c);
}

static void change_undo(void *data)
{
    struct kv_change *c = data;
    entry_free(tree_replace(c->key, c->replaced));
    c->replaced = NULL;
    change_free(c);
}

static void change_commit(void *data)
{
    struct kv_change *c = data;
    entry_free(c->replaced);
    change_free(c);
}

static const struct sb_txn_effect_ops change_ops = { change_end, change_abort, change_undo, change_commit };

static void keep_aside(struct sb_txn *t, const char *key, const char *json, size_t json_len, double expires)
{
    struct kv_change *c = sb_xcalloc(1, sizeof *c);
    c->txn = t;
    c->key = sb_xstrdup(key);
    if (json) {
        c->json = sb_xmalloc(json_len + 1);
        memcpy(c->json, json, json_len);
        c->json[json_len] = '\0';
        c->json_len = json_len;
    }
    c->expires = expires;
    c->next = pending;
    if (pending)
        pending->prev = c;
    pending = c;
    sb_txn_effect(t, &change_ops, c);
}

static const struct kv_change *own_change(struct sb_txn *t, const char *key)
{
    const struct kv_change *c;
    for (c = pending; c && t; c = c->next)
        if (c->txn == t && strcmp(c->key, key) == 0)
            return c;
    return NULL;
}

void sb_kv_set(struct sb_txn *t, const char *key, const char *json, size_t json_len, double ttl)
{
    double expires = ttl > 0 ? sb_now_wall() + ttl : 0;
    keep_aside(t, key, json, json_len, expires);
    sb_txn_write(t, store_put_kv(key, json, json_len, expires));
}

const char *sb_kv_get(struct sb_txn *t, const char *key, size_t *len)
{
    const struct kv_change *c = own_change(t, key);
    const struct kv_entry *e;
    double now = sb_now_wall();
    if (c) {
        if (!c->json || (c->expires && c->expires <= now))
            return NULL;
        *len = c->json_len;
        return c->json;
    }
    e = lookup(key);
    if (!e || (e->expires && e->expires <= now))
        return NULL;
    *len = e->json_len;
    return e->json;
}

int sb_kv_delete(struct sb_txn *t, const char *key)
{
    size_t len;
    int existed = sb_kv_get(t, key, &len) != NULL;
    if (existed) {
        keep_aside(t, key, NULL, 0, 0);
        sb_txn_write(t, store_delete_kv(key));
    }
    return existed;
}

static void load_row(void *arg, const struct store_row *r)
{
    struct kv_entry *e;
    double expires = r->text[2] ? r->num[2] : 0;
    (void)arg;
    if (!r->text[0] || !r->text[1] || (expires && expires <= sb_now_wall()))
        return;
    e = sb_xcalloc(1, sizeof *e);
    e->key = sb_xstrdup(r->text[0]);
    e->json_len = r->len[1];
    e->json = sb_xmalloc(e->json_len + 1);
    memcpy(e->json, r->text[1], e->json_len);
    e->json[e->json_len] = '\0';
    e->expires = expires;
    entry_free(tree_replace(e->key, e));
}

int sb_kv_load(void)
{
    return store_load_kv(load_row, NULL);
}

static struct kv_entry **expired;
static size_t nexpired, expired_cap;
static double sweep_now;

static void collect_expired(const void *node, VISIT which, void *closure)
{
    struct kv_entry *e = *(struct kv_entry *const *)node;
    (void)closure;
    if ((which == postorder || which == leaf) && e->expires && e->expires <= sweep_now) {
        if (nexpired == expired_cap) {
            expired_cap = expired_cap ? expired_cap * 2 : 64;
            expired = sb_xrealloc(expired, expired_cap * sizeof *expired);
        }
        expired[nexpired++] = e;
    }
}

size_t sb_kv_sweep(void)
{
    size_t i, n;
    sweep_now = sb_now_wall();
    nexpired = 0;
    twalk_r(tree, collect_expired, NULL);
    n = nexpired;
    for (i = 0; i < n; i++) {
        store_submit_system(store_delete_kv(expired[i]->key));
        entry_free(tree_replace(expired[i]->key, NULL));
    }
    free(expired);
    expired = NULL;
    nexpired = expired_cap = 0;
    return n;
}

size_t sb_kv_count(void) { return count; }

void sb_kv_free_all(void)
{
    /* memory only: what is stored stays stored */
    tdestroy(tree, entry_free);
    tree = NULL;
    count = 0;
}
