/* crypto: the primitives of secure aggregation, all from mbedTLS.
 *
 * - a CSPRNG (CTR_DRBG over the OS entropy, or over a fixed seed for tests
 *   and benchmarks that must replay);
 * - X25519 key pairs and agreement (mbedtls_ecdh on Curve25519), the shared
 *   secret turned into a 32-byte key by HKDF-SHA256 with the round's context
 *   as salt and a label as info;
 * - the mask PRG: the ChaCha20 keystream under a 32-byte key, read as
 *   little-endian uint32 words and added to (or subtracted from) a vector
 *   modulo 2^32;
 * - the share transport: ChaCha20-Poly1305 with a 12-byte nonce and
 *   associated data;
 * - signatures over a SHA-256 digest with a certificate's key
 *   (mbedtls_pk_sign/verify; fedopt's keys are ECDSA P-256).
 *
 * Every function returns 0 or a negative FL_E* code: FL_EAUTH for a
 * signature, a tag or a peer key that does not check, FL_EIO for a failure
 * inside mbedTLS. Functions are thread-safe on distinct objects. */
#ifndef FL_SACRYPTO_H
#define FL_SACRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>

#include "common/base/rng.h"

#define FL_SACRYPTO_KEY 32  /* X25519 keys, derived keys, seeds */
#define FL_SACRYPTO_TAG 16  /* Poly1305 tag */
#define FL_SACRYPTO_NONCE 12
#define FL_SACRYPTO_SIG_MAX MBEDTLS_PK_SIGNATURE_MAX_SIZE

/* A CSPRNG; fl_sacrypto_rng is its f_rng for mbedTLS calls. */
typedef struct {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    fl_rng_t fixed; /* the entropy source of a fixed-seed DRBG */
} fl_sacrypto_rng_t;

/* Seeds from the OS entropy source, with `pers` (may be NULL) as
 * personalization. */
int fl_sacrypto_rng_init(fl_sacrypto_rng_t *r, const char *pers);
/* Seeds deterministically from (seed, ids...): the same tuple gives the same
 * stream (tests and benchmarks only: never for a real round). */
int fl_sacrypto_rng_init_fixed(fl_sacrypto_rng_t *r, uint64_t seed, const uint64_t *ids, size_t n);
void fl_sacrypto_rng_free(fl_sacrypto_rng_t *r);
int fl_sacrypto_rng(void *r, unsigned char *out, size_t len);

/* An X25519 key pair: the secret scalar and the public u-coordinate, both
 * 32 bytes little-endian as in RFC 7748. */
typedef struct {
    uint8_t sk[FL_SACRYPTO_KEY];
    uint8_t pk[FL_SACRYPTO_KEY];
} fl_sacrypto_kp_t;

int fl_sacrypto_kp_gen(fl_sacrypto_kp_t *kp, fl_sacrypto_rng_t *rng);
/* The public key of a secret one (refused with FL_EAUTH when sk is not a
 * clamped X25519 scalar, e.g. one rebuilt from wrong shares). */
int fl_sacrypto_kp_public(const uint8_t sk[FL_SACRYPTO_KEY], uint8_t pk[FL_SACRYPTO_KEY],
                          fl_sacrypto_rng_t *rng);

/* out = HKDF-SHA256(salt = ctx (ctx_len bytes), ikm = X25519(sk, peer_pk),
 * info = label || info). FL_EAUTH when peer_pk is not a valid point or the
 * shared secret is zero (a low-order point). */
int fl_sacrypto_agree(const uint8_t sk[FL_SACRYPTO_KEY], const uint8_t peer_pk[FL_SACRYPTO_KEY],
                      const uint8_t *ctx, size_t ctx_len, const char *label, const uint8_t *info,
                      size_t info_len, uint8_t out[FL_SACRYPTO_KEY], fl_sacrypto_rng_t *rng);

/* v[i] += sign * word_i (mod 2^32) for the first n words of the ChaCha20
 * keystream under key (nonce 0, counter 0); sign is +1 or -1. */
int fl_sacrypto_prg_apply(const uint8_t key[FL_SACRYPTO_KEY], int sign, uint32_t *v, size_t n);

/* AEAD seal: out = ChaCha20-Poly1305(key, nonce, aad, in) || tag; out holds
 * len + FL_SACRYPTO_TAG bytes. Open checks the tag first and writes len - tag
 * bytes (FL_EAUTH on a wrong tag, key, nonce or aad; FL_ETRUNCATED when len
 * is shorter than a tag). */
int fl_sacrypto_seal(const uint8_t key[FL_SACRYPTO_KEY], const uint8_t nonce[FL_SACRYPTO_NONCE],
                     const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len, uint8_t *out);
int fl_sacrypto_open(const uint8_t key[FL_SACRYPTO_KEY], const uint8_t nonce[FL_SACRYPTO_NONCE],
                     const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len, uint8_t *out);

/* SHA-256 of a message; signature with a private key over that digest, and
 * its check with the matching public key (FL_EAUTH when it does not
 * verify). sig holds FL_SACRYPTO_SIG_MAX bytes. */
void fl_sacrypto_sha256(const uint8_t *msg, size_t len, uint8_t out[32]);
int fl_sacrypto_sign(mbedtls_pk_context *key, const uint8_t digest[32], uint8_t *sig,
                     size_t *sig_len, fl_sacrypto_rng_t *rng);
int fl_sacrypto_verify(mbedtls_pk_context *key, const uint8_t digest[32], const uint8_t *sig,
                       size_t sig_len);

#endif
