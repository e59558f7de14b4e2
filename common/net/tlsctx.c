#include "common/net/tlsctx.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/net/certs.h"
#include "common/net/tls_int.h"

#define WHO "tls"

/* Suite order, fastest first as bench_tls's raw AEAD lines measure them:
 * ChaCha20-Poly1305 is faster than AES-GCM in mbedTLS 2.28 on x86-64, so it
 * comes first; AES-128-GCM before AES-256-GCM for the same reason. ECDSA
 * certificates are what fedopt issues; the RSA variants serve foreign ones. */
static const int g_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};

static const mbedtls_ecp_group_id g_curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

const int *fl_tls_default_suites(void) { return g_suites; }



/* Session tickets (RFC 5077) let a client that connected before skip the
 * handshake's public-key work, e.g. a whole fleet reconnecting after a
 * server restart (bench_server's storm part measures both kinds). A restart
 * must still accept the tickets it issued, so the ticket keys are derived
 * from the server's private key (HKDF-SHA256 with a label of their own)
 * instead of drawn at random: mbedTLS 2.28's ticket module draws its two
 * keys (a 4-byte name, then the key, each) through the generator it is given
 * at setup, so ticket_rng hands it the derived bytes during setup and the
 * context's random generator afterwards (the per-ticket IVs, and keys rotated
 * after TICKET_LIFETIME_S). Were the draw order ever different, the
 * keys would only differ from the previous run's: tickets would not survive a
 * restart, and clients would fall back to a full handshake. The key's
 * derivation also takes in the CA chain (see ticket_setup). */
#define TICKET_LIFETIME_S 86400
#define TICKET_SEED_BYTES (2 * (4 + 32))

/* The context's random generator, for every connection of every thread. */
static int rng_locked(void *p, unsigned char *out, size_t len)
{
    fl_tls_ctx_t *x = p;
    uv_mutex_lock(&x->rng_mu);
    int ret = mbedtls_ctr_drbg_random(&x->drbg, out, len);
    uv_mutex_unlock(&x->rng_mu);
    return ret;
}

static int ticket_rng(void *p, unsigned char *out, size_t len)
{
    fl_tls_ctx_t *x = p;
    if (x->ticket_seed_left) {
        if (len > x->ticket_seed_left)
            return MBEDTLS_ERR_CTR_DRBG_REQUEST_TOO_BIG;
        memcpy(out, x->ticket_seed, len);
        x->ticket_seed += len;
        x->ticket_seed_left -= len;
        return 0;
    }
    return rng_locked(x, out, len);
}

/* mbedTLS's parser; a ticket it accepts resumes the session, so it is counted.
 * A resumed session skips certificate verification, so a ticket whose client
 * certificate has expired since is refused: mbedTLS then runs a full
 * handshake, whose verification refuses the certificate. */
static int ticket_parse(void *p, mbedtls_ssl_session *session, unsigned char *buf, size_t len)
{
    fl_tls_ctx_t *x = p;
    uv_mutex_lock(&x->ticket_mu);
    int ret = mbedtls_ssl_ticket_parse(&x->ticket, session, buf, len);
    uv_mutex_unlock(&x->ticket_mu);
#if defined(MBEDTLS_SSL_KEEP_PEER_CERTIFICATE) && defined(MBEDTLS_HAVE_TIME_DATE)
    if (ret == 0 && session->peer_cert && mbedtls_x509_time_is_past(&session->peer_cert->valid_to))
        ret = MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
#endif
    if (ret == 0)
        atomic_fetch_add(&x->resumed, 1);
    return ret;
}

static int ticket_write(void *p, const mbedtls_ssl_session *session, unsigned char *start,
                        const unsigned char *end, size_t *tlen, uint32_t *lifetime)
{
    fl_tls_ctx_t *x = p;
    /* The ticket module rotates its keys (drawing from the generator) and
     * reads them here: one thread at a time. */
    uv_mutex_lock(&x->ticket_mu);
    int ret = mbedtls_ssl_ticket_write(&x->ticket, session, start, end, tlen, lifetime);
    uv_mutex_unlock(&x->ticket_mu);
    return ret;
}

static int ticket_setup(fl_tls_ctx_t *x)
{
    unsigned char der[1600], seed[TICKET_SEED_BYTES], info[2 + 32] = "v1";
    static const char salt[] = "fedopt session ticket keys";
    /* The CA chain the client certificates were checked against goes into
     * the derivation: a server restarted with another CA accepts none of
     * the old tickets, whose identities that CA did not vouch for. */
    const mbedtls_md_info_t *sha = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    mbedtls_md_context_t md;
    mbedtls_md_init(&md);
    int ret = mbedtls_md_setup(&md, sha, 0);
    if (!ret)
        ret = mbedtls_md_starts(&md);
    for (const mbedtls_x509_crt *c = &x->ca; !ret && c && c->raw.len; c = c->next)
        ret = mbedtls_md_update(&md, c->raw.p, c->raw.len);
    if (!ret)
        ret = mbedtls_md_finish(&md, info + 2);
    mbedtls_md_free(&md);
    if (ret)
        return ret;
    ret = mbedtls_pk_write_key_der(&x->key, der, sizeof der);
    if (ret < 0)
        return ret;
    /* mbedtls_pk_write_key_der writes at the end of the buffer. */
    ret = mbedtls_hkdf(sha, (const unsigned char *)salt, sizeof salt - 1, der + sizeof der - (size_t)ret, (size_t)ret,
                       info, sizeof info, seed, sizeof seed);
    mbedtls_platform_zeroize(der, sizeof der);
    if (ret)
        return ret;
    x->ticket_seed = seed;
    x->ticket_seed_left = sizeof seed;
    mbedtls_ssl_ticket_init(&x->ticket);
    x->have_ticket = 1;
    ret = mbedtls_ssl_ticket_setup(&x->ticket, ticket_rng, x, MBEDTLS_CIPHER_AES_256_GCM, TICKET_LIFETIME_S);
    if (ret == 0 && x->ticket_seed_left)
        FL_LOG_W(WHO, "session ticket keys: unexpected draw order; tickets will not survive a restart");
    x->ticket_seed = NULL;
    x->ticket_seed_left = 0;
    mbedtls_platform_zeroize(seed, sizeof seed);
    if (ret == 0)
        mbedtls_ssl_conf_session_tickets_cb(&x->conf, ticket_write, ticket_parse, x);
    return ret;
}

/* 1 for an elliptic-curve key. */
static int pk_is_ec(const mbedtls_pk_context *pk)
{
    mbedtls_pk_type_t t = mbedtls_pk_get_type(pk);
    return t == MBEDTLS_PK_ECKEY || t == MBEDTLS_PK_ECKEY_DH || t == MBEDTLS_PK_ECDSA;
}

/* mbedTLS computes a curve's table of multiples of its base point on the
 * first multiplication and keeps it in the key's group (ecp.c's
 * ecp_mul_comb), unless the group came with a static table (NIST curves in
 * 2.28). Made here, before any job runs, the table is only ever read after. */
static int ec_table_ready(fl_tls_ctx_t *x, mbedtls_pk_context *pk)
{
    if (!pk_is_ec(pk))
        return 0;
    mbedtls_ecp_group *grp = &mbedtls_pk_ec(*pk)->grp;
    if (grp->T != NULL || mbedtls_ecp_get_type(grp) != MBEDTLS_ECP_TYPE_SHORT_WEIERSTRASS)
        return 0;
    mbedtls_ecp_point r;
    mbedtls_mpi one;
    mbedtls_ecp_point_init(&r);
    mbedtls_mpi_init(&one);
    int ret = mbedtls_mpi_lset(&one, 1);
    if (!ret)
        ret = mbedtls_ecp_mul(grp, &r, &one, &grp->G, rng_locked, x);
    mbedtls_mpi_free(&one);
    mbedtls_ecp_point_free(&r);
    return ret;
}

/* Whether server handshakes may run on several threads at once, and makes
 * the state they share ready for it. A server handshake touches, besides
 * its own ssl context:
 *  - the configuration: read only once set up;
 *  - its random generator (CTR_DRBG and the entropy source): rng_locked;
 *  - the session-ticket context (ticket_parse, ticket_write): ticket_mu;
 *  - our certificate chain and the CA chain (parsed certificates, read), our
 *    private key (an ECDSA signature per full handshake) and the CA's public
 *    key (the client certificate's signature): EC keys only write to their
 *    group's table, made by ec_table_ready; an RSA key writes its blinding
 *    values and a cached modulus on every use, guarded only by mbedTLS's own
 *    mutex, which exists with MBEDTLS_THREADING_C: without it an RSA key in
 *    either chain keeps handshakes on the loop.
 * Everything else (allocation, gmtime_r) is thread-safe in the C library. */
static int shared_state_ready(fl_tls_ctx_t *x)
{
    int all_ec = pk_is_ec(&x->key);
    if (ec_table_ready(x, &x->key))
        return 0;
    for (mbedtls_x509_crt *c = &x->ca; c && c->raw.len; c = c->next) {
        all_ec &= pk_is_ec(&c->pk);
        if (ec_table_ready(x, &c->pk))
            return 0;
    }
#if defined(MBEDTLS_THREADING_C)
    (void)all_ec;
    return 1;
#else
    return all_ec;
#endif
}

int fl_tls_ctx_new(fl_tls_side_t side, const fl_tls_opts_t *o, fl_tls_ctx_t **out)
{
    if (!o || !out || !o->ca_file || (side != FL_TLS_SERVER && side != FL_TLS_CLIENT))
        return FL_EINVAL;
    *out = NULL;
    if (side == FL_TLS_SERVER && (!o->cert_file || !o->key_file)) {
        FL_LOG_E(WHO, "a server needs a certificate and a key");
        return FL_ECONFIG;
    }
    if (!o->cert_file != !o->key_file) {
        FL_LOG_E(WHO, "a certificate needs its key and a key its certificate");
        return FL_ECONFIG;
    }
    fl_tls_ctx_t *x = calloc(1, sizeof *x);
    if (!x)
        return FL_ENOMEM;
    int rc = FL_ETLS, ret;
    x->side = side;
    mbedtls_ssl_config_init(&x->conf);
    mbedtls_entropy_init(&x->entropy);
    mbedtls_ctr_drbg_init(&x->drbg);
    mbedtls_x509_crt_init(&x->ca);
    mbedtls_x509_crt_init(&x->cert);
    mbedtls_pk_init(&x->key);
    mbedtls_ssl_session_init(&x->session);
    uv_mutex_init(&x->rng_mu);
    uv_mutex_init(&x->ticket_mu);
    uv_mutex_init(&x->cert_mu);
    x->have_mutexes = 1;
    x->max_frame = o->max_frame ? o->max_frame : FL_WIRE_DEFAULT_MAX_FRAME;
    if (x->max_frame > FL_WIRE_HARD_MAX_FRAME)
        x->max_frame = FL_WIRE_HARD_MAX_FRAME;
    x->max_tensor = o->max_tensor ? o->max_tensor : FL_WIRE_DEFAULT_MAX_TENSOR;
    x->handshake_timeout_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms : 30000;
    x->preadmit_max_frame = o->preadmit_max_frame && o->preadmit_max_frame < x->max_frame
                                ? o->preadmit_max_frame
                                : x->max_frame;
    x->admit_timeout_ms = o->admit_timeout_ms;
    x->frame_budget = o->frame_budget;
    x->max_inflight = o->max_inflight ? o->max_inflight : 256 * 1024;
    x->max_conns = o->max_conns ? o->max_conns : 10000;
    x->max_handshakes = o->max_handshakes ? o->max_handshakes : 1024;
    x->no_client_cert = side == FL_TLS_SERVER && o->no_client_cert;

    static const char pers[] = "fedopt-tls";
    if ((ret = mbedtls_ctr_drbg_seed(&x->drbg, mbedtls_entropy_func, &x->entropy,
                                     (const unsigned char *)pers, sizeof pers - 1)) != 0) {
        fl__tls_log_mbed(FL_LOG_ERROR, "seeding the random generator", ret);
        goto fail;
    }
    if ((ret = mbedtls_x509_crt_parse_file(&x->ca, o->ca_file)) != 0) {
        fl__tls_log_mbed(FL_LOG_ERROR, o->ca_file, ret);
        rc = FL_ECONFIG;
        goto fail;
    }
    if (o->cert_file) {
        if ((ret = mbedtls_x509_crt_parse_file(&x->cert, o->cert_file)) != 0) {
            fl__tls_log_mbed(FL_LOG_ERROR, o->cert_file, ret);
            rc = FL_ECONFIG;
            goto fail;
        }
        if ((ret = mbedtls_pk_parse_keyfile(&x->key, o->key_file, NULL)) != 0) {
            fl__tls_log_mbed(FL_LOG_ERROR, o->key_file, ret);
            rc = FL_ECONFIG;
            goto fail;
        }
    }
    if ((ret = mbedtls_ssl_config_defaults(&x->conf,
                                           side == FL_TLS_SERVER ? MBEDTLS_SSL_IS_SERVER
                                                                 : MBEDTLS_SSL_IS_CLIENT,
                                           MBEDTLS_SSL_TRANSPORT_STREAM,
                                           MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        fl__tls_log_mbed(FL_LOG_ERROR, "configuring TLS", ret);
        goto fail;
    }
    /* TLS 1.2 only ("3,3" is 1.2 in mbedTLS's SSL-version numbering). */
    mbedtls_ssl_conf_min_version(&x->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&x->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    if (o->ciphersuite) {
        int id = mbedtls_ssl_get_ciphersuite_id(o->ciphersuite);
        int allowed = 0;
        for (const int *s = g_suites; *s; s++)
            allowed |= *s == id;
        if (!id || !allowed) {
            FL_LOG_E(WHO, "cipher suite '%s' is unknown or not an ECDHE+AEAD suite", o->ciphersuite);
            rc = FL_ECONFIG;
            goto fail;
        }
        x->forced_suite[0] = id;
        mbedtls_ssl_conf_ciphersuites(&x->conf, x->forced_suite);
    } else {
        mbedtls_ssl_conf_ciphersuites(&x->conf, g_suites);
    }
    mbedtls_ssl_conf_curves(&x->conf, g_curves);
    mbedtls_ssl_conf_rng(&x->conf, rng_locked, x);
    mbedtls_ssl_conf_renegotiation(&x->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
    mbedtls_ssl_conf_ca_chain(&x->conf, &x->ca, NULL);
    if (o->cert_file && (ret = mbedtls_ssl_conf_own_cert(&x->conf, &x->cert, &x->key)) != 0) {
        fl__tls_log_mbed(FL_LOG_ERROR, "using our certificate", ret);
        rc = FL_ECONFIG;
        goto fail;
    }
    if (side == FL_TLS_SERVER && x->no_client_cert) {
        mbedtls_ssl_conf_authmode(&x->conf, MBEDTLS_SSL_VERIFY_NONE);
        FL_LOG_W(WHO, "client certificates are NOT required (explicit no_client_cert option): "
                      "any client that reaches this server can join");
    } else {
        mbedtls_ssl_conf_authmode(&x->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    }
    if (side == FL_TLS_SERVER && (ret = ticket_setup(x)) != 0) {
        fl__tls_log_mbed(FL_LOG_ERROR, "setting up session tickets", ret);
        goto fail;
    }
    x->rec_jobs = side == FL_TLS_SERVER && o->record_jobs >= 0;
    if (side == FL_TLS_SERVER && o->handshake_jobs >= 0) {
        if (!shared_state_ready(x)) {
            FL_LOG_W(WHO, "handshakes stay on the loop thread: the keys cannot be shared by threads (an RSA key "
                          "with an mbedTLS built without MBEDTLS_THREADING_C, or a failed curve precomputation)");
        } else {
            x->hs_max = o->handshake_jobs > 0 ? (unsigned)o->handshake_jobs : uv_available_parallelism();
            if (x->hs_max < 1)
                x->hs_max = 1;
        }
    }
    *out = x;
    return 0;
fail:
    fl_tls_ctx_free(x);
    return rc;
}

void fl_tls_ctx_free(fl_tls_ctx_t *x)
{
    if (!x)
        return;
    if (x->nconns)
        FL_LOG_E(WHO, "context freed with %zu connections open", x->nconns);
    mbedtls_ssl_config_free(&x->conf);
    if (x->have_ticket)
        mbedtls_ssl_ticket_free(&x->ticket);
    mbedtls_ssl_session_free(&x->session);
    mbedtls_pk_free(&x->key);
    mbedtls_x509_crt_free(&x->cert);
    mbedtls_x509_crt_free(&x->ca);
    mbedtls_ctr_drbg_free(&x->drbg);
    mbedtls_entropy_free(&x->entropy);
    if (x->have_mutexes) {
        uv_mutex_destroy(&x->rng_mu);
        uv_mutex_destroy(&x->ticket_mu);
        uv_mutex_destroy(&x->cert_mu);
    }
    free(x->cert_ok);
    free(x);
}

size_t fl_tls_ctx_conns(const fl_tls_ctx_t *x) { return x ? x->nconns : 0; }

uint64_t fl_tls_ctx_resumed(const fl_tls_ctx_t *x)
{
    return x ? atomic_load(&((fl_tls_ctx_t *)x)->resumed) : 0;
}

void fl_tls_ctx_hs_stats(const fl_tls_ctx_t *x, fl_tls_hs_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (x && x->side == FL_TLS_SERVER) {
        *out = x->hs_stats;
        out->jobs_now = x->hs_jobs;
    }
}

void fl_tls_ctx_rec_stats(const fl_tls_ctx_t *x, fl_tls_rec_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (x && x->side == FL_TLS_SERVER)
        *out = x->rec_stats;
}

void fl_tls_ctx_forget_session(fl_tls_ctx_t *x)
{
    if (!x)
        return;
    mbedtls_ssl_session_free(&x->session);
    mbedtls_ssl_session_init(&x->session);
    x->have_session = 0;
}


uint64_t fl_tls_ctx_frame_bytes(const fl_tls_ctx_t *ctx) { return ctx ? ctx->frame_bytes : 0; }

mbedtls_pk_context *fl_tls_ctx_key(fl_tls_ctx_t *ctx)
{
    return ctx && mbedtls_pk_get_type(&ctx->key) != MBEDTLS_PK_NONE ? &ctx->key : NULL;
}

/* Certificates remembered as verified, per context. Enough for every
 * neighbour a client meets over many SecAgg+ rounds. */
#define CERT_OK_MAX 1024

static int cert_known(fl_tls_ctx_t *ctx, const uint8_t h[32])
{
    int known = 0;
    uv_mutex_lock(&ctx->cert_mu);
    for (size_t i = 0; i < ctx->ncert_ok && !known; i++)
        known = memcmp(ctx->cert_ok[i], h, 32) == 0;
    uv_mutex_unlock(&ctx->cert_mu);
    return known;
}

static void cert_remember(fl_tls_ctx_t *ctx, const uint8_t h[32])
{
    uv_mutex_lock(&ctx->cert_mu);
    if (!ctx->cert_ok)
        ctx->cert_ok = malloc(CERT_OK_MAX * sizeof *ctx->cert_ok);
    if (ctx->cert_ok) {
        memcpy(ctx->cert_ok[ctx->cert_ok_next], h, 32);
        ctx->cert_ok_next = (ctx->cert_ok_next + 1) % CERT_OK_MAX;
        if (ctx->ncert_ok < CERT_OK_MAX)
            ctx->ncert_ok++;
    }
    uv_mutex_unlock(&ctx->cert_mu);
}

int fl_tls_ctx_check_cert(fl_tls_ctx_t *ctx, const uint8_t *der, size_t len, mbedtls_x509_crt *crt, char *cn)
{
    if (!ctx || !der || !len || !crt || !cn)
        return FL_EINVAL;
    cn[0] = '\0';
    if (mbedtls_x509_crt_parse_der(crt, der, len) != 0)
        return FL_EFORMAT;
    uint8_t h[32];
    if (mbedtls_sha256_ret(der, len, h, 0) != 0)
        return FL_EAUTH;
    if (cert_known(ctx, h)) {
        /* The same bytes verified against this CA before (the chain, the
         * profile, the signature cannot have changed): only time can. */
        if (mbedtls_x509_time_is_past(&crt->valid_to) || mbedtls_x509_time_is_future(&crt->valid_from))
            return FL_EAUTH;
        return fl__tls_cert_cn(crt, cn);
    }
    uint32_t flags = 0;
    /* The same chain and profile the handshakes use: only a certificate the
     * fleet CA signed, valid now, names a peer. */
    if (!ctx->ca.raw.len || mbedtls_x509_crt_verify(crt, &ctx->ca, NULL, NULL, &flags, NULL, NULL) != 0)
        return FL_EAUTH;
    int rc = fl__tls_cert_cn(crt, cn);
    if (rc == 0)
        cert_remember(ctx, h);
    return rc;
}

