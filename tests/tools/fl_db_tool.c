/* fl_db_tool: what the fault tests do to a server's database from outside,
 * as another process would (no sqlite3 command-line tool needed).
 *
 *   fl_db_tool DB lock SECONDS     hold the write lock (BEGIN IMMEDIATE) for
 *                                  SECONDS, printing "locked" once it holds it
 *   fl_db_tool DB sql STATEMENTS   run SQL (e.g. damage a checkpoint's blob)
 *   fl_db_tool DB crcs             print "ROUND CRC" per checkpoint of run 1:
 *                                  the CRC-32 of the model blob alone, as
 *                                  fl_test_client prints what it received
 *   fl_db_tool DB smash            overwrite every other page past the third
 *                                  with a pattern (damage quick_check finds)
 *
 * Exit 0 on success, 1 on a database error, 2 on usage errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#include <zlib.h>

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
               (unsigned long)crc32(crc32(0L, Z_NULL, 0), sqlite3_column_blob(s, 1),
                                    (uInt)sqlite3_column_bytes(s, 1)));
    rc = r == SQLITE_DONE ? 0 : 1;
out:
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[2], "smash") == 0)
        return smash(argv[1]);
    if (argc == 3 && strcmp(argv[2], "crcs") == 0)
        return crcs(argv[1]);
    if (argc != 4 || (strcmp(argv[2], "lock") && strcmp(argv[2], "sql"))) {
        fprintf(stderr, "usage: fl_db_tool DB lock SECONDS | DB sql STATEMENTS | DB crcs | DB smash\n");
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
