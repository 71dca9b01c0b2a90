/* Outbox entries: adding one as part of a transaction, sending a dead
 * letter again, reading entries back from the store, and the secrets a call
 * gets when it is made. */
#include "outbox_int.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "conv.h"
#include "handler_use.h"
#include "httpclient.h"
#include "store.h"
#include "txn.h"
#include "util.h"

struct ob_entry *ob_entry_from_row(const struct store_row *r)
{
    struct ob_entry *e = sb_xcalloc(1, sizeof *e);
    e->id = (int64_t)r->num[0];
    e->conversation_id = sb_xstrdup_or_null(r->text[1]);
    e->kind = sb_xstrdup(r->text[3] ? r->text[3] : "http");
    e->target = sb_xstrdup(r->text[4] ? r->text[4] : "");
    e->method = sb_xstrdup_or_null(r->text[5]);
    e->url = sb_xstrdup_or_null(r->text[6]);
    e->headers = sb_xstrdup_or_null(r->text[7]);
    if (r->text[8]) {
        e->body_len = r->len[8];
        e->body = sb_xmalloc(e->body_len + 1);
        memcpy(e->body, r->text[8], e->body_len);
        e->body[e->body_len] = '\0';
    }
    e->data = sb_xstrdup_or_null(r->text[9]);
    e->on_result = sb_xstrdup_or_null(r->text[10]);
    e->idem_key = sb_xstrdup(r->text[11] ? r->text[11] : "");
    e->attempts = (int)r->num[12];
    e->next_attempt = r->num[13];
    e->created = r->num[14];
    e->hints = r->n > 15 ? sb_xstrdup_or_null(r->text[15]) : NULL;
    return e;
}

/* Secrets */

static int path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

char *sb_outbox_expand(const char *text, char *err, size_t err_size)
{
    struct evbuffer *out;
    const char *p = text;
    char *result = NULL;
    size_t len;
    if (!text || !strstr(text, "${"))
        return text ? sb_xstrdup(text) : NULL;
    out = evbuffer_new();
    while (*p) {
        const char *start = strstr(p, "${"), *end;
        char path[256], *value;
        size_t n;
        if (!start) {
            evbuffer_add(out, p, strlen(p));
            break;
        }
        evbuffer_add(out, p, (size_t)(start - p));
        for (end = start + 2; path_char(*end); end++)
            ;
        n = (size_t)(end - start - 2);
        if (*end != '}' || n == 0 || n >= sizeof path) {
            evbuffer_add(out, start, 2);   /* not a reference: kept as it is */
            p = start + 2;
            continue;
        }
        memcpy(path, start + 2, n);
        path[n] = '\0';
        value = ob_resolve_secret ? ob_resolve_secret(path) : NULL;
        if (!value) {
            snprintf(err, err_size, "secret %s is not configured", path);
            goto done;
        }
        evbuffer_add(out, value, strlen(value));
        free(value);
        p = end + 1;
    }
    len = evbuffer_get_length(out);
    result = sb_xmalloc(len + 1);
    evbuffer_remove(out, result, len);
    result[len] = '\0';
done:
    evbuffer_free(out);
    return result;
}

/* The handlers an entry names (handler_use.h): a job's target, a result handler. */
void ob_count_handlers(const char *kind, const char *target, const char *on_result, long delta)
{
    if (kind && !strcmp(kind, "job"))
        sb_handler_use("outbox job", target, delta);
    sb_handler_use("outbox result handler", on_result, delta);
}

/* Adding, as part of a transaction */

static void addition_end(void *data, uint64_t seq)
{
    struct addition *a = data;
    struct ob_lane *lane = ob_lane_get(a->lane);
    a->entry->commit_seq = seq;
    ob_counters.pending++;
    if (!strcmp(a->entry->kind, "job"))
        a->job_handler = sb_xstrdup(a->entry->target);
    a->result_handler = sb_xstrdup_or_null(a->entry->on_result);
    ob_count_handlers("job", a->job_handler, a->result_handler, 1);
    if (lane->more || lane->refilling || lane->nmem >= LANE_WINDOW) {
        /* behind entries still in the store: it waits there too */
        if (lane->refilling)
            lane->added_while_refilling = 1;
        lane->more = 1;
        ob_entry_free(a->entry);
        a->entry = NULL;
        a->in_memory = 0;
    } else {
        ob_lane_insert(lane, a->entry, 0);
        a->entry->added_by = a;
        a->in_memory = 1;
    }
    ob_kick(lane);
}

static void addition_free(struct addition *a)
{
    free(a->job_handler);
    free(a->result_handler);
    free(a->lane);
    free(a);
}

static void addition_abort(void *data)
{
    struct addition *a = data;
    ob_entry_free(a->entry);
    addition_free(a);
}

static void addition_undo(void *data)
{
    struct addition *a = data;
    ob_counters.pending--;
    ob_count_handlers("job", a->job_handler, a->result_handler, -1);
    if (a->in_memory && a->entry) {
        struct ob_lane *lane = a->entry->lane;
        if (a->entry->call) {
            sb_http_cancel(a->entry->call);
            a->entry->call = NULL;
            ob_attempt_over(a->entry);
        }
        ob_lane_remove(a->entry);
        ob_entry_free(a->entry);
        ob_kick(lane);
    }
    addition_free(a);
}

static void addition_commit(void *data)
{
    struct addition *a = data;
    if (a->entry)
        a->entry->added_by = NULL;
    addition_free(a);
}

static const struct sb_txn_effect_ops addition_ops = { addition_end, addition_abort, addition_undo, addition_commit };

static const char *check_new(const struct sb_outbox_new *n)
{
    if (!n->lane || !n->kind || !n->target || (strcmp(n->kind, "http") && strcmp(n->kind, "job")))
        return "lane, kind (http|job) and target are required";
    /* a URL that is itself a secret of the config (a Slack webhook) is
     * checked when it is filled in, at each attempt */
    if (!strcmp(n->kind, "http") && (!n->url || (strncasecmp(n->url, "http://", 7) && strncasecmp(n->url, "https://", 8) &&
                                                 strncmp(n->url, "${", 2))))
        return "url must start with http://, https:// or a ${...} reference";
    if (n->headers && strchr(n->headers, '\r'))
        return "headers must not contain CR";
    if (n->hints)
        return sb_outbox_hints_check(n->hints);
    return NULL;
}

int64_t sb_outbox_add(struct sb_txn *t, const struct sb_outbox_new *n, char *err, size_t err_size)
{
    struct ob_entry *e;
    struct addition *a;
    struct store_outbox_entry row;
    char key[SB_ID_LEN + 1];
    const char *bad = check_new(n);
    if (bad) {
        snprintf(err, err_size, "%s", bad);
        return 0;
    }
    e = sb_xcalloc(1, sizeof *e);
    e->id = ob_next_id++;
    e->conversation_id = sb_xstrdup_or_null(n->conversation_id);
    e->kind = sb_xstrdup(n->kind);
    e->target = sb_xstrdup(n->target);
    e->method = sb_xstrdup_or_null(n->method);
    e->url = sb_xstrdup_or_null(n->url);
    e->headers = sb_xstrdup_or_null(n->headers);
    if (n->body) {
        e->body = sb_xmalloc(n->body_len + 1);
        memcpy(e->body, n->body, n->body_len);
        e->body[n->body_len] = '\0';
        e->body_len = n->body_len;
    }
    e->data = sb_xstrdup_or_null(n->data);
    e->on_result = sb_xstrdup_or_null(n->on_result);
    e->hints = sb_xstrdup_or_null(n->hints);
    sb_new_id(key);
    e->idem_key = sb_xstrdup(key);
    e->created = sb_now_wall();

    memset(&row, 0, sizeof row);
    row.id = e->id;
    row.conversation_id = e->conversation_id;
    row.lane = n->lane;
    row.kind = e->kind;
    row.target = e->target;
    row.method = e->method;
    row.url = e->url;
    row.headers = e->headers;
    row.body = e->body;
    row.body_len = e->body_len;
    row.data = e->data;
    row.on_result = e->on_result;
    row.idem_key = e->idem_key;
    row.created = e->created;
    row.hints = e->hints;
    sb_txn_write(t, store_insert_outbox(&row));

    a = sb_xcalloc(1, sizeof *a);
    a->entry = e;
    a->lane = sb_xstrdup(n->lane);
    sb_txn_effect(t, &addition_ops, a);
    return e->id;
}

int sb_outbox_requeue(struct sb_txn *t, const struct store_row *r, char *err, size_t err_size)
{
    struct ob_entry *e;
    struct addition *a;
    int64_t *id;
    if (r->n < 17 || !r->text[16] || strcmp(r->text[16], "dead") != 0) {
        snprintf(err, err_size, "not a dead letter");
        return -1;
    }
    if (tfind(&(int64_t){ (int64_t)r->num[0] }, &ob_requeued_ids, ob_cmp_id)) {
        snprintf(err, err_size, "already sent again");
        return -1;
    }
    e = ob_entry_from_row(r);
    e->attempts = 0;
    e->next_attempt = 0;
    e->created = sb_now_wall();   /* a new life: max_age counts from now */
    id = sb_xmalloc(sizeof *id);
    *id = e->id;
    tsearch(id, &ob_requeued_ids, ob_cmp_id);
    e->requeued = 1;
    sb_txn_write(t, store_update_outbox(e->id, "pending", 0, 0, NULL, 0, e->created));
    a = sb_xcalloc(1, sizeof *a);
    a->entry = e;
    a->lane = sb_xstrdup(r->text[2] ? r->text[2] : "-");
    sb_txn_effect(t, &addition_ops, a);
    return 0;
}

/* Start-up */

static void load_row(void *arg, const struct store_row *r)
{
    struct ob_entry *e = ob_entry_from_row(r);
    (void)arg;
    ob_lane_insert(ob_lane_get(r->text[2] ? r->text[2] : "-"), e, 0);
}

static void count_row(void *arg, const struct store_row *r)
{
    (void)arg;
    ob_count_handlers(r->text[0], r->text[1], r->text[2], (long)r->num[3]);
}

static void lane_has_more(void *arg, const char *name)
{
    (void)arg;
    ob_lane_get(name)->more = 1;
}

int sb_outbox_load(void)
{
    int64_t total = 0;
    ob_next_id = store_max_outbox_id() + 1;
    ob_register_metrics();
    if (store_load_outbox_pending(LANE_WINDOW, load_row, NULL, lane_has_more, &total))
        return -1;
    ob_counters.pending = (size_t)total;
    return store_load_outbox_handlers(count_row, NULL);
}

