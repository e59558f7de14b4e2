/* The shared round model of a session pool (client/session), over real
 * mutual TLS on loopback against a scripted server in the same loop.
 *
 * Four sessions share a pool of one job. The server offers round 1 of `cnn`
 * with model A to sessions 0-2, and when the first of them has uploaded (the
 * other two jobs still wait for the one slot) offers the same round with a
 * different model B to session 3. Checks: the pool never holds more than one shared model while two or
 * more jobs wait for the slot (a waiting client holds a reference, not a
 * copy); sessions 0-2 upload deltas equal bit for bit to training model A
 * locally on their data, bit for bit (training from B lands 1e-3 or more
 * away: the worker's copy came from the shared model);
 * session 3, whose transfer's CRC differs from the shared copy's, declines
 * the task instead of training on the wrong model. The pool keeps its job
 * slot's model (fl_session_pool_keep_models, as a fleet's does): the three
 * trainings build one model between them, and the bit-for-bit comparison
 * with fresh models shows the reuse changes nothing. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "client/session.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"
#include "common/base/rng.h"
#include "common/net/tls.h"
#include "common/base/version.h"
#include "common/nn/train.h"
#include "common/net/wire.h"
#include "tests/support/testcerts.h"

#define NS 4
#define PER 160

static struct {
    fl_testcerts_t certs;
    uv_loop_t loop;
    uv_timer_t watchdog;
    uv_prepare_t sampler;
    fl_tls_ctx_t *sctx, *cctx;
    fl_tls_server_t *srv;
    fl_session_pool_t *pool;
    fl_session_t *s[NS];
    fl_tls_conn_t *conn[NS]; /* server side, by session */
    int welcomed, uploads, declines, done, stopping;
    int declined[NS];
    float *delta[NS];
    size_t numel;
    fl_buf_t *model_a, *model_b;
    float *a, *b; /* models A and B (B: A with the last output bias + 0.5) */
    unsigned max_models, max_waiting;
    fl_dataset_t data;
    uint32_t index[NS][PER];
} T;

static void stop_everything(void)
{
    if (T.stopping)
        return;
    T.stopping = 1;
    for (int i = 0; i < NS; i++)
        fl_session_stop(T.s[i]);
    fl_tls_server_close(T.srv);
    uv_close((uv_handle_t *)&T.sampler, NULL);
    uv_close((uv_handle_t *)&T.watchdog, NULL);
}

static void send_offer(int i, fl_buf_t *model)
{
    Fedopt__ClientOptSettings os = FEDOPT__CLIENT_OPT_SETTINGS__INIT;
    os.learning_rate = 0.05f;
    os.epochs = 1;
    os.batch_size = 20;
    os.seed = 3;
    Fedopt__TaskOffer o = FEDOPT__TASK_OFFER__INIT;
    o.run_id = 1;
    o.round_id = 1;
    o.model = "cnn";
    o.num_params = T.numel;
    o.opt = &os;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    env.task_offer = &o;
    assert_int_equal(fl_tls_conn_send_msg(T.conn[i], &env), 0);
    assert_int_equal(fl_tls_conn_send(T.conn[i], model), 0);
}

static int conn_index(fl_tls_conn_t *c)
{
    for (int i = 0; i < NS; i++)
        if (T.conn[i] == c)
            return i;
    return -1;
}

static void maybe_finish(void)
{
    if (T.uploads + T.declines == NS)
        stop_everything();
}

static void srv_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind == FL_WIRE_EV_TENSOR) {
        int i = conn_index(c);
        assert_true(i >= 0);
        assert_int_equal(ev->purpose, FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA);
        assert_int_equal(ev->nbytes, T.numel * sizeof(float));
        T.delta[i] = (float *)ev->data;
        ev->data = NULL;
        /* The first upload: the other two jobs still wait for (or hold) the
         * one slot, so the round's shared model is alive when B arrives. */
        if (++T.uploads == 1)
            send_offer(NS - 1, T.model_b);
        maybe_finish();
        return;
    }
    if (ev->kind != FL_WIRE_EV_MESSAGE || !ev->msg)
        return;
    Fedopt__Envelope *m = ev->msg;
    if (m->msg_case == FEDOPT__ENVELOPE__MSG_HELLO) {
        int i = -1;
        assert_int_equal(sscanf(m->hello->client_name, "s%d", &i), 1);
        assert_true(i >= 0 && i < NS);
        T.conn[i] = c;
        fl_tls_conn_set_max_tensor(c, T.numel * sizeof(float));
        Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
        w.protocol_version = FL_PROTOCOL_VERSION;
        w.heartbeat_ms = 1000;
        w.max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
        Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
        env.msg_case = FEDOPT__ENVELOPE__MSG_WELCOME;
        env.welcome = &w;
        assert_int_equal(fl_tls_conn_send_msg(c, &env), 0);
        if (++T.welcomed == NS) {
            for (int k = 0; k < NS - 1; k++)
                send_offer(k, T.model_a);
        }
    } else if (m->msg_case == FEDOPT__ENVELOPE__MSG_TASK_REPLY && !m->task_reply->accept) {
        int i = conn_index(c);
        assert_true(i >= 0);
        T.declined[i] = 1;
        T.declines++;
        maybe_finish();
    }
}

static void srv_open(fl_tls_conn_t *c, void *ud) {}
static void srv_close(fl_tls_conn_t *c, int reason, void *ud) {}

static void on_sample(uv_prepare_t *p)
{
    unsigned m = fl_session_pool_models(T.pool), w = fl_session_pool_waiting(T.pool);
    if (m > T.max_models)
        T.max_models = m;
    /* Only moments with a shared model alive count as "waiting with it". */
    if (m && w > T.max_waiting)
        T.max_waiting = w;
}

static void on_watchdog(uv_timer_t *t)
{
    fprintf(stderr, "watchdog: stuck (%d uploads, %d declines)\n", T.uploads, T.declines);
    stop_everything();
}

static void on_done(fl_session_t *s, int rc, void *ud) { T.done++; }

/* The watchdog's limit: 120 s, or, when the runner states a longer
 * per-program limit (FEDOPT_TEST_TIMEOUT: make test-cross runs this under
 * qemu-user, where four sessions' training takes far longer), a minute less
 * than that, so the diagnostic still comes before the runner's kill. */
static uint64_t watchdog_ms(void)
{
    const char *e = getenv("FEDOPT_TEST_TIMEOUT");
    long s = e ? strtol(e, NULL, 10) : 0;
    return s > 180 ? (uint64_t)(s - 60) * 1000 : 120000;
}

/* Synthetic 28x28 images with 10 classes: only the arithmetic matters here. */
static void make_data(void)
{
    int64_t shape[3] = {1, 28, 28};
    fl_dataset_init(&T.data);
    assert_int_equal(fl_dataset_alloc(&T.data, NS * PER, 3, shape, 10), 0);
    fl_rng_t r;
    fl_rng_seed(&r, 11);
    for (size_t i = 0; i < T.data.n * T.data.dim; i++)
        T.data.x[i] = (float)fl_rng_uniform(&r);
    for (size_t i = 0; i < T.data.n; i++)
        T.data.y[i] = (int32_t)fl_rng_below(&r, 10);
    for (int k = 0; k < NS; k++)
        for (int i = 0; i < PER; i++)
            T.index[k][i] = (uint32_t)(k * PER + i);
}

static void test_shared_model(void **state)
{
    (void)state;
    fl_log_set_level(FL_LOG_ERROR);
    /* As fedopt-client does: a write to a connection the peer closed (the
     * watchdog's teardown) is an EPIPE error, not a process killed. */
    signal(SIGPIPE, SIG_IGN);
    fl_gemm_set_threads(1);
    fl_session_pool_threads(2);
    assert_int_equal(fl_testcerts_make(&T.certs), 0);
    make_data();
    fl_model_spec_t spec;
    fl_model_t *m = NULL;
    assert_int_equal(fl_model_spec_from_dataset(&T.data, &spec), 0);
    assert_int_equal(fl_model_create("cnn", &spec, &m), 0);
    fl_model_init_params(m, 1);
    T.numel = m->params.numel;
    T.a = malloc(T.numel * sizeof(float));
    memcpy(T.a, m->params.data, T.numel * sizeof(float));
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 1, T.a, T.numel * sizeof(float),
                                           FL_WIRE_MAX_CHUNK, &T.model_a),
                     0);
    /* Model B: a copy with the last output bias changed (a copy, because
     * adding and subtracting 0.5 again would not give A back bit for bit). */
    T.b = malloc(T.numel * sizeof(float));
    memcpy(T.b, T.a, T.numel * sizeof(float));
    T.b[T.numel - 1] += 0.5f;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 1, T.b, T.numel * sizeof(float),
                                           FL_WIRE_MAX_CHUNK, &T.model_b),
                     0);

    assert_int_equal(uv_loop_init(&T.loop), 0);
    fl_tls_opts_t so = {.ca_file = fl_testcerts_path(&T.certs, 0, "ca.crt"),
                        .cert_file = fl_testcerts_path(&T.certs, 1, "server.crt"),
                        .key_file = fl_testcerts_path(&T.certs, 2, "server.key"),
                        .max_tensor = T.numel * sizeof(float)};
    assert_int_equal(fl_tls_ctx_new(FL_TLS_SERVER, &so, &T.sctx), 0);
    fl_tls_cbs_t cbs = {.on_open = srv_open, .on_message = srv_message, .on_close = srv_close};
    assert_int_equal(fl_tls_server_start(&T.loop, T.sctx, "127.0.0.1", 0, &cbs, NULL, &T.srv), 0);
    fl_tls_opts_t co = {.ca_file = fl_testcerts_path(&T.certs, 0, "ca.crt"),
                        .cert_file = fl_testcerts_path(&T.certs, 1, "clients/alice.crt"),
                        .key_file = fl_testcerts_path(&T.certs, 2, "clients/alice.key")};
    assert_int_equal(fl_tls_ctx_new(FL_TLS_CLIENT, &co, &T.cctx), 0);
    assert_int_equal(fl_session_pool_create(&T.loop, 1, &T.pool), 0);
    assert_int_equal(fl_session_pool_keep_models(T.pool), 0);
    assert_int_equal(fl_session_pool_keep_models(T.pool), 0); /* twice is harmless */
    assert_int_equal(fl_session_pool_builds(T.pool), 0);
    uv_timer_init(&T.loop, &T.watchdog);
    uv_timer_start(&T.watchdog, on_watchdog, watchdog_ms(), 0);
    uv_prepare_init(&T.loop, &T.sampler);
    uv_prepare_start(&T.sampler, on_sample);
    static const char *models[] = {"cnn"};
    char names[NS][8];
    for (int i = 0; i < NS; i++) {
        snprintf(names[i], sizeof names[i], "s%d", i);
        fl_session_opts_t o = {.host = "127.0.0.1",
                               .port = fl_tls_server_port(T.srv),
                               .server_name = "localhost",
                               .tls = T.cctx,
                               .name = names[i],
                               .id = (uint64_t)i,
                               .data = &T.data,
                               .index = T.index[i],
                               .nindex = PER,
                               .models = models,
                               .nmodels = 1,
                               .gemm_threads = 1,
                               .seed = 1,
                               .on_done = on_done};
        assert_int_equal(fl_session_start(T.pool, &o, &T.s[i]), 0);
    }
    uv_run(&T.loop, UV_RUN_DEFAULT);
    assert_int_equal(T.done, NS);

    assert_int_equal(T.uploads, NS - 1);
    assert_int_equal(T.declines, 1);
    assert_true(T.declined[NS - 1]);
    assert_int_equal(T.max_models, 1);
    assert_true(T.max_waiting >= 2);
    assert_int_equal(fl_session_pool_models(T.pool), 0);
    assert_int_equal(fl_session_pool_builds(T.pool), 1); /* one model for the slot's three trainings */
    /* Each upload is what training model A on that client's data gives. */
    for (int i = 0; i < NS - 1; i++) {
        assert_non_null(T.delta[i]);
        fl_dataset_t mine;
        fl_dataset_init(&mine);
        assert_int_equal(fl_dataset_subset(&T.data, T.index[i], PER, &mine), 0);
        /* A fresh model per client, against the slot's reused one. */
        fl_model_free(m);
        assert_int_equal(fl_model_create("cnn", &spec, &m), 0);
        assert_int_equal(fl_model_set_params(m, T.a, T.numel), 0);
        fl_train_config_t cfg = {.epochs = 1, .batch = 20, .sgd = {.lr = 0.05f}, .seed = 3,
                                 .ids = {1, 1, (uint64_t)i}, .nids = 3};
        fl_train_stats_t st;
        assert_int_equal(fl_train_run(m, &mine, &cfg, NULL, NULL, &st), 0);
        double da = 0, db = 0;
        for (size_t k = 0; k < T.numel; k++)
            da = fmax(da, fabs((double)(m->params.data[k] - T.a[k]) - T.delta[i][k]));
        /* The same training from model B, to show the comparison tells them apart. */
        fl_model_free(m);
        assert_int_equal(fl_model_create("cnn", &spec, &m), 0);
        assert_int_equal(fl_model_set_params(m, T.b, T.numel), 0);
        assert_int_equal(fl_train_run(m, &mine, &cfg, NULL, NULL, &st), 0);
        for (size_t k = 0; k < T.numel; k++)
            db = fmax(db, fabs((double)(m->params.data[k] - T.b[k]) - T.delta[i][k]));
        fprintf(stderr, "client %d: delta vs local training from A: max |diff| %.3g; from B: %.3g\n", i, da, db);
        /* Bit for bit what training A gives, and far from what B gives. */
        assert_true(da == 0);
        assert_true(db >= 1e-3);
        fl_dataset_free(&mine);
        free(T.delta[i]);
    }

    for (int i = 0; i < NS; i++)
        fl_session_free(T.s[i]);
    fl_session_pool_free(T.pool);
    assert_int_equal(uv_run(&T.loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&T.loop), 0);
    fl_tls_ctx_free(T.cctx);
    fl_tls_ctx_free(T.sctx);
    fl_buf_unref(T.model_a);
    fl_buf_unref(T.model_b);
    free(T.a);
    free(T.b);
    fl_model_free(m);
    fl_dataset_free(&T.data);
    fl_testcerts_remove(&T.certs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
