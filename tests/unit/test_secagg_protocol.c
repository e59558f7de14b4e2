/* test_secagg_protocol: whole secure-aggregation rounds in memory
 * (tests/support/sasim: n saclient parties and one saserver). The
 * unmasked sum equals the plain sum of the inputs of the parties whose
 * masked input arrived, exactly, with no dropouts, with dropouts at every
 * phase, and with as many dropouts after the masked upload as the
 * threshold allows; one more and the round is abandoned, never unmasked.
 * A substituted key, a lying revealer, an altered ciphertext and replayed
 * messages are caught. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ecp.h>

#include "common/base/error.h"
#include "common/secagg/sagraph.h"
#include "common/secagg/saclient.h"
#include "common/secagg/saserver.h"
#include "tests/support/emulation.h"
#include "tests/support/sasim.h"

static fl_sasim_cfg_t base(uint32_t n, uint32_t k, uint32_t t, uint32_t dim)
{
    fl_sasim_cfg_t c = {0};
    c.n = n;
    c.k = k;
    c.t = t;
    c.dim = dim;
    c.seed = 7;
    c.shared_sign_key = 1;
    c.substitute_key_of = -1;
    c.lying_revealer = -1;
    c.tampered_cipher_of = -1;
    c.replay_masked_of = -1;
    return c;
}

static void expect_exact(const fl_sasim_cfg_t *c, uint32_t want_u3)
{
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(c, &r), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.st.u3, want_u3);
    assert_memory_equal(r.sum, r.plain, (size_t)c->dim * 4);
    /* the masked sum alone is not the plain one (the masks were there) */
    fl_sasim_result_free(&r);
}

static void test_no_dropout(void **state)
{
    (void)state;
    /* complete graph (the original protocol), each party its own key */
    fl_sasim_cfg_t c = base(12, 11, 7, 257);
    c.shared_sign_key = 0;
    expect_exact(&c, 12);
    /* SecAgg+ graph, K = 256; under emulation (make test-cross), where every
     * party's key agreements and signatures run on emulated arithmetic,
     * K = 32: still a sparse graph (4 neighbours of 31) */
    uint32_t K = (uint32_t)fl_emu_size("SecAgg+ parties K", 256, 32);
    c = base(K, 4, 3, 1000);
    expect_exact(&c, K);
}

static void test_dropouts_each_phase(void **state)
{
    (void)state;
    uint8_t drop[64] = {0};
    fl_sasim_cfg_t c = base(64, 8, 5, 300);
    /* a few at each phase, spread over the ring */
    uint32_t lost = 0, before_mask = 0;
    for (uint32_t u = 3; u < 64; u += 7) {
        drop[u] = (uint8_t)(FL_SASIM_DROP_ADVERT + (lost % 4));
        if (drop[u] != FL_SASIM_DROP_UNMASK)
            before_mask++;
        lost++;
    }
    c.drop_at = drop;
    expect_exact(&c, 64 - before_mask);
}

/* Complete graph of n: a secret needs t shares from the parties that answer
 * the unmasking, among the owner's n-1 neighbours; so n-1-t parties may drop
 * after their masked upload, not one more. */
static void test_threshold_dropouts(void **state)
{
    (void)state;
    const uint32_t n = 14, t = 8;
    uint8_t drop[14] = {0};
    fl_sasim_cfg_t c = base(n, n - 1, t, 64);
    c.drop_at = drop;
    for (uint32_t u = 0; u < n - 1 - t; u++)
        drop[u * 2] = FL_SASIM_DROP_UNMASK;
    expect_exact(&c, n); /* they uploaded: their inputs count */

    drop[1] = FL_SASIM_DROP_UNMASK; /* one more */
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    assert_int_equal(r.rc, FL_ECANCELED);
    fl_sasim_result_free(&r);
}

static void test_sparse_threshold(void **state)
{
    (void)state;
    /* n = 60, k = 8, t = 5: find a party v, drop k - t of its neighbours
     * after the upload: v's seed still has exactly t shares */
    const uint32_t n = 60, k = 8, t = 5;
    fl_sagraph_t g;
    uint32_t nb[8];
    uint8_t drop[60] = {0};
    assert_int_equal(fl_sagraph_init(&g, n, k, 7), 0);
    assert_int_equal(fl_sagraph_neighbours(&g, 0, nb), k);
    fl_sagraph_free(&g);
    for (uint32_t i = 0; i < k - t; i++)
        drop[nb[i]] = FL_SASIM_DROP_UNMASK;
    fl_sasim_cfg_t c = base(n, k, t, 100);
    c.drop_at = drop;
    expect_exact(&c, n);
    drop[nb[k - t]] = FL_SASIM_DROP_UNMASK;
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    assert_int_equal(r.rc, FL_ECANCELED);
    fl_sasim_result_free(&r);
}

static void test_too_few_early(void **state)
{
    (void)state;
    /* fewer than t+1 advertise: abandoned at once */
    uint8_t drop[10];
    memset(drop, FL_SASIM_DROP_ADVERT, sizeof drop);
    drop[0] = drop[1] = drop[2] = FL_SASIM_STAY;
    fl_sasim_cfg_t c = base(10, 9, 5, 8);
    c.drop_at = drop;
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    assert_int_equal(r.rc, FL_ECANCELED);
    assert_int_equal(r.st.u1, 3);
    fl_sasim_result_free(&r);
}

static void test_substituted_key(void **state)
{
    (void)state;
    fl_sasim_cfg_t c = base(24, 6, 4, 50);
    c.substitute_key_of = 4;
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    /* the receiving party refused (and dropped out); the others finish
     * without it, exactly */
    assert_int_equal(r.client_eauth, 1);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.st.u2, 23);
    assert_memory_equal(r.sum, r.plain, 50 * 4);
    fl_sasim_result_free(&r);
}

static void test_lying_revealer(void **state)
{
    (void)state;
    fl_sasim_cfg_t c = base(24, 6, 4, 80);
    c.lying_revealer = 9;
    uint8_t drop[24] = {0};
    drop[2] = FL_SASIM_DROP_MASK; /* so that it has s shares to lie about too */
    c.drop_at = drop;
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.st.liars, 1);
    assert_int_equal(r.st.bad_reveals, 6);
    assert_memory_equal(r.sum, r.plain, 80 * 4);
    fl_sasim_result_free(&r);
}

static void test_tampered_cipher(void **state)
{
    (void)state;
    /* two of 11's six ciphertexts do not open: its seed still has 4 >= t
     * shares, the sum is exact */
    fl_sasim_cfg_t c = base(24, 6, 4, 80);
    c.tampered_cipher_of = 11;
    c.tampered_ciphers = 2;
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    assert_int_equal(r.bad_ciphers, 2);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.st.rebuilt_b, 24);
    assert_memory_equal(r.sum, r.plain, 80 * 4);
    fl_sasim_result_free(&r);
    /* all of them: nobody can reveal 11's seed, the round is abandoned
     * (a dealer can always spoil a round; it cannot make it unmask wrongly) */
    c.tampered_ciphers = 0;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    assert_int_equal(r.bad_ciphers, 6);
    assert_int_equal(r.rc, FL_ECANCELED);
    fl_sasim_result_free(&r);
}

static void test_replayed_masked(void **state)
{
    (void)state;
    fl_sasim_cfg_t c = base(20, 6, 4, 16);
    c.replay_masked_of = 3;
    fl_sasim_result_t r;
    assert_int_equal(fl_sasim_run(&c, &r), 0);
    assert_int_equal(r.replay_rc, FL_EEXIST);
    assert_int_equal(r.rc, 0);
    assert_memory_equal(r.sum, r.plain, 16 * 4);
    fl_sasim_result_free(&r);
}

/* Messages of round 1 replayed into round 2: the advert's signature covers
 * the round, the reveal's commitments are the new round's. */
static void test_cross_round_replay(void **state)
{
    (void)state;
    fl_sacrypto_rng_t rng;
    mbedtls_pk_context key;
    fl_samsg_setup_t s1 = {.run_id = 1, .round = 1, .n = 3, .k = 2, .t = 2, .graph_seed = 5, .dim = 4};
    fl_samsg_setup_t s2 = s1;
    s2.round = 2;
    uint64_t id = 1;
    assert_int_equal(fl_sacrypto_rng_init_fixed(&rng, 3, &id, 1), 0);
    mbedtls_pk_init(&key);
    assert_int_equal(mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                         fl_sacrypto_rng, &rng), 0);
    fl_saclient_t *c1 = NULL, *c2 = NULL;
    fl_saserver_t *srv = NULL;
    fl_samsg_advert_t a1, a2;
    assert_int_equal(fl_saclient_create(&s1, 0, "client-0", &key, &rng, &c1), 0);
    assert_int_equal(fl_saclient_create(&s2, 0, "client-0", &key, &rng, &c2), 0);
    assert_int_equal(fl_saclient_advertise(c1, &a1), 0);
    assert_int_equal(fl_saclient_advertise(c2, &a2), 0);
    assert_int_equal(fl_saclient_advertise(c2, &a2), FL_ESTATE); /* once */
    assert_int_equal(fl_saserver_create(&s2, &rng, &srv), 0);
    assert_int_equal(fl_saserver_add_advert(srv, &a1, &key), FL_EAUTH);
    assert_int_equal(fl_saserver_add_advert(srv, &a2, &key), 0);
    assert_int_equal(fl_saserver_add_advert(srv, &a2, &key), FL_EEXIST);
    /* a forged name under the same signature */
    fl_samsg_advert_t a3 = a2;
    a3.id = 1;
    assert_int_equal(fl_saserver_add_advert(srv, &a3, &key), FL_EAUTH);
    fl_samsg_advert_t a4 = a2;
    a4.id = 7;
    assert_int_equal(fl_saserver_add_advert(srv, &a4, &key), FL_EPROTO);
    fl_saserver_stats_t st;
    fl_saserver_stats(srv, &st);
    assert_int_equal(st.bad_adverts, 2);
    /* out of phase */
    uint32_t y[4] = {0};
    assert_int_equal(fl_saserver_add_masked(srv, 0, y), FL_ESTATE);
    fl_saserver_free(srv);
    fl_saclient_free(c1);
    fl_saclient_free(c2);
    mbedtls_pk_free(&key);
    fl_sacrypto_rng_free(&rng);
}

static void test_bad_setup(void **state)
{
    (void)state;
    fl_sacrypto_rng_t rng;
    uint64_t id = 1;
    fl_saserver_t *srv = (fl_saserver_t *)&rng;
    assert_int_equal(fl_sacrypto_rng_init_fixed(&rng, 3, &id, 1), 0);
    fl_samsg_setup_t s = {.run_id = 1, .round = 1, .n = 10, .k = 4, .t = 2, .graph_seed = 5, .dim = 4};
    assert_int_equal(fl_saserver_create(&s, &rng, &srv), FL_EINVAL); /* t <= k/2 */
    assert_null(srv);
    s.t = 3;
    s.k = 5;
    assert_int_equal(fl_saserver_create(&s, &rng, &srv), FL_EINVAL); /* odd k */
    s.k = 10;
    assert_int_equal(fl_saserver_create(&s, &rng, &srv), FL_EINVAL); /* k > n-1 */
    s.k = 4;
    s.dim = 0;
    assert_int_equal(fl_saserver_create(&s, &rng, &srv), FL_EINVAL);
    /* sizes a party would have to allocate without bound */
    s.dim = FL_SAMSG_MAX_DIM + 1;
    assert_int_equal(fl_saserver_create(&s, &rng, &srv), FL_EINVAL);
    s.dim = 4;
    s.n = FL_SAMSG_MAX_PARTIES + 1;
    assert_int_equal(fl_saserver_create(&s, &rng, &srv), FL_EINVAL);
    s.n = 10000;
    s.k = FL_SAMSG_MAX_DEGREE + 2;
    s.t = s.k / 2 + 1;
    assert_int_equal(fl_saserver_create(&s, &rng, &srv), FL_EINVAL);
    /* and the client checks the same setup */
    fl_saclient_t *cl = (fl_saclient_t *)&rng;
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    assert_int_equal(fl_saclient_create(&s, 0, "c", &key, &rng, &cl), FL_EINVAL);
    assert_null(cl);
    fl_sacrypto_rng_free(&rng);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_dropout),
        cmocka_unit_test(test_dropouts_each_phase),
        cmocka_unit_test(test_threshold_dropouts),
        cmocka_unit_test(test_sparse_threshold),
        cmocka_unit_test(test_too_few_early),
        cmocka_unit_test(test_substituted_key),
        cmocka_unit_test(test_lying_revealer),
        cmocka_unit_test(test_tampered_cipher),
        cmocka_unit_test(test_replayed_masked),
        cmocka_unit_test(test_cross_round_replay),
        cmocka_unit_test(test_bad_setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
