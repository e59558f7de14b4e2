#include "server/store.h"

#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/bytes.h"
#include "common/base/clock.h"
#include "common/base/error.h"
#include "common/base/log.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "store.c writes model blobs as the host's floats: a big-endian host needs a byte swap here"
#endif

struct fl_store {
    sqlite3 *db;
    char *path;
};

/* The schema. Times are ISO-8601 UTC text. A NULL loss or accuracy means "not
 * measured" (no accepted update, or no evaluation that round). */
static const char *const schema =
    "CREATE TABLE IF NOT EXISTS runs("
    " id INTEGER PRIMARY KEY,"
    " started_at TEXT NOT NULL,"
    " finished_at TEXT,"
    " status TEXT NOT NULL CHECK(status IN ('running','stopped','finished','failed')),"
    " model TEXT NOT NULL,"
    " server_opt TEXT NOT NULL,"
    " seed TEXT NOT NULL,"
    " config TEXT NOT NULL CHECK(json_valid(config)));"
    "CREATE TABLE IF NOT EXISTS rounds("
    " run_id INTEGER NOT NULL REFERENCES runs(id),"
    " round INTEGER NOT NULL,"
    " started_at TEXT NOT NULL,"
    " finished_at TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK(status IN ('closed','abandoned')),"
    " clients_selected INTEGER NOT NULL,"
    " clients_reported INTEGER NOT NULL,"
    " clients_dropped INTEGER NOT NULL,"
    " examples REAL NOT NULL,"
    " train_loss REAL,"
    " eval_loss REAL,"
    " eval_accuracy REAL,"
    " bytes_in INTEGER NOT NULL,"
    " bytes_out INTEGER NOT NULL,"
    " PRIMARY KEY(run_id, round));"
    "CREATE TABLE IF NOT EXISTS updates("
    " run_id INTEGER NOT NULL REFERENCES runs(id),"
    " round INTEGER NOT NULL,"
    " client TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK(status IN ('accepted','refused','dropped')),"
    " reason TEXT,"
    " num_examples REAL,"
    " train_loss REAL,"
    " delta_norm REAL,"
    " bytes INTEGER NOT NULL,"
    " seconds REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS updates_round ON updates(run_id, round);"
    "CREATE TABLE IF NOT EXISTS checkpoints("
    " run_id INTEGER NOT NULL REFERENCES runs(id),"
    " round INTEGER NOT NULL,"
    " model BLOB NOT NULL,"
    " optimizer_state BLOB NOT NULL,"
    " checksum INTEGER NOT NULL,"
    " PRIMARY KEY(run_id, round));"
    /* Federated evaluation (fed_eval_every): one row per evaluation of the
     * global model of `round` on a sample of clients' own data, and one row
     * per sampled client (or per refused answer). Added after the first
     * schema: CREATE IF NOT EXISTS gives older databases the tables on their
     * next open, and nothing in the older tables changed. */
    "CREATE TABLE IF NOT EXISTS fed_evals("
    " run_id INTEGER NOT NULL REFERENCES runs(id),"
    " round INTEGER NOT NULL,"
    " started_at TEXT NOT NULL,"
    " finished_at TEXT NOT NULL,"
    " clients_selected INTEGER NOT NULL,"
    " clients_reported INTEGER NOT NULL,"
    " clients_refused INTEGER NOT NULL,"
    " clients_dropped INTEGER NOT NULL,"
    " examples REAL NOT NULL,"
    " loss REAL,"
    " accuracy REAL,"
    " PRIMARY KEY(run_id, round));"
    "CREATE TABLE IF NOT EXISTS fed_eval_results("
    " run_id INTEGER NOT NULL REFERENCES runs(id),"
    " round INTEGER NOT NULL,"
    " client TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK(status IN ('accepted','refused','dropped')),"
    " reason TEXT,"
    " num_examples REAL,"
    " loss REAL,"
    " accuracy REAL,"
    " seconds REAL NOT NULL);"
    "CREATE INDEX IF NOT EXISTS fed_eval_results_round ON fed_eval_results(run_id, round);";

#define TIME_SQL "strftime('%Y-%m-%dT%H:%M:%fZ', ?, 'unixepoch')"
#define TIME_SQL_N(n) "strftime('%Y-%m-%dT%H:%M:%fZ', ?" #n ", 'unixepoch')"

static int has_table(fl_store_t *st, const char *name);
static const char *col(sqlite3_stmt *s, int i);

static int db_err(fl_store_t *st, const char *what)
{
    FL_LOG_E("store", "%s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
    return FL_EDB;
}

static int exec(fl_store_t *st, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        FL_LOG_E("store", "%s: %s", st->path, msg ? msg : sqlite3_errmsg(st->db));
        sqlite3_free(msg);
        return FL_EDB;
    }
    return 0;
}

int fl_store_open(const char *path, int readonly, fl_store_t **out)
{
    if (!path || !out)
        return FL_EINVAL;
    *out = NULL;
    fl_store_t *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return FL_ENOMEM;
    }
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = FL_EDB;
    if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
        FL_LOG_E("store", "%s: cannot open: %s", path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    /* A busy database (an admin command reading while the daemon writes)
     * waits instead of failing at once. */
    sqlite3_busy_timeout(st->db, 5000);
    if (!readonly) {
        /* WAL: readers never block the daemon's commit. synchronous=FULL: a
         * committed round survives power loss, not only a process crash. */
        if ((rc = exec(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")))
            goto fail;
        if ((rc = exec(st, schema)))
            goto fail;
    } else {
        sqlite3_stmt *s = NULL;
        if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM runs LIMIT 1", -1, &s, NULL) != SQLITE_OK) {
            FL_LOG_E("store", "%s: not a fedopt database (%s)", path, sqlite3_errmsg(st->db));
            sqlite3_finalize(s);
            rc = FL_EDB;
            goto fail;
        }
        sqlite3_finalize(s);
    }
    *out = st;
    return 0;
fail:
    fl_store_close(st);
    return rc;
}

void fl_store_close(fl_store_t *st)
{
    if (!st)
        return;
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

struct sqlite3 *fl_store_db(fl_store_t *st)
{
    return st ? st->db : NULL;
}

uint32_t fl_store_checksum(const float *model, size_t numel, const uint8_t *state, size_t state_len)
{
    uint32_t c = fl_crc32(0, model, numel * sizeof(float));
    return state_len ? fl_crc32(c, state, state_len) : c;
}

static void bind_real_or_null(sqlite3_stmt *s, int i, double v)
{
    if (isfinite(v))
        sqlite3_bind_double(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

/* Binds the first five columns that a per-client row (updates,
 * fed_eval_results) starts with: run, round, client, status, reason. */
static void bind_client_row(sqlite3_stmt *s, int64_t run_id, int64_t round, const char *client,
                            const char *status, const char *reason)
{
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, round);
    sqlite3_bind_text(s, 3, client ? client : "?", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, status ? status : "refused", -1, SQLITE_STATIC);
    if (reason)
        sqlite3_bind_text(s, 5, reason, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, 5);
}

static int insert_checkpoint(fl_store_t *st, int64_t run, int64_t round, const float *model, size_t numel,
                             const uint8_t *state, size_t state_len)
{
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    if ((uint64_t)numel * sizeof(float) > (uint64_t)0x7fffffff || state_len > 0x7fffffff) {
        FL_LOG_E("store", "%s: checkpoint of %zu floats exceeds SQLite's blob limit", st->path, numel);
        return FL_ETOOBIG;
    }
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO checkpoints(run_id, round, model, optimizer_state, checksum)"
                           " VALUES(?,?,?,?,?)",
                           -1, &s, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(s, 1, run);
    sqlite3_bind_int64(s, 2, round);
    sqlite3_bind_blob(s, 3, model, (int)(numel * sizeof(float)), SQLITE_STATIC);
    /* A zero-length blob must still be a blob, not NULL: bind an empty one. */
    sqlite3_bind_blob(s, 4, state_len ? (const void *)state : (const void *)"", (int)state_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 5, fl_store_checksum(model, numel, state, state_len));
    if (sqlite3_step(s) != SQLITE_DONE)
        goto out;
    rc = 0;
out:
    if (rc)
        db_err(st, "writing a checkpoint");
    sqlite3_finalize(s);
    return rc;
}

int fl_store_run_create(fl_store_t *st, const fl_store_run_info_t *info, const float *model, size_t numel,
                        const uint8_t *state, size_t state_len, int64_t *run_id)
{
    if (!st || !info || !model || !run_id || !info->config_json)
        return FL_EINVAL;
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    double started = fl_clock_wall_s(); /* stored: wall clock */
    if ((rc = exec(st, "BEGIN IMMEDIATE")))
        return rc;
    rc = FL_EDB;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO runs(started_at, status, model, server_opt, seed, config)"
                           " VALUES(" TIME_SQL ", 'running', ?, ?, ?, json(?))",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    char seed[24];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)info->seed);
    sqlite3_bind_double(s, 1, started);
    sqlite3_bind_text(s, 2, info->model ? info->model : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, info->server_opt ? info->server_opt : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, seed, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 5, info->config_json, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    *run_id = sqlite3_last_insert_rowid(st->db);
    if ((rc = insert_checkpoint(st, *run_id, 0, model, numel, state, state_len)))
        goto fail_quiet;
    sqlite3_finalize(s);
    return exec(st, "COMMIT");
fail:
    db_err(st, "creating a run");
fail_quiet:
    sqlite3_finalize(s);
    exec(st, "ROLLBACK");
    return rc ? rc : FL_EDB;
}

int fl_store_run_resumable(fl_store_t *st, int64_t *run_id)
{
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT id FROM runs WHERE status IN ('running','stopped','failed')"
                           " ORDER BY id DESC LIMIT 1",
                           -1, &s, NULL) != SQLITE_OK) {
        db_err(st, "looking for a run to resume");
        goto out;
    }
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW) {
        *run_id = sqlite3_column_int64(s, 0);
        rc = 0;
    } else if (r == SQLITE_DONE) {
        rc = FL_ENOTFOUND;
    } else {
        db_err(st, "looking for a run to resume");
    }
out:
    sqlite3_finalize(s);
    return rc;
}

int fl_store_run_set_status(fl_store_t *st, int64_t run_id, const char *status)
{
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    if (sqlite3_prepare_v2(st->db,
                           "UPDATE runs SET status = ?1,"
                           " finished_at = CASE WHEN ?1 = 'running' THEN NULL ELSE " 
                           "strftime('%Y-%m-%dT%H:%M:%fZ', ?2, 'unixepoch') END WHERE id = ?3",
                           -1, &s, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(s, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 2, fl_clock_wall_s()); /* stored: wall clock */
    sqlite3_bind_int64(s, 3, run_id);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto out;
    rc = sqlite3_changes(st->db) == 1 ? 0 : FL_ENOTFOUND;
out:
    if (rc == FL_EDB)
        db_err(st, "setting a run's status");
    sqlite3_finalize(s);
    return rc;
}

/* Runs a one-row, one-column text query with an int64 and an optional text
 * parameter; copies the text into a new malloc'ed string. */
static int query_text(fl_store_t *st, const char *sql, int64_t a, const char *b, char **out)
{
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    *out = NULL;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(s, 1, a);
    if (b)
        sqlite3_bind_text(s, 2, b, -1, SQLITE_STATIC);
    int r = sqlite3_step(s);
    if (r == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL) {
        const char *t = (const char *)sqlite3_column_text(s, 0);
        rc = (*out = strdup(t ? t : "")) ? 0 : FL_ENOMEM;
    } else if (r == SQLITE_ROW || r == SQLITE_DONE) {
        rc = FL_ENOTFOUND;
    }
out:
    if (rc == FL_EDB)
        db_err(st, "reading a run");
    sqlite3_finalize(s);
    return rc;
}

int fl_store_run_config(fl_store_t *st, int64_t run_id, char **json)
{
    return query_text(st, "SELECT config FROM runs WHERE id = ?1", run_id, NULL, json);
}

int fl_store_run_config_value(fl_store_t *st, int64_t run_id, const char *name, char *buf, size_t len)
{
    char *v = NULL, path[96];
    if (snprintf(path, sizeof path, "$.\"%s\"", name) >= (int)sizeof path)
        return FL_EINVAL;
    int rc = query_text(st, "SELECT json_extract(config, ?2) FROM runs WHERE id = ?1", run_id, path, &v);
    if (rc)
        return rc;
    /* json_extract gives integers and reals back as SQL numbers; the stored
     * JSON spelled booleans as true/false, which come back as 1/0. */
    if (strlen(v) >= len)
        rc = FL_ERANGE;
    else
        strcpy(buf, v);
    free(v);
    return rc;
}

int fl_store_next_round(fl_store_t *st, int64_t run_id, int64_t *round)
{
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    if (sqlite3_prepare_v2(st->db, "SELECT coalesce(max(round), 0) + 1 FROM rounds WHERE run_id = ?", -1, &s,
                           NULL) != SQLITE_OK ||
        (sqlite3_bind_int64(s, 1, run_id), sqlite3_step(s)) != SQLITE_ROW) {
        db_err(st, "reading the last round");
        goto out;
    }
    *round = sqlite3_column_int64(s, 0);
    rc = 0;
out:
    sqlite3_finalize(s);
    return rc;
}

int fl_store_commit_round(fl_store_t *st, const fl_store_round_t *r, const fl_store_update_t *ups, size_t nups,
                          const float *model, size_t numel, const uint8_t *state, size_t state_len, int64_t keep)
{
    if (!st || !r || (nups && !ups))
        return FL_EINVAL;
    sqlite3_stmt *s = NULL;
    int rc;
    if ((rc = exec(st, "BEGIN IMMEDIATE")))
        return rc;
    rc = FL_EDB;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO rounds(run_id, round, started_at, finished_at, status, clients_selected,"
                           " clients_reported, clients_dropped, examples, train_loss, eval_loss, eval_accuracy,"
                           " bytes_in, bytes_out) VALUES(?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', ?3, 'unixepoch'),"
                           " strftime('%Y-%m-%dT%H:%M:%fZ', ?4, 'unixepoch'), ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
                           " ?13, ?14)",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(s, 1, r->run_id);
    sqlite3_bind_int64(s, 2, r->round);
    sqlite3_bind_double(s, 3, r->started_at);
    sqlite3_bind_double(s, 4, r->finished_at);
    sqlite3_bind_text(s, 5, r->status ? r->status : "closed", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, r->clients_selected);
    sqlite3_bind_int64(s, 7, r->clients_reported);
    sqlite3_bind_int64(s, 8, r->clients_dropped);
    sqlite3_bind_double(s, 9, r->examples);
    bind_real_or_null(s, 10, r->train_loss);
    bind_real_or_null(s, 11, r->eval_loss);
    bind_real_or_null(s, 12, r->eval_accuracy);
    sqlite3_bind_int64(s, 13, r->bytes_in);
    sqlite3_bind_int64(s, 14, r->bytes_out);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    s = NULL;
    if (nups) {
        if (sqlite3_prepare_v2(st->db,
                               "INSERT INTO updates(run_id, round, client, status, reason, num_examples,"
                               " train_loss, delta_norm, bytes, seconds) VALUES(?,?,?,?,?,?,?,?,?,?)",
                               -1, &s, NULL) != SQLITE_OK)
            goto fail;
        for (size_t i = 0; i < nups; i++) {
            const fl_store_update_t *u = &ups[i];
            sqlite3_reset(s);
            bind_client_row(s, r->run_id, r->round, u->client, u->status, u->reason);
            bind_real_or_null(s, 6, u->num_examples);
            bind_real_or_null(s, 7, u->train_loss);
            bind_real_or_null(s, 8, u->delta_norm);
            sqlite3_bind_int64(s, 9, u->bytes);
            sqlite3_bind_double(s, 10, isfinite(u->seconds) ? u->seconds : 0);
            if (sqlite3_step(s) != SQLITE_DONE)
                goto fail;
        }
        sqlite3_finalize(s);
        s = NULL;
    }
    if (model) {
        if ((rc = insert_checkpoint(st, r->run_id, r->round, model, numel, state, state_len)))
            goto fail_quiet;
        rc = FL_EDB;
        if (keep > 0) {
            /* Keep the newest `keep` checkpoints of the run; older ones go. */
            if (sqlite3_prepare_v2(st->db,
                                   "DELETE FROM checkpoints WHERE run_id = ?1 AND round NOT IN"
                                   " (SELECT round FROM checkpoints WHERE run_id = ?1 ORDER BY round DESC LIMIT ?2)",
                                   -1, &s, NULL) != SQLITE_OK)
                goto fail;
            sqlite3_bind_int64(s, 1, r->run_id);
            sqlite3_bind_int64(s, 2, keep);
            if (sqlite3_step(s) != SQLITE_DONE)
                goto fail;
            sqlite3_finalize(s);
            s = NULL;
        }
    }
    return exec(st, "COMMIT");
fail:
    db_err(st, "committing a round");
fail_quiet:
    sqlite3_finalize(s);
    exec(st, "ROLLBACK");
    return rc;
}

int fl_store_checkpoint_load(fl_store_t *st, int64_t run_id, int64_t round, fl_store_checkpoint_t *cp)
{
    if (!st || !cp)
        return FL_EINVAL;
    memset(cp, 0, sizeof *cp);
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    const char *sql = round >= 0 ? "SELECT round, model, optimizer_state, checksum FROM checkpoints"
                                   " WHERE run_id = ?1 AND round = ?2"
                                 : "SELECT round, model, optimizer_state, checksum FROM checkpoints"
                                   " WHERE run_id = ?1 ORDER BY round DESC LIMIT 1";
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK) {
        db_err(st, "reading a checkpoint");
        goto out;
    }
    sqlite3_bind_int64(s, 1, run_id);
    if (round >= 0)
        sqlite3_bind_int64(s, 2, round);
    int r = sqlite3_step(s);
    if (r == SQLITE_DONE) {
        rc = FL_ENOTFOUND;
        goto out;
    }
    if (r != SQLITE_ROW) {
        db_err(st, "reading a checkpoint");
        goto out;
    }
    cp->run_id = run_id;
    cp->round = sqlite3_column_int64(s, 0);
    const void *m = sqlite3_column_blob(s, 1);
    size_t mlen = (size_t)sqlite3_column_bytes(s, 1);
    const void *o = sqlite3_column_blob(s, 2);
    size_t olen = (size_t)sqlite3_column_bytes(s, 2);
    cp->checksum = (uint32_t)sqlite3_column_int64(s, 3);
    if (mlen == 0 || mlen % sizeof(float)) {
        FL_LOG_E("store", "%s: run %lld round %lld: model blob of %zu bytes is not a float32 vector", st->path,
                 (long long)run_id, (long long)cp->round, mlen);
        rc = FL_EFORMAT;
        goto out;
    }
    cp->numel = mlen / sizeof(float);
    cp->model = malloc(mlen);
    cp->state = malloc(olen ? olen : 1);
    if (!cp->model || !cp->state) {
        rc = FL_ENOMEM;
        goto out;
    }
    memcpy(cp->model, m, mlen);
    if (olen)
        memcpy(cp->state, o, olen);
    cp->state_len = olen;
    if (fl_store_checksum(cp->model, cp->numel, cp->state, olen) != cp->checksum) {
        FL_LOG_E("store", "%s: run %lld round %lld: checkpoint checksum mismatch", st->path, (long long)run_id,
                 (long long)cp->round);
        rc = FL_ECHECKSUM;
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(s);
    if (rc)
        fl_store_checkpoint_free(cp);
    return rc;
}

void fl_store_checkpoint_free(fl_store_checkpoint_t *cp)
{
    if (!cp)
        return;
    free(cp->model);
    free(cp->state);
    cp->model = NULL;
    cp->state = NULL;
    cp->numel = cp->state_len = 0;
}

int fl_store_print_fedeval(fl_store_t *st, int64_t run_id, int64_t round, FILE *out)
{
    if (!has_table(st, "fed_evals")) {
        fprintf(out, "run %lld round %lld: no federated evaluations in this database\n", (long long)run_id,
                (long long)round);
        return FL_ENOTFOUND;
    }
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT clients_selected, clients_reported, clients_refused, clients_dropped,"
                           " printf('%.0f', examples),"
                           " CASE WHEN loss IS NULL THEN '-' ELSE printf('%.4f', loss) END,"
                           " CASE WHEN accuracy IS NULL THEN '-' ELSE printf('%.4f', accuracy) END,"
                           " printf('%.2f', (julianday(finished_at) - julianday(started_at)) * 86400)"
                           " FROM fed_evals WHERE run_id = ? AND round = ?",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "listing a federated evaluation");
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, round);
    int r = sqlite3_step(s);
    if (r != SQLITE_ROW) {
        sqlite3_finalize(s);
        if (r != SQLITE_DONE)
            return db_err(st, "listing a federated evaluation");
        fprintf(out, "run %lld round %lld: no federated evaluation\n", (long long)run_id, (long long)round);
        return FL_ENOTFOUND;
    }
    fprintf(out, "run %lld round %lld: %s asked, %s accepted, %s refused, %s dropped; %s examples, loss %s, "
                 "accuracy %s, %s s\n",
            (long long)run_id, (long long)round, col(s, 0), col(s, 1), col(s, 2), col(s, 3), col(s, 4), col(s, 5),
            col(s, 6), col(s, 7));
    sqlite3_finalize(s);
    s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT client, status, coalesce(reason, '-'),"
                           " CASE WHEN num_examples IS NULL THEN NULL ELSE printf('%.0f', num_examples) END,"
                           " CASE WHEN loss IS NULL THEN NULL ELSE printf('%.4f', loss) END,"
                           " CASE WHEN accuracy IS NULL THEN NULL ELSE printf('%.4f', accuracy) END,"
                           " printf('%.2f', seconds)"
                           " FROM fed_eval_results WHERE run_id = ? AND round = ? ORDER BY client, rowid",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "listing a federated evaluation");
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, round);
    fprintf(out, "%-20s %-9s %-20s %9s %10s %9s %8s\n", "client", "status", "reason", "examples", "loss",
            "accuracy", "seconds");
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        fprintf(out, "%-20s %-9s %-20s %9s %10s %9s %8s\n", col(s, 0), col(s, 1), col(s, 2), col(s, 3), col(s, 4),
                col(s, 5), col(s, 6));
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : db_err(st, "listing a federated evaluation");
}

int fl_store_count_updates(fl_store_t *st, int64_t run_id, int64_t round, const char *status, int64_t *count)
{
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT count(*) FROM updates WHERE run_id = ?1 AND round = ?2"
                           " AND (?3 IS NULL OR status = ?3)",
                           -1, &s, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, round);
    if (status)
        sqlite3_bind_text(s, 3, status, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_ROW)
        goto out;
    *count = sqlite3_column_int64(s, 0);
    rc = 0;
out:
    if (rc)
        db_err(st, "counting updates");
    sqlite3_finalize(s);
    return rc;
}

static const char *col(sqlite3_stmt *s, int i)
{
    const char *t = (const char *)sqlite3_column_text(s, i);
    return t ? t : "-";
}

int fl_store_print_runs(fl_store_t *st, FILE *out)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT r.id, r.status, r.model, r.server_opt, r.seed, r.started_at,"
                           " coalesce(r.finished_at, '-'),"
                           " (SELECT count(*) FROM rounds WHERE run_id = r.id),"
                           " (SELECT max(round) FROM checkpoints WHERE run_id = r.id)"
                           " FROM runs r ORDER BY r.id",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "listing runs");
    fprintf(out, "%-4s %-9s %-12s %-10s %-6s %-6s %-8s %-24s %s\n", "run", "status", "model", "server_opt",
            "seed", "rounds", "last_ckpt", "started_at", "finished_at");
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        fprintf(out, "%-4s %-9s %-12s %-10s %-6s %-6s %-9s %-24s %s\n", col(s, 0), col(s, 1), col(s, 2),
                col(s, 3), col(s, 4), col(s, 7), col(s, 8), col(s, 5), col(s, 6));
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : db_err(st, "listing runs");
}

/* 1 when the database has a table of that name. */
static int has_table(fl_store_t *st, const char *name)
{
    sqlite3_stmt *s = NULL;
    int yes = 0;
    if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", -1, &s, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(s) == SQLITE_ROW;
    }
    sqlite3_finalize(s);
    return yes;
}

/* The rounds listing with FED as its federated-accuracy column. */
#define ROUNDS_SQL(FED)                                                                                              \
    "SELECT round, status, clients_selected, clients_reported, clients_dropped, examples,"                            \
    " CASE WHEN train_loss IS NULL THEN NULL ELSE printf('%.4f', train_loss) END,"                                   \
    " CASE WHEN eval_loss IS NULL THEN NULL ELSE printf('%.4f', eval_loss) END,"                                     \
    " CASE WHEN eval_accuracy IS NULL THEN NULL ELSE printf('%.4f', eval_accuracy) END, " FED ","                    \
    " bytes_in, bytes_out,"                                                                                          \
    " printf('%.2f', (julianday(finished_at) - julianday(started_at)) * 86400),"                                     \
    " (SELECT printf('%08x', checksum) FROM checkpoints c"                                                           \
    "   WHERE c.run_id = rounds.run_id AND c.round = rounds.round)"                                                  \
    " FROM rounds WHERE run_id = ? ORDER BY round"

int fl_store_print_rounds(fl_store_t *st, int64_t run_id, FILE *out)
{
    sqlite3_stmt *s = NULL;
    if (run_id <= 0) {
        if (sqlite3_prepare_v2(st->db, "SELECT max(id) FROM runs", -1, &s, NULL) != SQLITE_OK ||
            sqlite3_step(s) != SQLITE_ROW) {
            sqlite3_finalize(s);
            return db_err(st, "finding the newest run");
        }
        if (sqlite3_column_type(s, 0) == SQLITE_NULL) {
            sqlite3_finalize(s);
            fprintf(out, "no runs\n");
            return FL_ENOTFOUND;
        }
        run_id = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        s = NULL;
    }
    /* A database written before federated evaluation existed, opened
     * read-only, has no fed_evals table: its column then reads "-". */
    int fed = has_table(st, "fed_evals");
    if (sqlite3_prepare_v2(st->db,
                           fed ? ROUNDS_SQL("(SELECT printf('%.4f', f.accuracy) FROM fed_evals f"
                                            "   WHERE f.run_id = rounds.run_id AND f.round = rounds.round"
                                            "   AND f.accuracy IS NOT NULL)")
                               : ROUNDS_SQL("NULL"),
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "listing rounds");
    sqlite3_bind_int64(s, 1, run_id);
    fprintf(out, "run %lld\n%-6s %-9s %4s %4s %4s %9s %10s %10s %8s %8s %12s %12s %8s %s\n", (long long)run_id,
            "round", "status", "sel", "rep", "drop", "examples", "train_loss", "eval_loss", "eval_acc", "fed_acc",
            "bytes_in", "bytes_out", "seconds", "checkpoint");
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        fprintf(out, "%-6s %-9s %4s %4s %4s %9s %10s %10s %8s %8s %12s %12s %8s %s\n", col(s, 0), col(s, 1),
                col(s, 2), col(s, 3), col(s, 4), col(s, 5), col(s, 6), col(s, 7), col(s, 8), col(s, 9), col(s, 10),
                col(s, 11), col(s, 12), col(s, 13));
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : db_err(st, "listing rounds");
}

int fl_store_commit_fedeval(fl_store_t *st, const fl_store_fedeval_t *e, const fl_store_fedeval_result_t *res,
                            size_t nres)
{
    if (!st || !e || (nres && !res))
        return FL_EINVAL;
    sqlite3_stmt *s = NULL;
    int rc;
    if ((rc = exec(st, "BEGIN IMMEDIATE")))
        return rc;
    if (sqlite3_prepare_v2(st->db,
                           "INSERT INTO fed_evals(run_id, round, started_at, finished_at, clients_selected,"
                           " clients_reported, clients_refused, clients_dropped, examples, loss, accuracy)"
                           " VALUES(?1, ?2, " TIME_SQL_N(3) ", " TIME_SQL_N(4) ", ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                           -1, &s, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(s, 1, e->run_id);
    sqlite3_bind_int64(s, 2, e->round);
    sqlite3_bind_double(s, 3, e->started_at);
    sqlite3_bind_double(s, 4, e->finished_at);
    sqlite3_bind_int64(s, 5, e->clients_selected);
    sqlite3_bind_int64(s, 6, e->clients_reported);
    sqlite3_bind_int64(s, 7, e->clients_refused);
    sqlite3_bind_int64(s, 8, e->clients_dropped);
    sqlite3_bind_double(s, 9, e->examples);
    bind_real_or_null(s, 10, e->loss);
    bind_real_or_null(s, 11, e->accuracy);
    if (sqlite3_step(s) != SQLITE_DONE)
        goto fail;
    sqlite3_finalize(s);
    s = NULL;
    if (nres) {
        if (sqlite3_prepare_v2(st->db,
                               "INSERT INTO fed_eval_results(run_id, round, client, status, reason, num_examples,"
                               " loss, accuracy, seconds) VALUES(?,?,?,?,?,?,?,?,?)",
                               -1, &s, NULL) != SQLITE_OK)
            goto fail;
        for (size_t i = 0; i < nres; i++) {
            const fl_store_fedeval_result_t *u = &res[i];
            sqlite3_reset(s);
            bind_client_row(s, e->run_id, e->round, u->client, u->status, u->reason);
            bind_real_or_null(s, 6, u->num_examples);
            bind_real_or_null(s, 7, u->loss);
            bind_real_or_null(s, 8, u->accuracy);
            sqlite3_bind_double(s, 9, isfinite(u->seconds) ? u->seconds : 0);
            if (sqlite3_step(s) != SQLITE_DONE)
                goto fail;
        }
        sqlite3_finalize(s);
        s = NULL;
    }
    return exec(st, "COMMIT");
fail:
    db_err(st, "committing a federated evaluation");
    sqlite3_finalize(s);
    exec(st, "ROLLBACK");
    return FL_EDB;
}

int fl_store_fedeval_exists(fl_store_t *st, int64_t run_id, int64_t round, int *exists)
{
    if (!st || !exists)
        return FL_EINVAL;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM fed_evals WHERE run_id = ? AND round = ?", -1, &s, NULL) !=
        SQLITE_OK)
        return db_err(st, "looking up a federated evaluation");
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, round);
    int rc = sqlite3_step(s) == SQLITE_ROW ? 0 : FL_EDB;
    if (rc == 0)
        *exists = sqlite3_column_int64(s, 0) > 0;
    sqlite3_finalize(s);
    return rc ? db_err(st, "looking up a federated evaluation") : 0;
}

int fl_store_print_updates(fl_store_t *st, int64_t run_id, int64_t round, FILE *out)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT client, status, coalesce(reason, '-'), num_examples,"
                           " CASE WHEN train_loss IS NULL THEN NULL ELSE printf('%.4f', train_loss) END,"
                           " CASE WHEN delta_norm IS NULL THEN NULL ELSE printf('%.4g', delta_norm) END,"
                           " bytes, printf('%.2f', seconds)"
                           " FROM updates WHERE run_id = ? AND round = ? ORDER BY client, rowid",
                           -1, &s, NULL) != SQLITE_OK)
        return db_err(st, "listing updates");
    sqlite3_bind_int64(s, 1, run_id);
    sqlite3_bind_int64(s, 2, round);
    fprintf(out, "run %lld round %lld\n%-20s %-9s %-26s %9s %10s %10s %10s %8s\n", (long long)run_id,
            (long long)round, "client", "status", "reason", "examples", "train_loss", "delta_norm", "bytes",
            "seconds");
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        fprintf(out, "%-20s %-9s %-26s %9s %10s %10s %10s %8s\n", col(s, 0), col(s, 1), col(s, 2), col(s, 3),
                col(s, 4), col(s, 5), col(s, 6), col(s, 7));
    sqlite3_finalize(s);
    return r == SQLITE_DONE ? 0 : db_err(st, "listing updates");
}
