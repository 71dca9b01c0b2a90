#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "runtime.h"
#include "txn.h"

/* Instructions between two budget checks: small enough to stop a loop
 * within a fraction of a millisecond, large enough to cost ~nothing. */
#define HOOK_EVERY 10000

static struct sb_job *jobs;        /* live jobs, newest first */
static size_t jobs_live;
static uint64_t next_job_id = 1;
static struct sb_job *running;
static struct sb_job *wake_head, *wake_tail;
static struct event *wake_ev;
static struct sb_job_counters counters;

size_t sb_jobs_in_flight(void) { return jobs_live; }
const struct sb_job_counters *sb_job_counters(void) { return &counters; }
struct sb_job *sb_job_running(void) { return running; }

static void budget_hook(lua_State *L, lua_Debug *ar);

static void note_memory_exhausted(void)
{
    if (running && !running->kill_reason) {
        running->kill_reason = "memory";
        /* Stop at the very next instruction, before a pcall that caught the
         * memory error lets the handler return. lua_sethook only sets
         * fields, so it is safe from inside the allocator. */
        lua_sethook(running->co, budget_hook, LUA_MASKCOUNT, 1);
    }
}

/* Sets the job's kill reason when it is over a budget. */
static void check_budget(struct sb_job *job)
{
    const struct sb_config *cfg = job->rt->cfg;
    if (!job->kill_reason) {
        double now = sb_now_mono();
        double resume_ms = (now - job->resume_started) * 1000.0;
        if (resume_ms > cfg->cpu_ms_per_resume || job->cpu_ms + resume_ms > cfg->cpu_ms_per_job)
            job->kill_reason = "cpu";
        else if (now > job->deadline)
            job->kill_reason = "deadline";
    }
}

/* CPU the job has used so far, the resume under way included. */
static double job_cpu_ms(const struct sb_job *job)
{
    return job->cpu_ms + (sb_now_mono() - job->resume_started) * 1000.0;
}

/* The level of the outermost bounded call over its allowance, or 0. Once
 * found, that one stays until its call closes: the error raised for it
 * must reach that call, whatever inner bounds run out meanwhile. */
static int bound_exceeded(struct sb_job *job)
{
    double used;
    int i;
    if (job->bound_over || !job->nbounds)
        return job->bound_over;
    used = job_cpu_ms(job);
    for (i = 0; i < job->nbounds; i++) {
        if (used - job->bounds[i].cpu_at_start > job->bounds[i].ms) {
            job->bound_over = i + 1;
            job->bound_where[0] = '\0';
            return job->bound_over;
        }
    }
    return 0;
}

/* Like a stop, the error comes again at every instruction (a pcall inside
 * the bounded function cannot keep it) until the bounded call, C code
 * where no hook fires, closes the bound. */
static int raise_bound(lua_State *L, struct sb_job *job)
{
    const struct sb_job_bound *b = &job->bounds[job->bound_over - 1];
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    lua_pushfstring(L, "budget exceeded: %d ms at %s", b->ms, job->bound_where[0] ? job->bound_where : "?");
    return lua_error(L);
}

/* The position of the innermost script function from `level` up: C
 * functions (a pattern function called by bounded()) have no line, and the
 * prelude is the engine's. Leaves buf alone when there is none. */
static void script_where(lua_State *L, int level, char *buf, size_t size)
{
    lua_Debug ar;
    for (; level < 50 && lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && strcmp(ar.short_src, "prelude") != 0) {
            snprintf(buf, size, "%s:%d", ar.short_src, ar.currentline);
            return;
        }
    }
}

void sb_job_budget_check(lua_State *L)
{
    struct sb_job *job = running;
    if (!job)
        return;
    check_budget(job);
    if (job->kill_reason) {
        if (!job->kill_where[0])
            script_where(L, 1, job->kill_where, sizeof job->kill_where);
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
        luaL_error(L, "script stopped: %s budget exceeded", job->kill_reason);
    }
    if (bound_exceeded(job)) {
        if (!job->bound_where[0])
            script_where(L, 1, job->bound_where, sizeof job->bound_where);
        raise_bound(L, job);
    }
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct sb_job *job = running;
    if (!job)
        return;
    check_budget(job);
    if (job->kill_reason) {
        if (!job->kill_where[0] && lua_getinfo(L, "Sl", ar))
            snprintf(job->kill_where, sizeof job->kill_where, "%s:%d", ar->short_src, ar->currentline);
        /* From now on fire at every instruction: each pcall the script has
         * open gets the error again until the coroutine is dead. */
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
        luaL_error(L, "script stopped: %s budget exceeded", job->kill_reason);
    }
    if (bound_exceeded(job)) {
        if (!job->bound_where[0])
            script_where(L, 0, job->bound_where, sizeof job->bound_where);
        raise_bound(L, job);
    }
    /* nothing ran out (any more): the bounded call that had closed its
     * bound, so back to checking at the cheap pace */
    if (lua_gethookcount(L) != HOOK_EVERY)
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

int sb_job_bound_open(lua_State *L, int ms)
{
    struct sb_job *job = running;
    struct sb_job_bound *b;
    if (!job)
        return luaL_error(L, "bounded: no job is running");
    if (job->nbounds >= SB_JOB_BOUNDS_MAX)
        return luaL_error(L, "bounded: calls nested more than %d deep", SB_JOB_BOUNDS_MAX);
    b = &job->bounds[job->nbounds++];
    b->cpu_at_start = job_cpu_ms(job);
    b->ms = ms;
    return job->nbounds;
}

enum sb_bound_end sb_job_bound_close(lua_State *L, int level, char *msg, size_t msg_size)
{
    struct sb_job *job = running;
    (void)L;
    if (!job)
        return SB_BOUND_WITHIN;
    /* inner levels are closed already, unless an error skipped them */
    if (job->nbounds >= level)
        job->nbounds = level - 1;
    if (job->kill_reason || (job->bound_over && job->bound_over < level))
        return SB_BOUND_PROPAGATE;
    if (job->bound_over == level) {
        snprintf(msg, msg_size, "budget exceeded: %d ms at %s", job->bounds[level - 1].ms,
                 job->bound_where[0] ? job->bound_where : "?");
        job->bound_over = 0;
        return SB_BOUND_EXCEEDED;
    }
    job->bound_over = 0;
    return SB_BOUND_WITHIN;
}

int sb_job_bound_raise(lua_State *L)
{
    struct sb_job *job = running;
    if (job && job->kill_reason) {
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
        return luaL_error(L, "script stopped: %s budget exceeded", job->kill_reason);
    }
    if (job && job->bound_over)
        return raise_bound(L, job);
    return luaL_error(L, "budget exceeded");
}

static void wake_unlink(struct sb_job *job)
{
    struct sb_job **p, *prev = NULL;
    if (!job->wake_queued)
        return;
    for (p = &wake_head; *p; prev = *p, p = &(*p)->next_wake) {
        if (*p == job) {
            *p = job->next_wake;
            if (wake_tail == job)
                wake_tail = prev;
            break;
        }
    }
    job->next_wake = NULL;
    job->wake_queued = 0;
}

static void job_release(struct sb_job *job)
{
    if (job->co_ref != LUA_NOREF)
        luaL_unref(job->rt->L, LUA_REGISTRYINDEX, job->co_ref);
    sb_runtime_unref(job->rt);
    free(job);
}

static void job_unlink_and_free(struct sb_job *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
    jobs_live--;
    wake_unlink(job);
    if (job->txn) {
        sb_txn_abort(job->txn);   /* ended well: sb_txn_end took it already */
        job->txn = NULL;
    }
    if (job->deadline_ev)
        event_free(job->deadline_ev);
    job->deadline_ev = NULL;
    if (job->pinned > 0) {
        job->zombie = 1;
        return;
    }
    job_release(job);
}

void sb_job_pin(struct sb_job *job) { job->pinned++; }

static void store_wait_cancel(struct sb_job *job, void *wait)
{
    /* The store thread owns the work item and cannot be interrupted: the
     * pin keeps the job's memory until its answer arrives and is dropped. */
    (void)job;
    (void)wait;
}

void sb_job_wait_store(struct sb_job *job)
{
    sb_job_pin(job);
    sb_job_wait(job, store_wait_cancel, NULL);
}

int sb_job_unpin(struct sb_job *job)
{
    job->pinned--;
    if (!job->zombie)
        return 0;
    if (job->pinned == 0)
        job_release(job);
    return 1;
}

static void count_kill(const char *reason)
{
    if (strcmp(reason, "cpu") == 0)
        counters.kills_cpu++;
    else if (strcmp(reason, "memory") == 0)
        counters.kills_memory++;
    else
        counters.kills_deadline++;
}

/* Ends the job's transaction by its outcome, then tells the owner. */
static void finish(struct sb_job *job, struct sb_job_outcome *out)
{
    if (out->result == SB_JOB_DONE) {
        uint64_t visible = sb_txn_visible_seq();
        if (job->before_end)
            job->before_end(job);
        out->seq = job->txn ? sb_txn_end(job->txn) : 0;
        job->txn = NULL;
        /* nothing an answer may show is sent before it is durable */
        if (visible > out->seq)
            out->seq = visible;
    } else if (job->txn) {
        sb_txn_abort(job->txn);
        job->txn = NULL;
    }
    job->on_done(job, out);
}

static void log_kill(struct sb_job *job)
{
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)job->id);
    sb_log(SB_LOG_ERROR, "script stopped", "reason", job->kill_reason,
           "script", job->kill_where[0] ? job->kill_where : job->label,
           "job", id, "handler", job->label, NULL);
}

/* Names the innermost Lua function on the job's stack (the script that was
 * running or waiting when the job was stopped). */
static void find_script_position(struct sb_job *job)
{
    if (job->kill_where[0] || !job->co || job->kind == SB_JOB_LOAD)
        return;
    script_where(job->co, 0, job->kill_where, sizeof job->kill_where);
}

static void finish_killed(struct sb_job *job)
{
    struct sb_job_outcome out = { SB_JOB_FAILED, 0, 500, "script_budget_exceeded", NULL, NULL, 0 };
    find_script_position(job);
    count_kill(job->kill_reason);
    log_kill(job);
    if (strcmp(job->kill_reason, "deadline") == 0) {
        out.status = 504;
        out.code = "job_timeout";
        out.message = "the handler did not finish in time";
    } else if (strcmp(job->kill_reason, "memory") == 0) {
        out.message = "the handler exceeded its memory budget";
    } else {
        out.message = "the handler exceeded its CPU budget";
    }
    finish(job, &out);
}

/* Classifies the error object on top of co after a failed resume. */
static void finish_error(struct sb_job *job)
{
    lua_State *co = job->co;
    struct sb_runtime *rt = job->rt;
    struct sb_job_outcome out = { SB_JOB_FAILED, 0, 500, "script_error", "the handler failed", NULL, 0 };

    if (lua_type(co, -1) == LUA_TTABLE && lua_getmetatable(co, -1)) {
        lua_rawgeti(co, LUA_REGISTRYINDEX, rt->http_error_mt_ref);
        int is_http_error = lua_rawequal(co, -1, -2);
        lua_pop(co, 2);
        if (is_http_error) {
            lua_getfield(co, -1, "status");
            lua_getfield(co, -2, "code");
            lua_getfield(co, -3, "message");
            out.status = (int)lua_tointeger(co, -3);
            out.code = lua_tostring(co, -2);
            out.message = lua_tostring(co, -1);
            finish(job, &out);
            return;
        }
    }
    {
        char id[24];
        const char *msg = luaL_tolstring(co, -1, NULL);
        luaL_traceback(co, co, NULL, 0);
        snprintf(id, sizeof id, "%llu", (unsigned long long)job->id);
        counters.lua_errors++;
        sb_log(SB_LOG_ERROR, "script error", "error", msg, "job", id, "handler", job->label,
               "traceback", lua_tostring(co, -1), NULL);
        out.detail = msg;
        finish(job, &out);
    }
}

static void job_resume(struct sb_job *job, int nargs)
{
    int nres = 0, status;
    struct sb_runtime *rt = job->rt;
    double t0 = sb_now_mono();

    running = job;
    job->waiting = 0;
    job->resume_started = t0;
    rt->mem_enforce++;
    lua_sethook(job->co, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    status = lua_resume(job->co, NULL, nargs, &nres);
    rt->mem_enforce--;
    running = NULL;
    job->cpu_ms += (sb_now_mono() - t0) * 1000.0;

    if (status == LUA_YIELD && job->waiting && !job->kill_reason) {
        lua_pop(job->co, nres);
        return;
    }
    if (status == LUA_YIELD) {
        if (job->waiting && job->cancel_wait)
            job->cancel_wait(job, job->wait);
        job->waiting = 0;
        if (!job->kill_reason) {
            /* coroutine.yield() at the job's top level: nothing would ever
             * resume it, so fail it now rather than leak it. */
            lua_settop(job->co, 0);
            lua_pushliteral(job->co, "coroutine.yield() outside a coroutine of the script's own");
            finish_error(job);
            job_unlink_and_free(job);
            return;
        }
    }
    if (status == LUA_ERRMEM && !job->kill_reason)
        job->kill_reason = "memory";
    if (job->kill_reason)
        finish_killed(job);
    else if (status == LUA_OK) {
        struct sb_job_outcome out = { SB_JOB_DONE, nres, 0, NULL, NULL, NULL, 0 };
        finish(job, &out);
    } else
        finish_error(job);
    job_unlink_and_free(job);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sb_job *job = arg;
    (void)fd;
    (void)what;
    if (job == running)
        return; /* the hook sees the deadline itself */
    job->kill_reason = "deadline";
    if (job->waiting && job->cancel_wait)
        job->cancel_wait(job, job->wait);
    job->waiting = 0;
    finish_killed(job);
    job_unlink_and_free(job);
}

struct sb_job *sb_job_new(struct sb_runtime *rt, enum sb_job_kind kind, const char *label,
                          sb_job_done_fn on_done, void *owner)
{
    struct sb_job *job = sb_xcalloc(1, sizeof *job);
    struct timeval tv;
    double timeout = rt->cfg->job_timeout;

    job->id = next_job_id++;
    job->kind = kind;
    job->rt = rt;
    sb_runtime_ref(rt);
    snprintf(job->label, sizeof job->label, "%s", label);
    job->on_done = on_done;
    job->owner = owner;
    job->started = sb_now_mono();
    job->deadline = job->started + timeout;
    job->co = lua_newthread(rt->L);
    job->co_ref = luaL_ref(rt->L, LUA_REGISTRYINDEX);
    job->deadline_ev = evtimer_new(sb_base, deadline_cb, job);
    tv = sb_timeval(timeout);
    evtimer_add(job->deadline_ev, &tv);
    job->next = jobs;
    if (jobs)
        jobs->prev = job;
    jobs = job;
    jobs_live++;
    return job;
}

void sb_job_start(struct sb_job *job, int nargs)
{
    if (running) {
        /* a job never runs inside another: its writes would mix */
        sb_log(SB_LOG_ERROR, "a job was started inside another one", "job", job->label, NULL);
        abort();
    }
    job_resume(job, nargs);
}

struct sb_job *sb_job_checkwait(lua_State *L)
{
    struct sb_job *job = running;
    if (!job || job->kind == SB_JOB_LOAD)
        luaL_error(L, "cannot wait at load time (top level of a script): do it in a handler");
    if (job->co != L)
        luaL_error(L, "cannot wait inside a coroutine the script created: call it from the handler itself");
    if (!lua_isyieldable(L))
        luaL_error(L, "cannot wait here (inside a metamethod or a library callback): call it from the handler itself");
    return job;
}

int sb_job_can_wait(lua_State *L)
{
    struct sb_job *job = running;
    return job && job->kind != SB_JOB_LOAD && job->co == L && lua_isyieldable(L);
}

struct sb_txn *sb_job_txn(struct sb_job *job)
{
    if (!job->txn)
        job->txn = sb_txn_new();
    return job->txn;
}

struct sb_txn *sb_job_txn_of(lua_State *L)
{
    if (!running || (!running->txn && running->kind == SB_JOB_LOAD))
        luaL_error(L, "no job is running: changes are only possible in a handler or at load time");
    return sb_job_txn(running);
}

void sb_job_wait(struct sb_job *job, sb_job_cancel_fn cancel, void *wait)
{
    job->waiting = 1;
    job->cancel_wait = cancel;
    job->wait = wait;
}

void sb_job_wake(struct sb_job *job, int nargs)
{
    job->cancel_wait = NULL;
    job->wait = NULL;
    wake_unlink(job);
    job_resume(job, nargs);
}

void sb_job_answer(struct sb_job *job, int nargs)
{
    if (job == running) {
        job->waiting = 0;
        job->cancel_wait = NULL;
        job->wait = NULL;
        job->answered = nargs;
        return;
    }
    sb_job_wake(job, nargs);
}

static void wake_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    /* only those queued before this turn: a resume may queue others */
    {
        struct sb_job *tail = wake_tail;
        while (wake_head) {
            struct sb_job *job = wake_head, *last = tail;
            wake_head = job->next_wake;
            if (!wake_head)
                wake_tail = NULL;
            job->next_wake = NULL;
            job->wake_queued = 0;
            sb_job_wake(job, 0);
            if (job == last)
                break;
        }
    }
    if (wake_head)
        event_active(wake_ev, 0, 0);
}

static void wake_soon_cancel(struct sb_job *job, void *wait)
{
    (void)wait;
    wake_unlink(job);
}

void sb_job_wake_soon(struct sb_job *job)
{
    job->cancel_wait = wake_soon_cancel;
    job->wait = NULL;
    if (job->wake_queued)
        return;
    job->wake_queued = 1;
    job->next_wake = NULL;
    if (wake_tail)
        wake_tail->next_wake = job;
    else
        wake_head = job;
    wake_tail = job;
    event_active(wake_ev, 0, 0);
}

static void load_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    (void)job;
    (void)out;
}

int sb_job_pcall_load(struct sb_runtime *rt, int nargs, int nresults, const char *label, struct sb_txn *txn,
                      struct sb_error *err)
{
    struct sb_job job;
    lua_State *L = rt->L;
    int status;
    double t0 = sb_now_mono();

    memset(&job, 0, sizeof job);
    job.kind = SB_JOB_LOAD;
    job.rt = rt;
    job.co = L;
    job.co_ref = LUA_NOREF;
    snprintf(job.label, sizeof job.label, "%s", label);
    job.started = job.resume_started = t0;
    job.deadline = t0 + rt->cfg->job_timeout;
    job.on_done = load_done;
    job.txn = txn;

    running = &job;
    rt->mem_enforce++;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, HOOK_EVERY);
    status = lua_pcall(L, nargs, nresults, 0);
    lua_sethook(L, NULL, 0, 0);
    rt->mem_enforce--;
    running = NULL;
    if (status == LUA_OK)
        return 0;
    if (status == LUA_ERRMEM && !job.kill_reason)
        job.kill_reason = "memory";
    if (job.kill_reason) {
        struct sb_error at;
        count_kill(job.kill_reason);
        sb_error_from_lua(&at, job.kill_where, label);
        sb_error_set(err, at.file, at.line, "script stopped at load: %s budget exceeded", job.kill_reason);
    } else {
        sb_error_from_lua(err, lua_tostring(L, -1), label);
    }
    lua_pop(L, 1);
    return -1;
}

static void abort_all(int status, const char *code, const char *message)
{
    while (jobs) {
        struct sb_job *job = jobs;
        struct sb_job_outcome out = { SB_JOB_FAILED, 0, status, code, message, NULL, 0 };
        if (job->waiting && job->cancel_wait)
            job->cancel_wait(job, job->wait);
        job->waiting = 0;
        job->cancel_wait = NULL;
        finish(job, &out);
        job_unlink_and_free(job);
    }
}

void sb_jobs_abort_all(void)
{
    abort_all(503, "shutting_down", "the server is stopping");
}

/* A batch failed: every job in flight may stand on writes being undone. */
static void store_failed(void)
{
    abort_all(503, "store_unavailable", "the data could not be stored: retry later");
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_jobs_in_flight", "Jobs (requests, timers, outbox handlers) running or waiting.",
                     (double)jobs_live);
    sb_metrics_counter(out, "switchboard_lua_errors_total", "Jobs that ended with a Lua error.", counters.lua_errors);
    sb_metrics_family(out, "switchboard_budget_kills_total", "counter", "Jobs stopped for exceeding a budget.");
    evbuffer_add_printf(out, "switchboard_budget_kills_total{reason=\"cpu\"} %llu\n"
                             "switchboard_budget_kills_total{reason=\"memory\"} %llu\n"
                             "switchboard_budget_kills_total{reason=\"deadline\"} %llu\n",
                        counters.kills_cpu, counters.kills_memory, counters.kills_deadline);
}

void sb_jobs_init(void)
{
    sb_runtime_set_memory_hook(note_memory_exhausted);
    sb_txn_set_failure_hook(store_failed);
    if (!wake_ev)
        wake_ev = event_new(sb_base, -1, 0, wake_due, NULL);
    sb_metrics_register(render_metrics);
}

void sb_jobs_free(void)
{
    if (wake_ev)
        event_free(wake_ev);
    wake_ev = NULL;
}
