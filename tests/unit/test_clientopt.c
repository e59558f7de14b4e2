/* ClientOpt: SGD (plain, momentum, weight decay on flagged views) and the
 * learning-rate schedules. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/nn/clientopt.h"
#include "common/base/error.h"

static void make_params(fl_params_t *p, fl_params_t *g)
{
    int64_t w[1] = {2}, b[1] = {1};
    fl_params_init(p);
    assert_int_equal(fl_params_add(p, "w", 1, w, FL_PARAM_DECAY), 0);
    assert_int_equal(fl_params_add(p, "b", 1, b, 0), 0);
    assert_int_equal(fl_params_alloc(p), 0);
    assert_int_equal(fl_params_clone_layout(g, p), 0);
}

static void test_sgd_plain_and_decay(void **s)
{
    fl_params_t p, g;
    make_params(&p, &g);
    p.data[0] = 1.0f, p.data[1] = -2.0f, p.data[2] = 3.0f;
    g.data[0] = 0.5f, g.data[1] = 0.5f, g.data[2] = 0.5f;
    fl_sgd_t sgd;
    fl_sgd_config_t cfg = {.lr = 0.1f, .momentum = 0.0f, .weight_decay = 0.01f};
    assert_int_equal(fl_sgd_init(&sgd, &cfg, &p), 0);
    fl_sgd_step(&sgd, &p, &g);
    /* Decay applies to "w" only: x -= lr * (g + wd * x). */
    assert_float_equal(p.data[0], 1.0 - 0.1 * (0.5 + 0.01 * 1.0), 1e-7);
    assert_float_equal(p.data[1], -2.0 - 0.1 * (0.5 - 0.01 * 2.0), 1e-7);
    assert_float_equal(p.data[2], 3.0 - 0.1 * 0.5, 1e-7);
    fl_sgd_free(&sgd);
    fl_params_free(&p);
    fl_params_free(&g);
}

static void test_sgd_momentum(void **s)
{
    fl_params_t p, g;
    make_params(&p, &g);
    for (int i = 0; i < 3; i++)
        g.data[i] = 1.0f;
    fl_sgd_t sgd;
    fl_sgd_config_t cfg = {.lr = 0.1f, .momentum = 0.9f};
    assert_int_equal(fl_sgd_init(&sgd, &cfg, &p), 0);
    fl_sgd_step(&sgd, &p, &g); /* vel 1, x -0.1 */
    fl_sgd_step(&sgd, &p, &g); /* vel 1.9, x -0.29 */
    assert_float_equal(p.data[2], -0.29, 1e-6);
    fl_sgd_reset(&sgd);
    fl_sgd_step(&sgd, &p, &g); /* vel 1 again */
    assert_float_equal(p.data[2], -0.39, 1e-6);
    fl_sgd_free(&sgd);
    cfg.momentum = 1.0f;
    assert_int_equal(fl_sgd_init(&sgd, &cfg, &p), FL_EINVAL);
    fl_params_free(&p);
    fl_params_free(&g);
}

static void test_schedules(void **s)
{
    fl_lr_schedule_t sc;
    assert_int_equal(fl_lr_schedule_parse("constant", 0.1, &sc), 0);
    assert_float_equal(fl_lr_schedule_at(&sc, 500), 0.1, 1e-12);
    assert_int_equal(fl_lr_schedule_parse("exp:0.5:10", 0.1, &sc), 0);
    assert_float_equal(fl_lr_schedule_at(&sc, 10), 0.05, 1e-12);
    assert_float_equal(fl_lr_schedule_at(&sc, 5), 0.1 * sqrt(0.5), 1e-12);
    assert_int_equal(fl_lr_schedule_parse("exp:0.5:10:stair", 0.1, &sc), 0);
    assert_float_equal(fl_lr_schedule_at(&sc, 19), 0.05, 1e-12);
    assert_int_equal(fl_lr_schedule_parse("invlin:1:100", 1.0, &sc), 0);
    assert_float_equal(fl_lr_schedule_at(&sc, 100), 0.5, 1e-12);
    assert_int_equal(fl_lr_schedule_parse("invsqrt:3:1", 1.0, &sc), 0);
    assert_float_equal(fl_lr_schedule_at(&sc, 1), 0.5, 1e-12);
    assert_int_equal(fl_lr_schedule_parse("constant:warmup=4", 1.0, &sc), 0);
    assert_float_equal(fl_lr_schedule_at(&sc, 0), 0.25, 1e-12);
    assert_float_equal(fl_lr_schedule_at(&sc, 3), 1.0, 1e-12);
    assert_float_equal(fl_lr_schedule_at(&sc, 4), 1.0, 1e-12);
    assert_int_equal(fl_lr_schedule_parse("exp:0.5", 0.1, &sc), FL_EINVAL);
    assert_int_equal(fl_lr_schedule_parse("exp:0.5:0", 0.1, &sc), FL_EINVAL);
    assert_int_equal(fl_lr_schedule_parse("cosine:1:1", 0.1, &sc), FL_EINVAL);
    assert_int_equal(fl_lr_schedule_parse("invlin:1:10:bogus", 0.1, &sc), FL_EINVAL);
    assert_int_equal(fl_lr_schedule_parse("constant", -1, &sc), FL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain_and_decay),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_schedules),
    };
    return cmocka_run_group_tests_name("clientopt", tests, NULL, NULL);
}
