/* Tests server/uploads on a real libuv loop and thread pool: buffer slots
 * go to waiters oldest first (a cancelled waiter gets none), uploads queued
 * together are added in one batch in submission order, a non-finite delta
 * is refused without touching the mean, every slot comes back, and FedAvg
 * with lr = 1 gives the exact weighted mean of what was accepted. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "server/serveropt.h"
#include "server/uploads.h"

#define P 16

typedef struct {
    fl_uploads_waiter_t *granted[8];
    int ngranted;
    char names[8][8];
    int rc[8];
    double weight[8], norm[8], received[8];
    int nadded;
    int idle;
} rec_t;

static void on_granted(fl_uploads_waiter_t *w, void *ud)
{
    rec_t *r = ud;
    r->granted[r->ngranted++] = w;
}

static void on_added(const char *name, int rc, double weight, double loss, double norm, int64_t bytes,
                     double received_at, void *ud)
{
    rec_t *r = ud;
    snprintf(r->names[r->nadded], sizeof r->names[0], "%s", name);
    r->rc[r->nadded] = rc;
    r->weight[r->nadded] = weight;
    r->norm[r->nadded] = norm;
    r->received[r->nadded] = received_at;
    r->nadded++;
    assert_true(bytes == 4 * P && loss == 0.5);
}

static void on_idle(void *ud)
{
    ((rec_t *)ud)->idle++;
}

static float *delta_of(float v)
{
    float *d = malloc(P * sizeof *d);
    assert_non_null(d);
    for (int j = 0; j < P; j++)
        d[j] = v;
    return d;
}

static void test_slots_and_batch(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    fl_serveropt_config_t oc;
    fl_serveropt_config_defaults(&oc, FL_SERVEROPT_FEDAVG);
    fl_serveropt_t *opt;
    assert_int_equal(fl_serveropt_create(&oc, P, &opt), 0);
    fl_serveropt_begin(opt);
    rec_t r;
    memset(&r, 0, sizeof r);
    fl_uploads_cbs_t cbs = {.granted = on_granted, .added = on_added, .idle = on_idle};
    fl_uploads_t *u;
    assert_int_equal(fl_uploads_create(&loop, 0, opt, &cbs, &r, &u), FL_EINVAL);
    assert_int_equal(fl_uploads_create(&loop, 2, opt, &cbs, &r, &u), 0);

    /* Two slots: the third and fourth uploads wait, the fourth leaves. */
    fl_uploads_waiter_t w[4];
    assert_int_equal(fl_uploads_acquire(u, &w[0]), 1);
    assert_int_equal(fl_uploads_acquire(u, &w[1]), 1);
    assert_int_equal(fl_uploads_acquire(u, &w[2]), 0);
    assert_int_equal(fl_uploads_acquire(u, &w[3]), 0);
    assert_int_equal(fl_uploads_in_use(u), 2);
    fl_uploads_cancel(u, &w[3]);
    fl_uploads_release(u); /* w[0]'s upload was refused */
    assert_int_equal(r.ngranted, 1);
    assert_ptr_equal(r.granted[0], &w[2]);
    assert_int_equal(fl_uploads_in_use(u), 2);
    fl_uploads_release(u); /* nobody waits now: the slot stays free */
    assert_int_equal(r.ngranted, 1);
    assert_int_equal(fl_uploads_in_use(u), 1);
    assert_int_equal(fl_uploads_acquire(u, &w[1]), 1);

    /* Two uploads queued before the kick: one batch, in submission order. */
    assert_false(fl_uploads_busy(u));
    assert_int_equal(fl_uploads_submit(u, "a", delta_of(1.0f), P, 1, 0.5, 4 * P, 10.0), 0);
    assert_int_equal(fl_uploads_submit(u, "b", delta_of(2.0f), P, 3, 0.5, 4 * P, 11.0), 0);
    assert_true(fl_uploads_busy(u));
    fl_uploads_kick(u);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_false(fl_uploads_busy(u));
    assert_int_equal(r.idle, 1);
    assert_int_equal(r.nadded, 2);
    assert_string_equal(r.names[0], "a");
    assert_string_equal(r.names[1], "b");
    assert_int_equal(r.rc[0], 0);
    assert_int_equal(r.rc[1], 0);
    assert_true(r.weight[1] == 3 && r.received[1] == 11.0);
    assert_true(fabs(r.norm[0] - 4.0) < 1e-6 && fabs(r.norm[1] - 8.0) < 1e-6);
    assert_int_equal(fl_uploads_in_use(u), 0);

    /* A NaN delta: refused, the mean unchanged. */
    assert_int_equal(fl_uploads_acquire(u, &w[0]), 1);
    float *bad = delta_of(1.0f);
    bad[3] = NAN;
    assert_int_equal(fl_uploads_submit(u, "c", bad, P, 5, 0.5, 4 * P, 12.0), 0);
    fl_uploads_kick(u);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(r.nadded, 3);
    assert_int_equal(r.rc[2], FL_ENONFINITE);
    assert_true(isnan(r.norm[2]));
    assert_int_equal(r.idle, 2);
    assert_int_equal(fl_uploads_in_use(u), 0);

    /* FedAvg, lr = 1: x = 0 + (1 * 1 + 3 * 2) / 4, exact in float32. */
    float x[P] = {0};
    fl_serveropt_round_t res;
    assert_int_equal(fl_serveropt_finish(opt, x, P, &res), 0);
    assert_int_equal(res.accepted, 2);
    assert_int_equal(res.rejected, 1);
    for (int j = 0; j < P; j++)
        assert_true(x[j] == 1.75f);

    /* Freed with an upload still queued (never kicked): no leak. */
    assert_int_equal(fl_uploads_acquire(u, &w[0]), 1);
    assert_int_equal(fl_uploads_submit(u, "d", delta_of(1.0f), P, 1, 0.5, 4 * P, 13.0), 0);
    fl_uploads_free(u);
    fl_serveropt_free(opt);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_and_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
