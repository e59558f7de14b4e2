/* bench_gemm: sgemm GFLOP/s on a square product and on the shapes the
 * models' training steps run, on each backend: fl_gemm (OpenBLAS with the
 * kernel it loaded, or the portable one) and oneDNN's sgemm (its AVX-512
 * JIT kernels where the CPU has them; common/nn/dnnl.h), each at 1 and 2
 * threads, as GFLOP/s of wall time and per CPU-second of this process (the
 * figure that still means something on a shared machine).
 *
 * The machine's measured peak of issue 20 is the best square figure per
 * CPU-second on one thread, times the cores. The dense rows are the three
 * products of a dense layer (forward, weight gradient, input gradient) at
 * batch 20; the LSTM rows are charlstm's (batch 20, 80 steps, H = 256):
 * the input product of all steps at once, the recurrent product of one
 * step, its backward, and the weight gradient. cnn's conv2 on its own
 * path runs Winograd F(2x2,3x3): per example, 16 GEMMs of each of the
 * three shapes listed; the im2col shape it replaced stays for comparison.
 * dense.c, lstm.c and gemm.c choose their backends from these rows. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/nn/dnnl.h"
#include "common/nn/gemm.h"
#include "common/base/rng.h"
#include "tests/support/benchclock.h"

typedef struct {
    const char *what;
    int ta, tb, m, n, k;
} shape_t;

static void run(const shape_t *s, int dnnl, int threads, float *a, float *b, float *c,
                double *wall, double *percpu)
{
    const int m = s->m, n = s->n, k = s->k;
    const int lda = s->ta ? m : k, ldb = s->tb ? k : n;
    const double flop = 2.0 * m * n * k;
    *wall = *percpu = 0;
    fl_gemm_set_threads(threads);
    /* The best of three windows: the least disturbed by other load. */
    for (int w = 0; w < 4; w++) {
        long reps = 0;
        double t0 = fl_bench_wall(), c0 = fl_bench_cpu(), el;
        do {
            if (!dnnl)
                fl_gemm(s->ta, s->tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
            else if (fl__dnnl_sgemm(threads, s->ta, s->tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f,
                                    c, n))
                return;
            reps++;
            el = fl_bench_wall() - t0;
        } while (el < 0.1);
        if (w == 0)
            continue; /* warm-up: oneDNN makes its kernels on first use */
        double cpu = fl_bench_cpu() - c0;
        if (flop * reps / el / 1e9 > *wall)
            *wall = flop * reps / el / 1e9;
        if (cpu > 0 && flop * reps / cpu / 1e9 > *percpu)
            *percpu = flop * reps / cpu / 1e9;
    }
}

int main(void)
{
    static const shape_t shapes[] = {
        {"square 1024", 0, 0, 1024, 1024, 1024},
        {"cnn conv2 Winograd fwd (64x144x32)", 0, 0, 64, 144, 32},
        {"cnn conv2 Winograd dX (32x169x64)", 0, 0, 32, 169, 64},
        {"cnn conv2 Winograd dW (64x32x144,B^T)", 0, 1, 64, 32, 144},
        {"conv2 im2col fwd 1 ex (64x576x288)", 0, 0, 64, 576, 288},
        {"cnn conv1 fwd B=20 (32x13520x9)", 0, 0, 32, 13520, 9},
        {"cnn fc1 fwd B=20 (20x128x9216,B^T)", 0, 1, 20, 128, 9216},
        {"cnn fc1 dW B=20 (128x9216x20,A^T)", 1, 0, 128, 9216, 20},
        {"cnn fc1 dX B=20 (20x9216x128)", 0, 0, 20, 9216, 128},
        {"cnn fc2 fwd B=20 (20x10x128,B^T)", 0, 1, 20, 10, 128},
        {"mlp fc1 fwd B=20 (20x200x784,B^T)", 0, 1, 20, 200, 784},
        {"mlp fc1 dW B=20 (200x784x20,A^T)", 1, 0, 200, 784, 20},
        {"mlp fc2 fwd B=20 (20x200x200,B^T)", 0, 1, 20, 200, 200},
        {"mlp fc2 dX B=20 (20x200x200)", 0, 0, 20, 200, 200},
        {"mlp fc3 fwd B=20 (20x10x200,B^T)", 0, 1, 20, 10, 200},
        {"mlp fc3 dW B=20 (10x200x20,A^T)", 1, 0, 10, 200, 20},
        {"mlp fc3 dX B=20 (20x200x10)", 0, 0, 20, 200, 10},
        {"lstm2 input (1600x1024x256,B^T)", 0, 1, 1600, 1024, 256},
        {"lstm1 input (1600x1024x8,B^T)", 0, 1, 1600, 1024, 8},
        {"lstm recurrent (20x1024x256,B^T)", 0, 1, 20, 1024, 256},
        {"lstm recurrent dh (20x256x1024)", 0, 0, 20, 256, 1024},
        {"lstm dW_hh (1024x256x1600,A^T)", 1, 0, 1024, 256, 1600},
        {"lstm dX (1600x256x1024)", 0, 0, 1600, 256, 1024},
        {"charlstm fc fwd (1600x90x256,B^T)", 0, 1, 1600, 90, 256},
    };
    printf("gemm backend: %s; oneDNN sgemm: %s\n", fl_gemm_backend(),
           fl__dnnl_available() ? "built in" : "not built in");
    printf("GFLOP/s of wall time [per CPU-second of the process]\n");
    float *a = malloc(sizeof(float) * 4 << 20), *b = malloc(sizeof(float) * 4 << 20),
          *c = malloc(sizeof(float) * 4 << 20);
    if (!a || !b || !c)
        return 1;
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)4 << 20; i++) {
        a[i] = (float)fl_rng_uniform(&r);
        b[i] = (float)fl_rng_uniform(&r);
        c[i] = 0;
    }
    printf("%-38s %17s %17s %17s %17s\n", "shape", "fl_gemm 1 thread", "fl_gemm 2 threads",
           "oneDNN 1 thread", "oneDNN 2 threads");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        printf("%-38s", shapes[s].what);
        for (int d = 0; d < 2; d++)
            for (int t = 1; t <= 2; t++) {
                double w, pc;
                if (d && !fl__dnnl_available()) {
                    printf(" %17s", "-");
                    continue;
                }
                run(&shapes[s], d, t, a, b, c, &w, &pc);
                printf(" %6.1f [%7.1f] ", w, pc);
                fflush(stdout);
            }
        printf("\n");
    }
    fl_gemm_set_threads(1);
    free(a);
    free(b);
    free(c);
    return 0;
}
