#include "client/task.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/gemm.h"

#define WHO "client"

static void say(char *why, size_t len, const char *fmt, ...)
{
    if (!why || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
}

void fl_task_config(const Fedopt__ClientOptSettings *os, uint64_t run, uint64_t round, uint64_t client,
                    fl_train_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = os && os->epochs ? (int)os->epochs : 1;
    c->batch = os && os->batch_size ? os->batch_size : 20;
    c->sgd.lr = os ? os->learning_rate : 0;
    c->sgd.momentum = os ? os->momentum : 0;
    c->sgd.weight_decay = os ? os->weight_decay : 0;
    c->seed = os ? os->seed : 0;
    c->ids[0] = run;
    c->ids[1] = round;
    c->ids[2] = client;
    c->nids = 3;
    /* The server's step cap: training stops after that many SGD steps, and
     * the update's weight is the examples actually used (fl_train_run). */
    c->max_steps = os ? os->max_steps : 0;
}

struct fl_task_ws {
    fl_model_t *model;    /* kept between tasks (NULL before the first) */
    fl_model_spec_t spec; /* what it was built for */
    int threads;          /* the gemm_threads it was built with */
    size_t builds;
};

int fl_task_ws_new(fl_task_ws_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : FL_ENOMEM;
}

void fl_task_ws_free(fl_task_ws_t *ws)
{
    if (!ws)
        return;
    fl_model_free(ws->model);
    free(ws);
}

size_t fl_task_ws_builds(const fl_task_ws_t *ws) { return ws ? ws->builds : 0; }

static int same_spec(const fl_model_spec_t *a, const fl_model_spec_t *b)
{
    if (a->input.ndim != b->input.ndim || a->num_classes != b->num_classes || a->label_dim != b->label_dim)
        return 0;
    for (int i = 0; i < a->input.ndim && i < FL_SHAPE_MAX_DIMS; i++)
        if (a->input.d[i] != b->input.d[i])
            return 0;
    return 1;
}

/* The workspace's model when it was built for the same name, shapes and
 * threads, else NULL. */
static fl_model_t *ws_model(const fl_task_ws_t *ws, const char *name, const fl_model_spec_t *spec, int threads)
{
    if (!ws || !ws->model || strcmp(ws->model->info->name, name) != 0 || ws->threads != threads ||
        !same_spec(&ws->spec, spec))
        return NULL;
    return ws->model;
}

/* Frees a model the task built for itself; a workspace's stays. */
static void drop_model(const fl_task_in_t *in, fl_model_t *m)
{
    if (m && !(in && in->ws && in->ws->model == m))
        fl_model_free(m);
}

/* Builds the named model for the client's data with the global parameters.
 * *local holds the client's share when the data is indexed; *data is what to
 * train or evaluate on. */
static int build(const fl_task_in_t *in, fl_dataset_t *local, const fl_dataset_t **data, fl_model_t **m,
                 char *why, size_t why_len)
{
    int rc;
    *m = NULL;
    if (!in || !in->model || !in->data || !in->global) {
        say(why, why_len, "no model, data or parameters to work on");
        return FL_EINVAL;
    }
    *data = in->data;
    if (in->index) {
        if ((rc = fl_dataset_subset(in->data, in->index, in->nindex, local))) {
            say(why, why_len, "cannot take the client's %zu examples: %s", in->nindex, fl_strerror(rc));
            return rc;
        }
        *data = local;
    }
    if ((*data)->n == 0) {
        say(why, why_len, "the client holds no examples");
        return FL_EEMPTY;
    }
    fl_model_spec_t spec;
    if (!(rc = fl_model_spec_from_dataset(*data, &spec)) &&
        !(*m = ws_model(in->ws, in->model, &spec, in->gemm_threads))) {
        if (in->ws) {
            /* A model of another shape: this one goes, the new one stays. */
            fl_model_free(in->ws->model);
            in->ws->model = NULL;
        }
        if (!(rc = fl_model_create(in->model, &spec, m)) && in->gemm_threads > 0 &&
            (rc = fl_model_set_threads(*m, in->gemm_threads))) {
            fl_model_free(*m);
            *m = NULL;
        }
        if (!rc && in->ws) {
            in->ws->model = *m;
            in->ws->spec = spec;
            in->ws->threads = in->gemm_threads;
            in->ws->builds++;
        }
    }
    if (rc) {
        say(why, why_len, "model %s cannot be built for the local data (%zu features, %d classes): %s", in->model,
            (*data)->dim, (*data)->num_classes, fl_strerror(rc));
        return rc;
    }
    if (in->gemm_threads > 0)
        fl_gemm_set_threads(fl_model_gemm_threads(*m));
    /* Names and shapes, not only the count: a model with the same number of
     * parameters laid out differently would train on scrambled weights. */
    if ((rc = fl_wire_table_check(in->table, in->ntable, &(*m)->params, why, why_len)))
        return rc;
    if ((*m)->params.numel != in->n) {
        say(why, why_len, "the server's %s has %zu parameters, built for the local data (%zu features, %d classes) it has %zu",
            in->model, in->n, (*data)->dim, (*data)->num_classes, (*m)->params.numel);
        return FL_ESHAPE;
    }
    /* The model's own parameters are the working copy: the global buffer
     * may be shared with other tasks and is only read. */
    if ((rc = fl_model_set_params(*m, in->global, in->n))) {
        say(why, why_len, "the received model: %s", fl_strerror(rc));
        return rc;
    }
    return 0;
}

/* Sums what every epoch did into the result. */
static int count_epoch(int epoch, const fl_train_stats_t *st, void *ud)
{
    (void)epoch;
    fl_task_result_t *res = ud;
    res->samples += st->examples;
    res->seconds += st->seconds;
    return 0;
}

int fl_task_train(const fl_task_in_t *in, const fl_train_config_t *cfg, fl_task_result_t *res, char *why,
                  size_t why_len)
{
    if (!res)
        return FL_EINVAL;
    memset(res, 0, sizeof *res);
    fl_dataset_t local;
    fl_dataset_init(&local);
    const fl_dataset_t *data = NULL;
    fl_model_t *m = NULL;
    int rc;
    if (!cfg) {
        say(why, why_len, "no training settings");
        rc = FL_EINVAL;
        goto out;
    }
    if ((rc = build(in, &local, &data, &m, why, why_len)))
        goto out;
    if ((rc = fl_train_run(m, data, cfg, count_epoch, res, &res->st))) {
        say(why, why_len, "training failed: %s", fl_strerror(rc));
        goto out;
    }
    /* The delta overwrites the trained parameters in place. */
    float *x = m->params.data;
    const float *g = in->global;
    for (size_t i = 0; i < in->n; i++)
        x[i] -= g[i];
    res->delta = x;
    res->n = in->n;
    if (in->ws)
        res->ws = in->ws;
    else
        res->model = m;
    m = NULL;
out:
    if (rc)
        memset(res, 0, sizeof *res);
    drop_model(in, m);
    fl_dataset_free(&local);
    return rc;
}

int fl_task_eval(const fl_task_in_t *in, size_t batch, size_t max, fl_train_stats_t *st, char *why,
                 size_t why_len)
{
    if (!st)
        return FL_EINVAL;
    memset(st, 0, sizeof *st);
    fl_dataset_t local;
    fl_dataset_init(&local);
    const fl_dataset_t *data = NULL;
    fl_model_t *m = NULL;
    int rc;
    if ((rc = build(in, &local, &data, &m, why, why_len)))
        goto out;
    fl_dataset_t view = *data;
    if (max && max < view.n)
        view.n = max;
    if ((rc = fl_train_eval(m, &view, batch ? batch : 64, st)))
        say(why, why_len, "evaluation failed: %s", fl_strerror(rc));
out:
    drop_model(in, m);
    fl_dataset_free(&local);
    return rc;
}

int fl_task_encode_update(uint64_t round, const fl_task_result_t *res, uint32_t chunk, fl_buf_t **update,
                          fl_buf_t **delta, char *why, size_t why_len)
{
    return fl_task_encode_update_codec(round, res, NULL, chunk, update, delta, why, why_len);
}

int fl_task_encode_update_codec(uint64_t round, const fl_task_result_t *res, const fl_task_codec_t *c,
                                uint32_t chunk, fl_buf_t **update, fl_buf_t **delta, char *why,
                                size_t why_len)
{
    if (!res || !res->delta || !update || !delta)
        return FL_EINVAL;
    *update = *delta = NULL;
    Fedopt__Update up = FEDOPT__UPDATE__INIT;
    up.round_id = round;
    up.weight = (double)res->st.examples;
    up.num_examples = res->st.examples;
    up.train_loss = res->st.loss;
    up.train_accuracy = isfinite(res->st.metric) ? res->st.metric : 0;
    /* train_metric is absent for a model without an accuracy (MSE): the
     * server tells "none" from 0 by it. */
    Fedopt__Metric acc = FEDOPT__METRIC__INIT;
    acc.value = res->st.metric;
    up.train_metric = isfinite(res->st.metric) ? &acc : NULL;
    up.steps = (uint32_t)res->st.steps;
    up.train_seconds = res->st.seconds;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
    env.update = &up;
    int rc;
    fl_codec_t codec = c ? c->codec : FL_CODEC_F32;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    if (codec != FL_CODEC_F32) {
        fl_codec_ef_t *ef = codec == FL_CODEC_TOPK && c->ef ? c->ef : NULL;
        if (ef && ef->n != res->n) {
            fl_codec_ef_free(ef);
            if ((rc = fl_codec_ef_init(ef, res->n)))
                goto fail;
        }
        if ((rc = fl_codec_encode(codec, res->delta, res->n, c->topk, ef, &enc, &enc_len)))
            goto fail;
    }
    if ((rc = fl_wire_encode(&env, update)) ||
        (rc = enc ? fl_wire_encode_tensor_codec(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, round, codec, res->n, enc,
                                                enc_len, chunk ? chunk : FL_WIRE_MAX_CHUNK, delta)
                  : fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, round, res->delta,
                                          res->n * sizeof(float), chunk ? chunk : FL_WIRE_MAX_CHUNK, delta)))
        goto fail;
    free(enc);
    return 0;
fail:
    say(why, why_len, "encoding the update (%s): %s", fl_codec_name((int)codec), fl_strerror(rc));
    free(enc);
    fl_buf_unref(*update);
    fl_buf_unref(*delta);
    *update = *delta = NULL;
    return rc;
}

int fl_task_encode_eval(uint64_t round, const fl_train_stats_t *st, fl_buf_t **out, char *why, size_t why_len)
{
    if (!st || !out)
        return FL_EINVAL;
    Fedopt__EvalResult er = FEDOPT__EVAL_RESULT__INIT;
    er.round_id = round;
    er.num_examples = st->examples;
    er.loss = st->loss;
    er.accuracy = isfinite(st->metric) ? st->metric : 0;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_EVAL_RESULT;
    env.eval_result = &er;
    int rc = fl_wire_encode(&env, out);
    if (rc)
        say(why, why_len, "encoding the result: %s", fl_strerror(rc));
    return rc;
}

void fl_task_result_slim(fl_task_result_t *res)
{
    /* A workspace's model stays: its owner chose to keep it. */
    if (!res || !res->model)
        return;
    res->model->params.data = NULL; /* the delta's storage: ours now */
    fl_model_free(res->model);
    res->model = NULL;
}

void fl_task_result_free(fl_task_result_t *res)
{
    if (!res)
        return;
    if (!res->model && !res->ws)
        free(res->delta);
    fl_model_free(res->model);
    memset(res, 0, sizeof *res);
}

int fl_task_fitting_models(const fl_dataset_t *data, const char ***names, size_t *n)
{
    if (!data || !names || !n)
        return FL_EINVAL;
    *names = NULL;
    *n = 0;
    fl_model_spec_t spec;
    int rc = fl_model_spec_from_dataset(data, &spec);
    if (rc)
        return rc;
    size_t count = fl_models_count();
    const char **out = calloc(count ? count : 1, sizeof *out);
    if (!out)
        return FL_ENOMEM;
    /* Building a model's layers is the one honest test of whether it fits
     * the data (input shape, label layout); fl_model_fits leaves out the
     * parameter buffers, which made this the fleet's largest start-up cost
     * (bench_fleet's CPU figure). The misfits' error lines are noise here,
     * so they go to /dev/null (this runs at start-up, before any thread). */
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull)
        fl_log_set_sink(devnull);
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        const fl_model_info_t *info = fl_models_at(i);
        if (fl_model_fits(info->name, &spec) == 0)
            out[k++] = info->name;
    }
    if (devnull) {
        fl_log_set_sink(NULL);
        fclose(devnull);
    }
    if (!k) {
        free(out);
        FL_LOG_E(WHO, "no registered model fits the local data (%zu features, %d classes)", data->dim,
                 data->num_classes);
        return FL_EEMPTY;
    }
    *names = out;
    *n = k;
    return 0;
}

float *fl_task_alloc_params(size_t n)
{
    /* As the transport allocates a received tensor (common/net/wire.c): 64-byte
     * aligned, and from 4 MiB up 2 MiB aligned on transparent huge pages, so
     * receiving a large model faults once per 2 MiB page rather than once
     * per 4 KiB page. The size is rounded up to the alignment, as
     * aligned_alloc wants. */
    size_t bytes = n * sizeof(float);
    size_t align = bytes >= (4u << 20) ? (2u << 20) : 64;
    size_t alloc = (bytes + align - 1) & ~(align - 1);
    float *p = aligned_alloc(align, alloc ? alloc : align);
#ifdef MADV_HUGEPAGE
    if (p && align > 64)
        madvise(p, alloc, MADV_HUGEPAGE);
#endif
    return p;
}
