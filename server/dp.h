/* dp: the Gaussian noise of DP-FedAvg (McMahan et al. 2018, "Learning
 * Differentially Private Recurrent Language Models").
 *
 * Noise comes from mbedTLS's CTR_DRBG (AES-256 in counter mode) seeded from
 * the OS entropy source, never from fedopt's reproducible xoshiro streams:
 * noise anyone can regenerate from the run's seed protects nothing. Normal
 * variates are drawn by the Box-Muller transform from 53-bit uniforms. (A
 * floating-point sampler is not an exact Gaussian in its far tails; see
 * docs/robustness.md for what that means.)
 *
 * Not thread-safe: one fl_dp_noise_t per thread. */
#ifndef FL_SERVER_DP_H
#define FL_SERVER_DP_H

#include <stddef.h>

typedef struct fl_dp_noise fl_dp_noise_t;

/* Seeds a generator from the OS entropy source. Returns 0, FL_ENOMEM or
 * FL_EIO (the entropy source failed; logged). */
int fl_dp_noise_create(fl_dp_noise_t **out);

/* Frees it (wiping its state). Accepts NULL. */
void fl_dp_noise_free(fl_dp_noise_t *g);

/* Adds N(0, stddev^2) independently to each of the n doubles of x.
 * stddev 0 leaves x as it is. Returns 0, FL_EINVAL (stddev < 0 or not
 * finite) or FL_EIO (the generator failed). */
int fl_dp_noise_add(fl_dp_noise_t *g, double *x, size_t n, double stddev);

/* The DP-FedAvg estimate from a round's sum of clipped deltas:
 * out[i] = (sum[i] + N(0, (sigma*clip)^2)) / denominator, with the noise
 * added to sum in place. Returns 0, FL_EINVAL (denominator <= 0, sigma or
 * clip negative) or FL_EIO. */
int fl_dp_estimate(fl_dp_noise_t *g, double *sum, size_t n, double sigma, double clip, double denominator,
                   float *out);

/* Adaptive clipping under DP (Andrew et al. 2021, "Differentially Private
 * Learning with Adaptive Clipping", Theorem 1): a round releases two noised
 * sums, the clipped updates (sensitivity C, noise sigma_update * C) and the
 * count of updates within C with each record centred to +-1/2 (sensitivity
 * 1/2, noise stddev count_stddev). Scaled to unit noise they are one Gaussian
 * query of sensitivity sqrt(sigma_update^-2 + (2 count_stddev)^-2), so the
 * pair is the Gaussian mechanism of noise multiplier z with
 *   z^-2 = sigma_update^-2 + (2 count_stddev)^-2,
 * and the accountant charges z. For a total z the update therefore gets
 *   sigma_update = (z^-2 - (2 count_stddev)^-2)^(-1/2)   (> z).
 * Returns 0, or FL_EINVAL unless z > 0, finite, and 2 * count_stddev > z
 * (otherwise no finite update noise keeps the total at z). */
int fl_dp_update_multiplier(double z, double count_stddev, double *sigma_update);

#endif
