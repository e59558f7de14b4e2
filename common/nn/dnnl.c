#include "common/nn/dnnl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

#if FL_HAVE_DNNL

#include <dnnl.h>
#include <omp.h>

#include "common/nn/gemm.h"

/* Batch sizes whose primitives are kept: a training run sees its batch
 * size, the last partial batch, and the evaluation batch. */
#define DNNL_CACHE 4

typedef struct {
    size_t n; /* 0: empty */
    unsigned long used;
    dnnl_primitive_desc_t fwd_pd, bwd_d_pd, bwd_w_pd;
    dnnl_primitive_t fwd, bwd_d, bwd_w;
    dnnl_memory_t src, dst; /* the batch-sized tensors (dst also serves as diff_dst) */
    dnnl_memory_t diff_src;
} entry_t;

struct fl__dnnl_conv {
    int cin, h, w, cout, k, stride, pad, bias;
    int ho, wo;
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_memory_t wmem, bmem, dwmem, dbmem;
    float *dw, *db; /* scratch gradients, added to the caller's afterwards */
    entry_t cache[DNNL_CACHE];
    unsigned long tick;
    char impl[64]; /* copied: the string belongs to a primitive descriptor */
};

int fl__dnnl_available(void) { return 1; }

static void entry_clear(entry_t *e)
{
    dnnl_primitive_destroy(e->fwd);
    dnnl_primitive_destroy(e->bwd_d);
    dnnl_primitive_destroy(e->bwd_w);
    dnnl_primitive_desc_destroy(e->fwd_pd);
    dnnl_primitive_desc_destroy(e->bwd_d_pd);
    dnnl_primitive_desc_destroy(e->bwd_w_pd);
    dnnl_memory_destroy(e->src);
    dnnl_memory_destroy(e->dst);
    dnnl_memory_destroy(e->diff_src);
    memset(e, 0, sizeof *e);
}

void fl__dnnl_conv_free(fl__dnnl_conv_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < DNNL_CACHE; i++)
        entry_clear(&c->cache[i]);
    dnnl_memory_destroy(c->wmem);
    dnnl_memory_destroy(c->bmem);
    dnnl_memory_destroy(c->dwmem);
    dnnl_memory_destroy(c->dbmem);
    if (c->strm)
        dnnl_stream_destroy(c->strm);
    if (c->eng)
        dnnl_engine_destroy(c->eng);
    free(c->dw);
    free(c->db);
    free(c);
}

int fl__dnnl_conv_create(int cin, int h, int w, int cout, int k, int stride, int pad, int bias,
                         fl__dnnl_conv_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (cin < 1 || h < 1 || w < 1 || cout < 1 || k < 1 || stride < 1 || pad < 0 ||
        h + 2 * pad < k || w + 2 * pad < k)
        return FL_EINVAL;
    fl__dnnl_conv_t *c = calloc(1, sizeof *c);
    if (!c)
        return FL_ENOMEM;
    int rc = FL_EUNSUPPORTED;
    *c = (fl__dnnl_conv_t){.cin = cin, .h = h, .w = w, .cout = cout, .k = k, .stride = stride,
                           .pad = pad, .bias = bias != 0};
    c->ho = (h + 2 * pad - k) / stride + 1;
    c->wo = (w + 2 * pad - k) / stride + 1;
    /* The default engine uses every core; the team size is set per call
     * (see dnnl.h), so one engine and stream per layer cost nothing more. */
    if (dnnl_engine_create(&c->eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&c->strm, c->eng, dnnl_stream_default_flags) != dnnl_success)
        goto fail;
    dnnl_memory_desc_t wmd, bmd;
    dnnl_dims_t wd = {cout, cin, k, k}, bd = {cout};
    if (dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_oihw) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x) != dnnl_success ||
        dnnl_memory_create(&c->wmem, &wmd, c->eng, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&c->bmem, &bmd, c->eng, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&c->dwmem, &wmd, c->eng, DNNL_MEMORY_NONE) != dnnl_success ||
        dnnl_memory_create(&c->dbmem, &bmd, c->eng, DNNL_MEMORY_NONE) != dnnl_success)
        goto fail;
    rc = FL_ENOMEM;
    c->dw = malloc((size_t)cout * cin * k * k * sizeof(float));
    c->db = malloc((size_t)cout * sizeof(float));
    if (!c->dw || !c->db)
        goto fail;
    *out = c;
    return 0;
fail:
    fl__dnnl_conv_free(c);
    return rc;
}

/* The primitives for batch size n: from the cache, or made now in the
 * least recently used slot. NULL when oneDNN cannot make them. */
static entry_t *entry_for(fl__dnnl_conv_t *c, size_t n)
{
    entry_t *e = NULL;
    for (int i = 0; i < DNNL_CACHE; i++)
        if (c->cache[i].n == n) {
            e = &c->cache[i];
            e->used = ++c->tick;
            return e;
        }
    e = &c->cache[0];
    for (int i = 1; i < DNNL_CACHE; i++)
        if (c->cache[i].used < e->used)
            e = &c->cache[i];
    entry_clear(e);
    if (n > (size_t)INT32_MAX)
        return NULL;
    dnnl_memory_desc_t smd, dmd, wmd, bmd;
    dnnl_dims_t sd = {(dnnl_dim_t)n, c->cin, c->h, c->w}, dd = {(dnnl_dim_t)n, c->cout, c->ho, c->wo};
    dnnl_dims_t wd = {c->cout, c->cin, c->k, c->k}, bd = {c->cout};
    dnnl_dims_t strides = {c->stride, c->stride}, pads = {c->pad, c->pad};
    dnnl_convolution_desc_t fd, bdd, bwd;
    if (dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, dnnl_nchw) ||
        dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dnnl_nchw) ||
        dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_oihw) ||
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x))
        goto fail;
    if (dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                                           &smd, &wmd, c->bias ? &bmd : NULL, &dmd, strides, pads,
                                           pads) ||
        dnnl_primitive_desc_create(&e->fwd_pd, &fd, NULL, c->eng, NULL) ||
        dnnl_primitive_create(&e->fwd, e->fwd_pd))
        goto fail;
    if (dnnl_convolution_backward_data_desc_init(&bdd, dnnl_convolution_direct, &smd, &wmd, &dmd,
                                                 strides, pads, pads) ||
        dnnl_primitive_desc_create(&e->bwd_d_pd, &bdd, NULL, c->eng, e->fwd_pd) ||
        dnnl_primitive_create(&e->bwd_d, e->bwd_d_pd))
        goto fail;
    if (dnnl_convolution_backward_weights_desc_init(&bwd, dnnl_convolution_direct, &smd, &wmd,
                                                    c->bias ? &bmd : NULL, &dmd, strides, pads,
                                                    pads) ||
        dnnl_primitive_desc_create(&e->bwd_w_pd, &bwd, NULL, c->eng, e->fwd_pd) ||
        dnnl_primitive_create(&e->bwd_w, e->bwd_w_pd))
        goto fail;
    if (dnnl_memory_create(&e->src, &smd, c->eng, DNNL_MEMORY_NONE) ||
        dnnl_memory_create(&e->dst, &dmd, c->eng, DNNL_MEMORY_NONE) ||
        dnnl_memory_create(&e->diff_src, &smd, c->eng, DNNL_MEMORY_NONE))
        goto fail;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(e->fwd_pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl)
        snprintf(c->impl, sizeof c->impl, "%s", impl);
    e->n = n;
    e->used = ++c->tick;
    return e;
fail:
    entry_clear(e);
    return NULL;
}

/* The multiply-adds (x2) of one product over n examples, as im2col's GEMM
 * counts them: what fl__gemm_account records. */
static uint64_t direct_flops(const fl__dnnl_conv_t *c, size_t n)
{
    return 2 * (uint64_t)n * (uint64_t)c->cout * (uint64_t)c->cin * (uint64_t)c->k *
           (uint64_t)c->k * (uint64_t)c->ho * (uint64_t)c->wo;
}

/* oneDNN's OpenMP team for this thread: the engine's thread setting. */
static void set_team(void)
{
    int t = fl_gemm_get_threads();
    omp_set_num_threads(t < 1 ? 1 : t);
}

int fl__dnnl_conv_forward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                          const float *bias, float *y, size_t n)
{
    if (!c || !x || !weight || !y || !n || (c->bias && !bias))
        return FL_EINVAL;
    entry_t *e = entry_for(c, n);
    if (!e)
        return FL_EUNSUPPORTED;
    uint64_t t0 = fl__gemm_clock();
    set_team();
    /* oneDNN takes void *: the inputs are only read. */
    if (dnnl_memory_set_data_handle(e->src, (void *)x) ||
        dnnl_memory_set_data_handle(c->wmem, (void *)weight) ||
        dnnl_memory_set_data_handle(e->dst, y) ||
        (c->bias && dnnl_memory_set_data_handle(c->bmem, (void *)bias)))
        return FL_EUNSUPPORTED;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src},
                               {DNNL_ARG_WEIGHTS, c->wmem},
                               {DNNL_ARG_DST, e->dst},
                               {DNNL_ARG_BIAS, c->bmem}};
    if (dnnl_primitive_execute(e->fwd, c->strm, c->bias ? 4 : 3, args) ||
        dnnl_stream_wait(c->strm))
        return FL_EUNSUPPORTED;
    fl__gemm_account(direct_flops(c, n), t0);
    return 0;
}

int fl__dnnl_conv_backward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                           const float *dy, float *gw, float *gb, float *dx, size_t n)
{
    if (!c || !x || !weight || !dy || !gw || !n || (c->bias && !gb))
        return FL_EINVAL;
    entry_t *e = entry_for(c, n);
    if (!e)
        return FL_EUNSUPPORTED;
    uint64_t t0 = fl__gemm_clock();
    set_team();
    if (dnnl_memory_set_data_handle(e->src, (void *)x) ||
        dnnl_memory_set_data_handle(e->dst, (void *)dy) ||
        dnnl_memory_set_data_handle(c->dwmem, c->dw) ||
        dnnl_memory_set_data_handle(c->dbmem, c->db))
        return FL_EUNSUPPORTED;
    dnnl_exec_arg_t wargs[4] = {{DNNL_ARG_SRC, e->src},
                                {DNNL_ARG_DIFF_DST, e->dst},
                                {DNNL_ARG_DIFF_WEIGHTS, c->dwmem},
                                {DNNL_ARG_DIFF_BIAS, c->dbmem}};
    if (dnnl_primitive_execute(e->bwd_w, c->strm, c->bias ? 4 : 3, wargs) ||
        dnnl_stream_wait(c->strm))
        return FL_EUNSUPPORTED;
    if (dx) {
        if (dnnl_memory_set_data_handle(c->wmem, (void *)weight) ||
            dnnl_memory_set_data_handle(e->diff_src, dx))
            return FL_EUNSUPPORTED;
        dnnl_exec_arg_t dargs[3] = {{DNNL_ARG_DIFF_DST, e->dst},
                                    {DNNL_ARG_WEIGHTS, c->wmem},
                                    {DNNL_ARG_DIFF_SRC, e->diff_src}};
        if (dnnl_primitive_execute(e->bwd_d, c->strm, 3, dargs) || dnnl_stream_wait(c->strm))
            return FL_EUNSUPPORTED;
    }
    const size_t nw = (size_t)c->cout * c->cin * c->k * c->k;
    for (size_t i = 0; i < nw; i++)
        gw[i] += c->dw[i];
    for (int o = 0; c->bias && o < c->cout; o++)
        gb[o] += c->db[o];
    fl__gemm_account(direct_flops(c, n) * (dx ? 2 : 1), t0);
    return 0;
}

const char *fl__dnnl_conv_impl(const fl__dnnl_conv_t *c)
{
    return c && c->impl[0] ? c->impl : "none";
}

#else /* !FL_HAVE_DNNL */

int fl__dnnl_available(void) { return 0; }

int fl__dnnl_conv_create(int cin, int h, int w, int cout, int k, int stride, int pad, int bias,
                         fl__dnnl_conv_t **out)
{
    if (out)
        *out = NULL;
    return FL_EUNSUPPORTED;
}

int fl__dnnl_conv_forward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                          const float *bias, float *y, size_t n)
{
    return FL_EUNSUPPORTED;
}

int fl__dnnl_conv_backward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                           const float *dy, float *gw, float *gb, float *dx, size_t n)
{
    return FL_EUNSUPPORTED;
}

const char *fl__dnnl_conv_impl(const fl__dnnl_conv_t *c) { return "none"; }

void fl__dnnl_conv_free(fl__dnnl_conv_t *c) { (void)c; }

#endif
