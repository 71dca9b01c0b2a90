/* Bindings: timer.after / every / cancel (timer.c), and the runner of timer handlers. */
#ifndef SB_BIND_TIMER_H
#define SB_BIND_TIMER_H

struct lua_State;

void sb_bind_timer_open(struct lua_State *L);
/* Registers the runner that starts handler jobs. */
void sb_bind_timer_runner(void);

#endif
