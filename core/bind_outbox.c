/* Lua bindings of the outbox (outbox.c):
 *   outbox.send{conversation=, target=, url=, method=, headers=, body=, on_result=, context=, lane=}
 *   outbox.call{conversation=, target=handler_name, data=, lane=}
 *   outbox.requeue(entry)   -- a dead letter read with conversations.read("outbox_entry")
 *   outbox.stats() */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <lauxlib.h>
#include <lua.h>

#include "bindings.h"
#include "outbox.h"
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

static int outbox_send(lua_State *L)
{
    struct sb_outbox_new n;
    struct evbuffer *hb;
    char err[160], conv[64];
    int64_t id;
    int has_ctype = 0;
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

    hb = evbuffer_new();
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {             /* 4 */
        lua_pushnil(L);
        while (lua_next(L, 4)) {
            const char *k, *v;
            if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)) {
                evbuffer_free(hb);
                return luaL_error(L, "outbox.send: headers must be a table of strings");
            }
            k = lua_tostring(L, -2);
            v = lua_tostring(L, -1);
            if (!k[0] || strpbrk(k, ":\r\n ") || strpbrk(v, "\r\n")) {
                evbuffer_free(hb);
                return luaL_error(L, "outbox.send: header '%s' contains a forbidden character", k);
            }
            has_ctype |= !strcasecmp(k, "content-type");
            evbuffer_add_printf(hb, "%s: %s\n", k, v);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, 4)) {
        evbuffer_free(hb);
        return luaL_error(L, "outbox.send: headers must be a table");
    }
    switch (lua_getfield(L, 1, "body")) {                          /* 5 */
    case LUA_TSTRING:
        n.body = lua_tolstring(L, 5, &n.body_len);
        break;
    case LUA_TTABLE:
        sb_json_encode_at(L, 5);                                   /* 6 */
        lua_replace(L, 5);
        n.body = lua_tolstring(L, 5, &n.body_len);
        if (!has_ctype)
            evbuffer_add_printf(hb, "Content-Type: application/json\n");
        break;
    case LUA_TNIL:
        break;
    default:
        evbuffer_free(hb);
        return luaL_error(L, "outbox.send: body must be a string or a table");
    }
    evbuffer_add(hb, "", 1);
    lua_pushstring(L, (const char *)evbuffer_pullup(hb, -1));      /* keep a Lua-owned copy */
    evbuffer_free(hb);
    n.headers = lua_tostring(L, -1)[0] ? lua_tostring(L, -1) : NULL;
    id = sb_outbox_add(&n, err, sizeof err);
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
    id = sb_outbox_add(&n, err, sizeof err);
    if (!id)
        return luaL_error(L, "outbox.call: %s", err);
    lua_pushinteger(L, id);
    return 1;
}

/* outbox.requeue(entry): entry as returned by conversations.read("outbox_entry") */
static int outbox_requeue(lua_State *L)
{
    struct sb_outbox_new n;
    char err[160];
    int64_t id;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    memset(&n, 0, sizeof n);
    if (lua_getfield(L, 1, "id") != LUA_TNUMBER)
        return luaL_error(L, "outbox.requeue: id is required");
    n.id = lua_tointeger(L, -1);
    lua_pop(L, 1);
    n.conversation_id = opt_string(L, 1, "conversation_id");
    n.lane = opt_string(L, 1, "lane");
    n.kind = opt_string(L, 1, "kind");
    n.target = opt_string(L, 1, "target");
    n.method = opt_string(L, 1, "method");
    n.url = opt_string(L, 1, "url");
    n.headers = opt_string(L, 1, "headers");
    n.body = opt_string(L, 1, "body");
    n.body_len = n.body ? strlen(n.body) : 0;
    n.data = opt_string(L, 1, "data");
    n.on_result = opt_string(L, 1, "on_result");
    n.idem_key = opt_string(L, 1, "idem_key");
    if (lua_getfield(L, 1, "created") == LUA_TNUMBER)
        n.created = lua_tonumber(L, -1);
    lua_pop(L, 1);
    id = sb_outbox_add(&n, err, sizeof err);
    if (!id)
        return luaL_error(L, "outbox.requeue: %s", err);
    lua_pushinteger(L, id);
    return 1;
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

void sb_bind_outbox_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "send", outbox_send }, { "call", outbox_call }, { "requeue", outbox_requeue },
        { "stats", outbox_stats }, { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "outbox");
}
