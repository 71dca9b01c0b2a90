#include "outbox.h"

#include <math.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "conv.h"
#include "httpclient.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "store.h"
#include "txn.h"
#include "util.h"

#define MAX_HEADER_LINES 64
#define LANE_WINDOW 32            /* entries of one lane kept in memory */
#define LANES_PER_TURN 256        /* lanes looked at per loop turn */

struct ob_lane;
struct addition;

struct ob_entry {
    int64_t id;
    char *conversation_id, *kind, *target, *method, *url, *headers, *body, *data, *on_result, *idem_key;
    size_t body_len;
    int attempts;
    double next_attempt, created;
    uint64_t commit_seq;          /* the batch its insert joined: never attempted before that commits */
    int requeued;                 /* in the set of requeued dead letters */
    struct addition *added_by;    /* the addition that may still take it back (batch failure) */
    struct ob_lane *lane;
    struct ob_entry *prev, *next;
    struct sb_http_call *call;    /* http attempt in flight */
    int running;                  /* a handler job runs for it */
};

struct ob_lane {
    char *name;
    struct ob_entry *head, *tail;
    int nmem;                     /* entries in memory */
    int more;                     /* the store holds pending entries of this lane not in memory */
    int refilling;                /* a fetch of the next window is on its way */
    int added_while_refilling;
    int busy;                     /* an entry of it is being attempted */
    int waiting_commit;
    int queued;                   /* in the ready list, waiting for a delivery slot */
    int kick_queued;              /* in the kick list */
    int uncommitted;              /* delivered entries whose mark has not committed yet */
    uint64_t refill_seq;          /* the batch a refill read after: its entries wait for it */
    struct event *timer;
    struct ob_lane *next_ready, *next_kick;
};

static struct sb_outbox_settings settings = { 10, 86400, 1.0, 300, 64, 30, 0, 30 * 86400.0 };
static struct sb_outbox_counters counters;
static void *lanes;               /* tsearch by name */
static struct ob_lane *ready_head, *ready_tail;
static struct ob_lane *kick_head, *kick_tail;
static struct event *drain_ev;
static void *requeued_ids;        /* tsearch of int64_t ids */
static int64_t next_id = 1;
static int stopping, started, paused;
static sb_outbox_run_fn runner;
static sb_outbox_secret_fn resolve_secret;

const struct sb_outbox_counters *sb_outbox_counters(void) { return &counters; }
void sb_outbox_configure(const struct sb_outbox_settings *s) { settings = *s; }
void sb_outbox_set_runner(sb_outbox_run_fn fn) { runner = fn; }
void sb_outbox_set_secret_resolver(sb_outbox_secret_fn fn) { resolve_secret = fn; }

double sb_outbox_backoff(int attempt, double jitter01)
{
    double d = settings.backoff_base * pow(2.0, attempt > 1 ? attempt - 1 : 0);
    if (d > settings.backoff_max)
        d = settings.backoff_max;
    /* "equal jitter": never less than half the step, so retries still spread */
    return d * (0.5 + 0.5 * jitter01);
}

static int cmp_lane(const void *a, const void *b)
{
    return strcmp(((const struct ob_lane *)a)->name, ((const struct ob_lane *)b)->name);
}

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static char *dup_or_null(const char *s) { return s ? sb_xstrdup(s) : NULL; }

static void requeued_forget(struct ob_entry *e)
{
    int64_t **found;
    if (!e->requeued)
        return;
    found = tfind(&e->id, &requeued_ids, cmp_id);
    if (found) {
        int64_t *p = *found;
        tdelete(&e->id, &requeued_ids, cmp_id);
        free(p);
    }
    e->requeued = 0;
}

struct addition {
    struct ob_entry *entry;
    char *lane;
    int in_memory;                /* after end: in its lane (else only in the store) */
};

static void entry_free(struct ob_entry *e)
{
    requeued_forget(e);
    if (e->added_by)
        e->added_by->entry = NULL;
    free(e->conversation_id);
    free(e->kind);
    free(e->target);
    free(e->method);
    free(e->url);
    free(e->headers);
    free(e->body);
    free(e->data);
    free(e->on_result);
    free(e->idem_key);
    free(e);
}

/* Lanes are looked at from the loop, never from inside an outcome or a job */

static void drain(evutil_socket_t fd, short what, void *arg);

static void schedule_drain(void)
{
    if (!drain_ev)
        drain_ev = event_new(sb_base, -1, 0, drain, NULL);
    event_active(drain_ev, 0, 0);
}

static void kick(struct ob_lane *lane)
{
    if (lane->kick_queued)
        return;
    lane->kick_queued = 1;
    lane->next_kick = NULL;
    if (kick_tail)
        kick_tail->next_kick = lane;
    else
        kick_head = lane;
    kick_tail = lane;
    schedule_drain();
}

static void lane_timer_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    kick(arg);
}

static struct ob_lane *lane_get(const char *name)
{
    struct ob_lane probe, *lane, **found;
    probe.name = (char *)name;
    found = tfind(&probe, &lanes, cmp_lane);
    if (found)
        return *found;
    lane = sb_xcalloc(1, sizeof *lane);
    lane->name = sb_xstrdup(name);
    lane->timer = evtimer_new(sb_base, lane_timer_fired, lane);
    tsearch(lane, &lanes, cmp_lane);
    return lane;
}

static void lane_free(void *p)
{
    struct ob_lane *lane = p;
    while (lane->head) {
        struct ob_entry *e = lane->head;
        lane->head = e->next;
        entry_free(e);
    }
    event_free(lane->timer);
    free(lane->name);
    free(lane);
}

/* An empty, idle lane is dropped so lanes do not pile up per conversation. */
static void lane_maybe_drop(struct ob_lane *lane)
{
    if (lane->head || lane->busy || lane->waiting_commit || lane->queued || lane->kick_queued || lane->more ||
        lane->refilling || lane->uncommitted)
        return;
    tdelete(lane, &lanes, cmp_lane);
    lane_free(lane);
}

static void lane_insert(struct ob_lane *lane, struct ob_entry *e, int at_head)
{
    e->lane = lane;
    if (at_head) {
        e->prev = NULL;
        e->next = lane->head;
        if (lane->head)
            lane->head->prev = e;
        else
            lane->tail = e;
        lane->head = e;
    } else {
        e->next = NULL;
        e->prev = lane->tail;
        if (lane->tail)
            lane->tail->next = e;
        else
            lane->head = e;
        lane->tail = e;
    }
    lane->nmem++;
    counters.in_memory++;
}

static void lane_remove(struct ob_entry *e)
{
    struct ob_lane *lane = e->lane;
    if (e->prev)
        e->prev->next = e->next;
    else
        lane->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        lane->tail = e->prev;
    e->prev = e->next = NULL;
    lane->nmem--;
    counters.in_memory--;
}

/* Ends the current attempt on e's lane. */
static void attempt_over(struct ob_entry *e)
{
    e->lane->busy = 0;
    counters.in_flight--;
    if (ready_head)
        schedule_drain();
}

static void finished(struct ob_entry *e)
{
    struct ob_lane *lane = e->lane;
    lane_remove(e);
    counters.pending--;
    entry_free(e);
    kick(lane);
}

static void record_delivered(struct ob_entry *e, struct sb_txn *t)
{
    double now = sb_now_wall();
    struct store_op *op = settings.keep_delivered > 0
                              ? store_update_outbox(e->id, "delivered", e->attempts, e->next_attempt, NULL, now, 0)
                              : store_delete_outbox(e->id);
    if (t)
        sb_txn_write(t, op);
    else
        store_submit_system(op);
}

static void finish_delivered(struct ob_entry *e)
{
    record_delivered(e, NULL);
    counters.delivered++;
    attempt_over(e);
    finished(e);
}

static void finish_dead(struct ob_entry *e, const char *reason)
{
    char id[24], attempts[16];
    snprintf(id, sizeof id, "%lld", (long long)e->id);
    snprintf(attempts, sizeof attempts, "%d", e->attempts);
    sb_log(SB_LOG_WARN, "outbox: dead letter", "id", id, "target", e->target, "attempts", attempts,
           "reason", reason, NULL);
    store_submit_system(store_update_outbox(e->id, "dead", e->attempts, e->next_attempt, reason, sb_now_wall(), 0));
    counters.dead++;
    attempt_over(e);
    finished(e);
}

/* A failed attempt: retry later, or dead-letter when out of attempts/age. */
static void finish_failed(struct ob_entry *e, const char *reason, double retry_after)
{
    double now = sb_now_wall(), delay;
    char why[300];
    if (e->attempts >= settings.max_attempts) {
        snprintf(why, sizeof why, "%d attempts, last: %s", e->attempts, reason);
        finish_dead(e, why);
        return;
    }
    delay = retry_after >= 0 ? retry_after : sb_outbox_backoff(e->attempts, (double)random() / RAND_MAX);
    if (now + delay - e->created > settings.max_age) {
        snprintf(why, sizeof why, "older than %.0f s, last: %s", settings.max_age, reason);
        finish_dead(e, why);
        return;
    }
    e->next_attempt = now + delay;
    store_submit_system(store_update_outbox(e->id, "pending", e->attempts, e->next_attempt, reason, 0, 0));
    counters.retried++;
    attempt_over(e);
    kick(e->lane);
}

/* Retry-After: delta-seconds or an HTTP date. */
static double parse_retry_after(const char *v)
{
    char *end;
    long s;
    time_t t;
    if (!v)
        return -1;
    s = strtol(v, &end, 10);
    if (end != v && *end == '\0' && s >= 0)
        return (double)s;
    t = curl_getdate(v, NULL);
    if (t > 0) {
        double d = (double)t - sb_now_wall();
        return d > 0 ? d : 0;
    }
    return -1;
}

double sb_outbox_retry_after_in_body(const char *body, size_t len)
{
    /* Telegram's 429 carries the delay in the body as
     * {"parameters":{"retry_after":N}}; no header. A bounded scan for the
     * key is enough: the value is a plain integer. */
    static const char key[] = "\"retry_after\"";
    const char *p = body, *end = body + len;
    while (p && p < end) {
        const char *hit = memmem(p, (size_t)(end - p), key, sizeof key - 1);
        long v = 0;
        int digits = 0;
        if (!hit)
            break;
        p = hit + sizeof key - 1;
        while (p < end && (*p == ' ' || *p == ':'))
            p++;
        while (p < end && *p >= '0' && *p <= '9' && digits < 9) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (digits)
            return (double)v;
    }
    return -1;
}

/* Handlers */

static void run_handler(struct ob_entry *e, const char *handler, const struct sb_http_response *r)
{
    struct sb_outbox_job j;
    j.id = e->id;
    j.conversation_id = e->conversation_id;
    j.target = e->target;
    j.handler = handler;
    j.data = e->data;
    j.idem_key = e->idem_key;
    j.attempts = e->attempts;
    j.response = r;
    e->running = 1;
    runner((struct sb_outbox_attempt *)e, &j);
}

/* The delivery mark joined the handler's transaction: the entry leaves its
 * lane when that ends, and comes back at the head if its batch fails. */
static void delivered_end(void *data, uint64_t seq)
{
    struct ob_entry *e = data;
    (void)seq;
    counters.delivered++;
    attempt_over(e);
    lane_remove(e);
    counters.pending--;
    e->lane->uncommitted++;
    kick(e->lane);
}

static void delivered_undo(void *data)
{
    struct ob_entry *e = data;
    struct ob_lane *lane = e->lane;
    counters.delivered--;
    counters.pending++;
    lane->uncommitted--;
    lane_insert(lane, e, 1);
    kick(lane);
}

static void delivered_commit(void *data)
{
    struct ob_entry *e = data;
    struct ob_lane *lane = e->lane;
    lane->uncommitted--;
    entry_free(e);
    kick(lane);   /* dropped there if idle */
}

static const struct sb_txn_effect_ops delivered_ops = { delivered_end, NULL, delivered_undo, delivered_commit };

void sb_outbox_succeeded(struct sb_outbox_attempt *a, struct sb_txn *t)
{
    struct ob_entry *e = (struct ob_entry *)a;
    e->running = 0;
    if (stopping)
        return;
    record_delivered(e, t);
    sb_txn_effect(t, &delivered_ops, e);
}

void sb_outbox_failed(struct sb_outbox_attempt *a, const char *reason)
{
    struct ob_entry *e = (struct ob_entry *)a;
    char why[300];
    e->running = 0;
    if (stopping)
        return; /* stays pending in the store: attempted again after restart */
    snprintf(why, sizeof why, "%s handler failed: %s", strcmp(e->kind, "job") == 0 ? "job" : "result", reason);
    if (strcmp(e->kind, "job") == 0)
        finish_failed(e, why, -1);
    else
        finish_dead(e, why);  /* the call went through: repeating it would not fix the script */
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
        value = resolve_secret ? resolve_secret(path) : NULL;
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

static void http_done(void *arg, const struct sb_http_response *r)
{
    struct ob_entry *e = arg;
    char reason[300];
    e->call = NULL;
    if (!r->ok) {
        finish_failed(e, r->error, -1);
        return;
    }
    if (r->status >= 200 && r->status < 300) {
        if (e->on_result && runner)
            run_handler(e, e->on_result, r);
        else
            finish_delivered(e);
        return;
    }
    snprintf(reason, sizeof reason, "HTTP %ld", r->status);
    if (r->status >= 500 || r->status == 408)
        finish_failed(e, reason, -1);
    else if (r->status == 429) {
        double after = parse_retry_after(sb_http_header(r, "retry-after"));
        if (after < 0)
            after = sb_outbox_retry_after_in_body(r->body, r->body_len);
        finish_failed(e, reason, after);
    }
    else
        finish_dead(e, reason);
}

static void attempt_http(struct ob_entry *e)
{
    const char *lines[MAX_HEADER_LINES + 1];
    char *copy = NULL, *url = NULL, *save = NULL, *line;
    char idem[200], err[200];
    size_t n = 0, copy_len = 0;
    struct sb_http_request req;
    err[0] = '\0';
    url = sb_outbox_expand(e->url, err, sizeof err);
    if (url && e->headers)
        copy = sb_outbox_expand(e->headers, err, sizeof err);
    copy_len = copy ? strlen(copy) : 0;
    if (!url || (e->headers && !copy)) {
        finish_failed(e, err, -1);   /* fixed by a config reload, or dead in the end */
        goto done;
    }
    for (line = copy ? strtok_r(copy, "\n", &save) : NULL; line && n < MAX_HEADER_LINES;
         line = strtok_r(NULL, "\n", &save))
        lines[n++] = line;
    snprintf(idem, sizeof idem, "Idempotency-Key: %s", e->idem_key);
    lines[n++] = idem;
    memset(&req, 0, sizeof req);
    req.method = e->method;
    req.url = url;
    req.headers = lines;
    req.nheaders = n;
    req.body = e->body;
    req.body_len = e->body_len;
    req.timeout = settings.timeout;
    e->call = sb_http_start(&req, http_done, e, err, sizeof err);
    if (!e->call)
        finish_dead(e, err);  /* a request that can never be sent */
done:
    /* the resolved secrets live only in these buffers */
    if (url)
        explicit_bzero(url, strlen(url));
    if (copy)
        explicit_bzero(copy, copy_len);
    free(url);
    free(copy);
}

static void attempt(struct ob_entry *e)
{
    e->lane->busy = 1;
    counters.in_flight++;
    e->attempts++;
    if (strcmp(e->kind, "job") == 0)
        run_handler(e, e->target, NULL);
    else
        attempt_http(e);
}

static void commit_done(void *arg, int ok)
{
    struct ob_lane *lane = arg;
    (void)ok;   /* a failed batch took its entries out of the lane already */
    lane->waiting_commit = 0;
    kick(lane);
}

/* Loading a lane's next window */

static struct ob_entry *entry_from_row(const struct store_row *r)
{
    struct ob_entry *e = sb_xcalloc(1, sizeof *e);
    e->id = (int64_t)r->num[0];
    e->conversation_id = dup_or_null(r->text[1]);
    e->kind = sb_xstrdup(r->text[3] ? r->text[3] : "http");
    e->target = sb_xstrdup(r->text[4] ? r->text[4] : "");
    e->method = dup_or_null(r->text[5]);
    e->url = dup_or_null(r->text[6]);
    e->headers = dup_or_null(r->text[7]);
    if (r->text[8]) {
        e->body_len = r->len[8];
        e->body = sb_xmalloc(e->body_len + 1);
        memcpy(e->body, r->text[8], e->body_len);
        e->body[e->body_len] = '\0';
    }
    e->data = dup_or_null(r->text[9]);
    e->on_result = dup_or_null(r->text[10]);
    e->idem_key = sb_xstrdup(r->text[11] ? r->text[11] : "");
    e->attempts = (int)r->num[12];
    e->next_attempt = r->num[13];
    e->created = r->num[14];
    return e;
}

static void refill_done(void *arg, const struct store_rows *rows, const char *error)
{
    struct ob_lane *lane = arg;
    int i, n = store_rows_count(rows);
    lane->refilling = 0;
    if (error) {
        sb_log(SB_LOG_ERROR, "outbox: cannot read the next entries of a lane", "lane", lane->name, "error", error,
               NULL);
        struct timeval again = { 1, 0 };
        lane->more = 1;
        evtimer_add(lane->timer, &again);
        return;
    }
    for (i = 0; i < n; i++) {
        struct store_row r;
        struct ob_entry *e;
        store_rows_get(rows, i, &r, NULL);
        e = entry_from_row(&r);
        /* it may come from a batch not committed yet */
        e->commit_seq = lane->refill_seq;
        lane_insert(lane, e, 0);
    }
    lane->more = n == LANE_WINDOW || lane->added_while_refilling;
    lane->added_while_refilling = 0;
    kick(lane);
}

static void lane_look(struct ob_lane *lane)
{
    struct ob_entry *e = lane->head;
    double now;
    if (stopping || paused || !started || lane->busy || lane->waiting_commit || lane->queued)
        return;
    if (!e) {
        if (lane->more && !lane->refilling) {
            lane->refilling = 1;
            lane->refill_seq = store_pending_seq();
            store_fetch_outbox_lane(lane->name, LANE_WINDOW, refill_done, lane);
            return;
        }
        lane_maybe_drop(lane);
        return;
    }
    if (e->commit_seq > store_committed_seq()) {
        lane->waiting_commit = 1;
        store_when_committed(e->commit_seq, commit_done, lane);
        return;
    }
    now = sb_now_wall();
    if (e->next_attempt > now) {
        double d = e->next_attempt - now;
        struct timeval tv;
        tv.tv_sec = (time_t)d;
        tv.tv_usec = (suseconds_t)((d - (double)tv.tv_sec) * 1e6);
        evtimer_add(lane->timer, &tv);
        return;
    }
    if ((int)counters.in_flight >= settings.concurrency) {
        lane->queued = 1;
        lane->next_ready = NULL;
        if (ready_tail)
            ready_tail->next_ready = lane;
        else
            ready_head = lane;
        ready_tail = lane;
        return;
    }
    attempt(e);
}

/* The loop's drain: a bounded number of lanes per turn, then the next turn. */
static void drain(evutil_socket_t fd, short what, void *arg)
{
    int n = 0;
    (void)fd;
    (void)what;
    (void)arg;
    while (ready_head && (int)counters.in_flight < settings.concurrency && n < LANES_PER_TURN) {
        struct ob_lane *lane = ready_head;
        ready_head = lane->next_ready;
        if (!ready_head)
            ready_tail = NULL;
        lane->queued = 0;
        lane_look(lane);
        n++;
    }
    while (kick_head && n < LANES_PER_TURN) {
        struct ob_lane *lane = kick_head;
        kick_head = lane->next_kick;
        if (!kick_head)
            kick_tail = NULL;
        lane->kick_queued = 0;
        lane_look(lane);
        n++;
    }
    if (kick_head || (ready_head && (int)counters.in_flight < settings.concurrency))
        event_active(drain_ev, 0, 0);
}

/* Adding, as part of a transaction */

static void addition_end(void *data, uint64_t seq)
{
    struct addition *a = data;
    struct ob_lane *lane = lane_get(a->lane);
    a->entry->commit_seq = seq;
    counters.pending++;
    if (lane->more || lane->refilling || lane->nmem >= LANE_WINDOW) {
        /* behind entries still in the store: it waits there too */
        if (lane->refilling)
            lane->added_while_refilling = 1;
        lane->more = 1;
        entry_free(a->entry);
        a->entry = NULL;
        a->in_memory = 0;
    } else {
        lane_insert(lane, a->entry, 0);
        a->entry->added_by = a;
        a->in_memory = 1;
    }
    kick(lane);
}

static void addition_abort(void *data)
{
    struct addition *a = data;
    entry_free(a->entry);
    free(a->lane);
    free(a);
}

static void addition_undo(void *data)
{
    struct addition *a = data;
    counters.pending--;
    if (a->in_memory && a->entry) {
        struct ob_lane *lane = a->entry->lane;
        if (a->entry->call) {
            sb_http_cancel(a->entry->call);
            a->entry->call = NULL;
            attempt_over(a->entry);
        }
        lane_remove(a->entry);
        entry_free(a->entry);
        kick(lane);
    }
    free(a->lane);
    free(a);
}

static void addition_commit(void *data)
{
    struct addition *a = data;
    if (a->entry)
        a->entry->added_by = NULL;
    free(a->lane);
    free(a);
}

static const struct sb_txn_effect_ops addition_ops = { addition_end, addition_abort, addition_undo, addition_commit };

static const char *check_new(const struct sb_outbox_new *n)
{
    if (!n->lane || !n->kind || !n->target || (strcmp(n->kind, "http") && strcmp(n->kind, "job")))
        return "lane, kind (http|job) and target are required";
    if (!strcmp(n->kind, "http") && (!n->url || (strncasecmp(n->url, "http://", 7) && strncasecmp(n->url, "https://", 8))))
        return "url must start with http:// or https://";
    if (n->headers && strchr(n->headers, '\r'))
        return "headers must not contain CR";
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
    e->id = next_id++;
    e->conversation_id = dup_or_null(n->conversation_id);
    e->kind = sb_xstrdup(n->kind);
    e->target = sb_xstrdup(n->target);
    e->method = dup_or_null(n->method);
    e->url = dup_or_null(n->url);
    e->headers = dup_or_null(n->headers);
    if (n->body) {
        e->body = sb_xmalloc(n->body_len + 1);
        memcpy(e->body, n->body, n->body_len);
        e->body[n->body_len] = '\0';
        e->body_len = n->body_len;
    }
    e->data = dup_or_null(n->data);
    e->on_result = dup_or_null(n->on_result);
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
    if (r->n < 16 || !r->text[15] || strcmp(r->text[15], "dead") != 0) {
        snprintf(err, err_size, "not a dead letter");
        return -1;
    }
    if (tfind(&(int64_t){ (int64_t)r->num[0] }, &requeued_ids, cmp_id)) {
        snprintf(err, err_size, "already sent again");
        return -1;
    }
    e = entry_from_row(r);
    e->attempts = 0;
    e->next_attempt = 0;
    e->created = sb_now_wall();   /* a new life: max_age counts from now */
    id = sb_xmalloc(sizeof *id);
    *id = e->id;
    tsearch(id, &requeued_ids, cmp_id);
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
    struct ob_entry *e = entry_from_row(r);
    (void)arg;
    lane_insert(lane_get(r->text[2] ? r->text[2] : "-"), e, 0);
}

static void lane_has_more(void *arg, const char *name)
{
    (void)arg;
    lane_get(name)->more = 1;
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_outbox_pending", "Outbox entries not yet delivered or dead.",
                     (double)counters.pending);
    sb_metrics_gauge(out, "switchboard_outbox_in_memory", "Pending outbox entries held in memory (lane windows).",
                     (double)counters.in_memory);
    sb_metrics_gauge(out, "switchboard_outbox_in_flight", "Outbox deliveries being attempted.",
                     (double)counters.in_flight);
    sb_metrics_counter(out, "switchboard_outbox_delivered_total", "Outbox entries delivered.", counters.delivered);
    sb_metrics_counter(out, "switchboard_outbox_retried_total", "Failed outbox attempts scheduled again.",
                       counters.retried);
    sb_metrics_counter(out, "switchboard_outbox_dead_total", "Outbox entries dead-lettered.", counters.dead);
}

int sb_outbox_load(void)
{
    int64_t total = 0;
    next_id = store_max_outbox_id() + 1;
    sb_metrics_register(render_metrics);
    if (store_load_outbox_pending(LANE_WINDOW, load_row, NULL, lane_has_more, &total))
        return -1;
    counters.pending = (size_t)total;
    return 0;
}

static void kick_node(const void *node, VISIT which, void *closure)
{
    (void)closure;
    if (which == postorder || which == leaf)
        kick(*(struct ob_lane *const *)node);
}

void sb_outbox_start(void)
{
    started = 1;
    twalk_r(lanes, kick_node, NULL);
}

/* Cancels the HTTP attempt in flight on a lane (the entry stays pending
 * in the store; its idempotency key covers a repeat after restart). */
static void cancel_node(const void *node, VISIT which, void *closure)
{
    struct ob_lane *lane = *(struct ob_lane *const *)node;
    struct ob_entry *e;
    (void)closure;
    if (which != postorder && which != leaf)
        return;
    for (e = lane->head; e; e = e->next) {
        if (e->call) {
            sb_http_cancel(e->call);
            e->call = NULL;
            lane->busy = 0;
            counters.in_flight--;
        }
    }
    evtimer_del(lane->timer);
}

void sb_outbox_pause(void)
{
    paused = 1;
    twalk_r(lanes, cancel_node, NULL);
}

void sb_outbox_stop(void)
{
    stopping = 1;
    twalk_r(lanes, cancel_node, NULL);
}

void sb_outbox_sweep(void)
{
    double now = sb_now_wall();
    if (settings.keep_delivered > 0)
        store_submit_system(store_prune_outbox("delivered", now - settings.keep_delivered, 1000));
    store_submit_system(store_prune_outbox("dead", now - settings.keep_dead, 1000));
}

static void free_id(void *p) { free(p); }

void sb_outbox_free_all(void)
{
    stopping = 1;
    twalk_r(lanes, cancel_node, NULL);
    tdestroy(lanes, lane_free);
    lanes = NULL;
    tdestroy(requeued_ids, free_id);
    requeued_ids = NULL;
    ready_head = ready_tail = NULL;
    kick_head = kick_tail = NULL;
    if (drain_ev)
        event_free(drain_ev);
    drain_ev = NULL;
}
