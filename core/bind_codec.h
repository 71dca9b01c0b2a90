/* Bindings base64.* and url.* (docs/lua-api.md), and the text encodings
 * the crypto binding shares. */
#ifndef SB_BIND_CODEC_H
#define SB_BIND_CODEC_H

#include <stddef.h>

struct lua_State;

void sb_bind_codec_open(struct lua_State *L);

/* Pushes p as lower-case hex. Stack: [-0, +1]. */
void sb_push_hex(struct lua_State *L, const unsigned char *p, size_t n);
/* Pushes p as base64: the standard alphabet with padding, or (url_safe)
 * the URL-safe alphabet without padding. Stack: [-0, +1]. */
void sb_push_base64(struct lua_State *L, const unsigned char *p, size_t n, int url_safe);

#endif
