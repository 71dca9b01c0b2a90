/* Conversations in memory: loading one (and older messages) from the store
 * when a job asks for it, and dropping idle or closed ones again. */
#include "conv_int.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "util.h"

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
    c->tags = cv_json_dup(r->text[8], cv_empty_array);
    c->profile = cv_json_dup(r->text[9], cv_empty_object);
    c->data = cv_json_dup(r->text[10], cv_empty_object);
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
                cv_index(c);
            } else if (tag == 1 && c && r.text[0] && r.text[1]) {
                struct seen_key *old = cv_key_put(c, r.text[0], r.text[1], r.num[2]);
                if (old)
                    cv_seen_free(old);
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
    store_fetch_conversation(id, channel, client_id, sb_now_wall() - cv_settings.dedupe_window, load_done, l);
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
    m->author_kind = cv_author_kind(r->text[3]);
    if (!m->author_kind)
        m->author_kind = cv_author_kinds[3];
    m->author_name = col_dup(r, 4);
    m->author_id = col_dup(r, 5);
    m->text_len = r->text[6] ? r->len[6] : 0;
    m->text = sb_xmalloc(m->text_len + 1);
    if (m->text_len)
        memcpy(m->text, r->text[6], m->text_len);
    m->text[m->text_len] = '\0';
    m->attachments = cv_json_dup(r->text[7], cv_empty_array);
    m->buttons = cv_json_dup(r->text[8], cv_empty_array);
    m->provider_ids = cv_json_dup(r->text[9], cv_empty_object);
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
                cv_msg_free(older[i]);
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
    if ((which == postorder || which == leaf) && s->created < sweep_wall - cv_settings.dedupe_window) {
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
            tdelete(old_keys[i], &c->keys, cv_cmp_key);
            cv_seen_free(old_keys[i]);
        }
    }
    if (c->owner || c->waiters || c->dirty || c->write_seq > store_committed_seq())
        return;
    idle = sweep_mono - c->last_used;
    if (c->state == SB_CONV_CLOSED ? idle < 1.0 : idle < cv_settings.idle_unload)
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
    twalk_r(cv_by_id, collect_idle, NULL);
    for (i = 0; i < sweep_len; i++)
        cv_unindex(sweep_list[i]);
    free(sweep_list);
    sweep_list = NULL;
    sweep_len = sweep_cap = 0;
    free(old_keys);
    old_keys = NULL;
    old_keys_cap = nold_keys = 0;
    return sweep_held;
}

