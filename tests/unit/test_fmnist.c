/* Image/label pairs through fl_idx_load_images (plain and gzipped) and the
 * real Fashion-MNIST from Debian's package: counts, classes and pixel
 * statistics. (The IDX parser's bad-file cases are in test_idx.c.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "common/data/idx.h"
#include "common/base/error.h"

static char dir[] = "/tmp/fedopt-fmnist-XXXXXX";

static const char *path(const char *name)
{
    /* Rotating buffers so two paths can be passed to one call. */
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void write_file(const char *name, const uint8_t *b, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path(name), "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, b, (unsigned)n), (int)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path(name), "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(b, 1, n, f), n);
        fclose(f);
    }
}

/* An IDX u8 image file of n images h x w with pixel = (i*7 + j) & 0xff. */
static size_t make_images(uint8_t *b, uint32_t n, uint32_t h, uint32_t w)
{
    uint8_t hdr[16] = {0, 0, 8, 3, n >> 24, n >> 16, n >> 8, n, h >> 24, h >> 16, h >> 8, h,
                       w >> 24, w >> 16, w >> 8, w};
    memcpy(b, hdr, 16);
    for (size_t i = 0; i < (size_t)n * h * w; i++)
        b[16 + i] = (uint8_t)((i * 7 + i / 3) & 0xff);
    return 16 + (size_t)n * h * w;
}

static size_t make_labels(uint8_t *b, uint32_t n)
{
    uint8_t hdr[8] = {0, 0, 8, 1, n >> 24, n >> 16, n >> 8, n};
    memcpy(b, hdr, 8);
    for (uint32_t i = 0; i < n; i++)
        b[8 + i] = (uint8_t)(i % 10);
    return 8 + n;
}

static void test_roundtrip_plain_and_gz(void **s)
{
    uint8_t img[16 + 12 * 4 * 5], lab[8 + 12];
    size_t ni = make_images(img, 12, 4, 5), nl = make_labels(lab, 12);
    for (int gz = 0; gz < 2; gz++) {
        write_file("img", img, ni, gz);
        write_file("lab", lab, nl, gz);
        fl_dataset_t d;
        fl_dataset_init(&d);
        assert_int_equal(fl_idx_load_images(path("img"), path("lab"), 10, &d), 0);
        assert_int_equal(d.n, 12);
        assert_int_equal(d.dim, 20);
        assert_int_equal(d.shape[0], 1);
        assert_int_equal(d.shape[1], 4);
        assert_int_equal(d.shape[2], 5);
        assert_int_equal(d.num_classes, 10);
        assert_int_equal(d.label_dim, 1);
        for (size_t i = 0; i < 12 * 20; i++)
            assert_float_equal(d.x[i], img[16 + i] / 255.0, 1e-7);
        for (int i = 0; i < 12; i++)
            assert_int_equal(d.y[i], i % 10);
        fl_dataset_free(&d);
    }
}

static void test_count_mismatch(void **s)
{
    uint8_t img[16 + 3 * 2 * 2], lab[8 + 4];
    size_t n = make_images(img, 3, 2, 2);
    make_labels(lab, 4);
    write_file("img", img, n, 0);
    write_file("lab", lab, sizeof lab, 0);
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_idx_load_images(path("img"), path("lab"), 10, &d), FL_ESHAPE);
    assert_null(d.x);
}

static void test_fashion_mnist(void **s)
{
    fl_dataset_t tr, te;
    fl_dataset_init(&tr);
    fl_dataset_init(&te);
    assert_int_equal(fl_fmnist_load("train", &tr), 0);
    assert_int_equal(fl_fmnist_load("test", &te), 0);
    assert_int_equal(tr.n, 60000);
    assert_int_equal(te.n, 10000);
    assert_int_equal(tr.dim, 784);
    assert_int_equal(tr.num_classes, 10);
    int per[10] = {0};
    for (size_t i = 0; i < tr.n; i++)
        per[tr.y[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(per[c], 6000);
    /* Pixel statistics of the real train images: mean 0.2860, std 0.3530
     * (the figures every Fashion-MNIST normalisation uses). */
    double sum = 0, sum2 = 0;
    for (size_t i = 0; i < tr.n * tr.dim; i++) {
        sum += tr.x[i];
        sum2 += (double)tr.x[i] * tr.x[i];
    }
    double mean = sum / (double)(tr.n * tr.dim);
    double sd = sqrt(sum2 / (double)(tr.n * tr.dim) - mean * mean);
    assert_float_equal(mean, 0.2860, 5e-4);
    assert_float_equal(sd, 0.3530, 5e-4);
    fl_dataset_free(&tr);
    fl_dataset_free(&te);
    assert_int_equal(fl_fmnist_load("validation", &te), FL_EINVAL);
}

static int setup(void **s) { return mkdtemp(dir) ? 0 : -1; }

static int teardown(void **s)
{
    const char *names[] = {"img", "lab"};
    for (int i = 0; i < 2; i++)
        unlink(path(names[i]));
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_plain_and_gz),
        cmocka_unit_test(test_count_mismatch),
        cmocka_unit_test(test_fashion_mnist),
    };
    return cmocka_run_group_tests_name("fmnist", tests, setup, teardown);
}
