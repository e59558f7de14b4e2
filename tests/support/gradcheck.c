#include "tests/support/gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/rng.h"

fl_gc_opts_t fl_gc_defaults(void)
{
    fl_gc_opts_t o;
    memset(&o, 0, sizeof o);
    o.eps = 1e-3;
    o.rtol = 2e-2;
    o.atol = 1e-4;
    o.max_per_tensor = 0;
    o.seed = 1;
    o.check_input = 1;
    return o;
}

static void compare(const char *what, size_t idx, double a, double num, const fl_gc_opts_t *o,
                    fl_gc_result_t *r)
{
    double bound = o->atol + o->rtol * fmax(fabs(a), fabs(num));
    double q = fabs(a - num) / bound;
    r->checked++;
    if (!(q <= 1.0)) {
        if (r->failed < 5)
            fprintf(stderr, "gradcheck: %s[%zu]: analytic %.6g, numeric %.6g\n", what, idx, a, num);
        r->failed++;
    }
    if (!(q <= r->worst))
        r->worst = isnan(q) ? INFINITY : q;
}

/* Picks the indices to check: all of them, or a sample of max_per_tensor. */
static size_t pick(size_t numel, size_t k, size_t max, fl_rng_t *rng)
{
    if (!max || numel <= max)
        return k;
    return (size_t)fl_rng_below(rng, numel);
}

static size_t count_for(size_t numel, size_t max) { return (!max || numel <= max) ? numel : max; }

/* ---- layers ---- */

typedef struct {
    fl_layer_t *l;
    float *x, *y, *r;
    size_t n;
    fl_rng_t stream, saved;
} layer_ctx_t;

static double layer_loss(layer_ctx_t *c)
{
    c->stream = c->saved;
    c->l->ops->forward(c->l, c->x, c->y, c->n, FL_MODE_TRAIN);
    double s = 0.0;
    for (size_t i = 0; i < c->n * c->l->out_dim; i++)
        s += (double)c->y[i] * c->r[i];
    return s;
}

static void num_grad_check(const char *what, float *v, size_t numel, const float *analytic,
                           double (*lossf)(void *), void *ctx, const fl_gc_opts_t *o,
                           fl_rng_t *sample, fl_gc_result_t *r)
{
    size_t cnt = count_for(numel, o->max_per_tensor);
    for (size_t k = 0; k < cnt; k++) {
        size_t i = pick(numel, k, o->max_per_tensor, sample);
        float keep = v[i];
        v[i] = (float)(keep + o->eps);
        double hi_eps = (double)v[i] - keep;
        double lp = lossf(ctx);
        v[i] = (float)(keep - o->eps);
        double lo_eps = keep - (double)v[i];
        double lm = lossf(ctx);
        v[i] = keep;
        double num = (lp - lm) / (hi_eps + lo_eps);
        /* A kink (ReLU at 0, a max-pool tie) between x-eps and x+eps makes
         * the one-sided slopes disagree; the central difference is then
         * meaningless, so the element is skipped and counted. A smooth
         * function's one-sided slopes differ by ~eps*f'', far below this. */
        double l0 = lossf(ctx);
        double fwd = (lp - l0) / hi_eps, bwd = (l0 - lm) / lo_eps;
        if (fabs(fwd - bwd) > o->atol + o->rtol * fmax(fabs(fwd), fabs(bwd))) {
            r->skipped++;
            continue;
        }
        compare(what, i, analytic[i], num, o, r);
    }
}

static double layer_loss_cb(void *c) { return layer_loss(c); }

int fl_gc_layer(fl_layer_t *l, fl_params_t *layout, size_t n, const fl_gc_opts_t *opts,
                fl_gc_result_t *res)
{
    fl_gc_opts_t o = opts ? *opts : fl_gc_defaults();
    fl_gc_result_t r = {0, 0, 0, 0.0};
    fl_params_t grads;
    fl_params_init(&grads);
    layer_ctx_t c;
    memset(&c, 0, sizeof c);
    float *dx = NULL, *dy = NULL;
    int rc = -1;
    if (layout->nviews && !layout->data && fl_params_alloc(layout))
        goto out;
    if (layout->nviews && fl_params_clone_layout(&grads, layout))
        goto out;
    fl_layer_bind(l, layout, layout->nviews ? &grads : NULL);
    if (l->ops->reserve && l->ops->reserve(l, n))
        goto out;
    l->max_n = n;
    fl_rng_t rng;
    fl_rng_seed(&rng, o.seed);
    if (l->ops->init)
        l->ops->init(l, &rng);
    c.l = l;
    c.n = n;
    c.x = malloc(n * l->in_dim * sizeof(float));
    c.y = malloc(n * l->out_dim * sizeof(float));
    c.r = malloc(n * l->out_dim * sizeof(float));
    dx = malloc(n * l->in_dim * sizeof(float));
    dy = malloc(n * l->out_dim * sizeof(float));
    if (!c.x || !c.y || !c.r || !dx || !dy)
        goto out;
    if (o.gen_input)
        o.gen_input(c.x, n * l->in_dim, o.seed, o.ud);
    else
        for (size_t i = 0; i < n * l->in_dim; i++)
            c.x[i] = (float)(2.0 * fl_rng_uniform(&rng) - 1.0);
    for (size_t i = 0; i < n * l->out_dim; i++)
        c.r[i] = (float)(2.0 * fl_rng_uniform(&rng) - 1.0);
    fl_rng_seed(&c.saved, o.seed ^ 0x5eed);
    l->rng = &c.stream;
    /* Analytic: one forward, then backward with dy = r. */
    layer_loss(&c);
    memcpy(dy, c.r, n * l->out_dim * sizeof(float));
    l->ops->backward(l, c.x, c.y, dy, o.check_input ? dx : NULL, n);
    fl_rng_t sample;
    fl_rng_seed(&sample, o.seed + 77);
    /* dx must be copied: the numeric loop reruns forward, which may reset caches. */
    float *dx_copy = NULL;
    if (o.check_input) {
        dx_copy = malloc(n * l->in_dim * sizeof(float));
        if (!dx_copy)
            goto out;
        memcpy(dx_copy, dx, n * l->in_dim * sizeof(float));
        num_grad_check("input", c.x, n * l->in_dim, dx_copy, layer_loss_cb, &c, &o, &sample, &r);
        free(dx_copy);
    }
    for (int t = 0; t < l->nparams; t++) {
        const fl_param_view_t *v = &layout->views[l->view[t]];
        num_grad_check(v->name, l->p[t], v->numel, l->g[t], layer_loss_cb, &c, &o, &sample, &r);
    }
    fprintf(stderr, "gradcheck %s: %zu elements, %zu failed, %zu kinks skipped, worst %.3f of tolerance\n",
            l->ops->kind, r.checked, r.failed, r.skipped, r.worst);
    rc = (r.failed == 0 && r.checked > 0 && r.skipped * 4 <= r.checked) ? 0 : -1;
out:
    if (res)
        *res = r;
    free(c.x);
    free(c.y);
    free(c.r);
    free(dx);
    free(dy);
    fl_params_free(&grads);
    return rc;
}

/* ---- models ---- */

typedef struct {
    fl_model_t *m;
    const float *x;
    const int32_t *y;
    size_t n;
    uint64_t seed;
} model_ctx_t;

static double model_loss_cb(void *p)
{
    model_ctx_t *c = p;
    double L = NAN;
    fl_model_seed_dropout(c->m, c->seed, NULL, 0);
    if (fl_model_loss(c->m, c->x, c->y, c->n, FL_MODE_TRAIN, 0, &L, NULL))
        return NAN;
    return L;
}

int fl_gc_model(fl_model_t *m, const float *x, const int32_t *y, size_t n,
                const fl_gc_opts_t *opts, fl_gc_result_t *res)
{
    fl_gc_opts_t o = opts ? *opts : fl_gc_defaults();
    fl_gc_result_t r = {0, 0, 0, 0.0};
    model_ctx_t c = {m, x, y, n, o.seed};
    fl_params_t g;
    fl_params_init(&g);
    int rc = -1;
    double L;
    fl_model_seed_dropout(m, o.seed, NULL, 0);
    if (fl_model_loss(m, x, y, n, FL_MODE_TRAIN, 1, &L, NULL))
        goto out;
    if (fl_params_clone_layout(&g, &m->grads))
        goto out;
    memcpy(g.data, m->grads.data, g.numel * sizeof(float));
    fl_rng_t sample;
    fl_rng_seed(&sample, o.seed + 99);
    for (size_t t = 0; t < m->params.nviews; t++) {
        if (o.tensor_stride > 1 && t % o.tensor_stride != 0 && t + 1 != m->params.nviews)
            continue;
        const fl_param_view_t *v = &m->params.views[t];
        num_grad_check(v->name, fl_params_at(&m->params, v), v->numel, g.data + v->offset,
                       model_loss_cb, &c, &o, &sample, &r);
    }
    fprintf(stderr, "gradcheck model %s: loss %.5f, %zu elements, %zu failed, %zu kinks skipped, worst %.3f\n",
            m->info->name, L, r.checked, r.failed, r.skipped, r.worst);
    rc = (r.failed == 0 && r.checked > 0 && r.skipped * 4 <= r.checked) ? 0 : -1;
out:
    if (res)
        *res = r;
    fl_params_free(&g);
    return rc;
}
