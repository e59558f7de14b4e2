/* libFuzzer target: CIFAR-10 and CIFAR-100 record streams on arbitrary
 * bytes; a success must have read exactly size / record examples. */
#include <stdlib.h>

#include "common/data/cifar.h"
#include "common/data/dataset.h"
#include "tests/fuzz/fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fl_fuzz_file(data, size);
    if (!path)
        return 0;
    for (int classes = 10; classes <= 100; classes += 90) {
        fl_dataset_t d;
        int64_t shape[3] = {3, 32, 32};
        fl_dataset_init(&d);
        if (fl_dataset_alloc(&d, 0, 3, shape, classes))
            return 0;
        if (classes == 100) {
            d.coarse = malloc(sizeof(int32_t));
            d.num_coarse = 20;
        }
        size_t rec = classes == 100 ? 3074 : 3073;
        if (fl_cifar_read_file(path, classes, &d) == 0) {
            if (d.n != size / rec || size % rec != 0)
                abort();
            for (size_t i = 0; i < d.n; i++)
                if (d.y[i] < 0 || d.y[i] >= classes)
                    abort();
        }
        fl_dataset_free(&d);
    }
    return 0;
}
