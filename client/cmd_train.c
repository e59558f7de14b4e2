/* fedopt-client train: central training on the client's data, the baseline
 * every federated experiment is compared with and a debugging tool on a
 * device. One line (or JSON object) per epoch with train loss, test loss,
 * test metric and training samples/s. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "client/commands.h"
#include "common/data/spec.h"
#include "common/base/error.h"
#include "common/base/json.h"
#include "common/base/log.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"
#include "common/nn/safetensors.h"
#include "common/nn/train.h"

void fl_client_cmd_train_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-client train --model M [--data SPEC] [--epochs E] [--batch B] [--lr LR]\n"
            "         [--momentum MU] [--weight-decay WD] [--seed S] [--threads T] [--init FILE]\n"
            "         [--save FILE] [--limit N] [--json]\n"
            "  --model M        a model from `fedopt-client models`\n"
            "  --epochs E       passes over the training data (default 1)\n"
            "  --batch B        minibatch size (default 20)\n"
            "  --lr LR          SGD learning rate (default 0.05)\n"
            "  --momentum MU    SGD momentum (default 0: plain SGD, as in the paper)\n"
            "  --weight-decay WD  L2 on weights (default: the model's, 1e-4 for resnet18gn, else 0)\n"
            "  --seed S         seeds init, shuffling and dropout (default 1)\n"
            "  --threads T      threads, each training a share of every batch (default 1);\n"
            "                   results are reproducible for a given T\n"
            "  --init FILE      start from a safetensors model instead of a fresh init\n"
            "  --save FILE      write the trained model (safetensors, PyTorch names)\n"
            "  --limit N        train on the first N examples only\n"
            "  --json           one JSON object per epoch: epoch, train_loss, test_loss,\n"
            "                   test_accuracy, samples_per_s\n"
            "data options:\n%s",
            fl_data_spec_usage());
}

typedef struct {
    fl_model_t *m;
    const fl_dataset_t *test;
    int json;
} epoch_ctx_t;

static void put_num(fl_json_t *j, const char *key, double v)
{
    fl_json_key(j, key);
    fl_json_double(j, v, 6);
}

static int on_epoch(int epoch, const fl_train_stats_t *st, void *ud)
{
    epoch_ctx_t *c = ud;
    fl_train_stats_t ev = {0, NAN, 0, 0, 0, 0};
    if (c->test && c->test->n && fl_train_eval(c->m, c->test, 500, &ev))
        return 1;
    double sps = st->seconds > 0 ? (double)st->examples / st->seconds : 0;
    if (c->json) {
        fl_json_t j;
        fl_json_init_file(&j, stdout);
        fl_json_obj_begin(&j);
        fl_json_key(&j, "epoch");
        fl_json_i64(&j, epoch);
        put_num(&j, "train_loss", st->loss);
        put_num(&j, "test_loss", c->test ? ev.loss : NAN);
        put_num(&j, "test_accuracy", ev.metric);
        put_num(&j, "samples_per_s", sps);
        put_num(&j, "seconds", st->seconds);
        fl_json_obj_end(&j);
        fl_json_finish(&j, NULL, NULL);
        putchar('\n');
    } else {
        const char *metric = c->m->info->metric == FL_METRIC_RECALL5 ? "test_recall@5"
                                                                      : "test_accuracy";
        printf("epoch %d: train_loss %.4f  test_loss %.4f  %s %.4f  %.0f samples/s (%.1f s)\n",
               epoch, st->loss, ev.loss, metric, ev.metric, sps, st->seconds);
    }
    fflush(stdout);
    return 0;
}

int fl_client_cmd_train(int argc, char **argv)
{
    enum { O_MODEL = 1, O_EPOCHS, O_BATCH, O_LR, O_MOMENTUM, O_WD, O_SEED, O_THREADS, O_INIT, O_SAVE, O_LIMIT, O_JSON };
    static const fl_cli_opt_t opts[] = {
        {"model", 1, O_MODEL},   {"epochs", 1, O_EPOCHS},   {"batch", 1, O_BATCH},       {"lr", 1, O_LR},
        {"momentum", 1, O_MOMENTUM}, {"weight-decay", 1, O_WD}, {"seed", 1, O_SEED}, {"threads", 1, O_THREADS},
        {"init", 1, O_INIT},     {"save", 1, O_SAVE},       {"limit", 1, O_LIMIT},       {"json", 0, O_JSON},
        {NULL, 0, 0}};
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    fl_dataset_t train, test;
    fl_dataset_init(&train);
    fl_dataset_init(&test);
    fl_model_t *m = NULL;
    const char *model = NULL, *init = NULL, *save = NULL;
    fl_train_config_t cfg = {.epochs = 1, .batch = 20, .sgd = {.lr = 0.05f}, .seed = 1};
    long threads = 1, limit = 0, l;
    double x;
    int json = 0, status = FL_CLI_USAGE, wd_set = 0, id, bad = 0;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "train", opts, fl_data_spec_opts, argc, argv);
    while (!bad && (id = fl_cli_next(&cli)) != FL_CLI_END) {
        switch (id) {
        case FL_CLI_ERR: bad = 1; break;
        case FL_CLI_ARG: bad = fl_cli_error(&cli, "unexpected argument '%s'", cli.val); break;
        case O_MODEL: model = cli.val; break;
        case O_EPOCHS:
            if (!(bad = fl_cli_get_long(&cli, 1, 100000, &l) != 0))
                cfg.epochs = (int)l;
            break;
        case O_BATCH:
            if (!(bad = fl_cli_get_long(&cli, 1, 1000000, &l) != 0))
                cfg.batch = (size_t)l;
            break;
        case O_LR:
            if (!(bad = fl_cli_get_double(&cli, 0, 1e6, &x) != 0))
                cfg.sgd.lr = (float)x;
            break;
        case O_MOMENTUM:
            if (!(bad = fl_cli_get_double(&cli, 0, 0.999999, &x) != 0))
                cfg.sgd.momentum = (float)x;
            break;
        case O_WD:
            if (!(bad = fl_cli_get_double(&cli, 0, 1e6, &x) != 0))
                cfg.sgd.weight_decay = (float)x;
            wd_set = 1;
            break;
        case O_SEED: bad = fl_cli_get_u64(&cli, &cfg.seed) != 0; break;
        case O_THREADS: bad = fl_cli_get_long(&cli, 1, 64, &threads) != 0; break;
        case O_LIMIT: bad = fl_cli_get_long(&cli, 1, LONG_MAX, &limit) != 0; break;
        case O_INIT: init = cli.val; break;
        case O_SAVE: save = cli.val; break;
        case O_JSON: json = 1; break;
        default: bad = fl_data_spec_apply(&spec, &cli) != 0; break;
        }
    }
    if (bad)
        goto out;
    if (!model) {
        fl_cli_error(&cli, "--model is required");
        goto out;
    }
    status = 1;
    if (!fl_models_find(model)) {
        fprintf(stderr, "train: unknown model '%s' (fedopt-client models lists them)\n", model);
        goto out;
    }
    if (fl_data_spec_validate(&spec) || fl_data_spec_load(&spec, "train", &train) ||
        fl_data_spec_load(&spec, "test", &test))
        goto out;
    if (limit && (size_t)limit < train.n)
        train.n = (size_t)limit;
    const fl_model_info_t *info = fl_models_find(model);
    if (!wd_set)
        cfg.sgd.weight_decay = info->weight_decay;
    fl_model_spec_t ms;
    fl_model_spec_from_dataset(&train, &ms);
    if (test.num_classes > ms.num_classes)
        ms.num_classes = test.num_classes;
    if (fl_model_create(model, &ms, &m) || fl_model_set_threads(m, (int)threads))
        goto out;
    /* Conv and LSTM models split each batch across the threads (every layer
     * in parallel, GEMM on one thread); dense ones thread their GEMMs. */
    fl_gemm_set_threads(fl_model_gemm_threads(m));
    if (init) {
        if (fl_safetensors_load(init, &m->params))
            goto out;
    } else {
        fl_model_init_params(m, cfg.seed);
    }
    if (!json)
        printf("train %s (%zu params) on %zu examples, test %zu; batch %zu, lr %g, %ld thread%s, "
               "%s\n",
               model, m->params.numel, train.n, test.n, cfg.batch, (double)cfg.sgd.lr, threads,
               threads == 1 ? "" : "s", fl_gemm_backend());
    epoch_ctx_t ctx = {m, &test, json};
    int rc = fl_train_run(m, &train, &cfg, on_epoch, &ctx, NULL);
    if (rc) {
        fprintf(stderr, "train: %s\n", fl_strerror(rc));
        goto out;
    }
    if (save && fl_safetensors_save(save, &m->params))
        goto out;
    status = 0;
out:
    fl_model_free(m);
    fl_dataset_free(&train);
    fl_dataset_free(&test);
    return status;
}
