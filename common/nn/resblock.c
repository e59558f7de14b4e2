#include "common/nn/resblock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/nn/conv2d.h"
#include "common/nn/groupnorm.h"

enum { GN1, CONV1, GN2, CONV2, SC_CONV, SC_GN, NSUB };

typedef struct {
    fl_layer_t *sub[NSUB]; /* NULL where absent (gn1 without preact, shortcut when cin == cout) */
    size_t cap_n;
    /* Activations of the last forward, n examples each. */
    float *a;  /* [n, cin*HW] relu(gn1(x)) (unused without preact: a = x) */
    float *b;  /* [n, cout*HW] conv1(a) */
    float *c;  /* [n, cout*HW] relu(gn2(b)) */
    float *u;  /* [n, cout*HW] shortcut.conv(x) */
    float *s;  /* [n, cout*HW] shortcut.gn(u) */
    /* Backward scratch. */
    float *d1, *d2; /* [n, cout*HW] */
    float *din;     /* [n, cin*HW] */
} resblock_t;

static void rb_free_scratch(resblock_t *r)
{
    free(r->a);
    free(r->b);
    free(r->c);
    free(r->u);
    free(r->s);
    free(r->d1);
    free(r->d2);
    free(r->din);
    r->a = r->b = r->c = r->u = r->s = r->d1 = r->d2 = r->din = NULL;
    r->cap_n = 0;
}

static int rb_reserve(fl_layer_t *l, size_t max_n)
{
    resblock_t *r = l->priv;
    for (int i = 0; i < NSUB; i++) {
        fl_layer_t *s = r->sub[i];
        if (s && s->ops->reserve && s->ops->reserve(s, max_n))
            return FL_ENOMEM;
        if (s)
            s->max_n = max_n;
    }
    if (max_n <= r->cap_n)
        return 0;
    rb_free_scratch(r);
    const size_t in = max_n * l->in_dim * sizeof(float), out = max_n * l->out_dim * sizeof(float);
    r->a = malloc(in);
    r->din = malloc(in);
    r->b = malloc(out);
    r->c = malloc(out);
    r->d1 = malloc(out);
    r->d2 = malloc(out);
    if (r->sub[SC_CONV]) {
        r->u = malloc(out);
        r->s = malloc(out);
    }
    if (!r->a || !r->din || !r->b || !r->c || !r->d1 || !r->d2 ||
        (r->sub[SC_CONV] && (!r->u || !r->s))) {
        rb_free_scratch(r);
        return FL_ENOMEM;
    }
    r->cap_n = max_n;
    return 0;
}

static void rb_init(fl_layer_t *l, fl_rng_t *rng)
{
    resblock_t *r = l->priv;
    for (int i = 0; i < NSUB; i++)
        if (r->sub[i] && r->sub[i]->ops->init)
            r->sub[i]->ops->init(r->sub[i], rng);
}

static void rb_bind(fl_layer_t *l, const fl_params_t *params, const fl_params_t *grads)
{
    resblock_t *r = l->priv;
    for (int i = 0; i < NSUB; i++)
        if (r->sub[i])
            fl_layer_bind(r->sub[i], params, grads);
}

static void relu_inplace(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dy *= (y > 0): the ReLU's backward, in place on the gradient. */
static void relu_mask(float *dy, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

#define FWD(i, x, y) r->sub[i]->ops->forward(r->sub[i], (x), (y), n, mode)
#define BWD(i, x, y, dy, dx) r->sub[i]->ops->backward(r->sub[i], (x), (y), (dy), (dx), n)

static void rb_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    resblock_t *r = l->priv;
    const size_t ni = n * l->in_dim, no = n * l->out_dim;
    const float *a = x;
    if (r->sub[GN1]) {
        FWD(GN1, x, r->a);
        relu_inplace(r->a, ni);
        a = r->a;
    }
    FWD(CONV1, a, r->b);
    FWD(GN2, r->b, r->c);
    relu_inplace(r->c, no);
    FWD(CONV2, r->c, y);
    if (r->sub[SC_CONV]) {
        FWD(SC_CONV, x, r->u);
        FWD(SC_GN, r->u, r->s);
        for (size_t i = 0; i < no; i++)
            y[i] += r->s[i];
    } else {
        for (size_t i = 0; i < no; i++)
            y[i] += x[i];
    }
}

static void rb_backward(fl_layer_t *l, const float *x, const float *y, const float *dy, float *dx,
                        size_t n)
{
    resblock_t *r = l->priv;
    const size_t ni = n * l->in_dim, no = n * l->out_dim;
    const float *a = r->sub[GN1] ? r->a : x;
    /* Residual branch: conv2 (its output, y minus the shortcut, is never read
     * by a convolution's backward, so y stands in for it). */
    BWD(CONV2, r->c, y, dy, r->d1);
    relu_mask(r->d1, r->c, no);
    BWD(GN2, r->b, r->c, r->d1, r->d2);
    if (r->sub[GN1]) {
        BWD(CONV1, a, r->b, r->d2, r->din);
        relu_mask(r->din, r->a, ni);
        BWD(GN1, x, r->a, r->din, dx);
    } else {
        BWD(CONV1, a, r->b, r->d2, dx);
    }
    /* Shortcut branch, added into dx. */
    if (r->sub[SC_CONV]) {
        BWD(SC_GN, r->u, r->s, dy, r->d1);
        BWD(SC_CONV, x, r->u, r->d1, dx ? r->din : NULL);
        if (dx)
            for (size_t i = 0; i < ni; i++)
                dx[i] += r->din[i];
    } else if (dx) {
        for (size_t i = 0; i < ni; i++)
            dx[i] += dy[i];
    }
}

static void rb_destroy(fl_layer_t *l)
{
    resblock_t *r = l->priv;
    if (!r)
        return;
    for (int i = 0; i < NSUB; i++)
        fl_layer_free(r->sub[i]);
    rb_free_scratch(r);
    free(r);
}

static const fl_layer_ops_t rb_ops = {
    .kind = "resblock",
    .reserve = rb_reserve,
    .init = rb_init,
    .forward = rb_forward,
    .backward = rb_backward,
    .destroy = rb_destroy,
    .bind = rb_bind,
};

/* Creates sub-layer `i` with `make`, after recording where its tensors start. */
static int adopt(fl_layer_t *l, resblock_t *r, int i, int rc)
{
    if (rc)
        return rc;
    fl_layer_t *s = r->sub[i];
    for (int k = 0; k < s->nparams; k++) {
        if (l->nparams >= FL_LAYER_MAX_PARAMS)
            return FL_ERANGE;
        l->view[l->nparams++] = s->view[k];
    }
    return 0;
}

int fl_resblock_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                       int64_t cout, int preact, int groups, float eps, fl_layer_t **out)
{
    *out = NULL;
    if (!layout || !prefix || !in || in->ndim != 3 || cout < 1 || cout > INT32_MAX)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    resblock_t *r = calloc(1, sizeof *r);
    int rc = FL_ENOMEM;
    if (!l || !r)
        goto fail;
    fl_shape_t os = {.ndim = 3, .d = {cout, in->d[1], in->d[2]}};
    if ((rc = fl_layer_setup(l, &rb_ops, prefix, in, &os)))
        goto fail;
    l->priv = r;
    char name[FL_PARAM_NAME_MAX];
#define NAME(suffix)                                                                          \
    (snprintf(name, sizeof name, "%s.%s", prefix, suffix) < (int)sizeof name ? name : NULL)
    if (preact &&
        (rc = adopt(l, r, GN1, fl_groupnorm_create(layout, NAME("gn1"), in, groups, eps,
                                                   &r->sub[GN1]))))
        goto fail;
    if ((rc = adopt(l, r, CONV1, fl_conv2d_create(layout, NAME("conv1"), in, cout, 3, 1, 1, 0,
                                                  &r->sub[CONV1]))))
        goto fail;
    if ((rc = adopt(l, r, GN2, fl_groupnorm_create(layout, NAME("gn2"), &r->sub[CONV1]->out,
                                                   groups, eps, &r->sub[GN2]))))
        goto fail;
    if ((rc = adopt(l, r, CONV2, fl_conv2d_create(layout, NAME("conv2"), &r->sub[GN2]->out, cout,
                                                  3, 1, 1, 0, &r->sub[CONV2]))))
        goto fail;
    if (in->d[0] != cout) {
        if ((rc = adopt(l, r, SC_CONV, fl_conv2d_create(layout, NAME("shortcut.conv"), in, cout,
                                                        1, 1, 0, 0, &r->sub[SC_CONV]))))
            goto fail;
        if ((rc = adopt(l, r, SC_GN,
                        fl_groupnorm_create(layout, NAME("shortcut.gn"), &r->sub[SC_CONV]->out,
                                            groups, eps, &r->sub[SC_GN]))))
            goto fail;
    }
#undef NAME
    *out = l;
    return 0;
fail:
    if (l && !l->priv)
        free(r);
    fl_layer_free(l);
    return rc;
}
