/* --check and test: a runtime built as a reload builds one, on an event
 * loop of its own, with neither store nor server; the load's writes and
 * each spec run's are aborted, so nothing leaves the process. */
#include "offline.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "bus.h"
#include "counters.h"
#include "job.h"
#include "kvstate.h"
#include "loader.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "runtime.h"
#include "timer.h"
#include "txn.h"
#include "util.h"

#define SPEC_SUFFIX "_spec.lua"
#define SPEC_FILES_MAX 10000
#define SPEC_BYTES_MAX (4 * 1024 * 1024)
#define SPEC_DEPTH_MAX 32   /* folders inside folders: also ends a symlink loop */

static const char *config_file;

static void print_load_error(const struct sb_error *err)
{
    if (err->line > 0)
        fprintf(stderr, "%s:%d: %s\n", err->file, err->line, err->message);
    else
        fprintf(stderr, "%s: %s\n", err->file[0] ? err->file : config_file, err->message);
}

/* Builds generation 1 of the scripts, every load error printed. */
static struct sb_runtime *offline_load(const char *config_path, const struct sb_overrides *ov)
{
    struct sb_error err;
    struct sb_txn *txn;
    struct sb_runtime *rt;
    sb_base = event_base_new();
    sb_log_set_level(SB_LOG_WARN);
    sb_jobs_init();
    memset(&err, 0, sizeof err);
    config_file = config_path;
    rt = sb_load_build(config_path, ov, 1, &txn, &err, print_load_error);
    if (rt)
        sb_txn_abort(txn);   /* a check changes nothing */
    return rt;
}

static void offline_end(struct sb_runtime *rt)
{
    if (rt) {
        sb_bus_free_all();
        sb_runtime_unref(rt);
    }
    sb_jobs_free();
    sb_metrics_free();
    sb_timers_free_all();
    sb_kv_free_all();
    sb_counters_free_all();   /* counts are made at once, even by a load that failed */
    event_base_free(sb_base);
    sb_base = NULL;
}

int sb_offline_check(const char *config_path, const struct sb_overrides *ov)
{
    struct sb_runtime *rt = offline_load(config_path, ov);
    offline_end(rt);
    if (!rt)
        return 1;
    printf("ok\n");
    return 0;
}

/* --- finding spec files --- */

struct spec_files {
    char **paths;
    int n;
};

static int spec_add(struct spec_files *l, const char *path)
{
    if (l->n >= SPEC_FILES_MAX) {
        fprintf(stderr, "switchboard test: more than %d spec files\n", SPEC_FILES_MAX);
        return -1;
    }
    l->paths = sb_xrealloc(l->paths, (size_t)(l->n + 1) * sizeof *l->paths);
    l->paths[l->n++] = sb_xstrdup(path);
    return 0;
}

static void spec_files_free(struct spec_files *l)
{
    while (l->n > 0)
        free(l->paths[--l->n]);
    free(l->paths);
    l->paths = NULL;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_spec_name(const char *name)
{
    size_t n = strlen(name), s = strlen(SPEC_SUFFIX);
    return n > s && strcmp(name + n - s, SPEC_SUFFIX) == 0;
}

/* Adds the spec files under dir, by name at each level (folders where their
 * name falls), hidden entries skipped as the loader skips them. */
static int find_specs(const char *dir, int depth, struct spec_files *l)
{
    DIR *d;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, i, dl = strlen(dir);
    int rc = 0;
    if (depth > SPEC_DEPTH_MAX) {
        fprintf(stderr, "switchboard test: %s: folders nested more than %d deep\n", dir, SPEC_DEPTH_MAX);
        return -1;
    }
    d = opendir(dir);
    if (!d) {
        fprintf(stderr, "switchboard test: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        names = sb_xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = sb_xstrdup(e->d_name);
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, name_cmp);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    for (i = 0; i < n && rc == 0; i++) {
        struct stat st;
        char *path = sb_xmalloc(dl + strlen(names[i]) + 2);
        sprintf(path, "%.*s/%s", (int)dl, dir, names[i]);
        if (stat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode))
                rc = find_specs(path, depth + 1, l);
            else if (S_ISREG(st.st_mode) && is_spec_name(names[i]))
                rc = spec_add(l, path);
        }
        free(path);
    }
    for (i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* Returns 0, -1 for a folder that cannot be read (printed), or -2 for a
 * path that is neither a file nor a folder (printed). */
static int collect_specs(char *const *paths, int npaths, const char *rules_dir, struct spec_files *l)
{
    int i;
    if (npaths == 0) {
        struct stat st;
        /* the rules folder may not exist, like for the loader */
        if (stat(rules_dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return 0;
        return find_specs(rules_dir, 0, l);
    }
    for (i = 0; i < npaths; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0 || !(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
            fprintf(stderr, "switchboard test: %s: no such file or folder\n", paths[i]);
            return -2;
        }
        if (S_ISDIR(st.st_mode) ? find_specs(paths[i], 0, l) : spec_add(l, paths[i]))
            return -1;
    }
    return 0;
}

/* --- running them --- */

/* Writes text on one output line: a line break in it continues on an
 * indented line, so every result starts a line of its own. */
static void put_text(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if (s[i] == '\n')
            fputs("\n    ", stdout);
        else if (s[i] != '\r' && s[i] != '\0')
            putchar(s[i]);
    }
}

static void put_str(const char *s) { put_text(s, strlen(s)); }

static void put_field(lua_State *L, int t, const char *key)
{
    size_t n;
    const char *s;
    lua_pushstring(L, key);
    lua_rawget(L, t);
    s = lua_tolstring(L, -1, &n);
    put_text(s, n);
    lua_pop(L, 1);
}

/* One failure for the whole file. */
static void file_failed(const char *label, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void file_failed(const char *label, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fputs("FAIL ", stdout);
    put_str(label);
    fputs(": ", stdout);
    put_str(msg);
    putchar('\n');
}

/* Whether the value at idx is a list of {name = string, ok = boolean,
 * message = string|nil}; why says what is not. Raw access only: this runs
 * outside protected mode, where a metamethod's error would end the
 * process. */
static int check_results(lua_State *L, int idx, char *why, size_t size)
{
    lua_Integer n, i, count = 0;
    if (!lua_istable(L, idx)) {
        snprintf(why, size, "rules_spec.run returned %s, not a list of results", luaL_typename(L, idx));
        return -1;
    }
    n = (lua_Integer)lua_rawlen(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        lua_pop(L, 1);
    }
    if (count != n) {
        snprintf(why, size, "rules_spec.run returned a table that is not a list of results");
        return -1;
    }
    for (i = 1; i <= n; i++) {
        int t = lua_gettop(L) + 1, bad;
        lua_rawgeti(L, idx, i);
        if (!lua_istable(L, t)) {
            snprintf(why, size, "rules_spec.run: result %lld is %s, not a table", (long long)i, luaL_typename(L, t));
            lua_settop(L, t - 1);
            return -1;
        }
        lua_pushliteral(L, "name");
        lua_rawget(L, t);
        lua_pushliteral(L, "ok");
        lua_rawget(L, t);
        lua_pushliteral(L, "message");
        lua_rawget(L, t);
        bad = lua_type(L, t + 1) != LUA_TSTRING ? 1 : lua_type(L, t + 2) != LUA_TBOOLEAN ? 2
              : !lua_isnil(L, t + 3) && lua_type(L, t + 3) != LUA_TSTRING ? 3 : 0;
        lua_settop(L, t - 1);
        if (bad) {
            snprintf(why, size, "rules_spec.run: result %lld: %s", (long long)i,
                     bad == 1 ? "name must be a string" : bad == 2 ? "ok must be a boolean"
                                                         : "message must be a string or nil");
            return -1;
        }
    }
    return 0;
}

static void print_results(lua_State *L, int idx, const char *label, int *passed, int *failed)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), i;
    for (i = 1; i <= n; i++) {
        int t = lua_gettop(L) + 1, ok;
        lua_rawgeti(L, idx, i);
        lua_pushliteral(L, "ok");
        lua_rawget(L, t);
        ok = lua_toboolean(L, -1);
        lua_pop(L, 1);
        fputs(ok ? "ok   " : "FAIL ", stdout);
        put_str(label);
        fputs(": ", stdout);
        put_field(L, t, "name");
        if (!ok) {
            lua_pushliteral(L, "message");
            if (lua_rawget(L, t) == LUA_TSTRING) {
                fputs(": ", stdout);
                put_field(L, t, "message");
            }
            lua_pop(L, 1);
        }
        putchar('\n');
        if (ok)
            (*passed)++;
        else
            (*failed)++;
        lua_settop(L, t - 1);
    }
}

/* Calls run(label, source) (the function at run_idx) under the load budget
 * and prints what it found. */
static void run_spec(struct sb_runtime *rt, int run_idx, const char *label, int *passed, int *failed)
{
    lua_State *L = rt->L;
    int top = lua_gettop(L), rc;
    char *source = NULL, why[300];
    size_t len;
    struct sb_error e;
    struct sb_txn *txn;
    if (sb_read_file(label, SPEC_BYTES_MAX, &source, &len, why, sizeof why) != 0) {
        file_failed(label, "cannot read the file: %s", why);
        (*failed)++;
        return;
    }
    lua_pushvalue(L, run_idx);
    lua_pushstring(L, label);
    lua_pushlstring(L, source, len);
    free(source);
    txn = sb_txn_new();
    rc = sb_job_pcall_load(rt, 2, 1, label, txn, &e);
    sb_txn_abort(txn);   /* a spec run leaves nothing */
    if (rc != 0) {
        if (e.line > 0)
            file_failed(label, "%s:%d: %s", e.file, e.line, e.message);
        else
            file_failed(label, "%s", e.message);
        (*failed)++;
    } else if (check_results(L, lua_gettop(L), why, sizeof why) != 0) {
        file_failed(label, "%s", why);
        (*failed)++;
    } else {
        print_results(L, lua_gettop(L), label, passed, failed);
    }
    lua_settop(L, top);
}

/* Pushes require("rules_spec").run, or prints why not and returns -1. */
static int push_runner(struct sb_runtime *rt)
{
    lua_State *L = rt->L;
    struct sb_error e;
    struct sb_txn *txn = sb_txn_new();
    int rc;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "rules_spec");
    rc = sb_job_pcall_load(rt, 1, 1, "rules_spec", txn, &e);
    sb_txn_abort(txn);
    if (rc != 0) {
        if (e.line > 0)
            fprintf(stderr, "switchboard test: require(\"rules_spec\"): %s:%d: %s\n", e.file, e.line, e.message);
        else
            fprintf(stderr, "switchboard test: require(\"rules_spec\"): %s\n", e.message);
        return -1;
    }
    if (lua_istable(L, -1)) {
        lua_pushliteral(L, "run");
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    if (!lua_isfunction(L, -1)) {
        fprintf(stderr, "switchboard test: the module rules_spec has no function run\n");
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

int sb_offline_test(const char *config_path, const struct sb_overrides *ov, char *const *paths, int npaths)
{
    struct spec_files files = { NULL, 0 };
    struct sb_runtime *rt = offline_load(config_path, ov);
    int i, rc = 1, passed = 0, failed = 0;
    if (!rt)
        goto done;
    i = collect_specs(paths, npaths, rt->cfg->dirs[SB_DIR_RULES], &files);
    if (i != 0) {
        rc = i == -2 ? 2 : 1;
        goto done;
    }
    if (push_runner(rt) != 0)
        goto done;
    for (i = 0; i < files.n; i++)
        run_spec(rt, lua_gettop(rt->L), files.paths[i], &passed, &failed);
    lua_settop(rt->L, 0);
    printf("%d passed, %d failed\n", passed, failed);
    rc = failed ? 1 : 0;
done:
    fflush(stdout);
    spec_files_free(&files);
    offline_end(rt);
    return rc;
}
