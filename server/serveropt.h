/* serveropt: the server optimizers of "Adaptive Federated Optimization"
 * (Reddi et al., ICLR 2021, Algorithm 2): FedAvg, FedAvgM, FedAdagrad,
 * FedAdam and FedYogi. Equations and defaults: docs/algorithm.md.
 *
 * A round is streamed: fl_serveropt_begin, then fl_serveropt_add once per
 * client update as it arrives (the caller may free the delta as soon as add
 * returns), then fl_serveropt_finish, which forms the weighted mean of the
 * accepted deltas (the pseudo-gradient D) and applies the optimizer to the
 * global model. Memory is the model's size times a small constant, however
 * many clients report: the accumulator is float64 (so thousands of updates sum
 * accurately), the optimizer state m and v are float32.
 *
 * Not thread-safe: one round at a time, calls serialized by the caller. A
 * large model's passes run in parts on the optimizer's own worker threads
 * (see serveropt.c); results do not depend on the number of cores. */
#ifndef FL_SERVEROPT_H
#define FL_SERVEROPT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FL_SERVEROPT_FEDAVG = 0,
    FL_SERVEROPT_FEDAVGM = 1,
    FL_SERVEROPT_FEDADAGRAD = 2,
    FL_SERVEROPT_FEDADAM = 3,
    FL_SERVEROPT_FEDYOGI = 4,
} fl_serveropt_kind_t;

typedef enum {
    FL_WEIGHTING_EXAMPLES = 0, /* w_i = the client's example (or token) count */
    FL_WEIGHTING_UNIFORM = 1,  /* w_i = 1 */
} fl_weighting_t;

typedef struct {
    fl_serveropt_kind_t kind;
    double server_lr;
    double momentum;            /* fedavgm */
    double beta1, beta2;        /* fedadagrad (beta1 only), fedadam, fedyogi */
    double tau;                 /* adaptivity, outside the square root */
    double initial_accumulator; /* starting value of every element of v */
    int bias_correction;        /* fedadam/fedyogi only: lr_t = lr*sqrt(1-b2^t)/(1-b1^t) */
    fl_weighting_t weighting;
} fl_serveropt_config_t;

/* Per-round outcome, filled by fl_serveropt_finish. */
typedef struct {
    uint32_t accepted;   /* updates that entered the mean */
    uint32_t rejected;   /* updates refused by add (non-finite, bad weight, wrong size) */
    double total_weight; /* sum of accepted weights */
    int applied;         /* 1 when the model and state changed, 0 when no update was accepted */
    uint64_t step;       /* rounds applied so far, this one included */
    double update_norm;  /* ||D||, the pseudo-gradient's norm (0 when not applied) */
} fl_serveropt_round_t;

typedef struct fl_serveropt fl_serveropt_t;

/* Parses "fedavg", "fedavgm", "fedadagrad", "fedadam" or "fedyogi". Returns 0 or FL_EINVAL. */
int fl_serveropt_parse_kind(const char *s, fl_serveropt_kind_t *out);

/* Returns the lower-case name of a kind ("fedadam"), or "?" for an unknown one. */
const char *fl_serveropt_kind_name(fl_serveropt_kind_t kind);

/* Parses "examples" or "uniform". Returns 0 or FL_EINVAL. */
int fl_serveropt_parse_weighting(const char *s, fl_weighting_t *out);

/* Fills *cfg with the reference defaults for `kind` (lr 1 for FedAvg/FedAvgM,
 * 0.01 for the adaptive ones; momentum 0.9; beta1 0.9 (0 for FedAdagrad);
 * beta2 0.99; tau 1e-3; initial_accumulator 0; no bias correction; example weighting). */
void fl_serveropt_config_defaults(fl_serveropt_config_t *cfg, fl_serveropt_kind_t kind);

/* Checks the hyper-parameters' ranges. Returns 0 or FL_ECONFIG (with a log line naming the knob). */
int fl_serveropt_config_validate(const fl_serveropt_config_t *cfg);

/* Creates an optimizer for models of n parameters (state zeroed, v set to
 * initial_accumulator, step 0). The config is copied. Free with fl_serveropt_free. */
int fl_serveropt_create(const fl_serveropt_config_t *cfg, size_t n, fl_serveropt_t **out);

/* Frees the optimizer. Accepts NULL. */
void fl_serveropt_free(fl_serveropt_t *opt);

/* Opens a round (discarding any round still open). */
void fl_serveropt_begin(fl_serveropt_t *opt);

/* Adds one client's delta (new minus received weights, n floats) with its
 * example count. Returns 0 when accepted; when refused the round is unchanged
 * and the refusal is counted: FL_ENONFINITE (any NaN/Inf element), FL_ESHAPE
 * (n differs from the model's), FL_EINVAL (weight not finite or <= 0 under
 * example weighting), FL_ESTATE (no round open). The caller keeps the delta. */
int fl_serveropt_add(fl_serveropt_t *opt, const float *delta, size_t n, double num_examples);

/* Most deltas fl_serveropt_add_batch takes in one call. */
#define FL_SERVEROPT_MAX_BATCH 64

/* Adds `count` client deltas (each n floats, with its example count) in one
 * pass over the accumulator: the server calls this with the uploads it has
 * buffered, which cuts the accumulator's memory traffic by the batch size.
 * results[i] receives what fl_serveropt_add would have returned for delta i.
 * Each delta is checked for non-finite values in the same pass; one found
 * partway through is subtracted back out of the blocks already summed, so a
 * refused delta then leaves a trace of at most float64 rounding (about 1e-16
 * relative, far below the float32 model's resolution); fl_serveropt_add is
 * bit-exact. norms (may be NULL) receives each accepted delta's Euclidean
 * norm, computed in the same pass (NaN for a refused one). Returns 0 (even
 * when some deltas were refused), FL_EINVAL for count outside
 * 1..FL_SERVEROPT_MAX_BATCH, or FL_ESTATE. The caller keeps the deltas. */
int fl_serveropt_add_batch(fl_serveropt_t *opt, const float *const *deltas, const double *num_examples,
                           size_t count, size_t n, int *results, double *norms);

/* The round's last batch and fl_serveropt_finish in one pass: each block's
 * sum goes straight into the optimizer step, so the accumulator is neither
 * written nor read back (bench_serveropt measures the difference). Every
 * delta must already be known finite (fl_f32_all_finite, e.g. checked as it
 * arrived): the pass still checks, but the model blocks before a non-finite
 * value are stepped by then, so finding one returns FL_ENONFINITE (that
 * delta's results[i] too) with the round closed and x, m and v stepped with
 * the delta's finite part; the caller must then restore its checkpoint.
 * Otherwise the same as fl_serveropt_add_batch then fl_serveropt_finish (x, m
 * and v bit-identical; norms up to float64 rounding). Returns 0,
 * FL_ENONFINITE, FL_EINVAL, FL_ESHAPE, FL_ESTATE or FL_ENOMEM (round still
 * open and untouched for the last three). */
int fl_serveropt_add_batch_finish(fl_serveropt_t *o, const float *const *deltas, const double *num_examples,
                                  size_t count, size_t n, int *results, double *norms, float *x,
                                  fl_serveropt_round_t *res);

/* Closes the round: D = sum(w*delta)/sum(w) over the accepted updates, then
 * the optimizer step on x (n floats, updated in place). With no accepted
 * update, x, m, v and the step counter are left untouched and res->applied
 * is 0. res may be NULL. Returns 0, FL_ESHAPE or FL_ESTATE. */
int fl_serveropt_finish(fl_serveropt_t *opt, float *x, size_t n, fl_serveropt_round_t *res);

/* Rounds applied so far. */
uint64_t fl_serveropt_step(const fl_serveropt_t *opt);

/* Read-only views of the first and second moment (NULL where the optimizer has none). */
const float *fl_serveropt_m(const fl_serveropt_t *opt);
const float *fl_serveropt_v(const fl_serveropt_t *opt);

/* The configuration in use. */
const fl_serveropt_config_t *fl_serveropt_config(const fl_serveropt_t *opt);

/* Serializes the state (kind, n, step, m, v) into a new malloc'ed buffer
 * that the caller frees with free(). Little-endian, CRC-32 protected; format
 * in the .c file. */
int fl_serveropt_state_save(const fl_serveropt_t *opt, uint8_t **buf, size_t *len);

/* Restores state saved by fl_serveropt_state_save, bit for bit. Refuses
 * (leaving the optimizer untouched) a buffer that is truncated, corrupt
 * (FL_EFORMAT, FL_ECHECKSUM) or made for another optimizer kind or size
 * (FL_ESHAPE). Any open round is discarded. */
int fl_serveropt_state_load(fl_serveropt_t *opt, const uint8_t *buf, size_t len);

/* Internal, for tests: split every pass into `parts` (1..8) parts instead of
 * the size-based default (fl__serveropt_default_parts). Returns 0, FL_EINVAL
 * or FL_ENOMEM. */
int fl__serveropt_set_parts(fl_serveropt_t *opt, size_t parts);
int fl__serveropt_default_parts(size_t n);

/* Internal, for tests: run the kernels' build `isa` (0 the baseline, 3
 * x86-64-v3, 4 x86-64-v4; the best this CPU runs by default). Returns 0,
 * FL_EINVAL, or FL_EUNSUPPORTED where this CPU or build lacks it. Every build
 * gives the same bits. */
int fl__serveropt_set_isa(fl_serveropt_t *o, int isa);

#endif
