/* loss: the training losses and their gradients, with the metrics that come
 * for free while computing them.
 *
 * Each function returns the batch's mean loss (as PyTorch's default
 * reduction='mean' defines it) and, when `grad` is not NULL, writes
 * dL/d(input) of that mean. Sums are accumulated in double. */
#ifndef FL_LOSS_H
#define FL_LOSS_H

#include <stddef.h>
#include <stdint.h>

/* Metric counts of one batch, summed across batches by the trainer. */
typedef struct {
    double hits;  /* correct predictions (accuracy) or true tags in the top 5 (recall@5) */
    double total; /* counted predictions (accuracy) or true tags (recall@5) */
} fl_loss_stats_t;

/* Softmax cross-entropy over `rows` rows of `classes` logits with one integer
 * label per row (PyTorch's CrossEntropyLoss). Rows whose label is negative
 * are ignored (padding) and the mean is over the counted rows; a label >=
 * classes is treated like a negative one. st (may be NULL) gets argmax hits
 * over counted rows. Returns 0 when no row counts. */
double fl_loss_softmax_ce(const float *logits, size_t rows, size_t classes, const int32_t *labels,
                          float *grad, fl_loss_stats_t *st);

/* fl_loss_softmax_ce where rows labelled `pad` are also ignored: the
 * per-step loss of next-token models, whose padding token is a class (id 0)
 * that must count neither in the loss nor in the accuracy. */
double fl_loss_softmax_ce_pad(const float *logits, size_t rows, size_t classes,
                              const int32_t *labels, int32_t pad, float *grad, fl_loss_stats_t *st);

/* Sigmoid binary cross-entropy of n x c logits against a 0/1 multi-hot
 * target (nonzero = 1), mean over all n*c elements (BCEWithLogitsLoss).
 * st (may be NULL) gets recall@5: per example, how many of its true tags are
 * among its 5 highest logits (hits), over the number of true tags (total). */
double fl_loss_sigmoid_bce(const float *logits, size_t n, size_t c, const int32_t *targets,
                           float *grad, fl_loss_stats_t *st);

/* Mean squared error between out and target (n*d floats each), mean over
 * all elements (MSELoss). */
double fl_loss_mse(const float *out, const float *target, size_t n, size_t d, float *grad);

#endif
