/* http.request: non-blocking outbound HTTP. libcurl's multi interface is
 * driven by libevent the way curl's hiperfifo example does it: curl tells
 * us which sockets to watch and when to time out; we call
 * curl_multi_socket_action when they fire. Finished transfers are collected
 * first and their jobs resumed afterwards, never from inside a curl
 * callback. */
#include "httpclient.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "bindings.h"
#include "job.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "runtime.h"
#include "util.h"

#define DEFAULT_TIMEOUT 30.0
#define MAX_REQUEST_HEADERS 64
#define MAX_RESPONSE_HEADERS 100

struct http_call {
    CURL *easy;
    struct sb_job *job;
    struct curl_slist *req_headers;
    struct evbuffer *body;
    size_t max_body;
    int too_large;
    /* response headers as name\0value\0 pairs, names lower-cased */
    struct evbuffer *headers;
    int nheaders;
    CURLcode result;
    char errbuf[CURL_ERROR_SIZE];
    struct http_call *next_done;
};

struct sock_watch {
    curl_socket_t fd;
    struct event *ev;
};

static CURLM *multi;
static struct event *multi_timer;
static long client_max_response = 16 << 20;

static void check_multi_info(void);

static void call_free(struct http_call *c)
{
    if (c->easy) {
        curl_multi_remove_handle(multi, c->easy);
        curl_easy_cleanup(c->easy);
    }
    curl_slist_free_all(c->req_headers);
    if (c->body)
        evbuffer_free(c->body);
    if (c->headers)
        evbuffer_free(c->headers);
    free(c);
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    int running, action = 0;
    (void)arg;
    if (what & EV_READ)
        action |= CURL_CSELECT_IN;
    if (what & EV_WRITE)
        action |= CURL_CSELECT_OUT;
    curl_multi_socket_action(multi, fd, action, &running);
    check_multi_info();
}

static void on_multi_timer(evutil_socket_t fd, short what, void *arg)
{
    int running;
    (void)fd;
    (void)what;
    (void)arg;
    curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_info();
}

/* CURLMOPT_SOCKETFUNCTION */
static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct sock_watch *w = socketp;
    short kind;
    (void)easy;
    (void)userp;
    if (what == CURL_POLL_REMOVE) {
        if (w) {
            event_free(w->ev);
            free(w);
            curl_multi_assign(multi, s, NULL);
        }
        return 0;
    }
    kind = (short)(EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0));
    if (!w) {
        w = sb_xcalloc(1, sizeof *w);
        w->fd = s;
        curl_multi_assign(multi, s, w);
    } else {
        event_free(w->ev);
    }
    w->ev = event_new(sb_base, s, kind, on_socket_event, NULL);
    event_add(w->ev, NULL);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: only arm a timer here, never call back into curl. */
static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    struct timeval tv;
    (void)m;
    (void)userp;
    if (timeout_ms < 0) {
        evtimer_del(multi_timer);
        return 0;
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    evtimer_add(multi_timer, &tv);
    return 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct http_call *c = userdata;
    size_t n = size * nmemb;
    if (evbuffer_get_length(c->body) + n > c->max_body) {
        c->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    evbuffer_add(c->body, ptr, n);
    return n;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct http_call *c = userdata;
    size_t n = size * nitems, i, name_len;
    const char *colon;
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* a new response (after 100-continue or a redirect): start over */
        evbuffer_drain(c->headers, evbuffer_get_length(c->headers));
        c->nheaders = 0;
        return n;
    }
    colon = memchr(buf, ':', n);
    if (!colon || c->nheaders >= MAX_RESPONSE_HEADERS)
        return n;
    name_len = (size_t)(colon - buf);
    for (i = 0; i < name_len; i++) {
        char lc = (char)tolower((unsigned char)buf[i]);
        evbuffer_add(c->headers, &lc, 1);
    }
    evbuffer_add(c->headers, "", 1);
    colon++;
    while (colon < buf + n && (*colon == ' ' || *colon == '\t'))
        colon++;
    {
        size_t vl = (size_t)(buf + n - colon);
        while (vl > 0 && (colon[vl - 1] == '\r' || colon[vl - 1] == '\n' || colon[vl - 1] == ' '))
            vl--;
        evbuffer_add(c->headers, colon, vl);
    }
    evbuffer_add(c->headers, "", 1);
    c->nheaders++;
    return n;
}

/* Pushes status, headers, body (or nil, message) on the job's coroutine
 * and resumes it. Stack of co: [-0, +2|3]. */
static void deliver(struct http_call *c)
{
    struct sb_job *job = c->job;
    lua_State *co = job->co;
    long status = 0;
    int nargs;
    if (c->result == CURLE_OK)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (c->result != CURLE_OK || status == 0) {
        const char *msg = c->too_large ? "response body too large"
                          : c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->result);
        sb_metrics_outbound(0);
        lua_pushnil(co);
        lua_pushstring(co, msg);
        nargs = 2;
    } else {
        size_t hlen = evbuffer_get_length(c->headers), blen = evbuffer_get_length(c->body);
        const char *h = (const char *)evbuffer_pullup(c->headers, -1);
        size_t off = 0;
        sb_metrics_outbound((int)status);
        lua_pushinteger(co, status);
        lua_createtable(co, 0, c->nheaders);
        while (off < hlen) {
            const char *name = h + off, *value;
            off += strlen(name) + 1;
            value = h + off;
            off += strlen(value) + 1;
            if (lua_getfield(co, -1, name) == LUA_TSTRING) {
                lua_pushfstring(co, "%s, %s", lua_tostring(co, -1), value);
                lua_remove(co, -2);
            } else {
                lua_pop(co, 1);
                lua_pushstring(co, value);
            }
            lua_setfield(co, -2, name);
        }
        lua_pushlstring(co, blen ? (const char *)evbuffer_pullup(c->body, -1) : "", blen);
        nargs = 3;
    }
    call_free(c);
    sb_job_wake(job, nargs);
}

static void check_multi_info(void)
{
    CURLMsg *msg;
    int left;
    struct http_call *done = NULL, *c;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        c->result = msg->data.result;   /* copy before the handle is removed */
        curl_multi_remove_handle(multi, c->easy);
        c->next_done = done;
        done = c;
    }
    while (done) {
        c = done;
        done = c->next_done;
        deliver(c);
    }
}

static void call_cancel(struct sb_job *job, void *wait)
{
    (void)job;
    call_free(wait);
}

static int valid_header_text(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

/* http.request{method=, url=, headers=, body=, timeout=} -> status, headers, body | nil, err */
static int http_request(lua_State *L)
{
    struct sb_job *job;
    struct http_call *c;
    const char *url, *method = "GET", *body = NULL;
    size_t body_len = 0;
    double timeout = DEFAULT_TIMEOUT;
    int nh = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    job = sb_job_checkwait(L);
    lua_settop(L, 1);
    if (lua_getfield(L, 1, "url") != LUA_TSTRING)
        return luaL_error(L, "http.request: url (string) is required");
    url = lua_tostring(L, -1);
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return luaL_error(L, "http.request: url must start with http:// or https://");
    if (lua_getfield(L, 1, "method") == LUA_TSTRING)
        method = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "http.request: method must be a string");
    if (lua_getfield(L, 1, "body") == LUA_TSTRING)
        body = lua_tolstring(L, -1, &body_len);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "http.request: body must be a string (use json.encode)");
    if (lua_getfield(L, 1, "timeout") == LUA_TNUMBER)
        timeout = lua_tonumber(L, -1);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "http.request: timeout must be a number of seconds");
    if (!(timeout > 0) || timeout > 86400)
        return luaL_error(L, "http.request: timeout must be between 0 and 86400 seconds");
    /* The job's own deadline is enforced by the job (its timer cancels this
     * transfer and answers 504), so the transfer keeps its own timeout. */
    if (strlen(method) > 16 || !valid_header_text(method) || strchr(method, ' '))
        return luaL_error(L, "http.request: bad method");

    c = sb_xcalloc(1, sizeof *c);
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            const char *k, *v;
            if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) ||
                ++nh > MAX_REQUEST_HEADERS) {
                call_free(c);
                return luaL_error(L, "http.request: headers must be a table of strings (at most %d)", MAX_REQUEST_HEADERS);
            }
            k = lua_tostring(L, -2);
            v = lua_tostring(L, -1);
            if (!valid_header_text(k) || !valid_header_text(v) || strchr(k, ':') || !k[0]) {
                call_free(c);
                return luaL_error(L, "http.request: header '%s' contains a forbidden character", k);
            }
            lua_pushfstring(L, "%s: %s", k, v);
            c->req_headers = curl_slist_append(c->req_headers, lua_tostring(L, -1));
            lua_pop(L, 2);
        }
    } else if (!lua_isnil(L, -1)) {
        call_free(c);
        return luaL_error(L, "http.request: headers must be a table");
    }
    /* no "Expect: 100-continue" round trip on larger bodies */
    c->req_headers = curl_slist_append(c->req_headers, "Expect:");

    c->job = job;
    c->body = evbuffer_new();
    c->headers = evbuffer_new();
    c->max_body = (size_t)client_max_response;
    c->easy = curl_easy_init();
    if (!c->easy) {
        call_free(c);
        return luaL_error(L, "http.request: cannot create a transfer");
    }
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    curl_easy_setopt(c->easy, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c->easy, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->req_headers);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000));
    curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout < 10 ? timeout * 1000 : 10000));
    curl_easy_setopt(c->easy, CURLOPT_USERAGENT, "switchboard/" SB_VERSION);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c->easy, CURLOPT_NOBODY, 1L);
    else if (strcmp(method, "GET") != 0)
        curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(c->easy, CURLOPT_COPYPOSTFIELDS, body);
        if (strcmp(method, "GET") == 0)
            curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, "GET");
    }
    if (curl_multi_add_handle(multi, c->easy) != CURLM_OK) {
        call_free(c);
        return luaL_error(L, "http.request: cannot start the transfer");
    }
    sb_job_wait(job, call_cancel, c);
    return lua_yield(L, 0);
}

void sb_bind_http_open(lua_State *L)
{
    static const luaL_Reg funcs[] = { { "request", http_request }, { NULL, NULL } };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "http");
}

int sb_httpclient_init(long max_response_bytes, int max_connections)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    multi = curl_multi_init();
    if (!multi)
        return -1;
    client_max_response = max_response_bytes;
    multi_timer = evtimer_new(sb_base, on_multi_timer, NULL);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
    return 0;
}

void sb_httpclient_configure(long max_response_bytes)
{
    client_max_response = max_response_bytes;
}

void sb_httpclient_shutdown(void)
{
    if (multi) {
        curl_multi_cleanup(multi);
        multi = NULL;
    }
    if (multi_timer) {
        event_free(multi_timer);
        multi_timer = NULL;
    }
    curl_global_cleanup();
}
