/* test_secagg: the building blocks of secure aggregation (common/secagg):
 * Shamir sharing over GF(2^32 - 5) against hand-computed polynomials, any t
 * of n shares and never t-1; X25519 against RFC 7748's vectors and HKDF
 * against an independent computation; the ChaCha20 mask PRG against RFC
 * 8439's keystream; the AEAD and signatures refusing what was altered; the
 * fixed-point encoding's exact sums at its overflow bound; the SecAgg+
 * graph and the choice of its degree and threshold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ecp.h>

#include "common/base/error.h"
#include "common/secagg/sacrypto.h"
#include "common/secagg/sagraph.h"
#include "common/secagg/saquant.h"
#include "common/secagg/shamir.h"

#define P FL_SHAMIR_P

static void test_field(void **state)
{
    (void)state;
    assert_int_equal(fl_shamir_add(P - 1, 1), 0);
    assert_int_equal(fl_shamir_add(P - 1, P - 1), P - 2);
    assert_int_equal(fl_shamir_sub(0, 1), P - 1);
    assert_int_equal(fl_shamir_sub(5, 3), 2);
    /* (p-1)^2 = 1; 2^-1 = (p+1)/2 */
    assert_int_equal(fl_shamir_mul(P - 1, P - 1), 1);
    assert_int_equal(fl_shamir_inv(2), 2147483646u);
    assert_int_equal(fl_shamir_mul(2, 2147483646u), 1);
    assert_int_equal(fl_shamir_inv(0), 0);
    for (uint32_t a = 1; a < 2000; a += 37)
        assert_int_equal(fl_shamir_mul(a, fl_shamir_inv(a)), 1);
    assert_int_equal(fl_shamir_mul(P - 2, fl_shamir_inv(P - 2)), 1);
}

static void test_hand_vectors(void **state)
{
    (void)state;
    /* f(x) = 7 + 3x + 5x^2: f(1..5) = 15, 33, 61, 99, 147 */
    const uint32_t c[3] = {7, 3, 5};
    const uint32_t fx[5] = {15, 33, 61, 99, 147};
    for (uint32_t x = 1; x <= 5; x++)
        assert_int_equal(fl_shamir_poly_eval(c, 3, x), fx[x - 1]);
    /* every 3 of the 5 points give 7 */
    for (uint32_t a = 0; a < 5; a++)
        for (uint32_t b = a + 1; b < 5; b++)
            for (uint32_t d = b + 1; d < 5; d++) {
                uint32_t xs[3] = {a + 1, b + 1, d + 1}, ys[3] = {fx[a], fx[b], fx[d]}, v = 0;
                assert_int_equal(fl_shamir_interpolate0(xs, ys, 3, &v), 0);
                assert_int_equal(v, 7);
            }
    /* two points: the line through (1,15), (2,33) meets x = 0 at 2*15-33 = -3 */
    uint32_t xs[2] = {1, 2}, ys[2] = {15, 33}, v = 0;
    assert_int_equal(fl_shamir_interpolate0(xs, ys, 2, &v), 0);
    assert_int_equal(v, P - 3);
    /* with wrap-around: f(x) = (p-1) + (p-1)x: f(1) = p-2, f(2) = p-3 */
    const uint32_t c2[2] = {P - 1, P - 1};
    assert_int_equal(fl_shamir_poly_eval(c2, 2, 1), P - 2);
    assert_int_equal(fl_shamir_poly_eval(c2, 2, 2), P - 3);
    uint32_t ys2[2] = {P - 2, P - 3};
    assert_int_equal(fl_shamir_interpolate0(xs, ys2, 2, &v), 0);
    assert_int_equal(v, P - 1);
    /* repeated or zero x are refused */
    uint32_t bad[2] = {3, 3};
    assert_int_equal(fl_shamir_interpolate0(bad, ys, 2, &v), FL_EINVAL);
    uint32_t zero[2] = {0, 3};
    assert_int_equal(fl_shamir_interpolate0(zero, ys, 2, &v), FL_EINVAL);
}

static fl_sacrypto_rng_t g_rng;

static int setup_rng(void **state)
{
    (void)state;
    uint64_t id = 42;
    return fl_sacrypto_rng_init_fixed(&g_rng, 2026, &id, 1);
}

static int teardown_rng(void **state)
{
    (void)state;
    fl_sacrypto_rng_free(&g_rng);
    return 0;
}

static void test_split_combine(void **state)
{
    (void)state;
    uint8_t secret[32], got[32];
    const unsigned n = 7, t = 4;
    uint32_t xs[7] = {1, 2, 5, 9, 100, 4000000000u, 12};
    fl_shamir_share_t sh[7], pick[7];
    for (int i = 0; i < 32; i++)
        secret[i] = (uint8_t)(0xA0 + i * 7);
    assert_int_equal(fl_shamir_split(secret, 32, t, n, xs, fl_sacrypto_rng, &g_rng, sh), 0);
    assert_int_equal(sh[0].elems, 11);
    unsigned ok = 0, refused = 0;
    for (unsigned mask = 0; mask < (1u << n); mask++) {
        unsigned m = 0;
        for (unsigned i = 0; i < n; i++)
            if (mask & (1u << i))
                pick[m++] = sh[i];
        if (m == t || m == n) {
            /* any t (and all n) give the secret back */
            assert_int_equal(fl_shamir_combine(pick, m, t, got, 32), 0);
            assert_memory_equal(got, secret, 32);
            ok++;
        } else if (m == t - 1) {
            /* t-1 shares: refused when asked honestly, and a malformed
             * secret when passed off as enough */
            assert_int_equal(fl_shamir_combine(pick, m, t, got, 32), FL_EINVAL);
            assert_int_equal(fl_shamir_combine(pick, m, t - 1, got, 32), FL_EAUTH);
            refused++;
        }
    }
    assert_int_equal(ok, 35 + 1);
    assert_int_equal(refused, 35);
    /* one wrong share among t spoils it, visibly */
    memcpy(pick, sh, t * sizeof *sh);
    pick[2].y[4] = fl_shamir_add(pick[2].y[4], 1);
    assert_int_equal(fl_shamir_combine(pick, t, t, got, 32), FL_EAUTH);
    /* a secret whose length is not a multiple of 3 */
    assert_int_equal(fl_shamir_split(secret, 5, 2, 3, xs, fl_sacrypto_rng, &g_rng, sh), 0);
    assert_int_equal(sh[0].elems, 2);
    assert_int_equal(fl_shamir_combine(sh + 1, 2, 2, got, 5), 0);
    assert_memory_equal(got, secret, 5);
    /* arguments */
    assert_int_equal(fl_shamir_split(secret, 32, 0, 3, xs, fl_sacrypto_rng, &g_rng, sh), FL_EINVAL);
    assert_int_equal(fl_shamir_split(secret, 32, 4, 3, xs, fl_sacrypto_rng, &g_rng, sh), FL_EINVAL);
    assert_int_equal(fl_shamir_split(secret, 33, 2, 3, xs, fl_sacrypto_rng, &g_rng, sh), FL_EINVAL);
    uint32_t dup[3] = {1, 2, 1};
    assert_int_equal(fl_shamir_split(secret, 32, 2, 3, dup, fl_sacrypto_rng, &g_rng, sh), FL_EINVAL);
    uint32_t big[2] = {1, P};
    assert_int_equal(fl_shamir_split(secret, 32, 2, 2, big, fl_sacrypto_rng, &g_rng, sh), FL_EINVAL);
}

static void test_share_codec(void **state)
{
    (void)state;
    uint8_t secret[32] = {1, 2, 3}, buf[FL_SHAMIR_SHARE_MAX + 4];
    uint32_t xs[3] = {3, 4, 5};
    fl_shamir_share_t sh[3], back;
    assert_int_equal(fl_shamir_split(secret, 32, 2, 3, xs, fl_sacrypto_rng, &g_rng, sh), 0);
    size_t len = fl_shamir_share_encode(&sh[1], buf);
    assert_int_equal(len, 48);
    assert_int_equal(fl_shamir_share_decode(buf, len, &back), 0);
    assert_memory_equal(&back, &sh[1], sizeof back);
    assert_int_equal(fl_shamir_share_decode(buf, len - 1, &back), FL_EFORMAT);
    assert_int_equal(fl_shamir_share_decode(buf, 4, &back), FL_EFORMAT);
    assert_int_equal(fl_shamir_share_decode(buf, FL_SHAMIR_SHARE_MAX + 4, &back), FL_EFORMAT);
    buf[4] = buf[5] = buf[6] = buf[7] = 0xff; /* a value >= p */
    assert_int_equal(fl_shamir_share_decode(buf, len, &back), FL_ERANGE);
    memset(buf, 0, 4); /* x = 0 */
    assert_int_equal(fl_shamir_share_decode(buf, len, &back), FL_ERANGE);
}

static void unhex(const char *h, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

/* RFC 7748 section 6.1, private keys clamped as X25519 does */
static void test_x25519(void **state)
{
    (void)state;
    uint8_t a[32], apub[32], b[32], bpub[32], pk[32], k1[32], k2[32], want[32];
    unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a, 32);
    unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", apub, 32);
    unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", b, 32);
    unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", bpub, 32);
    /* unclamped scalars are not secret keys of ours */
    assert_int_equal(fl_sacrypto_kp_public(a, pk, &g_rng), FL_EAUTH);
    a[0] &= 248, a[31] = (uint8_t)((a[31] & 127) | 64);
    b[0] &= 248, b[31] = (uint8_t)((b[31] & 127) | 64);
    assert_int_equal(fl_sacrypto_kp_public(a, pk, &g_rng), 0);
    assert_memory_equal(pk, apub, 32);
    assert_int_equal(fl_sacrypto_kp_public(b, pk, &g_rng), 0);
    assert_memory_equal(pk, bpub, 32);
    /* HKDF-SHA256(salt = 00..1f, ikm = RFC's K, info = label || 3 || 7),
     * computed independently with Python's hmac module */
    uint8_t ctx[32], info[8] = {3, 0, 0, 0, 7, 0, 0, 0};
    for (int i = 0; i < 32; i++)
        ctx[i] = (uint8_t)i;
    unhex("7288b4fbeab42b0da81e7effe531c398d6c8e0078ea117cbf47362db0fd67f1a", want, 32);
    assert_int_equal(
        fl_sacrypto_agree(a, bpub, ctx, 32, "fedopt-secagg-1 mask", info, 8, k1, &g_rng), 0);
    assert_int_equal(
        fl_sacrypto_agree(b, apub, ctx, 32, "fedopt-secagg-1 mask", info, 8, k2, &g_rng), 0);
    assert_memory_equal(k1, want, 32);
    assert_memory_equal(k2, want, 32);
    /* another label or context gives another key */
    assert_int_equal(
        fl_sacrypto_agree(a, bpub, ctx, 32, "fedopt-secagg-1 transport", info, 8, k1, &g_rng), 0);
    assert_memory_not_equal(k1, want, 32);
    /* low-order points (u = 0, u = 1) are refused */
    uint8_t low[32] = {0};
    assert_int_equal(fl_sacrypto_agree(a, low, ctx, 32, "x", NULL, 0, k1, &g_rng), FL_EAUTH);
    low[0] = 1;
    assert_int_equal(fl_sacrypto_agree(a, low, ctx, 32, "x", NULL, 0, k1, &g_rng), FL_EAUTH);
    /* generated pairs agree */
    fl_sacrypto_kp_t p, q;
    assert_int_equal(fl_sacrypto_kp_gen(&p, &g_rng), 0);
    assert_int_equal(fl_sacrypto_kp_gen(&q, &g_rng), 0);
    assert_int_equal(fl_sacrypto_kp_public(p.sk, pk, &g_rng), 0);
    assert_memory_equal(pk, p.pk, 32);
    assert_int_equal(fl_sacrypto_agree(p.sk, q.pk, ctx, 32, "x", NULL, 0, k1, &g_rng), 0);
    assert_int_equal(fl_sacrypto_agree(q.sk, p.pk, ctx, 32, "x", NULL, 0, k2, &g_rng), 0);
    assert_memory_equal(k1, k2, 32);
}

/* RFC 8439 appendix A.1, test vector 1: all-zero key and nonce, counter 0 */
static void test_prg(void **state)
{
    (void)state;
    uint8_t key[32] = {0};
    uint32_t v[5000];
    memset(v, 0, sizeof v);
    assert_int_equal(fl_sacrypto_prg_apply(key, 1, v, 4), 0);
    assert_int_equal(v[0], 0xade0b876u);
    assert_int_equal(v[1], 0x903df1a0u);
    assert_int_equal(v[2], 0xe56a5d40u);
    assert_int_equal(v[3], 0x28bd8653u);
    /* + then - over more than one internal block cancels exactly; a prefix
     * of a long stream is the short stream */
    key[0] = 9;
    for (int i = 0; i < 5000; i++)
        v[i] = (uint32_t)i * 2654435761u;
    assert_int_equal(fl_sacrypto_prg_apply(key, 1, v, 5000), 0);
    uint32_t w[3] = {0, 1u * 2654435761u, 2u * 2654435761u};
    assert_int_equal(fl_sacrypto_prg_apply(key, 1, w, 3), 0);
    assert_memory_equal(w, v, sizeof w);
    assert_int_equal(fl_sacrypto_prg_apply(key, -1, v, 5000), 0);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(v[i], (uint32_t)i * 2654435761u);
    assert_int_equal(fl_sacrypto_prg_apply(key, 2, v, 1), FL_EINVAL);
}

static void test_seal(void **state)
{
    (void)state;
    uint8_t key[32] = {1}, nonce[12] = {2}, aad[5] = "round", msg[40], ct[56], back[40];
    for (int i = 0; i < 40; i++)
        msg[i] = (uint8_t)i;
    assert_int_equal(fl_sacrypto_seal(key, nonce, aad, 5, msg, 40, ct), 0);
    assert_memory_not_equal(ct, msg, 40);
    assert_int_equal(fl_sacrypto_open(key, nonce, aad, 5, ct, 56, back), 0);
    assert_memory_equal(back, msg, 40);
    uint8_t aad2[5] = "rounD";
    assert_int_equal(fl_sacrypto_open(key, nonce, aad2, 5, ct, 56, back), FL_EAUTH);
    nonce[0] ^= 1;
    assert_int_equal(fl_sacrypto_open(key, nonce, aad, 5, ct, 56, back), FL_EAUTH);
    nonce[0] ^= 1;
    ct[10] ^= 0x80;
    assert_int_equal(fl_sacrypto_open(key, nonce, aad, 5, ct, 56, back), FL_EAUTH);
    assert_int_equal(fl_sacrypto_open(key, nonce, aad, 5, ct, 15, back), FL_ETRUNCATED);
}

static void test_sign(void **state)
{
    (void)state;
    mbedtls_pk_context k1, k2;
    uint8_t dg[32], sig[FL_SACRYPTO_SIG_MAX];
    size_t len = 0;
    mbedtls_pk_init(&k1);
    mbedtls_pk_init(&k2);
    assert_int_equal(mbedtls_pk_setup(&k1, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(mbedtls_pk_setup(&k2, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(k1),
                                         fl_sacrypto_rng, &g_rng), 0);
    assert_int_equal(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(k2),
                                         fl_sacrypto_rng, &g_rng), 0);
    fl_sacrypto_sha256((const uint8_t *)"abc", 3, dg);
    /* FIPS 180-2's SHA-256("abc") */
    uint8_t want[32];
    unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    assert_memory_equal(dg, want, 32);
    assert_int_equal(fl_sacrypto_sign(&k1, dg, sig, &len, &g_rng), 0);
    assert_int_equal(fl_sacrypto_verify(&k1, dg, sig, len), 0);
    assert_int_equal(fl_sacrypto_verify(&k2, dg, sig, len), FL_EAUTH);
    /* the shared-table path agrees with mbedTLS's own: trailing bytes, a
     * cut signature, a flipped bit of r or s, a broken DER header */
    uint8_t bad[FL_SACRYPTO_SIG_MAX + 1];
    memcpy(bad, sig, len);
    bad[len] = 0;
    assert_true(len + 1 <= FL_SACRYPTO_SIG_MAX);
    assert_int_equal(fl_sacrypto_verify(&k1, dg, bad, len + 1), FL_EAUTH);
    assert_int_equal(fl_sacrypto_verify(&k1, dg, sig, len - 1), FL_EAUTH);
    for (size_t i = 0; i < len; i++) {
        memcpy(bad, sig, len);
        bad[i] ^= 0x10;
        int want_ok = mbedtls_pk_verify(&k1, MBEDTLS_MD_SHA256, dg, 32, bad, len) == 0;
        assert_int_equal(fl_sacrypto_verify(&k1, dg, bad, len), want_ok ? 0 : FL_EAUTH);
        assert_false(want_ok);
    }
    dg[0] ^= 1;
    assert_int_equal(fl_sacrypto_verify(&k1, dg, sig, len), FL_EAUTH);
    mbedtls_pk_free(&k1);
    mbedtls_pk_free(&k2);
}

static int32_t s32(uint32_t v)
{
    return (int32_t)v;
}

static void test_quant(void **state)
{
    (void)state;
    fl_saquant_t q;
    assert_int_equal(fl_saquant_init(&q, 0, 1.0, 10), FL_EINVAL);
    assert_int_equal(fl_saquant_init(&q, 10, 0.0, 10), FL_EINVAL);
    assert_int_equal(fl_saquant_init(&q, 100000, 1.0, 100000), FL_ERANGE);
    assert_int_equal(fl_saquant_init(&q, 4, 0.5, 100), 0);
    /* the largest scale with 4 * (s * 100 * 0.5 + 1/2) <= 2^31 - 1 */
    assert_true(4.0 * (q.scale * 50.0 + 0.5) <= 2147483647.0);
    assert_true(4.0 * ((q.scale + 1e-3) * 50.0 + 0.5) > 2147483647.0);
    const float d[4] = {0.25f, -0.5f, 3.0f, -1e-9f};
    uint32_t w[5];
    assert_int_equal(fl_saquant_encode(&q, d, 4, 10.0, w), 0);
    assert_int_equal(w[4], 10);
    assert_int_equal(s32(w[0]), (int32_t)llround(q.scale * 10 * 0.25));
    assert_int_equal(s32(w[1]), (int32_t)llround(q.scale * 10 * -0.5));
    assert_int_equal(s32(w[2]), (int32_t)llround(q.scale * 10 * 0.5)); /* clipped */
    assert_int_equal(s32(w[3]), 0);
    /* weights: capped and rounded; negative counts as 0 */
    assert_int_equal(fl_saquant_weight(&q, 1000.0), 100);
    assert_int_equal(fl_saquant_weight(&q, 2.6), 3);
    assert_int_equal(fl_saquant_weight(&q, -1.0), 0);
    /* at the bound: 4 clients at the cap, all at +clip or all at -clip,
     * sum without wrapping, and the mean comes back */
    for (int sign = -1; sign <= 1; sign += 2) {
        uint32_t sum[5] = {0};
        const float e[4] = {sign * 0.5f, sign * 7.0f, 0.125f, 0.0f};
        for (int c = 0; c < 4; c++) {
            assert_int_equal(fl_saquant_encode(&q, e, 4, 1e9, w), 0);
            for (int j = 0; j < 5; j++)
                sum[j] += w[j];
        }
        float mean[4];
        double wt = 0;
        assert_int_equal(fl_saquant_decode(&q, sum, 4, mean, &wt), 0);
        assert_true(wt == 400.0);
        assert_true(fabsf(mean[0] - sign * 0.5f) < 1e-7f);
        assert_true(fabsf(mean[1] - sign * 0.5f) < 1e-7f);
        assert_true(fabsf(mean[2] - 0.125f) < 1e-7f);
        assert_true(mean[3] == 0.0f);
    }
    /* a weighted mean of two clients */
    {
        uint32_t sum[5] = {0};
        const float a[4] = {0.1f, 0.2f, -0.3f, 0.4f}, b[4] = {-0.2f, 0.2f, 0.3f, 0.0f};
        assert_int_equal(fl_saquant_encode(&q, a, 4, 30.0, w), 0);
        for (int j = 0; j < 5; j++)
            sum[j] += w[j];
        assert_int_equal(fl_saquant_encode(&q, b, 4, 10.0, w), 0);
        for (int j = 0; j < 5; j++)
            sum[j] += w[j];
        float mean[4];
        assert_int_equal(fl_saquant_decode(&q, sum, 4, mean, NULL), 0);
        for (int j = 0; j < 4; j++) {
            double want = (30.0 * a[j] + 10.0 * b[j]) / 40.0;
            assert_true(fabs(mean[j] - want) <= 1.0 / (2 * q.scale * 40) * 2 + 1e-7);
        }
    }
    const float bad[2] = {NAN, 0};
    assert_int_equal(fl_saquant_encode(&q, bad, 2, 1.0, w), FL_ENONFINITE);
    assert_int_equal(fl_saquant_encode(&q, d, 2, INFINITY, w), FL_ENONFINITE);
    uint32_t zero[5] = {0};
    float mean[4];
    assert_int_equal(fl_saquant_decode(&q, zero, 4, mean, NULL), FL_EEMPTY);
}

static void test_graph(void **state)
{
    (void)state;
    fl_sagraph_t g;
    uint32_t nb[64];
    assert_int_equal(fl_sagraph_init(&g, 50, 7, 1), FL_EINVAL); /* odd k */
    assert_int_equal(fl_sagraph_init(&g, 1, 2, 1), FL_EINVAL);
    assert_int_equal(fl_sagraph_init(&g, 50, 8, 1), 0);
    uint32_t deg_sum = 0;
    for (uint32_t u = 0; u < 50; u++) {
        uint32_t m = fl_sagraph_neighbours(&g, u, nb);
        assert_int_equal(m, 8);
        for (uint32_t i = 0; i < m; i++) {
            if (i)
                assert_true(nb[i] > nb[i - 1]);
            assert_true(nb[i] != u);
            assert_true(fl_sagraph_adjacent(&g, u, nb[i]));
            assert_true(fl_sagraph_adjacent(&g, nb[i], u));
        }
        for (uint32_t v = 0; v < 50; v++)
            deg_sum += (uint32_t)fl_sagraph_adjacent(&g, u, v);
    }
    assert_int_equal(deg_sum, 50 * 8);
    /* another seed, another graph (same degree) */
    fl_sagraph_t h;
    assert_int_equal(fl_sagraph_init(&h, 50, 8, 2), 0);
    int differ = 0;
    for (uint32_t u = 0; u < 50 && !differ; u++)
        for (uint32_t v = 0; v < 50; v++)
            differ |= fl_sagraph_adjacent(&g, u, v) != fl_sagraph_adjacent(&h, u, v);
    assert_true(differ);
    fl_sagraph_free(&h);
    fl_sagraph_free(&g);
    /* complete */
    assert_int_equal(fl_sagraph_init(&g, 5, 4, 1), 0);
    assert_int_equal(fl_sagraph_neighbours(&g, 2, nb), 4);
    assert_int_equal(nb[0], 0);
    assert_int_equal(nb[3], 4);
    fl_sagraph_free(&g);
    fl_sagraph_free(NULL);
}

static void test_graph_choose(void **state)
{
    (void)state;
    fl_sagraph_choice_t c, c2;
    /* K = 1000, 10% dropout, 10% corrupt, 40/20 bits: a sparse graph whose
     * bounds hold, and no smaller even degree would do */
    assert_int_equal(fl_sagraph_choose(1000, 0.1, 0.1, 40, 20, &c), 0);
    assert_false(c.complete);
    assert_true(c.k % 2 == 0 && c.k < 500);
    assert_true(2 * c.t > c.k && c.t <= c.k);
    assert_true(c.log2_fail_private <= -40);
    assert_true(c.log2_fail_correct <= -20);
    /* a larger federation needs at most a few more neighbours (O(log n)) */
    assert_int_equal(fl_sagraph_choose(100000, 0.1, 0.1, 40, 20, &c2), 0);
    assert_true(c2.k >= c.k && c2.k < c.k + c.k / 2);
    /* small rounds fall back to the complete graph with counts: 10 parties,
     * 10% dropout (1), 10% corrupt (1): t > (9 + 1) / 2 */
    assert_int_equal(fl_sagraph_choose(10, 0.1, 0.1, 40, 20, &c), 0);
    assert_true(c.complete);
    assert_int_equal(c.k, 9);
    assert_int_equal(c.t, 6);
    /* tolerances that leave no threshold */
    assert_int_equal(fl_sagraph_choose(4, 0.4, 0.05, 40, 20, &c), FL_ERANGE);
    assert_int_equal(fl_sagraph_choose(100, 0.3, 0.3, 40, 20, &c), FL_EINVAL);
    assert_int_equal(fl_sagraph_choose(1, 0.1, 0.1, 40, 20, &c), FL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field),
        cmocka_unit_test(test_hand_vectors),
        cmocka_unit_test(test_split_combine),
        cmocka_unit_test(test_share_codec),
        cmocka_unit_test(test_x25519),
        cmocka_unit_test(test_prg),
        cmocka_unit_test(test_seal),
        cmocka_unit_test(test_sign),
        cmocka_unit_test(test_quant),
        cmocka_unit_test(test_graph),
        cmocka_unit_test(test_graph_choose),
    };
    return cmocka_run_group_tests(tests, setup_rng, teardown_rng);
}
