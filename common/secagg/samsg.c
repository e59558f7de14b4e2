/* samsg: see samsg.h. */
#include "common/secagg/samsg.h"

#include <string.h>

#include <mbedtls/sha256.h>

#include "common/base/bytes.h"
#include "common/base/error.h"

int fl_samsg_setup_check(const fl_samsg_setup_t *s)
{
    if (!s || s->n < 2 || s->n > FL_SAMSG_MAX_PARTIES || s->dim == 0 ||
        s->dim > FL_SAMSG_MAX_DIM || s->k == 0 || s->k > s->n - 1 || s->k > FL_SAMSG_MAX_DEGREE ||
        (s->k < s->n - 1 && (s->k & 1)) || s->t <= s->k / 2 || s->t > s->k)
        return FL_EINVAL;
    return 0;
}

static void put32(mbedtls_sha256_context *h, uint32_t v)
{
    uint8_t b[4];
    fl_put_u32le(b, v);
    mbedtls_sha256_update_ret(h, b, 4);
}

static void put64(mbedtls_sha256_context *h, uint64_t v)
{
    uint8_t b[8];
    fl_put_u64le(b, v);
    mbedtls_sha256_update_ret(h, b, 8);
}

static void start(mbedtls_sha256_context *h, const char *label)
{
    mbedtls_sha256_init(h);
    mbedtls_sha256_starts_ret(h, 0);
    mbedtls_sha256_update_ret(h, (const uint8_t *)label, strlen(label) + 1);
}

static void end(mbedtls_sha256_context *h, uint8_t out[32])
{
    mbedtls_sha256_finish_ret(h, out);
    mbedtls_sha256_free(h);
}

void fl_samsg_context(const fl_samsg_setup_t *s, uint8_t out[32])
{
    mbedtls_sha256_context h;
    start(&h, "fedopt-secagg-1 context");
    put64(&h, s->run_id);
    put32(&h, s->round);
    put32(&h, s->n);
    put32(&h, s->k);
    put32(&h, s->t);
    put64(&h, s->graph_seed);
    put32(&h, s->dim);
    end(&h, out);
}

void fl_samsg_advert_digest(const uint8_t ctx[32], const fl_samsg_advert_t *a, uint8_t out[32])
{
    mbedtls_sha256_context h;
    size_t nl = strnlen(a->name, FL_SAMSG_NAME_MAX);
    start(&h, "fedopt-secagg-1 advert");
    mbedtls_sha256_update_ret(&h, ctx, 32);
    put32(&h, a->id);
    put32(&h, (uint32_t)nl);
    mbedtls_sha256_update_ret(&h, (const uint8_t *)a->name, nl);
    mbedtls_sha256_update_ret(&h, a->c_pk, FL_SACRYPTO_KEY);
    mbedtls_sha256_update_ret(&h, a->s_pk, FL_SACRYPTO_KEY);
    end(&h, out);
}

void fl_samsg_commit_share(const uint8_t ctx[32], uint32_t kind, uint32_t owner, uint32_t holder,
                           const fl_shamir_share_t *sh, uint8_t out[32])
{
    mbedtls_sha256_context h;
    uint8_t enc[FL_SHAMIR_SHARE_MAX];
    size_t len = fl_shamir_share_encode(sh, enc);
    start(&h, "fedopt-secagg-1 share");
    mbedtls_sha256_update_ret(&h, ctx, 32);
    put32(&h, kind);
    put32(&h, owner);
    put32(&h, holder);
    mbedtls_sha256_update_ret(&h, enc, len);
    end(&h, out);
}

void fl_samsg_commit_seed(const uint8_t ctx[32], uint32_t owner, const uint8_t b[FL_SACRYPTO_KEY],
                          uint8_t out[32])
{
    mbedtls_sha256_context h;
    start(&h, "fedopt-secagg-1 seed");
    mbedtls_sha256_update_ret(&h, ctx, 32);
    put32(&h, owner);
    mbedtls_sha256_update_ret(&h, b, FL_SACRYPTO_KEY);
    end(&h, out);
}

void fl_samsg_nonce(uint32_t from, uint32_t to, uint8_t out[FL_SACRYPTO_NONCE])
{
    memset(out, 0, FL_SACRYPTO_NONCE);
    fl_put_u32le(out, from);
    fl_put_u32le(out + 4, to);
}

void fl_samsg_pair_info(uint32_t u, uint32_t v, uint8_t out[8])
{
    fl_put_u32le(out, u < v ? u : v);
    fl_put_u32le(out + 4, u < v ? v : u);
}
