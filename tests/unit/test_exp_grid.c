/* Tests server/exp_grid and exp_preset: log lattices (exact points, labels,
 * refusals), grid files (presets, overrides, per-optimizer axes, `paper`,
 * errors with the key named), the canonical cell order and keys, τ collapsing
 * for FedAvg/FedAvgM, the fixed settings text and the shard rule. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "server/exp_grid.h"

static void test_lattice(void **state)
{
    fl_exp_axis_t ax = {0};
    char err[256];
    assert_int_equal(fl_exp_axis_parse("10^-3..10^0 step 0.5", &ax, err, sizeof err), 0);
    assert_int_equal(ax.n, 7);
    const char *labels[] = {"10^-3", "10^-2.5", "10^-2", "10^-1.5", "10^-1", "10^-0.5", "10^0"};
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(ax.v[i].label, labels[i]);
        /* Exactly pow(10, exponent), the value a literal 10^E gives. */
        assert_true(ax.v[i].v == pow(10.0, -3.0 + 0.5 * (double)i));
    }
    assert_true(ax.v[6].v == 1.0);
    /* A step that is not a binary fraction still lands on its decimal points. */
    fl_exp_axis_t b = {0};
    assert_int_equal(fl_exp_axis_parse("10^-1..10^-0.7 step 0.1", &b, err, sizeof err), 0);
    assert_int_equal(b.n, 4);
    assert_string_equal(b.v[1].label, "10^-0.9");
    assert_string_equal(b.v[3].label, "10^-0.7");
    assert_true(b.v[1].v == pow(10.0, -0.9));
    /* Lists mix items; a lattice point equals the same literal power. */
    fl_exp_axis_t c = {0};
    assert_int_equal(fl_exp_axis_parse(" 0.1 , 10^-1.5,10^1..10^2 step 1", &c, err, sizeof err), 0);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.v[0].label, "0.1");
    assert_true(c.v[0].v == 0.1);
    assert_string_equal(c.v[1].label, "10^-1.5");
    assert_true(c.v[1].v == pow(10.0, -1.5));
    assert_true(c.v[2].v == 10.0 && c.v[3].v == 100.0);
    fl_exp_axis_t d = {0};
    assert_int_equal(fl_exp_axis_parse("paper", &d, err, sizeof err), 0);
    assert_true(d.paper && d.n == 1 && isnan(d.v[0].v));
}

static void test_lattice_refusals(void **state)
{
    const char *bad[] = {"",           "10^-3..10^0 step 0.4", "10^0..10^-3 step 0.5", "10^-3..10^0 step 0",
                         "10^-3..10^0", "10^-3..10^0 step -1", "1e",                   "abc",
                         "0.1,,0.2",   "0.1, 0.1",             "10^-1, 10^-1..10^0 step 1", "10^400",
                         "10^-3..10^0 step 0.5 x", "10^0..10^100 step 1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_exp_axis_t ax = {0};
        char err[256] = "";
        int rc = fl_exp_axis_parse(bad[i], &ax, err, sizeof err);
        if (rc == 0)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(err[0] != 0);
    }
}

static const char *study =
    "[experiment]\npreset = fmnist_cr\nrounds = 100\nseeds = 1, 2, 3\n"
    "[axes]\nserver_opt = fedadagrad, fedadam, fedyogi, fedavgm, fedavg\n";

static void test_preset_paper_rates(void **state)
{
    fl_exp_grid_t g;
    char err[512];
    assert_int_equal(fl_exp_grid_parse(study, "s.ini", &g, err, sizeof err), 0);
    assert_string_equal(g.task, "fmnist_cr");
    assert_string_equal(g.model, "cnn");
    assert_string_equal(g.data, "fmnist");
    assert_string_equal(g.partition, "dirichlet");
    assert_int_equal(g.clients, 100);
    assert_int_equal(g.batch_size, 20);
    assert_int_equal(g.rounds, 100);
    fl_exp_cell_t *cells;
    size_t n;
    assert_int_equal(fl_exp_grid_cells(&g, &cells, &n, err, sizeof err), 0);
    assert_int_equal(n, 15);
    /* The EMNIST CR rates; seed innermost; no τ for FedAvgM/FedAvg. */
    assert_string_equal(cells[0].key, "fedadagrad,slr=10^-1,clr=10^-1.5,tau=10^-2,K=10,E=1,alpha=0.1,seed=1");
    assert_string_equal(cells[2].key, "fedadagrad,slr=10^-1,clr=10^-1.5,tau=10^-2,K=10,E=1,alpha=0.1,seed=3");
    assert_string_equal(cells[3].key, "fedadam,slr=10^-2.5,clr=10^-1.5,tau=10^-4,K=10,E=1,alpha=0.1,seed=1");
    assert_string_equal(cells[9].key, "fedavgm,slr=10^-0.5,clr=10^-1.5,tau=-,K=10,E=1,alpha=0.1,seed=1");
    assert_string_equal(cells[14].key, "fedavg,slr=10^0,clr=10^-1,tau=-,K=10,E=1,alpha=0.1,seed=3");
    assert_string_equal(cells[14].setting, "fedavg,slr=10^0,clr=10^-1,tau=-,K=10,E=1,alpha=0.1");
    assert_true(cells[3].val[FL_EXP_SERVER_LR].v == pow(10.0, -2.5));
    assert_true(isnan(cells[9].val[FL_EXP_TAU].v));
    for (size_t i = 0; i < n; i++)
        assert_int_equal(cells[i].index, i);
    free(cells);
}

static void test_axes_and_order(void **state)
{
    const char *text = "[experiment]\npreset = fmnist_cr\nrounds = 5\nseeds = 7..8\nclients = 20\n"
                       "[axes]\nserver_opt = fedavg, fedadam\n"
                       "client_lr = 10^-2..10^-1 step 1\n"
                       "server_lr = 10^-3\nserver_lr.fedavg = 10^-0.5..10^0 step 0.5\n"
                       "tau = 10^-3, 10^-4\nclients_per_round = 5\nalpha = 0.1, 1\n"
                       "[server]\nround_deadline = 30\n";
    fl_exp_grid_t g;
    char err[512];
    assert_int_equal(fl_exp_grid_parse(text, "a.ini", &g, err, sizeof err), 0);
    fl_exp_cell_t *cells;
    size_t n;
    assert_int_equal(fl_exp_grid_cells(&g, &cells, &n, err, sizeof err), 0);
    /* fedavg: 2 slr x 2 clr x (τ collapsed) x 2 α x 2 seeds = 16; fedadam: 1 x 2 x 2 x 2 x 2 = 16. */
    assert_int_equal(n, 32);
    assert_string_equal(cells[0].key, "fedavg,slr=10^-0.5,clr=10^-2,tau=-,K=5,E=1,alpha=0.1,seed=7");
    assert_string_equal(cells[1].key, "fedavg,slr=10^-0.5,clr=10^-2,tau=-,K=5,E=1,alpha=0.1,seed=8");
    assert_string_equal(cells[2].key, "fedavg,slr=10^-0.5,clr=10^-2,tau=-,K=5,E=1,alpha=1,seed=7");
    assert_string_equal(cells[4].key, "fedavg,slr=10^-0.5,clr=10^-1,tau=-,K=5,E=1,alpha=0.1,seed=7");
    assert_string_equal(cells[8].key, "fedavg,slr=10^0,clr=10^-2,tau=-,K=5,E=1,alpha=0.1,seed=7");
    assert_string_equal(cells[16].key, "fedadam,slr=10^-3,clr=10^-2,tau=10^-3,K=5,E=1,alpha=0.1,seed=7");
    assert_string_equal(cells[20].key, "fedadam,slr=10^-3,clr=10^-2,tau=10^-4,K=5,E=1,alpha=0.1,seed=7");
    assert_string_equal(cells[31].key, "fedadam,slr=10^-3,clr=10^-1,tau=10^-4,K=5,E=1,alpha=1,seed=8");
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(cells[i].key, cells[j].key);
    /* Shards: a partition of the cells by index mod N. */
    size_t count[3] = {0};
    for (size_t i = 0; i < n; i++) {
        int owners = 0;
        for (size_t s = 0; s < 3; s++)
            if (fl_exp_shard_has(i, s, 3)) {
                owners++;
                count[s]++;
                assert_int_equal(i % 3, s);
            }
        assert_int_equal(owners, 1);
    }
    assert_int_equal(count[0] + count[1] + count[2], n);
    free(cells);
    char *fixed = fl_exp_grid_fixed_text(&g);
    assert_non_null(fixed);
    assert_non_null(strstr(fixed, "model=cnn\n"));
    assert_non_null(strstr(fixed, "clients=20\n"));
    assert_non_null(strstr(fixed, "rounds=5\n"));
    assert_non_null(strstr(fixed, "server.round_deadline=30\n"));
    free(fixed);
}

static void test_shard_parse(void **state)
{
    size_t i, n;
    assert_int_equal(fl_exp_shard_parse("0/1", &i, &n), 0);
    assert_true(i == 0 && n == 1);
    assert_int_equal(fl_exp_shard_parse("3/4", &i, &n), 0);
    assert_true(i == 3 && n == 4);
    const char *bad[] = {"4/4", "1/0", "-1/2", "1/-2", "a/2", "1/2x", "1", "/2", ""};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        if (fl_exp_shard_parse(bad[k], &i, &n) == 0)
            fail_msg("shard '%s' accepted", bad[k]);
}

static void expect_error(const char *text, const char *needle)
{
    fl_exp_grid_t g;
    char err[512] = "";
    int rc = fl_exp_grid_parse(text, "bad.ini", &g, err, sizeof err);
    if (rc == 0)
        fail_msg("accepted: %s", text);
    if (!strstr(err, needle))
        fail_msg("error '%s' does not say '%s'", err, needle);
}

static void test_errors(void **state)
{
    expect_error("[experiment]\npreset = nope\n[axes]\nserver_opt = fedavg\n", "unknown preset");
    expect_error("[experiment]\npreset = fmnist_cr\nrounds = 0\n[axes]\nserver_opt = fedavg\n", "rounds");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\nserver_opt = fedsgd\n", "server_opt");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\nserver_opt = fedavg\nbogus = 1\n", "bogus");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\nserver_opt = fedavg\nserver_lr = 10^-3..10^0 step 0.7\n",
                 "server_lr");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\nserver_opt = fedavg\nclients_per_round = 1.5\n",
                 "clients_per_round");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\nserver_opt = fedavg\nclients_per_round = 200\n",
                 "more than the 100 clients");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\n", "server_opt");
    /* CIFAR presets take the user's data; cifar10 has no paper rates here. */
    expect_error("[experiment]\npreset = cifar100\n[axes]\nserver_opt = fedadam\n", "data");
    expect_error("[experiment]\npreset = cifar10\ndata = cifar10:/x\n[axes]\nserver_opt = fedadam\n", "paper");
    expect_error("[experiment]\npreset = shakespeare\ndata = leaf:/x\nclients = 5\n[axes]\nserver_opt = fedavg\n"
                 "alpha = 0.1\n",
                 "alpha");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\nserver_opt = fedavg\n[server]\ndb = x.db\n", "db");
    expect_error("[experiment]\npreset = fmnist_cr\n[axes]\nserver_opt = fedavg\nserver_lr.fedsgd = 1\n",
                 "server_lr.fedsgd");
    expect_error("[experiment]\npreset = fmnist_cr\nseeds = 1, 1\n[axes]\nserver_opt = fedavg\n", "seeds");
    expect_error("[other]\nx = 1\n", "unknown section");
    expect_error("[experiment]\nmodel = mlp\n[axes]\nserver_opt = fedavg\n", "data");
    /* A grid without a preset states what it needs; `paper` has nothing to give. */
    expect_error("[experiment]\nmodel = mlp\ndata = fmnist\nclients = 10\nrounds = 3\n[axes]\nserver_opt = fedavg\n",
                 "paper");
}

static void test_custom_grid(void **state)
{
    const char *text = "[experiment]\nmodel = logreg\ndata = fmnist\nclients = 20\nrounds = 3\npartition = iid\n"
                       "[axes]\nserver_opt = fedavg\nserver_lr = 1\nclient_lr = 0.1\n";
    fl_exp_grid_t g;
    char err[512];
    assert_int_equal(fl_exp_grid_parse(text, "c.ini", &g, err, sizeof err), 0);
    assert_string_equal(g.task, "custom");
    assert_string_equal(g.metric, "accuracy");
    fl_exp_cell_t *cells;
    size_t n;
    assert_int_equal(fl_exp_grid_cells(&g, &cells, &n, err, sizeof err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(cells[0].key, "fedavg,slr=1,clr=0.1,tau=-,K=10,E=1,alpha=-,seed=1");
    free(cells);
}

static void test_presets(void **state)
{
    const fl_exp_preset_t *p = fl_exp_preset_find("fmnist_ae");
    assert_non_null(p);
    assert_string_equal(p->model, "autoencoder");
    assert_string_equal(p->metric, "mse");
    /* EMNIST AE: FedYogi 10^1 / 10^-1.5, τ 10^-3. */
    int y = fl_exp_opt_index("fedyogi");
    assert_true(p->best[y].client_lr == 1 && p->best[y].server_lr == -1.5 && p->best[y].tau == -3);
    p = fl_exp_preset_find("so_lr");
    assert_non_null(p);
    assert_int_equal(p->batch_size, 100);
    assert_true(p->best[fl_exp_opt_index("fedadagrad")].server_lr == 1);
    assert_null(fl_exp_preset_find("mnist"));
    assert_int_equal(fl_exp_opt_index("fedsgd"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lattice),       cmocka_unit_test(test_lattice_refusals),
        cmocka_unit_test(test_preset_paper_rates), cmocka_unit_test(test_axes_and_order),
        cmocka_unit_test(test_shard_parse),   cmocka_unit_test(test_errors),
        cmocka_unit_test(test_custom_grid),   cmocka_unit_test(test_presets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
