/* The daemon's configuration: a Lua file returning a table, evaluated in its
 * own sandboxed state. The parsed values live in struct sb_config; the table
 * itself is kept so every runtime can get a read-only copy as `config`. */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stddef.h>

#include "log.h"
#include "util.h"

struct lua_State;

enum sb_script_dir { SB_DIR_SCRIPTS, SB_DIR_PROVIDERS, SB_DIR_RULES, SB_DIR_COUNT };

struct sb_config {
    int refs;
    char *path;
    char *listen_host;
    int listen_port;
    char *data_dir;
    enum sb_log_level log_level;
    char *admin_token;              /* NULL: admin endpoints answer 403 */
    char *api_token;                /* NULL: API endpoints answer 403 */
    char *dirs[SB_DIR_COUNT];
    long max_body_bytes;
    long max_header_bytes;
    int idle_timeout;               /* seconds */
    int http_max_connections;       /* as configured; conn.c clamps it to the open files limit */
    size_t lua_memory_limit;        /* bytes per runtime */
    double cpu_ms_per_resume;
    double cpu_ms_per_job;
    double job_timeout;             /* seconds, wall clock */
    double shutdown_grace;          /* seconds */
    long http_client_max_response;  /* bytes */
    int http_client_max_connections;
    char **module_dirs;             /* extra folders `require` searches (paths.modules) */
    int nmodule_dirs;
    char *store_sync;               /* "full" | "normal" | "off" */
    int recent_messages;
    double memory_idle;             /* seconds an unused conversation stays in memory */
    double dedupe_window;
    char *timezone;                 /* IANA name of calendar timers' default zone */
    double timer_retry_max;         /* seconds between attempts of a failing one-shot, at most */
    double keep_closed;             /* retention of closed conversations; 0: forever */
    double keep_delivered;          /* retention of delivered outbox entries; 0: none */
    double keep_dead;               /* retention of dead letters */
    double maintenance_interval;    /* seconds between sweeps (expiry, unloading, retention) */
    long max_text_bytes;
    int outbox_max_attempts;
    double outbox_max_age, outbox_backoff_base, outbox_backoff_max, outbox_timeout;
    int outbox_concurrency;
    int events_concurrency;         /* event handler jobs at once */
    int events_max_attempts;        /* of a failing handler, before the event is dead */
    double events_retry_max;        /* seconds between two attempts, at most */
    double events_keep_cursors;     /* seconds a subscriber no load declares keeps its cursor */
    int events_stream_max;          /* open SSE streams */
    long events_stream_buffer;      /* bytes of unsent output before a stream is closed */
    double events_stream_heartbeat; /* seconds between two comment lines on a quiet stream */
    size_t metrics_max_series;      /* series of metrics.count in all, every family */
    struct lua_State *L;            /* owns the config table (registry ref table_ref) */
    int table_ref;
};

/* Command-line values that win over the file (NULL: not given). */
struct sb_overrides {
    const char *listen;
    const char *data_dir;
};

struct sb_config *sb_config_load(const char *path, const struct sb_overrides *ov, struct sb_error *err);
void sb_config_ref(struct sb_config *cfg);
void sb_config_unref(struct sb_config *cfg);

/* Pushes onto L a read-only deep copy of the config table.
 * Stack: [-0, +1]. Raises a Lua error only on memory exhaustion. */
void sb_config_push_view(const struct sb_config *cfg, struct lua_State *L);

/* Marks the metatables of the read-only view (the sandbox's rawset refuses them). */
#define SB_CONFIG_READONLY_MARK "__sb_readonly"

/* The value at a dotted path under channels., desks. or bots. (a secret
 * for an outbound call), malloc'ed; NULL when absent or elsewhere. */
char *sb_config_secret(const struct sb_config *cfg, const char *path);

/* Splits "host:port" or "[v6]:port"; returns 0 or -1. host is malloc'ed. */
int sb_parse_listen(const char *s, char **host, int *port);

#endif
