/* commands: the fedopt-server subcommands. Each lives in its own server/cmd_*.c
 * file and is registered in the table in server/main.c. A command gets the
 * arguments after its name (argv[0] is the command name) and returns the
 * process exit status (0 ok, 1 failure, 2 usage error). */
#ifndef FL_SERVER_COMMANDS_H
#define FL_SERVER_COMMANDS_H

typedef int (*fl_server_cmd_fn)(int argc, char **argv);

typedef struct {
    const char *name;
    fl_server_cmd_fn fn;
    const char *summary;
} fl_server_cmd_t;

/* The subcommands (server/cmd_<name>.c). */
int fl_server_cmd_runs(int argc, char **argv);
int fl_server_cmd_rounds(int argc, char **argv);

#endif
