/* exp_cell: runs one cell of an experiment as a real federation — a
 * `fedopt-server run` and a `fedopt-client fleet` over mutual TLS on loopback,
 * with the cell's own certificates, database and logs in its directory:
 *
 *   DIR/cells/KEY/cell.ini    what the cell is (read by `report`)
 *   DIR/cells/KEY/pki/        its fleet CA, server and client certificates
 *   DIR/cells/KEY/run.db      the server's round log (fedopt-server rounds ...)
 *   DIR/cells/KEY/server.log, fleet.log   both processes' output, appended per attempt
 *   DIR/cells/KEY/done        written once the run is finished with every round
 *   DIR/cells/KEY/lock        held (flock) by the runner, the server and the fleet
 *
 * A cell is driven without blocking (`start`, then `poll` until it is over),
 * so a sweep runs several at once from one process. The children get
 * PR_SET_PDEATHSIG(SIGTERM): a sweep that dies (even by SIGKILL) stops its
 * servers, which mark their runs stopped; the next sweep waits for the cell's
 * lock (the dying processes still hold it) and resumes the run from its last
 * committed round with the server's --resume auto. Linux only (prctl). */
#ifndef FL_SERVER_EXP_CELL_H
#define FL_SERVER_EXP_CELL_H

#include <stddef.h>
#include <sys/types.h>

#include "server/exp_grid.h"

/* The programs a cell runs: the fedopt-server and fedopt-client binaries. */
typedef struct {
    const char *server_bin, *client_bin;
    double start_timeout; /* seconds for the server to listen (loading evaluation data) */
} fl_exp_env_t;

typedef enum { FL_EXP_CELL_IDLE, FL_EXP_CELL_LOCKING, FL_EXP_CELL_STARTING, FL_EXP_CELL_RUNNING, FL_EXP_CELL_OVER } fl_exp_cell_state_t;

/* One running cell. The grid and cell are borrowed for its lifetime. */
typedef struct {
    const fl_exp_grid_t *g;
    const fl_exp_cell_t *c;
    const fl_exp_env_t *env;
    char dir[4096];
    fl_exp_cell_state_t state;
    int lockfd;
    pid_t server, fleet;
    int server_status, fleet_status; /* from waitpid; -1 while running */
    long log_offset;
    double t0, t_state, t_fleet_gone, t_server_gone;
    int stop_sent;
    long resumed_from; /* rounds committed before this attempt */
    int resuming;      /* the cell's database has a run already: this attempt continues it */
    int ok;            /* when over: 1 finished, 0 failed (why) */
    char why[512];
} fl_exp_run_t;

/* The cell's directory: DIR/cells/KEY. */
int fl_exp_cell_dir(const char *outdir, const fl_exp_cell_t *c, char *buf, size_t len);

/* 1 when DIR/cells/KEY/done exists, else 0. */
int fl_exp_cell_is_done(const char *celldir);

/* Rounds committed so far in the cell's database (0 when none) and its
 * newest run's status ("" when none; "interrupted" for a run the database
 * says is running while no process holds the cell's lock: its server died
 * without a word, as with a sweep killed by SIGKILL). Read-only; 0 or
 * FL_EDB. */
int fl_exp_cell_progress(const char *celldir, long *rounds, char *status, size_t len);

/* Starts a cell: creates its directory, cell.ini and certificates, takes its
 * lock (waiting, in poll, for a previous sweep's processes to let go) and
 * launches the server. Returns 0 (then poll it) or an FL_E* code with r->why. */
int fl_exp_run_start(fl_exp_run_t *r, const fl_exp_grid_t *g, const fl_exp_cell_t *c, const char *outdir,
                     const fl_exp_env_t *env);

/* Tells the run that `pid` exited with `status` (from waitpid); returns 1 if
 * it was one of its processes. */
int fl_exp_run_reaped(fl_exp_run_t *r, pid_t pid, int status);

/* Advances the run (reads the server's log for its port, starts the fleet,
 * stops the fleet once the server is gone, checks the database and writes
 * `done`). Returns 1 once the run is over (r->ok, r->why), else 0. */
int fl_exp_run_poll(fl_exp_run_t *r);

/* Stops a run's processes (SIGTERM) and releases its lock. */
void fl_exp_run_abort(fl_exp_run_t *r);

#endif
