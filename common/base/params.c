#include "common/base/params.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/bytes.h"
#include "common/base/error.h"

void fl_params_init(fl_params_t *p) { memset(p, 0, sizeof *p); }

int fl_params_add(fl_params_t *p, const char *name, int ndim, const int64_t *shape, unsigned flags)
{
    if (!p || !name || !*name || strlen(name) >= FL_PARAM_NAME_MAX || ndim < 1 ||
        ndim > FL_PARAM_MAX_DIMS || !shape)
        return FL_EINVAL;
    if (p->data)
        return FL_ESTATE;
    if (fl_params_find(p, name))
        return FL_EEXIST;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || (uint64_t)shape[i] > (SIZE_MAX / sizeof(float)) / numel)
            return FL_EINVAL;
        numel *= (size_t)shape[i];
    }
    if (numel > SIZE_MAX / sizeof(float) - p->numel)
        return FL_ERANGE;
    if (p->nviews == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        fl_param_view_t *v = realloc(p->views, cap * sizeof *v);
        if (!v)
            return FL_ENOMEM;
        p->views = v;
        p->cap = cap;
    }
    fl_param_view_t *v = &p->views[p->nviews++];
    memset(v, 0, sizeof *v);
    strcpy(v->name, name);
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        v->shape[i] = shape[i];
    v->offset = p->numel;
    v->numel = numel;
    v->flags = flags;
    p->numel += numel;
    return 0;
}

int fl_params_alloc(fl_params_t *p)
{
    if (!p)
        return FL_EINVAL;
    if (p->data)
        return FL_ESTATE;
    if (p->numel == 0)
        return FL_EEMPTY;
    /* aligned_alloc wants a size that is a multiple of the alignment. */
    size_t bytes = (p->numel * sizeof(float) + 63) & ~(size_t)63;
    p->data = aligned_alloc(64, bytes);
    if (!p->data)
        return FL_ENOMEM;
    memset(p->data, 0, bytes);
    return 0;
}

int fl_params_clone_layout(fl_params_t *dst, const fl_params_t *src)
{
    if (!dst || !src)
        return FL_EINVAL;
    fl_params_init(dst);
    if (src->nviews) {
        dst->views = malloc(src->nviews * sizeof *dst->views);
        if (!dst->views)
            return FL_ENOMEM;
        memcpy(dst->views, src->views, src->nviews * sizeof *dst->views);
    }
    dst->nviews = dst->cap = src->nviews;
    dst->numel = src->numel;
    int rc = fl_params_alloc(dst);
    if (rc)
        fl_params_free(dst);
    return rc;
}

void fl_params_free(fl_params_t *p)
{
    if (!p)
        return;
    free(p->data);
    free(p->views);
    fl_params_init(p);
}

const fl_param_view_t *fl_params_find(const fl_params_t *p, const char *name)
{
    if (!p || !name)
        return NULL;
    for (size_t i = 0; i < p->nviews; i++)
        if (strcmp(p->views[i].name, name) == 0)
            return &p->views[i];
    return NULL;
}

int fl_params_same_layout(const fl_params_t *a, const fl_params_t *b)
{
    if (a->nviews != b->nviews || a->numel != b->numel)
        return 0;
    for (size_t i = 0; i < a->nviews; i++) {
        const fl_param_view_t *x = &a->views[i], *y = &b->views[i];
        if (strcmp(x->name, y->name) || x->ndim != y->ndim || x->offset != y->offset)
            return 0;
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d])
                return 0;
    }
    return 1;
}

uint32_t fl_params_crc32(const float *x, size_t n)
{
    /* fedopt only targets little-endian hosts, so the in-memory bytes are the
     * little-endian bytes. */
    return fl_crc32(0, x, n * sizeof(float));
}

int fl_f32_all_finite(const float *x, size_t n)
{
    /* Test the exponent bits directly: this vectorizes (isfinite on floats
     * does not reliably) and is immune to -ffinite-math-only. Blocks let a bad
     * value stop the scan early without a branch per element. */
    const size_t block = 4096;
    for (size_t i = 0; i < n; i += block) {
        size_t end = i + block < n ? i + block : n;
        uint32_t bad = 0;
        for (size_t j = i; j < end; j++) {
            uint32_t u;
            memcpy(&u, &x[j], sizeof u);
            bad |= (u & 0x7f800000u) == 0x7f800000u;
        }
        if (bad)
            return 0;
    }
    return 1;
}

double fl_f32_norm(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return sqrt(s);
}
