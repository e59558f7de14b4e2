/* secure: a client's side of one secure-aggregation round on the wire
 * (TaskOffer.secagg set; proto/README.md "Secure aggregation",
 * docs/secure-aggregation.md).
 *
 * It translates between the fedopt messages and the socket-free party of
 * common/secagg/saclient:
 *   fl_secure_create    at the offer: draws the round's keys and seed
 *                       (from the OS entropy source) and signs the advert
 *                       with the key of the client's own certificate (the
 *                       TLS context's);
 *   fl_secure_on_keys   checks each neighbour's forwarded certificate
 *                       against the fleet CA and its name, then each
 *                       advert's signature with that certificate's key (a
 *                       key the server substituted is refused: FL_EAUTH),
 *                       and answers with the encrypted shares;
 *   fl_secure_on_shares keeps the neighbours' ciphertexts for masking;
 *   fl_secure_upload    quantizes the trained delta with its weight and
 *                       masks it: the Update (weight and metrics left out)
 *                       and its TENSOR_DELTA of numel + 1 words;
 *   fl_secure_on_unmask reveals the shares the survivors list asks for,
 *                       once.
 * Every output is an encoded frame (fl_buf_t) for the connection. A refusal
 * means the client leaves the round; nothing it holds is revealed then.
 *
 * `lie` makes the party misbehave on purpose (client/attack's secagg-*
 * attacks, for the tests that check the server catches it).
 *
 * Not thread-safe: one object per session and round, on the loop thread
 * (it signs with the TLS context's key). The secrets are wiped on free. */
#ifndef FL_CLIENT_SECURE_H
#define FL_CLIENT_SECURE_H

#include <stddef.h>
#include <stdint.h>

#include "common/net/tls.h"
#include "common/net/wire.h"

typedef enum {
    FL_SECURE_HONEST = 0,
    FL_SECURE_LIE_KEY,    /* advertise a mask key other than the one signed (a substituted key) */
    FL_SECURE_LIE_SHARE,  /* reveal a wrong share at unmasking */
    FL_SECURE_LIE_REPLAY, /* send the key advertisement twice (a replayed message) */
} fl_secure_lie_t;

typedef struct fl_secure fl_secure_t;

/* A party of round `round` of run `run` with the offer's setup, identity
 * `name` (Welcome.peer_identity) and the TLS context whose certificate key
 * signs and whose CA checks the neighbours (borrowed: must outlive the
 * object). *advert gets the frames to send now (the advertisement).
 * FL_EINVAL (a setup out of range, a name longer than 64), FL_ENOMEM,
 * FL_EIO, FL_EAUTH (no private key in the context). */
int fl_secure_create(const Fedopt__SecAggSetup *setup, uint64_t run, uint64_t round, const char *name,
                     fl_tls_ctx_t *tls, fl_secure_lie_t lie, fl_buf_t **advert, fl_secure_t **out);
void fl_secure_free(fl_secure_t *s);

uint64_t fl_secure_round(const fl_secure_t *s);

/* Phase 2. FL_EAUTH: a certificate or a signature that does not check (the
 * server substituted a key); FL_EPROTO, FL_ESTATE, FL_ECANCELED (too few
 * neighbours left). why gets one line. */
int fl_secure_on_keys(fl_secure_t *s, const Fedopt__SecAggKeys *m, fl_buf_t **reply, char *why, size_t why_len);

/* Phase 3 begins: the ciphertexts addressed to this party. */
int fl_secure_on_shares(fl_secure_t *s, const Fedopt__SecAggShares *m);

/* 1 once the ciphertexts are in (the masked input can go). */
int fl_secure_ready(const fl_secure_t *s);

/* Phase 3: delta (numel floats) with weight w quantized and masked into
 * the Update and its transfer (chunks of chunk bytes). plain (may be NULL;
 * numel + 1 words) gets the quantized words before masking, for a fleet's
 * test of the exact sum. FL_ESHAPE when numel is not the setup's,
 * FL_ENONFINITE, FL_ESTATE before fl_secure_ready. */
int fl_secure_upload(fl_secure_t *s, const float *delta, size_t numel, double w, uint32_t chunk,
                     fl_buf_t **update, fl_buf_t **tensor, uint32_t *plain);

/* Phase 4: the reveal for the survivors' list. */
int fl_secure_on_unmask(fl_secure_t *s, const Fedopt__SecAggUnmask *m, fl_buf_t **reply);

#endif
