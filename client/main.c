/* fedopt-client: command-line entry point; dispatches to the subcommands. */
#include <signal.h>

#include "client/commands.h"
#include "common/nn/gemm.h"

/* Subcommand table: one line per command (prototypes next to it). */
static const fl_client_cmd_t commands[] = {
    {"models", fl_client_cmd_models, "list the models, their parameter counts and shapes", fl_client_cmd_models_usage},
    {"train", fl_client_cmd_train, "train a model centrally on local data", fl_client_cmd_train_usage},
    {"eval", fl_client_cmd_eval, "evaluate a model file on data", fl_client_cmd_eval_usage},
    {"data", fl_client_cmd_data, "inspect a data spec: clients, label histograms, skew", fl_client_cmd_data_usage},
    {"run", fl_client_cmd_run, "serve a fedopt-server as one client (a device)", fl_client_cmd_run_usage},
    {"fleet", fl_client_cmd_fleet, "simulate N clients in one process", fl_client_cmd_fleet_usage},
    {NULL, NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    /* Before anything else: may re-exec with a better OpenBLAS kernel. */
    fl_gemm_fix_kernel(argc, argv);
    /* A server that vanishes while we write to it must be a failed write
     * (EPIPE, then a reconnect), not a process killed by SIGPIPE: libuv
     * writes to sockets without MSG_NOSIGNAL. */
    signal(SIGPIPE, SIG_IGN);
    return fl_cli_dispatch("fedopt-client", commands, argc, argv);
}
