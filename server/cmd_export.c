/* fedopt-server export DB RUN [ROUND] FILE.safetensors: writes a checkpoint's
 * model (the newest one of the run by default) as safetensors with the
 * model's PyTorch tensor names. */
#include <stdio.h>
#include <stdlib.h>
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

int fl_server_cmd_export(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        int help = argc == 2 && strcmp(argv[1], "--help") == 0;
        fprintf(help ? stdout : stderr, "usage: fedopt-server export DB RUN [ROUND] FILE.safetensors\n"
                                        "writes the model of ROUND's checkpoint (default: the newest)\n");
        return help ? 0 : 2;
    }
    char *e1, *e2 = "";
    long long run = strtoll(argv[2], &e1, 10), round = -1;
    if (argc == 5)
        round = strtoll(argv[3], &e2, 10);
    if (*e1 || *e2 || run <= 0 || (argc == 5 && round < 0)) {
        fprintf(stderr, "fedopt-server export: RUN and ROUND must be numbers\n");
        return 2;
    }
    const char *out = argv[argc - 1];
    fl_store_t *st = NULL;
    fl_store_checkpoint_t cp = {0};
    fl_model_t *m = NULL;
    int rc;
    if ((rc = fl_store_open(argv[1], 1, &st)))
        goto out;
    /* The exported checkpoint is verified by its own checksum below; damage
     * elsewhere in the file is said, not fatal. */
    if (fl_store_quick_check(st))
        fprintf(stderr, "fedopt-server export: warning: the database is damaged (see the log above; "
                        "fedopt-server check %s)\n", argv[1]);
    if ((rc = fl_store_checkpoint_load(st, run, round, &cp))) {
        if (rc == FL_ENOTFOUND && round >= 0)
            fprintf(stderr, "fedopt-server export: run %lld has no checkpoint for round %lld (see fedopt-server "
                            "rounds)\n", run, round);
        else if (rc == FL_ENOTFOUND)
            fprintf(stderr, "fedopt-server export: run %lld has no checkpoint\n", run);
        goto out;
    }
    if ((rc = build_model(st, run, cp.numel, &m)))
        goto out;
    memcpy(m->params.data, cp.model, cp.numel * sizeof(float));
    if ((rc = fl_safetensors_save(out, &m->params)))
        goto out;
    printf("run %lld round %lld: %zu parameters written to %s\n", run, (long long)cp.round, cp.numel, out);
out:
    fl_model_free(m);
    fl_store_checkpoint_free(&cp);
    fl_store_close(st);
    return rc ? 1 : 0;
}
