/* saclient: one party's side of a secure-aggregation round (samsg.h has
 * the phases), without sockets: each call takes what the server forwarded
 * and returns what to send back.
 *
 * The party refuses (and the caller abandons its part of the round) when
 * what the server forwards is inconsistent: an advert whose signature does
 * not verify with that party's certificate key (a substituted key,
 * FL_EAUTH), a party that is not a neighbour, a duplicate, a message out of
 * phase (FL_ESTATE), or fewer than t neighbours left (FL_ECANCELED: the
 * round cannot finish, and revealing anything would only help a server
 * that lies about who dropped). A ciphertext that does not decrypt is not
 * fatal: that neighbour's share is just not revealed later
 * (fl_saclient_bad_shares counts them). Unmasking answers once.
 *
 * The secrets (both secret keys, the seed b, the received shares) live in
 * the object and are wiped by fl_saclient_free. Not thread-safe: one
 * object per party, its calls in order. */
#ifndef FL_SACLIENT_H
#define FL_SACLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/pk.h>

#include "common/secagg/samsg.h"

typedef struct fl_saclient fl_saclient_t;

/* A party with id `id` (< setup->n) and certificate name `name` (at most
 * FL_SAMSG_NAME_MAX bytes); sign_key is its certificate's private key
 * (borrowed; must outlive the object), rng its CSPRNG (borrowed). Draws
 * both key pairs and the seed b. FL_EINVAL, FL_ENOMEM, FL_EIO. */
int fl_saclient_create(const fl_samsg_setup_t *setup, uint32_t id, const char *name,
                       mbedtls_pk_context *sign_key, fl_sacrypto_rng_t *rng, fl_saclient_t **out);
void fl_saclient_free(fl_saclient_t *c);

/* The graph degree's neighbour count (room needed by share_keys' out). */
uint32_t fl_saclient_degree(const fl_saclient_t *c);

/* Phase 1: the signed advert. */
int fl_saclient_advertise(fl_saclient_t *c, fl_samsg_advert_t *out);

/* Phase 2: adv[0..n) are the adverts of the neighbours that advertised,
 * pks[i] the public key of adv[i].name's certificate (the caller checked
 * the certificate against the CA and its name). Writes one share message
 * per neighbour to out (room for fl_saclient_degree) and their count to
 * *n_out, and the commitment to b to commit_seed. */
int fl_saclient_share_keys(fl_saclient_t *c, const fl_samsg_advert_t *adv,
                           mbedtls_pk_context *const *pks, size_t n, fl_samsg_share_t *out,
                           size_t *n_out, uint8_t commit_seed[32]);

/* Phase 3: in[0..n) are the ciphertexts addressed to this party by its
 * neighbours that shared keys (U2); x is the quantized input (setup->dim
 * words), y receives the masked input (may be x). */
int fl_saclient_mask(fl_saclient_t *c, const fl_samsg_share_t *in, size_t n, const uint32_t *x,
                     uint32_t *y);

/* Phase 4: u3[0..n3) are the parties whose masked input the server
 * received, in increasing order, this party among them. Writes the
 * revealed shares to out (room for fl_saclient_degree) and their count to
 * *n_out. A second call is refused (FL_ESTATE). */
int fl_saclient_unmask(fl_saclient_t *c, const uint32_t *u3, size_t n3, fl_samsg_reveal_t *out,
                       size_t *n_out);

/* Ciphertexts that did not decrypt in phase 3. */
uint32_t fl_saclient_bad_shares(const fl_saclient_t *c);

#endif
