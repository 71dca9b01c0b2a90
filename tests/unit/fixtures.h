/* Temporary folders and files for unit tests. */
#ifndef SB_FIXTURES_H
#define SB_FIXTURES_H

/* Creates a fresh temporary folder; returns its path (static storage). */
const char *fixture_dir(void);
/* Writes content to dir/name, creating subfolders of name as needed. */
void fixture_write(const char *dir, const char *name, const char *content);

#endif
