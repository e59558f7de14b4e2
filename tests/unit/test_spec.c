/* The data spec: option parsing and validation, Fashion-MNIST through it
 * (60,000 / 10,000 examples, 6,000 per class, the real files' pixel
 * statistics), and a client's share equal to that client's slice of the
 * whole partition. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/data/dataset.h"
#include "common/data/partition.h"
#include "common/data/spec.h"
#include "common/base/error.h"

static void test_parse_args(void **state)
{
    (void)state;
    fl_data_spec_t s;
    fl_data_spec_init(&s);
    assert_string_equal(s.source, "fmnist");
    assert_int_equal(s.client_index, -1);
    /* Through the command-line parser, as the commands use it; both spellings. */
    static const fl_cli_opt_t own[] = {{"model", 1, 1}, {"lr", 1, 2}, {NULL, 0, 0}};
    char *argv[] = {"train", "--model", "mlp", "--data", "idx:/x", "--partition=dirichlet:0.5",
                    "--clients", "100", "--client_index=7", "--data-seed", "42", "--lr",
                    "0.1", "--data_view", "words", "rest", NULL};
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-client", "train", own, fl_data_spec_opts, 16, argv);
    const char *seen[4];
    int n = 0, id;
    while ((id = fl_cli_next(&cli)) != FL_CLI_END) {
        assert_int_not_equal(id, FL_CLI_ERR);
        if (id >= FL_DATA_SPEC_OPT_ID)
            assert_int_equal(fl_data_spec_apply(&s, &cli), 0);
        else if (n < 4)
            seen[n++] = cli.val;
    }
    assert_int_equal(n, 3);
    assert_string_equal(seen[0], "mlp");
    assert_string_equal(seen[1], "0.1");
    assert_string_equal(seen[2], "rest");
    assert_string_equal(s.source, "idx:/x");
    assert_int_equal(s.partition.kind, FL_PARTITION_DIRICHLET);
    assert_true(s.partition.alpha == 0.5);
    assert_int_equal(s.clients, 100);
    assert_int_equal(s.client_index, 7);
    assert_int_equal(s.seed, 42);
    assert_int_equal(s.view, FL_DATA_VIEW_WORDS);
    assert_int_equal(fl_data_spec_validate(&s), 0);

    assert_int_equal(fl_data_spec_set(&s, "--model", "x"), FL_ENOTFOUND);
    assert_int_equal(fl_data_spec_set(&s, "clients", "-3"), FL_EINVAL);
    assert_int_equal(fl_data_spec_set(&s, "clients", "12x"), FL_EINVAL);
    assert_int_equal(fl_data_spec_set(&s, "data-view", "pixels"), FL_EINVAL);
    assert_int_equal(fl_data_spec_set(&s, "partition", "dirichlet:0"), FL_EINVAL);
    assert_int_equal(fl_data_spec_set(&s, "client_index", "4"), 0);
    assert_int_equal(s.client_index, 4);
    /* A bad value through the parser is a usage error naming the option. */
    char *argv2[] = {"x", "--clients", "12x", NULL};
    char *msg = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&msg, &len);
    assert_non_null(err);
    fl_cli_init(&cli, "fedopt-client", "train", own, fl_data_spec_opts, 3, argv2);
    cli.err = err;
    assert_int_equal(fl_cli_next(&cli), FL_DATA_SPEC_OPT_ID + 3);
    assert_int_equal(fl_data_spec_apply(&s, &cli), FL_EINVAL);
    fclose(err);
    assert_non_null(strstr(msg, "fedopt-client: --clients: '12x' is not an integer"));
    free(msg);

    /* Combinations. */
    fl_data_spec_init(&s);
    assert_int_equal(fl_data_spec_set(&s, "data", "mnist"), 0);
    assert_int_equal(fl_data_spec_validate(&s), FL_EINVAL);
    assert_int_equal(fl_data_spec_set(&s, "data", "idx:"), 0);
    assert_int_equal(fl_data_spec_validate(&s), FL_EINVAL);
    fl_data_spec_init(&s);
    assert_int_equal(fl_data_spec_set(&s, "client-index", "3"), 0);
    assert_int_equal(fl_data_spec_validate(&s), FL_EINVAL);
    assert_int_equal(fl_data_spec_set(&s, "clients", "3"), 0);
    assert_int_equal(fl_data_spec_validate(&s), FL_EINVAL);
    assert_int_equal(fl_data_spec_set(&s, "clients", "4"), 0);
    assert_int_equal(fl_data_spec_validate(&s), 0);
    fl_data_spec_init(&s);
    assert_int_equal(fl_data_spec_set(&s, "partition", "iid"), 0);
    assert_int_equal(fl_data_spec_validate(&s), FL_EINVAL);
    assert_non_null(strstr(fl_data_spec_usage(), "--client-index"));
}

static void test_fmnist(void **state)
{
    (void)state;
    fl_data_spec_t s;
    fl_data_spec_init(&s);
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_data_spec_load(&s, "train", &d), 0);
    assert_int_equal(d.n, 60000);
    assert_int_equal(d.dim, 784);
    assert_true(d.ndim == 3 && d.shape[0] == 1 && d.shape[1] == 28 && d.shape[2] == 28);
    assert_int_equal(d.num_classes, 10);
    assert_int_equal(d.label_dim, 1);
    size_t per[10] = {0};
    for (size_t i = 0; i < d.n; i++) {
        assert_true(d.y[i] >= 0 && d.y[i] < 10);
        per[d.y[i]]++;
    }
    for (int c = 0; c < 10; c++)
        assert_int_equal(per[c], 6000);
    /* The real files' statistics: mean 0.28604, std 0.35302, 23,616,498 zero pixels. */
    double sum = 0, sq = 0;
    size_t zeros = 0;
    for (size_t i = 0; i < d.n * d.dim; i++) {
        assert_true(d.x[i] >= 0.0f && d.x[i] <= 1.0f);
        sum += d.x[i];
        sq += (double)d.x[i] * d.x[i];
        zeros += d.x[i] == 0.0f;
    }
    double mean = sum / (double)(d.n * d.dim);
    double sd = sqrt(sq / (double)(d.n * d.dim) - mean * mean);
    assert_float_equal(mean, 0.286041, 1e-5);
    assert_float_equal(sd, 0.353024, 1e-5);
    assert_int_equal(zeros, 23616498);
    fl_dataset_free(&d);
    assert_int_equal(fl_data_spec_load(&s, "test", &d), 0);
    assert_int_equal(d.n, 10000);
    fl_dataset_free(&d);
    assert_int_equal(fl_data_spec_load(&s, "valid", &d), FL_EINVAL);
}

static void test_client_share(void **state)
{
    (void)state;
    fl_data_spec_t s;
    fl_data_spec_init(&s);
    assert_int_equal(fl_data_spec_set(&s, "partition", "dirichlet:0.1"), 0);
    assert_int_equal(fl_data_spec_set(&s, "clients", "3400"), 0);
    assert_int_equal(fl_data_spec_set(&s, "data-seed", "9"), 0);
    fl_dataset_t all, mine;
    fl_partition_t p;
    fl_dataset_init(&all);
    fl_dataset_init(&mine);
    assert_int_equal(fl_data_spec_load_partitioned(&s, "train", &all, &p), 0);
    assert_int_equal(p.clients, 3400);
    assert_int_equal(fl_data_spec_set(&s, "client-index", "1234"), 0);
    assert_int_equal(fl_data_spec_load(&s, "train", &mine), 0);
    size_t k;
    const uint32_t *ix = fl_partition_client(&p, 1234, &k);
    assert_int_equal(mine.n, k);
    assert_true(k == 17 || k == 18); /* 60,000 / 3,400 = 17.6 */
    for (size_t j = 0; j < k; j++) {
        assert_int_equal(mine.y[j], all.y[ix[j]]);
        assert_memory_equal(mine.x + j * 784, all.x + (size_t)ix[j] * 784, 784 * sizeof(float));
    }
    /* The test split is always whole. */
    fl_dataset_t t;
    fl_dataset_init(&t);
    assert_int_equal(fl_data_spec_load(&s, "test", &t), 0);
    assert_int_equal(t.n, 10000);
    fl_dataset_free(&t);
    fl_dataset_free(&mine);
    fl_dataset_free(&all);
    fl_partition_free(&p);
    /* Shards on Fashion-MNIST: 100 clients x 2 shards of 300, at most 2 labels each. */
    fl_data_spec_init(&s);
    assert_int_equal(fl_data_spec_set(&s, "partition", "shards"), 0);
    assert_int_equal(fl_data_spec_set(&s, "clients", "100"), 0);
    assert_int_equal(fl_data_spec_load_partitioned(&s, "train", &all, &p), 0);
    fl_partition_stats_t st;
    assert_int_equal(fl_partition_stats(&all, &p, &st), 0);
    assert_true(st.max_labels <= 2);
    assert_int_equal(st.used, 60000);
    fl_dataset_free(&all);
    fl_partition_free(&p);
    /* Natural needs user ids, which Fashion-MNIST has not. */
    assert_int_equal(fl_data_spec_set(&s, "partition", "natural"), 0);
    assert_int_equal(fl_data_spec_load_partitioned(&s, "train", &all, &p), FL_EINVAL);
    assert_null(all.x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_args),
        cmocka_unit_test(test_fmnist),
        cmocka_unit_test(test_client_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
