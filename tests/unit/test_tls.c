/* test_tls: mutual TLS over libuv on loopback — the handshake matrix (right
 * certificates; refused without a client certificate, with another CA's,
 * with an expired one, with the wrong server name, from a plaintext peer),
 * message exchange, a 50 MiB model crossing intact, frame violations over a
 * real connection, back-pressure and pause/resume (and what a held-up
 * transfer costs in memory: nothing). Each refusal must leave a
 * clear log line and the server must keep serving the next client. Server
 * handshakes run in the thread pool: a connected client's heartbeats are
 * answered, in order, while a storm of handshakes is in progress there, and
 * records are decrypted there too: heartbeats are answered while several
 * large uploads are being decrypted. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/net/certs.h"
#include "common/net/tls.h"
#include "common/base/version.h"
#include "common/net/wire.h"
#include "tests/support/emulation.h"
#include "tests/support/testcerts.h"

static fl_testcerts_t g_certs;
static FILE *g_log; /* every log line of the test goes here too */

/* ---- log capture -------------------------------------------------------- */

static long log_mark(void)
{
    fflush(g_log);
    return ftell(g_log);
}

/* True when a log line written since mark contains every one of the needles. */
static int log_has(long mark, const char *a, const char *b)
{
    fflush(g_log);
    long end = ftell(g_log);
    if (end <= mark)
        return 0;
    char *buf = calloc(1, (size_t)(end - mark) + 1);
    fseek(g_log, mark, SEEK_SET);
    size_t n = fread(buf, 1, (size_t)(end - mark), g_log);
    buf[n] = '\0';
    fseek(g_log, 0, SEEK_END);
    int found = 0;
    for (char *line = strtok(buf, "\n"); line && !found; line = strtok(NULL, "\n"))
        found = strstr(line, a) && (!b || strstr(line, b));
    if (!found)
        fprintf(stderr, "no log line with '%s'%s%s%s (the log is replayed at the end)\n", a,
                b ? " and '" : "", b ? b : "", b ? "'" : "");
    free(buf);
    return found;
}

/* ---- the test server ---------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    fl_tls_ctx_t *ctx;
    fl_tls_server_t *srv;
    int opens, closes, hellos, tensors;
    int hs_fails, hs_reason; /* on_handshake_fail */
    int last_close_reason;
    char last_peer[80];
    uint8_t *tensor;         /* last tensor received (taken from the event) */
    size_t tensor_bytes;
    fl_buf_t *model;         /* sent after Welcome when set */
    uint64_t model_params;
    int pause_first;         /* pause reading on open, resume on a timer */
    uv_timer_t resume_timer;
    fl_tls_conn_t *paused;
    int pause_on_update;     /* pause reading inside on_message(Update), resume on a timer */
    size_t queued_after_send; /* fl_tls_conn_queued right after queueing the model */
    int drains;
    int keep;                /* keep the connection after Bye (max_conns test) */
    int hold_on_update;      /* pause reading inside on_message(Update), no resume */
    int updates;
    fl_tls_conn_t *conns[16]; /* the first connections opened */
} server_t;

static void srv_on_open(fl_tls_conn_t *c, void *ud)
{
    server_t *s = ud;
    if (s->opens < 16)
        s->conns[s->opens] = c;
    s->opens++;
    snprintf(s->last_peer, sizeof s->last_peer, "%s", fl_tls_conn_peer(c));
}

static void send_welcome(fl_tls_conn_t *c)
{
    Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
    w.protocol_version = FL_PROTOCOL_VERSION;
    w.server_name = "test-server";
    w.peer_identity = (char *)fl_tls_conn_peer(c);
    w.max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_WELCOME;
    m.welcome = &w;
    assert_int_equal(fl_tls_conn_send_msg(c, &m), 0);
}

static void send_model(server_t *s, fl_tls_conn_t *c)
{
    Fedopt__TaskOffer t = FEDOPT__TASK_OFFER__INIT;
    t.round_id = 7;
    t.model = "test";
    t.num_params = s->model_params;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    m.task_offer = &t;
    assert_int_equal(fl_tls_conn_send_msg(c, &m), 0);
    assert_int_equal(fl_tls_conn_send(c, s->model), 0);
    s->queued_after_send = fl_tls_conn_queued(c);
}

static void resume_later(uv_timer_t *t);

static void srv_on_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    server_t *s = ud;
    if (ev->kind == FL_WIRE_EV_TENSOR) {
        s->tensors++;
        free(s->tensor);
        s->tensor = ev->data; /* take it */
        s->tensor_bytes = ev->nbytes;
        ev->data = NULL;
        return;
    }
    if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_HELLO) {
        s->hellos++;
        assert_int_equal(ev->msg->hello->protocol_version, FL_PROTOCOL_VERSION);
        send_welcome(c);
        if (s->model)
            send_model(s, c);
    } else if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_UPDATE && s->hold_on_update) {
        s->updates++;
        fl_tls_conn_pause_read(c);
    } else if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_UPDATE && s->pause_on_update) {
        /* The delta's bytes are likely in the same read buffer: they must be
         * kept (stashed) and delivered after the resume. */
        fl_tls_conn_pause_read(c);
        s->paused = c;
        uv_timer_start(&s->resume_timer, resume_later, 100, 0);
    } else if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_BYE) {
        fl_tls_conn_close(c);
    }
}

static void srv_on_drain(fl_tls_conn_t *c, void *ud)
{
    ((server_t *)ud)->drains++;
}

static void resume_later(uv_timer_t *t)
{
    server_t *s = t->data;
    if (s->paused)
        fl_tls_conn_resume_read(s->paused);
    s->paused = NULL;
}

static void srv_on_open_pause(fl_tls_conn_t *c, void *ud)
{
    server_t *s = ud;
    srv_on_open(c, ud);
    fl_tls_conn_pause_read(c);
    s->paused = c;
    uv_timer_start(&s->resume_timer, resume_later, 200, 0);
}

static void srv_on_close(fl_tls_conn_t *c, int reason, void *ud)
{
    server_t *s = ud;
    s->closes++;
    s->last_close_reason = reason;
    if (s->paused == c)
        s->paused = NULL;
}

static void srv_on_hs_fail(int reason, void *ud)
{
    server_t *s = ud;
    s->hs_fails++;
    s->hs_reason = reason;
}

static const fl_tls_cbs_t srv_cbs = {.on_open = srv_on_open,
                                     .on_message = srv_on_message,
                                     .on_drain = srv_on_drain,
                                     .on_close = srv_on_close,
                                     .on_handshake_fail = srv_on_hs_fail};
static const fl_tls_cbs_t srv_cbs_pause = {
    .on_open = srv_on_open_pause, .on_message = srv_on_message, .on_drain = srv_on_drain, .on_close = srv_on_close};

static void watchdog(uv_timer_t *t)
{
    fprintf(stderr, "watchdog: the test's event loop got stuck\n");
    uv_stop(t->loop);
    fail();
}

static uv_timer_t g_watchdog;

/* Polling loops below give the peer a number of 1-2 ms turns to finish;
 * under an emulator (make test-cross) every turn's work takes longer, so
 * they get fl_emu_time_factor times as many, like the watchdog. */
static int spins(int n) { return (int)(n * fl_emu_time_factor()); }

/* Runs the loop until the server side has closed its connections too. After
 * a big upload the server may still be reading and decrypting what the
 * kernel's socket buffers hold (several MiB on loopback) when the client
 * has already closed: a fixed hundred milliseconds, which this wait once
 * was, is not enough under qemu-user on a loaded machine (the 50 MiB test
 * then saw no delta). Bounded by 30 s (scaled under emulation); a test that
 * needs the connections gone asserts so itself. */
static void server_settle(uv_loop_t *loop, fl_tls_ctx_t *ctx)
{
    uint64_t end = uv_now(loop) + fl_emu_ms(30000);
    while (fl_tls_ctx_conns(ctx) > 0 && uv_now(loop) < end) {
        uv_run(loop, UV_RUN_NOWAIT);
        uv_sleep(1);
        uv_update_time(loop);
    }
}

static void server_start_at(server_t *s, const fl_tls_opts_t *extra, const fl_tls_cbs_t *cbs, int port);

static void server_start(server_t *s, const fl_tls_opts_t *extra, const fl_tls_cbs_t *cbs)
{
    server_start_at(s, extra, cbs, 0);
}

static void server_start_at(server_t *s, const fl_tls_opts_t *extra, const fl_tls_cbs_t *cbs, int port)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(uv_loop_init(&s->loop), 0);
    fl_tls_opts_t o = {0};
    if (extra)
        o = *extra;
    o.ca_file = fl_testcerts_path(&g_certs, 0, "ca.crt");
    o.cert_file = fl_testcerts_path(&g_certs, 1, "server.crt");
    o.key_file = fl_testcerts_path(&g_certs, 2, "server.key");
    assert_int_equal(fl_tls_ctx_new(FL_TLS_SERVER, &o, &s->ctx), 0);
    assert_int_equal(fl_tls_server_start(&s->loop, s->ctx, "127.0.0.1", port, cbs ? cbs : &srv_cbs, s,
                                         &s->srv), 0);
    assert_true(fl_tls_server_port(s->srv) > 0);
    uv_timer_init(&s->loop, &s->resume_timer);
    s->resume_timer.data = s;
    uv_timer_init(&s->loop, &g_watchdog);
    uv_timer_start(&g_watchdog, watchdog, fl_emu_ms(60000), 0);
    uv_unref((uv_handle_t *)&g_watchdog);
}

static void server_stop(server_t *s)
{
    fl_tls_server_close(s->srv);
    uv_close((uv_handle_t *)&s->resume_timer, NULL);
    uv_close((uv_handle_t *)&g_watchdog, NULL);
    assert_int_equal(uv_run(&s->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fl_tls_ctx_conns(s->ctx), 0);
    fl_tls_ctx_free(s->ctx);
    assert_int_equal(uv_loop_close(&s->loop), 0);
    free(s->tensor);
    fl_buf_unref(s->model);
}

/* ---- the test client ---------------------------------------------------- */

typedef struct {
    fl_tls_ctx_t *ctx;
    fl_tls_conn_t *conn;
    int opened, closed, reason, welcomed, got_error;
    char identity[80];  /* what the server saw (Welcome.peer_identity) */
    char server_cn[80]; /* what we saw */
    uint8_t *tensor;
    size_t tensor_bytes;
    fl_buf_t *upload;   /* sent (Update + delta) after Welcome when set */
    int bye_after;      /* send Bye after Welcome (or after the tensor) */
    fl_buf_t *raw;      /* sent as is right after the handshake */
    int close_after_raw; /* then close gracefully */
    uint8_t *dst;       /* receive the model into this buffer (fl_tls_conn_set_tensor_dst) */
    size_t dst_cap;
    int borrowed;       /* the model arrived in dst */
    int stay;           /* stay connected after Welcome until told */
} client_t;

static void cli_on_open(fl_tls_conn_t *c, void *ud)
{
    client_t *k = ud;
    k->opened = 1;
    snprintf(k->server_cn, sizeof k->server_cn, "%s", fl_tls_conn_peer(c));
    if (k->raw) {
        assert_int_equal(fl_tls_conn_send(c, k->raw), 0);
        if (k->close_after_raw)
            fl_tls_conn_close(c);
        return;
    }
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    h.protocol_version = FL_PROTOCOL_VERSION;
    h.client_name = "test";
    h.software_version = FL_VERSION;
    h.num_examples = 100;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    m.hello = &h;
    assert_int_equal(fl_tls_conn_send_msg(c, &m), 0);
}

static void send_bye(fl_tls_conn_t *c)
{
    Fedopt__Bye b = FEDOPT__BYE__INIT;
    b.reason = "done";
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_BYE;
    m.bye = &b;
    assert_int_equal(fl_tls_conn_send_msg(c, &m), 0);
}

/* Update for round 7, then the delta. */
static void send_update(fl_tls_conn_t *c, fl_buf_t *delta)
{
    Fedopt__Update u = FEDOPT__UPDATE__INIT;
    u.round_id = 7;
    u.weight = 10;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
    m.update = &u;
    assert_int_equal(fl_tls_conn_send_msg(c, &m), 0);
    assert_int_equal(fl_tls_conn_send(c, delta), 0);
}

static void cli_on_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    client_t *k = ud;
    if (ev->kind == FL_WIRE_EV_TENSOR) {
        k->borrowed = ev->borrowed;
        if (ev->borrowed) {
            assert_ptr_equal(ev->data, k->dst);
            k->tensor = malloc(ev->nbytes); /* a copy, so client_free frees one thing */
            memcpy(k->tensor, ev->data, ev->nbytes);
        } else {
            k->tensor = ev->data;
            ev->data = NULL;
        }
        k->tensor_bytes = ev->nbytes;
        if (k->bye_after) {
            send_bye(c);
            fl_tls_conn_close(c);
        }
        return;
    }
    switch (ev->msg->msg_case) {
    case FEDOPT__ENVELOPE__MSG_TASK_OFFER:
        if (k->dst)
            fl_tls_conn_set_tensor_dst(c, k->dst, k->dst_cap);
        break;
    case FEDOPT__ENVELOPE__MSG_WELCOME:
        k->welcomed = 1;
        snprintf(k->identity, sizeof k->identity, "%s", ev->msg->welcome->peer_identity);
        if (k->upload)
            send_update(c, k->upload);
        if (k->bye_after == 1) {
            send_bye(c);
            fl_tls_conn_close(c);
        }
        break;
    case FEDOPT__ENVELOPE__MSG_ERROR:
        k->got_error = ev->msg->error->code;
        break;
    default:
        break;
    }
}

static void cli_on_close(fl_tls_conn_t *c, int reason, void *ud)
{
    client_t *k = ud;
    k->closed = 1;
    k->reason = reason;
    k->conn = NULL;
}

static const fl_tls_cbs_t cli_cbs = {.on_open = cli_on_open, .on_message = cli_on_message, .on_close = cli_on_close};

/* Connects with the given files (relative to the cert dir; NULL cert = none)
 * and runs the loop until the client's connection is gone. */
/* A client TLS context from the test PKI's files (cert and key may be NULL). */
static fl_tls_ctx_t *client_ctx(const char *ca, const char *cert, const char *key)
{
    fl_tls_opts_t o = {0};
    o.ca_file = fl_testcerts_path(&g_certs, 0, ca);
    o.cert_file = cert ? fl_testcerts_path(&g_certs, 1, cert) : NULL;
    o.key_file = key ? fl_testcerts_path(&g_certs, 2, key) : NULL;
    fl_tls_ctx_t *ctx = NULL;
    assert_int_equal(fl_tls_ctx_new(FL_TLS_CLIENT, &o, &ctx), 0);
    return ctx;
}

static void client_run(server_t *s, client_t *k, const char *ca, const char *cert,
                       const char *key, const char *server_name)
{
    k->ctx = client_ctx(ca, cert, key);
    assert_int_equal(fl_tls_connect(&s->loop, k->ctx, "127.0.0.1", fl_tls_server_port(s->srv),
                                    server_name, &cli_cbs, k, &k->conn), 0);
    while (!k->closed)
        uv_run(&s->loop, UV_RUN_ONCE);
    /* Let the server side notice and finish too. */
    server_settle(&s->loop, s->ctx);
    fl_tls_ctx_free(k->ctx);
    k->ctx = NULL;
}

static void client_free(client_t *k)
{
    free(k->tensor);
    fl_buf_unref(k->upload);
    fl_buf_unref(k->raw);
}

/* ---- a handshake storm around a connected probe -------------------------- */

static void refused(server_t *s, const char *ca, const char *cert, const char *key, const char *name,
                    const char *expect_srv, const char *expect_cli);
static void connect_once(server_t *s, fl_tls_ctx_t *ctx, client_t *k);

#define STORM_N 48
#define STORM_JOBS 2

static struct {
    server_t *s;
    /* server side */
    int echoed, echoed_during_jobs;
    uint64_t next_seen; /* the sequence number the server expects next */
    int out_of_order;
    /* the probe */
    fl_tls_conn_t *probe;
    int probe_welcomed, probe_closed, probe_reason;
    uint64_t sent, answered, bad_answer;
    /* the storm */
    int storm_started, welcomed, closed, failed;
} G;

static void send_heartbeat(fl_tls_conn_t *c, uint64_t seq)
{
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    hb.unix_ms = seq; /* the test's sequence number */
    hb.echo = 1;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    m.heartbeat = &hb;
    assert_int_equal(fl_tls_conn_send_msg(c, &m), 0);
}

static void storm_srv_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind == FL_WIRE_EV_MESSAGE && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_HEARTBEAT) {
        fl_tls_hs_stats_t st;
        fl_tls_ctx_hs_stats(G.s->ctx, &st);
        G.echoed++;
        G.echoed_during_jobs += st.jobs_now > 0;
        if (ev->msg->heartbeat->unix_ms != G.next_seen)
            G.out_of_order++;
        G.next_seen = ev->msg->heartbeat->unix_ms + 1;
        send_heartbeat(c, ev->msg->heartbeat->unix_ms);
        return;
    }
    srv_on_message(c, ev, ud);
}

static const fl_tls_cbs_t storm_srv_cbs = {.on_open = srv_on_open,
                                           .on_message = storm_srv_message,
                                           .on_close = srv_on_close,
                                           .on_handshake_fail = srv_on_hs_fail};

static void hello(fl_tls_conn_t *c, void *ud) { cli_on_open(c, ud); }

/* The probe pings as fast as the answers come back, from its Welcome until
 * the storm is over. */
static void probe_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind != FL_WIRE_EV_MESSAGE)
        return;
    if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_WELCOME) {
        G.probe_welcomed = 1;
        send_heartbeat(c, G.sent++);
    } else if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_HEARTBEAT) {
        if (ev->msg->heartbeat->unix_ms != G.answered)
            G.bad_answer++;
        G.answered++;
        if (G.welcomed + G.failed < STORM_N)
            send_heartbeat(c, G.sent++);
    }
}

static void probe_close(fl_tls_conn_t *c, int reason, void *ud)
{
    G.probe_closed = 1;
    G.probe_reason = reason;
    G.probe = NULL;
}

static void storm_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind == FL_WIRE_EV_MESSAGE && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_WELCOME) {
        G.welcomed++;
        fl_tls_conn_close(c);
    }
}

static void storm_close(fl_tls_conn_t *c, int reason, void *ud)
{
    G.closed++;
    if (reason)
        G.failed++;
}

/* STORM_N clients start full mutual-TLS handshakes at once while a
 * connected probe keeps asking for heartbeat echoes. The server answers
 * every heartbeat, in order, and some of them while handshake jobs are
 * queued or running in the thread pool: the loop is not the thread doing
 * handshakes. At most STORM_JOBS jobs are out at once, and every client
 * gets in. (How fast, and the worst answer time, is bench_server's storm.) */
static void test_heartbeats_during_handshake_storm(void **state)
{
    server_t s;
    fl_tls_opts_t o = {0};
    o.handshake_jobs = STORM_JOBS;
    server_start(&s, &o, &storm_srv_cbs);
    memset(&G, 0, sizeof G);
    G.s = &s;
    fl_tls_ctx_t *pctx = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
    fl_tls_ctx_t *sctx = client_ctx("ca.crt", "clients/bob.crt", "clients/bob.key");
    client_t pk = {0};
    fl_tls_cbs_t pcbs = {.on_open = hello, .on_message = probe_message, .on_close = probe_close};
    int port = fl_tls_server_port(s.srv);
    assert_int_equal(fl_tls_connect(&s.loop, pctx, "127.0.0.1", port, "localhost", &pcbs, &pk, &G.probe), 0);
    while (!G.probe_welcomed && !G.probe_closed)
        uv_run(&s.loop, UV_RUN_ONCE);
    assert_true(G.probe_welcomed);
    /* One client context for the storm, with no session yet: every
     * handshake is a full one. */
    client_t ks[STORM_N];
    fl_tls_conn_t *conns[STORM_N];
    fl_tls_cbs_t scbs = {.on_open = hello, .on_message = storm_message, .on_close = storm_close};
    memset(ks, 0, sizeof ks);
    for (int i = 0; i < STORM_N; i++)
        assert_int_equal(fl_tls_connect(&s.loop, sctx, "127.0.0.1", port, "localhost", &scbs, &ks[i], &conns[i]), 0);
    while (G.closed < STORM_N)
        uv_run(&s.loop, UV_RUN_ONCE);
    while (G.answered < G.sent && !G.probe_closed) /* the last answer */
        uv_run(&s.loop, UV_RUN_ONCE);
    fl_tls_hs_stats_t st;
    fl_tls_ctx_hs_stats(s.ctx, &st);
    fl_tls_conn_close(G.probe);
    while (!G.probe_closed)
        uv_run(&s.loop, UV_RUN_ONCE);
    server_settle(&s.loop, s.ctx);

    assert_int_equal(G.failed, 0);
    assert_int_equal(G.welcomed, STORM_N);
    assert_int_equal(s.hs_fails, 0);
    assert_int_equal(s.opens, STORM_N + 1);
    /* every heartbeat answered once, in order */
    assert_true(G.answered >= 1);
    assert_int_equal(G.bad_answer, 0);
    assert_int_equal(G.out_of_order, 0);
    assert_int_equal(G.answered, G.sent);
    assert_int_equal((uint64_t)G.echoed, G.sent);
    /* answered while handshakes ran elsewhere */
    assert_true(G.echoed_during_jobs >= 1);
    /* the jobs: a full handshake takes at least two (ClientHello; the
     * client's second flight), never more than STORM_JOBS at once */
    assert_true(st.jobs >= 2 * (STORM_N + 1));
    assert_true(st.peak_jobs >= 1 && st.peak_jobs <= STORM_JOBS);
    assert_int_equal(st.in_progress, 0);
    assert_int_equal(st.jobs_now, 0);
    assert_int_equal(G.probe_reason, 0);
    fl_tls_ctx_free(pctx);
    fl_tls_ctx_free(sctx);
    server_stop(&s);
}

/* A fleet reconnecting with its tickets all at once, one handshake job at a
 * time: a resumed client sends its Hello right behind its Finished, so the
 * Hello often arrives while the job that reads the Finished runs, and must
 * be read once the handshake is done. The clients run on a thread and loop
 * of their own, so their bytes arrive while the server's loop and jobs run. */
#define RESUME_N 32

typedef struct {
    fl_tls_ctx_t *ctx[RESUME_N];
    client_t ks[RESUME_N];
    int port;
    atomic_int done;
} resume_fleet_t;

static void resume_fleet_main(void *arg)
{
    resume_fleet_t *f = arg;
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (int i = 0; i < RESUME_N; i++) {
        f->ks[i].bye_after = 1;
        if (fl_tls_connect(&loop, f->ctx[i], "127.0.0.1", f->port, "localhost", &cli_cbs, &f->ks[i], &f->ks[i].conn))
            f->ks[i].closed = 1;
    }
    uint64_t t0 = uv_now(&loop);
    for (;;) {
        int closed = 0;
        for (int i = 0; i < RESUME_N; i++)
            closed += f->ks[i].closed;
        if (closed == RESUME_N || uv_now(&loop) - t0 > fl_emu_ms(20000))
            break;
        uv_run(&loop, UV_RUN_ONCE);
    }
    for (int i = 0; i < RESUME_N; i++)
        if (f->ks[i].conn)
            fl_tls_conn_close(f->ks[i].conn);
    while (uv_run(&loop, UV_RUN_NOWAIT))
        uv_sleep(1);
    uv_loop_close(&loop);
    atomic_store(&f->done, 1);
}

static void test_resumed_storm(void **state)
{
    server_t s;
    fl_tls_opts_t o = {0};
    o.handshake_jobs = 1;
    server_start(&s, &o, NULL);
    resume_fleet_t *f = calloc(1, sizeof *f);
    for (int i = 0; i < RESUME_N; i++) {
        f->ctx[i] = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
        connect_once(&s, f->ctx[i], &f->ks[i]);
        assert_true(f->ks[i].welcomed);
    }
    uint64_t resumed0 = fl_tls_ctx_resumed(s.ctx);
    memset(f->ks, 0, sizeof f->ks);
    f->port = fl_tls_server_port(s.srv);
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, resume_fleet_main, f), 0);
    while (!atomic_load(&f->done)) {
        uv_run(&s.loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    uv_thread_join(&th);
    server_settle(&s.loop, s.ctx);
    for (int i = 0; i < RESUME_N; i++) {
        assert_true(f->ks[i].welcomed);
        assert_int_equal(f->ks[i].reason, 0);
    }
    assert_int_equal(fl_tls_ctx_resumed(s.ctx) - resumed0, RESUME_N);
    for (int i = 0; i < RESUME_N; i++)
        fl_tls_ctx_free(f->ctx[i]);
    free(f);
    server_stop(&s);
}

/* Several model-sized uploads at once while a connected probe keeps asking
 * for heartbeat echoes. The uploads' records are decrypted in record jobs
 * (one per connection at a time), so the loop answers every heartbeat, in
 * order, and some while record jobs are queued or running; with the records
 * decrypted on the loop (record_jobs -1) no answer ever finds a job out and
 * the test fails. Every upload arrives intact. The uploaders run on a
 * thread and loop of their own, so their encryption is not the server
 * loop's work. (The answer times are printed, not judged: bench_server's
 * storm measures them.) */
#define UPLOAD_N 4

static struct {
    server_t *s;
    int downloads; /* count the send jobs out at an echo, not the record jobs */
    int echoed, echoed_during_jobs;
    uint64_t next_seen;
    int out_of_order;
    fl_tls_conn_t *probe;
    int probe_welcomed, probe_closed, probe_reason;
    uint64_t sent, answered, bad_answer;
    double sent_at, worst_ms;
    atomic_int uploads_done;
} U;

typedef struct {
    fl_tls_ctx_t *ctx;
    client_t ks[UPLOAD_N];
    fl_buf_t *upload; /* sent after Welcome; NULL: the clients download the server's model */
    int port;
    atomic_int done;
} upload_fleet_t;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void upload_fleet_main(void *arg)
{
    upload_fleet_t *f = arg;
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (int i = 0; i < UPLOAD_N; i++) {
        f->ks[i].upload = f->upload;
        f->ks[i].bye_after = f->upload ? 1 : 2; /* after Welcome, or after the model */
        if (fl_tls_connect(&loop, f->ctx, "127.0.0.1", f->port, "localhost", &cli_cbs, &f->ks[i], &f->ks[i].conn))
            f->ks[i].closed = 1;
    }
    uint64_t t0 = uv_now(&loop);
    for (;;) {
        int closed = 0;
        for (int i = 0; i < UPLOAD_N; i++)
            closed += f->ks[i].closed;
        if (closed == UPLOAD_N || uv_now(&loop) - t0 > fl_emu_ms(40000))
            break;
        uv_run(&loop, UV_RUN_ONCE);
    }
    for (int i = 0; i < UPLOAD_N; i++)
        if (!f->ks[i].closed && f->ks[i].conn)
            fl_tls_conn_close(f->ks[i].conn);
    while (uv_run(&loop, UV_RUN_NOWAIT))
        uv_sleep(1);
    uv_loop_close(&loop);
    atomic_store(&f->done, 1);
}

static void tick_noop(uv_timer_t *t) { (void)t; }

static void upload_srv_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind == FL_WIRE_EV_MESSAGE && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_HEARTBEAT) {
        fl_tls_rec_stats_t st;
        fl_tls_ctx_rec_stats(U.s->ctx, &st);
        U.echoed++;
        U.echoed_during_jobs += (U.downloads ? st.send_jobs_now : st.jobs_now) > 0;
        if (ev->msg->heartbeat->unix_ms != U.next_seen)
            U.out_of_order++;
        U.next_seen = ev->msg->heartbeat->unix_ms + 1;
        send_heartbeat(c, ev->msg->heartbeat->unix_ms);
        return;
    }
    srv_on_message(c, ev, ud);
}

static void upload_probe_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind != FL_WIRE_EV_MESSAGE)
        return;
    if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_WELCOME) {
        U.probe_welcomed = 1;
        return;
    } else if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_HEARTBEAT) {
        if (ev->msg->heartbeat->unix_ms != U.answered)
            U.bad_answer++;
        U.answered++;
        double ms = now_ms() - U.sent_at;
        if (ms > U.worst_ms)
            U.worst_ms = ms;
    } else {
        return;
    }
    if (!atomic_load(&U.uploads_done)) {
        U.sent_at = now_ms();
        send_heartbeat(c, U.sent++);
    }
}

static void upload_probe_close(fl_tls_conn_t *c, int reason, void *ud)
{
    U.probe_closed = 1;
    U.probe_reason = reason;
    U.probe = NULL;
}

/* The server side of both tests: a probe connects and pings while the
 * fleet (f: uploads, or downloads of s->model) runs on its own thread;
 * returns once the fleet is done, every ping answered and the probe gone,
 * with the context's job counters in st. */
static void probe_during_fleet(server_t *s, upload_fleet_t *f, fl_tls_rec_stats_t *st)
{
    f->port = fl_tls_server_port(s->srv);
    fl_tls_ctx_t *pctx = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
    client_t pk = {0};
    fl_tls_cbs_t pcbs = {.on_open = hello, .on_message = upload_probe_message, .on_close = upload_probe_close};
    assert_int_equal(fl_tls_connect(&s->loop, pctx, "127.0.0.1", f->port, "localhost", &pcbs, &pk, &U.probe), 0);
    while (!U.probe_welcomed && !U.probe_closed)
        uv_run(&s->loop, UV_RUN_ONCE);
    assert_true(U.probe_welcomed);

    /* The probe starts pinging; a tick wakes the loop to look at the fleet. */
    U.sent_at = now_ms();
    send_heartbeat(U.probe, U.sent++);
    uv_timer_t tick;
    uv_timer_init(&s->loop, &tick);
    uv_timer_start(&tick, tick_noop, 5, 5);
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, upload_fleet_main, f), 0);
    while (!atomic_load(&f->done))
        uv_run(&s->loop, UV_RUN_ONCE);
    uv_thread_join(&th);
    if (f->upload) {
        /* the server may still be reading what the kernel holds */
        uint64_t end = uv_now(&s->loop) + fl_emu_ms(30000);
        while (s->tensors < UPLOAD_N && uv_now(&s->loop) < end)
            uv_run(&s->loop, UV_RUN_ONCE);
    }
    atomic_store(&U.uploads_done, 1);
    uv_close((uv_handle_t *)&tick, NULL);
    while (U.answered < U.sent && !U.probe_closed) /* the last answer */
        uv_run(&s->loop, UV_RUN_ONCE);
    fl_tls_conn_close(U.probe);
    while (!U.probe_closed)
        uv_run(&s->loop, UV_RUN_ONCE);
    server_settle(&s->loop, s->ctx);
    fl_tls_ctx_rec_stats(s->ctx, st);
    fl_tls_ctx_free(pctx);
    /* every heartbeat answered once, in order, some while jobs were out */
    assert_true(U.answered >= 1);
    assert_int_equal(U.answered, U.sent);
    assert_int_equal(U.bad_answer, 0);
    assert_int_equal(U.out_of_order, 0);
    assert_int_equal((uint64_t)U.echoed, U.sent);
    assert_true(U.echoed_during_jobs >= 1);
    assert_int_equal(U.probe_reason, 0);
}

static const fl_tls_cbs_t probe_srv_cbs = {.on_open = srv_on_open,
                                           .on_message = upload_srv_message,
                                           .on_close = srv_on_close,
                                           .on_handshake_fail = srv_on_hs_fail};

static void test_heartbeats_during_uploads(void **state)
{
    server_t s;
    server_start(&s, NULL, &probe_srv_cbs);
    memset(&U, 0, sizeof U);
    U.s = &s;
    size_t n = fl_emu_size("upload floats", (8u << 20) / 4, (1u << 20) / 4);
    float *d = malloc(n * sizeof *d);
    assert_non_null(d);
    for (size_t i = 0; i < n; i++)
        d[i] = (float)(i % 977) * 0.25f;
    upload_fleet_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 7, d, n * 4, 0, &f->upload), 0);
    f->ctx = client_ctx("ca.crt", "clients/bob.crt", "clients/bob.key");
    fl_tls_rec_stats_t st;
    probe_during_fleet(&s, f, &st);
    print_message("%llu heartbeats answered during %d uploads of %zu MiB, %d while record jobs were out "
                  "(worst answer %.1f ms); %llu record jobs, at most %llu at once, %llu small records on the loop\n",
                  (unsigned long long)U.answered, UPLOAD_N, n * 4 >> 20, U.echoed_during_jobs, U.worst_ms,
                  (unsigned long long)st.jobs, (unsigned long long)st.peak_jobs,
                  (unsigned long long)st.inline_reads);

    for (int i = 0; i < UPLOAD_N; i++) {
        assert_true(f->ks[i].welcomed);
        assert_int_equal(f->ks[i].reason, 0);
    }
    assert_int_equal(s.tensors, UPLOAD_N);
    assert_int_equal(s.tensor_bytes, n * 4);
    assert_memory_equal(s.tensor, d, n * 4);
    /* the uploads went through jobs, at most one per connection at once */
    assert_true(st.jobs >= UPLOAD_N);
    assert_true(st.peak_jobs >= 1 && st.peak_jobs <= UPLOAD_N);
    assert_int_equal(st.jobs_now, 0);
    fl_buf_unref(f->upload);
    fl_tls_ctx_free(f->ctx);
    free(f);
    free(d);
    server_stop(&s);
}

/* The same with the bytes going the other way: the server sends a
 * model-sized tensor to each of several clients while the probe pings.
 * The sends are encrypted in send jobs (one per connection at a time), so
 * the loop answers every heartbeat, in order, some while send jobs are
 * out; with every record on the loop (record_jobs -1) none is, and the
 * test fails. Every client gets the model intact. */
static float *pattern(size_t n, uint32_t seed);

static void test_heartbeats_during_downloads(void **state)
{
    server_t s;
    server_start(&s, NULL, &probe_srv_cbs);
    memset(&U, 0, sizeof U);
    U.s = &s;
    U.downloads = 1;
    size_t n = fl_emu_size("download floats", (8u << 20) / 4, (1u << 20) / 4);
    float *d = pattern(n, 3);
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 7, d, n * 4, 0, &s.model), 0);
    s.model_params = n;
    upload_fleet_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ctx = client_ctx("ca.crt", "clients/bob.crt", "clients/bob.key");
    fl_tls_rec_stats_t st;
    probe_during_fleet(&s, f, &st);
    print_message("%llu heartbeats answered during %d downloads of %zu MiB, %d while send jobs were out "
                  "(worst answer %.1f ms); %llu send jobs\n",
                  (unsigned long long)U.answered, UPLOAD_N, n * 4 >> 20, U.echoed_during_jobs, U.worst_ms,
                  (unsigned long long)st.send_jobs);

    for (int i = 0; i < UPLOAD_N; i++) {
        assert_true(f->ks[i].welcomed);
        assert_int_equal(f->ks[i].reason, 0);
        assert_int_equal(f->ks[i].tensor_bytes, n * 4);
        assert_memory_equal(f->ks[i].tensor, d, n * 4);
        free(f->ks[i].tensor);
    }
    /* each model took several jobs (SND_JOB_MAX), none is left out */
    assert_true(st.send_jobs >= UPLOAD_N);
    assert_int_equal(st.send_jobs_now, 0);
    fl_tls_ctx_free(f->ctx);
    free(f);
    free(d);
    server_stop(&s);
}

/* Pausing a connection from outside its callbacks (a timer, here; in the
 * daemon, another connection's upload filling the buffers) while a record
 * job of it is out: no message is delivered until the resume, and none is
 * lost or reordered. The client sends a burst of small frames in full-size
 * records, so nearly every frame ends inside a record job. */
#define PAUSE_FRAMES 3000

static struct {
    fl_tls_conn_t *conn;
    int paused;
    uint64_t got, next, out_of_order, while_paused, paused_during_job, toggles;
} PZ;

static void pz_open(fl_tls_conn_t *c, void *ud)
{
    srv_on_open(c, ud);
    PZ.conn = c;
}

static void pz_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind == FL_WIRE_EV_MESSAGE && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_HEARTBEAT) {
        PZ.got++;
        PZ.while_paused += PZ.paused;
        PZ.out_of_order += ev->msg->heartbeat->unix_ms != PZ.next;
        PZ.next = ev->msg->heartbeat->unix_ms + 1;
        return;
    }
    srv_on_message(c, ev, ud);
}

static void pz_close(fl_tls_conn_t *c, int reason, void *ud)
{
    srv_on_close(c, reason, ud);
    if (PZ.conn == c)
        PZ.conn = NULL;
}

static void pz_toggle(uv_timer_t *t)
{
    server_t *s = t->data;
    if (!PZ.conn)
        return;
    if (PZ.paused) {
        PZ.paused = 0;
        fl_tls_conn_resume_read(PZ.conn);
    } else {
        fl_tls_rec_stats_t st;
        fl_tls_ctx_rec_stats(s->ctx, &st);
        PZ.paused_during_job += st.jobs_now > 0;
        PZ.paused = 1;
        fl_tls_conn_pause_read(PZ.conn);
    }
    PZ.toggles++;
}

static void test_pause_during_record_jobs(void **state)
{
    server_t s;
    fl_tls_cbs_t cbs = {.on_open = pz_open, .on_message = pz_message, .on_close = pz_close};
    server_start(&s, NULL, &cbs);
    memset(&PZ, 0, sizeof PZ);
    client_t k = {0};
    fl_buf_t *one[PAUSE_FRAMES + 1];
    Fedopt__Hello hm = FEDOPT__HELLO__INIT;
    hm.protocol_version = FL_PROTOCOL_VERSION;
    Fedopt__Envelope he = FEDOPT__ENVELOPE__INIT;
    he.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    he.hello = &hm;
    assert_int_equal(fl_wire_encode(&he, &one[PAUSE_FRAMES]), 0);
    size_t total = one[PAUSE_FRAMES]->len;
    for (int i = 0; i < PAUSE_FRAMES; i++) {
        Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
        hb.unix_ms = (uint64_t)i;
        Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
        m.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
        m.heartbeat = &hb;
        assert_int_equal(fl_wire_encode(&m, &one[i]), 0);
        total += one[i]->len;
    }
    assert_int_equal(fl_buf_new(total, &k.raw), 0);
    memcpy(k.raw->data, one[PAUSE_FRAMES]->data, one[PAUSE_FRAMES]->len); /* Hello first */
    size_t off = one[PAUSE_FRAMES]->len;
    fl_buf_unref(one[PAUSE_FRAMES]);
    for (int i = 0; i < PAUSE_FRAMES; i++) {
        memcpy(k.raw->data + off, one[i]->data, one[i]->len);
        off += one[i]->len;
        fl_buf_unref(one[i]);
    }
    k.close_after_raw = 1;
    uv_timer_t t;
    uv_timer_init(&s.loop, &t);
    t.data = &s;
    uv_timer_start(&t, pz_toggle, 1, 1);
    client_run(&s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
    uv_close((uv_handle_t *)&t, NULL);
    fl_tls_rec_stats_t st;
    fl_tls_ctx_rec_stats(s.ctx, &st);
    print_message("%llu frames, %llu pauses and resumes, %llu pauses while a record job was out; %llu record jobs\n",
                  (unsigned long long)PZ.got, (unsigned long long)PZ.toggles,
                  (unsigned long long)PZ.paused_during_job, (unsigned long long)st.jobs);
    assert_int_equal(k.reason, 0);
    assert_int_equal(PZ.got, PAUSE_FRAMES);
    assert_int_equal(PZ.out_of_order, 0);
    assert_int_equal(PZ.while_paused, 0);
    assert_true(PZ.paused_during_job >= 1);
    assert_true(st.jobs >= 2);
    assert_int_equal(s.last_close_reason, 0);
    client_free(&k);
    server_stop(&s);
}

/* Handshakes on the loop (handshake_jobs -1): no job ever runs, and
 * everyone still gets in or is refused as before. */
static void test_handshakes_on_loop_option(void **state)
{
    server_t s;
    fl_tls_opts_t o = {0};
    o.handshake_jobs = -1;
    server_start(&s, &o, NULL);
    for (int i = 0; i < 3; i++) {
        client_t k = {0};
        k.bye_after = 1;
        client_run(&s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
        assert_true(k.welcomed);
        client_free(&k);
    }
    refused(&s, "ca.crt", "clients/old.crt", "clients/old.key", "localhost",
            "client certificate rejected: The certificate validity has expired", NULL);
    fl_tls_hs_stats_t st;
    fl_tls_ctx_hs_stats(s.ctx, &st);
    assert_int_equal(st.jobs, 0);
    assert_int_equal(st.in_progress, 0);
    server_stop(&s);
}

/* ---- tests -------------------------------------------------------------- */

static void test_handshake_ok(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    client_t k = {0};
    k.bye_after = 1;
    client_run(&s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
    assert_true(k.opened);
    assert_true(k.welcomed);
    assert_int_equal(k.reason, 0);
    assert_string_equal(k.identity, "alice"); /* the server's view: certificate CN */
    assert_string_equal(k.server_cn, "localhost");
    assert_int_equal(s.opens, 1);
    assert_int_equal(s.hellos, 1);
    assert_string_equal(s.last_peer, "alice");
    assert_int_equal(s.closes, 1);
    client_free(&k);
    server_stop(&s);
}

/* One connection of client context ctx to s, until it is gone. */
static void connect_once(server_t *s, fl_tls_ctx_t *ctx, client_t *k)
{
    memset(k, 0, sizeof *k);
    k->bye_after = 1;
    assert_int_equal(fl_tls_connect(&s->loop, ctx, "127.0.0.1", fl_tls_server_port(s->srv), "localhost", &cli_cbs, k,
                                    &k->conn), 0);
    while (!k->closed)
        uv_run(&s->loop, UV_RUN_ONCE);
    server_settle(&s->loop, s->ctx);
}

/* A client's second connection resumes its session from a ticket, also
 * after the server restarted with the same key, and keeps the identity of
 * the certificate it first showed; a forgotten session means a full
 * handshake again. */
static void test_session_resumption(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    int port = fl_tls_server_port(s.srv);
    fl_tls_ctx_t *ctx = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
    client_t k;
    connect_once(&s, ctx, &k);
    assert_true(k.welcomed);
    assert_string_equal(k.identity, "alice");
    assert_int_equal(fl_tls_ctx_resumed(ctx), 0);
    assert_int_equal(fl_tls_ctx_resumed(s.ctx), 0);
    client_free(&k);
    connect_once(&s, ctx, &k);
    assert_true(k.welcomed);
    assert_string_equal(k.identity, "alice");
    assert_string_equal(s.last_peer, "alice");
    assert_int_equal(fl_tls_ctx_resumed(ctx), 1);
    assert_int_equal(fl_tls_ctx_resumed(s.ctx), 1);
    client_free(&k);
    server_stop(&s);

    /* A new server process would have a new context: same key, same port. */
    server_start_at(&s, NULL, NULL, port);
    connect_once(&s, ctx, &k);
    assert_true(k.welcomed);
    assert_string_equal(k.identity, "alice");
    assert_int_equal(fl_tls_ctx_resumed(ctx), 2);
    assert_int_equal(fl_tls_ctx_resumed(s.ctx), 1);
    client_free(&k);
    fl_tls_ctx_forget_session(ctx);
    connect_once(&s, ctx, &k);
    assert_true(k.welcomed);
    assert_int_equal(fl_tls_ctx_resumed(ctx), 2);
    assert_int_equal(fl_tls_ctx_resumed(s.ctx), 1);
    client_free(&k);
    fl_tls_ctx_free(ctx);
    server_stop(&s);
}

/* A ticket outliving its client certificate: the resumption is refused and
 * the full handshake that follows refuses the expired certificate. */
static void test_resumption_after_cert_expiry(void **state)
{
    int64_t now = (int64_t)time(NULL);
    fl_certs_spec_t brief = {.cn = "brief", .not_before = now - 60, .not_after = now + 2,
                             .issuer_crt = fl_testcerts_path(&g_certs, 0, "ca.crt"),
                             .issuer_key = fl_testcerts_path(&g_certs, 1, "ca.key"),
                             .out_crt = fl_testcerts_path(&g_certs, 2, "clients/brief.crt"),
                             .out_key = fl_testcerts_path(&g_certs, 3, "clients/brief.key")};
    assert_int_equal(fl_certs_make(&brief), 0);
    server_t s;
    server_start(&s, NULL, NULL);
    fl_tls_ctx_t *ctx = client_ctx("ca.crt", "clients/brief.crt", "clients/brief.key");
    client_t k;
    connect_once(&s, ctx, &k);
    assert_true(k.welcomed);
    client_free(&k);
    connect_once(&s, ctx, &k); /* still valid: resumed */
    assert_true(k.welcomed);
    assert_int_equal(fl_tls_ctx_resumed(s.ctx), 1);
    client_free(&k);
    while ((int64_t)time(NULL) <= now + 3)
        sleep(1);
    long mark = log_mark();
    connect_once(&s, ctx, &k);
    assert_false(k.welcomed);
    assert_int_equal(fl_tls_ctx_resumed(s.ctx), 1);
    assert_true(log_has(mark, "handshake with 127.0.0.1:", "expired"));
    client_free(&k);
    fl_tls_ctx_free(ctx);
    server_stop(&s);
}

/* One refused client: the server logs `expect` and the client never opens. */
static void refused(server_t *s, const char *ca, const char *cert, const char *key,
                    const char *name, const char *expect_srv, const char *expect_cli)
{
    long mark = log_mark();
    client_t k = {0};
    k.bye_after = 1;
    client_run(s, &k, ca, cert, key, name);
    assert_false(k.opened);
    assert_false(k.welcomed);
    assert_int_not_equal(k.reason, 0);
    if (expect_srv)
        assert_true(log_has(mark, "handshake with 127.0.0.1:", expect_srv));
    if (expect_cli)
        assert_true(log_has(mark, "refused", expect_cli));
    client_free(&k);
}

static void test_handshake_matrix(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    refused(&s, "ca.crt", NULL, NULL, "localhost", "client sent no certificate", NULL);
    refused(&s, "ca.crt", "other/clients/mallory.crt", "other/clients/mallory.key", "localhost",
            "client certificate rejected: The certificate is not correctly signed", NULL);
    refused(&s, "ca.crt", "clients/old.crt", "clients/old.key", "localhost",
            "client certificate rejected: The certificate validity has expired", NULL);
    refused(&s, "ca.crt", "clients/alice.crt", "clients/alice.key", "evil.example",
            "peer aborted the handshake with TLS alert",
            "server certificate rejected: The certificate Common Name (CN) does not match");
    /* A client trusting another CA refuses our server. */
    refused(&s, "other/ca.crt", "clients/alice.crt", "clients/alice.key", "localhost", NULL,
            "server certificate rejected: The certificate is not correctly signed");
    assert_int_equal(s.opens, 0);

    /* The server kept serving: bob gets in. */
    client_t k = {0};
    k.bye_after = 1;
    client_run(&s, &k, "ca.crt", "clients/bob.crt", "clients/bob.key", "localhost");
    assert_true(k.welcomed);
    assert_string_equal(k.identity, "bob");
    client_free(&k);
    server_stop(&s);
}

/* A raw TCP peer that writes plaintext and waits for the server to hang up. */
typedef struct {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    int done;
    char rbuf[256];
} plain_t;

static void plain_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    plain_t *p = h->data;
    *b = uv_buf_init(p->rbuf, sizeof p->rbuf);
}

static void plain_closed(uv_handle_t *h) { ((plain_t *)h->data)->done = 1; }

static void plain_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    if (n < 0)
        uv_close((uv_handle_t *)st, plain_closed);
}

static void plain_written(uv_write_t *w, int status) {}

static void plain_connected(uv_connect_t *req, int status)
{
    plain_t *p = req->data;
    assert_int_equal(status, 0);
    static char msg[] = "GET / HTTP/1.0\r\nHost: fedopt\r\n\r\n";
    uv_buf_t b = uv_buf_init(msg, sizeof msg - 1);
    uv_write(&p->wreq, (uv_stream_t *)&p->tcp, &b, 1, plain_written);
    uv_read_start((uv_stream_t *)&p->tcp, plain_alloc, plain_read);
}

static void test_plaintext_peer(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    long mark = log_mark();
    plain_t p = {0};
    uv_tcp_init(&s.loop, &p.tcp);
    p.tcp.data = &p;
    p.creq.data = &p;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", fl_tls_server_port(s.srv), &sa);
    assert_int_equal(uv_tcp_connect(&p.creq, &p.tcp, (struct sockaddr *)&sa, plain_connected), 0);
    while (!p.done)
        uv_run(&s.loop, UV_RUN_ONCE);
    assert_true(log_has(mark, "handshake with 127.0.0.1:", "not speaking TLS"));
    assert_int_equal(s.opens, 0);
    /* The failure reaches the application once, with its reason (metrics count it). */
    for (int i = 0; i < spins(100) && s.hs_fails == 0; i++)
        uv_run(&s.loop, UV_RUN_NOWAIT);
    assert_int_equal(s.hs_fails, 1);
    assert_int_equal(s.hs_reason, FL_ETLS);
    /* And a real client still gets served, and is no failure. */
    client_t k = {0};
    k.bye_after = 1;
    client_run(&s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
    assert_true(k.welcomed);
    assert_int_equal(s.hs_fails, 1);
    client_free(&k);
    server_stop(&s);
}

static void test_no_client_cert_option(void **state)
{
    long mark = log_mark();
    server_t s;
    fl_tls_opts_t o = {0};
    o.no_client_cert = 1;
    server_start(&s, &o, NULL);
    assert_true(log_has(mark, "client certificates are NOT required", NULL));
    client_t k = {0};
    k.bye_after = 1;
    client_run(&s, &k, "ca.crt", NULL, NULL, "localhost");
    assert_true(k.welcomed);
    assert_string_equal(k.identity, ""); /* anonymous */
    client_free(&k);
    server_stop(&s);
}

/* Fills n floats with a pattern that catches any misplaced chunk. */
static float *pattern(size_t n, uint32_t seed)
{
    float *x = malloc(n * sizeof *x);
    uint32_t v = seed;
    for (size_t i = 0; i < n; i++) {
        v = v * 1664525u + 1013904223u;
        x[i] = (float)(v >> 8) / 16777216.0f - 0.5f;
    }
    return x;
}

static void test_model_50mib_both_ways(void **state)
{
    /* 50 MiB of float32 (resnet18gn's size); under emulation 16 MiB, still
     * many chunks and far more than the kernel's socket buffers take. */
    const size_t n = fl_emu_size("TLS model transfer both ways, MiB", 50, 16) * 1024 * 1024 / 4;
    float *model = pattern(n, 1), *delta = pattern(n, 2);
    server_t s;
    server_start(&s, NULL, &srv_cbs_pause); /* the server also pauses reading for 200 ms */
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 7, model, n * 4, 0,
                                           &s.model), 0);
    s.model_params = n;
    client_t k = {0};
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 7, delta, n * 4, 0,
                                           &k.upload), 0);
    k.bye_after = 2; /* after the model arrived */
    k.dst_cap = n * 4;
    k.dst = aligned_alloc(64, k.dst_cap); /* the client's own model buffer */
    client_run(&s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
    assert_true(k.borrowed);
    free(k.dst);
    assert_int_equal(k.reason, 0);
    assert_int_equal(k.tensor_bytes, n * 4);
    assert_memory_equal(k.tensor, model, n * 4);
    assert_int_equal(s.tensors, 1);
    assert_int_equal(s.tensor_bytes, n * 4);
    assert_memory_equal(s.tensor, delta, n * 4);
    /* Back-pressure: queueing the model encrypted (almost) nothing at once;
     * the rest went out as the kernel took it, then on_drain said so. */
    assert_true(s.queued_after_send > n * 4 - (1u << 20));
    assert_true(s.drains >= 1);
    client_free(&k);
    server_stop(&s);
    free(model);
    free(delta);
}

/* A client sends raw bytes after the handshake; the server refuses them with a
 * log line and an Error message, and stays up. */
static void bad_frames(server_t *s, const uint8_t *bytes, size_t n, const char *expect, int code)
{
    long mark = log_mark();
    client_t k = {0};
    assert_int_equal(fl_buf_new(n, &k.raw), 0);
    memcpy(k.raw->data, bytes, n);
    client_run(s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
    assert_true(k.opened);
    assert_int_equal(k.got_error, code);
    assert_true(log_has(mark, "('alice')", expect));
    client_free(&k);
}

static void test_frames_over_tls(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3};
    bad_frames(&s, huge, sizeof huge, "frame of 4294967295 bytes exceeds the limit", FL_ETOOBIG);
    const uint8_t zero[] = {0, 0, 0, 0};
    bad_frames(&s, zero, sizeof zero, "zero-length frame", FL_EPROTO);
    const uint8_t garbage[] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};
    bad_frames(&s, garbage, sizeof garbage, "not a valid fedopt.Envelope", FL_EFORMAT);
    /* A well-formed TaskOffer is a message a client never sends. */
    Fedopt__TaskOffer t = FEDOPT__TASK_OFFER__INIT;
    t.num_params = 1;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    m.task_offer = &t;
    fl_buf_t *b;
    assert_int_equal(fl_wire_encode(&m, &b), 0);
    bad_frames(&s, b->data, b->len, "a client never sends TaskOffer", FL_EPROTO);
    fl_buf_unref(b);
    assert_int_equal(s.hellos, 0);
    client_t k = {0};
    k.bye_after = 1;
    client_run(&s, &k, "ca.crt", "clients/bob.crt", "clients/bob.key", "localhost");
    assert_true(k.welcomed);
    client_free(&k);
    server_stop(&s);
}

/* A peer that connects and never speaks is dropped after the handshake
 * timeout, with a log line. */
static void idle_connected(uv_connect_t *req, int status)
{
    plain_t *p = req->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&p->tcp, plain_alloc, plain_read);
}

static void test_handshake_timeout(void **state)
{
    server_t s;
    fl_tls_opts_t o = {0};
    o.handshake_timeout_ms = 300;
    server_start(&s, &o, NULL);
    long mark = log_mark();
    plain_t p = {0};
    uv_tcp_init(&s.loop, &p.tcp);
    p.tcp.data = &p;
    p.creq.data = &p;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", fl_tls_server_port(s.srv), &sa);
    uint64_t t0 = uv_now(&s.loop);
    assert_int_equal(uv_tcp_connect(&p.creq, &p.tcp, (struct sockaddr *)&sa, idle_connected), 0);
    while (!p.done)
        uv_run(&s.loop, UV_RUN_ONCE);
    assert_true(uv_now(&s.loop) - t0 >= 290);
    assert_true(log_has(mark, "handshake with 127.0.0.1:", "timed out after 300 ms"));
    server_stop(&s);
}

/* A slowloris of half-open connections: peers that connect and never
 * finish a handshake. Beyond max_handshakes of them under way, the server
 * closes each new connection at once, with a log line and a count (and
 * on_handshake_fail with FL_EAGAIN), so they cannot grow its memory without
 * bound; a real client is refused too while the cap is full, and gets in
 * once the half-open ones are gone. */
static void test_max_handshakes(void **state)
{
    enum { CAP = 4, PEERS = 10 };
    server_t s;
    fl_tls_opts_t o = {0};
    o.max_handshakes = CAP;
    server_start(&s, &o, NULL);
    long mark = log_mark();
    plain_t p[PEERS];
    memset(p, 0, sizeof p);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", fl_tls_server_port(s.srv), &sa);
    for (int i = 0; i < PEERS; i++) {
        uv_tcp_init(&s.loop, &p[i].tcp);
        p[i].tcp.data = &p[i];
        p[i].creq.data = &p[i];
        assert_int_equal(uv_tcp_connect(&p[i].creq, &p[i].tcp, (struct sockaddr *)&sa, idle_connected), 0);
    }
    fl_tls_server_stats_t st;
    uint64_t end = uv_now(&s.loop) + fl_emu_ms(10000);
    for (;;) {
        int done = 0;
        for (int i = 0; i < PEERS; i++)
            done += p[i].done;
        fl_tls_server_stats(s.srv, &st);
        if ((st.accepted == PEERS && done == PEERS - CAP) || uv_now(&s.loop) > end)
            break;
        uv_run(&s.loop, UV_RUN_ONCE);
    }
    fl_tls_hs_stats_t hs;
    fl_tls_ctx_hs_stats(s.ctx, &hs);
    assert_int_equal(st.accepted, PEERS);
    assert_int_equal(st.hs_refused, PEERS - CAP);
    assert_int_equal(hs.in_progress, CAP);
    assert_int_equal(s.hs_fails, PEERS - CAP);
    assert_int_equal(s.hs_reason, FL_EAGAIN);
    assert_true(log_has(mark, "refusing 127.0.0.1:", "4 handshakes already under way (max_handshakes"));

    /* A real client while the cap is full: refused as well. */
    fl_tls_ctx_t *ctx = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
    client_t a = {0};
    assert_int_equal(fl_tls_connect(&s.loop, ctx, "127.0.0.1", fl_tls_server_port(s.srv), "localhost", &cli_cbs,
                                    &a, &a.conn), 0);
    while (!a.closed)
        uv_run(&s.loop, UV_RUN_ONCE);
    assert_false(a.opened);
    fl_tls_server_stats(s.srv, &st);
    assert_int_equal(st.hs_refused, PEERS - CAP + 1);

    /* The half-open ones go: the next client gets in. */
    for (int i = 0; i < PEERS; i++)
        if (!p[i].done && !uv_is_closing((uv_handle_t *)&p[i].tcp))
            uv_close((uv_handle_t *)&p[i].tcp, plain_closed);
    for (int i = 0; i < spins(2000); i++) {
        fl_tls_ctx_hs_stats(s.ctx, &hs);
        if (hs.in_progress == 0)
            break;
        uv_run(&s.loop, UV_RUN_NOWAIT);
        uv_sleep(1);
    }
    assert_int_equal(hs.in_progress, 0);
    client_t b = {0};
    b.bye_after = 1;
    assert_int_equal(fl_tls_connect(&s.loop, ctx, "127.0.0.1", fl_tls_server_port(s.srv), "localhost", &cli_cbs,
                                    &b, &b.conn), 0);
    while (!b.closed)
        uv_run(&s.loop, UV_RUN_ONCE);
    assert_true(b.welcomed);
    assert_int_equal(b.reason, 0);
    server_settle(&s.loop, s.ctx);
    fl_tls_ctx_free(ctx);
    server_stop(&s);
}

/* Reading paused inside on_message while the rest of the read buffer holds
 * the delta: it must arrive intact after the resume. */
static void test_pause_mid_buffer(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    s.pause_on_update = 1;
    float d[4096];
    for (int i = 0; i < 4096; i++)
        d[i] = (float)i * 0.5f;
    client_t k = {0};
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 7, d, sizeof d, 4096,
                                           &k.upload), 0);
    k.bye_after = 1; /* Update, delta and Bye go out back to back */
    client_run(&s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
    assert_int_equal(s.tensors, 1);
    assert_int_equal(s.tensor_bytes, sizeof d);
    assert_memory_equal(s.tensor, d, sizeof d);
    assert_int_equal(s.last_close_reason, 0);
    client_free(&k);
    server_stop(&s);
}

/* The peer closes in the middle of a tensor: logged, reported as truncated. */
static void test_peer_gone_mid_transfer(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    long mark = log_mark();
    float d[2048] = {0};
    fl_buf_t *h, *u, *t;
    Fedopt__Hello hm = FEDOPT__HELLO__INIT;
    hm.protocol_version = FL_PROTOCOL_VERSION;
    Fedopt__Envelope e = FEDOPT__ENVELOPE__INIT;
    e.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    e.hello = &hm;
    assert_int_equal(fl_wire_encode(&e, &h), 0);
    Fedopt__Update um = FEDOPT__UPDATE__INIT;
    um.round_id = 7;
    e.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
    e.update = &um;
    assert_int_equal(fl_wire_encode(&e, &u), 0);
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 7, d, sizeof d, 1024, &t), 0);
    client_t k = {0};
    size_t cut = t->len / 2; /* Begin and a few chunks, no End */
    assert_int_equal(fl_buf_new(h->len + u->len + cut, &k.raw), 0);
    memcpy(k.raw->data, h->data, h->len);
    memcpy(k.raw->data + h->len, u->data, u->len);
    memcpy(k.raw->data + h->len + u->len, t->data, cut);
    k.close_after_raw = 1;
    client_run(&s, &k, "ca.crt", "clients/alice.crt", "clients/alice.key", "localhost");
    assert_int_equal(s.hellos, 1);
    assert_int_equal(s.tensors, 0);
    assert_int_equal(s.last_close_reason, FL_ETRUNCATED);
    assert_true(log_has(mark, "('alice')", "in the middle of a tensor transfer"));
    fl_buf_unref(h);
    fl_buf_unref(u);
    fl_buf_unref(t);
    client_free(&k);
    server_stop(&s);
}

static size_t heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

#if defined(__SANITIZE_ADDRESS__)
#define HEAP_MEASURABLE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEAP_MEASURABLE 0
#endif
#endif
#ifndef HEAP_MEASURABLE
#define HEAP_MEASURABLE 1 /* glibc's malloc, not a sanitizer's allocator */
#endif

/* Transfers held up by back-pressure cost no memory beyond the connections
 * themselves: the server sends a 32 MiB model to clients that do not read
 * and stops reading each client's upload after its Update. Ciphertext the
 * kernel will not take waits in mbedTLS's own record buffer, not in staging
 * buffers, and a paused connection keeps at most a record header of what it
 * had read (a read never goes past the next record's header). With a
 * thousand clients a server does this for every one of them at once. */
static void test_backpressure_memory(void **state)
{
    enum { N = 8 };
    const size_t model_n = (32u << 20) / 4, delta_n = (2u << 20) / 4;
    float *model = calloc(model_n, sizeof *model), *delta = calloc(delta_n, sizeof *delta);
    assert_non_null(model);
    assert_non_null(delta);
    server_t s;
    server_start(&s, NULL, NULL);
    s.hold_on_update = 1;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 7, model, model_n * 4, 0,
                                           &s.model), 0);
    s.model_params = model_n;
    fl_buf_t *up;
    assert_int_equal(fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 7, delta, delta_n * 4, 0, &up), 0);
    fl_buf_t *model_buf = s.model;
    s.model = NULL; /* not on Hello: once every connection is open and idle */
    fl_tls_ctx_t *ctx = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
    client_t k[N];
    memset(k, 0, sizeof k);
    for (int i = 0; i < N; i++) {
        k[i].stay = 1;
        assert_int_equal(fl_tls_connect(&s.loop, ctx, "127.0.0.1", fl_tls_server_port(s.srv), "localhost",
                                        &cli_cbs, &k[i], &k[i].conn), 0);
    }
    for (int all = 0; !all;) {
        uv_run(&s.loop, UV_RUN_ONCE);
        all = s.hellos == N;
        for (int i = 0; i < N; i++)
            all &= k[i].welcomed;
    }
    for (int i = 0; i < spins(20); i++)
        uv_run(&s.loop, UV_RUN_NOWAIT), uv_sleep(1);
    size_t idle = heap_used();

    s.model = model_buf;
    for (int i = 0; i < N; i++) {
        fl_tls_conn_pause_read(k[i].conn);
        send_model(&s, s.conns[i]);
        send_update(k[i].conn, up);
    }
    /* Until every Update is in and the kernel's buffers are full both ways. */
    for (int i = 0; i < spins(20000) && s.updates < N; i++)
        uv_run(&s.loop, UV_RUN_NOWAIT), uv_sleep(1);
    for (int i = 0; i < spins(100); i++)
        uv_run(&s.loop, UV_RUN_NOWAIT), uv_sleep(1);
    assert_int_equal(s.updates, N);
    assert_int_equal(s.tensors, 0);
    for (int i = 0; i < N; i++)
        assert_true(fl_tls_conn_queued(s.conns[i]) > 0); /* the model is really held up */
    size_t held = heap_used();
    double per_conn = ((double)held - (double)idle) / N;
    print_message("heap per connection pair: %.0f bytes more with both transfers held up than idle\n", per_conn);
    if (HEAP_MEASURABLE)
        assert_true(per_conn < 4096);

    /* Let go: the server reads again, the clients leave. */
    for (int i = 0; i < N; i++) {
        fl_tls_conn_resume_read(s.conns[i]);
        fl_tls_conn_close(k[i].conn);
    }
    for (int i = 0; i < spins(5000) && fl_tls_ctx_conns(ctx) + fl_tls_ctx_conns(s.ctx) > 0; i++)
        uv_run(&s.loop, UV_RUN_NOWAIT), uv_sleep(1);
    assert_int_equal(fl_tls_ctx_conns(ctx), 0);
    fl_tls_ctx_free(ctx);
    fl_buf_unref(up);
    free(model);
    free(delta);
    server_stop(&s);
}

static void test_connect_failures(void **state)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    fl_tls_ctx_t *ctx = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
    /* Nothing listens there: on_close with FL_ENET and a log line. */
    long mark = log_mark();
    client_t k = {0};
    assert_int_equal(fl_tls_connect(&loop, ctx, "127.0.0.1", 1, "localhost", &cli_cbs, &k, &k.conn), 0);
    while (!k.closed)
        uv_run(&loop, UV_RUN_ONCE);
    assert_false(k.opened);
    assert_int_equal(k.reason, FL_ENET);
    assert_true(log_has(mark, "cannot connect to 127.0.0.1:1", NULL));
    /* Bad arguments are refused at once, without callbacks. */
    fl_tls_conn_t *c = NULL;
    assert_int_equal(fl_tls_connect(&loop, ctx, "127.0.0.1", 0, NULL, &cli_cbs, &k, &c), FL_EINVAL);
    assert_null(c);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(fl_tls_ctx_conns(ctx), 0);
    fl_tls_ctx_free(ctx);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A name is resolved (asynchronously) before connecting. */
static void test_connect_by_name(void **state)
{
    server_t s;
    server_start(&s, NULL, NULL);
    client_t k = {0};
    k.bye_after = 1;
    k.ctx = client_ctx("ca.crt", "clients/bob.crt", "clients/bob.key");
    assert_int_equal(fl_tls_connect(&s.loop, k.ctx, "localhost", fl_tls_server_port(s.srv), NULL,
                                    &cli_cbs, &k, &k.conn), 0);
    while (!k.closed)
        uv_run(&s.loop, UV_RUN_ONCE);
    server_settle(&s.loop, s.ctx);
    assert_true(k.welcomed);
    assert_string_equal(k.identity, "bob");
    fl_tls_ctx_free(k.ctx);
    client_free(&k);
    server_stop(&s);
}

/* With max_conns = 1, a second simultaneous client is refused (logged) while
 * the first keeps working. */
static void test_max_conns(void **state)
{
    server_t s;
    fl_tls_opts_t so = {0};
    so.max_conns = 1;
    server_start(&s, &so, NULL);
    fl_tls_ctx_t *ctx = client_ctx("ca.crt", "clients/alice.crt", "clients/alice.key");
    client_t a = {0}, b = {0};
    int port = fl_tls_server_port(s.srv);
    assert_int_equal(fl_tls_connect(&s.loop, ctx, "127.0.0.1", port, "localhost", &cli_cbs, &a, &a.conn), 0);
    while (!a.welcomed)
        uv_run(&s.loop, UV_RUN_ONCE);
    long mark = log_mark();
    assert_int_equal(fl_tls_connect(&s.loop, ctx, "127.0.0.1", port, "localhost", &cli_cbs, &b, &b.conn), 0);
    while (!b.closed)
        uv_run(&s.loop, UV_RUN_ONCE);
    assert_false(b.opened);
    assert_true(log_has(mark, "refusing 127.0.0.1:", "1 connections already open"));
    assert_false(a.closed);
    send_bye(a.conn);
    fl_tls_conn_close(a.conn);
    while (!a.closed)
        uv_run(&s.loop, UV_RUN_ONCE);
    assert_int_equal(a.reason, 0);
    server_settle(&s.loop, s.ctx);
    fl_tls_ctx_free(ctx);
    server_stop(&s);
}

static void test_bad_config(void **state)
{
    fl_tls_ctx_t *x = NULL;
    fl_tls_opts_t o = {0};
    o.ca_file = "/nonexistent/ca.crt";
    o.cert_file = fl_testcerts_path(&g_certs, 1, "server.crt");
    o.key_file = fl_testcerts_path(&g_certs, 2, "server.key");
    assert_int_equal(fl_tls_ctx_new(FL_TLS_SERVER, &o, &x), FL_ECONFIG);
    assert_null(x);
    o.ca_file = fl_testcerts_path(&g_certs, 0, "ca.crt");
    o.ciphersuite = "TLS-RSA-WITH-AES-128-CBC-SHA"; /* not ECDHE+AEAD */
    assert_int_equal(fl_tls_ctx_new(FL_TLS_SERVER, &o, &x), FL_ECONFIG);
    o.ciphersuite = NULL;
    o.key_file = NULL;
    assert_int_equal(fl_tls_ctx_new(FL_TLS_SERVER, &o, &x), FL_ECONFIG);
}

static int setup(void **state)
{
    g_log = tmpfile();
    if (!g_log || fl_testcerts_make(&g_certs) != 0)
        return -1;
    fl_log_set_sink(g_log);
    return 0;
}

static int teardown(void **state)
{
    fl_log_set_sink(NULL);
    /* Replay the captured log so a failing run shows it. */
    if (g_log) {
        rewind(g_log);
        char line[1200];
        while (fgets(line, sizeof line, g_log))
            fputs(line, stderr);
        fclose(g_log);
    }
    fl_testcerts_remove(&g_certs);
    return 0;
}

int main(void)
{
    /* As fedopt-server and fedopt-client do (server/main.c): a peer that
     * closes while we write to it costs its connection, not the process
     * (libuv writes with write(2); test_backpressure_memory's clients leave
     * while the server still sends them the model). */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_ok),
        cmocka_unit_test(test_session_resumption),
        cmocka_unit_test(test_resumption_after_cert_expiry),
        cmocka_unit_test(test_handshake_matrix),
        cmocka_unit_test(test_plaintext_peer),
        cmocka_unit_test(test_no_client_cert_option),
        cmocka_unit_test(test_frames_over_tls),
        cmocka_unit_test(test_model_50mib_both_ways),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_pause_mid_buffer),
        cmocka_unit_test(test_backpressure_memory),
        cmocka_unit_test(test_peer_gone_mid_transfer),
        cmocka_unit_test(test_connect_failures),
        cmocka_unit_test(test_connect_by_name),
        cmocka_unit_test(test_max_conns),
        cmocka_unit_test(test_max_handshakes),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_heartbeats_during_handshake_storm),
        cmocka_unit_test(test_resumed_storm),
        cmocka_unit_test(test_handshakes_on_loop_option),
        cmocka_unit_test(test_heartbeats_during_uploads),
        cmocka_unit_test(test_heartbeats_during_downloads),
        cmocka_unit_test(test_pause_during_record_jobs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
