#include "common/nn/dropout.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

/* Random draws per fl_rng_fill_u32 call in a forward: 4 KiB on the stack,
 * in L1 while the block's mask and outputs are written. */
#define DROPOUT_BLOCK 1024

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
     * mask depends only on the stream and the element's position. The draws
     * come in blocks from fl_rng_fill_u32 (the same values as one fl_rng_u32
     * per element, without a call and a state reload each), and the
     * compare-and-select loop over a block then vectorizes; what remains is
     * mostly the generator's serial chain (the cnn's 184,320-element dropout
     * at B = 20 is in bench_train's cnn rows). */
    const uint32_t thr = (uint32_t)((double)d->p * 4294967296.0 > 4294967295.0
                                        ? 4294967295u
                                        : (double)d->p * 4294967296.0);
    const float scale = 1.0f / (1.0f - d->p);
    uint32_t draw[DROPOUT_BLOCK];
    for (size_t i0 = 0; i0 < m; i0 += DROPOUT_BLOCK) {
        size_t b = m - i0 < DROPOUT_BLOCK ? m - i0 : DROPOUT_BLOCK;
        const float *xb = x + i0;
        float *yb = y + i0;
        uint8_t *mb = d->mask + i0;
        fl_rng_fill_u32(l->rng, draw, b);
        for (size_t i = 0; i < b; i++) {
            uint8_t keep = draw[i] >= thr;
            float v = xb[i] * scale; /* read unconditionally: a select, not a branch */
            mb[i] = keep;
            yb[i] = keep ? v : 0.0f;
        }
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
    /* dx = mask ? dy * scale : +0.0f, as a bitwise AND of dy * scale with
     * 0 or all ones widened from the byte mask: the same bits as the select
     * (a multiply by a 0/scale float mask would not be: -0.0 for negative dy,
     * NaN for infinite dy), and a loop the compiler vectorizes, where the
     * select on a byte did not (bench_train's cnn rows). */
    const float scale = 1.0f / (1.0f - d->p);
    const uint8_t *mask = d->mask;
    for (size_t i = 0; i < m; i++) {
        float v = dy[i] * scale;
        uint32_t bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= 0u - (uint32_t)mask[i];
        memcpy(&dx[i], &bits, sizeof bits);
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
