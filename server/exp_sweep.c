/* exp_sweep: the sweep over an experiment's cells (see exp_sweep.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/base/error.h"
#include "server/exp_sweep.h"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4097 > cap) {
            char *nb = cap > (64u << 20) ? NULL : realloc(buf, cap = cap ? 2 * cap : 8192);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, 4096, f);
        len += r;
        if (!r)
            break;
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

/* Shards on other machines write the same files into a shared DIR at once:
 * each through a temporary name of its own. mkstemp's, not one made from the
 * pid: every pod of a Kubernetes Job runs its command as pid 1. */
static int put(const char *dir, const char *name, const char *text)
{
    char p[4200], tmp[4300];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", p) >= (int)sizeof tmp)
        return FL_ERANGE;
    int fd = mkstemp(tmp);
    if (fd < 0)
        return FL_EIO;
    FILE *f = fchmod(fd, 0644) == 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        close(fd);
        unlink(tmp);
        return FL_EIO;
    }
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, p) != 0) {
        unlink(tmp);
        return FL_EIO;
    }
    return 0;
}

/* The first line where a and b differ, for the refusal message. */
static void first_diff(const char *a, const char *b, char *out, size_t len)
{
    while (*a && *b) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        if (la != lb || memcmp(a, b, la) != 0) {
            snprintf(out, len, "was '%.*s', now '%.*s'", (int)la, a, (int)lb, b);
            return;
        }
        a += la + (ea != NULL);
        b += lb + (eb != NULL);
    }
    snprintf(out, len, "was '%.60s', now '%.60s'", *a ? a : "(end)", *b ? b : "(end)");
}

static char *cells_text(const fl_exp_cell_t *cells, size_t n)
{
    size_t cap = n * (sizeof cells[0].key + 24) + 1, len = 0;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    s[0] = 0;
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%zu\t%s\n", cells[i].index, cells[i].key);
    return s;
}

/* Every line of a that is not in b (1 = yes, the count in *n). */
static size_t missing_lines(const char *a, const char *b)
{
    size_t n = 0;
    while (*a) {
        const char *e = strchr(a, '\n');
        size_t la = e ? (size_t)(e - a) : strlen(a);
        const char *key = memchr(a, '\t', la);
        if (key) {
            key++;
            size_t lk = la - (size_t)(key - a);
            int found = 0;
            for (const char *q = b; *q && !found;) {
                const char *eq = strchr(q, '\n');
                size_t lq = eq ? (size_t)(eq - q) : strlen(q);
                const char *kq = memchr(q, '\t', lq);
                if (kq && lq - (size_t)(kq + 1 - q) == lk && memcmp(kq + 1, key, lk) == 0)
                    found = 1;
                q += lq + (eq != NULL);
            }
            n += !found;
        }
        a += la + (e != NULL);
    }
    return n;
}

/* Checks DIR against the grid and records the grid there. */
static int check_dir(const fl_exp_sweep_opts_t *o, const char *fixed, const char *cells)
{
    char p[4200], why[512];
    if (mkdir(o->out, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "experiment: cannot create %s: %s\n", o->out, strerror(errno));
        return FL_EIO;
    }
    snprintf(p, sizeof p, "%s/cells", o->out);
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "experiment: cannot create %s: %s\n", p, strerror(errno));
        return FL_EIO;
    }
    snprintf(p, sizeof p, "%s/fixed.txt", o->out);
    char *old = slurp(p);
    if (old && strcmp(old, fixed) != 0) {
        first_diff(old, fixed, why, sizeof why);
        fprintf(stderr,
                "experiment: %s was run with other fixed settings (%s); a sweep's fixed settings never change "
                "(use a new --out)\n",
                o->out, why);
        free(old);
        return FL_ECONFIG;
    }
    free(old);
    snprintf(p, sizeof p, "%s/cells.txt", o->out);
    old = slurp(p);
    if (old && strcmp(old, cells) != 0) {
        size_t added = missing_lines(cells, old), gone = missing_lines(old, cells);
        if (!o->extend) {
            fprintf(stderr,
                    "experiment: the grid's cells differ from those of %s (%zu new, %zu no longer in the grid, or "
                    "in another order): --extend runs the new grid there (cells already run are kept and "
                    "reported), or use a new --out\n",
                    o->out, added, gone);
            free(old);
            return FL_ECONFIG;
        }
        fprintf(stderr, "experiment: extending %s: %zu new cells, %zu earlier cells kept but not in this grid\n",
                o->out, added, gone);
    }
    free(old);
    int rc = put(o->out, "fixed.txt", fixed);
    if (!rc)
        rc = put(o->out, "cells.txt", cells);
    char *grid = rc ? NULL : slurp(o->grid_path);
    if (!rc && grid)
        rc = put(o->out, "grid.ini", grid);
    free(grid);
    if (rc)
        fprintf(stderr, "experiment: cannot write into %s\n", o->out);
    return rc;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int fl_exp_sweep_run(const fl_exp_sweep_opts_t *o, const fl_exp_env_t *env, FILE *log)
{
    fl_exp_grid_t *g = malloc(sizeof *g);
    fl_exp_cell_t *cells = NULL;
    fl_exp_run_t *runs = NULL;
    char *fixed = NULL, *ctext = NULL, err[1024];
    size_t n = 0, failed = 0, done = 0, share = 0;
    int rc;
    if (!g)
        return FL_ENOMEM;
    if ((rc = fl_exp_grid_load(o->grid_path, g, err, sizeof err)) ||
        (rc = fl_exp_grid_cells(g, &cells, &n, err, sizeof err))) {
        fprintf(stderr, "experiment: %s\n", err);
        rc = FL_ECONFIG;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        share += fl_exp_shard_has(i, o->shard_i, o->shard_n);
    if (o->dry_run) {
        fprintf(log, "%s: task %s, model %s, %ld rounds, %zu cells", o->grid_path, g->task, g->model, g->rounds, n);
        if (o->shard_n)
            fprintf(log, ", shard %zu/%zu runs %zu (index mod %zu == %zu)", o->shard_i, o->shard_n, share, o->shard_n,
                    o->shard_i);
        fprintf(log, "\n");
        for (size_t i = 0; i < n; i++)
            if (fl_exp_shard_has(i, o->shard_i, o->shard_n))
                fprintf(log, "%4zu  %s\n", i, cells[i].key);
        rc = 0;
        goto out;
    }
    fixed = fl_exp_grid_fixed_text(g);
    ctext = cells_text(cells, n);
    runs = calloc(o->parallel, sizeof *runs);
    if (!fixed || !ctext || !runs) {
        rc = FL_ENOMEM;
        goto out;
    }
    if ((rc = check_dir(o, fixed, ctext)))
        goto out;
    fprintf(log, "experiment %s: %zu cells, %zu in this share, %zu at once, into %s\n", o->grid_path, n, share,
            o->parallel, o->out);
    fflush(log);
    double t0 = now();
    size_t next = 0, active = 0, seen = 0;
    for (;;) {
        /* Fill free slots with the share's next cells. */
        for (size_t s = 0; s < o->parallel; s++) {
            if (runs[s].state != FL_EXP_CELL_IDLE)
                continue;
            while (next < n && !fl_exp_shard_has(next, o->shard_i, o->shard_n))
                next++;
            if (next == n)
                break;
            const fl_exp_cell_t *c = &cells[next++];
            seen++;
            if (fl_exp_run_start(&runs[s], g, c, o->out, env)) {
                fprintf(log, "[%zu/%zu] %s: failed: %s\n", seen, share, c->key, runs[s].why);
                fl_exp_run_abort(&runs[s]);
                memset(&runs[s], 0, sizeof runs[s]);
                failed++;
                s--; /* this slot is free again */
                continue;
            }
            if (runs[s].state == FL_EXP_CELL_OVER) {
                fprintf(log, "[%zu/%zu] %s: %s\n", seen, share, c->key, runs[s].why);
                if (runs[s].ok)
                    done++;
                else
                    failed++;
                memset(&runs[s], 0, sizeof runs[s]);
                s--;
                continue;
            }
            active++;
            if (runs[s].state == FL_EXP_CELL_LOCKING)
                fprintf(log, "[%zu/%zu] %s: waiting for its lock (processes of an earlier sweep)\n", seen, share,
                        c->key);
            else if (runs[s].resuming)
                fprintf(log, "[%zu/%zu] %s: resuming from round %ld\n", seen, share, c->key,
                        runs[s].resumed_from + 1);
            else
                fprintf(log, "[%zu/%zu] %s: started\n", seen, share, c->key);
            fflush(log);
        }
        if (active == 0)
            break;
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
            for (size_t s = 0; s < o->parallel; s++)
                if (runs[s].state != FL_EXP_CELL_IDLE && fl_exp_run_reaped(&runs[s], pid, st))
                    break;
        for (size_t s = 0; s < o->parallel; s++) {
            if (runs[s].state == FL_EXP_CELL_IDLE)
                continue;
            int was_locking = runs[s].state == FL_EXP_CELL_LOCKING;
            int over = fl_exp_run_poll(&runs[s]);
            if (was_locking && runs[s].state == FL_EXP_CELL_STARTING) {
                if (runs[s].resuming)
                    fprintf(log, "cell %s: resuming from round %ld\n", runs[s].c->key, runs[s].resumed_from + 1);
                else
                    fprintf(log, "cell %s: started\n", runs[s].c->key);
                fflush(log);
            }
            if (!over)
                continue;
            fprintf(log, "cell %s: %s%s\n", runs[s].c->key, runs[s].ok ? "" : "FAILED: ", runs[s].why);
            fflush(log);
            if (runs[s].ok)
                done++;
            else
                failed++;
            memset(&runs[s], 0, sizeof runs[s]);
            active--;
        }
        usleep(100000);
    }
    fprintf(log, "experiment %s: %zu of %zu cells of this share finished, %zu failed (%.1f s)\n", o->out, done, share,
            failed, now() - t0);
    rc = failed ? FL_EIO : 0;
out:
    free(runs);
    free(fixed);
    free(ctext);
    free(cells);
    free(g);
    return rc;
}

int fl_exp_sweep_status(const char *out, FILE *f)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/cells.txt", out);
    char *cells = slurp(p);
    snprintf(p, sizeof p, "%s/fixed.txt", out);
    char *fixed = slurp(p);
    if (!cells || !fixed) {
        fprintf(stderr, "experiment status: %s is not an experiment directory (no cells.txt/fixed.txt)\n", out);
        free(cells);
        free(fixed);
        return FL_ENOTFOUND;
    }
    const char *r = strstr(fixed, "\nrounds=");
    long rounds = r ? atol(r + 8) : 0;
    size_t n = 0, ndone = 0, npart = 0;
    for (char *line = cells; *line;) {
        char *e = strchr(line, '\n');
        if (e)
            *e = 0;
        char *key = strchr(line, '\t');
        if (key) {
            key++;
            char dir[4200], status[32];
            long done_rounds = 0;
            snprintf(dir, sizeof dir, "%s/cells/%s", out, key);
            n++;
            if (fl_exp_cell_is_done(dir)) {
                ndone++;
                fprintf(f, "%5.*s  done        %s\n", (int)(key - 1 - line), line, key);
            } else if (fl_exp_cell_progress(dir, &done_rounds, status, sizeof status) == 0 && status[0]) {
                npart++;
                char what[64];
                snprintf(what, sizeof what, "%ld/%ld", done_rounds, rounds);
                fprintf(f, "%5.*s  %-10s  %s (%s)\n", (int)(key - 1 - line), line, what, key, status);
            } else
                fprintf(f, "%5.*s  -           %s\n", (int)(key - 1 - line), line, key);
        }
        if (!e)
            break;
        line = e + 1;
    }
    fprintf(f, "%s: %zu cells: %zu done, %zu started, %zu not started (%ld rounds each)\n", out, n, ndone, npart,
            n - ndone - npart, rounds);
    free(cells);
    free(fixed);
    return 0;
}
