#include "common/nn/models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/act.h"
#include "common/nn/conv2d.h"
#include "common/nn/dense.h"
#include "common/nn/dropout.h"
#include "common/nn/embedding.h"
#include "common/nn/gemm.h"
#include "common/nn/groupnorm.h"
#include "common/nn/lstm.h"
#include "common/nn/pool.h"
#include "common/nn/resblock.h"
#include "common/nn/dnnl.h"
#include "common/nn/workers.h"

/* ---- builders: one per model, layers in PyTorch module order ---- */

static int build_logreg(fl_model_t *m)
{
    FL_MODEL_ADD(m, fl_act_flatten_create(fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc", fl_model_out_shape(m), m->spec.num_classes,
                                    1, &l));
    return 0;
}

static int build_mlp(fl_model_t *m)
{
    FL_MODEL_ADD(m, fl_act_flatten_create(fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc1", fl_model_out_shape(m), 200, 1, &l));
    FL_MODEL_ADD(m, fl_act_create(FL_ACT_RELU, fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc2", fl_model_out_shape(m), 200, 1, &l));
    FL_MODEL_ADD(m, fl_act_create(FL_ACT_RELU, fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc3", fl_model_out_shape(m), m->spec.num_classes,
                                    1, &l));
    return 0;
}

static int build_cnn(fl_model_t *m)
{
    /* The EMNIST CR model of the paper (TFF's create_conv_dropout_model). */
    FL_MODEL_ADD(m, fl_conv2d_create(&m->params, "conv1", fl_model_out_shape(m), 32, 3, 1, 0, 1,
                                     &l));
    FL_MODEL_ADD(m, fl_act_create(FL_ACT_RELU, fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_conv2d_create(&m->params, "conv2", fl_model_out_shape(m), 64, 3, 1, 0, 1,
                                     &l));
    /* PyTorch's order is ReLU, then the pool. Pooling first gives the same
     * values (ReLU is monotone, so max(relu(x)) = relu(max(x))) and the same
     * gradients: with a positive window maximum both send dy to the first
     * maximum, and otherwise both give 0. The ReLU then runs on a quarter of
     * the elements (bench_train's cnn rows measure the step). The one
     * difference is a NaN in a window, which a ReLU first would zero. */
    FL_MODEL_ADD(m, fl_pool_max_create(fl_model_out_shape(m), 2, 2, &l));
    FL_MODEL_ADD(m, fl_act_create(FL_ACT_RELU, fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dropout_create(fl_model_out_shape(m), 0.25f, &l));
    FL_MODEL_ADD(m, fl_act_flatten_create(fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc1", fl_model_out_shape(m), 128, 1, &l));
    FL_MODEL_ADD(m, fl_act_create(FL_ACT_RELU, fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dropout_create(fl_model_out_shape(m), 0.5f, &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc2", fl_model_out_shape(m), m->spec.num_classes,
                                    1, &l));
    return 0;
}

static int build_autoencoder(fl_model_t *m)
{
    static const struct {
        const char *name;
        int64_t out;
        int act; /* 0 linear, 1 sigmoid */
    } plan[] = {{"enc1", 1000, 1}, {"enc2", 500, 1}, {"enc3", 250, 1}, {"enc4", 30, 0},
                {"dec1", 250, 1},  {"dec2", 500, 1}, {"dec3", 1000, 1}, {"dec4", -1, 1}};
    FL_MODEL_ADD(m, fl_act_flatten_create(fl_model_out_shape(m), &l));
    const int64_t in = m->spec.input.ndim ? (int64_t)fl_shape_numel(&m->spec.input) : 0;
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        int64_t out = plan[i].out > 0 ? plan[i].out : in;
        FL_MODEL_ADD(m, fl_dense_create(&m->params, plan[i].name, fl_model_out_shape(m), out, 1,
                                        &l));
        if (plan[i].act)
            FL_MODEL_ADD(m, fl_act_create(FL_ACT_SIGMOID, fl_model_out_shape(m), &l));
    }
    return 0;
}

static int build_bowlr(fl_model_t *m)
{
    /* The sigmoid lives in the loss (BCE with logits), as in PyTorch. */
    FL_MODEL_ADD(m, fl_act_flatten_create(fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc", fl_model_out_shape(m), m->spec.num_classes,
                                    1, &l));
    return 0;
}

/* Next-character model of the paper's Shakespeare task: input [T] token ids
 * (vocabulary = num_classes, id 0 = padding), output [T, V] logits. */
static int build_charlstm(fl_model_t *m)
{
    FL_MODEL_ADD(m, fl_embedding_create(&m->params, "embed", fl_model_out_shape(m),
                                        m->spec.num_classes, 8, &l));
    FL_MODEL_ADD(m, fl_lstm_create(&m->params, "lstm", fl_model_out_shape(m), 256, 0, &l));
    FL_MODEL_ADD(m, fl_lstm_create(&m->params, "lstm", fl_model_out_shape(m), 256, 1, &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc", fl_model_out_shape(m), m->spec.num_classes,
                                    1, &l));
    return 0;
}

/* Next-word model of the paper's Stack Overflow task (vocabulary 10,000 +
 * pad, oov, bos, eos). */
static int build_wordlstm(fl_model_t *m)
{
    FL_MODEL_ADD(m, fl_embedding_create(&m->params, "embed", fl_model_out_shape(m),
                                        m->spec.num_classes, 96, &l));
    FL_MODEL_ADD(m, fl_lstm_create(&m->params, "lstm", fl_model_out_shape(m), 670, 0, &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc1", fl_model_out_shape(m), 96, 1, &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc2", fl_model_out_shape(m), m->spec.num_classes,
                                    1, &l));
    return 0;
}

/* The paper's CIFAR model: ResNet-18 v2 (pre-activation) with group norm
 * (2 groups, eps 1e-3) on 24x24 crops. The stem halves the image twice
 * (conv 7x7/2, max pool 3x3/2 SAME); all four stages then run at stride 1
 * with 64, 128, 256, 512 channels, two basic blocks each, a 1x1 conv + GN
 * shortcut where the channel count changes. */
static int build_resnet18gn(fl_model_t *m)
{
    static const int64_t widths[4] = {64, 128, 256, 512};
    const int G = 2;
    const float eps = 1e-3f;
    FL_MODEL_ADD(m, fl_conv2d_create(&m->params, "stem.conv", fl_model_out_shape(m), 64, 7, 2, 3,
                                     0, &l));
    FL_MODEL_ADD(m, fl_groupnorm_create(&m->params, "stem.gn", fl_model_out_shape(m), G, eps, &l));
    FL_MODEL_ADD(m, fl_act_create(FL_ACT_RELU, fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_pool_max_same_create(fl_model_out_shape(m), 3, 2, &l));
    for (int stage = 0; stage < 4; stage++)
        for (int b = 0; b < 2; b++) {
            char name[16];
            snprintf(name, sizeof name, "layer%d.%d", stage + 1, b);
            FL_MODEL_ADD(m, fl_resblock_create(&m->params, name, fl_model_out_shape(m),
                                               widths[stage], stage > 0 || b > 0, G, eps, &l));
        }
    FL_MODEL_ADD(m, fl_groupnorm_create(&m->params, "final.gn", fl_model_out_shape(m), G, eps, &l));
    FL_MODEL_ADD(m, fl_act_create(FL_ACT_RELU, fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_pool_global_avg_create(fl_model_out_shape(m), &l));
    FL_MODEL_ADD(m, fl_dense_create(&m->params, "fc", fl_model_out_shape(m), m->spec.num_classes,
                                    1, &l));
    return 0;
}

#define SPEC_SEQ(t, v) {.input = {.ndim = 1, .d = {t}}, .num_classes = (v), .label_dim = (t)}

#define SPEC_IMG28(c) {.input = {.ndim = 3, .d = {1, 28, 28}}, .num_classes = (c), .label_dim = 1}

static const fl_model_info_t registry[] = {
    {"logreg", "multinomial logistic regression: dense D->C", FL_LOSS_SOFTMAX_CE,
     FL_METRIC_ACCURACY, SPEC_IMG28(10), build_logreg, 0, 0.0f},
    {"mlp", "dense 784->200 ReLU ->200 ReLU ->C (McMahan's 2NN)", FL_LOSS_SOFTMAX_CE,
     FL_METRIC_ACCURACY, SPEC_IMG28(10), build_mlp, 0, 0.0f},
    {"cnn", "conv3x3 32 ReLU, conv3x3 64 ReLU, maxpool 2, dropout .25, dense 128 ReLU, dropout .5, dense C",
     FL_LOSS_SOFTMAX_CE, FL_METRIC_ACCURACY, SPEC_IMG28(10), build_cnn, 0, 0.0f},
    {"autoencoder", "dense 784->1000->500->250->30->250->500->1000->784, sigmoid, MSE",
     FL_LOSS_MSE_INPUT, FL_METRIC_NONE, SPEC_IMG28(10), build_autoencoder, 0, 0.0f},
    {"bowlr", "bag-of-words tag prediction: dense 10000->500, sigmoid + BCE, recall@5",
     FL_LOSS_SIGMOID_BCE, FL_METRIC_RECALL5,
     {.input = {.ndim = 1, .d = {10000}}, .num_classes = 500, .label_dim = 500}, build_bowlr, 0,
     0.0f},
    {"charlstm", "next character: embedding V->8, LSTM 256, LSTM 256, dense V per step",
     FL_LOSS_SEQ_CE, FL_METRIC_ACCURACY, SPEC_SEQ(80, 90), build_charlstm, 0, 0.0f},
    {"wordlstm", "next word: embedding V->96, LSTM 670, dense 96, dense V per step",
     FL_LOSS_SEQ_CE, FL_METRIC_ACCURACY, SPEC_SEQ(20, 10004), build_wordlstm, 0, 0.0f},
    {"resnet18gn", "ResNet-18 v2, group norm (2 groups), 24x24 crops, stages at stride 1",
     FL_LOSS_SOFTMAX_CE, FL_METRIC_ACCURACY,
     {.input = {.ndim = 3, .d = {3, 24, 24}}, .num_classes = 10, .label_dim = 1},
     build_resnet18gn, 24, 1e-4f},
};

size_t fl_models_count(void) { return sizeof registry / sizeof registry[0]; }

const fl_model_info_t *fl_models_at(size_t i)
{
    return i < fl_models_count() ? &registry[i] : NULL;
}

const fl_model_info_t *fl_models_find(const char *name)
{
    for (size_t i = 0; name && i < fl_models_count(); i++)
        if (strcmp(registry[i].name, name) == 0)
            return &registry[i];
    return NULL;
}

int fl_model_spec_from_dataset(const fl_dataset_t *d, fl_model_spec_t *spec)
{
    if (!d || !spec || d->ndim < 1 || d->ndim > FL_SHAPE_MAX_DIMS)
        return FL_EINVAL;
    memset(spec, 0, sizeof *spec);
    spec->input = fl_shape_make(d->ndim, d->shape);
    spec->num_classes = d->num_classes;
    spec->label_dim = d->label_dim ? d->label_dim : 1;
    return 0;
}

const fl_shape_t *fl_model_out_shape(const fl_model_t *m)
{
    return m->nlayers ? &m->layers[m->nlayers - 1]->out : &m->spec.input;
}

size_t fl_model_in_dim(const fl_model_t *m) { return fl_shape_numel(&m->spec.input); }

size_t fl_model_out_dim(const fl_model_t *m) { return fl_shape_numel(fl_model_out_shape(m)); }

int fl_model_push(fl_model_t *m, fl_layer_t *l)
{
    const fl_shape_t *cur = fl_model_out_shape(m);
    if (!l)
        return FL_EINVAL;
    if (l->in.ndim != cur->ndim || memcmp(l->in.d, cur->d, sizeof(int64_t) * (size_t)cur->ndim)) {
        fl_layer_free(l);
        return FL_ESHAPE;
    }
    if (m->nlayers == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 8;
        fl_layer_t **v = realloc(m->layers, cap * sizeof *v);
        if (!v) {
            fl_layer_free(l);
            return FL_ENOMEM;
        }
        m->layers = v;
        m->cap = cap;
    }
    l->rng = &m->dropout_rng;
    m->layers[m->nlayers++] = l;
    return 0;
}

static void free_buffers(fl_model_t *m)
{
    if (m->act)
        for (size_t i = 0; i < m->nlayers; i++)
            free(m->act[i]);
    free(m->act);
    m->act = NULL;
    free(m->gbuf[0]);
    free(m->gbuf[1]);
    free(m->dout);
    m->gbuf[0] = m->gbuf[1] = m->dout = NULL;
    m->max_n = 0;
}

static void free_replicas(fl_model_t *m)
{
    fl_workers_free(m->workers);
    m->workers = NULL;
    for (int r = 0; m->rep && r < m->parts - 1; r++)
        fl_model_free(m->rep[r]);
    free(m->rep);
    m->rep = NULL;
    m->threads = m->parts = 1;
}

void fl_model_free(fl_model_t *m)
{
    if (!m)
        return;
    free_replicas(m);
    free_buffers(m);
    for (size_t i = 0; i < m->nlayers; i++)
        fl_layer_free(m->layers[i]);
    free(m->layers);
    fl_params_free(&m->params);
    fl_params_free(&m->grads);
    free(m);
}

int fl_model_reserve(fl_model_t *m, size_t n)
{
    if (n <= m->max_n)
        return 0;
    size_t widest = fl_model_in_dim(m);
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i]->out_dim > widest)
            widest = m->layers[i]->out_dim;
    if (n > SIZE_MAX / sizeof(float) / widest)
        return FL_ENOMEM;
    free_buffers(m);
    m->act = calloc(m->nlayers, sizeof *m->act);
    if (!m->act)
        goto nomem;
    for (size_t i = 0; i < m->nlayers; i++)
        if (!(m->act[i] = malloc(n * m->layers[i]->out_dim * sizeof(float))))
            goto nomem;
    m->gbuf[0] = malloc(n * widest * sizeof(float));
    m->gbuf[1] = malloc(n * widest * sizeof(float));
    m->dout = malloc(n * fl_model_out_dim(m) * sizeof(float));
    if (!m->gbuf[0] || !m->gbuf[1] || !m->dout)
        goto nomem;
    for (size_t i = 0; i < m->nlayers; i++) {
        fl_layer_t *l = m->layers[i];
        if (l->ops->reserve) {
            if (l->ops->reserve(l, n))
                goto nomem;
        }
        l->max_n = n;
    }
    m->max_n = n;
    return 0;
nomem:
    free_buffers(m);
    return FL_ENOMEM;
}

/* Builds the layers of model `name` for *spec and checks that its output
 * fits the labels; no parameter buffers yet. */
static int model_build(const char *name, const fl_model_spec_t *spec, fl_model_t **out)
{
    char sbuf[64];
    *out = NULL;
    const fl_model_info_t *info = fl_models_find(name);
    if (!info) {
        FL_LOG_E("models", "unknown model '%s' (fedopt-client models lists them)",
                 name ? name : "(null)");
        return FL_ENOTFOUND;
    }
    if (!spec || !fl_shape_numel(&spec->input) || spec->num_classes < 1 || spec->label_dim < 1)
        return FL_EINVAL;
    fl_model_t *m = calloc(1, sizeof *m);
    if (!m)
        return FL_ENOMEM;
    int rc;
    m->info = info;
    m->spec = *spec;
    /* A model with a crop (resnet18gn: the paper's 24x24 CIFAR crops) is
     * built for the cropped size whatever the data's; common/train crops the
     * data to match, so every caller (train, eval, the device client, the
     * server's evaluation) gets the paper's preprocessing. */
    if (info->crop && m->spec.input.ndim == 3 && m->spec.input.d[1] > info->crop &&
        m->spec.input.d[2] > info->crop)
        m->spec.input.d[1] = m->spec.input.d[2] = info->crop;
    fl_params_init(&m->params);
    fl_params_init(&m->grads);
    if ((rc = info->build(m))) {
        if (rc == FL_ESHAPE || rc == FL_EINVAL) {
            FL_LOG_E("models", "model %s cannot take input %s with %d classes", name,
                     fl_shape_str(&spec->input, sbuf, sizeof sbuf), spec->num_classes);
            rc = FL_ESHAPE;
        }
        goto fail;
    }
    size_t od = fl_model_out_dim(m);
    int fits = 1;
    switch (info->loss) {
    case FL_LOSS_SOFTMAX_CE:
    case FL_LOSS_SEQ_CE: fits = od % spec->label_dim == 0 && od / spec->label_dim > 1; break;
    case FL_LOSS_SIGMOID_BCE: fits = od == spec->label_dim; break;
    case FL_LOSS_MSE_INPUT: fits = od == fl_model_in_dim(m); break;
    }
    if (!fits) {
        FL_LOG_E("models", "model %s: output of %zu values does not fit %zu labels per example",
                 name, od, spec->label_dim);
        rc = FL_ESHAPE;
        goto fail;
    }
    *out = m;
    return 0;
fail:
    fl_model_free(m);
    return rc;
}

int fl_model_fits(const char *name, const fl_model_spec_t *spec)
{
    fl_model_t *m;
    int rc = model_build(name, spec, &m);
    fl_model_free(m);
    return rc;
}

int fl_model_create(const char *name, const fl_model_spec_t *spec, fl_model_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    fl_model_t *m;
    int rc = model_build(name, spec, &m);
    if (rc)
        return rc;
    if ((rc = fl_params_alloc(&m->params)) || (rc = fl_params_clone_layout(&m->grads, &m->params)))
        goto fail;
    m->first_param_layer = m->nlayers;
    for (size_t i = 0; i < m->nlayers; i++) {
        fl_layer_bind(m->layers[i], &m->params, &m->grads);
        if (m->layers[i]->nparams && m->first_param_layer == m->nlayers)
            m->first_param_layer = i;
    }
    fl_rng_seed(&m->dropout_rng, 0);
    m->threads = m->parts = 1;
    *out = m;
    return 0;
fail:
    fl_model_free(m);
    return rc;
}

void fl_model_init_params(fl_model_t *m, uint64_t seed)
{
    fl_rng_t r;
    const uint64_t id = FL_RNG_INIT;
    fl_rng_stream(&r, seed, &id, 1);
    for (size_t i = 0; i < m->nlayers; i++)
        if (m->layers[i]->ops->init)
            m->layers[i]->ops->init(m->layers[i], &r);
}

int fl_model_set_params(fl_model_t *m, const float *data, size_t n)
{
    if (!m || !data)
        return FL_EINVAL;
    if (n != m->params.numel)
        return FL_ESHAPE;
    if (!fl_f32_all_finite(data, n))
        return FL_ENONFINITE;
    memcpy(m->params.data, data, n * sizeof(float));
    return 0;
}

void fl_model_seed_dropout(fl_model_t *m, uint64_t seed, const uint64_t *ids, size_t nids)
{
    uint64_t tuple[8];
    size_t k = nids < 7 ? nids : 7;
    for (size_t i = 0; i < k; i++)
        tuple[i] = ids[i];
    tuple[k] = FL_RNG_DROPOUT;
    fl_rng_stream(&m->dropout_rng, seed, tuple, k + 1);
}

/* With one part and workers, the layers split their products across them
 * (fl__workers_current): set around a model's passes on the calling thread. */
static fl_workers_t *layer_workers(const fl_model_t *m)
{
    return m->parts == 1 ? m->workers : NULL;
}

const float *fl_model_forward(fl_model_t *m, const float *x, size_t n, fl_mode_t mode)
{
    if (!m || !x || !n || fl_model_reserve(m, n))
        return NULL;
    fl_workers_t *prev = fl__workers_current();
    fl__workers_set_current(layer_workers(m));
    const float *in = x;
    for (size_t i = 0; i < m->nlayers; i++) {
        fl_layer_t *l = m->layers[i];
        l->ops->forward(l, in, m->act[i], n, mode);
        in = m->act[i];
    }
    fl__workers_set_current(prev);
    return in;
}

/* One part of a batch on one model (m itself or a replica): forward, loss,
 * and with `backward` the gradient of the part's mean loss times gscale
 * (the part's share of the whole batch's denominator) into m->grads. */
static int loss_part(fl_model_t *m, const float *x, const int32_t *y, size_t n, fl_mode_t mode,
                     int backward, float gscale, double *loss, fl_loss_stats_t *st)
{
    const float *out = fl_model_forward(m, x, n, mode);
    if (!out)
        return FL_ENOMEM;
    size_t od = fl_model_out_dim(m);
    float *g = backward ? m->dout : NULL;
    double L = 0.0;
    switch (m->info->loss) {
    case FL_LOSS_SOFTMAX_CE:
        L = fl_loss_softmax_ce(out, n * m->spec.label_dim, od / m->spec.label_dim, y, g, st);
        break;
    case FL_LOSS_SEQ_CE:
        L = fl_loss_softmax_ce_pad(out, n * m->spec.label_dim, od / m->spec.label_dim, y, 0, g,
                                   st);
        break;
    case FL_LOSS_SIGMOID_BCE: L = fl_loss_sigmoid_bce(out, n, od, y, g, st); break;
    case FL_LOSS_MSE_INPUT: L = fl_loss_mse(out, x, n, od, g); break;
    }
    if (loss)
        *loss = L;
    if (!backward)
        return 0;
    if (gscale != 1.0f)
        for (size_t i = 0; i < n * od; i++)
            g[i] *= gscale;
    memset(m->grads.data, 0, m->grads.numel * sizeof(float));
    const float *dy = m->dout;
    int which = 0;
    fl_workers_t *prev = fl__workers_current();
    fl__workers_set_current(layer_workers(m));
    for (size_t i = m->nlayers; i-- > 0;) {
        fl_layer_t *l = m->layers[i];
        float *dx = i > m->first_param_layer ? m->gbuf[which] : NULL;
        l->ops->backward(l, i ? m->act[i - 1] : x, m->act[i], dy, dx, n);
        if (!dx)
            break;
        dy = dx;
        which ^= 1;
    }
    fl__workers_set_current(prev);
    return 0;
}

/* The denominator of the model's mean loss over n examples: the rows,
 * tokens or elements the loss function averages over (see loss.h). */
static double loss_count(const fl_model_t *m, const int32_t *y, size_t n)
{
    size_t od = fl_model_out_dim(m), rows = n * m->spec.label_dim, cnt = 0;
    switch (m->info->loss) {
    case FL_LOSS_SOFTMAX_CE:
    case FL_LOSS_SEQ_CE: {
        int32_t classes = (int32_t)(od / m->spec.label_dim);
        int pad = m->info->loss == FL_LOSS_SEQ_CE;
        for (size_t i = 0; i < rows; i++)
            cnt += y[i] >= 0 && y[i] < classes && !(pad && y[i] == 0);
        return (double)cnt;
    }
    case FL_LOSS_SIGMOID_BCE:
    case FL_LOSS_MSE_INPUT: return (double)n * (double)od;
    }
    return 0.0;
}

typedef struct {
    fl_model_t *m;
    const float *x;
    const int32_t *y;
    size_t n;
    fl_mode_t mode;
    int backward, rc;
    float gscale;
    double loss;
    fl_loss_stats_t st;
} part_t;

static void part_run(void *arg, size_t r)
{
    part_t *p = (part_t *)arg + r;
    p->rc = loss_part(p->m, p->x, p->y, p->n, p->mode, p->backward, p->gscale, &p->loss, &p->st);
}

#define FL_MODEL_MAX_THREADS 64
/* Split batches when one example's forward pass does at least this many
 * operations per parameter: cnn does ~20, resnet18gn ~50, charlstm ~160;
 * dense-only models ~2. Splitting pays for the conv and LSTM models, whose
 * threads work mostly on their own activations, and not for the dense ones,
 * whose speed is reading the weights (bench_train's 2-thread columns and
 * bench_resnet18gn measure it; figures in docs/benchmarks.md). */
#define FL_MODEL_SPLIT_FLOPS_PER_PARAM 8.0
static double split_threshold = FL_MODEL_SPLIT_FLOPS_PER_PARAM;

/* A part has at least this many examples: below it the LSTM's per-step
 * GEMMs are a handful of rows each, their cost is packing the recurrent
 * weights, which every part would repeat (bench_charlstm's batch-4 rows on
 * 1 and 2 threads measure it). */
#define FL_MODEL_MIN_PART 8
static size_t min_part = FL_MODEL_MIN_PART;

void fl__model_set_min_part(size_t n) { min_part = n ? n : FL_MODEL_MIN_PART; }

/* A split model with this many parameters or more splits its layers rather
 * than its batches (see fl_model_set_threads): resnet18gn's batch split ran
 * little faster on 2 threads than on 1, each part repeating the weight-sized
 * work of every convolution (bench_train's resnet18gn row, and its profile in
 * docs/benchmarks.md); cnn (1.2M) and charlstm gain from the batch split. */
#define FL_MODEL_LAYER_SPLIT_PARAMS ((size_t)4 << 20)
static size_t layer_split_params = FL_MODEL_LAYER_SPLIT_PARAMS;

void fl__model_set_layer_split(size_t params)
{
    layer_split_params = params == 1 ? FL_MODEL_LAYER_SPLIT_PARAMS : params;
}

void fl__model_set_split_threshold(double flops_per_param)
{
    split_threshold = flops_per_param >= 0 ? flops_per_param : FL_MODEL_SPLIT_FLOPS_PER_PARAM;
}

int fl_model_set_threads(fl_model_t *m, int threads)
{
    if (!m || threads < 1 || threads > FL_MODEL_MAX_THREADS)
        return FL_EINVAL;
    if (threads == m->threads)
        return 0;
    if (threads == 1) {
        free_replicas(m);
        return 0;
    }
    /* Operations per parameter of one example's forward pass, from the
     * GEMMs it runs (a count, so the choice never depends on timing). */
    float *zero = calloc(fl_model_in_dim(m), sizeof(float));
    if (!zero)
        return FL_ENOMEM;
    uint64_t f0 = fl__gemm_flops();
    const float *out = fl_model_forward(m, zero, 1, FL_MODE_EVAL);
    uint64_t flops = fl__gemm_flops() - f0;
    free(zero);
    if (!out)
        return FL_ENOMEM;
    if ((double)flops < split_threshold * (double)m->params.numel) {
        free_replicas(m);
        m->threads = threads; /* GEMM threads; one part */
        return 0;
    }
    /* Only oneDNN's convolutions run in slices (conv2d's own path would run
     * whole, on one thread): elsewhere such a model splits its batches. */
    if (m->params.numel >= layer_split_params && fl__dnnl_available()) {
        /* One part; the threads are conv2d's slices. */
        fl_workers_t *workers = NULL;
        int rc = fl_workers_create(threads - 1, &workers);
        if (rc)
            return rc;
        free_replicas(m);
        m->workers = workers;
        m->threads = threads;
        return 0;
    }
    fl_model_t **rep = calloc((size_t)threads, sizeof *rep);
    fl_workers_t *workers = NULL;
    int rc = rep ? 0 : FL_ENOMEM;
    for (int r = 0; !rc && r < threads - 1; r++) {
        if ((rc = fl_model_create(m->info->name, &m->spec, &rep[r])))
            break;
        /* A replica reads m's parameters (bound before every use), so its
         * own copy is dropped at once; only the layout of its gradients,
         * the same as m's, is kept. */
        fl_params_free(&rep[r]->params);
    }
    /* The threads that run parts 1.. live as long as the replicas, so a
     * step only wakes them (common/nn/workers.h). */
    if (!rc)
        rc = fl_workers_create(threads - 1, &workers);
    if (rc) {
        for (int r = 0; rep && r < threads - 1; r++)
            fl_model_free(rep[r]);
        free(rep);
        return rc;
    }
    free_replicas(m);
    m->rep = rep;
    m->workers = workers;
    m->threads = m->parts = threads;
    return 0;
}

int fl_model_gemm_threads(const fl_model_t *m)
{
    return !m || m->parts > 1 || m->workers ? 1 : m->threads;
}

int fl_model_loss(fl_model_t *m, const float *x, const int32_t *y, size_t n, fl_mode_t mode,
                  int backward, double *loss, fl_loss_stats_t *st)
{
    if (!m || !x || !n || (!y && m->info->loss != FL_LOSS_MSE_INPUT))
        return FL_EINVAL;
    size_t parts = (size_t)m->parts < n / min_part ? (size_t)m->parts : n / min_part;
    if (parts <= 1)
        return loss_part(m, x, y, n, mode, backward, 1.0f, loss, st);
    part_t p[FL_MODEL_MAX_THREADS];
    const size_t in = fl_model_in_dim(m), ld = m->spec.label_dim;
    double total = 0.0, cnt[FL_MODEL_MAX_THREADS];
    for (size_t r = 0; r < parts; r++) {
        size_t a = n * r / parts, b = n * (r + 1) / parts;
        p[r] = (part_t){.m = r ? m->rep[r - 1] : m, .x = x + a * in, .y = y ? y + a * ld : NULL,
                        .n = b - a, .mode = mode, .backward = backward};
        cnt[r] = loss_count(m, p[r].y, p[r].n);
        total += cnt[r];
    }
    for (size_t r = 0; r < parts; r++) {
        p[r].gscale = total > 0 ? (float)(cnt[r] / total) : 0.0f;
        if (r == 0)
            continue;
        fl_model_t *rm = p[r].m;
        for (size_t i = 0; i < rm->nlayers; i++)
            fl_layer_bind(rm->layers[i], &m->params, &rm->grads);
        if (mode == FL_MODE_TRAIN)
            fl_rng_seed(&rm->dropout_rng, fl_rng_u64(&m->dropout_rng));
    }
    /* Parts 1.. on the model's workers, part 0 here; a part without a
     * worker runs here afterwards, with the same result. */
    fl_workers_run(m->workers, parts, part_run, p);
    int rc = 0;
    for (size_t r = 0; r < parts && !rc; r++)
        rc = p[r].rc;
    if (rc)
        return rc;
    double L = 0.0;
    for (size_t r = 0; r < parts; r++) {
        L += total > 0 ? p[r].loss * (cnt[r] / total) : 0.0;
        if (st) {
            st->hits += p[r].st.hits;
            st->total += p[r].st.total;
        }
        if (backward && r > 0) {
            float *g = m->grads.data;
            const float *gr = p[r].m->grads.data;
            for (size_t i = 0; i < m->grads.numel; i++)
                g[i] += gr[i];
        }
    }
    if (loss)
        *loss = L;
    return 0;
}
