/* tlsctx: a TLS context — one side's settings, the fleet CA, our
 * certificate and key, the random generator, session tickets (server) or
 * the kept session (client), and the counters of what its connections did.
 * Connections (tls.h) are made from a context and must not outlive it; one
 * context serves one event loop. What handshakes on several threads share
 * is made safe here: the random generator and the session-ticket keys are
 * behind mutexes of this module (whatever mbedTLS's threading option), and
 * the certificates' and key's elliptic-curve tables are computed before
 * the first job (tlsctx.c's shared_state_ready). */
#ifndef FL_TLSCTX_H
#define FL_TLSCTX_H

#include <stddef.h>
#include <stdint.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

typedef struct fl_tls_ctx fl_tls_ctx_t;

typedef enum {
    FL_TLS_SERVER = 0,
    FL_TLS_CLIENT = 1,
} fl_tls_side_t;

/* Settings of a context; zero fields take the defaults. */
typedef struct {
    const char *ca_file;   /* PEM: the fleet CA that signs peers' certificates */
    const char *cert_file; /* PEM: our certificate (required on a server; on a
                              client unless no client certificate is wanted) */
    const char *key_file;  /* PEM: its private key */
    int no_client_cert;    /* server: 1 accepts clients without certificates
                              (explicit opt-out of mutual TLS, logged) */
    const char *ciphersuite; /* force one suite by its mbedTLS name, e.g.
                                "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256";
                                NULL = the measured default order */
    uint32_t max_frame;    /* largest frame accepted (default FL_WIRE_DEFAULT_MAX_FRAME) */
    uint64_t max_tensor;   /* largest tensor accepted (default FL_WIRE_DEFAULT_MAX_TENSOR;
                              per connection: fl_tls_conn_set_max_tensor) */
    uint32_t handshake_timeout_ms; /* default 30000: a mutual-TLS handshake costs the
                                      server milliseconds of CPU (bench_tls's handshake
                                      line), so hundreds arriving at once on a loaded
                                      machine take seconds */
    size_t max_inflight;   /* ciphertext bytes a connection writes per loop turn
                              before it lets the others run (default 256 KiB);
                              costs no memory (nothing is staged) */
    uint32_t max_conns;    /* server: most simultaneous connections (default 10000) */
    /* Server: most accepted connections whose handshake is not done
     * (default 1024). Each holds mbedTLS's record buffers and up to a
     * client flight of ciphertext, about 100 KiB at worst, so a storm or a
     * slowloris of half-open connections stays within a bound; one more is
     * closed at once, logged (at most a line per 10 s, with counts) and
     * counted (fl_tls_server_stats_t.hs_refused, and on_handshake_fail with
     * FL_EAGAIN). */
    uint32_t max_handshakes;
    /* Server: handshake jobs queued in libuv's thread pool at once (0 = the
     * number of CPUs, uv_available_parallelism; -1 = handshakes on the loop
     * thread, as a client's always are). */
    int handshake_jobs;
    /* Server: 0 = application records are decrypted, and large sends
     * encrypted, in libuv's thread pool, one job per connection at a time
     * (small records on the loop); -1 = every record on the loop thread. */
    int record_jobs;
    /* Admission (server): until the application calls fl_tls_conn_admit (on
     * the peer's Hello), a connection's frames are capped at
     * preadmit_max_frame (0 = max_frame) and it is closed admit_timeout_ms
     * after its handshake (0 = never). */
    uint32_t preadmit_max_frame;
    uint32_t admit_timeout_ms;
    /* Bytes the context's connections may hold in partial frames (and the
     * spare chunk buffers of transfers in progress) together; a connection
     * whose next frame would go beyond it is closed with FL_ETOOBIG
     * (0 = no budget). */
    uint64_t frame_budget;
} fl_tls_opts_t;

/* Creates a context for one side: loads the CA, certificate and key, seeds
 * the random generator, fixes the protocol version and suites. Use one
 * context per event loop; it must outlive its connections. Returns 0,
 * FL_EINVAL, FL_ECONFIG (unreadable file or bad setting, logged), FL_ETLS or
 * FL_ENOMEM. */
int fl_tls_ctx_new(fl_tls_side_t side, const fl_tls_opts_t *opts, fl_tls_ctx_t **out);

/* Session resumption (TLS 1.2 session tickets). A server context issues
 * tickets whose keys are derived from its private key, so a restarted server
 * with the same key accepts them; a client context keeps the last session of
 * its last connection and offers it when it next connects to the same
 * host:port (a server that refuses it gets a full handshake). A resumed
 * session's peer identity is the certificate of the full handshake it came
 * from, at most a day earlier (the tickets' lifetime).
 *
 * Resumed handshakes so far: on a server, tickets accepted; on a client,
 * connections that resumed. */
uint64_t fl_tls_ctx_resumed(const fl_tls_ctx_t *ctx);

/* Server handshakes: how they ran so far. */
typedef struct {
    uint64_t jobs;        /* handshake jobs run in the thread pool */
    uint64_t peak_jobs;   /* most jobs queued or running at once */
    uint64_t in_progress; /* connections accepted whose handshake is not done */
    uint64_t jobs_now;    /* jobs queued or running now */
} fl_tls_hs_stats_t;

/* The context's handshake counters (zeros for NULL or a client context). */
void fl_tls_ctx_hs_stats(const fl_tls_ctx_t *ctx, fl_tls_hs_stats_t *out);

/* Server record jobs (fl_tls_opts_t.record_jobs): how they ran so far. */
typedef struct {
    uint64_t jobs;         /* record jobs run in the thread pool */
    uint64_t peak_jobs;    /* most jobs queued or running at once (all connections) */
    uint64_t jobs_now;     /* jobs queued or running now */
    uint64_t inline_reads; /* reads of small records decrypted on the loop */
    uint64_t send_jobs;     /* send jobs run in the thread pool (encryption) */
    uint64_t send_jobs_now; /* send jobs queued or running now */
} fl_tls_rec_stats_t;

/* The context's record-job counters (zeros for NULL or a client context). */
void fl_tls_ctx_rec_stats(const fl_tls_ctx_t *ctx, fl_tls_rec_stats_t *out);

/* Client: drops the kept session (the next connection runs a full handshake). */
void fl_tls_ctx_forget_session(fl_tls_ctx_t *ctx);

/* Frees a context with no connections left. Accepts NULL. */
void fl_tls_ctx_free(fl_tls_ctx_t *ctx);

/* Number of connections of the context not yet closed. */
size_t fl_tls_ctx_conns(const fl_tls_ctx_t *ctx);

/* Bytes all connections of ctx hold in partial frames now (frame_budget's
 * measure). */
uint64_t fl_tls_ctx_frame_bytes(const fl_tls_ctx_t *ctx);

/* The context's own private key (its certificate's), or NULL when it has
 * none. Borrowed: valid until fl_tls_ctx_free. Secure aggregation signs a
 * client's key advertisement with it. Use it on the loop thread only. */
mbedtls_pk_context *fl_tls_ctx_key(fl_tls_ctx_t *ctx);

/* Parses a DER certificate into crt (initialized by the caller, who frees
 * it) and checks it against the context's CA, as a handshake would; cn
 * (FL_CERTS_NAME_MAX + 1 bytes) gets its common name. Returns 0,
 * FL_EINVAL, FL_EFORMAT (not a certificate), or FL_EAUTH (not signed by
 * the CA, expired, or without a valid CN). The context remembers the
 * certificates that verified (their digests, the last 1,024): the same
 * bytes again get only their dates checked, which is what can change
 * (secure aggregation meets the same neighbours round after round). Safe
 * on any thread. */
int fl_tls_ctx_check_cert(fl_tls_ctx_t *ctx, const uint8_t *der, size_t len, mbedtls_x509_crt *crt, char *cn);

/* The context's default suite order (0-terminated mbedTLS ids). */
const int *fl_tls_default_suites(void);

#endif
