/* sasim: see sasim.h. */
#include "tests/support/sasim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/ecp.h>

#include "common/base/error.h"
#include "common/base/rng.h"
#include "common/secagg/saclient.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int gen_key(mbedtls_pk_context *pk, fl_sacrypto_rng_t *rng)
{
    mbedtls_pk_init(pk);
    if (mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0 ||
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk), fl_sacrypto_rng, rng) !=
            0)
        return FL_EIO;
    return 0;
}

void fl_sasim_result_free(fl_sasim_result_t *res)
{
    if (!res)
        return;
    free(res->sum);
    free(res->plain);
    res->sum = res->plain = NULL;
}

typedef struct {
    fl_saclient_t *c;
    fl_sacrypto_rng_t rng;
    int alive;
    double cpu;
    double up, down;
} party_t;

static int drop_at(const fl_sasim_cfg_t *cfg, uint32_t u, int phase)
{
    return cfg->drop_at && cfg->drop_at[u] == phase;
}

int fl_sasim_run(const fl_sasim_cfg_t *cfg, fl_sasim_result_t *res)
{
    fl_samsg_setup_t su = {0};
    fl_sacrypto_rng_t srng;
    fl_saserver_t *srv = NULL;
    party_t *P = NULL;
    mbedtls_pk_context *keys = NULL;
    mbedtls_pk_context **pks = NULL;
    fl_samsg_advert_t *adv = NULL;
    fl_samsg_share_t *sh = NULL;
    fl_samsg_reveal_t *rv = NULL;
    uint32_t *x = NULL, *y = NULL, *u3 = NULL;
    uint8_t *in_u3 = NULL;
    uint32_t nkeys = 0;
    int substituted = 0;
    int rc = 0;
    double t0;

    memset(res, 0, sizeof *res);
    res->replay_rc = 1;
    su.run_id = 1;
    su.round = 1;
    su.n = cfg->n;
    su.k = cfg->k;
    su.t = cfg->t;
    su.graph_seed = cfg->seed;
    su.dim = cfg->dim;
    uint64_t sid = 0xffffffffu;
    if ((rc = fl_sacrypto_rng_init_fixed(&srng, cfg->seed, &sid, 1)) != 0)
        return rc;
    if ((rc = fl_saserver_create(&su, &srng, &srv)) != 0)
        goto done;
    uint32_t deg = fl_saserver_degree(srv);
    nkeys = cfg->shared_sign_key ? 1 : cfg->n;
    P = calloc(cfg->n, sizeof *P);
    keys = calloc(nkeys, sizeof *keys);
    pks = calloc(deg, sizeof *pks);
    adv = calloc(deg, sizeof *adv);
    sh = calloc(deg, sizeof *sh);
    rv = calloc(deg, sizeof *rv);
    x = calloc(cfg->dim, sizeof *x);
    y = calloc(cfg->dim, sizeof *y);
    u3 = calloc(cfg->n, sizeof *u3);
    in_u3 = calloc(cfg->n, 1);
    res->sum = calloc(cfg->dim, sizeof *res->sum);
    res->plain = calloc(cfg->dim, sizeof *res->plain);
    if (!P || !keys || !pks || !adv || !sh || !rv || !x || !y || !u3 || !in_u3 || !res->sum ||
        !res->plain) {
        rc = FL_ENOMEM;
        goto done;
    }
    for (uint32_t i = 0; i < nkeys; i++)
        if ((rc = gen_key(&keys[i], &srng)) != 0)
            goto done;
    for (uint32_t u = 0; u < cfg->n; u++) {
        char name[32];
        uint64_t ids[1] = {u};
        snprintf(name, sizeof name, "client-%05u", u);
        if ((rc = fl_sacrypto_rng_init_fixed(&P[u].rng, cfg->seed, ids, 1)) != 0)
            goto done;
        t0 = cpu_now();
        if ((rc = fl_saclient_create(&su, u, name, &keys[cfg->shared_sign_key ? 0 : u], &P[u].rng,
                                     &P[u].c)) != 0)
            goto done;
        P[u].cpu += cpu_now() - t0;
        P[u].alive = 1;
    }
#define KEY_OF(id) (&keys[cfg->shared_sign_key ? 0 : (id)])
#define CLIENT_CALL(u, call)                                                                   \
    do {                                                                                       \
        double c0 = cpu_now();                                                                 \
        int r_ = (call);                                                                       \
        P[u].cpu += cpu_now() - c0;                                                            \
        if (r_ != 0) {                                                                         \
            P[u].alive = 0;                                                                    \
            if (r_ == FL_EAUTH)                                                                \
                res->client_eauth++;                                                           \
            else                                                                               \
                res->client_failed++;                                                          \
        }                                                                                      \
    } while (0)

    /* phase 1 */
    for (uint32_t u = 0; u < cfg->n; u++) {
        fl_samsg_advert_t a;
        if (drop_at(cfg, u, FL_SASIM_DROP_ADVERT))
            P[u].alive = 0;
        if (!P[u].alive)
            continue;
        CLIENT_CALL(u, fl_saclient_advertise(P[u].c, &a));
        if (!P[u].alive)
            continue;
        P[u].up += 4 + strlen(a.name) + 64 + a.sig_len;
        t0 = cpu_now();
        int r = fl_saserver_add_advert(srv, &a, KEY_OF(u));
        res->server_cpu_s += cpu_now() - t0;
        if (r != 0) {
            rc = r;
            goto done;
        }
    }
    t0 = cpu_now();
    res->rc = fl_saserver_end_adverts(srv);
    res->server_cpu_s += cpu_now() - t0;
    if (res->rc != 0)
        goto stats;

    /* phase 2 */
    for (uint32_t u = 0; u < cfg->n; u++) {
        uint8_t cs[32];
        size_t m = 0;
        if (drop_at(cfg, u, FL_SASIM_DROP_SHARE))
            P[u].alive = 0;
        if (!P[u].alive)
            continue;
        t0 = cpu_now();
        size_t na = fl_saserver_adverts_for(srv, u, adv);
        res->server_cpu_s += cpu_now() - t0;
        for (size_t i = 0; i < na; i++) {
            pks[i] = KEY_OF(adv[i].id);
            P[u].down += 4 + strlen(adv[i].name) + 64 + adv[i].sig_len;
            /* the first party to receive the victim's advert gets it with
             * another key, as a server that substitutes keys would send it */
            if (!substituted && cfg->substitute_key_of >= 0 &&
                adv[i].id == (uint32_t)cfg->substitute_key_of) {
                adv[i].c_pk[5] ^= 0x40;
                substituted = 1;
            }
        }
        CLIENT_CALL(u, fl_saclient_share_keys(P[u].c, adv, pks, na, sh, &m, cs));
        if (!P[u].alive)
            continue;
        if (cfg->tampered_cipher_of >= 0 && u == (uint32_t)cfg->tampered_cipher_of)
            for (size_t i = 0; i < m && (!cfg->tampered_ciphers || i < cfg->tampered_ciphers); i++)
                sh[i].ct[3] ^= 1;
        P[u].up += m * (8.0 + FL_SAMSG_CIPHER + 64) + 32;
        t0 = cpu_now();
        int r = fl_saserver_add_shares(srv, u, sh, m, cs);
        res->server_cpu_s += cpu_now() - t0;
        if (r != 0) {
            rc = r;
            goto done;
        }
    }
    t0 = cpu_now();
    res->rc = fl_saserver_end_shares(srv);
    res->server_cpu_s += cpu_now() - t0;
    if (res->rc != 0)
        goto stats;

    /* phase 3 */
    for (uint32_t u = 0; u < cfg->n; u++) {
        if (drop_at(cfg, u, FL_SASIM_DROP_MASK))
            P[u].alive = 0;
        if (!P[u].alive)
            continue;
        t0 = cpu_now();
        size_t ns = fl_saserver_shares_for(srv, u, sh);
        res->server_cpu_s += cpu_now() - t0;
        P[u].down += ns * (8.0 + FL_SAMSG_CIPHER);
        if (cfg->inputs) {
            memcpy(x, cfg->inputs[u], (size_t)cfg->dim * sizeof *x);
        } else {
            fl_rng_t g;
            uint64_t ids[2] = {u, 77};
            fl_rng_stream(&g, cfg->seed, ids, 2);
            fl_rng_fill_u32(&g, x, cfg->dim);
        }
        CLIENT_CALL(u, fl_saclient_mask(P[u].c, sh, ns, x, y));
        if (!P[u].alive)
            continue;
        P[u].up += 4.0 * cfg->dim;
        t0 = cpu_now();
        int r = fl_saserver_add_masked(srv, u, y);
        if (r == 0 && cfg->replay_masked_of >= 0 && u == (uint32_t)cfg->replay_masked_of)
            res->replay_rc = fl_saserver_add_masked(srv, u, y);
        res->server_cpu_s += cpu_now() - t0;
        if (r != 0) {
            rc = r;
            goto done;
        }
        for (uint32_t j = 0; j < cfg->dim; j++)
            res->plain[j] += x[j];
        in_u3[u] = 1;
    }
    t0 = cpu_now();
    res->rc = fl_saserver_end_masked(srv);
    res->server_cpu_s += cpu_now() - t0;
    if (res->rc != 0)
        goto stats;

    /* phase 4 */
    size_t n3 = fl_saserver_survivors(srv, u3);
    for (uint32_t u = 0; u < cfg->n; u++) {
        size_t m = 0;
        if (drop_at(cfg, u, FL_SASIM_DROP_UNMASK))
            P[u].alive = 0;
        if (!P[u].alive)
            continue;
        P[u].down += 4.0 * n3;
        CLIENT_CALL(u, fl_saclient_unmask(P[u].c, u3, n3, rv, &m));
        if (!P[u].alive)
            continue;
        if (cfg->lying_revealer >= 0 && u == (uint32_t)cfg->lying_revealer)
            for (size_t i = 0; i < m; i++)
                rv[i].share.y[0] = (rv[i].share.y[0] + 1) % FL_SHAMIR_P;
        P[u].up += m * (8.0 + FL_SAMSG_SHARE_LEN);
        t0 = cpu_now();
        int r = fl_saserver_add_reveal(srv, u, rv, m);
        res->server_cpu_s += cpu_now() - t0;
        if (r != 0) {
            rc = r;
            goto done;
        }
    }
    t0 = cpu_now();
    res->rc = fl_saserver_finish(srv, res->sum);
    res->server_cpu_s += cpu_now() - t0;
stats:
    fl_saserver_stats(srv, &res->st);
    {
        uint32_t stayed = 0;
        for (uint32_t u = 0; u < cfg->n; u++) {
            res->client_cpu_s += P[u].cpu;
            if (P[u].cpu > res->client_cpu_max_s)
                res->client_cpu_max_s = P[u].cpu;
            res->bad_ciphers += fl_saclient_bad_shares(P[u].c);
            if (P[u].alive) {
                stayed++;
                res->bytes_up += P[u].up;
                res->bytes_down += P[u].down;
            }
        }
        if (stayed) {
            res->bytes_up /= stayed;
            res->bytes_down /= stayed;
        }
    }
done:
    if (P)
        for (uint32_t u = 0; u < cfg->n; u++) {
            fl_saclient_free(P[u].c);
            fl_sacrypto_rng_free(&P[u].rng);
        }
    if (keys)
        for (uint32_t i = 0; i < nkeys; i++)
            mbedtls_pk_free(&keys[i]);
    free(P);
    free(keys);
    free(pks);
    free(adv);
    free(sh);
    free(rv);
    free(x);
    free(y);
    free(u3);
    free(in_u3);
    fl_saserver_free(srv);
    fl_sacrypto_rng_free(&srng);
    if (rc != 0)
        fl_sasim_result_free(res);
    return rc;
}
