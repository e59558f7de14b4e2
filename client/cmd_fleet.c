/* `fedopt-client fleet`: N simulated clients in one process (client/fleet). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base/cli.h"
#include "client/commands.h"
#include "client/fleet.h"
#include "common/data/spec.h"
#include "common/base/error.h"
#include "common/base/log.h"

#define WHO "fleet"

/* "I/N" with 0 <= I < N <= 1000000 into *i, *n. Returns 0 or FL_EINVAL. */
static int parse_shard(const char *s, long *i, long *n)
{
    char *end;
    if (*s < '0' || *s > '9')
        return FL_EINVAL;
    long a = strtol(s, &end, 10);
    if (*end != '/' || end[1] < '0' || end[1] > '9')
        return FL_EINVAL;
    long b = strtol(end + 1, &end, 10);
    if (*end || b < 1 || b > 1000000 || a >= b)
        return FL_EINVAL;
    *i = a;
    *n = b;
    return 0;
}

void fl_client_cmd_fleet_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-client fleet --server HOST:PORT --certs DIR --clients N --data SPEC --partition P\n"
            "         [--cert FILE --key FILE] [--jobs J] [--first I] [--count C] [--shard I/N] [--prefix NAME]\n"
            "         [--server-name NAME] [--ca FILE]\n"
            "         [--drop-rate p] [--straggle-rate p --straggle-delay s] [--corrupt-rate p]\n"
            "         [--unmask-drop-rate R] [--byzantine-rate R --attack SPEC]\n"
            "         [--give-up S] [--backoff-max S] [--connect-spread S] [--seed S]\n"
            "         [--progress auto|tty|plain|none] [--log-level L] [--metrics-listen HOST:PORT]\n"
            "  --server HOST:PORT   the fedopt-server\n"
            "  --certs DIR          fleet directory from `fedopt-server certs init`: ca.crt verifies the\n"
            "                       server; client NAME uses clients/NAME.crt/.key, issued with ca.key\n"
            "                       when missing (identity = certificate CN = PREFIX-NNNN)\n"
            "  --cert F --key F     one certificate for every client instead; the server must list its\n"
            "                       name in shared_certs (identity = CN/PREFIX-NNNN)\n"
            "  --clients N          clients the training data is split into (with --partition)\n"
            "  --jobs J             trainings at once (default: the cores)\n"
            "  --first I, --count C run clients I..I+C-1 only (default: all N)\n"
            "  --shard I/N          run shard I (0-based) of N: the clients i with i mod N = I, with\n"
            "                       the same partition, names and data as one process running all\n"
            "                       (N processes on N machines, e.g. a Kubernetes Indexed Job)\n"
            "  --metrics-listen A   the fleet's Prometheus metrics, /healthz, /readyz on HOST:PORT\n"
            "  --prefix NAME        client name prefix (default sim)\n"
            "  --drop-rate p        per task: vanish after receiving the model\n"
            "  --straggle-rate p    per task: upload --straggle-delay seconds late (default 30)\n"
            "  --corrupt-rate p     per task: send a NaN or a wrong-shape delta\n"
            "  --unmask-drop-rate R secure rounds: the last round(R * clients) clients disconnect right\n"
            "                       after their masked input, before unmasking\n"
            "  --secagg-dump-sums D testing: DIR/round-N.u32 gets the sum of the quantized words the\n"
            "                       fleet masked in secure round N (compare the server's secagg_dump_sums)\n"
            "  --byzantine-rate R   the first round(R * clients) clients attack (needs --attack)\n"
            "  --attack SPEC        scale:S, signflip, gaussian:SD, labelflip, or in secure rounds\n"
            "                       secagg-key, secagg-share, secagg-replay (client/attack.h)\n"
            "  --give-up S          a client stops after S seconds without a server (default 0: never)\n"
            "  --backoff-max S      longest wait between reconnects (default 30)\n"
            "  --connect-spread S   spread the first connections over S seconds (default: 32\n"
            "                       handshakes in flight at most, no other pacing)\n"
            "  --seed S             chaos and jitter streams (default 1)\n"
            "  --progress MODE      auto (a live line on a terminal, plain lines otherwise)\n"
            "SIGINT/SIGTERM stop every client (Bye) and print the totals.\n"
            "data options:\n%s",
            fl_data_spec_usage());
}

int fl_client_cmd_fleet(int argc, char **argv)
{
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    fl_fleet_opts_t o;
    memset(&o, 0, sizeof o);
    o.chaos.straggle_delay = 30;
    o.seed = 1;
    o.backoff_max = 30;
    long jobs = sysconf(_SC_NPROCESSORS_ONLN);
    long first = 0, count = -1;
    const char *server = NULL, *metrics_listen = NULL;
    long shard_i = 0, shard_n = 0;
    enum {
        O_SERVER = 1, O_CERTS, O_CERT, O_KEY, O_CA, O_SNAME, O_JOBS, O_FIRST, O_COUNT, O_PREFIX, O_DROP, O_STR, O_STRD, O_CORR,
        O_GIVEUP, O_BACKOFF, O_SPREAD, O_SEED, O_PROGRESS, O_LOG, O_SHARD, O_METRICS, O_BYZ, O_ATTACK, O_UDROP, O_DUMP
    };
    static const fl_cli_opt_t opts[] = {
        {"server", 1, O_SERVER},
        {"certs", 1, O_CERTS},
        {"cert", 1, O_CERT},
        {"key", 1, O_KEY},
        {"ca", 1, O_CA},
        {"server-name", 1, O_SNAME},
        {"jobs", 1, O_JOBS},
        {"first", 1, O_FIRST},
        {"count", 1, O_COUNT},
        {"prefix", 1, O_PREFIX},
        {"drop-rate", 1, O_DROP},
        {"straggle-rate", 1, O_STR},
        {"straggle-delay", 1, O_STRD},
        {"corrupt-rate", 1, O_CORR},
        {"unmask-drop-rate", 1, O_UDROP},
        {"secagg-dump-sums", 1, O_DUMP},
        {"byzantine-rate", 1, O_BYZ},
        {"attack", 1, O_ATTACK},
        {"give-up", 1, O_GIVEUP},
        {"backoff-max", 1, O_BACKOFF},
        {"connect-spread", 1, O_SPREAD},
        {"seed", 1, O_SEED},
        {"progress", 1, O_PROGRESS},
        {"log-level", 1, O_LOG},
        {"shard", 1, O_SHARD},
        {"metrics-listen", 1, O_METRICS},
        {NULL, 0, 0},
    };
    enum { P_AUTO, P_TTY, P_PLAIN, P_NONE };
    static const char *const modes[] = {"auto", "tty", "plain", "none", NULL};
    int mode = P_AUTO, lvl, id;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "fleet", opts, fl_data_spec_opts, argc, argv);
    while ((id = fl_cli_next(&cli)) != FL_CLI_END) {
        int bad = 0;
        switch (id) {
        case FL_CLI_ERR: return FL_CLI_USAGE;
        case FL_CLI_ARG: return fl_cli_error(&cli, "unexpected argument '%s'", cli.val);
        case O_SERVER: server = cli.val; break;
        case O_CERTS: o.certs_dir = cli.val; break;
        case O_CERT: o.cert_file = cli.val; break;
        case O_KEY: o.key_file = cli.val; break;
        case O_CA: o.ca_file = cli.val; break;
        case O_SNAME: o.server_name = cli.val; break;
        case O_JOBS: bad = fl_cli_get_long(&cli, 1, 1000, &jobs); break;
        case O_FIRST: bad = fl_cli_get_long(&cli, 0, LONG_MAX, &first); break;
        case O_COUNT: bad = fl_cli_get_long(&cli, 1, LONG_MAX, &count); break;
        case O_PREFIX: o.prefix = cli.val; break;
        case O_DROP: bad = fl_cli_get_double(&cli, 0, 1, &o.chaos.drop_rate); break;
        case O_STR: bad = fl_cli_get_double(&cli, 0, 1, &o.chaos.straggle_rate); break;
        case O_STRD: bad = fl_cli_get_double(&cli, 0, 1e7, &o.chaos.straggle_delay); break;
        case O_CORR: bad = fl_cli_get_double(&cli, 0, 1, &o.chaos.corrupt_rate); break;
        case O_DUMP: o.secagg_dump_sums = cli.val; break;
        case O_UDROP: bad = fl_cli_get_double(&cli, 0, 1, &o.chaos.unmask_drop_rate); break;
        case O_BYZ: bad = fl_cli_get_double(&cli, 0, 1, &o.byzantine_rate); break;
        case O_ATTACK:
            if (fl_attack_parse(cli.val, &o.attack))
                return fl_cli_bad_value(&cli, "is not scale:S, signflip, gaussian:SD, labelflip, secagg-key, secagg-share or secagg-replay");
            break;
        case O_GIVEUP: bad = fl_cli_get_double(&cli, 0, 1e7, &o.give_up); break;
        case O_BACKOFF: bad = fl_cli_get_double(&cli, 0.001, 1e7, &o.backoff_max); break;
        case O_SPREAD: bad = fl_cli_get_double(&cli, 0, 1e7, &o.connect_spread); break;
        case O_SEED: bad = fl_cli_get_u64(&cli, &o.seed); break;
        case O_PROGRESS: bad = fl_cli_get_choice(&cli, modes, &mode); break;
        case O_LOG:
            if (!(bad = fl_cli_get_choice(&cli, fl_log_level_names, &lvl)))
                fl_log_set_level((fl_log_level_t)lvl);
            break;
        case O_SHARD:
            if (parse_shard(cli.val, &shard_i, &shard_n))
                return fl_cli_bad_value(&cli, "is not I/N with 0 <= I < N");
            break;
        case O_METRICS: metrics_listen = cli.val; break;
        default: bad = fl_data_spec_apply(&spec, &cli); break;
        }
        if (bad)
            return FL_CLI_USAGE;
    }
    if (!server || !o.certs_dir || spec.clients == 0)
        return fl_cli_error(&cli, "--server, --certs and --clients are required");
    if ((o.byzantine_rate > 0) != (o.attack.kind != FL_ATTACK_NONE))
        return fl_cli_error(&cli, "--byzantine-rate and --attack go together");
    if (spec.client_index >= 0) {
        return fl_cli_error(&cli, "--client-index is for `run`; use --first/--count for a part of the fleet");
    }
    if ((size_t)first >= spec.clients || (count > 0 && (size_t)(first + count) > spec.clients)) {
        return fl_cli_error(&cli, "--first/--count: clients %ld..%ld are not among the %zu clients", first,
                            first + (count > 0 ? count : 1) - 1, spec.clients);
    }
    char host[256];
    if (fl_session_parse_addr(server, host, sizeof host, &o.port)) {
        fl_cli_arg(&cli, "--server", server);
        return fl_cli_bad_value(&cli, "is not HOST:PORT or [IPv6]:PORT");
    }
    o.host = host;
    o.first = (size_t)first;
    o.count = count > 0 ? (size_t)count : spec.clients - (size_t)first;
    if (shard_n > 0) {
        /* Shard I of N: the clients i of first..first+count-1 with i mod N = I. */
        size_t n = (size_t)shard_n, end = o.first + o.count;
        size_t i0 = o.first + ((size_t)shard_i + n - o.first % n) % n;
        if (i0 >= end)
            return fl_cli_error(&cli, "--shard %ld/%ld has no clients among %zu..%zu", shard_i, shard_n, o.first,
                                end - 1);
        o.first = i0;
        o.count = (end - i0 + n - 1) / n;
        o.stride = n;
    }
    o.jobs = (unsigned)jobs;
    o.tty = mode == P_TTY || (mode == P_AUTO && isatty(STDOUT_FILENO));
    o.progress = mode != P_NONE ? stdout : NULL;

    int status = 1;
    fl_metrics_t *metrics = NULL;
    fl_metrics_http_t *http = NULL;
    fl_dataset_t all;
    fl_partition_t parts;
    fl_dataset_init(&all);
    memset(&parts, 0, sizeof parts);
    if (fl_data_spec_validate(&spec) || fl_data_spec_load_partitioned(&spec, "train", &all, &parts))
        goto out;
    if (parts.clients != spec.clients) {
        fprintf(stderr, "fleet: the data was split into %zu clients, not %zu (give --partition)\n", parts.clients,
                spec.clients);
        goto out;
    }
    char spec_text[256];
    char ptext[64];
    fl_partition_format(&spec.partition, ptext, sizeof ptext);
    snprintf(spec_text, sizeof spec_text, "%.150s %s %zu clients", spec.source, ptext, spec.clients);
    o.data = &all;
    o.parts = &parts;
    o.data_spec = spec_text;
    if (metrics_listen) {
        int mport = 0, mrc;
        if ((mrc = fl_metrics_create(&metrics)) || (mrc = fl_fleet_metrics_define(metrics)) ||
            (mrc = fl_metrics_http_start(metrics, metrics_listen, &http, &mport))) {
            fprintf(stderr, "fleet: --metrics-listen %s: %s\n", metrics_listen, fl_strerror(mrc));
            goto out;
        }
        fl_metrics_set_ready(metrics, 1);
        FL_LOG_I(WHO, "metrics served on %s, port %d (/metrics, /healthz, /readyz)", metrics_listen, mport);
        o.metrics = metrics;
    }
    fl_fleet_result_t res;
    int rc = fl_fleet_run(&o, &res);
    if (rc) {
        fprintf(stderr, "fleet: %s\n", fl_strerror(rc));
        goto out;
    }
    printf("fleet: %zu clients, %.1f s: %llu connects, %llu offers, %llu uploads, %llu samples trained in %.1f "
           "job-s, %llu evaluations, %llu failed "
           "jobs; chaos: %llu drops, %llu stragglers, %llu corrupt; %zu attackers; last round %llu\n",
           res.clients, res.seconds, (unsigned long long)res.connects, (unsigned long long)res.offers,
           (unsigned long long)res.uploads, (unsigned long long)res.samples, res.train_seconds,
           (unsigned long long)res.evals, (unsigned long long)res.failed_jobs,
           (unsigned long long)res.drops, (unsigned long long)res.straggles, (unsigned long long)res.corrupts,
           res.attackers, (unsigned long long)res.last_round);
    status = res.failed ? 1 : 0;
out:
    fl_metrics_http_stop(http);
    fl_metrics_free(metrics);
    fl_partition_free(&parts);
    fl_dataset_free(&all);
    return status;
}
