#include "tests/support/benchclock.h"

#include <stdio.h>
#include <time.h>

#include "common/nn/gemm.h"

double fl_bench_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double fl_bench_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int fl_bench_threads(fl_model_t *m, int threads)
{
    int rc = fl_model_set_threads(m, threads);
    if (rc == 0)
        fl_gemm_set_threads(fl_model_gemm_threads(m));
    return rc;
}

int fl_bench_train_steps(fl_model_t *m, const fl_sgd_config_t *cfg, const float *x, const int32_t *y,
                         size_t B, double seconds, const char *name)
{
    fl_sgd_t opt;
    if (fl_sgd_init(&opt, cfg, &m->params))
        return 1;
    double L;
    fl_model_loss(m, x, y, B, FL_MODE_TRAIN, 1, &L, NULL); /* warm-up */
    size_t steps = 0;
    double t0 = fl_bench_wall(), c0 = fl_bench_cpu(), t;
    do {
        fl_model_loss(m, x, y, B, FL_MODE_TRAIN, 1, &L, NULL);
        fl_sgd_step(&opt, &m->params, &m->grads);
        steps++;
        t = fl_bench_wall() - t0;
    } while (t < seconds);
    const double c = fl_bench_cpu() - c0;
    printf("%s  B=%-3zu threads=%d  %7.1f samples/s  %7.1f per CPU-second  (%zu steps, %.1f s, loss %.3f)\n",
           name, B, m->threads, (double)(steps * B) / t, (double)(steps * B) / c, steps, t, L);
    fflush(stdout);
    fl_sgd_free(&opt);
    return 0;
}
