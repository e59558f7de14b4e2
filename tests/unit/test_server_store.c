/* Tests server/store: schema, runs, one-transaction rounds with checkpoints,
 * resume points, checksum detection, pruning, and crash safety (a child
 * process committing rounds is killed with SIGKILL at random instants; the
 * database must then hold whole rounds only). */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "server/store.h"

static char db_path[64];

static void rm_db(void)
{
    char p[80];
    unlink(db_path);
    snprintf(p, sizeof p, "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db_path);
    unlink(p);
}

static int setup(void **state)
{
    snprintf(db_path, sizeof db_path, "/tmp/fedopt-store-%d.db", (int)getpid());
    fl_log_set_level(FL_LOG_ERROR);
    fl_log_set_sink(fopen("/dev/null", "w"));
    return 0;
}

static int each_setup(void **state)
{
    rm_db();
    return 0;
}

static int teardown(void **state)
{
    rm_db();
    return 0;
}

/* A model whose every element depends on (round, i), so any mix-up shows. */
static void fill_model(float *x, size_t n, int64_t round)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)round * 0.5f + (float)i * 1e-3f - 7.25f;
}

static void fill_state(uint8_t *s, size_t n, int64_t round)
{
    for (size_t i = 0; i < n; i++)
        s[i] = (uint8_t)(i * 31 + (size_t)round * 7);
}

static int64_t new_run(fl_store_t *st, size_t n)
{
    float *x = malloc(n * sizeof *x);
    uint8_t s[100];
    fill_model(x, n, 0);
    fill_state(s, sizeof s, 0);
    fl_store_run_info_t info = {"mlp", "fedadam", 42, "{\"model\":\"mlp\",\"seed\":\"42\",\"rounds\":5}"};
    int64_t run = 0;
    assert_int_equal(fl_store_run_create(st, &info, x, n, s, sizeof s, &run), 0);
    free(x);
    return run;
}

static int commit(fl_store_t *st, int64_t run, int64_t round, size_t n, int with_ckpt, int64_t keep)
{
    float *x = malloc(n * sizeof *x);
    uint8_t s[100];
    fill_model(x, n, round);
    fill_state(s, sizeof s, round);
    fl_store_update_t ups[3] = {
        {"client-a", "accepted", NULL, 100, 0.5, 1.25, 4000, 0.75, 0.625},
        {"client-b", "refused", "non-finite delta", NAN, NAN, NAN, 4000, 0.5, NAN},
        {"client-c", "dropped", "deadline", NAN, NAN, NAN, 0, 30, NAN},
    };
    fl_store_round_t r = {run, round, 1700000000.0 + round, 1700000000.5 + round, with_ckpt ? "closed" : "abandoned",
                          3, 1, 1, 100, 0.5, NAN, NAN, 4000, 12000, 0.625, NULL};
    int rc = fl_store_commit_round(st, &r, ups, 3, with_ckpt ? x : NULL, n, s, sizeof s, keep);
    free(x);
    return rc;
}

static void test_run_round_checkpoint(void **state)
{
    fl_store_t *st;
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    int64_t run, resumable, next;
    assert_int_equal(fl_store_run_resumable(st, &resumable), FL_ENOTFOUND);
    run = new_run(st, 1000);
    assert_int_equal(fl_store_run_resumable(st, &resumable), 0);
    assert_int_equal(resumable, run);
    assert_int_equal(fl_store_next_round(st, run, &next), 0);
    assert_int_equal(next, 1);

    /* Round 0's checkpoint is the initial model. */
    fl_store_checkpoint_t cp;
    assert_int_equal(fl_store_checkpoint_load(st, run, -1, &cp), 0);
    assert_int_equal(cp.round, 0);
    assert_int_equal(cp.numel, 1000);
    float want[1000];
    fill_model(want, 1000, 0);
    assert_memory_equal(cp.model, want, sizeof want);
    fl_store_checkpoint_free(&cp);

    assert_int_equal(commit(st, run, 1, 1000, 1, 0), 0);
    assert_int_equal(commit(st, run, 2, 1000, 0, 0), 0); /* abandoned: no checkpoint */
    assert_int_equal(commit(st, run, 3, 1000, 1, 0), 0);
    /* The same round twice is refused and leaves nothing behind. */
    int64_t nup;
    assert_int_equal(commit(st, run, 3, 1000, 1, 0), FL_EDB);
    assert_int_equal(fl_store_count_updates(st, run, 3, NULL, &nup), 0);
    assert_int_equal(nup, 3);
    assert_int_equal(fl_store_count_updates(st, run, 3, "refused", &nup), 0);
    assert_int_equal(nup, 1);
    assert_int_equal(fl_store_count_updates(st, run, 2, "dropped", &nup), 0);
    assert_int_equal(nup, 1);

    assert_int_equal(fl_store_next_round(st, run, &next), 0);
    assert_int_equal(next, 4);
    assert_int_equal(fl_store_checkpoint_load(st, run, -1, &cp), 0);
    assert_int_equal(cp.round, 3);
    fill_model(want, 1000, 3);
    assert_memory_equal(cp.model, want, sizeof want);
    uint8_t ws[100];
    fill_state(ws, sizeof ws, 3);
    assert_int_equal(cp.state_len, 100);
    assert_memory_equal(cp.state, ws, 100);
    fl_store_checkpoint_free(&cp);
    assert_int_equal(fl_store_checkpoint_load(st, run, 2, &cp), FL_ENOTFOUND);

    char v[64];
    assert_int_equal(fl_store_run_config_value(st, run, "seed", v, sizeof v), 0);
    assert_string_equal(v, "42");
    assert_int_equal(fl_store_run_config_value(st, run, "rounds", v, sizeof v), 0);
    assert_string_equal(v, "5");
    assert_int_equal(fl_store_run_config_value(st, run, "absent", v, sizeof v), FL_ENOTFOUND);

    /* Times land as ISO-8601 UTC; NaN losses as NULL. */
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(fl_store_db(st),
                                        "SELECT started_at, eval_loss IS NULL, train_loss FROM rounds"
                                        " WHERE run_id = ? AND round = 1",
                                        -1, &s, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(s, 1, run);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "2023-11-14T22:13:21.000Z");
    assert_int_equal(sqlite3_column_int(s, 1), 1);
    assert_true(sqlite3_column_double(s, 2) == 0.5);
    sqlite3_finalize(s);

    assert_int_equal(fl_store_run_set_status(st, run, "finished"), 0);
    assert_int_equal(fl_store_run_resumable(st, &resumable), FL_ENOTFOUND);
    assert_int_equal(fl_store_run_set_status(st, run, "exploded"), FL_EDB);

    /* The admin listings print the rows. */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(fl_store_print_runs(st, f), 0);
    assert_int_equal(fl_store_print_rounds(st, 0, f), 0);
    fclose(f);
    assert_non_null(strstr(buf, "finished"));
    assert_non_null(strstr(buf, "fedadam"));
    assert_non_null(strstr(buf, "abandoned"));
    assert_non_null(strstr(buf, "0.5000"));
    free(buf);
    fl_store_close(st);

    /* Read-only open of the same file sees the data; of a non-database fails. */
    assert_int_equal(fl_store_open(db_path, 1, &st), 0);
    assert_int_equal(fl_store_checkpoint_load(st, run, 1, &cp), 0);
    fl_store_checkpoint_free(&cp);
    fl_store_close(st);
    assert_int_equal(fl_store_open("/nonexistent/dir/x.db", 0, &st), FL_EDB);
}

/* round_privacy: written with its round, read back in round order, only for
 * closed rounds (an abandoned round released nothing). */
typedef struct {
    int64_t rounds[8];
    fl_store_privacy_t rows[8];
    size_t n;
} priv_seen_t;

static int collect_priv(int64_t round, const fl_store_privacy_t *p, void *user)
{
    priv_seen_t *s = user;
    if (s->n < 8) {
        s->rounds[s->n] = round;
        s->rows[s->n++] = *p;
    }
    return 0;
}

static void test_privacy_rows(void **state)
{
    (void)state;
    fl_store_t *st = NULL;
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    const size_t n = 10;
    int64_t run = new_run(st, n);
    float x[10] = {0};
    uint8_t s[4] = {0};
    for (int64_t r = 1; r <= 3; r++) {
        fl_store_privacy_t p = {1.5 * (double)r, 0.25, r == 2 ? NAN : 0.5, 0.3, 1e-5, 10.0 * (double)r};
        fl_store_round_t row = {.run_id = run, .round = r, .status = r == 3 ? "abandoned" : "closed",
                                .train_loss = NAN, .eval_loss = NAN, .eval_accuracy = NAN, .privacy = &p};
        assert_int_equal(fl_store_commit_round(st, &row, NULL, 0, r == 3 ? NULL : x, n, s, sizeof s, 0), 0);
    }
    priv_seen_t seen = {0};
    assert_int_equal(fl_store_privacy_each(st, run, collect_priv, &seen), 0);
    assert_int_equal(seen.n, 2);
    assert_int_equal(seen.rounds[0], 1);
    assert_int_equal(seen.rounds[1], 2);
    assert_true(seen.rows[0].clip_norm == 1.5 && seen.rows[0].clip_within == 0.25 && seen.rows[0].dp_q == 0.5 &&
                seen.rows[0].dp_noise_multiplier == 0.3 && seen.rows[0].dp_delta == 1e-5 &&
                seen.rows[0].dp_epsilon == 10);
    assert_true(seen.rows[1].clip_norm == 3 && isnan(seen.rows[1].dp_q) && seen.rows[1].dp_epsilon == 20);
    fl_store_close(st);
}

static void test_checksum_and_prune(void **state)
{
    fl_store_t *st;
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    int64_t run = new_run(st, 64);
    for (int64_t r = 1; r <= 6; r++)
        assert_int_equal(commit(st, run, r, 64, 1, 3), 0);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(fl_store_db(st), "SELECT group_concat(round) FROM checkpoints", -1, &s, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "4,5,6");
    sqlite3_finalize(s);
    /* Flip one byte of the newest model: the load notices. */
    assert_int_equal(sqlite3_exec(fl_store_db(st),
                                  "UPDATE checkpoints SET model = substr(model, 1, 10) || x'ff' ||"
                                  " substr(model, 12) WHERE round = 6",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    fl_store_checkpoint_t cp;
    assert_int_equal(fl_store_checkpoint_load(st, run, -1, &cp), FL_ECHECKSUM);
    assert_null(cp.model);
    assert_int_equal(sqlite3_exec(fl_store_db(st), "UPDATE checkpoints SET model = x'0102' WHERE round = 5", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(fl_store_checkpoint_load(st, run, 5, &cp), FL_EFORMAT);
    assert_int_equal(fl_store_checkpoint_load(st, run, 4, &cp), 0);
    fl_store_checkpoint_free(&cp);
    fl_store_close(st);
}

/* The child: commit rounds with a 4 MiB checkpoint each, as fast as it can,
 * until it is killed. */
static void child_commit_forever(int64_t run, size_t n)
{
    fl_store_t *st;
    if (fl_store_open(db_path, 0, &st))
        _exit(3);
    int64_t next;
    if (fl_store_next_round(st, run, &next))
        _exit(4);
    for (int64_t r = next;; r++)
        if (commit(st, run, r, n, 1, 0))
            _exit(5);
}

static void test_crash_safety(void **state)
{
    const size_t n = 1u << 20; /* 4 MiB of floats: most of the time is spent inside a transaction */
    fl_store_t *st;
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    int64_t run = new_run(st, n);
    fl_store_close(st);
    struct timespec seed;
    clock_gettime(CLOCK_MONOTONIC, &seed);
    srand((unsigned)seed.tv_nsec);
    int64_t prev_next = 1;
    for (int kill_no = 0; kill_no < 5; kill_no++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            child_commit_forever(run, n);
        /* Wait until it has committed at least one more round (however
         * loaded the machine is), then kill it at an arbitrary instant. */
        for (int waited = 0; waited < 3000; waited++) {
            sqlite3 *ro = NULL;
            sqlite3_stmt *q = NULL;
            int64_t maxr = 0;
            if (sqlite3_open_v2(db_path, &ro, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
                sqlite3_prepare_v2(ro, "SELECT coalesce(max(round), 0) FROM rounds", -1, &q, NULL) == SQLITE_OK &&
                sqlite3_step(q) == SQLITE_ROW)
                maxr = sqlite3_column_int64(q, 0);
            sqlite3_finalize(q);
            sqlite3_close(ro);
            if (maxr >= prev_next)
                break;
            usleep(10000);
        }
        usleep((useconds_t)(rand() % 100000));
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status));

        assert_int_equal(fl_store_open(db_path, 0, &st), 0);
        sqlite3 *db = fl_store_db(st);
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(s, 0), "ok");
        sqlite3_finalize(s);
        /* Whole rounds only: every round has exactly its 3 updates and its
         * checkpoint, and there is no checkpoint or update without its round. */
        assert_int_equal(sqlite3_prepare_v2(db,
                                            "SELECT (SELECT count(*) FROM rounds),"
                                            " (SELECT count(*) FROM updates),"
                                            " (SELECT count(*) FROM checkpoints WHERE round > 0),"
                                            " (SELECT count(*) FROM checkpoints c WHERE round > 0 AND NOT EXISTS"
                                            "   (SELECT 1 FROM rounds r WHERE r.round = c.round)),"
                                            " (SELECT coalesce(max(round), 0) FROM rounds)",
                                            -1, &s, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        int64_t nrounds = sqlite3_column_int64(s, 0), nupd = sqlite3_column_int64(s, 1);
        int64_t nck = sqlite3_column_int64(s, 2), orphans = sqlite3_column_int64(s, 3);
        int64_t maxr = sqlite3_column_int64(s, 4);
        sqlite3_finalize(s);
        assert_int_equal(nupd, 3 * nrounds);
        assert_int_equal(nck, nrounds);
        assert_int_equal(orphans, 0);
        assert_int_equal(maxr, nrounds); /* no gap */
        /* The child made progress, and the newest checkpoint is intact and is the newest round's. */
        assert_true(maxr >= prev_next);
        int64_t next;
        assert_int_equal(fl_store_next_round(st, run, &next), 0);
        assert_int_equal(next, maxr + 1);
        prev_next = next;
        fl_store_checkpoint_t cp;
        assert_int_equal(fl_store_checkpoint_load(st, run, -1, &cp), 0);
        assert_int_equal(cp.round, maxr);
        assert_true(cp.model[12345] == (float)maxr * 0.5f + 12345 * 1e-3f - 7.25f);
        fl_store_checkpoint_free(&cp);
        fl_store_close(st);
    }
    assert_true(prev_next >= 6); /* every kill followed at least one new round */
}

/* Runs fn with the log at WARN into a scratch file; returns the file's text. */
static char *with_log(void (*fn)(void *), void *arg)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    fl_log_set_level(FL_LOG_WARN);
    fl_log_set_sink(f);
    fn(arg);
    fl_log_set_sink(fopen("/dev/null", "w"));
    fl_log_set_level(FL_LOG_ERROR);
    long n = ftell(f);
    char *text = calloc(1, (size_t)n + 1);
    rewind(f);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return text;
}

typedef struct {
    fl_store_t *st;
    int64_t run;
    int rc;
    double seconds;
} locked_t;

static void commit_round_2(void *arg)
{
    locked_t *l = arg;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    l->rc = commit(l->st, l->run, 2, 64, 1, 0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    l->seconds = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
}

/* Another process (a backup, an operator's sqlite3) holds the write lock for
 * longer than SQLite's 5 s busy wait: the commit waits, logs, retries and
 * succeeds once the lock is gone (it used to fail, and the daemon exited). */
static void test_locked_db(void **state)
{
    fl_store_t *st;
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    int64_t run = new_run(st, 64);
    assert_int_equal(commit(st, run, 1, 64, 1, 0), 0);
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        sqlite3 *db;
        if (sqlite3_open(db_path, &db) != SQLITE_OK || sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL))
            _exit(3);
        if (write(ready[1], "x", 1) != 1)
            _exit(4);
        sleep(7); /* past the 5 s busy timeout */
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        sqlite3_close(db);
        _exit(0);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    locked_t l = {st, run, -99, 0};
    char *log = with_log(commit_round_2, &l);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(l.rc, 0);
    assert_true(l.seconds > 5.0);
    assert_non_null(strstr(log, "locked by another process"));
    assert_non_null(strstr(log, "the lock was released"));
    free(log);
    int64_t next;
    assert_int_equal(fl_store_next_round(st, run, &next), 0);
    assert_int_equal(next, 3);
    /* A bounded wait gives up with FL_EDB and says so. */
    fl_store_set_lock_wait(st, 0.5);
    sqlite3 *other;
    assert_int_equal(sqlite3_open(db_path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    l.rc = -99;
    fl_store_set_lock_wait(st, 0);
    log = with_log(commit_round_2, &l);
    assert_int_equal(l.rc, FL_EDB);
    assert_non_null(strstr(log, "still locked by another process"));
    free(log);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    close(ready[0]);
    close(ready[1]);
    fl_store_close(st);
}

static void verify_all(void *arg)
{
    locked_t *l = arg;
    l->rc = fl_store_verify_checkpoints(l->st, l->run, NULL);
}

static void quick_check(void *arg)
{
    locked_t *l = arg;
    l->rc = fl_store_quick_check(l->st);
}

/* Damage is found and named: a flipped byte inside an older checkpoint's
 * blob (invisible to quick_check; resume used to verify only the newest),
 * and pages overwritten in the file (quick_check). */
static void test_damage_found(void **state)
{
    fl_store_t *st;
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    int64_t run = new_run(st, 4096);
    for (int64_t r = 1; r <= 4; r++)
        assert_int_equal(commit(st, run, r, 4096, 1, 0), 0);
    fl_store_damage_t d;
    assert_int_equal(fl_store_quick_check(st), 0);
    assert_int_equal(fl_store_verify_checkpoints(st, run, &d), 0);
    assert_int_equal(d.checked, 5);
    assert_int_equal(d.damaged, 0);
    assert_int_equal(d.first_round, -1);
    /* An older checkpoint (round 2) damaged: found, named, the newest is fine. */
    assert_int_equal(sqlite3_exec(fl_store_db(st),
                                  "UPDATE checkpoints SET model = substr(model, 1, 100) || x'ff' ||"
                                  " substr(model, 102) WHERE round = 2",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(fl_store_verify_checkpoints(st, run, &d), FL_ECHECKSUM);
    assert_int_equal(d.damaged, 1);
    assert_int_equal(d.first_round, 2);
    assert_int_equal(d.newest_damaged, 0);
    locked_t l = {st, run, 0, 0};
    char *log = with_log(verify_all, &l);
    assert_int_equal(l.rc, FL_ECHECKSUM);
    assert_non_null(strstr(log, "round 2: checkpoint damaged (checksum mismatch)"));
    free(log);
    /* The newest too. */
    assert_int_equal(sqlite3_exec(fl_store_db(st), "UPDATE checkpoints SET model = x'01020304' WHERE round = 4",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(fl_store_verify_checkpoints(st, 0, &d), FL_ECHECKSUM);
    assert_int_equal(d.damaged, 2);
    assert_int_equal(d.first_round, 4);
    assert_int_equal(d.newest_damaged, 1);
    fl_store_close(st); /* the last connection: the WAL goes into the file */
    /* Overwrite the file's pages past the first few with garbage. */
    FILE *f = fopen(db_path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    assert_true(size > 8 * 4096);
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 131 + 7);
    for (long off = 3 * 4096; off + 4096 <= size; off += 2 * 4096) {
        assert_int_equal(fseek(f, off, SEEK_SET), 0);
        assert_int_equal(fwrite(junk, 1, sizeof junk, f), sizeof junk);
    }
    fclose(f);
    assert_int_equal(fl_store_open(db_path, 1, &st), 0);
    l.st = st;
    log = with_log(quick_check, &l);
    assert_int_equal(l.rc, FL_EDB);
    assert_non_null(strstr(log, "the database is damaged"));
    free(log);
    fl_store_close(st);
}

static double one_real(fl_store_t *st, const char *sql, int *is_null)
{
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_prepare_v2(fl_store_db(st), sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    *is_null = sqlite3_column_type(s, 0) == SQLITE_NULL;
    double v = sqlite3_column_double(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* Client training accuracy: stored per round and per update (NULL where
 * unknown), and a database from before the columns gets them on a writable
 * open, its rows keeping NULL. */
static void test_train_accuracy(void **state)
{
    fl_store_t *st;
    sqlite3 *db;
    /* The old schema's two tables, as an older fedopt-server left them. */
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE rounds(run_id INTEGER NOT NULL, round INTEGER NOT NULL,"
                                  " started_at TEXT NOT NULL, finished_at TEXT NOT NULL, status TEXT NOT NULL,"
                                  " clients_selected INTEGER NOT NULL, clients_reported INTEGER NOT NULL,"
                                  " clients_dropped INTEGER NOT NULL, examples REAL NOT NULL, train_loss REAL,"
                                  " eval_loss REAL, eval_accuracy REAL, bytes_in INTEGER NOT NULL,"
                                  " bytes_out INTEGER NOT NULL, PRIMARY KEY(run_id, round));"
                                  "CREATE TABLE updates(run_id INTEGER NOT NULL, round INTEGER NOT NULL,"
                                  " client TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, num_examples REAL,"
                                  " train_loss REAL, delta_norm REAL, bytes INTEGER NOT NULL, seconds REAL NOT NULL);"
                                  "INSERT INTO rounds VALUES(9, 1, 'a', 'b', 'closed', 1, 1, 0, 5, 0.1, NULL, NULL, 1, 1);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    int is_null;
    one_real(st, "SELECT train_accuracy FROM rounds WHERE run_id = 9", &is_null);
    assert_true(is_null);
    int64_t run = new_run(st, 50);
    assert_int_equal(commit(st, run, 1, 50, 1, 0), 0);
    double v = one_real(st, "SELECT train_accuracy FROM rounds WHERE run_id > 9 OR run_id < 9", &is_null);
    assert_false(is_null);
    assert_true(v == 0.625);
    v = one_real(st, "SELECT train_accuracy FROM updates WHERE client = 'client-a'", &is_null);
    assert_false(is_null);
    assert_true(v == 0.625);
    one_real(st, "SELECT train_accuracy FROM updates WHERE client = 'client-b'", &is_null);
    assert_true(is_null);
    fl_store_close(st);
    /* Opening again changes nothing. */
    assert_int_equal(fl_store_open(db_path, 0, &st), 0);
    fl_store_close(st);
    assert_int_equal(fl_store_open(db_path, 1, &st), 0);
    fl_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_run_round_checkpoint, each_setup),
        cmocka_unit_test_setup(test_checksum_and_prune, each_setup),
        cmocka_unit_test_setup(test_privacy_rows, each_setup),
        cmocka_unit_test_setup(test_crash_safety, each_setup),
        cmocka_unit_test_setup(test_locked_db, each_setup),
        cmocka_unit_test_setup(test_damage_found, each_setup),
        cmocka_unit_test_setup(test_train_accuracy, each_setup),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
