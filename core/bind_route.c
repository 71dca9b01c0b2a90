/* Script routes: a request matched to a route runs engine.run_route as a
 * job; what it returns (status, body, content type, headers) becomes the
 * reply, which the server holds until the job's writes, and whatever the
 * job could see, are durable. */
#include "bind_route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <lauxlib.h>
#include <lua.h>

#include "bind_events.h"
#include "job.h"
#include "log.h"
#include "runtime.h"
#include "server.h"
#include "sse.h"
#include "util.h"

static void route_done(struct sb_job *job, const struct sb_job_outcome *out)
{
    struct evhttp_request *req = job->owner;
    lua_State *co = job->co;
    struct evbuffer *b;
    const char *route = job->label;
    int base, status;
    size_t len;
    const char *body, *ctype;
    struct evkeyvalq *oh;

    if (out->result == SB_JOB_FAILED) {
        sb_server_error(req, route, out->status, out->code ? out->code : "error",
                        out->message ? out->message : sb_http_reason(out->status));
        return;
    }
    /* run_route returned: status, body, content type or nil, headers */
    base = lua_gettop(co) - out->nresults;
    {
        struct sb_sse_request *stream = sb_bind_events_take_stream(co, base + 2);
        if (stream) {
            lua_settop(co, base);
            sb_sse_start(req, route, stream);
            return;
        }
    }
    status = (int)lua_tointeger(co, base + 1);
    body = lua_tolstring(co, base + 2, &len);
    ctype = lua_tostring(co, base + 3);
    oh = evhttp_request_get_output_headers(req);
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
    sb_server_reply(req, route, status, b, out->seq);
    evbuffer_free(b);
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


void sb_route_dispatch(struct sb_runtime *rt, const struct sb_route_match *m, struct evhttp_request *req,
                       const char *method, const char *path)
{
    struct sb_job *job = sb_job_new(rt, SB_JOB_HTTP, m->route->pattern, route_done, req);
    lua_rawgeti(job->co, LUA_REGISTRYINDEX, rt->engine_ref);
    lua_getfield(job->co, -1, "run_route");
    lua_remove(job->co, -2);
    lua_pushstring(job->co, m->route->handler);
    push_request(job->co, req, path, m, method);
    sb_job_start(job, 2);
}
