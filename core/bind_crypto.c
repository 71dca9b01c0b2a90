/* crypto.hmac, crypto.sha256, crypto.md5, crypto.random_bytes and
 * crypto.equal (also the global secure_equal). Every primitive is OpenSSL's
 * (libcrypto 3, its non-deprecated one-shot calls); this file only checks
 * arguments and encodes results. */
#include "bind_crypto.h"

#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "bind_codec.h"
#include "util.h"

#define RANDOM_BYTES_MAX 1024

enum encoding { ENC_HEX, ENC_BASE64, ENC_RAW };

/* The optional encoding argument at arg; raises naming it when unknown. */
static enum encoding check_encoding(lua_State *L, int arg, enum encoding fallback, const char *fn)
{
    const char *e;
    if (lua_isnoneornil(L, arg))
        return fallback;
    e = lua_type(L, arg) == LUA_TSTRING ? lua_tostring(L, arg) : "";
    if (!strcmp(e, "hex"))
        return ENC_HEX;
    if (!strcmp(e, "base64"))
        return ENC_BASE64;
    if (!strcmp(e, "raw"))
        return ENC_RAW;
    return (enum encoding)luaL_error(L, "crypto.%s: encoding must be \"hex\", \"base64\" or \"raw\"", fn);
}

static const char *check_bytes(lua_State *L, int arg, const char *fn, const char *name, size_t *len)
{
    if (lua_type(L, arg) != LUA_TSTRING)
        luaL_error(L, "crypto.%s: %s must be a string", fn, name);
    return lua_tolstring(L, arg, len);
}

static void push_encoded(lua_State *L, const unsigned char *p, size_t n, enum encoding enc)
{
    if (enc == ENC_HEX)
        sb_push_hex(L, p, n);
    else if (enc == ENC_BASE64)
        sb_push_base64(L, p, n, 0);
    else
        lua_pushlstring(L, (const char *)p, n);
}

/* crypto.hmac(alg, key, data [, encoding]) */
static int crypto_hmac(lua_State *L)
{
    static const struct { const char *name, *digest; } algs[] = {
        { "sha1", "SHA1" }, { "sha256", "SHA256" }, { "sha512", "SHA512" }
    };
    const char *alg = lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : "";
    const char *digest = NULL, *key, *data;
    size_t i, key_len, data_len, out_len = 0;
    unsigned char out[EVP_MAX_MD_SIZE];
    enum encoding enc;
    for (i = 0; i < sizeof algs / sizeof *algs; i++)
        if (!strcmp(alg, algs[i].name))
            digest = algs[i].digest;
    if (!digest)
        return luaL_error(L, "crypto.hmac: alg must be \"sha1\", \"sha256\" or \"sha512\"");
    key = check_bytes(L, 2, "hmac", "key", &key_len);
    data = check_bytes(L, 3, "hmac", "data", &data_len);
    enc = check_encoding(L, 4, ENC_HEX, "hmac");
    if (!EVP_Q_mac(NULL, "HMAC", NULL, digest, NULL, key, key_len, (const unsigned char *)data, data_len, out,
                   sizeof out, &out_len))
        return luaL_error(L, "crypto.hmac: libcrypto failed");
    push_encoded(L, out, out_len, enc);
    OPENSSL_cleanse(out, sizeof out);
    return 1;
}

static int digest_of(lua_State *L, const EVP_MD *md, const char *fn)
{
    size_t len;
    const char *data = check_bytes(L, 1, fn, "data", &len);
    enum encoding enc = check_encoding(L, 2, ENC_HEX, fn);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int out_len = 0;
    if (!EVP_Digest(data, len, out, &out_len, md, NULL))
        return luaL_error(L, "crypto.%s: libcrypto failed", fn);
    push_encoded(L, out, out_len, enc);
    return 1;
}

/* crypto.sha256(data [, encoding]) */
static int crypto_sha256(lua_State *L) { return digest_of(L, EVP_sha256(), "sha256"); }

/* crypto.md5(data [, encoding]): not for new designs; some platforms
 * derive their webhook keys with it (Chat2Desk: MD5 of the API token). */
static int crypto_md5(lua_State *L) { return digest_of(L, EVP_md5(), "md5"); }

/* crypto.random_bytes(n [, encoding]): from the CSPRNG or an error, never
 * weaker bytes. */
static int crypto_random_bytes(lua_State *L)
{
    unsigned char buf[RANDOM_BYTES_MAX];
    int isnum = 0;
    lua_Integer n = lua_tointegerx(L, 1, &isnum);
    enum encoding enc;
    if (!isnum || lua_type(L, 1) != LUA_TNUMBER || n < 1 || n > RANDOM_BYTES_MAX)
        return luaL_error(L, "crypto.random_bytes: n must be an integer from 1 to %d", RANDOM_BYTES_MAX);
    enc = check_encoding(L, 2, ENC_RAW, "random_bytes");
    if (RAND_bytes(buf, (int)n) != 1)
        return luaL_error(L, "crypto.random_bytes: the random generator failed");
    push_encoded(L, buf, (size_t)n, enc);
    OPENSSL_cleanse(buf, (size_t)n);
    return 1;
}

/* crypto.equal(given, expected) = secure_equal: constant-time comparison
 * of secrets, false when either is empty. */
static int crypto_equal(lua_State *L)
{
    size_t gl, el;
    const char *g = luaL_optlstring(L, 1, "", &gl);
    const char *e = luaL_optlstring(L, 2, "", &el);
    lua_pushboolean(L, sb_secret_equal(g, gl, e, el));
    return 1;
}

void sb_bind_crypto_open(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "hmac", crypto_hmac }, { "sha256", crypto_sha256 }, { "md5", crypto_md5 },
        { "random_bytes", crypto_random_bytes }, { "equal", crypto_equal }, { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    lua_setglobal(L, "crypto");
    lua_pushcfunction(L, crypto_equal);
    lua_setglobal(L, "secure_equal");
}
