#include "server/serveropt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/params.h"
#include "common/nn/workers.h"

/* The hot loops (the batch pass, the optimizer step, the single add) are
 * built three times on x86-64 under GCC: for x86-64-v4 (AVX-512), for
 * x86-64-v3 (AVX2 and FMA) and for the baseline; fl_serveropt_create picks
 * the best this CPU runs. float64 arithmetic at SSE2 width is otherwise the
 * bottleneck, not memory (bench_serveropt). FMA is used only where it gives
 * the bits of a separate multiply and add, i.e. where the product is exact:
 * a float's square in float64 (two 24-bit significands make at most 48 bits)
 * and a float times a weight whose significand fits in 29 bits (example
 * counts, 1): at most 53. So every build gives the same x, m and v
 * (test_serveropt runs each one this CPU has). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FL__DISPATCH 1
#define FL__TARGET_V3 __attribute__((target("arch=x86-64-v3")))
#define FL__TARGET_V4 __attribute__((target("arch=x86-64-v4")))
#include <immintrin.h>
#else
#define FL__DISPATCH 0
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
    int isa;                /* the kernels' build: 0 baseline, 3 x86-64-v3, 4 x86-64-v4 */
    size_t parts;           /* the passes' split (by model size; see make_parts) */
    fl_workers_t *workers;  /* parts - 1 threads, or NULL */
};

static int make_parts(fl_serveropt_t *o, size_t parts);

/* The kernels' builds (see FL__DISPATCH), indexed by fl_serveropt_t.isa.
 * fw: the weights' products may be fused (weight_exact); only the FMA builds
 * read it. */
typedef struct {
    void (*acc)(double *restrict acc, const float *restrict d, size_t n, double w, int first, int fw);
    void (*group)(double *restrict tmp, const float *const *xs, const double *wg, size_t len, double *ss,
                  size_t G, int first, int fw);
    void (*step)(const fl_serveropt_config_t *c, float *restrict x, float *restrict m, float *restrict v,
                 const double *restrict src, size_t n, double inv, double lr, double *lanes);
} kernels_t;
static const kernels_t kernels[5];
static int detect_isa(void);


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
    o->isa = detect_isa();
    if ((rc = make_parts(o, (size_t)fl__serveropt_default_parts(n))))
        goto fail;
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
    fl_workers_free(o->workers);
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

/* Large models are worked on in a fixed number of parts, chosen by the
 * model's size and never by the core count: each part a contiguous range of
 * blocks, run on the optimizer's own worker threads (common/nn/workers; on a
 * machine with fewer cores they share one). The passes are bound by memory
 * traffic, which one core does not saturate (bench_serveropt). Every
 * element's arithmetic is the same whatever the split, so the accumulator,
 * x, m and v are bit-identical to one part; only the float64 sums behind the
 * reported norms are grouped by part. */
#define FL__BLOCK 2048
#define FL__PAR_MIN_N ((size_t)1 << 18)
#define FL__PARTS_LARGE 2
#define FL__MAX_PARTS 8

#if defined(__GNUC__)
#define FL__INLINE inline __attribute__((always_inline))
#else
#define FL__INLINE inline
#endif

/* A batch pass reads each delta in block-sized runs (FL__BLOCK floats) from
 * up to FL_SERVEROPT_MAX_BATCH separate buffers, a few at a time: too many
 * short streams for the hardware prefetcher, which starts over at every
 * page, so the kernel waited on its loads (bench_serveropt, perf). The group
 * kernels prefetch each delta FL__AHEAD floats (one block) ahead of where
 * they read, once per 64-byte line. A prefetch never faults, so one past
 * the end of a delta is harmless (the address is formed as an integer, not
 * as an out-of-bounds pointer); it changes no result. */
#define FL__AHEAD FL__BLOCK
#if defined(__GNUC__)
#define fl__prefetch_ahead(p) __builtin_prefetch((const void *)((uintptr_t)(p) + FL__AHEAD * sizeof(float)), 0, 3)
#else
#define fl__prefetch_ahead(p) ((void)(p))
#endif

/* c + a * b, as one FMA when `fused` (a build with FMA, and a * b known
 * exact: then both give the same bits). */
static FL__INLINE double madd(double a, double b, double c, const int fused)
{
#if FL__DISPATCH
    if (fused)
        return __builtin_fma(a, b, c);
#endif
    return c + a * b;
}

/* 1 when w * (double)f is exact for every float f: w's significand fits in
 * 29 bits and the product stays clear of overflow and of float64's subnormal
 * range. */
static int weight_exact(double w)
{
    if (!isfinite(w) || w == 0)
        return 0;
    int e;
    double m = ldexp(frexp(fabs(w), &e), 29);
    return m == floor(m) && e > -800 && e < 800;
}

static FL__INLINE void accumulate_k(double *restrict acc, const float *restrict d, size_t n, double w, int first,
                                    const int fw)
{
    if (first) {
        for (size_t i = 0; i < n; i++)
            acc[i] = w * (double)d[i];
    } else {
        for (size_t i = 0; i < n; i++)
            acc[i] = madd(w, (double)d[i], acc[i], fw);
    }
}

static size_t nblocks(size_t n) { return (n + FL__BLOCK - 1) / FL__BLOCK; }

/* Part j's blocks are [part_blk(j), part_blk(j + 1)). */
static size_t part_blk(size_t n, size_t parts, size_t j) { return nblocks(n) * j / parts; }

static size_t blk_elem(size_t n, size_t blk)
{
    size_t e = blk * FL__BLOCK;
    return e < n ? e : n;
}

static int make_parts(fl_serveropt_t *o, size_t parts)
{
    fl_workers_free(o->workers);
    o->workers = NULL;
    o->parts = parts;
    /* Threads that fail to start leave their parts on the caller: same result. */
    return parts > 1 ? fl_workers_create((int)parts - 1, &o->workers) : 0;
}

int fl__serveropt_set_parts(fl_serveropt_t *o, size_t parts)
{
    if (!o || parts < 1 || parts > FL__MAX_PARTS)
        return FL_EINVAL;
    return make_parts(o, parts);
}

int fl__serveropt_default_parts(size_t n) { return n >= FL__PAR_MIN_N ? FL__PARTS_LARGE : 1; }

/* The best build of the kernels this CPU runs (see FL__DISPATCH). */
static int detect_isa(void)
{
#if FL__DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return 4;
    if (__builtin_cpu_supports("x86-64-v3"))
        return 3;
#endif
    return 0;
}

int fl__serveropt_set_isa(fl_serveropt_t *o, int isa)
{
    if (!o || (isa != 0 && isa != 3 && isa != 4))
        return FL_EINVAL;
    if (isa > detect_isa())
        return FL_EUNSUPPORTED;
    o->isa = isa;
    return 0;
}

/* One delta, fl_serveropt_add's two passes in parts. */
typedef struct {
    fl_serveropt_t *o;
    const float *d;
    double w;
    int first;
    int bad[FL__MAX_PARTS];
} add1_t;

static void add1_check(void *arg, size_t j)
{
    add1_t *a = arg;
    size_t n = a->o->n, parts = a->o->parts;
    size_t lo = blk_elem(n, part_blk(n, parts, j)), hi = blk_elem(n, part_blk(n, parts, j + 1));
    a->bad[j] = !fl_f32_all_finite(a->d + lo, hi - lo);
}

static void add1_acc(void *arg, size_t j)
{
    add1_t *a = arg;
    size_t n = a->o->n, parts = a->o->parts;
    size_t lo = blk_elem(n, part_blk(n, parts, j)), hi = blk_elem(n, part_blk(n, parts, j + 1));
    const kernels_t *k = &kernels[a->o->isa];
    k->acc(a->o->acc + lo, a->d + lo, hi - lo, a->w, a->first, a->o->isa && weight_exact(a->w));
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
    add1_t a = {.o = o, .d = delta, .w = w, .first = o->accepted == 0};
    fl_workers_run(o->workers, o->parts, add1_check, &a);
    for (size_t j = 0; j < o->parts; j++) {
        if (a.bad[j]) {
            o->rejected++;
            return FL_ENONFINITE;
        }
    }
    fl_workers_run(o->workers, o->parts, add1_acc, &a);
    o->total_weight += w;
    o->accepted++;
    return 0;
}

/* One pass over the model per optimizer; each loop reads D's source and the
 * state once and writes x and the state once (the work is memory-bound). The
 * arithmetic is done in double, stored in float. The squared norm of D is
 * summed in FL__LANES independent lanes: a single running sum is an ordered
 * reduction the compiler may not vectorize, which would serialize the whole
 * loop. Ranges start on a multiple of FL__LANES, so element k always lands in
 * lane k % FL__LANES. */
#define FL__LANES 8

#define FL__STEP_LOOP(BODY)                                                   \
    do {                                                                      \
        size_t i = 0;                                                         \
        for (; i + FL__LANES <= n; i += FL__LANES)                            \
            for (size_t j = 0; j < FL__LANES; j++) {                          \
                const size_t k = i + j;                                       \
                const double D = src[k] * inv;                                \
                BODY;                                                         \
                lane[j] += D * D;                                             \
            }                                                                 \
        for (; i < n; i++) {                                                  \
            const size_t k = i;                                               \
            const double D = src[k] * inv;                                    \
            BODY;                                                             \
            lane[0] += D * D;                                                 \
        }                                                                     \
    } while (0)

/* The optimizer step on n elements: D = src * inv; x, m and v are the
 * range's own pointers (m, v NULL where the optimizer has none). Adds the
 * range's squared D into lanes_out. Inlined into each multiversioned caller,
 * so it is built for the caller's target. */
static FL__INLINE void step_range(const fl_serveropt_config_t *c, float *restrict x, float *restrict m,
                                  float *restrict v, const double *restrict src, size_t n, double inv, double lr,
                                  double *lanes_out)
{
    double lane[FL__LANES] = {0};
    const double b1 = c->beta1, b2 = c->beta2, tau = c->tau, mu = c->momentum;
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
    for (int j = 0; j < FL__LANES; j++)
        lanes_out[j] += lane[j];
}

/* 1 when a float64 is neither Inf nor NaN, from its bits (immune to
 * -ffinite-math-only). */
static FL__INLINE int finite_bits(double s)
{
    uint64_t u;
    memcpy(&u, &s, sizeof u);
    return (u & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

/* One part of a batch pass. Shared by every part: the inputs; per part: the
 * first non-finite block of each delta (SIZE_MAX: none; deltas refused
 * before the pass start at 0, which no range undoes), its squared norm over
 * the part, and D's squared-norm lanes (fused finish). */
typedef struct {
    fl_serveropt_t *o;
    const float *const *d;
    const double *w;
    size_t count;
    int first;
    int wexact; /* every live weight's products exact (weight_exact) */
    float *x; /* non-NULL: the round's last batch, the step fused in */
    double inv, lr;
    size_t pre[FL_SERVEROPT_MAX_BATCH];
    size_t bad[FL__MAX_PARTS][FL_SERVEROPT_MAX_BATCH];
    double sumsq[FL__MAX_PARTS][FL_SERVEROPT_MAX_BATCH];
    double lane[FL__MAX_PARTS][FL__LANES];
} batch_t;

/* The batched accumulation kernel over blocks [blo, bhi). Blocks are small
 * enough that the batch's slices stay in L1/L2: each delta's slice is summed
 * into a float64 block buffer, its squared norm taken in the same loop (a
 * non-finite element makes the float64 sum of squares non-finite, and a
 * finite float's square cannot overflow a double, so that sum is the check),
 * then the block buffer goes into the accumulator once: the accumulator is
 * read and written once per batch instead of once per delta. For the round's
 * last batch (x non-NULL) the block's D goes straight into the optimizer
 * step, so the accumulator is neither written nor read again. Built for AVX2
 * as well as the baseline, chosen at run time, since the float64 arithmetic
 * is otherwise the bottleneck. */
/* Sums G deltas' slices (x[g], len floats, weights wg[g]) into the block
 * buffer, each element's deltas added in order (first: the buffer starts
 * with the first delta's term), and each slice's sum of squares in eight
 * lanes into ss[g]. G, first and the FMA switches (fw: the weights' products,
 * fn: the squares) are constants where it is inlined, so each combination is
 * its own straight loop. */
static FL__INLINE void group_k(double *restrict tmp, const float *const *xs, const double *wg, size_t len,
                               double *ss, const size_t G, const int first, const int fw, const int fn)
{
    const float *restrict x0 = xs[0];
    const float *restrict x1 = G > 1 ? xs[1] : NULL;
    const float *restrict x2 = G > 2 ? xs[2] : NULL;
    const float *restrict x3 = G > 3 ? xs[3] : NULL;
    const double w0 = wg[0], w1 = G > 1 ? wg[1] : 0, w2 = G > 2 ? wg[2] : 0, w3 = G > 3 ? wg[3] : 0;
    double l0[8] = {0}, l1[8] = {0}, l2[8] = {0}, l3[8] = {0};
    size_t i = 0;
    /* Eight elements at a time, one delta after the other: each inner loop
     * is eight independent lanes, which the compiler turns into vector
     * operations for every G. */
    for (; i + 8 <= len; i += 8) {
        double t[8];
        if ((i & 15) == 0)
            for (size_t g = 0; g < G; g++)
                fl__prefetch_ahead(xs[g] + i);
        for (size_t j = 0; j < 8; j++) {
            const double a = (double)x0[i + j];
            t[j] = first ? w0 * a : madd(w0, a, tmp[i + j], fw);
            l0[j] = madd(a, a, l0[j], fn);
        }
        if (G > 1)
            for (size_t j = 0; j < 8; j++) {
                const double a = (double)x1[i + j];
                t[j] = madd(w1, a, t[j], fw);
                l1[j] = madd(a, a, l1[j], fn);
            }
        if (G > 2)
            for (size_t j = 0; j < 8; j++) {
                const double a = (double)x2[i + j];
                t[j] = madd(w2, a, t[j], fw);
                l2[j] = madd(a, a, l2[j], fn);
            }
        if (G > 3)
            for (size_t j = 0; j < 8; j++) {
                const double a = (double)x3[i + j];
                t[j] = madd(w3, a, t[j], fw);
                l3[j] = madd(a, a, l3[j], fn);
            }
        for (size_t j = 0; j < 8; j++)
            tmp[i + j] = t[j];
    }
    for (; i < len; i++) {
        const double a0 = (double)x0[i];
        double t = first ? w0 * a0 : madd(w0, a0, tmp[i], fw);
        l0[0] = madd(a0, a0, l0[0], fn);
        if (G > 1) {
            const double a1 = (double)x1[i];
            t = madd(w1, a1, t, fw);
            l1[0] = madd(a1, a1, l1[0], fn);
        }
        if (G > 2) {
            const double a2 = (double)x2[i];
            t = madd(w2, a2, t, fw);
            l2[0] = madd(a2, a2, l2[0], fn);
        }
        if (G > 3) {
            const double a3 = (double)x3[i];
            t = madd(w3, a3, t, fw);
            l3[0] = madd(a3, a3, l3[0], fn);
        }
        tmp[i] = t;
    }
    double *const l[4] = {l0, l1, l2, l3};
    for (size_t g = 0; g < G; g++)
        ss[g] = l[g][0] + l[g][1] + l[g][2] + l[g][3] + l[g][4] + l[g][5] + l[g][6] + l[g][7];
}

#if FL__DISPATCH
/* group_k for the x86-64-v3 and -v4 builds, written with AVX2/FMA
 * intrinsics: the compiler's own vectorization of group_k spilled the lanes
 * and reloaded the floats one by one for the squares. Same operations per
 * element and lane, in the same order, so the same bits: element i's square
 * goes into lane i % 8 (lo: lanes 0-3, hi: 4-7). */
FL__TARGET_V3 static FL__INLINE void group_avx_k(double *restrict tmp, const float *const *xs, const double *wg,
                                                 size_t len, double *ss, const size_t G, const int first,
                                                 const int fw)
{
    __m256d llo[4], lhi[4], w[4];
    for (size_t g = 0; g < G; g++) {
        llo[g] = lhi[g] = _mm256_setzero_pd();
        w[g] = _mm256_set1_pd(wg[g]);
    }
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256d tlo, thi;
        if ((i & 15) == 0)
            for (size_t g = 0; g < G; g++)
                fl__prefetch_ahead(xs[g] + i);
        for (size_t g = 0; g < G; g++) {
            const __m256d alo = _mm256_cvtps_pd(_mm_loadu_ps(xs[g] + i));
            const __m256d ahi = _mm256_cvtps_pd(_mm_loadu_ps(xs[g] + i + 4));
            if (g == 0 && first) {
                tlo = _mm256_mul_pd(w[0], alo);
                thi = _mm256_mul_pd(w[0], ahi);
            } else {
                const __m256d clo = g == 0 ? _mm256_loadu_pd(tmp + i) : tlo;
                const __m256d chi = g == 0 ? _mm256_loadu_pd(tmp + i + 4) : thi;
                if (fw) {
                    tlo = _mm256_fmadd_pd(w[g], alo, clo);
                    thi = _mm256_fmadd_pd(w[g], ahi, chi);
                } else {
                    tlo = _mm256_add_pd(clo, _mm256_mul_pd(w[g], alo));
                    thi = _mm256_add_pd(chi, _mm256_mul_pd(w[g], ahi));
                }
            }
            llo[g] = _mm256_fmadd_pd(alo, alo, llo[g]);
            lhi[g] = _mm256_fmadd_pd(ahi, ahi, lhi[g]);
        }
        _mm256_storeu_pd(tmp + i, tlo);
        _mm256_storeu_pd(tmp + i + 4, thi);
    }
    double l[4][8];
    for (size_t g = 0; g < G; g++) {
        _mm256_storeu_pd(l[g], llo[g]);
        _mm256_storeu_pd(l[g] + 4, lhi[g]);
    }
    for (; i < len; i++) {
        double t = 0;
        for (size_t g = 0; g < G; g++) {
            const double a = (double)xs[g][i];
            if (g == 0)
                t = first ? wg[0] * a : madd(wg[0], a, tmp[i], fw);
            else
                t = madd(wg[g], a, t, fw);
            l[g][0] = madd(a, a, l[g][0], 1);
        }
        tmp[i] = t;
    }
    for (size_t g = 0; g < G; g++)
        ss[g] = l[g][0] + l[g][1] + l[g][2] + l[g][3] + l[g][4] + l[g][5] + l[g][6] + l[g][7];
}

FL__TARGET_V3 static FL__INLINE void group_avx(double *restrict tmp, const float *const *xs, const double *wg,
                                               size_t len, double *ss, size_t G, int first, const int fw)
{
#define FL__G(N)                                                                                                \
    do {                                                                                                        \
        if (first)                                                                                              \
            group_avx_k(tmp, xs, wg, len, ss, N, 1, fw);                                                        \
        else                                                                                                    \
            group_avx_k(tmp, xs, wg, len, ss, N, 0, fw);                                                        \
    } while (0)
    switch (G) {
    case 4:
        FL__G(4);
        break;
    case 3:
        FL__G(3);
        break;
    case 2:
        FL__G(2);
        break;
    default:
        FL__G(1);
        break;
    }
#undef FL__G
}
#endif

/* group_k with its constants: G live deltas (1..4) from the block's slices. */
static FL__INLINE void group(double *restrict tmp, const float *const *xs, const double *wg, size_t len,
                             double *ss, size_t G, int first, const int fw, const int fn)
{
#define FL__G(N)                                                                                                \
    do {                                                                                                        \
        if (first)                                                                                              \
            group_k(tmp, xs, wg, len, ss, N, 1, fw, fn);                                                        \
        else                                                                                                    \
            group_k(tmp, xs, wg, len, ss, N, 0, fw, fn);                                                        \
    } while (0)
    switch (G) {
    case 4:
        FL__G(4);
        break;
    case 3:
        FL__G(3);
        break;
    case 2:
        FL__G(2);
        break;
    default:
        FL__G(1);
        break;
    }
#undef FL__G
}


static void acc_base(double *restrict acc, const float *restrict d, size_t n, double w, int first, int fw)
{
    accumulate_k(acc, d, n, w, first, 0);
}

static void group_base(double *restrict tmp, const float *const *xs, const double *wg, size_t len, double *ss,
                       size_t G, int first, int fw)
{
    group(tmp, xs, wg, len, ss, G, first, 0, 0);
}

static void step_base(const fl_serveropt_config_t *c, float *restrict x, float *restrict m, float *restrict v,
                      const double *restrict src, size_t n, double inv, double lr, double *lanes)
{
    step_range(c, x, m, v, src, n, inv, lr, lanes);
}

#if FL__DISPATCH
#define FL__BUILD(SUFFIX, TARGET)                                                                               \
    TARGET static void acc_##SUFFIX(double *restrict acc, const float *restrict d, size_t n, double w, int first, \
                                    int fw)                                                                     \
    {                                                                                                           \
        if (fw)                                                                                                 \
            accumulate_k(acc, d, n, w, first, 1);                                                               \
        else                                                                                                    \
            accumulate_k(acc, d, n, w, first, 0);                                                               \
    }                                                                                                           \
    TARGET static void group_##SUFFIX(double *restrict tmp, const float *const *xs, const double *wg, size_t len, \
                                      double *ss, size_t G, int first, int fw)                                  \
    {                                                                                                           \
        if (fw)                                                                                                 \
            group_avx(tmp, xs, wg, len, ss, G, first, 1);                                                       \
        else                                                                                                    \
            group_avx(tmp, xs, wg, len, ss, G, first, 0);                                                       \
    }                                                                                                           \
    TARGET static void step_##SUFFIX(const fl_serveropt_config_t *c, float *restrict x, float *restrict m,       \
                                     float *restrict v, const double *restrict src, size_t n, double inv,       \
                                     double lr, double *lanes)                                                  \
    {                                                                                                           \
        step_range(c, x, m, v, src, n, inv, lr, lanes);                                                         \
    }
FL__BUILD(v3, FL__TARGET_V3)
FL__BUILD(v4, FL__TARGET_V4)
#undef FL__BUILD
#endif

static const kernels_t kernels[5] = {
    [0] = {acc_base, group_base, step_base},
#if FL__DISPATCH
    [3] = {acc_v3, group_v3, step_v3},
    [4] = {acc_v4, group_v4, step_v4},
#endif
};

static void batch_blocks(batch_t *a, size_t blo, size_t bhi, size_t *bad, double *sumsq, double *lanes)
{
    fl_serveropt_t *o = a->o;
    const kernels_t *k = &kernels[o->isa];
    const int fw = o->isa && a->wexact;
    const size_t n = o->n;
    _Alignas(64) double tmp[FL__BLOCK];
    size_t used_idx[FL_SERVEROPT_MAX_BATCH];
    for (size_t blk = blo; blk < bhi; blk++) {
        const size_t lo = blk * FL__BLOCK;
        const size_t len = n - lo < FL__BLOCK ? n - lo : FL__BLOCK;
        /* The block's live deltas, summed four at a time: the block buffer
         * is loaded and stored once per group instead of once per delta, and
         * each element still gets the deltas added one by one, in order, so
         * the sums are the same bits as one delta at a time. */
        size_t live[FL_SERVEROPT_MAX_BATCH], nlive = 0, used = 0;
        for (size_t b = 0; b < a->count; b++)
            if (bad[b] == SIZE_MAX)
                live[nlive++] = b;
        for (size_t g0 = 0; g0 < nlive; g0 += 4) {
            const size_t G = nlive - g0 < 4 ? nlive - g0 : 4;
            double ss[4];
            const float *xs[4];
            double wg[4];
            for (size_t g = 0; g < G; g++) {
                xs[g] = a->d[live[g0 + g]] + lo;
                wg[g] = a->w[live[g0 + g]];
            }
            k->group(tmp, xs, wg, len, ss, G, used == 0, fw);
            int any_bad = 0;
            for (size_t g = 0; g < G; g++) {
                const size_t b = live[g0 + g];
                if (!finite_bits(ss[g])) {
                    bad[b] = blk;
                    any_bad = 1;
                    continue;
                }
                sumsq[b] += ss[g];
                used_idx[used++] = b;
            }
            if (any_bad) {
                /* Rare: rebuild the block buffer from the finite slices so far. */
                for (size_t u = 0; u < used; u++) {
                    const float *restrict xu = a->d[used_idx[u]] + lo;
                    const double wu = a->w[used_idx[u]];
                    if (u == 0)
                        for (size_t k = 0; k < len; k++)
                            tmp[k] = wu * (double)xu[k];
                    else
                        for (size_t k = 0; k < len; k++)
                            tmp[k] += wu * (double)xu[k];
                }
            }
        }
        double *restrict acc = o->acc + lo;
        if (!a->x) {
            if (used == 0) {
                if (a->first)
                    memset(acc, 0, len * sizeof(double));
            } else if (a->first) {
                memcpy(acc, tmp, len * sizeof(double));
            } else {
                for (size_t i = 0; i < len; i++)
                    acc[i] += tmp[i];
            }
            continue;
        }
        /* Fused finish: tmp becomes the block's sum over the round. */
        if (used == 0) {
            if (a->first)
                memset(tmp, 0, len * sizeof(double));
            else
                memcpy(tmp, acc, len * sizeof(double));
        } else if (!a->first) {
            for (size_t i = 0; i < len; i++)
                tmp[i] = acc[i] + tmp[i];
        }
        k->step(&o->cfg, a->x + lo, o->m ? o->m + lo : NULL, o->v ? o->v + lo : NULL, tmp, len, a->inv, a->lr,
                lanes);
    }
}

static void batch_part(void *arg, size_t j)
{
    batch_t *a = arg;
    size_t parts = a->o->parts, n = a->o->n;
    memcpy(a->bad[j], a->pre, a->count * sizeof a->pre[0]);
    memset(a->sumsq[j], 0, a->count * sizeof a->sumsq[0][0]);
    memset(a->lane[j], 0, sizeof a->lane[j]);
    batch_blocks(a, part_blk(n, parts, j), part_blk(n, parts, j + 1), a->bad[j], a->sumsq[j], a->lane[j]);
}

/* Checks a batch's arguments and fills a->pre, w and results; returns the
 * number of live deltas, or a negative FL_E* for the call itself. */
static int batch_setup(fl_serveropt_t *o, batch_t *a, const float *const *deltas, const double *num_examples,
                       size_t count, size_t n, int *results, double *w)
{
    if (!o || !o->open)
        return FL_ESTATE;
    if (count == 0 || count > FL_SERVEROPT_MAX_BATCH || !deltas || !num_examples || !results)
        return FL_EINVAL;
    int live = 0;
    for (size_t b = 0; b < count; b++) {
        results[b] = 0;
        w[b] = 1.0;
        if (!deltas[b] || n != o->n)
            results[b] = FL_ESHAPE;
        else if (o->cfg.weighting == FL_WEIGHTING_EXAMPLES &&
                 (!isfinite(num_examples[b]) || num_examples[b] <= 0))
            results[b] = FL_EINVAL;
        else if (o->cfg.weighting == FL_WEIGHTING_EXAMPLES)
            w[b] = num_examples[b];
        a->pre[b] = results[b] ? 0 : SIZE_MAX; /* refused ones: excluded from the pass, nothing to undo */
        live += results[b] == 0;
    }
    a->o = o;
    a->d = deltas;
    a->w = w;
    a->count = count;
    a->first = o->accepted == 0;
    a->wexact = 1;
    for (size_t b = 0; b < count; b++)
        if (!results[b] && !weight_exact(w[b]))
            a->wexact = 0;
    return live;
}

/* After the parts: each delta's outcome, its norm, the counters; a delta
 * found non-finite is taken back out of the blocks it was summed into when
 * undo is set. Returns how many were found non-finite. */
static int batch_merge(fl_serveropt_t *o, batch_t *a, int *results, double *norms, int undo)
{
    const size_t n = o->n, parts = o->parts;
    int nonfinite = 0;
    for (size_t b = 0; b < a->count; b++) {
        if (norms)
            norms[b] = NAN;
        if (results[b]) {
            o->rejected++;
            continue;
        }
        int bad = 0;
        double ss = 0;
        for (size_t p = 0; p < parts; p++) {
            bad |= a->bad[p][b] != SIZE_MAX;
            ss += a->sumsq[p][b];
        }
        if (bad) {
            for (size_t p = 0; undo && p < parts; p++) {
                size_t bhi = part_blk(n, parts, p + 1);
                size_t end = blk_elem(n, a->bad[p][b] < bhi ? a->bad[p][b] : bhi);
                for (size_t i = blk_elem(n, part_blk(n, parts, p)); i < end; i++)
                    o->acc[i] -= a->w[b] * (double)a->d[b][i];
            }
            results[b] = FL_ENONFINITE;
            o->rejected++;
            nonfinite++;
            continue;
        }
        o->total_weight += a->w[b];
        o->accepted++;
        if (norms)
            norms[b] = sqrt(ss);
    }
    return nonfinite;
}

int fl_serveropt_add_batch(fl_serveropt_t *o, const float *const *deltas, const double *num_examples,
                           size_t count, size_t n, int *results, double *norms)
{
    double w[FL_SERVEROPT_MAX_BATCH];
    batch_t a;
    int live = batch_setup(o, &a, deltas, num_examples, count, n, results, w);
    if (live < 0)
        return live;
    a.x = NULL;
    if (live) {
        fl_workers_run(o->workers, o->parts, batch_part, &a);
    } else {
        for (size_t p = 0; p < o->parts; p++) {
            memcpy(a.bad[p], a.pre, count * sizeof a.pre[0]);
            memset(a.sumsq[p], 0, count * sizeof a.sumsq[p][0]);
        }
    }
    batch_merge(o, &a, results, norms, 1);
    return 0;
}

static double bias_corrected_lr(const fl_serveropt_t *o)
{
    const fl_serveropt_config_t *c = &o->cfg;
    double lr = c->server_lr;
    const uint64_t t = o->step + 1;
    if (c->bias_correction)
        lr *= sqrt(1.0 - pow(c->beta2, (double)t)) / (1.0 - pow(c->beta1, (double)t));
    return lr;
}

static double lanes_norm(batch_t *a, size_t parts)
{
    double norm2 = 0.0;
    for (size_t p = 0; p < parts; p++)
        for (int j = 0; j < FL__LANES; j++)
            norm2 += a->lane[p][j];
    return sqrt(norm2);
}

static void step_blocks(batch_t *a, size_t blo, size_t bhi, double *lanes)
{
    fl_serveropt_t *o = a->o;
    size_t lo = blk_elem(o->n, blo), hi = blk_elem(o->n, bhi);
    kernels[o->isa].step(&o->cfg, a->x + lo, o->m ? o->m + lo : NULL, o->v ? o->v + lo : NULL, o->acc + lo,
                         hi - lo, a->inv, a->lr, lanes);
}

static void step_part(void *arg, size_t j)
{
    batch_t *a = arg;
    size_t parts = a->o->parts, n = a->o->n;
    memset(a->lane[j], 0, sizeof a->lane[j]);
    step_blocks(a, part_blk(n, parts, j), part_blk(n, parts, j + 1), a->lane[j]);
}

static void close_round(fl_serveropt_t *o, int applied, double norm, fl_serveropt_round_t *res)
{
    fl_serveropt_round_t r = {0};
    r.accepted = o->accepted;
    r.rejected = o->rejected;
    r.total_weight = o->total_weight;
    if (applied) {
        r.update_norm = norm;
        o->step++;
        r.applied = 1;
    }
    r.step = o->step;
    o->open = 0;
    if (res)
        *res = r;
}

int fl_serveropt_finish(fl_serveropt_t *o, float *x, size_t n, fl_serveropt_round_t *res)
{
    if (!o || !o->open)
        return FL_ESTATE;
    if (!x || n != o->n)
        return FL_ESHAPE;
    double norm = 0;
    if (o->accepted > 0) {
        batch_t *a = malloc(sizeof *a);
        if (!a)
            return FL_ENOMEM;
        a->o = o;
        a->x = x;
        a->inv = 1.0 / o->total_weight;
        a->lr = bias_corrected_lr(o);
        fl_workers_run(o->workers, o->parts, step_part, a);
        norm = lanes_norm(a, o->parts);
        free(a);
    }
    close_round(o, o->accepted > 0, norm, res);
    return 0;
}

int fl_serveropt_add_batch_finish(fl_serveropt_t *o, const float *const *deltas, const double *num_examples,
                                  size_t count, size_t n, int *results, double *norms, float *x,
                                  fl_serveropt_round_t *res)
{
    double w[FL_SERVEROPT_MAX_BATCH];
    if (o && o->open && (!x || n != o->n))
        return FL_ESHAPE;
    batch_t *a = malloc(sizeof *a);
    if (!a)
        return FL_ENOMEM;
    int live = batch_setup(o, a, deltas, num_examples, count, n, results, w);
    if (live <= 0) {
        /* Nothing new to fuse: every delta refused up front. */
        free(a);
        if (live < 0)
            return live;
        for (size_t b = 0; b < count; b++) {
            o->rejected++;
            if (norms)
                norms[b] = NAN;
        }
        return fl_serveropt_finish(o, x, n, res);
    }
    double total = o->total_weight;
    for (size_t b = 0; b < count; b++)
        if (!results[b])
            total += w[b];
    a->x = x;
    a->inv = 1.0 / total;
    a->lr = bias_corrected_lr(o);
    fl_workers_run(o->workers, o->parts, batch_part, a);
    int nonfinite = batch_merge(o, a, results, norms, 0);
    double norm = lanes_norm(a, o->parts);
    free(a);
    close_round(o, 1, norm, res);
    return nonfinite ? FL_ENONFINITE : 0;
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
