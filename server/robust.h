/* robust: aggregation rules that need all of a round's deltas at once.
 *
 * Each takes k deltas of n floats (d[i] points at client i's delta) and
 * writes one aggregate of n floats into out; every client counts the same
 * (example weights are ignored: a rule that bounds one client's influence
 * cannot let the client's own claim scale it).
 *   median        coordinate-wise median (mean of the two middle values
 *                 for an even k);
 *   trimmed mean  per coordinate, drop the floor(beta*k) largest and the as
 *                 many smallest values and average the rest (Yin et al.
 *                 2018), 0 <= beta < 0.5;
 *   Multi-Krum    score each delta by the sum of squared distances to its
 *                 k - f - 2 nearest others, average the m best-scored
 *                 (Blanchard et al. 2017; m = 1 is Krum). Ties go to the
 *                 lower index.
 * Pure functions: they allocate only small scratch (k values, or k*k
 * distances), never touch the inputs. */
#ifndef FL_SERVER_ROBUST_H
#define FL_SERVER_ROBUST_H

#include <stddef.h>
#include <stdint.h>

/* Returns 0, FL_EINVAL (k == 0, NULL pointers) or FL_ENOMEM. */
int fl_robust_median(const float *const *d, size_t k, size_t n, float *out);

/* Returns 0, FL_EINVAL (beta outside [0, 0.5), or nothing left after
 * trimming) or FL_ENOMEM. */
int fl_robust_trimmed_mean(const float *const *d, size_t k, size_t n, double beta, float *out);

/* Multi-Krum with f assumed attackers, averaging the m best. Needs
 * k >= f + 3 (at least one neighbour to score against) and 1 <= m <= k;
 * otherwise FL_EINVAL. chosen (may be NULL, k entries) receives 1 for the
 * deltas that were averaged, 0 for the others. Returns 0, FL_EINVAL or
 * FL_ENOMEM. */
int fl_robust_krum(const float *const *d, size_t k, size_t n, size_t f, size_t m, float *out, uint8_t *chosen);

#endif
