/* Core conventions: error codes, random streams, the parameter buffer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/params.h"
#include "common/base/rng.h"

static void test_errors(void **s)
{
    assert_string_equal(fl_strerror(0), "success");
    assert_string_equal(fl_strerror(FL_ENONFINITE), "non-finite value (NaN or Inf)");
    assert_string_equal(fl_errname(FL_ETOOBIG), "FL_ETOOBIG");
    assert_string_equal(fl_strerror(-9999), "unknown error");
    fl_log_level_t l;
    assert_int_equal(fl_log_parse_level("debug", &l), 0);
    assert_int_equal(l, FL_LOG_DEBUG);
    assert_int_equal(fl_log_parse_level("loud", &l), FL_EINVAL);
}

static void test_rng_streams(void **s)
{
    fl_rng_t a, b, c;
    uint64_t t1[] = {1, 2, 3, FL_RNG_SHUFFLE}, t2[] = {1, 2, 4, FL_RNG_SHUFFLE},
             t3[] = {2, 1, 3, FL_RNG_SHUFFLE};
    fl_rng_stream(&a, 7, t1, 4);
    fl_rng_stream(&b, 7, t1, 4);
    for (int i = 0; i < 100; i++)
        assert_int_equal(fl_rng_u64(&a), fl_rng_u64(&b)); /* same tuple, same stream */
    fl_rng_stream(&a, 7, t1, 4);
    fl_rng_stream(&b, 7, t2, 4);
    fl_rng_stream(&c, 7, t3, 4);
    int same_b = 0, same_c = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = fl_rng_u64(&a);
        same_b += x == fl_rng_u64(&b);
        same_c += x == fl_rng_u64(&c);
    }
    assert_int_equal(same_b, 0);
    assert_int_equal(same_c, 0);
    fl_rng_stream(&b, 8, t1, 4); /* another seed */
    fl_rng_stream(&a, 7, t1, 4);
    assert_int_not_equal(fl_rng_u64(&a), fl_rng_u64(&b));
}

/* The bulk fill is the same stream as one fl_rng_u32 call per value: the
 * same values and the same state afterwards, whatever the lengths the
 * stream is cut into (dropout masks depend on it bit for bit). */
static void test_rng_fill_u32(void **s)
{
    static const size_t cuts[] = {0, 1, 2, 3, 7, 64, 255, 256, 1000, 4099};
    uint32_t got[4099];
    for (uint64_t seed = 1; seed <= 3; seed++) {
        fl_rng_t a, b;
        const uint64_t ids[2] = {seed, FL_RNG_DROPOUT};
        fl_rng_stream(&a, 42, ids, 2);
        b = a;
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            size_t n = cuts[c];
            fl_rng_fill_u32(&a, got, n);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(got[i], fl_rng_u32(&b));
            assert_memory_equal(a.s, b.s, sizeof a.s);
        }
        /* And the streams go on identically after the fills. */
        assert_int_equal(fl_rng_u64(&a), fl_rng_u64(&b));
    }
    /* The first values of seed 1, as fl_rng_u32 has always drawn them: a
     * change to the generator would change every saved result. */
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    fl_rng_fill_u32(&r, got, 3);
    assert_int_equal(got[0], 1869816189u);
    assert_int_equal(got[1], 3988704086u);
    assert_int_equal(got[2], 3737986336u);
}

static void test_rng_distributions(void **s)
{
    fl_rng_t r;
    fl_rng_seed(&r, 123);
    const int N = 200000;
    double sum = 0, sum2 = 0, gsum = 0;
    int counts[7] = {0};
    for (int i = 0; i < N; i++) {
        double u = fl_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        double z = fl_rng_normal(&r);
        sum += z;
        sum2 += z * z;
        gsum += fl_rng_gamma(&r, 0.3);
        counts[fl_rng_below(&r, 7)]++;
    }
    assert_true(fabs(sum / N) < 0.01);
    assert_true(fabs(sum2 / N - 1.0) < 0.02);
    assert_true(fabs(gsum / N - 0.3) < 0.01); /* E[Gamma(a,1)] = a */
    for (int k = 0; k < 7; k++)
        assert_true(abs(counts[k] - N / 7) < N / 7 / 20);
    uint32_t p[50];
    for (uint32_t i = 0; i < 50; i++)
        p[i] = i;
    fl_rng_shuffle_u32(&r, p, 50);
    int seen[50] = {0}, moved = 0;
    for (uint32_t i = 0; i < 50; i++) {
        seen[p[i]]++;
        moved += p[i] != i;
    }
    for (int i = 0; i < 50; i++)
        assert_int_equal(seen[i], 1);
    assert_true(moved > 40);
}

static void test_params_layout(void **s)
{
    fl_params_t p, q;
    fl_params_init(&p);
    int64_t w[2] = {3, 4}, b[1] = {3}, bad[2] = {3, 0};
    assert_int_equal(fl_params_add(&p, "fc.weight", 2, w, FL_PARAM_DECAY), 0);
    assert_int_equal(fl_params_add(&p, "fc.bias", 1, b, 0), 0);
    assert_int_equal(fl_params_add(&p, "fc.bias", 1, b, 0), FL_EEXIST);
    assert_int_equal(fl_params_add(&p, "zero", 2, bad, 0), FL_EINVAL);
    assert_int_equal(p.numel, 15);
    assert_int_equal(fl_params_alloc(&p), 0);
    assert_int_equal(fl_params_add(&p, "late", 1, b, 0), FL_ESTATE);
    const fl_param_view_t *v = fl_params_find(&p, "fc.bias");
    assert_non_null(v);
    assert_int_equal(v->offset, 12);
    assert_null(fl_params_find(&p, "nope"));
    assert_int_equal((uintptr_t)p.data % 64, 0);
    for (size_t i = 0; i < p.numel; i++)
        assert_true(p.data[i] == 0.0f);
    fl_params_at(&p, v)[2] = 5.0f;
    assert_true(p.data[14] == 5.0f);
    assert_int_equal(fl_params_clone_layout(&q, &p), 0);
    assert_true(fl_params_same_layout(&p, &q));
    assert_true(q.data[14] == 0.0f);
    /* CRC-32 (zlib polynomial) of the floats' little-endian bytes; the
     * expected value comes from Python's zlib.crc32 over struct.pack('<4f', ...). */
    float four[4] = {1.0f, -2.0f, 0.5f, 0.0f};
    uint32_t c1 = fl_params_crc32(four, 4);
    assert_int_equal(c1, 0xd477b0b2u);
    four[3] = -0.0f;
    assert_int_not_equal(c1, fl_params_crc32(four, 4));
    fl_params_free(&p);
    fl_params_free(&q);
    fl_params_free(NULL);
}

static void test_finite_and_norm(void **s)
{
    float x[10000];
    for (int i = 0; i < 10000; i++)
        x[i] = 0.5f;
    assert_true(fl_f32_all_finite(x, 10000));
    assert_float_equal(fl_f32_norm(x, 4), 1.0, 1e-12);
    x[9999] = INFINITY;
    assert_false(fl_f32_all_finite(x, 10000));
    x[9999] = 0;
    x[4096] = NAN;
    assert_false(fl_f32_all_finite(x, 10000));
    x[4096] = 3.4e38f; /* the largest floats are finite */
    assert_true(fl_f32_all_finite(x, 10000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_rng_streams),
        cmocka_unit_test(test_rng_distributions), cmocka_unit_test(test_rng_fill_u32), cmocka_unit_test(test_params_layout),
        cmocka_unit_test(test_finite_and_norm),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
