#include "common/nn/workers.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <uv.h>

#include "common/base/error.h"

#define FL_WORKERS_MAX 63

/* How long a worker (for its next job) and the caller (for the workers'
 * results) poll before they sleep, in pause instructions: a model that
 * splits its layers (conv2d's slices, group norm) hands work over about a
 * hundred times per step with little in between, and on a virtual machine
 * each sleep and wake-up went through the hypervisor (the kernel's share of
 * bench_train's resnet18gn profile on 2 threads); a few tens of
 * microseconds of polling catch most hand-overs, and bound what polling
 * costs a machine that has other work. */
#define FL_WORKERS_SPIN 4000

typedef struct {
    struct fl_workers *w;
    size_t index; /* position in workers[] */
    uv_thread_t tid;
    /* The caller writes fn, arg and job, then bumps seq (release); the
     * worker, seeing seq move (acquire), runs fn(arg, job) once. */
    atomic_ulong seq;
    fl_workers_fn fn;
    void *arg;
    size_t job;
} worker_t;

/* The mutex guards only sleeping and waking: jobs are handed over and
 * returned through atomics. */
struct fl_workers {
    uv_mutex_t mu;
    uv_cond_t wake; /* some worker's seq moved, or stop set */
    uv_cond_t done; /* pending reached 0 */
    int sleepers;     /* workers in uv_cond_wait(wake) (under mu) */
    int caller_waits; /* the caller is in uv_cond_wait(done) (under mu) */
    atomic_int stop;
    atomic_size_t pending; /* worker jobs of the current run not yet returned */
    int count; /* threads started: workers[0..count) */
    worker_t workers[FL_WORKERS_MAX];
};

static atomic_ulong started_total;

unsigned long fl__workers_started(void) { return atomic_load(&started_total); }

static _Thread_local fl_workers_t *current;

void fl__workers_set_current(fl_workers_t *w) { current = w; }

fl_workers_t *fl__workers_current(void) { return current; }

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void worker_main(void *p)
{
    worker_t *me = p;
    fl_workers_t *w = me->w;
    unsigned long seen = 0;
    for (;;) {
        unsigned long s = atomic_load_explicit(&me->seq, memory_order_acquire);
        for (int i = 0; s == seen && i < FL_WORKERS_SPIN && !atomic_load(&w->stop); i++) {
            cpu_relax();
            s = atomic_load_explicit(&me->seq, memory_order_acquire);
        }
        if (s == seen) {
            /* The caller bumps seq before it takes the lock to look for
             * sleepers, so a bump is either seen here or followed by a
             * broadcast this wait receives. */
            uv_mutex_lock(&w->mu);
            while ((s = atomic_load_explicit(&me->seq, memory_order_acquire)) == seen &&
                   !atomic_load(&w->stop)) {
                w->sleepers++;
                uv_cond_wait(&w->wake, &w->mu);
                w->sleepers--;
            }
            uv_mutex_unlock(&w->mu);
        }
        if (s == seen) /* stop, and no job handed over */
            break;
        seen = s;
        me->fn(me->arg, me->job);
        if (atomic_fetch_sub_explicit(&w->pending, 1, memory_order_acq_rel) == 1) {
            uv_mutex_lock(&w->mu);
            if (w->caller_waits)
                uv_cond_signal(&w->done);
            uv_mutex_unlock(&w->mu);
        }
    }
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
    atomic_init(&w->stop, 0);
    atomic_init(&w->pending, 0);
    /* Workers are numbered without gaps: the first thread that fails to
     * start ends the set, and fl_workers_run runs the jobs past it here. */
    for (int i = 0; i < n; i++) {
        w->workers[i] = (worker_t){.w = w, .index = (size_t)i};
        atomic_init(&w->workers[i].seq, 0);
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
        atomic_store(&w->pending, on_workers);
        for (size_t i = 0; i < on_workers; i++) {
            worker_t *k = &w->workers[i];
            k->fn = fn;
            k->arg = arg;
            k->job = i + 1;
            atomic_fetch_add_explicit(&k->seq, 1, memory_order_release);
        }
        uv_mutex_lock(&w->mu);
        if (w->sleepers)
            uv_cond_broadcast(&w->wake);
        uv_mutex_unlock(&w->mu);
    }
    fn(arg, 0);
    for (size_t j = on_workers + 1; j < njobs; j++)
        fn(arg, j);
    if (on_workers) {
        for (int i = 0; i < FL_WORKERS_SPIN && atomic_load(&w->pending); i++)
            cpu_relax();
        if (atomic_load(&w->pending)) {
            uv_mutex_lock(&w->mu);
            while (atomic_load(&w->pending)) {
                w->caller_waits = 1;
                uv_cond_wait(&w->done, &w->mu);
            }
            w->caller_waits = 0;
            uv_mutex_unlock(&w->mu);
        }
    }
}

void fl_workers_free(fl_workers_t *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    uv_mutex_lock(&w->mu);
    uv_cond_broadcast(&w->wake);
    uv_mutex_unlock(&w->mu);
    for (int i = 0; i < w->count; i++)
        uv_thread_join(&w->workers[i].tid);
    uv_cond_destroy(&w->done);
    uv_cond_destroy(&w->wake);
    uv_mutex_destroy(&w->mu);
    free(w);
}
