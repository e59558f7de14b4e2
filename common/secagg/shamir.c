/* shamir: see shamir.h. */
#include "common/secagg/shamir.h"

#include <string.h>

#include "common/base/bytes.h"
#include "common/base/error.h"

#define P ((uint64_t)FL_SHAMIR_P)

uint32_t fl_shamir_add(uint32_t a, uint32_t b)
{
    uint64_t s = (uint64_t)a + b;
    return (uint32_t)(s >= P ? s - P : s);
}

uint32_t fl_shamir_sub(uint32_t a, uint32_t b)
{
    return a >= b ? a - b : (uint32_t)(P - b + a);
}

uint32_t fl_shamir_mul(uint32_t a, uint32_t b)
{
    return (uint32_t)(((uint64_t)a * b) % P);
}

/* a^(p-2) = a^-1 by Fermat's little theorem (p prime, a != 0). */
uint32_t fl_shamir_inv(uint32_t a)
{
    uint32_t r = 1, base = a;
    uint32_t e = FL_SHAMIR_P - 2;
    if (a == 0)
        return 0;
    while (e) {
        if (e & 1)
            r = fl_shamir_mul(r, base);
        base = fl_shamir_mul(base, base);
        e >>= 1;
    }
    return r;
}

uint32_t fl_shamir_poly_eval(const uint32_t *c, unsigned t, uint32_t x)
{
    uint32_t acc = 0;
    for (unsigned i = t; i-- > 0;)
        acc = fl_shamir_add(fl_shamir_mul(acc, x), c[i]);
    return acc;
}

int fl_shamir_interpolate0(const uint32_t *x, const uint32_t *y, unsigned m, uint32_t *out)
{
    uint32_t acc = 0;
    if (!x || !y || !out || m == 0)
        return FL_EINVAL;
    for (unsigned i = 0; i < m; i++) {
        if (x[i] == 0 || x[i] >= FL_SHAMIR_P || y[i] >= FL_SHAMIR_P)
            return FL_EINVAL;
        for (unsigned j = 0; j < i; j++)
            if (x[j] == x[i])
                return FL_EINVAL;
    }
    for (unsigned i = 0; i < m; i++) {
        /* lambda_i = prod_{j != i} x_j / (x_j - x_i) */
        uint32_t num = 1, den = 1;
        for (unsigned j = 0; j < m; j++) {
            if (j == i)
                continue;
            num = fl_shamir_mul(num, x[j]);
            den = fl_shamir_mul(den, fl_shamir_sub(x[j], x[i]));
        }
        acc = fl_shamir_add(acc, fl_shamir_mul(y[i], fl_shamir_mul(num, fl_shamir_inv(den))));
    }
    *out = acc;
    return 0;
}

static unsigned elems_of(size_t len)
{
    return (unsigned)((len + 2) / 3);
}

static uint32_t chunk_of(const uint8_t *secret, size_t len, unsigned e)
{
    uint32_t v = 0;
    for (unsigned b = 0; b < 3; b++) {
        size_t at = (size_t)e * 3 + b;
        if (at < len)
            v |= (uint32_t)secret[at] << (8 * b);
    }
    return v;
}

/* Uniform in [0, p): the 5 values >= p of a 32-bit draw are redrawn. */
static int draw(fl_shamir_rng_fn rng, void *ctx, uint32_t *out)
{
    for (int tries = 0; tries < 64; tries++) {
        uint8_t b[4];
        if (rng(ctx, b, sizeof b) != 0)
            return FL_EIO;
        uint32_t v = fl_get_u32le(b);
        if (v < FL_SHAMIR_P) {
            *out = v;
            return 0;
        }
    }
    return FL_EIO; /* a source that never leaves the 5 top values is broken */
}

int fl_shamir_split(const uint8_t *secret, size_t len, unsigned t, unsigned n, const uint32_t *xs,
                    fl_shamir_rng_fn rng, void *rng_ctx, fl_shamir_share_t *out)
{
    uint32_t coef[256];
    int rc = 0;
    if (!secret || !xs || !rng || !out || len == 0 || len > FL_SHAMIR_MAX_SECRET || t == 0 ||
        t > n || t > sizeof coef / sizeof coef[0])
        return FL_EINVAL;
    for (unsigned i = 0; i < n; i++) {
        if (xs[i] == 0 || xs[i] >= FL_SHAMIR_P)
            return FL_EINVAL;
        for (unsigned j = 0; j < i; j++)
            if (xs[j] == xs[i])
                return FL_EINVAL;
    }
    unsigned ne = elems_of(len);
    for (unsigned i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].x = xs[i];
        out[i].elems = ne;
    }
    for (unsigned e = 0; e < ne; e++) {
        coef[0] = chunk_of(secret, len, e);
        for (unsigned k = 1; k < t; k++)
            if ((rc = draw(rng, rng_ctx, &coef[k])) != 0)
                goto done;
        for (unsigned i = 0; i < n; i++)
            out[i].y[e] = fl_shamir_poly_eval(coef, t, xs[i]);
    }
done:
    memset(coef, 0, sizeof coef);
    return rc;
}

int fl_shamir_combine(const fl_shamir_share_t *shares, unsigned m, unsigned t, uint8_t *secret,
                      size_t len)
{
    uint32_t xs[256], ys[256];
    int rc = 0;
    if (!shares || !secret || len == 0 || len > FL_SHAMIR_MAX_SECRET || t == 0 || m < t ||
        m > sizeof xs / sizeof xs[0])
        return FL_EINVAL;
    unsigned ne = elems_of(len);
    for (unsigned i = 0; i < m; i++) {
        if (shares[i].elems != ne)
            return FL_EINVAL;
        xs[i] = shares[i].x;
    }
    for (unsigned e = 0; e < ne; e++) {
        uint32_t v;
        for (unsigned i = 0; i < m; i++)
            ys[i] = shares[i].y[e];
        if ((rc = fl_shamir_interpolate0(xs, ys, m, &v)) != 0)
            goto done;
        if (v >> 24) {
            rc = FL_EAUTH;
            goto done;
        }
        for (unsigned b = 0; b < 3; b++) {
            size_t at = (size_t)e * 3 + b;
            if (at < len)
                secret[at] = (uint8_t)(v >> (8 * b));
            else if ((v >> (8 * b)) & 0xff) {
                rc = FL_EAUTH; /* padding bytes of the last chunk are zero */
                goto done;
            }
        }
    }
done:
    if (rc != 0)
        memset(secret, 0, len);
    memset(ys, 0, sizeof ys);
    return rc;
}

size_t fl_shamir_share_encode(const fl_shamir_share_t *s, uint8_t *out)
{
    fl_put_u32le(out, s->x);
    for (uint32_t e = 0; e < s->elems; e++)
        fl_put_u32le(out + 4 + 4 * e, s->y[e]);
    return 4 + 4 * (size_t)s->elems;
}

int fl_shamir_share_decode(const uint8_t *in, size_t len, fl_shamir_share_t *out)
{
    if (!in || !out || len < 8 || len > FL_SHAMIR_SHARE_MAX || (len % 4) != 0)
        return FL_EFORMAT;
    memset(out, 0, sizeof *out);
    out->x = fl_get_u32le(in);
    out->elems = (uint32_t)(len / 4 - 1);
    if (out->x == 0 || out->x >= FL_SHAMIR_P)
        return FL_ERANGE;
    for (uint32_t e = 0; e < out->elems; e++) {
        out->y[e] = fl_get_u32le(in + 4 + 4 * e);
        if (out->y[e] >= FL_SHAMIR_P)
            return FL_ERANGE;
    }
    return 0;
}
