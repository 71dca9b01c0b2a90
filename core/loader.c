/* Building a runtime: the bindings, the engine prelude, then every script
 * of the configured folders under the load budget, then the checks; on any
 * error the half-built runtime is thrown away with everything its load
 * created (its load timers; its writes are in the load's transaction,
 * which the caller aborts). */
#include "loader.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>

#include "bindings.h"
#include "bus.h"
#include "handler_use.h"
#include "job.h"
#include "log.h"
#include "lpattern.h"
#include "runtime.h"
#include "timer.h"
#include "txn.h"

#include "prelude_lua.h"  /* generated from core/prelude.lua: sb_prelude_lua[] */

#define SCRIPTS_PER_DIR_MAX 4096

/* Script loading */

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Spec files of rules (`switchboard test`) may sit next to the rules they
 * test; they are not rules. */
#define SPEC_SUFFIX "_spec.lua"

static int is_spec(const char *name, size_t len)
{
    size_t s = sizeof SPEC_SUFFIX - 1;
    return len > s && strcmp(name + len - s, SPEC_SUFFIX) == 0;
}

/* Lists "*.lua" regular files directly in dir, sorted, without "*_spec.lua"
 * ones when skip_specs is set. A missing folder is an empty one. Returns
 * count or -1 with err set. */
static int list_scripts(const char *dir, int skip_specs, char ***out, struct sb_error *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    int n = 0;
    *out = NULL;
    if (!d) {
        if (errno == ENOENT)
            return 0;
        sb_error_set(err, dir, 0, "cannot open script folder: %s", strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        char path[1024];
        struct stat st;
        if (len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0 || e->d_name[0] == '.' ||
            (skip_specs && is_spec(e->d_name, len)))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        if (n >= SCRIPTS_PER_DIR_MAX) {
            sb_error_set(err, dir, 0, "more than %d scripts in folder", SCRIPTS_PER_DIR_MAX);
            closedir(d);
            while (n > 0)
                free(names[--n]);
            free(names);
            return -1;
        }
        names = sb_xrealloc(names, (size_t)(n + 1) * sizeof *names);
        names[n++] = sb_xstrdup(e->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(names, (size_t)n, sizeof *names, name_cmp);
    *out = names;
    return n;
}

/* Records a load error. Returns 1 if loading should stop here. */
static int load_error(struct sb_runtime *rt, struct sb_error *err, const struct sb_error *e)
{
    if (rt->load_errors++ == 0 && err != e)
        *err = *e;
    if (!rt->report_all)
        return 1;
    rt->report_all(e);
    return 0;
}

/* Every file of a folder runs once, as the module named by its file name:
 * one already loaded by a require from an earlier file is not run again,
 * and a name another file took (rules/channels.lua next to the engine's
 * scripts/channels.lua) is a load error. */
static int load_dir(struct sb_runtime *rt, const char *dir, int skip_specs, struct sb_txn *txn,
                    struct sb_error *err)
{
    lua_State *L = rt->L;
    char **names = NULL;
    int i, n, rc = 0;
    n = list_scripts(dir, skip_specs, &names, err);
    if (n < 0)
        return -1;
    for (i = 0; i < n && rc == 0; i++) {
        char path[1024], modname[256], msg[600];
        size_t ml = strlen(names[i]) - 4;
        struct sb_error e;
        int state;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(modname, sizeof modname, "%.*s", (int)ml, names[i]);
        state = sb_module_state(L, modname, path, msg, sizeof msg);
        if (state == SB_MODULE_LOADED)
            continue;
        if (state == SB_MODULE_TAKEN) {
            sb_error_set(&e, path, 0, "%s", msg);
            if (load_error(rt, err, &e))
                rc = -1;
            continue;
        }
        if (sb_runtime_load_chunk(L, path, path) != LUA_OK) {
            sb_error_from_lua(&e, lua_tostring(L, -1), path);
            lua_pop(L, 1);
            if (load_error(rt, err, &e))
                rc = -1;
            continue;
        }
        sb_module_begin(L, modname, path);
        lua_pushstring(L, modname);
        if (sb_job_pcall_load(rt, 1, 1, path, txn, &e) != 0) {
            sb_module_forget(L, modname);
            if (load_error(rt, err, &e))
                rc = -1;
            continue;
        }
        sb_module_end(L, modname, -1);
        lua_pop(L, 1);
    }
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* After the engine's own modules (the scripts folder): the global
 * environment is frozen, so a provider or rule file cannot replace what the
 * engine and other files rely on (prelude.lua, engine.freeze). */
static int freeze_globals(struct sb_runtime *rt, struct sb_error *err)
{
    lua_State *L = rt->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(L, -1, "freeze");
    lua_remove(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        sb_error_set(err, "prelude", 0, "freezing the global environment failed: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    /* chunks loaded from now on (provider and rule files, modules they
     * require, load()) get the frozen table as their globals */
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    return 0;
}

static int load_prelude(struct sb_runtime *rt, struct sb_error *err)
{
    lua_State *L = rt->L;
    if (luaL_loadbufferx(L, sb_prelude_lua, sizeof sb_prelude_lua - 1, "=prelude", "t") != LUA_OK) {
        sb_error_set(err, "prelude", 0, "engine prelude failed: %s", lua_tostring(L, -1));
        return -1;
    }
    lua_getfield(L, LUA_REGISTRYINDEX, "sb.loaded");
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        sb_error_set(err, "prelude", 0, "engine prelude failed: %s", lua_tostring(L, -1));
        return -1;
    }
    if (!lua_istable(L, -1)) {
        sb_error_set(err, "prelude", 0, "engine prelude must return a table");
        return -1;
    }
    rt->engine_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Whether a handler name resolves to a function in the runtime being
 * built, by the engine's own resolver (the one jobs use). */
static int resolves_to_function(struct sb_runtime *rt, const char *name)
{
    lua_State *L = rt->L;
    int ok;
    lua_rawgeti(L, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(L, -1, "resolve");
    lua_pushstring(L, name);
    ok = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TFUNCTION;
    lua_pop(L, 2);
    return ok;
}

/* A route naming a handler that does not exist would only fail on the first
 * request; catch it at load so the old runtime keeps serving instead. */
static int check_routes(struct sb_runtime *rt, struct sb_error *err)
{
    size_t i;
    int k, ok = 1;
    for (i = 0; i < rt->nroutes && ok; i++) {
        const struct sb_route *r = &rt->routes[i];
        const char *names[2] = { r->handler, r->calls };
        for (k = 0; k < 2 && ok; k++) {
            struct sb_error where, e;
            if (!names[k] || resolves_to_function(rt, names[k]))
                continue;
            sb_error_from_lua(&where, r->where, r->where);
            sb_error_set(&e, where.file, where.line, "route %s %s: handler '%s' is not a function",
                         r->method, r->pattern, names[k]);
            ok = !load_error(rt, err, &e);
        }
    }
    return ok && rt->load_errors == 0 ? 0 : -1;
}

/* Durable work names its handlers (timers, outbox jobs and result
 * handlers): new code that no longer resolves a name still in use is
 * refused like a missing route handler, instead of that work failing and
 * dying later. */
struct name_check {
    struct sb_runtime *rt;
    struct sb_error *err;
    int ok;
};

static void check_name(const char *what, const char *name, long count, void *arg)
{
    struct name_check *c = arg;
    struct sb_error e;
    if (resolves_to_function(c->rt, name))
        return;
    sb_error_set(&e, "", 0, "%s '%s' is not a function in the new code, and %ld pending %s still use%s it "
                 "(keep the name resolving until they are done)",
                 what, name, count, !strcmp(what, "timer") ? (count == 1 ? "timer" : "timers")
                                                          : (count == 1 ? "outbox entry" : "outbox entries"),
                 count == 1 ? "s" : "");
    c->ok = !load_error(c->rt, c->err, &e) && c->ok;
}

static int check_durable_names(struct sb_runtime *rt, struct sb_error *err)
{
    struct name_check c = { rt, err, 1 };
    sb_handler_uses(check_name, &c);
    return c.ok ? 0 : -1;
}

struct sb_runtime *sb_load_runtime(struct sb_config *cfg, unsigned generation, struct sb_txn *txn,
                                   struct sb_error *err, sb_error_report_fn report_all)
{
    struct sb_runtime *rt = sb_runtime_create(cfg, generation, err);
    lua_State *L;
    int d;

    if (!rt)
        return NULL;
    rt->report_all = report_all;
    L = rt->L;
    lua_getglobal(L, "string");
    sb_lpattern_install(L, lua_gettop(L), sb_job_budget_check);
    lua_pop(L, 1);
    sb_bindings_open(rt);
    if (load_prelude(rt, err))
        goto fail;

    rt->loading = 1;
    for (d = 0; d < SB_DIR_COUNT; d++) {
        if (load_dir(rt, cfg->dirs[d], d == SB_DIR_RULES, txn, err))
            goto fail;
        if (d == SB_DIR_SCRIPTS && freeze_globals(rt, err))
            goto fail;
    }
    rt->loading = 0;
    if (check_routes(rt, err) | check_durable_names(rt, err) || rt->load_errors)
        goto fail;
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return rt;
fail:
    sb_timers_discard_load(generation);
    sb_bus_discard_load(generation);
    sb_runtime_unref(rt);
    return NULL;
}

struct sb_runtime *sb_load_build(const char *config_path, const struct sb_overrides *ov, unsigned generation,
                                 struct sb_txn **txn, struct sb_error *err, sb_error_report_fn report_all)
{
    struct sb_config *cfg = sb_config_load(config_path, ov, err);
    struct sb_runtime *rt;
    *txn = NULL;
    if (!cfg) {
        if (report_all)
            report_all(err);
        return NULL;
    }
    *txn = sb_txn_new();
    rt = sb_load_runtime(cfg, generation, *txn, err, report_all);
    sb_config_unref(cfg);  /* the runtime holds its own reference */
    if (!rt) {
        sb_txn_abort(*txn);
        *txn = NULL;
    }
    return rt;
}
