/* fedopt-server updates DB RUN ROUND: lists every update of a round, accepted,
 * refused or dropped, with the reason. */
#include <limits.h>
#include <stdio.h>

#include "server/commands.h"
#include "server/store.h"

void fl_server_cmd_updates_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server updates DB RUN ROUND\n"
                 "lists every update of the round, accepted, refused or dropped, with the reason\n");
}

int fl_server_cmd_updates(int argc, char **argv)
{
    const char *pos[3];
    int n;
    long run, round;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "updates", NULL, NULL, argc, argv);
    if (fl_cli_positionals(&cli, "DB RUN ROUND", 3, 3, pos, &n))
        return FL_CLI_USAGE;
    fl_cli_arg(&cli, "RUN", pos[1]);
    if (fl_cli_get_long(&cli, 1, LONG_MAX, &run))
        return FL_CLI_USAGE;
    fl_cli_arg(&cli, "ROUND", pos[2]);
    if (fl_cli_get_long(&cli, 0, LONG_MAX, &round))
        return FL_CLI_USAGE;
    fl_store_t *st = NULL;
    if (fl_store_open(pos[0], 1, &st))
        return 1;
    int rc = fl_store_print_updates(st, run, round, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
