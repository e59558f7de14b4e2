/* dataset: an in-memory labelled dataset, the common currency of the data
 * readers, the partitioners and the training engine.
 *
 * Features are float32, one row of `dim` floats per example (images scaled to
 * [0, 1], CHW order; token ids for sequence data, exact in float32 up to
 * 2^24). Labels are int32, `label_dim` per example: 1 for a class index,
 * T for per-step targets of a length-T sequence, C for a multi-hot vector
 * of C tags. The data issue may add fields; keep additions backward-compatible. */
#ifndef FL_DATASET_H
#define FL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define FL_DATASET_MAX_DIMS 4

typedef struct {
    size_t n;                         /* number of examples */
    int ndim;                         /* rank of one example's features */
    int64_t shape[FL_DATASET_MAX_DIMS]; /* one example's feature shape, e.g. {1, 28, 28} */
    size_t dim;                       /* floats per example: the product of shape */
    float *x;                         /* n * dim floats, owned */
    int32_t *y;                       /* n * label_dim labels, owned */
    size_t label_dim;                 /* labels per example (1 for classification) */
    int num_classes;                  /* labels lie in [0, num_classes) */
} fl_dataset_t;

/* Makes *d empty. Never fails. */
void fl_dataset_init(fl_dataset_t *d);

/* Frees the arrays; *d becomes empty. Accepts NULL. */
void fl_dataset_free(fl_dataset_t *d);

/* Allocates x and y (label_dim 1) for n examples of the given feature shape (zeroed).
 * *d must be empty. Returns 0, FL_EINVAL, FL_ERANGE or FL_ENOMEM. */
int fl_dataset_alloc(fl_dataset_t *d, size_t n, int ndim, const int64_t *shape, int num_classes);

#endif
