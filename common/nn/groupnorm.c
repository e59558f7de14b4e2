#include "common/nn/groupnorm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/nn/workers.h"

typedef struct {
    int C, G;
    size_t hw; /* elements per channel */
    float eps;
    size_t cap_n;
    float *mean, *rstd; /* [n, G] statistics of the last forward */
} groupnorm_t;

static int gn_reserve(fl_layer_t *l, size_t max_n)
{
    groupnorm_t *s = l->priv;
    if (max_n <= s->cap_n)
        return 0;
    free(s->mean);
    free(s->rstd);
    s->mean = malloc(max_n * (size_t)s->G * sizeof(float));
    s->rstd = malloc(max_n * (size_t)s->G * sizeof(float));
    s->cap_n = 0;
    if (!s->mean || !s->rstd)
        return FL_ENOMEM;
    s->cap_n = max_n;
    return 0;
}

static void gn_init(fl_layer_t *l, fl_rng_t *rng)
{
    (void)rng;
    const groupnorm_t *s = l->priv;
    for (int c = 0; c < s->C; c++) {
        l->p[0][c] = 1.0f;
        l->p[1][c] = 0.0f;
    }
}

/* One pass of either direction over groups [g0, g1) of every example. */
typedef struct {
    fl_layer_t *l;
    const float *x, *dy;
    float *y, *dx;
    size_t n, jobs;
} gn_job_t;

static void gn_forward_groups(fl_layer_t *l, const float *x, float *y, size_t n, size_t g0,
                              size_t g1)
{
    groupnorm_t *s = l->priv;
    const size_t cg = (size_t)(s->C / s->G), m = cg * s->hw;
    const float *w = l->p[0], *b = l->p[1];
    for (size_t i = 0; i < n; i++)
        for (size_t g = g0; g < g1; g++) {
            const size_t off = i * l->in_dim + g * m;
            const float *xg = x + off;
            /* Two passes in double: the mean first, then the centred variance,
             * so a large common offset cannot cancel the variance away. */
            double sum = 0.0;
            for (size_t k = 0; k < m; k++)
                sum += xg[k];
            const double mu = sum / (double)m;
            double ss = 0.0;
            for (size_t k = 0; k < m; k++) {
                double d = xg[k] - mu;
                ss += d * d;
            }
            const float mean = (float)mu;
            const float rstd = (float)(1.0 / sqrt(ss / (double)m + s->eps));
            s->mean[i * (size_t)s->G + g] = mean;
            s->rstd[i * (size_t)s->G + g] = rstd;
            for (size_t c = 0; c < cg; c++) {
                const size_t ch = g * cg + c;
                const float a = rstd * w[ch], sh = b[ch] - mean * a;
                const float *xc = xg + c * s->hw;
                float *yc = y + off + c * s->hw;
                for (size_t k = 0; k < s->hw; k++)
                    yc[k] = xc[k] * a + sh;
            }
        }
}

static void gn_backward_groups(fl_layer_t *l, const float *x, const float *dy, float *dx,
                               size_t n, size_t g0, size_t g1)
{
    groupnorm_t *s = l->priv;
    const size_t cg = (size_t)(s->C / s->G), m = cg * s->hw;
    const float *w = l->p[0];
    float *gw = l->g[0], *gb = l->g[1];
    for (size_t i = 0; i < n; i++)
        for (size_t g = g0; g < g1; g++) {
            const size_t off = i * l->in_dim + g * m;
            const float mean = s->mean[i * (size_t)s->G + g];
            const float rstd = s->rstd[i * (size_t)s->G + g];
            /* With xh = (x - mean) * rstd and dxh = dy * w:
             * dx = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)). */
            double sd = 0.0, sdx = 0.0;
            for (size_t c = 0; c < cg; c++) {
                const size_t ch = g * cg + c;
                const float *xc = x + off + c * s->hw, *dyc = dy + off + c * s->hw;
                double dw = 0.0, db = 0.0;
                for (size_t k = 0; k < s->hw; k++) {
                    const float xh = (xc[k] - mean) * rstd;
                    dw += (double)dyc[k] * xh;
                    db += dyc[k];
                }
                gw[ch] += (float)dw;
                gb[ch] += (float)db;
                sd += db * w[ch];
                sdx += dw * w[ch];
            }
            if (!dx)
                continue;
            const float md = (float)(sd / (double)m), mdx = (float)(sdx / (double)m);
            for (size_t c = 0; c < cg; c++) {
                const size_t ch = g * cg + c;
                const float *xc = x + off + c * s->hw, *dyc = dy + off + c * s->hw;
                float *dxc = dx + off + c * s->hw;
                for (size_t k = 0; k < s->hw; k++) {
                    const float xh = (xc[k] - mean) * rstd;
                    dxc[k] = rstd * (dyc[k] * w[ch] - md - xh * mdx);
                }
            }
        }
}

/* A model that splits its layers (fl__workers_current) runs the groups in
 * ranges side by side: each channel's statistics and parameter gradients
 * belong to one group, accumulated over the examples in the same order, so
 * the result is the one-thread result, bit for bit. */
static void gn_job(void *arg, size_t j, int backward)
{
    gn_job_t *a = arg;
    const size_t G = (size_t)((groupnorm_t *)a->l->priv)->G;
    const size_t g0 = G * j / a->jobs, g1 = G * (j + 1) / a->jobs;
    if (backward)
        gn_backward_groups(a->l, a->x, a->dy, a->dx, a->n, g0, g1);
    else
        gn_forward_groups(a->l, a->x, a->y, a->n, g0, g1);
}

static void gn_forward_job(void *arg, size_t j) { gn_job(arg, j, 0); }

static void gn_backward_job(void *arg, size_t j) { gn_job(arg, j, 1); }

static size_t gn_jobs(const groupnorm_t *s, const fl_workers_t *w)
{
    size_t jobs = (size_t)fl_workers_count(w) + 1;
    return jobs < (size_t)s->G ? jobs : (size_t)s->G;
}

static void gn_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    (void)mode;
    fl_workers_t *w = fl__workers_current();
    gn_job_t a = {.l = l, .x = x, .y = y, .n = n, .jobs = gn_jobs(l->priv, w)};
    fl_workers_run(w, a.jobs, gn_forward_job, &a);
}

static void gn_backward(fl_layer_t *l, const float *x, const float *y, const float *dy, float *dx,
                        size_t n)
{
    (void)y;
    fl_workers_t *w = fl__workers_current();
    gn_job_t a = {.l = l, .x = x, .dy = dy, .dx = dx, .n = n, .jobs = gn_jobs(l->priv, w)};
    fl_workers_run(w, a.jobs, gn_backward_job, &a);
}

static void gn_destroy(fl_layer_t *l)
{
    groupnorm_t *s = l->priv;
    if (s) {
        free(s->mean);
        free(s->rstd);
    }
    free(s);
}

static const fl_layer_ops_t gn_ops = {
    .kind = "groupnorm",
    .reserve = gn_reserve,
    .init = gn_init,
    .forward = gn_forward,
    .backward = gn_backward,
    .destroy = gn_destroy,
};

int fl_groupnorm_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in, int groups,
                        float eps, fl_layer_t **out)
{
    *out = NULL;
    if (!layout || !in || in->ndim < 1 || groups < 1 || in->d[0] < 1 || in->d[0] > INT32_MAX ||
        in->d[0] % groups != 0 || !(eps > 0.0f))
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    groupnorm_t *s = calloc(1, sizeof *s);
    int rc = FL_ENOMEM;
    if (!l || !s)
        goto fail;
    if ((rc = fl_layer_setup(l, &gn_ops, prefix, in, in)))
        goto fail;
    s->C = (int)in->d[0];
    s->G = groups;
    s->hw = l->in_dim / (size_t)s->C;
    s->eps = eps;
    l->priv = s;
    s = NULL;
    int64_t c = in->d[0];
    if ((rc = fl_layer_add_param(l, layout, "weight", 1, &c, 0)) ||
        (rc = fl_layer_add_param(l, layout, "bias", 1, &c, 0)))
        goto fail;
    *out = l;
    return 0;
fail:
    fl_layer_free(l);
    free(s);
    return rc;
}
