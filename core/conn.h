/* Connections of the HTTP server: the cap on how many are open and the
 * shedding of idle ones at the cap, pausing accept() when it fails,
 * libevent's own log lines, and the request checks that protect a
 * connection's framing (conflicting lengths, over-long parts).
 *
 * libevent 2.1 has no per-connection hook besides evhttp_set_bevcb, so
 * server.c calls in here at a few points: when a bufferevent is made for
 * a new connection, when a request is dispatched and when its reply has
 * left. */
#ifndef SB_CONN_H
#define SB_CONN_H

#include <stddef.h>

struct bufferevent;
struct evconnlistener;
struct evhttp_request;
struct evkeyvalq;
struct sb_config;

/* Longest route parameter, in raw (still percent-encoded) bytes. */
#define SB_ROUTE_PARAM_MAX 1023

/* Files kept aside from the connection cap: stdio, the store and its
 * journal, pipes, the event loop, signals. The outbound pool
 * (http_client.max_connections) and outbox.concurrency come on top. */
#define SB_CONN_RESERVE_BASE 32
/* The cap never goes below this, whatever the open-files limit. */
#define SB_CONN_MIN_CAP 8

/* Installs the libevent log callback; call before creating the loop. */
void sb_conn_route_libevent_logs(void);
/* Applies http.max_connections and http.max_header_bytes (start and
 * reload). The first call raises RLIMIT_NOFILE to its hard limit. */
void sb_conn_configure(const struct sb_config *cfg);
/* Watches the listener for accept() errors. */
void sb_conn_listen(struct evconnlistener *listener);
/* Shutdown: the listener is about to be freed. */
void sb_conn_stop_accepting(void);
/* After evhttp_free: drops what is left. */
void sb_conn_free(void);

/* From evhttp's bevcb: a connection was accepted; bev is its bufferevent. */
void sb_conn_accepted(struct bufferevent *bev);
/* A request was handed to us / its reply has been written (or dropped). */
void sb_conn_request_begin(struct evhttp_request *req);
void sb_conn_request_end(struct evhttp_request *req);

/* Calls fn(arg) once when the connection goes away, just before evhttp
 * frees it (a reply streamed over it must stop); fn NULL stops watching.
 * Returns -1 for a connection it does not know. */
struct evhttp_connection;
int sb_conn_watch_close(struct evhttp_connection *evcon, void (*fn)(void *arg), void *arg);

/* For an error page evhttp itself answers with 400: 414 when the request
 * line went over http.max_header_bytes, 431 when the whole head did, 0
 * when neither (a genuinely malformed request). */
int sb_conn_oversize_status(struct bufferevent *bev);

size_t sb_conn_open(void);
unsigned long long sb_conn_shed_total(void);
long sb_conn_cap(void);

/* Pure parts, exposed for unit tests. */

/* NULL when the request's framing headers are acceptable, else why not:
 * Content-Length must be digits, repeated ones must agree, it may not
 * come with Transfer-Encoding, and Transfer-Encoding must end with
 * chunked. */
const char *sb_http_framing_error(const struct evkeyvalq *headers);
long sb_conn_effective_cap(long configured, long nofile, long reserve);

/* How much of a request head has been seen; fed with the bytes as they
 * arrive, it stops at the blank line that ends the head. */
struct sb_head_scan {
    int phase;          /* 0: request line, 1: header lines, 2: head complete */
    char last;          /* previous byte, to leave a CR before LF uncounted */
    size_t line;        /* bytes of the line being read */
    size_t line1;       /* length of the request line once complete */
    size_t head;        /* bytes of the complete lines, line ends excluded */
};
void sb_head_scan_reset(struct sb_head_scan *s);
void sb_head_scan_feed(struct sb_head_scan *s, const char *p, size_t n);
/* 414, 431 or 0 as for sb_conn_oversize_status, against limit. */
int sb_head_scan_status(const struct sb_head_scan *s, size_t limit);

/* The libevent log callback with the clock given: at most
 * SB_LIBEVENT_LOG_BURST lines a second, then one line counting the rest. */
#define SB_LIBEVENT_LOG_BURST 10
void sb_libevent_log_at(double now, int severity, const char *msg);

#endif
