/* libFuzzer target: safetensors decoding of arbitrary bytes, both into a
 * fixed layout (logreg's, as a model load does) and into a layout taken from
 * the file. A success must have written exactly the layout's floats, and a
 * refusal must leave the parameters untouched. */
#include <stdlib.h>
#include <string.h>

#include "common/base/params.h"
#include "common/nn/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fl_params_t p;
    fl_params_init(&p);
    int64_t w[2] = {3, 4}, b[1] = {3};
    if (fl_params_add(&p, "fc.weight", 2, w, FL_PARAM_DECAY) || fl_params_add(&p, "fc.bias", 1, b, 0) ||
        fl_params_alloc(&p))
        abort();
    for (size_t i = 0; i < p.numel; i++)
        p.data[i] = 7.0f;
    if (fl_safetensors_decode(data, size, "fuzz", &p) != 0)
        for (size_t i = 0; i < p.numel; i++)
            if (p.data[i] != 7.0f)
                abort();
    fl_params_free(&p);
    const char *path = fl_fuzz_file(data, size);
    if (!path)
        return 0;
    fl_params_init(&p);
    if (fl_safetensors_load_any(path, &p) == 0) {
        size_t total = 0;
        for (size_t i = 0; i < p.nviews; i++)
            total += p.views[i].numel;
        if (total != p.numel || !p.data)
            abort();
    } else if (p.data || p.nviews) {
        abort();
    }
    fl_params_free(&p);
    return 0;
}
