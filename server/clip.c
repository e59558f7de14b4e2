#include "server/clip.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

static int positive(const char *s, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(x) || !(x > 0))
        return FL_EINVAL;
    *out = x;
    return 0;
}

int fl_clip_parse(const char *s, fl_clip_config_t *out)
{
    if (!s || !out)
        return FL_EINVAL;
    if (strcmp(s, "none") == 0 || !*s) {
        out->mode = FL_CLIP_NONE;
        return 0;
    }
    if (strncmp(s, "adaptive", 8) == 0) {
        if (s[8] == 0) {
            out->mode = FL_CLIP_ADAPTIVE;
            if (!(out->norm > 0))
                out->norm = 1;
            return 0;
        }
        if (s[8] != ':' || positive(s + 9, &out->norm))
            return FL_EINVAL;
        out->mode = FL_CLIP_ADAPTIVE;
        return 0;
    }
    if (positive(s, &out->norm))
        return FL_EINVAL;
    out->mode = FL_CLIP_FIXED;
    return 0;
}

int fl_clip_init(fl_clip_t *c, const fl_clip_config_t *cfg)
{
    if (!c || !cfg)
        return FL_EINVAL;
    if (cfg->mode != FL_CLIP_NONE && !(cfg->norm > 0 && isfinite(cfg->norm)))
        return FL_EINVAL;
    if (cfg->mode == FL_CLIP_ADAPTIVE &&
        (!(cfg->quantile >= 0 && cfg->quantile <= 1) || !(cfg->lr > 0 && isfinite(cfg->lr))))
        return FL_EINVAL;
    memset(c, 0, sizeof *c);
    c->cfg = *cfg;
    c->c = cfg->mode == FL_CLIP_NONE ? 0 : cfg->norm;
    return 0;
}

double fl_clip_scale(const fl_clip_t *c, double norm)
{
    if (!isfinite(norm))
        return 0;
    if (c->cfg.mode == FL_CLIP_NONE || norm <= c->c)
        return 1;
    return c->c / norm;
}

void fl_clip_observe(fl_clip_t *c, double norm)
{
    c->seen++;
    if (norm <= c->c)
        c->within++;
}

void fl_clip_step(fl_clip_t *c, double within)
{
    if (c->cfg.mode == FL_CLIP_ADAPTIVE && within >= 0 && within <= 1)
        c->c *= exp(-c->cfg.lr * (within - c->cfg.quantile));
}

double fl_clip_within(const fl_clip_t *c)
{
    return c->seen ? (double)c->within / c->seen : NAN;
}

double fl_clip_noised_within(const fl_clip_t *c, double noise, double denominator)
{
    if (!c->seen || !(denominator > 0))
        return NAN;
    double b = ((double)c->within - 0.5 * c->seen + noise) / denominator + 0.5;
    return b < 0 ? 0 : b > 1 ? 1 : b;
}

void fl_clip_end_round(fl_clip_t *c)
{
    fl_clip_step(c, fl_clip_within(c));
    c->seen = c->within = 0;
}

double fl_clip_bound(const fl_clip_t *c)
{
    return c->cfg.mode == FL_CLIP_NONE ? 0 : c->c;
}

int fl_clip_set_bound(fl_clip_t *c, double bound)
{
    if (c->cfg.mode == FL_CLIP_NONE || !(bound > 0 && isfinite(bound)))
        return FL_EINVAL;
    c->c = bound;
    return 0;
}
