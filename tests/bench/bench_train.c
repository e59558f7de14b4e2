/* bench_train: training samples/s of every model at batch 20 and 64 with 1
 * and 2 GEMM threads, on synthetic data of each model's paper shapes (the
 * speed of a step does not depend on the pixel values). Each figure is
 * ~1.5 s of steady-state training after one warm-up step.
 * FEDOPT_BENCH_MODELS=cnn,mlp restricts the models, FEDOPT_BENCH_SETTINGS=20x1,64x2
 * the settings (batch x threads; the others print "-"), and
 * FEDOPT_BENCH_SECONDS the seconds per figure (tests/bench/torch_pairs.sh
 * uses these for its back-to-back runs against PyTorch).
 *
 * Under each model's row, the GEMMs as they run inside those steps (the
 * process-wide timer of gemm.h, on only while steps are timed): their share
 * of the step's wall time, their GFLOP/s, and that rate as a percentage of
 * a square 1024^3 sgemm (issue 3's "measured sgemm rate") measured in this
 * process after that model's steps, with the OpenBLAS thread count each of
 * their GEMM calls had; measuring it next to the steps rather than once
 * keeps the ratio meaningful on a shared machine whose load comes and goes.
 * A split model (cnn and the other conv/LSTM models at 2 threads) runs its
 * parts' GEMMs side by side on one OpenBLAS thread each: its share is GEMM
 * seconds / (parts * step seconds) and its rate is per part, against the
 * 1-thread square.
 * FEDOPT_BENCH_CONV=own keeps every conv2d layer on its own im2col/Winograd
 * path, =dnnl puts every one on oneDNN (where built in); unset, each layer
 * takes the default choice (common/nn/conv2d.h); =dnnl-direct keeps the
 * default choice but no oneDNN Winograd (fl__dnnl_set_winograd). The first model's conv
 * layers' oneDNN implementations are printed before the table.
 * FEDOPT_BENCH_GEMM=own runs the dense and LSTM layers' products on
 * fl_gemm's own path (OpenBLAS), =dnnl every one of them that can on
 * oneDNN's sgemm; unset, each layer's default (fl__gemm_via in gemm.h). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/nn/clientopt.h"
#include "common/nn/conv2d.h"
#include "common/nn/dnnl.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"
#include "common/base/rng.h"
#include "tests/support/benchclock.h"

/* What the GEMMs did during one bench() measurement. */
typedef struct {
    double share;  /* fraction of the step wall time (per part) inside GEMM */
    double gflops; /* GFLOP/s inside GEMM, per calling thread */
    int blas;      /* OpenBLAS threads each call had */
    double conv;   /* oneDNN convolutions' GFLOP per CPU-second of their threads (0: none) */
} gemm_in_step_t;

static double bench_seconds = 1.5;

static double bench(fl_model_t *m, size_t batch, int threads, double *per_cpu, gemm_in_step_t *g)
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
    /* The timer's two clock reads per GEMM call are a small share even of
     * the smallest step (logreg, B = 20), less elsewhere; docs/benchmarks.md
     * has the figures. */
    fl__gemm_timing(1);
    double gs0 = fl__gemm_seconds(), cs0 = fl__gemm_conv_cpu_seconds();
    uint64_t gf0 = fl__gemm_timed_flops(), cf0 = fl__gemm_conv_timed_flops();
    double t0 = fl_bench_wall(), c0 = fl_bench_cpu(), el;
    size_t steps = 0;
    do {
        fl_model_loss(m, x, y, batch, FL_MODE_TRAIN, 1, &L, NULL);
        fl_sgd_step(&opt, &m->params, &m->grads);
        steps++;
        el = fl_bench_wall() - t0;
    } while (el < bench_seconds);
    *per_cpu = (double)(steps * batch) / (fl_bench_cpu() - c0);
    fl__gemm_timing(0);
    double gs = fl__gemm_seconds() - gs0;
    uint64_t gf = fl__gemm_timed_flops() - gf0;
    double cs = fl__gemm_conv_cpu_seconds() - cs0;
    g->conv = cs > 0 ? (double)(fl__gemm_conv_timed_flops() - cf0) / cs / 1e9 : 0.0;
    /* fl_model_loss splits a batch into m->parts parts (B = 20 and 64
     * both give every part at least its minimum of 8 examples). */
    g->share = gs / ((double)m->parts * el);
    g->gflops = gs > 0 ? (double)gf / gs / 1e9 : 0.0;
    g->blas = fl_model_gemm_threads(m);
    fl_sgd_free(&opt);
    free(x);
    free(y);
    return (double)(steps * batch) / el;
}

/* The machine's measured peak for issue 20's conv figure: GFLOP per
 * CPU-second of oneDNN's 1024^3 sgemm on one thread (its AVX-512 kernel,
 * the fastest product this machine ran; bench_gemm's square rows), best of
 * three 0.15 s windows; per CPU-second of the thread, like the conv
 * figure, so neither counts the time the scheduler gives to others.
 * 0 where oneDNN is not built in. */
static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *sq_a, *sq_b, *sq_c;

static double peak_rate(void)
{
    const int n = 1024;
    double best = 0.0;
    if (fl__dnnl_sgemm(1, 0, 0, n, n, n, 1.0f, sq_a, n, sq_b, n, 0.0f, sq_c, n))
        return 0.0;
    for (int w = 0; w < 3; w++) {
        long reps = 0;
        double t0 = fl_bench_wall(), c0 = thread_cpu();
        do {
            fl__dnnl_sgemm(1, 0, 0, n, n, n, 1.0f, sq_a, n, sq_b, n, 0.0f, sq_c, n);
            reps++;
        } while (fl_bench_wall() - t0 < 0.15);
        double cpu = thread_cpu() - c0;
        if (cpu > 0 && 2.0 * n * n * n * (double)reps / cpu / 1e9 > best)
            best = 2.0 * n * n * n * (double)reps / cpu / 1e9;
    }
    return best;
}

/* Whether the comma-separated list holds this setting ("20x1"). */
static int setting_listed(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)) != NULL; p += n)
        if ((p == list || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return 1;
    return 0;
}

/* The square product's operands, 1024 x 1024 each. */
#define SQ_N 1024

/* GFLOP/s of a square 1024^3 sgemm through fl_gemm with `threads` OpenBLAS
 * threads: the best of three 0.15 s windows, as the least disturbed by other
 * load on a shared machine. Leaves the GEMM thread count at `threads`. */
static double square_rate(int threads)
{
    const int n = SQ_N;
    double best = 0.0;
    fl_gemm_set_threads(threads);
    fl_gemm(0, 0, n, n, n, 1.0f, sq_a, n, sq_b, n, 0.0f, sq_c, n);
    for (int w = 0; w < 3; w++) {
        long reps = 0;
        double t0 = fl_bench_wall(), el;
        do {
            fl_gemm(0, 0, n, n, n, 1.0f, sq_a, n, sq_b, n, 0.0f, sq_c, n);
            reps++;
            el = fl_bench_wall() - t0;
        } while (el < 0.15);
        double rate = 2.0 * n * n * n * (double)reps / el / 1e9;
        if (rate > best)
            best = rate;
    }
    return best;
}

int main(void)
{
    const char *only = getenv("FEDOPT_BENCH_MODELS");
    const char *settings = getenv("FEDOPT_BENCH_SETTINGS");
    const char *secs = getenv("FEDOPT_BENCH_SECONDS");
    const char *conv = getenv("FEDOPT_BENCH_CONV");
    const char *gemm = getenv("FEDOPT_BENCH_GEMM");
    const char *split = getenv("FEDOPT_BENCH_SPLIT");
    if (split && strcmp(split, "off") == 0)
        fl__model_set_split_threshold(1e30);
    else if (split && strcmp(split, "batch") == 0)
        fl__model_set_layer_split(SIZE_MAX);
    else if (split && strcmp(split, "layers") == 0)
        fl__model_set_layer_split(0);
    if (secs && atof(secs) > 0)
        bench_seconds = atof(secs);
    if (conv && strcmp(conv, "own") == 0)
        fl__conv2d_set_dnnl(1);
    else if (conv && strcmp(conv, "dnnl") == 0)
        fl__conv2d_set_dnnl(2);
    else if (conv && strcmp(conv, "dnnl-direct") == 0)
        fl__dnnl_set_winograd(1);
    if (gemm && strcmp(gemm, "own") == 0)
        fl__gemm_set_dnnl(1);
    else if (gemm && strcmp(gemm, "dnnl") == 0)
        fl__gemm_set_dnnl(2);
    printf("gemm backend: %s\n", fl_gemm_backend());
    sq_a = malloc(sizeof(float) * SQ_N * SQ_N);
    sq_b = malloc(sizeof(float) * SQ_N * SQ_N);
    sq_c = malloc(sizeof(float) * SQ_N * SQ_N);
    if (!sq_a || !sq_b || !sq_c)
        return 1;
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)SQ_N * SQ_N; i++) {
        sq_a[i] = (float)fl_rng_uniform(&r);
        sq_b[i] = (float)fl_rng_uniform(&r);
    }
    printf("training samples/s: wall clock, and [per CPU-second of this process]\n");
    printf("  gemm:  GEMM share of the step's wall time, GEMM GFLOP/s inside the step, and that\n"
           "         rate as %% of the square sgemm below (a split model's 2-thread figures are\n"
           "         per part, each part on 1 OpenBLAS thread)\n"
           "  sgemm: GFLOP/s of a square 1024^3 sgemm measured after the model's runs, with\n"
           "         the OpenBLAS threads each of their GEMM calls had (shown after the x)\n"
           "  conv:  oneDNN convolutions' GFLOP per CPU-second of the threads running them,\n"
           "         and that as %% of the peak line (one core's measured peak)\n");
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
        for (size_t k = 0; k < m->nlayers; k++)
            if (strcmp(m->layers[k]->ops->kind, "conv2d") == 0) {
                /* A forward pass makes the primitives, whose name is printed. */
                float *zx = calloc(fl_model_in_dim(m), sizeof(float));
                if (zx && fl_model_forward(m, zx, 1, FL_MODE_EVAL))
                    printf("conv backend: %s layer %zu: %s%s\n", info->name, k,
                           fl__conv2d_uses_dnnl(m->layers[k]) ? "onednn " : "own",
                           fl__conv2d_uses_dnnl(m->layers[k]) ? fl__conv2d_dnnl_impl(m->layers[k])
                                                              : "");
                free(zx);
            }
        printf("%-12s", info->name);
        fflush(stdout);
        gemm_in_step_t g[4] = {{0}};
        double sq[4];
        for (int b = 0; b < 2; b++)
            for (int t = 1; t <= 2; t++) {
                char name[16];
                snprintf(name, sizeof name, "%dx%d", b ? 64 : 20, t);
                if (settings && !setting_listed(settings, name)) {
                    printf(" %18s", "-");
                    continue;
                }
                double pc, w = bench(m, b ? 64 : 20, t, &pc, &g[2 * b + t - 1]);
                /* A decimal for the slow models (resnet18gn: a few samples/s). */
                if (w < 100)
                    printf(" %8.1f [%7.1f]", w, pc);
                else
                    printf(" %8.0f [%7.0f]", w, pc);
                fflush(stdout);
            }
        /* The squares come after the model's four settings, not between
         * them: a 1024^3 product run between settings slowed the next one
         * down (logreg at B = 64 on 1 thread ran at about half its speed;
         * cause not found; docs/benchmarks.md). */
        for (int s = 0; s < 4; s++)
            sq[s] = g[s].blas ? square_rate(g[s].blas) : 0.0;
        printf("\n%-12s", "  gemm");
        for (int s = 0; s < 4; s++)
            if (g[s].blas)
                printf(" %3.0f%% %5.1f %4.0f%%  ", 100.0 * g[s].share, g[s].gflops,
                       sq[s] > 0 ? 100.0 * g[s].gflops / sq[s] : 0.0);
            else
                printf(" %18s", "-");
        int any_conv = 0;
        for (int s = 0; s < 4; s++)
            any_conv |= g[s].conv > 0;
        double peak = any_conv ? peak_rate() : 0.0;
        if (any_conv) {
            printf("\n%-12s", "  conv");
            for (int s = 0; s < 4; s++)
                if (g[s].conv > 0)
                    printf(" %5.1f %4.0f%%      ", g[s].conv,
                           peak > 0 ? 100.0 * g[s].conv / peak : 0.0);
                else
                    printf(" %18s", "-");
        }
        printf("\n%-12s", "  sgemm");
        for (int s = 0; s < 4; s++)
            if (g[s].blas)
                printf(" %11.1f x%d     ", sq[s], g[s].blas);
            else
                printf(" %18s", "-");
        if (any_conv)
            printf("\n%-12s %11.1f (oneDNN 1024^3 sgemm, 1 thread, per CPU-second)", "  peak",
                   peak);
        printf("\n");
        fl_model_free(m);
    }
    free(sq_a);
    free(sq_b);
    free(sq_c);
    return 0;
}
