#include "common/nn/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/data/augment.h"
#include "common/base/clock.h"
#include "common/base/error.h"
#include "common/base/log.h"

int fl_train_check_data(const fl_model_t *m, const fl_dataset_t *d)
{
    if (!m || !d)
        return FL_EINVAL;
    size_t ld = d->label_dim ? d->label_dim : 1;
    if (d->dim != fl_model_in_dim(m)) {
        FL_LOG_E("train", "model %s takes %zu features per example, the data has %zu",
                 m->info->name, fl_model_in_dim(m), d->dim);
        return FL_ESHAPE;
    }
    if (m->info->loss != FL_LOSS_MSE_INPUT && ld != m->spec.label_dim) {
        FL_LOG_E("train", "model %s expects %zu labels per example, the data has %zu",
                 m->info->name, m->spec.label_dim, ld);
        return FL_ESHAPE;
    }
    if ((m->info->loss == FL_LOSS_SOFTMAX_CE || m->info->loss == FL_LOSS_SEQ_CE) &&
        d->num_classes > 0) {
        size_t classes = fl_model_out_dim(m) / m->spec.label_dim;
        if ((size_t)d->num_classes > classes) {
            FL_LOG_E("train", "model %s has %zu outputs, the data has %d classes", m->info->name,
                     classes, d->num_classes);
            return FL_ESHAPE;
        }
    }
    return 0;
}

/* Copies examples idx[0..n) of d into contiguous x and y batch buffers. */
static void gather(const fl_dataset_t *d, const uint32_t *idx, size_t n, float *x, int32_t *y)
{
    size_t ld = d->label_dim ? d->label_dim : 1;
    for (size_t i = 0; i < n; i++) {
        memcpy(x + i * d->dim, d->x + (size_t)idx[i] * d->dim, d->dim * sizeof(float));
        memcpy(y + i * ld, d->y + (size_t)idx[i] * ld, ld * sizeof(int32_t));
    }
}

/* One pass over d; with max_steps > 0 it stops after that many batches. */
static int pass(fl_model_t *m, fl_sgd_t *opt, const fl_dataset_t *d, size_t batch, fl_rng_t *rng,
                fl_train_stats_t *st, size_t max_steps)
{
    fl_train_stats_t s = {0, NAN, 0, 0, 0, 0};
    if (!m || !d || !batch || !st || d->n == 0 || d->n > UINT32_MAX)
        return d && d->n == 0 ? FL_EEMPTY : FL_EINVAL;
    int rc = fl_train_check_data(m, d);
    if (rc)
        return rc;
    double t0 = fl_clock_mono_s();
    size_t ld = d->label_dim ? d->label_dim : 1;
    const int seq = m->info->loss == FL_LOSS_SEQ_CE;
    size_t bmax = batch < d->n ? batch : d->n;
    uint32_t *idx = malloc(d->n * sizeof *idx);
    float *x = malloc(bmax * d->dim * sizeof(float));
    int32_t *y = malloc(bmax * ld * sizeof(int32_t));
    rc = FL_ENOMEM;
    if (!idx || !x || !y || fl_model_reserve(m, bmax))
        goto out;
    for (size_t i = 0; i < d->n; i++)
        idx[i] = (uint32_t)i;
    if (rng)
        fl_rng_shuffle_u32(rng, idx, d->n);
    fl_loss_stats_t ls = {0, 0};
    double loss_sum = 0.0;
    rc = 0;
    for (size_t off = 0; off < d->n && (!max_steps || s.steps < max_steps); off += bmax) {
        size_t n = d->n - off < bmax ? d->n - off : bmax;
        gather(d, idx + off, n, x, y);
        double L;
        const double counted_before = ls.total;
        rc = fl_model_loss(m, x, y, n, opt ? FL_MODE_TRAIN : FL_MODE_EVAL, opt != NULL, &L, &ls);
        if (rc)
            goto out;
        if (!isfinite(L)) {
            FL_LOG_E("train", "model %s: loss is %f at example %zu; lower the learning rate",
                     m->info->name, L, off);
            rc = FL_ENONFINITE;
            goto out;
        }
        /* A per-step model's batch loss is a mean over its non-pad tokens,
         * so batches are weighted by those; everything else by examples. */
        const double w = seq ? ls.total - counted_before : (double)n;
        loss_sum += L * w;
        s.weight += w;
        if (opt)
            fl_sgd_step(opt, &m->params, &m->grads);
        s.steps++;
        s.examples += n;
    }
    s.loss = s.weight > 0 ? loss_sum / s.weight : 0.0;
    s.metric = m->info->metric == FL_METRIC_NONE ? NAN : (ls.total > 0 ? ls.hits / ls.total : 0.0);
out:
    s.seconds = fl_clock_mono_s() - t0;
    *st = s;
    free(idx);
    free(x);
    free(y);
    return rc;
}

/* The paper's CIFAR preprocessing, for a model with a crop fed larger
 * images: a fresh random crop + flip per example when training (from rng),
 * the central crop when evaluating, each image standardized. *use points at
 * d itself or at *tmp, which the caller frees. */
static int crop_view(const fl_model_t *m, const fl_dataset_t *d, int train, fl_rng_t *rng,
                     fl_dataset_t *tmp, const fl_dataset_t **use)
{
    const int c = m->info->crop;
    fl_dataset_init(tmp);
    *use = d;
    if (!c || d->ndim != 3 || d->shape[1] <= c || d->shape[2] <= c)
        return 0;
    int rc = fl_augment_dataset(d, c, train, rng, tmp);
    if (rc == 0)
        *use = tmp;
    return rc;
}

int fl_train_epoch(fl_model_t *m, fl_sgd_t *opt, const fl_dataset_t *d, size_t batch,
                   fl_rng_t *rng, fl_train_stats_t *st)
{
    if (!opt)
        return FL_EINVAL;
    return pass(m, opt, d, batch, rng, st, 0);
}

int fl_train_eval(fl_model_t *m, const fl_dataset_t *d, size_t batch, fl_train_stats_t *st)
{
    if (!m || !d)
        return FL_EINVAL;
    fl_dataset_t tmp;
    const fl_dataset_t *use;
    int rc = crop_view(m, d, 0, NULL, &tmp, &use);
    if (rc == 0)
        rc = pass(m, NULL, use, batch, NULL, st, 0);
    fl_dataset_free(&tmp);
    return rc;
}

int fl_train_run(fl_model_t *m, const fl_dataset_t *d, const fl_train_config_t *cfg,
                 fl_train_epoch_cb cb, void *ud, fl_train_stats_t *last)
{
    if (!m || !d || !cfg || cfg->epochs < 1 || cfg->batch < 1 || cfg->nids > FL_TRAIN_MAX_IDS)
        return FL_EINVAL;
    fl_sgd_t opt;
    int rc = fl_sgd_init(&opt, &cfg->sgd, &m->params);
    if (rc)
        return rc;
    fl_model_seed_dropout(m, cfg->seed, cfg->ids, cfg->nids);
    fl_train_stats_t st = {0, NAN, 0, 0, 0, 0};
    size_t steps_left = cfg->max_steps, seen = 0;
    double seen_weight = 0;
    for (int e = 1; e <= cfg->epochs; e++) {
        uint64_t tuple[FL_TRAIN_MAX_IDS + 2];
        memcpy(tuple, cfg->ids, cfg->nids * sizeof(uint64_t));
        tuple[cfg->nids] = FL_RNG_SHUFFLE;
        tuple[cfg->nids + 1] = (uint64_t)e;
        fl_rng_t r, ra;
        fl_rng_stream(&r, cfg->seed, tuple, cfg->nids + 2);
        /* Crops are drawn afresh every epoch, from their own stream. */
        tuple[cfg->nids] = FL_RNG_AUGMENT;
        fl_rng_stream(&ra, cfg->seed, tuple, cfg->nids + 2);
        fl_dataset_t tmp;
        const fl_dataset_t *use;
        if ((rc = crop_view(m, d, 1, &ra, &tmp, &use)) == 0)
            rc = pass(m, &opt, use, cfg->batch, &r, &st, steps_left);
        fl_dataset_free(&tmp);
        if (rc)
            break;
        if (st.examples > seen)
            seen = st.examples;
        if (st.weight > seen_weight)
            seen_weight = st.weight;
        if (cb && cb(e, &st, ud)) {
            rc = FL_ECANCELED;
            break;
        }
        if (cfg->max_steps) {
            steps_left -= st.steps < steps_left ? st.steps : steps_left;
            if (steps_left == 0)
                break;
        }
    }
    st.examples = seen;
    st.weight = seen_weight;
    if (last)
        *last = st;
    fl_sgd_free(&opt);
    return rc;
}
