/* fl_test_client: a minimal client of the fedopt protocol for the server's
 * integration tests (the real device client is client/). One process, one
 * connection, over mutual TLS with common/tls.
 *
 * Its "training" is deterministic and exact: the client model for a round is
 * c = x * mult (float32), and the delta it uploads is c - x, which is exact in
 * float32 when mult lies in [0.5, 2] (Sterbenz). With FedAvg and lr = 1 the
 * next global model must then equal (float)(sum w_i c_i / sum w_i) bit for
 * bit; --expect lists every client's weight:mult so each client can check
 * the model it receives in the following round.
 *
 * Modes (--mode): good, silent (takes the task, never uploads, keeps sending
 * heartbeats), die (uploads part of its delta, then SIGKILLs itself), stale
 * (uploads for the previous round id), dup (uploads the same update twice),
 * shape (one float short), nan (a NaN in the delta), mute (takes the task and
 * then sends nothing at all, not even heartbeats: a stalled device), overclaim
 * (an Update claiming 1000 times the examples its Hello declared). --delay S
 * makes any uploading mode wait S seconds first. --echo N sends N Heartbeats
 * asking for an answer (echo) right after the Welcome, one at a time, and
 * fails unless the server answered all N before its Bye (run the server with
 * a long --heartbeat so its own heartbeats are not taken for answers).
 *
 * Federated evaluation (--eval M): none (ignores EvalRequests), good (answers
 * with --weight examples, --eval-loss and --eval-acc), nan (a NaN loss), stale
 * (the previous round's id), count (2^64 - 5 examples: a negative count sent
 * unsigned), range (accuracy 1.5), dup (answers twice), decline (a TaskReply
 * declining it). Every answered request is printed as "evaluated round R".
 *
 * Protocol: a 1.0 client unless --minor 1 (then it asks for 1.1 in Hello and
 * prints every UpdateResult as "result KIND round R accepted|refused REASON
 * weight W: MESSAGE"; a 1.0 client that receives one fails). --hello-examples N
 * declares N examples in Hello (default: --weight).
 *
 * Exit status: 0 after the server's Bye with every check passed, 1 on a
 * failed check or a timeout, 2 on usage errors. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/net/tls.h"
#include "common/base/version.h"
#include "common/net/wire.h"

typedef struct {
    double w, mult;
} expect_t;

static struct {
    const char *host, *ca, *cert, *key, *mode, *name, *eval;
    double eval_loss, eval_acc;
    int64_t eval_round;
    int port, reconnect, minor;
    double hello_examples; /* < 0: --weight */
    double weight, mult, delay, timeout;
    expect_t expect[16];
    int nexpect;
    /* state */
    uv_loop_t *loop;
    fl_tls_ctx_t *tls;
    fl_tls_conn_t *conn;
    uv_timer_t hb, retry, guard, later;
    uint32_t heartbeat_ms;
    int64_t offer_round, run_id;
    size_t numel;
    float *x;          /* the model of the current task */
    float *prev_x;     /* the model of the previous task */
    int64_t prev_round;
    int got_bye, failures, checks, done;
    int echo, echo_sent, echo_got; /* --echo N */
} T;

static void connect_now(void);

static int send_env(Fedopt__Envelope *env)
{
    return T.conn ? fl_tls_conn_send_msg(T.conn, env) : FL_ECLOSED;
}

static void send_update(int64_t round, const float *delta, size_t n, size_t cut_bytes)
{
    Fedopt__Update u = FEDOPT__UPDATE__INIT;
    u.round_id = (uint64_t)round;
    u.weight = strcmp(T.mode, "overclaim") == 0 ? 1000 * T.weight : T.weight;
    u.num_examples = (uint64_t)u.weight;
    u.train_loss = 0.125 * T.mult;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
    env.update = &u;
    send_env(&env);
    fl_buf_t *buf = NULL;
    /* Small chunks, so "die" can stop in the middle of the transfer. */
    if (fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, (uint64_t)round, delta, n * sizeof(float), 4096,
                              &buf)) {
        fprintf(stderr, "%s: cannot encode the delta\n", T.name);
        exit(1);
    }
    if (cut_bytes && cut_bytes < buf->len) {
        fl_buf_t *part = NULL;
        if (fl_buf_new(cut_bytes, &part) == 0) {
            memcpy(part->data, buf->data, cut_bytes);
            fl_tls_conn_send(T.conn, part);
            fl_buf_unref(part);
        }
    } else {
        fl_tls_conn_send(T.conn, buf);
    }
    fl_buf_unref(buf);
}

/* Checks the model of round r+1 against the exact FedAvg mean of round r. */
static void check_mean(void)
{
    if (!T.nexpect || !T.prev_x || T.prev_round + 1 != T.offer_round)
        return;
    size_t bad = 0;
    double W = 0;
    for (int k = 0; k < T.nexpect; k++)
        W += T.expect[k].w;
    for (size_t j = 0; j < T.numel; j++) {
        double s = 0;
        for (int k = 0; k < T.nexpect; k++)
            s += T.expect[k].w * (double)(float)(T.prev_x[j] * (float)T.expect[k].mult);
        float want = (float)(s / W);
        if (memcmp(&want, &T.x[j], sizeof want) != 0 && bad++ < 3)
            fprintf(stderr, "%s: round %lld param %zu: got %.9g, want %.9g\n", T.name, (long long)T.offer_round, j,
                    T.x[j], want);
    }
    T.checks++;
    if (bad) {
        T.failures++;
        printf("%s: check round %lld: %zu of %zu parameters differ from the weighted mean\n", T.name,
               (long long)T.offer_round, bad, T.numel);
    } else {
        printf("%s: check round %lld: model equals the weighted mean of round %lld's client models exactly\n",
               T.name, (long long)T.offer_round, (long long)T.prev_round);
    }
    fflush(stdout);
}

static void upload(void)
{
    size_t n = T.numel;
    float *d = malloc(n * sizeof *d);
    if (!d)
        exit(1);
    for (size_t j = 0; j < n; j++) {
        float c = T.x[j] * (float)T.mult;
        d[j] = c - T.x[j];
    }
    int64_t r = T.offer_round;
    if (strcmp(T.mode, "nan") == 0)
        d[n / 2] = NAN;
    if (strcmp(T.mode, "stale") == 0)
        r = r - 1;
    if (strcmp(T.mode, "shape") == 0)
        n = n - 1;
    if (strcmp(T.mode, "die") == 0) {
        /* Begin, a few chunks, then the process dies mid-upload. */
        send_update(r, d, n, 3 * 4200);
        free(d);
        return;
    }
    send_update(r, d, n, 0);
    if (strcmp(T.mode, "dup") == 0)
        send_update(r, d, n, 0);
    free(d);
}

static void on_later(uv_timer_t *t)
{
    if (strcmp(T.mode, "die") == 0) {
        fprintf(stderr, "%s: dying mid-upload\n", T.name);
        kill(getpid(), SIGKILL);
    }
    upload();
}

static void on_model(fl_wire_event_t *ev)
{
    if ((int64_t)ev->round_id != T.offer_round || ev->nbytes != T.numel * sizeof(float)) {
        fprintf(stderr, "%s: model does not match the offer\n", T.name);
        T.failures++;
        return;
    }
    /* A redone round (after a server crash) must bring the same model. */
    if (T.prev_x && T.prev_round == T.offer_round) {
        if (memcmp(T.prev_x, ev->data, ev->nbytes) != 0) {
            printf("%s: round %lld redone with a different model\n", T.name, (long long)T.offer_round);
            T.failures++;
        } else {
            printf("%s: round %lld redone with the same model, bit for bit\n", T.name, (long long)T.offer_round);
        }
    }
    /* What was received, for the soak's check that every round's model is
     * exactly the previous round's checkpoint (fl_db_tool DB crcs). */
    printf("%s: round %lld model crc %08lx\n", T.name, (long long)T.offer_round,
           (unsigned long)fl_crc32(0, ev->data, ev->nbytes));
    free(T.x);
    T.x = (float *)ev->data; /* take it */
    ev->data = NULL;
    check_mean();
    if (strcmp(T.mode, "silent") == 0 || strcmp(T.mode, "mute") == 0)
        return;
    if (strcmp(T.mode, "die") == 0) {
        upload();
        uv_timer_start(&T.later, on_later, 300, 0);
        return;
    }
    if (T.delay > 0) {
        uv_timer_start(&T.later, on_later, (uint64_t)(T.delay * 1000), 0);
        return;
    }
    upload();
}

static void on_hb(uv_timer_t *t)
{
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    hb.unix_ms = (uint64_t)time(NULL) * 1000;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(&env);
}

static void send_echo(void)
{
    Fedopt__Heartbeat hb = FEDOPT__HEARTBEAT__INIT;
    hb.unix_ms = (uint64_t)time(NULL) * 1000;
    hb.echo = 1;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HEARTBEAT;
    env.heartbeat = &hb;
    if (send_env(&env) == 0)
        T.echo_sent++;
}

static void on_open(fl_tls_conn_t *c, void *ud)
{
    Fedopt__Hello h = FEDOPT__HELLO__INIT;
    h.protocol_version = FL_PROTOCOL_VERSION;
    h.client_name = (char *)T.name;
    h.software_version = FL_VERSION;
    h.num_examples = (uint64_t)(T.hello_examples >= 0 ? T.hello_examples : T.weight);
    h.protocol_minor = (uint32_t)T.minor;
    h.max_frame = FL_WIRE_DEFAULT_MAX_FRAME;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_HELLO;
    env.hello = &h;
    send_env(&env);
}

/* Answers an evaluation request as --eval says. */
static void on_eval_model(fl_wire_event_t *ev)
{
    const char *m = T.eval;
    if (strcmp(m, "none") == 0 || (int64_t)ev->round_id != T.eval_round)
        return;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    if (strcmp(m, "decline") == 0) {
        Fedopt__TaskReply tr = FEDOPT__TASK_REPLY__INIT;
        tr.round_id = (uint64_t)T.eval_round;
        tr.accept = 0;
        tr.reason = "test client declines";
        env.msg_case = FEDOPT__ENVELOPE__MSG_TASK_REPLY;
        env.task_reply = &tr;
        send_env(&env);
        return;
    }
    Fedopt__EvalResult er = FEDOPT__EVAL_RESULT__INIT;
    er.round_id = (uint64_t)T.eval_round - (strcmp(m, "stale") == 0);
    er.num_examples = strcmp(m, "count") == 0 ? (uint64_t)-5 : (uint64_t)T.weight;
    er.loss = strcmp(m, "nan") == 0 ? NAN : T.eval_loss;
    er.accuracy = strcmp(m, "range") == 0 ? 1.5 : T.eval_acc;
    env.msg_case = FEDOPT__ENVELOPE__MSG_EVAL_RESULT;
    env.eval_result = &er;
    send_env(&env);
    if (strcmp(m, "dup") == 0)
        send_env(&env);
    printf("%s: evaluated round %lld\n", T.name, (long long)T.eval_round);
    fflush(stdout);
}

static void on_message(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud)
{
    if (ev->kind == FL_WIRE_EV_TENSOR) {
        if (ev->purpose == FEDOPT__TENSOR_PURPOSE__TENSOR_MODEL)
            on_model(ev);
        else if (ev->purpose == FEDOPT__TENSOR_PURPOSE__TENSOR_EVAL_MODEL)
            on_eval_model(ev);
        return;
    }
    if (ev->kind != FL_WIRE_EV_MESSAGE || !ev->msg)
        return;
    Fedopt__Envelope *m = ev->msg;
    switch (m->msg_case) {
    case FEDOPT__ENVELOPE__MSG_WELCOME:
        T.heartbeat_ms = m->welcome->heartbeat_ms ? m->welcome->heartbeat_ms : 1000;
        uv_timer_start(&T.hb, on_hb, T.heartbeat_ms, T.heartbeat_ms);
        if (T.echo)
            send_echo();
        break;
    case FEDOPT__ENVELOPE__MSG_HEARTBEAT:
        if (T.echo_got < T.echo_sent && ++T.echo_got < T.echo)
            send_echo();
        break;
    case FEDOPT__ENVELOPE__MSG_TASK_OFFER: {
        /* mute: from the task on, nothing at all, not even heartbeats (a
         * device that stalled while training). */
        if (strcmp(T.mode, "mute") == 0)
            uv_timer_stop(&T.hb);
        /* A delayed upload of the model this offer replaces is void: after a
         * server crash the resumed server's offer can come before that timer
         * fires, which would then upload with no model at hand. */
        if (strcmp(T.mode, "die") != 0)
            uv_timer_stop(&T.later);
        /* Remember which round the model we hold belongs to before it is replaced. */
        int64_t held = T.offer_round;
        T.offer_round = (int64_t)m->task_offer->round_id;
        T.run_id = (int64_t)m->task_offer->run_id;
        if (T.numel && T.numel != m->task_offer->num_params) {
            free(T.x);
            free(T.prev_x);
            T.x = T.prev_x = NULL;
        }
        T.numel = m->task_offer->num_params;
        if (T.x) {
            /* The model we hold becomes the reference: the mean check for
             * the next round, or the same-model check for a redone round. */
            free(T.prev_x);
            T.prev_x = T.x;
            T.prev_round = held;
            T.x = NULL;
        }
        break;
    }
    case FEDOPT__ENVELOPE__MSG_EVAL_REQUEST:
        T.eval_round = (int64_t)m->eval_request->round_id;
        break;
    case FEDOPT__ENVELOPE__MSG_REJECT:
        fprintf(stderr, "%s: rejected: %s\n", T.name, m->reject->reason ? m->reject->reason : "");
        T.failures++;
        break;
    case FEDOPT__ENVELOPE__MSG_UPDATE_RESULT: {
        const Fedopt__UpdateResult *r = m->update_result;
        const ProtobufCEnumValue *why =
            protobuf_c_enum_descriptor_get_value(&fedopt__result_reason__descriptor, (int)r->reason);
        printf("%s: result %s round %llu %s %s weight %g: %s\n", T.name,
               r->kind == FEDOPT__RESULT_KIND__RESULT_EVAL ? "eval" : "update", (unsigned long long)r->round_id,
               r->accepted ? "accepted" : "refused", why ? why->name : "?", r->weight, r->message ? r->message : "");
        fflush(stdout);
        if (T.minor < 1) {
            fprintf(stderr, "%s: an UpdateResult sent to a 1.0 client\n", T.name);
            T.failures++;
        }
        break;
    }
    case FEDOPT__ENVELOPE__MSG_BYE:
        /* Only the end of the run ends a reconnecting client: a server
         * that stops (SIGTERM) will be back with --resume. */
        T.got_bye = !T.reconnect || (m->bye->reason && strcmp(m->bye->reason, "run finished") == 0);
        break;
    default:
        break;
    }
}

static void on_retry(uv_timer_t *t)
{
    connect_now();
}

static void on_close(fl_tls_conn_t *c, int reason, void *ud)
{
    T.conn = NULL;
    uv_timer_stop(&T.hb);
    if (T.got_bye || !T.reconnect) {
        if (!T.got_bye)
            fprintf(stderr, "%s: connection closed (%s)\n", T.name, fl_strerror(reason));
        T.done = 1;
        uv_stop(T.loop);
        return;
    }
    uv_timer_start(&T.retry, on_retry, 200, 0);
}

static void connect_now(void)
{
    fl_tls_cbs_t cbs = {.on_open = on_open, .on_message = on_message, .on_close = on_close};
    if (fl_tls_connect(T.loop, T.tls, T.host, T.port, "localhost", &cbs, NULL, &T.conn)) {
        T.conn = NULL;
        uv_timer_start(&T.retry, on_retry, 200, 0);
    }
}

static void on_guard(uv_timer_t *t)
{
    fprintf(stderr, "%s: timed out\n", T.name);
    T.failures++;
    uv_stop(T.loop);
}

static int parse_expect(const char *s)
{
    while (*s && T.nexpect < 16) {
        char *end;
        T.expect[T.nexpect].w = strtod(s, &end);
        if (*end != ':')
            return -1;
        T.expect[T.nexpect].mult = strtod(end + 1, &end);
        T.nexpect++;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        s = end;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* As fedopt-client: a server that goes away mid-write is a closed
     * connection (EPIPE, then --reconnect), not a client killed by SIGPIPE
     * (seen once under ASan in test_server_resume, status 141 after the
     * server's SIGTERM). */
    signal(SIGPIPE, SIG_IGN);
    T.host = "127.0.0.1";
    T.mode = "good";
    T.name = "client";
    T.weight = 1;
    T.hello_examples = -1;
    T.mult = 1.5;
    T.timeout = 60;
    T.eval = "none";
    T.eval_loss = 1;
    T.eval_acc = 0.5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--reconnect") == 0) {
            T.reconnect = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "usage: fl_test_client --port P --ca F --cert F --key F [--mode M] [--weight W] [--mult M]"
                            " [--expect W:M,...] [--delay S] [--timeout S] [--reconnect]\n"
                            "       [--minor 0|1] [--hello-examples N]\n"
                            "       [--eval none|good|nan|stale|count|range|dup|decline] [--eval-loss L] [--eval-acc A] [--echo N]\n");
            return 2;
        }
        i++;
        if (strcmp(a, "--port") == 0)
            T.port = atoi(v);
        else if (strcmp(a, "--host") == 0)
            T.host = v;
        else if (strcmp(a, "--ca") == 0)
            T.ca = v;
        else if (strcmp(a, "--cert") == 0)
            T.cert = v;
        else if (strcmp(a, "--key") == 0)
            T.key = v;
        else if (strcmp(a, "--mode") == 0)
            T.mode = v;
        else if (strcmp(a, "--name") == 0)
            T.name = v;
        else if (strcmp(a, "--weight") == 0)
            T.weight = atof(v);
        else if (strcmp(a, "--hello-examples") == 0)
            T.hello_examples = atof(v);
        else if (strcmp(a, "--minor") == 0)
            T.minor = atoi(v);
        else if (strcmp(a, "--mult") == 0)
            T.mult = atof(v);
        else if (strcmp(a, "--eval") == 0)
            T.eval = v;
        else if (strcmp(a, "--eval-loss") == 0)
            T.eval_loss = atof(v);
        else if (strcmp(a, "--echo") == 0)
            T.echo = atoi(v);
        else if (strcmp(a, "--eval-acc") == 0)
            T.eval_acc = atof(v);
        else if (strcmp(a, "--delay") == 0)
            T.delay = atof(v);
        else if (strcmp(a, "--timeout") == 0)
            T.timeout = atof(v);
        else if (strcmp(a, "--expect") == 0) {
            if (parse_expect(v)) {
                fprintf(stderr, "bad --expect\n");
                return 2;
            }
        } else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    fl_log_set_level(FL_LOG_WARN);
    fl_tls_opts_t o = {.ca_file = T.ca, .cert_file = T.cert, .key_file = T.key};
    if (fl_tls_ctx_new(FL_TLS_CLIENT, &o, &T.tls))
        return 1;
    T.loop = uv_default_loop();
    uv_timer_init(T.loop, &T.hb);
    uv_timer_init(T.loop, &T.retry);
    uv_timer_init(T.loop, &T.guard);
    uv_timer_init(T.loop, &T.later);
    uv_timer_start(&T.guard, on_guard, (uint64_t)(T.timeout * 1000), 0);
    connect_now();
    uv_run(T.loop, UV_RUN_DEFAULT);
    if (T.echo) {
        printf("%s: %d of %d echo heartbeats answered\n", T.name, T.echo_got, T.echo);
        T.checks++;
        T.failures += T.echo_got != T.echo;
    }
    int ok = T.got_bye && T.failures == 0;
    printf("%s: %s (%d checks, %d failures)\n", T.name, ok ? "done" : "FAILED", T.checks, T.failures);
    return ok ? 0 : 1;
}
