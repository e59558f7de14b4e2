/* fedopt-server check DB [RUN]: checks a database as --resume does
 * (PRAGMA quick_check, then every checkpoint's checksum) and says what is
 * damaged. Exit 0 when nothing is, 1 otherwise. */
#include <limits.h>
#include <stdio.h>

#include "server/commands.h"
#include "server/store.h"

void fl_server_cmd_check_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server check DB [RUN]\n"
                 "runs PRAGMA quick_check and verifies every checkpoint's checksum (of RUN, default every run);\n"
                 "each problem is logged; exit 1 when anything is damaged\n");
}

int fl_server_cmd_check(int argc, char **argv)
{
    const char *pos[2];
    int n;
    long run = 0;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "check", NULL, NULL, argc, argv);
    if (fl_cli_positionals(&cli, "DB [RUN]", 1, 2, pos, &n))
        return FL_CLI_USAGE;
    if (n == 2) {
        fl_cli_arg(&cli, "RUN", pos[1]);
        if (fl_cli_get_long(&cli, 1, LONG_MAX, &run))
            return FL_CLI_USAGE;
    }
    fl_store_t *st = NULL;
    if (fl_store_open(pos[0], 1, &st))
        return 1;
    int qc = fl_store_quick_check(st);
    fl_store_damage_t d;
    int vc = fl_store_verify_checkpoints(st, run, &d);
    fl_store_close(st);
    printf("%s: quick_check %s; %lld checkpoints checked, %lld damaged%s\n", pos[0], qc ? "found damage" : "ok",
           (long long)d.checked, (long long)d.damaged,
           d.newest_damaged ? " (a run's newest among them: that run cannot resume)" : "");
    return qc || vc ? 1 : 0;
}
