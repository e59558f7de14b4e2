#include "common/nn/layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

size_t fl_shape_numel(const fl_shape_t *s)
{
    if (!s || s->ndim < 1 || s->ndim > FL_SHAPE_MAX_DIMS)
        return 0;
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++) {
        if (s->d[i] <= 0 || (uint64_t)s->d[i] > (SIZE_MAX / sizeof(float)) / n)
            return 0;
        n *= (size_t)s->d[i];
    }
    return n;
}

fl_shape_t fl_shape_make(int ndim, const int64_t *d)
{
    fl_shape_t s;
    memset(&s, 0, sizeof s);
    if (ndim < 0 || ndim > FL_SHAPE_MAX_DIMS)
        return s;
    s.ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s.d[i] = d[i];
    return s;
}

char *fl_shape_str(const fl_shape_t *s, char *buf, size_t len)
{
    size_t used = 0;
    if (!buf || len == 0)
        return buf;
    buf[0] = 0;
    used += (size_t)snprintf(buf, len, "[");
    for (int i = 0; s && i < s->ndim && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%lld", i ? ", " : "",
                                 (long long)s->d[i]);
    if (used < len)
        snprintf(buf + used, len - used, "]");
    return buf;
}

int fl_layer_setup(fl_layer_t *l, const fl_layer_ops_t *ops, const char *prefix,
                   const fl_shape_t *in, const fl_shape_t *out)
{
    memset(l, 0, sizeof *l);
    l->ops = ops;
    if (prefix) {
        if (strlen(prefix) >= sizeof l->prefix)
            return FL_EINVAL;
        strcpy(l->prefix, prefix);
    }
    l->in = *in;
    l->out = *out;
    l->in_dim = fl_shape_numel(in);
    l->out_dim = fl_shape_numel(out);
    if (!l->in_dim || !l->out_dim || l->in_dim > INT32_MAX || l->out_dim > INT32_MAX)
        return FL_EINVAL;
    return 0;
}

int fl_layer_add_param(fl_layer_t *l, fl_params_t *layout, const char *suffix, int ndim,
                       const int64_t *shape, unsigned flags)
{
    if (l->nparams >= FL_LAYER_MAX_PARAMS)
        return FL_ERANGE;
    char name[FL_PARAM_NAME_MAX];
    int len = l->prefix[0] ? snprintf(name, sizeof name, "%s.%s", l->prefix, suffix)
                           : snprintf(name, sizeof name, "%s", suffix);
    if (len < 0 || (size_t)len >= sizeof name)
        return FL_EINVAL;
    int rc = fl_params_add(layout, name, ndim, shape, flags);
    if (rc)
        return rc;
    l->view[l->nparams++] = layout->nviews - 1;
    return 0;
}

void fl_layer_bind(fl_layer_t *l, const fl_params_t *params, const fl_params_t *grads)
{
    for (int i = 0; i < l->nparams; i++) {
        const fl_param_view_t *v = &params->views[l->view[i]];
        l->p[i] = params->data + v->offset;
        l->g[i] = grads ? grads->data + v->offset : NULL;
    }
    if (l->ops && l->ops->bind)
        l->ops->bind(l, params, grads);
}

void fl_layer_free(fl_layer_t *l)
{
    if (!l)
        return;
    if (l->ops && l->ops->destroy)
        l->ops->destroy(l);
    free(l);
}

void fl_init_uniform(float *x, size_t n, float bound, fl_rng_t *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((2.0 * fl_rng_uniform(rng) - 1.0) * bound);
}
