#include "server/srvmetrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/base/error.h"

static const char *const phases[] = {"waiting", "round", "committing", "fedeval", "fedeval_commit", "done"};

int fl_srvmetrics_create(fl_metrics_t **out)
{
    /* Rounds take from seconds (tests, small models) to many minutes
     * (stragglers, deadlines); steps from milliseconds up. */
    static const double round_b[] = {0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600};
    static const double step_b[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300};
    static const struct {
        const char *name;
        fl_metric_type_t type;
        const char *label, *help;
        int hist; /* 0 none, 1 round buckets, 2 step buckets */
    } fam[] = {
        {"fedopt_run", FL_METRIC_GAUGE, NULL, "The run being served (runs.id).", 0},
        {"fedopt_round", FL_METRIC_GAUGE, NULL, "The round being run or awaited.", 0},
        {"fedopt_phase", FL_METRIC_GAUGE, "phase", "1 for the server's current phase, 0 for the others.", 0},
        {"fedopt_clients_connected", FL_METRIC_GAUGE, NULL, "Clients connected (TLS up).", 0},
        {"fedopt_round_clients_selected", FL_METRIC_GAUGE, NULL, "Clients selected for the open round.", 0},
        {"fedopt_round_duration_seconds", FL_METRIC_HISTOGRAM, NULL, "Round duration, start to close.", 1},
        {"fedopt_rounds_total", FL_METRIC_COUNTER, "status", "Rounds committed, closed or abandoned.", 0},
        {"fedopt_clients_selected_total", FL_METRIC_COUNTER, NULL, "Clients selected, over committed rounds.", 0},
        {"fedopt_clients_reported_total", FL_METRIC_COUNTER, NULL, "Clients that reported an accepted update.", 0},
        {"fedopt_clients_dropped_total", FL_METRIC_COUNTER, NULL, "Selected clients that never delivered.", 0},
        {"fedopt_updates_total", FL_METRIC_COUNTER, "status", "Updates in committed rounds by status.", 0},
        {"fedopt_updates_refused_total", FL_METRIC_COUNTER, "reason", "Refused or dropped updates by reason.", 0},
        {"fedopt_connections_rejected_total", FL_METRIC_COUNTER, "reason", "Connections rejected at Hello.", 0},
        {"fedopt_tls_handshake_failures_total", FL_METRIC_COUNTER, "reason", "Failed TLS handshakes by error.", 0},
        {"fedopt_received_bytes_total", FL_METRIC_COUNTER, NULL, "Update bytes received in committed rounds.", 0},
        {"fedopt_sent_bytes_total", FL_METRIC_COUNTER, NULL, "Model bytes sent in committed rounds.", 0},
        {"fedopt_aggregation_seconds", FL_METRIC_HISTOGRAM, NULL, "Adding one update into the aggregate.", 2},
        {"fedopt_finish_seconds", FL_METRIC_HISTOGRAM, NULL, "ServerOpt's step at a round's close.", 2},
        {"fedopt_commit_seconds", FL_METRIC_HISTOGRAM, NULL, "Committing a round to SQLite.", 2},
        {"fedopt_evaluation_seconds", FL_METRIC_HISTOGRAM, NULL, "Central evaluation of a round's model.", 2},
        {"fedopt_train_loss", FL_METRIC_GAUGE, NULL, "Last committed round's mean training loss.", 0},
        {"fedopt_eval_loss", FL_METRIC_GAUGE, NULL, "Last central evaluation's loss.", 0},
        {"fedopt_eval_accuracy", FL_METRIC_GAUGE, NULL, "Last central evaluation's accuracy.", 0},
    };
    if (!out)
        return FL_EINVAL;
    fl_metrics_t *m;
    int rc = fl_metrics_create(&m);
    if (rc)
        return rc;
    for (size_t i = 0; i < sizeof fam / sizeof fam[0] && rc == 0; i++) {
        const double *b = fam[i].hist == 1 ? round_b : fam[i].hist == 2 ? step_b : NULL;
        size_t nb = fam[i].hist == 1 ? sizeof round_b / sizeof round_b[0]
                    : fam[i].hist == 2 ? sizeof step_b / sizeof step_b[0] : 0;
        rc = fl_metrics_define(m, fam[i].name, fam[i].type, fam[i].help, fam[i].label, b, nb);
    }
    /* Every series that a dashboard expects exists from the start at 0. */
    for (size_t i = 0; i < sizeof phases / sizeof phases[0] && rc == 0; i++)
        rc = fl_metrics_set(m, "fedopt_phase", phases[i], 0);
    static const char *const zero[] = {"fedopt_clients_selected_total", "fedopt_clients_reported_total",
                                       "fedopt_clients_dropped_total", "fedopt_received_bytes_total",
                                       "fedopt_sent_bytes_total"};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0] && rc == 0; i++)
        rc = fl_metrics_add(m, zero[i], NULL, 0);
    if (rc == 0)
        rc = fl_metrics_add(m, "fedopt_rounds_total", "closed", 0);
    if (rc == 0)
        rc = fl_metrics_add(m, "fedopt_rounds_total", "abandoned", 0);
    if (rc) {
        fl_metrics_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void fl_srvmetrics_tick(fl_metrics_t *m, const char *phase, int64_t round, size_t connected)
{
    if (!m)
        return;
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        fl_metrics_set(m, "fedopt_phase", phases[i], phase && strcmp(phase, phases[i]) == 0 ? 1 : 0);
    fl_metrics_set(m, "fedopt_round", NULL, (double)round);
    fl_metrics_set(m, "fedopt_clients_connected", NULL, (double)connected);
}

void fl_srvmetrics_run(fl_metrics_t *m, int64_t run_id)
{
    if (m)
        fl_metrics_set(m, "fedopt_run", NULL, (double)run_id);
}

void fl_srvmetrics_round_started(fl_metrics_t *m, int64_t round, int64_t selected)
{
    if (!m)
        return;
    fl_metrics_set(m, "fedopt_round", NULL, (double)round);
    fl_metrics_set(m, "fedopt_round_clients_selected", NULL, (double)selected);
}

void fl_srvmetrics_round_committed(fl_metrics_t *m, const fl_store_round_t *row, const fl_store_update_t *ups,
                                   size_t nups)
{
    if (!m || !row)
        return;
    double secs = row->finished_at - row->started_at;
    if (isfinite(secs) && secs >= 0)
        fl_metrics_observe(m, "fedopt_round_duration_seconds", NULL, secs);
    fl_metrics_add(m, "fedopt_rounds_total", row->status ? row->status : "unknown", 1);
    fl_metrics_add(m, "fedopt_clients_selected_total", NULL, (double)row->clients_selected);
    fl_metrics_add(m, "fedopt_clients_reported_total", NULL, (double)row->clients_reported);
    fl_metrics_add(m, "fedopt_clients_dropped_total", NULL, (double)row->clients_dropped);
    if (row->bytes_in > 0)
        fl_metrics_add(m, "fedopt_received_bytes_total", NULL, (double)row->bytes_in);
    if (row->bytes_out > 0)
        fl_metrics_add(m, "fedopt_sent_bytes_total", NULL, (double)row->bytes_out);
    if (isfinite(row->train_loss))
        fl_metrics_set(m, "fedopt_train_loss", NULL, row->train_loss);
    if (isfinite(row->eval_loss))
        fl_metrics_set(m, "fedopt_eval_loss", NULL, row->eval_loss);
    if (isfinite(row->eval_accuracy))
        fl_metrics_set(m, "fedopt_eval_accuracy", NULL, row->eval_accuracy);
    for (size_t i = 0; ups && i < nups; i++) {
        const char *st = ups[i].status ? ups[i].status : "unknown";
        fl_metrics_add(m, "fedopt_updates_total", st, 1);
        if (strcmp(st, "accepted") != 0)
            fl_metrics_add(m, "fedopt_updates_refused_total", ups[i].reason ? ups[i].reason : "unknown", 1);
    }
}

void fl_srvmetrics_rejected(fl_metrics_t *m, const char *reason)
{
    if (m)
        fl_metrics_add(m, "fedopt_connections_rejected_total", reason ? reason : "unknown", 1);
}

void fl_srvmetrics_tls_failure(fl_metrics_t *m, int reason)
{
    if (m)
        fl_metrics_add(m, "fedopt_tls_handshake_failures_total", fl_errname(reason), 1);
}

void fl_srvmetrics_seconds(fl_metrics_t *m, const char *step, double seconds)
{
    if (!m || !step || !(seconds >= 0))
        return;
    char name[64];
    snprintf(name, sizeof name, "fedopt_%s_seconds", step);
    fl_metrics_observe(m, name, NULL, seconds);
}
