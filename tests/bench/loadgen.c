/* Benchmark load generator and callback receiver in one process (one
 * clock for both ends). Closed loop: each of N connections sends the next
 * POST as soon as the previous one is answered. With --callback-port it
 * also serves the webhook channel's callback_url and measures, for each
 * message, the time from sending the client message to receiving the bot's
 * reply at the callback. --count N stops after N requests were answered.
 * Prints one line of key=value results. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#define MAX_MESSAGES (8 * 1024 * 1024)

static struct event_base *base;
static const char *host = "127.0.0.1", *path = "/", *secret;
static int port, connections = 32, clients = 1000;
static double duration = 10, drain = 10;
static double t_start, t_end;
static uint64_t next_seq, acked, acked_in_window, failed, count_limit;
static double *sent_at;           /* by sequence number */
static double *latencies;
static uint64_t nlat, delivered_in_window;
static int stopping;
static char padding[300];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct conn {
    struct evhttp_connection *evcon;
};

static void send_next(struct conn *c);

static void on_response(struct evhttp_request *req, void *arg)
{
    struct conn *c = arg;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    double t = now();
    if (code >= 200 && code < 300) {
        acked++;
        if (t <= t_end)
            acked_in_window++;
    } else {
        failed++;
    }
    if (!stopping && t < t_end && (!count_limit || next_seq < count_limit))
        send_next(c);
    else if (count_limit && acked + failed >= count_limit)
        event_base_loopexit(base, NULL);   /* every request of the count answered */
}

static void send_next(struct conn *c)
{
    struct evhttp_request *req = evhttp_request_new(on_response, c);
    struct evbuffer *b = evhttp_request_get_output_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    uint64_t seq = next_seq++;
    char auth[256];
    if (seq < MAX_MESSAGES)
        sent_at[seq] = now();
    evbuffer_add_printf(b, "{\"client_id\":\"client-%06llu\",\"text\":\"bench %llu %s\",\"message_id\":\"m-%llu\"}",
                        (unsigned long long)(seq % (uint64_t)clients), (unsigned long long)seq, padding,
                        (unsigned long long)seq);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (secret) {
        snprintf(auth, sizeof auth, "Bearer %s", secret);
        evhttp_add_header(h, "Authorization", auth);
    }
    evhttp_make_request(c->evcon, req, EVHTTP_REQ_POST, path);
}

/* The callback receiver: finds "bench <seq>" in the body. */
static void on_callback(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char *body = malloc(n + 1), *p;
    double t = now();
    (void)arg;
    evbuffer_copyout(in, body, n);
    body[n] = '\0';
    p = strstr(body, "bench ");
    if (p) {
        unsigned long long seq = strtoull(p + 6, NULL, 10);
        if (seq < MAX_MESSAGES && seq < next_seq) {
            latencies[nlat++] = t - sent_at[seq];
            if (t <= t_end)
                delivered_in_window++;
        }
    }
    free(body);
    evhttp_send_reply(req, 200, "OK", NULL);
}

static void on_window_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    stopping = 1;
}

static void on_drain_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    event_base_loopexit(base, NULL);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double p)
{
    size_t i;
    if (!nlat)
        return 0;
    i = (size_t)(p * (double)(nlat - 1));
    return latencies[i] * 1000.0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "port", required_argument, NULL, 'p' }, { "path", required_argument, NULL, 'a' },
        { "secret", required_argument, NULL, 's' }, { "connections", required_argument, NULL, 'c' },
        { "duration", required_argument, NULL, 'd' }, { "callback-port", required_argument, NULL, 'b' },
        { "clients", required_argument, NULL, 'k' }, { "drain", required_argument, NULL, 'r' },
        { "count", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 },
    };
    struct conn *conns;
    struct evhttp *cb_server = NULL;
    struct timeval tv;
    int o, i, callback_port = 0;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'a': path = optarg; break;
        case 's': secret = optarg; break;
        case 'c': connections = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'b': callback_port = atoi(optarg); break;
        case 'k': clients = atoi(optarg); break;
        case 'r': drain = atof(optarg); break;
        case 'n': count_limit = strtoull(optarg, NULL, 10); break;
        default: fprintf(stderr, "bad option\n"); return 2;
        }
    }
    memset(padding, 'x', 230);
    sent_at = calloc(MAX_MESSAGES, sizeof *sent_at);
    latencies = calloc(MAX_MESSAGES, sizeof *latencies);
    base = event_base_new();
    if (callback_port) {
        cb_server = evhttp_new(base);
        evhttp_set_gencb(cb_server, on_callback, NULL);
        if (evhttp_bind_socket(cb_server, "127.0.0.1", (ev_uint16_t)callback_port) != 0) {
            perror("callback bind");
            return 1;
        }
    }
    conns = calloc((size_t)connections, sizeof *conns);
    t_start = now();
    t_end = t_start + duration;
    for (i = 0; i < connections && (!count_limit || next_seq < count_limit); i++) {
        conns[i].evcon = evhttp_connection_base_new(base, NULL, host, (ev_uint16_t)port);
        send_next(&conns[i]);
    }
    tv.tv_sec = (time_t)duration;
    tv.tv_usec = (suseconds_t)((duration - (double)tv.tv_sec) * 1e6);
    event_base_once(base, -1, EV_TIMEOUT, on_window_end, NULL, &tv);
    tv.tv_sec = (time_t)(duration + (callback_port ? drain : 1));
    event_base_once(base, -1, EV_TIMEOUT, on_drain_end, NULL, &tv);
    event_base_dispatch(base);
    qsort(latencies, nlat, sizeof *latencies, cmp_double);
    printf("sent=%llu acked=%llu failed=%llu acked_per_s=%.0f delivered=%llu delivered_per_s=%.0f"
           " p50_ms=%.2f p99_ms=%.2f\n",
           (unsigned long long)next_seq, (unsigned long long)acked, (unsigned long long)failed,
           (double)acked_in_window / duration, (unsigned long long)nlat, (double)delivered_in_window / duration,
           pct(0.50), pct(0.99));
    for (i = 0; i < connections; i++)
        if (conns[i].evcon)
            evhttp_connection_free(conns[i].evcon);
    free(conns);
    if (cb_server)
        evhttp_free(cb_server);
    event_base_free(base);
    free(sent_at);
    free(latencies);
    return 0;
}
