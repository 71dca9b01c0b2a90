/* The engine's JSON: one lua-cjson instance per runtime, with its
 * settings, reachable from C through registry references. */
#include "luajson.h"

#include <lauxlib.h>
#include <lua.h>
#include <lua-cjson.h>

#include "runtime.h"

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

static void call_cjson_setting(lua_State *L, int cjson, const char *fn, int arg_is_bool, int value)
{
    lua_getfield(L, cjson, fn);
    if (arg_is_bool)
        lua_pushboolean(L, value);
    else
        lua_pushinteger(L, value);
    lua_call(L, 1, 0);
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
    call_cjson_setting(L, cjson, "encode_max_depth", 0, 64);
    call_cjson_setting(L, cjson, "decode_max_depth", 0, 64);
    call_cjson_setting(L, cjson, "encode_invalid_numbers", 1, 0);
    call_cjson_setting(L, cjson, "decode_invalid_numbers", 1, 0);

    lua_createtable(L, 0, 3);
    lua_getfield(L, cjson, "encode");
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

