/* C bindings visible to scripts. docs/lua-api.md documents each one. */
#ifndef SB_BINDINGS_H
#define SB_BINDINGS_H

struct sb_runtime;

/* Registers every binding as globals of rt->L (log, json, now, sleep,
 * config, route, http_error, bounded, generation, secure_equal, crypto,
 * base64, url, http, timer, state, conversations, outbox, events,
 * metrics). */
void sb_bindings_open(struct sb_runtime *rt);
/* Registers the runners of timer and outbox handlers (start-up). */
void sb_bindings_runners(void);

#endif
