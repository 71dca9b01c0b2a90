#include "outbox_int.h"

#include <math.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#define LANES_PER_TURN 256        /* lanes looked at per loop turn */

struct sb_outbox_settings ob_settings = { 10, 86400, 1.0, 300, 64, 30, 0, 30 * 86400.0 };
struct sb_outbox_counters ob_counters;
static void *lanes;               /* tsearch by name */
static struct ob_lane *ready_head, *ready_tail;
static struct ob_lane *kick_head, *kick_tail;
static struct event *drain_ev;
void *ob_requeued_ids;        /* tsearch of int64_t ids */
int64_t ob_next_id = 1;
static int stopping, started, paused;
static sb_outbox_run_fn runner;
sb_outbox_secret_fn ob_resolve_secret;

const struct sb_outbox_counters *sb_outbox_counters(void) { return &ob_counters; }
void sb_outbox_configure(const struct sb_outbox_settings *s) { ob_settings = *s; }
void sb_outbox_set_runner(sb_outbox_run_fn fn) { runner = fn; }
void sb_outbox_set_secret_resolver(sb_outbox_secret_fn fn) { ob_resolve_secret = fn; }

double sb_outbox_backoff(int attempt, double jitter01)
{
    double d = ob_settings.backoff_base * pow(2.0, attempt > 1 ? attempt - 1 : 0);
    if (d > ob_settings.backoff_max)
        d = ob_settings.backoff_max;
    /* "equal jitter": never less than half the step, so retries still spread */
    return d * (0.5 + 0.5 * jitter01);
}

static int cmp_lane(const void *a, const void *b)
{
    return strcmp(((const struct ob_lane *)a)->name, ((const struct ob_lane *)b)->name);
}

int ob_cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}


static void ob_requeued_forget(struct ob_entry *e)
{
    int64_t **found;
    if (!e->requeued)
        return;
    found = tfind(&e->id, &ob_requeued_ids, ob_cmp_id);
    if (found) {
        int64_t *p = *found;
        tdelete(&e->id, &ob_requeued_ids, ob_cmp_id);
        free(p);
    }
    e->requeued = 0;
}


void ob_entry_free(struct ob_entry *e)
{
    ob_requeued_forget(e);
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
    free(e->hints);
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

void ob_kick(struct ob_lane *lane)
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
    ob_kick(arg);
}

struct ob_lane *ob_lane_get(const char *name)
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
        ob_entry_free(e);
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

void ob_lane_insert(struct ob_lane *lane, struct ob_entry *e, int at_head)
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
    ob_counters.in_memory++;
}

void ob_lane_remove(struct ob_entry *e)
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
    ob_counters.in_memory--;
}

/* Ends the current attempt on e's lane. */
void ob_attempt_over(struct ob_entry *e)
{
    e->lane->busy = 0;
    ob_counters.in_flight--;
    if (ready_head)
        schedule_drain();
}

static void finished(struct ob_entry *e)
{
    struct ob_lane *lane = e->lane;
    ob_lane_remove(e);
    ob_counters.pending--;
    ob_count_handlers(e->kind, e->target, e->on_result, -1);
    ob_entry_free(e);
    ob_kick(lane);
}

static void record_delivered(struct ob_entry *e, struct sb_txn *t)
{
    double now = sb_now_wall();
    struct store_op *op = ob_settings.keep_delivered > 0
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
    ob_counters.delivered++;
    ob_attempt_over(e);
    finished(e);
}

static void finish_dead(struct ob_entry *e, const char *reason)
{
    char id[24], attempts[16];
    snprintf(id, sizeof id, "%lld", (long long)e->id);
    snprintf(attempts, sizeof attempts, "%d", e->attempts);
    sb_log(SB_LOG_WARN, "outbox: dead letter", "id", id, "target", e->target, "attempts", attempts,
           "reason", reason, "conversation", e->conversation_id, NULL);
    store_submit_system(store_update_outbox(e->id, "dead", e->attempts, e->next_attempt, reason, sb_now_wall(), 0));
    ob_counters.dead++;
    ob_attempt_over(e);
    finished(e);
}

/* One line per failed attempt that will be made again: what the platform
 * said, and the wait it asked for (or the backoff). */
static void log_retry(const struct ob_entry *e, const char *reason, double delay)
{
    char id[24], attempts[16], wait[32];
    snprintf(id, sizeof id, "%lld", (long long)e->id);
    snprintf(attempts, sizeof attempts, "%d", e->attempts);
    snprintf(wait, sizeof wait, "%.3f", delay);
    sb_log(SB_LOG_INFO, "outbox: attempt failed, retrying", "id", id, "target", e->target, "attempts", attempts,
           "retry_in", wait, "reason", reason, "conversation", e->conversation_id, NULL);
}

/* A failed attempt: retry later, or dead-letter when out of attempts/age. */
static void finish_failed(struct ob_entry *e, const char *reason, double retry_after)
{
    double now = sb_now_wall(), delay;
    char why[300];
    if (e->attempts >= ob_settings.max_attempts) {
        snprintf(why, sizeof why, "%d attempts, last: %s", e->attempts, reason);
        finish_dead(e, why);
        return;
    }
    delay = retry_after >= 0 ? retry_after : sb_outbox_backoff(e->attempts, (double)random() / RAND_MAX);
    if (now + delay - e->created > ob_settings.max_age) {
        snprintf(why, sizeof why, "older than %.0f s, last: %s", ob_settings.max_age, reason);
        finish_dead(e, why);
        return;
    }
    e->next_attempt = now + delay;
    log_retry(e, reason, delay);
    store_submit_system(store_update_outbox(e->id, "pending", e->attempts, e->next_attempt, reason, 0, 0));
    ob_counters.retried++;
    ob_attempt_over(e);
    ob_kick(e->lane);
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
    ob_counters.delivered++;
    ob_attempt_over(e);
    ob_lane_remove(e);
    ob_counters.pending--;
    ob_count_handlers(e->kind, e->target, e->on_result, -1);
    e->lane->uncommitted++;
    ob_kick(e->lane);
}

static void delivered_undo(void *data)
{
    struct ob_entry *e = data;
    struct ob_lane *lane = e->lane;
    ob_counters.delivered--;
    ob_counters.pending++;
    ob_count_handlers(e->kind, e->target, e->on_result, 1);
    ob_counters.retried++;
    lane->uncommitted--;
    /* The handler's writes did not commit: the attempt failed, and the
     * next one waits its backoff (the store may still be failing). */
    e->next_attempt = sb_now_wall() + sb_outbox_backoff(e->attempts, (double)random() / RAND_MAX);
    ob_lane_insert(lane, e, 1);
    ob_kick(lane);
}

static void delivered_commit(void *data)
{
    struct ob_entry *e = data;
    struct ob_lane *lane = e->lane;
    lane->uncommitted--;
    ob_entry_free(e);
    ob_kick(lane);   /* dropped there if idle */
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
    sb_outbox_failure_reason(e->hints, r, reason, sizeof reason);
    if (r->status == 429 || r->status == 503)
        finish_failed(e, reason, sb_outbox_retry_after(e->hints, r));
    else if (r->status >= 500 || r->status == 408)
        finish_failed(e, reason, -1);
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
    req.timeout = ob_settings.timeout;
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
    ob_counters.in_flight++;
    e->attempts++;
    if (strcmp(e->kind, "job") == 0)
        run_handler(e, e->target, NULL);
    else
        attempt_http(e);
}

static void commit_done(void *arg, int ok)
{
    struct ob_lane *lane = arg;
    lane->waiting_commit = 0;
    if (!ok) {
        /* A failed batch took the entries its transactions added out of the
         * lane already. Entries a refill read back may include some of them:
         * those copies go, and the store is read again once it recovered. */
        struct ob_entry *e = lane->head, *next;
        for (; e; e = next) {
            next = e->next;
            if (e->refilled && e->commit_seq > 0 && !e->call && !e->running) {
                ob_lane_remove(e);
                ob_entry_free(e);
                lane->more = 1;
            }
        }
    }
    ob_kick(lane);
}

/* Loading a lane's next window */

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
        e = ob_entry_from_row(&r);
        /* it may come from a batch not committed yet */
        e->commit_seq = lane->refill_seq;
        e->refilled = 1;
        ob_lane_insert(lane, e, 0);
    }
    lane->more = n == LANE_WINDOW || lane->added_while_refilling;
    lane->added_while_refilling = 0;
    ob_kick(lane);
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
            lane->refill_seq = store_last_seq();
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
        struct timeval tv = sb_timeval(e->next_attempt - now);
        evtimer_add(lane->timer, &tv);
        return;
    }
    if ((int)ob_counters.in_flight >= ob_settings.concurrency) {
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
    while (ready_head && (int)ob_counters.in_flight < ob_settings.concurrency && n < LANES_PER_TURN) {
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
    if (kick_head || (ready_head && (int)ob_counters.in_flight < ob_settings.concurrency))
        event_active(drain_ev, 0, 0);
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_outbox_pending", "Outbox entries not yet delivered or dead.",
                     (double)ob_counters.pending);
    sb_metrics_gauge(out, "switchboard_outbox_in_memory", "Pending outbox entries held in memory (lane windows).",
                     (double)ob_counters.in_memory);
    sb_metrics_gauge(out, "switchboard_outbox_in_flight", "Outbox deliveries being attempted.",
                     (double)ob_counters.in_flight);
    sb_metrics_counter(out, "switchboard_outbox_delivered_total", "Outbox entries delivered.", ob_counters.delivered);
    sb_metrics_counter(out, "switchboard_outbox_retried_total", "Failed outbox attempts scheduled again.",
                       ob_counters.retried);
    sb_metrics_counter(out, "switchboard_outbox_dead_total", "Outbox entries dead-lettered.", ob_counters.dead);
}

void ob_register_metrics(void)
{
    sb_metrics_register(render_metrics);
}

static void kick_node(const void *node, VISIT which, void *closure)
{
    (void)closure;
    if (which == postorder || which == leaf)
        ob_kick(*(struct ob_lane *const *)node);
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
            ob_counters.in_flight--;
        }
    }
    evtimer_del(lane->timer);
}

static void stop_timer_node(const void *node, VISIT which, void *closure)
{
    (void)closure;
    if (which == postorder || which == leaf)
        evtimer_del((*(struct ob_lane *const *)node)->timer);
}

void sb_outbox_pause(void)
{
    /* Calls in flight may finish during the grace period and record their
     * outcome: cancelled, they would be made again after the restart. */
    paused = 1;
    twalk_r(lanes, stop_timer_node, NULL);
}

void sb_outbox_stop(void)
{
    stopping = 1;
    twalk_r(lanes, cancel_node, NULL);
}

void sb_outbox_sweep(void)
{
    double now = sb_now_wall();
    if (ob_settings.keep_delivered > 0)
        store_submit_system(store_prune_outbox("delivered", now - ob_settings.keep_delivered, 1000));
    store_submit_system(store_prune_outbox("dead", now - ob_settings.keep_dead, 1000));
}

static void free_id(void *p) { free(p); }

void sb_outbox_free_all(void)
{
    stopping = 1;
    twalk_r(lanes, cancel_node, NULL);
    tdestroy(lanes, lane_free);
    lanes = NULL;
    tdestroy(ob_requeued_ids, free_id);
    ob_requeued_ids = NULL;
    ready_head = ready_tail = NULL;
    kick_head = kick_tail = NULL;
    if (drain_ev)
        event_free(drain_ev);
    drain_ev = NULL;
}
