/* JSON for bindings, with the runtime's cjson instance. */
#ifndef SB_LUAJSON_H
#define SB_LUAJSON_H

#include <stddef.h>

struct lua_State;
struct sb_runtime;

/* Creates the runtime's cjson instance and the global `json`. */
void sb_json_open(struct sb_runtime *rt);
/* json.encode of the value at idx. Stack: [-0, +1] (the encoded string).
 * Raises on unencodable values. */
void sb_json_encode_at(struct lua_State *L, int idx);
/* json.decode of s. Stack: [-0, +1]. Raises on malformed JSON. */
void sb_json_decode(struct lua_State *L, const char *s, size_t len);

#endif
