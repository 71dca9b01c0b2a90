/* JSON for bindings, with the runtime's cjson instance. */
#ifndef SB_LUAJSON_H
#define SB_LUAJSON_H

#include <stddef.h>

struct lua_State;
struct sb_runtime;

/* Creates the runtime's cjson instance and the global `json` (encode,
 * decode, null, array). */
void sb_json_open(struct sb_runtime *rt);
/* json.encode of the value at idx (marked empty tables as []). Stack:
 * [-0, +1] (the encoded string). Raises on unencodable values. */
void sb_json_encode_at(struct lua_State *L, int idx);
/* Marks the table at idx as an array: it encodes as [] when empty
 * (json.array). Stack: [-0, +0]. */
void sb_json_mark_array(struct lua_State *L, int idx);
/* json.decode of s. Stack: [-0, +1]. Raises on malformed JSON. */
void sb_json_decode(struct lua_State *L, const char *s, size_t len);

/* The value at a dotted path of a JSON text from outside, read in a Lua
 * state of its own (bounded memory): 1 and *number for a number, 2 and
 * text (cut to text_size) for a string, 0 for anything else or bad JSON.
 * A path segment of digits indexes an array from 1. The outbox's reader. */
int sb_json_read_path(const char *json, size_t len, const char *path, double *number, char *text, size_t text_size);

#endif
