#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "log.h"
#include "metrics.h"

#define SCRIPT_MAX_BYTES (4 << 20)

static struct sb_runtime *current;
static int live_runtimes;
static void (*memory_hook)(void);

void sb_runtime_set_memory_hook(void (*hook)(void)) { memory_hook = hook; }

struct sb_runtime *sb_runtime_current(void) { return current; }
int sb_runtimes_live(void) { return live_runtimes; }

struct sb_runtime *sb_runtime_of(lua_State *L)
{
    return *(struct sb_runtime **)lua_getextraspace(L);
}

void sb_runtime_swap(struct sb_runtime *rt)
{
    struct sb_runtime *old = current;
    current = rt;
    if (old)
        sb_runtime_unref(old);
}

void sb_runtime_ref(struct sb_runtime *rt) { rt->refs++; }

void sb_runtime_unref(struct sb_runtime *rt)
{
    size_t i;
    if (!rt || --rt->refs > 0)
        return;
    if (rt->L)
        lua_close(rt->L);
    for (i = 0; i < rt->nroutes; i++)
        sb_route_free(&rt->routes[i]);
    free(rt->routes);
    sb_config_unref(rt->cfg);
    live_runtimes--;
    if (sb_log_enabled(SB_LOG_DEBUG)) {
        char gen[16];
        snprintf(gen, sizeof gen, "%u", rt->generation);
        sb_log(SB_LOG_DEBUG, "runtime closed", "generation", gen, NULL);
    }
    free(rt);
}

/* The allocator caps each runtime; the cap applies only while script code
 * runs, so the engine's own pushes between resumes never fail half-way. A
 * refused allocation marks the running job, whose budget hook then stops it
 * for good (a script's pcall could otherwise catch "not enough memory"). */
static void *runtime_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct sb_runtime *rt = ud;
    size_t old = ptr ? osize : 0;
    void *p;
    if (nsize == 0) {
        free(ptr);
        rt->mem_used -= old;
        return NULL;
    }
    if (nsize > old && rt->mem_enforce > 0 && rt->mem_used - old + nsize > rt->mem_limit) {
        /* Lua answers a refusal with an emergency collection and asks again
         * with the same arguments; only a second refusal means the script
         * really holds that much. */
        if (rt->refused_ptr == ptr && rt->refused_osize == osize && rt->refused_nsize == nsize && memory_hook)
            memory_hook();
        rt->refused_ptr = ptr;
        rt->refused_osize = osize;
        rt->refused_nsize = nsize;
        return NULL;
    }
    p = realloc(ptr, nsize);
    if (p && nsize > old)
        rt->refused_nsize = 0; /* a growth went through: the script made progress */
    if (p)
        rt->mem_used = rt->mem_used - old + nsize;
    return p;
}

static int runtime_panic(lua_State *L)
{
    const char *msg = lua_tostring(L, -1);
    sb_log(SB_LOG_ERROR, "lua panic", "error", msg ? msg : "?", NULL);
    abort();
}

/* Routes */

void sb_route_free(struct sb_route *r)
{
    size_t i;
    for (i = 0; i < r->nsegs; i++)
        free(r->segs[i]);
    free(r->segs);
    free(r->method);
    free(r->pattern);
    free(r->handler);
    free(r->calls);
    free(r->where);
    memset(r, 0, sizeof *r);
}

int sb_route_compile(struct sb_route *r, const char *pattern, char *msg, size_t msg_size)
{
    const char *p = pattern;
    size_t nparams = 0;
    memset(r, 0, sizeof *r);
    if (pattern[0] != '/') {
        snprintf(msg, msg_size, "route pattern must start with '/': %s", pattern);
        return -1;
    }
    r->pattern = sb_xstrdup(pattern);
    while (*p == '/') {
        const char *start = ++p;
        size_t n;
        while (*p && *p != '/')
            p++;
        n = (size_t)(p - start);
        if (n == 0 && *p == '/') {
            snprintf(msg, msg_size, "route pattern has an empty segment: %s", pattern);
            goto fail;
        }
        if (n > 0 && start[0] == '{') {
            size_t i;
            if (n < 3 || start[n - 1] != '}') {
                snprintf(msg, msg_size, "bad capture in route pattern: %s", pattern);
                goto fail;
            }
            for (i = 1; i + 1 < n; i++) {
                char c = start[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
                    snprintf(msg, msg_size, "bad capture name in route pattern: %s", pattern);
                    goto fail;
                }
            }
            if (++nparams > SB_ROUTE_MAX_PARAMS) {
                snprintf(msg, msg_size, "route pattern has more than %d captures: %s", SB_ROUTE_MAX_PARAMS, pattern);
                goto fail;
            }
        }
        r->segs = sb_xrealloc(r->segs, (r->nsegs + 1) * sizeof *r->segs);
        r->segs[r->nsegs] = sb_xmalloc(n + 1);
        memcpy(r->segs[r->nsegs], start, n);
        r->segs[r->nsegs][n] = '\0';
        r->nsegs++;
    }
    return 0;
fail:
    sb_route_free(r);
    return -1;
}

int sb_route_match_path(const struct sb_route *r, const char *path, struct sb_route_match *m)
{
    const char *p = path;
    size_t i;
    m->nparams = 0;
    m->route = r;
    for (i = 0; i < r->nsegs; i++) {
        const char *start, *seg = r->segs[i];
        size_t n;
        if (*p != '/')
            return 0;
        start = ++p;
        while (*p && *p != '/')
            p++;
        n = (size_t)(p - start);
        if (seg[0] == '{') {
            if (n == 0)
                return 0;
            m->names[m->nparams] = seg;
            m->values[m->nparams] = start;
            m->value_lens[m->nparams] = n;
            m->nparams++;
        } else if (strlen(seg) != n || memcmp(seg, start, n) != 0) {
            return 0;
        }
    }
    return *p == '\0';
}

int sb_runtime_add_route(struct sb_runtime *rt, const char *method, const char *pattern, const char *calls,
                         const char *handler, const char *where, char *msg, size_t msg_size)
{
    static const char *const methods[] = { "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "*" };
    struct sb_route r;
    size_t i;
    int known = 0;
    for (i = 0; i < sizeof methods / sizeof *methods; i++)
        known |= strcmp(method, methods[i]) == 0;
    if (!known) {
        snprintf(msg, msg_size, "unknown HTTP method '%s'", method);
        return -1;
    }
    if (sb_route_compile(&r, pattern, msg, msg_size))
        return -1;
    for (i = 0; i < rt->nroutes; i++) {
        if (strcmp(rt->routes[i].pattern, pattern) == 0 &&
            (strcmp(rt->routes[i].method, method) == 0 || !strcmp(method, "*") || !strcmp(rt->routes[i].method, "*"))) {
            snprintf(msg, msg_size, "route %s %s already registered at %s", method, pattern, rt->routes[i].where);
            sb_route_free(&r);
            return -1;
        }
    }
    r.method = sb_xstrdup(method);
    r.handler = sb_xstrdup(handler);
    r.calls = sb_xstrdup_or_null(calls);
    r.where = sb_xstrdup(where);
    if (rt->nroutes == rt->routes_cap) {
        rt->routes_cap = rt->routes_cap ? rt->routes_cap * 2 : 16;
        rt->routes = sb_xrealloc(rt->routes, rt->routes_cap * sizeof *rt->routes);
    }
    rt->routes[rt->nroutes++] = r;
    return 0;
}

int sb_runtime_match(const struct sb_runtime *rt, const char *method, const char *path,
                     struct sb_route_match *m, int *path_known, char *allow, size_t allow_size)
{
    size_t i, alen = 0;
    struct sb_route_match tmp;
    *path_known = 0;
    if (allow_size)
        allow[0] = '\0';
    for (i = 0; i < rt->nroutes; i++) {
        const struct sb_route *r = &rt->routes[i];
        if (!sb_route_match_path(r, path, &tmp))
            continue;
        if (strcmp(r->method, "*") == 0 || strcmp(r->method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0)) {
            *m = tmp;
            return 1;
        }
        *path_known = 1;
        if (alen + strlen(r->method) + 3 < allow_size)
            alen += (size_t)snprintf(allow + alen, allow_size - alen, "%s%s", alen ? ", " : "", r->method);
    }
    return 0;
}

/* Sandbox */

static int safe_print(lua_State *L)
{
    luaL_Buffer b;
    int i, n = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    sb_log(SB_LOG_INFO, lua_tostring(L, -1), "source", "print", NULL);
    return 0;
}

/* rawset() that leaves the read-only config and the engine's names in the
 * global environment alone: both are guarded by a __newindex, which rawset
 * would go around. */
static int safe_rawset(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    if (lua_getmetatable(L, 1)) {
        int ro = lua_getfield(L, -1, SB_CONFIG_READONLY_MARK) != LUA_TNIL;
        int engine_name = 0;
        if (lua_getfield(L, -2, "__engine_names") == LUA_TTABLE) {
            lua_pushvalue(L, 2);
            engine_name = lua_rawget(L, -2) != LUA_TNIL;
            lua_pop(L, 1);
        }
        lua_pop(L, 3);
        if (ro)
            return luaL_error(L, "config is read-only");
        if (engine_name)
            return luaL_error(L, "'%s' is an engine name and cannot be assigned", luaL_tolstring(L, 2, NULL));
    }
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 1;
}

/* load() restricted to text chunks: precompiled bytecode can break out of
 * the sandbox. load(chunk, chunkname, mode, env) */
static int safe_load(lua_State *L)
{
    lua_settop(L, 4);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.original_load");
    lua_insert(L, 1);
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L);
}

int sb_runtime_load_chunk(lua_State *L, const char *path, const char *display)
{
    char *src = NULL;
    size_t len;
    char msg[256], chunk[600];
    int rc;
    if (sb_read_file(path, SCRIPT_MAX_BYTES, &src, &len, msg, sizeof msg)) {
        lua_pushfstring(L, "%s:0: %s", display, msg);
        return LUA_ERRFILE;
    }
    snprintf(chunk, sizeof chunk, "@%s", display);
    rc = luaL_loadbufferx(L, src, len, chunk, "t");
    free(src);
    return rc;
}

/* Modules. sb.loaded maps a module name to what its file returned (true
 * when nothing), or to the "loading" marker while its top level runs;
 * sb.module_paths remembers the file each name came from, so that two files
 * cannot claim one name. */
static const char loading_marker = 0;

/* A module reached again by a require cycle while its top level still runs
 * (flow requires livechat, which requires flow): the second require gets a
 * proxy that reads the finished module, so each can hold the other in a
 * local and call it from functions. Reading it at the top level of the
 * cycle is an error that says so. */
static int cycle_proxy_index(lua_State *L)
{
    const char *name = lua_tostring(L, lua_upvalueindex(1));
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
    lua_getfield(L, -1, name);
    if (lua_islightuserdata(L, -1))
        return luaL_error(L, "module '%s' is still loading (a require cycle): use it inside functions, "
                             "not at the top level of a module it requires", name);
    if (!lua_istable(L, -1))
        return luaL_error(L, "module '%s' did not return a table", name);
    lua_pushvalue(L, 2);
    lua_gettable(L, -2);
    return 1;
}

static int cycle_proxy_newindex(lua_State *L)
{
    return luaL_error(L, "module '%s' is read through a require cycle: assign to it in its own file",
                      lua_tostring(L, lua_upvalueindex(1)));
}

static void push_cycle_proxy(lua_State *L, const char *name)
{
    luaL_getsubtable(L, LUA_REGISTRYINDEX, "sb.cycle_proxies");
    if (lua_getfield(L, -1, name) == LUA_TTABLE) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_pushstring(L, name);
    lua_pushcclosure(L, cycle_proxy_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, cycle_proxy_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "module");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, name);
    lua_remove(L, -2);
}

int sb_module_state(lua_State *L, const char *name, const char *path, char *msg, size_t msg_size)
{
    int state = SB_MODULE_ABSENT;
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
    if (lua_getfield(L, -1, name) != LUA_TNIL)
        state = lua_touserdata(L, -1) == &loading_marker ? SB_MODULE_LOADING : SB_MODULE_LOADED;
    lua_pop(L, 2);
    if (state == SB_MODULE_ABSENT || !path)
        return state;
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.module_paths");
    lua_getfield(L, -1, name);
    if (!lua_isstring(L, -1) || strcmp(lua_tostring(L, -1), path) != 0) {
        snprintf(msg, msg_size, "the module name '%s' is already taken by %s", name,
                 lua_isstring(L, -1) ? lua_tostring(L, -1) : "the engine");
        state = SB_MODULE_TAKEN;
    }
    lua_pop(L, 2);
    return state;
}

void sb_module_begin(lua_State *L, const char *name, const char *path)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
    lua_pushlightuserdata(L, (void *)&loading_marker);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.module_paths");
    lua_pushstring(L, path);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

void sb_module_end(lua_State *L, const char *name, int value_idx)
{
    value_idx = lua_absindex(L, value_idx);
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
    if (value_idx == 0 || lua_isnil(L, value_idx))
        lua_pushboolean(L, 1);
    else
        lua_pushvalue(L, value_idx);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

void sb_module_forget(lua_State *L, const char *name)
{
    static const char *const tables[] = { "sb.loaded", "sb.module_paths" };
    size_t i;
    for (i = 0; i < sizeof tables / sizeof *tables; i++) {
        lua_getfield(L, LUA_REGISTRYINDEX, tables[i]);
        lua_pushnil(L);
        lua_setfield(L, -2, name);
        lua_pop(L, 1);
    }
}

/* require(name): modules come only from the configured script folders,
 * "a.b" maps to "<dir>/a/b.lua" or "<dir>/a/b/init.lua". */
static int safe_require(lua_State *L)
{
    struct sb_runtime *rt = sb_runtime_of(L);
    const char *name = luaL_checkstring(L, 1);
    char rel[512], path[1024];
    size_t i, n = strlen(name);
    int d, v;

    lua_settop(L, 1);
    switch (sb_module_state(L, name, NULL, NULL, 0)) {
    case SB_MODULE_LOADING:
        push_cycle_proxy(L, name);
        return 1;
    case SB_MODULE_LOADED:
        lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
        lua_getfield(L, -1, name);
        return 1;
    default:
        break;
    }
    if (n == 0 || n >= 200)
        return luaL_error(L, "require: bad module name '%s'", name);
    for (i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              (c == '.' && i > 0 && i + 1 < n && name[i + 1] != '.')))
            return luaL_error(L, "require: bad module name '%s'", name);
        rel[i] = c == '.' ? '/' : c;
    }
    rel[n] = '\0';
    for (d = 0; d < SB_DIR_COUNT + rt->cfg->nmodule_dirs; d++) {
        const char *root = d < SB_DIR_COUNT ? rt->cfg->dirs[d] : rt->cfg->module_dirs[d - SB_DIR_COUNT];
        for (v = 0; v < 2; v++) {
            struct stat st;
            snprintf(path, sizeof path, v == 0 ? "%s/%s.lua" : "%s/%s/init.lua", root, rel);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            if (sb_runtime_load_chunk(L, path, path) != LUA_OK)
                return lua_error(L);
            sb_module_begin(L, name, path);
            lua_pushstring(L, name);
            if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
                /* a module that failed may be required again (after a fix, or
                 * by a later job): it is not "loading" any more */
                sb_module_forget(L, name);
                return lua_error(L);
            }
            sb_module_end(L, name, -1);
            lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
            lua_getfield(L, -1, name);
            return 1;
        }
    }
    return luaL_error(L, "require: module '%s' not found in the script folders", name);
}

static void open_sandbox(lua_State *L)
{
    static const char *const base_removed[] = { "dofile", "loadfile", NULL };
    static const char *const os_kept[] = { "time", "clock", "date", "difftime", NULL };
    const char *const *p;

    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_COLIBNAME, luaopen_coroutine, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    luaL_requiref(L, LUA_OSLIBNAME, luaopen_os, 0);   /* copied selectively below */
    lua_settop(L, 0);

    for (p = base_removed; *p; p++) {
        lua_pushnil(L);
        lua_setglobal(L, *p);
    }
    lua_getglobal(L, "load");
    lua_setfield(L, LUA_REGISTRYINDEX, "sb.original_load");
    lua_pushcfunction(L, safe_load);
    lua_setglobal(L, "load");
    lua_pushcfunction(L, safe_print);
    lua_setglobal(L, "print");
    lua_pushcfunction(L, safe_require);
    lua_setglobal(L, "require");
    lua_pushcfunction(L, safe_rawset);
    lua_setglobal(L, "rawset");

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, LUA_OSLIBNAME);
    lua_newtable(L);
    for (p = os_kept; *p; p++) {
        lua_getfield(L, -2, *p);
        lua_setfield(L, -2, *p);
    }
    lua_setglobal(L, "os");
    lua_pushnil(L);
    lua_setfield(L, -3, LUA_OSLIBNAME);
    lua_settop(L, 0);

    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "sb.loaded");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, "sb.module_paths");

    /* Strings share one metatable in a runtime: a script that replaced it
     * (getmetatable("").__index = ...) would break every other script. */
    lua_pushliteral(L, "");
    if (lua_getmetatable(L, -1)) {
        lua_pushliteral(L, "protected");
        lua_setfield(L, -2, "__metatable");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}


struct sb_runtime *sb_runtime_create(struct sb_config *cfg, unsigned generation, struct sb_error *err)
{
    struct sb_runtime *rt = sb_xcalloc(1, sizeof *rt);
    lua_State *L;

    rt->generation = generation;
    rt->refs = 1;
    rt->cfg = cfg;
    sb_config_ref(cfg);
    rt->mem_limit = cfg->lua_memory_limit;
    rt->engine_ref = rt->http_error_mt_ref = LUA_NOREF;
    rt->json_encode_ref = rt->json_decode_ref = rt->config_ref = LUA_NOREF;
    live_runtimes++;
    L = rt->L = lua_newstate(runtime_alloc, rt);
    if (!L) {
        sb_error_set(err, "", 0, "cannot create Lua state");
        sb_runtime_unref(rt);
        return NULL;
    }
    *(struct sb_runtime **)lua_getextraspace(L) = rt;
    lua_atpanic(L, runtime_panic);
    lua_gc(L, LUA_GCGEN, 0, 0);
    open_sandbox(L);
    return rt;
}

void sb_runtime_collect(void)
{
    if (current)
        lua_gc(current->L, LUA_GCCOLLECT);
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_runtime_generation", "Generation of the Lua runtime serving now.",
                     current ? (double)current->generation : 0);
    sb_metrics_gauge(out, "switchboard_runtimes_live", "Lua runtimes alive (current plus retired ones with jobs).",
                     (double)live_runtimes);
}

void sb_runtime_register_metrics(void)
{
    sb_metrics_register(render_metrics);
}
