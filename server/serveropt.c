#include "server/serveropt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/params.h"

/* Hot loops are compiled twice, for AVX2 and for the baseline, and the right
 * one is picked at load time (GCC's target_clones); float64 arithmetic at
 * SSE2 width is otherwise the bottleneck, not memory (bench_serveropt). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FL__MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define FL__MULTIVERSION
#endif

struct fl_serveropt {
    fl_serveropt_config_t cfg;
    size_t n;
    float *m; /* first moment (fedavgm momentum buffer); NULL for fedavg */
    float *v; /* second moment; NULL unless adaptive */
    double *acc; /* sum of w * delta for the open round */
    double total_weight;
    uint32_t accepted, rejected;
    uint64_t step;
    int open;
};

static const char *const kind_names[] = {"fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi"};

int fl_serveropt_parse_kind(const char *s, fl_serveropt_kind_t *out)
{
    if (!s || !out)
        return FL_EINVAL;
    for (int i = 0; i < 5; i++) {
        if (strcmp(s, kind_names[i]) == 0) {
            *out = (fl_serveropt_kind_t)i;
            return 0;
        }
    }
    return FL_EINVAL;
}

const char *fl_serveropt_kind_name(fl_serveropt_kind_t kind)
{
    return (unsigned)kind < 5 ? kind_names[kind] : "?";
}

int fl_serveropt_parse_weighting(const char *s, fl_weighting_t *out)
{
    if (!s || !out)
        return FL_EINVAL;
    if (strcmp(s, "examples") == 0)
        *out = FL_WEIGHTING_EXAMPLES;
    else if (strcmp(s, "uniform") == 0)
        *out = FL_WEIGHTING_UNIFORM;
    else
        return FL_EINVAL;
    return 0;
}

static int is_adaptive(fl_serveropt_kind_t k)
{
    return k == FL_SERVEROPT_FEDADAGRAD || k == FL_SERVEROPT_FEDADAM || k == FL_SERVEROPT_FEDYOGI;
}

void fl_serveropt_config_defaults(fl_serveropt_config_t *cfg, fl_serveropt_kind_t kind)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = kind;
    cfg->server_lr = is_adaptive(kind) ? 0.01 : 1.0;
    cfg->momentum = 0.9;
    cfg->beta1 = kind == FL_SERVEROPT_FEDADAGRAD ? 0.0 : 0.9;
    cfg->beta2 = 0.99;
    cfg->tau = 1e-3;
    cfg->initial_accumulator = 0.0;
    cfg->bias_correction = 0;
    cfg->weighting = FL_WEIGHTING_EXAMPLES;
}

int fl_serveropt_config_validate(const fl_serveropt_config_t *c)
{
    const char *bad = NULL;
    if (!c)
        return FL_EINVAL;
    if ((unsigned)c->kind > FL_SERVEROPT_FEDYOGI)
        bad = "server_opt";
    else if (!isfinite(c->server_lr) || c->server_lr <= 0)
        bad = "server_lr (must be > 0)";
    else if (!(c->momentum >= 0 && c->momentum < 1))
        bad = "momentum (must be in [0, 1))";
    else if (!(c->beta1 >= 0 && c->beta1 < 1))
        bad = "beta1 (must be in [0, 1))";
    else if (!(c->beta2 >= 0 && c->beta2 < 1))
        bad = "beta2 (must be in [0, 1))";
    else if (!(c->tau > 0) || !isfinite(c->tau))
        bad = "tau (must be > 0)";
    else if (!(c->initial_accumulator >= 0) || !isfinite(c->initial_accumulator))
        bad = "initial_accumulator (must be >= 0)";
    else if (c->weighting != FL_WEIGHTING_EXAMPLES && c->weighting != FL_WEIGHTING_UNIFORM)
        bad = "weighting";
    else if (c->bias_correction && c->kind != FL_SERVEROPT_FEDADAM && c->kind != FL_SERVEROPT_FEDYOGI)
        bad = "bias_correction (only fedadam and fedyogi have it)";
    if (bad) {
        FL_LOG_E("serveropt", "bad setting: %s", bad);
        return FL_ECONFIG;
    }
    return 0;
}

static float *alloc_f32(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

static void reset_state(fl_serveropt_t *o)
{
    if (o->m)
        memset(o->m, 0, o->n * sizeof(float));
    if (o->v) {
        float v0 = (float)o->cfg.initial_accumulator;
        for (size_t i = 0; i < o->n; i++)
            o->v[i] = v0;
    }
    o->step = 0;
}

int fl_serveropt_create(const fl_serveropt_config_t *cfg, size_t n, fl_serveropt_t **out)
{
    int rc = FL_ENOMEM;
    if (!cfg || !out || n == 0 || n > SIZE_MAX / sizeof(double) / 2)
        return FL_EINVAL;
    *out = NULL;
    if ((rc = fl_serveropt_config_validate(cfg)))
        return rc;
    rc = FL_ENOMEM;
    fl_serveropt_t *o = calloc(1, sizeof *o);
    if (!o)
        goto fail;
    o->cfg = *cfg;
    o->n = n;
    o->acc = aligned_alloc(64, (n * sizeof(double) + 63) & ~(size_t)63);
    if (!o->acc)
        goto fail;
    if (cfg->kind != FL_SERVEROPT_FEDAVG && !(o->m = alloc_f32(n)))
        goto fail;
    if (is_adaptive(cfg->kind) && !(o->v = alloc_f32(n)))
        goto fail;
    reset_state(o);
    *out = o;
    return 0;
fail:
    fl_serveropt_free(o);
    return rc;
}

void fl_serveropt_free(fl_serveropt_t *o)
{
    if (!o)
        return;
    free(o->acc);
    free(o->m);
    free(o->v);
    free(o);
}

void fl_serveropt_begin(fl_serveropt_t *o)
{
    /* The accumulator is not cleared here: the first accepted add overwrites
     * it, which saves a pass over P doubles per round. */
    o->total_weight = 0;
    o->accepted = o->rejected = 0;
    o->open = 1;
}

FL__MULTIVERSION
static void accumulate(double *restrict acc, const float *restrict d, size_t n, double w, int first)
{
    if (first) {
        for (size_t i = 0; i < n; i++)
            acc[i] = w * (double)d[i];
    } else {
        for (size_t i = 0; i < n; i++)
            acc[i] += w * (double)d[i];
    }
}

int fl_serveropt_add(fl_serveropt_t *o, const float *delta, size_t n, double num_examples)
{
    if (!o || !o->open)
        return FL_ESTATE;
    if (!delta || n != o->n) {
        o->rejected++;
        return FL_ESHAPE;
    }
    double w = 1.0;
    if (o->cfg.weighting == FL_WEIGHTING_EXAMPLES) {
        if (!isfinite(num_examples) || num_examples <= 0) {
            o->rejected++;
            return FL_EINVAL;
        }
        w = num_examples;
    }
    /* Scan the whole delta before touching the accumulator: a refused update
     * must leave no trace, and an exact undo of a partial float64 sum is not
     * possible. */
    if (!fl_f32_all_finite(delta, n)) {
        o->rejected++;
        return FL_ENONFINITE;
    }
    accumulate(o->acc, delta, n, w, o->accepted == 0);
    o->total_weight += w;
    o->accepted++;
    return 0;
}

/* The batched accumulation kernel. Work proceeds in blocks small enough that
 * the batch's slices stay in L1/L2: each delta's slice is checked, then all
 * valid slices are summed into a float64 block buffer and added to the
 * accumulator once. The accumulator is thus read and written once per batch
 * instead of once per delta. Built for AVX2 as well as the baseline, chosen
 * at run time, since the float64 arithmetic is otherwise the bottleneck. */
#define BATCH_BLOCK 2048


FL__MULTIVERSION
static void batch_pass(double *restrict acc, int first, const float *const *d, const double *w,
                       size_t count, size_t n, size_t *bad_block, double *sumsq)
{
    double tmp[BATCH_BLOCK];
    for (size_t lo = 0, blk = 0; lo < n; lo += BATCH_BLOCK, blk++) {
        const size_t len = n - lo < BATCH_BLOCK ? n - lo : BATCH_BLOCK;
        size_t used = 0;
        for (size_t b = 0; b < count; b++) {
            if (bad_block[b] != SIZE_MAX)
                continue;
            const float *restrict x = d[b] + lo;
            uint32_t bad = 0;
            for (size_t i = 0; i < len; i++) {
                uint32_t u;
                memcpy(&u, &x[i], sizeof u);
                bad |= (u & 0x7f800000u) == 0x7f800000u;
            }
            if (bad) {
                bad_block[b] = blk;
                continue;
            }
            const double wb = w[b];
            if (used++ == 0)
                for (size_t i = 0; i < len; i++)
                    tmp[i] = wb * (double)x[i];
            else
                for (size_t i = 0; i < len; i++)
                    tmp[i] += wb * (double)x[i];
            /* The delta's squared norm while its slice is in L1, in lanes
             * (one running sum would not vectorize). */
            double lane[8] = {0};
            size_t i = 0;
            for (; i + 8 <= len; i += 8)
                for (size_t j = 0; j < 8; j++)
                    lane[j] += (double)x[i + j] * (double)x[i + j];
            for (; i < len; i++)
                lane[0] += (double)x[i] * (double)x[i];
            sumsq[b] += lane[0] + lane[1] + lane[2] + lane[3] + lane[4] + lane[5] + lane[6] + lane[7];
        }
        double *restrict a = acc + lo;
        if (used == 0) {
            if (first)
                memset(a, 0, len * sizeof(double));
        } else if (first) {
            memcpy(a, tmp, len * sizeof(double));
        } else {
            for (size_t i = 0; i < len; i++)
                a[i] += tmp[i];
        }
    }
}

int fl_serveropt_add_batch(fl_serveropt_t *o, const float *const *deltas, const double *num_examples,
                           size_t count, size_t n, int *results, double *norms)
{
    if (!o || !o->open)
        return FL_ESTATE;
    if (count == 0 || count > FL_SERVEROPT_MAX_BATCH || !deltas || !num_examples || !results)
        return FL_EINVAL;
    double w[FL_SERVEROPT_MAX_BATCH], sumsq[FL_SERVEROPT_MAX_BATCH] = {0};
    size_t bad_block[FL_SERVEROPT_MAX_BATCH];
    size_t live = 0;
    for (size_t b = 0; b < count; b++) {
        results[b] = 0;
        bad_block[b] = SIZE_MAX;
        w[b] = 1.0;
        if (!deltas[b] || n != o->n)
            results[b] = FL_ESHAPE;
        else if (o->cfg.weighting == FL_WEIGHTING_EXAMPLES &&
                 (!isfinite(num_examples[b]) || num_examples[b] <= 0))
            results[b] = FL_EINVAL;
        else if (o->cfg.weighting == FL_WEIGHTING_EXAMPLES)
            w[b] = num_examples[b];
        if (results[b])
            bad_block[b] = 0; /* excluded from the pass, nothing to undo */
        else
            live++;
    }
    if (live)
        batch_pass(o->acc, o->accepted == 0, deltas, w, count, n, bad_block, sumsq);
    for (size_t b = 0; b < count; b++) {
        if (norms)
            norms[b] = NAN;
        if (results[b]) {
            o->rejected++;
            continue;
        }
        if (bad_block[b] != SIZE_MAX) {
            /* Non-finite in block bad_block[b]: take its earlier blocks back out. */
            size_t end = bad_block[b] * BATCH_BLOCK;
            for (size_t i = 0; i < end; i++)
                o->acc[i] -= w[b] * (double)deltas[b][i];
            results[b] = FL_ENONFINITE;
            o->rejected++;
            continue;
        }
        o->total_weight += w[b];
        o->accepted++;
        if (norms)
            norms[b] = sqrt(sumsq[b]);
    }
    return 0;
}

/* One pass over the model per optimizer; each loop reads the accumulator and
 * state once and writes x and the state once (the work is memory-bound). The
 * arithmetic is done in double, stored in float. The squared norm of D is
 * summed in FL__LANES independent lanes: a single running sum is an ordered
 * reduction the compiler may not vectorize, which would serialize the whole
 * loop. */
#define FL__LANES 8

#define FL__STEP_LOOP(BODY)                                                   \
    do {                                                                      \
        size_t i = 0;                                                         \
        for (; i + FL__LANES <= n; i += FL__LANES)                            \
            for (size_t j = 0; j < FL__LANES; j++) {                          \
                const size_t k = i + j;                                       \
                const double D = acc[k] * inv;                                \
                BODY;                                                         \
                lane[j] += D * D;                                             \
            }                                                                 \
        for (; i < n; i++) {                                                  \
            const size_t k = i;                                               \
            const double D = acc[k] * inv;                                    \
            BODY;                                                             \
            lane[0] += D * D;                                                 \
        }                                                                     \
    } while (0)

FL__MULTIVERSION
static double apply_step(fl_serveropt_t *o, float *restrict x)
{
    const fl_serveropt_config_t *c = &o->cfg;
    const size_t n = o->n;
    const double *restrict acc = o->acc;
    float *restrict m = o->m;
    float *restrict v = o->v;
    const double inv = 1.0 / o->total_weight;
    double lr = c->server_lr;
    double lane[FL__LANES] = {0};
    const double b1 = c->beta1, b2 = c->beta2, tau = c->tau, mu = c->momentum;
    const uint64_t t = o->step + 1;

    if (c->bias_correction)
        lr *= sqrt(1.0 - pow(b2, (double)t)) / (1.0 - pow(b1, (double)t));

    switch (c->kind) {
    case FL_SERVEROPT_FEDAVG:
        FL__STEP_LOOP(x[k] = (float)((double)x[k] + lr * D));
        break;
    case FL_SERVEROPT_FEDAVGM:
        FL__STEP_LOOP(const double mi = mu * (double)m[k] + D; m[k] = (float)mi;
                      x[k] = (float)((double)x[k] + lr * mi));
        break;
    case FL_SERVEROPT_FEDADAGRAD:
        FL__STEP_LOOP(const double mi = b1 * (double)m[k] + (1.0 - b1) * D;
                      const double vi = (double)v[k] + D * D; m[k] = (float)mi; v[k] = (float)vi;
                      x[k] = (float)((double)x[k] + lr * mi / (sqrt(vi) + tau)));
        break;
    case FL_SERVEROPT_FEDADAM:
        FL__STEP_LOOP(const double mi = b1 * (double)m[k] + (1.0 - b1) * D;
                      const double vi = b2 * (double)v[k] + (1.0 - b2) * D * D; m[k] = (float)mi;
                      v[k] = (float)vi; x[k] = (float)((double)x[k] + lr * mi / (sqrt(vi) + tau)));
        break;
    case FL_SERVEROPT_FEDYOGI:
        /* sign(v - D^2) with sign(0) = 0. */
        FL__STEP_LOOP(const double D2 = D * D; const double vp = (double)v[k];
                      const double sgn = (double)((vp > D2) - (vp < D2));
                      const double mi = b1 * (double)m[k] + (1.0 - b1) * D;
                      const double vi = vp - (1.0 - b2) * D2 * sgn; m[k] = (float)mi;
                      v[k] = (float)vi; x[k] = (float)((double)x[k] + lr * mi / (sqrt(vi) + tau)));
        break;
    }
    double norm2 = 0.0;
    for (int j = 0; j < FL__LANES; j++)
        norm2 += lane[j];
    return sqrt(norm2);
}

int fl_serveropt_finish(fl_serveropt_t *o, float *x, size_t n, fl_serveropt_round_t *res)
{
    if (!o || !o->open)
        return FL_ESTATE;
    if (!x || n != o->n)
        return FL_ESHAPE;
    fl_serveropt_round_t r = {0};
    r.accepted = o->accepted;
    r.rejected = o->rejected;
    r.total_weight = o->total_weight;
    if (o->accepted > 0) {
        r.update_norm = apply_step(o, x);
        o->step++;
        r.applied = 1;
    }
    r.step = o->step;
    o->open = 0;
    if (res)
        *res = r;
    return 0;
}

uint64_t fl_serveropt_step(const fl_serveropt_t *o) { return o ? o->step : 0; }
const float *fl_serveropt_m(const fl_serveropt_t *o) { return o ? o->m : NULL; }
const float *fl_serveropt_v(const fl_serveropt_t *o) { return o ? o->v : NULL; }
const fl_serveropt_config_t *fl_serveropt_config(const fl_serveropt_t *o) { return o ? &o->cfg : NULL; }

/* State format, all integers little-endian:
 *   0  "FLSO"           magic
 *   4  u32 version      (1)
 *   8  u32 kind
 *  12  u32 flags        bit 0: m follows, bit 1: v follows
 *  16  u64 n
 *  24  u64 step
 *  32  f32[n] m         if flags bit 0
 *      f32[n] v         if flags bit 1
 *      u32 crc32        of every byte before it
 */
#define STATE_MAGIC "FLSO"
#define STATE_VERSION 1u
#define STATE_HEADER 32u

int fl_serveropt_state_save(const fl_serveropt_t *o, uint8_t **buf, size_t *len)
{
    if (!o || !buf || !len)
        return FL_EINVAL;
    size_t vec = o->n * sizeof(float);
    size_t total = STATE_HEADER + (o->m ? vec : 0) + (o->v ? vec : 0) + 4;
    uint8_t *b = malloc(total);
    if (!b)
        return FL_ENOMEM;
    memcpy(b, STATE_MAGIC, 4);
    fl_put_u32le(b + 4, STATE_VERSION);
    fl_put_u32le(b + 8, (uint32_t)o->cfg.kind);
    fl_put_u32le(b + 12, (o->m ? 1u : 0u) | (o->v ? 2u : 0u));
    fl_put_u64le(b + 16, (uint64_t)o->n);
    fl_put_u64le(b + 24, o->step);
    uint8_t *p = b + STATE_HEADER;
    /* Floats are copied as their in-memory bytes: fedopt targets little-endian hosts only. */
    if (o->m) {
        memcpy(p, o->m, vec);
        p += vec;
    }
    if (o->v) {
        memcpy(p, o->v, vec);
        p += vec;
    }
    fl_put_u32le(p, fl_crc32(0, b, total - 4));
    *buf = b;
    *len = total;
    return 0;
}

int fl_serveropt_state_load(fl_serveropt_t *o, const uint8_t *buf, size_t len)
{
    if (!o || !buf)
        return FL_EINVAL;
    if (len < STATE_HEADER + 4 || memcmp(buf, STATE_MAGIC, 4) != 0)
        return len < STATE_HEADER + 4 ? FL_ETRUNCATED : FL_EFORMAT;
    /* Check the CRC before believing any field: a flipped bit anywhere is
     * reported as corruption, not as whatever the damaged field would mean. */
    if (fl_crc32(0, buf, len - 4) != fl_get_u32le(buf + len - 4))
        return FL_ECHECKSUM;
    if (fl_get_u32le(buf + 4) != STATE_VERSION)
        return FL_EUNSUPPORTED;
    if (fl_get_u32le(buf + 8) != (uint32_t)o->cfg.kind || fl_get_u64le(buf + 16) != (uint64_t)o->n)
        return FL_ESHAPE;
    uint32_t flags = fl_get_u32le(buf + 12);
    uint32_t want = (o->m ? 1u : 0u) | (o->v ? 2u : 0u);
    if (flags != want)
        return FL_EFORMAT;
    size_t vec = o->n * sizeof(float);
    size_t total = STATE_HEADER + (o->m ? vec : 0) + (o->v ? vec : 0) + 4;
    if (len != total)
        return FL_EFORMAT;
    const uint8_t *p = buf + STATE_HEADER;
    if (o->m) {
        memcpy(o->m, p, vec);
        p += vec;
    }
    if (o->v)
        memcpy(o->v, p, vec);
    o->step = fl_get_u64le(buf + 24);
    o->open = 0;
    return 0;
}
