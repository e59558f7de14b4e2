/* graph: the SecAgg+ communication graph (Bell et al., CCS 2020) and the
 * choice of its degree and threshold.
 *
 * Each of the round's n parties exchanges key shares and pairwise masks with
 * its k neighbours only, instead of with all n-1 others. The graph is a
 * Harary graph on a random ring: the parties are placed on a ring in the
 * order of a permutation drawn from the round's public graph seed, and each
 * is joined to the k/2 nearest on either side. When k >= n-1 the graph is
 * complete (the original protocol of Bonawitz et al., CCS 2017).
 *
 * fl_sagraph_choose derives (k, t) from the configured tolerances: a
 * fraction `dropout` of the parties may vanish at any phase, a fraction
 * `corrupt` may collude with the server. It returns the smallest even k (and
 * a t for it) such that, each party's neighbourhood being k draws:
 *   - correctness: P[fewer than t of a party's k neighbours survive], over
 *     all n parties, is at most 2^-eta;
 *   - privacy: the server learns both secrets of a party only from 2t-k
 *     corrupt neighbours (an honest neighbour reveals one of the two, and
 *     2t > k): P[Binomial(k, corrupt) >= 2t-k], over all parties, is at most
 *     2^-sigma; and the ring keeps the honest survivors connected (no run of
 *     k/2 removed parties) except with probability n (dropout+corrupt)^(k/2)
 *     <= 2^-sigma.
 * When no k < n-1 does, the graph is complete with t = floor(n/2) + 1 (of
 * n - 1 neighbours) raised to cover the corrupt ones, and the bounds are the
 * classic protocol's counts. Pure functions; thread-safe. */
#ifndef FL_SAGRAPH_H
#define FL_SAGRAPH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t n;         /* parties (ids 0..n-1) */
    uint32_t k;         /* neighbours of each party (n - 1 when complete) */
    uint32_t *pos;      /* pos[id]: the place of id on the ring */
    uint32_t *at;       /* at[place]: the id at a place */
} fl_sagraph_t;

typedef struct {
    uint32_t k, t;
    int complete;       /* 1: k = n - 1 */
    double log2_fail_correct;  /* log2 of the bound on a failed reconstruction */
    double log2_fail_private;  /* log2 of the bound on a breach of privacy */
} fl_sagraph_choice_t;

/* Picks k and t for n parties (2 <= n), tolerances in [0, 1) with
 * dropout + corrupt < 1/2, and security parameters sigma, eta (bits, > 0).
 * FL_EINVAL for arguments out of range; FL_ERANGE when even the complete
 * graph cannot meet them (n too small for the tolerances: fewer than t
 * neighbours survive the tolerated dropout), or when only a complete graph
 * of more than 4096 neighbours would. */
int fl_sagraph_choose(uint32_t n, double dropout, double corrupt, double sigma, double eta,
                      fl_sagraph_choice_t *out);

/* Builds the graph of n parties with degree k (even, or >= n-1 for the
 * complete graph) from a seed. FL_EINVAL for n < 2, k == 0 or an odd
 * k < n - 1; FL_ENOMEM. */
int fl_sagraph_init(fl_sagraph_t *g, uint32_t n, uint32_t k, uint64_t seed);
void fl_sagraph_free(fl_sagraph_t *g);

/* 1 when u and v (u != v, both < n) are neighbours, else 0. */
int fl_sagraph_adjacent(const fl_sagraph_t *g, uint32_t u, uint32_t v);

/* Writes u's neighbours in increasing id order to out (room for k ids);
 * returns their count (k, or n - 1 when complete). */
uint32_t fl_sagraph_neighbours(const fl_sagraph_t *g, uint32_t u, uint32_t *out);

#endif
