/* saserver: the server's side of a secure-aggregation round (samsg.h has
 * the phases), without sockets: it collects each phase's messages, says
 * what to forward to whom, sums the masked inputs as they come (only their
 * running sum is kept: no single masked input is stored), and at the end
 * rebuilds the secrets of the round's parties from the revealed shares and
 * removes the masks.
 *
 * Each phase's set of parties (U1..U4) is what arrived before the caller
 * ended the phase (at its deadline or when all answered); a message for a
 * party outside the previous set, a duplicate or a late one is refused
 * (FL_ESTATE, FL_EEXIST, FL_EPROTO) without changing anything.
 * A revealed share that does not match the commitment its dealer made is
 * dropped and its holder counted as lying (fl_saserver_stats); the secret
 * is rebuilt from t checked shares. fl_saserver_finish gives the sum only
 * when every secret it needs was rebuilt and checked (an s key against its
 * advertised public key, a seed against its commitment); otherwise the
 * round is abandoned (FL_ECANCELED: too few shares left; FL_EAUTH: a
 * dealer's shares did not agree with its own commitments) and nothing is
 * unmasked. Not thread-safe: one round, calls on one thread (the caller
 * may run add_masked on a worker thread if it serializes them). */
#ifndef FL_SASERVER_H
#define FL_SASERVER_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/pk.h>

#include "common/secagg/samsg.h"

typedef struct fl_saserver fl_saserver_t;

typedef struct {
    uint32_t n, u1, u2, u3, u4;  /* parties at each phase's end */
    uint32_t bad_adverts;        /* adverts refused (bad signature) */
    uint32_t bad_reveals;        /* revealed shares that failed their commitment */
    uint32_t liars;              /* parties that revealed at least one such share */
    uint32_t rebuilt_b, rebuilt_s; /* secrets rebuilt at finish */
} fl_saserver_stats_t;

int fl_saserver_create(const fl_samsg_setup_t *setup, fl_sacrypto_rng_t *rng, fl_saserver_t **out);
void fl_saserver_free(fl_saserver_t *s);

/* The graph degree (room needed for the lists below). */
uint32_t fl_saserver_degree(const fl_saserver_t *s);

/* Phase 1. pk is the advertiser's certificate key, or NULL to leave the
 * signature to the clients; a bad signature is refused (FL_EAUTH) and
 * counted. FL_EPROTO when a->id is out of range; FL_EEXIST for a second. */
int fl_saserver_add_advert(fl_saserver_t *s, const fl_samsg_advert_t *a, mbedtls_pk_context *pk);
/* Ends phase 1; FL_ECANCELED when fewer than t + 1 parties advertised. */
int fl_saserver_end_adverts(fl_saserver_t *s);
/* The adverts of id's neighbours in U1 (out: room for the degree); returns
 * the count (0 when id is not in U1). */
size_t fl_saserver_adverts_for(const fl_saserver_t *s, uint32_t id, fl_samsg_advert_t *out);

/* Phase 2: id's shares (one to each of its neighbours in U1, none else:
 * FL_EPROTO otherwise) and its seed commitment. */
int fl_saserver_add_shares(fl_saserver_t *s, uint32_t id, const fl_samsg_share_t *sh, size_t n,
                           const uint8_t commit_seed[32]);
int fl_saserver_end_shares(fl_saserver_t *s);
/* The ciphertexts addressed to id by its neighbours in U2 (commitments
 * zeroed: they are the server's); returns the count. */
size_t fl_saserver_shares_for(const fl_saserver_t *s, uint32_t id, fl_samsg_share_t *out);

/* Phase 3: id's masked input (setup->dim words), added to the running sum. */
int fl_saserver_add_masked(fl_saserver_t *s, uint32_t id, const uint32_t *y);
int fl_saserver_end_masked(fl_saserver_t *s);
/* U3 in increasing order (out: room for n); returns the count. */
size_t fl_saserver_survivors(const fl_saserver_t *s, uint32_t *out);

/* Phase 4: the shares id revealed. */
int fl_saserver_add_reveal(fl_saserver_t *s, uint32_t id, const fl_samsg_reveal_t *r, size_t n);
/* Rebuilds, unmasks, and writes the sum of U3's inputs (dim words) to sum.
 * Callable once. */
int fl_saserver_finish(fl_saserver_t *s, uint32_t *sum);

void fl_saserver_stats(const fl_saserver_t *s, fl_saserver_stats_t *out);

#endif
