/* C bindings visible to scripts. docs/lua-api.md documents each one. */
#ifndef SB_BINDINGS_H
#define SB_BINDINGS_H

#include <stddef.h>

struct sb_runtime;
struct lua_State;

/* Registers every binding as globals of rt->L (log, json, now, sleep,
 * config, route, http_error, secure_equal, http, timer, state,
 * conversations, outbox). */
void sb_bindings_open(struct sb_runtime *rt);

void sb_bind_http_open(struct lua_State *L);   /* bind_http.c */
void sb_bind_timer_open(struct lua_State *L);  /* timer.c */
void sb_bind_state_open(struct lua_State *L);  /* kvstate.c */
void sb_bind_conv_open(struct lua_State *L);   /* bind_conv.c */
void sb_bind_outbox_open(struct lua_State *L); /* bind_outbox.c */

/* Pushes a response's headers as a table: lower-case names, repeated
 * headers joined with ", ". Stack: [-0, +1]. */
struct sb_http_response;
void sb_http_push_headers(struct lua_State *L, const struct sb_http_response *r);

/* json.encode of the value at idx using the runtime's cjson instance.
 * Stack: [-0, +1] (the encoded string). Raises on unencodable values. */
void sb_json_encode_at(struct lua_State *L, int idx);
/* json.decode of s. Stack: [-0, +1]. Raises on malformed JSON. */
void sb_json_decode(struct lua_State *L, const char *s, size_t len);

#endif
