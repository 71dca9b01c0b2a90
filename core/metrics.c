#include "metrics.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "util.h"

struct renderers {
    sb_metrics_render_fn *fns;
    size_t n;
};

static struct renderers core_renderers, last_renderers;

static void add_renderer(struct renderers *r, sb_metrics_render_fn fn)
{
    size_t i;
    for (i = 0; i < r->n; i++)
        if (r->fns[i] == fn)
            return;
    r->fns = sb_xrealloc(r->fns, (r->n + 1) * sizeof *r->fns);
    r->fns[r->n++] = fn;
}

void sb_metrics_register(sb_metrics_render_fn fn) { add_renderer(&core_renderers, fn); }

void sb_metrics_register_last(sb_metrics_render_fn fn) { add_renderer(&last_renderers, fn); }

void sb_metrics_render(struct evbuffer *out)
{
    size_t i;
    for (i = 0; i < core_renderers.n; i++)
        core_renderers.fns[i](out);
    for (i = 0; i < last_renderers.n; i++)
        last_renderers.fns[i](out);
}

void sb_metrics_free(void)
{
    free(core_renderers.fns);
    free(last_renderers.fns);
    memset(&core_renderers, 0, sizeof core_renderers);
    memset(&last_renderers, 0, sizeof last_renderers);
}

void sb_metrics_family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void sb_metrics_counter(struct evbuffer *out, const char *name, const char *help, unsigned long long v)
{
    sb_metrics_family(out, name, "counter", help);
    evbuffer_add_printf(out, "%s %llu\n", name, v);
}

void sb_metrics_gauge(struct evbuffer *out, const char *name, const char *help, double v)
{
    sb_metrics_family(out, name, "gauge", help);
    evbuffer_add_printf(out, "%s %.17g\n", name, v);
}

void sb_metrics_label_value(struct evbuffer *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            evbuffer_add_printf(out, "\\%c", *s);
        else if (*s == '\n')
            evbuffer_add(out, "\\n", 2);
        else
            evbuffer_add(out, s, 1);
    }
}
