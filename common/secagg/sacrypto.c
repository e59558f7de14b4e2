/* crypto: see crypto.h. */
#include "common/secagg/sacrypto.h"

#include <pthread.h>
#include <string.h>

#include <mbedtls/asn1.h>
#include <mbedtls/chacha20.h>
#include <mbedtls/chachapoly.h>
#include <mbedtls/ecdh.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/rng.h"

int fl_sacrypto_rng_init(fl_sacrypto_rng_t *r, const char *pers)
{
    if (!r)
        return FL_EINVAL;
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    if (mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                              (const unsigned char *)pers, pers ? strlen(pers) : 0) != 0)
        return FL_EIO;
    return 0;
}

/* The fixed seed is expanded by xoshiro into the DRBG's entropy input (at
 * seeding and at each reseed, so the stream still replays). */
static int fixed_entropy(void *ctx, unsigned char *out, size_t len)
{
    fl_rng_t *g = ctx;
    for (size_t i = 0; i < len; i++)
        out[i] = (unsigned char)fl_rng_u32(g);
    return 0;
}

int fl_sacrypto_rng_init_fixed(fl_sacrypto_rng_t *r, uint64_t seed, const uint64_t *ids, size_t n)
{
    if (!r)
        return FL_EINVAL;
    fl_rng_stream(&r->fixed, seed, ids, n);
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    if (mbedtls_ctr_drbg_seed(&r->drbg, fixed_entropy, &r->fixed, NULL, 0) != 0)
        return FL_EIO;
    return 0;
}

void fl_sacrypto_rng_free(fl_sacrypto_rng_t *r)
{
    if (!r)
        return;
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}

int fl_sacrypto_rng(void *r, unsigned char *out, size_t len)
{
    fl_sacrypto_rng_t *g = r;
    /* mbedTLS caps one request; loop for larger ones */
    while (len > 0) {
        size_t n = len > MBEDTLS_CTR_DRBG_MAX_REQUEST ? MBEDTLS_CTR_DRBG_MAX_REQUEST : len;
        if (mbedtls_ctr_drbg_random(&g->drbg, out, n) != 0)
            return MBEDTLS_ERR_CTR_DRBG_REQUEST_TOO_BIG;
        out += n;
        len -= n;
    }
    return 0;
}

int fl_sacrypto_kp_gen(fl_sacrypto_kp_t *kp, fl_sacrypto_rng_t *rng)
{
    mbedtls_ecp_group grp;
    mbedtls_mpi d;
    mbedtls_ecp_point q;
    int rc = FL_EIO;
    if (!kp || !rng)
        return FL_EINVAL;
    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_ecp_point_init(&q);
    if (mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519) != 0 ||
        mbedtls_ecdh_gen_public(&grp, &d, &q, fl_sacrypto_rng, rng) != 0 ||
        mbedtls_mpi_write_binary_le(&d, kp->sk, FL_SACRYPTO_KEY) != 0 ||
        mbedtls_mpi_write_binary_le(&q.X, kp->pk, FL_SACRYPTO_KEY) != 0)
        goto done;
    rc = 0;
done:
    mbedtls_ecp_point_free(&q);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_group_free(&grp);
    return rc;
}

int fl_sacrypto_kp_public(const uint8_t sk[FL_SACRYPTO_KEY], uint8_t pk[FL_SACRYPTO_KEY],
                          fl_sacrypto_rng_t *rng)
{
    mbedtls_ecp_group grp;
    mbedtls_mpi d;
    mbedtls_ecp_point q;
    int rc = FL_EIO;
    if (!sk || !pk || !rng)
        return FL_EINVAL;
    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_ecp_point_init(&q);
    if (mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519) != 0 ||
        mbedtls_mpi_read_binary_le(&d, sk, FL_SACRYPTO_KEY) != 0)
        goto done;
    if (mbedtls_ecp_check_privkey(&grp, &d) != 0) {
        rc = FL_EAUTH;
        goto done;
    }
    if (mbedtls_ecp_mul(&grp, &q, &d, &grp.G, fl_sacrypto_rng, rng) != 0 ||
        mbedtls_mpi_write_binary_le(&q.X, pk, FL_SACRYPTO_KEY) != 0)
        goto done;
    rc = 0;
done:
    mbedtls_ecp_point_free(&q);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_group_free(&grp);
    return rc;
}

int fl_sacrypto_agree(const uint8_t sk[FL_SACRYPTO_KEY], const uint8_t peer_pk[FL_SACRYPTO_KEY],
                      const uint8_t *ctx, size_t ctx_len, const char *label, const uint8_t *info,
                      size_t info_len, uint8_t out[FL_SACRYPTO_KEY], fl_sacrypto_rng_t *rng)
{
    mbedtls_ecp_group grp;
    mbedtls_mpi d, z;
    mbedtls_ecp_point q;
    uint8_t zb[FL_SACRYPTO_KEY], infob[256];
    size_t ll = label ? strlen(label) : 0;
    int rc = FL_EIO;
    if (!sk || !peer_pk || !out || !rng || ll + info_len > sizeof infob || (info_len && !info))
        return FL_EINVAL;
    mbedtls_ecp_group_init(&grp);
    mbedtls_mpi_init(&d);
    mbedtls_mpi_init(&z);
    mbedtls_ecp_point_init(&q);
    if (mbedtls_ecp_group_load(&grp, MBEDTLS_ECP_DP_CURVE25519) != 0 ||
        mbedtls_mpi_read_binary_le(&d, sk, FL_SACRYPTO_KEY) != 0 ||
        mbedtls_mpi_read_binary_le(&q.X, peer_pk, FL_SACRYPTO_KEY) != 0 ||
        mbedtls_mpi_lset(&q.Z, 1) != 0)
        goto done;
    if (mbedtls_ecp_check_pubkey(&grp, &q) != 0 || mbedtls_ecp_check_privkey(&grp, &d) != 0) {
        rc = FL_EAUTH;
        goto done;
    }
    if (mbedtls_ecdh_compute_shared(&grp, &z, &q, &d, fl_sacrypto_rng, rng) != 0) {
        rc = FL_EAUTH;
        goto done;
    }
    /* RFC 7748 section 6.1: an all-zero secret means a low-order point */
    if (mbedtls_mpi_cmp_int(&z, 0) == 0) {
        rc = FL_EAUTH;
        goto done;
    }
    if (mbedtls_mpi_write_binary_le(&z, zb, sizeof zb) != 0)
        goto done;
    if (ll)
        memcpy(infob, label, ll);
    if (info_len)
        memcpy(infob + ll, info, info_len);
    if (mbedtls_hkdf(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), ctx, ctx_len, zb, sizeof zb,
                     infob, ll + info_len, out, FL_SACRYPTO_KEY) != 0)
        goto done;
    rc = 0;
done:
    mbedtls_platform_zeroize(zb, sizeof zb);
    mbedtls_ecp_point_free(&q);
    mbedtls_mpi_free(&z);
    mbedtls_mpi_free(&d);
    mbedtls_ecp_group_free(&grp);
    return rc;
}

int fl_sacrypto_prg_apply(const uint8_t key[FL_SACRYPTO_KEY], int sign, uint32_t *v, size_t n)
{
    static const uint8_t zero[4096];
    uint8_t ks[4096];
    uint8_t nonce[FL_SACRYPTO_NONCE] = {0};
    mbedtls_chacha20_context c;
    int rc = FL_EIO;
    if (!key || (!v && n) || (sign != 1 && sign != -1))
        return FL_EINVAL;
    mbedtls_chacha20_init(&c);
    if (mbedtls_chacha20_setkey(&c, key) != 0 || mbedtls_chacha20_starts(&c, nonce, 0) != 0)
        goto done;
    for (size_t at = 0; at < n;) {
        size_t words = n - at > sizeof ks / 4 ? sizeof ks / 4 : n - at;
        if (mbedtls_chacha20_update(&c, words * 4, zero, ks) != 0)
            goto done;
        if (sign > 0)
            for (size_t i = 0; i < words; i++)
                v[at + i] += fl_get_u32le(ks + 4 * i);
        else
            for (size_t i = 0; i < words; i++)
                v[at + i] -= fl_get_u32le(ks + 4 * i);
        at += words;
    }
    rc = 0;
done:
    mbedtls_chacha20_free(&c);
    return rc;
}

int fl_sacrypto_seal(const uint8_t key[FL_SACRYPTO_KEY], const uint8_t nonce[FL_SACRYPTO_NONCE],
                     const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    mbedtls_chachapoly_context c;
    int rc = FL_EIO;
    if (!key || !nonce || !out || (len && !in) || (aad_len && !aad))
        return FL_EINVAL;
    mbedtls_chachapoly_init(&c);
    if (mbedtls_chachapoly_setkey(&c, key) == 0 &&
        mbedtls_chachapoly_encrypt_and_tag(&c, len, nonce, aad, aad_len, in, out, out + len) == 0)
        rc = 0;
    mbedtls_chachapoly_free(&c);
    return rc;
}

int fl_sacrypto_open(const uint8_t key[FL_SACRYPTO_KEY], const uint8_t nonce[FL_SACRYPTO_NONCE],
                     const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len, uint8_t *out)
{
    mbedtls_chachapoly_context c;
    int rc = FL_EIO;
    if (!key || !nonce || !in || !out || (aad_len && !aad))
        return FL_EINVAL;
    if (len < FL_SACRYPTO_TAG)
        return FL_ETRUNCATED;
    mbedtls_chachapoly_init(&c);
    if (mbedtls_chachapoly_setkey(&c, key) == 0) {
        int r = mbedtls_chachapoly_auth_decrypt(&c, len - FL_SACRYPTO_TAG, nonce, aad, aad_len,
                                                in + len - FL_SACRYPTO_TAG, in, out);
        rc = r == 0 ? 0 : r == MBEDTLS_ERR_CHACHAPOLY_AUTH_FAILED ? FL_EAUTH : FL_EIO;
    }
    mbedtls_chachapoly_free(&c);
    return rc;
}

void fl_sacrypto_sha256(const uint8_t *msg, size_t len, uint8_t out[32])
{
    mbedtls_sha256_ret(msg, len, out, 0);
}

int fl_sacrypto_sign(mbedtls_pk_context *key, const uint8_t digest[32], uint8_t *sig,
                     size_t *sig_len, fl_sacrypto_rng_t *rng)
{
    if (!key || !digest || !sig || !sig_len || !rng)
        return FL_EINVAL;
    if (mbedtls_pk_sign(key, MBEDTLS_MD_SHA256, digest, 32, sig, sig_len, fl_sacrypto_rng, rng) != 0)
        return FL_EIO;
    return 0;
}

/* P-256 with its base point's comb table computed once per process: a
 * freshly parsed key (each neighbour's certificate) has its own group
 * without the table, and mbedTLS would rebuild it for every signature
 * checked. With the table in place the group is only read, so threads
 * share it (as common/net/tls does for the CA's key). */
static mbedtls_ecp_group p256;
static int p256_ok;
static pthread_once_t p256_once = PTHREAD_ONCE_INIT;

static void p256_init(void)
{
    mbedtls_ecp_group_init(&p256);
    mbedtls_ecp_point r;
    mbedtls_mpi one;
    mbedtls_ecp_point_init(&r);
    mbedtls_mpi_init(&one);
    /* 1 * G builds and keeps the table (no blinding is needed for a public
     * scalar, so no random generator) */
    p256_ok = mbedtls_ecp_group_load(&p256, MBEDTLS_ECP_DP_SECP256R1) == 0 && mbedtls_mpi_lset(&one, 1) == 0 &&
              mbedtls_ecp_mul(&p256, &r, &one, &p256.G, NULL, NULL) == 0 && p256.T != NULL;
    mbedtls_mpi_free(&one);
    mbedtls_ecp_point_free(&r);
}

/* An ECDSA P-256 verification through the shared group; -1: not such a key
 * (the caller falls back to mbedtls_pk_verify). The signature is DER
 * (SEQUENCE of r, s), nothing after it, as mbedtls_ecdsa_read_signature
 * requires. */
static int verify_p256(mbedtls_pk_context *key, const uint8_t digest[32], const uint8_t *sig, size_t sig_len)
{
    if (!mbedtls_pk_can_do(key, MBEDTLS_PK_ECDSA) || pthread_once(&p256_once, p256_init) != 0 || !p256_ok)
        return -1;
    const mbedtls_ecp_keypair *kp = mbedtls_pk_ec(*key);
    if (kp->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return -1;
    unsigned char *p = (unsigned char *)sig;
    const unsigned char *end = sig + sig_len;
    size_t len;
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int rc = FL_EAUTH;
    if (mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE) == 0 &&
        p + len == end && mbedtls_asn1_get_mpi(&p, end, &r) == 0 && mbedtls_asn1_get_mpi(&p, end, &s) == 0 &&
        p == end && mbedtls_ecdsa_verify(&p256, digest, 32, &kp->Q, &r, &s) == 0)
        rc = 0;
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    return rc;
}

int fl_sacrypto_verify(mbedtls_pk_context *key, const uint8_t digest[32], const uint8_t *sig,
                       size_t sig_len)
{
    if (!key || !digest || !sig || sig_len == 0 || sig_len > FL_SACRYPTO_SIG_MAX)
        return FL_EINVAL;
    int rc = verify_p256(key, digest, sig, sig_len);
    if (rc >= 0)
        return rc ? FL_EAUTH : 0;
    return mbedtls_pk_verify(key, MBEDTLS_MD_SHA256, digest, 32, sig, sig_len) == 0 ? 0 : FL_EAUTH;
}
