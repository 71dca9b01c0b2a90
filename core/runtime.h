/* A Lua runtime: one lua_State with the sandbox, the bindings and every
 * script loaded. A new one is built for each (re)load (loader.c) and
 * swapped in only when it loaded cleanly; jobs keep the runtime they started on alive
 * through a reference count, and a retired runtime is closed when its last
 * job ends. */
#ifndef SB_RUNTIME_H
#define SB_RUNTIME_H

#include <stddef.h>

#include "config.h"
#include "util.h"

struct lua_State;

struct sb_route {
    char *method;        /* "GET", ..., or "*" */
    char *pattern;       /* "/v1/channels/{instance}/messages" */
    char *handler;       /* global function name, dots allowed */
    char *calls;         /* a handler name the route's function calls (inbound.endpoint), or NULL */
    char *where;         /* "file:line" of the route() call */
    size_t nsegs;
    char **segs;         /* pattern split on '/'; "{name}" captures */
};

#define SB_ROUTE_MAX_PARAMS 8

struct sb_route_match {
    const struct sb_route *route;
    size_t nparams;
    const char *names[SB_ROUTE_MAX_PARAMS];     /* point into the route */
    const char *values[SB_ROUTE_MAX_PARAMS];    /* point into the matched path */
    size_t value_lens[SB_ROUTE_MAX_PARAMS];
};

/* Receives every load error when a build is asked to keep going (--check). */
typedef void (*sb_error_report_fn)(const struct sb_error *err);

struct sb_runtime {
    struct lua_State *L;
    unsigned generation;
    int refs;                /* 1 while current, +1 per live job */
    struct sb_config *cfg;   /* the config this runtime was built with */
    size_t mem_used;
    size_t mem_limit;
    int mem_enforce;         /* >0 while script code runs: the cap applies */
    void *refused_ptr;       /* the last allocation refused (see runtime_alloc) */
    size_t refused_osize, refused_nsize;
    int loading;             /* route() and load-time timers are allowed */
    struct sb_route *routes;
    size_t nroutes, routes_cap;
    int engine_ref;          /* registry ref: the prelude's table of engine functions */
    int http_error_mt_ref;   /* registry ref: metatable marking http_error() objects */
    int json_encode_ref, json_decode_ref;
    int config_ref;          /* registry ref: the read-only config view */
    sb_error_report_fn report_all;
    int load_errors;
};

/* A new runtime: a Lua state with the capped allocator and the sandbox,
 * nothing loaded yet (loader.c builds the rest). */
struct sb_runtime *sb_runtime_create(struct sb_config *cfg, unsigned generation, struct sb_error *err);
/* Loads a script file as a chunk named display ("@display"), text only.
 * Stack: [-0, +1] (the chunk or an error message). */
int sb_runtime_load_chunk(struct lua_State *L, const char *path, const char *display);

/* Modules (require and the loader share them). sb_module_state says
 * whether `name` is absent, loading or loaded; given a path, a name loaded
 * from another file is SB_MODULE_TAKEN with msg saying by which.
 * sb_module_begin marks it loading from path, sb_module_end stores the value
 * at value_idx (0 or nil: true), sb_module_forget drops a failed one. */
enum { SB_MODULE_ABSENT, SB_MODULE_LOADING, SB_MODULE_LOADED, SB_MODULE_TAKEN };
int sb_module_state(struct lua_State *L, const char *name, const char *path, char *msg, size_t msg_size);
void sb_module_begin(struct lua_State *L, const char *name, const char *path);
void sb_module_end(struct lua_State *L, const char *name, int value_idx);
void sb_module_forget(struct lua_State *L, const char *name);
/* Called when the allocator refuses memory to script code (the job layer
 * stops the running job). */
void sb_runtime_set_memory_hook(void (*hook)(void));
void sb_runtime_register_metrics(void);
/* A full garbage collection of the current runtime (between jobs). */
void sb_runtime_collect(void);
void sb_runtime_ref(struct sb_runtime *rt);
void sb_runtime_unref(struct sb_runtime *rt);

/* The runtime new work starts on. Swapping takes over the caller's reference. */
struct sb_runtime *sb_runtime_current(void);
void sb_runtime_swap(struct sb_runtime *rt);
int sb_runtimes_live(void);

/* The runtime a Lua state (or any of its threads) belongs to. */
struct sb_runtime *sb_runtime_of(struct lua_State *L);

/* Registers a route during load; returns 0 or -1 with a message. */
/* calls: a handler name that must resolve when the load ends, or NULL. */
int sb_runtime_add_route(struct sb_runtime *rt, const char *method, const char *pattern, const char *calls,
                         const char *handler, const char *where, char *msg, size_t msg_size);

/* Finds the route for method and raw path. Returns 1 on a match (filled m),
 * 0 if no route fits. When a route matches the path but not the method,
 * *path_known is set and allow receives the allowed methods. */
int sb_runtime_match(const struct sb_runtime *rt, const char *method, const char *path,
                     struct sb_route_match *m, int *path_known, char *allow, size_t allow_size);

/* Splits a route pattern; exposed for unit tests. Returns 0 or -1. */
int sb_route_compile(struct sb_route *r, const char *pattern, char *msg, size_t msg_size);
void sb_route_free(struct sb_route *r);
int sb_route_match_path(const struct sb_route *r, const char *path, struct sb_route_match *m);

#endif
