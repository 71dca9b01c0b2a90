/* SQLite (WAL) backend of the store. One connection, used only by the store
 * thread once it runs (and by the start-up loaders before that). The loop
 * thread hands over work items (a batch of writes, a read, a fetch)
 * through a mutex-protected queue and learns about finished ones through a
 * pipe watched by the event loop.
 *
 * Group commit: writes join the open batch; a batch is handed to the thread
 * as soon as none is in flight, so under load each commit (and each fsync)
 * carries every write that arrived while the previous one was running.
 *
 * After a failed batch the thread fails every later batch until it sees a
 * resume marker (store_recover), so nothing written on top of the failed
 * writes reaches the disk before the loop has rolled its memory back. */
#include "store.h"
#include "store_int.h"

#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "log.h"
#include "loop.h"
#include "metrics.h"

enum work_kind { WORK_BATCH, WORK_PAGE, WORK_FETCH, WORK_RESUME, WORK_STOP };

struct fetched_row {
    int tag, n;
    char **text;
    size_t *len;
    double *num;
};

struct store_rows {
    int nrows, cap;
    struct fetched_row *rows;
};

struct work {
    enum work_kind kind;
    uint64_t seq;
    struct store_op *ops, *ops_tail;
    size_t nops;
    enum store_page page;
    struct store_page_query query;   /* strings owned (copied) */
    enum fetch_kind fetch;
    store_read_fn read_fn;
    store_fetch_fn fetch_fn;
    void *arg;
    int ok;
    int64_t last_event_id;           /* batch: the newest journal event it holds */
    char *result;
    size_t result_len;
    struct store_rows rows;
    char error[256];
    struct work *next;
};

struct waiter {
    uint64_t seq;
    store_commit_fn fn;
    void *arg;
    struct waiter *next;
};


static pthread_t thread;
static int thread_running;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct work *todo_head, *todo_tail;   /* loop -> thread */
static struct work *done_head, *done_tail;   /* thread -> loop */
static int notify_pipe[2] = { -1, -1 };
static struct event *notify_ev, *submit_ev;
static int poisoned;                         /* store thread only: fail batches until a resume marker */

/* loop-thread state */
static struct work *open_batch;
static uint64_t last_seq, finished_seq;
static uint64_t failed_from, failed_through; /* the latest range of batches that failed */
static int batches_in_flight;
static struct waiter *waiters, *waiters_tail;
static struct store_stats stats;
static void (*flush_hook)(void);
static void (*batch_hook)(uint64_t seq, int ok);
static int flushing;
static uint64_t recovered_through;
static int64_t last_event_id;                /* journal event ids, given in batch order */
static int64_t sent_event_id;                /* the newest of them in a batch sent to the thread */
static void (*events_hook)(int64_t last_id);

void store_set_flush_hook(void (*hook)(void)) { flush_hook = hook; }
void store_set_batch_hook(void (*hook)(uint64_t seq, int ok)) { batch_hook = hook; }
void store_set_events_hook(void (*hook)(int64_t last_id)) { events_hook = hook; }
int64_t store_last_event_id(void) { return last_event_id; }
int64_t store_sent_event_id(void) { return sent_event_id; }

/* Lets the flush hook add its coalesced writes to the open batch. */
static void run_flush_hook(void)
{
    if (flush_hook && !flushing) {
        flushing = 1;
        flush_hook();
        flushing = 0;
    }
}

const struct store_stats *store_stats(void) { return &stats; }
uint64_t store_committed_seq(void) { return finished_seq; }
uint64_t store_pending_seq(void) { return open_batch ? open_batch->seq : finished_seq; }
uint64_t store_last_seq(void) { return last_seq; }

int store_parse_sync(const char *name, enum store_sync *out)
{
    if (!strcmp(name, "full"))
        *out = STORE_SYNC_FULL;
    else if (!strcmp(name, "normal"))
        *out = STORE_SYNC_NORMAL;
    else if (!strcmp(name, "off"))
        *out = STORE_SYNC_OFF;
    else
        return -1;
    return 0;
}

static void rows_free(struct store_rows *r)
{
    int i, j;
    for (i = 0; i < r->nrows; i++) {
        for (j = 0; j < r->rows[i].n; j++)
            free(r->rows[i].text[j]);
        free(r->rows[i].text);
        free(r->rows[i].len);
        free(r->rows[i].num);
    }
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static void work_free(struct work *w)
{
    while (w->ops) {
        struct store_op *next = w->ops->next;
        store_op_free(w->ops);
        w->ops = next;
    }
    store_query_free(&w->query);
    rows_free(&w->rows);
    free(w->result);
    free(w);
}

int store_rows_count(const struct store_rows *r) { return r ? r->nrows : 0; }

void store_rows_get(const struct store_rows *r, int i, struct store_row *row, int *tag)
{
    const struct fetched_row *f = &r->rows[i];
    row->n = f->n;
    row->text = (const char *const *)f->text;
    row->len = f->len;
    row->num = f->num;
    if (tag)
        *tag = f->tag;
}

/* Store thread */

static int bind_values(sqlite3_stmt *st, const struct store_op *op)
{
    int i, rc = SQLITE_OK, nparams = sqlite3_bind_parameter_count(st);
    for (i = 0; i < op->n && i < nparams && rc == SQLITE_OK; i++) {
        const struct store_value *v = &op->v[i];
        switch (v->type) {
        case SV_NULL: rc = sqlite3_bind_null(st, i + 1); break;
        case SV_INT: rc = sqlite3_bind_int64(st, i + 1, v->i); break;
        case SV_REAL: rc = sqlite3_bind_double(st, i + 1, v->d); break;
        case SV_TEXT: rc = sqlite3_bind_text(st, i + 1, v->s, (int)v->len, SQLITE_STATIC); break;
        case SV_BLOB: rc = sqlite3_bind_blob(st, i + 1, v->s, (int)v->len, SQLITE_STATIC); break;
        }
    }
    return rc;
}

static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void run_batch(struct work *w)
{
    struct store_op *op;
    int rc;
    if (poisoned) {
        snprintf(w->error, sizeof w->error, "an earlier batch failed");
        w->ok = 0;
        return;
    }
    rc = step_done(store_begin_stmt);
    for (op = w->ops; op && rc == SQLITE_OK; op = op->next) {
        int s;
        for (s = 0; s < MAX_STATEMENTS && store_write_stmts[op->type][s] && rc == SQLITE_OK; s++) {
            sqlite3_stmt *st = store_write_stmts[op->type][s];
            rc = bind_values(st, op);
            if (rc == SQLITE_OK)
                rc = step_done(st);
            else
                sqlite3_reset(st);
        }
    }
    if (rc == SQLITE_OK)
        rc = step_done(store_commit_stmt);
    if (rc != SQLITE_OK) {
        snprintf(w->error, sizeof w->error, "%s", sqlite3_errmsg(store_db));
        step_done(store_rollback_stmt);
        w->ok = 0;
        poisoned = 1;
    } else {
        w->ok = 1;
    }
}

static void run_page(struct work *w)
{
    w->ok = store_run_page(w->page, &w->query, &w->result, &w->result_len, w->error, sizeof w->error);
}

/* Copies the current row of st (all columns) into rows. */
static void copy_row(sqlite3_stmt *st, int tag, struct store_rows *rows)
{
    struct fetched_row *f;
    int i, n = sqlite3_column_count(st);
    if (rows->nrows == rows->cap) {
        rows->cap = rows->cap ? rows->cap * 2 : 8;
        rows->rows = sb_xrealloc(rows->rows, (size_t)rows->cap * sizeof *rows->rows);
    }
    f = &rows->rows[rows->nrows++];
    f->tag = tag;
    f->n = n;
    f->text = sb_xcalloc((size_t)n, sizeof *f->text);
    f->len = sb_xcalloc((size_t)n, sizeof *f->len);
    f->num = sb_xcalloc((size_t)n, sizeof *f->num);
    for (i = 0; i < n; i++) {
        if (sqlite3_column_type(st, i) == SQLITE_NULL)
            continue;
        {
            const void *b = sqlite3_column_blob(st, i);
            size_t len = (size_t)sqlite3_column_bytes(st, i);
            f->text[i] = sb_xmalloc(len + 1);
            if (len)
                memcpy(f->text[i], b, len);
            f->text[i][len] = '\0';
            f->len[i] = len;
            f->num[i] = sqlite3_column_double(st, i);
        }
    }
}

static void run_fetch(struct work *w)
{
    int s, rc = SQLITE_OK;
    w->ok = 1;
    for (s = 0; s < 2 && store_fetch_stmts[w->fetch][s] && rc == SQLITE_OK; s++) {
        sqlite3_stmt *st = store_fetch_stmts[w->fetch][s];
        rc = bind_values(st, w->ops);
        while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            copy_row(st, s, &w->rows);
            rc = SQLITE_OK;
        }
        if (rc == SQLITE_DONE)
            rc = SQLITE_OK;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    if (rc != SQLITE_OK) {
        snprintf(w->error, sizeof w->error, "%s", sqlite3_errmsg(store_db));
        w->ok = 0;
        rows_free(&w->rows);
    }
}

static void *store_thread(void *arg)
{
    (void)arg;
    for (;;) {
        struct work *w;
        char byte = 1;
        pthread_mutex_lock(&mu);
        while (!todo_head)
            pthread_cond_wait(&cv, &mu);
        w = todo_head;
        todo_head = w->next;
        if (!todo_head)
            todo_tail = NULL;
        pthread_mutex_unlock(&mu);

        switch (w->kind) {
        case WORK_STOP:
            free(w);
            return NULL;
        case WORK_RESUME:
            poisoned = 0;
            free(w);
            continue;
        case WORK_BATCH: run_batch(w); break;
        case WORK_PAGE: run_page(w); break;
        case WORK_FETCH: run_fetch(w); break;
        }

        pthread_mutex_lock(&mu);
        w->next = NULL;
        if (done_tail)
            done_tail->next = w;
        else
            done_head = w;
        done_tail = w;
        pthread_mutex_unlock(&mu);
        if (write(notify_pipe[1], &byte, 1) < 0 && errno != EAGAIN)
            sb_log(SB_LOG_ERROR, "store: cannot notify the loop", NULL);
    }
}

/* Loop thread */

static void hand_over(struct work *w)
{
    if (w->kind == WORK_BATCH && w->last_event_id > sent_event_id)
        sent_event_id = w->last_event_id;
    pthread_mutex_lock(&mu);
    w->next = NULL;
    if (todo_tail)
        todo_tail->next = w;
    else
        todo_head = w;
    todo_tail = w;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void send_open_batch(void)
{
    struct work *w;
    run_flush_hook();
    w = open_batch;
    if (!w)
        return;
    open_batch = NULL;
    batches_in_flight++;
    stats.batches++;
    hand_over(w);
}

static void on_submit(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    if (batches_in_flight == 0)
        send_open_batch();
}

static void append_op(struct work *b, struct store_op *op)
{
    op->next = NULL;
    if (b->ops_tail)
        b->ops_tail->next = op;
    else
        b->ops = op;
    b->ops_tail = op;
    b->nops++;
    stats.writes++;
}

uint64_t store_reserve(void)
{
    if (!store_db)
        return 0;
    if (!open_batch) {
        open_batch = sb_xcalloc(1, sizeof *open_batch);
        open_batch->kind = WORK_BATCH;
        open_batch->seq = ++last_seq;
        if (batches_in_flight == 0 && submit_ev)
            event_active(submit_ev, 0, 0);  /* after the current callback, not during it */
    }
    return open_batch->seq;
}

uint64_t store_submit(struct store_op *op)
{
    if (!store_db) {
        store_op_free(op);
        return 0;
    }
    store_reserve();
    if (op->type == OP_INSERT_EVENT) {
        /* Batches commit in order and a job's writes never straddle two:
         * ids given here follow commit order, which lets a reader of the
         * journal keep one position (docs/events.md). */
        op->v[0].i = ++last_event_id;
        open_batch->last_event_id = last_event_id;
    }
    append_op(open_batch, op);
    return open_batch->seq;
}

uint64_t store_submit_system(struct store_op *op)
{
    op->system = 1;
    return store_submit(op);
}

/* The system writes of a failed batch go again with the next one. */
static void requeue_system_ops(struct work *w)
{
    struct store_op *op = w->ops, *next;
    w->ops = w->ops_tail = NULL;
    for (; op; op = next) {
        next = op->next;
        if (op->system && store_db) {
            store_reserve();
            append_op(open_batch, op);
            stats.writes--;   /* counted when first queued */
        } else {
            store_op_free(op);
        }
    }
}

static void batch_finished(struct work *w)
{
    batches_in_flight--;
    if (!w->ok) {
        char seq[24];
        stats.failures++;
        if (w->seq > failed_through) {
            if (w->seq != failed_through + 1 || failed_through == 0)
                failed_from = w->seq;
            failed_through = w->seq;
        }
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)w->seq);
        sb_log(SB_LOG_ERROR, "store: commit failed", "batch", seq, "error", w->error, NULL);
    }
    finished_seq = w->seq;
    if (batch_hook)
        batch_hook(w->seq, w->ok);
    else if (!w->ok && w->seq > recovered_through)
        recovered_through = store_recover();   /* nobody to roll back: just go on */
    while (waiters && waiters->seq <= w->seq) {
        struct waiter *x = waiters;
        waiters = x->next;
        if (!waiters)
            waiters_tail = NULL;
        x->fn(x->arg, w->ok);
        free(x);
    }
    if (w->ok && w->last_event_id && events_hook)
        events_hook(w->last_event_id);
    if (!w->ok)
        requeue_system_ops(w);
    /* Writes that arrived while this batch was committing go next, together. */
    if (batches_in_flight == 0)
        send_open_batch();
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
    char buf[256];
    struct work *list, *w;
    (void)what;
    (void)arg;
    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&mu);
    list = done_head;
    done_head = done_tail = NULL;
    pthread_mutex_unlock(&mu);
    while (list) {
        w = list;
        list = w->next;
        if (w->kind == WORK_BATCH) {
            batch_finished(w);
        } else if (w->kind == WORK_PAGE) {
            stats.reads++;
            w->read_fn(w->arg, w->ok ? w->result : NULL, w->result_len, w->ok ? NULL : w->error);
        } else {
            stats.reads++;
            w->fetch_fn(w->arg, w->ok ? &w->rows : NULL, w->ok ? NULL : w->error);
        }
        work_free(w);
    }
}

uint64_t store_recover(void)
{
    struct work *resume;
    uint64_t through;
    if (!thread_running)
        return last_seq;
    /* The open batch holds writes made on top of the failed ones: it goes
     * to the thread to fail there, in order, so its waiters hear of it
     * after those of the batches before it. */
    if (open_batch) {
        struct work *w = open_batch;
        open_batch = NULL;
        batches_in_flight++;
        stats.batches++;
        hand_over(w);
    }
    through = last_seq;
    resume = sb_xcalloc(1, sizeof *resume);
    resume->kind = WORK_RESUME;
    hand_over(resume);
    return through;
}

void store_when_committed(uint64_t seq, store_commit_fn fn, void *arg)
{
    struct waiter *x;
    if (seq == 0 || seq <= finished_seq) {
        fn(arg, !(seq >= failed_from && seq <= failed_through && failed_through));
        return;
    }
    x = sb_xcalloc(1, sizeof *x);
    x->seq = seq;
    x->fn = fn;
    x->arg = arg;
    if (waiters_tail)
        waiters_tail->next = x;
    else
        waiters = x;
    waiters_tail = x;
}

int store_running(void) { return thread_running; }

/* Reads see every write queued before them. */
static void hand_over_read(struct work *w)
{
    run_flush_hook();
    if (open_batch) {
        batches_in_flight++;
        stats.batches++;
        hand_over(open_batch);
        open_batch = NULL;
    }
    hand_over(w);
}

void store_read_page(enum store_page page, const struct store_page_query *q, store_read_fn fn, void *arg)
{
    struct work *w;
    const char *problem;
    if (!thread_running) {
        fn(arg, NULL, 0, "the store is not open");
        return;
    }
    if ((problem = store_query_problem(page, q))) {
        fn(arg, NULL, 0, problem);
        return;
    }
    w = sb_xcalloc(1, sizeof *w);
    w->kind = WORK_PAGE;
    w->page = page;
    store_query_copy(&w->query, q);
    w->read_fn = fn;
    w->arg = arg;
    hand_over_read(w);
}

/* A fetch's parameters, bound positionally: ?1 id, ?2 text, ?3 text2,
 * ?4 real, ?5 int, ?6 int. */
/* flush 0: the read does not send the open batch ahead of it (it needs only
 * what is committed), so it does not cut group commits short. */
static void fetch_queued(enum fetch_kind kind, const char *id, const char *t2, const char *t3, double r, int64_t a,
                         int64_t b, store_fetch_fn fn, void *arg, int flush)
{
    struct work *w;
    struct store_op *p;
    if (!thread_running) {
        fn(arg, NULL, "the store is not open");
        return;
    }
    w = sb_xcalloc(1, sizeof *w);
    w->kind = WORK_FETCH;
    w->fetch = kind;
    p = store_params_new();
    store_put_str(p, id);
    store_put_str(p, t2);
    store_put_str(p, t3);
    store_put_real(p, r);
    store_put_int(p, a);
    store_put_int(p, b);
    w->ops = w->ops_tail = p;
    w->fetch_fn = fn;
    w->arg = arg;
    if (flush)
        hand_over_read(w);
    else
        hand_over(w);
}

static void fetch(enum fetch_kind kind, const char *id, const char *t2, const char *t3, double r, int64_t a,
                  int64_t b, store_fetch_fn fn, void *arg)
{
    fetch_queued(kind, id, t2, t3, r, a, b, fn, arg, 1);
}

void store_fetch_conversation(const char *id, const char *channel, const char *client_id, double keys_since,
                              store_fetch_fn fn, void *arg)
{
    if (client_id)
        fetch(FETCH_CONV_BY_CLIENT, NULL, channel, client_id, keys_since, 0, 0, fn, arg);
    else
        fetch(FETCH_CONV_BY_ID, id, NULL, NULL, keys_since, 0, 0, fn, arg);
}

void store_fetch_messages(const char *conversation_id, int64_t from_seq, int64_t to_seq,
                          store_fetch_fn fn, void *arg)
{
    fetch(FETCH_MESSAGES, conversation_id, NULL, NULL, 0, from_seq, to_seq, fn, arg);
}

void store_fetch_outbox_lane(const char *lane, int limit, store_fetch_fn fn, void *arg)
{
    fetch(FETCH_OUTBOX_LANE, NULL, lane, NULL, 0, 0, limit, fn, arg);
}

void store_fetch_outbox_entry(int64_t id, store_fetch_fn fn, void *arg)
{
    fetch(FETCH_OUTBOX_ENTRY, NULL, NULL, NULL, 0, id, 0, fn, arg);
}

void store_fetch_bus_events(int64_t after, int limit, store_fetch_fn fn, void *arg)
{
    fetch_queued(FETCH_BUS_EVENTS, NULL, NULL, NULL, 0, after, limit, fn, arg, 0);
}

void store_fetch_event_bounds(store_fetch_fn fn, void *arg)
{
    fetch(FETCH_EVENT_BOUNDS, NULL, NULL, NULL, 0, 0, 0, fn, arg);
}

static void render_metrics(struct evbuffer *out)
{
    sb_metrics_counter(out, "switchboard_store_batches_total", "Store transactions (group commits).", stats.batches);
    sb_metrics_counter(out, "switchboard_store_writes_total", "Store write operations.", stats.writes);
    sb_metrics_counter(out, "switchboard_store_reads_total", "Store reads.", stats.reads);
    sb_metrics_counter(out, "switchboard_store_failures_total", "Store transactions that failed.", stats.failures);
    sb_metrics_gauge(out, "switchboard_store_memory_bytes", "Memory SQLite holds (page cache, statements).",
                     (double)sqlite3_memory_used());
}

int store_open(const char *data_dir, enum store_sync sync, struct sb_error *err)
{
    char path[1024];
    static int metrics_registered;
    snprintf(path, sizeof path, "%s/switchboard.db", data_dir);
    if (store_sql_open(path, sync, err) != 0) {
        store_close();
        return -1;
    }
    last_event_id = store_max_event_id();
    if (!metrics_registered) {
        sb_metrics_register(render_metrics);
        metrics_registered = 1;
    }
    return 0;
}

int store_start(void)
{
    if (pipe2(notify_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    notify_ev = event_new(sb_base, notify_pipe[0], EV_READ | EV_PERSIST, on_notify, NULL);
    submit_ev = event_new(sb_base, -1, 0, on_submit, NULL);
    event_add(notify_ev, NULL);
    if (pthread_create(&thread, NULL, store_thread, NULL) != 0)
        return -1;
    thread_running = 1;
    return 0;
}

void store_close(void)
{
    int i;
    if (thread_running) {
        struct work *stop = sb_xcalloc(1, sizeof *stop);
        send_open_batch();
        stop->kind = WORK_STOP;
        hand_over(stop);
        pthread_join(thread, NULL);
        thread_running = 0;
        /* deliver what finished, so waiters and reads are told */
        if (notify_pipe[0] >= 0)
            on_notify(notify_pipe[0], EV_READ, NULL);
    }
    while (waiters) {
        struct waiter *x = waiters;
        waiters = x->next;
        x->fn(x->arg, 0);
        free(x);
    }
    waiters_tail = NULL;
    if (open_batch) {
        work_free(open_batch);
        open_batch = NULL;
    }
    store_sql_close();
    if (notify_ev)
        event_free(notify_ev);
    if (submit_ev)
        event_free(submit_ev);
    notify_ev = submit_ev = NULL;
    for (i = 0; i < 2; i++)
        if (notify_pipe[i] >= 0)
            close(notify_pipe[i]), notify_pipe[i] = -1;
    poisoned = 0;
    sent_event_id = 0;
    last_seq = finished_seq = failed_from = failed_through = recovered_through = 0;
    batches_in_flight = 0;
}

