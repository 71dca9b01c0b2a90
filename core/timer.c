#include "timer.h"

#include <math.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "handler_use.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "schedule.h"
#include "store.h"
#include "txn.h"
#include "util.h"

struct sb_timer {
    uint64_t id;
    double interval;              /* > 0: repeating */
    struct sb_schedule *calendar; /* repeating on a calendar */
    char *handler;
    char *data_json;
    unsigned load_gen;            /* 0: created by a job, kept in the store */
    char *schedule_key;           /* load timers that repeat: keeps their phase */
    double due;                   /* wall clock of the next firing */
    int attempts;                 /* failed runs of a one-shot */
    int running;                  /* its handler runs now */
    int linked;                   /* in the list (armed or waiting for its load) */
    struct event *ev;
    struct sb_timer *prev, *next;
};

struct schedule_phase {
    char *key;
    double next_due;
};

static struct sb_timer *timers;
static void *timers_by_id;        /* tsearch of linked timers by id */
static size_t timers_count;
static uint64_t last_id;
static void *phases;              /* tsearch of stored schedule phases by key (start-up) */
static int paused;
static double retry_max = 300;
static sb_timer_run_fn runner;

static int by_id(const void *a, const void *b)
{
    uint64_t x = ((const struct sb_timer *)a)->id, y = ((const struct sb_timer *)b)->id;
    return x < y ? -1 : x > y;
}

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct schedule_phase *)a)->key, ((const struct schedule_phase *)b)->key);
}

void sb_timer_set_runner(sb_timer_run_fn fn) { runner = fn; }
void sb_timers_configure(double max) { retry_max = max > 0 ? max : 300; }
size_t sb_timers_pending(void) { return timers_count; }

/* Ids follow the clock and never go back, so an id is not reused, not
 * even after a restart: a stale id held by a conversation cannot cancel
 * another one's timer. Ten per millisecond (more borrow from the next
 * ones) keeps them below 10^14, which JSON encoding (14 significant
 * digits) carries exactly until the year 2286. */
static uint64_t new_id(void)
{
    uint64_t by_clock = (uint64_t)(sb_now_wall() * 1000.0) * 10u;
    last_id = by_clock > last_id ? by_clock : last_id + 1;
    return last_id;
}

static struct sb_timer *find(uint64_t id)
{
    struct sb_timer key, **found;
    key.id = id;
    found = tfind(&key, &timers_by_id, by_id);
    return found ? *found : NULL;
}

static void timer_free(struct sb_timer *t)
{
    if (t->ev)
        event_free(t->ev);
    free(t->calendar);
    free(t->handler);
    free(t->data_json);
    free(t->schedule_key);
    free(t);
}

static void link_timer(struct sb_timer *t)
{
    t->prev = NULL;
    t->next = timers;
    if (timers)
        timers->prev = t;
    timers = t;
    tsearch(t, &timers_by_id, by_id);
    timers_count++;
    t->linked = 1;
    if (!t->load_gen)
        sb_handler_use("timer", t->handler, 1);
}

static void unlink_timer(struct sb_timer *t)
{
    if (!t->linked)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    tdelete(t, &timers_by_id, by_id);
    timers_count--;
    t->linked = 0;
    if (!t->load_gen)
        sb_handler_use("timer", t->handler, -1);
    if (t->ev)
        event_del(t->ev);
}

static void timer_fire(evutil_socket_t fd, short what, void *arg);

/* Arms t to fire at t->due. */
static void arm(struct sb_timer *t)
{
    struct timeval tv = sb_timeval(t->due - sb_now_wall());   /* a past due fires at once */
    if (!t->ev)
        t->ev = evtimer_new(sb_base, timer_fire, t);
    if (!paused)
        evtimer_add(t->ev, &tv);
}

/* The firing after `after`, for a repeating timer. */
static double next_due(const struct sb_timer *t, double after)
{
    if (t->calendar) {
        double n = sb_schedule_next(t->calendar, after);
        return isnan(n) ? after + 86400 : n;
    }
    /* keep the phase: the next multiple of the interval after `after` */
    if (t->due > after)
        return t->due;
    return t->due + t->interval * (floor((after - t->due) / t->interval) + 1);
}

static void calendar_text(const struct sb_timer *t, char *buf, size_t size)
{
    if (t->calendar)
        sb_schedule_format(t->calendar, buf, size);
    else
        buf[0] = '\0';
}

static void persist(const struct sb_timer *t, struct sb_txn *txn)
{
    struct store_timer r;
    char cal[SB_SCHEDULE_FORMAT_MAX];
    calendar_text(t, cal, sizeof cal);
    r.id = (int64_t)t->id;
    r.due = t->due;
    r.interval = t->interval;
    r.handler = t->handler;
    r.data = t->data_json;
    r.calendar = cal[0] ? cal : NULL;
    r.attempts = t->attempts;
    if (txn)
        sb_txn_write(txn, store_put_timer(&r));
    else
        store_submit_system(store_put_timer(&r));
}

static void timer_fire(evutil_socket_t fd, short what, void *arg)
{
    struct sb_timer *t = arg;
    double now = sb_now_wall();
    (void)fd;
    (void)what;
    if (paused || !runner)
        return;
    if (t->interval > 0 || t->calendar) {
        /* The schedule moves on whatever the handler does; a run still
         * going when the next is due makes that one skip. */
        t->due = next_due(t, now + 0.0005);
        arm(t);
        if (t->load_gen == 0)
            persist(t, NULL);
        else if (t->schedule_key)
            store_submit_system(store_put_schedule(t->schedule_key, t->due));
        if (t->running)
            return;
    }
    t->running = 1;
    runner(t->id, t->handler, t->data_json);
}

/* Removal of a linked timer as part of a transaction (cancel, or a one-shot
 * whose handler succeeded): gone when the transaction ends, back if its
 * batch fails. */
struct removal {
    uint64_t id;
    struct sb_timer *timer;       /* after end: unlinked, kept for a put-back */
};

static void removal_end(void *data, uint64_t seq)
{
    struct removal *r = data;
    (void)seq;
    r->timer = find(r->id);
    if (r->timer)
        unlink_timer(r->timer);
}

static void removal_abort(void *data) { free(data); }

static void removal_undo(void *data)
{
    struct removal *r = data;
    if (r->timer && !find(r->id)) {
        r->timer->running = 0;
        link_timer(r->timer);
        arm(r->timer);
    } else if (r->timer) {
        timer_free(r->timer);
    }
    free(r);
}

static void removal_commit(void *data)
{
    struct removal *r = data;
    if (r->timer)
        timer_free(r->timer);
    free(r);
}

static const struct sb_txn_effect_ops removal_ops = { removal_end, removal_abort, removal_undo, removal_commit };

static void remove_in(struct sb_txn *txn, struct sb_timer *t)
{
    struct removal *r = sb_xcalloc(1, sizeof *r);
    r->id = t->id;
    sb_txn_effect(txn, &removal_ops, r);
    if (t->load_gen == 0)
        sb_txn_write(txn, store_delete_timer((int64_t)t->id));
}

/* Creation by a job: linked and armed when the transaction ends. */
struct creation {
    struct sb_timer *timer;
    struct sb_txn *txn;
    int cancelled;                /* cancelled by the same transaction */
    struct creation *prev, *next;
};

static struct creation *creations;  /* of live transactions */

static void creation_unlink(struct creation *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        creations = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void creation_end(void *data, uint64_t seq)
{
    struct creation *c = data;
    (void)seq;
    creation_unlink(c);
    if (c->cancelled)
        return;
    link_timer(c->timer);
    arm(c->timer);
}

static void creation_abort(void *data)
{
    struct creation *c = data;
    creation_unlink(c);
    timer_free(c->timer);
    free(c);
}

static void creation_undo(void *data)
{
    struct creation *c = data;
    struct sb_timer *t = c->timer;
    if (t->linked)
        unlink_timer(t);
    /* a firing that already removed it gave it back before this runs */
    timer_free(t);
    free(c);
}

static void creation_commit(void *data)
{
    struct creation *c = data;
    if (c->cancelled)
        timer_free(c->timer);
    free(c);
}

static const struct sb_txn_effect_ops creation_ops = { creation_end, creation_abort, creation_undo, creation_commit };

static struct sb_timer *timer_new(const struct sb_timer_new *n, unsigned load_gen)
{
    struct sb_timer *t = sb_xcalloc(1, sizeof *t);
    double now = sb_now_wall();
    t->id = new_id();
    t->handler = sb_xstrdup(n->handler);
    t->data_json = n->data_json ? sb_xstrdup(n->data_json) : NULL;
    t->load_gen = load_gen;
    if (n->calendar) {
        t->calendar = sb_xmalloc(sizeof *t->calendar);
        *t->calendar = *n->calendar;
        t->due = next_due(t, now);
    } else if (n->interval > 0) {
        t->interval = n->interval;
        t->due = now + n->interval;
    } else {
        t->due = now + n->delay;
    }
    return t;
}

uint64_t sb_timer_create(struct sb_txn *txn, unsigned load_gen, const struct sb_timer_new *n)
{
    struct sb_timer *t = timer_new(n, txn ? 0 : load_gen);
    if (!txn) {
        /* a load timer: keyed to keep its phase, armed when its load is swapped in */
        if (t->interval > 0 || t->calendar) {
            char cal[SB_SCHEDULE_FORMAT_MAX], interval[40];
            size_t len;
            calendar_text(t, cal, sizeof cal);
            snprintf(interval, sizeof interval, "%.17g", t->interval);
            len = strlen(t->handler) + strlen(cal) + strlen(interval) + (t->data_json ? strlen(t->data_json) : 0) + 8;
            t->schedule_key = sb_xmalloc(len);
            snprintf(t->schedule_key, len, "%s|%s|%s", t->handler, cal[0] ? cal : interval,
                     t->data_json ? t->data_json : "");
        }
        link_timer(t);
        return t->id;
    }
    {
        struct creation *c = sb_xcalloc(1, sizeof *c);
        c->timer = t;
        c->txn = txn;
        c->next = creations;
        if (creations)
            creations->prev = c;
        creations = c;
        sb_txn_effect(txn, &creation_ops, c);
        persist(t, txn);
    }
    return t->id;
}

double sb_timer_next_due(uint64_t id)
{
    const struct sb_timer *t = find(id);
    return t ? t->due : -1;
}

int sb_timer_cancel(struct sb_txn *txn, uint64_t id)
{
    struct sb_timer *t = find(id);
    struct creation *c;
    if (t) {
        remove_in(txn, t);
        return 1;
    }
    for (c = creations; c; c = c->next) {
        if (c->timer->id == id && c->txn == txn && !c->cancelled) {
            c->cancelled = 1;
            sb_txn_write(txn, store_delete_timer((int64_t)id));
            return 1;
        }
    }
    return 0;
}

void sb_timer_ran(uint64_t id, struct sb_txn *txn)
{
    struct sb_timer *t = find(id);
    if (!t)
        return;   /* cancelled meanwhile (by the handler itself, too) */
    if (t->interval > 0 || t->calendar) {
        t->running = 0;
        return;
    }
    remove_in(txn, t);
}

void sb_timer_failed(uint64_t id, const char *reason)
{
    struct sb_timer *t = find(id);
    char ids[24], att[16], delay_s[32];
    double delay;
    if (!t)
        return;
    t->running = 0;
    if (t->interval > 0 || t->calendar)
        return;   /* the next firing is already set */
    t->attempts++;
    delay = pow(2.0, t->attempts > 20 ? 20 : t->attempts - 1);
    if (delay > retry_max)
        delay = retry_max;
    t->due = sb_now_wall() + delay;
    arm(t);
    if (t->load_gen == 0)
        persist(t, NULL);
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)t->id);
    snprintf(att, sizeof att, "%d", t->attempts);
    snprintf(delay_s, sizeof delay_s, "%g", delay);
    sb_log(SB_LOG_WARN, "timer handler failed: retrying", "timer", ids, "handler", t->handler, "attempts", att,
           "retry_in", delay_s, "error", reason ? reason : "", NULL);
}

/* Load timers */

static struct sb_timer *same_schedule(const struct sb_timer *t, unsigned gen)
{
    struct sb_timer *o;
    for (o = timers; o; o = o->next)
        if (o->load_gen && o->load_gen != gen && o->schedule_key && !strcmp(o->schedule_key, t->schedule_key))
            return o;
    return NULL;
}

static void phase_free(void *p);

static int key_in_use;
static struct sb_timer *key_probe_list;

/* After the first load of a process: stored phases no script asks for any
 * more are deleted, and the map is not needed again (later loads inherit
 * from the generation before them). */
static void drop_unused_phase(const void *node, VISIT which, void *closure)
{
    const struct schedule_phase *p = *(const struct schedule_phase *const *)node;
    const struct sb_timer *t;
    (void)closure;
    if (which != postorder && which != leaf)
        return;
    key_in_use = 0;
    for (t = key_probe_list; t; t = t->next)
        if (t->schedule_key && !strcmp(t->schedule_key, p->key))
            key_in_use = 1;
    if (!key_in_use)
        store_submit_system(store_delete_schedule(p->key));
}

void sb_timers_commit_load(unsigned gen)
{
    struct sb_timer *t, *next;
    double now = sb_now_wall();
    for (t = timers; t; t = t->next) {
        if (t->load_gen != gen || t->ev)
            continue;
        if (t->schedule_key) {
            const struct sb_timer *old = same_schedule(t, gen);
            struct schedule_phase probe, **stored;
            probe.key = t->schedule_key;
            stored = tfind(&probe, &phases, by_key);
            if (old) {
                t->due = old->due;
            } else if (stored) {
                /* missed while stopped: fire once now, then keep the schedule */
                t->due = (*stored)->next_due > now ? (*stored)->next_due : now;
            } else {
                /* a new schedule: its phase is kept from its first arming */
                store_submit_system(store_put_schedule(t->schedule_key, t->due));
            }
        }
        arm(t);
    }
    for (t = timers; t; t = next) {
        next = t->next;
        if (t->load_gen && t->load_gen != gen) {
            unlink_timer(t);
            timer_free(t);   /* a run in progress only knows its id */
        }
    }
    if (phases) {
        key_probe_list = timers;
        twalk_r(phases, drop_unused_phase, NULL);
        key_probe_list = NULL;
        tdestroy(phases, phase_free);
        phases = NULL;
    }
}

void sb_timers_discard_load(unsigned gen)
{
    struct sb_timer *t = timers, *next;
    for (; t; t = next) {
        next = t->next;
        if (t->load_gen == gen && !t->ev) {
            unlink_timer(t);
            timer_free(t);
        }
    }
}

void sb_timers_pause(void)
{
    struct sb_timer *t;
    paused = 1;
    for (t = timers; t; t = t->next)
        if (t->ev)
            event_del(t->ev);
}

static void phase_free(void *p)
{
    struct schedule_phase *s = p;
    free(s->key);
    free(s);
}

void sb_timers_free_all(void)
{
    while (timers) {
        struct sb_timer *t = timers;
        unlink_timer(t);
        timer_free(t);
    }
    while (creations) {
        struct creation *c = creations;
        creation_unlink(c);
        timer_free(c->timer);
        free(c);
    }
    tdestroy(phases, phase_free);
    phases = NULL;
}

/* Restores a job-created timer: a one-shot fires at its due time (at once
 * if that passed while stopped); a repeating one keeps its phase. */
static void load_row(void *arg, const struct store_row *r)
{
    struct sb_timer *t;
    double now = sb_now_wall();
    (void)arg;
    if (!r->text[3])
        return;
    t = sb_xcalloc(1, sizeof *t);
    t->id = (uint64_t)r->num[0];
    t->due = r->num[1];
    t->interval = r->num[2];
    t->handler = sb_xstrdup(r->text[3]);
    t->data_json = r->text[4] ? sb_xstrdup(r->text[4]) : NULL;
    t->attempts = (int)r->num[6];
    if (r->text[5]) {
        /* canonical text: the spec, then the zone after the last space */
        struct sb_schedule s;
        char spec[SB_SCHEDULE_FORMAT_MAX], *sp;
        snprintf(spec, sizeof spec, "%s", r->text[5]);
        sp = strrchr(spec, ' ');
        if (sp) {
            *sp = '\0';
            if (sb_schedule_parse(spec, sp + 1, &s, NULL, 0) == 0) {
                t->calendar = sb_xmalloc(sizeof *t->calendar);
                *t->calendar = s;
            }
        }
    }
    if (t->id > last_id)
        last_id = t->id;
    if ((t->interval > 0 || t->calendar) && t->due < now)
        t->due = next_due(t, now);
    link_timer(t);
    arm(t);
}

static void load_phase(void *arg, const struct store_row *r)
{
    struct schedule_phase *s;
    (void)arg;
    if (!r->text[0])
        return;
    s = sb_xcalloc(1, sizeof *s);
    s->key = sb_xstrdup(r->text[0]);
    s->next_due = r->num[1];
    if (*(struct schedule_phase **)tsearch(s, &phases, by_key) != s)
        phase_free(s);
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_timers_pending", "Timers waiting to fire.", (double)timers_count);
}

int sb_timers_load(void)
{
    uint64_t stored = (uint64_t)store_max_timer_id();
    if (stored > last_id)
        last_id = stored;
    sb_metrics_register(render_metrics);
    return store_load_timers(load_row, NULL) || store_load_schedules(load_phase, NULL) ? -1 : 0;
}
