/* Training throughput of resnet18gn (ResNet-18 v2, group norm, 24x24x3
 * crops, 10 classes): samples/s of forward + backward + SGD step on random
 * images, at batch 20 (the paper's) and 64, on 1 thread and on 2 (each
 * taking half of every batch). The reference is PyTorch on the same
 * machine: tests/bench/torch_reference.py measures it (the figures
 * from another machine are in docs/benchmarks.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/nn/clientopt.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"
#include "tests/support/benchclock.h"

static int run(fl_model_t *m, size_t B, double seconds)
{
    const size_t D = fl_model_in_dim(m);
    float *x = malloc(B * D * sizeof(float));
    int32_t *y = malloc(B * sizeof(int32_t));
    fl_sgd_config_t cfg = {.lr = 0.01f, .weight_decay = 1e-4f};
    if (!x || !y) {
        free(x);
        free(y);
        return 1;
    }
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    for (size_t i = 0; i < B * D; i++)
        x[i] = (float)fl_rng_normal(&r);
    for (size_t i = 0; i < B; i++)
        y[i] = (int32_t)fl_rng_below(&r, 10);
    int rc = fl_bench_train_steps(m, &cfg, x, y, B, seconds, "resnet18gn");
    free(x);
    free(y);
    return rc;
}

int main(int argc, char **argv)
{
    fl_gemm_fix_kernel(argc, argv);
    const fl_model_info_t *info = fl_models_find("resnet18gn");
    fl_model_t *m = NULL;
    if (!info || fl_model_create("resnet18gn", &info->paper, &m))
        return 1;
    fl_model_init_params(m, 1);
    printf("resnet18gn: %zu parameters, GEMM %s\n", m->params.numel, fl_gemm_backend());
    const double secs = getenv("FEDOPT_BENCH_SECONDS") ? atof(getenv("FEDOPT_BENCH_SECONDS")) : 8;
    int rc = 0;
    for (int threads = 1; threads <= 2; threads++) {
        if (fl_bench_threads(m, threads))
            return 1;
        rc |= run(m, 20, secs);
        rc |= run(m, 64, secs);
    }
    fl_model_free(m);
    return rc;
}
