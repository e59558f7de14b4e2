/* fedopt-server runs DB: lists the runs in a database. */
#include <stdio.h>

#include "server/commands.h"
#include "server/store.h"

void fl_server_cmd_runs_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server runs DB\n"
                 "lists the runs in the database DB\n");
}

int fl_server_cmd_runs(int argc, char **argv)
{
    const char *pos[1];
    int n;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "runs", NULL, NULL, argc, argv);
    if (fl_cli_positionals(&cli, "DB", 1, 1, pos, &n))
        return FL_CLI_USAGE;
    fl_store_t *st = NULL;
    if (fl_store_open(pos[0], 1, &st))
        return 1;
    int rc = fl_store_print_runs(st, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
