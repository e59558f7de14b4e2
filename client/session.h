/* session: one federated client's side of the protocol, on a libuv loop.
 *
 * A session connects to the server over mutual TLS (common/tls), says Hello,
 * and then serves the server until it is stopped:
 *   Welcome            start heartbeats (every half of Welcome.heartbeat_ms)
 *   TaskOffer + model  queue a training job; the job runs in the libuv thread
 *                      pool (never on the loop, so heartbeats keep flowing
 *                      while a long local epoch runs), builds the model for
 *                      the client's data, trains it with the offer's ClientOpt
 *                      settings, and encodes Update + the delta transfer
 *                      (delta = trained - received) off the loop too
 *   EvalRequest + model evaluate on the local data in the pool, EvalResult
 *   Reject / Bye / a lost connection
 *                      reconnect after an exponential back-off with jitter
 *                      (unless the reason cannot heal by retrying: bad
 *                      certificates, a model the client cannot train)
 * A session holds a model only from the moment its bytes arrive until its
 * delta is handed to the transport: an idle connected session holds only
 * its own state here plus the TLS connection, so a fleet's memory grows with
 * its running jobs, not its clients (bench_fleet part 2 measures a large
 * fleet's peak RSS). The sessions of one pool share
 * a round's model: the first one offered the round receives it, the others
 * receive into a scratch buffer and keep only their transfer's verified
 * CRC-32, and use the first one's copy when the CRCs are equal (else they
 * decline the task). A queued job holds a reference; the worker's model is
 * the working copy. So a fleet holds the shared model and the scratch per
 * round plus one model per running job (kept between jobs by each job slot
 * with fl_session_pool_keep_models), not one per client waiting for a slot.
 *
 * Sessions share a pool (fl_session_pool_t) that caps how many jobs run at
 * once: one for a device, J for a simulated fleet whose N sessions live on one
 * loop. The pool also owns the TLS contexts' lifetime rules: a context must
 * outlive every session that uses it.
 *
 * The work itself (build the model, train, compute and encode the delta) is
 * client/task's; a session only moves its inputs and outputs.
 *
 * Hooks (fl_session_hooks_t, optional): points where the owner of a session
 * may change what it does with a task. A device client sets none; the
 * simulated fleet (client/fleet) injects its faults through them. */
#ifndef FL_CLIENT_SESSION_H
#define FL_CLIENT_SESSION_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "client/attack.h"
#include "common/data/dataset.h"
#include "common/net/tls.h"

typedef struct fl_session fl_session_t;
typedef struct fl_session_pool fl_session_pool_t;

/* Where a session is; fl_session_state() reports it for progress displays. */
typedef enum {
    FL_SESSION_WAITING = 0, /* not connected: waiting to (re)connect */
    FL_SESSION_CONNECTING,  /* TCP/TLS handshake or Hello sent */
    FL_SESSION_READY,       /* welcomed, no task */
    FL_SESSION_RECEIVING,   /* offer received, model arriving */
    FL_SESSION_QUEUED,      /* model received, waiting for a pool slot */
    FL_SESSION_TRAINING,    /* a job runs in the pool */
    FL_SESSION_STRAGGLING,  /* trained, holding the upload back (hooks.hold) */
    FL_SESSION_UPLOADING,   /* delta queued on the connection */
    FL_SESSION_DONE,        /* stopped or failed for good (see fl_session_result) */
    FL_SESSION__NSTATES
} fl_session_state_t;

/* Optional hooks into a session's training tasks; each may be NULL. `ud`
 * is passed back to the functions called on the loop. client is the
 * session's opts.id, round the task's round. */
typedef struct {
    /* On the loop, once a training task's model has arrived: nonzero makes
     * the session close its connection without a word (and reconnect later,
     * as after any lost connection). */
    int (*vanish)(void *ud, uint64_t client, uint64_t round);
    /* On the loop, when a training task is queued: a nonzero code has
     * tamper() called on the task's delta. */
    int (*tamper_code)(void *ud, uint64_t client, uint64_t round);
    /* On the worker thread, after the delta is computed and before it is
     * encoded: may change the n floats of delta and lower *n. It must touch
     * nothing but its arguments (other sessions' tasks run at once). */
    void (*tamper)(int code, float *delta, size_t *n);
    /* On the loop, when a training task has finished: seconds to hold its
     * upload back (0 = send now). */
    double (*hold)(void *ud, uint64_t client, uint64_t round);
    /* On the loop, when a training task is queued: the Byzantine attack the
     * client mounts (client/attack.h), or NULL for an honest client. The
     * session applies it on the worker thread: labelflip to a copy of the
     * client's share before training, the others to the delta. The attack
     * must outlive the session. */
    const fl_attack_t *(*attack)(void *ud, uint64_t client);
    /* On the loop, right after a secure round's masked input was queued:
     * nonzero makes the session close its connection (gracefully: the
     * input still arrives), a party that drops before unmasking. */
    int (*unmask_drop)(void *ud, uint64_t client, uint64_t round);
    /* On the loop, when a secure round's masked input is sent: the n
     * quantized words before masking (a fleet's test sums them to compare
     * with the server's unmasked sum). */
    void (*secagg_plain)(void *ud, uint64_t client, uint64_t round, const uint32_t *words, size_t n);
    void *ud;
} fl_session_hooks_t;

/* Counters, for progress lines and tests. */
typedef struct {
    uint64_t connects;      /* Welcomes received */
    uint64_t offers;        /* TaskOffers received */
    uint64_t uploads;       /* deltas handed to the transport */
    uint64_t evals;         /* EvalResults sent */
    uint64_t failed_jobs;   /* trainings or evaluations that failed */
    uint64_t samples;       /* examples passed through the trainings that finished, every epoch
                               counted (uploaded or not: the work done) */
    double train_seconds;   /* wall time of those trainings */
    uint64_t last_offer_round;  /* round id of the latest offer (0 = none) */
    uint64_t last_upload_round; /* round id of the latest upload (0 = none) */
    double last_train_loss;
    double last_train_seconds;
    uint64_t accepted;      /* UpdateResults (protocol 1.1) saying accepted */
    uint64_t refused;       /* ... saying refused */
    int last_result_reason; /* the latest UpdateResult's ResultReason */
} fl_session_stats_t;

/* Called once, on the loop, when the session reaches FL_SESSION_DONE: rc 0
 * after fl_session_stop or giving up, else the FL_E* code of a failure that
 * retrying cannot fix. The session may be freed from inside the callback. */
typedef void (*fl_session_done_cb)(fl_session_t *s, int rc, void *ud);

/* Settings of one session. Strings and the dataset are borrowed: they must
 * outlive the session. */
typedef struct {
    const char *host;         /* server address or name */
    int port;
    const char *server_name;  /* expected in the server certificate (NULL = host) */
    fl_tls_ctx_t *tls;        /* a client context (its certificate is our identity) */
    const char *name;         /* Hello.client_name (informational; logs) */
    uint64_t id;              /* stable client number: stream ids for training and jitter */
    const fl_dataset_t *data; /* local training data */
    const uint32_t *index;    /* the client's examples in data (NULL = all of data) */
    size_t nindex;
    const char *data_spec;    /* Hello.data_spec text (may be NULL) */
    const char *const *models; /* models this client can train (Hello.models) */
    size_t nmodels;
    int gemm_threads;         /* threads a job's model trains on (fl_model_set_threads,
                                 which also picks the GEMM thread count);
                                 0 = leave GEMM threading as it is */
    double backoff_min;       /* first reconnect delay, seconds (default 0.5) */
    double backoff_max;       /* cap of the delay (default 30) */
    double give_up;           /* seconds without being welcomed before giving up (0 = never) */
    double silence;           /* seconds without any message before the server is taken
                                 for gone (default: 4 heartbeat intervals, min 10 s) */
    int log_rounds;           /* 1: an info line per uploaded round (a device); 0: debug */
    int stop_on_finish;       /* 1: stop (rc 0) when the server says Bye "run finished";
                                 0: keep reconnecting, waiting for the next run */
    uint64_t seed;            /* the reconnect jitter's stream */
    const fl_session_hooks_t *hooks; /* NULL = none (borrowed: must outlive the session) */
    fl_session_done_cb on_done;
    void *ud;
} fl_session_opts_t;

/* Creates a pool running at most `jobs` (>= 1) jobs at once on `loop`.
 * libuv's thread pool must have at least that many threads (UV_THREADPOOL_SIZE
 * is read once, at the first queued work: fl_session_pool_threads sets it).
 * Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_session_pool_create(uv_loop_t *loop, unsigned jobs, fl_session_pool_t **out);

/* Makes the pool keep a model per job slot between jobs (client/task's
 * workspaces): a job reuses the model the previous job in its slot built
 * when the model and data shapes are the same, instead of building, faulting
 * in and freeing one per task; likewise the pool keeps a finished round's
 * shared model and scratch buffers for the next round's. For a simulated
 * fleet, which trains task after task; the pool then holds `jobs` models and
 * two received ones for its lifetime, also while idle, so a device client
 * does not call it. Call before any job runs.
 * Returns 0, FL_EINVAL or FL_ENOMEM (the pool then builds a model per task). */
int fl_session_pool_keep_models(fl_session_pool_t *p);

/* Models built by the pool's kept workspaces so far (0 without
 * fl_session_pool_keep_models): for tests. */
size_t fl_session_pool_builds(const fl_session_pool_t *p);

/* Frees a pool with no sessions left, and its kept models. Accepts NULL. */
void fl_session_pool_free(fl_session_pool_t *p);

/* Jobs running and jobs waiting for a slot. */
unsigned fl_session_pool_running(const fl_session_pool_t *p);
unsigned fl_session_pool_waiting(const fl_session_pool_t *p);

/* Shared round models the pool's sessions hold now: one per round being
 * received or trained, however many sessions wait for a slot with it. */
unsigned fl_session_pool_models(const fl_session_pool_t *p);

/* Sets UV_THREADPOOL_SIZE so libuv's pool has room for `jobs` jobs plus the
 * transport's name lookups; call before the loop queues any work. */
void fl_session_pool_threads(unsigned jobs);

/* Creates a session on the pool's loop and starts connecting. *out is the
 * caller's: free it with fl_session_free once on_done has run (or from
 * on_done). Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_session_start(fl_session_pool_t *pool, const fl_session_opts_t *opts, fl_session_t **out);

/* Says Bye and closes the connection, cancels reconnects, and lets a running
 * job finish; on_done(rc 0) follows once nothing is left. Safe to call twice. */
void fl_session_stop(fl_session_t *s);

/* Frees a session that is done (FL_SESSION_DONE). Accepts NULL. */
void fl_session_free(fl_session_t *s);

fl_session_state_t fl_session_state(const fl_session_t *s);
const fl_session_stats_t *fl_session_stats(const fl_session_t *s);
const char *fl_session_name(const fl_session_t *s);
/* The result given to on_done (meaningful in FL_SESSION_DONE). */
int fl_session_result(const fl_session_t *s);
/* Splits "HOST:PORT" or "[IPv6]:PORT" into host (NUL-terminated, at most
 * hlen - 1 characters) and port (1..65535). Returns 0 or FL_EINVAL. */
int fl_session_parse_addr(const char *text, char *host, size_t hlen, int *port);

/* A state's name ("training"). Never NULL. */
const char *fl_session_state_name(fl_session_state_t st);

#endif
