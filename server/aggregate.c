#include "server/aggregate.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/params.h"
#include "server/dp.h"
#include "server/robust.h"

int fl_agg_parse(const char *s, fl_agg_spec_t *out)
{
    if (!s || !out)
        return FL_EINVAL;
    fl_agg_spec_t sp = {0};
    char *end;
    errno = 0;
    if (strcmp(s, "mean") == 0) {
        sp.rule = FL_AGG_MEAN;
    } else if (strcmp(s, "median") == 0) {
        sp.rule = FL_AGG_MEDIAN;
    } else if (strncmp(s, "trimmed_mean:", 13) == 0) {
        sp.rule = FL_AGG_TRIMMED_MEAN;
        sp.beta = strtod(s + 13, &end);
        if (!s[13] || *end || errno || !(sp.beta >= 0 && sp.beta < 0.5))
            return FL_EINVAL;
    } else if (strncmp(s, "krum:", 5) == 0) {
        sp.rule = FL_AGG_KRUM;
        const char *p = s + 5;
        if (*p < '0' || *p > '9')
            return FL_EINVAL;
        unsigned long f = strtoul(p, &end, 10), m = 1;
        if (errno || f > 1000000)
            return FL_EINVAL;
        if (*end == ',') {
            p = end + 1;
            if (*p < '0' || *p > '9')
                return FL_EINVAL;
            m = strtoul(p, &end, 10);
            if (errno || m < 1 || m > 1000000)
                return FL_EINVAL;
        }
        if (*end)
            return FL_EINVAL;
        sp.f = (uint32_t)f;
        sp.m = (uint32_t)m;
    } else {
        return FL_EINVAL;
    }
    *out = sp;
    return 0;
}

static int buffered(const fl_agg_config_t *cfg)
{
    return cfg->spec.rule != FL_AGG_MEAN;
}

size_t fl_agg_memory_bytes(const fl_agg_config_t *cfg, size_t n)
{
    double b = 0;
    if (buffered(cfg)) {
        b = ((double)cfg->capacity + 1) * (double)n * sizeof(float);
        if (cfg->spec.rule == FL_AGG_KRUM)
            b += (double)cfg->capacity * cfg->capacity * sizeof(double);
    } else if (cfg->dp_noise_multiplier > 0) {
        b = (double)n * (sizeof(double) + sizeof(float));
    } else if (cfg->clip.mode != FL_CLIP_NONE) {
        b = (double)n * sizeof(float);
    }
    return b >= (double)SIZE_MAX ? SIZE_MAX : (size_t)b;
}

int fl_agg_config_validate(const fl_agg_config_t *cfg)
{
    if (!cfg || cfg->capacity == 0)
        return FL_ECONFIG;
    if (!(cfg->dp_noise_multiplier >= 0) || !isfinite(cfg->dp_noise_multiplier)) {
        FL_LOG_E("config", "dp_noise_multiplier must be a number >= 0");
        return FL_ECONFIG;
    }
    if (cfg->dp_noise_multiplier > 0) {
        if (cfg->spec.rule != FL_AGG_MEAN) {
            FL_LOG_E("config", "DP-FedAvg (dp_noise_multiplier > 0) needs aggregator = mean: the Gaussian "
                               "mechanism's sensitivity bound is for a clipped sum");
            return FL_ECONFIG;
        }
        if (cfg->clip.mode == FL_CLIP_NONE) {
            FL_LOG_E("config", "DP-FedAvg needs a clip_norm C, fixed or adaptive (the noise is z*C)");
            return FL_ECONFIG;
        }
        double su;
        if (cfg->clip.mode == FL_CLIP_ADAPTIVE &&
            fl_dp_update_multiplier(cfg->dp_noise_multiplier, cfg->dp_count_stddev, &su)) {
            FL_LOG_E("config", "adaptive clipping under DP: dp_clip_count_stddev (sigma_b = %g) must exceed "
                               "dp_noise_multiplier / 2 (%g): the update's noise multiplier (z^-2 - (2 sigma_b)^-2)^-1/2 "
                               "is finite only then (Andrew et al. suggest sigma_b = clients_per_round / 20, which "
                               "needs many clients per round; raise it, or lower z)",
                     cfg->dp_count_stddev, cfg->dp_noise_multiplier / 2);
            return FL_ECONFIG;
        }
        if (!(cfg->dp_denominator > 0)) {
            FL_LOG_E("config", "DP-FedAvg needs a positive fixed denominator");
            return FL_ECONFIG;
        }
    }
    if (cfg->spec.rule == FL_AGG_KRUM && (cfg->capacity < cfg->spec.f + 3 || cfg->spec.m > cfg->capacity)) {
        FL_LOG_E("config", "aggregator krum:%u,%u needs clients_per_round >= f + 3 = %u and m <= clients_per_round "
                           "(%u)",
                 cfg->spec.f, cfg->spec.m, cfg->spec.f + 3, cfg->capacity);
        return FL_ECONFIG;
    }
    return 0;
}

struct fl_agg {
    fl_agg_config_t cfg;
    size_t n;
    fl_clip_t clip;
    float *scratch; /* a clipped delta (mean), or D */
    float *slots;   /* capacity x n deltas (buffered rules) */
    double *sum;    /* DP: the unweighted sum of clipped deltas */
    fl_dp_noise_t *noise;
    double sigma_update; /* the sum's noise multiplier (z, or sigma_update when adaptive) */
    double last_within;  /* the fraction the last finish stepped the bound with */
    uint32_t count, rejected;
};

int fl_agg_create(const fl_agg_config_t *cfg, size_t n, fl_agg_t **out)
{
    if (!cfg || !out || !n)
        return FL_EINVAL;
    int rc = fl_agg_config_validate(cfg);
    if (rc)
        return rc;
    fl_agg_t *a = calloc(1, sizeof *a);
    if (!a)
        return FL_ENOMEM;
    a->cfg = *cfg;
    a->n = n;
    a->last_within = NAN;
    a->sigma_update = cfg->dp_noise_multiplier;
    if (cfg->dp_noise_multiplier > 0 && cfg->clip.mode == FL_CLIP_ADAPTIVE)
        fl_dp_update_multiplier(cfg->dp_noise_multiplier, cfg->dp_count_stddev, &a->sigma_update); /* validated */
    if ((rc = fl_clip_init(&a->clip, &cfg->clip))) {
        FL_LOG_E("config", "clip_norm: bad bound, quantile or rate");
        rc = FL_ECONFIG;
        goto fail;
    }
    rc = FL_ENOMEM;
    if ((buffered(cfg) || cfg->dp_noise_multiplier > 0 || cfg->clip.mode != FL_CLIP_NONE) &&
        !(a->scratch = malloc(n * sizeof *a->scratch)))
        goto fail;
    if (buffered(cfg)) {
        if ((double)cfg->capacity * (double)n * sizeof(float) >= (double)SIZE_MAX ||
            !(a->slots = malloc((size_t)cfg->capacity * n * sizeof *a->slots)))
            goto fail;
    }
    if (cfg->dp_noise_multiplier > 0) {
        if (!(a->sum = calloc(n, sizeof *a->sum)))
            goto fail;
        if ((rc = fl_dp_noise_create(&a->noise)))
            goto fail;
    }
    *out = a;
    return 0;
fail:
    fl_agg_free(a);
    return rc;
}

void fl_agg_free(fl_agg_t *a)
{
    if (!a)
        return;
    free(a->scratch);
    free(a->slots);
    free(a->sum);
    fl_dp_noise_free(a->noise);
    free(a);
}

void fl_agg_begin(fl_agg_t *a)
{
    a->count = a->rejected = 0;
    a->clip.seen = a->clip.within = 0;
    if (a->sum)
        memset(a->sum, 0, a->n * sizeof *a->sum);
}

int fl_agg_add(fl_agg_t *a, fl_serveropt_t *opt, const float *delta, size_t n, double num_examples, double *norm)
{
    if (norm)
        *norm = NAN;
    const fl_agg_config_t *c = &a->cfg;
    int plain = !buffered(c) && c->dp_noise_multiplier == 0 && c->clip.mode == FL_CLIP_NONE;
    if (plain) {
        /* exactly the path without this module */
        int rc = fl_serveropt_add(opt, delta, n, num_examples);
        if (rc == 0)
            a->count++;
        if (norm && rc == 0)
            *norm = fl_f32_norm(delta, n);
        return rc;
    }
    int rc = 0;
    if (!delta || n != a->n)
        rc = FL_ESHAPE;
    else if (!isfinite(num_examples) || num_examples <= 0)
        rc = FL_EINVAL;
    double nrm = rc ? NAN : fl_f32_norm(delta, n);
    if (!rc && !isfinite(nrm))
        rc = FL_ENONFINITE; /* a finite float vector's norm is finite in double */
    if (!rc && a->count >= c->capacity && (buffered(c) || c->dp_noise_multiplier > 0))
        rc = FL_ESTATE;
    if (rc) {
        a->rejected++;
        return rc;
    }
    float s = (float)fl_clip_scale(&a->clip, nrm);
    fl_clip_observe(&a->clip, nrm);
    if (buffered(c)) {
        float *dst = a->slots + (size_t)a->count * n;
        for (size_t i = 0; i < n; i++)
            dst[i] = s * delta[i];
    } else if (c->dp_noise_multiplier > 0) {
        for (size_t i = 0; i < n; i++)
            a->sum[i] += (double)(s * delta[i]);
    } else {
        for (size_t i = 0; i < n; i++)
            a->scratch[i] = s * delta[i];
        if ((rc = fl_serveropt_add(opt, a->scratch, n, num_examples))) {
            a->clip.seen--; /* not counted after all */
            if (nrm <= a->clip.c)
                a->clip.within--;
            a->rejected++;
            return rc;
        }
    }
    a->count++;
    if (norm)
        *norm = nrm;
    return 0;
}

int fl_agg_add_batch(fl_agg_t *a, fl_serveropt_t *opt, const float *const *deltas, const double *num_examples,
                     size_t count, size_t n, int *rc, double *norm)
{
    const fl_agg_config_t *c = &a->cfg;
    if (count == 0 || count > FL_SERVEROPT_MAX_BATCH)
        return FL_EINVAL;
    if (count > 1 && !buffered(c) && c->dp_noise_multiplier == 0 && c->clip.mode == FL_CLIP_NONE) {
        int r = fl_serveropt_add_batch(opt, deltas, num_examples, count, n, rc, norm);
        for (size_t i = 0; r == 0 && i < count; i++)
            a->count += rc[i] == 0;
        return r;
    }
    for (size_t i = 0; i < count; i++)
        rc[i] = fl_agg_add(a, opt, deltas[i], n, num_examples[i], &norm[i]);
    return 0;
}

int fl_agg_can_fuse(const fl_agg_t *a)
{
    const fl_agg_config_t *c = &a->cfg;
    return !buffered(c) && c->dp_noise_multiplier == 0 && c->clip.mode == FL_CLIP_NONE;
}

int fl_agg_add_batch_finish(fl_agg_t *a, fl_serveropt_t *opt, const float *const *deltas,
                            const double *num_examples, size_t count, size_t n, int *rc, double *norm,
                            float *x, fl_serveropt_round_t *res)
{
    if (!fl_agg_can_fuse(a))
        return FL_EUNSUPPORTED;
    if (n != a->n)
        return FL_ESHAPE;
    int r = fl_serveropt_add_batch_finish(opt, deltas, num_examples, count, n, rc, norm, x, res);
    if (r != 0 && r != FL_ENONFINITE)
        return r; /* nothing done: the round is still open */
    for (size_t i = 0; i < count; i++)
        a->count += rc[i] == 0;
    /* fl_agg_finish's tail for the plain mean: no clip bound to move. */
    if (res) {
        res->accepted = a->count;
        res->rejected += a->rejected;
    }
    a->last_within = fl_clip_within(&a->clip);
    fl_clip_step(&a->clip, a->last_within);
    a->clip.seen = a->clip.within = 0;
    return r;
}

int fl_agg_finish(fl_agg_t *a, fl_serveropt_t *opt, float *x, size_t n, fl_serveropt_round_t *res)
{
    const fl_agg_config_t *c = &a->cfg;
    int rc = 0;
    if (n != a->n)
        return FL_ESHAPE;
    if (a->count && (buffered(c) || c->dp_noise_multiplier > 0)) {
        size_t k = a->count;
        if (buffered(c)) {
            const float **d = malloc(k * sizeof *d);
            if (!d)
                return FL_ENOMEM;
            for (size_t i = 0; i < k; i++)
                d[i] = a->slots + i * n;
            if (c->spec.rule == FL_AGG_MEDIAN)
                rc = fl_robust_median(d, k, n, a->scratch);
            else if (c->spec.rule == FL_AGG_TRIMMED_MEAN)
                rc = fl_robust_trimmed_mean(d, k, n, c->spec.beta, a->scratch);
            else if (k >= (size_t)c->spec.f + 3)
                rc = fl_robust_krum(d, k, n, c->spec.f, c->spec.m < k ? c->spec.m : k, a->scratch, NULL);
            else {
                /* Fewer reports than Krum can score: nothing is applied
                 * rather than an unscreened mean. */
                FL_LOG_W("aggregate", "krum:%u needs at least %u updates, the round has %zu: model unchanged",
                         c->spec.f, c->spec.f + 3, k);
                rc = 1;
            }
            free(d);
        } else {
            rc = fl_dp_estimate(a->noise, a->sum, n, a->sigma_update, fl_clip_bound(&a->clip), c->dp_denominator,
                                a->scratch);
        }
        if (rc < 0)
            return rc;
        /* D enters the ServerOpt as the round's only update, weight 1. */
        if (rc == 0 && (rc = fl_serveropt_add(opt, a->scratch, n, 1.0)))
            return rc;
    }
    /* Under DP the bound may only move with what the round releases: the
     * count within it, noised (the paper's b~, sensitivity 1/2 per client). */
    double within = fl_clip_within(&a->clip);
    if (c->dp_noise_multiplier > 0 && c->clip.mode == FL_CLIP_ADAPTIVE && a->count) {
        double e = 0;
        int nrc = fl_dp_noise_add(a->noise, &e, 1, c->dp_count_stddev);
        if (nrc)
            return nrc;
        within = fl_clip_noised_within(&a->clip, e, c->dp_denominator);
    }
    rc = fl_serveropt_finish(opt, x, n, res);
    if (rc == 0 && res) {
        res->accepted = a->count;
        res->rejected += a->rejected;
    }
    a->last_within = within;
    fl_clip_step(&a->clip, within);
    a->clip.seen = a->clip.within = 0;
    return rc;
}

double fl_agg_clip_bound(const fl_agg_t *a)
{
    return fl_clip_bound(&a->clip);
}

double fl_agg_clip_within(const fl_agg_t *a)
{
    return a->last_within;
}

double fl_agg_update_multiplier(const fl_agg_t *a)
{
    return a->sigma_update;
}

int fl_agg_clip_replay(fl_agg_t *a, double used, double within)
{
    int rc = fl_clip_set_bound(&a->clip, used);
    if (rc == 0)
        fl_clip_step(&a->clip, within);
    return rc;
}

uint32_t fl_agg_count(const fl_agg_t *a)
{
    return a->count;
}
