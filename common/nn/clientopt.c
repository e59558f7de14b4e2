#include "common/nn/clientopt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

int fl_sgd_init(fl_sgd_t *s, const fl_sgd_config_t *cfg, const fl_params_t *p)
{
    if (!s || !cfg || !p)
        return FL_EINVAL;
    memset(s, 0, sizeof *s);
    if (!isfinite(cfg->lr) || cfg->lr < 0 || !(cfg->momentum >= 0 && cfg->momentum < 1) ||
        !(cfg->weight_decay >= 0) || !isfinite(cfg->weight_decay))
        return FL_EINVAL;
    s->cfg = *cfg;
    s->n = p->numel;
    if (cfg->momentum > 0) {
        s->velocity = calloc(p->numel ? p->numel : 1, sizeof(float));
        if (!s->velocity)
            return FL_ENOMEM;
    }
    return 0;
}

void fl_sgd_free(fl_sgd_t *s)
{
    if (!s)
        return;
    free(s->velocity);
    s->velocity = NULL;
}

void fl_sgd_reset(fl_sgd_t *s)
{
    if (s && s->velocity)
        memset(s->velocity, 0, s->n * sizeof(float));
}

void fl_sgd_step(fl_sgd_t *s, fl_params_t *p, const fl_params_t *grad)
{
    const float lr = s->cfg.lr, mu = s->cfg.momentum;
    /* Per view only to know whether decay applies; within a view it is one
     * vectorizable loop over a contiguous range. */
    for (size_t k = 0; k < p->nviews; k++) {
        const fl_param_view_t *v = &p->views[k];
        float *restrict x = p->data + v->offset;
        const float *restrict g = grad->data + v->offset;
        const float wd = (v->flags & FL_PARAM_DECAY) ? s->cfg.weight_decay : 0.0f;
        const size_t n = v->numel;
        if (s->velocity) {
            float *restrict vel = s->velocity + v->offset;
            for (size_t i = 0; i < n; i++) {
                float gi = g[i] + wd * x[i];
                vel[i] = mu * vel[i] + gi;
                x[i] -= lr * vel[i];
            }
        } else {
            for (size_t i = 0; i < n; i++)
                x[i] -= lr * (g[i] + wd * x[i]);
        }
    }
}

int fl_lr_schedule_parse(const char *spec, double base_lr, fl_lr_schedule_t *out)
{
    if (!spec || !out || !isfinite(base_lr) || base_lr < 0)
        return FL_EINVAL;
    fl_lr_schedule_t s = {.kind = FL_LR_CONSTANT, .lr = base_lr, .rate = 0, .steps = 1};
    char buf[128];
    if (strlen(spec) >= sizeof buf)
        return FL_EINVAL;
    strcpy(buf, spec);
    char *save = NULL;
    char *tok = strtok_r(buf, ":", &save);
    if (!tok)
        return FL_EINVAL;
    int needs_args = 1;
    if (strcmp(tok, "constant") == 0) {
        needs_args = 0;
    } else if (strcmp(tok, "exp") == 0) {
        s.kind = FL_LR_EXP;
    } else if (strcmp(tok, "invlin") == 0) {
        s.kind = FL_LR_INV_LINEAR;
    } else if (strcmp(tok, "invsqrt") == 0) {
        s.kind = FL_LR_INV_SQRT;
    } else {
        return FL_EINVAL;
    }
    if (needs_args) {
        char *r = strtok_r(NULL, ":", &save), *st = strtok_r(NULL, ":", &save), *end;
        if (!r || !st)
            return FL_EINVAL;
        s.rate = strtod(r, &end);
        if (*end || !isfinite(s.rate) || s.rate < 0)
            return FL_EINVAL;
        s.steps = strtod(st, &end);
        if (*end || !isfinite(s.steps) || s.steps <= 0)
            return FL_EINVAL;
        if (s.kind == FL_LR_EXP && s.rate <= 0)
            return FL_EINVAL;
    }
    while ((tok = strtok_r(NULL, ":", &save))) {
        if (strcmp(tok, "stair") == 0) {
            s.staircase = 1;
        } else if (strncmp(tok, "warmup=", 7) == 0) {
            char *end;
            long w = strtol(tok + 7, &end, 10);
            if (*end || w < 0 || w > 1000000)
                return FL_EINVAL;
            s.warmup = (uint32_t)w;
        } else {
            return FL_EINVAL;
        }
    }
    *out = s;
    return 0;
}

double fl_lr_schedule_at(const fl_lr_schedule_t *s, uint64_t t)
{
    double p = (double)t / s->steps;
    if (s->staircase)
        p = floor(p);
    double lr = s->lr;
    switch (s->kind) {
    case FL_LR_CONSTANT:
        break;
    case FL_LR_EXP:
        lr *= pow(s->rate, p);
        break;
    case FL_LR_INV_LINEAR:
        lr /= 1.0 + s->rate * p;
        break;
    case FL_LR_INV_SQRT:
        lr /= sqrt(1.0 + s->rate * p);
        break;
    }
    if (t < s->warmup)
        lr *= (double)(t + 1) / (double)s->warmup;
    return lr;
}
