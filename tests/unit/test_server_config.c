/* Tests server/config: defaults, INI file, flags over the file, errors,
 * --help, JSON, and the derived ServerOpt config and lr schedule. */
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
#include "server/config.h"

static char ini_path[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    snprintf(ini_path, sizeof ini_path, "/tmp/fedopt-cfg-%d.ini", (int)getpid());
    fl_log_set_level(FL_LOG_ERROR);
    /* Keep the expected error lines out of the test output. */
    fl_log_set_sink(fopen("/dev/null", "w"));
    return 0;
}

static int teardown(void **state)
{
    unlink(ini_path);
    return 0;
}

static void test_defaults(void **state)
{
    fl_server_config_t c;
    assert_int_equal(fl_server_config_defaults(&c), 0);
    assert_string_equal(c.listen, "0.0.0.0:7443");
    assert_int_equal(c.clients_per_round, 10);
    assert_int_equal(c.max_buffered_uploads, 4);
    assert_int_equal(c.require_client_cert, 1);
    assert_int_equal(c.resume, FL_RESUME_NO);
    assert_true(c.round_deadline == 600.0);
    assert_int_equal(fl_server_config_finish(&c), 0);
    /* fedavg with server_lr auto: lr 1, beta1 0.9 (the foundation's defaults). */
    assert_int_equal(c.opt.kind, FL_SERVEROPT_FEDAVG);
    assert_true(c.opt.server_lr == 1.0);
    assert_int_equal(c.lr_schedule.kind, FL_LR_CONSTANT);
    assert_true(c.lr_schedule.lr == 0.05);
    fl_server_config_free(&c);
}

static void test_ini_and_flags(void **state)
{
    write_file(ini_path, "; a comment\n"
                         "[rounds]\nclients_per_round = 50\nround_deadline = 30.5\nseed = 12345678901234567890\n"
                         "[server]\nserver_opt = fedadam\ntau = 0.01\nbias_correction = yes\n"
                         "[client]\nclient_lr = 0.1\nclient_lr_schedule = exp:0.5:10:stair\n"
                         "[storage]\ndb = /tmp/x.db\n");
    fl_server_config_t c;
    assert_int_equal(fl_server_config_defaults(&c), 0);
    char *argv[] = {"--clients-per-round", "7", "--config", ini_path, "--server_lr=0.03", "--resume",
                    "--beta1", "0.5"};
    int help = 0;
    assert_int_equal(fl_server_config_parse_args(&c, 8, argv, &help), 0);
    assert_int_equal(help, 0);
    /* The flag wins over the file although it came first on the command line. */
    assert_int_equal(c.clients_per_round, 7);
    assert_true(c.round_deadline == 30.5);
    assert_true(c.seed == 12345678901234567890ull);
    assert_string_equal(c.db, "/tmp/x.db");
    assert_int_equal(c.resume, FL_RESUME_YES);
    assert_int_equal(fl_server_config_finish(&c), 0);
    assert_int_equal(c.opt.kind, FL_SERVEROPT_FEDADAM);
    assert_true(c.opt.server_lr == 0.03);
    assert_true(c.opt.beta1 == 0.5);
    assert_true(c.opt.tau == 0.01);
    assert_int_equal(c.opt.bias_correction, 1);
    assert_int_equal(c.lr_schedule.kind, FL_LR_EXP);
    assert_int_equal(c.lr_schedule.staircase, 1);
    /* exp:0.5:10 stair: round 25 is two full periods in: 0.1 * 0.25. */
    assert_true(fabs(fl_lr_schedule_at(&c.lr_schedule, 25) - 0.025) < 1e-12);
    char buf[64];
    assert_int_equal(fl_server_config_get(&c, "round_deadline", buf, sizeof buf), 0);
    assert_string_equal(buf, "30.5");
    assert_int_equal(fl_server_config_get(&c, "nope", buf, sizeof buf), FL_ENOTFOUND);
    fl_server_config_free(&c);
}

static void test_auto_by_kind(void **state)
{
    fl_server_config_t c;
    assert_int_equal(fl_server_config_defaults(&c), 0);
    assert_int_equal(fl_server_config_set(&c, "server_opt", "fedadagrad"), 0);
    assert_int_equal(fl_server_config_finish(&c), 0);
    assert_true(c.opt.server_lr == 0.01);
    assert_true(c.opt.beta1 == 0.0);
    fl_server_config_free(&c);
}

static void test_errors(void **state)
{
    fl_server_config_t c;
    int help;
    assert_int_equal(fl_server_config_defaults(&c), 0);
    /* Out of range, not a number, unknown, missing value, stray argument. */
    assert_int_equal(fl_server_config_set(&c, "clients_per_round", "0"), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "round_deadline", "soon"), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "round_deadline", "nan"), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "seed", "-1"), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "bias_correction", "maybe"), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "no_such", "1"), FL_ENOTFOUND);
    char *a1[] = {"--no-such", "1"};
    assert_int_equal(fl_server_config_parse_args(&c, 2, a1, &help), FL_ECONFIG);
    char *a2[] = {"--rounds"};
    assert_int_equal(fl_server_config_parse_args(&c, 1, a2, &help), FL_ECONFIG);
    char *a3[] = {"stray"};
    assert_int_equal(fl_server_config_parse_args(&c, 1, a3, &help), FL_ECONFIG);
    /* The value is unchanged by the refused settings. */
    assert_int_equal(c.clients_per_round, 10);
    /* Cross-setting and derived checks happen in finish. */
    assert_int_equal(fl_server_config_set(&c, "server_opt", "sgd"), 0);
    assert_int_equal(fl_server_config_finish(&c), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "server_opt", "fedyogi"), 0);
    assert_int_equal(fl_server_config_set(&c, "client_lr_schedule", "exp:0:10"), 0);
    assert_int_equal(fl_server_config_finish(&c), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "client_lr_schedule", "invsqrt:1:10:warmup=3"), 0);
    assert_int_equal(fl_server_config_set(&c, "min_reports", "11"), 0);
    assert_int_equal(fl_server_config_finish(&c), FL_ECONFIG);
    assert_int_equal(fl_server_config_set(&c, "min_reports", "10"), 0);
    assert_int_equal(fl_server_config_finish(&c), 0);
    /* Bad INI: unknown key, key in the wrong section, missing file. */
    write_file(ini_path, "[rounds]\nbogus = 1\n");
    assert_int_equal(fl_server_config_load_ini(&c, ini_path), FL_ECONFIG);
    write_file(ini_path, "[server]\nrounds = 5\n");
    assert_int_equal(fl_server_config_load_ini(&c, ini_path), FL_ECONFIG);
    write_file(ini_path, "rounds = 5\n");
    assert_int_equal(fl_server_config_load_ini(&c, ini_path), 0);
    assert_int_equal(c.rounds, 5);
    assert_int_equal(fl_server_config_load_ini(&c, "/nonexistent/x.ini"), FL_EIO);
    char *a4[] = {"--rounds", "3", "--help"};
    assert_int_equal(fl_server_config_parse_args(&c, 3, a4, &help), 0);
    assert_int_equal(help, 1);
    /* "--resume yes" / "--resume no" take the word as the value; a flag
     * alone still switches on, and the next flag is not swallowed. */
    char *a5[] = {"--resume", "yes", "--rounds", "4"};
    assert_int_equal(fl_server_config_parse_args(&c, 4, a5, &help), 0);
    assert_int_equal(c.resume, FL_RESUME_YES);
    assert_int_equal(c.rounds, 4);
    char *a6[] = {"--resume", "no"};
    assert_int_equal(fl_server_config_parse_args(&c, 2, a6, &help), 0);
    assert_int_equal(c.resume, FL_RESUME_NO);
    char *a7[] = {"--resume", "auto", "--resume"};
    assert_int_equal(fl_server_config_parse_args(&c, 2, a7, &help), 0);
    assert_int_equal(c.resume, FL_RESUME_AUTO);
    assert_int_equal(fl_server_config_parse_args(&c, 1, a7 + 2, &help), 0);
    assert_int_equal(c.resume, FL_RESUME_YES);
    fl_server_config_free(&c);
}

static void test_json_and_help(void **state)
{
    fl_server_config_t c;
    assert_int_equal(fl_server_config_defaults(&c), 0);
    assert_int_equal(fl_server_config_set(&c, "eval_data", "weird \"quoted\"\\path\n"), 0);
    assert_int_equal(fl_server_config_set(&c, "seed", "18446744073709551615"), 0);
    char *json = NULL;
    assert_int_equal(fl_server_config_to_json(&c, &json), 0);
    /* SQLite's JSON1 must accept it and read the values back exactly. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT json_valid(?1), json_extract(?1, '$.eval_data'),"
                                        " json_extract(?1, '$.seed'), json_extract(?1, '$.clients_per_round'),"
                                        " json_extract(?1, '$.client_lr'), (SELECT count(*) FROM json_each(?1))",
                                        -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(s, 1, json, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(s, 0), 1);
    assert_string_equal((const char *)sqlite3_column_text(s, 1), "weird \"quoted\"\\path\n");
    assert_string_equal((const char *)sqlite3_column_text(s, 2), "18446744073709551615");
    assert_int_equal(sqlite3_column_int(s, 3), 10);
    assert_true(sqlite3_column_double(s, 4) == 0.05);
    int nsettings = sqlite3_column_int(s, 5);
    assert_true(nsettings >= 40);
    sqlite3_finalize(s);
    sqlite3_close(db);
    free(json);
    /* --help lists every setting with its default. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fl_server_config_print_help(f);
    fclose(f);
    int lines = 0;
    for (char *p = buf; (p = strstr(p, "\n  --")); p++)
        lines++;
    assert_int_equal(lines, nsettings);
    /* Flags in kebab-case (the INI key keeps its underscores). */
    assert_non_null(strstr(buf, "--round-deadline "));
    assert_null(strstr(buf, "--round_deadline"));
    assert_non_null(strstr(buf, "default: 600"));
    free(buf);
    fl_server_config_free(&c);
}

/* The example configuration that `make install` ships must load as it is. */
static void test_example_ini(void **state)
{
    fl_server_config_t c;
    assert_int_equal(fl_server_config_defaults(&c), 0);
    assert_int_equal(fl_server_config_load_ini(&c, "deploy/fedopt-server.ini"), 0);
    assert_int_equal(fl_server_config_finish(&c), 0);
    assert_int_equal(c.resume, FL_RESUME_AUTO);
    assert_int_equal(c.opt.kind, FL_SERVEROPT_FEDADAM);
    assert_true(c.over_selection == 1.3);
    assert_string_equal(c.db, "/var/lib/fedopt-server/fedopt.db");
    fl_server_config_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),     cmocka_unit_test(test_ini_and_flags),
        cmocka_unit_test(test_auto_by_kind), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_json_and_help), cmocka_unit_test(test_example_ini),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
