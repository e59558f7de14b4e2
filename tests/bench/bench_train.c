/* bench_train: training samples/s of every model at batch 20 and 64 with 1
 * and 2 GEMM threads, on synthetic data of each model's paper shapes (the
 * speed of a step does not depend on the pixel values). Each figure is
 * ~1.5 s of steady-state training after one warm-up step.
 * FEDOPT_BENCH_MODELS=cnn,mlp restricts the models. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clientopt.h"
#include "common/models.h"
#include "common/nn/gemm.h"
#include "common/rng.h"
#include "tests/support/benchclock.h"

static double bench(fl_model_t *m, size_t batch, int threads, double *per_cpu)
{
    /* Conv and LSTM models split each batch across replicas, dense ones
     * thread their GEMMs (fl_model_set_threads). */
    *per_cpu = 0.0;
    if (fl_bench_threads(m, threads))
        return 0.0;
    size_t in = fl_model_in_dim(m), ld = m->spec.label_dim;
    float *x = malloc(batch * in * sizeof(float));
    int32_t *y = malloc(batch * ld * sizeof(int32_t));
    fl_rng_t r;
    fl_rng_seed(&r, 2);
    for (size_t i = 0; i < batch * in; i++)
        x[i] = m->info->loss == FL_LOSS_SIGMOID_BCE ? (float)(fl_rng_u32(&r) % 50 == 0)
               : m->info->loss == FL_LOSS_SEQ_CE
                   ? (float)fl_rng_below(&r, (uint64_t)m->spec.num_classes) /* token ids */
                   : (float)fl_rng_uniform(&r);
    for (size_t i = 0; i < batch * ld; i++)
        y[i] = m->info->loss == FL_LOSS_SIGMOID_BCE ? (int32_t)(fl_rng_u32(&r) % 100 == 0)
                                                    : (int32_t)fl_rng_below(&r, (uint64_t)m->spec.num_classes);
    fl_sgd_config_t cfg = {.lr = 0.01f};
    fl_sgd_t opt;
    fl_sgd_init(&opt, &cfg, &m->params);
    double L;
    fl_model_loss(m, x, y, batch, FL_MODE_TRAIN, 1, &L, NULL);
    fl_sgd_step(&opt, &m->params, &m->grads);
    double t0 = fl_bench_wall(), c0 = fl_bench_cpu(), el;
    size_t steps = 0;
    do {
        fl_model_loss(m, x, y, batch, FL_MODE_TRAIN, 1, &L, NULL);
        fl_sgd_step(&opt, &m->params, &m->grads);
        steps++;
        el = fl_bench_wall() - t0;
    } while (el < 1.5);
    *per_cpu = (double)(steps * batch) / (fl_bench_cpu() - c0);
    fl_sgd_free(&opt);
    free(x);
    free(y);
    return (double)(steps * batch) / el;
}

int main(void)
{
    const char *only = getenv("FEDOPT_BENCH_MODELS");
    printf("gemm backend: %s\n", fl_gemm_backend());
    printf("training samples/s: wall clock, and [per CPU-second of this process]\n");
    printf("%-12s %18s %18s %18s %18s\n", "model", "B20 1 thread", "B20 2 threads",
           "B64 1 thread", "B64 2 threads");
    for (size_t i = 0; i < fl_models_count(); i++) {
        const fl_model_info_t *info = fl_models_at(i);
        if (only && !strstr(only, info->name))
            continue;
        fl_model_t *m;
        if (fl_model_create(info->name, &info->paper, &m))
            return 1;
        fl_model_init_params(m, 1);
        printf("%-12s", info->name);
        fflush(stdout);
        for (int b = 0; b < 2; b++)
            for (int t = 1; t <= 2; t++) {
                double pc, w = bench(m, b ? 64 : 20, t, &pc);
                printf(" %8.0f [%7.0f]", w, pc);
                fflush(stdout);
            }
        printf("\n");
        fl_model_free(m);
    }
    return 0;
}
