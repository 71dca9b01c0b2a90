#include "config.h"

#include "schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#define CONFIG_MAX_BYTES (1 << 20)
#define CONFIG_INSTRUCTION_LIMIT 50000000L
#define VIEW_MAX_DEPTH 32

static int config_env(lua_State *L)
{
    const char *v = getenv(luaL_checkstring(L, 1));
    if (v && *v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    return 1;
}

static void config_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    luaL_error(L, "config file ran too long (more than %d instructions)", (int)CONFIG_INSTRUCTION_LIMIT);
}

int sb_parse_listen(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    char *end;
    long p;
    size_t hl;
    if (!colon || colon == s)
        return -1;
    p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535)
        return -1;
    hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    *host = sb_xmalloc(hl + 1);
    memcpy(*host, s, hl);
    (*host)[hl] = '\0';
    *port = (int)p;
    return 0;
}

/* Field readers. Each expects the table at stack index t (absolute) and
 * leaves the stack as it found it. They return 0, or -1 with err set. */

static int want_table(lua_State *L, int t, const char *key, struct sb_error *err, const char *file)
{
    int type = lua_getfield(L, t, key);
    if (type == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
        return 0;
    }
    if (type != LUA_TTABLE) {
        lua_pop(L, 1);
        sb_error_set(err, file, 0, "config: %s must be a table", key);
        return -1;
    }
    return 0;
}

static int get_string(lua_State *L, int t, const char *key, const char *def, char **out,
                      struct sb_error *err, const char *file, const char *prefix)
{
    int type = lua_getfield(L, t, key);
    int rc = 0;
    if (type == LUA_TNIL) {
        *out = def ? sb_xstrdup(def) : NULL;
    } else if (type == LUA_TSTRING) {
        *out = sb_xstrdup(lua_tostring(L, -1));
    } else {
        sb_error_set(err, file, 0, "config: %s%s must be a string", prefix, key);
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

static int get_number(lua_State *L, int t, const char *key, double def, double min, double max,
                      double *out, struct sb_error *err, const char *file, const char *prefix)
{
    int type = lua_getfield(L, t, key);
    int rc = 0;
    if (type == LUA_TNIL) {
        *out = def;
    } else if (type == LUA_TNUMBER && lua_tonumber(L, -1) >= min && lua_tonumber(L, -1) <= max) {
        *out = lua_tonumber(L, -1);
    } else {
        sb_error_set(err, file, 0, "config: %s%s must be a number between %g and %g", prefix, key, min, max);
        rc = -1;
    }
    lua_pop(L, 1);
    return rc;
}

static int parse_table(lua_State *L, struct sb_config *cfg, const struct sb_overrides *ov, struct sb_error *err)
{
    const char *file = cfg->path;
    int root = lua_gettop(L);
    int sub;
    double d;
    char *listen = NULL, *level = NULL;
    int rc = -1;

    if (ov && ov->listen) {
        lua_pushstring(L, ov->listen);
        lua_setfield(L, root, "listen");
    }
    if (ov && ov->data_dir) {
        lua_pushstring(L, ov->data_dir);
        lua_setfield(L, root, "data_dir");
    }
    if (get_string(L, root, "listen", "127.0.0.1:8080", &listen, err, file, ""))
        goto done;
    if (sb_parse_listen(listen, &cfg->listen_host, &cfg->listen_port)) {
        sb_error_set(err, file, 0, "config: listen must look like HOST:PORT, got '%s'", listen);
        goto done;
    }
    if (get_string(L, root, "data_dir", "./var", &cfg->data_dir, err, file, "") ||
        get_string(L, root, "admin_token", NULL, &cfg->admin_token, err, file, "") ||
        get_string(L, root, "api_token", NULL, &cfg->api_token, err, file, ""))
        goto done;
    if (get_number(L, root, "shutdown_grace", 10, 0, 3600, &cfg->shutdown_grace, err, file, ""))
        goto done;
    if (get_string(L, root, "timezone", "UTC", &cfg->timezone, err, file, ""))
        goto done;
    {
        struct sb_schedule probe;
        char why[200];
        if (sb_schedule_parse("00:00", cfg->timezone, &probe, why, sizeof why) != 0) {
            sb_error_set(err, file, 0, "config: timezone: %s", why);
            goto done;
        }
    }

    if (want_table(L, root, "timers", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "retry_max", 300, 1, 86400, &cfg->timer_retry_max, err, file, "timers."))
        goto done;
    lua_pop(L, 1);

    if (want_table(L, root, "maintenance", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "interval", 30, 0.1, 3600, &cfg->maintenance_interval, err, file, "maintenance."))
        goto done;
    lua_pop(L, 1);

    if (want_table(L, root, "retention", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "closed_conversations", 0, 0, 86400.0 * 36500, &cfg->keep_closed, err, file,
                   "retention.") ||
        get_number(L, sub, "delivered_outbox", 0, 0, 86400.0 * 3650, &cfg->keep_delivered, err, file,
                   "retention.") ||
        get_number(L, sub, "dead_letters", 30 * 86400.0, 1, 86400.0 * 3650, &cfg->keep_dead, err, file,
                   "retention."))
        goto done;
    lua_pop(L, 1);

    if (want_table(L, root, "log", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_string(L, sub, "level", "info", &level, err, file, "log."))
        goto done;
    if (sb_log_parse_level(level, &cfg->log_level)) {
        sb_error_set(err, file, 0, "config: log.level must be debug, info, warn or error");
        goto done;
    }
    lua_pop(L, 1);

    if (want_table(L, root, "paths", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_string(L, sub, "scripts", "scripts", &cfg->dirs[SB_DIR_SCRIPTS], err, file, "paths.") ||
        get_string(L, sub, "providers", "providers", &cfg->dirs[SB_DIR_PROVIDERS], err, file, "paths.") ||
        get_string(L, sub, "rules", "rules", &cfg->dirs[SB_DIR_RULES], err, file, "paths."))
        goto done;
    {
        int type = lua_getfield(L, sub, "modules");
        if (type == LUA_TTABLE) {
            lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
            if (n > 16) {
                sb_error_set(err, file, 0, "config: paths.modules lists more than 16 folders");
                goto done;
            }
            cfg->module_dirs = sb_xcalloc((size_t)n + 1, sizeof *cfg->module_dirs);
            for (i = 1; i <= n; i++) {
                if (lua_rawgeti(L, -1, i) != LUA_TSTRING) {
                    sb_error_set(err, file, 0, "config: paths.modules must be a list of folder names");
                    goto done;
                }
                cfg->module_dirs[cfg->nmodule_dirs++] = sb_xstrdup(lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        } else if (type != LUA_TNIL) {
            sb_error_set(err, file, 0, "config: paths.modules must be a list of folder names");
            goto done;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);

    if (want_table(L, root, "store", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_string(L, sub, "sync", "full", &cfg->store_sync, err, file, "store."))
        goto done;
    if (strcmp(cfg->store_sync, "full") && strcmp(cfg->store_sync, "normal") && strcmp(cfg->store_sync, "off")) {
        sb_error_set(err, file, 0, "config: store.sync must be full, normal or off");
        goto done;
    }
    lua_pop(L, 1);

    if (want_table(L, root, "conversations", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "recent_messages", 20, 1, 200, &d, err, file, "conversations."))
        goto done;
    cfg->recent_messages = (int)d;
    if (get_number(L, sub, "memory_idle", 300, 1, 86400 * 7, &cfg->memory_idle, err, file, "conversations."))
        goto done;
    if (get_number(L, sub, "dedupe_window", 86400, 1, 86400 * 365, &cfg->dedupe_window, err, file, "conversations."))
        goto done;
    if (get_number(L, sub, "max_text_bytes", 4096, 1, 1 << 20, &d, err, file, "conversations."))
        goto done;
    cfg->max_text_bytes = (long)d;
    lua_pop(L, 1);

    if (want_table(L, root, "outbox", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "max_attempts", 10, 1, 1000, &d, err, file, "outbox."))
        goto done;
    cfg->outbox_max_attempts = (int)d;
    if (get_number(L, sub, "max_age", 86400, 1, 86400 * 365, &cfg->outbox_max_age, err, file, "outbox.") ||
        get_number(L, sub, "backoff_base", 1, 0.001, 3600, &cfg->outbox_backoff_base, err, file, "outbox.") ||
        get_number(L, sub, "backoff_max", 300, 0.001, 86400, &cfg->outbox_backoff_max, err, file, "outbox.") ||
        get_number(L, sub, "timeout", 30, 0.01, 3600, &cfg->outbox_timeout, err, file, "outbox."))
        goto done;
    if (get_number(L, sub, "concurrency", 64, 1, 10000, &d, err, file, "outbox."))
        goto done;
    cfg->outbox_concurrency = (int)d;
    lua_pop(L, 1);

    if (want_table(L, root, "events", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "concurrency", 16, 1, 10000, &d, err, file, "events."))
        goto done;
    cfg->events_concurrency = (int)d;
    if (get_number(L, sub, "max_attempts", 5, 1, 1000, &d, err, file, "events."))
        goto done;
    cfg->events_max_attempts = (int)d;
    if (get_number(L, sub, "retry_max", 60, 0.001, 86400, &cfg->events_retry_max, err, file, "events.") ||
        get_number(L, sub, "keep_cursors", 7 * 86400.0, 1, 86400.0 * 3650, &cfg->events_keep_cursors, err, file,
                   "events.") ||
        get_number(L, sub, "stream_heartbeat", 15, 0.01, 3600, &cfg->events_stream_heartbeat, err, file,
                   "events."))
        goto done;
    if (get_number(L, sub, "stream_max", 64, 0, 100000, &d, err, file, "events."))
        goto done;
    cfg->events_stream_max = (int)d;
    if (get_number(L, sub, "stream_buffer_bytes", 1 << 20, 4096, 1 << 30, &d, err, file, "events."))
        goto done;
    cfg->events_stream_buffer = (long)d;
    lua_pop(L, 1);

    if (want_table(L, root, "metrics", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "max_series", 1000, 1, 1000000, &d, err, file, "metrics."))
        goto done;
    cfg->metrics_max_series = (size_t)d;
    lua_pop(L, 1);

    if (want_table(L, root, "http", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "max_body_bytes", 1048576, 1024, 1 << 30, &d, err, file, "http."))
        goto done;
    cfg->max_body_bytes = (long)d;
    if (get_number(L, sub, "max_header_bytes", 16384, 1024, 1 << 20, &d, err, file, "http."))
        goto done;
    cfg->max_header_bytes = (long)d;
    if (get_number(L, sub, "idle_timeout", 60, 1, 86400, &d, err, file, "http."))
        goto done;
    cfg->idle_timeout = (int)d;
    if (get_number(L, sub, "max_connections", 4096, 1, 1000000, &d, err, file, "http."))
        goto done;
    cfg->http_max_connections = (int)d;
    lua_pop(L, 1);

    if (want_table(L, root, "http_client", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "max_response_bytes", 16 << 20, 1024, 1 << 30, &d, err, file, "http_client."))
        goto done;
    cfg->http_client_max_response = (long)d;
    if (get_number(L, sub, "max_connections", 64, 1, 10000, &d, err, file, "http_client."))
        goto done;
    cfg->http_client_max_connections = (int)d;
    lua_pop(L, 1);

    if (want_table(L, root, "lua", err, file))
        goto done;
    sub = lua_gettop(L);
    if (get_number(L, sub, "memory_limit_mb", 64, 1, 65536, &d, err, file, "lua."))
        goto done;
    cfg->lua_memory_limit = (size_t)(d * 1024 * 1024);
    if (get_number(L, sub, "cpu_ms_per_resume", 200, 1, 600000, &cfg->cpu_ms_per_resume, err, file, "lua.") ||
        get_number(L, sub, "cpu_ms_per_job", 2000, 1, 3600000, &cfg->cpu_ms_per_job, err, file, "lua.") ||
        get_number(L, sub, "job_timeout", 30, 0.01, 86400, &cfg->job_timeout, err, file, "lua."))
        goto done;
    lua_pop(L, 1);
    rc = 0;
done:
    lua_settop(L, root);
    free(listen);
    free(level);
    return rc;
}

struct sb_config *sb_config_load(const char *path, const struct sb_overrides *ov, struct sb_error *err)
{
    struct sb_config *cfg = sb_xcalloc(1, sizeof *cfg);
    char *src = NULL;
    size_t len;
    char chunkname[300];
    char msg[256];
    lua_State *L;

    cfg->refs = 1;
    cfg->path = sb_xstrdup(path);
    cfg->table_ref = LUA_NOREF;
    L = cfg->L = luaL_newstate();
    if (!L) {
        sb_error_set(err, path, 0, "out of memory");
        goto fail;
    }
    /* Only pure libraries: the config may read the environment and compute,
     * nothing else. */
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 1);
    lua_settop(L, 0);
    lua_pushnil(L);
    lua_setglobal(L, "dofile");
    lua_pushnil(L);
    lua_setglobal(L, "loadfile");
    lua_pushnil(L);
    lua_setglobal(L, "load");
    lua_pushcfunction(L, config_env);
    lua_setglobal(L, "env");

    if (sb_read_file(path, CONFIG_MAX_BYTES, &src, &len, msg, sizeof msg)) {
        sb_error_set(err, path, 0, "%s", msg);
        goto fail;
    }
    snprintf(chunkname, sizeof chunkname, "@%s", path);
    if (luaL_loadbufferx(L, src, len, chunkname, "t") != LUA_OK) {
        sb_error_from_lua(err, lua_tostring(L, -1), path);
        goto fail;
    }
    lua_sethook(L, config_hook, LUA_MASKCOUNT, (int)CONFIG_INSTRUCTION_LIMIT);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
        sb_error_from_lua(err, lua_tostring(L, -1), path);
        goto fail;
    }
    lua_sethook(L, NULL, 0, 0);
    if (!lua_istable(L, -1)) {
        sb_error_set(err, path, 0, "config file must return a table");
        goto fail;
    }
    if (parse_table(L, cfg, ov, err))
        goto fail;
    cfg->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    free(src);
    return cfg;
fail:
    free(src);
    sb_config_unref(cfg);
    return NULL;
}

void sb_config_ref(struct sb_config *cfg) { cfg->refs++; }

void sb_config_unref(struct sb_config *cfg)
{
    int i;
    if (!cfg || --cfg->refs > 0)
        return;
    if (cfg->L)
        lua_close(cfg->L);
    free(cfg->path);
    free(cfg->listen_host);
    free(cfg->data_dir);
    free(cfg->admin_token);
    free(cfg->api_token);
    for (i = 0; i < SB_DIR_COUNT; i++)
        free(cfg->dirs[i]);
    for (i = 0; i < cfg->nmodule_dirs; i++)
        free(cfg->module_dirs[i]);
    free(cfg->module_dirs);
    free(cfg->store_sync);
    free(cfg->timezone);
    free(cfg);
}

/* Read-only proxies: the data lives in the metatable's __index table. */

static int ro_newindex(lua_State *L)
{
    return luaL_error(L, "config is read-only");
}

static int ro_len(lua_State *L)
{
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

static int ro_pairs(lua_State *L)
{
    lua_getglobal(L, "next");
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_pushnil(L);
    return 3;
}

/* Copies the value at index `from_idx` of `from` onto the top of `to`.
 * Stack of to: [-0, +1]. */
static void copy_value(lua_State *from, int from_idx, lua_State *to, int depth)
{
    from_idx = lua_absindex(from, from_idx);
    switch (lua_type(from, from_idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(from, from_idx, &n);
        lua_pushlstring(to, s, n);
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(from, from_idx))
            lua_pushinteger(to, lua_tointeger(from, from_idx));
        else
            lua_pushnumber(to, lua_tonumber(from, from_idx));
        break;
    case LUA_TBOOLEAN:
        lua_pushboolean(to, lua_toboolean(from, from_idx));
        break;
    case LUA_TTABLE:
        if (depth >= VIEW_MAX_DEPTH) {
            lua_pushnil(to);
            break;
        }
        lua_newtable(to);                       /* proxy */
        lua_newtable(to);                       /* metatable */
        lua_newtable(to);                       /* data */
        lua_pushnil(from);
        while (lua_next(from, from_idx)) {
            int kt = lua_type(from, -2);
            int vt = lua_type(from, -1);
            if ((kt == LUA_TSTRING || kt == LUA_TNUMBER || kt == LUA_TBOOLEAN) &&
                (vt == LUA_TSTRING || vt == LUA_TNUMBER || vt == LUA_TBOOLEAN || vt == LUA_TTABLE)) {
                copy_value(from, -2, to, depth + 1);
                copy_value(from, -1, to, depth + 1);
                lua_rawset(to, -3);
            }
            lua_pop(from, 1);
        }
        lua_setfield(to, -2, "__index");
        lua_pushcfunction(to, ro_newindex);
        lua_setfield(to, -2, "__newindex");
        lua_pushcfunction(to, ro_len);
        lua_setfield(to, -2, "__len");
        lua_pushcfunction(to, ro_pairs);
        lua_setfield(to, -2, "__pairs");
        lua_pushliteral(to, "read-only");
        lua_setfield(to, -2, "__metatable");
        lua_pushboolean(to, 1);
        lua_setfield(to, -2, SB_CONFIG_READONLY_MARK);
        lua_setmetatable(to, -2);
        break;
    default:
        lua_pushnil(to);
        break;
    }
}

void sb_config_push_view(const struct sb_config *cfg, lua_State *L)
{
    lua_rawgeti(cfg->L, LUA_REGISTRYINDEX, cfg->table_ref);
    copy_value(cfg->L, -1, L, 0);
    lua_pop(cfg->L, 1);
}

/* A secret for an outbound call: a string (or number) under channels.,
 * desks., bots. or notify. (the rules' notification targets) of this
 * config; NULL otherwise. Only instance settings can be named, so a
 * template cannot reach the admin or API tokens. */
char *sb_config_secret(const struct sb_config *cfg, const char *path)
{
    lua_State *L = cfg->L;
    char seg[256];
    const char *p = path, *dot;
    char *out = NULL;
    int top = lua_gettop(L);
    if (strncmp(path, "channels.", 9) && strncmp(path, "desks.", 6) && strncmp(path, "bots.", 5) &&
        strncmp(path, "notify.", 7))
        return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, cfg->table_ref);
    for (;;) {
        size_t n;
        dot = strchr(p, '.');
        n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof seg || !lua_istable(L, -1))
            goto done;
        memcpy(seg, p, n);
        seg[n] = '\0';
        lua_getfield(L, -1, seg);
        if (!dot)
            break;
        p = dot + 1;
    }
    if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
        out = sb_xstrdup(lua_tostring(L, -1));
done:
    lua_settop(L, top);
    return out;
}
