#include "server/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/data/spec.h"
#include "common/base/error.h"
#include "common/base/log.h"

/* Examples per forward pass: large enough for GEMM efficiency, small enough
 * that the activations of the biggest model stay a few MiB. */
#define EVAL_BATCH 256

struct fl_eval {
    fl_model_t *model;
    fl_dataset_t test;
    size_t n;
};

int fl_eval_create(const char *model, const char *data, size_t max_examples, fl_eval_t **out)
{
    fl_eval_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return FL_ENOMEM;
    fl_dataset_init(&ev->test);
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    int rc = fl_data_spec_set(&spec, "data", data);
    if (rc || (rc = fl_data_spec_validate(&spec)) || (rc = fl_data_spec_load(&spec, "test", &ev->test)))
        goto fail;
    if (ev->test.n == 0) {
        FL_LOG_E("eval", "%s: the test split is empty", data);
        rc = FL_EEMPTY;
        goto fail;
    }
    fl_model_spec_t ms;
    if ((rc = fl_model_spec_from_dataset(&ev->test, &ms)) || (rc = fl_model_create(model, &ms, &ev->model)))
        goto fail;
    if ((rc = fl_model_reserve(ev->model, EVAL_BATCH)))
        goto fail;
    ev->n = max_examples && max_examples < ev->test.n ? max_examples : ev->test.n;
    *out = ev;
    return 0;
fail:
    FL_LOG_E("eval", "cannot set up evaluation of %s on %s: %s", model, data, fl_strerror(rc));
    fl_eval_free(ev);
    return rc;
}

void fl_eval_free(fl_eval_t *ev)
{
    if (!ev)
        return;
    fl_model_free(ev->model);
    fl_dataset_free(&ev->test);
    free(ev);
}

const fl_model_spec_t *fl_eval_spec(const fl_eval_t *ev)
{
    return &ev->model->spec;
}

size_t fl_eval_examples(const fl_eval_t *ev)
{
    return ev->n;
}

int fl_eval_run(fl_eval_t *ev, const float *x, size_t n, double *loss, double *metric)
{
    int rc = fl_model_set_params(ev->model, x, n);
    if (rc)
        return rc;
    fl_loss_stats_t st = {0, 0};
    double sum = 0;
    const fl_dataset_t *d = &ev->test;
    for (size_t i = 0; i < ev->n; i += EVAL_BATCH) {
        size_t b = ev->n - i < EVAL_BATCH ? ev->n - i : EVAL_BATCH;
        double l;
        const int32_t *y = d->y ? d->y + i * d->label_dim : NULL;
        if ((rc = fl_model_loss(ev->model, d->x + i * d->dim, y, b, FL_MODE_EVAL, 0, &l, &st)))
            return rc;
        sum += l * (double)b; /* batch means back to a sum, so the result is the mean over examples */
    }
    *loss = sum / (double)ev->n;
    *metric = ev->model->info->metric != FL_METRIC_NONE && st.total > 0 ? st.hits / st.total : NAN;
    return 0;
}
