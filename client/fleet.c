#include "client/fleet.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include "client/task.h"
#include "common/base/bytes.h"
#include "common/net/certs.h"
#include "common/base/clock.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/nn/gemm.h"

#define WHO "fleet"
/* Most first connections in their handshake at once. */
#define FLEET_HANDSHAKES 32

typedef struct {
    const fl_fleet_opts_t *o;
    uv_loop_t loop;
    uv_timer_t tick, starter, mtick;
    uv_signal_t sigint, sigterm;
    fl_session_pool_t *pool;
    fl_session_hooks_t hooks; /* the chaos (a zero rate never fires) */
    uint64_t drops, straggles, corrupts;
    fl_session_t **s;
    fl_tls_ctx_t **tls;
    char (*names)[FL_CERTS_NAME_MAX + 1];
    const char **models;
    size_t nmodels;
    size_t started, done, failed;
    int stopping, closing;
    double t0, last_line;
    uint64_t shown_round;
    size_t line_len;
} fleet_t;

/* The partition index of the fleet's i-th client: with --shard I/N the
 * fleet runs every N-th client, and a client's name, data and random streams
 * follow this index, so it is the same client in any shard layout. */
static size_t client_index(const fl_fleet_opts_t *o, size_t i)
{
    return o->first + i * (o->stride > 1 ? o->stride : 1);
}

static void client_name(const fl_fleet_opts_t *o, size_t i, char *out, size_t n)
{
    snprintf(out, n, "%s-%04zu", o->prefix ? o->prefix : "sim", client_index(o, i));
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

int fl_fleet_certs(const fl_fleet_opts_t *o)
{
    char path[4096], name[FL_CERTS_NAME_MAX + 1];
    size_t issued = 0;
    double t0 = fl_clock_mono_s();
    for (size_t i = 0; i < o->count; i++) {
        client_name(o, i, name, sizeof name);
        snprintf(path, sizeof path, "%s/clients/%s.crt", o->certs_dir, name);
        if (file_exists(path))
            continue;
        int rc = fl_certs_issue(o->certs_dir, name);
        if (rc) {
            FL_LOG_E(WHO, "cannot issue a certificate for %s in %s: %s (the fleet needs the CA key %s/ca.key, "
                          "from `fedopt-server certs init`)",
                     name, o->certs_dir, fl_strerror(rc), o->certs_dir);
            return rc;
        }
        issued++;
    }
    if (issued)
        FL_LOG_I(WHO, "issued %zu client certificates in %s/clients (%.1f s)", issued, o->certs_dir, fl_clock_mono_s() - t0);
    return 0;
}

/* ---- chaos: the sessions' hooks ------------------------------------------ */

/* Purposes of the chaos stream's draws, the third id of its tuple. */
enum { CHAOS_DROP = 1, CHAOS_STRAGGLE = 2, CHAOS_CORRUPT = 3, CHAOS_CORRUPT_KIND = 4 };
/* Tamper codes of a corrupt delta. */
enum { TAMPER_NAN = 1, TAMPER_SHORT = 2 };

static int chaos_draw(const fleet_t *f, uint64_t client, uint64_t round, uint64_t what, double rate)
{
    if (rate <= 0)
        return 0;
    fl_rng_t r;
    uint64_t ids[4] = {client, round, what, 0};
    fl_rng_stream(&r, f->o->seed, ids, 4);
    return fl_rng_uniform(&r) < rate;
}

static int chaos_vanish(void *ud, uint64_t client, uint64_t round)
{
    fleet_t *f = ud;
    if (!chaos_draw(f, client, round, CHAOS_DROP, f->o->chaos.drop_rate))
        return 0;
    f->drops++;
    return 1;
}

static int chaos_tamper_code(void *ud, uint64_t client, uint64_t round)
{
    fleet_t *f = ud;
    if (!chaos_draw(f, client, round, CHAOS_CORRUPT, f->o->chaos.corrupt_rate))
        return 0;
    f->corrupts++;
    return chaos_draw(f, client, round, CHAOS_CORRUPT_KIND, 0.5) ? TAMPER_NAN : TAMPER_SHORT;
}

/* Runs on a worker thread: touches only the delta. */
static void chaos_tamper(int code, float *delta, size_t *n)
{
    if (code == TAMPER_NAN && *n)
        delta[*n / 2] = NAN;
    else if (code == TAMPER_SHORT && *n > 1)
        (*n)--;
}

static double chaos_hold(void *ud, uint64_t client, uint64_t round)
{
    fleet_t *f = ud;
    if (!chaos_draw(f, client, round, CHAOS_STRAGGLE, f->o->chaos.straggle_rate))
        return 0;
    f->straggles++;
    return f->o->chaos.straggle_delay;
}

/* Secure rounds: the last round(rate * clients) ids leave after their
 * masked input, every round (the first ids are the attackers'), so a test
 * knows exactly how many parties drop before unmasking. */
static int chaos_unmask_drop(void *ud, uint64_t client, uint64_t round)
{
    fleet_t *f = ud;
    size_t n = f->o->parts->clients;
    if (!fl_attack_is_byzantine(n - 1 - client, n, f->o->chaos.unmask_drop_rate))
        return 0;
    f->drops++;
    return 1;
}

/* --secagg-dump-sums: adds a client's quantized words into DIR/round-N.u32
 * (little-endian, read, added modulo 2^32 and written back: a test's
 * ground truth for the server's unmasked sum, never a secret of a real
 * client). */
static void secagg_plain(void *ud, uint64_t client, uint64_t round, const uint32_t *words, size_t n)
{
    fleet_t *f = ud;
    const char *dir = f->o->secagg_dump_sums;
    if (!dir || !dir[0])
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/round-%llu.u32", dir, (unsigned long long)round);
    uint8_t *b = calloc(n, 4);
    if (!b)
        return;
    FILE *fp = fopen(path, "rb");
    if (fp) {
        if (fread(b, 4, n, fp) != n)
            memset(b, 0, n * 4);
        fclose(fp);
    }
    for (size_t i = 0; i < n; i++)
        fl_put_u32le(b + 4 * i, fl_get_u32le(b + 4 * i) + words[i]);
    if (!(fp = fopen(path, "wb")) || fwrite(b, 4, n, fp) != n || fclose(fp)) {
        FL_LOG_W(WHO, "--secagg-dump-sums: cannot write %s (client %llu)", path, (unsigned long long)client);
        fp = NULL;
    }
    free(b);
}

/* A Byzantine client's attack: the first round(rate * clients) ids. */
static const fl_attack_t *byzantine_attack(void *ud, uint64_t client)
{
    fleet_t *f = ud;
    return fl_attack_is_byzantine(client, f->o->parts->clients, f->o->byzantine_rate) ? &f->o->attack : NULL;
}

/* ---- progress ------------------------------------------------------------ */

static void progress(fleet_t *f, int final)
{
    const fl_fleet_opts_t *o = f->o;
    if (!o->progress)
        return;
    size_t st[FL_SESSION__NSTATES] = {0};
    uint64_t round = 0, uploads = 0;
    for (size_t i = 0; i < f->started; i++) {
        const fl_session_stats_t *ss = fl_session_stats(f->s[i]);
        if (ss->last_offer_round > round)
            round = ss->last_offer_round;
    }
    size_t selected = 0, uploaded = 0;
    for (size_t i = 0; i < f->started; i++) {
        const fl_session_stats_t *ss = fl_session_stats(f->s[i]);
        st[fl_session_state(f->s[i])]++;
        uploads += ss->uploads;
        selected += round && ss->last_offer_round == round;
        uploaded += round && ss->last_upload_round == round;
    }
    size_t connected = f->started - st[FL_SESSION_WAITING] - st[FL_SESSION_CONNECTING] - st[FL_SESSION_DONE];
    double now = fl_clock_mono_s();
    char line[256];
    int len = snprintf(line, sizeof line,
                       "fleet %6.1fs  round %llu: %zu/%zu connected, %zu selected, %zu queued, %zu training, "
                       "%zu uploaded  (uploads %llu)",
                       now - f->t0, (unsigned long long)round, connected, o->count, selected,
                       st[FL_SESSION_QUEUED], st[FL_SESSION_TRAINING] + st[FL_SESSION_STRAGGLING], uploaded,
                       (unsigned long long)uploads);
    if (len < 0)
        return;
    if (o->tty) {
        fprintf(o->progress, "\r%s\033[K%s", line, final ? "\n" : "");
        fflush(o->progress);
    } else if (final || round != f->shown_round || now - f->last_line >= 10) {
        fprintf(o->progress, "%s\n", line);
        fflush(o->progress);
        f->last_line = now;
    }
    f->shown_round = round;
}

/* ---- life cycle ------------------------------------------------------------ */

static void update_metrics(fleet_t *f);

static void close_handles(fleet_t *f)
{
    if (f->closing)
        return;
    f->closing = 1;
    update_metrics(f); /* the final counts, for a scrape before the process ends */
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_close((uv_handle_t *)&f->mtick, NULL);
    uv_close((uv_handle_t *)&f->starter, NULL);
    uv_close((uv_handle_t *)&f->sigint, NULL);
    uv_close((uv_handle_t *)&f->sigterm, NULL);
}

static void on_session_done(fl_session_t *s, int rc, void *ud)
{
    fleet_t *f = ud;
    f->done++;
    if (rc && rc != FL_ETIMEDOUT) {
        f->failed++;
        FL_LOG_E(WHO, "%s stopped: %s", fl_session_name(s), fl_strerror(rc));
    }
    if (f->done == f->started && (f->stopping || f->started == f->o->count)) {
        progress(f, 1);
        close_handles(f);
    }
}

static void stop_all(fleet_t *f)
{
    if (f->stopping)
        return;
    f->stopping = 1;
    uv_timer_stop(&f->starter);
    for (size_t i = 0; i < f->started; i++)
        fl_session_stop(f->s[i]);
    if (f->done == f->started) {
        progress(f, 1);
        close_handles(f);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    fleet_t *f = h->data;
    FL_LOG_I(WHO, "%s: stopping %zu clients", signum == SIGTERM ? "SIGTERM" : "SIGINT", f->started);
    stop_all(f);
}

/* ---- metrics ---------------------------------------------------------------- */

static const char *const state_names[FL_SESSION__NSTATES] = {
    [FL_SESSION_WAITING] = "waiting",     [FL_SESSION_CONNECTING] = "connecting", [FL_SESSION_READY] = "ready",
    [FL_SESSION_RECEIVING] = "receiving", [FL_SESSION_QUEUED] = "queued",         [FL_SESSION_TRAINING] = "training",
    [FL_SESSION_STRAGGLING] = "straggling", [FL_SESSION_UPLOADING] = "uploading", [FL_SESSION_DONE] = "done",
};

int fl_fleet_metrics_define(fl_metrics_t *m)
{
    static const struct {
        const char *name, *label, *help;
        fl_metric_type_t type;
    } fam[] = {
        {"fedopt_fleet_clients", "state", "The fleet's clients by session state.", FL_METRIC_GAUGE},
        {"fedopt_fleet_jobs", NULL, "Training jobs the fleet runs at once.", FL_METRIC_GAUGE},
        {"fedopt_fleet_jobs_busy", NULL, "Jobs training or evaluating now.", FL_METRIC_GAUGE},
        {"fedopt_fleet_round", NULL, "Latest round offered to a client of the fleet.", FL_METRIC_GAUGE},
        {"fedopt_fleet_connects_total", NULL, "Sessions welcomed by the server.", FL_METRIC_COUNTER},
        {"fedopt_fleet_reconnects_total", NULL, "Welcomes after a client's first one.", FL_METRIC_COUNTER},
        {"fedopt_fleet_offers_total", NULL, "Training tasks offered to the fleet's clients.", FL_METRIC_COUNTER},
        {"fedopt_fleet_uploads_total", NULL, "Updates uploaded.", FL_METRIC_COUNTER},
        {"fedopt_fleet_evals_total", NULL, "Federated evaluations answered.", FL_METRIC_COUNTER},
        {"fedopt_fleet_failed_jobs_total", NULL, "Trainings or evaluations that failed.", FL_METRIC_COUNTER},
        {"fedopt_fleet_samples_total", NULL,
         "Examples passed through finished trainings, every local epoch counted (samples/s: rate()).",
         FL_METRIC_COUNTER},
        {"fedopt_fleet_train_seconds_total", NULL, "Wall time of those trainings, summed over jobs.",
         FL_METRIC_COUNTER},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof fam / sizeof fam[0] && rc == 0; i++) {
        rc = fl_metrics_define(m, fam[i].name, fam[i].type, fam[i].help, fam[i].label, NULL, 0);
        /* Counters are served from 0, before anything happened: a series
         * that first appears at its value after a burst shorter than the
         * scrape interval shows Prometheus no increase (rate() 0). */
        if (rc == 0 && fam[i].type == FL_METRIC_COUNTER && !fam[i].label)
            rc = fl_metrics_add(m, fam[i].name, NULL, 0);
    }
    return rc;
}

/* Counters are sums over the sessions: raise each series to the new sum. */
static void raise_to(fl_metrics_t *m, const char *name, double total)
{
    double now = 0;
    if (fl_metrics_get(m, name, NULL, &now) != 0)
        now = 0;
    if (total > now)
        fl_metrics_add(m, name, NULL, total - now);
}

static void update_metrics(fleet_t *f)
{
    fl_metrics_t *m = f->o->metrics;
    if (!m)
        return;
    size_t st[FL_SESSION__NSTATES] = {0};
    uint64_t connects = 0, offers = 0, uploads = 0, evals = 0, failed = 0, round = 0, reconnects = 0;
    uint64_t samples = 0;
    double train_seconds = 0;
    for (size_t i = 0; i < f->started; i++) {
        const fl_session_stats_t *ss = fl_session_stats(f->s[i]);
        st[fl_session_state(f->s[i])]++;
        connects += ss->connects;
        reconnects += ss->connects > 1 ? ss->connects - 1 : 0;
        offers += ss->offers;
        uploads += ss->uploads;
        evals += ss->evals;
        failed += ss->failed_jobs;
        samples += ss->samples;
        train_seconds += ss->train_seconds;
        if (ss->last_offer_round > round)
            round = ss->last_offer_round;
    }
    st[FL_SESSION_WAITING] += f->o->count - f->started; /* not started yet */
    for (int i = 0; i < FL_SESSION__NSTATES; i++)
        if (state_names[i])
            fl_metrics_set(m, "fedopt_fleet_clients", state_names[i], (double)st[i]);
    fl_metrics_set(m, "fedopt_fleet_jobs", NULL, (double)f->o->jobs);
    fl_metrics_set(m, "fedopt_fleet_jobs_busy", NULL, (double)st[FL_SESSION_TRAINING]);
    fl_metrics_set(m, "fedopt_fleet_round", NULL, (double)round);
    raise_to(m, "fedopt_fleet_connects_total", (double)connects);
    raise_to(m, "fedopt_fleet_reconnects_total", (double)reconnects);
    raise_to(m, "fedopt_fleet_offers_total", (double)offers);
    raise_to(m, "fedopt_fleet_uploads_total", (double)uploads);
    raise_to(m, "fedopt_fleet_evals_total", (double)evals);
    raise_to(m, "fedopt_fleet_failed_jobs_total", (double)failed);
    raise_to(m, "fedopt_fleet_samples_total", (double)samples);
    raise_to(m, "fedopt_fleet_train_seconds_total", train_seconds);
}

static void on_tick(uv_timer_t *t)
{
    progress(t->data, 0);
}

/* The served counts are refreshed four times a second, not with the
 * progress line: a scrape then sees counts at most a quarter second old,
 * and a short-lived fleet's last events are served before it exits
 * (test_fleet_restart scrapes the reconnects of rounds that take a few
 * milliseconds). The pass over the sessions is cheap beside their work. */
static void on_mtick(uv_timer_t *t) { update_metrics(t->data); }

static int start_one(fleet_t *f)
{
    const fl_fleet_opts_t *o = f->o;
    size_t i = f->started;
    size_t cnt = 0;
    const uint32_t *idx = fl_partition_client(o->parts, client_index(o, i), &cnt);
    fl_session_opts_t so = {
        .host = o->host,
        .port = o->port,
        .server_name = o->server_name,
        .tls = f->tls[o->cert_file && o->key_file ? 0 : i],
        .name = f->names[i],
        .id = client_index(o, i),
        .data = o->data,
        .index = idx,
        .nindex = cnt,
        .data_spec = o->data_spec,
        .models = f->models,
        .nmodels = f->nmodels,
        .gemm_threads = 1,
        .backoff_max = o->backoff_max,
        .give_up = o->give_up,
        .stop_on_finish = 1,
        .seed = o->seed,
        .hooks = &f->hooks,
        .on_done = on_session_done,
        .ud = f,
    };
    int rc = fl_session_start(f->pool, &so, &f->s[i]);
    if (rc)
        return rc;
    f->started++;
    return 0;
}

static void on_starter(uv_timer_t *t)
{
    fleet_t *f = t->data;
    const fl_fleet_opts_t *o = f->o;
    /* Pace the handshakes: both ends of a handshake do ECDSA, so a large
     * fleet connecting all at once can queue past the server's handshake
     * timeout on a small machine (bench_fleet part 2 connects a large
     * fleet), and the ones that time out only come back later with their
     * back-off. So at
     * most FLEET_HANDSHAKES are in flight, and --connect-spread can slow the
     * start further. */
    size_t due = o->count;
    if (o->connect_spread > 0) {
        due = (size_t)(o->count * ((fl_clock_mono_s() - f->t0) / o->connect_spread)) + 1;
        if (due > o->count)
            due = o->count;
    }
    size_t connecting = 0;
    for (size_t i = 0; i < f->started; i++)
        connecting += fl_session_state(f->s[i]) == FL_SESSION_CONNECTING;
    while (f->started < due && connecting < FLEET_HANDSHAKES && !f->stopping) {
        int rc = start_one(f);
        if (rc) {
            FL_LOG_E(WHO, "cannot start client %s: %s", f->names[f->started], fl_strerror(rc));
            stop_all(f);
            return;
        }
        connecting++;
    }
    if (f->started == o->count)
        uv_timer_stop(&f->starter);
}

int fl_fleet_run(const fl_fleet_opts_t *o, fl_fleet_result_t *res)
{
    if (!o || !o->host || !o->certs_dir || !o->data || !o->parts || !o->count || !o->jobs ||
        client_index(o, o->count - 1) >= o->parts->clients)
        return FL_EINVAL;
    fleet_t *f = calloc(1, sizeof *f);
    if (!f)
        return FL_ENOMEM;
    f->o = o;
    f->hooks = (fl_session_hooks_t){.vanish = chaos_vanish,
                                    .tamper_code = chaos_tamper_code,
                                    .tamper = chaos_tamper,
                                    .hold = chaos_hold,
                                    .attack = byzantine_attack,
                                    .unmask_drop = chaos_unmask_drop,
                                    .secagg_plain = secagg_plain,
                                    .ud = f};
    int rc = FL_ENOMEM, loop_ok = 0;
    char ca[4096], crt[4096], key[4096];
    snprintf(ca, sizeof ca, "%s/ca.crt", o->certs_dir);
    if (!(f->s = calloc(o->count, sizeof *f->s)) || !(f->tls = calloc(o->count, sizeof *f->tls)) ||
        !(f->names = calloc(o->count, sizeof *f->names)))
        goto out;
    if ((rc = fl_task_fitting_models(o->data, &f->models, &f->nmodels)))
        goto out;
    const int shared = o->cert_file && o->key_file;
    if (!shared && (rc = fl_fleet_certs(o)))
        goto out;
    /* One TLS context per client: a context carries its certificate, and the
     * certificate is the client's identity. With one shared certificate all
     * clients use context 0 and the server tells them apart by Hello name. */
    for (size_t i = 0; i < o->count; i++) {
        client_name(o, i, f->names[i], sizeof f->names[i]);
        if (shared) {
            if (i == 0) {
                fl_tls_opts_t to = {.ca_file = o->ca_file ? o->ca_file : ca, .cert_file = o->cert_file,
                                    .key_file = o->key_file};
                if ((rc = fl_tls_ctx_new(FL_TLS_CLIENT, &to, &f->tls[0])))
                    goto out;
            }
            continue;
        }
        snprintf(crt, sizeof crt, "%s/clients/%s.crt", o->certs_dir, f->names[i]);
        snprintf(key, sizeof key, "%s/clients/%s.key", o->certs_dir, f->names[i]);
        fl_tls_opts_t to = {.ca_file = o->ca_file ? o->ca_file : ca, .cert_file = crt, .key_file = key};
        if ((rc = fl_tls_ctx_new(FL_TLS_CLIENT, &to, &f->tls[i])))
            goto out;
    }
    fl_session_pool_threads(o->jobs);
    fl_gemm_set_threads(1);
    if (uv_loop_init(&f->loop)) {
        rc = FL_ENOMEM;
        goto out;
    }
    loop_ok = 1;
    if ((rc = fl_session_pool_create(&f->loop, o->jobs, &f->pool)))
        goto out;
    /* A fleet trains task after task: each job slot keeps its model rather
     * than building and faulting in a fresh one per task (bench_fleet). */
    if (fl_session_pool_keep_models(f->pool))
        FL_LOG_W(WHO, "out of memory for the job slots' models: every task builds its own");
    uv_timer_init(&f->loop, &f->tick);
    uv_timer_init(&f->loop, &f->starter);
    uv_timer_init(&f->loop, &f->mtick);
    uv_signal_init(&f->loop, &f->sigint);
    uv_signal_init(&f->loop, &f->sigterm);
    f->tick.data = f->starter.data = f->mtick.data = f->sigint.data = f->sigterm.data = f;
    uv_signal_start(&f->sigint, on_signal, SIGINT);
    uv_signal_start(&f->sigterm, on_signal, SIGTERM);
    f->t0 = fl_clock_mono_s();
    f->last_line = f->t0;
    if (o->stride > 1)
        FL_LOG_I(WHO, "%zu clients (%s-%04zu..%04zu, every %zu-th) -> %s:%d, %u training jobs", o->count,
                 o->prefix ? o->prefix : "sim", o->first, client_index(o, o->count - 1), o->stride, o->host, o->port,
                 o->jobs);
    else
        FL_LOG_I(WHO, "%zu clients (%s-%04zu..%04zu) -> %s:%d, %u training jobs", o->count,
                 o->prefix ? o->prefix : "sim", o->first, o->first + o->count - 1, o->host, o->port, o->jobs);
    uv_timer_start(&f->tick, on_tick, o->tty ? 1000 : 2000, o->tty ? 1000 : 2000);
    uv_timer_start(&f->starter, on_starter, 0, 10);
    if (o->metrics)
        uv_timer_start(&f->mtick, on_mtick, 0, 250);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    rc = 0;
    if (res) {
        memset(res, 0, sizeof *res);
        res->clients = o->count;
        for (size_t i = 0; i < o->count; i++)
            res->attackers += (size_t)fl_attack_is_byzantine(o->first + i, o->parts->clients, o->byzantine_rate);
        res->failed = f->failed;
        res->seconds = fl_clock_mono_s() - f->t0;
        res->drops = f->drops;
        res->straggles = f->straggles;
        res->corrupts = f->corrupts;
        for (size_t i = 0; i < f->started; i++) {
            const fl_session_stats_t *ss = fl_session_stats(f->s[i]);
            res->connects += ss->connects;
            res->offers += ss->offers;
            res->uploads += ss->uploads;
            res->evals += ss->evals;
            res->failed_jobs += ss->failed_jobs;
            res->samples += ss->samples;
            res->train_seconds += ss->train_seconds;
            if (ss->last_offer_round > res->last_round)
                res->last_round = ss->last_offer_round;
        }
    }
out:
    if (f->s)
        for (size_t i = 0; i < f->started; i++)
            fl_session_free(f->s[i]);
    fl_session_pool_free(f->pool);
    if (loop_ok) {
        uv_run(&f->loop, UV_RUN_DEFAULT);
        if (uv_loop_close(&f->loop))
            FL_LOG_W(WHO, "the loop still had handles at exit");
    }
    if (f->tls)
        for (size_t i = 0; i < o->count; i++)
            fl_tls_ctx_free(f->tls[i]);
    free(f->tls);
    free(f->s);
    free(f->names);
    free(f->models);
    free(f);
    return rc;
}
