/* fedeval: one federated evaluation's bookkeeping, independent of sockets.
 *
 * After the commit of every fed_eval_every-th round the daemon asks a sample
 * of clients to evaluate the new global model on their own data
 * (EvalRequest + the model) and records the example-weighted mean of their
 * answers (proto/fedopt.proto EvalResult). This module holds one such
 * evaluation:
 *   fl_fedeval_begin   samples min(clients, connected) of the connected
 *                      clients uniformly without replacement from the stream
 *                      {seed, run, round, FL_RNG_FEDEVAL} over the names
 *                      ranked (fl_round_select_for), so a resumed server given
 *                      the same clients asks the same ones;
 *   fl_fedeval_answer  screens and records one EvalResult: stale round, not
 *                      sampled, duplicate, non-finite or negative loss,
 *                      accuracy outside [0, 1], no examples or an impossible
 *                      count, or more examples than the client's cap (what it
 *                      declared, the operator's limit) are refused;
 *   fl_fedeval_drop    a sampled client that disconnected, declined or let
 *                      the deadline pass;
 *   fl_fedeval_close   fills the fed_evals row (weighted means over the
 *                      accepted answers, in double) and the per-client rows.
 * Two clocks, as in server/round.h: every `now` is monotonic seconds, used
 * for the deadline and the per-client seconds only; every `wall` is Unix
 * seconds, used for the stored started_at/finished_at only.
 * Nothing blocks; memory is one record per sampled client plus at most
 * FL_FEDEVAL_MAX_EXTRA records of answers from outside the sample. */
#ifndef FL_SERVER_FEDEVAL_H
#define FL_SERVER_FEDEVAL_H

#include <stddef.h>
#include <stdint.h>

#include "server/store.h"

/* Records kept per evaluation for answers from clients outside the sample
 * (and duplicates): beyond it they are only logged, so a spamming client
 * cannot grow memory. */
#define FL_FEDEVAL_MAX_EXTRA 64

typedef struct {
    int64_t run_id;
    uint64_t seed;
    uint32_t clients;   /* clients asked per evaluation (fed_eval_clients) */
    double deadline_s;  /* seconds from begin to the deadline */
} fl_fedeval_config_t;

/* Why an answer was refused (the text lands in fed_eval_results.reason). */
typedef enum {
    FL_FEDEVAL_OK = 0,
    FL_FEDEVAL_STALE,        /* round id is not the open evaluation's */
    FL_FEDEVAL_NOT_SELECTED, /* the client was not asked */
    FL_FEDEVAL_DUPLICATE,    /* the client already answered */
    FL_FEDEVAL_BAD_LOSS,     /* loss NaN, Inf or negative */
    FL_FEDEVAL_BAD_ACCURACY, /* accuracy NaN, Inf or outside [0, 1] */
    FL_FEDEVAL_BAD_COUNT,    /* zero examples, or not a count (beyond 2^53) */
    FL_FEDEVAL_CLAIM,        /* more examples than the client's cap (begin's holds) */
    FL_FEDEVAL_CLOSED,       /* no evaluation is open */
    FL_FEDEVAL__COUNT
} fl_fedeval_verdict_t;

typedef struct fl_fedeval fl_fedeval_t;

/* The verdict's text ("stale round", ...). Never NULL. */
const char *fl_fedeval_verdict_text(fl_fedeval_verdict_t v);

/* Creates the bookkeeper (nothing open). The config is copied. */
int fl_fedeval_create(const fl_fedeval_config_t *cfg, fl_fedeval_t **out);

/* Frees it. Accepts NULL. */
void fl_fedeval_free(fl_fedeval_t *e);

/* Opens the evaluation of round `round`'s global model over the n connected
 * client names (copied) at monotonic time now and wall time wall (the row's
 * started_at), sampling S = min(clients, n). holds[i] is the most examples
 * client i's answer may count (the daemon passes fl_round_example_cap of its
 * Hello and max_client_examples, lowered to fed_eval_max_examples); 0 allows
 * none, so every answer of that client is refused. holds NULL: no cap (tests
 * of the other rules). Fails with
 * FL_EEMPTY when n == 0, FL_ESTATE when one is open. */
int fl_fedeval_begin(fl_fedeval_t *e, int64_t round, const char *const *names, const uint64_t *holds, size_t n,
                     double now, double wall);

/* The open evaluation's round (0 when none is open). */
int64_t fl_fedeval_round(const fl_fedeval_t *e);

/* Sampled clients, and the i-th one's name (borrowed until the next begin). */
size_t fl_fedeval_selected_count(const fl_fedeval_t *e);
const char *fl_fedeval_selected_name(const fl_fedeval_t *e, size_t i);

/* Screens and records an EvalResult from `client` for round_id. Returns the
 * verdict; FL_FEDEVAL_OK means it counts. Every refusal is recorded (up to
 * FL_FEDEVAL_MAX_EXTRA for clients outside the sample); a sampled client
 * whose answer is refused is resolved by it. */
fl_fedeval_verdict_t fl_fedeval_answer(fl_fedeval_t *e, const char *client, int64_t round_id, uint64_t num_examples,
                                       double loss, double accuracy, double now);

/* Records that a sampled client will not answer (reason e.g. "disconnected").
 * No effect when it already answered or was not sampled. */
void fl_fedeval_drop(fl_fedeval_t *e, const char *client, const char *reason, double now);

/* 1 when every sampled client is resolved. */
int fl_fedeval_is_complete(const fl_fedeval_t *e);

/* 1 when monotonic time now is at or past the open evaluation's deadline. */
int fl_fedeval_deadline_passed(const fl_fedeval_t *e, double now);

/* Closes the evaluation at monotonic time now and wall time wall (the row's
 * finished_at): pending clients become dropped ("deadline"), *row and the
 * per-client records (*res, *nres, owned by e until the next begin or free)
 * are filled. Returns 0 or FL_ESTATE (none open). */
int fl_fedeval_close(fl_fedeval_t *e, double now, double wall, fl_store_fedeval_t *row,
                     const fl_store_fedeval_result_t **res, size_t *nres);

/* Seconds (monotonic) from the last begin to the last close. */
double fl_fedeval_last_seconds(const fl_fedeval_t *e);

/* Closes the open evaluation without a result (a stopping server): nothing
 * of it is recorded, so a resumed server redoes it. */
void fl_fedeval_abort(fl_fedeval_t *e);

#endif
