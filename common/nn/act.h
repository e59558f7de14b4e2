/* act: element-wise activations (ReLU, sigmoid, tanh) and flatten, layers
 * without parameters whose output shape equals their input's (flatten:
 * [C, H, W] -> [C*H*W], in C,H,W order, which NCHW storage already is). */
#ifndef FL_ACT_H
#define FL_ACT_H

#include "common/nn/layer.h"

typedef enum {
    FL_ACT_RELU = 0,
    FL_ACT_SIGMOID = 1,
    FL_ACT_TANH = 2,
} fl_act_kind_t;

/* Creates an activation layer of the given kind for input shape *in. The
 * caller owns *out. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_act_create(fl_act_kind_t kind, const fl_shape_t *in, fl_layer_t **out);

/* Creates a flatten layer: [d0, d1, ...] -> [d0*d1*...]. */
int fl_act_flatten_create(const fl_shape_t *in, fl_layer_t **out);

/* The numerically safe logistic function used by the sigmoid layer and the losses. */
float fl_sigmoidf(float x);

#endif
