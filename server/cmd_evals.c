/* fedopt-server evals DB RUN ROUND: a round's federated evaluation — the
 * example-weighted metrics and every asked client's answer, accepted, refused
 * or dropped, with the reason. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "server/commands.h"
#include "server/store.h"

int fl_server_cmd_evals(int argc, char **argv)
{
    if (argc != 4) {
        int help = argc == 2 && strcmp(argv[1], "--help") == 0;
        fprintf(help ? stdout : stderr, "usage: fedopt-server evals DB RUN ROUND\n");
        return help ? 0 : 2;
    }
    char *e1, *e2;
    long long run = strtoll(argv[2], &e1, 10), round = strtoll(argv[3], &e2, 10);
    if (!argv[2][0] || !argv[3][0] || *e1 || *e2 || run <= 0 || round <= 0) {
        fprintf(stderr, "fedopt-server evals: RUN and ROUND must be positive numbers\n");
        return 2;
    }
    fl_store_t *st = NULL;
    if (fl_store_open(argv[1], 1, &st))
        return 1;
    int rc = fl_store_print_fedeval(st, run, round, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
