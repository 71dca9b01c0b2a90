/* Core bindings: log, now, sleep, config, route, http_error, bounded,
 * generation. */
#include "bind_core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "job.h"
#include "log.h"
#include "loop.h"
#include "luajson.h"
#include "runtime.h"

#define LOG_FIELDS_MAX 32

/* log.<level>(msg [, fields]): fields is a table; keys are sorted so the
 * same event always prints the same way. */
static int log_at(lua_State *L, enum sb_log_level level)
{
    const char *keys[LOG_FIELDS_MAX], *values[LOG_FIELDS_MAX];
    size_t lens[LOG_FIELDS_MAX];
    size_t n = 0, i, j;
    int acc;
    if (!sb_log_enabled(level))
        return 0;
    lua_settop(L, 2);
    luaL_tolstring(L, 1, NULL);                 /* 3: message */
    lua_newtable(L);                            /* 4: k1, v1, k2, v2, ... as strings */
    acc = 4;
    if (lua_type(L, 2) == LUA_TTABLE) {
        int k = 0;
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if ((size_t)k / 2 < LOG_FIELDS_MAX) {
                luaL_tolstring(L, -2, NULL);
                lua_rawseti(L, acc, ++k);
                luaL_tolstring(L, -1, NULL);
                lua_rawseti(L, acc, ++k);
            }
            lua_pop(L, 1);
        }
        n = (size_t)k / 2;
    }
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, acc, (lua_Integer)(2 * i + 1));
        keys[i] = lua_tostring(L, -1);
        lua_pop(L, 1);  /* the string stays referenced by the table */
        lua_rawgeti(L, acc, (lua_Integer)(2 * i + 2));
        values[i] = lua_tolstring(L, -1, &lens[i]);
        lua_pop(L, 1);
    }
    for (i = 1; i < n; i++) {
        for (j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *tk = keys[j], *tv = values[j];
            size_t tl = lens[j];
            keys[j] = keys[j - 1]; values[j] = values[j - 1]; lens[j] = lens[j - 1];
            keys[j - 1] = tk; values[j - 1] = tv; lens[j - 1] = tl;
        }
    }
    sb_log_pairs(level, lua_tostring(L, 3), n, keys, values, lens);
    return 0;
}

static int log_debug(lua_State *L) { return log_at(L, SB_LOG_DEBUG); }
static int log_info(lua_State *L) { return log_at(L, SB_LOG_INFO); }
static int log_warn(lua_State *L) { return log_at(L, SB_LOG_WARN); }
static int log_error(lua_State *L) { return log_at(L, SB_LOG_ERROR); }

static int now_binding(lua_State *L)
{
    lua_pushnumber(L, sb_now_wall());
    return 1;
}

/* sleep(seconds): yields the job's coroutine until a timer fires. */
struct sleep_wait {
    struct event *ev;
    struct sb_job *job;
};

static void sleep_cancel(struct sb_job *job, void *wait)
{
    struct sleep_wait *w = wait;
    (void)job;
    event_free(w->ev);
    free(w);
}

static void sleep_fire(evutil_socket_t fd, short what, void *arg)
{
    struct sleep_wait *w = arg;
    struct sb_job *job = w->job;
    (void)fd;
    (void)what;
    event_free(w->ev);
    free(w);
    sb_job_wake(job, 0);
}

static int sleep_binding(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct sb_job *job = sb_job_checkwait(L);
    struct sleep_wait *w;
    struct timeval tv;
    if (!(s >= 0) || s > 86400 * 365)
        return luaL_argerror(L, 1, "seconds must be between 0 and a year");
    w = sb_xcalloc(1, sizeof *w);
    w->job = job;
    w->ev = evtimer_new(sb_base, sleep_fire, w);
    tv = sb_timeval(s);
    evtimer_add(w->ev, &tv);
    sb_job_wait(job, sleep_cancel, w);
    return lua_yield(L, 0);
}

/* route(method, pattern, handler [, level [, calls]]): load time only. The
 * handler is a name ("module.fn") or a function, which is named after where
 * route() was called. `level`, as in error(), says whose call that is: 2 for
 * a helper that declares routes for its caller (inbound.endpoint), so that
 * names and load errors point at the caller's file and line. `calls` is the
 * name of a handler such a helper's function calls: like a route's handler
 * name, it must resolve when the load ends. */
static int route_binding(lua_State *L)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    const char *method = luaL_checkstring(L, 1);
    const char *pattern = luaL_checkstring(L, 2);
    lua_Integer level = luaL_optinteger(L, 4, 1);
    const char *calls = luaL_optstring(L, 5, NULL);
    const char *handler;
    char msg[300], where[300];
    size_t wl;
    luaL_argexpected(L, lua_type(L, 3) == LUA_TSTRING || lua_isfunction(L, 3), 3, "handler name or function");
    luaL_argcheck(L, level >= 1 && level <= 10, 4, "level must be 1 to 10");
    lua_settop(L, 5);
    if (!rt->loading)
        return luaL_error(L, "route() may only be called at load time (top level of a script)");
    luaL_where(L, (int)level);
    snprintf(where, sizeof where, "%s", lua_tostring(L, -1));
    wl = strlen(where);
    while (wl > 0 && (where[wl - 1] == ' ' || where[wl - 1] == ':'))
        where[--wl] = '\0';
    if (lua_isfunction(L, 3)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, rt->engine_ref);
        lua_getfield(L, -1, "name_function");
        lua_pushfstring(L, "%s %s at %s", method, pattern, where);
        lua_pushvalue(L, 3);
        lua_call(L, 2, 1);
        lua_replace(L, 3);
    }
    handler = lua_tostring(L, 3);
    if (sb_runtime_add_route(rt, method, pattern, calls, handler, where, msg, sizeof msg)) {
        lua_pushfstring(L, "%s%sroute(): %s", where, wl ? ": " : "", msg);
        return lua_error(L);
    }
    return 0;
}

/* http_error(status, code, message): raises an error the engine answers
 * with that status and {"error":{"code":...,"message":...}}. */
static int http_error_binding(lua_State *L)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    lua_Integer status = luaL_checkinteger(L, 1);
    const char *code = luaL_checkstring(L, 2);
    const char *message = luaL_optstring(L, 3, code);
    luaL_argcheck(L, status >= 400 && status <= 599, 1, "status must be 400-599");
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->http_error_mt_ref);
    lua_setmetatable(L, -2);
    return lua_error(L);
}

static int http_error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "status");
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "http_error %s %s: %s", lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
    return 1;
}

/* bounded(ms, fn, ...): see sb_job_bound_open in job.h. The stack holds
 * [true, results...] once fn returned, [true, error] once it raised. */
static int bounded_end(lua_State *L, int status, lua_KContext level)
{
    char msg[300];
    switch (sb_job_bound_close(L, (int)level, msg, sizeof msg)) {
    case SB_BOUND_PROPAGATE:
        return sb_job_bound_raise(L);
    case SB_BOUND_EXCEEDED:
        lua_pushboolean(L, 0);
        lua_pushstring(L, msg);
        return 2;
    case SB_BOUND_WITHIN:
        break;
    }
    if (status == LUA_OK || status == LUA_YIELD)
        return lua_gettop(L);
    lua_pushboolean(L, 0);
    lua_replace(L, 1);
    return 2;
}

static int bounded_binding(lua_State *L)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    lua_Integer ms = luaL_checkinteger(L, 1);
    int nargs = lua_gettop(L) - 2, level;
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (ms < 1 || (double)ms > rt->cfg->cpu_ms_per_job)
        return luaL_argerror(L, 1, lua_pushfstring(L, "ms must be from 1 to %d (lua.cpu_ms_per_job)",
                                                   (int)rt->cfg->cpu_ms_per_job));
    level = sb_job_bound_open(L, (int)ms);
    lua_pushboolean(L, 1);
    lua_replace(L, 1);
    /* fn may wait (conversations.get) in the job's own coroutine; in one
     * the script made, a yield out of fn would leave the bound open while
     * other code runs, so there it is refused as across any C call. */
    if (sb_job_can_wait(L))
        return bounded_end(L, lua_pcallk(L, nargs, LUA_MULTRET, 0, level, bounded_end), level);
    return bounded_end(L, lua_pcall(L, nargs, LUA_MULTRET, 0), level);
}

/* generation(): the generation of the runtime this code runs in (a job
 * started before a reload finishes on the runtime it started on). */
static int generation_binding(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sb_runtime_of(L)->generation);
    return 1;
}

void sb_bind_core_open(struct sb_runtime *rt)
{
    static const luaL_Reg log_funcs[] = {
        { "debug", log_debug }, { "info", log_info }, { "warn", log_warn }, { "error", log_error }, { NULL, NULL }
    };
    lua_State *L = rt->L;

    sb_json_open(rt);
    luaL_newlib(L, log_funcs);
    lua_setglobal(L, "log");
    lua_pushcfunction(L, now_binding);
    lua_setglobal(L, "now");
    lua_pushcfunction(L, sleep_binding);
    lua_setglobal(L, "sleep");
    lua_pushcfunction(L, route_binding);
    lua_setglobal(L, "route");
    lua_pushcfunction(L, bounded_binding);
    lua_setglobal(L, "bounded");
    lua_pushcfunction(L, generation_binding);
    lua_setglobal(L, "generation");

    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, http_error_tostring);
    lua_setfield(L, -2, "__tostring");
    rt->http_error_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushcfunction(L, http_error_binding);
    lua_setglobal(L, "http_error");

    sb_config_push_view(rt->cfg, L);
    lua_pushvalue(L, -1);
    rt->config_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setglobal(L, "config");
}
