/* Benchmarks ServerOpt's round (add x K + finish, FedAdam) against the
 * memory-traffic floor of the same work, measured here: a plain streaming
 * read of the same bytes (the K deltas plus the model and state the finish
 * pass reads), on one thread and split in two halves on two threads (the
 * optimizer splits a large model's passes the same way). Deltas cycle
 * through a pool larger than the last-level cache, as fresh uploads would.
 * Prints one line per (P, K): the round as single adds, as batches of BATCH
 * with a separate finish, and with the finish fused into the last batch
 * (fl_serveropt_add_batch_finish), each as a ratio to both floors. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/rng.h"
#include "common/nn/workers.h"
#include "server/serveropt.h"
#include "tests/support/benchclock.h"

/* Reads n floats and returns their sum so the compiler cannot drop the loop.
 * Eight independent sums keep the loop bound by memory, not by add latency. */
static float stream_read(const float *restrict x, size_t n)
{
    float s[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += x[i + k];
    for (; i < n; i++)
        s[0] += x[i];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static volatile float sink;

/* The floor's read, split in halves as the optimizer's parts are. */
typedef struct {
    float *const *d;
    int pool, K;
    size_t P;
    float *const *extra; /* x and the two state vectors */
    float part[2];
} floor_t;

static void floor_job(void *arg, size_t j)
{
    floor_t *f = arg;
    size_t lo = f->P * j / 2, hi = f->P * (j + 1) / 2;
    float s = 0;
    for (int k = 0; k < f->K; k++)
        s += stream_read(f->d[k % f->pool] + lo, hi - lo);
    for (int e = 0; e < 3; e++)
        s += stream_read(f->extra[e] + lo, hi - lo);
    f->part[j] = s;
}

#define BATCH 10

static void run(size_t P, int K, int reps)
{
    size_t bytes = P * sizeof(float);
    int pool = (int)((96u << 20) / bytes) + 2; /* > 32 MiB L3 several times over */
    if (pool > K)
        pool = K < 2 ? 2 : K;
    float **d = malloc((size_t)pool * sizeof *d);
    fl_rng_t r;
    fl_rng_seed(&r, 1);
    for (int i = 0; i < pool; i++) {
        d[i] = malloc(bytes);
        for (size_t j = 0; j < P; j++)
            d[i][j] = (float)(fl_rng_u32(&r) >> 8) * 1e-9f - 0.008f;
    }
    float *x = calloc(P, sizeof *x);
    fl_serveropt_config_t cfg;
    fl_serveropt_config_defaults(&cfg, FL_SERVEROPT_FEDADAM);
    fl_serveropt_t *opt;
    if (fl_serveropt_create(&cfg, P, &opt)) {
        fprintf(stderr, "create failed\n");
        exit(1);
    }
    /* The state buffers m and v are read in finish; stand-ins of the same size
     * for the floor's read. */
    float *m_like = calloc(P, sizeof(float)), *v_like = calloc(P, sizeof(float));
    double best = 1e30, best_batch = 1e30, best_fused = 1e30, best_floor = 1e30, best_floor2 = 1e30;
    /* CPU seconds of the same sections (all threads): on a shared machine the
     * figure time-sharing does not inflate. */
    double cpu_batch = 1e30, cpu_fused = 1e30, cpu_floor = 1e30, c0;
    fl_workers_t *two = NULL;
    if (fl_workers_create(1, &two)) {
        fprintf(stderr, "workers failed\n");
        exit(1);
    }
    float *extra[3] = {x, m_like, v_like};
    floor_t fl = {.d = d, .pool = pool, .K = K, .P = P, .extra = extra};
    for (int rep = 0; rep < reps; rep++) {
        double t0 = fl_bench_wall();
        fl_serveropt_begin(opt);
        for (int k = 0; k < K; k++)
            fl_serveropt_add(opt, d[k % pool], P, 10 + k);
        fl_serveropt_finish(opt, x, P, NULL);
        double t1 = fl_bench_wall();
        if (t1 - t0 < best)
            best = t1 - t0;

        /* The same round with the uploads folded in batches of BATCH, as a
         * server buffering BATCH uploads does. */
        c0 = fl_bench_cpu();
        t0 = fl_bench_wall();
        fl_serveropt_begin(opt);
        for (int k = 0; k < K; k += BATCH) {
            const float *ds[BATCH];
            double ws[BATCH];
            int res[BATCH];
            int c = K - k < BATCH ? K - k : BATCH;
            for (int j = 0; j < c; j++) {
                ds[j] = d[(k + j) % pool];
                ws[j] = 10 + k + j;
            }
            fl_serveropt_add_batch(opt, ds, ws, (size_t)c, P, res, NULL);
        }
        fl_serveropt_finish(opt, x, P, NULL);
        t1 = fl_bench_wall();
        if (t1 - t0 < best_batch)
            best_batch = t1 - t0;
        if (fl_bench_cpu() - c0 < cpu_batch)
            cpu_batch = fl_bench_cpu() - c0;

        /* The same batches with the finish fused into the last one. */
        c0 = fl_bench_cpu();
        t0 = fl_bench_wall();
        fl_serveropt_begin(opt);
        for (int k = 0; k < K; k += BATCH) {
            const float *ds[BATCH];
            double ws[BATCH];
            int res[BATCH];
            int c = K - k < BATCH ? K - k : BATCH;
            for (int j = 0; j < c; j++) {
                ds[j] = d[(k + j) % pool];
                ws[j] = 10 + k + j;
            }
            if (k + c < K)
                fl_serveropt_add_batch(opt, ds, ws, (size_t)c, P, res, NULL);
            else
                fl_serveropt_add_batch_finish(opt, ds, ws, (size_t)c, P, res, NULL, x, NULL);
        }
        t1 = fl_bench_wall();
        if (t1 - t0 < best_fused)
            best_fused = t1 - t0;
        if (fl_bench_cpu() - c0 < cpu_fused)
            cpu_fused = fl_bench_cpu() - c0;

        t0 = fl_bench_wall();
        fl_workers_run(two, 2, floor_job, &fl);
        sink = fl.part[0] + fl.part[1];
        t1 = fl_bench_wall();
        if (t1 - t0 < best_floor2)
            best_floor2 = t1 - t0;

        c0 = fl_bench_cpu();
        t0 = fl_bench_wall();
        float s = 0;
        for (int k = 0; k < K; k++)
            s += stream_read(d[k % pool], P);
        s += stream_read(x, P) + stream_read(m_like, P) + stream_read(v_like, P);
        sink = s;
        t1 = fl_bench_wall();
        if (t1 - t0 < best_floor)
            best_floor = t1 - t0;
        if (fl_bench_cpu() - c0 < cpu_floor)
            cpu_floor = fl_bench_cpu() - c0;
    }
    double gb = ((double)K + 3) * (double)bytes / 1e9;
    printf("fedadam P=%-8zu K=%-3d parts %d | add x K + finish %7.1f ms (%.2fx / %.2fx) | add_batch(%d) + finish "
           "%7.1f ms (%.2fx / %.2fx) | fused last batch %7.1f ms (%.2fx / %.2fx) | floor: stream read of %.2f GB, "
           "1 thread %7.1f ms (%.1f GB/s), 2 threads %7.1f ms (%.1f GB/s)\n",
           P, K, fl__serveropt_default_parts(P), best * 1e3, best / best_floor, best / best_floor2, BATCH,
           best_batch * 1e3, best_batch / best_floor, best_batch / best_floor2, best_fused * 1e3,
           best_fused / best_floor, best_fused / best_floor2, gb, best_floor * 1e3, gb / best_floor,
           best_floor2 * 1e3, gb / best_floor2);
    printf("    CPU seconds (all threads) against the 1-thread floor's: add_batch + finish %.2fx, fused %.2fx "
           "(floor %.1f ms of CPU)\n",
           cpu_batch / cpu_floor, cpu_fused / cpu_floor, cpu_floor * 1e3);
    fflush(stdout);
    fl_workers_free(two);
    fl_serveropt_free(opt);
    for (int i = 0; i < pool; i++)
        free(d[i]);
    free(d);
    free(x);
    free(m_like);
    free(v_like);
}

int main(void)
{
    /* Best of `reps` (FEDOPT_BENCH_REPS, default 3): on a shared machine more
     * repetitions find a quieter moment. */
    const char *e = getenv("FEDOPT_BENCH_REPS");
    int reps = e && atoi(e) > 0 ? atoi(e) : 3;
    printf("ServerOpt round time vs memory-traffic floor (best of %d; ratios to the 1-thread / 2-thread floor)\n",
           reps);
    run(1200000, 10, reps);
    run(1200000, 100, reps);
    run(11000000, 10, reps);
    run(11000000, 100, reps);
    return 0;
}
