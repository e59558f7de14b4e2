/* fedopt-server: command-line entry point; dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "server/commands.h"
#include "common/version.h"

/* Subcommand table: one line per command (prototypes next to it). */
static const fl_server_cmd_t commands[] = {
    {"runs", fl_server_cmd_runs, "list the runs in a database: runs DB"},
    {"rounds", fl_server_cmd_rounds, "list a run's rounds: rounds DB [RUN]"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server COMMAND [ARGS]   (COMMAND --help for its options)\n\ncommands:\n");
    for (const fl_server_cmd_t *c = commands; c->name; c++)
        fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "  %-12s %s\n  %-12s %s\n", "--version", "print the version", "--help", "this text");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("fedopt-server %s\n", FL_VERSION);
        return 0;
    }
    for (const fl_server_cmd_t *c = commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0)
            return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "fedopt-server: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
