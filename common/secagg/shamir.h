/* shamir: Shamir secret sharing of short secrets over the prime field
 * GF(p), p = 2^32 - 5 (the largest prime below 2^32).
 *
 * A secret of up to FL_SHAMIR_MAX_SECRET bytes is cut into 3-byte chunks;
 * each chunk (< 2^24 < p) is the constant term of its own random polynomial
 * of degree t-1, and a share is the point x with the value of every
 * polynomial at x. Any t shares give the secret back by Lagrange
 * interpolation at 0; t-1 shares say nothing about it (every secret is
 * equally likely). Chunks of 24 bits make a wrong reconstruction visible:
 * from too few shares or a corrupted one, each interpolated chunk is a
 * uniform field element, and all of them falling below 2^24 has probability
 * about 2^-(8 * chunks) (2^-88 for a 32-byte secret).
 *
 * The field is 32-bit so that every product fits a uint64_t on any
 * architecture (the client is also built for 32-bit ARM).
 * Pure functions; thread-safe. */
#ifndef FL_SHAMIR_H
#define FL_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

#define FL_SHAMIR_P 4294967291u
#define FL_SHAMIR_MAX_SECRET 32
#define FL_SHAMIR_MAX_ELEMS ((FL_SHAMIR_MAX_SECRET + 2) / 3)

/* One share: the point x (1 <= x < p) and the values at x of the polynomials
 * of the secret's chunks (elems of them). */
typedef struct {
    uint32_t x;
    uint32_t elems;
    uint32_t y[FL_SHAMIR_MAX_ELEMS];
} fl_shamir_share_t;

/* The random source: mbedTLS's f_rng signature (mbedtls_ctr_drbg_random). */
typedef int (*fl_shamir_rng_fn)(void *ctx, unsigned char *out, size_t len);

/* Field arithmetic (operands < p; results < p). fl_shamir_inv(0) is 0. */
uint32_t fl_shamir_add(uint32_t a, uint32_t b);
uint32_t fl_shamir_sub(uint32_t a, uint32_t b);
uint32_t fl_shamir_mul(uint32_t a, uint32_t b);
uint32_t fl_shamir_inv(uint32_t a);

/* The polynomial c[0] + c[1] x + ... + c[t-1] x^(t-1) at x (Horner). */
uint32_t fl_shamir_poly_eval(const uint32_t *c, unsigned t, uint32_t x);

/* Lagrange interpolation at 0 through the m points (x[i], y[i]): the x must
 * be distinct and nonzero (FL_EINVAL otherwise). Writes the value to *out. */
int fl_shamir_interpolate0(const uint32_t *x, const uint32_t *y, unsigned m, uint32_t *out);

/* Splits secret[0..len) (1 <= len <= FL_SHAMIR_MAX_SECRET) into n shares at
 * the points xs[0..n) (distinct, 1 <= x < p) with threshold t (1 <= t <= n):
 * out[i] is the share at xs[i]. The polynomials' coefficients come from
 * rng (uniform in the field by rejection). FL_EINVAL for bad arguments, the
 * rng's failure as FL_EIO. The caller owns out (n entries). */
int fl_shamir_split(const uint8_t *secret, size_t len, unsigned t, unsigned n, const uint32_t *xs,
                    fl_shamir_rng_fn rng, void *rng_ctx, fl_shamir_share_t *out);

/* Rebuilds a len-byte secret from m shares (all with the chunk count of a
 * len-byte secret, distinct x). m < t is refused (FL_EINVAL) rather than
 * answered with a value that means nothing; with m >= t all m shares are
 * used. FL_EAUTH when the result is not a well-formed secret (a chunk at or
 * above 2^24): the shares were too few for the real threshold or one was
 * wrong. */
int fl_shamir_combine(const fl_shamir_share_t *shares, unsigned m, unsigned t, uint8_t *secret,
                      size_t len);

/* Wire form of a share: x, then the elems values, each as 4 bytes
 * little-endian (4 + 4 * elems bytes). fl_shamir_share_encode returns the
 * byte count written (out must hold FL_SHAMIR_SHARE_MAX bytes);
 * fl_shamir_share_decode checks the length (FL_EFORMAT) and that x and
 * every value are field elements (FL_ERANGE). */
#define FL_SHAMIR_SHARE_MAX (4 + 4 * FL_SHAMIR_MAX_ELEMS)
size_t fl_shamir_share_encode(const fl_shamir_share_t *s, uint8_t *out);
int fl_shamir_share_decode(const uint8_t *in, size_t len, fl_shamir_share_t *out);

#endif
