/* fedopt-server check DB [RUN]: checks a database as --resume does
 * (PRAGMA quick_check, then every checkpoint's checksum) and says what is
 * damaged. Exit 0 when nothing is, 1 otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "server/commands.h"
#include "server/store.h"

int fl_server_cmd_check(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || strcmp(argv[1], "--help") == 0) {
        fprintf(argc >= 2 ? stdout : stderr, "usage: fedopt-server check DB [RUN]\n"
                                             "runs PRAGMA quick_check and verifies every checkpoint's checksum "
                                             "(of RUN, default every run); damage is logged\n");
        return argc >= 2 ? 0 : 2;
    }
    long long run = 0;
    if (argc == 3) {
        char *end;
        run = strtoll(argv[2], &end, 10);
        if (*end || run <= 0) {
            fprintf(stderr, "fedopt-server check: RUN must be a run id (see fedopt-server runs DB)\n");
            return 2;
        }
    }
    fl_store_t *st = NULL;
    if (fl_store_open(argv[1], 1, &st))
        return 1;
    int qc = fl_store_quick_check(st);
    fl_store_damage_t d;
    int vc = fl_store_verify_checkpoints(st, run, &d);
    fl_store_close(st);
    printf("%s: quick_check %s; %lld checkpoints checked, %lld damaged%s\n", argv[1],
           qc ? "found damage" : "ok", (long long)d.checked, (long long)d.damaged,
           d.newest_damaged ? " (a run's newest among them: that run cannot resume)" : "");
    return qc || vc ? 1 : 0;
}
