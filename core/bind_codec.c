/* base64.encode/decode/url_encode/url_decode and url.encode/decode/
 * build_query/parse_query. Base64 is OpenSSL's (EVP_EncodeBlock,
 * EVP_DecodeBlock); what it lets through that is not base64 (padding in
 * the middle, whitespace at the ends) is refused here before it decodes.
 * Bad input to a decoder is an answer (nil, reason), never an error: it
 * comes from outside. */
#include "bind_codec.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>

#define B64_CHUNK 3072            /* bytes encoded per EVP call: a multiple of 3 */
#define B64_TEXT_CHUNK 4096       /* characters decoded per EVP call: a multiple of 4 */
#define QUERY_PAIRS_MAX 1000

static const char hex_digits[] = "0123456789abcdef";

void sb_push_hex(lua_State *L, const unsigned char *p, size_t n)
{
    luaL_Buffer b;
    size_t i;
    char *out = luaL_buffinitsize(L, &b, 2 * n);
    for (i = 0; i < n; i++) {
        out[2 * i] = hex_digits[p[i] >> 4];
        out[2 * i + 1] = hex_digits[p[i] & 15];
    }
    luaL_pushresultsize(&b, 2 * n);
}

/* base64 */

void sb_push_base64(lua_State *L, const unsigned char *p, size_t n, int url_safe)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while (n > 0) {
        size_t take = n < B64_CHUNK ? n : B64_CHUNK;
        /* EVP_EncodeBlock writes a NUL after the text: room for it too */
        char *out = luaL_prepbuffsize(&b, 4 * ((take + 2) / 3) + 1);
        int len = EVP_EncodeBlock((unsigned char *)out, p, (int)take);
        if (url_safe) {
            int i;
            for (i = 0; i < len; i++) {
                if (out[i] == '+')
                    out[i] = '-';
                else if (out[i] == '/')
                    out[i] = '_';
                else if (out[i] == '=') {
                    len = i;   /* padding only ends the last block */
                    break;
                }
            }
        }
        luaL_addsize(&b, (size_t)len);
        p += take;
        n -= take;
    }
    luaL_pushresult(&b);
}

static int b64_char(unsigned char c, int url_safe)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return 1;
    return url_safe ? (c == '-' || c == '_') : (c == '+' || c == '/');
}

/* The number of base64 characters in s before its padding, or -1 when s
 * is not base64 of that alphabet (padding is optional, but when present it
 * completes the last block of four). */
static long b64_data_length(const char *s, size_t n, int url_safe)
{
    size_t data = 0, pads;
    while (data < n && b64_char((unsigned char)s[data], url_safe))
        data++;
    for (pads = 0; data + pads < n && s[data + pads] == '='; pads++)
        ;
    if (data + pads != n || pads > 2 || data % 4 == 1)
        return -1;
    if (pads > 0 && (data + pads) % 4 != 0)
        return -1;
    return (long)data;
}

/* Decodes the first `data` characters of s (no padding among them). */
static void b64_decode_into(luaL_Buffer *b, const char *s, size_t data, int url_safe)
{
    char block[B64_TEXT_CHUNK];
    while (data > 0) {
        size_t take = data < B64_TEXT_CHUNK ? data : B64_TEXT_CHUNK, i, padded = take, pads = 0;
        unsigned char *out;
        int len;
        for (i = 0; i < take; i++) {
            char c = s[i];
            block[i] = url_safe ? (c == '-' ? '+' : c == '_' ? '/' : c) : c;
        }
        while (padded % 4) {   /* only the last chunk can end in a partial block */
            block[padded++] = '=';
            pads++;
        }
        out = (unsigned char *)luaL_prepbuffsize(b, padded / 4 * 3);
        len = EVP_DecodeBlock(out, (const unsigned char *)block, (int)padded);
        /* EVP_DecodeBlock counts the bytes that padding stands for */
        if (len > 0)
            luaL_addsize(b, (size_t)len - pads);
        s += take;
        data -= take;
    }
}

static int b64_decode(lua_State *L, int url_safe)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    long data = b64_data_length(s, n, url_safe);
    luaL_Buffer b;
    if (data < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "invalid base64");
        return 2;
    }
    luaL_buffinit(L, &b);
    b64_decode_into(&b, s, (size_t)data, url_safe);
    luaL_pushresult(&b);
    return 1;
}

static int base64_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    sb_push_base64(L, (const unsigned char *)s, n, 0);
    return 1;
}

static int base64_url_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    sb_push_base64(L, (const unsigned char *)s, n, 1);
    return 1;
}

static int base64_decode(lua_State *L) { return b64_decode(L, 0); }
static int base64_url_decode(lua_State *L) { return b64_decode(L, 1); }

/* Percent-encoding (RFC 3986) */

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

static void percent_encode(luaL_Buffer *b, const char *s, size_t n)
{
    static const char upper[] = "0123456789ABCDEF";
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            luaL_addchar(b, (char)c);
        } else {
            char esc[3] = { '%', upper[c >> 4], upper[c & 15] };
            luaL_addlstring(b, esc, 3);
        }
    }
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX (and, in a query, '+' as a space). Returns 0, or -1 on a
 * '%' not followed by two hex digits. */
static int percent_decode(luaL_Buffer *b, const char *s, size_t n, int plus_is_space)
{
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_value((unsigned char)s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value((unsigned char)s[i + 2]) : -1;
            if (i + 2 >= n || hi < 0 || lo < 0)
                return -1;
            luaL_addchar(b, (char)(hi << 4 | lo));
            i += 2;
        } else {
            luaL_addchar(b, plus_is_space && c == '+' ? ' ' : (char)c);
        }
    }
    return 0;
}

static int url_encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    percent_encode(&b, s, n);
    luaL_pushresult(&b);
    return 1;
}

static int invalid_escape(lua_State *L)
{
    lua_pushnil(L);
    lua_pushliteral(L, "invalid percent-encoding");
    return 2;
}

static int url_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (percent_decode(&b, s, n, 0))
        return invalid_escape(L);
    luaL_pushresult(&b);
    return 1;
}

/* url.parse_query(s) -> table | nil, reason. A key seen once maps to its
 * value, a repeated key to the array of its values in order. */
static int url_parse_query(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n), *end = s + n;
    int pairs = 0;
    lua_settop(L, 1);
    lua_newtable(L);                                               /* 2: result */
    while (s < end) {
        const char *amp = memchr(s, '&', (size_t)(end - s)), *stop = amp ? amp : end;
        const char *eq = memchr(s, '=', (size_t)(stop - s));
        const char *key_end = eq ? eq : stop;
        luaL_Buffer b;
        if (stop == s) {   /* "a=1&&b=2": an empty piece is no pair */
            s = stop + 1;
            continue;
        }
        if (++pairs > QUERY_PAIRS_MAX) {
            lua_pushnil(L);
            lua_pushliteral(L, "too many pairs (at most 1000)");
            return 2;
        }
        luaL_buffinit(L, &b);
        if (percent_decode(&b, s, (size_t)(key_end - s), 1))
            return invalid_escape(L);
        luaL_pushresult(&b);                                       /* 3: key */
        luaL_buffinit(L, &b);
        if (eq && percent_decode(&b, eq + 1, (size_t)(stop - eq - 1), 1))
            return invalid_escape(L);
        luaL_pushresult(&b);                                       /* 4: value */
        lua_pushvalue(L, 3);
        switch (lua_rawget(L, 2)) {                                /* 5: what the key holds so far */
        case LUA_TNIL:
            lua_pop(L, 1);
            lua_rawset(L, 2);
            break;
        case LUA_TSTRING:                                          /* the second value: an array of both */
            lua_createtable(L, 2, 0);
            lua_insert(L, 5);
            lua_rawseti(L, 5, 1);
            lua_insert(L, 4);                                      /* 3 key, 4 array, 5 value */
            lua_rawseti(L, 4, 2);
            lua_rawset(L, 2);
            break;
        default:                                                   /* LUA_TTABLE: one more */
            lua_insert(L, 4);                                      /* 3 key, 4 array, 5 value */
            lua_rawseti(L, 4, (lua_Integer)lua_rawlen(L, 4) + 1);
            lua_pop(L, 2);
            break;
        }
        s = stop + (amp ? 1 : 0);
    }
    return 1;
}

struct query_key {
    const char *s;
    size_t len;
};

static int key_cmp(const void *a, const void *b)
{
    const struct query_key *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* Replaces the value on top (a string, a number or a boolean) with the
 * pair "key=value", both percent-encoded. Returns -1 for another type. */
static int make_pair(lua_State *L, const struct query_key *key)
{
    luaL_Buffer b;
    size_t len;
    const char *v;
    switch (lua_type(L, -1)) {
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
        lua_remove(L, -2);
        break;
    case LUA_TNUMBER:
        lua_tolstring(L, -1, NULL);   /* in place: the slot holds a copy */
        break;
    case LUA_TSTRING:
        break;
    default:
        return -1;
    }
    v = lua_tolstring(L, -1, &len);
    /* the value stays on the stack under the buffer while it is read */
    luaL_buffinit(L, &b);
    percent_encode(&b, key->s, key->len);
    luaL_addchar(&b, '=');
    percent_encode(&b, v, len);
    luaL_pushresult(&b);
    lua_remove(L, -2);
    return 0;
}

/* url.build_query(t): keys sorted, so the same table always gives the same
 * text (a signature over it stays valid). */
static int url_build_query(lua_State *L)
{
    struct query_key *keys;
    size_t nkeys = 0, cap = 0, i;
    lua_Integer npairs = 0, k;
    luaL_Buffer b;
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "url.build_query: keys must be strings");
        cap++;
        lua_pop(L, 1);
    }
    /* the keys' strings stay referenced by the table; the array is a
     * userdata so that an error below frees it */
    keys = lua_newuserdatauv(L, (cap ? cap : 1) * sizeof *keys, 0);      /* 2 */
    lua_newtable(L);                                                       /* 3: the pairs, in order */
    lua_pushnil(L);
    while (lua_next(L, 1)) {   /* the same keys as counted: nothing ran in between */
        if (nkeys < cap) {
            keys[nkeys].s = lua_tolstring(L, -2, &keys[nkeys].len);
            nkeys++;
        }
        lua_pop(L, 1);
    }
    qsort(keys, nkeys, sizeof *keys, key_cmp);
    for (i = 0; i < nkeys; i++) {
        int bad = 0;
        lua_pushlstring(L, keys[i].s, keys[i].len);
        if (lua_rawget(L, 1) == LUA_TTABLE) {                              /* 4 */
            lua_Integer n = (lua_Integer)lua_rawlen(L, 4), entries = 0;
            lua_pushnil(L);
            while (lua_next(L, 4)) {
                entries++;
                lua_pop(L, 1);
            }
            bad = entries != n;   /* keys other than 1..n: not an array */
            for (k = 1; k <= n && !bad; k++) {
                lua_rawgeti(L, 4, k);
                bad = make_pair(L, &keys[i]);
                if (!bad)
                    lua_rawseti(L, 3, ++npairs);
            }
        } else {
            bad = make_pair(L, &keys[i]);
            if (!bad)
                lua_rawseti(L, 3, ++npairs);
        }
        if (bad)
            return luaL_error(L, "url.build_query: the value of '%s' must be a string, number, boolean"
                                 " or an array of them", keys[i].s);
        lua_settop(L, 3);
    }
    luaL_buffinit(L, &b);
    for (k = 1; k <= npairs; k++) {
        if (k > 1)
            luaL_addchar(&b, '&');
        lua_rawgeti(L, 3, k);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return 1;
}

void sb_bind_codec_open(lua_State *L)
{
    static const luaL_Reg base64_funcs[] = {
        { "encode", base64_encode }, { "decode", base64_decode },
        { "url_encode", base64_url_encode }, { "url_decode", base64_url_decode }, { NULL, NULL }
    };
    static const luaL_Reg url_funcs[] = {
        { "encode", url_encode }, { "decode", url_decode },
        { "build_query", url_build_query }, { "parse_query", url_parse_query }, { NULL, NULL }
    };
    luaL_newlib(L, base64_funcs);
    lua_setglobal(L, "base64");
    luaL_newlib(L, url_funcs);
    lua_setglobal(L, "url");
}
