/* IDX: files written here (plain and gzipped) read back value for value;
 * truncated, lying, empty, wrong-magic and trailing-data files refused; the
 * directory loader finds train/test files and un-transposes EMNIST. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/data/dataset.h"
#include "common/data/idx.h"
#include "common/base/error.h"
#include "tests/support/datafiles.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    return fl_test_mkdtemp(dir, sizeof dir);
}

static int teardown(void **state)
{
    (void)state;
    fl_test_rmtree(dir);
    return 0;
}

/* Builds an IDX u8 file image: header for dims, then data. */
static size_t idx_u8(uint8_t *buf, const uint32_t *dims, int ndim, const uint8_t *data)
{
    size_t p = 0, count = 1;
    buf[p++] = 0;
    buf[p++] = 0;
    buf[p++] = 0x08;
    buf[p++] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        buf[p++] = (uint8_t)(dims[i] >> 24);
        buf[p++] = (uint8_t)(dims[i] >> 16);
        buf[p++] = (uint8_t)(dims[i] >> 8);
        buf[p++] = (uint8_t)dims[i];
        count *= dims[i];
    }
    memcpy(buf + p, data, count);
    return p + count;
}

static void write_set_in(const char *where, const char *prefix, uint32_t n, uint32_t h,
                         uint32_t w, int gz)
{
    uint8_t *px = malloc((size_t)n * h * w), *lb = malloc(n);
    uint8_t *buf = malloc((size_t)n * h * w + 64);
    assert_non_null(px);
    assert_non_null(buf);
    for (size_t i = 0; i < (size_t)n * h * w; i++)
        px[i] = (uint8_t)(i * 7 + 3);
    for (uint32_t i = 0; i < n; i++)
        lb[i] = (uint8_t)(i % 10);
    char path[512];
    uint32_t dx[3] = {n, h, w}, dy[1] = {n};
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", where, prefix, gz ? ".gz" : "");
    assert_int_equal(fl_test_write(path, buf, idx_u8(buf, dx, 3, px), gz), 0);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", where, prefix, gz ? ".gz" : "");
    assert_int_equal(fl_test_write(path, buf, idx_u8(buf, dy, 1, lb), gz), 0);
    free(px);
    free(lb);
    free(buf);
}

static void write_set(const char *prefix, uint32_t n, uint32_t h, uint32_t w, int gz)
{
    write_set_in(dir, prefix, n, h, w, gz);
}

static void test_read_types(void **state)
{
    (void)state;
    /* i16 big-endian, 2x2, and f32. */
    uint8_t i16[] = {0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE, 0x80, 0x00, 0, 5};
    char path[512];
    snprintf(path, sizeof path, "%s/a.idx", dir);
    assert_int_equal(fl_test_write(path, i16, sizeof i16, 0), 0);
    fl_idx_t x;
    assert_int_equal(fl_idx_read(path, &x), 0);
    assert_int_equal(x.count, 4);
    assert_true(x.values[0] == 258 && x.values[1] == -2 && x.values[2] == -32768 &&
                x.values[3] == 5);
    fl_idx_free(&x);
    uint8_t f32[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0}; /* 1.5f */
    assert_int_equal(fl_test_write(path, f32, sizeof f32, 1), 0);
    assert_int_equal(fl_idx_read(path, &x), 0);
    assert_true(x.values[0] == 1.5);
    fl_idx_free(&x);
}

static void test_bad_files(void **state)
{
    (void)state;
    char path[512];
    fl_idx_t x;
    snprintf(path, sizeof path, "%s/bad.idx", dir);
    /* Empty. */
    assert_int_equal(fl_test_write(path, "", 0, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), FL_ETRUNCATED);
    /* Wrong magic. */
    uint8_t m[] = {1, 0, 8, 1, 0, 0, 0, 1, 7};
    assert_int_equal(fl_test_write(path, m, sizeof m, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), FL_EFORMAT);
    /* Unknown type. */
    uint8_t t[] = {0, 0, 0x07, 1, 0, 0, 0, 1, 7};
    assert_int_equal(fl_test_write(path, t, sizeof t, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), FL_EFORMAT);
    /* A header that claims 1,000,000 bytes over 3 real ones. */
    uint8_t lie[] = {0, 0, 8, 1, 0, 0x0F, 0x42, 0x40, 1, 2, 3};
    assert_int_equal(fl_test_write(path, lie, sizeof lie, 1), 0);
    assert_int_equal(fl_idx_read(path, &x), FL_ETRUNCATED);
    /* A header that claims 2^32 * 2^32 elements. */
    uint8_t huge[] = {0, 0, 8, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1};
    assert_int_equal(fl_test_write(path, huge, sizeof huge, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), FL_ETOOBIG);
    /* Trailing data. */
    uint8_t tail[] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3};
    assert_int_equal(fl_test_write(path, tail, sizeof tail, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), FL_EFORMAT);
    /* Truncated header. */
    uint8_t th[] = {0, 0, 8, 3, 0, 0};
    assert_int_equal(fl_test_write(path, th, sizeof th, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), FL_ETRUNCATED);
    snprintf(path, sizeof path, "%s/missing.idx", dir);
    assert_int_equal(fl_idx_read(path, &x), FL_EIO);
}

/* Zero-sized dimensions, decided on purpose: a plain IDX array with one
 * ([0, 4]) is a valid empty array, while an image set with no images or
 * images of zero height or width is refused with its own error. */
static void test_zero_sized_dims(void **state)
{
    (void)state;
    char path[512], lp[512];
    fl_idx_t x;
    snprintf(path, sizeof path, "%s/zero.idx", dir);
    uint8_t z[] = {0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 4};
    assert_int_equal(fl_test_write(path, z, sizeof z, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), 0);
    assert_int_equal(x.count, 0);
    fl_idx_free(&x);
    /* A zero first dimension and huge others: still zero elements, no overflow. */
    uint8_t zh[] = {0, 0, 8, 3, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    assert_int_equal(fl_test_write(path, zh, sizeof zh, 0), 0);
    assert_int_equal(fl_idx_read(path, &x), 0);
    assert_int_equal(x.count, 0);
    fl_idx_free(&x);
    static const uint32_t sets[][3] = {{0, 28, 28}, {3, 0, 28}, {3, 28, 0}};
    static const int want[] = {FL_EEMPTY, FL_EFORMAT, FL_EFORMAT};
    for (int i = 0; i < 3; i++) {
        write_set("zero", sets[i][0], sets[i][1], sets[i][2], 0);
        snprintf(path, sizeof path, "%s/zero-images-idx3-ubyte", dir);
        snprintf(lp, sizeof lp, "%s/zero-labels-idx1-ubyte", dir);
        fl_dataset_t d = {0};
        assert_int_equal(fl_idx_load_images(path, lp, 10, &d), want[i]);
        assert_null(d.x);
        fl_dataset_free(&d);
    }
}

static void test_load_dir(void **state)
{
    (void)state;
    write_set("train", 12, 5, 4, 1);
    write_set("t10k", 3, 5, 4, 0);
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_idx_load_dir(dir, "train", &d), 0);
    assert_int_equal(d.n, 12);
    assert_int_equal(d.ndim, 3);
    assert_true(d.shape[0] == 1 && d.shape[1] == 5 && d.shape[2] == 4);
    assert_int_equal(d.num_classes, 10);
    for (size_t i = 0; i < 12 * 20; i++)
        assert_float_equal(d.x[i], (float)(uint8_t)(i * 7 + 3) / 255.0f, 1e-7);
    for (size_t i = 0; i < 12; i++)
        assert_int_equal(d.y[i], (int)(i % 10));
    fl_dataset_free(&d);
    assert_int_equal(fl_idx_load_dir(dir, "test", &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.num_classes, 3);
    fl_dataset_free(&d);
    assert_int_equal(fl_idx_load_dir(dir, "valid", &d), FL_EINVAL);
    /* A second train image file makes the choice ambiguous. */
    write_set("other-train", 2, 5, 4, 0);
    assert_int_equal(fl_idx_load_dir(dir, "train", &d), FL_ENOTFOUND);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/nothing-here", dir);
    assert_int_equal(fl_idx_load_dir(sub, "train", &d), FL_ENOTFOUND);
}

static void test_emnist_transposed(void **state)
{
    (void)state;
    char sub[600];
    snprintf(sub, sizeof sub, "%s/emnist", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_set_in(sub, "emnist-digits-train", 2, 3, 3, 1);
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_idx_load_dir(sub, "train", &d), 0);
    assert_int_equal(d.n, 2);
    /* Stored column-major: element (r, c) of the file is pixel (c, r). */
    for (size_t i = 0; i < 2; i++)
        for (size_t r = 0; r < 3; r++)
            for (size_t c = 0; c < 3; c++)
                assert_float_equal(d.x[i * 9 + r * 3 + c],
                                   (float)(uint8_t)((i * 9 + c * 3 + r) * 7 + 3) / 255.0f, 1e-7);
    fl_dataset_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_types),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_zero_sized_dims),
        cmocka_unit_test(test_load_dir),
        cmocka_unit_test(test_emnist_transposed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
