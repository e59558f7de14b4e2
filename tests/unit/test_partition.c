/* Partitions: every example at most once, sizes as asked, determinism, and
 * the skew each kind promises (Dirichlet skew grows as alpha shrinks, shards
 * give at most two labels, natural keeps users whole). */
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
#include "common/base/error.h"

/* n examples of 2 floats, label i % classes (x[0] = i so examples are
 * identifiable); with groups, example i belongs to user i % groups. */
static void synth(fl_dataset_t *d, size_t n, int classes, size_t groups)
{
    int64_t shape[1] = {2};
    fl_dataset_init(d);
    assert_int_equal(fl_dataset_alloc(d, n, 1, shape, classes), 0);
    for (size_t i = 0; i < n; i++) {
        d->x[i * 2] = (float)i;
        d->y[i] = (int32_t)(i % (size_t)classes);
    }
    if (groups) {
        d->group = malloc(n * sizeof(uint32_t));
        assert_non_null(d->group);
        char name[32];
        for (size_t g = 0; g < groups; g++) {
            snprintf(name, sizeof name, "user%03zu", g);
            assert_int_equal(fl_dataset_add_group(d, name, NULL), 0);
        }
        for (size_t i = 0; i < n; i++)
            d->group[i] = (uint32_t)(i % groups);
    }
}

/* Asserts no example appears twice and returns how many were used. */
static size_t check_unique(const fl_dataset_t *d, const fl_partition_t *p)
{
    uint8_t *seen = calloc(d->n, 1);
    assert_non_null(seen);
    size_t used = 0;
    for (size_t c = 0; c < p->clients; c++) {
        size_t m;
        const uint32_t *ix = fl_partition_client(p, c, &m);
        for (size_t j = 0; j < m; j++) {
            assert_true(ix[j] < d->n);
            assert_int_equal(seen[ix[j]], 0);
            seen[ix[j]] = 1;
            used++;
        }
    }
    free(seen);
    return used;
}

static void test_parse(void **state)
{
    (void)state;
    fl_partition_spec_t s;
    char buf[64];
    assert_int_equal(fl_partition_parse("iid", &s), 0);
    assert_int_equal(s.kind, FL_PARTITION_IID);
    assert_int_equal(fl_partition_parse("dirichlet:0.1", &s), 0);
    assert_int_equal(s.kind, FL_PARTITION_DIRICHLET);
    assert_true(s.alpha == 0.1 && s.alpha_fine == 0);
    assert_int_equal(fl_partition_parse("dirichlet:0.1,10", &s), 0);
    assert_true(s.alpha == 0.1 && s.alpha_fine == 10);
    fl_partition_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "dirichlet:0.1,10");
    assert_int_equal(fl_partition_parse("shards", &s), 0);
    assert_int_equal(s.shards, 2);
    assert_int_equal(fl_partition_parse("shards:5", &s), 0);
    assert_int_equal(s.shards, 5);
    assert_int_equal(fl_partition_parse("natural", &s), 0);
    assert_int_equal(s.kind, FL_PARTITION_NATURAL);
    const char *bad[] = {"", "dirichlet", "dirichlet:", "dirichlet:-1", "dirichlet:0",
                         "dirichlet:nan", "dirichlet:1,", "dirichlet:1x", "shards:0",
                         "shards:x", "shards:", "IID", "iid2", NULL};
    for (const char **b = bad; *b; b++)
        assert_int_equal(fl_partition_parse(*b, &s), FL_EINVAL);
}

static void test_iid(void **state)
{
    (void)state;
    fl_dataset_t d;
    synth(&d, 1003, 10, 0);
    fl_partition_spec_t s = {.kind = FL_PARTITION_IID};
    fl_partition_t p, q;
    assert_int_equal(fl_partition_make(&d, &s, 10, 7, &p), 0);
    assert_int_equal(p.clients, 10);
    for (size_t c = 0; c < 10; c++) {
        size_t m;
        fl_partition_client(&p, c, &m);
        assert_int_equal(m, c < 3 ? 101 : 100);
    }
    assert_int_equal(check_unique(&d, &p), 1003);
    /* Same seed, same split; another seed, another split. */
    assert_int_equal(fl_partition_make(&d, &s, 10, 7, &q), 0);
    assert_memory_equal(p.index, q.index, 1003 * sizeof(uint32_t));
    fl_partition_free(&q);
    assert_int_equal(fl_partition_make(&d, &s, 10, 8, &q), 0);
    assert_true(memcmp(p.index, q.index, 1003 * sizeof(uint32_t)) != 0);
    fl_partition_stats_t st;
    assert_int_equal(fl_partition_stats(&d, &p, &st), 0);
    assert_int_equal(st.min_size, 100);
    assert_int_equal(st.max_size, 101);
    assert_int_equal(st.used, 1003);
    assert_true(st.mean_tv < 0.15); /* ~100 examples over 10 classes: only sampling noise */
    fl_partition_free(&q);
    fl_partition_free(&p);
    /* More clients than examples, or none. */
    assert_int_equal(fl_partition_make(&d, &s, 1004, 7, &p), FL_ERANGE);
    assert_int_equal(fl_partition_make(&d, &s, 0, 7, &p), FL_EINVAL);
    fl_dataset_free(&d);
}

static void test_dirichlet_skew(void **state)
{
    (void)state;
    fl_dataset_t d;
    synth(&d, 10000, 10, 0);
    const double alphas[] = {100.0, 1.0, 0.1, 0.01};
    double tv[4], labels[4];
    for (int a = 0; a < 4; a++) {
        fl_partition_spec_t s = {.kind = FL_PARTITION_DIRICHLET, .alpha = alphas[a]};
        fl_partition_t p;
        assert_int_equal(fl_partition_make(&d, &s, 100, 1, &p), 0);
        assert_int_equal(check_unique(&d, &p), 10000);
        fl_partition_stats_t st;
        assert_int_equal(fl_partition_stats(&d, &p, &st), 0);
        assert_int_equal(st.min_size, 100);
        assert_int_equal(st.max_size, 100);
        tv[a] = st.mean_tv;
        labels[a] = st.mean_labels;
        print_message("dirichlet:%g  mean TV %.3f  labels/client %.2f\n", alphas[a], tv[a],
                      labels[a]);
        fl_partition_free(&p);
    }
    for (int a = 1; a < 4; a++) {
        assert_true(tv[a] > tv[a - 1]);
        assert_true(labels[a] <= labels[a - 1]);
    }
    assert_true(tv[0] < 0.2);  /* alpha 100: close to IID */
    assert_true(tv[2] > 0.5);  /* alpha 0.1: the paper's "very skewed" */
    assert_true(labels[3] < 3.0);
    fl_dataset_free(&d);
}

static void test_dirichlet_two_level(void **state)
{
    (void)state;
    fl_dataset_t d;
    synth(&d, 20000, 100, 0);
    d.coarse = malloc(d.n * sizeof(int32_t));
    assert_non_null(d.coarse);
    d.num_coarse = 20;
    for (size_t i = 0; i < d.n; i++)
        d.coarse[i] = d.y[i] / 5;
    fl_partition_spec_t s = {.kind = FL_PARTITION_DIRICHLET, .alpha = 0.1, .alpha_fine = 10};
    fl_partition_t p;
    assert_int_equal(fl_partition_make(&d, &s, 200, 3, &p), 0);
    assert_int_equal(check_unique(&d, &p), 20000);
    /* Coarse skew: most of a client's examples come from few coarse classes. */
    double sum_top = 0;
    for (size_t c = 0; c < p.clients; c++) {
        size_t m, h[20] = {0}, top = 0;
        const uint32_t *ix = fl_partition_client(&p, c, &m);
        assert_int_equal(m, 100);
        for (size_t j = 0; j < m; j++)
            h[d.coarse[ix[j]]]++;
        for (int g = 0; g < 20; g++)
            top = h[g] > top ? h[g] : top;
        sum_top += (double)top / (double)m;
    }
    assert_true(sum_top / (double)p.clients > 0.5);
    fl_partition_free(&p);
    /* Without coarse labels the two-level rule is refused. */
    free(d.coarse);
    d.coarse = NULL;
    assert_int_equal(fl_partition_make(&d, &s, 200, 3, &p), FL_EINVAL);
    fl_dataset_free(&d);
}

static void test_shards(void **state)
{
    (void)state;
    fl_dataset_t d;
    synth(&d, 20000, 10, 0);
    fl_partition_spec_t s = {.kind = FL_PARTITION_SHARDS, .shards = 2};
    fl_partition_t p;
    assert_int_equal(fl_partition_make(&d, &s, 100, 5, &p), 0);
    assert_int_equal(check_unique(&d, &p), 20000);
    fl_partition_stats_t st;
    assert_int_equal(fl_partition_stats(&d, &p, &st), 0);
    assert_true(st.max_labels <= 2);
    assert_int_equal(st.min_size, 200);
    assert_int_equal(st.max_size, 200);
    fl_partition_free(&p);
    /* Uneven: 1003 examples, 7 clients x 3 shards of 47; the rest unused. */
    fl_dataset_free(&d);
    synth(&d, 1003, 10, 0);
    s.shards = 3;
    assert_int_equal(fl_partition_make(&d, &s, 7, 5, &p), 0);
    assert_int_equal(check_unique(&d, &p), 7 * 3 * (1003 / 21));
    fl_partition_free(&p);
    assert_int_equal(fl_partition_make(&d, &s, 400, 5, &p), FL_ERANGE);
    fl_dataset_free(&d);
}

static void test_natural(void **state)
{
    (void)state;
    fl_dataset_t d;
    synth(&d, 1000, 10, 13);
    fl_partition_spec_t s = {.kind = FL_PARTITION_NATURAL};
    fl_partition_t p;
    assert_int_equal(fl_partition_make(&d, &s, 0, 0, &p), 0);
    assert_int_equal(p.clients, 13);
    assert_int_equal(check_unique(&d, &p), 1000);
    for (size_t c = 0; c < 13; c++) {
        size_t m;
        const uint32_t *ix = fl_partition_client(&p, c, &m);
        assert_int_equal(m, 1000 / 13 + (c < 1000 % 13 ? 1 : 0));
        for (size_t j = 0; j < m; j++)
            assert_int_equal(d.group[ix[j]], c); /* the user is whole and alone */
    }
    fl_partition_free(&p);
    assert_int_equal(fl_partition_make(&d, &s, 5, 0, &p), 0);
    assert_int_equal(p.clients, 5);
    fl_partition_free(&p);
    assert_int_equal(fl_partition_make(&d, &s, 14, 0, &p), FL_ERANGE);
    fl_dataset_free(&d);
    synth(&d, 100, 10, 0);
    assert_int_equal(fl_partition_make(&d, &s, 0, 0, &p), FL_EINVAL);
    fl_dataset_free(&d);
}

static void test_subset(void **state)
{
    (void)state;
    fl_dataset_t d, s;
    synth(&d, 100, 10, 4);
    uint32_t idx[3] = {5, 9, 2};
    fl_dataset_init(&s);
    assert_int_equal(fl_dataset_subset(&d, idx, 3, &s), 0);
    assert_int_equal(s.n, 3);
    assert_true(s.x[0] == 5.0f && s.x[2] == 9.0f && s.x[4] == 2.0f);
    assert_int_equal(s.y[1], 9);
    /* Groups 1, 1, 2 become 0, 0, 1 with their names. */
    assert_int_equal(s.num_groups, 2);
    assert_string_equal(s.group_names[0], "user001");
    assert_string_equal(s.group_names[1], "user002");
    assert_int_equal(s.group[2], 1);
    fl_dataset_free(&s);
    idx[1] = 100;
    assert_int_equal(fl_dataset_subset(&d, idx, 3, &s), FL_EINVAL);
    fl_dataset_free(&d);
}

static void test_sequence_refused(void **state)
{
    (void)state;
    fl_dataset_t d;
    int64_t shape[1] = {80};
    fl_dataset_init(&d);
    assert_int_equal(fl_dataset_alloc_labels(&d, 50, 1, shape, 80, 90), 0);
    fl_partition_spec_t s = {.kind = FL_PARTITION_DIRICHLET, .alpha = 1};
    fl_partition_t p;
    assert_int_equal(fl_partition_make(&d, &s, 5, 0, &p), FL_EUNSUPPORTED);
    s.kind = FL_PARTITION_IID;
    assert_int_equal(fl_partition_make(&d, &s, 5, 0, &p), 0);
    assert_int_equal(check_unique(&d, &p), 50);
    fl_partition_free(&p);
    fl_dataset_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),          cmocka_unit_test(test_iid),
        cmocka_unit_test(test_dirichlet_skew), cmocka_unit_test(test_dirichlet_two_level),
        cmocka_unit_test(test_shards),         cmocka_unit_test(test_natural),
        cmocka_unit_test(test_subset),         cmocka_unit_test(test_sequence_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
