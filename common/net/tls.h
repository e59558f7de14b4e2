/* tls: fedopt connections — mutual TLS 1.2 (mbedTLS) driven non-blocking on
 * libuv streams, carrying the framed protocol of common/wire.
 *
 * One event loop: mbedTLS reads ciphertext from and writes it to memory
 * (custom bio callbacks over the uv stream's buffers), so a handshake or a
 * record never blocks. Only TLS 1.2 with ECDHE key exchange and AEAD suites
 * (ChaCha20-Poly1305, AES-GCM) is offered.
 *
 * Server handshakes run in libuv's thread pool (uv_queue_work), so a storm of
 * connecting clients uses every core and the loop keeps serving the
 * connections already open: the loop copies a connection's handshake
 * ciphertext into a job, a worker runs mbedTLS over those bytes in memory and
 * collects its answer, and the loop sends the answer once the job is back. A
 * connection's ssl context is touched by one thread at a time: by the worker
 * while its job runs, otherwise by the loop; at most handshake_jobs jobs are
 * queued at once (connections further along go first), the rest wait in
 * order. What handshakes on several threads share is made safe here: the
 * random generator and the session-ticket keys are behind mutexes of this
 * module (whatever mbedTLS's threading option), and the certificates' and
 * key's elliptic-curve tables are computed before the first job (see
 * tlsctx.c's shared_state_ready).
 *
 * A server connection's records are decrypted in the thread pool too
 * (record_jobs): one job per connection at a time, in order. The job reads
 * the socket itself, as much as mbedTLS asks for (a record at a time, up to
 * 1 MiB per job), decrypts straight into the frame reader and stops at the
 * end of a frame, which the loop then hands to the application (a tensor
 * chunk in the expected canonical form is decrypted straight into the
 * tensor and checksummed in the job, without stopping:
 * fl_wire_reader_expect); records of
 * at most 1 KiB (a heartbeat, a Hello) are decrypted on the loop, where
 * that costs less than a trip through the pool. Sending is the same: more
 * than 16 KiB of queued plaintext (a model) is encrypted and written by a
 * job, which shares the connection's one job slot with the decrypting ones
 * and writes as much as the kernel takes (up to 512 KiB per job); less (a
 * Welcome, a result) is encrypted on the loop. Clients do all of it on
 * their loop.
 *
 * Mutual TLS is the default: a server requires a client certificate signed by
 * the fleet CA, a client verifies the server's certificate and its name. A
 * peer's identity is its certificate's common name (fl_tls_conn_peer).
 * Turning client certificates off is the explicit fl_tls_opts_t.no_client_cert
 * and is logged as a warning.
 *
 * Life cycle of a connection (fl_tls_conn_t, owned by this module):
 *   server: fl_tls_server_start accepts; a connection whose handshake fails is
 *           logged and dropped with no connection callback (on_handshake_fail
 *           counts it); on success on_open runs.
 *   client: fl_tls_connect returns the connection at once; on_open runs after
 *           the handshake, or on_close runs with the reason if it fails.
 *   then:   on_message for every message or completed tensor, on_drain when the
 *           send queue empties, and exactly once on_close — the last callback;
 *           the connection is freed when on_close returns.
 * Callbacks run on the loop thread. Calling fl_tls_conn_close (or send) from
 * inside any callback is allowed.
 *
 * Sending: fl_tls_conn_send queues a reference to an encoded, refcounted
 * buffer (fl_buf_t from fl_wire_encode*), so one encoded model is shared by
 * every connection it goes to; each connection encrypts from it record by
 * record, only as fast as the kernel takes the records. Back-pressure: a
 * record the kernel does not take waits in mbedTLS's own record buffer until
 * the socket drains; the rest waits as references in the queue
 * (fl_tls_conn_queued) and on_drain says when it is empty. Receiving can be
 * paused (fl_tls_conn_pause_read) while the application is busy; reads stop
 * at TLS record boundaries, so the kernel, not this process, holds what a
 * paused connection has not read.
 *
 * Memory: an idle open connection holds mbedTLS's two 16 KiB record buffers,
 * its session and the peer certificate, on either side — a compile-time size
 * of Debian's mbedTLS (bench_tls's idle-connection line measures it).
 * A transfer held up by back-pressure in either direction adds nothing to
 * that (test_tls: tens of bytes per connection): there is no staging buffer
 * for ciphertext and no copy of what a paused connection had read beyond a
 * record header. Ciphertext is read straight into mbedTLS's record buffer
 * (one 64 KiB buffer per context serves handshakes), and a frame buffer
 * exists only while a frame (or a tensor transfer) is arriving.
 *
 * CPU: a server's handshakes, record decryption and large sends run in the
 * thread pool (above, tlsjobs.c); a client's all run on its loop thread.
 * On the loop a connection encrypts at most max_inflight bytes per loop
 * turn, so sending one model to many clients interleaves the connections
 * instead of stalling the loop for a whole model per client; decryption
 * happens as bytes arrive. Half-open connections are capped
 * (max_handshakes). The context (keys, tickets, settings) is tlsctx.h. */
#ifndef FL_TLS_H
#define FL_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <uv.h>

#include "common/net/tlsctx.h"
#include "common/net/wire.h"

typedef struct fl_tls_server fl_tls_server_t;
typedef struct fl_tls_conn fl_tls_conn_t;

/* Callbacks of a connection. ud is the pointer given to fl_tls_server_start
 * or fl_tls_connect; fl_tls_conn_set_data attaches per-connection state. */
typedef struct {
    /* Handshake done; fl_tls_conn_peer is the peer's identity. May be NULL. */
    void (*on_open)(fl_tls_conn_t *c, void *ud);
    /* One message (ev->kind FL_WIRE_EV_MESSAGE, ev->msg) or one complete,
     * checksum-verified tensor (FL_WIRE_EV_TENSOR, ev->data/nbytes). The
     * callback may take ev->msg or ev->data by setting the field to NULL;
     * anything left is freed when it returns. */
    void (*on_message)(fl_tls_conn_t *c, fl_wire_event_t *ev, void *ud);
    /* The send queue became empty (everything handed to the kernel). May be NULL. */
    void (*on_drain)(fl_tls_conn_t *c, void *ud);
    /* The connection is gone: reason 0 after fl_tls_conn_close or the peer's
     * orderly close, else the FL_E* code of the failure. Last callback. */
    void (*on_close)(fl_tls_conn_t *c, int reason, void *ud);
    /* Server only: an accepted connection's handshake failed (it gets no
     * other callback), with the FL_E* reason; for counting. May be NULL. */
    void (*on_handshake_fail)(int reason, void *ud);
} fl_tls_cbs_t;

/* Listens on host:port (numeric IPv4 or IPv6 address; port 0 picks one, see
 * fl_tls_server_port) and accepts connections with the callbacks in cbs
 * (copied). Returns 0, FL_EINVAL, FL_ENET (bind/listen failed, logged) or
 * FL_ENOMEM. The server is the caller's until fl_tls_server_close. */
int fl_tls_server_start(uv_loop_t *loop, fl_tls_ctx_t *ctx, const char *host, int port,
                        const fl_tls_cbs_t *cbs, void *ud, fl_tls_server_t **out);

/* The port the server listens on. */
int fl_tls_server_port(const fl_tls_server_t *s);

/* Stops listening and frees the server once its handles are closed; open
 * connections are not affected. Accepts NULL. */
void fl_tls_server_close(fl_tls_server_t *s);

/* Running out of file descriptors. The server counts the descriptors open
 * when it starts and reads RLIMIT_NOFILE; when one more connection would
 * leave fewer than 16 under the limit it stops accepting (the connection
 * stays pending in the kernel's backlog, not accepted and dropped), logs it
 * (at most one line per 10 s, with counts) and retries with a back-off from
 * 50 ms to 2 s until connections close. Failed accepts that libuv reports
 * are counted and logged the same way. */
typedef struct {
    uint64_t accepted;      /* connections accepted */
    uint64_t accept_errors; /* accept(2) failures libuv reported */
    uint64_t pauses;        /* times accepting paused at the open-file limit */
    double paused_s;        /* seconds spent paused */
    uint64_t hs_refused;    /* closed at once: max_handshakes were under way */
} fl_tls_server_stats_t;

/* The server's counters (zeros for NULL). */
void fl_tls_server_stats(const fl_tls_server_t *s, fl_tls_server_stats_t *out);

/* Connects to host:port (an address or a name resolved asynchronously) and
 * starts the handshake, expecting the server certificate to carry
 * server_name (NULL = host). *out is valid until on_close returns. Returns 0
 * (later failures arrive as on_close), FL_EINVAL or FL_ENOMEM. */
int fl_tls_connect(uv_loop_t *loop, fl_tls_ctx_t *ctx, const char *host, int port,
                   const char *server_name, const fl_tls_cbs_t *cbs, void *ud,
                   fl_tls_conn_t **out);

/* Queues buf (one or more whole frames) for sending and takes a reference to
 * it; the caller keeps its own. Data queued before the handshake completes
 * is sent after it. Returns 0 or FL_ECLOSED when the connection is closing. */
int fl_tls_conn_send(fl_tls_conn_t *c, fl_buf_t *buf);

/* Encodes msg (fl_wire_encode) and queues it. Returns 0, FL_ECLOSED or an
 * encoding error. */
int fl_tls_conn_send_msg(fl_tls_conn_t *c, const Fedopt__Envelope *msg);

/* Plaintext bytes queued and not yet encrypted. */
size_t fl_tls_conn_queued(const fl_tls_conn_t *c);

/* Closes gracefully: what is queued is sent, then close_notify, then the
 * socket closes (at most 5 s later in any case); on_close follows with reason
 * 0. Nothing is received any more. Safe to call twice or from callbacks. */
void fl_tls_conn_close(fl_tls_conn_t *c);

/* Stops delivering messages (and reading from the socket) until resume. */
void fl_tls_conn_pause_read(fl_tls_conn_t *c);
void fl_tls_conn_resume_read(fl_tls_conn_t *c);

/* Admits the peer (a server calls it on a valid Hello): frames up to the
 * context's max_frame from now on, and no admission deadline. */
void fl_tls_conn_admit(fl_tls_conn_t *c);

/* Sets the largest tensor this connection accepts from now on. */
void fl_tls_conn_set_max_tensor(fl_tls_conn_t *c, uint64_t max_tensor);

/* Receives the next tensor into dst (cap bytes, the caller's, 64-byte
 * aligned for float use) when it fits: see fl_wire_stream_set_dst. Typically
 * called from on_message for the TaskOffer / Update that announces it. The
 * event then has borrowed set and data == dst. */
void fl_tls_conn_set_tensor_dst(fl_tls_conn_t *c, void *dst, size_t cap);

/* The peer's identity: its certificate's CN ("" when the server accepted a
 * client without a certificate; "" before on_open). Valid until on_close
 * returns. */
const char *fl_tls_conn_peer(const fl_tls_conn_t *c);

/* The peer's certificate (the one whose CN is fl_tls_conn_peer), or NULL
 * when the peer has no identity. Borrowed: valid until on_close returns.
 * Secure aggregation forwards it (raw.p, raw.len: DER) so that other
 * clients can check a peer's signature with its key (pk). */
const mbedtls_x509_crt *fl_tls_conn_peer_cert(const fl_tls_conn_t *c);

/* The peer's address as "ip:port". */
const char *fl_tls_conn_addr(const fl_tls_conn_t *c);

/* The negotiated suite's name, or "" before the handshake. */
const char *fl_tls_conn_suite(const fl_tls_conn_t *c);

/* The application's per-connection pointer (NULL until set). */
void fl_tls_conn_set_data(fl_tls_conn_t *c, void *data);
void *fl_tls_conn_data(const fl_tls_conn_t *c);

#endif
