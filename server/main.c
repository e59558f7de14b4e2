/* fedopt-server: command-line entry point; dispatches to the subcommands. */
#include <signal.h>

#include "common/nn/gemm.h"
#include "server/commands.h"

/* Subcommand table: one line per command (prototypes next to it). */
static const fl_server_cmd_t commands[] = {
    {"run", fl_server_cmd_run, "run a federated training (run --help lists every setting)", fl_server_cmd_run_usage},
    {"runs", fl_server_cmd_runs, "list the runs in a database: runs DB", fl_server_cmd_runs_usage},
    {"rounds", fl_server_cmd_rounds, "list a run's rounds: rounds DB [RUN]", fl_server_cmd_rounds_usage},
    {"certs", fl_server_cmd_certs, "create fleet certificates: certs init DIR | certs issue DIR NAME", fl_server_cmd_certs_usage},
    {"updates", fl_server_cmd_updates, "list a round's updates with reasons: updates DB RUN ROUND", fl_server_cmd_updates_usage},
    {"evals", fl_server_cmd_evals, "show a round's federated evaluation with every answer: evals DB RUN ROUND", fl_server_cmd_evals_usage},
    {"export", fl_server_cmd_export, "write a checkpoint as safetensors: export DB RUN [ROUND] FILE", fl_server_cmd_export_usage},
    {NULL, NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    /* A peer that vanishes while we write to it must cost one connection,
     * not the process: libuv writes to sockets with write(2), which raises
     * SIGPIPE on a reset connection. */
    signal(SIGPIPE, SIG_IGN);
    /* The server evaluates models: same OpenBLAS kernel check as the client
     * (may re-exec once with a better kernel). */
    fl_gemm_fix_kernel(argc, argv);
    return fl_cli_dispatch("fedopt-server", commands, argc, argv);
}
