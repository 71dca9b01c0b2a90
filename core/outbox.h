/* The outbox: every outbound call that must not be lost. An entry is
 * persisted before it is attempted, delivered in order within its lane (a
 * conversation and a target), retried with exponential backoff and jitter
 * on network errors, 5xx, 408 and 429 (honouring Retry-After), and
 * dead-lettered after a bound of attempts or age, with the reason kept.
 *
 * Kinds: "http" (an HTTP request; an optional result handler runs with the
 * response before the delivery counts as done) and "job" (a Lua handler run
 * as a job; it succeeds when the handler returns without error). */
#ifndef SB_OUTBOX_H
#define SB_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

struct sb_outbox_settings {
    int max_attempts;
    double max_age;
    double backoff_base;
    double backoff_max;
    int concurrency;
    double timeout;
};

struct sb_outbox_new {
    int64_t id;                  /* 0: new entry; else requeue of a dead one */
    const char *conversation_id; /* may be NULL */
    const char *lane;            /* ordering key */
    const char *kind;            /* "http" | "job" */
    const char *target;          /* instance name (http) or handler name (job) */
    const char *method, *url;    /* http */
    const char *headers;         /* http: "Name: value" lines joined by '\n', or NULL */
    const char *body;            /* http: may be NULL */
    size_t body_len;
    const char *data;            /* JSON: context for the result handler, or the job's data */
    const char *on_result;       /* http: handler name, or NULL */
    const char *idem_key;        /* NULL: generated */
    double created;              /* 0: now */
};

void sb_outbox_configure(const struct sb_outbox_settings *s);
/* Queues an entry (writing it to the store). Returns its id, or 0 with a
 * message in err. */
int64_t sb_outbox_add(const struct sb_outbox_new *e, char *err, size_t err_size);
int sb_outbox_load(void);
/* Starts delivering what was loaded (once a runtime exists). */
void sb_outbox_start(void);
/* Graceful stop, step 1: no new attempts; HTTP attempts in flight are
 * cancelled (entries stay pending in the store); running jobs finish and
 * their outcome is recorded. */
void sb_outbox_pause(void);
/* Final stop: outcomes arriving from now on are not recorded. */
void sb_outbox_stop(void);
void sb_outbox_free_all(void);

struct sb_outbox_counters {
    unsigned long long delivered, retried, dead;
    size_t pending, in_flight;
};
const struct sb_outbox_counters *sb_outbox_counters(void);

/* The delay a 429 body asks for ({"parameters":{"retry_after":N}}), or -1. */
double sb_outbox_retry_after_in_body(const char *body, size_t len);
/* Exposed for tests: the delay before attempt number `attempt` (1-based). */
double sb_outbox_backoff(int attempt, double jitter01);

#endif
