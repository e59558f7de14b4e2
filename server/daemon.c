#include "server/daemon.h"

#include <ctype.h>
#include <errno.h>
#include <sys/resource.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/net/certs.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/nn/models.h"
#include "common/nn/safetensors.h"
#include "common/net/tls.h"
#include "common/base/version.h"
#include "common/net/wire.h"
#include "server/aggregate.h"
#include "server/eval.h"
#include "server/fedeval.h"
#include "server/rdp.h"
#include "server/round.h"
#include "server/store.h"

#define WHO "server"

typedef enum { U_NONE = 0, U_WAIT_SLOT, U_RECEIVING } up_state_t;

typedef struct fl__client fl__client_t;
typedef struct fl__daemon fl__daemon_t;

/* One connection. Freed in on_close, the transport's last callback. */
struct fl__client {
    fl__client_t *prev, *next; /* the daemon's list of connections */
    fl__client_t *wait_next;   /* FIFO of uploads waiting for a buffer slot */
    fl__daemon_t *d;
    fl_tls_conn_t *conn;
    char *name;
    int welcomed;
    uint32_t max_frame;
    uint64_t holds; /* examples the client said it holds (Hello) */
    double last_seen;
    double task_sent_at;
    /* the upload being received (announced by an Update message) */
    up_state_t up;
    int64_t up_round;
    double up_weight, up_loss;
};

/* A received upload waiting for (or in) the aggregation worker. */
typedef struct fl__job {
    struct fl__job *next;
    char *name;
    float *delta;
    size_t n;
    double weight, loss, norm, received_at;
    int64_t bytes;
    int rc;
} fl__job_t;

/* PH_FEDEVAL: a federated evaluation is open (after a round's commit, before
 * the next round); PH_FEDEVAL_COMMIT: its result is being committed. */
typedef enum { PH_WAITING = 0, PH_ROUND, PH_COMMITTING, PH_FEDEVAL, PH_FEDEVAL_COMMIT, PH_DONE } phase_t;

struct fl__daemon {
    const fl_server_config_t *cfg;
    uv_loop_t loop;
    uv_timer_t tick;
    uv_signal_t sigterm, sigint;
    fl_tls_ctx_t *tls;
    fl_tls_server_t *server;
    fl_store_t *store;
    fl_eval_t *eval;
    fl_model_t *model; /* the layout and the initial weights */
    float *x;          /* the global model */
    size_t numel;
    fl_serveropt_t *opt;
    fl_agg_t *agg;      /* forms D from the round's deltas: mean, robust rules, clipping, DP */
    fl_rdp_t *rdp;      /* the privacy accountant (NULL without DP) */
    double round_q;     /* the open round's sampling rate: selected / connected */
    double eps;         /* epsilon at dp_delta after the last committed round */
    fl_store_privacy_t priv; /* the committing round's clip/DP record */
    fl_round_t *round;
    int64_t run_id;
    int64_t round_no; /* the round open or next to open */
    phase_t phase;
    int stopping, failed, finished;
    double wait_since, wait_logged, last_heartbeat;
    size_t wait_logged_have;
    fl__client_t *clients;
    size_t nclients;
    /* upload buffers: receiving + queued + in the worker */
    size_t slots_used;
    fl__client_t *wait_head, *wait_tail;
    fl__job_t *jobs_head, *jobs_tail;
    fl__job_t *job_running; /* the batch in the aggregation worker, a list */
    uv_work_t agg_work;
    /* the commit worker */
    uv_work_t commit_work;
    fl_store_round_t row;
    const fl_store_update_t *ups;
    size_t nups;
    int row_closed, commit_rc, evaluated;
    fl_serveropt_round_t opt_res;
    char **last_selected; /* names selected in the previous round, for "who is missing" */
    size_t nlast_selected;
    /* federated evaluation (fed_eval_every > 0) */
    fl_fedeval_t *fe;
    int64_t fe_due;        /* the round whose model is to be evaluated next (0 = none) */
    int fe_encode;         /* the commit worker encodes the evaluation model */
    uint32_t fe_chunk;     /* chunk size it encodes with */
    fl_buf_t *fe_model;    /* the encoded EvalRequest model transfer of round fe_model_round */
    int64_t fe_model_round;
    uv_work_t fe_work;
    fl_store_fedeval_t fe_row;
    const fl_store_fedeval_result_t *fe_res;
    size_t fe_nres;
    int fe_rc;
    char line[768];        /* the committed round's progress line, printed once its evaluation is done */
    int line_pending;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void try_start_round(fl__daemon_t *d);
static void maybe_close_round(fl__daemon_t *d);
static void kick_aggregation(fl__daemon_t *d);
static void stop_all(fl__daemon_t *d);
static void start_fedeval(fl__daemon_t *d, fl__client_t **conns, const char **names, size_t have, double now);
static void maybe_close_fedeval(fl__daemon_t *d);
static int replay_privacy(int64_t round, const fl_store_privacy_t *p, void *user);
static void round_done(fl__daemon_t *d);
static void on_eval_result(fl__client_t *c, const Fedopt__EvalResult *r);

/* ---- messages ------------------------------------------------------------ */

static void send_reject(fl__client_t *c, int code, const char *reason)
{
    Fedopt__Reject rj = FEDOPT__REJECT__INIT;
    rj.code = code;
    rj.reason = (char *)reason;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_REJECT;
    env.reject = &rj;
    fl_tls_conn_send_msg(c->conn, &env);
    fl_tls_conn_close(c->conn);
}

static void send_bye(fl__client_t *c, const char *reason)
{
    Fedopt__Bye bye = FEDOPT__BYE__INIT;
    bye.reason = (char *)reason;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_BYE;
    env.bye = &bye;
    fl_tls_conn_send_msg(c->conn, &env);
    fl_tls_conn_close(c->conn);
}

static fl__client_t *find_client(fl__daemon_t *d, const char *name)
{
    for (fl__client_t *c = d->clients; c; c = c->next)
        if (c->welcomed && strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

/* Lowers chunk to the largest tensor chunk client c's frame limit admits
 * (c may be NULL, not yet welcomed, or without a limit: chunk stays). The
 * minimum over a selection is one chunk size for all of it, so a model is
 * encoded once and the same buffer goes to every connection. */
static uint32_t admit_chunk(const fl__client_t *c, uint32_t chunk)
{
    uint32_t ch = c && c->welcomed && c->max_frame ? fl_wire_chunk_for_frame(c->max_frame) : 0;
    return ch && ch < chunk ? ch : chunk;
}

/* True when certificate name cn is listed in the comma-separated `list`. */
static int listed(const char *list, const char *cn)
{
    size_t n = strlen(cn);
    for (const char *p = list; p && *p;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && strncmp(p, cn, n) == 0)
            return 1;
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* A Hello name that may extend a shared certificate's identity: 1..64 of
 * [A-Za-z0-9._-], so identities stay printable and unambiguous in logs and
 * the database. */
static int good_hello_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

static void on_hello(fl__client_t *c, const Fedopt__Hello *h)
{
    fl__daemon_t *d = c->d;
    const char *peer = fl_tls_conn_peer(c->conn);
    /* The identity is the certificate's name; only without client
     * certificates (an explicit, logged option) does the Hello's name count.
     * A certificate listed in shared_certs serves many clients (one fleet
     * certificate): each is identified as CN/hello-name. */
    char shared[FL_CERTS_NAME_MAX + 72];
    const char *name = peer && peer[0] ? peer : h->client_name && h->client_name[0] ? h->client_name
                                                                                     : fl_tls_conn_addr(c->conn);
    if (peer && peer[0] && listed(d->cfg->shared_certs, peer)) {
        if (!good_hello_name(h->client_name)) {
            FL_LOG_W(WHO, "%s (%s): shared certificate without a valid client name in Hello: rejected", peer,
                     fl_tls_conn_addr(c->conn));
            send_reject(c, FL_EINVAL, "a shared certificate needs a client name of 1-64 [A-Za-z0-9._-]");
            return;
        }
        snprintf(shared, sizeof shared, "%s/%s", peer, h->client_name);
        name = shared;
    }
    if (h->protocol_version != FL_PROTOCOL_VERSION) {
        FL_LOG_W(WHO, "%s (%s): protocol version %u, server speaks %u: rejected", name, fl_tls_conn_addr(c->conn),
                 h->protocol_version, FL_PROTOCOL_VERSION);
        send_reject(c, FL_EUNSUPPORTED, "protocol version mismatch");
        return;
    }
    if (h->n_models > 0) {
        int ok = 0;
        for (size_t i = 0; i < h->n_models; i++)
            ok |= h->models[i] && strcmp(h->models[i], d->cfg->model) == 0;
        if (!ok) {
            FL_LOG_W(WHO, "%s: cannot train model %s: rejected", name, d->cfg->model);
            send_reject(c, FL_EUNSUPPORTED, "this server trains a model the client does not have");
            return;
        }
    }
    if (find_client(d, name)) {
        FL_LOG_W(WHO, "%s (%s): already connected under this name: rejected", name, fl_tls_conn_addr(c->conn));
        send_reject(c, FL_EEXIST, "a client with this identity is already connected");
        return;
    }
    if (!(c->name = strdup(name))) {
        send_reject(c, FL_ENOMEM, "server out of memory");
        return;
    }
    c->welcomed = 1;
    c->max_frame = h->max_frame;
    c->holds = h->num_examples;
    Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
    w.protocol_version = FL_PROTOCOL_VERSION;
    w.server_name = "fedopt-server " FL_VERSION;
    w.max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    w.heartbeat_ms = (uint32_t)(d->cfg->heartbeat * 1000);
    w.peer_identity = c->name;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_WELCOME;
    env.welcome = &w;
    fl_tls_conn_send_msg(c->conn, &env);
    /* Deltas are the model's size; anything larger is refused by the
     * transport before it is buffered. */
    fl_tls_conn_set_max_tensor(c->conn, (uint64_t)d->numel * sizeof(float));
    FL_LOG_I(WHO, "%s connected from %s (%s, %llu examples)", c->name, fl_tls_conn_addr(c->conn),
             fl_tls_conn_suite(c->conn), (unsigned long long)h->num_examples);
    if (d->phase == PH_WAITING)
        try_start_round(d);
}

/* ---- upload buffer slots ------------------------------------------------- */

static void wait_remove(fl__daemon_t *d, fl__client_t *c)
{
    fl__client_t **p = &d->wait_head, *prev = NULL;
    while (*p && *p != c) {
        prev = *p;
        p = &(*p)->wait_next;
    }
    if (*p) {
        *p = c->wait_next;
        if (d->wait_tail == c)
            d->wait_tail = prev;
        c->wait_next = NULL;
    }
}

/* Gives freed slots to the uploads waiting for one, oldest first. */
static void release_slot(fl__daemon_t *d)
{
    d->slots_used--;
    while (d->wait_head && d->slots_used < (size_t)d->cfg->max_buffered_uploads) {
        fl__client_t *c = d->wait_head;
        d->wait_head = c->wait_next;
        if (!d->wait_head)
            d->wait_tail = NULL;
        c->wait_next = NULL;
        c->up = U_RECEIVING;
        d->slots_used++;
        fl_tls_conn_resume_read(c->conn);
    }
}

static void on_update(fl__client_t *c, const Fedopt__Update *u)
{
    fl__daemon_t *d = c->d;
    if (c->up != U_NONE) {
        /* The transport's sequence check makes this unreachable from a
         * well-formed stream; treat it as a protocol error anyway. */
        FL_LOG_W(WHO, "%s: a second Update before the first one's delta: closing", c->name);
        fl_tls_conn_close(c->conn);
        return;
    }
    c->up_round = (int64_t)u->round_id;
    c->up_weight = u->weight > 0 ? u->weight : (double)u->num_examples;
    c->up_loss = u->train_loss;
    if (d->slots_used < (size_t)d->cfg->max_buffered_uploads) {
        c->up = U_RECEIVING;
        d->slots_used++;
    } else {
        /* Every buffer is taken: stop reading this connection, so its delta
         * waits in the kernel and the client's TCP window. */
        c->up = U_WAIT_SLOT;
        FL_LOG_D(WHO, "%s: upload waits for a buffer (%zu in use)", c->name, d->slots_used);
        fl_tls_conn_pause_read(c->conn);
        if (d->wait_tail)
            d->wait_tail->wait_next = c;
        else
            d->wait_head = c;
        d->wait_tail = c;
    }
}

static void on_delta(fl__client_t *c, fl_wire_event_t *ev)
{
    fl__daemon_t *d = c->d;
    double now = now_s();
    int64_t bytes = (int64_t)ev->nbytes;
    if (c->up != U_RECEIVING) {
        FL_LOG_W(WHO, "%s: delta without an Update: closing", c->name);
        fl_tls_conn_close(c->conn);
        return;
    }
    c->up = U_NONE;
    size_t n = ev->nbytes / sizeof(float);
    fl_refuse_t why = ev->nbytes % sizeof(float) ? FL_REFUSE_SHAPE
                                                 : fl_round_check(d->round, c->name, c->up_round, n, c->up_weight);
    if (why != FL_REFUSE_NONE || (int64_t)ev->round_id != c->up_round) {
        if (why == FL_REFUSE_NONE)
            why = FL_REFUSE_MALFORMED;
        FL_LOG_I(WHO, "%s: update for round %lld refused: %s", c->name, (long long)c->up_round,
                 fl_round_refuse_text(why));
        fl_round_refuse(d->round, c->name, why, bytes, now);
        release_slot(d);
        maybe_close_round(d);
        return;
    }
    fl__job_t *j = calloc(1, sizeof *j);
    if (!j || !(j->name = strdup(c->name))) {
        free(j);
        fl_round_refuse(d->round, c->name, FL_REFUSE_MALFORMED, bytes, now);
        release_slot(d);
        return;
    }
    fl_round_add_start(d->round, c->name);
    j->delta = (float *)ev->data; /* the slot now belongs to the job */
    ev->data = NULL;
    j->n = n;
    j->weight = c->up_weight;
    j->loss = c->up_loss;
    j->bytes = bytes;
    j->received_at = now;
    if (d->jobs_tail)
        d->jobs_tail->next = j;
    else
        d->jobs_head = j;
    d->jobs_tail = j;
    kick_aggregation(d);
}

static void on_message(fl_tls_conn_t *conn, fl_wire_event_t *ev, void *ud)
{
    fl__client_t *c = fl_tls_conn_data(conn);
    if (!c)
        return;
    c->last_seen = now_s();
    if (ev->kind == FL_WIRE_EV_TENSOR) {
        if (ev->purpose == FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA && c->welcomed)
            on_delta(c, ev);
        else
            fl_tls_conn_close(conn);
        return;
    }
    if (ev->kind != FL_WIRE_EV_MESSAGE || !ev->msg)
        return;
    const Fedopt__Envelope *m = ev->msg;
    if (!c->welcomed && m->msg_case != FEDOPT__ENVELOPE__MSG_HELLO) {
        fl_tls_conn_close(conn);
        return;
    }
    switch (m->msg_case) {
    case FEDOPT__ENVELOPE__MSG_HELLO:
        if (c->welcomed)
            fl_tls_conn_close(conn);
        else
            on_hello(c, m->hello);
        break;
    case FEDOPT__ENVELOPE__MSG_UPDATE:
        on_update(c, m->update);
        break;
    case FEDOPT__ENVELOPE__MSG_TASK_REPLY:
        if (!m->task_reply->accept && c->d->phase == PH_FEDEVAL &&
            (int64_t)m->task_reply->round_id == fl_fedeval_round(c->d->fe)) {
            /* A client busy with something else says so instead of
             * letting the evaluation's deadline pass. */
            FL_LOG_I(WHO, "%s declined the evaluation of round %llu: %s", c->name,
                     (unsigned long long)m->task_reply->round_id, m->task_reply->reason ? m->task_reply->reason : "");
            fl_fedeval_drop(c->d->fe, c->name, "declined", c->last_seen);
            maybe_close_fedeval(c->d);
        } else if (!m->task_reply->accept && (int64_t)m->task_reply->round_id == fl_round_number(c->d->round)) {
            FL_LOG_I(WHO, "%s declined round %llu: %s", c->name, (unsigned long long)m->task_reply->round_id,
                     m->task_reply->reason ? m->task_reply->reason : "");
            fl_round_drop(c->d->round, c->name, "declined", c->last_seen);
            maybe_close_round(c->d);
        }
        break;
    case FEDOPT__ENVELOPE__MSG_EVAL_RESULT:
        on_eval_result(c, m->eval_result);
        break;
    case FEDOPT__ENVELOPE__MSG_HEARTBEAT:
        break;
    case FEDOPT__ENVELOPE__MSG_ERROR:
        FL_LOG_W(WHO, "%s reports error %d: %s", c->name, m->error->code, m->error->message ? m->error->message : "");
        break;
    case FEDOPT__ENVELOPE__MSG_BYE:
        fl_tls_conn_close(conn);
        break;
    default:
        fl_tls_conn_close(conn);
        break;
    }
}

static void on_open(fl_tls_conn_t *conn, void *ud)
{
    fl__daemon_t *d = ud;
    fl__client_t *c = calloc(1, sizeof *c);
    if (!c || d->stopping) {
        free(c);
        fl_tls_conn_close(conn);
        return;
    }
    c->d = d;
    c->conn = conn;
    c->last_seen = now_s();
    c->next = d->clients;
    if (d->clients)
        d->clients->prev = c;
    d->clients = c;
    d->nclients++;
    fl_tls_conn_set_data(conn, c);
}

static void on_close(fl_tls_conn_t *conn, int reason, void *ud)
{
    fl__daemon_t *d = ud;
    fl__client_t *c = fl_tls_conn_data(conn);
    if (!c)
        return;
    fl_tls_conn_set_data(conn, NULL);
    if (c->welcomed) {
        const char *why = c->up == U_RECEIVING || c->up == U_WAIT_SLOT ? "disconnected mid-upload" : "disconnected";
        if (reason)
            FL_LOG_I(WHO, "%s disconnected: %s", c->name, fl_strerror(reason));
        else
            FL_LOG_D(WHO, "%s disconnected", c->name);
        fl_round_drop(d->round, c->name, why, now_s());
        fl_fedeval_drop(d->fe, c->name, "disconnected", now_s());
    }
    if (c->up == U_RECEIVING)
        release_slot(d);
    else if (c->up == U_WAIT_SLOT)
        wait_remove(d, c);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    d->nclients--;
    free(c->name);
    free(c);
    maybe_close_round(d);
    maybe_close_fedeval(d);
}

/* ---- aggregation in the thread pool ------------------------------------- */

static void agg_work_cb(uv_work_t *w)
{
    fl__daemon_t *d = w->data;
    const float *deltas[FL_SERVEROPT_MAX_BATCH];
    double weight[FL_SERVEROPT_MAX_BATCH], norm[FL_SERVEROPT_MAX_BATCH];
    int rc[FL_SERVEROPT_MAX_BATCH];
    size_t count = 0, n = 0;
    for (fl__job_t *j = d->job_running; j; j = j->next) {
        deltas[count] = j->delta;
        weight[count] = j->weight;
        n = j->n;
        count++;
    }
    /* Every job of a batch has the model's size: wrong-shape uploads are
     * refused by fl_round_check before they become jobs. */
    int brc = fl_agg_add_batch(d->agg, d->opt, deltas, weight, count, n, rc, norm);
    size_t i = 0;
    for (fl__job_t *j = d->job_running; j; j = j->next, i++) {
        j->rc = brc ? brc : rc[i];
        j->norm = brc ? NAN : norm[i];
    }
}

static void agg_after_cb(uv_work_t *w, int status)
{
    fl__daemon_t *d = w->data;
    fl__job_t *batch = d->job_running;
    d->job_running = NULL;
    for (fl__job_t *j = batch, *next; j; j = next) {
        next = j->next;
        if (status == UV_ECANCELED)
            j->rc = FL_ECANCELED;
        if (fl_round_number(d->round)) {
            fl_round_add_end(d->round, j->name, j->rc, j->weight, j->loss, j->norm, j->bytes,
                             j->received_at);
            if (j->rc)
                FL_LOG_I(WHO, "%s: update refused: %s", j->name, fl_strerror(j->rc));
        }
        free(j->delta);
        free(j->name);
        free(j);
        release_slot(d);
    }
    kick_aggregation(d);
    maybe_close_round(d);
}

/* Starts the aggregation worker on every upload queued so far (up to
 * FL_SERVEROPT_MAX_BATCH): uploads that arrived while the previous batch was
 * being added are folded in one pass over the accumulator. */
static void kick_aggregation(fl__daemon_t *d)
{
    if (d->job_running || !d->jobs_head)
        return;
    fl__job_t *batch = NULL, **tail = &batch;
    for (size_t k = 0; k < FL_SERVEROPT_MAX_BATCH && d->jobs_head; k++) {
        fl__job_t *j = d->jobs_head;
        d->jobs_head = j->next;
        j->next = NULL;
        *tail = j;
        tail = &j->next;
    }
    if (!d->jobs_head)
        d->jobs_tail = NULL;
    d->job_running = batch;
    d->agg_work.data = d;
    if (uv_queue_work(&d->loop, &d->agg_work, agg_work_cb, agg_after_cb)) {
        /* Cannot happen with a valid loop; run it here rather than lose it. */
        agg_work_cb(&d->agg_work);
        agg_after_cb(&d->agg_work, 0);
    }
}

/* ---- rounds ------------------------------------------------------------- */

static void log_waiting(fl__daemon_t *d, size_t have)
{
    char missing[512] = "";
    size_t len = 0, nmiss = 0;
    for (size_t i = 0; i < d->nlast_selected; i++)
        if (!find_client(d, d->last_selected[i])) {
            nmiss++;
            if (len < sizeof missing - 64)
                len += (size_t)snprintf(missing + len, sizeof missing - len, "%s%s", nmiss > 1 ? ", " : "",
                                        d->last_selected[i]);
        }
    FL_LOG_I(WHO, "round %lld waits for clients: %zu connected, %lld needed%s%s%s", (long long)d->round_no, have,
             (long long)d->cfg->min_clients, nmiss ? " (gone since the last round: " : "", missing,
             nmiss ? ")" : "");
}

static void try_start_round(fl__daemon_t *d)
{
    if (d->phase != PH_WAITING || d->stopping)
        return;
    double now = now_s();
    size_t have = 0;
    for (fl__client_t *c = d->clients; c; c = c->next)
        have += c->welcomed;
    if (have < (size_t)d->cfg->min_clients) {
        /* Say who is missing when the count changes, and every 30 s anyway,
         * so a stuck server is never silent but never floods the log. */
        if (have != d->wait_logged_have || now - d->wait_logged >= 30 || d->wait_logged == 0) {
            log_waiting(d, have);
            d->wait_logged = now;
            d->wait_logged_have = have;
        }
        if (d->cfg->wait_timeout > 0 && now - d->wait_since > d->cfg->wait_timeout) {
            FL_LOG_E(WHO, "gave up after waiting %.0f s for %lld clients", d->cfg->wait_timeout,
                     (long long)d->cfg->min_clients);
            d->failed = 1;
            stop_all(d);
        }
        return;
    }
    const char **names = malloc(have * sizeof *names);
    fl__client_t **conns = malloc(have * sizeof *conns);
    int rc = FL_ENOMEM;
    fl_buf_t *model = NULL;
    if (!names || !conns)
        goto fail;
    size_t k = 0;
    for (fl__client_t *c = d->clients; c; c = c->next)
        if (c->welcomed) {
            conns[k] = c;
            names[k++] = c->name;
        }
    if (d->fe_due) {
        /* The last committed round's model is evaluated before the next
         * round starts (the clients are idle, and the model is the one the
         * round committed, also after a resume). */
        start_fedeval(d, conns, names, have, now);
        free(names);
        free(conns);
        return;
    }
    if (d->rdp && d->cfg->dp_target_epsilon > 0) {
        /* Never start a round whose release would take epsilon past the
         * target: the selection's rate is known before it is drawn. */
        double want = ceil((double)d->cfg->clients_per_round * d->cfg->over_selection - 1e-9), next;
        double q = (want < (double)have ? want : (double)have) / (double)have;
        if (fl_rdp_peek_epsilon(d->rdp, q, d->cfg->dp_noise_multiplier, 1, d->cfg->dp_delta, &next) == 0 &&
            next > d->cfg->dp_target_epsilon) {
            FL_LOG_I(WHO, "round %lld would take epsilon to %.4f, past dp_target_epsilon %g: run %lld ends here",
                     (long long)d->round_no, next, d->cfg->dp_target_epsilon, (long long)d->run_id);
            free(names);
            free(conns);
            fl_store_run_set_status(d->store, d->run_id, "finished");
            d->phase = PH_DONE;
            d->finished = 1;
            stop_all(d);
            return;
        }
    }
    if ((rc = fl_round_begin(d->round, d->round_no, names, have, d->opt, now)))
        goto fail;
    fl_agg_begin(d->agg);
    d->round_q = (double)fl_round_selected_count(d->round) / (double)have;
    size_t nsel = fl_round_selected_count(d->round);
    uint32_t chunk = FL_WIRE_MAX_CHUNK; /* see admit_chunk */
    for (size_t i = 0; i < nsel; i++)
        chunk = admit_chunk(find_client(d, fl_round_selected_name(d->round, i)), chunk);
    if ((rc = fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL, (uint64_t)d->round_no, d->x,
                                    d->numel * sizeof(float), chunk, &model)))
        goto fail;
    Fedopt__ClientOptSettings os = FEDOPT__CLIENT_OPT_SETTINGS__INIT;
    os.learning_rate = (float)fl_lr_schedule_at(&d->cfg->lr_schedule, (uint64_t)(d->round_no - 1));
    os.epochs = (uint32_t)d->cfg->local_epochs;
    os.batch_size = (uint32_t)d->cfg->batch_size;
    os.max_steps = (uint32_t)d->cfg->max_steps;
    os.seed = d->cfg->seed;
    os.momentum = (float)d->cfg->client_momentum;
    os.weight_decay = (float)d->cfg->client_weight_decay;
    Fedopt__TaskOffer offer = FEDOPT__TASK_OFFER__INIT;
    offer.run_id = (uint64_t)d->run_id;
    offer.round_id = (uint64_t)d->round_no;
    offer.model = d->cfg->model;
    offer.num_params = d->numel;
    offer.opt = &os;
    offer.deadline_ms = (uint32_t)fmin(d->cfg->round_deadline * 1000, 4e9);
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    env.task_offer = &offer;
    for (size_t i = 0; i < nsel; i++) {
        fl__client_t *c = find_client(d, fl_round_selected_name(d->round, i));
        offer.client_index = (uint32_t)i;
        if (!c || fl_tls_conn_send_msg(c->conn, &env) || fl_tls_conn_send(c->conn, model)) {
            fl_round_drop(d->round, fl_round_selected_name(d->round, i), "send failed", now);
            continue;
        }
        c->task_sent_at = now;
        fl_round_add_bytes_out(d->round, (int64_t)model->len + 64);
    }
    fl_buf_unref(model); /* the connections hold their own references */
    /* Remember who was selected, to name the missing ones if a later round waits. */
    for (size_t i = 0; i < d->nlast_selected; i++)
        free(d->last_selected[i]);
    free(d->last_selected);
    d->nlast_selected = 0;
    if ((d->last_selected = malloc(nsel * sizeof *d->last_selected)))
        for (size_t i = 0; i < nsel; i++)
            if ((d->last_selected[d->nlast_selected] = strdup(fl_round_selected_name(d->round, i))))
                d->nlast_selected++;
    FL_LOG_D(WHO, "round %lld: %zu of %zu clients selected", (long long)d->round_no, nsel, have);
    d->phase = PH_ROUND;
    free(names);
    free(conns);
    maybe_close_round(d); /* every send may have failed */
    return;
fail:
    free(names);
    free(conns);
    fl_buf_unref(model);
    if (fl_round_number(d->round)) {
        /* The round opened but cannot be dispatched: close it as abandoned
         * so the bookkeeping stays consistent, and stop. */
        fl_store_round_t row;
        const fl_store_update_t *ups;
        size_t nups;
        int closed;
        fl_round_close(d->round, now, &row, &ups, &nups, &closed);
    }
    FL_LOG_E(WHO, "cannot start round %lld: %s", (long long)d->round_no, fl_strerror(rc));
    d->failed = 1;
    stop_all(d);
}

static void commit_work_cb(uv_work_t *w)
{
    fl__daemon_t *d = w->data;
    uint8_t *state = NULL;
    size_t state_len = 0;
    int rc = 0;
    d->evaluated = 0;
    d->row.privacy = NULL;
    if (d->row_closed) {
        double clip = fl_agg_clip_bound(d->agg), within = fl_agg_clip_within(d->agg);
        if ((rc = fl_agg_finish(d->agg, d->opt, d->x, d->numel, &d->opt_res)))
            goto out;
        if (clip > 0 || d->rdp) {
            d->priv = (fl_store_privacy_t){clip > 0 ? clip : NAN, clip > 0 ? within : NAN, NAN, NAN, NAN, NAN};
            if (d->rdp) {
                /* the round's noised sum is released: account for it */
                if ((rc = fl_rdp_add(d->rdp, d->round_q, d->cfg->dp_noise_multiplier, 1)) ||
                    (rc = fl_rdp_get_epsilon(d->rdp, d->cfg->dp_delta, &d->eps, NULL)))
                    goto out;
                d->priv.dp_q = d->round_q;
                d->priv.dp_noise_multiplier = d->cfg->dp_noise_multiplier;
                d->priv.dp_delta = d->cfg->dp_delta;
                d->priv.dp_epsilon = d->eps;
            }
            d->row.privacy = &d->priv;
        }
        if ((rc = fl_serveropt_state_save(d->opt, &state, &state_len)))
            goto out;
    }
    int64_t every = d->cfg->eval_every;
    if (d->eval && every > 0 && (d->row.round % every == 0 || d->row.round == d->cfg->rounds)) {
        double loss, metric;
        if (fl_eval_run(d->eval, d->x, d->numel, &loss, &metric) == 0) {
            d->row.eval_loss = loss;
            d->row.eval_accuracy = metric;
            d->evaluated = 1;
        }
    }
    rc = fl_store_commit_round(d->store, &d->row, d->ups, d->nups, d->row_closed ? d->x : NULL, d->numel, state,
                               state_len, d->cfg->keep_checkpoints);
    if (rc == 0 && d->fe_encode) {
        /* The federated evaluation's model transfer, encoded here rather than
         * on the loop (a CRC and a copy of the whole model). A failure only
         * costs the loop doing it later. */
        if (fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_EVAL_MODEL, (uint64_t)d->row.round, d->x,
                                  d->numel * sizeof(float), d->fe_chunk, &d->fe_model) == 0)
            d->fe_model_round = d->row.round;
    }
out:
    free(state);
    d->commit_rc = rc;
}

static void fmt_num(char *buf, size_t len, const char *label, double v)
{
    if (isfinite(v))
        snprintf(buf, len, " %s %.4f", label, v);
    else
        buf[0] = 0;
}

static void commit_after_cb(uv_work_t *w, int status)
{
    fl__daemon_t *d = w->data;
    if (status || d->commit_rc) {
        FL_LOG_E(WHO, "round %lld: cannot commit: %s", (long long)d->row.round,
                 fl_strerror(status ? FL_ECANCELED : d->commit_rc));
        d->failed = 1;
        d->phase = PH_WAITING;
        d->fe_encode = 0;
        stop_all(d);
        return;
    }
    char tl[48], el[48], ea[48], pv[64] = "";
    if (d->row.privacy && isfinite(d->priv.clip_norm))
        snprintf(pv, sizeof pv, " clip %.4g", d->priv.clip_norm);
    if (d->row.privacy && isfinite(d->priv.dp_epsilon))
        snprintf(pv + strlen(pv), sizeof pv - strlen(pv), " eps %.4f", d->priv.dp_epsilon);
    fmt_num(tl, sizeof tl, "train_loss", d->row.train_loss);
    fmt_num(el, sizeof el, "eval_loss", d->row.eval_loss);
    fmt_num(ea, sizeof ea, "eval_acc", d->row.eval_accuracy);
    snprintf(d->line, sizeof d->line, "round %lld/%lld %s: selected %lld reported %lld dropped %lld,%s%s%s%s, %.2f s",
             (long long)d->row.round, (long long)d->cfg->rounds, d->row.status, (long long)d->row.clients_selected,
             (long long)d->row.clients_reported, (long long)d->row.clients_dropped, tl[0] ? tl : " no train_loss",
             el, ea, pv, d->row.finished_at - d->row.started_at);
    d->round_no = d->row.round + 1;
    d->phase = PH_WAITING;
    d->wait_since = now_s();
    d->wait_logged = 0;
    if (d->fe_encode && !d->stopping) {
        /* The progress line waits for the federated metrics. */
        d->fe_encode = 0;
        d->fe_due = d->row.round;
        d->line_pending = 1;
        try_start_round(d);
        return;
    }
    d->fe_encode = 0;
    fl_buf_unref(d->fe_model);
    d->fe_model = NULL;
    fl_log(FL_LOG_INFO, WHO, "%s", d->line);
    round_done(d);
}

/* After a round (and its federated evaluation): the next round, the end of
 * the run, or the stop. */
static void round_done(fl__daemon_t *d)
{
    d->phase = PH_WAITING;
    d->wait_since = now_s();
    d->wait_logged = 0;
    if (d->round_no > d->cfg->rounds) {
        fl_store_run_set_status(d->store, d->run_id, "finished");
        FL_LOG_I(WHO, "run %lld finished after %lld rounds", (long long)d->run_id, (long long)d->cfg->rounds);
        d->phase = PH_DONE;
        d->finished = 1;
        stop_all(d);
        return;
    }
    if (d->stopping) {
        stop_all(d);
        return;
    }
    try_start_round(d);
}

static void maybe_close_round(fl__daemon_t *d)
{
    if (d->phase != PH_ROUND || d->job_running || d->jobs_head)
        return;
    double now = now_s();
    if (d->stopping) {
        /* Abandon the open round: nothing of it is committed, so --resume
         * redoes it from the last checkpoint. */
        fl_store_round_t row;
        const fl_store_update_t *ups;
        size_t nups;
        int closed;
        fl_round_close(d->round, now, &row, &ups, &nups, &closed);
        FL_LOG_I(WHO, "round %lld aborted by the stop; it will be redone on --resume", (long long)d->round_no);
        d->phase = PH_WAITING;
        stop_all(d);
        return;
    }
    if (!fl_round_is_complete(d->round) && !fl_round_deadline_passed(d->round, now))
        return;
    if (fl_round_close(d->round, now, &d->row, &d->ups, &d->nups, &d->row_closed))
        return;
    if (!d->row_closed)
        FL_LOG_W(WHO, "round %lld abandoned: %lld accepted updates, %lld needed", (long long)d->row.round,
                 (long long)d->row.clients_reported, (long long)d->cfg->min_reports);
    d->phase = PH_COMMITTING;
    /* A federated evaluation follows this round's commit: the commit worker
     * encodes its model, in a chunk size every connected client admits. */
    int64_t fe_every = d->cfg->fed_eval_every;
    d->fe_encode = d->fe && fe_every > 0 && (d->row.round % fe_every == 0 || d->row.round == d->cfg->rounds);
    if (d->fe_encode) {
        d->fe_chunk = FL_WIRE_MAX_CHUNK;
        for (fl__client_t *c = d->clients; c; c = c->next)
            d->fe_chunk = admit_chunk(c, d->fe_chunk);
    }
    d->commit_work.data = d;
    if (uv_queue_work(&d->loop, &d->commit_work, commit_work_cb, commit_after_cb)) {
        commit_work_cb(&d->commit_work);
        commit_after_cb(&d->commit_work, 0);
    }
}

/* ---- federated evaluation ------------------------------------------------ */

/* Sends the model of round d->fe_due with an EvalRequest to a sample of the
 * connected clients (conns/names: the `have` welcomed ones). */
static void start_fedeval(fl__daemon_t *d, fl__client_t **conns, const char **names, size_t have, double now)
{
    int64_t round = d->fe_due;
    uint64_t *holds = malloc(have * sizeof *holds);
    int rc = FL_ENOMEM;
    if (!holds)
        goto fail;
    for (size_t i = 0; i < have; i++)
        holds[i] = conns[i]->holds;
    rc = fl_fedeval_begin(d->fe, round, names, holds, have, now);
    free(holds);
    if (rc)
        goto fail;
    size_t nsel = fl_fedeval_selected_count(d->fe);
    uint32_t chunk = FL_WIRE_MAX_CHUNK;
    for (size_t i = 0; i < nsel; i++)
        chunk = admit_chunk(find_client(d, fl_fedeval_selected_name(d->fe, i)), chunk);
    /* The commit worker encoded the transfer; after a resume, or for a
     * client that admits only smaller frames than it assumed, the loop
     * encodes it here (rare, once per evaluation). */
    if (d->fe_model && (d->fe_model_round != round || chunk < d->fe_chunk)) {
        fl_buf_unref(d->fe_model);
        d->fe_model = NULL;
    }
    if (!d->fe_model) {
        if ((rc = fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_EVAL_MODEL, (uint64_t)round, d->x,
                                        d->numel * sizeof(float), chunk, &d->fe_model)))
            goto fail;
        d->fe_model_round = round;
    }
    Fedopt__EvalRequest er = FEDOPT__EVAL_REQUEST__INIT;
    er.run_id = (uint64_t)d->run_id;
    er.round_id = (uint64_t)round;
    er.model = d->cfg->model;
    er.num_params = d->numel;
    er.batch_size = 0; /* the client's default */
    er.max_examples = (uint32_t)d->cfg->fed_eval_max_examples;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_EVAL_REQUEST;
    env.eval_request = &er;
    for (size_t i = 0; i < nsel; i++) {
        const char *name = fl_fedeval_selected_name(d->fe, i);
        fl__client_t *c = find_client(d, name);
        if (!c || fl_tls_conn_send_msg(c->conn, &env) || fl_tls_conn_send(c->conn, d->fe_model))
            fl_fedeval_drop(d->fe, name, "send failed", now);
    }
    /* The connections hold their own references to the transfer. */
    fl_buf_unref(d->fe_model);
    d->fe_model = NULL;
    FL_LOG_D(WHO, "round %lld: federated evaluation on %zu of %zu clients", (long long)round, nsel, have);
    d->phase = PH_FEDEVAL;
    maybe_close_fedeval(d);
    return;
fail:
    /* An evaluation that cannot start costs its metrics, never the run. */
    FL_LOG_W(WHO, "round %lld: federated evaluation not started: %s", (long long)round, fl_strerror(rc));
    fl_buf_unref(d->fe_model);
    d->fe_model = NULL;
    d->fe_due = 0;
    if (d->line_pending) {
        fl_log(FL_LOG_INFO, WHO, "%s", d->line);
        d->line_pending = 0;
    }
    round_done(d);
}

static void fe_work_cb(uv_work_t *w)
{
    fl__daemon_t *d = w->data;
    d->fe_rc = fl_store_commit_fedeval(d->store, &d->fe_row, d->fe_res, d->fe_nres);
}

static void fe_after_cb(uv_work_t *w, int status)
{
    fl__daemon_t *d = w->data;
    const fl_store_fedeval_t *r = &d->fe_row;
    if (status || d->fe_rc) {
        FL_LOG_E(WHO, "round %lld: cannot commit the federated evaluation: %s", (long long)r->round,
                 fl_strerror(status ? FL_ECANCELED : d->fe_rc));
        d->failed = 1;
        d->fe_due = 0;
        d->phase = PH_WAITING;
        if (d->line_pending)
            fl_log(FL_LOG_INFO, WHO, "%s", d->line);
        d->line_pending = 0;
        stop_all(d);
        return;
    }
    char fl[48], fa[48];
    fmt_num(fl, sizeof fl, "fed_loss", r->loss);
    fmt_num(fa, sizeof fa, "fed_acc", r->accuracy);
    char what[160];
    snprintf(what, sizeof what, "%s%s (%lld/%lld clients, %.0f examples, %.2f s)", fl[0] ? fl : " no fed_loss", fa,
             (long long)r->clients_reported, (long long)r->clients_selected, r->examples,
             r->finished_at - r->started_at);
    if (d->line_pending)
        fl_log(FL_LOG_INFO, WHO, "%s;%s", d->line, what);
    else
        fl_log(FL_LOG_INFO, WHO, "round %lld federated evaluation:%s", (long long)r->round, what);
    d->line_pending = 0;
    d->fe_due = 0;
    round_done(d);
}

/* Closes the open federated evaluation once every sampled client answered
 * (or dropped) or its deadline passed, and commits it in a worker. */
static void maybe_close_fedeval(fl__daemon_t *d)
{
    if (d->phase != PH_FEDEVAL)
        return;
    double now = now_s();
    if (d->stopping) {
        /* Nothing of it is recorded: --resume evaluates the same model again. */
        fl_fedeval_abort(d->fe);
        FL_LOG_I(WHO, "round %lld: federated evaluation aborted by the stop", (long long)d->fe_due);
        d->fe_due = 0;
        if (d->line_pending)
            fl_log(FL_LOG_INFO, WHO, "%s", d->line);
        d->line_pending = 0;
        d->phase = PH_WAITING;
        stop_all(d);
        return;
    }
    if (!fl_fedeval_is_complete(d->fe) && !fl_fedeval_deadline_passed(d->fe, now))
        return;
    if (fl_fedeval_close(d->fe, now, &d->fe_row, &d->fe_res, &d->fe_nres))
        return;
    d->phase = PH_FEDEVAL_COMMIT;
    d->fe_work.data = d;
    if (uv_queue_work(&d->loop, &d->fe_work, fe_work_cb, fe_after_cb)) {
        fe_work_cb(&d->fe_work);
        fe_after_cb(&d->fe_work, 0);
    }
}

static void on_eval_result(fl__client_t *c, const Fedopt__EvalResult *r)
{
    fl__daemon_t *d = c->d;
    if (d->phase != PH_FEDEVAL) {
        FL_LOG_I(WHO, "%s: evaluation result for round %llu outside an evaluation: ignored", c->name,
                 (unsigned long long)r->round_id);
        return;
    }
    fl_fedeval_verdict_t v =
        fl_fedeval_answer(d->fe, c->name, (int64_t)r->round_id, r->num_examples, r->loss, r->accuracy, now_s());
    if (v != FL_FEDEVAL_OK)
        FL_LOG_I(WHO, "%s: evaluation result for round %llu refused: %s (examples %llu, loss %g, accuracy %g)",
                 c->name, (unsigned long long)r->round_id, fl_fedeval_verdict_text(v),
                 (unsigned long long)r->num_examples, r->loss, r->accuracy);
    maybe_close_fedeval(d);
}

/* ---- timers, signals, stopping ------------------------------------------ */

static void send_heartbeats(fl__daemon_t *d, double now)
{
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    hb.unix_ms = (uint64_t)(now * 1000);
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    fl_buf_t *buf = NULL;
    if (fl_wire_encode(&env, &buf))
        return;
    for (fl__client_t *c = d->clients; c; c = c->next) {
        /* A client silent for three heartbeats (and not paused by us) is gone.
         * One in the middle of an upload delivers no message until its delta
         * is complete, so it gets the round deadline if that is longer. */
        double limit = 3 * d->cfg->heartbeat;
        if (c->up == U_RECEIVING && d->cfg->round_deadline > limit)
            limit = d->cfg->round_deadline;
        if (c->up != U_WAIT_SLOT && now - c->last_seen > limit) {
            FL_LOG_I(WHO, "%s: silent for %.1f s: dropping", c->name ? c->name : fl_tls_conn_addr(c->conn),
                     now - c->last_seen);
            if (c->welcomed) {
                fl_round_drop(d->round, c->name, "stalled", now);
                fl_fedeval_drop(d->fe, c->name, "stalled", now);
            }
            fl_tls_conn_close(c->conn);
            continue;
        }
        if (c->welcomed)
            fl_tls_conn_send(c->conn, buf);
    }
    fl_buf_unref(buf);
}

static void on_tick(uv_timer_t *t)
{
    fl__daemon_t *d = t->data;
    double now = now_s();
    if (now - d->last_heartbeat >= d->cfg->heartbeat) {
        d->last_heartbeat = now;
        send_heartbeats(d, now);
    }
    if (d->phase == PH_WAITING)
        try_start_round(d);
    else if (d->phase == PH_ROUND)
        maybe_close_round(d);
    else if (d->phase == PH_FEDEVAL)
        maybe_close_fedeval(d);
}

static void on_signal(uv_signal_t *s, int signum)
{
    fl__daemon_t *d = s->data;
    if (d->stopping)
        return;
    FL_LOG_I(WHO, "%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    d->stopping = 1;
    if (d->server) {
        fl_tls_server_close(d->server);
        d->server = NULL;
    }
    if (d->phase == PH_WAITING) {
        if (d->line_pending)
            fl_log(FL_LOG_INFO, WHO, "%s", d->line);
        d->line_pending = 0;
        d->fe_due = 0;
        stop_all(d);
    } else if (d->phase == PH_ROUND)
        maybe_close_round(d);
    else if (d->phase == PH_FEDEVAL)
        maybe_close_fedeval(d);
    /* PH_COMMITTING, PH_FEDEVAL_COMMIT: the commit finishes first, then its
     * after-callback stops. */
}

/* Ends the loop: says Bye to every client and closes every handle. */
static void stop_all(fl__daemon_t *d)
{
    if (d->phase == PH_ROUND || d->phase == PH_COMMITTING || d->phase == PH_FEDEVAL ||
        d->phase == PH_FEDEVAL_COMMIT)
        return; /* called again once the round (or evaluation) is closed or committed */
    d->stopping = 1;
    if (d->phase != PH_DONE && !d->failed && d->run_id)
        fl_store_run_set_status(d->store, d->run_id, "stopped");
    else if (d->failed && d->run_id)
        fl_store_run_set_status(d->store, d->run_id, "stopped");
    d->phase = PH_DONE;
    if (d->server) {
        fl_tls_server_close(d->server);
        d->server = NULL;
    }
    for (fl__client_t *c = d->clients; c; c = c->next)
        send_bye(c, d->failed ? "server failed" : d->finished ? "run finished" : "server stopping");
    if (!uv_is_closing((uv_handle_t *)&d->tick)) {
        uv_close((uv_handle_t *)&d->tick, NULL);
        uv_close((uv_handle_t *)&d->sigterm, NULL);
        uv_close((uv_handle_t *)&d->sigint, NULL);
    }
}

/* ---- start-up ------------------------------------------------------------ */

static int parse_listen(const char *s, char *host, size_t hlen, int *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':')
            return FL_ECONFIG;
        if ((size_t)(end - s - 1) >= hlen)
            return FL_ECONFIG;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = 0;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= hlen)
            return FL_ECONFIG;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535 || !colon[1])
        return FL_ECONFIG;
    *port = (int)p;
    return 0;
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

static int check_run_setting(const char *name, void *user)
{
    run_check_t *rc = user;
    char now[4096], was[4096];
    if (fl_server_config_get(rc->cfg, name, now, sizeof now))
        return 0;
    if (fl_store_run_config_value(rc->st, rc->run, name, was, sizeof was))
        return 0; /* a setting the run predates */
    /* JSON gives numbers and booleans back as SQL values: compare by value. */
    double a, b;
    if (strcmp(now, "true") == 0 && strcmp(was, "1") == 0)
        return 0;
    if (strcmp(now, "false") == 0 && strcmp(was, "0") == 0)
        return 0;
    if (strcmp(now, was) == 0 || (is_number(now, &a) && is_number(was, &b) && a == b))
        return 0;
    FL_LOG_E(WHO, "--resume: run %lld was started with %s = '%s', this configuration says '%s'; a run's settings "
                  "cannot change (start a new run, or use the same settings)",
             (long long)rc->run, name, was, now);
    return FL_ECONFIG;
}

/* Builds the model, the optimizer and the run: a new one, or the resumed one
 * restored from its last checkpoint. */
static int setup_run(fl__daemon_t *d)
{
    const fl_server_config_t *cfg = d->cfg;
    int rc;
    if (cfg->eval_data[0] && cfg->eval_every > 0) {
        if ((rc = fl_eval_create(cfg->model, cfg->eval_data, (size_t)cfg->eval_max_examples, &d->eval)))
            return rc;
    }
    const fl_model_info_t *info = fl_models_find(cfg->model);
    if (!info) {
        FL_LOG_E(WHO, "model: unknown model '%s' (fedopt-client models lists them)", cfg->model);
        return FL_ECONFIG;
    }
    fl_model_spec_t spec = d->eval ? *fl_eval_spec(d->eval) : info->paper;
    if ((rc = fl_model_create(cfg->model, &spec, &d->model)))
        return rc;
    d->numel = d->model->params.numel;
    if (!(d->x = malloc(d->numel * sizeof(float))))
        return FL_ENOMEM;
    if ((rc = fl_serveropt_create(&cfg->opt, d->numel, &d->opt)))
        return rc;
    size_t agg_bytes = fl_agg_memory_bytes(&cfg->agg, d->numel);
    if ((double)agg_bytes > (double)cfg->aggregator_memory_mb * 1048576.0) {
        FL_LOG_E(WHO, "aggregator %s with clients_per_round %lld needs %.1f MiB for model %s (%zu parameters), over "
                      "aggregator_memory_mb %lld: raise the budget, lower clients_per_round, or use aggregator = mean",
                 cfg->aggregator, (long long)cfg->clients_per_round, (double)agg_bytes / 1048576.0, cfg->model,
                 d->numel, (long long)cfg->aggregator_memory_mb);
        return FL_ECONFIG;
    }
    if ((rc = fl_agg_create(&cfg->agg, d->numel, &d->agg)))
        return rc;
    if (cfg->dp_noise_multiplier > 0 && (rc = fl_rdp_create(&d->rdp)))
        return rc;
    fl_round_config_t rcfg = {
        .seed = cfg->seed,
        .clients_per_round = (uint32_t)cfg->clients_per_round,
        .min_reports = (uint32_t)cfg->min_reports,
        .over_selection = cfg->over_selection,
        .deadline_s = cfg->round_deadline,
        .numel = d->numel,
    };
    int64_t run = 0;
    int resume = 0;
    if (cfg->resume != FL_RESUME_NO) {
        rc = fl_store_run_resumable(d->store, &run);
        if (rc == 0)
            resume = 1;
        else if (rc == FL_ENOTFOUND && cfg->resume == FL_RESUME_AUTO)
            FL_LOG_I(WHO, "no unfinished run in %s: starting a new one", cfg->db);
        else {
            if (rc == FL_ENOTFOUND)
                FL_LOG_E(WHO, "--resume: no unfinished run in %s", cfg->db);
            return rc;
        }
    }
    if (resume) {
        run_check_t chk = {cfg, d->store, run};
        if ((rc = fl_server_config_each_run_setting(check_run_setting, &chk)))
            return rc;
        fl_store_checkpoint_t cp;
        if ((rc = fl_store_checkpoint_load(d->store, run, -1, &cp)))
            return rc;
        if (cp.numel != d->numel) {
            FL_LOG_E(WHO, "run %lld: checkpoint has %zu parameters, model %s has %zu", (long long)run, cp.numel,
                     cfg->model, d->numel);
            fl_store_checkpoint_free(&cp);
            return FL_ESHAPE;
        }
        memcpy(d->x, cp.model, d->numel * sizeof(float));
        rc = fl_serveropt_state_load(d->opt, cp.state, cp.state_len);
        int64_t ck_round = cp.round;
        uint32_t ck_sum = cp.checksum;
        fl_store_checkpoint_free(&cp);
        if (rc) {
            FL_LOG_E(WHO, "run %lld: optimizer state of round %lld does not load: %s", (long long)run,
                     (long long)ck_round, fl_strerror(rc));
            return rc;
        }
        /* Prove the restore: the model and the re-serialized state must
         * checksum to what was committed. */
        uint8_t *st = NULL;
        size_t sl = 0;
        if ((rc = fl_serveropt_state_save(d->opt, &st, &sl)))
            return rc;
        uint32_t mine = fl_store_checksum(d->x, d->numel, st, sl);
        free(st);
        if (mine != ck_sum) {
            FL_LOG_E(WHO, "run %lld: restored state checksums to %08x, checkpoint says %08x", (long long)run, mine,
                     ck_sum);
            return FL_ECHECKSUM;
        }
        if ((rc = fl_store_next_round(d->store, run, &d->round_no)))
            return rc;
        /* The accountant and the adaptive clip bound continue from the log. */
        if ((rc = fl_store_privacy_each(d->store, run, replay_privacy, d)))
            return rc;
        fl_store_run_set_status(d->store, run, "running");
        FL_LOG_I(WHO, "resumed run %lld at round %lld from the checkpoint of round %lld (checksum %08x)",
                 (long long)run, (long long)d->round_no, (long long)ck_round, mine);
    } else {
        if (cfg->init[0]) {
            /* The file must hold exactly the model's tensors (PyTorch names and shapes). */
            if ((rc = fl_safetensors_load(cfg->init, &d->model->params)))
                return rc;
            if (!fl_f32_all_finite(d->model->params.data, d->numel)) {
                FL_LOG_E(WHO, "init: %s holds NaN or Inf", cfg->init);
                return FL_ENONFINITE;
            }
            FL_LOG_I(WHO, "initial weights from %s", cfg->init);
        } else {
            fl_model_init_params(d->model, cfg->seed);
        }
        memcpy(d->x, d->model->params.data, d->numel * sizeof(float));
        char *json = NULL;
        uint8_t *st = NULL;
        size_t sl = 0;
        if ((rc = fl_server_config_to_json(cfg, &json)) || (rc = fl_serveropt_state_save(d->opt, &st, &sl))) {
            free(json);
            return rc;
        }
        fl_store_run_info_t ri = {cfg->model, fl_serveropt_kind_name(cfg->opt.kind), cfg->seed, json};
        rc = fl_store_run_create(d->store, &ri, d->x, d->numel, st, sl, &run);
        free(json);
        free(st);
        if (rc)
            return rc;
        d->round_no = 1;
        FL_LOG_I(WHO, "run %lld: model %s (%zu parameters), %s, %lld rounds of %lld clients", (long long)run,
                 cfg->model, d->numel, fl_serveropt_kind_name(cfg->opt.kind), (long long)cfg->rounds,
                 (long long)cfg->clients_per_round);
    }
    d->run_id = run;
    rcfg.run_id = run;
    if ((rc = fl_round_create(&rcfg, &d->round)))
        return rc;
    if (cfg->fed_eval_every > 0) {
        fl_fedeval_config_t fcfg = {.run_id = run,
                                    .seed = cfg->seed,
                                    .clients = (uint32_t)cfg->fed_eval_clients,
                                    .deadline_s = cfg->fed_eval_deadline};
        if ((rc = fl_fedeval_create(&fcfg, &d->fe)))
            return rc;
        /* A crash (or a stop) between a round's commit and its federated
         * evaluation's: the restored model is that round's, so evaluate it
         * before the next round, as the run would have. */
        int64_t last = d->round_no - 1;
        int exists = 1;
        if (resume && last >= 1 && last <= cfg->rounds && (last % cfg->fed_eval_every == 0 || last == cfg->rounds) &&
            fl_store_fedeval_exists(d->store, run, last, &exists) == 0 && !exists) {
            d->fe_due = last;
            FL_LOG_I(WHO, "round %lld's federated evaluation is missing: it comes first", (long long)last);
        }
    }
    /* A run whose last round is committed but not its federated evaluation
     * does that evaluation, then finishes (round_done). */
    if (d->round_no > cfg->rounds && !d->fe_due) {
        FL_LOG_I(WHO, "run %lld already has its %lld rounds", (long long)run, (long long)cfg->rounds);
        fl_store_run_set_status(d->store, run, "finished");
        d->phase = PH_DONE;
    }
    return 0;
}

/* Resume: one committed round's clip/DP record back into the aggregator and
 * the accountant. */
static int replay_privacy(int64_t round, const fl_store_privacy_t *p, void *user)
{
    fl__daemon_t *d = user;
    if (isfinite(p->clip_norm) && fl_agg_clip_bound(d->agg) > 0 &&
        fl_agg_clip_replay(d->agg, p->clip_norm, p->clip_within)) {
        FL_LOG_E(WHO, "round %lld: bad clip bound %g in the log", (long long)round, p->clip_norm);
        return FL_EFORMAT;
    }
    if (d->rdp && isfinite(p->dp_q)) {
        int rc = fl_rdp_add(d->rdp, p->dp_q, isfinite(p->dp_noise_multiplier) ? p->dp_noise_multiplier : 0, 1);
        if (rc || (rc = fl_rdp_get_epsilon(d->rdp, d->cfg->dp_delta, &d->eps, NULL)))
            return rc;
    }
    return 0;
}

/* The process's peak resident memory in KiB (VmHWM), or 0 when unknown. It is
 * per address space, so unlike getrusage it does not include what a parent
 * held before exec. */
static long peak_rss_kib(void)
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

int fl_daemon_run(const fl_server_config_t *cfg)
{
    fl__daemon_t *d = calloc(1, sizeof *d);
    if (!d)
        return 1;
    d->cfg = cfg;
    int rc, loop_ok = 0;
    char host[256];
    int port;
    if (parse_listen(cfg->listen, host, sizeof host, &port)) {
        FL_LOG_E(WHO, "listen: want HOST:PORT or [IPv6]:PORT, not '%s'", cfg->listen);
        rc = FL_ECONFIG;
        goto out;
    }
    /* One descriptor per client: raise the soft limit (often 1024) towards
     * max_connections, as far as the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t)cfg->max_connections + 64;
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
            rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
            rl.rlim_cur < (rlim_t)cfg->max_connections + 64)
            FL_LOG_W(WHO, "open-file limit %llu is below max_connections %lld: raise it (LimitNOFILE=)",
                     (unsigned long long)rl.rlim_cur, (long long)cfg->max_connections);
    }
    if ((rc = fl_store_open(cfg->db, 0, &d->store)))
        goto out;
    if ((rc = setup_run(d)))
        goto out;
    if (d->phase == PH_DONE)
        goto out;
    fl_tls_opts_t to = {
        .ca_file = cfg->tls_ca,
        .cert_file = cfg->tls_cert,
        .key_file = cfg->tls_key,
        .no_client_cert = !cfg->require_client_cert,
        .max_conns = (uint32_t)cfg->max_connections,
        .max_tensor = (uint64_t)d->numel * sizeof(float),
        /* Ciphertext a connection writes per loop turn before the next one
         * gets its turn: the model goes to K clients at once, and about one
         * record each per turn keeps heartbeats, handshakes and uploads
         * flowing while K copies are encrypted. It costs no memory (records
         * the kernel will not take wait in mbedTLS's own buffer) and no
         * throughput (the kernel's socket buffers keep the network busy). */
        .max_inflight = 16 * 1024,
    };
    if ((rc = fl_tls_ctx_new(FL_TLS_SERVER, &to, &d->tls)))
        goto out;
    if (uv_loop_init(&d->loop)) {
        rc = FL_ENOMEM;
        goto out;
    }
    loop_ok = 1;
    fl_tls_cbs_t cbs = {.on_open = on_open, .on_message = on_message, .on_close = on_close};
    if ((rc = fl_tls_server_start(&d->loop, d->tls, host, port, &cbs, d, &d->server)))
        goto out;
    FL_LOG_I(WHO, "listening on %s port %d", host, fl_tls_server_port(d->server));
    if (d->cfg->shared_certs && d->cfg->shared_certs[0])
        FL_LOG_W(WHO, "shared certificates %s: their clients are identified as NAME/hello-name",
                 d->cfg->shared_certs);
    uv_timer_init(&d->loop, &d->tick);
    d->tick.data = d;
    uv_timer_start(&d->tick, on_tick, 100, 100);
    uv_signal_init(&d->loop, &d->sigterm);
    uv_signal_init(&d->loop, &d->sigint);
    d->sigterm.data = d->sigint.data = d;
    uv_signal_start(&d->sigterm, on_signal, SIGTERM);
    uv_signal_start(&d->sigint, on_signal, SIGINT);
    d->wait_since = now_s();
    d->last_heartbeat = d->wait_since;
    try_start_round(d);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    rc = d->failed ? FL_ESTATE : 0;
    FL_LOG_I(WHO, "exiting; peak RSS %.1f MiB", peak_rss_kib() / 1024.0);
out:
    if (loop_ok) {
        /* Everything is closed when uv_run returns; make sure of it. */
        uv_run(&d->loop, UV_RUN_DEFAULT);
        uv_loop_close(&d->loop);
    }
    for (fl__job_t *j = d->jobs_head, *n; j; j = n) {
        n = j->next;
        free(j->delta);
        free(j->name);
        free(j);
    }
    for (size_t i = 0; i < d->nlast_selected; i++)
        free(d->last_selected[i]);
    free(d->last_selected);
    fl_tls_ctx_free(d->tls);
    fl_round_free(d->round);
    fl_fedeval_free(d->fe);
    fl_buf_unref(d->fe_model);
    fl_serveropt_free(d->opt);
    fl_agg_free(d->agg);
    fl_rdp_free(d->rdp);
    fl_model_free(d->model);
    fl_eval_free(d->eval);
    free(d->x);
    fl_store_close(d->store);
    free(d);
    return rc ? 1 : 0;
}
