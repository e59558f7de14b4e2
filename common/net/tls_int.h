/* tls_int: the inside of the tls module (tls.c), shared with its job module
 * (tlsjobs.c) and no one else: the context and connection structs, the
 * record constants, and the connection plumbing the jobs call back into.
 * Not a contract for other modules: they use tls.h. Loop-thread rules are
 * tls.c's: while a connection's job slot is taken (rec_busy) the job owns
 * the fields tls.c's struct comments say it owns. */
#ifndef FL_TLS_INT_H
#define FL_TLS_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>
#include <uv.h>

#include "common/base/bytes.h"
#include "common/base/log.h"
#include "common/net/certs.h"
#include "common/net/tls.h"
#include "common/net/wire.h"

#define READ_BUF (64 * 1024)
/* A TLS record header: type, version (2 bytes), length (2 bytes). */
#define REC_HDR 5
#define CLOSE_GRACE_MS 5000
/* Handshake ciphertext a connection may have waiting for its next job: a
 * client's flight is a few records (certificate chain, key exchange,
 * verify, Finished); more is a peer flooding a handshake. */
#define HS_IN_MAX (4 * (16384 + 512))
/* Record jobs (server, see fl__tlsjobs_rec_take): a record body of at most this many
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
 * loop charges it to the frame budget (fl__tls_charge_frames) before it fills. */
#define REC_CHARGE_MIN (16 * 1024)
/* rec_work's job_ret when it stopped for a frame (job_rc says which). */
#define REC_DATA 1
/* Send jobs (server, see snd_work): plaintext queued beyond this many bytes
 * is encrypted in the thread pool, less (a Welcome, a result, a heartbeat's
 * echo) on the loop, where it costs less than the trip through the pool. */
#define SND_INLINE_MAX (16 * 1024)
/* Plaintext per mbedtls_ssl_write: one record. The pump on the loop and a
 * send job must pass the same length, since after WANT_WRITE mbedTLS
 * expects the same arguments again, whichever of them calls. */
#define SND_RECORD 16384
/* Ciphertext one send job writes at most before it hands its last record
 * to libuv, so the loop polls the connection (and reads) between jobs. */
#define SND_JOB_MAX (512 * 1024)

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
    int in_pump;          /* inside fl__tls_conn_pump's mbedtls_ssl_write */
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
    uv_work_t job_work;   /* the job slot's work request: handshake, record or send job */
    int hs_busy;           /* a job is queued or running */
    int hs_queued;         /* on one of the context's waiting lists */
    int hs_started;        /* a job ran: goes before first flights */
    int hs_counted;        /* counted in hs_stats.in_progress */
    int hs_eof;            /* the peer closed (a libuv error) while bytes wait for a job */
    int in_job;            /* bio callbacks work for a job (worker): 1 handshake (job_in/job_out), 2 records (fl__tlsjobs_rec_recv), 3 sending (fl__tlsjobs_snd_send) */
    int job_ret;
    /* Record jobs (server, ctx->rec_jobs; see rec_work). While rec_busy the
     * job owns ssl, rd, in_ptr/in_len, job_in and job_out, and reads the
     * socket (job_fd) itself. */
    int rec_busy;
    int rec_pump;          /* fl__tls_conn_pump waits for the job */
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

/* ---- connection plumbing (tls.c), for the jobs --------------------------- */

/* mbedTLS's error ret logged at lvl after what. */
void fl__tls_log_mbed(fl_log_level_t lvl, const char *what, int ret);
/* Failing and freeing: conn_fail closes the handles (the first reason is
 * kept for on_close); conn_release drops one reference (a handle, a job) and
 * the last one reports and frees; handle_closed is the handles' close
 * callback. */
void fl__tls_conn_fail(fl_tls_conn_t *c, int reason);
void fl__tls_conn_release(fl_tls_conn_t *c);
void fl__tls_handle_closed(uv_handle_t *h);
/* Sending: the pump encrypts the queue (or starts a send job); write_done
 * is the completion of a write out of mbedTLS's buffer; send_failed logs a
 * libuv write error and fails the connection (returns mbedTLS's send
 * error); flush_job_out sends what a job's mbedTLS wrote into job_out. */
void fl__tls_conn_pump(fl_tls_conn_t *c);
void fl__tls_write_done(uv_write_t *req, int status);
int fl__tls_send_failed(fl_tls_conn_t *c, int r);
void fl__tls_flush_job_out(fl_tls_conn_t *c, const char *fmt);
/* write_held hands len bytes that stay in place in mbedTLS's output buffer
 * to libuv (one uv_write, no copy; wr_busy until fl__tls_write_done, which
 * makes mbedTLS's next send call report them sent): 0 or a libuv error.
 * queue_drop_sent frees the queue's entries sent to their end. */
int fl__tls_write_held(fl_tls_conn_t *c, const unsigned char *buf, size_t len);
void fl__tls_queue_drop_sent(fl_tls_conn_t *c);
/* Receiving: libuv's read callbacks; take_in hands bytes already read
 * (in_ptr) to mbedTLS; ssl_in_tail is the free tail of mbedTLS's record
 * buffer; stash_rest keeps unread ciphertext of a paused connection. */
void fl__tls_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void fl__tls_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
int fl__tls_take_in(fl_tls_conn_t *c, unsigned char *buf, size_t len);
unsigned char *fl__tls_ssl_in_tail(fl_tls_conn_t *c, size_t *room);
int fl__tls_stash_rest(fl_tls_conn_t *c);
/* Frames: conn_read decrypts on the loop into the frame reader; deliver
 * hands a finished frame (or the reader's error rc) to the application and
 * returns nonzero when reading must stop; charge_frames charges a growing
 * frame buffer to the context's budget; read_end and read_failed end a
 * connection on mbedTLS's read result or a socket error. */
void fl__tls_conn_read(fl_tls_conn_t *c);
int fl__tls_deliver(fl_tls_conn_t *c, int rc, uint8_t *frame, uint32_t len);
/* Where the next plaintext goes (the frame reader's place, or an expected
 * tensor chunk's place in the tensor: fl_wire_reader_expect). */
void fl__tls_next_dst(fl_tls_conn_t *c, unsigned char **dst, size_t *want);
int fl__tls_charge_frames(fl_tls_conn_t *c);
void fl__tls_read_end(fl_tls_conn_t *c, int ret);
void fl__tls_read_failed(fl_tls_conn_t *c, int nread);
/* A certificate's common name into out (FL_CERTS_NAME_MAX + 1 bytes):
 * 0, or FL_EAUTH when it has none or it is too long or not a valid name
 * (tlsctx.c's certificate check uses it too). */
int fl__tls_cert_cn(const mbedtls_x509_crt *crt, char *out);
/* The handshake's result, on the loop (after a job or a loop step). */
void fl__tls_handshake_result(fl_tls_conn_t *c, int ret);

#endif
