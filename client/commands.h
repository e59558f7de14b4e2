/* commands: the fedopt-client subcommands. Each lives in its own client/cmd_*.c
 * file and is registered in the table in client/main.c; common/base/cli.h says
 * how a command is called. */
#ifndef FL_CLIENT_COMMANDS_H
#define FL_CLIENT_COMMANDS_H

#include <stddef.h>
#include <stdio.h>

#include "common/base/cli.h"

typedef fl_cli_cmd_t fl_client_cmd_t;

/* The subcommands (client/cmd_<name>.c) and their usage texts (for --help). */
int fl_client_cmd_models(int argc, char **argv);
void fl_client_cmd_models_usage(FILE *out);
int fl_client_cmd_train(int argc, char **argv);
void fl_client_cmd_train_usage(FILE *out);
int fl_client_cmd_eval(int argc, char **argv);
void fl_client_cmd_eval_usage(FILE *out);
int fl_client_cmd_data(int argc, char **argv);
void fl_client_cmd_data_usage(FILE *out);
int fl_client_cmd_run(int argc, char **argv);
void fl_client_cmd_run_usage(FILE *out);
int fl_client_cmd_fleet(int argc, char **argv);
void fl_client_cmd_fleet_usage(FILE *out);

#endif
