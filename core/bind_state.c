/* state.set(key, value [, ttl]), state.get(key), state.delete(key): a job's
 * changes are its own until it ends (kvstate.c). */
#include "bind_state.h"

#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "job.h"
#include "kvstate.h"
#include "luajson.h"

#define KV_KEY_MAX 512
#define KV_VALUE_MAX (1 << 20)

static const char *check_key(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, n > 0 && n <= KV_KEY_MAX && strlen(key) == n, 1, "key must be 1-512 bytes without NUL");
    return key;
}

static int state_set(lua_State *L)
{
    const char *key = check_key(L);
    double ttl = luaL_optnumber(L, 3, 0);
    struct sb_txn *t;
    size_t len;
    const char *json;
    luaL_argcheck(L, ttl >= 0, 3, "ttl must be >= 0");
    t = sb_job_txn_of(L);
    if (lua_isnoneornil(L, 2)) {
        sb_kv_delete(t, key);
        return 0;
    }
    sb_json_encode_at(L, 2);
    json = lua_tolstring(L, -1, &len);
    luaL_argcheck(L, len <= KV_VALUE_MAX, 2, "value larger than 1 MiB once encoded");
    sb_kv_set(t, key, json, len, ttl);
    return 0;
}

/* A running job sees its own changes; code outside one sees the state. */
static struct sb_txn *reader_txn(void)
{
    struct sb_job *job = sb_job_running();
    return job ? job->txn : NULL;
}

static int state_get(lua_State *L)
{
    const char *key = check_key(L);
    size_t len;
    const char *json = sb_kv_get(reader_txn(), key, &len);
    if (!json) {
        lua_pushnil(L);
        return 1;
    }
    sb_json_decode(L, json, len);
    return 1;
}

static int state_delete(lua_State *L)
{
    const char *key = check_key(L);
    lua_pushboolean(L, sb_kv_delete(sb_job_txn_of(L), key));
    return 1;
}

void sb_bind_state_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "set", state_set }, { "get", state_get }, { "delete", state_delete }, { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "state");
}
