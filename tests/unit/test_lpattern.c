#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lpattern.h"
#include "lpattern_diff_lua.h"
#include "tests.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs the differential script against `mine` (a table on top of the stack,
 * popped); returns the number of differing cases, -1 if the script failed. */
static int run_diff(lua_State *L, int random_count, int *cases, int quiet)
{
    int differ;
    if (luaL_loadbuffer(L, lpattern_diff_lua, sizeof lpattern_diff_lua - 1, "=lpattern_diff.lua") != LUA_OK) {
        fprintf(stderr, "  %s\n", lua_tostring(L, -1));
        lua_pop(L, 2);
        return -1;
    }
    lua_insert(L, -2);
    lua_pushinteger(L, random_count);
    if (lua_pcall(L, 2, 3, 0) != LUA_OK) {
        fprintf(stderr, "  %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    *cases = (int)lua_tointeger(L, -3);
    differ = (int)lua_tointeger(L, -2);
    if (differ && !quiet)
        fprintf(stderr, "  %d of %d cases differ from stock, first ones:\n%s\n", differ, *cases, lua_tostring(L, -1));
    lua_pop(L, 3);
    return differ;
}

static void test_same_as_stock(void)
{
    lua_State *L = luaL_newstate();
    int cases = 0, differ;
    luaL_openlibs(L);
    lua_newtable(L);
    sb_lpattern_install(L, -1, NULL);
    differ = run_diff(L, 5000, &cases, 0);
    printf("  differential: %d cases compared with stock %s, %d differ\n", cases, LUA_RELEASE, differ);
    CHECK(differ == 0);
    CHECK(cases > 5000 + 500); /* the random ones plus the hand-written ones */
    lua_close(L);
}

/* The comparison must notice a single changed result, or the test above
 * would pass whatever the matcher did. */
static void test_diff_notices_a_difference(void)
{
    lua_State *L = luaL_newstate();
    int cases = 0, differ;
    luaL_openlibs(L);
    CHECK(luaL_loadstring(L,
                          "local t = ...\n"
                          "local real = t.match\n"
                          "t.match = function(s, p, ...)\n"
                          "  if s == '  trim me  ' then return 'trim me ' end\n"
                          "  return real(s, p, ...)\n"
                          "end\n"
                          "return t") == LUA_OK);
    lua_newtable(L);
    sb_lpattern_install(L, -1, NULL);
    CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
    differ = run_diff(L, 0, &cases, 1);
    printf("  sabotaged match: %d of %d cases differ\n", differ, cases);
    CHECK(differ >= 1);
    lua_close(L);
}

/* ---- budget ---------------------------------------------------------- */

static int check_calls, check_limit;
static lua_State *check_seen;

static void counting_check(lua_State *L)
{
    check_seen = L;
    if (++check_calls >= check_limit)
        luaL_error(L, "pattern budget exceeded");
}

static lua_State *budget_state(sb_pattern_check_fn check)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "string");
    sb_lpattern_install(L, -1, check);
    lua_pop(L, 1);
    check_calls = 0;
    check_limit = 1 << 30;
    check_seen = NULL;
    return L;
}

/* Runs `code` with a check that raises on its `limit`-th call; returns the
 * error message (or "ok") and the seconds it took. */
static const char *run_limited(lua_State *L, const char *code, int limit, double *secs)
{
    static char msg[256];
    double t0;
    int rc;
    check_calls = 0;
    check_limit = limit;
    if (luaL_loadstring(L, code) != LUA_OK) {
        snprintf(msg, sizeof msg, "load: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return msg;
    }
    t0 = now();
    rc = lua_pcall(L, 0, 0, 0);
    *secs = now() - t0;
    snprintf(msg, sizeof msg, "%s", rc == LUA_OK ? "ok" : lua_tostring(L, -1));
    lua_settop(L, 0);
    return msg;
}

static void test_budget_stops_runaway_patterns(void)
{
    /* Each of these would hold the loop for minutes to years with stock Lua. */
    static const char *const runaway[] = {
        "return s:find('.-.-.-b')",
        "return s:find('a*a*a*b')",
        "return s:match('(a*)(a*)(a*)b')",
        "return s:find('.-a.-a.-b')",
        "return s:find('(a*)%1%1b')",
        "return s:find('[' .. ('c'):rep(1000) .. 'a]*b')",
        "return s:gsub('a-a-a-b', '')",
        "for x in s:gmatch('.-.-.-b') do end",
        "return (('('):rep(200000)):find('%b()')",
        "return (('a'):rep(100000) .. 'b' .. ('a'):rep(100000)):find('%f[a]a-a-a-c')",
        "return (('a'):rep(1000000)):find('.*b')",
        "return (('a'):rep(1000000)):find('.-b')",
        NULL,
    };
    lua_State *L = budget_state(counting_check);
    const char *const *c;
    double worst = 0;
    CHECK(luaL_dostring(L, "s = ('a'):rep(200000)") == LUA_OK);
    for (c = runaway; *c; c++) {
        double secs = 0;
        const char *msg = run_limited(L, *c, 20, &secs);
        /* 20 checks take milliseconds; far more means work went unpaid */
        if (!strstr(msg, "pattern budget exceeded") || check_calls != 20 || secs > 0.5) {
            fprintf(stderr, "  %s: %s after %d checks, %.3f s\n", *c, msg, check_calls, secs);
            CHECK(0);
        }
        if (secs > worst)
            worst = secs;
    }
    printf("  %d runaway patterns (200 KB to 1 MB subjects) stopped after 20 checks each (%d units), slowest in %.1f ms\n",
           (int)(c - runaway), 20 * SB_PATTERN_CHECK_EVERY, worst * 1e3);
    lua_close(L);
}

static void test_budget_counts_across_calls(void)
{
    /* Many cheap matches add up, though none alone reaches a check: each
     * call costs at least one unit and here at most a few. */
    lua_State *L = budget_state(counting_check);
    double secs;
    CHECK_STR(run_limited(L, "for i = 1, 50000 do assert(('abc'):find('c$') == 3) end", 1 << 30, &secs), "ok");
    CHECK(check_calls >= 50000 / SB_PATTERN_CHECK_EVERY);
    CHECK(check_calls <= 50000 * 10 / SB_PATTERN_CHECK_EVERY + 1);
    lua_close(L);
}

static void test_budget_check_gets_the_running_thread(void)
{
    lua_State *L = budget_state(counting_check);
    lua_State *co;
    int nres = 0, rc;
    CHECK(luaL_dostring(L, "s = ('a'):rep(200000)") == LUA_OK);
    co = lua_newthread(L);
    CHECK(luaL_loadstring(co, "return s:find('.-.-.-b')") == LUA_OK);
    check_calls = 0;
    check_limit = 5;
    rc = lua_resume(co, L, 0, &nres);
    CHECK(rc == LUA_ERRRUN);
    CHECK(strstr(lua_tostring(co, -1), "pattern budget exceeded") != NULL);
    CHECK(check_seen == co);
    CHECK(check_calls == 5);
    lua_close(L);
}

static void test_budget_error_inside_gsub_callback(void)
{
    /* The callback has grown gsub's buffer before its own match hits the
     * budget: the error crosses gsub and nothing leaks (ASan checks). */
    lua_State *L = budget_state(counting_check);
    double secs;
    const char *msg;
    CHECK(luaL_dostring(L, "s = ('a'):rep(200000)") == LUA_OK);
    msg = run_limited(L,
                      "local n = 0\n"
                      "return (('x'):rep(5000)):gsub('x', function()\n"
                      "  n = n + 1\n"
                      "  if n == 3000 then return s:find('.-.-.-b') end\n"
                      "  return ('y'):rep(100)\n"
                      "end)",
                      10, &secs);
    CHECK(strstr(msg, "pattern budget exceeded") != NULL);
    CHECK(check_calls == 10);
    lua_close(L);
}

static void test_without_check(void)
{
    lua_State *L = budget_state(NULL);
    CHECK(luaL_dostring(L,
                        "local s, n = ('hello world'):gsub('o', '0')\n"
                        "assert(s == 'hell0 w0rld' and n == 2)\n"
                        "assert(('  x y  '):match('^%s*(.-)%s*$') == 'x y')\n"
                        "local a, b, c = ('key=val'):find('(%w+)=')\n"
                        "assert(a == 1 and b == 4 and c == 'key')\n"
                        "local t = {}\n"
                        "for w in ('one two  three'):gmatch('%S+') do t[#t + 1] = w end\n"
                        "assert(table.concat(t, ',') == 'one,two,three')\n"
                        "assert(('a'):rep(3000):find('.-.-b') == nil)\n"
                        "assert(not pcall(string.find, 'a', '[a'))\n") == LUA_OK ||
          (fprintf(stderr, "  %s\n", lua_tostring(L, -1)), 0));
    lua_close(L);
}

static void test_gsub_callback_error_propagates(void)
{
    lua_State *L = budget_state(counting_check);
    double secs;
    const char *msg = run_limited(L,
                                  "return ('abc'):gsub('%w', function(c)\n"
                                  "  if c == 'b' then error('boom') end\n"
                                  "end)",
                                  1 << 30, &secs);
    CHECK(strstr(msg, ": boom") != NULL);
    msg = run_limited(L, "return ('abc'):gsub('%w', function() error({}) end)", 1 << 30, &secs);
    CHECK(msg && strcmp(msg, "ok") != 0);
    lua_close(L);
}

/* ---- speed ----------------------------------------------------------- */

static const char speed_lua[] =
    "local impls, rounds, scale = ...\n"
    "local words = { 'alpha', 'beta', 'x1', '12345', 'key=value', '  ', 'gamma,delta', '7', 'end.' }\n"
    "local parts, lines, size = {}, {}, 0\n"
    "local i = 0\n"
    "while size < 100 * 1024 do\n"
    "  i = i + 1\n"
    "  local w = words[i % #words + 1] .. (i % 7 == 0 and '\\n' or ' ')\n"
    "  parts[#parts + 1] = w\n"
    "  size = size + #w\n"
    "end\n"
    "local text = table.concat(parts)\n"
    "for l in text:gmatch('[^\\n]+') do lines[#lines + 1] = '   ' .. l .. '  ' end\n"
    "local benches = {\n"
    "  { 'trim each line: ^%s*(.-)%s*$', function(F) local m = F.match\n"
    "      for _, l in ipairs(lines) do m(l, '^%s*(.-)%s*$') end end },\n"
    "  { 'trim whole 100 KB: ^%s*(.-)%s*$', function(F) F.match(text, '^%s*(.-)%s*$') end },\n"
    "  { 'split: gmatch %S+', function(F) for w in F.gmatch(text, '%S+') do end end },\n"
    "  { 'split: gsub %s+', function(F) F.gsub(text, '%s+', ' ') end },\n"
    "  { 'numbers: gmatch %d+', function(F) for d in F.gmatch(text, '%d+') do end end },\n"
    "  { 'pairs: gmatch (%w+)=(%w+)', function(F) for k, v in F.gmatch(text, '(%w+)=(%w+)') do end end },\n"
    "  { 'fields: gmatch ([^,]*)', function(F) for f in F.gmatch(text, '([^,]*)') do end end },\n"
    "  { 'words: gsub %w+ with a function', function(F) F.gsub(text, '%w+', string.upper) end },\n"
    "  { 'find plain, absent', function(F) F.find(text, 'needle', 1, true) end },\n"
    "  { 'find pattern, absent: n%a+e', function(F) F.find(text, 'n%a+e') end },\n"
    "}\n"
    "local out = {}\n"
    "for _, b in ipairs(benches) do\n"
    "  local best = {}\n"
    "  for _, name in ipairs { 'stock', 'mine' } do\n"
    "    local F = impls[name]\n"
    "    local reps = 1\n"
    "    local t0 = os.clock()\n"
    "    repeat b[2](F); reps = reps + 1 until os.clock() - t0 > 0.02 * scale\n"
    "    for _ = 1, rounds do\n"
    "      t0 = os.clock()\n"
    "      for _ = 1, reps do b[2](F) end\n"
    "      local t = (os.clock() - t0) / reps\n"
    "      if not best[name] or t < best[name] then best[name] = t end\n"
    "    end\n"
    "  end\n"
    "  out[#out + 1] = string.format('    %-38s %9.3f %9.3f %6.2f', b[1], best.stock * 1e3, best.mine * 1e3,\n"
    "                                best.mine / best.stock)\n"
    "end\n"
    "return string.format('  speed on %d KB, ms per run (best of %d): %s\\n    %-38s %9s %9s %6s\\n', size // 1024,\n"
    "                     rounds, SANITIZED and '(sanitizer build: not meaningful)' or '', 'workload', 'stock',\n"
    "                     'lpattern', 'ratio') .. table.concat(out, '\\n')\n";

static void test_speed_compared_with_stock(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushboolean(L, SANITIZED);
    lua_setglobal(L, "SANITIZED");
    CHECK(luaL_loadstring(L, speed_lua) == LUA_OK);
    lua_createtable(L, 0, 2);
    lua_getglobal(L, "string");
    lua_setfield(L, -2, "stock");
    lua_newtable(L);
    sb_lpattern_install(L, -1, NULL);
    lua_setfield(L, -2, "mine");
    lua_pushinteger(L, SANITIZED ? 1 : 5);
    lua_pushinteger(L, SANITIZED ? 1 : 5);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        fprintf(stderr, "  %s\n", lua_tostring(L, -1));
        CHECK(0);
    } else {
        printf("%s\n", lua_tostring(L, -1));
    }
    lua_close(L);
}

const struct test_case lpattern_tests[] = {
    { "lpattern: same results and errors as stock Lua", test_same_as_stock },
    { "lpattern: the differential test notices one changed result", test_diff_notices_a_difference },
    { "lpattern: the budget stops runaway patterns", test_budget_stops_runaway_patterns },
    { "lpattern: the budget counts across calls", test_budget_counts_across_calls },
    { "lpattern: the check gets the running coroutine", test_budget_check_gets_the_running_thread },
    { "lpattern: a budget error inside a gsub callback", test_budget_error_inside_gsub_callback },
    { "lpattern: works without a check", test_without_check },
    { "lpattern: errors of a gsub callback propagate", test_gsub_callback_error_propagates },
    { "lpattern: speed compared with stock (printed)", test_speed_compared_with_stock },
    { NULL, NULL },
};
