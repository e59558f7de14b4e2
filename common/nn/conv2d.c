#include "common/nn/conv2d.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/nn/gemm.h"

typedef struct {
    int cin, h, w, cout, ho, wo, k, stride, pad;
    int has_bias;
    float *col;  /* [cin*k*k, ho*wo] for one example */
    float *dcol; /* same shape, backward */
} conv_t;

/* Lowers one example x[cin, h, w] into col[cin*k*k, ho*wo] (zeros where the
 * window hangs over the padding). */
static void im2col(const conv_t *c, const float *x, float *col)
{
    const int hw = c->ho * c->wo;
    for (int ch = 0; ch < c->cin; ch++)
        for (int ki = 0; ki < c->k; ki++)
            for (int kj = 0; kj < c->k; kj++) {
                float *row = col + (size_t)((ch * c->k + ki) * c->k + kj) * hw;
                const float *plane = x + (size_t)ch * c->h * c->w;
                for (int oh = 0; oh < c->ho; oh++) {
                    int ih = oh * c->stride - c->pad + ki;
                    float *dst = row + (size_t)oh * c->wo;
                    if (ih < 0 || ih >= c->h) {
                        memset(dst, 0, (size_t)c->wo * sizeof(float));
                        continue;
                    }
                    const float *src = plane + (size_t)ih * c->w;
                    if (c->stride == 1) {
                        /* ow in [lo, hi) reads src[ow - pad + kj] inside the row. */
                        int off = kj - c->pad;
                        int lo = off < 0 ? -off : 0;
                        int hi = c->w - off < c->wo ? c->w - off : c->wo;
                        if (hi < lo)
                            hi = lo;
                        for (int ow = 0; ow < lo; ow++)
                            dst[ow] = 0.0f;
                        if (hi > lo)
                            memcpy(dst + lo, src + lo + off, (size_t)(hi - lo) * sizeof(float));
                        for (int ow = hi; ow < c->wo; ow++)
                            dst[ow] = 0.0f;
                    } else {
                        for (int ow = 0; ow < c->wo; ow++) {
                            int iw = ow * c->stride - c->pad + kj;
                            dst[ow] = (iw >= 0 && iw < c->w) ? src[iw] : 0.0f;
                        }
                    }
                }
            }
}

/* Adds col[cin*k*k, ho*wo] back into dx[cin, h, w] (the adjoint of im2col). */
static void col2im(const conv_t *c, const float *col, float *dx)
{
    const int hw = c->ho * c->wo;
    memset(dx, 0, (size_t)c->cin * c->h * c->w * sizeof(float));
    for (int ch = 0; ch < c->cin; ch++)
        for (int ki = 0; ki < c->k; ki++)
            for (int kj = 0; kj < c->k; kj++) {
                const float *row = col + (size_t)((ch * c->k + ki) * c->k + kj) * hw;
                float *plane = dx + (size_t)ch * c->h * c->w;
                for (int oh = 0; oh < c->ho; oh++) {
                    int ih = oh * c->stride - c->pad + ki;
                    if (ih < 0 || ih >= c->h)
                        continue;
                    const float *src = row + (size_t)oh * c->wo;
                    float *dst = plane + (size_t)ih * c->w;
                    for (int ow = 0; ow < c->wo; ow++) {
                        int iw = ow * c->stride - c->pad + kj;
                        if (iw >= 0 && iw < c->w)
                            dst[iw] += src[ow];
                    }
                }
            }
}

static int conv_reserve(fl_layer_t *l, size_t max_n)
{
    conv_t *c = l->priv;
    if (!c->col) {
        size_t sz = (size_t)c->cin * c->k * c->k * c->ho * c->wo * sizeof(float);
        c->col = malloc(sz);
        c->dcol = malloc(sz);
        if (!c->col || !c->dcol)
            return FL_ENOMEM;
    }
    l->max_n = max_n;
    return 0;
}

static void conv_init(fl_layer_t *l, fl_rng_t *rng)
{
    const conv_t *c = l->priv;
    int fan_in = c->cin * c->k * c->k;
    float bound = 1.0f / sqrtf((float)fan_in);
    fl_init_uniform(l->p[0], (size_t)c->cout * fan_in, bound, rng);
    if (c->has_bias)
        fl_init_uniform(l->p[1], (size_t)c->cout, bound, rng);
}

static void conv_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    conv_t *c = l->priv;
    const int kk = c->cin * c->k * c->k, hw = c->ho * c->wo;
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * l->in_dim;
        float *yi = y + i * l->out_dim;
        const float *b = NULL;
        if (c->k == 1 && c->stride == 1 && c->pad == 0) {
            b = xi; /* a 1x1 convolution needs no lowering */
        } else {
            im2col(c, xi, c->col);
            b = c->col;
        }
        fl_gemm(0, 0, c->cout, hw, kk, 1.0f, l->p[0], kk, b, hw, 0.0f, yi, hw);
        if (c->has_bias)
            for (int o = 0; o < c->cout; o++) {
                float bo = l->p[1][o];
                float *yo = yi + (size_t)o * hw;
                for (int j = 0; j < hw; j++)
                    yo[j] += bo;
            }
    }
}

static void conv_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    conv_t *c = l->priv;
    const int kk = c->cin * c->k * c->k, hw = c->ho * c->wo;
    const int direct = c->k == 1 && c->stride == 1 && c->pad == 0;
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * l->in_dim;
        const float *dyi = dy + i * l->out_dim;
        const float *b = xi;
        if (!direct) {
            im2col(c, xi, c->col);
            b = c->col;
        }
        /* dW[cout, kk] += dy[cout, hw] * col^T[hw, kk] */
        fl_gemm(0, 1, c->cout, kk, hw, 1.0f, dyi, hw, b, hw, 1.0f, l->g[0], kk);
        if (c->has_bias)
            for (int o = 0; o < c->cout; o++) {
                const float *d = dyi + (size_t)o * hw;
                float s = 0.0f;
                for (int j = 0; j < hw; j++)
                    s += d[j];
                l->g[1][o] += s;
            }
        if (dx) {
            float *dxi = dx + i * l->in_dim;
            /* dcol[kk, hw] = W^T[kk, cout] * dy[cout, hw] */
            if (direct) {
                fl_gemm(1, 0, kk, hw, c->cout, 1.0f, l->p[0], kk, dyi, hw, 0.0f, dxi, hw);
            } else {
                fl_gemm(1, 0, kk, hw, c->cout, 1.0f, l->p[0], kk, dyi, hw, 0.0f, c->dcol, hw);
                col2im(c, c->dcol, dxi);
            }
        }
    }
}

static void conv_destroy(fl_layer_t *l)
{
    conv_t *c = l->priv;
    if (c) {
        free(c->col);
        free(c->dcol);
    }
    free(c);
}

static const fl_layer_ops_t conv_ops = {
    .kind = "conv2d",
    .reserve = conv_reserve,
    .init = conv_init,
    .forward = conv_forward,
    .backward = conv_backward,
    .destroy = conv_destroy,
};

int fl_conv2d_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                     int64_t out_channels, int k, int stride, int pad, int bias, fl_layer_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!layout || !in || in->ndim != 3 || out_channels <= 0 || out_channels > 65536 || k < 1 ||
        stride < 1 || pad < 0 || pad >= k || in->d[0] <= 0 || in->d[0] > 65536 || in->d[1] <= 0 ||
        in->d[1] > 65536 || in->d[2] <= 0 || in->d[2] > 65536)
        return FL_EINVAL;
    int64_t ho = (in->d[1] + 2 * pad - k) / stride + 1, wo = (in->d[2] + 2 * pad - k) / stride + 1;
    if (in->d[1] + 2 * pad < k || in->d[2] + 2 * pad < k || ho < 1 || wo < 1)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    conv_t *c = calloc(1, sizeof *c);
    int rc = FL_ENOMEM;
    if (!l || !c)
        goto fail;
    fl_shape_t os = {.ndim = 3, .d = {out_channels, ho, wo}};
    if ((rc = fl_layer_setup(l, &conv_ops, prefix, in, &os)))
        goto fail;
    if ((uint64_t)in->d[0] * k * k * ho * wo > INT32_MAX) {
        rc = FL_EINVAL;
        goto fail;
    }
    *c = (conv_t){.cin = (int)in->d[0], .h = (int)in->d[1], .w = (int)in->d[2],
                  .cout = (int)out_channels, .ho = (int)ho, .wo = (int)wo, .k = k,
                  .stride = stride, .pad = pad, .has_bias = bias != 0};
    l->priv = c;
    c = NULL;
    int64_t wshape[4] = {out_channels, in->d[0], k, k};
    if ((rc = fl_layer_add_param(l, layout, "weight", 4, wshape, FL_PARAM_DECAY)))
        goto fail;
    if (bias && (rc = fl_layer_add_param(l, layout, "bias", 1, &out_channels, 0)))
        goto fail;
    *out = l;
    return 0;
fail:
    fl_layer_free(l);
    free(c);
    return rc;
}

/* ---- max pooling ---- */

typedef struct {
    int ch, h, w, ho, wo, k, stride;
    int32_t *arg; /* per output element of the last training forward: the input index */
    size_t cap;
} pool_t;

static int pool_reserve(fl_layer_t *l, size_t max_n)
{
    pool_t *p = l->priv;
    size_t need = max_n * l->out_dim;
    if (need > p->cap) {
        int32_t *a = realloc(p->arg, need * sizeof *a);
        if (!a)
            return FL_ENOMEM;
        p->arg = a;
        p->cap = need;
    }
    l->max_n = max_n;
    return 0;
}

static void pool_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    pool_t *p = l->priv;
    for (size_t i = 0; i < n; i++) {
        const float *xi = x + i * l->in_dim;
        float *yi = y + i * l->out_dim;
        int32_t *ai = p->arg + i * l->out_dim;
        for (int c = 0; c < p->ch; c++)
            for (int oh = 0; oh < p->ho; oh++)
                for (int ow = 0; ow < p->wo; ow++) {
                    int best = -1;
                    float mx = -FLT_MAX;
                    for (int ki = 0; ki < p->k; ki++) {
                        int ih = oh * p->stride + ki;
                        for (int kj = 0; kj < p->k; kj++) {
                            int idx = (c * p->h + ih) * p->w + ow * p->stride + kj;
                            /* NaN never wins a comparison; keep the first element then. */
                            if (best < 0 || xi[idx] > mx) {
                                mx = xi[idx];
                                best = idx;
                            }
                        }
                    }
                    size_t o = ((size_t)c * p->ho + oh) * p->wo + ow;
                    yi[o] = mx;
                    ai[o] = best;
                }
    }
}

static void pool_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    pool_t *p = l->priv;
    if (!dx)
        return;
    memset(dx, 0, n * l->in_dim * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        const int32_t *ai = p->arg + i * l->out_dim;
        const float *dyi = dy + i * l->out_dim;
        float *dxi = dx + i * l->in_dim;
        for (size_t o = 0; o < l->out_dim; o++)
            dxi[ai[o]] += dyi[o];
    }
}

static void pool_destroy(fl_layer_t *l)
{
    pool_t *p = l->priv;
    if (p)
        free(p->arg);
    free(p);
}

static const fl_layer_ops_t pool_ops = {
    .kind = "maxpool2d",
    .reserve = pool_reserve,
    .forward = pool_forward,
    .backward = pool_backward,
    .destroy = pool_destroy,
};

int fl_conv2d_maxpool_create(const fl_shape_t *in, int k, int stride, fl_layer_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!in || in->ndim != 3 || k < 1 || stride < 1 || in->d[1] < k || in->d[2] < k ||
        in->d[0] > 65536 || in->d[1] > 65536 || in->d[2] > 65536)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    pool_t *p = calloc(1, sizeof *p);
    int rc = FL_ENOMEM;
    if (!l || !p)
        goto fail;
    int64_t ho = (in->d[1] - k) / stride + 1, wo = (in->d[2] - k) / stride + 1;
    fl_shape_t os = {.ndim = 3, .d = {in->d[0], ho, wo}};
    if ((rc = fl_layer_setup(l, &pool_ops, NULL, in, &os)))
        goto fail;
    *p = (pool_t){.ch = (int)in->d[0], .h = (int)in->d[1], .w = (int)in->d[2], .ho = (int)ho,
                  .wo = (int)wo, .k = k, .stride = stride};
    l->priv = p;
    *out = l;
    return 0;
fail:
    free(l);
    free(p);
    return rc;
}
