/* Building and checking a runtime for a (re)load. */
#ifndef SB_LOADER_H
#define SB_LOADER_H

#include "config.h"
#include "runtime.h"
#include "util.h"

struct sb_txn;

/* Builds and checks a runtime whose load writes through txn. NULL with
 * err naming file and line on failure (the first error); the caller then
 * aborts txn. With report_all set, loading goes on after an error so that
 * each one is reported; the build still fails. */
struct sb_runtime *sb_load_runtime(struct sb_config *cfg, unsigned generation, struct sb_txn *txn,
                                   struct sb_error *err, sb_error_report_fn report_all);

/* Reads the config file and builds a runtime of that generation on it,
 * without touching the running ones; what the load wrote waits in a new
 * *txn for the caller to end or abort. NULL on failure, with *txn NULL (a
 * rejected load leaves nothing); report_all, when set, also gets a config
 * error. */
struct sb_runtime *sb_load_build(const char *config_path, const struct sb_overrides *ov, unsigned generation,
                                 struct sb_txn **txn, struct sb_error *err, sb_error_report_fn report_all);

#endif
