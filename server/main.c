/* fedopt-server: command-line entry point. */
#include <stdio.h>
#include <string.h>

#include "common/version.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-server COMMAND [ARGS]\n"
            "\n"
            "commands:\n"
            "  --version   print the version\n"
            "  --help      this text\n"
            "\n"
            "The round engine (run), certificates (certs) and database admin commands\n"
            "(runs, rounds, export) are not built yet; see the open issues.\n");
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
    fprintf(stderr, "fedopt-server: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
