/* `fedopt-client run`: one client on a device, serving a server until stopped. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "common/base/cli.h"
#include "client/commands.h"
#include "client/session.h"
#include "client/task.h"
#include "common/data/spec.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/gemm.h"
#include "common/net/tls.h"

#define WHO "client"

void fl_client_cmd_run_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-client run --server HOST:PORT --ca FILE --cert FILE --key FILE --data SPEC\n"
            "         [--client-index I --clients N --partition P] [--name NAME] [--server-name NAME]\n"
            "         [--threads T] [--backoff-max S] [--give-up S] [--once] [--log-level L]\n"
            "  --server HOST:PORT  the fedopt-server to serve ([IPv6]:PORT for IPv6)\n"
            "  --ca FILE           the fleet CA (verifies the server)\n"
            "  --cert/--key FILE   this client's certificate and key (its CN is its identity)\n"
            "  --server-name NAME  name expected in the server certificate (default: HOST)\n"
            "  --name NAME         name sent in Hello (default: the certificate file's stem)\n"
            "  --threads T         training threads, each taking a share of every batch\n"
            "                      (default: the cores)\n"
            "  --backoff-max S     longest wait between reconnects, seconds (default 30)\n"
            "  --give-up S         stop after S seconds without a server (default 0: never; exit 3)\n"
            "  --once              exit 0 when the server says its run finished (default: wait\n"
            "                      for the next run)\n"
            "  --log-level L       error | warn | info | debug (default info)\n"
            "Trains whatever the server offers on the local data, uploads deltas, answers\n"
            "evaluation requests and reconnects (exponential back-off with jitter) when the\n"
            "server goes away. SIGINT/SIGTERM say Bye and exit 0.\n"
            "data options:\n%s",
            fl_data_spec_usage());
}

typedef struct {
    fl_session_t *s;
    uv_signal_t sigint, sigterm;
    int rc;
} run_ctx_t;

static void on_done(fl_session_t *s, int rc, void *ud)
{
    run_ctx_t *c = ud;
    c->rc = rc;
    uv_close((uv_handle_t *)&c->sigint, NULL);
    uv_close((uv_handle_t *)&c->sigterm, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
    run_ctx_t *c = h->data;
    FL_LOG_I(WHO, "%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    fl_session_stop(c->s);
}

/* "dir/alice.crt" -> "alice". */
static void stem(const char *path, char *out, size_t n)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, n, "%s", b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = 0;
}

int fl_client_cmd_run(int argc, char **argv)
{
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    const char *server = NULL, *ca = NULL, *cert = NULL, *key = NULL, *server_name = NULL, *name = NULL;
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads; /* fl_model_set_threads' range */
    double backoff_max = 30, give_up = 0;
    int once = 0, id, lvl;
    enum { O_SERVER = 1, O_CA, O_CERT, O_KEY, O_SNAME, O_NAME, O_THREADS, O_BACKOFF, O_GIVEUP, O_LOG, O_ONCE };
    static const fl_cli_opt_t opts[] = {
        {"server", 1, O_SERVER},       {"ca", 1, O_CA},           {"cert", 1, O_CERT},
        {"key", 1, O_KEY},             {"server-name", 1, O_SNAME}, {"name", 1, O_NAME},
        {"threads", 1, O_THREADS},     {"backoff-max", 1, O_BACKOFF}, {"give-up", 1, O_GIVEUP},
        {"log-level", 1, O_LOG},       {"once", 0, O_ONCE},       {NULL, 0, 0},
    };
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "run", opts, fl_data_spec_opts, argc, argv);
    while ((id = fl_cli_next(&cli)) != FL_CLI_END) {
        int bad = 0;
        switch (id) {
        case FL_CLI_ERR: return FL_CLI_USAGE;
        case FL_CLI_ARG: return fl_cli_error(&cli, "unexpected argument '%s'", cli.val);
        case O_SERVER: server = cli.val; break;
        case O_CA: ca = cli.val; break;
        case O_CERT: cert = cli.val; break;
        case O_KEY: key = cli.val; break;
        case O_SNAME: server_name = cli.val; break;
        case O_NAME: name = cli.val; break;
        case O_THREADS: bad = fl_cli_get_long(&cli, 1, 64, &threads); break;
        case O_BACKOFF: bad = fl_cli_get_double(&cli, 0.001, 1e7, &backoff_max); break;
        case O_GIVEUP: bad = fl_cli_get_double(&cli, 0, 1e9, &give_up); break;
        case O_LOG:
            if (!(bad = fl_cli_get_choice(&cli, fl_log_level_names, &lvl)))
                fl_log_set_level((fl_log_level_t)lvl);
            break;
        case O_ONCE: once = 1; break;
        default: bad = fl_data_spec_apply(&spec, &cli); break;
        }
        if (bad)
            return FL_CLI_USAGE;
    }
    if (!server || !ca || !cert || !key)
        return fl_cli_error(&cli, "--server, --ca, --cert and --key are required");
    char host[256];
    int port;
    if (fl_session_parse_addr(server, host, sizeof host, &port)) {
        fl_cli_arg(&cli, "--server", server);
        return fl_cli_bad_value(&cli, "is not HOST:PORT or [IPv6]:PORT");
    }
    char nbuf[128];
    if (!name) {
        stem(cert, nbuf, sizeof nbuf);
        name = nbuf;
    }

    int status = 1;
    fl_dataset_t train;
    fl_dataset_init(&train);
    fl_tls_ctx_t *tls = NULL;
    fl_session_pool_t *pool = NULL;
    const char **models = NULL;
    size_t nmodels = 0;
    uv_loop_t loop;
    int loop_ok = 0;
    run_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    if (fl_data_spec_validate(&spec) || fl_data_spec_load(&spec, "train", &train))
        goto out;
    if (fl_task_fitting_models(&train, &models, &nmodels))
        goto out;
    fl_tls_opts_t to = {.ca_file = ca, .cert_file = cert, .key_file = key};
    int rc = fl_tls_ctx_new(FL_TLS_CLIENT, &to, &tls);
    if (rc) {
        fprintf(stderr, "run: cannot set up TLS with --ca %s --cert %s --key %s: %s\n", ca, cert, key,
                fl_strerror(rc));
        goto out;
    }
    fl_session_pool_threads(1);
    if (uv_loop_init(&loop))
        goto out;
    loop_ok = 1;
    if (fl_session_pool_create(&loop, 1, &pool))
        goto out;
    char spec_text[256];
    snprintf(spec_text, sizeof spec_text, "%.200s client %ld/%zu", spec.source, spec.client_index, spec.clients);
    fl_session_opts_t so = {
        .host = host,
        .port = port,
        .server_name = server_name,
        .tls = tls,
        .name = name,
        .id = spec.client_index >= 0 ? (uint64_t)spec.client_index : 0,
        .data = &train,
        .data_spec = spec_text,
        .models = models,
        .nmodels = nmodels,
        .gemm_threads = (int)threads,
        .backoff_max = backoff_max,
        .give_up = give_up,
        .stop_on_finish = once,
        .log_rounds = 1,
        .seed = (uint64_t)getpid(),
        .on_done = on_done,
        .ud = &ctx,
    };
    FL_LOG_I(WHO, "%s: %zu training examples; serving %s", name, train.n, server);
    uv_signal_init(&loop, &ctx.sigint);
    uv_signal_init(&loop, &ctx.sigterm);
    ctx.sigint.data = ctx.sigterm.data = &ctx;
    uv_signal_start(&ctx.sigint, on_signal, SIGINT);
    uv_signal_start(&ctx.sigterm, on_signal, SIGTERM);
    if (fl_session_start(pool, &so, &ctx.s)) {
        uv_close((uv_handle_t *)&ctx.sigint, NULL);
        uv_close((uv_handle_t *)&ctx.sigterm, NULL);
        goto out;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    status = ctx.rc && ctx.rc != FL_ETIMEDOUT ? 1 : ctx.rc ? 3 : 0;
    if (ctx.rc)
        FL_LOG_E(WHO, "%s: stopped: %s", name, fl_strerror(ctx.rc));
    goto out;
out:
    fl_session_free(ctx.s);
    fl_session_pool_free(pool);
    if (loop_ok) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
    }
    fl_tls_ctx_free(tls);
    free(models);
    fl_dataset_free(&train);
    return status;
}
