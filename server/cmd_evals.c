/* fedopt-server evals DB RUN ROUND: a round's federated evaluation — the
 * example-weighted metrics and every asked client's answer, accepted, refused
 * or dropped, with the reason. */
#include <limits.h>
#include <stdio.h>

#include "server/commands.h"
#include "server/store.h"

void fl_server_cmd_evals_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server evals DB RUN ROUND\n"
                 "shows the round's federated evaluation: the example-weighted metrics and every\n"
                 "asked client's answer, accepted, refused or dropped, with the reason\n");
}

int fl_server_cmd_evals(int argc, char **argv)
{
    const char *pos[3];
    int n;
    long run, round;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "evals", NULL, NULL, argc, argv);
    if (fl_cli_positionals(&cli, "DB RUN ROUND", 3, 3, pos, &n))
        return FL_CLI_USAGE;
    fl_cli_arg(&cli, "RUN", pos[1]);
    if (fl_cli_get_long(&cli, 1, LONG_MAX, &run))
        return FL_CLI_USAGE;
    fl_cli_arg(&cli, "ROUND", pos[2]);
    if (fl_cli_get_long(&cli, 1, LONG_MAX, &round))
        return FL_CLI_USAGE;
    fl_store_t *st = NULL;
    if (fl_store_open(pos[0], 1, &st))
        return 1;
    int rc = fl_store_print_fedeval(st, run, round, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
