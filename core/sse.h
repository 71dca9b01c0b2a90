/* GET /v1/events/stream: engine events as Server-Sent Events (docs/events.md).
 * The route is a script's (scripts/api.lua authenticates and checks the
 * query); what it returns (events.stream{...}) makes the server keep the
 * connection and stream: a reader of the bus per stream, paced by what the
 * client reads, a comment line when quiet, resumed after Last-Event-ID. */
#ifndef SB_SSE_H
#define SB_SSE_H

#include <stddef.h>
#include <stdint.h>

struct evhttp_request;
struct sb_bus_filter;
struct sb_config;

struct sb_sse_request {
    struct sb_bus_filter *filter;
    int64_t after;               /* the last event the client has (Last-Event-ID), or -1: from now on */
};
void sb_sse_request_free(struct sb_sse_request *r);

/* Answers req with a stream (taking r), or with 503 when events.stream_max
 * streams are open or the server is stopping. */
void sb_sse_start(struct evhttp_request *req, const char *route, struct sb_sse_request *r);
/* events.stream_max, stream_buffer_bytes, stream_heartbeat; http.idle_timeout. */
void sb_sse_configure(const struct sb_config *cfg);
/* Graceful stop: every stream ends cleanly now; none starts any more. */
void sb_sse_close_all(void);
size_t sb_sse_open(void);

#endif
