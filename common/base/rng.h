/* rng: reproducible pseudo-random streams (xoshiro256**, seeded by splitmix64).
 *
 * Every random choice in fedopt (client selection, data partitions, weight
 * init, shuffling, dropout masks, chaos in the fleet) draws from a stream
 * derived from one user seed and a tuple of ids, e.g. (run, round, client,
 * purpose). Two streams with different tuples are statistically independent,
 * and a stream depends only on its tuple, never on how many numbers other
 * streams drew: that is what lets a resumed server continue as if nothing
 * happened. The generator state is a plain value; copy it to fork it. */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} fl_rng_t;

/* Purposes: the last element of a stream tuple, so that the same (run, round,
 * client) can feed independent streams for different jobs. */
enum {
    FL_RNG_SELECT = 1,    /* server: choosing the round's clients */
    FL_RNG_INIT = 2,      /* model weight initialisation */
    FL_RNG_SHUFFLE = 3,   /* data order within an epoch */
    FL_RNG_DROPOUT = 4,   /* dropout masks */
    FL_RNG_PARTITION = 5, /* splitting a dataset into clients */
    FL_RNG_CHAOS = 6,     /* fleet fault injection */
    FL_RNG_AUGMENT = 7,   /* data augmentation (crops, flips) */
    FL_RNG_FEDEVAL = 8,   /* server: choosing a federated evaluation's clients */
    FL_RNG_SECAGG = 9,    /* server: a secure round's (public) graph seed */
};

/* Seeds *r from `seed` alone. */
void fl_rng_seed(fl_rng_t *r, uint64_t seed);

/* Seeds *r from `seed` and the ids tuple (n ids, n may be 0): the stream for
 * e.g. {run, round, client, FL_RNG_SHUFFLE}. */
void fl_rng_stream(fl_rng_t *r, uint64_t seed, const uint64_t *ids, size_t n);

/* Next 64 random bits. */
uint64_t fl_rng_u64(fl_rng_t *r);

/* Next 32 random bits. */
uint32_t fl_rng_u32(fl_rng_t *r);

/* Fills out[0..n) with the next n values of fl_rng_u32, exactly the values
 * and the final state that n calls would give, several times faster: the
 * state stays in registers across the loop (used where one draw per element
 * of a large buffer is needed, e.g. dropout masks). The caller owns out. */
void fl_rng_fill_u32(fl_rng_t *r, uint32_t *out, size_t n);

/* Uniform integer in [0, bound) without modulo bias (bound > 0; 0 gives 0). */
uint64_t fl_rng_below(fl_rng_t *r, uint64_t bound);

/* Uniform double in [0, 1) with 53 random bits. */
double fl_rng_uniform(fl_rng_t *r);

/* Standard normal deviate (Box-Muller; one value per call, no cached state). */
double fl_rng_normal(fl_rng_t *r);

/* Gamma(shape, 1) deviate for shape > 0 (Marsaglia-Tsang); used for
 * Dirichlet draws. Returns 0 for shape <= 0. */
double fl_rng_gamma(fl_rng_t *r, double shape);

/* Fisher-Yates shuffle of n uint32 indices in place. */
void fl_rng_shuffle_u32(fl_rng_t *r, uint32_t *a, size_t n);

#endif
