/* fedopt-server rounds DB [RUN] [--csv|--json]: lists the rounds of a run
 * (default: the newest) as a table, or every column of the rounds table as
 * CSV (a header line) or one JSON array of objects, for people who plot
 * with their own tools. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/commands.h"
#include "server/store.h"

static void json_str(FILE *out, const unsigned char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(out, "\\%c", *s);
        else if (*s < 0x20)
            fprintf(out, "\\u%04x", *s);
        else
            fputc(*s, out);
    }
    fputc('"', out);
}

static void csv_str(FILE *out, const unsigned char *s)
{
    if (!strpbrk((const char *)s, ",\"\n\r")) {
        fputs((const char *)s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

/* Every column of the run's rounds, in table order. */
static int dump(fl_store_t *st, long long run, int json, FILE *out)
{
    sqlite3 *db = fl_store_db(st);
    sqlite3_stmt *s = NULL;
    int rc = 1;
    if (run <= 0) {
        if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM runs", -1, &s, NULL) != SQLITE_OK ||
            sqlite3_step(s) != SQLITE_ROW)
            goto out;
        run = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        s = NULL;
    }
    if (sqlite3_prepare_v2(db, "SELECT * FROM rounds WHERE run_id = ? ORDER BY round", -1, &s, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(s, 1, run);
    int n = sqlite3_column_count(s), step, rows = 0;
    if (json)
        fputc('[', out);
    else
        for (int i = 0; i < n; i++)
            fprintf(out, "%s%s", i ? "," : "", sqlite3_column_name(s, i));
    if (!json)
        fputc('\n', out);
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (json)
            fputs(rows ? ",\n {" : "\n {", out);
        for (int i = 0; i < n; i++) {
            if (json) {
                json_str(out, (const unsigned char *)sqlite3_column_name(s, i));
                fputs(": ", out);
            } else if (i)
                fputc(',', out);
            switch (sqlite3_column_type(s, i)) {
            case SQLITE_NULL:
                if (json)
                    fputs("null", out);
                break;
            case SQLITE_INTEGER:
                fprintf(out, "%lld", (long long)sqlite3_column_int64(s, i));
                break;
            case SQLITE_FLOAT: {
                double v = sqlite3_column_double(s, i);
                if (isfinite(v))
                    fprintf(out, "%.17g", v);
                else if (json)
                    fputs("null", out);
                break;
            }
            default:
                if (json)
                    json_str(out, sqlite3_column_text(s, i));
                else
                    csv_str(out, sqlite3_column_text(s, i));
            }
            if (json && i + 1 < n)
                fputs(", ", out);
        }
        fputs(json ? "}" : "\n", out);
        rows++;
    }
    if (json)
        fputs(rows ? "\n]\n" : "]\n", out);
    rc = step == SQLITE_DONE ? 0 : 1;
out:
    if (rc)
        fprintf(stderr, "fedopt-server rounds: %s\n", sqlite3_errmsg(db));
    sqlite3_finalize(s);
    return rc;
}

int fl_server_cmd_rounds(int argc, char **argv)
{
    int fmt = 0; /* 0 table, 1 csv, 2 json */
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: fedopt-server rounds DB [RUN] [--csv|--json]\n");
            return 0;
        } else if (strcmp(argv[i], "--csv") == 0)
            fmt = 1;
        else if (strcmp(argv[i], "--json") == 0)
            fmt = 2;
        else if (argv[i][0] != '-' && npos < 2)
            pos[npos++] = argv[i];
        else
            npos = 3;
    }
    if (npos < 1 || npos > 2) {
        fprintf(stderr, "usage: fedopt-server rounds DB [RUN] [--csv|--json]\n");
        return 2;
    }
    long long run = 0;
    if (pos[1]) {
        char *end;
        run = strtoll(pos[1], &end, 10);
        if (*end || run <= 0) {
            fprintf(stderr, "fedopt-server rounds: RUN must be a run id (see fedopt-server runs DB)\n");
            return 2;
        }
    }
    fl_store_t *st = NULL;
    if (fl_store_open(pos[0], 1, &st))
        return 1;
    int rc = fmt ? dump(st, run, fmt == 2, stdout) : fl_store_print_rounds(st, run, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
