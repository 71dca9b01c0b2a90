#include "counters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "log.h"
#include "metrics.h"
#include "util.h"

#define RESERVED_PREFIX "switchboard_"
#define NAME_SUFFIX "_total"
#define HELP "Counted by scripts (metrics.count)."
/* A series key: "name\0value\0" per label, labels sorted by name. Names and
 * values hold no NUL, so the key is unambiguous and compares in label order. */
#define KEY_MAX (SB_COUNTER_LABELS_MAX * (SB_COUNTER_LABEL_NAME_MAX + 1 + SB_COUNTER_VALUE_MAX + 1))

struct series {
    char *key;
    size_t key_len;
    uint64_t value;
};

struct family {
    char *name;
    struct series *series;   /* sorted by key */
    size_t nseries, cap;
    int warned;              /* the series limit was logged for this family */
};

static struct family *families;   /* sorted by name */
static size_t nfamilies, families_cap;
static size_t total_series;

static int lower_digit_or_underscore(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

const char *sb_counter_name_problem(const char *name, size_t len)
{
    size_t i, suffix = sizeof NAME_SUFFIX - 1;
    if (len > SB_COUNTER_NAME_MAX)
        return "is longer than 100 bytes";
    if (len <= suffix || name[0] < 'a' || name[0] > 'z' || memcmp(name + len - suffix, NAME_SUFFIX, suffix) != 0)
        return "must match ^[a-z][a-z0-9_]*_total$";
    for (i = 0; i < len; i++)
        if (!lower_digit_or_underscore(name[i]))
            return "must match ^[a-z][a-z0-9_]*_total$";
    if (strncmp(name, RESERVED_PREFIX, sizeof RESERVED_PREFIX - 1) == 0)
        return "is reserved (names starting with switchboard_ are the core's)";
    return NULL;
}

const char *sb_counter_label_problem(const struct sb_counter_label *label)
{
    const char *s = label->name;
    size_t i, len = strlen(s);
    if (len == 0 || len > SB_COUNTER_LABEL_NAME_MAX)
        return "must be 1-100 bytes";
    if (s[0] >= '0' && s[0] <= '9')
        return "must match ^[a-z_][a-z0-9_]*$";
    for (i = 0; i < len; i++)
        if (!lower_digit_or_underscore(s[i]))
            return "must match ^[a-z_][a-z0-9_]*$";
    if (s[0] == '_' && s[1] == '_')
        return "is reserved (label names starting with __ are Prometheus's)";
    if (label->value_len > SB_COUNTER_VALUE_MAX)
        return "has a value longer than 128 bytes";
    if (memchr(label->value, '\0', label->value_len))
        return "has a value with a NUL byte";
    return NULL;
}

/* Index of the first of n sorted elements not below the one sought
 * (cmp(ctx, i) compares element i with it); *found tells whether it is equal. */
static size_t lower_bound(size_t n, int (*cmp)(const void *ctx, size_t i), const void *ctx, int *found)
{
    size_t lo = 0, hi = n;
    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp(ctx, mid);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int family_cmp(const void *name, size_t i) { return strcmp(families[i].name, name); }

static size_t family_slot(const char *name, int *found)
{
    return lower_bound(nfamilies, family_cmp, name, found);
}

struct series_sought {
    const struct family *f;
    const char *key;
    size_t key_len;
};

static int series_cmp(const void *ctx, size_t i)
{
    const struct series_sought *s = ctx;
    const char *a = s->f->series[i].key;
    size_t alen = s->f->series[i].key_len;
    int c = memcmp(a, s->key, alen < s->key_len ? alen : s->key_len);
    if (c)
        return c;
    return alen < s->key_len ? -1 : alen > s->key_len;
}

static size_t series_slot(const struct family *f, const char *key, size_t key_len, int *found)
{
    struct series_sought s = { f, key, key_len };
    return lower_bound(f->nseries, series_cmp, &s, found);
}

/* Writes the key of labels into key (KEY_MAX bytes); returns its length,
 * or (size_t)-1 when there are too many labels or one is named twice. */
static size_t build_key(const struct sb_counter_label *labels, size_t nlabels, char *key)
{
    const struct sb_counter_label *sorted[SB_COUNTER_LABELS_MAX];
    size_t i, j, len = 0;
    if (nlabels > SB_COUNTER_LABELS_MAX)
        return (size_t)-1;
    for (i = 0; i < nlabels; i++) {
        const struct sb_counter_label *l = &labels[i];
        for (j = i; j > 0 && strcmp(sorted[j - 1]->name, l->name) > 0; j--)
            sorted[j] = sorted[j - 1];
        sorted[j] = l;
    }
    for (i = 0; i < nlabels; i++) {
        size_t nlen = strlen(sorted[i]->name);
        if (i > 0 && strcmp(sorted[i - 1]->name, sorted[i]->name) == 0)
            return (size_t)-1;
        memcpy(key + len, sorted[i]->name, nlen + 1);
        len += nlen + 1;
        memcpy(key + len, sorted[i]->value, sorted[i]->value_len);
        len += sorted[i]->value_len;
        key[len++] = '\0';
    }
    return len;
}

static struct family *family_insert(size_t at, const char *name)
{
    struct family *f;
    if (nfamilies == 0)
        sb_metrics_register_last(sb_counters_render);
    if (nfamilies == families_cap) {
        families_cap = families_cap ? 2 * families_cap : 8;
        families = sb_xrealloc(families, families_cap * sizeof *families);
    }
    memmove(&families[at + 1], &families[at], (nfamilies - at) * sizeof *families);
    nfamilies++;
    f = &families[at];
    memset(f, 0, sizeof *f);
    f->name = sb_xstrdup(name);
    return f;
}

static void series_insert(struct family *f, size_t at, const char *key, size_t key_len, uint64_t n)
{
    struct series *s;
    if (f->nseries == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 4;
        f->series = sb_xrealloc(f->series, f->cap * sizeof *f->series);
    }
    memmove(&f->series[at + 1], &f->series[at], (f->nseries - at) * sizeof *f->series);
    f->nseries++;
    total_series++;
    s = &f->series[at];
    s->key = sb_xmalloc(key_len ? key_len : 1);
    memcpy(s->key, key, key_len);
    s->key_len = key_len;
    s->value = n;
}

/* A family refused for the limit is logged once. One that has no series yet
 * is kept (empty, not rendered) to remember that, unless as many families
 * as max_series exist already: memory stays bounded whatever names come. */
static void refuse_for_limit(struct family *f, size_t at, const char *name, size_t max_series)
{
    char max[32];
    if (f && f->warned)
        return;
    if (!f) {
        if (nfamilies >= max_series)
            return;
        f = family_insert(at, name);
    }
    f->warned = 1;
    snprintf(max, sizeof max, "%zu", max_series);
    sb_log(SB_LOG_WARN, "metrics: series limit reached", "name", name, "max_series", max, NULL);
}

enum sb_counter_outcome sb_counter_add(const char *name, const struct sb_counter_label *labels, size_t nlabels,
                                       uint64_t n, size_t max_series)
{
    char key[KEY_MAX];
    size_t i, key_len, at;
    int found;
    struct family *f = NULL;
    struct series *s;

    if (n == 0 || sb_counter_name_problem(name, strlen(name)))
        return SB_COUNTER_INVALID;
    for (i = 0; i < nlabels && i < SB_COUNTER_LABELS_MAX; i++)
        if (sb_counter_label_problem(&labels[i]))
            return SB_COUNTER_INVALID;
    key_len = build_key(labels, nlabels, key);
    if (key_len == (size_t)-1)
        return SB_COUNTER_INVALID;

    at = family_slot(name, &found);
    if (found) {
        f = &families[at];
        i = series_slot(f, key, key_len, &found);
        if (found) {
            s = &f->series[i];
            s->value = s->value > UINT64_MAX - n ? UINT64_MAX : s->value + n;
            return SB_COUNTER_COUNTED;
        }
    } else {
        i = 0;
    }
    if (total_series >= max_series) {
        refuse_for_limit(f, at, name, max_series);
        return SB_COUNTER_FULL;
    }
    if (!f)
        f = family_insert(at, name);
    series_insert(f, i, key, key_len, n);
    return SB_COUNTER_COUNTED;
}

size_t sb_counters_series(void) { return total_series; }

static void render_series(struct evbuffer *out, const char *name, const struct series *s)
{
    const char *p = s->key, *end = s->key + s->key_len;
    evbuffer_add(out, name, strlen(name));
    if (p < end) {
        evbuffer_add(out, "{", 1);
        while (p < end) {
            const char *value = p + strlen(p) + 1;
            if (p != s->key)
                evbuffer_add(out, ",", 1);
            evbuffer_add_printf(out, "%s=\"", p);
            sb_metrics_label_value(out, value);
            evbuffer_add(out, "\"", 1);
            p = value + strlen(value) + 1;
        }
        evbuffer_add(out, "}", 1);
    }
    evbuffer_add_printf(out, " %llu\n", (unsigned long long)s->value);
}

void sb_counters_render(struct evbuffer *out)
{
    size_t i, j;
    for (i = 0; i < nfamilies; i++) {
        const struct family *f = &families[i];
        if (f->nseries == 0)
            continue;
        sb_metrics_family(out, f->name, "counter", HELP);
        for (j = 0; j < f->nseries; j++)
            render_series(out, f->name, &f->series[j]);
    }
}

void sb_counters_free_all(void)
{
    size_t i, j;
    for (i = 0; i < nfamilies; i++) {
        for (j = 0; j < families[i].nseries; j++)
            free(families[i].series[j].key);
        free(families[i].series);
        free(families[i].name);
    }
    free(families);
    families = NULL;
    nfamilies = families_cap = total_series = 0;
}
