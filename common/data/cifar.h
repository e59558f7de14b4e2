/* cifar: reader for the binary versions of CIFAR-10 and CIFAR-100.
 *
 * CIFAR-10: data_batch_1..5.bin (train) and test_batch.bin (test), records of
 * 1 label byte + 3,072 pixel bytes (R, G, B planes of 32x32: CHW).
 * CIFAR-100: train.bin and test.bin, records of coarse label, fine label,
 * then the same 3,072 pixels. Pixels become floats in [0, 1] with shape
 * {3, 32, 32}; y is the class (the fine label for CIFAR-100, whose coarse
 * labels go to d->coarse). Files are streamed record by record: a partial
 * record, a label out of range or an empty file is refused, naming the file
 * and the record. */
#ifndef FL_CIFAR_H
#define FL_CIFAR_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"

#define FL_CIFAR_PIXELS 3072

/* Appends every record of one CIFAR binary file to *d, which must have been
 * set up for {3,32,32} examples (and coarse labels for CIFAR-100).
 * `classes` is 10 or 100. Returns 0, FL_EIO, FL_EEMPTY, FL_ETRUNCATED,
 * FL_EFORMAT (a label out of range), FL_ENOMEM. */
int fl_cifar_read_file(const char *path, int classes, fl_dataset_t *d);

/* Loads split "train" or "test" of CIFAR-`classes` (10 or 100) from dir, or
 * from its cifar-10-batches-bin / cifar-100-binary subdirectory (the
 * archives' layout), into the empty *d. Returns 0 or fl_cifar_read_file's
 * codes, FL_ENOTFOUND for missing files. */
int fl_cifar_load(const char *dir, int classes, const char *split, fl_dataset_t *d);

#endif
