#include "common/base/rng.h"

#include <math.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void fl_rng_seed(fl_rng_t *r, uint64_t seed) { fl_rng_stream(r, seed, NULL, 0); }

void fl_rng_stream(fl_rng_t *r, uint64_t seed, const uint64_t *ids, size_t n)
{
    /* Fold the tuple into one 64-bit key by running splitmix64 over it, with
     * the position mixed in so that (1, 2) and (2, 1) differ, then expand the
     * key into the 256-bit state the way xoshiro's authors recommend. */
    uint64_t h = seed ^ 0x6a09e667f3bcc909ULL;
    uint64_t key = splitmix64(&h);
    for (size_t i = 0; i < n; i++) {
        h ^= ids[i] + 0x9e3779b97f4a7c15ULL * (i + 1);
        key ^= splitmix64(&h);
        key = rotl(key, 23) * 0xff51afd7ed558ccdULL;
    }
    uint64_t x = key;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1; /* the all-zero state is the one xoshiro cannot leave */
}

/* One step of xoshiro256**: returns the output and advances s. */
static inline uint64_t xoshiro_next(uint64_t s[4])
{
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t fl_rng_u64(fl_rng_t *r) { return xoshiro_next(r->s); }

uint32_t fl_rng_u32(fl_rng_t *r) { return (uint32_t)(fl_rng_u64(r) >> 32); }

void fl_rng_fill_u32(fl_rng_t *r, uint32_t *out, size_t n)
{
    /* fl_rng_u64's step on a local copy of the state, which the compiler
     * keeps in registers: the generator is one serial chain, so the gain is
     * not reloading and storing the state (and not calling out of line)
     * for every value. */
    uint64_t s[4] = {r->s[0], r->s[1], r->s[2], r->s[3]};
    for (size_t i = 0; i < n; i++)
        out[i] = (uint32_t)(xoshiro_next(s) >> 32);
    memcpy(r->s, s, sizeof s);
}

uint64_t fl_rng_below(fl_rng_t *r, uint64_t bound)
{
    if (bound == 0)
        return 0;
    /* Rejection on the top of the range keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);
    uint64_t x;
    do {
        x = fl_rng_u64(r);
    } while (x >= limit);
    return x % bound;
}

double fl_rng_uniform(fl_rng_t *r) { return (double)(fl_rng_u64(r) >> 11) * 0x1.0p-53; }

double fl_rng_normal(fl_rng_t *r)
{
    double u1;
    do {
        u1 = fl_rng_uniform(r);
    } while (u1 <= 0.0);
    double u2 = fl_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double fl_rng_gamma(fl_rng_t *r, double shape)
{
    if (!(shape > 0.0))
        return 0.0;
    if (shape < 1.0) {
        /* Boost: Gamma(a) = Gamma(a + 1) * U^(1/a). */
        double u;
        do {
            u = fl_rng_uniform(r);
        } while (u <= 0.0);
        return fl_rng_gamma(r, shape + 1.0) * pow(u, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0;
    const double c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = fl_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = fl_rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x)
            return d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v;
    }
}

void fl_rng_shuffle_u32(fl_rng_t *r, uint32_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fl_rng_below(r, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}
