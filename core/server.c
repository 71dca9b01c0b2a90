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
#include <lauxlib.h>
#include <lua.h>

#include "conn.h"
#include "job.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "runtime.h"
#include "store.h"
#include "util.h"

static struct evhttp *http;
static struct evhttp_bound_socket *listener;
static sb_reload_fn reload_fn;
static int shutting_down;
static size_t requests_open;
/* >0 while we write a reply ourselves: output added at other times comes
 * from evhttp's own error pages (see rewrite_error_page). */
static int own_output;
static int rewriting;

size_t sb_server_requests_open(void) { return requests_open; }

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
    sb_metrics_http(route, status);
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
    sb_metrics_http("rejected", status);
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

/* Script routes */

/* A reply held until the store batch with the handler's writes commits:
 * nothing is acknowledged before it is durable. */
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

static void http_job_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    struct evhttp_request *req = job->owner;
    lua_State *co = job->co;
    struct evbuffer *b;
    const char *route = job->label;
    int base;

    if (out->result == SB_JOB_FAILED) {
        send_error(req, out->status, route, out->code ? out->code : "error",
                   out->message ? out->message : sb_http_reason(out->status));
        return;
    }
    /* run_route returned: status, body, content type or nil, headers */
    base = lua_gettop(co) - out->nresults;
    {
        int status = (int)lua_tointeger(co, base + 1);
        size_t len;
        const char *body = lua_tolstring(co, base + 2, &len);
        const char *ctype = lua_tostring(co, base + 3);
        struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
        if (lua_istable(co, base + 4)) {
            lua_pushnil(co);
            while (lua_next(co, base + 4)) {
                const char *k = lua_tostring(co, -2), *v = lua_tostring(co, -1);
                if (strcasecmp(k, "content-length") == 0 || strcasecmp(k, "connection") == 0 ||
                    strcasecmp(k, "transfer-encoding") == 0) {
                    /* framing is the server's business */
                } else if (strcasecmp(k, "content-type") == 0) {
                    ctype = v;
                    evhttp_add_header(oh, "Content-Type", v);
                } else if (evhttp_add_header(oh, k, v) != 0) {
                    sb_log(SB_LOG_WARN, "response header dropped", "handler", job->label, "header", k, NULL);
                }
                lua_pop(co, 1);
            }
        }
        if (ctype && !evhttp_find_header(oh, "Content-Type"))
            evhttp_add_header(oh, "Content-Type", ctype);
        b = evbuffer_new();
        evbuffer_add(b, body ? body : "", body ? len : 0);
        lua_settop(co, base);
        if (job->write_seq > store_committed_seq()) {
            struct held_reply *h = sb_xcalloc(1, sizeof *h);
            h->req = req;
            h->status = status;
            snprintf(h->route, sizeof h->route, "%s", route);
            h->body = b;
            store_when_committed(job->write_seq, release_reply, h);
            return;
        }
        send_reply(req, status, route, b);
        evbuffer_free(b);
    }
}

/* Pushes the req table for run_route. Stack of co: [-0, +1]. */
static void push_request(lua_State *co, struct evhttp_request *req, const char *path,
                         const struct sb_route_match *m, const char *method)
{
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    size_t i, blen = evbuffer_get_length(in);
    char *host = NULL;
    ev_uint16_t port = 0;

    lua_createtable(co, 0, 8);
    lua_pushstring(co, method);
    lua_setfield(co, -2, "method");
    lua_pushstring(co, path);
    lua_setfield(co, -2, "path");

    lua_createtable(co, 0, (int)m->nparams);
    for (i = 0; i < m->nparams; i++) {
        char raw[1024];
        size_t dl = 0, vl = m->value_lens[i] < sizeof raw - 1 ? m->value_lens[i] : sizeof raw - 1;
        char *dec;
        memcpy(raw, m->values[i], vl);
        raw[vl] = '\0';
        dec = evhttp_uridecode(raw, 0, &dl);
        lua_pushlstring(co, m->names[i] + 1, strlen(m->names[i]) - 2);
        lua_pushlstring(co, dec ? dec : raw, dec ? dl : vl);
        lua_rawset(co, -3);
        free(dec);
    }
    lua_setfield(co, -2, "params");

    lua_newtable(co);
    if (query) {
        struct evkeyvalq q;
        TAILQ_INIT(&q);
        if (evhttp_parse_query_str(query, &q) == 0) {
            TAILQ_FOREACH(kv, &q, next) {
                lua_pushstring(co, kv->value);
                lua_setfield(co, -2, kv->key);
            }
        }
        evhttp_clear_headers(&q);
    }
    lua_setfield(co, -2, "query");

    lua_newtable(co);
    TAILQ_FOREACH(kv, hdrs, next) {
        char name[256];
        size_t n = strlen(kv->key);
        if (n >= sizeof name)
            continue;
        for (i = 0; i <= n; i++)
            name[i] = (char)((kv->key[i] >= 'A' && kv->key[i] <= 'Z') ? kv->key[i] + 32 : kv->key[i]);
        if (lua_getfield(co, -1, name) == LUA_TSTRING) {
            lua_pushfstring(co, "%s, %s", lua_tostring(co, -1), kv->value);
            lua_remove(co, -2);
        } else {
            lua_pop(co, 1);
            lua_pushstring(co, kv->value);
        }
        lua_setfield(co, -2, name);
    }
    lua_setfield(co, -2, "headers");

    lua_pushlstring(co, blen ? (const char *)evbuffer_pullup(in, -1) : "", blen);
    lua_setfield(co, -2, "body");

    evhttp_connection_get_peer(evhttp_request_get_connection(req), &host, &port);
    if (host) {
        lua_pushstring(co, host);
        lua_setfield(co, -2, "remote_addr");
    }
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
    struct sb_job *job;
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
    job = sb_job_new(rt, SB_JOB_HTTP, m.route->pattern, http_job_done, req);
    lua_rawgeti(job->co, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(job->co, -1, "run_route");
    lua_remove(job->co, -2);
    lua_pushstring(job->co, m.route->handler);
    push_request(job->co, req, path, &m, method);
    sb_job_start(job, 2);
}

void sb_server_configure(const struct sb_config *cfg)
{
    evhttp_set_max_body_size(http, cfg->max_body_bytes);
    evhttp_set_max_headers_size(http, cfg->max_header_bytes);
    evhttp_set_timeout(http, cfg->idle_timeout);
    sb_conn_configure(cfg);
}

int sb_server_start(const struct sb_config *cfg, sb_reload_fn reload)
{
    reload_fn = reload;
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
    if (http)
        evhttp_free(http);
    http = NULL;
    sb_conn_free();
}
