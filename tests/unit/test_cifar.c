/* CIFAR binary: records written here read back pixel for pixel and label for
 * label (both layouts, both directory layouts); bad files refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/data/cifar.h"
#include "common/data/dataset.h"
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

static uint8_t pixel(size_t file, size_t rec, size_t i) { return (uint8_t)(file * 31 + rec * 17 + i * 5); }

/* Writes `n` records; CIFAR-100 records get coarse = rec % 20, fine = (rec * 7) % 100. */
static void write_file(const char *path, int classes, size_t file, size_t n)
{
    size_t head = classes == 100 ? 2 : 1, rec = head + FL_CIFAR_PIXELS;
    uint8_t *b = malloc(n * rec);
    assert_non_null(b);
    for (size_t r = 0; r < n; r++) {
        uint8_t *p = b + r * rec;
        if (classes == 100) {
            p[0] = (uint8_t)(r % 20);
            p[1] = (uint8_t)((r * 7) % 100);
        } else {
            p[0] = (uint8_t)((r + file) % 10);
        }
        for (size_t i = 0; i < FL_CIFAR_PIXELS; i++)
            p[head + i] = pixel(file, r, i);
    }
    assert_int_equal(fl_test_write(path, b, n * rec, 0), 0);
    free(b);
}

static void test_cifar10(void **state)
{
    (void)state;
    char sub[512], path[700];
    snprintf(sub, sizeof sub, "%s/cifar-10-batches-bin", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    for (size_t f = 1; f <= 5; f++) {
        snprintf(path, sizeof path, "%s/data_batch_%zu.bin", sub, f);
        write_file(path, 10, f, 3);
    }
    snprintf(path, sizeof path, "%s/test_batch.bin", sub);
    write_file(path, 10, 0, 4);
    fl_dataset_t d;
    fl_dataset_init(&d);
    /* The archive's layout: the reader finds the subdirectory itself. */
    assert_int_equal(fl_cifar_load(dir, 10, "train", &d), 0);
    assert_int_equal(d.n, 15);
    assert_true(d.ndim == 3 && d.shape[0] == 3 && d.shape[1] == 32 && d.shape[2] == 32);
    assert_int_equal(d.num_classes, 10);
    assert_null(d.coarse);
    for (size_t f = 1; f <= 5; f++)
        for (size_t r = 0; r < 3; r++) {
            size_t e = (f - 1) * 3 + r;
            assert_int_equal(d.y[e], (int)((r + f) % 10));
            for (size_t i = 0; i < FL_CIFAR_PIXELS; i++)
                assert_float_equal(d.x[e * FL_CIFAR_PIXELS + i], pixel(f, r, i) / 255.0f, 1e-7);
        }
    fl_dataset_free(&d);
    assert_int_equal(fl_cifar_load(sub, 10, "test", &d), 0);
    assert_int_equal(d.n, 4);
    fl_dataset_free(&d);
    /* A truncated batch: the whole load fails, nothing half-loaded remains. */
    snprintf(path, sizeof path, "%s/data_batch_3.bin", sub);
    uint8_t part[100] = {1};
    assert_int_equal(fl_test_write(path, part, sizeof part, 0), 0);
    assert_int_equal(fl_cifar_load(dir, 10, "train", &d), FL_ETRUNCATED);
    assert_null(d.x);
    assert_int_equal(d.n, 0);
    /* An empty batch. */
    assert_int_equal(fl_test_write(path, "", 0, 0), 0);
    assert_int_equal(fl_cifar_load(dir, 10, "train", &d), FL_EEMPTY);
    /* A label of 10 is no CIFAR-10 label. */
    uint8_t rec[1 + FL_CIFAR_PIXELS] = {10};
    assert_int_equal(fl_test_write(path, rec, sizeof rec, 0), 0);
    assert_int_equal(fl_cifar_load(dir, 10, "train", &d), FL_EFORMAT);
    snprintf(path, sizeof path, "%s/data_batch_5.bin", sub);
    assert_int_equal(remove(path), 0);
    snprintf(path, sizeof path, "%s/data_batch_3.bin", sub);
    write_file(path, 10, 3, 3);
    assert_int_equal(fl_cifar_load(dir, 10, "train", &d), FL_EIO);
    assert_int_equal(fl_cifar_load(dir, 100, "train", &d), FL_ENOTFOUND);
}

static void test_cifar100(void **state)
{
    (void)state;
    char path[700];
    snprintf(path, sizeof path, "%s/train.bin", dir);
    write_file(path, 100, 1, 50);
    snprintf(path, sizeof path, "%s/test.bin", dir);
    write_file(path, 100, 2, 7);
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_cifar_load(dir, 100, "train", &d), 0);
    assert_int_equal(d.n, 50);
    assert_int_equal(d.num_classes, 100);
    assert_int_equal(d.num_coarse, 20);
    assert_non_null(d.coarse);
    for (size_t r = 0; r < 50; r++) {
        assert_int_equal(d.coarse[r], (int)(r % 20));
        assert_int_equal(d.y[r], (int)((r * 7) % 100));
        assert_float_equal(d.x[r * FL_CIFAR_PIXELS + 1000], pixel(1, r, 1000) / 255.0f, 1e-7);
    }
    fl_dataset_free(&d);
    assert_int_equal(fl_cifar_load(dir, 100, "test", &d), 0);
    assert_int_equal(d.n, 7);
    fl_dataset_free(&d);
    /* Coarse label 20 is out of range. */
    uint8_t rec[2 + FL_CIFAR_PIXELS] = {20, 5};
    assert_int_equal(fl_test_write(path, rec, sizeof rec, 0), 0);
    assert_int_equal(fl_cifar_load(dir, 100, "test", &d), FL_EFORMAT);
    assert_int_equal(fl_cifar_load(dir, 100, "valid", &d), FL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cifar10),
        cmocka_unit_test(test_cifar100),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
