/* bench_gemm: sgemm GFLOP/s through fl_gemm on a square product and on the
 * shapes the cnn and mlp training steps run, at 1 and 2 threads. The
 * machine's "measured sgemm rate" of the issue is the square figure. cnn's
 * conv2 runs Winograd F(2x2,3x3): per example, 16 GEMMs of each of the
 * three shapes listed (forward, input gradient, weight gradient); the
 * im2col shape it replaced stays for comparison (2.25x the operations). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/nn/gemm.h"
#include "common/base/rng.h"
#include "tests/support/benchclock.h"

int main(void)
{
    static const struct {
        const char *what;
        int ta, tb, m, n, k;
    } shapes[] = {
        {"square 1024", 0, 0, 1024, 1024, 1024},
        {"cnn conv2 Winograd fwd (64x144x32)", 0, 0, 64, 144, 32},
        {"cnn conv2 Winograd dX (32x169x64)", 0, 0, 32, 169, 64},
        {"cnn conv2 Winograd dW (64x32x144,B^T)", 0, 1, 64, 32, 144},
        {"conv2 im2col fwd 1 ex (64x576x288)", 0, 0, 64, 576, 288},
        {"cnn conv1 fwd B=20 (32x13520x9)", 0, 0, 32, 13520, 9},
        {"cnn fc1 fwd B=20 (20x128x9216)", 0, 1, 20, 128, 9216},
        {"cnn fc1 dW B=20 (128x9216x20)", 1, 0, 128, 9216, 20},
        {"mlp fc1 fwd B=20 (20x200x784)", 0, 1, 20, 200, 784},
        {"mlp fc1 dW B=20 (200x784x20)", 1, 0, 200, 784, 20},
    };
    printf("gemm backend: %s\n", fl_gemm_backend());
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
    printf("%-38s %12s %12s %14s %14s\n", "shape", "1 thread", "2 threads", "1thr/cpu-s",
           "2thr/cpu-s");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        printf("%-38s", shapes[s].what);
        double percpu[3] = {0, 0, 0};
        for (int t = 1; t <= 2; t++) {
            fl_gemm_set_threads(t);
            int m = shapes[s].m, n = shapes[s].n, k = shapes[s].k;
            int lda = shapes[s].ta ? m : k, ldb = shapes[s].tb ? k : n;
            double flop = 2.0 * m * n * k, t0 = fl_bench_wall(), el;
            long reps = 0;
            fl_gemm(shapes[s].ta, shapes[s].tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
            t0 = fl_bench_wall();
            double c0 = fl_bench_cpu();
            do {
                fl_gemm(shapes[s].ta, shapes[s].tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
                reps++;
                el = fl_bench_wall() - t0;
            } while (el < 0.4);
            printf(" %7.1f GF/s", flop * reps / el / 1e9);
            percpu[t] = flop * reps / (fl_bench_cpu() - c0) / 1e9;
        }
        printf("   %7.1f GF/s   %7.1f GF/s\n", percpu[1], percpu[2]);
    }
    free(a);
    free(b);
    free(c);
    return 0;
}
