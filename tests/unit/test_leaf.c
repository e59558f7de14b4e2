/* LEAF JSON: FEMNIST-like and Shakespeare-like folders written here read
 * back value for value with users as natural clients; JSON of the wrong
 * shape refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/data/dataset.h"
#include "common/data/leaf.h"
#include "common/data/partition.h"
#include "common/data/spec.h"
#include "common/data/text.h"
#include "common/base/error.h"
#include "tests/support/datafiles.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    return fl_test_mkdtemp(dir, sizeof dir);
}

static int teardown(void **state)
{
    (void)state;
    fl_test_rmtree(dir);
    return 0;
}

static float pix(int user, int ex, int i) { return (float)((user * 131 + ex * 31 + i) % 256) / 255.0f; }

/* A FEMNIST-like file: users u0..u0+nu-1 with 1 + u % 3 examples each, label
 * (u * 7 + e) % 62, plus a stub entry for an unlisted user. */
static void femnist_file(const char *path, int u0, int nu)
{
    size_t cap = 1 << 22, n = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    n += (size_t)snprintf(b + n, cap - n, "{\"users\": [");
    for (int u = u0; u < u0 + nu; u++)
        n += (size_t)snprintf(b + n, cap - n, "%s\"f%04d\"", u > u0 ? ", " : "", u);
    n += (size_t)snprintf(b + n, cap - n, "], \"num_samples\": [], \"user_data\": {"
                                          "\"stub\": {\"x\": [], \"y\": []}");
    for (int u = u0; u < u0 + nu; u++) {
        n += (size_t)snprintf(b + n, cap - n, ", \"f%04d\": {\"x\": [", u);
        for (int e = 0; e < 1 + u % 3; e++) {
            n += (size_t)snprintf(b + n, cap - n, "%s[", e ? ", " : "");
            for (int i = 0; i < 784; i++)
                n += (size_t)snprintf(b + n, cap - n, "%s%.9g", i ? "," : "", pix(u, e, i));
            n += (size_t)snprintf(b + n, cap - n, "]");
        }
        n += (size_t)snprintf(b + n, cap - n, "], \"y\": [");
        for (int e = 0; e < 1 + u % 3; e++)
            n += (size_t)snprintf(b + n, cap - n, "%s%d", e ? ", " : "", (u * 7 + e) % 62);
        n += (size_t)snprintf(b + n, cap - n, "]}");
    }
    n += (size_t)snprintf(b + n, cap - n, "}}");
    assert_true(n < cap);
    assert_int_equal(fl_test_write(path, b, n, 0), 0);
    free(b);
}

static void test_femnist(void **state)
{
    (void)state;
    char root[512], sub[600], path[700];
    snprintf(root, sizeof root, "%s/femnist", dir);
    assert_int_equal(mkdir(root, 0700), 0);
    snprintf(sub, sizeof sub, "%s/train", root);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/all_data_1.json", sub);
    femnist_file(path, 3, 4); /* users 3..6, read second */
    snprintf(path, sizeof path, "%s/all_data_0.json", sub);
    femnist_file(path, 0, 3); /* users 0..2, read first */
    snprintf(sub, sizeof sub, "%s/test", root);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(path, sizeof path, "%s/t.json", sub);
    femnist_file(path, 0, 2);

    fl_data_spec_t s;
    fl_data_spec_init(&s);
    snprintf(s.source, sizeof s.source, "leaf:%s", root);
    assert_int_equal(fl_data_spec_set(&s, "partition", "natural"), 0);
    fl_dataset_t d;
    fl_partition_t p;
    fl_dataset_init(&d);
    assert_int_equal(fl_data_spec_load_partitioned(&s, "train", &d, &p), 0);
    assert_int_equal(d.ndim, 3);
    assert_int_equal(d.dim, 784);
    assert_int_equal(d.num_classes, 62);
    assert_int_equal(d.num_groups, 7);
    assert_int_equal(p.clients, 7);
    size_t total = 0;
    for (int u = 0; u < 7; u++) {
        char name[16];
        snprintf(name, sizeof name, "f%04d", u);
        assert_string_equal(d.group_names[u], name);
        size_t m;
        const uint32_t *ix = fl_partition_client(&p, (size_t)u, &m);
        assert_int_equal(m, 1 + u % 3);
        total += m;
        for (size_t e = 0; e < m; e++) {
            assert_int_equal(d.y[ix[e]], (u * 7 + (int)e) % 62);
            for (int i = 0; i < 784; i++)
                assert_float_equal(d.x[(size_t)ix[e] * 784 + i], pix(u, (int)e, i), 1e-7);
        }
    }
    assert_int_equal(d.n, total);
    fl_dataset_free(&d);
    fl_partition_free(&p);
    /* One device's share: client 5 = user f0005, 3 examples. */
    assert_int_equal(fl_data_spec_set(&s, "client-index", "5"), 0);
    assert_int_equal(fl_data_spec_load(&s, "train", &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.num_groups, 1);
    assert_string_equal(d.group_names[0], "f0005");
    assert_int_equal(d.y[2], (5 * 7 + 2) % 62);
    fl_dataset_free(&d);
    assert_int_equal(fl_data_spec_load(&s, "test", &d), 0);
    assert_int_equal(d.n, 3);
    fl_dataset_free(&d);
}

static void test_shakespeare(void **state)
{
    (void)state;
    char root[512], sub[600], path[700], x[81];
    snprintf(root, sizeof root, "%s/shakespeare", dir);
    assert_int_equal(mkdir(root, 0700), 0);
    snprintf(sub, sizeof sub, "%s/train", root);
    assert_int_equal(mkdir(sub, 0700), 0);
    for (int i = 0; i < 80; i++)
        x[i] = "To be, or not\n"[i % 14];
    x[80] = 0;
    char json[2000];
    /* JSON escapes: the newline must be written as \n. */
    char esc[200];
    size_t k = 0;
    for (int i = 0; i < 80; i++) {
        if (x[i] == '\n') {
            esc[k++] = '\\';
            esc[k++] = 'n';
        } else {
            esc[k++] = x[i];
        }
    }
    esc[k] = 0;
    snprintf(json, sizeof json,
             "{\"users\": [\"HAMLET\", \"OPHELIA\"], \"user_data\": {"
             "\"OPHELIA\": {\"x\": [\"%s\"], \"y\": [\"}\"]},"
             "\"HAMLET\": {\"x\": [\"%s\", \"%s\"], \"y\": [\"t\", \"!\"]}}}",
             esc, esc, esc);
    snprintf(path, sizeof path, "%s/a.json", sub);
    assert_int_equal(fl_test_write_str(path, json), 0);
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_leaf_load(root, "train", &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.dim, 80);
    assert_int_equal(d.label_dim, 80);
    assert_int_equal(d.num_classes, 90);
    /* user_data order: OPHELIA first, but groups follow "users": HAMLET = 0. */
    assert_string_equal(d.group_names[0], "HAMLET");
    assert_int_equal(d.group[0], 1);
    assert_int_equal(d.group[1], 0);
    for (int j = 0; j < 80; j++)
        assert_int_equal((int)d.x[j], fl_text_char_id((unsigned char)x[j]));
    assert_int_equal(d.y[79], FL_CHAR_OOV); /* '}' */
    assert_int_equal(d.y[80 + 79], fl_text_char_id('t'));
    assert_int_equal(d.y[160 + 79], fl_text_char_id('!'));
    assert_int_equal(d.y[160 + 3], (int)d.x[160 + 4]);
    fl_dataset_free(&d);
    assert_int_equal(fl_leaf_load(root, "test", &d), FL_ENOTFOUND);
}

static void test_bad_json(void **state)
{
    (void)state;
    const struct {
        const char *json;
        int rc;
    } cases[] = {
        {"", FL_EFORMAT},
        {"{", FL_EFORMAT},
        {"[1, 2]", FL_EFORMAT},
        {"{\"users\": [], \"user_data\": {}}", FL_EEMPTY},
        {"{\"users\": [\"a\"], \"user_data\": []}", FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {}}", FL_EFORMAT},            /* a has no data */
        {"{\"users\": [\"a\", \"a\"], \"user_data\": {\"a\": {\"x\": [], \"y\": []}}}",
         FL_EFORMAT},                                                       /* listed twice */
        {"{\"users\": [{}], \"user_data\": {}}", FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": 3}}", FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, 2]], \"y\": [1, 2]}}}",
         FL_EFORMAT},                                                       /* lengths differ */
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, 2], [3]], \"y\": [1, 2]}}}",
         FL_EFORMAT},                                                       /* ragged rows */
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, \"q\"]], \"y\": [1]}}}",
         FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, 2]], \"y\": [-1]}}}",
         FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, 2]], \"y\": [1.5]}}}",
         FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[]], \"y\": [1]}}}", FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [7], \"y\": [1]}}}", FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [\"short\"], \"y\": [\"b\"]}}}",
         FL_EFORMAT},
        {"{\"users\": [\"a\"], \"user_data\": {\"a\": {\"x\": [[1, 2]], \"y\": [1]}}}", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fl_dataset_t d;
        fl_dataset_init(&d);
        int rc = fl_leaf_parse("case", cases[i].json, strlen(cases[i].json), &d);
        if (rc != cases[i].rc)
            print_error("case %zu: %s: got %d\n", i, cases[i].json, rc);
        assert_int_equal(rc, cases[i].rc);
        if (rc == 0) {
            assert_int_equal(d.n, 1);
            assert_int_equal(d.dim, 2);
            assert_int_equal(d.num_classes, 2);
        }
        fl_dataset_free(&d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_femnist),
        cmocka_unit_test(test_shakespeare),
        cmocka_unit_test(test_bad_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
