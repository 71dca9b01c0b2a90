/* The HTTP server: built-in endpoints, routes registered by scripts, and
 * JSON errors for everything that goes wrong, including the errors libevent
 * itself answers (oversized or malformed requests). */
#ifndef SB_SERVER_H
#define SB_SERVER_H

#include <stddef.h>

#include "config.h"

/* Performs a reload for POST /admin/reload; returns the new generation, or
 * 0 with err filled. */
typedef unsigned (*sb_reload_fn)(struct sb_error *err);

int sb_server_start(const struct sb_config *cfg, sb_reload_fn reload);
/* Applies limits/timeouts of a newly loaded config. */
void sb_server_configure(const struct sb_config *cfg);
/* Shutdown, step 1: closes the listening socket; open connections get 503. */
void sb_server_stop_accepting(void);
/* Requests received whose reply has not been fully written yet. */
size_t sb_server_requests_open(void);
/* The listening socket (to report an ephemeral port), or -1. */
int sb_server_listen_fd(void);
void sb_server_free(void);

/* Formats {"error":{"code":...,"message":...}}; exposed for tests. */
struct evbuffer;
void sb_error_json(struct evbuffer *out, const char *code, const char *message);

#endif
