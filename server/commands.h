/* commands: the fedopt-server subcommands. Each lives in its own server/cmd_*.c
 * file and is registered in the table in server/main.c; common/base/cli.h says
 * how a command is called. */
#ifndef FL_SERVER_COMMANDS_H
#define FL_SERVER_COMMANDS_H

#include <stddef.h>
#include <stdio.h>

#include "common/base/cli.h"
#include "server/store.h"

typedef fl_cli_cmd_t fl_server_cmd_t;

/* The subcommands (server/cmd_<name>.c) and their usage texts (for --help). */
int fl_server_cmd_run(int argc, char **argv);
void fl_server_cmd_run_usage(FILE *out);
int fl_server_cmd_runs(int argc, char **argv);
void fl_server_cmd_runs_usage(FILE *out);
int fl_server_cmd_rounds(int argc, char **argv);
void fl_server_cmd_rounds_usage(FILE *out);
int fl_server_cmd_certs(int argc, char **argv);
void fl_server_cmd_certs_usage(FILE *out);
int fl_server_cmd_updates(int argc, char **argv);
void fl_server_cmd_updates_usage(FILE *out);
int fl_server_cmd_evals(int argc, char **argv);
void fl_server_cmd_evals_usage(FILE *out);
int fl_server_cmd_export(int argc, char **argv);
void fl_server_cmd_export_usage(FILE *out);
int fl_server_cmd_check(int argc, char **argv);
void fl_server_cmd_check_usage(FILE *out);
int fl_server_cmd_experiment(int argc, char **argv);
void fl_server_cmd_experiment_usage(FILE *out);

/* A store printer for one round of one run (fl_store_print_updates, ...). */
typedef int (*fl__server_round_printer_fn)(fl_store_t *st, int64_t run_id, int64_t round, FILE *out);

/* The body of a `NAME DB RUN ROUND` listing: parses the three positionals
 * (ROUND from first_round up), opens DB read-only and prints with print.
 * Returns 0, 1 on a store error, or FL_CLI_USAGE. */
int fl__server_cmd_round_listing(int argc, char **argv, const char *name, long first_round,
                                 fl__server_round_printer_fn print);

#endif
