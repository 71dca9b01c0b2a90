/* conversations.read(kind, params) -> JSON text | nil, error: a page of the
 * store (yields), in the shapes docs/conversations.md gives for the read API:
 *   "conversation" {id, messages},
 *   "conversations" {desk, group, agent, status, state, channel, order, limit, cursor},
 *   "conversation_counts" {desk, by, group, agent, status, state, channel},
 *   "messages" {id, limit, cursor}, "events" {id, limit, cursor},
 *   "outbox_dead" {limit, cursor}, "outbox_entry" {id}
 * Parameters of the wrong type raise, naming the parameter. */
#include "bind_read.h"

#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "job.h"
#include "store.h"

static void read_done(void *arg, const char *json, size_t len, const char *error)
{
    struct sb_job *job = arg;
    if (sb_job_unpin(job))
        return; /* the job ended meanwhile (deadline, shutdown) */
    if (json) {
        lua_pushlstring(job->co, json, len);
        sb_job_answer(job, 1);
    } else {
        lua_pushnil(job->co);
        lua_pushstring(job->co, error ? error : "store read failed");
        sb_job_answer(job, 2);
    }
}

static const char *opt_text(lua_State *L, int t, const char *field)
{
    const char *s = NULL;
    if (lua_getfield(L, t, field) == LUA_TSTRING)
        s = lua_tostring(L, -1);
    lua_pop(L, 1);   /* the string stays referenced by the table */
    return s;
}

/* params[field]: nil or a string; anything else raises naming the field.
 * The string stays referenced by the table (the read copies it at once). */
static const char *opt_string(lua_State *L, int t, const char *field)
{
    const char *s = NULL;
    int type = lua_getfield(L, t, field);
    if (type == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (type != LUA_TNIL)
        luaL_error(L, "%s must be a string", field);
    lua_pop(L, 1);
    return s;
}

/* params[field]: nil, a string, or an array of 1 to max strings, put in
 * list; returns how many. */
static int opt_list(lua_State *L, int t, const char *field, const char **list, int max)
{
    int n = 0, type = lua_getfield(L, t, field);
    if (type == LUA_TSTRING) {
        list[n++] = lua_tostring(L, -1);
    } else if (type == LUA_TTABLE) {
        lua_Unsigned i, len = lua_rawlen(L, -1);
        if (len < 1 || len > (lua_Unsigned)max)
            luaL_error(L, "%s must be a string or a list of 1 to %d strings", field, max);
        for (i = 1; i <= len; i++) {
            if (lua_rawgeti(L, -1, (lua_Integer)i) != LUA_TSTRING)
                luaL_error(L, "%s must be a string or a list of 1 to %d strings", field, max);
            list[n++] = lua_tostring(L, -1);
            lua_pop(L, 1);
        }
    } else if (type != LUA_TNIL) {
        luaL_error(L, "%s must be a string or a list of 1 to %d strings", field, max);
    }
    lua_pop(L, 1);
    return n;
}

/* The filters of a list or a count of conversations. */
static void conversation_filters(lua_State *L, int t, struct store_page_query *q)
{
    int type;
    q->desk = opt_string(L, t, "desk");
    q->group = opt_string(L, t, "group");
    type = lua_getfield(L, t, "agent");
    if (type == LUA_TSTRING)
        q->agent = lua_tostring(L, -1);
    else if (type == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        q->no_agent = 1;
    else if (type != LUA_TNIL)
        luaL_error(L, "agent must be a string, or false for none");
    lua_pop(L, 1);
    q->nstatus = opt_list(L, t, "status", q->status, STORE_MAX_STATUSES);
    q->nstate = opt_list(L, t, "state", q->state, STORE_MAX_STATES);
    q->nchannel = opt_list(L, t, "channel", q->channel, STORE_MAX_CHANNELS);
}

static int opt_oldest_first(lua_State *L, int t)
{
    const char *order = opt_string(L, t, "order");
    if (order && strcmp(order, "asc") && strcmp(order, "desc"))
        luaL_error(L, "order must be asc or desc");
    return order && !strcmp(order, "asc");
}

static enum store_count_by check_by(lua_State *L, int t)
{
    static const char *const names[] = { "agent", "group", "status", NULL };
    static const enum store_count_by by[] = { STORE_BY_AGENT, STORE_BY_GROUP, STORE_BY_STATUS };
    const char *name = opt_string(L, t, "by");
    int i;
    for (i = 0; name && names[i]; i++)
        if (!strcmp(name, names[i]))
            return by[i];
    return luaL_error(L, "by must be agent, group or status");
}

static int opt_limit(lua_State *L, int t)
{
    lua_Integer n = 50;
    if (lua_getfield(L, t, "limit") != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 200)
            luaL_error(L, "limit must be an integer from 1 to 200");
        n = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return (int)n;
}

static const char *check_cursor(lua_State *L, int t)
{
    const char *s = NULL;
    if (lua_getfield(L, t, "cursor") == LUA_TSTRING) {
        size_t i, n;
        s = lua_tolstring(L, -1, &n);
        if (n == 0 || n > 18)
            luaL_error(L, "cursor is not valid");
        for (i = 0; i < n; i++)
            if (s[i] < '0' || s[i] > '9')
                luaL_error(L, "cursor is not valid");
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "cursor is not valid");
    }
    lua_pop(L, 1);
    return s;
}

static int conv_read(lua_State *L)
{
    static const struct { const char *name; enum store_page page; } kinds[] = {
        { "conversation", STORE_PAGE_CONVERSATION }, { "conversations", STORE_PAGE_CONVERSATIONS },
        { "messages", STORE_PAGE_MESSAGES }, { "events", STORE_PAGE_EVENTS },
        { "outbox_dead", STORE_PAGE_OUTBOX_DEAD }, { "outbox_entry", STORE_PAGE_OUTBOX_ENTRY },
        { "conversation_counts", STORE_PAGE_CONVERSATION_COUNTS },
    };
    const char *kind = luaL_checkstring(L, 1);
    struct store_page_query q;
    struct sb_job *job;
    size_t i;
    int page = -1;
    luaL_checktype(L, 2, LUA_TTABLE);
    for (i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (!strcmp(kind, kinds[i].name))
            page = (int)kinds[i].page;
    if (page < 0)
        return luaL_error(L, "conversations.read: unknown kind '%s'", kind);
    job = sb_job_checkwait(L);
    memset(&q, 0, sizeof q);
    q.cursor = check_cursor(L, 2);
    q.limit = opt_limit(L, 2);
    q.id = opt_text(L, 2, "id");
    if (page == STORE_PAGE_CONVERSATIONS || page == STORE_PAGE_CONVERSATION_COUNTS)
        conversation_filters(L, 2, &q);
    if (page == STORE_PAGE_CONVERSATIONS)
        q.oldest_first = opt_oldest_first(L, 2);
    if (page == STORE_PAGE_CONVERSATION_COUNTS) {
        if (!q.desk)
            return luaL_error(L, "desk is required");
        q.by = check_by(L, 2);
    }
    q.messages = 20;
    if (lua_getfield(L, 2, "messages") == LUA_TNUMBER)
        q.messages = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (page == STORE_PAGE_OUTBOX_ENTRY) {
        if (lua_getfield(L, 2, "id") != LUA_TNUMBER || !lua_isinteger(L, -1))
            return luaL_error(L, "id must be an integer");
        q.entry_id = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    sb_job_wait_store(job);
    store_read_page((enum store_page)page, &q, read_done, job);
    if (!job->waiting)
        return job->answered;
    return lua_yield(L, 0);
}

void sb_bind_read_open(lua_State *L)
{
    lua_pushcfunction(L, conv_read);
    lua_setfield(L, -2, "read");
}
