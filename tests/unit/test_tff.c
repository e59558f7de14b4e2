/* TFF SQLite datasets: files with a few clients and real tf.train.Example
 * blobs, encoded here byte by byte from the wire format (not with our own
 * generated code, so a wrong field number in proto/tf_example.proto would
 * fail), read back value for value; bad blobs and files refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/data/dataset.h"
#include "common/data/partition.h"
#include "common/data/spec.h"
#include "common/data/text.h"
#include "common/data/tff.h"
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

/* ---- a minimal protobuf writer ---- */

typedef struct {
    uint8_t b[40000];
    size_t n;
} buf_t;

static void varint(buf_t *o, uint64_t v)
{
    do {
        uint8_t c = v & 0x7F;
        v >>= 7;
        o->b[o->n++] = (uint8_t)(c | (v ? 0x80 : 0));
    } while (v);
}

static void ld(buf_t *o, int field, const void *data, size_t len)
{
    varint(o, (uint64_t)field << 3 | 2);
    varint(o, len);
    memcpy(o->b + o->n, data, len);
    o->n += len;
}

/* Feature with BytesList{value: s}. */
static void feat_bytes(buf_t *f, const char *s)
{
    buf_t list = {.n = 0};
    ld(&list, 1, s, strlen(s));
    f->n = 0;
    ld(f, 1, list.b, list.n);
}

/* Feature with FloatList, packed or not. */
static void feat_floats(buf_t *f, const float *v, size_t n, int packed)
{
    static buf_t list;
    list.n = 0;
    if (packed) {
        ld(&list, 1, v, n * 4); /* little-endian fixed32 */
    } else {
        for (size_t i = 0; i < n; i++) {
            varint(&list, 1 << 3 | 5);
            memcpy(list.b + list.n, &v[i], 4);
            list.n += 4;
        }
    }
    f->n = 0;
    ld(f, 2, list.b, list.n);
}

static void feat_ints(buf_t *f, const int64_t *v, size_t n)
{
    static buf_t packed, list;
    packed.n = list.n = 0;
    for (size_t i = 0; i < n; i++)
        varint(&packed, (uint64_t)v[i]);
    ld(&list, 1, packed.b, packed.n);
    f->n = 0;
    ld(f, 3, list.b, list.n);
}

/* Adds map entry {key, feature} to a Features message under construction. */
static void add_entry(buf_t *features, const char *key, const buf_t *feat)
{
    static buf_t e;
    e.n = 0;
    ld(&e, 1, key, strlen(key));
    ld(&e, 2, feat->b, feat->n);
    ld(features, 1, e.b, e.n);
}

/* Example{features: features}. */
static void example(buf_t *out, const buf_t *features)
{
    out->n = 0;
    ld(out, 1, features->b, features->n);
}

/* ---- the SQLite file ---- */

static sqlite3 *new_db(const char *path)
{
    sqlite3 *db;
    remove(path);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE examples (split_name TEXT, client_id TEXT, "
                                  "serialized_example_proto BLOB);"
                                  "CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, "
                                  "num_examples INTEGER);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    return db;
}

static void put(sqlite3 *db, const char *split, const char *client, const buf_t *blob)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO examples VALUES (?, ?, ?)", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, split, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, client, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, blob->b, (int)blob->n, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
}

static void meta(sqlite3 *db, const char *split, const char *client, int n)
{
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO client_metadata VALUES ('%s', '%s', %d)", client, split,
             n);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
}

static float px(int c, int e, int i) { return (float)((c * 97 + e * 13 + i) % 101) / 100.0f; }

/* An EMNIST example of client c, example e; unpacked floats when asked. */
static void emnist_blob(buf_t *out, int c, int e, int packed)
{
    static buf_t features, f;
    float v[784];
    for (int i = 0; i < 784; i++)
        v[i] = px(c, e, i);
    int64_t label = (c * 5 + e) % 62;
    features.n = 0;
    feat_ints(&f, &label, 1);
    add_entry(&features, "label", &f);
    feat_floats(&f, v, 784, packed);
    add_entry(&features, "pixels", &f);
    example(out, &features);
}

static void test_emnist(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/emnist.sqlite", dir);
    sqlite3 *db = new_db(path);
    static buf_t blob;
    /* Clients inserted out of order: c2 (2 examples), c0 (1), c1 (3). */
    const int order[3] = {2, 0, 1}, counts[3] = {1, 3, 2};
    for (int k = 0; k < 3; k++) {
        int c = order[k];
        char id[16];
        snprintf(id, sizeof id, "c%d", c);
        meta(db, "all_train", id, counts[c]);
        for (int e = 0; e < counts[c]; e++) {
            emnist_blob(&blob, c, e, c != 1);
            put(db, "all_train", id, &blob);
        }
    }
    meta(db, "all_test", "c0", 1);
    emnist_blob(&blob, 9, 0, 1);
    put(db, "all_test", "c0", &blob);
    sqlite3_close(db);

    fl_data_spec_t s;
    fl_data_spec_init(&s);
    snprintf(s.source, sizeof s.source, "tff:%s", path); /* defaults to all_train */
    assert_int_equal(fl_data_spec_set(&s, "partition", "natural"), 0);
    fl_dataset_t d;
    fl_partition_t p;
    fl_dataset_init(&d);
    assert_int_equal(fl_data_spec_load_partitioned(&s, "train", &d, &p), 0);
    assert_int_equal(d.n, 6);
    assert_int_equal(d.dim, 784);
    assert_int_equal(d.num_classes, 62);
    assert_int_equal(p.clients, 3);
    for (int c = 0; c < 3; c++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", c);
        assert_string_equal(d.group_names[c], id); /* sorted ids */
        size_t m;
        const uint32_t *ix = fl_partition_client(&p, (size_t)c, &m);
        assert_int_equal(m, counts[c]);
        for (size_t e = 0; e < m; e++) {
            assert_int_equal(d.y[ix[e]], (c * 5 + (int)e) % 62);
            for (int i = 0; i < 784; i++)
                assert_true(d.x[(size_t)ix[e] * 784 + i] == px(c, (int)e, i));
        }
    }
    fl_dataset_free(&d);
    fl_partition_free(&p);
    /* A device's share, streamed: client 1 (unpacked floats) alone. */
    assert_int_equal(fl_data_spec_set(&s, "client-index", "1"), 0);
    assert_int_equal(fl_data_spec_load(&s, "train", &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.num_groups, 1);
    assert_string_equal(d.group_names[0], "c1");
    assert_true(d.x[2 * 784 + 5] == px(1, 2, 5));
    fl_dataset_free(&d);
    assert_int_equal(fl_data_spec_set(&s, "client-index", "3"), 0);
    assert_int_equal(fl_data_spec_load(&s, "train", &d), FL_ERANGE);
    /* The test split: all_train -> all_test. */
    assert_int_equal(fl_data_spec_load(&s, "test", &d), 0);
    assert_int_equal(d.n, 1);
    assert_true(d.x[0] == px(9, 0, 0));
    fl_dataset_free(&d);
    /* An explicit split that does not exist. */
    snprintf(s.source, sizeof s.source, "tff:%s:digits_only_train", path);
    assert_int_equal(fl_data_spec_load(&s, "test", &d), FL_ENOTFOUND);
}

static void test_shakespeare_and_so(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/shakespeare.sqlite", dir);
    sqlite3 *db = new_db(path);
    static buf_t blob, features, f;
    features.n = 0;
    feat_bytes(&f, "To be");
    add_entry(&features, "snippets", &f);
    example(&blob, &features);
    meta(db, "train", "HAMLET", 1);
    put(db, "train", "HAMLET", &blob);
    sqlite3_close(db);
    fl_dataset_t d;
    fl_dataset_init(&d);
    char src[700];
    snprintf(src, sizeof src, "%s:train", path);
    assert_int_equal(fl_tff_load(src, "train", FL_DATA_VIEW_AUTO, &d), 0);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.label_dim, 80);
    const char *t = "To be";
    assert_int_equal((int)d.x[0], FL_CHAR_BOS);
    for (int j = 0; j < 5; j++)
        assert_int_equal((int)d.x[1 + j], fl_text_char_id((unsigned char)t[j]));
    assert_int_equal(d.y[5], FL_CHAR_EOS);
    fl_dataset_free(&d);

    snprintf(path, sizeof path, "%s/so.sqlite", dir);
    db = new_db(path);
    const char *posts[3][4] = {{"u1", "how to sort a list", "sorting lists", "python|list"},
                               {"u1", "a list of a list", "nested", "python"},
                               {"u2", "sort in c", "c sort", "c|sorting"}};
    meta(db, "train", "u1", 2);
    meta(db, "train", "u2", 1);
    for (int i = 0; i < 3; i++) {
        features.n = 0;
        feat_bytes(&f, posts[i][1]);
        add_entry(&features, "tokens", &f);
        feat_bytes(&f, posts[i][2]);
        add_entry(&features, "title", &f);
        feat_bytes(&f, posts[i][3]);
        add_entry(&features, "tags", &f);
        int64_t score = 3;
        feat_ints(&f, &score, 1);
        add_entry(&features, "score", &f);
        example(&blob, &features);
        put(db, "train", posts[i][0], &blob);
    }
    sqlite3_close(db);
    /* Words: token counts a:3 list:3 sort:2 ... -> a=1, list=2, sort=3 (ids start at 1). */
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_WORDS, &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.num_classes, FL_WORD_IDS);
    int first[6] = {FL_WORD_VOCAB + 2, -1, -1, 3, 1, 2}; /* BOS how to sort a list */
    for (int j = 3; j < 6; j++)
        assert_int_equal((int)d.x[j], first[j]);
    assert_int_equal((int)d.x[0], first[0]);
    assert_int_equal((int)d.x[6], FL_WORD_VOCAB + 3);
    fl_dataset_free(&d);
    /* Bag of words: tags python:2, c/list/sorting:1 -> python=0, c=1, list=2, sorting=3. */
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_BOW, &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(d.label_dim, FL_TAG_VOCAB);
    int32_t exp_tags[3][4] = {{1, 0, 1, 0}, {1, 0, 0, 0}, {0, 1, 0, 1}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            assert_int_equal(d.y[i * FL_TAG_VOCAB + j], exp_tags[i][j]);
    /* Post 2 is "a list of a list nested": a and list 2/6 each. */
    assert_float_equal(d.x[1 * FL_WORD_VOCAB + 0], 2.0f / 6.0f, 1e-6);
    fl_dataset_free(&d);
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_CHARS, &d), FL_EINVAL);
}

static void test_cifar100(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/cifar.sqlite", dir);
    sqlite3 *db = new_db(path);
    static buf_t blob, features, f;
    static int64_t img[3072];
    for (int i = 0; i < 3072; i++)
        img[i] = (i * 7) % 256;
    int64_t label = 42, coarse = 7;
    features.n = 0;
    feat_ints(&f, img, 3072);
    add_entry(&features, "image", &f);
    feat_ints(&f, &label, 1);
    add_entry(&features, "label", &f);
    feat_ints(&f, &coarse, 1);
    add_entry(&features, "coarse_label", &f);
    example(&blob, &features);
    meta(db, "train", "0", 1);
    put(db, "train", "0", &blob);
    sqlite3_close(db);
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_AUTO, &d), 0);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.shape[0], 3);
    assert_int_equal(d.y[0], 42);
    assert_non_null(d.coarse);
    assert_int_equal(d.coarse[0], 7);
    /* HWC in the file: pixel (h, w), channel c at (h*32 + w)*3 + c. */
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 1024; p += 37)
            assert_float_equal(d.x[c * 1024 + p], (float)(((p * 3 + c) * 7) % 256) / 255.0f, 1e-7);
    fl_dataset_free(&d);
}

static void test_bad(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/bad.sqlite", dir);
    fl_dataset_t d;
    fl_dataset_init(&d);
    static buf_t blob, features, f;

    /* Not SQLite at all. */
    assert_int_equal(fl_test_write_str(path, "this is not a database, just text........"), 0);
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_AUTO, &d), FL_EFORMAT);
    /* SQLite without the tables. */
    remove(path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_AUTO, &d), FL_EFORMAT);
    /* A first blob that is not an Example. */
    db = new_db(path);
    blob.n = 3;
    memcpy(blob.b, "\xff\xff\xff", 3);
    meta(db, "train", "a", 1);
    put(db, "train", "a", &blob);
    sqlite3_close(db);
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_AUTO, &d), FL_EFORMAT);
    /* A good first example, then: garbage, a missing label, 783 pixels, and a
     * client missing from client_metadata — each alone must fail the load. */
    for (int k = 0; k < 4; k++) {
        db = new_db(path);
        meta(db, "train", "a", 2);
        emnist_blob(&blob, 0, 0, 1);
        put(db, "train", "a", &blob);
        const char *who = "a";
        if (k == 0) {
            blob.n = 5;
            memcpy(blob.b, "\x0a\x05\x0a\x03xy", 5);
        } else if (k == 1) {
            float v[784] = {0};
            features.n = 0;
            feat_floats(&f, v, 784, 1);
            add_entry(&features, "pixels", &f);
            example(&blob, &features);
        } else if (k == 2) {
            float v[783] = {0};
            int64_t label = 1;
            features.n = 0;
            feat_floats(&f, v, 783, 1);
            add_entry(&features, "pixels", &f);
            feat_ints(&f, &label, 1);
            add_entry(&features, "label", &f);
            example(&blob, &features);
        } else {
            who = "stranger";
        }
        put(db, "train", who, &blob);
        sqlite3_close(db);
        assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_AUTO, &d), FL_EFORMAT);
        assert_null(d.x);
    }
    /* A label of 62. */
    db = new_db(path);
    meta(db, "train", "a", 1);
    float v[784] = {0};
    int64_t label = 62;
    features.n = 0;
    feat_floats(&f, v, 784, 1);
    add_entry(&features, "pixels", &f);
    feat_ints(&f, &label, 1);
    add_entry(&features, "label", &f);
    example(&blob, &features);
    put(db, "train", "a", &blob);
    sqlite3_close(db);
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_AUTO, &d), FL_EFORMAT);
    snprintf(path, sizeof path, "%s/missing.sqlite", dir);
    assert_int_equal(fl_tff_load(path, "train", FL_DATA_VIEW_AUTO, &d), FL_EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_emnist),
        cmocka_unit_test(test_shakespeare_and_so),
        cmocka_unit_test(test_cifar100),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
