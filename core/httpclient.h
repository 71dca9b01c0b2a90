/* Outbound HTTP for the core: libcurl's multi interface driven by libevent
 * (curl's hiperfifo pattern). Used by http.request (bind_http.c) and the
 * outbox. Callbacks run on the loop thread, never from inside a libcurl
 * callback: finished transfers are collected first, then reported. */
#ifndef SB_HTTPCLIENT_H
#define SB_HTTPCLIENT_H

#include <stddef.h>

struct sb_http_request {
    const char *method;              /* NULL: GET */
    const char *url;                 /* http:// or https:// */
    const char *const *headers;      /* "Name: value" lines */
    size_t nheaders;
    const char *body;                /* NULL: none */
    size_t body_len;
    double timeout;                  /* seconds, whole exchange */
};

struct sb_http_response {
    int ok;                          /* 1: a response arrived (any status) */
    long status;
    const char *error;               /* !ok: why */
    const char *headers;             /* name\0value\0 pairs, names lower-cased */
    size_t headers_len;
    int nheaders;
    const char *body;
    size_t body_len;
};

struct sb_http_call;
typedef void (*sb_http_done_fn)(void *arg, const struct sb_http_response *resp);

/* Starts a transfer; done is called exactly once unless the call is
 * cancelled first. Returns NULL with a message in err on bad input. */
struct sb_http_call *sb_http_start(const struct sb_http_request *req, sb_http_done_fn done, void *arg,
                                   char *err, size_t err_size);
/* Aborts a transfer; done will not be called. */
void sb_http_cancel(struct sb_http_call *call);
/* Looks up a response header (lower-case name); NULL if absent. */
const char *sb_http_header(const struct sb_http_response *resp, const char *name);

int sb_httpclient_init(void);
/* Applies http_client.max_response_bytes and .max_connections (start, reload). */
void sb_httpclient_configure(long max_response_bytes, int max_connections);
/* Call after every owner cancelled its transfers. */
void sb_httpclient_shutdown(void);

#endif
