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
#include "server/aggregate.h"
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
    assert_int_equal(fl_uploads_submit(u, "a", delta_of(1.0f), P, 1, 0.5, 4 * P, 10.0, 0), 0);
    assert_int_equal(fl_uploads_submit(u, "b", delta_of(2.0f), P, 3, 0.5, 4 * P, 11.0, 0), 0);
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
    assert_int_equal(fl_uploads_submit(u, "c", bad, P, 5, 0.5, 4 * P, 12.0, 0), 0);
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
    assert_int_equal(fl_uploads_submit(u, "d", delta_of(1.0f), P, 1, 0.5, 4 * P, 13.0, 0), 0);
    fl_uploads_free(u);
    fl_serveropt_free(opt);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- the round's last batch fused with the finish ---------------------- */

#define PF ((size_t)1 << 18) /* large enough for the optimizer's two parts */

typedef struct {
    int completes; /* what the `completes` callback answers */
    size_t asked;  /* the count it was last asked about (0: never) */
    int idle, nadded, refused;
} frec_t;

static void f_granted(fl_uploads_waiter_t *w, void *ud) { (void)w, (void)ud; }

static void f_added(const char *name, int rc, double weight, double loss, double norm, int64_t bytes,
                    double received_at, void *ud)
{
    frec_t *r = ud;
    r->nadded++;
    r->refused += rc != 0;
}

static void f_idle(void *ud) { ((frec_t *)ud)->idle++; }

static int f_completes(size_t count, void *ud)
{
    frec_t *r = ud;
    r->asked = count;
    return r->completes;
}

static float *delta_rand(unsigned seed)
{
    float *d = malloc(PF * sizeof *d);
    assert_non_null(d);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t j = 0; j < PF; j++) {
        s = s * 1664525u + 1013904223u;
        d[j] = (float)((int32_t)s >> 8) * 1e-9f;
    }
    return d;
}

/* Runs two FedAdam rounds of `sizes[0]` then `sizes[1]` uploads (each
 * batch submitted together, then kicked) through the pipeline into x, the
 * last batch of each round marked finite as `finite` says and `completes`
 * answering `completes`, with the finish fused where the pipeline may
 * (fuse) or never; the daemon's finish (fl_agg_finish) runs where the batch
 * did not. Returns how many rounds were fused; x, m and v are copied out. */
static int fused_rounds(int fuse, int completes, int finite, const size_t sizes[2], float *x, float *m, float *v)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    fl_serveropt_config_t oc;
    fl_serveropt_config_defaults(&oc, FL_SERVEROPT_FEDADAM);
    fl_serveropt_t *opt;
    assert_int_equal(fl_serveropt_create(&oc, PF, &opt), 0);
    fl_agg_config_t ac = {.spec = {.rule = FL_AGG_MEAN}, .capacity = 16};
    fl_agg_t *agg;
    assert_int_equal(fl_agg_create(&ac, PF, &agg), 0);
    frec_t r = {.completes = completes};
    fl_uploads_cbs_t cbs = {.granted = f_granted, .added = f_added, .idle = f_idle, .completes = f_completes};
    fl_uploads_t *u;
    assert_int_equal(fl_uploads_create(&loop, 16, opt, &cbs, &r, &u), 0);
    fl_uploads_set_agg(u, agg);
    fl_uploads_set_finish(u, fuse ? x : NULL);
    for (size_t i = 0; i < PF; i++)
        x[i] = 0.25f;
    int fused = 0;
    unsigned seed = 1;
    for (int round = 0; round < 2; round++) {
        fl_serveropt_begin(opt);
        fl_agg_begin(agg);
        for (int b = 0; b < 2; b++) {
            fl_uploads_waiter_t w;
            for (size_t k = 0; k < sizes[b]; k++) {
                assert_int_equal(fl_uploads_acquire(u, &w), 1);
                char name[32];
                snprintf(name, sizeof name, "c%zu", k);
                assert_int_equal(fl_uploads_submit(u, name, delta_rand(seed), PF, 1.0 + seed % 7, 0.5, 4 * PF, 1.0,
                                                   b == 1 ? finite : 1),
                                 0);
                seed++;
            }
            /* Only the last batch may complete the round. */
            r.completes = b == 1 ? completes : 0;
            fl_uploads_kick(u);
            assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
            assert_false(fl_uploads_busy(u));
        }
        int frc = -1;
        fl_serveropt_round_t res;
        if (fl_uploads_take_finish(u, &frc, &res)) {
            assert_int_equal(frc, 0);
            fused++;
        } else
            assert_int_equal(fl_agg_finish(agg, opt, x, PF, &res), 0);
        assert_int_equal(res.accepted, sizes[0] + sizes[1]);
        assert_true(res.applied);
        assert_int_equal(fl_uploads_take_finish(u, &frc, &res), 0); /* forgotten once taken */
    }
    assert_int_equal(r.refused, 0);
    assert_int_equal(r.nadded, 2 * (int)(sizes[0] + sizes[1]));
    memcpy(m, fl_serveropt_m(opt), PF * sizeof(float));
    memcpy(v, fl_serveropt_v(opt), PF * sizeof(float));
    fl_uploads_free(u);
    fl_agg_free(agg);
    fl_serveropt_free(opt);
    assert_int_equal(uv_loop_close(&loop), 0);
    return fused;
}

/* The last batch with the finish in its pass leaves x, m and v bit for bit
 * as the separate batch add and finish do (a last batch of several uploads
 * and of one, whose separate path is the exact single add); a batch with an
 * upload not known finite, or one that does not complete the round, is not
 * fused. */
static void test_fused_finish_matches(void **state)
{
    (void)state;
    float *x0 = malloc(PF * sizeof(float)), *m0 = malloc(PF * sizeof(float)), *v0 = malloc(PF * sizeof(float));
    float *x1 = malloc(PF * sizeof(float)), *m1 = malloc(PF * sizeof(float)), *v1 = malloc(PF * sizeof(float));
    assert_true(x0 && m0 && v0 && x1 && m1 && v1);
    static const size_t shapes[2][2] = {{3, 4}, {2, 1}};
    for (int t = 0; t < 2; t++) {
        assert_int_equal(fused_rounds(0, 1, 1, shapes[t], x0, m0, v0), 0);
        assert_int_equal(fused_rounds(1, 1, 1, shapes[t], x1, m1, v1), 2);
        assert_memory_equal(x0, x1, PF * sizeof(float));
        assert_memory_equal(m0, m1, PF * sizeof(float));
        assert_memory_equal(v0, v1, PF * sizeof(float));
        /* the model did move */
        assert_true(x1[0] != 0.25f || x1[PF - 1] != 0.25f);
        assert_int_equal(fused_rounds(1, 1, 0, shapes[t], x1, m1, v1), 0); /* not known finite */
        assert_memory_equal(x0, x1, PF * sizeof(float));
        assert_int_equal(fused_rounds(1, 0, 1, shapes[t], x1, m1, v1), 0); /* not the round's end */
        assert_memory_equal(x0, x1, PF * sizeof(float));
    }
    free(x0), free(m0), free(v0), free(x1), free(m1), free(v1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slots_and_batch),
        cmocka_unit_test(test_fused_finish_matches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
