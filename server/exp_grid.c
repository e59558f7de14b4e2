/* exp_grid: grid files and their cells (see exp_grid.h). */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "server/exp_grid.h"

const char *const fl_exp_axis_names[FL_EXP_NAXES] = {"server_lr",         "client_lr",    "tau",
                                                     "clients_per_round", "local_epochs", "alpha"};

/* Settings the runner itself gives every server (a [server] line may not). */
static const char *const managed[] = {"listen",     "tls_cert",          "tls_key",      "tls_ca",   "db",
                                      "resume",     "model",             "eval_data",    "eval_every",
                                      "eval_max_examples", "rounds",     "clients_per_round", "min_clients",
                                      "seed",       "client_lr",         "local_epochs", "batch_size",
                                      "server_opt", "server_lr",         "tau",          "keep_checkpoints",
                                      NULL};

static void seterr(char *err, size_t len, const char *fmt, ...)
{
    if (!err || !len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    return s;
}

static int parse_double(const char *s, const char **end, double *out)
{
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (e == s || errno || !isfinite(v))
        return FL_EINVAL;
    *end = e;
    *out = v;
    return 0;
}

static int add_value(fl_exp_axis_t *ax, double v, const char *label, char *err, size_t errlen)
{
    for (size_t i = 0; i < ax->n; i++)
        if (strcmp(ax->v[i].label, label) == 0) {
            seterr(err, errlen, "%s appears twice", label);
            return FL_EINVAL;
        }
    if (ax->n == FL_EXP_MAX_VALUES) {
        seterr(err, errlen, "more than %d values", FL_EXP_MAX_VALUES);
        return FL_ERANGE;
    }
    ax->v[ax->n].v = v;
    snprintf(ax->v[ax->n].label, sizeof ax->v[ax->n].label, "%s", label);
    ax->n++;
    return 0;
}

/* A power of ten from its exponent: the label is the exponent printed with
 * ten significant digits, and the value is what that label parses to, so
 * 10^-3 + 5 steps of 0.5 and a literal 10^-0.5 are the same cell. */
static int add_power(fl_exp_axis_t *ax, double e, char *err, size_t errlen)
{
    char ex[24], label[32];
    snprintf(ex, sizeof ex, "%.10g", e);
    if (strcmp(ex, "-0") == 0)
        strcpy(ex, "0");
    double ev = strtod(ex, NULL);
    double v = pow(10.0, ev);
    if (!isfinite(v) || v <= 0) {
        seterr(err, errlen, "10^%s is out of range", ex);
        return FL_EINVAL;
    }
    snprintf(label, sizeof label, "10^%s", ex);
    return add_value(ax, v, label, err, errlen);
}

static int parse_item(char *item, fl_exp_axis_t *ax, char *err, size_t errlen)
{
    const char *p = item, *e;
    if (strcmp(item, "paper") == 0) {
        ax->paper = 1;
        return add_value(ax, NAN, "paper", err, errlen);
    }
    if (strncmp(p, "10^", 3) == 0) {
        double a, b, step;
        /* Split at ".." first: strtod would take "-3." of "-3..10^0". */
        const char *dots = strstr(p, "..");
        char first[64];
        size_t fl = dots ? (size_t)(dots - (p + 3)) : strlen(p + 3);
        if (fl >= sizeof first)
            goto bad;
        memcpy(first, p + 3, fl);
        first[fl] = 0;
        if (parse_double(first, &e, &a))
            goto bad;
        while (isspace((unsigned char)*e))
            e++;
        if (*e)
            goto bad;
        if (!dots)
            return add_power(ax, a, err, errlen);
        e = dots + 2;
        while (isspace((unsigned char)*e))
            e++;
        if (strncmp(e, "10^", 3) != 0 || parse_double(e + 3, &e, &b))
            goto bad;
        while (isspace((unsigned char)*e))
            e++;
        if (strncmp(e, "step", 4) != 0 || !isspace((unsigned char)e[4]) || parse_double(e + 4, &e, &step))
            goto bad;
        while (isspace((unsigned char)*e))
            e++;
        if (*e)
            goto bad;
        if (!(step > 0) || b < a) {
            seterr(err, errlen, "'%s': the lattice needs a positive step and a first exponent <= the last", item);
            return FL_EINVAL;
        }
        double steps = (b - a) / step;
        double k = round(steps);
        if (fabs(steps - k) > 1e-9 * (1 + fabs(steps))) {
            seterr(err, errlen, "'%s': %g..%g is not a whole number of steps of %g", item, a, b, step);
            return FL_EINVAL;
        }
        if (k + 1 > FL_EXP_MAX_VALUES) {
            seterr(err, errlen, "'%s': more than %d values", item, FL_EXP_MAX_VALUES);
            return FL_ERANGE;
        }
        for (long i = 0; i <= (long)k; i++) {
            /* Each point from the first exponent (not by summing steps),
             * and the last one exactly the given end. */
            int rc = add_power(ax, i == (long)k ? b : a + (double)i * step, err, errlen);
            if (rc)
                return rc;
        }
        return 0;
    }
    double v;
    if (parse_double(p, &e, &v) == 0) {
        while (isspace((unsigned char)*e))
            e++;
        if (!*e) {
            char label[32];
            snprintf(label, sizeof label, "%.10g", v);
            return add_value(ax, v, label, err, errlen);
        }
    }
bad:
    seterr(err, errlen, "'%s' is not a number, 10^E, 10^A..10^B step S or paper", item);
    return FL_EINVAL;
}

int fl_exp_axis_parse(const char *text, fl_exp_axis_t *ax, char *err, size_t errlen)
{
    char *copy = strdup(text ? text : "");
    if (!copy)
        return FL_ENOMEM;
    int rc = 0, any = 0;
    /* strsep, not strtok: an empty item between two commas is an error. */
    char *rest = copy, *tok;
    while ((tok = strsep(&rest, ",")) != NULL) {
        char *t = trim(tok);
        if (!*t) {
            seterr(err, errlen, "an empty item");
            rc = FL_EINVAL;
            break;
        }
        if ((rc = parse_item(t, ax, err, errlen)))
            break;
        any = 1;
    }
    if (!rc && !any) {
        seterr(err, errlen, "no values");
        rc = FL_EINVAL;
    }
    free(copy);
    return rc;
}

/* --- the INI file ---------------------------------------------------------- */

typedef struct {
    fl_exp_grid_t *g;
    const char *path;
    char *err;
    size_t errlen;
    int failed;
    char preset[64];
    int have_model, have_data, have_eval, have_part, have_metric;
    int have_axis[FL_EXP_NAXES];
} ctx_t;

static int parse_long(const char *s, long min, long max, long *out)
{
    char *e;
    errno = 0;
    long v = strtol(s, &e, 10);
    if (e == s || *e || errno || v < min || v > max)
        return FL_EINVAL;
    *out = v;
    return 0;
}

static int parse_seeds(fl_exp_grid_t *g, const char *value, char *err, size_t errlen)
{
    char *copy = strdup(value), *save = NULL;
    if (!copy)
        return FL_ENOMEM;
    int rc = 0;
    g->nseeds = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok), *dots = strstr(t, "..");
        long a, b;
        if (dots) {
            *dots = 0;
            if (parse_long(trim(t), 0, 1L << 30, &a) || parse_long(trim(dots + 2), 0, 1L << 30, &b) || b < a)
                rc = FL_EINVAL;
        } else if (parse_long(t, 0, 1L << 30, &a))
            rc = FL_EINVAL;
        else
            b = a;
        for (long s = a; !rc && s <= b; s++) {
            for (size_t i = 0; i < g->nseeds; i++)
                if (g->seeds[i] == (uint64_t)s)
                    rc = FL_EINVAL;
            if (!rc && g->nseeds == FL_EXP_MAX_SEEDS)
                rc = FL_ERANGE;
            if (!rc)
                g->seeds[g->nseeds++] = (uint64_t)s;
        }
    }
    if (!rc && g->nseeds == 0)
        rc = FL_EINVAL;
    if (rc)
        seterr(err, errlen, "seeds: '%s' is not a list of distinct seeds (1,2,3 or 1..3, at most %d)", value,
               FL_EXP_MAX_SEEDS);
    free(copy);
    return rc;
}

static int set_str(char *dst, size_t cap, const char *v)
{
    if (strlen(v) >= cap || !*v)
        return FL_EINVAL;
    strcpy(dst, v);
    return 0;
}

static int on_experiment(ctx_t *c, const char *name, const char *value)
{
    fl_exp_grid_t *g = c->g;
    if (strcmp(name, "preset") == 0)
        return set_str(c->preset, sizeof c->preset, value);
    if (strcmp(name, "model") == 0)
        return c->have_model = 1, set_str(g->model, sizeof g->model, value);
    if (strcmp(name, "data") == 0)
        return c->have_data = 1, set_str(g->data, sizeof g->data, value);
    if (strcmp(name, "eval_data") == 0)
        return c->have_eval = 1, strlen(value) < sizeof g->eval_data ? (strcpy(g->eval_data, value), 0) : FL_EINVAL;
    if (strcmp(name, "partition") == 0)
        return c->have_part = 1, set_str(g->partition, sizeof g->partition, value);
    if (strcmp(name, "metric") == 0) {
        if (strcmp(value, "accuracy") && strcmp(value, "mse") && strcmp(value, "recall@5"))
            return FL_EINVAL;
        return c->have_metric = 1, set_str(g->metric, sizeof g->metric, value);
    }
    if (strcmp(name, "seeds") == 0)
        return parse_seeds(g, value, c->err, c->errlen) ? FL_ECANCELED : 0;
    struct {
        const char *name;
        long *dst, min, max;
    } nums[] = {
        {"rounds", &g->rounds, 1, 100000000},
        {"clients", &g->clients, 1, 10000000},
        {"batch_size", &g->batch_size, 1, 1000000},
        {"eval_every", &g->eval_every, 0, 100000000},
        {"eval_max_examples", &g->eval_max_examples, 0, 100000000},
        {"jobs", &g->jobs, 1, 4096},
        {"data_seed", &g->data_seed, 0, 1L << 30},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++)
        if (strcmp(name, nums[i].name) == 0)
            return parse_long(value, nums[i].min, nums[i].max, nums[i].dst);
    return FL_ENOTFOUND;
}

static int on_axes(ctx_t *c, const char *name, const char *value)
{
    fl_exp_grid_t *g = c->g;
    if (strcmp(name, "server_opt") == 0) {
        char *copy = strdup(value), *save = NULL;
        int rc = 0;
        if (!copy)
            return FL_ENOMEM;
        g->nopts = 0;
        for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
            char *t = trim(tok);
            if (fl_exp_opt_index(t) < 0)
                rc = FL_EINVAL;
            for (size_t i = 0; !rc && i < g->nopts; i++)
                if (strcmp(g->opts[i], t) == 0)
                    rc = FL_EINVAL;
            if (!rc)
                strcpy(g->opts[g->nopts++], t);
        }
        free(copy);
        return rc ? rc : g->nopts ? 0 : FL_EINVAL;
    }
    const char *dot = strchr(name, '.');
    size_t base = dot ? (size_t)(dot - name) : strlen(name);
    for (int a = 0; a < FL_EXP_NAXES; a++) {
        if (strlen(fl_exp_axis_names[a]) != base || strncmp(name, fl_exp_axis_names[a], base) != 0)
            continue;
        fl_exp_axis_t *ax = &g->axis[a];
        if (dot) {
            int o = fl_exp_opt_index(dot + 1);
            if (a > FL_EXP_TAU || o < 0)
                return FL_ENOTFOUND;
            if (g->has_opt_axis[o][a])
                return FL_EEXIST;
            g->has_opt_axis[o][a] = 1;
            ax = &g->opt_axis[o][a];
        } else {
            if (c->have_axis[a])
                return FL_EEXIST;
            c->have_axis[a] = 1;
        }
        if (fl_exp_axis_parse(value, ax, c->err, c->errlen))
            return FL_ECANCELED;
        for (size_t i = 0; i < ax->n; i++) {
            double v = ax->v[i].v;
            if (ax->v[i].label[0] == 'p' && a >= FL_EXP_K)
                return FL_EINVAL;
            if (a == FL_EXP_K || a == FL_EXP_E) {
                if (!(v >= 1 && v <= 1e6 && v == floor(v)))
                    return FL_EINVAL;
            } else if (!isnan(v) && !(v > 0))
                return FL_EINVAL;
        }
        return 0;
    }
    return FL_ENOTFOUND;
}

static int on_server(ctx_t *c, const char *name, const char *value)
{
    fl_exp_grid_t *g = c->g;
    for (const char *p = name; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
            return FL_EINVAL;
    for (size_t i = 0; managed[i]; i++)
        if (strcmp(managed[i], name) == 0) {
            seterr(c->err, c->errlen, "set by the experiment itself (or an axis)");
            return FL_ECANCELED;
        }
    for (size_t i = 0; i < g->npass; i++)
        if (strcmp(g->pass_name[i], name) == 0)
            return FL_EEXIST;
    if (g->npass == FL_EXP_MAX_PASS || strlen(name) >= sizeof g->pass_name[0] ||
        strlen(value) >= sizeof g->pass_value[0])
        return FL_ERANGE;
    strcpy(g->pass_name[g->npass], name);
    strcpy(g->pass_value[g->npass], value);
    g->npass++;
    return 0;
}

/* inih: nonzero = keep going; a problem is kept in c->failed and err. */
static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
    ctx_t *c = user;
    if (c->failed)
        return 1;
    int rc;
    if (strcmp(section, "experiment") == 0)
        rc = on_experiment(c, name, value);
    else if (strcmp(section, "axes") == 0)
        rc = on_axes(c, name, value);
    else if (strcmp(section, "server") == 0)
        rc = on_server(c, name, value);
    else {
        seterr(c->err, c->errlen, "%s: unknown section [%s] (experiment, axes, server)", c->path, section);
        c->failed = 1;
        return 1;
    }
    if (rc == FL_ECANCELED) { /* the reason is in err: prefix where */
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%s", c->err);
        seterr(c->err, c->errlen, "%s: [%s] %s: %s", c->path, section, name, tmp);
    } else if (rc == FL_ENOTFOUND)
        seterr(c->err, c->errlen, "%s: [%s] unknown key '%s'", c->path, section, name);
    else if (rc == FL_EEXIST)
        seterr(c->err, c->errlen, "%s: [%s] %s is given twice", c->path, section, name);
    else if (rc)
        seterr(c->err, c->errlen, "%s: [%s] %s = %s: invalid value", c->path, section, name, value);
    if (rc)
        c->failed = 1;
    return 1;
}

/* Fills what the file left out from the preset and checks the whole. */
static int finish(ctx_t *c)
{
    fl_exp_grid_t *g = c->g;
    const fl_exp_preset_t *p = NULL;
    if (c->preset[0] && !(p = fl_exp_preset_find(c->preset))) {
        seterr(c->err, c->errlen, "%s: unknown preset '%s' (see fedopt-server experiment presets)", c->path,
               c->preset);
        return FL_ECONFIG;
    }
    g->preset = p;
    snprintf(g->task, sizeof g->task, "%s", p ? p->name : "custom");
    if (!c->have_model && p)
        strcpy(g->model, p->model);
    if (!c->have_data && p && p->data)
        strcpy(g->data, p->data);
    if (!c->have_eval && p && p->eval_data)
        strcpy(g->eval_data, p->eval_data);
    if (!c->have_part)
        strcpy(g->partition, p ? p->partition : "iid");
    if (!c->have_metric)
        strcpy(g->metric, p ? p->metric : "accuracy");
    if (g->clients < 0 && p && p->clients > 0)
        g->clients = p->clients;
    if (g->batch_size < 0)
        g->batch_size = p ? p->batch_size : 20;
    if (g->rounds < 0 && p)
        g->rounds = p->rounds;
    if (g->eval_every < 0)
        g->eval_every = 1;
    if (g->eval_max_examples < 0)
        g->eval_max_examples = 0;
    if (g->jobs < 0)
        g->jobs = 1;
    if (g->data_seed < 0)
        g->data_seed = 0;
    if (g->nseeds == 0)
        g->seeds[g->nseeds++] = 1;
    const char *missing = !g->model[0] ? "model" : !g->data[0] ? "data" : g->clients < 0 ? "clients"
                          : g->rounds < 0 ? "rounds" : g->nopts == 0 ? "server_opt (in [axes])" : NULL;
    if (missing) {
        seterr(c->err, c->errlen, "%s: %s is not set (and %s gives none)", c->path, missing,
               p ? "the preset" : "there is no preset");
        return FL_ECONFIG;
    }
    int dirichlet = strcmp(g->partition, "dirichlet") == 0;
    char e2[160];
    if (!c->have_axis[FL_EXP_SERVER_LR])
        fl_exp_axis_parse("paper", &g->axis[FL_EXP_SERVER_LR], e2, sizeof e2);
    if (!c->have_axis[FL_EXP_CLIENT_LR])
        fl_exp_axis_parse("paper", &g->axis[FL_EXP_CLIENT_LR], e2, sizeof e2);
    if (!c->have_axis[FL_EXP_TAU])
        fl_exp_axis_parse(p && p->has_rates ? "paper" : "10^-3", &g->axis[FL_EXP_TAU], e2, sizeof e2);
    if (!c->have_axis[FL_EXP_K]) {
        char k[32];
        snprintf(k, sizeof k, "%ld", p ? p->clients_per_round : 10);
        fl_exp_axis_parse(k, &g->axis[FL_EXP_K], e2, sizeof e2);
    }
    if (!c->have_axis[FL_EXP_E])
        fl_exp_axis_parse("1", &g->axis[FL_EXP_E], e2, sizeof e2);
    if (c->have_axis[FL_EXP_ALPHA] && !dirichlet) {
        seterr(c->err, c->errlen, "%s: an alpha axis needs partition = dirichlet (not %s)", c->path, g->partition);
        return FL_ECONFIG;
    }
    if (!c->have_axis[FL_EXP_ALPHA]) {
        fl_exp_axis_t *ax = &g->axis[FL_EXP_ALPHA];
        if (dirichlet) {
            char a[32];
            snprintf(a, sizeof a, "%.10g", p && !isnan(p->alpha) ? p->alpha : 0.1);
            fl_exp_axis_parse(a, ax, e2, sizeof e2);
        } else {
            ax->n = 1;
            ax->v[0].v = NAN;
            strcpy(ax->v[0].label, "-");
        }
    }
    for (size_t k = 0; k < g->axis[FL_EXP_K].n; k++)
        if (g->axis[FL_EXP_K].v[k].v > (double)g->clients) {
            seterr(c->err, c->errlen, "%s: clients_per_round %s is more than the %ld clients", c->path,
                   g->axis[FL_EXP_K].v[k].label, g->clients);
            return FL_ECONFIG;
        }
    /* `paper` must resolve for every optimizer that uses it. */
    fl_exp_cell_t *cells = NULL;
    size_t n = 0;
    int rc = fl_exp_grid_cells(g, &cells, &n, e2, sizeof e2);
    free(cells);
    if (rc) {
        seterr(c->err, c->errlen, "%s: %s", c->path, e2);
        return FL_ECONFIG;
    }
    return 0;
}

static void grid_init(fl_exp_grid_t *g)
{
    memset(g, 0, sizeof *g);
    g->clients = g->batch_size = g->rounds = g->eval_every = g->eval_max_examples = g->jobs = g->data_seed = -1;
}

int fl_exp_grid_parse(const char *text, const char *path, fl_exp_grid_t *g, char *err, size_t errlen)
{
    grid_init(g);
    seterr(err, errlen, "%s", "");
    ctx_t c = {.g = g, .path = path ? path : "grid", .err = err, .errlen = errlen};
    int line = ini_parse_string(text, ini_cb, &c);
    if (line > 0 && !c.failed) {
        seterr(err, errlen, "%s:%d: not an INI line", c.path, line);
        return FL_ECONFIG;
    }
    if (line < 0) {
        seterr(err, errlen, "%s: out of memory while parsing", c.path);
        return FL_ENOMEM;
    }
    if (c.failed)
        return FL_ECONFIG;
    return finish(&c);
}

int fl_exp_grid_load(const char *path, fl_exp_grid_t *g, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        return FL_EIO;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            if (cap > (1u << 20)) {
                seterr(err, errlen, "%s: larger than 1 MiB", path);
                rc = FL_ETOOBIG;
                break;
            }
            char *nb = realloc(buf, cap = cap ? 2 * cap : 8192);
            if (!nb) {
                rc = FL_ENOMEM;
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len - 1, f);
        len += r;
        if (r == 0)
            break;
    }
    fclose(f);
    if (!rc) {
        buf[len] = 0;
        if (strlen(buf) != len) {
            seterr(err, errlen, "%s: not a text file", path);
            rc = FL_ECONFIG;
        } else
            rc = fl_exp_grid_parse(buf, path, g, err, errlen);
    }
    free(buf);
    return rc;
}

/* --- cells ----------------------------------------------------------------- */

/* The values of numeric axis a for optimizer o: its own list when given,
 * `paper` resolved from the preset, duplicates (paper = a listed value)
 * dropped. */
static int resolve(const fl_exp_grid_t *g, int o, int a, fl_exp_axis_t *out, char *err, size_t errlen)
{
    const fl_exp_axis_t *src = a <= FL_EXP_TAU && g->has_opt_axis[o][a] ? &g->opt_axis[o][a] : &g->axis[a];
    memset(out, 0, sizeof *out);
    if (a == FL_EXP_TAU && o >= 3) { /* fedavgm, fedavg: no τ */
        out->n = 1;
        out->v[0].v = NAN;
        strcpy(out->v[0].label, "-");
        return 0;
    }
    for (size_t i = 0; i < src->n; i++) {
        if (strcmp(src->v[i].label, "paper") != 0) {
            int dup = 0;
            for (size_t j = 0; j < out->n; j++)
                dup |= strcmp(out->v[j].label, src->v[i].label) == 0;
            if (!dup)
                out->v[out->n++] = src->v[i];
            continue;
        }
        const fl_exp_preset_t *p = g->preset;
        if (!p || !p->has_rates) {
            seterr(err, errlen, "%s = paper: %s has no paper rates (give the values)", fl_exp_axis_names[a],
                   p ? p->name : "a grid without a preset");
            return FL_ECONFIG;
        }
        const fl_exp_rates_t *r = &p->best[o];
        double e = a == FL_EXP_SERVER_LR ? r->server_lr : a == FL_EXP_CLIENT_LR ? r->client_lr : r->tau;
        fl_exp_axis_t one = {0};
        char e2[64];
        if (add_power(&one, e, e2, sizeof e2))
            return FL_ECONFIG;
        int dup = 0;
        for (size_t j = 0; j < out->n; j++)
            dup |= strcmp(out->v[j].label, one.v[0].label) == 0;
        if (!dup)
            out->v[out->n++] = one.v[0];
    }
    return 0;
}

int fl_exp_grid_cells(const fl_exp_grid_t *g, fl_exp_cell_t **cells, size_t *n, char *err, size_t errlen)
{
    *cells = NULL;
    *n = 0;
    fl_exp_axis_t *ax = malloc(FL_EXP_NAXES * sizeof *ax);
    fl_exp_cell_t *out = NULL;
    size_t cnt = 0, cap = 0;
    int rc = ax ? 0 : FL_ENOMEM;
    for (size_t oi = 0; !rc && oi < g->nopts; oi++) {
        int o = fl_exp_opt_index(g->opts[oi]);
        for (int a = 0; !rc && a < FL_EXP_NAXES; a++)
            rc = resolve(g, o, a, &ax[a], err, errlen);
        if (rc)
            break;
        size_t idx[FL_EXP_NAXES] = {0};
        for (;;) {
            for (size_t s = 0; s < g->nseeds; s++) {
                if (cnt == cap) {
                    fl_exp_cell_t *nc = realloc(out, (cap = cap ? 2 * cap : 64) * sizeof *nc);
                    if (!nc) {
                        rc = FL_ENOMEM;
                        goto out;
                    }
                    out = nc;
                }
                fl_exp_cell_t *c = &out[cnt];
                memset(c, 0, sizeof *c);
                c->index = cnt;
                strcpy(c->server_opt, g->opts[oi]);
                for (int a = 0; a < FL_EXP_NAXES; a++)
                    c->val[a] = ax[a].v[idx[a]];
                c->seed = g->seeds[s];
                snprintf(c->setting, sizeof c->setting, "%s,slr=%s,clr=%s,tau=%s,K=%s,E=%s,alpha=%s", c->server_opt,
                         c->val[0].label, c->val[1].label, c->val[2].label, c->val[3].label, c->val[4].label,
                         c->val[5].label);
                snprintf(c->key, sizeof c->key, "%s,seed=%llu", c->setting, (unsigned long long)c->seed);
                cnt++;
            }
            /* Odometer over the axes, the last axis fastest. */
            int a = FL_EXP_NAXES - 1;
            while (a >= 0 && ++idx[a] == ax[a].n)
                idx[a--] = 0;
            if (a < 0)
                break;
        }
    }
out:
    free(ax);
    if (rc) {
        free(out);
        return rc;
    }
    *cells = out;
    *n = cnt;
    return 0;
}

char *fl_exp_grid_fixed_text(const fl_exp_grid_t *g)
{
    size_t cap = 4096 + g->npass * 400;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    int len = snprintf(s, cap,
                       "task=%s\nmodel=%s\ndata=%s\neval_data=%s\npartition=%s\nmetric=%s\nclients=%ld\n"
                       "batch_size=%ld\nrounds=%ld\neval_every=%ld\neval_max_examples=%ld\ndata_seed=%ld\n",
                       g->task, g->model, g->data, g->eval_data, g->partition, g->metric, g->clients, g->batch_size,
                       g->rounds, g->eval_every, g->eval_max_examples, g->data_seed);
    for (size_t i = 0; i < g->npass && len > 0 && (size_t)len < cap; i++)
        len += snprintf(s + len, cap - (size_t)len, "server.%s=%s\n", g->pass_name[i], g->pass_value[i]);
    return s;
}

int fl_exp_shard_parse(const char *s, size_t *i, size_t *n)
{
    char *e;
    errno = 0;
    unsigned long a = strtoul(s, &e, 10);
    if (e == s || *e != '/' || errno || s[0] == '-')
        return FL_EINVAL;
    const char *t = e + 1;
    unsigned long b = strtoul(t, &e, 10);
    if (e == t || *e || errno || t[0] == '-' || b == 0 || a >= b || b > 1000000)
        return FL_EINVAL;
    *i = a;
    *n = b;
    return 0;
}
