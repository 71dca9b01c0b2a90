/* Bindings: outbox.send / call / requeue / stats (outbox.c), and the runner of outbox handlers. */
#ifndef SB_BIND_OUTBOX_H
#define SB_BIND_OUTBOX_H

struct lua_State;

void sb_bind_outbox_open(struct lua_State *L);
/* Registers the runner that starts handler jobs. */
void sb_bind_outbox_runner(void);

#endif
