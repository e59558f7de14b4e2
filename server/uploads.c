#include "server/uploads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/clock.h"
#include "common/base/error.h"
#include "server/round.h"

/* A received upload waiting for (or in) the aggregation worker. */
typedef struct job {
    struct job *next;
    char *name;
    float *delta;
    size_t n;
    double weight, loss, norm, received_at;
    int64_t bytes;
    int rc;
    int finite; /* every value known finite (fl_wire_event_t.finite) */
} job_t;

struct fl_uploads {
    uv_loop_t *loop;
    size_t slots, used; /* used: receiving + queued + in the worker */
    fl_serveropt_t *opt;
    fl_agg_t *agg; /* NULL: add straight into opt */
    fl_uploads_cbs_t cbs;
    void *ud;
    fl_uploads_waiter_t *wait_head, *wait_tail;
    job_t *jobs_head, *jobs_tail;
    job_t *running; /* the batch in the worker, a list */
    uv_work_t work;
    size_t batch_n;   /* the last batch's uploads and seconds (written by the */
    double batch_s;   /* worker, read on the loop after it: no race) */
    float *x;         /* fl_uploads_set_finish: the model the finish steps */
    int fuse;         /* the running batch ends the round: fused with the finish */
    int finished;     /* the finish ran in a batch; finish_rc, finish_res its outcome */
    int finish_rc;
    fl_serveropt_round_t finish_res;
};

int fl_uploads_create(uv_loop_t *loop, size_t slots, fl_serveropt_t *opt, const fl_uploads_cbs_t *cbs, void *ud,
                      fl_uploads_t **out)
{
    if (!loop || !slots || !opt || !cbs || !out)
        return FL_EINVAL;
    fl_uploads_t *u = calloc(1, sizeof *u);
    if (!u)
        return FL_ENOMEM;
    u->loop = loop;
    u->slots = slots;
    u->opt = opt;
    u->cbs = *cbs;
    u->ud = ud;
    *out = u;
    return 0;
}

static void free_jobs(job_t *j)
{
    for (job_t *n; j; j = n) {
        n = j->next;
        free(j->delta);
        free(j->name);
        free(j);
    }
}

void fl_uploads_free(fl_uploads_t *u)
{
    if (!u)
        return;
    free_jobs(u->jobs_head);
    free_jobs(u->running);
    free(u);
}

int fl_uploads_acquire(fl_uploads_t *u, fl_uploads_waiter_t *w)
{
    if (u->used < u->slots) {
        u->used++;
        return 1;
    }
    w->next = NULL;
    if (u->wait_tail)
        u->wait_tail->next = w;
    else
        u->wait_head = w;
    u->wait_tail = w;
    return 0;
}

void fl_uploads_cancel(fl_uploads_t *u, fl_uploads_waiter_t *w)
{
    fl_uploads_waiter_t **p = &u->wait_head, *prev = NULL;
    while (*p && *p != w) {
        prev = *p;
        p = &(*p)->next;
    }
    if (*p) {
        *p = w->next;
        if (u->wait_tail == w)
            u->wait_tail = prev;
        w->next = NULL;
    }
}

void fl_uploads_release(fl_uploads_t *u)
{
    u->used--;
    while (u->wait_head && u->used < u->slots) {
        fl_uploads_waiter_t *w = u->wait_head;
        u->wait_head = w->next;
        if (!u->wait_head)
            u->wait_tail = NULL;
        w->next = NULL;
        u->used++;
        u->cbs.granted(w, u->ud);
    }
}

int fl_uploads_submit(fl_uploads_t *u, const char *name, float *delta, size_t n, double weight, double loss,
                      int64_t bytes, double received_at, int finite)
{
    job_t *j = calloc(1, sizeof *j);
    if (!j || !(j->name = strdup(name ? name : "?"))) {
        free(j);
        return FL_ENOMEM;
    }
    j->delta = delta;
    j->n = n;
    j->weight = weight;
    j->loss = loss;
    j->bytes = bytes;
    j->received_at = received_at;
    j->finite = finite != 0;
    if (u->jobs_tail)
        u->jobs_tail->next = j;
    else
        u->jobs_head = j;
    u->jobs_tail = j;
    return 0;
}

static void work_cb(uv_work_t *w)
{
    fl_uploads_t *u = w->data;
    const float *deltas[FL_SERVEROPT_MAX_BATCH];
    double weight[FL_SERVEROPT_MAX_BATCH], norm[FL_SERVEROPT_MAX_BATCH];
    int rc[FL_SERVEROPT_MAX_BATCH];
    size_t count = 0, n = 0;
    for (job_t *j = u->running; j; j = j->next) {
        deltas[count] = j->delta;
        weight[count] = j->weight;
        n = j->n;
        count++;
    }
    /* Every job of a batch has the model's size: wrong-shape uploads are
     * refused by fl_round_check before they are submitted. */
    double t0 = fl_clock_mono_s();
    int brc = -1;
    if (u->fuse) {
        /* The round's last batch: the finish in the same pass. Anything but
         * 0 or FL_ENONFINITE left the round untouched: add it plainly, and
         * the daemon runs the finish as usual. */
        int frc = fl_agg_add_batch_finish(u->agg, u->opt, deltas, weight, count, n, rc, norm, u->x,
                                          &u->finish_res);
        if (frc == 0 || frc == FL_ENONFINITE) {
            u->finished = 1;
            u->finish_rc = frc;
            brc = 0;
        }
    }
    if (brc)
        brc = u->agg ? fl_agg_add_batch(u->agg, u->opt, deltas, weight, count, n, rc, norm)
                     : fl_round_add_work_batch(u->opt, deltas, weight, count, n, rc, norm);
    u->batch_s = fl_clock_mono_s() - t0;
    u->batch_n = count;
    size_t i = 0;
    for (job_t *j = u->running; j; j = j->next, i++) {
        j->rc = brc ? brc : rc[i];
        j->norm = brc ? NAN : norm[i];
    }
}

static void after_cb(uv_work_t *w, int status)
{
    fl_uploads_t *u = w->data;
    job_t *batch = u->running;
    u->running = NULL;
    for (job_t *j = batch, *next; j; j = next) {
        next = j->next;
        if (status == UV_ECANCELED)
            j->rc = FL_ECANCELED;
        u->cbs.added(j->name, j->rc, j->weight, j->loss, j->norm, j->bytes, j->received_at, u->ud);
        free(j->delta);
        free(j->name);
        free(j);
        fl_uploads_release(u);
    }
    fl_uploads_kick(u);
    u->cbs.idle(u->ud);
}

/* Uploads that arrived while the previous batch was being added are folded
 * into one pass over the accumulator. */
void fl_uploads_kick(fl_uploads_t *u)
{
    if (u->running || !u->jobs_head)
        return;
    job_t *batch = NULL, **tail = &batch;
    for (size_t k = 0; k < FL_SERVEROPT_MAX_BATCH && u->jobs_head; k++) {
        job_t *j = u->jobs_head;
        u->jobs_head = j->next;
        j->next = NULL;
        *tail = j;
        tail = &j->next;
    }
    if (!u->jobs_head)
        u->jobs_tail = NULL;
    /* Fused with the finish when this batch is all that is left of the
     * round (the caller's `completes` says so) and every delta in it is
     * known finite, so none can be refused after the model has moved. */
    size_t count = 0;
    int finite = 1;
    for (job_t *j = batch; j; j = j->next, count++)
        finite &= j->finite;
    u->fuse = finite && u->x && u->agg && fl_agg_can_fuse(u->agg) && !u->jobs_head && u->cbs.completes &&
              u->cbs.completes(count, u->ud);
    u->running = batch;
    u->work.data = u;
    if (uv_queue_work(u->loop, &u->work, work_cb, after_cb)) {
        /* Cannot happen with a valid loop; run it here rather than lose it. */
        work_cb(&u->work);
        after_cb(&u->work, 0);
    }
}

int fl_uploads_busy(const fl_uploads_t *u)
{
    return u && (u->running || u->jobs_head);
}

size_t fl_uploads_in_use(const fl_uploads_t *u)
{
    return u ? u->used : 0;
}

void fl_uploads_set_agg(fl_uploads_t *u, fl_agg_t *agg)
{
    u->agg = agg;
}

void fl_uploads_set_finish(fl_uploads_t *u, float *x)
{
    u->x = x;
}

int fl_uploads_take_finish(fl_uploads_t *u, int *rc, fl_serveropt_round_t *res)
{
    if (!u || !u->finished)
        return 0;
    if (rc)
        *rc = u->finish_rc;
    if (res)
        *res = u->finish_res;
    u->finished = 0;
    return 1;
}

int fl_uploads_finished(const fl_uploads_t *u, int *rc)
{
    if (!u || !u->finished)
        return 0;
    if (rc)
        *rc = u->finish_rc;
    return 1;
}

void fl_uploads_last_batch(const fl_uploads_t *u, size_t *count, double *seconds)
{
    if (count)
        *count = u ? u->batch_n : 0;
    if (seconds)
        *seconds = u ? u->batch_s : 0;
}
