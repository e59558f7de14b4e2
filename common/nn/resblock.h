/* resblock: the pre-activation ("v2") basic residual block of the paper's
 * ResNet-18, a composite layer that owns its sub-layers.
 *
 *   a = relu(gn1(x))          (skipped, a = x, for the first block of the first
 *                              stage: the stem has just normalized and activated)
 *   r = conv2(relu(gn2(conv1(a))))          3x3 convolutions, stride 1, padding 1, no bias
 *   s = x                                   when cin == cout
 *     = shortcut.gn(shortcut.conv(x))       a 1x1 convolution + group norm otherwise
 *   y = r + s
 *
 * Input [cin, H, W], output [cout, H, W]. Tensors, in this order, named
 * "<prefix>.gn1.weight/bias" [cin], "<prefix>.conv1.weight" [cout, cin, 3, 3],
 * "<prefix>.gn2.weight/bias" [cout], "<prefix>.conv2.weight" [cout, cout, 3, 3],
 * "<prefix>.shortcut.conv.weight" [cout, cin, 1, 1],
 * "<prefix>.shortcut.gn.weight/bias" [cout]. Group norms have `groups`
 * groups and eps `eps`; convolution weights are weight-decayed. The block
 * lists all of them as its own parameters (so gradient checks and the
 * model see them) and binds its sub-layers in ops->bind. */
#ifndef FL_RESBLOCK_H
#define FL_RESBLOCK_H

#include "common/nn/layer.h"

/* Creates a block for input *in ([cin, H, W]) with cout output channels;
 * `preact` 0 skips gn1 + relu. The caller owns *out. Returns 0, FL_EINVAL or
 * FL_ENOMEM. */
int fl_resblock_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                       int64_t cout, int preact, int groups, float eps, fl_layer_t **out);

#endif
