/* Lua 5.4 pattern matching (string.find, match, gmatch, gsub) that counts
 * its work. Stock lstrlib matches inside C without running VM instructions,
 * so the count hook that enforces a job's CPU budget never fires during a
 * backtracking match; these versions call a check callback regularly instead,
 * and otherwise behave exactly like stock Lua 5.4.4 (results and errors). */
#ifndef SB_LPATTERN_H
#define SB_LPATTERN_H

/* Work units between two calls of the check callback. One unit is about one
 * pattern item tried at one subject position; scans over many characters
 * (a greedy run, %b, a back reference, a plain find) are charged in
 * proportion to their length. The count carries over from call to call. */
#define SB_PATTERN_CHECK_EVERY 4096

struct lua_State;
typedef void (*sb_pattern_check_fn)(struct lua_State *L);

/* Replaces find, match, gmatch and gsub in the table at `string_table_index`
 * (the string library table) with budgeted versions that call `check`
 * every SB_PATTERN_CHECK_EVERY matcher steps; check may raise (nothing the
 * matcher allocates is left behind). check may be NULL. */
void sb_lpattern_install(struct lua_State *L, int string_table_index, sb_pattern_check_fn check);

#endif
