/* startup: what `fedopt-server run` does before its event loop — the listen
 * address, the open-file limit, the model and optimizer, the TLS material,
 * the listening socket, and the run itself: a new one or the resumed one
 * restored from its last checkpoint.
 *
 * The order is the contract (server/daemon.c follows it):
 *   fl_startup_parse_listen, fl_startup_raise_nofile, fl_startup_model;
 *   fl_startup_tls       loads the CA, certificate and key: a missing or bad
 *                        file fails here, before the database is opened
 *                        (so it is not even created);
 *   fl_startup_plan      reads the database only: picks the run to resume
 *                        and restores its model and optimizer state (proved
 *                        by the checkpoint's checksum), or prepares a new
 *                        run's initial model;
 *   fl_startup_listen    binds: a port in use fails here, before anything
 *                        is written;
 *   fl_startup_open_run  the only writer: creates the new run (status
 *                        'running' and its round-0 checkpoint) or marks the
 *                        resumed run 'running' again, then creates the round
 *                        and federated-evaluation bookkeepers.
 * So a server that cannot start leaves no run behind, and `--resume` never
 * finds an empty run it created.
 *
 * Errors are logged here and returned as FL_E* codes; nothing exits. */
#ifndef FL_SERVER_STARTUP_H
#define FL_SERVER_STARTUP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/net/tls.h"
#include "common/nn/models.h"
#include "server/config.h"
#include "server/eval.h"
#include "server/fedeval.h"
#include "server/round.h"
#include "server/serveropt.h"
#include "server/store.h"

/* What fl_startup_plan decided, completed by fl_startup_open_run. */
typedef struct {
    int resume;       /* 1: continue run_id; 0: a new run */
    int done;         /* the resumed run already has all its rounds (and evaluations) */
    int64_t run_id;   /* the resumed run; a new run's id once open_run created it */
    int64_t round_no; /* the first round to run */
    int64_t fe_due;   /* a round whose federated evaluation is missing (0 = none) */
    int64_t ck_round; /* resume: the checkpoint restored */
    uint32_t ck_sum;  /* resume: its checksum, reproduced by the restore */
} fl_startup_plan_t;

/* Splits "HOST:PORT" or "[IPv6]:PORT" into host (hlen bytes) and *port.
 * Returns 0 or FL_ECONFIG (logged). */
int fl_startup_parse_listen(const char *listen, char *host, size_t hlen, int *port);

/* One descriptor per client: raises the soft open-file limit towards
 * max_connections as far as the hard limit allows, and warns when it stays
 * below. */
void fl_startup_raise_nofile(const fl_server_config_t *cfg);

/* Builds the central evaluation (*eval, NULL when off), the model layout
 * (*model), the global model buffer (*x, *numel floats, uninitialized) and
 * the optimizer (*opt). On failure what was built is left in the out
 * pointers for the caller to free (each free function accepts NULL).
 * Returns 0, FL_ECONFIG (unknown model), FL_ENOMEM or a loader's code. */
int fl_startup_model(const fl_server_config_t *cfg, fl_eval_t **eval, fl_model_t **model, float **x,
                     size_t *numel, fl_serveropt_t **opt);

/* Reads the database only. With resume on, finds the run to resume, refuses
 * a changed [run] setting (FL_ECONFIG), restores x and opt from its newest
 * checkpoint (fl_round_restore) and sets round_no, fe_due and done;
 * `--resume` without a run is FL_ENOTFOUND (`resume = auto` starts a new
 * run). A new run's initial model goes into x (the init file, or seeded
 * initialization into model). Fills *plan. */
int fl_startup_plan(const fl_server_config_t *cfg, fl_store_t *st, fl_model_t *model, fl_serveropt_t *opt,
                    float *x, size_t numel, fl_startup_plan_t *plan);

/* Loads the server's TLS material (CA, certificate, key) into a context for
 * a model of numel parameters. Returns fl_tls_ctx_new's code (logged). */
int fl_startup_tls(const fl_server_config_t *cfg, size_t numel, fl_tls_ctx_t **tls);

/* Binds and listens on host:port with the connection callbacks, logging
 * the port ("listening on HOST port N", which scripts wait for). Returns
 * fl_tls_server_start's code (FL_ENET for a port in use, logged). */
int fl_startup_listen(const fl_server_config_t *cfg, uv_loop_t *loop, fl_tls_ctx_t *tls, const char *host, int port,
                      const fl_tls_cbs_t *cbs, void *ud, fl_tls_server_t **server);

/* Writes the run: plan->done marks the resumed run 'finished' and returns
 * (no bookkeepers); plan->resume marks it 'running'; otherwise creates the
 * new run from x and opt's state and sets plan->run_id. Then creates the
 * round (*round) and, with fed_eval_every > 0, the federated-evaluation
 * (*fe) bookkeepers; if that fails the run is marked 'failed'. */
int fl_startup_open_run(const fl_server_config_t *cfg, fl_store_t *st, const fl_serveropt_t *opt, const float *x,
                        size_t numel, fl_startup_plan_t *plan, fl_round_t **round, fl_fedeval_t **fe);

/* The process's peak resident memory in KiB (VmHWM), or 0 when unknown. */
long fl_startup_peak_rss_kib(void);

#endif
