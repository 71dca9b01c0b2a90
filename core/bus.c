/* The bus's events and readers: journal rows read back once committed,
 * shared through the tail, and each reader's position (bus.h). Subscribers
 * are in bus_sub.c. */
#include "bus_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "store.h"
#include "txn.h"
#include "util.h"

#define TAIL_MAX 1024            /* recent events kept for the readers near the head */
#define READ_PAGE 256            /* events per store read */
#define READ_RETRY 1.0           /* seconds before a failed read is tried again */

const char *const sb_bus_names[] = {
    "conversation.created", "message.created", "conversation.state_changed", "conversation.assigned",
    "tag.added", "tag.removed", "livechat.requested", "livechat.started", "livechat.ended",
    "agent.status_changed", NULL
};

struct sb_bus_reader {
    int64_t read_to;             /* every event <= read_to was taken or not wanted */
    int64_t read_upto;           /* a store read's view: the newest id given out when it was asked */
    const struct sb_bus_reader_ops *ops;
    void *arg;
    int reading;                 /* a store read is on its way */
    int freed;                   /* freed meanwhile: the read's answer frees it */
    int kick_queued;
    struct sb_bus_reader *prev, *next, *next_kick;
};

static struct sb_bus_reader *readers, *kick_head, *kick_tail;
static size_t nreaders;
static struct event *kick_ev, *retry_ev;

/* The tail: every engine event with tail_from < id <= tail_to, oldest first. */
static struct sb_bus_event *tail[TAIL_MAX];
static int tail_start, tail_n, tail_reading, stopped;
static int64_t tail_from, tail_to, tail_upto;
static int64_t committed;        /* the newest event id known committed */
static unsigned long long read_failures;

static struct sb_bus_event *tail_at(int i) { return tail[(tail_start + i) % TAIL_MAX]; }

/* Events */

void sb_bus_event_ref(struct sb_bus_event *ev) { ev->refs++; }

void sb_bus_event_unref(struct sb_bus_event *ev)
{
    if (!ev || --ev->refs > 0)
        return;
    free(ev->name);
    free(ev->conversation);
    free(ev->channel);
    free(ev->data);
    free(ev->json);
    free(ev);
}

/* A row of store_fetch_bus_events as an event (one reference, the caller's). */
static struct sb_bus_event *event_from_row(const struct store_row *r)
{
    struct sb_bus_event *ev = sb_xcalloc(1, sizeof *ev);
    struct evbuffer *b = evbuffer_new();
    ev->refs = 1;
    ev->id = strtoll(r->text[0], NULL, 10);
    ev->conversation = sb_xstrdup(r->text[1] ? r->text[1] : "");
    ev->channel = sb_xstrdup_or_null(r->text[2]);
    ev->depth = (int)r->num[3];
    ev->at = r->num[4];
    ev->name = sb_xstrdup(r->text[5] ? r->text[5] : "");
    ev->data = sb_xstrdup(r->text[6] ? r->text[6] : "{}");
    evbuffer_add_printf(b, "{\"id\":%lld,\"name\":", (long long)ev->id);
    sb_json_quote(b, ev->name, strlen(ev->name));
    if (ev->conversation[0]) {
        evbuffer_add_printf(b, ",\"conversation\":");
        sb_json_quote(b, ev->conversation, strlen(ev->conversation));
    }
    evbuffer_add_printf(b, ",\"at\":%.3f,\"data\":%s}", ev->at, ev->data);
    ev->json_len = evbuffer_get_length(b);
    ev->json = sb_xmalloc(ev->json_len + 1);
    evbuffer_remove(b, ev->json, ev->json_len);
    ev->json[ev->json_len] = '\0';
    evbuffer_free(b);
    return ev;
}

int sb_bus_known_name(const char *name)
{
    int i;
    for (i = 0; sb_bus_names[i]; i++)
        if (!strcmp(sb_bus_names[i], name))
            return 1;
    return 0;
}

int sb_bus_pattern_match(const char *pattern, const char *name)
{
    size_t n = strlen(pattern);
    if (!strcmp(pattern, "*"))
        return 1;
    if (n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '.')
        return strncmp(pattern, name, n - 1) == 0;
    return strcmp(pattern, name) == 0;
}

int sb_bus_check_pattern(const char *pattern, char *err, size_t err_size)
{
    size_t n = strlen(pattern);
    int i;
    if (!strcmp(pattern, "*") || sb_bus_known_name(pattern))
        return 0;
    if (n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '.') {
        for (i = 0; sb_bus_names[i]; i++)
            if (sb_bus_pattern_match(pattern, sb_bus_names[i]))
                return 0;
        snprintf(err, err_size, "'%s' matches no event (docs/events.md lists them)", pattern);
        return -1;
    }
    snprintf(err, err_size, "unknown event '%s': an event name, \"prefix.*\" or \"*\" (docs/events.md)", pattern);
    return -1;
}

struct sb_bus_filter *sb_bus_filter_new(void) { return sb_xcalloc(1, sizeof(struct sb_bus_filter)); }

static void add_string(char ***v, int *n, const char *s)
{
    *v = sb_xrealloc(*v, (size_t)(*n + 1) * sizeof **v);
    (*v)[(*n)++] = sb_xstrdup(s);
}

void sb_bus_filter_add_pattern(struct sb_bus_filter *f, const char *pattern)
{
    add_string(&f->patterns, &f->npatterns, pattern);
}

void sb_bus_filter_add_channel(struct sb_bus_filter *f, const char *channel)
{
    add_string(&f->channels, &f->nchannels, channel);
}

int sb_bus_filter_match(const struct sb_bus_filter *f, const struct sb_bus_event *ev)
{
    int i, ok = f->npatterns == 0;
    for (i = 0; i < f->npatterns && !ok; i++)
        ok = sb_bus_pattern_match(f->patterns[i], ev->name);
    if (!ok || (f->conversation && strcmp(f->conversation, ev->conversation) != 0))
        return 0;
    if (!f->restricted)
        return 1;
    if (!ev->conversation[0])
        return f->desk_needle && ev->data && strstr(ev->data, f->desk_needle) != NULL;
    for (i = 0; i < f->nchannels && ev->channel; i++)
        if (!strcmp(f->channels[i], ev->channel))
            return 1;
    return 0;
}

void sb_bus_filter_free(struct sb_bus_filter *f)
{
    int i;
    if (!f)
        return;
    for (i = 0; i < f->npatterns; i++)
        free(f->patterns[i]);
    for (i = 0; i < f->nchannels; i++)
        free(f->channels[i]);
    free(f->patterns);
    free(f->channels);
    free(f->conversation);
    free(f->desk_needle);
    free(f);
}

void sb_bus_journal(struct sb_txn *t, const char *type, const char *data_json)
{
    sb_txn_write(t, store_insert_event("", type, data_json, sb_now_wall(), sb_txn_event_depth(t)));
}

int64_t sb_bus_head(void) { return store_last_event_id(); }

/* The tail */

static void tail_clear(void)
{
    while (tail_n > 0) {
        sb_bus_event_unref(tail[tail_start]);
        tail_start = (tail_start + 1) % TAIL_MAX;
        tail_n--;
    }
    tail_start = 0;
}

static void tail_push(struct sb_bus_event *ev)
{
    if (tail_n == TAIL_MAX) {
        struct sb_bus_event *old = tail[tail_start];
        tail_from = old->id;
        sb_bus_event_unref(old);
        tail_start = (tail_start + 1) % TAIL_MAX;
        tail_n--;
    }
    tail[(tail_start + tail_n) % TAIL_MAX] = ev;
    tail_n++;
}

/* The first index of the tail with an id above `after`. */
static int tail_index_after(int64_t after)
{
    int lo = 0, hi = tail_n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (tail_at(mid)->id <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void tail_read(void);
static void reader_pump(struct sb_bus_reader *r);

static void pump_all(void)
{
    struct sb_bus_reader *r, *next;
    for (r = readers; r; r = next) {
        next = r->next;
        reader_pump(r);
    }
}

static void retry_reads(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pump_all();
    tail_read();
}

static void read_failed(const char *error)
{
    struct timeval tv = sb_timeval(READ_RETRY);
    read_failures++;
    sb_log(SB_LOG_ERROR, "events: cannot read the journal", "error", error, NULL);
    if (!retry_ev)
        retry_ev = evtimer_new(sb_base, retry_reads, NULL);
    evtimer_add(retry_ev, &tv);
}

static void tail_fetched(void *arg, const struct store_rows *rows, const char *error)
{
    int i, n = store_rows_count(rows);
    (void)arg;
    tail_reading = 0;
    if (error) {
        read_failed(error);
        return;
    }
    for (i = 0; i < n; i++) {
        struct store_row row;
        struct sb_bus_event *ev;
        store_rows_get(rows, i, &row, NULL);
        ev = event_from_row(&row);
        if (ev->id <= tail_to) {   /* the tail was reset meanwhile */
            sb_bus_event_unref(ev);
            continue;
        }
        tail_push(ev);
        tail_to = ev->id;
    }
    /* fewer than asked: every id given out before the read was seen */
    if (n < READ_PAGE && tail_upto > tail_to)
        tail_to = tail_upto;
    pump_all();
    tail_read();
}

/* Reads what committed after the tail, while someone reads at all. */
static void tail_read(void)
{
    if (tail_reading || stopped || nreaders == 0 || committed <= tail_to || !store_running())
        return;
    tail_reading = 1;
    tail_upto = store_sent_event_id();
    store_fetch_bus_events(tail_to, READ_PAGE, tail_fetched, NULL);
}

/* The store's events hook: a batch with journal events committed. */
static void on_committed(int64_t last_id)
{
    if (last_id > committed)
        committed = last_id;
    if (nreaders == 0 && !tail_reading) {
        /* nobody reads: nothing to keep; a reader that comes later and
         * starts further back reads the store */
        tail_clear();
        tail_from = tail_to = committed;
        return;
    }
    tail_read();
}

/* Readers */

static void reader_release(struct sb_bus_reader *r) { free(r); }

static void reader_fetched(void *arg, const struct store_rows *rows, const char *error)
{
    struct sb_bus_reader *r = arg;
    int i, n = store_rows_count(rows), room, all = 1;
    r->reading = 0;
    if (r->freed) {
        reader_release(r);
        return;
    }
    if (error) {
        read_failed(error);
        return;
    }
    room = r->ops->room(r->arg);
    for (i = 0; i < n; i++) {
        struct store_row row;
        struct sb_bus_event *ev;
        store_rows_get(rows, i, &row, NULL);
        ev = event_from_row(&row);
        if (ev->id > r->read_to && r->ops->wants(r->arg, ev)) {
            if (room <= 0) {
                /* read again when it has room */
                sb_bus_event_unref(ev);
                all = 0;
                break;
            }
            room = r->ops->take(r->arg, ev) ? room - 1 : 0;
        }
        if (ev->id > r->read_to)
            r->read_to = ev->id;
        sb_bus_event_unref(ev);
    }
    if (all && n < READ_PAGE && r->read_upto > r->read_to)
        r->read_to = r->read_upto;
    reader_pump(r);
}

/* Hands the reader what it has room for: from the tail when its position
 * is inside it, else from the store. Stops when it has no room, caught up
 * or waits for a read. */
static void reader_pump(struct sb_bus_reader *r)
{
    while (!r->reading && !r->freed && !stopped) {
        int room = r->ops->room(r->arg), i;
        if (room <= 0)
            return;
        if (r->read_to >= tail_to) {
            tail_read();
            return;
        }
        if (r->read_to < tail_from) {
            r->reading = 1;
            r->read_upto = store_sent_event_id();
            store_fetch_bus_events(r->read_to, READ_PAGE, reader_fetched, r);
            return;
        }
        for (i = tail_index_after(r->read_to); i < tail_n && room > 0; i++) {
            struct sb_bus_event *ev = tail_at(i);
            if (r->ops->wants(r->arg, ev))
                room = r->ops->take(r->arg, ev) ? room - 1 : 0;
            r->read_to = ev->id;
        }
        if (i == tail_n)
            r->read_to = tail_to;
    }
}

static void kick_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    while (kick_head) {
        struct sb_bus_reader *r = kick_head;
        kick_head = r->next_kick;
        if (!kick_head)
            kick_tail = NULL;
        r->kick_queued = 0;
        r->next_kick = NULL;
        reader_pump(r);
    }
}

void sb_bus_reader_kick(struct sb_bus_reader *r)
{
    if (r->kick_queued || r->freed)
        return;
    r->kick_queued = 1;
    if (kick_tail)
        kick_tail->next_kick = r;
    else
        kick_head = r;
    kick_tail = r;
    if (!kick_ev)
        kick_ev = event_new(sb_base, -1, 0, kick_due, NULL);
    event_active(kick_ev, 0, 0);
}

struct sb_bus_reader *sb_bus_reader_new(int64_t after, const struct sb_bus_reader_ops *ops, void *arg)
{
    struct sb_bus_reader *r = sb_xcalloc(1, sizeof *r);
    r->read_to = after;
    r->ops = ops;
    r->arg = arg;
    r->next = readers;
    if (readers)
        readers->prev = r;
    readers = r;
    nreaders++;
    sb_bus_reader_kick(r);
    return r;
}

int64_t sb_bus_reader_position(const struct sb_bus_reader *r) { return r->read_to; }

void sb_bus_reader_free(struct sb_bus_reader *r)
{
    struct sb_bus_reader **p, *prev = NULL;
    if (!r)
        return;
    if (r->kick_queued) {
        for (p = &kick_head; *p; prev = *p, p = &(*p)->next_kick) {
            if (*p == r) {
                *p = r->next_kick;
                if (kick_tail == r)
                    kick_tail = prev;
                break;
            }
        }
    }
    if (r->prev)
        r->prev->next = r->next;
    else
        readers = r->next;
    if (r->next)
        r->next->prev = r->prev;
    nreaders--;
    r->freed = 1;
    if (!r->reading)
        reader_release(r);
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_gauge(out, "switchboard_events_tail", "Recent engine events held in memory for readers near the head.",
                     (double)tail_n);
    sb_metrics_gauge(out, "switchboard_events_readers", "Readers of the event bus (subscribers and streams).",
                     (double)nreaders);
    sb_metrics_counter(out, "switchboard_events_read_failures_total", "Journal reads of the event bus that failed.",
                       read_failures);
}

/* The bus follows the journal from its current end. */
void sb_bus_start_reading(void)
{
    static int registered;
    committed = tail_from = tail_to = store_last_event_id();
    store_set_events_hook(on_committed);
    if (!registered) {
        sb_metrics_register(render_metrics);
        registered = 1;
    }
}

void sb_bus_stop_reading(void) { stopped = 1; }

void sb_bus_readers_free(void)
{
    while (readers)
        sb_bus_reader_free(readers);
    tail_clear();
    if (kick_ev)
        event_free(kick_ev);
    if (retry_ev)
        event_free(retry_ev);
    kick_ev = retry_ev = NULL;
    kick_head = kick_tail = NULL;
}
