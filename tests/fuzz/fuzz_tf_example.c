/* libFuzzer target: serialized tf.train.Example blobs, decoded by
 * protobuf-c and converted for every dataset kind (EMNIST, Shakespeare,
 * Stack Overflow words and bag of words, CIFAR-100). */
#include <stdlib.h>
#include <string.h>

#include "common/data/dataset.h"
#include "common/data/text.h"
#include "common/data/tff.h"
#include "tests/fuzz/fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fl_vocab_t *words, *tags;

static void vocabs(void)
{
    if (words)
        return;
    words = fl_vocab_new();
    tags = fl_vocab_new();
    const char *w = "how to sort a list in python", *t = "python|list|c";
    if (!words || !tags || fl_vocab_count(words, w, strlen(w), " ") ||
        fl_vocab_count(tags, t, strlen(t), "|") || fl_vocab_finish(words, FL_WORD_VOCAB) ||
        fl_vocab_finish(tags, FL_TAG_VOCAB))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fl_fuzz_quiet();
    vocabs();
    fl_tff_kind_t kind;
    (void)fl_tff_detect(data, size, &kind);
    static const struct {
        fl_tff_kind_t kind;
        fl_data_view_t view;
    } all[] = {{FL_TFF_EMNIST, FL_DATA_VIEW_AUTO},
               {FL_TFF_SHAKESPEARE, FL_DATA_VIEW_CHARS},
               {FL_TFF_STACKOVERFLOW, FL_DATA_VIEW_WORDS},
               {FL_TFF_STACKOVERFLOW, FL_DATA_VIEW_BOW},
               {FL_TFF_CIFAR100, FL_DATA_VIEW_AUTO}};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        fl_tff_ctx_t ctx = {.kind = all[k].kind, .view = all[k].view, .words = words,
                            .tags = tags, .where = "fuzz"};
        fl_dataset_t d;
        fl_dataset_init(&d);
        if (fl_tff_setup(&ctx, 0, &d))
            abort();
        if (fl_tff_append(&ctx, data, size, 0, &d) == 0)
            for (size_t i = 0; i < d.n * d.label_dim; i++)
                if (d.y[i] < 0 || d.y[i] >= d.num_classes)
                    abort();
        fl_dataset_free(&d);
    }
    return 0;
}
