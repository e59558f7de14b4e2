/* daemon: `fedopt-server run` — the event loop that drives rounds over TLS.
 *
 * Start-up (the model, the TLS material, the listening socket, the new or
 * resumed run) is server/startup's; the round's bookkeeping and its
 * ServerOpt steps are server/round's, the federated evaluation's
 * server/fedeval's, the upload buffers and the aggregation worker
 * server/uploads'. This module admits connections (Hello) and uploads
 * (Update, delta) and drives the phases: waiting for clients, a round, its
 * commit, its federated evaluation, the stop. Deadlines, heartbeat silences and wait_timeout are
 * measured on the monotonic clock; stored times are wall-clock.
 *
 * One libuv loop on one thread owns every connection, the round bookkeeping
 * (server/round) and the queue of received uploads. Work that takes long —
 * adding an upload into the ServerOpt accumulator, ServerOpt's finish, the
 * central evaluation and the SQLite commit — runs in the libuv thread pool,
 * one job at a time, so heartbeats and uploads keep flowing meanwhile.
 *
 * Memory: at most max_buffered_uploads uploads exist at once (receiving,
 * queued or being added); a client that starts an upload beyond that has
 * its connection paused, so its bytes wait in TCP. Add the global model, the
 * float64 accumulator, the optimizer state and one encoded model buffer
 * shared by every connection, and the peak is independent of K.
 *
 * Stopping: SIGTERM/SIGINT stop accepting connections, abandon the open round
 * (nothing of it is committed; --resume redoes it), mark the run 'stopped',
 * say Bye to the clients and return 0. */
#ifndef FL_SERVER_DAEMON_H
#define FL_SERVER_DAEMON_H

#include "server/config.h"

/* Runs the server with a finished configuration (fl_server_config_finish)
 * until the run ends or a signal stops it. Returns the process exit status:
 * 0 (run finished, or stopped by a signal: 'stopped') or 1 (failure, logged;
 * a run that had started is marked 'failed', one that could not start was
 * never written). */
int fl_daemon_run(const fl_server_config_t *cfg);

#endif
