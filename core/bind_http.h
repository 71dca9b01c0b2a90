/* Bindings: http.request: the outbound HTTP client (httpclient.c) for scripts. */
#ifndef SB_BIND_HTTP_H
#define SB_BIND_HTTP_H

struct lua_State;

void sb_bind_http_open(struct lua_State *L);
/* Pushes a response's headers as a table: lower-case names, repeated
 * headers joined with ", ". Stack: [-0, +1]. */
struct sb_http_response;
void sb_http_push_headers(struct lua_State *L, const struct sb_http_response *r);

#endif
