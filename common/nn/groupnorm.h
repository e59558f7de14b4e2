/* groupnorm: group normalization, PyTorch's nn.GroupNorm(G, C, eps, affine=True).
 *
 * Input and output [C, H, W] (or [C] / any shape whose first dim is the
 * channels). Per example, the channels are split into G groups of C/G
 * consecutive channels; each group is normalized by its own mean and
 * (biased) variance over all its elements, then scaled and shifted per
 * channel: y = (x - mean) / sqrt(var + eps) * weight[c] + bias[c].
 * Parameters "<prefix>.weight" [C] (init 1) and "<prefix>.bias" [C] (init 0),
 * not weight-decayed. The paper's ResNet uses G = 2, eps = 1e-3. Statistics
 * are per example, so training and evaluation compute the same thing. */
#ifndef FL_GROUPNORM_H
#define FL_GROUPNORM_H

#include "common/nn/layer.h"

/* Creates a group norm with `groups` groups (which must divide the channel
 * count in->d[0]) and the given eps for input shape *in. The caller owns
 * *out. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_groupnorm_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in, int groups,
                        float eps, fl_layer_t **out);

#endif
