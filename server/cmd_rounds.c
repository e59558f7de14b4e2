/* fedopt-server rounds DB [RUN]: lists the rounds of a run (default: the newest). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/commands.h"
#include "server/store.h"

int fl_server_cmd_rounds(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc >= 2 ? stdout : stderr, "usage: fedopt-server rounds DB [RUN]\n");
        return argc >= 2 ? 0 : 2;
    }
    long long run = 0;
    if (argc == 3) {
        char *end;
        run = strtoll(argv[2], &end, 10);
        if (*end || run <= 0) {
            fprintf(stderr, "fedopt-server rounds: RUN must be a run id (see fedopt-server runs DB)\n");
            return 2;
        }
    }
    fl_store_t *st = NULL;
    if (fl_store_open(argv[1], 1, &st))
        return 1;
    int rc = fl_store_print_rounds(st, run, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
