/* Bindings: log, now, sleep, config, route, http_error, bounded,
 * generation (and json). */
#ifndef SB_BIND_CORE_H
#define SB_BIND_CORE_H

struct sb_runtime;

void sb_bind_core_open(struct sb_runtime *rt);

#endif
