/* fedopt-server evals DB RUN ROUND: a round's federated evaluation — the
 * example-weighted metrics and every asked client's answer, accepted, refused
 * or dropped, with the reason. */
#include <stdio.h>

#include "server/commands.h"

void fl_server_cmd_evals_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server evals DB RUN ROUND\n"
                 "shows the round's federated evaluation: the example-weighted metrics and every\n"
                 "asked client's answer, accepted, refused or dropped, with the reason\n");
}

int fl_server_cmd_evals(int argc, char **argv)
{
    return fl__server_cmd_round_listing(argc, argv, "evals", 1, fl_store_print_fedeval);
}
