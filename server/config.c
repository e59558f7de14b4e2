#include "server/config.h"


#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/cli.h"
#include "common/base/error.h"
#include "common/base/json.h"
#include "server/secround.h"
#include "common/base/log.h"
#include "common/net/codec.h"

typedef enum { T_STR, T_INT, T_U64, T_DBL, T_BOOL, T_RESUME } fl__cfg_type_t;

enum { F_RUN = 1 }; /* the setting defines the run: resume refuses a change */

typedef struct {
    const char *name;
    const char *section;
    fl__cfg_type_t type;
    size_t off;
    const char *def;
    double min, max; /* numeric range (inclusive) */
    unsigned flags;
    const char *help;
} fl__cfg_entry_t;

#define OFF(f) offsetof(fl_server_config_t, f)
#define BIG 1e18

/* The one table of settings. Defaults are text and go through the same
 * parser as the INI file and the flags, so a default can never be a value the
 * parser would refuse. */
static const fl__cfg_entry_t table[] = {
    {"listen", "network", T_STR, OFF(listen), "0.0.0.0:7443", 0, 0, 0, "address and port to listen on (HOST:PORT, [IPv6]:PORT)"},
    {"tls_cert", "network", T_STR, OFF(tls_cert), "server.crt", 0, 0, 0, "server certificate (PEM)"},
    {"tls_key", "network", T_STR, OFF(tls_key), "server.key", 0, 0, 0, "server private key (PEM)"},
    {"tls_ca", "network", T_STR, OFF(tls_ca), "ca.crt", 0, 0, 0, "CA certificate that signs client certificates (PEM)"},
    {"require_client_cert", "network", T_BOOL, OFF(require_client_cert), "true", 0, 1, 0, "mutual TLS: refuse clients without a certificate from tls_ca"},
    {"shared_certs", "network", T_STR, OFF(shared_certs), "", 0, 0, 0, "comma-separated certificate names that may carry several clients (a simulated fleet): such a client is identified as NAME/hello-name"},
    {"metrics_listen", "network", T_STR, OFF(metrics_listen), "", 0, 0, 0, "Prometheus metrics, /healthz and /readyz over HTTP on HOST:PORT (empty = off; port 0 picks one)"},
    {"max_connections", "network", T_INT, OFF(max_connections), "4096", 1, 1000000, 0, "most simultaneous client connections"},
    {"max_handshakes", "network", T_INT, OFF(max_handshakes), "1024", 1, 1000000, 0, "most accepted connections still in their TLS handshake (each may hold up to about 100 KiB); more are closed at once, logged, and counted in fedopt_tls_handshake_failures_total{reason=\"FL_EAGAIN\"}"},
    {"hello_timeout", "network", T_DBL, OFF(hello_timeout), "10", 0.05, 3600, 0, "seconds after the TLS handshake within which a client must send Hello; until then its frames are capped at 64 KiB"},
    {"frame_budget_mb", "network", T_INT, OFF(frame_budget_mb), "256", 1, 1048576, 0, "MiB that partial frames of all connections may hold together; a connection going beyond is closed"},
    {"heartbeat", "network", T_DBL, OFF(heartbeat), "10", 0.05, 3600, 0, "seconds between heartbeats; a client silent for 3 of them is dropped"},
    {"db", "storage", T_STR, OFF(db), "fedopt.db", 0, 0, 0, "SQLite database with the round log and checkpoints"},
    {"resume", "storage", T_RESUME, OFF(resume), "no", 0, 0, 0, "continue the latest unfinished run: no, yes, auto (if there is one)"},
    {"keep_checkpoints", "storage", T_INT, OFF(keep_checkpoints), "0", 0, BIG, 0, "most recent checkpoints kept per run (0 = keep all)"},
    {"model", "model", T_STR, OFF(model), "mlp", 0, 0, F_RUN, "model name (see fedopt-client models)"},
    {"init", "model", T_STR, OFF(init), "", 0, 0, F_RUN, "safetensors file with the initial weights (empty = seeded init)"},
    {"eval_data", "model", T_STR, OFF(eval_data), "", 0, 0, 0, "data spec for central evaluation (empty = none)"},
    {"eval_every", "model", T_INT, OFF(eval_every), "1", 0, BIG, 0, "evaluate the global model every N rounds (0 = never)"},
    {"eval_max_examples", "model", T_INT, OFF(eval_max_examples), "0", 0, BIG, 0, "evaluate on at most this many examples (0 = all)"},
    {"fed_eval_every", "model", T_INT, OFF(fed_eval_every), "0", 0, BIG, 0, "federated evaluation every N rounds: after the commit, fed_eval_clients clients evaluate the new model on their own data (0 = never)"},
    {"fed_eval_clients", "model", T_INT, OFF(fed_eval_clients), "10", 1, 1000000, 0, "clients asked per federated evaluation (fewer if fewer are connected)"},
    {"fed_eval_deadline", "model", T_DBL, OFF(fed_eval_deadline), "60", 0.01, 1e7, 0, "seconds a federated evaluation waits for answers; the next round starts after it"},
    {"fed_eval_max_examples", "model", T_INT, OFF(fed_eval_max_examples), "0", 0, 4294967295.0, 0, "each client evaluates at most this many of its examples (0 = all)"},
    {"rounds", "rounds", T_INT, OFF(rounds), "100", 1, BIG, 0, "rounds in the run (abandoned rounds count)"},
    {"clients_per_round", "rounds", T_INT, OFF(clients_per_round), "10", 1, 1000000, F_RUN, "K: reports that close a round"},
    {"min_clients", "rounds", T_INT, OFF(min_clients), "2", 1, 1000000, 0, "connected clients needed before a round starts"},
    {"min_reports", "rounds", T_INT, OFF(min_reports), "1", 1, 1000000, 0, "accepted updates needed at the deadline for a round to close"},
    {"over_selection", "rounds", T_DBL, OFF(over_selection), "1.0", 1, 10, F_RUN, "select ceil(K * factor) clients to tolerate drop-outs"},
    {"round_deadline", "rounds", T_DBL, OFF(round_deadline), "600", 0.01, 1e7, 0, "seconds a round waits for updates"},
    {"wait_timeout", "rounds", T_DBL, OFF(wait_timeout), "0", 0, 1e9, 0, "seconds to wait for min_clients before stopping (0 = forever, logging who is missing)"},
    {"max_buffered_uploads", "rounds", T_INT, OFF(max_buffered_uploads), "4", 1, 1024, 0, "uploads held in memory at once; others wait by TCP back-pressure"},
    {"seed", "rounds", T_U64, OFF(seed), "1", 0, 0, F_RUN, "seed of every random choice (selection, init)"},
    {"client_lr", "client", T_DBL, OFF(client_lr), "0.05", 0, 1e6, F_RUN, "client learning rate (base of the schedule)"},
    {"client_lr_schedule", "client", T_STR, OFF(client_lr_schedule), "constant", 0, 0, F_RUN, "constant, exp:R:S, invlin:R:S, invsqrt:R:S [:stair] [:warmup=N]"},
    {"local_epochs", "client", T_INT, OFF(local_epochs), "1", 1, 10000, F_RUN, "local epochs per round"},
    {"batch_size", "client", T_INT, OFF(batch_size), "20", 1, 1000000, F_RUN, "client batch size"},
    {"max_steps", "client", T_INT, OFF(max_steps), "0", 0, 4294967295.0, F_RUN, "clients stop local training after this many SGD steps (0 = full epochs); their weight is the examples they used"},
    {"client_momentum", "client", T_DBL, OFF(client_momentum), "0", 0, 0.999999, F_RUN, "client SGD momentum"},
    {"client_weight_decay", "client", T_DBL, OFF(client_weight_decay), "0", 0, 1e3, F_RUN, "client L2 weight decay"},
    {"server_opt", "server", T_STR, OFF(server_opt), "fedavg", 0, 0, F_RUN, "fedavg, fedavgm, fedadagrad, fedadam or fedyogi"},
    {"server_lr", "server", T_STR, OFF(server_lr), "auto", 0, 0, F_RUN, "server learning rate (auto: 1 for fedavg/fedavgm, 0.01 otherwise)"},
    {"momentum", "server", T_DBL, OFF(momentum), "0.9", 0, 1, F_RUN, "fedavgm momentum"},
    {"beta1", "server", T_STR, OFF(beta1), "auto", 0, 0, F_RUN, "first-moment decay (auto: 0 for fedadagrad, 0.9 otherwise)"},
    {"beta2", "server", T_DBL, OFF(beta2), "0.99", 0, 1, F_RUN, "second-moment decay (fedadam, fedyogi)"},
    {"tau", "server", T_DBL, OFF(tau), "1e-3", 0, 1e6, F_RUN, "adaptivity: added to sqrt(v) in the denominator"},
    {"initial_accumulator", "server", T_DBL, OFF(initial_accumulator), "0", 0, 1e6, F_RUN, "starting value of every element of v"},
    {"bias_correction", "server", T_BOOL, OFF(bias_correction), "false", 0, 1, F_RUN, "Adam-style bias correction (fedadam, fedyogi)"},
    {"weighting", "server", T_STR, OFF(weighting), "examples", 0, 0, F_RUN, "update weights: examples or uniform"},
    {"max_client_examples", "server", T_INT, OFF(max_client_examples), "0", 0, BIG, 0, "the most examples one client's update (under weighting = examples) or evaluation answer may claim, besides what it declared in Hello; a client whose Hello declared 0 may claim up to this, or nothing when it is 0 (0 = only the Hello cap)"},
    {"update_codec", "client", T_STR, OFF(update_codec), "f32", 0, 0, F_RUN, "delta encoding asked of protocol 1.1 clients that offer it: f32, f16, int8 or topk"},
    {"topk_fraction", "client", T_DBL, OFF(topk_fraction), "0.01", 1e-9, 0.5, F_RUN, "update_codec = topk: fraction of the delta's values a client sends"},
    {"aggregator", "robust", T_STR, OFF(aggregator), "mean", 0, 0, F_RUN, "how updates combine: mean (weighted, streamed), median, trimmed_mean:BETA or krum:F,M (these keep the round's K updates in memory; each client counts the same)"},
    {"aggregator_memory_mb", "robust", T_INT, OFF(aggregator_memory_mb), "1024", 1, 1e9, 0, "memory the aggregator may hold (median/trimmed_mean/krum: K x model); start-up refuses a setting that does not fit"},
    {"clip_norm", "robust", T_STR, OFF(clip_norm), "none", 0, 0, F_RUN, "clip each update to this L2 norm: none, a number C, or adaptive[:C0] (moves C towards clip_quantile of the norms)"},
    {"clip_quantile", "robust", T_DBL, OFF(clip_quantile), "0.5", 0, 1, F_RUN, "adaptive clipping: fraction of update norms C aims to cover"},
    {"clip_lr", "robust", T_DBL, OFF(clip_lr), "0.2", 1e-6, 10, F_RUN, "adaptive clipping: C <- C*exp(-clip_lr*(fraction within C - clip_quantile)) per round"},
    {"dp_noise_multiplier", "privacy", T_DBL, OFF(dp_noise_multiplier), "0", 0, 1e6, F_RUN, "DP-FedAvg: Gaussian noise of stddev z*clip_norm on each round's sum, divided by clients_per_round (0 = no DP; needs a clip_norm, fixed or adaptive, and aggregator = mean)"},
    {"dp_clip_count_stddev", "privacy", T_DBL, OFF(dp_clip_count_stddev), "0", 0, 1e9, F_RUN, "DP with adaptive clip_norm: stddev sigma_b of the noise on each round's count of updates within the bound (0 = clients_per_round / 20, as Andrew et al. 2021); must exceed dp_noise_multiplier / 2, and the update's noise multiplier becomes (z^-2 - (2 sigma_b)^-2)^-1/2 so that the round costs z"},
    {"dp_delta", "privacy", T_DBL, OFF(dp_delta), "1e-5", 1e-300, 0.5, 0, "delta at which the RDP accountant reports epsilon"},
    {"dp_target_epsilon", "privacy", T_DBL, OFF(dp_target_epsilon), "0", 0, 1e9, 0, "finish the run before a round would take epsilon past this (0 = no limit)"},
    {"secure_aggregation", "secagg", T_BOOL, OFF(secure_aggregation), "false", 0, 1, F_RUN, "secure aggregation (Bonawitz et al. 2017, SecAgg+ graph): the server learns each round's sum of quantized updates, never one client's; needs aggregator = mean, clip_norm = none, no DP, and protocol 1.1 clients with their own certificates"},
    {"secagg_dropout", "secagg", T_DBL, OFF(secagg_dropout), "0.1", 0, 0.45, F_RUN, "secure aggregation: fraction of a round's parties that may drop out at any phase (sets the graph degree k and threshold t)"},
    {"secagg_corrupt", "secagg", T_DBL, OFF(secagg_corrupt), "0.05", 0, 0.45, F_RUN, "secure aggregation: fraction of parties that may collude with the server (with secagg_dropout < 0.5)"},
    {"secagg_clip", "secagg", T_DBL, OFF(secagg_clip), "1", 1e-9, 1e6, F_RUN, "secure aggregation: each delta coordinate is clamped to [-c, c] before fixed-point quantization"},
    {"secagg_max_weight", "secagg", T_INT, OFF(secagg_max_weight), "1000", 1, 2147483647.0, F_RUN, "secure aggregation: a client's weight (examples used) is capped here and rounded; the fixed-point scale follows from it, secagg_clip and the round's parties"},
    {"secagg_phase_timeout", "secagg", T_DBL, OFF(secagg_phase_timeout), "30", 0.01, 1e6, 0, "secure aggregation: seconds each key or unmasking phase waits for answers (the masked inputs wait for round_deadline)"},
    {"secagg_dump_sums", "secagg", T_STR, OFF(secagg_dump_sums), "", 0, 0, 0, "testing: write each secure round's unmasked sum (numel + 1 little-endian words, what the server learns) to DIR/round-N.u32, for an exact comparison with the clients' plain sum"},
    {"log_level", "misc", T_STR, OFF(log_level), "info", 0, 0, 0, "error, warn, info or debug"},
};
#define NTABLE (sizeof table / sizeof table[0])

static const fl__cfg_entry_t *find(const char *name)
{
    char norm[64];
    size_t n = strlen(name);
    if (n >= sizeof norm)
        return NULL;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '-' ? '_' : name[i];
    for (size_t i = 0; i < NTABLE; i++)
        if (strcmp(table[i].name, norm) == 0)
            return &table[i];
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return FL_EINVAL;
}

/* Sets entry e from text v. A refused value returns FL_ECONFIG with what is
 * wrong with it in why ("is not a number in [0, 1]"); each caller reports it
 * in its own form (a usage error for a flag, a log line for a file). */
static int set_entry(fl_server_config_t *cfg, const fl__cfg_entry_t *e, const char *v, char *why, size_t n)
{
    char *p = (char *)cfg + e->off, *end = NULL;
    errno = 0;
    switch (e->type) {
    case T_STR: {
        char *dup = strdup(v);
        if (!dup)
            return FL_ENOMEM;
        free(*(char **)p);
        *(char **)p = dup;
        return 0;
    }
    case T_INT: {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno || (double)x < e->min || (double)x > e->max)
            goto bad;
        *(int64_t *)p = x;
        return 0;
    }
    case T_U64: {
        if (*v == '-')
            goto bad;
        unsigned long long x = strtoull(v, &end, 0);
        if (!*v || *end || errno)
            goto bad;
        *(uint64_t *)p = x;
        return 0;
    }
    case T_DBL: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x) || x < e->min || x > e->max)
            goto bad;
        *(double *)p = x;
        return 0;
    }
    case T_BOOL:
        if (parse_bool(v, (int *)p))
            goto bad;
        return 0;
    case T_RESUME: {
        int b;
        if (strcasecmp(v, "auto") == 0)
            *(fl_resume_t *)p = FL_RESUME_AUTO;
        else if (parse_bool(v, &b) == 0)
            *(fl_resume_t *)p = b ? FL_RESUME_YES : FL_RESUME_NO;
        else
            goto bad;
        return 0;
    }
    }
bad:
    if (e->type == T_INT || e->type == T_DBL)
        snprintf(why, n, "is not %s in [%g, %g]", e->type == T_INT ? "an integer" : "a number", e->min, e->max);
    else if (e->type == T_U64)
        snprintf(why, n, "is not an integer in [0, 18446744073709551615]");
    else if (e->type == T_BOOL)
        snprintf(why, n, "is not a boolean (true, false, yes, no, on, off, 1, 0)");
    else
        snprintf(why, n, "is not one of: no, yes, auto");
    return FL_ECONFIG;
}

int fl_server_config_set(fl_server_config_t *cfg, const char *name, const char *value)
{
    if (!cfg || !name || !value)
        return FL_EINVAL;
    const fl__cfg_entry_t *e = find(name);
    if (!e)
        return FL_ENOTFOUND;
    char why[128];
    int rc = set_entry(cfg, e, value, why, sizeof why);
    if (rc == FL_ECONFIG)
        FL_LOG_E("config", "%s: '%s' %s", e->name, value, why);
    return rc;
}

int fl_server_config_defaults(fl_server_config_t *cfg)
{
    if (!cfg)
        return FL_EINVAL;
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NTABLE; i++) {
        char why[128];
        int rc = set_entry(cfg, &table[i], table[i].def, why, sizeof why);
        if (rc) {
            fl_server_config_free(cfg);
            return rc;
        }
    }
    return 0;
}

void fl_server_config_free(fl_server_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NTABLE; i++)
        if (table[i].type == T_STR) {
            char **p = (char **)((char *)cfg + table[i].off);
            free(*p);
            *p = NULL;
        }
}

typedef struct {
    fl_server_config_t *cfg;
    const char *path;
    int rc;
} ini_ctx_t;

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    ini_ctx_t *c = user;
    const fl__cfg_entry_t *e = find(name);
    if (!e) {
        FL_LOG_E("config", "%s: [%s] %s: unknown setting", c->path, section, name);
        c->rc = FL_ECONFIG;
        return 1; /* keep going so every mistake is reported at once */
    }
    if (section[0] && strcmp(section, e->section) != 0) {
        FL_LOG_E("config", "%s: %s belongs in section [%s], not [%s]", c->path, name, e->section, section);
        c->rc = FL_ECONFIG;
        return 1;
    }
    char why[128] = "";
    int rc = set_entry(c->cfg, e, value, why, sizeof why);
    if (rc) {
        FL_LOG_E("config", "%s: [%s] %s = %s refused: '%s' %s", c->path, section, name, value, value, why);
        c->rc = rc;
    }
    return 1;
}

int fl_server_config_load_ini(fl_server_config_t *cfg, const char *path)
{
    if (!cfg || !path)
        return FL_EINVAL;
    ini_ctx_t c = {cfg, path, 0};
    int r = ini_parse(path, ini_cb, &c);
    if (r == -1) {
        FL_LOG_E("config", "%s: cannot open: %s", path, strerror(errno));
        return FL_EIO;
    }
    if (r == -2)
        return FL_ENOMEM;
    if (r > 0) {
        FL_LOG_E("config", "%s:%d: syntax error (or line longer than the parser's limit)", path, r);
        return FL_ECONFIG;
    }
    return c.rc;
}

int fl_server_config_parse_args(fl_server_config_t *cfg, int argc, char **argv, int *help)
{
    char name[64], why[128];
    const char *val;
    /* Usage errors are plain lines (common/base/cli.h), not log lines. */
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "run", NULL, NULL, 0, NULL);
    *help = fl_cli_wants_help(argc, argv);
    if (*help)
        return 0;
    /* Pass 1: --config, so that flags override the file wherever they appear. */
    for (int i = 0; i < argc; i++) {
        if (fl_cli_split_flag(argv[i], name, sizeof name, &val) == 0 && strcmp(name, "config") == 0) {
            if (!val) {
                if (i + 1 >= argc) {
                    fl_cli_error(&cli, "--config needs a file");
                    return FL_ECONFIG;
                }
                val = argv[++i];
            }
            int rc = fl_server_config_load_ini(cfg, val);
            if (rc)
                return FL_ECONFIG;
        }
    }
    for (int i = 0; i < argc; i++) {
        if (fl_cli_split_flag(argv[i], name, sizeof name, &val)) {
            fl_cli_error(&cli, "unexpected argument '%s' (settings are --name VALUE)", argv[i]);
            return FL_ECONFIG;
        }
        if (strcmp(name, "config") == 0) {
            if (!val)
                i++;
            continue;
        }
        const fl__cfg_entry_t *e = find(name);
        if (!e) {
            fl_cli_error(&cli, "unknown setting --%s", name);
            return FL_ECONFIG;
        }
        if (!val) {
            /* A boolean flag alone switches it on; "--flag yes" (a word a
             * boolean or resume setting understands) is taken as its value. */
            static const char *const words[] = {"yes", "no", "true", "false", "on",
                                                "off", "1",   "0",     "auto"};
            int next_is_word = 0;
            for (size_t k = 0; i + 1 < argc && k < sizeof words / sizeof words[0]; k++)
                next_is_word |= strcmp(argv[i + 1], words[k]) == 0;
            if ((e->type == T_BOOL || e->type == T_RESUME) && next_is_word)
                val = argv[++i];
            else if (e->type == T_BOOL || e->type == T_RESUME)
                val = "true";
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                fl_cli_error(&cli, "--%s needs a value", name);
                return FL_ECONFIG;
            }
        }
        int rc = set_entry(cfg, e, val, why, sizeof why);
        if (rc == FL_ECONFIG) {
            char flag[72];
            snprintf(flag, sizeof flag, "--%s", name);
            fl_cli_arg(&cli, flag, val);
            fl_cli_bad_value(&cli, why);
        }
        if (rc)
            return rc == FL_ENOMEM ? FL_ENOMEM : FL_ECONFIG;
    }
    return 0;
}

static int auto_or_number(const char *name, const char *s, double def, double min, double max, double *out)
{
    if (strcmp(s, "auto") == 0) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(x) || x < min || x > max) {
        FL_LOG_E("config", "%s: bad value '%s' (want auto or a number in [%g, %g])", name, s, min, max);
        return FL_ECONFIG;
    }
    *out = x;
    return 0;
}

int fl_server_config_finish(fl_server_config_t *cfg)
{
    fl_serveropt_kind_t kind;
    if (fl_serveropt_parse_kind(cfg->server_opt, &kind)) {
        FL_LOG_E("config", "server_opt: unknown optimizer '%s'", cfg->server_opt);
        return FL_ECONFIG;
    }
    fl_serveropt_config_t o;
    fl_serveropt_config_defaults(&o, kind);
    if (auto_or_number("server_lr", cfg->server_lr, o.server_lr, 0, 1e6, &o.server_lr) ||
        auto_or_number("beta1", cfg->beta1, o.beta1, 0, 1, &o.beta1))
        return FL_ECONFIG;
    o.momentum = cfg->momentum;
    o.beta2 = cfg->beta2;
    o.tau = cfg->tau;
    o.initial_accumulator = cfg->initial_accumulator;
    o.bias_correction = cfg->bias_correction;
    if (fl_serveropt_parse_weighting(cfg->weighting, &o.weighting)) {
        FL_LOG_E("config", "weighting: want examples or uniform, not '%s'", cfg->weighting);
        return FL_ECONFIG;
    }
    if (fl_serveropt_config_validate(&o))
        return FL_ECONFIG;
    cfg->opt = o;
    /* Each upload being received holds a chunk frame and a spare chunk
     * buffer (common/net/tls): a budget below that would close honest
     * uploaders when every buffer is busy. */
    if (cfg->frame_budget_mb < 8 * cfg->max_buffered_uploads + 1)
        FL_LOG_W("config", "frame_budget_mb %lld is below what %lld uploads in flight may hold (%lld MiB)",
                 (long long)cfg->frame_budget_mb, (long long)cfg->max_buffered_uploads,
                 (long long)(8 * cfg->max_buffered_uploads + 1));
    fl_codec_t codec;
    if (fl_codec_parse(cfg->update_codec, &codec)) {
        FL_LOG_E("config", "update_codec: want f32, f16, int8 or topk, not '%s'", cfg->update_codec);
        return FL_ECONFIG;
    }
    if (fl_lr_schedule_parse(cfg->client_lr_schedule, cfg->client_lr, &cfg->lr_schedule)) {
        FL_LOG_E("config", "client_lr_schedule: cannot parse '%s'", cfg->client_lr_schedule);
        return FL_ECONFIG;
    }
    fl_log_level_t lvl;
    if (fl_log_parse_level(cfg->log_level, &lvl)) {
        FL_LOG_E("config", "log_level: want error, warn, info or debug, not '%s'", cfg->log_level);
        return FL_ECONFIG;
    }
    if (!cfg->model[0]) {
        FL_LOG_E("config", "model: a model name is required");
        return FL_ECONFIG;
    }
    if (!cfg->db[0]) {
        FL_LOG_E("config", "db: a database path is required");
        return FL_ECONFIG;
    }
    fl_agg_config_t agg = {.capacity = (uint32_t)cfg->clients_per_round,
                           .clip = {.quantile = cfg->clip_quantile, .lr = cfg->clip_lr},
                           .dp_noise_multiplier = cfg->dp_noise_multiplier,
                           .dp_denominator = (double)cfg->clients_per_round,
                           .dp_count_stddev = cfg->dp_clip_count_stddev > 0 ? cfg->dp_clip_count_stddev
                                                                            : cfg->clients_per_round / 20.0};
    if (fl_agg_parse(cfg->aggregator, &agg.spec)) {
        FL_LOG_E("config", "aggregator: want mean, median, trimmed_mean:BETA (0 <= BETA < 0.5) or krum:F[,M], not '%s'",
                 cfg->aggregator);
        return FL_ECONFIG;
    }
    if (fl_clip_parse(cfg->clip_norm, &agg.clip)) {
        FL_LOG_E("config", "clip_norm: want none, a positive number or adaptive[:C0], not '%s'", cfg->clip_norm);
        return FL_ECONFIG;
    }
    if (fl_agg_config_validate(&agg))
        return FL_ECONFIG;
    if (agg.spec.rule == FL_AGG_KRUM && cfg->min_reports < (int64_t)agg.spec.f + 3) {
        FL_LOG_E("config", "aggregator krum:%u needs min_reports >= f + 3 = %u so that every closed round can be scored",
                 agg.spec.f, agg.spec.f + 3);
        return FL_ECONFIG;
    }
    if (cfg->dp_target_epsilon > 0 && cfg->dp_noise_multiplier == 0) {
        FL_LOG_E("config", "dp_target_epsilon needs dp_noise_multiplier > 0");
        return FL_ECONFIG;
    }
    cfg->agg = agg;
    if (cfg->secure_aggregation) {
        fl_secround_plan_t plan;
        uint32_t n = (uint32_t)ceil((double)cfg->clients_per_round * cfg->over_selection - 1e-9);
        if (agg.spec.rule != FL_AGG_MEAN || agg.clip.mode != FL_CLIP_NONE || cfg->dp_noise_multiplier > 0) {
            FL_LOG_E("config", "secure_aggregation needs aggregator = mean, clip_norm = none and no DP: the server "
                               "sees only the round's sum");
            return FL_ECONFIG;
        }
        if (cfg->secagg_dropout + cfg->secagg_corrupt >= 0.5) {
            FL_LOG_E("config", "secagg_dropout + secagg_corrupt must stay below 0.5");
            return FL_ECONFIG;
        }
        int rc = fl_secround_plan(n, cfg->secagg_dropout, cfg->secagg_corrupt, cfg->secagg_clip,
                                  (uint32_t)cfg->secagg_max_weight, &plan);
        if (rc) {
            FL_LOG_E("config", "secure_aggregation: no graph and scale for %u parties at secagg_dropout %g, "
                               "secagg_corrupt %g, secagg_clip %g, secagg_max_weight %lld (%s): select more clients "
                               "or tolerate less",
                     n, cfg->secagg_dropout, cfg->secagg_corrupt, cfg->secagg_clip,
                     (long long)cfg->secagg_max_weight, fl_strerror(rc));
            return FL_ECONFIG;
        }
    }
    if (cfg->min_reports > cfg->clients_per_round) {
        FL_LOG_E("config", "min_reports (%lld) exceeds clients_per_round (%lld): no round could close",
                 (long long)cfg->min_reports, (long long)cfg->clients_per_round);
        return FL_ECONFIG;
    }
    return 0;
}

static void format_value(const fl_server_config_t *cfg, const fl__cfg_entry_t *e, char *buf, size_t len)
{
    const char *p = (const char *)cfg + e->off;
    switch (e->type) {
    case T_STR:
        snprintf(buf, len, "%s", *(char *const *)p ? *(char *const *)p : "");
        break;
    case T_INT:
        snprintf(buf, len, "%lld", (long long)*(const int64_t *)p);
        break;
    case T_U64:
        snprintf(buf, len, "%llu", (unsigned long long)*(const uint64_t *)p);
        break;
    case T_DBL: {
        /* The shortest text that reads back as the same double. */
        double x = *(const double *)p;
        snprintf(buf, len, "%.15g", x);
        if (strtod(buf, NULL) != x)
            snprintf(buf, len, "%.17g", x);
        break;
    }
    case T_BOOL:
        snprintf(buf, len, "%s", *(const int *)p ? "true" : "false");
        break;
    case T_RESUME: {
        fl_resume_t r = *(const fl_resume_t *)p;
        snprintf(buf, len, "%s", r == FL_RESUME_AUTO ? "auto" : r == FL_RESUME_YES ? "yes" : "no");
        break;
    }
    }
}

int fl_server_config_get(const fl_server_config_t *cfg, const char *name, char *buf, size_t len)
{
    const fl__cfg_entry_t *e = find(name);
    if (!e)
        return FL_ENOTFOUND;
    char tmp[4096];
    format_value(cfg, e, tmp, sizeof tmp);
    if (strlen(tmp) >= len)
        return FL_ERANGE;
    strcpy(buf, tmp);
    return 0;
}

void fl_server_config_print_help(FILE *out)
{
    const char *sect = "";
    fprintf(out, "Settings: each is a flag (--name VALUE, --name=VALUE; --log-level and --log_level\n"
                 "are the same) and an INI key (log_level, in the [section] shown):\n");
    for (size_t i = 0; i < NTABLE; i++) {
        const fl__cfg_entry_t *e = &table[i];
        if (strcmp(sect, e->section) != 0) {
            sect = e->section;
            fprintf(out, "\n[%s]\n", sect);
        }
        static const char *tn[] = {"text", "int", "uint", "number", "bool", "no|yes|auto"};
        char flag[64];
        size_t k = 0;
        for (; e->name[k] && k + 1 < sizeof flag; k++)
            flag[k] = e->name[k] == '_' ? '-' : e->name[k];
        flag[k] = 0;
        fprintf(out, "  --%-22s %-11s default: %s%s\n      %s\n", flag, tn[e->type],
                e->def[0] ? e->def : "(empty)", e->flags & F_RUN ? "  [run]" : "", e->help);
    }
    fprintf(out, "\n[run] settings define a run: --resume refuses to change them.\n");
}

int fl_server_config_to_json(const fl_server_config_t *cfg, char **json)
{
    fl_json_t j;
    char v[4096];
    fl_json_init_buf(&j);
    fl_json_obj_begin(&j);
    for (size_t i = 0; i < NTABLE; i++) {
        const fl__cfg_entry_t *e = &table[i];
        fl_json_key(&j, e->name);
        format_value(cfg, e, v, sizeof v);
        if (e->type == T_STR || e->type == T_RESUME || e->type == T_U64)
            fl_json_str(&j, v); /* u64 as text: JSON numbers lose bits above 2^53 */
        else
            fl_json_raw(&j, v);
    }
    if (cfg->secure_aggregation) {
        /* What the settings give a round of ceil(K * over_selection)
         * parties (a round with fewer connected clients gets its own, in
         * the log): the graph, the threshold and the fixed-point scale. */
        fl_secround_plan_t p;
        uint32_t n = (uint32_t)ceil((double)cfg->clients_per_round * cfg->over_selection - 1e-9);
        uint32_t w = cfg->weighting && strcmp(cfg->weighting, "uniform") == 0 ? 1 : (uint32_t)cfg->secagg_max_weight;
        if (fl_secround_plan(n, cfg->secagg_dropout, cfg->secagg_corrupt, cfg->secagg_clip, w, &p) == 0) {
            fl_json_key(&j, "secagg_plan");
            fl_json_obj_begin(&j);
            fl_json_key(&j, "parties");
            fl_json_u64(&j, p.n);
            fl_json_key(&j, "degree");
            fl_json_u64(&j, p.k);
            fl_json_key(&j, "threshold");
            fl_json_u64(&j, p.t);
            fl_json_key(&j, "complete");
            fl_json_bool(&j, p.complete);
            fl_json_key(&j, "scale");
            fl_json_double(&j, p.scale, 0);
            fl_json_key(&j, "max_weight");
            fl_json_u64(&j, w);
            fl_json_obj_end(&j);
        }
    }
    fl_json_obj_end(&j);
    return fl_json_finish(&j, json, NULL);
}

int fl_server_config_each_run_setting(int (*fn)(const char *name, void *user), void *user)
{
    for (size_t i = 0; i < NTABLE; i++)
        if (table[i].flags & F_RUN) {
            int rc = fn(table[i].name, user);
            if (rc)
                return rc;
        }
    return 0;
}
