/* Bindings: state.set / get / delete (kvstate.c). */
#ifndef SB_BIND_STATE_H
#define SB_BIND_STATE_H

struct lua_State;

void sb_bind_state_open(struct lua_State *L);

#endif
