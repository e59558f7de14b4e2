#include "common/nn/workers.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <uv.h>

#include "common/base/error.h"

#define FL_WORKERS_MAX 63

typedef struct {
    fl_workers_t *w;
    size_t index; /* runs job index + 1 */
    uv_thread_t tid;
} worker_t;

/* One mutex guards the whole state: a step wakes every worker once and waits
 * once, so there is nothing to gain from finer locking. */
struct fl_workers {
    uv_mutex_t mu;
    uv_cond_t wake; /* gen moved or stop set */
    uv_cond_t done; /* pending reached 0 */
    unsigned long gen; /* bumped by every fl_workers_run that has worker jobs */
    int stop;
    size_t njobs;
    size_t pending; /* worker jobs of this generation not yet returned */
    fl_workers_fn fn;
    void *arg;
    int count; /* threads started: workers[0..count) */
    worker_t workers[FL_WORKERS_MAX];
};

static atomic_ulong started_total;

unsigned long fl__workers_started(void) { return atomic_load(&started_total); }

static _Thread_local fl_workers_t *current;

void fl__workers_set_current(fl_workers_t *w) { current = w; }

fl_workers_t *fl__workers_current(void) { return current; }

static void worker_main(void *p)
{
    worker_t *me = p;
    fl_workers_t *w = me->w;
    const size_t job = me->index + 1;
    /* 0, not w->gen: a run may have begun before this thread first took
     * the lock, and its job must not be missed. */
    unsigned long seen = 0;
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (w->gen == seen && !w->stop)
            uv_cond_wait(&w->wake, &w->mu);
        if (w->stop)
            break;
        seen = w->gen;
        if (job >= w->njobs)
            continue;
        fl_workers_fn fn = w->fn;
        void *arg = w->arg;
        uv_mutex_unlock(&w->mu);
        fn(arg, job);
        uv_mutex_lock(&w->mu);
        if (--w->pending == 0)
            uv_cond_signal(&w->done);
    }
    uv_mutex_unlock(&w->mu);
}

int fl_workers_create(int n, fl_workers_t **out)
{
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (n < 1 || n > FL_WORKERS_MAX)
        return FL_EINVAL;
    fl_workers_t *w = calloc(1, sizeof *w);
    if (!w)
        return FL_ENOMEM;
    if (uv_mutex_init(&w->mu)) {
        free(w);
        return FL_ENOMEM;
    }
    if (uv_cond_init(&w->wake)) {
        uv_mutex_destroy(&w->mu);
        free(w);
        return FL_ENOMEM;
    }
    if (uv_cond_init(&w->done)) {
        uv_cond_destroy(&w->wake);
        uv_mutex_destroy(&w->mu);
        free(w);
        return FL_ENOMEM;
    }
    /* Workers are numbered without gaps: the first thread that fails to
     * start ends the set, and fl_workers_run runs the jobs past it here. */
    for (int i = 0; i < n; i++) {
        w->workers[i] = (worker_t){.w = w, .index = (size_t)i};
        if (uv_thread_create(&w->workers[i].tid, worker_main, &w->workers[i]))
            break;
        w->count++;
        atomic_fetch_add(&started_total, 1);
    }
    *out = w;
    return 0;
}

int fl_workers_count(const fl_workers_t *w) { return w ? w->count : 0; }

void fl_workers_run(fl_workers_t *w, size_t njobs, fl_workers_fn fn, void *arg)
{
    if (!njobs || !fn)
        return;
    size_t on_workers = 0;
    if (w && njobs > 1) {
        on_workers = njobs - 1 < (size_t)w->count ? njobs - 1 : (size_t)w->count;
        uv_mutex_lock(&w->mu);
        w->fn = fn;
        w->arg = arg;
        w->njobs = njobs;
        w->pending = on_workers;
        w->gen++;
        uv_cond_broadcast(&w->wake);
        uv_mutex_unlock(&w->mu);
    }
    fn(arg, 0);
    for (size_t j = on_workers + 1; j < njobs; j++)
        fn(arg, j);
    if (on_workers) {
        uv_mutex_lock(&w->mu);
        while (w->pending)
            uv_cond_wait(&w->done, &w->mu);
        uv_mutex_unlock(&w->mu);
    }
}

void fl_workers_free(fl_workers_t *w)
{
    if (!w)
        return;
    uv_mutex_lock(&w->mu);
    w->stop = 1;
    uv_cond_broadcast(&w->wake);
    uv_mutex_unlock(&w->mu);
    for (int i = 0; i < w->count; i++)
        uv_thread_join(&w->workers[i].tid);
    uv_cond_destroy(&w->done);
    uv_cond_destroy(&w->wake);
    uv_mutex_destroy(&w->mu);
    free(w);
}
