/* Binding metrics.count (docs/lua-api.md): counters scripts name, kept by
 * the core (counters.c). */
#ifndef SB_BIND_METRICS_H
#define SB_BIND_METRICS_H

struct lua_State;

void sb_bind_metrics_open(struct lua_State *L);

#endif
