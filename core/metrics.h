/* Prometheus text on /metrics. The registry knows no module: each module
 * registers a function that writes its own families, so adding a metric
 * never makes this file depend on the module that owns it. */
#ifndef SB_METRICS_H
#define SB_METRICS_H

struct evbuffer;

typedef void (*sb_metrics_render_fn)(struct evbuffer *out);

/* Registers fn once (a second registration of the same fn is ignored). */
void sb_metrics_register(sb_metrics_render_fn fn);
/* The same for families that scripts name: rendered after every core
 * family, so the order stays the same whenever core modules register. */
void sb_metrics_register_last(sb_metrics_render_fn fn);
void sb_metrics_render(struct evbuffer *out);
void sb_metrics_free(void);

/* Helpers for renderers. */
void sb_metrics_family(struct evbuffer *out, const char *name, const char *type, const char *help);
void sb_metrics_counter(struct evbuffer *out, const char *name, const char *help, unsigned long long v);
void sb_metrics_gauge(struct evbuffer *out, const char *name, const char *help, double v);
/* Appends s escaped as a label value (without the quotes). */
void sb_metrics_label_value(struct evbuffer *out, const char *s);

#endif
