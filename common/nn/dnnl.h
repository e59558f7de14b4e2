/* dnnl: oneDNN (Debian's libdnnl, the library PyTorch's CPU convolutions
 * run on) as a backend for conv2d's three products and, through its sgemm,
 * for the dense and LSTM layers' products (fl__gemm_via in gemm.h), picked
 * inside common/nn/ (the layer interface and the models do not know it).
 * oneDNN does its own CPU dispatch (AVX-512 kernels where the CPU has them,
 * whatever OPENBLAS_CORETYPE says).
 *
 * Built with FL_HAVE_DNNL=1 (`make DNNL=1`, the default on amd64 when the
 * library is installed); otherwise every call returns FL_EUNSUPPORTED and
 * conv2d keeps its own path. The tensors are PyTorch's plain layouts: x
 * [n, cin, h, w], weight [cout, cin, k, k], bias [cout], y [n, cout, ho, wo].
 *
 * Threads: a call runs on as many threads as fl_gemm_get_threads() says
 * (oneDNN's OpenMP team is sized per calling thread), so a model that
 * splits its batches runs each part's convolutions on its own thread only,
 * and a model that splits its layers runs each slice (see
 * fl__dnnl_conv_create_slice) on one of its workers. A fl__dnnl_conv_t is
 * used by one thread at a time (a layer or slice belongs to one model or
 * replica, and its slices are separate objects). Results are deterministic
 * for a fixed thread count. */
#ifndef FL_DNNL_H
#define FL_DNNL_H

#include <stddef.h>

typedef struct fl__dnnl_conv fl__dnnl_conv_t;

/* Whether the backend is built in (1) or not (0). */
int fl__dnnl_available(void);

/* Prepares a convolution of the given shape (square kernel k, the same
 * stride and zero padding on both axes). Primitives are made per batch size
 * on first use and kept (a few sizes). The caller owns *out
 * (fl__dnnl_conv_free). Returns 0, FL_EINVAL, FL_ENOMEM or FL_EUNSUPPORTED
 * (not built in, or oneDNN has no CPU engine). */
int fl__dnnl_conv_create(int cin, int h, int w, int cout, int k, int stride, int pad, int bias,
                         fl__dnnl_conv_t **out);

/* The same for a slice of a layer's output channels: cout of them, in y and
 * dy tensors that hold ldc >= cout channels per example (the caller passes
 * y and dy at the slice's first channel; weight, bias and the gradients are
 * the slice's own, contiguous in OIHW). conv2d runs a wide layer as two such
 * halves on two threads, so neither repeats the other's weight work. */
int fl__dnnl_conv_create_slice(int cin, int h, int w, int cout, int ldc, int k, int stride,
                               int pad, int bias, fl__dnnl_conv_t **out);

/* y = conv(x, weight) + bias over n examples. With train nonzero, the
 * converted x and weight are kept for the next fl__dnnl_conv_backward of
 * the same x and weight, which must then come before x or the weights
 * change (the layer contract of common/nn/layer.h); any forward call ends
 * what an earlier one kept. Returns 0, or FL_EUNSUPPORTED / FL_ENOMEM when
 * oneDNN could not make or run the primitive (nothing useful is then in y:
 * the caller computes it another way). */
int fl__dnnl_conv_forward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                          const float *bias, float *y, size_t n, int train);

/* The gradients of n examples: gw += dL/dweight, gb += dL/dbias (gb may be
 * NULL without a bias), and when dx is not NULL, dx = dL/dx (overwritten).
 * Returns 0 or, as above, an error with gw, gb and dx untouched (gradients
 * are computed into scratch first, then added). */
int fl__dnnl_conv_backward(fl__dnnl_conv_t *c, const float *x, const float *weight,
                           const float *dy, float *gw, float *gb, float *dx, size_t n);

/* fl__dnnl_conv_backward in two steps: _run computes the gradients into c's
 * scratch and dx (overwritten; for a slice, dx is the slice's share of the
 * input gradient, which the caller sums over the slices); _add then adds the
 * scratch into gw and gb. _run returns as fl__dnnl_conv_backward does and
 * leaves gw and gb alone, so a caller with several slices adds only once all
 * of them succeeded. */
int fl__dnnl_conv_backward_run(fl__dnnl_conv_t *c, const float *x, const float *weight,
                               const float *dy, float *dx, size_t n);
void fl__dnnl_conv_backward_add(const fl__dnnl_conv_t *c, float *gw, float *gb);

/* Drops what the last training forward kept (a caller that computed this
 * layer's forward another way). Accepts NULL. */
void fl__dnnl_conv_forget(fl__dnnl_conv_t *c);

/* Which algorithm convolutions made from now on use: 0, the default
 * (Winograd F(4x4,3x3) for 3x3 stride-1 layers with at least 16 channels in
 * and out, direct otherwise); 1, direct always; 2, Winograd wherever the
 * shape allows it (tests). oneDNN may refuse Winograd for a shape: the
 * convolution is then direct. Not thread-safe: for tests and benches. */
void fl__dnnl_set_winograd(int mode);

/* The oneDNN implementation chosen for the forward pass at the last batch
 * size ("jit:avx512_core", "gemm:jit", ...), or "none". For benches and logs. */
const char *fl__dnnl_conv_impl(const fl__dnnl_conv_t *c);

/* Accepts NULL. */
void fl__dnnl_conv_free(fl__dnnl_conv_t *c);

/* oneDNN's own sgemm (its JIT kernels: AVX-512 where the CPU has it), with
 * fl_gemm's meaning and row-major arguments (common/nn/gemm.h), on an
 * OpenMP team of `threads` (the calling thread's team is set to it first;
 * fl__gemm_via always asks for 1, bench_gemm for 2 as well). Layers reach
 * it through fl__gemm_via, never directly. Returns 0, or FL_EUNSUPPORTED (not
 * built in, or oneDNN refused the call; C is then untouched). */
int fl__dnnl_sgemm(int threads, int transa, int transb, int m, int n, int k, float alpha,
                   const float *a, int lda, const float *b, int ldb, float beta, float *c,
                   int ldc);

#endif
