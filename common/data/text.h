/* text: text as examples for the language models.
 *
 * Characters (charlstm, the paper's Shakespeare task). The vocabulary is the
 * one of the paper's experiment code (TensorFlow Federated's Shakespeare
 * task): 86 characters plus four special ids, 90 in all, which is exactly the
 * 90-way embedding and output of `charlstm`:
 *   0        pad (targets equal to 0 are masked out of loss and accuracy)
 *   1 .. 86  the characters of FL_CHAR_SET, in that order
 *   87       out of vocabulary (any other byte; one per UTF-8 code point)
 *   88       beginning of a passage, 89 end of a passage
 * The 80-symbol LEAF set of data-formats.md (newline, space, !"&'(),-.,
 * digits, :;>?, A-Z, [], a-z, }) is covered except '>' and '}', which map to
 * the OOV id: 1 + 80 + 3 special ids would be 84 ids, not the paper's 90.
 * A passage becomes examples the TFF way: BOS + ids + EOS, cut into chunks of
 * FL_CHAR_SEQ + 1, the last padded with 0; x = chunk[0..80) as floats,
 * y = chunk[1..81) (label_dim 80). A LEAF window (80 characters + the next)
 * becomes x = its ids, y = ids shifted by one with the next character last.
 *
 * Words (wordlstm, Stack Overflow next-word prediction): ids
 *   0 pad, 1 .. V the V = 10,000 most frequent words of the training split
 *   (ties broken by byte order), V+1 OOV, V+2 BOS, V+3 EOS  (10,004 ids).
 * A sentence becomes BOS + its first 20 word ids (+ EOS if there is room),
 * padded to 21; x = [0..20), y = [1..21) (label_dim 20).
 *
 * Bag of words (bowlr, Stack Overflow tag prediction): x = the frequencies of
 * the V vocabulary words among the example's words (OOV words not counted;
 * sums to 1 when any word is known), y = multi-hot over the 500 most frequent
 * tags (label_dim 500).
 *
 * text:PATH sources. A directory: one client per regular file (sorted by
 * name). A file: one client per speaker when lines start a speaker's turn
 * (an upper-case name of 2+ letters followed by ':' or '.', as in play
 * scripts; the headings "ACT ..." and "SCENE ..." end a turn, and lines
 * outside any turn are dropped), else the whole file is one client. Each client's examples are
 * cut 80/20 in order into train and test. The words view treats each line as
 * a sentence; the bow view reads lines "tag1|tag2<TAB>words". */
#ifndef FL_TEXT_H
#define FL_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"
#include "common/data/spec.h"

#define FL_CHAR_SET                                                                           \
    "dhlptx@DHLPTX $(,048cgkoswCGKOSW[_#'/37;?bfjnrvzBFJNRVZ\"&*.26:\naeimquyAEIMQUY]!%)-159\r"
#define FL_CHAR_PAD 0
#define FL_CHAR_OOV 87
#define FL_CHAR_BOS 88
#define FL_CHAR_EOS 89
#define FL_CHAR_VOCAB 90
#define FL_CHAR_SEQ 80

#define FL_WORD_VOCAB 10000 /* most frequent words kept */
#define FL_WORD_IDS (FL_WORD_VOCAB + 4)
#define FL_WORD_SEQ 20
#define FL_TAG_VOCAB 500
#define FL_TEXT_MAX_WORD 256 /* longer tokens are cut to this many bytes */

/* The id of one byte (its character, or FL_CHAR_OOV). */
int fl_text_char_id(unsigned char c);

/* The character of an id in 1..86, or 0 for special ids. */
char fl_text_char_of(int id);

/* Sets up the empty *d for character sequences (x: 80 floats, y: 80 targets,
 * 90 classes) with group ids on. Returns 0, FL_ENOMEM. */
int fl_text_chars_init(fl_dataset_t *d);

/* Appends the examples of one passage (TFF style, see above) under group
 * `group`. Returns 0, FL_ENOMEM, FL_ERANGE. */
int fl_text_chars_append(fl_dataset_t *d, const char *text, size_t len, uint32_t group);

/* Appends one LEAF window: 80 characters x and the next character `next`
 * (UTF-8, one code point). A window that is not exactly 80 characters is
 * FL_EFORMAT. */
int fl_text_leaf_window(fl_dataset_t *d, const char *x, const char *next, uint32_t group);

/* A word (or tag) vocabulary: the most frequent tokens of what was counted. */
typedef struct fl_vocab fl_vocab_t;

/* Creates an empty counting vocabulary. Returns NULL on allocation failure. */
fl_vocab_t *fl_vocab_new(void);

/* Frees it. Accepts NULL. */
void fl_vocab_free(fl_vocab_t *v);

/* Counts the tokens of text, split on `seps` (e.g. " \t\n" or "|").
 * Returns 0 or FL_ENOMEM. */
int fl_vocab_count(fl_vocab_t *v, const char *text, size_t len, const char *seps);

/* Freezes the vocabulary to its `keep` most frequent tokens (ties by byte
 * order), which get ids 0..keep-1 in that order. Returns 0 or FL_ENOMEM. */
int fl_vocab_finish(fl_vocab_t *v, size_t keep);

/* The id of a token after fl_vocab_finish, or -1 if it was not kept. */
long fl_vocab_id(const fl_vocab_t *v, const char *tok, size_t len);

/* The number of kept tokens, and the token of id i (NULL out of range). */
size_t fl_vocab_size(const fl_vocab_t *v);
const char *fl_vocab_token(const fl_vocab_t *v, size_t i);

/* Sets up the empty *d for word sequences (x: 20, y: 20, 10,004 classes). */
int fl_text_words_init(fl_dataset_t *d);

/* Appends one sentence (word sequence) encoded with the frozen vocabulary. */
int fl_text_words_append(fl_dataset_t *d, const fl_vocab_t *words, const char *text, size_t len,
                         uint32_t group);

/* Sets up the empty *d for bag of words (x: 10,000, y: 500 multi-hot,
 * num_classes 500, multi_hot 1). */
int fl_text_bow_init(fl_dataset_t *d);

/* Appends one example: the words of `text` (space-separated) as frequencies
 * and the tags of `tags` (separated by '|') as multi-hot. */
int fl_text_bow_append(fl_dataset_t *d, const fl_vocab_t *words, const fl_vocab_t *tags,
                       const char *text, size_t tlen, const char *tagtext, size_t taglen,
                       uint32_t group);

/* Loads split "train" or "test" of a text:PATH source (see above) in the
 * given view (auto = chars). Returns 0 or an FL_E* code, logged. */
int fl_text_load(const char *path, const char *split, fl_data_view_t view, fl_dataset_t *d);

#endif
