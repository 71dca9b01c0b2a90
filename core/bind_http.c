/* http.request: the Lua face of the outbound HTTP client (httpclient.c).
 * The job's coroutine yields until the transfer ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "bind_http.h"
#include "httpclient.h"
#include "job.h"
#include "util.h"

#define DEFAULT_TIMEOUT 30.0
#define MAX_REQUEST_HEADERS 64

void sb_http_push_headers(lua_State *L, const struct sb_http_response *r)
{
    size_t off = 0;
    lua_createtable(L, 0, r->nheaders);
    while (off < r->headers_len) {
        const char *name = r->headers + off, *value;
        off += strlen(name) + 1;
        value = r->headers + off;
        off += strlen(value) + 1;
        if (lua_getfield(L, -1, name) == LUA_TSTRING) {
            lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), value);
            lua_remove(L, -2);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, value);
        }
        lua_setfield(L, -2, name);
    }
}

/* Pushes the response (status, headers, body | nil, message) on the job's
 * coroutine and resumes it. */
static void request_done(void *arg, const struct sb_http_response *r)
{
    struct sb_job *job = arg;
    lua_State *co = job->co;
    int nargs;
    if (!r->ok) {
        lua_pushnil(co);
        lua_pushstring(co, r->error);
        nargs = 2;
    } else {
        lua_pushinteger(co, r->status);
        sb_http_push_headers(co, r);
        lua_pushlstring(co, r->body, r->body_len);
        nargs = 3;
    }
    sb_job_wake(job, nargs);
}

static void request_cancel(struct sb_job *job, void *wait)
{
    (void)job;
    sb_http_cancel(wait);
}

/* http.request{method=, url=, headers=, body=, timeout=} -> status, headers, body | nil, err */
static int http_request(lua_State *L)
{
    struct sb_job *job;
    struct sb_http_request req;
    struct sb_http_call *call;
    const char *lines[MAX_REQUEST_HEADERS];
    char err[128];
    size_t n = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    job = sb_job_checkwait(L);
    lua_settop(L, 1);
    memset(&req, 0, sizeof req);
    req.timeout = DEFAULT_TIMEOUT;
    if (lua_getfield(L, 1, "url") != LUA_TSTRING)
        return luaL_error(L, "http.request: url (string) is required");
    req.url = lua_tostring(L, -1);
    if (lua_getfield(L, 1, "method") == LUA_TSTRING)
        req.method = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "http.request: method must be a string");
    if (lua_getfield(L, 1, "body") == LUA_TSTRING)
        req.body = lua_tolstring(L, -1, &req.body_len);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "http.request: body must be a string (use json.encode)");
    if (lua_getfield(L, 1, "timeout") == LUA_TNUMBER)
        req.timeout = lua_tonumber(L, -1);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "http.request: timeout must be a number of seconds");
    if (!(req.timeout > 0) || req.timeout > 86400)
        return luaL_error(L, "http.request: timeout must be between 0 and 86400 seconds");
    /* The job's own deadline is enforced by the job (its timer cancels this
     * transfer and answers 504), so the transfer keeps its own timeout. */
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) ||
                n >= MAX_REQUEST_HEADERS)
                return luaL_error(L, "http.request: headers must be a table of strings (at most %d)", MAX_REQUEST_HEADERS);
            if (strpbrk(lua_tostring(L, -2), ":\r\n") || !lua_tostring(L, -2)[0] || strpbrk(lua_tostring(L, -1), "\r\n"))
                return luaL_error(L, "http.request: header '%s' contains a forbidden character", lua_tostring(L, -2));
            lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
            lua_insert(L, t);   /* keep the line alive below the table */
            t++;
            lines[n++] = lua_tostring(L, t - 1);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "http.request: headers must be a table");
    }
    req.headers = lines;
    req.nheaders = n;
    call = sb_http_start(&req, request_done, job, err, sizeof err);
    if (!call)
        return luaL_error(L, "http.request: %s", err);
    sb_job_wait(job, request_cancel, call);
    return lua_yield(L, 0);
}

void sb_bind_http_open(lua_State *L)
{
    static const luaL_Reg funcs[] = { { "request", http_request }, { NULL, NULL } };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "http");
}
