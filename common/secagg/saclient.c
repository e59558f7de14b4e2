/* saclient: see saclient.h. */
#include "common/secagg/saclient.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/secagg/sagraph.h"

enum { PH_ADVERTISE, PH_SHARE, PH_MASK, PH_UNMASK, PH_DONE, PH_FAILED };

/* What the party knows of one neighbour (in id order). */
typedef struct {
    uint32_t id;
    int in_u1;         /* advertised (its adverts checked) */
    int in_u2;         /* sent us a ciphertext */
    int have_share;    /* ... that decrypted */
    uint8_t c_pk[FL_SACRYPTO_KEY];
    uint8_t s_pk[FL_SACRYPTO_KEY];
    uint8_t tkey[FL_SACRYPTO_KEY]; /* share-transport key (derived once) */
    fl_shamir_share_t sh_s, sh_b;  /* its shares we hold */
} peer_t;

struct fl_saclient {
    fl_samsg_setup_t setup;
    uint8_t ctx[32];
    uint32_t id;
    char name[FL_SAMSG_NAME_MAX + 1];
    mbedtls_pk_context *sign_key;
    fl_sacrypto_rng_t *rng;
    fl_sacrypto_kp_t c_kp, s_kp;
    uint8_t b[FL_SACRYPTO_KEY];
    uint32_t deg;
    peer_t *peers;
    int phase;
    uint32_t bad_shares;
};

static peer_t *peer_of(fl_saclient_t *c, uint32_t id)
{
    uint32_t lo = 0, hi = c->deg;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->peers[mid].id == id)
            return &c->peers[mid];
        if (c->peers[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int fl_saclient_create(const fl_samsg_setup_t *setup, uint32_t id, const char *name,
                       mbedtls_pk_context *sign_key, fl_sacrypto_rng_t *rng, fl_saclient_t **out)
{
    fl_saclient_t *c = NULL;
    fl_sagraph_t g = {0};
    uint32_t *nb = NULL;
    int rc;
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!setup || !name || !sign_key || !rng || fl_samsg_setup_check(setup) != 0 ||
        id >= setup->n || strlen(name) > FL_SAMSG_NAME_MAX)
        return FL_EINVAL;
    c = calloc(1, sizeof *c);
    if (!c)
        return FL_ENOMEM;
    c->setup = *setup;
    fl_samsg_context(setup, c->ctx);
    c->id = id;
    snprintf(c->name, sizeof c->name, "%s", name);
    c->sign_key = sign_key;
    c->rng = rng;
    if ((rc = fl_sagraph_init(&g, setup->n, setup->k, setup->graph_seed)) != 0)
        goto fail;
    nb = malloc((size_t)g.k * sizeof *nb);
    c->peers = calloc(g.k, sizeof *c->peers);
    if (!nb || !c->peers) {
        rc = FL_ENOMEM;
        goto fail;
    }
    c->deg = fl_sagraph_neighbours(&g, id, nb);
    for (uint32_t i = 0; i < c->deg; i++)
        c->peers[i].id = nb[i];
    if ((rc = fl_sacrypto_kp_gen(&c->c_kp, rng)) != 0 ||
        (rc = fl_sacrypto_kp_gen(&c->s_kp, rng)) != 0)
        goto fail;
    if (fl_sacrypto_rng(rng, c->b, sizeof c->b) != 0) {
        rc = FL_EIO;
        goto fail;
    }
    c->phase = PH_ADVERTISE;
    free(nb);
    fl_sagraph_free(&g);
    *out = c;
    return 0;
fail:
    free(nb);
    fl_sagraph_free(&g);
    fl_saclient_free(c);
    return rc;
}

void fl_saclient_free(fl_saclient_t *c)
{
    if (!c)
        return;
    if (c->peers) {
        mbedtls_platform_zeroize(c->peers, (size_t)c->deg * sizeof *c->peers);
        free(c->peers);
    }
    mbedtls_platform_zeroize(c, sizeof *c);
    free(c);
}

uint32_t fl_saclient_degree(const fl_saclient_t *c)
{
    return c ? c->deg : 0;
}

uint32_t fl_saclient_bad_shares(const fl_saclient_t *c)
{
    return c ? c->bad_shares : 0;
}

int fl_saclient_advertise(fl_saclient_t *c, fl_samsg_advert_t *out)
{
    uint8_t dg[32];
    int rc;
    if (!c || !out)
        return FL_EINVAL;
    if (c->phase != PH_ADVERTISE)
        return FL_ESTATE;
    memset(out, 0, sizeof *out);
    out->id = c->id;
    memcpy(out->name, c->name, sizeof out->name);
    memcpy(out->c_pk, c->c_kp.pk, FL_SACRYPTO_KEY);
    memcpy(out->s_pk, c->s_kp.pk, FL_SACRYPTO_KEY);
    fl_samsg_advert_digest(c->ctx, out, dg);
    if ((rc = fl_sacrypto_sign(c->sign_key, dg, out->sig, &out->sig_len, c->rng)) != 0) {
        c->phase = PH_FAILED;
        return rc;
    }
    c->phase = PH_SHARE;
    return 0;
}

int fl_saclient_share_keys(fl_saclient_t *c, const fl_samsg_advert_t *adv,
                           mbedtls_pk_context *const *pks, size_t n, fl_samsg_share_t *out,
                           size_t *n_out, uint8_t commit_seed[32])
{
    fl_shamir_share_t *sh_s = NULL, *sh_b = NULL;
    uint32_t *xs = NULL;
    uint8_t key[FL_SACRYPTO_KEY], info[8], nonce[FL_SACRYPTO_NONCE], plain[FL_SAMSG_PLAIN];
    int rc = 0;
    if (!c || (!adv && n) || (!pks && n) || !out || !n_out || !commit_seed)
        return FL_EINVAL;
    if (c->phase != PH_SHARE)
        return FL_ESTATE;
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t dg[32];
        peer_t *p = peer_of(c, adv[i].id);
        if (!p || p->in_u1 || memchr(adv[i].name, '\0', sizeof adv[i].name) == NULL) {
            rc = FL_EPROTO; /* not a neighbour, a duplicate, or a malformed name */
            goto done;
        }
        fl_samsg_advert_digest(c->ctx, &adv[i], dg);
        if ((rc = fl_sacrypto_verify(pks[i], dg, adv[i].sig, adv[i].sig_len)) != 0) {
            rc = FL_EAUTH;
            goto done;
        }
        p->in_u1 = 1;
        memcpy(p->c_pk, adv[i].c_pk, FL_SACRYPTO_KEY);
        memcpy(p->s_pk, adv[i].s_pk, FL_SACRYPTO_KEY);
    }
    if (n < c->setup.t) {
        rc = FL_ECANCELED;
        goto done;
    }
    sh_s = calloc(n, sizeof *sh_s);
    sh_b = calloc(n, sizeof *sh_b);
    xs = calloc(n, sizeof *xs);
    if (!sh_s || !sh_b || !xs) {
        rc = FL_ENOMEM;
        goto done;
    }
    /* the shares go to the neighbours in U1 in id order; x = id + 1 */
    size_t m = 0;
    for (uint32_t i = 0; i < c->deg; i++)
        if (c->peers[i].in_u1)
            xs[m++] = c->peers[i].id + 1;
    if ((rc = fl_shamir_split(c->s_kp.sk, FL_SACRYPTO_KEY, c->setup.t, (unsigned)m, xs,
                              fl_sacrypto_rng, c->rng, sh_s)) != 0 ||
        (rc = fl_shamir_split(c->b, FL_SACRYPTO_KEY, c->setup.t, (unsigned)m, xs, fl_sacrypto_rng,
                              c->rng, sh_b)) != 0)
        goto done;
    for (size_t j = 0; j < m; j++) {
        uint32_t to = xs[j] - 1;
        peer_t *p = peer_of(c, to);
        fl_samsg_share_t *o = &out[j];
        memset(o, 0, sizeof *o);
        o->from = c->id;
        o->to = to;
        fl_samsg_pair_info(c->id, to, info);
        if ((rc = fl_sacrypto_agree(c->c_kp.sk, p->c_pk, c->ctx, 32, "fedopt-secagg-1 transport",
                                    info, sizeof info, p->tkey, c->rng)) != 0)
            goto done;
        fl_put_u32le(plain, c->id);
        fl_put_u32le(plain + 4, to);
        fl_shamir_share_encode(&sh_s[j], plain + 8);
        fl_shamir_share_encode(&sh_b[j], plain + 8 + FL_SAMSG_SHARE_LEN);
        fl_samsg_nonce(c->id, to, nonce);
        if ((rc = fl_sacrypto_seal(p->tkey, nonce, c->ctx, 32, plain, sizeof plain, o->ct)) != 0)
            goto done;
        fl_samsg_commit_share(c->ctx, FL_SAMSG_REVEAL_S, c->id, to, &sh_s[j], o->commit_s);
        fl_samsg_commit_share(c->ctx, FL_SAMSG_REVEAL_B, c->id, to, &sh_b[j], o->commit_b);
    }
    fl_samsg_commit_seed(c->ctx, c->id, c->b, commit_seed);
    *n_out = m;
done:
    mbedtls_platform_zeroize(key, sizeof key);
    mbedtls_platform_zeroize(plain, sizeof plain);
    if (sh_s)
        mbedtls_platform_zeroize(sh_s, n * sizeof *sh_s);
    if (sh_b)
        mbedtls_platform_zeroize(sh_b, n * sizeof *sh_b);
    free(sh_s);
    free(sh_b);
    free(xs);
    c->phase = rc == 0 ? PH_MASK : PH_FAILED;
    return rc;
}

int fl_saclient_mask(fl_saclient_t *c, const fl_samsg_share_t *in, size_t n, const uint32_t *x,
                     uint32_t *y)
{
    uint8_t key[FL_SACRYPTO_KEY], info[8], nonce[FL_SACRYPTO_NONCE], plain[FL_SAMSG_PLAIN];
    int rc = 0;
    if (!c || (!in && n) || !x || !y)
        return FL_EINVAL;
    if (c->phase != PH_MASK)
        return FL_ESTATE;
    for (size_t i = 0; i < n; i++) {
        peer_t *p = peer_of(c, in[i].from);
        if (!p || !p->in_u1 || p->in_u2 || in[i].to != c->id) {
            rc = FL_EPROTO;
            goto done;
        }
        p->in_u2 = 1;
        fl_samsg_nonce(p->id, c->id, nonce);
        if (fl_sacrypto_open(p->tkey, nonce, c->ctx, 32, in[i].ct, sizeof in[i].ct, plain) != 0 ||
            fl_get_u32le(plain) != p->id || fl_get_u32le(plain + 4) != c->id ||
            fl_shamir_share_decode(plain + 8, FL_SAMSG_SHARE_LEN, &p->sh_s) != 0 ||
            fl_shamir_share_decode(plain + 8 + FL_SAMSG_SHARE_LEN, FL_SAMSG_SHARE_LEN, &p->sh_b) !=
                0 ||
            p->sh_s.x != c->id + 1 || p->sh_b.x != c->id + 1) {
            c->bad_shares++;
            p->have_share = 0;
            continue;
        }
        p->have_share = 1;
    }
    if (n < c->setup.t) {
        rc = FL_ECANCELED;
        goto done;
    }
    if (y != x)
        memcpy(y, x, (size_t)c->setup.dim * sizeof *y);
    if ((rc = fl_sacrypto_prg_apply(c->b, 1, y, c->setup.dim)) != 0)
        goto done;
    for (uint32_t i = 0; i < c->deg; i++) {
        peer_t *p = &c->peers[i];
        if (!p->in_u2)
            continue;
        fl_samsg_pair_info(c->id, p->id, info);
        if ((rc = fl_sacrypto_agree(c->s_kp.sk, p->s_pk, c->ctx, 32, "fedopt-secagg-1 mask", info,
                                    sizeof info, key, c->rng)) != 0)
            goto done;
        if ((rc = fl_sacrypto_prg_apply(key, c->id < p->id ? 1 : -1, y, c->setup.dim)) != 0)
            goto done;
    }
done:
    mbedtls_platform_zeroize(key, sizeof key);
    mbedtls_platform_zeroize(plain, sizeof plain);
    c->phase = rc == 0 ? PH_UNMASK : PH_FAILED;
    return rc;
}

int fl_saclient_unmask(fl_saclient_t *c, const uint32_t *u3, size_t n3, fl_samsg_reveal_t *out,
                       size_t *n_out)
{
    int rc = 0, me = 0;
    uint32_t alive = 0;
    if (!c || (!u3 && n3) || !out || !n_out)
        return FL_EINVAL;
    if (c->phase != PH_UNMASK)
        return FL_ESTATE;
    *n_out = 0;
    c->phase = PH_DONE; /* whatever happens, never answer twice */
    for (size_t i = 0; i < n3; i++) {
        if (u3[i] >= c->setup.n || (i > 0 && u3[i] <= u3[i - 1]))
            return FL_EPROTO;
        if (u3[i] == c->id) {
            me = 1;
            continue;
        }
        peer_t *p = peer_of(c, u3[i]);
        if (!p)
            continue;
        if (!p->in_u2)
            return FL_EPROTO; /* "survived" without ever sharing keys with us */
        alive++;
    }
    if (!me)
        return FL_EPROTO;
    if (alive < c->setup.t)
        return FL_ECANCELED;
    size_t m = 0, j = 0;
    for (uint32_t i = 0; i < c->deg; i++) {
        peer_t *p = &c->peers[i];
        if (!p->in_u2 || !p->have_share)
            continue;
        while (j < n3 && u3[j] < p->id)
            j++;
        int survived = j < n3 && u3[j] == p->id;
        out[m].owner = p->id;
        out[m].kind = survived ? FL_SAMSG_REVEAL_B : FL_SAMSG_REVEAL_S;
        out[m].share = survived ? p->sh_b : p->sh_s;
        m++;
    }
    *n_out = m;
    return rc;
}
