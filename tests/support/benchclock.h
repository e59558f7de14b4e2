/* benchclock: the clocks and the timed training loop the benchmarks share. */
#ifndef FL_TEST_BENCHCLOCK_H
#define FL_TEST_BENCHCLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "common/nn/clientopt.h"
#include "common/nn/models.h"

/* Seconds on the monotonic clock. */
double fl_bench_wall(void);

/* CPU seconds of the whole process (all threads): on a shared machine,
 * samples per CPU-second is the figure other load does not distort (for
 * one thread it is the unloaded samples/s, give or take cache effects). */
double fl_bench_cpu(void);

/* Gives m `threads` threads (fl_model_set_threads) and sets the GEMM thread
 * count that goes with them. Returns 0 or fl_model_set_threads' code. */
int fl_bench_threads(fl_model_t *m, int threads);

/* Trains m on one fixed batch (B examples x, labels y) with SGD `cfg` for
 * at least `seconds` after one warm-up step, and prints one line: name, B,
 * the model's threads, samples/s, samples per CPU-second, steps, time, last loss.
 * Returns 0, or 1 when the optimizer cannot be set up. */
int fl_bench_train_steps(fl_model_t *m, const fl_sgd_config_t *cfg, const float *x, const int32_t *y,
                         size_t B, double seconds, const char *name);

#endif
