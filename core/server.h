/* The HTTP server: built-in endpoints, routes registered by scripts, and
 * JSON errors for everything that goes wrong, including the errors libevent
 * itself answers (oversized or malformed requests). */
#ifndef SB_SERVER_H
#define SB_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct evbuffer;

/* Performs a reload for POST /admin/reload; returns the new generation, or
 * 0 with err filled. */
typedef unsigned (*sb_reload_fn)(struct sb_error *err);

/* Runs a script route for a request (bind_route.c); it must answer
 * through sb_server_reply or sb_server_error, exactly once. */
struct sb_runtime;
struct sb_route_match;
struct evhttp_request;
typedef void (*sb_dispatch_fn)(struct sb_runtime *rt, const struct sb_route_match *m, struct evhttp_request *req,
                               const char *method, const char *path);

int sb_server_start(const struct sb_config *cfg, sb_reload_fn reload, sb_dispatch_fn dispatch);
/* Sends a script's reply (the body buffer's contents are taken), held
 * until store batch seq is committed (then 503 store_unavailable if it
 * failed). Headers were added to the request's output headers. */
void sb_server_reply(struct evhttp_request *req, const char *route, int status, struct evbuffer *body,
                     uint64_t seq);
void sb_server_error(struct evhttp_request *req, const char *route, int status, const char *code,
                     const char *message);
/* Applies limits/timeouts of a newly loaded config. */
void sb_server_configure(const struct sb_config *cfg);
/* Shutdown, step 1: closes the listening socket; open connections get 503. */
void sb_server_stop_accepting(void);
/* Requests received whose reply has not been fully written yet. */
size_t sb_server_requests_open(void);
/* A request whose connection went away while its reply was streamed:
 * evhttp never completes it. */
void sb_server_request_gone(void);
/* Counts a reply in switchboard_http_requests_total (one sent other than
 * through sb_server_reply / sb_server_error: a stream). */
void sb_server_count_reply(const char *route, int status);
/* The listening socket (to report an ephemeral port), or -1. */
int sb_server_listen_fd(void);
void sb_server_free(void);

/* Formats {"error":{"code":...,"message":...}}; exposed for tests. */
void sb_error_json(struct evbuffer *out, const char *code, const char *message);

#endif
