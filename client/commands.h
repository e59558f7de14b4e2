/* commands: the fedopt-client subcommands. Each lives in its own client/cmd_*.c
 * file and is registered in the table in client/main.c. A command gets the
 * arguments after its name (argv[0] is the command name) and returns the
 * process exit status (0 ok, 1 failure, 2 usage error). */
#ifndef FL_CLIENT_COMMANDS_H
#define FL_CLIENT_COMMANDS_H

typedef int (*fl_client_cmd_fn)(int argc, char **argv);

typedef struct {
    const char *name;
    fl_client_cmd_fn fn;
    const char *summary;
} fl_client_cmd_t;

int fl_client_cmd_models(int argc, char **argv);
int fl_client_cmd_train(int argc, char **argv);
int fl_client_cmd_eval(int argc, char **argv);

#endif
