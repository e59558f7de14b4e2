/* round: one federated round's bookkeeping, independent of sockets.
 *
 * The daemon (server/daemon.c) drives it from the event loop; the tests drive
 * it with fake clients. A round:
 *   fl_round_begin   selects S = min(ceil(K * over_selection), connected)
 *                    clients uniformly without replacement from the stream
 *                    {seed, run, round, FL_RNG_SELECT}, over the connected
 *                    clients sorted by name (so the same clients give the same
 *                    choice after a resume), and opens a ServerOpt round;
 *   fl_round_check   screens an update's header before its bytes are
 *                    buffered: stale round id, not selected, duplicate, wrong
 *                    shape, bad weight, round already complete;
 *   fl_round_add_start / fl_round_add_work / fl_round_add_end
 *                    stream one update into the ServerOpt accumulator. Only
 *                    add_work touches the accumulator, so it may run in the
 *                    libuv thread pool while the loop keeps going (one
 *                    add_work at a time; server/uploads serializes them);
 *   fl_round_drop    records a selected client that disconnected or stalled;
 *   fl_round_refuse  records any other refused update (e.g. one that failed
 *                    to decode), so every update lands in the log;
 *   fl_round_is_complete / fl_round_deadline_passed tell when to close;
 *   fl_round_close   decides closed (>= min_reports accepted) or abandoned,
 *                    marks the still-pending clients dropped, and fills the
 *                    row and the update records for fl_store_commit_round;
 *   fl_round_finish_work (off the loop, when the round closed) applies
 *                    ServerOpt to the global model and serializes its state
 *                    for the round's checkpoint.
 * This module is the one owner of the ServerOpt round: begin (in
 * fl_round_begin), add, finish and the state's serialization, including the
 * initial checkpoint's state (fl_round_state_save) and its restore on
 * --resume (fl_round_restore). The caller creates and frees the optimizer.
 *
 * Two clocks (common/base/clock.h): every `now` is monotonic seconds (any
 * origin) and is used only for the deadline and the durations recorded per
 * update; every `wall` is Unix seconds and is used only for the stored
 * started_at/finished_at. A wall-clock step (NTP, `date -s`) therefore never
 * moves a deadline.
 *
 * Nothing here blocks or allocates per byte of model; memory is one record
 * per selected client plus one per refused update. */
#ifndef FL_SERVER_ROUND_H
#define FL_SERVER_ROUND_H

#include <stddef.h>
#include <stdint.h>

#include "server/serveropt.h"
#include "server/store.h"

typedef struct {
    int64_t run_id;
    uint64_t seed;
    uint32_t clients_per_round; /* K: accepted updates that complete a round */
    uint32_t min_reports;       /* accepted updates needed to close at the deadline */
    double over_selection;      /* >= 1 */
    double deadline_s;          /* seconds from begin to the deadline */
    size_t numel;               /* the model's parameter count */
} fl_round_config_t;

/* Why an update was refused (the text lands in updates.reason). */
typedef enum {
    FL_REFUSE_NONE = 0,
    FL_REFUSE_STALE,        /* round id is not the open round's */
    FL_REFUSE_NOT_SELECTED, /* the client was not selected this round */
    FL_REFUSE_DUPLICATE,    /* the client already delivered an update this round */
    FL_REFUSE_SHAPE,        /* parameter count differs from the model's */
    FL_REFUSE_NONFINITE,    /* NaN or Inf in the delta */
    FL_REFUSE_WEIGHT,       /* example count not finite or <= 0 */
    FL_REFUSE_COMPLETE,     /* the round already had K accepted updates */
    FL_REFUSE_CLOSED,       /* no round is open (between rounds) */
    FL_REFUSE_MALFORMED,    /* the upload failed to decode or its checksum failed */
    FL_REFUSE_CLAIM,        /* more examples than declared in Hello or than max_client_examples */
    FL_REFUSE_SECAGG,       /* a masked input whose secure round was abandoned (add_end rc FL_ECANCELED) */
    FL_REFUSE__COUNT
} fl_refuse_t;

/* The reason's text ("stale round", ...). Never NULL. */
const char *fl_round_refuse_text(fl_refuse_t why);

typedef struct fl_round fl_round_t;

/* Creates the bookkeeper (no round open). The config is copied. */
int fl_round_create(const fl_round_config_t *cfg, fl_round_t **out);

/* Frees it. Accepts NULL. */
void fl_round_free(fl_round_t *r);

/* Selects count of the n candidate names into out[] (indices into names),
 * uniformly without replacement, from the stream {seed, run, round,
 * FL_RNG_SELECT}. The candidates are ranked by name first, so the result does
 * not depend on their order in names[]. count <= n. Returns 0, FL_EINVAL or
 * FL_ENOMEM. */
int fl_round_select(uint64_t seed, int64_t run_id, int64_t round, const char *const *names, size_t n, size_t count,
                    size_t *out);

/* fl_round_select from the stream {seed, run, round, purpose} (an FL_RNG_*
 * purpose: FL_RNG_FEDEVAL for a federated evaluation's sample). */
int fl_round_select_for(uint64_t seed, int64_t run_id, int64_t round, uint64_t purpose, const char *const *names,
                        size_t n, size_t count, size_t *out);

/* Opens round `round` over the n connected client names (copied) at
 * monotonic time now (the deadline is now + deadline_s) and wall time wall
 * (the row's started_at), selecting S of them, and calls
 * fl_serveropt_begin(opt). Fails with FL_EEMPTY when n == 0, FL_ESTATE when a
 * round is open. */
int fl_round_begin(fl_round_t *r, int64_t round, const char *const *names, size_t n, fl_serveropt_t *opt,
                   double now, double wall);

/* The open round's number (0 when none is open). */
int64_t fl_round_number(const fl_round_t *r);

/* Number of selected clients, and the i-th one's name (borrowed until close). */
size_t fl_round_selected_count(const fl_round_t *r);
const char *fl_round_selected_name(const fl_round_t *r, size_t i);

/* 1 when `client` was selected in the open round. */
int fl_round_is_selected(const fl_round_t *r, const char *client);

/* The most examples one client may claim, in an update's weight or an
 * evaluation answer: what it declared in Hello.num_examples, lowered to the
 * operator's max_client_examples (op_max; 0 = no operator limit). A Hello of 0
 * declares nothing: the operator's limit alone caps such a client, and
 * without one the result is 0, so any claim of a positive count is refused
 * (a client that said nothing can never outweigh the others). */
uint64_t fl_round_example_cap(uint64_t declared, int64_t op_max);

/* Screens an update announced by `client` for round `round_id` with numel
 * parameters and weight num_examples. Returns FL_REFUSE_NONE when it may be
 * received, else the reason (nothing is recorded: call fl_round_refuse). */
fl_refuse_t fl_round_check(const fl_round_t *r, const char *client, int64_t round_id, size_t numel,
                           double num_examples);

/* Marks the client's update as being aggregated (so a second one is a
 * duplicate), after fl_round_check said yes. Returns 0 or FL_ESTATE. */
int fl_round_add_start(fl_round_t *r, const char *client);

/* The aggregation itself: fl_serveropt_add of the delta, and its norm into
 * *norm. Touches only opt; safe in a worker thread while the loop runs other
 * fl_round_* calls, as long as only one add_work runs at a time and no
 * fl_round_begin/close happens meanwhile. Returns fl_serveropt_add's code. */
int fl_round_add_work(fl_serveropt_t *opt, const float *delta, size_t n, double num_examples, double *norm);

/* add_work for `count` buffered uploads at once (1..FL_SERVEROPT_MAX_BATCH):
 * one pass over the accumulator for all of them (fl_serveropt_add_batch);
 * rc[i] and norm[i] as add_work would give them. Same threading rules.
 * Returns 0 or FL_EINVAL/FL_ESTATE for the call itself. */
int fl_round_add_work_batch(fl_serveropt_t *opt, const float *const *deltas, const double *num_examples,
                            size_t count, size_t n, int *rc, double *norm);

/* Notes the training accuracy a selected client's Update for round_id
 * reported (NaN: none), before its delta arrives; an accepted update's value
 * goes into its update row and the round's example-weighted
 * train_accuracy. Ignored for a client not pending in the open round (a
 * duplicate cannot overwrite it) and stored as NaN outside [0, 1]. */
void fl_round_note_accuracy(fl_round_t *r, const char *client, int64_t round_id, double accuracy);

/* Records the outcome of add_work for `client` (rc 0 = accepted, else
 * refused: FL_ENONFINITE, FL_ESHAPE, FL_EINVAL) with its metrics. */
int fl_round_add_end(fl_round_t *r, const char *client, int rc, double num_examples, double train_loss,
                     double norm, int64_t bytes, double now);

/* Records a refused update from any client with a reason (the open round's
 * log gets the row; between rounds it is kept for the next one). */
int fl_round_refuse(fl_round_t *r, const char *client, fl_refuse_t why, int64_t bytes, double now);

/* Records that a selected client will not deliver (reason e.g.
 * "disconnected", "stalled"). No effect when it already delivered or is not
 * selected. Returns 0 or FL_ENOTFOUND. */
int fl_round_drop(fl_round_t *r, const char *client, const char *reason, double now);

/* 1 when the `count` updates being aggregated are all there are, and with
 * them accepted the round has its K: then it closes (closed, not abandoned)
 * as soon as they are in, so their batch may run the finish too
 * (server/uploads.h). */
int fl_round_completed_by(const fl_round_t *r, size_t count);

/* 1 when K updates were accepted, or every selected client has been
 * resolved (accepted, refused or dropped) and none is being aggregated. */
int fl_round_is_complete(const fl_round_t *r);

/* 1 when monotonic time now is at or past the open round's deadline. */
int fl_round_deadline_passed(const fl_round_t *r, double now);

/* Seconds left until the deadline (may be negative). */
double fl_round_time_left(const fl_round_t *r, double now);

/* Accepted updates and updates being aggregated so far. */
uint32_t fl_round_accepted(const fl_round_t *r);
uint32_t fl_round_in_flight(const fl_round_t *r);

/* Counts bytes sent to clients this round (for the row). */
void fl_round_add_bytes_out(fl_round_t *r, int64_t bytes);

/* Closes the round at monotonic time now and wall time wall (the row's
 * finished_at; FL_ESTATE if an add is still in flight): pending selected
 * clients become dropped ("deadline", or "surplus" when K had been reached),
 * the row (*row) and the update records (*ups, *nups, owned by r until the
 * next begin or free) are filled, and *closed says whether at least
 * min_reports updates were accepted (the caller then runs
 * fl_round_finish_work; the row's status is "closed" or "abandoned"). */
int fl_round_close(fl_round_t *r, double now, double wall, fl_store_round_t *row, const fl_store_update_t **ups,
                   size_t *nups, int *closed);

/* Seconds (monotonic) from the last begin to the last close: the duration
 * of the round fl_round_close last closed. */
double fl_round_last_seconds(const fl_round_t *r);

/* The closed round's ServerOpt step, off the loop like add_work (same
 * threading rules, after fl_round_close said closed): fl_serveropt_finish
 * applies the mean of the accepted deltas to the global model x (n floats;
 * res may be NULL), then the optimizer state is serialized into *state
 * (*state_len bytes, malloc'ed, the caller frees) for the checkpoint.
 * Returns 0 or fl_serveropt_finish's / fl_serveropt_state_save's code
 * (*state is NULL then). */
int fl_round_finish_work(fl_serveropt_t *opt, float *x, size_t n, fl_serveropt_round_t *res, uint8_t **state,
                         size_t *state_len);

/* The optimizer state serialized for a checkpoint (a new run's round 0):
 * *state is malloc'ed, the caller frees it. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_round_state_save(const fl_serveropt_t *opt, uint8_t **state, size_t *state_len);

/* Restores a checkpoint: its model into x (n floats) and its optimizer state
 * into opt, then proves the restore: the model and the re-serialized state
 * must checksum to the checkpoint's checksum (*checksum gets it). Returns 0,
 * FL_ESHAPE (cp holds another parameter count), the state loader's code
 * (FL_EFORMAT, FL_ECHECKSUM, FL_ESHAPE: opt untouched) or FL_ECHECKSUM (the
 * restored state differs from what was committed); each failure is logged. */
int fl_round_restore(fl_serveropt_t *opt, float *x, size_t n, const fl_store_checkpoint_t *cp, uint32_t *checksum);

#endif
