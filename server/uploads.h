/* uploads: the daemon's received-upload pipeline — a bounded number of
 * upload buffers and the aggregation queue that feeds the ServerOpt
 * accumulator from the libuv thread pool.
 *
 * Slots: at most `slots` uploads exist at once (being received, queued, or
 * being added). fl_uploads_acquire takes a slot or, when all are taken,
 * queues the waiter (FIFO); the caller then stops reading that connection,
 * so its bytes wait in TCP. A freed slot goes to the oldest waiter, through
 * the `granted` callback (the caller resumes reading).
 *
 * Aggregation: fl_uploads_submit queues a received delta (the slot moves to
 * it) and fl_uploads_kick starts the worker on everything queued so far, up
 * to FL_SERVEROPT_MAX_BATCH uploads in one pass over the accumulator
 * (fl_round_add_work_batch). One batch runs at a time; on the loop, `added`
 * reports each upload's outcome (in submission order), its slot is freed,
 * the next batch starts, and `idle` says the batch is done.
 *
 * Everything but the worker's add runs on the loop thread. The optimizer is
 * the caller's: no fl_round_begin/close while fl_uploads_busy. */
#ifndef FL_SERVER_UPLOADS_H
#define FL_SERVER_UPLOADS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "server/aggregate.h"
#include "server/serveropt.h"

/* Embedded in whatever waits for a slot (a connection); fl_uploads links it. */
typedef struct fl_uploads_waiter {
    struct fl_uploads_waiter *next;
} fl_uploads_waiter_t;

typedef struct {
    /* A queued waiter got its slot. */
    void (*granted)(fl_uploads_waiter_t *w, void *ud);
    /* An upload went through the accumulator: rc 0 (accepted; norm is its
     * delta's norm) or the refusal (FL_ENONFINITE, FL_ESHAPE, FL_EINVAL,
     * FL_ECANCELED when the worker was cancelled). name and the metrics are
     * what fl_uploads_submit was given. */
    void (*added)(const char *name, int rc, double weight, double loss, double norm, int64_t bytes,
                  double received_at, void *ud);
    /* A batch is done: every `added` of it was called. */
    void (*idle)(void *ud);
    /* May be NULL. Asked on the loop as a batch of `count` uploads starts:
     * 1 when those uploads are all the round is waiting for and, accepted,
     * complete it (fl_round_completed_by), so the round closes right after
     * them. The batch then runs the finish too (fl_uploads_set_finish). */
    int (*completes)(size_t count, void *ud);
} fl_uploads_cbs_t;

typedef struct fl_uploads fl_uploads_t;

/* Creates the pipeline on loop with `slots` (>= 1) buffers, adding into opt,
 * with the callbacks (copied) and their ud. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_uploads_create(uv_loop_t *loop, size_t slots, fl_serveropt_t *opt, const fl_uploads_cbs_t *cbs, void *ud,
                      fl_uploads_t **out);

/* Routes the worker's adds through an aggregator (server/aggregate.h:
 * clipping, the robust rules, DP) instead of straight into opt. Set before
 * the first upload; agg must outlive u. */
void fl_uploads_set_agg(fl_uploads_t *u, fl_agg_t *agg);

/* Lets the batch that completes a round (cbs.completes) run the round's
 * finish in the same pass over the model (fl_agg_add_batch_finish), where
 * the aggregator's rule allows it (fl_agg_can_fuse) and every upload in it
 * was submitted known finite. x (the model, the daemon's, n floats) is
 * stepped by the worker; the caller does not touch it while fl_uploads_busy.
 * NULL turns it off (the default). */
void fl_uploads_set_finish(fl_uploads_t *u, float *x);

/* After a batch, on the loop: 1 when it ran the round's finish, with *rc
 * its outcome (0, or FL_ENONFINITE: an upload submitted as finite was not,
 * and x was stepped in part), and res (may be NULL) the round's
 * fl_serveropt_round_t; it is then forgotten. 0 when no finish ran. */
int fl_uploads_take_finish(fl_uploads_t *u, int *rc, fl_serveropt_round_t *res);

/* As fl_uploads_take_finish, without forgetting it or filling res. */
int fl_uploads_finished(const fl_uploads_t *u, int *rc);

/* Frees it and every queued upload (call once the loop has ended: no batch
 * in the worker). Accepts NULL. */
void fl_uploads_free(fl_uploads_t *u);

/* Takes a slot for an upload about to be received: 1 when it got one now,
 * 0 when w was queued (granted later, or fl_uploads_cancel). */
int fl_uploads_acquire(fl_uploads_t *u, fl_uploads_waiter_t *w);

/* A queued waiter leaves (its connection closed). No effect if not queued. */
void fl_uploads_cancel(fl_uploads_t *u, fl_uploads_waiter_t *w);

/* Frees a slot that did not become a submitted upload (a refused or broken
 * one), granting it to the oldest waiter. */
void fl_uploads_release(fl_uploads_t *u);

/* Queues a received upload in its slot: delta (n floats, malloc'ed) becomes
 * the pipeline's on success. finite: every value is known finite (checked
 * as it arrived); 0 when not known (it is checked in the add as before). Returns 0 or FL_ENOMEM (nothing taken: the
 * caller still owns delta and the slot). Call fl_uploads_kick after. */
int fl_uploads_submit(fl_uploads_t *u, const char *name, float *delta, size_t n, double weight, double loss,
                      int64_t bytes, double received_at, int finite);

/* Starts the worker on the queued uploads unless a batch is running. */
void fl_uploads_kick(fl_uploads_t *u);

/* 1 while uploads are queued or being added. */
int fl_uploads_busy(const fl_uploads_t *u);

/* Slots in use. */
size_t fl_uploads_in_use(const fl_uploads_t *u);

/* The last finished batch: its uploads and the seconds the worker spent
 * adding them (for the aggregation metric; 0 and 0 before the first). */
void fl_uploads_last_batch(const fl_uploads_t *u, size_t *count, double *seconds);

#endif
