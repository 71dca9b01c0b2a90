/* Inside the pattern functions: the matcher (lpattern_match.c) as the Lua
 * entry points (lpattern.c) use it. Not for other modules. */
#ifndef SB_LPATTERN_INT_H
#define SB_LPATTERN_INT_H

#include <stddef.h>

#include "lpattern.h"

struct lua_State;

/* Units a long scan pays at once: checks come within a long scan too. */
#define SB_SCAN_WORK 65536

/* Stock limits (LUA_MAXCAPTURES, MAXCCALLS), kept for identical errors. */
#define MAX_CAPTURES 32
#define MAX_DEPTH 200

#define CAP_OPEN (-1)     /* opened by '(', not closed yet */
#define CAP_POSITION (-2) /* "()" records where it stood, not a substring */

/* One per install: the callback and the count carried across calls, so that
 * a script doing many small matches between VM instructions is seen too. */
struct meter {
    sb_pattern_check_fn check;
    long credit;
};

struct matcher {
    const char *subject, *subject_end;
    const char *pattern_end;
    struct lua_State *L;
    struct meter *meter;
    long credit;   /* units left before the next check */
    int depth;     /* nested item matches still allowed */
    int level;     /* captures opened so far */
    struct {
        const char *start;
        ptrdiff_t len;   /* or CAP_OPEN, CAP_POSITION */
    } cap[MAX_CAPTURES];
};

void sb_matcher_init(struct matcher *m, struct lua_State *L, struct meter *meter, const char *s, size_t ls,
                     const char *p, size_t lp);
/* Hands the count left back to the meter. */
void sb_matcher_done(struct matcher *m);
/* Calls the check callback (which may raise) and refills the credit. */
void sb_meter_check(struct matcher *m);
/* The end of the match of pattern p at s, or NULL. */
const char *sb_match_here(struct matcher *m, const char *s, const char *p);
/* The first position from s on where the item [p, ep) does (want 1) or does
 * not (want 0) match, paying as it scans; the subject end if none. */
const char *sb_item_scan(struct matcher *m, const char *s, const char *p, const char *ep, int want);
/* The pattern's first item when it is one character that must be there
 * (its end returned, the item in *item), else NULL. */
const char *sb_lead_item(const char *p, const char *pe, const char **item);

static inline void charge(struct matcher *m, long units)
{
    m->credit -= units;
    if (m->credit <= 0)
        sb_meter_check(m);
}

#endif
