/* The CIFAR preprocessing: central crops at the right offset, random crops
 * inside the image with both flips drawn, per-image standardization (mean 0,
 * std 1, and the 1/sqrt(N) floor for a flat image), determinism per stream,
 * and the dataset copy keeping labels and refusing too-small images. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/data/augment.h"
#include "common/base/error.h"

enum { C = 3, H = 8, W = 8, K = 5 };

/* Pixel value encoding its position, so a crop can be located afterwards. */
static float pix(int c, int h, int w) { return (float)(c * 100 + h * h * 10 + w * w); }

static void fill(float *x)
{
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++)
                x[(c * H + h) * W + w] = pix(c, h, w);
}

static void check_standardized(const float *o, size_t n)
{
    double m = 0, v = 0;
    for (size_t i = 0; i < n; i++)
        m += o[i] / (double)n;
    for (size_t i = 0; i < n; i++)
        v += (o[i] - m) * (o[i] - m) / (double)n;
    assert_true(fabs(m) < 1e-5);
    assert_true(fabs(v - 1.0) < 1e-4);
}

/* Finds which crop (top, left, flipped) o is by recomputing every candidate
 * directly (crop, then standardize in double) and comparing all values. */
static void locate(const float *o, int *top, int *left, int *flip)
{
    for (int f = 0; f < 2; f++)
        for (int t = 0; t <= H - K; t++)
            for (int l = 0; l <= W - K; l++) {
                double v[C * K * K], m = 0, ss = 0;
                for (int c = 0; c < C; c++)
                    for (int h = 0; h < K; h++)
                        for (int w = 0; w < K; w++)
                            v[(c * K + h) * K + w] = pix(c, t + h, l + (f ? K - 1 - w : w));
                for (int i = 0; i < C * K * K; i++)
                    m += v[i] / (C * K * K);
                for (int i = 0; i < C * K * K; i++)
                    ss += (v[i] - m) * (v[i] - m) / (C * K * K);
                int ok = 1;
                for (int i = 0; i < C * K * K && ok; i++)
                    ok = fabs((v[i] - m) / sqrt(ss) - o[i]) < 1e-4;
                if (ok) {
                    *top = t;
                    *left = l;
                    *flip = f;
                    return;
                }
            }
    fail_msg("crop not found");
}

static void test_central_crop(void **state)
{
    (void)state;
    float x[C * H * W], o[C * K * K];
    fill(x);
    fl_augment_image(x, C, H, W, K, 0, NULL, o);
    check_standardized(o, C * K * K);
    int t, l, f;
    locate(o, &t, &l, &f);
    assert_int_equal(t, (H - K) / 2);
    assert_int_equal(l, (W - K) / 2);
    assert_int_equal(f, 0);
}

static void test_random_crops(void **state)
{
    (void)state;
    float x[C * H * W], o[C * K * K], o2[C * K * K];
    fill(x);
    fl_rng_t r, r2;
    fl_rng_seed(&r, 5);
    fl_rng_seed(&r2, 5);
    int seen_t[H - K + 1] = {0}, seen_l[W - K + 1] = {0}, flips = 0;
    for (int i = 0; i < 400; i++) {
        fl_augment_image(x, C, H, W, K, 1, &r, o);
        fl_augment_image(x, C, H, W, K, 1, &r2, o2);
        assert_memory_equal(o, o2, sizeof o); /* same stream, same crops */
        check_standardized(o, C * K * K);
        int t, l, f;
        locate(o, &t, &l, &f);
        seen_t[t]++;
        seen_l[l]++;
        flips += f;
    }
    for (int i = 0; i <= H - K; i++) {
        assert_true(seen_t[i] > 50); /* 100 expected each */
        assert_true(seen_l[i] > 50);
    }
    assert_true(flips > 150 && flips < 250);
}

static void test_flat_image(void **state)
{
    (void)state;
    float x[C * H * W], o[C * K * K];
    for (int i = 0; i < C * H * W; i++)
        x[i] = 0.5f;
    fl_augment_image(x, C, H, W, K, 0, NULL, o);
    for (int i = 0; i < C * K * K; i++)
        assert_true(o[i] == 0.0f);
}

static void test_dataset(void **state)
{
    (void)state;
    fl_dataset_t d, out;
    fl_dataset_init(&d);
    fl_dataset_init(&out);
    const int64_t shape[3] = {C, H, W};
    assert_int_equal(fl_dataset_alloc(&d, 3, 3, shape, 10), 0);
    for (int i = 0; i < 3; i++) {
        fill(d.x + i * d.dim);
        d.y[i] = 7 - i;
    }
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    assert_int_equal(fl_augment_dataset(&d, K, 1, &r, &out), 0);
    assert_int_equal(out.n, 3);
    assert_int_equal(out.dim, C * K * K);
    assert_int_equal(out.shape[1], K);
    assert_int_equal(out.num_classes, 10);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(out.y[i], 7 - i);
        check_standardized(out.x + i * out.dim, out.dim);
    }
    fl_dataset_free(&out);
    /* Larger than the image, or not an image: refused. */
    assert_int_equal(fl_augment_dataset(&d, H + 1, 0, NULL, &out), FL_EINVAL);
    assert_int_equal(fl_augment_dataset(&d, K, 1, NULL, &out), FL_EINVAL);
    fl_dataset_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_central_crop),
        cmocka_unit_test(test_random_crops),
        cmocka_unit_test(test_flat_image),
        cmocka_unit_test(test_dataset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
