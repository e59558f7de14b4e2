/* cli: the command-line conventions of fedopt-server and fedopt-client, in
 * one place: subcommand dispatch, option parsing and usage errors.
 *
 * Conventions every command follows (the functions below enforce them):
 *  - `--help` or `-h` anywhere among a command's arguments (before a `--`)
 *    prints the command's usage to stdout and exits 0 before the command
 *    runs: fl_cli_dispatch answers it, so a command never sees it and never
 *    touches a file when asked for help.
 *  - Flags are kebab-case (`--log-level`) and shown so in usage texts; each
 *    is also accepted with underscores (`--log_level`), the spelling of the
 *    server's INI keys. `--name VALUE` and `--name=VALUE` are the same.
 *  - A usage error is two plain lines on stderr, no log prefix:
 *        fedopt-client: --epochs: 'x' is not an integer
 *        (fedopt-client train --help lists the options)
 *    and exit status 2 (FL_CLI_USAGE).
 *
 * A command's option loop:
 *     fl_cli_t cli;
 *     fl_cli_init(&cli, "fedopt-client", "train", opts, NULL, argc, argv);
 *     for (int id; (id = fl_cli_next(&cli)) != FL_CLI_END;)
 *         switch (id) {
 *         case FL_CLI_ERR: return FL_CLI_USAGE;          (already printed)
 *         case FL_CLI_ARG: ... cli.val is a positional argument ...
 *         case O_EPOCHS: if (fl_cli_get_long(&cli, 1, 100000, &e)) return FL_CLI_USAGE; ...
 *         }
 */
#ifndef FL_CLI_H
#define FL_CLI_H

#include <stdint.h>
#include <stdio.h>

/* The exit status of a usage error. */
#define FL_CLI_USAGE 2

typedef int (*fl_cli_cmd_fn)(int argc, char **argv);

/* A subcommand: name, function, one-line summary and the function that prints
 * its full usage (for `COMMAND --help`; must not be NULL). */
typedef struct {
    const char *name;
    fl_cli_cmd_fn fn;
    const char *summary;
    void (*usage)(FILE *out);
} fl_cli_cmd_t;

/* Runs the command named by argv[1] from `table` (terminated by a NULL name)
 * with argv[1..] (its argv[0] is the command name), or handles --help/-h and
 * --version for program `prog`. When the command's arguments ask for help
 * (fl_cli_wants_help), prints its usage to stdout and returns 0 without
 * running it. Unknown commands print the usage to stderr and return 2.
 * Returns the exit status. */
int fl_cli_dispatch(const char *prog, const fl_cli_cmd_t *table, int argc, char **argv);

/* 1 when "--help" or "-h" is among argv[0..argc) before a "--", else 0. */
int fl_cli_wants_help(int argc, char *const *argv);

/* One option of a command. */
typedef struct {
    const char *name; /* kebab-case, without the dashes: "log-level" */
    int has_arg;      /* 1: takes a value; 0: a switch */
    int id;           /* > 0: what fl_cli_next returns for it */
} fl_cli_opt_t;

enum {
    FL_CLI_END = 0,  /* no more arguments */
    FL_CLI_ARG = -1, /* a positional argument, in cli.val */
    FL_CLI_ERR = -2, /* a usage error, already printed */
};

/* The state of one command's parse. Fields are read-only for the caller. */
typedef struct {
    const char *prog, *cmd;      /* for messages: "fedopt-client", "data inspect" */
    const fl_cli_opt_t *opts[2]; /* tables terminated by a NULL name (either may be NULL) */
    int argc;
    char **argv;
    int ind;         /* next argv index */
    int rest;        /* after "--": everything is positional */
    FILE *err;       /* where usage errors go (stderr; tests redirect it) */
    char what[72];   /* the current option as "--kebab-name" (or an argument's label) */
    const char *val; /* its value (NULL for a switch), or the positional argument */
} fl_cli_t;

/* Prepares to parse argv[1..argc) (argv[0] is the command's name) against the
 * option tables `opts` and `more` (e.g. fl_data_spec_opts; either may be
 * NULL; ids of the two must differ). Nothing is copied: argv must outlive c. */
void fl_cli_init(fl_cli_t *c, const char *prog, const char *cmd, const fl_cli_opt_t *opts,
                 const fl_cli_opt_t *more, int argc, char **argv);

/* The next item: an option's id (c->what names it, c->val holds its value or
 * NULL for a switch), FL_CLI_ARG (c->val is a positional argument; so is
 * every argument after "--", and a lone "-"), FL_CLI_END, or FL_CLI_ERR
 * after printing the usage error (an unknown option, a missing value, a
 * value given to a switch). Option names match in either spelling,
 * dashes or underscores; no abbreviations. */
int fl_cli_next(fl_cli_t *c);

/* For a command without options: collects its positional arguments into
 * pos[0..*n), min to max of them (pos has room for max). `synopsis` names
 * them for the error ("DB RUN [ROUND]"). Returns 0, or FL_CLI_USAGE after
 * printing the usage error (an option, too few or too many arguments). */
int fl_cli_positionals(fl_cli_t *c, const char *synopsis, int min, int max, const char **pos, int *n);

/* Makes (what, val) the current item, so that the fl_cli_get_* functions can
 * parse a positional argument with a label: fl_cli_arg(c, "RUN", argv[2]). */
void fl_cli_arg(fl_cli_t *c, const char *what, const char *val);

/* Prints a usage error "PROG: MESSAGE" and the line "(PROG CMD --help lists
 * the options)" to c->err. Returns FL_CLI_USAGE, for `return fl_cli_error(..)`. */
int fl_cli_error(const fl_cli_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints "PROG: WHAT: 'VAL' WHY" as fl_cli_error does. Returns FL_CLI_USAGE. */
int fl_cli_bad_value(const fl_cli_t *c, const char *why);

/* Parse the current value; each returns 0, or FL_EINVAL after printing the
 * usage error naming the option and the value (*out untouched). */
int fl_cli_get_long(const fl_cli_t *c, long min, long max, long *out);
int fl_cli_get_u64(const fl_cli_t *c, uint64_t *out);
/* A finite number in [min, max]. */
int fl_cli_get_double(const fl_cli_t *c, double min, double max, double *out);
/* One of the NULL-terminated `choices`; *out is its index. */
int fl_cli_get_choice(const fl_cli_t *c, const char *const *choices, int *out);

/* Splits a flag "--name_part=value" into its kebab-case name ("name-part":
 * underscores become dashes) in buf and its value (NULL without "=").
 * Returns 0, or FL_EINVAL when arg is not a "--name" flag or the name does
 * not fit in len. */
int fl_cli_split_flag(const char *arg, char *buf, size_t len, const char **value);

#endif
