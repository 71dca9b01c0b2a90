/* bounded(ms, fn, ...) and generation(): at load time (the load's own
 * budget) and in jobs that wait. */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "fixtures.h"
#include "job.h"
#include "loop.h"
#include "runtime.h"
#include "tests.h"

/* Budgets large enough that the bounded calls of a file run out first. */
#define ROOMY "lua = { cpu_ms_per_resume = 1000, cpu_ms_per_job = 1000, memory_limit_mb = 8 }"

/* Every value a call gives, as text joined by commas. */
#define PACK "local function pack(...)\n" \
             "  local t = table.pack(...)\n" \
             "  for i = 1, t.n do t[i] = tostring(t[i]) end\n" \
             "  return table.concat(t, ',', 1, t.n)\n" \
             "end\n"

static void test_bounded_at_load(void)
{
    static const char *const files[] = {
        "scripts/b.lua",
        "local function spin() local n = 0 while true do n = n + 1 end end\n"             /* 1 */
        "local function stubborn() while true do pcall(spin) end end\n"                    /* 2 */
        PACK                                                                               /* 3-7 */
        "r_spin = pack(bounded(20, spin))\n"
        "r_stubborn = pack(bounded(20, stubborn))\n"
        "r_ok = pack(bounded(20, function(a, b) return a + b, 'x' end, 1, 2))\n"
        "r_err = pack(bounded(20, function() error('boom', 0) end))\n"
        "r_errobj = select(2, bounded(20, function() error({ code = 7 }) end)).code\n"
        "local inner_done = false\n"
        "r_outer = pack(bounded(30, function() bounded(500, spin) inner_done = true return 'no' end))\n"
        "r_inner_done = tostring(inner_done)\n"
        "r_inner = pack(bounded(500, function() return bounded(10, spin) end))\n"
        "r_pattern = pack(bounded(20, string.find, string.rep('a', 3000), string.rep('a*', 8) .. 'b'))\n"
        "r_zero = pack(pcall(bounded, 0, spin))\n"
        "r_over = pack(pcall(bounded, 1001, spin))\n"
        "r_nofn = pack(pcall(bounded, 10, 5))\n"
        "local function nest(n) if n == 0 then return 'bottom' end return select(2, bounded(900, nest, n - 1)) end\n"
        "r_nest16 = nest(16)\n"
        "r_nest17 = nest(17)\n"
        "r_generation = generation()\n"
        "r_went_on = 'yes'\n",
        NULL,
    };
    struct sb_error err;
    struct sb_runtime *rt = fixture_runtime(files, &err, ROOMY);
    CHECK(rt != NULL);
    if (!rt) {
        fprintf(stderr, "  %s:%d: %s\n", err.file, err.line, err.message);
        return;
    }
    /* a runaway comes back as false with where it was when it ran out */
    CHECK(strncmp(fixture_global(rt, "r_spin"), "false,budget exceeded: 20 ms at ", 32) == 0);
    CHECK(strstr(fixture_global(rt, "r_spin"), "b.lua:1") != NULL);
    /* a pcall inside cannot keep the error */
    CHECK(strncmp(fixture_global(rt, "r_stubborn"), "false,budget exceeded: 20 ms at ", 32) == 0);
    CHECK_STR(fixture_global(rt, "r_ok"), "true,3,x");
    CHECK_STR(fixture_global(rt, "r_err"), "false,boom");
    CHECK_STR(fixture_global(rt, "r_errobj"), "7");
    /* the outer bound counts inside the inner call and goes through it */
    CHECK(strncmp(fixture_global(rt, "r_outer"), "false,budget exceeded: 30 ms at ", 32) == 0);
    CHECK_STR(fixture_global(rt, "r_inner_done"), "false");
    /* the inner bound applies inside, and the outer call goes on */
    CHECK(strncmp(fixture_global(rt, "r_inner"), "true,false,budget exceeded: 10 ms at ", 37) == 0);
    /* C code that checks the budget (the pattern matcher) stops too */
    CHECK(strncmp(fixture_global(rt, "r_pattern"), "false,budget exceeded: 20 ms at ", 32) == 0);
    CHECK(strstr(fixture_global(rt, "r_pattern"), "b.lua:") != NULL);   /* the script's line, not [C] */
    CHECK(strstr(fixture_global(rt, "r_zero"), "ms must be from 1 to 1000 (lua.cpu_ms_per_job)") != NULL);
    CHECK(strstr(fixture_global(rt, "r_over"), "ms must be from 1 to 1000") != NULL);
    CHECK(strstr(fixture_global(rt, "r_nofn"), "function expected") != NULL);
    CHECK_STR(fixture_global(rt, "r_nest16"), "bottom");
    CHECK(strstr(fixture_global(rt, "r_nest17"), "nested more than 16 deep") != NULL);
    CHECK_STR(fixture_global(rt, "r_generation"), "1");
    CHECK_STR(fixture_global(rt, "r_went_on"), "yes");
    sb_runtime_unref(rt);
}

/* The job's own budgets still stop the job (here the load), whatever the
 * bounded call allows. */
static void test_job_budget_still_stops(void)
{
    static const char *const files[] = {
        "scripts/b.lua", "local ok = bounded(200, function() while true do end end)\nr = 'survived'\n", NULL,
    };
    struct sb_error err;
    unsigned long long kills = sb_job_counters()->kills_cpu;
    CHECK(fixture_runtime(files, &err, NULL) == NULL);
    CHECK(strstr(err.message, "cpu budget exceeded") != NULL);
    CHECK(sb_job_counters()->kills_cpu == kills + 1);
}

struct ran {
    int done, failed;
    char text[512];
};

static void job_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    struct ran *r = job->owner;
    int i;
    r->done = 1;
    r->failed = out->result == SB_JOB_FAILED;
    if (r->failed) {
        snprintf(r->text, sizeof r->text, "%s: %s", out->code, out->message);
        return;
    }
    for (i = out->nresults; i > 0; i--) {
        size_t len = strlen(r->text);
        snprintf(r->text + len, sizeof r->text - len, "%s%s", len ? "," : "", luaL_tolstring(job->co, -i, NULL));
        lua_pop(job->co, 1);
    }
}

/* Runs the global function `name` as a job until it ends. */
static void run_job(struct sb_runtime *rt, const char *name, struct ran *r)
{
    struct sb_job *job = sb_job_new(rt, SB_JOB_TIMER, name, job_done, r);
    memset(r, 0, sizeof *r);
    lua_getglobal(job->co, name);
    sb_job_start(job, 0);
    while (!r->done)
        event_base_loop(sb_base, EVLOOP_ONCE);
}

static void test_bounded_in_jobs(void)
{
    static const char *const files[] = {
        "scripts/j.lua",
        "function waits() return bounded(20, function() sleep(0.1) return 'slept' end) end\n"
        "function wakes_and_spins()\n"
        "  local ok, msg = bounded(20, function() sleep(0) while true do end end)\n"
        "  return ok, msg, 'went on'\n"
        "end\n"
        "function in_coroutine()\n"
        "  return coroutine.wrap(function() return bounded(20, function() coroutine.yield(1) end) end)()\n"
        "end\n"
        "function spins_inside_a_coroutine()\n"
        "  return bounded(20, function() coroutine.wrap(function() while true do end end)() end)\n"
        "end\n",
        NULL,
    };
    struct sb_runtime *rt = fixture_runtime_ok(files);
    struct ran r;
    if (!rt)
        return;
    /* waiting is not CPU: 100 ms asleep fit in 20 ms */
    run_job(rt, "waits", &r);
    CHECK_STR(r.text, "true,slept");
    run_job(rt, "wakes_and_spins", &r);
    CHECK(!r.failed);
    CHECK(strncmp(r.text, "false,budget exceeded: 20 ms at ", 32) == 0 && strstr(r.text, ",went on") != NULL);
    /* a yield out of the bounded function would leave the bound open */
    run_job(rt, "in_coroutine", &r);
    CHECK(strstr(r.text, "false,attempt to yield across a C-call boundary") != NULL);
    run_job(rt, "spins_inside_a_coroutine", &r);
    CHECK(strncmp(r.text, "false,budget exceeded: 20 ms at ", 32) == 0);
    sb_runtime_unref(rt);
}

const struct test_case bounded_tests[] = {
    { "bounded: at load: runaways, errors, nesting, arguments", test_bounded_at_load },
    { "bounded: the job's own budget still stops it", test_job_budget_still_stops },
    { "bounded: in jobs: waiting is not counted, coroutines", test_bounded_in_jobs },
    { NULL, NULL },
};
