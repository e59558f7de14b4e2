#include "server/rdp.h"

#include <math.h>
#include <stdlib.h>

#include "common/base/error.h"

/* log(exp(a) + exp(b)) */
static double log_add(double a, double b)
{
    if (a == -INFINITY)
        return b;
    if (b == -INFINITY)
        return a;
    double hi = a > b ? a : b, lo = a > b ? b : a;
    return hi + log1p(exp(lo - hi));
}

/* log(erfc(x)), also where erfc underflows: the asymptotic expansion
 * erfc(x) ~ exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6)). */
static double log_erfc(double x)
{
    if (x < 25)
        return log(erfc(x));
    double r = 1 / (x * x);
    return -x * x - log(x) - 0.5 * log(M_PI) + log(1 - 0.5 * r + 0.75 * r * r - 1.875 * r * r * r);
}

/* log A_alpha for integer alpha: sum_i C(alpha,i) q^i (1-q)^(alpha-i) exp((i^2-i)/(2 sigma^2)). */
static double log_a_int(double q, double sigma, double alpha)
{
    double la = -INFINITY, lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma;
    for (double i = 0; i <= alpha; i++) {
        double lc = lgamma(alpha + 1) - lgamma(i + 1) - lgamma(alpha - i + 1);
        la = log_add(la, lc + i * lq + (alpha - i) * l1q + (i * i - i) / s2);
    }
    return la;
}

/* log A_alpha for fractional alpha: the two series of MTZ 2019 Section 3.3,
 * split at z0 = sigma^2 log(1/q - 1) + 1/2. The binomial coefficients of a
 * fractional alpha alternate in sign past i = alpha + 1; every term is added
 * with its magnitude, which bounds A_alpha from above (so epsilon is never
 * understated) and is what Google's dp_accounting computes, whose test
 * vectors this module is checked against. Summed until both terms decrease
 * and are below exp(-30) of the total; INFINITY (the order is then useless,
 * never optimistic) when that takes more than 1000 terms. */
static double log_a_frac(double q, double sigma, double alpha)
{
    double a0 = -INFINITY, a1 = -INFINITY, last0 = -INFINITY, last1 = -INFINITY;
    double z0 = sigma * sigma * log(1 / q - 1) + 0.5, lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma;
    double lcoef = 0; /* log |C(alpha, i)| */
    for (int k = 0; k < 1000; k++) {
        double i = k;
        if (k > 0)
            lcoef += log(fabs((alpha - (i - 1)) / i));
        double j = alpha - i;
        double t0 = lcoef + i * lq + j * l1q, t1 = lcoef + j * lq + i * l1q;
        double e0 = log(0.5) + log_erfc((i - z0) / (M_SQRT2 * sigma));
        double e1 = log(0.5) + log_erfc((z0 - j) / (M_SQRT2 * sigma));
        double s0 = t0 + (i * i - i) / s2 + e0, s1 = t1 + (j * j - j) / s2 + e1;
        a0 = log_add(a0, s0);
        a1 = log_add(a1, s1);
        double total = log_add(a0, a1);
        if (s0 < last0 && s1 < last1 && (s0 > s1 ? s0 : s1) < total - 30)
            return total;
        last0 = s0;
        last1 = s1;
    }
    return INFINITY;
}

double fl_rdp_sgm(double q, double sigma, double alpha)
{
    if (!(q >= 0 && q <= 1) || !(sigma >= 0) || !(alpha > 1))
        return NAN;
    if (q == 0)
        return 0;
    if (sigma == 0 || isinf(alpha))
        return INFINITY;
    if (q == 1)
        return alpha / (2 * sigma * sigma);
    double la = floor(alpha) == alpha ? log_a_int(q, sigma, alpha) : log_a_frac(q, sigma, alpha);
    return la / (alpha - 1);
}

int fl_rdp_epsilon(const double *orders, const double *rdp, size_t n, double delta, double *epsilon,
                   double *best_order)
{
    if (!orders || !rdp || !n || !epsilon || !(delta > 0 && delta < 1))
        return FL_EINVAL;
    double best = INFINITY, at = orders[0];
    for (size_t k = 0; k < n; k++) {
        double a = orders[k], r = rdp[k], e;
        if (!(r >= 0))
            return FL_EINVAL;
        if (delta * delta + expm1(-r) > 0)
            e = 0; /* bounded through the KL divergence: delta <= sqrt(1 - exp(-rdp)) */
        else if (a > 1.01)
            e = r + log1p(-1 / a) - log(delta * a) / (a - 1);
        else
            e = INFINITY;
        if (e < best) { /* the first of equal minima, as an argmin would */
            best = e;
            at = a;
        }
    }
    *epsilon = best > 0 ? best : 0;
    if (best_order)
        *best_order = at;
    return 0;
}

struct fl_rdp {
    size_t n;
    double *orders, *rdp, *tmp;
    double steps;
};

int fl_rdp_create(fl_rdp_t **out)
{
    fl_rdp_t *a = calloc(1, sizeof *a);
    size_t n = 99 + 53 + 4;
    if (!a || !(a->orders = calloc(n, sizeof *a->orders)) || !(a->rdp = calloc(n, sizeof *a->rdp)) ||
        !(a->tmp = calloc(n, sizeof *a->tmp))) {
        fl_rdp_free(a);
        return FL_ENOMEM;
    }
    size_t k = 0;
    for (int x = 1; x < 100; x++)
        a->orders[k++] = 1 + x / 10.0;
    for (int x = 11; x < 64; x++)
        a->orders[k++] = x;
    for (int x = 128; x <= 1024; x *= 2)
        a->orders[k++] = x;
    a->n = k;
    *out = a;
    return 0;
}

void fl_rdp_free(fl_rdp_t *a)
{
    if (!a)
        return;
    free(a->orders);
    free(a->rdp);
    free(a->tmp);
    free(a);
}

int fl_rdp_add(fl_rdp_t *a, double q, double sigma, double steps)
{
    if (!a || !(q >= 0 && q <= 1) || !(sigma >= 0) || !isfinite(sigma) || !(steps >= 0) || !isfinite(steps))
        return FL_EINVAL;
    if (steps == 0)
        return 0;
    for (size_t k = 0; k < a->n; k++)
        a->rdp[k] += steps * fl_rdp_sgm(q, sigma, a->orders[k]);
    a->steps += steps;
    return 0;
}

double fl_rdp_steps(const fl_rdp_t *a)
{
    return a ? a->steps : 0;
}

int fl_rdp_get_epsilon(const fl_rdp_t *a, double delta, double *epsilon, double *best_order)
{
    if (!a)
        return FL_EINVAL;
    return fl_rdp_epsilon(a->orders, a->rdp, a->n, delta, epsilon, best_order);
}

int fl_rdp_peek_epsilon(const fl_rdp_t *a, double q, double sigma, double steps, double delta, double *epsilon)
{
    if (!a || !(q >= 0 && q <= 1) || !(sigma >= 0) || !isfinite(sigma) || !(steps >= 0) || !isfinite(steps))
        return FL_EINVAL;
    for (size_t k = 0; k < a->n; k++)
        a->tmp[k] = a->rdp[k] + (steps > 0 ? steps * fl_rdp_sgm(q, sigma, a->orders[k]) : 0);
    return fl_rdp_epsilon(a->orders, a->tmp, a->n, delta, epsilon, NULL);
}
