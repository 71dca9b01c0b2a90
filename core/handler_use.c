/* Counts of pending durable work per handler name (handler_use.h). */
#include "handler_use.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct use {
    char *what, *name;
    long count;
};

static void *uses;   /* tsearch of struct use by (name, what) */

static int by_name(const void *a, const void *b)
{
    const struct use *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->what, y->what);
}

void sb_handler_use(const char *what, const char *name, long delta)
{
    struct use key = { (char *)what, (char *)name, 0 }, *u;
    void *found;
    if (!name || !*name || delta == 0)
        return;
    found = tfind(&key, &uses, by_name);
    if (found) {
        u = *(struct use **)found;
    } else {
        u = sb_xcalloc(1, sizeof *u);
        u->what = sb_xstrdup(what);
        u->name = sb_xstrdup(name);
        tsearch(u, &uses, by_name);
    }
    u->count += delta;
    if (u->count <= 0) {
        tdelete(u, &uses, by_name);
        free(u->what);
        free(u->name);
        free(u);
    }
}

struct walk {
    sb_handler_use_fn fn;
    void *arg;
};

static void visit(const void *node, VISIT which, void *closure)
{
    const struct use *u = *(const struct use *const *)node;
    const struct walk *w = closure;
    if (which == postorder || which == leaf)
        w->fn(u->what, u->name, u->count, w->arg);
}

void sb_handler_uses(sb_handler_use_fn fn, void *arg)
{
    struct walk w = { fn, arg };
    twalk_r(uses, visit, &w);
}

static void use_free(void *p)
{
    struct use *u = p;
    free(u->what);
    free(u->name);
    free(u);
}

void sb_handler_uses_free(void)
{
    tdestroy(uses, use_free);
    uses = NULL;
}
