/* fedopt-server export DB RUN [ROUND] FILE.safetensors: writes a checkpoint's
 * model (the newest one of the run by default) as safetensors with the
 * model's PyTorch tensor names. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/models.h"
#include "common/nn/safetensors.h"
#include "server/commands.h"
#include "server/eval.h"
#include "server/store.h"

/* Builds the run's model with the layout its checkpoints have: the paper's
 * shapes, or, when that does not match, the shapes of the run's evaluation
 * data (the daemon builds it from the data when there is any). */
static int build_model(fl_store_t *st, long long run, size_t numel, fl_model_t **m)
{
    char model[256], data[4096];
    int rc = fl_store_run_config_value(st, run, "model", model, sizeof model);
    if (rc) {
        fprintf(stderr, "fedopt-server export: run %lld has no model in its config\n", run);
        return rc;
    }
    const fl_model_info_t *info = fl_models_find(model);
    if (!info) {
        fprintf(stderr, "fedopt-server export: run %lld used model '%s', unknown to this build\n", run, model);
        return FL_ENOTFOUND;
    }
    if ((rc = fl_model_create(model, &info->paper, m)))
        return rc;
    if ((*m)->params.numel == numel)
        return 0;
    fl_model_free(*m);
    *m = NULL;
    if (fl_store_run_config_value(st, run, "eval_data", data, sizeof data) == 0 && data[0]) {
        fl_eval_t *ev = NULL;
        if ((rc = fl_eval_create(model, data, 1, &ev)) == 0) {
            rc = fl_model_create(model, fl_eval_spec(ev), m);
            fl_eval_free(ev);
            if (rc == 0 && (*m)->params.numel == numel)
                return 0;
        }
    }
    fprintf(stderr, "fedopt-server export: cannot rebuild a %s with %zu parameters\n", model, numel);
    return FL_ESHAPE;
}

void fl_server_cmd_export_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server export DB RUN [ROUND] FILE.safetensors\n"
                 "writes the model of ROUND's checkpoint (default: the newest)\n");
}

int fl_server_cmd_export(int argc, char **argv)
{
    const char *pos[4];
    int n;
    long run, round = -1;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "export", NULL, NULL, argc, argv);
    if (fl_cli_positionals(&cli, "DB RUN [ROUND] FILE", 3, 4, pos, &n))
        return FL_CLI_USAGE;
    fl_cli_arg(&cli, "RUN", pos[1]);
    if (fl_cli_get_long(&cli, 1, LONG_MAX, &run))
        return FL_CLI_USAGE;
    if (n == 4) {
        fl_cli_arg(&cli, "ROUND", pos[2]);
        if (fl_cli_get_long(&cli, 0, LONG_MAX, &round))
            return FL_CLI_USAGE;
    }
    const char *out = pos[n - 1];
    fl_store_t *st = NULL;
    fl_store_checkpoint_t cp = {0};
    fl_model_t *m = NULL;
    int rc;
    if ((rc = fl_store_open(pos[0], 1, &st)))
        goto out;
    if ((rc = fl_store_checkpoint_load(st, run, round, &cp))) {
        if (rc == FL_ENOTFOUND && round >= 0)
            fprintf(stderr, "fedopt-server export: run %ld has no checkpoint for round %ld (see fedopt-server "
                            "rounds)\n", run, round);
        else if (rc == FL_ENOTFOUND)
            fprintf(stderr, "fedopt-server export: run %ld has no checkpoint\n", run);
        goto out;
    }
    if ((rc = build_model(st, run, cp.numel, &m)))
        goto out;
    memcpy(m->params.data, cp.model, cp.numel * sizeof(float));
    if ((rc = fl_safetensors_save(out, &m->params)))
        goto out;
    printf("run %ld round %lld: %zu parameters written to %s\n", run, (long long)cp.round, cp.numel, out);
out:
    fl_model_free(m);
    fl_store_checkpoint_free(&cp);
    fl_store_close(st);
    return rc ? 1 : 0;
}
