/* server/secround and client/secure together, without sockets: n parties
 * (client/secure, each with a TLS client context whose certificate key
 * signs) and the server's round (server/secround), every message encoded
 * and decoded by the real wire code (fl_wire_encode / fl_wire_decode, its
 * limits and checks) in between. The unmasked sum must equal the plain sum
 * of the parties' quantized updates exactly, with parties that never
 * advertise (a phase ended by its deadline), that leave after their masked
 * input, that lie (a substituted key: excluded), and a round that loses
 * too many (abandoned: no sum). And the certificate check a fleet's
 * sessions run on worker threads over one shared client context, from
 * several threads at once on a fresh context. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mbedtls/x509_crt.h>
#include <uv.h>

#include "client/secure.h"
#include "common/base/error.h"
#include "common/base/rng.h"
#include "common/secagg/saquant.h"
#include "server/secround.h"
#include "tests/support/testcerts.h"

#define N 8
#define P 50 /* parameters; a masked input has P + 1 words */

typedef struct {
    fl_testcerts_t certs;
    mbedtls_x509_crt crt;     /* the parties' (shared) certificate, as the server got it */
    fl_tls_ctx_t *tls;        /* their client context: its key signs, its CA checks */
    fl_secround_t *sr;
    fl_secure_t *party[N];
    char name[N][32];
    int gone[N];
    int excluded[N];
    float delta[N][P];
    double weight[N];
    fl_buf_t *inbox[N];       /* the latest frame the server sent each party */
    uv_loop_t *loop;          /* the unmasking's thread pool, or NULL: inline */
    int done_calls;           /* the `done` callback's calls */
    int ticks;                /* the loop's timer callbacks so far */
    int ticks_at_done;        /* ticks when `done` came */
} world_t;

static int party_of(world_t *w, const char *name)
{
    for (int i = 0; i < N; i++)
        if (strcmp(w->name[i], name) == 0)
            return i;
    return -1;
}

/* Decodes one frame (header + envelope) with the wire's own checks. */
static Fedopt__Envelope *decode(const fl_buf_t *b, size_t off, size_t *used)
{
    uint32_t len = (uint32_t)b->data[off] << 24 | (uint32_t)b->data[off + 1] << 16 |
                   (uint32_t)b->data[off + 2] << 8 | b->data[off + 3];
    Fedopt__Envelope *m = NULL;
    char why[256];
    assert_int_equal(fl_wire_decode(b->data + off + 4, len, &m, why, sizeof why), 0);
    *used = 4 + len;
    return m;
}

static int srv_send(void *ud, const char *name, const Fedopt__Envelope *env)
{
    world_t *w = ud;
    int i = party_of(w, name);
    assert_true(i >= 0);
    if (w->gone[i])
        return FL_ECLOSED;
    fl_buf_unref(w->inbox[i]);
    w->inbox[i] = NULL;
    assert_int_equal(fl_wire_encode(env, &w->inbox[i]), 0);
    return 0;
}

static void srv_done(void *ud)
{
    world_t *w = ud;
    w->done_calls++;
    w->ticks_at_done = w->ticks;
}

static void srv_exclude(void *ud, const char *name, const char *why)
{
    world_t *w = ud;
    int i = party_of(w, name);
    assert_true(i >= 0);
    w->excluded[i] = 1;
    w->gone[i] = 1;
}

/* Hands every frame of b (a party's output) to the server. */
static void to_server(world_t *w, int i, fl_buf_t *b, double now)
{
    for (size_t off = 0, used; b && off < b->len; off += used) {
        Fedopt__Envelope *m = decode(b, off, &used);
        if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_ADVERT)
            fl_secround_on_advert(w->sr, w->name[i], m->secagg_advert, &w->crt, now);
        else if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_SHARES)
            fl_secround_on_shares(w->sr, w->name[i], m->secagg_shares, now);
        else if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_REVEAL)
            fl_secround_on_reveal(w->sr, w->name[i], m->secagg_reveal, now);
        fl_wire_msg_free(m);
    }
}

static void setup_world_loop(world_t *w, uv_loop_t *loop)
{
    memset(w, 0, sizeof *w);
    w->loop = loop;
    assert_int_equal(fl_testcerts_make(&w->certs), 0);
    fl_tls_opts_t to = {.ca_file = fl_testcerts_path(&w->certs, 0, "ca.crt"),
                        .cert_file = fl_testcerts_path(&w->certs, 1, "clients/alice.crt"),
                        .key_file = fl_testcerts_path(&w->certs, 2, "clients/alice.key")};
    assert_int_equal(fl_tls_ctx_new(FL_TLS_CLIENT, &to, &w->tls), 0);
    mbedtls_x509_crt_init(&w->crt);
    assert_int_equal(mbedtls_x509_crt_parse_file(&w->crt, fl_testcerts_path(&w->certs, 3, "clients/alice.crt")), 0);
    fl_secround_config_t cfg = {.dropout = 0.1, .corrupt = 0.05, .clip = 1, .max_weight = 100,
                                .phase_timeout = 10, .seed = 7, .numel = P, .loop = loop};
    fl_secround_cbs_t cbs = {.send = srv_send, .exclude = srv_exclude, .done = srv_done};
    assert_int_equal(fl_secround_create(&cfg, &cbs, w, &w->sr), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 42);
    for (int i = 0; i < N; i++) {
        /* One certificate shared by the parties: CN/party names (as a
         * fleet with shared_certs). */
        snprintf(w->name[i], sizeof w->name[i], "alice/p%d", i);
        for (int j = 0; j < P; j++)
            w->delta[i][j] = (float)(fl_rng_uniform(&r) * 2.4 - 1.2); /* some beyond the clip */
        w->weight[i] = 10 + 10 * i;
    }
}

static void setup_world(world_t *w)
{
    setup_world_loop(w, NULL);
}

static void teardown_world(world_t *w)
{
    for (int i = 0; i < N; i++) {
        fl_secure_free(w->party[i]);
        fl_buf_unref(w->inbox[i]);
    }
    fl_secround_free(w->sr);
    fl_tls_ctx_free(w->tls);
    mbedtls_x509_crt_free(&w->crt);
    fl_testcerts_remove(&w->certs);
}

/* Delivers each party's inbox (the server's latest message to it) and
 * hands the answer back, in party order. */
static void deliver(world_t *w, double now, const int *leave_after_mask)
{
    for (int i = 0; i < N; i++) {
        fl_buf_t *in = w->inbox[i];
        w->inbox[i] = NULL;
        if (!in || w->gone[i] || !w->party[i]) {
            fl_buf_unref(in);
            continue;
        }
        size_t used;
        Fedopt__Envelope *m = decode(in, 0, &used);
        fl_buf_t *out = NULL, *up = NULL, *t = NULL;
        char why[256];
        if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_KEYS) {
            assert_int_equal(fl_secure_on_keys(w->party[i], m->secagg_keys, &out, why, sizeof why), 0);
            to_server(w, i, out, now);
        } else if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_SHARES) {
            assert_int_equal(fl_secure_on_shares(w->party[i], m->secagg_shares), 0);
            assert_true(fl_secure_ready(w->party[i]));
            assert_int_equal(fl_secure_upload(w->party[i], w->delta[i], P, w->weight[i], 4096, &up, &t, NULL), 0);
            /* The transfer's bytes: TensorBegin, one chunk, TensorEnd. */
            size_t off = 0, u;
            Fedopt__Envelope *b = decode(t, off, &u);
            off += u;
            Fedopt__Envelope *c = decode(t, off, &u);
            assert_int_equal(c->tensor_chunk->data.len, (P + 1) * 4);
            fl_secround_on_masked(w->sr, w->name[i], 1, c->tensor_chunk->data.data, c->tensor_chunk->data.len, now);
            fl_wire_msg_free(b);
            fl_wire_msg_free(c);
            if (leave_after_mask && leave_after_mask[i]) {
                w->gone[i] = 1;
                fl_secround_drop(w->sr, w->name[i], now);
            }
        } else if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_UNMASK) {
            assert_int_equal(fl_secure_on_unmask(w->party[i], m->secagg_unmask, &out), 0);
            to_server(w, i, out, now);
        }
        fl_wire_msg_free(m);
        fl_buf_unref(in);
        fl_buf_unref(out);
        fl_buf_unref(up);
        fl_buf_unref(t);
    }
}

/* Runs round 1; silent[i]: party i never advertises; lie[i]: how it lies;
 * leave[i]: it leaves after its masked input. Returns the result code. */
static int run_round(world_t *w, const int *silent, fl_secure_lie_t *lie, const int *leave, float *mean,
                     double *weight)
{
    const char *names[N];
    for (int i = 0; i < N; i++)
        names[i] = w->name[i];
    double now = 100;
    assert_int_equal(fl_secround_begin(w->sr, 5, 1, names, N, now, now + 60), 0);
    for (int i = 0; i < N; i++) {
        if (silent && silent[i])
            continue;
        fl_buf_t *adv = NULL;
        Fedopt__SecAggSetup *s = (Fedopt__SecAggSetup *)fl_secround_setup(w->sr, (size_t)i);
        assert_int_equal(s->party, (uint32_t)i);
        assert_int_equal(s->dim, P + 1);
        assert_int_equal(fl_secure_create(s, 5, 1, w->name[i], w->tls, lie ? lie[i] : FL_SECURE_HONEST, &adv,
                                          &w->party[i]),
                         0);
        to_server(w, i, adv, now);
        fl_buf_unref(adv);
    }
    if (silent) {
        /* Phase 1 waits for the silent ones until its deadline. */
        int any = 0;
        for (int i = 0; i < N; i++)
            any |= w->inbox[i] != NULL;
        assert_false(any);
        fl_secround_tick(w->sr, now + 5);
        for (int i = 0; i < N; i++)
            any |= w->inbox[i] != NULL;
        assert_false(any);
        now += 11;
        fl_secround_tick(w->sr, now);
    }
    for (int phase = 0; phase < 3 && !fl_secround_done(w->sr) && !fl_secround_busy(w->sr); phase++)
        deliver(w, now, leave);
    if (w->loop)
        return 0; /* the caller runs the loop */
    assert_true(fl_secround_done(w->sr));
    const char *why = NULL;
    int rc = fl_secround_result(w->sr, mean, weight, &why);
    return rc;
}

/* The result of a round run with a loop, once the loop ran the job home. */
static int loop_result(world_t *w, float *mean, double *weight)
{
    const char *why = NULL;
    assert_true(fl_secround_done(w->sr));
    return fl_secround_result(w->sr, mean, weight, &why);
}

/* The plain sum of the quantized inputs of parties in[] (scale from setup). */
static void plain_sum(world_t *w, const int *in, uint32_t *sum)
{
    const Fedopt__SecAggSetup *s = fl_secround_setup(w->sr, 0);
    fl_saquant_t q = {.clip = s->clip, .scale = s->scale, .max_weight = s->max_weight, .n = s->n};
    uint32_t x[P + 1];
    memset(sum, 0, (P + 1) * sizeof *sum);
    for (int i = 0; i < N; i++) {
        if (!in[i])
            continue;
        assert_int_equal(fl_saquant_encode(&q, w->delta[i], P, w->weight[i], x), 0);
        for (int j = 0; j <= P; j++)
            sum[j] += x[j];
    }
}

static void test_exact_sum(void **state)
{
    world_t w;
    setup_world(&w);
    float mean[P];
    double weight;
    assert_int_equal(run_round(&w, NULL, NULL, NULL, mean, &weight), 0);
    int all[N] = {1, 1, 1, 1, 1, 1, 1, 1};
    uint32_t want[P + 1];
    plain_sum(&w, all, want);
    const uint32_t *got = fl_secround_sum(w.sr);
    assert_non_null(got);
    assert_memory_equal(got, want, sizeof want);
    /* 10 + 20 + ... + 80 = 360 */
    assert_true(weight == 360);
    /* The weighted mean within the quantization's step of the float one. */
    for (int j = 0; j < P; j++) {
        double m = 0;
        for (int i = 0; i < N; i++) {
            double v = w.delta[i][j] > 1 ? 1 : w.delta[i][j] < -1 ? -1 : w.delta[i][j];
            m += w.weight[i] * v;
        }
        assert_true(fabs(mean[j] - m / 360) < 1e-5);
    }
    fl_secround_end(w.sr);
    teardown_world(&w);
}

static void test_dropouts_and_deadline(void **state)
{
    world_t w;
    setup_world(&w);
    int silent[N] = {0, 0, 0, 0, 0, 0, 1, 0}; /* party 6 never advertises */
    int leave[N] = {0, 0, 0, 0, 0, 0, 0, 1};  /* 7 leaves before unmasking: each survivor keeps t = 5 */
    float mean[P];
    double weight;
    assert_int_equal(run_round(&w, silent, NULL, leave, mean, &weight), 0);
    int in[N] = {1, 1, 1, 1, 1, 1, 0, 1};
    uint32_t want[P + 1];
    plain_sum(&w, in, want);
    assert_memory_equal(fl_secround_sum(w.sr), want, sizeof want);
    assert_true(weight == 360 - 70);
    fl_saserver_stats_t st;
    uint32_t k, t;
    fl_secround_stats(w.sr, &st, &k, &t);
    assert_int_equal(st.u1, 7);
    assert_int_equal(st.u3, 7);
    assert_int_equal(st.u4, 6);
    fl_secround_end(w.sr);
    teardown_world(&w);
}

static void test_substituted_key_excluded(void **state)
{
    world_t w;
    setup_world(&w);
    fl_secure_lie_t lie[N] = {FL_SECURE_LIE_KEY};
    float mean[P];
    double weight;
    assert_int_equal(run_round(&w, NULL, lie, NULL, mean, &weight), 0);
    assert_true(w.excluded[0]);
    for (int i = 1; i < N; i++)
        assert_false(w.excluded[i]);
    int in[N] = {0, 1, 1, 1, 1, 1, 1, 1};
    uint32_t want[P + 1];
    plain_sum(&w, in, want);
    assert_memory_equal(fl_secround_sum(w.sr), want, sizeof want);
    fl_secround_end(w.sr);
    teardown_world(&w);
}

static void test_too_many_leave_abandoned(void **state)
{
    world_t w;
    setup_world(&w);
    const Fedopt__SecAggSetup *s;
    float mean[P];
    double weight;
    /* n = 8: complete graph k = 7, threshold t; leaving k - t + 1 parties
     * after their masked input leaves a survivor's seed short of t shares. */
    fl_secround_plan_t plan;
    assert_int_equal(fl_secround_plan(N, 0.1, 0.05, 1, 100, &plan), 0);
    int leave[N] = {0};
    for (uint32_t i = 0; i < plan.k - plan.t + 1; i++)
        leave[i] = 1;
    int rc = run_round(&w, NULL, NULL, leave, mean, &weight);
    s = fl_secround_setup(w.sr, 0);
    assert_int_equal(s->t, plan.t);
    assert_int_equal(rc, FL_ECANCELED);
    assert_null(fl_secround_sum(w.sr));
    fl_secround_end(w.sr);
    teardown_world(&w);
}

static void test_plan_refuses_tiny_rounds(void **state)
{
    fl_secround_plan_t p;
    assert_int_equal(fl_secround_plan(2, 0.1, 0.05, 1, 1000, &p), FL_ERANGE);
    assert_int_equal(fl_secround_plan(4, 0.1, 0.05, 1, 1000, &p), FL_ERANGE);
    assert_int_equal(fl_secround_plan(5, 0.1, 0.05, 1, 1000, &p), 0);
    assert_int_equal(fl_secround_plan(100, 0.1, 0.05, 1, 1000, &p), 0);
    assert_int_equal(p.k, 78);
    assert_int_equal(p.t, 52);
    assert_false(p.complete);
}

static void on_tick(uv_timer_t *t)
{
    world_t *w = t->data;
    w->ticks++;
    uv_close((uv_handle_t *)t, NULL);
}

/* With a loop, the unmasking runs in the thread pool: the last reveal
 * returns with the round busy (not done), the loop's own callbacks run
 * before the job's result is back, and a party leaving, a deadline
 * passing and a late message while it runs change nothing: the sum is
 * still exact. (Unmasking on the loop thread would be done at the last
 * reveal, before the timer.) */
static void test_unmask_off_the_loop(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    world_t w;
    setup_world_loop(&w, &loop);
    int leave[N] = {0, 0, 1, 0, 0, 0, 0, 0}; /* one leaves after its masked input */
    float mean[P];
    double weight;
    assert_int_equal(run_round(&w, NULL, NULL, leave, mean, &weight), 0);
    assert_true(fl_secround_busy(w.sr));
    assert_false(fl_secround_done(w.sr));
    assert_int_equal(w.done_calls, 0);
    /* the round is held while the job runs */
    const char *why = NULL;
    assert_int_equal(fl_secround_result(w.sr, mean, &weight, &why), FL_ESTATE);
    assert_null(fl_secround_sum(w.sr));
    /* a survivor leaves, every deadline passes: the survivors stay fixed */
    fl_secround_drop(w.sr, w.name[5], 1e9);
    fl_secround_tick(w.sr, 1e9);
    assert_true(fl_secround_busy(w.sr));
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &w;
    uv_timer_start(&t, on_tick, 0, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w.done_calls, 1);
    assert_int_equal(w.ticks_at_done, 1); /* the loop ran its timer while the job was out */
    assert_false(fl_secround_busy(w.sr));
    assert_int_equal(loop_result(&w, mean, &weight), 0);
    int in[N] = {1, 1, 1, 1, 1, 1, 1, 1};
    uint32_t want[P + 1];
    plain_sum(&w, in, want);
    assert_memory_equal(fl_secround_sum(w.sr), want, sizeof want);
    fl_saserver_stats_t st;
    uint32_t k, tt;
    fl_secround_stats(w.sr, &st, &k, &tt);
    assert_int_equal(st.rebuilt_s, 0);
    assert_int_equal(st.rebuilt_b, 8);
    fl_secround_end(w.sr);
    teardown_world(&w);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A stop while the job runs: the round closes when the job is back, with
 * nothing unmasked, and the next round may begin. */
static void test_end_while_busy(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    world_t w;
    setup_world_loop(&w, &loop);
    float mean[P];
    double weight;
    assert_int_equal(run_round(&w, NULL, NULL, NULL, mean, &weight), 0);
    assert_true(fl_secround_busy(w.sr));
    fl_secround_end(w.sr);
    assert_int_equal(fl_secround_round(w.sr), 1); /* still held */
    const char *names[N];
    for (int i = 0; i < N; i++)
        names[i] = w.name[i];
    assert_int_equal(fl_secround_begin(w.sr, 5, 2, names, N, 200, 260), FL_ESTATE);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(w.done_calls, 1);
    assert_int_equal(fl_secround_round(w.sr), 0);
    assert_null(fl_secround_sum(w.sr));
    assert_int_equal(fl_secround_begin(w.sr, 5, 2, names, N, 200, 260), 0);
    fl_secround_end(w.sr);
    teardown_world(&w);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A round that loses so many parties before it gets going that it can no
 * longer reach its threshold is abandoned at the drop that makes it
 * hopeless, not at its phase's deadline; one party fewer gone and it waits. */
static void test_hopeless_round_abandoned_at_once(void **state)
{
    world_t w;
    setup_world(&w);
    fl_secround_plan_t plan;
    assert_int_equal(fl_secround_plan(N, 0.1, 0.05, 1, 100, &plan), 0);
    const char *names[N];
    for (int i = 0; i < N; i++)
        names[i] = w.name[i];
    double now = 100;
    assert_int_equal(fl_secround_begin(w.sr, 5, 1, names, N, now, now + 60), 0);
    /* t + 1 parties are needed to share keys: N - (t + 1) may go */
    uint32_t may_go = N - (plan.t + 1);
    for (uint32_t i = 0; i < may_go; i++)
        fl_secround_drop(w.sr, w.name[i], now);
    assert_false(fl_secround_done(w.sr));
    /* one advert in, then one more party gone: no deadline passed */
    fl_buf_t *adv = NULL;
    assert_int_equal(fl_secure_create(fl_secround_setup(w.sr, N - 1), 5, 1, w.name[N - 1], w.tls, FL_SECURE_HONEST,
                                      &adv, &w.party[N - 1]),
                     0);
    to_server(&w, N - 1, adv, now);
    fl_buf_unref(adv);
    assert_false(fl_secround_done(w.sr));
    fl_secround_drop(w.sr, w.name[may_go], now + 0.5);
    assert_true(fl_secround_done(w.sr));
    float mean[P];
    double weight;
    const char *why = NULL;
    assert_int_equal(fl_secround_result(w.sr, mean, &weight, &why), FL_ECANCELED);
    assert_non_null(why);
    assert_non_null(strstr(why, "too few parties left"));
    assert_null(fl_secround_sum(w.sr));
    for (int i = 0; i < N; i++)
        assert_null(w.inbox[i]); /* nothing was forwarded */
    fl_secround_end(w.sr);
    teardown_world(&w);
}

/* The certificate check a client runs on its neighbours' certificates. */
static void test_check_cert(void **state)
{
    world_t w;
    setup_world(&w);
    char cn[80];
    mbedtls_x509_crt c;
    mbedtls_x509_crt_init(&c);
    assert_int_equal(fl_tls_ctx_check_cert(w.tls, w.crt.raw.p, w.crt.raw.len, &c, cn), 0);
    assert_string_equal(cn, "alice");
    mbedtls_x509_crt_free(&c);
    /* again: remembered, the same answer */
    mbedtls_x509_crt_init(&c);
    assert_int_equal(fl_tls_ctx_check_cert(w.tls, w.crt.raw.p, w.crt.raw.len, &c, cn), 0);
    assert_string_equal(cn, "alice");
    mbedtls_x509_crt_free(&c);
    /* the same certificate with one bit of its signature flipped is not the
     * one remembered: verified, and refused */
    uint8_t *bad = malloc(w.crt.raw.len);
    assert_non_null(bad);
    memcpy(bad, w.crt.raw.p, w.crt.raw.len);
    bad[w.crt.raw.len - 3] ^= 1;
    mbedtls_x509_crt_init(&c);
    assert_int_equal(fl_tls_ctx_check_cert(w.tls, bad, w.crt.raw.len, &c, cn), FL_EAUTH);
    mbedtls_x509_crt_free(&c);
    mbedtls_x509_crt_init(&c);
    assert_int_equal(fl_tls_ctx_check_cert(w.tls, bad, w.crt.raw.len, &c, cn), FL_EAUTH);
    mbedtls_x509_crt_free(&c);
    free(bad);
    /* another CA's client */
    mbedtls_x509_crt m;
    mbedtls_x509_crt_init(&m);
    assert_int_equal(mbedtls_x509_crt_parse_file(&m, fl_testcerts_path(&w.certs, 0, "other/clients/mallory.crt")), 0);
    mbedtls_x509_crt_init(&c);
    assert_int_equal(fl_tls_ctx_check_cert(w.tls, m.raw.p, m.raw.len, &c, cn), FL_EAUTH);
    mbedtls_x509_crt_free(&c);
    mbedtls_x509_crt_free(&m);
    /* an expired one */
    mbedtls_x509_crt_init(&m);
    assert_int_equal(mbedtls_x509_crt_parse_file(&m, fl_testcerts_path(&w.certs, 0, "clients/old.crt")), 0);
    mbedtls_x509_crt_init(&c);
    assert_int_equal(fl_tls_ctx_check_cert(w.tls, m.raw.p, m.raw.len, &c, cn), FL_EAUTH);
    mbedtls_x509_crt_free(&c);
    mbedtls_x509_crt_free(&m);
    /* not a certificate */
    const uint8_t junk[] = {0x30, 0x03, 0x02, 0x01, 0x00};
    mbedtls_x509_crt_init(&c);
    assert_int_equal(fl_tls_ctx_check_cert(w.tls, junk, sizeof junk, &c, cn), FL_EFORMAT);
    mbedtls_x509_crt_free(&c);
    assert_non_null(fl_tls_ctx_key(w.tls));
    teardown_world(&w);
}

/* A fleet sharing one certificate checks its neighbours' certificates in
 * libuv's thread pool, on one client context: several threads at once on a
 * context fresh from fl_tls_ctx_new (nothing verified, nothing remembered
 * yet), each checking both clients' certificates and a forged one. Every
 * answer must be the single-threaded one; a context that built shared
 * state lazily on first use (mbedTLS's EC tables, the ring of verified
 * digests) would leak or corrupt it here, which the sanitizer builds
 * report (helgrind on this test reports only mbedTLS's own self-test
 * counters in its BSS). */
#define CHECKERS 4
typedef struct {
    fl_tls_ctx_t *tls;
    const mbedtls_x509_crt *alice, *bob;
    const uint8_t *forged;
    pthread_barrier_t *go;
    int ok;
} checker_t;

static void *checker(void *arg)
{
    checker_t *c = arg;
    pthread_barrier_wait(c->go);
    int ok = 1;
    for (int rep = 0; rep < 3; rep++) {
        char cn[80];
        mbedtls_x509_crt x;
        mbedtls_x509_crt_init(&x);
        ok &= fl_tls_ctx_check_cert(c->tls, c->alice->raw.p, c->alice->raw.len, &x, cn) == 0 &&
              strcmp(cn, "alice") == 0;
        mbedtls_x509_crt_free(&x);
        mbedtls_x509_crt_init(&x);
        ok &= fl_tls_ctx_check_cert(c->tls, c->forged, c->bob->raw.len, &x, cn) == FL_EAUTH;
        mbedtls_x509_crt_free(&x);
        mbedtls_x509_crt_init(&x);
        ok &= fl_tls_ctx_check_cert(c->tls, c->bob->raw.p, c->bob->raw.len, &x, cn) == 0 && strcmp(cn, "bob") == 0;
        mbedtls_x509_crt_free(&x);
    }
    c->ok = ok;
    return NULL;
}

static void test_check_cert_threads(void **state)
{
    (void)state;
    fl_testcerts_t certs;
    assert_int_equal(fl_testcerts_make(&certs), 0);
    fl_tls_opts_t to = {.ca_file = fl_testcerts_path(&certs, 0, "ca.crt"),
                        .cert_file = fl_testcerts_path(&certs, 1, "clients/alice.crt"),
                        .key_file = fl_testcerts_path(&certs, 2, "clients/alice.key")};
    fl_tls_ctx_t *tls = NULL;
    assert_int_equal(fl_tls_ctx_new(FL_TLS_CLIENT, &to, &tls), 0);
    mbedtls_x509_crt alice, bob;
    mbedtls_x509_crt_init(&alice);
    mbedtls_x509_crt_init(&bob);
    assert_int_equal(mbedtls_x509_crt_parse_file(&alice, fl_testcerts_path(&certs, 3, "clients/alice.crt")), 0);
    assert_int_equal(mbedtls_x509_crt_parse_file(&bob, fl_testcerts_path(&certs, 4, "clients/bob.crt")), 0);
    uint8_t *forged = malloc(bob.raw.len);
    assert_non_null(forged);
    memcpy(forged, bob.raw.p, bob.raw.len);
    forged[bob.raw.len - 3] ^= 1; /* the signature */
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, CHECKERS), 0);
    pthread_t th[CHECKERS];
    checker_t c[CHECKERS];
    for (int i = 0; i < CHECKERS; i++) {
        c[i] = (checker_t){.tls = tls, .alice = &alice, .bob = &bob, .forged = forged, .go = &go};
        assert_int_equal(pthread_create(&th[i], NULL, checker, &c[i]), 0);
    }
    for (int i = 0; i < CHECKERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_true(c[i].ok);
    }
    pthread_barrier_destroy(&go);
    free(forged);
    mbedtls_x509_crt_free(&alice);
    mbedtls_x509_crt_free(&bob);
    fl_tls_ctx_free(tls);
    fl_testcerts_remove(&certs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_sum),
        cmocka_unit_test(test_dropouts_and_deadline),
        cmocka_unit_test(test_substituted_key_excluded),
        cmocka_unit_test(test_too_many_leave_abandoned),
        cmocka_unit_test(test_plan_refuses_tiny_rounds),
        cmocka_unit_test(test_check_cert),
        cmocka_unit_test(test_check_cert_threads),
        cmocka_unit_test(test_unmask_off_the_loop),
        cmocka_unit_test(test_end_while_busy),
        cmocka_unit_test(test_hopeless_round_abandoned_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
