/* Transactions: what one job (a request, a timer, an outbox job, a load)
 * changes is all-or-nothing, in the store and in memory.
 *
 * A job's store writes collect in its transaction and join the open batch
 * in one piece when the job ends well (sb_txn_end), so they commit or fail
 * together. Memory changes are either applied at once with an effect that
 * can put them back (conversations, locked by the transaction) or kept
 * aside and applied when the transaction ends (state, timers, outbox
 * entries). A transaction that fails (the handler raised, was stopped)
 * runs its effects' abort in reverse order and drops its writes. When a
 * batch fails to commit, every live transaction is aborted first (the
 * failure hook stops their jobs), then every ended transaction whose batch
 * failed is undone, newest first, so memory matches the store again.
 *
 * The transaction knows nothing of jobs or Lua: the job layer owns one per
 * job and tells it how the job ended. */
#ifndef SB_TXN_H
#define SB_TXN_H

#include <stddef.h>
#include <stdint.h>

struct store_op;
struct sb_txn;

/* What a change does at each outcome. Any may be NULL. abort and undo put
 * memory back and free data; commit frees data; end applies what was kept
 * aside (seq is the batch the transaction's writes joined, 0 if none). */
struct sb_txn_effect_ops {
    void (*end)(void *data, uint64_t seq);
    void (*abort)(void *data);
    void (*undo)(void *data);
    void (*commit)(void *data);
};

/* Starts listening to the store's batch outcomes; call once the store is open. */
void sb_txn_init(void);
struct sb_txn *sb_txn_new(void);
/* Adds a write (ownership taken). */
void sb_txn_write(struct sb_txn *t, struct store_op *op);
/* Records that memory changed in a way the flush hook will write (a
 * coalesced conversation row): the transaction then waits for a batch
 * even without writes of its own. */
void sb_txn_touch(struct sb_txn *t);
void sb_txn_effect(struct sb_txn *t, const struct sb_txn_effect_ops *ops, void *data);
/* Ends well: writes join the open batch in one piece, then end effects run
 * oldest first. Returns the batch (0 when nothing was written). t is gone. */
uint64_t sb_txn_end(struct sb_txn *t);
/* Fails: abort effects run newest first, writes are dropped. t is gone. */
void sb_txn_abort(struct sb_txn *t);

/* The batch of the most recent transaction that ended with writes: an
 * answer is never sent before what its job could see is durable. */
uint64_t sb_txn_visible_seq(void);
/* Called first when a batch fails: it must abort every live transaction
 * (the job layer stops their jobs). */
void sb_txn_set_failure_hook(void (*hook)(void));

/* How many event handlers led to this transaction (0 for a request, a
 * timer ...): its journal events carry it, so the bus can stop a chain of
 * handlers that feed on each other's events. */
void sb_txn_set_event_depth(struct sb_txn *t, int depth);
int sb_txn_event_depth(const struct sb_txn *t);

/* For deadlock checks: what a transaction waits for (NULL: nothing). */
void sb_txn_set_waiting(struct sb_txn *t, const void *what);
const void *sb_txn_waiting(const struct sb_txn *t);

size_t sb_txn_live(void);
size_t sb_txn_uncommitted(void);

#endif
