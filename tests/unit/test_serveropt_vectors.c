/* Replays every ServerOpt test vector through fl_serveropt and fails on any
 * element of x, m or v outside the vector's tolerance: the repository's own
 * vectors (tests/vectors/serveropt, relative to the source root where
 * `make test` runs) and, when $FEDOPT_VECTORS names a directory, every
 * *.json in it as well. JSON is read with SQLite's JSON1 functions. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "common/base/error.h"
#include "common/base/file.h"
#include "server/serveropt.h"

static sqlite3 *db;
static unsigned total_vectors, total_rounds;

typedef struct {
    double *v;
    size_t n;
} vec_t;

/* Reads the JSON array at `path` of `doc` into a vector of doubles; the
 * strings "NaN", "Infinity" and "-Infinity" become those values. Returns 0
 * when the path holds no array. */
static int read_array(const char *doc, const char *path, vec_t *out)
{
    sqlite3_stmt *st;
    out->v = NULL;
    out->n = 0;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT value, type FROM json_each(?1, ?2) ORDER BY key",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, doc, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_TRANSIENT);
    size_t cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 256;
            out->v = realloc(out->v, cap * sizeof(double));
            assert_non_null(out->v);
        }
        const char *type = (const char *)sqlite3_column_text(st, 1);
        double val = 0.0;
        if (strcmp(type, "text") == 0) {
            const char *s = (const char *)sqlite3_column_text(st, 0);
            if (strcmp(s, "NaN") == 0)
                val = NAN;
            else if (strcmp(s, "Infinity") == 0)
                val = INFINITY;
            else if (strcmp(s, "-Infinity") == 0)
                val = -INFINITY;
            else
                fail_msg("%s: unexpected string element '%s'", path, s);
        } else {
            val = sqlite3_column_double(st, 0);
        }
        out->v[out->n++] = val;
    }
    sqlite3_finalize(st);
    return out->n > 0;
}

/* Evaluates a scalar JSON1 expression over doc; returns `dflt` when NULL. */
static double num_at(const char *doc, const char *path, double dflt)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT json_extract(?1, ?2)", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, doc, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_TRANSIENT);
    double r = dflt;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        r = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return r;
}

static char *text_at(const char *doc, const char *path)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT json_extract(?1, ?2)", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, doc, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, path, -1, SQLITE_TRANSIENT);
    char *r = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_TEXT)
        r = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return r;
}

static void compare(const char *file, int round, const char *what, const float *got,
                    const vec_t *exp, double atol, double rtol)
{
    assert_non_null(got);
    for (size_t i = 0; i < exp->n; i++) {
        double e = exp->v[i], g = got[i];
        if (!(fabs(g - e) <= atol + rtol * fabs(e)))
            fail_msg("%s round %d: %s[%zu] = %.9g, expected %.9g", file, round, what, i, g, e);
    }
}

static void replay_vector(void **state)
{
    const char *path = *state;
    size_t len;
    char *doc = NULL;
    assert_int_equal(fl_file_read_all(path, (size_t)64 << 20, &doc, &len), 0);

    char *opt_name = text_at(doc, "$.optimizer");
    assert_non_null(opt_name);
    fl_serveropt_config_t cfg;
    fl_serveropt_kind_t kind;
    assert_int_equal(fl_serveropt_parse_kind(opt_name, &kind), 0);
    fl_serveropt_config_defaults(&cfg, kind);
    cfg.server_lr = num_at(doc, "$.hparams.server_lr", cfg.server_lr);
    cfg.momentum = num_at(doc, "$.hparams.momentum", cfg.momentum);
    cfg.beta1 = num_at(doc, "$.hparams.beta1", cfg.beta1);
    cfg.beta2 = num_at(doc, "$.hparams.beta2", cfg.beta2);
    cfg.tau = num_at(doc, "$.hparams.tau", cfg.tau);
    cfg.initial_accumulator = num_at(doc, "$.hparams.initial_accumulator", 0.0);
    cfg.bias_correction = num_at(doc, "$.hparams.bias_correction", 0.0) != 0.0;
    char *weighting = text_at(doc, "$.hparams.weighting");
    if (weighting)
        assert_int_equal(fl_serveropt_parse_weighting(weighting, &cfg.weighting), 0);
    double atol = num_at(doc, "$.tolerance.atol", 1e-6);
    double rtol = num_at(doc, "$.tolerance.rtol", 1e-4);

    vec_t x0;
    assert_true(read_array(doc, "$.x0", &x0));
    float *x = malloc(x0.n * sizeof(float));
    float *delta = malloc(x0.n * sizeof(float));
    assert_non_null(x);
    assert_non_null(delta);
    for (size_t i = 0; i < x0.n; i++)
        x[i] = (float)x0.v[i];

    fl_serveropt_t *opt = NULL;
    assert_int_equal(fl_serveropt_create(&cfg, x0.n, &opt), 0);
    int nrounds = (int)num_at(doc, "$.rounds.length", -1);
    if (nrounds < 0) {
        sqlite3_stmt *st;
        sqlite3_prepare_v2(db, "SELECT json_array_length(?1, '$.rounds')", -1, &st, NULL);
        sqlite3_bind_text(st, 1, doc, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        nrounds = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    assert_true(nrounds > 0);

    char p[256];
    for (int r = 0; r < nrounds; r++) {
        fl_serveropt_begin(opt);
        unsigned nonfinite = 0, accepted = 0;
        for (int u = 0;; u++) {
            vec_t d;
            snprintf(p, sizeof p, "$.rounds[%d].updates[%d].delta", r, u);
            if (!read_array(doc, p, &d))
                break;
            assert_int_equal(d.n, x0.n);
            int finite = 1;
            for (size_t i = 0; i < d.n; i++) {
                delta[i] = (float)d.v[i];
                finite &= isfinite(d.v[i]) != 0;
            }
            snprintf(p, sizeof p, "$.rounds[%d].updates[%d].num_examples", r, u);
            double w = num_at(doc, p, 1.0);
            int rc = fl_serveropt_add(opt, delta, d.n, w);
            if (finite) {
                assert_int_equal(rc, 0);
                accepted++;
            } else {
                assert_int_equal(rc, FL_ENONFINITE);
                nonfinite++;
            }
            free(d.v);
        }
        fl_serveropt_round_t res;
        assert_int_equal(fl_serveropt_finish(opt, x, x0.n, &res), 0);
        assert_int_equal(res.accepted, accepted);
        assert_int_equal(res.rejected, nonfinite);
        assert_int_equal(res.applied, accepted > 0);

        static const char *const names[] = {"x", "m", "v"};
        for (int k = 0; k < 3; k++) {
            vec_t e;
            snprintf(p, sizeof p, "$.rounds[%d].expected.%s", r, names[k]);
            if (!read_array(doc, p, &e))
                continue;
            assert_int_equal(e.n, x0.n);
            const float *got = k == 0 ? x : k == 1 ? fl_serveropt_m(opt) : fl_serveropt_v(opt);
            compare(path, r, names[k], got, &e, atol, rtol);
            free(e.v);
        }
        total_rounds++;
    }
    total_vectors++;
    fl_serveropt_free(opt);
    free(x);
    free(delta);
    free(x0.v);
    free(weighting);
    free(opt_name);
    free(doc);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int is_json(const struct dirent *e)
{
    size_t n = strlen(e->d_name);
    return n > 5 && strcmp(e->d_name + n - 5, ".json") == 0;
}

/* Appends every *.json in dir to the test table; returns the number added or
 * -1 when the directory cannot be read. */
static int add_dir(const char *dir, struct CMUnitTest **tests, char ***paths, int *n)
{
    struct dirent **ents;
    int k = scandir(dir, &ents, is_json, by_name);
    if (k < 0)
        return -1;
    struct CMUnitTest *t = realloc(*tests, (size_t)(*n + k + 1) * sizeof *t);
    char **p = t ? realloc(*paths, (size_t)(*n + k + 1) * sizeof *p) : NULL;
    if (t)
        *tests = t;
    if (p)
        *paths = p;
    for (int i = 0; i < k; i++) {
        if (t && p) {
            size_t len = strlen(dir) + strlen(ents[i]->d_name) + 2;
            p[*n] = malloc(len);
            if (p[*n]) {
                snprintf(p[*n], len, "%s/%s", dir, ents[i]->d_name);
                t[*n] = (struct CMUnitTest){.name = p[*n], .test_func = replay_vector,
                                            .initial_state = p[*n]};
                (*n)++;
            }
        }
        free(ents[i]);
    }
    free(ents);
    return (t && p) ? k : -1;
}

int main(void)
{
    static const char own[] = "tests/vectors/serveropt";
    const char *extra = getenv("FEDOPT_VECTORS");
    struct CMUnitTest *tests = NULL;
    char **paths = NULL;
    int n = 0, rc = 1;
    int k_own = add_dir(own, &tests, &paths, &n);
    if (k_own <= 0) {
        fprintf(stderr, "no *.json test vectors in %s (run from the source root)\n", own);
        goto done;
    }
    int k_extra = 0;
    if (extra && *extra) {
        k_extra = add_dir(extra, &tests, &paths, &n);
        if (k_extra <= 0) {
            fprintf(stderr, "FEDOPT_VECTORS=%s: no *.json test vectors there\n", extra);
            goto done;
        }
    }
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        goto done;
    int failed = _cmocka_run_group_tests("serveropt_vectors", tests, (size_t)n, NULL, NULL);
    printf("serveropt vectors: checked %u vectors, %u rounds (%d from %s", total_vectors,
           total_rounds, k_own, own);
    if (k_extra)
        printf(", %d from %s", k_extra, extra);
    printf(")\n");
    rc = failed ? 1 : 0;
done:
    for (int i = 0; i < n; i++)
        free(paths[i]);
    free(paths);
    free(tests);
    sqlite3_close(db);
    return rc;
}
