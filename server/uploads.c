#include "server/uploads.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
} job_t;

struct fl_uploads {
    uv_loop_t *loop;
    size_t slots, used; /* used: receiving + queued + in the worker */
    fl_serveropt_t *opt;
    fl_uploads_cbs_t cbs;
    void *ud;
    fl_uploads_waiter_t *wait_head, *wait_tail;
    job_t *jobs_head, *jobs_tail;
    job_t *running; /* the batch in the worker, a list */
    uv_work_t work;
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
                      int64_t bytes, double received_at)
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
    int brc = fl_round_add_work_batch(u->opt, deltas, weight, count, n, rc, norm);
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
