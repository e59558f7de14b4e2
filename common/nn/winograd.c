#include "common/nn/winograd.h"

#include <limits.h>
#include <string.h>

#include "common/base/error.h"
#include "common/nn/gemm.h"

int fl_winograd_setup(fl_winograd_t *g, int cin, int h, int w, int cout, int pad)
{
    if (!g || cin < 1 || cout < 1 || h < 1 || w < 1 || pad < 0 || pad > 2)
        return FL_EINVAL;
    long long ho = (long long)h + 2 * pad - 2, wo = (long long)w + 2 * pad - 2;
    if (ho < 1 || wo < 1 || ho + 4 > INT_MAX / 2 || wo + 4 > INT_MAX / 2)
        return FL_EINVAL;
    *g = (fl_winograd_t){.cin = cin, .cout = cout, .h = h, .w = w, .pad = pad,
                         .ho = (int)ho, .wo = (int)wo, .th = (int)((ho + 1) / 2),
                         .tw = (int)((wo + 1) / 2)};
    return 0;
}

size_t fl_winograd_tiles(const fl_winograd_t *g) { return (size_t)g->th * (size_t)g->tw; }

size_t fl_winograd_stride(size_t rows, size_t ld)
{
    /* One cache line more than the matrix: with rows * ld a multiple of
     * 1024 floats (4 KiB), the 16 matrices' rows would all map to the same
     * L1 set, and the transforms, which touch all 16 at once, thrash it
     * (conv2 of cnn has 64 x 144 matrices; bench_train's cnn rows measure
     * the step). */
    return rows * ld + 16;
}

/* The padded plane is (2*th + 2) x (2*tw + 2): every tile's 4x4 window lies
 * inside it, so the transforms never test a bound. Each plane row is
 * stored split, its even columns first (tw + 1 of them), then its odd
 * ones: tile j's window columns 2j..2j+3 are then e[j], o[j], e[j+1],
 * o[j+1], and every step of the transform is a unit-stride loop over
 * tiles, which the compiler vectorizes (the interleaved form did not;
 * bench_train's cnn rows measure the step). Four more rows hold the window rows
 * after the first half of the transform. */
static size_t plane_rows(const fl_winograd_t *g) { return 2 * (size_t)g->th + 2; }
static size_t plane_cols(const fl_winograd_t *g) { return 2 * (size_t)g->tw + 2; }

size_t fl_winograd_plane_size(const fl_winograd_t *g)
{
    return (plane_rows(g) + 4) * plane_cols(g);
}

void fl_winograd_weights(const float *w, int cout, int cin, int flip, float *u)
{
    /* The transformed problem's outputs and inputs: with flip they swap. */
    const int no = flip ? cin : cout, ni = flip ? cout : cin;
    const size_t xs = (size_t)no * ni; /* stride between the 16 matrices */
    for (int o = 0; o < cout; o++)
        for (int c = 0; c < cin; c++) {
            const float *k = w + ((size_t)o * cin + c) * 9;
            float g[3][3];
            for (int r = 0; r < 3; r++)
                for (int s = 0; s < 3; s++)
                    g[r][s] = flip ? k[(2 - r) * 3 + (2 - s)] : k[r * 3 + s];
            /* U = G g G^T with G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. */
            float t[4][3];
            for (int s = 0; s < 3; s++) {
                t[0][s] = g[0][s];
                t[1][s] = 0.5f * (g[0][s] + g[1][s] + g[2][s]);
                t[2][s] = 0.5f * (g[0][s] - g[1][s] + g[2][s]);
                t[3][s] = g[2][s];
            }
            size_t at = flip ? (size_t)c * ni + o : (size_t)o * ni + c;
            for (int a = 0; a < 4; a++) {
                float uu[4] = {t[a][0], 0.5f * (t[a][0] + t[a][1] + t[a][2]),
                               0.5f * (t[a][0] - t[a][1] + t[a][2]), t[a][2]};
                for (int b = 0; b < 4; b++)
                    u[(size_t)(4 * a + b) * xs + at] = uu[b];
            }
        }
}

/* even[k] = src[2k], odd[k] = src[2k+1] for k < n. Compilers do not
 * vectorize this stride-2 split on their own, and in cnn's training step it
 * runs for every plane row (a perf profile of bench_train's cnn shows it);
 * four pairs at a time go through the
 * vector extensions of GCC and Clang, which compile to SSE shuffles on x86
 * and NEON on ARM. */
static void deinterleave(const float *restrict src, size_t n, float *restrict even,
                         float *restrict odd)
{
    size_t k = 0;
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
    typedef float v4 __attribute__((vector_size(16)));
    for (; k + 4 <= n; k += 4) {
        v4 lo, hi;
        memcpy(&lo, src + 2 * k, sizeof lo);
        memcpy(&hi, src + 2 * k + 4, sizeof hi);
        v4 e = __builtin_shufflevector(lo, hi, 0, 2, 4, 6);
        v4 o = __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
        memcpy(even + k, &e, sizeof e);
        memcpy(odd + k, &o, sizeof o);
    }
#endif
#endif
    for (; k < n; k++) {
        even[k] = src[2 * k];
        odd[k] = src[2 * k + 1];
    }
}

/* Copies one input row into a split plane row (see plane_rows) at plane
 * column `pad`: plane column q = iw + pad goes to index q / 2 of the even
 * half when q is even, of the odd half when it is odd. */
static void split_row(float *dst, size_t half, const float *src, int w, int pad)
{
    /* Where src[2k] goes (the even half when pad is even), and src[2k+1]. */
    float *first = dst + (pad & 1 ? half : 0) + pad / 2;
    float *second = dst + (pad & 1 ? 0 : half) + (pad + 1) / 2;
    deinterleave(src, (size_t)w / 2, first, second);
    if (w & 1)
        first[(w - 1) / 2] = src[w - 1];
}

/* B^T down a window's four rows: t = B^T d, whole (split) rows at a time. */
static void rows_bt(size_t n, const float *restrict d0, const float *restrict d1,
                    const float *restrict d2, const float *restrict d3, float *restrict t0,
                    float *restrict t1, float *restrict t2, float *restrict t3)
{
    for (size_t j = 0; j < n; j++) {
        t0[j] = d0[j] - d2[j];
        t1[j] = d1[j] + d2[j];
        t2[j] = d2[j] - d1[j];
        t3[j] = d1[j] - d3[j];
    }
}

/* B along each tile of one row-transformed split row (e even, o odd
 * columns), into four rows of V. */
static void cols_b(size_t tw, const float *restrict e, const float *restrict o,
                   float *restrict v0, float *restrict v1, float *restrict v2, float *restrict v3)
{
    for (size_t j = 0; j < tw; j++) {
        v0[j] = e[j] - e[j + 1];
        v1[j] = o[j] + e[j + 1];
        v2[j] = e[j + 1] - o[j];
        v3[j] = o[j] - o[j + 1];
    }
}

void fl_winograd_input(const fl_winograd_t *g, const float *x, float *plane, float *v,
                       size_t ldv, size_t t0)
{
    const size_t wp = plane_cols(g), tw = (size_t)g->tw, half = tw + 1;
    const size_t xs = fl_winograd_stride((size_t)g->cin, ldv);
    float *t = plane + plane_rows(g) * wp;
    for (int ch = 0; ch < g->cin; ch++) {
        const float *src = x + (size_t)ch * g->h * g->w;
        for (int ih = 0; ih < g->h; ih++)
            split_row(plane + (size_t)(ih + g->pad) * wp, half, src + (size_t)ih * g->w, g->w,
                      g->pad);
        for (int ti = 0; ti < g->th; ti++) {
            /* V = B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. */
            const float *d0 = plane + (size_t)(2 * ti) * wp;
            rows_bt(wp, d0, d0 + wp, d0 + 2 * wp, d0 + 3 * wp, t, t + wp, t + 2 * wp, t + 3 * wp);
            float *out = v + (size_t)ch * ldv + t0 + (size_t)ti * tw;
            for (int a = 0; a < 4; a++) {
                const float *r = t + (size_t)a * wp;
                float *o0 = out + (size_t)(4 * a) * xs;
                cols_b(tw, r, r + half, o0, o0 + xs, o0 + 2 * xs, o0 + 3 * xs);
            }
        }
    }
}

/* Y = A^T M A with A^T = [1 1 1 0; 0 1 -1 -1] for n tiles whose 16 values
 * sit at m[xi * xs + j]: the four outputs of tile j go to y00[j], y01[j],
 * y10[j], y11[j], each plus the bias. */
static void out_tiles(size_t n, const float *restrict m, size_t xs, float bo, float *restrict y00,
                      float *restrict y01, float *restrict y10, float *restrict y11)
{
    for (size_t j = 0; j < n; j++) {
        float s0[4], s1[4];
        for (int b = 0; b < 4; b++) {
            float m0 = m[(size_t)b * xs + j], m1 = m[(size_t)(4 + b) * xs + j],
                  m2 = m[(size_t)(8 + b) * xs + j], m3 = m[(size_t)(12 + b) * xs + j];
            s0[b] = m0 + m1 + m2;
            s1[b] = m1 - m2 - m3;
        }
        y00[j] = s0[0] + s0[1] + s0[2] + bo;
        y01[j] = s0[1] - s0[2] - s0[3] + bo;
        y10[j] = s1[0] + s1[1] + s1[2] + bo;
        y11[j] = s1[1] - s1[2] - s1[3] + bo;
    }
}

/* Interleaves n even and n odd outputs into a row: r[2j] = e[j],
 * r[2j+1] = o[j]; `last` more even output when the row is odd. */
static void interleave(size_t n, const float *restrict e, const float *restrict o,
                       float *restrict r, int last)
{
    for (size_t j = 0; j < n; j++) {
        r[2 * j] = e[j];
        r[2 * j + 1] = o[j];
    }
    if (last)
        r[2 * n] = e[n];
}

void fl_winograd_output(const fl_winograd_t *g, const float *m, size_t ldm, size_t t0,
                        const float *bias, float *y)
{
    enum { BLOCK = 64 };
    const size_t tw = (size_t)g->tw, xs = fl_winograd_stride((size_t)g->cout, ldm);
    const size_t hw = (size_t)g->ho * g->wo;
    /* Tiles whose two columns both exist; with an odd width the last tile
     * has one, and with an odd height the last tile row has one row. Only
     * outputs that exist are stored, so y is exactly [cout, ho, wo]. */
    const size_t full = (size_t)g->wo / 2;
    float tmp[4][BLOCK];
    for (int o = 0; o < g->cout; o++) {
        float *yo = y + (size_t)o * hw;
        const float bo = bias ? bias[o] : 0.0f;
        for (int ti = 0; ti < g->th; ti++) {
            const float *mm = m + (size_t)o * ldm + t0 + (size_t)ti * tw;
            float *r0 = yo + (size_t)(2 * ti) * g->wo;
            int two = 2 * ti + 1 < g->ho;
            for (size_t j0 = 0; j0 < tw; j0 += BLOCK) {
                size_t nb = tw - j0 < BLOCK ? tw - j0 : BLOCK;
                out_tiles(nb, mm + j0, xs, bo, tmp[0], tmp[1], tmp[2], tmp[3]);
                /* Pairs whose both columns exist, then the odd edge's one. */
                size_t np = j0 + nb <= full ? nb : full - j0;
                int last = np < nb;
                interleave(np, tmp[0], tmp[1], r0 + 2 * j0, last);
                if (two)
                    interleave(np, tmp[2], tmp[3], r0 + g->wo + 2 * j0, last);
            }
        }
    }
}

void fl_winograd_multiply(const fl_winograd_t *g, const float *u, const float *v, size_t ldv,
                          float *m, size_t ldm, size_t tiles)
{
    const size_t vs = fl_winograd_stride((size_t)g->cin, ldv);
    const size_t ms = fl_winograd_stride((size_t)g->cout, ldm);
    for (int xi = 0; xi < 16; xi++)
        fl_gemm(0, 0, g->cout, (int)tiles, g->cin, 1.0f, u + (size_t)xi * g->cout * g->cin, g->cin,
                v + (size_t)xi * vs, (int)ldv, 0.0f, m + (size_t)xi * ms, (int)ldm);
}

/* One row pair of Z = A dY A^T: from ra = (row a of A dY)'s even and rb
 * its odd outputs, z0..z3 = ra, ra + rb, ra - rb, -rb (A^T along the row). */
static void z_row(size_t n, const float *restrict ra, const float *restrict rb, float *restrict z0,
                  float *restrict z1, float *restrict z2, float *restrict z3)
{
    for (size_t j = 0; j < n; j++) {
        z0[j] = ra[j];
        z1[j] = ra[j] + rb[j];
        z2[j] = ra[j] - rb[j];
        z3[j] = -rb[j];
    }
}

/* Z = A dY A^T for n <= 64 tiles of a row pair (p, q: the even and odd
 * outputs of the upper row; r, s: the lower row's), A = [1 0; 1 1; 1 -1;
 * 0 -1], into z[xi * xs + j]. Every loop is unit-stride with its stores
 * through restrict pointers, so each vectorizes (one pointer at 16 unknown
 * strides did not, nor did 16 small memcpy calls per tile row pay). */
static void grad_tiles(size_t n, const float *restrict p, const float *restrict q,
                       const float *restrict r, const float *restrict s, float *z, size_t xs)
{
    float ra[4][64], rb[4][64];
    for (size_t j = 0; j < n; j++) {
        ra[0][j] = p[j];
        ra[1][j] = p[j] + r[j];
        ra[2][j] = p[j] - r[j];
        ra[3][j] = -r[j];
        rb[0][j] = q[j];
        rb[1][j] = q[j] + s[j];
        rb[2][j] = q[j] - s[j];
        rb[3][j] = -s[j];
    }
    for (int a = 0; a < 4; a++) {
        float *za = z + (size_t)(4 * a) * xs;
        z_row(n, ra[a], rb[a], za, za + xs, za + 2 * xs, za + 3 * xs);
    }
}

void fl_winograd_grad_output(const fl_winograd_t *g, const float *dy, float *z, size_t ldz,
                             size_t t0)
{
    enum { BLOCK = 64 };
    const size_t tw = (size_t)g->tw, xs = fl_winograd_stride((size_t)g->cout, ldz);
    const size_t hw = (size_t)g->ho * g->wo, full = (size_t)g->wo / 2;
    float tmp[4][BLOCK];
    for (int o = 0; o < g->cout; o++) {
        const float *dyo = dy + (size_t)o * hw;
        for (int ti = 0; ti < g->th; ti++) {
            const float *r0 = dyo + (size_t)(2 * ti) * g->wo;
            const float *r1 = 2 * ti + 1 < g->ho ? r0 + g->wo : NULL;
            float *zz = z + (size_t)o * ldz + t0 + (size_t)ti * tw;
            for (size_t j0 = 0; j0 < tw; j0 += BLOCK) {
                size_t nb = tw - j0 < BLOCK ? tw - j0 : BLOCK;
                /* Split the rows into even and odd outputs; outputs past
                 * the edge of an odd-sized map are 0 (they do not exist). */
                size_t np = j0 + nb <= full ? nb : full - j0; /* whole pairs */
                deinterleave(r0 + 2 * j0, np, tmp[0], tmp[1]);
                if (r1)
                    deinterleave(r1 + 2 * j0, np, tmp[2], tmp[3]);
                else
                    for (size_t j = 0; j < np; j++)
                        tmp[2][j] = tmp[3][j] = 0.0f;
                if (np < nb) { /* the last tile of an odd width: one column */
                    tmp[0][np] = r0[2 * (j0 + np)];
                    tmp[1][np] = 0.0f;
                    tmp[2][np] = r1 ? r1[2 * (j0 + np)] : 0.0f;
                    tmp[3][np] = 0.0f;
                }
                grad_tiles(nb, tmp[0], tmp[1], tmp[2], tmp[3], zz + j0, xs);
            }
        }
    }
}

void fl_winograd_weight_grad(const fl_winograd_t *g, const float *z, size_t ldz, const float *v,
                             size_t ldv, size_t tiles, float *du)
{
    const size_t zs = fl_winograd_stride((size_t)g->cout, ldz);
    const size_t vs = fl_winograd_stride((size_t)g->cin, ldv);
    for (int xi = 0; xi < 16; xi++)
        fl_gemm(0, 1, g->cout, g->cin, (int)tiles, 1.0f, z + (size_t)xi * zs, (int)ldz,
                v + (size_t)xi * vs, (int)ldv, 1.0f, du + (size_t)xi * g->cout * g->cin,
                g->cin);
}

void fl_winograd_weights_grad(const float *du, int cout, int cin, float *dw)
{
    const size_t xs = (size_t)cout * cin;
    for (int o = 0; o < cout; o++)
        for (int c = 0; c < cin; c++) {
            const size_t at = (size_t)o * cin + c;
            float d[4][4];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    d[a][b] = du[(size_t)(4 * a + b) * xs + at];
            /* dg = G^T dU G, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1]. */
            float t[3][4];
            for (int b = 0; b < 4; b++) {
                t[0][b] = d[0][b] + 0.5f * (d[1][b] + d[2][b]);
                t[1][b] = 0.5f * (d[1][b] - d[2][b]);
                t[2][b] = 0.5f * (d[1][b] + d[2][b]) + d[3][b];
            }
            float *k = dw + at * 9;
            for (int r = 0; r < 3; r++) {
                k[r * 3 + 0] += t[r][0] + 0.5f * (t[r][1] + t[r][2]);
                k[r * 3 + 1] += 0.5f * (t[r][1] - t[r][2]);
                k[r * 3 + 2] += 0.5f * (t[r][1] + t[r][2]) + t[r][3];
            }
        }
}
