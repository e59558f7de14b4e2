/* The sequence layers and models: gradient checks of the embedding (padding
 * row frozen) and the LSTM across several steps, the per-step loss with its
 * padding mask, the paper's parameter counts and PyTorch names of charlstm
 * and wordlstm, and a gradient check of both models on small shapes with
 * post-padded sequences. */
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
#include "common/nn/dnnl.h"
#include "common/nn/gemm.h"
#include "common/nn/embedding.h"
#include "common/nn/loss.h"
#include "common/nn/lstm.h"
#include "common/nn/safetensors.h"
#include "common/nn/train.h"
#include "tests/support/gradcheck.h"

/* Token ids in [0, vocab) with a good share of padding (id 0). */
static void gen_tokens(float *x, size_t n, uint64_t seed, void *ud)
{
    const int vocab = *(const int *)ud;
    fl_rng_t r;
    fl_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)fl_rng_below(&r, (uint64_t)vocab);
}

static void test_grad_embedding(void **state)
{
    (void)state;
    fl_params_t p;
    fl_params_init(&p);
    fl_layer_t *l = NULL;
    fl_shape_t in = {.ndim = 1, .d = {6}};
    assert_int_equal(fl_embedding_create(&p, "embed", &in, 5, 3, &l), 0);
    assert_int_equal(l->out.ndim, 2);
    assert_int_equal(l->out.d[0], 6);
    assert_int_equal(l->out.d[1], 3);
    assert_string_equal(p.views[0].name, "embed.weight");
    assert_int_equal(p.numel, 15);
    int vocab = 5;
    fl_gc_opts_t o = fl_gc_defaults();
    o.gen_input = gen_tokens;
    o.ud = &vocab;
    o.check_input = 0; /* token ids are not differentiable */
    fl_gc_result_t res;
    assert_int_equal(fl_gc_layer(l, &p, 4, &o, &res), 0);
    assert_int_equal(res.failed, 0);
    assert_int_equal(res.checked, 15);
    /* The padding row starts at zero and gets no gradient; a real id's row does. */
    float x[6] = {0, 1, 1, 4, 0, 7.5f}; /* 7.5: invalid, treated as padding */
    float y[18], dy[18], dx[6];
    /* fl_gc_layer freed its gradient buffer: bind a fresh one. */
    fl_params_t grads;
    fl_params_init(&grads);
    assert_int_equal(fl_params_clone_layout(&grads, &p), 0);
    fl_layer_bind(l, &p, &grads);
    l->ops->forward(l, x, y, 1, FL_MODE_TRAIN);
    for (int j = 0; j < 3; j++) {
        assert_true(l->p[0][j] == 0.0f);
        assert_true(y[j] == 0.0f && y[12 + j] == 0.0f && y[15 + j] == 0.0f);
        assert_true(y[3 + j] == l->p[0][3 + j]);
    }
    for (int i = 0; i < 18; i++)
        dy[i] = 1.0f;
    l->ops->backward(l, x, y, dy, dx, 1);
    for (int j = 0; j < 3; j++) {
        assert_true(l->g[0][j] == 0.0f);     /* pad */
        assert_true(l->g[0][3 + j] == 2.0f); /* id 1 twice */
        assert_true(l->g[0][12 + j] == 1.0f);
        assert_true(l->g[0][6 + j] == 0.0f); /* id 2 unused */
    }
    fl_params_free(&grads);
    fl_layer_free(l);
    fl_params_free(&p);
}

/* On both backends of the cell's products (common/nn/gemm.h): fl_gemm's
 * own path (mode 1) and oneDNN's sgemm where it is built in (mode 2). */
static void test_grad_lstm(void **state)
{
    (void)state;
    /* T = 5 steps: the check sees gradients flow back through 4 recurrences. */
    for (int k = 0; k < 4; k++) {
        if (k >= 2 && !fl__dnnl_available())
            break;
        fl__gemm_set_dnnl(k < 2 ? 1 : 2);
        const int layer = k % 2;
        fl_params_t p;
        fl_params_init(&p);
        fl_layer_t *l = NULL;
        fl_shape_t in = {.ndim = 2, .d = {5, 3}};
        assert_int_equal(fl_lstm_create(&p, "lstm", &in, 4, layer, &l), 0);
        assert_int_equal(l->out.d[0], 5);
        assert_int_equal(l->out.d[1], 4);
        assert_int_equal(p.nviews, 3);
        char want[32];
        snprintf(want, sizeof want, "lstm.weight_ih_l%d", layer);
        assert_string_equal(p.views[0].name, want);
        assert_int_equal(p.views[0].shape[0], 16);
        assert_int_equal(p.views[0].shape[1], 3);
        snprintf(want, sizeof want, "lstm.weight_hh_l%d", layer);
        assert_string_equal(p.views[1].name, want);
        assert_int_equal(p.views[1].shape[1], 4);
        snprintf(want, sizeof want, "lstm.bias_ih_l%d", layer);
        assert_string_equal(p.views[2].name, want);
        assert_int_equal(p.numel, 4 * (3 * 4 + 4 * 4 + 4));
        fl_gc_opts_t o = fl_gc_defaults();
        o.seed = 40 + (uint64_t)layer;
        o.eps = 3e-3; /* smooth everywhere: a wider step beats float32 rounding */
        o.atol = 3e-4;
        fl_gc_result_t res;
        assert_int_equal(fl_gc_layer(l, &p, 3, &o, &res), 0);
        assert_int_equal(res.failed, 0);
        /* Every element compared; the harness allows at most a tenth "kinks"
         * (float32 noise in the one-sided slopes of this smooth function). */
        assert_int_equal(res.checked + res.skipped, 3 * 15 + p.numel);
        fl_layer_free(l);
        fl_params_free(&p);
    }
    fl__gemm_set_dnnl(0);
}

/* The LSTM against a direct step-by-step evaluation of PyTorch's equations,
 * one example at a time, in double. */
static void lstm_matches_equations(int mode);

static void test_lstm_matches_equations(void **state)
{
    (void)state;
    lstm_matches_equations(1);
    if (fl__dnnl_available())
        lstm_matches_equations(2);
}

static void lstm_matches_equations(int mode)
{
    enum { T = 4, D = 3, H = 2, N = 2 };
    fl__gemm_set_dnnl(mode);
    fl_params_t p;
    fl_params_init(&p);
    fl_layer_t *l = NULL;
    fl_shape_t in = {.ndim = 2, .d = {T, D}};
    assert_int_equal(fl_lstm_create(&p, "lstm", &in, H, 0, &l), 0);
    assert_int_equal(fl_params_alloc(&p), 0);
    fl_layer_bind(l, &p, NULL);
    assert_int_equal(l->ops->reserve(l, N), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 9);
    l->ops->init(l, &r);
    float x[N * T * D], y[N * T * H];
    for (int i = 0; i < N * T * D; i++)
        x[i] = (float)fl_rng_normal(&r);
    l->ops->forward(l, x, y, N, FL_MODE_EVAL);
    const float *wih = l->p[0], *whh = l->p[1], *b = l->p[2];
    for (int e = 0; e < N; e++) {
        double h[H] = {0}, c[H] = {0};
        for (int t = 0; t < T; t++) {
            double g[4 * H], hn[H];
            for (int q = 0; q < 4 * H; q++) {
                double s = b[q];
                for (int d = 0; d < D; d++)
                    s += wih[q * D + d] * x[(e * T + t) * D + d];
                for (int j = 0; j < H; j++)
                    s += whh[q * H + j] * h[j];
                g[q] = s;
            }
            for (int j = 0; j < H; j++) {
                double ig = 1 / (1 + exp(-g[j])), fg = 1 / (1 + exp(-g[H + j]));
                double gg = tanh(g[2 * H + j]), og = 1 / (1 + exp(-g[3 * H + j]));
                c[j] = fg * c[j] + ig * gg;
                hn[j] = og * tanh(c[j]);
            }
            for (int j = 0; j < H; j++) {
                h[j] = hn[j];
                assert_true(fabs(y[(e * T + t) * H + j] - h[j]) < 1e-5);
            }
        }
    }
    fl_layer_free(l);
    fl_params_free(&p);
    fl__gemm_set_dnnl(0);
}

static void test_seq_loss_masks_padding(void **state)
{
    (void)state;
    enum { R = 4, C = 5 };
    float z[R * C], g[R * C], z2[R * C];
    fl_rng_t r;
    fl_rng_seed(&r, 2);
    for (int i = 0; i < R * C; i++)
        z2[i] = z[i] = (float)fl_rng_normal(&r);
    int32_t y[R] = {3, 0, 1, 0};
    fl_loss_stats_t st = {0, 0};
    double L = fl_loss_softmax_ce_pad(z, R, C, y, 0, g, &st);
    assert_true(st.total == 2.0);
    /* Pad rows: zero gradient, and their logits do not change the loss. */
    for (int j = 0; j < C; j++) {
        assert_true(g[C + j] == 0.0f && g[3 * C + j] == 0.0f);
        z2[C + j] += 3.0f;
        z2[3 * C + j] -= 1.0f;
    }
    assert_true(fabs(fl_loss_softmax_ce_pad(z2, R, C, y, 0, NULL, NULL) - L) < 1e-12);
    /* The mean is over the two counted rows: the same as the unmasked loss on them. */
    int32_t y2[2] = {3, 1};
    float zz[2 * C];
    memcpy(zz, z, C * sizeof(float));
    memcpy(zz + C, z + 2 * C, C * sizeof(float));
    assert_true(fabs(fl_loss_softmax_ce(zz, 2, C, y2, NULL, NULL) - L) < 1e-9);
    /* Nothing counted: loss 0. */
    int32_t yp[R] = {0, 0, 0, 0};
    assert_true(fl_loss_softmax_ce_pad(z, R, C, yp, 0, g, NULL) == 0.0);
}

/* Exact parameter counts and the first names of the paper's models. */
static void check_count(const char *name, fl_model_spec_t spec, size_t want, const char *first,
                        const char *last)
{
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create(name, &spec, &m), 0);
    fprintf(stderr, "%s: %zu parameters in %zu tensors\n", name, m->params.numel, m->params.nviews);
    assert_int_equal(m->params.numel, want);
    assert_string_equal(m->params.views[0].name, first);
    assert_string_equal(m->params.views[m->params.nviews - 1].name, last);
    fl_model_free(m);
}

static void test_seq_model_counts(void **state)
{
    (void)state;
    const fl_model_info_t *c = fl_models_find("charlstm"), *w = fl_models_find("wordlstm");
    assert_non_null(c);
    assert_non_null(w);
    assert_int_equal(c->paper.input.d[0], 80);
    assert_int_equal(c->paper.num_classes, 90);
    assert_int_equal(w->paper.input.d[0], 20);
    assert_int_equal(w->paper.num_classes, 10004);
    check_count("charlstm", c->paper, 820522, "embed.weight", "fc.bias");
    check_count("wordlstm", w->paper, 4050748, "embed.weight", "fc2.bias");
    /* The names of charlstm in order, PyTorch's state_dict (one bias per gate). */
    static const char *names[] = {"embed.weight",      "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                                  "lstm.bias_ih_l0",   "lstm.weight_ih_l1", "lstm.weight_hh_l1",
                                  "lstm.bias_ih_l1",   "fc.weight",         "fc.bias"};
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create("charlstm", &c->paper, &m), 0);
    assert_int_equal(m->params.nviews, 9);
    for (size_t i = 0; i < 9; i++)
        assert_string_equal(m->params.views[i].name, names[i]);
    assert_int_equal(m->params.views[1].shape[0], 1024);
    assert_int_equal(m->params.views[1].shape[1], 8);
    assert_int_equal(fl_model_out_dim(m), 80 * 90);
    fl_model_free(m);
    /* A sequence model needs a 1-D input of token ids. */
    fl_model_spec_t img = {.input = {.ndim = 3, .d = {1, 5, 5}}, .num_classes = 4, .label_dim = 1};
    assert_int_equal(fl_model_create("charlstm", &img, &m), FL_ESHAPE);
    assert_null(m);
}

/* Post-padded token sequences: x = tokens, y = next tokens, 0 after the end. */
static void padded_batch(size_t n, size_t T, int vocab, float *x, int32_t *y, uint64_t seed)
{
    fl_rng_t r;
    fl_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        size_t len = 2 + fl_rng_below(&r, T - 1); /* 2..T real steps */
        for (size_t t = 0; t < T; t++) {
            int in = t < len ? 1 + (int)fl_rng_below(&r, (uint64_t)vocab - 1) : 0;
            x[i * T + t] = (float)in;
            y[i * T + t] = t + 1 < len ? 1 + (int32_t)fl_rng_below(&r, (uint64_t)vocab - 1) : 0;
        }
    }
}

static void check_seq_model(const char *name, size_t T, int vocab, size_t n, size_t per_tensor)
{
    fl_model_spec_t spec = {.input = {.ndim = 1, .d = {(int64_t)T}}, .num_classes = vocab,
                            .label_dim = T};
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create(name, &spec, &m), 0);
    fl_model_init_params(m, 5);
    float *x = malloc(n * T * sizeof(float));
    int32_t *y = malloc(n * T * sizeof(int32_t));
    assert_non_null(x);
    assert_non_null(y);
    padded_batch(n, T, vocab, x, y, 6);
    fl_gc_opts_t o = fl_gc_defaults();
    o.max_per_tensor = per_tensor;
    fl_gc_result_t res;
    int rc = fl_gc_model(m, x, y, n, &o, &res);
    assert_int_equal(res.failed, 0);
    assert_true(res.checked > 0);
    assert_int_equal(rc, 0);
    /* The metric counts exactly the non-pad targets. */
    size_t real = 0;
    for (size_t i = 0; i < n * T; i++)
        real += y[i] != 0;
    fl_loss_stats_t st = {0, 0};
    double L;
    assert_int_equal(fl_model_loss(m, x, y, n, FL_MODE_EVAL, 0, &L, &st), 0);
    assert_true(st.total == (double)real);
    assert_true(L > 0 && isfinite(L));
    free(x);
    free(y);
    fl_model_free(m);
}

static void test_grad_seq_models(void **state)
{
    (void)state;
    /* The real widths (256, 670 units) make each loss evaluation costly: sample. */
    check_seq_model("charlstm", 5, 7, 2, 14);
    check_seq_model("wordlstm", 4, 9, 2, 14);
}

/* A next-token client's aggregation weight is its non-pad target count; the
 * reported loss is the token-weighted mean of the batch losses. */
static void test_train_weight_is_tokens(void **state)
{
    (void)state;
    enum { N = 7, T = 5, V = 6 };
    fl_dataset_t d;
    fl_dataset_init(&d);
    const int64_t shape[1] = {T};
    assert_int_equal(fl_dataset_alloc_labels(&d, N, 1, shape, T, V), 0);
    padded_batch(N, T, V, d.x, d.y, 31);
    size_t real = 0;
    for (size_t i = 0; i < (size_t)N * T; i++)
        real += d.y[i] != 0;
    assert_true(real > 0 && real < (size_t)N * T);
    fl_model_spec_t spec;
    assert_int_equal(fl_model_spec_from_dataset(&d, &spec), 0);
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_create("charlstm", &spec, &m), 0);
    fl_model_init_params(m, 2);
    fl_train_stats_t ev;
    assert_int_equal(fl_train_eval(m, &d, 3, &ev), 0);
    assert_true(ev.weight == (double)real);
    assert_int_equal(ev.examples, N);
    /* Token-weighted: the same as one batch holding everything. */
    fl_train_stats_t whole;
    assert_int_equal(fl_train_eval(m, &d, N, &whole), 0);
    assert_true(fabs(ev.loss - whole.loss) < 1e-5);
    fl_train_config_t cfg = {.epochs = 1, .batch = 2, .sgd = {.lr = 0.1f}, .seed = 1};
    fl_train_stats_t last;
    assert_int_equal(fl_train_run(m, &d, &cfg, NULL, NULL, &last), 0);
    assert_true(last.weight == (double)real);
    fl_model_free(m);
    fl_dataset_free(&d);
}

/* safetensors: charlstm's file has PyTorch's two biases per layer (bias_hh
 * all zero) and loads back bit for bit; a file whose bias_hh is not zero
 * (a PyTorch checkpoint) loads as the sum of the two. */
static void test_lstm_safetensors(void **state)
{
    (void)state;
    const fl_model_info_t *info = fl_models_find("charlstm");
    fl_model_t *m = NULL, *m2 = NULL;
    assert_int_equal(fl_model_create("charlstm", &info->paper, &m), 0);
    assert_int_equal(fl_model_create("charlstm", &info->paper, &m2), 0);
    fl_model_init_params(m, 21);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(fl_safetensors_encode(&m->params, &buf, &len), 0);
    /* The header names both biases of both layers. */
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)buf[i] << (8 * i);
    char *hdr = calloc(1, hlen + 1);
    assert_non_null(hdr);
    memcpy(hdr, buf + 8, hlen);
    assert_non_null(strstr(hdr, "\"lstm.bias_hh_l0\":{\"dtype\":\"F32\",\"shape\":[1024]"));
    assert_non_null(strstr(hdr, "\"lstm.bias_hh_l1\""));
    assert_non_null(strstr(hdr, "\"lstm.bias_ih_l1\""));
    assert_int_equal(len, 8 + hlen + (820522 + 2 * 1024) * sizeof(float));
    /* The extra tensors are zeros. */
    for (size_t i = 0; i < 2 * 1024; i++) {
        float z;
        memcpy(&z, buf + len - (i + 1) * sizeof(float), sizeof z);
        assert_true(z == 0.0f);
    }
    assert_int_equal(fl_safetensors_decode(buf, len, "test", &m2->params), 0);
    assert_memory_equal(m->params.data, m2->params.data, m->params.numel * sizeof(float));
    /* Make bias_hh_l0 all 0.25 (its data are the first 1024 extra floats). */
    size_t hh0 = 8 + hlen + 820522 * sizeof(float);
    for (size_t i = 0; i < 1024; i++) {
        float q = 0.25f;
        memcpy(buf + hh0 + i * sizeof(float), &q, sizeof q);
    }
    assert_int_equal(fl_safetensors_decode(buf, len, "test", &m2->params), 0);
    const fl_param_view_t *b0 = fl_params_find(&m->params, "lstm.bias_ih_l0");
    assert_non_null(b0);
    for (size_t i = 0; i < 1024; i++)
        assert_true(m2->params.data[b0->offset + i] == m->params.data[b0->offset + i] + 0.25f);
    free(hdr);
    free(buf);
    fl_model_free(m);
    fl_model_free(m2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_embedding),
        cmocka_unit_test(test_grad_lstm),
        cmocka_unit_test(test_lstm_matches_equations),
        cmocka_unit_test(test_seq_loss_masks_padding),
        cmocka_unit_test(test_seq_model_counts),
        cmocka_unit_test(test_grad_seq_models),
        cmocka_unit_test(test_lstm_safetensors),
        cmocka_unit_test(test_train_weight_is_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
