/* tff: reader for TensorFlow Federated's SQLite datasets (federated EMNIST,
 * Shakespeare, Stack Overflow, CIFAR-100).
 *
 * A file has tables examples(split_name, client_id, serialized_example_proto)
 * and client_metadata(client_id, split_name, num_examples). A split's clients
 * are its distinct client ids in client_metadata, sorted by byte order; client
 * i of the split is group i, so `--partition natural --client-index i` is
 * that TFF client. Each blob is a tf.train.Example (proto/tf_example.proto,
 * decoded by protobuf-c); what it holds decides the dataset:
 *   pixels (784 floats) + label          EMNIST: {1, 28, 28}, 10 classes for
 *                                        digits_only_* splits, else 62
 *   snippets (bytes)                     Shakespeare: each snippet becomes
 *                                        character sequences (common/data/text.h)
 *   tokens, title, tags (bytes)          Stack Overflow: words view (tokens as
 *                                        sentences) or bow view (tokens + title,
 *                                        tags); vocabularies from the train split
 *   image (3,072 int64, HWC) + label     CIFAR-100: CHW floats in [0, 1], fine
 *     + coarse_label                     label as y, coarse in d->coarse
 * A blob that is not an Example, lacks a feature or has one of the wrong type
 * or size is refused naming the file, client and feature.
 *
 * Splits: `tff:FILE` uses "train" (or "all_train" for EMNIST files that have
 * no "train"); `tff:FILE:SPLIT` names the training split. The test split is
 * the training split's name with "train" replaced by "test". */
#ifndef FL_TFF_H
#define FL_TFF_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/data/spec.h"
#include "common/data/text.h"

/* The largest serialized example accepted. */
#define FL_TFF_MAX_BLOB ((size_t)64 << 20)

typedef enum {
    FL_TFF_UNKNOWN = 0,
    FL_TFF_EMNIST,
    FL_TFF_SHAKESPEARE,
    FL_TFF_STACKOVERFLOW,
    FL_TFF_CIFAR100,
} fl_tff_kind_t;

/* What an example's conversion needs besides the blob. */
typedef struct {
    fl_tff_kind_t kind;
    fl_data_view_t view;     /* Stack Overflow: FL_DATA_VIEW_WORDS or FL_DATA_VIEW_BOW */
    const fl_vocab_t *words; /* Stack Overflow vocabularies (frozen) */
    const fl_vocab_t *tags;
    const char *where;       /* "file: client X" for log lines */
} fl_tff_ctx_t;

/* Decides the kind of dataset from one serialized Example. Returns 0,
 * FL_EFORMAT (not an Example, or no known feature set). */
int fl_tff_detect(const uint8_t *blob, size_t len, fl_tff_kind_t *kind);

/* Decodes one serialized Example and appends its example(s) to *d (set up
 * by fl_tff_setup for the same kind) under group `group`. Returns 0,
 * FL_EFORMAT (logged with ctx->where), FL_ETOOBIG, FL_ENOMEM. */
int fl_tff_append(const fl_tff_ctx_t *ctx, const uint8_t *blob, size_t len, uint32_t group,
                  fl_dataset_t *d);

/* Sets up the empty *d for examples of ctx->kind (digits: EMNIST with 10
 * classes instead of 62). Returns 0, FL_EINVAL, FL_ENOMEM. */
int fl_tff_setup(const fl_tff_ctx_t *ctx, int digits, fl_dataset_t *d);

/* Loads split "train" or "test" of the source "FILE[:SPLIT]" into the empty
 * *d with one group per TFF client. Returns 0 or an FL_E* code, logged. */
int fl_tff_load(const char *source, const char *split, fl_data_view_t view, fl_dataset_t *d);

/* Loads only client `index` (in sorted id order) of the split, streaming:
 * what a device (or a Stack Overflow client among 342,477) needs. */
int fl_tff_load_client(const char *source, const char *split, fl_data_view_t view, size_t index,
                       fl_dataset_t *d);

#endif
