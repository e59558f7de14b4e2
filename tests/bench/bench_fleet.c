/* bench_fleet: what the protocol costs a federated round, and what a large
 * simulated fleet costs in memory.
 *
 * 1. A round of 10 `cnn` clients (Fashion-MNIST, 600 examples each, B = 20,
 *    one epoch) through the whole stack — server over mutual TLS on loopback,
 *    the model sent to 10 connections, training in the fleet's 2 jobs, the
 *    deltas uploaded and aggregated — against the same 10 local trainings
 *    (same data, same 2 threads, the same task code with a workspace per
 *    thread as each fleet job slot keeps one) without any network. Prints
 *    both, the ratio and the CPU seconds of each side.
 * 2. A fleet of 1,000 clients (`logreg`, 100 per round) holding its 1,000 TLS
 *    connections: rounds per minute and the fleet process's peak RSS.
 *
 * The server runs in this process (fl_daemon_run on the main thread) and the
 * fleet in a forked child (fl_fleet_run), so the child's peak RSS is the
 * fleet's alone. FEDOPT_BENCH_QUICK=1 shrinks both (3 cnn clients, 200
 * clients) for a smoke run; FEDOPT_BENCH_FLEET_PART=1 runs only the first,
 * FEDOPT_BENCH_FLEET_ROUNDS=R gives it R rounds (default 2).
 * Prints figures; asserts nothing about time. */
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "client/fleet.h"
#include "client/session.h"
#include "client/task.h"
#include "common/net/certs.h"
#include "common/data/spec.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/models.h"
#include "common/nn/gemm.h"
#include "common/nn/train.h"
#include "server/config.h"
#include "server/daemon.h"
#include "tests/support/benchclock.h"

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* ---- the local baseline ----------------------------------------------------- */

typedef struct {
    const fl_dataset_t *all;
    const fl_partition_t *parts;
    const float *global;
    size_t numel;
    size_t next, count;
    pthread_mutex_t mu;
    int rc;
} local_t;

/* The same task code the fleet's jobs run (client/task), with a workspace
 * per thread as each of the fleet's job slots keeps one: a model built
 * once and reused, so both sides pay the same for building and faulting in
 * models, and the ratio shows only the protocol. */
static void *local_worker(void *arg)
{
    local_t *L = arg;
    fl_gemm_set_threads(1);
    fl_task_ws_t *ws = NULL;
    if (fl_task_ws_new(&ws)) {
        L->rc = FL_ENOMEM;
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&L->mu);
        size_t c = L->next++;
        pthread_mutex_unlock(&L->mu);
        if (c >= L->count)
            break;
        size_t n;
        const uint32_t *idx = fl_partition_client(L->parts, c, &n);
        fl_task_in_t in = {.model = "cnn", .data = L->all, .index = idx, .nindex = n, .global = L->global,
                           .n = L->numel, .gemm_threads = 1, .ws = ws};
        fl_train_config_t cfg = {.epochs = 1, .batch = 20, .sgd = {.lr = 0.031623f}, .seed = 1,
                                 .ids = {1, 1, c}, .nids = 3};
        fl_task_result_t res;
        int rc = fl_task_train(&in, &cfg, &res, NULL, 0);
        fl_task_result_free(&res);
        if (rc)
            L->rc = rc;
    }
    fl_task_ws_free(ws);
    return NULL;
}

/* This process's user + system CPU seconds so far (all threads). */
static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static double local_round(const fl_dataset_t *all, const fl_partition_t *parts, size_t clients, int threads)
{
    fl_model_spec_t spec;
    fl_model_t *m = NULL;
    if (fl_model_spec_from_dataset(all, &spec) || fl_model_create("cnn", &spec, &m))
        return -1;
    fl_model_init_params(m, 1);
    local_t L = {.all = all, .parts = parts, .global = m->params.data, .numel = m->params.numel, .count = clients};
    pthread_mutex_init(&L.mu, NULL);
    pthread_t th[16];
    double t0 = fl_bench_wall();
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, local_worker, &L);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double t = fl_bench_wall() - t0;
    pthread_mutex_destroy(&L.mu);
    fl_model_free(m);
    return L.rc ? -1 : t;
}

/* ---- server + fleet ------------------------------------------------------- */

typedef struct {
    const char *model;
    size_t clients, per_round;
    int rounds, jobs;
    const char *partition;
    size_t total_clients; /* the partition's size */
} setup_t;

typedef struct {
    double round_s_mean;   /* mean of rounds' started->finished */
    double rounds_per_min; /* rounds / (last finish - first start) */
    long fleet_rss_kb;
    double fleet_cpu_s;  /* the fleet process's user + system CPU time */
    double server_cpu_s; /* this process's CPU time during the run (the server) */
    int ok;
} outcome_t;

static int db_rounds(const char *db, int rounds, outcome_t *o)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int n = 0;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    const char *q = "SELECT (julianday(finished_at) - julianday(started_at)) * 86400, "
                    "julianday(started_at) * 86400, julianday(finished_at) * 86400, status FROM rounds ORDER BY round";
    if (sqlite3_prepare_v2(h, q, -1, &st, NULL) != SQLITE_OK)
        goto out;
    double sum = 0, first = 0, last = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (strcmp((const char *)sqlite3_column_text(st, 3), "closed") != 0)
            continue;
        sum += sqlite3_column_double(st, 0);
        if (!n)
            first = sqlite3_column_double(st, 1);
        last = sqlite3_column_double(st, 2);
        n++;
    }
    if (n == rounds) {
        o->round_s_mean = sum / n;
        o->rounds_per_min = n / (last - first) * 60;
        o->ok = 1;
    }
out:
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

static int run_setup(const char *dir, const setup_t *su, outcome_t *out)
{
    memset(out, 0, sizeof *out);
    char db[512], crt[512], key[512], ca[512], listen[64], buf[64];
    snprintf(db, sizeof db, "%s/%s-%zu.db", dir, su->model, su->clients);
    snprintf(crt, sizeof crt, "%s/fleet/server.crt", dir);
    snprintf(key, sizeof key, "%s/fleet/server.key", dir);
    snprintf(ca, sizeof ca, "%s/fleet/ca.crt", dir);
    int port = free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    fflush(NULL);
    pid_t child = fork();
    if (child < 0)
        return FL_EIO;
    if (child == 0) {
        /* The fleet: loads the data itself, so its RSS is all its own. */
        fl_data_spec_t spec;
        fl_data_spec_init(&spec);
        fl_data_spec_set(&spec, "partition", su->partition);
        snprintf(buf, sizeof buf, "%zu", su->total_clients);
        fl_data_spec_set(&spec, "clients", buf);
        fl_dataset_t all;
        fl_partition_t parts;
        fl_dataset_init(&all);
        memset(&parts, 0, sizeof parts);
        if (fl_data_spec_load_partitioned(&spec, "train", &all, &parts))
            _exit(3);
        /* Tell the parent what loading the data cost, to leave it out of the
         * protocol's CPU figure. */
        char lp[600];
        snprintf(lp, sizeof lp, "%s/fleet-load-cpu", dir);
        FILE *lf = fopen(lp, "w");
        if (lf) {
            fprintf(lf, "%.6f\n", cpu_self());
            fclose(lf);
        }
        char dirc[512];
        snprintf(dirc, sizeof dirc, "%s/fleet", dir);
        fl_fleet_opts_t fo = {
            .host = "127.0.0.1", .port = port, .server_name = "localhost", .certs_dir = dirc,
            .count = su->clients, .jobs = (unsigned)su->jobs, .data = &all, .parts = &parts,
            .data_spec = "bench", .backoff_max = 1, .give_up = 60, .seed = 1,
        };
        fl_fleet_result_t res;
        int rc = fl_fleet_run(&fo, &res);
        fl_partition_free(&parts);
        fl_dataset_free(&all);
        _exit(rc || res.failed ? 4 : 0);
    }
    fl_server_config_t cfg;
    int rc = fl_server_config_defaults(&cfg);
    struct {
        const char *k, *v;
    } set[] = {
        {"listen", listen}, {"tls_cert", crt}, {"tls_key", key}, {"tls_ca", ca}, {"db", db},
        {"model", su->model}, {"server_opt", "fedadam"}, {"server_lr", "0.0031623"}, {"tau", "0.0001"},
        {"client_lr", "0.031623"}, {"batch_size", "20"}, {"heartbeat", "10"}, {"round_deadline", "600"},
        {"wait_timeout", "300"}, {"eval_every", "0"},
    };
    for (size_t i = 0; !rc && i < sizeof set / sizeof set[0]; i++)
        rc = fl_server_config_set(&cfg, set[i].k, set[i].v);
    snprintf(buf, sizeof buf, "%d", su->rounds);
    if (!rc)
        rc = fl_server_config_set(&cfg, "rounds", buf);
    snprintf(buf, sizeof buf, "%zu", su->per_round);
    if (!rc)
        rc = fl_server_config_set(&cfg, "clients_per_round", buf);
    snprintf(buf, sizeof buf, "%zu", su->clients);
    if (!rc)
        rc = fl_server_config_set(&cfg, "min_clients", buf);
    if (!rc)
        rc = fl_server_config_finish(&cfg);
    double cpu0 = cpu_self();
    int status = rc ? 1 : fl_daemon_run(&cfg);
    out->server_cpu_s = cpu_self() - cpu0;
    fl_server_config_free(&cfg);
    int ws = 0;
    if (status)
        kill(child, SIGTERM);
    /* wait4: this child's own peak RSS, not the largest of all children. */
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    wait4(child, &ws, 0, &ru);
    out->fleet_rss_kb = ru.ru_maxrss;
    out->fleet_cpu_s = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    char lp[600];
    snprintf(lp, sizeof lp, "%s/fleet-load-cpu", dir);
    FILE *lf = fopen(lp, "r");
    double load_cpu = 0;
    if (lf) {
        if (fscanf(lf, "%lf", &load_cpu) == 1 && load_cpu < out->fleet_cpu_s)
            out->fleet_cpu_s -= load_cpu;
        fclose(lf);
    }
    int n = db_rounds(db, su->rounds, out);
    if (status || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0 || !out->ok) {
        fprintf(stderr, "bench_fleet: server status %d, fleet status %d, %d closed rounds of %d\n", status,
                WIFEXITED(ws) ? WEXITSTATUS(ws) : -1, n, su->rounds);
        return FL_ESTATE;
    }
    return 0;
}

int main(int argc, char **argv)
{
    fl_gemm_fix_kernel(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    fl_log_set_level(FL_LOG_WARN);
    int quick = getenv("FEDOPT_BENCH_QUICK") && atoi(getenv("FEDOPT_BENCH_QUICK"));
    size_t cnn_clients = quick ? 3 : 10, big = quick ? 200 : 1000;
    /* FEDOPT_BENCH_FLEET_PART=1: only the cnn round (for profiling it). */
    int part = getenv("FEDOPT_BENCH_FLEET_PART") ? atoi(getenv("FEDOPT_BENCH_FLEET_PART")) : 0;
    /* FEDOPT_BENCH_FLEET_ROUNDS=R: the cnn part's rounds (default 2). The
     * per-round CPU figure spreads a run's one-time costs (handshakes, the
     * fleet's certificates, each job slot's first model) over R rounds;
     * two values of R give the marginal round. */
    int cnn_rounds = getenv("FEDOPT_BENCH_FLEET_ROUNDS") ? atoi(getenv("FEDOPT_BENCH_FLEET_ROUNDS")) : 2;
    if (cnn_rounds < 1 || cnn_rounds > 100)
        cnn_rounds = 2;
    int jobs = 2;
    char dir[] = "/tmp/fedopt-bench-fleet.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char fleetdir[600];
    snprintf(fleetdir, sizeof fleetdir, "%s/fleet", dir);
    if (fl_certs_init(fleetdir, "localhost"))
        return 1;
    /* The server's aggregation and commit share libuv's thread pool with
     * the fleet's training jobs in the child; give both room. */
    fl_session_pool_threads((unsigned)jobs + 2);

    /* 1. cnn: local baseline, then the same work through the network. */
    fl_data_spec_t spec;
    fl_data_spec_init(&spec);
    fl_data_spec_set(&spec, "partition", "iid");
    fl_data_spec_set(&spec, "clients", "100");
    fl_dataset_t all;
    fl_partition_t parts;
    fl_dataset_init(&all);
    memset(&parts, 0, sizeof parts);
    if (fl_data_spec_load_partitioned(&spec, "train", &all, &parts)) {
        fprintf(stderr, "bench_fleet: Fashion-MNIST not available\n");
        return 1;
    }
    double cpu0 = cpu_self();
    double local = local_round(&all, &parts, cnn_clients, jobs);
    double local_cpu = cpu_self() - cpu0;
    fl_partition_free(&parts);
    fl_dataset_free(&all);
    if (local < 0) {
        fprintf(stderr, "bench_fleet: local training failed\n");
        return 1;
    }
    printf("cnn, %zu clients x 600 examples, B=20, 1 epoch, %d jobs:\n", cnn_clients, jobs);
    printf("  local trainings, no network:        %7.2f s\n", local);
    setup_t cnn = {"cnn", cnn_clients, cnn_clients, cnn_rounds, jobs, "iid", 100};
    outcome_t o;
    if (run_setup(dir, &cnn, &o))
        return 1;
    printf("  one round through server + fleet:    %7.2f s (mean of %d rounds; TLS, model out, deltas in, "
           "aggregation)\n",
           o.round_s_mean, cnn.rounds);
    printf("  ratio:                               %7.2f (goal <= 1.1)\n", o.round_s_mean / local);
    printf("  peak RSS of the fleet process: %.1f MiB\n", o.fleet_rss_kb / 1024.0);
    /* CPU time does not depend on what else the machine runs, unlike the
     * wall-clock ratio: the fleet's and the server's CPU per round against
     * the local trainings' shows what the protocol itself costs. The fleet's
     * includes loading the data set and the TLS handshakes once. */
    printf("  CPU per round: local %.2f s; fleet %.2f s + server %.2f s (mean of %d rounds; the fleet's "
           "data loading left out): %.2fx\n",
           local_cpu, o.fleet_cpu_s / cnn.rounds, o.server_cpu_s / cnn.rounds, cnn.rounds,
           (o.fleet_cpu_s + o.server_cpu_s) / cnn.rounds / local_cpu);

    /* 2. a large fleet holding its connections. */
    if (part == 1)
        goto done;
    setup_t lr = {"logreg", big, big / 10, 5, jobs, "iid", big};
    if (run_setup(dir, &lr, &o))
        return 1;
    printf("fleet of %zu clients (logreg, %zu per round, %d rounds, %d jobs):\n", big, big / 10, lr.rounds, jobs);
    printf("  %.1f rounds per minute (%.2f s per round)\n", o.rounds_per_min, o.round_s_mean);
    printf("  peak RSS of the fleet process: %.1f MiB (%.1f KiB per client, the data set included)\n",
           o.fleet_rss_kb / 1024.0, (double)o.fleet_rss_kb / big);
done:;
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_fleet: could not remove %s\n", dir);
    return 0;
}
