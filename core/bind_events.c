/* Lua bindings of the event bus (bus.c):
 *   events.on(name, handler [, opts])        -- at the top level of a script
 *   events.agent_status(desk, agent, status) -- publishes agent.status_changed
 *   events.valid(pattern)                    -- true, or false and why
 *   events.stream{after, events, conversation, channels}  -- a route's answer: an SSE stream (sse.c)
 * and the runner that starts event handlers as jobs. A runtime's
 * subscriptions live in its registry (SUBS_KEY): subscriber id -> {handler,
 * pattern}; the bus knows only ids and patterns, so a handler always runs on
 * the runtime current when its event is dispatched. */
#include "bind_events.h"

#include <ctype.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "bus.h"
#include "conv.h"
#include "job.h"
#include "luajson.h"
#include "runtime.h"
#include "sse.h"
#include "txn.h"

#define SUBS_KEY "sb.subscriptions"
#define STREAM_MT "sb.event_stream"
#define STREAM_PATTERNS_MAX 32
#define ID_MAX 200
#define FIELD_MAX 256

/* Pushes the runtime's table of subscriptions, creating it. Stack: [-0, +1]. */
static void push_subscriptions(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, SUBS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, SUBS_KEY);
    }
}

/* "<folder>/<file>" of the script calling events.on: stable across
 * installs (the base folder may move), distinct between folders. */
static void caller_file(lua_State *L, char *out, size_t size)
{
    lua_Debug ar;
    const char *src = "?", *last = NULL, *prev = NULL, *p;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "S", &ar))
        src = ar.source[0] == '@' ? ar.source + 1 : ar.short_src;
    for (p = src; *p; p++) {
        if (*p == '/') {
            prev = last;
            last = p;
        }
    }
    snprintf(out, size, "%s", prev ? prev + 1 : src);   /* one folder or none: as it is */
}

static int valid_id(const char *id, size_t n)
{
    size_t i;
    if (n == 0 || n > ID_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (c <= ' ' || c == '"' || c == '\\' || c >= 0x7f)
            return 0;
    }
    return 1;
}

/* events.on(name, handler [, {id = "..."}]) -> the subscriber id */
static int events_on(lua_State *L)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    const char *pattern = luaL_checkstring(L, 1);
    char err[200], id[ID_MAX + 64];
    size_t n;
    if (!rt->loading)
        return luaL_error(L, "events.on: only at the top level of a script (subscriptions belong to a load)");
    if (sb_bus_check_pattern(pattern, err, sizeof err))
        return luaL_argerror(L, 1, err);
    if (!lua_isfunction(L, 2) && !(lua_type(L, 2) == LUA_TSTRING && lua_rawlen(L, 2) > 0))
        return luaL_argerror(L, 2, "a function or a handler name");
    lua_settop(L, 3);
    push_subscriptions(L);                                   /* 4 */
    if (!lua_isnil(L, 3)) {
        const char *given;
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "id") != LUA_TSTRING)
            return luaL_argerror(L, 3, "opts.id must be a string");
        given = lua_tolstring(L, -1, &n);
        if (!valid_id(given, n))
            return luaL_argerror(L, 3, "opts.id must be 1-200 printable ASCII characters without spaces or quotes");
        snprintf(id, sizeof id, "%s", given);
        lua_pop(L, 1);
        if (lua_getfield(L, 4, id) != LUA_TNIL)
            return luaL_error(L, "events.on: subscriber id '%s' is used twice", id);
        lua_pop(L, 1);
    } else {
        char file[128], base[ID_MAX];
        int k;
        caller_file(L, file, sizeof file);
        snprintf(base, sizeof base, "%s:%s", file, pattern);
        snprintf(id, sizeof id, "%s", base);
        for (k = 2; lua_getfield(L, 4, id) != LUA_TNIL; k++) {
            lua_pop(L, 1);
            snprintf(id, sizeof id, "%s#%d", base, k);
        }
        lua_pop(L, 1);
    }
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "handler");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "pattern");
    lua_setfield(L, 4, id);
    sb_bus_declare(sb_job_txn_of(L), rt->generation, id, pattern);
    lua_pushstring(L, id);
    return 1;
}

static const char *check_field(lua_State *L, int idx, const char *what)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    if (n == 0 || n > FIELD_MAX || strlen(s) != n || !sb_utf8_valid(s, n))
        luaL_error(L, "events.agent_status: %s must be 1-%d bytes of UTF-8 without NUL", what, FIELD_MAX);
    return s;
}

/* events.agent_status(desk, agent, status): agent.status_changed, with the
 * job's other writes. */
static int events_agent_status(lua_State *L)
{
    const char *desk = check_field(L, 1, "desk"), *agent = check_field(L, 2, "agent");
    const char *status = check_field(L, 3, "status");
    struct sb_txn *t = sb_job_txn_of(L);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, desk);
    lua_setfield(L, -2, "desk");
    lua_pushstring(L, agent);
    lua_setfield(L, -2, "agent");
    lua_pushstring(L, status);
    lua_setfield(L, -2, "status");
    sb_json_encode_at(L, -1);
    sb_bus_journal(t, "agent_status", lua_tostring(L, -1));
    return 0;
}

/* events.valid(pattern) -> true | false, why */
static int events_valid(lua_State *L)
{
    char err[200];
    if (sb_bus_check_pattern(luaL_checkstring(L, 1), err, sizeof err) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, err);
    return 2;
}

/* The stream a route returns: a userdata owning the request until the
 * server takes it (or the collector frees it). */
struct stream_ud {
    struct sb_sse_request *r;
};

static int stream_gc(lua_State *L)
{
    struct stream_ud *u = luaL_checkudata(L, 1, STREAM_MT);
    sb_sse_request_free(u->r);
    u->r = NULL;
    return 0;
}

/* Reads t.field as an array of strings into the filter (add). */
static void string_list(lua_State *L, int t, const char *field, struct sb_bus_filter *f, int patterns)
{
    lua_Integer i, n;
    int type = lua_getfield(L, t, field);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    if (type != LUA_TTABLE)
        luaL_error(L, "events.stream: %s must be an array of strings", field);
    n = (lua_Integer)lua_rawlen(L, -1);
    if (patterns && n > STREAM_PATTERNS_MAX)
        luaL_error(L, "events.stream: at most %d event patterns", STREAM_PATTERNS_MAX);
    if (!patterns)
        f->restricted = 1;
    for (i = 1; i <= n; i++) {
        char err[200];
        const char *s;
        if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
            luaL_error(L, "events.stream: %s must be an array of strings", field);
        s = lua_tostring(L, -1);
        if (patterns && sb_bus_check_pattern(s, err, sizeof err))
            luaL_error(L, "events.stream: %s", err);
        if (patterns)
            sb_bus_filter_add_pattern(f, s);
        else
            sb_bus_filter_add_channel(f, s);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* events.stream{after =, events =, conversation =, channels =} -> 200, stream:
 * what a route returns to answer with an event stream (docs/events.md). */
static int events_stream(lua_State *L)
{
    struct sb_job *job = sb_job_running();
    struct stream_ud *u;
    struct sb_sse_request *r;
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!job || job->kind != SB_JOB_HTTP)
        return luaL_error(L, "events.stream: only a route's handler can answer with a stream");
    lua_settop(L, 1);
    u = lua_newuserdatauv(L, sizeof *u, 0);                  /* 2 */
    u->r = NULL;
    luaL_setmetatable(L, STREAM_MT);
    u->r = r = sb_xcalloc(1, sizeof *r);
    r->filter = sb_bus_filter_new();
    r->after = -1;
    if (lua_getfield(L, 1, "after") != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
            return luaL_error(L, "events.stream: after must be an event id (an integer >= 0)");
        r->after = (int64_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    switch (lua_getfield(L, 1, "conversation")) {
    case LUA_TNIL:
        break;
    case LUA_TSTRING:
        r->filter->conversation = sb_xstrdup(lua_tostring(L, -1));
        break;
    default:
        return luaL_error(L, "events.stream: conversation must be a conversation id");
    }
    lua_pop(L, 1);
    string_list(L, 1, "events", r->filter, 1);
    string_list(L, 1, "channels", r->filter, 0);
    if (lua_getfield(L, 1, "desk") != LUA_TNIL) {
        /* the desk's agents' status changes, matched in the event's data as
         * the engine writes it (a name of [A-Za-z0-9_-] needs no escaping) */
        size_t n, i;
        const char *desk = lua_isstring(L, -1) ? lua_tolstring(L, -1, &n) : NULL;
        char *needle;
        if (!desk || n == 0 || n > 128)
            return luaL_error(L, "events.stream: desk must be a desk's name");
        for (i = 0; i < n; i++)
            if (!isalnum((unsigned char)desk[i]) && desk[i] != '_' && desk[i] != '-')
                return luaL_error(L, "events.stream: desk must be letters, digits, _ and -");
        needle = sb_xmalloc(n + 10);
        snprintf(needle, n + 10, "\"desk\":\"%s\"", desk);
        r->filter->desk_needle = needle;
        r->filter->restricted = 1;
    }
    lua_pop(L, 1);
    lua_pushinteger(L, 200);
    lua_insert(L, 2);
    return 2;
}

/* Whether v is a stream userdata (for run_route). */
static int events_is_stream(lua_State *L)
{
    lua_pushboolean(L, luaL_testudata(L, 1, STREAM_MT) != NULL);
    return 1;
}

struct sb_sse_request *sb_bind_events_take_stream(lua_State *L, int idx)
{
    struct stream_ud *u = luaL_testudata(L, idx, STREAM_MT);
    struct sb_sse_request *r;
    if (!u)
        return NULL;
    r = u->r;
    u->r = NULL;
    return r;
}

void sb_bind_events_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "on", events_on }, { "agent_status", events_agent_status }, { "valid", events_valid },
        { "stream", events_stream }, { "_is_stream", events_is_stream }, { NULL, NULL }
    };
    if (luaL_newmetatable(L, STREAM_MT)) {
        lua_pushcfunction(L, stream_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "event stream");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_setglobal(L, "events");
}

/* The runner: engine.run_event(handler, event, data_json) as a job. */

static void event_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    if (out->result == SB_JOB_DONE)
        sb_bus_handled(job->owner, out->seq);
    else
        sb_bus_failed(job->owner, out->detail ? out->detail : out->message ? out->message
                                   : out->code ? out->code : "error");
}

static void run(struct sb_bus_attempt *a, const struct sb_bus_dispatch *d)
{
    struct sb_runtime *rt = sb_runtime_current();
    const struct sb_bus_event *ev = d->event;
    char label[160];
    struct sb_job *job;
    lua_State *co;
    snprintf(label, sizeof label, "event:%s", d->subscriber);
    job = sb_job_new(rt, SB_JOB_EVENT, label, event_done, a);
    /* what the handler journals was caused by this event */
    sb_txn_set_event_depth(sb_job_txn(job), ev->depth + 1);
    co = job->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(co, -1, "run_event");
    lua_remove(co, -2);
    /* the handler, or nil when this runtime has no such subscription */
    if (lua_getfield(co, LUA_REGISTRYINDEX, SUBS_KEY) == LUA_TTABLE) {
        if (lua_getfield(co, -1, d->subscriber) == LUA_TTABLE)
            lua_getfield(co, -1, "handler");
        else
            lua_pushnil(co);
        lua_replace(co, -3);
        lua_pop(co, 1);
    }
    lua_createtable(co, 0, 6);
    lua_pushinteger(co, (lua_Integer)ev->id);
    lua_setfield(co, -2, "id");
    lua_pushstring(co, ev->name);
    lua_setfield(co, -2, "name");
    if (ev->conversation[0]) {
        lua_pushstring(co, ev->conversation);
        lua_setfield(co, -2, "conversation");
    }
    lua_pushnumber(co, ev->at);
    lua_setfield(co, -2, "at");
    lua_pushinteger(co, d->attempt);
    lua_setfield(co, -2, "attempt");
    /* how many handlers in a row led to it: a rule's own loop guard */
    lua_pushinteger(co, ev->depth);
    lua_setfield(co, -2, "depth");
    lua_pushstring(co, ev->data);
    sb_job_start(job, 3);
}

void sb_bind_events_runner(void)
{
    sb_bus_set_runner(run);
}
