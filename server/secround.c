#include "server/secround.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/rng.h"
#include "common/secagg/sagraph.h"
#include "common/secagg/saquant.h"

#define WHO "secagg"

/* PH_FINISH: the unmasking job runs in the thread pool. */
enum { PH_NONE = 0, PH_ADVERT, PH_SHARE, PH_MASKED, PH_UNMASK, PH_FINISH, PH_DONE };

typedef struct {
    char *name;
    int gone, adv, shr, msk, rev;
    uint8_t *der; /* the certificate forwarded with its advert */
    size_t der_len;
} party_t;

struct fl_secround {
    fl_secround_config_t cfg;
    fl_secround_cbs_t cbs;
    void *ud;
    fl_sacrypto_rng_t rng;
    int64_t round;
    int phase, busy;
    double phase_end, masked_deadline;
    fl_secround_plan_t plan;
    fl_saquant_t q;
    fl_samsg_setup_t setup;
    fl_saserver_t *sv;
    party_t *p;
    size_t n;
    Fedopt__SecAggSetup *setups;
    uint32_t *sum, *words, *ids;
    fl_samsg_advert_t *advbuf;
    fl_samsg_share_t *shbuf;
    fl_samsg_reveal_t *rvbuf;
    int rc;
    const char *why;
    uv_work_t job;   /* the unmasking in the thread pool (PH_FINISH) */
    int job_rc;      /* fl_saserver_finish's code, written by the job */
    int end_pending; /* fl_secround_end came while busy */
    char whybuf[160];
};

int fl_secround_plan(uint32_t n, double dropout, double corrupt, double clip, uint32_t max_weight,
                     fl_secround_plan_t *out)
{
    if (!out)
        return FL_EINVAL;
    memset(out, 0, sizeof *out);
    fl_sagraph_choice_t ch;
    int rc = fl_sagraph_choose(n, dropout, corrupt, FL_SECROUND_SIGMA, FL_SECROUND_ETA, &ch);
    if (rc)
        return rc;
    /* A party's neighbours travel in one SecAggKeys message. */
    if (ch.k > FL_WIRE_MAX_REPEATED)
        return FL_ERANGE;
    fl_saquant_t q;
    if ((rc = fl_saquant_init(&q, n, clip, max_weight)))
        return rc;
    *out = (fl_secround_plan_t){.n = n, .k = ch.k, .t = ch.t, .complete = ch.complete, .scale = q.scale,
                                .log2_fail_correct = ch.log2_fail_correct,
                                .log2_fail_private = ch.log2_fail_private};
    return 0;
}

int fl_secround_create(const fl_secround_config_t *cfg, const fl_secround_cbs_t *cbs, void *ud,
                       fl_secround_t **out)
{
    if (!cfg || !cbs || !cbs->send || !cbs->exclude || !out || !cfg->numel || cfg->numel >= FL_SAMSG_MAX_DIM)
        return FL_EINVAL;
    *out = NULL;
    fl_secround_t *s = calloc(1, sizeof *s);
    if (!s)
        return FL_ENOMEM;
    s->cfg = *cfg;
    s->cbs = *cbs;
    s->ud = ud;
    if (fl_sacrypto_rng_init(&s->rng, "fedopt-server secagg")) {
        free(s);
        return FL_EIO;
    }
    if (!(s->sum = malloc((cfg->numel + 1) * sizeof *s->sum)) ||
        !(s->words = malloc((cfg->numel + 1) * sizeof *s->words))) {
        fl_secround_free(s);
        return FL_ENOMEM;
    }
    *out = s;
    return 0;
}

static void reset(fl_secround_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->p[i].name);
        free(s->p[i].der);
    }
    free(s->p);
    free(s->setups);
    free(s->ids);
    free(s->advbuf);
    free(s->shbuf);
    free(s->rvbuf);
    fl_saserver_free(s->sv);
    s->p = NULL;
    s->setups = NULL;
    s->ids = NULL;
    s->advbuf = NULL;
    s->shbuf = NULL;
    s->rvbuf = NULL;
    s->sv = NULL;
    s->n = 0;
}

void fl_secround_free(fl_secround_t *s)
{
    if (!s)
        return;
    reset(s);
    fl_sacrypto_rng_free(&s->rng);
    free(s->sum);
    free(s->words);
    free(s);
}

static void fail(fl_secround_t *s, int rc, const char *why)
{
    s->rc = rc;
    s->why = why;
    s->phase = PH_DONE;
    FL_LOG_W(WHO, "round %lld: abandoned: %s (%s)", (long long)s->round, why, fl_errname(rc));
}

int fl_secround_begin(fl_secround_t *s, int64_t run_id, int64_t round, const char *const *names, size_t n, double now,
                      double masked_deadline)
{
    if (!s || !names || n < 2 || n > FL_SAMSG_MAX_PARTIES)
        return FL_EINVAL;
    if (s->phase != PH_NONE)
        return FL_ESTATE;
    reset(s);
    int rc = fl_secround_plan((uint32_t)n, s->cfg.dropout, s->cfg.corrupt, s->cfg.clip, s->cfg.max_weight, &s->plan);
    if (rc)
        return rc;
    fl_saquant_init(&s->q, (uint32_t)n, s->cfg.clip, s->cfg.max_weight);
    /* The graph seed is public (every party gets it); drawn from the run's
     * stream so a resumed run's round draws the same graph. */
    fl_rng_t r;
    uint64_t ids[3] = {(uint64_t)run_id, (uint64_t)round, FL_RNG_SECAGG};
    fl_rng_stream(&r, s->cfg.seed, ids, 3);
    s->setup = (fl_samsg_setup_t){.run_id = (uint64_t)run_id,
                                  .round = (uint32_t)round,
                                  .n = (uint32_t)n,
                                  .k = s->plan.k,
                                  .t = s->plan.t,
                                  .graph_seed = fl_rng_u64(&r),
                                  .dim = (uint32_t)(s->cfg.numel + 1)};
    if ((rc = fl_saserver_create(&s->setup, &s->rng, &s->sv)))
        return rc;
    uint32_t deg = fl_saserver_degree(s->sv);
    if (!(s->p = calloc(n, sizeof *s->p)) || !(s->setups = calloc(n, sizeof *s->setups)) ||
        !(s->ids = calloc(n, sizeof *s->ids)) || !(s->advbuf = calloc(deg, sizeof *s->advbuf)) ||
        !(s->shbuf = calloc(deg, sizeof *s->shbuf)) || !(s->rvbuf = calloc(deg, sizeof *s->rvbuf)))
        goto nomem;
    s->n = n;
    for (size_t i = 0; i < n; i++) {
        if (!(s->p[i].name = strdup(names[i])))
            goto nomem;
        Fedopt__SecAggSetup *u = &s->setups[i];
        fedopt__sec_agg_setup__init(u);
        u->n = (uint32_t)n;
        u->k = s->plan.k;
        u->t = s->plan.t;
        u->graph_seed = s->setup.graph_seed;
        u->party = (uint32_t)i;
        u->dim = s->setup.dim;
        u->clip = s->q.clip;
        u->scale = s->q.scale;
        u->max_weight = s->q.max_weight;
    }
    s->round = round;
    s->rc = 0;
    s->why = NULL;
    s->phase = PH_ADVERT;
    s->phase_end = now + s->cfg.phase_timeout;
    s->masked_deadline = masked_deadline;
    FL_LOG_I(WHO, "round %lld: %zu parties, degree %u%s, threshold %u, scale %.6g", (long long)round, n,
             s->plan.k, s->plan.complete ? " (complete)" : "", s->plan.t, s->q.scale);
    return 0;
nomem:
    reset(s);
    return FL_ENOMEM;
}

const Fedopt__SecAggSetup *fl_secround_setup(fl_secround_t *s, size_t i)
{
    return s && i < s->n ? &s->setups[i] : NULL;
}

static party_t *find(const fl_secround_t *s, const char *name, uint32_t *id)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->p[i].name, name) == 0) {
            *id = (uint32_t)i;
            return &s->p[i];
        }
    return NULL;
}

/* Who a phase waits for, and whether it has everyone's answer. */
static int phase_complete(const fl_secround_t *s)
{
    for (size_t i = 0; i < s->n; i++) {
        const party_t *p = &s->p[i];
        if (p->gone)
            continue;
        switch (s->phase) {
        case PH_ADVERT:
            if (!p->adv)
                return 0;
            break;
        case PH_SHARE:
            if (p->adv && !p->shr)
                return 0;
            break;
        case PH_MASKED:
            if (p->shr && !p->msk)
                return 0;
            break;
        case PH_UNMASK:
            if (p->msk && !p->rev)
                return 0;
            break;
        default:
            break;
        }
    }
    return 1;
}

static void send_to(fl_secround_t *s, uint32_t id, const Fedopt__Envelope *env)
{
    party_t *p = &s->p[id];
    if (!p->gone && s->cbs.send(s->ud, p->name, env))
        p->gone = 1;
}

static void end_adverts(fl_secround_t *s, double now)
{
    if (fl_saserver_end_adverts(s->sv)) {
        fail(s, FL_ECANCELED, "fewer than t + 1 parties advertised keys");
        return;
    }
    Fedopt__SecAggAdvert *adv = calloc(s->plan.k ? s->plan.k : 1, sizeof *adv);
    Fedopt__SecAggAdvert **ptr = calloc(s->plan.k ? s->plan.k : 1, sizeof *ptr);
    if (!adv || !ptr) {
        free(adv);
        free(ptr);
        fail(s, FL_ENOMEM, "out of memory");
        return;
    }
    s->phase = PH_SHARE;
    s->phase_end = now + s->cfg.phase_timeout;
    FL_LOG_D(WHO, "round %lld: keys advertised, forwarding them", (long long)s->round);
    for (uint32_t id = 0; id < s->n; id++) {
        if (!s->p[id].adv || s->p[id].gone)
            continue;
        size_t m = fl_saserver_adverts_for(s->sv, id, s->advbuf);
        for (size_t i = 0; i < m; i++) {
            const fl_samsg_advert_t *a = &s->advbuf[i];
            fedopt__sec_agg_advert__init(&adv[i]);
            adv[i].round_id = (uint64_t)s->round;
            adv[i].party = a->id;
            adv[i].name = (char *)a->name;
            adv[i].c_pk = (ProtobufCBinaryData){FL_SACRYPTO_KEY, (uint8_t *)a->c_pk};
            adv[i].s_pk = (ProtobufCBinaryData){FL_SACRYPTO_KEY, (uint8_t *)a->s_pk};
            adv[i].signature = (ProtobufCBinaryData){a->sig_len, (uint8_t *)a->sig};
            adv[i].certificate = (ProtobufCBinaryData){s->p[a->id].der_len, s->p[a->id].der};
            ptr[i] = &adv[i];
        }
        Fedopt__SecAggKeys keys = FEDOPT__SEC_AGG_KEYS__INIT;
        keys.round_id = (uint64_t)s->round;
        keys.adverts = ptr;
        keys.n_adverts = m;
        Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
        env.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_KEYS;
        env.secagg_keys = &keys;
        send_to(s, id, &env);
    }
    free(adv);
    free(ptr);
}

static void end_shares(fl_secround_t *s, double now)
{
    if (fl_saserver_end_shares(s->sv)) {
        fail(s, FL_ECANCELED, "fewer than t + 1 parties shared keys");
        return;
    }
    Fedopt__SecAggShare *sh = calloc(s->plan.k ? s->plan.k : 1, sizeof *sh);
    Fedopt__SecAggShare **ptr = calloc(s->plan.k ? s->plan.k : 1, sizeof *ptr);
    if (!sh || !ptr) {
        free(sh);
        free(ptr);
        fail(s, FL_ENOMEM, "out of memory");
        return;
    }
    s->phase = PH_MASKED;
    FL_LOG_D(WHO, "round %lld: keys shared, forwarding the ciphertexts", (long long)s->round);
    /* Training happens now: the masked inputs are due at the round's
     * deadline, and never sooner than a phase's time from here. */
    s->phase_end = s->masked_deadline > now + s->cfg.phase_timeout ? s->masked_deadline : now + s->cfg.phase_timeout;
    for (uint32_t id = 0; id < s->n; id++) {
        if (!s->p[id].shr || s->p[id].gone)
            continue;
        size_t m = fl_saserver_shares_for(s->sv, id, s->shbuf);
        for (size_t i = 0; i < m; i++) {
            fedopt__sec_agg_share__init(&sh[i]);
            sh[i].from = s->shbuf[i].from;
            sh[i].to = s->shbuf[i].to;
            sh[i].ciphertext = (ProtobufCBinaryData){FL_SAMSG_CIPHER, s->shbuf[i].ct};
            ptr[i] = &sh[i];
        }
        Fedopt__SecAggShares msg = FEDOPT__SEC_AGG_SHARES__INIT;
        msg.round_id = (uint64_t)s->round;
        msg.shares = ptr;
        msg.n_shares = m;
        Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
        env.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_SHARES;
        env.secagg_shares = &msg;
        send_to(s, id, &env);
    }
    free(sh);
    free(ptr);
}

static void end_masked(fl_secround_t *s, double now)
{
    if (fl_saserver_end_masked(s->sv)) {
        fail(s, FL_ECANCELED, "fewer than t masked inputs arrived");
        return;
    }
    size_t n3 = fl_saserver_survivors(s->sv, s->ids);
    uint8_t *bytes = malloc(n3 * 4 + 1);
    if (!bytes) {
        fail(s, FL_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < n3; i++)
        fl_put_u32le(bytes + 4 * i, s->ids[i]);
    s->phase = PH_UNMASK;
    s->phase_end = now + s->cfg.phase_timeout;
    FL_LOG_D(WHO, "round %lld: %zu masked inputs in, unmasking", (long long)s->round, n3);
    Fedopt__SecAggUnmask um = FEDOPT__SEC_AGG_UNMASK__INIT;
    um.round_id = (uint64_t)s->round;
    um.survivors = (ProtobufCBinaryData){n3 * 4, bytes};
    Fedopt__Envelope env = FEDOPT__ENVELOPE__INIT;
    env.msg_case = FEDOPT__ENVELOPE__MSG_SECAGG_UNMASK;
    env.secagg_unmask = &um;
    for (size_t i = 0; i < n3; i++)
        send_to(s, s->ids[i], &env);
    free(bytes);
}

/* The unmasking's result, on the loop thread. */
static void finished(fl_secround_t *s, int rc)
{
    fl_saserver_stats_t st;
    fl_saserver_stats(s->sv, &st);
    if (rc) {
        fail(s, rc, rc == FL_EAUTH ? "a dealer's shares contradict its commitments"
                                   : "too few checked shares to rebuild a secret");
        return;
    }
    s->phase = PH_DONE;
    FL_LOG_I(WHO, "round %lld: unmasked the sum of %u inputs (U1..U4 %u/%u/%u/%u of %u; %u seeds and %u keys "
                  "rebuilt; %u bad shares from %u liars)",
             (long long)s->round, st.u3, st.u1, st.u2, st.u3, st.u4, st.n, st.rebuilt_b, st.rebuilt_s,
             st.bad_reveals, st.liars);
}

/* The job: only the saserver, its rng and s->sum, which nothing on the
 * loop touches while the phase is PH_FINISH. */
static void finish_work(uv_work_t *w)
{
    fl_secround_t *s = w->data;
    s->job_rc = fl_saserver_finish(s->sv, s->sum);
}

static void finish_after(uv_work_t *w, int status)
{
    fl_secround_t *s = w->data;
    finished(s, status ? FL_ECANCELED : s->job_rc);
    if (s->end_pending) {
        s->end_pending = 0;
        s->phase = PH_NONE;
    }
    if (s->cbs.done)
        s->cbs.done(s->ud);
}

static void end_unmask(fl_secround_t *s)
{
    s->phase = PH_FINISH;
    s->job.data = s;
    if (s->cfg.loop && uv_queue_work(s->cfg.loop, &s->job, finish_work, finish_after) == 0) {
        FL_LOG_D(WHO, "round %lld: unmasking in the thread pool", (long long)s->round);
        return;
    }
    finished(s, fl_saserver_finish(s->sv, s->sum));
}

/* Abandons at once a round that can no longer reach the threshold: fewer
 * parties are left (answered, or still connected and eligible) than U2
 * (t + 1) or U3 (t) need. A party that is gone never comes back into the
 * round, so waiting for the phase's deadline could only end the same way. */
static int hopeless(fl_secround_t *s)
{
    uint32_t can2 = 0, can3 = 0;
    if (s->phase < PH_ADVERT || s->phase > PH_MASKED)
        return 0;
    for (size_t i = 0; i < s->n; i++) {
        const party_t *p = &s->p[i];
        int alive = !p->gone;
        /* still able to share keys / send a masked input */
        can2 += p->shr || (alive && (s->phase == PH_ADVERT || (s->phase == PH_SHARE && p->adv)));
        can3 += p->msk || (alive && (s->phase == PH_ADVERT || (s->phase == PH_SHARE && p->adv) ||
                                     (s->phase == PH_MASKED && p->shr)));
    }
    if (s->phase <= PH_SHARE && can2 < s->plan.t + 1)
        snprintf(s->whybuf, sizeof s->whybuf,
                 "too few parties left: %u can still share keys, t + 1 = %u needed", can2, s->plan.t + 1);
    else if (can3 < s->plan.t)
        snprintf(s->whybuf, sizeof s->whybuf,
                 "too few parties left: %u can still send a masked input, t = %u needed", can3, s->plan.t);
    else
        return 0;
    fail(s, FL_ECANCELED, s->whybuf);
    return 1;
}

/* Ends every phase that is complete or past its deadline. */
static void advance(fl_secround_t *s, double now)
{
    if (s->busy)
        return; /* a send's close re-entered: the outer loop goes on */
    s->busy = 1;
    hopeless(s);
    while (s->phase >= PH_ADVERT && s->phase <= PH_UNMASK && (phase_complete(s) || now >= s->phase_end)) {
        switch (s->phase) {
        case PH_ADVERT:
            end_adverts(s, now);
            break;
        case PH_SHARE:
            end_shares(s, now);
            break;
        case PH_MASKED:
            end_masked(s, now);
            break;
        default:
            end_unmask(s);
            break;
        }
        hopeless(s);
    }
    s->busy = 0;
}

/* A party that lied: refused from here on, and its connection closed. */
static void exclude(fl_secround_t *s, party_t *p, const char *why)
{
    FL_LOG_W(WHO, "round %lld: %s excluded: %s", (long long)s->round, p->name, why);
    p->gone = 1;
    s->cbs.exclude(s->ud, p->name, why);
}

/* The party of a message for the open round's phase `phase`, or NULL (a
 * message for another round or phase: logged, dropped). */
static party_t *party_for(fl_secround_t *s, const char *name, uint64_t round, int phase, const char *what,
                          uint32_t *id)
{
    party_t *p = s->phase >= PH_ADVERT ? find(s, name, id) : NULL;
    if (!p || round != (uint64_t)s->round || p->gone) {
        FL_LOG_I(WHO, "%s: %s for round %llu: not a party of an open secure round: ignored", name, what,
                 (unsigned long long)round);
        return NULL;
    }
    if (s->phase != phase) {
        FL_LOG_I(WHO, "%s: %s in round %lld's phase %d: late or early, ignored", name, what, (long long)s->round,
                 s->phase);
        return NULL;
    }
    return p;
}

int fl_secround_on_advert(fl_secround_t *s, const char *name, const Fedopt__SecAggAdvert *a,
                          const mbedtls_x509_crt *cert, double now)
{
    uint32_t id;
    party_t *p = party_for(s, name, a->round_id, PH_ADVERT, "SecAggAdvert", &id);
    if (!p)
        return FL_ESTATE;
    if (p->adv) {
        exclude(s, p, "a second key advertisement (a replay)");
        advance(s, now);
        return FL_EEXIST;
    }
    fl_samsg_advert_t adv;
    memset(&adv, 0, sizeof adv);
    int rc = FL_EPROTO;
    const char *why = "a malformed key advertisement";
    if (!cert || !cert->raw.len)
        why = "no certificate to check its signature with";
    else if (a->party == id && a->name && strcmp(a->name, name) == 0 && strlen(a->name) <= FL_SAMSG_NAME_MAX &&
             a->c_pk.len == FL_SACRYPTO_KEY && a->s_pk.len == FL_SACRYPTO_KEY && a->signature.len &&
             a->signature.len <= FL_SACRYPTO_SIG_MAX) {
        adv.id = id;
        memcpy(adv.name, a->name, strlen(a->name));
        memcpy(adv.c_pk, a->c_pk.data, FL_SACRYPTO_KEY);
        memcpy(adv.s_pk, a->s_pk.data, FL_SACRYPTO_KEY);
        memcpy(adv.sig, a->signature.data, a->signature.len);
        adv.sig_len = a->signature.len;
        rc = fl_saserver_add_advert(s->sv, &adv, (mbedtls_pk_context *)&cert->pk);
        why = rc == FL_EAUTH ? "its key advertisement's signature does not verify with its certificate"
                             : "its key advertisement was refused";
    }
    if (rc == 0 && !(p->der = malloc(cert->raw.len)))
        rc = FL_ENOMEM, why = "out of memory";
    if (rc) {
        exclude(s, p, why);
        advance(s, now);
        return rc;
    }
    memcpy(p->der, cert->raw.p, cert->raw.len);
    p->der_len = cert->raw.len;
    p->adv = 1;
    advance(s, now);
    return 0;
}

int fl_secround_on_shares(fl_secround_t *s, const char *name, const Fedopt__SecAggShares *m, double now)
{
    uint32_t id;
    party_t *p = party_for(s, name, m->round_id, PH_SHARE, "SecAggShares", &id);
    if (!p)
        return FL_ESTATE;
    if (p->shr || !p->adv) {
        exclude(s, p, p->shr ? "a second share message (a replay)" : "shares without a key advertisement");
        advance(s, now);
        return FL_EPROTO;
    }
    int rc = m->n_shares <= fl_saserver_degree(s->sv) && m->commit_seed.len == 32 ? 0 : FL_EPROTO;
    for (size_t i = 0; !rc && i < m->n_shares; i++) {
        const Fedopt__SecAggShare *x = m->shares[i];
        if (x->from != id || x->to >= s->n || x->ciphertext.len != FL_SAMSG_CIPHER || x->commit_s.len != 32 ||
            x->commit_b.len != 32) {
            rc = FL_EPROTO;
            break;
        }
        s->shbuf[i].from = x->from;
        s->shbuf[i].to = x->to;
        memcpy(s->shbuf[i].ct, x->ciphertext.data, FL_SAMSG_CIPHER);
        memcpy(s->shbuf[i].commit_s, x->commit_s.data, 32);
        memcpy(s->shbuf[i].commit_b, x->commit_b.data, 32);
    }
    if (!rc)
        rc = fl_saserver_add_shares(s->sv, id, s->shbuf, m->n_shares, m->commit_seed.data);
    if (rc) {
        exclude(s, p, "malformed shares (not one to each neighbour)");
        advance(s, now);
        return rc;
    }
    p->shr = 1;
    advance(s, now);
    return 0;
}

int fl_secround_on_masked(fl_secround_t *s, const char *name, uint64_t round, const uint8_t *bytes,
                          size_t nbytes, double now)
{
    uint32_t id;
    party_t *p = party_for(s, name, round, PH_MASKED, "masked input", &id);
    if (!p)
        return FL_ESTATE;
    if (p->msk || !p->shr || nbytes != (size_t)s->setup.dim * 4) {
        exclude(s, p, p->msk ? "a second masked input (a replay)"
                      : !p->shr ? "a masked input without shares"
                                : "a masked input of the wrong size");
        advance(s, now);
        return FL_EPROTO;
    }
    for (size_t i = 0; i < s->setup.dim; i++)
        s->words[i] = fl_get_u32le(bytes + 4 * i);
    int rc = fl_saserver_add_masked(s->sv, id, s->words);
    if (rc) {
        exclude(s, p, "its masked input was refused");
        advance(s, now);
        return rc;
    }
    p->msk = 1;
    advance(s, now);
    return 0;
}

int fl_secround_on_reveal(fl_secround_t *s, const char *name, const Fedopt__SecAggReveal *m, double now)
{
    uint32_t id;
    party_t *p = party_for(s, name, m->round_id, PH_UNMASK, "SecAggReveal", &id);
    if (!p)
        return FL_ESTATE;
    if (p->rev || !p->msk) {
        exclude(s, p, p->rev ? "a second reveal (a replay)" : "a reveal without a masked input");
        advance(s, now);
        return FL_EPROTO;
    }
    int rc = m->n_shares <= fl_saserver_degree(s->sv) ? 0 : FL_EPROTO;
    for (size_t i = 0; !rc && i < m->n_shares; i++) {
        const Fedopt__SecAggRevealed *x = m->shares[i];
        s->rvbuf[i].owner = x->owner;
        s->rvbuf[i].kind = x->kind;
        if (x->owner >= s->n || (x->kind != FL_SAMSG_REVEAL_B && x->kind != FL_SAMSG_REVEAL_S) ||
            fl_shamir_share_decode(x->share.data, x->share.len, &s->rvbuf[i].share))
            rc = FL_EPROTO;
    }
    if (!rc)
        rc = fl_saserver_add_reveal(s->sv, id, s->rvbuf, m->n_shares);
    if (rc) {
        exclude(s, p, "a malformed reveal");
        advance(s, now);
        return rc;
    }
    p->rev = 1;
    advance(s, now);
    return 0;
}

void fl_secround_drop(fl_secround_t *s, const char *name, double now)
{
    uint32_t id;
    party_t *p = s && s->phase >= PH_ADVERT ? find(s, name, &id) : NULL;
    if (!p || p->gone)
        return;
    p->gone = 1;
    advance(s, now);
}

void fl_secround_tick(fl_secround_t *s, double now)
{
    if (s)
        advance(s, now);
}

int64_t fl_secround_round(const fl_secround_t *s)
{
    return s && s->phase != PH_NONE ? s->round : 0;
}

int fl_secround_done(const fl_secround_t *s)
{
    return s && s->phase == PH_DONE;
}

int fl_secround_busy(const fl_secround_t *s)
{
    return s && s->phase == PH_FINISH;
}

int fl_secround_masked(const fl_secround_t *s, const char *name)
{
    uint32_t id;
    const party_t *p = s && s->phase >= PH_ADVERT ? find(s, name, &id) : NULL;
    return p && p->msk;
}

int fl_secround_result(fl_secround_t *s, float *mean, double *weight, const char **why)
{
    if (!s || s->phase != PH_DONE)
        return FL_ESTATE;
    *why = s->why;
    if (s->rc)
        return s->rc;
    int rc = fl_saquant_decode(&s->q, s->sum, s->cfg.numel, mean, weight);
    if (rc)
        *why = "the unmasked total weight is not positive";
    return rc;
}

const uint32_t *fl_secround_sum(const fl_secround_t *s)
{
    return s && s->phase == PH_DONE && !s->rc ? s->sum : NULL;
}

void fl_secround_end(fl_secround_t *s)
{
    if (s && s->phase == PH_FINISH)
        s->end_pending = 1;
    else if (s)
        s->phase = PH_NONE;
}

void fl_secround_stats(const fl_secround_t *s, fl_saserver_stats_t *out, uint32_t *k, uint32_t *t)
{
    memset(out, 0, sizeof *out);
    *k = *t = 0;
    if (!s || !s->sv || s->phase == PH_FINISH)
        return;
    fl_saserver_stats(s->sv, out);
    *k = s->plan.k;
    *t = s->plan.t;
}
