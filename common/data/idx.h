/* idx: reader for the IDX format of MNIST, Fashion-MNIST and EMNIST,
 * gzipped or not (zlib reads plain files transparently).
 *
 * The header is never trusted: the buffer grows only as data actually
 * arrives, the element count is capped, and a file that holds less (or more)
 * than its header claims is refused with a log line naming the file. */
#ifndef FL_IDX_H
#define FL_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"

/* Largest element count accepted from one IDX file (EMNIST "byclass" train
 * images are ~550M bytes; this leaves room without trusting a lying header). */
#define FL_IDX_MAX_ELEMENTS ((uint64_t)1 << 31)

typedef struct {
    uint8_t type;      /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 */
    int ndim;
    uint32_t dims[8];
    size_t count;      /* product of dims */
    double *values;    /* count values converted to double; owned */
} fl_idx_t;

/* Reads a whole IDX file into *out (caller frees with fl_idx_free). Returns 0,
 * FL_EIO (cannot open/read), FL_EFORMAT (bad magic/type/ndim, trailing data),
 * FL_ETRUNCATED (less data than the header claims), FL_ETOOBIG, FL_ENOMEM. */
int fl_idx_read(const char *path, fl_idx_t *out);

/* Frees out->values. Accepts NULL. */
void fl_idx_free(fl_idx_t *idx);

/* Loads an image file (N x H x W, u8) and a label file (N, u8) into *d:
 * pixels scaled to [0, 1] with shape {1, H, W}, num_classes = max label + 1
 * (at least `min_classes`). Refuses mismatched counts (FL_ESHAPE) and other
 * layouts (FL_EFORMAT). *d must be empty. */
int fl_idx_load_images(const char *images, const char *labels, int min_classes, fl_dataset_t *d);

/* The directory Debian's dataset-fashion-mnist installs into; FEDOPT_FMNIST_DIR overrides it. */
const char *fl_fmnist_dir(void);

/* Loads Fashion-MNIST's "train" (60,000) or "test" (10,000) split from
 * fl_fmnist_dir(). A missing directory is FL_ENOTFOUND with a log line
 * telling the user which Debian package to install. */
int fl_fmnist_load(const char *split, fl_dataset_t *d);

/* Loads the "train" or "test" split from a directory of IDX files named the
 * usual way: *train-images*, *train-labels* for train and *t10k-images* (or
 * *test-images*), *t10k-labels* (or *test-labels*) for test, gzipped or not
 * (MNIST, Fashion-MNIST, EMNIST). Exactly one file must match each role.
 * EMNIST's files (names starting with "emnist-") store images transposed;
 * they are transposed back so that every image is row-major. Returns 0,
 * FL_ENOTFOUND (no or several matching files, logged), or fl_idx_load_images'
 * codes. */
int fl_idx_load_dir(const char *dir, const char *split, fl_dataset_t *d);

#endif
