/* store: the server's SQLite round log, checkpoints and resume.
 *
 * One database file in WAL mode with synchronous=FULL holds every run, round
 * and update and the checkpoints (schema in docs/operations.md and in store.c). A
 * round's rows and its checkpoint are written in one transaction, so after a
 * crash at any instant the database holds whole rounds only; a round that was
 * open at the crash left nothing and is redone on resume.
 *
 * Checkpoints store the model as raw little-endian float32 bytes and the
 * ServerOpt state as fl_serveropt_state_save bytes, with a CRC-32 over both
 * (model bytes first) that is checked on every load.
 *
 * Not thread-safe: one fl_store_t is used by one thread at a time. */
#ifndef FL_SERVER_STORE_H
#define FL_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct fl_store fl_store_t;

/* What a new run records about itself. Strings are borrowed for the call. */
typedef struct {
    const char *model;
    const char *server_opt;
    uint64_t seed;
    const char *config_json; /* every setting, as a JSON object */
} fl_store_run_info_t;

/* One round's row. Times are Unix seconds (stored as ISO-8601 UTC text). */
typedef struct {
    int64_t run_id;
    int64_t round;
    double started_at, finished_at;
    const char *status; /* "closed" (model changed) or "abandoned" (too few reports) */
    int64_t clients_selected, clients_reported, clients_dropped;
    double examples;
    double train_loss;    /* example-weighted mean over accepted updates; NaN = none */
    double eval_loss;     /* NaN = not evaluated this round */
    double eval_accuracy; /* NaN = not evaluated this round */
    int64_t bytes_in, bytes_out;
} fl_store_round_t;

/* One update (or a selected client that never delivered one). */
typedef struct {
    const char *client; /* the client's certificate name */
    const char *status; /* "accepted", "refused" or "dropped" */
    const char *reason; /* NULL for accepted; why it was refused or dropped */
    double num_examples;
    double train_loss; /* NaN = unknown */
    double delta_norm; /* NaN = unknown */
    int64_t bytes;
    double seconds; /* from the task being sent to the update's last byte (or the drop) */
} fl_store_update_t;

/* One federated evaluation: the global model after `round`, evaluated by a
 * sample of clients on their own data. */
typedef struct {
    int64_t run_id;
    int64_t round;
    double started_at, finished_at;
    int64_t clients_selected, clients_reported, clients_refused, clients_dropped;
    double examples; /* sum of the accepted answers' example counts */
    double loss;     /* example-weighted mean over accepted answers; NaN = none */
    double accuracy; /* example-weighted mean over accepted answers; NaN = none */
} fl_store_fedeval_t;

/* One client's answer to a federated evaluation (or its absence). */
typedef struct {
    const char *client;
    const char *status; /* "accepted", "refused" or "dropped" */
    const char *reason; /* NULL for accepted */
    double num_examples, loss, accuracy; /* NaN = unknown */
    double seconds; /* from the request to the answer (or the drop) */
} fl_store_fedeval_result_t;

/* A loaded checkpoint; free with fl_store_checkpoint_free. */
typedef struct {
    int64_t run_id;
    int64_t round; /* 0 = the initial model */
    float *model;
    size_t numel;
    uint8_t *state;
    size_t state_len;
    uint32_t checksum;
} fl_store_checkpoint_t;

/* Opens (creating when absent, unless readonly) the database at path, sets
 * WAL mode and creates the schema. Returns 0, FL_EDB (logged with the path)
 * or FL_ENOMEM. */
int fl_store_open(const char *path, int readonly, fl_store_t **out);

/* Closes the database. Accepts NULL. */
void fl_store_close(fl_store_t *st);

/* Creates a run with status 'running' and its round-0 checkpoint (the initial
 * model and optimizer state) in one transaction. */
int fl_store_run_create(fl_store_t *st, const fl_store_run_info_t *info, const float *model, size_t numel,
                        const uint8_t *state, size_t state_len, int64_t *run_id);

/* Finds the most recent run that can be resumed (status 'running' after a
 * crash, 'stopped' after a signal, 'failed' after an error: its committed
 * rounds and checkpoints are whole). Returns 0 or FL_ENOTFOUND. */
int fl_store_run_resumable(fl_store_t *st, int64_t *run_id);

/* Sets a run's status ("running", "stopped", "finished", "failed") and, unless
 * it is "running", its finished_at. */
int fl_store_run_set_status(fl_store_t *st, int64_t run_id, const char *status);

/* Copies the run's config JSON into a new malloc'ed string. */
int fl_store_run_config(fl_store_t *st, int64_t run_id, char **json);

/* Reads one value of the run's config as text (JSON strings unquoted) into
 * buf. Returns 0, FL_ENOTFOUND or FL_ERANGE. */
int fl_store_run_config_value(fl_store_t *st, int64_t run_id, const char *name, char *buf, size_t len);

/* The number of the next round of the run: one past the last committed round
 * (closed or abandoned), 1 for a fresh run. */
int fl_store_next_round(fl_store_t *st, int64_t run_id, int64_t *round);

/* Commits one round: its row, its updates and (when model is non-NULL) its
 * checkpoint, all in one transaction; then, with keep > 0, deletes the run's
 * checkpoints older than the newest `keep` (never round 0's predecessor of
 * resume: the newest is always kept). */
int fl_store_commit_round(fl_store_t *st, const fl_store_round_t *r, const fl_store_update_t *ups, size_t nups,
                          const float *model, size_t numel, const uint8_t *state, size_t state_len, int64_t keep);

/* Commits a federated evaluation's row and its per-client rows in one
 * transaction (tables fed_evals and fed_eval_results). */
int fl_store_commit_fedeval(fl_store_t *st, const fl_store_fedeval_t *e, const fl_store_fedeval_result_t *res,
                            size_t nres);

/* *exists = 1 when the run has a federated evaluation row for `round`. */
int fl_store_fedeval_exists(fl_store_t *st, int64_t run_id, int64_t round, int *exists);

/* Loads the checkpoint of `round` (or the newest one when round < 0),
 * verifying its checksum. Returns 0, FL_ENOTFOUND, FL_ECHECKSUM, FL_EFORMAT
 * or FL_EDB. */
int fl_store_checkpoint_load(fl_store_t *st, int64_t run_id, int64_t round, fl_store_checkpoint_t *cp);

/* Frees a checkpoint's buffers. Accepts NULL. */
void fl_store_checkpoint_free(fl_store_checkpoint_t *cp);

/* CRC-32 of the model bytes followed by the state bytes (the checksum column). */
uint32_t fl_store_checksum(const float *model, size_t numel, const uint8_t *state, size_t state_len);

/* Prints one line per run (admin command `runs`). */
int fl_store_print_runs(fl_store_t *st, FILE *out);

/* Prints one line per round of run_id (or of the newest run when run_id <= 0). */
int fl_store_print_rounds(fl_store_t *st, int64_t run_id, FILE *out);

/* Prints one line per update of a run's round (admin command `updates`). */
int fl_store_print_updates(fl_store_t *st, int64_t run_id, int64_t round, FILE *out);

/* Prints a round's federated evaluation (its fed_evals row, then one line per
 * fed_eval_results row: admin command `evals`). Returns 0, FL_ENOTFOUND (none
 * for that round, or a database from before them: said on out) or FL_EDB. */
int fl_store_print_fedeval(fl_store_t *st, int64_t run_id, int64_t round, FILE *out);

/* Counts the updates of a run's round with the given status (NULL = all). */
int fl_store_count_updates(fl_store_t *st, int64_t run_id, int64_t round, const char *status, int64_t *count);

/* The underlying handle, for tests and admin queries. */
struct sqlite3 *fl_store_db(fl_store_t *st);

#endif
