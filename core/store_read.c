/* The store's page reads, run on the store thread: the fixed statements of
 * store_sql.c, and the lists and counts of conversations, whose SQL is put
 * together from a fixed set of clauses (one per filter given), so that
 * SQLite plans each shape with the index that serves it; every value is
 * bound, never written into the SQL text. */
#include "store.h"
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void add_text(sqlite3_str *sql, struct read_binds *b, const char *text)
{
    b->v[b->n].text = text;
    b->v[b->n].i = 0;
    b->n++;
    sqlite3_str_appendf(sql, "?%d", b->n);
}

static void add_int(sqlite3_str *sql, struct read_binds *b, int64_t i)
{
    b->v[b->n].text = NULL;
    b->v[b->n].i = i;
    b->n++;
    sqlite3_str_appendf(sql, "?%d", b->n);
}

/* " WHERE" before the first clause, " AND" before the others. */
static void clause(sqlite3_str *sql, int *nclauses, const char *text)
{
    sqlite3_str_appendall(sql, (*nclauses)++ ? " AND " : " WHERE ");
    sqlite3_str_appendall(sql, text);
}

/* column = ?N for one value, column IN (?N, ...) for several. */
static void clause_in(sqlite3_str *sql, struct read_binds *b, int *nclauses, const char *column,
                      const char *const *values, int n)
{
    int i;
    if (n == 0)
        return;
    clause(sql, nclauses, column);
    sqlite3_str_appendall(sql, n == 1 ? " = " : " IN (");
    for (i = 0; i < n; i++) {
        if (i)
            sqlite3_str_appendall(sql, ", ");
        add_text(sql, b, values[i]);
    }
    if (n > 1)
        sqlite3_str_appendall(sql, ")");
}

static void filters(sqlite3_str *sql, struct read_binds *b, int *nclauses, const struct store_page_query *q)
{
    clause_in(sql, b, nclauses, "desk", &q->desk, q->desk ? 1 : 0);
    clause_in(sql, b, nclauses, "grp", &q->group, q->group ? 1 : 0);
    if (q->no_agent)
        clause(sql, nclauses, "agent IS NULL");
    else
        clause_in(sql, b, nclauses, "agent", &q->agent, q->agent ? 1 : 0);
    clause_in(sql, b, nclauses, "state", q->state, q->nstate);
    clause_in(sql, b, nclauses, "status", q->status, q->nstatus);
    clause_in(sql, b, nclauses, "channel", q->channel, q->nchannel);
}

static const char *const count_column[] = {
    [STORE_BY_NONE] = NULL, [STORE_BY_AGENT] = "agent", [STORE_BY_GROUP] = "grp", [STORE_BY_STATUS] = "status",
};

char *store_read_sql(enum store_page page, const struct store_page_query *q, struct read_binds *b)
{
    sqlite3_str *sql = sqlite3_str_new(store_db);
    int nclauses = 0;
    b->n = 0;
    if (page == STORE_PAGE_CONVERSATION_COUNTS) {
        const char *col = count_column[q->by];
        sqlite3_str_appendf(sql, "SELECT json_group_object(k, n) FROM (SELECT %s AS k, count(*) AS n"
                                 " FROM conversations", col);
        filters(sql, b, &nclauses, q);
        clause(sql, &nclauses, col);
        sqlite3_str_appendf(sql, " IS NOT NULL GROUP BY %s ORDER BY %s)", col, col);
        return sqlite3_str_finish(sql);
    }
    /* A page is full when it holds `limit` rows: the cursor is then the
     * rowid of its last one, the next page starts past it. */
    sqlite3_str_appendall(sql, "SELECT json_object('conversations', json_group_array(json(j)),"
                               " 'next_cursor', CASE WHEN count(*) = ");
    add_int(sql, b, q->limit);   /* ?1, the LIMIT below too */
    sqlite3_str_appendf(sql, " THEN CAST(%s(r) AS TEXT) END) FROM (SELECT rowid AS r, " CONV_JSON " AS j"
                             " FROM conversations", q->oldest_first ? "max" : "min");
    filters(sql, b, &nclauses, q);
    if (q->cursor) {
        clause(sql, &nclauses, q->oldest_first ? "rowid > " : "rowid < ");
        add_int(sql, b, strtoll(q->cursor, NULL, 10));
    }
    sqlite3_str_appendf(sql, " ORDER BY rowid %s LIMIT ?1)", q->oldest_first ? "ASC" : "DESC");
    return sqlite3_str_finish(sql);
}

static int bind_named_text(sqlite3_stmt *st, const char *name, const char *value)
{
    int i = sqlite3_bind_parameter_index(st, name);
    if (!i)
        return SQLITE_OK;
    return value ? sqlite3_bind_text(st, i, value, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_named_int(sqlite3_stmt *st, const char *name, int64_t value)
{
    int i = sqlite3_bind_parameter_index(st, name);
    return i ? sqlite3_bind_int64(st, i, value) : SQLITE_OK;
}

/* The fixed statement of a page, its parameters bound by name. */
static sqlite3_stmt *fixed_statement(enum store_page page, const struct store_page_query *q)
{
    sqlite3_stmt *st = store_page_stmts[page];
    int rc = bind_named_text(st, ":id", q->id);
    if (rc == SQLITE_OK) rc = bind_named_text(st, ":cursor", q->cursor);
    if (rc == SQLITE_OK) rc = bind_named_int(st, ":limit", q->limit);
    if (rc == SQLITE_OK) rc = bind_named_int(st, ":messages", q->messages);
    if (rc == SQLITE_OK) rc = bind_named_int(st, ":entry_id", q->entry_id);
    if (rc != SQLITE_OK) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return NULL;
    }
    return st;
}

/* A statement built for this query. Each is prepared for its read: the
 * shapes are many (which filters, how many values) and preparing one is
 * small next to the read itself. */
static sqlite3_stmt *built_statement(enum store_page page, const struct store_page_query *q)
{
    struct read_binds b;
    sqlite3_stmt *st = NULL;
    char *sql = store_read_sql(page, q, &b);
    int i, rc = sql ? sqlite3_prepare_v2(store_db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    for (i = 0; i < b.n && rc == SQLITE_OK; i++)
        rc = b.v[i].text ? sqlite3_bind_text(st, i + 1, b.v[i].text, -1, SQLITE_STATIC)
                         : sqlite3_bind_int64(st, i + 1, b.v[i].i);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

int store_run_page(enum store_page page, const struct store_page_query *q, char **result, size_t *len,
                   char *error, size_t error_size)
{
    int built = page == STORE_PAGE_CONVERSATIONS || page == STORE_PAGE_CONVERSATION_COUNTS;
    sqlite3_stmt *st = built ? built_statement(page, q) : fixed_statement(page, q);
    int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
    int ok = 1;
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        *result = sb_xmalloc(n + 1);
        memcpy(*result, t ? (const char *)t : "", n);
        (*result)[n] = '\0';
        *len = n;
    } else if (rc == SQLITE_DONE) {
        *result = sb_xstrdup("null");
        *len = 4;
    } else {
        snprintf(error, error_size, "%s", sqlite3_errmsg(store_db));
        ok = 0;
    }
    if (built) {
        sqlite3_finalize(st);
    } else if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    return ok;
}

/* What the interface promises a read, checked before it is queued. */
const char *store_query_problem(enum store_page page, const struct store_page_query *q)
{
    int i;
    if (q->nstate < 0 || q->nstate > STORE_MAX_STATES || q->nstatus < 0 || q->nstatus > STORE_MAX_STATUSES ||
        q->nchannel < 0 || q->nchannel > STORE_MAX_CHANNELS)
        return "too many values in a filter";
    for (i = 0; i < q->nstate; i++)
        if (!q->state[i])
            return "a filter value is missing";
    for (i = 0; i < q->nstatus; i++)
        if (!q->status[i])
            return "a filter value is missing";
    for (i = 0; i < q->nchannel; i++)
        if (!q->channel[i])
            return "a filter value is missing";
    if (q->cursor && strspn(q->cursor, "0123456789") != strlen(q->cursor))
        return "cursor is not valid";
    if (page == STORE_PAGE_CONVERSATION_COUNTS) {
        if (!q->desk)
            return "desk is required";
        if (q->by <= STORE_BY_NONE || q->by > STORE_BY_STATUS)
            return "by must be agent, group or status";
    }
    return NULL;
}

static void copy_list(const char **dst, const char *const *src, int n)
{
    int i;
    for (i = 0; i < n; i++)
        dst[i] = sb_xstrdup(src[i]);
}

static void free_list(const char **list, int n)
{
    int i;
    for (i = 0; i < n; i++)
        free((char *)list[i]);
}

void store_query_copy(struct store_page_query *dst, const struct store_page_query *src)
{
    *dst = *src;
    dst->id = sb_xstrdup_or_null(src->id);
    dst->cursor = sb_xstrdup_or_null(src->cursor);
    dst->desk = sb_xstrdup_or_null(src->desk);
    dst->group = sb_xstrdup_or_null(src->group);
    dst->agent = sb_xstrdup_or_null(src->agent);
    copy_list(dst->state, src->state, src->nstate);
    copy_list(dst->status, src->status, src->nstatus);
    copy_list(dst->channel, src->channel, src->nchannel);
}

void store_query_free(struct store_page_query *q)
{
    free((char *)q->id);
    free((char *)q->cursor);
    free((char *)q->desk);
    free((char *)q->group);
    free((char *)q->agent);
    free_list(q->state, q->nstate);
    free_list(q->status, q->nstatus);
    free_list(q->channel, q->nchannel);
    memset(q, 0, sizeof *q);
}
