/* fedopt-client: command-line entry point; dispatches to the subcommands. */
#include <stdio.h>
#include <string.h>

#include "client/commands.h"
#include "common/nn/gemm.h"
#include "common/version.h"

/* Subcommand table: one line per command (prototypes next to it). */
static const fl_client_cmd_t commands[] = {
    {"models", fl_client_cmd_models, "list the models, their parameter counts and shapes"},
    {"train", fl_client_cmd_train, "train a model centrally on local data"},
    {"eval", fl_client_cmd_eval, "evaluate a model file on data"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: fedopt-client COMMAND [ARGS]   (COMMAND --help for its options)\n\ncommands:\n");
    for (const fl_client_cmd_t *c = commands; c->name; c++)
        fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "  %-12s %s\n  %-12s %s\n", "--version", "print the version", "--help", "this text");
}

int main(int argc, char **argv)
{
    /* Before anything else: may re-exec with a better OpenBLAS kernel. */
    fl_gemm_fix_kernel(argc, argv);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("fedopt-client %s\n", FL_VERSION);
        return 0;
    }
    for (const fl_client_cmd_t *c = commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0)
            return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "fedopt-client: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
