/* fedopt-client eval: evaluates a model file (safetensors, PyTorch names) on
 * a data split: a model exported from PyTorch, or one a federated run produced. */
#include <getopt.h>
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

static void usage(FILE *out)
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
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'}, {"init", required_argument, NULL, 'i'},
        {"split", required_argument, NULL, 'p'}, {"batch", required_argument, NULL, 'b'},
        {"threads", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    fl_dataset_t d;
    fl_dataset_init(&d);
    fl_model_t *m = NULL;
    const char *model = NULL, *init = NULL, *split = "test";
    long batch = 500, threads = 1;
    int json = 0, o, status = 2;
    if (fl_data_spec_parse_args(&spec, &argc, argv))
        goto out;
    optind = 1;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'i': init = optarg; break;
        case 'p':
            split = optarg;
            if (strcmp(split, "test") && strcmp(split, "train"))
                goto bad;
            break;
        case 'b':
            if (fl_cli_long(optarg, 1, 100000, &batch))
                goto bad;
            break;
        case 't':
            if (fl_cli_long(optarg, 1, 64, &threads))
                goto bad;
            break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); status = 0; goto out;
        default: usage(stderr); goto out;
        }
    }
    if (!model || !init || optind != argc) {
        fprintf(stderr, "eval: --model and --init are required\n");
        usage(stderr);
        goto out;
    }
    status = 1;
    if (!fl_models_find(model)) {
        fprintf(stderr, "eval: unknown model '%s' (fedopt-client models lists them)\n", model);
        goto out;
    }
    if (fl_data_spec_validate(&spec) || fl_data_spec_load(&spec, split, &d))
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
    goto out;
bad:
    fprintf(stderr, "eval: bad value '%s'\n", optarg);
    usage(stderr);
out:
    fl_model_free(m);
    fl_dataset_free(&d);
    return status;
}
