/* The matcher of the pattern functions: a recursive backtracker, because
 * the exact places where a stock match nests decide when "pattern too
 * complex" is raised, and scripts must see the same results and errors as
 * with stock Lua. Everything it needs lives on the C stack or in Lua values,
 * so the check callback may longjmp out of any step without leaking. */
#include "lpattern_int.h"


#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

void sb_matcher_init(struct matcher *m, lua_State *L, struct meter *meter, const char *s, size_t ls,
                         const char *p, size_t lp)
{
    m->subject = s;
    m->subject_end = s + ls;
    m->pattern_end = p + lp;
    m->L = L;
    m->meter = meter;
    m->credit = meter->credit;
    m->depth = MAX_DEPTH;
    m->level = 0;
}

void sb_matcher_done(struct matcher *m)
{
    m->meter->credit = m->credit;
}

void sb_meter_check(struct matcher *m)
{
    m->credit = SB_PATTERN_CHECK_EVERY;
    m->meter->credit = SB_PATTERN_CHECK_EVERY;   /* in case check raises */
    if (m->meter->check)
        m->meter->check(m->L);
}

/* ---- single characters ---------------------------------------------- */

/* Class letters go through <ctype.h> like stock Lua, so the process locale
 * (C unless someone calls setlocale) decides; an upper-case letter is the
 * complement, and any other character after '%' stands for itself. The
 * class switches below must list the same letters. */
static int class_has(int cl, int c)
{
    int r;
    switch (tolower(cl)) {
    case 'a': r = isalpha(c); break;
    case 'c': r = iscntrl(c); break;
    case 'd': r = isdigit(c); break;
    case 'g': r = isgraph(c); break;
    case 'l': r = islower(c); break;
    case 'p': r = ispunct(c); break;
    case 's': r = isspace(c); break;
    case 'u': r = isupper(c); break;
    case 'w': r = isalnum(c); break;
    case 'x': r = isxdigit(c); break;
    case 'z': r = c == 0; break;   /* deprecated, but stock 5.4 still has it */
    default: return cl == c;
    }
    return isupper(cl) ? !r : r != 0;
}

static inline int is_nul(int c)
{
    return c == 0;
}

/* First position in [q, e) where membership in class `cl` is not `want`
 * (e when there is none); the class is decoded once for the whole run. */
static const unsigned char *class_run(const unsigned char *q, const unsigned char *e, int cl, int want)
{
    int t;
    switch (tolower(cl)) {
    case 'a': case 'c': case 'd': case 'g': case 'l': case 'p': case 's': case 'u': case 'w': case 'x':
    case 'z':
        break;
    default:
        if (want) {
            while (q < e && *q == cl)
                q++;
        } else {
            q = memchr(q, cl, (size_t)(e - q));
            if (!q)
                q = e;
        }
        return q;
    }
    /* a member is pred(c) != upper(cl); go on while that equals want */
    t = (want != 0) != (isupper(cl) != 0);
#define RUN_WHILE(pred)                          \
    while (q < e && (pred(*q) != 0) == t)        \
        q++;                                     \
    break
    switch (tolower(cl)) {
    case 'a': RUN_WHILE(isalpha);
    case 'c': RUN_WHILE(iscntrl);
    case 'd': RUN_WHILE(isdigit);
    case 'g': RUN_WHILE(isgraph);
    case 'l': RUN_WHILE(islower);
    case 'p': RUN_WHILE(ispunct);
    case 's': RUN_WHILE(isspace);
    case 'u': RUN_WHILE(isupper);
    case 'w': RUN_WHILE(isalnum);
    case 'x': RUN_WHILE(isxdigit);
    default: RUN_WHILE(is_nul);
    }
#undef RUN_WHILE
    return q;
}

/* `set` is at '[' and `close` at its ']', as found by set_end. Inside, '%'
 * takes the next character as a class or an escape, and "x-y" is a range
 * unless the '-' is the last member (then both are plain members). */
static int set_has(const char *set, const char *close, int c)
{
    const unsigned char *q = (const unsigned char *)set + 1;
    const unsigned char *e = (const unsigned char *)close;
    int member = 1;
    if (*q == '^') {
        member = 0;
        q++;
    }
    while (q < e) {
        if (*q == '%') {
            if (class_has(q[1], c))
                return member;
            q += 2;
        } else if (q + 2 < e && q[1] == '-') {
            if (q[0] <= c && c <= q[2])
                return member;
            q += 3;
        } else {
            if (*q == c)
                return member;
            q++;
        }
    }
    return !member;
}

/* One past the ']' closing the set at `set`, or NULL when the pattern ends
 * first. The first character after '[' or "[^" belongs to the set even when
 * it is ']', and a '%' protects the character after it. */
static const char *set_end(const char *set, const char *pe)
{
    const char *q = set + 1;
    if (q < pe && *q == '^')
        q++;
    for (;;) {
        if (q >= pe)
            return NULL;
        if (*q++ == '%' && q < pe)
            q++;
        if (q < pe && *q == ']')
            return q + 1;
    }
}

/* End of the single-character item at p (p < pattern end). */
static const char *item_end(struct matcher *m, const char *p)
{
    if (*p == '%') {
        if (p + 1 >= m->pattern_end)
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 2;
    }
    if (*p == '[') {
        const char *e = set_end(p, m->pattern_end);
        if (!e)
            luaL_error(m->L, "malformed pattern (missing ']')");
        return e;
    }
    return p + 1;
}

static inline int item_has(const char *p, const char *ep, int c)
{
    switch (*p) {
    case '.': return 1;
    case '%': return class_has((unsigned char)p[1], c);
    case '[': return set_has(p, ep - 1, c);
    default: return (unsigned char)*p == c;
    }
}

/* Work of testing one character against the item: a set is tried member
 * by member, so a long one costs more than one unit. */
static inline long item_cost(const char *p, const char *ep)
{
    return *p == '[' ? (long)((ep - p) >> 1) : 0;
}

/* From q on, while the item's verdict on each character is `want`. */
static const unsigned char *scan_part(const unsigned char *q, const unsigned char *e, const char *p, const char *ep,
                                      int want)
{
    switch (*p) {
    case '%':
        return class_run(q, e, (unsigned char)p[1], want);
    case '[':
        while (q < e && set_has(p, ep - 1, *q) == want)
            q++;
        return q;
    default:
        if (want) {
            unsigned char c = (unsigned char)*p;
            while (q < e && *q == c)
                q++;
            return q;
        }
        q = memchr(q, (unsigned char)*p, (size_t)(e - q));
        return q ? q : e;
    }
}

/* scan_part over the rest of the subject, in pieces of about SB_SB_SCAN_WORK
 * character tests each, paying after each piece: a scan of a large subject
 * (against a long set, say) must not run for long between two checks. */
const char *sb_item_scan(struct matcher *m, const char *s, const char *p, const char *ep, int want)
{
    const unsigned char *q = (const unsigned char *)s;
    const unsigned char *e = (const unsigned char *)m->subject_end;
    size_t per_char = *p == '[' ? (size_t)(ep - p) : 1;
    /* SB_SCAN_WORK / per_char, near enough, without a division per scan */
    size_t piece = (SB_SCAN_WORK >> (63 - __builtin_clzl(per_char))) + 1;
    /* memchr looks at many characters per cycle; the loops at one */
    int shift = (*p != '%' && *p != '[' && !want) ? 5 : 1;
    if (*p == '.')
        return want ? (const char *)e : s;   /* no work to pay for */
    for (;;) {
        const unsigned char *stop = (size_t)(e - q) > piece ? q + piece : e;
        const unsigned char *r = scan_part(q, stop, p, ep, want);
        charge(m, (long)(((size_t)(r - q) * per_char) >> shift));
        if (r < stop || stop == e)
            return (const char *)r;
        q = r;
    }
}

/* The pattern's first item, when it is one character that must be there
 * (no '*', '?' or '-' after it), possibly inside a few captures: a start
 * position where it does not match fails at once without raising (too few
 * captures and too little nesting for their limits) and leaves nothing
 * behind, so searches may skip ahead to where it does. Returns the item's
 * end and sets *item to its start, or returns NULL (no skipping). */
const char *sb_lead_item(const char *p, const char *pe, const char **item)
{
    const char *ep;
    int opens;
    for (opens = 0; p < pe && *p == '(' && opens < 8; opens++)
        p += (p + 1 < pe && p[1] == ')') ? 2 : 1;
    if (p >= pe)
        return NULL;
    switch (*p) {
    case '(': case ')': case '.':
        return NULL;
    case '$':
        if (p + 1 == pe)
            return NULL;
        ep = p + 1;
        break;
    case '%':
        if (p + 1 >= pe || p[1] == 'b' || p[1] == 'f' || (p[1] >= '0' && p[1] <= '9'))
            return NULL;
        ep = p + 2;
        break;
    case '[':
        ep = set_end(p, pe);
        if (!ep)
            return NULL;
        break;
    default:
        ep = p + 1;
    }
    if (ep < pe && (*ep == '*' || *ep == '?' || *ep == '-'))
        return NULL;
    *item = p;
    return ep;
}

/* The character an item at p must match (once, or more with '+'), when it
 * is a plain one or an escaped punctuation character; -1 otherwise. A
 * nested match whose first item is that character fails at once where the
 * subject holds another one, which lets '*' and '-' skip such positions. */
static int next_literal(const char *p, const char *pe)
{
    const char *ep = p + 1;
    int c;
    if (p >= pe)
        return -1;
    c = (unsigned char)*p;
    switch (c) {
    case '(': case ')': case '[': case '.':
        return -1;
    case '$':
        if (p + 1 == pe)
            return -1;
        break;
    case '%':
        /* ASCII punctuation only: tolower keeps it, so it is never a class */
        if (p + 1 >= pe || !ispunct((unsigned char)p[1]) || (unsigned char)p[1] >= 0x80)
            return -1;
        c = (unsigned char)p[1];
        ep = p + 2;
        break;
    }
    if (ep < pe && (*ep == '*' || *ep == '?' || *ep == '-'))
        return -1;
    return c;
}

/* ---- the matcher ---------------------------------------------------- */


/* next_literal for the item after a '*' or '-', also through ')'s that
 * close captures open now (closing one nests a match and has no other
 * effect when what follows fails); -1 when a skipped match could raise. */
static int literal_after(struct matcher *m, const char *p)
{
    int closes = 0, open = 0, i;
    while (p < m->pattern_end && *p == ')') {
        closes++;
        p++;
    }
    if (closes) {
        for (i = 0; i < m->level; i++)
            open += m->cap[i].len == CAP_OPEN;
        if (open < closes)
            return -1;
    }
    if (m->depth <= closes)
        return -1;
    return next_literal(p, m->pattern_end);
}

static const char *capture_open(struct matcher *m, const char *s, const char *p, ptrdiff_t what)
{
    const char *r;
    int k = m->level;
    if (k >= MAX_CAPTURES)
        luaL_error(m->L, "too many captures");
    m->cap[k].start = s;
    m->cap[k].len = what;
    m->level = k + 1;
    r = sb_match_here(m, s, p);
    if (!r)
        m->level--;
    return r;
}

static const char *capture_close(struct matcher *m, const char *s, const char *p)
{
    const char *r;
    int k = m->level - 1;
    while (k >= 0 && m->cap[k].len != CAP_OPEN)
        k--;
    if (k < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[k].len = s - m->cap[k].start;
    r = sb_match_here(m, s, p);
    if (!r)
        m->cap[k].len = CAP_OPEN;
    return r;
}

static const char *back_reference(struct matcher *m, const char *s, int digit)
{
    int k = digit - '1';
    size_t len;
    if (k < 0 || k >= m->level || m->cap[k].len == CAP_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", k + 1);
    /* a position capture has a negative length: as size_t it never fits */
    len = (size_t)m->cap[k].len;
    if ((size_t)(m->subject_end - s) < len)
        return NULL;
    charge(m, (long)(len >> 4));
    return memcmp(m->cap[k].start, s, len) == 0 ? s + len : NULL;
}

static const char *balanced(struct matcher *m, const char *s, const char *p)
{
    const char *end = m->subject_end;
    char open, close;
    int depth = 1;
    if (m->pattern_end - p < 2)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= end || *s != *p)
        return NULL;
    open = p[0];
    close = p[1];
    for (s++; s < end;) {
        const char *from = s, *stop = end - s > SB_SCAN_WORK ? s + SB_SCAN_WORK : end;
        for (; s < stop; s++) {
            if (*s == close) {
                if (--depth == 0) {
                    charge(m, (long)((size_t)(s - from) >> 1));
                    return s + 1;
                }
            } else if (*s == open) {
                depth++;
            }
        }
        charge(m, (long)((size_t)(s - from) >> 1));
    }
    return NULL;
}

/* '*' and '+': the longest run first, then shorter ones. `first` tells
 * that the character at s is known to match. */
static const char *match_greedy(struct matcher *m, const char *s, const char *p, const char *ep, int first)
{
    size_t n;
    int lit;
    const char *r;
    if (!first && (s >= m->subject_end || !item_has(p, ep, (unsigned char)*s)))
        return sb_match_here(m, s, ep + 1);   /* an empty run, the common case */
    n = (size_t)(sb_item_scan(m, s + 1, p, ep, 1) - s);
    lit = literal_after(m, ep + 1);
    if (lit < 0) {
        for (;;) {
            if ((r = sb_match_here(m, s + n, ep + 1)))
                return r;
            if (n == 0)
                return NULL;
            n--;
        }
    }
    /* positions s..s+n, minus the subject end where lit cannot match */
    n += s + n < m->subject_end;
    for (;;) {
        const char *at = memrchr(s, lit, n);
        size_t left = at ? (size_t)(at - s) : 0;
        charge(m, (long)((n - left) >> 5));
        if (!at)
            return NULL;
        if ((r = sb_match_here(m, at, ep + 1)))
            return r;
        n = left;
    }
}

/* '-': the shortest run first, one more character at a time. */
static const char *match_lazy(struct matcher *m, const char *s, const char *p, const char *ep)
{
    const char *end = m->subject_end, *r;
    int lit = literal_after(m, ep + 1);
    long cost = 1 + item_cost(p, ep);
    for (;;) {
        if (lit >= 0) {
            if (*p == '.') {
                const char *from = s;
                s = memchr(s, lit, (size_t)(end - s));
                if (!s)
                    s = end;
                charge(m, (long)((size_t)(s - from) >> 5));
            } else {
                while (s < end && (unsigned char)*s != lit) {
                    if (!item_has(p, ep, (unsigned char)*s))
                        break;
                    s++;
                    charge(m, cost);
                }
            }
            if (s >= end || (unsigned char)*s != lit)
                return NULL;
        }
        if ((r = sb_match_here(m, s, ep + 1)))
            return r;
        if (s >= end)
            return NULL;
        m->credit -= cost - 1;
        if (!item_has(p, ep, (unsigned char)*s))
            return NULL;
        s++;
    }
}

const char *sb_match_here(struct matcher *m, const char *s, const char *p)
{
    const char *pe = m->pattern_end;
    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    for (;;) {
        const char *ep;
        int q;
        if (--m->credit <= 0)
            sb_meter_check(m);
        if (p == pe)
            break;
        switch (*p) {
        case '(':
            if (p + 1 < pe && p[1] == ')')
                s = capture_open(m, s, p + 2, CAP_POSITION);
            else
                s = capture_open(m, s, p + 1, CAP_OPEN);
            goto out;
        case ')':
            s = capture_close(m, s, p + 1);
            goto out;
        case '$':
            if (p + 1 == pe) {
                if (s != m->subject_end)
                    s = NULL;
                goto out;
            }
            break;
        case '%':
            if (p + 1 >= pe)
                break;   /* item_end raises */
            if (p[1] == 'b') {
                if (!(s = balanced(m, s, p + 2)))
                    goto out;
                p += 4;
                continue;
            }
            if (p[1] == 'f') {
                const char *set = p + 2;
                int before, at;
                if (set >= pe || *set != '[')
                    luaL_error(m->L, "missing '[' after '%%f' in pattern");
                ep = item_end(m, set);
                m->credit -= item_cost(set, ep);
                before = s == m->subject ? 0 : (unsigned char)s[-1];
                at = s < m->subject_end ? (unsigned char)*s : 0;
                if (set_has(set, ep - 1, before) || !set_has(set, ep - 1, at)) {
                    s = NULL;
                    goto out;
                }
                p = ep;
                continue;
            }
            if (p[1] >= '0' && p[1] <= '9') {
                if (!(s = back_reference(m, s, p[1])))
                    goto out;
                p += 2;
                continue;
            }
            break;
        }
        ep = item_end(m, p);
        q = ep < pe ? *ep : 0;
        m->credit -= item_cost(p, ep);
        if (s >= m->subject_end || !item_has(p, ep, (unsigned char)*s)) {
            if (q == '*' || q == '?' || q == '-') {
                p = ep + 1;   /* zero repetitions are fine */
                continue;
            }
            s = NULL;
            goto out;
        }
        switch (q) {
        case '?': {
            const char *r = sb_match_here(m, s + 1, ep + 1);
            if (r) {
                s = r;
                goto out;
            }
            p = ep + 1;
            continue;
        }
        case '+':
            s = match_greedy(m, s + 1, p, ep, 0);
            goto out;
        case '*':
            s = match_greedy(m, s, p, ep, 1);
            goto out;
        case '-':
            s = match_lazy(m, s, p, ep);
            goto out;
        default:
            s++;
            p = ep;
        }
    }
out:
    m->depth++;
    return s;
}

