/* switchboard: live-chat handoff and routing engine. Process set-up, the
 * reload sequence, signals and the graceful stop. */
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "bind_route.h"
#include "bindings.h"
#include "bus.h"
#include "config.h"
#include "conn.h"
#include "conv.h"
#include "counters.h"
#include "handler_use.h"
#include "httpclient.h"
#include "job.h"
#include "kvstate.h"
#include "loader.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "offline.h"
#include "outbox.h"
#include "runtime.h"
#include "schedule.h"
#include "server.h"
#include "sse.h"
#include "store.h"
#include "timer.h"
#include "txn.h"
#include "util.h"

#define DEFAULT_CONFIG "examples/switchboard.conf.lua"
#define DRAIN_POLL_MS 20
#define FLUSH_GRACE 1.0   /* seconds to let written replies leave after the last job */

struct event_base *sb_base;

static const char *config_path = DEFAULT_CONFIG;
static struct sb_overrides overrides;
static unsigned generation;
static double stop_deadline;
static double jobs_drained_at;
static int grace_over;
static struct event *drain_ev;
static struct event *sweep_ev;
static unsigned long long reloads_ok, reloads_failed;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: switchboard [-c FILE] [--listen HOST:PORT] [--data-dir DIR]\n"
            "       switchboard --check [-c FILE]\n"
            "       switchboard test [-c FILE] [PATH...]\n"
            "       switchboard --version\n"
            "  -c, --config FILE   Lua config file (default " DEFAULT_CONFIG ")\n"
            "  --listen HOST:PORT  override the listen address\n"
            "  --data-dir DIR      override the data folder\n"
            "  --check             load config and every script as a reload would, print ok or errors\n"
            "  test [PATH...]      load as --check, then run the spec files at PATH (files, or folders\n"
            "                      searched for *_spec.lua; default: the rules folder) through rules_spec.run\n"
            "  --version           print the version\n");
}

/* Settings of the conversation layer and the core that a reload may change. */
static void apply_settings(const struct sb_config *cfg)
{
    struct sb_outbox_settings os;
    struct sb_conv_settings cs;
    struct sb_bus_settings bs;
    os.max_attempts = cfg->outbox_max_attempts;
    os.max_age = cfg->outbox_max_age;
    os.backoff_base = cfg->outbox_backoff_base;
    os.backoff_max = cfg->outbox_backoff_max;
    os.concurrency = cfg->outbox_concurrency;
    os.timeout = cfg->outbox_timeout;
    os.keep_delivered = cfg->keep_delivered;
    os.keep_dead = cfg->keep_dead;
    sb_outbox_configure(&os);
    cs.recent_messages = cfg->recent_messages;
    cs.dedupe_window = cfg->dedupe_window;
    cs.idle_unload = cfg->memory_idle;
    sb_conv_configure(&cs);
    bs.concurrency = cfg->events_concurrency;
    bs.max_attempts = cfg->events_max_attempts;
    bs.retry_max = cfg->events_retry_max;
    bs.keep_cursors = cfg->events_keep_cursors;
    sb_bus_configure(&bs);
    sb_timers_configure(cfg->timer_retry_max);
    sb_log_set_level(cfg->log_level);
    sb_httpclient_configure(cfg->http_client_max_response, cfg->http_client_max_connections);
}

/* Secrets of outbound calls come from the config serving now, so a reload
 * rotates them for calls still waiting in the outbox. */
static char *resolve_secret(const char *path)
{
    struct sb_runtime *rt = sb_runtime_current();
    return rt ? sb_config_secret(rt->cfg, path) : NULL;
}

static void log_load_failure(const char *what, const struct sb_error *err)
{
    char line[16];
    snprintf(line, sizeof line, "%d", err->line);
    sb_log(SB_LOG_ERROR, what, "file", err->file, "line", line, "error", err->message, NULL);
}

/* The reload sequence: build and check the new runtime fully; only then
 * swap it in, arm its load-time timers and apply the live settings. On any
 * error the running runtime is untouched. */
static unsigned reload(struct sb_error *err)
{
    struct sb_runtime *rt, *old = sb_runtime_current();
    struct sb_txn *txn = NULL;
    char gen_s[16];
    rt = sb_load_build(config_path, &overrides, generation + 1, &txn, err, NULL);
    if (!rt) {
        reloads_failed++;
        log_load_failure("reload failed", err);
        return 0;
    }
    if (strcmp(rt->cfg->listen_host, old->cfg->listen_host) != 0 || rt->cfg->listen_port != old->cfg->listen_port)
        sb_log(SB_LOG_WARN, "listen address changed in config: takes effect at restart", NULL);
    if (strcmp(rt->cfg->data_dir, old->cfg->data_dir) != 0)
        sb_log(SB_LOG_WARN, "data_dir changed in config: takes effect at restart", NULL);
    generation++;
    if (strcmp(rt->cfg->store_sync, old->cfg->store_sync) != 0)
        sb_log(SB_LOG_WARN, "store.sync changed in config: takes effect at restart", NULL);
    sb_runtime_swap(rt);
    sb_timers_commit_load(generation);
    sb_bus_commit_load(generation);
    sb_txn_end(txn);
    apply_settings(rt->cfg);
    sb_server_configure(rt->cfg);
    sb_sse_configure(rt->cfg);
    reloads_ok++;
    snprintf(gen_s, sizeof gen_s, "%u", generation);
    sb_log(SB_LOG_INFO, "reload ok", "generation", gen_s, NULL);
    return generation;
}

static void on_sighup(evutil_socket_t fd, short what, void *arg)
{
    struct sb_error err;
    (void)fd;
    (void)what;
    (void)arg;
    memset(&err, 0, sizeof err);
    reload(&err);
}

static void drain_check(evutil_socket_t fd, short what, void *arg)
{
    double now = sb_now_mono();
    struct timeval tv = { 0, DRAIN_POLL_MS * 1000 };
    (void)fd;
    (void)what;
    (void)arg;
    if (sb_jobs_in_flight() == 0 && (grace_over || sb_outbox_counters()->in_flight == 0)) {
        if (jobs_drained_at == 0)
            jobs_drained_at = now;
        if (sb_server_requests_open() == 0 || now - jobs_drained_at > FLUSH_GRACE) {
            event_base_loopexit(sb_base, NULL);
            return;
        }
    } else if (now > stop_deadline) {
        char n[24], d[24];
        snprintf(n, sizeof n, "%zu", sb_jobs_in_flight());
        snprintf(d, sizeof d, "%zu", sb_outbox_counters()->in_flight);
        sb_log(SB_LOG_WARN, "shutdown grace over: stopping remaining jobs and deliveries", "jobs", n,
               "deliveries", d, NULL);
        grace_over = 1;
        sb_outbox_stop();
        sb_jobs_abort_all();
    }
    evtimer_add(drain_ev, &tv);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)arg;
    if (drain_ev)
        return; /* already stopping */
    sb_log(SB_LOG_INFO, "stopping", "signal", what == SIGINT ? "INT" : "TERM", NULL);
    sb_server_stop_accepting();
    sb_sse_close_all();
    sb_timers_pause();
    sb_outbox_pause();
    sb_bus_pause();
    stop_deadline = sb_now_mono() + sb_runtime_current()->cfg->shutdown_grace;
    drain_ev = evtimer_new(sb_base, drain_check, NULL);
    drain_check(-1, 0, NULL);
}

static void arm_sweep(const struct sb_config *cfg)
{
    struct timeval tv = sb_timeval(cfg->maintenance_interval);
    evtimer_add(sweep_ev, &tv);
}

/* Expired state, idle conversations out of memory, retention in the store. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    const struct sb_config *cfg = sb_runtime_current()->cfg;
    arm_sweep(cfg);
    double now = sb_now_wall();
    (void)fd;
    (void)what;
    (void)arg;
    sb_kv_sweep();
    if (sb_conv_sweep() > 0) {
        /* idle conversations held only by script handles no one can reach */
        sb_runtime_collect();
        sb_conv_sweep();
    }
    sb_outbox_sweep();
    sb_bus_sweep();
    store_submit_system(store_prune_keys(now - cfg->dedupe_window, 5000));
    if (cfg->keep_closed > 0)
        store_submit_system(store_prune_conversations(now - cfg->keep_closed, 500));
}

static void render_metrics(struct evbuffer *out)
{
    struct mallinfo2 mi = mallinfo2();
    sb_metrics_gauge(out, "switchboard_memory_heap_bytes", "Heap memory in use (malloc), SQLite's included.",
                     (double)mi.uordblks + (double)mi.hblkhd);
    sb_metrics_family(out, "switchboard_reloads_total", "counter", "Script reloads, by result.");
    evbuffer_add_printf(out, "switchboard_reloads_total{result=\"ok\"} %llu\n"
                             "switchboard_reloads_total{result=\"failed\"} %llu\n", reloads_ok, reloads_failed);
}

static int ensure_dir(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -1;
    return mkdir(path, 0750);
}

/* Opens the store under the config's data_dir, loads what must be in
 * memory (pending outbox windows, state, timers; conversations come on
 * demand) and starts the store thread. */
static int start_store(const struct sb_config *cfg, struct sb_error *err)
{
    enum store_sync sync = STORE_SYNC_FULL;
    char n[24], o[24];
    if (ensure_dir(cfg->data_dir) != 0) {
        sb_error_set(err, cfg->data_dir, 0, "cannot create data_dir");
        return -1;
    }
    store_parse_sync(cfg->store_sync, &sync);
    if (store_open(cfg->data_dir, sync, err) != 0)
        return -1;
    sb_txn_init();
    apply_settings(cfg);
    if (sb_conv_start() || sb_outbox_load() || sb_kv_load() || sb_timers_load() || sb_bus_load()) {
        sb_error_set(err, cfg->data_dir, 0, "cannot load the store");
        return -1;
    }
    if (store_start() != 0) {
        sb_error_set(err, cfg->data_dir, 0, "cannot start the store thread");
        return -1;
    }
    snprintf(n, sizeof n, "%zu", sb_conv_count());
    snprintf(o, sizeof o, "%zu", sb_conv_open_count());
    sb_log(SB_LOG_INFO, "store loaded", "conversations", n, "open", o, "sync", cfg->store_sync, NULL);
    return 0;
}

static void log_listening(void)
{
    /* The port may have been 0 (ephemeral): report the one we got. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char addr[INET6_ADDRSTRLEN + 8], host[INET6_ADDRSTRLEN];
    int fd = sb_server_listen_fd();
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        snprintf(addr, sizeof addr, "[%s]:%d", host, ntohs(s6->sin6_port));
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        snprintf(addr, sizeof addr, "%s:%d", host, ntohs(s4->sin_port));
    }
    sb_log(SB_LOG_INFO, "listening", "addr", addr, "version", SB_VERSION, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "listen", required_argument, NULL, 'l' },
        { "data-dir", required_argument, NULL, 'd' },
        { "check", no_argument, NULL, 'k' },
        { "version", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct sb_error err;
    struct sb_config *cfg;
    struct sb_runtime *rt;
    struct event *ev_hup = NULL, *ev_term = NULL, *ev_int = NULL;
    int c, check = 0, test = 0, rc = 1;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'l': overrides.listen = optarg; break;
        case 'd': overrides.data_dir = optarg; break;
        case 'k': check = 1; break;
        case 'v': printf("switchboard %s\n", SB_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "switchboard: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc && strcmp(argv[optind], "test") == 0 && !check)
        test = 1;
    else if (optind < argc) {
        fprintf(stderr, "switchboard: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    sb_conn_route_libevent_logs();
    sb_schedule_pin_tz();   /* before the store thread and curl's resolver threads exist */
    if (check)
        return sb_offline_check(config_path, &overrides);
    if (test)
        return sb_offline_test(config_path, &overrides, argv + optind + 1, argc - optind - 1);

    signal(SIGPIPE, SIG_IGN);
    sb_base = event_base_new();
    if (!sb_base) {
        fputs("switchboard: cannot create the event loop\n", stderr);
        return 1;
    }
    memset(&err, 0, sizeof err);
    if (sb_httpclient_init() != 0) {
        sb_log(SB_LOG_ERROR, "cannot initialise the HTTP client", NULL);
        goto out;
    }
    generation = 1;
    /* One config read serves the store and the first runtime. */
    cfg = sb_config_load(config_path, &overrides, &err);
    if (!cfg) {
        log_load_failure("load failed", &err);
        goto out;
    }
    if (start_store(cfg, &err) != 0) {
        log_load_failure("store failed", &err);
        sb_config_unref(cfg);
        goto out;
    }
    sb_jobs_init();
    sb_bindings_runners();
    sb_runtime_register_metrics();
    sb_metrics_register(render_metrics);
    sb_outbox_set_secret_resolver(resolve_secret);
    {
        struct sb_txn *txn = sb_txn_new();
        rt = sb_load_runtime(cfg, generation, txn, &err, NULL);
        sb_config_unref(cfg);
        if (!rt) {
            sb_txn_abort(txn);
            log_load_failure("load failed", &err);
            goto out;
        }
        sb_runtime_swap(rt);
        sb_timers_commit_load(generation);
        sb_bus_commit_load(generation);
        sb_txn_end(txn);
    }
    apply_settings(rt->cfg);
    if (sb_server_start(rt->cfg, reload, sb_route_dispatch) != 0) {
        char port[16];
        snprintf(port, sizeof port, "%d", rt->cfg->listen_port);
        sb_log(SB_LOG_ERROR, "cannot listen", "host", rt->cfg->listen_host, "port", port, NULL);
        goto out;
    }
    sb_sse_configure(rt->cfg);
    log_listening();
    sb_outbox_start();
    sb_bus_start();

    ev_hup = evsignal_new(sb_base, SIGHUP, on_sighup, NULL);
    ev_term = evsignal_new(sb_base, SIGTERM, on_sigterm, NULL);
    ev_int = evsignal_new(sb_base, SIGINT, on_sigterm, NULL);
    evsignal_add(ev_hup, NULL);
    evsignal_add(ev_term, NULL);
    evsignal_add(ev_int, NULL);
    sweep_ev = event_new(sb_base, -1, 0, on_sweep, NULL);
    arm_sweep(rt->cfg);

    event_base_dispatch(sb_base);
    sb_log(SB_LOG_INFO, "stopped", NULL);
    rc = 0;
out:
    sb_outbox_stop();
    sb_jobs_abort_all();
    sb_bus_pause();       /* the cursors' last writes go with the store's last batch */
    store_close();        /* commits what is pending; held replies go out */
    sb_sse_close_all();
    sb_bus_free_all();
    sb_server_free();
    sb_timers_free_all();
    sb_runtime_swap(NULL);
    sb_outbox_free_all();
    sb_handler_uses_free();
    sb_conv_free_all();
    sb_httpclient_shutdown();
    sb_kv_free_all();
    sb_counters_free_all();
    sb_jobs_free();
    sb_metrics_free();
    if (ev_hup)
        event_free(ev_hup);
    if (ev_term)
        event_free(ev_term);
    if (ev_int)
        event_free(ev_int);
    if (sweep_ev)
        event_free(sweep_ev);
    if (drain_ev)
        event_free(drain_ev);
    event_base_free(sb_base);
    return rc;
}
