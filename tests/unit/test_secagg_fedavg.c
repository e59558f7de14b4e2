/* test_secagg_fedavg: FedAvg with secure aggregation in memory reaches the
 * accuracy of plain FedAvg. Ten clients train logistic regression on their
 * own synthetic data each round; the plain run averages the float deltas
 * weighted by examples, the secure run quantizes each delta
 * (common/secagg/quant), runs a whole secure round over the words
 * (tests/support/sasim, complete graph), checks the unmasked sum against
 * the plain sum of the words, and dequantizes the weighted mean. The two
 * means differ by at most the rounding bound of saquant.h each round, and
 * both runs end at the same accuracy within 1%. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/rng.h"
#include "common/nn/models.h"
#include "common/nn/train.h"
#include "common/secagg/saquant.h"
#include "tests/support/sasim.h"

#define CLIENTS 10
#define ROUNDS 8

/* 8x8 "images", 3 classes: class = argmax of 3 fixed projections; client c
 * holds 40 + 8c examples (unequal weights). */
static void synth(fl_dataset_t *d, size_t n, uint64_t seed)
{
    int64_t shape[3] = {1, 8, 8};
    fl_dataset_init(d);
    assert_int_equal(fl_dataset_alloc(d, n, 3, shape, 3), 0);
    fl_rng_t r;
    fl_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        double s[3] = {0, 0, 0};
        for (int j = 0; j < 64; j++) {
            float v = (float)fl_rng_uniform(&r);
            d->x[i * 64 + j] = v;
            s[j % 3] += v * (j < 32 ? 1 : -0.5);
        }
        d->y[i] = s[0] > s[1] ? (s[0] > s[2] ? 0 : 2) : (s[1] > s[2] ? 1 : 2);
    }
}

static fl_dataset_t g_data[CLIENTS], g_test;

static int setup(void **state)
{
    (void)state;
    for (int c = 0; c < CLIENTS; c++)
        synth(&g_data[c], 40 + 8 * (size_t)c, 100 + (uint64_t)c);
    synth(&g_test, 600, 999);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int c = 0; c < CLIENTS; c++)
        fl_dataset_free(&g_data[c]);
    fl_dataset_free(&g_test);
    return 0;
}

/* One FedAvg run; secure = 0: float mean, 1: through secure aggregation.
 * Returns the final test accuracy; *max_dev gets the largest difference
 * between the secure mean and the float mean over all rounds, *bound the
 * rounding bound it must stay under. */
static double fedavg(int secure, double *max_dev, double *bound)
{
    fl_model_spec_t spec;
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_spec_from_dataset(&g_test, &spec), 0);
    assert_int_equal(fl_model_create("logreg", &spec, &m), 0);
    fl_model_init_params(m, 5);
    size_t P = m->params.numel;
    float *x = malloc(P * sizeof *x), *mean = calloc(P, sizeof *mean), *smean = calloc(P, sizeof *smean);
    float *deltas = malloc((size_t)CLIENTS * P * sizeof *deltas);
    uint32_t *words = malloc((size_t)CLIENTS * (P + 1) * sizeof *words);
    const uint32_t *inputs[CLIENTS];
    double w[CLIENTS];
    assert_non_null(x);
    assert_non_null(deltas);
    assert_non_null(words);
    memcpy(x, m->params.data, P * sizeof *x);
    fl_saquant_t q;
    /* clip 1 (logreg's deltas here stay far below it), weights up to 1000 */
    assert_int_equal(fl_saquant_init(&q, CLIENTS, 1.0, 1000), 0);
    *max_dev = 0;
    *bound = 0;
    for (int r = 1; r <= ROUNDS; r++) {
        double wsum = 0;
        for (int c = 0; c < CLIENTS; c++) {
            fl_train_config_t cfg = {0};
            fl_train_stats_t st;
            cfg.epochs = 1;
            cfg.batch = 10;
            cfg.sgd.lr = 0.5f;
            cfg.seed = 1;
            cfg.ids[0] = (uint64_t)r;
            cfg.ids[1] = (uint64_t)c;
            cfg.nids = 2;
            assert_int_equal(fl_model_set_params(m, x, P), 0);
            assert_int_equal(fl_train_run(m, &g_data[c], &cfg, NULL, NULL, &st), 0);
            float *d = deltas + (size_t)c * P;
            for (size_t j = 0; j < P; j++)
                d[j] = m->params.data[j] - x[j];
            w[c] = (double)st.examples;
            wsum += w[c];
        }
        for (size_t j = 0; j < P; j++) {
            double s = 0;
            for (int c = 0; c < CLIENTS; c++)
                s += w[c] * deltas[(size_t)c * P + j];
            mean[j] = (float)(s / wsum);
        }
        if (secure) {
            for (int c = 0; c < CLIENTS; c++) {
                assert_int_equal(fl_saquant_encode(&q, deltas + (size_t)c * P, P, w[c],
                                                   words + (size_t)c * (P + 1)), 0);
                inputs[c] = words + (size_t)c * (P + 1);
            }
            fl_sasim_cfg_t sc = {.n = CLIENTS, .k = CLIENTS - 1, .t = 6, .dim = (uint32_t)P + 1,
                                 .seed = (uint64_t)r, .shared_sign_key = 1, .inputs = inputs,
                                 .substitute_key_of = -1, .lying_revealer = -1,
                                 .tampered_cipher_of = -1, .replay_masked_of = -1};
            fl_sasim_result_t res;
            assert_int_equal(fl_sasim_run(&sc, &res), 0);
            assert_int_equal(res.rc, 0);
            assert_memory_equal(res.sum, res.plain, (P + 1) * sizeof(uint32_t));
            double wt = 0;
            assert_int_equal(fl_saquant_decode(&q, res.sum, P, smean, &wt), 0);
            fl_sasim_result_free(&res);
            assert_true(wt == wsum);
            /* each of the wsum-weighted words is off by at most 1/2 */
            double b = (double)CLIENTS / (2.0 * q.scale * wsum) + 1e-6;
            if (b > *bound)
                *bound = b;
            for (size_t j = 0; j < P; j++) {
                double dev = fabs((double)smean[j] - (double)mean[j]);
                if (dev > *max_dev)
                    *max_dev = dev;
            }
            for (size_t j = 0; j < P; j++)
                x[j] += smean[j];
        } else {
            for (size_t j = 0; j < P; j++)
                x[j] += mean[j];
        }
    }
    fl_train_stats_t ev;
    assert_int_equal(fl_model_set_params(m, x, P), 0);
    assert_int_equal(fl_train_eval(m, &g_test, 100, &ev), 0);
    fl_model_free(m);
    free(x);
    free(mean);
    free(smean);
    free(deltas);
    free(words);
    return ev.metric;
}

static void test_same_accuracy(void **state)
{
    (void)state;
    double dev0, b0, dev, bound;
    double plain = fedavg(0, &dev0, &b0);
    double secure = fedavg(1, &dev, &bound);
    printf("FedAvg logreg, %d clients, %d rounds: plain accuracy %.4f, secure aggregation %.4f; "
           "largest deviation of the secure mean %.3g (bound %.3g)\n",
           CLIENTS, ROUNDS, plain, secure, dev, bound);
    assert_true(plain > 0.7); /* it learned something: three balanced classes start at 1/3 */
    assert_true(dev <= bound);
    assert_true(dev > 0); /* the quantization is really there */
    assert_true(fabs(plain - secure) <= 0.01);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_accuracy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
