/* quant: updates as fixed-point integers modulo 2^32 for secure aggregation.
 *
 * A client's delta d (P floats) with weight w becomes P + 1 words: word j is
 * round(scale * wq * clamp(d_j, -clip, clip)) in two's complement, and the
 * last word is wq = round(min(w, max_weight)), the integer weight. Summed
 * modulo 2^32 over the round's clients and read back as signed 32-bit
 * integers, the words give sum_i wq_i d_ij * scale and sum_i wq_i, so the
 * weighted mean is the first divided by scale times the second.
 *
 * Overflow bound: every word of one client is at most scale * max_weight *
 * clip + 1/2 in magnitude, so the sum of n clients stays inside the int32
 * range when n * (scale * max_weight * clip + 1/2) <= 2^31 - 1; and the
 * weights' sum when n * max_weight <= 2^31 - 1. fl_saquant_init chooses
 * the largest scale that meets the first bound for the round's n, so the
 * wrap-around modulo 2^32 never changes the result. The rounding error of
 * the mean is at most 1 / (2 * scale * mean weight) per coordinate, on top
 * of the clipping. A client that ignores the bound (a lying client) can
 * only spoil the sum, which secure aggregation cannot check.
 * Pure functions; thread-safe. */
#ifndef FL_SAQUANT_H
#define FL_SAQUANT_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double clip;        /* coordinates are clamped to [-clip, clip] */
    double scale;       /* fixed-point scale */
    uint32_t max_weight;/* weights are capped here (and rounded) */
    uint32_t n;         /* the most clients whose words are summed */
} fl_saquant_t;

/* Chooses the scale for n clients (n >= 1), clip > 0 and max_weight >= 1.
 * FL_EINVAL for arguments out of range, FL_ERANGE when the bound leaves no
 * scale of at least 1. */
int fl_saquant_init(fl_saquant_t *q, uint32_t n, double clip, uint32_t max_weight);

/* The integer weight a client's weight w (finite, >= 0) becomes. */
uint32_t fl_saquant_weight(const fl_saquant_t *q, double w);

/* Encodes delta[0..p) with weight w into out[0..p+1). FL_ENONFINITE for a
 * non-finite delta value or weight (nothing is written then). */
int fl_saquant_encode(const fl_saquant_t *q, const float *delta, size_t p, double w, uint32_t *out);

/* Decodes a sum of encodings sum[0..p+1) into the weighted mean mean[0..p)
 * and the total weight *weight (may be NULL). FL_EEMPTY when the total
 * weight is zero or negative (an impossible sum: nothing written). */
int fl_saquant_decode(const fl_saquant_t *q, const uint32_t *sum, size_t p, float *mean,
                      double *weight);

#endif
