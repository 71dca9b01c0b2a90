#include "kvstate.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "bindings.h"
#include "job.h"
#include "store.h"
#include "util.h"

#define KV_KEY_MAX 512
#define KV_VALUE_MAX (1 << 20)

struct kv_entry {
    char *key;
    char *json;
    size_t json_len;
    double expires;   /* wall clock; 0: never */
};

static void *tree;
static size_t count;

static int by_key(const void *a, const void *b)
{
    return strcmp(((const struct kv_entry *)a)->key, ((const struct kv_entry *)b)->key);
}

static void entry_free(void *p)
{
    struct kv_entry *e = p;
    free(e->key);
    free(e->json);
    free(e);
}

static struct kv_entry *lookup(const char *key)
{
    struct kv_entry probe, **found;
    probe.key = (char *)key;
    found = tfind(&probe, &tree, by_key);
    return found ? *found : NULL;
}

static void persist_delete(const char *key)
{
    struct store_op *op = store_op_new(STORE_KV_DELETE);
    store_op_str(op, key);
    sb_job_note_write(store_submit(op));
}

static void remove_entry(struct kv_entry *e)
{
    persist_delete(e->key);
    tdelete(e, &tree, by_key);
    count--;
    entry_free(e);
}

void sb_kv_set(const char *key, const char *json, size_t json_len, double ttl)
{
    struct kv_entry *e = lookup(key);
    if (!e) {
        e = sb_xcalloc(1, sizeof *e);
        e->key = sb_xstrdup(key);
        tsearch(e, &tree, by_key);
        count++;
    } else {
        free(e->json);
    }
    e->json = sb_xmalloc(json_len + 1);
    memcpy(e->json, json, json_len);
    e->json[json_len] = '\0';
    e->json_len = json_len;
    e->expires = ttl > 0 ? sb_now_wall() + ttl : 0;
    {
        struct store_op *op = store_op_new(STORE_KV_PUT);
        store_op_str(op, key);
        store_op_text(op, json, json_len);
        if (e->expires)
            store_op_real(op, e->expires);
        else
            store_op_null(op);
        sb_job_note_write(store_submit(op));
    }
}

static void load_row(void *arg, const struct store_row *r)
{
    struct kv_entry *e;
    double expires = r->text[2] ? r->num[2] : 0;
    (void)arg;
    if (expires && expires <= sb_now_wall())
        return;
    e = sb_xcalloc(1, sizeof *e);
    e->key = sb_xstrdup(r->text[0]);
    e->json = sb_xstrdup(r->text[1]);
    e->json_len = strlen(e->json);
    e->expires = expires;
    tsearch(e, &tree, by_key);
    count++;
}

int sb_kv_load(void)
{
    return store_load_kv(load_row, NULL);
}

const char *sb_kv_get(const char *key, size_t *len)
{
    struct kv_entry *e = lookup(key);
    if (!e)
        return NULL;
    if (e->expires && e->expires <= sb_now_wall()) {
        remove_entry(e);
        return NULL;
    }
    *len = e->json_len;
    return e->json;
}

int sb_kv_delete(const char *key)
{
    struct kv_entry *e = lookup(key);
    if (!e)
        return 0;
    remove_entry(e);
    return 1;
}

static struct kv_entry **expired;
static size_t nexpired, expired_cap;
static double sweep_now;

static void collect_expired(const void *node, VISIT which, void *closure)
{
    struct kv_entry *e = *(struct kv_entry *const *)node;
    (void)closure;
    if ((which == postorder || which == leaf) && e->expires && e->expires <= sweep_now) {
        if (nexpired == expired_cap) {
            expired_cap = expired_cap ? expired_cap * 2 : 64;
            expired = sb_xrealloc(expired, expired_cap * sizeof *expired);
        }
        expired[nexpired++] = e;
    }
}

size_t sb_kv_sweep(void)
{
    size_t i, n;
    sweep_now = sb_now_wall();
    nexpired = 0;
    twalk_r(tree, collect_expired, NULL);
    n = nexpired;
    for (i = 0; i < n; i++)
        remove_entry(expired[i]);
    free(expired);
    expired = NULL;
    nexpired = expired_cap = 0;
    return n;
}

size_t sb_kv_count(void) { return count; }

void sb_kv_free_all(void)
{
    /* memory only: what is stored stays stored */
    tdestroy(tree, entry_free);
    tree = NULL;
    count = 0;
}

/* Bindings: state.set(key, value [, ttl]), state.get(key), state.delete(key) */

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
    size_t len;
    const char *json;
    luaL_argcheck(L, ttl >= 0, 3, "ttl must be >= 0");
    if (lua_isnoneornil(L, 2)) {
        sb_kv_delete(key);
        return 0;
    }
    sb_json_encode_at(L, 2);
    json = lua_tolstring(L, -1, &len);
    luaL_argcheck(L, len <= KV_VALUE_MAX, 2, "value larger than 1 MiB once encoded");
    sb_kv_set(key, json, len, ttl);
    return 0;
}

static int state_get(lua_State *L)
{
    const char *key = check_key(L);
    size_t len;
    const char *json = sb_kv_get(key, &len);
    if (!json) {
        lua_pushnil(L);
        return 1;
    }
    sb_json_decode(L, json, len);
    return 1;
}

static int state_delete(lua_State *L)
{
    lua_pushboolean(L, sb_kv_delete(check_key(L)));
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
