#include "common/nn/dense.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/nn/gemm.h"

typedef struct {
    int in_f, out_f;
    int has_bias;
} dense_t;

/* The backend of each product (fl__gemm_via). oneDNN's sgemm ran the dense
 * shapes of mlp and charlstm faster than OpenBLAS held to AVX2 (bench_gemm's
 * dense rows; bench_train's mlp and charlstm rows with
 * FEDOPT_BENCH_GEMM=own against the default measure the whole step), with
 * two exceptions, which stay on OpenBLAS:
 * - the forward product of a narrow output (the 10-class heads: N = 10),
 *   where oneDNN's 16-wide tiles are mostly empty and OpenBLAS was as fast
 *   or faster; the heads' gradient products still gained;
 * - every product of a layer with large weights (cnn's fc1, 4.5 MiB): in
 *   the step its weight gradient (K = the batch, reading and writing the
 *   whole gradient) was slower on oneDNN, and its other two products were
 *   no faster (bench_train's cnn row, each product switched on its own).
 *   mlp's largest layer (0.6 MiB) gained; the cut lies between the two. */
#define DENSE_DNNL_MIN_OUT 16
#define DENSE_DNNL_MAX_WEIGHT_BYTES (2u << 20)

static int dense_backend(const dense_t *d, int forward)
{
    if (fl__gemm_dnnl_mode() == 2)
        return FL_GEMM_DNNL;
    if ((size_t)d->in_f * (size_t)d->out_f * sizeof(float) > DENSE_DNNL_MAX_WEIGHT_BYTES ||
        (forward && d->out_f < DENSE_DNNL_MIN_OUT))
        return FL_GEMM_OWN;
    return FL_GEMM_DNNL;
}

/* Rows of the GEMM for a batch of n examples. */
static int dense_rows(const fl_layer_t *l, size_t n)
{
    const dense_t *d = l->priv;
    return (int)(n * (l->in_dim / (size_t)d->in_f));
}

static void dense_init(fl_layer_t *l, fl_rng_t *rng)
{
    const dense_t *d = l->priv;
    float bound = 1.0f / sqrtf((float)d->in_f);
    fl_init_uniform(l->p[0], (size_t)d->in_f * d->out_f, bound, rng);
    if (d->has_bias)
        fl_init_uniform(l->p[1], (size_t)d->out_f, bound, rng);
}

static void dense_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    const dense_t *d = l->priv;
    int rows = dense_rows(l, n);
    /* y[rows, out] = x[rows, in] * W^T, W stored [out, in]. */
    fl__gemm_via(dense_backend(d, 1), 0, 1, rows, d->out_f, d->in_f, 1.0f, x, d->in_f, l->p[0],
                 d->in_f, 0.0f, y, d->out_f);
    if (d->has_bias) {
        const float *b = l->p[1];
        for (int r = 0; r < rows; r++) {
            float *yr = y + (size_t)r * d->out_f;
            for (int j = 0; j < d->out_f; j++)
                yr[j] += b[j];
        }
    }
}

static void dense_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                           float *dx, size_t n)
{
    const dense_t *d = l->priv;
    int rows = dense_rows(l, n);
    /* dW[out, in] += dy^T[out, rows] * x[rows, in] */
    fl__gemm_via(dense_backend(d, 0), 1, 0, d->out_f, d->in_f, rows, 1.0f, dy, d->out_f, x, d->in_f, 1.0f,
                 l->g[0], d->in_f);
    if (d->has_bias) {
        float *gb = l->g[1];
        for (int r = 0; r < rows; r++) {
            const float *dyr = dy + (size_t)r * d->out_f;
            for (int j = 0; j < d->out_f; j++)
                gb[j] += dyr[j];
        }
    }
    /* dx[rows, in] = dy[rows, out] * W[out, in] */
    if (dx)
        fl__gemm_via(dense_backend(d, 0), 0, 0, rows, d->in_f, d->out_f, 1.0f, dy, d->out_f, l->p[0],
                     d->in_f, 0.0f, dx, d->in_f);
}

static void dense_destroy(fl_layer_t *l) { free(l->priv); }

static const fl_layer_ops_t dense_ops = {
    .kind = "dense",
    .reserve = NULL,
    .init = dense_init,
    .forward = dense_forward,
    .backward = dense_backward,
    .destroy = dense_destroy,
};

int fl_dense_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                    int64_t out_features, int bias, fl_layer_t **out)
{
    *out = NULL;
    if (!layout || !in || in->ndim < 1 || in->ndim > FL_SHAPE_MAX_DIMS || out_features <= 0 ||
        out_features > INT32_MAX || in->d[in->ndim - 1] <= 0 || in->d[in->ndim - 1] > INT32_MAX)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    dense_t *d = calloc(1, sizeof *d);
    int rc = FL_ENOMEM;
    if (!l || !d)
        goto fail;
    fl_shape_t os = *in;
    os.d[os.ndim - 1] = out_features;
    if ((rc = fl_layer_setup(l, &dense_ops, prefix, in, &os)))
        goto fail;
    l->priv = d;
    d->in_f = (int)in->d[in->ndim - 1];
    d->out_f = (int)out_features;
    d->has_bias = bias != 0;
    int64_t wshape[2] = {out_features, d->in_f};
    if ((rc = fl_layer_add_param(l, layout, "weight", 2, wshape, FL_PARAM_DECAY)))
        goto fail;
    if (bias && (rc = fl_layer_add_param(l, layout, "bias", 1, &out_features, 0)))
        goto fail;
    *out = l;
    return 0;
fail:
    if (l && l->priv)
        d = NULL; /* owned by l now */
    fl_layer_free(l);
    free(d);
    return rc;
}
