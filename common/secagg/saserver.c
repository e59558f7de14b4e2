/* saserver: see saserver.h. */
#include "common/secagg/saserver.h"

#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

#include "common/base/error.h"
#include "common/secagg/sagraph.h"

enum { PH_ADVERT, PH_SHARE, PH_MASK, PH_UNMASK, PH_DONE };

/* One party: its advert, the shares it dealt (indexed like its neighbour
 * list), and the checked shares of its secrets revealed by others. */
typedef struct {
    int in_u1, in_u2, in_u3, in_u4, liar;
    fl_samsg_advert_t adv;
    fl_samsg_share_t *dealt;    /* [deg]; dealt[i].to == nb[i] when present */
    uint8_t *dealt_ok;          /* [deg] */
    uint8_t commit_seed[32];
    fl_shamir_share_t *got;     /* checked revealed shares of its secret */
    uint32_t n_got;
} party_t;

struct fl_saserver {
    fl_samsg_setup_t setup;
    uint8_t ctx[32];
    fl_sacrypto_rng_t *rng;
    fl_sagraph_t g;
    uint32_t deg;
    uint32_t *nb;               /* [n * deg] neighbour lists */
    party_t *p;                 /* [n] */
    uint32_t *sum;              /* [dim] */
    int phase;
    fl_saserver_stats_t st;
};

static const uint32_t *nbs(const fl_saserver_t *s, uint32_t id)
{
    return s->nb + (size_t)id * s->deg;
}

/* Index of v in id's neighbour list, or -1. */
static long nb_index(const fl_saserver_t *s, uint32_t id, uint32_t v)
{
    const uint32_t *a = nbs(s, id);
    uint32_t lo = 0, hi = s->deg;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (a[mid] == v)
            return mid;
        if (a[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int fl_saserver_create(const fl_samsg_setup_t *setup, fl_sacrypto_rng_t *rng, fl_saserver_t **out)
{
    fl_saserver_t *s;
    int rc;
    if (!out)
        return FL_EINVAL;
    *out = NULL;
    if (!setup || !rng || fl_samsg_setup_check(setup) != 0)
        return FL_EINVAL;
    s = calloc(1, sizeof *s);
    if (!s)
        return FL_ENOMEM;
    s->setup = *setup;
    s->rng = rng;
    fl_samsg_context(setup, s->ctx);
    if ((rc = fl_sagraph_init(&s->g, setup->n, setup->k, setup->graph_seed)) != 0)
        goto fail;
    s->deg = s->g.k;
    s->nb = malloc((size_t)setup->n * s->deg * sizeof *s->nb);
    s->p = calloc(setup->n, sizeof *s->p);
    s->sum = calloc(setup->dim, sizeof *s->sum);
    if (!s->nb || !s->p || !s->sum) {
        rc = FL_ENOMEM;
        goto fail;
    }
    for (uint32_t u = 0; u < setup->n; u++)
        fl_sagraph_neighbours(&s->g, u, s->nb + (size_t)u * s->deg);
    s->st.n = setup->n;
    s->phase = PH_ADVERT;
    *out = s;
    return 0;
fail:
    fl_saserver_free(s);
    return rc;
}

void fl_saserver_free(fl_saserver_t *s)
{
    if (!s)
        return;
    if (s->p)
        for (uint32_t u = 0; u < s->setup.n; u++) {
            free(s->p[u].dealt);
            free(s->p[u].dealt_ok);
            if (s->p[u].got)
                mbedtls_platform_zeroize(s->p[u].got, (size_t)s->deg * sizeof *s->p[u].got);
            free(s->p[u].got);
        }
    free(s->p);
    free(s->nb);
    free(s->sum);
    fl_sagraph_free(&s->g);
    free(s);
}

uint32_t fl_saserver_degree(const fl_saserver_t *s)
{
    return s ? s->deg : 0;
}

int fl_saserver_add_advert(fl_saserver_t *s, const fl_samsg_advert_t *a, mbedtls_pk_context *pk)
{
    if (!s || !a)
        return FL_EINVAL;
    if (s->phase != PH_ADVERT)
        return FL_ESTATE;
    if (a->id >= s->setup.n || memchr(a->name, '\0', sizeof a->name) == NULL)
        return FL_EPROTO;
    if (s->p[a->id].in_u1)
        return FL_EEXIST;
    if (pk) {
        uint8_t dg[32];
        fl_samsg_advert_digest(s->ctx, a, dg);
        if (fl_sacrypto_verify(pk, dg, a->sig, a->sig_len) != 0) {
            s->st.bad_adverts++;
            return FL_EAUTH;
        }
    }
    s->p[a->id].adv = *a;
    s->p[a->id].in_u1 = 1;
    s->st.u1++;
    return 0;
}

int fl_saserver_end_adverts(fl_saserver_t *s)
{
    if (!s)
        return FL_EINVAL;
    if (s->phase != PH_ADVERT)
        return FL_ESTATE;
    s->phase = PH_SHARE;
    if (s->st.u1 < s->setup.t + 1) {
        s->phase = PH_DONE;
        return FL_ECANCELED;
    }
    return 0;
}

size_t fl_saserver_adverts_for(const fl_saserver_t *s, uint32_t id, fl_samsg_advert_t *out)
{
    size_t m = 0;
    if (!s || !out || id >= s->setup.n || !s->p[id].in_u1)
        return 0;
    const uint32_t *a = nbs(s, id);
    for (uint32_t i = 0; i < s->deg; i++)
        if (s->p[a[i]].in_u1)
            out[m++] = s->p[a[i]].adv;
    return m;
}

int fl_saserver_add_shares(fl_saserver_t *s, uint32_t id, const fl_samsg_share_t *sh, size_t n,
                           const uint8_t commit_seed[32])
{
    party_t *p;
    uint8_t *seen = NULL;
    size_t want = 0;
    int rc = 0;
    if (!s || (!sh && n) || !commit_seed)
        return FL_EINVAL;
    if (s->phase != PH_SHARE)
        return FL_ESTATE;
    if (id >= s->setup.n || !s->p[id].in_u1)
        return FL_EPROTO;
    p = &s->p[id];
    if (p->in_u2)
        return FL_EEXIST;
    const uint32_t *a = nbs(s, id);
    for (uint32_t i = 0; i < s->deg; i++)
        want += s->p[a[i]].in_u1;
    if (n != want)
        return FL_EPROTO;
    seen = calloc(s->deg, 1);
    if (!seen)
        return FL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        long at = sh[i].from == id ? nb_index(s, id, sh[i].to) : -1;
        if (at < 0 || seen[at] || !s->p[sh[i].to].in_u1) {
            rc = FL_EPROTO;
            goto done;
        }
        seen[at] = 1;
    }
    p->dealt = calloc(s->deg, sizeof *p->dealt);
    p->dealt_ok = calloc(s->deg, 1);
    if (!p->dealt || !p->dealt_ok) {
        free(p->dealt);
        free(p->dealt_ok);
        p->dealt = NULL;
        p->dealt_ok = NULL;
        rc = FL_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        long at = nb_index(s, id, sh[i].to);
        p->dealt[at] = sh[i];
        p->dealt_ok[at] = 1;
    }
    memcpy(p->commit_seed, commit_seed, 32);
    p->in_u2 = 1;
    s->st.u2++;
done:
    free(seen);
    return rc;
}

int fl_saserver_end_shares(fl_saserver_t *s)
{
    if (!s)
        return FL_EINVAL;
    if (s->phase != PH_SHARE)
        return FL_ESTATE;
    s->phase = PH_MASK;
    if (s->st.u2 < s->setup.t + 1) {
        s->phase = PH_DONE;
        return FL_ECANCELED;
    }
    return 0;
}

size_t fl_saserver_shares_for(const fl_saserver_t *s, uint32_t id, fl_samsg_share_t *out)
{
    size_t m = 0;
    if (!s || !out || id >= s->setup.n || !s->p[id].in_u2)
        return 0;
    const uint32_t *a = nbs(s, id);
    for (uint32_t i = 0; i < s->deg; i++) {
        const party_t *q = &s->p[a[i]];
        if (!q->in_u2)
            continue;
        long at = nb_index(s, a[i], id);
        if (at < 0 || !q->dealt_ok[at])
            continue;
        out[m] = q->dealt[at];
        memset(out[m].commit_s, 0, 32);
        memset(out[m].commit_b, 0, 32);
        m++;
    }
    return m;
}

int fl_saserver_add_masked(fl_saserver_t *s, uint32_t id, const uint32_t *y)
{
    if (!s || !y)
        return FL_EINVAL;
    if (s->phase != PH_MASK)
        return FL_ESTATE;
    if (id >= s->setup.n || !s->p[id].in_u2)
        return FL_EPROTO;
    if (s->p[id].in_u3)
        return FL_EEXIST;
    for (uint32_t j = 0; j < s->setup.dim; j++)
        s->sum[j] += y[j];
    s->p[id].in_u3 = 1;
    s->st.u3++;
    return 0;
}

int fl_saserver_end_masked(fl_saserver_t *s)
{
    if (!s)
        return FL_EINVAL;
    if (s->phase != PH_MASK)
        return FL_ESTATE;
    s->phase = PH_UNMASK;
    if (s->st.u3 < s->setup.t) {
        s->phase = PH_DONE;
        return FL_ECANCELED;
    }
    return 0;
}

size_t fl_saserver_survivors(const fl_saserver_t *s, uint32_t *out)
{
    size_t m = 0;
    if (!s || !out)
        return 0;
    for (uint32_t u = 0; u < s->setup.n; u++)
        if (s->p[u].in_u3)
            out[m++] = u;
    return m;
}

int fl_saserver_add_reveal(fl_saserver_t *s, uint32_t id, const fl_samsg_reveal_t *r, size_t n)
{
    if (!s || (!r && n))
        return FL_EINVAL;
    if (s->phase != PH_UNMASK)
        return FL_ESTATE;
    if (id >= s->setup.n || !s->p[id].in_u3)
        return FL_EPROTO;
    if (s->p[id].in_u4)
        return FL_EEXIST;
    if (n > s->deg)
        return FL_EPROTO;
    /* refuse a message that names a non-neighbour or one owner twice before
     * taking anything from it */
    for (size_t i = 0; i < n; i++) {
        if (r[i].owner >= s->setup.n || nb_index(s, id, r[i].owner) < 0)
            return FL_EPROTO;
        for (size_t j = 0; j < i; j++)
            if (r[j].owner == r[i].owner)
                return FL_EPROTO;
    }
    s->p[id].in_u4 = 1;
    s->st.u4++;
    for (size_t i = 0; i < n; i++) {
        party_t *o = &s->p[r[i].owner];
        uint8_t cm[32];
        if (!o->in_u2)
            continue;
        long at = nb_index(s, r[i].owner, id);
        uint32_t want = o->in_u3 ? FL_SAMSG_REVEAL_B : FL_SAMSG_REVEAL_S;
        int ok = at >= 0 && o->dealt_ok[at] && r[i].kind == want && r[i].share.x == id + 1 &&
                 r[i].share.elems == (FL_SACRYPTO_KEY + 2) / 3;
        if (ok) {
            fl_samsg_commit_share(s->ctx, want, r[i].owner, id, &r[i].share, cm);
            const uint8_t *ref = want == FL_SAMSG_REVEAL_B ? o->dealt[at].commit_b
                                                           : o->dealt[at].commit_s;
            ok = memcmp(cm, ref, 32) == 0;
        }
        if (!ok) {
            s->st.bad_reveals++;
            if (!s->p[id].liar) {
                s->p[id].liar = 1;
                s->st.liars++;
            }
            continue;
        }
        if (!o->got) {
            o->got = calloc(s->deg, sizeof *o->got);
            if (!o->got)
                return FL_ENOMEM;
        }
        o->got[o->n_got++] = r[i].share;
    }
    return 0;
}

int fl_saserver_finish(fl_saserver_t *s, uint32_t *sum)
{
    uint8_t secret[FL_SACRYPTO_KEY], pk[FL_SACRYPTO_KEY], cm[32], key[FL_SACRYPTO_KEY], info[8];
    int rc = 0;
    if (!s || !sum)
        return FL_EINVAL;
    if (s->phase != PH_UNMASK)
        return FL_ESTATE;
    s->phase = PH_DONE;
    /* first make sure every secret can be rebuilt: nothing is unmasked
     * unless all of them are */
    for (uint32_t v = 0; v < s->setup.n; v++)
        if (s->p[v].in_u2 && s->p[v].n_got < s->setup.t)
            return FL_ECANCELED;
    for (uint32_t v = 0; v < s->setup.n; v++) {
        party_t *o = &s->p[v];
        if (!o->in_u2)
            continue;
        if ((rc = fl_shamir_combine(o->got, s->setup.t, s->setup.t, secret, sizeof secret)) != 0) {
            rc = rc == FL_EAUTH ? FL_EAUTH : rc;
            goto done;
        }
        if (o->in_u3) {
            fl_samsg_commit_seed(s->ctx, v, secret, cm);
            if (memcmp(cm, o->commit_seed, 32) != 0) {
                rc = FL_EAUTH;
                goto done;
            }
            if ((rc = fl_sacrypto_prg_apply(secret, -1, s->sum, s->setup.dim)) != 0)
                goto done;
            s->st.rebuilt_b++;
        } else {
            if ((rc = fl_sacrypto_kp_public(secret, pk, s->rng)) != 0 ||
                memcmp(pk, o->adv.s_pk, FL_SACRYPTO_KEY) != 0) {
                rc = FL_EAUTH;
                goto done;
            }
            const uint32_t *a = nbs(s, v);
            for (uint32_t i = 0; i < s->deg; i++) {
                uint32_t u = a[i];
                if (!s->p[u].in_u3)
                    continue;
                fl_samsg_pair_info(u, v, info);
                if ((rc = fl_sacrypto_agree(secret, s->p[u].adv.s_pk, s->ctx, 32,
                                            "fedopt-secagg-1 mask", info, sizeof info, key,
                                            s->rng)) != 0)
                    goto done;
                /* u added +PRG when u < v, -PRG otherwise */
                if ((rc = fl_sacrypto_prg_apply(key, u < v ? -1 : 1, s->sum, s->setup.dim)) != 0)
                    goto done;
            }
            s->st.rebuilt_s++;
        }
    }
    memcpy(sum, s->sum, (size_t)s->setup.dim * sizeof *sum);
done:
    mbedtls_platform_zeroize(secret, sizeof secret);
    mbedtls_platform_zeroize(key, sizeof key);
    return rc;
}

void fl_saserver_stats(const fl_saserver_t *s, fl_saserver_stats_t *out)
{
    if (!s || !out)
        return;
    *out = s->st;
}
