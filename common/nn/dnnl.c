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

/* One tensor argument of a primitive: `user` wraps the caller's buffer in
 * PyTorch's plain layout; when the primitive chose another layout (oneDNN's
 * fast kernels want blocked ones, e.g. 16 channels innermost), `inner` is a
 * buffer of that layout and `reorder` converts between the two (user to
 * inner for an input, inner to user for an output). Otherwise inner is
 * user and there is no reorder. */
typedef struct {
    dnnl_memory_t user, inner;
    dnnl_primitive_t reorder;
} tensor_t;

enum { T_XF, T_WF, T_YF, T_XW, T_DYW, T_DWW, T_DYD, T_WD, T_DXD, T_COUNT };

typedef struct {
    size_t n; /* 0: empty */
    int team; /* the OpenMP team size it was made for */
    unsigned long used;
    dnnl_primitive_desc_t fwd_pd, bwd_d_pd, bwd_w_pd;
    dnnl_primitive_t fwd, bwd_d, bwd_w;
    /* Each primitive's scratchpad: a view of the layer's one buffer (see
     * scratch_grow). */
    dnnl_memory_t sfwd, sbwd_d, sbwd_w;
    tensor_t t[T_COUNT];
    /* Where the backward pass may take a tensor the forward pass (or its
     * own other product) already converted: the two primitives chose the
     * same layout for it (see fl__dnnl_conv_backward). */
    int share_x, share_w, share_dy;
    /* The x and weight the last training forward converted (NULL: none,
     * or an evaluation forward came after it). */
    const float *kept_x, *kept_w;
} entry_t;

struct fl__dnnl_conv {
    int cin, h, w, cout, k, stride, pad, bias;
    int ldc; /* channels of the caller's y and dy: cout, or more for a slice */
    int wino; /* try Winograd first (use_winograd), direct where oneDNN refuses it */
    int ho, wo;
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dnnl_memory_t bmem, dbmem; /* bias and its gradient: always plain [cout] */
    float *dw, *db; /* scratch gradients, added to the caller's afterwards */
    /* The primitives' scratchpads, in oneDNN's user mode: the layer owns
     * the buffer, so its lifetime is the layer's. In the default library
     * mode oneDNN keeps per-thread scratchpads of its own that outlive the
     * primitives (LeakSanitizer reported them after test_nn once Winograd,
     * whose kernels need large ones, came in). The primitives of one layer
     * run one after another on its stream, so one buffer, as large as the
     * largest of them, serves all. */
    void *scratch;
    size_t scratch_size;
    entry_t cache[DNNL_CACHE];
    unsigned long tick;
    char impl[64]; /* copied: the string belongs to a primitive descriptor */
};

int fl__dnnl_available(void) { return 1; }

static int wino_mode; /* fl__dnnl_set_winograd */

void fl__dnnl_set_winograd(int mode) { wino_mode = mode; }

/* Winograd F(4x4, 3x3) (oneDNN's jit_wino_4x3 kernels, forward and both
 * backward products) does a quarter of the direct multiplies on 3x3
 * stride-1 layers. With 16 or more channels each side, on cnn's conv2 and
 * resnet18gn's 3x3 layers, the whole training step ran faster per
 * CPU-second than on the direct kernels (bench_train with
 * FEDOPT_BENCH_CONV=dnnl-direct against the default; docs/benchmarks.md);
 * with one input channel (cnn's conv1) it ran slower, the input padded to
 * 16 channels. Its results differ from the direct ones by float rounding
 * (test_conv2d_dnnl_matches, test_grad_conv2d). */
/* Below this batch size the direct kernel: Winograd transforms the weights
 * on every call, which a batch of a few examples does not pay back (the
 * resnet gradient check, batch 2, took twice the CPU time on Winograd;
 * test_nn_resnet). Forcing (fl__dnnl_set_winograd(2)) ignores it. */
#define WINO_MIN_BATCH 8

static int use_winograd(int cin, int cout, int k, int stride)
{
    if (wino_mode == 1 || k != 3 || stride != 1)
        return 0;
    return wino_mode == 2 || (cin >= 16 && cout >= 16);
}

static void tensor_clear(tensor_t *t)
{
    if (t->inner && t->inner != t->user)
        dnnl_memory_destroy(t->inner);
    if (t->user)
        dnnl_memory_destroy(t->user);
    if (t->reorder)
        dnnl_primitive_destroy(t->reorder);
    memset(t, 0, sizeof *t);
}

/* Sets t up for a primitive argument of layout `want` whose caller-side
 * layout is `plain`; `out`: the primitive writes it. Returns 0 or -1. */
static int tensor_setup(tensor_t *t, dnnl_engine_t eng, const dnnl_memory_desc_t *plain,
                        const dnnl_memory_desc_t *want, int out)
{
    if (dnnl_memory_create(&t->user, plain, eng, DNNL_MEMORY_NONE))
        return -1;
    if (dnnl_memory_desc_equal(plain, want)) {
        t->inner = t->user;
        return 0;
    }
    dnnl_primitive_desc_t rpd = NULL;
    int bad = dnnl_memory_create(&t->inner, want, eng, DNNL_MEMORY_ALLOCATE) ||
              dnnl_reorder_primitive_desc_create(&rpd, out ? want : plain, eng,
                                                 out ? plain : want, eng, NULL) ||
              dnnl_primitive_create(&t->reorder, rpd);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    return bad ? -1 : 0;
}

/* Points t at the caller's buffer p and, for an input, converts it into
 * the primitive's layout. Returns 0 or -1. */
static int tensor_in(tensor_t *t, dnnl_stream_t s, const void *p)
{
    if (dnnl_memory_set_data_handle(t->user, (void *)p)) /* only read */
        return -1;
    if (!t->reorder)
        return 0;
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, t->user}, {DNNL_ARG_TO, t->inner}};
    return dnnl_primitive_execute(t->reorder, s, 2, a) ? -1 : 0;
}

/* After the primitive: converts an output into the caller's buffer p. */
static int tensor_out(tensor_t *t, dnnl_stream_t s, void *p)
{
    if (dnnl_memory_set_data_handle(t->user, p))
        return -1;
    if (!t->reorder)
        return 0;
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, t->inner}, {DNNL_ARG_TO, t->user}};
    return dnnl_primitive_execute(t->reorder, s, 2, a) ? -1 : 0;
}

static void entry_clear(entry_t *e)
{
    dnnl_primitive_destroy(e->fwd);
    dnnl_primitive_destroy(e->bwd_d);
    dnnl_primitive_destroy(e->bwd_w);
    dnnl_memory_destroy(e->sfwd);
    dnnl_memory_destroy(e->sbwd_d);
    dnnl_memory_destroy(e->sbwd_w);
    dnnl_primitive_desc_destroy(e->fwd_pd);
    dnnl_primitive_desc_destroy(e->bwd_d_pd);
    dnnl_primitive_desc_destroy(e->bwd_w_pd);
    for (int i = 0; i < T_COUNT; i++)
        tensor_clear(&e->t[i]);
    memset(e, 0, sizeof *e);
}

void fl__dnnl_conv_free(fl__dnnl_conv_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < DNNL_CACHE; i++)
        entry_clear(&c->cache[i]);
    dnnl_memory_destroy(c->bmem);
    dnnl_memory_destroy(c->dbmem);
    if (c->strm)
        dnnl_stream_destroy(c->strm);
    if (c->eng)
        dnnl_engine_destroy(c->eng);
    free(c->dw);
    free(c->db);
    free(c->scratch);
    free(c);
}

int fl__dnnl_conv_create(int cin, int h, int w, int cout, int k, int stride, int pad, int bias,
                         fl__dnnl_conv_t **out)
{
    return fl__dnnl_conv_create_slice(cin, h, w, cout, cout, k, stride, pad, bias, out);
}

int fl__dnnl_conv_create_slice(int cin, int h, int w, int cout, int ldc, int k, int stride,
                               int pad, int bias, fl__dnnl_conv_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (cin < 1 || h < 1 || w < 1 || cout < 1 || ldc < cout || k < 1 || stride < 1 || pad < 0 ||
        h + 2 * pad < k || w + 2 * pad < k)
        return FL_EINVAL;
    fl__dnnl_conv_t *c = calloc(1, sizeof *c);
    if (!c)
        return FL_ENOMEM;
    int rc = FL_EUNSUPPORTED;
    *c = (fl__dnnl_conv_t){.cin = cin, .h = h, .w = w, .cout = cout, .ldc = ldc, .k = k,
                           .stride = stride, .pad = pad, .bias = bias != 0};
    c->wino = use_winograd(cin, cout, k, stride);
    c->ho = (h + 2 * pad - k) / stride + 1;
    c->wo = (w + 2 * pad - k) / stride + 1;
    /* The default engine uses every core; the team size is set per call
     * (see dnnl.h), so one engine and stream per layer cost nothing more. */
    if (dnnl_engine_create(&c->eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&c->strm, c->eng, dnnl_stream_default_flags) != dnnl_success)
        goto fail;
    dnnl_memory_desc_t bmd;
    dnnl_dims_t bd = {cout};
    if (dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x) != dnnl_success ||
        dnnl_memory_create(&c->bmem, &bmd, c->eng, DNNL_MEMORY_NONE) != dnnl_success ||
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

/* The multiply-adds (x2) of one product over n examples, as im2col's GEMM
 * counts them: what fl__gemm_account records. */
static uint64_t direct_flops(const fl__dnnl_conv_t *c, size_t n)
{
    return 2 * (uint64_t)n * (uint64_t)c->cout * (uint64_t)c->cin * (uint64_t)c->k *
           (uint64_t)c->k * (uint64_t)c->ho * (uint64_t)c->wo;
}

/* oneDNN's OpenMP team for this thread: the engine's thread setting. */
static int set_team(void)
{
    int t = fl_gemm_get_threads();
    t = t < 1 ? 1 : t;
    omp_set_num_threads(t);
    return t;
}

static const dnnl_memory_desc_t *md_of(const_dnnl_primitive_desc_t pd, dnnl_query_t what)
{
    return dnnl_primitive_desc_query_md(pd, what, 0);
}

static entry_t *entry_make(fl__dnnl_conv_t *c, entry_t *e, size_t n, dnnl_alg_kind_t alg);

/* Makes *m a memory object of pd's scratchpad, without a buffer (set to the
 * layer's before each execution, scratch_set), and grows the layer's buffer
 * to hold it. Returns 0 or -1. */
static int scratch_view(fl__dnnl_conv_t *c, const_dnnl_primitive_desc_t pd, dnnl_memory_t *m)
{
    const dnnl_memory_desc_t *md = md_of(pd, dnnl_query_scratchpad_md);
    if (!md || dnnl_memory_create(m, md, c->eng, DNNL_MEMORY_NONE))
        return -1;
    size_t need = dnnl_memory_desc_get_size(md);
    if (need <= c->scratch_size)
        return 0;
    /* oneDNN's kernels want their buffers aligned to a cache line or more. */
    need = (need + 4095) & ~(size_t)4095;
    void *p = aligned_alloc(4096, need);
    if (!p)
        return -1;
    free(c->scratch);
    c->scratch = p;
    c->scratch_size = need;
    return 0;
}

/* Points a scratchpad view at the layer's buffer (which may have moved
 * since the view was made). Returns 0 or -1. */
static int scratch_set(fl__dnnl_conv_t *c, dnnl_memory_t m)
{
    return dnnl_memory_set_data_handle(m, c->scratch) ? -1 : 0;
}

/* The primitives for batch size n: from the cache, or made now in the
 * least recently used slot. Each primitive picks its own layouts (format
 * "any"), the way oneDNN reaches its fastest kernels; the reorders to and
 * from PyTorch's layouts run inside each call. NULL when oneDNN cannot make
 * them. */
static entry_t *entry_for(fl__dnnl_conv_t *c, size_t n)
{
    entry_t *e = NULL;
    /* oneDNN splits a primitive's work for the team size current when it
     * is made, so the team is part of the key (see set_team). */
    const int team = set_team();
    for (int i = 0; i < DNNL_CACHE; i++)
        if (c->cache[i].n == n && c->cache[i].team == team) {
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
    int wino = c->wino && (wino_mode == 2 || n >= WINO_MIN_BATCH);
    entry_t *made = wino ? entry_make(c, e, n, dnnl_convolution_winograd) : NULL;
    if (!made)
        made = entry_make(c, e, n, dnnl_convolution_direct);
    if (made)
        made->team = team;
    return made;
}

/* Makes slot e's primitives for batch size n with algorithm alg (e is
 * clear). Returns e, or NULL with e clear again. */
static entry_t *entry_make(fl__dnnl_conv_t *c, entry_t *e, size_t n, dnnl_alg_kind_t alg)
{
    dnnl_memory_desc_t smd, dmd, wmd, bmd, sany, dany, wany;
    dnnl_dims_t sd = {(dnnl_dim_t)n, c->cin, c->h, c->w}, dd = {(dnnl_dim_t)n, c->cout, c->ho, c->wo};
    dnnl_dims_t wd = {c->cout, c->cin, c->k, c->k}, bd = {c->cout};
    dnnl_dims_t strides = {c->stride, c->stride}, pads = {c->pad, c->pad};
    /* y and dy as the caller holds them: NCHW with ldc channels per example
     * (a slice's channels are a window of a wider tensor). */
    dnnl_dims_t ystr = {(dnnl_dim_t)c->ldc * c->ho * c->wo, (dnnl_dim_t)c->ho * c->wo, c->wo, 1};
    dnnl_convolution_desc_t fd, bdd, bwd;
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) ||
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user))
        goto fail;
    if (dnnl_memory_desc_init_by_tag(&smd, 4, sd, dnnl_f32, dnnl_nchw) ||
        dnnl_memory_desc_init_by_strides(&dmd, 4, dd, dnnl_f32, ystr) ||
        dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_oihw) ||
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_x) ||
        dnnl_memory_desc_init_by_tag(&sany, 4, sd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&dany, 4, dd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&wany, 4, wd, dnnl_f32, dnnl_format_tag_any))
        goto fail;
    if (dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, alg,
                                           &sany, &wany, c->bias ? &bmd : NULL, &dany, strides,
                                           pads, pads) ||
        dnnl_primitive_desc_create(&e->fwd_pd, &fd, attr, c->eng, NULL) ||
        dnnl_primitive_create(&e->fwd, e->fwd_pd))
        goto fail;
    if (dnnl_convolution_backward_data_desc_init(&bdd, alg, &sany, &wany,
                                                 &dany, strides, pads, pads) ||
        dnnl_primitive_desc_create(&e->bwd_d_pd, &bdd, attr, c->eng, e->fwd_pd) ||
        dnnl_primitive_create(&e->bwd_d, e->bwd_d_pd))
        goto fail;
    if (dnnl_convolution_backward_weights_desc_init(&bwd, alg, &sany, &wany,
                                                    c->bias ? &bmd : NULL, &dany, strides, pads,
                                                    pads) ||
        dnnl_primitive_desc_create(&e->bwd_w_pd, &bwd, attr, c->eng, e->fwd_pd) ||
        dnnl_primitive_create(&e->bwd_w, e->bwd_w_pd))
        goto fail;
    if (tensor_setup(&e->t[T_XF], c->eng, &smd, md_of(e->fwd_pd, dnnl_query_src_md), 0) ||
        tensor_setup(&e->t[T_WF], c->eng, &wmd, md_of(e->fwd_pd, dnnl_query_weights_md), 0) ||
        tensor_setup(&e->t[T_YF], c->eng, &dmd, md_of(e->fwd_pd, dnnl_query_dst_md), 1) ||
        tensor_setup(&e->t[T_XW], c->eng, &smd, md_of(e->bwd_w_pd, dnnl_query_src_md), 0) ||
        tensor_setup(&e->t[T_DYW], c->eng, &dmd, md_of(e->bwd_w_pd, dnnl_query_diff_dst_md), 0) ||
        tensor_setup(&e->t[T_DWW], c->eng, &wmd, md_of(e->bwd_w_pd, dnnl_query_diff_weights_md),
                     1) ||
        tensor_setup(&e->t[T_DYD], c->eng, &dmd, md_of(e->bwd_d_pd, dnnl_query_diff_dst_md), 0) ||
        tensor_setup(&e->t[T_WD], c->eng, &wmd, md_of(e->bwd_d_pd, dnnl_query_weights_md), 0) ||
        tensor_setup(&e->t[T_DXD], c->eng, &smd, md_of(e->bwd_d_pd, dnnl_query_diff_src_md), 1))
        goto fail;
    if (scratch_view(c, e->fwd_pd, &e->sfwd) || scratch_view(c, e->bwd_d_pd, &e->sbwd_d) ||
        scratch_view(c, e->bwd_w_pd, &e->sbwd_w))
        goto fail;
    e->share_x = dnnl_memory_desc_equal(md_of(e->fwd_pd, dnnl_query_src_md),
                                        md_of(e->bwd_w_pd, dnnl_query_src_md));
    e->share_w = dnnl_memory_desc_equal(md_of(e->fwd_pd, dnnl_query_weights_md),
                                        md_of(e->bwd_d_pd, dnnl_query_weights_md));
    e->share_dy = dnnl_memory_desc_equal(md_of(e->bwd_w_pd, dnnl_query_diff_dst_md),
                                         md_of(e->bwd_d_pd, dnnl_query_diff_dst_md));
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(e->fwd_pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl)
        snprintf(c->impl, sizeof c->impl, "%s", impl);
    e->n = n;
    e->used = ++c->tick;
    dnnl_primitive_attr_destroy(attr);
    return e;
fail:
    dnnl_primitive_attr_destroy(attr);
    entry_clear(e);
    return NULL;
}

int fl__dnnl_conv_forward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                          const float *bias, float *y, size_t n, int train)
{
    if (!c || !x || !weight || !y || !n || (c->bias && !bias))
        return FL_EINVAL;
    /* Any forward pass ends what an earlier training forward kept, in every
     * entry: an evaluation pass may have reused x's buffer. */
    for (int i = 0; i < DNNL_CACHE; i++)
        c->cache[i].kept_x = c->cache[i].kept_w = NULL;
    entry_t *e = entry_for(c, n);
    if (!e)
        return FL_EUNSUPPORTED;
    uint64_t t0 = fl__gemm_clock(), c0 = fl__gemm_conv_clock();
    tensor_t *t = e->t;
    if (tensor_in(&t[T_XF], c->strm, x) || tensor_in(&t[T_WF], c->strm, weight) ||
        (c->bias && dnnl_memory_set_data_handle(c->bmem, (void *)bias)))
        return FL_EUNSUPPORTED;
    if (!t[T_YF].reorder && dnnl_memory_set_data_handle(t[T_YF].user, y))
        return FL_EUNSUPPORTED;
    if (scratch_set(c, e->sfwd))
        return FL_EUNSUPPORTED;
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, t[T_XF].inner},
                               {DNNL_ARG_WEIGHTS, t[T_WF].inner},
                               {DNNL_ARG_DST, t[T_YF].inner},
                               {DNNL_ARG_SCRATCHPAD, e->sfwd},
                               {DNNL_ARG_BIAS, c->bmem}};
    if (dnnl_primitive_execute(e->fwd, c->strm, c->bias ? 5 : 4, args) ||
        tensor_out(&t[T_YF], c->strm, y) || dnnl_stream_wait(c->strm))
        return FL_EUNSUPPORTED;
    if (train) {
        e->kept_x = x;
        e->kept_w = weight;
    }
    fl__gemm_account(direct_flops(c, n), t0);
    fl__gemm_conv_account(direct_flops(c, n), c0);
    return 0;
}

void fl__dnnl_conv_forget(fl__dnnl_conv_t *c)
{
    for (int i = 0; c && i < DNNL_CACHE; i++)
        c->cache[i].kept_x = c->cache[i].kept_w = NULL;
}

int fl__dnnl_conv_backward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                           const float *dy, float *gw, float *gb, float *dx, size_t n)
{
    if (!gw || (c && c->bias && !gb))
        return FL_EINVAL;
    int rc = fl__dnnl_conv_backward_run(c, x, weight, dy, dx, n);
    if (rc == 0)
        fl__dnnl_conv_backward_add(c, gw, gb);
    return rc;
}

void fl__dnnl_conv_backward_add(const fl__dnnl_conv_t *c, float *gw, float *gb)
{
    if (!c || !gw)
        return;
    const size_t nw = (size_t)c->cout * c->cin * c->k * c->k;
    for (size_t i = 0; i < nw; i++)
        gw[i] += c->dw[i];
    for (int o = 0; c->bias && gb && o < c->cout; o++)
        gb[o] += c->db[o];
}

int fl__dnnl_conv_backward_run(fl__dnnl_conv_t *c, const float *x, const float *weight,
                               const float *dy, float *dx, size_t n)
{
    if (!c || !x || !weight || !dy || !n)
        return FL_EINVAL;
    entry_t *e = entry_for(c, n);
    if (!e)
        return FL_EUNSUPPORTED;
    uint64_t t0 = fl__gemm_clock(), c0 = fl__gemm_conv_clock();
    tensor_t *t = e->t;
    /* Each conversion into a blocked layout is a pass over the tensor, and
     * for cnn's conv2 those passes were a large share of the layer's time
     * (ONEDNN_VERBOSE=1 on bench_train's cnn row lists each reorder's
     * time). So x and the weights are taken as the training forward left
     * them, when this is the x and weight it saw (the layer contract:
     * backward sees the x of the last forward, and the weights do not
     * change in between) and the layouts agree; dy is converted once for
     * both products when they want the same layout. */
    dnnl_memory_t xin = t[T_XW].inner, dyd = t[T_DYD].inner, wd = t[T_WD].inner;
    if (e->share_x && e->kept_x == x)
        xin = t[T_XF].inner;
    else if (tensor_in(&t[T_XW], c->strm, x))
        return FL_EUNSUPPORTED;
    if (tensor_in(&t[T_DYW], c->strm, dy) || dnnl_memory_set_data_handle(c->dbmem, c->db))
        return FL_EUNSUPPORTED;
    if (!t[T_DWW].reorder && dnnl_memory_set_data_handle(t[T_DWW].user, c->dw))
        return FL_EUNSUPPORTED;
    if (scratch_set(c, e->sbwd_w) || scratch_set(c, e->sbwd_d))
        return FL_EUNSUPPORTED;
    dnnl_exec_arg_t wargs[5] = {{DNNL_ARG_SRC, xin},
                                {DNNL_ARG_DIFF_DST, t[T_DYW].inner},
                                {DNNL_ARG_DIFF_WEIGHTS, t[T_DWW].inner},
                                {DNNL_ARG_SCRATCHPAD, e->sbwd_w},
                                {DNNL_ARG_DIFF_BIAS, c->dbmem}};
    if (dnnl_primitive_execute(e->bwd_w, c->strm, c->bias ? 5 : 4, wargs) ||
        tensor_out(&t[T_DWW], c->strm, c->dw))
        return FL_EUNSUPPORTED;
    if (dx) {
        if (e->share_dy)
            dyd = t[T_DYW].inner;
        else if (tensor_in(&t[T_DYD], c->strm, dy))
            return FL_EUNSUPPORTED;
        if (e->share_w && e->kept_w == weight)
            wd = t[T_WF].inner;
        else if (tensor_in(&t[T_WD], c->strm, weight))
            return FL_EUNSUPPORTED;
        if (!t[T_DXD].reorder && dnnl_memory_set_data_handle(t[T_DXD].user, dx))
            return FL_EUNSUPPORTED;
        dnnl_exec_arg_t dargs[4] = {{DNNL_ARG_DIFF_DST, dyd},
                                    {DNNL_ARG_WEIGHTS, wd},
                                    {DNNL_ARG_DIFF_SRC, t[T_DXD].inner},
                                    {DNNL_ARG_SCRATCHPAD, e->sbwd_d}};
        if (dnnl_primitive_execute(e->bwd_d, c->strm, 4, dargs) ||
            tensor_out(&t[T_DXD], c->strm, dx))
            return FL_EUNSUPPORTED;
    }
    if (dnnl_stream_wait(c->strm))
        return FL_EUNSUPPORTED;
    fl__gemm_account(direct_flops(c, n) * (dx ? 2 : 1), t0);
    fl__gemm_conv_account(direct_flops(c, n) * (dx ? 2 : 1), c0);
    return 0;
}

const char *fl__dnnl_conv_impl(const fl__dnnl_conv_t *c)
{
    return c && c->impl[0] ? c->impl : "none";
}

int fl__dnnl_sgemm(int threads, int transa, int transb, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c,
                   int ldc)
{
    /* The team is the calling thread's setting; a worker thread starts
     * with OpenMP's default (every core), so it is set on every call. */
    threads = threads < 1 ? 1 : threads;
    if (omp_get_max_threads() != threads)
        omp_set_num_threads(threads);
    return dnnl_sgemm(transa ? 'T' : 'N', transb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta,
                      c, ldc) == dnnl_success
               ? 0
               : FL_EUNSUPPORTED;
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
                          const float *bias, float *y, size_t n, int train)
{
    return FL_EUNSUPPORTED;
}

int fl__dnnl_conv_create_slice(int cin, int h, int w, int cout, int ldc, int k, int stride,
                               int pad, int bias, fl__dnnl_conv_t **out)
{
    if (out)
        *out = NULL;
    return FL_EUNSUPPORTED;
}

int fl__dnnl_conv_backward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                           const float *dy, float *gw, float *gb, float *dx, size_t n)
{
    return FL_EUNSUPPORTED;
}

int fl__dnnl_conv_backward_run(fl__dnnl_conv_t *c, const float *x, const float *weight,
                               const float *dy, float *dx, size_t n)
{
    return FL_EUNSUPPORTED;
}

void fl__dnnl_conv_backward_add(const fl__dnnl_conv_t *c, float *gw, float *gb) {}

void fl__dnnl_conv_forget(fl__dnnl_conv_t *c) { (void)c; }

const char *fl__dnnl_conv_impl(const fl__dnnl_conv_t *c) { return "none"; }

void fl__dnnl_set_winograd(int mode) { (void)mode; }

int fl__dnnl_sgemm(int threads, int transa, int transb, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c,
                   int ldc)
{
    return FL_EUNSUPPORTED;
}

void fl__dnnl_conv_free(fl__dnnl_conv_t *c) { (void)c; }

#endif
