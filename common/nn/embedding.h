/* embedding: token embedding, PyTorch's nn.Embedding(V, E, padding_idx=0).
 *
 * Input [T] (token ids stored as floats, the dataset convention for
 * sequences), output [T, E]: row t is weight[id_t]. Parameter
 * "<prefix>.weight" [V, E]. Id 0 is the padding token: its row is
 * initialised to zero and never receives a gradient, so it stays zero
 * through training as in PyTorch. An id outside [0, V) (or a non-integer)
 * is treated as padding rather than read out of bounds. Init N(0, 1) for the
 * other rows (PyTorch's default). */
#ifndef FL_EMBEDDING_H
#define FL_EMBEDDING_H

#include "common/nn/layer.h"

/* Creates an embedding of `vocab` rows of `dim` floats for input shape *in
 * ([T]), appending "<prefix>.weight" to *layout. The caller owns *out.
 * Returns 0, FL_EINVAL (bad shape/sizes) or FL_ENOMEM. */
int fl_embedding_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                        int64_t vocab, int64_t dim, fl_layer_t **out);

#endif
