#include "common/nn/lstm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/nn/gemm.h"

typedef struct {
    int T, D, H;
    size_t cap_n; /* batch size the scratch below is sized for */
    /* Time-major scratch: row (t, i) of a [T, n, W] buffer is at (t * n + i) * W. */
    float *xt;   /* [T, n, D] input */
    float *gate; /* [T, n, 4H] gate pre-activations, then activations i, f, g, o */
    float *cell; /* [T, n, H] c_t */
    float *tc;   /* [T, n, H] tanh(c_t) */
    float *hs;   /* [T + 1, n, H] h_{t-1} at index t (hs[0] = 0) */
    float *dg;   /* [T, n, 4H] dL/dG */
    float *dh;   /* [n, H] dL/dh_{t-1} flowing back through W_hh */
    float *dc;   /* [n, H] dL/dc_{t-1} flowing back through f */
    float *zero; /* [H] zeros: c_{-1}, so the step loops have no branch */
} lstm_t;

/* exp(x) for the gate nonlinearities, inline and branch-free so the gate
 * loops vectorize (libm's expf/tanhf are calls the loops cannot vectorize
 * through; bench_charlstm measures the step).
 * x = n ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor polynomial
 * (relative error < 2e-7 on that range), 2^n through the exponent bits. The
 * input is clamped to [-87, 88], where float exp neither overflows nor
 * goes subnormal; the gates saturate long before. */
static inline float fast_expf(float x)
{
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    /* Round to nearest by the 1.5 * 2^23 trick (vectorizes, unlike roundf). */
    const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigm(float x) { return 1.0f / (1.0f + fast_expf(-x)); }

static void sigm_inplace(float *restrict x, size_t n);
static void tanh_inplace(float *restrict x, size_t n);

/* tanh(x) = 2 sigmoid(2x) - 1: absolute error ~1e-7, which is what the
 * float32 state can hold anyway. */
static inline float tanh_f(float x) { return 2.0f / (1.0f + fast_expf(-2.0f * x)) - 1.0f; }

static void sigm_inplace(float *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = sigm(x[i]);
}

static void tanh_inplace(float *restrict x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = tanh_f(x[i]);
}

/* One example's cell update at one step, from its activated gates. */
static void step_forward(const float *restrict ig, const float *restrict fg,
                         const float *restrict gg, const float *restrict og,
                         const float *restrict cprev, float *restrict c, float *restrict tc,
                         float *restrict h, size_t H)
{
    for (size_t j = 0; j < H; j++) {
        const float cv = ig[j] * gg[j] + fg[j] * cprev[j];
        const float tv = tanh_f(cv);
        c[j] = cv;
        tc[j] = tv;
        h[j] = og[j] * tv;
    }
}

/* One example's gate gradients at one step; dh/dc carry the recurrence. */
static void step_backward(const float *restrict ig, const float *restrict fg,
                          const float *restrict gg, const float *restrict og,
                          const float *restrict cprev, const float *restrict tc,
                          const float *restrict dy, const float *restrict dhn,
                          float *restrict dcn, float *restrict di, float *restrict df,
                          float *restrict dg, float *restrict dout, size_t H)
{
    for (size_t j = 0; j < H; j++) {
        const float dh = dy[j] + dhn[j];
        const float dc = dh * og[j] * (1.0f - tc[j] * tc[j]) + dcn[j];
        di[j] = dc * gg[j] * ig[j] * (1.0f - ig[j]);
        df[j] = dc * cprev[j] * fg[j] * (1.0f - fg[j]);
        dg[j] = dc * ig[j] * (1.0f - gg[j] * gg[j]);
        dout[j] = dh * tc[j] * og[j] * (1.0f - og[j]);
        dcn[j] = dc * fg[j];
    }
}

static void lstm_free_scratch(lstm_t *s)
{
    free(s->xt);
    free(s->gate);
    free(s->cell);
    free(s->tc);
    free(s->hs);
    free(s->dg);
    free(s->dh);
    free(s->dc);
    free(s->zero);
    s->xt = s->gate = s->cell = s->tc = s->hs = s->dg = s->dh = s->dc = s->zero = NULL;
    s->cap_n = 0;
}

static int lstm_reserve(fl_layer_t *l, size_t max_n)
{
    lstm_t *s = l->priv;
    if (max_n <= s->cap_n)
        return 0;
    lstm_free_scratch(s);
    const size_t T = (size_t)s->T, D = (size_t)s->D, H = (size_t)s->H;
    if (max_n > SIZE_MAX / sizeof(float) / ((T + 1) * 4 * H + T * D))
        return FL_ENOMEM;
    s->xt = malloc(T * max_n * D * sizeof(float));
    s->gate = malloc(T * max_n * 4 * H * sizeof(float));
    s->cell = malloc(T * max_n * H * sizeof(float));
    s->tc = malloc(T * max_n * H * sizeof(float));
    s->hs = malloc((T + 1) * max_n * H * sizeof(float));
    s->dg = malloc(T * max_n * 4 * H * sizeof(float));
    s->dh = malloc(max_n * H * sizeof(float));
    s->dc = malloc(max_n * H * sizeof(float));
    s->zero = calloc(H, sizeof(float));
    if (!s->xt || !s->gate || !s->cell || !s->tc || !s->hs || !s->dg || !s->dh || !s->dc ||
        !s->zero) {
        lstm_free_scratch(s);
        return FL_ENOMEM;
    }
    s->cap_n = max_n;
    return 0;
}

static void lstm_init(fl_layer_t *l, fl_rng_t *rng)
{
    const lstm_t *s = l->priv;
    const float bound = 1.0f / sqrtf((float)s->H);
    const size_t G = 4 * (size_t)s->H;
    fl_init_uniform(l->p[0], G * (size_t)s->D, bound, rng);
    fl_init_uniform(l->p[1], G * (size_t)s->H, bound, rng);
    fl_init_uniform(l->p[2], G, bound, rng);
}

/* Every product of the cell runs on oneDNN's sgemm where it is built in
 * (fl__gemm_via): the input and recurrent products, the weight gradients
 * and dx all ran faster there than on OpenBLAS held to AVX2, the per-step
 * recurrent products (n rows against 4H x H weights) most (bench_gemm's
 * lstm rows; bench_charlstm and bench_train's charlstm row with
 * FEDOPT_BENCH_GEMM=own|dnnl measure the step). */
static void lstm_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    (void)mode;
    lstm_t *s = l->priv;
    const size_t T = (size_t)s->T, D = (size_t)s->D, H = (size_t)s->H, G = 4 * H;
    /* x [n, T, D] -> xt [T, n, D]. */
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < T; t++)
            memcpy(s->xt + (t * n + i) * D, x + (i * T + t) * D, D * sizeof(float));
    /* Input contributions of every step at once, bias included. */
    for (size_t r = 0; r < T * n; r++)
        memcpy(s->gate + r * G, l->p[2], G * sizeof(float));
    fl__gemm_via(FL_GEMM_DNNL, 0, 1, (int)(T * n), (int)G, (int)D, 1.0f, s->xt, (int)D, l->p[0],
                 (int)D, 1.0f, s->gate, (int)G);
    memset(s->hs, 0, n * H * sizeof(float));
    for (size_t t = 0; t < T; t++) {
        float *gt = s->gate + t * n * G;
        const float *hprev = s->hs + t * n * H;
        if (t > 0)
            fl__gemm_via(FL_GEMM_DNNL, 0, 1, (int)n, (int)G, (int)H, 1.0f, hprev, (int)H, l->p[1],
                         (int)H, 1.0f, gt, (int)G);
        for (size_t i = 0; i < n; i++) {
            float *restrict g = gt + i * G;
            const float *restrict cprev = t ? s->cell + ((t - 1) * n + i) * H : s->zero;
            float *restrict c = s->cell + (t * n + i) * H;
            float *restrict tc = s->tc + (t * n + i) * H;
            float *restrict h = s->hs + ((t + 1) * n + i) * H;
            /* Activations in place, one simple loop per kind so each vectorizes. */
            sigm_inplace(g, 2 * H);
            tanh_inplace(g + 2 * H, H);
            sigm_inplace(g + 3 * H, H);
            step_forward(g, g + H, g + 2 * H, g + 3 * H, cprev, c, tc, h, H);
        }
    }
    /* hs[1..T] [T, n, H] -> y [n, T, H]. */
    for (size_t i = 0; i < n; i++)
        for (size_t t = 0; t < T; t++)
            memcpy(y + (i * T + t) * H, s->hs + ((t + 1) * n + i) * H, H * sizeof(float));
}

static void lstm_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    (void)x;
    (void)y;
    lstm_t *s = l->priv;
    const size_t T = (size_t)s->T, D = (size_t)s->D, H = (size_t)s->H, G = 4 * H;
    memset(s->dh, 0, n * H * sizeof(float));
    memset(s->dc, 0, n * H * sizeof(float));
    for (size_t t = T; t-- > 0;) {
        for (size_t i = 0; i < n; i++) {
            const float *restrict g = s->gate + (t * n + i) * G;
            const float *restrict cprev = t ? s->cell + ((t - 1) * n + i) * H : s->zero;
            const float *restrict tc = s->tc + (t * n + i) * H;
            const float *restrict dyt = dy + (i * T + t) * H;
            float *restrict dhi = s->dh + i * H, *restrict dci = s->dc + i * H;
            float *restrict d = s->dg + (t * n + i) * G;
            step_backward(g, g + H, g + 2 * H, g + 3 * H, cprev, tc, dyt, dhi, dci, d, d + H,
                          d + 2 * H, d + 3 * H, H);
        }
        /* dL/dh_{t-1} = dG_t W_hh (nothing flows before the first step). */
        if (t > 0)
            fl__gemm_via(FL_GEMM_DNNL, 0, 0, (int)n, (int)H, (int)G, 1.0f, s->dg + t * n * G,
                         (int)G, l->p[1], (int)H, 0.0f, s->dh, (int)H);
    }
    const int rows = (int)(T * n);
    /* dW_ih += dG^T xt; dW_hh += dG^T h_{t-1} (hs[0] is zero, so step 0 adds nothing). */
    fl__gemm_via(FL_GEMM_DNNL, 1, 0, (int)G, (int)D, rows, 1.0f, s->dg, (int)G, s->xt, (int)D, 1.0f,
                 l->g[0], (int)D);
    fl__gemm_via(FL_GEMM_DNNL, 1, 0, (int)G, (int)H, rows, 1.0f, s->dg, (int)G, s->hs, (int)H, 1.0f,
                 l->g[1], (int)H);
    float *gb = l->g[2];
    for (size_t r = 0; r < T * n; r++) {
        const float *d = s->dg + r * G;
        for (size_t j = 0; j < G; j++)
            gb[j] += d[j];
    }
    if (dx) {
        /* dxt = dG W_ih, computed into xt (no longer needed) and transposed back. */
        fl__gemm_via(FL_GEMM_DNNL, 0, 0, rows, (int)D, (int)G, 1.0f, s->dg, (int)G, l->p[0], (int)D,
                     0.0f, s->xt, (int)D);
        for (size_t i = 0; i < n; i++)
            for (size_t t = 0; t < T; t++)
                memcpy(dx + (i * T + t) * D, s->xt + (t * n + i) * D, D * sizeof(float));
    }
}

static void lstm_destroy(fl_layer_t *l)
{
    lstm_t *s = l->priv;
    if (s)
        lstm_free_scratch(s);
    free(s);
}

static const fl_layer_ops_t lstm_ops = {
    .kind = "lstm",
    .reserve = lstm_reserve,
    .init = lstm_init,
    .forward = lstm_forward,
    .backward = lstm_backward,
    .destroy = lstm_destroy,
};

int fl_lstm_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in, int64_t hidden,
                   int layer_index, fl_layer_t **out)
{
    *out = NULL;
    if (!layout || !in || in->ndim != 2 || hidden < 1 || hidden > (1 << 20) || layer_index < 0 ||
        layer_index > 99 || in->d[0] < 1 || in->d[0] > (1 << 20) || in->d[1] < 1 ||
        in->d[1] > (1 << 24))
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    lstm_t *s = calloc(1, sizeof *s);
    int rc = FL_ENOMEM;
    if (!l || !s)
        goto fail;
    fl_shape_t os = {.ndim = 2, .d = {in->d[0], hidden}};
    if ((rc = fl_layer_setup(l, &lstm_ops, prefix, in, &os)))
        goto fail;
    s->T = (int)in->d[0];
    s->D = (int)in->d[1];
    s->H = (int)hidden;
    l->priv = s;
    s = NULL;
    char name[32];
    int64_t wih[2] = {4 * hidden, in->d[1]}, whh[2] = {4 * hidden, hidden}, b = 4 * hidden;
    snprintf(name, sizeof name, "weight_ih_l%d", layer_index);
    if ((rc = fl_layer_add_param(l, layout, name, 2, wih, FL_PARAM_DECAY)))
        goto fail;
    snprintf(name, sizeof name, "weight_hh_l%d", layer_index);
    if ((rc = fl_layer_add_param(l, layout, name, 2, whh, FL_PARAM_DECAY)))
        goto fail;
    snprintf(name, sizeof name, "bias_ih_l%d", layer_index);
    if ((rc = fl_layer_add_param(l, layout, name, 1, &b, 0)))
        goto fail;
    *out = l;
    return 0;
fail:
    fl_layer_free(l);
    free(s);
    return rc;
}
