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

#endif
