#include "common/net/tlsjobs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_internal.h>

#include "common/base/error.h"
#include "common/base/log.h"

#define WHO "tls"

/* ---- server handshakes in the thread pool ------------------------------- */

static void hs_dispatch(fl_tls_ctx_t *x);
static void hs_enqueue(fl_tls_conn_t *c);
static int hs_unread(fl_tls_conn_t *c);
static void hs_ready(fl_tls_conn_t *c);
static void hs_closed_by_peer(fl_tls_conn_t *c);

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
        fl__tls_flush_job_out(c, "handshake with %s refused: write failed: %s");
        /* What the job left unread and what arrived meanwhile (application
         * data behind the client's Finished: a resumed handshake's client
         * sends its first message right after) is read once open. */
        if (c->job_ret == 0 && c->hs_in.len && c->state == ST_HANDSHAKE) {
            if (fl_bytes_append(&in, c->hs_in.data, c->hs_in.len) != 0)
                fl__tls_conn_fail(c, FL_ENOMEM);
            else
                fl_bytes_free(&c->hs_in);
        }
        c->in_ptr = in.data;
        c->in_len = in.len;
        c->in_feed = 1;
        if (c->state == ST_HANDSHAKE)
            fl__tls_handshake_result(c, c->job_ret);
        if (c->state == ST_HANDSHAKE && c->in_len && hs_unread(c) != 0)
            fl__tls_conn_fail(c, FL_ENOMEM);
        if (c->paused && c->state == ST_OPEN && fl__tls_stash_rest(c) != 0)
            fl__tls_conn_fail(c, FL_ENOMEM);
        c->in_ptr = NULL;
        c->in_len = 0;
        c->in_feed = 0;
        if (c->state == ST_HANDSHAKE)
            hs_ready(c);
        if (c->state == ST_HANDSHAKE && c->hs_eof && !c->hs_queued)
            hs_closed_by_peer(c);
        else if (c->state == ST_OPEN && c->hs_eof) /* reading had stopped: it ends here */
            fl__tls_conn_fail(c, c->hs_eof == UV_EOF ? FL_ECLOSED : FL_ENET);
    }
    fl_bytes_free(&in);
    if (c->state != ST_HANDSHAKE)
        fl_bytes_free(&c->job_out);
    fl__tls_conn_release(c); /* the job's reference */
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
            fl__tls_conn_release(c);
            continue;
        }
        if (c->hs_eof && !c->hs_started) {
            /* It gave up while waiting (its own timeout, under a storm): a
             * ServerHello and a signature for nobody would only make the
             * others wait longer. */
            hs_closed_by_peer(c);
            fl__tls_conn_release(c);
            continue;
        }
        c->job_in = c->hs_in; /* moved: the job's now */
        c->job_in_off = 0;
        memset(&c->hs_in, 0, sizeof c->hs_in);
        c->hs_busy = 1;
        c->hs_started = 1;
        c->job_work.data = c;
        x->hs_jobs++;
        x->hs_stats.jobs++;
        if (x->hs_jobs > x->hs_stats.peak_jobs)
            x->hs_stats.peak_jobs = x->hs_jobs;
        int r = uv_queue_work(c->tcp.loop, &c->job_work, hs_work, hs_after);
        if (r != 0) {
            x->hs_jobs--;
            c->hs_busy = 0;
            FL_LOG_W(WHO, "handshake with %s refused: cannot queue it: %s", c->addr, uv_strerror(r));
            fl__tls_conn_fail(c, FL_ENOMEM);
            fl__tls_conn_release(c);
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
    fl__tls_conn_fail(c, c->hs_eof == UV_EOF ? FL_ECLOSED : FL_ENET);
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
int fl__tlsjobs_hs_take(fl_tls_conn_t *c, const unsigned char *p, size_t n)
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


/* ---- server records in the thread pool ----------------------------------- */

/* A server connection's records are decrypted by jobs in libuv's thread
 * pool, one job per connection at a time, in order. The loop polls the
 * socket: libuv reads the first bytes (at most the rest of a record and the
 * next header, read_want) straight into mbedTLS's record buffer; a small
 * record is decrypted there and then on the loop (REC_INLINE_MAX), anything
 * larger goes to a job with reading stopped. The job runs mbedtls_ssl_read
 * straight into the frame reader, and its receive callback (fl__tlsjobs_rec_recv) takes
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
int fl__tlsjobs_rec_recv(fl_tls_conn_t *c, unsigned char *buf, size_t len)
{
    if (c->in_len)
        return fl__tls_take_in(c, buf, len);
    if (c->job_bytes >= REC_JOB_MAX)
        return MBEDTLS_ERR_SSL_WANT_READ; /* the loop polls again */
    /* One read per record where the kernel has them: asked for a header,
     * read on into the record buffer (the body lands where mbedTLS will ask
     * for it); asked for a body, take the next header along (moved into
     * place when asked for). What is read beyond the request waits in
     * in_ptr, in mbedTLS's buffer beyond the current record. */
    size_t ask = len, room = 0;
    unsigned char *tail = fl__tls_ssl_in_tail(c, &room);
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
        fl__tls_next_dst(c, &dst, &want);
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
 * everything read so far (fl__tls_alloc_cb reads into its record buffer). */
void fl__tlsjobs_rec_flow(fl_tls_conn_t *c)
{
    int want = c->state == ST_OPEN && !c->paused && !c->rec_busy && !c->job_held && !c->in_len &&
               mbedtls_ssl_get_bytes_avail(&c->ssl) == 0;
    if (want && !c->reading) {
        c->reading = 1;
        if (uv_read_start((uv_stream_t *)&c->tcp, fl__tls_alloc_cb, fl__tls_read_cb) != 0)
            fl__tls_conn_fail(c, FL_ENET);
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
        fl__tls_conn_fail(c, FL_ENET);
        return -1;
    }
    c->job_fd = fd;
    c->job_sock = 0;
    c->job_bytes = 0;
    c->rec_busy = 1;
    fl__tlsjobs_rec_flow(c); /* stops libuv's reading */
    c->handles++; /* the job's reference */
    c->job_work.data = c;
    int r = uv_queue_work(c->tcp.loop, &c->job_work, work, after);
    if (r != 0) {
        c->rec_busy = 0;
        FL_LOG_W(WHO, "%s ('%s'): cannot queue a %s job: %s; closing", c->addr, c->peer, what, uv_strerror(r));
        fl__tls_conn_fail(c, FL_ENOMEM);
        fl__tls_conn_release(c);
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
void fl__tlsjobs_rec_continue(fl_tls_conn_t *c)
{
    if (c->rec_busy || c->state != ST_OPEN || c->paused)
        return;
    if (c->job_held) {
        uint8_t *frame = c->job_frame;
        c->job_frame = NULL;
        c->job_held = 0;
        c->in_feed = 1;
        fl__tls_deliver(c, 1, frame, c->job_frame_len);
        c->in_feed = 0;
        if (c->state != ST_OPEN || c->paused)
            return;
    }
    if (c->in_len || mbedtls_ssl_get_bytes_avail(&c->ssl) > 0)
        rec_dispatch(c);
    else
        fl__tlsjobs_rec_flow(c);
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
        fl__tls_flush_job_out(c, "%s: write failed: %s");
        c->in_feed = 1;
        if (c->state != ST_OPEN)
            free(frame); /* the write above failed */
        else if (c->job_ret == REC_DATA && c->job_rc == 1 && c->paused) {
            /* paused meanwhile (from another connection's callback): no
             * message until the resume (fl__tlsjobs_rec_continue) */
            c->job_frame = frame;
            c->job_held = 1;
        } else if (c->job_ret == REC_DATA)
            fl__tls_deliver(c, c->job_rc, frame, c->job_frame_len);
        else if (c->job_ret == MBEDTLS_ERR_SSL_WANT_READ)
            fl__tls_charge_frames(c);
        else if (c->job_sock)
            fl__tls_read_failed(c, c->job_sock);
        else
            fl__tls_read_end(c, c->job_ret);
        frame = NULL; /* freed, held, delivered, or there was none */
        c->in_feed = 0;
    } else if (status != 0 && c->state == ST_OPEN) {
        fl__tls_conn_fail(c, FL_ECANCELED);
    }
    free(frame);
    if (c->state != ST_OPEN) {
        fl_bytes_free(&c->job_out);
        c->in_ptr = NULL;
        c->in_len = 0;
    }
    if (c->rec_pump && (c->state == ST_OPEN || c->state == ST_CLOSING)) {
        c->rec_pump = 0;
        fl__tls_conn_pump(c);
    }
    fl__tlsjobs_rec_continue(c);
    if (c->state == ST_CLOSED && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, fl__tls_handle_closed); /* deferred by close_handles */
    fl__tls_conn_release(c); /* the job's reference */
}

/* Ciphertext libuv read for an open server connection with record jobs
 * (p: in mbedTLS's record buffer, or the context's shared one). */
void fl__tlsjobs_rec_take(fl_tls_conn_t *c, const unsigned char *p, size_t n, size_t body)
{
    if (p == c->ctx->rbuf) {
        /* The shared buffer is the next read's: a job gets a copy. */
        fl_bytes_free(&c->job_in);
        if (fl_bytes_append(&c->job_in, p, n) != 0) {
            fl__tls_conn_fail(c, FL_ENOMEM);
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
        fl__tls_conn_read(c);
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
            fl__tlsjobs_rec_flow(c);
        return;
    }
    rec_dispatch(c);
}

/* ---- server sending in the thread pool ------------------------------------ */

/* A server connection's queued plaintext beyond SND_INLINE_MAX (a model's
 * offer to a client) is encrypted by a job in libuv's thread pool, sharing
 * the connection's one job slot (rec_busy) with the record jobs, so the
 * ssl context has one user at a time. The job runs mbedtls_ssl_write over
 * the queue as it stood at dispatch and its send callback (fl__tlsjobs_snd_send) writes
 * each record to the socket itself while the kernel takes it, up to
 * SND_JOB_MAX bytes. The record it could not write stays in mbedTLS's
 * output buffer, exactly as bio_send leaves one on the loop: snd_after hands
 * it to libuv (wr_busy), whose fl__tls_write_done pumps again, so between two jobs
 * the loop polls the connection, reads what the peer sent, and other
 * connections' jobs get the pool. Reading is stopped while the job runs.
 * bench_tls's download lines measure the cost per byte; test_tls's
 * heartbeats-during-downloads test shows the loop answering meanwhile. */

/* A send job's send callback: the socket directly, never blocking. */
int fl__tlsjobs_snd_send(fl_tls_conn_t *c, const unsigned char *buf, size_t len)
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
        /* the same arguments after WANT_WRITE as fl__tls_conn_pump would give */
        size_t n = left < SND_RECORD ? left : SND_RECORD;
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

void fl__tlsjobs_snd_dispatch(fl_tls_conn_t *c)
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
    c->rec_pump = 0; /* pumped below, or by fl__tls_write_done */
    x->rec_stats.send_jobs_now--;
    c->q_bytes -= c->job_plain;
    fl__tls_queue_drop_sent(c);
    if (c->state == ST_OPEN || c->state == ST_CLOSING) {
        if (status != 0) {
            fl__tls_conn_fail(c, FL_ECANCELED);
        } else if (c->job_ret == MBEDTLS_ERR_SSL_WANT_WRITE && c->job_wr_len) {
            int r = fl__tls_write_held(c, c->job_wr_ptr, c->job_wr_len);
            if (r < 0)
                fl__tls_send_failed(c, r);
        } else if (c->job_ret < 0 && c->job_sock) {
            fl__tls_send_failed(c, c->job_sock);
        } else if (c->job_ret < 0) {
            fl__tls_log_mbed(FL_LOG_WARN, "TLS write failed", c->job_ret);
            fl__tls_conn_fail(c, FL_ETLS);
        } else {
            fl__tls_conn_pump(c); /* what was queued meanwhile, the close, or on_drain */
        }
    }
    fl__tlsjobs_rec_continue(c);
    if (c->state == ST_CLOSED && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, fl__tls_handle_closed); /* deferred by close_handles */
    fl__tls_conn_release(c); /* the job's reference */
}
