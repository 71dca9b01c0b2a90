/* Lua bindings of the conversation model (conv.c) and of store reads:
 *   conversations.find_or_create / find / get / seen
 *   conversations.read(kind, params)      -- yields; JSON text from the store
 *   conv.<field>, conv:append / set_state / set / tag / untag / journal /
 *   messages / set_provider_ids
 * A conversation handle is a userdata pointing at the C conversation, which
 * counts its handles: a conversation is never freed while a runtime could
 * still reach it (today conversations are only freed at exit, after every
 * runtime is closed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "bindings.h"
#include "conv.h"
#include "job.h"
#include "runtime.h"
#include "store.h"
#include "util.h"

#define CONV_MT "sb.conv"
#define KEY_MAX 512

struct conv_handle {
    struct sb_conv *c;
};

static struct sb_conv *check_conv(lua_State *L, int idx)
{
    struct conv_handle *h = luaL_checkudata(L, idx, CONV_MT);
    return h->c;
}

static void push_conv(lua_State *L, struct sb_conv *c)
{
    struct conv_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->c = c;
    c->handles++;
    luaL_setmetatable(L, CONV_MT);
}

static int conv_gc(lua_State *L)
{
    struct conv_handle *h = luaL_checkudata(L, 1, CONV_MT);
    if (h->c) {
        h->c->handles--;
        h->c = NULL;
    }
    return 0;
}

static void push_json_or_nil(lua_State *L, const char *json)
{
    if (!json)
        lua_pushnil(L);
    else if ((json[0] == '[' && json[1] == ']' && !json[2]) || (json[0] == '{' && json[1] == '}' && !json[2]))
        lua_newtable(L);   /* the common empty case, without a trip through cjson */
    else
        sb_json_decode(L, json, strlen(json));
}

static void push_msg(lua_State *L, const struct sb_msg *m)
{
    lua_createtable(L, 0, 8);
    lua_pushstring(L, m->id);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, m->seq);
    lua_setfield(L, -2, "seq");
    lua_createtable(L, 0, 3);
    lua_pushstring(L, m->author_kind);
    lua_setfield(L, -2, "kind");
    if (m->author_name) {
        lua_pushstring(L, m->author_name);
        lua_setfield(L, -2, "name");
    }
    if (m->author_id) {
        lua_pushstring(L, m->author_id);
        lua_setfield(L, -2, "id");
    }
    lua_setfield(L, -2, "author");
    lua_pushstring(L, m->text);
    lua_setfield(L, -2, "text");
    push_json_or_nil(L, m->attachments);
    lua_setfield(L, -2, "attachments");
    push_json_or_nil(L, m->buttons);
    lua_setfield(L, -2, "buttons");
    push_json_or_nil(L, m->provider_ids);
    lua_setfield(L, -2, "provider_ids");
    lua_pushnumber(L, m->created);
    lua_setfield(L, -2, "created");
}

static const char *check_key(lua_State *L, int idx, const char *what)
{
    size_t n;
    const char *s = luaL_checklstring(L, idx, &n);
    if (n == 0 || n > KEY_MAX || strlen(s) != n || !sb_utf8_valid(s, n))
        luaL_error(L, "%s must be 1-%d bytes of UTF-8 without NUL", what, KEY_MAX);
    return s;
}

/* JSON text of the value at idx (table expected), or NULL for nil. Leaves
 * the string on the stack. */
static const char *json_arg(lua_State *L, int idx, const char *what)
{
    if (lua_isnoneornil(L, idx))
        return NULL;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s must be a table", what);
    sb_json_encode_at(L, idx);
    return lua_tostring(L, -1);
}

/* conversations.find_or_create(channel, client_id [, client]) -> conv, created */
static int conv_find_or_create(lua_State *L)
{
    const char *channel = check_key(L, 1, "channel");
    const char *client_id = check_key(L, 2, "client_id");
    struct sb_conv *c = sb_conv_find(channel, client_id);
    if (c) {
        push_conv(L, c);
        lua_pushboolean(L, 0);
        return 2;
    }
    c = sb_conv_create(channel, client_id, json_arg(L, 3, "client"));
    push_conv(L, c);
    lua_pushboolean(L, 1);
    return 2;
}

static int conv_find(lua_State *L)
{
    struct sb_conv *c = sb_conv_find(check_key(L, 1, "channel"), check_key(L, 2, "client_id"));
    if (!c)
        return lua_pushnil(L), 1;
    push_conv(L, c);
    return 1;
}

static int conv_get(lua_State *L)
{
    struct sb_conv *c = sb_conv_get(luaL_checkstring(L, 1));
    if (!c)
        return lua_pushnil(L), 1;
    push_conv(L, c);
    return 1;
}

/* conversations.seen(channel, key) -> conversation_id, message_id | nil */
static int conv_seen(lua_State *L)
{
    const char *cid, *mid;
    if (!sb_conv_seen(check_key(L, 1, "channel"), check_key(L, 2, "key"), &cid, &mid))
        return lua_pushnil(L), 1;
    lua_pushstring(L, cid);
    lua_pushstring(L, mid);
    return 2;
}

/* conversations.count() -> all, open */
static int conv_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sb_conv_count());
    lua_pushinteger(L, (lua_Integer)sb_conv_open_count());
    return 2;
}

/* Store reads: yield until the store thread answers. */

static void read_done(void *arg, const char *json, size_t len, const char *error)
{
    struct sb_job *job = arg;
    if (sb_job_unpin(job))
        return; /* the job ended meanwhile (deadline, shutdown) */
    if (json) {
        lua_pushlstring(job->co, json, len);
        sb_job_wake(job, 1);
    } else {
        lua_pushnil(job->co);
        lua_pushstring(job->co, error ? error : "store read failed");
        sb_job_wake(job, 2);
    }
}

static void read_cancel(struct sb_job *job, void *wait)
{
    /* The store thread owns the work item and cannot be interrupted; the
     * pin keeps the job's memory until its answer arrives and is dropped. */
    (void)job;
    (void)wait;
}

static void push_opt_text(struct store_op *op, lua_State *L, int t, const char *field)
{
    if (lua_getfield(L, t, field) == LUA_TSTRING)
        store_op_str(op, lua_tostring(L, -1));
    else
        store_op_null(op);
    lua_pop(L, 1);
}

static lua_Integer opt_limit(lua_State *L, int t)
{
    lua_Integer n = 50;
    if (lua_getfield(L, t, "limit") != LUA_TNIL) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 200)
            luaL_error(L, "limit must be an integer from 1 to 200");
        n = lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return n;
}

static void check_cursor(lua_State *L, int t)
{
    if (lua_getfield(L, t, "cursor") == LUA_TSTRING) {
        const char *s = lua_tostring(L, -1);
        size_t i, n = strlen(s);
        if (n == 0 || n > 19)
            luaL_error(L, "cursor is not valid");
        for (i = 0; i < n; i++)
            if (s[i] < '0' || s[i] > '9')
                luaL_error(L, "cursor is not valid");
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "cursor is not valid");
    }
    lua_pop(L, 1);
}

/* conversations.read(kind, params) -> json text | nil, err
 * kinds: "conversation" {id, messages}, "conversations" {state, channel, limit, cursor},
 *        "messages" {id, limit, cursor}, "events" {id, limit, cursor},
 *        "outbox_dead" {limit, cursor}, "outbox_entry" {id} */
static int conv_read(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    struct sb_job *job;
    struct store_op *op;
    luaL_checktype(L, 2, LUA_TTABLE);
    job = sb_job_checkwait(L);
    check_cursor(L, 2);
    if (!store_running()) {
        lua_pushnil(L);
        lua_pushliteral(L, "the store is not open");
        return 2;
    }
    if (!strcmp(kind, "conversation")) {
        lua_Integer n = 20;
        op = store_op_new(STORE_READ_CONVERSATION);
        push_opt_text(op, L, 2, "id");
        if (lua_getfield(L, 2, "messages") == LUA_TNUMBER)
            n = lua_tointeger(L, -1);
        lua_pop(L, 1);
        store_op_int(op, n);
    } else if (!strcmp(kind, "conversations")) {
        lua_Integer limit = opt_limit(L, 2);
        op = store_op_new(STORE_READ_CONVERSATIONS);
        push_opt_text(op, L, 2, "state");
        push_opt_text(op, L, 2, "channel");
        store_op_int(op, limit);
        push_opt_text(op, L, 2, "cursor");
    } else if (!strcmp(kind, "messages") || !strcmp(kind, "events")) {
        lua_Integer limit = opt_limit(L, 2);
        op = store_op_new(!strcmp(kind, "messages") ? STORE_READ_MESSAGES : STORE_READ_EVENTS);
        push_opt_text(op, L, 2, "id");
        store_op_int(op, limit);
        push_opt_text(op, L, 2, "cursor");
    } else if (!strcmp(kind, "outbox_dead")) {
        lua_Integer limit = opt_limit(L, 2);
        op = store_op_new(STORE_READ_OUTBOX_DEAD);
        store_op_int(op, limit);
        push_opt_text(op, L, 2, "cursor");
    } else if (!strcmp(kind, "outbox_entry")) {
        op = store_op_new(STORE_READ_OUTBOX_ENTRY);
        if (lua_getfield(L, 2, "id") != LUA_TNUMBER)
            luaL_error(L, "id must be a number");
        store_op_int(op, lua_tointeger(L, -1));
        lua_pop(L, 1);
    } else {
        return luaL_error(L, "conversations.read: unknown kind '%s'", kind);
    }
    sb_job_pin(job);
    store_read(op, read_done, job);
    sb_job_wait(job, read_cancel, NULL);
    return lua_yield(L, 0);
}

/* conv methods */

static int m_append(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    struct sb_msg_fields f;
    const struct sb_msg *m;
    const char *dedupe = NULL;
    char err[160];
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    memset(&f, 0, sizeof f);
    if (lua_getfield(L, 2, "author") == LUA_TTABLE) {       /* 3 */
        lua_getfield(L, 3, "kind");                          /* 4 */
        lua_getfield(L, 3, "name");                          /* 5 */
        lua_getfield(L, 3, "id");                            /* 6 */
        f.author_kind = lua_tostring(L, 4);
        f.author_name = lua_isstring(L, 5) ? lua_tostring(L, 5) : NULL;
        f.author_id = lua_isstring(L, 6) ? lua_tostring(L, 6) : NULL;
    } else {
        return luaL_error(L, "append: author must be a table {kind=, name=, id=}");
    }
    lua_settop(L, 6);
    if (lua_getfield(L, 2, "text") == LUA_TSTRING)          /* 7 */
        f.text = lua_tolstring(L, 7, &f.text_len);
    else if (!lua_isnil(L, 7))
        return luaL_error(L, "append: text must be a string");
    lua_getfield(L, 2, "attachments");                       /* 8 */
    f.attachments = json_arg(L, 8, "attachments");           /* 9 */
    lua_settop(L, 9);
    lua_getfield(L, 2, "buttons");                           /* 10 */
    f.buttons = json_arg(L, 10, "buttons");                  /* 11 */
    lua_settop(L, 11);
    lua_getfield(L, 2, "provider_ids");                      /* 12 */
    f.provider_ids = json_arg(L, 12, "provider_ids");        /* 13 */
    lua_settop(L, 13);
    if (lua_getfield(L, 2, "dedupe_key") == LUA_TSTRING)     /* 14 */
        dedupe = check_key(L, 14, "dedupe_key");
    if (dedupe) {
        const char *cid, *mid;
        if (sb_conv_seen(c->channel, dedupe, &cid, &mid)) {
            lua_createtable(L, 0, 2);
            lua_pushstring(L, mid);
            lua_setfield(L, -2, "id");
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "duplicate");
            return 1;
        }
    }
    m = sb_conv_append(c, &f, err, sizeof err);
    if (!m)
        return luaL_error(L, "append: %s", err);
    if (dedupe)
        sb_conv_remember(c->channel, dedupe, c->id, m->id);
    push_msg(L, m);
    return 1;
}

static int m_set_state(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    const char *to = luaL_checkstring(L, 2);
    const char *reason = luaL_optstring(L, 3, NULL);
    enum sb_conv_state s;
    if (sb_conv_parse_state(to, &s))
        return luaL_error(L, "set_state: unknown state '%s'", to);
    if (s == c->state)
        return 0;
    if (sb_conv_set_state(c, s, reason))
        return luaL_error(L, "set_state: invalid transition %s -> %s", sb_conv_state_name(c->state), to);
    return 0;
}

/* conv:set{desk=, group=, agent=, status=, tags=, client=, data=}; json.null
 * or false clears a field. */
static int m_set(lua_State *L)
{
    static const char *const strings[] = { "desk", "group", "agent", "status" };
    static const char *const tables[] = { "tags", "client", "data" };
    struct sb_conv *c = check_conv(L, 1);
    size_t i;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        int known = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (i = 0; i < 4; i++)
                known |= !strcmp(lua_tostring(L, -2), strings[i]);
        if (lua_type(L, -2) == LUA_TSTRING)
            for (i = 0; i < 3; i++)
                known |= !strcmp(lua_tostring(L, -2), tables[i]);
        if (!known)
            return luaL_error(L, "set: unknown field '%s'", luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
    for (i = 0; i < 4; i++) {
        int t = lua_getfield(L, 2, strings[i]);
        if (t == LUA_TSTRING)
            sb_conv_set_field(c, strings[i], check_key(L, -1, strings[i]));
        else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1))
            sb_conv_set_field(c, strings[i], NULL);
        else if (t == LUA_TLIGHTUSERDATA)
            sb_conv_set_field(c, strings[i], NULL);   /* json.null */
        else if (t != LUA_TNIL)
            return luaL_error(L, "set: %s must be a string", strings[i]);
        lua_pop(L, 1);
    }
    for (i = 0; i < 3; i++) {
        int t = lua_getfield(L, 2, tables[i]);
        if (t == LUA_TTABLE && i == 0) {
            /* tags: an array of strings, "[]" when empty */
            lua_Integer k, n = (lua_Integer)lua_rawlen(L, -1);
            for (k = 1; k <= n; k++) {
                if (lua_rawgeti(L, -1, k) != LUA_TSTRING)
                    return luaL_error(L, "set: tags must be an array of strings");
                lua_pop(L, 1);
            }
            if (n == 0)
                lua_pushliteral(L, "[]");
            else
                sb_json_encode_at(L, -1);
            sb_conv_set_field(c, "tags", lua_tostring(L, -1));
            lua_pop(L, 1);
        } else if (t == LUA_TTABLE) {
            sb_json_encode_at(L, -1);
            sb_conv_set_field(c, tables[i], lua_tostring(L, -1));
            lua_pop(L, 1);
        } else if (t != LUA_TNIL) {
            return luaL_error(L, "set: %s must be a table", tables[i]);
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* conv:tag(name) / conv:untag(name): tags stay a sorted set of strings */
static int tag_change(lua_State *L, int add)
{
    struct sb_conv *c = check_conv(L, 1);
    const char *tag = check_key(L, 2, "tag");
    lua_Integer i, n, w = 1;
    int present = 0;
    lua_settop(L, 2);
    sb_json_decode(L, c->tags, strlen(c->tags));             /* 3 */
    n = (lua_Integer)lua_rawlen(L, 3);
    lua_createtable(L, (int)n + 1, 0);                       /* 4 */
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i);
        if (lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), tag)) {
            present = 1;
            if (!add) {
                lua_pop(L, 1);
                continue;
            }
        }
        lua_rawseti(L, 4, w++);
    }
    if (add && !present) {
        lua_pushstring(L, tag);
        lua_rawseti(L, 4, w++);
    }
    if (present != add) {
        lua_getglobal(L, "table");
        lua_getfield(L, -1, "sort");
        lua_pushvalue(L, 4);
        lua_call(L, 1, 0);
        lua_pop(L, 1);
        /* cjson writes an empty table as {}: tags are always an array */
        if (w == 1)
            lua_pushliteral(L, "[]");
        else
            sb_json_encode_at(L, 4);
        sb_conv_set_field(c, "tags", lua_tostring(L, -1));
    }
    lua_pushboolean(L, present != add);
    return 1;
}

static int m_tag(lua_State *L) { return tag_change(L, 1); }
static int m_untag(lua_State *L) { return tag_change(L, 0); }

static int m_journal(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    const char *type = check_key(L, 2, "event type");
    const char *data;
    lua_settop(L, 3);
    data = json_arg(L, 3, "event data");
    sb_conv_journal(c, type, data);
    return 0;
}

/* conv:messages([n]) -> the last n (default all in memory) messages, oldest first */
static int m_messages(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    lua_Integer n = luaL_optinteger(L, 2, c->nrecent), i;
    if (n > c->nrecent)
        n = c->nrecent;
    if (n < 0)
        n = 0;
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        push_msg(L, sb_conv_recent(c, (int)(n - 1 - i)));
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int m_set_provider_ids(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    const char *mid = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    sb_json_encode_at(L, 3);
    sb_conv_set_provider_ids(c, mid, lua_tostring(L, -1));
    return 0;
}

enum conv_field {
    F_ID = 1, F_CHANNEL, F_CLIENT_ID, F_STATE, F_DESK, F_GROUP, F_AGENT, F_STATUS, F_TAGS, F_CLIENT,
    F_DATA, F_CREATED, F_UPDATED, F_LAST_SEQ
};

static const char *const field_names[] = {
    NULL, "id", "channel", "client_id", "state", "desk", "group", "agent", "status", "tags", "client",
    "data", "created", "updated", "last_seq"
};

/* __index: upvalue 1 maps field names to enum conv_field (one hash lookup
 * instead of a chain of string compares), upvalue 2 holds the methods. */
static int conv_index(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    lua_settop(L, 2);
    lua_pushvalue(L, 2);
    switch (lua_rawget(L, lua_upvalueindex(1)) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : 0) {
    case F_ID: lua_pushstring(L, c->id); break;
    case F_CHANNEL: lua_pushstring(L, c->channel); break;
    case F_CLIENT_ID: lua_pushstring(L, c->client_id); break;
    case F_STATE: lua_pushstring(L, sb_conv_state_name(c->state)); break;
    case F_DESK: lua_pushstring(L, c->desk); break;
    case F_GROUP: lua_pushstring(L, c->group); break;
    case F_AGENT: lua_pushstring(L, c->agent); break;
    case F_STATUS: lua_pushstring(L, c->status); break;
    case F_TAGS: sb_json_decode(L, c->tags, strlen(c->tags)); break;
    case F_CLIENT: sb_json_decode(L, c->profile, strlen(c->profile)); break;
    case F_DATA: sb_json_decode(L, c->data, strlen(c->data)); break;
    case F_CREATED: lua_pushnumber(L, c->created); break;
    case F_UPDATED: lua_pushnumber(L, c->updated); break;
    case F_LAST_SEQ: lua_pushinteger(L, c->last_seq); break;
    default:
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(2));
        break;
    }
    return 1;
}

/* conv:message(id) -> the message if it is among those kept in memory */
static int m_message(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    const struct sb_msg *m = sb_conv_recent_by_id(c, luaL_checkstring(L, 2));
    if (!m)
        return lua_pushnil(L), 1;
    push_msg(L, m);
    return 1;
}

static int conv_newindex(lua_State *L)
{
    return luaL_error(L, "conversation fields are read-only: use conv:set{...} or conv:set_state()");
}

static int conv_tostring(lua_State *L)
{
    lua_pushfstring(L, "conversation %s", check_conv(L, 1)->id);
    return 1;
}

static int conv_eq(lua_State *L)
{
    lua_pushboolean(L, check_conv(L, 1) == check_conv(L, 2));
    return 1;
}

void sb_bind_conv_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "append", m_append }, { "set_state", m_set_state }, { "set", m_set }, { "tag", m_tag },
        { "untag", m_untag }, { "journal", m_journal }, { "messages", m_messages },
        { "set_provider_ids", m_set_provider_ids }, { "message", m_message }, { NULL, NULL }
    };
    static const luaL_Reg funcs[] = {
        { "find_or_create", conv_find_or_create }, { "find", conv_find }, { "get", conv_get },
        { "seen", conv_seen }, { "count", conv_count }, { "read", conv_read }, { NULL, NULL }
    };
    size_t i;
    luaL_newmetatable(L, CONV_MT);
    lua_createtable(L, 0, (int)(sizeof field_names / sizeof *field_names));
    for (i = 1; i < sizeof field_names / sizeof *field_names; i++) {
        lua_pushinteger(L, (lua_Integer)i);
        lua_setfield(L, -2, field_names[i]);
    }
    luaL_newlib(L, methods);
    lua_pushcclosure(L, conv_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conv_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, conv_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, conv_eq);
    lua_setfield(L, -2, "__eq");
    lua_pushcfunction(L, conv_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushliteral(L, "conversation");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_setglobal(L, "conversations");
}
