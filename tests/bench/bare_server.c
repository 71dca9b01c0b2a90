/* The benchmark's ceiling: a bare libevent evhttp server that answers every
 * request with a small JSON body, doing nothing else. */
#include <stdio.h>
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

static void on_request(struct evhttp_request *req, void *arg)
{
    struct evbuffer *b = evbuffer_new();
    (void)arg;
    evbuffer_add_printf(b, "{\"ok\":true,\"bytes\":%zu}", evbuffer_get_length(evhttp_request_get_input_buffer(req)));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

int main(int argc, char **argv)
{
    struct event_base *base;
    struct evhttp *http;
    if (argc != 2) {
        fprintf(stderr, "usage: bare_server PORT\n");
        return 2;
    }
    base = event_base_new();
    http = evhttp_new(base);
    evhttp_set_gencb(http, on_request, NULL);
    if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)atoi(argv[1])) != 0) {
        perror("bind");
        return 1;
    }
    event_base_dispatch(base);
    evhttp_free(http);
    event_base_free(base);
    return 0;
}
