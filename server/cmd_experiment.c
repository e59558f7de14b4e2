/* fedopt-server experiment run|status|report|presets: the paper's study as a
 * command (server/exp_*: grid, cells, sweep, report). It lives in
 * fedopt-server because a cell is a server run plus a fleet and the report
 * reads the server's round log; fedopt-client is found next to this binary. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/cli.h"
#include "common/base/error.h"
#include "server/commands.h"
#include "server/exp_report.h"
#include "server/exp_sweep.h"

void fl_server_cmd_experiment_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-server experiment run GRID.ini --out DIR [--parallel N] [--shard I/N] [--dry-run]\n"
            "                                   [--extend]\n"
            "       fedopt-server experiment status DIR\n"
            "       fedopt-server experiment report DIR... --out REPORT_DIR [--finished-only]\n"
            "       fedopt-server experiment presets\n\n"
            "run     runs every cell of the grid (a fedopt-server and a fedopt-client fleet over mutual TLS on\n"
            "        loopback per cell, N cells at once) into DIR; again, it skips finished cells and resumes\n"
            "        an interrupted one. A grid whose cells changed is refused unless --extend.\n"
            "        --shard I/N runs the cells whose index (in --dry-run's order) mod N == I.\n"
            "status  each cell of DIR: done, rounds committed, or not started\n"
            "report  report.md, grid.csv, best.csv and plots (gnuplot, PNG and SVG) from one or more DIRs\n"
            "        (shards); the best cell per task and optimizer has the highest training accuracy\n"
            "        averaged over its last 100 rounds (fewer when shorter), averaged over seeds;\n"
            "        unfinished cells count with the rounds they have, or not at all with --finished-only\n\n"
            "GRID.ini:\n"
            "  [experiment]  preset = fmnist_cr   rounds = 100   seeds = 1,2,3   eval_every = 1\n"
            "                eval_max_examples = 2000   jobs = 2   (and model, data, eval_data, partition,\n"
            "                clients, batch_size, data_seed, metric to override the preset)\n"
            "  [axes]        server_opt = fedavg, fedadam   server_lr = 10^-3..10^0 step 0.5\n"
            "                client_lr = paper   tau = paper   clients_per_round = 10   local_epochs = 1\n"
            "                alpha = 0.1, 1   (server_lr.fedavg = ...: one optimizer's own values)\n"
            "  [server]      any other fedopt-server run setting (round_deadline = 300, ...)\n"
            "presets:\n");
    fl_exp_preset_list(out);
}

/* fedopt-client next to this program (both are installed together). */
static int find_binaries(char *srv, char *cli, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", srv, len - 1);
    if (n <= 0)
        return FL_ENOTFOUND;
    srv[n] = 0;
    const char *slash = strrchr(srv, '/');
    if (!slash || snprintf(cli, len, "%.*s/fedopt-client", (int)(slash - srv), srv) >= (int)len)
        return FL_ERANGE;
    if (access(cli, X_OK) != 0) {
        fprintf(stderr, "experiment: %s not found (fedopt-client must be next to fedopt-server)\n", cli);
        return FL_ENOTFOUND;
    }
    return 0;
}

enum { O_OUT = 1, O_PARALLEL, O_SHARD, O_DRY_RUN, O_EXTEND, O_FINISHED_ONLY };

static int cmd_run(int argc, char **argv)
{
    static const fl_cli_opt_t opts[] = {{"out", 1, O_OUT},         {"parallel", 1, O_PARALLEL}, {"shard", 1, O_SHARD},
                                        {"dry-run", 0, O_DRY_RUN}, {"extend", 0, O_EXTEND},     {NULL, 0, 0}};
    fl_exp_sweep_opts_t o = {.parallel = 1};
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "experiment run", opts, NULL, argc, argv);
    long v;
    for (int id; (id = fl_cli_next(&cli)) != FL_CLI_END;) {
        switch (id) {
        case FL_CLI_ERR:
            return FL_CLI_USAGE;
        case O_OUT:
            o.out = cli.val;
            break;
        case O_PARALLEL:
            if (fl_cli_get_long(&cli, 1, 256, &v))
                return FL_CLI_USAGE;
            o.parallel = (size_t)v;
            break;
        case O_SHARD:
            if (fl_exp_shard_parse(cli.val, &o.shard_i, &o.shard_n))
                return fl_cli_bad_value(&cli, "is not I/N with 0 <= I < N");
            break;
        case O_DRY_RUN:
            o.dry_run = 1;
            break;
        case O_EXTEND:
            o.extend = 1;
            break;
        case FL_CLI_ARG:
            if (o.grid_path)
                return fl_cli_error(&cli, "one GRID.ini only ('%s' is a second)", cli.val);
            o.grid_path = cli.val;
            break;
        }
    }
    if (!o.grid_path)
        return fl_cli_error(&cli, "missing GRID.ini");
    if (!o.out && !o.dry_run)
        return fl_cli_error(&cli, "--out DIR is required");
    char srv[PATH_MAX], cli_bin[PATH_MAX];
    if (!o.dry_run && find_binaries(srv, cli_bin, sizeof srv))
        return 1;
    fl_exp_env_t env = {srv, cli_bin, 600};
    int rc = fl_exp_sweep_run(&o, &env, stdout);
    return rc == FL_ECONFIG ? 2 : rc ? 1 : 0;
}

static int cmd_report(int argc, char **argv)
{
    static const fl_cli_opt_t opts[] = {{"out", 1, O_OUT}, {"finished-only", 0, O_FINISHED_ONLY}, {NULL, 0, 0}};
    const char *out = NULL;
    unsigned flags = 0;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    size_t n = 0;
    if (!dirs)
        return 1;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "experiment report", opts, NULL, argc, argv);
    int rc = 0;
    for (int id; !rc && (id = fl_cli_next(&cli)) != FL_CLI_END;) {
        if (id == FL_CLI_ERR)
            rc = FL_CLI_USAGE;
        else if (id == O_OUT)
            out = cli.val;
        else if (id == O_FINISHED_ONLY)
            flags |= FL_EXP_REPORT_FINISHED_ONLY;
        else if (id == FL_CLI_ARG)
            dirs[n++] = cli.val;
    }
    if (!rc && !n)
        rc = fl_cli_error(&cli, "missing DIR (an experiment directory; several for shards)");
    if (!rc && !out)
        rc = fl_cli_error(&cli, "--out REPORT_DIR is required");
    if (!rc)
        rc = fl_exp_report_write(dirs, n, out, flags, stdout) ? 1 : 0;
    free(dirs);
    return rc;
}

int fl_server_cmd_experiment(int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(sub, "report") == 0)
        return cmd_report(argc - 1, argv + 1);
    fl_cli_t cli;
    const char *pos[1];
    int n;
    if (strcmp(sub, "status") == 0) {
        fl_cli_init(&cli, "fedopt-server", "experiment status", NULL, NULL, argc - 1, argv + 1);
        if (fl_cli_positionals(&cli, "DIR", 1, 1, pos, &n))
            return FL_CLI_USAGE;
        return fl_exp_sweep_status(pos[0], stdout) ? 1 : 0;
    }
    if (strcmp(sub, "presets") == 0) {
        fl_cli_init(&cli, "fedopt-server", "experiment presets", NULL, NULL, argc - 1, argv + 1);
        if (fl_cli_positionals(&cli, "", 0, 0, pos, &n))
            return FL_CLI_USAGE;
        fl_exp_preset_list(stdout);
        return 0;
    }
    fl_cli_init(&cli, "fedopt-server", "experiment", NULL, NULL, argc, argv);
    return fl_cli_error(&cli, "%s '%s': the subcommands are run, status, report and presets",
                        *sub ? "unknown subcommand" : "missing subcommand", sub);
}
