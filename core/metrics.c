#include "metrics.h"

#include <stdlib.h>

#include <event2/buffer.h>

#include "util.h"

static sb_metrics_render_fn *renderers;
static size_t nrenderers;

void sb_metrics_register(sb_metrics_render_fn fn)
{
    size_t i;
    for (i = 0; i < nrenderers; i++)
        if (renderers[i] == fn)
            return;
    renderers = sb_xrealloc(renderers, (nrenderers + 1) * sizeof *renderers);
    renderers[nrenderers++] = fn;
}

void sb_metrics_render(struct evbuffer *out)
{
    size_t i;
    for (i = 0; i < nrenderers; i++)
        renderers[i](out);
}

void sb_metrics_free(void)
{
    free(renderers);
    renderers = NULL;
    nrenderers = 0;
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
