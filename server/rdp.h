/* rdp: a Rényi-DP accountant for the sampled Gaussian mechanism.
 *
 * The RDP of one application of the Poisson-sampled Gaussian mechanism
 * (sampling rate q, noise multiplier sigma = noise stddev / L2 sensitivity)
 * at order alpha is log(A_alpha) / (alpha - 1), with A_alpha computed as in
 * Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy of the Sampled
 * Gaussian Mechanism" (Section 3.3): a finite binomial sum for integer alpha,
 * the two convergent series with erfc terms for fractional alpha, all in log
 * space. RDP composes by addition over rounds at each order. The conversion
 * to (epsilon, delta) is the one of Canonne, Kamath and Steinke 2020 ("The
 * Discrete Gaussian for Differential Privacy", Proposition 12 in arXiv v4):
 *   epsilon = min over alpha of rdp + log1p(-1/alpha) - log(delta*alpha)/(alpha-1),
 * tighter than Mironov 2017's rdp + log(1/delta)/(alpha-1).
 *
 * The server applies it to DP-FedAvg rounds with q = selected / connected
 * clients: the analysis is for Poisson sampling under add/remove-one
 * neighbours, which is how McMahan et al. 2018 account DP-FedAvg; the
 * server's fixed-size selection is accounted as if it were Poisson at that
 * rate, which is not a proven bound for it (docs/robustness.md, "What the
 * epsilon does and does not cover").
 *
 * Pure computation, no allocation but the accountant's order table. */
#ifndef FL_SERVER_RDP_H
#define FL_SERVER_RDP_H

#include <stddef.h>

/* RDP at order alpha (> 1, may be INFINITY) of one step of the sampled
 * Gaussian mechanism with rate q in [0, 1] and noise multiplier sigma >= 0.
 * q = 0 gives 0; sigma = 0 or alpha = inf (with q > 0) gives INFINITY.
 * Returns NAN for arguments out of range. */
double fl_rdp_sgm(double q, double sigma, double alpha);

/* The smallest epsilon over the n orders for cumulative RDP values rdp[]
 * at delta in (0, 1); *best_order (may be NULL) receives the order that gave
 * it. Orders <= 1.01 are skipped (the bound is unstable there). Returns 0,
 * or FL_EINVAL (bad delta, n == 0, a negative rdp). epsilon may be INFINITY. */
int fl_rdp_epsilon(const double *orders, const double *rdp, size_t n, double delta, double *epsilon,
                   double *best_order);

/* An accountant: cumulative RDP over a fixed table of orders
 * (1.1 .. 10.9 by 0.1, 11 .. 63, 128, 256, 512, 1024). */
typedef struct fl_rdp fl_rdp_t;

/* Creates an accountant with nothing spent. Returns 0 or FL_ENOMEM. */
int fl_rdp_create(fl_rdp_t **out);

/* Frees it. Accepts NULL. */
void fl_rdp_free(fl_rdp_t *a);

/* Composes `steps` applications at rate q and multiplier sigma. Returns 0 or
 * FL_EINVAL (q outside [0, 1], sigma < 0 or not finite). */
int fl_rdp_add(fl_rdp_t *a, double q, double sigma, double steps);

/* Steps composed so far (the sum of add's steps). */
double fl_rdp_steps(const fl_rdp_t *a);

/* Epsilon at delta of everything composed so far (0 when nothing was).
 * Returns 0 or FL_EINVAL. */
int fl_rdp_get_epsilon(const fl_rdp_t *a, double delta, double *epsilon, double *best_order);

/* Epsilon at delta as it would be after composing `steps` more at (q,
 * sigma), leaving the accountant as it is (to stop before a target).
 * Returns 0 or FL_EINVAL. */
int fl_rdp_peek_epsilon(const fl_rdp_t *a, double q, double sigma, double steps, double delta, double *epsilon);

#endif
