/* Inside the SQLite store: what store_sqlite.c (the thread, the batches)
 * and store_sql.c (the schema, the statements, the operations, start-up
 * loading) share. Not for other modules: they use store.h. */
#ifndef SB_STORE_INT_H
#define SB_STORE_INT_H

#include <sqlite3.h>

#include "store.h"

#define MAX_VALUES 16
#define MAX_STATEMENTS 4

enum op_type {
    OP_PUT_CONVERSATION,
    OP_INSERT_MESSAGE,
    OP_SET_PROVIDER_IDS,
    OP_INSERT_EVENT,
    OP_INSERT_KEY,
    OP_INSERT_OUTBOX,
    OP_UPDATE_OUTBOX,
    OP_DELETE_OUTBOX,
    OP_PUT_KV,
    OP_DELETE_KV,
    OP_PUT_TIMER,
    OP_DELETE_TIMER,
    OP_PUT_SCHEDULE,
    OP_DELETE_SCHEDULE,
    OP_PUT_CURSOR,
    OP_DELETE_CURSOR,
    OP_PRUNE_OUTBOX,
    OP_PRUNE_KEYS,
    OP_PRUNE_CONVERSATIONS,
    OP_COUNT
};

enum fetch_kind { FETCH_CONV_BY_ID, FETCH_CONV_BY_CLIENT, FETCH_MESSAGES, FETCH_OUTBOX_LANE, FETCH_OUTBOX_ENTRY,
                  FETCH_BUS_EVENTS, FETCH_EVENT_BOUNDS, FETCH_COUNT };

enum value_type { SV_NULL, SV_INT, SV_REAL, SV_TEXT, SV_BLOB };

struct store_value {
    enum value_type type;
    int64_t i;
    double d;
    char *s;      /* owned copy */
    size_t len;
};

struct store_op {
    enum op_type type;
    int system;   /* the engine's bookkeeping: queued again if its batch fails */
    int n;
    struct store_value v[MAX_VALUES];
    struct store_op *next;
};

/* A conversation row as the read API shows it. */
#define CONV_JSON                                                                                   \
    "json_object('id',id,'channel',channel,'client_id',client_id,'state',state,'desk',desk,"       \
    "'group',grp,'agent',agent,'status',status,'tags',json(tags),'client',json(profile),"           \
    "'data',json(data),'created',created,'updated',updated)"

extern sqlite3 *store_db;
extern sqlite3_stmt *store_write_stmts[OP_COUNT][MAX_STATEMENTS];
extern sqlite3_stmt *store_page_stmts[STORE_PAGE_COUNT];
extern sqlite3_stmt *store_fetch_stmts[FETCH_COUNT][2];
extern sqlite3_stmt *store_begin_stmt, *store_commit_stmt, *store_rollback_stmt;

/* An operation holding a fetch's parameters (not a write). */
struct store_op *store_params_new(void);
void store_put_str(struct store_op *op, const char *s);
void store_put_real(struct store_op *op, double d);
void store_put_int(struct store_op *op, int64_t i);

/* Page reads (store_read.c). store_run_page runs on the store thread:
 * 1 with the JSON text in *result (the caller frees it), or 0 with error
 * filled in. */
int store_run_page(enum store_page page, const struct store_page_query *q, char **result, size_t *len,
                   char *error, size_t error_size);
/* Why a read cannot be asked for as it is (a message), or NULL. */
const char *store_query_problem(enum store_page page, const struct store_page_query *q);
/* A query with every string copied, for the store thread; freed with store_query_free. */
void store_query_copy(struct store_page_query *dst, const struct store_page_query *src);
void store_query_free(struct store_page_query *q);
/* The SQL a list or count of conversations runs (sqlite3_free it), and the
 * values it binds, in the order of its ?N; the tests look at its plan. */
struct read_binds {
    int n;
    struct {
        const char *text;   /* NULL: the integer */
        int64_t i;
    } v[3 + STORE_MAX_STATES + STORE_MAX_STATUSES + STORE_MAX_CHANNELS + 2];
};
char *store_read_sql(enum store_page page, const struct store_page_query *q, struct read_binds *b);

/* Opening: pragmas, migrations, statements. Returns 0 or -1 with err set. */
int store_sql_open(const char *path, enum store_sync sync, struct sb_error *err);
void store_sql_close(void);

#endif
