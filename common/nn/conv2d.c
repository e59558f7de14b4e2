#include "common/nn/conv2d.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/nn/dnnl.h"
#include "common/nn/gemm.h"
#include "common/nn/winograd.h"
#include "common/nn/workers.h"

/* At most this many output-channel slices of one layer (one per thread). */
#define CONV_MAX_SLICES 8

typedef struct {
    int cin, h, w, cout, ho, wo, k, stride, pad;
    int has_bias;
    size_t chunk; /* examples lowered together: one GEMM per chunk */
    size_t col_n;  /* examples of the last forward's batch that col still holds
                      lowered (the batch was one chunk), or 0 */
    float *col;   /* [cin*k*k, chunk*ho*wo] */
    float *ybuf;  /* [cout, chunk*ho*wo]: GEMM output / output gradient, channel-major */
    float *plane; /* (h+2*pad) x (w+2*pad), zero border: one padded input plane */
    float *acc;   /* the same size: col2im's padded accumulator */
    /* Winograd F(2x2,3x3) for all three products of a 3x3 stride-1 layer
     * (see conv_use_winograd): wf transforms x into y (and serves the
     * weight gradient), wb the output gradient into dx. */
    int wino;
    fl_winograd_t wf, wb;
    size_t wchunk;       /* examples transformed together: one set of 16 GEMMs */
    float *wu;           /* transformed kernel, [16][cout][cin] or [16][cin][cout] */
    float *wdu;          /* the transformed kernel's gradient, [16][cout][cin] */
    float *wv, *wm;      /* transformed inputs and products, sized for both passes */
    float *wplane_f, *wplane_b; /* zero-bordered planes of wf and wb */
    /* oneDNN's convolution (common/nn/dnnl.h) when this layer runs on it;
     * should a call fail there, the layer's own path above computes it. */
    fl__dnnl_conv_t *dnnl;
    /* The same convolution in output-channel slices, one per thread of the
     * model's set (fl__workers_current), made on first use: see
     * conv_slices_usable. */
    int nslices;      /* 0: not made; -1: unavailable (made and failed) */
    int s0[CONV_MAX_SLICES + 1]; /* slice i has channels [s0[i], s0[i+1]) */
    fl__dnnl_conv_t *slice[CONV_MAX_SLICES];
    float *dxs;       /* slices 1..'s shares of dx, (nslices - 1) x dxs_n examples */
    size_t dxs_n;
} conv_t;

/* Caps the lowered matrix of a chunk (floats). Wider GEMMs amortize
 * OpenBLAS's packing, but past about a MB the output and the lowered input
 * fall out of cache: on the whole cnn training step (bench_train, batch 20,
 * one thread) a cap that lowers conv2 (K = 288, 576 columns per example)
 * one example at a time and conv1 (K = 9) the whole batch at once beat one
 * GEMM over the whole batch for both. 256K floats (1 MB) is that cap; it
 * also keeps a wide ResNet layer's buffers small. Tests lower it to
 * exercise partial chunks. */
static size_t conv_col_cap = (size_t)1 << 18;

/* The cap above starves layers with small images: a ResNet stage at 6x6 has
 * 36 columns per example, and a GEMM that thin runs at a fraction of the
 * rate of one 720 wide (packing the 512x4608 weights is paid for few
 * columns; bench_resnet18gn measures the step). So a layer with
 * fewer than this many columns per chunk is widened, unless the lowered
 * matrix would then pass conv_col_max floats (64 MB). */
#define CONV_MIN_COLS 512
static const size_t conv_col_max = (size_t)1 << 24;

static int conv_cap_forced; /* a test set the cap: chunks are exactly cap/per */

/* Winograd pays when its 16 GEMMs are not too thin and the tiles are mostly
 * used: on cnn's conv2 (32 -> 64 channels, 26x26 -> 24x24) it beats im2col
 * + GEMM forward and backward with 2.25x fewer multiply-adds (bench_train's
 * cnn rows; bench_gemm lists both shapes). Its GEMMs have
 * K = cin (forward) and K = cout (input gradient): cnn's conv1, with one
 * input channel, would run K = 1 products. The bound of 16 channels is a
 * judgement between those two, not a measured crossover. */
#define CONV_WINO_MIN_CH 16
static int conv_wino_mode; /* 0: choose; 1: never; 2: wherever it applies (tests) */

void fl__conv2d_set_winograd(int mode) { conv_wino_mode = mode; }

static int conv_dnnl_mode; /* 0: choose; 1: never; 2: wherever it is built in (tests) */

void fl__conv2d_set_dnnl(int mode) { conv_dnnl_mode = mode; }

int fl__conv2d_uses_dnnl(const fl_layer_t *l)
{
    return l && l->priv && ((const conv_t *)l->priv)->dnnl != NULL;
}

const char *fl__conv2d_dnnl_impl(const fl_layer_t *l)
{
    return l && l->priv ? fl__dnnl_conv_impl(((const conv_t *)l->priv)->dnnl) : "none";
}

/* Which layers run on oneDNN by default (conv_dnnl_mode 0): every one where
 * it is built in. Its AVX-512 direct convolutions beat im2col/Winograd on
 * OpenBLAS's AVX2 kernel for cnn's conv2 and resnet18gn's layers; for cnn's
 * conv1 (one input channel) the two were within the noise of a loaded
 * machine (bench_train with FEDOPT_BENCH_CONV=own|dnnl; docs/benchmarks.md),
 * so it is not singled out until a quiet measurement says otherwise. */
static int conv_use_dnnl(const conv_t *c)
{
    if (conv_dnnl_mode == 1 || !fl__dnnl_available())
        return 0;
    return 1;
}

int fl__conv2d_slices(const fl_layer_t *l)
{
    return l && l->priv ? ((const conv_t *)l->priv)->nslices : 0;
}

int fl__conv2d_uses_winograd(const fl_layer_t *l)
{
    return l && l->priv && ((const conv_t *)l->priv)->wino;
}

static int conv_use_winograd(const conv_t *c)
{
    if (c->k != 3 || c->stride != 1 || conv_wino_mode == 1)
        return 0;
    if (conv_wino_mode == 2)
        return 1;
    /* Tiles are 2x2: an odd side wastes a row or column of each edge
     * tile. Require the 16 products per tile to save at least a third of
     * the direct 9 per output. */
    size_t tiles = (size_t)((c->ho + 1) / 2) * (size_t)((c->wo + 1) / 2);
    return c->cin >= CONV_WINO_MIN_CH && c->cout >= CONV_WINO_MIN_CH &&
           tiles * 16 * 3 <= (size_t)c->ho * c->wo * 9 * 2;
}

void fl__conv2d_set_col_cap(size_t floats)
{
    conv_col_cap = floats ? floats : ((size_t)1 << 18);
    conv_cap_forced = floats != 0;
}

/* Copies a short run of floats. The runs of im2col/col2im are one row (6 to
 * 26 floats for the paper's models), and a call to memcpy per run costs
 * about as much as the copy (a perf profile of bench_resnet18gn's step
 * shows the lowering beside the GEMM kernel).
 * A plain loop would be turned back into that call by the compiler, so the
 * run goes in fixed 8- and 4-float pieces (which compile to vector moves)
 * and at most three single floats. */
static inline void copy_run(float *d, const float *s, int n)
{
    int j = 0;
    for (; j + 8 <= n; j += 8)
        memcpy(d + j, s + j, 8 * sizeof(float));
    if (j + 4 <= n) {
        memcpy(d + j, s + j, 4 * sizeof(float));
        j += 4;
    }
    if (j < n)
        d[j] = s[j];
    if (j + 1 < n)
        d[j + 1] = s[j + 1];
    if (j + 2 < n)
        d[j + 2] = s[j + 2];
}

/* Lowers one example x[cin, h, w] into the columns of col[cin*k*k, ld]
 * (ho*wo of them; zeros where the window hangs over the padding).
 *
 * Stride 1, the common case, goes through a zero-bordered copy of each input
 * plane (c->plane, (h+2p) x (w+2p)), so every output row is one branch-free
 * run of wo floats; with no padding the input plane itself is read. */
static void im2col(const conv_t *c, const float *x, float *col, size_t ld)
{
    const int k = c->k, wo = c->wo, ho = c->ho;
    if (c->stride == 1) {
        const int wp = c->w + 2 * c->pad;
        for (int ch = 0; ch < c->cin; ch++) {
            const float *src = x + (size_t)ch * c->h * c->w;
            const float *plane = src;
            if (c->pad) {
                for (int ih = 0; ih < c->h; ih++)
                    copy_run(c->plane + (size_t)(ih + c->pad) * wp + c->pad, src + (size_t)ih * c->w,
                             c->w);
                plane = c->plane;
            }
            for (int ki = 0; ki < k; ki++)
                for (int kj = 0; kj < k; kj++) {
                    float *row = col + (size_t)((ch * k + ki) * k + kj) * ld;
                    const float *in = plane + (size_t)ki * wp + kj;
                    for (int oh = 0; oh < ho; oh++)
                        copy_run(row + (size_t)oh * wo, in + (size_t)oh * wp, wo);
                }
        }
        return;
    }
    for (int ch = 0; ch < c->cin; ch++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                float *row = col + (size_t)((ch * k + ki) * k + kj) * ld;
                const float *plane = x + (size_t)ch * c->h * c->w;
                for (int oh = 0; oh < ho; oh++) {
                    int ih = oh * c->stride - c->pad + ki;
                    float *dst = row + (size_t)oh * wo;
                    if (ih < 0 || ih >= c->h) {
                        memset(dst, 0, (size_t)wo * sizeof(float));
                        continue;
                    }
                    const float *src = plane + (size_t)ih * c->w;
                    for (int ow = 0; ow < wo; ow++) {
                        int iw = ow * c->stride - c->pad + kj;
                        float v = src[iw >= 0 && iw < c->w ? iw : 0];
                        dst[ow] = (iw >= 0 && iw < c->w) ? v : 0.0f;
                    }
                }
            }
}

/* Adds the columns of col[cin*k*k, ld] back into dx[cin, h, w] (the
 * adjoint of im2col). Stride 1 accumulates into the zero-bordered plane
 * (branch-free runs again) and copies its interior out. */
static void col2im(const conv_t *c, const float *col, size_t ld, float *dx)
{
    const int k = c->k, wo = c->wo, ho = c->ho;
    if (c->stride == 1) {
        const int hp = c->h + 2 * c->pad, wp = c->w + 2 * c->pad;
        for (int ch = 0; ch < c->cin; ch++) {
            float *dst = dx + (size_t)ch * c->h * c->w;
            float *plane = c->pad ? c->acc : dst;
            memset(plane, 0, (size_t)(c->pad ? hp * wp : c->h * c->w) * sizeof(float));
            for (int ki = 0; ki < k; ki++)
                for (int kj = 0; kj < k; kj++) {
                    const float *row = col + (size_t)((ch * k + ki) * k + kj) * ld;
                    float *out = plane + (size_t)ki * wp + kj;
                    for (int oh = 0; oh < ho; oh++) {
                        float *d = out + (size_t)oh * wp;
                        const float *r = row + (size_t)oh * wo;
                        for (int ow = 0; ow < wo; ow++)
                            d[ow] += r[ow];
                    }
                }
            if (c->pad)
                for (int ih = 0; ih < c->h; ih++)
                    copy_run(dst + (size_t)ih * c->w, plane + (size_t)(ih + c->pad) * wp + c->pad,
                             c->w);
        }
        return;
    }
    memset(dx, 0, (size_t)c->cin * c->h * c->w * sizeof(float));
    for (int ch = 0; ch < c->cin; ch++)
        for (int ki = 0; ki < k; ki++)
            for (int kj = 0; kj < k; kj++) {
                const float *row = col + (size_t)((ch * k + ki) * k + kj) * ld;
                float *plane = dx + (size_t)ch * c->h * c->w;
                for (int oh = 0; oh < ho; oh++) {
                    int ih = oh * c->stride - c->pad + ki;
                    if (ih < 0 || ih >= c->h)
                        continue;
                    const float *src = row + (size_t)oh * wo;
                    float *dst = plane + (size_t)ih * c->w;
                    for (int ow = 0; ow < wo; ow++) {
                        int iw = ow * c->stride - c->pad + kj;
                        if (iw >= 0 && iw < c->w)
                            dst[iw] += src[ow];
                    }
                }
            }
}

static int conv_reserve(fl_layer_t *l, size_t max_n)
{
    conv_t *c = l->priv;
    size_t per = (size_t)c->cin * c->k * c->k * c->ho * c->wo;
    size_t chunk = conv_col_cap / per;
    size_t hw = (size_t)c->ho * c->wo;
    size_t wide = (CONV_MIN_COLS + hw - 1) / hw;
    /* A narrow layer takes the whole batch when it fits (one GEMM, and the
     * backward pass reuses the forward's lowering), else just wide enough. */
    if (chunk < wide && !conv_cap_forced) {
        if (max_n <= conv_col_max / per)
            chunk = max_n;
        else
            chunk = wide * per <= conv_col_max ? wide : conv_col_max / per;
    }
    if (chunk < 1)
        chunk = 1;
    if (chunk > max_n)
        chunk = max_n;
    /* A Winograd layer never lowers: no col or ybuf. (For a ResNet stage at
     * 6x6 the whole-batch lowering above asks for up to 47 MB per layer;
     * never touched, it cost address space rather than resident memory.) */
    if (!c->wino && chunk > c->chunk) {
        c->col_n = 0;
        free(c->col);
        free(c->ybuf);
        c->col = malloc(chunk * per * sizeof(float));
        c->ybuf = malloc(chunk * (size_t)c->cout * c->ho * c->wo * sizeof(float));
        c->chunk = c->col && c->ybuf ? chunk : 0;
        if (!c->chunk)
            return FL_ENOMEM;
    }
    if (c->wino) {
        /* At least 128 tile columns per GEMM (a small image's layer takes
         * several examples), and one example when that is already enough:
         * several of cnn's conv2 examples at a time no longer fit the L2
         * cache and ran slower (bench_train's cnn rows). */
        size_t tf = fl_winograd_tiles(&c->wf), tb = fl_winograd_tiles(&c->wb);
        size_t t = tf < tb ? tf : tb;
        size_t wc = (128 + t - 1) / t;
        if (wc > max_n)
            wc = max_n;
        if (conv_cap_forced && wc > 2)
            wc = 2; /* tests: several chunks even in small batches */
        if (wc > c->wchunk) {
            size_t v = 16 * fl_winograd_stride((size_t)c->cin, wc * tf);
            size_t vb = 16 * fl_winograd_stride((size_t)c->cout, wc * tb);
            size_t m = 16 * fl_winograd_stride((size_t)c->cout, wc * tf);
            size_t mb = 16 * fl_winograd_stride((size_t)c->cin, wc * tb);
            free(c->wv);
            free(c->wm);
            c->wv = malloc((v > vb ? v : vb) * sizeof(float));
            c->wm = malloc((m > mb ? m : mb) * sizeof(float));
            c->wchunk = c->wv && c->wm ? wc : 0;
            if (!c->wchunk)
                return FL_ENOMEM;
        }
    }
    l->max_n = max_n;
    return 0;
}

/* Runs one Winograd convolution over n examples of `in_dim` floats into
 * outputs of `out_dim` floats, in chunks of c->wchunk: the forward pass
 * (g = wf, bias) or the input gradient (g = wb, no bias). c->wu holds the
 * matching transformed kernel. */
static void conv_winograd(const conv_t *c, const fl_winograd_t *g, float *plane, const float *in,
                          size_t in_dim, size_t n, const float *bias, float *out, size_t out_dim)
{
    const size_t t = fl_winograd_tiles(g);
    for (size_t i0 = 0; i0 < n; i0 += c->wchunk) {
        size_t nc = n - i0 < c->wchunk ? n - i0 : c->wchunk;
        size_t ld = nc * t;
        for (size_t i = 0; i < nc; i++)
            fl_winograd_input(g, in + (i0 + i) * in_dim, plane, c->wv, ld, i * t);
        fl_winograd_multiply(g, c->wu, c->wv, ld, c->wm, ld, ld);
        for (size_t i = 0; i < nc; i++)
            fl_winograd_output(g, c->wm, ld, i * t, bias, out + (i0 + i) * out_dim);
    }
}

static void conv_init(fl_layer_t *l, fl_rng_t *rng)
{
    const conv_t *c = l->priv;
    int fan_in = c->cin * c->k * c->k;
    float bound = 1.0f / sqrtf((float)fan_in);
    fl_init_uniform(l->p[0], (size_t)c->cout * fan_in, bound, rng);
    if (c->has_bias)
        fl_init_uniform(l->p[1], (size_t)c->cout, bound, rng);
}

/* Output-channel slices. A model whose weights outweigh its activations
 * (resnet18gn: 11M parameters, images of 6x6 in every wide layer) runs its
 * whole batch on one model and splits each convolution across its threads
 * by output channels (fl_model_set_threads): each thread then converts,
 * transforms and differentiates only its share of the weights, where a
 * batch split repeats all of that weight-sized work on every thread and
 * the threads contend for the memory it streams (bench_train's resnet18gn
 * 2-thread column; docs/benchmarks.md has the profile). Slices start at
 * multiples of 16 channels, oneDNN's block. */
#define CONV_SLICE_ALIGN 16

/* How many slices this layer runs in on the workers w (0: not split). */
static int conv_slices_wanted(const conv_t *c, const fl_workers_t *w)
{
    if (!c->dnnl || !w || c->nslices < 0)
        return 0;
    int s = fl_workers_count(w) + 1;
    if (s > CONV_MAX_SLICES)
        s = CONV_MAX_SLICES;
    if (s > c->cout / CONV_SLICE_ALIGN)
        s = c->cout / CONV_SLICE_ALIGN;
    return s >= 2 ? s : 0;
}

/* Makes the slices (once; a layer's thread count is its model's). Returns
 * the count, or 0 when they cannot be made (the layer then runs whole). */
static int conv_slices_make(conv_t *c, int s)
{
    if (c->nslices > 0)
        return c->nslices == s ? s : 0;
    for (int i = 0; i <= s; i++) {
        int b = (int)((long)c->cout * i / s);
        c->s0[i] = i == s ? c->cout : b - b % CONV_SLICE_ALIGN;
    }
    for (int i = 0; i < s; i++)
        if (fl__dnnl_conv_create_slice(c->cin, c->h, c->w, c->s0[i + 1] - c->s0[i], c->cout, c->k,
                                       c->stride, c->pad, c->has_bias, &c->slice[i])) {
            for (int j = 0; j < i; j++) {
                fl__dnnl_conv_free(c->slice[j]);
                c->slice[j] = NULL;
            }
            c->nslices = -1;
            return 0;
        }
    c->nslices = s;
    return s;
}

typedef struct {
    conv_t *c;
    const fl_layer_t *l;
    const float *x, *dy;
    float *y, *dx;
    size_t n;
    int train;
    int rc[CONV_MAX_SLICES];
} slice_job_t;

static void slice_forward(void *arg, size_t i)
{
    slice_job_t *j = arg;
    const conv_t *c = j->c;
    const int o = c->s0[i];
    const size_t hw = (size_t)c->ho * c->wo, per_o = (size_t)c->cin * c->k * c->k;
    j->rc[i] = fl__dnnl_conv_forward(c->slice[i], j->x, j->l->p[0] + o * per_o,
                                     c->has_bias ? j->l->p[1] + o : NULL, j->y + o * hw, j->n,
                                     j->train);
}

/* Slice i's share of dx: dx itself for slice 0, c->dxs for the others. */
static float *slice_dx(const slice_job_t *j, size_t i)
{
    if (!j->dx)
        return NULL;
    const size_t in = (size_t)j->c->cin * j->c->h * j->c->w;
    return i ? j->c->dxs + (i - 1) * j->n * in : j->dx;
}

static void slice_backward(void *arg, size_t i)
{
    slice_job_t *j = arg;
    const conv_t *c = j->c;
    const int o = c->s0[i];
    const size_t hw = (size_t)c->ho * c->wo, per_o = (size_t)c->cin * c->k * c->k;
    j->rc[i] = fl__dnnl_conv_backward_run(c->slice[i], j->x, j->l->p[0] + o * per_o,
                                          j->dy + o * hw, slice_dx(j, i), j->n);
}

/* After every slice's backward succeeded: slice i adds its gradients (its
 * own channels) and sums the slices' shares of dx over its i-th of dx, in
 * slice order, so the result never depends on which thread ran what. */
static void slice_commit(void *arg, size_t i)
{
    slice_job_t *j = arg;
    const conv_t *c = j->c;
    const int o = c->s0[i];
    const size_t per_o = (size_t)c->cin * c->k * c->k;
    fl__dnnl_conv_backward_add(c->slice[i], j->l->g[0] + o * per_o,
                               c->has_bias ? j->l->g[1] + o : NULL);
    if (!j->dx)
        return;
    const size_t total = j->n * (size_t)c->cin * c->h * c->w, s = (size_t)c->nslices;
    const size_t a = total * i / s, b = total * (i + 1) / s;
    for (size_t k = 1; k < s; k++) {
        const float *p = slice_dx(j, k);
        for (size_t e = a; e < b; e++)
            j->dx[e] += p[e];
    }
}

/* The forward pass in slices on the current workers: 1 when done, 0 when
 * the layer must run whole (not split, or a slice failed). */
static int conv_forward_slices(fl_layer_t *l, const float *x, float *y, size_t n, int train)
{
    conv_t *c = l->priv;
    fl_workers_t *w = fl__workers_current();
    int s = conv_slices_wanted(c, w);
    if (!s || !conv_slices_make(c, s))
        return 0;
    slice_job_t j = {.c = c, .l = l, .x = x, .y = y, .n = n, .train = train};
    fl_workers_run(w, (size_t)s, slice_forward, &j);
    for (int i = 0; i < s; i++)
        if (j.rc[i]) {
            c->nslices = -1; /* made, but it failed: the whole layer from now on */
            return 0;
        }
    /* The whole-layer primitives' kept x and weights are stale now. */
    fl__dnnl_conv_forget(c->dnnl);
    return 1;
}

static int conv_backward_slices(fl_layer_t *l, const float *x, const float *dy, float *dx,
                                size_t n)
{
    conv_t *c = l->priv;
    fl_workers_t *w = fl__workers_current();
    int s = conv_slices_wanted(c, w);
    if (!s || c->nslices != s)
        return 0;
    const size_t in = (size_t)c->cin * c->h * c->w;
    if (dx && n > c->dxs_n) {
        float *p = malloc((size_t)(s - 1) * n * in * sizeof(float));
        if (!p)
            return 0;
        free(c->dxs);
        c->dxs = p;
        c->dxs_n = n;
    }
    slice_job_t j = {.c = c, .l = l, .x = x, .dy = dy, .dx = dx, .n = n};
    fl_workers_run(w, (size_t)s, slice_backward, &j);
    for (int i = 0; i < s; i++)
        if (j.rc[i]) {
            c->nslices = -1;
            return 0;
        }
    fl_workers_run(w, (size_t)s, slice_commit, &j);
    return 1;
}

/* Forward and backward work in chunks of examples: the chunk's examples are
 * lowered side by side into col[K, nc*HW] (K = cin*k*k), so each pass is one
 * wide GEMM instead of one small GEMM per example. The GEMM output is
 * channel-major [cout, nc*HW] and is copied (with the bias) into NCHW. */
static void conv_forward(fl_layer_t *l, const float *x, float *y, size_t n, fl_mode_t mode)
{
    conv_t *c = l->priv;
    const int kk = c->cin * c->k * c->k;
    const size_t hw = (size_t)c->ho * c->wo;
    /* When the batch fits one chunk, the lowered input stays in col for the
     * backward pass (the layer contract: backward sees the x of the last
     * forward), which saves lowering it twice. */
    if (conv_forward_slices(l, x, y, n, mode == FL_MODE_TRAIN)) {
        c->col_n = 0;
        return;
    }
    /* Whatever runs now, what the slices kept is stale. */
    for (int i = 0; i < c->nslices; i++)
        fl__dnnl_conv_forget(c->slice[i]);
    if (c->dnnl && fl__dnnl_conv_forward(c->dnnl, x, l->p[0], c->has_bias ? l->p[1] : NULL, y,
                                         n, mode == FL_MODE_TRAIN) == 0) {
        c->col_n = 0;
        return;
    }
    if (c->wino) {
        fl_winograd_weights(l->p[0], c->cout, c->cin, 0, c->wu);
        conv_winograd(c, &c->wf, c->wplane_f, x, l->in_dim, n, c->has_bias ? l->p[1] : NULL, y,
                      l->out_dim);
        return;
    }
    c->col_n = n <= c->chunk ? n : 0;
    for (size_t i0 = 0; i0 < n; i0 += c->chunk) {
        size_t nc = n - i0 < c->chunk ? n - i0 : c->chunk;
        size_t ld = nc * hw;
        for (size_t i = 0; i < nc; i++)
            im2col(c, x + (i0 + i) * l->in_dim, c->col + i * hw, ld);
        if (nc == 1) {
            /* One example's GEMM output [cout, hw] is already its NCHW
             * slice: write it in place onto the bias, no staging copy. */
            float *yi = y + i0 * l->out_dim;
            for (int o = 0; c->has_bias && o < c->cout; o++)
                for (size_t j = 0; j < hw; j++)
                    yi[(size_t)o * hw + j] = l->p[1][o];
            fl_gemm(0, 0, c->cout, (int)hw, kk, 1.0f, l->p[0], kk, c->col, (int)hw,
                    c->has_bias ? 1.0f : 0.0f, yi, (int)hw);
            continue;
        }
        fl_gemm(0, 0, c->cout, (int)ld, kk, 1.0f, l->p[0], kk, c->col, (int)ld, 0.0f, c->ybuf,
                (int)ld);
        for (size_t i = 0; i < nc; i++) {
            float *yi = y + (i0 + i) * l->out_dim;
            for (int o = 0; o < c->cout; o++) {
                const float *src = c->ybuf + (size_t)o * ld + i * hw;
                float *dst = yi + (size_t)o * hw;
                float bo = c->has_bias ? l->p[1][o] : 0.0f;
                for (size_t j = 0; j < hw; j++)
                    dst[j] = src[j] + bo;
            }
        }
    }
}

/* The sum of x[0..n) in 16 running sums, one per lane, added pairwise at
 * the end. A single running sum is a chain of dependent additions (each
 * waits out the previous one's latency, and the compiler may not reorder
 * float additions): the bias gradients of cnn's conv1 and conv2 sum 1.2 million
 * elements per batch-20 step (bench_train's cnn rows). The lanes
 * vectorize, and partial sums are no less accurate than one running sum. */
static float plane_sum(const float *x, size_t n)
{
    enum { L = 16 };
    float acc[L] = {0};
    size_t j = 0;
    for (; j + L <= n; j += L)
        for (int q = 0; q < L; q++)
            acc[q] += x[j + q];
    for (int q = 0; j < n; j++, q++)
        acc[q] += x[j];
    for (int w = L / 2; w > 0; w /= 2)
        for (int q = 0; q < w; q++)
            acc[q] += acc[q + w];
    return acc[0];
}

/* Adds one example's bias gradient: the sum of each channel of dyi
 * [cout, ho, wo] into gb. */
static void add_bias_grad(const conv_t *c, const float *dyi, float *gb)
{
    const size_t hw = (size_t)c->ho * c->wo;
    for (int o = 0; o < c->cout; o++)
        gb[o] += plane_sum(dyi + (size_t)o * hw, hw);
}

/* The backward pass of a Winograd layer: bias, weight and input gradients
 * all from the tiles (no im2col). */
static void conv_backward_winograd(fl_layer_t *l, const float *x, const float *dy, float *dx,
                                   size_t n)
{
    conv_t *c = l->priv;
    const size_t t = fl_winograd_tiles(&c->wf);
    for (size_t i = 0; c->has_bias && i < n; i++)
        add_bias_grad(c, dy + i * l->out_dim, l->g[1]);
    memset(c->wdu, 0, (size_t)16 * c->cout * c->cin * sizeof(float));
    for (size_t i0 = 0; i0 < n; i0 += c->wchunk) {
        size_t nc = n - i0 < c->wchunk ? n - i0 : c->wchunk;
        size_t ld = nc * t;
        for (size_t i = 0; i < nc; i++) {
            fl_winograd_input(&c->wf, x + (i0 + i) * l->in_dim, c->wplane_f, c->wv, ld, i * t);
            fl_winograd_grad_output(&c->wf, dy + (i0 + i) * l->out_dim, c->wm, ld, i * t);
        }
        fl_winograd_weight_grad(&c->wf, c->wm, ld, c->wv, ld, ld, c->wdu);
    }
    fl_winograd_weights_grad(c->wdu, c->cout, c->cin, l->g[0]);
    if (dx) {
        /* dx is the convolution of dy with the rotated, transposed kernel. */
        fl_winograd_weights(l->p[0], c->cout, c->cin, 1, c->wu);
        conv_winograd(c, &c->wb, c->wplane_b, dy, l->out_dim, n, NULL, dx, l->in_dim);
    }
}

static void conv_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                          float *dx, size_t n)
{
    conv_t *c = l->priv;
    const int kk = c->cin * c->k * c->k;
    const size_t hw = (size_t)c->ho * c->wo;
    if (conv_backward_slices(l, x, dy, dx, n))
        return;
    if (c->dnnl && fl__dnnl_conv_backward(c->dnnl, x, l->p[0], dy, l->g[0],
                                          c->has_bias ? l->g[1] : NULL, dx, n) == 0)
        return;
    if (c->wino) {
        conv_backward_winograd(l, x, dy, dx, n);
        return;
    }
    for (size_t i0 = 0; i0 < n; i0 += c->chunk) {
        size_t nc = n - i0 < c->chunk ? n - i0 : c->chunk;
        size_t ld = nc * hw;
        /* The lowered input again, unless the forward pass left it in col
         * (one chunk); lowering again is cheaper than keeping every chunk. */
        if (c->col_n != n)
            for (size_t i = 0; i < nc; i++)
                im2col(c, x + (i0 + i) * l->in_dim, c->col + i * hw, ld);
        if (!dx) {
            /* The first layer (no input gradient): one weight-gradient GEMM
             * per example straight from dy, instead of copying the chunk's
             * dy channel-major first, a pass over dy the GEMM does not need
             * (bench_train's cnn rows). */
            for (size_t i = 0; i < nc; i++) {
                const float *dyi = dy + (i0 + i) * l->out_dim;
                if (c->has_bias)
                    add_bias_grad(c, dyi, l->g[1]);
                fl_gemm(0, 1, c->cout, kk, (int)hw, 1.0f, dyi, (int)hw, c->col + i * hw, (int)ld,
                        1.0f, l->g[0], kk);
            }
            continue;
        }
        /* dy of the chunk, channel-major, and the bias gradient on the way.
         * A chunk of one example is already channel-major in dy itself. */
        const float *dyc = c->ybuf;
        if (nc == 1) {
            dyc = dy + i0 * l->out_dim;
            if (c->has_bias)
                add_bias_grad(c, dyc, l->g[1]);
        }
        for (size_t i = 0; nc > 1 && i < nc; i++) {
            const float *dyi = dy + (i0 + i) * l->out_dim;
            for (int o = 0; o < c->cout; o++)
                memcpy(c->ybuf + (size_t)o * ld + i * hw, dyi + (size_t)o * hw,
                       hw * sizeof(float));
            if (c->has_bias)
                add_bias_grad(c, dyi, l->g[1]);
        }
        /* dW[cout, K] += dY[cout, ld] * col^T[ld, K] */
        fl_gemm(0, 1, c->cout, kk, (int)ld, 1.0f, dyc, (int)ld, c->col, (int)ld, 1.0f, l->g[0],
                kk);
        c->col_n = 0; /* col is overwritten below */
        /* dcol[K, ld] = W^T[K, cout] * dY[cout, ld], into col (no longer needed). */
        fl_gemm(1, 0, kk, (int)ld, c->cout, 1.0f, l->p[0], kk, dyc, (int)ld, 0.0f, c->col,
                (int)ld);
        for (size_t i = 0; i < nc; i++)
            col2im(c, c->col + i * hw, ld, dx + (i0 + i) * l->in_dim);
    }
}

static void conv_destroy(fl_layer_t *l)
{
    conv_t *c = l->priv;
    if (c) {
        free(c->col);
        free(c->ybuf);
        free(c->plane);
        free(c->acc);
        free(c->wu);
        free(c->wdu);
        free(c->wv);
        free(c->wm);
        free(c->wplane_f);
        free(c->wplane_b);
        fl__dnnl_conv_free(c->dnnl);
        for (int i = 0; i < c->nslices; i++)
            fl__dnnl_conv_free(c->slice[i]);
        free(c->dxs);
    }
    free(c);
}

static const fl_layer_ops_t conv_ops = {
    .kind = "conv2d",
    .reserve = conv_reserve,
    .init = conv_init,
    .forward = conv_forward,
    .backward = conv_backward,
    .destroy = conv_destroy,
};

int fl_conv2d_create(fl_params_t *layout, const char *prefix, const fl_shape_t *in,
                     int64_t out_channels, int k, int stride, int pad, int bias, fl_layer_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!layout || !in || in->ndim != 3 || out_channels <= 0 || out_channels > 65536 || k < 1 ||
        stride < 1 || pad < 0 || pad >= k || in->d[0] <= 0 || in->d[0] > 65536 || in->d[1] <= 0 ||
        in->d[1] > 65536 || in->d[2] <= 0 || in->d[2] > 65536)
        return FL_EINVAL;
    int64_t ho = (in->d[1] + 2 * pad - k) / stride + 1, wo = (in->d[2] + 2 * pad - k) / stride + 1;
    if (in->d[1] + 2 * pad < k || in->d[2] + 2 * pad < k || ho < 1 || wo < 1)
        return FL_EINVAL;
    fl_layer_t *l = calloc(1, sizeof *l);
    conv_t *c = calloc(1, sizeof *c);
    int rc = FL_ENOMEM;
    if (!l || !c)
        goto fail;
    fl_shape_t os = {.ndim = 3, .d = {out_channels, ho, wo}};
    if ((rc = fl_layer_setup(l, &conv_ops, prefix, in, &os)))
        goto fail;
    if ((uint64_t)in->d[0] * k * k * ho * wo > INT32_MAX) {
        rc = FL_EINVAL;
        goto fail;
    }
    *c = (conv_t){.cin = (int)in->d[0], .h = (int)in->d[1], .w = (int)in->d[2],
                  .cout = (int)out_channels, .ho = (int)ho, .wo = (int)wo, .k = k,
                  .stride = stride, .pad = pad, .has_bias = bias != 0};
    l->priv = c;
    if (stride == 1 && pad) {
        /* calloc: im2col only ever writes the interior, so the border stays 0. */
        size_t padded = (size_t)(in->d[1] + 2 * pad) * (size_t)(in->d[2] + 2 * pad);
        c->plane = calloc(padded, sizeof(float));
        c->acc = calloc(padded, sizeof(float));
        if (!c->plane || !c->acc) {
            rc = FL_ENOMEM;
            c = NULL;
            goto fail;
        }
    }
    if (conv_use_winograd(c)) {
        if (fl_winograd_setup(&c->wf, c->cin, c->h, c->w, c->cout, pad) ||
            fl_winograd_setup(&c->wb, c->cout, c->ho, c->wo, c->cin, 2 - pad)) {
            rc = FL_EINVAL;
            c = NULL;
            goto fail;
        }
        /* calloc: the planes' borders must stay 0 (only interiors are written). */
        c->wplane_f = calloc(fl_winograd_plane_size(&c->wf), sizeof(float));
        c->wplane_b = calloc(fl_winograd_plane_size(&c->wb), sizeof(float));
        c->wu = malloc((size_t)16 * c->cin * c->cout * sizeof(float));
        c->wdu = malloc((size_t)16 * c->cin * c->cout * sizeof(float));
        if (!c->wplane_f || !c->wplane_b || !c->wu || !c->wdu) {
            rc = FL_ENOMEM;
            c = NULL;
            goto fail;
        }
        c->wino = 1;
    }
    /* A layer oneDNN cannot take (no CPU engine) stays on the path above. */
    if (conv_use_dnnl(c)) {
        int drc = fl__dnnl_conv_create(c->cin, c->h, c->w, c->cout, k, stride, pad, bias, &c->dnnl);
        if (drc == FL_ENOMEM || drc == FL_EINVAL) {
            rc = drc;
            c = NULL;
            goto fail;
        }
    }
    c = NULL;
    int64_t wshape[4] = {out_channels, in->d[0], k, k};
    if ((rc = fl_layer_add_param(l, layout, "weight", 4, wshape, FL_PARAM_DECAY)))
        goto fail;
    if (bias && (rc = fl_layer_add_param(l, layout, "bias", 1, &out_channels, 0)))
        goto fail;
    *out = l;
    return 0;
fail:
    fl_layer_free(l);
    free(c);
    return rc;
}
