/* train: local training and evaluation of a model over an in-memory dataset,
 * the loop behind `fedopt-client train`, `eval` and a federated client's
 * local update.
 *
 * A federated client does, per task:
 *   fl_model_create(name, &spec, &m)            once per model/data shape
 *   fl_model_set_params(m, global, n)           the server's model
 *   fl_train_run(m, &data, &cfg, NULL, NULL, &st) E local epochs
 *   delta = m->params.data - global             what it uploads
 *   fl_train_eval(m, &test, batch, &ev)         optional evaluation
 * Every random choice (shuffling, dropout) comes from streams seeded by
 * (cfg.seed, cfg.ids..., purpose), so a re-run trains bit for bit the same
 * for a fixed GEMM thread count. */
#ifndef FL_TRAIN_H
#define FL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "common/nn/clientopt.h"
#include "common/data/dataset.h"
#include "common/nn/models.h"

#define FL_TRAIN_MAX_IDS 4

typedef struct {
    int epochs;         /* >= 1 */
    size_t batch;       /* >= 1; the last batch of an epoch may be smaller */
    fl_sgd_config_t sgd;
    uint64_t seed;
    uint64_t ids[FL_TRAIN_MAX_IDS]; /* stream tuple, e.g. {run, round, client} */
    size_t nids;
    size_t max_steps;   /* stop after this many SGD steps over all epochs (0 = no cap) */
} fl_train_config_t;

/* What a pass over a dataset measured. */
typedef struct {
    double loss;      /* mean loss per example (mean of batch means, weighted by batch size) */
    double metric;    /* accuracy or recall@5 in [0, 1]; NaN for a loss-only model (MSE) */
    size_t examples;  /* examples seen */
    size_t steps;     /* optimizer steps (training) or batches (evaluation) */
    double seconds;   /* wall time of the pass */
    double weight;    /* the pass's weight in a federated average: examples seen, or for a
                         per-step model (FL_LOSS_SEQ_CE) the non-pad target tokens seen, as
                         the paper's code weights next-token clients */
} fl_train_stats_t;

/* Called after each epoch of fl_train_run (epoch counts from 1). A nonzero
 * return stops training with FL_ECANCELED. */
typedef int (*fl_train_epoch_cb)(int epoch, const fl_train_stats_t *st, void *ud);

/* Checks that dataset d fits model m (feature count, label_dim, label range).
 * Returns 0 or FL_ESHAPE (logged, naming the mismatch). */
int fl_train_check_data(const fl_model_t *m, const fl_dataset_t *d);

/* One epoch of SGD over d in the order given by `rng` (a shuffle per epoch):
 * batches of `batch`, one opt step each. Returns 0, FL_EINVAL, FL_ESHAPE,
 * FL_ENOMEM or FL_ENONFINITE (the loss diverged; the parameters hold the
 * last step). */
int fl_train_epoch(fl_model_t *m, fl_sgd_t *opt, const fl_dataset_t *d, size_t batch,
                   fl_rng_t *rng, fl_train_stats_t *st);

/* Runs cfg->epochs epochs with a fresh SGD state (momentum zeroed),
 * shuffling with stream (seed, ids..., FL_RNG_SHUFFLE, epoch) and dropout
 * from (seed, ids..., FL_RNG_DROPOUT), stopping after cfg->max_steps steps
 * when that is set (the capped epoch is the last; its batches are the first
 * ones of its shuffled order, as without the cap). *last (may be NULL) gets
 * the final epoch's statistics, except that `examples` and `weight` are the
 * largest over the epochs: the distinct examples the training used, which a
 * step cap can make fewer than the data holds (a federated client's weight).
 * cb (may be NULL) is called after every epoch. */
int fl_train_run(fl_model_t *m, const fl_dataset_t *d, const fl_train_config_t *cfg,
                 fl_train_epoch_cb cb, void *ud, fl_train_stats_t *last);

/* Evaluates m on d (evaluation mode: no dropout) in batches. */
int fl_train_eval(fl_model_t *m, const fl_dataset_t *d, size_t batch, fl_train_stats_t *st);

#endif
