#include "common/nn/pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

typedef struct {
    int C, H, W, Ho, Wo, k, stride, pad_top, pad_left;
    size_t cap_n;
    int32_t *arg; /* [n, C, Ho, Wo] flat input index (within the channel) of each maximum */
} maxpool_t;

static int mp_reserve(fl_layer_t *l, size_t max_n)
{
    maxpool_t *s = l->priv;
    if (max_n <= s->cap_n)
        return 0;
    free(s->arg);
    s->cap_n = 0;
    s->arg = malloc(max_n * l->out_dim * sizeof(int32_t));
    if (!s->arg)
        return FL_ENOMEM;
    s->cap_n = max_n;
    return 0;
}

static void mp_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    (void)mode;
    maxpool_t *s = l->priv;
    const size_t hw = (size_t)s->H * s->W, ohw = (size_t)s->Ho * s->Wo;
    for (size_t p = 0; p < n * (size_t)s->C; p++) {
        const float *xc = x + p * hw;
        float *yc = y + p * ohw;
        int32_t *ac = s->arg + p * ohw;
        for (int oh = 0; oh < s->Ho; oh++)
            for (int ow = 0; ow < s->Wo; ow++) {
                const int h0 = oh * s->stride - s->pad_top, w0 = ow * s->stride - s->pad_left;
                int best = -1;
                float bv = 0.0f;
                for (int dh = 0; dh < s->k; dh++) {
                    const int h = h0 + dh;
                    if (h < 0 || h >= s->H)
                        continue;
                    for (int dw = 0; dw < s->k; dw++) {
                        const int w = w0 + dw;
                        if (w < 0 || w >= s->W)
                            continue;
                        const float v = xc[h * s->W + w];
                        if (best < 0 || v > bv) {
                            bv = v;
                            best = h * s->W + w;
                        }
                    }
                }
                /* Every window holds at least one real position (the padding
                 * is smaller than the window), so best >= 0. */
                yc[oh * s->Wo + ow] = bv;
                ac[oh * s->Wo + ow] = best;
            }
    }
}

static void mp_backward(fl_layer_t *l, const float *x, const float *y, const float *dy, float *dx,
                        size_t n)
{
    (void)x;
    (void)y;
    maxpool_t *s = l->priv;
    if (!dx)
        return;
    const size_t hw = (size_t)s->H * s->W, ohw = (size_t)s->Ho * s->Wo;
    memset(dx, 0, n * l->in_dim * sizeof(float));
    for (size_t p = 0; p < n * (size_t)s->C; p++)
        for (size_t o = 0; o < ohw; o++)
            dx[p * hw + (size_t)s->arg[p * ohw + o]] += dy[p * ohw + o];
}

static void mp_destroy(fl_layer_t *l)
{
    maxpool_t *s = l->priv;
    if (s)
        free(s->arg);
    free(s);
}

static const fl_layer_ops_t mp_ops = {
    .kind = "maxpool_same",
    .reserve = mp_reserve,
    .forward = mp_forward,
    .backward = mp_backward,
    .destroy = mp_destroy,
};

/* TensorFlow's SAME geometry along one axis. */
static void same_axis(int in, int k, int stride, int *out, int *pad_before)
{
    *out = (in + stride - 1) / stride;
    int total = (*out - 1) * stride + k - in;
    if (total < 0)
        total = 0;
    *pad_before = total / 2;
}

int fl_pool_max_same_create(const fl_shape_t *in, int k, int stride, fl_layer_t **out)
{
    *out = NULL;
    if (!in || in->ndim != 3 || k < 1 || k > 64 || stride < 1 || stride > 64 || in->d[0] < 1 ||
        in->d[1] < 1 || in->d[2] < 1 || in->d[1] > (1 << 20) || in->d[2] > (1 << 20) ||
        in->d[0] > INT32_MAX)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    maxpool_t *s = calloc(1, sizeof *s);
    int rc = FL_ENOMEM;
    if (!l || !s)
        goto fail;
    s->C = (int)in->d[0];
    s->H = (int)in->d[1];
    s->W = (int)in->d[2];
    s->k = k;
    s->stride = stride;
    same_axis(s->H, k, stride, &s->Ho, &s->pad_top);
    same_axis(s->W, k, stride, &s->Wo, &s->pad_left);
    fl_shape_t os = {.ndim = 3, .d = {s->C, s->Ho, s->Wo}};
    if ((rc = fl_layer_setup(l, &mp_ops, NULL, in, &os)))
        goto fail;
    l->priv = s;
    *out = l;
    return 0;
fail:
    fl_layer_free(l);
    free(s);
    return rc;
}

/* ---- global average pool ---- */

static void gap_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    (void)mode;
    const size_t hw = l->in_dim / l->out_dim;
    const float inv = 1.0f / (float)hw;
    for (size_t p = 0; p < n * l->out_dim; p++) {
        float s = 0.0f;
        for (size_t k = 0; k < hw; k++)
            s += x[p * hw + k];
        y[p] = s * inv;
    }
}

static void gap_backward(fl_layer_t *l, const float *x, const float *y, const float *dy, float *dx,
                         size_t n)
{
    (void)x;
    (void)y;
    if (!dx)
        return;
    const size_t hw = l->in_dim / l->out_dim;
    const float inv = 1.0f / (float)hw;
    for (size_t p = 0; p < n * l->out_dim; p++)
        for (size_t k = 0; k < hw; k++)
            dx[p * hw + k] = dy[p] * inv;
}

static const fl_layer_ops_t gap_ops = {
    .kind = "global_avg_pool",
    .forward = gap_forward,
    .backward = gap_backward,
};

int fl_pool_global_avg_create(const fl_shape_t *in, fl_layer_t **out)
{
    *out = NULL;
    if (!in || in->ndim != 3)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    if (!l)
        return FL_ENOMEM;
    fl_shape_t os = {.ndim = 1, .d = {in->d[0]}};
    int rc = fl_layer_setup(l, &gap_ops, NULL, in, &os);
    if (rc) {
        fl_layer_free(l);
        return rc;
    }
    *out = l;
    return 0;
}
