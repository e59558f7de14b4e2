/* fedopt-server rounds DB [RUN] [--csv|--json]: lists the rounds of a run
 * (default: the newest) as a table, or every column of the rounds table as
 * CSV (a header line) or one JSON array of objects, for people who plot
 * with their own tools. */
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "server/commands.h"
#include "server/store.h"

void fl_server_cmd_rounds_usage(FILE *out)
{
    fprintf(out, "usage: fedopt-server rounds DB [RUN] [--csv|--json]\n"
                 "lists the rounds of run RUN (default: the newest; fedopt-server runs DB lists them)\n"
                 "  --csv    every column of the rounds table, a header line first\n"
                 "  --json   the same as one JSON array of objects\n");
}

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

enum { O_CSV = 1, O_JSON };

int fl_server_cmd_rounds(int argc, char **argv)
{
    static const fl_cli_opt_t opts[] = {{"csv", 0, O_CSV}, {"json", 0, O_JSON}, {NULL, 0, 0}};
    const char *pos[2] = {NULL, NULL};
    int n = 0, fmt = 0; /* 0 table, 1 csv, 2 json */
    long run = 0;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "rounds", opts, NULL, argc, argv);
    for (int id; (id = fl_cli_next(&cli)) != FL_CLI_END;) {
        switch (id) {
        case FL_CLI_ERR:
            return FL_CLI_USAGE;
        case O_CSV:
        case O_JSON:
            if (fmt && fmt != (id == O_CSV ? 1 : 2))
                return fl_cli_error(&cli, "--csv and --json exclude each other");
            fmt = id == O_CSV ? 1 : 2;
            break;
        case FL_CLI_ARG:
            if (n == 2)
                return fl_cli_error(&cli, "too many arguments (DB [RUN])");
            pos[n++] = cli.val;
            break;
        }
    }
    if (n < 1)
        return fl_cli_error(&cli, "missing DB");
    if (n == 2) {
        fl_cli_arg(&cli, "RUN", pos[1]);
        if (fl_cli_get_long(&cli, 1, LONG_MAX, &run))
            return FL_CLI_USAGE;
    }
    fl_store_t *st = NULL;
    if (fl_store_open(pos[0], 1, &st))
        return 1;
    int rc = fmt ? dump(st, run, fmt == 2, stdout) : fl_store_print_rounds(st, run, stdout);
    fl_store_close(st);
    return rc ? 1 : 0;
}
