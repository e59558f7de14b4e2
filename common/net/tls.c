#include "common/net/tls.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/hkdf.h>
#include <mbedtls/md.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_internal.h>
#include <mbedtls/version.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "common/net/certs.h"
#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/log.h"

#define WHO "tls"
#define READ_BUF (64 * 1024)
/* A TLS record header: type, version (2 bytes), length (2 bytes). */
#define REC_HDR 5
#define CLOSE_GRACE_MS 5000
/* Handshake ciphertext a connection may have waiting for its next job: a
 * client's flight is a few records (certificate chain, key exchange,
 * verify, Finished); more is a peer flooding a handshake. */
#define HS_IN_MAX (4 * (16384 + 512))
/* Record jobs (server, see rec_take): a record body of at most this many
 * bytes is decrypted on the loop (a heartbeat, a Hello, an Update): so
 * little crypto should cost less than a job's two thread wake-ups through
 * the pool. Not measured yet: bench_server's storm probe (its median round
 * trip) built with -DFL_TLS_REC_INLINE_MAX=0 against the default would
 * settle it. */
#ifndef FL_TLS_REC_INLINE_MAX
#define FL_TLS_REC_INLINE_MAX 1024
#endif
#define REC_INLINE_MAX FL_TLS_REC_INLINE_MAX
/* Ciphertext one record job reads at most before it lets the loop (and
 * the pool's other jobs) have a turn. */
#define REC_JOB_MAX (1024 * 1024)
/* A record job stops after starting a frame buffer larger than this, so the
 * loop charges it to the frame budget (charge_frames) before it fills. */
#define REC_CHARGE_MIN (16 * 1024)
/* rec_work's job_ret when it stopped for a frame (job_rc says which). */
#define REC_DATA 1
/* Send jobs (server, see snd_work): plaintext queued beyond this many bytes
 * is encrypted in the thread pool, less (a Welcome, a result, a heartbeat's
 * echo) on the loop, where it costs less than the trip through the pool. */
#define SND_INLINE_MAX (16 * 1024)
/* Ciphertext one send job writes at most before it hands its last record
 * to libuv, so the loop polls the connection (and reads) between jobs. */
#define SND_JOB_MAX (512 * 1024)

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

struct fl_tls_ctx {
    fl_tls_side_t side;
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    /* server: session tickets (see ticket_setup); client: the last session
     * with session_addr, offered for resumption on the next connection there */
    mbedtls_ssl_ticket_context ticket;
    int have_ticket;
    const unsigned char *ticket_seed; /* ticket_rng's derived bytes, during setup only */
    size_t ticket_seed_left;
    mbedtls_ssl_session session;
    int have_session;
    char session_addr[64];
    /* Shared by handshakes on several threads (see shared_state_ready):
     * rng_mu guards drbg (and the entropy source under it), ticket_mu the
     * ticket context; ticket_mu is taken before rng_mu, never after. */
    uv_mutex_t rng_mu, ticket_mu;
    int have_mutexes;
    /* fl_tls_ctx_check_cert: the SHA-256 of certificates that verified
     * against the CA (a ring of CERT_OK_MAX), so a neighbour met again is
     * not verified again (its dates are); cert_mu guards them (secure
     * aggregation checks certificates on worker threads). */
    uint8_t (*cert_ok)[32];
    size_t ncert_ok, cert_ok_next;
    uv_mutex_t cert_mu;
    atomic_uint_least64_t resumed;
    /* server handshake jobs (loop thread only) */
    unsigned hs_max;         /* jobs at once; 0 = handshakes on the loop */
    unsigned hs_jobs;        /* queued or running */
    fl_tls_conn_t *hs_cont_head, *hs_cont_tail; /* waiting, handshake under way */
    fl_tls_conn_t *hs_new_head, *hs_new_tail;   /* waiting, first flight */
    fl_tls_hs_stats_t hs_stats;
    int rec_jobs;            /* server: records decrypted in the thread pool */
    fl_tls_rec_stats_t rec_stats;
    int forced_suite[2];
    uint32_t max_frame;
    uint64_t max_tensor;
    uint32_t handshake_timeout_ms;
    size_t max_inflight;
    uint32_t max_conns;
    uint32_t max_handshakes;
    uint32_t preadmit_max_frame;
    uint32_t admit_timeout_ms;
    uint64_t frame_budget;
    uint64_t frame_bytes;      /* held in partial frames by all connections */
    int no_client_cert;
    size_t nconns;
    size_t peak_conns;         /* most connections open since the last trim */
    size_t closed_since_trim;
    int read_busy;             /* the shared read buffer is lent out */
    unsigned char rbuf[READ_BUF];
};

/* Descriptors kept free for everything but connections (the database and
 * its WAL, data files, certificate reloads, a log file). */
#define FD_MARGIN 16
#define ACCEPT_LOG_EVERY_S 10.0
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

struct fl_tls_server {
    uv_tcp_t tcp;       /* first: the struct is freed from its close callback */
    uv_timer_t backoff; /* accepting paused while the open-file limit is reached */
    int open_handles;
    fl_tls_ctx_t *ctx;
    fl_tls_cbs_t cbs;
    void *ud;
    int port;
    uint64_t fd_limit; /* RLIMIT_NOFILE's soft limit at start; 0 = none */
    size_t fd_base;    /* descriptors open at start that are not connections */
    int paused;
    uint32_t backoff_ms;
    double paused_at, last_log;
    uint64_t unlogged; /* refusals and failures since the last log line */
    double hs_last_log;
    uint64_t hs_unlogged; /* max_handshakes refusals since the last line about them */
    fl_tls_server_stats_t stats;
};

typedef struct sendq {
    struct sendq *next;
    fl_buf_t *buf;
    size_t off;
} sendq_t;

/* A copied write: handshake flights and alerts the kernel did not take at
 * once (see bio_send). */
typedef struct wreq {
    uv_write_t req;
    fl_tls_conn_t *c;
    unsigned char data[];
} wreq_t;

enum { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSING, ST_CLOSED };

struct fl_tls_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_getaddrinfo_t *gai;
    uv_connect_t *creq;
    uv_shutdown_t sreq;
    fl_tls_ctx_t *ctx;
    fl_tls_cbs_t cbs;
    void *ud;
    void *data;
    mbedtls_ssl_context ssl;
    int state;
    int opened;        /* on_open ran: the application knows this connection */
    int reason;        /* first failure, reported by on_close */
    int handles;       /* uv handles still to close */
    int paused;
    int shutting;      /* uv_shutdown issued */
    int is_server;
    int quiet;         /* never reported to the application (fl_tls_connect failed) */
    int rx_any;        /* some ciphertext arrived */
    int in_feed;       /* inside feed(): resume_read must not re-enter it */
    /* ciphertext being fed to mbedTLS */
    const unsigned char *in_ptr;
    size_t in_len;
    unsigned char *stash; /* unread ciphertext kept while paused */
    size_t stash_len;
    /* Record-sized reads leave at most a record header unread at a pause:
     * it stays here, not in a heap block of its own per paused connection. */
    unsigned char stash_small[16];
    /* plaintext waiting to be encrypted */
    sendq_t *q_head, *q_tail;
    size_t q_bytes;
    /* Ciphertext the kernel did not take at once goes out by one uv_write
     * straight from mbedTLS's output buffer (bio_send): no copy, no staging
     * buffer. wr_ptr/wr_len are those bytes; wr_busy while libuv writes them,
     * wr_done once written and until mbedTLS asks for them again. */
    uv_write_t wreq;
    const unsigned char *wr_ptr;
    size_t wr_len;
    int wr_busy, wr_done;
    int in_pump;          /* inside conn_pump's mbedtls_ssl_write */
    size_t burst;         /* ciphertext written synchronously this loop turn */
    /* where the ciphertext stream stands in its records (read_want) */
    unsigned char rh[REC_HDR];
    size_t rh_got, rec_left;
    fl_wire_reader_t rd;
    fl_wire_stream_t st;
    uint64_t frame_bytes;  /* this connection's share of ctx->frame_bytes */
    int admitted;          /* server: the application admitted the peer */
    /* Server handshake jobs. hs_in is ciphertext received and not yet
     * given to a job (loop only); job_* belong to the job while hs_busy
     * (the worker's) and to the loop otherwise. */
    uv_work_t hs_work;
    int hs_busy;           /* a job is queued or running */
    int hs_queued;         /* on one of the context's waiting lists */
    int hs_started;        /* a job ran: goes before first flights */
    int hs_counted;        /* counted in hs_stats.in_progress */
    int hs_eof;            /* the peer closed (a libuv error) while bytes wait for a job */
    int in_job;            /* bio callbacks work for a job (worker): 1 handshake (job_in/job_out), 2 records (rec_recv), 3 sending (snd_send) */
    int job_ret;
    /* Record jobs (server, ctx->rec_jobs; see rec_work). While rec_busy the
     * job owns ssl, rd, in_ptr/in_len, job_in and job_out, and reads the
     * socket (job_fd) itself. */
    int rec_busy;
    int rec_pump;          /* conn_pump waits for the job */
    int reading;           /* libuv reads the socket (uv_read_start) */
    int job_fd;
    int job_sock;          /* the job's socket result: 0, UV_EOF or -errno */
    size_t job_bytes;      /* ciphertext the running job read from the socket */
    int job_wr_pending;    /* a record of ours was in flight at dispatch */
    int job_rc;            /* the frame reader's result (job_ret REC_DATA) */
    uint8_t *job_frame;
    uint32_t job_frame_len;
    int job_held;          /* job_frame is complete, held while reading is paused */
    /* Send jobs (see snd_work): the job encrypts the queue from q_head up
     * to and including job_q_last (the tail at dispatch: the loop may append
     * behind it meanwhile), moves q->off only, and counts job_plain; the
     * record it did not write (the kernel was full or its share was used)
     * is job_wr_ptr/job_wr_len, which the loop hands to libuv. */
    sendq_t *job_q_last;
    size_t job_plain;
    const unsigned char *job_wr_ptr;
    size_t job_wr_len;
    fl_tls_conn_t *hs_next;
    fl_bytes_t hs_in;
    fl_bytes_t job_in, job_out;
    size_t job_in_off;
    char host[256];
    char peer[FL_CERTS_NAME_MAX + 1];
    char addr[64];
};

/* ---- context ------------------------------------------------------------ */

static void log_mbed(fl_log_level_t lvl, const char *what, int ret)
{
    char buf[160];
    mbedtls_strerror(ret, buf, sizeof buf);
    fl_log(lvl, WHO, "%s: %s (-0x%04x)", what, buf, (unsigned)-ret);
}

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
        log_mbed(FL_LOG_ERROR, "seeding the random generator", ret);
        goto fail;
    }
    if ((ret = mbedtls_x509_crt_parse_file(&x->ca, o->ca_file)) != 0) {
        log_mbed(FL_LOG_ERROR, o->ca_file, ret);
        rc = FL_ECONFIG;
        goto fail;
    }
    if (o->cert_file) {
        if ((ret = mbedtls_x509_crt_parse_file(&x->cert, o->cert_file)) != 0) {
            log_mbed(FL_LOG_ERROR, o->cert_file, ret);
            rc = FL_ECONFIG;
            goto fail;
        }
        if ((ret = mbedtls_pk_parse_keyfile(&x->key, o->key_file, NULL)) != 0) {
            log_mbed(FL_LOG_ERROR, o->key_file, ret);
            rc = FL_ECONFIG;
            goto fail;
        }
    }
    if ((ret = mbedtls_ssl_config_defaults(&x->conf,
                                           side == FL_TLS_SERVER ? MBEDTLS_SSL_IS_SERVER
                                                                 : MBEDTLS_SSL_IS_CLIENT,
                                           MBEDTLS_SSL_TRANSPORT_STREAM,
                                           MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
        log_mbed(FL_LOG_ERROR, "configuring TLS", ret);
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
        log_mbed(FL_LOG_ERROR, "using our certificate", ret);
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
        log_mbed(FL_LOG_ERROR, "setting up session tickets", ret);
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

/* ---- connection plumbing ------------------------------------------------ */

static void conn_pump(fl_tls_conn_t *c);
static void snd_dispatch(fl_tls_conn_t *c);
static void conn_read(fl_tls_conn_t *c);
static void conn_fail(fl_tls_conn_t *c, int reason);
static void timer_fired(uv_timer_t *t);
static void finish_close(fl_tls_conn_t *c);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void hs_uncount(fl_tls_conn_t *c)
{
    if (c->hs_counted) {
        c->hs_counted = 0;
        c->ctx->hs_stats.in_progress--;
    }
}

/* After a mass disconnect (at least TRIM_AFTER_CLOSES closed, and at most
 * half of the peak still open) the freed connection memory (TLS records,
 * frame buffers) is handed back to the system: glibc keeps freed heap pages
 * otherwise, and a server that once held thousands of connections stayed at
 * its peak RSS. tests/soak/soak.sh measures the RSS before and after. */
#define TRIM_AFTER_CLOSES 256

static void maybe_trim(fl_tls_ctx_t *ctx)
{
    if (++ctx->closed_since_trim < TRIM_AFTER_CLOSES || ctx->nconns > ctx->peak_conns / 2)
        return;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    FL_LOG_D(WHO, "%zu connections closed (%zu of a peak of %zu still open): memory returned",
             ctx->closed_since_trim, ctx->nconns, ctx->peak_conns);
    ctx->closed_since_trim = 0;
    ctx->peak_conns = ctx->nconns;
}

/* Drops one of the things that keep the connection alive (its two handles,
 * a pending name resolution); the last one reports and frees it. */
static void conn_release(fl_tls_conn_t *c)
{
    if (--c->handles > 0)
        return;
    /* Both handles are closed and every write request has completed
     * (libuv cancels pending writes before a stream's close callback). */
    if ((c->opened || !c->is_server) && !c->quiet) {
        if (c->cbs.on_close)
            c->cbs.on_close(c, c->reason, c->ud);
    } else if (c->is_server && !c->opened && !c->quiet && c->cbs.on_handshake_fail) {
        c->cbs.on_handshake_fail(c->reason ? c->reason : FL_ECLOSED, c->ud);
    }
    hs_uncount(c);
    fl_bytes_free(&c->hs_in);
    fl_bytes_free(&c->job_in);
    fl_bytes_free(&c->job_out);
    free(c->job_frame);
    c->ctx->nconns--;
    c->ctx->frame_bytes -= c->frame_bytes;
    c->frame_bytes = 0;
    mbedtls_ssl_free(&c->ssl);
    fl_wire_reader_free(&c->rd);
    fl_wire_stream_free(&c->st);
    for (sendq_t *q = c->q_head; q;) {
        sendq_t *n = q->next;
        fl_buf_unref(q->buf);
        free(q);
        q = n;
    }
    if (c->stash != c->stash_small)
        free(c->stash);
    fl_tls_ctx_t *ctx = c->ctx;
    free(c);
    maybe_trim(ctx);
}

static void handle_closed(uv_handle_t *h) { conn_release(h->data); }

static void free_handle(uv_handle_t *h) { free(h); }

/* Closes the handles now; on_close follows from handle_closed. */
static void close_handles(fl_tls_conn_t *c)
{
    if (c->state == ST_CLOSED)
        return;
    c->state = ST_CLOSED;
    uv_timer_stop(&c->timer);
    /* A record job may be reading the socket: closing it now would free
     * its descriptor for the next accept, and the job could read another
     * connection's bytes. rec_after closes it. */
    if (!c->rec_busy && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, handle_closed);
}

static void conn_fail(fl_tls_conn_t *c, int reason)
{
    if (c->state == ST_CLOSED)
        return;
    if (!c->reason)
        c->reason = reason;
    close_handles(c);
}

/* A copied write finished. */
static void copy_done(uv_write_t *req, int status)
{
    wreq_t *w = (wreq_t *)req;
    fl_tls_conn_t *c = w->c;
    free(w);
    if (c->state == ST_CLOSED)
        return;
    if (status < 0) {
        FL_LOG_W(WHO, "%s: write failed: %s", c->addr, uv_strerror(status));
        conn_fail(c, FL_ENET);
    }
}

/* The uv_write out of mbedTLS's output buffer finished: mbedTLS learns it at
 * its next call of bio_send, which the pump makes now. */
static void write_done(uv_write_t *req, int status)
{
    fl_tls_conn_t *c = req->data;
    c->wr_busy = 0;
    if (c->state == ST_CLOSED)
        return;
    if (status < 0) {
        FL_LOG_W(WHO, "%s: write failed: %s", c->addr, uv_strerror(status));
        conn_fail(c, FL_ENET);
        return;
    }
    c->wr_done = 1;
    if (!c->shutting)
        conn_pump(c);
}

static int send_failed(fl_tls_conn_t *c, int r)
{
    FL_LOG_W(WHO, "%s: write failed: %s", c->addr, uv_strerror(r));
    conn_fail(c, FL_ENET);
    return MBEDTLS_ERR_NET_SEND_FAILED;
}

/* Sends bytes that are not kept anywhere: what the kernel does not take at
 * once is copied and written by libuv. Returns 0 or a libuv error. */
static int write_copy(fl_tls_conn_t *c, const unsigned char *buf, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r < 0 && r != UV_EAGAIN)
        return r;
    size_t n = r > 0 ? (size_t)r : 0;
    if (n == len)
        return 0;
    wreq_t *w = malloc(sizeof *w + (len - n));
    if (!w)
        return UV_ENOMEM;
    w->c = c;
    memcpy(w->data, buf + n, len - n);
    b = uv_buf_init((char *)w->data, (unsigned)(len - n));
    r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, copy_done);
    if (r < 0)
        free(w);
    return r < 0 ? r : 0;
}

/* Back on the loop after a job: sends what the job's mbedTLS wrote (a
 * handshake flight, an alert); a failed write fails the connection, logged
 * with `fmt` (the peer's address, then libuv's error). */
static void flush_job_out(fl_tls_conn_t *c, const char *fmt)
{
    if (c->job_out.len) {
        int r = write_copy(c, c->job_out.data, c->job_out.len);
        if (r < 0) {
            FL_LOG_W(WHO, fmt, c->addr, uv_strerror(r));
            conn_fail(c, FL_ENET);
        }
    }
    c->job_out.len = 0;
}

/* A handshake job's send: the bytes wait in job_out until the loop sends
 * them (hs_after). Runs on the worker. */
static int job_send(fl_tls_conn_t *c, const unsigned char *buf, size_t len)
{
    if (fl_bytes_append(&c->job_out, buf, len) != 0)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)len;
}

/* mbedTLS's send callback. The kernel usually takes a record at once
 * (uv_try_write). What it does not take is written by libuv later:
 *  - records of application data (conn_pump) go straight from mbedTLS's own
 *    output buffer: we answer WANT_WRITE, mbedTLS keeps those bytes in place
 *    until a later call of ours says they were sent, and conn_pump waits for
 *    write_done. Sending therefore costs no memory beyond mbedTLS's record
 *    buffer, however many connections are sending at once.
 *  - handshake flights and alerts are copied and reported sent, so the
 *    handshake and mbedtls_ssl_read never stop for a write (they would leave
 *    received ciphertext unconsumed). They are small and rare.
 * Per loop turn a connection writes at most max_inflight bytes synchronously;
 * after that the next record goes by uv_write, whose completion resumes the
 * pump in a later turn, so one fast connection cannot hold the loop. */
static int snd_send(fl_tls_conn_t *c, const unsigned char *buf, size_t len);

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    fl_tls_conn_t *c = ctx;
    if (c->in_job == 3)
        return snd_send(c, buf, len);
    if (c->in_job == 2 && c->job_wr_pending)
        return MBEDTLS_ERR_SSL_WANT_WRITE; /* a record job's alert behind a record of ours in flight: read_end */
    if (c->in_job)
        return job_send(c, buf, len);
    if (c->wr_done) {
        /* mbedTLS asks again for the bytes written on its behalf. */
        c->wr_done = 0;
        if (buf != c->wr_ptr || len < c->wr_len)
            return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
        return (int)c->wr_len;
    }
    if (c->wr_busy)
        return MBEDTLS_ERR_SSL_WANT_WRITE; /* mbedTLS retries those bytes after write_done */
    if (c->state == ST_CLOSED)
        return MBEDTLS_ERR_NET_SEND_FAILED;
    size_t n = 0;
    if (!c->in_pump || c->burst < c->ctx->max_inflight) {
        uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r < 0 && r != UV_EAGAIN)
            return send_failed(c, r);
        n = r > 0 ? (size_t)r : 0;
        c->burst += n;
        if (n == len)
            return (int)len;
    }
    if (!c->in_pump) {
        int r = write_copy(c, buf + n, len - n);
        if (r == UV_ENOMEM)
            return MBEDTLS_ERR_SSL_ALLOC_FAILED;
        if (r < 0)
            return send_failed(c, r);
        return (int)len;
    }
    uv_buf_t b = uv_buf_init((char *)buf + n, (unsigned)(len - n));
    c->wreq.data = c;
    int r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_done);
    if (r < 0)
        return send_failed(c, r);
    c->wr_busy = 1;
    c->wr_ptr = buf + n;
    c->wr_len = len - n;
    /* A partial count makes mbedTLS call again at once for the rest, which
     * is then in flight: WANT_WRITE. */
    return n ? (int)n : MBEDTLS_ERR_SSL_WANT_WRITE;
}

static int rec_recv(fl_tls_conn_t *c, unsigned char *buf, size_t len);
static void read_failed(fl_tls_conn_t *c, int nread);
static unsigned char *ssl_in_tail(fl_tls_conn_t *c, size_t *room);

/* Gives mbedTLS up to len of the bytes libuv (or a job's read beyond its
 * request) left in in_ptr; c->in_len must be nonzero. Bytes read straight
 * into mbedTLS's input buffer (alloc_cb) are already where it wants them. */
static int take_in(fl_tls_conn_t *c, unsigned char *buf, size_t len)
{
    size_t k = len < c->in_len ? len : c->in_len;
    if (buf != c->in_ptr)
        memmove(buf, c->in_ptr, k);
    c->in_ptr += k;
    c->in_len -= k;
    return (int)k;
}

/* mbedTLS's receive callback: ciphertext from the current read buffer. */
static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    fl_tls_conn_t *c = ctx;
    if (c->in_job == 2)
        return rec_recv(c, buf, len);
    if (c->in_job) {
        size_t left = c->job_in.len - c->job_in_off;
        if (left == 0)
            return MBEDTLS_ERR_SSL_WANT_READ;
        size_t k = len < left ? len : left;
        memcpy(buf, c->job_in.data + c->job_in_off, k);
        c->job_in_off += k;
        return (int)k;
    }
    if (c->in_len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return take_in(c, buf, len);
}

static void describe_failure(fl_tls_conn_t *c, int ret, char *out, size_t n)
{
    if (ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE ||
        (ret == MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE && c->is_server && !c->ctx->no_client_cert &&
         !mbedtls_ssl_get_peer_cert(&c->ssl))) {
        snprintf(out, n, "client sent no certificate (mutual TLS is required)");
        return;
    }
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
        char info[512];
        int k = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
        if (k < 0)
            snprintf(info, sizeof info, "flags 0x%x", flags);
        /* verify_info ends lines with '\n': make it one log line. */
        for (char *p = info; *p; p++)
            if (*p == '\n')
                *p = p[1] ? ';' : '\0';
        snprintf(out, n, "%s certificate rejected: %s", c->is_server ? "client" : "server", info);
        return;
    }
    if (ret == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
        snprintf(out, n, "peer aborted the handshake with TLS alert %u (it rejected our "
                         "certificate or parameters)", (unsigned)c->ssl.in_msg[1]);
        return;
    }
    char buf[160];
    mbedtls_strerror(ret, buf, sizeof buf);
    snprintf(out, n, "%s (-0x%04x)", buf, (unsigned)-ret);
}

/* The first CN of crt's subject into out (FL_CERTS_NAME_MAX + 1 bytes):
 * 0, or FL_EAUTH when there is none or it is not a valid name. */
static int cert_cn(const mbedtls_x509_crt *crt, char *out)
{
    out[0] = '\0';
    for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next) {
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) != 0)
            continue;
        if (n->val.len == 0 || n->val.len > FL_CERTS_NAME_MAX)
            break;
        memcpy(out, n->val.p, n->val.len);
        out[n->val.len] = '\0';
        if (!fl_certs_valid_name(out)) {
            out[0] = '\0';
            break;
        }
        return 0;
    }
    return FL_EAUTH;
}

/* Copies the CN of the peer certificate into c->peer. */
static int take_identity(fl_tls_conn_t *c)
{
    c->peer[0] = '\0';
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&c->ssl);
    if (!crt)
        return c->is_server && c->ctx->no_client_cert ? 0 : FL_EAUTH;
    return cert_cn(crt, c->peer);
}

/* Client: counts a resumed handshake (the session's master secret is the
 * one offered) and keeps the session, with any new ticket, for the next
 * connection to the same address. */
static void keep_session(fl_tls_conn_t *c)
{
    fl_tls_ctx_t *x = c->ctx;
    const mbedtls_ssl_session *now = mbedtls_ssl_get_session_pointer(&c->ssl);
    int same_addr = strcmp(x->session_addr, c->addr) == 0;
    if (now && x->have_session && same_addr && memcmp(now->master, x->session.master, sizeof now->master) == 0)
        atomic_fetch_add(&x->resumed, 1);
    mbedtls_ssl_session_free(&x->session);
    mbedtls_ssl_session_init(&x->session);
    x->have_session = mbedtls_ssl_get_session(&c->ssl, &x->session) == 0;
    snprintf(x->session_addr, sizeof x->session_addr, "%s", c->addr);
}

/* What the handshake's last step returned (on the loop thread). */
static void handshake_result(fl_tls_conn_t *c, int ret)
{
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return;
    if (ret != 0) {
        char why[640];
        describe_failure(c, ret, why, sizeof why);
        FL_LOG_W(WHO, "handshake with %s refused: %s", c->addr, why);
        /* An alert mbedTLS sent is queued in libuv: the close below cancels
         * it unless the kernel took it at once, which on a live socket it does. */
        conn_fail(c, ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED ||
                             ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE
                         ? FL_EAUTH
                         : FL_ETLS);
        return;
    }
    if (take_identity(c) != 0) {
        FL_LOG_W(WHO, "handshake with %s refused: certificate has no usable common name "
                      "(1-64 of A-Z a-z 0-9 . _ -)", c->addr);
        conn_fail(c, FL_EAUTH);
        return;
    }
    uv_timer_stop(&c->timer);
    c->state = ST_OPEN;
    c->opened = 1;
    hs_uncount(c);
    if (!c->is_server)
        keep_session(c);
    if (c->is_server && !c->admitted && c->ctx->admit_timeout_ms)
        uv_timer_start(&c->timer, timer_fired, c->ctx->admit_timeout_ms, 0);
    FL_LOG_D(WHO, "%s: TLS open with '%s' (%s)", c->addr, c->peer, mbedtls_ssl_get_ciphersuite(&c->ssl));
    if (c->cbs.on_open)
        c->cbs.on_open(c, c->ud);
    if (c->state != ST_OPEN && c->state != ST_CLOSING)
        return;
    conn_pump(c);
    if (c->state == ST_OPEN)
        conn_read(c); /* application data may have come with the last handshake flight */
}

static void conn_handshake(fl_tls_conn_t *c) { handshake_result(c, mbedtls_ssl_handshake(&c->ssl)); }

/* ---- server handshakes in the thread pool ------------------------------- */

static void hs_dispatch(fl_tls_ctx_t *x);
static void hs_enqueue(fl_tls_conn_t *c);
static int hs_unread(fl_tls_conn_t *c);
static void hs_ready(fl_tls_conn_t *c);
static void hs_closed_by_peer(fl_tls_conn_t *c);
static int stash_rest(fl_tls_conn_t *c);

/* Runs on a worker: the handshake over the job's bytes, as far as they go. */
static void hs_work(uv_work_t *w)
{
    fl_tls_conn_t *c = w->data;
    c->in_job = 1;
    c->job_ret = mbedtls_ssl_handshake(&c->ssl);
    c->in_job = 0;
}

/* The job is back on the loop: its answer goes out, then the handshake
 * waits for more, fails, or is done. */
static void hs_after(uv_work_t *w, int status)
{
    fl_tls_conn_t *c = w->data;
    fl_tls_ctx_t *x = c->ctx;
    x->hs_jobs--;
    c->hs_busy = 0;
    /* The job's input is done with here, before a next job may start: what
     * it left unread is moved to the front of in. */
    fl_bytes_t in = c->job_in;
    memset(&c->job_in, 0, sizeof c->job_in);
    fl_bytes_consume(&in, c->job_in_off);
    c->job_in_off = 0;
    if (c->state == ST_HANDSHAKE && status == 0) {
        flush_job_out(c, "handshake with %s refused: write failed: %s");
        /* What the job left unread and what arrived meanwhile (application
         * data behind the client's Finished: a resumed handshake's client
         * sends its first message right after) is read once open. */
        if (c->job_ret == 0 && c->hs_in.len && c->state == ST_HANDSHAKE) {
            if (fl_bytes_append(&in, c->hs_in.data, c->hs_in.len) != 0)
                conn_fail(c, FL_ENOMEM);
            else
                fl_bytes_free(&c->hs_in);
        }
        c->in_ptr = in.data;
        c->in_len = in.len;
        c->in_feed = 1;
        if (c->state == ST_HANDSHAKE)
            handshake_result(c, c->job_ret);
        if (c->state == ST_HANDSHAKE && c->in_len && hs_unread(c) != 0)
            conn_fail(c, FL_ENOMEM);
        if (c->paused && c->state == ST_OPEN && stash_rest(c) != 0)
            conn_fail(c, FL_ENOMEM);
        c->in_ptr = NULL;
        c->in_len = 0;
        c->in_feed = 0;
        if (c->state == ST_HANDSHAKE)
            hs_ready(c);
        if (c->state == ST_HANDSHAKE && c->hs_eof && !c->hs_queued)
            hs_closed_by_peer(c);
        else if (c->state == ST_OPEN && c->hs_eof) /* reading had stopped: it ends here */
            conn_fail(c, c->hs_eof == UV_EOF ? FL_ECLOSED : FL_ENET);
    }
    fl_bytes_free(&in);
    if (c->state != ST_HANDSHAKE)
        fl_bytes_free(&c->job_out);
    conn_release(c); /* the job's reference */
    hs_dispatch(x);
}

/* Starts waiting connections' jobs while fewer than hs_max are out; those
 * whose handshake is under way go first, so handshakes finish instead of
 * all progressing together. Each waiting connection holds a reference. */
static void hs_dispatch(fl_tls_ctx_t *x)
{
    while (x->hs_jobs < x->hs_max && (x->hs_cont_head || x->hs_new_head)) {
        fl_tls_conn_t **head = x->hs_cont_head ? &x->hs_cont_head : &x->hs_new_head;
        fl_tls_conn_t **tail = x->hs_cont_head ? &x->hs_cont_tail : &x->hs_new_tail;
        fl_tls_conn_t *c = *head;
        *head = c->hs_next;
        if (!*head)
            *tail = NULL;
        c->hs_next = NULL;
        c->hs_queued = 0;
        if (c->state != ST_HANDSHAKE || !c->hs_in.len) {
            conn_release(c);
            continue;
        }
        if (c->hs_eof && !c->hs_started) {
            /* It gave up while waiting (its own timeout, under a storm): a
             * ServerHello and a signature for nobody would only make the
             * others wait longer. */
            hs_closed_by_peer(c);
            conn_release(c);
            continue;
        }
        c->job_in = c->hs_in; /* moved: the job's now */
        c->job_in_off = 0;
        memset(&c->hs_in, 0, sizeof c->hs_in);
        c->hs_busy = 1;
        c->hs_started = 1;
        c->hs_work.data = c;
        x->hs_jobs++;
        x->hs_stats.jobs++;
        if (x->hs_jobs > x->hs_stats.peak_jobs)
            x->hs_stats.peak_jobs = x->hs_jobs;
        int r = uv_queue_work(c->tcp.loop, &c->hs_work, hs_work, hs_after);
        if (r != 0) {
            x->hs_jobs--;
            c->hs_busy = 0;
            FL_LOG_W(WHO, "handshake with %s refused: cannot queue it: %s", c->addr, uv_strerror(r));
            conn_fail(c, FL_ENOMEM);
            conn_release(c);
        }
    }
}

/* The connection has handshake bytes for a job: it waits for its turn. */
static void hs_enqueue(fl_tls_conn_t *c)
{
    if (c->hs_busy || c->hs_queued)
        return;
    fl_tls_ctx_t *x = c->ctx;
    c->hs_queued = 1;
    c->handles++;
    fl_tls_conn_t **head = c->hs_started ? &x->hs_cont_head : &x->hs_new_head;
    fl_tls_conn_t **tail = c->hs_started ? &x->hs_cont_tail : &x->hs_new_tail;
    if (*tail)
        (*tail)->hs_next = c;
    else
        *head = c;
    *tail = c;
    hs_dispatch(x);
}

/* The peer closed during the handshake; reported once the bytes it sent
 * before (an alert, often) have been through a job. */
static void hs_closed_by_peer(fl_tls_conn_t *c)
{
    FL_LOG_W(WHO, "handshake with %s refused: connection closed by peer (%s)", c->addr, uv_strerror(c->hs_eof));
    conn_fail(c, c->hs_eof == UV_EOF ? FL_ECLOSED : FL_ENET);
}

/* A job is worth it once the bytes waiting end with a whole record: mbedTLS
 * reads records whole. */
static void hs_ready(fl_tls_conn_t *c)
{
    if (c->hs_in.len && c->rec_left == 0 && c->rh_got == 0)
        hs_enqueue(c);
}

/* mbedTLS answers WANT_READ only once it read everything, but should a job
 * leave bytes unread, they go before what arrived meanwhile. */
static int hs_unread(fl_tls_conn_t *c)
{
    if (fl_bytes_prepend(&c->hs_in, c->in_ptr, c->in_len) != 0)
        return FL_ENOMEM;
    c->in_len = 0;
    return 0;
}

/* Ciphertext of a handshake in the thread pool: kept for the next job. */
static int hs_take(fl_tls_conn_t *c, const unsigned char *p, size_t n)
{
    if (c->hs_in.len + n > HS_IN_MAX) {
        FL_LOG_W(WHO, "handshake with %s refused: more than %d bytes of handshake waiting", c->addr, HS_IN_MAX);
        return FL_ETLS;
    }
    if (fl_bytes_append(&c->hs_in, p, n) != 0)
        return FL_ENOMEM;
    hs_ready(c);
    return 0;
}

/* Sends an Error message and closes gracefully: used for protocol violations
 * so the peer learns why. */
static void conn_protocol_error(fl_tls_conn_t *c, int rc, const char *why)
{
    FL_LOG_W(WHO, "%s ('%s'): %s: %s; closing", c->addr, c->peer, fl_errname(rc), why);
    if (!c->reason)
        c->reason = rc;
    Fedopt__Error e = FEDOPT__ERROR__INIT;
    e.code = rc;
    e.message = (char *)why;
    Fedopt__Envelope m = FEDOPT__ENVELOPE__INIT;
    m.msg_case = FEDOPT__ENVELOPE__MSG_ERROR;
    m.error = &e;
    fl_tls_conn_send_msg(c, &m);
    fl_tls_conn_close(c);
}

/* Brings the context's count of bytes held in partial frames up to date with
 * this connection's reader (its frame buffer, once the header announced it,
 * and its spare chunk buffer). A connection that grows its share beyond the
 * budget is closed: returns 1 then. */
static int charge_frames(fl_tls_conn_t *c)
{
    uint64_t now = (c->rd.payload ? c->rd.need : 0) + (c->rd.spare ? c->rd.spare_cap : 0);
    fl_tls_ctx_t *x = c->ctx;
    x->frame_bytes = x->frame_bytes - c->frame_bytes + now;
    uint64_t before = c->frame_bytes;
    c->frame_bytes = now;
    if (x->frame_budget && now > before && x->frame_bytes > x->frame_budget) {
        FL_LOG_W(WHO, "%s ('%s'): a %u-byte frame would take partial frames beyond the budget of %llu bytes: closing",
                 c->addr, c->peer, c->rd.need, (unsigned long long)x->frame_budget);
        /* The frame buffer goes at once, not when the close completes. */
        fl_wire_reader_free(&c->rd);
        x->frame_bytes -= c->frame_bytes;
        c->frame_bytes = 0;
        conn_protocol_error(c, FL_ETOOBIG, "the server's memory for partial frames is taken");
        return 1;
    }
    return 0;
}

void fl_tls_conn_admit(fl_tls_conn_t *c)
{
    if (!c || c->admitted)
        return;
    c->admitted = 1;
    c->rd.max_frame = c->ctx->max_frame;
    if (c->state == ST_OPEN)
        uv_timer_stop(&c->timer);
}

uint64_t fl_tls_ctx_frame_bytes(const fl_tls_ctx_t *ctx) { return ctx ? ctx->frame_bytes : 0; }

/* mbedtls_ssl_read ended the stream or failed (ret is neither data nor
 * WANT_READ): the connection ends, saying why. */
static void read_end(fl_tls_conn_t *c, int ret)
{
    if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        /* mbedTLS wanted to answer the peer (an alert: renegotiation is
         * refused) while a record of ours was still in flight; the
         * ciphertext it left unread would be lost, so the connection ends. */
        FL_LOG_W(WHO, "%s ('%s'): peer sent a TLS message that needs an answer in the middle of a "
                      "transfer (renegotiation?); closing", c->addr, c->peer);
        conn_fail(c, FL_ETLS);
        return;
    }
    if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0) {
        if (!fl_wire_reader_idle(&c->rd) || c->st.in_tensor) {
            FL_LOG_W(WHO, "%s ('%s'): peer closed in the middle of a %s", c->addr, c->peer,
                     c->st.in_tensor ? "tensor transfer" : "frame");
            conn_fail(c, FL_ETRUNCATED);
        } else {
            FL_LOG_D(WHO, "%s: peer closed", c->addr);
            conn_fail(c, 0);
        }
        return;
    }
    char buf[160];
    mbedtls_strerror(ret, buf, sizeof buf);
    FL_LOG_W(WHO, "%s ('%s'): TLS read failed: %s", c->addr, c->peer, buf);
    conn_fail(c, FL_ETLS);
}

/* Acts on what fl_wire_reader_advance returned (rc, and the frame when it is
 * 1, which this takes): a complete frame goes to the application. Returns 1
 * when reading must stop (the connection is closing), else 0. */
static int deliver(fl_tls_conn_t *c, int rc, uint8_t *frame, uint32_t len)
{
    if (rc < 0) {
        char why[128];
        const uint8_t *h = c->rd.hdr;
        uint32_t claimed = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (rc == FL_ETOOBIG)
            snprintf(why, sizeof why, "frame of %u bytes exceeds the limit of %u bytes", claimed,
                     c->rd.max_frame);
        else if (rc == FL_EPROTO)
            snprintf(why, sizeof why, "zero-length frame");
        else
            snprintf(why, sizeof why, "cannot read frame: %s", fl_strerror(rc));
        conn_protocol_error(c, rc, why);
        return 1;
    }
    if (rc == 0)
        return charge_frames(c);
    if (rc == 2) {
        /* A tensor chunk that arrived in place (next_dst). */
        fl_wire_stream_placed(&c->st, len);
        return charge_frames(c);
    }
    fl_wire_event_t ev;
    char why[256] = "";
    rc = fl_wire_stream_frame(&c->st, frame, len, &ev, why, sizeof why);
    /* Keep the buffer for the next chunk while a tensor is arriving;
     * otherwise an idle connection holds no frame memory. */
    if (c->st.in_tensor) {
        fl_wire_reader_recycle(&c->rd, frame, len);
    } else {
        free(frame);
        fl_wire_reader_trim(&c->rd);
    }
    if (rc) {
        conn_protocol_error(c, rc, why);
        return 1;
    }
    charge_frames(c); /* only ever lower here: a complete frame was handed over */
    if (ev.kind != FL_WIRE_EV_NONE && c->cbs.on_message)
        c->cbs.on_message(c, &ev, c->ud);
    fl_wire_event_clear(&ev);
    return 0;
}

/* Where the next plaintext goes: the frame reader's place, and between
 * frames, when the next one should be a chunk of the tensor being received,
 * that chunk's place in the tensor (fl_wire_reader_expect): mbedTLS then
 * copies the plaintext there and no one copies it again. */
static void next_dst(fl_tls_conn_t *c, unsigned char **dst, size_t *want)
{
    if (fl_wire_reader_idle(&c->rd) && !c->rd.place) {
        uint8_t pre[FL_WIRE_PREFIX_MAX], *place;
        size_t plen, n;
        if (fl_wire_stream_expect(&c->st, pre, &plen, &place, &n))
            fl_wire_reader_expect(&c->rd, pre, plen, place, n);
    }
    fl_wire_reader_next(&c->rd, dst, want);
}

/* Decrypts what is available straight into the frame reader and delivers
 * complete frames, until mbedTLS needs more ciphertext. */
static void conn_read(fl_tls_conn_t *c)
{
    while (c->state == ST_OPEN && !c->paused) {
        unsigned char *dst;
        size_t want;
        next_dst(c, &dst, &want);
        int ret = mbedtls_ssl_read(&c->ssl, dst, want);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ)
            break;
        if (ret <= 0) {
            read_end(c, ret);
            return;
        }
        uint8_t *frame = NULL;
        uint32_t len = 0;
        int rc = fl_wire_reader_advance(&c->rd, (size_t)ret, &frame, &len);
        if (deliver(c, rc, frame, len))
            return;
    }
}

/* ---- server records in the thread pool ----------------------------------- */

/* A server connection's records are decrypted by jobs in libuv's thread
 * pool, one job per connection at a time, in order. The loop polls the
 * socket: libuv reads the first bytes (at most the rest of a record and the
 * next header, read_want) straight into mbedTLS's record buffer; a small
 * record is decrypted there and then on the loop (REC_INLINE_MAX), anything
 * larger goes to a job with reading stopped. The job runs mbedtls_ssl_read
 * straight into the frame reader, and its receive callback (rec_recv) takes
 * the rest from the socket itself, exactly as much as mbedTLS asks for,
 * until the kernel has no more (EAGAIN), REC_JOB_MAX bytes, the end of a
 * frame, or a large frame buffer to be charged (REC_CHARGE_MIN). The loop
 * then hands the frame to the application and starts the next job or
 * polls again. The loop never touches the ssl context or the frame reader
 * while a job runs; sending waits for the job (rec_pump), and bytes written
 * meanwhile by libuv are in the kernel's hands (a socket is safe to read
 * and write from two threads).
 *
 * No ciphertext is staged: what a job does not read stays in the kernel,
 * so reading stops at record boundaries and a paused connection holds no
 * more than on the loop. */

static void rec_after(uv_work_t *w, int status);

/* A job's receive: first what libuv had read (in_ptr), then the socket. */
static int rec_recv(fl_tls_conn_t *c, unsigned char *buf, size_t len)
{
    if (c->in_len)
        return take_in(c, buf, len);
    if (c->job_bytes >= REC_JOB_MAX)
        return MBEDTLS_ERR_SSL_WANT_READ; /* the loop polls again */
    /* One read per record where the kernel has them: asked for a header,
     * read on into the record buffer (the body lands where mbedTLS will ask
     * for it); asked for a body, take the next header along (moved into
     * place when asked for). What is read beyond the request waits in
     * in_ptr, in mbedTLS's buffer beyond the current record. */
    size_t ask = len, room = 0;
    unsigned char *tail = ssl_in_tail(c, &room);
    if (tail == buf && room > len)
        ask = c->ssl.in_left == 0 ? room : (len + REC_HDR < room ? len + REC_HDR : room);
    ssize_t n;
    do
        n = recv(c->job_fd, buf, ask, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        c->job_bytes += (size_t)n;
        if ((size_t)n > len) {
            c->in_ptr = buf + len;
            c->in_len = (size_t)n - len;
            return (int)len;
        }
        return (int)n;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return MBEDTLS_ERR_SSL_WANT_READ;
    c->job_sock = n == 0 ? UV_EOF : -errno;
    return MBEDTLS_ERR_NET_RECV_FAILED;
}

/* Runs on a worker: decrypts into the frame reader until the socket runs
 * dry, a frame completes, or a large frame buffer starts. */
static void rec_work(uv_work_t *w)
{
    fl_tls_conn_t *c = w->data;
    c->in_job = 2;
    c->job_ret = MBEDTLS_ERR_SSL_WANT_READ;
    c->job_rc = 0;
    for (;;) {
        unsigned char *dst;
        size_t want;
        next_dst(c, &dst, &want);
        int had_payload = c->rd.payload != NULL;
        int ret = mbedtls_ssl_read(&c->ssl, dst, want);
        if (ret <= 0) {
            c->job_ret = ret;
            break;
        }
        int rc = fl_wire_reader_advance(&c->rd, (size_t)ret, &c->job_frame, &c->job_frame_len);
        if (rc == 2) {
            /* A chunk decrypted in place: checksummed here, and on to the
             * next frame without a trip through the loop (the loop touches
             * neither the reader nor the stream while a job runs). */
            fl_wire_stream_placed(&c->st, c->job_frame_len);
            continue;
        }
        if (rc != 0 || (!had_payload && c->rd.payload && c->rd.need > REC_CHARGE_MIN)) {
            c->job_ret = REC_DATA;
            c->job_rc = rc;
            break;
        }
    }
    c->in_job = 0;
}

/* libuv polls the socket exactly when nothing else reads it: the
 * connection is open, not paused, no job runs, and mbedTLS has taken
 * everything read so far (alloc_cb reads into its record buffer). */
static void rec_flow(fl_tls_conn_t *c)
{
    int want = c->state == ST_OPEN && !c->paused && !c->rec_busy && !c->job_held && !c->in_len &&
               mbedtls_ssl_get_bytes_avail(&c->ssl) == 0;
    if (want && !c->reading) {
        c->reading = 1;
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
            conn_fail(c, FL_ENET);
    } else if (!want && c->reading) {
        c->reading = 0;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* Queues a job that works the connection's socket itself (a record job or
 * a send job): it takes the connection's one job slot (rec_busy), so libuv
 * stops reading and nothing else touches the ssl context, and keeps the
 * connection alive until its after-callback. Returns 0, or -1 with the
 * connection failed. */
static int job_queue(fl_tls_conn_t *c, uv_work_cb work, uv_after_work_cb after, const char *what)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) {
        conn_fail(c, FL_ENET);
        return -1;
    }
    c->job_fd = fd;
    c->job_sock = 0;
    c->job_bytes = 0;
    c->rec_busy = 1;
    rec_flow(c); /* stops libuv's reading */
    c->handles++; /* the job's reference */
    c->hs_work.data = c;
    int r = uv_queue_work(c->tcp.loop, &c->hs_work, work, after);
    if (r != 0) {
        c->rec_busy = 0;
        FL_LOG_W(WHO, "%s ('%s'): cannot queue a %s job: %s; closing", c->addr, c->peer, what, uv_strerror(r));
        conn_fail(c, FL_ENOMEM);
        conn_release(c);
        return -1;
    }
    return 0;
}

/* Starts a record job for the connection. */
static void rec_dispatch(fl_tls_conn_t *c)
{
    if (c->rec_busy || c->state != ST_OPEN || c->paused)
        return;
    fl_tls_ctx_t *x = c->ctx;
    c->job_wr_pending = c->wr_busy || c->wr_done;
    c->rd.max_frame = c->admitted ? x->max_frame : x->preadmit_max_frame;
    if (job_queue(c, rec_work, rec_after, "record"))
        return;
    x->rec_stats.jobs++;
    if (++x->rec_stats.jobs_now > x->rec_stats.peak_jobs)
        x->rec_stats.peak_jobs = x->rec_stats.jobs_now;
}

/* Carries on when neither a job nor libuv reads: bytes or plaintext left
 * over (a frame ended, or the application paused, in their middle) go to
 * a job, otherwise libuv polls. */
static void rec_continue(fl_tls_conn_t *c)
{
    if (c->rec_busy || c->state != ST_OPEN || c->paused)
        return;
    if (c->job_held) {
        uint8_t *frame = c->job_frame;
        c->job_frame = NULL;
        c->job_held = 0;
        c->in_feed = 1;
        deliver(c, 1, frame, c->job_frame_len);
        c->in_feed = 0;
        if (c->state != ST_OPEN || c->paused)
            return;
    }
    if (c->in_len || mbedtls_ssl_get_bytes_avail(&c->ssl) > 0)
        rec_dispatch(c);
    else
        rec_flow(c);
}

/* The job is back: its alerts go out, its frame to the application; then
 * the next job, or libuv polls again. */
static void rec_after(uv_work_t *w, int status)
{
    fl_tls_conn_t *c = w->data;
    fl_tls_ctx_t *x = c->ctx;
    c->rec_busy = 0;
    x->rec_stats.jobs_now--;
    if (!c->in_len)
        fl_bytes_free(&c->job_in); /* a copy of bytes libuv read into the shared buffer */
    uint8_t *frame = c->job_frame;
    c->job_frame = NULL;
    if (c->state == ST_OPEN && status == 0) {
        flush_job_out(c, "%s: write failed: %s");
        c->in_feed = 1;
        if (c->state != ST_OPEN)
            free(frame); /* the write above failed */
        else if (c->job_ret == REC_DATA && c->job_rc == 1 && c->paused) {
            /* paused meanwhile (from another connection's callback): no
             * message until the resume (rec_continue) */
            c->job_frame = frame;
            c->job_held = 1;
        } else if (c->job_ret == REC_DATA)
            deliver(c, c->job_rc, frame, c->job_frame_len);
        else if (c->job_ret == MBEDTLS_ERR_SSL_WANT_READ)
            charge_frames(c);
        else if (c->job_sock)
            read_failed(c, c->job_sock);
        else
            read_end(c, c->job_ret);
        frame = NULL; /* freed, held, delivered, or there was none */
        c->in_feed = 0;
    } else if (status != 0 && c->state == ST_OPEN) {
        conn_fail(c, FL_ECANCELED);
    }
    free(frame);
    if (c->state != ST_OPEN) {
        fl_bytes_free(&c->job_out);
        c->in_ptr = NULL;
        c->in_len = 0;
    }
    if (c->rec_pump && (c->state == ST_OPEN || c->state == ST_CLOSING)) {
        c->rec_pump = 0;
        conn_pump(c);
    }
    rec_continue(c);
    if (c->state == ST_CLOSED && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, handle_closed); /* deferred by close_handles */
    conn_release(c); /* the job's reference */
}

/* Ciphertext libuv read for an open server connection with record jobs
 * (p: in mbedTLS's record buffer, or the context's shared one). */
static void rec_take(fl_tls_conn_t *c, const unsigned char *p, size_t n, size_t body)
{
    if (p == c->ctx->rbuf) {
        /* The shared buffer is the next read's: a job gets a copy. */
        fl_bytes_free(&c->job_in);
        if (fl_bytes_append(&c->job_in, p, n) != 0) {
            conn_fail(c, FL_ENOMEM);
            return;
        }
        p = c->job_in.data;
    }
    c->in_ptr = p;
    c->in_len = n;
    if (body <= REC_INLINE_MAX) {
        /* A small record: decrypted here (see REC_INLINE_MAX). */
        c->ctx->rec_stats.inline_reads++;
        c->in_feed = 1;
        conn_read(c);
        c->in_feed = 0;
        if (c->state != ST_OPEN) {
            c->in_ptr = NULL;
            c->in_len = 0;
        }
        /* A pause leaves the rest (in_ptr) for a job after the resume. */
        if (!c->in_len && !c->rec_busy)
            fl_bytes_free(&c->job_in);
        if (c->in_len && !c->paused)
            rec_dispatch(c);
        else
            rec_flow(c);
        return;
    }
    rec_dispatch(c);
}

/* ---- server sending in the thread pool ------------------------------------ */

/* A server connection's queued plaintext beyond SND_INLINE_MAX (a model's
 * offer to a client) is encrypted by a job in libuv's thread pool, sharing
 * the connection's one job slot (rec_busy) with the record jobs, so the
 * ssl context has one user at a time. The job runs mbedtls_ssl_write over
 * the queue as it stood at dispatch and its send callback (snd_send) writes
 * each record to the socket itself while the kernel takes it, up to
 * SND_JOB_MAX bytes. The record it could not write stays in mbedTLS's
 * output buffer, exactly as bio_send leaves one on the loop: snd_after hands
 * it to libuv (wr_busy), whose write_done pumps again, so between two jobs
 * the loop polls the connection, reads what the peer sent, and other
 * connections' jobs get the pool. Reading is stopped while the job runs.
 * bench_tls's download lines measure the cost per byte; test_tls's
 * heartbeats-during-downloads test shows the loop answering meanwhile. */

/* A send job's send callback: the socket directly, never blocking. */
static int snd_send(fl_tls_conn_t *c, const unsigned char *buf, size_t len)
{
    if (c->wr_done) {
        /* mbedTLS asks again for the bytes libuv wrote after the last job. */
        c->wr_done = 0;
        if (buf != c->wr_ptr || len < c->wr_len)
            return MBEDTLS_ERR_SSL_INTERNAL_ERROR;
        return (int)c->wr_len;
    }
    if (c->job_bytes < SND_JOB_MAX) {
        ssize_t n;
        do
            n = send(c->job_fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            c->job_bytes += (size_t)n;
            return (int)n; /* mbedTLS calls again for the rest of a partial write */
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            c->job_sock = -errno; /* libuv's error codes are negated errnos here */
            return MBEDTLS_ERR_NET_SEND_FAILED;
        }
    }
    c->job_wr_ptr = buf;
    c->job_wr_len = len;
    return MBEDTLS_ERR_SSL_WANT_WRITE;
}

/* Runs on a worker: encrypts and writes the queue from q_head up to
 * job_q_last until the kernel is full or the job's share is written. Only
 * q->off moves; the loop frees what was sent (snd_after). */
static void snd_work(uv_work_t *w)
{
    fl_tls_conn_t *c = w->data;
    c->in_job = 3;
    c->job_ret = 0;
    c->job_plain = 0;
    for (sendq_t *q = c->q_head;;) {
        size_t left = q->buf->len - q->off;
        if (left == 0) {
            if (q == c->job_q_last)
                break;
            q = q->next;
            continue;
        }
        /* the same arguments after WANT_WRITE as conn_pump would give */
        size_t n = left < 16384 ? left : 16384;
        int ret = mbedtls_ssl_write(&c->ssl, q->buf->data + q->off, n);
        if (ret < 0) {
            c->job_ret = ret;
            break;
        }
        q->off += (size_t)ret;
        c->job_plain += (size_t)ret;
    }
    c->in_job = 0;
}

static void snd_after(uv_work_t *w, int status);

static void snd_dispatch(fl_tls_conn_t *c)
{
    c->job_q_last = c->q_tail;
    c->job_plain = 0;
    c->job_wr_ptr = NULL;
    c->job_wr_len = 0;
    if (job_queue(c, snd_work, snd_after, "send"))
        return;
    c->ctx->rec_stats.send_jobs++;
    c->ctx->rec_stats.send_jobs_now++;
}

/* The job is back: the queue gives up what was sent; the record the job
 * left goes to libuv, or the pump carries on; then reading resumes. */
static void snd_after(uv_work_t *w, int status)
{
    fl_tls_conn_t *c = w->data;
    fl_tls_ctx_t *x = c->ctx;
    c->rec_busy = 0;
    c->rec_pump = 0; /* pumped below, or by write_done */
    x->rec_stats.send_jobs_now--;
    c->q_bytes -= c->job_plain;
    while (c->q_head && c->q_head->off == c->q_head->buf->len) {
        sendq_t *q = c->q_head;
        c->q_head = q->next;
        if (!c->q_head)
            c->q_tail = NULL;
        fl_buf_unref(q->buf);
        free(q);
    }
    if (c->state == ST_OPEN || c->state == ST_CLOSING) {
        if (status != 0) {
            conn_fail(c, FL_ECANCELED);
        } else if (c->job_ret == MBEDTLS_ERR_SSL_WANT_WRITE && c->job_wr_len) {
            uv_buf_t b = uv_buf_init((char *)c->job_wr_ptr, (unsigned)c->job_wr_len);
            c->wreq.data = c;
            int r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_done);
            if (r < 0) {
                send_failed(c, r);
            } else {
                c->wr_busy = 1;
                c->wr_ptr = c->job_wr_ptr;
                c->wr_len = c->job_wr_len;
            }
        } else if (c->job_ret < 0 && c->job_sock) {
            FL_LOG_W(WHO, "%s: write failed: %s", c->addr, uv_strerror(c->job_sock));
            conn_fail(c, FL_ENET);
        } else if (c->job_ret < 0) {
            log_mbed(FL_LOG_WARN, "TLS write failed", c->job_ret);
            conn_fail(c, FL_ETLS);
        } else {
            conn_pump(c); /* what was queued meanwhile, the close, or on_drain */
        }
    }
    rec_continue(c);
    if (c->state == ST_CLOSED && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, handle_closed); /* deferred by close_handles */
    conn_release(c); /* the job's reference */
}

/* Encrypts queued plaintext record by record while the kernel takes it;
 * a record it does not take waits in mbedTLS's buffer for write_done. */
static void conn_pump(fl_tls_conn_t *c)
{
    if (c->state != ST_OPEN && c->state != ST_CLOSING)
        return;
    if (c->wr_busy)
        return; /* write_done calls again */
    if (c->rec_busy) {
        c->rec_pump = 1; /* a job has the ssl context: its after-callback calls again */
        return;
    }
    /* Much to send, and nothing of ours queued in libuv (the job writes the
     * socket itself, and must not overtake those bytes): a send job. */
    if (c->ctx->rec_jobs && c->q_bytes > SND_INLINE_MAX && !c->shutting &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        snd_dispatch(c);
        return;
    }
    c->burst = 0;
    while (c->q_head) {
        sendq_t *q = c->q_head;
        size_t left = q->buf->len - q->off;
        /* After WANT_WRITE mbedTLS expects the same arguments again: q->off
         * has not moved, so n is the same. */
        size_t n = left < 16384 ? left : 16384;
        c->in_pump = 1;
        int ret = mbedtls_ssl_write(&c->ssl, q->buf->data + q->off, n);
        c->in_pump = 0;
        if (c->state == ST_CLOSED)
            return; /* bio_send failed and said why */
        if (ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            return; /* write_done resumes */
        if (ret < 0) {
            log_mbed(FL_LOG_WARN, "TLS write failed", ret);
            conn_fail(c, FL_ETLS);
            return;
        }
        q->off += (size_t)ret;
        c->q_bytes -= (size_t)ret;
        if (q->off == q->buf->len) {
            c->q_head = q->next;
            if (!c->q_head)
                c->q_tail = NULL;
            fl_buf_unref(q->buf);
            free(q);
        }
    }
    if (c->state == ST_CLOSING)
        finish_close(c); /* the shutdown waits for the writes in flight */
    else if (c->cbs.on_drain)
        c->cbs.on_drain(c, c->ud);
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
    fl_tls_conn_t *c = req->data;
    (void)status;
    conn_fail(c, 0);
}

/* Everything queued is out: say close_notify, then shut the socket down. */
static void finish_close(fl_tls_conn_t *c)
{
    if (c->shutting)
        return;
    c->shutting = 1;
    mbedtls_ssl_close_notify(&c->ssl);
    if (c->state == ST_CLOSED)
        return;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, shutdown_done) != 0)
        conn_fail(c, 0);
}

static void timer_fired(uv_timer_t *t)
{
    fl_tls_conn_t *c = t->data;
    if (c->state == ST_CLOSING) {
        FL_LOG_D(WHO, "%s: graceful close timed out", c->addr);
        conn_fail(c, 0);
    } else if (c->state == ST_OPEN && c->is_server && !c->admitted) {
        FL_LOG_W(WHO, "%s ('%s'): no Hello within %u ms: closing", c->addr, c->peer,
                 c->ctx->admit_timeout_ms);
        conn_protocol_error(c, FL_ETIMEDOUT, "no Hello in time");
    } else if (c->state == ST_HANDSHAKE || c->state == ST_CONNECTING) {
        FL_LOG_W(WHO, "handshake with %s refused: timed out after %u ms", c->addr,
                 c->ctx->handshake_timeout_ms);
        conn_fail(c, FL_ETIMEDOUT);
    }
}

/* How much the next read may take: the rest of the current TLS record and
 * the next record's header, never more. A read then never runs ahead into
 * records the application may not want yet: when it pauses reading (the
 * server does so for every upload beyond its buffers, on a thousand
 * connections at once), at most a few header bytes per connection wait in
 * memory (stash_rest) and the rest stays in the kernel, where back-pressure
 * holds it. The lengths come from the peer and are not trusted: they only
 * size reads; mbedTLS checks the records. */
static size_t read_want(const fl_tls_conn_t *c)
{
    size_t want = c->rec_left + (REC_HDR - c->rh_got);
    return want < READ_BUF ? want : READ_BUF;
}

/* Follows the record boundaries through ciphertext as it is read; returns
 * how many records these bytes completed. */
static size_t track_records(fl_tls_conn_t *c, const unsigned char *p, size_t n)
{
    size_t done = 0;
    while (n > 0) {
        if (c->rec_left > 0) {
            size_t k = n < c->rec_left ? n : c->rec_left;
            c->rec_left -= k;
            p += k;
            n -= k;
            done += c->rec_left == 0;
            continue;
        }
        c->rh[c->rh_got++] = *p++;
        n--;
        if (c->rh_got == REC_HDR) {
            c->rec_left = (size_t)c->rh[3] << 8 | c->rh[4];
            c->rh_got = 0;
            done += c->rec_left == 0;
        }
    }
    return done;
}

/* Where mbedTLS will ask for the next ciphertext of an open connection
 * whose input it has taken whole (conn_read ran to WANT_READ): its record
 * buffer at in_hdr + in_left (mbedtls_ssl_fetch_input in mbedTLS 2.x reads
 * there, and only there), with *room bytes to the buffer's end. NULL when
 * this mbedTLS keeps the fields private. */
static unsigned char *ssl_in_tail(fl_tls_conn_t *c, size_t *room)
{
#if MBEDTLS_VERSION_MAJOR == 2 && !defined(MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH)
    mbedtls_ssl_context *ssl = &c->ssl;
    if (!ssl->in_buf || !ssl->in_hdr)
        return NULL;
    unsigned char *at = ssl->in_hdr + ssl->in_left, *end = ssl->in_buf + MBEDTLS_SSL_IN_BUFFER_LEN;
    if (at >= end)
        return NULL;
    *room = (size_t)(end - at);
    return at;
#else
    (void)c;
    (void)room;
    return NULL;
#endif
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    fl_tls_conn_t *c = h->data;
    (void)suggested;
    size_t want = read_want(c), room = 0;
    if (c->state == ST_OPEN && !c->rec_busy && !c->in_len && mbedtls_ssl_get_bytes_avail(&c->ssl) == 0) {
        /* Straight into mbedTLS's record buffer, where bio_recv (or a
         * record job's rec_recv) then finds the bytes in place. */
        unsigned char *at = ssl_in_tail(c, &room);
        if (at) {
            *buf = uv_buf_init((char *)at, (unsigned)(want < room ? want : room));
            return;
        }
    }
    /* One read buffer per context: a read callback consumes it entirely
     * (or stashes the rest) before the loop reads into it again. */
    if (c->ctx->read_busy) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    c->ctx->read_busy = 1;
    *buf = uv_buf_init((char *)c->ctx->rbuf, (unsigned)want);
}

/* Keeps unconsumed ciphertext when reading pauses mid-buffer. */
static int stash_rest(fl_tls_conn_t *c)
{
    if (c->in_len == 0)
        return 0;
    unsigned char *s;
    if (c->in_len <= sizeof c->stash_small) {
        /* in_ptr may point into stash_small itself (a resumed stash fed
         * again): memmove. */
        memmove(c->stash_small, c->in_ptr, c->in_len);
        s = c->stash_small;
    } else {
        if (!(s = malloc(c->in_len)))
            return FL_ENOMEM;
        memcpy(s, c->in_ptr, c->in_len);
    }
    if (c->stash != c->stash_small)
        free(c->stash);
    c->stash = s;
    c->stash_len = c->in_len;
    c->in_ptr = NULL;
    c->in_len = 0;
    return 0;
}

/* TLS records start with a content type 20..23 and major version 3; anything
 * else as the first byte means the peer does not speak TLS. */
static int looks_like_tls(const unsigned char *p, size_t n)
{
    if (n >= 1 && p[0] != 22)
        return 0;
    if (n >= 2 && p[1] != 3)
        return 0;
    return 1;
}

static void feed(fl_tls_conn_t *c)
{
    c->in_feed = 1;
    if (c->state == ST_HANDSHAKE)
        conn_handshake(c);
    else if (c->state == ST_OPEN)
        conn_read(c);
    if (c->paused && c->state == ST_OPEN && stash_rest(c) != 0)
        conn_fail(c, FL_ENOMEM);
    c->in_ptr = NULL;
    c->in_len = 0;
    c->in_feed = 0;
}

/* The socket reported an error or the peer's close (nread < 0). */
static void read_failed(fl_tls_conn_t *c, int nread)
{
    if (c->state == ST_HANDSHAKE)
        FL_LOG_W(WHO, "handshake with %s refused: connection closed by peer (%s)", c->addr, uv_strerror(nread));
    else if (c->state == ST_OPEN && (!fl_wire_reader_idle(&c->rd) || c->st.in_tensor))
        FL_LOG_W(WHO, "%s ('%s'): connection lost mid-transfer (%s)", c->addr, c->peer, uv_strerror(nread));
    conn_fail(c, nread == UV_EOF ? FL_ECLOSED : FL_ENET);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    fl_tls_conn_t *c = s->data;
    if (buf->base == (char *)c->ctx->rbuf)
        c->ctx->read_busy = 0;
    if (nread == 0 || c->state == ST_CLOSED)
        return;
    if (nread < 0) {
        if (c->state == ST_HANDSHAKE && (c->hs_busy || c->hs_queued)) {
            c->hs_eof = (int)nread;
            uv_read_stop(s);
            c->reading = 0;
            return;
        }
        read_failed(c, (int)nread);
        return;
    }
    int first = !c->rx_any;
    c->rx_any = 1;
    if (first && c->state == ST_HANDSHAKE && c->is_server &&
        !looks_like_tls((const unsigned char *)buf->base, (size_t)nread)) {
        FL_LOG_W(WHO, "handshake with %s refused: peer is not speaking TLS (plaintext?)", c->addr);
        conn_fail(c, FL_ETLS);
        return;
    }
    size_t body = c->rec_left; /* of the record these bytes continue */
    track_records(c, (const unsigned char *)buf->base, (size_t)nread);
    if (c->state == ST_OPEN && c->ctx->rec_jobs) {
        rec_take(c, (const unsigned char *)buf->base, (size_t)nread, body);
        return;
    }
    if (c->state == ST_HANDSHAKE && c->is_server && c->ctx->hs_max) {
        int rc = hs_take(c, (const unsigned char *)buf->base, (size_t)nread);
        if (rc)
            conn_fail(c, rc);
        return;
    }
    c->in_ptr = (const unsigned char *)buf->base;
    c->in_len = (size_t)nread;
    feed(c);
}

static void set_addr(fl_tls_conn_t *c, const struct sockaddr *sa)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
        snprintf(c->addr, sizeof c->addr, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
        snprintf(c->addr, sizeof c->addr, "[%s]:%d", ip, port);
    }
}

static fl_tls_conn_t *conn_new(uv_loop_t *loop, fl_tls_ctx_t *ctx, const fl_tls_cbs_t *cbs,
                               void *ud, int is_server)
{
    fl_tls_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ctx = ctx;
    if (cbs)
        c->cbs = *cbs;
    c->ud = ud;
    c->is_server = is_server;
    mbedtls_ssl_init(&c->ssl);
    if (mbedtls_ssl_setup(&c->ssl, &ctx->conf) != 0) {
        mbedtls_ssl_free(&c->ssl);
        free(c);
        return NULL;
    }
    mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
    fl_wire_reader_init(&c->rd, is_server ? ctx->preadmit_max_frame : ctx->max_frame);
    fl_wire_stream_init(&c->st, is_server ? FL_WIRE_SERVER : FL_WIRE_CLIENT, ctx->max_tensor);
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles = 2;
    if (++ctx->nconns > ctx->peak_conns)
        ctx->peak_conns = ctx->nconns;
    snprintf(c->addr, sizeof c->addr, "?");
    return c;
}

/* ---- server ------------------------------------------------------------- */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Open descriptors of this process (/proc/self/fd; a probe of the first 4096
 * where there is no /proc). */
static size_t count_open_fds(void)
{
    size_t n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        return n ? n - 1 : 0; /* less the directory's own descriptor */
    }
    for (int fd = 0; fd < 4096; fd++)
        n += fcntl(fd, F_GETFD) != -1;
    return n;
}

/* 1 when accepting one more connection would leave fewer than FD_MARGIN
 * descriptors under the open-file limit. */
static int fds_short(const fl_tls_server_t *s)
{
    return s->fd_limit && (uint64_t)s->fd_base + s->ctx->nconns + 1 + FD_MARGIN > s->fd_limit;
}

/* At most one line per ACCEPT_LOG_EVERY_S about refused or failed accepts,
 * with the count since the last one: a flood of them must not flood the log. */
static int accept_log_due(fl_tls_server_t *s)
{
    double now = mono_s();
    if (s->last_log > 0 && now - s->last_log < ACCEPT_LOG_EVERY_S)
        return 0;
    s->last_log = now;
    return 1;
}

static void accept_one(fl_tls_server_t *s);

static void backoff_fired(uv_timer_t *t)
{
    fl_tls_server_t *s = t->data;
    if (fds_short(s)) {
        s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
        uv_timer_start(&s->backoff, backoff_fired, s->backoff_ms, 0);
        return;
    }
    double waited = mono_s() - s->paused_at;
    s->stats.paused_s += waited;
    s->paused = 0;
    FL_LOG_I(WHO, "accepting again after %.1f s (%zu connections open)", waited, s->ctx->nconns);
    accept_one(s); /* the pending connection; uv_accept resumes polling */
}

static void on_connection(uv_stream_t *ls, int status)
{
    fl_tls_server_t *s = ls->data;
    if (status < 0) {
        /* libuv reports a failed accept(2) here (EMFILE or ENFILE when it
         * could not shed the pending connections itself). */
        s->stats.accept_errors++;
        s->unlogged++;
        if (accept_log_due(s)) {
            FL_LOG_W(WHO, "accept failed: %s (%llu failures in all, %llu since the last line)", uv_strerror(status),
                     (unsigned long long)s->stats.accept_errors, (unsigned long long)s->unlogged);
            s->unlogged = 0;
        }
        return;
    }
    if (fds_short(s)) {
        /* Out of descriptors (or nearly): leave the connection pending.
         * libuv stops polling the listener until uv_accept, so the loop does
         * not spin and later arrivals wait in the kernel's backlog instead of
         * being accepted into an EMFILE and dropped without a word. */
        if (!s->paused) {
            s->paused = 1;
            s->paused_at = mono_s();
            s->stats.pauses++;
            s->unlogged++;
            s->backoff_ms = BACKOFF_MIN_MS;
            if (accept_log_due(s)) {
                FL_LOG_W(WHO, "open-file limit %llu reached (%zu connections, %zu other descriptors): not "
                              "accepting until connections close (%llu pauses in all, %llu since the last line); "
                              "raise the limit (LimitNOFILE=, ulimit -n)",
                         (unsigned long long)s->fd_limit, s->ctx->nconns, s->fd_base,
                         (unsigned long long)s->stats.pauses, (unsigned long long)s->unlogged);
                s->unlogged = 0;
            }
            uv_timer_start(&s->backoff, backoff_fired, s->backoff_ms, 0);
        }
        return;
    }
    accept_one(s);
}

static void accept_one(fl_tls_server_t *s)
{
    uv_stream_t *ls = (uv_stream_t *)&s->tcp;
    s->stats.accepted++;
    fl_tls_conn_t *c = conn_new(ls->loop, s->ctx, &s->cbs, s->ud, 1);
    if (!c) {
        /* Accept and drop, or the listener would spin on the pending one. */
        uv_tcp_t *t = malloc(sizeof *t);
        if (t && uv_tcp_init(ls->loop, t) == 0) {
            if (uv_accept(ls, (uv_stream_t *)t) == 0)
                FL_LOG_E(WHO, "out of memory: dropping a new connection");
            uv_close((uv_handle_t *)t, free_handle);
        } else {
            free(t);
        }
        return;
    }
    c->state = ST_HANDSHAKE;
    c->hs_counted = 1;
    s->ctx->hs_stats.in_progress++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
        conn_fail(c, FL_ENET);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        set_addr(c, (struct sockaddr *)&ss);
    if (s->ctx->nconns > s->ctx->max_conns) {
        FL_LOG_W(WHO, "refusing %s: %u connections already open", c->addr, s->ctx->max_conns);
        conn_fail(c, FL_ETOOBIG);
        return;
    }
    if (s->ctx->hs_stats.in_progress > s->ctx->max_handshakes) {
        /* A storm or a slowloris of half-open connections: the newest goes
         * at once, before it costs a job or a buffer. */
        s->stats.hs_refused++;
        s->hs_unlogged++;
        double now = mono_s();
        if (s->hs_last_log <= 0 || now - s->hs_last_log >= ACCEPT_LOG_EVERY_S) {
            s->hs_last_log = now;
            FL_LOG_W(WHO, "refusing %s: %u handshakes already under way (max_handshakes; %llu refused in all, %llu "
                          "since the last line)",
                     c->addr, s->ctx->max_handshakes, (unsigned long long)s->stats.hs_refused,
                     (unsigned long long)s->hs_unlogged);
            s->hs_unlogged = 0;
        }
        conn_fail(c, FL_EAGAIN);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, timer_fired, s->ctx->handshake_timeout_ms, 0);
    int r = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    c->reading = r == 0;
    if (r != 0)
        conn_fail(c, FL_ENET);
}

int fl_tls_server_start(uv_loop_t *loop, fl_tls_ctx_t *ctx, const char *host, int port,
                        const fl_tls_cbs_t *cbs, void *ud, fl_tls_server_t **out)
{
    if (!loop || !ctx || !host || !out || port < 0 || port > 65535 || ctx->side != FL_TLS_SERVER)
        return FL_EINVAL;
    *out = NULL;
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        FL_LOG_E(WHO, "listen address '%s' is not a numeric IPv4 or IPv6 address", host);
        return FL_EINVAL;
    }
    fl_tls_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return FL_ENOMEM;
    s->ctx = ctx;
    if (cbs)
        s->cbs = *cbs;
    s->ud = ud;
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    uv_timer_init(loop, &s->backoff);
    s->backoff.data = s;
    s->open_handles = 2;
    int r = uv_tcp_bind(&s->tcp, (struct sockaddr *)&ss, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&s->tcp, 511, on_connection);
    if (r != 0) {
        FL_LOG_E(WHO, "cannot listen on %s:%d: %s", host, port, uv_strerror(r));
        fl_tls_server_close(s);
        return FL_ENET;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        s->fd_limit = (uint64_t)rl.rlim_cur;
    s->fd_base = count_open_fds();
    if (s->fd_limit && s->fd_limit < (uint64_t)s->fd_base + FD_MARGIN + ctx->max_conns)
        FL_LOG_W(WHO, "the open-file limit %llu allows about %lld connections of max_conns %u; more wait in the "
                      "listen backlog until some close",
                 (unsigned long long)s->fd_limit,
                 (long long)s->fd_limit - (long long)s->fd_base - FD_MARGIN, ctx->max_conns);
    int len = sizeof ss;
    uv_tcp_getsockname(&s->tcp, (struct sockaddr *)&ss, &len);
    s->port = ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                      : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    *out = s;
    return 0;
}

int fl_tls_server_port(const fl_tls_server_t *s) { return s ? s->port : -1; }

static void server_handle_closed(uv_handle_t *h)
{
    fl_tls_server_t *s = h->data;
    if (--s->open_handles == 0)
        free(s);
}

void fl_tls_server_close(fl_tls_server_t *s)
{
    if (!s)
        return;
    if (s->paused)
        s->stats.paused_s += mono_s() - s->paused_at;
    uv_close((uv_handle_t *)&s->backoff, server_handle_closed);
    uv_close((uv_handle_t *)&s->tcp, server_handle_closed);
}

void fl_tls_server_stats(const fl_tls_server_t *s, fl_tls_server_stats_t *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (s) {
        *out = s->stats;
        if (s->paused)
            out->paused_s += mono_s() - s->paused_at;
    }
}

/* ---- client ------------------------------------------------------------- */

static void connected(uv_connect_t *req, int status)
{
    fl_tls_conn_t *c = req->data;
    free(req);
    c->creq = NULL;
    if (c->state == ST_CLOSED)
        return;
    if (status < 0) {
        FL_LOG_W(WHO, "cannot connect to %s: %s", c->addr, uv_strerror(status));
        conn_fail(c, FL_ENET);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = ST_HANDSHAKE;
    int r = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    c->reading = r == 0;
    if (r != 0) {
        conn_fail(c, FL_ENET);
        return;
    }
    conn_handshake(c); /* sends the ClientHello */
}

static void start_connect(fl_tls_conn_t *c, const struct sockaddr *sa)
{
    set_addr(c, sa);
    c->creq = malloc(sizeof *c->creq);
    if (!c->creq) {
        conn_fail(c, FL_ENOMEM);
        return;
    }
    c->creq->data = c;
    int r = uv_tcp_connect(c->creq, &c->tcp, sa, connected);
    if (r != 0) {
        free(c->creq);
        c->creq = NULL;
        FL_LOG_W(WHO, "cannot connect to %s: %s", c->addr, uv_strerror(r));
        conn_fail(c, FL_ENET);
    }
}

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    fl_tls_conn_t *c = req->data;
    free(req);
    c->gai = NULL;
    if (c->state != ST_CLOSED) {
        if (status < 0 || !res) {
            FL_LOG_W(WHO, "cannot resolve '%s': %s", c->host, uv_strerror(status));
            conn_fail(c, FL_ENET);
        } else {
            /* Servers usually listen on IPv4 (0.0.0.0 or 127.0.0.1) while
             * "localhost" may list ::1 first: prefer an IPv4 address. */
            const struct addrinfo *pick = res;
            for (const struct addrinfo *a = res; a; a = a->ai_next)
                if (a->ai_family == AF_INET) {
                    pick = a;
                    break;
                }
            start_connect(c, pick->ai_addr);
        }
    }
    uv_freeaddrinfo(res);
    conn_release(c); /* the reference the resolution held */
}

int fl_tls_connect(uv_loop_t *loop, fl_tls_ctx_t *ctx, const char *host, int port,
                   const char *server_name, const fl_tls_cbs_t *cbs, void *ud,
                   fl_tls_conn_t **out)
{
    if (!loop || !ctx || !host || !out || port <= 0 || port > 65535 || ctx->side != FL_TLS_CLIENT ||
        strlen(host) >= sizeof(((fl_tls_conn_t *)0)->host))
        return FL_EINVAL;
    *out = NULL;
    fl_tls_conn_t *c = conn_new(loop, ctx, cbs, ud, 0);
    if (!c)
        return FL_ENOMEM;
    snprintf(c->host, sizeof c->host, "%s", host);
    snprintf(c->addr, sizeof c->addr, "%.50s:%d", host, port);
    if (mbedtls_ssl_set_hostname(&c->ssl, server_name ? server_name : host) != 0) {
        c->quiet = 1; /* the caller learns from the return value, not on_close */
        conn_fail(c, FL_EINVAL);
        return FL_EINVAL;
    }
    /* A session from an earlier connection to this address is offered for
     * resumption; a server that does not take it runs a full handshake. */
    if (ctx->have_session && strcmp(ctx->session_addr, c->addr) == 0 &&
        mbedtls_ssl_set_session(&c->ssl, &ctx->session) != 0)
        FL_LOG_D(WHO, "%s: could not offer the saved session", c->addr);
    c->state = ST_CONNECTING;
    uv_timer_start(&c->timer, timer_fired, ctx->handshake_timeout_ms, 0);
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
        start_connect(c, (struct sockaddr *)&ss);
    } else {
        c->gai = malloc(sizeof *c->gai);
        char service[16];
        snprintf(service, sizeof service, "%d", port);
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        if (!c->gai) {
            conn_fail(c, FL_ENOMEM);
        } else {
            c->gai->data = c;
            c->handles++; /* the connection lives until the resolution reports */
            int r = uv_getaddrinfo(loop, c->gai, resolved, host, service, &hints);
            if (r != 0) {
                c->handles--;
                free(c->gai);
                c->gai = NULL;
                FL_LOG_W(WHO, "cannot resolve '%s': %s", host, uv_strerror(r));
                conn_fail(c, FL_ENET);
            }
        }
    }
    *out = c;
    return 0;
}

/* ---- connection API ----------------------------------------------------- */

int fl_tls_conn_send(fl_tls_conn_t *c, fl_buf_t *buf)
{
    if (!c || !buf)
        return FL_EINVAL;
    if (c->state == ST_CLOSING || c->state == ST_CLOSED)
        return FL_ECLOSED;
    sendq_t *q = malloc(sizeof *q);
    if (!q)
        return FL_ENOMEM;
    q->next = NULL;
    q->buf = fl_buf_ref(buf);
    q->off = 0;
    if (c->q_tail)
        c->q_tail->next = q;
    else
        c->q_head = q;
    c->q_tail = q;
    c->q_bytes += buf->len;
    if (c->state == ST_OPEN)
        conn_pump(c);
    return 0;
}

int fl_tls_conn_send_msg(fl_tls_conn_t *c, const Fedopt__Envelope *msg)
{
    if (!c || !msg)
        return FL_EINVAL;
    if (c->state == ST_CLOSING || c->state == ST_CLOSED)
        return FL_ECLOSED;
    fl_buf_t *b;
    int rc = fl_wire_encode(msg, &b);
    if (rc)
        return rc;
    rc = fl_tls_conn_send(c, b);
    fl_buf_unref(b);
    return rc;
}

size_t fl_tls_conn_queued(const fl_tls_conn_t *c) { return c ? c->q_bytes : 0; }

void fl_tls_conn_close(fl_tls_conn_t *c)
{
    if (!c || c->state == ST_CLOSING || c->state == ST_CLOSED)
        return;
    if (c->state != ST_OPEN) {
        conn_fail(c, 0);
        return;
    }
    c->state = ST_CLOSING;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    uv_timer_start(&c->timer, timer_fired, CLOSE_GRACE_MS, 0);
    conn_pump(c); /* finishes the close when nothing is queued */
}

void fl_tls_conn_pause_read(fl_tls_conn_t *c)
{
    if (!c || c->paused || c->state != ST_OPEN)
        return;
    c->paused = 1;
    c->reading = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

void fl_tls_conn_resume_read(fl_tls_conn_t *c)
{
    if (!c || !c->paused || c->state != ST_OPEN)
        return;
    c->paused = 0;
    if (c->ctx->rec_jobs) {
        /* Records in jobs: what waits (decrypted plaintext, ciphertext in
         * rx) goes first, then reading resumes; from inside a callback of
         * this connection the reading or the job's completion carries on. */
        if (c->stash_len && !c->rec_busy && !c->in_len) {
            /* kept at a pause right after the handshake (hs_after): the
             * next job reads it first */
            fl_bytes_free(&c->job_in);
            if (fl_bytes_append(&c->job_in, c->stash, c->stash_len) != 0) {
                conn_fail(c, FL_ENOMEM);
                return;
            }
            if (c->stash != c->stash_small)
                free(c->stash);
            c->stash = NULL;
            c->stash_len = 0;
            c->in_ptr = c->job_in.data;
            c->in_len = c->job_in.len;
        }
        if (c->in_feed || c->rec_busy)
            rec_flow(c);
        else
            rec_continue(c);
        return;
    }
    if (c->in_feed) {
        /* Called from a callback of this connection: the read loop that
         * called it simply carries on. */
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
        return;
    }
    /* Deliver what was decrypted or stashed while paused, then read again. */
    unsigned char *st = c->stash;
    c->stash = NULL;
    c->in_ptr = st;
    c->in_len = c->stash_len;
    c->stash_len = 0;
    feed(c);
    if (st != c->stash_small)
        free(st);
    if (c->state == ST_OPEN && !c->paused &&
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) != 0)
        conn_fail(c, FL_ENET);
}

void fl_tls_conn_set_max_tensor(fl_tls_conn_t *c, uint64_t max_tensor)
{
    if (c)
        fl_wire_stream_set_max_tensor(&c->st, max_tensor);
}

void fl_tls_conn_set_tensor_dst(fl_tls_conn_t *c, void *dst, size_t cap)
{
    if (c)
        fl_wire_stream_set_dst(&c->st, dst, cap);
}

const char *fl_tls_conn_peer(const fl_tls_conn_t *c) { return c ? c->peer : ""; }

const mbedtls_x509_crt *fl_tls_conn_peer_cert(const fl_tls_conn_t *c)
{
    return c && c->peer[0] ? mbedtls_ssl_get_peer_cert(&c->ssl) : NULL;
}

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
        return cert_cn(crt, cn);
    }
    uint32_t flags = 0;
    /* The same chain and profile the handshakes use: only a certificate the
     * fleet CA signed, valid now, names a peer. */
    if (!ctx->ca.raw.len || mbedtls_x509_crt_verify(crt, &ctx->ca, NULL, NULL, &flags, NULL, NULL) != 0)
        return FL_EAUTH;
    int rc = cert_cn(crt, cn);
    if (rc == 0)
        cert_remember(ctx, h);
    return rc;
}

const char *fl_tls_conn_addr(const fl_tls_conn_t *c) { return c ? c->addr : ""; }

const char *fl_tls_conn_suite(const fl_tls_conn_t *c)
{
    if (!c || !c->opened)
        return "";
    const char *s = mbedtls_ssl_get_ciphersuite(&c->ssl);
    return s ? s : "";
}

void fl_tls_conn_set_data(fl_tls_conn_t *c, void *data)
{
    if (c)
        c->data = data;
}

void *fl_tls_conn_data(const fl_tls_conn_t *c) { return c ? c->data : NULL; }
