/* layer: the training engine's layer interface.
 *
 * A layer is a forward/backward pair over explicit shapes. Activations are
 * batch-first and contiguous: a batch of n examples is n rows of
 * `in_dim` floats (in_dim = product of the per-example shape `in`, NCHW for
 * images, so one example of a conv layer is C*H*W floats in C,H,W order).
 *
 * Life cycle, driven by the model (common/nn/models.c):
 *   1. a constructor (fl_dense_create, fl_conv2d_create, ...) takes the
 *      per-example input shape, computes the output shape and appends the
 *      layer's tensors to the model's parameter layout (fl_params_add, with
 *      the PyTorch state_dict names "<prefix>.weight", "<prefix>.bias");
 *   2. after fl_params_alloc the model calls fl_layer_bind, which points
 *      `p[i]` / `g[i]` at the layer's tensors in the parameter and gradient
 *      buffers (the layer stores view indices, so rebinding is cheap);
 *   3. ops->reserve(max_batch) allocates any per-batch scratch;
 *   4. ops->init draws initial weights from an RNG (PyTorch's defaults);
 *   5. ops->forward / ops->backward per batch; ops->destroy frees.
 *
 * Ownership: the model owns the layers, their activations (x, y, dx, dy
 * buffers) and the parameter/gradient buffers. A layer owns only its private
 * state and scratch. backward ADDS parameter gradients into g[] (the model
 * zeroes the gradient buffer once per step), and writes dx unless dx is
 * NULL (the first layer of a model needs no input gradient). backward is
 * called with the same x and y that the last forward saw, so a layer may
 * keep per-batch caches (masks, argmax indices) between the two. */
#ifndef FL_LAYER_H
#define FL_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "common/base/params.h"
#include "common/base/rng.h"

#define FL_SHAPE_MAX_DIMS 4
#define FL_LAYER_MAX_PARAMS 16

/* A per-example shape (no batch dimension): {C, H, W}, {D}, {T, D}, ... */
typedef struct {
    int ndim;
    int64_t d[FL_SHAPE_MAX_DIMS];
} fl_shape_t;

/* Number of floats in one example of shape s (0 for a bad shape). */
size_t fl_shape_numel(const fl_shape_t *s);

/* Makes a shape from up to 4 dims: fl_shape_make(3, (int64_t[]){1, 28, 28}). */
fl_shape_t fl_shape_make(int ndim, const int64_t *d);

/* Writes "[1, 28, 28]" into buf. Returns buf. */
char *fl_shape_str(const fl_shape_t *s, char *buf, size_t len);

typedef enum {
    FL_MODE_EVAL = 0,  /* dropout off; nothing cached for backward is required */
    FL_MODE_TRAIN = 1, /* dropout on; caches for backward filled */
} fl_mode_t;

typedef struct fl_layer fl_layer_t;

typedef struct {
    const char *kind; /* "dense", "conv2d", ... (for logs and `models`) */
    /* Allocates scratch for batches of up to max_n examples (may be NULL). */
    int (*reserve)(fl_layer_t *l, size_t max_n);
    /* Draws initial parameters (may be NULL for parameterless layers). */
    void (*init)(fl_layer_t *l, fl_rng_t *rng);
    /* y[n, out_dim] = f(x[n, in_dim]). Never fails for valid n <= max_n. */
    void (*forward)(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode);
    /* Given dy[n, out_dim]: g[] += dL/dparams, dx[n, in_dim] = dL/dx (dx may be NULL). */
    void (*backward)(fl_layer_t *l, const float *x, const float *y, const float *dy, float *dx,
                     size_t n);
    /* Frees the layer's private state (not the layer struct itself). May be NULL. */
    void (*destroy)(fl_layer_t *l);
    /* Called at the end of fl_layer_bind with the same buffers: a composite
     * layer (a residual block) binds the sub-layers it owns. May be NULL. */
    void (*bind)(fl_layer_t *l, const fl_params_t *params, const fl_params_t *grads);
} fl_layer_ops_t;

struct fl_layer {
    const fl_layer_ops_t *ops;
    char prefix[FL_PARAM_NAME_MAX / 2]; /* PyTorch module name ("fc1"), "" when parameterless */
    fl_shape_t in, out;                 /* per-example shapes */
    size_t in_dim, out_dim;             /* their element counts */
    size_t max_n;                       /* batch size reserved */
    int nparams;                        /* tensors this layer owns in the model's layout
                                           (a composite lists its sub-layers' tensors) */
    size_t view[FL_LAYER_MAX_PARAMS];   /* their indices in fl_params_t.views */
    float *p[FL_LAYER_MAX_PARAMS];      /* bound: parameter data */
    float *g[FL_LAYER_MAX_PARAMS];      /* bound: gradient accumulators (same layout) */
    fl_rng_t *rng;                      /* stream for stochastic layers (dropout); model-owned */
    void *priv;                         /* layer-specific state */
};

/* Fills the common fields of a new layer: ops, prefix (may be NULL), shapes.
 * Returns FL_EINVAL for a bad shape or a too-long prefix. */
int fl_layer_setup(fl_layer_t *l, const fl_layer_ops_t *ops, const char *prefix,
                   const fl_shape_t *in, const fl_shape_t *out);

/* Appends tensor "<prefix>.<suffix>" of the given shape to the layout and
 * records it as the layer's next parameter. Returns fl_params_add's codes
 * or FL_ERANGE when the layer already has FL_LAYER_MAX_PARAMS tensors. */
int fl_layer_add_param(fl_layer_t *l, fl_params_t *layout, const char *suffix, int ndim,
                       const int64_t *shape, unsigned flags);

/* Points l->p[] into params->data and l->g[] into grads->data (grads NULL:
 * inference only, g[] become NULL). Both must have the layout the layer was
 * built into. */
void fl_layer_bind(fl_layer_t *l, const fl_params_t *params, const fl_params_t *grads);

/* Calls ops->destroy (when set) and frees l. Accepts NULL. */
void fl_layer_free(fl_layer_t *l);

/* Fills n floats with U(-bound, bound) from rng (PyTorch's default init for
 * Linear/Conv weights and biases uses bound = 1/sqrt(fan_in)). */
void fl_init_uniform(float *x, size_t n, float bound, fl_rng_t *rng);

#endif
