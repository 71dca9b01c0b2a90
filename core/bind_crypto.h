/* Bindings crypto.* and secure_equal (docs/lua-api.md): OpenSSL's libcrypto. */
#ifndef SB_BIND_CRYPTO_H
#define SB_BIND_CRYPTO_H

struct lua_State;

void sb_bind_crypto_open(struct lua_State *L);

#endif
