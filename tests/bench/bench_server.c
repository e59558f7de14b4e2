/* bench_server: fedopt-server's memory and per-round overhead as K grows.
 *
 * Part 1 (in process, no network): one round of K uploads of the `mlp` model
 * through the server's own path — selection (fl_round_begin), per upload a
 * freshly allocated delta (as the transport delivers it) screened, added
 * (fl_round_add_work) and freed, then ServerOpt finish (FedAdam), the state
 * serialization and the SQLite commit with the checkpoint. Prints the time
 * of each phase.
 *
 * Part 2 (the real daemon): `fedopt-server run` as a child process and K
 * mutual-TLS connections from this process on one libuv loop, each uploading
 * a delta of the `mlp` model for one round; the server's peak RSS comes from
 * wait4's ru_maxrss once it exits. The goal: flat in K, at most
 * (3 + max_buffered_uploads) x model size + 64 MiB.
 *
 * Part 3 (the storm): the real daemon, one probe client connected first that
 * sends a Heartbeat asking for an answer (echo) every 10 ms and records the
 * round trip, then N mutual-TLS clients connecting at once (no pacing), each
 * counted when its Welcome arrives. Then the server is stopped and started
 * again with the same key, and the same N clients reconnect offering their
 * session tickets (resumed handshakes). Per phase: seconds until all N were
 * welcomed, the probe's worst and median round trip while they connected,
 * the server's CPU seconds (its /proc stat) per handshake, and how many
 * handshakes resumed. The clients run in this process on the same machine,
 * so their handshake work competes with the server's for the cores.
 *
 * The server runs handshakes in libuv's thread pool, at most one job per CPU
 * at once, those under way first (common/net/tls.h); its loop answers the
 * probe meanwhile.
 *
 * FEDOPT_BENCH_KS="10 100" picks other K values (default 10 100 1000; set and
 * empty runs the storm alone); FEDOPT_BENCH_STORM=N the storm's clients
 * (default 500; 0 skips it). */
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/net/certs.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/models.h"
#include "server/serveropt.h"
#include "common/net/tls.h"
#include "common/base/version.h"
#include "common/net/wire.h"
#include "server/round.h"
#include "server/store.h"
#include "tests/support/benchclock.h"

static size_t mlp_numel(void)
{
    const fl_model_info_t *info = fl_models_find("mlp");
    fl_model_t *m = NULL;
    if (!info || fl_model_create("mlp", &info->paper, &m))
        return 0;
    size_t n = m->params.numel;
    fl_model_free(m);
    return n;
}

/* ---- part 1 --------------------------------------------------------------- */

static int part1(int k, size_t n, const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/bench-%d.db", dir, k);
    fl_serveropt_config_t oc;
    fl_serveropt_config_defaults(&oc, FL_SERVEROPT_FEDADAM);
    fl_serveropt_t *opt = NULL;
    fl_round_t *r = NULL;
    fl_store_t *st = NULL;
    float *x = calloc(n, sizeof *x);
    float *tmpl = malloc(n * sizeof *tmpl);
    char **names = calloc((size_t)k, sizeof *names);
    uint8_t *state = NULL;
    size_t state_len = 0;
    int rc = 1;
    if (!x || !tmpl || !names || fl_serveropt_create(&oc, n, &opt) || fl_store_open(path, 0, &st))
        goto out;
    for (size_t j = 0; j < n; j++)
        tmpl[j] = (float)(j % 17) * 1e-3f - 8e-3f;
    for (int i = 0; i < k; i++) {
        names[i] = malloc(16);
        snprintf(names[i], 16, "c%05d", i);
    }
    fl_round_config_t rc_ = {.seed = 1, .clients_per_round = (uint32_t)k, .min_reports = 1, .over_selection = 1.0,
                             .deadline_s = 600, .numel = n};
    int64_t run;
    fl_serveropt_state_save(opt, &state, &state_len);
    fl_store_run_info_t info = {"mlp", "fedadam", 1, "{}"};
    if (fl_store_run_create(st, &info, x, n, state, state_len, &run))
        goto out;
    free(state);
    state = NULL;
    rc_.run_id = run;
    if (fl_round_create(&rc_, &r))
        goto out;
    double t0 = fl_bench_wall();
    if (fl_round_begin(r, 1, (const char *const *)names, (size_t)k, opt, 0, 0))
        goto out;
    double t1 = fl_bench_wall(), t_add = 0;
    for (size_t s = 0; s < fl_round_selected_count(r); s++) {
        const char *nm = fl_round_selected_name(r, s);
        /* What the transport hands over: a fresh buffer per upload. */
        float *d = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!d)
            goto out;
        memcpy(d, tmpl, n * sizeof(float));
        d[s % n] += 1e-3f;
        double norm;
        if (fl_round_check(r, nm, 1, n, 10) != FL_REFUSE_NONE || fl_round_add_start(r, nm))
            goto out;
        double ta = fl_bench_wall();
        int arc = fl_round_add_work(opt, d, n, 10, &norm);
        t_add += fl_bench_wall() - ta;
        fl_round_add_end(r, nm, arc, 10, 0.5, norm, (int64_t)(n * 4), 1);
        free(d);
    }
    double t2 = fl_bench_wall();
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int closed;
    if (fl_round_close(r, 2, 2, &row, &ups, &nups, &closed) || !closed)
        goto out;
    fl_serveropt_round_t res;
    if (fl_serveropt_finish(opt, x, n, &res))
        goto out;
    double t3 = fl_bench_wall();
    if (fl_serveropt_state_save(opt, &state, &state_len) ||
        fl_store_commit_round(st, &row, ups, nups, x, n, state, state_len, 0))
        goto out;
    double t4 = fl_bench_wall();
    printf("  K=%-5d selection %7.3f ms  aggregation %8.1f ms (add + norm %.3f ms/update)  finish %6.2f ms"
           "  commit %6.1f ms  overhead without the adds %6.1f ms\n",
           k, (t1 - t0) * 1e3, (t2 - t1) * 1e3, t_add * 1e3 / k, (t3 - t2) * 1e3, (t4 - t3) * 1e3,
           ((t4 - t0) - t_add) * 1e3);
    rc = 0;
out:
    if (rc)
        printf("  K=%d: part 1 failed\n", k);
    if (names)
        for (int i = 0; i < k; i++)
            free(names[i]);
    free(names);
    free(state);
    free(x);
    free(tmpl);
    fl_round_free(r);
    fl_serveropt_free(opt);
    fl_store_close(st);
    return rc;
}

/* ---- part 2 --------------------------------------------------------------- */

typedef struct {
    fl_tls_conn_t *conn;
    int idx, done, opened;
} bconn_t;

static char B_server_bin[PATH_MAX + 32];

static struct {
    uv_loop_t *loop;
    fl_tls_ctx_t **ctx; /* one client context per certificate */
    bconn_t *c;
    int k, finished, failed, next, handshaking;
    size_t n;
    int port;
    fl_buf_t *delta; /* one encoded delta shared by every connection */
} B;

static void connect_more(void);

static void b_open(fl_tls_conn_t *c, void *ud)
{
    bconn_t *b = ud;
    b->opened = 1;
    B.handshaking--;
    connect_more();
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    char name[16];
    snprintf(name, sizeof name, "c%05d", b->idx);
    h.protocol_version = FL_PROTOCOL_VERSION;
    h.client_name = name;
    h.num_examples = 10;
    h.max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    fl_tls_conn_send_msg(c, &env);
}

static void b_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind == FL_WIRE_EV_TENSOR && ev->purpose == FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL) {
        Fedopt__Update u = FEDOPT__UPDATE__INIT;
        u.round_id = ev->round_id;
        u.weight = 10;
        u.num_examples = 10;
        u.train_loss = 0.5;
        Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
        env.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
        env.update = &u;
        fl_tls_conn_send_msg(c, &env);
        fl_tls_conn_send(c, B.delta);
    }
}

static void b_close(fl_tls_conn_t *c, int reason, void *ud)
{
    bconn_t *b = ud;
    b->done = 1;
    if (!b->opened) {
        B.handshaking--;
        connect_more();
    }
    if (++B.finished == B.k)
        uv_stop(B.loop);
}

/* Opens connections a few dozen at a time: a thousand simultaneous
 * handshakes on two cores would hit the handshake timeout. */
static void connect_more(void)
{
    while (B.handshaking < 32 && B.next < B.k) {
        bconn_t *b = &B.c[B.next];
        b->idx = B.next;
        fl_tls_cbs_t cbs = {.on_open = b_open, .on_message = b_message, .on_close = b_close};
        B.next++;
        if (fl_tls_connect(B.loop, B.ctx[b->idx], "127.0.0.1", B.port, "localhost", &cbs, b, &b->conn)) {
            b->done = 1;
            B.finished++;
            continue;
        }
        B.handshaking++;
    }
}

static int make_pki(const char *dir, int k)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/ca.crt", dir);
    if (access(p, R_OK) != 0 && fl_certs_init(dir, "localhost"))
        return -1;
    for (int i = 0; i < k; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%05d", i);
        snprintf(p, sizeof p, "%s/clients/%s.crt", dir, name);
        if (access(p, R_OK) != 0 && fl_certs_issue(dir, name))
            return -1;
    }
    return 0;
}

static int part2(int k, size_t n, const char *dir, const char *server_bin)
{
    char db[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX], logp[PATH_MAX], kbuf[16];
    snprintf(db, sizeof db, "%s/daemon-%d.db", dir, k);
    snprintf(cert, sizeof cert, "%s/server.crt", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    snprintf(logp, sizeof logp, "%s/server-%d.log", dir, k);
    snprintf(kbuf, sizeof kbuf, "%d", k);
    int port = 20000 + (int)(getpid() % 20000);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    double t0 = fl_bench_wall();
    pid_t pid = fork();
    if (pid == 0) {
        FILE *lf = freopen(logp, "w", stderr);
        (void)lf;
        execl(server_bin, server_bin, "run", "--listen", listen, "--tls-cert", cert, "--tls-key", key, "--tls-ca",
              ca, "--db", db, "--model", "mlp", "--rounds", "1", "--clients-per-round", kbuf, "--min-clients", kbuf,
              "--round-deadline", "600", "--heartbeat", "3600", "--server-opt", "fedadam", "--max-buffered-uploads",
              "4", "--wait-timeout", "900", (char *)NULL);
        _exit(127);
    }
    /* Wait for the server to listen (its log says so). */
    for (int i = 0; i < 300; i++) {
        FILE *f = fopen(logp, "r");
        char line[512];
        int up = 0;
        while (f && fgets(line, sizeof line, f))
            up |= strstr(line, "listening on") != NULL;
        if (f)
            fclose(f);
        if (up)
            break;
        usleep(50000);
    }
    B.loop = uv_default_loop();
    B.k = k;
    B.finished = 0;
    B.c = calloc((size_t)k, sizeof *B.c);
    B.next = 0;
    B.handshaking = 0;
    B.port = port;
    connect_more();
    uv_run(B.loop, UV_RUN_DEFAULT);
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char cmd[PATH_MAX + 32];
        printf("  K=%d: the server failed; its log ends:\n", k);
        snprintf(cmd, sizeof cmd, "tail -n 5 %s", logp);
        if (system(cmd) != 0)
            printf("  (no log)\n");
        free(B.c);
        return 1;
    }
    double t1 = fl_bench_wall();
    double model_mib = (double)n * 4 / 1048576.0;
    /* The server logs its own VmHWM: wait4's ru_maxrss would include this
     * process's memory, which the child carried from fork until exec. */
    double peak_mib = -1;
    FILE *lf = fopen(logp, "r");
    char line[512];
    while (lf && fgets(line, sizeof line, lf)) {
        char *p = strstr(line, "peak RSS ");
        if (p)
            peak_mib = atof(p + 9);
    }
    if (lf)
        fclose(lf);
    (void)ru;
    int opened = 0;
    for (int i = 0; i < k; i++)
        opened += B.c[i].opened;
    printf("  K=%-5d server peak RSS %7.1f MiB  (model %.2f MiB; goal <= (3 + 4) x model + 64 = %.1f MiB)"
           "  %d clients connected, round wall %.2f s\n",
           k, peak_mib, model_mib, 7 * model_mib + 64, opened, t1 - t0);
    free(B.c);
    return 0;
}

/* ---- part 3: the storm ---------------------------------------------------- */

typedef struct {
    fl_tls_conn_t *conn;
    int welcomed, closed;
} sconn_t;

static struct {
    int n, welcomed, failed, phase_done;
    sconn_t *c;
    double t0, t_all;
    /* the probe (its thread's) */
    fl_tls_ctx_t *pctx;
    fl_tls_conn_t *probe;
    atomic_int probe_ready, stop;
    int outstanding, recording, port;
    double sent_at;
    uv_mutex_t mu; /* rtt, nrtt, recording */
    double *rtt;
    size_t nrtt, cap;
    uv_timer_t limit;
} S;

static void send_hello(fl_tls_conn_t *c, const char *name)
{
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    h.protocol_version = FL_PROTOCOL_VERSION;
    h.client_name = (char *)name;
    h.num_examples = 10;
    h.max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    fl_tls_conn_send_msg(c, &env);
}

static void s_open(fl_tls_conn_t *c, void *ud)
{
    sconn_t *sc = ud;
    char name[16];
    snprintf(name, sizeof name, "c%05d", (int)(sc - S.c));
    send_hello(c, name);
}

static void s_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    sconn_t *sc = ud;
    if (ev->kind == FL_WIRE_EV_MESSAGE && ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_WELCOME && !sc->welcomed) {
        sc->welcomed = 1;
        if (++S.welcomed == S.n)
            S.t_all = fl_bench_wall() - S.t0;
    }
}

static void s_close(fl_tls_conn_t *c, int reason, void *ud)
{
    sconn_t *sc = ud;
    sc->closed = 1;
    sc->conn = NULL;
    if (!sc->welcomed)
        S.failed++;
}

/* The probe runs on a thread and loop of its own, so its round trips time
 * the server, not this process's loop busy with the storm's handshakes. */
static void p_open(fl_tls_conn_t *c, void *ud) { send_hello(c, "probe"); }

static void p_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind != FL_WIRE_EV_MESSAGE)
        return;
    if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_WELCOME) {
        atomic_store(&S.probe_ready, 1);
    } else if (ev->msg->msg_case == FEDOPT__ENVELOPE__MSG_HEARTBEAT && S.outstanding) {
        S.outstanding = 0;
        uv_mutex_lock(&S.mu);
        if (S.recording && S.nrtt < S.cap)
            S.rtt[S.nrtt++] = fl_bench_wall() - S.sent_at;
        uv_mutex_unlock(&S.mu);
    }
}

static void p_close(fl_tls_conn_t *c, int reason, void *ud) { S.probe = NULL; }

static void probe_tick(uv_timer_t *t)
{
    if (atomic_load(&S.stop)) {
        if (S.probe)
            fl_tls_conn_close(S.probe);
        uv_close((uv_handle_t *)t, NULL);
        return;
    }
    if (!S.probe || !atomic_load(&S.probe_ready) || S.outstanding)
        return;
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    hb.echo = 1;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    S.sent_at = fl_bench_wall();
    S.outstanding = 1;
    fl_tls_conn_send_msg(S.probe, &env);
}

static void probe_main(void *arg)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    fl_tls_cbs_t pcbs = {.on_open = p_open, .on_message = p_message, .on_close = p_close};
    if (fl_tls_connect(&loop, S.pctx, "127.0.0.1", S.port, "localhost", &pcbs, NULL, &S.probe) == 0)
        uv_timer_start(&tick, probe_tick, 10, 10);
    else
        uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

/* What the probe is waiting for now counts with what it has waited so far. */
static void probe_take(size_t from, double **r, size_t *m)
{
    uv_mutex_lock(&S.mu);
    S.recording = 0;
    if (S.outstanding && S.nrtt < S.cap)
        S.rtt[S.nrtt++] = fl_bench_wall() - S.sent_at;
    *r = S.rtt + from;
    *m = S.nrtt - from;
    uv_mutex_unlock(&S.mu);
}

static void storm_limit(uv_timer_t *t) { uv_stop(t->loop); }

static double proc_cpu_s(pid_t pid)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *q = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!q || sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static pid_t storm_server(const char *dir, int n, int port, int phase, char *logp, size_t logn)
{
    char db[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX], kbuf[16], listen[64];
    snprintf(db, sizeof db, "%s/storm-%d.db", dir, phase);
    snprintf(cert, sizeof cert, "%s/server.crt", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    snprintf(logp, logn, "%s/storm-%d.log", dir, phase);
    snprintf(kbuf, sizeof kbuf, "%d", n + 2); /* never enough for a round */
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *lf = freopen(logp, "w", stderr);
        (void)lf;
        execl(B_server_bin, B_server_bin, "run", "--listen", listen, "--tls-cert", cert, "--tls-key", key, "--tls-ca",
              ca, "--db", db, "--model", "mlp", "--rounds", "1", "--clients-per-round", kbuf, "--min-clients", kbuf,
              "--heartbeat", "3600", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 300; i++) {
        FILE *f = fopen(logp, "r");
        char line[512];
        int up = 0;
        while (f && fgets(line, sizeof line, f))
            up |= strstr(line, "listening on") != NULL;
        if (f)
            fclose(f);
        if (up)
            return pid;
        usleep(50000);
    }
    return pid;
}

static int storm_phase(const char *dir, int n, int port, int phase)
{
    char logp[PATH_MAX];
    pid_t pid = storm_server(dir, n, port, phase, logp, sizeof logp);
    if (pid < 0)
        return 1;
    uv_loop_t *loop = B.loop;
    S.n = n;
    S.welcomed = S.failed = 0;
    S.t_all = -1;
    S.nrtt = 0;
    S.outstanding = 0;
    S.recording = 1;
    S.port = port;
    atomic_store(&S.probe_ready, 0);
    atomic_store(&S.stop, 0);
    memset(S.c, 0, (size_t)n * sizeof *S.c);
    uint64_t resumed0 = 0;
    for (int i = 0; i < n; i++)
        resumed0 += fl_tls_ctx_resumed(B.ctx[i]);
    uv_thread_t probe;
    if (uv_thread_create(&probe, probe_main, NULL))
        return 1;
    double w0 = fl_bench_wall();
    while (!atomic_load(&S.probe_ready) && fl_bench_wall() - w0 < 30)
        usleep(10000);
    /* a few quiet round trips first, then the storm */
    usleep(300000);
    uv_mutex_lock(&S.mu);
    size_t quiet = S.nrtt;
    uv_mutex_unlock(&S.mu);
    if (!atomic_load(&S.probe_ready))
        printf("  storm: the probe was not welcomed\n");
    double cpu0 = proc_cpu_s(pid), me0 = fl_bench_cpu();
    uv_update_time(loop); /* the loop slept meanwhile: timers start from now */
    S.t0 = fl_bench_wall();
    fl_tls_cbs_t cbs = {.on_open = s_open, .on_message = s_message, .on_close = s_close};
    for (int i = 0; i < n; i++)
        if (fl_tls_connect(loop, B.ctx[i], "127.0.0.1", port, "localhost", &cbs, &S.c[i], &S.c[i].conn))
            S.failed++, S.c[i].closed = 1;
    uv_timer_start(&S.limit, storm_limit, 300000, 0);
    while (S.welcomed + S.failed < n && uv_run(loop, UV_RUN_ONCE))
        if (fl_bench_wall() - S.t0 > 300)
            break;
    uv_timer_stop(&S.limit);
    double secs = fl_bench_wall() - S.t0;
    double cpu = proc_cpu_s(pid) - cpu0, me = fl_bench_cpu() - me0;
    uint64_t resumed = 0;
    for (int i = 0; i < n; i++)
        resumed += fl_tls_ctx_resumed(B.ctx[i]);
    double *r;
    size_t m;
    probe_take(quiet, &r, &m);
    atomic_store(&S.stop, 1);
    uv_thread_join(&probe);
    qsort(r, m, sizeof *r, cmp_double);
    printf("  storm %s: %d/%d clients welcomed in %.2f s = %.0f handshakes/s (%d failed); probe round trips during "
           "it: worst %.1f ms, median %.1f ms (%zu samples); server CPU %.2f s (%.2f ms per handshake), clients' CPU "
           "%.2f s; %llu handshakes resumed\n",
           phase == 0 ? "(full handshakes)" : "(after a restart, tickets)", S.welcomed, n, secs,
           secs > 0 ? S.welcomed / secs : 0.0, S.failed, m ? r[m - 1] * 1e3 : -1.0, m ? r[m / 2] * 1e3 : -1.0, m, cpu,
           n ? cpu / n * 1e3 : 0, me, (unsigned long long)(resumed - resumed0));
    /* everyone leaves, the server stops */
    for (int i = 0; i < n; i++)
        if (S.c[i].conn)
            fl_tls_conn_close(S.c[i].conn);
    kill(pid, SIGTERM);
    w0 = fl_bench_wall();
    int done = 0;
    while (fl_bench_wall() - w0 < 30) {
        uv_run(loop, UV_RUN_NOWAIT);
        int open = 0;
        for (int i = 0; i < n; i++)
            open += !S.c[i].closed;
        if (!open && waitpid(pid, NULL, WNOHANG) == pid) {
            done = 1;
            break;
        }
        usleep(2000);
    }
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return S.welcomed == n ? 0 : 1;
}

static int storm(const char *dir, int n)
{
    char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
    snprintf(ca, sizeof ca, "%s/ca.crt", dir);
    if (fl_certs_issue(dir, "probe"))
        return 1;
    snprintf(cert, sizeof cert, "%s/clients/probe.crt", dir);
    snprintf(key, sizeof key, "%s/clients/probe.key", dir);
    fl_tls_opts_t o = {.ca_file = ca, .cert_file = cert, .key_file = key};
    if (fl_tls_ctx_new(FL_TLS_CLIENT, &o, &S.pctx))
        return 1;
    S.c = calloc((size_t)n, sizeof *S.c);
    S.cap = 1000000;
    S.rtt = malloc(S.cap * sizeof *S.rtt);
    uv_mutex_init(&S.mu);
    uv_timer_init(B.loop, &S.limit);
    int port = 20000 + (int)((getpid() + 7919) % 20000);
    printf("storm: %d mutual-TLS clients connecting at once to the real daemon, a probe client's Heartbeat echo "
           "every 10 ms\n", n);
    int rc = storm_phase(dir, n, port, 0);
    rc |= storm_phase(dir, n, port, 1);
    uv_close((uv_handle_t *)&S.limit, NULL);
    uv_run(B.loop, UV_RUN_NOWAIT);
    fl_tls_ctx_free(S.pctx);
    free(S.c);
    free(S.rtt);
    uv_mutex_destroy(&S.mu);
    return rc;
}

int main(void)
{
    fl_log_set_level(FL_LOG_WARN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    B.loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN); /* a stopped server's sockets: EPIPE, not death */
    size_t n = mlp_numel();
    if (!n) {
        printf("bench_server: no mlp model\n");
        return 1;
    }
    char exe[PATH_MAX], *server_bin = B_server_bin;
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        return 1;
    exe[len] = 0;
    /* build/bench/bench_server -> build/fedopt-server */
    char *slash = strrchr(exe, '/');
    *slash = 0;
    slash = strrchr(exe, '/');
    *slash = 0;
    snprintf(server_bin, sizeof B_server_bin, "%s/fedopt-server", exe);
    char dir[] = "/tmp/fedopt-bench-server.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    int ks[8] = {10, 100, 1000}, nk = 3;
    const char *env = getenv("FEDOPT_BENCH_KS");
    if (env) {
        nk = 0;
        for (char *p = (char *)env, *end; *p && nk < 8; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            if (v > 0 && v <= 5000)
                ks[nk++] = (int)v;
        }
    }
    int rc = 0;
    printf("bench_server: model mlp, %zu parameters (%.2f MiB); FedAdam\n", n, n * 4 / 1048576.0);
    printf("per-round server overhead, in process (selection + aggregation + ServerOpt finish + SQLite commit):\n");
    for (int i = 0; i < nk; i++)
        rc |= part1(ks[i], n, dir);
    int kmax = 0, nstorm = 500;
    const char *senv = getenv("FEDOPT_BENCH_STORM");
    if (senv)
        nstorm = atoi(senv) < 0 ? 0 : atoi(senv) > 10000 ? 10000 : atoi(senv);
    for (int i = 0; i < nk; i++)
        kmax = ks[i] > kmax ? ks[i] : kmax;
    if (nstorm > kmax)
        kmax = nstorm;
    printf("real daemon over mutual TLS on loopback, one round, K reporting clients (certificates: %d)...\n", kmax);
    if (make_pki(dir, kmax)) {
        printf("cannot create certificates\n");
        return 1;
    }
    B.ctx = calloc((size_t)kmax, sizeof *B.ctx);
    for (int i = 0; i < kmax; i++) {
        char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
        snprintf(cert, sizeof cert, "%s/clients/c%05d.crt", dir, i);
        snprintf(key, sizeof key, "%s/clients/c%05d.key", dir, i);
        snprintf(ca, sizeof ca, "%s/ca.crt", dir);
        fl_tls_opts_t o = {.ca_file = ca, .cert_file = cert, .key_file = key};
        if (fl_tls_ctx_new(FL_TLS_CLIENT, &o, &B.ctx[i]))
            return 1;
    }
    float *d = calloc(n, sizeof *d);
    for (size_t j = 0; j < n; j++)
        d[j] = (float)(j % 13) * 1e-3f;
    B.n = n;
    /* round 1: the delta is announced for round 1 */
    if (fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, 1, d, n * 4, 0, &B.delta))
        return 1;
    free(d);
    for (int i = 0; i < nk; i++)
        rc |= part2(ks[i], n, dir, server_bin);
    if (nstorm) {
        fl_log_set_level(FL_LOG_ERROR); /* a failed storm would log a line per connection */
        rc |= storm(dir, nstorm);
    }
    fl_buf_unref(B.delta);
    for (int i = 0; i < kmax; i++)
        fl_tls_ctx_free(B.ctx[i]);
    free(B.ctx);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}
