/* fedopt-server updates DB RUN ROUND: lists every update of a round, accepted,
 * refused or dropped, with the reason. */
#include <stdio.h>

#include "server/commands.h"

void fl_server_cmd_updates_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server updates DB RUN ROUND\n"
                 "lists every update of the round, accepted, refused or dropped, with the reason\n");
}

int fl_server_cmd_updates(int argc, char **argv)
{
    return fl__server_cmd_round_listing(argc, argv, "updates", 0, fl_store_print_updates);
}
