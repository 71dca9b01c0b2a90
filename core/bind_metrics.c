/* metrics.count(name [, labels [, n]]): counted at once in the core's
 * registry (counters.c), not with the job's transaction, so a job that
 * counts an API error and then fails still leaves the count. */
#include "bind_metrics.h"

#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "conv.h"
#include "counters.h"
#include "runtime.h"

/* How much of a refused name or label an error shows. */
#define SHOWN_MAX 64

/* Pushes s (len bytes) cut to SHOWN_MAX bytes for an error message.
 * Stack: [-0, +1]. */
static const char *push_shown(lua_State *L, const char *s, size_t len)
{
    if (len <= SHOWN_MAX)
        return lua_pushlstring(L, s, len);
    lua_pushlstring(L, s, SHOWN_MAX);
    lua_pushliteral(L, "...");
    lua_concat(L, 2);
    return lua_tostring(L, -1);
}

/* Reads the labels table at index t into labels; returns how many.
 * Values that are numbers are converted to strings kept on the stack
 * (below the iteration key) until the count is made. Raises naming the
 * label on anything the rules refuse. Stack: [-0, +k], k <= the labels. */
static size_t read_labels(lua_State *L, int t, struct sb_counter_label *labels)
{
    size_t n = 0;
    luaL_checkstack(L, SB_COUNTER_LABELS_MAX + 4, "metrics.count");
    lua_pushnil(L);
    while (lua_next(L, t)) {
        struct sb_counter_label *l;
        const char *problem;
        size_t name_len;
        int vtype = lua_type(L, -1);
        if (lua_type(L, -2) == LUA_TNUMBER) {
            lua_pushvalue(L, -2);   /* converting the key itself would confuse lua_next */
            return (size_t)luaL_error(L, "metrics.count: label %s: label names must be strings", lua_tostring(L, -1));
        }
        if (lua_type(L, -2) != LUA_TSTRING)
            return (size_t)luaL_error(L, "metrics.count: label names must be strings, not %s", luaL_typename(L, -2));
        if (n == SB_COUNTER_LABELS_MAX)
            return (size_t)luaL_error(L, "metrics.count: more than %d labels (at label \"%s\")",
                                      SB_COUNTER_LABELS_MAX, push_shown(L, lua_tostring(L, -2), lua_rawlen(L, -2)));
        l = &labels[n];
        l->name = lua_tolstring(L, -2, &name_len);
        if (strlen(l->name) != name_len)
            return (size_t)luaL_error(L, "metrics.count: label \"%s\" must match ^[a-z_][a-z0-9_]*$",
                                      push_shown(L, l->name, name_len));
        if (vtype == LUA_TNUMBER) {
            luaL_tolstring(L, -1, NULL);
            lua_insert(L, -3);   /* kept below the key: lua_next needs the key on top */
            l->value = lua_tolstring(L, -3, &l->value_len);
        } else if (vtype == LUA_TSTRING) {
            l->value = lua_tolstring(L, -1, &l->value_len);   /* the table keeps it alive */
        } else {
            return (size_t)luaL_error(L, "metrics.count: label \"%s\" must be a string or a number, not %s",
                                      push_shown(L, l->name, name_len), luaL_typename(L, -1));
        }
        problem = sb_counter_label_problem(l);
        if (!problem && !sb_utf8_valid(l->value, l->value_len))
            problem = "has a value that is not UTF-8";
        if (problem)
            return (size_t)luaL_error(L, "metrics.count: label \"%s\" %s", push_shown(L, l->name, name_len), problem);
        n++;
        lua_pop(L, 1);
    }
    return n;
}

/* Returns true when counted, false when the series is new and
 * metrics.max_series series exist already. */
static int metrics_count(lua_State *L)
{
    struct sb_counter_label labels[SB_COUNTER_LABELS_MAX];
    size_t name_len, nlabels = 0;
    const char *name, *problem;
    lua_Integer n = 1;
    int exact = 1;
    lua_settop(L, 3);
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "metrics.count: name must be a string, not %s", luaL_typename(L, 1));
    name = lua_tolstring(L, 1, &name_len);
    problem = sb_counter_name_problem(name, name_len);
    if (!problem && strlen(name) != name_len)
        problem = "must match ^[a-z][a-z0-9_]*_total$";
    if (problem)
        return luaL_error(L, "metrics.count: name \"%s\" %s", push_shown(L, name, name_len), problem);
    if (!lua_isnil(L, 3)) {
        n = lua_type(L, 3) == LUA_TNUMBER ? lua_tointegerx(L, 3, &exact) : 0;
        if (!exact || n < 1)
            return luaL_error(L, "metrics.count: n must be a positive integer");
    }
    if (!lua_isnil(L, 2)) {
        if (!lua_istable(L, 2))
            return luaL_error(L, "metrics.count: labels must be a table, not %s", luaL_typename(L, 2));
        nlabels = read_labels(L, 2, labels);
    }
    lua_pushboolean(L, sb_counter_add(name, labels, nlabels, (uint64_t)n,
                                      sb_runtime_of(L)->cfg->metrics_max_series) == SB_COUNTER_COUNTED);
    return 1;
}

void sb_bind_metrics_open(lua_State *L)
{
    static const luaL_Reg funcs[] = { { "count", metrics_count }, { NULL, NULL } };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "metrics");
}
