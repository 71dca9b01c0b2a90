/* Process-wide counters rendered in Prometheus text format on /metrics. */
#ifndef SB_METRICS_H
#define SB_METRICS_H

struct evbuffer;

struct sb_counters {
    unsigned long long lua_errors;
    unsigned long long kills_cpu;
    unsigned long long kills_memory;
    unsigned long long kills_deadline;
    unsigned long long reloads_ok;
    unsigned long long reloads_failed;
};

extern struct sb_counters sb_counters;

/* route is the registered pattern (or "unmatched"); it is copied. */
void sb_metrics_http(const char *route, int status);
/* status 0 means the request failed before any HTTP status arrived. */
void sb_metrics_outbound(int status);
void sb_metrics_render(struct evbuffer *out);
void sb_metrics_free(void);

#endif
