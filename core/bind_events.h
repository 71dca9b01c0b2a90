/* Bindings: events.on / events.agent_status (bus.c), and the runner of
 * event handlers. */
#ifndef SB_BIND_EVENTS_H
#define SB_BIND_EVENTS_H

struct lua_State;

void sb_bind_events_open(struct lua_State *L);
/* Registers the runner that starts handler jobs. */
void sb_bind_events_runner(void);

#endif
