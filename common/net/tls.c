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

#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_internal.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>

#include "common/net/certs.h"
#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "common/net/tls_int.h"
#include "common/net/tlsjobs.h"

#define WHO "tls"

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

/* ---- context ------------------------------------------------------------ */

void fl__tls_log_mbed(fl_log_level_t lvl, const char *what, int ret)
{
    char buf[160];
    mbedtls_strerror(ret, buf, sizeof buf);
    fl_log(lvl, WHO, "%s: %s (-0x%04x)", what, buf, (unsigned)-ret);
}

/* ---- connection plumbing ------------------------------------------------ */

static void timer_fired(uv_timer_t *t);
static void finish_close(fl_tls_conn_t *c);

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
void fl__tls_conn_release(fl_tls_conn_t *c)
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

void fl__tls_handle_closed(uv_handle_t *h) { fl__tls_conn_release(h->data); }

static void free_handle(uv_handle_t *h) { free(h); }

/* Closes the handles now; on_close follows from fl__tls_handle_closed. */
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
        uv_close((uv_handle_t *)&c->tcp, fl__tls_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, fl__tls_handle_closed);
}

void fl__tls_conn_fail(fl_tls_conn_t *c, int reason)
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
        fl__tls_conn_fail(c, FL_ENET);
    }
}

/* The uv_write out of mbedTLS's output buffer finished: mbedTLS learns it at
 * its next call of bio_send, which the pump makes now. */
void fl__tls_write_done(uv_write_t *req, int status)
{
    fl_tls_conn_t *c = req->data;
    c->wr_busy = 0;
    if (c->state == ST_CLOSED)
        return;
    if (status < 0) {
        FL_LOG_W(WHO, "%s: write failed: %s", c->addr, uv_strerror(status));
        fl__tls_conn_fail(c, FL_ENET);
        return;
    }
    c->wr_done = 1;
    if (!c->shutting)
        fl__tls_conn_pump(c);
}

int fl__tls_send_failed(fl_tls_conn_t *c, int r)
{
    FL_LOG_W(WHO, "%s: write failed: %s", c->addr, uv_strerror(r));
    fl__tls_conn_fail(c, FL_ENET);
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
void fl__tls_flush_job_out(fl_tls_conn_t *c, const char *fmt)
{
    if (c->job_out.len) {
        int r = write_copy(c, c->job_out.data, c->job_out.len);
        if (r < 0) {
            FL_LOG_W(WHO, fmt, c->addr, uv_strerror(r));
            fl__tls_conn_fail(c, FL_ENET);
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
 *  - records of application data (fl__tls_conn_pump) go straight from mbedTLS's own
 *    output buffer: we answer WANT_WRITE, mbedTLS keeps those bytes in place
 *    until a later call of ours says they were sent, and fl__tls_conn_pump waits for
 *    fl__tls_write_done. Sending therefore costs no memory beyond mbedTLS's record
 *    buffer, however many connections are sending at once.
 *  - handshake flights and alerts are copied and reported sent, so the
 *    handshake and mbedtls_ssl_read never stop for a write (they would leave
 *    received ciphertext unconsumed). They are small and rare.
 * Per loop turn a connection writes at most max_inflight bytes synchronously;
 * after that the next record goes by uv_write, whose completion resumes the
 * pump in a later turn, so one fast connection cannot hold the loop. */

int fl__tls_write_held(fl_tls_conn_t *c, const unsigned char *buf, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
    c->wreq.data = c;
    int r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, fl__tls_write_done);
    if (r < 0)
        return r;
    c->wr_busy = 1;
    c->wr_ptr = buf;
    c->wr_len = len;
    return 0;
}

void fl__tls_queue_drop_sent(fl_tls_conn_t *c)
{
    while (c->q_head && c->q_head->off == c->q_head->buf->len) {
        sendq_t *q = c->q_head;
        c->q_head = q->next;
        if (!c->q_head)
            c->q_tail = NULL;
        fl_buf_unref(q->buf);
        free(q);
    }
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    fl_tls_conn_t *c = ctx;
    if (c->in_job == 3)
        return fl__tlsjobs_snd_send(c, buf, len);
    if (c->in_job == 2 && c->job_wr_pending)
        return MBEDTLS_ERR_SSL_WANT_WRITE; /* a record job's alert behind a record of ours in flight: fl__tls_read_end */
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
        return MBEDTLS_ERR_SSL_WANT_WRITE; /* mbedTLS retries those bytes after fl__tls_write_done */
    if (c->state == ST_CLOSED)
        return MBEDTLS_ERR_NET_SEND_FAILED;
    size_t n = 0;
    if (!c->in_pump || c->burst < c->ctx->max_inflight) {
        uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
        int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (r < 0 && r != UV_EAGAIN)
            return fl__tls_send_failed(c, r);
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
            return fl__tls_send_failed(c, r);
        return (int)len;
    }
    int r = fl__tls_write_held(c, buf + n, len - n);
    if (r < 0)
        return fl__tls_send_failed(c, r);
    /* A partial count makes mbedTLS call again at once for the rest, which
     * is then in flight: WANT_WRITE. */
    return n ? (int)n : MBEDTLS_ERR_SSL_WANT_WRITE;
}


/* Gives mbedTLS up to len of the bytes libuv (or a job's read beyond its
 * request) left in in_ptr; c->in_len must be nonzero. Bytes read straight
 * into mbedTLS's input buffer (fl__tls_alloc_cb) are already where it wants them. */
int fl__tls_take_in(fl_tls_conn_t *c, unsigned char *buf, size_t len)
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
        return fl__tlsjobs_rec_recv(c, buf, len);
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
    return fl__tls_take_in(c, buf, len);
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
int fl__tls_cert_cn(const mbedtls_x509_crt *crt, char *out)
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
    return fl__tls_cert_cn(crt, c->peer);
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
void fl__tls_handshake_result(fl_tls_conn_t *c, int ret)
{
    if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE)
        return;
    if (ret != 0) {
        char why[640];
        describe_failure(c, ret, why, sizeof why);
        FL_LOG_W(WHO, "handshake with %s refused: %s", c->addr, why);
        /* An alert mbedTLS sent is queued in libuv: the close below cancels
         * it unless the kernel took it at once, which on a live socket it does. */
        fl__tls_conn_fail(c, ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED ||
                             ret == MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE
                         ? FL_EAUTH
                         : FL_ETLS);
        return;
    }
    if (take_identity(c) != 0) {
        FL_LOG_W(WHO, "handshake with %s refused: certificate has no usable common name "
                      "(1-64 of A-Z a-z 0-9 . _ -)", c->addr);
        fl__tls_conn_fail(c, FL_EAUTH);
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
    fl__tls_conn_pump(c);
    if (c->state == ST_OPEN)
        fl__tls_conn_read(c); /* application data may have come with the last handshake flight */
}

static void conn_handshake(fl_tls_conn_t *c) { fl__tls_handshake_result(c, mbedtls_ssl_handshake(&c->ssl)); }

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
int fl__tls_charge_frames(fl_tls_conn_t *c)
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


/* mbedtls_ssl_read ended the stream or failed (ret is neither data nor
 * WANT_READ): the connection ends, saying why. */
void fl__tls_read_end(fl_tls_conn_t *c, int ret)
{
    if (ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        /* mbedTLS wanted to answer the peer (an alert: renegotiation is
         * refused) while a record of ours was still in flight; the
         * ciphertext it left unread would be lost, so the connection ends. */
        FL_LOG_W(WHO, "%s ('%s'): peer sent a TLS message that needs an answer in the middle of a "
                      "transfer (renegotiation?); closing", c->addr, c->peer);
        fl__tls_conn_fail(c, FL_ETLS);
        return;
    }
    if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || ret == 0) {
        if (!fl_wire_reader_idle(&c->rd) || c->st.in_tensor) {
            FL_LOG_W(WHO, "%s ('%s'): peer closed in the middle of a %s", c->addr, c->peer,
                     c->st.in_tensor ? "tensor transfer" : "frame");
            fl__tls_conn_fail(c, FL_ETRUNCATED);
        } else {
            FL_LOG_D(WHO, "%s: peer closed", c->addr);
            fl__tls_conn_fail(c, 0);
        }
        return;
    }
    char buf[160];
    mbedtls_strerror(ret, buf, sizeof buf);
    FL_LOG_W(WHO, "%s ('%s'): TLS read failed: %s", c->addr, c->peer, buf);
    fl__tls_conn_fail(c, FL_ETLS);
}

/* Acts on what fl_wire_reader_advance returned (rc, and the frame when it is
 * 1, which this takes): a complete frame goes to the application. Returns 1
 * when reading must stop (the connection is closing), else 0. */
int fl__tls_deliver(fl_tls_conn_t *c, int rc, uint8_t *frame, uint32_t len)
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
        return fl__tls_charge_frames(c);
    if (rc == 2) {
        /* A tensor chunk that arrived in place (fl__tls_next_dst). */
        fl_wire_stream_placed(&c->st, len);
        return fl__tls_charge_frames(c);
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
    fl__tls_charge_frames(c); /* only ever lower here: a complete frame was handed over */
    if (ev.kind != FL_WIRE_EV_NONE && c->cbs.on_message)
        c->cbs.on_message(c, &ev, c->ud);
    fl_wire_event_clear(&ev);
    return 0;
}

/* Where the next plaintext goes: the frame reader's place, and between
 * frames, when the next one should be a chunk of the tensor being received,
 * that chunk's place in the tensor (fl_wire_reader_expect): mbedTLS then
 * copies the plaintext there and no one copies it again. */
void fl__tls_next_dst(fl_tls_conn_t *c, unsigned char **dst, size_t *want)
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
void fl__tls_conn_read(fl_tls_conn_t *c)
{
    while (c->state == ST_OPEN && !c->paused) {
        unsigned char *dst;
        size_t want;
        fl__tls_next_dst(c, &dst, &want);
        int ret = mbedtls_ssl_read(&c->ssl, dst, want);
        if (ret == MBEDTLS_ERR_SSL_WANT_READ)
            break;
        if (ret <= 0) {
            fl__tls_read_end(c, ret);
            return;
        }
        uint8_t *frame = NULL;
        uint32_t len = 0;
        int rc = fl_wire_reader_advance(&c->rd, (size_t)ret, &frame, &len);
        if (fl__tls_deliver(c, rc, frame, len))
            return;
    }
}

/* Encrypts queued plaintext record by record while the kernel takes it;
 * a record it does not take waits in mbedTLS's buffer for fl__tls_write_done. */
void fl__tls_conn_pump(fl_tls_conn_t *c)
{
    if (c->state != ST_OPEN && c->state != ST_CLOSING)
        return;
    if (c->wr_busy)
        return; /* fl__tls_write_done calls again */
    if (c->rec_busy) {
        c->rec_pump = 1; /* a job has the ssl context: its after-callback calls again */
        return;
    }
    /* Much to send, and nothing of ours queued in libuv (the job writes the
     * socket itself, and must not overtake those bytes): a send job. */
    if (c->ctx->rec_jobs && c->q_bytes > SND_INLINE_MAX && !c->shutting &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        fl__tlsjobs_snd_dispatch(c);
        return;
    }
    c->burst = 0;
    while (c->q_head) {
        sendq_t *q = c->q_head;
        size_t left = q->buf->len - q->off;
        /* After WANT_WRITE mbedTLS expects the same arguments again: q->off
         * has not moved, so n is the same. */
        size_t n = left < SND_RECORD ? left : SND_RECORD;
        c->in_pump = 1;
        int ret = mbedtls_ssl_write(&c->ssl, q->buf->data + q->off, n);
        c->in_pump = 0;
        if (c->state == ST_CLOSED)
            return; /* bio_send failed and said why */
        if (ret == MBEDTLS_ERR_SSL_WANT_WRITE)
            return; /* fl__tls_write_done resumes */
        if (ret < 0) {
            fl__tls_log_mbed(FL_LOG_WARN, "TLS write failed", ret);
            fl__tls_conn_fail(c, FL_ETLS);
            return;
        }
        q->off += (size_t)ret;
        c->q_bytes -= (size_t)ret;
        fl__tls_queue_drop_sent(c);
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
    fl__tls_conn_fail(c, 0);
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
        fl__tls_conn_fail(c, 0);
}

static void timer_fired(uv_timer_t *t)
{
    fl_tls_conn_t *c = t->data;
    if (c->state == ST_CLOSING) {
        FL_LOG_D(WHO, "%s: graceful close timed out", c->addr);
        fl__tls_conn_fail(c, 0);
    } else if (c->state == ST_OPEN && c->is_server && !c->admitted) {
        FL_LOG_W(WHO, "%s ('%s'): no Hello within %u ms: closing", c->addr, c->peer,
                 c->ctx->admit_timeout_ms);
        conn_protocol_error(c, FL_ETIMEDOUT, "no Hello in time");
    } else if (c->state == ST_HANDSHAKE || c->state == ST_CONNECTING) {
        FL_LOG_W(WHO, "handshake with %s refused: timed out after %u ms", c->addr,
                 c->ctx->handshake_timeout_ms);
        fl__tls_conn_fail(c, FL_ETIMEDOUT);
    }
}

/* How much the next read may take: the rest of the current TLS record and
 * the next record's header, never more. A read then never runs ahead into
 * records the application may not want yet: when it pauses reading (the
 * server does so for every upload beyond its buffers, on a thousand
 * connections at once), at most a few header bytes per connection wait in
 * memory (fl__tls_stash_rest) and the rest stays in the kernel, where back-pressure
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
 * whose input it has taken whole (fl__tls_conn_read ran to WANT_READ): its record
 * buffer at in_hdr + in_left (mbedtls_ssl_fetch_input in mbedTLS 2.x reads
 * there, and only there), with *room bytes to the buffer's end. NULL when
 * this mbedTLS keeps the fields private. */
unsigned char *fl__tls_ssl_in_tail(fl_tls_conn_t *c, size_t *room)
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

void fl__tls_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    fl_tls_conn_t *c = h->data;
    (void)suggested;
    size_t want = read_want(c), room = 0;
    if (c->state == ST_OPEN && !c->rec_busy && !c->in_len && mbedtls_ssl_get_bytes_avail(&c->ssl) == 0) {
        /* Straight into mbedTLS's record buffer, where bio_recv (or a
         * record job's fl__tlsjobs_rec_recv) then finds the bytes in place. */
        unsigned char *at = fl__tls_ssl_in_tail(c, &room);
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
int fl__tls_stash_rest(fl_tls_conn_t *c)
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
        fl__tls_conn_read(c);
    if (c->paused && c->state == ST_OPEN && fl__tls_stash_rest(c) != 0)
        fl__tls_conn_fail(c, FL_ENOMEM);
    c->in_ptr = NULL;
    c->in_len = 0;
    c->in_feed = 0;
}

/* The socket reported an error or the peer's close (nread < 0). */
void fl__tls_read_failed(fl_tls_conn_t *c, int nread)
{
    if (c->state == ST_HANDSHAKE)
        FL_LOG_W(WHO, "handshake with %s refused: connection closed by peer (%s)", c->addr, uv_strerror(nread));
    else if (c->state == ST_OPEN && (!fl_wire_reader_idle(&c->rd) || c->st.in_tensor))
        FL_LOG_W(WHO, "%s ('%s'): connection lost mid-transfer (%s)", c->addr, c->peer, uv_strerror(nread));
    fl__tls_conn_fail(c, nread == UV_EOF ? FL_ECLOSED : FL_ENET);
}

void fl__tls_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
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
        fl__tls_read_failed(c, (int)nread);
        return;
    }
    int first = !c->rx_any;
    c->rx_any = 1;
    if (first && c->state == ST_HANDSHAKE && c->is_server &&
        !looks_like_tls((const unsigned char *)buf->base, (size_t)nread)) {
        FL_LOG_W(WHO, "handshake with %s refused: peer is not speaking TLS (plaintext?)", c->addr);
        fl__tls_conn_fail(c, FL_ETLS);
        return;
    }
    size_t body = c->rec_left; /* of the record these bytes continue */
    track_records(c, (const unsigned char *)buf->base, (size_t)nread);
    if (c->state == ST_OPEN && c->ctx->rec_jobs) {
        fl__tlsjobs_rec_take(c, (const unsigned char *)buf->base, (size_t)nread, body);
        return;
    }
    if (c->state == ST_HANDSHAKE && c->is_server && c->ctx->hs_max) {
        int rc = fl__tlsjobs_hs_take(c, (const unsigned char *)buf->base, (size_t)nread);
        if (rc)
            fl__tls_conn_fail(c, rc);
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
        fl__tls_conn_fail(c, FL_ENET);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        set_addr(c, (struct sockaddr *)&ss);
    if (s->ctx->nconns > s->ctx->max_conns) {
        FL_LOG_W(WHO, "refusing %s: %u connections already open", c->addr, s->ctx->max_conns);
        fl__tls_conn_fail(c, FL_ETOOBIG);
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
        fl__tls_conn_fail(c, FL_EAGAIN);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_timer_start(&c->timer, timer_fired, s->ctx->handshake_timeout_ms, 0);
    int r = uv_read_start((uv_stream_t *)&c->tcp, fl__tls_alloc_cb, fl__tls_read_cb);
    c->reading = r == 0;
    if (r != 0)
        fl__tls_conn_fail(c, FL_ENET);
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
        fl__tls_conn_fail(c, FL_ENET);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->state = ST_HANDSHAKE;
    int r = uv_read_start((uv_stream_t *)&c->tcp, fl__tls_alloc_cb, fl__tls_read_cb);
    c->reading = r == 0;
    if (r != 0) {
        fl__tls_conn_fail(c, FL_ENET);
        return;
    }
    conn_handshake(c); /* sends the ClientHello */
}

static void start_connect(fl_tls_conn_t *c, const struct sockaddr *sa)
{
    set_addr(c, sa);
    c->creq = malloc(sizeof *c->creq);
    if (!c->creq) {
        fl__tls_conn_fail(c, FL_ENOMEM);
        return;
    }
    c->creq->data = c;
    int r = uv_tcp_connect(c->creq, &c->tcp, sa, connected);
    if (r != 0) {
        free(c->creq);
        c->creq = NULL;
        FL_LOG_W(WHO, "cannot connect to %s: %s", c->addr, uv_strerror(r));
        fl__tls_conn_fail(c, FL_ENET);
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
            fl__tls_conn_fail(c, FL_ENET);
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
    fl__tls_conn_release(c); /* the reference the resolution held */
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
        fl__tls_conn_fail(c, FL_EINVAL);
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
            fl__tls_conn_fail(c, FL_ENOMEM);
        } else {
            c->gai->data = c;
            c->handles++; /* the connection lives until the resolution reports */
            int r = uv_getaddrinfo(loop, c->gai, resolved, host, service, &hints);
            if (r != 0) {
                c->handles--;
                free(c->gai);
                c->gai = NULL;
                FL_LOG_W(WHO, "cannot resolve '%s': %s", host, uv_strerror(r));
                fl__tls_conn_fail(c, FL_ENET);
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
        fl__tls_conn_pump(c);
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
        fl__tls_conn_fail(c, 0);
        return;
    }
    c->state = ST_CLOSING;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    uv_timer_start(&c->timer, timer_fired, CLOSE_GRACE_MS, 0);
    fl__tls_conn_pump(c); /* finishes the close when nothing is queued */
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
                fl__tls_conn_fail(c, FL_ENOMEM);
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
            fl__tlsjobs_rec_flow(c);
        else
            fl__tlsjobs_rec_continue(c);
        return;
    }
    if (c->in_feed) {
        /* Called from a callback of this connection: the read loop that
         * called it simply carries on. */
        uv_read_start((uv_stream_t *)&c->tcp, fl__tls_alloc_cb, fl__tls_read_cb);
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
        uv_read_start((uv_stream_t *)&c->tcp, fl__tls_alloc_cb, fl__tls_read_cb) != 0)
        fl__tls_conn_fail(c, FL_ENET);
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
