/* Robust aggregation, clipping and DP-FedAvg on small hand-computed inputs:
 * server/robust.c, server/clip.c, server/dp.c and the pipeline that hands
 * their result to a ServerOpt (server/aggregate.c). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/base/rng.h"
#include "server/aggregate.h"
#include "server/clip.h"
#include "server/dp.h"
#include "server/rdp.h"
#include "server/robust.h"

static void assert_close(double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol)) {
        print_error("got %.9g want %.9g (tol %g)\n", got, want, tol);
        fail();
    }
}

/* Four 2-element deltas; column 0 has an outlier (100). */
static const float D0[] = {1, -5}, D1[] = {3, 0}, D2[] = {100, 2}, D3[] = {2, 1}, D4[] = {-50, 7};

static void test_median(void **st)
{
    (void)st;
    const float *d[] = {D0, D1, D2, D3};
    float out[2];
    assert_int_equal(fl_robust_median(d, 3, 2, out), 0);
    assert_true(out[0] == 3 && out[1] == 0); /* {1,3,100} -> 3, {-5,0,2} -> 0 */
    assert_int_equal(fl_robust_median(d, 4, 2, out), 0);
    assert_true(out[0] == 2.5f && out[1] == 0.5f); /* {1,2,3,100} -> 2.5, {-5,0,1,2} -> 0.5 */
    assert_int_equal(fl_robust_median(d, 1, 2, out), 0);
    assert_true(out[0] == 1 && out[1] == -5);
    assert_int_equal(fl_robust_median(d, 0, 2, out), FL_EINVAL);
}

static void test_trimmed_mean(void **st)
{
    (void)st;
    const float *d[] = {D0, D1, D2, D3, D4};
    float out[2];
    /* k 4, beta 0.25: one dropped at each end */
    assert_int_equal(fl_robust_trimmed_mean(d, 4, 2, 0.25, out), 0);
    assert_true(out[0] == 2.5f && out[1] == 0.5f);
    /* k 4, beta 0.2: floor(0.8) = 0 trimmed, the plain mean */
    assert_int_equal(fl_robust_trimmed_mean(d, 4, 2, 0.2, out), 0);
    assert_true(out[0] == 26.5f && out[1] == -0.5f);
    /* k 5, beta 0.2: one each end: col0 {-50,1,2,3,100} -> 2, col1 {-5,0,1,2,7} -> 1 */
    assert_int_equal(fl_robust_trimmed_mean(d, 5, 2, 0.2, out), 0);
    assert_true(out[0] == 2 && out[1] == 1);
    assert_int_equal(fl_robust_trimmed_mean(d, 5, 2, 0.5, out), FL_EINVAL);
    assert_int_equal(fl_robust_trimmed_mean(d, 5, 2, -0.1, out), FL_EINVAL);
}

static void test_krum(void **st)
{
    (void)st;
    /* 1-D points 0 1 3 4 100, f 1: each scored over its k-f-2 = 2 nearest.
     * squared distances give scores 0:1+9=10, 1:1+4=5, 3:1+4=5, 4:1+9=10,
     * 100:96^2+97^2=18625. */
    const float p[] = {0, 1, 3, 4, 100};
    const float *d[] = {&p[0], &p[1], &p[2], &p[3], &p[4]};
    float out;
    uint8_t ch[5];
    assert_int_equal(fl_robust_krum(d, 5, 1, 1, 1, &out, ch), 0);
    assert_true(out == 1); /* tie 1 vs 3: the lower index */
    assert_memory_equal(ch, ((uint8_t[]){0, 1, 0, 0, 0}), 5);
    assert_int_equal(fl_robust_krum(d, 5, 1, 1, 2, &out, ch), 0);
    assert_true(out == 2); /* (1 + 3) / 2 */
    assert_int_equal(fl_robust_krum(d, 5, 1, 1, 3, &out, ch), 0);
    assert_close(out, 4.0 / 3, 1e-7); /* 1, 3 and then point 0 (tie with 4: lower index) */
    assert_memory_equal(ch, ((uint8_t[]){1, 1, 1, 0, 0}), 5);
    /* f 2: scored over 1 neighbour: 0:1 1:1 3:1 4:1 100:9216; m 4 excludes only 100 */
    assert_int_equal(fl_robust_krum(d, 5, 1, 2, 4, &out, ch), 0);
    assert_true(out == 2);
    assert_int_equal(fl_robust_krum(d, 5, 1, 3, 1, &out, ch), FL_EINVAL); /* k < f + 3 */
    assert_int_equal(fl_robust_krum(d, 5, 1, 1, 6, &out, ch), FL_EINVAL);
}

static void test_clip(void **st)
{
    (void)st;
    fl_clip_config_t cfg = {.quantile = 0.5, .lr = 0.2};
    assert_int_equal(fl_clip_parse("none", &cfg), 0);
    assert_int_equal(cfg.mode, FL_CLIP_NONE);
    assert_int_equal(fl_clip_parse("2.5", &cfg), 0);
    assert_true(cfg.mode == FL_CLIP_FIXED && cfg.norm == 2.5);
    assert_int_equal(fl_clip_parse("adaptive:1", &cfg), 0);
    assert_true(cfg.mode == FL_CLIP_ADAPTIVE && cfg.norm == 1);
    assert_int_equal(fl_clip_parse("-1", &cfg), FL_EINVAL);
    assert_int_equal(fl_clip_parse("adaptive:", &cfg), FL_EINVAL);
    assert_int_equal(fl_clip_parse("adaptive:0", &cfg), FL_EINVAL);
    assert_int_equal(fl_clip_parse("1x", &cfg), FL_EINVAL);

    fl_clip_t c;
    assert_int_equal(fl_clip_init(&c, &cfg), 0);
    assert_true(fl_clip_scale(&c, 5) == 0.2); /* C/||d|| = 1/5 */
    assert_true(fl_clip_scale(&c, 0.5) == 1);
    assert_true(fl_clip_scale(&c, 0) == 1);
    /* norms 0.5 2 3 4: a quarter within C = 1, target 0.5:
     * C = exp(-0.2 * (0.25 - 0.5)) = exp(0.05) */
    const double norms[] = {0.5, 2, 3, 4};
    for (int i = 0; i < 4; i++)
        fl_clip_observe(&c, norms[i]);
    fl_clip_end_round(&c);
    assert_close(fl_clip_bound(&c), exp(0.05), 1e-15);
    /* all within: C = exp(0.05) * exp(-0.2 * 0.5) */
    fl_clip_observe(&c, 0.1);
    fl_clip_end_round(&c);
    assert_close(fl_clip_bound(&c), exp(0.05 - 0.1), 1e-15);
    fl_clip_end_round(&c); /* no updates: unchanged */
    assert_close(fl_clip_bound(&c), exp(-0.05), 1e-15);

    cfg.mode = FL_CLIP_FIXED;
    cfg.norm = 1;
    assert_int_equal(fl_clip_init(&c, &cfg), 0);
    fl_clip_observe(&c, 4);
    fl_clip_end_round(&c);
    assert_true(fl_clip_bound(&c) == 1); /* fixed does not move */
    cfg.mode = FL_CLIP_ADAPTIVE;
    cfg.quantile = 1.5;
    assert_int_equal(fl_clip_init(&c, &cfg), FL_EINVAL);
}

static void test_dp_noise_statistics(void **st)
{
    (void)st;
    fl_dp_noise_t *g = NULL, *h = NULL;
    assert_int_equal(fl_dp_noise_create(&g), 0);
    assert_int_equal(fl_dp_noise_create(&h), 0);
    const size_t n = 200001; /* odd: the last Box-Muller pair is half used */
    double *x = calloc(n, sizeof *x), *y = calloc(n, sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    assert_int_equal(fl_dp_noise_add(g, x, n, 2.0), 0);
    double s = 0, s2 = 0, within = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += x[i] * x[i];
        within += fabs(x[i]) <= 2.0;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    /* bounds of about 5 standard errors: the mean's is 2/sqrt(n) = 0.0045,
     * the variance's sqrt(2*16/n) = 0.0126, the 1-sigma fraction's
     * sqrt(0.68*0.32/n) = 0.001 */
    assert_close(mean, 0, 0.023);
    assert_close(var, 4, 0.065);
    assert_close(within / n, 0.682689, 0.0052);
    assert_true(x[n - 1] != 0);
    /* two generators seeded from the OS do not repeat each other */
    assert_int_equal(fl_dp_noise_add(h, y, n, 2.0), 0);
    assert_true(memcmp(x, y, 64) != 0);
    /* stddev 0 adds nothing; negative is refused */
    double z[3] = {1, 2, 3};
    assert_int_equal(fl_dp_noise_add(g, z, 3, 0), 0);
    assert_true(z[0] == 1 && z[1] == 2 && z[2] == 3);
    assert_int_equal(fl_dp_noise_add(g, z, 3, -1), FL_EINVAL);
    /* the estimate's deterministic part: (sum + 0) / denominator */
    float out[3];
    assert_int_equal(fl_dp_estimate(g, z, 3, 0, 1, 4, out), 0);
    assert_true(out[0] == 0.25f && out[1] == 0.5f && out[2] == 0.75f);
    assert_int_equal(fl_dp_estimate(g, z, 3, 1, 1, 0, out), FL_EINVAL);
    free(x);
    free(y);
    fl_dp_noise_free(g);
    fl_dp_noise_free(h);
}

static fl_serveropt_t *fedavg(size_t n)
{
    fl_serveropt_config_t c;
    fl_serveropt_config_defaults(&c, FL_SERVEROPT_FEDAVG); /* x += 1 * D */
    fl_serveropt_t *o = NULL;
    assert_int_equal(fl_serveropt_create(&c, n, &o), 0);
    return o;
}

/* One round through the pipeline from x = 0 with FedAvg at lr 1: x = D. */
static void run_round(const fl_agg_config_t *cfg, const float *const *d, const double *w, size_t k, size_t n,
                      float *x, fl_serveropt_round_t *res)
{
    fl_agg_t *a = NULL;
    fl_serveropt_t *o = fedavg(n);
    assert_int_equal(fl_agg_create(cfg, n, &a), 0);
    memset(x, 0, n * sizeof *x);
    fl_serveropt_begin(o);
    fl_agg_begin(a);
    for (size_t i = 0; i < k; i++) {
        double nrm;
        assert_int_equal(fl_agg_add(a, o, d[i], n, w[i], &nrm), 0);
        assert_close(nrm, sqrt((double)d[i][0] * d[i][0] + (double)d[i][1] * d[i][1]), 1e-5);
    }
    assert_int_equal(fl_agg_finish(a, o, x, n, res), 0);
    fl_agg_free(a);
    fl_serveropt_free(o);
}

static void test_pipeline_exact(void **st)
{
    (void)st;
    const float *d[] = {D0, D1, D2, D3};
    const double w[] = {1, 1, 6, 2};
    float x[2];
    fl_serveropt_round_t res;
    fl_agg_config_t cfg = {.capacity = 4, .clip = {.mode = FL_CLIP_NONE}};

    /* mean: weighted (1*1 + 1*3 + 6*100 + 2*2) / 10 = 60.8, (-5 + 0 + 12 + 2) / 10 = 0.9 */
    run_round(&cfg, d, w, 4, 2, x, &res);
    assert_close(x[0], 60.8, 1e-5);
    assert_close(x[1], 0.9, 1e-6);
    assert_int_equal(res.accepted, 4);

    /* median ignores the weights */
    assert_int_equal(fl_agg_parse("median", &cfg.spec), 0);
    run_round(&cfg, d, w, 4, 2, x, &res);
    assert_true(x[0] == 2.5f && x[1] == 0.5f);
    assert_int_equal(res.accepted, 4);

    assert_int_equal(fl_agg_parse("trimmed_mean:0.25", &cfg.spec), 0);
    run_round(&cfg, d, w, 4, 2, x, &res);
    assert_true(x[0] == 2.5f && x[1] == 0.5f);

    /* clip to 5 then mean: ||D0|| = sqrt(26), ||D2|| = sqrt(10004) scaled
     * to norm 5; the weighted mean of the clipped deltas */
    cfg.spec.rule = FL_AGG_MEAN;
    cfg.clip = (fl_clip_config_t){.mode = FL_CLIP_FIXED, .norm = 5};
    run_round(&cfg, d, w, 4, 2, x, &res);
    double s0 = 5 / sqrt(26.0), s2 = 5 / sqrt(10004.0);
    assert_close(x[0], (1 * s0 * 1 + 1 * 3 + 6 * s2 * 100 + 2 * 2) / 10, 1e-5);
    assert_close(x[1], (1 * s0 * -5 + 0 + 6 * s2 * 2 + 2 * 1) / 10, 1e-5);

    /* clip then krum:0,1 (nb = 2): clipped points D0' (0.98,-4.90), D1 (3,0),
     * D2' (5.00,0.10), D3 (2,1); scores over the 2 nearest: D0' 28.1+35.9,
     * D1 2+4.01, D2' 4.01+9.8, D3 2+9.8: D1 wins */
    assert_int_equal(fl_agg_parse("krum:0,1", &cfg.spec), 0);
    run_round(&cfg, d, w, 4, 2, x, &res);
    assert_true(x[0] == 3 && x[1] == 0);
}

/* Every rule composes with every ServerOpt: the rule's D enters the optimizer
 * as one update of weight 1, so a round through the pipeline equals the
 * optimizer stepping on the hand-computed D, bit for bit, for FedAvg ...
 * FedYogi (two rounds, so the optimizers' state matters). */
static void test_every_serveropt(void **st)
{
    (void)st;
    const float *d[] = {D0, D1, D2, D3};
    const double w[] = {1, 1, 6, 2};
    const float dmed[2] = {2.5f, 0.5f}; /* the coordinate-wise median (test_pipeline_exact) */
    for (int t = FL_SERVEROPT_FEDAVG; t <= FL_SERVEROPT_FEDYOGI; t++) {
        fl_serveropt_config_t oc;
        fl_serveropt_config_defaults(&oc, (fl_serveropt_kind_t)t);
        fl_serveropt_t *o1 = NULL, *o2 = NULL;
        assert_int_equal(fl_serveropt_create(&oc, 2, &o1), 0);
        assert_int_equal(fl_serveropt_create(&oc, 2, &o2), 0);
        fl_agg_config_t cfg = {.capacity = 4, .clip = {.mode = FL_CLIP_NONE}};
        assert_int_equal(fl_agg_parse("median", &cfg.spec), 0);
        fl_agg_t *a = NULL;
        assert_int_equal(fl_agg_create(&cfg, 2, &a), 0);
        float x1[2] = {0.5f, -0.25f}, x2[2] = {0.5f, -0.25f};
        fl_serveropt_round_t r1, r2;
        for (int round = 0; round < 2; round++) {
            fl_serveropt_begin(o1);
            fl_agg_begin(a);
            for (int i = 0; i < 4; i++)
                assert_int_equal(fl_agg_add(a, o1, d[i], 2, w[i], NULL), 0);
            assert_int_equal(fl_agg_finish(a, o1, x1, 2, &r1), 0);
            fl_serveropt_begin(o2);
            assert_int_equal(fl_serveropt_add(o2, dmed, 2, 1.0), 0);
            assert_int_equal(fl_serveropt_finish(o2, x2, 2, &r2), 0);
            assert_memory_equal(x1, x2, sizeof x1);
        }
        assert_false(x1[0] == 0.5f && x1[1] == -0.25f); /* the step moved x */
        fl_agg_free(a);
        fl_serveropt_free(o1);
        fl_serveropt_free(o2);
    }
}

static void test_pipeline_dp(void **st)
{
    (void)st;
    /* Every coordinate of the n-vector sees the same two deltas: a = 3 and
     * b = 0.3 on coordinate pairs, ||a|| = 5*sqrt(n/2) so it is clipped to
     * C = 1, b's norm 0.5*sqrt(n/2) is left. D = (clip(a) + b + noise) / 4:
     * its mean over coordinates is the deterministic part, its spread
     * z*C/K. */
    const size_t n = 100000;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *x = malloc(n * sizeof *x);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) {
        a[i] = i % 2 ? 4.0f : 3.0f;
        b[i] = i % 2 ? 0.0004f : 0.0003f;
    }
    double na = 5 * sqrt(n / 2.0);
    fl_agg_config_t cfg = {.capacity = 4,
                           .clip = {.mode = FL_CLIP_FIXED, .norm = 1},
                           .dp_noise_multiplier = 2,
                           .dp_denominator = 4};
    fl_agg_t *ag = NULL;
    fl_serveropt_t *o = fedavg(n);
    assert_int_equal(fl_agg_create(&cfg, n, &ag), 0);
    memset(x, 0, n * sizeof *x);
    fl_serveropt_begin(o);
    fl_agg_begin(ag);
    double nrm;
    assert_int_equal(fl_agg_add(ag, o, a, n, 100, &nrm), 0); /* weights play no part */
    assert_close(nrm, na, 1e-6 * na);
    assert_int_equal(fl_agg_add(ag, o, b, n, 1, &nrm), 0);
    fl_serveropt_round_t res;
    assert_int_equal(fl_agg_finish(ag, o, x, n, &res), 0);
    assert_int_equal(res.accepted, 2);
    double want_even = (3 / na + 0.0003) / 4, want_odd = (4 / na + 0.0004) / 4, sd = 2.0 * 1 / 4;
    double se = 0, so = 0, v = 0;
    for (size_t i = 0; i < n; i++) {
        double e = x[i] - (i % 2 ? want_odd : want_even);
        if (i % 2)
            so += e;
        else
            se += e;
        v += e * e;
    }
    /* each half's mean error: 5 standard errors of sd/sqrt(n/2) */
    assert_close(se / (n / 2), 0, 5 * sd / sqrt(n / 2.0));
    assert_close(so / (n / 2), 0, 5 * sd / sqrt(n / 2.0));
    assert_close(sqrt(v / n), sd, 0.01);
    /* a third and fourth fit (capacity 4); a fifth is refused */
    fl_serveropt_begin(o);
    fl_agg_begin(ag);
    for (int i = 0; i < 4; i++)
        assert_int_equal(fl_agg_add(ag, o, b, n, 1, NULL), 0);
    assert_int_equal(fl_agg_add(ag, o, b, n, 1, NULL), FL_ESTATE);
    b[7] = NAN;
    assert_int_equal(fl_agg_add(ag, o, b, n, 1, &nrm), FL_ENONFINITE);
    assert_true(isnan(nrm));
    fl_agg_free(ag);
    fl_serveropt_free(o);
    free(a);
    free(b);
    free(x);
}

/* Andrew et al. 2021, Theorem 1: the update's multiplier and the count's
 * stddev compose to the total z, sigma_u^-2 + (2 sigma_b)^-2 = z^-2. */
static void test_dp_update_multiplier(void **st)
{
    (void)st;
    double su = 0;
    /* z = 1, sigma_b = 2: (1 - 1/16)^-1/2 = 4/sqrt(15) */
    assert_int_equal(fl_dp_update_multiplier(1, 2, &su), 0);
    assert_close(su, 4 / sqrt(15.0), 1e-15);
    /* z = 0.5, sigma_b = 0.5 (K = 10 at the paper's K/20): (4 - 1)^-1/2 */
    assert_int_equal(fl_dp_update_multiplier(0.5, 0.5, &su), 0);
    assert_close(su, 1 / sqrt(3.0), 1e-15);
    const double zs[] = {0.3, 1, 2.5}, sbs[] = {5, 50, 1e4};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            assert_int_equal(fl_dp_update_multiplier(zs[i], sbs[j], &su), 0);
            assert_true(su > zs[i]);
            assert_close(1 / (su * su) + 1 / (4 * sbs[j] * sbs[j]), 1 / (zs[i] * zs[i]), 1e-12 / (zs[i] * zs[i]));
        }
    /* 2 sigma_b <= z: no finite update noise keeps the total at z */
    assert_int_equal(fl_dp_update_multiplier(1, 0.5, &su), FL_EINVAL);
    assert_int_equal(fl_dp_update_multiplier(1, 0.4, &su), FL_EINVAL);
    assert_int_equal(fl_dp_update_multiplier(0, 1, &su), FL_EINVAL);
    assert_int_equal(fl_dp_update_multiplier(1, 0, &su), FL_EINVAL);
    assert_int_equal(fl_dp_update_multiplier(INFINITY, 1, &su), FL_EINVAL);
    assert_int_equal(fl_dp_update_multiplier(1, NAN, &su), FL_EINVAL);
}

/* The accountant charges a round of adaptive clipping under DP as one
 * sampled Gaussian mechanism of multiplier z (the two releases are one
 * Gaussian query on the concatenated, rescaled vector, sampled once):
 * without sampling (q = 1) the RDP of the two releases adds up to exactly
 * that at every order, and a run's epsilon is a plain DP-FedAvg run's at z. */
static void test_dp_adaptive_accounting(void **st)
{
    (void)st;
    double z = 1, sb = 2, su = 0;
    assert_int_equal(fl_dp_update_multiplier(z, sb, &su), 0);
    const double orders[] = {1.5, 2, 3.5, 8, 32, 256};
    for (int k = 0; k < 6; k++) {
        double a = orders[k];
        assert_close(fl_rdp_sgm(1, su, a) + fl_rdp_sgm(1, 2 * sb, a), fl_rdp_sgm(1, z, a), 1e-12 * a);
    }
    /* 30 rounds at q = 0.1: epsilon is the plain DP-FedAvg run's at the same z */
    fl_rdp_t *joint = NULL, *plain = NULL;
    assert_int_equal(fl_rdp_create(&joint), 0);
    assert_int_equal(fl_rdp_create(&plain), 0);
    for (int r = 0; r < 30; r++)
        assert_int_equal(fl_rdp_add(joint, 0.1, z, 1), 0);
    assert_int_equal(fl_rdp_add(plain, 0.1, 1, 30), 0);
    double e1, e2;
    assert_int_equal(fl_rdp_get_epsilon(joint, 1e-5, &e1, NULL), 0);
    assert_int_equal(fl_rdp_get_epsilon(plain, 1e-5, &e2, NULL), 0);
    assert_close(e1, e2, 1e-9 * e2);
    assert_true(e1 > 0 && isfinite(e1));
    fl_rdp_free(joint);
    fl_rdp_free(plain);
}

/* The private fraction within C on hand-computed counts. */
static void test_clip_noised_within(void **st)
{
    (void)st;
    fl_clip_config_t cfg = {.mode = FL_CLIP_ADAPTIVE, .norm = 1, .quantile = 0.5, .lr = 0.2};
    fl_clip_t c;
    assert_int_equal(fl_clip_init(&c, &cfg), 0);
    assert_true(isnan(fl_clip_noised_within(&c, 0, 10))); /* nothing seen: nothing released */
    for (int i = 0; i < 10; i++)
        fl_clip_observe(&c, i < 7 ? 0.5 : 2); /* 7 of 10 within */
    assert_close(fl_clip_noised_within(&c, 0, 10), 0.7, 1e-15);   /* no noise, full round: exact */
    assert_close(fl_clip_noised_within(&c, 1.5, 10), 0.85, 1e-15); /* (7 - 5 + 1.5)/10 + 1/2 */
    assert_close(fl_clip_noised_within(&c, 0, 20), 0.6, 1e-15);   /* (7 - 5)/20 + 1/2 */
    assert_close(fl_clip_noised_within(&c, -3, 20), 0.45, 1e-15);
    assert_true(fl_clip_noised_within(&c, 100, 10) == 1);          /* clamped */
    assert_true(fl_clip_noised_within(&c, -100, 10) == 0);
    assert_true(isnan(fl_clip_noised_within(&c, 0, 0)));
}

/* With the noise off, the geometric rule drives C to the target quantile of
 * a known norm distribution: norms uniform on [0, 2], quantile 0.3 -> 0.6. The
 * private estimate with zero noise over a full round is the same rule. */
static void test_clip_converges(void **st)
{
    (void)st;
    fl_clip_config_t cfg = {.mode = FL_CLIP_ADAPTIVE, .norm = 5, .quantile = 0.3, .lr = 0.2};
    fl_clip_t c, p;
    assert_int_equal(fl_clip_init(&c, &cfg), 0);
    assert_int_equal(fl_clip_init(&p, &cfg), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 7);
    double tail = 0;
    int rounds = 600, k = 100;
    for (int t = 0; t < rounds; t++) {
        for (int i = 0; i < k; i++) {
            double nrm = 2 * fl_rng_uniform(&r);
            fl_clip_observe(&c, nrm);
            fl_clip_observe(&p, nrm);
        }
        double b = fl_clip_noised_within(&p, 0, k);
        fl_clip_end_round(&c);
        fl_clip_step(&p, b);
        p.seen = p.within = 0;
        assert_close(fl_clip_bound(&p), fl_clip_bound(&c), 1e-12 * fl_clip_bound(&c));
        if (t >= rounds - 200)
            tail += fl_clip_bound(&c) / 200;
    }
    /* from 5 to within 3% of 0.6 (the round-to-round spread at K = 100 is
     * about lr * sqrt(0.21/100) * C, under 1% of C) */
    assert_close(tail, 0.6, 0.018);
}

/* The DP pipeline with adaptive clipping: the sum is noised with
 * sigma_update * C / K (not z * C / K), the bound moves with the noised
 * fraction, and that fraction is what fl_agg_clip_within reports. */
static void test_pipeline_dp_adaptive(void **st)
{
    (void)st;
    const size_t n = 100000;
    float *zero = calloc(n, sizeof *zero), *x = malloc(n * sizeof *x);
    assert_non_null(zero);
    assert_non_null(x);
    double z = 1, sb = 2, su = 4 / sqrt(15.0);
    fl_agg_config_t cfg = {.capacity = 4,
                           .clip = {.mode = FL_CLIP_ADAPTIVE, .norm = 1, .quantile = 0.5, .lr = 0.2},
                           .dp_noise_multiplier = z,
                           .dp_denominator = 4,
                           .dp_count_stddev = sb};
    assert_int_equal(fl_agg_config_validate(&cfg), 0);
    fl_agg_t *ag = NULL;
    fl_serveropt_t *o = fedavg(n);
    assert_int_equal(fl_agg_create(&cfg, n, &ag), 0);
    assert_close(fl_agg_update_multiplier(ag), su, 1e-15);
    memset(x, 0, n * sizeof *x);
    fl_serveropt_begin(o);
    fl_agg_begin(ag);
    assert_int_equal(fl_agg_add(ag, o, zero, n, 1, NULL), 0);
    fl_serveropt_round_t res;
    assert_int_equal(fl_agg_finish(ag, o, x, n, &res), 0);
    double v = 0;
    for (size_t i = 0; i < n; i++)
        v += (double)x[i] * x[i];
    /* sd su*C/K = 0.2582 against z*C/K = 0.25: the estimate's relative error is 1/sqrt(2n) = 0.2% */
    assert_close(sqrt(v / n), su * 1 / 4, 0.01 * su / 4);
    /* one update of norm 0 is within C: exact b = 1; the released one is
     * (1 - 1/2 + N(0, 4))/4 + 1/2, clamped; C moved with it */
    double b = fl_agg_clip_within(ag);
    assert_true(b >= 0 && b <= 1);
    assert_close(fl_agg_clip_bound(ag), exp(-0.2 * (b - 0.5)), 1e-12);
    fl_agg_free(ag);

    /* The released fraction over many rounds of k = 4 updates, two with a
     * tiny norm and two with a huge one (exact b = 1/2 whatever C does at a
     * small lr): mean 1/2, spread sigma_b / K = 0.1 (5 standard errors). */
    const size_t m = 2;
    float tiny[] = {1e-3f, 0}, huge[] = {1e3f, 0}, y[2];
    cfg.dp_count_stddev = 0.4;
    cfg.dp_noise_multiplier = 0.5;
    cfg.clip.lr = 0.01;
    fl_serveropt_t *o2 = fedavg(m);
    assert_int_equal(fl_agg_create(&cfg, m, &ag), 0);
    int rounds = 400;
    double sum = 0, sq = 0;
    for (int t = 0; t < rounds; t++) {
        double c0 = fl_agg_clip_bound(ag);
        fl_serveropt_begin(o2);
        fl_agg_begin(ag);
        assert_int_equal(fl_agg_add(ag, o2, tiny, m, 1, NULL), 0);
        assert_int_equal(fl_agg_add(ag, o2, tiny, m, 1, NULL), 0);
        assert_int_equal(fl_agg_add(ag, o2, huge, m, 1, NULL), 0);
        assert_int_equal(fl_agg_add(ag, o2, huge, m, 1, NULL), 0);
        assert_int_equal(fl_agg_finish(ag, o2, y, m, &res), 0);
        double bt = fl_agg_clip_within(ag);
        assert_close(fl_agg_clip_bound(ag), c0 * exp(-0.01 * (bt - 0.5)), 1e-12 * c0);
        sum += bt;
        sq += (bt - 0.5) * (bt - 0.5);
    }
    assert_close(sum / rounds, 0.5, 5 * 0.1 / sqrt(rounds));
    assert_close(sqrt(sq / rounds), 0.1, 0.015);
    fl_agg_free(ag);
    fl_serveropt_free(o);
    fl_serveropt_free(o2);
    free(zero);
    free(x);
}

static void test_config(void **st)
{
    (void)st;
    fl_agg_spec_t s;
    assert_int_equal(fl_agg_parse("krum:2,3", &s), 0);
    assert_true(s.rule == FL_AGG_KRUM && s.f == 2 && s.m == 3);
    assert_int_equal(fl_agg_parse("krum:1", &s), 0);
    assert_true(s.f == 1 && s.m == 1);
    assert_int_equal(fl_agg_parse("trimmed_mean:0.1", &s), 0);
    assert_true(s.rule == FL_AGG_TRIMMED_MEAN && s.beta == 0.1);
    const char *bad[] = {"", "avg", "krum", "krum:", "krum:1,", "krum:1,0", "krum:-1", "krum:1,2x",
                         "trimmed_mean", "trimmed_mean:0.5", "trimmed_mean:x", "median:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(fl_agg_parse(bad[i], &s), FL_EINVAL);

    fl_agg_config_t c = {.capacity = 10};
    assert_int_equal(fl_agg_memory_bytes(&c, 1000), 0);
    c.spec.rule = FL_AGG_MEDIAN;
    assert_int_equal(fl_agg_memory_bytes(&c, 1000), 11 * 1000 * 4);
    c.spec = (fl_agg_spec_t){.rule = FL_AGG_KRUM, .f = 7, .m = 1};
    assert_int_equal(fl_agg_memory_bytes(&c, 1000), 11 * 1000 * 4 + 10 * 10 * 8);
    assert_int_equal(fl_agg_config_validate(&c), 0);
    c.spec.f = 8; /* 10 < 8 + 3 */
    assert_int_equal(fl_agg_config_validate(&c), FL_ECONFIG);
    c.spec = (fl_agg_spec_t){.rule = FL_AGG_MEDIAN};
    c.dp_noise_multiplier = 1;
    c.dp_denominator = 10;
    c.clip = (fl_clip_config_t){.mode = FL_CLIP_FIXED, .norm = 1};
    assert_int_equal(fl_agg_config_validate(&c), FL_ECONFIG); /* DP needs the mean */
    c.spec.rule = FL_AGG_MEAN;
    assert_int_equal(fl_agg_config_validate(&c), 0);
    c.clip.mode = FL_CLIP_NONE;
    assert_int_equal(fl_agg_config_validate(&c), FL_ECONFIG); /* DP needs C */
    c.clip = (fl_clip_config_t){.mode = FL_CLIP_ADAPTIVE, .norm = 1, .quantile = 0.5, .lr = 0.2};
    c.dp_count_stddev = 0.5; /* K / 20 at K = 10: 2 sigma_b = z leaves no room */
    assert_int_equal(fl_agg_config_validate(&c), FL_ECONFIG);
    c.dp_count_stddev = 0.6;
    assert_int_equal(fl_agg_config_validate(&c), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_median),         cmocka_unit_test(test_trimmed_mean),
        cmocka_unit_test(test_krum),           cmocka_unit_test(test_clip),
        cmocka_unit_test(test_dp_noise_statistics), cmocka_unit_test(test_pipeline_exact),
        cmocka_unit_test(test_pipeline_dp),    cmocka_unit_test(test_dp_update_multiplier),
        cmocka_unit_test(test_dp_adaptive_accounting), cmocka_unit_test(test_clip_noised_within),
        cmocka_unit_test(test_clip_converges), cmocka_unit_test(test_pipeline_dp_adaptive),
        cmocka_unit_test(test_every_serveropt), cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
