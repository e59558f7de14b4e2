#include "client/session.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/secure.h"
#include "client/task.h"
#include "common/base/clock.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/base/version.h"
#include "common/net/wire.h"

#define WHO "client"

/* The reconnect jitter's stream is {seed, id, reconnect no, JITTER_STREAM, 1}:
 * its last two ids keep it apart from the fleet's fault streams
 * {seed, id, round, purpose < 5, 0} (client/fleet.c), which share the seed
 * and the client id. */
enum { JITTER_STREAM = 5 };

typedef enum { JOB_TRAIN = 1, JOB_EVAL = 2 } job_kind_t;

typedef enum { SH_RECEIVING = 0, SH_READY, SH_FAILED } shared_state_t;

/* One round's global model, shared by every session of the pool that was
 * offered it: all of a round's clients receive the same bytes, so the first
 * session offered the round (the owner) receives into `data`, and the others
 * receive into `scratch` (written over by each of them, never read), keep
 * only their transfer's verified CRC-32, and use `data` when that equals the
 * owner's. A queued job holds a reference instead of a model, and the worker
 * that trains it makes its working copy (the model's own parameters). So a
 * fleet holds one model per round plus one per running job, however many of
 * its clients wait for a slot. Reference counts change on the loop only. */
typedef struct fl__shared {
    struct fl__shared *next;
    fl_session_pool_t *pool;
    uint64_t run, round;
    size_t n;          /* floats */
    float *data;       /* the model (64-byte aligned) */
    uint8_t *scratch;  /* the non-owners' receive buffer (allocated for the second receiver) */
    shared_state_t state;
    uint32_t crc;      /* the owner's verified CRC-32 (SH_READY) */
    unsigned refs;
    struct fl_session *waiters; /* non-owners whose transfer ended before the owner's */
} fl__shared_t;

/* One unit of work for the pool: a training or an evaluation. The inputs are
 * copied in on the loop, the worker only touches the job, the session's
 * read-only data and the model it builds, and the outputs go back to the loop
 * in the after-callback. */
typedef struct fl__job {
    struct fl__job *next;
    uv_work_t work;
    fl_session_t *s;
    job_kind_t kind;
    uint64_t round;
    char model[64];
    float *global; /* the received model (owned: freed by the job), or NULL with sh */
    fl__shared_t *sh; /* the round's shared model (a reference, released on the loop) */
    size_t n;
    fl_train_config_t cfg;
    size_t eval_batch, eval_max;
    int tamper; /* the hooks' tamper code (0 = none) */
    const fl_attack_t *attack; /* the hooks' attack (NULL = honest) */
    fl_task_ws_t *ws; /* the pool's workspace lent to the running job (NULL = none) */
    /* outputs */
    int rc;
    char why[200];
    fl_buf_t *update; /* Update message frame */
    fl_buf_t *delta;  /* the delta transfer's frames */
    fl_train_stats_t st;
    size_t samples;          /* training: examples passed through, every epoch counted */
    double train_seconds;    /* training: wall time of every epoch */
    fl_wire_tensor_t *table; /* the offer's tensor table (owned), NULL from a 1.0 server */
    size_t ntable;
    fl_task_codec_t codec;   /* how the delta travels; ef is the session's */
    int secure;              /* a secure round: keep the delta (sdelta) for masking on the loop */
    float *sdelta;
    double sweight;          /* its weight: the examples used */
} fl__job_t;

struct fl_session_pool {
    uv_loop_t *loop;
    unsigned jobs, running, waiting;
    fl__job_t *head, *tail;
    fl__shared_t *shared; /* models of the rounds in progress */
    fl_task_ws_t **ws;    /* fl_session_pool_keep_models: one workspace per job slot */
    unsigned char *ws_busy; /* ws[i] is lent to a running job */
    /* fl_session_pool_keep_models: the last round's receive buffers, for
     * the next round's (already faulted in); spare_n floats each */
    float *spare[2];
    size_t spare_n;
};

struct fl_session {
    fl_session_pool_t *pool;
    fl_session_opts_t o;
    char *name;
    fl_session_state_t state;
    fl_session_stats_t stats;
    fl_tls_conn_t *conn;
    int welcomed;
    int stopping;
    int done;
    int result;
    int fatal; /* a failure retrying cannot fix: stop with this code */
    uint32_t peer_max_frame;
    uint32_t minor;        /* negotiated protocol minor version */
    double heartbeat_s;
    double last_rx;        /* time of the last message from the server */
    double waiting_since;  /* last welcome (or start): for give_up */
    unsigned attempt;      /* reconnects since the last welcome */
    uint32_t reconnect_no; /* jitter stream counter */
    /* the task being received or worked on */
    uint64_t run_id, round;
    char task_model[64];
    size_t task_params;
    fl_train_config_t task_cfg;
    fl_wire_tensor_t *task_table; /* the latest offer's or request's tensor table */
    size_t task_ntable;
    fl_codec_t task_codec;
    size_t task_topk;
    fl_codec_ef_t ef;             /* top-k error feedback, kept across rounds */
    int eval_pending;
    uint64_t eval_round;
    size_t eval_batch, eval_max;
    fl__job_t *job;          /* queued or running job (at most one) */
    fl__job_t *held;         /* finished job whose upload waits (straggling) */
    fl__shared_t *sh;        /* the shared model of the offer being received or awaited */
    int sh_owner;            /* 1: this session's transfer fills sh->data */
    uint32_t sh_crc;         /* a waiting non-owner's verified CRC-32 */
    struct fl_session *sh_next; /* next waiter on sh */
    uv_timer_t timer;        /* reconnect back-off and straggling */
    uv_timer_t hb;           /* heartbeats and the silence watchdog */
    int handles_open;
    char *identity;          /* Welcome.peer_identity: the name a secure round's advert signs */
    uint64_t sec_round;      /* the latest offer that asked for secure aggregation */
    fl_secure_t *sec;        /* its protocol state (client/secure), NULL when we left it */
    fl__job_t *sec_job;      /* a trained secure job waiting for the neighbours' shares */
    struct fl__secwork *sec_work; /* the key phase's crypto, running in the thread pool */
};

/* A secure round's crypto runs in the thread pool, off the loop: the key
 * phase (every neighbour's certificate and signature checked, the shares
 * split and encrypted) and the masking (an X25519 agreement and a mask per
 * neighbour); a fleet's hundreds of parties would otherwise hold its
 * heartbeats back for many seconds. The session's fl_secure_t is the
 * work's alone until the after-callback; a session that left the round
 * meanwhile (orphan) lets the work free it. */
typedef struct fl__secwork {
    uv_work_t work;
    fl_session_t *s;
    fl_secure_t *sec;
    Fedopt__Envelope *msg; /* keys: the SecAggKeys (taken from the event) */
    fl_buf_t *reply;
    struct fl__job *job;   /* masking: the trained job (its delta and weight) */
    uint32_t chunk;
    fl_buf_t *up, *tensor; /* masking: the Update and the masked transfer */
    uint32_t *plain;       /* masking: the quantized words, for hooks.secagg_plain (or NULL) */
    int rc, orphan;
    char why[256];
} fl__secwork_t;

static const char *const state_names[FL_SESSION__NSTATES] = {
    "waiting", "connecting", "ready", "receiving", "queued", "training", "straggling", "uploading", "done",
};

const char *fl_session_state_name(fl_session_state_t st)
{
    return (unsigned)st < FL_SESSION__NSTATES ? state_names[st] : "unknown";
}

fl_session_state_t fl_session_state(const fl_session_t *s) { return s->state; }
const fl_session_stats_t *fl_session_stats(const fl_session_t *s) { return &s->stats; }
const char *fl_session_name(const fl_session_t *s) { return s->name; }
int fl_session_result(const fl_session_t *s) { return s->result; }

static void connect_now(fl_session_t *s);
static void schedule_reconnect(fl_session_t *s);
static void maybe_done(fl_session_t *s);
static void job_free(fl__job_t *j);
static void release_shared(fl_session_t *s);

/* ---- the pool ----------------------------------------------------------- */

void fl_session_pool_threads(unsigned jobs)
{
    /* libuv reads UV_THREADPOOL_SIZE once, when the first work is queued;
     * one more thread than jobs keeps name lookups from waiting behind
     * trainings. libuv caps it at 1024. */
    unsigned want = jobs + 1;
    const char *cur = getenv("UV_THREADPOOL_SIZE");
    if (cur && (unsigned)atoi(cur) >= want)
        return;
    char buf[16];
    snprintf(buf, sizeof buf, "%u", want > 1024 ? 1024 : want);
    setenv("UV_THREADPOOL_SIZE", buf, 1);
}

int fl_session_pool_create(uv_loop_t *loop, unsigned jobs, fl_session_pool_t **out)
{
    if (!loop || !jobs || !out)
        return FL_EINVAL;
    fl_session_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return FL_ENOMEM;
    p->loop = loop;
    p->jobs = jobs;
    *out = p;
    return 0;
}

int fl_session_pool_keep_models(fl_session_pool_t *p)
{
    if (!p)
        return FL_EINVAL;
    if (p->ws)
        return 0;
    fl_task_ws_t **ws = calloc(p->jobs, sizeof *ws);
    unsigned char *busy = calloc(p->jobs, 1);
    int rc = ws && busy ? 0 : FL_ENOMEM;
    for (unsigned i = 0; !rc && i < p->jobs; i++)
        rc = fl_task_ws_new(&ws[i]);
    if (rc) {
        for (unsigned i = 0; ws && i < p->jobs; i++)
            fl_task_ws_free(ws[i]);
        free(ws);
        free(busy);
        return rc;
    }
    p->ws = ws;
    p->ws_busy = busy;
    return 0;
}

size_t fl_session_pool_builds(const fl_session_pool_t *p)
{
    size_t n = 0;
    for (unsigned i = 0; p && p->ws && i < p->jobs; i++)
        n += fl_task_ws_builds(p->ws[i]);
    return n;
}

void fl_session_pool_free(fl_session_pool_t *p)
{
    if (!p)
        return;
    for (unsigned i = 0; p->ws && i < p->jobs; i++)
        fl_task_ws_free(p->ws[i]);
    free(p->ws);
    free(p->ws_busy);
    free(p->spare[0]);
    free(p->spare[1]);
    free(p);
}
unsigned fl_session_pool_running(const fl_session_pool_t *p) { return p->running; }
unsigned fl_session_pool_waiting(const fl_session_pool_t *p) { return p->waiting; }

unsigned fl_session_pool_models(const fl_session_pool_t *p)
{
    unsigned n = 0;
    for (const fl__shared_t *e = p->shared; e; e = e->next)
        n++;
    return n;
}

static void job_work(uv_work_t *w);
static void job_after(uv_work_t *w, int status);

/* Starts waiting jobs while slots are free. */
static void pool_kick(fl_session_pool_t *p)
{
    while (p->running < p->jobs && p->head) {
        fl__job_t *j = p->head;
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        j->next = NULL;
        p->waiting--;
        p->running++;
        j->work.data = j;
        /* running <= jobs: a workspace is free */
        for (unsigned i = 0; p->ws && !j->ws && i < p->jobs; i++)
            if (!p->ws_busy[i]) {
                p->ws_busy[i] = 1;
                j->ws = p->ws[i];
            }
        if (j->s->state == FL_SESSION_QUEUED)
            j->s->state = FL_SESSION_TRAINING;
        if (uv_queue_work(p->loop, &j->work, job_work, job_after)) {
            /* Only an invalid loop fails here; run it inline rather than lose it. */
            job_work(&j->work);
            job_after(&j->work, 0);
        }
    }
}

static void pool_submit(fl_session_pool_t *p, fl__job_t *j)
{
    j->next = NULL;
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->waiting++;
    pool_kick(p);
}

/* ---- the shared model of a round ------------------------------------------ */

/* A model-sized receive buffer: a spare one of n floats when the pool keeps
 * them, else a new one. */
static float *buf_take(fl_session_pool_t *p, size_t n)
{
    for (int i = 0; i < 2; i++)
        if (p->spare[i] && p->spare_n == n) {
            float *b = p->spare[i];
            p->spare[i] = NULL;
            return b;
        }
    return fl_task_alloc_params(n);
}

/* Gives a receive buffer back: a pool that keeps models keeps it for the
 * next round (a fleet receives a model of the same size every round, and a
 * new buffer would be faulted in and zeroed again), else it is freed. */
static void buf_give(fl_session_pool_t *p, float *b, size_t n)
{
    if (!b)
        return;
    if (p->ws) {
        if (p->spare_n != n) {
            free(p->spare[0]);
            free(p->spare[1]);
            p->spare[0] = p->spare[1] = NULL;
            p->spare_n = n;
        }
        for (int i = 0; i < 2; i++)
            if (!p->spare[i]) {
                p->spare[i] = b;
                return;
            }
    }
    free(b);
}

static void shared_unref(fl__shared_t *e)
{
    if (!e || --e->refs)
        return;
    for (fl__shared_t **p = &e->pool->shared; *p; p = &(*p)->next)
        if (*p == e) {
            *p = e->next;
            break;
        }
    buf_give(e->pool, e->data, e->n);
    buf_give(e->pool, (float *)e->scratch, e->n);
    free(e);
}

/* The shared model for an offer of (run, round, n floats): a new one, whose
 * owner s becomes (*owner = 1), or a reference to the one already being
 * received or received (*owner = 0). NULL when out of memory: the session
 * then receives a private copy as before. */
static fl__shared_t *shared_for_offer(fl_session_t *s, uint64_t run, uint64_t round, size_t n, int *owner)
{
    fl_session_pool_t *p = s->pool;
    for (fl__shared_t *e = p->shared; e; e = e->next)
        if (e->run == run && e->round == round && e->n == n && e->state != SH_FAILED) {
            if (!e->scratch && !(e->scratch = (uint8_t *)buf_take(p, n)))
                return NULL;
            e->refs++;
            *owner = 0;
            return e;
        }
    fl__shared_t *e = calloc(1, sizeof *e);
    if (!e || !(e->data = buf_take(p, n))) {
        free(e);
        return NULL;
    }
    e->pool = p;
    e->run = run;
    e->round = round;
    e->n = n;
    e->refs = 1;
    e->next = p->shared;
    p->shared = e;
    *owner = 1;
    return e;
}

/* ---- jobs (run in libuv's thread pool) ---------------------------------- */

static void job_free(fl__job_t *j)
{
    if (!j)
        return;
    free(j->global);
    free(j->table);
    shared_unref(j->sh);
    fl_buf_unref(j->update);
    fl_buf_unref(j->delta);
    free(j->sdelta);
    free(j);
}

/* The task's inputs: the session's data and the job's model. */
static fl_task_in_t job_input(const fl__job_t *j)
{
    const fl_session_t *s = j->s;
    fl_task_in_t in = {.model = j->model,
                       .data = s->o.data,
                       .index = s->o.index,
                       .nindex = s->o.nindex,
                       .global = j->sh ? j->sh->data : j->global,
                       .n = j->n,
                       .gemm_threads = s->o.gemm_threads,
                       .table = j->table,
                       .ntable = j->ntable,
                       .ws = j->ws};
    return in;
}

static void job_train(fl__job_t *j)
{
    fl_task_in_t in = job_input(j);
    fl_task_result_t res;
    memset(&res, 0, sizeof res);
    fl_dataset_t flipped;
    fl_dataset_init(&flipped);
    int rc = 0;
    if (j->attack && j->attack->kind == FL_ATTACK_LABELFLIP) {
        /* train on a copy of the share with its labels flipped */
        if (in.index && (rc = fl_dataset_subset(in.data, in.index, in.nindex, &flipped)) == 0) {
            fl_attack_flip_labels(j->attack, &flipped);
            in.data = &flipped;
            in.index = NULL;
            in.nindex = 0;
        }
    }
    if (!rc)
        rc = fl_task_train(&in, &j->cfg, &res, j->why, sizeof j->why);
    fl_dataset_free(&flipped);
    if (!rc) {
        const fl_session_hooks_t *h = j->s->o.hooks;
        if (j->attack)
            fl_attack_delta(j->attack, res.delta, res.n, j->s->o.seed, j->s->o.id, j->round);
        if (j->tamper && h && h->tamper)
            h->tamper(j->tamper, res.delta, &res.n);
        j->st = res.st;
        j->samples = res.samples;
        j->train_seconds = res.seconds;
        /* Low memory: a private received model and the trained model's
         * other buffers (gradients, activations, replicas) go before the
         * delta is encoded, so the frames never sit beside them: the peak
         * is lower by a model copy or more (`fedopt-client bench
         * --low-memory 0|1` measures it). */
        if (!j->sh) {
            free(j->global);
            j->global = NULL;
        }
        fl_task_result_slim(&res);
        uint32_t chunk = fl_wire_chunk_for_frame(j->s->peer_max_frame);
        if (j->secure) {
            /* Quantized and masked on the loop, once the neighbours'
             * shares are in (client/secure). */
            j->sweight = (double)res.st.examples;
            if ((j->sdelta = malloc(res.n * sizeof *j->sdelta)))
                memcpy(j->sdelta, res.delta, res.n * sizeof *j->sdelta);
            else
                rc = FL_ENOMEM;
            j->n = res.n;
        } else
            rc = fl_task_encode_update_codec(j->round, &res, &j->codec, chunk, &j->update, &j->delta, j->why,
                                             sizeof j->why);
    }
    /* Memory: the received model and the trained model go as soon as the
     * delta is encoded; only the frames travel on. */
    fl_task_result_free(&res);
    free(j->global);
    j->global = NULL;
    j->rc = rc;
}

static void job_eval(fl__job_t *j)
{
    fl_task_in_t in = job_input(j);
    int rc = fl_task_eval(&in, j->eval_batch, j->eval_max, &j->st, j->why, sizeof j->why);
    if (!rc)
        rc = fl_task_encode_eval(j->round, &j->st, &j->update, j->why, sizeof j->why);
    free(j->global);
    j->global = NULL;
    j->rc = rc;
}

static void job_work(uv_work_t *w)
{
    fl__job_t *j = w->data;
    if (j->kind == JOB_TRAIN)
        job_train(j);
    else
        job_eval(j);
}

/* Hands a finished training's frames to the connection. */
static void send_upload(fl_session_t *s, fl__job_t *j)
{
    if (!s->conn || !s->welcomed || s->round != j->round) {
        FL_LOG_D(WHO, "%s: round %llu's update has no connection to go to", s->name, (unsigned long long)j->round);
        if (!s->stopping && s->conn)
            s->state = FL_SESSION_READY;
        job_free(j);
        return;
    }
    if (fl_tls_conn_send(s->conn, j->update) || fl_tls_conn_send(s->conn, j->delta)) {
        job_free(j);
        return; /* closing: on_close reconnects */
    }
    s->stats.uploads++;
    s->stats.last_upload_round = j->round;
    s->stats.last_train_loss = j->st.loss;
    s->stats.last_train_seconds = j->st.seconds;
    s->state = FL_SESSION_UPLOADING;
    fl_log(s->o.log_rounds ? FL_LOG_INFO : FL_LOG_DEBUG, WHO, "%s: round %llu: %zu examples, loss %.4f, %.2f s; delta sent", s->name,
             (unsigned long long)j->round, j->st.examples, j->st.loss, j->st.seconds);
    job_free(j);
}

static void on_straggle_done(uv_timer_t *t)
{
    fl_session_t *s = t->data;
    fl__job_t *j = s->held;
    s->held = NULL;
    if (j)
        send_upload(s, j);
    maybe_done(s);
}

static double hold_for(const fl_session_t *s, uint64_t round)
{
    const fl_session_hooks_t *h = s->o.hooks;
    return h && h->hold ? h->hold(h->ud, s->o.id, round) : 0;
}

static void secwork_run(uv_work_t *w);
static void secwork_after(uv_work_t *w, int status);

/* Masks a trained secure job's delta in the thread pool (the neighbours'
 * shares are in); secure_sent sends it. */
static void secure_send(fl_session_t *s, fl__job_t *j)
{
    const fl_session_hooks_t *h = s->o.hooks;
    fl__secwork_t *x = calloc(1, sizeof *x);
    if (!x || (h && h->secagg_plain && !(x->plain = malloc((j->n + 1) * sizeof *x->plain)))) {
        FL_LOG_W(WHO, "%s: round %llu: out of memory to mask the update", s->name, (unsigned long long)j->round);
        free(x);
        job_free(j);
        return;
    }
    x->work.data = x;
    x->s = s;
    x->sec = s->sec;
    x->job = j;
    x->chunk = fl_wire_chunk_for_frame(s->peer_max_frame);
    s->sec_work = x;
    s->state = FL_SESSION_UPLOADING;
    if (uv_queue_work(s->pool->loop, &x->work, secwork_run, secwork_after)) {
        s->sec_work = NULL;
        free(x->plain);
        free(x);
        job_free(j);
    }
}

/* The masked input is ready: to the connection. */
static void secure_sent(fl_session_t *s, fl__secwork_t *x)
{
    fl__job_t *j = x->job;
    const fl_session_hooks_t *h = s->o.hooks;
    if (x->rc) {
        FL_LOG_W(WHO, "%s: round %llu: cannot mask the update: %s", s->name, (unsigned long long)j->round,
                 fl_strerror(x->rc));
        return;
    }
    if (!s->conn || fl_tls_conn_send(s->conn, x->up) || fl_tls_conn_send(s->conn, x->tensor))
        return;
    if (x->plain && h && h->secagg_plain)
        h->secagg_plain(h->ud, s->o.id, j->round, x->plain, j->n + 1);
    s->stats.uploads++;
    s->stats.last_upload_round = j->round;
    s->stats.last_train_loss = j->st.loss;
    s->stats.last_train_seconds = j->st.seconds;
    fl_log(s->o.log_rounds ? FL_LOG_INFO : FL_LOG_DEBUG, WHO, "%s: round %llu: %zu examples, loss %.4f, %.2f s; masked input sent",
           s->name, (unsigned long long)j->round, j->st.examples, j->st.loss, j->st.seconds);
    if (h && h->unmask_drop && h->unmask_drop(h->ud, s->o.id, j->round)) {
        /* What is queued still goes out: the masked input arrives, then
         * the client is gone before unmasking. */
        FL_LOG_D(WHO, "%s: round %llu: leaving after the masked input (a hook)", s->name, (unsigned long long)j->round);
        fl_tls_conn_close(s->conn);
    }
}

/* A secure job finished training: masked and sent now, or when the
 * neighbours' shares arrive. */
static void secure_trained(fl_session_t *s, fl__job_t *j)
{
    if (!s->sec || fl_secure_round(s->sec) != j->round || !s->conn || !s->welcomed) {
        FL_LOG_D(WHO, "%s: round %llu: the secure round went on without us", s->name, (unsigned long long)j->round);
        if (s->conn && s->welcomed)
            s->state = FL_SESSION_READY;
        job_free(j);
        return;
    }
    if (fl_secure_ready(s->sec)) {
        secure_send(s, j);
        return;
    }
    job_free(s->sec_job);
    s->sec_job = j;
    s->state = FL_SESSION_STRAGGLING;
}

/* Leaves a secure round (a new offer, a lost connection, a refusal). */
static void secure_leave(fl_session_t *s)
{
    if (s->sec_work)
        s->sec_work->orphan = 1; /* the work frees s->sec when it is done */
    else
        fl_secure_free(s->sec);
    s->sec = NULL;
    job_free(s->sec_job);
    s->sec_job = NULL;
}

static void job_after(uv_work_t *w, int status)
{
    double hold;
    fl__job_t *j = w->data;
    fl_session_t *s = j->s;
    fl_session_pool_t *p = s->pool;
    p->running--;
    s->job = NULL;
    /* The job's outputs are its own (frames, sdelta): the model can go on
     * to the next job. */
    for (unsigned i = 0; j->ws && i < p->jobs; i++)
        if (p->ws[i] == j->ws)
            p->ws_busy[i] = 0;
    j->ws = NULL;
    if (status == UV_ECANCELED && !j->rc) {
        j->rc = FL_ECANCELED;
        snprintf(j->why, sizeof j->why, "canceled");
    }
    if (!j->rc && j->kind == JOB_TRAIN) {
        /* Work done, whatever becomes of the upload: the fleet's samples/s. */
        s->stats.samples += j->samples;
        s->stats.train_seconds += j->train_seconds;
    }
    if (j->rc) {
        s->stats.failed_jobs++;
        FL_LOG_E(WHO, "%s: round %llu: %s", s->name, (unsigned long long)j->round, j->why);
        /* Tell the server why it will get nothing, and carry on: a misfit
         * between data and model is the operator's to fix, not a crash. */
        if (s->conn && s->welcomed && j->kind == JOB_TRAIN) {
            Fedopt__TaskReply tr = FEDOPT__TASK_REPLY__INIT;
            tr.round_id = j->round;
            tr.accept = 0;
            tr.reason = j->why;
            Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
            env.msg_case = FEDOPT__ENVELOPE__MSG_TASK_REPLY;
            env.task_reply = &tr;
            fl_tls_conn_send_msg(s->conn, &env);
        }
        if (s->conn && s->welcomed)
            s->state = FL_SESSION_READY;
        job_free(j);
    } else if (j->kind == JOB_EVAL) {
        if (s->conn && s->welcomed && fl_tls_conn_send(s->conn, j->update) == 0)
            s->stats.evals++;
        if (s->conn && s->welcomed)
            s->state = FL_SESSION_READY;
        job_free(j);
    } else if (j->secure) {
        secure_trained(s, j);
    } else if (!s->stopping && s->conn && s->welcomed && (hold = hold_for(s, j->round)) > 0) {
        /* Holding back is decided after training, so the delay adds to the
         * real training time as a slow device's would. */
        s->held = j;
        s->state = FL_SESSION_STRAGGLING;
        FL_LOG_D(WHO, "%s: round %llu: holding the upload back %.1f s", s->name, (unsigned long long)j->round, hold);
        uv_timer_start(&s->timer, on_straggle_done, (uint64_t)(hold * 1000), 0);
    } else {
        send_upload(s, j);
    }
    pool_kick(p);
    maybe_done(s);
}

/* ---- messages ----------------------------------------------------------- */

static void send_simple(fl_session_t *s, Fedopt__Envelope *env)
{
    if (s->conn)
        fl_tls_conn_send_msg(s->conn, env);
}

static void send_hello(fl_session_t *s)
{
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    h.protocol_version = FL_PROTOCOL_VERSION;
    h.client_name = s->name;
    h.software_version = FL_VERSION;
    h.models = (char **)s->o.models;
    h.n_models = s->o.nmodels;
    h.num_examples = s->o.index ? s->o.nindex : s->o.data->n;
    h.max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    h.data_spec = (char *)(s->o.data_spec ? s->o.data_spec : "");
    h.protocol_minor = FL_PROTOCOL_MINOR;
    Fedopt__Codec codecs[] = {FEDOPT__CODEC__CODEC_F16, FEDOPT__CODEC__CODEC_INT8, FEDOPT__CODEC__CODEC_TOPK};
    h.codecs = codecs;
    h.n_codecs = sizeof codecs / sizeof codecs[0];
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    send_simple(s, &env);
}

static void send_heartbeat(fl_session_t *s)
{
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    hb.unix_ms = fl_clock_wall_ms();
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    send_simple(s, &env);
}

static void send_bye(fl_session_t *s, const char *reason)
{
    Fedopt__Bye bye = FEDOPT__BYE__INIT;
    bye.reason = (char *)reason;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_BYE;
    env.bye = &bye;
    send_simple(s, &env);
}

static double silence_limit(const fl_session_t *s)
{
    if (s->o.silence > 0)
        return s->o.silence;
    double lim = 4 * s->heartbeat_s;
    return lim < 10 ? 10 : lim;
}

static void on_hb(uv_timer_t *t)
{
    fl_session_t *s = t->data;
    if (!s->conn || !s->welcomed)
        return;
    if (fl_clock_mono_s() - s->last_rx > silence_limit(s)) {
        FL_LOG_W(WHO, "%s: nothing from the server for %.0f s: reconnecting", s->name, fl_clock_mono_s() - s->last_rx);
        fl_tls_conn_close(s->conn);
        return;
    }
    send_heartbeat(s);
}

static void on_welcome(fl_session_t *s, const Fedopt__Welcome *w)
{
    if (w->protocol_version != FL_PROTOCOL_VERSION) {
        FL_LOG_E(WHO, "%s: server speaks protocol %u, this client %u", s->name, w->protocol_version,
                 FL_PROTOCOL_VERSION);
        s->fatal = FL_EUNSUPPORTED;
        fl_tls_conn_close(s->conn);
        return;
    }
    s->welcomed = 1;
    s->minor = w->protocol_minor < FL_PROTOCOL_MINOR ? w->protocol_minor : FL_PROTOCOL_MINOR;
    free(s->identity);
    s->identity = strdup(w->peer_identity ? w->peer_identity : "");
    s->attempt = 0;
    s->stats.connects++;
    s->peer_max_frame = w->max_frame ? w->max_frame : FL_WIRE_DEFAULT_MAX_FRAME;
    s->heartbeat_s = w->heartbeat_ms / 1000.0;
    s->state = FL_SESSION_READY;
    s->waiting_since = fl_clock_mono_s();
    FL_LOG_I(WHO, "%s: connected to %s (%s) as '%s'", s->name, fl_tls_conn_addr(s->conn),
             w->server_name ? w->server_name : "?", w->peer_identity ? w->peer_identity : "");
    /* Half the interval: a heartbeat is never late because a timer fired a
     * little after the server's own tick. */
    uint64_t every = w->heartbeat_ms ? w->heartbeat_ms / 2 : 5000;
    if (every < 50)
        every = 50;
    uv_timer_start(&s->hb, on_hb, every, every);
}

/* Keeps a copy of an offer's or request's tensor table for the job that
 * builds the model (a malformed one is dropped: the element count still
 * guards the transfer, and the server refuses what does not fit). */
static void take_table(fl_session_t *s, Fedopt__TensorInfo *const *t, size_t n)
{
    char why[200] = "";
    free(s->task_table);
    s->task_table = NULL;
    s->task_ntable = 0;
    if (fl_wire_table_read(t, n, &s->task_table, why, sizeof why) == 0)
        s->task_ntable = n;
    else
        FL_LOG_W(WHO, "%s: the server's tensor table: %s", s->name, why);
}

static void on_offer(fl_session_t *s, const Fedopt__TaskOffer *o)
{
    s->stats.offers++;
    s->stats.last_offer_round = o->round_id;
    s->run_id = o->run_id;
    s->round = o->round_id;
    s->task_params = (size_t)o->num_params;
    snprintf(s->task_model, sizeof s->task_model, "%s", o->model ? o->model : "");
    fl_task_config(o->opt, o->run_id, o->round_id, s->o.id, &s->task_cfg);
    take_table(s, o->tensors, o->n_tensors);
    s->task_codec = FL_CODEC_F32;
    s->task_topk = 0;
    if (s->minor >= 1 && fl_codec_name((int)o->codec)) {
        s->task_codec = (fl_codec_t)o->codec;
        s->task_topk = (size_t)o->topk;
    }
    if (s->job || s->held) {
        /* The server moved on while we were still busy: the old result will
         * be stale, so it is dropped when it comes back. */
        FL_LOG_D(WHO, "%s: offer for round %llu while busy", s->name, (unsigned long long)o->round_id);
    }
    secure_leave(s);
    s->sec_round = 0;
    if (o->secagg && s->minor >= 1) {
        /* Secure aggregation: advertise the round's keys now, while the
         * model arrives and trains. */
        const fl_session_hooks_t *h = s->o.hooks;
        const fl_attack_t *a = h && h->attack ? h->attack(h->ud, s->o.id) : NULL;
        fl_secure_lie_t lie = !a ? FL_SECURE_HONEST
                              : a->kind == FL_ATTACK_SECAGG_KEY ? FL_SECURE_LIE_KEY
                              : a->kind == FL_ATTACK_SECAGG_SHARE ? FL_SECURE_LIE_SHARE
                              : a->kind == FL_ATTACK_SECAGG_REPLAY ? FL_SECURE_LIE_REPLAY
                                                                    : FL_SECURE_HONEST;
        fl_buf_t *adv = NULL;
        s->sec_round = o->round_id;
        int rc = fl_secure_create(o->secagg, o->run_id, o->round_id, s->identity ? s->identity : "", s->o.tls, lie,
                                  &adv, &s->sec);
        if (rc || fl_tls_conn_send(s->conn, adv))
            FL_LOG_W(WHO, "%s: round %llu: cannot take part in secure aggregation: %s", s->name,
                     (unsigned long long)o->round_id, fl_strerror(rc ? rc : FL_ECLOSED));
        fl_buf_unref(adv);
    }
    s->state = FL_SESSION_RECEIVING;
    fl_tls_conn_set_max_tensor(s->conn, (uint64_t)s->task_params * sizeof(float));
    release_shared(s);
    int owner = 0;
    fl__shared_t *e = s->task_params ? shared_for_offer(s, o->run_id, o->round_id, s->task_params, &owner) : NULL;
    if (e) {
        s->sh = e;
        s->sh_owner = owner;
        fl_tls_conn_set_tensor_dst(s->conn, owner ? (void *)e->data : (void *)e->scratch,
                                   s->task_params * sizeof(float));
    }
}

static void decline(fl_session_t *s, uint64_t round, const char *reason)
{
    Fedopt__TaskReply tr = FEDOPT__TASK_REPLY__INIT;
    tr.round_id = round;
    tr.accept = 0;
    tr.reason = (char *)reason;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_TASK_REPLY;
    env.task_reply = &tr;
    send_simple(s, &env);
}

/* Gives job j its own copy of the session's tensor table (the next offer
 * replaces the session's while j runs on a worker thread). */
static void copy_table(fl_session_t *s, fl__job_t *j)
{
    if (!s->task_ntable)
        return;
    j->table = malloc(s->task_ntable * sizeof *j->table);
    if (j->table) {
        memcpy(j->table, s->task_table, s->task_ntable * sizeof *j->table);
        j->ntable = s->task_ntable;
    }
}

/* Queues the training of round s->round on the shared model e (a reference
 * the job takes over) or on the private buffer buf (which it owns). */
static void start_training(fl_session_t *s, fl__shared_t *e, float *buf)
{
    if (s->job || s->held) {
        /* One job per session: a new round's model while the old one still
         * trains means the old result is useless; this one waits for it. */
        FL_LOG_W(WHO, "%s: round %llu offered while round %llu is still being worked on: declined", s->name,
                 (unsigned long long)s->round, (unsigned long long)(s->job ? s->job->round : s->held->round));
        decline(s, s->round, "still busy with an earlier round");
        goto drop;
    }
    const fl_session_hooks_t *h = s->o.hooks;
    if (h && h->vanish && h->vanish(h->ud, s->o.id, s->round)) {
        FL_LOG_D(WHO, "%s: round %llu: vanishing (a hook)", s->name, (unsigned long long)s->round);
        fl_tls_conn_close(s->conn);
        goto drop;
    }
    fl__job_t *j = calloc(1, sizeof *j);
    if (!j) {
        FL_LOG_E(WHO, "%s: out of memory for round %llu", s->name, (unsigned long long)s->round);
        goto drop;
    }
    j->s = s;
    j->kind = JOB_TRAIN;
    j->round = s->round;
    snprintf(j->model, sizeof j->model, "%s", s->task_model);
    j->global = buf;
    j->sh = e;
    j->n = s->task_params;
    j->cfg = s->task_cfg;
    copy_table(s, j);
    j->codec.codec = s->task_codec;
    j->codec.topk = s->task_topk;
    j->codec.ef = &s->ef; /* one job per session at a time: the job may use it */
    j->secure = s->sec_round == s->round && s->sec_round != 0;
    if (h && h->tamper_code)
        j->tamper = h->tamper_code(h->ud, s->o.id, s->round);
    if (h && h->attack)
        j->attack = h->attack(h->ud, s->o.id);
    s->job = j;
    s->state = FL_SESSION_QUEUED;
    pool_submit(s->pool, j);
    return;
drop:
    shared_unref(e);
    free(buf);
}

/* A non-owner's transfer was verified as crc: train on the shared model when
 * it is the owner's, else decline (the bytes went to the scratch buffer). */
static void resolve_waiter(fl_session_t *s, fl__shared_t *e, uint32_t crc)
{
    if (e->state == SH_READY && e->crc == crc) {
        start_training(s, e, NULL);
        return;
    }
    FL_LOG_W(WHO, "%s: round %llu's model (CRC %08x) is not the one the fleet received (%s): declined", s->name,
             (unsigned long long)s->round, crc, e->state == SH_READY ? "another CRC" : "its transfer failed");
    decline(s, s->round, "the model differs from the fleet's shared copy");
    s->state = FL_SESSION_READY;
    shared_unref(e);
}

/* The owner's transfer ended: the shared model is ready (or failed), and the
 * sessions whose transfers ended first are resolved. */
static void shared_settle(fl__shared_t *e, shared_state_t st, uint32_t crc)
{
    e->state = st;
    e->crc = crc;
    while (e->waiters) {
        fl_session_t *w = e->waiters;
        e->waiters = w->sh_next;
        w->sh_next = NULL;
        w->sh = NULL;
        resolve_waiter(w, e, w->sh_crc);
    }
}

/* Lets go of the shared model of an offer this session no longer waits for
 * (a new offer, a lost connection). */
static void release_shared(fl_session_t *s)
{
    fl__shared_t *e = s->sh;
    if (!e)
        return;
    s->sh = NULL;
    for (fl_session_t **p = &e->waiters; *p; p = &(*p)->sh_next)
        if (*p == s) {
            *p = s->sh_next;
            break;
        }
    s->sh_next = NULL;
    if (s->sh_owner && e->state == SH_RECEIVING)
        shared_settle(e, SH_FAILED, 0);
    shared_unref(e);
}

static void on_model(fl_session_t *s, fl_wire_event_t *ev)
{
    fl__shared_t *e = s->sh;
    int owner = s->sh_owner;
    s->sh = NULL;
    float *buf = ev->borrowed ? NULL : (float *)ev->data;
    if (ev->round_id != s->round || ev->nbytes != s->task_params * sizeof(float) || (e && !ev->borrowed)) {
        FL_LOG_W(WHO, "%s: model transfer does not match the offer (round %llu, %zu bytes): ignored", s->name,
                 (unsigned long long)ev->round_id, ev->nbytes);
        if (e && owner)
            shared_settle(e, SH_FAILED, 0);
        shared_unref(e);
        return; /* the event frees a buffer of its own */
    }
    ev->data = NULL; /* the transport's 64-byte aligned buffer is ours now, or was borrowed */
    if (!e) {
        start_training(s, NULL, buf);
        return;
    }
    if (owner) {
        shared_settle(e, SH_READY, ev->crc32);
        start_training(s, e, NULL);
    } else if (e->state == SH_RECEIVING) {
        /* The owner's transfer is still running: wait for it. */
        s->sh = e;
        s->sh_crc = ev->crc32;
        s->sh_next = e->waiters;
        e->waiters = s;
    } else {
        resolve_waiter(s, e, ev->crc32);
    }
}

static void on_eval_model(fl_session_t *s, fl_wire_event_t *ev)
{
    if (!s->eval_pending || ev->round_id != s->eval_round) {
        FL_LOG_W(WHO, "%s: evaluation model without a matching request: ignored", s->name);
        return;
    }
    s->eval_pending = 0;
    if (s->job || s->held) {
        /* Say so, so that the server's evaluation does not wait for its
         * deadline on us. */
        FL_LOG_W(WHO, "%s: evaluation request while training: declined", s->name);
        Fedopt__TaskReply tr = FEDOPT__TASK_REPLY__INIT;
        tr.round_id = s->eval_round;
        tr.accept = 0;
        tr.reason = "busy training";
        Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
        env.msg_case = FEDOPT__ENVELOPE__MSG_TASK_REPLY;
        env.task_reply = &tr;
        send_simple(s, &env);
        return;
    }
    fl__job_t *j = calloc(1, sizeof *j);
    if (!j)
        return;
    j->s = s;
    j->kind = JOB_EVAL;
    j->round = s->eval_round;
    snprintf(j->model, sizeof j->model, "%s", s->task_model);
    j->global = (float *)ev->data;
    ev->data = NULL;
    j->n = ev->nbytes / sizeof(float);
    j->eval_batch = s->eval_batch;
    j->eval_max = s->eval_max;
    copy_table(s, j);
    s->job = j;
    s->state = FL_SESSION_QUEUED;
    pool_submit(s->pool, j);
}

/* A secure round's message from the server (client/secure checks it). A
 * refusal leaves the round: nothing more is revealed in it. */
static void secwork_run(uv_work_t *w)
{
    fl__secwork_t *x = w->data;
    if (x->job)
        x->rc = fl_secure_upload(x->sec, x->job->sdelta, x->job->n, x->job->sweight, x->chunk, &x->up, &x->tensor,
                                 x->plain);
    else
        x->rc = fl_secure_on_keys(x->sec, x->msg->secagg_keys, &x->reply, x->why, sizeof x->why);
}

static void secwork_after(uv_work_t *w, int status)
{
    fl__secwork_t *x = w->data;
    fl_session_t *s = x->s;
    if (x->orphan) {
        fl_secure_free(x->sec);
    } else {
        s->sec_work = NULL;
        if (status && !x->rc)
            x->rc = FL_ECANCELED;
        if (x->job) {
            secure_sent(s, x);
        } else if (x->rc) {
            FL_LOG_W(WHO, "%s: round %llu: leaving the secure round: %s%s%s", s->name,
                     (unsigned long long)fl_secure_round(s->sec), fl_strerror(x->rc), x->why[0] ? ": " : "", x->why);
            secure_leave(s);
        } else if (s->conn) {
            fl_tls_conn_send(s->conn, x->reply);
        }
    }
    if (x->orphan)
        s->sec_work = NULL;
    fl_buf_unref(x->reply);
    fl_buf_unref(x->up);
    fl_buf_unref(x->tensor);
    free(x->plain);
    job_free(x->job);
    fl_wire_msg_free(x->msg);
    free(x);
    maybe_done(s);
}

static void on_secagg(fl_session_t *s, fl_wire_event_t *ev)
{
    const Fedopt__Envelope *m = ev->msg;
    fl_buf_t *reply = NULL;
    char why[256] = "";
    int rc = 0;
    if (!s->sec || s->sec_work) {
        FL_LOG_D(WHO, "%s: %s outside a secure round we take part in: ignored", s->name,
                 fl_wire_msg_name((int)m->msg_case));
        return;
    }
    if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_KEYS) {
        fl__secwork_t *x = calloc(1, sizeof *x);
        if (x) {
            x->work.data = x;
            x->s = s;
            x->sec = s->sec;
            x->msg = ev->msg;
            ev->msg = NULL; /* the work's now */
            s->sec_work = x;
            if (uv_queue_work(s->pool->loop, &x->work, secwork_run, secwork_after) == 0)
                return;
            s->sec_work = NULL;
            ev->msg = x->msg;
            free(x);
        }
        rc = FL_ENOMEM;
    } else if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_SHARES) {
        if ((rc = fl_secure_on_shares(s->sec, m->secagg_shares)) == 0 && s->sec_job) {
            fl__job_t *j = s->sec_job;
            s->sec_job = NULL;
            secure_send(s, j);
            return;
        }
    } else {
        rc = fl_secure_on_unmask(s->sec, m->secagg_unmask, &reply);
    }
    if (rc) {
        FL_LOG_W(WHO, "%s: round %llu: leaving the secure round: %s%s%s", s->name,
                 (unsigned long long)fl_secure_round(s->sec), fl_strerror(rc), why[0] ? ": " : "", why);
        secure_leave(s);
        return;
    }
    if (reply && s->conn)
        fl_tls_conn_send(s->conn, reply);
    fl_buf_unref(reply);
}

static void on_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    fl_session_t *s = ud;
    s->last_rx = fl_clock_mono_s();
    if (ev->kind == FL_WIRE_EV_TENSOR) {
        if (ev->purpose == FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL)
            on_model(s, ev);
        else if (ev->purpose == FEDOPT__TENSOR_PURPOSE__TENSOR_EVAL_MODEL)
            on_eval_model(s, ev);
        return;
    }
    if (ev->kind != FL_WIRE_EV_MESSAGE || !ev->msg)
        return;
    const Fedopt__Envelope *m = ev->msg;
    switch (m->msg_case) {
    case FEDOPT__ENVELOPE__MSG_WELCOME:
        on_welcome(s, m->welcome);
        break;
    case FEDOPT__ENVELOPE__MSG_REJECT: {
        const char *why = m->reject->reason ? m->reject->reason : "";
        int code = m->reject->code;
        if (code == FL_EUNSUPPORTED) {
            /* Another protocol version, or a model this client cannot
             * build for its data: retrying changes neither. */
            char list[512] = "";
            size_t len = 0;
            for (size_t i = 0; i < s->o.nmodels && len < sizeof list - 70; i++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", s->o.models[i]);
            FL_LOG_E(WHO, "%s: the server refused this client: %s (%s); with its data (%s) this client can train: %s",
                     s->name, why, fl_errname(code), s->o.data_spec ? s->o.data_spec : "", len ? list : "nothing");
            s->fatal = FL_EUNSUPPORTED;
        } else {
            FL_LOG_W(WHO, "%s: the server refused this client: %s (%s); retrying later", s->name, why,
                     fl_errname(code));
        }
        fl_tls_conn_close(c);
        break;
    }
    case FEDOPT__ENVELOPE__MSG_TASK_OFFER:
        on_offer(s, m->task_offer);
        break;
    case FEDOPT__ENVELOPE__MSG_EVAL_REQUEST: {
        const Fedopt__EvalRequest *r = m->eval_request;
        s->eval_pending = 1;
        s->eval_round = r->round_id;
        s->eval_batch = r->batch_size;
        s->eval_max = r->max_examples;
        snprintf(s->task_model, sizeof s->task_model, "%s", r->model ? r->model : "");
        take_table(s, r->tensors, r->n_tensors);
        fl_tls_conn_set_max_tensor(c, (uint64_t)r->num_params * sizeof(float));
        /* The evaluation's model arrives in a buffer of its own, never in a
         * shared one an unanswered offer may have armed. */
        fl_tls_conn_set_tensor_dst(c, NULL, 0);
        break;
    }
    case FEDOPT__ENVELOPE__MSG_HEARTBEAT:
        break;
    case FEDOPT__ENVELOPE__MSG_SECAGG_KEYS:
    case FEDOPT__ENVELOPE__MSG_SECAGG_SHARES:
    case FEDOPT__ENVELOPE__MSG_SECAGG_UNMASK:
        on_secagg(s, ev);
        break;
    case FEDOPT__ENVELOPE__MSG_UPDATE_RESULT: {
        const Fedopt__UpdateResult *r = m->update_result;
        const ProtobufCEnumValue *why = protobuf_c_enum_descriptor_get_value(&fedopt__result_reason__descriptor,
                                                                             (int)r->reason);
        if (r->accepted)
            s->stats.accepted++;
        else
            s->stats.refused++;
        s->stats.last_result_reason = (int)r->reason;
        fl_log(r->accepted ? FL_LOG_DEBUG : FL_LOG_WARN, WHO, "%s: round %llu: %s %s (%s%s%s)", s->name,
               (unsigned long long)r->round_id, r->kind == FEDOPT__RESULT_KIND__RESULT_EVAL ? "evaluation" : "update",
               r->accepted ? "accepted" : "refused", why ? why->name : "?", r->message && *r->message ? ": " : "",
               r->message ? r->message : "");
        break;
    }
    case FEDOPT__ENVELOPE__MSG_ERROR:
        FL_LOG_W(WHO, "%s: server reports %s: %s", s->name, fl_errname(m->error->code),
                 m->error->message ? m->error->message : "");
        break;
    case FEDOPT__ENVELOPE__MSG_BYE:
        FL_LOG_I(WHO, "%s: server says goodbye: %s", s->name, m->bye->reason ? m->bye->reason : "");
        /* The server names a finished run "run finished" (server/daemon.c);
         * anything else (a restart, a failure) is worth waiting out. */
        if (s->o.stop_on_finish && m->bye->reason && strcmp(m->bye->reason, "run finished") == 0)
            s->stopping = 1;
        fl_tls_conn_close(c);
        break;
    default:
        FL_LOG_W(WHO, "%s: unexpected %s from the server: closing", s->name, fl_wire_msg_name((int)m->msg_case));
        fl_tls_conn_close(c);
        break;
    }
}

static void on_drain(fl_tls_conn_t *c, void *ud)
{
    fl_session_t *s = ud;
    if (s->state == FL_SESSION_UPLOADING)
        s->state = FL_SESSION_READY;
}

static void on_open(fl_tls_conn_t *c, void *ud)
{
    fl_session_t *s = ud;
    s->last_rx = fl_clock_mono_s();
    send_hello(s);
}

static void on_close(fl_tls_conn_t *c, int reason, void *ud)
{
    fl_session_t *s = ud;
    s->conn = NULL;
    uv_timer_stop(&s->hb);
    int was_welcomed = s->welcomed;
    s->welcomed = 0;
    s->eval_pending = 0;
    release_shared(s);
    secure_leave(s); /* a secure round does not survive the connection */
    if (s->held) {
        /* A straggler whose connection went: its result has nowhere to go. */
        uv_timer_stop(&s->timer);
        job_free(s->held);
        s->held = NULL;
    }
    if (!s->fatal && !was_welcomed && reason == FL_EAUTH) {
        FL_LOG_E(WHO, "%s: the server's certificate does not verify against --ca (or does not name '%s'): "
                      "not retrying",
                 s->name, s->o.server_name ? s->o.server_name : s->o.host);
        s->fatal = FL_EAUTH;
    } else if (!s->fatal && !was_welcomed && reason == FL_ETLS && s->stats.connects == 0 && s->attempt == 0) {
        /* The server aborted our very first handshake: almost always our
         * certificate (not signed by its CA, expired, no key match). */
        FL_LOG_E(WHO, "%s: TLS handshake with %s:%d failed: check --cert/--key (signed by the server's CA?) "
                      "and --ca; retrying with back-off",
                 s->name, s->o.host, s->o.port);
    } else if (was_welcomed) {
        s->waiting_since = fl_clock_mono_s();
        FL_LOG_I(WHO, "%s: disconnected%s%s", s->name, reason ? ": " : "", reason ? fl_strerror(reason) : "");
    }
    if (s->fatal || s->stopping) {
        if (!s->stopping)
            s->result = s->fatal;
        s->stopping = 1;
        maybe_done(s);
        return;
    }
    s->state = s->job ? s->state : FL_SESSION_WAITING;
    schedule_reconnect(s);
}

/* ---- connecting ------------------------------------------------------------ */

static void on_reconnect_timer(uv_timer_t *t)
{
    fl_session_t *s = t->data;
    if (!s->stopping && !s->conn)
        connect_now(s);
}

static void schedule_reconnect(fl_session_t *s)
{
    double now = fl_clock_mono_s();
    if (s->o.give_up > 0 && now - s->waiting_since > s->o.give_up) {
        FL_LOG_W(WHO, "%s: no server for %.0f s: giving up", s->name, now - s->waiting_since);
        s->stopping = 1;
        s->result = FL_ETIMEDOUT;
        maybe_done(s);
        return;
    }
    double lo = s->o.backoff_min > 0 ? s->o.backoff_min : 0.5;
    double hi = s->o.backoff_max > 0 ? s->o.backoff_max : 30;
    double d = lo * pow(2.0, s->attempt < 30 ? s->attempt : 30);
    if (d > hi)
        d = hi;
    /* Full jitter in [d/2, d): a fleet that lost its server together does
     * not come back in one synchronized wave. */
    fl_rng_t r;
    uint64_t ids[4] = {s->o.id, s->reconnect_no++, JITTER_STREAM, 1};
    fl_rng_stream(&r, s->o.seed, ids, 4);
    d *= 0.5 + 0.5 * fl_rng_uniform(&r);
    s->attempt++;
    s->state = s->job ? s->state : FL_SESSION_WAITING;
    FL_LOG_D(WHO, "%s: reconnecting in %.2f s", s->name, d);
    uv_timer_start(&s->timer, on_reconnect_timer, (uint64_t)(d * 1000), 0);
}

static void connect_now(fl_session_t *s)
{
    fl_tls_cbs_t cbs = {.on_open = on_open, .on_message = on_message, .on_drain = on_drain, .on_close = on_close};
    s->state = s->job ? s->state : FL_SESSION_CONNECTING;
    s->welcomed = 0;
    int rc = fl_tls_connect(s->pool->loop, s->o.tls, s->o.host, s->o.port, s->o.server_name, &cbs, s, &s->conn);
    if (rc) {
        s->conn = NULL;
        FL_LOG_W(WHO, "%s: cannot connect to %s:%d: %s", s->name, s->o.host, s->o.port, fl_strerror(rc));
        if (rc == FL_EINVAL) {
            s->stopping = 1;
            s->result = rc;
            maybe_done(s);
            return;
        }
        schedule_reconnect(s);
    }
}

/* ---- life cycle ------------------------------------------------------------ */

static void handle_closed(uv_handle_t *h)
{
    fl_session_t *s = h->data;
    s->handles_open--;
    maybe_done(s);
}

/* Finishes a stopping session once its connection, job and handles are gone. */
static void maybe_done(fl_session_t *s)
{
    if (!s->stopping || s->done)
        return;
    if (s->conn || s->job || s->sec_work)
        return;
    if (s->held) {
        job_free(s->held);
        s->held = NULL;
    }
    secure_leave(s);
    if (s->handles_open == 2 && !uv_is_closing((uv_handle_t *)&s->timer)) {
        uv_close((uv_handle_t *)&s->timer, handle_closed);
        uv_close((uv_handle_t *)&s->hb, handle_closed);
        return;
    }
    if (s->handles_open)
        return;
    s->done = 1;
    s->state = FL_SESSION_DONE;
    if (s->o.on_done)
        s->o.on_done(s, s->result, s->o.ud);
}

int fl_session_start(fl_session_pool_t *pool, const fl_session_opts_t *opts, fl_session_t **out)
{
    if (!pool || !opts || !out || !opts->host || !opts->tls || !opts->data || opts->port <= 0 ||
        opts->port > 65535)
        return FL_EINVAL;
    *out = NULL;
    fl_session_t *s = calloc(1, sizeof *s);
    if (!s)
        return FL_ENOMEM;
    s->pool = pool;
    s->o = *opts;
    if (!(s->name = strdup(opts->name ? opts->name : "client"))) {
        free(s);
        return FL_ENOMEM;
    }
    uv_timer_init(pool->loop, &s->timer);
    uv_timer_init(pool->loop, &s->hb);
    s->timer.data = s->hb.data = s;
    s->handles_open = 2;
    s->waiting_since = fl_clock_mono_s();
    s->peer_max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    *out = s;
    connect_now(s);
    return 0;
}

void fl_session_stop(fl_session_t *s)
{
    if (!s || s->stopping)
        return;
    s->stopping = 1;
    uv_timer_stop(&s->timer);
    uv_timer_stop(&s->hb);
    if (s->conn) {
        send_bye(s, "client stopping");
        fl_tls_conn_close(s->conn);
    }
    maybe_done(s);
}

void fl_session_free(fl_session_t *s)
{
    if (!s)
        return;
    if (!s->done)
        FL_LOG_E(WHO, "%s: freed before it was done (leaking it instead)", s->name);
    else {
        fl_codec_ef_free(&s->ef);
        free(s->task_table);
        free(s->identity);
        free(s->name);
        free(s);
    }
}

int fl_session_parse_addr(const char *text, char *host, size_t hlen, int *port)
{
    if (!text || !host || !hlen || !port)
        return FL_EINVAL;
    const char *colon, *h = text;
    size_t len;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':')
            return FL_EINVAL;
        h = text + 1;
        len = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return FL_EINVAL;
        len = (size_t)(colon - text);
    }
    if (len == 0 || len >= hlen)
        return FL_EINVAL;
    char *e;
    long p = strtol(colon + 1, &e, 10);
    if (!colon[1] || *e || p < 1 || p > 65535)
        return FL_EINVAL;
    memcpy(host, h, len);
    host[len] = 0;
    *port = (int)p;
    return 0;
}
