#include "common/nn/dropout.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

typedef struct {
    float p;
    uint8_t *mask; /* max_n * in_dim, 1 = kept; valid after a training forward */
    size_t cap;
    int masked;    /* the last forward was a training forward with p > 0 */
} dropout_t;

static int dropout_reserve(fl_layer_t *l, size_t max_n)
{
    dropout_t *d = l->priv;
    size_t need = max_n * l->in_dim;
    if (need > d->cap) {
        uint8_t *m = realloc(d->mask, need);
        if (!m)
            return FL_ENOMEM;
        d->mask = m;
        d->cap = need;
    }
    l->max_n = max_n;
    return 0;
}

static void dropout_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    dropout_t *d = l->priv;
    size_t m = n * l->in_dim;
    d->masked = mode == FL_MODE_TRAIN && d->p > 0.0f && l->rng;
    if (!d->masked) {
        memcpy(y, x, m * sizeof(float));
        return;
    }
    /* Compare 32 random bits with the threshold: one draw per element, so the
     * mask depends only on the stream and the element's position. */
    const uint32_t thr = (uint32_t)((double)d->p * 4294967296.0 > 4294967295.0
                                        ? 4294967295u
                                        : (double)d->p * 4294967296.0);
    const float scale = 1.0f / (1.0f - d->p);
    for (size_t i = 0; i < m; i++) {
        uint8_t keep = fl_rng_u32(l->rng) >= thr;
        float v = x[i] * scale; /* read unconditionally: a select, not a branch */
        d->mask[i] = keep;
        y[i] = keep ? v : 0.0f;
    }
}

static void dropout_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                             float *dx, size_t n)
{
    dropout_t *d = l->priv;
    if (!dx)
        return;
    size_t m = n * l->in_dim;
    if (!d->masked) {
        memcpy(dx, dy, m * sizeof(float));
        return;
    }
    const float scale = 1.0f / (1.0f - d->p);
    for (size_t i = 0; i < m; i++) {
        float v = dy[i] * scale; /* read unconditionally so the loop vectorizes */
        dx[i] = d->mask[i] ? v : 0.0f;
    }
}

static void dropout_destroy(fl_layer_t *l)
{
    dropout_t *d = l->priv;
    if (d)
        free(d->mask);
    free(d);
}

static const fl_layer_ops_t dropout_ops = {
    .kind = "dropout",
    .reserve = dropout_reserve,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .destroy = dropout_destroy,
};

int fl_dropout_create(const fl_shape_t *in, float p, fl_layer_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!in || !(p >= 0.0f && p < 1.0f))
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    dropout_t *d = calloc(1, sizeof *d);
    int rc = FL_ENOMEM;
    if (!l || !d)
        goto fail;
    if ((rc = fl_layer_setup(l, &dropout_ops, NULL, in, in)))
        goto fail;
    d->p = p;
    l->priv = d;
    *out = l;
    return 0;
fail:
    free(l);
    free(d);
    return rc;
}
