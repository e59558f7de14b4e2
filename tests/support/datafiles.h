/* datafiles: helpers for tests that write small data files (a private temp
 * directory, whole-file writes, gzip writes, recursive removal). */
#ifndef FL_TEST_DATAFILES_H
#define FL_TEST_DATAFILES_H

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh directory under $TMPDIR (or /tmp) and writes its path into
 * out. Returns 0 or -1. */
int fl_test_mkdtemp(char *out, size_t size);

/* Writes len bytes to path (gzip-compressed when gz is nonzero). Returns 0 or -1. */
int fl_test_write(const char *path, const void *data, size_t len, int gz);

/* Writes a NUL-terminated string to path. Returns 0 or -1. */
int fl_test_write_str(const char *path, const char *text);

/* Removes dir and everything below it (best effort). */
void fl_test_rmtree(const char *dir);

#endif
