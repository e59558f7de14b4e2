/* dataset: an in-memory labelled dataset, the common currency of the data
 * readers, the partitioners and the training engine.
 *
 * Features are float32, one row of `dim` floats per example (images scaled to
 * [0, 1], CHW order; token ids for sequence data, exact in float32 up to
 * 2^24). Labels are int32, `label_dim` per example: 1 for a class index,
 * T for per-step targets of a length-T sequence, C for a multi-hot vector
 * of C tags. The data issue may add fields; keep additions backward-compatible.
 *
 * Formats with natural clients (LEAF users, TFF client ids, text speakers)
 * also fill `group`: example i belongs to group group[i] in [0, num_groups),
 * named group_names[g]; the `natural` partition turns groups into clients. */
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
    /* Added by the data module; zero/NULL when unused. */
    size_t cap;                       /* examples x and y have room for (fl_dataset_append) */
    uint32_t *group;                  /* n group ids (natural clients), owned, or NULL */
    size_t num_groups;                /* groups named in group_names */
    char **group_names;               /* num_groups owned strings (user/client ids), or NULL */
    int32_t *coarse;                  /* n coarse labels (CIFAR-100), owned, or NULL */
    int num_coarse;                   /* coarse labels lie in [0, num_coarse) */
    int multi_hot;                    /* 1: y holds label_dim 0/1 tags per example (num_classes
                                       * is then label_dim, the model's output count) */
} fl_dataset_t;

/* Makes *d empty. Never fails. */
void fl_dataset_init(fl_dataset_t *d);

/* Frees the arrays; *d becomes empty. Accepts NULL. */
void fl_dataset_free(fl_dataset_t *d);

/* Allocates x and y (label_dim 1) for n examples of the given feature shape (zeroed).
 * *d must be empty. Returns 0, FL_EINVAL, FL_ERANGE or FL_ENOMEM. */
int fl_dataset_alloc(fl_dataset_t *d, size_t n, int ndim, const int64_t *shape, int num_classes);

/* fl_dataset_alloc with `label_dim` labels per example (sequence targets,
 * multi-hot tags). Same returns. */
int fl_dataset_alloc_labels(fl_dataset_t *d, size_t n, int ndim, const int64_t *shape,
                            size_t label_dim, int num_classes);

/* Appends one example (dim floats, label_dim labels, group id `group` when
 * d->group is in use, else ignored) to *d, growing the arrays geometrically.
 * *d must have been set up by fl_dataset_alloc* (possibly with n = 0).
 * Returns 0, FL_ERANGE (over 2^31 examples) or FL_ENOMEM. */
int fl_dataset_append(fl_dataset_t *d, const float *x, const int32_t *y, uint32_t group);

/* Turns on group ids for *d (which must hold no examples yet). */
int fl_dataset_enable_groups(fl_dataset_t *d);

/* Adds a group name (copied) and stores its id in *id. Returns 0, FL_ENOMEM. */
int fl_dataset_add_group(fl_dataset_t *d, const char *name, uint32_t *id);

/* Copies the examples idx[0..k) of src into the empty *out (same shape, label
 * layout and classes; group ids and names are kept). Returns 0, FL_EINVAL
 * (an index out of range), FL_ENOMEM. */
int fl_dataset_subset(const fl_dataset_t *src, const uint32_t *idx, size_t k, fl_dataset_t *out);

/* Shrinks the arrays to exactly n examples (after appends). Never fails:
 * if realloc cannot shrink, the larger arrays are kept. */
void fl_dataset_trim(fl_dataset_t *d);

#endif
