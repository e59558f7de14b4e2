#include "common/data/dataset.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

/* The most examples one dataset may hold: group and index arrays are uint32. */
#define FL_DATASET_MAX_N ((size_t)1 << 31)

void fl_dataset_init(fl_dataset_t *d) { memset(d, 0, sizeof *d); }

void fl_dataset_free(fl_dataset_t *d)
{
    if (!d)
        return;
    free(d->x);
    free(d->y);
    free(d->group);
    free(d->coarse);
    if (d->group_names)
        for (size_t g = 0; g < d->num_groups; g++)
            free(d->group_names[g]);
    free(d->group_names);
    fl_dataset_init(d);
}

int fl_dataset_alloc_labels(fl_dataset_t *d, size_t n, int ndim, const int64_t *shape,
                            size_t label_dim, int num_classes)
{
    if (!d || ndim < 1 || ndim > FL_DATASET_MAX_DIMS || !shape || num_classes < 1 || d->x ||
        d->y || label_dim < 1 || label_dim > (1u << 24))
        return FL_EINVAL;
    size_t dim = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || (uint64_t)shape[i] > (1u << 24))
            return FL_EINVAL;
        dim *= (size_t)shape[i];
    }
    if (dim > (1u << 24))
        return FL_EINVAL;
    if (n > FL_DATASET_MAX_N)
        return FL_ERANGE;
    if (n > 0 && dim > SIZE_MAX / sizeof(float) / n)
        return FL_ERANGE;
    d->x = calloc((n * dim) > 0 ? n * dim : 1, sizeof(float));
    d->y = calloc(n ? n * label_dim : 1, sizeof(int32_t));
    if (!d->x || !d->y) {
        fl_dataset_free(d);
        return FL_ENOMEM;
    }
    d->n = n;
    d->cap = n;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        d->shape[i] = shape[i];
    d->dim = dim;
    d->num_classes = num_classes;
    d->label_dim = label_dim;
    return 0;
}

int fl_dataset_alloc(fl_dataset_t *d, size_t n, int ndim, const int64_t *shape, int num_classes)
{
    return fl_dataset_alloc_labels(d, n, ndim, shape, 1, num_classes);
}

int fl_dataset_enable_groups(fl_dataset_t *d)
{
    if (!d || d->n || d->group)
        return FL_EINVAL;
    d->group = malloc((d->cap ? d->cap : 1) * sizeof(uint32_t));
    return d->group ? 0 : FL_ENOMEM;
}

int fl_dataset_add_group(fl_dataset_t *d, const char *name, uint32_t *id)
{
    if (!d || !name || d->num_groups >= UINT32_MAX)
        return FL_EINVAL;
    char **nn = realloc(d->group_names, (d->num_groups + 1) * sizeof(char *));
    if (!nn)
        return FL_ENOMEM;
    d->group_names = nn;
    size_t len = strlen(name);
    char *copy = malloc(len + 1);
    if (!copy)
        return FL_ENOMEM;
    memcpy(copy, name, len + 1);
    d->group_names[d->num_groups] = copy;
    if (id)
        *id = (uint32_t)d->num_groups;
    d->num_groups++;
    return 0;
}

/* Grows x, y (and group, coarse) to hold at least `want` examples. */
static int grow(fl_dataset_t *d, size_t want)
{
    if (want <= d->cap)
        return 0;
    if (want > FL_DATASET_MAX_N)
        return FL_ERANGE;
    size_t ncap = d->cap ? d->cap : 64;
    while (ncap < want)
        ncap *= 2;
    if (ncap > FL_DATASET_MAX_N)
        ncap = FL_DATASET_MAX_N;
    if (d->dim > SIZE_MAX / sizeof(float) / ncap || d->label_dim > SIZE_MAX / sizeof(int32_t) / ncap)
        return FL_ERANGE;
    float *nx = realloc(d->x, ncap * d->dim * sizeof(float));
    if (!nx)
        return FL_ENOMEM;
    d->x = nx;
    int32_t *ny = realloc(d->y, ncap * d->label_dim * sizeof(int32_t));
    if (!ny)
        return FL_ENOMEM;
    d->y = ny;
    if (d->group) {
        uint32_t *ng = realloc(d->group, ncap * sizeof(uint32_t));
        if (!ng)
            return FL_ENOMEM;
        d->group = ng;
    }
    if (d->coarse) {
        int32_t *nc = realloc(d->coarse, ncap * sizeof(int32_t));
        if (!nc)
            return FL_ENOMEM;
        d->coarse = nc;
    }
    d->cap = ncap;
    return 0;
}

int fl_dataset_append(fl_dataset_t *d, const float *x, const int32_t *y, uint32_t group)
{
    if (!d || !d->x || !x || !y)
        return FL_EINVAL;
    int rc = grow(d, d->n + 1);
    if (rc)
        return rc;
    memcpy(d->x + d->n * d->dim, x, d->dim * sizeof(float));
    memcpy(d->y + d->n * d->label_dim, y, d->label_dim * sizeof(int32_t));
    if (d->group)
        d->group[d->n] = group;
    if (d->coarse)
        d->coarse[d->n] = 0;
    d->n++;
    return 0;
}

void fl_dataset_trim(fl_dataset_t *d)
{
    if (!d || !d->x || d->cap == d->n || d->n == 0)
        return;
    float *nx = realloc(d->x, d->n * d->dim * sizeof(float));
    if (nx)
        d->x = nx;
    int32_t *ny = realloc(d->y, d->n * d->label_dim * sizeof(int32_t));
    if (ny)
        d->y = ny;
    if (!nx || !ny)
        return; /* cap stays: the arrays are still at least that large where realloc failed */
    if (d->group) {
        uint32_t *ng = realloc(d->group, d->n * sizeof(uint32_t));
        if (ng)
            d->group = ng;
        else
            return;
    }
    if (d->coarse) {
        int32_t *nc = realloc(d->coarse, d->n * sizeof(int32_t));
        if (nc)
            d->coarse = nc;
        else
            return;
    }
    d->cap = d->n;
}

int fl_dataset_subset(const fl_dataset_t *src, const uint32_t *idx, size_t k, fl_dataset_t *out)
{
    if (!src || !out || (k && !idx))
        return FL_EINVAL;
    for (size_t i = 0; i < k; i++)
        if (idx[i] >= src->n)
            return FL_EINVAL;
    uint32_t *map = NULL;
    int rc = fl_dataset_alloc_labels(out, k, src->ndim, src->shape, src->label_dim,
                                     src->num_classes);
    if (rc)
        return rc;
    out->multi_hot = src->multi_hot;
    for (size_t i = 0; i < k; i++) {
        memcpy(out->x + i * out->dim, src->x + (size_t)idx[i] * src->dim, src->dim * sizeof(float));
        memcpy(out->y + i * out->label_dim, src->y + (size_t)idx[i] * src->label_dim,
               src->label_dim * sizeof(int32_t));
    }
    if (src->coarse) {
        out->coarse = malloc((k ? k : 1) * sizeof(int32_t));
        if (!out->coarse)
            goto oom;
        for (size_t i = 0; i < k; i++)
            out->coarse[i] = src->coarse[idx[i]];
        out->num_coarse = src->num_coarse;
    }
    if (src->group) {
        /* Only the groups that occur in the subset come along, renumbered in
         * order of first appearance: a client's share names its own user(s),
         * not every user of the source. */
        map = malloc((src->num_groups ? src->num_groups : 1) * sizeof(uint32_t));
        out->group = malloc((k ? k : 1) * sizeof(uint32_t));
        if (!map || !out->group)
            goto oom;
        for (size_t g = 0; g < src->num_groups; g++)
            map[g] = UINT32_MAX;
        for (size_t i = 0; i < k; i++) {
            uint32_t g = src->group[idx[i]];
            if (g >= src->num_groups) {
                free(map);
                fl_dataset_free(out);
                return FL_EINVAL;
            }
            if (map[g] == UINT32_MAX &&
                fl_dataset_add_group(out, src->group_names ? src->group_names[g] : "", &map[g]))
                goto oom;
            out->group[i] = map[g];
        }
    }
    free(map);
    return 0;
oom:
    free(map);
    fl_dataset_free(out);
    return FL_ENOMEM;
}
