/* bench_data: the time to open the largest real input at hand
 * (Fashion-MNIST's 60,000 training images, gzipped IDX) and to partition it
 * into 3,400 clients (the EMNIST writer count of the paper) with each rule,
 * plus a device's whole path: spec -> load -> partition -> its own share.
 * Prints figures; asserts nothing about time. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/data/dataset.h"
#include "common/data/idx.h"
#include "common/data/partition.h"
#include "common/data/spec.h"
#include "common/base/error.h"
#include "tests/support/benchclock.h"

#define REPS 3

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Prints the minimum and median wall time and the minimum CPU time. */
static void report(const char *what, double *t, double *c)
{
    qsort(t, REPS, sizeof *t, cmp);
    qsort(c, REPS, sizeof *c, cmp);
    printf("%-44s wall min %8.2f ms, median %8.2f ms; cpu min %8.2f ms (%d runs)\n", what,
           t[0] * 1e3, t[REPS / 2] * 1e3, c[0] * 1e3, REPS);
}

int main(void)
{
    double t[REPS], c[REPS];
    fl_dataset_t d;
    for (int r = 0; r < REPS; r++) {
        fl_dataset_init(&d);
        double t0 = fl_bench_wall(), c0 = fl_bench_cpu();
        int rc = fl_fmnist_load("train", &d);
        t[r] = fl_bench_wall() - t0;
        c[r] = fl_bench_cpu() - c0;
        if (rc) {
            fprintf(stderr, "bench_data: cannot load Fashion-MNIST: %s\n", fl_strerror(rc));
            return 1;
        }
        if (r + 1 < REPS)
            fl_dataset_free(&d);
    }
    report("open Fashion-MNIST train (60,000, gz IDX)", t, c);

    const char *kinds[] = {"iid", "dirichlet:0.1", "dirichlet:1", "shards:2"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        fl_partition_spec_t s;
        if (fl_partition_parse(kinds[k], &s))
            return 1;
        fl_partition_stats_t st = {0};
        for (int r = 0; r < REPS; r++) {
            fl_partition_t p;
            double t0 = fl_bench_wall(), c0 = fl_bench_cpu();
            int rc = fl_partition_make(&d, &s, 3400, (uint64_t)r, &p);
            t[r] = fl_bench_wall() - t0;
            c[r] = fl_bench_cpu() - c0;
        c[r] = fl_bench_cpu() - c0;
            if (rc || fl_partition_stats(&d, &p, &st))
                return 1;
            fl_partition_free(&p);
        }
        char what[80];
        snprintf(what, sizeof what, "partition into 3,400 clients: %s", kinds[k]);
        report(what, t, c);
        printf("    sizes %zu..%zu, %zu used, %.2f labels/client, mean TV %.3f\n", st.min_size,
               st.max_size, st.used, st.mean_labels, st.mean_tv);
    }
    fl_dataset_free(&d);

    /* A device: the spec with its client index, end to end. */
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    if (fl_data_spec_set(&spec, "partition", "dirichlet:0.1") ||
        fl_data_spec_set(&spec, "clients", "3400") || fl_data_spec_set(&spec, "client-index", "1234"))
        return 1;
    size_t n = 0;
    for (int r = 0; r < REPS; r++) {
        fl_dataset_init(&d);
        double t0 = fl_bench_wall(), c0 = fl_bench_cpu();
        int rc = fl_data_spec_load(&spec, "train", &d);
        t[r] = fl_bench_wall() - t0;
        c[r] = fl_bench_cpu() - c0;
        if (rc)
            return 1;
        n = d.n;
        fl_dataset_free(&d);
    }
    report("spec -> client 1234 of 3,400 (dirichlet:0.1)", t, c);
    printf("    client 1234 holds %zu examples\n", n);
    return 0;
}
