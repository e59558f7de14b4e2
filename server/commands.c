/* commands: what several fedopt-server subcommands share. */
#include <limits.h>

#include "server/commands.h"

int fl__server_cmd_round_listing(int argc, char **argv, const char *name, long first_round,
                                 fl__server_round_printer_fn print)
{
    const char *pos[3];
    int n;
    long run, round;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", name, NULL, NULL, argc, argv);
    if (fl_cli_positionals(&cli, "DB RUN ROUND", 3, 3, pos, &n))
        return FL_CLI_USAGE;
    fl_cli_arg(&cli, "RUN", pos[1]);
    if (fl_cli_get_long(&cli, 1, LONG_MAX, &run))
        return FL_CLI_USAGE;
    fl_cli_arg(&cli, "ROUND", pos[2]);
    if (fl_cli_get_long(&cli, first_round, LONG_MAX, &round))
        return FL_CLI_USAGE;
    fl_store_t *st = NULL;
    if (fl_store_open(pos[0], 1, &st))
        return 1;
    int rc = print(st, run, round, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
