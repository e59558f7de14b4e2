#include "common/base/cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/version.h"

static void usage(FILE *out, const char *prog, const fl_cli_cmd_t *table)
{
    fprintf(out, "usage: %s COMMAND [ARGS]   (COMMAND --help for its options)\n\ncommands:\n", prog);
    for (const fl_cli_cmd_t *c = table; c->name; c++)
        fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "  %-12s %s\n  %-12s %s\n", "--version", "print the version", "--help", "this text");
}

int fl_cli_dispatch(const char *prog, const fl_cli_cmd_t *table, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout, prog, table);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("%s %s\n", prog, FL_VERSION);
        return 0;
    }
    for (const fl_cli_cmd_t *c = table; c->name; c++)
        if (strcmp(argv[1], c->name) == 0)
            return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
    usage(stderr, prog, table);
    return 2;
}

int fl_cli_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s || !out)
        return FL_EINVAL;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*end || errno == ERANGE || v < min || v > max)
        return FL_EINVAL;
    *out = v;
    return 0;
}
