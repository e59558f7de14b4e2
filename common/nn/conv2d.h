/* conv2d: 2-D convolution (PyTorch's nn.Conv2d, groups = 1, dilation = 1).
 *
 * conv2d: input [Cin, H, W] -> output [Cout, Ho, Wo] with
 * Ho = (H + 2*pad - k) / stride + 1 (likewise Wo). Weight "<prefix>.weight"
 * [Cout, Cin, k, k] and optional "<prefix>.bias" [Cout], PyTorch's layout, so
 * the weight is a row-major [Cout, Cin*k*k] matrix. Each example is lowered
 * with im2col to a [Cin*k*k, Ho*Wo] matrix and multiplied by the weight in
 * one GEMM (backward: two GEMMs and col2im). 3x3 stride-1 layers with at
 * least 16 channels on each side run the forward pass and both gradients
 * with Winograd's F(2x2,3x3) instead (common/nn/winograd.h), 2.25 times
 * fewer multiply-adds. Built with oneDNN (make DNNL=1, the default on
 * x86-64), layers run their three products on oneDNN's convolutions instead
 * (common/nn/dnnl.h), the same results up to float rounding.
 * Init U(+-1/sqrt(Cin*k*k)). */
#ifndef FL_CONV2D_H
#define FL_CONV2D_H

#include "common/nn/layer.h"

/* Creates a conv2d layer with square kernel k for input *in ([Cin, H, W]),
 * appending its weight (FL_PARAM_DECAY) and, when `bias`, bias to *layout.
 * The caller owns *out. Returns 0, FL_EINVAL (bad shape/arguments, or an
 * output that would be empty), FL_ENOMEM. */
int fl_conv2d_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                     int64_t out_channels, int k, int stride, int pad, int bias, fl_layer_t **out);

/* Internal, for tests: caps the floats of a lowered chunk (0 = the default),
 * so small shapes can exercise batches lowered in several chunks. Affects
 * layers reserved afterwards. */
void fl__conv2d_set_col_cap(size_t floats);

/* Internal, for tests and benches: 0 lets each 3x3 stride-1 layer choose
 * Winograd F(2x2,3x3) or im2col (the default), 1 forces im2col, 2 forces
 * Winograd wherever the shape allows it. Affects layers created afterwards. */
void fl__conv2d_set_winograd(int mode);

/* Internal, for tests and benches: 0 lets each layer choose oneDNN
 * (common/nn/dnnl.h) or its own path (the default), 1 keeps every layer on
 * its own path, 2 puts every layer on oneDNN where it is built in. Affects
 * layers created afterwards. */
void fl__conv2d_set_dnnl(int mode);

/* Internal, for tests: whether conv2d layer l runs on oneDNN. */
int fl__conv2d_uses_dnnl(const fl_layer_t *l);

/* Internal, for benches: oneDNN's implementation name for layer l, or "none". */
const char *fl__conv2d_dnnl_impl(const fl_layer_t *l);

/* Internal, for tests: whether conv2d layer l runs Winograd. */
int fl__conv2d_uses_winograd(const fl_layer_t *l);

/* Internal, for tests: the output-channel slices the layer's oneDNN
 * convolution ran in (0: never sliced; -1: slicing failed and the layer
 * runs whole). */
int fl__conv2d_slices(const fl_layer_t *l);

#endif
