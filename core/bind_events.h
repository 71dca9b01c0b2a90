/* Bindings: events.on / agent_status / valid / stream (bus.c, sse.c), and
 * the runner of event handlers. */
#ifndef SB_BIND_EVENTS_H
#define SB_BIND_EVENTS_H

struct lua_State;
struct sb_sse_request;

void sb_bind_events_open(struct lua_State *L);
/* The stream request a route returned at idx (taken from its userdata),
 * or NULL when the value is no stream. */
struct sb_sse_request *sb_bind_events_take_stream(struct lua_State *L, int idx);
/* Registers the runner that starts handler jobs. */
void sb_bind_events_runner(void);

#endif
