#include "server/startup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/safetensors.h"

#define WHO "server"

int fl_startup_parse_listen(const char *s, char *host, size_t hlen, int *port)
{
    const char *colon;
    if (!s)
        goto bad;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            goto bad;
        if ((size_t)(end - s - 1) >= hlen)
            goto bad;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = 0;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= hlen)
            goto bad;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535 || !colon[1])
        goto bad;
    *port = (int)p;
    return 0;
bad:
    FL_LOG_E(WHO, "listen: want HOST:PORT or [IPv6]:PORT, not '%s'", s ? s : "");
    return FL_ECONFIG;
}

void fl_startup_raise_nofile(const fl_server_config_t *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg->max_connections + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want)
        FL_LOG_W(WHO, "open-file limit %llu is below max_connections %lld: raise it (LimitNOFILE=)",
                 (unsigned long long)rl.rlim_cur, (long long)cfg->max_connections);
}

int fl_startup_model(const fl_server_config_t *cfg, fl_eval_t **eval, fl_model_t **model, float **x,
                     size_t *numel, fl_serveropt_t **opt)
{
    int rc;
    if (cfg->eval_data[0] && cfg->eval_every > 0) {
        if ((rc = fl_eval_create(cfg->model, cfg->eval_data, (size_t)cfg->eval_max_examples, eval)))
            return rc;
    }
    const fl_model_info_t *info = fl_models_find(cfg->model);
    if (!info) {
        FL_LOG_E(WHO, "model: unknown model '%s' (fedopt-client models lists them)", cfg->model);
        return FL_ECONFIG;
    }
    fl_model_spec_t spec = *eval ? *fl_eval_spec(*eval) : info->paper;
    if ((rc = fl_model_create(cfg->model, &spec, model)))
        return rc;
    *numel = (*model)->params.numel;
    if (!(*x = malloc(*numel * sizeof(float))))
        return FL_ENOMEM;
    return fl_serveropt_create(&cfg->opt, *numel, opt);
}

typedef struct {
    const fl_server_config_t *cfg;
    fl_store_t *st;
    int64_t run;
} run_check_t;

static int is_number(const char *s, double *v)
{
    char *end;
    *v = strtod(s, &end);
    return *s && !*end;
}

static int same_to_15_digits(double a, double b)
{
    char sa[64], sb[64];
    snprintf(sa, sizeof sa, "%.15g", a);
    snprintf(sb, sizeof sb, "%.15g", b);
    return a == b || strcmp(sa, sb) == 0;
}

/* fl_server_config_each_run_setting's callback: refuses a [run] setting
 * whose value differs from the one the run was started with. */
static int check_run_setting(const char *name, void *user)
{
    run_check_t *rc = user;
    char now[4096], was[4096];
    if (fl_server_config_get(rc->cfg, name, now, sizeof now))
        return 0;
    if (fl_store_run_config_value(rc->st, rc->run, name, was, sizeof was))
        return 0; /* a setting the run predates */
    /* JSON gives numbers and booleans back as SQL values, and SQLite prints a
     * REAL with 15 significant digits (10^-1.5 comes back as 0.0316227766016838):
     * two numbers are the same setting when they agree to those digits. */
    double a, b;
    if (strcmp(now, "true") == 0 && strcmp(was, "1") == 0)
        return 0;
    if (strcmp(now, "false") == 0 && strcmp(was, "0") == 0)
        return 0;
    if (strcmp(now, was) == 0 || (is_number(now, &a) && is_number(was, &b) && same_to_15_digits(a, b)))
        return 0;
    FL_LOG_E(WHO, "--resume: run %lld was started with %s = '%s', this configuration says '%s'; a run's settings "
                  "cannot change (start a new run, or use the same settings)",
             (long long)rc->run, name, was, now);
    return FL_ECONFIG;
}

/* The resumed run's model and optimizer from its newest checkpoint, and
 * where it goes on. */
static int plan_resume(const fl_server_config_t *cfg, fl_store_t *st, fl_serveropt_t *opt, float *x, size_t numel,
                       fl_startup_plan_t *plan)
{
    int rc;
    run_check_t chk = {cfg, st, plan->run_id};
    if ((rc = fl_server_config_each_run_setting(check_run_setting, &chk)))
        return rc;
    /* The database is checked before it is trusted: quick_check and every
     * checkpoint's checksum (a damaged older one is named, not fatal). */
    if ((rc = fl_store_check_resume(st, plan->run_id)))
        return rc;
    fl_store_checkpoint_t cp;
    if ((rc = fl_store_checkpoint_load(st, plan->run_id, -1, &cp)))
        return rc;
    plan->ck_round = cp.round;
    rc = fl_round_restore(opt, x, numel, &cp, &plan->ck_sum);
    fl_store_checkpoint_free(&cp);
    if (rc)
        return rc;
    if ((rc = fl_store_next_round(st, plan->run_id, &plan->round_no)))
        return rc;
    /* A crash (or a stop) between a round's commit and its federated
     * evaluation's: the restored model is that round's, so evaluate it
     * before the next round, as the run would have. */
    int64_t last = plan->round_no - 1;
    int exists = 1;
    if (cfg->fed_eval_every > 0 && last >= 1 && last <= cfg->rounds &&
        (last % cfg->fed_eval_every == 0 || last == cfg->rounds) &&
        fl_store_fedeval_exists(st, plan->run_id, last, &exists) == 0 && !exists)
        plan->fe_due = last;
    /* A run whose last round is committed but not its federated evaluation
     * does that evaluation, then finishes. */
    plan->done = plan->round_no > cfg->rounds && !plan->fe_due;
    return 0;
}

int fl_startup_plan(const fl_server_config_t *cfg, fl_store_t *st, fl_model_t *model, fl_serveropt_t *opt,
                    float *x, size_t numel, fl_startup_plan_t *plan)
{
    int rc;
    memset(plan, 0, sizeof *plan);
    if (cfg->resume != FL_RESUME_NO) {
        rc = fl_store_run_resumable(st, &plan->run_id);
        if (rc == 0)
            plan->resume = 1;
        else if (rc == FL_ENOTFOUND && cfg->resume == FL_RESUME_AUTO)
            FL_LOG_I(WHO, "no unfinished run in %s: starting a new one", cfg->db);
        else {
            if (rc == FL_ENOTFOUND)
                FL_LOG_E(WHO, "--resume: no unfinished run in %s", cfg->db);
            return rc;
        }
    }
    if (plan->resume)
        return plan_resume(cfg, st, opt, x, numel, plan);
    plan->run_id = 0;
    if (cfg->init[0]) {
        /* The file must hold exactly the model's tensors (PyTorch names and shapes). */
        if ((rc = fl_safetensors_load(cfg->init, &model->params)))
            return rc;
        if (!fl_f32_all_finite(model->params.data, numel)) {
            FL_LOG_E(WHO, "init: %s holds NaN or Inf", cfg->init);
            return FL_ENONFINITE;
        }
        FL_LOG_I(WHO, "initial weights from %s", cfg->init);
    } else {
        fl_model_init_params(model, cfg->seed);
    }
    memcpy(x, model->params.data, numel * sizeof(float));
    plan->round_no = 1;
    return 0;
}

int fl_startup_tls(const fl_server_config_t *cfg, size_t numel, fl_tls_ctx_t **tls)
{
    fl_tls_opts_t to = {
        .ca_file = cfg->tls_ca,
        .cert_file = cfg->tls_cert,
        .key_file = cfg->tls_key,
        .no_client_cert = !cfg->require_client_cert,
        .max_conns = (uint32_t)cfg->max_connections,
        .max_handshakes = (uint32_t)cfg->max_handshakes,
        .max_tensor = (uint64_t)numel * sizeof(float),
        /* Before Hello a connection is nobody: small frames (a Hello is well
         * under 64 KiB: common/net/wire caps its strings and lists), a
         * deadline, and a share of one budget for partial frames. */
        .preadmit_max_frame = 64u << 10,
        .admit_timeout_ms = (uint32_t)(cfg->hello_timeout * 1000),
        .frame_budget = (uint64_t)cfg->frame_budget_mb << 20,
        /* Ciphertext a connection writes per loop turn before the next one
         * gets its turn: the model goes to K clients at once, and about one
         * record each per turn keeps heartbeats, handshakes and uploads
         * flowing while K copies are encrypted. It costs no memory (records
         * the kernel will not take wait in mbedTLS's own buffer) and no
         * throughput (the kernel's socket buffers keep the network busy). */
        .max_inflight = 16 * 1024,
    };
    /* Handshakes run in libuv's thread pool, one job per CPU at most (the
     * default handshake_jobs, common/net/tls.h): the pool gets a thread for
     * each and two more, so the round's aggregation and its commit do not
     * wait behind a storm of handshakes. libuv reads the variable when the
     * first work is queued, after this; a larger setting is kept. */
    unsigned want = uv_available_parallelism() + 2;
    if (want < 4)
        want = 4;
    if (want > 1024)
        want = 1024;
    const char *cur = getenv("UV_THREADPOOL_SIZE");
    if (!cur || atoi(cur) < (int)want) {
        char buf[16];
        snprintf(buf, sizeof buf, "%u", want);
        setenv("UV_THREADPOOL_SIZE", buf, 1);
    }
    return fl_tls_ctx_new(FL_TLS_SERVER, &to, tls);
}

int fl_startup_listen(const fl_server_config_t *cfg, uv_loop_t *loop, fl_tls_ctx_t *tls, const char *host, int port,
                      const fl_tls_cbs_t *cbs, void *ud, fl_tls_server_t **server)
{
    int rc = fl_tls_server_start(loop, tls, host, port, cbs, ud, server);
    if (rc)
        return rc;
    FL_LOG_I(WHO, "listening on %s port %d", host, fl_tls_server_port(*server));
    if (cfg->shared_certs && cfg->shared_certs[0])
        FL_LOG_W(WHO, "shared certificates %s: their clients are identified as NAME/hello-name", cfg->shared_certs);
    return 0;
}

/* Creates the new run: its settings as JSON and the round-0 checkpoint. */
static int create_run(const fl_server_config_t *cfg, fl_store_t *st, const fl_serveropt_t *opt, const float *x,
                      size_t numel, int64_t *run)
{
    char *json = NULL;
    uint8_t *state = NULL;
    size_t state_len = 0;
    int rc;
    if ((rc = fl_server_config_to_json(cfg, &json)) || (rc = fl_round_state_save(opt, &state, &state_len)))
        goto out;
    fl_store_run_info_t ri = {cfg->model, fl_serveropt_kind_name(cfg->opt.kind), cfg->seed, json};
    if ((rc = fl_store_run_create(st, &ri, x, numel, state, state_len, run)))
        goto out;
    FL_LOG_I(WHO, "run %lld: model %s (%zu parameters), %s, %lld rounds of %lld clients", (long long)*run,
             cfg->model, numel, fl_serveropt_kind_name(cfg->opt.kind), (long long)cfg->rounds,
             (long long)cfg->clients_per_round);
out:
    free(json);
    free(state);
    return rc;
}

int fl_startup_open_run(const fl_server_config_t *cfg, fl_store_t *st, const fl_serveropt_t *opt, const float *x,
                        size_t numel, fl_startup_plan_t *plan, fl_round_t **round, fl_fedeval_t **fe)
{
    int rc;
    if (plan->done) {
        FL_LOG_I(WHO, "run %lld already has its %lld rounds", (long long)plan->run_id, (long long)cfg->rounds);
        return fl_store_run_set_status(st, plan->run_id, "finished");
    }
    if (plan->resume) {
        if ((rc = fl_store_run_set_status(st, plan->run_id, "running")))
            return rc;
        FL_LOG_I(WHO, "resumed run %lld at round %lld from the checkpoint of round %lld (checksum %08x)",
                 (long long)plan->run_id, (long long)plan->round_no, (long long)plan->ck_round, plan->ck_sum);
        if (plan->fe_due)
            FL_LOG_I(WHO, "round %lld's federated evaluation is missing: it comes first", (long long)plan->fe_due);
    } else if ((rc = create_run(cfg, st, opt, x, numel, &plan->run_id))) {
        return rc;
    }
    fl_round_config_t rcfg = {
        .run_id = plan->run_id,
        .seed = cfg->seed,
        .clients_per_round = (uint32_t)cfg->clients_per_round,
        .min_reports = (uint32_t)cfg->min_reports,
        .over_selection = cfg->over_selection,
        .deadline_s = cfg->round_deadline,
        .numel = numel,
    };
    if ((rc = fl_round_create(&rcfg, round)))
        goto fail;
    if (cfg->fed_eval_every > 0) {
        fl_fedeval_config_t fcfg = {.run_id = plan->run_id,
                                    .seed = cfg->seed,
                                    .clients = (uint32_t)cfg->fed_eval_clients,
                                    .deadline_s = cfg->fed_eval_deadline};
        if ((rc = fl_fedeval_create(&fcfg, fe)))
            goto fail;
    }
    return 0;
fail:
    FL_LOG_E(WHO, "run %lld: cannot start: %s", (long long)plan->run_id, fl_strerror(rc));
    fl_store_run_set_status(st, plan->run_id, "failed");
    return rc;
}

/* VmHWM is per address space, so unlike getrusage it does not include what a
 * parent held before exec. */
long fl_startup_peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}
