#ifndef SB_HANDLER_USE_H
#define SB_HANDLER_USE_H

/* Durable work (outbox jobs and result handlers, timers) refers to Lua
 * handlers by name. The model counts, per kind of work and name, what is
 * still pending, so that a reload whose code no longer resolves a name in
 * use is refused (loader.c) instead of failing that work later. */
void sb_handler_use(const char *what, const char *name, long delta);

typedef void (*sb_handler_use_fn)(const char *what, const char *name, long count, void *arg);
/* Every (what, name) with a count above zero, in name order. */
void sb_handler_uses(sb_handler_use_fn fn, void *arg);
void sb_handler_uses_free(void);

#endif
