#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "runtime.h"

/* Instructions between two budget checks: small enough to stop a loop
 * within a fraction of a millisecond, large enough to cost ~nothing. */
#define HOOK_EVERY 10000

static struct sb_job *jobs;        /* live jobs, newest first */
static size_t jobs_live;
static uint64_t next_job_id = 1;
static struct sb_job *running;

size_t sb_jobs_in_flight(void) { return jobs_live; }
struct sb_job *sb_job_running(void) { return running; }

static void budget_hook(lua_State *L, lua_Debug *ar);

void sb_job_note_write(uint64_t seq)
{
    if (running && seq > running->write_seq)
        running->write_seq = seq;
}

void sb_job_note_memory_exhausted(void)
{
    if (running && !running->kill_reason) {
        running->kill_reason = "memory";
        /* Stop at the very next instruction, before a pcall that caught the
         * memory error lets the handler return. lua_sethook only sets
         * fields, so it is safe from inside the allocator. */
        lua_sethook(running->co, budget_hook, LUA_MASKCOUNT, 1);
    }
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    struct sb_job *job = running;
    const struct sb_config *cfg;
    if (!job)
        return;
    cfg = job->rt->cfg;
    if (!job->kill_reason) {
        double now = sb_now_mono();
        double resume_ms = (now - job->resume_started) * 1000.0;
        if (resume_ms > cfg->cpu_ms_per_resume || job->cpu_ms + resume_ms > cfg->cpu_ms_per_job)
            job->kill_reason = "cpu";
        else if (now > job->deadline)
            job->kill_reason = "deadline";
    }
    if (job->kill_reason) {
        if (!job->kill_where[0] && lua_getinfo(L, "Sl", ar))
            snprintf(job->kill_where, sizeof job->kill_where, "%s:%d", ar->short_src, ar->currentline);
        /* From now on fire at every instruction: each pcall the script has
         * open gets the error again until the coroutine is dead. */
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
        luaL_error(L, "script stopped: %s budget exceeded", job->kill_reason);
    }
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
        sb_counters.kills_cpu++;
    else if (strcmp(reason, "memory") == 0)
        sb_counters.kills_memory++;
    else
        sb_counters.kills_deadline++;
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
    lua_Debug ar;
    int level;
    if (job->kill_where[0] || !job->co || job->kind == SB_JOB_LOAD)
        return;
    for (level = 0; level < 50 && lua_getstack(job->co, level, &ar); level++) {
        if (lua_getinfo(job->co, "Sl", &ar) && ar.currentline > 0 && strcmp(ar.short_src, "prelude") != 0) {
            snprintf(job->kill_where, sizeof job->kill_where, "%s:%d", ar.short_src, ar.currentline);
            return;
        }
    }
}

static void finish_killed(struct sb_job *job)
{
    struct sb_job_outcome out = { SB_JOB_FAILED, 0, 500, "script_budget_exceeded", NULL, NULL };
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
    job->on_done(job, &out);
}

/* Classifies the error object on top of co after a failed resume. */
static void finish_error(struct sb_job *job)
{
    lua_State *co = job->co;
    struct sb_runtime *rt = job->rt;
    struct sb_job_outcome out = { SB_JOB_FAILED, 0, 500, "script_error", "the handler failed", NULL };

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
            job->on_done(job, &out);
            return;
        }
    }
    {
        char id[24];
        const char *msg = luaL_tolstring(co, -1, NULL);
        luaL_traceback(co, co, NULL, 0);
        snprintf(id, sizeof id, "%llu", (unsigned long long)job->id);
        sb_counters.lua_errors++;
        sb_log(SB_LOG_ERROR, "script error", "error", msg, "job", id, "handler", job->label,
               "traceback", lua_tostring(co, -1), NULL);
        out.detail = msg;
        job->on_done(job, &out);
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
        struct sb_job_outcome out = { SB_JOB_DONE, nres, 0, NULL, NULL, NULL };
        job->on_done(job, &out);
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
    tv.tv_sec = (time_t)timeout;
    tv.tv_usec = (suseconds_t)((timeout - (double)tv.tv_sec) * 1e6);
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
    job_resume(job, nargs);
}

struct sb_job *sb_job_checkwait(lua_State *L)
{
    struct sb_job *job = running;
    if (!job || job->kind == SB_JOB_LOAD)
        luaL_error(L, "cannot wait at load time (top level of a script): do it in a handler");
    if (job->co != L)
        luaL_error(L, "cannot wait inside a coroutine the script created: call it from the handler itself");
    return job;
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
    job_resume(job, nargs);
}

static void load_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    (void)job;
    (void)out;
}

int sb_job_pcall_load(struct sb_runtime *rt, int nargs, int nresults, const char *label, struct sb_error *err)
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

void sb_jobs_abort_all(void)
{
    while (jobs) {
        struct sb_job *job = jobs;
        struct sb_job_outcome out = { SB_JOB_FAILED, 0, 503, "shutting_down", "the server is stopping", NULL };
        if (job->waiting && job->cancel_wait)
            job->cancel_wait(job, job->wait);
        job->waiting = 0;
        job->on_done(job, &out);
        job_unlink_and_free(job);
    }
}
