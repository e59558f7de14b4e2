/* leaf: reader for LEAF's JSON federated datasets (FEMNIST, Shakespeare).
 *
 * A dataset is a directory with train/ and test/ subdirectories of *.json
 * files, each one object {"users": [...], "num_samples": [...],
 * "user_data": {user: {"x": [...], "y": [...]}}}. Files are read in name
 * order and users in the order of their file's "users" list (entries of
 * user_data for unlisted users are ignored, as LEAF leaves such stubs); each
 * user becomes a group, so `--partition natural` gives LEAF's clients.
 * JSON is parsed by SQLite's JSON1 functions (json_each), not by hand.
 *
 * The kind follows from the first example: x an array of numbers is an
 * image (FEMNIST: 784 floats in [0, 1] become {1, 28, 28}; other lengths a
 * flat vector), y an integer class (num_classes 62 when every label is below
 * 62, as FEMNIST's digits + upper + lower case, else max + 1); x a string is a
 * Shakespeare window of 80 characters with y the next character (see
 * common/data/text.h for the ids). Every other shape is refused naming the
 * file and the user: x and y of different lengths, mixed kinds, rows of
 * different sizes, non-numbers, labels out of range, a listed user without
 * data. */
#ifndef FL_LEAF_H
#define FL_LEAF_H

#include <stddef.h>

#include "common/data/dataset.h"

/* The largest LEAF JSON file read (FEMNIST's are about 200 MB). */
#define FL_LEAF_MAX_FILE ((size_t)1 << 31)

/* Appends the users of one LEAF JSON document (text of `len` bytes; `name`
 * names it in log lines) to *d. *d is either empty (the document decides the
 * kind) or holds examples of the same kind from earlier documents. Returns
 * 0, FL_EFORMAT, FL_EEMPTY (no users), FL_ENOMEM, FL_EDB. */
int fl_leaf_parse(const char *name, const char *json, size_t len, fl_dataset_t *d);

/* Loads split "train" or "test" of the LEAF dataset in dir into the empty
 * *d. Returns 0, FL_ENOTFOUND (no such folder or no *.json in it), or
 * fl_leaf_parse's codes. */
int fl_leaf_load(const char *dir, const char *split, fl_dataset_t *d);

#endif
