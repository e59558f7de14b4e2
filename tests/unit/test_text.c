/* Text: the 90-id character vocabulary, passages into 80-step sequences,
 * LEAF windows, word vocabularies and sequences, bag of words with tags, and
 * text:PATH sources (a directory of files, a play with speakers). */
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

static void test_char_vocab(void **state)
{
    (void)state;
    /* 86 distinct characters + pad, OOV, BOS, EOS = charlstm's 90 outputs. */
    assert_int_equal(strlen(FL_CHAR_SET), 86);
    int seen[FL_CHAR_VOCAB] = {0};
    for (int c = 0; c < 256; c++) {
        int id = fl_text_char_id((unsigned char)c);
        assert_true(id >= 1 && id <= FL_CHAR_OOV);
        if (id != FL_CHAR_OOV) {
            assert_int_equal(seen[id], 0);
            seen[id] = 1;
            assert_int_equal(fl_text_char_of(id), (char)c);
        }
    }
    for (int id = 1; id <= 86; id++)
        assert_int_equal(seen[id], 1);
    assert_int_equal(FL_CHAR_VOCAB, 90);
    assert_int_equal(fl_text_char_id('d'), 1);
    assert_int_equal(fl_text_char_id('\r'), 86);
    assert_int_equal(fl_text_char_id('>'), FL_CHAR_OOV);
    assert_int_equal(fl_text_char_id('}'), FL_CHAR_OOV);
    assert_int_equal(fl_text_char_id('~'), FL_CHAR_OOV);
    /* Everything else of the LEAF set is in the vocabulary. */
    const char *leaf = "\n !\"&'(),-.0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]"
                       "abcdefghijklmnopqrstuvwxyz";
    for (const char *p = leaf; *p; p++)
        assert_true(fl_text_char_id((unsigned char)*p) < FL_CHAR_OOV);
}

static void test_chars_sequences(void **state)
{
    (void)state;
    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_text_chars_init(&d), 0);
    assert_int_equal(d.dim, 80);
    assert_int_equal(d.label_dim, 80);
    assert_int_equal(d.num_classes, 90);
    /* 100 characters + BOS + EOS = 102 ids: chunks of 81 -> 2 examples. */
    char text[101];
    for (int i = 0; i < 100; i++)
        text[i] = "abc"[i % 3];
    text[100] = 0;
    assert_int_equal(fl_text_chars_append(&d, text, 100, 3), 0);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.group[1], 3);
    int a = fl_text_char_id('a'), b = fl_text_char_id('b'), c = fl_text_char_id('c');
    int ids[3] = {a, b, c};
    assert_int_equal((int)d.x[0], FL_CHAR_BOS);
    for (int j = 1; j < 80; j++)
        assert_int_equal((int)d.x[j], ids[(j - 1) % 3]);
    for (int j = 0; j < 80; j++)
        assert_int_equal(d.y[j], ids[j % 3]); /* y is x shifted by one */
    /* Second chunk: ids 81..101 = text[80..99], EOS, then pads. */
    for (int j = 0; j < 20; j++)
        assert_int_equal((int)d.x[80 + j], ids[(80 + j) % 3]);
    assert_int_equal((int)d.x[80 + 20], FL_CHAR_EOS);
    assert_int_equal((int)d.x[80 + 21], FL_CHAR_PAD);
    assert_int_equal(d.y[80 + 19], FL_CHAR_EOS);
    assert_int_equal(d.y[80 + 20], FL_CHAR_PAD);
    assert_int_equal(d.y[80 + 79], FL_CHAR_PAD);
    /* UTF-8: "é" is one OOV, not two. */
    fl_dataset_free(&d);
    assert_int_equal(fl_text_chars_init(&d), 0);
    assert_int_equal(fl_text_chars_append(&d, "a\xc3\xa9z", 4, 0), 0);
    assert_int_equal((int)d.x[1], a);
    assert_int_equal((int)d.x[2], FL_CHAR_OOV);
    assert_int_equal((int)d.x[3], fl_text_char_id('z'));
    assert_int_equal((int)d.x[4], FL_CHAR_EOS);
    /* LEAF windows. */
    char w[81];
    for (int i = 0; i < 80; i++)
        w[i] = (char)('A' + i % 26);
    w[80] = 0;
    assert_int_equal(fl_text_leaf_window(&d, w, "!", 7), 0);
    const float *x = d.x + 80;
    const int32_t *y = d.y + 80;
    for (int j = 0; j < 80; j++)
        assert_int_equal((int)x[j], fl_text_char_id((unsigned char)('A' + j % 26)));
    for (int j = 0; j < 79; j++)
        assert_int_equal(y[j], (int)x[j + 1]);
    assert_int_equal(y[79], fl_text_char_id('!'));
    w[79] = 0;
    assert_int_equal(fl_text_leaf_window(&d, w, "!", 7), FL_EFORMAT);
    w[79] = 'x';
    assert_int_equal(fl_text_leaf_window(&d, w, "!!", 7), FL_EFORMAT);
    assert_int_equal(d.n, 2);
    fl_dataset_free(&d);
}

static void test_vocab_words_bow(void **state)
{
    (void)state;
    fl_vocab_t *v = fl_vocab_new();
    assert_non_null(v);
    const char *t = "the cat the dog the cat a";
    assert_int_equal(fl_vocab_count(v, t, strlen(t), " "), 0);
    assert_int_equal(fl_vocab_finish(v, 3), 0);
    assert_int_equal(fl_vocab_size(v), 3);
    assert_string_equal(fl_vocab_token(v, 0), "the");
    assert_string_equal(fl_vocab_token(v, 1), "cat");
    assert_string_equal(fl_vocab_token(v, 2), "a"); /* ties by byte order: a < dog */
    assert_int_equal(fl_vocab_id(v, "dog", 3), -1);
    assert_int_equal(fl_vocab_id(v, "cat", 3), 1);
    assert_null(fl_vocab_token(v, 3));

    fl_vocab_t *tags = fl_vocab_new();
    assert_int_equal(fl_vocab_count(tags, "c|python|c", 10, "|"), 0);
    assert_int_equal(fl_vocab_finish(tags, 500), 0);
    assert_int_equal(fl_vocab_size(tags), 2);

    fl_dataset_t d;
    fl_dataset_init(&d);
    assert_int_equal(fl_text_words_init(&d), 0);
    assert_int_equal(d.num_classes, 10004);
    assert_int_equal(fl_text_words_append(&d, v, "the dog cat", 11, 0), 0);
    int exp_x[5] = {10002, 1, 10001, 2, 10003};
    for (int j = 0; j < 5; j++)
        assert_int_equal((int)d.x[j], exp_x[j]);
    assert_int_equal((int)d.x[5], 0);
    for (int j = 0; j < 4; j++)
        assert_int_equal(d.y[j], exp_x[j + 1]);
    assert_int_equal(d.y[4], 0);
    /* 25 words: BOS + 20 words, no room for EOS. */
    char longs[200] = "";
    for (int i = 0; i < 25; i++)
        strcat(longs, "cat ");
    assert_int_equal(fl_text_words_append(&d, v, longs, strlen(longs), 0), 0);
    assert_int_equal((int)d.x[20], 10002);
    for (int j = 0; j < 20; j++)
        assert_int_equal(d.y[20 + j], 2);
    fl_dataset_free(&d);

    assert_int_equal(fl_text_bow_init(&d), 0);
    assert_int_equal(d.dim, 10000);
    assert_int_equal(d.label_dim, 500);
    assert_int_equal(d.num_classes, 500); /* bowlr's output count */
    assert_int_equal(d.multi_hot, 1);
    assert_int_equal(fl_text_bow_append(&d, v, tags, "the the cat zebra", 17, "python|java", 11, 0),
                     0);
    assert_float_equal(d.x[0], 2.0f / 3.0f, 1e-6);
    assert_float_equal(d.x[1], 1.0f / 3.0f, 1e-6);
    assert_float_equal(d.x[2], 0.0f, 0);
    assert_int_equal(d.y[0], 0); /* c */
    assert_int_equal(d.y[1], 1); /* python */
    for (int j = 2; j < 500; j++)
        assert_int_equal(d.y[j], 0);
    fl_dataset_free(&d);
    fl_vocab_free(v);
    fl_vocab_free(tags);
}

static void test_text_sources(void **state)
{
    (void)state;
    char play[600], sub[600], path[800];
    snprintf(play, sizeof play, "%s/play.txt", dir);
    /* Two speakers, ROMEO twice; the preamble has no speaker and is dropped,
     * and headings are no speakers (nor part of the speech before them). */
    assert_int_equal(fl_test_write_str(play, "Act 1\n"
                                             "ACT II. SCENE I.\n"
                                             "ROMEO: But soft\n"
                                             "what light\n"
                                             "SCENE II. A garden\n"
                                             "Enter JULIET\n"
                                             "JULIET. Ay me\n"
                                             "ROMEO: She speaks\n"),
                     0);
    fl_data_spec_t s;
    fl_data_spec_init(&s);
    snprintf(s.source, sizeof s.source, "text:%s", play);
    fl_dataset_t d;
    fl_partition_t p;
    fl_dataset_init(&d);
    assert_int_equal(fl_data_spec_set(&s, "partition", "natural"), 0);
    assert_int_equal(fl_data_spec_load_partitioned(&s, "train", &d, &p), 0);
    assert_int_equal(d.num_groups, 2);
    assert_string_equal(d.group_names[0], "ROMEO");
    assert_string_equal(d.group_names[1], "JULIET");
    assert_int_equal(p.clients, 2);
    assert_int_equal(d.n, 2); /* each passage is one chunk, which goes to train */
    /* ROMEO's passage: "But soft\nwhat light\nShe speaks". */
    const char *romeo = "But soft\nwhat light\nShe speaks";
    assert_int_equal((int)d.x[0], FL_CHAR_BOS);
    for (size_t j = 0; j < strlen(romeo); j++)
        assert_int_equal((int)d.x[1 + j], fl_text_char_id((unsigned char)romeo[j]));
    assert_int_equal((int)d.x[1 + strlen(romeo)], FL_CHAR_EOS);
    fl_dataset_free(&d);
    fl_partition_free(&p);
    /* No test examples: a clear error. */
    assert_int_equal(fl_data_spec_load(&s, "test", &d), FL_EEMPTY);

    /* A directory: one client per file, 10 lines each -> 8 train, 2 test. */
    snprintf(sub, sizeof sub, "%s/posts", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    for (int f = 0; f < 3; f++) {
        char text[2000] = "";
        for (int l = 0; l < 10; l++) {
            char line[100];
            snprintf(line, sizeof line, "%s\tword%d common words here\n", f == 1 ? "java" : "c|go",
                     l % 4);
            strcat(text, line);
        }
        snprintf(path, sizeof path, "%s/user%d.txt", sub, 2 - f);
        assert_int_equal(fl_test_write_str(path, text), 0);
    }
    fl_data_spec_init(&s);
    snprintf(s.source, sizeof s.source, "text:%s", sub);
    s.view = FL_DATA_VIEW_WORDS;
    assert_int_equal(fl_data_spec_load(&s, "train", &d), 0);
    assert_int_equal(d.n, 24);
    assert_int_equal(d.num_groups, 3);
    assert_string_equal(d.group_names[0], "user0.txt");
    fl_dataset_free(&d);
    assert_int_equal(fl_data_spec_load(&s, "test", &d), 0);
    assert_int_equal(d.n, 6);
    /* "c|go\tword0 ...": the tab splits off the tags; words: 2..5 are the
     * frequent ones (common, here, words: 24 each) and the tags are words too. */
    assert_int_equal((int)d.x[0], 10002);
    fl_dataset_free(&d);
    s.view = FL_DATA_VIEW_BOW;
    assert_int_equal(fl_data_spec_load(&s, "train", &d), 0);
    assert_int_equal(d.n, 24);
    /* Tags: "c" and "go" 16 times each, java 8: c=0, go=1, java=2. user0 is f=2: c|go. */
    assert_int_equal(d.y[0], 1);
    assert_int_equal(d.y[1], 1);
    assert_int_equal(d.y[2], 0);
    float sum = 0;
    for (size_t j = 0; j < d.dim; j++)
        sum += d.x[j];
    assert_float_equal(sum, 1.0f, 1e-5);
    fl_dataset_free(&d);
    snprintf(s.source, sizeof s.source, "text:%s/missing", dir);
    assert_int_equal(fl_data_spec_load(&s, "train", &d), FL_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char_vocab),
        cmocka_unit_test(test_chars_sequences),
        cmocka_unit_test(test_vocab_words_bow),
        cmocka_unit_test(test_text_sources),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
