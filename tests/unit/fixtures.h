/* Temporary folders and files for unit tests, and runtimes built over them. */
#ifndef SB_FIXTURES_H
#define SB_FIXTURES_H

#include "util.h"

struct sb_runtime;

/* Creates a fresh temporary folder; returns its path (static storage). */
const char *fixture_dir(void);
/* Writes content to dir/name, creating subfolders of name as needed. */
void fixture_write(const char *dir, const char *name, const char *content);

/* Builds a runtime (generation 1) over a fresh folder holding `files`
 * (name, content pairs, NULL-terminated) with small Lua budgets
 * (cpu_ms_per_resume 50, cpu_ms_per_job 200, memory 8 MB); extra_config is
 * Lua text added to the config table (a later key wins). NULL with err on
 * failure. What the load wrote is dropped (there is no store). */
struct sb_runtime *fixture_runtime(const char *const *files, struct sb_error *err, const char *extra_config);
/* A build that must succeed: a failure is a failed check, with the error. */
struct sb_runtime *fixture_runtime_ok(const char *const *files);
/* A global of the runtime as text ("(nil)" when not a string or number);
 * static storage. */
const char *fixture_global(struct sb_runtime *rt, const char *name);

#endif
