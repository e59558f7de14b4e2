/* srvmetrics: the server's Prometheus metrics (common/net/metrics holds the
 * registry and serves it on metrics_listen).
 *
 * The daemon calls one function per event; each accepts a NULL registry (no
 * metrics_listen) and does nothing then. Round totals are counted from the
 * very row and updates that are committed to SQLite, so they always equal
 * the round log (tests/integration/test_prometheus.sh compares them).
 *
 * Families (all prefixed fedopt_): round, phase{phase}, clients_connected,
 * round_clients_selected, round_duration_seconds (histogram),
 * rounds_total{status}, clients_selected_total, clients_reported_total,
 * clients_dropped_total, updates_total{status}, updates_refused_total{reason},
 * connections_rejected_total{reason}, tls_handshake_failures_total{reason},
 * received_bytes_total, sent_bytes_total (update and model payloads, as the
 * round log counts them), aggregation_seconds / finish_seconds /
 * commit_seconds / evaluation_seconds (histograms), train_loss, eval_loss,
 * eval_accuracy, run; and process_resident_memory_bytes. */
#ifndef FL_SRVMETRICS_H
#define FL_SRVMETRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/net/metrics.h"
#include "server/store.h"

/* Makes a registry with every family above. Returns 0 or FL_ENOMEM. */
int fl_srvmetrics_create(fl_metrics_t **out);

/* The loop's periodic view: the phase's name (waiting, round, committing,
 * fedeval, fedeval_commit, done), the round being run or awaited, the
 * connected clients. */
void fl_srvmetrics_tick(fl_metrics_t *m, const char *phase, int64_t round, size_t connected);

void fl_srvmetrics_run(fl_metrics_t *m, int64_t run_id);

/* A round opened with `selected` clients. */
void fl_srvmetrics_round_started(fl_metrics_t *m, int64_t round, int64_t selected);

/* A round's row and its updates were committed. */
void fl_srvmetrics_round_committed(fl_metrics_t *m, const fl_store_round_t *row, const fl_store_update_t *ups,
                                   size_t nups);

/* A connection was rejected at Hello, for `reason`. */
void fl_srvmetrics_rejected(fl_metrics_t *m, const char *reason);

/* A TLS handshake failed with FL_E* `reason`. */
void fl_srvmetrics_tls_failure(fl_metrics_t *m, int reason);

/* Seconds spent in one step: "aggregation" (one update), "finish",
 * "commit", "evaluation". Callable from the thread pool. */
void fl_srvmetrics_seconds(fl_metrics_t *m, const char *step, double seconds);

#endif
