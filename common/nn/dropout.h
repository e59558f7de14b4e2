/* dropout: inverted dropout (PyTorch's nn.Dropout). In training each element
 * is zeroed with probability p and the survivors scaled by 1/(1-p); in
 * evaluation the layer is the identity. Masks are drawn from the stream the
 * model points l->rng at (FL_RNG_DROPOUT), so a seed fixes them. */
#ifndef FL_DROPOUT_H
#define FL_DROPOUT_H

#include "common/nn/layer.h"

/* Creates a dropout layer with drop probability p in [0, 1) for input *in.
 * The caller owns *out. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_dropout_create(const fl_shape_t *in, float p, fl_layer_t **out);

#endif
