/* Training throughput of charlstm (embedding 90x8, LSTM 256 x 2, dense 90,
 * sequences of 80): samples/s of forward + backward + SGD step on random
 * token sequences, at batch 4 (the paper's Shakespeare batch) and 20, on 1
 * thread and on 2 (each taking half of a batch of 16 or more). The reference
 * is PyTorch on the same machine: tests/bench/torch_reference.py measures it
 * (the figures from another machine are in docs/benchmarks.md). */
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
    const size_t T = 80;
    float *x = malloc(B * T * sizeof(float));
    int32_t *y = malloc(B * T * sizeof(int32_t));
    fl_sgd_config_t cfg = {.lr = 0.5f};
    if (!x || !y) {
        free(x);
        free(y);
        return 1;
    }
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    for (size_t i = 0; i < B * T; i++) {
        x[i] = (float)(1 + fl_rng_below(&r, 89));
        y[i] = (int32_t)(1 + fl_rng_below(&r, 89));
    }
    int rc = fl_bench_train_steps(m, &cfg, x, y, B, seconds, "charlstm");
    free(x);
    free(y);
    return rc;
}

int main(int argc, char **argv)
{
    fl_gemm_fix_kernel(argc, argv);
    const fl_model_info_t *info = fl_models_find("charlstm");
    fl_model_t *m = NULL;
    if (!info || fl_model_create("charlstm", &info->paper, &m))
        return 1;
    fl_model_init_params(m, 1);
    printf("charlstm: %zu parameters, GEMM %s\n", m->params.numel, fl_gemm_backend());
    const double secs = getenv("FEDOPT_BENCH_SECONDS") ? atof(getenv("FEDOPT_BENCH_SECONDS")) : 5;
    int rc = 0;
    for (int threads = 1; threads <= 2; threads++) {
        if (fl_bench_threads(m, threads))
            return 1;
        rc |= run(m, 4, secs);
        rc |= run(m, 20, secs);
    }
    fl_model_free(m);
    return rc;
}
