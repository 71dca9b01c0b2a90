/* Jobs: every unit of work (an HTTP request routed to Lua, a timer firing,
 * an outbox handler, a load) runs in its own coroutine on the runtime it
 * started on, with its own transaction (txn.h): what it writes commits
 * only if it ends well, and nothing of it remains if it fails. No job ever
 * starts or resumes inside another: wake-ups from within a job are
 * deferred to the loop.
 *
 * Budgets, checked by a count hook while the coroutine runs:
 *   cpu_ms_per_resume  time of one resume (the loop does nothing else then)
 *   cpu_ms_per_job     sum over all resumes of the job
 *   memory             the runtime allocator's cap (see runtime.c)
 *   job_timeout        wall clock from start, also enforced while waiting
 * A job over budget is stopped: the hook then fires on every instruction
 * and raises again, so a script's own pcall cannot swallow the stop. */
#ifndef SB_JOB_H
#define SB_JOB_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct lua_State;
struct sb_runtime;
struct sb_txn;
struct event;

enum sb_job_kind { SB_JOB_LOAD, SB_JOB_HTTP, SB_JOB_TIMER, SB_JOB_OUTBOX, SB_JOB_EVENT };

/* How a job ended. */
enum sb_job_result {
    SB_JOB_DONE,         /* returned normally: results are on job->co */
    SB_JOB_FAILED        /* error: see status/code/message of the outcome */
};

struct sb_job_outcome {
    enum sb_job_result result;
    int nresults;             /* SB_JOB_DONE: values on top of job->co */
    int status;               /* SB_JOB_FAILED: HTTP status to answer with */
    const char *code;         /* SB_JOB_FAILED: machine-readable error code */
    const char *message;      /* SB_JOB_FAILED: human-readable message */
    const char *detail;       /* SB_JOB_FAILED: the Lua error, for logs and dead letters (never sent to clients) */
    uint64_t seq;             /* SB_JOB_DONE: the store batch an answer waits for (0: none) */
};

/* Bounded calls (bounded() in bind_core.c) open inside one another at most
 * this deep. */
#define SB_JOB_BOUNDS_MAX 16

/* One open bounded call: its CPU allowance, counted from the job's CPU
 * time when it opened (so time the job spends waiting is not counted). */
struct sb_job_bound {
    double cpu_at_start;          /* the job's CPU ms when the call began */
    int ms;                       /* allowance */
};

struct sb_job;
typedef void (*sb_job_done_fn)(struct sb_job *job, const struct sb_job_outcome *outcome);
typedef void (*sb_job_cancel_fn)(struct sb_job *job, void *wait);

struct sb_job {
    uint64_t id;
    enum sb_job_kind kind;
    struct sb_runtime *rt;        /* holds a reference */
    struct lua_State *co;         /* the job's coroutine (main thread for loads) */
    int co_ref;
    char label[160];              /* route pattern or timer handler, for logs */
    double started;               /* monotonic seconds */
    double deadline;
    double resume_started;
    double cpu_ms;
    const char *kill_reason;      /* "cpu" | "memory" | "deadline" once stopped */
    char kill_where[300];         /* script position that was running when stopped */
    int waiting;                  /* a binding yielded and armed a wake-up */
    sb_job_cancel_fn cancel_wait; /* aborts that wake-up; owner of the wait data */
    void *wait;
    struct event *deadline_ev;
    sb_job_done_fn on_done;
    /* SB_JOB_DONE only: adds the job's last writes to its transaction
     * before it ends (an outbox entry's delivery mark, a timer's removal). */
    void (*before_end)(struct sb_job *job);
    void *owner;                  /* e.g. the evhttp_request of an HTTP job */
    struct sb_txn *txn;           /* created on first use (sb_job_txn) */
    int pinned;                   /* answers still owed to this job by other threads */
    int zombie;                   /* ended while pinned: freed when the last pin goes */
    int wake_queued;              /* in the list of deferred wake-ups */
    int answered;                 /* values an answer left before the job could yield */
    struct sb_job *prev, *next;
    struct sb_job *next_wake;
    struct sb_job_bound bounds[SB_JOB_BOUNDS_MAX];   /* open bounded calls, outermost first */
    int nbounds;
    int bound_over;               /* 1-based level of the bound found exceeded, 0: none */
    char bound_where[200];        /* script position where it was found exceeded */
};

/* Creates a job on rt. Push the function and its arguments on job->co,
 * then call sb_job_start. */
struct sb_job *sb_job_new(struct sb_runtime *rt, enum sb_job_kind kind, const char *label,
                          sb_job_done_fn on_done, void *owner);
/* Runs the job until it waits or ends. The job may be freed on return. */
void sb_job_start(struct sb_job *job, int nargs);

/* For bindings that wait: checks the calling coroutine may wait (raises a
 * Lua error otherwise) and returns its job. */
struct sb_job *sb_job_checkwait(struct lua_State *L);
/* Arms the wait: the binding then does `return lua_yield(L, 0)`. */
void sb_job_wait(struct sb_job *job, sb_job_cancel_fn cancel, void *wait);
/* Resumes a waiting job with nargs values already pushed on job->co. Never
 * call from inside the coroutine or a library callback that must not
 * re-enter (collect first, wake after). The job may be freed on return. */
void sb_job_wake(struct sb_job *job, int nargs);

/* Delivers nargs values pushed on job->co to a job that waits for them:
 * resumes it, or, when the answer came at once (the binding that armed the
 * wait has not yielded yet), leaves them for that binding to return:
 *   sb_job_wait(...); start(...); if (!job->waiting) return job->answered;
 *   return lua_yield(L, 0); */
void sb_job_answer(struct sb_job *job, int nargs);
/* Resumes a waiting job with no values from the loop, soon: for wake-ups
 * that happen inside another job (a conversation handed over when its
 * owner ends). Replaces the job's wait. */
void sb_job_wake_soon(struct sb_job *job);

/* The job's transaction, created on first use. */
struct sb_txn *sb_job_txn(struct sb_job *job);
/* The transaction of the job (or load) running Lua on L; raises a Lua
 * error outside one. */
struct sb_txn *sb_job_txn_of(struct lua_State *L);
/* 1 if the code running on L may wait (a job's own coroutine, yieldable). */
int sb_job_can_wait(struct lua_State *L);
/* Raises if the running job is over its CPU or wall-clock budget; for C
 * code that runs long without executing Lua instructions. */
void sb_job_budget_check(struct lua_State *L);

/* A pin keeps the job's memory alive for an answer that cannot be
 * cancelled (a store read on the store thread). sb_job_unpin returns 1 if
 * the job already ended (and is freed now if that was the last pin): the
 * caller then drops the answer. */
void sb_job_pin(struct sb_job *job);
int sb_job_unpin(struct sb_job *job);
/* Arms a wait for the store thread's answer: pins the job (the answer
 * cannot be cancelled; its callback calls sb_job_unpin, then sb_job_answer
 * unless the job ended meanwhile). */
void sb_job_wait_store(struct sb_job *job);

/* Bounded calls: a part of a job with a CPU allowance of its own that a
 * script survives (bounded(ms, fn, ...)). While the part runs over its
 * allowance the budget hook raises "budget exceeded: <ms> ms at
 * <file:line>" at every instruction, as for a stopped job, so only the
 * bounded call that opened it (a C function, where no hook fires) ends
 * it. An outer bound found exceeded, or the job's own stop, goes through
 * the inner calls to the outer one or to the core.
 *
 * sb_job_bound_open raises outside a job, over SB_JOB_BOUNDS_MAX deep, or
 * for ms outside 1..lua.cpu_ms_per_job; it returns the bound's level.
 * sb_job_bound_close closes that level (and any inner one an error left)
 * and says how the call ends: */
enum sb_bound_end {
    SB_BOUND_WITHIN,      /* the call ends as fn did */
    SB_BOUND_EXCEEDED,    /* this bound ran out: msg holds the message */
    SB_BOUND_PROPAGATE    /* an outer bound or the job's own budget ran out: raise on (sb_job_bound_raise) */
};
int sb_job_bound_open(struct lua_State *L, int ms);
enum sb_bound_end sb_job_bound_close(struct lua_State *L, int level, char *msg, size_t msg_size);
/* Raises the error of what ran out (for SB_BOUND_PROPAGATE); never returns. */
int sb_job_bound_raise(struct lua_State *L);

/* The job whose coroutine is running now (NULL between resumes). */
struct sb_job *sb_job_running(void);

/* Runs the function below nargs arguments on the runtime's main state under
 * the load budget (script top level), writing through txn. Returns 0, or
 * -1 with err filled. */
int sb_job_pcall_load(struct sb_runtime *rt, int nargs, int nresults, const char *label, struct sb_txn *txn,
                      struct sb_error *err);

struct sb_job_counters {
    unsigned long long lua_errors, kills_cpu, kills_memory, kills_deadline;
};
const struct sb_job_counters *sb_job_counters(void);

/* Installs the job layer's hooks (memory refusals, store failures). */
void sb_jobs_init(void);
size_t sb_jobs_in_flight(void);
/* Stops every job (shutdown): waits are cancelled, HTTP jobs answered 503. */
void sb_jobs_abort_all(void);
void sb_jobs_free(void);

#endif
