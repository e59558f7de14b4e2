/* fedopt-client models: lists every model with its parameter count, input
 * and output shape, loss and metric, built for the paper's shapes (or for
 * --classes C / --input D1xD2x.. when given). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/commands.h"
#include "common/base/cli.h"
#include "common/base/error.h"
#include "common/base/json.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"

static const char *loss_name(fl_model_loss_t l)
{
    switch (l) {
    case FL_LOSS_SOFTMAX_CE: return "softmax-ce";
    case FL_LOSS_SEQ_CE: return "seq-ce";
    case FL_LOSS_SIGMOID_BCE: return "sigmoid-bce";
    case FL_LOSS_MSE_INPUT: return "mse";
    }
    return "?";
}

static const char *metric_name(fl_model_metric_t m)
{
    return m == FL_METRIC_ACCURACY ? "accuracy" : m == FL_METRIC_RECALL5 ? "recall@5" : "mse";
}

void fl_client_cmd_models_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-client models [--classes C] [--input D1xD2x...] [--json] [--verbose]\n"
                 "  lists every model with its parameter count and shapes; --verbose adds the\n"
                 "  tensors (PyTorch state_dict names) and the GEMM backend\n");
}

/* Parses "1x28x28" into a shape. */
static int parse_shape(const char *s, fl_shape_t *out)
{
    fl_shape_t sh = {0, {0}};
    const char *p = s;
    while (*p) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v <= 0 || v > (1LL << 31) || sh.ndim == FL_SHAPE_MAX_DIMS)
            return FL_EINVAL;
        sh.d[sh.ndim++] = v;
        if (*end == 'x')
            end++;
        else if (*end)
            return FL_EINVAL;
        p = end;
    }
    if (!sh.ndim)
        return FL_EINVAL;
    *out = sh;
    return 0;
}

int fl_client_cmd_models(int argc, char **argv)
{
    enum { O_CLASSES = 1, O_INPUT, O_JSON, O_VERBOSE };
    static const fl_cli_opt_t opts[] = {{"classes", 1, O_CLASSES}, {"input", 1, O_INPUT}, {"json", 0, O_JSON},
                                        {"verbose", 0, O_VERBOSE}, {NULL, 0, 0}};
    int json = 0, verbose = 0, have_shape = 0, id;
    long classes = 0;
    fl_shape_t shape;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "models", opts, NULL, argc, argv);
    while ((id = fl_cli_next(&cli)) != FL_CLI_END) {
        switch (id) {
        case FL_CLI_ERR: return FL_CLI_USAGE;
        case FL_CLI_ARG: return fl_cli_error(&cli, "unexpected argument '%s'", cli.val);
        case O_CLASSES:
            if (fl_cli_get_long(&cli, 1, 1000000, &classes))
                return FL_CLI_USAGE;
            break;
        case O_INPUT:
            if (parse_shape(cli.val, &shape))
                return fl_cli_bad_value(&cli, "is not a shape like 1x28x28");
            have_shape = 1;
            break;
        case O_JSON: json = 1; break;
        case O_VERBOSE: verbose = 1; break;
        }
    }
    if (!json)
        printf("%-12s %12s  %-14s %-12s %-12s %-9s %s\n", "model", "params", "input", "output",
               "loss", "metric", "architecture");
    for (size_t i = 0; i < fl_models_count(); i++) {
        const fl_model_info_t *info = fl_models_at(i);
        fl_model_spec_t spec = info->paper;
        if (have_shape)
            spec.input = shape;
        if (classes) {
            spec.num_classes = (int)classes;
            if (info->loss == FL_LOSS_SIGMOID_BCE)
                spec.label_dim = (size_t)classes;
        }
        fl_model_t *m = NULL;
        if (fl_model_create(info->name, &spec, &m)) {
            if (json) {
                fl_json_t j;
                fl_json_init_file(&j, stdout);
                fl_json_obj_begin(&j);
                fl_json_key(&j, "model");
                fl_json_str(&j, info->name);
                fl_json_key(&j, "error");
                fl_json_str(&j, "does not fit this input");
                fl_json_obj_end(&j);
                fl_json_finish(&j, NULL, NULL);
                putchar('\n');
            } else {
                printf("%-12s (does not fit this input)\n", info->name);
            }
            continue;
        }
        char in[64], out[64];
        fl_shape_str(&spec.input, in, sizeof in);
        fl_shape_str(fl_model_out_shape(m), out, sizeof out);
        if (json) {
            fl_json_t j;
            fl_json_init_file(&j, stdout);
            fl_json_obj_begin(&j);
            fl_json_key(&j, "model");
            fl_json_str(&j, info->name);
            fl_json_key(&j, "params");
            fl_json_u64(&j, m->params.numel);
            fl_json_key(&j, "input");
            fl_json_raw(&j, in); /* fl_shape_str writes a JSON array: [1, 28, 28] */
            fl_json_key(&j, "output");
            fl_json_raw(&j, out);
            fl_json_key(&j, "loss");
            fl_json_str(&j, loss_name(info->loss));
            fl_json_key(&j, "metric");
            fl_json_str(&j, metric_name(info->metric));
            fl_json_key(&j, "tensors");
            fl_json_arr_begin(&j);
            for (size_t v = 0; v < m->params.nviews; v++)
                fl_json_str(&j, m->params.views[v].name);
            fl_json_arr_end(&j);
            fl_json_obj_end(&j);
            fl_json_finish(&j, NULL, NULL);
            putchar('\n');
        } else {
            char num[32];
            /* thousands separators by hand: printf's ' flag is not C11 */
            char raw[32];
            snprintf(raw, sizeof raw, "%zu", m->params.numel);
            size_t L = strlen(raw), k = 0;
            for (size_t c = 0; c < L; c++) {
                num[k++] = raw[c];
                if ((L - c - 1) % 3 == 0 && c + 1 < L)
                    num[k++] = ',';
            }
            num[k] = 0;
            printf("%-12s %12s  %-14s %-12s %-12s %-9s %s\n", info->name, num, in, out,
                   loss_name(info->loss), metric_name(info->metric), info->summary);
            if (verbose)
                for (size_t v = 0; v < m->params.nviews; v++) {
                    const fl_param_view_t *pv = &m->params.views[v];
                    fl_shape_t s = fl_shape_make(pv->ndim, pv->shape);
                    char sb[64];
                    printf("    %-16s %s\n", pv->name, fl_shape_str(&s, sb, sizeof sb));
                }
        }
        fl_model_free(m);
    }
    if (verbose && !json)
        printf("gemm: %s\n", fl_gemm_backend());
    return 0;
}
