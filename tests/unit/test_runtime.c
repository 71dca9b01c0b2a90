#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "fixtures.h"
#include "job.h"
#include "loader.h"
#include "metrics.h"
#include "runtime.h"
#include "tests.h"
#include "txn.h"

static void test_loads_in_order_and_routes(void)
{
    static const char *const files[] = {
        /* the globals are frozen after scripts/: later files add to a table */
        "scripts/b.lua", "trace.order = trace.order .. 'b'",
        "scripts/a.lua", "trace = { order = 'a' }\nfunction h() end\nroute('GET', '/x/{id}', 'h')",
        "providers/p.lua", "trace.order = trace.order .. 'p'",
        "rules/r.lua", "trace.order = trace.order .. 'r'",
        "scripts/lib/skip.lua", "trace.order = trace.order .. 'SKIPPED'",
        NULL,
    };
    struct sb_runtime *rt = fixture_runtime_ok(files);
    struct sb_route_match m;
    char allow[64];
    int known;
    if (!rt)
        return;
    lua_getglobal(rt->L, "trace");
    lua_getfield(rt->L, -1, "order");
    CHECK_STR(lua_tostring(rt->L, -1), "abpr");
    lua_pop(rt->L, 2);
    CHECK(rt->nroutes == 1);
    CHECK(sb_runtime_match(rt, "GET", "/x/7", &m, &known, allow, sizeof allow) == 1);
    CHECK(sb_runtime_match(rt, "POST", "/x/7", &m, &known, allow, sizeof allow) == 0);
    CHECK(known == 1);
    CHECK_STR(allow, "GET");
    sb_runtime_unref(rt);
}

static void test_syntax_error_position(void)
{
    static const char *const files[] = { "scripts/bad.lua", "local a = 1\nlocal b = 2\nfunction (\n", NULL };
    struct sb_error err;
    CHECK(fixture_runtime(files, &err, NULL) == NULL);
    CHECK(strstr(err.file, "scripts/bad.lua") != NULL);
    CHECK(err.line == 3);
}

static void test_runtime_error_position(void)
{
    static const char *const files[] = { "rules/oops.lua", "local t = nil\nlocal x = t.field\n", NULL };
    struct sb_error err;
    CHECK(fixture_runtime(files, &err, NULL) == NULL);
    CHECK(strstr(err.file, "rules/oops.lua") != NULL);
    CHECK(err.line == 2);
    CHECK(strstr(err.message, "index a nil value") != NULL);
}

static void test_route_checks(void)
{
    static const char *const missing[] = { "scripts/r.lua", "\nroute('GET', '/a', 'nope')", NULL };
    static const char *const dup[] = { "scripts/r.lua", "function h() end\nroute('GET', '/a', 'h')\nroute('GET', '/a', 'h')", NULL };
    static const char *const method[] = { "scripts/r.lua", "function h() end\nroute('FETCH', '/a', 'h')", NULL };
    static const char *const dotted[] = { "scripts/r.lua", "m = { h = function() end }\nroute('*', '/a', 'm.h')", NULL };
    struct sb_error err;
    struct sb_runtime *rt;
    CHECK(fixture_runtime(missing, &err, NULL) == NULL);
    CHECK(err.line == 2 && strstr(err.message, "nope") != NULL);
    CHECK(fixture_runtime(dup, &err, NULL) == NULL);
    CHECK(err.line == 3 && strstr(err.message, "already registered") != NULL);
    CHECK(fixture_runtime(method, &err, NULL) == NULL);
    rt = fixture_runtime(dotted, &err, NULL);
    CHECK(rt != NULL);
    if (rt)
        sb_runtime_unref(rt);
}

static void test_sandbox(void)
{
    static const char *const files[] = {
        "scripts/s.lua",
        "r_io = type(io)\n"
        "r_exec = type(os.execute)\n"
        "r_exit = type(os.exit)\n"
        "r_loadfile = type(loadfile)\n"
        "r_dofile = type(dofile)\n"
        "r_debug = type(debug)\n"
        "r_time = type(os.time)\n"
        "r_binary = tostring(select(2, load(string.dump(function() end))))\n"
        "r_req_bad = tostring(select(2, pcall(require, 'os')))\n"
        "r_req_up = tostring(select(2, pcall(require, '..secret')))\n"
        "r_req_ok = require('lib.helper').name\n"
        "r_req_same = tostring(require('lib.helper') == require('lib.helper'))\n"
        "r_cfg_write = tostring(pcall(function() config.listen = 'x' end))\n"
        "r_cfg_read = config.paths.scripts ~= nil and 'yes' or 'no'\n"
        "r_json = json.encode({a = {1, 2}, b = json.null})\n",
        "scripts/lib/helper.lua", "return { name = 'helper' }",
        NULL,
    };
    struct sb_runtime *rt = fixture_runtime_ok(files);
    if (!rt)
        return;
    CHECK_STR(fixture_global(rt, "r_io"), "nil");
    CHECK_STR(fixture_global(rt, "r_exec"), "nil");
    CHECK_STR(fixture_global(rt, "r_exit"), "nil");
    CHECK_STR(fixture_global(rt, "r_loadfile"), "nil");
    CHECK_STR(fixture_global(rt, "r_dofile"), "nil");
    CHECK_STR(fixture_global(rt, "r_debug"), "nil");
    CHECK_STR(fixture_global(rt, "r_time"), "function");
    CHECK(strstr(fixture_global(rt, "r_binary"), "binary") != NULL);
    CHECK(strstr(fixture_global(rt, "r_req_bad"), "not found") != NULL);
    CHECK(strstr(fixture_global(rt, "r_req_up"), "bad module name") != NULL);
    CHECK_STR(fixture_global(rt, "r_req_ok"), "helper");
    CHECK_STR(fixture_global(rt, "r_req_same"), "true");
    CHECK_STR(fixture_global(rt, "r_cfg_write"), "false");
    CHECK_STR(fixture_global(rt, "r_cfg_read"), "yes");
    CHECK(strstr(fixture_global(rt, "r_json"), "\"a\":[1,2]") != NULL);
    CHECK(strstr(fixture_global(rt, "r_json"), "\"b\":null") != NULL);
    sb_runtime_unref(rt);
}

static void test_load_budgets(void)
{
    static const char *const spin[] = { "scripts/spin.lua", "local n = 0\nwhile true do pcall(function() while true do n = n + 1 end end) end", NULL };
    static const char *const bomb[] = { "scripts/bomb.lua", "local t = {}\nwhile true do t[#t + 1] = string.rep('x', 4096) .. #t end", NULL };
    static const char *const wait[] = { "scripts/wait.lua", "sleep(1)", NULL };
    struct sb_error err;
    unsigned long long cpu = sb_job_counters()->kills_cpu, mem = sb_job_counters()->kills_memory;
    CHECK(fixture_runtime(spin, &err, NULL) == NULL);
    CHECK(strstr(err.message, "cpu budget") != NULL);
    CHECK(strstr(err.file, "spin.lua") != NULL && err.line == 2);
    CHECK(sb_job_counters()->kills_cpu == cpu + 1);
    /* CPU to spare: on a loaded machine the bomb must still meet the memory cap first */
    CHECK(fixture_runtime(bomb, &err, "lua = { cpu_ms_per_resume = 10000, cpu_ms_per_job = 10000, memory_limit_mb = 8 }") == NULL);
    if (!strstr(err.message, "memory budget"))
        fprintf(stderr, "  bomb: %s:%d: %s\n", err.file, err.line, err.message);
    CHECK(strstr(err.message, "memory budget") != NULL);
    CHECK(sb_job_counters()->kills_memory == mem + 1);
    CHECK(fixture_runtime(wait, &err, NULL) == NULL);
    CHECK(strstr(err.message, "load time") != NULL);
}

/* json.array: marked empty tables encode as [], unmarked ones as {},
 * through json.encode and through the encoder bindings use */
static void test_json_array(void)
{
    static const char *const files[] = {
        "scripts/j.lua",
        "r_field = json.encode{ tags = json.array{} }\n"
        "r_top = json.encode(json.array())\n"
        "r_plain = json.encode{ e = {} }\n"
        "local filled = json.array{}; filled[1] = 'x'; r_filled = json.encode(filled)\n"
        "local emptied = json.array{ 'a' }; emptied[1] = nil; r_emptied = json.encode{ u = emptied }\n"
        "r_nested = json.encode{ a = { json.array(), { b = json.array{} } }, c = {} }\n"
        "r_same = tostring(json.array(filled) == filled)\n"
        "r_bad = select(2, pcall(json.array, 'x'))\n"
        "local left = json.array{}\n"
        "local ok = pcall(json.encode, { left, function() end })\n"
        "r_restored = tostring(not ok and next(left) == nil and json.encode{ left } == '[[]]')\n"
        "r_string = json.encode{ s = '[\"sb-empty-array-\"]' }\n"
        "r_decoded = json.encode(json.decode('{\"l\":[]}'))\n",
        NULL,
    };
    struct sb_runtime *rt = fixture_runtime_ok(files);
    if (!rt)
        return;
    CHECK_STR(fixture_global(rt, "r_field"), "{\"tags\":[]}");
    CHECK_STR(fixture_global(rt, "r_top"), "[]");
    CHECK_STR(fixture_global(rt, "r_plain"), "{\"e\":{}}");
    CHECK_STR(fixture_global(rt, "r_filled"), "[\"x\"]");
    CHECK_STR(fixture_global(rt, "r_emptied"), "{\"u\":[]}");
    CHECK(strstr(fixture_global(rt, "r_nested"), "\"a\":[[],{\"b\":[]}]") != NULL);
    CHECK(strstr(fixture_global(rt, "r_nested"), "\"c\":{}") != NULL);
    CHECK_STR(fixture_global(rt, "r_same"), "true");
    CHECK(strstr(fixture_global(rt, "r_bad"), "table or nil") != NULL);
    CHECK_STR(fixture_global(rt, "r_restored"), "true");
    CHECK_STR(fixture_global(rt, "r_string"), "{\"s\":\"[\\\"sb-empty-array-\\\"]\"}");
    /* decoding gives plain tables: an empty list comes back as {} */
    CHECK_STR(fixture_global(rt, "r_decoded"), "{\"l\":{}}");
    sb_runtime_unref(rt);
}

const struct test_case runtime_tests[] = {
    { "runtime: load order, subfolders skipped, routes", test_loads_in_order_and_routes },
    { "runtime: syntax error names file and line", test_syntax_error_position },
    { "runtime: top-level error names file and line", test_runtime_error_position },
    { "runtime: route checks at load", test_route_checks },
    { "runtime: sandbox, require, config view, json", test_sandbox },
    { "runtime: budgets stop runaway top levels", test_load_budgets },
    { "runtime: json.array encodes [] when empty", test_json_array },
    { NULL, NULL },
};
