#include "common/nn/act.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

float fl_sigmoidf(float x)
{
    /* Split by sign so exp never overflows. */
    if (x >= 0) {
        float e = expf(-x);
        return 1.0f / (1.0f + e);
    }
    float e = expf(x);
    return e / (1.0f + e);
}

static void relu_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    size_t m = n * l->in_dim;
    for (size_t i = 0; i < m; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

static void relu_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    if (!dx)
        return;
    size_t m = n * l->in_dim;
    /* dy is read unconditionally so the loop becomes a vector select; a
     * load inside the ternary would have to stay a branch per element. */
    for (size_t i = 0; i < m; i++) {
        float d = dy[i];
        dx[i] = x[i] > 0.0f ? d : 0.0f;
    }
}

static void sigmoid_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    size_t m = n * l->in_dim;
    for (size_t i = 0; i < m; i++)
        y[i] = fl_sigmoidf(x[i]);
}

static void sigmoid_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                             float *dx, size_t n)
{
    if (!dx)
        return;
    size_t m = n * l->in_dim;
    for (size_t i = 0; i < m; i++)
        dx[i] = dy[i] * y[i] * (1.0f - y[i]);
}

static void tanh_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    size_t m = n * l->in_dim;
    for (size_t i = 0; i < m; i++)
        y[i] = tanhf(x[i]);
}

static void tanh_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    if (!dx)
        return;
    size_t m = n * l->in_dim;
    for (size_t i = 0; i < m; i++)
        dx[i] = dy[i] * (1.0f - y[i] * y[i]);
}

static void copy_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    memcpy(y, x, n * l->in_dim * sizeof(float));
}

static void copy_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    if (dx)
        memcpy(dx, dy, n * l->in_dim * sizeof(float));
}

static const fl_layer_ops_t relu_ops = {.kind = "relu", .forward = relu_forward,
                                        .backward = relu_backward};
static const fl_layer_ops_t sigmoid_ops = {.kind = "sigmoid", .forward = sigmoid_forward,
                                           .backward = sigmoid_backward};
static const fl_layer_ops_t tanh_ops = {.kind = "tanh", .forward = tanh_forward,
                                        .backward = tanh_backward};
static const fl_layer_ops_t flatten_ops = {.kind = "flatten", .forward = copy_forward,
                                           .backward = copy_backward};

static int make(const fl_layer_ops_t *ops, const fl_shape_t *in, const fl_shape_t *os,
                fl_layer_t **out)
{
    *out = NULL;
    fl_layer_t *l = calloc(1, sizeof *l);
    if (!l)
        return FL_ENOMEM;
    int rc = fl_layer_setup(l, ops, NULL, in, os);
    if (rc) {
        free(l);
        return rc;
    }
    *out = l;
    return 0;
}

int fl_act_create(fl_act_kind_t kind, const fl_shape_t *in, fl_layer_t **out)
{
    const fl_layer_ops_t *ops = kind == FL_ACT_RELU      ? &relu_ops
                                : kind == FL_ACT_SIGMOID ? &sigmoid_ops
                                : kind == FL_ACT_TANH    ? &tanh_ops
                                                         : NULL;
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!ops || !in)
        return FL_EINVAL;
    return make(ops, in, in, out);
}

int fl_act_flatten_create(const fl_shape_t *in, fl_layer_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    size_t n = fl_shape_numel(in);
    if (!n)
        return FL_EINVAL;
    fl_shape_t os = {.ndim = 1, .d = {(int64_t)n}};
    return make(&flatten_ops, in, &os, out);
}
