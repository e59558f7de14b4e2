#include "common/nn/pool.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

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

/* ---- max pooling without padding (the cnn's nn.MaxPool2d) ---- */

typedef struct {
    int ch, h, w, ho, wo, k, stride;
    int32_t *arg; /* per output element of the last training forward: the input index */
    size_t cap;
} valid_pool_t;

static int vp_reserve(fl_layer_t *l, size_t max_n)
{
    valid_pool_t *p = l->priv;
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

/* The cnn's 2x2/2 pool, the common case, without the general loop's index
 * arithmetic and branches: each window is four loads and three selects in
 * the same order as the general loop (first maximum wins, NaN never wins),
 * so the result and the recorded argmax are identical. planes = n * ch. */
static void vp_forward_2x2(valid_pool_t *p, const float *x, float *y, size_t planes)
{
    const int h = p->h, w = p->w, ho = p->ho, wo = p->wo;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *xc = x + pl * (size_t)h * w;
        float *yc = y + pl * (size_t)ho * wo;
        int32_t *ac = p->arg + pl * (size_t)ho * wo;
        /* arg holds the index within the example (channel offset added). */
        const int32_t base = (int32_t)((pl % (size_t)p->ch) * (size_t)h * w);
        for (int oh = 0; oh < ho; oh++) {
            const float *r0 = xc + (size_t)(2 * oh) * w, *r1 = r0 + w;
            const int32_t i0 = base + 2 * oh * w;
            for (int ow = 0; ow < wo; ow++) {
                float m = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
                int32_t at = i0 + 2 * ow;
                at = b > m ? i0 + 2 * ow + 1 : at;
                m = b > m ? b : m;
                at = c > m ? i0 + w + 2 * ow : at;
                m = c > m ? c : m;
                at = d > m ? i0 + w + 2 * ow + 1 : at;
                m = d > m ? d : m;
                yc[oh * wo + ow] = m;
                ac[oh * wo + ow] = at;
            }
        }
    }
}

static void vp_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    valid_pool_t *p = l->priv;
    if (p->k == 2 && p->stride == 2) {
        vp_forward_2x2(p, x, y, n * (size_t)p->ch);
        return;
    }
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

/* The 2x2/2 pool's backward pass on even sides: every input position lies
 * in exactly one window, so each window's four gradients are written in
 * one pass (the output gradient where the maximum was, zero elsewhere)
 * instead of clearing dx and scattering into it. g + 0.0f is what the
 * scatter stored (0 + g): the same value, and +0 for a -0 gradient, so
 * both paths give bit-identical results. planes = n * ch. */
static void vp_backward_2x2(const valid_pool_t *p, const float *dy, float *dx, size_t planes)
{
    const int w = p->w, ho = p->ho, wo = p->wo;
    for (size_t pl = 0; pl < planes; pl++) {
        const int32_t *ac = p->arg + pl * (size_t)ho * wo;
        const float *dyc = dy + pl * (size_t)ho * wo;
        float *dxc = dx + pl * (size_t)p->h * w;
        const int32_t base = (int32_t)((pl % (size_t)p->ch) * (size_t)p->h * w);
        for (int oh = 0; oh < ho; oh++) {
            float *d0 = dxc + (size_t)(2 * oh) * w, *d1 = d0 + w;
            const int32_t i0 = base + 2 * oh * w;
            for (int ow = 0; ow < wo; ow++) {
                const int32_t at = ac[oh * wo + ow] - (i0 + 2 * ow);
                const float g = dyc[oh * wo + ow] + 0.0f;
                d0[2 * ow] = at == 0 ? g : 0.0f;
                d0[2 * ow + 1] = at == 1 ? g : 0.0f;
                d1[2 * ow] = at == w ? g : 0.0f;
                d1[2 * ow + 1] = at == w + 1 ? g : 0.0f;
            }
        }
    }
}

static void vp_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    valid_pool_t *p = l->priv;
    if (!dx)
        return;
    if (p->k == 2 && p->stride == 2 && p->h == 2 * p->ho && p->w == 2 * p->wo) {
        vp_backward_2x2(p, dy, dx, n * (size_t)p->ch);
        return;
    }
    memset(dx, 0, n * l->in_dim * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        const int32_t *ai = p->arg + i * l->out_dim;
        const float *dyi = dy + i * l->out_dim;
        float *dxi = dx + i * l->in_dim;
        for (size_t o = 0; o < l->out_dim; o++)
            dxi[ai[o]] += dyi[o];
    }
}

static void vp_destroy(fl_layer_t *l)
{
    valid_pool_t *p = l->priv;
    if (p)
        free(p->arg);
    free(p);
}

static const fl_layer_ops_t vp_ops = {
    .kind = "maxpool2d",
    .reserve = vp_reserve,
    .forward = vp_forward,
    .backward = vp_backward,
    .destroy = vp_destroy,
};

int fl_pool_max_create(const fl_shape_t *in, int k, int stride, fl_layer_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!in || in->ndim != 3 || k < 1 || stride < 1 || in->d[1] < k || in->d[2] < k ||
        in->d[0] > 65536 || in->d[1] > 65536 || in->d[2] > 65536)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    valid_pool_t *p = calloc(1, sizeof *p);
    int rc = FL_ENOMEM;
    if (!l || !p)
        goto fail;
    int64_t ho = (in->d[1] - k) / stride + 1, wo = (in->d[2] - k) / stride + 1;
    fl_shape_t os = {.ndim = 3, .d = {in->d[0], ho, wo}};
    if ((rc = fl_layer_setup(l, &vp_ops, NULL, in, &os)))
        goto fail;
    *p = (valid_pool_t){.ch = (int)in->d[0], .h = (int)in->d[1], .w = (int)in->d[2], .ho = (int)ho,
                  .wo = (int)wo, .k = k, .stride = stride};
    l->priv = p;
    *out = l;
    return 0;
fail:
    free(l);
    free(p);
    return rc;
}
