/* Bindings: conversations.read, the store's pages for the read API. */
#ifndef SB_BIND_READ_H
#define SB_BIND_READ_H

struct lua_State;

/* Adds read() to the `conversations` table on top of the stack. */
void sb_bind_read_open(struct lua_State *L);

#endif
