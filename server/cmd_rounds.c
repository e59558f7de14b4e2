/* fedopt-server rounds DB [RUN]: lists the rounds of a run (default: the newest). */
#include <limits.h>
#include <stdio.h>

#include "server/commands.h"
#include "server/store.h"

void fl_server_cmd_rounds_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server rounds DB [RUN]\n"
                 "lists the rounds of run RUN (default: the newest; fedopt-server runs DB lists them)\n");
}

int fl_server_cmd_rounds(int argc, char **argv)
{
    const char *pos[2];
    int n;
    long run = 0;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "rounds", NULL, NULL, argc, argv);
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
    int rc = fl_store_print_rounds(st, run, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
