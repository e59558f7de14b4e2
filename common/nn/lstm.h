/* lstm: one layer of a long short-term memory network over a whole sequence,
 * PyTorch's nn.LSTM(batch_first=True) layer `k` with full backpropagation
 * through time.
 *
 * Input [T, D], output [T, H] (the hidden state at every step; the initial
 * h and c are zero for every example). Gates in PyTorch's order i, f, g, o:
 *   G = x_t W_ih^T + h_{t-1} W_hh^T + b,   i = s(G_i), f = s(G_f), g = tanh(G_g), o = s(G_o)
 *   c_t = f c_{t-1} + i g,                h_t = o tanh(c_t).
 * Parameters "<prefix>.weight_ih_l<k>" [4H, D], "<prefix>.weight_hh_l<k>"
 * [4H, H] and ONE bias per gate, "<prefix>.bias_ih_l<k>" [4H]: PyTorch keeps
 * two bias vectors (bias_ih + bias_hh) whose sum is all that matters, and
 * the paper's parameter counts have one. A PyTorch import sums the two; an
 * export writes this bias as bias_ih and zeros as bias_hh. Init
 * U(+-1/sqrt(H)), PyTorch's default.
 *
 * A multi-layer LSTM is a stack of these with k = 0, 1, ... under the same
 * prefix. Padding steps are computed like any other (a post-padded sequence's
 * pad steps come after its real ones, so they cannot change them); the loss
 * masks their targets. Internally the layer works time-major so that each
 * step's recurrent product is one GEMM over the batch and the weight
 * gradients are one GEMM over all steps. */
#ifndef FL_LSTM_H
#define FL_LSTM_H

#include "common/nn/layer.h"

/* Creates LSTM layer `layer_index` with `hidden` units for input shape *in
 * ([T, D]), appending its three tensors to *layout (weights with
 * FL_PARAM_DECAY). The caller owns *out. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_lstm_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in, int64_t hidden,
                   int layer_index, fl_layer_t **out);

#endif
