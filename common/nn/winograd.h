/* winograd: 3x3, stride-1 convolution by Winograd's minimal filtering
 * algorithm F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016).
 *
 * Each 2x2 block of outputs (a tile) comes from a 4x4 window of the input.
 * The window and the 3x3 kernel are each transformed to 4x4, multiplied
 * elementwise and transformed back: 16 multiplies per tile and channel pair
 * instead of the 36 of the direct sum. Summed over input channels, the 16
 * elementwise products become 16 independent GEMMs,
 *   M[xi][cout, tiles] = U[xi][cout, cin] * V[xi][cin, tiles],
 * which is where the time goes, so the conv layer runs 2.25 times fewer
 * multiply-adds than im2col + GEMM. The results differ from the direct sum
 * only by float rounding (the transforms are exact in real arithmetic).
 *
 * The same routine computes a stride-1 3x3 layer's input gradient: that is
 * the convolution of the output gradient, padded by 2 - pad, with the kernel
 * rotated by 180 degrees and its channel axes swapped (fl_winograd_weights
 * with `flip`). The weight gradient goes through the same tiles (see
 * fl_winograd_weight_grad). */
#ifndef FL_WINOGRAD_H
#define FL_WINOGRAD_H

#include <stddef.h>

/* The geometry of one transform: input [cin, h, w] padded by `pad` on every
 * side, output [cout, ho, wo] with ho = h + 2*pad - 2, tiles th x tw of 2x2
 * outputs (the last row/column of tiles half used when ho/wo is odd). */
typedef struct {
    int cin, cout, h, w, pad, ho, wo, th, tw;
} fl_winograd_t;

/* Fills *g for input [cin, h, w], `cout` outputs and padding `pad`.
 * Returns 0, or FL_EINVAL when the output would be empty or a size does not
 * fit an int. */
int fl_winograd_setup(fl_winograd_t *g, int cin, int h, int w, int cout, int pad);

/* Returns the tiles of one example (th * tw). */
size_t fl_winograd_tiles(const fl_winograd_t *g);

/* The distance in floats between consecutive matrices of v[16][rows][ld]
 * or m[16][rows][ld] (slightly more than rows * ld; see the .c). A buffer
 * for them holds 16 * fl_winograd_stride(rows, ld) floats. */
size_t fl_winograd_stride(size_t rows, size_t ld);

/* Floats of the zero-bordered input plane fl_winograd_input needs (the
 * caller allocates it zeroed with calloc and keeps it for the layer's life:
 * only its interior is ever written). */
size_t fl_winograd_plane_size(const fl_winograd_t *g);

/* Transforms the kernel w[cout, cin, 3, 3] (PyTorch's layout) into
 * u[16][cout][cin]. With `flip`, w is read as the kernel of the transposed
 * problem: u[16][cin][cout] holds the rotated kernel whose convolution with
 * an output gradient gives the input gradient. u is the caller's. */
void fl_winograd_weights(const float *w, int cout, int cin, int flip, float *u);

/* Transforms one example x[cin, h, w] into columns t0 .. t0+tiles-1 of
 * v[16][cin][ldv]. plane is the zero-bordered scratch above. */
void fl_winograd_input(const fl_winograd_t *g, const float *x, float *plane, float *v,
                       size_t ldv, size_t t0);

/* Transforms columns t0 .. t0+tiles-1 of m[16][cout][ldm] back into one
 * example's output y[cout, ho, wo], adding bias[o] when bias is not NULL.
 * y is overwritten. */
void fl_winograd_output(const fl_winograd_t *g, const float *m, size_t ldm, size_t t0,
                        const float *bias, float *y);

/* The 16 GEMMs M[xi] = U[xi] * V[xi] over `tiles` columns (ldv, ldm the row
 * strides of v and m). */
void fl_winograd_multiply(const fl_winograd_t *g, const float *u, const float *v, size_t ldv,
                          float *m, size_t ldm, size_t tiles);

/* The weight gradient, in three steps (by linearity of Y = A^T (U . V) A):
 * fl_winograd_grad_output transforms one example's output gradient
 * dy[cout, ho, wo] into columns t0 .. t0+tiles-1 of z[16][cout][ldz]
 * (Z = A dY A^T per tile); fl_winograd_weight_grad adds the 16 products
 * du[xi] += Z[xi] * V[xi]^T over `tiles` columns (V from
 * fl_winograd_input of the same examples); fl_winograd_weights_grad adds
 * G^T dU G into dw[cout, cin, 3, 3]. du is [16][cout][cin], zeroed by the
 * caller before the first product. All buffers are the caller's. */
void fl_winograd_grad_output(const fl_winograd_t *g, const float *dy, float *z, size_t ldz,
                             size_t t0);
void fl_winograd_weight_grad(const fl_winograd_t *g, const float *z, size_t ldz, const float *v,
                             size_t ldv, size_t tiles, float *du);
void fl_winograd_weights_grad(const float *du, int cout, int cin, float *dw);

#endif
