#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "conn.h"
#include "conv.h"
#include "job.h"
#include "outbox.h"
#include "store.h"
#include "runtime.h"
#include "timer.h"
#include "util.h"

struct sb_counters sb_counters;

/* Label sets are few (registered routes x statuses), so a flat array that
 * grows is simpler than a map and stays small. */
struct http_count {
    char *route;
    int status;
    unsigned long long n;
};

static struct http_count *http_counts;
static size_t http_count_len, http_count_cap;

#define OUTBOUND_SLOTS 600
static unsigned long long outbound[OUTBOUND_SLOTS]; /* index 0: network error */

void sb_metrics_http(const char *route, int status)
{
    size_t i;
    for (i = 0; i < http_count_len; i++) {
        if (http_counts[i].status == status && strcmp(http_counts[i].route, route) == 0) {
            http_counts[i].n++;
            return;
        }
    }
    if (http_count_len == http_count_cap) {
        http_count_cap = http_count_cap ? http_count_cap * 2 : 32;
        http_counts = sb_xrealloc(http_counts, http_count_cap * sizeof *http_counts);
    }
    http_counts[http_count_len].route = sb_xstrdup(route);
    http_counts[http_count_len].status = status;
    http_counts[http_count_len].n = 1;
    http_count_len++;
}

void sb_metrics_outbound(int status)
{
    if (status < 0 || status >= OUTBOUND_SLOTS)
        status = 0;
    outbound[status]++;
}

static void label_value(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            evbuffer_add_printf(out, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, s, 1);
    }
}

void sb_metrics_render(struct evbuffer *out)
{
    size_t i;
    evbuffer_add_printf(out,
        "# HELP switchboard_http_requests_total HTTP requests answered, by route pattern and status.\n"
        "# TYPE switchboard_http_requests_total counter\n");
    for (i = 0; i < http_count_len; i++) {
        evbuffer_add_printf(out, "switchboard_http_requests_total{route=\"");
        label_value(out, http_counts[i].route);
        evbuffer_add_printf(out, "\",status=\"%d\"} %llu\n", http_counts[i].status, http_counts[i].n);
    }
    evbuffer_add_printf(out,
        "# HELP switchboard_http_connections Client connections open (capped by http.max_connections).\n"
        "# TYPE switchboard_http_connections gauge\n"
        "switchboard_http_connections %zu\n"
        "# HELP switchboard_http_connections_shed_total Connections closed to stay under the cap.\n"
        "# TYPE switchboard_http_connections_shed_total counter\n"
        "switchboard_http_connections_shed_total %llu\n"
        "# HELP switchboard_jobs_in_flight Jobs (requests, timers) running or waiting.\n"
        "# TYPE switchboard_jobs_in_flight gauge\n"
        "switchboard_jobs_in_flight %zu\n"
        "# HELP switchboard_lua_errors_total Jobs that ended with a Lua error.\n"
        "# TYPE switchboard_lua_errors_total counter\n"
        "switchboard_lua_errors_total %llu\n"
        "# HELP switchboard_budget_kills_total Jobs stopped for exceeding a budget.\n"
        "# TYPE switchboard_budget_kills_total counter\n"
        "switchboard_budget_kills_total{reason=\"cpu\"} %llu\n"
        "switchboard_budget_kills_total{reason=\"memory\"} %llu\n"
        "switchboard_budget_kills_total{reason=\"deadline\"} %llu\n"
        "# HELP switchboard_reloads_total Script reloads, by result.\n"
        "# TYPE switchboard_reloads_total counter\n"
        "switchboard_reloads_total{result=\"ok\"} %llu\n"
        "switchboard_reloads_total{result=\"failed\"} %llu\n"
        "# HELP switchboard_runtime_generation Generation of the Lua runtime serving now.\n"
        "# TYPE switchboard_runtime_generation gauge\n"
        "switchboard_runtime_generation %u\n"
        "# HELP switchboard_runtimes_live Lua runtimes alive (current plus retired ones with jobs).\n"
        "# TYPE switchboard_runtimes_live gauge\n"
        "switchboard_runtimes_live %d\n"
        "# HELP switchboard_timers_pending Timers waiting to fire.\n"
        "# TYPE switchboard_timers_pending gauge\n"
        "switchboard_timers_pending %zu\n",
        sb_conn_open(), sb_conn_shed_total(), sb_jobs_in_flight(), sb_counters.lua_errors,
        sb_counters.kills_cpu, sb_counters.kills_memory, sb_counters.kills_deadline,
        sb_counters.reloads_ok, sb_counters.reloads_failed,
        sb_runtime_current() ? sb_runtime_current()->generation : 0u,
        sb_runtimes_live(), sb_timers_pending());
    {
        const struct sb_outbox_counters *o = sb_outbox_counters();
        const struct store_stats *st = store_stats();
        evbuffer_add_printf(out,
            "# HELP switchboard_outbox_pending Outbox entries not yet delivered or dead.\n"
            "# TYPE switchboard_outbox_pending gauge\n"
            "switchboard_outbox_pending %zu\n"
            "# HELP switchboard_outbox_in_flight Outbox deliveries being attempted.\n"
            "# TYPE switchboard_outbox_in_flight gauge\n"
            "switchboard_outbox_in_flight %zu\n"
            "# HELP switchboard_outbox_delivered_total Outbox entries delivered.\n"
            "# TYPE switchboard_outbox_delivered_total counter\n"
            "switchboard_outbox_delivered_total %llu\n"
            "# HELP switchboard_outbox_retried_total Failed outbox attempts scheduled again.\n"
            "# TYPE switchboard_outbox_retried_total counter\n"
            "switchboard_outbox_retried_total %llu\n"
            "# HELP switchboard_outbox_dead_total Outbox entries dead-lettered.\n"
            "# TYPE switchboard_outbox_dead_total counter\n"
            "switchboard_outbox_dead_total %llu\n"
            "# HELP switchboard_store_batches_total Store transactions (group commits).\n"
            "# TYPE switchboard_store_batches_total counter\n"
            "switchboard_store_batches_total %llu\n"
            "# HELP switchboard_store_writes_total Store write operations.\n"
            "# TYPE switchboard_store_writes_total counter\n"
            "switchboard_store_writes_total %llu\n"
            "# HELP switchboard_store_reads_total Store reads.\n"
            "# TYPE switchboard_store_reads_total counter\n"
            "switchboard_store_reads_total %llu\n"
            "# HELP switchboard_store_failures_total Store transactions that failed.\n"
            "# TYPE switchboard_store_failures_total counter\n"
            "switchboard_store_failures_total %llu\n"
            "# HELP switchboard_conversations Conversations known, and those not closed.\n"
            "# TYPE switchboard_conversations gauge\n"
            "switchboard_conversations{state=\"all\"} %zu\n"
            "switchboard_conversations{state=\"open\"} %zu\n",
            o->pending, o->in_flight, o->delivered, o->retried, o->dead,
            (unsigned long long)st->batches, (unsigned long long)st->writes, (unsigned long long)st->reads,
            (unsigned long long)st->failures, sb_conv_count(), sb_conv_open_count());
    }
    evbuffer_add_printf(out,
        "# HELP switchboard_outbound_requests_total Outbound HTTP requests, by status (error: no response).\n"
        "# TYPE switchboard_outbound_requests_total counter\n");
    for (i = 0; i < OUTBOUND_SLOTS; i++) {
        if (!outbound[i])
            continue;
        if (i == 0)
            evbuffer_add_printf(out, "switchboard_outbound_requests_total{status=\"error\"} %llu\n", outbound[i]);
        else
            evbuffer_add_printf(out, "switchboard_outbound_requests_total{status=\"%zu\"} %llu\n", i, outbound[i]);
    }
}

void sb_metrics_free(void)
{
    size_t i;
    for (i = 0; i < http_count_len; i++)
        free(http_counts[i].route);
    free(http_counts);
    http_counts = NULL;
    http_count_len = http_count_cap = 0;
}
