/* dp: the Gaussian noise of DP-FedAvg (McMahan et al. 2018, "Learning
 * Differentially Private Recurrent Language Models").
 *
 * Noise comes from mbedTLS's CTR_DRBG (AES-256 in counter mode) seeded from
 * the OS entropy source, never from fedopt's reproducible xoshiro streams:
 * noise anyone can regenerate from the run's seed protects nothing. Normal
 * variates are drawn by the Box-Muller transform from 53-bit uniforms. (A
 * floating-point sampler is not an exact Gaussian in its far tails; see
 * docs/privacy.md for what that means.)
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

#endif
