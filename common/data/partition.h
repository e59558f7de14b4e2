/* partition: splitting a centralized dataset into federated clients.
 *
 * Kinds (the text form is what --partition takes):
 *   iid            shuffle, deal out equal shares (sizes differ by at most 1)
 *   dirichlet:A    the paper's label-Dirichlet rule: client c draws class
 *                  proportions q ~ Dir(A * 1_C) and takes its share one example
 *                  at a time, drawing a class from q and an unused example of
 *                  that class; an exhausted class is removed and q renormalised
 *   dirichlet:A,B  two-level ("pachinko", the paper's CIFAR-100 split): coarse
 *                  proportions ~ Dir(A), and within each coarse class fine
 *                  proportions ~ Dir(B); needs a dataset with coarse labels
 *   shards[:S]     McMahan et al.: sort by label, cut into S*K equal shards
 *                  (S = 2 by default), give each client S random shards; the
 *                  N mod (S*K) examples past the last whole shard are unused
 *   natural        one client per group (LEAF user, TFF client id, speaker)
 *
 * Everything is deterministic from the seed (the FL_RNG_PARTITION stream of
 * (seed, K)), and no example is given to two clients. iid and dirichlet give
 * every example to some client (shares floor(N/K) or one more). */
#ifndef FL_PARTITION_H
#define FL_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"

typedef enum {
    FL_PARTITION_NONE = 0, /* no split: one client holding everything */
    FL_PARTITION_IID,
    FL_PARTITION_DIRICHLET,
    FL_PARTITION_SHARDS,
    FL_PARTITION_NATURAL,
} fl_partition_kind_t;

typedef struct {
    fl_partition_kind_t kind;
    double alpha;       /* dirichlet: concentration (coarse level when alpha_fine > 0) */
    double alpha_fine;  /* dirichlet two-level: fine concentration, 0 = one level */
    int shards;         /* shards per client */
} fl_partition_spec_t;

/* The result: client c holds examples index[offsets[c] .. offsets[c+1]). */
typedef struct {
    size_t clients;
    size_t *offsets;  /* clients + 1 entries, owned */
    uint32_t *index;  /* offsets[clients] example indices, owned */
} fl_partition_t;

/* A partition's shape, for `data inspect` and the tests. */
typedef struct {
    size_t min_size, max_size;
    double mean_size;
    size_t used;             /* examples given to some client */
    double mean_labels;      /* distinct labels per client, averaged over clients */
    size_t max_labels;       /* the most distinct labels any client holds */
    double mean_tv;          /* mean total-variation distance between a client's label
                              * distribution and the whole dataset's (0 = IID, 1 = disjoint) */
} fl_partition_stats_t;

/* Parses "iid", "dirichlet:0.1", "dirichlet:0.1,10", "shards", "shards:2",
 * "natural" or "none" into *out. Returns 0 or FL_EINVAL (with a log line). */
int fl_partition_parse(const char *text, fl_partition_spec_t *out);

/* Writes the canonical text form of *spec into buf (always NUL-terminated). */
void fl_partition_format(const fl_partition_spec_t *spec, char *buf, size_t size);

/* Splits d into `clients` clients (natural: 0 = one client per group, else
 * the first `clients` groups). *out must be zeroed; free it with
 * fl_partition_free. Returns 0, FL_EINVAL (bad arguments, labels out of range,
 * natural without groups, two-level without coarse labels), FL_EUNSUPPORTED
 * (a label-based kind on sequence or multi-label targets), FL_ERANGE (more
 * clients than examples or shards), FL_ENOMEM. */
int fl_partition_make(const fl_dataset_t *d, const fl_partition_spec_t *spec, size_t clients,
                      uint64_t seed, fl_partition_t *out);

/* Frees the arrays of *p and zeroes it. Accepts NULL. */
void fl_partition_free(fl_partition_t *p);

/* The indices of client c (a view into p, valid while p lives) and their count. */
const uint32_t *fl_partition_client(const fl_partition_t *p, size_t c, size_t *count);

/* Fills *st for partition p of d; label statistics use y[i * label_dim]
 * (the class for classification data). Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_partition_stats(const fl_dataset_t *d, const fl_partition_t *p, fl_partition_stats_t *st);

#endif
