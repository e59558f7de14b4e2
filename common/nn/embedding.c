#include "common/nn/embedding.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

typedef struct {
    int64_t vocab, dim;
} embedding_t;

/* The row a float token id selects, or -1 for padding and anything invalid. */
static int64_t token_row(float v, int64_t vocab)
{
    if (!(v >= 1.0f) || v >= (float)vocab || v != floorf(v))
        return -1;
    return (int64_t)v;
}

static void emb_init(fl_layer_t *l, fl_rng_t *rng)
{
    const embedding_t *e = l->priv;
    for (size_t i = 0; i < (size_t)(e->vocab * e->dim); i++)
        l->p[0][i] = (float)fl_rng_normal(rng);
    memset(l->p[0], 0, (size_t)e->dim * sizeof(float));
}

static void emb_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    (void)mode;
    const embedding_t *e = l->priv;
    const size_t d = (size_t)e->dim;
    for (size_t i = 0; i < n * l->in_dim; i++) {
        int64_t r = token_row(x[i], e->vocab);
        if (r < 0)
            memset(y + i * d, 0, d * sizeof(float));
        else
            memcpy(y + i * d, l->p[0] + (size_t)r * d, d * sizeof(float));
    }
}

static void emb_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                         float *dx, size_t n)
{
    (void)y;
    const embedding_t *e = l->priv;
    const size_t d = (size_t)e->dim;
    for (size_t i = 0; i < n * l->in_dim; i++) {
        int64_t r = token_row(x[i], e->vocab);
        if (r < 0)
            continue;
        float *g = l->g[0] + (size_t)r * d;
        const float *s = dy + i * d;
        for (size_t j = 0; j < d; j++)
            g[j] += s[j];
    }
    /* Token ids are not differentiable: their "gradient" is zero. */
    if (dx)
        memset(dx, 0, n * l->in_dim * sizeof(float));
}

static void emb_destroy(fl_layer_t *l) { free(l->priv); }

static const fl_layer_ops_t emb_ops = {
    .kind = "embedding",
    .init = emb_init,
    .forward = emb_forward,
    .backward = emb_backward,
    .destroy = emb_destroy,
};

int fl_embedding_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                        int64_t vocab, int64_t dim, fl_layer_t **out)
{
    *out = NULL;
    if (!layout || !in || in->ndim != 1 || vocab < 2 || vocab > (1 << 24) || dim < 1 ||
        dim > INT32_MAX)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    embedding_t *e = calloc(1, sizeof *e);
    int rc = FL_ENOMEM;
    if (!l || !e)
        goto fail;
    fl_shape_t os = {.ndim = 2, .d = {in->d[0], dim}};
    if ((rc = fl_layer_setup(l, &emb_ops, prefix, in, &os)))
        goto fail;
    l->priv = e;
    e->vocab = vocab;
    e->dim = dim;
    e = NULL;
    int64_t shape[2] = {vocab, dim};
    if ((rc = fl_layer_add_param(l, layout, "weight", 2, shape, 0)))
        goto fail;
    *out = l;
    return 0;
fail:
    fl_layer_free(l);
    free(e);
    return rc;
}
