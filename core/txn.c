#include "txn.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "store.h"
#include "util.h"

struct effect {
    const struct sb_txn_effect_ops *ops;
    void *data;
};

struct sb_txn {
    struct store_op **ops;
    size_t nops, ops_cap;
    struct effect *effects;
    size_t neffects, effects_cap;
    int touched;
    int event_depth;
    uint64_t seq;                 /* once ended: its batch */
    const void *waiting_on;
    struct sb_txn *prev, *next;   /* the live list, then the ended list */
};

static struct sb_txn *live;                    /* live transactions */
static struct sb_txn *ended_head, *ended_tail; /* ended, waiting for their batch, oldest first */
static size_t nlive, nended;
static uint64_t visible_seq;
static uint64_t rolled_back_through;
static void (*failure_hook)(void);

size_t sb_txn_live(void) { return nlive; }
size_t sb_txn_uncommitted(void) { return nended; }
uint64_t sb_txn_visible_seq(void) { return visible_seq; }
void sb_txn_set_failure_hook(void (*hook)(void)) { failure_hook = hook; }
void sb_txn_set_waiting(struct sb_txn *t, const void *what) { t->waiting_on = what; }
void sb_txn_set_event_depth(struct sb_txn *t, int depth) { t->event_depth = depth; }
int sb_txn_event_depth(const struct sb_txn *t) { return t->event_depth; }
const void *sb_txn_waiting(const struct sb_txn *t) { return t->waiting_on; }

struct sb_txn *sb_txn_new(void)
{
    struct sb_txn *t = sb_xcalloc(1, sizeof *t);
    t->next = live;
    if (live)
        live->prev = t;
    live = t;
    nlive++;
    return t;
}

static void unlink_live(struct sb_txn *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        live = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
    nlive--;
}

static void txn_free(struct sb_txn *t)
{
    size_t i;
    for (i = 0; i < t->nops; i++)
        store_op_free(t->ops[i]);
    free(t->ops);
    free(t->effects);
    free(t);
}

void sb_txn_write(struct sb_txn *t, struct store_op *op)
{
    if (t->nops == t->ops_cap) {
        t->ops_cap = t->ops_cap ? t->ops_cap * 2 : 8;
        t->ops = sb_xrealloc(t->ops, t->ops_cap * sizeof *t->ops);
    }
    t->ops[t->nops++] = op;
}

void sb_txn_touch(struct sb_txn *t) { t->touched = 1; }

void sb_txn_effect(struct sb_txn *t, const struct sb_txn_effect_ops *ops, void *data)
{
    if (t->neffects == t->effects_cap) {
        t->effects_cap = t->effects_cap ? t->effects_cap * 2 : 8;
        t->effects = sb_xrealloc(t->effects, t->effects_cap * sizeof *t->effects);
    }
    t->effects[t->neffects].ops = ops;
    t->effects[t->neffects].data = data;
    t->neffects++;
}

static void run_commit(struct sb_txn *t)
{
    size_t i;
    for (i = 0; i < t->neffects; i++)
        if (t->effects[i].ops->commit)
            t->effects[i].ops->commit(t->effects[i].data);
}

uint64_t sb_txn_end(struct sb_txn *t)
{
    size_t i;
    uint64_t seq = 0;
    unlink_live(t);
    if (t->nops || t->touched)
        seq = store_reserve();
    /* Submitted together, before anything can send the open batch away:
     * the writes of one job never straddle two batches. */
    for (i = 0; i < t->nops; i++)
        store_submit(t->ops[i]);
    t->nops = 0;
    t->seq = seq;
    for (i = 0; i < t->neffects; i++)
        if (t->effects[i].ops->end)
            t->effects[i].ops->end(t->effects[i].data, seq);
    if (seq == 0) {
        /* nothing written: nothing can fail later */
        run_commit(t);
        txn_free(t);
        return 0;
    }
    if (seq > visible_seq)
        visible_seq = seq;
    t->next = NULL;
    t->prev = ended_tail;
    if (ended_tail)
        ended_tail->next = t;
    else
        ended_head = t;
    ended_tail = t;
    nended++;
    return seq;
}

void sb_txn_abort(struct sb_txn *t)
{
    size_t i;
    unlink_live(t);
    for (i = t->neffects; i > 0; i--)
        if (t->effects[i - 1].ops->abort)
            t->effects[i - 1].ops->abort(t->effects[i - 1].data);
    txn_free(t);
}

static void undo_ended(struct sb_txn *t)
{
    size_t i;
    for (i = t->neffects; i > 0; i--)
        if (t->effects[i - 1].ops->undo)
            t->effects[i - 1].ops->undo(t->effects[i - 1].data);
}

/* The store's batch hook: batches finish in order. */
static void on_batch(uint64_t seq, int ok)
{
    if (ok) {
        while (ended_head && ended_head->seq <= seq) {
            struct sb_txn *t = ended_head;
            ended_head = t->next;
            if (ended_head)
                ended_head->prev = NULL;
            else
                ended_tail = NULL;
            nended--;
            run_commit(t);
            txn_free(t);
        }
        return;
    }
    if (seq <= rolled_back_through)
        return;   /* failed with an earlier one, already rolled back */
    {
        char s[24], n[24];
        snprintf(s, sizeof s, "%llu", (unsigned long long)seq);
        snprintf(n, sizeof n, "%zu", nended);
        sb_log(SB_LOG_ERROR, "store: rolling back what the failed batch and later ones changed", "batch", s,
               "transactions", n, NULL);
    }
    /* Live transactions may stand on what is about to be undone. */
    if (failure_hook)
        failure_hook();
    while (live)
        sb_txn_abort(live);
    while (ended_tail) {
        struct sb_txn *t = ended_tail;
        ended_tail = t->prev;
        if (ended_tail)
            ended_tail->next = NULL;
        else
            ended_head = NULL;
        nended--;
        undo_ended(t);
        txn_free(t);
    }
    visible_seq = 0;
    rolled_back_through = store_recover();
}

void sb_txn_init(void)
{
    store_set_batch_hook(on_batch);
}
