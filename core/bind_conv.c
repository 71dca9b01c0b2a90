/* Lua bindings of the conversation model (conv.c):
 *   conversations.get / find / find_or_create  (the prelude builds them on
 *     the primitives below: they load from the store and wait in line
 *     for a conversation another job holds, both by yielding)
 *   conversations.count
 *   conv.<field>, conv:append / set_state / set / tag / untag / journal /
 *   messages / message / seen / set_provider_ids
 * A job that gets hold of a conversation owns it until the job ends; its
 * changes belong to the job's transaction. A handle is a userdata holding a
 * reference on the conversation, so its memory stays while a runtime can
 * reach it. */
#include "bind_conv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "bind_read.h"
#include "conv.h"
#include "job.h"
#include "luajson.h"
#include "runtime.h"
#include "txn.h"
#include "util.h"

#define CONV_MT "sb.conv"
#define KEY_MAX 512
#define MESSAGES_MAX 200

struct conv_handle {
    struct sb_conv *c;
};

static struct sb_conv *check_conv(lua_State *L, int idx)
{
    struct conv_handle *h = luaL_checkudata(L, idx, CONV_MT);
    return h->c;
}

/* The conversation at idx, owned by the running job (taken now if free). */
static struct sb_conv *check_owned(lua_State *L, int idx, struct sb_txn **t)
{
    struct sb_conv *c = check_conv(L, idx);
    *t = sb_job_txn_of(L);
    if (c->gone)
        luaL_error(L, "conversation %s is gone (its creation was rolled back)", c->id);
    switch (sb_conv_acquire(c, *t)) {
    case SB_CONV_ACQUIRED:
        return c;
    default:
        luaL_error(L, "conversation %s is held by another job: get it again with conversations.get()", c->id);
    }
    return NULL;
}

static void push_conv(lua_State *L, struct sb_conv *c)
{
    struct conv_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->c = NULL;
    luaL_setmetatable(L, CONV_MT);
    h->c = c;
    sb_conv_ref(c);
}

static int conv_gc(lua_State *L)
{
    struct conv_handle *h = luaL_checkudata(L, 1, CONV_MT);
    if (h->c) {
        sb_conv_unref(h->c);
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

/* A stored JSON array (tags, attachments, buttons), marked so that a script
 * that encodes it again gets [] when it is empty, not {}. */
static void push_json_array(lua_State *L, const char *json)
{
    push_json_or_nil(L, json);
    if (lua_istable(L, -1))
        sb_json_mark_array(L, -1);
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
    lua_pushlstring(L, m->text, m->text_len);
    lua_setfield(L, -2, "text");
    push_json_array(L, m->attachments);
    lua_setfield(L, -2, "attachments");
    push_json_array(L, m->buttons);
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

/* Primitives for the prelude. (id) or (channel, client_id) name a
 * conversation. */

static struct sb_conv *in_memory(lua_State *L)
{
    if (lua_isnoneornil(L, 2))
        return sb_conv_loaded(check_key(L, 1, "conversation id"));
    return sb_conv_loaded_by_client(check_key(L, 1, "channel"), check_key(L, 2, "client_id"));
}

/* _lookup(...) -> conv, "ok" | nil, "unloaded" | "busy" | "deadlock" */
static int p_lookup(lua_State *L)
{
    struct sb_conv *c = in_memory(L);
    struct sb_txn *t;
    if (!c) {
        lua_pushnil(L);
        lua_pushliteral(L, "unloaded");
        return 2;
    }
    t = sb_job_txn_of(L);
    switch (sb_conv_acquire(c, t)) {
    case SB_CONV_ACQUIRED:
        push_conv(L, c);
        lua_pushliteral(L, "ok");
        return 2;
    case SB_CONV_BUSY:
        lua_pushnil(L);
        lua_pushliteral(L, "busy");
        return 2;
    default:
        lua_pushnil(L);
        lua_pushliteral(L, "deadlock");
        return 2;
    }
}

struct load_wait {
    struct sb_job *job;
};

static void loaded(void *arg, struct sb_conv *c, const char *error)
{
    struct load_wait *w = arg;
    struct sb_job *job = w->job;
    free(w);
    if (sb_job_unpin(job))
        return; /* the job ended meanwhile */
    if (error) {
        lua_pushnil(job->co);
        lua_pushstring(job->co, error);
        sb_job_answer(job, 2);
        return;
    }
    lua_pushboolean(job->co, c != NULL);
    sb_job_answer(job, 1);
}

/* _load(...) -> found | nil, error: reads the conversation from the store (yields). */
static int p_load(lua_State *L)
{
    struct sb_job *job;
    struct load_wait *w;
    const char *a = check_key(L, 1, lua_isnoneornil(L, 2) ? "conversation id" : "channel");
    const char *b = lua_isnoneornil(L, 2) ? NULL : check_key(L, 2, "client_id");
    job = sb_job_checkwait(L);
    w = sb_xcalloc(1, sizeof *w);
    w->job = job;
    sb_job_wait_store(job);
    sb_conv_load(b ? NULL : a, b ? a : NULL, b, loaded, w);
    if (!job->waiting)
        return job->answered;
    return lua_yield(L, 0);
}

struct line_wait {
    struct sb_conv_waiter w;
    struct sb_conv *c;
    struct sb_job *job;
    int woken;
};

static void line_woken(struct sb_conv_waiter *waiter)
{
    struct line_wait *lw = (struct line_wait *)waiter;
    struct sb_job *job = lw->job;
    /* It owns the conversation now (or it is gone): the job looks it up
     * again by name when it runs, and needs nothing of this any more. */
    sb_conv_unref(lw->c);
    free(lw);
    sb_job_wake_soon(job);
}

static void line_cancel(struct sb_job *job, void *wait)
{
    struct line_wait *lw = wait;
    (void)job;
    sb_conv_cancel_wait(lw->c, &lw->w);
    free(lw);
}

/* _wait(...): waits until the conversation's owner handed it over (yields). */
static int p_wait(lua_State *L)
{
    struct sb_conv *c = in_memory(L);
    struct sb_job *job = sb_job_checkwait(L);
    struct sb_txn *t = sb_job_txn(job);
    struct line_wait *lw;
    if (!c || sb_conv_acquire(c, t) != SB_CONV_BUSY)
        return 0;   /* free, gone or deadlocked meanwhile: the caller looks again */
    lw = sb_xcalloc(1, sizeof *lw);
    lw->w.txn = t;
    lw->w.wake = line_woken;
    lw->c = c;
    lw->job = job;
    sb_conv_wait(c, &lw->w);
    sb_job_wait(job, line_cancel, lw);
    return lua_yield(L, 0);
}

/* _create(channel, client_id [, client]) -> conv | nil when it exists meanwhile */
static int p_create(lua_State *L)
{
    const char *channel = check_key(L, 1, "channel");
    const char *client_id = check_key(L, 2, "client_id");
    const char *profile;
    struct sb_txn *t;
    lua_settop(L, 3);
    profile = json_arg(L, 3, "client");
    t = sb_job_txn_of(L);
    if (sb_conv_loaded_by_client(channel, client_id)) {
        lua_pushnil(L);
        return 1;
    }
    push_conv(L, sb_conv_create(t, channel, client_id, profile));
    return 1;
}

/* conversations.count() -> all, open */
static int conv_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)sb_conv_count());
    lua_pushinteger(L, (lua_Integer)sb_conv_open_count());
    return 2;
}

/* conv methods */

static int m_append(lua_State *L)
{
    struct sb_txn *t;
    struct sb_conv *c = check_owned(L, 1, &t);
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
        const char *mid = sb_conv_seen(c, dedupe);
        if (mid) {
            lua_createtable(L, 0, 2);
            lua_pushstring(L, mid);
            lua_setfield(L, -2, "id");
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "duplicate");
            return 1;
        }
    }
    m = sb_conv_append(t, c, &f, err, sizeof err);
    if (!m)
        return luaL_error(L, "append: %s", err);
    if (dedupe)
        sb_conv_remember(t, c, dedupe, m->id);
    push_msg(L, m);
    return 1;
}

/* conv:seen(key) -> the id of the message that key stands for, or nil */
static int m_seen(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    const char *mid = sb_conv_seen(c, check_key(L, 2, "key"));
    if (!mid)
        return lua_pushnil(L), 1;
    lua_pushstring(L, mid);
    return 1;
}

static int m_set_state(lua_State *L)
{
    struct sb_txn *t;
    struct sb_conv *c = check_owned(L, 1, &t);
    const char *to = luaL_checkstring(L, 2);
    const char *reason = luaL_optstring(L, 3, NULL);
    enum sb_conv_state s;
    if (sb_conv_parse_state(to, &s))
        return luaL_error(L, "set_state: unknown state '%s'", to);
    if (s == c->state)
        return 0;
    if (sb_conv_set_state(t, c, s, reason))
        return luaL_error(L, "set_state: invalid transition %s -> %s", sb_conv_state_name(c->state), to);
    return 0;
}

/* Journals tag_added {tag} for each tag of the array at new_idx not in the
 * one at old_idx, and tag_removed for the reverse: the bus names them
 * tag.added / tag.removed (docs/events.md). Stack: [-0, +0]. */
static void journal_tag_changes(lua_State *L, struct sb_txn *t, struct sb_conv *c, int old_idx, int new_idx)
{
    int pass, top = lua_gettop(L);
    old_idx = lua_absindex(L, old_idx);
    new_idx = lua_absindex(L, new_idx);
    for (pass = 0; pass < 2; pass++) {
        int from = pass ? new_idx : old_idx, other = pass ? old_idx : new_idx;
        lua_Integer i, j, n = (lua_Integer)lua_rawlen(L, from), m = (lua_Integer)lua_rawlen(L, other);
        for (i = 1; i <= n; i++) {
            int found = 0;
            const char *tag;
            if (lua_rawgeti(L, from, i) != LUA_TSTRING) {
                lua_pop(L, 1);
                continue;
            }
            tag = lua_tostring(L, -1);
            for (j = 1; j <= m && !found; j++) {
                found = lua_rawgeti(L, other, j) == LUA_TSTRING && !strcmp(lua_tostring(L, -1), tag);
                lua_pop(L, 1);
            }
            if (!found) {
                lua_createtable(L, 0, 1);
                lua_pushvalue(L, -2);
                lua_setfield(L, -2, "tag");
                sb_json_encode_at(L, -1);
                sb_conv_journal(t, c, pass ? "tag_added" : "tag_removed", lua_tostring(L, -1));
            }
            lua_settop(L, top);
        }
    }
}

/* conv:set{desk=, group=, agent=, status=, tags=, client=, data=}; json.null
 * or false clears a field. Every field is checked before any changes. */
static int m_set(lua_State *L)
{
    static const char *const fields[] = { "desk", "group", "agent", "status", "tags", "client", "data" };
    enum { NFIELDS = 7, NSTRINGS = 4 };
    const char *values[NFIELDS];
    int given[NFIELDS], tags_idx = 0;
    struct sb_txn *t;
    struct sb_conv *c = check_owned(L, 1, &t);
    size_t i;
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        int known = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (i = 0; i < NFIELDS; i++)
                known |= !strcmp(lua_tostring(L, -2), fields[i]);
        if (!known)
            return luaL_error(L, "set: unknown field '%s'", luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
    /* the values stay on the stack (3..) while they are used */
    for (i = 0; i < NFIELDS; i++) {
        int type = lua_getfield(L, 2, fields[i]);
        given[i] = 1;
        values[i] = NULL;
        if (type == LUA_TNIL) {
            given[i] = 0;
        } else if ((type == LUA_TBOOLEAN && !lua_toboolean(L, -1)) || type == LUA_TLIGHTUSERDATA) {
            /* false or json.null: cleared */
        } else if (i < NSTRINGS) {
            if (type != LUA_TSTRING)
                return luaL_error(L, "set: %s must be a string", fields[i]);
            values[i] = check_key(L, -1, fields[i]);
        } else if (type != LUA_TTABLE) {
            return luaL_error(L, "set: %s must be a table", fields[i]);
        } else if (i == NSTRINGS) {
            /* tags: an array of strings */
            lua_Integer k, n = (lua_Integer)lua_rawlen(L, -1);
            tags_idx = lua_gettop(L);
            for (k = 1; k <= n; k++) {
                if (lua_rawgeti(L, -1, k) != LUA_TSTRING)
                    return luaL_error(L, "set: tags must be an array of strings");
                lua_pop(L, 1);
            }
            sb_json_mark_array(L, -1);
            sb_json_encode_at(L, -1);
            values[i] = lua_tostring(L, -1);
        } else {
            sb_json_encode_at(L, -1);
            values[i] = lua_tostring(L, -1);
        }
    }
    if (given[NSTRINGS]) {
        /* the tags before and after, for the tag events */
        sb_json_decode(L, c->tags, strlen(c->tags));
        if (tags_idx)
            lua_pushvalue(L, tags_idx);
        else
            lua_newtable(L);
    }
    for (i = 0; i < NFIELDS; i++)
        if (given[i])
            sb_conv_set_field(t, c, fields[i], values[i]);
    if (given[NSTRINGS])
        journal_tag_changes(L, t, c, -2, -1);
    return 0;
}

/* conv:tag(name) / conv:untag(name): tags stay a sorted set of strings */
static int tag_change(lua_State *L, int add)
{
    struct sb_txn *t;
    struct sb_conv *c = check_owned(L, 1, &t);
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
        sb_json_mark_array(L, 4);   /* tags are an array, also when none is left */
        sb_json_encode_at(L, 4);
        sb_conv_set_field(t, c, "tags", lua_tostring(L, -1));
        journal_tag_changes(L, t, c, 3, 4);
    }
    lua_pushboolean(L, present != add);
    return 1;
}

static int m_tag(lua_State *L) { return tag_change(L, 1); }
static int m_untag(lua_State *L) { return tag_change(L, 0); }

static int m_journal(lua_State *L)
{
    struct sb_txn *t;
    struct sb_conv *c = check_owned(L, 1, &t);
    const char *type = check_key(L, 2, "event type");
    const char *data;
    lua_settop(L, 3);
    data = json_arg(L, 3, "event data");
    sb_conv_journal(t, c, type, data);
    return 0;
}

/* Pushes the last n messages in memory, oldest first. */
static void push_messages(lua_State *L, const struct sb_conv *c, lua_Integer n)
{
    lua_Integer i;
    if (n > c->nrecent)
        n = c->nrecent;
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        push_msg(L, sb_conv_recent(c, (int)(n - 1 - i)));
        lua_rawseti(L, -2, i + 1);
    }
}

struct messages_wait {
    struct sb_job *job;
    struct sb_conv *c;
    lua_Integer n;
};

static void messages_ready(void *arg, const char *error)
{
    struct messages_wait *w = arg;
    struct sb_job *job = w->job;
    struct sb_conv *c = w->c;
    lua_Integer n = w->n;
    free(w);
    if (sb_job_unpin(job)) {
        sb_conv_unref(c);
        return;
    }
    if (error) {
        lua_pushnil(job->co);
        lua_pushstring(job->co, error);
        sb_conv_unref(c);
        sb_job_answer(job, 2);
        return;
    }
    push_messages(job->co, c, n);
    sb_conv_unref(c);
    sb_job_answer(job, 1);
}

/* conv:messages([n]) -> the last n messages (default: as many as
 * conversations.recent_messages), oldest first; older ones come from the
 * store (yields; outside a job's own coroutine, those in memory). */
static int m_messages(lua_State *L)
{
    struct sb_conv *c = check_conv(L, 1);
    struct sb_runtime *rt = sb_runtime_of(L);
    lua_Integer n = luaL_optinteger(L, 2, rt->cfg->recent_messages);
    struct messages_wait *w;
    struct sb_job *job;
    if (n < 0)
        n = 0;
    if (n > MESSAGES_MAX)
        n = MESSAGES_MAX;
    if (c->nrecent >= n || c->nrecent >= c->last_seq || c->gone || !sb_job_can_wait(L)) {
        push_messages(L, c, n);
        return 1;
    }
    job = sb_job_checkwait(L);
    w = sb_xcalloc(1, sizeof *w);
    w->job = job;
    w->c = c;
    w->n = n;
    sb_conv_ref(c);
    sb_job_wait_store(job);
    sb_conv_want_messages(c, (int)n, messages_ready, w);
    if (!job->waiting)
        return job->answered;
    return lua_yield(L, 0);
}

static int m_set_provider_ids(lua_State *L)
{
    struct sb_txn *t;
    struct sb_conv *c = check_owned(L, 1, &t);
    const char *mid = check_key(L, 2, "message id");
    luaL_checktype(L, 3, LUA_TTABLE);
    sb_json_encode_at(L, 3);
    sb_conv_set_provider_ids(t, c, mid, lua_tostring(L, -1));
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
    case F_TAGS: push_json_array(L, c->tags); break;
    case F_CLIENT: push_json_or_nil(L, c->profile); break;
    case F_DATA: push_json_or_nil(L, c->data); break;
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
        { "untag", m_untag }, { "journal", m_journal }, { "messages", m_messages }, { "seen", m_seen },
        { "set_provider_ids", m_set_provider_ids }, { "message", m_message }, { NULL, NULL }
    };
    static const luaL_Reg funcs[] = {
        { "count", conv_count }, { "_lookup", p_lookup }, { "_load", p_load }, { "_wait", p_wait },
        { "_create", p_create }, { NULL, NULL }
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
    lua_pushliteral(L, "conversation");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    sb_bind_read_open(L);
    lua_setglobal(L, "conversations");
}
