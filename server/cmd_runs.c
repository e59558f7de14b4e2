/* fedopt-server runs DB: lists the runs in a database. */
#include <stdio.h>
#include <string.h>

#include "server/commands.h"
#include "server/store.h"

int fl_server_cmd_runs(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc == 2 ? stdout : stderr, "usage: fedopt-server runs DB\n");
        return argc == 2 ? 0 : 2;
    }
    fl_store_t *st = NULL;
    if (fl_store_open(argv[1], 1, &st))
        return 1;
    int rc = fl_store_print_runs(st, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
