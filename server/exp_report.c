/* exp_report: tables and plots of experiment directories (see exp_report.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/base/error.h"
#include "server/exp_grid.h"
#include "server/exp_report.h"

typedef struct {
    long round;
    int closed;
    double train_acc, train_loss, eval_acc, eval_loss, seconds, bytes;
} rrow_t;

typedef struct {
    char key[320], setting[288], task[64], metric[16], opt[16], model[64];
    char label[FL_EXP_NAXES][32];
    double value[FL_EXP_NAXES];
    unsigned long long seed;
    long rounds_planned;
    int done;
    char dir[4096];
    /* from run.db */
    rrow_t *r;
    size_t nr;
    char run_status[16];
    double score, final, total_seconds, total_bytes;
    long final_round, window;
    int by_test; /* ranked by test accuracy: no training accuracy in the log */
} cell_t;

typedef struct {
    cell_t *c;
    size_t n, cap;
} cells_t;

static int cell_ini(void *user, const char *section, const char *name, const char *value)
{
    cell_t *c = user;
    if (strcmp(section, "cell") != 0)
        return 1;
#define S(field, nm)                                                                                                   \
    if (strcmp(name, nm) == 0) {                                                                                       \
        snprintf(c->field, sizeof c->field, "%s", value);                                                              \
        return 1;                                                                                                      \
    }
    S(key, "key")
    S(setting, "setting")
    S(task, "task")
    S(metric, "metric")
    S(opt, "server_opt")
    S(model, "model")
#undef S
    if (strcmp(name, "rounds") == 0)
        c->rounds_planned = atol(value);
    else if (strcmp(name, "seed") == 0)
        c->seed = strtoull(value, NULL, 10);
    for (int a = 0; a < FL_EXP_NAXES; a++) {
        size_t l = strlen(fl_exp_axis_names[a]);
        if (strncmp(name, fl_exp_axis_names[a], l) != 0)
            continue;
        if (!name[l])
            snprintf(c->label[a], sizeof c->label[a], "%s", value);
        else if (strcmp(name + l, "_value") == 0)
            c->value[a] = strtod(value, NULL);
    }
    return 1;
}

static double col_or_nan(sqlite3_stmt *s, int i)
{
    return sqlite3_column_type(s, i) == SQLITE_NULL ? NAN : sqlite3_column_double(s, i);
}

/* The newest run of the cell's database and its rounds. */
static int load_rounds(cell_t *c, FILE *log)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/run.db", c->dir);
    if (access(p, F_OK) != 0)
        return 0;
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    int rc = FL_EDB;
    if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    sqlite3_busy_timeout(db, 10000);
    long long run = 0;
    if (sqlite3_prepare_v2(db, "SELECT id, status FROM runs ORDER BY id DESC LIMIT 1", -1, &s, NULL) != SQLITE_OK) {
        rc = 0; /* created, no schema yet */
        goto out;
    }
    if (sqlite3_step(s) == SQLITE_ROW) {
        run = sqlite3_column_int64(s, 0);
        snprintf(c->run_status, sizeof c->run_status, "%s", (const char *)sqlite3_column_text(s, 1));
    }
    sqlite3_finalize(s);
    s = NULL;
    if (!run) {
        rc = 0;
        goto out;
    }
    /* train_accuracy arrived with a later schema: older logs read as NULL. */
    int has_acc = sqlite3_prepare_v2(db, "SELECT train_accuracy FROM rounds LIMIT 0", -1, &s, NULL) == SQLITE_OK;
    sqlite3_finalize(s);
    s = NULL;
    char q[1024];
    snprintf(q, sizeof q,
             "SELECT round, status = 'closed', %s, train_loss, eval_accuracy, eval_loss,"
             " julianday(started_at) * 86400.0, bytes_in + bytes_out, julianday(finished_at) * 86400.0"
             " FROM rounds WHERE run_id = ? ORDER BY round",
             has_acc ? "train_accuracy" : "NULL");
    if (sqlite3_prepare_v2(db, q, -1, &s, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(s, 1, run);
    size_t cap = 0;
    int step;
    double prev_end = NAN;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (c->nr == cap) {
            rrow_t *nr = realloc(c->r, (cap = cap ? 2 * cap : 128) * sizeof *nr);
            if (!nr) {
                rc = FL_ENOMEM;
                goto out;
            }
            c->r = nr;
        }
        rrow_t *r = &c->r[c->nr++];
        r->round = (long)sqlite3_column_int64(s, 0);
        r->closed = sqlite3_column_int(s, 1);
        r->train_acc = col_or_nan(s, 2);
        r->train_loss = col_or_nan(s, 3);
        r->eval_acc = col_or_nan(s, 4);
        r->eval_loss = col_or_nan(s, 5);
        /* A round's wall time runs from the previous round's end (the
         * evaluation between rounds included) to its own end; the first
         * round's from its start. */
        double start = col_or_nan(s, 6), end = col_or_nan(s, 8);
        r->seconds = end - (c->nr > 1 ? prev_end : start);
        prev_end = end;
        r->bytes = col_or_nan(s, 7);
    }
    rc = step == SQLITE_DONE ? 0 : FL_EDB;
out:
    if (rc == FL_EDB)
        fprintf(log, "report: %s: %s\n", p, db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_finalize(s);
    sqlite3_close(db);
    return rc;
}

static int is_mse(const cell_t *c)
{
    return strcmp(c->metric, "mse") == 0;
}

/* The selection score and the final test metric of one cell. */
static void score(cell_t *c)
{
    int mse = is_mse(c);
    size_t closed = 0;
    for (size_t i = 0; i < c->nr; i++)
        closed += c->r[i].closed;
    long w = closed < FL_EXP_REPORT_WINDOW ? (long)closed : FL_EXP_REPORT_WINDOW;
    c->window = w;
    c->score = c->final = NAN;
    c->final_round = 0;
    /* Training metric if the log has it anywhere in the window, else test accuracy. */
    int have_train = 0;
    long seen = 0;
    for (size_t i = c->nr; i-- > 0 && seen < w;)
        if (c->r[i].closed) {
            seen++;
            have_train |= !isnan(mse ? c->r[i].train_loss : c->r[i].train_acc);
        }
    c->by_test = !have_train && !mse;
    double sum = 0;
    long cnt = 0;
    seen = 0;
    for (size_t i = c->nr; i-- > 0 && seen < w;) {
        if (!c->r[i].closed)
            continue;
        seen++;
        double v = mse ? c->r[i].train_loss : c->by_test ? c->r[i].eval_acc : c->r[i].train_acc;
        if (!isnan(v)) {
            sum += v;
            cnt++;
        }
    }
    if (cnt)
        c->score = sum / (double)cnt;
    for (size_t i = c->nr; i-- > 0;) {
        double v = mse ? c->r[i].eval_loss : c->r[i].eval_acc;
        if (!isnan(v)) {
            c->final = v;
            c->final_round = c->r[i].round;
            break;
        }
    }
    c->total_seconds = c->total_bytes = 0;
    for (size_t i = 0; i < c->nr; i++) {
        if (!isnan(c->r[i].seconds))
            c->total_seconds += c->r[i].seconds;
        if (!isnan(c->r[i].bytes))
            c->total_bytes += c->r[i].bytes;
    }
}

static int collect(const char *dir, cells_t *cs, FILE *log)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/cells", dir);
    DIR *d = opendir(p);
    if (!d) {
        fprintf(log, "report: %s: %s\n", p, strerror(errno));
        return FL_ENOTFOUND;
    }
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        cell_t c;
        memset(&c, 0, sizeof c);
        if (snprintf(c.dir, sizeof c.dir, "%s/%s", p, e->d_name) >= (int)sizeof c.dir)
            continue;
        char ini[4300];
        snprintf(ini, sizeof ini, "%s/cell.ini", c.dir);
        if (ini_parse(ini, cell_ini, &c) != 0 || !c.key[0] || !c.opt[0] || !c.task[0]) {
            fprintf(log, "report: %s: no readable cell.ini, skipped\n", c.dir);
            continue;
        }
        snprintf(ini, sizeof ini, "%s/done", c.dir);
        c.done = access(ini, F_OK) == 0;
        if ((rc = load_rounds(&c, log))) {
            free(c.r);
            if (rc == FL_EDB) { /* one unreadable cell does not hide the others */
                rc = 0;
                continue;
            }
            break;
        }
        score(&c);
        /* The same key from another shard: keep the finished copy, else the longer one. */
        size_t j;
        for (j = 0; j < cs->n && strcmp(cs->c[j].key, c.key) != 0; j++)
            ;
        if (j < cs->n) {
            cell_t *o = &cs->c[j];
            if (c.done > o->done || (c.done == o->done && c.nr > o->nr)) {
                free(o->r);
                *o = c;
            } else
                free(c.r);
            continue;
        }
        if (cs->n == cs->cap) {
            cell_t *nc = realloc(cs->c, (cs->cap = cs->cap ? 2 * cs->cap : 64) * sizeof *nc);
            if (!nc) {
                free(c.r);
                rc = FL_ENOMEM;
                break;
            }
            cs->c = nc;
        }
        cs->c[cs->n++] = c;
    }
    closedir(d);
    return rc;
}

/* Cells in a stable order: task, optimizer (the paper's order), axis values, seed. */
static int cell_cmp(const void *pa, const void *pb)
{
    const cell_t *a = pa, *b = pb;
    int r = strcmp(a->task, b->task);
    if (r)
        return r;
    r = fl_exp_opt_index(a->opt) - fl_exp_opt_index(b->opt);
    if (r)
        return r;
    for (int k = 0; k < FL_EXP_NAXES; k++) {
        double x = a->value[k], y = b->value[k];
        if (isnan(x) != isnan(y))
            return isnan(x) ? -1 : 1;
        if (!isnan(x) && x != y)
            return x < y ? -1 : 1;
    }
    return a->seed < b->seed ? -1 : a->seed > b->seed;
}

/* One setting: the cells [first, first+n) of the sorted list (same task and setting). */
typedef struct {
    size_t first, n;
    double score, mean, sd, lo, hi;
    size_t nfinal;
    int partial, by_test;
    long min_rounds, window;
} setting_t;

static void setting_stats(const cell_t *c, setting_t *s)
{
    double sum = 0, sum2 = 0;
    long ns = 0;
    s->score = NAN;
    s->mean = s->sd = s->lo = s->hi = NAN;
    s->nfinal = 0;
    s->partial = 0;
    s->by_test = 0;
    s->min_rounds = -1;
    s->window = -1;
    for (size_t i = s->first; i < s->first + s->n; i++) {
        const cell_t *x = &c[i];
        s->partial |= !x->done;
        s->by_test |= x->by_test;
        if (s->min_rounds < 0 || (long)x->nr < s->min_rounds)
            s->min_rounds = (long)x->nr;
        if (s->window < 0 || x->window < s->window)
            s->window = x->window;
        if (!isnan(x->score)) {
            sum += x->score;
            ns++;
        }
    }
    if (ns)
        s->score = sum / (double)ns;
    sum = 0;
    for (size_t i = s->first; i < s->first + s->n; i++) {
        double v = c[i].final;
        if (isnan(v))
            continue;
        sum += v;
        sum2 += v * v;
        s->lo = s->nfinal == 0 || v < s->lo ? v : s->lo;
        s->hi = s->nfinal == 0 || v > s->hi ? v : s->hi;
        s->nfinal++;
    }
    if (s->nfinal) {
        s->mean = sum / (double)s->nfinal;
        double var = 0;
        for (size_t i = s->first; i < s->first + s->n; i++)
            if (!isnan(c[i].final))
                var += (c[i].final - s->mean) * (c[i].final - s->mean);
        s->sd = s->nfinal > 1 ? sqrt(var / (double)(s->nfinal - 1)) : NAN; /* one seed: no spread */
        (void)sum2;
    }
}

static void csv_num(FILE *f, double v, const char *fmt)
{
    if (isnan(v))
        fputs(",", f);
    else {
        fputc(',', f);
        fprintf(f, fmt, v);
    }
}

static int write_grid_csv(const char *out, const cell_t *c, size_t n)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/grid.csv", out);
    FILE *f = fopen(p, "w");
    if (!f)
        return FL_EIO;
    fprintf(f, "task,server_opt,server_lr,client_lr,tau,clients_per_round,local_epochs,alpha,seed,state,rounds_done,"
               "rounds,selection_score,selection_rounds,selection_metric,final_test,final_round,wall_seconds,"
               "seconds_per_round,bytes_per_round,key\n");
    for (size_t i = 0; i < n; i++) {
        const cell_t *x = &c[i];
        fprintf(f, "%s,%s", x->task, x->opt);
        for (int a = 0; a < FL_EXP_NAXES; a++)
            fprintf(f, ",%s", x->label[a]);
        fprintf(f, ",%llu,%s,%zu,%ld", x->seed, x->done ? "done" : x->nr ? "partial" : "pending", x->nr,
                x->rounds_planned);
        csv_num(f, x->score, "%.6f");
        fprintf(f, ",%ld,%s", x->window, is_mse(x) ? "train_mse" : x->by_test ? "test_accuracy" : "train_accuracy");
        csv_num(f, x->final, "%.6f");
        fprintf(f, ",%ld", x->final_round);
        csv_num(f, x->total_seconds, "%.3f");
        csv_num(f, x->nr ? x->total_seconds / (double)x->nr : NAN, "%.3f");
        csv_num(f, x->nr ? x->total_bytes / (double)x->nr : NAN, "%.0f");
        fprintf(f, ",\"%s\"\n", x->key);
    }
    return fclose(f) ? FL_EIO : 0;
}

/* "10^-2.5" -> log10 of the value, for plot axes. */
static double lg(double v)
{
    return v > 0 ? log10(v) : NAN;
}

/* Writes a file of plot data; returns the FILE (NULL on failure). */
static FILE *data_file(const char *out, const char *name)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/data/%s", out, name);
    return fopen(p, "w");
}

/* File-name-safe copy of a task name. */
static void safe(char *dst, size_t len, const char *s)
{
    size_t i = 0;
    for (; *s && i + 1 < len; s++)
        dst[i++] = (char)((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' ? *s : '_');
    dst[i] = 0;
}

static const char *metric_name(const cell_t *c)
{
    return is_mse(c) ? "test MSE" : strcmp(c->metric, "recall@5") == 0 ? "test recall@5" : "test accuracy";
}

/* Both terminals for one plot: the PNG, then the same plot as SVG. */
static void gp_out(FILE *gp, const char *name, const char *plot)
{
    fprintf(gp, "set terminal pngcairo size 960,600 font ',11'\nset output '%s.png'\n%s\n", name, plot);
    fprintf(gp, "set terminal svg size 960,600 dynamic font ',11'\nset output '%s.svg'\n%s\nset output\n", name,
            plot);
}

typedef struct {
    const char *out;
    FILE *gp, *md;
    const cell_t *c;
} rep_t;

/* Curves, heat maps and costs of one task; best[o] = the best setting of
 * optimizer o (n = 0: none). */
static int task_plots(rep_t *R, const char *task, setting_t *best, const setting_t *sets, size_t nsets)
{
    char t[64], name[256], plot[8192];
    safe(t, sizeof t, task);
    const cell_t *c = R->c;
    const cell_t *any = NULL;
    for (int o = 0; o < FL_EXP_NOPTS; o++)
        if (best[o].n)
            any = &c[best[o].first];
    if (!any)
        return 0;
    int mse = is_mse(any);
    /* 1. test metric per round of each best setting: mean, min, max over seeds. */
    size_t pl = 0;
    int lc = 1;
    pl += (size_t)snprintf(plot + pl, sizeof plot - pl, "plot ");
    for (int o = 0; o < FL_EXP_NOPTS; o++) {
        if (!best[o].n)
            continue;
        snprintf(name, sizeof name, "curve-%s-%s.dat", t, fl_exp_opt_names[o]);
        FILE *f = data_file(R->out, name);
        if (!f)
            return FL_EIO;
        fprintf(f, "# round mean min max seeds (%s of the best %s setting)\n", metric_name(any),
                fl_exp_opt_names[o]);
        long maxr = 0;
        for (size_t i = best[o].first; i < best[o].first + best[o].n; i++)
            for (size_t k = 0; k < c[i].nr; k++)
                maxr = c[i].r[k].round > maxr ? c[i].r[k].round : maxr;
        for (long r = 1; r <= maxr; r++) {
            double s = 0, lo = INFINITY, hi = -INFINITY;
            int m = 0;
            for (size_t i = best[o].first; i < best[o].first + best[o].n; i++)
                for (size_t k = 0; k < c[i].nr; k++)
                    if (c[i].r[k].round == r) {
                        double v = mse ? c[i].r[k].eval_loss : c[i].r[k].eval_acc;
                        if (!isnan(v)) {
                            s += v;
                            lo = v < lo ? v : lo;
                            hi = v > hi ? v : hi;
                            m++;
                        }
                    }
            if (m)
                fprintf(f, "%ld %.6f %.6f %.6f %d\n", r, s / m, lo, hi, m);
        }
        if (fclose(f))
            return FL_EIO;
        pl += (size_t)snprintf(plot + pl, sizeof plot - pl,
                               "%s'data/%s' using 1:3:4 with filledcurves fs transparent solid 0.2 noborder lc %d "
                               "notitle, '' using 1:2 with lines lw 2 lc %d title '%s'",
                               lc > 1 ? ", " : "", name, lc, lc, fl_exp_opt_names[o]);
        lc++;
    }
    fprintf(R->gp,
            "reset\nset title '%s: %s of the best setting per ServerOpt (mean; band: min-max over seeds)' "
            "noenhanced\nset xlabel 'round'\nset ylabel '%s'\nset key bottom right\nset grid\n",
            task, metric_name(any), metric_name(any));
    snprintf(name, sizeof name, "curves-%s", t);
    gp_out(R->gp, name, plot);
    fprintf(R->md, "\n![%s per round](%s.png)\n\n", metric_name(any), name);
    /* 2. heat map per optimizer over (log10 client lr, log10 server lr), the
     * best setting's other axes held. */
    for (int o = 0; o < FL_EXP_NOPTS; o++) {
        if (!best[o].n)
            continue;
        const cell_t *b = &c[best[o].first];
        snprintf(name, sizeof name, "heat-%s-%s.dat", t, fl_exp_opt_names[o]);
        FILE *f = data_file(R->out, name);
        if (!f)
            return FL_EIO;
        fprintf(f, "# log10_client_lr log10_server_lr mean_%s seeds (tau %s, K %s, E %s, alpha %s)\n",
                mse ? "test_mse" : "test_metric", b->label[FL_EXP_TAU], b->label[FL_EXP_K], b->label[FL_EXP_E],
                b->label[FL_EXP_ALPHA]);
        double dx = INFINITY, dy = INFINITY;
        size_t pts = 0;
        double px[512], py[512];
        for (size_t si = 0; si < nsets; si++) {
            const cell_t *x = &c[sets[si].first];
            if (strcmp(x->task, task) || strcmp(x->opt, b->opt) || strcmp(x->label[FL_EXP_TAU], b->label[FL_EXP_TAU]) ||
                strcmp(x->label[FL_EXP_K], b->label[FL_EXP_K]) || strcmp(x->label[FL_EXP_E], b->label[FL_EXP_E]) ||
                strcmp(x->label[FL_EXP_ALPHA], b->label[FL_EXP_ALPHA]) || isnan(sets[si].mean))
                continue;
            double xx = lg(x->value[FL_EXP_CLIENT_LR]), yy = lg(x->value[FL_EXP_SERVER_LR]);
            fprintf(f, "%.6f %.6f %.6f %zu\n", xx, yy, sets[si].mean, sets[si].nfinal);
            for (size_t k = 0; k < pts; k++) {
                if (fabs(px[k] - xx) > 1e-9)
                    dx = fmin(dx, fabs(px[k] - xx));
                if (fabs(py[k] - yy) > 1e-9)
                    dy = fmin(dy, fabs(py[k] - yy));
            }
            if (pts < 512) {
                px[pts] = xx;
                py[pts] = yy;
                pts++;
            }
        }
        if (fclose(f))
            return FL_EIO;
        if (!pts)
            continue;
        dx = isinf(dx) ? 0.25 : dx / 2;
        dy = isinf(dy) ? 0.25 : dy / 2;
        fprintf(R->gp,
                "reset\nset title '%s, %s: final %s (mean over seeds)' noenhanced\nset xlabel 'log10 client lr'\n"
                "set ylabel 'log10 server lr'\nset palette rgbformulae 22,13,-31\nunset key\n"
                "set autoscale xy\nset offsets %g,%g,%g,%g\n",
                task, b->opt, metric_name(b), dx, dx, dy, dy);
        snprintf(plot, sizeof plot,
                 "plot 'data/%s' using 1:2:(%g):(%g):3 with boxxyerror fs solid 1.0 fc palette, "
                 "'' using 1:2:(sprintf('%%.3f',$3)) with labels font ',9'",
                 name, dx, dy);
        char png[256];
        snprintf(png, sizeof png, "heat-%s-%s", t, fl_exp_opt_names[o]);
        gp_out(R->gp, png, plot);
        fprintf(R->md, "![%s heat map](%s.png)\n", fl_exp_opt_names[o], png);
    }
    /* 3. wall time and bytes per round of each best setting (mean over seeds). */
    char tplot[4096], bplot[4096];
    size_t tl = (size_t)snprintf(tplot, sizeof tplot, "plot "), bl = (size_t)snprintf(bplot, sizeof bplot, "plot ");
    lc = 1;
    for (int o = 0; o < FL_EXP_NOPTS; o++) {
        if (!best[o].n)
            continue;
        snprintf(name, sizeof name, "cost-%s-%s.dat", t, fl_exp_opt_names[o]);
        FILE *f = data_file(R->out, name);
        if (!f)
            return FL_EIO;
        fprintf(f, "# round wall_seconds MiB_in_and_out (mean over seeds)\n");
        long maxr = 0;
        for (size_t i = best[o].first; i < best[o].first + best[o].n; i++)
            for (size_t k = 0; k < c[i].nr; k++)
                maxr = c[i].r[k].round > maxr ? c[i].r[k].round : maxr;
        for (long r = 1; r <= maxr; r++) {
            double s = 0, b = 0;
            int m = 0;
            for (size_t i = best[o].first; i < best[o].first + best[o].n; i++)
                for (size_t k = 0; k < c[i].nr; k++)
                    if (c[i].r[k].round == r && !isnan(c[i].r[k].seconds)) {
                        s += c[i].r[k].seconds;
                        b += c[i].r[k].bytes;
                        m++;
                    }
            if (m)
                fprintf(f, "%ld %.4f %.4f\n", r, s / m, b / m / 1048576.0);
        }
        if (fclose(f))
            return FL_EIO;
        tl += (size_t)snprintf(tplot + tl, sizeof tplot - tl, "%s'data/%s' using 1:2 with linespoints lc %d title '%s'",
                               lc > 1 ? ", " : "", name, lc, fl_exp_opt_names[o]);
        bl += (size_t)snprintf(bplot + bl, sizeof bplot - bl, "%s'data/%s' using 1:3 with linespoints lc %d title '%s'",
                               lc > 1 ? ", " : "", name, lc, fl_exp_opt_names[o]);
        lc++;
    }
    fprintf(R->gp, "reset\nset title '%s: wall time per round, evaluation included (best settings)' noenhanced\n"
                   "set xlabel 'round'\n"
                   "set ylabel 'seconds'\nset grid\nset yrange [0:*]\n", task);
    snprintf(name, sizeof name, "time-%s", t);
    gp_out(R->gp, name, tplot);
    fprintf(R->gp, "reset\nset title '%s: bytes per round, in + out (best settings)' noenhanced\n"
                   "set xlabel 'round'\nset ylabel 'MiB'\nset grid\nset yrange [0:*]\n", task);
    snprintf(name, sizeof name, "bytes-%s", t);
    gp_out(R->gp, name, bplot);
    fprintf(R->md, "\n![wall time per round](time-%s.png) ![bytes per round](bytes-%s.png)\n", t, t);
    return 0;
}

static int run_gnuplot(const char *out, FILE *log)
{
    pid_t pid = fork();
    if (pid < 0)
        return FL_EIO;
    if (pid == 0) {
        /* gnuplot's warnings (a flat range, ...) go to gnuplot.log. */
        if (chdir(out) != 0)
            _exit(126);
        int fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            dup2(fd, 2);
        execlp("gnuplot", "gnuplot", "plots.gp", (char *)NULL);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return FL_EIO;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(log, "report: gnuplot %s (status %d, see %s/gnuplot.log); the tables are written, the plots are not\n",
                WIFEXITED(st) && WEXITSTATUS(st) == 127 ? "not found (deploy/install-deps.sh installs gnuplot-nox)"
                                                         : "failed",
                WIFEXITED(st) ? WEXITSTATUS(st) : -1, out);
        return FL_EIO;
    }
    return 0;
}

static void fmt_metric(char *buf, size_t len, double v, int mse)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else if (mse)
        snprintf(buf, len, "%.5f", v);
    else
        snprintf(buf, len, "%.2f", 100 * v);
}

int fl_exp_report_write(const char *const *dirs, size_t ndirs, const char *out, unsigned flags, FILE *log)
{
    cells_t cs = {0};
    setting_t *sets = NULL;
    FILE *md = NULL, *gp = NULL, *bc = NULL;
    int rc = 0;
    for (size_t i = 0; i < ndirs && !rc; i++)
        rc = collect(dirs[i], &cs, log);
    if (rc)
        goto out;
    /* After collect(): a shard's finished copy of a cell has already won over an unfinished one. */
    size_t nleft = 0;
    if (flags & FL_EXP_REPORT_FINISHED_ONLY) {
        size_t k = 0;
        for (size_t i = 0; i < cs.n; i++) {
            if (cs.c[i].done)
                cs.c[k++] = cs.c[i];
            else
                free(cs.c[i].r);
        }
        nleft = cs.n - k;
        cs.n = k;
    }
    if (!cs.n) {
        fprintf(log, "report: no %scells in the given directories\n",
                flags & FL_EXP_REPORT_FINISHED_ONLY ? "finished " : "");
        rc = FL_ENOTFOUND;
        goto out;
    }
    qsort(cs.c, cs.n, sizeof cs.c[0], cell_cmp);
    /* Settings: runs of equal (task, setting) in the sorted order. */
    sets = calloc(cs.n, sizeof *sets);
    size_t ns = 0;
    if (!sets) {
        rc = FL_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < cs.n;) {
        size_t j = i + 1;
        while (j < cs.n && strcmp(cs.c[j].task, cs.c[i].task) == 0 && strcmp(cs.c[j].setting, cs.c[i].setting) == 0)
            j++;
        sets[ns].first = i;
        sets[ns].n = j - i;
        setting_stats(cs.c, &sets[ns]);
        ns++;
        i = j;
    }
    char p[4200];
    if ((mkdir(out, 0755) != 0 && errno != EEXIST) ||
        (snprintf(p, sizeof p, "%s/data", out), mkdir(p, 0755) != 0 && errno != EEXIST)) {
        fprintf(log, "report: cannot create %s: %s\n", p, strerror(errno));
        rc = FL_EIO;
        goto out;
    }
    if ((rc = write_grid_csv(out, cs.c, cs.n)))
        goto out;
    snprintf(p, sizeof p, "%s/report.md", out);
    md = fopen(p, "w");
    snprintf(p, sizeof p, "%s/plots.gp", out);
    gp = fopen(p, "w");
    snprintf(p, sizeof p, "%s/best.csv", out);
    bc = fopen(p, "w");
    if (!md || !gp || !bc) {
        rc = FL_EIO;
        goto out;
    }
    fprintf(bc, "task,server_opt,server_lr,client_lr,tau,clients_per_round,local_epochs,alpha,seeds,state,"
                "min_rounds,selection_rounds,selection_score,final_test_mean,final_test_sd,final_test_min,"
                "final_test_max,setting\n");
    size_t ndone = 0;
    for (size_t i = 0; i < cs.n; i++)
        ndone += cs.c[i].done;
    fprintf(md, "# Experiment report\n\n%zu cells from %zu director%s: %zu finished, %zu partial or not started",
            cs.n, ndirs, ndirs == 1 ? "y" : "ies", ndone, cs.n - ndone);
    if (flags & FL_EXP_REPORT_FINISHED_ONLY)
        fprintf(md, "; %zu unfinished cell%s left out (--finished-only)", nleft, nleft == 1 ? "" : "s");
    fprintf(md, ".\n\n");
    fprintf(md, "Selection (the paper's rule): a cell scores its example-weighted client training accuracy averaged "
                "over its last %d closed rounds (all of them when it has fewer; training MSE for an MSE task, "
                "lower is better); a setting scores the mean over its seeds; the best setting per task and "
                "ServerOpt is shown with its final test metric (last evaluated round) as mean ± sample standard "
                "deviation over seeds, and the range.\n",
            FL_EXP_REPORT_WINDOW);
    for (size_t ti = 0; ti < ns;) {
        const char *task = cs.c[sets[ti].first].task;
        size_t tj = ti;
        while (tj < ns && strcmp(cs.c[sets[tj].first].task, task) == 0)
            tj++;
        setting_t best[FL_EXP_NOPTS];
        memset(best, 0, sizeof best);
        for (size_t si = ti; si < tj; si++) {
            const cell_t *x = &cs.c[sets[si].first];
            int o = fl_exp_opt_index(x->opt);
            if (o < 0 || isnan(sets[si].score))
                continue;
            int better = !best[o].n || (is_mse(x) ? sets[si].score < best[o].score : sets[si].score > best[o].score);
            if (better)
                best[o] = sets[si];
        }
        const cell_t *any = &cs.c[sets[ti].first];
        int mse = is_mse(any);
        fprintf(md, "\n## %s (%s, %s)\n\n", task, any->model, mse ? "test MSE" : "test metric in %");
        int by_test = 0;
        for (int o = 0; o < FL_EXP_NOPTS; o++)
            by_test |= best[o].n && best[o].by_test;
        if (by_test)
            fprintf(md, "**Ranked by test accuracy**: these logs have no client training accuracy (a server or "
                        "clients from before it), so the window averages the central test accuracy instead.\n\n");
        fprintf(md, "| ServerOpt | η (server lr) | η_l (client lr) | τ | K | E | α | seeds | rounds | selection "
                    "score (last %s rounds) | final %s, mean ± sd | range |\n",
                "≤100", mse ? "MSE" : "test");
        fprintf(md, "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (int o = 0; o < FL_EXP_NOPTS; o++) {
            if (!best[o].n)
                continue;
            const setting_t *s = &best[o];
            const cell_t *b = &cs.c[s->first];
            char sc[32], mean[32], sd[32], lo[32], hi[32];
            fmt_metric(sc, sizeof sc, s->score, mse);
            fmt_metric(mean, sizeof mean, s->mean, mse);
            fmt_metric(sd, sizeof sd, s->sd, mse);
            fmt_metric(lo, sizeof lo, s->lo, mse);
            fmt_metric(hi, sizeof hi, s->hi, mse);
            fprintf(md, "| %s | %s | %s | %s | %s | %s | %s | %zu | %ld/%ld%s | %s (%ld) | %s ± %s | %s–%s |\n",
                    b->opt, b->label[0], b->label[1], b->label[2], b->label[3], b->label[4], b->label[5], s->n,
                    s->min_rounds, b->rounds_planned, s->partial ? " (partial)" : "", sc, s->window, mean, sd, lo, hi);
            fprintf(bc, "%s,%s", task, b->opt);
            for (int a = 0; a < FL_EXP_NAXES; a++)
                fprintf(bc, ",%s", b->label[a]);
            fprintf(bc, ",%zu,%s,%ld,%ld", s->n, s->partial ? "partial" : "done", s->min_rounds, s->window);
            csv_num(bc, s->score, "%.6f");
            csv_num(bc, s->mean, "%.6f");
            csv_num(bc, s->sd, "%.6f");
            csv_num(bc, s->lo, "%.6f");
            csv_num(bc, s->hi, "%.6f");
            fprintf(bc, ",\"%s\"\n", b->setting);
        }
        /* What a round costs, per optimizer (all its cells). */
        fprintf(md, "\nWall time per round (from the previous round's end: evaluation and a resumed run's "
                    "restart included) and bytes in + out per round, all cells of the optimizer: ");
        for (int o = 0; o < FL_EXP_NOPTS; o++) {
            double secs = 0, bytes = 0;
            long rounds = 0;
            for (size_t si = ti; si < tj; si++)
                for (size_t i = sets[si].first; i < sets[si].first + sets[si].n; i++)
                    if (strcmp(cs.c[i].opt, fl_exp_opt_names[o]) == 0) {
                        secs += cs.c[i].total_seconds;
                        bytes += cs.c[i].total_bytes;
                        rounds += (long)cs.c[i].nr;
                    }
            if (rounds)
                fprintf(md, "%s %.2f s and %.1f MiB over %ld rounds; ", fl_exp_opt_names[o], secs / rounds,
                        bytes / rounds / 1048576.0, rounds);
        }
        fprintf(md, "\n");
        rep_t R = {out, gp, md, cs.c};
        if ((rc = task_plots(&R, task, best, sets + ti, tj - ti)))
            goto out;
        ti = tj;
    }
    fprintf(md, "\nEvery cell: `grid.csv`; the best settings: `best.csv`; plot data: `data/`; plots: `plots.gp` "
                "(gnuplot).\n");
    if (fclose(gp)) {
        gp = NULL;
        rc = FL_EIO;
        goto out;
    }
    gp = NULL;
    rc = run_gnuplot(out, log);
    if (!rc)
        fprintf(log, "report: %zu cells (%zu finished) -> %s/report.md, grid.csv, best.csv, plots\n", cs.n, ndone, out);
out:
    if (md && fclose(md) && !rc)
        rc = FL_EIO;
    if (bc && fclose(bc) && !rc)
        rc = FL_EIO;
    if (gp)
        fclose(gp);
    for (size_t i = 0; i < cs.n; i++)
        free(cs.c[i].r);
    free(cs.c);
    free(sets);
    return rc;
}
