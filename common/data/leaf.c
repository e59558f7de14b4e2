#include "common/data/leaf.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/data/text.h"
#include "common/base/error.h"
#include "common/base/file.h"
#include "common/base/log.h"

/* A label above this is not a class index of any LEAF dataset. */
#define FL_LEAF_MAX_LABEL (1 << 20)

typedef enum { KIND_NONE, KIND_IMAGE, KIND_CHARS } kind_t;

typedef struct {
    const char *name;
    sqlite3 *db;
    sqlite3_stmt *x, *y, *row;
    float *buf;
    size_t bufcap;
} ctx_t;

static int prep(ctx_t *c, const char *sql, sqlite3_stmt **st)
{
    if (sqlite3_prepare_v2(c->db, sql, -1, st, NULL) != SQLITE_OK) {
        FL_LOG_E("leaf", "%s: sqlite: %s", c->name, sqlite3_errmsg(c->db));
        return FL_EDB;
    }
    return 0;
}

/* A step that failed on bad JSON (SQLITE_ERROR "malformed JSON") is a format
 * error of the file, anything else a database failure. */
static int step_error(ctx_t *c, int src, const char *user)
{
    FL_LOG_E("leaf", "%s%s%s: %s", c->name, user ? ": user " : "", user ? user : "",
             sqlite3_errmsg(c->db));
    return src == SQLITE_NOMEM ? FL_ENOMEM : FL_EFORMAT;
}

/* The kind of the dataset after it is set up, from its shape. */
static kind_t kind_of(const fl_dataset_t *d)
{
    if (!d->x)
        return KIND_NONE;
    return (d->label_dim == FL_CHAR_SEQ && d->num_classes == FL_CHAR_VOCAB) ? KIND_CHARS
                                                                            : KIND_IMAGE;
}

/* Reads one image row (a JSON array of numbers) into c->buf; sets *n. */
static int read_row(ctx_t *c, const char *row, int rowlen, const char *user, size_t *n)
{
    int rc = 0, s;
    *n = 0;
    sqlite3_reset(c->row);
    sqlite3_bind_text(c->row, 1, row, rowlen, SQLITE_STATIC);
    while ((s = sqlite3_step(c->row)) == SQLITE_ROW) {
        int t = sqlite3_column_type(c->row, 0);
        if (t != SQLITE_INTEGER && t != SQLITE_FLOAT) {
            FL_LOG_E("leaf", "%s: user %s: x holds a non-number", c->name, user);
            return FL_EFORMAT;
        }
        if (*n >= (1u << 24)) {
            FL_LOG_E("leaf", "%s: user %s: an x row is too long", c->name, user);
            return FL_ETOOBIG;
        }
        if (*n == c->bufcap) {
            size_t ncap = c->bufcap ? c->bufcap * 2 : 1024;
            float *nb = realloc(c->buf, ncap * sizeof(float));
            if (!nb)
                return FL_ENOMEM;
            c->buf = nb;
            c->bufcap = ncap;
        }
        c->buf[(*n)++] = (float)sqlite3_column_double(c->row, 0);
    }
    if (s != SQLITE_DONE)
        rc = step_error(c, s, user);
    return rc;
}

/* Sets up the empty *d for the kind of the first example (its x has JSON
 * type xt: "text" for a Shakespeare window, "array" for an image row, which
 * is read here to learn its length). */
static int setup_kind(ctx_t *c, fl_dataset_t *d, const char *xt, const char *user)
{
    int rc;
    if (strcmp(xt, "text") == 0)
        return fl_text_chars_init(d);
    size_t n;
    const char *row = (const char *)sqlite3_column_text(c->x, 0);
    if ((rc = read_row(c, row, sqlite3_column_bytes(c->x, 0), user, &n)))
        return rc;
    if (n == 0) {
        FL_LOG_E("leaf", "%s: user %s: empty x row", c->name, user);
        return FL_EFORMAT;
    }
    int64_t sq[3] = {1, 28, 28}, flat[1] = {(int64_t)n};
    rc = n == 784 ? fl_dataset_alloc(d, 0, 3, sq, 62) : fl_dataset_alloc(d, 0, 1, flat, 1);
    if (!rc && (rc = fl_dataset_enable_groups(d)))
        fl_dataset_free(d);
    return rc;
}

/* Appends one user's examples (value = the user's JSON object). */
static int add_user(ctx_t *c, fl_dataset_t *d, const char *user, const char *val, int vlen,
                    uint32_t group)
{
    int rc = 0, sx, sy;
    sqlite3_reset(c->x);
    sqlite3_reset(c->y);
    sqlite3_bind_text(c->x, 1, val, vlen, SQLITE_STATIC);
    sqlite3_bind_text(c->y, 1, val, vlen, SQLITE_STATIC);
    size_t count = 0;
    for (;;) {
        sx = sqlite3_step(c->x);
        sy = sqlite3_step(c->y);
        if (sx != SQLITE_ROW || sy != SQLITE_ROW)
            break;
        /* Columns: value, type (the JSON type name). */
        const char *xt = (const char *)sqlite3_column_text(c->x, 1);
        const char *yt = (const char *)sqlite3_column_text(c->y, 1);
        if (!xt || !yt)
            return FL_ENOMEM;
        if (kind_of(d) == KIND_NONE) {
            if (strcmp(xt, "array") != 0 && strcmp(xt, "text") != 0) {
                FL_LOG_E("leaf", "%s: user %s: x[0] is %s, expected an array or a string",
                         c->name, user, xt);
                return FL_EFORMAT;
            }
            if ((rc = setup_kind(c, d, xt, user)))
                return rc;
        }
        if (kind_of(d) == KIND_CHARS) {
            if (strcmp(xt, "text") != 0 || strcmp(yt, "text") != 0) {
                FL_LOG_E("leaf", "%s: user %s: example %zu: x and y must be strings", c->name,
                         user, count);
                return FL_EFORMAT;
            }
            rc = fl_text_leaf_window(d, (const char *)sqlite3_column_text(c->x, 0),
                                     (const char *)sqlite3_column_text(c->y, 0), group);
            if (rc == FL_EFORMAT)
                FL_LOG_E("leaf", "%s: user %s: example %zu: x is not 80 characters or y not one",
                         c->name, user, count);
            if (rc)
                return rc;
        } else {
            size_t n;
            if (strcmp(xt, "array") != 0 || strcmp(yt, "integer") != 0) {
                FL_LOG_E("leaf", "%s: user %s: example %zu: expected x an array and y an integer "
                                 "(got %s, %s)", c->name, user, count, xt, yt);
                return FL_EFORMAT;
            }
            if ((rc = read_row(c, (const char *)sqlite3_column_text(c->x, 0),
                               sqlite3_column_bytes(c->x, 0), user, &n)))
                return rc;
            if (n != d->dim) {
                FL_LOG_E("leaf", "%s: user %s: example %zu has %zu values, earlier ones %zu",
                         c->name, user, count, n, d->dim);
                return FL_EFORMAT;
            }
            sqlite3_int64 y = sqlite3_column_int64(c->y, 0);
            if (y < 0 || y >= FL_LEAF_MAX_LABEL) {
                FL_LOG_E("leaf", "%s: user %s: example %zu: label %lld out of range", c->name,
                         user, count, (long long)y);
                return FL_EFORMAT;
            }
            int32_t label = (int32_t)y;
            if ((rc = fl_dataset_append(d, c->buf, &label, group)))
                return rc;
            if (label >= d->num_classes)
                d->num_classes = label + 1;
        }
        count++;
    }
    if (sx == SQLITE_ROW || sy == SQLITE_ROW) {
        FL_LOG_E("leaf", "%s: user %s: x and y have different lengths", c->name, user);
        return FL_EFORMAT;
    }
    if (sx != SQLITE_DONE)
        return step_error(c, sx, user);
    if (sy != SQLITE_DONE)
        return step_error(c, sy, user);
    return 0;
}

int fl_leaf_parse(const char *name, const char *json, size_t len, fl_dataset_t *d)
{
    ctx_t c = {.name = name ? name : "(leaf)"};
    sqlite3_stmt *users = NULL, *data = NULL, *shape = NULL;
    char **names = NULL;
    uint8_t *seen = NULL;
    size_t nusers = 0;
    int rc = 0, s;
    if (!json || !d || len > FL_LEAF_MAX_FILE || len > INT32_MAX)
        return FL_EINVAL;
    /* A private connection: no other thread ever sees it, so SQLite's
     * per-call mutexes (about a tenth of the time here) are skipped. */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(":memory:", &c.db, flags, NULL) != SQLITE_OK) {
        rc = FL_EDB;
        goto done;
    }
    if ((rc = prep(&c, "SELECT json_type(?1, '$.users'), json_type(?1, '$.user_data')", &shape)) ||
        (rc = prep(&c, "SELECT value, type FROM json_each(?1, '$.users')", &users)) ||
        (rc = prep(&c, "SELECT key, value, type FROM json_each(?1, '$.user_data')", &data)) ||
        (rc = prep(&c, "SELECT value, type FROM json_each(?1, '$.x')", &c.x)) ||
        (rc = prep(&c, "SELECT value, type FROM json_each(?1, '$.y')", &c.y)) ||
        (rc = prep(&c, "SELECT value FROM json_each(?1)", &c.row)))
        goto done;
    sqlite3_bind_text(shape, 1, json, (int)len, SQLITE_STATIC);
    if ((s = sqlite3_step(shape)) != SQLITE_ROW) {
        rc = step_error(&c, s, NULL);
        goto done;
    }
    const char *tu = (const char *)sqlite3_column_text(shape, 0);
    const char *td = (const char *)sqlite3_column_text(shape, 1);
    if (!tu || strcmp(tu, "array") != 0 || !td || strcmp(td, "object") != 0) {
        FL_LOG_E("leaf", "%s: not a LEAF file: needs a \"users\" array and a \"user_data\" object",
                 c.name);
        rc = FL_EFORMAT;
        goto done;
    }
    /* The listed users, in order; they become groups first_group + i. */
    size_t first_group = d->num_groups;
    sqlite3_bind_text(users, 1, json, (int)len, SQLITE_STATIC);
    while ((s = sqlite3_step(users)) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(users, 1);
        if (!t || (strcmp(t, "text") != 0 && strcmp(t, "integer") != 0)) {
            FL_LOG_E("leaf", "%s: users[%zu] is not a string", c.name, nusers);
            rc = FL_EFORMAT;
            goto done;
        }
        const char *u = (const char *)sqlite3_column_text(users, 0);
        char **nn = realloc(names, (nusers + 1) * sizeof(char *));
        if (!nn || !u) {
            rc = FL_ENOMEM;
            goto done;
        }
        names = nn;
        if (!(names[nusers] = strdup(u))) {
            rc = FL_ENOMEM;
            goto done;
        }
        nusers++;
    }
    if (s != SQLITE_DONE) {
        rc = step_error(&c, s, NULL);
        goto done;
    }
    if (nusers == 0) {
        FL_LOG_E("leaf", "%s: no users", c.name);
        rc = FL_EEMPTY;
        goto done;
    }
    /* Find each user_data key among the users with a name-sorted index, so
     * a file with thousands of users costs n log n, not n^2. */
    fl_vocab_t *index = fl_vocab_new();
    seen = calloc(nusers, 1);
    size_t *pos = malloc(nusers * sizeof(size_t));
    if (!index || !seen || !pos) {
        fl_vocab_free(index);
        free(pos);
        rc = FL_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < nusers && !rc; i++)
        rc = fl_vocab_count(index, names[i], strlen(names[i]), "");
    if (!rc)
        rc = fl_vocab_finish(index, nusers);
    if (!rc && fl_vocab_size(index) != nusers) {
        FL_LOG_E("leaf", "%s: a user is listed twice", c.name);
        rc = FL_EFORMAT;
    }
    for (size_t i = 0; i < nusers && !rc; i++) {
        pos[fl_vocab_id(index, names[i], strlen(names[i]))] = i;
        rc = fl_dataset_add_group(d, names[i], NULL);
    }
    /* When d is not set up yet (first file), the names sit in the bare
     * struct and fl_dataset_alloc* keeps them. */
    sqlite3_bind_text(data, 1, json, (int)len, SQLITE_STATIC);
    while (!rc && (s = sqlite3_step(data)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(data, 0);
        long id = key ? fl_vocab_id(index, key, strlen(key)) : -1;
        if (id < 0)
            continue; /* a stub for an unlisted user */
        const char *t = (const char *)sqlite3_column_text(data, 2);
        if (!t || strcmp(t, "object") != 0) {
            FL_LOG_E("leaf", "%s: user_data of user %s is not an object", c.name, key);
            rc = FL_EFORMAT;
            break;
        }
        size_t u = pos[id];
        seen[u] = 1;
        rc = add_user(&c, d, key, (const char *)sqlite3_column_text(data, 1),
                      sqlite3_column_bytes(data, 1), (uint32_t)(first_group + u));
    }
    if (!rc && s != SQLITE_DONE)
        rc = step_error(&c, s, NULL);
    for (size_t i = 0; i < nusers && !rc; i++)
        if (!seen[i]) {
            FL_LOG_E("leaf", "%s: user %s is listed but has no user_data", c.name, names[i]);
            rc = FL_EFORMAT;
        }
    fl_vocab_free(index);
    free(pos);
done:
    sqlite3_finalize(shape);
    sqlite3_finalize(users);
    sqlite3_finalize(data);
    sqlite3_finalize(c.x);
    sqlite3_finalize(c.y);
    sqlite3_finalize(c.row);
    sqlite3_close(c.db);
    for (size_t i = 0; i < nusers; i++)
        free(names[i]);
    free(names);
    free(seen);
    free(c.buf);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}


int fl_leaf_load(const char *dir, const char *split, fl_dataset_t *d)
{
    if (!dir || !split || !d || (strcmp(split, "train") != 0 && strcmp(split, "test") != 0))
        return FL_EINVAL;
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", dir, split);
    DIR *dp = opendir(sub);
    if (!dp) {
        FL_LOG_E("leaf", "%s: no such directory (a LEAF dataset has train/ and test/)", sub);
        return FL_ENOTFOUND;
    }
    char **files = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t l = strlen(e->d_name);
        if (l < 6 || strcmp(e->d_name + l - 5, ".json") != 0)
            continue;
        char **nf = realloc(files, (n + 1) * sizeof(char *));
        if (!nf) {
            rc = FL_ENOMEM;
            break;
        }
        files = nf;
        if (!(files[n] = strdup(e->d_name))) {
            rc = FL_ENOMEM;
            break;
        }
        n++;
    }
    closedir(dp);
    if (!rc && n == 0) {
        FL_LOG_E("leaf", "%s: no *.json files", sub);
        rc = FL_ENOTFOUND;
    }
    if (!rc)
        qsort(files, n, sizeof(char *), cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char path[8192], *json;
        size_t len;
        snprintf(path, sizeof path, "%s/%s", sub, files[i]);
        if (!(rc = fl_file_read_all(path, FL_LEAF_MAX_FILE, &json, &len))) {
            rc = fl_leaf_parse(path, json, len, d);
            free(json);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
    if (!rc && d->n == 0) {
        FL_LOG_E("leaf", "%s: no examples", sub);
        rc = FL_EEMPTY;
    }
    if (rc)
        fl_dataset_free(d);
    else
        fl_dataset_trim(d);
    return rc;
}
