/* The outbox: every outbound call that must not be lost. An entry joins
 * its job's transaction and is attempted only once that transaction
 * committed; it is delivered in order within its lane (a conversation and
 * a target), retried with exponential backoff and jitter on network errors,
 * 5xx, 408 and 429 (honouring the wait a 429 or 503 asks for), and
 * dead-lettered after a bound of attempts or age, with the reason kept.
 *
 * What a platform says in a failed response is read where its adapter
 * declared it, per entry (hints, stored with the entry): the wait in a
 * header or at a JSON path of the body, the error text at a JSON path. The
 * defaults are the standard Retry-After header and the start of the body.
 *
 * Kinds: "http" (an HTTP request; an optional result handler runs with the
 * response before the delivery counts as done) and "job" (a handler run as
 * a job; it succeeds when the handler returns without error). Handlers run
 * through the runner the job layer registers; a handler's success and its
 * own writes commit together, so a retried handler never repeats what an
 * earlier attempt committed.
 *
 * Lanes are drained from the event loop, a bounded number of lanes per
 * loop turn; no attempt ever starts inside another job. Only a window of
 * each lane's entries is in memory; the rest waits in the store. */
#ifndef SB_OUTBOX_H
#define SB_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

struct sb_txn;
struct sb_http_response;
struct store_row;

struct sb_outbox_settings {
    int max_attempts;
    double max_age;
    double backoff_base;
    double backoff_max;
    int concurrency;
    double timeout;
    double keep_delivered;   /* seconds a delivered entry stays in the store; 0: deleted when delivered */
    double keep_dead;        /* seconds a dead letter stays in the store */
};

struct sb_outbox_new {
    const char *conversation_id; /* may be NULL */
    const char *lane;            /* ordering key */
    const char *kind;            /* "http" | "job" */
    const char *target;          /* instance name (http) or handler name (job) */
    const char *method, *url;    /* http; url and header values may hold ${config.path} secrets */
    const char *headers;         /* http: "Name: value" lines joined by '\n', or NULL */
    const char *body;            /* http: may be NULL */
    size_t body_len;
    const char *data;            /* JSON: context for the result handler, or the job's data */
    const char *on_result;       /* http: handler name, or NULL */
    const char *hints;           /* http: declarations about failed responses (below), or NULL */
};

/* Hints are lines "<what> <where> <name>" joined by '\n':
 *   retry_after header <header name>   the wait after a 429 or 503, in seconds or an HTTP date
 *   retry_after json <path>            the wait in seconds, at a dotted path of the JSON body
 *   error_text json <path>             the platform's error text, at a dotted path of the JSON body
 * A path is names and 1-based array indexes joined by dots ("errors.1.title").
 * Returns NULL, or what is wrong with them. */
const char *sb_outbox_hints_check(const char *hints);
/* The model parses no JSON: the Lua layer registers the reader of a value
 * at a dotted path. It returns 1 with a number in *number, 2 with a string
 * copied (cut) into text, or 0 when there is no number or string there. */
typedef int (*sb_outbox_json_fn)(const char *json, size_t len, const char *path, double *number, char *text,
                                 size_t text_size);
void sb_outbox_set_json_reader(sb_outbox_json_fn fn);

void sb_outbox_configure(const struct sb_outbox_settings *s);
/* Queues an entry as part of t. Returns its id, or 0 with a message in err. */
int64_t sb_outbox_add(struct sb_txn *t, const struct sb_outbox_new *e, char *err, size_t err_size);
/* Sends a dead letter again (fresh attempts and age, same id and key) as
 * part of t. row: the entry as store_fetch_outbox_entry returns it.
 * Returns 0, or -1 with a reason (not a dead letter, already requeued). */
int sb_outbox_requeue(struct sb_txn *t, const struct store_row *row, char *err, size_t err_size);

/* Handlers. The runner starts a job for entry a (response: the HTTP
 * response a result handler gets; NULL for a job entry) and reports with
 * sb_outbox_succeeded before the job's transaction ends (the delivery mark
 * joins it), or sb_outbox_failed after it was aborted. */
struct sb_outbox_attempt;
struct sb_outbox_job {
    int64_t id;
    const char *conversation_id, *target, *handler, *data, *idem_key;
    int attempts;
    const struct sb_http_response *response;
};
typedef void (*sb_outbox_run_fn)(struct sb_outbox_attempt *a, const struct sb_outbox_job *job);
void sb_outbox_set_runner(sb_outbox_run_fn fn);
void sb_outbox_succeeded(struct sb_outbox_attempt *a, struct sb_txn *t);
void sb_outbox_failed(struct sb_outbox_attempt *a, const char *reason);

/* Secrets: ${path} in a URL or a header value is replaced when the call is
 * made (they are never stored); resolve returns a malloc'ed value or NULL. */
typedef char *(*sb_outbox_secret_fn)(const char *path);
void sb_outbox_set_secret_resolver(sb_outbox_secret_fn fn);

int sb_outbox_load(void);
/* Starts delivering what was loaded (once a runtime exists). */
void sb_outbox_start(void);
/* Graceful stop, step 1: no new attempts; attempts in flight (HTTP calls
 * and jobs) finish and their outcome is recorded. */
void sb_outbox_pause(void);
/* Final stop: HTTP attempts still in flight are cancelled (their entries
 * stay pending in the store; the idempotency key covers a repeat after the
 * restart); outcomes arriving from now on are not recorded. */
void sb_outbox_stop(void);
void sb_outbox_free_all(void);
/* Retention of delivered entries and dead letters (periodic). */
void sb_outbox_sweep(void);

struct sb_outbox_counters {
    unsigned long long delivered, retried, dead;
    size_t pending, in_flight, in_memory;
};
const struct sb_outbox_counters *sb_outbox_counters(void);

/* Exposed for tests: the wait (seconds) a failed response asks for where
 * hints say (NULL: the Retry-After header), or -1 when it asks for none. */
double sb_outbox_retry_after(const char *hints, const struct sb_http_response *r);
/* Exposed for tests: "HTTP <status>", then ": <the platform's error text>"
 * when there is one (where hints say, else the start of a text body),
 * with control characters replaced and at most 200 bytes of it. */
void sb_outbox_failure_reason(const char *hints, const struct sb_http_response *r, char *out, size_t out_size);
/* Exposed for tests: the delay before attempt number `attempt` (1-based). */
double sb_outbox_backoff(int attempt, double jitter01);
/* Exposed for tests: url/header text with ${path} secrets resolved; NULL
 * with the missing path in err when one cannot be. */
char *sb_outbox_expand(const char *text, char *err, size_t err_size);

#endif
