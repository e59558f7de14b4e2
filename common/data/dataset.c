#include "common/data/dataset.h"

#include <stdlib.h>
#include <string.h>

#include "common/error.h"

void fl_dataset_init(fl_dataset_t *d) { memset(d, 0, sizeof *d); }

void fl_dataset_free(fl_dataset_t *d)
{
    if (!d)
        return;
    free(d->x);
    free(d->y);
    fl_dataset_init(d);
}

int fl_dataset_alloc(fl_dataset_t *d, size_t n, int ndim, const int64_t *shape, int num_classes)
{
    if (!d || ndim < 1 || ndim > FL_DATASET_MAX_DIMS || !shape || num_classes < 1 || d->x || d->y)
        return FL_EINVAL;
    size_t dim = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || (uint64_t)shape[i] > (1u << 24))
            return FL_EINVAL;
        dim *= (size_t)shape[i];
    }
    if (n > 0 && dim > SIZE_MAX / sizeof(float) / n)
        return FL_ERANGE;
    d->x = calloc((n * dim) > 0 ? n * dim : 1, sizeof(float));
    d->y = calloc(n ? n : 1, sizeof(int32_t));
    if (!d->x || !d->y) {
        fl_dataset_free(d);
        return FL_ENOMEM;
    }
    d->n = n;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        d->shape[i] = shape[i];
    d->dim = dim;
    d->num_classes = num_classes;
    d->label_dim = 1;
    return 0;
}
