/* commands: the fedopt-server subcommands. Each lives in its own server/cmd_*.c
 * file and is registered in the table in server/main.c; common/base/cli.h says
 * how a command is called. */
#ifndef FL_SERVER_COMMANDS_H
#define FL_SERVER_COMMANDS_H

#include <stddef.h>
#include <stdio.h>

#include "common/base/cli.h"

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

#endif
