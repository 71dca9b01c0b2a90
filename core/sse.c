/* Event streams (sse.h): a stream is a reply started with
 * evhttp_send_reply_start and fed one chunk per event by its bus reader.
 *
 * Pacing: the reader takes events only while less than a quarter of
 * events.stream_buffer_bytes waits to be sent, and is woken when the
 * connection's output has drained; a client that does not keep up falls
 * behind and catches up from the journal, without memory growing. A stream
 * that still has more than events.stream_buffer_bytes unsent when the next
 * chunk is due (events larger than that, a client that stopped reading) is
 * closed; so is one whose client reads nothing for http.idle_timeout (the
 * write timeout). The client sends nothing while it streams, so there is
 * no read timeout.
 *
 * Ending: evhttp detaches the request when the client goes and frees the
 * connection; conn.c tells us first (sb_conn_watch_close), and a detached
 * request is ours to free (evhttp_send_reply_end). At the graceful stop
 * every stream ends with the last chunk and the connection closes. */
#include "sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "bus.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "server.h"
#include "store.h"
#include "util.h"

#define BATCH 64                 /* events a stream takes at once, at most */
#define RETRY_MS 3000            /* the reconnection delay suggested to clients */

struct stream {
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct sb_sse_request *r;
    struct sb_bus_reader *reader;
    int bounds_pending;          /* the journal's bounds are being read */
    int dropped;                 /* gone while they were: freed when they come */
    int closing;                 /* in the close list */
    struct stream *prev, *next, *next_close;
};

static struct stream *streams, *close_head;
static size_t nstreams;
static int stream_max = 64, stopping;
static long buffer_max = 1 << 20;
static double heartbeat = 15, write_timeout = 60;
static struct event *heartbeat_ev, *close_ev;
static unsigned long long refused, closed_slow;

size_t sb_sse_open(void) { return nstreams; }

void sb_sse_request_free(struct sb_sse_request *r)
{
    if (!r)
        return;
    sb_bus_filter_free(r->filter);
    free(r);
}

static size_t unsent(const struct stream *s)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(s->evcon);
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

/* Forgetting a stream */

static void stream_free(struct stream *s)
{
    sb_sse_request_free(s->r);
    free(s);
}

/* Takes s out of the lists; its request is no longer touched. */
static void stream_drop(struct stream *s)
{
    struct stream **p;
    if (s->prev)
        s->prev->next = s->next;
    else
        streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    nstreams--;
    if (s->closing)
        for (p = &close_head; *p; p = &(*p)->next_close)
            if (*p == s) {
                *p = s->next_close;
                break;
            }
    sb_bus_reader_free(s->reader);
    s->reader = NULL;
    if (s->bounds_pending)
        s->dropped = 1;
    else
        stream_free(s);
}

/* conn.c: the client went (or the connection is being freed). */
static void conn_gone(void *arg)
{
    struct stream *s = arg;
    /* a request evhttp detached from its failed connection is ours to free */
    if (!evhttp_request_get_connection(s->req))
        evhttp_send_reply_end(s->req);
    sb_server_request_gone();
    stream_drop(s);
}

/* The last chunk; the connection closes once it is written. */
static void end_clean(struct stream *s)
{
    sb_conn_watch_close(s->evcon, NULL, NULL);
    evhttp_send_reply_end(s->req);
    stream_drop(s);
}

static void close_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    while (close_head) {
        struct stream *s = close_head;
        struct evhttp_connection *evcon = s->evcon;
        close_head = s->next_close;
        s->closing = 0;
        sb_conn_watch_close(evcon, NULL, NULL);
        stream_drop(s);
        sb_server_request_gone();
        evhttp_connection_free(evcon);   /* frees the request with it */
    }
}

/* Closes a stream whose client does not keep up, from the loop. */
static void close_slow(struct stream *s, size_t waiting)
{
    char n[24];
    if (s->closing)
        return;
    closed_slow++;
    snprintf(n, sizeof n, "%zu", waiting);
    sb_log(SB_LOG_WARN, "event stream closed: its client does not keep up", "unsent_bytes", n, NULL);
    s->closing = 1;
    s->next_close = close_head;
    close_head = s;
    if (!close_ev)
        close_ev = event_new(sb_base, -1, 0, close_due, NULL);
    event_active(close_ev, 0, 0);
}

/* Writing */

static void drained(struct evhttp_connection *evcon, void *arg)
{
    struct stream *s = arg;
    (void)evcon;
    if (s->reader)
        sb_bus_reader_kick(s->reader);
}

/* The unsent output that makes a stream stop taking events. */
static size_t low_water(void) { return (size_t)buffer_max / 4; }

static void send_chunk(struct stream *s, struct evbuffer *b)
{
    size_t waiting = unsent(s);
    if (s->closing)
        return;
    if ((long)waiting > buffer_max) {
        close_slow(s, waiting);
        return;
    }
    evhttp_send_reply_chunk_with_cb(s->req, b, drained, s);
}

static void send_text(struct stream *s, const char *text)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, text, strlen(text));
    send_chunk(s, b);
    evbuffer_free(b);
}

/* The stream as a reader of the bus */

static int stream_room(void *arg)
{
    struct stream *s = arg;
    return !s->closing && unsent(s) < low_water() ? BATCH : 0;
}

static int stream_wants(void *arg, const struct sb_bus_event *ev)
{
    struct stream *s = arg;
    return sb_bus_filter_match(s->r->filter, ev);
}

static int stream_take(void *arg, struct sb_bus_event *ev)
{
    struct stream *s = arg;
    struct evbuffer *b = evbuffer_new();
    /* the event's JSON holds no raw line break: one data line */
    evbuffer_add_printf(b, "id: %lld\nevent: %s\ndata: ", (long long)ev->id, ev->name);
    evbuffer_add(b, ev->json, ev->json_len);
    evbuffer_add(b, "\n\n", 2);
    send_chunk(s, b);
    evbuffer_free(b);
    return !s->closing && unsent(s) < low_water();
}

static const struct sb_bus_reader_ops stream_ops = { stream_room, stream_wants, stream_take };

/* Tells the client its position moved: what it asked for is not there. */
static void send_reset(struct stream *s, const char *reason, int64_t asked, int64_t from)
{
    char text[256];
    snprintf(text, sizeof text,
             "id: %lld\nevent: reset\ndata: {\"reason\":\"%s\",\"last_event_id\":%lld,\"resume_after\":%lld}\n\n",
             (long long)from, reason, (long long)asked, (long long)from);
    send_text(s, text);
}

/* Resuming: the journal's oldest and newest ids say whether the client's
 * last event is still followed by everything after it. */
static void bounds_read(void *arg, const struct store_rows *rows, const char *error)
{
    struct stream *s = arg;
    int64_t after = s->r->after, head = sb_bus_head();
    s->bounds_pending = 0;
    if (s->dropped) {
        stream_free(s);
        return;
    }
    if (!error && store_rows_count(rows) == 1) {
        struct store_row row;
        int64_t oldest;
        store_rows_get(rows, 0, &row, NULL);
        oldest = (int64_t)row.num[0];
        if (after > head) {
            send_reset(s, "unknown_id", after, head);
            after = head;
        } else if (oldest > 0 && after + 1 < oldest) {
            send_reset(s, "expired", after, oldest - 1);
            after = oldest - 1;
        }
    }
    s->reader = sb_bus_reader_new(after, &stream_ops, s);
}

static void beat(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s, *next;
    (void)fd;
    (void)what;
    (void)arg;
    for (s = streams; s; s = next) {
        next = s->next;
        send_text(s, ": keep-alive\n\n");
    }
}

static void arm_heartbeat(void)
{
    struct timeval tv = sb_timeval(heartbeat);
    if (!heartbeat_ev)
        heartbeat_ev = event_new(sb_base, -1, EV_PERSIST, beat, NULL);
    event_add(heartbeat_ev, &tv);
}

void sb_sse_start(struct evhttp_request *req, const char *route, struct sb_sse_request *r)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    struct bufferevent *bev;
    struct stream *s;
    char retry[32];
    if (stopping || !evcon) {
        sb_server_error(req, route, 503, "shutting_down", "the server is stopping");
        sb_sse_request_free(r);
        return;
    }
    if (nstreams >= (size_t)stream_max) {
        refused++;
        evhttp_add_header(oh, "Retry-After", "5");
        sb_server_error(req, route, 503, "too_many_streams", "events.stream_max streams are open: retry later");
        sb_sse_request_free(r);
        return;
    }
    evhttp_add_header(oh, "Content-Type", "text/event-stream");
    evhttp_add_header(oh, "Cache-Control", "no-store");
    evhttp_add_header(oh, "X-Accel-Buffering", "no");
    /* nothing may follow a stream on its connection */
    evhttp_add_header(oh, "Connection", "close");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        evhttp_send_reply(req, 200, "OK", NULL);
        sb_server_count_reply(route, 200);
        sb_sse_request_free(r);
        return;
    }
    s = sb_xcalloc(1, sizeof *s);
    s->req = req;
    s->evcon = evcon;
    s->r = r;
    s->next = streams;
    if (streams)
        streams->prev = s;
    streams = s;
    nstreams++;
    evhttp_send_reply_start(req, 200, "OK");
    sb_server_count_reply(route, 200);
    if (sb_conn_watch_close(evcon, conn_gone, s) != 0) {
        end_clean(s);
        return;
    }
    bev = evhttp_connection_get_bufferevent(evcon);
    if (bev) {
        struct timeval wt = sb_timeval(write_timeout);
        bufferevent_set_timeouts(bev, NULL, &wt);
    }
    snprintf(retry, sizeof retry, "retry: %d\n\n", RETRY_MS);
    send_text(s, retry);
    if (!heartbeat_ev || !event_pending(heartbeat_ev, EV_TIMEOUT, NULL))
        arm_heartbeat();
    if (r->after >= 0) {
        s->bounds_pending = 1;
        store_fetch_event_bounds(bounds_read, s);
    } else {
        s->reader = sb_bus_reader_new(sb_bus_head(), &stream_ops, s);
    }
}

void sb_sse_close_all(void)
{
    stopping = 1;
    while (streams)
        end_clean(streams);
    if (heartbeat_ev)
        event_free(heartbeat_ev);
    if (close_ev)
        event_free(close_ev);
    heartbeat_ev = close_ev = NULL;
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_event_streams_open", "Event streams (GET /v1/events/stream) open.",
                     (double)nstreams);
    sb_metrics_counter(out, "switchboard_event_streams_refused_total",
                       "Event streams refused because events.stream_max were open.", refused);
    sb_metrics_counter(out, "switchboard_event_streams_closed_slow_total",
                       "Event streams closed because their client did not keep up.", closed_slow);
}

void sb_sse_configure(const struct sb_config *cfg)
{
    static int registered;
    double old = heartbeat;
    stream_max = cfg->events_stream_max;
    buffer_max = cfg->events_stream_buffer;
    heartbeat = cfg->events_stream_heartbeat;
    write_timeout = cfg->idle_timeout;
    if (heartbeat != old && heartbeat_ev && nstreams > 0)
        arm_heartbeat();
    if (!registered) {
        sb_metrics_register(render_metrics);
        registered = 1;
    }
}
