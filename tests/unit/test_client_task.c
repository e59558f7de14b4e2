/* The client task (client/task): training, evaluation and encoding without a
 * socket, checked against the engine run by hand.
 *
 * - the delta is bit for bit (fl_train_run's parameters - global) for the
 *   same shard, model, settings and stream ids, and the global buffer is
 *   left as it was;
 * - the same seed ids give the same delta, another client id another one;
 * - the offer's ClientOpt settings become the training settings (defaults
 *   when absent) with the stream tuple {run, round, client};
 * - the encoded Update carries the examples as weight and the training's
 *   statistics, and the delta transfer equals encoding the delta directly;
 * - an evaluation equals fl_train_eval on the same first examples;
 * - an unknown model, a parameter count that is not the model's, an empty
 *   or out-of-range shard and missing inputs are refused with their codes
 *   and a reason;
 * - the fitting models of 28x28 images include logreg and cnn, and nothing
 *   fits labels the models cannot take;
 * - a workspace reuses its model (one build for many tasks) and every task
 *   on it, trainings with dropout or momentum and evaluations alike, gives
 *   bit for bit what a fresh model gives; another model or shape replaces
 *   it; a failed task leaves it usable; its result's delta is the
 *   workspace's, untouched by slim and free. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/task.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/nn/gemm.h"

#define N 240
#define SHARD 120

static fl_dataset_t data;
static uint32_t shard[SHARD];
static float *global;
static size_t numel;

static int setup(void **state)
{
    (void)state;
    fl_log_set_level(FL_LOG_ERROR);
    fl_gemm_set_threads(1);
    int64_t shape[3] = {1, 28, 28};
    fl_dataset_init(&data);
    if (fl_dataset_alloc(&data, N, 3, shape, 10))
        return -1;
    fl_rng_t r;
    fl_rng_seed(&r, 21);
    for (size_t i = 0; i < data.n * data.dim; i++)
        data.x[i] = (float)fl_rng_uniform(&r);
    for (size_t i = 0; i < data.n; i++)
        data.y[i] = (int32_t)fl_rng_below(&r, 10);
    /* The client's shard: every other example, from the second on. */
    for (size_t i = 0; i < SHARD; i++)
        shard[i] = (uint32_t)(2 * i + 1);
    fl_model_spec_t spec;
    fl_model_t *m = NULL;
    if (fl_model_spec_from_dataset(&data, &spec) || fl_model_create("logreg", &spec, &m))
        return -1;
    fl_model_init_params(m, 3);
    numel = m->params.numel;
    global = fl_task_alloc_params(numel);
    if (!global)
        return -1;
    memcpy(global, m->params.data, numel * sizeof(float));
    fl_model_free(m);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(global);
    fl_dataset_free(&data);
    return 0;
}

static fl_task_in_t input(void)
{
    fl_task_in_t in = {.model = "logreg", .data = &data, .index = shard, .nindex = SHARD, .global = global,
                       .n = numel, .gemm_threads = 1};
    return in;
}

static void settings(uint64_t client, fl_train_config_t *cfg)
{
    Fedopt__ClientOptSettings os = FEDOPT__CLIENT_OPT_SETTINGS__INIT;
    os.learning_rate = 0.05;
    os.epochs = 2;
    os.batch_size = 16;
    os.seed = 9;
    fl_task_config(&os, 3, 4, client, cfg);
}

static void test_config(void **state)
{
    (void)state;
    fl_train_config_t c;
    Fedopt__ClientOptSettings os = FEDOPT__CLIENT_OPT_SETTINGS__INIT;
    os.learning_rate = 0.25;
    os.momentum = 0.5;
    os.weight_decay = 0.001;
    os.epochs = 3;
    os.batch_size = 7;
    os.seed = 42;
    os.max_steps = 11;
    fl_task_config(&os, 5, 6, 7, &c);
    assert_int_equal(c.epochs, 3);
    assert_int_equal(c.batch, 7);
    assert_true(c.sgd.lr == 0.25f && c.sgd.momentum == 0.5f && c.sgd.weight_decay == 0.001f);
    assert_int_equal(c.seed, 42);
    assert_int_equal(c.max_steps, 11);
    assert_int_equal(c.nids, 3);
    assert_int_equal(c.ids[0], 5);
    assert_int_equal(c.ids[1], 6);
    assert_int_equal(c.ids[2], 7);
    /* No settings: one epoch of batches of 20 at learning rate 0. */
    fl_task_config(NULL, 1, 2, 3, &c);
    assert_int_equal(c.epochs, 1);
    assert_int_equal(c.batch, 20);
    assert_true(c.sgd.lr == 0);
    assert_int_equal(c.max_steps, 0);
    assert_int_equal(c.ids[2], 3);
}

static void test_delta_is_trained_minus_global(void **state)
{
    (void)state;
    fl_train_config_t cfg;
    settings(8, &cfg);
    float *before = malloc(numel * sizeof(float));
    assert_non_null(before);
    memcpy(before, global, numel * sizeof(float));

    fl_task_in_t in = input();
    fl_task_result_t res;
    char why[200] = "";
    assert_int_equal(fl_task_train(&in, &cfg, &res, why, sizeof why), 0);
    assert_int_equal(res.n, numel);
    assert_non_null(res.delta);
    assert_memory_equal(global, before, numel * sizeof(float)); /* only read */

    /* The same training by hand: the shard, the model, the engine. */
    fl_dataset_t local;
    fl_dataset_init(&local);
    assert_int_equal(fl_dataset_subset(&data, shard, SHARD, &local), 0);
    fl_model_spec_t spec;
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_spec_from_dataset(&local, &spec), 0);
    assert_int_equal(fl_model_create("logreg", &spec, &m), 0);
    assert_int_equal(fl_model_set_threads(m, 1), 0);
    assert_int_equal(fl_model_set_params(m, global, numel), 0);
    fl_train_stats_t st;
    assert_int_equal(fl_train_run(m, &local, &cfg, NULL, NULL, &st), 0);
    size_t changed = 0;
    for (size_t i = 0; i < numel; i++) {
        float want = m->params.data[i] - global[i];
        if (memcmp(&want, &res.delta[i], sizeof want) != 0)
            fail_msg("delta[%zu] = %.9g, trained - global = %.9g", i, (double)res.delta[i], (double)want);
        changed += want != 0;
    }
    assert_true(changed > numel / 2); /* training moved the model */
    assert_int_equal(res.st.examples, st.examples);
    assert_int_equal(res.st.examples, SHARD); /* the update's weight: examples, not visits */
    assert_int_equal(res.samples, 2 * SHARD); /* the work: both epochs' visits */
    assert_true(res.seconds >= res.st.seconds && res.seconds > 0);
    assert_int_equal(res.st.steps, st.steps);
    assert_true(res.st.loss == st.loss);
    assert_true(isfinite(res.st.loss) && res.st.loss > 0);

    fl_model_free(m);
    fl_dataset_free(&local);
    fl_task_result_free(&res);
    assert_null(res.delta);
    assert_null(res.model);
    fl_task_result_free(&res); /* twice is harmless */
    fl_task_result_free(NULL);
    free(before);
}

/* A step cap ends the second epoch early: samples count the batches trained
 * (8 of 16 covering the 120 examples, then 2 more), the weight the distinct
 * examples. */
static void test_samples_under_step_cap(void **state)
{
    (void)state;
    fl_train_config_t cfg;
    settings(8, &cfg);
    cfg.max_steps = 10;
    fl_task_in_t in = input();
    fl_task_result_t res;
    assert_int_equal(fl_task_train(&in, &cfg, &res, NULL, 0), 0);
    assert_int_equal(res.st.examples, SHARD);
    assert_int_equal(res.samples, SHARD + 2 * 16);
    fl_task_result_free(&res);
}

static void test_same_seed_ids_same_delta(void **state)
{
    (void)state;
    fl_train_config_t cfg;
    settings(8, &cfg);
    fl_task_in_t in = input();
    fl_task_result_t a, b, c;
    assert_int_equal(fl_task_train(&in, &cfg, &a, NULL, 0), 0);
    assert_int_equal(fl_task_train(&in, &cfg, &b, NULL, 0), 0);
    assert_memory_equal(a.delta, b.delta, numel * sizeof(float));
    assert_true(a.st.loss == b.st.loss);
    /* Another client id is another shuffle stream: another delta. */
    settings(9, &cfg);
    assert_int_equal(fl_task_train(&in, &cfg, &c, NULL, 0), 0);
    assert_true(memcmp(a.delta, c.delta, numel * sizeof(float)) != 0);
    fl_task_result_free(&a);
    fl_task_result_free(&b);
    fl_task_result_free(&c);
}

static void test_encode_update(void **state)
{
    (void)state;
    fl_train_config_t cfg;
    settings(8, &cfg);
    fl_task_in_t in = input();
    fl_task_result_t res;
    assert_int_equal(fl_task_train(&in, &cfg, &res, NULL, 0), 0);
    fl_buf_t *up = NULL, *delta = NULL, *want = NULL;
    const uint32_t chunk = 4096;
    assert_int_equal(fl_task_encode_update(12, &res, chunk, &up, &delta, NULL, 0), 0);
    assert_non_null(up);
    assert_non_null(delta);

    Fedopt__Envelope *env = NULL;
    char why[200] = "";
    assert_int_equal(fl_wire_decode(up->data + FL_WIRE_HEADER, up->len - FL_WIRE_HEADER, &env, why, sizeof why), 0);
    assert_int_equal(env->msg_case, FEDOPT__ENVELOPE__MSG_UPDATE);
    assert_int_equal(env->update->round_id, 12);
    assert_int_equal(env->update->num_examples, res.st.examples);
    assert_true(env->update->weight == (double)res.st.examples);
    assert_true(env->update->train_loss == res.st.loss);
    assert_true(env->update->train_accuracy == res.st.metric);
    assert_non_null(env->update->train_metric); /* present: the server logs it */
    assert_true(env->update->train_metric->value == res.st.metric);
    assert_int_equal(env->update->steps, res.st.steps);
    fl_wire_msg_free(env);

    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 12, res.delta, numel * sizeof(float),
                                           chunk, &want),
                     0);
    assert_int_equal(delta->len, want->len);
    assert_memory_equal(delta->data, want->data, want->len);
    /* More than one chunk: the chunk size was honoured. */
    assert_true(numel * sizeof(float) > chunk);
    fl_buf_unref(up);
    fl_buf_unref(delta);
    fl_buf_unref(want);

    /* A shorter delta (as a hook may make it) is encoded as it is. */
    res.n--;
    assert_int_equal(fl_task_encode_update(12, &res, 0, &up, &delta, NULL, 0), 0);
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 12, res.delta,
                                           (numel - 1) * sizeof(float), 0, &want),
                     0);
    assert_int_equal(delta->len, want->len);
    assert_memory_equal(delta->data, want->data, want->len);
    fl_buf_unref(up);
    fl_buf_unref(delta);
    fl_buf_unref(want);
    res.n++;

    /* A model without an accuracy (MSE): no train_metric, train_accuracy 0. */
    double metric = res.st.metric;
    res.st.metric = NAN;
    assert_int_equal(fl_task_encode_update(12, &res, 0, &up, &delta, NULL, 0), 0);
    assert_int_equal(fl_wire_decode(up->data + FL_WIRE_HEADER, up->len - FL_WIRE_HEADER, &env, why, sizeof why), 0);
    assert_null(env->update->train_metric);
    assert_true(env->update->train_accuracy == 0);
    fl_wire_msg_free(env);
    fl_buf_unref(up);
    fl_buf_unref(delta);
    res.st.metric = metric;

    assert_int_equal(fl_task_encode_update(1, NULL, 0, &up, &delta, NULL, 0), FL_EINVAL);

    /* Encoded (protocol 1.1): the transfer is fl_codec_encode's bytes, and
     * top-k keeps its residual in the caller's error-feedback state. */
    fl_codec_ef_t ef = {0};
    fl_task_codec_t tc = {.codec = FL_CODEC_TOPK, .topk = 100, .ef = &ef};
    assert_int_equal(fl_task_encode_update_codec(12, &res, &tc, 0, &up, &delta, NULL, 0), 0);
    assert_int_equal(ef.n, numel); /* made on first use */
    size_t nonzero = 0;
    for (size_t i = 0; i < numel; i++)
        nonzero += ef.residual[i] != 0.0f;
    assert_true(nonzero >= numel - 100 - 50); /* what was not sent waits for the next round */
    uint8_t *enc;
    size_t enc_len;
    fl_codec_ef_t fresh = {0};
    assert_int_equal(fl_codec_ef_init(&fresh, numel), 0);
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, res.delta, numel, 100, &fresh, &enc, &enc_len), 0);
    assert_int_equal(fl_wire_encode_tensor_codec(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 12, FL_CODEC_TOPK, numel, enc,
                                                 enc_len, FL_WIRE_MAX_CHUNK, &want),
                     0);
    assert_int_equal(delta->len, want->len);
    assert_memory_equal(delta->data, want->data, want->len);
    assert_memory_equal(ef.residual, fresh.residual, numel * sizeof(float));
    free(enc);
    fl_codec_ef_free(&fresh);
    fl_codec_ef_free(&ef);
    fl_buf_unref(up);
    fl_buf_unref(delta);
    fl_buf_unref(want);
    tc.topk = numel; /* beyond n/2 */
    assert_int_equal(fl_task_encode_update_codec(12, &res, &tc, 0, &up, &delta, NULL, 0), FL_EINVAL);
    assert_null(up);
    fl_codec_ef_free(&ef); /* re-made for this model's size before the refusal */
    fl_task_result_free(&res);
}

/* The low-memory release: after fl_task_result_slim the result holds the
 * same delta without its model, encodes to the same frames, slims again
 * harmlessly and frees its delta itself (ASan sees a leak or a double free). */
static void test_result_slim(void **state)
{
    (void)state;
    fl_train_config_t cfg;
    settings(8, &cfg);
    fl_task_in_t in = input();
    fl_task_result_t res, ref;
    assert_int_equal(fl_task_train(&in, &cfg, &res, NULL, 0), 0);
    assert_int_equal(fl_task_train(&in, &cfg, &ref, NULL, 0), 0);
    assert_non_null(res.model);
    fl_task_result_slim(&res);
    assert_null(res.model);
    assert_non_null(res.delta);
    assert_int_equal(res.n, numel);
    assert_memory_equal(res.delta, ref.delta, numel * sizeof(float));
    assert_true(res.st.examples == ref.st.examples && res.st.loss == ref.st.loss);
    fl_task_result_slim(&res);
    assert_memory_equal(res.delta, ref.delta, numel * sizeof(float));
    fl_buf_t *up = NULL, *delta = NULL, *up2 = NULL, *delta2 = NULL;
    assert_int_equal(fl_task_encode_update(5, &res, 0, &up, &delta, NULL, 0), 0);
    assert_int_equal(fl_task_encode_update(5, &ref, 0, &up2, &delta2, NULL, 0), 0);
    assert_int_equal(delta->len, delta2->len);
    assert_memory_equal(delta->data, delta2->data, delta->len);
    assert_int_equal(up->len, up2->len);
    fl_buf_unref(up);
    fl_buf_unref(delta);
    fl_buf_unref(up2);
    fl_buf_unref(delta2);
    fl_task_result_free(&res);
    assert_null(res.delta);
    fl_task_result_free(&ref);
    fl_task_result_slim(NULL);
    fl_task_result_t empty;
    memset(&empty, 0, sizeof empty);
    fl_task_result_slim(&empty);
    fl_task_result_free(&empty);
}

static void test_eval(void **state)
{
    (void)state;
    fl_task_in_t in = input();
    fl_train_stats_t st, want;
    assert_int_equal(fl_task_eval(&in, 32, 50, &st, NULL, 0), 0);
    assert_int_equal(st.examples, 50);

    fl_dataset_t local;
    fl_dataset_init(&local);
    assert_int_equal(fl_dataset_subset(&data, shard, SHARD, &local), 0);
    local.n = 50;
    fl_model_spec_t spec;
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_spec_from_dataset(&local, &spec), 0);
    assert_int_equal(fl_model_create("logreg", &spec, &m), 0);
    assert_int_equal(fl_model_set_params(m, global, numel), 0);
    assert_int_equal(fl_train_eval(m, &local, 32, &want), 0);
    assert_true(st.loss == want.loss);
    assert_true(st.metric == want.metric);
    local.n = SHARD;
    fl_model_free(m);
    fl_dataset_free(&local);

    /* max 0: every example of the shard. */
    assert_int_equal(fl_task_eval(&in, 0, 0, &st, NULL, 0), 0);
    assert_int_equal(st.examples, SHARD);

    fl_buf_t *out = NULL;
    Fedopt__Envelope *env = NULL;
    assert_int_equal(fl_task_encode_eval(5, &st, &out, NULL, 0), 0);
    assert_int_equal(fl_wire_decode(out->data + FL_WIRE_HEADER, out->len - FL_WIRE_HEADER, &env, NULL, 0), 0);
    assert_int_equal(env->msg_case, FEDOPT__ENVELOPE__MSG_EVAL_RESULT);
    assert_int_equal(env->eval_result->round_id, 5);
    assert_int_equal(env->eval_result->num_examples, SHARD);
    assert_true(env->eval_result->loss == st.loss);
    fl_wire_msg_free(env);
    fl_buf_unref(out);
}

static void test_refusals(void **state)
{
    (void)state;
    fl_train_config_t cfg;
    settings(8, &cfg);
    fl_task_result_t res;
    char why[200];

    fl_task_in_t in = input();
    in.model = "no-such-model";
    why[0] = 0;
    assert_int_equal(fl_task_train(&in, &cfg, &res, why, sizeof why), FL_ENOTFOUND);
    assert_non_null(strstr(why, "no-such-model"));
    assert_null(res.delta);
    assert_null(res.model);

    in = input();
    in.n = numel - 1;
    why[0] = 0;
    assert_int_equal(fl_task_train(&in, &cfg, &res, why, sizeof why), FL_ESHAPE);
    assert_non_null(strstr(why, "parameters"));
    assert_null(res.delta);
    fl_train_stats_t st;
    assert_int_equal(fl_task_eval(&in, 0, 0, &st, why, sizeof why), FL_ESHAPE);

    /* The offer's tensor table (protocol 1.1): the same count laid out as
     * [784, 10] instead of [10, 784] is refused by shape; the right table passes. */
    fl_wire_tensor_t table[2] = {{"fc.weight", 2, {784, 10}, 0}, {"fc.bias", 1, {10}, 31360}};
    in = input();
    in.table = table;
    in.ntable = 2;
    why[0] = 0;
    assert_int_equal(fl_task_train(&in, &cfg, &res, why, sizeof why), FL_ESHAPE);
    assert_non_null(strstr(why, "fc.weight [784, 10]"));
    assert_int_equal(fl_task_eval(&in, 0, 0, &st, why, sizeof why), FL_ESHAPE);
    table[0].shape[0] = 10;
    table[0].shape[1] = 784;
    assert_int_equal(fl_task_eval(&in, 0, 0, &st, why, sizeof why), 0);

    /* A model built for other inputs (resnet18gn wants 32x32x3 images). */
    in = input();
    in.model = "resnet18gn";
    why[0] = 0;
    int rc = fl_task_train(&in, &cfg, &res, why, sizeof why);
    assert_true(rc < 0);
    assert_non_null(strstr(why, "resnet18gn"));

    in = input();
    in.nindex = 0;
    why[0] = 0;
    assert_int_equal(fl_task_train(&in, &cfg, &res, why, sizeof why), FL_EEMPTY);
    assert_non_null(strstr(why, "no examples"));

    uint32_t bad[2] = {0, N};
    in = input();
    in.index = bad;
    in.nindex = 2;
    why[0] = 0;
    assert_int_equal(fl_task_train(&in, &cfg, &res, why, sizeof why), FL_EINVAL);
    assert_true(why[0] != 0);

    in = input();
    in.global = NULL;
    assert_int_equal(fl_task_train(&in, &cfg, &res, why, sizeof why), FL_EINVAL);
    in = input();
    assert_int_equal(fl_task_train(&in, NULL, &res, why, sizeof why), FL_EINVAL);
    assert_int_equal(fl_task_train(NULL, &cfg, &res, why, sizeof why), FL_EINVAL);
    assert_int_equal(fl_task_train(&in, &cfg, NULL, why, sizeof why), FL_EINVAL);
}

static void test_fitting_models(void **state)
{
    (void)state;
    const char **names = NULL;
    size_t n = 0;
    assert_int_equal(fl_task_fitting_models(&data, &names, &n), 0);
    int logreg = 0, cnn = 0;
    for (size_t i = 0; i < n; i++) {
        logreg |= strcmp(names[i], "logreg") == 0;
        cnn |= strcmp(names[i], "cnn") == 0;
        /* Every listed model really builds. */
        fl_model_spec_t spec;
        fl_model_t *m = NULL;
        assert_int_equal(fl_model_spec_from_dataset(&data, &spec), 0);
        assert_int_equal(fl_model_create(names[i], &spec, &m), 0);
        fl_model_free(m);
    }
    assert_true(logreg && cnn);
    assert_true(n < fl_models_count()); /* the 32x32x3 models do not fit */
    free(names);
    assert_int_equal(fl_task_fitting_models(NULL, &names, &n), FL_EINVAL);
}

/* fl_model_fits (what the client lists in Hello) says what fl_model_create
 * says, for every registered model and several data shapes, without
 * building the parameters. */
static void test_model_fits_agrees_with_create(void **state)
{
    (void)state;
    const int64_t img[3] = {1, 28, 28}, rgb[3] = {3, 32, 32}, flat[1] = {80};
    const struct {
        int ndim;
        const int64_t *d;
        int classes;
        size_t label_dim;
    } cases[] = {{3, img, 10, 1}, {3, rgb, 100, 1}, {1, flat, 80, 80}, {1, flat, 10, 1}, {3, img, 10, 7}};
    int fits = 0, misfits = 0;
    FILE *devnull = fopen("/dev/null", "w"); /* the misfits' log lines */
    assert_non_null(devnull);
    fl_log_set_sink(devnull);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fl_model_spec_t spec = {.input = fl_shape_make(cases[c].ndim, cases[c].d),
                                .num_classes = cases[c].classes,
                                .label_dim = cases[c].label_dim};
        for (size_t i = 0; i < fl_models_count(); i++) {
            const char *name = fl_models_at(i)->name;
            fl_model_t *m = NULL;
            int want = fl_model_create(name, &spec, &m);
            fl_model_free(m);
            assert_int_equal(fl_model_fits(name, &spec), want);
            fits += want == 0;
            misfits += want != 0;
        }
    }
    fl_log_set_sink(NULL);
    fclose(devnull);
    assert_true(fits > 0 && misfits > 0); /* both answers were exercised */
    fl_model_spec_t spec = {.input = fl_shape_make(3, img), .num_classes = 10, .label_dim = 1};
    assert_int_equal(fl_model_fits("no-such-model", &spec), FL_ENOTFOUND);
    assert_int_equal(fl_model_fits("cnn", NULL), FL_EINVAL);
}

/* Trains `name` for client `client` with or without a workspace and
 * returns a copy of the delta. */
static float *train_copy(const char *name, fl_task_ws_t *ws, uint64_t client, float momentum, const float *g,
                         size_t n, double *loss)
{
    fl_train_config_t cfg;
    settings(client, &cfg);
    cfg.epochs = 1; /* 8 steps: enough for momentum to matter, light under emulation */
    cfg.sgd.momentum = momentum;
    fl_task_in_t in = input();
    in.model = name;
    in.global = g;
    in.n = n;
    in.ws = ws;
    fl_task_result_t res;
    char why[200] = "";
    if (fl_task_train(&in, &cfg, &res, why, sizeof why) != 0)
        fail_msg("training %s: %s", name, why);
    assert_int_equal(res.n, n);
    if (ws) {
        assert_null(res.model);
        assert_ptr_equal(res.ws, ws);
        float *keep = res.delta;
        fl_task_result_slim(&res); /* a workspace's delta stays where it is */
        assert_ptr_equal(res.delta, keep);
    }
    float *copy = malloc(n * sizeof(float));
    assert_non_null(copy);
    memcpy(copy, res.delta, n * sizeof(float));
    *loss = res.st.loss;
    fl_task_result_free(&res); /* must not free the workspace's parameters (ASan) */
    return copy;
}

static void test_workspace(void **state)
{
    (void)state;
    /* cnn's global parameters: it has dropout, convolutions and pooling. */
    fl_model_spec_t spec;
    fl_model_t *cm = NULL;
    assert_int_equal(fl_model_spec_from_dataset(&data, &spec), 0);
    assert_int_equal(fl_model_create("cnn", &spec, &cm), 0);
    fl_model_init_params(cm, 4);
    size_t cn = cm->params.numel;
    const float *cg = cm->params.data;

    /* Fresh models: the reference. */
    double l8, l9, l8m, lr, l;
    float *f8 = train_copy("cnn", NULL, 8, 0, cg, cn, &l8);
    float *f9 = train_copy("cnn", NULL, 9, 0, cg, cn, &l9);
    float *f8m = train_copy("cnn", NULL, 8, 0.9f, cg, cn, &l8m);
    float *fr = train_copy("logreg", NULL, 8, 0, global, numel, &lr);
    assert_true(memcmp(f8, f9, cn * sizeof(float)) != 0);
    assert_true(memcmp(f8, f8m, cn * sizeof(float)) != 0);

    fl_task_ws_t *ws = NULL;
    assert_int_equal(fl_task_ws_new(&ws), 0);
    assert_int_equal(fl_task_ws_builds(ws), 0);
    /* Client 9 first, then 8, 8 with momentum, 9 again: one build, and each
     * delta is the fresh model's bit for bit. */
    float *w9 = train_copy("cnn", ws, 9, 0, cg, cn, &l);
    assert_memory_equal(w9, f9, cn * sizeof(float));
    assert_true(l == l9);
    float *w8 = train_copy("cnn", ws, 8, 0, cg, cn, &l);
    assert_memory_equal(w8, f8, cn * sizeof(float));
    assert_true(l == l8);
    float *w8m = train_copy("cnn", ws, 8, 0.9f, cg, cn, &l);
    assert_memory_equal(w8m, f8m, cn * sizeof(float));
    assert_true(l == l8m);
    assert_int_equal(fl_task_ws_builds(ws), 1);

    /* An evaluation on the workspace's model (other batch size) equals a
     * fresh one's, and the training after it is still the same. */
    fl_task_in_t in = input();
    in.model = "cnn";
    in.global = cg;
    in.n = cn;
    fl_train_stats_t ef, ew;
    assert_int_equal(fl_task_eval(&in, 32, 0, &ef, NULL, 0), 0);
    in.ws = ws;
    assert_int_equal(fl_task_eval(&in, 32, 0, &ew, NULL, 0), 0);
    assert_true(ef.loss == ew.loss && ef.metric == ew.metric && ef.examples == ew.examples);
    assert_int_equal(fl_task_ws_builds(ws), 1);
    float *w9b = train_copy("cnn", ws, 9, 0, cg, cn, &l);
    assert_memory_equal(w9b, f9, cn * sizeof(float));
    assert_int_equal(fl_task_ws_builds(ws), 1);

    /* A task that fails after the model is there (a parameter count that
     * is not the model's) leaves it usable. */
    in.n = cn - 1;
    fl_train_config_t cfg;
    settings(8, &cfg);
    fl_task_result_t res;
    assert_int_equal(fl_task_train(&in, &cfg, &res, NULL, 0), FL_ESHAPE);
    assert_null(res.delta);
    float *w8b = train_copy("cnn", ws, 8, 0, cg, cn, &l);
    assert_memory_equal(w8b, f8, cn * sizeof(float));
    assert_int_equal(fl_task_ws_builds(ws), 1);

    /* Another model replaces it; back to cnn builds again. */
    float *wr = train_copy("logreg", ws, 8, 0, global, numel, &l);
    assert_memory_equal(wr, fr, numel * sizeof(float));
    assert_int_equal(fl_task_ws_builds(ws), 2);
    float *w8c = train_copy("cnn", ws, 8, 0, cg, cn, &l);
    assert_memory_equal(w8c, f8, cn * sizeof(float));
    assert_int_equal(fl_task_ws_builds(ws), 3);

    /* Another data shape (a client whose images are smaller) builds anew. */
    fl_dataset_t small;
    fl_dataset_init(&small);
    int64_t shape[3] = {1, 14, 14};
    assert_int_equal(fl_dataset_alloc(&small, 40, 3, shape, 10), 0);
    fl_task_in_t si = {.model = "logreg", .data = &small, .gemm_threads = 1, .ws = ws};
    fl_model_t *sm = NULL;
    fl_model_spec_t ss;
    assert_int_equal(fl_model_spec_from_dataset(&small, &ss), 0);
    assert_int_equal(fl_model_create("logreg", &ss, &sm), 0);
    si.global = sm->params.data;
    si.n = sm->params.numel;
    assert_int_equal(fl_task_train(&si, &cfg, &res, NULL, 0), 0);
    assert_int_equal(fl_task_ws_builds(ws), 4);
    fl_task_result_free(&res);

    fl_task_ws_free(ws);
    fl_task_ws_free(NULL);
    assert_int_equal(fl_task_ws_builds(NULL), 0);
    assert_int_equal(fl_task_ws_new(NULL), FL_EINVAL);
    fl_model_free(sm);
    fl_dataset_free(&small);
    free(f8), free(f9), free(f8m), free(fr), free(w9), free(w8), free(w8m), free(w9b), free(w8b), free(wr),
        free(w8c);
    fl_model_free(cm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_delta_is_trained_minus_global),
        cmocka_unit_test(test_same_seed_ids_same_delta),
        cmocka_unit_test(test_samples_under_step_cap),
        cmocka_unit_test(test_encode_update),
        cmocka_unit_test(test_result_slim),
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_fitting_models),
        cmocka_unit_test(test_model_fits_agrees_with_create),
        cmocka_unit_test(test_workspace),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
