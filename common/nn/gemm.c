#include "common/nn/gemm.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/base/log.h"
#include "common/nn/dnnl.h"

#if FL_HAVE_OPENBLAS
#include <cblas.h>
/* Not declared by every cblas.h variant, but exported by every OpenBLAS. */
extern char *openblas_get_corename(void);
extern char *openblas_get_config(void);
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FL_GEMM_X86 1
#else
#define FL_GEMM_X86 0
#endif

/* The thread count of the last fl_gemm_set_threads (1 before any). */
static int set_threads = 1;

/* See gemm_run. */
#define FL_GEMM_MT_MIN_FLOPS 2e7

/* Multiply-adds of this thread's GEMMs, for fl__gemm_flops. */
static _Thread_local uint64_t gemm_flops;

uint64_t fl__gemm_flops(void) { return gemm_flops; }

/* The GEMM timer (fl__gemm_timing): process-wide rather than thread-local
 * because a split model runs its replicas' GEMMs on threads that end with
 * the step, taking any thread-local total with them. Atomics cost nothing
 * measurable at GEMM granularity (a call is microseconds at least). */
static atomic_int timing_on;
static _Atomic uint64_t timed_ns, timed_flops;

void fl__gemm_timing(int on) { atomic_store_explicit(&timing_on, on != 0, memory_order_relaxed); }

double fl__gemm_seconds(void)
{
    return 1e-9 * (double)atomic_load_explicit(&timed_ns, memory_order_relaxed);
}

uint64_t fl__gemm_timed_flops(void) { return atomic_load_explicit(&timed_flops, memory_order_relaxed); }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* vDSO, no syscall: cheap enough for bench_train */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void gemm_run(int transa, int transb, int m, int n, int k, float alpha, const float *a,
                     int lda, const float *b, int ldb, float beta, float *c, int ldc);

uint64_t fl__gemm_clock(void)
{
    return atomic_load_explicit(&timing_on, memory_order_relaxed) ? now_ns() : 0;
}

void fl__gemm_account(uint64_t flops, uint64_t t0)
{
    gemm_flops += flops;
    if (!t0)
        return;
    atomic_fetch_add_explicit(&timed_ns, now_ns() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&timed_flops, flops, memory_order_relaxed);
}

static _Atomic uint64_t conv_cpu_ns, conv_flops;

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t fl__gemm_conv_clock(void)
{
    if (!atomic_load_explicit(&timing_on, memory_order_relaxed))
        return 0;
    uint64_t t = thread_cpu_ns();
    return t ? t : 1;
}

void fl__gemm_conv_account(uint64_t flops, uint64_t t0)
{
    if (!t0)
        return;
    atomic_fetch_add_explicit(&conv_cpu_ns, thread_cpu_ns() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&conv_flops, flops, memory_order_relaxed);
}

double fl__gemm_conv_cpu_seconds(void)
{
    return 1e-9 * (double)atomic_load_explicit(&conv_cpu_ns, memory_order_relaxed);
}

uint64_t fl__gemm_conv_timed_flops(void)
{
    return atomic_load_explicit(&conv_flops, memory_order_relaxed);
}

void fl_gemm(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    uint64_t flops = k > 0 ? 2 * (uint64_t)m * (uint64_t)n * (uint64_t)k : 0;
    gemm_flops += flops;
    if (!atomic_load_explicit(&timing_on, memory_order_relaxed)) {
        gemm_run(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    uint64_t t0 = now_ns();
    gemm_run(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    atomic_fetch_add_explicit(&timed_ns, now_ns() - t0, memory_order_relaxed);
    atomic_fetch_add_explicit(&timed_flops, flops, memory_order_relaxed);
}

static int dnnl_mode; /* fl__gemm_set_dnnl */

void fl__gemm_set_dnnl(int mode) { dnnl_mode = mode; }

int fl__gemm_dnnl_mode(void) { return dnnl_mode; }

void fl__gemm_via(int backend, int transa, int transb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    /* oneDNN only for what runs on one thread: its OpenMP team split over
     * both cores of a shared machine spent much of its CPU time waiting on
     * the smaller shapes (bench_gemm's oneDNN 2-thread column, per
     * CPU-second), and the products big enough to split are rare in the
     * models (the batch splits instead: fl_model_set_threads). */
    if (backend != FL_GEMM_DNNL || dnnl_mode == 1 || !fl__dnnl_available() || m <= 0 || n <= 0 ||
        k <= 0 || (set_threads > 1 && 2.0 * m * n * k >= FL_GEMM_MT_MIN_FLOPS)) {
        fl_gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    uint64_t t0 = fl__gemm_clock();
    if (fl__dnnl_sgemm(1, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) != 0) {
        fl_gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    fl__gemm_account(2 * (uint64_t)m * (uint64_t)n * (uint64_t)k, t0);
}

#if FL_HAVE_OPENBLAS
/* Zeroes the m x n matrix c with leading dimension ldc (one memset when
 * the rows are contiguous). */
static void zero_rows(float *c, int m, int n, int ldc)
{
    if (ldc == n) {
        memset(c, 0, (size_t)m * (size_t)n * sizeof *c);
        return;
    }
    for (int i = 0; i < m; i++)
        memset(c + (size_t)i * ldc, 0, (size_t)n * sizeof *c);
}
#endif

/* Partial sums of the portable dot product. One running sum cannot be
 * vectorized (C forbids reassociating float adds without -ffast-math);
 * eight independent ones are two NEON/SSE registers or one AVX register,
 * which GCC's SLP vectorizer fills from the unrolled lane loop (check with
 * -fopt-info-vec, docs/devices.md). */
#define FL_GEMM_LANES 8

static float dot(const float *restrict x, const float *restrict y, int k)
{
    float acc[FL_GEMM_LANES] = {0};
    int p = 0;
    for (; p + FL_GEMM_LANES <= k; p += FL_GEMM_LANES)
        for (int l = 0; l < FL_GEMM_LANES; l++)
            acc[l] += x[p + l] * y[p + l];
    float s = 0.0f;
    for (; p < k; p++)
        s += x[p] * y[p];
    for (int l = 0; l < FL_GEMM_LANES; l++)
        s += acc[l];
    return s;
}

/* crow[0..n) += a * brow[0..n): the inner loop of the i-p-j order. */
static void axpy(float *restrict crow, float a, const float *restrict brow, int n)
{
    for (int j = 0; j < n; j++)
        crow[j] += a * brow[j];
}

static void gemm_run(int transa, int transb, int m, int n, int k, float alpha, const float *a,
                     int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
#if FL_HAVE_OPENBLAS
    if (k > 0) {
        /* Below FL_GEMM_MT_MIN_FLOPS a product runs on one thread even when
         * more were set: OpenBLAS splits anything over 2^18 multiply-adds,
         * and mlp's batch-20 products (6.3 MFLOP each) then ran slower on
         * two threads than on one, while autoencoder's and bowlr's (31 MFLOP
         * and up) and mlp's at batch 64 (20 MFLOP) gain (bench_train's
         * 2-thread columns measure it). Only a
         * caller that set more than one thread (one training thread: split
         * models keep 1) switches, so no concurrent GEMM sees the switch. */
        int one = set_threads > 1 && 2.0 * m * n * k < FL_GEMM_MT_MIN_FLOPS;
        if (one)
            openblas_set_num_threads(1);
        /* OpenBLAS meets beta == 0 by first zeroing C with its own beta
         * kernel and then accumulating into it, a slower pass than memset
         * (bench_gemm's Winograd and conv1 shapes, and a perf profile of
         * bench_train's cnn step, show it). The result is the same: both
         * add the product to zeros, in the same order. */
        if (beta == 0.0f) {
            zero_rows(c, m, n, ldc);
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans,
                    transb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c,
                    ldc);
        if (one)
            openblas_set_num_threads(set_threads);
        return;
    }
#endif
    /* Portable kernel: i-p-j order so the innermost loop walks rows of B and
     * C contiguously (axpy, vectorized); with B transposed the inner loop is
     * a dot product over contiguous rows of both (dot, vectorized by its
     * lanes). C never overlaps A or B (cblas_sgemm's contract too), which
     * the restrict qualifiers tell the compiler. */
    for (int i = 0; i < m; i++) {
        float *crow = c + (size_t)i * ldc;
        if (beta == 0.0f)
            memset(crow, 0, (size_t)n * sizeof(float));
        else if (beta != 1.0f)
            for (int j = 0; j < n; j++)
                crow[j] *= beta;
        if (!transb) {
            for (int p = 0; p < k; p++) {
                float aip = alpha * (transa ? a[(size_t)p * lda + i] : a[(size_t)i * lda + p]);
                axpy(crow, aip, b + (size_t)p * ldb, n);
            }
        } else if (!transa) {
            const float *arow = a + (size_t)i * lda;
            for (int j = 0; j < n; j++)
                crow[j] += alpha * dot(arow, b + (size_t)j * ldb, k);
        } else {
            for (int j = 0; j < n; j++) {
                const float *brow = b + (size_t)j * ldb;
                float s = 0.0f;
                for (int p = 0; p < k; p++)
                    s += a[(size_t)p * lda + i] * brow[p];
                crow[j] += alpha * s;
            }
        }
    }
}

void fl_gemm_set_threads(int n)
{
    if (n < 1)
        n = 1;
#if FL_HAVE_OPENBLAS
    openblas_set_num_threads(n);
#endif
    set_threads = n;
}

int fl_gemm_get_threads(void)
{
#if FL_HAVE_OPENBLAS
    return openblas_get_num_threads();
#else
    return 1;
#endif
}

const char *fl_gemm_backend(void)
{
#if FL_HAVE_OPENBLAS
    static char buf[160];
    snprintf(buf, sizeof buf, "openblas (%s), kernel %s%s", openblas_get_config(),
             openblas_get_corename(),
             getenv("FEDOPT_BLAS_REEXEC") ? " (chosen by fedopt over the generic one)" : "");
    return buf;
#else
    return "portable (built with BLAS=none)";
#endif
}

#if FL_HAVE_OPENBLAS
/* What the CPU (and the OS, through XCR0) supports: 0 = SSE only, 1 = AVX,
 * 2 = AVX2+FMA, 3 = AVX-512 F/BW/DQ/VL. */
static int cpu_level(int *is_amd)
{
    *is_amd = 0;
#if FL_GEMM_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return 0;
    unsigned maxleaf = a;
    *is_amd = (b == 0x68747541u); /* "Auth" of "AuthenticAMD" */
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
    if (!osxsave || !avx)
        return 0;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    if ((xlo & 0x6) != 0x6) /* the OS saves XMM and YMM state */
        return 0;
    int level = 1;
    if (maxleaf < 7)
        return level;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    if (avx2 && fma)
        level = 2;
    int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);
    if (level == 2 && avx512 && (xlo & 0xE0) == 0xE0) /* opmask, ZMM_Hi256, Hi16_ZMM saved */
        level = 3;
    return level;
#else
    return 0;
#endif
}
#endif

/* The instruction level an OpenBLAS x86 kernel name needs, or -1 for a name
 * we do not know (then we never second-guess the library). */
static int kernel_level(const char *name)
{
    static const char *const sse[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                      "Atom", "Barcelona", "Opteron", "Opteron(SSE3)", "Nano",
                                      "Bobcat", "Katmai", "Coppermine", "Northwood", "Banias",
                                      "Athlon", NULL};
    static const char *const avx[] = {"Sandybridge", "Bulldozer", "Piledriver", "Steamroller",
                                      "Excavator", NULL};
    static const char *const avx2[] = {"Haswell", "Zen", NULL};
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids", NULL};
    const char *const *tables[] = {sse, avx, avx2, avx512};
    for (int lvl = 0; lvl < 4; lvl++)
        for (const char *const *t = tables[lvl]; *t; t++)
            if (strcasecmp(name, *t) == 0)
                return lvl;
    return -1;
}

const char *fl__gemm_pick_kernel(const char *loaded, int cpu, int is_amd)
{
    int have = loaded ? kernel_level(loaded) : -1;
    /* Only a known generic (pre-AVX2) kernel on a CPU with AVX2 or better is
     * replaced: where OpenBLAS already picked an AVX2/AVX-512 kernel, or a
     * name we do not know, its choice stands. */
    if (have < 0 || have >= 2 || cpu < 2)
        return NULL;
    if (cpu >= 3)
        return "SkylakeX";
    return is_amd ? "Zen" : "Haswell";
}

const char *fl_gemm_better_kernel(void)
{
#if FL_HAVE_OPENBLAS
    const char *env = getenv("OPENBLAS_CORETYPE");
    if (env && *env)
        return NULL;
    const char *loaded = getenv("FEDOPT_BLAS_ASSUME_LOADED"); /* test hook */
    if (!loaded || !*loaded)
        loaded = openblas_get_corename();
    int amd;
    int cpu = cpu_level(&amd);
    return fl__gemm_pick_kernel(loaded, cpu, amd);
#else
    return NULL;
#endif
}

void fl_gemm_fix_kernel(int argc, char **argv)
{
    (void)argc;
#if FL_HAVE_OPENBLAS
    const char *off = getenv("FEDOPT_NO_BLAS_FIX");
    if ((off && strcmp(off, "0") != 0 && *off) || getenv("FEDOPT_BLAS_REEXEC"))
        return;
    const char *k = fl_gemm_better_kernel();
    if (!k)
        return;
    FL_LOG_D("gemm", "OpenBLAS loaded its generic kernel %s on a CPU that runs %s; re-executing "
                     "with OPENBLAS_CORETYPE=%s",
             openblas_get_corename(), k, k);
    if (setenv("OPENBLAS_CORETYPE", k, 1) != 0 || setenv("FEDOPT_BLAS_REEXEC", "1", 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* Still here: no /proc or exec refused. Run on, slowly, and say so. */
    FL_LOG_W("gemm", "OpenBLAS runs its slow %s kernel; set OPENBLAS_CORETYPE=%s for speed",
             openblas_get_corename(), k);
    unsetenv("OPENBLAS_CORETYPE");
#else
    (void)argv;
#endif
}
