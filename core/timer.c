#include "timer.h"

#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "bindings.h"
#include "job.h"
#include "log.h"
#include "loop.h"
#include "runtime.h"
#include "store.h"
#include "util.h"

#define TIMER_MIN_INTERVAL 0.001
#define TIMER_MAX_DELAY (86400.0 * 366)
#define TIMER_DATA_MAX (64 * 1024)

struct sb_timer {
    uint64_t id;
    double delay;
    int repeat;
    char *handler;
    char *data_json;
    unsigned load_generation;
    int persisted;          /* created by a handler: kept in the store */
    int rephase;            /* restored repeating timer: its first period was shorter */
    struct event *ev;
    struct sb_timer *prev, *next;
};

static struct sb_timer *timers;
static void *timers_by_id;      /* tsearch tree of struct sb_timer * keyed by id */
static size_t timers_count;
static uint64_t next_timer_id = 1;
static int paused;

static int by_id(const void *a, const void *b)
{
    uint64_t x = ((const struct sb_timer *)a)->id, y = ((const struct sb_timer *)b)->id;
    return x < y ? -1 : x > y;
}

static void persist_delete(struct sb_timer *t)
{
    struct store_op *op;
    if (!t->persisted)
        return;
    op = store_op_new(STORE_TIMER_DELETE);
    store_op_int(op, (int64_t)t->id);
    sb_job_note_write(store_submit(op));
    t->persisted = 0;
}

static void timer_free(struct sb_timer *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    tdelete(t, &timers_by_id, by_id);
    timers_count--;
    if (t->ev)
        event_free(t->ev);
    free(t->handler);
    free(t->data_json);
    free(t);
}

static void timer_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    (void)job;
    (void)out; /* errors were logged by the job; a timer has nobody to answer */
}

static void timer_fire(evutil_socket_t fd, short what, void *arg)
{
    struct sb_timer *t = arg;
    struct sb_runtime *rt = sb_runtime_current();
    struct sb_job *job;
    char label[160];
    lua_State *co;
    (void)fd;
    (void)what;
    if (paused || !rt)
        return;
    if (t->rephase) {
        struct timeval tv;
        tv.tv_sec = (time_t)t->delay;
        tv.tv_usec = (suseconds_t)((t->delay - (double)tv.tv_sec) * 1e6);
        t->rephase = 0;
        event_add(t->ev, &tv);
    }
    snprintf(label, sizeof label, "timer:%s", t->handler);
    job = sb_job_new(rt, SB_JOB_TIMER, label, timer_done, NULL);
    co = job->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(co, -1, "run_timer");
    lua_remove(co, -2);
    lua_pushstring(co, t->handler);
    if (t->data_json)
        lua_pushstring(co, t->data_json);
    else
        lua_pushnil(co);
    lua_pushinteger(co, (lua_Integer)t->id);
    /* A one-shot timer is gone before its handler runs, so cancelling it
     * from the handler is a no-op rather than a use-after-free. */
    if (!t->repeat) {
        persist_delete(t);
        timer_free(t);
    }
    sb_job_start(job, 3);
}

static void timer_arm(struct sb_timer *t)
{
    struct timeval tv;
    tv.tv_sec = (time_t)t->delay;
    tv.tv_usec = (suseconds_t)((t->delay - (double)tv.tv_sec) * 1e6);
    t->ev = event_new(sb_base, -1, t->repeat ? EV_PERSIST : 0, timer_fire, t);
    event_add(t->ev, &tv);
}

uint64_t sb_timer_create(double delay, int repeat, const char *handler, const char *data_json,
                         unsigned load_generation)
{
    struct sb_timer *t = sb_xcalloc(1, sizeof *t);
    t->id = next_timer_id++;
    t->delay = delay;
    t->repeat = repeat;
    t->handler = sb_xstrdup(handler);
    t->data_json = data_json ? sb_xstrdup(data_json) : NULL;
    t->load_generation = load_generation;
    t->next = timers;
    if (timers)
        timers->prev = t;
    timers = t;
    tsearch(t, &timers_by_id, by_id);
    timers_count++;
    if (load_generation == 0) {
        struct store_op *op = store_op_new(STORE_TIMER_PUT);
        store_op_int(op, (int64_t)t->id);
        store_op_real(op, sb_now_wall() + delay);
        store_op_real(op, repeat ? delay : 0);
        store_op_str(op, handler);
        store_op_str(op, data_json);
        sb_job_note_write(store_submit(op));
        t->persisted = 1;
        timer_arm(t);
    }
    return t->id;
}

/* Restores a handler-created timer from the store: a one-shot fires at its
 * due time (at once if that passed while stopped); a repeating one keeps
 * its phase. */
static void load_row(void *arg, const struct store_row *r)
{
    struct sb_timer *t = sb_xcalloc(1, sizeof *t);
    double now = sb_now_wall(), due = r->num[1], interval = r->num[2];
    (void)arg;
    t->id = (uint64_t)r->num[0];
    t->repeat = interval > 0;
    t->handler = sb_xstrdup(r->text[3]);
    t->data_json = r->text[4] ? sb_xstrdup(r->text[4]) : NULL;
    t->persisted = 1;
    if (t->id >= next_timer_id)
        next_timer_id = t->id + 1;
    t->next = timers;
    if (timers)
        timers->prev = t;
    timers = t;
    tsearch(t, &timers_by_id, by_id);
    timers_count++;
    if (t->repeat) {
        double next = due;
        if (next < now)
            next = due + interval * (double)(long long)((now - due) / interval + 1);
        /* first firing after next - now, then every interval */
        t->delay = interval;
        {
            struct timeval first;
            double d = next - now;
            first.tv_sec = (time_t)d;
            first.tv_usec = (suseconds_t)((d - (double)first.tv_sec) * 1e6);
            t->ev = event_new(sb_base, -1, EV_PERSIST, timer_fire, t);
            /* libevent has no "first at X, then every Y": arm one-shot-like
             * with the persist interval once the first firing happened */
            event_add(t->ev, &first);
            t->rephase = 1;
        }
    } else {
        t->delay = due > now ? due - now : 0;
        timer_arm(t);
    }
}

int sb_timers_load(void)
{
    return store_load_timers(load_row, NULL);
}

int sb_timer_cancel(uint64_t id)
{
    struct sb_timer key, **found;
    key.id = id;
    found = tfind(&key, &timers_by_id, by_id);
    if (!found)
        return 0;
    persist_delete(*found);
    timer_free(*found);
    return 1;
}

void sb_timers_commit_load(unsigned gen)
{
    struct sb_timer *t = timers, *next;
    for (; t; t = next) {
        next = t->next;
        if (t->load_generation == 0)
            continue;
        if (t->load_generation != gen)
            timer_free(t);
        else if (!t->ev)
            timer_arm(t);
    }
}

void sb_timers_discard_load(unsigned gen)
{
    struct sb_timer *t = timers, *next;
    for (; t; t = next) {
        next = t->next;
        if (t->load_generation == gen && !t->ev)
            timer_free(t);
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

void sb_timers_free_all(void)
{
    while (timers)
        timer_free(timers);
}

size_t sb_timers_pending(void) { return timers_count; }

/* Bindings */

static int timer_new(lua_State *L, int repeat)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    double delay = luaL_checknumber(L, 1);
    const char *handler = luaL_checkstring(L, 2);
    const char *data = NULL;
    size_t data_len = 0;
    uint64_t id;
    if (!(delay >= (repeat ? TIMER_MIN_INTERVAL : 0.0)) || delay > TIMER_MAX_DELAY)
        return luaL_argerror(L, 1, repeat ? "interval must be between 0.001 s and a year"
                                          : "delay must be between 0 and a year");
    if (!handler[0])
        return luaL_argerror(L, 2, "handler name is empty");
    lua_settop(L, 3);
    if (!lua_isnil(L, 3)) {
        sb_json_encode_at(L, 3);
        data = lua_tolstring(L, -1, &data_len);
        if (data_len > TIMER_DATA_MAX)
            return luaL_argerror(L, 3, "data larger than 64 KiB once encoded");
    }
    id = sb_timer_create(delay, repeat, handler, data, rt->loading ? rt->generation : 0);
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

static int timer_after(lua_State *L) { return timer_new(L, 0); }
static int timer_every(lua_State *L) { return timer_new(L, 1); }

static int timer_cancel_binding(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    lua_pushboolean(L, id > 0 && sb_timer_cancel((uint64_t)id));
    return 1;
}

void sb_bind_timer_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "after", timer_after }, { "every", timer_every }, { "cancel", timer_cancel_binding }, { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "timer");
}
