#include "conn.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "util.h"

/* Pauses of accept() after a failure: short at first, since the files may
 * come back as soon as a transfer ends; doubled while failures keep
 * coming, so a process out of files does not spin on its listener. */
#define ACCEPT_PAUSE_MIN 0.05
#define ACCEPT_PAUSE_MAX 1.0
#define ACCEPT_BACKOFF_RESET 5.0 /* seconds without failure before the pause shrinks again */
#define WARN_EVERY 10.0          /* seconds between two lines about the same trouble */

struct sb_conn;
TAILQ_HEAD(conn_list, sb_conn);

struct sb_conn {
    TAILQ_ENTRY(sb_conn) link;
    struct conn_list *in;              /* pending, fresh or idle; NULL while busy */
    struct bufferevent *bev;
    struct evhttp_connection *evcon;   /* known once attached */
    int fd;
    int busy;                          /* requests handed to us, reply not yet written */
    void (*closed_fn)(void *arg);      /* told when the connection goes (a stream) */
    void *closed_arg;
    struct evbuffer_cb_entry *scan_cb;
    struct sb_head_scan scan;
};

/* pending: accepted, evhttp not yet done setting the connection up.
 * doomed: pending, and to be closed as soon as that is done.
 * fresh: no request dispatched yet (half-open, or still sending one), oldest first.
 * idle: keep-alive connections between requests, longest idle first.
 * Shedding takes from fresh (then pending) before idle: a client that has
 * completed a request is worth more than one that has not said anything. */
static struct conn_list pending = TAILQ_HEAD_INITIALIZER(pending);
static struct conn_list doomed = TAILQ_HEAD_INITIALIZER(doomed);
static struct conn_list fresh = TAILQ_HEAD_INITIALIZER(fresh);
static struct conn_list idle = TAILQ_HEAD_INITIALIZER(idle);

/* evhttp gives no way to hang our data on its connection; a socket is
 * unique while open, so connections are found by their descriptor. */
static struct sb_conn **by_fd;
static size_t by_fd_len;

static size_t n_open, n_doomed;
static unsigned long long shed_total, shed_logged;
static long cap = 4096;
static size_t max_header = 16384;
static struct event *attach_ev;
static struct sb_conn *closing;
static double last_shed_log;
static int shed_log_once;

static struct evconnlistener *listener;
static struct event *resume_ev;
static double pause_s, last_accept_failure, last_accept_log;
static unsigned long accept_failures;
static int accept_log_once;

static double le_window;
static int le_count;
static unsigned long le_suppressed;

size_t sb_conn_open(void) { return n_open; }
unsigned long long sb_conn_shed_total(void) { return shed_total; }
long sb_conn_cap(void) { return cap; }

/* libevent's log lines */

static enum sb_log_level libevent_level(int severity)
{
    switch (severity) {
    case EVENT_LOG_DEBUG: return SB_LOG_DEBUG;
    case EVENT_LOG_MSG: return SB_LOG_INFO;
    case EVENT_LOG_WARN: return SB_LOG_WARN;
    default: return SB_LOG_ERROR;
    }
}

static void log_suppressed(void)
{
    char msg[64];
    if (!le_suppressed)
        return;
    snprintf(msg, sizeof msg, "suppressed %lu libevent messages", le_suppressed);
    sb_log(SB_LOG_WARN, msg, "source", "libevent", NULL);
    le_suppressed = 0;
}

void sb_libevent_log_at(double now, int severity, const char *msg)
{
    enum sb_log_level level = libevent_level(severity);
    if (!sb_log_enabled(level))
        return;
    if (now - le_window >= 1.0 || now < le_window) {
        log_suppressed();
        le_window = now;
        le_count = 0;
    }
    if (le_count >= SB_LIBEVENT_LOG_BURST) {
        le_suppressed++;
        return;
    }
    le_count++;
    sb_log(level, msg ? msg : "", "source", "libevent", NULL);
}

/* libevent forbids calling back into it from here; sb_log only writes. */
static void libevent_log(int severity, const char *msg)
{
    sb_libevent_log_at(sb_now_mono(), severity, msg);
}

void sb_conn_route_libevent_logs(void)
{
    event_set_log_callback(libevent_log);
}

/* A count held back is reported with the next libevent line; this also
 * reports it when libevent has gone quiet and a second has passed. */
static void flush_libevent_suppressed(void)
{
    if (le_suppressed && sb_now_mono() - le_window >= 1.0)
        log_suppressed();
}

/* The cap */

long sb_conn_effective_cap(long configured, long nofile, long reserve)
{
    long avail = nofile - reserve;
    if (avail < SB_CONN_MIN_CAP)
        avail = SB_CONN_MIN_CAP;
    return configured < avail ? configured : avail;
}

static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur != RLIM_INFINITY && (rl.rlim_max == RLIM_INFINITY || rl.rlim_cur < rl.rlim_max)) {
        char from[24], to[24];
        rlim_t old = rl.rlim_cur;
        /* an unlimited hard limit is still bounded by the kernel's nr_open */
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;
        snprintf(from, sizeof from, "%llu", (unsigned long long)old);
        snprintf(to, sizeof to, "%llu", (unsigned long long)rl.rlim_cur);
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            sb_log(SB_LOG_INFO, "open files limit raised", "from", from, "to", to, NULL);
        } else {
            sb_log(SB_LOG_WARN, "cannot raise the open files limit", "limit", from, "error", strerror(errno), NULL);
            rl.rlim_cur = old;
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)LONG_MAX)
        return LONG_MAX;
    return (long)rl.rlim_cur;
}

void sb_conn_configure(const struct sb_config *cfg)
{
    static long nofile = -1;
    static int logged;
    long reserve, eff;
    if (nofile < 0)
        nofile = raise_nofile();
    reserve = SB_CONN_RESERVE_BASE + cfg->http_client_max_connections + cfg->outbox_concurrency;
    eff = sb_conn_effective_cap(cfg->http_max_connections, nofile, reserve);
    if (!logged || eff != cap) {
        char c[24], e[24], n[24], r[24];
        snprintf(c, sizeof c, "%d", cfg->http_max_connections);
        snprintf(e, sizeof e, "%ld", eff);
        snprintf(n, sizeof n, "%ld", nofile);
        snprintf(r, sizeof r, "%ld", reserve);
        sb_log(eff < cfg->http_max_connections ? SB_LOG_WARN : SB_LOG_INFO,
               eff < cfg->http_max_connections ? "connection cap lowered to fit the open files limit"
                                               : "connection cap",
               "max_connections", c, "effective", e, "open_files_limit", n, "reserve", r, NULL);
        logged = 1;
    }
    cap = eff;
    max_header = cfg->max_header_bytes > 0 ? (size_t)cfg->max_header_bytes : 0;
}

/* Tracking */

static struct sb_conn *slot_get(int fd)
{
    return fd >= 0 && (size_t)fd < by_fd_len ? by_fd[fd] : NULL;
}

static void slot_set(int fd, struct sb_conn *c)
{
    if ((size_t)fd >= by_fd_len) {
        size_t n = by_fd_len ? by_fd_len : 256;
        while (n <= (size_t)fd)
            n *= 2;
        by_fd = sb_xrealloc(by_fd, n * sizeof *by_fd);
        memset(by_fd + by_fd_len, 0, (n - by_fd_len) * sizeof *by_fd);
        by_fd_len = n;
    }
    by_fd[fd] = c;
}

static void unlist(struct sb_conn *c)
{
    if (c->in)
        TAILQ_REMOVE(c->in, c, link);
    c->in = NULL;
}

static void enlist(struct sb_conn *c, struct conn_list *l)
{
    unlist(c);
    c->in = l;
    TAILQ_INSERT_TAIL(l, c, link);
}

/* Only while evhttp still holds the connection (its close callback). */
static void conn_gone(struct sb_conn *c)
{
    if (c->closed_fn) {
        void (*fn)(void *) = c->closed_fn;
        c->closed_fn = NULL;
        fn(c->closed_arg);
    }
    if (c->scan_cb)
        evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->scan_cb);
    unlist(c);
    if (slot_get(c->fd) == c)
        by_fd[c->fd] = NULL;
    n_open--;
    free(c);
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    struct sb_conn *c = arg;
    (void)evcon;
    if (c == closing)
        closing = NULL;
    conn_gone(c);
}

static void shed(struct sb_conn *c)
{
    double now = sb_now_mono();
    shed_total++;
    if (!shed_log_once || now - last_shed_log >= WARN_EVERY) {
        char capv[24], n[24];
        snprintf(capv, sizeof capv, "%ld", cap);
        snprintf(n, sizeof n, "%llu", shed_total - shed_logged);
        sb_log(SB_LOG_WARN, "connection cap reached: closing connections with no request in progress",
               "cap", capv, "closed", n, NULL);
        shed_logged = shed_total;
        last_shed_log = now;
        shed_log_once = 1;
    }
    closing = c;
    evhttp_connection_free(c->evcon);
    /* evhttp reports the close only for a connection it thinks is up */
    if (closing == c) {
        closing = NULL;
        conn_gone(c);
    }
}

static void scan_from(struct sb_head_scan *s, struct evbuffer *buf, size_t from)
{
    size_t len = evbuffer_get_length(buf);
    while (from < len && s->phase < 2) {
        struct evbuffer_ptr pos;
        struct evbuffer_iovec v[4];
        int n, i;
        if (evbuffer_ptr_set(buf, &pos, from, EVBUFFER_PTR_SET) != 0)
            return;
        n = evbuffer_peek(buf, (ev_ssize_t)(len - from), &pos, v, 4);
        if (n <= 0)
            return;
        for (i = 0; i < n && i < 4 && from < len; i++) {
            size_t take = v[i].iov_len < len - from ? v[i].iov_len : len - from;
            sb_head_scan_feed(s, v[i].iov_base, take);
            from += take;
        }
    }
}

/* Runs as bytes arrive, before evhttp parses them, so when evhttp gives
 * up on a head the scan already knows how long it was. */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct sb_conn *c = arg;
    if (info->n_added == 0 || c->scan.phase >= 2)
        return;
    scan_from(&c->scan, buf, evbuffer_get_length(buf) - info->n_added);
}

/* evhttp sets its callbacks, with the evhttp_connection as their argument,
 * only after our bevcb returns; this runs once the accept callback is
 * over. */
static void attach_pending(void)
{
    struct sb_conn *c;
    while ((c = TAILQ_FIRST(&pending)) != NULL || (c = TAILQ_FIRST(&doomed)) != NULL) {
        bufferevent_data_cb readcb = NULL;
        void *evcon = NULL;
        struct bufferevent *bev = c->bev;
        int fd, doom = c->in == &doomed;
        unlist(c);
        if (doom)
            n_doomed--;
        bufferevent_getcb(bev, &readcb, NULL, NULL, &evcon);
        fd = (int)bufferevent_getfd(bev);
        if (!readcb || !evcon || fd < 0) {
            /* evhttp dropped it already: our reference kept bev valid */
            n_open--;
            free(c);
            bufferevent_decref(bev);
            continue;
        }
        c->evcon = evcon;
        c->fd = fd;
        evhttp_connection_set_closecb(c->evcon, on_close, c);
        slot_set(fd, c);
        c->scan_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
        enlist(c, &fresh);
        bufferevent_decref(bev);
        if (doom)
            shed(c);
    }
}

/* evhttp is still setting c up: it is closed once that is done. */
static void doom(struct sb_conn *c)
{
    enlist(c, &doomed);
    n_doomed++;
}

static void on_attach(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    attach_pending();
}

void sb_conn_accepted(struct bufferevent *bev)
{
    struct sb_conn *c = sb_xcalloc(1, sizeof *c), *victim;
    c->bev = bev;
    c->fd = -1;
    bufferevent_incref(bev);
    enlist(c, &pending);
    n_open++;
    if ((long)(n_open - n_doomed) > cap) {
        struct sb_conn *older = TAILQ_FIRST(&pending);
        if ((victim = TAILQ_FIRST(&fresh)) != NULL)
            shed(victim);
        else if (older != c)
            doom(older);
        else if ((victim = TAILQ_FIRST(&idle)) != NULL)
            shed(victim);
        else
            doom(c);
    }
    if (!attach_ev)
        attach_ev = event_new(sb_base, -1, 0, on_attach, NULL);
    event_active(attach_ev, EV_TIMEOUT, 0);
}

static struct sb_conn *conn_of_evcon(struct evhttp_connection *evcon)
{
    struct bufferevent *bev;
    struct sb_conn *c;
    if (!evcon)
        return NULL;
    if (!TAILQ_EMPTY(&pending) || !TAILQ_EMPTY(&doomed))
        attach_pending();
    bev = evhttp_connection_get_bufferevent(evcon);
    c = bev ? slot_get((int)bufferevent_getfd(bev)) : NULL;
    return c && c->evcon == evcon ? c : NULL;
}

static struct sb_conn *conn_of(struct evhttp_request *req)
{
    return conn_of_evcon(evhttp_request_get_connection(req));
}

int sb_conn_watch_close(struct evhttp_connection *evcon, void (*fn)(void *arg), void *arg)
{
    struct sb_conn *c = conn_of_evcon(evcon);
    if (!c)
        return -1;
    c->closed_fn = fn;
    c->closed_arg = arg;
    return 0;
}

void sb_conn_request_begin(struct evhttp_request *req)
{
    struct sb_conn *c = conn_of(req);
    if (c && c->busy++ == 0)
        unlist(c);
}

void sb_conn_request_end(struct evhttp_request *req)
{
    struct sb_conn *c = conn_of(req);
    if (!c || c->busy == 0 || --c->busy > 0)
        return;
    enlist(c, &idle);
    /* the next request's bytes may already be waiting */
    sb_head_scan_reset(&c->scan);
    scan_from(&c->scan, bufferevent_get_input(c->bev), 0);
}

int sb_conn_oversize_status(struct bufferevent *bev)
{
    struct sb_conn *c = bev ? slot_get((int)bufferevent_getfd(bev)) : NULL;
    if (!c || c->bev != bev)
        return 0;
    return sb_head_scan_status(&c->scan, max_header);
}

/* accept() errors */

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (listener)
        evconnlistener_enable(listener);
    flush_libevent_suppressed();
}

/* Without this callback libevent logs every failed accept() and, the
 * listener staying readable, tries again at once: out of files, that is
 * millions of lines a minute and a loop that serves nobody. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    double now = sb_now_mono();
    struct timeval tv;
    (void)arg;
    evconnlistener_disable(lev);
    if (pause_s == 0 || now - last_accept_failure > ACCEPT_BACKOFF_RESET)
        pause_s = ACCEPT_PAUSE_MIN;
    else if ((pause_s *= 2) > ACCEPT_PAUSE_MAX)
        pause_s = ACCEPT_PAUSE_MAX;
    last_accept_failure = now;
    accept_failures++;
    if (!resume_ev)
        resume_ev = evtimer_new(sb_base, on_resume, NULL);
    tv = sb_timeval(pause_s);
    evtimer_add(resume_ev, &tv);
    if (!accept_log_once || now - last_accept_log >= WARN_EVERY) {
        char ms[24], n[24], open[24];
        snprintf(ms, sizeof ms, "%.0f", pause_s * 1000);
        snprintf(n, sizeof n, "%lu", accept_failures);
        snprintf(open, sizeof open, "%zu", n_open);
        sb_log(SB_LOG_WARN, "accept failed: new connections paused", "error", strerror(err), "pause_ms", ms,
               "failures", n, "connections", open, NULL);
        accept_failures = 0;
        last_accept_log = now;
        accept_log_once = 1;
    }
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_http_connections", "Client connections open (capped by http.max_connections).",
                     (double)sb_conn_open());
    sb_metrics_counter(out, "switchboard_http_connections_shed_total", "Connections closed to stay under the cap.",
                       sb_conn_shed_total());
}

void sb_conn_listen(struct evconnlistener *lev)
{
    sb_metrics_register(render_metrics);
    listener = lev;
    if (lev)
        evconnlistener_set_error_cb(lev, on_accept_error);
}

void sb_conn_stop_accepting(void)
{
    listener = NULL;
    if (resume_ev)
        evtimer_del(resume_ev);
}

void sb_conn_free(void)
{
    struct sb_conn *c;
    size_t i;
    while ((c = TAILQ_FIRST(&pending)) != NULL || (c = TAILQ_FIRST(&doomed)) != NULL) {
        struct bufferevent *bev = c->bev;
        unlist(c);
        free(c);
        bufferevent_decref(bev);
    }
    n_doomed = 0;
    /* evhttp_free closed every connection it had; anything left is ours */
    for (i = 0; i < by_fd_len; i++) {
        if (by_fd[i]) {
            unlist(by_fd[i]);
            free(by_fd[i]);
        }
    }
    free(by_fd);
    by_fd = NULL;
    by_fd_len = 0;
    n_open = 0;
    if (attach_ev)
        event_free(attach_ev);
    attach_ev = NULL;
    if (resume_ev)
        event_free(resume_ev);
    resume_ev = NULL;
    listener = NULL;
    log_suppressed();
}

/* Pure parts */

void sb_head_scan_reset(struct sb_head_scan *s)
{
    memset(s, 0, sizeof *s);
}

void sb_head_scan_feed(struct sb_head_scan *s, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end && s->phase < 2) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t chunk = (size_t)((nl ? nl : end) - p), len;
        if (chunk) {
            s->line += chunk;
            s->last = p[chunk - 1];
        }
        if (!nl)
            return;
        /* evhttp ends lines at LF, taking a CR before it as part of the end */
        len = s->line - (s->line && s->last == '\r');
        s->head += len;
        if (s->phase == 0) {
            s->line1 = len;
            s->phase = 1;
        } else if (len == 0) {
            s->phase = 2;
        }
        s->line = 0;
        s->last = '\n';
        p = nl + 1;
    }
}

int sb_head_scan_status(const struct sb_head_scan *s, size_t limit)
{
    size_t line1 = s->phase == 0 ? s->line : s->line1;
    size_t head = s->head + (s->phase < 2 ? s->line : 0);
    if (line1 > limit)
        return 414;
    if (head > limit)
        return 431;
    return 0;
}

static int all_digits(const char *v)
{
    if (!*v)
        return 0;
    for (; *v; v++)
        if (*v < '0' || *v > '9')
            return 0;
    return 1;
}

static int same_number(const char *a, const char *b)
{
    while (a[0] == '0' && a[1])
        a++;
    while (b[0] == '0' && b[1])
        b++;
    return strcmp(a, b) == 0;
}

/* True when the last transfer coding of a Transfer-Encoding value is
 * chunked: only then does the body have an end the server can find. */
static int ends_chunked(const char *v)
{
    const char *comma = strrchr(v, ',');
    size_t n;
    v = comma ? comma + 1 : v;
    v += strspn(v, " \t");
    n = strcspn(v, " \t;");
    return n == 7 && strncasecmp(v, "chunked", 7) == 0;
}

/* evhttp reads a body by the first Content-Length and ignores any other;
 * a proxy in front may have used another one, and whatever the two
 * disagree on would be read by us as the start of the next request. The
 * same goes for a body framed by a coding we cannot undo. */
const char *sb_http_framing_error(const struct evkeyvalq *headers)
{
    const struct evkeyval *kv;
    const char *length = NULL, *coding = NULL;
    TAILQ_FOREACH(kv, headers, next) {
        if (strcasecmp(kv->key, "Transfer-Encoding") == 0) {
            coding = kv->value;
        } else if (strcasecmp(kv->key, "Content-Length") == 0) {
            if (!all_digits(kv->value))
                return "invalid Content-Length";
            if (length && !same_number(length, kv->value))
                return "conflicting Content-Length headers";
            length = kv->value;
        }
    }
    if (coding && length)
        return "Content-Length together with Transfer-Encoding";
    if (coding && !ends_chunked(coding))
        return "Transfer-Encoding must end with chunked";
    return NULL;
}
