/* Script routes as jobs: the server's dispatch function. */
#ifndef SB_BIND_ROUTE_H
#define SB_BIND_ROUTE_H

struct sb_runtime;
struct sb_route_match;
struct evhttp_request;

void sb_route_dispatch(struct sb_runtime *rt, const struct sb_route_match *m, struct evhttp_request *req,
                       const char *method, const char *path);

#endif
