/* file: reading a whole file into memory, the one way fedopt does it
 * (safetensors checkpoints, LEAF JSON, text corpora, test vectors). */
#ifndef FL_FILE_H
#define FL_FILE_H

#include <stddef.h>

/* Reads the whole file at path into a new buffer: *out (free() it) holds
 * *len bytes followed by a NUL (so text can be used as a C string; a binary
 * file may hold NULs of its own). Files that are not regular (pipes, devices)
 * are read to their end as well; a directory is refused. On failure *out is
 * NULL, *len 0, and a line naming path is logged. Returns 0, FL_EINVAL (a
 * NULL argument), FL_EIO (cannot open, a directory, a read error),
 * FL_ETOOBIG (more than max bytes) or FL_ENOMEM. */
int fl_file_read_all(const char *path, size_t max, char **out, size_t *len);

#endif
