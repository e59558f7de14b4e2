/* fleet: N simulated clients in one process, for experiments and tests.
 *
 * Every virtual client is a full session (client/session): its own TLS
 * connection, its own certificate identity and its own share of the data,
 * all on one libuv loop. Training runs on a pool of J jobs, and the pool keeps
 * one shared copy of a round's model (client/session.h), so memory holds that
 * copy and one scratch buffer per round plus one model per training job, never
 * one per connected or waiting client (each job slot keeps its model between
 * tasks: fl_session_pool_keep_models); the data is loaded once and each client indexes its share
 * of it (common/data/partition).
 *
 * Identities: the server identifies a client by its certificate's common name
 * (proto/README.md), so each virtual client NAME uses certs_dir/clients/
 * NAME.crt and .key, and the fleet issues the missing ones with the fleet
 * CA's key (certs_dir/ca.key, as `fedopt-server certs init` made it). Names
 * are PREFIX-NNNN with the client's data index, so client 7 is always the
 * same identity with the same data.
 *
 * Progress: on a terminal one line redrawn every second (clients connected,
 * selected, training, uploaded in the current round); otherwise a plain line
 * whenever the round changes and every 10 seconds. */
#ifndef FL_CLIENT_FLEET_H
#define FL_CLIENT_FLEET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "client/session.h"
#include "common/net/metrics.h"
#include "common/data/dataset.h"
#include "client/attack.h"
#include "common/data/partition.h"

/* Fault injection rates, each a probability in [0, 1] per task. Per task,
 * from the stream {seed, client id, round, purpose}, a client may vanish
 * after receiving the model (drop), upload straggle_delay seconds late
 * (straggle), or send a delta with a NaN or one float short (corrupt). The
 * fleet applies them through its sessions' hooks (fl_session_hooks_t). */
typedef struct {
    double drop_rate;       /* disconnect after receiving the model */
    double straggle_rate;   /* upload straggle_delay seconds late */
    double straggle_delay;  /* seconds */
    double corrupt_rate;    /* send a NaN or a wrong-shape delta */
    double unmask_drop_rate; /* secure rounds: the last round(rate * partition clients) ids
                                disconnect right after their masked input (before unmasking) */
} fl_fleet_chaos_t;

typedef struct {
    const char *host;
    int port;
    const char *server_name;  /* NULL = host */
    const char *ca_file;      /* NULL = certs_dir/ca.crt */
    const char *certs_dir;    /* the fleet directory (ca.crt, ca.key, clients/) */
    const char *cert_file;    /* with key_file: ONE certificate for every client (the server must
                                 list its name in shared_certs; clients are told apart by their
                                 Hello names); NULL = one certificate per client */
    const char *key_file;
    const char *prefix;       /* client names: PREFIX-NNNN (default "sim") */
    size_t first, count;      /* clients first, first+stride, ... (count of them) of the partition */
    size_t stride;            /* 0 or 1: consecutive clients; N: every N-th (--shard I/N) */
    unsigned jobs;            /* trainings at once (>= 1) */
    const fl_dataset_t *data; /* the whole training split */
    const fl_partition_t *parts; /* its partition into clients */
    const char *data_spec;    /* Hello.data_spec text */
    fl_fleet_chaos_t chaos;
    double byzantine_rate;    /* the first round(rate * partition clients) client ids attack */
    fl_attack_t attack;       /* what they do (client/attack.h) */
    double backoff_max;       /* seconds (0 = session default) */
    double give_up;           /* seconds without a server before a client stops (0 = never) */
    double connect_spread;    /* seconds over which the first connections are spread (0: as fast
                                 as 32 handshakes in flight allow) */
    uint64_t seed;
    int tty;                  /* 1: redraw one progress line; 0: plain lines */
    FILE *progress;           /* where progress goes (NULL = none) */
    const char *secagg_dump_sums; /* tests: DIR/round-N.u32 gets the sum (mod 2^32) of the
                                 quantized words this fleet's clients masked and sent in
                                 secure round N, to compare with the server's unmasked sum */
    fl_metrics_t *metrics;    /* the fleet's Prometheus metrics are kept here (NULL = none;
                                 families from fl_fleet_metrics_define) */
} fl_fleet_opts_t;

/* What a fleet did, summed over its clients. */
typedef struct {
    size_t clients, failed;   /* clients, and clients that stopped with an error */
    size_t attackers;         /* clients of this fleet that attack (--byzantine-rate) */
    uint64_t connects, offers, uploads, evals, failed_jobs, drops, straggles, corrupts;
    uint64_t samples;         /* examples trained on, every epoch counted (fl_session_stats_t) */
    double train_seconds;     /* wall time of those trainings, summed over jobs */
    uint64_t last_round;      /* highest round offered */
    double seconds;
} fl_fleet_result_t;

/* Declares the fleet's metric families in m: fedopt_fleet_clients{state},
 * fedopt_fleet_jobs, fedopt_fleet_jobs_busy, fedopt_fleet_round and the
 * counters fedopt_fleet_{connects,reconnects,offers,uploads,evals,
 * failed_jobs,samples,train_seconds}_total, updated every tick while the
 * fleet runs and once more when it ends. The fleet's samples/s is
 * rate(fedopt_fleet_samples_total[1m]) in PromQL. */
int fl_fleet_metrics_define(fl_metrics_t *m);

/* Makes sure certs_dir/clients/NAME.crt exists for every client, issuing the
 * missing ones. Returns 0 or the first fl_certs_issue error (logged). */
int fl_fleet_certs(const fl_fleet_opts_t *o);

/* Runs the fleet on a loop of its own until every client is done: the server
 * said its run finished (Bye "run finished"), SIGINT/SIGTERM stopped the
 * fleet, or the clients gave up after give_up seconds without a server. *res
 * (may be NULL) gets the totals. Returns 0, or FL_EINVAL / FL_ENOMEM /
 * FL_ECONFIG (certificates) when it could not start. */
int fl_fleet_run(const fl_fleet_opts_t *o, fl_fleet_result_t *res);

#endif
