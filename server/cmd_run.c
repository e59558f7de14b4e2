/* fedopt-server run [--config FILE] [--name value ...]: runs the federation. */
#include <malloc.h>
#include <stdio.h>

#include "common/base/log.h"
#include "server/commands.h"
#include "server/config.h"
#include "server/daemon.h"

void fl_server_cmd_run_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server run [--config FILE] [--SETTING VALUE ...]\n\n"
                 "Runs a federated training: waits for clients over mutual TLS, runs the rounds,\n"
                 "logs each round to the SQLite database and checkpoints the model and optimizer.\n"
                 "SIGTERM/SIGINT stop cleanly; --resume continues the run later.\n\n");
    fl_server_config_print_help(out);
}

int fl_server_cmd_run(int argc, char **argv)
{
    fl_server_config_t cfg;
    int help = 0, status = 2;
    if (fl_server_config_defaults(&cfg)) {
        fprintf(stderr, "fedopt-server run: out of memory\n");
        return 1;
    }
    if (fl_server_config_parse_args(&cfg, argc - 1, argv + 1, &help))
        goto out;
    if (help) {
        fl_server_cmd_run_usage(stdout);
        status = 0;
        goto out;
    }
    if (fl_server_config_finish(&cfg))
        goto out;
    fl_log_level_t lvl;
    if (fl_log_parse_level(cfg.log_level, &lvl) == 0)
        fl_log_set_level(lvl);
    /* One malloc arena for the whole daemon. The thread pool's jobs (the
     * round's commit, ServerOpt finish, evaluation) run a few times a round;
     * in an arena of their own, what the SQLite commit allocates stays
     * resident there while the main heap has as much free, so the peak
     * resident memory counts it twice. At a few jobs a round, sharing one
     * arena costs no contention that bench_server can see, and its peak-RSS
     * figure (docs/benchmarks.md) is lower with it. */
    mallopt(M_ARENA_MAX, 1);
    status = fl_daemon_run(&cfg);
out:
    fl_server_config_free(&cfg);
    return status;
}
