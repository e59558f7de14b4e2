/* bench_tls: what the secure transport costs on this machine.
 *
 *   1. raw AEAD speed of each suite's cipher (mbedTLS, one core, 16 KiB
 *      records: what a TLS record costs at best), and the two candidate
 *      whole-tensor checksums (zlib CRC-32, mbedTLS SHA-256);
 *   2. model transfer over loopback TLS, server process -> client process
 *      (a 50 MiB model to 1 and to 8 concurrent connections sharing one
 *      encoded buffer), per suite, beside the raw speed from (1); and the
 *      other way, the model uploaded by 1 and 8 clients to the server, whose
 *      records are decrypted in record jobs (common/net/tls.h), the
 *      server's CPU per byte beside the raw decryption speed;
 *   3. heap per idle open TLS connection, server side and client side.
 *
 * Figures only (no assertions). Options: BENCH_TLS_MIB (model size, default
 * 50), BENCH_TLS_IDLE (idle connections, default 200), BENCH_TLS_SUITE (run
 * only the suites whose name contains it, e.g. CHACHA20), BENCH_TLS_RECORDS_ON_LOOP=1
 * (the server decrypts uploads on its loop thread instead of in record jobs),
 * BENCH_TLS_NO_DOWNLOAD=1 (only the uploads of part 2). */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/cipher.h>
#include <mbedtls/sha256.h>

#include "common/base/bytes.h"
#include "common/base/log.h"
#include "common/net/tls.h"
#include "common/base/version.h"
#include "common/net/wire.h"
#include "tests/support/testcerts.h"
#include "tests/support/benchclock.h"

static fl_testcerts_t g_certs;
static int g_upload;     /* the clients send a delta of the model's size, the server receives it */
static fl_buf_t *g_delta; /* that delta, encoded */

static size_t heap_used(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

/* ---- 1. raw speeds ------------------------------------------------------ */

/* MB per CPU-second of encrypting (decrypt = 0) or decrypting-and-verifying
 * (decrypt = 1) 16 KiB records with one AEAD. */
static double aead_mbs(mbedtls_cipher_type_t type, int keybits, int decrypt)
{
    mbedtls_cipher_context_t c;
    mbedtls_cipher_init(&c);
    unsigned char key[32] = {1}, iv[12] = {2}, ad[13] = {3};
    enum { REC = 16384 };
    static unsigned char in[REC], out[REC + 16];
    memset(in, 0x5a, sizeof in);
    static unsigned char back[REC];
    size_t olen;
    if (mbedtls_cipher_setup(&c, mbedtls_cipher_info_from_type(type)) != 0 ||
        mbedtls_cipher_setkey(&c, key, keybits, MBEDTLS_ENCRYPT) != 0 ||
        mbedtls_cipher_auth_encrypt_ext(&c, iv, sizeof iv, ad, sizeof ad, in, REC, out, sizeof out,
                                        &olen, 16) != 0 ||
        (decrypt && mbedtls_cipher_setkey(&c, key, keybits, MBEDTLS_DECRYPT) != 0)) {
        mbedtls_cipher_free(&c);
        return 0;
    }
    size_t bytes = 0;
    double t0 = fl_bench_cpu(), t;
    do {
        for (int i = 0; i < 64; i++) {
            if (decrypt) {
                /* The same record each time: the tag must verify every time. */
                if (mbedtls_cipher_auth_decrypt_ext(&c, iv, sizeof iv, ad, sizeof ad, out, REC + 16,
                                                    back, sizeof back, &olen, 16) != 0) {
                    mbedtls_cipher_free(&c);
                    return 0;
                }
            } else {
                iv[0]++;
                mbedtls_cipher_auth_encrypt_ext(&c, iv, sizeof iv, ad, sizeof ad, in, REC, out,
                                                sizeof out, &olen, 16);
            }
            bytes += REC;
        }
        t = fl_bench_cpu() - t0;
    } while (t < 0.7);
    mbedtls_cipher_free(&c);
    return bytes / t / 1e6;
}

static void checksum_speeds(void)
{
    size_t n = 64u << 20;
    unsigned char *b = malloc(n);
    memset(b, 0x33, n);
    double t0 = fl_bench_wall();
    volatile uint32_t crc = fl_crc32(0, b, n);
    double tc = fl_bench_wall() - t0;
    unsigned char h[32];
    t0 = fl_bench_wall();
    mbedtls_sha256_ret(b, n, h, 0);
    double ts = fl_bench_wall() - t0;
    (void)crc;
    printf("checksum of a whole tensor (64 MiB): zlib CRC-32 %.0f MB/s, mbedTLS SHA-256 %.0f MB/s\n",
           n / tc / 1e6, n / ts / 1e6);
    free(b);
}

/* ---- 2. transfers ------------------------------------------------------- */

typedef struct {
    fl_buf_t *model;
    uint64_t params;
    int closes, expect;
    fl_tls_conn_t *conns[512];
    int nconns;
    int hellos;
    uv_timer_t idle_timer;
    int idle_mode;
    size_t heap0;
    double per_conn;
    int measured;
    double cpu0;           /* process CPU time when the clients started */
    double hs_cpu_ms;      /* idle mode: server CPU per connection set up */
    uint64_t last_hello;   /* loop time of the last Hello */
    pid_t child;
    int child_done;
    uint8_t *dst[512];     /* upload mode: each connection's receive buffer, reused */
    size_t dst_cap;
    size_t bytes;          /* upload mode: bytes received */
    int done;
} srv_t;

static void s_open(fl_tls_conn_t *c, void *ud)
{
    srv_t *s = ud;
    if (s->nconns < 512)
        s->conns[s->nconns++] = c;
}

/* Runs every 100 ms. Idle mode: 1 s after every client said Hello (the
 * clients measure at 200 ms), or when none has for 5 s (some handshakes failed
 * on a loaded machine), measure the heap and close everything. Both modes: notice the client process ending. */
static void check(uv_timer_t *t)
{
    srv_t *s = t->data;
    int st;
    if (!s->child_done && waitpid(s->child, &st, WNOHANG) == s->child)
        s->child_done = 1 + (WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1);
    if (s->idle_mode && !s->measured && s->hellos > 0 &&
        uv_now(t->loop) - s->last_hello > (s->hellos == s->expect ? 1000u : 5000u)) {
        s->measured = 1;
        s->per_conn = (double)(heap_used() - s->heap0) / s->hellos;
        s->hs_cpu_ms = (fl_bench_cpu() - s->cpu0) * 1e3 / s->hellos;
        for (int i = 0; i < s->nconns; i++)
            fl_tls_conn_close(s->conns[i]);
    }
}

static void s_msg(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    srv_t *s = ud;
    if (g_upload && ev->kind == FL_WIRE_EV_TENSOR) {
        s->bytes += ev->nbytes;
        s->done++;
        fl_tls_conn_close(c);
        return;
    }
    if (g_upload && ev->kind == FL_WIRE_EV_MESSAGE && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_UPDATE) {
        for (int i = 0; i < s->nconns; i++)
            if (s->conns[i] == c && s->dst[i])
                fl_tls_conn_set_tensor_dst(c, s->dst[i], s->dst_cap);
        return;
    }
    if (ev->kind != FL_WIRE_EV_MESSAGE || ev->msg->msg_case != FEDOPT__ENVELOPE__MSG_HELLO)
        return;
    Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
    w.protocol_version = FL_PROTOCOL_VERSION;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_WELCOME;
    m.welcome = &w;
    fl_tls_conn_send_msg(c, &m);
    if (s->idle_mode) {
        s->hellos++;
        s->last_hello = uv_now(s->idle_timer.loop);
        return;
    }
    if (g_upload)
        return;
    Fedopt__TaskOffer t = FEDOPT__TASK_OFFER__INIT;
    t.round_id = 1;
    t.num_params = s->params;
    m.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    m.task_offer = &t;
    fl_tls_conn_send_msg(c, &m);
    fl_tls_conn_send(c, s->model); /* shared: one encoding for every connection */
}

static void s_close(fl_tls_conn_t *c, int reason, void *ud)
{
    srv_t *s = ud;
    s->closes++;
    for (int i = 0; i < s->nconns; i++)
        if (s->conns[i] == c)
            s->conns[i] = s->conns[--s->nconns];
}

typedef struct {
    fl_buf_t *model;       /* upload mode: sent after Welcome */
    int n, opened, done, closed, welcomed;
    double t_first_open, t_last_done;
    size_t bytes;
    fl_tls_conn_t *conns[512];
    int idle_mode;
    size_t heap0;
    uv_timer_t idle_timer;
    double per_conn;
    uint8_t *dst[512];     /* each connection's model buffer, reused (unless BENCH_TLS_FRESH) */
    size_t dst_cap;
} cli_t;

static void c_open(fl_tls_conn_t *c, void *ud)
{
    cli_t *k = ud;
    if (k->opened++ == 0)
        k->t_first_open = fl_bench_wall();
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    h.protocol_version = FL_PROTOCOL_VERSION;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    m.hello = &h;
    fl_tls_conn_send_msg(c, &m);
}

static void c_idle_measured(uv_timer_t *t)
{
    cli_t *k = t->data;
    k->per_conn = (double)(heap_used() - k->heap0) / k->welcomed;
}

static void c_msg(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    cli_t *k = ud;
    if (ev->kind == FL_WIRE_EV_TENSOR) {
        k->bytes += ev->nbytes;
        k->t_last_done = fl_bench_wall();
        if (++k->done == k->n)
            for (int i = 0; i < k->n; i++)
                if (k->conns[i])
                    fl_tls_conn_close(k->conns[i]);
    } else if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_TASK_OFFER) {
        for (int i = 0; i < k->n; i++)
            if (k->conns[i] == c && k->dst[i])
                fl_tls_conn_set_tensor_dst(c, k->dst[i], k->dst_cap);
    } else if (k->model && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_WELCOME) {
        Fedopt__Update u = FEDOPT__UPDATE__INIT;
        u.round_id = 1;
        u.weight = 1;
        Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
        m.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
        m.update = &u;
        fl_tls_conn_send_msg(c, &m);
        fl_tls_conn_send(c, k->model);
        k->t_first_open = k->opened == 1 ? fl_bench_wall() : k->t_first_open;
    } else if (k->idle_mode && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_WELCOME) {
        if (++k->welcomed + k->closed == k->n)
            uv_timer_start(&k->idle_timer, c_idle_measured, 200, 0);
    }
}

static void c_close(fl_tls_conn_t *c, int reason, void *ud)
{
    cli_t *k = ud;
    k->closed++;
    if (k->idle_mode && k->welcomed < k->n && k->welcomed + k->closed == k->n && k->welcomed)
        uv_timer_start(&k->idle_timer, c_idle_measured, 200, 0);
    for (int i = 0; i < k->n; i++)
        if (k->conns[i] == c)
            k->conns[i] = NULL;
}

/* Child process: n clients against port; writes its figures to fd. */
static void run_clients(int port, int n, int idle_mode, int fd, size_t model_bytes, fl_buf_t *model)
{
    static cli_t k;
    memset(&k, 0, sizeof k);
    if (g_upload && !idle_mode)
        k.model = g_delta;
    /* A client keeps its model buffer from round to round: give each
     * connection one, already in memory, and receive into it (the pages
     * are then not faulted in and zeroed again for every transfer). */
    if (!idle_mode && !g_upload && !getenv("BENCH_TLS_FRESH")) {
        k.dst_cap = model_bytes;
        for (int i = 0; i < n; i++) {
            k.dst[i] = aligned_alloc(64, (model_bytes + 63) & ~(size_t)63);
            if (k.dst[i])
                memset(k.dst[i], 0, model_bytes);
        }
    }
    double cpu0 = fl_bench_cpu();
    uv_loop_t loop;
    uv_loop_init(&loop);
    fl_tls_opts_t o = {0};
    o.ca_file = fl_testcerts_path(&g_certs, 0, "ca.crt");
    o.cert_file = fl_testcerts_path(&g_certs, 1, "clients/alice.crt");
    o.key_file = fl_testcerts_path(&g_certs, 2, "clients/alice.key");
    fl_tls_ctx_t *ctx;
    if (fl_tls_ctx_new(FL_TLS_CLIENT, &o, &ctx) != 0)
        _exit(1);
    static const fl_tls_cbs_t cbs = {.on_open = c_open, .on_message = c_msg, .on_close = c_close};
    k.n = n;
    k.idle_mode = idle_mode;
    uv_timer_init(&loop, &k.idle_timer);
    k.idle_timer.data = &k;
    k.heap0 = heap_used();
    for (int i = 0; i < n; i++)
        if (fl_tls_connect(&loop, ctx, "127.0.0.1", port, "localhost", &cbs, &k, &k.conns[i]) != 0)
            _exit(1);
    while (k.closed < n)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&k.idle_timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    fl_tls_ctx_free(ctx);
    double r[5] = {k.t_last_done - k.t_first_open, (double)k.bytes, k.per_conn, fl_bench_cpu(),
                   (double)(idle_mode ? k.welcomed : k.done)};
    r[3] -= cpu0;
    if (write(fd, r, sizeof r) != (ssize_t)sizeof r)
        _exit(1);
    _exit(k.done == n || (idle_mode && k.welcomed) || (k.model && k.closed == n) ? 0 : 1);
}

/* Runs one scenario: the server here, the clients in a child process. */
static int scenario(const char *suite, int n, fl_buf_t *model, uint64_t params, int idle_mode,
                    double out[5], double *srv_cpu, double *srv_per_conn)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    fl_tls_opts_t o = {0};
    o.ca_file = fl_testcerts_path(&g_certs, 0, "ca.crt");
    o.cert_file = fl_testcerts_path(&g_certs, 1, "server.crt");
    o.key_file = fl_testcerts_path(&g_certs, 2, "server.key");
    o.ciphersuite = suite;
    o.max_tensor = params * 4 + 4;
    if (getenv("BENCH_TLS_RECORDS_ON_LOOP"))
        o.record_jobs = -1; /* the server decrypts on its loop thread, as clients do */
    fl_tls_ctx_t *ctx;
    if (fl_tls_ctx_new(FL_TLS_SERVER, &o, &ctx) != 0)
        return -1;
    static const fl_tls_cbs_t cbs = {.on_open = s_open, .on_message = s_msg, .on_close = s_close};
    srv_t s = {0};
    s.model = model;
    s.params = params;
    s.expect = n;
    s.idle_mode = idle_mode;
    uv_timer_init(&loop, &s.idle_timer);
    s.idle_timer.data = &s;
    fl_tls_server_t *srv;
    if (fl_tls_server_start(&loop, ctx, "127.0.0.1", 0, &cbs, &s, &srv) != 0)
        return -1;
    if (g_upload && !idle_mode && !getenv("BENCH_TLS_FRESH")) {
        /* The server keeps its upload buffers from round to round
         * (server/uploads). Not shared with the forked clients: their
         * pages would be copied on the server's first write (a fork's
         * copy-on-write), a cost of this bench, not of receiving. */
        s.dst_cap = params * 4;
        size_t cap = (s.dst_cap + 4095) & ~(size_t)4095;
        for (int i = 0; i < n && i < 512; i++) {
            void *p = NULL;
            if (posix_memalign(&p, 4096, cap) != 0)
                continue;
            madvise(p, cap, MADV_DONTFORK);
            memset(p, 0, cap);
            s.dst[i] = p;
        }
    }
    s.heap0 = heap_used();
    uv_timer_start(&s.idle_timer, check, 100, 100);
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    double cpu0 = fl_bench_cpu();
    s.cpu0 = cpu0;
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        run_clients(fl_tls_server_port(srv), n, idle_mode, fds[1], params * 4, model);
    }
    close(fds[1]);
    s.child = pid;
    while (s.closes < n && !(s.child_done && fl_tls_ctx_conns(ctx) == 0))
        uv_run(&loop, UV_RUN_ONCE);
    uv_timer_stop(&s.idle_timer);
    if (srv_cpu)
        *srv_cpu = fl_bench_cpu() - cpu0;
    fl_tls_server_close(srv);
    uv_close((uv_handle_t *)&s.idle_timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    fl_tls_ctx_free(ctx);
    int st = 0;
    ssize_t got = read(fds[0], out, 5 * sizeof(double));
    close(fds[0]);
    if (!s.child_done)
        waitpid(pid, &st, 0);
    int ok = s.child_done ? s.child_done == 1 : WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (srv_per_conn)
        *srv_per_conn = s.per_conn;
    if (srv_cpu && idle_mode)
        *srv_cpu = s.hs_cpu_ms;
    for (int i = 0; i < 512; i++)
        free(s.dst[i]);
    if (g_upload && !idle_mode && s.done != n)
        ok = 0;
    return got == 5 * sizeof(double) && ok ? 0 : -1;
}

int main(void)
{
    fl_log_set_level(FL_LOG_WARN); /* a failed handshake under load says so */
    if (fl_testcerts_make(&g_certs) != 0) {
        fprintf(stderr, "bench_tls: cannot make certificates\n");
        return 1;
    }
    const char *e = getenv("BENCH_TLS_MIB");
    size_t mib = e ? (size_t)atoi(e) : 50;
    e = getenv("BENCH_TLS_IDLE");
    int idle = e ? atoi(e) : 200;
    if (mib < 1)
        mib = 1;
    if (idle < 1 || idle > 500)
        idle = 200;

    static const struct {
        const char *suite;
        mbedtls_cipher_type_t cipher;
        int bits;
    } suites[] = {
        {"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", MBEDTLS_CIPHER_CHACHA20_POLY1305, 256},
        {"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", MBEDTLS_CIPHER_AES_128_GCM, 128},
        {"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384", MBEDTLS_CIPHER_AES_256_GCM, 256},
    };
    printf("bench_tls: mbedTLS 2.28, %ld online CPUs\n", sysconf(_SC_NPROCESSORS_ONLN));
    checksum_speeds();

    uint64_t params = mib * 1024 * 1024 / 4;
    float *x = malloc(params * sizeof *x);
    for (uint64_t i = 0; i < params; i++)
        x[i] = (float)(i % 1000) * 1e-3f;
    fl_buf_t *model;
    if (fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, 1, x, params * 4, 0, &model) != 0 ||
        fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 1, x, params * 4, 0, &g_delta) != 0)
        return 1;
    free(x);

    int rc = 0;
    const char *only = getenv("BENCH_TLS_SUITE"); /* a substring: run just the matching suites */
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
        if (only && !strstr(suites[i].suite, only))
            continue;
        double raw = aead_mbs(suites[i].cipher, suites[i].bits, 0);
        double rawd = aead_mbs(suites[i].cipher, suites[i].bits, 1);
        printf("%s: raw AEAD %.0f MB per CPU-second encrypting, %.0f decrypting (16 KiB records)\n",
               suites[i].suite, raw, rawd);
        for (int n = 1; n <= 8 && !getenv("BENCH_TLS_NO_DOWNLOAD"); n += 7) {
            double r[5], scpu = 0;
            if (scenario(suites[i].suite, n, model, params, 0, r, &scpu, NULL) != 0) {
                printf("  transfer to %d connection(s): FAILED\n", n);
                rc = 1;
                continue;
            }
            double mbs = r[1] / r[0] / 1e6;
            double snd = r[1] / scpu / 1e6, rcv = r[1] / r[3] / 1e6;
            printf("  %zu MiB model to %d connection(s) over loopback TLS: %.0f MB/s wall in all "
                   "(%.2f s, %.0f%% of raw); per CPU-second: sender %.0f MB (%.0f%% of raw), "
                   "receiver %.0f MB (%.0f%% of raw decryption)\n",
                   mib, n, mbs, r[0], 100.0 * mbs / raw, snd, 100.0 * snd / raw, rcv,
                   100.0 * rcv / rawd);
        }
        g_upload = 1;
        for (int n = 1; n <= 8; n += 7) {
            double r[5], scpu = 0;
            if (scenario(suites[i].suite, n, model, params, 0, r, &scpu, NULL) != 0) {
                printf("  upload from %d connection(s): FAILED\n", n);
                rc = 1;
                continue;
            }
            double bytes = (double)n * params * 4;
            double rcv = bytes / scpu / 1e6, snd = bytes / r[3] / 1e6;
            printf("  %zu MiB model uploaded by %d connection(s) over loopback TLS: per CPU-second: "
                   "server receiving %.0f MB (%.0f%% of raw decryption), clients sending %.0f MB\n",
                   mib, n, rcv, 100.0 * rcv / rawd, snd);
        }
        g_upload = 0;
    }
    double r[5], spc = 0, hs = 0;
    if (scenario(NULL, idle, model, params, 1, r, &hs, &spc) == 0)
        printf("heap per idle open TLS connection (%.0f of %d connections up, after "
               "Hello/Welcome): server %.1f KiB, client %.1f KiB; server CPU per mutual-TLS "
               "handshake (ECDHE-X25519, ECDSA P-256 both ways) %.1f ms\n",
               r[4], idle, spc / 1024, r[2] / 1024, hs);
    else {
        printf("idle connections: FAILED\n");
        rc = 1;
    }
    fl_buf_unref(model);
    fl_buf_unref(g_delta);
    fl_testcerts_remove(&g_certs);
    return rc;
}
