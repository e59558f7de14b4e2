#include "client/secure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/platform_util.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/net/certs.h"
#include "common/secagg/saclient.h"
#include "common/secagg/saquant.h"

struct fl_secure {
    fl_samsg_setup_t setup;
    fl_saquant_t q;
    uint32_t party;
    uint64_t round;
    fl_tls_ctx_t *tls;
    fl_secure_lie_t lie;
    fl_sacrypto_rng_t rng;
    fl_saclient_t *c;
    fl_samsg_share_t *in; /* the neighbours' ciphertexts (phase 3) */
    size_t nin;
    int ready;
};

static int encode(Fedopt__Envelope *env, fl_buf_t **out)
{
    return fl_wire_encode(env, out);
}

static int advert_frame(fl_secure_t *s, const fl_samsg_advert_t *a, fl_buf_t **out)
{
    Fedopt__SecAggAdvert m = FEDOPT__SEC_AGG_ADVERT__INIT;
    m.round_id = s->round;
    m.party = a->id;
    m.name = (char *)a->name;
    m.c_pk = (ProtobufCBinaryData){FL_SACRYPTO_KEY, (uint8_t *)a->c_pk};
    m.s_pk = (ProtobufCBinaryData){FL_SACRYPTO_KEY, (uint8_t *)a->s_pk};
    m.signature = (ProtobufCBinaryData){a->sig_len, (uint8_t *)a->sig};
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_ADVERT;
    env.secagg_advert = &m;
    return encode(&env, out);
}

int fl_secure_create(const Fedopt__SecAggSetup *setup, uint64_t run, uint64_t round, const char *name,
                     fl_tls_ctx_t *tls, fl_secure_lie_t lie, fl_buf_t **advert, fl_secure_t **out)
{
    if (!setup || !name || !tls || !advert || !out)
        return FL_EINVAL;
    *out = NULL;
    *advert = NULL;
    mbedtls_pk_context *key = fl_tls_ctx_key(tls);
    if (!key)
        return FL_EAUTH;
    if (strlen(name) > FL_SAMSG_NAME_MAX || setup->party >= setup->n || round > UINT32_MAX ||
        !(isfinite(setup->clip) && setup->clip > 0) || !(isfinite(setup->scale) && setup->scale >= 1) ||
        setup->max_weight < 1)
        return FL_EINVAL;
    fl_secure_t *s = calloc(1, sizeof *s);
    if (!s)
        return FL_ENOMEM;
    s->setup = (fl_samsg_setup_t){.run_id = run,
                                  .round = (uint32_t)round,
                                  .n = setup->n,
                                  .k = setup->k,
                                  .t = setup->t,
                                  .graph_seed = setup->graph_seed,
                                  .dim = setup->dim};
    s->q = (fl_saquant_t){.clip = setup->clip, .scale = setup->scale, .max_weight = setup->max_weight, .n = setup->n};
    s->party = setup->party;
    s->round = round;
    s->tls = tls;
    s->lie = lie;
    int rc = fl_samsg_setup_check(&s->setup);
    if (rc) {
        free(s);
        return rc;
    }
    if (fl_sacrypto_rng_init(&s->rng, "fedopt-client secagg")) {
        free(s);
        return FL_EIO;
    }
    fl_samsg_advert_t a;
    if ((rc = fl_saclient_create(&s->setup, s->party, name, key, &s->rng, &s->c)) ||
        (rc = fl_saclient_advertise(s->c, &a)))
        goto fail;
    if (lie == FL_SECURE_LIE_KEY)
        a.s_pk[0] ^= 1; /* not the key the signature covers */
    if ((rc = advert_frame(s, &a, advert)))
        goto fail;
    if (lie == FL_SECURE_LIE_REPLAY) {
        /* The same advertisement again, as an attacker replaying it would. */
        fl_buf_t *twice = NULL;
        if ((rc = fl_buf_new(2 * (*advert)->len, &twice)))
            goto fail;
        memcpy(twice->data, (*advert)->data, (*advert)->len);
        memcpy(twice->data + (*advert)->len, (*advert)->data, (*advert)->len);
        fl_buf_unref(*advert);
        *advert = twice;
    }
    *out = s;
    return 0;
fail:
    fl_buf_unref(*advert);
    *advert = NULL;
    fl_secure_free(s);
    return rc;
}

void fl_secure_free(fl_secure_t *s)
{
    if (!s)
        return;
    fl_saclient_free(s->c);
    if (s->in)
        mbedtls_platform_zeroize(s->in, s->nin * sizeof *s->in);
    free(s->in);
    fl_sacrypto_rng_free(&s->rng);
    free(s);
}

uint64_t fl_secure_round(const fl_secure_t *s)
{
    return s ? s->round : 0;
}

/* Is `name` the identity certificate CN stands for? Its own name, or, for
 * a certificate the server shares among a fleet's clients, CN/client. */
static int names_match(const char *name, const char *cn)
{
    size_t n = strlen(cn);
    return strncmp(name, cn, n) == 0 && (name[n] == '\0' || name[n] == '/');
}

int fl_secure_on_keys(fl_secure_t *s, const Fedopt__SecAggKeys *m, fl_buf_t **reply, char *why, size_t why_len)
{
    if (!s || !m || !reply)
        return FL_EINVAL;
    *reply = NULL;
    if (m->round_id != s->round) {
        snprintf(why, why_len, "keys for round %llu in round %llu", (unsigned long long)m->round_id,
                 (unsigned long long)s->round);
        return FL_EPROTO;
    }
    size_t deg = fl_saclient_degree(s->c), n = m->n_adverts;
    if (n > deg) {
        snprintf(why, why_len, "%zu adverts for %zu neighbours", n, deg);
        return FL_EPROTO;
    }
    fl_samsg_advert_t *adv = calloc(n + 1, sizeof *adv);
    mbedtls_x509_crt *crt = calloc(n + 1, sizeof *crt);
    mbedtls_pk_context **pks = calloc(n + 1, sizeof *pks);
    fl_samsg_share_t *sh = calloc(deg + 1, sizeof *sh);
    Fedopt__SecAggShare *msh = calloc(deg + 1, sizeof *msh);
    Fedopt__SecAggShare **ptr = calloc(deg + 1, sizeof *ptr);
    int rc = FL_ENOMEM;
    size_t made = 0;
    if (!adv || !crt || !pks || !sh || !msh || !ptr)
        goto out;
    for (; made < n; made++) {
        const Fedopt__SecAggAdvert *a = m->adverts[made];
        char cn[FL_CERTS_NAME_MAX + 1];
        mbedtls_x509_crt_init(&crt[made]);
        if (!a->name || strlen(a->name) > FL_SAMSG_NAME_MAX || a->c_pk.len != FL_SACRYPTO_KEY ||
            a->s_pk.len != FL_SACRYPTO_KEY || !a->signature.len || a->signature.len > FL_SACRYPTO_SIG_MAX) {
            snprintf(why, why_len, "a malformed advert of party %u", a->party);
            rc = FL_EPROTO;
            made++;
            goto out;
        }
        /* The certificate must come from the fleet CA and name the party:
         * a server can forward keys, never mint an identity for them. */
        if ((rc = fl_tls_ctx_check_cert(s->tls, a->certificate.data, a->certificate.len, &crt[made], cn)) ||
            !names_match(a->name, cn)) {
            snprintf(why, why_len, "party %u ('%s'): its certificate %s", a->party, a->name,
                     rc ? "does not check against the CA" : "names someone else");
            rc = FL_EAUTH;
            made++;
            goto out;
        }
        adv[made].id = a->party;
        memcpy(adv[made].name, a->name, strlen(a->name));
        memcpy(adv[made].c_pk, a->c_pk.data, FL_SACRYPTO_KEY);
        memcpy(adv[made].s_pk, a->s_pk.data, FL_SACRYPTO_KEY);
        memcpy(adv[made].sig, a->signature.data, a->signature.len);
        adv[made].sig_len = a->signature.len;
        pks[made] = &crt[made].pk;
    }
    size_t nout = 0;
    uint8_t commit_seed[32];
    if ((rc = fl_saclient_share_keys(s->c, adv, pks, n, sh, &nout, commit_seed))) {
        snprintf(why, why_len, "%s", rc == FL_EAUTH ? "a neighbour's advert does not verify with its certificate (a substituted key)"
                                    : rc == FL_ECANCELED ? "too few neighbours left for the threshold"
                                                          : "the neighbours' adverts are inconsistent");
        goto out;
    }
    for (size_t i = 0; i < nout; i++) {
        fedopt__sec_agg_share__init(&msh[i]);
        msh[i].from = sh[i].from;
        msh[i].to = sh[i].to;
        msh[i].ciphertext = (ProtobufCBinaryData){FL_SAMSG_CIPHER, sh[i].ct};
        msh[i].commit_s = (ProtobufCBinaryData){32, sh[i].commit_s};
        msh[i].commit_b = (ProtobufCBinaryData){32, sh[i].commit_b};
        ptr[i] = &msh[i];
    }
    Fedopt__SecAggShares out = FEDOPT__SEC_AGG_SHARES__INIT;
    out.round_id = s->round;
    out.shares = ptr;
    out.n_shares = nout;
    out.commit_seed = (ProtobufCBinaryData){32, commit_seed};
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_SHARES;
    env.secagg_shares = &out;
    rc = encode(&env, reply);
out:
    for (size_t i = 0; crt && i < made; i++)
        mbedtls_x509_crt_free(&crt[i]);
    free(adv);
    free(crt);
    free(pks);
    if (sh)
        mbedtls_platform_zeroize(sh, (deg + 1) * sizeof *sh);
    free(sh);
    free(msh);
    free(ptr);
    return rc;
}

int fl_secure_on_shares(fl_secure_t *s, const Fedopt__SecAggShares *m)
{
    if (!s || !m)
        return FL_EINVAL;
    if (m->round_id != s->round || s->in || m->n_shares > fl_saclient_degree(s->c))
        return FL_EPROTO;
    if (!(s->in = calloc(m->n_shares + 1, sizeof *s->in)))
        return FL_ENOMEM;
    for (size_t i = 0; i < m->n_shares; i++) {
        const Fedopt__SecAggShare *x = m->shares[i];
        if (x->ciphertext.len != FL_SAMSG_CIPHER)
            return FL_EPROTO; /* s->in stays: a second message is refused too */
        s->in[i].from = x->from;
        s->in[i].to = x->to;
        memcpy(s->in[i].ct, x->ciphertext.data, FL_SAMSG_CIPHER);
    }
    s->nin = m->n_shares;
    s->ready = 1;
    return 0;
}

int fl_secure_ready(const fl_secure_t *s)
{
    return s && s->ready;
}

int fl_secure_upload(fl_secure_t *s, const float *delta, size_t numel, double w, uint32_t chunk,
                     fl_buf_t **update, fl_buf_t **tensor, uint32_t *plain)
{
    if (!s || !delta || !update || !tensor)
        return FL_EINVAL;
    *update = *tensor = NULL;
    if (!s->ready)
        return FL_ESTATE;
    if (numel + 1 != s->setup.dim)
        return FL_ESHAPE;
    uint32_t *x = malloc((size_t)s->setup.dim * sizeof *x);
    uint8_t *bytes = malloc((size_t)s->setup.dim * 4);
    int rc = FL_ENOMEM;
    if (!x || !bytes)
        goto out;
    if ((rc = fl_saquant_encode(&s->q, delta, numel, w, x)))
        goto out;
    if (plain)
        memcpy(plain, x, (size_t)s->setup.dim * sizeof *x);
    if ((rc = fl_saclient_mask(s->c, s->in, s->nin, x, x)))
        goto out;
    for (size_t i = 0; i < s->setup.dim; i++)
        fl_put_u32le(bytes + 4 * i, x[i]);
    /* The weight is inside the words; the Update says only which round. */
    Fedopt__Update u = FEDOPT__UPDATE__INIT;
    u.round_id = s->round;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_UPDATE;
    env.update = &u;
    if ((rc = encode(&env, update)) ||
        (rc = fl_wire_encode_tensor(FEDOPT__TENSOR_PURPOSE__TENSOR_DELTA, s->round, bytes, (size_t)s->setup.dim * 4,
                                    chunk, tensor))) {
        fl_buf_unref(*update);
        *update = NULL;
    }
out:
    if (x)
        mbedtls_platform_zeroize(x, (size_t)s->setup.dim * sizeof *x);
    free(x);
    free(bytes);
    return rc;
}

int fl_secure_on_unmask(fl_secure_t *s, const Fedopt__SecAggUnmask *m, fl_buf_t **reply)
{
    if (!s || !m || !reply)
        return FL_EINVAL;
    *reply = NULL;
    if (m->round_id != s->round || m->survivors.len % 4 || m->survivors.len / 4 > s->setup.n)
        return FL_EPROTO;
    size_t n3 = m->survivors.len / 4, deg = fl_saclient_degree(s->c);
    uint32_t *u3 = malloc((n3 + 1) * sizeof *u3);
    fl_samsg_reveal_t *rv = calloc(deg + 1, sizeof *rv);
    Fedopt__SecAggRevealed *mr = calloc(deg + 1, sizeof *mr);
    Fedopt__SecAggRevealed **ptr = calloc(deg + 1, sizeof *ptr);
    uint8_t *enc = malloc((deg + 1) * FL_SHAMIR_SHARE_MAX);
    int rc = FL_ENOMEM;
    if (!u3 || !rv || !mr || !ptr || !enc)
        goto out;
    for (size_t i = 0; i < n3; i++)
        u3[i] = fl_get_u32le(m->survivors.data + 4 * i);
    size_t nout = 0;
    if ((rc = fl_saclient_unmask(s->c, u3, n3, rv, &nout)))
        goto out;
    if (s->lie == FL_SECURE_LIE_SHARE && nout)
        rv[0].share.y[0] = (rv[0].share.y[0] + 1) % FL_SHAMIR_P; /* a wrong share, still a field element */
    for (size_t i = 0; i < nout; i++) {
        fedopt__sec_agg_revealed__init(&mr[i]);
        mr[i].owner = rv[i].owner;
        mr[i].kind = rv[i].kind;
        size_t len = fl_shamir_share_encode(&rv[i].share, enc + i * FL_SHAMIR_SHARE_MAX);
        mr[i].share = (ProtobufCBinaryData){len, enc + i * FL_SHAMIR_SHARE_MAX};
        ptr[i] = &mr[i];
    }
    Fedopt__SecAggReveal out = FEDOPT__SEC_AGG_REVEAL__INIT;
    out.round_id = s->round;
    out.shares = ptr;
    out.n_shares = nout;
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_REVEAL;
    env.secagg_reveal = &out;
    rc = encode(&env, reply);
out:
    free(u3);
    if (rv)
        mbedtls_platform_zeroize(rv, (deg + 1) * sizeof *rv);
    free(rv);
    free(mr);
    free(ptr);
    if (enc)
        mbedtls_platform_zeroize(enc, (deg + 1) * FL_SHAMIR_SHARE_MAX);
    free(enc);
    return rc;
}
