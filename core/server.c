#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "conn.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "runtime.h"
#include "store.h"
#include "util.h"

static struct evhttp *http;
static struct evhttp_bound_socket *listener;
static sb_reload_fn reload_fn;
static sb_dispatch_fn dispatch;
static int shutting_down;
static size_t requests_open;
/* >0 while we write a reply ourselves: output added at other times comes
 * from evhttp's own error pages (see rewrite_error_page). */
static int own_output;
static int rewriting;

size_t sb_server_requests_open(void) { return requests_open; }

void sb_server_request_gone(void)
{
    if (requests_open > 0)
        requests_open--;
}

/* Requests answered, by route pattern and status. Label sets are few
 * (registered routes x statuses): a flat array that grows stays small. */
struct http_count {
    char *route;
    int status;
    unsigned long long n;
};

static struct http_count *http_counts;
static size_t http_count_len, http_count_cap;

void sb_server_count_reply(const char *route, int status)
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

static void render_metrics(struct evbuffer *out)
{
    size_t i;
    sb_metrics_family(out, "switchboard_http_requests_total", "counter",
                      "HTTP requests answered, by route pattern and status.");
    for (i = 0; i < http_count_len; i++) {
        evbuffer_add_printf(out, "switchboard_http_requests_total{route=\"");
        sb_metrics_label_value(out, http_counts[i].route);
        evbuffer_add_printf(out, "\",status=\"%d\"} %llu\n", http_counts[i].status, http_counts[i].n);
    }
}

int sb_server_listen_fd(void)
{
    return listener ? (int)evhttp_bound_socket_get_fd(listener) : -1;
}

void sb_error_json(struct evbuffer *out, const char *code, const char *message)
{
    evbuffer_add_printf(out, "{\"error\":{\"code\":");
    sb_json_quote(out, code, strlen(code));
    evbuffer_add_printf(out, ",\"message\":");
    sb_json_quote(out, message, strlen(message));
    evbuffer_add_printf(out, "}}");
}

/* Sends the reply and counts it. Takes the body buffer's contents. */
static void send_reply(struct evhttp_request *req, int status, const char *route, struct evbuffer *body)
{
    if (shutting_down)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    own_output++;
    evhttp_send_reply(req, status, sb_http_reason(status), body);
    own_output--;
    sb_server_count_reply(route, status);
}

static void send_json(struct evhttp_request *req, int status, const char *route, struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    send_reply(req, status, route, body);
}

static void send_error(struct evhttp_request *req, int status, const char *route, const char *code,
                       const char *message)
{
    struct evbuffer *b = evbuffer_new();
    sb_error_json(b, code, message);
    send_json(req, status, route, b);
    evbuffer_free(b);
}

/* libevent 2.1 answers some requests itself, before any callback of ours
 * runs (body or headers over the limit, unparsable request line, method it
 * does not know) with a fixed HTML page and no hook to change it. Each
 * connection's output buffer is watched: when evhttp adds such a page
 * outside one of our replies, it is replaced in place by the JSON error of
 * the same status. The page is the last thing written on that connection
 * (evhttp closes it afterwards), and its HTML body arrives in one piece
 * right after its headers. */
static void rewrite_error_page(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    static const char marker[] = "<HTML><HEAD>";
    struct evbuffer_ptr body_at, from, found;
    struct evbuffer *keep, *json;
    char probe[sizeof marker - 1], line[16];
    size_t len, body_start;
    ev_ssize_t head_start = -1;
    int status;
    const char *code, *message;

    if (own_output || rewriting || info->n_added < sizeof probe)
        return;
    len = evbuffer_get_length(buf);
    body_start = len - info->n_added;
    if (evbuffer_ptr_set(buf, &body_at, body_start, EVBUFFER_PTR_SET) ||
        evbuffer_copyout_from(buf, &body_at, probe, sizeof probe) != (ev_ssize_t)sizeof probe ||
        memcmp(probe, marker, sizeof probe) != 0)
        return;
    evbuffer_ptr_set(buf, &from, 0, EVBUFFER_PTR_SET);
    for (;;) {
        found = evbuffer_search_range(buf, "HTTP/1.", 7, &from, &body_at);
        if (found.pos < 0)
            break;
        head_start = found.pos;
        if (evbuffer_ptr_set(buf, &from, (size_t)found.pos + 1, EVBUFFER_PTR_SET))
            break;
    }
    if (head_start < 0)
        return;
    evbuffer_ptr_set(buf, &from, (size_t)head_start, EVBUFFER_PTR_SET);
    memset(line, 0, sizeof line);
    if (evbuffer_copyout_from(buf, &from, line, 12) != 12 || sscanf(line + 9, "%3d", &status) != 1)
        return;
    line[8] = '\0';  /* "HTTP/1.x" */

    /* evhttp answers 400 for a head over the limit as for a malformed one */
    if (status == 400 && sb_conn_oversize_status(arg))
        status = sb_conn_oversize_status(arg);
    switch (status) {
    case 413:
        code = "payload_too_large";
        message = "request body exceeds http.max_body_bytes";
        break;
    case 414:
        code = "uri_too_long";
        message = "request line exceeds http.max_header_bytes";
        break;
    case 431:
        code = "headers_too_large";
        message = "request headers exceed http.max_header_bytes";
        break;
    case 417:
        code = "expectation_failed";
        message = "only Expect: 100-continue is supported";
        break;
    case 405:
        code = "method_not_allowed";
        message = "method not supported";
        break;
    case 501:
        code = "not_implemented";
        message = "method not implemented";
        break;
    case 400:
        code = "bad_request";
        message = "malformed HTTP request";
        break;
    default:
        code = status >= 500 ? "internal_error" : "bad_request";
        message = sb_http_reason(status);
        break;
    }
    json = evbuffer_new();
    sb_error_json(json, code, message);
    keep = evbuffer_new();
    rewriting = 1;
    evbuffer_remove_buffer(buf, keep, (size_t)head_start);
    evbuffer_drain(buf, evbuffer_get_length(buf));
    evbuffer_add_buffer(buf, keep);
    evbuffer_add_printf(buf, "%s %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n", line, status, sb_http_reason(status),
                        evbuffer_get_length(json));
    evbuffer_add_buffer(buf, json);
    rewriting = 0;
    evbuffer_free(keep);
    evbuffer_free(json);
    sb_server_count_reply("rejected", status);
}

static struct bufferevent *make_connection_bev(struct event_base *base, void *arg)
{
    /* no BEV_OPT_CLOSE_ON_FREE: evhttp then closes the socket as it frees
     * the connection, not later from the loop, so shedding at the cap
     * gives the file back at once */
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    (void)arg;
    if (bev) {
        evbuffer_add_cb(bufferevent_get_output(bev), rewrite_error_page, bev);
        sb_conn_accepted(bev);
    }
    return bev;
}

/* Built-in endpoints */

static void handle_healthz(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    struct sb_runtime *rt = sb_runtime_current();
    evbuffer_add_printf(b, "{\"status\":\"%s\",\"generation\":%u}", shutting_down ? "stopping" : "ok",
                        rt ? rt->generation : 0u);
    send_json(req, 200, "/healthz", b);
    evbuffer_free(b);
}

static void handle_metrics(struct evhttp_request *req)
{
    struct evbuffer *b = evbuffer_new();
    sb_metrics_render(b);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4");
    send_reply(req, 200, "/metrics", b);
    evbuffer_free(b);
}

/* Returns 1 if the request carries "Authorization: Bearer <expected>";
 * otherwise answers 401/403 itself and returns 0. */
static int check_bearer(struct evhttp_request *req, const char *expected, const char *route)
{
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!expected) {
        send_error(req, 403, route, "forbidden", "no token is configured for this endpoint");
        return 0;
    }
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 ||
        !sb_secret_equal(auth + 7, strlen(auth + 7), expected, strlen(expected))) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        send_error(req, 401, route, "unauthorized", "missing or wrong bearer token");
        return 0;
    }
    return 1;
}

static void handle_reload(struct evhttp_request *req)
{
    struct sb_runtime *rt = sb_runtime_current();
    struct sb_error err;
    struct evbuffer *b;
    unsigned gen;
    if (!check_bearer(req, rt->cfg->admin_token, "/admin/reload"))
        return;
    memset(&err, 0, sizeof err);
    gen = reload_fn(&err);
    b = evbuffer_new();
    if (gen) {
        evbuffer_add_printf(b, "{\"generation\":%u}", gen);
        send_json(req, 200, "/admin/reload", b);
    } else {
        evbuffer_add_printf(b, "{\"error\":{\"code\":\"reload_failed\",\"message\":");
        sb_json_quote(b, err.message, strlen(err.message));
        evbuffer_add_printf(b, ",\"file\":");
        sb_json_quote(b, err.file, strlen(err.file));
        evbuffer_add_printf(b, ",\"line\":%d}}", err.line);
        send_json(req, 422, "/admin/reload", b);
    }
    evbuffer_free(b);
}

/* Replies of script routes */

/* A reply held until the store batch it depends on is committed: nothing
 * is acknowledged before it is durable. */
struct held_reply {
    struct evhttp_request *req;
    int status;
    char route[160];
    struct evbuffer *body;
};

static void release_reply(void *arg, int ok)
{
    struct held_reply *h = arg;
    if (ok) {
        send_reply(h->req, h->status, h->route, h->body);
    } else {
        evhttp_clear_headers(evhttp_request_get_output_headers(h->req));
        send_error(h->req, 503, h->route, "store_unavailable", "the data could not be stored: retry later");
    }
    evbuffer_free(h->body);
    free(h);
}

void sb_server_reply(struct evhttp_request *req, const char *route, int status, struct evbuffer *body, uint64_t seq)
{
    struct held_reply *h;
    if (seq == 0) {
        send_reply(req, status, route, body);
        return;
    }
    h = sb_xcalloc(1, sizeof *h);
    h->req = req;
    h->status = status;
    snprintf(h->route, sizeof h->route, "%s", route);
    h->body = evbuffer_new();
    evbuffer_add_buffer(h->body, body);
    store_when_committed(seq, release_reply, h);   /* at once if it finished */
}

void sb_server_error(struct evhttp_request *req, const char *route, int status, const char *code,
                     const char *message)
{
    send_error(req, status, route, code, message);
}

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

static void request_completed(struct evhttp_request *req, void *arg)
{
    (void)arg;
    sb_conn_request_end(req);
    if (requests_open > 0)
        requests_open--;
}

static int builtin(struct evhttp_request *req, const char *method, const char *path)
{
    static const struct {
        const char *path, *method;
        void (*fn)(struct evhttp_request *);
    } table[] = {
        { "/healthz", "GET", handle_healthz },
        { "/metrics", "GET", handle_metrics },
        { "/admin/reload", "POST", handle_reload },
    };
    size_t i;
    for (i = 0; i < sizeof table / sizeof *table; i++) {
        if (strcmp(path, table[i].path) != 0)
            continue;
        if (strcmp(method, table[i].method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(table[i].method, "GET") == 0)) {
            table[i].fn(req);
        } else {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", table[i].method);
            send_error(req, 405, table[i].path, "method_not_allowed", "method not allowed on this path");
        }
        return 1;
    }
    return 0;
}

/* evhttp's generic callback: every request that parsed ends up here and
 * must eventually get evhttp_send_reply (directly or when its job ends). */
static void on_request(struct evhttp_request *req, void *arg)
{
    const char *method = method_name(evhttp_request_get_command(req));
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    struct sb_runtime *rt = sb_runtime_current();
    struct sb_route_match m;
    char allow[128];
    int path_known;
    const char *bad_framing;
    size_t i;
    (void)arg;

    requests_open++;
    evhttp_request_set_on_complete_cb(req, request_completed, NULL);
    sb_conn_request_begin(req);
    if (!path || !*path)
        path = "/";
    if ((bad_framing = sb_http_framing_error(evhttp_request_get_input_headers(req))) != NULL) {
        /* where this request ends is in doubt: the connection cannot go on */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        send_error(req, 400, "rejected", "bad_request", bad_framing);
        return;
    }
    if (shutting_down) {
        send_error(req, 503, "unmatched", "shutting_down", "the server is stopping");
        return;
    }
    if (builtin(req, method, path))
        return;
    if (!sb_runtime_match(rt, method, path, &m, &path_known, allow, sizeof allow)) {
        if (path_known) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
            send_error(req, 405, "unmatched", "method_not_allowed", "method not allowed on this path");
        } else {
            send_error(req, 404, "unmatched", "not_found", "no route for this path");
        }
        return;
    }
    for (i = 0; i < m.nparams; i++) {
        if (m.value_lens[i] > SB_ROUTE_PARAM_MAX) {
            send_error(req, 414, m.route->pattern, "uri_too_long", "a path parameter is longer than 1023 bytes");
            return;
        }
    }
    dispatch(rt, &m, req, method, path);
}

void sb_server_configure(const struct sb_config *cfg)
{
    evhttp_set_max_body_size(http, cfg->max_body_bytes);
    evhttp_set_max_headers_size(http, cfg->max_header_bytes);
    evhttp_set_timeout(http, cfg->idle_timeout);
    sb_conn_configure(cfg);
}

int sb_server_start(const struct sb_config *cfg, sb_reload_fn reload, sb_dispatch_fn dispatch_fn)
{
    reload_fn = reload;
    dispatch = dispatch_fn;
    sb_metrics_register(render_metrics);
    http = evhttp_new(sb_base);
    if (!http)
        return -1;
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
    evhttp_set_default_content_type(http, "application/json");
    evhttp_set_bevcb(http, make_connection_bev, NULL);
    evhttp_set_gencb(http, on_request, NULL);
    sb_server_configure(cfg);
    listener = evhttp_bind_socket_with_handle(http, cfg->listen_host, (ev_uint16_t)cfg->listen_port);
    if (!listener)
        return -1;
    sb_conn_listen(evhttp_bound_socket_get_listener(listener));
    return 0;
}

void sb_server_stop_accepting(void)
{
    shutting_down = 1;
    sb_conn_stop_accepting();
    if (listener) {
        evhttp_del_accept_socket(http, listener);
        listener = NULL;
    }
}

void sb_server_free(void)
{
    size_t i;
    if (http)
        evhttp_free(http);
    http = NULL;
    for (i = 0; i < http_count_len; i++)
        free(http_counts[i].route);
    free(http_counts);
    http_counts = NULL;
    http_count_len = http_count_cap = 0;
    sb_conn_free();
}
