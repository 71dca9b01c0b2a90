/* Lua bindings of the outbox (outbox.c):
 *   outbox.send{conversation=, target=, url=, method=, headers=, body=, on_result=, context=, lane=,
 *               retry_after=, error_text=}
 *   outbox.call{conversation=, target=handler_name, data=, lane=}
 *   outbox.requeue(id)      -- a dead letter, sent again (yields: it is read from the store)
 *   outbox.stats()
 * and the runner of outbox handlers (jobs and result handlers). */
#include "bind_outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <lauxlib.h>
#include <lua.h>

#include "bind_http.h"
#include "httpclient.h"
#include "job.h"
#include "luajson.h"
#include "outbox.h"
#include "runtime.h"
#include "store.h"
#include "util.h"

/* Reads t.field as an optional string. */
static const char *opt_string(lua_State *L, int t, const char *field)
{
    int type = lua_getfield(L, t, field);
    const char *s = NULL;
    if (type == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (type != LUA_TNIL && type != LUA_TLIGHTUSERDATA)   /* json.null counts as absent */
        luaL_error(L, "outbox: %s must be a string", field);
    lua_pop(L, 1);   /* the string stays referenced by the table */
    return s;
}

/* conversation = a conversation handle or an id string; copied to buf. */
static const char *conversation_id(lua_State *L, int t, char *buf, size_t size)
{
    int type = lua_getfield(L, t, "conversation");
    const char *id = NULL;
    if (type == LUA_TUSERDATA) {
        lua_getfield(L, -1, "id");
        lua_remove(L, -2);
        type = lua_type(L, -1);
    }
    if (type == LUA_TSTRING) {
        snprintf(buf, size, "%s", lua_tostring(L, -1));
        id = buf;
    } else if (type != LUA_TNIL) {
        luaL_error(L, "outbox: conversation must be a conversation or an id");
    }
    lua_pop(L, 1);
    return id;
}

/* Pushes the lane name: explicit, or "<conversation>|<target>". */
static const char *lane_of(lua_State *L, int t, const char *conv, const char *target)
{
    const char *lane = opt_string(L, t, "lane");
    if (lane) {
        lua_pushstring(L, lane);
    } else {
        lua_pushfstring(L, "%s|%s", conv ? conv : "-", target);
    }
    return lua_tostring(L, -1);
}

/* Encodes t.field (table) as JSON on the stack, or pushes nil. */
static const char *opt_json(lua_State *L, int t, const char *field)
{
    int type = lua_getfield(L, t, field);
    if (type == LUA_TNIL)
        return NULL;                     /* leaves nil on the stack */
    if (type != LUA_TTABLE)
        luaL_error(L, "outbox: %s must be a table", field);
    sb_json_encode_at(L, -1);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* t.field = { header = name } | { json = path } (header only when
 * header_allowed): pushes the hint line "field where name" and returns 1,
 * or pushes nothing and returns 0 when the field is absent. */
static int push_hint(lua_State *L, int t, const char *field, int header_allowed)
{
    int type = lua_getfield(L, t, field);                          /* +1 */
    const char *header = NULL, *json = NULL;
    if (type == LUA_TNIL || type == LUA_TLIGHTUSERDATA) {   /* json.null counts as absent */
        lua_pop(L, 1);
        return 0;
    }
    if (type != LUA_TTABLE)
        goto bad;
    if (lua_getfield(L, -1, "header") == LUA_TSTRING)             /* +2 */
        header = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        goto bad;
    if (lua_getfield(L, -2, "json") == LUA_TSTRING)               /* +3 */
        json = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        goto bad;
    if (!header == !json || (header && !header_allowed))
        goto bad;
    lua_pushfstring(L, "%s %s %s", field, header ? "header" : "json", header ? header : json);
    lua_replace(L, -4);
    lua_pop(L, 2);
    return 1;
bad:
    return luaL_error(L, header_allowed ? "outbox.send: %s must be { header = name } or { json = path }"
                                        : "outbox.send: %s must be { json = path }", field);
}

/* retry_after and error_text as the outbox's hints text (outbox.h);
 * pushed (nil when neither is given) and returned. */
static const char *push_hints(lua_State *L, int t)
{
    int n = push_hint(L, t, "retry_after", 1);
    n += push_hint(L, t, "error_text", 0);
    if (n == 0) {
        lua_pushnil(L);
        return NULL;
    }
    if (n == 2) {
        lua_pushliteral(L, "\n");
        lua_insert(L, -2);
        lua_concat(L, 3);
    }
    return lua_tostring(L, -1);
}

static int outbox_send(lua_State *L)
{
    struct sb_outbox_new n;
    luaL_Buffer hb;
    char err[160], conv[64];
    int64_t id;
    int has_ctype = 0, body_is_table = 0;
    lua_Integer nlines = 0, i;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    memset(&n, 0, sizeof n);
    n.kind = "http";
    n.conversation_id = conversation_id(L, 1, conv, sizeof conv);
    n.target = opt_string(L, 1, "target");
    n.url = opt_string(L, 1, "url");
    n.method = opt_string(L, 1, "method");
    n.on_result = opt_string(L, 1, "on_result");
    if (!n.target || !n.url)
        return luaL_error(L, "outbox.send: target and url are required");
    if (!n.method)
        n.method = "POST";
    n.lane = lane_of(L, 1, n.conversation_id, n.target);          /* 2 */
    n.data = opt_json(L, 1, "context");                            /* 3 */
    switch (lua_getfield(L, 1, "body")) {                          /* 4 */
    case LUA_TSTRING:
    case LUA_TNIL:
        break;
    case LUA_TTABLE:
        sb_json_encode_at(L, 4);
        lua_replace(L, 4);
        body_is_table = 1;
        break;
    default:
        return luaL_error(L, "outbox.send: body must be a string or a table");
    }
    /* Header lines collect in a Lua table (5): nothing leaks when a check raises. */
    lua_newtable(L);                                               /* 5 */
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {             /* 6 */
        lua_pushnil(L);
        while (lua_next(L, 6)) {
            const char *k, *v;
            if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
                return luaL_error(L, "outbox.send: headers must be a table of strings");
            k = lua_tostring(L, -2);
            v = lua_tostring(L, -1);
            if (!k[0] || strpbrk(k, ":\r\n ") || strpbrk(v, "\r\n"))
                return luaL_error(L, "outbox.send: header '%s' contains a forbidden character", k);
            has_ctype |= !strcasecmp(k, "content-type");
            lua_pushfstring(L, "%s: %s\n", k, v);
            lua_rawseti(L, 5, ++nlines);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, 6)) {
        return luaL_error(L, "outbox.send: headers must be a table");
    }
    lua_settop(L, 5);
    if (body_is_table && !has_ctype) {
        lua_pushliteral(L, "Content-Type: application/json\n");
        lua_rawseti(L, 5, ++nlines);
    }
    luaL_buffinit(L, &hb);
    for (i = 1; i <= nlines; i++) {
        lua_rawgeti(L, 5, i);
        luaL_addvalue(&hb);
    }
    luaL_pushresult(&hb);                                          /* 6 */
    n.headers = nlines ? lua_tostring(L, 6) : NULL;
    n.hints = push_hints(L, 1);                                    /* 7 */
    if (lua_type(L, 4) == LUA_TSTRING)
        n.body = lua_tolstring(L, 4, &n.body_len);
    id = sb_outbox_add(sb_job_txn_of(L), &n, err, sizeof err);
    if (!id)
        return luaL_error(L, "outbox.send: %s", err);
    lua_pushinteger(L, id);
    return 1;
}

static int outbox_call(lua_State *L)
{
    struct sb_outbox_new n;
    char err[160], conv[64];
    int64_t id;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    memset(&n, 0, sizeof n);
    n.kind = "job";
    n.conversation_id = conversation_id(L, 1, conv, sizeof conv);
    n.target = opt_string(L, 1, "target");
    if (!n.target)
        return luaL_error(L, "outbox.call: target (a handler name) is required");
    n.lane = lane_of(L, 1, n.conversation_id, n.target);
    n.data = opt_json(L, 1, "data");
    id = sb_outbox_add(sb_job_txn_of(L), &n, err, sizeof err);
    if (!id)
        return luaL_error(L, "outbox.call: %s", err);
    lua_pushinteger(L, id);
    return 1;
}

/* outbox.requeue(id) -> id | nil, reason: the dead letter is read from the
 * store (yields), then sent again as part of the job's transaction. */
struct requeue_wait {
    struct sb_job *job;
};

static void requeue_fetched(void *arg, const struct store_rows *rows, const char *error)
{
    struct requeue_wait *w = arg;
    struct sb_job *job = w->job;
    lua_State *co = job->co;
    char err[160];
    free(w);
    if (sb_job_unpin(job))
        return; /* the job ended meanwhile */
    if (error) {
        lua_pushnil(co);
        lua_pushstring(co, error);
        sb_job_answer(job, 2);
        return;
    }
    if (store_rows_count(rows) == 0) {
        lua_pushnil(co);
        lua_pushliteral(co, "not found");
        sb_job_answer(job, 2);
        return;
    }
    {
        struct store_row r;
        store_rows_get(rows, 0, &r, NULL);
        if (sb_outbox_requeue(sb_job_txn(job), &r, err, sizeof err) != 0) {
            lua_pushnil(co);
            lua_pushstring(co, err);
            sb_job_answer(job, 2);
            return;
        }
        lua_pushinteger(co, (lua_Integer)r.num[0]);
        sb_job_answer(job, 1);
    }
}

static int outbox_requeue(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    struct sb_job *job = sb_job_checkwait(L);
    struct requeue_wait *w;
    luaL_argcheck(L, id > 0, 1, "id must be a positive integer");
    sb_job_txn(job);
    w = sb_xcalloc(1, sizeof *w);
    w->job = job;
    sb_job_wait_store(job);
    store_fetch_outbox_entry((int64_t)id, requeue_fetched, w);
    if (!job->waiting)
        return job->answered;
    return lua_yield(L, 0);
}

static int outbox_stats(lua_State *L)
{
    const struct sb_outbox_counters *c = sb_outbox_counters();
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)c->pending);
    lua_setfield(L, -2, "pending");
    lua_pushinteger(L, (lua_Integer)c->in_flight);
    lua_setfield(L, -2, "in_flight");
    lua_pushinteger(L, (lua_Integer)c->delivered);
    lua_setfield(L, -2, "delivered");
    lua_pushinteger(L, (lua_Integer)c->retried);
    lua_setfield(L, -2, "retried");
    lua_pushinteger(L, (lua_Integer)c->dead);
    lua_setfield(L, -2, "dead");
    return 1;
}

/* The runner: an outbox job runs engine.run_outbox_job(handler, data, info);
 * a result handler engine.run_outbox_result(handler, result, context, info). */

static void push_info(lua_State *co, const struct sb_outbox_job *j)
{
    lua_createtable(co, 0, 5);
    lua_pushinteger(co, j->id);
    lua_setfield(co, -2, "id");
    if (j->conversation_id) {
        lua_pushstring(co, j->conversation_id);
        lua_setfield(co, -2, "conversation_id");
    }
    lua_pushstring(co, j->target);
    lua_setfield(co, -2, "target");
    lua_pushinteger(co, j->attempts);
    lua_setfield(co, -2, "attempts");
    lua_pushstring(co, j->idem_key);
    lua_setfield(co, -2, "idempotency_key");
}

static void handler_before_end(struct sb_job *job)
{
    sb_outbox_succeeded(job->owner, sb_job_txn(job));
}

static void handler_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    if (out->result == SB_JOB_FAILED)
        sb_outbox_failed(job->owner, out->detail ? out->detail : out->message ? out->message
                                                  : out->code ? out->code : "error");
}

static void run(struct sb_outbox_attempt *a, const struct sb_outbox_job *j)
{
    struct sb_runtime *rt = sb_runtime_current();
    char label[200];
    struct sb_job *job;
    lua_State *co;
    int nargs;
    snprintf(label, sizeof label, "outbox:%s", j->handler);
    job = sb_job_new(rt, SB_JOB_OUTBOX, label, handler_done, a);
    job->before_end = handler_before_end;
    co = job->co;
    lua_rawgeti(co, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(co, -1, j->response ? "run_outbox_result" : "run_outbox_job");
    lua_remove(co, -2);
    lua_pushstring(co, j->handler);
    if (j->response) {
        lua_createtable(co, 0, 3);
        lua_pushinteger(co, j->response->status);
        lua_setfield(co, -2, "status");
        sb_http_push_headers(co, j->response);
        lua_setfield(co, -2, "headers");
        lua_pushlstring(co, j->response->body, j->response->body_len);
        lua_setfield(co, -2, "body");
    }
    if (j->data)
        lua_pushstring(co, j->data);
    else
        lua_pushnil(co);
    push_info(co, j);
    nargs = j->response ? 4 : 3;
    sb_job_start(job, nargs);
}

void sb_bind_outbox_runner(void)
{
    sb_outbox_set_runner(run);
    sb_outbox_set_json_reader(sb_json_read_path);
}

void sb_bind_outbox_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "send", outbox_send }, { "call", outbox_call }, { "requeue", outbox_requeue },
        { "stats", outbox_stats }, { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "outbox");
}
