#include "server/daemon.h"

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/base/bytes.h"
#include "common/base/clock.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/version.h"
#include "common/net/certs.h"
#include "common/net/tls.h"
#include "common/net/wire.h"
#include "common/nn/models.h"
#include "server/aggregate.h"
#include "server/eval.h"
#include "server/fedeval.h"
#include "server/rdp.h"
#include "server/round.h"
#include "server/secround.h"
#include "server/srvmetrics.h"
#include "server/startup.h"
#include "server/store.h"
#include "server/uploads.h"

#define WHO "server"

typedef enum { U_NONE = 0, U_WAIT_SLOT, U_RECEIVING } up_state_t;

typedef struct fl__client fl__client_t;
typedef struct fl__daemon fl__daemon_t;

/* One connection. Freed in on_close, the transport's last callback. */
struct fl__client {
    fl__client_t *prev, *next; /* the daemon's list of connections */
    fl_uploads_waiter_t wait;  /* in the FIFO of uploads waiting for a buffer slot */
    fl__daemon_t *d;
    fl_tls_conn_t *conn;
    char *name;
    int welcomed;
    uint32_t max_frame;
    uint64_t holds; /* examples the client said it holds (Hello) */
    uint32_t minor; /* negotiated protocol minor version (1: UpdateResult, codecs) */
    unsigned codecs; /* 1 << FL_CODEC_* the client offered (f32 always) */
    double last_seen;
    double task_sent_at;
    /* the upload being received (announced by an Update message) */
    up_state_t up;
    int64_t up_round;
    double up_weight, up_loss;
    int up_refuse; /* fl_refuse_t decided at the Update (its delta is read and dropped) */
    int up_masked; /* the upload is a secure round's masked input (server/secround) */
};

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
    Fedopt__TensorInfo **table; /* the model's tensor table for offers (points into model) */
    size_t ntable;
    fl_codec_t codec;  /* update_codec */
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
    fl_uploads_t *uploads; /* upload buffers and the aggregation worker */
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
    fl_metrics_t *metrics; /* metrics_listen: the registry (server/srvmetrics) and its listener */
    fl_metrics_http_t *metrics_http;
    fl_secround_t *sec;    /* secure_aggregation: the rounds' protocol (server/secround) */
    float *sec_mean;       /* the unmasked, dequantized mean of a secure round */
};

/* Every duration, deadline and silence is measured on the monotonic clock;
 * the wall clock is read only for what is stored or sent as a timestamp
 * (see common/base/clock.h). */
static double now_s(void)
{
    return fl_clock_mono_s();
}

static void try_start_round(fl__daemon_t *d);
static void maybe_close_round(fl__daemon_t *d);
static void stop_all(fl__daemon_t *d);
static void start_fedeval(fl__daemon_t *d, fl__client_t **conns, const char **names, size_t have, double now);
static void maybe_close_fedeval(fl__daemon_t *d);
static void round_done(fl__daemon_t *d);
static void on_eval_result(fl__client_t *c, const Fedopt__EvalResult *r);

/* ---- messages ------------------------------------------------------------ */

static void send_reject(fl__client_t *c, int code, const char *reason)
{
    fl_srvmetrics_rejected(c->d->metrics, reason);
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

/* The protocol's reason for a refusal recorded in the round log. */
static Fedopt__ResultReason result_reason(int why)
{
    switch (why) {
    case FL_REFUSE_NONE:
        return FEDOPT__RESULT_REASON__RESULT_ACCEPTED;
    case FL_REFUSE_STALE:
    case FL_REFUSE_CLOSED:
        return FEDOPT__RESULT_REASON__RESULT_STALE_ROUND;
    case FL_REFUSE_NOT_SELECTED:
        return FEDOPT__RESULT_REASON__RESULT_NOT_SAMPLED;
    case FL_REFUSE_DUPLICATE:
        return FEDOPT__RESULT_REASON__RESULT_DUPLICATE;
    case FL_REFUSE_SHAPE:
    case FL_REFUSE_MALFORMED:
        return FEDOPT__RESULT_REASON__RESULT_SHAPE;
    case FL_REFUSE_NONFINITE:
        return FEDOPT__RESULT_REASON__RESULT_NONFINITE;
    case FL_REFUSE_WEIGHT:
    case FL_REFUSE_CLAIM:
        return FEDOPT__RESULT_REASON__RESULT_WEIGHT_CLAIM;
    case FL_REFUSE_COMPLETE:
        return FEDOPT__RESULT_REASON__RESULT_LATE;
    default:
        return FEDOPT__RESULT_REASON__RESULT_SERVER_ERROR;
    }
}

/* Protocol 1.1: tells a client what became of its upload or evaluation
 * answer (a 1.0 client gets nothing). */
static void send_result(fl__client_t *c, uint64_t round, int eval, Fedopt__ResultReason reason, int code,
                        const char *msg, double weight)
{
    if (!c || !c->welcomed || c->minor < 1)
        return;
    Fedopt__UpdateResult r = FEDOPT__UPDATE_RESULT__INIT;
    r.round_id = round;
    r.kind = eval ? FEDOPT__RESULT_KIND__RESULT_EVAL : FEDOPT__RESULT_KIND__RESULT_UPDATE;
    r.accepted = reason == FEDOPT__RESULT_REASON__RESULT_ACCEPTED;
    r.reason = reason;
    r.code = (Fedopt__Code)code;
    r.message = (char *)(msg ? msg : "");
    r.weight = r.accepted ? weight : 0;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE_RESULT;
    env.update_result = &r;
    fl_tls_conn_send_msg(c->conn, &env);
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
    if (d->sec && (h->protocol_minor < 1 || !fl_tls_conn_peer_cert(c->conn))) {
        /* The masked phases are 1.1 messages, and every party signs its
         * keys with its certificate's key. */
        FL_LOG_W(WHO, "%s (%s): secure aggregation needs protocol 1.1 and a client certificate: rejected", name,
                 fl_tls_conn_addr(c->conn));
        send_reject(c, FL_EUNSUPPORTED, "this run uses secure aggregation: protocol 1.1 and a client certificate needed");
        return;
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
    c->minor = h->protocol_minor < FL_PROTOCOL_MINOR ? h->protocol_minor : FL_PROTOCOL_MINOR;
    c->codecs = 1u << FL_CODEC_F32;
    for (size_t i = 0; c->minor >= 1 && i < h->n_codecs; i++)
        if (fl_codec_name((int)h->codecs[i]))
            c->codecs |= 1u << h->codecs[i];
    fl_tls_conn_admit(c->conn);
    Fedopt__Welcome w = FEDOPT__WELCOME__INIT;
    w.protocol_version = FL_PROTOCOL_VERSION;
    w.protocol_minor = c->minor;
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
    fl_tls_conn_set_max_tensor(c->conn, (uint64_t)(d->numel + (d->sec ? 1 : 0)) * sizeof(float));
    FL_LOG_I(WHO, "%s connected from %s (%s, %llu examples)", c->name, fl_tls_conn_addr(c->conn),
             fl_tls_conn_suite(c->conn), (unsigned long long)h->num_examples);
    if (d->phase == PH_WAITING)
        try_start_round(d);
}

/* ---- upload buffer slots ------------------------------------------------- */

/* A queued upload got its buffer: read its delta now. */
static void on_slot_granted(fl_uploads_waiter_t *w, void *ud)
{
    fl__client_t *c = (fl__client_t *)((char *)w - offsetof(fl__client_t, wait));
    c->up = U_RECEIVING;
    fl_tls_conn_resume_read(c->conn);
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
    if (d->sec) {
        /* A masked input: its weight and metrics stay with the client (the
         * weight is inside the masked words); it is summed as it arrives,
         * so it needs no upload slot. */
        c->up_masked = 1;
        c->up_weight = c->up_loss = NAN;
        c->up = U_RECEIVING;
        return;
    }
    c->up_masked = 0;
    c->up_weight = u->weight > 0 ? u->weight : (double)u->num_examples;
    c->up_loss = u->train_loss;
    fl_round_note_accuracy(d->round, c->name, c->up_round,
                           u->train_metric ? u->train_metric->value : u->train_accuracy > 0 ? u->train_accuracy : NAN);
    c->up_refuse = FL_REFUSE_NONE;
    /* One client's influence is bounded by what it declared before it was
     * selected and by the operator's cap; under uniform weighting the
     * claim carries no weight and is not checked. */
    if (d->cfg->opt.weighting == FL_WEIGHTING_EXAMPLES) {
        double cap = (double)fl_round_example_cap(c->holds, d->cfg->max_client_examples);
        double claim = fmax(c->up_weight, (double)u->num_examples);
        if (claim > cap) {
            FL_LOG_W(WHO, "%s: update for round %lld claims %.0f examples, more than %.0f (Hello %llu, max_client_examples %lld)",
                     c->name, (long long)c->up_round, claim, cap, (unsigned long long)c->holds,
                     (long long)d->cfg->max_client_examples);
            c->up_refuse = FL_REFUSE_CLAIM;
        }
    }
    if (fl_uploads_acquire(d->uploads, &c->wait)) {
        c->up = U_RECEIVING;
    } else {
        /* Every buffer is taken: stop reading this connection, so its delta
         * waits in the kernel and the client's TCP window. */
        c->up = U_WAIT_SLOT;
        FL_LOG_D(WHO, "%s: upload waits for a buffer (%zu in use)", c->name, fl_uploads_in_use(d->uploads));
        fl_tls_conn_pause_read(c->conn);
    }
}

static void on_delta(fl__client_t *c, fl_wire_event_t *ev)
{
    fl__daemon_t *d = c->d;
    double now = now_s();
    int64_t bytes = (int64_t)(ev->wire_bytes ? ev->wire_bytes : ev->nbytes); /* as they travelled */
    if (c->up != U_RECEIVING) {
        FL_LOG_W(WHO, "%s: delta without an Update: closing", c->name);
        fl_tls_conn_close(c->conn);
        return;
    }
    c->up = U_NONE;
    if (c->up_masked) {
        c->up_masked = 0;
        if (fl_secround_on_masked(d->sec, c->name, (uint64_t)c->up_round, ev->data, ev->nbytes, now) == 0 &&
            (int64_t)ev->round_id == c->up_round)
            fl_round_add_start(d->round, c->name);
        maybe_close_round(d);
        return; /* the event frees the buffer: only the running sum keeps it */
    }
    size_t n = ev->nbytes / sizeof(float);
    fl_refuse_t why = ev->nbytes % sizeof(float) ? FL_REFUSE_SHAPE
                                                 : fl_round_check(d->round, c->name, c->up_round, n, c->up_weight);
    if (why == FL_REFUSE_NONE && c->up_refuse != FL_REFUSE_NONE)
        why = (fl_refuse_t)c->up_refuse;
    if (why != FL_REFUSE_NONE || (int64_t)ev->round_id != c->up_round) {
        if (why == FL_REFUSE_NONE)
            why = FL_REFUSE_MALFORMED;
        FL_LOG_I(WHO, "%s: update for round %lld refused: %s", c->name, (long long)c->up_round,
                 fl_round_refuse_text(why));
        fl_round_refuse(d->round, c->name, why, bytes, now);
        send_result(c, (uint64_t)c->up_round, 0, result_reason(why), FL_EINVAL, fl_round_refuse_text(why), 0);
        fl_uploads_release(d->uploads);
        maybe_close_round(d);
        return;
    }
    /* The slot (and the delta's buffer) now belong to the queued upload. */
    if (fl_uploads_submit(d->uploads, c->name, (float *)ev->data, n, c->up_weight, c->up_loss, bytes, now,
                          ev->finite)) {
        fl_round_refuse(d->round, c->name, FL_REFUSE_MALFORMED, bytes, now);
        fl_uploads_release(d->uploads);
        return;
    }
    ev->data = NULL;
    fl_round_add_start(d->round, c->name);
    fl_uploads_kick(d->uploads);
}

/* A secure round's message from client c (server/secround checks it). */
static void on_secagg(fl__client_t *c, const Fedopt__Envelope *m)
{
    fl__daemon_t *d = c->d;
    if (!d->sec) {
        FL_LOG_W(WHO, "%s: %s in a run without secure aggregation: closing", c->name, fl_wire_msg_name((int)m->msg_case));
        fl_tls_conn_close(c->conn);
        return;
    }
    double now = now_s();
    if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_ADVERT)
        fl_secround_on_advert(d->sec, c->name, m->secagg_advert, fl_tls_conn_peer_cert(c->conn), now);
    else if (m->msg_case == FEDOPT__ENVELOPE__MSG_SECAGG_SHARES)
        fl_secround_on_shares(d->sec, c->name, m->secagg_shares, now);
    else
        fl_secround_on_reveal(d->sec, c->name, m->secagg_reveal, now);
    maybe_close_round(d);
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
            fl_secround_drop(c->d->sec, c->name, c->last_seen); /* a party that will send nothing */
            maybe_close_round(c->d);
        }
        break;
    case FEDOPT__ENVELOPE__MSG_EVAL_RESULT:
        on_eval_result(c, m->eval_result);
        break;
    case FEDOPT__ENVELOPE__MSG_SECAGG_ADVERT:
    case FEDOPT__ENVELOPE__MSG_SECAGG_SHARES:
    case FEDOPT__ENVELOPE__MSG_SECAGG_REVEAL:
        on_secagg(c, m);
        break;
    case FEDOPT__ENVELOPE__MSG_HEARTBEAT:
        /* Answered at once when asked: the round trip measures how long a
         * connected client waits for the event loop (bench_server's storm).
         * Not while our sends to it are backed up: a client that asks and
         * never reads must not grow its queue. */
        if (m->heartbeat->echo && c->welcomed && fl_tls_conn_queued(conn) < 65536) {
            Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
            hb.unix_ms = fl_clock_wall_ms();
            Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
            env.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
            env.heartbeat = &hb;
            fl_tls_conn_send_msg(conn, &env);
        }
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

static void on_handshake_fail(int reason, void *ud)
{
    fl__daemon_t *d = ud;
    fl_srvmetrics_tls_failure(d->metrics, reason);
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
        fl_secround_drop(d->sec, c->name, now_s());
    }
    if (c->up == U_RECEIVING && !c->up_masked) /* a masked input holds no slot */
        fl_uploads_release(d->uploads);
    else if (c->up == U_WAIT_SLOT)
        fl_uploads_cancel(d->uploads, &c->wait);
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

/* ---- aggregation (server/uploads) -------------------------------------- */

static void on_upload_added(const char *name, int rc, double weight, double loss, double norm, int64_t bytes,
                            double received_at, void *ud)
{
    fl__daemon_t *d = ud;
    if (!fl_round_number(d->round))
        return;
    fl_round_add_end(d->round, name, rc, weight, loss, norm, bytes, received_at);
    if (rc)
        FL_LOG_I(WHO, "%s: update refused: %s", name, fl_strerror(rc));
    send_result(find_client(d, name), (uint64_t)fl_round_number(d->round), 0,
                !rc                    ? FEDOPT__RESULT_REASON__RESULT_ACCEPTED
                : rc == FL_ENONFINITE ? FEDOPT__RESULT_REASON__RESULT_NONFINITE
                : rc == FL_ESHAPE     ? FEDOPT__RESULT_REASON__RESULT_SHAPE
                                      : FEDOPT__RESULT_REASON__RESULT_SERVER_ERROR,
                rc, rc ? fl_strerror(rc) : "added to the round's aggregate", weight);
}

static void on_uploads_idle(void *ud)
{
    fl__daemon_t *d = ud;
    size_t count;
    double secs;
    int frc = 0;
    fl_uploads_last_batch(d->uploads, &count, &secs);
    if (count)
        fl_srvmetrics_seconds(d->metrics, "aggregation", secs / (double)count);
    if (fl_uploads_finished(d->uploads, &frc) && frc) {
        /* An upload the wire layer had checked finite was not by the time
         * it was added (memory corruption): the model moved in part, so the
         * round cannot be committed; --resume redoes it. */
        FL_LOG_E(WHO, "round %lld: the fused finish failed: %s", (long long)d->round_no, fl_strerror(frc));
        d->failed = 1;
        d->stopping = 1;
        stop_all(d);
    }
    maybe_close_round(d);
}

/* The uploads pipeline asks whether the batch it starts ends the round: it
 * then runs the finish in the same pass (server/uploads.h). */
static int on_uploads_completes(size_t count, void *ud)
{
    fl__daemon_t *d = ud;
    return d->phase == PH_ROUND && !d->stopping && fl_round_completed_by(d->round, count);
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
    if ((rc = fl_round_begin(d->round, d->round_no, names, have, d->opt, now, fl_clock_wall_s())))
        goto fail;
    fl_agg_begin(d->agg);
    d->round_q = (double)fl_round_selected_count(d->round) / (double)have;
    size_t nsel = fl_round_selected_count(d->round);
    int secure = 0;
    if (d->sec) {
        /* Party i is the selection's i-th client. */
        const char **sel = malloc((nsel ? nsel : 1) * sizeof *sel);
        for (size_t i = 0; sel && i < nsel; i++)
            sel[i] = fl_round_selected_name(d->round, i);
        int src = sel ? fl_secround_begin(d->sec, d->run_id, d->round_no, sel, nsel, now, now + d->cfg->round_deadline)
                      : FL_ENOMEM;
        free(sel);
        if (src) {
            /* Too few clients for the tolerances: the round is recorded as
             * abandoned, nothing is sent. */
            FL_LOG_W(WHO, "round %lld: no secure round for %zu parties: %s", (long long)d->round_no, nsel,
                     fl_strerror(src));
            for (size_t i = 0; i < nsel; i++)
                fl_round_drop(d->round, fl_round_selected_name(d->round, i), "secure aggregation impossible with this many parties", now);
            d->phase = PH_ROUND;
            free(names);
            free(conns);
            maybe_close_round(d);
            return;
        }
        secure = 1;
    }
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
    offer.tensors = d->table;
    offer.n_tensors = d->ntable;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_TASK_OFFER;
    env.task_offer = &offer;
    for (size_t i = 0; i < nsel; i++) {
        fl__client_t *c = find_client(d, fl_round_selected_name(d->round, i));
        offer.client_index = (uint32_t)i;
        /* The configured encoding where the client offered it, else float32. */
        offer.codec = c && (c->codecs >> d->codec & 1u) ? (Fedopt__Codec)d->codec : FEDOPT__CODEC__CODEC_F32;
        offer.secagg = secure ? (Fedopt__SecAggSetup *)fl_secround_setup(d->sec, i) : NULL;
        if (secure)
            offer.codec = FEDOPT__CODEC__CODEC_F32; /* the masked words travel as they are */
        offer.topk = 0;
        if (offer.codec == FEDOPT__CODEC__CODEC_TOPK) {
            double k = ceil(d->cfg->topk_fraction * (double)d->numel);
            offer.topk = (uint64_t)fmax(1, fmin(k, (double)(d->numel / 2)));
            if (d->numel < 2)
                offer.codec = FEDOPT__CODEC__CODEC_F32;
        }
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
    fl_srvmetrics_round_started(d->metrics, d->round_no, (int64_t)nsel);
    fl_log_set_round(d->round_no);
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
        fl_round_close(d->round, now, fl_clock_wall_s(), &row, &ups, &nups, &closed);
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
    double t0 = now_s();
    if (d->row_closed) {
        /* fl_round_finish_work's step, through the aggregator that formed D */
        double clip = fl_agg_clip_bound(d->agg);
        int frc = 0;
        if (fl_uploads_take_finish(d->uploads, &frc, &d->opt_res)) {
            /* the round's last batch ran the finish already */
            FL_LOG_D(WHO, "round %lld: the finish ran in the last batch's pass", (long long)d->row.round);
            if ((rc = frc) || (rc = fl_round_state_save(d->opt, &state, &state_len)))
                goto out;
        } else if ((rc = fl_agg_finish(d->agg, d->opt, d->x, d->numel, &d->opt_res)) ||
                   (rc = fl_round_state_save(d->opt, &state, &state_len)))
            goto out;
        /* the fraction the bound moved with: under DP the noised one */
        double within = fl_agg_clip_within(d->agg);
        fl_srvmetrics_seconds(d->metrics, "finish", now_s() - t0);
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
    }
    int64_t every = d->cfg->eval_every;
    if (d->eval && every > 0 && (d->row.round % every == 0 || d->row.round == d->cfg->rounds)) {
        double loss, metric;
        t0 = now_s();
        int erc = fl_eval_run(d->eval, d->x, d->numel, &loss, &metric);
        fl_srvmetrics_seconds(d->metrics, "evaluation", now_s() - t0);
        if (erc == 0) {
            d->row.eval_loss = loss;
            d->row.eval_accuracy = metric;
            d->evaluated = 1;
        }
    }
    t0 = now_s();
    rc = fl_store_commit_round(d->store, &d->row, d->ups, d->nups, d->row_closed ? d->x : NULL, d->numel, state,
                               state_len, d->cfg->keep_checkpoints);
    fl_srvmetrics_seconds(d->metrics, "commit", now_s() - t0);
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
    fl_srvmetrics_round_committed(d->metrics, &d->row, d->ups, d->nups);
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
             el, ea, pv, fl_round_last_seconds(d->round));
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

/* secagg_dump_sums: the unmasked word sum of the round, as the tests
 * compare it with the clients' plain sum (it is what the server learns). */
static void dump_sum(fl__daemon_t *d)
{
    const uint32_t *sum = fl_secround_sum(d->sec);
    char path[4096];
    snprintf(path, sizeof path, "%s/round-%lld.u32", d->cfg->secagg_dump_sums, (long long)d->round_no);
    FILE *f = sum ? fopen(path, "wb") : NULL;
    int ok = f != NULL;
    for (size_t i = 0; ok && i <= d->numel; i++) {
        uint8_t b[4];
        fl_put_u32le(b, sum[i]);
        ok = fwrite(b, 1, 4, f) == 4;
    }
    if (f && fclose(f))
        ok = 0;
    if (!ok)
        FL_LOG_W(WHO, "secagg_dump_sums: cannot write %s", path);
}

/* A secure round that is done (or stopped): its masked inputs' rows are
 * accepted when the sum was unmasked, else refused; the unmasked mean goes
 * into the aggregator as one update of the round's total weight. Returns 0
 * while the protocol still runs. */
static int settle_secure(fl__daemon_t *d, double now, double *weight)
{
    *weight = NAN;
    if (!d->sec || !fl_secround_round(d->sec))
        return 1;
    if (!fl_secround_done(d->sec) && !d->stopping)
        return 0;
    const char *why = "stopped";
    int rc = fl_secround_done(d->sec) ? fl_secround_result(d->sec, d->sec_mean, weight, &why) : FL_ECANCELED;
    if (rc == 0 && d->cfg->secagg_dump_sums && d->cfg->secagg_dump_sums[0])
        dump_sum(d);
    if (rc == 0) {
        double norm;
        if ((rc = fl_agg_add(d->agg, d->opt, d->sec_mean, d->numel, *weight, &norm))) {
            FL_LOG_E(WHO, "round %lld: the unmasked mean was refused: %s", (long long)d->round_no, fl_strerror(rc));
            why = "the unmasked mean was refused";
        }
    }
    int64_t bytes = (int64_t)(d->numel + 1) * 4;
    size_t nsel = fl_round_selected_count(d->round);
    for (size_t i = 0; i < nsel; i++) {
        const char *name = fl_round_selected_name(d->round, i);
        if (!fl_secround_masked(d->sec, name))
            continue;
        /* Nothing of one client but its participation is recorded. */
        fl_round_add_end(d->round, name, rc ? FL_ECANCELED : 0, NAN, NAN, NAN, bytes, now);
        send_result(find_client(d, name), (uint64_t)d->round_no, 0,
                    rc ? FEDOPT__RESULT_REASON__RESULT_SERVER_ERROR : FEDOPT__RESULT_REASON__RESULT_ACCEPTED, rc,
                    rc ? why : "in the round's unmasked sum", 0);
    }
    if (rc) {
        FL_LOG_W(WHO, "round %lld: secure aggregation failed: %s", (long long)d->round_no, why ? why : fl_strerror(rc));
        *weight = NAN;
    }
    fl_secround_end(d->sec);
    return 1;
}

static void maybe_close_round(fl__daemon_t *d)
{
    if (d->phase != PH_ROUND || fl_uploads_busy(d->uploads))
        return;
    double now = now_s();
    double sec_weight = NAN;
    if (!settle_secure(d, now, &sec_weight))
        return;
    if (d->stopping) {
        /* Abandon the open round: nothing of it is committed, so --resume
         * redoes it from the last checkpoint. */
        fl_store_round_t row;
        const fl_store_update_t *ups;
        size_t nups;
        int closed;
        fl_round_close(d->round, now, fl_clock_wall_s(), &row, &ups, &nups, &closed);
        FL_LOG_I(WHO, "round %lld aborted by the stop; it will be redone on --resume", (long long)d->round_no);
        d->phase = PH_WAITING;
        stop_all(d);
        return;
    }
    if (!d->sec && !fl_round_is_complete(d->round) && !fl_round_deadline_passed(d->round, now))
        return;
    if (fl_round_close(d->round, now, fl_clock_wall_s(), &d->row, &d->ups, &d->nups, &d->row_closed))
        return;
    if (d->sec)
        d->row.examples = isfinite(sec_weight) ? sec_weight : 0; /* the unmasked total weight */
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
    /* The same cap as an update's weight (a Hello of 0 declares nothing),
     * and no more than the examples the request asks each client to use. */
    for (size_t i = 0; i < have; i++) {
        holds[i] = fl_round_example_cap(conns[i]->holds, d->cfg->max_client_examples);
        if (d->cfg->fed_eval_max_examples > 0 && holds[i] > (uint64_t)d->cfg->fed_eval_max_examples)
            holds[i] = (uint64_t)d->cfg->fed_eval_max_examples;
    }
    rc = fl_fedeval_begin(d->fe, round, names, holds, have, now, fl_clock_wall_s());
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
    er.tensors = d->table;
    er.n_tensors = d->ntable;
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
             fl_fedeval_last_seconds(d->fe));
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
    if (fl_fedeval_close(d->fe, now, fl_clock_wall_s(), &d->fe_row, &d->fe_res, &d->fe_nres))
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
        send_result(c, r->round_id, 1, FEDOPT__RESULT_REASON__RESULT_STALE_ROUND, FL_ESTATE,
                    "no evaluation is open", 0);
        return;
    }
    fl_fedeval_verdict_t v =
        fl_fedeval_answer(d->fe, c->name, (int64_t)r->round_id, r->num_examples, r->loss, r->accuracy, now_s());
    if (v != FL_FEDEVAL_OK)
        FL_LOG_I(WHO, "%s: evaluation result for round %llu refused: %s (examples %llu, loss %g, accuracy %g)",
                 c->name, (unsigned long long)r->round_id, fl_fedeval_verdict_text(v),
                 (unsigned long long)r->num_examples, r->loss, r->accuracy);
    Fedopt__ResultReason why = v == FL_FEDEVAL_OK                                     ? FEDOPT__RESULT_REASON__RESULT_ACCEPTED
                               : v == FL_FEDEVAL_STALE || v == FL_FEDEVAL_CLOSED     ? FEDOPT__RESULT_REASON__RESULT_STALE_ROUND
                               : v == FL_FEDEVAL_NOT_SELECTED                         ? FEDOPT__RESULT_REASON__RESULT_NOT_SAMPLED
                               : v == FL_FEDEVAL_DUPLICATE                            ? FEDOPT__RESULT_REASON__RESULT_DUPLICATE
                               : v == FL_FEDEVAL_CLAIM                                ? FEDOPT__RESULT_REASON__RESULT_WEIGHT_CLAIM
                                                                                      : FEDOPT__RESULT_REASON__RESULT_BAD_EVAL;
    send_result(c, r->round_id, 1, why, v == FL_FEDEVAL_OK ? 0 : FL_ERANGE, fl_fedeval_verdict_text(v),
                (double)r->num_examples);
    maybe_close_fedeval(d);
}

/* ---- timers, signals, stopping ------------------------------------------ */

static void send_heartbeats(fl__daemon_t *d, double now)
{
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    hb.unix_ms = fl_clock_wall_ms(); /* a timestamp, sent: wall clock */
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
    static const char *const phase_names[] = {"waiting", "round", "committing", "fedeval", "fedeval_commit", "done"};
    fl_srvmetrics_tick(d->metrics, phase_names[d->phase], d->round_no, d->nclients);
    if (now - d->last_heartbeat >= d->cfg->heartbeat) {
        d->last_heartbeat = now;
        send_heartbeats(d, now);
    }
    if (d->phase == PH_WAITING)
        try_start_round(d);
    else if (d->phase == PH_ROUND) {
        fl_secround_tick(d->sec, now);
        maybe_close_round(d);
    } else if (d->phase == PH_FEDEVAL)
        maybe_close_fedeval(d);
}

static void on_signal(uv_signal_t *s, int signum)
{
    fl__daemon_t *d = s->data;
    if (d->stopping)
        return;
    FL_LOG_I(WHO, "%s: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    d->stopping = 1;
    fl_metrics_set_ready(d->metrics, 0);
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
    /* A run that ends on an error is 'failed', one stopped by a signal
     * 'stopped' (both resumable); a finished run was marked by round_done. */
    if (d->failed && d->run_id)
        fl_store_run_set_status(d->store, d->run_id, "failed");
    else if (d->phase != PH_DONE && d->run_id)
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


/* server/secround's callbacks: its messages to a party, and a party it
 * refuses (recorded in the round, told why, and closed). */
static int sec_send(void *ud, const char *name, const Fedopt__Envelope *env)
{
    fl__client_t *c = find_client(ud, name);
    return c ? fl_tls_conn_send_msg(c->conn, env) : FL_ECLOSED;
}

static void sec_exclude(void *ud, const char *name, const char *why)
{
    fl__daemon_t *d = ud;
    fl__client_t *c = find_client(d, name);
    char reason[160];
    snprintf(reason, sizeof reason, "secagg: %s", why);
    fl_round_drop(d->round, name, reason, now_s());
    if (!c)
        return;
    Fedopt__Error e = FEDOPT__ERROR__INIT;
    e.code = (Fedopt__Code)FL_EPROTO;
    e.message = reason;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_ERROR;
    env.error = &e;
    fl_tls_conn_send_msg(c->conn, &env);
    fl_tls_conn_close(c->conn);
}

/* The aggregator (and the accountant with DP) for a model of d->numel
 * parameters, refusing a robust rule whose buffers exceed the budget. */
static int setup_aggregation(fl__daemon_t *d)
{
    const fl_server_config_t *cfg = d->cfg;
    size_t bytes = fl_agg_memory_bytes(&cfg->agg, d->numel);
    if ((double)bytes > (double)cfg->aggregator_memory_mb * 1048576.0) {
        FL_LOG_E(WHO, "aggregator %s with clients_per_round %lld needs %.1f MiB for model %s (%zu parameters), over "
                      "aggregator_memory_mb %lld: raise the budget, lower clients_per_round, or use aggregator = mean",
                 cfg->aggregator, (long long)cfg->clients_per_round, (double)bytes / 1048576.0, cfg->model, d->numel,
                 (long long)cfg->aggregator_memory_mb);
        return FL_ECONFIG;
    }
    int rc = fl_agg_create(&cfg->agg, d->numel, &d->agg);
    if (rc == 0 && cfg->dp_noise_multiplier > 0)
        rc = fl_rdp_create(&d->rdp);
    if (rc == 0 && cfg->dp_noise_multiplier > 0 && cfg->agg.clip.mode == FL_CLIP_ADAPTIVE)
        FL_LOG_I(WHO, "DP with adaptive clipping: clipped-count noise sigma_b %g, update noise multiplier %.4f, "
                      "accounted as z = %g",
                 cfg->agg.dp_count_stddev, fl_agg_update_multiplier(d->agg), cfg->dp_noise_multiplier);
    return rc;
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

int fl_daemon_run(const fl_server_config_t *cfg)
{
    fl__daemon_t *d = calloc(1, sizeof *d);
    if (!d)
        return 1;
    d->cfg = cfg;
    int rc, loop_ok = 0;
    char host[256];
    int port;
    fl_startup_plan_t plan;
    if ((rc = fl_startup_parse_listen(cfg->listen, host, sizeof host, &port)))
        goto out;
    fl_startup_raise_nofile(cfg);
    /* Metrics first: /healthz answers while a long resume loads. */
    if (cfg->metrics_listen && cfg->metrics_listen[0]) {
        int mport = 0;
        if ((rc = fl_srvmetrics_create(&d->metrics)) ||
            (rc = fl_metrics_http_start(d->metrics, cfg->metrics_listen, &d->metrics_http, &mport))) {
            FL_LOG_E(WHO, "metrics_listen %s: %s", cfg->metrics_listen, fl_strerror(rc));
            rc = FL_ECONFIG;
            goto out;
        }
        FL_LOG_I(WHO, "metrics served on %s, port %d (/metrics, /healthz, /readyz)", cfg->metrics_listen, mport);
    }
    if ((rc = fl_startup_model(cfg, &d->eval, &d->model, &d->x, &d->numel, &d->opt)))
        goto out;
    /* The TLS material before the database: a server that cannot start
     * leaves no run behind (see startup.h), nor a new, empty database. */
    if ((rc = fl_startup_tls(cfg, d->numel, &d->tls)))
        goto out;
    if ((rc = fl_store_open(cfg->db, 0, &d->store)))
        goto out;
    if ((rc = fl_wire_table_make(&d->model->params, &d->table, &d->ntable)) ||
        (rc = fl_codec_parse(cfg->update_codec, &d->codec)) ||
        (rc = setup_aggregation(d)))
        goto out;
    if ((rc = fl_startup_plan(cfg, d->store, d->model, d->opt, d->x, d->numel, &plan)))
        goto out;
    /* The accountant and the adaptive clip bound continue from the log. */
    if (plan.resume && (rc = fl_store_privacy_each(d->store, plan.run_id, replay_privacy, d)))
        goto out;
    if (plan.done) {
        rc = fl_startup_open_run(cfg, d->store, d->opt, d->x, d->numel, &plan, &d->round, &d->fe);
        goto out;
    }
    /* The listening socket before the run is written (see startup.h). */
    if (uv_loop_init(&d->loop)) {
        rc = FL_ENOMEM;
        goto out;
    }
    loop_ok = 1;
    fl_uploads_cbs_t ucbs = {.granted = on_slot_granted,
                             .added = on_upload_added,
                             .idle = on_uploads_idle,
                             .completes = on_uploads_completes};
    if ((rc = fl_uploads_create(&d->loop, (size_t)cfg->max_buffered_uploads, d->opt, &ucbs, d, &d->uploads)))
        goto out;
    fl_uploads_set_agg(d->uploads, d->agg);
    fl_uploads_set_finish(d->uploads, d->x);
    if (cfg->secure_aggregation) {
        int uniform = cfg->opt.weighting == FL_WEIGHTING_UNIFORM;
        fl_secround_config_t sc = {.dropout = cfg->secagg_dropout,
                                   .corrupt = cfg->secagg_corrupt,
                                   .clip = cfg->secagg_clip,
                                   .max_weight = uniform ? 1 : (uint32_t)cfg->secagg_max_weight,
                                   .phase_timeout = cfg->secagg_phase_timeout,
                                   .seed = cfg->seed,
                                   .numel = d->numel};
        fl_secround_cbs_t scb = {.send = sec_send, .exclude = sec_exclude};
        if ((rc = fl_secround_create(&sc, &scb, d, &d->sec)))
            goto out;
        if (!(d->sec_mean = malloc(d->numel * sizeof *d->sec_mean))) {
            rc = FL_ENOMEM;
            goto out;
        }
    }
    fl_tls_cbs_t cbs = {
        .on_open = on_open, .on_message = on_message, .on_close = on_close, .on_handshake_fail = on_handshake_fail};
    if ((rc = fl_startup_listen(cfg, &d->loop, d->tls, host, port, &cbs, d, &d->server)))
        goto out;
    if ((rc = fl_startup_open_run(cfg, d->store, d->opt, d->x, d->numel, &plan, &d->round, &d->fe)))
        goto out;
    d->run_id = plan.run_id;
    d->round_no = plan.round_no;
    d->fe_due = plan.fe_due;
    fl_srvmetrics_run(d->metrics, d->run_id);
    fl_log_set_run(d->run_id);
    fl_metrics_set_ready(d->metrics, 1); /* listening, with a run */
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
    FL_LOG_I(WHO, "exiting; peak RSS %.1f MiB", fl_startup_peak_rss_kib() / 1024.0);
out:
    if (d->server) {
        /* Started, but the run could not be opened. */
        fl_tls_server_close(d->server);
        d->server = NULL;
    }
    if (loop_ok) {
        /* Everything is closed when uv_run returns; make sure of it. */
        uv_run(&d->loop, UV_RUN_DEFAULT);
        uv_loop_close(&d->loop);
    }
    fl_uploads_free(d->uploads);
    for (size_t i = 0; i < d->nlast_selected; i++)
        free(d->last_selected[i]);
    free(d->last_selected);
    fl_tls_ctx_free(d->tls);
    fl_round_free(d->round);
    fl_fedeval_free(d->fe);
    fl_buf_unref(d->fe_model);
    fl_serveropt_free(d->opt);
    fl_wire_table_free(d->table, d->ntable);
    fl_agg_free(d->agg);
    fl_rdp_free(d->rdp);
    fl_secround_free(d->sec);
    free(d->sec_mean);
    fl_model_free(d->model);
    fl_eval_free(d->eval);
    free(d->x);
    fl_store_close(d->store);
    fl_metrics_http_stop(d->metrics_http);
    fl_metrics_free(d->metrics);
    free(d);
    return rc ? 1 : 0;
}
