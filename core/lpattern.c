/* Lua 5.4's string.find, match, gmatch and gsub on the matcher of
 * lpattern_match.c, with a work meter (see lpattern.h). */
#include "lpattern_int.h"

#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

/* ---- results -------------------------------------------------------- */

/* Capture i as pointer and length; a position capture is pushed instead and
 * CAP_POSITION returned. With no captures, "capture 0" is the whole match. */
static ptrdiff_t capture_get(struct matcher *m, int i, const char *s, const char *e, const char **out)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        *out = s;
        return e - s;
    }
    *out = m->cap[i].start;
    if (m->cap[i].len == CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (m->cap[i].len == CAP_POSITION)
        lua_pushinteger(m->L, (m->cap[i].start - m->subject) + 1);
    return m->cap[i].len;
}

static void push_capture(struct matcher *m, int i, const char *s, const char *e)
{
    const char *c;
    ptrdiff_t len = capture_get(m, i, s, e, &c);
    if (len != CAP_POSITION)
        lua_pushlstring(m->L, c, (size_t)len);
}

/* s is NULL for find, which returns only the captures, never the match. */
static int push_captures(struct matcher *m, const char *s, const char *e)
{
    int i, n = (m->level == 0 && s) ? 1 : m->level;
    luaL_checkstack(m->L, n, "too many captures");
    for (i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

/* 1-based start from a possibly negative or zero init; may exceed len + 1. */
static size_t start_index(lua_Integer init, size_t len)
{
    if (init > 0)
        return (size_t)init;
    if (init == 0 || init < -(lua_Integer)len)
        return 1;
    return len + (size_t)init + 1;
}

static int has_specials(const char *p, size_t lp)
{
    static const char specials[] = "^$*+?.([%-";
    size_t i;
    for (i = 0; i < lp; i++)
        if (memchr(specials, p[i], sizeof specials - 1))
            return 1;
    return 0;
}

/* memmem in windows, so that a long search pays as it goes; a window is at
 * least a needle long, so memmem's set-up costs at most as much as its search. */
static const char *windowed_memmem(struct matcher *m, const char *h, size_t hl, const char *nd, size_t nl)
{
    size_t starts, window, done = 0;
    if (nl > hl)
        return NULL;
    starts = hl - nl + 1;
    window = nl > SB_SCAN_WORK ? nl : SB_SCAN_WORK;
    while (done < starts) {
        size_t k = starts - done < window ? starts - done : window;
        const char *hit = memmem(h + done, k + nl - 1, nd, nl);
        if (hit)
            return hit;
        done += k;
        charge(m, (long)((k + nl) >> 3));
    }
    return NULL;
}

/* Like stock: memchr for the first byte, then compare the rest, which is
 * fastest when that byte is rare. A long needle that keeps almost matching
 * would make that quadratic, so after a few misses it goes to memmem. */
static const char *plain_find(struct matcher *m, const char *h, size_t hl, const char *nd, size_t nl)
{
    const char *q = h, *last;
    int misses = 0;
    if (nl == 0)
        return h;
    if (nl > hl)
        return NULL;
    last = h + (hl - nl);   /* the last possible start */
    while (q <= last) {
        const char *c = memchr(q, (unsigned char)nd[0], (size_t)(last - q) + 1);
        if (!c)
            break;
        charge(m, (long)((size_t)(c - q) >> 5) + 1 + (long)(nl >> 4));
        if (memcmp(c + 1, nd + 1, nl - 1) == 0)
            return c;
        q = c + 1;
        if (nl > 32 && ++misses > 16)
            return windowed_memmem(m, q, (size_t)(last - q) + nl, nd, nl);
    }
    return NULL;
}

static int find_or_match(lua_State *L, int find)
{
    struct meter *meter = lua_touserdata(L, lua_upvalueindex(1));
    size_t ls, lp, init;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    struct matcher m;
    init = start_index(luaL_optinteger(L, 3, 1), ls);
    if (init > ls + 1) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        const char *hit;
        sb_matcher_init(&m, L, meter, s, ls, p, lp);
        hit = plain_find(&m, s + init - 1, ls - init + 1, p, lp);
        sb_matcher_done(&m);
        if (hit) {
            lua_pushinteger(L, (hit - s) + 1);
            lua_pushinteger(L, (lua_Integer)((size_t)(hit - s) + lp));
            return 2;
        }
    } else {
        int anchor = lp > 0 && *p == '^';
        const char *at = s + init - 1, *lead, *item = NULL, *e;
        if (anchor) {
            p++;
            lp--;
        }
        sb_matcher_init(&m, L, meter, s, ls, p, lp);
        lead = anchor ? NULL : sb_lead_item(p, p + lp, &item);
        for (;;) {
            if (lead && (at = sb_item_scan(&m, at, item, lead, 0)) == m.subject_end)
                break;
            m.level = 0;
            if ((e = sb_match_here(&m, at, p))) {
                sb_matcher_done(&m);
                if (!find)
                    return push_captures(&m, at, e);
                lua_pushinteger(L, (at - s) + 1);
                lua_pushinteger(L, e - s);
                return push_captures(&m, NULL, NULL) + 2;
            }
            if (anchor || at >= m.subject_end)
                break;
            at++;
        }
        sb_matcher_done(&m);
    }
    luaL_pushfail(L);
    return 1;
}

static int lp_find(lua_State *L)
{
    return find_or_match(L, 1);
}

static int lp_match(lua_State *L)
{
    return find_or_match(L, 0);
}

struct gmatch_state {
    const char *s, *p;   /* anchored by the iterator's upvalues */
    size_t ls, lp;
    const char *lead, *item;   /* see lead_item */
    size_t next;         /* offset where the next search starts */
    size_t last_end;     /* end of the previous match, SIZE_MAX before one */
};

static int gmatch_step(lua_State *L)
{
    struct gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    struct meter *meter = lua_touserdata(L, lua_upvalueindex(4));
    const char *s = g->s, *p = g->p;
    size_t ls = g->ls, lp = g->lp;
    struct matcher m;
    const char *at, *e;
    if (g->next > ls)
        return 0;
    sb_matcher_init(&m, L, meter, s, ls, p, lp);
    for (at = s + g->next;; at++) {
        if (g->lead && (at = sb_item_scan(&m, at, g->item, g->lead, 0)) == m.subject_end)
            break;
        m.level = 0;
        e = sb_match_here(&m, at, p);
        if (e && (size_t)(e - s) != g->last_end) {
            g->next = g->last_end = (size_t)(e - s);
            sb_matcher_done(&m);
            return push_captures(&m, at, e);
        }
        if (at >= m.subject_end)
            break;
    }
    sb_matcher_done(&m);
    return 0;
}

static int lp_gmatch(lua_State *L)
{
    size_t ls, lp, init;
    struct gmatch_state *g;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    init = start_index(luaL_optinteger(L, 3, 1), ls) - 1;
    lua_settop(L, 2);   /* the strings stay alive as upvalues */
    g = lua_newuserdatauv(L, sizeof *g, 0);
    g->s = s;
    g->p = p;
    g->ls = ls;
    g->lp = lp;
    /* no anchor here: a leading '^' is an ordinary character, as in stock */
    g->item = NULL;
    g->lead = sb_lead_item(p, p + lp, &g->item);
    g->next = init > ls ? ls + 1 : init;
    g->last_end = SIZE_MAX;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, gmatch_step, 4);
    return 1;
}

/* A replacement string: "%0".."%9" insert captures, "%%" a '%'. */
static void add_template(struct matcher *m, luaL_Buffer *b, const char *s, const char *e)
{
    lua_State *L = m->L;
    size_t l;
    const char *t = lua_tolstring(L, 3, &l), *te = t + l, *pct;
    while ((pct = memchr(t, '%', (size_t)(te - t)))) {
        luaL_addlstring(b, t, (size_t)(pct - t));
        t = pct + 1;
        if (t < te && *t == '%') {
            luaL_addchar(b, '%');
        } else if (t < te && *t == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (t < te && isdigit((unsigned char)*t)) {
            const char *c;
            ptrdiff_t len = capture_get(m, *t - '1', s, e, &c);
            if (len == CAP_POSITION)
                luaL_addvalue(b);
            else
                luaL_addlstring(b, c, (size_t)len);
        } else {
            luaL_error(L, "invalid use of '%c' in replacement string", '%');
        }
        t++;
    }
    luaL_addlstring(b, t, (size_t)(te - t));
}

/* Returns whether the match was replaced (false/nil from a table or a
 * function keep it). */
static int add_value(struct matcher *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = m->L;
    if (tr != LUA_TFUNCTION && tr != LUA_TTABLE) {
        add_template(m, b, s, e);
        return 1;
    }
    /* the callee may match too: let its work count against the same meter */
    m->meter->credit = m->credit;
    if (tr == LUA_TFUNCTION) {
        int n;
        lua_pushvalue(L, 3);
        n = push_captures(m, s, e);
        lua_call(L, n, 1);
    } else {
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    }
    m->credit = m->meter->credit;
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

static int lp_gsub(lua_State *L)
{
    struct meter *meter = lua_touserdata(L, lua_upvalueindex(1));
    size_t ls, lp;
    const char *src = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    const char *last = NULL, *lead, *item = NULL;
    int tr = lua_type(L, 3);
    lua_Integer max_n = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    int anchor = lp > 0 && *p == '^';
    lua_Integer n = 0;
    int changed = 0;
    struct matcher m;
    luaL_Buffer b;
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION || tr == LUA_TTABLE, 3,
                     "string/function/table");
    luaL_buffinit(L, &b);
    if (anchor) {
        p++;
        lp--;
    }
    sb_matcher_init(&m, L, meter, src, ls, p, lp);
    lead = anchor ? NULL : sb_lead_item(p, p + lp, &item);
    while (n < max_n) {
        const char *e;
        if (lead) {
            const char *at = sb_item_scan(&m, src, item, lead, 0);
            if (at == m.subject_end)
                break;
            luaL_addlstring(&b, src, (size_t)(at - src));
            src = at;
        }
        m.level = 0;
        if ((e = sb_match_here(&m, src, p)) && e != last) {
            n++;
            changed |= add_value(&m, &b, src, e, tr);
            src = last = e;
        } else if (src < m.subject_end) {
            luaL_addchar(&b, *src++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    sb_matcher_done(&m);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, src, (size_t)(m.subject_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

void sb_lpattern_install(lua_State *L, int string_table_index, sb_pattern_check_fn check)
{
    static const luaL_Reg fns[] = {
        { "find", lp_find }, { "match", lp_match }, { "gmatch", lp_gmatch }, { "gsub", lp_gsub }, { NULL, NULL },
    };
    const luaL_Reg *f;
    int t = lua_absindex(L, string_table_index);
    struct meter *meter = lua_newuserdatauv(L, sizeof *meter, 0);
    meter->check = check;
    meter->credit = SB_PATTERN_CHECK_EVERY;
    for (f = fns; f->name; f++) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, t, f->name);
    }
    lua_pop(L, 1);
}
