/* samsg: the messages of one secure-aggregation round and the bytes every
 * party hashes, signs and authenticates, shared by the client (saclient)
 * and the server (saserver) state machines.
 *
 * A round has n parties with ids 0..n-1 (the server's selection in a fixed
 * order) and runs four phases (Bonawitz et al. CCS 2017, with the SecAgg+
 * graph of Bell et al. CCS 2020; docs/secure-aggregation.md):
 *   1. advertise: each party sends two X25519 public keys (c: share
 *      transport, s: pairwise masks), signed with its certificate's key over
 *      the round's context, its id and its name; U1 = those who did.
 *   2. share keys: each party in U1 gets its neighbours' adverts, checks the
 *      signatures, and sends each neighbour (through the server) an
 *      encrypted Shamir share of its s secret key and of its self-mask seed
 *      b, plus (to the server only) a hash commitment to each share and one
 *      to b; U2 = those who did.
 *   3. masked input: each party in U2 gets the ciphertexts of its
 *      neighbours in U2 and sends x + PRG(b) + sum_v +-PRG(s_uv); U3 =
 *      those who did.
 *   4. unmask: each party in U3 gets U3 and reveals, for each neighbour v in
 *      U2, its share of b_v when v is in U3 and of s_v otherwise (never
 *      both); the server checks each share against its commitment,
 *      rebuilds the secrets from t shares and removes the masks.
 * The context digest binds every signature, tag and key to the run, round
 * and the round's parameters, so nothing is replayed across rounds.
 * Pure functions; thread-safe. */
#ifndef FL_SAMSG_H
#define FL_SAMSG_H

#include <stddef.h>
#include <stdint.h>

#include "common/secagg/sacrypto.h"
#include "common/secagg/shamir.h"

#define FL_SAMSG_NAME_MAX 64
/* Limits on a round's setup, so that a setup from the wire never makes a
 * party allocate without bound: parties, graph degree, words per input. */
#define FL_SAMSG_MAX_PARTIES 1000000u
#define FL_SAMSG_MAX_DEGREE 4096u
#define FL_SAMSG_MAX_DIM (1u << 28)
/* A share's plaintext: from, to (4 bytes each), the s-key share and the
 * seed share, each in fl_shamir_share_encode's form for a 32-byte secret. */
#define FL_SAMSG_SHARE_LEN (4 + 4 * ((FL_SACRYPTO_KEY + 2) / 3))
#define FL_SAMSG_PLAIN (8 + 2 * FL_SAMSG_SHARE_LEN)
#define FL_SAMSG_CIPHER (FL_SAMSG_PLAIN + FL_SACRYPTO_TAG)

/* The round's public parameters, the same for every party. */
typedef struct {
    uint64_t run_id;
    uint32_t round;
    uint32_t n;          /* parties */
    uint32_t k;          /* graph degree (n - 1: complete) */
    uint32_t t;          /* Shamir threshold, k/2 < t <= k */
    uint64_t graph_seed;
    uint32_t dim;        /* words in a masked input */
} fl_samsg_setup_t;

typedef struct {
    uint32_t id;
    char name[FL_SAMSG_NAME_MAX + 1];
    uint8_t c_pk[FL_SACRYPTO_KEY];
    uint8_t s_pk[FL_SACRYPTO_KEY];
    uint8_t sig[FL_SACRYPTO_SIG_MAX];
    size_t sig_len;
} fl_samsg_advert_t;

/* One encrypted share from one party to a neighbour. The commitments go to
 * the server only (it does not forward them). */
typedef struct {
    uint32_t from, to;
    uint8_t ct[FL_SAMSG_CIPHER];
    uint8_t commit_s[32];
    uint8_t commit_b[32];
} fl_samsg_share_t;

enum { FL_SAMSG_REVEAL_B = 1, FL_SAMSG_REVEAL_S = 2 };

/* One share revealed at unmasking: the holder's share of owner's b (owner
 * survived) or of owner's s key (owner dropped). */
typedef struct {
    uint32_t owner;
    uint32_t kind;
    fl_shamir_share_t share;
} fl_samsg_reveal_t;

/* FL_EINVAL unless 2 <= n <= FL_SAMSG_MAX_PARTIES, 1 <= dim <=
 * FL_SAMSG_MAX_DIM, k even or n - 1, k <= min(n - 1, FL_SAMSG_MAX_DEGREE)
 * and k/2 < t <= k. */
int fl_samsg_setup_check(const fl_samsg_setup_t *s);

/* SHA-256 over a label and the setup's fields: the round's context. */
void fl_samsg_context(const fl_samsg_setup_t *s, uint8_t out[32]);

/* The digest an advert's signature covers (context, id, name, both keys). */
void fl_samsg_advert_digest(const uint8_t ctx[32], const fl_samsg_advert_t *a, uint8_t out[32]);

/* The commitment to one share (kind FL_SAMSG_REVEAL_B or _S) of owner's
 * secret held by holder, and the commitment to owner's seed b. */
void fl_samsg_commit_share(const uint8_t ctx[32], uint32_t kind, uint32_t owner, uint32_t holder,
                           const fl_shamir_share_t *sh, uint8_t out[32]);
void fl_samsg_commit_seed(const uint8_t ctx[32], uint32_t owner, const uint8_t b[FL_SACRYPTO_KEY],
                          uint8_t out[32]);

/* The share-transport nonce of (from, to) and the pair's info for key
 * derivation (the smaller id first, so both ends derive the same key). */
void fl_samsg_nonce(uint32_t from, uint32_t to, uint8_t out[FL_SACRYPTO_NONCE]);
void fl_samsg_pair_info(uint32_t u, uint32_t v, uint8_t out[8]);

#endif
