#include "outbox.h"

#include <math.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "bindings.h"
#include "conv.h"
#include "httpclient.h"
#include "job.h"
#include "log.h"
#include "loop.h"
#include "runtime.h"
#include "store.h"
#include "util.h"

#define MAX_HEADER_LINES 64

struct ob_lane;

struct ob_entry {
    int64_t id;
    char *conversation_id, *kind, *target, *method, *url, *headers, *body, *data, *on_result, *idem_key;
    size_t body_len;
    int attempts;
    double next_attempt, created;
    uint64_t commit_seq;          /* the batch its insert joined: never attempted before that commits */
    struct ob_lane *lane;
    struct ob_entry *next;
    struct sb_http_call *call;    /* http attempt in flight */
    struct sb_job *job;           /* job attempt or result handler in flight */
};

struct ob_lane {
    char *name;
    struct ob_entry *head, *tail;
    int busy;                     /* its head is being attempted */
    int waiting_commit;
    int queued;                   /* in the ready queue, waiting for a delivery slot */
    struct event *timer;
    struct ob_lane *next_ready;
};

static struct sb_outbox_settings settings = { 10, 86400, 1.0, 300, 64, 30 };
static struct sb_outbox_counters counters;
static void *lanes;               /* tsearch by name */
static struct ob_lane *ready_head, *ready_tail;
static int64_t next_id = 1;
static int stopping, started, paused;

const struct sb_outbox_counters *sb_outbox_counters(void) { return &counters; }

void sb_outbox_configure(const struct sb_outbox_settings *s) { settings = *s; }

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

static char *dup_or_null(const char *s) { return s ? sb_xstrdup(s) : NULL; }

static void entry_free(struct ob_entry *e)
{
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

static void lane_kick(struct ob_lane *lane);

static void lane_timer_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lane_kick(arg);
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
    if (lane->head || lane->busy || lane->waiting_commit || lane->queued)
        return;
    tdelete(lane, &lanes, cmp_lane);
    lane_free(lane);
}

static void persist_update(struct ob_entry *e, const char *state, const char *reason, double finished)
{
    struct store_op *op = store_op_new(STORE_OUTBOX_UPDATE);
    store_op_int(op, e->id);
    store_op_str(op, state);
    store_op_int(op, e->attempts);
    store_op_real(op, e->next_attempt);
    store_op_str(op, reason);
    if (finished > 0)
        store_op_real(op, finished);
    else
        store_op_null(op);
    store_submit(op);
}

static void ready_push(struct ob_lane *lane)
{
    if (lane->queued)
        return;
    lane->queued = 1;
    lane->next_ready = NULL;
    if (ready_tail)
        ready_tail->next_ready = lane;
    else
        ready_head = lane;
    ready_tail = lane;
}

static void kick_ready(void)
{
    while (ready_head && (int)counters.in_flight < settings.concurrency) {
        struct ob_lane *lane = ready_head;
        ready_head = lane->next_ready;
        if (!ready_head)
            ready_tail = NULL;
        lane->queued = 0;
        lane_kick(lane);
    }
}

/* Ends the current attempt of the lane's head. */
static void attempt_over(struct ob_lane *lane)
{
    lane->busy = 0;
    counters.in_flight--;
}

static void pop_head(struct ob_lane *lane)
{
    struct ob_entry *e = lane->head;
    lane->head = e->next;
    if (!lane->head)
        lane->tail = NULL;
    entry_free(e);
    counters.pending--;
}

static void finish_delivered(struct ob_entry *e)
{
    struct ob_lane *lane = e->lane;
    persist_update(e, "delivered", NULL, sb_now_wall());
    counters.delivered++;
    attempt_over(lane);
    pop_head(lane);
    lane_kick(lane);
    kick_ready();
}

static void finish_dead(struct ob_entry *e, const char *reason)
{
    struct ob_lane *lane = e->lane;
    char id[24], attempts[16];
    snprintf(id, sizeof id, "%lld", (long long)e->id);
    snprintf(attempts, sizeof attempts, "%d", e->attempts);
    sb_log(SB_LOG_WARN, "outbox: dead letter", "id", id, "target", e->target, "attempts", attempts,
           "reason", reason, NULL);
    persist_update(e, "dead", reason, sb_now_wall());
    counters.dead++;
    attempt_over(lane);
    pop_head(lane);
    lane_kick(lane);
    kick_ready();
}

/* A failed attempt: retry later, or dead-letter when out of attempts/age. */
static void finish_failed(struct ob_entry *e, const char *reason, double retry_after)
{
    struct ob_lane *lane = e->lane;
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
    persist_update(e, "pending", reason, 0);
    counters.retried++;
    attempt_over(lane);
    lane_kick(lane);
    kick_ready();
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

static void push_info(lua_State *co, const struct ob_entry *e)
{
    lua_createtable(co, 0, 5);
    lua_pushinteger(co, e->id);
    lua_setfield(co, -2, "id");
    if (e->conversation_id) {
        lua_pushstring(co, e->conversation_id);
        lua_setfield(co, -2, "conversation_id");
    }
    lua_pushstring(co, e->target);
    lua_setfield(co, -2, "target");
    lua_pushinteger(co, e->attempts);
    lua_setfield(co, -2, "attempts");
    lua_pushstring(co, e->idem_key);
    lua_setfield(co, -2, "idempotency_key");
}

static void job_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    struct ob_entry *e = job->owner;
    char reason[300];
    e->job = NULL;
    if (stopping)
        return; /* stays pending in the store: delivered again after restart */
    if (out->result == SB_JOB_DONE) {
        finish_delivered(e);
        return;
    }
    snprintf(reason, sizeof reason, "%s handler failed: %s", strcmp(e->kind, "job") == 0 ? "job" : "result",
             out->detail ? out->detail : out->message ? out->message : out->code ? out->code : "error");
    if (strcmp(e->kind, "job") == 0)
        finish_failed(e, reason, -1);
    else
        finish_dead(e, reason);  /* the call went through: repeating it would not fix the script */
}

/* Runs engine.<fn>(handler, ...) as a job owned by the entry. The caller
 * pushes the remaining arguments through push_args. */
static struct sb_job *start_job(struct ob_entry *e, const char *engine_fn, const char *handler)
{
    struct sb_runtime *rt = sb_runtime_current();
    char label[200];
    struct sb_job *job;
    snprintf(label, sizeof label, "outbox:%s", handler);
    job = sb_job_new(rt, SB_JOB_TIMER, label, job_done, e);
    lua_rawgeti(job->co, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(job->co, -1, engine_fn);
    lua_remove(job->co, -2);
    lua_pushstring(job->co, handler);
    e->job = job;
    return job;
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
        if (e->on_result) {
            struct sb_job *job = start_job(e, "run_outbox_result", e->on_result);
            lua_State *co = job->co;
            lua_createtable(co, 0, 3);
            lua_pushinteger(co, r->status);
            lua_setfield(co, -2, "status");
            sb_http_push_headers(co, r);
            lua_setfield(co, -2, "headers");
            lua_pushlstring(co, r->body, r->body_len);
            lua_setfield(co, -2, "body");
            if (e->data)
                lua_pushstring(co, e->data);
            else
                lua_pushnil(co);
            push_info(co, e);
            sb_job_start(job, 4);
        } else {
            finish_delivered(e);
        }
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

static void attempt(struct ob_entry *e)
{
    struct ob_lane *lane = e->lane;
    lane->busy = 1;
    counters.in_flight++;
    e->attempts++;
    if (strcmp(e->kind, "job") == 0) {
        struct sb_job *job = start_job(e, "run_outbox_job", e->target);
        if (e->data)
            lua_pushstring(job->co, e->data);
        else
            lua_pushnil(job->co);
        push_info(job->co, e);
        sb_job_start(job, 3);
        return;
    }
    {
        const char *lines[MAX_HEADER_LINES + 1];
        char *copy = e->headers ? sb_xstrdup(e->headers) : NULL, *save = NULL, *line;
        char idem[200], err[128];
        size_t n = 0;
        struct sb_http_request req;
        for (line = copy ? strtok_r(copy, "\n", &save) : NULL; line && n < MAX_HEADER_LINES;
             line = strtok_r(NULL, "\n", &save))
            lines[n++] = line;
        snprintf(idem, sizeof idem, "Idempotency-Key: %s", e->idem_key);
        lines[n++] = idem;
        memset(&req, 0, sizeof req);
        req.method = e->method;
        req.url = e->url;
        req.headers = lines;
        req.nheaders = n;
        req.body = e->body;
        req.body_len = e->body_len;
        req.timeout = settings.timeout;
        e->call = sb_http_start(&req, http_done, e, err, sizeof err);
        free(copy);
        if (!e->call)
            finish_dead(e, err);  /* a request that can never be sent */
    }
}

static void commit_done(void *arg, int ok)
{
    struct ob_lane *lane = arg;
    (void)ok;
    lane->waiting_commit = 0;
    lane_kick(lane);
}

static void lane_kick(struct ob_lane *lane)
{
    struct ob_entry *e = lane->head;
    double now;
    if (stopping || paused || !started || lane->busy || lane->waiting_commit || lane->queued)
        return;
    if (!e) {
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
        ready_push(lane);
        return;
    }
    attempt(e);
}

static struct ob_entry *entry_new(const struct sb_outbox_new *n)
{
    struct ob_entry *e = sb_xcalloc(1, sizeof *e);
    char key[SB_ID_LEN + 1];
    e->id = n->id ? n->id : next_id++;
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
    if (n->idem_key) {
        e->idem_key = sb_xstrdup(n->idem_key);
    } else {
        sb_new_id(key);
        e->idem_key = sb_xstrdup(key);
    }
    e->created = n->created > 0 ? n->created : sb_now_wall();
    e->next_attempt = 0;
    return e;
}

static void lane_append(const char *lane_name, struct ob_entry *e)
{
    struct ob_lane *lane = lane_get(lane_name);
    e->lane = lane;
    if (lane->tail)
        lane->tail->next = e;
    else
        lane->head = e;
    lane->tail = e;
    counters.pending++;
}

int64_t sb_outbox_add(const struct sb_outbox_new *n, char *err, size_t err_size)
{
    struct ob_entry *e;
    struct store_op *op;
    if (!n->lane || !n->kind || !n->target || (strcmp(n->kind, "http") && strcmp(n->kind, "job"))) {
        snprintf(err, err_size, "lane, kind (http|job) and target are required");
        return 0;
    }
    if (!strcmp(n->kind, "http") && (!n->url || (strncmp(n->url, "http://", 7) && strncmp(n->url, "https://", 8)))) {
        snprintf(err, err_size, "url must start with http:// or https://");
        return 0;
    }
    if (n->headers && strchr(n->headers, '\r')) {
        snprintf(err, err_size, "headers must not contain CR");
        return 0;
    }
    e = entry_new(n);
    if (n->id) {
        /* a dead letter sent again: fresh attempts, same id and key */
        e->attempts = 0;
        persist_update(e, "pending", NULL, 0);
        e->commit_seq = store_pending_seq();
    } else {
        op = store_op_new(STORE_OUTBOX_INSERT);
        store_op_int(op, e->id);
        store_op_str(op, e->conversation_id);
        store_op_str(op, n->lane);
        store_op_str(op, e->kind);
        store_op_str(op, e->target);
        store_op_str(op, e->method);
        store_op_str(op, e->url);
        store_op_str(op, e->headers);
        store_op_text(op, e->body, e->body_len);
        store_op_str(op, e->data);
        store_op_str(op, e->on_result);
        store_op_str(op, e->idem_key);
        store_op_str(op, "pending");
        store_op_int(op, 0);
        store_op_real(op, 0);
        store_op_real(op, e->created);
        e->commit_seq = store_submit(op);
    }
    sb_job_note_write(e->commit_seq);
    lane_append(n->lane, e);
    lane_kick(e->lane);
    return e->id;
}

static void load_row(void *arg, const struct store_row *r)
{
    struct sb_outbox_new n;
    struct ob_entry *e;
    (void)arg;
    memset(&n, 0, sizeof n);
    n.id = (int64_t)r->num[0];
    n.conversation_id = r->text[1];
    n.lane = r->text[2];
    n.kind = r->text[3];
    n.target = r->text[4];
    n.method = r->text[5];
    n.url = r->text[6];
    n.headers = r->text[7];
    n.body = r->text[8];
    n.body_len = r->text[8] ? strlen(r->text[8]) : 0;
    n.data = r->text[9];
    n.on_result = r->text[10];
    n.idem_key = r->text[11];
    n.created = r->num[15];
    e = entry_new(&n);
    e->attempts = (int)r->num[13];
    e->next_attempt = r->num[14];
    lane_append(n.lane, e);
}

int sb_outbox_load(void)
{
    next_id = store_max_id("outbox") + 1;
    return store_load_outbox_pending(load_row, NULL);
}

static void kick_node(const void *node, VISIT which, void *closure)
{
    (void)closure;
    if (which == postorder || which == leaf)
        lane_kick(*(struct ob_lane *const *)node);
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
    (void)closure;
    if (which != postorder && which != leaf)
        return;
    if (lane->head && lane->head->call) {
        sb_http_cancel(lane->head->call);
        lane->head->call = NULL;
        attempt_over(lane);
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

void sb_outbox_free_all(void)
{
    stopping = 1;
    twalk_r(lanes, cancel_node, NULL);
    tdestroy(lanes, lane_free);
    lanes = NULL;
    ready_head = ready_tail = NULL;
}
