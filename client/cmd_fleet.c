/* `fedopt-client fleet`: N simulated clients in one process (client/fleet). */
#include <limits.h>
#include <getopt.h>
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

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-client fleet --server HOST:PORT --certs DIR --clients N --data SPEC --partition P\n"
            "         [--cert FILE --key FILE] [--jobs J] [--first I] [--count C] [--prefix NAME]\n"
            "         [--server-name NAME] [--ca FILE]\n"
            "         [--drop-rate p] [--straggle-rate p --straggle-delay s] [--corrupt-rate p]\n"
            "         [--give-up S] [--backoff-max S] [--connect-spread S] [--seed S]\n"
            "         [--progress auto|tty|plain|none] [--log-level L]\n"
            "  --server HOST:PORT   the fedopt-server\n"
            "  --certs DIR          fleet directory from `fedopt-server certs init`: ca.crt verifies the\n"
            "                       server; client NAME uses clients/NAME.crt/.key, issued with ca.key\n"
            "                       when missing (identity = certificate CN = PREFIX-NNNN)\n"
            "  --cert F --key F     one certificate for every client instead; the server must list its\n"
            "                       name in shared_certs (identity = CN/PREFIX-NNNN)\n"
            "  --clients N          clients the training data is split into (with --partition)\n"
            "  --jobs J             trainings at once (default: the cores)\n"
            "  --first I, --count C run clients I..I+C-1 only (default: all N)\n"
            "  --prefix NAME        client name prefix (default sim)\n"
            "  --drop-rate p        per task: vanish after receiving the model\n"
            "  --straggle-rate p    per task: upload --straggle-delay seconds late (default 30)\n"
            "  --corrupt-rate p     per task: send a NaN or a wrong-shape delta\n"
            "  --byzantine-rate R   the first round(R * clients) clients attack (needs --attack)\n"
            "  --attack SPEC        scale:S, signflip, gaussian:SD or labelflip (client/attack.h)\n"
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

static int parse_rate(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || !(v >= 0 && v <= 1))
        return FL_EINVAL;
    *out = v;
    return 0;
}

static int parse_secs(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || !(v >= 0 && v < 1e7))
        return FL_EINVAL;
    *out = v;
    return 0;
}

int fl_client_cmd_fleet(int argc, char **argv)
{
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    if (fl_data_spec_parse_args(&spec, &argc, argv))
        return 2;
    fl_fleet_opts_t o;
    memset(&o, 0, sizeof o);
    o.chaos.straggle_delay = 30;
    o.seed = 1;
    o.backoff_max = 30;
    long jobs = sysconf(_SC_NPROCESSORS_ONLN);
    long first = 0, count = -1;
    const char *server = NULL, *mode = "auto";
    enum {
        O_SERVER = 1, O_CERTS, O_CERT, O_KEY, O_CA, O_SNAME, O_JOBS, O_FIRST, O_COUNT, O_PREFIX, O_DROP, O_STR, O_STRD, O_CORR,
        O_GIVEUP, O_BACKOFF, O_SPREAD, O_SEED, O_PROGRESS, O_LOG, O_HELP, O_BYZ, O_ATTACK
    };
    static const struct option opts[] = {
        {"server", required_argument, NULL, O_SERVER},
        {"certs", required_argument, NULL, O_CERTS},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"ca", required_argument, NULL, O_CA},
        {"server-name", required_argument, NULL, O_SNAME},
        {"jobs", required_argument, NULL, O_JOBS},
        {"first", required_argument, NULL, O_FIRST},
        {"count", required_argument, NULL, O_COUNT},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"drop-rate", required_argument, NULL, O_DROP},
        {"straggle-rate", required_argument, NULL, O_STR},
        {"straggle-delay", required_argument, NULL, O_STRD},
        {"corrupt-rate", required_argument, NULL, O_CORR},
        {"byzantine-rate", required_argument, NULL, O_BYZ},
        {"attack", required_argument, NULL, O_ATTACK},
        {"give-up", required_argument, NULL, O_GIVEUP},
        {"backoff-max", required_argument, NULL, O_BACKOFF},
        {"connect-spread", required_argument, NULL, O_SPREAD},
        {"seed", required_argument, NULL, O_SEED},
        {"progress", required_argument, NULL, O_PROGRESS},
        {"log-level", required_argument, NULL, O_LOG},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    optind = 1;
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case O_SERVER: server = optarg; break;
        case O_CERTS: o.certs_dir = optarg; break;
        case O_CERT: o.cert_file = optarg; break;
        case O_KEY: o.key_file = optarg; break;
        case O_CA: o.ca_file = optarg; break;
        case O_SNAME: o.server_name = optarg; break;
        case O_JOBS:
            bad = fl_cli_long(optarg, 1, 1000, &jobs) != 0;
            break;
        case O_FIRST:
            bad = fl_cli_long(optarg, 0, LONG_MAX, &first) != 0;
            break;
        case O_COUNT:
            bad = fl_cli_long(optarg, 1, LONG_MAX, &count) != 0;
            break;
        case O_PREFIX: o.prefix = optarg; break;
        case O_DROP: bad = parse_rate(optarg, &o.chaos.drop_rate) != 0; break;
        case O_STR: bad = parse_rate(optarg, &o.chaos.straggle_rate) != 0; break;
        case O_STRD: bad = parse_secs(optarg, &o.chaos.straggle_delay) != 0; break;
        case O_CORR: bad = parse_rate(optarg, &o.chaos.corrupt_rate) != 0; break;
        case O_BYZ: bad = parse_rate(optarg, &o.byzantine_rate) != 0; break;
        case O_ATTACK: bad = fl_attack_parse(optarg, &o.attack) != 0; break;
        case O_GIVEUP: bad = parse_secs(optarg, &o.give_up) != 0; break;
        case O_BACKOFF: bad = parse_secs(optarg, &o.backoff_max) != 0 || o.backoff_max <= 0; break;
        case O_SPREAD: bad = parse_secs(optarg, &o.connect_spread) != 0; break;
        case O_SEED:
            o.seed = strtoull(optarg, &end, 10);
            bad = *end != 0;
            break;
        case O_PROGRESS:
            mode = optarg;
            bad = strcmp(mode, "auto") && strcmp(mode, "tty") && strcmp(mode, "plain") && strcmp(mode, "none");
            break;
        case O_LOG: {
            fl_log_level_t lvl;
            bad = fl_log_parse_level(optarg, &lvl) != 0;
            if (!bad)
                fl_log_set_level(lvl);
            break;
        }
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "fleet: bad value '%s'\n", optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc || !server || !o.certs_dir || spec.clients == 0) {
        fprintf(stderr, "fleet: --server, --certs and --clients are required%s%s\n",
                optind < argc ? "; stray argument " : "", optind < argc ? argv[optind] : "");
        usage(stderr);
        return 2;
    }
    if ((o.byzantine_rate > 0) != (o.attack.kind != FL_ATTACK_NONE)) {
        fprintf(stderr, "fleet: --byzantine-rate and --attack go together\n");
        return 2;
    }
    if (spec.client_index >= 0) {
        fprintf(stderr, "fleet: --client-index is for `run`; use --first/--count for a part of the fleet\n");
        return 2;
    }
    if ((size_t)first >= spec.clients || (count > 0 && (size_t)(first + count) > spec.clients)) {
        fprintf(stderr, "fleet: clients %ld..%ld are not among the %zu clients\n", first,
                first + (count > 0 ? count : 1) - 1, spec.clients);
        return 2;
    }
    char host[256];
    if (fl_session_parse_addr(server, host, sizeof host, &o.port)) {
        fprintf(stderr, "fleet: --server wants HOST:PORT or [IPv6]:PORT, not '%s'\n", server);
        return 2;
    }
    o.host = host;
    o.first = (size_t)first;
    o.count = count > 0 ? (size_t)count : spec.clients - (size_t)first;
    o.jobs = (unsigned)jobs;
    o.tty = strcmp(mode, "tty") == 0 || (strcmp(mode, "auto") == 0 && isatty(STDOUT_FILENO));
    o.progress = strcmp(mode, "none") ? stdout : NULL;

    int status = 1;
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
    fl_fleet_result_t res;
    int rc = fl_fleet_run(&o, &res);
    if (rc) {
        fprintf(stderr, "fleet: %s\n", fl_strerror(rc));
        goto out;
    }
    printf("fleet: %zu clients, %.1f s: %llu connects, %llu offers, %llu uploads, %llu evaluations, %llu failed "
           "jobs; chaos: %llu drops, %llu stragglers, %llu corrupt; %zu attackers; last round %llu\n",
           res.clients, res.seconds, (unsigned long long)res.connects, (unsigned long long)res.offers,
           (unsigned long long)res.uploads, (unsigned long long)res.evals, (unsigned long long)res.failed_jobs,
           (unsigned long long)res.drops, (unsigned long long)res.straggles, (unsigned long long)res.corrupts,
           res.attackers, (unsigned long long)res.last_round);
    status = res.failed ? 1 : 0;
out:
    fl_partition_free(&parts);
    fl_dataset_free(&all);
    return status;
}
