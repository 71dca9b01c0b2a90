#include "httpclient.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "loop.h"
#include "metrics.h"
#include "util.h"

#define OUTBOUND_SLOTS 600
static unsigned long long outbound[OUTBOUND_SLOTS]; /* by status; 0: no response */

static void count_outbound(long status)
{
    outbound[status > 0 && status < OUTBOUND_SLOTS ? status : 0]++;
}

static void render_metrics(struct evbuffer *out)
{
    size_t i;
    sb_metrics_family(out, "switchboard_outbound_requests_total", "counter",
                      "Outbound HTTP requests, by status (error: no response).");
    for (i = 0; i < OUTBOUND_SLOTS; i++) {
        if (!outbound[i])
            continue;
        if (i == 0)
            evbuffer_add_printf(out, "switchboard_outbound_requests_total{status=\"error\"} %llu\n", outbound[i]);
        else
            evbuffer_add_printf(out, "switchboard_outbound_requests_total{status=\"%zu\"} %llu\n", i, outbound[i]);
    }
}

struct sb_http_call {
    CURL *easy;
    struct curl_slist *req_headers;
    struct evbuffer *body;
    size_t max_body;
    int too_large;
    struct evbuffer *headers;     /* name\0value\0 pairs */
    int nheaders;
    CURLcode result;
    char errbuf[CURL_ERROR_SIZE];
    sb_http_done_fn done;
    void *arg;
    struct sb_http_call *next_done;
};

struct sock_watch {
    curl_socket_t fd;
    struct event *ev;
};

#define MAX_RESPONSE_HEADERS 100

static CURLM *multi;
static struct event *multi_timer;
static long client_max_response = 16 << 20;

static void check_multi_info(void);

/* Finished easy handles are reset and reused: creating one per request
 * costs more than the request itself on loopback. */
#define EASY_POOL_MAX 64
static CURL *easy_pool[EASY_POOL_MAX];
static int easy_pooled;

static CURL *easy_get(void)
{
    return easy_pooled > 0 ? easy_pool[--easy_pooled] : curl_easy_init();
}

static void easy_put(CURL *e)
{
    if (easy_pooled < EASY_POOL_MAX) {
        curl_easy_reset(e);
        easy_pool[easy_pooled++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

static void call_free(struct sb_http_call *c)
{
    if (c->easy) {
        curl_multi_remove_handle(multi, c->easy);
        easy_put(c->easy);
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
    struct sb_http_call *c = userdata;
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
    struct sb_http_call *c = userdata;
    size_t n = size * nitems, i, name_len, vl;
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
    vl = (size_t)(buf + n - colon);
    while (vl > 0 && (colon[vl - 1] == '\r' || colon[vl - 1] == '\n' || colon[vl - 1] == ' '))
        vl--;
    evbuffer_add(c->headers, colon, vl);
    evbuffer_add(c->headers, "", 1);
    c->nheaders++;
    return n;
}

static void report(struct sb_http_call *c)
{
    struct sb_http_response r;
    memset(&r, 0, sizeof r);
    if (c->result == CURLE_OK)
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &r.status);
    if (c->result != CURLE_OK || r.status == 0) {
        r.ok = 0;
        r.error = c->too_large ? "response body too large"
                  : c->errbuf[0] ? c->errbuf : curl_easy_strerror(c->result);
        count_outbound(0);
    } else {
        r.ok = 1;
        r.headers_len = evbuffer_get_length(c->headers);
        r.headers = r.headers_len ? (const char *)evbuffer_pullup(c->headers, -1) : "";
        r.nheaders = c->nheaders;
        r.body_len = evbuffer_get_length(c->body);
        r.body = r.body_len ? (const char *)evbuffer_pullup(c->body, -1) : "";
        count_outbound(r.status);
    }
    c->done(c->arg, &r);
    call_free(c);
}

static void check_multi_info(void)
{
    CURLMsg *msg;
    int left;
    struct sb_http_call *done = NULL, *last = NULL, *c;
    while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        c->result = msg->data.result;   /* copy before the handle is removed */
        curl_multi_remove_handle(multi, c->easy);
        c->next_done = NULL;
        if (last)
            last->next_done = c;
        else
            done = c;
        last = c;
    }
    while (done) {
        c = done;
        done = c->next_done;
        report(c);
    }
}

const char *sb_http_header(const struct sb_http_response *resp, const char *name)
{
    size_t off = 0;
    while (off < resp->headers_len) {
        const char *n = resp->headers + off, *v;
        off += strlen(n) + 1;
        v = resp->headers + off;
        off += strlen(v) + 1;
        if (strcmp(n, name) == 0)
            return v;
    }
    return NULL;
}

static int valid_header_line(const char *s)
{
    const char *colon = strchr(s, ':');
    if (!colon || colon == s)
        return 0;
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            return 0;
    return 1;
}

struct sb_http_call *sb_http_start(const struct sb_http_request *req, sb_http_done_fn done, void *arg,
                                   char *err, size_t err_size)
{
    struct sb_http_call *c;
    const char *method = req->method ? req->method : "GET";
    size_t i;
    double timeout = req->timeout > 0 ? req->timeout : 30;

    if (!req->url || (strncmp(req->url, "http://", 7) != 0 && strncmp(req->url, "https://", 8) != 0)) {
        snprintf(err, err_size, "url must start with http:// or https://");
        return NULL;
    }
    if (strlen(method) > 16 || strpbrk(method, " \r\n:")) {
        snprintf(err, err_size, "bad method");
        return NULL;
    }
    c = sb_xcalloc(1, sizeof *c);
    for (i = 0; i < req->nheaders; i++) {
        if (!valid_header_line(req->headers[i])) {
            snprintf(err, err_size, "bad header line");
            call_free(c);
            return NULL;
        }
        c->req_headers = curl_slist_append(c->req_headers, req->headers[i]);
    }
    /* no "Expect: 100-continue" round trip on larger bodies */
    c->req_headers = curl_slist_append(c->req_headers, "Expect:");
    c->done = done;
    c->arg = arg;
    c->body = evbuffer_new();
    c->headers = evbuffer_new();
    c->max_body = (size_t)client_max_response;
    c->easy = easy_get();
    if (!c->easy) {
        snprintf(err, err_size, "cannot create a transfer");
        call_free(c);
        return NULL;
    }
    curl_easy_setopt(c->easy, CURLOPT_URL, req->url);
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
    if (req->body) {
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(c->easy, CURLOPT_COPYPOSTFIELDS, req->body);
        if (strcmp(method, "GET") == 0)
            curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, "GET");
    }
    if (curl_multi_add_handle(multi, c->easy) != CURLM_OK) {
        snprintf(err, err_size, "cannot start the transfer");
        call_free(c);
        return NULL;
    }
    return c;
}

void sb_http_cancel(struct sb_http_call *call)
{
    if (call)
        call_free(call);
}

int sb_httpclient_init(void)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return -1;
    multi = curl_multi_init();
    if (!multi)
        return -1;
    multi_timer = evtimer_new(sb_base, on_multi_timer, NULL);
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    sb_metrics_register(render_metrics);
    return 0;
}

void sb_httpclient_configure(long max_response_bytes, int max_connections)
{
    client_max_response = max_response_bytes;
    /* the idle connections kept for reuse (http_client.max_connections) */
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
}

void sb_httpclient_shutdown(void)
{
    while (easy_pooled > 0)
        curl_easy_cleanup(easy_pool[--easy_pooled]);
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
