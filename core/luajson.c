/* The engine's JSON: one lua-cjson instance per runtime, with its
 * settings, reachable from C through registry references.
 *
 * json.array: lua-cjson 2.1.0 writes every empty table as {}, and offers no
 * hook to say otherwise. A table given to json.array joins a weak set of
 * marked tables. While that set is empty, encoding is cjson's alone. While
 * it is not, the value is walked first, and each marked table in it that is
 * empty at that moment holds a sentinel string as its only element during the encode, and every
 * ["<sentinel>"] in the output becomes []. The sentinel carries a random
 * nonce made when the runtime is built, so no script can write it. */
#include "luajson.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lua-cjson.h>
#include <openssl/rand.h>

#include "runtime.h"

#define SENTINEL_PREFIX "sb-empty-array-"
#define SB_JSON_MAX_DEPTH 64   /* nesting, both ways (cjson's settings below) */

/* the registry key of a runtime's set of marked tables */
static const char marked_key = 0;

/* Upvalues of the encoder closure */
enum { UV_CJSON_ENCODE = 1, UV_MARKED, UV_SENTINEL, UV_QUOTED, UV_RESTORE_MT };

void sb_json_encode_at(lua_State *L, int idx)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    idx = lua_absindex(L, idx);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->json_encode_ref);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
}

void sb_json_decode(lua_State *L, const char *s, size_t len)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->json_decode_ref);
    lua_pushlstring(L, s, len);
    lua_call(L, 1, 1);
}

void sb_json_mark_array(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &marked_key);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* json.array([t]): t (or a new table) marked to encode as [] when empty. */
static int json_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else if (lua_type(L, 1) != LUA_TTABLE) {
        return luaL_error(L, "json.array: the argument must be a table or nil");
    }
    lua_settop(L, 1);
    sb_json_mark_array(L, 1);
    return 1;
}

/* __close of the list of tables holding the sentinel: they are emptied
 * again however the encode ends (an error keeps its own status). */
static int restore_tables(lua_State *L)
{
    lua_Integer i, n = (lua_Integer)lua_rawlen(L, 1);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        lua_pushnil(L);
        lua_rawseti(L, -2, 1);
        lua_pop(L, 1);
    }
    return 0;
}

/* Pushes s with every `quoted` replaced by []. */
static void replace_sentinels(lua_State *L, const char *s, size_t n, const char *quoted, size_t qlen)
{
    luaL_Buffer b;
    const char *end = s + n;
    luaL_buffinit(L, &b);
    for (;;) {
        const char *hit = memmem(s, (size_t)(end - s), quoted, qlen);
        if (!hit)
            break;
        luaL_addlstring(&b, s, (size_t)(hit - s));
        luaL_addlstring(&b, "[]", 2);
        s = hit + qlen;
    }
    luaL_addlstring(&b, s, (size_t)(end - s));
    luaL_pushresult(&b);
}

/* Lists (in the table at `list`) the marked tables inside the value at idx
 * that are empty now. The walk goes over the value being encoded, not over
 * every marked table alive: its cost is the value's size, like cjson's own.
 * Deeper than cjson's limit it stops (cjson refuses such a value anyway). */
static void collect_empty_marked(lua_State *L, int idx, int marked, int list, lua_Integer *n, int depth)
{
    idx = lua_absindex(L, idx);
    if (depth > SB_JSON_MAX_DEPTH || !lua_checkstack(L, 4))
        return;
    lua_pushnil(L);
    if (!lua_next(L, idx)) {
        lua_pushvalue(L, idx);
        if (lua_rawget(L, marked) != LUA_TNIL) {
            lua_pushvalue(L, idx);
            lua_rawseti(L, list, ++*n);
        }
        lua_pop(L, 1);
        return;
    }
    do {
        if (lua_type(L, -1) == LUA_TTABLE)
            collect_empty_marked(L, -1, marked, list, n, depth + 1);
        lua_pop(L, 1);
    } while (lua_next(L, idx));
}

/* json.encode(value), and what sb_json_encode_at calls. */
static int json_encode(lua_State *L)
{
    lua_Integer n = 0, i;
    size_t len, qlen;
    const char *out, *quoted;
    lua_settop(L, 1);
    lua_pushnil(L);
    if (lua_type(L, 1) != LUA_TTABLE || !lua_next(L, lua_upvalueindex(UV_MARKED))) {
        /* nothing is marked (or nothing to hold a mark): cjson alone */
        lua_settop(L, 1);
        lua_pushvalue(L, lua_upvalueindex(UV_CJSON_ENCODE));
        lua_insert(L, 1);
        lua_call(L, 1, 1);
        return 1;
    }
    lua_settop(L, 1);
    lua_newtable(L);                                   /* 2: the marked tables that are empty now */
    collect_empty_marked(L, 1, lua_upvalueindex(UV_MARKED), 2, &n, 0);
    lua_pushvalue(L, lua_upvalueindex(UV_RESTORE_MT));
    lua_setmetatable(L, 2);
    lua_toclose(L, 2);
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        lua_pushvalue(L, lua_upvalueindex(UV_SENTINEL));
        lua_rawseti(L, -2, 1);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(UV_CJSON_ENCODE));
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);                                 /* 3 */
    lua_closeslot(L, 2);
    out = lua_tolstring(L, 3, &len);
    quoted = lua_tolstring(L, lua_upvalueindex(UV_QUOTED), &qlen);
    if (n == 0 || !memmem(out, len, quoted, qlen))
        return 1;
    replace_sentinels(L, out, len, quoted, qlen);
    return 1;
}

/* Reading one value out of a JSON text from outside (a failed response's
 * body, for the outbox): in a Lua state of its own with a small memory cap,
 * closed at once, so no runtime's memory, budget or registry is touched. */

#define READ_MEMORY_MAX (8u << 20)

struct read_memory {
    size_t used;
};

static void *read_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct read_memory *m = ud;
    size_t old = ptr ? osize : 0;
    void *p;
    if (nsize == 0) {
        free(ptr);
        m->used -= old;
        return NULL;
    }
    if (nsize > old && m->used - old + nsize > READ_MEMORY_MAX)
        return NULL;
    p = realloc(ptr, nsize);
    if (p)
        m->used = m->used - old + nsize;
    return p;
}

struct read_args {
    const char *json, *path;
    size_t len;
    double *number;
    char *text;
    size_t text_size;
    int result;
};

static void call_cjson_setting(lua_State *L, int cjson, const char *fn, int arg_is_bool, int value)
{
    lua_getfield(L, cjson, fn);
    if (arg_is_bool)
        lua_pushboolean(L, value);
    else
        lua_pushinteger(L, value);
    lua_call(L, 1, 0);
}

/* In protected mode: decodes, walks the path (a segment of digits indexes
 * an array from 1), keeps a number or a string found there. */
static int read_path(lua_State *L)
{
    struct read_args *a = lua_touserdata(L, 1);
    const char *seg = a->path;
    int cjson;
    luaopen_cjson(L);
    cjson = lua_gettop(L);
    call_cjson_setting(L, cjson, "decode_max_depth", 0, SB_JSON_MAX_DEPTH);
    call_cjson_setting(L, cjson, "decode_invalid_numbers", 1, 0);
    lua_getfield(L, cjson, "decode");
    lua_pushlstring(L, a->json, a->len);
    lua_call(L, 1, 1);
    while (*seg) {
        const char *dot = strchr(seg, '.');
        size_t n = dot ? (size_t)(dot - seg) : strlen(seg), i;
        int digits = n > 0 && n < 10;
        if (lua_type(L, -1) != LUA_TTABLE)
            return 0;
        for (i = 0; i < n && digits; i++)
            digits = seg[i] >= '0' && seg[i] <= '9';
        if (digits)
            lua_rawgeti(L, -1, (lua_Integer)strtol(seg, NULL, 10));
        else {
            lua_pushlstring(L, seg, n);
            lua_rawget(L, -2);
        }
        lua_remove(L, -2);
        seg += n + (dot ? 1 : 0);
    }
    if (lua_type(L, -1) == LUA_TNUMBER) {
        *a->number = lua_tonumber(L, -1);
        a->result = 1;
    } else if (lua_type(L, -1) == LUA_TSTRING && a->text_size > 0) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        if (n >= a->text_size)
            n = a->text_size - 1;
        memcpy(a->text, s, n);
        a->text[n] = '\0';
        a->result = 2;
    }
    return 0;
}

int sb_json_read_path(const char *json, size_t len, const char *path, double *number, char *text, size_t text_size)
{
    struct read_memory m = { 0 };
    struct read_args a = { json, path, len, number, text, text_size, 0 };
    lua_State *L = lua_newstate(read_alloc, &m);
    if (!L)
        return 0;
    lua_pushcfunction(L, read_path);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        a.result = 0;   /* not JSON, too deep, too large: nothing there */
    lua_close(L);
    return a.result;
}

/* Pushes the sentinel of a new runtime and its JSON form ["..."]. */
static void push_sentinel(lua_State *L)
{
    unsigned char nonce[16];
    char hex[2 * sizeof nonce + 1];
    size_t i;
    if (RAND_bytes(nonce, sizeof nonce) == 1) {
        for (i = 0; i < sizeof nonce; i++)
            snprintf(hex + 2 * i, 3, "%02x", nonce[i]);
    } else {
        /* what it guards is small: a script that wrote it would get [] */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(hex, sizeof hex, "%016lx%016lx", (unsigned long)ts.tv_nsec ^ (unsigned long)ts.tv_sec,
                 (unsigned long)(uintptr_t)L);
    }
    lua_pushfstring(L, SENTINEL_PREFIX "%s", hex);
    lua_pushfstring(L, "[\"" SENTINEL_PREFIX "%s\"]", hex);
}

/* The engine's JSON settings: sparse arrays become objects instead of
 * errors, nesting is bounded both ways, NaN/Infinity are refused both ways. */
void sb_json_open(struct sb_runtime *rt)
{
    lua_State *L = rt->L;
    int cjson;
    luaopen_cjson(L);
    cjson = lua_gettop(L);
    call_cjson_setting(L, cjson, "encode_sparse_array", 1, 1);
    call_cjson_setting(L, cjson, "encode_max_depth", 0, SB_JSON_MAX_DEPTH);
    call_cjson_setting(L, cjson, "decode_max_depth", 0, SB_JSON_MAX_DEPTH);
    call_cjson_setting(L, cjson, "encode_invalid_numbers", 1, 0);
    call_cjson_setting(L, cjson, "decode_invalid_numbers", 1, 0);

    lua_createtable(L, 0, 4);                          /* the global json */

    lua_newtable(L);                                   /* the marked tables, weak keys */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &marked_key);

    lua_pushvalue(L, -1);
    lua_pushcclosure(L, json_array, 1);
    lua_setfield(L, -3, "array");

    lua_getfield(L, cjson, "encode");                  /* upvalues of the encoder */
    lua_insert(L, -2);
    push_sentinel(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, restore_tables);
    lua_setfield(L, -2, "__close");
    lua_pushcclosure(L, json_encode, 5);
    lua_pushvalue(L, -1);
    rt->json_encode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "encode");

    lua_getfield(L, cjson, "decode");
    lua_pushvalue(L, -1);
    rt->json_decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, cjson, "null");
    lua_setfield(L, -2, "null");
    lua_setglobal(L, "json");
    lua_settop(L, cjson - 1);
}
