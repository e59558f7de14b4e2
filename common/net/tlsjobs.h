/* tlsjobs: a server connection's work in libuv's thread pool (internal to
 * the tls module; see tls.h for what it promises and ARCHITECTURE.md for
 * the picture). Handshakes, decryption of received records and encryption
 * of large sends run as jobs, one per connection at a time (its job slot,
 * rec_busy), so the loop thread stays free for the other connections; the
 * loop never touches a connection's ssl context while its job runs. Every
 * function here is called on the loop thread, except the two bio
 * callbacks, which run in a job. */
#ifndef FL_TLSJOBS_H
#define FL_TLSJOBS_H

#include <stddef.h>

#include "common/net/tls_int.h"

/* Handshakes: ciphertext of a handshake under way (p, n) for the
 * connection's next handshake job; queues the job when the context has a
 * free place (hs_max), in order otherwise. Returns 0 or FL_ENOMEM. */
int fl__tlsjobs_hs_take(fl_tls_conn_t *c, const unsigned char *p, size_t n);

/* Records: ciphertext libuv read for an open connection (p, n, the record
 * body's length): a small record is decrypted on the loop, a larger one
 * goes to a record job. rec_flow starts or stops libuv's reading as the
 * connection's state asks; rec_continue carries on after a job or a resume
 * (held frame, leftover bytes, or polling). rec_recv is mbedTLS's receive
 * callback inside a record job. */
void fl__tlsjobs_rec_take(fl_tls_conn_t *c, const unsigned char *p, size_t n, size_t body);
void fl__tlsjobs_rec_flow(fl_tls_conn_t *c);
void fl__tlsjobs_rec_continue(fl_tls_conn_t *c);
int fl__tlsjobs_rec_recv(fl_tls_conn_t *c, unsigned char *buf, size_t len);

/* Sending: starts a send job over the queue as it stands (the pump decides
 * when); snd_send is mbedTLS's send callback inside it. */
void fl__tlsjobs_snd_dispatch(fl_tls_conn_t *c);
int fl__tlsjobs_snd_send(fl_tls_conn_t *c, const unsigned char *buf, size_t len);

#endif
