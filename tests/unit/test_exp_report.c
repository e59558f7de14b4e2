/* Tests server/exp_report on experiment directories built by hand (cell.ini
 * and a run.db written with server/store, no processes): the selection
 * window (the last 100 closed rounds, all of them when fewer), the mean over
 * seeds, the final test metric's mean and spread, MSE ranked lowest first,
 * the fallback to test accuracy for logs without training accuracy, a cell
 * present in two shards taken once (the finished copy), and the files. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "server/exp_report.h"
#include "server/store.h"

static char root[128];

typedef struct {
    const char *task, *metric, *opt, *clr, *slr;
    int seed, rounds, done;
    /* per round r (1-based): training accuracy (NaN: none), training loss, test accuracy/loss */
    double (*acc)(int r, int seed), (*loss)(int r, int seed), (*test)(int r, int seed);
} spec_t;

static void make_cell(const char *dir, const spec_t *s)
{
    char p[800], key[300], setting[256];
    snprintf(setting, sizeof setting, "%s,slr=%s,clr=%s,tau=-,K=5,E=1,alpha=-", s->opt, s->slr, s->clr);
    snprintf(key, sizeof key, "%s,seed=%d", setting, s->seed);
    snprintf(p, sizeof p, "%s/cells", dir);
    mkdir(dir, 0755);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/cells/%s", dir, key);
    assert_int_equal(mkdir(p, 0755), 0);
    char f[900];
    snprintf(f, sizeof f, "%s/cell.ini", p);
    FILE *fp = fopen(f, "w");
    assert_non_null(fp);
    fprintf(fp,
            "[cell]\nkey = %s\nsetting = %s\ntask = %s\nmodel = mlp\nmetric = %s\nrounds = %d\nserver_opt = %s\n"
            "seed = %d\nserver_lr = %s\nserver_lr_value = %.17g\nclient_lr = %s\nclient_lr_value = %.17g\n"
            "tau = -\ntau_value = nan\nclients_per_round = 5\nclients_per_round_value = 5\nlocal_epochs = 1\n"
            "local_epochs_value = 1\nalpha = -\nalpha_value = nan\n",
            key, setting, s->task, s->metric, s->rounds, s->opt, s->seed, s->slr, pow(10, atof(s->slr + 3)), s->clr,
            pow(10, atof(s->clr + 3)));
    fclose(fp);
    snprintf(f, sizeof f, "%s/run.db", p);
    fl_store_t *st;
    assert_int_equal(fl_store_open(f, 0, &st), 0);
    float x[4] = {0};
    uint8_t state[8] = {0};
    fl_store_run_info_t info = {"mlp", s->opt, (uint64_t)s->seed, "{}"};
    int64_t run;
    assert_int_equal(fl_store_run_create(st, &info, x, 4, state, sizeof state, &run), 0);
    for (int r = 1; r <= s->rounds; r++) {
        double t = s->test ? s->test(r, s->seed) : NAN;
        int mse = strcmp(s->metric, "mse") == 0;
        fl_store_round_t row = {.run_id = run,
                                .round = r,
                                .started_at = 1e9 + r,
                                .finished_at = 1e9 + r + 0.5,
                                .status = "closed",
                                .clients_selected = 5,
                                .clients_reported = 5,
                                .examples = 100,
                                .train_loss = s->loss ? s->loss(r, s->seed) : NAN,
                                .eval_loss = mse ? t : NAN,
                                .eval_accuracy = mse ? NAN : t,
                                .bytes_in = 1000,
                                .bytes_out = 2000,
                                .train_accuracy = s->acc ? s->acc(r, s->seed) : NAN};
        assert_int_equal(fl_store_commit_round(st, &row, NULL, 0, NULL, 0, NULL, 0, 0), 0);
    }
    if (s->done) {
        assert_int_equal(fl_store_run_set_status(st, run, "finished"), 0);
        snprintf(f, sizeof f, "%s/done", p);
        fp = fopen(f, "w");
        fclose(fp);
    }
    fl_store_close(st);
}

/* Setting A is better over all rounds, B over the last 100: B must win. */
static double acc_a(int r, int seed) { return r <= 20 ? 0.9 : 0.5; }
static double acc_b(int r, int seed) { return r <= 20 ? 0.1 : seed == 1 ? 0.6 : 0.62; }
static double test_a(int r, int seed) { return r % 10 == 0 ? 0.55 : NAN; }
static double test_b(int r, int seed) { return r == 120 ? (seed == 1 ? 0.7 : 0.8) : r % 10 == 0 ? 0.1 : NAN; }
/* A 50-round FedAdam cell: all 50 rounds count (mean of 0.01 r = 0.255). */
static double acc_c(int r, int seed) { return 0.01 * r; }
static double test_c(int r, int seed) { return 0.3; }
/* No training accuracy (an old log): ranked by test accuracy. */
static double test_old1(int r, int seed) { return 0.4; }
static double test_old2(int r, int seed) { return r <= 3 ? 0.2 : 0.45; }
/* MSE: lower training loss wins. */
static double loss_hi(int r, int seed) { return 0.05; }
static double loss_lo(int r, int seed) { return 0.02; }
static double test_mse(int r, int seed) { return 0.03; }
/* The shard copies: a partial copy in one directory, the finished one in the other. */
static double acc_part(int r, int seed) { return 0.99; }

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strdup(buf);
}

/* The best.csv line for task,opt; NULL if none. */
static char *best_line(const char *csv, const char *task, const char *opt)
{
    char want[128];
    snprintf(want, sizeof want, "\n%s,%s,", task, opt);
    const char *p = strstr(csv, want);
    if (!p)
        return NULL;
    p++;
    const char *e = strchr(p, '\n');
    return strndup(p, e ? (size_t)(e - p) : strlen(p));
}

/* Field i (0-based) of a CSV line whose quoted field is the last one. */
static double field(const char *line, int i)
{
    const char *p = line;
    for (int k = 0; k < i; k++)
        p = strchr(p, ',') + 1;
    return strtod(p, NULL);
}

static void test_report(void **state)
{
    char a[160], b[160], out[160];
    snprintf(root, sizeof root, "/tmp/fedopt-exp-report-%d", (int)getpid());
    mkdir(root, 0755);
    snprintf(a, sizeof a, "%s/A", root);
    snprintf(b, sizeof b, "%s/B", root);
    snprintf(out, sizeof out, "%s/R", root);
    spec_t cells[] = {
        {"t1", "accuracy", "fedavg", "10^-2", "10^0", 1, 120, 1, acc_a, NULL, test_a},
        {"t1", "accuracy", "fedavg", "10^-2", "10^0", 2, 120, 1, acc_a, NULL, test_a},
        {"t1", "accuracy", "fedavg", "10^-1", "10^0", 1, 120, 1, acc_b, NULL, test_b},
        {"t1", "accuracy", "fedavg", "10^-1", "10^0", 2, 120, 1, acc_b, NULL, test_b},
        {"t1", "accuracy", "fedadam", "10^-1", "10^-2", 1, 50, 0, acc_c, NULL, test_c},
        {"old", "accuracy", "fedavg", "10^-2", "10^0.5", 1, 10, 1, NULL, loss_hi, test_old1},
        {"old", "accuracy", "fedavg", "10^-1", "10^0.5", 1, 10, 1, NULL, loss_hi, test_old2},
        {"ae", "mse", "fedyogi", "10^1", "10^-1.5", 1, 5, 1, NULL, loss_hi, test_mse},
        {"ae", "mse", "fedyogi", "10^0.5", "10^-1.5", 1, 5, 1, NULL, loss_lo, test_mse},
    };
    for (size_t i = 0; i < sizeof cells / sizeof cells[0]; i++)
        make_cell(i % 2 ? b : a, &cells[i]); /* spread over two "shards" */
    /* The same FedAdam cell in the other shard, unfinished with 3 rounds of 0.99. */
    spec_t dup = {"t1", "accuracy", "fedadam", "10^-1", "10^-2", 1, 3, 0, acc_part, NULL, test_c};
    make_cell(b, &dup);
    const char *dirs[] = {a, b};
    FILE *log = fopen("/dev/null", "w");
    assert_int_equal(fl_exp_report_write(dirs, 2, out, 0, log), 0);
    fclose(log);

    char p[256];
    snprintf(p, sizeof p, "%s/best.csv", out);
    char *best = slurp(p);
    /* t1/fedavg: B by the window (0.61), not A (better over all rounds). */
    char *l = best_line(best, "t1", "fedavg");
    assert_non_null(l);
    assert_non_null(strstr(l, "\"fedavg,slr=10^0,clr=10^-1,tau=-,K=5,E=1,alpha=-\""));
    assert_true(fabs(field(l, 12) - 0.61) < 1e-9);               /* selection score */
    assert_int_equal((int)field(l, 11), 100);                     /* window */
    assert_true(fabs(field(l, 13) - 0.75) < 1e-9);               /* final test, mean */
    assert_true(fabs(field(l, 14) - sqrt(0.005)) < 1e-6);        /* sample sd of 0.7, 0.8 */
    assert_true(field(l, 15) == 0.7 && field(l, 16) == 0.8);
    free(l);
    /* t1/fedadam: both copies are unfinished; the longer one (50 rounds) is kept. */
    l = best_line(best, "t1", "fedadam");
    assert_non_null(l);
    assert_int_equal((int)field(l, 11), 50);
    assert_true(fabs(field(l, 12) - 0.255) < 1e-9);
    assert_non_null(strstr(l, ",partial,"));
    free(l);
    /* old: by test accuracy over the window (0.4 vs 0.2*3+0.45*7 / 10 = 0.375). */
    l = best_line(best, "old", "fedavg");
    assert_non_null(l);
    assert_non_null(strstr(l, "clr=10^-2"));
    assert_true(fabs(field(l, 12) - 0.4) < 1e-9);
    free(l);
    /* ae: the lower training MSE. */
    l = best_line(best, "ae", "fedyogi");
    assert_non_null(l);
    assert_non_null(strstr(l, "clr=10^0.5"));
    assert_true(fabs(field(l, 12) - 0.02) < 1e-9);
    free(l);
    free(best);

    snprintf(p, sizeof p, "%s/grid.csv", out);
    char *grid = slurp(p);
    int lines = 0;
    for (const char *q = grid; *q; q++)
        lines += *q == '\n';
    assert_int_equal(lines, 1 + 9); /* the duplicate taken once */
    free(grid);
    snprintf(p, sizeof p, "%s/report.md", out);
    char *md = slurp(p);
    assert_non_null(strstr(md, "## t1"));
    assert_non_null(strstr(md, "**Ranked by test accuracy**"));
    assert_non_null(strstr(md, "(partial)"));
    free(md);
    const char *plots[] = {"curves-t1.png", "curves-t1.svg", "heat-t1-fedavg.png", "heat-ae-fedyogi.svg",
                           "time-old.png", "bytes-t1.svg"};
    for (size_t i = 0; i < sizeof plots / sizeof plots[0]; i++) {
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", out, plots[i]);
        assert_int_equal(stat(p, &sb), 0);
        assert_true(sb.st_size > 1000);
    }

    /* --finished-only: the unfinished FedAdam cell (both copies) is left out and counted; the rest is as
     * before. Only the unfinished cells' shard alone has nothing to report. */
    char out2[200];
    snprintf(out2, sizeof out2, "%s/F", root);
    log = fopen("/dev/null", "w");
    assert_int_equal(fl_exp_report_write(dirs, 2, out2, FL_EXP_REPORT_FINISHED_ONLY, log), 0);
    snprintf(p, sizeof p, "%s/best.csv", out2);
    best = slurp(p);
    assert_null(best_line(best, "t1", "fedadam"));
    l = best_line(best, "t1", "fedavg");
    assert_non_null(l);
    assert_true(fabs(field(l, 12) - 0.61) < 1e-9);
    assert_non_null(strstr(l, ",done,"));
    free(l);
    free(best);
    snprintf(p, sizeof p, "%s/grid.csv", out2);
    grid = slurp(p);
    lines = 0;
    for (const char *q = grid; *q; q++)
        lines += *q == '\n';
    assert_int_equal(lines, 1 + 8);
    free(grid);
    snprintf(p, sizeof p, "%s/report.md", out2);
    md = slurp(p);
    assert_non_null(strstr(md, "8 finished, 0 partial or not started; 1 unfinished cell left out (--finished-only)"));
    assert_null(strstr(md, "(partial)"));
    free(md);
    char only[200];
    snprintf(only, sizeof only, "%s/only", root);
    mkdir(only, 0755);
    make_cell(only, &dup);
    const char *odirs[] = {only};
    assert_int_equal(fl_exp_report_write(odirs, 1, out2, FL_EXP_REPORT_FINISHED_ONLY, log), FL_ENOTFOUND);
    assert_int_equal(fl_exp_report_write(odirs, 1, out2, 0, log), 0);
    fclose(log);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static void test_no_cells(void **state)
{
    char d[160], out[200];
    snprintf(d, sizeof d, "/tmp/fedopt-exp-empty-%d", (int)getpid());
    snprintf(out, sizeof out, "%s/R", d);
    const char *dirs[] = {d};
    FILE *log = fopen("/dev/null", "w");
    assert_int_equal(fl_exp_report_write(dirs, 1, out, 0, log), FL_ENOTFOUND); /* no such directory */
    char cells[200];
    snprintf(cells, sizeof cells, "%s/cells", d);
    mkdir(d, 0755);
    mkdir(cells, 0755);
    assert_int_equal(fl_exp_report_write(dirs, 1, out, 0, log), FL_ENOTFOUND); /* no cells */
    fclose(log);
    rmdir(cells);
    rmdir(d);
}

int main(void)
{
    fl_log_set_level(FL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report),
        cmocka_unit_test(test_no_cells),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
