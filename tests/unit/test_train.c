/* The trainer: determinism from a seed, data/model mismatches refused,
 * momentum and the callback, and real learning on Fashion-MNIST.
 *
 * `make test` runs the cheap accuracy contracts (logreg 3 epochs >= 83%, mlp
 * 1 epoch, cnn on a 3,000-example subset); `make test-long`
 * (FEDOPT_TEST_LONG=1) adds the full contracts: mlp >= 85.5% and
 * cnn >= 88.5% on the 10,000 test images, B = 20, lr = 0.05, seed 1.
 * Tests that need Fashion-MNIST skip when the Debian package is absent; a
 * BLAS=none build runs only logreg's contract and a short mlp run. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/data/idx.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/conv2d.h"
#include "common/nn/dnnl.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"
#include "common/nn/train.h"
#include "common/nn/workers.h"
#include "tests/support/emulation.h"

static fl_dataset_t train_set, test_set;
static int have_fmnist;

static int load_fmnist(void **state)
{
    (void)state;
    struct stat sb;
    fl_dataset_init(&train_set);
    fl_dataset_init(&test_set);
    if (stat(fl_fmnist_dir(), &sb) != 0)
        return 0;
    if (fl_fmnist_load("train", &train_set) || fl_fmnist_load("test", &test_set))
        return -1;
    have_fmnist = 1;
    return 0;
}

static int free_fmnist(void **state)
{
    (void)state;
    fl_dataset_free(&train_set);
    fl_dataset_free(&test_set);
    return 0;
}

/* A small synthetic classification set of 8x8 "images": class = argmax of 3
 * fixed projections. */
static void synth(fl_dataset_t *d, size_t n, uint64_t seed)
{
    int64_t shape[3] = {1, 8, 8};
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

static void run(const char *model, const fl_dataset_t *d, const fl_train_config_t *cfg,
                uint32_t *crc, double *loss)
{
    fl_model_spec_t s;
    fl_model_t *m;
    assert_int_equal(fl_model_spec_from_dataset(d, &s), 0);
    assert_int_equal(fl_model_create(model, &s, &m), 0);
    fl_model_init_params(m, cfg->seed);
    fl_train_stats_t st;
    assert_int_equal(fl_train_run(m, d, cfg, NULL, NULL, &st), 0);
    *crc = fl_params_crc32(m->params.data, m->params.numel);
    *loss = st.loss;
    fl_model_free(m);
}

/* fl_model_set_threads: conv and LSTM models split batches (resnet18gn, with
 * 11M parameters, its layers), dense-only ones keep one part and thread
 * their GEMMs. */
static void test_threads_choice(void **state)
{
    (void)state;
    for (size_t k = 0; k < fl_models_count(); k++) {
        const fl_model_info_t *info = fl_models_at(k);
        fl_model_t *m;
        assert_int_equal(fl_model_create(info->name, &info->paper, &m), 0);
        assert_int_equal(fl_model_set_threads(m, 2), 0);
        /* Layers only where oneDNN is built in (conv2d's own path has no slices). */
        int layers = !strcmp(info->name, "resnet18gn") && fl__dnnl_available();
        int split = !strcmp(info->name, "cnn") || !strcmp(info->name, "charlstm") ||
                    !strcmp(info->name, "wordlstm") ||
                    (!strcmp(info->name, "resnet18gn") && !layers);
        if (m->parts != (split ? 2 : 1))
            fail_msg("%s: %d parts", info->name, m->parts);
        assert_int_equal(m->threads, 2);
        assert_int_equal(fl_model_gemm_threads(m), split || layers ? 1 : 2);
        assert_true(split ? m->rep != NULL : m->rep == NULL);
        assert_int_equal(fl_workers_count(m->workers), split || layers ? 1 : 0);
        fl_model_free(m);
    }
}

/* A batch split across 3 parts (two replicas on their own threads) gives
 * the loss, metric counts and gradient of the whole batch, for every model
 * and so every loss (splitting forced for the dense ones; EVAL mode, so no
 * dropout draws differ). The charlstm case puts only padding in the last
 * part, whose share of the token-mean is then zero. */
static void test_threads_split_batches(void **state)
{
    (void)state;
    fl_gemm_set_threads(1);
    fl__model_set_split_threshold(0);
    fl__model_set_min_part(1);
    fl__model_set_layer_split(SIZE_MAX); /* batches, resnet18gn's too */
    for (size_t k = 0; k < fl_models_count(); k++) {
        const fl_model_info_t *info = fl_models_at(k);
        fl_model_t *a, *b;
        assert_int_equal(fl_model_create(info->name, &info->paper, &a), 0);
        assert_int_equal(fl_model_create(info->name, &info->paper, &b), 0);
        fl_model_init_params(a, 3);
        fl_model_init_params(b, 3);
        assert_int_equal(fl_model_set_threads(b, 3), 0);
        assert_int_equal(b->parts, 3);
        const size_t n = strcmp(info->name, "resnet18gn") ? 7 : 4;
        const size_t in = fl_model_in_dim(a), ld = a->spec.label_dim;
        float *x = malloc(n * in * sizeof(float));
        int32_t *y = malloc(n * ld * sizeof(int32_t));
        assert_non_null(x);
        assert_non_null(y);
        fl_rng_t r;
        fl_rng_seed(&r, 5 + k);
        for (size_t i = 0; i < n * in; i++)
            x[i] = info->loss == FL_LOSS_SIGMOID_BCE ? (float)(fl_rng_u32(&r) % 50 == 0)
                   : info->loss == FL_LOSS_SEQ_CE   ? (float)fl_rng_below(&r, 90)
                                                    : (float)fl_rng_uniform(&r);
        for (size_t i = 0; i < n * ld; i++)
            y[i] = info->loss == FL_LOSS_SIGMOID_BCE
                       ? (int32_t)(fl_rng_u32(&r) % 100 == 0)
                       : (int32_t)fl_rng_below(&r, (uint64_t)a->spec.num_classes);
        if (info->loss == FL_LOSS_SEQ_CE)
            for (size_t i = (n * 2 / 3) * ld; i < n * ld; i++)
                y[i] = 0; /* the third part: all padding */
        double la, lb;
        fl_loss_stats_t sa = {0, 0}, sb = {0, 0};
        int32_t *ya = info->loss == FL_LOSS_MSE_INPUT ? NULL : y;
        assert_int_equal(fl_model_loss(a, x, ya, n, FL_MODE_EVAL, 1, &la, &sa), 0);
        assert_int_equal(fl_model_loss(b, x, ya, n, FL_MODE_EVAL, 1, &lb, &sb), 0);
        assert_true(fabs(la - lb) <= 1e-6 * (1.0 + fabs(la)));
        assert_true(sa.hits == sb.hits && sa.total == sb.total);
        double gmax = 0.0, dmax = 0.0;
        for (size_t i = 0; i < a->grads.numel; i++) {
            gmax = fmax(gmax, fabs(a->grads.data[i]));
            dmax = fmax(dmax, fabs(a->grads.data[i] - b->grads.data[i]));
        }
        assert_true(gmax > 0.0);
        if (dmax > 2e-5 * gmax)
            fail_msg("%s: gradients of 3 parts differ by %g (largest %g)", info->name, dmax, gmax);
        /* Back to one thread: the replicas go and the result is a's again. */
        assert_int_equal(fl_model_set_threads(b, 1), 0);
        assert_null(b->rep);
        assert_int_equal(fl_model_loss(b, x, ya, n, FL_MODE_EVAL, 1, &lb, NULL), 0);
        assert_true(la == lb);
        assert_int_equal(fl_model_set_threads(b, 0), FL_EINVAL);
        free(x);
        free(y);
        fl_model_free(a);
        fl_model_free(b);
    }
    fl__model_set_split_threshold(-1);
    fl__model_set_min_part(0);
    fl__model_set_layer_split(1);
}

/* A model that splits its layers (resnet18gn by default; cnn forced) on 3
 * threads runs its oneDNN convolutions in output-channel slices and gives
 * the loss and gradient of one thread up to float rounding, in training mode
 * at batch 8 (Winograd on the wide 3x3 layers) and in evaluation at batch 3
 * (direct); the same again on the same threads is bit-identical. */
static void test_threads_split_layers(void **state)
{
    (void)state;
    if (!fl__dnnl_available())
        skip(); /* conv2d's own path has no slices */
    fl_gemm_set_threads(1);
    fl__model_set_split_threshold(0);
    fl__model_set_layer_split(0);
    const char *names[] = {"resnet18gn", "cnn"};
    for (size_t k = 0; k < 2; k++) {
        const fl_model_info_t *info = fl_models_find(names[k]);
        assert_non_null(info);
        fl_model_t *a, *b;
        assert_int_equal(fl_model_create(info->name, &info->paper, &a), 0);
        assert_int_equal(fl_model_create(info->name, &info->paper, &b), 0);
        fl_model_init_params(a, 4);
        fl_model_init_params(b, 4);
        assert_int_equal(fl_model_set_threads(b, 3), 0);
        assert_int_equal(b->parts, 1);
        assert_null(b->rep);
        assert_int_equal(fl_workers_count(b->workers), 2);
        assert_int_equal(fl_model_gemm_threads(b), 1);
        const size_t in = fl_model_in_dim(a), nmax = 8;
        float *x = malloc(nmax * in * sizeof(float));
        int32_t *y = malloc(nmax * sizeof(int32_t));
        float *g1 = malloc(a->grads.numel * sizeof(float));
        assert_non_null(x);
        assert_non_null(y);
        assert_non_null(g1);
        fl_rng_t r;
        fl_rng_seed(&r, 21 + k);
        for (size_t i = 0; i < nmax * in; i++)
            x[i] = (float)fl_rng_uniform(&r) - 0.5f;
        for (size_t i = 0; i < nmax; i++)
            y[i] = (int32_t)fl_rng_below(&r, (uint64_t)a->spec.num_classes);
        for (int pass = 0; pass < 2; pass++) {
            const size_t n = pass ? 3 : nmax;
            const fl_mode_t mode = pass ? FL_MODE_EVAL : FL_MODE_TRAIN;
            /* Training mode draws dropout masks (cnn): the same stream on both. */
            fl_rng_seed(&a->dropout_rng, 9);
            fl_rng_seed(&b->dropout_rng, 9);
            double la, lb, lb2;
            assert_int_equal(fl_model_loss(a, x, y, n, mode, 1, &la, NULL), 0);
            assert_int_equal(fl_model_loss(b, x, y, n, mode, 1, &lb, NULL), 0);
            if (fabs(la - lb) > 1e-5 * (1.0 + fabs(la)))
                fail_msg("%s: loss %.9g on 1 thread, %.9g in slices", info->name, la, lb);
            double gmax = 0.0, dmax = 0.0;
            for (size_t i = 0; i < a->grads.numel; i++) {
                gmax = fmax(gmax, fabs(a->grads.data[i]));
                dmax = fmax(dmax, fabs(a->grads.data[i] - b->grads.data[i]));
            }
            assert_true(gmax > 0.0);
            if (dmax > 2e-5 * gmax)
                fail_msg("%s: gradients in slices differ by %g (largest %g)", info->name, dmax,
                         gmax);
            memcpy(g1, b->grads.data, b->grads.numel * sizeof(float));
            fl_rng_seed(&b->dropout_rng, 9);
            assert_int_equal(fl_model_loss(b, x, y, n, mode, 1, &lb2, NULL), 0);
            assert_true(lb == lb2);
            assert_memory_equal(g1, b->grads.data, b->grads.numel * sizeof(float));
        }
        /* The slices did run: every conv layer at the top level with 32 or
         * more output channels (resnet18gn's stem, cnn's two). */
        int sliced = 0;
        for (size_t i = 0; i < b->nlayers; i++)
            if (!strcmp(b->layers[i]->ops->kind, "conv2d")) {
                assert_true(fl__conv2d_slices(b->layers[i]) >= 2);
                sliced++;
            }
        assert_true(sliced >= 1);
        free(x);
        free(y);
        free(g1);
        fl_model_free(a);
        fl_model_free(b);
    }
    fl__model_set_split_threshold(-1);
    fl__model_set_layer_split(1);
}

/* Training with 2 threads (dropout on, so the replicas' mask streams
 * matter) is reproducible run to run. */
static void test_threads_deterministic(void **state)
{
    (void)state;
    fl_dataset_t d;
    fl_dataset_init(&d);
    synth(&d, 200, 2);
    fl_gemm_set_threads(1);
    uint32_t crc[2];
    for (int rep = 0; rep < 2; rep++) {
        fl_model_spec_t s;
        fl_model_t *m;
        assert_int_equal(fl_model_spec_from_dataset(&d, &s), 0);
        assert_int_equal(fl_model_create("cnn", &s, &m), 0);
        assert_int_equal(fl_model_set_threads(m, 2), 0);
        fl_model_init_params(m, 4);
        fl_train_config_t cfg = {.epochs = 1, .batch = 10, .sgd = {.lr = 0.05f}, .seed = 4};
        fl_train_stats_t st;
        assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, &st), 0);
        assert_true(isfinite(st.loss));
        crc[rep] = fl_params_crc32(m->params.data, m->params.numel);
        fl_model_free(m);
    }
    assert_int_equal(crc[0], crc[1]);
    fl_dataset_free(&d);
}

/* The split parts run on workers made once by fl_model_set_threads: a
 * training run starts no thread, and its parameters are bit-identical to the
 * same run with every part on the calling thread (what any thread layout
 * gives, the per-step threads of before included), for 3 parts with dropout
 * on and two epochs of steps. */
static void test_threads_pool(void **state)
{
    (void)state;
    fl_dataset_t d;
    fl_dataset_init(&d);
    synth(&d, 240, 7);
    fl_gemm_set_threads(1);
    fl__model_set_split_threshold(0); /* cnn on 8x8 images would not split */
    uint32_t crc[2];
    for (int inline_parts = 0; inline_parts < 2; inline_parts++) {
        fl_model_spec_t s;
        fl_model_t *m;
        assert_int_equal(fl_model_spec_from_dataset(&d, &s), 0);
        assert_int_equal(fl_model_create("cnn", &s, &m), 0);
        unsigned long before = fl__workers_started();
        assert_int_equal(fl_model_set_threads(m, 3), 0);
        assert_int_equal(m->parts, 3);
        assert_int_equal(fl_workers_count(m->workers), 2);
        assert_int_equal(fl__workers_started() - before, 2);
        if (inline_parts) {
            fl_workers_free(m->workers);
            m->workers = NULL;
        }
        fl_model_init_params(m, 11);
        fl_train_config_t cfg = {.epochs = 2, .batch = 24, .sgd = {.lr = 0.05f}, .seed = 11};
        fl_train_stats_t st;
        before = fl__workers_started();
        assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, &st), 0);
        assert_int_equal(fl__workers_started(), before);
        assert_int_equal(st.steps, 10);
        assert_true(isfinite(st.loss));
        crc[inline_parts] = fl_params_crc32(m->params.data, m->params.numel);
        /* A new thread count replaces the workers; 1 drops them. */
        assert_int_equal(fl_model_set_threads(m, 2), 0);
        assert_int_equal(fl_workers_count(m->workers), 1);
        assert_int_equal(fl_model_set_threads(m, 1), 0);
        assert_null(m->workers);
        fl_model_free(m);
    }
    fl__model_set_split_threshold(-1);
    assert_int_equal(crc[0], crc[1]);
    fl_dataset_free(&d);
}

static void test_deterministic(void **state)
{
    (void)state;
    fl_dataset_t d;
    fl_dataset_init(&d);
    synth(&d, 300, 1);
    fl_gemm_set_threads(1);
    const char *models[] = {"logreg", "mlp", "cnn"};
    for (int k = 0; k < 3; k++) {
        fl_train_config_t cfg = {.epochs = 2, .batch = 16, .sgd = {.lr = 0.05f, .momentum = 0.5f},
                                 .seed = 7, .ids = {3, 4}, .nids = 2};
        uint32_t a, b, c;
        double la, lb, lc;
        run(models[k], &d, &cfg, &a, &la);
        run(models[k], &d, &cfg, &b, &lb);
        assert_int_equal(a, b);
        assert_true(la == lb);
        /* Another stream tuple shuffles (and drops out) differently. */
        cfg.ids[1] = 5;
        run(models[k], &d, &cfg, &c, &lc);
        assert_int_not_equal(a, c);
    }
    fl_dataset_free(&d);
}

/* max_steps: training stops after that many SGD steps, on the first batches
 * of the shuffled order, and the stats report the examples actually used. The
 * capped run equals, bit for bit, an uncapped epoch over exactly those
 * examples in that order. */
static void test_max_steps(void **state)
{
    (void)state;
    fl_dataset_t d, sub;
    fl_dataset_init(&d);
    fl_dataset_init(&sub);
    synth(&d, 100, 3);
    fl_gemm_set_threads(1);
    fl_model_spec_t spec;
    assert_int_equal(fl_model_spec_from_dataset(&d, &spec), 0);
    fl_model_t *a, *b, *c;
    assert_int_equal(fl_model_create("logreg", &spec, &a), 0);
    assert_int_equal(fl_model_create("logreg", &spec, &b), 0);
    assert_int_equal(fl_model_create("logreg", &spec, &c), 0);
    fl_model_init_params(a, 1);
    fl_model_init_params(b, 1);
    fl_model_init_params(c, 1);
    fl_train_config_t cfg = {.epochs = 2, .batch = 10, .sgd = {.lr = 0.1f}, .seed = 9, .ids = {1, 2, 3}, .nids = 3,
                             .max_steps = 3};
    fl_train_stats_t st;
    assert_int_equal(fl_train_run(a, &d, &cfg, NULL, NULL, &st), 0);
    assert_int_equal(st.steps, 3);
    assert_int_equal(st.examples, 30);
    assert_true(st.weight == 30);
    /* The same three batches by hand: epoch 1's shuffle, its first 30 examples, in order. */
    uint32_t idx[100];
    for (uint32_t i = 0; i < 100; i++)
        idx[i] = i;
    uint64_t tuple[5] = {1, 2, 3, FL_RNG_SHUFFLE, 1};
    fl_rng_t r;
    fl_rng_stream(&r, 9, tuple, 5);
    fl_rng_shuffle_u32(&r, idx, 100);
    assert_int_equal(fl_dataset_subset(&d, idx, 30, &sub), 0);
    fl_train_config_t one = cfg;
    one.epochs = 1;
    one.max_steps = 0;
    fl_sgd_t opt;
    assert_int_equal(fl_sgd_init(&opt, &one.sgd, &b->params), 0);
    fl_train_stats_t sb;
    assert_int_equal(fl_train_epoch(b, &opt, &sub, 10, NULL, &sb), 0);
    fl_sgd_free(&opt);
    assert_int_equal(sb.steps, 3);
    assert_memory_equal(a->params.data, b->params.data, a->params.numel * sizeof(float));
    /* Four steps differ from three. */
    cfg.max_steps = 4;
    assert_int_equal(fl_train_run(c, &d, &cfg, NULL, NULL, &st), 0);
    assert_true(memcmp(a->params.data, c->params.data, a->params.numel * sizeof(float)) != 0);
    /* 15 steps over two epochs of 10: the second epoch stops after 5, and the
     * client used all 100 examples. */
    fl_model_init_params(a, 1);
    cfg.max_steps = 15;
    assert_int_equal(fl_train_run(a, &d, &cfg, NULL, NULL, &st), 0);
    assert_int_equal(st.steps, 5);
    assert_int_equal(st.examples, 100);
    /* A cap at or beyond the full run changes nothing. */
    fl_model_init_params(a, 1);
    fl_model_init_params(b, 1);
    cfg.max_steps = 20;
    assert_int_equal(fl_train_run(a, &d, &cfg, NULL, NULL, &st), 0);
    assert_int_equal(st.steps, 10);
    cfg.max_steps = 0;
    assert_int_equal(fl_train_run(b, &d, &cfg, NULL, NULL, &st), 0);
    assert_memory_equal(a->params.data, b->params.data, a->params.numel * sizeof(float));
    fl_model_free(a);
    fl_model_free(b);
    fl_model_free(c);
    fl_dataset_free(&sub);
    fl_dataset_free(&d);
}

/* Models train concurrently in threads of one process (the fleet's worker
 * pool): with one GEMM thread each, four threads training two models twice
 * reproduce the sequential results bit for bit. */
static fl_dataset_t conc_data;
static uint32_t conc_crc[4];

static void *conc_worker(void *arg)
{
    long k = (long)arg;
    double loss;
    fl_train_config_t cfg = {.epochs = 1, .batch = 10, .sgd = {.lr = 0.05f}, .seed = 9};
    run(k % 2 ? "cnn" : "mlp", &conc_data, &cfg, &conc_crc[k], &loss);
    return NULL;
}

static void test_concurrent_models(void **state)
{
    (void)state;
    fl_dataset_init(&conc_data);
    synth(&conc_data, 200, 6);
    fl_gemm_set_threads(1);
    conc_worker((void *)0);
    conc_worker((void *)1);
    uint32_t mlp = conc_crc[0], cnn = conc_crc[1];
    memset(conc_crc, 0, sizeof conc_crc);
    pthread_t t[4];
    for (long k = 0; k < 4; k++)
        assert_int_equal(pthread_create(&t[k], NULL, conc_worker, (void *)k), 0);
    for (int k = 0; k < 4; k++)
        pthread_join(t[k], NULL);
    assert_int_equal(conc_crc[0], mlp);
    assert_int_equal(conc_crc[2], mlp);
    assert_int_equal(conc_crc[1], cnn);
    assert_int_equal(conc_crc[3], cnn);
    fl_dataset_free(&conc_data);
}

static int count_cb(int epoch, const fl_train_stats_t *st, void *ud)
{
    int *calls = ud;
    (*calls)++;
    assert_int_equal(epoch, *calls);
    assert_int_equal(st->examples, 300);
    assert_int_equal(st->steps, 10); /* 300 / 32 rounded up: the last batch is partial */
    return epoch == 2;               /* stop after the second */
}

static void test_learns_and_callback(void **state)
{
    (void)state;
    fl_dataset_t d;
    fl_dataset_init(&d);
    synth(&d, 300, 2);
    fl_model_spec_t s;
    fl_model_t *m;
    fl_model_spec_from_dataset(&d, &s);
    assert_int_equal(fl_model_create("mlp", &s, &m), 0);
    fl_model_init_params(m, 1);
    fl_train_stats_t before, after;
    assert_int_equal(fl_train_eval(m, &d, 64, &before), 0);
    assert_int_equal(before.examples, 300);
    fl_train_config_t cfg = {.epochs = 5, .batch = 32, .sgd = {.lr = 0.1f}, .seed = 1};
    int calls = 0;
    assert_int_equal(fl_train_run(m, &d, &cfg, count_cb, &calls, NULL), FL_ECANCELED);
    assert_int_equal(calls, 2);
    cfg.epochs = 80;
    assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, NULL), 0);
    assert_int_equal(fl_train_eval(m, &d, 64, &after), 0);
    printf("mlp on synthetic data: loss %.4f -> %.4f, accuracy %.3f -> %.3f\n", before.loss, after.loss, before.metric, after.metric);
    assert_true(after.loss < before.loss * 0.7);
    assert_true(after.metric > 0.85);
    fl_model_free(m);
    fl_dataset_free(&d);
}

static void test_mismatch_refused(void **state)
{
    (void)state;
    fl_dataset_t d;
    fl_dataset_init(&d);
    synth(&d, 10, 3);
    fl_model_t *m;
    fl_model_spec_t s = {.input = {.ndim = 1, .d = {20}}, .num_classes = 3, .label_dim = 1};
    assert_int_equal(fl_model_create("logreg", &s, &m), 0);
    fl_train_stats_t st;
    assert_int_equal(fl_train_eval(m, &d, 4, &st), FL_ESHAPE); /* 64 features, not 20 */
    fl_model_free(m);
    s.input = (fl_shape_t){.ndim = 3, .d = {1, 8, 8}};
    s.num_classes = 2;
    assert_int_equal(fl_model_create("logreg", &s, &m), 0);
    assert_int_equal(fl_train_eval(m, &d, 4, &st), FL_ESHAPE); /* 3 classes, 2 outputs */
    fl_model_free(m);
    /* cnn needs an image; 1-D input is refused at creation. */
    s.input = (fl_shape_t){.ndim = 1, .d = {64}};
    assert_int_equal(fl_model_create("cnn", &s, &m), FL_ESHAPE);
    assert_int_equal(fl_model_create("nosuch", &s, &m), FL_ENOTFOUND);
    /* An exploding learning rate is reported, not silently continued. */
    s.input = (fl_shape_t){.ndim = 3, .d = {1, 8, 8}};
    s.num_classes = 3;
    assert_int_equal(fl_model_create("mlp", &s, &m), 0);
    fl_model_init_params(m, 1);
    fl_train_config_t cfg = {.epochs = 3, .batch = 2, .sgd = {.lr = 1e30f}, .seed = 1};
    assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, NULL), FL_ENONFINITE);
    fl_model_free(m);
    fl_dataset_free(&d);
}

/* The autoencoder and bowlr train too: loss falls on data of their shapes. */
static void test_other_losses_learn(void **state)
{
    (void)state;
    /* autoencoder on 200 synthetic 28x28 "images" with 4 prototypes */
    fl_dataset_t d;
    fl_dataset_init(&d);
    int64_t shape[3] = {1, 28, 28};
    assert_int_equal(fl_dataset_alloc(&d, 200, 3, shape, 1), 0);
    for (size_t i = 0; i < 200; i++)
        for (size_t j = 0; j < 784; j++)
            d.x[i * 784 + j] = ((j / 28) % 4 == i % 4) ? 0.9f : 0.1f;
    fl_model_spec_t s;
    fl_model_t *m;
    fl_model_spec_from_dataset(&d, &s);
    assert_int_equal(fl_model_create("autoencoder", &s, &m), 0);
    fl_model_init_params(m, 1);
    fl_train_stats_t a, b;
    assert_int_equal(fl_train_eval(m, &d, 50, &a), 0);
    assert_true(isnan(a.metric));
    fl_train_config_t cfg = {.epochs = 10, .batch = 10, .sgd = {.lr = 10.0f}, .seed = 1};
    assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, NULL), 0);
    assert_int_equal(fl_train_eval(m, &d, 50, &b), 0);
    printf("autoencoder: MSE %.5f -> %.5f\n", a.loss, b.loss);
    /* Deep sigmoid stacks leave their initial plateau slowly, so the bar is a
     * fifth off the starting MSE (the printed line shows both; the value seen
     * when the bound was set is in docs/benchmarks.md). */
    assert_true(b.loss < 0.8 * a.loss);
    fl_model_free(m);
    fl_dataset_free(&d);
    /* bowlr: 8 tags, 40 words; tag t is on when word t is present */
    fl_dataset_init(&d);
    int64_t ws[1] = {40};
    assert_int_equal(fl_dataset_alloc(&d, 400, 1, ws, 8), 0);
    free(d.y);
    d.label_dim = 8;
    d.y = calloc(400 * 8, sizeof(int32_t));
    fl_rng_t r;
    fl_rng_seed(&r, 4);
    for (size_t i = 0; i < 400; i++)
        for (size_t j = 0; j < 40; j++) {
            d.x[i * 40 + j] = fl_rng_uniform(&r) < 0.15 ? 1.0f : 0.0f;
            if (j < 8)
                d.y[i * 8 + j] = d.x[i * 40 + j] > 0;
        }
    fl_model_spec_from_dataset(&d, &s);
    assert_int_equal(s.label_dim, 8);
    assert_int_equal(fl_model_create("bowlr", &s, &m), 0);
    fl_model_init_params(m, 1);
    assert_int_equal(fl_train_eval(m, &d, 50, &a), 0);
    cfg = (fl_train_config_t){.epochs = 20, .batch = 10, .sgd = {.lr = 1.0f}, .seed = 1};
    assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, NULL), 0);
    assert_int_equal(fl_train_eval(m, &d, 50, &b), 0);
    printf("bowlr: BCE %.4f -> %.4f, recall@5 %.3f -> %.3f\n", a.loss, b.loss, a.metric, b.metric);
    assert_true(b.loss < 0.5 * a.loss);
    assert_true(b.metric > 0.95); /* recall@5: the true tags rank on top */
    fl_model_free(m);
    fl_dataset_free(&d);
}

/* Trains `model` on Fashion-MNIST (the first `limit` training images, 0 = all)
 * with the settings and returns the accuracy on the first `tests`
 * test images (0 = all 10,000). */
static double fmnist_accuracy_on(const char *model, int epochs, size_t limit, size_t tests)
{
    fl_dataset_t te = test_set;
    if (tests && tests < te.n)
        te.n = tests;
    fl_dataset_t tr = train_set;
    if (limit && limit < tr.n)
        tr.n = limit;
    fl_model_spec_t s;
    fl_model_t *m;
    fl_model_spec_from_dataset(&tr, &s);
    assert_int_equal(fl_model_create(model, &s, &m), 0);
    fl_model_init_params(m, 1);
    fl_train_config_t cfg = {.epochs = epochs, .batch = 20, .sgd = {.lr = 0.05f}, .seed = 1};
    fl_train_stats_t st, ev;
    assert_int_equal(fl_train_run(m, &tr, &cfg, NULL, NULL, &st), 0);
    assert_int_equal(fl_train_eval(m, &te, 500, &ev), 0);
    assert_int_equal(ev.examples, te.n);
    printf("fmnist %s: %d epoch(s) on %zu examples: train loss %.4f, test loss %.4f, test "
           "accuracy %.4f on %zu (%.0f samples/s)\n",
           model, epochs, tr.n, st.loss, ev.loss, ev.metric, te.n, (double)st.examples / st.seconds);
    fl_model_free(m);
    return ev.metric;
}

static double fmnist_accuracy(const char *model, int epochs, size_t limit)
{
    return fmnist_accuracy_on(model, epochs, limit, 0);
}

static void test_fmnist_cheap(void **state)
{
    (void)state;
    if (!have_fmnist)
        skip();
    fl_gemm_set_threads(1);
    /* The contract for logreg, in full: 3 epochs >= 83%. */
    assert_true(fmnist_accuracy("logreg", 3, 0) >= 0.83);
    if (fl_emu_active()) {
        /* Under qemu-user (make test-cross) a full mlp epoch and the cnn on
         * 3,000 images take the better part of an hour. The same short mlp
         * run as the portable-GEMM build's, and the cnn on 1,000 images: each
         * bar well above chance (10%) and under what the native build
         * reaches on the same data (docs/devices.md); the cnn's gradient
         * checks (test_nn) run in full under emulation. */
        fl_emu_note("fmnist: mlp 1 epoch on 5,000 images (>= 60%%) instead of 60,000 (>= 82%%); "
                    "cnn 1 epoch on 1,000 images (>= 40%% of the first 1,000 test images) instead of 3,000 "
                    "(>= 60%% of all 10,000)");
        assert_true(fmnist_accuracy("mlp", 1, 5000) >= 0.60);
        assert_true(fmnist_accuracy_on("cnn", 1, 1000, 1000) >= 0.40);
        return;
    }
#if !FL_HAVE_OPENBLAS
    /* The portable GEMM (make BLAS=none) is far slower than OpenBLAS: a
     * full mlp epoch and the cnn would take many minutes. A short mlp run
     * still shows the engine learns (60% is well above chance and below
     * what it reaches; docs/benchmarks.md has the value); the gradient
     * checks cover conv2d in that build. */
    assert_true(fmnist_accuracy("mlp", 1, 5000) >= 0.60);
    return;
#endif
    /* mlp after one epoch: 82% sits just under what it reaches
     * (docs/benchmarks.md), leaving room for BLAS rounding. */
    assert_true(fmnist_accuracy("mlp", 1, 0) >= 0.82);
    /* cnn on 3,000 images, 1 epoch: the first epoch at lr 0.05 is noisy, so
     * the bar is well under what it reaches (docs/benchmarks.md). This says
     * the cnn learns; the gradient checks say it is right, and test-long
     * holds the 88.5% contract. */
    assert_true(fmnist_accuracy("cnn", 1, 3000) >= 0.60);
}

static void test_fmnist_long(void **state)
{
    (void)state;
    if (!have_fmnist || !getenv("FEDOPT_TEST_LONG") || !FL_HAVE_OPENBLAS)
        skip();
    fl_gemm_set_threads(1);
    assert_true(fmnist_accuracy("mlp", 3, 0) >= 0.855);
    assert_true(fmnist_accuracy("cnn", 3, 0) >= 0.885);
}

int main(void)
{
    fl_log_set_level(FL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_max_steps),
        cmocka_unit_test(test_threads_choice),
        cmocka_unit_test(test_threads_split_batches),
        cmocka_unit_test(test_threads_split_layers),
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_threads_pool),
        cmocka_unit_test(test_concurrent_models),
        cmocka_unit_test(test_learns_and_callback),
        cmocka_unit_test(test_mismatch_refused),
        cmocka_unit_test(test_other_losses_learn),
        cmocka_unit_test(test_fmnist_cheap),
        cmocka_unit_test(test_fmnist_long),
    };
    return cmocka_run_group_tests(tests, load_fmnist, free_fmnist);
}
