/* spec: the one data specification every command takes, and the function
 * that turns it into examples.
 *
 * Command-line form (the same options in train, eval, data inspect, the
 * device client and the fleet):
 *   --data SOURCE         fmnist | idx:DIR | cifar10:DIR | cifar100:DIR |
 *                         leaf:DIR | tff:FILE[:SPLIT] | text:PATH   (default fmnist)
 *   --data-view VIEW      auto | chars | words | bow: how text becomes examples
 *                         (auto: chars for Shakespeare-like text, words for
 *                         Stack Overflow); see common/data/text.h
 *   --partition P         none | iid | dirichlet:A[,B] | shards[:S] | natural
 *                         (see common/data/partition.h; default none, or
 *                         natural for sources with users when --clients is given)
 *   --clients N           how many clients the training split is divided into
 *   --client-index I      load only client I's share (0-based)
 *   --data-seed S         the partition seed (default 0)
 *
 * Each option is also accepted with underscores (--client_index), as every
 * flag is (common/base/cli.h). A typical caller: fl_data_spec_init, passes
 * fl_data_spec_opts as the second option table of its fl_cli_init and hands
 * each of their ids to fl_data_spec_apply, then
 * fl_data_spec_load(spec, "train", &d) and fl_data_spec_load(spec, "test", &t).
 * Everything is deterministic: the same spec gives the same examples on any
 * machine, which is what lets a device pick its own share by index. */
#ifndef FL_SPEC_H
#define FL_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "common/base/cli.h"
#include "common/data/dataset.h"
#include "common/data/partition.h"

#define FL_DATA_SPEC_MAX 4096

typedef enum {
    FL_DATA_VIEW_AUTO = 0,
    FL_DATA_VIEW_CHARS, /* char ids, sequences of 80, per-step next-char targets */
    FL_DATA_VIEW_WORDS, /* word ids, sequences of 20, per-step next-word targets */
    FL_DATA_VIEW_BOW,   /* bag of words (10,000) -> multi-hot tags (500) */
} fl_data_view_t;

typedef struct {
    char source[FL_DATA_SPEC_MAX]; /* the --data text */
    fl_data_view_t view;
    fl_partition_spec_t partition;
    int partition_set;             /* --partition was given explicitly */
    size_t clients;                /* 0: the split is not divided */
    long client_index;             /* -1: the whole split (or every client) */
    uint64_t seed;
} fl_data_spec_t;

/* Sets the defaults: --data fmnist, no partition, whole split, seed 0. */
void fl_data_spec_init(fl_data_spec_t *s);

/* Applies one option by name ("data", "data-view", "partition", "clients",
 * "client-index", "data-seed"; leading dashes allowed, underscores as
 * dashes). Returns 0, FL_ENOTFOUND (not a data option; nothing logged) or
 * FL_EINVAL (a bad value, logged with the option's name). */
int fl_data_spec_set(fl_data_spec_t *s, const char *name, const char *value);

/* The options above as a table for fl_cli_init; their ids are
 * FL_DATA_SPEC_OPT_ID and the next five, above any command's own. */
#define FL_DATA_SPEC_OPT_ID 1000
extern const fl_cli_opt_t fl_data_spec_opts[];

/* Applies the data option fl_cli_next just returned (c->what, c->val).
 * Returns 0, or FL_EINVAL after printing the usage error (fl_cli_bad_value). */
int fl_data_spec_apply(fl_data_spec_t *s, const fl_cli_t *c);

/* The usage lines for the options above, for a command's --help. */
const char *fl_data_spec_usage(void);

/* Checks the combination (client index below clients, a known source
 * prefix, ...). Returns 0 or FL_EINVAL with a log line. */
int fl_data_spec_validate(const fl_data_spec_t *s);

/* Loads `split` ("train" or "test") of the source into the empty *out.
 * For "train" with clients > 0 and client_index >= 0, *out holds only that
 * client's share. "test" is always the whole test split (central
 * evaluation). Returns 0 or an FL_E* code; every failure is logged with the
 * file and the problem, and leaves *out empty. */
int fl_data_spec_load(const fl_data_spec_t *s, const char *split, fl_dataset_t *out);

/* Loads the whole `split` into *all and, when the spec asks for clients,
 * partitions it into *parts (otherwise parts->clients is 0). For fleets and
 * `data inspect`, which want every client from one read. Both outputs must
 * be empty/zeroed; on failure both are left empty. */
int fl_data_spec_load_partitioned(const fl_data_spec_t *s, const char *split, fl_dataset_t *all,
                                  fl_partition_t *parts);

#endif
