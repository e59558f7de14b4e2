/* libFuzzer target: the IDX reader (plain or gzipped) on arbitrary bytes,
 * and the image/label loader on the same file as both roles. */
#include "common/data/dataset.h"
#include "common/data/idx.h"
#include "tests/fuzz/fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fl_fuzz_file(data, size);
    if (!path)
        return 0;
    fl_idx_t x;
    if (fl_idx_read(path, &x) == 0) {
        /* A successful read must hold exactly count values. */
        size_t count = 1;
        for (int i = 0; i < x.ndim; i++)
            count *= x.dims[i];
        if (count != x.count)
            abort();
        /* Integer types never decode to NaN; reading every value also lets
         * ASan check that count values were really allocated. */
        for (size_t i = 0; i < x.count; i++)
            if (x.values[i] != x.values[i] && x.type != 0x0D && x.type != 0x0E)
                abort();
        fl_idx_free(&x);
    }
    fl_dataset_t d;
    fl_dataset_init(&d);
    if (fl_idx_load_images(path, path, 1, &d) == 0) {
        for (size_t i = 0; i < d.n * d.dim; i++)
            if (!(d.x[i] >= 0.0f && d.x[i] <= 1.0f))
                abort();
        for (size_t i = 0; i < d.n; i++)
            if (d.y[i] < 0 || d.y[i] >= d.num_classes)
                abort();
    }
    fl_dataset_free(&d);
    return 0;
}
