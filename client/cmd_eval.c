/* fedopt-client eval: evaluates a model file (safetensors, PyTorch names) on
 * a data split: a model exported from PyTorch, or one a federated run produced. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "client/commands.h"
#include "common/data/spec.h"
#include "common/base/error.h"
#include "common/base/json.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"
#include "common/nn/safetensors.h"
#include "common/nn/train.h"

void fl_client_cmd_eval_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-client eval --model M --init FILE [--data SPEC] [--split test|train]\n"
            "         [--batch B] [--threads T] [--json]\n"
            "  prints loss, accuracy (recall@5 for bowlr; none for the autoencoder) and the\n"
            "  number of examples; --json prints {\"loss\":..,\"accuracy\":..,\"examples\":..}\n"
            "data options:\n%s",
            fl_data_spec_usage());
}

int fl_client_cmd_eval(int argc, char **argv)
{
    enum { O_MODEL = 1, O_INIT, O_SPLIT, O_BATCH, O_THREADS, O_JSON };
    static const fl_cli_opt_t opts[] = {{"model", 1, O_MODEL}, {"init", 1, O_INIT},       {"split", 1, O_SPLIT},
                                        {"batch", 1, O_BATCH}, {"threads", 1, O_THREADS}, {"json", 0, O_JSON},
                                        {NULL, 0, 0}};
    static const char *const splits[] = {"test", "train", NULL};
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    fl_dataset_t d;
    fl_dataset_init(&d);
    fl_model_t *m = NULL;
    const char *model = NULL, *init = NULL;
    long batch = 500, threads = 1;
    int json = 0, status = FL_CLI_USAGE, split = 0, id, bad = 0;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "eval", opts, fl_data_spec_opts, argc, argv);
    while (!bad && (id = fl_cli_next(&cli)) != FL_CLI_END) {
        switch (id) {
        case FL_CLI_ERR: bad = 1; break;
        case FL_CLI_ARG: bad = fl_cli_error(&cli, "unexpected argument '%s'", cli.val); break;
        case O_MODEL: model = cli.val; break;
        case O_INIT: init = cli.val; break;
        case O_SPLIT: bad = fl_cli_get_choice(&cli, splits, &split) != 0; break;
        case O_BATCH: bad = fl_cli_get_long(&cli, 1, 100000, &batch) != 0; break;
        case O_THREADS: bad = fl_cli_get_long(&cli, 1, 64, &threads) != 0; break;
        case O_JSON: json = 1; break;
        default: bad = fl_data_spec_apply(&spec, &cli) != 0; break;
        }
    }
    if (bad)
        goto out;
    if (!model || !init) {
        fl_cli_error(&cli, "--model and --init are required");
        goto out;
    }
    status = 1;
    if (!fl_models_find(model)) {
        fprintf(stderr, "eval: unknown model '%s' (fedopt-client models lists them)\n", model);
        goto out;
    }
    if (fl_data_spec_validate(&spec) || fl_data_spec_load(&spec, splits[split], &d))
        goto out;
    fl_model_spec_t ms;
    fl_model_spec_from_dataset(&d, &ms);
    if (fl_model_create(model, &ms, &m) || fl_model_set_threads(m, (int)threads) ||
        fl_safetensors_load(init, &m->params))
        goto out;
    fl_gemm_set_threads(fl_model_gemm_threads(m)); /* see fl_model_set_threads */
    if (!fl_f32_all_finite(m->params.data, m->params.numel)) {
        fprintf(stderr, "eval: %s holds NaN or Inf parameters\n", init);
        goto out;
    }
    fl_train_stats_t st;
    int rc = fl_train_eval(m, &d, (size_t)batch, &st);
    if (rc) {
        fprintf(stderr, "eval: %s\n", fl_strerror(rc));
        goto out;
    }
    if (json) {
        fl_json_t j;
        fl_json_init_file(&j, stdout);
        fl_json_obj_begin(&j);
        fl_json_key(&j, "loss");
        fl_json_double(&j, st.loss, 6);
        fl_json_key(&j, "accuracy");
        fl_json_double(&j, st.metric, 6);
        fl_json_key(&j, "examples");
        fl_json_u64(&j, st.examples);
        fl_json_obj_end(&j);
        fl_json_finish(&j, NULL, NULL);
        putchar('\n');
    } else {
        printf("loss %.4f  %s %.4f  examples %zu\n", st.loss,
               m->info->metric == FL_METRIC_RECALL5 ? "recall@5" : "accuracy", st.metric,
               st.examples);
    }
    status = 0;
out:
    fl_model_free(m);
    fl_dataset_free(&d);
    return status;
}
