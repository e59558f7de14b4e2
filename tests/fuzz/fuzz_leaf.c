/* libFuzzer target: LEAF JSON documents through fl_leaf_parse; a success
 * must give consistent arrays (groups in range, labels in range). */
#include <stdlib.h>

#include "common/data/dataset.h"
#include "common/data/leaf.h"
#include "tests/fuzz/fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fl_fuzz_quiet();
    fl_dataset_t d;
    fl_dataset_init(&d);
    if (fl_leaf_parse("fuzz", (const char *)data, size, &d) == 0 && d.x) {
        for (size_t i = 0; i < d.n; i++) {
            if (d.group[i] >= d.num_groups)
                abort();
            for (size_t j = 0; j < d.label_dim; j++)
                if (d.y[i * d.label_dim + j] < 0 || d.y[i * d.label_dim + j] >= d.num_classes)
                    abort();
        }
    }
    fl_dataset_free(&d);
    return 0;
}
