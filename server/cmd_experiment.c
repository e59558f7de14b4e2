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

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-server experiment run GRID.ini --out DIR [--parallel N] [--shard I/N] [--dry-run]\n"
            "                                   [--extend]\n"
            "       fedopt-server experiment status DIR\n"
            "       fedopt-server experiment report DIR... --out REPORT_DIR\n"
            "       fedopt-server experiment presets\n\n"
            "run     runs every cell of the grid (a fedopt-server and a fedopt-client fleet over mutual TLS on\n"
            "        loopback per cell, N cells at once) into DIR; again, it skips finished cells and resumes\n"
            "        an interrupted one. A grid whose cells changed is refused unless --extend.\n"
            "        --shard I/N runs the cells whose index (in --dry-run's order) mod N == I.\n"
            "status  each cell of DIR: done, rounds committed, or not started\n"
            "report  report.md, grid.csv, best.csv and plots (gnuplot, PNG and SVG) from one or more DIRs\n"
            "        (shards); the best cell per task and optimizer has the highest training accuracy\n"
            "        averaged over its last 100 rounds (fewer when shorter), averaged over seeds\n\n"
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

static int cmd_run(int argc, char **argv)
{
    fl_exp_sweep_opts_t o = {.parallel = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v;
        if (strcmp(a, "--out") == 0 && i + 1 < argc)
            o.out = argv[++i];
        else if (strcmp(a, "--parallel") == 0 && i + 1 < argc) {
            if (fl_cli_long(argv[++i], 1, 256, &v)) {
                fprintf(stderr, "experiment run: --parallel takes 1..256\n");
                return 2;
            }
            o.parallel = (size_t)v;
        } else if (strcmp(a, "--shard") == 0 && i + 1 < argc) {
            if (fl_exp_shard_parse(argv[++i], &o.shard_i, &o.shard_n)) {
                fprintf(stderr, "experiment run: --shard takes I/N with 0 <= I < N\n");
                return 2;
            }
        } else if (strcmp(a, "--dry-run") == 0)
            o.dry_run = 1;
        else if (strcmp(a, "--extend") == 0)
            o.extend = 1;
        else if (a[0] != '-' && !o.grid_path)
            o.grid_path = a;
        else {
            fprintf(stderr, "experiment run: unexpected '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!o.grid_path || (!o.out && !o.dry_run)) {
        usage(stderr);
        return 2;
    }
    char srv[PATH_MAX], cli[PATH_MAX];
    if (!o.dry_run && find_binaries(srv, cli, sizeof srv))
        return 1;
    fl_exp_env_t env = {srv, cli, 600};
    int rc = fl_exp_sweep_run(&o, &env, stdout);
    return rc == FL_ECONFIG ? 2 : rc ? 1 : 0;
}

static int cmd_report(int argc, char **argv)
{
    const char *out = NULL;
    const char **dirs = calloc((size_t)argc, sizeof *dirs);
    size_t n = 0;
    if (!dirs)
        return 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (argv[i][0] != '-')
            dirs[n++] = argv[i];
        else {
            fprintf(stderr, "experiment report: unexpected '%s'\n", argv[i]);
            free(dirs);
            return 2;
        }
    }
    if (!out || !n) {
        usage(stderr);
        free(dirs);
        return 2;
    }
    int rc = fl_exp_report_write(dirs, n, out, stdout);
    free(dirs);
    return rc ? 1 : 0;
}

int fl_server_cmd_experiment(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(sub, "report") == 0)
        return cmd_report(argc - 1, argv + 1);
    if (strcmp(sub, "status") == 0 && argc == 3)
        return fl_exp_sweep_status(argv[2], stdout) ? 1 : 0;
    if (strcmp(sub, "presets") == 0) {
        fl_exp_preset_list(stdout);
        return 0;
    }
    usage(stderr);
    return 2;
}
