/* Tests server/fedeval with fake clients: the sample (reproducible,
 * order-independent, capped by the connected count, another stream than the
 * training selection), every refusal reason, the example-weighted means, the
 * cap on records from outside the sample, the deadline, and the store's
 * fed_evals/fed_eval_results round trip, including a database created before
 * those tables existed. */
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
#include <sqlite3.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "server/fedeval.h"
#include "server/round.h"
#include "server/store.h"

static const char *names[8] = {"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"};

static fl_fedeval_t *make(uint32_t clients)
{
    fl_fedeval_config_t cfg = {.run_id = 1, .seed = 5, .clients = clients, .deadline_s = 10};
    fl_fedeval_t *e = NULL;
    assert_int_equal(fl_fedeval_create(&cfg, &e), 0);
    return e;
}

static void test_sample(void **state)
{
    (void)state;
    fl_fedeval_t *e = make(3), *f = make(3);
    assert_int_equal(fl_fedeval_begin(e, 4, names, NULL, 8, 0, 0), 0);
    const char *rev[8];
    for (int i = 0; i < 8; i++)
        rev[i] = names[7 - i];
    assert_int_equal(fl_fedeval_begin(f, 4, rev, NULL, 8, 0, 0), 0);
    assert_int_equal(fl_fedeval_selected_count(e), 3);
    /* The same clients whatever their order (the names are kept sorted). */
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(fl_fedeval_selected_name(e, i), fl_fedeval_selected_name(f, i));
    /* The sample is the FL_RNG_FEDEVAL stream's, not the training selection's. */
    size_t pick[3];
    assert_int_equal(fl_round_select_for(5, 1, 4, FL_RNG_FEDEVAL, names, 8, 3, pick), 0);
    int same_as_train = 1;
    size_t tpick[3];
    assert_int_equal(fl_round_select(5, 1, 4, names, 8, 3, tpick), 0);
    for (size_t i = 0; i < 3; i++) {
        int found = 0;
        for (size_t k = 0; k < 3; k++)
            found |= strcmp(fl_fedeval_selected_name(e, k), names[pick[i]]) == 0;
        assert_true(found);
        same_as_train &= pick[i] == tpick[i];
    }
    assert_false(same_as_train);
    /* A second begin while open is refused; fewer connected than asked: all. */
    assert_int_equal(fl_fedeval_begin(e, 5, names, NULL, 8, 0, 0), FL_ESTATE);
    fl_fedeval_abort(e);
    assert_int_equal(fl_fedeval_round(e), 0);
    assert_int_equal(fl_fedeval_begin(e, 5, names, NULL, 2, 0, 0), 0);
    assert_int_equal(fl_fedeval_selected_count(e), 2);
    fl_fedeval_abort(e);
    assert_int_equal(fl_fedeval_begin(e, 6, names, NULL, 0, 0, 0), FL_EEMPTY);
    fl_fedeval_free(e);
    fl_fedeval_free(f);
}

static void test_answers(void **state)
{
    (void)state;
    fl_fedeval_t *e = make(8);
    uint64_t holds[8] = {100, 100, 100, 100, 100, 100, 100, 0};
    assert_int_equal(fl_fedeval_answer(e, "c0", 3, 10, 1, 0.5, 0), FL_FEDEVAL_CLOSED);
    assert_int_equal(fl_fedeval_begin(e, 3, names, holds, 8, 100.0, 100.0), 0);
    assert_int_equal(fl_fedeval_round(e), 3);
    assert_int_equal(fl_fedeval_answer(e, "c0", 3, 10, 2.0, 0.5, 101), FL_FEDEVAL_OK);
    assert_int_equal(fl_fedeval_answer(e, "c0", 3, 10, 2.0, 0.5, 101), FL_FEDEVAL_DUPLICATE);
    assert_int_equal(fl_fedeval_answer(e, "c1", 3, 30, 1.0, 0.9, 102), FL_FEDEVAL_OK);
    assert_int_equal(fl_fedeval_answer(e, "c2", 2, 30, 1.0, 0.9, 102), FL_FEDEVAL_STALE);
    assert_int_equal(fl_fedeval_answer(e, "c3", 3, 30, NAN, 0.9, 102), FL_FEDEVAL_BAD_LOSS);
    assert_int_equal(fl_fedeval_answer(e, "c4", 3, 30, 1.0, 1.5, 102), FL_FEDEVAL_BAD_ACCURACY);
    assert_int_equal(fl_fedeval_answer(e, "c5", 3, (uint64_t)-5, 1.0, 0.5, 102), FL_FEDEVAL_BAD_COUNT);
    assert_int_equal(fl_fedeval_answer(e, "zz", 3, 10, 1.0, 0.5, 102), FL_FEDEVAL_NOT_SELECTED);
    assert_false(fl_fedeval_is_complete(e));
    /* More than its cap (c6 may count 100); c7's cap is 0 (a Hello of 0
     * without an operator limit: fl_round_example_cap): nothing counts. */
    assert_int_equal(fl_fedeval_answer(e, "c6", 3, 101, 1.0, 0.5, 103), FL_FEDEVAL_CLAIM);
    assert_int_equal(fl_fedeval_answer(e, "c7", 3, 1000, 0.25, 0.1, 103), FL_FEDEVAL_CLAIM);
    assert_true(fl_fedeval_is_complete(e));
    fl_store_fedeval_t row;
    const fl_store_fedeval_result_t *res;
    size_t nres;
    assert_int_equal(fl_fedeval_close(e, 104, 104, &row, &res, &nres), 0);
    assert_int_equal(row.clients_selected, 8);
    assert_int_equal(row.clients_reported, 2);
    assert_int_equal(row.clients_refused, 6);
    assert_int_equal(row.clients_dropped, 0);
    assert_true(row.examples == 40);
    assert_true(fabs(row.accuracy - (10 * 0.5 + 30 * 0.9) / 40) < 1e-15);
    assert_true(fabs(row.loss - (10 * 2.0 + 30 * 1.0) / 40) < 1e-15);
    assert_true(row.started_at == 100.0 && row.finished_at == 104.0);
    /* 8 sampled + the duplicate + the outsider. */
    assert_int_equal(nres, 10);
    const char *want[][3] = {{"c0", "accepted", NULL},       {"c1", "accepted", NULL},
                             {"c2", "refused", "stale round"}, {"c3", "refused", "bad loss"},
                             {"c4", "refused", "bad accuracy"}, {"c5", "refused", "bad example count"},
                             {"c6", "refused", "examples beyond the Hello declaration or the cap"},
                             {"c7", "refused", "examples beyond the Hello declaration or the cap"},
                             {"c0", "refused", "duplicate"},  {"zz", "refused", "not selected"}};
    for (size_t i = 0; i < nres; i++) {
        assert_string_equal(res[i].client, want[i][0]);
        assert_string_equal(res[i].status, want[i][1]);
        if (want[i][2])
            assert_string_equal(res[i].reason, want[i][2]);
        else
            assert_null(res[i].reason);
    }
    assert_true(res[1].seconds == 2.0 && res[1].num_examples == 30 && res[1].accuracy == 0.9);
    fl_fedeval_free(e);
}

static void test_deadline_and_cap(void **state)
{
    (void)state;
    fl_fedeval_t *e = make(3);
    /* The monotonic clock starts at 0, the wall clock at wall0 and steps a
     * day back during the evaluation: the deadline and the seconds follow
     * the monotonic clock, the stored times the wall clock. */
    const double wall0 = 1.7e9;
    assert_int_equal(fl_fedeval_begin(e, 1, names, NULL, 3, 0, wall0), 0);
    fl_fedeval_drop(e, "c1", "disconnected", 1);
    fl_fedeval_drop(e, "c1", "stalled", 2); /* the first reason stands */
    fl_fedeval_drop(e, "nobody", "stalled", 2);
    /* A spamming outsider: only FL_FEDEVAL_MAX_EXTRA records. */
    for (int i = 0; i < 1000; i++)
        assert_int_equal(fl_fedeval_answer(e, "spam", 1, 1, 1, 1, 3), FL_FEDEVAL_NOT_SELECTED);
    assert_false(fl_fedeval_deadline_passed(e, 9.99));
    assert_true(fl_fedeval_deadline_passed(e, 10));
    fl_store_fedeval_t row;
    const fl_store_fedeval_result_t *res;
    size_t nres;
    assert_int_equal(fl_fedeval_close(e, 10, wall0 - 86400, &row, &res, &nres), 0);
    assert_true(row.started_at == wall0 && row.finished_at == wall0 - 86400);
    assert_true(fl_fedeval_last_seconds(e) == 10);
    assert_int_equal(row.clients_reported, 0);
    assert_int_equal(row.clients_dropped, 3);
    assert_true(isnan(row.accuracy) && isnan(row.loss) && row.examples == 0);
    assert_int_equal(nres, 3 + FL_FEDEVAL_MAX_EXTRA);
    assert_string_equal(res[0].reason, "deadline");
    assert_string_equal(res[1].reason, "disconnected");
    assert_true(res[1].seconds == 1);
    assert_int_equal(fl_fedeval_close(e, 11, 11, &row, &res, &nres), FL_ESTATE);
    fl_fedeval_free(e);
}

static void test_store(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/fedopt-fedeval-%d.db", (int)getpid());
    unlink(path);
    /* A database from before federated evaluation: the old tables only. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE runs(id INTEGER PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT,"
                                  " status TEXT NOT NULL, model TEXT NOT NULL, server_opt TEXT NOT NULL,"
                                  " seed TEXT NOT NULL, config TEXT NOT NULL);"
                                  "CREATE TABLE rounds(run_id INTEGER NOT NULL, round INTEGER NOT NULL,"
                                  " started_at TEXT NOT NULL, finished_at TEXT NOT NULL, status TEXT NOT NULL,"
                                  " clients_selected INTEGER NOT NULL, clients_reported INTEGER NOT NULL,"
                                  " clients_dropped INTEGER NOT NULL, examples REAL NOT NULL, train_loss REAL,"
                                  " eval_loss REAL, eval_accuracy REAL, bytes_in INTEGER NOT NULL,"
                                  " bytes_out INTEGER NOT NULL, PRIMARY KEY(run_id, round));"
                                  "CREATE TABLE checkpoints(run_id INTEGER NOT NULL, round INTEGER NOT NULL,"
                                  " model BLOB NOT NULL, optimizer_state BLOB NOT NULL, checksum INTEGER NOT NULL,"
                                  " PRIMARY KEY(run_id, round));"
                                  "INSERT INTO runs VALUES(1, '2026-01-01', NULL, 'running', 'logreg', 'fedavg', '1', '{}');"
                                  "INSERT INTO rounds VALUES(1, 1, '2026-01-01', '2026-01-01', 'closed', 3, 3, 0, 30,"
                                  " 1.0, NULL, NULL, 0, 0);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    /* Read-only, the old database lists its rounds (no fed_acc). */
    fl_store_t *st = NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_int_equal(fl_store_open(path, 1, &st), 0);
    assert_int_equal(fl_store_print_rounds(st, 1, out), 0);
    fl_store_close(st);
    fclose(out);
    assert_non_null(strstr(buf, "fed_acc"));
    free(buf);
    /* Opened for writing, it gains the new tables and keeps its rows. */
    assert_int_equal(fl_store_open(path, 0, &st), 0);
    int exists = 1;
    assert_int_equal(fl_store_fedeval_exists(st, 1, 1, &exists), 0);
    assert_false(exists);
    fl_store_fedeval_t row = {.run_id = 1, .round = 1, .started_at = 1e9, .finished_at = 1e9 + 2,
                              .clients_selected = 2, .clients_reported = 1, .clients_dropped = 1,
                              .examples = 40, .loss = 0.75, .accuracy = 0.625};
    fl_store_fedeval_result_t res[2] = {
        {.client = "a", .status = "accepted", .num_examples = 40, .loss = 0.75, .accuracy = 0.625, .seconds = 1},
        {.client = "b", .status = "dropped", .reason = "deadline", .num_examples = NAN, .loss = NAN,
         .accuracy = NAN, .seconds = 2}};
    assert_int_equal(fl_store_commit_fedeval(st, &row, res, 2), 0);
    assert_int_equal(fl_store_fedeval_exists(st, 1, 1, &exists), 0);
    assert_true(exists);
    /* One evaluation per round: a second commit fails and leaves nothing half-written. */
    fl_log_set_level(FL_LOG_ERROR + 1);
    assert_int_equal(fl_store_commit_fedeval(st, &row, res, 2), FL_EDB);
    fl_log_set_level(FL_LOG_ERROR);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(fl_store_db(st),
                                        "SELECT (SELECT count(*) FROM fed_eval_results),"
                                        " (SELECT accuracy FROM fed_evals WHERE round = 1),"
                                        " (SELECT reason FROM fed_eval_results WHERE client = 'b'),"
                                        " (SELECT accuracy IS NULL FROM fed_eval_results WHERE client = 'b'),"
                                        " (SELECT count(*) FROM rounds)",
                                        -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 2);
    assert_true(sqlite3_column_double(s, 1) == 0.625);
    assert_string_equal((const char *)sqlite3_column_text(s, 2), "deadline");
    assert_int_equal(sqlite3_column_int(s, 3), 1);
    assert_int_equal(sqlite3_column_int(s, 4), 1);
    sqlite3_finalize(s);
    buf = NULL;
    out = open_memstream(&buf, &len);
    assert_int_equal(fl_store_print_rounds(st, 1, out), 0);
    fclose(out);
    assert_non_null(strstr(buf, " 0.6250 "));
    free(buf);
    fl_store_close(st);
    unlink(path);
    char wal[80];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
}

int main(void)
{
    fl_log_set_level(FL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_answers),
        cmocka_unit_test(test_deadline_and_cap),
        cmocka_unit_test(test_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
