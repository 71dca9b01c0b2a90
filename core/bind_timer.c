/* timer.after(delay, handler [, data]), timer.every(interval | calendar,
 * handler [, data]), timer.cancel(id), timer.next(id),
 * timer.local_time(t [, tz]), and the runner that starts timer
 * handlers as jobs (timer.c). */
#include "bind_timer.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "job.h"
#include "luajson.h"
#include "runtime.h"
#include "schedule.h"
#include "timer.h"

#define TIMER_MIN_INTERVAL 0.001
#define TIMER_MAX_DELAY (86400.0 * 366)
#define TIMER_DATA_MAX (64 * 1024)

/* A calendar given as "mon-fri 09:00" (in config.timezone) or
 * {at = "mon-fri 09:00", tz = "Europe/Berlin"}. */
static void check_calendar(lua_State *L, int idx, struct sb_schedule *s)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    const char *spec, *tz = rt->cfg->timezone;
    char err[200];
    if (lua_istable(L, idx)) {
        if (lua_getfield(L, idx, "at") != LUA_TSTRING)
            luaL_argerror(L, idx, "a calendar table needs at = \"[days ]HH:MM\"");
        spec = lua_tostring(L, -1);
        if (lua_getfield(L, idx, "tz") == LUA_TSTRING)
            tz = lua_tostring(L, -1);
        else if (!lua_isnil(L, -1))
            luaL_argerror(L, idx, "tz must be a time zone name");
    } else {
        spec = lua_tostring(L, idx);
    }
    if (sb_schedule_parse(spec, tz, s, err, sizeof err) != 0)
        luaL_argerror(L, idx, err);
}

static int timer_new(lua_State *L, int repeat)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    struct sb_timer_new n;
    struct sb_schedule cal;
    uint64_t id;
    memset(&n, 0, sizeof n);
    if (repeat && (lua_type(L, 1) == LUA_TSTRING || lua_istable(L, 1))) {
        check_calendar(L, 1, &cal);
        n.calendar = &cal;
    } else {
        double delay = luaL_checknumber(L, 1);
        if (!(delay >= (repeat ? TIMER_MIN_INTERVAL : 0.0)) || delay > TIMER_MAX_DELAY)
            return luaL_argerror(L, 1, repeat ? "interval must be between 0.001 s and a year"
                                              : "delay must be between 0 and a year");
        if (repeat)
            n.interval = delay;
        else
            n.delay = delay;
    }
    n.handler = luaL_checkstring(L, 2);
    if (!n.handler[0])
        return luaL_argerror(L, 2, "handler name is empty");
    lua_settop(L, 3);
    if (!lua_isnil(L, 3)) {
        size_t len;
        sb_json_encode_at(L, 3);
        n.data_json = lua_tolstring(L, -1, &len);
        if (len > TIMER_DATA_MAX)
            return luaL_argerror(L, 3, "data larger than 64 KiB once encoded");
    }
    if (rt->loading)
        id = sb_timer_create(NULL, rt->generation, &n);
    else
        id = sb_timer_create(sb_job_txn_of(L), 0, &n);
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

static int timer_after(lua_State *L) { return timer_new(L, 0); }
static int timer_every(lua_State *L) { return timer_new(L, 1); }

static int timer_cancel_binding(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    lua_pushboolean(L, id > 0 && sb_timer_cancel(sb_job_txn_of(L), (uint64_t)id));
    return 1;
}

/* timer.next(id) -> the wall-clock time it fires next, or nil */
static int timer_next_binding(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    double due = id > 0 ? sb_timer_next_due((uint64_t)id) : -1;
    if (due < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, due);
    return 1;
}

/* timer.local_time(t [, tz]) -> {year, month, day, hour, min, sec, wday}:
 * the clock of zone tz (default: config.timezone) at epoch seconds t. */
static int timer_local_time_binding(lua_State *L)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    double t = luaL_checknumber(L, 1);
    const char *tz = luaL_optstring(L, 2, rt->cfg->timezone);
    struct sb_local_time lt;
    char err[300];
    int bad = sb_schedule_local_time(t, tz, &lt, err, sizeof err);
    if (bad)
        return luaL_argerror(L, bad, err);
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, lt.year);
    lua_setfield(L, -2, "year");
    lua_pushinteger(L, lt.month);
    lua_setfield(L, -2, "month");
    lua_pushinteger(L, lt.day);
    lua_setfield(L, -2, "day");
    lua_pushinteger(L, lt.hour);
    lua_setfield(L, -2, "hour");
    lua_pushinteger(L, lt.min);
    lua_setfield(L, -2, "min");
    lua_pushinteger(L, lt.sec);
    lua_setfield(L, -2, "sec");
    lua_pushinteger(L, lt.wday);
    lua_setfield(L, -2, "wday");
    return 1;
}

void sb_bind_timer_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "after", timer_after }, { "every", timer_every }, { "cancel", timer_cancel_binding },
        { "next", timer_next_binding }, { "local_time", timer_local_time_binding }, { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "timer");
}

/* The runner: engine.run_timer(handler, data, id) as a job. */

static uint64_t id_of(const struct sb_job *job) { return (uint64_t)(uintptr_t)job->owner; }

static void before_end(struct sb_job *job)
{
    sb_timer_ran(id_of(job), sb_job_txn(job));
}

static void timer_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    if (out->result == SB_JOB_FAILED)
        sb_timer_failed(id_of(job), out->detail ? out->detail : out->message ? out->message : out->code);
}

static void run(uint64_t id, const char *handler, const char *data_json)
{
    struct sb_runtime *rt = sb_runtime_current();
    struct sb_job *job;
    char label[160];
    lua_State *co;
    snprintf(label, sizeof label, "timer:%s", handler);
    job = sb_job_new(rt, SB_JOB_TIMER, label, timer_done, (void *)(uintptr_t)id);
    job->before_end = before_end;
    co = job->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(co, -1, "run_timer");
    lua_remove(co, -2);
    lua_pushstring(co, handler);
    if (data_json)
        lua_pushstring(co, data_json);
    else
        lua_pushnil(co);
    lua_pushinteger(co, (lua_Integer)id);
    sb_job_start(job, 3);
}

void sb_bind_timer_runner(void)
{
    sb_timer_set_runner(run);
}
