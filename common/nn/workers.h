/* workers: a fixed set of threads that run the parts of a split batch, made
 * once and woken per step (fl_model_set_threads makes one per model, and
 * fl_model_free joins it), so a training step no longer pays a thread
 * creation and join per part (bench_train's split rows measure the step).
 *
 * fl_workers_run(w, njobs, fn, arg) calls fn(arg, i) once for every i in
 * [0, njobs): job 0 on the calling thread, job i >= 1 on worker i - 1, and
 * jobs without a worker (njobs > workers + 1, or a worker that could not be
 * started) on the calling thread after job 0, in order. It returns once every
 * job has returned; everything a job wrote is then visible to the caller, and
 * everything the caller wrote before the call is visible to the jobs. Which
 * thread runs a job never changes its result, so results depend only on
 * njobs, never on the worker count.
 *
 * A fl_workers_t is driven by one thread at a time (the model's owner); jobs
 * must not call fl_workers_run on the same set. */
#ifndef FL_WORKERS_H
#define FL_WORKERS_H

#include <stddef.h>

typedef struct fl_workers fl_workers_t;

typedef void (*fl_workers_fn)(void *arg, size_t job);

/* Starts n (1..63) worker threads, waiting for work. The caller owns *out
 * (fl_workers_free). A thread that cannot be started is left out (its jobs
 * run on the caller, with the same result; fl_workers_count says how many
 * started). Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_workers_create(int n, fl_workers_t **out);

/* Runs jobs 0..njobs-1 as described above and waits for all of them.
 * njobs 0 does nothing; w may be NULL (every job on the caller). */
void fl_workers_run(fl_workers_t *w, size_t njobs, fl_workers_fn fn, void *arg);

/* Worker threads running (0 for NULL). */
int fl_workers_count(const fl_workers_t *w);

/* Wakes, stops and joins the workers, then frees w. Accepts NULL. */
void fl_workers_free(fl_workers_t *w);

/* Internal: the set a layer may split one product of its own across (conv2d
 * runs its oneDNN convolutions in output-channel halves on it; see
 * fl_model_set_threads), for the calling thread only. A model that splits
 * inside its layers sets it around its passes and clears it (NULL) after;
 * layers never keep it. Job 0 of such a split runs on the calling thread,
 * which never calls fl__workers_set_current in a job. */
void fl__workers_set_current(fl_workers_t *w);
fl_workers_t *fl__workers_current(void);

/* Internal, for tests: threads started by fl_workers_create over the
 * process's life (a step must not add to it). */
unsigned long fl__workers_started(void);

#endif
