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

/* A round's clipping and privacy record (table round_privacy); NaN = not
 * applicable (no clipping, or no DP). */
typedef struct {
    double clip_norm;   /* the L2 bound this round's deltas were clipped to */
    double clip_within; /* fraction of its accepted updates with norm <= clip_norm */
    double dp_q;        /* DP: the sampling rate accounted (selected / connected) */
    double dp_noise_multiplier;
    double dp_delta;
    double dp_epsilon;  /* the run's epsilon at dp_delta after this round */
} fl_store_privacy_t;

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
    double train_accuracy; /* example-weighted mean over accepted updates that reported one; NaN = none
                              (a designated initializer that leaves it out writes 0: set it) */
    const fl_store_privacy_t *privacy; /* NULL = none (no clipping, no DP) */
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
    double train_accuracy; /* the client's training metric (accuracy, recall@5); NaN = not reported */
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

/* How long (seconds) a write waits by default for another process's write
 * lock (a backup, an operator's sqlite3 session) before it fails. */
#define FL_STORE_LOCK_WAIT 600.0

/* Sets that wait for st's writes (run creation, round and federated
 * evaluation commits). Each write first waits SQLite's busy timeout (5 s),
 * then retries with a doubling back-off up to 8 s, logging a warning per
 * failed try, until `seconds` have passed in all; then it fails with
 * FL_EDB. Negative values are ignored. */
void fl_store_set_lock_wait(fl_store_t *st, double seconds);

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

/* Commits one round: its row, its updates, its round_privacy row (when
 * r->privacy is set) and (when model is non-NULL) its
 * checkpoint, all in one transaction; then, with keep > 0, deletes the run's
 * checkpoints older than the newest `keep` (never round 0's predecessor of
 * resume: the newest is always kept). */
int fl_store_commit_round(fl_store_t *st, const fl_store_round_t *r, const fl_store_update_t *ups, size_t nups,
                          const float *model, size_t numel, const uint8_t *state, size_t state_len, int64_t keep);

/* Calls fn for each closed round of the run that has a round_privacy row,
 * in round order (resume replays the accountant and the adaptive clip bound
 * from them); stops at fn's first non-zero return and returns it. A database
 * without the table has none. Returns 0, FL_EDB or fn's code. */
int fl_store_privacy_each(fl_store_t *st, int64_t run_id,
                          int (*fn)(int64_t round, const fl_store_privacy_t *p, void *user), void *user);

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

/* Runs PRAGMA quick_check over the whole database (the b-trees, their
 * pages and records; not the blobs' contents). Returns 0 when it says "ok",
 * FL_EDB otherwise, after logging each problem it names (at most 20). */
int fl_store_quick_check(fl_store_t *st);

/* What fl_store_verify_checkpoints found. */
typedef struct {
    int64_t checked, damaged;
    int64_t first_round;  /* the newest damaged checkpoint's round, -1 = none */
    int newest_damaged;   /* a run's newest checkpoint (the one resume loads) is damaged */
} fl_store_damage_t;

/* Verifies the checksum (and float32 length) of every checkpoint of run_id
 * (of every run when run_id <= 0), logging each damaged one with its run and
 * round. Returns 0, FL_ECHECKSUM when any is damaged, or FL_EDB; fills *dmg
 * (may be NULL) in every case. */
int fl_store_verify_checkpoints(fl_store_t *st, int64_t run_id, fl_store_damage_t *dmg);

/* What --resume checks before it trusts the database: quick_check (any
 * problem: FL_EDB, resume refused) and every checkpoint of run_id (the
 * newest damaged: FL_ECHECKSUM, refused; only older ones damaged: a warning
 * naming them, and 0). Everything found is logged. */
int fl_store_check_resume(fl_store_t *st, int64_t run_id);

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
