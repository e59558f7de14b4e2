/* pool: pooling layers, without parameters.
 *
 * fl_pool_max: max pooling as nn.MaxPool2d (no padding, floor mode), the
 * cnn's pool: [C, H, W] -> [C, (H-k)/stride+1, (W-k)/stride+1]; the gradient
 * goes to the first maximum of each window (as PyTorch does).
 *
 * fl_pool_max_same: max pooling with a k x k window and a stride, padded
 * the way TensorFlow's padding="SAME" pads (the paper's model is Keras):
 * output ceil(H / stride) x ceil(W / stride), total padding
 * max((out - 1) * stride + k - H, 0) split with the smaller half before, and
 * padded positions never win (as if -inf). The gradient goes to the first
 * maximum of each window. [C, H, W] -> [C, Ho, Wo].
 *
 * fl_pool_global_avg: the mean over each channel's H x W, [C, H, W] -> [C]. */
#ifndef FL_POOL_H
#define FL_POOL_H

#include "common/nn/layer.h"

/* Creates a max-pooling layer with window k and the given stride for input
 * [C, H, W]. The caller owns *out. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_pool_max_create(const fl_shape_t *in, int k, int stride, fl_layer_t **out);

/* Creates a "same"-padded max pool for input [C, H, W]. The caller owns
 * *out. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_pool_max_same_create(const fl_shape_t *in, int k, int stride, fl_layer_t **out);

/* Creates a global average pool for input [C, H, W]. The caller owns *out.
 * Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_pool_global_avg_create(const fl_shape_t *in, fl_layer_t **out);

#endif
