/* Tests server/round with fake clients: selection (uniform, without
 * replacement, reproducible, order-independent), FedAvg lr = 1 giving the
 * exact weighted mean of client models, over-selection, deadline with
 * dropped and silent clients, abandoned rounds, and every refusal reason
 * landing in the update records (and from there in the store). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "server/serveropt.h"
#include "server/round.h"
#include "server/store.h"

static const char *names20[20] = {"c00", "c01", "c02", "c03", "c04", "c05", "c06", "c07", "c08", "c09",
                                  "c10", "c11", "c12", "c13", "c14", "c15", "c16", "c17", "c18", "c19"};

static int setup(void **state)
{
    fl_log_set_level(FL_LOG_ERROR);
    fl_log_set_sink(fopen("/dev/null", "w")); /* the expected refusals log errors */
    return 0;
}

static void test_select(void **state)
{
    size_t a[5], b[5];
    assert_int_equal(fl_round_select(7, 1, 3, names20, 20, 5, a), 0);
    assert_int_equal(fl_round_select(7, 1, 3, names20, 20, 5, b), 0);
    assert_memory_equal(a, b, sizeof a);
    /* Without replacement. */
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            assert_true(a[i] != a[j]);
    /* The same names in another order give the same clients. */
    const char *rev[20];
    for (int i = 0; i < 20; i++)
        rev[i] = names20[19 - i];
    assert_int_equal(fl_round_select(7, 1, 3, rev, 20, 5, b), 0);
    for (int i = 0; i < 5; i++)
        assert_string_equal(rev[b[i]], names20[a[i]]);
    /* Another round draws another set. */
    assert_int_equal(fl_round_select(7, 1, 4, names20, 20, 5, b), 0);
    assert_true(memcmp(a, b, sizeof a) != 0);
    /* Uniform: over 20,000 rounds each client is picked 5/20 of the time;
     * the count's standard deviation is sqrt(20000 * .25 * .75) = 61, so
     * 5 sigma is 306. Every round is also checked for repeats. */
    unsigned hits[20] = {0};
    for (int64_t round = 1; round <= 20000; round++) {
        assert_int_equal(fl_round_select(99, 2, round, names20, 20, 5, a), 0);
        unsigned seen = 0;
        for (int i = 0; i < 5; i++) {
            assert_true(a[i] < 20);
            assert_false(seen & (1u << a[i]));
            seen |= 1u << a[i];
            hits[a[i]]++;
        }
    }
    for (int i = 0; i < 20; i++)
        assert_true(hits[i] > 5000 - 306 && hits[i] < 5000 + 306);
    assert_int_equal(fl_round_select(1, 1, 1, names20, 3, 4, a), FL_EINVAL);
}

#define P 33

static fl_round_t *mk_round(uint32_t k, uint32_t min_reports, double over, fl_serveropt_t **opt)
{
    fl_serveropt_config_t oc;
    fl_serveropt_config_defaults(&oc, FL_SERVEROPT_FEDAVG);
    assert_int_equal(fl_serveropt_create(&oc, P, opt), 0);
    fl_round_config_t rc = {.run_id = 1, .seed = 5, .clients_per_round = k, .min_reports = min_reports,
                            .over_selection = over, .deadline_s = 10, .numel = P};
    fl_round_t *r;
    assert_int_equal(fl_round_create(&rc, &r), 0);
    return r;
}

/* A fake client: trains "deterministically" to the model x_i[j] = i + j/4 (exact in float32). */
static void client_model(int i, float *xi)
{
    for (int j = 0; j < P; j++)
        xi[j] = (float)i + (float)j * 0.25f;
}

static int deliver(fl_round_t *r, fl_serveropt_t *opt, const char *name, int64_t round, const float *x, int i,
                   double w, double now)
{
    float xi[P], d[P];
    client_model(i, xi);
    for (int j = 0; j < P; j++)
        d[j] = xi[j] - x[j];
    fl_refuse_t why = fl_round_check(r, name, round, P, w);
    if (why != FL_REFUSE_NONE) {
        assert_int_equal(fl_round_refuse(r, name, why, 100, now), 0);
        return (int)why;
    }
    assert_int_equal(fl_round_add_start(r, name), 0);
    double norm;
    int rc = fl_round_add_work(opt, d, P, w, &norm);
    assert_int_equal(fl_round_add_end(r, name, rc, w, 0.5 * i, norm, 4 * P, now), 0);
    return rc;
}

static int index_of(const char *name)
{
    return atoi(name + 1);
}

static void test_fedavg_exact_mean(void **state)
{
    fl_serveropt_t *opt;
    fl_round_t *r = mk_round(4, 2, 1.0, &opt);
    float x[P];
    for (int j = 0; j < P; j++)
        x[j] = 1.0f - (float)j;
    assert_int_equal(fl_round_begin(r, 1, names20, 10, opt, 100.0, 100.0), 0);
    assert_int_equal(fl_round_selected_count(r), 4);
    double ws[4] = {1, 2, 4, 1}, wsum = 8;
    float want[P] = {0};
    for (size_t s = 0; s < 4; s++) {
        const char *nm = fl_round_selected_name(r, s);
        assert_false(fl_round_is_complete(r));
        assert_int_equal(deliver(r, opt, nm, 1, x, index_of(nm), ws[s], 101.0 + (double)s), 0);
        float xi[P];
        client_model(index_of(nm), xi);
        for (int j = 0; j < P; j++)
            want[j] += (float)(ws[s] / wsum) * xi[j];
    }
    assert_true(fl_round_is_complete(r));
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int closed;
    assert_int_equal(fl_round_close(r, 105.0, 105.0, &row, &ups, &nups, &closed), 0);
    assert_true(closed);
    assert_string_equal(row.status, "closed");
    assert_int_equal(row.clients_selected, 4);
    assert_int_equal(row.clients_reported, 4);
    assert_int_equal(row.clients_dropped, 0);
    assert_true(row.examples == 8);
    assert_int_equal(nups, 4);
    for (size_t i = 0; i < nups; i++) {
        assert_string_equal(ups[i].status, "accepted");
        assert_null(ups[i].reason);
    }
    fl_serveropt_round_t res;
    uint8_t *ck = NULL;
    size_t ck_len = 0;
    assert_int_equal(fl_round_finish_work(opt, x, P, &res, &ck, &ck_len), 0);
    assert_int_equal(res.accepted, 4);
    /* The state for the checkpoint is the optimizer's after this round. */
    uint8_t *again = NULL;
    size_t again_len = 0;
    assert_int_equal(fl_round_state_save(opt, &again, &again_len), 0);
    assert_true(ck && ck_len == again_len && memcmp(ck, again, ck_len) == 0);
    free(ck);
    free(again);
    /* FedAvg with lr = 1: the new model is the weighted mean of the client
     * models (all values here are exact in float32: weights are powers of two
     * over 8 and the models are quarter-integers). */
    for (int j = 0; j < P; j++)
        assert_true(x[j] == want[j]);
    fl_round_free(r);
    fl_serveropt_free(opt);
}

/* The round's train_accuracy is the example-weighted mean over accepted
 * updates that reported one; a duplicate cannot overwrite a value, values
 * outside [0, 1] are unknown, and a client without one is left out. */
static void test_train_accuracy(void **state)
{
    fl_serveropt_t *opt;
    fl_round_t *r = mk_round(4, 1, 1.0, &opt);
    float x[P] = {0};
    assert_int_equal(fl_round_begin(r, 1, names20, 10, opt, 100.0, 100.0), 0);
    const char *nm[4];
    for (size_t s = 0; s < 4; s++)
        nm[s] = fl_round_selected_name(r, s);
    fl_round_note_accuracy(r, nm[0], 1, 0.5);
    fl_round_note_accuracy(r, nm[1], 1, 0.75);
    fl_round_note_accuracy(r, nm[2], 1, 1.5); /* impossible: unknown */
    fl_round_note_accuracy(r, nm[3], 2, 0.9); /* another round: ignored */
    fl_round_note_accuracy(r, "nobody", 1, 0.9);
    assert_int_equal(deliver(r, opt, nm[0], 1, x, index_of(nm[0]), 1, 101), 0);
    fl_round_note_accuracy(r, nm[0], 1, 0.0); /* after its update: ignored */
    assert_int_equal(deliver(r, opt, nm[1], 1, x, index_of(nm[1]), 3, 102), 0);
    assert_int_equal(deliver(r, opt, nm[2], 1, x, index_of(nm[2]), 4, 103), 0);
    assert_int_equal(deliver(r, opt, nm[3], 1, x, index_of(nm[3]), 8, 104), 0);
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int closed;
    assert_int_equal(fl_round_close(r, 105.0, 105.0, &row, &ups, &nups, &closed), 0);
    /* (1 * 0.5 + 3 * 0.75) / (1 + 3) */
    assert_true(fabs(row.train_accuracy - 0.6875) < 1e-15);
    for (size_t i = 0; i < nups; i++) {
        if (strcmp(ups[i].client, nm[0]) == 0)
            assert_true(ups[i].train_accuracy == 0.5);
        else if (strcmp(ups[i].client, nm[1]) == 0)
            assert_true(ups[i].train_accuracy == 0.75);
        else
            assert_true(isnan(ups[i].train_accuracy));
    }
    uint8_t *ck = NULL;
    size_t ck_len = 0;
    assert_int_equal(fl_round_finish_work(opt, x, P, NULL, &ck, &ck_len), 0);
    free(ck);
    /* A round nobody reported an accuracy for has none. */
    assert_int_equal(fl_round_begin(r, 2, names20, 10, opt, 200.0, 200.0), 0);
    const char *a = fl_round_selected_name(r, 0);
    assert_int_equal(deliver(r, opt, a, 2, x, index_of(a), 1, 201), 0);
    assert_int_equal(fl_round_close(r, 205.0, 205.0, &row, &ups, &nups, &closed), 0);
    assert_true(isnan(row.train_accuracy));
    fl_round_free(r);
    fl_serveropt_free(opt);
}

static const fl_store_update_t *find_up(const fl_store_update_t *ups, size_t n, const char *client,
                                        const char *status)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ups[i].client, client) == 0 && strcmp(ups[i].status, status) == 0)
            return &ups[i];
    return NULL;
}

static void test_refusals_and_deadline(void **state)
{
    fl_serveropt_t *opt;
    fl_round_t *r = mk_round(5, 2, 1.0, &opt);
    float x[P] = {0};
    /* An update between rounds is refused and kept for the next round's log. */
    assert_int_equal(fl_round_check(r, "early", 1, P, 1), FL_REFUSE_CLOSED);
    assert_int_equal(fl_round_refuse(r, "early", FL_REFUSE_CLOSED, 10, 0), 0);
    assert_int_equal(fl_round_begin(r, 7, names20, 20, opt, 0.0, 0.0), 0);
    assert_int_equal(fl_round_begin(r, 8, names20, 20, opt, 0.0, 0.0), FL_ESTATE);
    const char *sel[5];
    for (int i = 0; i < 5; i++)
        sel[i] = fl_round_selected_name(r, (size_t)i);
    const char *outsider = NULL;
    for (int i = 0; i < 20 && !outsider; i++)
        if (!fl_round_is_selected(r, names20[i]))
            outsider = names20[i];
    assert_non_null(outsider);

    /* sel[0]: good. Then a second one from it: duplicate. */
    assert_int_equal(deliver(r, opt, sel[0], 7, x, 1, 10, 1), 0);
    assert_int_equal(deliver(r, opt, sel[0], 7, x, 1, 10, 1), FL_REFUSE_DUPLICATE);
    /* sel[1]: stale round id (it is refused but may still deliver the right one). */
    assert_int_equal(deliver(r, opt, sel[1], 6, x, 2, 10, 2), FL_REFUSE_STALE);
    /* An outsider. */
    assert_int_equal(deliver(r, opt, outsider, 7, x, 3, 10, 2), FL_REFUSE_NOT_SELECTED);
    /* sel[1] now a wrong shape, announced in its header. */
    assert_int_equal(fl_round_check(r, sel[1], 7, P + 1, 10), FL_REFUSE_SHAPE);
    assert_int_equal(fl_round_refuse(r, sel[1], FL_REFUSE_SHAPE, 4 * (P + 1), 3), 0);
    /* sel[2]: NaN in the delta, found by the aggregation. */
    assert_int_equal(fl_round_check(r, sel[2], 7, P, 10), FL_REFUSE_NONE);
    assert_int_equal(fl_round_add_start(r, sel[2]), 0);
    assert_int_equal(fl_round_in_flight(r), 1);
    float bad[P] = {0};
    bad[5] = NAN;
    double norm;
    int rc = fl_round_add_work(opt, bad, P, 10, &norm);
    assert_int_equal(rc, FL_ENONFINITE);
    /* Closing while an add is in flight is refused. */
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int closed;
    assert_int_equal(fl_round_close(r, 4, 4, &row, &ups, &nups, &closed), FL_ESTATE);
    assert_int_equal(fl_round_add_end(r, sel[2], rc, 10, 1.0, norm, 4 * P, 4), 0);
    /* sel[3]: bad weight; sel[4]: disconnects. */
    assert_int_equal(fl_round_check(r, sel[3], 7, P, 0), FL_REFUSE_WEIGHT);
    assert_int_equal(fl_round_drop(r, sel[4], "disconnected", 5), 0);
    assert_int_equal(fl_round_drop(r, outsider, "disconnected", 5), FL_ENOTFOUND);
    /* sel[3] stays silent: the round is not complete until the deadline. */
    assert_false(fl_round_is_complete(r));
    assert_false(fl_round_deadline_passed(r, 9.9));
    assert_true(fl_round_deadline_passed(r, 10.0));
    assert_int_equal(fl_round_close(r, 10.0, 10.0, &row, &ups, &nups, &closed), 0);
    /* Only one accepted, min_reports 2: abandoned. */
    assert_false(closed);
    assert_string_equal(row.status, "abandoned");
    assert_int_equal(row.round, 7);
    assert_int_equal(row.clients_selected, 5);
    assert_int_equal(row.clients_reported, 1);
    assert_int_equal(row.clients_dropped, 2); /* sel[4] disconnected, sel[3] deadline */
    const fl_store_update_t *u;
    assert_non_null(u = find_up(ups, nups, sel[0], "accepted"));
    assert_true(u->num_examples == 10);
    assert_non_null(u = find_up(ups, nups, sel[0], "refused"));
    assert_string_equal(u->reason, "duplicate");
    assert_non_null(u = find_up(ups, nups, sel[1], "refused"));
    /* sel[1]'s own slot has the wrong shape; the stale one is an extra record. */
    int stale = 0, shape = 0;
    for (size_t i = 0; i < nups; i++)
        if (strcmp(ups[i].client, sel[1]) == 0) {
            stale += strcmp(ups[i].reason, "stale round") == 0;
            shape += strcmp(ups[i].reason, "wrong shape") == 0;
        }
    assert_int_equal(stale, 1);
    assert_int_equal(shape, 1);
    assert_non_null(u = find_up(ups, nups, sel[2], "refused"));
    assert_string_equal(u->reason, "non-finite delta");
    assert_non_null(u = find_up(ups, nups, sel[3], "dropped"));
    assert_string_equal(u->reason, "deadline");
    assert_non_null(u = find_up(ups, nups, sel[4], "dropped"));
    assert_string_equal(u->reason, "disconnected");
    assert_non_null(u = find_up(ups, nups, outsider, "refused"));
    assert_string_equal(u->reason, "not selected");
    assert_non_null(u = find_up(ups, nups, "early", "refused"));
    assert_string_equal(u->reason, "no round open");
    /* 5 slots + duplicate + stale + not-selected + no-round-open. */
    assert_int_equal(nups, 9);

    /* The records go into the store as they are. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/fedopt-round-%d.db", (int)getpid());
    fl_store_t *st;
    assert_int_equal(fl_store_open(path, 0, &st), 0);
    fl_store_run_info_t info = {"test", "fedavg", 5, "{}"};
    int64_t run;
    uint8_t *sb;
    size_t sl;
    assert_int_equal(fl_serveropt_state_save(opt, &sb, &sl), 0);
    assert_int_equal(fl_store_run_create(st, &info, x, P, sb, sl, &run), 0);
    row.run_id = run;
    assert_int_equal(fl_store_commit_round(st, &row, ups, nups, NULL, 0, NULL, 0, 0), 0);
    int64_t cnt;
    assert_int_equal(fl_store_count_updates(st, run, 7, "refused", &cnt), 0);
    assert_int_equal(cnt, 6);
    assert_int_equal(fl_store_count_updates(st, run, 7, "dropped", &cnt), 0);
    assert_int_equal(cnt, 2);
    free(sb);
    fl_store_close(st);
    char p2[80];
    unlink(path);
    snprintf(p2, sizeof p2, "%s-wal", path);
    unlink(p2);
    snprintf(p2, sizeof p2, "%s-shm", path);
    unlink(p2);
    fl_round_free(r);
    fl_serveropt_free(opt);
}

static void test_over_selection(void **state)
{
    fl_serveropt_t *opt;
    fl_round_t *r = mk_round(3, 1, 2.0, &opt);
    float x[P] = {0};
    assert_int_equal(fl_round_begin(r, 1, names20, 20, opt, 0.0, 0.0), 0);
    assert_int_equal(fl_round_selected_count(r), 6);
    for (size_t s = 0; s < 3; s++) {
        const char *nm = fl_round_selected_name(r, s);
        assert_int_equal(deliver(r, opt, nm, 1, x, index_of(nm), 1, 1), 0);
    }
    /* K reports: complete, and a fourth selected client is told so. */
    assert_true(fl_round_is_complete(r));
    const char *late = fl_round_selected_name(r, 3);
    assert_int_equal(fl_round_check(r, late, 1, P, 1), FL_REFUSE_COMPLETE);
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int closed;
    assert_int_equal(fl_round_close(r, 2, 2, &row, &ups, &nups, &closed), 0);
    assert_true(closed);
    assert_int_equal(row.clients_selected, 6);
    assert_int_equal(row.clients_reported, 3);
    assert_int_equal(row.clients_dropped, 0); /* the 3 surplus clients did nothing wrong */
    int surplus = 0;
    for (size_t i = 0; i < nups; i++)
        surplus += ups[i].reason && strcmp(ups[i].reason, "surplus") == 0;
    assert_int_equal(surplus, 3);
    /* Fewer connected clients than S: all of them are selected. */
    assert_int_equal(fl_round_begin(r, 2, names20, 4, opt, 3.0, 3.0), 0);
    assert_int_equal(fl_round_selected_count(r), 4);
    /* A round with no connected client cannot start. */
    assert_int_equal(fl_round_close(r, 4, 4, &row, &ups, &nups, &closed), 0);
    assert_false(closed);
    assert_int_equal(row.clients_dropped, 4);
    assert_int_equal(fl_round_begin(r, 3, names20, 0, opt, 5.0, 5.0), FL_EEMPTY);
    /* Two connections with the same name are refused. */
    const char *dup[2] = {"same", "same"};
    assert_int_equal(fl_round_begin(r, 3, dup, 2, opt, 5.0, 5.0), FL_EINVAL);
    fl_round_free(r);
    fl_serveropt_free(opt);
}

static void test_refusal_cap(void **state)
{
    fl_serveropt_t *opt;
    fl_round_t *r = mk_round(1, 1, 1.0, &opt);
    assert_int_equal(fl_round_begin(r, 1, names20, 20, opt, 0.0, 0.0), 0);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(fl_round_refuse(r, "spammer", FL_REFUSE_NOT_SELECTED, 1, 1), 0);
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int closed;
    assert_int_equal(fl_round_close(r, 2, 2, &row, &ups, &nups, &closed), 0);
    assert_int_equal(nups, 1 + 1024 + 4);
    assert_int_equal(row.bytes_in, 5000);
    fl_round_free(r);
    fl_serveropt_free(opt);
}

/* Deadlines and durations follow the monotonic `now`; the stored
 * started_at/finished_at follow `wall`. The wall clock here jumps an hour
 * forward during one round and a day back before the next: neither moves a
 * deadline, and every duration is the monotonic one. */
/* One rule for what a client may claim (an update's weight, an evaluation
 * answer's examples): its Hello, lowered to the operator's limit; a Hello of
 * 0 declares nothing, so only the limit caps it, and without one nothing. */
static void test_example_cap(void **state)
{
    (void)state;
    assert_true(fl_round_example_cap(600, 0) == 600);   /* Hello only */
    assert_true(fl_round_example_cap(600, 100) == 100); /* the operator's limit is lower */
    assert_true(fl_round_example_cap(600, 1000) == 600);
    assert_true(fl_round_example_cap(0, 250) == 250);   /* declared nothing: the limit */
    assert_true(fl_round_example_cap(0, 0) == 0);       /* declared nothing, no limit: no claim */
    assert_true(fl_round_example_cap(0, -1) == 0);
    assert_true(fl_round_example_cap(UINT64_MAX, 7) == 7);
}

static void test_wall_clock_jump(void **state)
{
    fl_serveropt_t *opt;
    fl_round_t *r = mk_round(2, 1, 1.0, &opt); /* deadline_s = 10 */
    float x[P] = {0};
    const double wall0 = 1.7e9;
    assert_int_equal(fl_round_begin(r, 1, names20, 2, opt, 500.0, wall0), 0);
    /* The wall clock steps +1 h right after the round opened; the monotonic
     * one has advanced 3 s when the first client delivers. */
    const char *a = fl_round_selected_name(r, 0), *b = fl_round_selected_name(r, 1);
    assert_int_equal(deliver(r, opt, a, 1, x, index_of(a), 1, 503.0), 0);
    assert_false(fl_round_deadline_passed(r, 503.0));
    assert_false(fl_round_deadline_passed(r, 509.99));
    assert_true(fabs(fl_round_time_left(r, 505.0) - 5.0) < 1e-9);
    assert_true(fl_round_deadline_passed(r, 510.0));
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int closed;
    assert_int_equal(fl_round_close(r, 510.0, wall0 + 3600 + 10, &row, &ups, &nups, &closed), 0);
    assert_true(closed);
    assert_true(row.started_at == wall0);
    assert_true(row.finished_at == wall0 + 3610);
    assert_true(fl_round_last_seconds(r) == 10.0);
    const fl_store_update_t *ua = find_up(ups, nups, a, "accepted"), *ub = find_up(ups, nups, b, "dropped");
    assert_non_null(ua);
    assert_non_null(ub);
    assert_true(ua->seconds == 3.0);
    assert_true(ub->seconds == 10.0);
    assert_string_equal(ub->reason, "deadline");
    fl_serveropt_round_t res;
    uint8_t *st = NULL;
    size_t sl = 0;
    assert_int_equal(fl_round_finish_work(opt, x, P, &res, &st, &sl), 0);
    free(st);
    /* The wall clock steps a day back before round 2: its deadline is still
     * 10 monotonic seconds away, not a day and 10 s. */
    assert_int_equal(fl_round_begin(r, 2, names20, 2, opt, 600.0, wall0 - 86400), 0);
    assert_false(fl_round_deadline_passed(r, 609.0));
    assert_true(fl_round_deadline_passed(r, 610.0));
    assert_int_equal(fl_round_close(r, 610.0, wall0 - 86400 + 10, &row, &ups, &nups, &closed), 0);
    assert_false(closed);
    assert_true(row.started_at == wall0 - 86400 && row.finished_at == wall0 - 86390);
    fl_round_free(r);
    fl_serveropt_free(opt);
}

/* A checkpoint restores bit for bit and is proved by its checksum; a
 * checkpoint of another size or with a checksum that does not match is
 * refused. */
static void test_restore(void **state)
{
    fl_serveropt_config_t oc;
    fl_serveropt_config_defaults(&oc, FL_SERVEROPT_FEDADAM);
    fl_serveropt_t *a, *b;
    assert_int_equal(fl_serveropt_create(&oc, P, &a), 0);
    assert_int_equal(fl_serveropt_create(&oc, P, &b), 0);
    float x[P], d[P], y[P];
    for (int j = 0; j < P; j++) {
        x[j] = 0.5f * (float)j;
        d[j] = 0.25f - 0.125f * (float)j;
    }
    fl_serveropt_begin(a);
    double norm;
    assert_int_equal(fl_round_add_work(a, d, P, 3, &norm), 0);
    uint8_t *st = NULL;
    size_t sl = 0;
    assert_int_equal(fl_round_finish_work(a, x, P, NULL, &st, &sl), 0);
    fl_store_checkpoint_t cp = {.run_id = 1, .round = 1, .model = x, .numel = P, .state = st, .state_len = sl,
                                .checksum = fl_store_checksum(x, P, st, sl)};
    uint32_t sum = 0;
    assert_int_equal(fl_round_restore(b, y, P, &cp, &sum), 0);
    assert_true(sum == cp.checksum);
    assert_memory_equal(x, y, sizeof x);
    assert_int_equal(fl_serveropt_step(b), 1);
    cp.checksum ^= 1;
    assert_int_equal(fl_round_restore(b, y, P, &cp, &sum), FL_ECHECKSUM);
    cp.checksum ^= 1;
    cp.numel = P - 1;
    assert_int_equal(fl_round_restore(b, y, P, &cp, &sum), FL_ESHAPE);
    free(st);
    fl_serveropt_free(a);
    fl_serveropt_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select),         cmocka_unit_test(test_fedavg_exact_mean),
        cmocka_unit_test(test_refusals_and_deadline), cmocka_unit_test(test_over_selection),
        cmocka_unit_test(test_refusal_cap),    cmocka_unit_test(test_wall_clock_jump),
        cmocka_unit_test(test_restore),        cmocka_unit_test(test_train_accuracy),
        cmocka_unit_test(test_example_cap),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
