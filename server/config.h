/* config: every fedopt-server setting, in one table.
 *
 * Each setting has a name, a type, a default, a help line and an INI section.
 * A value comes from (lowest to highest precedence) the table's default, the
 * INI file given with --config (parsed by inih; a key may sit in its own
 * section or before any section), then a command-line flag of the same name
 * (`--name value`, `--name=value`; dashes and underscores are equivalent; a
 * boolean flag alone means true). `--help` prints the table with defaults.
 *
 * Settings flagged "run" define a run (model, optimizer, seed, ...): a resumed
 * run refuses a configuration that changes any of them, because the restored
 * model and optimizer state would not mean what they meant. */
#ifndef FL_SERVER_CONFIG_H
#define FL_SERVER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "common/nn/clientopt.h"
#include "server/aggregate.h"
#include "server/serveropt.h"

typedef enum {
    FL_RESUME_NO = 0,   /* always start a new run */
    FL_RESUME_YES = 1,  /* continue the latest unfinished run; error if there is none */
    FL_RESUME_AUTO = 2, /* continue one if there is one, else start a new run */
} fl_resume_t;

/* The parsed settings. Strings are malloc'ed and owned by the struct. */
typedef struct {
    /* network */
    char *listen;          /* HOST:PORT */
    char *tls_cert;        /* server certificate (PEM) */
    char *tls_key;         /* its private key */
    char *tls_ca;          /* CA that signs the clients' certificates */
    char *shared_certs;    /* certificate names that may carry several clients ("" = none) */
    char *metrics_listen;  /* HOST:PORT of the Prometheus endpoint ("" = none) */
    int require_client_cert;
    int64_t max_connections;
    int64_t max_handshakes;
    double hello_timeout;  /* seconds from the handshake to Hello */
    int64_t frame_budget_mb; /* partial frames of all connections, MiB */
    double heartbeat;      /* seconds between heartbeats */
    /* storage */
    char *db;
    fl_resume_t resume;
    int64_t keep_checkpoints; /* most recent checkpoints kept per run; 0 = all */
    /* model and data */
    char *model;
    char *init;            /* optional safetensors file for the initial weights */
    char *eval_data;       /* data spec for central evaluation ("" = none) */
    int64_t eval_every;
    int64_t eval_max_examples;
    int64_t fed_eval_every;    /* federated evaluation every N rounds (0 = never) */
    int64_t fed_eval_clients;  /* clients asked per federated evaluation */
    double fed_eval_deadline;  /* seconds to wait for their answers */
    int64_t fed_eval_max_examples; /* per-client cap (0 = all) */
    /* rounds */
    int64_t rounds;
    int64_t clients_per_round;
    int64_t min_clients;   /* connected clients needed before a round starts */
    int64_t min_reports;   /* accepted updates needed for a round to close */
    double over_selection; /* select ceil(K * factor) clients, close at K reports */
    double round_deadline; /* seconds */
    double wait_timeout;   /* seconds to wait for min_clients before giving up (0 = forever, logged) */
    int64_t max_buffered_uploads;
    uint64_t seed;
    /* client optimizer */
    double client_lr;
    char *client_lr_schedule;
    int64_t local_epochs;
    int64_t batch_size;
    int64_t max_steps;     /* SGD steps per client and round (0 = no cap) */
    double client_momentum;
    double client_weight_decay;
    /* server optimizer */
    char *server_opt;
    char *server_lr;       /* "auto" or a number (auto = the optimizer's default) */
    double momentum;
    char *beta1;           /* "auto" or a number */
    double beta2;
    double tau;
    double initial_accumulator;
    int bias_correction;
    char *weighting;
    int64_t max_client_examples; /* operator cap on an update's examples (0 = none) */
    char *update_codec;    /* f32, f16, int8, topk */
    double topk_fraction;
    /* robust aggregation and differential privacy */
    char *aggregator;          /* mean, median, trimmed_mean:BETA, krum:F,M */
    int64_t aggregator_memory_mb; /* budget for the aggregator's buffers */
    char *clip_norm;           /* none, C, adaptive[:C0] */
    double clip_quantile;      /* adaptive: target fraction of norms within C */
    double clip_lr;            /* adaptive: geometric step */
    double dp_noise_multiplier; /* z: noise stddev z*C on the round's sum (0 = no DP) */
    double dp_clip_count_stddev; /* adaptive clipping under DP: sigma_b (0 = clients_per_round / 20) */
    double dp_delta;
    double dp_target_epsilon;  /* finish the run before epsilon would pass this (0 = no limit) */
    /* secure aggregation (server/secround, docs/secure-aggregation.md) */
    int secure_aggregation;
    double secagg_dropout;     /* fraction of a round's parties that may vanish */
    double secagg_corrupt;     /* fraction that may collude with the server */
    double secagg_clip;        /* coordinates clamped to [-clip, clip] before quantization */
    int64_t secagg_max_weight; /* a client's weight is capped here (uniform weighting: 1) */
    double secagg_phase_timeout; /* seconds for the key and unmasking phases */
    char *secagg_dump_sums;    /* tests: a directory for each round's unmasked word sum ("" = none) */
    /* misc */
    char *log_level;

    /* Derived by fl_server_config_finish (not settings themselves). */
    fl_serveropt_config_t opt;
    fl_lr_schedule_t lr_schedule;
    fl_agg_config_t agg;
} fl_server_config_t;

/* Fills *cfg with the defaults (strings allocated). Returns 0 or FL_ENOMEM. */
int fl_server_config_defaults(fl_server_config_t *cfg);

/* Frees the strings. Accepts NULL; *cfg must have come from _defaults. */
void fl_server_config_free(fl_server_config_t *cfg);

/* Sets one setting from its text form. Returns 0, FL_ENOTFOUND (no such
 * setting) or FL_ECONFIG (bad value, logged with the name). */
int fl_server_config_set(fl_server_config_t *cfg, const char *name, const char *value);

/* Applies an INI file. Unknown keys, keys in the wrong section and bad values
 * are errors naming the file and key. Returns 0, FL_EIO or FL_ECONFIG. */
int fl_server_config_load_ini(fl_server_config_t *cfg, const char *path);

/* Applies argv (flags only, argv[0] is not skipped): first any --config FILE,
 * then every other --name [value] in order. Arguments that are not flags are
 * errors. *help is set to 1 when --help or -h is present (nothing else is
 * applied). A bad flag is printed as a usage error (common/base/cli.h: a
 * plain line naming the flag and the value), a bad --config file is logged.
 * Returns 0, FL_ECONFIG or FL_ENOMEM. */
int fl_server_config_parse_args(fl_server_config_t *cfg, int argc, char **argv, int *help);

/* Checks ranges and cross-setting rules, and fills cfg->opt and
 * cfg->lr_schedule. Returns 0 or FL_ECONFIG (logged). */
int fl_server_config_finish(fl_server_config_t *cfg);

/* Prints every setting with its type, default and help (for --help), each
 * under its flag name (kebab-case) and INI section. */
void fl_server_config_print_help(FILE *out);

/* Writes every setting as one JSON object {"name": value, ...} into a new
 * malloc'ed string the caller frees. Returns 0 or FL_ENOMEM. */
int fl_server_config_to_json(const fl_server_config_t *cfg, char **json);

/* Writes the value of setting `name` as text into buf. Returns 0,
 * FL_ENOTFOUND or FL_ERANGE (buffer too small). */
int fl_server_config_get(const fl_server_config_t *cfg, const char *name, char *buf, size_t len);

/* Calls fn(name, user) for each setting flagged "run"; stops at the first
 * non-zero return and returns it. */
int fl_server_config_each_run_setting(int (*fn)(const char *name, void *user), void *user);

#endif
