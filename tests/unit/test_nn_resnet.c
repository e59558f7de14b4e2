/* The ResNet layers and model: gradient checks of group norm, the SAME max
 * pool, the global average pool and both kinds of residual block; group
 * norm's statistics; the pool's TensorFlow geometry; resnet18gn's exact
 * parameter counts (C = 10 and 100), names and a gradient check of the whole
 * model on a small image. */
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
#include "common/data/augment.h"
#include "common/nn/models.h"
#include "common/nn/train.h"
#include "common/nn/groupnorm.h"
#include "common/nn/pool.h"
#include "common/nn/resblock.h"
#include "tests/support/emulation.h"
#include "tests/support/gradcheck.h"

static void check_layer(fl_layer_t *l, fl_params_t *layout, size_t n, const fl_gc_opts_t *o)
{
    assert_non_null(l);
    fl_gc_result_t res;
    int rc = fl_gc_layer(l, layout, n, o, &res);
    assert_true(res.checked > 0);
    assert_int_equal(res.failed, 0);
    assert_int_equal(rc, 0);
    fl_layer_free(l);
    fl_params_free(layout);
}

static void test_grad_groupnorm(void **state)
{
    (void)state;
    fl_params_t p;
    fl_params_init(&p);
    fl_layer_t *l = NULL;
    fl_shape_t in = {.ndim = 3, .d = {4, 3, 3}};
    assert_int_equal(fl_groupnorm_create(&p, "gn", &in, 2, 1e-3f, &l), 0);
    assert_string_equal(p.views[0].name, "gn.weight");
    assert_string_equal(p.views[1].name, "gn.bias");
    assert_int_equal(p.numel, 8);
    fl_gc_opts_t o = fl_gc_defaults();
    o.eps = 3e-3;
    o.atol = 3e-4;
    check_layer(l, &p, 3, &o);
    /* Groups must divide the channels. */
    fl_params_init(&p);
    fl_shape_t odd = {.ndim = 3, .d = {3, 2, 2}};
    assert_int_equal(fl_groupnorm_create(&p, "gn", &odd, 2, 1e-3f, &l), FL_EINVAL);
    assert_null(l);
    fl_params_free(&p);
}

/* With weight 1 and bias 0, each group of each example comes out with mean 0
 * and variance var / (var + eps). */
static void test_groupnorm_statistics(void **state)
{
    (void)state;
    fl_params_t p;
    fl_params_init(&p);
    fl_layer_t *l = NULL;
    fl_shape_t in = {.ndim = 3, .d = {6, 2, 2}};
    assert_int_equal(fl_groupnorm_create(&p, "gn", &in, 2, 1e-3f, &l), 0);
    assert_int_equal(fl_params_alloc(&p), 0);
    fl_layer_bind(l, &p, NULL);
    assert_int_equal(l->ops->reserve(l, 2), 0);
    l->ops->init(l, NULL);
    float x[48], y[48];
    fl_rng_t r;
    fl_rng_seed(&r, 4);
    for (int i = 0; i < 48; i++)
        x[i] = 100.0f + 3.0f * (float)fl_rng_normal(&r); /* a large offset must not hurt */
    l->ops->forward(l, x, y, 2, FL_MODE_EVAL);
    for (int e = 0; e < 2; e++)
        for (int g = 0; g < 2; g++) {
            const float *xg = x + e * 24 + g * 12, *yg = y + e * 24 + g * 12;
            double mx = 0, vx = 0, my = 0, vy = 0;
            for (int k = 0; k < 12; k++) {
                mx += xg[k] / 12.0;
                my += yg[k] / 12.0;
            }
            for (int k = 0; k < 12; k++) {
                vx += (xg[k] - mx) * (xg[k] - mx) / 12.0;
                vy += (yg[k] - my) * (yg[k] - my) / 12.0;
            }
            assert_true(fabs(my) < 1e-4);
            assert_true(fabs(vy - vx / (vx + 1e-3)) < 1e-4);
        }
    fl_layer_free(l);
    fl_params_free(&p);
}

static void test_maxpool_same_geometry(void **state)
{
    (void)state;
    fl_layer_t *l = NULL;
    /* 12x12 -> 6x6 (ResNet's stem): padding 1 in total, all of it after. */
    fl_shape_t s12 = {.ndim = 3, .d = {64, 12, 12}};
    assert_int_equal(fl_pool_max_same_create(&s12, 3, 2, &l), 0);
    assert_int_equal(l->out.d[0], 64);
    assert_int_equal(l->out.d[1], 6);
    assert_int_equal(l->out.d[2], 6);
    fl_layer_free(l);
    /* 5x5 -> 3x3 with one padded row/column before and after. */
    fl_shape_t s5 = {.ndim = 3, .d = {1, 5, 5}};
    assert_int_equal(fl_pool_max_same_create(&s5, 3, 2, &l), 0);
    assert_int_equal(l->out.d[1], 3);
    assert_int_equal(l->ops->reserve(l, 1), 0);
    float x[25], y[9];
    for (int i = 0; i < 25; i++)
        x[i] = (float)((i * 7) % 25); /* distinct values */
    l->ops->forward(l, x, y, 1, FL_MODE_EVAL);
    /* Window (0,0) covers rows/cols -1..1, i.e. x[0..1][0..1]. */
    for (int oh = 0; oh < 3; oh++)
        for (int ow = 0; ow < 3; ow++) {
            float want = -1;
            for (int h = 2 * oh - 1; h <= 2 * oh + 1; h++)
                for (int w = 2 * ow - 1; w <= 2 * ow + 1; w++)
                    if (h >= 0 && h < 5 && w >= 0 && w < 5 && x[h * 5 + w] > want)
                        want = x[h * 5 + w];
            assert_true(y[oh * 3 + ow] == want);
        }
    fl_layer_free(l);
}

static void test_grad_pools(void **state)
{
    (void)state;
    fl_params_t p;
    fl_params_init(&p);
    fl_layer_t *l = NULL;
    fl_gc_opts_t o = fl_gc_defaults();
    fl_shape_t in = {.ndim = 3, .d = {2, 5, 6}};
    assert_int_equal(fl_pool_max_same_create(&in, 3, 2, &l), 0);
    assert_int_equal(l->out.d[1], 3);
    assert_int_equal(l->out.d[2], 3);
    check_layer(l, &p, 2, &o);
    fl_params_init(&p);
    assert_int_equal(fl_pool_global_avg_create(&in, &l), 0);
    assert_int_equal(l->out.ndim, 1);
    assert_int_equal(l->out.d[0], 2);
    check_layer(l, &p, 3, &o);
}

static void test_grad_resblocks(void **state)
{
    (void)state;
    fl_params_t p;
    fl_layer_t *l = NULL;
    fl_gc_opts_t o = fl_gc_defaults();
    o.eps = 3e-3;
    o.atol = 3e-4;
    fl_shape_t in = {.ndim = 3, .d = {4, 4, 4}};
    /* Channels change: pre-activation, 1x1 conv + GN shortcut. */
    fl_params_init(&p);
    assert_int_equal(fl_resblock_create(&p, "layer2.0", &in, 6, 1, 2, 1e-3f, &l), 0);
    assert_int_equal(l->out.d[0], 6);
    assert_int_equal(l->nparams, 9);
    static const char *names[] = {"layer2.0.gn1.weight",        "layer2.0.gn1.bias",
                                  "layer2.0.conv1.weight",      "layer2.0.gn2.weight",
                                  "layer2.0.gn2.bias",          "layer2.0.conv2.weight",
                                  "layer2.0.shortcut.conv.weight", "layer2.0.shortcut.gn.weight",
                                  "layer2.0.shortcut.gn.bias"};
    for (int i = 0; i < 9; i++)
        assert_string_equal(p.views[i].name, names[i]);
    assert_int_equal(p.numel, 8 + 6 * 4 * 9 + 12 + 6 * 6 * 9 + 6 * 4 + 12);
    check_layer(l, &p, 2, &o);
    /* Same channels, no pre-activation (the first block): identity shortcut. */
    fl_params_init(&p);
    assert_int_equal(fl_resblock_create(&p, "layer1.0", &in, 4, 0, 2, 1e-3f, &l), 0);
    assert_int_equal(l->nparams, 4);
    assert_string_equal(p.views[0].name, "layer1.0.conv1.weight");
    check_layer(l, &p, 2, &o);
}

static void test_resnet_counts(void **state)
{
    (void)state;
    const fl_model_info_t *info = fl_models_find("resnet18gn");
    assert_non_null(info);
    fl_model_spec_t s = info->paper;
    assert_int_equal(s.input.d[0], 3);
    assert_int_equal(s.input.d[1], 24);
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create("resnet18gn", &s, &m), 0);
    assert_int_equal(m->params.numel, 11181642);
    assert_string_equal(m->params.views[0].name, "stem.conv.weight");
    assert_string_equal(m->params.views[1].name, "stem.gn.weight");
    assert_string_equal(m->params.views[3].name, "layer1.0.conv1.weight");
    assert_string_equal(m->params.views[m->params.nviews - 1].name, "fc.bias");
    assert_string_equal(m->params.views[m->params.nviews - 3].name, "final.gn.bias");
    /* Convolutions and the dense weight decay; norms and biases do not. */
    size_t decayed = 0;
    for (size_t i = 0; i < m->params.nviews; i++) {
        const fl_param_view_t *v = &m->params.views[i];
        int want = strstr(v->name, "conv") || strcmp(v->name, "fc.weight") == 0;
        assert_int_equal(!!(v->flags & FL_PARAM_DECAY), want);
        decayed += want ? v->numel : 0;
    }
    /* All but the group norms (stem 128, blocks 6,656, shortcuts 1,792,
     * final 1,024) and the fc bias (10). */
    assert_int_equal(decayed, 11181642 - 128 - 6656 - 1792 - 1024 - 10);
    /* Every stage keeps the stem's 6x6 (all stages at stride 1). */
    assert_int_equal(fl_model_out_dim(m), 10);
    fl_model_free(m);
    s.num_classes = 100;
    assert_int_equal(fl_model_create("resnet18gn", &s, &m), 0);
    assert_int_equal(m->params.numel, 11227812);
    fl_model_free(m);
    /* A 1-D input cannot go through convolutions. */
    fl_model_spec_t flat = {.input = {.ndim = 1, .d = {30}}, .num_classes = 4, .label_dim = 1};
    assert_int_equal(fl_model_create("resnet18gn", &flat, &m), FL_ESHAPE);
}

/* CIFAR-sized data (32x32) reaches resnet18gn through the paper's
 * preprocessing wherever the trainer is used: the model is built for 24x24,
 * evaluation sees the standardized central crops, training draws crops. */
static void test_resnet_crops_in_trainer(void **state)
{
    (void)state;
    fl_dataset_t d, c;
    fl_dataset_init(&d);
    fl_dataset_init(&c);
    int64_t shape[3] = {3, 32, 32};
    assert_int_equal(fl_dataset_alloc(&d, 4, 3, shape, 10), 0);
    for (size_t i = 0; i < d.n * d.dim; i++)
        d.x[i] = (float)((i * 37) % 255) / 255.0f;
    for (size_t i = 0; i < d.n; i++)
        d.y[i] = (int32_t)(i % 10);
    fl_model_spec_t s;
    assert_int_equal(fl_model_spec_from_dataset(&d, &s), 0);
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create("resnet18gn", &s, &m), 0);
    assert_int_equal(fl_model_in_dim(m), 3 * 24 * 24);
    fl_model_init_params(m, 3);
    /* Evaluating the raw 32x32 data equals evaluating its central crops. */
    fl_train_stats_t raw, cropped;
    assert_int_equal(fl_train_eval(m, &d, 2, &raw), 0);
    assert_int_equal(fl_augment_dataset(&d, 24, 0, NULL, &c), 0);
    assert_int_equal(fl_train_eval(m, &c, 2, &cropped), 0);
    assert_int_equal(raw.examples, 4);
    assert_true(raw.loss == cropped.loss);
    /* Training on the raw data runs (crops drawn per epoch). */
    fl_train_config_t cfg = {.epochs = 2, .batch = 2, .sgd = {.lr = 0.01f}, .seed = 5};
    fl_train_stats_t st;
    assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, &st), 0);
    assert_int_equal(st.examples, 4);
    assert_true(isfinite(st.loss));
    fl_model_free(m);
    fl_dataset_free(&d);
    fl_dataset_free(&c);
}

static void test_grad_resnet(void **state)
{
    (void)state;
    /* A 3x6x6 image: 3x3 after the stem, 2x2 through the stages. The real
     * widths make every evaluation cost ~40 MFLOP, so the check samples. */
    fl_model_spec_t s = {.input = {.ndim = 3, .d = {3, 6, 6}}, .num_classes = 5, .label_dim = 1};
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create("resnet18gn", &s, &m), 0);
    fl_model_init_params(m, 3);
    enum { N = 2 };
    float x[N * 108];
    int32_t y[N] = {1, 4};
    fl_rng_t r;
    fl_rng_seed(&r, 8);
    for (int i = 0; i < N * 108; i++)
        x[i] = (float)fl_rng_normal(&r);
    fl_gc_opts_t o = fl_gc_defaults();
    /* Two sampled elements of each of the 62 tensors. Under emulation (make
     * test-cross) each evaluation of the real widths costs seconds, so one
     * element of every fourth tensor and of fc.bias (the stem, every stage,
     * the final norm, the classifier: the model's wiring end to end); the
     * per-layer checks above cover every layer type in full there too. */
    o.max_per_tensor = fl_emu_size("resnet18gn gradient check, sampled elements per tensor", 2, 1);
    o.tensor_stride = fl_emu_size("resnet18gn gradient check, every n-th tensor", 1, 4);
    o.eps = 3e-3;
    o.atol = 3e-4;
    fl_gc_result_t res;
    int rc = fl_gc_model(m, x, y, N, &o, &res);
    assert_int_equal(res.failed, 0);
    assert_true(res.checked >= (fl_emu_active() ? 12u : 100u));
    assert_int_equal(rc, 0);
    fl_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_groupnorm),
        cmocka_unit_test(test_groupnorm_statistics),
        cmocka_unit_test(test_maxpool_same_geometry),
        cmocka_unit_test(test_grad_pools),
        cmocka_unit_test(test_grad_resblocks),
        cmocka_unit_test(test_resnet_counts),
        cmocka_unit_test(test_resnet_crops_in_trainer),
        cmocka_unit_test(test_grad_resnet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
