/* resnet18gn learns (FEDOPT_TEST_LONG=1 only; a few minutes on 2 cores): the
 * test writes CIFAR-10 binary batches of a synthetic 10-class image task
 * (a colour and a stripe orientation per class, plus pixel noise), loads them
 * with the CIFAR reader, applies the paper's preprocessing (random 24x24
 * crops + flips for training, central crops for testing, per-image
 * standardization) and trains 240 SGD steps of batch 4 (8 epochs of 120) at
 * lr 0.01. The training loss must fall to under half its first-epoch value
 * (in one of the last three epochs), the test loss to under 0.6 of the
 * untrained model's, and the test accuracy must be far above chance (10%).
 * The test prints its losses and accuracies; the values seen so far are in
 * docs/benchmarks.md. lr 0.01, because a higher rate at batch 4 made the
 * result on this task swing with nothing but float rounding changed. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/data/augment.h"
#include "common/data/cifar.h"
#include "common/nn/models.h"
#include "common/nn/train.h"
#include "tests/support/datafiles.h"

enum { PER_BATCH = 24, TEST_N = 100, B = 4, EPOCHS = 8 };

/* One record: label byte, then R, G, B planes of 32x32 bytes. */
static void make_record(unsigned char *rec, int label, fl_rng_t *r)
{
    static const float palette[10][3] = {{.9f, .1f, .1f}, {.1f, .9f, .1f}, {.1f, .1f, .9f},
                                         {.9f, .9f, .1f}, {.9f, .1f, .9f}, {.1f, .9f, .9f},
                                         {.5f, .5f, .5f}, {.9f, .5f, .1f}, {.1f, .5f, .9f},
                                         {.5f, .1f, .5f}};
    rec[0] = (unsigned char)label;
    for (int c = 0; c < 3; c++)
        for (int h = 0; h < 32; h++)
            for (int w = 0; w < 32; w++) {
                int stripe = ((label < 5 ? h : w) / 4) & 1;
                float v = palette[label][c] * (stripe ? 1.0f : 0.6f) +
                          0.3f * ((float)fl_rng_uniform(r) - 0.5f);
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                rec[1 + (c * 32 + h) * 32 + w] = (unsigned char)(v * 255.0f + 0.5f);
            }
}

static void write_batch(const char *dir, const char *name, int n, fl_rng_t *r)
{
    unsigned char *buf = malloc((size_t)n * 3073);
    assert_non_null(buf);
    for (int i = 0; i < n; i++)
        make_record(buf + (size_t)i * 3073, (int)fl_rng_below(r, 10), r);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(fl_test_write(path, buf, (size_t)n * 3073, 0), 0);
    free(buf);
}

static double epoch_loss[EPOCHS + 1];

static int on_epoch(int epoch, const fl_train_stats_t *st, void *ud)
{
    (void)ud;
    epoch_loss[epoch] = st->loss;
    fprintf(stderr, "resnet18gn epoch %d: train loss %.4f, accuracy %.3f, %zu steps, %.1f samples/s\n",
            epoch, st->loss, st->metric, st->steps, (double)st->examples / st->seconds);
    return 0;
}

static void test_resnet_learns(void **state)
{
    (void)state;
    if (!getenv("FEDOPT_TEST_LONG") || strcmp(getenv("FEDOPT_TEST_LONG"), "1") != 0) {
        fprintf(stderr, "skipped: set FEDOPT_TEST_LONG=1 (make test-long)\n");
        skip();
    }
    char dir[256];
    assert_int_equal(fl_test_mkdtemp(dir, sizeof dir), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 2021);
    for (int b = 1; b <= 5; b++) {
        char name[32];
        snprintf(name, sizeof name, "data_batch_%d.bin", b);
        write_batch(dir, name, PER_BATCH, &r);
    }
    write_batch(dir, "test_batch.bin", TEST_N, &r);
    fl_dataset_t raw_tr, raw_te, tr, te;
    fl_dataset_init(&raw_tr);
    fl_dataset_init(&raw_te);
    fl_dataset_init(&tr);
    fl_dataset_init(&te);
    assert_int_equal(fl_cifar_load(dir, 10, "train", &raw_tr), 0);
    assert_int_equal(fl_cifar_load(dir, 10, "test", &raw_te), 0);
    assert_int_equal(raw_tr.n, 5 * PER_BATCH);
    fl_rng_t aug;
    const uint64_t id = FL_RNG_AUGMENT;
    fl_rng_stream(&aug, 7, &id, 1);
    assert_int_equal(fl_augment_dataset(&raw_tr, 24, 1, &aug, &tr), 0);
    assert_int_equal(fl_augment_dataset(&raw_te, 24, 0, NULL, &te), 0);
    fl_model_spec_t spec;
    assert_int_equal(fl_model_spec_from_dataset(&tr, &spec), 0);
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create("resnet18gn", &spec, &m), 0);
    assert_int_equal(m->params.numel, 11181642);
    fl_model_init_params(m, 1);
    fl_train_stats_t ev0;
    assert_int_equal(fl_train_eval(m, &te, 50, &ev0), 0);
    fl_train_config_t cfg = {.epochs = EPOCHS, .batch = B,
                             .sgd = {.lr = 0.01f, .weight_decay = 1e-4f}, .seed = 3};
    fl_train_stats_t last;
    assert_int_equal(fl_train_run(m, &tr, &cfg, on_epoch, NULL, &last), 0);
    fl_train_stats_t ev;
    assert_int_equal(fl_train_eval(m, &te, 50, &ev), 0);
    fprintf(stderr, "resnet18gn: %d steps; test loss %.4f -> %.4f, test accuracy %.3f -> %.3f\n",
            EPOCHS * (5 * PER_BATCH / B), ev0.loss, ev.loss, ev0.metric, ev.metric);
    assert_true(EPOCHS * (5 * PER_BATCH / B) >= 240);
    /* The training loss of one epoch at batch 4 is noisy: changes that
     * moved the gradients by rounding alone have made the last epoch's loss
     * spike while the final model still scored perfectly on the test set
     * (docs/benchmarks.md). So the loss must have
     * fallen under half its first-epoch value in one of the last three
     * epochs, and the final model is judged on the held-out set below. */
    double late = epoch_loss[EPOCHS];
    for (int e = EPOCHS - 2; e < EPOCHS; e++)
        late = epoch_loss[e] < late ? epoch_loss[e] : late;
    assert_true(late < 0.5 * epoch_loss[1]);
    assert_true(ev.loss < 0.6 * ev0.loss);
    assert_true(ev.metric >= 0.8);
    fl_model_free(m);
    fl_dataset_free(&raw_tr);
    fl_dataset_free(&raw_te);
    fl_dataset_free(&tr);
    fl_dataset_free(&te);
    fl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resnet_learns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
