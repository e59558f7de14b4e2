/* dense: a fully connected layer over the last dimension, PyTorch's nn.Linear.
 *
 * Input shape [..., in_features], output [..., out_features]; every leading
 * position (a time step of a sequence, say) is one row of the GEMM, so a batch
 * of n examples is n * (in_dim / in_features) rows. Parameters, in PyTorch's
 * state_dict layout: "<prefix>.weight" [out, in] (row-major, so y = x W^T + b)
 * and "<prefix>.bias" [out]. Init: U(+-1/sqrt(in)) for both, PyTorch's default. */
#ifndef FL_DENSE_H
#define FL_DENSE_H

#include "common/nn/layer.h"

/* Creates a dense layer with input shape *in and out_features outputs,
 * appending its weight (with FL_PARAM_DECAY) and, when `bias`, its bias to
 * *layout. The caller owns *out (fl_layer_free). Returns 0, FL_EINVAL or
 * FL_ENOMEM (plus fl_params_add's codes). */
int fl_dense_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                    int64_t out_features, int bias, fl_layer_t **out);

#endif
