/* Training throughput of resnet18gn (ResNet-18 v2, group norm, 24x24x3
 * crops, 10 classes): samples/s of forward + backward + SGD step on random
 * images, at batch 20 (the paper's) and 64, on 1 GEMM thread and on 2.
 * Reference (the issue): PyTorch 1.13 on this machine, ~32 samples/s at
 * B = 20 on 1 thread, ~60 on 2. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/clientopt.h"
#include "common/models.h"
#include "common/nn/gemm.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): on a shared machine,
 * samples per CPU-second is the figure that other load does not distort
 * (for one thread it is the unloaded samples/s, give or take cache effects). */
static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run(fl_model_t *m, size_t B, double seconds)
{
    const size_t D = fl_model_in_dim(m);
    float *x = malloc(B * D * sizeof(float));
    int32_t *y = malloc(B * sizeof(int32_t));
    fl_sgd_t opt;
    fl_sgd_config_t cfg = {.lr = 0.01f, .weight_decay = 1e-4f};
    if (!x || !y || fl_sgd_init(&opt, &cfg, &m->params))
        return 1;
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    for (size_t i = 0; i < B * D; i++)
        x[i] = (float)fl_rng_normal(&r);
    for (size_t i = 0; i < B; i++)
        y[i] = (int32_t)fl_rng_below(&r, 10);
    double L;
    fl_model_loss(m, x, y, B, FL_MODE_TRAIN, 1, &L, NULL); /* warm-up */
    size_t steps = 0;
    double t0 = now(), c0 = cpu(), t;
    do {
        fl_model_loss(m, x, y, B, FL_MODE_TRAIN, 1, &L, NULL);
        fl_sgd_step(&opt, &m->params, &m->grads);
        steps++;
        t = now() - t0;
    } while (t < seconds);
    const double c = cpu() - c0;
    printf("resnet18gn  B=%-3zu threads=%d  %6.1f samples/s  %6.1f per CPU-second  (%zu steps, %.1f s, loss %.3f)\n",
           B, fl_gemm_get_threads(), (double)(steps * B) / t, (double)(steps * B) / c, steps, t, L);
    fflush(stdout);
    fl_sgd_free(&opt);
    free(x);
    free(y);
    return 0;
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
        fl_gemm_set_threads(threads);
        rc |= run(m, 20, secs);
        rc |= run(m, 64, secs);
    }
    fl_model_free(m);
    return rc;
}
