/* gemm: the one matrix-multiply entry point of the training engine.
 *
 * Row-major C = alpha * op(A) * op(B) + beta * C with op(X) = X or X^T, the
 * shape of cblas_sgemm. Built with FL_HAVE_OPENBLAS=1 (the default `make`)
 * it calls OpenBLAS; with `make BLAS=none` it runs a portable blocked loop,
 * slower but identical in meaning, so every layer is written once against
 * this signature.
 *
 * fl_gemm_setup also makes sure OpenBLAS runs its best kernel: Debian's
 * DYNAMIC_ARCH build picks its kernel from cpuid when the library loads, and
 * on some CPUs (AVX-512 Xeons unknown to 0.3.21) falls back to the SSE3
 * "Prescott" kernel, several times slower. OpenBLAS only honours the
 * OPENBLAS_CORETYPE override at load time, so the fix is a re-exec of the
 * program with the variable set; see fl_gemm_fix_kernel. */
#ifndef FL_GEMM_H
#define FL_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* Row-major single-precision GEMM: C[M,N] = alpha*op(A)[M,K]*op(B)[K,N] + beta*C.
 * transa/transb are 0 or 1; lda/ldb/ldc are row strides of the stored
 * matrices (as in cblas_sgemm with CblasRowMajor). With beta == 0, C is
 * written without being read (it may hold garbage or NaN). */
void fl_gemm(int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
             const float *b, int ldb, float beta, float *c, int ldc);

/* Sets the number of threads GEMM may use (OpenBLAS's pool; the portable
 * kernel is single-threaded). n < 1 means 1. Products under 20 MFLOP still
 * run on one thread (splitting them made mlp slower). Results are
 * deterministic for a fixed thread count. */
void fl_gemm_set_threads(int n);

/* Returns the thread count set last (1 before any call with the portable kernel). */
int fl_gemm_get_threads(void);

/* Returns a static description of the backend, e.g. "openblas 0.3.21 Zen" or "portable". */
const char *fl_gemm_backend(void);

/* Returns the OpenBLAS kernel name this CPU should use when the loaded one is
 * a generic fallback ("SkylakeX", "Haswell", "Zen"), or NULL when the loaded
 * kernel is fine, the CPU has nothing better, the user already chose one
 * (OPENBLAS_CORETYPE is set) or there is no OpenBLAS. Pure query. */
const char *fl_gemm_better_kernel(void);

/* Called first thing in main(): when fl_gemm_better_kernel() names a kernel,
 * sets OPENBLAS_CORETYPE to it and re-executes /proc/self/exe with the same
 * argv (once: FEDOPT_BLAS_REEXEC guards against loops). Returns only when no
 * re-exec happened or it failed (then the program runs on the slow kernel,
 * with a warning). FEDOPT_NO_BLAS_FIX=1 disables it. */
void fl_gemm_fix_kernel(int argc, char **argv);

/* Internal: the floating-point operations (2*m*n*k per call) of every GEMM
 * this thread has run. Models use it to measure their own cost. */
uint64_t fl__gemm_flops(void);

/* Internal, for benchmarks: turns the process-wide GEMM timer on (nonzero)
 * or off (0, the default). While it is on, every fl_gemm call, on whichever
 * thread (model replicas included), adds its wall time on CLOCK_MONOTONIC
 * and its flops to process-wide totals; while it is off a call costs one
 * relaxed atomic load more than it did. The totals are never reset: callers
 * take differences. */
void fl__gemm_timing(int on);

/* Internal: wall seconds spent inside fl_gemm while the timer was on,
 * summed over the calling threads (two threads in GEMM for 1 s each add
 * 2 s), so a split model's figure must be divided by its parts to compare
 * with a step's wall time. */
double fl__gemm_seconds(void);

/* Internal: the floating-point operations (2*m*n*k per call) of the calls
 * fl__gemm_seconds timed, over all threads (fl__gemm_flops counts only the
 * calling thread's, timed or not). */
uint64_t fl__gemm_timed_flops(void);

/* Internal, for products that run outside fl_gemm (oneDNN's convolutions,
 * common/nn/dnnl.h), so fl__gemm_flops and the timer cover them too:
 * fl__gemm_clock() is the start time when the timer is on (0 when off), and
 * fl__gemm_account(flops, t0) adds flops to this thread's count and, when
 * t0 is not 0, the time since t0 and the flops to the timer's totals. A
 * convolution counts the multiply-adds of its direct form, as im2col's GEMM
 * would. */
uint64_t fl__gemm_clock(void);
void fl__gemm_account(uint64_t flops, uint64_t t0);

/* Internal, for benchmarks: the convolutions' own account while the timer
 * is on. fl__gemm_conv_clock() is the calling thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID, ns) when the timer is on, 0 when off;
 * fl__gemm_conv_account(flops, t0) adds the thread CPU time since t0 and
 * the flops to process-wide totals (nothing when t0 is 0). CPU time rather
 * than wall time, so the time a shared machine's scheduler takes the
 * thread away does not count against the kernels. Never reset: callers
 * take differences. */
uint64_t fl__gemm_conv_clock(void);
void fl__gemm_conv_account(uint64_t flops, uint64_t t0);
double fl__gemm_conv_cpu_seconds(void);
uint64_t fl__gemm_conv_timed_flops(void);

/* Internal: the backend a layer asks fl__gemm_via to run a product on.
 * FL_GEMM_OWN is fl_gemm itself (OpenBLAS, or the portable kernel);
 * FL_GEMM_DNNL is oneDNN's sgemm (common/nn/dnnl.h), which runs AVX-512
 * kernels where the CPU has them while OpenBLAS may be held to AVX2 (this
 * machine kind's OPENBLAS_CORETYPE=Haswell). Each layer says per product
 * which one it wants and why (common/nn/dense.c, lstm.c). */
enum { FL_GEMM_OWN = 0, FL_GEMM_DNNL = 1 };

/* Internal: fl_gemm, run on oneDNN's sgemm when backend is FL_GEMM_DNNL,
 * oneDNN is built in, fl__gemm_set_dnnl has not said "never", k > 0 and
 * the product runs on one thread (one thread set, or a product under the
 * multi-thread cut; see gemm.c); otherwise exactly fl_gemm. Counted by
 * fl__gemm_flops and the timer like fl_gemm. The results agree with
 * fl_gemm's within float rounding (the order of the sums differs). */
void fl__gemm_via(int backend, int transa, int transb, int m, int n, int k, float alpha,
                  const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/* Internal, for benches and tests: 0 (default) every layer picks its
 * products' backends; 1 every product runs on fl_gemm's path (the
 * benches' "own"); 2 every product a layer could run on oneDNN does
 * (layers read it with fl__gemm_dnnl_mode when they choose). */
void fl__gemm_set_dnnl(int mode);
int fl__gemm_dnnl_mode(void);

/* Internal, for tests: the decision of fl_gemm_better_kernel for a loaded
 * kernel name, a CPU level (0 SSE, 1 AVX, 2 AVX2+FMA, 3 AVX-512) and vendor. */
const char *fl__gemm_pick_kernel(const char *loaded, int cpu, int is_amd);

#endif
