/* cli: the subcommand dispatch shared by fedopt-server and fedopt-client.
 *
 * Each program has a table of commands (name, function, one-line summary),
 * terminated by an entry with a NULL name. A command gets the arguments after
 * its name (argv[0] is the command name) and returns the process exit status:
 * 0 ok, 1 failure, 2 usage error. */
#ifndef FL_CLI_H
#define FL_CLI_H

typedef int (*fl_cli_cmd_fn)(int argc, char **argv);

typedef struct {
    const char *name;
    fl_cli_cmd_fn fn;
    const char *summary;
} fl_cli_cmd_t;

/* Parses s as a whole base-10 integer in [min, max] into *out. Returns 0,
 * or FL_EINVAL for an empty string, trailing characters or a value out of
 * range (*out untouched): the check every numeric command-line option needs. */
int fl_cli_long(const char *s, long min, long max, long *out);

/* Runs the command named by argv[1] from `table`, or handles --help/-h and
 * --version for program `prog`; unknown commands print the usage to stderr
 * and return 2. Returns the exit status. */
int fl_cli_dispatch(const char *prog, const fl_cli_cmd_t *table, int argc, char **argv);

#endif
