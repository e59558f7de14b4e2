/* The RDP accountant against published test vectors.
 *
 * Vectors from google/differential-privacy,
 * python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant_test.py:
 *   test_compute_rdp_poisson_sampled_gaussian (q 0.01, sigma 2.5, 50 steps,
 *     orders 1.5 2.5 5 50 100 inf; rtol 1e-4 there, 1e-6 here),
 *   test_compute_epsilon_delta_pure_dp (orders 2..32, rdp 1.1, delta 1e-5:
 *     epsilon 1.32783806176 at order 32),
 *   test_compute_epsilon_delta_gaussian (q 1, sigma 4.530877117, orders
 *     1.000 .. 99.999 by 0.001: exactly (1, 1e-6)-DP),
 *   test_compute_rdp_gaussian (q 1: alpha / (2 sigma^2)),
 *   test_zero_poisson_sample (q 0: epsilon 0). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "server/rdp.h"

static void assert_rel(double got, double want, double rtol)
{
    if (!(fabs(got - want) <= rtol * fabs(want))) {
        print_error("got %.10g want %.10g (rtol %g)\n", got, want, rtol);
        fail();
    }
}

static void test_poisson_sampled_gaussian_vector(void **st)
{
    (void)st;
    const double orders[] = {1.5, 2.5, 5, 50, 100};
    const double want[] = {6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02};
    for (size_t k = 0; k < 5; k++)
        assert_rel(50 * fl_rdp_sgm(0.01, 2.5, orders[k]), want[k], 1e-6); /* the vectors carry 9 digits */
    assert_true(isinf(fl_rdp_sgm(0.01, 2.5, INFINITY)));
}

static void test_pure_dp_conversion_vector(void **st)
{
    (void)st;
    double orders[31], rdp[31], eps, at;
    for (int i = 0; i < 31; i++) {
        orders[i] = 2 + i;
        rdp[i] = 1.1;
    }
    assert_int_equal(fl_rdp_epsilon(orders, rdp, 31, 1e-5, &eps, &at), 0);
    assert_rel(eps, 1.32783806176, 1e-10);
    assert_true(at == 32);
}

static void test_gaussian_exact_vector(void **st)
{
    (void)st;
    size_t n = 99000;
    double *orders = malloc(n * sizeof *orders), *rdp = malloc(n * sizeof *rdp), eps;
    assert_non_null(orders);
    assert_non_null(rdp);
    for (size_t i = 0; i < n; i++) {
        orders[i] = 0.001 * (double)(i + 1000);
        rdp[i] = orders[i] > 1 ? fl_rdp_sgm(1, 4.530877117, orders[i]) : INFINITY;
    }
    /* order 1.000 is not > 1: its rdp slot is skipped by the <= 1.01 rule */
    rdp[0] = INFINITY;
    assert_int_equal(fl_rdp_epsilon(orders, rdp, n, 1e-6, &eps, NULL), 0);
    assert_true(fabs(eps - 1) < 5e-7); /* assertAlmostEqual: 7 places */
    free(orders);
    free(rdp);
}

static void test_unsampled_and_edges(void **st)
{
    (void)st;
    assert_rel(fl_rdp_sgm(1, 2.71828, 3.14159), 3.14159 / (2 * 2.71828 * 2.71828), 1e-12);
    assert_true(fl_rdp_sgm(0, 1, 3) == 0);
    assert_true(isinf(fl_rdp_sgm(0.5, 0, 3)));
    assert_true(isnan(fl_rdp_sgm(-0.1, 1, 3)));
    assert_true(isnan(fl_rdp_sgm(0.1, 1, 1)));
    /* Integer and fractional paths agree around an integer order. */
    double lo = fl_rdp_sgm(0.05, 1.3, 7.999999), mid = fl_rdp_sgm(0.05, 1.3, 8), hi = fl_rdp_sgm(0.05, 1.3, 8.000001);
    assert_rel(lo, mid, 1e-5);
    assert_rel(hi, mid, 1e-5);
    assert_true(lo <= mid && mid <= hi); /* RDP grows with the order */
    double o = 3, r = -1, e;
    assert_int_equal(fl_rdp_epsilon(&o, &r, 1, 1e-5, &e, NULL), FL_EINVAL);
    r = 0.1;
    assert_int_equal(fl_rdp_epsilon(&o, &r, 1, 0, &e, NULL), FL_EINVAL);
}

static void test_accountant_composes(void **st)
{
    (void)st;
    fl_rdp_t *a = NULL, *b = NULL;
    assert_int_equal(fl_rdp_create(&a), 0);
    assert_int_equal(fl_rdp_create(&b), 0);
    double e0, e1, e2, eb;
    assert_int_equal(fl_rdp_get_epsilon(a, 1e-5, &e0, NULL), 0);
    assert_true(e0 == 0); /* nothing spent */
    assert_int_equal(fl_rdp_add(a, 0, 1.0, 10), 0);
    assert_int_equal(fl_rdp_get_epsilon(a, 1e-10, &e0, NULL), 0);
    assert_true(e0 == 0); /* q = 0 spends nothing */
    for (int t = 0; t < 30; t++)
        assert_int_equal(fl_rdp_add(a, 0.1, 1.0, 1), 0);
    assert_int_equal(fl_rdp_add(b, 0.1, 1.0, 30), 0);
    assert_int_equal(fl_rdp_get_epsilon(a, 1e-5, &e1, NULL), 0);
    assert_int_equal(fl_rdp_get_epsilon(b, 1e-5, &eb, NULL), 0);
    assert_rel(e1, eb, 1e-12); /* 30 single steps = one 30-step composition */
    assert_true(fl_rdp_steps(a) == 40);
    assert_int_equal(fl_rdp_add(a, 0.1, 1.0, 30), 0);
    assert_int_equal(fl_rdp_get_epsilon(a, 1e-5, &e2, NULL), 0);
    assert_true(e2 > e1 && e2 < 2 * e1); /* grows, sublinearly */
    assert_int_equal(fl_rdp_add(a, 1.5, 1.0, 1), FL_EINVAL);
    fl_rdp_free(a);
    fl_rdp_free(b);
    fl_rdp_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poisson_sampled_gaussian_vector),
        cmocka_unit_test(test_pure_dp_conversion_vector),
        cmocka_unit_test(test_gaussian_exact_vector),
        cmocka_unit_test(test_unsampled_and_edges),
        cmocka_unit_test(test_accountant_composes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
