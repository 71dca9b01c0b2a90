/* Subscribers of the event bus (bus.h): declared by each load, each with a
 * reader, a window of pending events, lanes (one conversation's events,
 * handled one at a time in id order), retries, dead events and a durable
 * cursor. */
#include "bus_int.h"

#include <math.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "store.h"
#include "txn.h"
#include "util.h"

#define WINDOW 256               /* pending events of one subscriber held in memory */
#define FLUSH_EVERY 1.0          /* seconds between two rounds of cursor writes */
#define SEEN_EVERY 3600.0        /* an active subscriber's row says so at least this often */
#define STARTS_PER_TURN 256      /* handler jobs started per loop turn */
#define MAX_DEPTH 8              /* handler generations: a deeper event is not dispatched */

struct bus_sub;
struct bus_lane;

/* One event waiting for one subscriber. */
struct bus_pending {
    struct sb_bus_event *ev;
    struct bus_sub *sub;
    struct bus_lane *lane;
    int attempts;
    int running;                 /* its handler runs, or its writes wait for their commit */
    struct bus_pending *prev, *next;   /* the subscriber's window, in id order */
    struct bus_pending *lane_next;
};

/* A subscriber's pending events of one conversation. */
struct bus_lane {
    char *key;                   /* the conversation ("" for events without one) */
    struct bus_sub *sub;
    struct bus_pending *head, *tail;
    int busy;                    /* its head runs or waits for its next attempt */
    int queued;                  /* in the ready list */
    struct event *retry;
    struct bus_lane *next_ready;
};

struct bus_sub {
    char *id, *pattern;
    int active;                  /* declared by the load serving now */
    int want;                    /* declared by the load being committed */
    double seen, seen_written;   /* when a load last declared it; when a row said so */
    int64_t cursor;              /* every event <= cursor is done */
    int64_t saved;               /* the cursor last written */
    int dirty;
    struct sb_bus_reader *reader;
    struct bus_pending *head, *tail;
    int npending, nrunning;
    void *lanes;                 /* tsearch by key */
    unsigned long long dispatched, failed, dead, skipped;
    struct bus_sub *next;
};

struct declaration {
    unsigned gen;
    char *id, *pattern;
    int64_t start;               /* the cursor of a subscriber seen for the first time */
    struct declaration *next;
};

static struct sb_bus_settings settings = { 16, 5, 60, 7 * 86400.0 };
static struct bus_sub *subs;
static struct declaration *declarations;
static struct bus_lane *ready_head, *ready_tail;
static struct event *drain_ev, *flush_ev;
static sb_bus_run_fn runner;
static int started, paused, stopping, in_flight;

static void schedule_drain(void);

void sb_bus_configure(const struct sb_bus_settings *s)
{
    settings = *s;
    schedule_drain();   /* a larger concurrency may start more now */
}
void sb_bus_set_runner(sb_bus_run_fn fn) { runner = fn; }

static int cmp_lane(const void *a, const void *b)
{
    return strcmp(((const struct bus_lane *)a)->key, ((const struct bus_lane *)b)->key);
}

static struct bus_sub *sub_find(const char *id)
{
    struct bus_sub *s;
    for (s = subs; s; s = s->next)
        if (!strcmp(s->id, id))
            return s;
    return NULL;
}

static struct bus_sub *sub_new(const char *id, int64_t cursor, double seen)
{
    struct bus_sub *s = sb_xcalloc(1, sizeof *s);
    s->id = sb_xstrdup(id);
    s->pattern = sb_xstrdup("*");
    s->cursor = s->saved = cursor;
    s->seen = s->seen_written = seen;
    s->next = subs;
    subs = s;
    return s;
}

/* Cursors are written a round at a time, as system writes. */

static void flush_cursors(void)
{
    struct bus_sub *s;
    double now = sb_now_wall();
    for (s = subs; s; s = s->next) {
        if (!s->dirty)
            continue;
        if (s->active)
            s->seen = now;
        store_submit_system(store_put_cursor(s->id, s->cursor, s->seen));
        s->saved = s->cursor;
        s->seen_written = s->seen;
        s->dirty = 0;
    }
}

static void flush_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    flush_cursors();
}

static void mark_dirty(struct bus_sub *s)
{
    struct timeval tv = sb_timeval(FLUSH_EVERY);
    s->dirty = 1;
    if (stopping)
        return;
    if (!flush_ev)
        flush_ev = evtimer_new(sb_base, flush_due, NULL);
    if (!evtimer_pending(flush_ev, NULL))
        evtimer_add(flush_ev, &tv);
}

/* An active subscriber's cursor: just below its oldest pending event, or
 * where its reader is when nothing is pending. Never backwards. */
static void update_cursor(struct bus_sub *s)
{
    int64_t c;
    if (!s->active || !s->reader)
        return;
    c = s->head ? s->head->ev->id - 1 : sb_bus_reader_position(s->reader);
    if (c > s->cursor) {
        s->cursor = c;
        mark_dirty(s);
    }
}

/* Lanes and the ready list */

static void drain(evutil_socket_t fd, short what, void *arg);

static void schedule_drain(void)
{
    if (!started || paused || stopping)
        return;
    if (!drain_ev)
        drain_ev = event_new(sb_base, -1, 0, drain, NULL);
    event_active(drain_ev, 0, 0);
}

static void lane_ready(struct bus_lane *l)
{
    if (l->queued || l->busy || !l->head || !l->sub->active)
        return;
    l->queued = 1;
    l->next_ready = NULL;
    if (ready_tail)
        ready_tail->next_ready = l;
    else
        ready_head = l;
    ready_tail = l;
    schedule_drain();
}

static void lane_unqueue(struct bus_lane *l)
{
    struct bus_lane **p, *prev = NULL;
    if (!l->queued)
        return;
    for (p = &ready_head; *p; prev = *p, p = &(*p)->next_ready) {
        if (*p == l) {
            *p = l->next_ready;
            if (ready_tail == l)
                ready_tail = prev;
            break;
        }
    }
    l->queued = 0;
}

static void retry_due(evutil_socket_t fd, short what, void *arg)
{
    struct bus_lane *l = arg;
    (void)fd;
    (void)what;
    l->busy = 0;
    lane_ready(l);
}

static struct bus_lane *lane_get(struct bus_sub *s, const char *key)
{
    struct bus_lane probe, *l, **found;
    probe.key = (char *)key;
    found = tfind(&probe, &s->lanes, cmp_lane);
    if (found)
        return *found;
    l = sb_xcalloc(1, sizeof *l);
    l->key = sb_xstrdup(key);
    l->sub = s;
    l->retry = evtimer_new(sb_base, retry_due, l);
    tsearch(l, &s->lanes, cmp_lane);
    return l;
}

static void lane_free(struct bus_lane *l)
{
    lane_unqueue(l);
    tdelete(l, &l->sub->lanes, cmp_lane);
    event_free(l->retry);
    free(l->key);
    free(l);
}

static void window_unlink(struct bus_pending *p)
{
    struct bus_sub *s = p->sub;
    if (p->prev)
        p->prev->next = p->next;
    else
        s->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        s->tail = p->prev;
    s->npending--;
    sb_bus_event_unref(p->ev);
    free(p);
}

/* Takes p, its lane's head, out of its window and lane, and frees it. */
static void pending_remove(struct bus_pending *p)
{
    struct bus_lane *l = p->lane;
    l->head = p->lane_next;
    if (!l->head)
        l->tail = NULL;
    window_unlink(p);
}

/* Taking events from the reader */

static int sub_room(void *arg)
{
    struct bus_sub *s = arg;
    return s->active && !stopping ? WINDOW - s->npending : 0;
}

static int sub_wants(void *arg, const struct sb_bus_event *ev)
{
    struct bus_sub *s = arg;
    char id[24], depth[16];
    if (!sb_bus_pattern_match(s->pattern, ev->name))
        return 0;
    if (ev->depth < MAX_DEPTH)
        return 1;
    /* handlers reacting to each other's (or their own) events without end */
    s->skipped++;
    snprintf(id, sizeof id, "%lld", (long long)ev->id);
    snprintf(depth, sizeof depth, "%d", ev->depth);
    sb_log(SB_LOG_WARN, "event not dispatched: too many handlers led to it", "subscriber", s->id, "event", id,
           "name", ev->name, "conversation", ev->conversation, "depth", depth, NULL);
    return 0;
}

static int sub_take(void *arg, struct sb_bus_event *ev)
{
    struct bus_sub *s = arg;
    struct bus_pending *p = sb_xcalloc(1, sizeof *p);
    struct bus_lane *l = lane_get(s, ev->conversation);
    sb_bus_event_ref(ev);
    p->ev = ev;
    p->sub = s;
    p->lane = l;
    p->prev = s->tail;
    if (s->tail)
        s->tail->next = p;
    else
        s->head = p;
    s->tail = p;
    s->npending++;
    if (l->tail)
        l->tail->lane_next = p;
    else
        l->head = p;
    l->tail = p;
    lane_ready(l);
    return 1;
}

static const struct sb_bus_reader_ops sub_reader_ops = { sub_room, sub_wants, sub_take };

/* A subscriber declared again while events it had taken still run reads
 * again from its cursor once they are over: the window stays in id order. */
static void attach_reader(struct bus_sub *s)
{
    if (!s->reader && s->active && s->npending == 0 && !stopping)
        s->reader = sb_bus_reader_new(s->cursor, &sub_reader_ops, s);
}

/* Outcomes */

/* The lane goes on with its next event, or is dropped when empty. */
static void lane_next(struct bus_lane *l)
{
    if (l->head && l->sub->active)
        lane_ready(l);
    else if (!l->head)
        lane_free(l);
}

static void attempt_over(struct bus_pending *p)
{
    in_flight--;
    p->running = 0;
    p->sub->nrunning--;
    p->lane->busy = 0;
}

/* The event is done for its subscriber (handled, or dead). */
static void done(struct bus_pending *p)
{
    struct bus_sub *s = p->sub;
    struct bus_lane *l = p->lane;
    pending_remove(p);
    if (s->active) {
        attach_reader(s);
        update_cursor(s);
        if (s->reader)
            sb_bus_reader_kick(s->reader);
    }
    lane_next(l);
    schedule_drain();
}

static void log_outcome(enum sb_log_level level, const char *msg, const struct bus_pending *p, const char *reason)
{
    char id[24], attempts[16];
    snprintf(id, sizeof id, "%lld", (long long)p->ev->id);
    snprintf(attempts, sizeof attempts, "%d", p->attempts);
    sb_log(level, msg, "subscriber", p->sub->id, "event", id, "name", p->ev->name, "conversation",
           p->ev->conversation, "attempts", attempts, "error", reason, NULL);
}

static void failed(struct bus_pending *p, const char *reason)
{
    struct bus_sub *s = p->sub;
    struct bus_lane *l = p->lane;
    attempt_over(p);
    s->failed++;
    if (!s->active) {
        /* the subscriber left: the event stays after its cursor */
        pending_remove(p);
        lane_next(l);
        return;
    }
    if (p->attempts >= settings.max_attempts) {
        s->dead++;
        log_outcome(SB_LOG_ERROR, "event handler dead", p, reason);
        done(p);
        return;
    }
    {
        double delay = pow(2.0, p->attempts - 1);
        struct timeval tv;
        if (delay > settings.retry_max)
            delay = settings.retry_max;
        if (!paused)
            log_outcome(SB_LOG_WARN, "event handler failed: retrying", p, reason);
        tv = sb_timeval(delay);
        l->busy = 1;
        evtimer_add(l->retry, &tv);
    }
}

void sb_bus_failed(struct sb_bus_attempt *a, const char *reason)
{
    if (stopping)
        return;
    failed((struct bus_pending *)a, reason ? reason : "error");
}

static void handled_committed(void *arg, int ok)
{
    struct bus_pending *p = arg;
    if (stopping)
        return;
    if (!ok) {
        failed(p, "the handler's writes did not commit");
        return;
    }
    attempt_over(p);
    done(p);
}

void sb_bus_handled(struct sb_bus_attempt *a, uint64_t seq)
{
    struct bus_pending *p = (struct bus_pending *)a;
    if (stopping)
        return;
    /* done only once what the handler wrote is durable: a batch that fails
     * undoes it, and the event is tried again */
    store_when_committed(seq, handled_committed, p);
}

/* Starting handlers, from the loop */

static void start(struct bus_pending *p)
{
    struct sb_bus_dispatch d;
    struct bus_sub *s = p->sub;
    p->lane->busy = 1;
    p->running = 1;
    p->attempts++;
    s->nrunning++;
    s->dispatched++;
    in_flight++;
    d.subscriber = s->id;
    d.event = p->ev;
    d.attempt = p->attempts;
    runner((struct sb_bus_attempt *)p, &d);   /* may report at once */
}

static void drain(evutil_socket_t fd, short what, void *arg)
{
    int n = 0;
    (void)fd;
    (void)what;
    (void)arg;
    while (ready_head && in_flight < settings.concurrency && n < STARTS_PER_TURN && runner && started && !paused &&
           !stopping) {
        struct bus_lane *l = ready_head;
        ready_head = l->next_ready;
        if (!ready_head)
            ready_tail = NULL;
        l->queued = 0;
        if (!l->head || l->busy || !l->sub->active)
            continue;
        start(l->head);
        n++;
    }
    if (ready_head && in_flight < settings.concurrency && n == STARTS_PER_TURN)
        event_active(drain_ev, 0, 0);
}

/* Declarations and loads */

void sb_bus_declare(struct sb_txn *load_txn, unsigned gen, const char *id, const char *pattern)
{
    struct declaration *d = sb_xcalloc(1, sizeof *d);
    d->gen = gen;
    d->id = sb_xstrdup(id);
    d->pattern = sb_xstrdup(pattern);
    d->start = -1;
    if (!sub_find(id)) {
        /* first seen: it starts at the end of the journal, and its cursor
         * commits with the load, so a crash cannot make it start again
         * further on */
        d->start = sb_bus_head();
        sb_txn_write(load_txn, store_put_cursor(id, d->start, sb_now_wall()));
    }
    d->next = declarations;
    declarations = d;
}

static void activate(struct bus_sub *s)
{
    s->active = 1;
    s->seen = sb_now_wall();
    mark_dirty(s);
    attach_reader(s);
}

struct lane_list {
    struct bus_lane **v;
    size_t n, cap;
};

static void collect_lane(const void *node, VISIT which, void *closure)
{
    struct lane_list *list = closure;
    if (which != postorder && which != leaf)
        return;
    if (list->n == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 16;
        list->v = sb_xrealloc(list->v, list->cap * sizeof *list->v);
    }
    list->v[list->n++] = *(struct bus_lane *const *)node;
}

/* Leaves its cursor where the oldest event not done is; what is pending
 * and not running is dropped (read again if a later load declares it). */
static void deactivate(struct bus_sub *s)
{
    struct lane_list list = { NULL, 0, 0 };
    size_t i;
    update_cursor(s);
    sb_bus_reader_free(s->reader);
    s->reader = NULL;
    s->active = 0;
    s->seen = sb_now_wall();
    mark_dirty(s);
    twalk_r(s->lanes, collect_lane, &list);
    for (i = 0; i < list.n; i++) {
        struct bus_lane *l = list.v[i];
        struct bus_pending *keep = l->head && l->head->running ? l->head : NULL;
        struct bus_pending *p = keep ? keep->lane_next : l->head, *next;
        for (; p; p = next) {
            next = p->lane_next;
            window_unlink(p);
        }
        if (keep) {
            keep->lane_next = NULL;
            l->tail = keep;
        } else {
            l->head = l->tail = NULL;
            lane_free(l);
        }
    }
    free(list.v);
}

static void drop_declarations(unsigned gen, int up_to)
{
    struct declaration **p = &declarations;
    while (*p) {
        struct declaration *d = *p;
        if (d->gen == gen || (up_to && d->gen < gen)) {
            *p = d->next;
            free(d->id);
            free(d->pattern);
            free(d);
        } else {
            p = &d->next;
        }
    }
}

void sb_bus_commit_load(unsigned gen)
{
    struct declaration *d;
    struct bus_sub *s;
    for (s = subs; s; s = s->next)
        s->want = 0;
    for (d = declarations; d; d = d->next) {
        if (d->gen != gen)
            continue;
        s = sub_find(d->id);
        if (!s)
            s = sub_new(d->id, d->start >= 0 ? d->start : sb_bus_head(), sb_now_wall());
        free(s->pattern);
        s->pattern = sb_xstrdup(d->pattern);
        s->want = 1;
    }
    for (s = subs; s; s = s->next) {
        if (s->want && !s->active)
            activate(s);
        else if (!s->want && s->active)
            deactivate(s);
        else if (s->reader)
            sb_bus_reader_kick(s->reader);
    }
    drop_declarations(gen, 1);
}

void sb_bus_discard_load(unsigned gen) { drop_declarations(gen, 0); }

/* Start-up, the graceful stop, retention */

static void cursor_row(void *arg, const struct store_row *r)
{
    (void)arg;
    if (r->text[0] && !sub_find(r->text[0]))
        sub_new(r->text[0], strtoll(r->text[1], NULL, 10), r->num[2]);
}

static void render_metrics(struct evbuffer *out);

int sb_bus_load(void)
{
    static int registered;
    sb_bus_start_reading();
    if (!registered) {
        sb_metrics_register(render_metrics);
        registered = 1;
    }
    return store_load_cursors(cursor_row, NULL);
}

void sb_bus_start(void)
{
    struct bus_sub *s;
    started = 1;
    for (s = subs; s; s = s->next)
        if (s->reader)
            sb_bus_reader_kick(s->reader);
    schedule_drain();
}

void sb_bus_pause(void)
{
    paused = 1;
    sb_bus_stop_reading();
    flush_cursors();
}

void sb_bus_sweep(void)
{
    struct bus_sub **p = &subs;
    double now = sb_now_wall();
    while (*p) {
        struct bus_sub *s = *p;
        if (s->active && now - s->seen_written > SEEN_EVERY)
            mark_dirty(s);
        if (!s->active && s->nrunning == 0 && !s->dirty && now - s->seen > settings.keep_cursors) {
            sb_log(SB_LOG_INFO, "events: forgetting the cursor of a subscriber no load declares", "subscriber",
                   s->id, NULL);
            store_submit_system(store_delete_cursor(s->id));
            *p = s->next;
            free(s->id);
            free(s->pattern);
            free(s);
        } else {
            p = &s->next;
        }
    }
}

static void lane_node_free(void *node)
{
    struct bus_lane *l = node;
    while (l->head) {
        struct bus_pending *p = l->head;
        l->head = p->lane_next;
        sb_bus_event_unref(p->ev);
        free(p);
    }
    event_free(l->retry);
    free(l->key);
    free(l);
}

void sb_bus_free_all(void)
{
    stopping = 1;
    flush_cursors();
    while (subs) {
        struct bus_sub *s = subs;
        subs = s->next;
        sb_bus_reader_free(s->reader);
        tdestroy(s->lanes, lane_node_free);
        free(s->id);
        free(s->pattern);
        free(s);
    }
    drop_declarations(~0u, 1);
    ready_head = ready_tail = NULL;
    if (drain_ev)
        event_free(drain_ev);
    if (flush_ev)
        event_free(flush_ev);
    drain_ev = flush_ev = NULL;
    sb_bus_readers_free();
}

static void sub_counter(struct evbuffer *out, const char *name, const char *help, const char *type, int which)
{
    struct bus_sub *s;
    int64_t head = sb_bus_head();
    sb_metrics_family(out, name, type, help);
    for (s = subs; s; s = s->next) {
        double v = which == 0 ? (double)s->dispatched : which == 1 ? (double)s->failed
                 : which == 2 ? (double)s->dead : which == 3 ? (double)s->npending
                 : (double)(head > s->cursor ? head - s->cursor : 0);
        evbuffer_add_printf(out, "%s{subscriber=\"", name);
        sb_metrics_label_value(out, s->id);
        evbuffer_add_printf(out, "\"} %.0f\n", v);
    }
}

static void render_metrics(struct evbuffer *out)
{
    sub_counter(out, "switchboard_events_dispatched_total", "Event handler runs started, by subscriber.", "counter", 0);
    sub_counter(out, "switchboard_events_failed_total", "Event handler runs that failed, by subscriber.", "counter", 1);
    sub_counter(out, "switchboard_events_dead_total", "Events given up after every attempt failed, by subscriber.",
                "counter", 2);
    sub_counter(out, "switchboard_events_pending", "Events read and not yet handled, by subscriber.", "gauge", 3);
    sub_counter(out, "switchboard_events_lag", "Journal ids between a subscriber's cursor and the newest event.",
                "gauge", 4);
    sb_metrics_gauge(out, "switchboard_events_handlers_in_flight", "Event handler jobs running.", (double)in_flight);
}
