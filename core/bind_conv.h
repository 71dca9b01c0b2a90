/* Bindings: conversations and conversation handles (conv.c), store page reads. */
#ifndef SB_BIND_CONV_H
#define SB_BIND_CONV_H

struct lua_State;

void sb_bind_conv_open(struct lua_State *L);

#endif
