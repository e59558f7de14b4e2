#include "common/data/cifar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/error.h"
#include "common/base/log.h"

int fl_cifar_read_file(const char *path, int classes, fl_dataset_t *d)
{
    if (!path || !d || (classes != 10 && classes != 100) || d->dim != FL_CIFAR_PIXELS ||
        (classes == 100 && !d->coarse))
        return FL_EINVAL;
    const size_t head = classes == 100 ? 2 : 1, rec = head + FL_CIFAR_PIXELS;
    uint8_t buf[2 + FL_CIFAR_PIXELS];
    float x[FL_CIFAR_PIXELS];
    int rc = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        FL_LOG_E("cifar", "%s: cannot open", path);
        return FL_EIO;
    }
    size_t records = 0;
    for (;;) {
        size_t got = fread(buf, 1, rec, f);
        if (got == 0) {
            if (ferror(f)) {
                FL_LOG_E("cifar", "%s: read error", path);
                rc = FL_EIO;
            }
            break;
        }
        if (got < rec) {
            FL_LOG_E("cifar", "%s: truncated: record %zu has %zu of %zu bytes", path, records,
                     got, rec);
            rc = FL_ETRUNCATED;
            break;
        }
        int32_t y = buf[head - 1];
        if (y >= classes || (head == 2 && buf[0] >= 20)) {
            FL_LOG_E("cifar", "%s: record %zu: label %d out of range (not a CIFAR-%d file?)", path,
                     records, buf[head == 2 ? (buf[0] >= 20 ? 0 : 1) : 0], classes);
            rc = FL_EFORMAT;
            break;
        }
        for (size_t i = 0; i < FL_CIFAR_PIXELS; i++)
            x[i] = (float)buf[head + i] / 255.0f;
        if ((rc = fl_dataset_append(d, x, &y, 0)))
            break;
        if (head == 2)
            d->coarse[d->n - 1] = buf[0];
        records++;
    }
    fclose(f);
    if (!rc && records == 0) {
        FL_LOG_E("cifar", "%s: empty file", path);
        rc = FL_EEMPTY;
    }
    return rc;
}

/* dir itself if it holds `probe`, else dir/sub if that does. */
static int pick_dir(const char *dir, const char *sub, const char *probe, char *out, size_t size)
{
    struct stat st;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, probe);
    if (stat(p, &st) == 0) {
        snprintf(out, size, "%s", dir);
        return 0;
    }
    snprintf(p, sizeof p, "%s/%s/%s", dir, sub, probe);
    if (stat(p, &st) == 0) {
        snprintf(out, size, "%s/%s", dir, sub);
        return 0;
    }
    FL_LOG_E("cifar", "%s: no %s (nor %s/%s): not a CIFAR binary directory", dir, probe, sub,
             probe);
    return FL_ENOTFOUND;
}

int fl_cifar_load(const char *dir, int classes, const char *split, fl_dataset_t *d)
{
    static const char *const c10_train[] = {"data_batch_1.bin", "data_batch_2.bin",
                                            "data_batch_3.bin", "data_batch_4.bin",
                                            "data_batch_5.bin", NULL};
    static const char *const c10_test[] = {"test_batch.bin", NULL};
    static const char *const c100_train[] = {"train.bin", NULL};
    static const char *const c100_test[] = {"test.bin", NULL};
    if (!dir || !split || !d || (classes != 10 && classes != 100))
        return FL_EINVAL;
    int train = strcmp(split, "train") == 0;
    if (!train && strcmp(split, "test") != 0)
        return FL_EINVAL;
    const char *const *files = classes == 10 ? (train ? c10_train : c10_test)
                                             : (train ? c100_train : c100_test);
    char base[4096], path[8192];
    int rc = pick_dir(dir, classes == 10 ? "cifar-10-batches-bin" : "cifar-100-binary", files[0],
                      base, sizeof base);
    if (rc)
        return rc;
    int64_t shape[3] = {3, 32, 32};
    if ((rc = fl_dataset_alloc(d, 0, 3, shape, classes)))
        return rc;
    if (classes == 100) {
        d->coarse = malloc(sizeof(int32_t));
        if (!d->coarse) {
            rc = FL_ENOMEM;
            goto done;
        }
        d->cap = 0; /* the next append regrows every array, coarse included */
        d->num_coarse = 20;
    }
    for (const char *const *f = files; *f; f++) {
        snprintf(path, sizeof path, "%s/%s", base, *f);
        if ((rc = fl_cifar_read_file(path, classes, d)))
            goto done;
    }
    fl_dataset_trim(d);
done:
    if (rc)
        fl_dataset_free(d);
    return rc;
}
