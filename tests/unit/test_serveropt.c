/* ServerOpt beyond the vectors: the reference's invariants, streaming
 * accuracy over thousands of updates, refusal of bad updates, empty rounds,
 * and exact state serialization. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/base/params.h"
#include "common/base/rng.h"
#include "server/serveropt.h"

static fl_serveropt_t *make(fl_serveropt_kind_t kind, size_t n)
{
    fl_serveropt_config_t cfg;
    fl_serveropt_config_defaults(&cfg, kind);
    fl_serveropt_t *o = NULL;
    assert_int_equal(fl_serveropt_create(&cfg, n, &o), 0);
    return o;
}

static void fill_normal(fl_rng_t *r, float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * fl_rng_normal(r));
}

/* Runs `rounds` rounds of 3 random updates each and calls check(prev_v, v, D)
 * after every round, with D the pseudo-gradient recomputed in double. */
typedef void (*check_fn)(const float *vprev, const float *v, const double *D, size_t n);

static void run_rounds(fl_serveropt_kind_t kind, int rounds, check_fn check)
{
    const size_t n = 257;
    fl_rng_t r;
    fl_rng_seed(&r, 42 + kind);
    fl_serveropt_t *o = make(kind, n);
    float *x = calloc(n, sizeof *x), *d = calloc(n, sizeof *d), *vprev = calloc(n, sizeof *vprev);
    double *D = calloc(n, sizeof *D);
    for (int t = 0; t < rounds; t++) {
        memcpy(vprev, fl_serveropt_v(o), n * sizeof(float));
        fl_serveropt_begin(o);
        memset(D, 0, n * sizeof *D);
        double wsum = 0;
        for (int k = 0; k < 3; k++) {
            /* Vary the scale across rounds so v both grows and shrinks. */
            fill_normal(&r, d, n, (t % 3 == 0) ? 1.0 : 0.01);
            double w = 1 + (double)fl_rng_below(&r, 100);
            assert_int_equal(fl_serveropt_add(o, d, n, w), 0);
            for (size_t i = 0; i < n; i++)
                D[i] += w * d[i];
            wsum += w;
        }
        for (size_t i = 0; i < n; i++)
            D[i] /= wsum;
        assert_int_equal(fl_serveropt_finish(o, x, n, NULL), 0);
        check(vprev, fl_serveropt_v(o), D, n);
    }
    free(x);
    free(d);
    free(vprev);
    free(D);
    fl_serveropt_free(o);
}

static void adagrad_check(const float *vp, const float *v, const double *D, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_true(v[i] >= vp[i]);
}

static void yogi_check(const float *vp, const float *v, const double *D, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_true(v[i] >= 0.0f);
}

static void adam_check(const float *vp, const float *v, const double *D, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double d2 = D[i] * D[i];
        double lo = fmin(vp[i], d2), hi = fmax(vp[i], d2);
        /* v is stored in float32: allow its rounding. */
        assert_true(v[i] >= lo * (1 - 1e-6) - 1e-30 && v[i] <= hi * (1 + 1e-6) + 1e-30);
    }
}

static void test_adagrad_v_nondecreasing(void **s) { run_rounds(FL_SERVEROPT_FEDADAGRAD, 12, adagrad_check); }
static void test_yogi_v_nonnegative(void **s) { run_rounds(FL_SERVEROPT_FEDYOGI, 12, yogi_check); }
static void test_adam_v_between(void **s) { run_rounds(FL_SERVEROPT_FEDADAM, 12, adam_check); }

/* FedAvg with lr = 1: the new model is the weighted mean of the client models. */
static void test_fedavg_lr1_is_weighted_mean(void **s)
{
    const size_t n = 100;
    fl_rng_t r;
    fl_rng_seed(&r, 7);
    fl_serveropt_t *o = make(FL_SERVEROPT_FEDAVG, n);
    float x[100], client[4][100], d[100];
    double w[4] = {10, 250, 3, 77}, want[100] = {0};
    fill_normal(&r, x, n, 1.0);
    fl_serveropt_begin(o);
    for (int k = 0; k < 4; k++) {
        fill_normal(&r, client[k], n, 1.0);
        for (size_t i = 0; i < n; i++) {
            d[i] = client[k][i] - x[i];
            want[i] += w[k] * client[k][i];
        }
        assert_int_equal(fl_serveropt_add(o, d, n, w[k]), 0);
    }
    assert_int_equal(fl_serveropt_finish(o, x, n, NULL), 0);
    for (size_t i = 0; i < n; i++)
        assert_float_equal(x[i], want[i] / 340.0, 1e-5);
    fl_serveropt_free(o);
}

/* 10,000 updates agree with a float64 sum to 1e-6 relative. */
static void test_accumulation_10k(void **s)
{
    const size_t n = 64;
    const int K = 10000;
    fl_rng_t r;
    fl_rng_seed(&r, 99);
    fl_serveropt_t *o = make(FL_SERVEROPT_FEDAVG, n);
    float *x = calloc(n, sizeof *x), *d = malloc(n * sizeof *d);
    double *ref = calloc(n, sizeof *ref), wsum = 0;
    fl_serveropt_begin(o);
    for (int k = 0; k < K; k++) {
        /* A common offset plus noise: the sum is dominated by cancellation-free
         * growth, where a float32 accumulator loses about 1e-4. */
        for (size_t i = 0; i < n; i++)
            d[i] = (float)(0.5 + 0.1 * fl_rng_normal(&r));
        double w = 1 + (double)fl_rng_below(&r, 500);
        assert_int_equal(fl_serveropt_add(o, d, n, w), 0);
        for (size_t i = 0; i < n; i++)
            ref[i] += w * (double)d[i];
        wsum += w;
    }
    fl_serveropt_round_t res;
    assert_int_equal(fl_serveropt_finish(o, x, n, &res), 0);
    assert_int_equal(res.accepted, K);
    for (size_t i = 0; i < n; i++) {
        double want = ref[i] / wsum;
        assert_true(fabs(x[i] - want) <= 1e-6 * fabs(want));
    }
    free(x);
    free(d);
    free(ref);
    fl_serveropt_free(o);
}

static void test_refusals_leave_no_trace(void **s)
{
    const size_t n = 33;
    fl_rng_t r;
    fl_rng_seed(&r, 5);
    fl_serveropt_t *a = make(FL_SERVEROPT_FEDADAM, n), *b = make(FL_SERVEROPT_FEDADAM, n);
    float xa[33], xb[33], good[33], bad[33];
    fill_normal(&r, xa, n, 1.0);
    memcpy(xb, xa, sizeof xa);
    fill_normal(&r, good, n, 0.1);
    fl_serveropt_begin(a);
    fl_serveropt_begin(b);
    assert_int_equal(fl_serveropt_add(a, good, n, 10), 0);
    assert_int_equal(fl_serveropt_add(b, good, n, 10), 0);
    /* Refusals of every kind go to b only. */
    memcpy(bad, good, sizeof bad);
    bad[n - 1] = NAN;
    assert_int_equal(fl_serveropt_add(b, bad, n, 10), FL_ENONFINITE);
    bad[n - 1] = -INFINITY;
    assert_int_equal(fl_serveropt_add(b, bad, n, 10), FL_ENONFINITE);
    assert_int_equal(fl_serveropt_add(b, good, n - 1, 10), FL_ESHAPE);
    assert_int_equal(fl_serveropt_add(b, good, n, 0), FL_EINVAL);
    assert_int_equal(fl_serveropt_add(b, good, n, NAN), FL_EINVAL);
    fl_serveropt_round_t ra, rb;
    assert_int_equal(fl_serveropt_finish(a, xa, n, &ra), 0);
    assert_int_equal(fl_serveropt_finish(b, xb, n, &rb), 0);
    assert_int_equal(rb.rejected, 5);
    assert_int_equal(rb.accepted, 1);
    assert_memory_equal(xa, xb, sizeof xa);
    assert_memory_equal(fl_serveropt_v(a), fl_serveropt_v(b), n * sizeof(float));
    /* add outside a round is a state error. */
    assert_int_equal(fl_serveropt_add(a, good, n, 1), FL_ESTATE);
    fl_serveropt_free(a);
    fl_serveropt_free(b);
}

static void test_empty_round_changes_nothing(void **s)
{
    const size_t n = 16;
    fl_serveropt_t *o = make(FL_SERVEROPT_FEDYOGI, n);
    float x[16], x0[16], d[16];
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)i;
        d[i] = 0.5f;
    }
    fl_serveropt_begin(o);
    assert_int_equal(fl_serveropt_add(o, d, n, 3), 0);
    assert_int_equal(fl_serveropt_finish(o, x, n, NULL), 0);
    memcpy(x0, x, sizeof x);
    uint8_t *before, *after;
    size_t lb, la;
    assert_int_equal(fl_serveropt_state_save(o, &before, &lb), 0);
    fl_serveropt_begin(o);
    d[3] = NAN;
    assert_int_equal(fl_serveropt_add(o, d, n, 3), FL_ENONFINITE);
    fl_serveropt_round_t res;
    assert_int_equal(fl_serveropt_finish(o, x, n, &res), 0);
    assert_int_equal(res.applied, 0);
    assert_int_equal(res.step, 1);
    assert_int_equal(fl_serveropt_state_save(o, &after, &la), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(before, after, la);
    assert_memory_equal(x, x0, sizeof x);
    free(before);
    free(after);
    fl_serveropt_free(o);
}

/* Two optimizers, one restored from the other's saved state mid-run, stay
 * identical bit for bit; corrupt or foreign state is refused. */
static void test_state_roundtrip(void **s)
{
    static const fl_serveropt_kind_t kinds[] = {FL_SERVEROPT_FEDAVG, FL_SERVEROPT_FEDAVGM,
                                                FL_SERVEROPT_FEDADAGRAD, FL_SERVEROPT_FEDADAM,
                                                FL_SERVEROPT_FEDYOGI};
    const size_t n = 301;
    for (int k = 0; k < 5; k++) {
        fl_rng_t r;
        fl_rng_seed(&r, 1000 + k);
        fl_serveropt_t *a = make(kinds[k], n), *b = NULL;
        float *xa = calloc(n, 4), *xb = calloc(n, 4), *d = calloc(n, 4);
        for (int t = 0; t < 6; t++) {
            if (t == 3) {
                uint8_t *buf;
                size_t len;
                assert_int_equal(fl_serveropt_state_save(a, &buf, &len), 0);
                b = make(kinds[k], n);
                /* Every truncation and a flipped byte are refused. */
                assert_int_not_equal(fl_serveropt_state_load(b, buf, len - 1), 0);
                assert_int_not_equal(fl_serveropt_state_load(b, buf, 10), 0);
                buf[len / 2] ^= 0x40;
                assert_int_equal(fl_serveropt_state_load(b, buf, len), FL_ECHECKSUM);
                buf[len / 2] ^= 0x40;
                fl_serveropt_t *other = make(kinds[(k + 1) % 5], n);
                assert_int_not_equal(fl_serveropt_state_load(other, buf, len), 0);
                fl_serveropt_free(other);
                assert_int_equal(fl_serveropt_state_load(b, buf, len), 0);
                assert_int_equal(fl_serveropt_step(b), 3);
                memcpy(xb, xa, n * 4);
                free(buf);
            }
            fl_serveropt_begin(a);
            if (b)
                fl_serveropt_begin(b);
            for (int c = 0; c < 3; c++) {
                fill_normal(&r, d, n, 0.05);
                assert_int_equal(fl_serveropt_add(a, d, n, 5 + c), 0);
                if (b)
                    assert_int_equal(fl_serveropt_add(b, d, n, 5 + c), 0);
            }
            assert_int_equal(fl_serveropt_finish(a, xa, n, NULL), 0);
            if (b)
                assert_int_equal(fl_serveropt_finish(b, xb, n, NULL), 0);
        }
        assert_memory_equal(xa, xb, n * 4);
        if (fl_serveropt_m(a))
            assert_memory_equal(fl_serveropt_m(a), fl_serveropt_m(b), n * 4);
        if (fl_serveropt_v(a))
            assert_memory_equal(fl_serveropt_v(a), fl_serveropt_v(b), n * 4);
        free(xa);
        free(xb);
        free(d);
        fl_serveropt_free(a);
        fl_serveropt_free(b);
    }
}

/* add_batch agrees with add, and refuses what add refuses, including a
 * non-finite value far into a delta (after blocks already summed). */
static void test_add_batch(void **s)
{
    const size_t n = 10000; /* several accumulation blocks */
    fl_rng_t r;
    fl_rng_seed(&r, 77);
    float *d[5];
    for (int k = 0; k < 5; k++) {
        d[k] = malloc(n * sizeof(float));
        fill_normal(&r, d[k], n, 0.1);
    }
    d[2][n - 3] = NAN; /* bad in the last block */
    d[4][0] = INFINITY;  /* bad in the first block */
    fl_serveropt_t *a = make(FL_SERVEROPT_FEDADAM, n), *b = make(FL_SERVEROPT_FEDADAM, n);
    float *xa = calloc(n, 4), *xb = calloc(n, 4);
    double w[5] = {3, 5, 7, 0, 11};
    int want[5] = {0, 0, FL_ENONFINITE, FL_EINVAL, FL_ENONFINITE}, got[5];
    double norms[5];
    for (int round = 0; round < 2; round++) {
        fl_serveropt_begin(a);
        fl_serveropt_begin(b);
        for (int k = 0; k < 5; k++)
            assert_int_equal(fl_serveropt_add(a, d[k], n, w[k]), want[k]);
        assert_int_equal(fl_serveropt_add_batch(b, (const float *const *)d, w, 5, n, got, norms), 0);
        for (int k = 0; k < 5; k++) {
            assert_int_equal(got[k], want[k]);
            if (want[k] == 0)
                assert_float_equal(norms[k], fl_f32_norm(d[k], n), 1e-9 * fl_f32_norm(d[k], n));
            else
                assert_true(isnan(norms[k]));
        }
        fl_serveropt_round_t ra, rb;
        assert_int_equal(fl_serveropt_finish(a, xa, n, &ra), 0);
        assert_int_equal(fl_serveropt_finish(b, xb, n, &rb), 0);
        assert_int_equal(rb.accepted, 2);
        assert_int_equal(rb.rejected, 3);
        assert_true(rb.total_weight == ra.total_weight);
        /* The refused delta d[2] was subtracted back out of the blocks before
         * its NaN: equal up to float64 rounding, i.e. float32 results agree to
         * an ulp or two. */
        for (size_t i = 0; i < n; i++)
            assert_true(fabsf(xa[i] - xb[i]) <= 1e-6f * (1.0f + fabsf(xa[i])));
    }
    int res[1];
    assert_int_equal(fl_serveropt_add_batch(b, (const float *const *)d, w, 1, n, res, NULL), FL_ESTATE);
    fl_serveropt_begin(b);
    assert_int_equal(fl_serveropt_add_batch(b, (const float *const *)d, w, 0, n, res, NULL), FL_EINVAL);
    assert_int_equal(fl_serveropt_add_batch(b, (const float *const *)d, w, 1, n - 1, res, NULL), 0);
    assert_int_equal(res[0], FL_ESHAPE);
    for (int k = 0; k < 5; k++)
        free(d[k]);
    free(xa);
    free(xb);
    fl_serveropt_free(a);
    fl_serveropt_free(b);
}

/* Runs three rounds on optimizer o (which may be split into parts): a round
 * of single adds, a round of two batches (one delta non-finite in a late
 * block, one with a bad weight), and a round whose last batch is fused into
 * the finish when `fused`. */
static void three_rounds_w(fl_serveropt_t *o, float *x, float *const *d, size_t n, int fused, double scale)
{
    double w[6] = {3 * scale, 5 * scale, 7 * scale, 0, 11 * scale, 2 * scale};
    int res[6];
    double norms[6];
    fl_serveropt_begin(o);
    for (int k = 0; k < 3; k++)
        assert_int_equal(fl_serveropt_add(o, d[k], n, w[k]), 0);
    assert_int_equal(fl_serveropt_add(o, d[5], n, w[5]), FL_ENONFINITE);
    assert_int_equal(fl_serveropt_finish(o, x, n, NULL), 0);

    fl_serveropt_begin(o);
    assert_int_equal(fl_serveropt_add_batch(o, (const float *const *)d, w, 3, n, res, norms), 0);
    assert_int_equal(fl_serveropt_add_batch(o, (const float *const *)d + 3, w + 3, 3, n, res, norms), 0);
    assert_int_equal(res[0], FL_EINVAL);
    assert_int_equal(res[1], 0);
    assert_int_equal(res[2], FL_ENONFINITE);
    assert_int_equal(fl_serveropt_finish(o, x, n, NULL), 0);

    fl_serveropt_begin(o);
    assert_int_equal(fl_serveropt_add_batch(o, (const float *const *)d + 1, w + 1, 2, n, res, norms), 0);
    fl_serveropt_round_t r;
    const float *last[3] = {d[0], d[3], d[4]};
    double lw[3] = {w[0], w[3], w[4]};
    if (fused) {
        assert_int_equal(fl_serveropt_add_batch_finish(o, last, lw, 3, n, res, norms, x, &r), 0);
    } else {
        assert_int_equal(fl_serveropt_add_batch(o, last, lw, 3, n, res, norms), 0);
        assert_int_equal(fl_serveropt_finish(o, x, n, &r), 0);
    }
    assert_int_equal(res[0], 0);
    assert_int_equal(res[1], FL_EINVAL);
    assert_int_equal(res[2], 0);
    assert_float_equal(norms[0], fl_f32_norm(d[0], n), 1e-9 * fl_f32_norm(d[0], n));
    assert_int_equal(r.accepted, 4);
    assert_int_equal(r.rejected, 1);
    assert_int_equal(r.step, 3);
}

static void three_rounds(fl_serveropt_t *o, float *x, float *const *d, size_t n, int fused)
{
    three_rounds_w(o, x, d, n, fused, 1.0);
}

/* A pass split into parts (as on a large model) and the finish fused into
 * the last batch give x, m and v bit for bit as one part and a separate
 * finish, for every optimizer; norms agree to float64 rounding. */
static void test_parts_and_fused_finish_bit_identical(void **s)
{
    const size_t n = 5 * 2048 + 13; /* several blocks, a ragged tail */
    fl_rng_t r;
    fl_rng_seed(&r, 2020);
    float *d[6];
    for (int k = 0; k < 6; k++) {
        d[k] = malloc(n * sizeof(float));
        fill_normal(&r, d[k], n, k == 4 ? 1.0 : 0.05);
    }
    d[5][4 * 2048 + 7] = NAN; /* in the last part of any split */
    assert_int_equal(fl__serveropt_default_parts(1000), 1);
    assert_true(fl__serveropt_default_parts((size_t)1 << 24) > 1);
    for (int kind = FL_SERVEROPT_FEDAVG; kind <= FL_SERVEROPT_FEDYOGI; kind++) {
        fl_serveropt_t *ref = make((fl_serveropt_kind_t)kind, n);
        float *xref = calloc(n, sizeof(float));
        fill_normal(&r, xref, n, 1.0);
        float *x0 = malloc(n * sizeof(float));
        memcpy(x0, xref, n * sizeof(float));
        three_rounds(ref, xref, d, n, 0);
        const size_t parts[] = {1, 2, 3, 8};
        for (size_t pi = 0; pi < 4; pi++) {
            for (int fused = 0; fused < 2; fused++) {
                if (parts[pi] == 1 && !fused)
                    continue;
                fl_serveropt_t *o = make((fl_serveropt_kind_t)kind, n);
                assert_int_equal(fl__serveropt_set_parts(o, parts[pi]), 0);
                float *x = malloc(n * sizeof(float));
                memcpy(x, x0, n * sizeof(float));
                three_rounds(o, x, d, n, fused);
                assert_memory_equal(x, xref, n * sizeof(float));
                if (fl_serveropt_m(ref))
                    assert_memory_equal(fl_serveropt_m(o), fl_serveropt_m(ref), n * sizeof(float));
                if (fl_serveropt_v(ref))
                    assert_memory_equal(fl_serveropt_v(o), fl_serveropt_v(ref), n * sizeof(float));
                free(x);
                fl_serveropt_free(o);
            }
        }
        assert_int_equal(fl__serveropt_set_parts(ref, 0), FL_EINVAL);
        assert_int_equal(fl__serveropt_set_parts(ref, 9), FL_EINVAL);
        free(x0);
        free(xref);
        fl_serveropt_free(ref);
    }
    for (int k = 0; k < 6; k++)
        free(d[k]);
}

/* Every build of the kernels this CPU runs (baseline, x86-64-v3, -v4) gives
 * x, m and v bit for bit as the baseline, for every optimizer, split or not,
 * fused or not, with weights whose products are exact (integers: the FMA
 * path) and with weights whose products are not (scaled by 0.1: multiply
 * and add kept apart). Where the CPU or build has no other build, the
 * baseline is compared with itself and the case says so. */
static void test_isa_builds_bit_identical(void **s)
{
    const size_t n = 5 * 2048 + 13;
    fl_rng_t r;
    fl_rng_seed(&r, 2021);
    float *d[6];
    for (int k = 0; k < 6; k++) {
        d[k] = malloc(n * sizeof(float));
        fill_normal(&r, d[k], n, k == 4 ? 1.0 : 0.05);
    }
    d[5][4 * 2048 + 7] = NAN;
    float *x0 = malloc(n * sizeof(float));
    fill_normal(&r, x0, n, 1.0);
    int others = 0;
    for (int kind = FL_SERVEROPT_FEDAVG; kind <= FL_SERVEROPT_FEDYOGI; kind++) {
        for (int sc = 0; sc < 2; sc++) {
            const double scale = sc ? 0.1 : 1.0;
            fl_serveropt_t *ref = make((fl_serveropt_kind_t)kind, n);
            assert_int_equal(fl__serveropt_set_isa(ref, 0), 0);
            float *xref = malloc(n * sizeof(float));
            memcpy(xref, x0, n * sizeof(float));
            three_rounds_w(ref, xref, d, n, 0, scale);
            const int isas[] = {0, 3, 4};
            for (size_t ii = 0; ii < 3; ii++) {
                for (int split = 0; split < 2; split++) {
                    fl_serveropt_t *o = make((fl_serveropt_kind_t)kind, n);
                    int rc = fl__serveropt_set_isa(o, isas[ii]);
                    if (rc == FL_EUNSUPPORTED) {
                        fl_serveropt_free(o);
                        continue;
                    }
                    assert_int_equal(rc, 0);
                    others += isas[ii] != 0;
                    assert_int_equal(fl__serveropt_set_parts(o, split ? 3 : 1), 0);
                    float *x = malloc(n * sizeof(float));
                    memcpy(x, x0, n * sizeof(float));
                    three_rounds_w(o, x, d, n, split, scale);
                    assert_memory_equal(x, xref, n * sizeof(float));
                    if (fl_serveropt_m(ref))
                        assert_memory_equal(fl_serveropt_m(o), fl_serveropt_m(ref), n * sizeof(float));
                    if (fl_serveropt_v(ref))
                        assert_memory_equal(fl_serveropt_v(o), fl_serveropt_v(ref), n * sizeof(float));
                    free(x);
                    fl_serveropt_free(o);
                }
            }
            free(xref);
            fl_serveropt_free(ref);
        }
    }
    if (!others)
        printf("    (this CPU or build has only the baseline kernels: compared with itself)\n");
    fl_serveropt_t *o = make(FL_SERVEROPT_FEDAVG, 16);
    assert_int_equal(fl__serveropt_set_isa(o, 1), FL_EINVAL);
    assert_int_equal(fl__serveropt_set_isa(NULL, 0), FL_EINVAL);
    fl_serveropt_free(o);
    free(x0);
    for (int k = 0; k < 6; k++)
        free(d[k]);
}

/* The fused finish's edge cases: a batch refused up front closes the round
 * like finish (nothing applied when nothing was accepted), a non-finite
 * delta breaks its precondition and is reported, and bad calls leave the
 * round open. */
static void test_fused_finish_edges(void **s)
{
    const size_t n = 3000;
    fl_rng_t r;
    fl_rng_seed(&r, 5);
    float *d = malloc(n * sizeof(float)), *x = calloc(n, sizeof(float)), *x0 = calloc(n, sizeof(float));
    fill_normal(&r, d, n, 0.1);
    fl_serveropt_t *o = make(FL_SERVEROPT_FEDADAM, n);
    const float *dd[1] = {d};
    double w0[1] = {0}, w1[1] = {4};
    int res[1];
    double norm[1];
    fl_serveropt_round_t rr;
    assert_int_equal(fl_serveropt_add_batch_finish(o, dd, w1, 1, n, res, norm, x, &rr), FL_ESTATE);
    fl_serveropt_begin(o);
    assert_int_equal(fl_serveropt_add_batch_finish(o, dd, w1, 1, n, res, norm, NULL, &rr), FL_ESHAPE);
    assert_int_equal(fl_serveropt_add_batch_finish(o, dd, w1, 0, n, res, norm, x, &rr), FL_EINVAL);
    assert_int_equal(fl_serveropt_add_batch_finish(o, dd, w0, 1, n, res, norm, x, &rr), 0);
    assert_int_equal(res[0], FL_EINVAL);
    assert_true(isnan(norm[0]));
    assert_int_equal(rr.applied, 0);
    assert_int_equal(rr.rejected, 1);
    assert_memory_equal(x, x0, n * sizeof(float));
    fl_serveropt_begin(o);
    d[n - 1] = INFINITY;
    assert_int_equal(fl_serveropt_add_batch_finish(o, dd, w1, 1, n, res, norm, x, &rr), FL_ENONFINITE);
    assert_int_equal(res[0], FL_ENONFINITE);
    assert_int_equal(fl_serveropt_add_batch_finish(o, dd, w1, 1, n, res, norm, x, &rr), FL_ESTATE);
    free(d);
    free(x);
    free(x0);
    fl_serveropt_free(o);
}

static void test_config(void **s)
{
    fl_serveropt_config_t c;
    fl_serveropt_kind_t k;
    assert_int_equal(fl_serveropt_parse_kind("fedyogi", &k), 0);
    assert_int_equal(k, FL_SERVEROPT_FEDYOGI);
    assert_int_equal(fl_serveropt_parse_kind("adam", &k), FL_EINVAL);
    fl_serveropt_config_defaults(&c, FL_SERVEROPT_FEDADAGRAD);
    assert_true(c.beta1 == 0.0 && c.tau == 1e-3 && c.server_lr > 0);
    fl_serveropt_config_defaults(&c, FL_SERVEROPT_FEDADAM);
    assert_true(c.beta1 == 0.9 && c.beta2 == 0.99 && !c.bias_correction);
    assert_int_equal(fl_serveropt_config_validate(&c), 0);
    c.beta2 = 1.0;
    assert_int_equal(fl_serveropt_config_validate(&c), FL_ECONFIG);
    fl_serveropt_config_defaults(&c, FL_SERVEROPT_FEDAVGM);
    c.bias_correction = 1;
    assert_int_equal(fl_serveropt_config_validate(&c), FL_ECONFIG);
    fl_serveropt_config_defaults(&c, FL_SERVEROPT_FEDAVG);
    c.server_lr = -1;
    fl_serveropt_t *o = NULL;
    assert_int_equal(fl_serveropt_create(&c, 10, &o), FL_ECONFIG);
    assert_null(o);
    fl_serveropt_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adagrad_v_nondecreasing),
        cmocka_unit_test(test_yogi_v_nonnegative),
        cmocka_unit_test(test_adam_v_between),
        cmocka_unit_test(test_fedavg_lr1_is_weighted_mean),
        cmocka_unit_test(test_accumulation_10k),
        cmocka_unit_test(test_refusals_leave_no_trace),
        cmocka_unit_test(test_empty_round_changes_nothing),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_add_batch),
        cmocka_unit_test(test_parts_and_fused_finish_bit_identical),
        cmocka_unit_test(test_fused_finish_edges),
        cmocka_unit_test(test_isa_builds_bit_identical),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests_name("serveropt", tests, NULL, NULL);
}
