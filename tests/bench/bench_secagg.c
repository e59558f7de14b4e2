/* Benchmarks one secure-aggregation round in memory (tests/support/sasim:
 * every party's and the server's protocol calls on one thread, no sockets,
 * no training): for K parties with the SecAgg+ degree and threshold that
 * fl_sagraph_choose gives at 10% dropout, 5% corruption, sigma 40, eta 20,
 * a logistic-regression-sized input (7,850 parameters + the weight word).
 * Prints per round: the graph, the mean and the busiest party's protocol
 * CPU, the server's CPU, and each party's protocol payload up and down
 * (the messages' fields, without TLS, framing or certificates) beside the
 * plain upload's 4 bytes per parameter; then the same with 10% of the
 * parties dropping, half before and half after their masked upload.
 * FEDOPT_BENCH_SECAGG_DROP=only runs the dropout rounds alone. Every round's unmasked sum is
 * checked against the plain sum: a wrong one fails the benchmark. First, the
 * CPU cost of each primitive a party repeats per neighbour (thread CPU
 * time, so other load on the machine distorts it little).
 * Usage: bench_secagg [K ...]   (default 10 100 1000) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <mbedtls/ecp.h>

#include "common/secagg/sacrypto.h"
#include "common/secagg/sagraph.h"
#include "tests/support/benchclock.h"
#include "tests/support/sasim.h"

#define DIM (7850 + 1)

static double tcpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int primitives(void)
{
    fl_sacrypto_rng_t rng;
    fl_sacrypto_kp_t a, b;
    mbedtls_pk_context pk;
    uint8_t key[32] = {0}, sig[FL_SACRYPTO_SIG_MAX];
    size_t sl = 0;
    uint64_t id = 1;
    const int N = 40;
    static uint32_t v[DIM];
    int rc = 1;
    mbedtls_pk_init(&pk);
    if (fl_sacrypto_rng_init_fixed(&rng, 1, &id, 1) != 0 ||
        mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0 ||
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk), fl_sacrypto_rng, &rng) != 0 ||
        fl_sacrypto_kp_gen(&b, &rng) != 0)
        goto done;
    double t0 = tcpu();
    for (int i = 0; i < N; i++)
        if (fl_sacrypto_kp_gen(&a, &rng) != 0)
            goto done;
    double t_gen = (tcpu() - t0) / N;
    t0 = tcpu();
    for (int i = 0; i < N; i++)
        if (fl_sacrypto_agree(a.sk, b.pk, key, 32, "x", NULL, 0, key, &rng) != 0)
            goto done;
    double t_agree = (tcpu() - t0) / N;
    t0 = tcpu();
    for (int i = 0; i < N; i++)
        if (fl_sacrypto_sign(&pk, key, sig, &sl, &rng) != 0)
            goto done;
    double t_sign = (tcpu() - t0) / N;
    t0 = tcpu();
    for (int i = 0; i < N; i++)
        if (fl_sacrypto_verify(&pk, key, sig, sl) != 0)
            goto done;
    double t_verify = (tcpu() - t0) / N;
    t0 = tcpu();
    for (int i = 0; i < N; i++)
        if (fl_sacrypto_prg_apply(key, 1, v, DIM) != 0)
            goto done;
    double t_prg = (tcpu() - t0) / N;
    printf("primitives (CPU per call): x25519_keygen=%.3fms x25519+hkdf=%.3fms ecdsa_p256_sign=%.3fms "
           "ecdsa_p256_verify=%.3fms chacha20_mask_%dwords=%.3fms\n",
           t_gen * 1e3, t_agree * 1e3, t_sign * 1e3, t_verify * 1e3, DIM, t_prg * 1e3);
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "bench_secagg: a primitive failed\n");
    mbedtls_pk_free(&pk);
    fl_sacrypto_rng_free(&rng);
    return rc;
}

static int one(uint32_t K, int with_drop)
{
    fl_sagraph_choice_t ch;
    if (fl_sagraph_choose(K, 0.10, 0.05, 40, 20, &ch) != 0) {
        fprintf(stderr, "bench_secagg: no (k, t) for K = %u\n", K);
        return 1;
    }
    uint8_t *drop = calloc(K, 1);
    if (!drop)
        return 1;
    uint32_t dropped = 0;
    /* 10%: every 20th party vanishes before its masked upload (after it
     * shared its keys: the server rebuilds its s key and removes its
     * pairwise masks), every 20th another one after it (it answers no
     * unmasking) */
    if (with_drop)
        for (uint32_t u = 0; u < K; u += 10) {
            drop[u] = (u / 10) % 2 ? FL_SASIM_DROP_UNMASK : FL_SASIM_DROP_MASK;
            dropped++;
        }
    fl_sasim_cfg_t c = {.n = K, .k = ch.k, .t = ch.t, .dim = DIM, .seed = 11, .drop_at = drop,
                        .shared_sign_key = 1, .substitute_key_of = -1, .lying_revealer = -1,
                        .tampered_cipher_of = -1, .replay_masked_of = -1};
    fl_sasim_result_t r;
    double w0 = fl_bench_wall();
    int rc = fl_sasim_run(&c, &r);
    double wall = fl_bench_wall() - w0;
    free(drop);
    if (rc != 0 || r.rc != 0 || memcmp(r.sum, r.plain, sizeof(uint32_t) * DIM) != 0) {
        fprintf(stderr, "bench_secagg: K = %u: round failed or wrong sum (%d, %d)\n", K, rc, r.rc);
        fl_sasim_result_free(&r);
        return 1;
    }
    printf("K=%-5u dropped=%-4u k=%-4u t=%-4u%s client_cpu_mean=%.4fs client_cpu_max=%.4fs "
           "server_cpu=%.4fs up=%.0fB down=%.0fB plain_up=%uB wall=%.1fs\n",
           K, dropped, ch.k, ch.t, ch.complete ? " (complete)" : "", r.client_cpu_s / K,
           r.client_cpu_max_s, r.server_cpu_s, r.bytes_up, r.bytes_down, 4u * (DIM - 1), wall);
    fflush(stdout);
    fl_sasim_result_free(&r);
    return 0;
}

int main(int argc, char **argv)
{
    uint32_t ks[16] = {10, 100, 1000};
    int nk = 3;
    if (argc > 1) {
        nk = 0;
        for (int i = 1; i < argc && nk < 16; i++) {
            long v = strtol(argv[i], NULL, 10);
            if (v < 3 || v > 100000) {
                fprintf(stderr, "usage: bench_secagg [K ...] (3 <= K <= 100000)\n");
                return 2;
            }
            ks[nk++] = (uint32_t)v;
        }
    }
    printf("secure aggregation, one round in memory, dim %d, one thread\n", DIM);
    if (primitives())
        return 1;
    const char *only = getenv("FEDOPT_BENCH_SECAGG_DROP");
    int d0 = only && strcmp(only, "only") == 0;
    for (int i = 0; i < nk; i++)
        for (int d = d0; d <= 1; d++)
            if (one(ks[i], d))
                return 1;
    return 0;
}
