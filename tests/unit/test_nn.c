/* Gradient checks for every layer and every model's loss, against central
 * finite differences on small shapes (tests/support/gradcheck), plus the
 * GEMM dispatch against a naive product and the loss functions' values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/nn/models.h"
#include "common/nn/act.h"
#include "common/nn/conv2d.h"
#include "common/nn/dnnl.h"
#include "common/nn/pool.h"
#include "common/nn/dense.h"
#include "common/nn/dropout.h"
#include "common/nn/gemm.h"
#include "common/nn/loss.h"
#include "common/base/rng.h"
#include "tests/support/gradcheck.h"


static void naive(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                  const float *b, int ldb, float beta, double *c, int ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
                     (tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = alpha * s + beta * c[i * ldc + j];
        }
}

static void test_gemm_matches_naive(void **state)
{
    (void)state;
    fl_rng_t r;
    fl_rng_seed(&r, 3);
    const int m = 13, n = 17, k = 29;
    float a[29 * 29], b[29 * 29], c[13 * 17];
    double ref[13 * 17];
    for (int t = 0; t < 4; t++) {
        int ta = t & 1, tb = t >> 1;
        int lda = ta ? m : k, ldb = tb ? k : n;
        for (int i = 0; i < 29 * 29; i++) {
            a[i] = (float)fl_rng_normal(&r);
            b[i] = (float)fl_rng_normal(&r);
        }
        for (int i = 0; i < m * n; i++)
            ref[i] = c[i] = (float)fl_rng_normal(&r);
        fl_gemm(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 2.0f, c, n);
        naive(ta, tb, m, n, k, 0.5f, a, lda, b, ldb, 2.0f, ref, n);
        for (int i = 0; i < m * n; i++)
            assert_true(fabs(c[i] - ref[i]) < 1e-4 * (1 + fabs(ref[i])));
        /* beta = 0 must ignore whatever C held, NaN included. */
        for (int i = 0; i < m * n; i++) {
            c[i] = NAN;
            ref[i] = 0;
        }
        fl_gemm(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n);
        naive(ta, tb, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, ref, n);
        for (int i = 0; i < m * n; i++)
            assert_true(fabs(c[i] - ref[i]) < 1e-4 * (1 + fabs(ref[i])));
    }
    /* With two threads set, a product too small to split runs on one
     * (gemm.c) and leaves the setting as it was; results stay right. */
    fl_gemm_set_threads(2);
    for (int i = 0; i < m * n; i++)
        ref[i] = c[i] = 1.0f;
    fl_gemm(0, 0, m, n, k, 1.0f, a, k, b, n, 1.0f, c, n);
    naive(0, 0, m, n, k, 1.0f, a, k, b, n, 1.0f, ref, n);
    for (int i = 0; i < m * n; i++)
        assert_true(fabs(c[i] - ref[i]) < 1e-4 * (1 + fabs(ref[i])));
#if FL_HAVE_OPENBLAS
    assert_int_equal(fl_gemm_get_threads(), 2);
#endif
    fl_gemm_set_threads(1);
    /* beta = 0 into a C with a wider leading dimension (gemm.c clears C
     * itself, row by row): the product lands, NaN in C is ignored, and the
     * columns past n keep what they held. */
    enum { LDC = 17 + 3 };
    float cw[13 * LDC];
    for (int i = 0; i < m * LDC; i++)
        cw[i] = i % LDC < n ? NAN : 7.0f;
    for (int i = 0; i < m * n; i++)
        ref[i] = 0;
    fl_gemm(1, 0, m, n, k, 1.0f, a, m, b, n, 0.0f, cw, LDC);
    naive(1, 0, m, n, k, 1.0f, a, m, b, n, 0.0f, ref, n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < LDC; j++) {
            float got = cw[i * LDC + j];
            if (j < n)
                assert_true(fabs(got - ref[i * n + j]) < 1e-4 * (1 + fabs(ref[i * n + j])));
            else
                assert_true(got == 7.0f);
        }
}

/* fl__gemm_via on oneDNN's sgemm (where built in) against the naive
 * product: every transpose, the dense and LSTM layers' shapes (a 10-wide
 * head, wide K, one row), leading dimensions wider than the matrices,
 * alpha and beta, NaN in C under beta = 0; with two threads set, a product
 * big enough to split goes to OpenBLAS and is right too. FL_GEMM_OWN, and
 * fl__gemm_set_dnnl(1), give fl_gemm's result bit for bit. */
static void test_gemm_via_dnnl(void **state)
{
    (void)state;
    static const struct {
        int m, n, k;
    } shapes[] = {{13, 17, 29}, {20, 10, 200}, {1, 64, 33}, {20, 200, 784}, {96, 40, 20}};
    enum { PAD = 3 };
    fl_rng_t r;
    fl_rng_seed(&r, 21);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 8; t++) {
            const int m = shapes[s].m, n = shapes[s].n, k = shapes[s].k;
            const int ta = t & 1, tb = (t >> 1) & 1, zero = t >> 2;
            const int lda = (ta ? m : k) + PAD, ldb = (tb ? k : n) + PAD, ldc = n + PAD;
            const size_t na = (size_t)(ta ? k : m) * lda, nb = (size_t)(tb ? n : k) * ldb,
                         nc = (size_t)m * ldc;
            float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b);
            float *c = malloc(nc * sizeof *c), *c2 = malloc(nc * sizeof *c2);
            double *ref = malloc(nc * sizeof *ref);
            assert_non_null(a);
            assert_non_null(b);
            assert_non_null(c);
            assert_non_null(c2);
            assert_non_null(ref);
            for (size_t i = 0; i < na; i++)
                a[i] = (float)fl_rng_normal(&r);
            for (size_t i = 0; i < nb; i++)
                b[i] = (float)fl_rng_normal(&r);
            for (size_t i = 0; i < nc; i++) {
                c[i] = (int)(i % ldc) >= n ? 7.0f : zero ? NAN : (float)fl_rng_normal(&r);
                ref[i] = zero ? 0.0 : c[i];
                c2[i] = c[i];
            }
            const float alpha = zero ? 1.0f : 0.5f, beta = zero ? 0.0f : 2.0f;
            fl__gemm_via(FL_GEMM_DNNL, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            naive(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, ref, ldc);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < ldc; j++) {
                    double want = ref[(size_t)i * ldc + j], got = c[(size_t)i * ldc + j];
                    if (j >= n)
                        assert_true(got == 7.0f);
                    else if (!(fabs(got - want) < 1e-4 * (1 + fabs(want)) * sqrt((double)k)))
                        fail_msg("shape %zu, case %d, [%d,%d]: %g, want %g", s, t, i, j, got,
                                 want);
                }
            /* FL_GEMM_OWN and the "never" setting are fl_gemm itself. */
            memcpy(c, c2, nc * sizeof *c);
            fl_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            fl__gemm_via(FL_GEMM_OWN, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c2, ldc);
            assert_memory_equal(c, c2, nc * sizeof *c);
            if (!zero) {
                memcpy(c2, c, nc * sizeof *c);
                fl_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
                fl__gemm_set_dnnl(1);
                fl__gemm_via(FL_GEMM_DNNL, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c2, ldc);
                fl__gemm_set_dnnl(0);
                assert_memory_equal(c, c2, nc * sizeof *c);
            }
            free(a);
            free(b);
            free(c);
            free(c2);
            free(ref);
        }
    /* Two threads set: a 400x300x200 product (48 MFLOP) is split by
     * OpenBLAS, not run on oneDNN; a small one still is. Both are right. */
    fl_gemm_set_threads(2);
    enum { M = 400, N = 300, K = 200 };
    float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N),
          *c = malloc(sizeof(float) * M * N);
    double *ref = malloc(sizeof(double) * M * N);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(ref);
    for (int i = 0; i < M * K; i++)
        a[i] = (float)fl_rng_normal(&r);
    for (int i = 0; i < K * N; i++)
        b[i] = (float)fl_rng_normal(&r);
    for (int sz = 0; sz < 2; sz++) {
        const int m = sz ? M : 8;
        for (int i = 0; i < m * N; i++)
            c[i] = NAN;
        memset(ref, 0, sizeof(double) * M * N);
        fl__gemm_via(FL_GEMM_DNNL, 0, 0, m, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
        naive(0, 0, m, N, K, 1.0f, a, K, b, N, 0.0f, ref, N);
        for (int i = 0; i < m * N; i++)
            assert_true(fabs(c[i] - ref[i]) < 1e-3 * (1 + fabs(ref[i])));
    }
    fl_gemm_set_threads(1);
    free(a);
    free(b);
    free(c);
    free(ref);
}

/* Rows longer than the portable kernel's eight dot-product lanes (gemm.c),
 * with a tail, for every transpose: several lane blocks are summed right. */
static void test_gemm_long_rows(void **state)
{
    (void)state;
    enum { M = 6, N = 37, K = 75 };
    static float a[K * K], b[K * K], c[M * N];
    static double ref[M * N];
    fl_rng_t r;
    fl_rng_seed(&r, 11);
    for (int t = 0; t < 4; t++) {
        int ta = t & 1, tb = t >> 1;
        int lda = ta ? M : K, ldb = tb ? K : N;
        for (int i = 0; i < K * K; i++) {
            a[i] = (float)fl_rng_normal(&r);
            b[i] = (float)fl_rng_normal(&r);
        }
        for (int i = 0; i < M * N; i++)
            ref[i] = c[i] = (float)fl_rng_normal(&r);
        fl_gemm(ta, tb, M, N, K, 1.5f, a, lda, b, ldb, 0.5f, c, N);
        naive(ta, tb, M, N, K, 1.5f, a, lda, b, ldb, 0.5f, ref, N);
        for (int i = 0; i < M * N; i++)
            assert_true(fabs(c[i] - ref[i]) < 1e-4 * (1 + fabs(ref[i])));
    }
}

/* The GEMM timer: off, it counts nothing; on, it counts the exact flops of
 * every call with some time, and for a model split over two replicas it
 * must see the GEMMs of the replica's thread too (its total equals the
 * unsplit step's, which is what the calling thread's own counter misses). */
static void test_gemm_timer(void **state)
{
    (void)state;
    static float a[64 * 64], b[64 * 64], c[64 * 64];
    double s0 = fl__gemm_seconds();
    uint64_t f0 = fl__gemm_timed_flops();
    fl_gemm(0, 0, 64, 64, 64, 1.0f, a, 64, b, 64, 0.0f, c, 64);
    assert_true(fl__gemm_seconds() == s0);
    assert_true(fl__gemm_timed_flops() == f0);
    fl__gemm_timing(1);
    fl_gemm(0, 0, 64, 64, 64, 1.0f, a, 64, b, 64, 0.0f, c, 64);
    fl_gemm(1, 1, 3, 5, 7, 1.0f, a, 3, b, 7, 0.0f, c, 5);
    fl_gemm(0, 0, 3, 5, 0, 1.0f, a, 1, b, 5, 0.0f, c, 5); /* k = 0: no flops */
    assert_true(fl__gemm_timed_flops() - f0 == 2u * 64 * 64 * 64 + 2u * 3 * 5 * 7);
    assert_true(fl__gemm_seconds() > s0);
    fl__gemm_timing(0);

    const fl_model_info_t *info = NULL;
    for (size_t i = 0; i < fl_models_count(); i++)
        if (strcmp(fl_models_at(i)->name, "cnn") == 0)
            info = fl_models_at(i);
    assert_non_null(info);
    fl_model_t *m;
    assert_int_equal(fl_model_create("cnn", &info->paper, &m), 0);
    fl_model_init_params(m, 1);
    const size_t B = 16, in = fl_model_in_dim(m);
    float *x = calloc(B * in, sizeof(float));
    int32_t y[16] = {0};
    assert_non_null(x);
    double L;
    uint64_t own = fl__gemm_flops();
    assert_int_equal(fl_model_loss(m, x, y, B, FL_MODE_TRAIN, 1, &L, NULL), 0);
    const uint64_t step = fl__gemm_flops() - own;
    assert_true(step > 0);
    assert_int_equal(fl_model_set_threads(m, 2), 0);
    assert_int_equal(m->parts, 2);
    fl__gemm_timing(1);
    own = fl__gemm_flops();
    f0 = fl__gemm_timed_flops();
    assert_int_equal(fl_model_loss(m, x, y, B, FL_MODE_TRAIN, 1, &L, NULL), 0);
    fl__gemm_timing(0);
    assert_true(fl__gemm_timed_flops() - f0 == step);
    assert_true(fl__gemm_flops() - own < step); /* this thread ran only its part */
    free(x);
    fl_model_free(m);
}

static void test_kernel_pick(void **state)
{
    (void)state;
    /* A generic kernel on an AVX-512 CPU gets SkylakeX; on AVX2, Haswell or Zen. */
    assert_string_equal(fl__gemm_pick_kernel("Prescott", 3, 0), "SkylakeX");
    assert_string_equal(fl__gemm_pick_kernel("Prescott", 2, 0), "Haswell");
    assert_string_equal(fl__gemm_pick_kernel("Nehalem", 2, 1), "Zen");
    assert_string_equal(fl__gemm_pick_kernel("Sandybridge", 2, 0), "Haswell");
    /* A right or better choice, an old CPU, or an unknown name are left alone. */
    assert_null(fl__gemm_pick_kernel("Haswell", 3, 0));
    assert_null(fl__gemm_pick_kernel("Zen", 2, 1));
    assert_null(fl__gemm_pick_kernel("SkylakeX", 3, 0));
    assert_null(fl__gemm_pick_kernel("Prescott", 1, 0));
    assert_null(fl__gemm_pick_kernel("Prescott", 0, 0));
    assert_null(fl__gemm_pick_kernel("NEOVERSEN1", 3, 0));
    assert_null(fl__gemm_pick_kernel(NULL, 3, 0));
    /* Whatever this machine is, the query never proposes a kernel the CPU
     * lacks: with a user override it must say nothing. */
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    assert_null(fl_gemm_better_kernel());
    unsetenv("OPENBLAS_CORETYPE");
}

/* ---- layers ---- */

static void away_from_zero(float *x, size_t n, uint64_t seed, void *ud)
{
    (void)ud;
    fl_rng_t r;
    fl_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        double v = 0.1 + 0.9 * fl_rng_uniform(&r);
        x[i] = (float)(fl_rng_u32(&r) & 1 ? v : -v);
    }
}

static void check_layer(fl_layer_t *l, fl_params_t *layout, size_t n, const fl_gc_opts_t *o)
{
    assert_non_null(l);
    fl_gc_result_t res;
    int rc = fl_gc_layer(l, layout, n, o, &res);
    assert_true(res.checked > 0);
    assert_int_equal(res.failed, 0);
    assert_int_equal(rc, 0);
    fl_layer_free(l);
    fl_params_free(layout);
}

/* Dense layers on both backends: every product on fl_gemm's own path
 * (mode 1), and every one on oneDNN where it is built in (mode 2). */
static void grad_dense(int mode);

static void test_grad_dense(void **state)
{
    (void)state;
    grad_dense(1);
    if (fl__dnnl_available())
        grad_dense(2);
}

static void grad_dense(int mode)
{
    fl__gemm_set_dnnl(mode);
    fl_params_t p;
    fl_layer_t *l;
    fl_gc_opts_t o = fl_gc_defaults();
    /* Plain 1-D input, with and without bias. */
    fl_params_init(&p);
    fl_shape_t in = {.ndim = 1, .d = {7}};
    assert_int_equal(fl_dense_create(&p, "fc", &in, 5, 1, &l), 0);
    assert_int_equal(l->out_dim, 5);
    assert_int_equal(p.numel, 7 * 5 + 5);
    assert_string_equal(p.views[0].name, "fc.weight");
    assert_int_equal(p.views[0].shape[0], 5);
    assert_int_equal(p.views[0].shape[1], 7);
    assert_string_equal(p.views[1].name, "fc.bias");
    check_layer(l, &p, 3, &o);
    fl_params_init(&p);
    assert_int_equal(fl_dense_create(&p, "nb", &in, 4, 0, &l), 0);
    assert_int_equal(p.nviews, 1);
    check_layer(l, &p, 2, &o);
    /* Over the last dim of a [T, D] input: each step is a row. */
    fl_params_init(&p);
    fl_shape_t seq = {.ndim = 2, .d = {3, 6}};
    assert_int_equal(fl_dense_create(&p, "proj", &seq, 4, 1, &l), 0);
    assert_int_equal(l->out.ndim, 2);
    assert_int_equal(l->out.d[0], 3);
    assert_int_equal(l->out.d[1], 4);
    check_layer(l, &p, 2, &o);
    /* Bad arguments are refused. */
    fl_params_init(&p);
    assert_int_equal(fl_dense_create(&p, "x", &in, 0, 1, &l), FL_EINVAL);
    assert_null(l);
    fl_params_free(&p);
    fl__gemm_set_dnnl(0);
}

static void test_grad_activations(void **state)
{
    (void)state;
    fl_params_t p;
    fl_layer_t *l;
    fl_gc_opts_t o = fl_gc_defaults();
    o.gen_input = away_from_zero; /* ReLU's kink at 0 has no derivative */
    fl_shape_t in = {.ndim = 3, .d = {2, 3, 4}};
    for (int k = FL_ACT_RELU; k <= FL_ACT_TANH; k++) {
        fl_params_init(&p);
        assert_int_equal(fl_act_create((fl_act_kind_t)k, &in, &l), 0);
        check_layer(l, &p, 3, &o);
    }
    fl_params_init(&p);
    assert_int_equal(fl_act_flatten_create(&in, &l), 0);
    assert_int_equal(l->out.ndim, 1);
    assert_int_equal(l->out.d[0], 24);
    check_layer(l, &p, 2, &o);
    assert_int_equal(fl_act_create((fl_act_kind_t)99, &in, &l), FL_EINVAL);
}

static void test_grad_dropout(void **state)
{
    (void)state;
    fl_params_t p;
    fl_layer_t *l;
    fl_gc_opts_t o = fl_gc_defaults();
    fl_shape_t in = {.ndim = 1, .d = {40}};
    fl_params_init(&p);
    assert_int_equal(fl_dropout_create(&in, 0.5f, &l), 0);
    check_layer(l, &p, 4, &o);
    assert_int_equal(fl_dropout_create(&in, 1.0f, &l), FL_EINVAL);
    assert_int_equal(fl_dropout_create(&in, -0.1f, &l), FL_EINVAL);
}

static void test_dropout_statistics(void **state)
{
    (void)state;
    fl_layer_t *l;
    fl_shape_t in = {.ndim = 1, .d = {1000}};
    assert_int_equal(fl_dropout_create(&in, 0.25f, &l), 0);
    assert_int_equal(l->ops->reserve(l, 10), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 9);
    l->rng = &r;
    float *x = malloc(10000 * sizeof(float)), *y = malloc(10000 * sizeof(float)),
          *y2 = malloc(10000 * sizeof(float));
    for (int i = 0; i < 10000; i++)
        x[i] = 1.0f;
    l->ops->forward(l, x, y, 10, FL_MODE_TRAIN);
    size_t zeros = 0;
    for (int i = 0; i < 10000; i++) {
        if (y[i] == 0.0f)
            zeros++;
        else
            assert_float_equal(y[i], 1.0f / 0.75f, 1e-6);
    }
    /* 25% of 10,000: the binomial sd is 43, so +-250 cannot fail by chance. */
    assert_in_range(zeros, 2250, 2750);
    /* Same stream, same mask; evaluation is the identity. */
    fl_rng_seed(&r, 9);
    l->ops->forward(l, x, y2, 10, FL_MODE_TRAIN);
    assert_memory_equal(y, y2, 10000 * sizeof(float));
    l->ops->forward(l, x, y2, 10, FL_MODE_EVAL);
    for (int i = 0; i < 10000; i++)
        assert_float_equal(y2[i], 1.0f, 0);
    free(x);
    free(y);
    free(y2);
    fl_layer_free(l);
}

/* The layer against the plain definition, bit for bit, for a fixed seed:
 * element i is kept iff the i-th 32-bit draw u of the stream has
 * u >= p * 2^32, a kept x becomes x * 1/(1-p) and a dropped one +0.0; the
 * gradient is dy with the same mask and scale. Sizes cross the layer's
 * internal blocks of draws, inputs hold negatives, -0.0, infinities and a
 * NaN (where a multiply by a 0/scale mask would differ), and a second
 * forward must continue the stream where the first left it. */
static void test_dropout_matches_definition(void **state)
{
    (void)state;
    static const float ps[] = {0.25f, 0.5f, 0.3f};
    static const size_t dims[] = {1, 7, 1000, 3001};
    for (size_t pi = 0; pi < sizeof ps / sizeof ps[0]; pi++)
        for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
            const float p = ps[pi];
            const size_t dim = dims[di], n = 3, m = n * dim;
            fl_shape_t in = {.ndim = 1, .d = {dim}};
            fl_layer_t *l;
            assert_int_equal(fl_dropout_create(&in, p, &l), 0);
            assert_int_equal(l->ops->reserve(l, n), 0);
            fl_rng_t r, ref;
            fl_rng_seed(&r, 77 + di);
            ref = r;
            l->rng = &r;
            float *x = malloc(m * sizeof(float)), *y = malloc(m * sizeof(float)),
                  *dy = malloc(m * sizeof(float)), *dx = malloc(m * sizeof(float)),
                  *want = malloc(m * sizeof(float));
            assert_non_null(x && y && dy && dx && want);
            fl_rng_t data;
            fl_rng_seed(&data, 5);
            for (size_t i = 0; i < m; i++) {
                x[i] = (float)fl_rng_uniform(&data) * 4.0f - 2.0f;
                dy[i] = (float)fl_rng_uniform(&data) * 2.0f - 1.0f;
            }
            x[0] = -0.0f;
            dy[0] = -0.0f;
            if (m > 4) {
                x[1] = INFINITY;
                x[2] = -INFINITY;
                x[3] = NAN;
                dy[1] = -INFINITY;
            }
            const float scale = 1.0f / (1.0f - p);
            for (int pass = 0; pass < 2; pass++) {
                uint8_t *keep = malloc(m);
                assert_non_null(keep);
                l->ops->forward(l, x, y, n, FL_MODE_TRAIN);
                for (size_t i = 0; i < m; i++) {
                    keep[i] = (double)fl_rng_u32(&ref) >= (double)p * 4294967296.0;
                    want[i] = keep[i] ? x[i] * scale : 0.0f;
                }
                assert_memory_equal(y, want, m * sizeof(float));
                l->ops->backward(l, x, y, dy, dx, n);
                for (size_t i = 0; i < m; i++)
                    want[i] = keep[i] ? dy[i] * scale : 0.0f;
                assert_memory_equal(dx, want, m * sizeof(float));
                assert_memory_equal(r.s, ref.s, sizeof r.s);
                free(keep);
            }
            free(x);
            free(y);
            free(dy);
            free(dx);
            free(want);
            fl_layer_free(l);
        }
}

static void grad_conv2d(int dnnl)
{
    fl_params_t p;
    fl_layer_t *l;
    fl_gc_opts_t o = fl_gc_defaults();
    fl__conv2d_set_dnnl(dnnl ? 2 : 1);
    static const struct {
        int cin, h, w, cout, k, stride, pad, bias;
    } cases[] = {
        {2, 5, 6, 3, 3, 1, 0, 1}, /* the cnn's shape, small */
        {2, 6, 5, 2, 3, 2, 1, 1}, /* stride and padding */
        {3, 4, 4, 2, 1, 1, 0, 0}, /* 1x1 without bias (the GEMM-only path) */
        {1, 7, 7, 2, 5, 2, 2, 1},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        fl_params_init(&p);
        fl_shape_t in = {.ndim = 3, .d = {cases[t].cin, cases[t].h, cases[t].w}};
        assert_int_equal(fl_conv2d_create(&p, "conv", &in, cases[t].cout, cases[t].k,
                                          cases[t].stride, cases[t].pad, cases[t].bias, &l),
                         0);
        int64_t ho = (cases[t].h + 2 * cases[t].pad - cases[t].k) / cases[t].stride + 1;
        assert_int_equal(fl__conv2d_uses_dnnl(l), dnnl);
        assert_int_equal(l->out.d[0], cases[t].cout);
        assert_int_equal(l->out.d[1], ho);
        assert_int_equal(p.views[0].ndim, 4);
        assert_int_equal(p.views[0].shape[1], cases[t].cin);
        check_layer(l, &p, 2, &o);
    }
    /* A batch lowered one example at a time (the chunking path of big layers). */
    fl__conv2d_set_col_cap(1);
    fl_params_init(&p);
    fl_shape_t in3 = {.ndim = 3, .d = {2, 5, 5}};
    assert_int_equal(fl_conv2d_create(&p, "conv", &in3, 3, 3, 1, 1, 1, &l), 0);
    check_layer(l, &p, 3, &o);
    fl__conv2d_set_col_cap(0);
    fl_params_init(&p);
    fl_shape_t tiny = {.ndim = 3, .d = {1, 2, 2}}, flat = {.ndim = 1, .d = {4}};
    assert_int_equal(fl_conv2d_create(&p, "c", &tiny, 4, 3, 1, 0, 1, &l), FL_EINVAL);
    assert_int_equal(fl_conv2d_create(&p, "c", &flat, 4, 1, 1, 0, 1, &l), FL_EINVAL);
    assert_null(l);
    fl_params_free(&p);
    fl__conv2d_set_dnnl(0);
}

/* The finite-difference check on conv2d's own path and, where it is built
 * in, on oneDNN's (common/nn/dnnl.h). */
static void test_grad_conv2d(void **state)
{
    (void)state;
    grad_conv2d(0);
    if (fl__dnnl_available()) {
        grad_conv2d(1);
        /* oneDNN's Winograd on every 3x3 stride-1 case (the default takes
         * it only with 16+ channels each side). */
        fl__dnnl_set_winograd(2);
        grad_conv2d(1);
        fl__dnnl_set_winograd(0);
    }
}

/* Winograd layers (forced on small shapes, and the size the cnn uses) pass
 * the finite-difference check: odd and even sides, padding 0 to 2, and a
 * batch in several chunks. */
static void test_grad_conv2d_winograd(void **state)
{
    (void)state;
    fl_params_t p;
    fl_layer_t *l;
    fl_gc_opts_t o = fl_gc_defaults();
    static const struct {
        int cin, h, w, cout, pad, bias;
    } cases[] = {
        {2, 5, 6, 3, 0, 1}, {3, 6, 6, 2, 1, 1}, {2, 4, 7, 2, 2, 0}, {1, 3, 3, 2, 1, 1},
    };
    fl__conv2d_set_winograd(2);
    fl__conv2d_set_dnnl(1);
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        fl_params_init(&p);
        fl_shape_t in = {.ndim = 3, .d = {cases[t].cin, cases[t].h, cases[t].w}};
        assert_int_equal(fl_conv2d_create(&p, "conv", &in, cases[t].cout, 3, 1, cases[t].pad,
                                          cases[t].bias, &l),
                         0);
        assert_true(fl__conv2d_uses_winograd(l));
        check_layer(l, &p, 2, &o);
    }
    fl__conv2d_set_col_cap(1); /* Winograd chunks of at most 2 examples */
    fl_params_init(&p);
    fl_shape_t in3 = {.ndim = 3, .d = {2, 5, 5}};
    assert_int_equal(fl_conv2d_create(&p, "conv", &in3, 3, 3, 1, 1, 1, &l), 0);
    check_layer(l, &p, 5, &o);
    fl__conv2d_set_col_cap(0);
    fl__conv2d_set_winograd(0);
    fl__conv2d_set_dnnl(0);
}

/* Runs one conv layer forward and backward on x and dy with fixed
 * parameters; out[0..3] get y, dx, dW and db (the caller frees them). */
static void conv_run(int mode, const fl_shape_t *in, int cout, int pad, size_t n, const float *x,
                     const float *dy, float *out[4], int *used_winograd)
{
    fl_params_t p, g;
    fl_layer_t *l;
    /* mode 3: on oneDNN; otherwise conv2d's own path, Winograd as
     * fl__conv2d_set_winograd(mode) says. */
    fl__conv2d_set_winograd(mode == 3 ? 0 : mode);
    fl__conv2d_set_dnnl(mode == 3 ? 2 : 1);
    fl_params_init(&p);
    fl_params_init(&g);
    assert_int_equal(fl_conv2d_create(&p, "c", in, cout, 3, 1, pad, 1, &l), 0);
    fl__conv2d_set_winograd(0);
    fl__conv2d_set_dnnl(0);
    assert_int_equal(fl__conv2d_uses_dnnl(l), mode == 3);
    *used_winograd = fl__conv2d_uses_winograd(l);
    assert_int_equal(fl_params_alloc(&p), 0);
    assert_int_equal(fl_params_clone_layout(&g, &p), 0);
    fl_layer_bind(l, &p, &g);
    assert_int_equal(l->ops->reserve(l, n), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 11);
    l->ops->init(l, &r);
    memset(g.data, 0, g.numel * sizeof(float));
    out[0] = malloc(n * l->out_dim * sizeof(float));
    out[1] = malloc(n * l->in_dim * sizeof(float));
    out[2] = malloc(p.views[0].numel * sizeof(float));
    out[3] = malloc((size_t)cout * sizeof(float));
    l->ops->forward(l, x, out[0], n, FL_MODE_TRAIN);
    l->ops->backward(l, x, out[0], dy, out[1], n);
    if (mode == 3)
        print_message("conv %d->%d on %dx%d: oneDNN %s\n", (int)in->d[0], cout, (int)in->d[1],
                      (int)in->d[2], fl__conv2d_dnnl_impl(l));
    memcpy(out[2], l->g[0], p.views[0].numel * sizeof(float));
    memcpy(out[3], l->g[1], (size_t)cout * sizeof(float));
    fl_layer_free(l);
    fl_params_free(&p);
    fl_params_free(&g);
}

/* Winograd and im2col give the same output and gradients within float
 * rounding, on layers as wide as the models' (where the default picks
 * Winograd) and on odd-sized maps. */
static void test_conv2d_winograd_matches_im2col(void **state)
{
    (void)state;
    static const struct {
        int cin, h, w, cout, pad;
        size_t n;
        int chunks; /* force small chunks */
    } cases[] = {
        {32, 26, 26, 64, 0, 3, 0}, /* cnn's conv2 */
        {16, 7, 9, 24, 1, 5, 0},   /* odd sides, padding, several examples per chunk */
        {17, 6, 5, 16, 2, 3, 1},   /* padding 2, chunks of 2 */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        fl_shape_t in = {.ndim = 3, .d = {cases[t].cin, cases[t].h, cases[t].w}};
        int ho = cases[t].h + 2 * cases[t].pad - 2, wo = cases[t].w + 2 * cases[t].pad - 2;
        size_t n = cases[t].n, nx = n * cases[t].cin * cases[t].h * cases[t].w,
               ny = n * (size_t)cases[t].cout * ho * wo;
        float *x = malloc(nx * sizeof(float)), *dy = malloc(ny * sizeof(float));
        fl_rng_t r;
        fl_rng_seed(&r, 5 + t);
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)fl_rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            dy[i] = (float)fl_rng_normal(&r);
        float *a[4], *b[4];
        int wa, wb;
        if (cases[t].chunks)
            fl__conv2d_set_col_cap(1);
        conv_run(1, &in, cases[t].cout, cases[t].pad, n, x, dy, a, &wa);
        conv_run(0, &in, cases[t].cout, cases[t].pad, n, x, dy, b, &wb);
        fl__conv2d_set_col_cap(0);
        assert_false(wa);
        assert_true(wb); /* wide enough for the default to choose it */
        size_t len[4] = {ny, nx, (size_t)cases[t].cout * cases[t].cin * 9,
                         (size_t)cases[t].cout};
        for (int k = 0; k < 4; k++) {
            double big = 0, err = 0;
            for (size_t i = 0; i < len[k]; i++) {
                big = fmax(big, fabs(a[k][i]));
                err = fmax(err, fabs((double)a[k][i] - b[k][i]));
            }
            assert_true(big > 0);
            if (err > 1e-5 * big)
                fail_msg("case %zu, result %d: max difference %g against max %g", t, k, err,
                         big);
            free(a[k]);
            free(b[k]);
        }
        free(x);
        free(dy);
    }
    /* The default keeps im2col where Winograd would not pay. */
    fl_params_t p;
    fl_layer_t *l;
    fl_params_init(&p);
    fl_shape_t thin = {.ndim = 3, .d = {1, 28, 28}}, small = {.ndim = 3, .d = {64, 3, 3}};
    assert_int_equal(fl_conv2d_create(&p, "c", &thin, 32, 3, 1, 0, 1, &l), 0);
    assert_false(fl__conv2d_uses_winograd(l)); /* cnn's conv1: K = 1 GEMMs */
    fl_layer_free(l);
    assert_int_equal(fl_conv2d_create(&p, "d", &small, 64, 3, 1, 1, 1, &l), 0);
    assert_false(fl__conv2d_uses_winograd(l)); /* 3x3 maps: tiles mostly empty */
    fl_layer_free(l);
    fl_params_free(&p);
}

/* oneDNN and conv2d's own path (Winograd where it chooses it) give the
 * same output and gradients within float rounding, on the models' conv
 * shapes, padding, stride-1 odd maps, and batch sizes that change between
 * calls (its primitives are made per batch size). */
static void test_conv2d_dnnl_matches(void **state)
{
    (void)state;
    if (!fl__dnnl_available())
        skip();
    static const struct {
        int cin, h, w, cout, pad;
        size_t n;
    } cases[] = {
        {1, 28, 28, 32, 0, 20}, /* cnn's conv1 */
        {32, 26, 26, 64, 0, 3}, /* cnn's conv2 */
        {16, 7, 9, 24, 1, 5},
        {3, 24, 24, 64, 1, 2},  /* resnet18gn's stem */
        {64, 6, 6, 64, 1, 7},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        fl_shape_t in = {.ndim = 3, .d = {cases[t].cin, cases[t].h, cases[t].w}};
        int ho = cases[t].h + 2 * cases[t].pad - 2, wo = cases[t].w + 2 * cases[t].pad - 2;
        size_t n = cases[t].n, nx = n * cases[t].cin * cases[t].h * cases[t].w,
               ny = n * (size_t)cases[t].cout * ho * wo;
        float *x = malloc(nx * sizeof(float)), *dy = malloc(ny * sizeof(float));
        fl_rng_t r;
        fl_rng_seed(&r, 50 + t);
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)fl_rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            dy[i] = (float)fl_rng_normal(&r);
        float *a[4], *b[4];
        int wa, wb;
        conv_run(0, &in, cases[t].cout, cases[t].pad, n, x, dy, a, &wa);
        size_t len[4] = {ny, nx, (size_t)cases[t].cout * cases[t].cin * 9,
                         (size_t)cases[t].cout};
        /* oneDNN's default (Winograd on the wide 3x3 layers), then direct
         * only (fl__dnnl_set_winograd). */
        for (int direct = 0; direct < 2; direct++) {
            fl__dnnl_set_winograd(direct);
            conv_run(3, &in, cases[t].cout, cases[t].pad, n, x, dy, b, &wb);
            fl__dnnl_set_winograd(0);
            for (int k = 0; k < 4; k++) {
                double big = 0, err = 0;
                for (size_t i = 0; i < len[k]; i++) {
                    big = fmax(big, fabs(a[k][i]));
                    err = fmax(err, fabs((double)a[k][i] - b[k][i]));
                }
                assert_true(big > 0);
                if (err > 1e-5 * big)
                    fail_msg("case %zu, %s, result %d: max difference %g against max %g", t,
                             direct ? "direct" : "default", k, err, big);
                free(b[k]);
            }
        }
        for (int k = 0; k < 4; k++)
            free(a[k]);
        free(x);
        free(dy);
    }
}

/* A convolution against the definition, with padding and stride. */
static void conv2d_values(int dnnl)
{
    fl_params_t p, g;
    fl_layer_t *l;
    fl_params_init(&p);
    fl_params_init(&g);
    fl_shape_t in = {.ndim = 3, .d = {2, 5, 4}};
    fl__conv2d_set_dnnl(dnnl ? 2 : 1);
    assert_int_equal(fl_conv2d_create(&p, "c", &in, 3, 3, 2, 1, 1, &l), 0);
    fl__conv2d_set_dnnl(0);
    assert_int_equal(fl__conv2d_uses_dnnl(l), dnnl);
    assert_int_equal(fl_params_alloc(&p), 0);
    assert_int_equal(fl_params_clone_layout(&g, &p), 0);
    fl_layer_bind(l, &p, &g);
    assert_int_equal(l->ops->reserve(l, 1), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 4);
    l->ops->init(l, &r);
    float x[40], y[3 * 3 * 2];
    for (int i = 0; i < 40; i++)
        x[i] = (float)fl_rng_normal(&r);
    l->ops->forward(l, x, y, 1, FL_MODE_EVAL);
    assert_int_equal(l->out.d[1], 3);
    assert_int_equal(l->out.d[2], 2);
    for (int o = 0; o < 3; o++)
        for (int oh = 0; oh < 3; oh++)
            for (int ow = 0; ow < 2; ow++) {
                double s = l->p[1][o];
                for (int c = 0; c < 2; c++)
                    for (int ki = 0; ki < 3; ki++)
                        for (int kj = 0; kj < 3; kj++) {
                            int ih = oh * 2 - 1 + ki, iw = ow * 2 - 1 + kj;
                            if (ih >= 0 && ih < 5 && iw >= 0 && iw < 4)
                                s += (double)l->p[0][((o * 2 + c) * 3 + ki) * 3 + kj] *
                                     x[(c * 5 + ih) * 4 + iw];
                        }
                assert_float_equal(y[(o * 3 + oh) * 2 + ow], s, 1e-5);
            }
    fl_layer_free(l);
    fl_params_free(&p);
    fl_params_free(&g);
}

static void test_conv2d_values(void **state)
{
    (void)state;
    conv2d_values(0);
    if (fl__dnnl_available())
        conv2d_values(1);
}

/* cnn pools before its ReLU (common/nn/models.c): the same values and
 * gradients, bit for bit, as PyTorch's ReLU-then-pool, including windows
 * that are all negative, hold zeros, or tie. */
static void test_pool_relu_commute(void **state)
{
    (void)state;
    fl_shape_t in = {.ndim = 3, .d = {3, 6, 6}};
    fl_layer_t *relu_a, *pool_a, *pool_b, *relu_b;
    assert_int_equal(fl_act_create(FL_ACT_RELU, &in, &relu_a), 0);
    assert_int_equal(fl_pool_max_create(&in, 2, 2, &pool_a), 0);
    assert_int_equal(fl_pool_max_create(&in, 2, 2, &pool_b), 0);
    assert_int_equal(fl_act_create(FL_ACT_RELU, &pool_b->out, &relu_b), 0);
    const size_t n = 4, nin = n * 108, nout = n * 27;
    fl_layer_t *all[4] = {relu_a, pool_a, pool_b, relu_b};
    for (int i = 0; i < 4; i++)
        assert_int_equal(all[i]->ops->reserve ? all[i]->ops->reserve(all[i], n) : 0, 0);
    float x[4 * 108], r[4 * 108], ya[4 * 27], p[4 * 27], yb[4 * 27], dy[4 * 27];
    float dr[4 * 108], dxa[4 * 108], dp[4 * 27], dxb[4 * 108];
    fl_rng_t g;
    fl_rng_seed(&g, 8);
    for (size_t i = 0; i < nin; i++) /* few values: ties, zeros and negatives */
        x[i] = (float)((int)fl_rng_below(&g, 7) - 4) * 0.5f;
    for (size_t i = 0; i < nout; i++)
        dy[i] = (float)fl_rng_normal(&g);
    relu_a->ops->forward(relu_a, x, r, n, FL_MODE_TRAIN);
    pool_a->ops->forward(pool_a, r, ya, n, FL_MODE_TRAIN);
    pool_b->ops->forward(pool_b, x, p, n, FL_MODE_TRAIN);
    relu_b->ops->forward(relu_b, p, yb, n, FL_MODE_TRAIN);
    assert_memory_equal(ya, yb, sizeof ya);
    pool_a->ops->backward(pool_a, r, ya, dy, dr, n);
    relu_a->ops->backward(relu_a, x, r, dr, dxa, n);
    relu_b->ops->backward(relu_b, p, yb, dy, dp, n);
    pool_b->ops->backward(pool_b, x, p, dp, dxb, n);
    assert_memory_equal(dxa, dxb, sizeof dxa);
    size_t nonzero = 0;
    for (size_t i = 0; i < nin; i++)
        nonzero += dxa[i] != 0.0f;
    assert_true(nonzero > 20); /* the comparison is not of two zero arrays */
    for (int i = 0; i < 4; i++)
        fl_layer_free(all[i]);
}

/* The 2x2/2 pool over 3 examples of 2 channels h x w (h, w <= 6) against
 * the general rule: the first maximum in row-major window order wins ties,
 * a NaN never wins but stays when it comes first, and the gradient goes to
 * the winner only (every other input position gets exactly zero). */
static void check_pool_2x2(int h, int w)
{
    const int hw = h * w, ex = 2 * hw, ho = h / 2, wo = w / 2, out = 2 * ho * wo;
    fl_shape_t t = {.ndim = 3, .d = {2, h, w}};
    fl_layer_t *l;
    assert_int_equal(fl_pool_max_create(&t, 2, 2, &l), 0);
    assert_int_equal(l->ops->reserve(l, 3), 0);
    float xt[3 * 72], yt[3 * 18], dyt[3 * 18], dxt[3 * 72], want_dx[3 * 72] = {0};
    for (int i = 0; i < 3 * ex; i++) {
        xt[i] = (float)(((i / 2) * 7 + i / 6) % 3); /* ties in every window row */
        dxt[i] = NAN;                                /* backward must overwrite all */
    }
    xt[0] = NAN; /* first in its window: the output is NaN */
    xt[3] = NAN; /* second in its window: never wins */
    xt[ex + 2] = 9.0f;
    for (int i = 0; i < 3 * out; i++)
        dyt[i] = (float)(i + 1);
    dyt[1] = -0.0f; /* stored as +0, as 0 + (-0) is */
    l->ops->forward(l, xt, yt, 3, FL_MODE_TRAIN);
    l->ops->backward(l, xt, yt, dyt, dxt, 3);
    for (int e = 0; e < 3; e++)
        for (int c = 0; c < 2; c++)
            for (int oh = 0; oh < ho; oh++)
                for (int ow = 0; ow < wo; ow++) {
                    int best = -1;
                    for (int k = 0; k < 4; k++) {
                        int idx = e * ex + c * hw + (2 * oh + k / 2) * w + 2 * ow + k % 2;
                        if (best < 0 || xt[idx] > xt[best])
                            best = idx;
                    }
                    int o = e * out + c * ho * wo + oh * wo + ow;
                    if (isnan(xt[best]))
                        assert_true(isnan(yt[o]));
                    else
                        assert_true(yt[o] == xt[best]);
                    want_dx[best] += dyt[o];
                }
    assert_memory_equal(dxt, want_dx, (size_t)(3 * ex) * sizeof(float));
    fl_layer_free(l);
}

static void test_grad_maxpool(void **state)
{
    (void)state;
    fl_params_t p;
    fl_layer_t *l;
    fl_gc_opts_t o = fl_gc_defaults();
    fl_shape_t in = {.ndim = 3, .d = {2, 6, 5}};
    fl_params_init(&p);
    assert_int_equal(fl_pool_max_create(&in, 2, 2, &l), 0);
    assert_int_equal(l->out.d[1], 3);
    assert_int_equal(l->out.d[2], 2);
    check_layer(l, &p, 3, &o);
    fl_params_init(&p);
    assert_int_equal(fl_pool_max_create(&in, 3, 1, &l), 0); /* overlapping windows */
    check_layer(l, &p, 2, &o);
    /* Values: the max of each window. */
    fl_shape_t s = {.ndim = 3, .d = {1, 2, 4}};
    assert_int_equal(fl_pool_max_create(&s, 2, 2, &l), 0);
    assert_int_equal(l->ops->reserve(l, 1), 0);
    float x[8] = {1, 5, -1, -2, 3, 2, -3, -4}, y[2];
    l->ops->forward(l, x, y, 1, FL_MODE_TRAIN);
    assert_float_equal(y[0], 5, 0);
    assert_float_equal(y[1], -1, 0);
    fl_layer_free(l);
    /* The 2x2/2 fast paths against the general rule: odd height (the last
     * row is outside every window, and backward takes the general path)
     * and even sides (the one-pass backward). */
    check_pool_2x2(5, 6);
    check_pool_2x2(6, 6);
    /* A 2x2/2 pool with even sides also passes the finite-difference check. */
    fl_shape_t e = {.ndim = 3, .d = {2, 6, 4}};
    fl_params_init(&p);
    assert_int_equal(fl_pool_max_create(&e, 2, 2, &l), 0);
    check_layer(l, &p, 3, &o);
}

/* The checker must catch a wrong gradient: a dense layer whose backward
 * reports 3% too much weight gradient fails it. */
static const fl_layer_ops_t *real_dense_ops;
static void skewed_backward(fl_layer_t *l, const float *x, const float *y, const float *dy,
                            float *dx, size_t n)
{
    real_dense_ops->backward(l, x, y, dy, dx, n);
    l->g[0][1] *= 1.03f;
}

static void test_gradcheck_catches_errors(void **state)
{
    (void)state;
    fl_params_t p;
    fl_layer_t *l;
    fl_params_init(&p);
    fl_shape_t in = {.ndim = 1, .d = {6}};
    assert_int_equal(fl_dense_create(&p, "fc", &in, 3, 1, &l), 0);
    real_dense_ops = l->ops;
    fl_layer_ops_t skewed = *l->ops;
    skewed.backward = skewed_backward;
    l->ops = &skewed;
    fl_gc_opts_t o = fl_gc_defaults();
    fl_gc_result_t res;
    assert_int_equal(fl_gc_layer(l, &p, 4, &o, &res), -1);
    assert_int_equal(res.failed, 1);
    l->ops = real_dense_ops;
    fl_layer_free(l);
    fl_params_free(&p);
}

/* ---- losses ---- */

static void test_losses(void **state)
{
    (void)state;
    /* Softmax CE on known values: logits {0, ln 3} -> p = {1/4, 3/4}. */
    float z[4] = {0.0f, logf(3.0f), 2.0f, 2.0f};
    int32_t y[2] = {1, -1}; /* second row is padding */
    float g[4];
    fl_loss_stats_t st = {0, 0};
    double L = fl_loss_softmax_ce(z, 2, 2, y, g, &st);
    assert_float_equal(L, -log(0.75), 1e-6);
    assert_float_equal(g[0], 0.25f, 1e-6);
    assert_float_equal(g[1], -0.25f, 1e-6);
    assert_float_equal(g[2], 0.0f, 0);
    assert_float_equal(st.hits, 1, 0);
    assert_float_equal(st.total, 1, 0);
    /* Large logits do not overflow. */
    float big[2] = {1000.0f, -1000.0f};
    int32_t y0 = 1;
    L = fl_loss_softmax_ce(big, 1, 2, &y0, g, NULL);
    assert_float_equal(L, 2000.0, 1e-3);
    /* BCE: logit 0 gives ln 2 whatever the target. */
    float zb[6] = {0, 0, 0, 0, 0, 0};
    int32_t tb[6] = {1, 0, 1, 0, 0, 0};
    float gb[6];
    L = fl_loss_sigmoid_bce(zb, 1, 6, tb, gb, NULL);
    assert_float_equal(L, log(2.0), 1e-9);
    /* recall@5: tags at 0 and 5, logits rank tag 5 last of 6 -> 1 of 2. */
    float zr[6] = {5, 4, 3, 2, 1, 0};
    int32_t tr[6] = {1, 0, 0, 0, 0, 1};
    fl_loss_stats_t rs = {0, 0};
    fl_loss_sigmoid_bce(zr, 1, 6, tr, NULL, &rs);
    assert_float_equal(rs.hits, 1, 0);
    assert_float_equal(rs.total, 2, 0);
    /* MSE */
    float o[3] = {1, 2, 3}, t[3] = {1, 0, 0}, gm[3];
    L = fl_loss_mse(o, t, 1, 3, gm);
    assert_float_equal(L, 13.0 / 3.0, 1e-9);
    assert_float_equal(gm[1], 4.0f / 3.0f, 1e-6);
}

/* Finite differences of each loss in its input. */
static void test_grad_losses(void **state)
{
    (void)state;
    fl_rng_t r;
    fl_rng_seed(&r, 5);
    enum { N = 3, C = 7 };
    float z[N * C], g[N * C];
    int32_t yc[N] = {2, -1, 6}, yb[N * C];
    for (int i = 0; i < N * C; i++) {
        z[i] = (float)fl_rng_normal(&r);
        yb[i] = fl_rng_u32(&r) & 1;
    }
    for (int kind = 0; kind < 3; kind++) {
        float tgt[N * C];
        for (int i = 0; i < N * C; i++)
            tgt[i] = (float)fl_rng_uniform(&r);
#define LOSS(buf, grad)                                                                      \
    (kind == 0   ? fl_loss_softmax_ce(buf, N, C, yc, grad, NULL)                             \
     : kind == 1 ? fl_loss_sigmoid_bce(buf, N, C, yb, grad, NULL)                            \
                 : fl_loss_mse(buf, tgt, N, C, grad))
        LOSS(z, g);
        for (int i = 0; i < N * C; i++) {
            float keep = z[i];
            z[i] = keep + 1e-3f;
            double lp = LOSS(z, NULL);
            z[i] = keep - 1e-3f;
            double lm = LOSS(z, NULL);
            z[i] = keep;
            double num = (lp - lm) / 2e-3;
            assert_true(fabs(num - g[i]) <= 1e-4 + 1e-2 * fabs(g[i]));
        }
#undef LOSS
    }
}

/* ---- models ---- */

static void random_batch(const fl_model_t *m, size_t n, float *x, int32_t *y, uint64_t seed)
{
    fl_rng_t r;
    fl_rng_seed(&r, seed);
    for (size_t i = 0; i < n * fl_model_in_dim(m); i++)
        x[i] = (float)fl_rng_uniform(&r);
    for (size_t i = 0; i < n * m->spec.label_dim; i++)
        y[i] = m->info->loss == FL_LOSS_SIGMOID_BCE ? (int32_t)(fl_rng_u32(&r) & 1)
                                                    : (int32_t)fl_rng_below(&r, (uint64_t)m->spec.num_classes);
}

static void check_model(const char *name, fl_model_spec_t spec, size_t n, size_t max_per_tensor)
{
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create(name, &spec, &m), 0);
    fl_model_init_params(m, 11);
    float *x = malloc(n * fl_model_in_dim(m) * sizeof(float));
    int32_t *y = malloc(n * spec.label_dim * sizeof(int32_t));
    assert_non_null(x);
    assert_non_null(y);
    random_batch(m, n, x, y, 12);
    fl_gc_opts_t o = fl_gc_defaults();
    o.max_per_tensor = max_per_tensor;
    fl_gc_result_t res;
    int rc = fl_gc_model(m, x, y, n, &o, &res);
    assert_int_equal(res.failed, 0);
    assert_true(res.checked > 0);
    assert_int_equal(rc, 0);
    free(x);
    free(y);
    fl_model_free(m);
}

static void test_grad_models(void **state)
{
    (void)state;
    fl_model_spec_t img = {.input = {.ndim = 3, .d = {1, 5, 5}}, .num_classes = 4, .label_dim = 1};
    check_model("logreg", img, 3, 0);
    check_model("mlp", img, 3, 40);
    check_model("autoencoder", img, 2, 30);
    fl_model_spec_t img8 = {.input = {.ndim = 3, .d = {1, 8, 8}}, .num_classes = 3, .label_dim = 1};
    check_model("cnn", img8, 3, 40);
    fl_model_spec_t bow = {.input = {.ndim = 1, .d = {30}}, .num_classes = 8, .label_dim = 8};
    check_model("bowlr", bow, 3, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_matches_naive),
        cmocka_unit_test(test_gemm_long_rows),
        cmocka_unit_test(test_gemm_via_dnnl),
        cmocka_unit_test(test_gemm_timer),
        cmocka_unit_test(test_kernel_pick),
        cmocka_unit_test(test_grad_dense),
        cmocka_unit_test(test_grad_activations),
        cmocka_unit_test(test_grad_dropout),
        cmocka_unit_test(test_grad_conv2d),
        cmocka_unit_test(test_conv2d_values),
        cmocka_unit_test(test_grad_conv2d_winograd),
        cmocka_unit_test(test_conv2d_winograd_matches_im2col),
        cmocka_unit_test(test_conv2d_dnnl_matches),
        cmocka_unit_test(test_grad_maxpool),
        cmocka_unit_test(test_pool_relu_commute),
        cmocka_unit_test(test_gradcheck_catches_errors),
        cmocka_unit_test(test_dropout_statistics),
        cmocka_unit_test(test_dropout_matches_definition),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_grad_losses),
        cmocka_unit_test(test_grad_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
