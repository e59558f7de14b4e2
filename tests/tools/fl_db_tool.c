/* fl_db_tool: what the fault tests do to a server's database from outside,
 * as another process would (no sqlite3 command-line tool needed).
 *
 *   fl_db_tool DB lock SECONDS     hold the write lock (BEGIN IMMEDIATE) for
 *                                  SECONDS, printing "locked" once it holds it
 *   fl_db_tool DB sql STATEMENTS   run SQL (e.g. damage a checkpoint's blob)
 *   fl_db_tool DB crcs             print "ROUND CRC" per checkpoint of run 1:
 *                                  the CRC-32 of the model blob alone, as
 *                                  fl_test_client prints what it received
 *   fl_db_tool DB killwal PID MS   wait (inotify, up to 60 s) for the next write
 *                                  to DB-wal, i.e. a transaction being written,
 *                                  then SIGKILL PID after a random 0..MS ms
 *   fl_db_tool DB walstate         "uncommitted N" when DB-wal holds frames
 *                                  after its last commit frame (a transaction
 *                                  cut by a kill), else "clean"
 *   fl_db_tool DB smash            overwrite every other page past the third
 *                                  with a pattern (damage quick_check finds)
 *
 * Exit 0 on success, 1 on a database error, 2 on usage errors. */
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/base/bytes.h"

static int smash(const char *path)
{
    FILE *f = fopen(path, "r+b");
    if (!f) {
        perror(path);
        return 1;
    }
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 131 + 7);
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return 1;
    }
    long size = ftell(f), pages = 0;
    for (long off = 3 * 4096; off + 4096 <= size; off += 2 * 4096, pages++)
        if (fseek(f, off, SEEK_SET) != 0 || fwrite(junk, 1, sizeof junk, f) != sizeof junk) {
            fclose(f);
            return 1;
        }
    if (fclose(f) != 0)
        return 1;
    printf("smashed %ld pages of %s\n", pages, path);
    return pages ? 0 : 1;
}

static int crcs(const char *path)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = 1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT round, model FROM checkpoints WHERE run_id = 1 ORDER BY round", -1, &s,
                           NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", path, db ? sqlite3_errmsg(db) : "cannot open");
        goto out;
    }
    int r;
    while ((r = sqlite3_step(s)) == SQLITE_ROW)
        printf("%lld %08lx\n", (long long)sqlite3_column_int64(s, 0),
               (unsigned long)fl_crc32(0, sqlite3_column_blob(s, 1), (size_t)sqlite3_column_bytes(s, 1)));
    rc = r == SQLITE_DONE ? 0 : 1;
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc;
}

static int killwal(const char *db, pid_t pid, int max_ms)
{
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", db);
    int fd = inotify_init1(IN_CLOEXEC);
    if (fd < 0 || inotify_add_watch(fd, wal, IN_MODIFY) < 0) {
        perror(wal);
        return 1;
    }
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 60000) != 1) {
        fprintf(stderr, "%s: no write in 60 s\n", wal);
        return 1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    srand((unsigned)ts.tv_nsec ^ (unsigned)getpid());
    int ms = max_ms > 0 ? rand() % (max_ms + 1) : 0;
    if (ms)
        usleep((useconds_t)ms * 1000);
    if (kill(pid, SIGKILL) != 0) {
        perror("kill");
        return 1;
    }
    printf("killed %d ms after a write to the WAL\n", ms);
    close(fd);
    return 0;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Walks the WAL's frames (SQLite's file format: a 32-byte header, then
 * frames of a 24-byte header and a page; a commit frame has a non-zero
 * "database size" field) while their salts match the header's. Frame
 * checksums are not verified: a torn last frame also counts as uncommitted. */
static int walstate(const char *db)
{
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", db);
    FILE *f = fopen(wal, "rb");
    if (!f) {
        printf("clean (no WAL)\n");
        return 0;
    }
    unsigned char h[32], fh[24];
    if (fread(h, 1, 32, f) != 32) {
        fclose(f);
        printf("clean (empty WAL)\n");
        return 0;
    }
    uint32_t page = be32(h + 8);
    if (page == 1)
        page = 65536;
    unsigned char *buf = malloc(page);
    long frames = 0, since_commit = 0;
    while (buf && fread(fh, 1, 24, f) == 24) {
        if (memcmp(fh + 8, h + 16, 8) != 0)
            break; /* a frame of an older WAL generation */
        size_t got = fread(buf, 1, page, f);
        frames++;
        if (got != page || be32(fh + 4) == 0)
            since_commit++;
        else
            since_commit = 0;
        if (got != page)
            break;
    }
    free(buf);
    fclose(f);
    if (since_commit)
        printf("uncommitted %ld\n", since_commit);
    else
        printf("clean (%ld frames)\n", frames);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[2], "killwal") == 0)
        return killwal(argv[1], (pid_t)atol(argv[3]), atoi(argv[4]));
    if (argc == 3 && strcmp(argv[2], "walstate") == 0)
        return walstate(argv[1]);
    if (argc == 3 && strcmp(argv[2], "smash") == 0)
        return smash(argv[1]);
    if (argc == 3 && strcmp(argv[2], "crcs") == 0)
        return crcs(argv[1]);
    if (argc != 4 || (strcmp(argv[2], "lock") && strcmp(argv[2], "sql"))) {
        fprintf(stderr, "usage: fl_db_tool DB lock SECONDS | DB sql STATEMENTS | DB crcs | DB killwal PID MS | DB walstate | DB smash\n");
        return 2;
    }
    sqlite3 *db = NULL;
    char *msg = NULL;
    int rc = 1;
    if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], db ? sqlite3_errmsg(db) : "cannot open");
        goto out;
    }
    sqlite3_busy_timeout(db, 60000);
    if (strcmp(argv[2], "sql") == 0) {
        if (sqlite3_exec(db, argv[3], NULL, NULL, &msg) != SQLITE_OK) {
            fprintf(stderr, "%s: %s\n", argv[1], msg ? msg : sqlite3_errmsg(db));
            goto out;
        }
        printf("%d rows changed\n", sqlite3_changes(db));
        rc = 0;
        goto out;
    }
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], msg ? msg : sqlite3_errmsg(db));
        goto out;
    }
    printf("locked\n");
    fflush(stdout);
    usleep((useconds_t)(atof(argv[3]) * 1e6));
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    printf("released\n");
    rc = 0;
out:
    sqlite3_free(msg);
    sqlite3_close(db);
    return rc;
}
