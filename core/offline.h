/* Commands that load the config and every script as a reload would, then
 * exit without serving: no store is opened, no network is used, and what
 * the scripts write is dropped. README.md ("Command line") documents them. */
#ifndef SB_OFFLINE_H
#define SB_OFFLINE_H

#include "config.h"

/* `switchboard --check`: prints "ok" and returns 0, or prints every load
 * error as "file:line: message" on stderr and returns 1. */
int sb_offline_check(const char *config_path, const struct sb_overrides *ov);

/* `switchboard test [PATH...]`: runs spec files through the scripts'
 * `require("rules_spec").run(label, source)`; each PATH is a file, or a
 * folder searched recursively for "*_spec.lua" (none: the config's rules
 * folder). Prints one line per result and "N passed, N failed". Returns 0
 * when nothing failed, 1 when something did or the scripts did not load,
 * 2 for a PATH that is neither a file nor a folder. */
int sb_offline_test(const char *config_path, const struct sb_overrides *ov, char *const *paths, int npaths);

#endif
