/* The fleet's Byzantine attacks (client/attack.c) on hand-computed inputs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/attack.h"
#include "common/base/error.h"

static void test_parse(void **st)
{
    (void)st;
    fl_attack_t a;
    assert_int_equal(fl_attack_parse("scale:-10", &a), 0);
    assert_true(a.kind == FL_ATTACK_SCALE && a.param == -10);
    assert_int_equal(fl_attack_parse("signflip", &a), 0);
    assert_int_equal(a.kind, FL_ATTACK_SIGNFLIP);
    assert_int_equal(fl_attack_parse("gaussian:0.5", &a), 0);
    assert_true(a.kind == FL_ATTACK_GAUSSIAN && a.param == 0.5);
    assert_int_equal(fl_attack_parse("labelflip", &a), 0);
    assert_int_equal(a.kind, FL_ATTACK_LABELFLIP);
    const char *bad[] = {"", "scale", "scale:", "scale:x", "gaussian:-1", "flip", "signflip:2", "scale:inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(fl_attack_parse(bad[i], &a), FL_EINVAL);
}

static void test_who(void **st)
{
    (void)st;
    size_t k = 0;
    for (uint64_t id = 0; id < 100; id++)
        k += (size_t)fl_attack_is_byzantine(id, 100, 0.2);
    assert_int_equal(k, 20);
    assert_true(fl_attack_is_byzantine(19, 100, 0.2) && !fl_attack_is_byzantine(20, 100, 0.2));
    assert_false(fl_attack_is_byzantine(0, 100, 0));
    assert_int_equal(fl_attack_is_byzantine(2, 10, 0.25), 1); /* round(2.5) = 3: ids 0 1 2 */
    assert_int_equal(fl_attack_is_byzantine(3, 10, 0.25), 0);
}

static void test_delta(void **st)
{
    (void)st;
    float d[4] = {1, -2, 0.5f, 4};
    fl_attack_t a = {FL_ATTACK_SCALE, -3};
    fl_attack_delta(&a, d, 4, 1, 7, 2);
    assert_memory_equal(d, ((float[]){-3, 6, -1.5f, -12}), sizeof d);
    a.kind = FL_ATTACK_SIGNFLIP;
    fl_attack_delta(&a, d, 4, 1, 7, 2);
    assert_memory_equal(d, ((float[]){3, -6, 1.5f, 12}), sizeof d);
    a.kind = FL_ATTACK_LABELFLIP; /* training-time: the delta is left */
    fl_attack_delta(&a, d, 4, 1, 7, 2);
    assert_memory_equal(d, ((float[]){3, -6, 1.5f, 12}), sizeof d);

    /* gaussian: replaces the delta; reproducible per (seed, id, round) */
    const size_t n = 50000;
    float *g = calloc(n, sizeof *g), *h = calloc(n, sizeof *h);
    assert_non_null(g);
    assert_non_null(h);
    a = (fl_attack_t){FL_ATTACK_GAUSSIAN, 2};
    fl_attack_delta(&a, g, n, 1, 7, 2);
    fl_attack_delta(&a, h, n, 1, 7, 2);
    assert_memory_equal(g, h, n * sizeof *g);
    fl_attack_delta(&a, h, n, 1, 7, 3);
    assert_true(memcmp(g, h, n * sizeof *g) != 0);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += g[i];
        s2 += (double)g[i] * g[i];
    }
    assert_true(fabs(s / n) < 5 * 2 / sqrt((double)n));
    assert_true(fabs(s2 / n - 4) < 5 * sqrt(2 * 16.0 / n));
    free(g);
    free(h);
}

static void test_labelflip(void **st)
{
    (void)st;
    fl_dataset_t d;
    fl_dataset_init(&d);
    int64_t shape[1] = {1};
    assert_int_equal(fl_dataset_alloc(&d, 0, 1, shape, 10), 0);
    const float x = 0;
    for (int32_t y = 0; y < 10; y += 3)
        assert_int_equal(fl_dataset_append(&d, &x, &y, 0), 0);
    fl_attack_t a = {FL_ATTACK_SIGNFLIP, 0};
    assert_int_equal(fl_attack_flip_labels(&a, &d), 0);
    a.kind = FL_ATTACK_LABELFLIP;
    assert_int_equal(fl_attack_flip_labels(&a, &d), 1);
    assert_int_equal(d.n, 4);
    assert_true(d.y[0] == 9 && d.y[1] == 6 && d.y[2] == 3 && d.y[3] == 0);
    fl_dataset_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_who),
        cmocka_unit_test(test_delta),
        cmocka_unit_test(test_labelflip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
