/* The worker set behind split batches (common/nn/workers.h): every job runs
 * exactly once per call, job i >= 1 on worker i - 1's thread and the rest on
 * the caller, the workers persist across calls (no thread started by a
 * run), and a call returns only after every job's writes are done. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/nn/workers.h"

#define JOBS 8

typedef struct {
    uv_thread_t caller;
    uv_thread_t tid[JOBS];
    unsigned runs[JOBS];
    uint64_t sum[JOBS];
    unsigned gen;
} jobs_t;

static void job(void *arg, size_t i)
{
    jobs_t *j = arg;
    j->tid[i] = uv_thread_self();
    j->runs[i]++;
    /* Some work, so the jobs overlap; its result is checked after the run. */
    uint64_t s = 0;
    for (unsigned k = 0; k < 2000u * (unsigned)(i + 1); k++)
        s += (uint64_t)k * (j->gen + 1);
    j->sum[i] = s;
}

static uint64_t expect_sum(size_t i, unsigned gen)
{
    uint64_t s = 0;
    for (unsigned k = 0; k < 2000u * (unsigned)(i + 1); k++)
        s += (uint64_t)k * (gen + 1);
    return s;
}

static void test_runs_each_job_once(void **state)
{
    (void)state;
    fl_workers_t *w;
    assert_int_equal(fl_workers_create(3, &w), 0);
    assert_int_equal(fl_workers_count(w), 3);
    unsigned long started = fl__workers_started();
    jobs_t j;
    memset(&j, 0, sizeof j);
    j.caller = uv_thread_self();
    uv_thread_t first[JOBS];
    /* Many calls with 1..JOBS jobs: fewer jobs than workers, as many, more. */
    for (unsigned g = 0; g < 3000; g++) {
        size_t n = 1 + g % JOBS;
        memset(j.runs, 0, sizeof j.runs);
        j.gen = g;
        fl_workers_run(w, n, job, &j);
        for (size_t i = 0; i < JOBS; i++) {
            assert_int_equal(j.runs[i], i < n ? 1 : 0);
            if (i < n && j.sum[i] != expect_sum(i, g))
                fail_msg("call %u job %zu: result not visible after the run", g, i);
        }
        for (size_t i = 0; i < n; i++) {
            int on_caller = uv_thread_equal(&j.tid[i], &j.caller);
            assert_int_equal(on_caller, i == 0 || i > 3);
            if (g == JOBS - 1)
                first[i] = j.tid[i];
            else if (g > JOBS - 1 && i >= 1 && i <= 3 && !uv_thread_equal(&j.tid[i], &first[i]))
                fail_msg("call %u: job %zu moved to another thread", g, i);
        }
    }
    assert_int_equal(fl__workers_started(), started);
    fl_workers_free(w);
    fl_workers_free(NULL);
}

static void test_without_workers(void **state)
{
    (void)state;
    jobs_t j;
    memset(&j, 0, sizeof j);
    j.caller = uv_thread_self();
    fl_workers_run(NULL, 4, job, &j);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(j.runs[i], 1);
        assert_true(uv_thread_equal(&j.tid[i], &j.caller));
    }
    fl_workers_run(NULL, 0, job, &j);
    assert_int_equal(j.runs[0], 1);
    fl_workers_t *w = (fl_workers_t *)&j;
    assert_int_equal(fl_workers_create(0, &w), FL_EINVAL);
    assert_null(w);
    assert_int_equal(fl_workers_create(64, &w), FL_EINVAL);
    assert_int_equal(fl_workers_create(1, NULL), FL_EINVAL);
    assert_int_equal(fl_workers_count(NULL), 0);
}

/* Freed right after creation, before any worker has waited: no hang. */
static void test_free_at_once(void **state)
{
    (void)state;
    for (int i = 0; i < 50; i++) {
        fl_workers_t *w;
        assert_int_equal(fl_workers_create(1 + i % 4, &w), 0);
        if (i % 2) {
            jobs_t j;
            memset(&j, 0, sizeof j);
            fl_workers_run(w, 2, job, &j);
            assert_int_equal(j.runs[1], 1);
        }
        fl_workers_free(w);
    }
}

static void slow_job(void *arg, size_t i)
{
    job(arg, i);
    if (i == 1)
        uv_sleep(2); /* longer than the caller polls: it must sleep and be woken */
}

/* Hand-overs to sleeping workers (the caller pauses longer than a worker
 * polls) and results awaited asleep (a job outlasts the caller's polling),
 * mixed with back-to-back calls: every job still runs once and its writes
 * are visible after the call. */
static void test_sleep_and_wake(void **state)
{
    (void)state;
    fl_workers_t *w;
    assert_int_equal(fl_workers_create(2, &w), 0);
    jobs_t j;
    memset(&j, 0, sizeof j);
    for (unsigned g = 0; g < 120; g++) {
        size_t n = 2 + g % 2;
        memset(j.runs, 0, sizeof j.runs);
        j.gen = g;
        if (g % 3 == 0)
            uv_sleep(3);
        fl_workers_run(w, n, g % 4 == 1 ? slow_job : job, &j);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(j.runs[i], 1);
            if (j.sum[i] != expect_sum(i, g))
                fail_msg("call %u job %zu: result not visible after the run", g, i);
        }
    }
    fl_workers_free(w);
}

/* The set a layer may split its work across is per thread and starts NULL. */
static void current_on_thread(void *arg) { *(fl_workers_t **)arg = fl__workers_current(); }

static void test_current(void **state)
{
    (void)state;
    fl_workers_t *w;
    assert_int_equal(fl_workers_create(1, &w), 0);
    assert_null(fl__workers_current());
    fl__workers_set_current(w);
    assert_ptr_equal(fl__workers_current(), w);
    fl_workers_t *seen = w;
    uv_thread_t t;
    assert_int_equal(uv_thread_create(&t, current_on_thread, &seen), 0);
    uv_thread_join(&t);
    assert_null(seen);
    fl__workers_set_current(NULL);
    assert_null(fl__workers_current());
    fl_workers_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runs_each_job_once),
        cmocka_unit_test(test_without_workers),
        cmocka_unit_test(test_free_at_once),
        cmocka_unit_test(test_sleep_and_wake),
        cmocka_unit_test(test_current),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
