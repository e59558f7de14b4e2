#include "common/nn/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/base/error.h"
#include "common/base/file.h"
#include "common/base/json.h"
#include "common/base/log.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this file assumes a little-endian host"
#endif

/* ---- PyTorch's second LSTM bias ----
 *
 * fedopt's LSTM keeps one bias per gate ("<m>.bias_ih_l<k>"); PyTorch's
 * nn.LSTM has two whose sum is what acts. A file therefore carries
 * "<m>.bias_hh_l<k>" as zeros next to it, and on load a bias_hh tensor is
 * added into its bias_ih view, so a PyTorch checkpoint loads exactly. */

/* If name is "<m>.bias_ih_l<k>" (or bias_hh when hh), writes the partner's
 * name into out and returns 1; otherwise returns 0. */
static int lstm_bias_partner(const char *name, int hh, char *out, size_t size)
{
    const char *from = hh ? ".bias_hh_l" : ".bias_ih_l", *to = hh ? ".bias_ih_l" : ".bias_hh_l";
    const char *at = strstr(name, from);
    if (!at || at == name)
        return 0;
    const char *k = at + strlen(from);
    if (!*k)
        return 0;
    for (const char *c = k; *c; c++)
        if (*c < '0' || *c > '9')
            return 0;
    int n = snprintf(out, size, "%.*s%s%s", (int)(at - name), name, to, k);
    return n > 0 && (size_t)n < size;
}

/* ---- encoding ---- */

/* One tensor's header entry: "name":{"dtype":"F32","shape":[...],"data_offsets":[begin,end]}. */
static void header_entry(fl_json_t *j, const char *name, int ndim, const int64_t *shape, size_t begin, size_t end)
{
    fl_json_key(j, name);
    fl_json_obj_begin(j);
    fl_json_key(j, "dtype");
    fl_json_str(j, "F32");
    fl_json_key(j, "shape");
    fl_json_arr_begin(j);
    for (int d = 0; d < ndim; d++)
        fl_json_i64(j, shape[d]);
    fl_json_arr_end(j);
    fl_json_key(j, "data_offsets");
    fl_json_arr_begin(j);
    fl_json_u64(j, begin);
    fl_json_u64(j, end);
    fl_json_arr_end(j);
    fl_json_obj_end(j);
}

int fl_safetensors_encode(const fl_params_t *p, uint8_t **out, size_t *len)
{
    if (!p || !p->data || !out || !len)
        return FL_EINVAL;
    *out = NULL;
    *len = 0;
    fl_json_t j;
    fl_json_init_buf(&j);
    fl_json_obj_begin(&j);
    for (size_t i = 0; i < p->nviews; i++) {
        const fl_param_view_t *v = &p->views[i];
        /* View names are [A-Za-z0-9_.] by convention; the writer escapes the JSON specials anyway. */
        header_entry(&j, v->name, v->ndim, v->shape, v->offset * sizeof(float), (v->offset + v->numel) * sizeof(float));
    }
    /* The zero bias_hh partners of LSTM biases, stored after the model's data. */
    size_t extra = 0;
    for (size_t i = 0; i < p->nviews; i++) {
        const fl_param_view_t *v = &p->views[i];
        char partner[FL_PARAM_NAME_MAX];
        if (!lstm_bias_partner(v->name, 0, partner, sizeof partner) || fl_params_find(p, partner))
            continue;
        size_t begin = (p->numel + extra) * sizeof(float);
        int64_t shape = (int64_t)v->numel;
        header_entry(&j, partner, 1, &shape, begin, begin + v->numel * sizeof(float));
        extra += v->numel;
    }
    fl_json_key(&j, "__metadata__");
    fl_json_obj_begin(&j);
    fl_json_key(&j, "format");
    fl_json_str(&j, "pt");
    fl_json_obj_end(&j);
    fl_json_obj_end(&j);
    char *h = NULL;
    size_t hlen = 0;
    int rc = fl_json_finish(&j, &h, &hlen);
    if (rc)
        return rc;
    /* Pad with spaces so the data starts 8-byte aligned, as the format recommends. */
    size_t pad = (8 - (8 + hlen) % 8) % 8;
    size_t data = p->numel * sizeof(float);
    size_t total = 8 + hlen + pad + data + extra * sizeof(float);
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(h);
        return FL_ENOMEM;
    }
    uint64_t n = hlen + pad;
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(n >> (8 * i));
    memcpy(buf + 8, h, hlen);
    memset(buf + 8 + hlen, ' ', pad);
    memcpy(buf + 8 + hlen + pad, p->data, data);
    memset(buf + 8 + hlen + pad + data, 0, extra * sizeof(float));
    free(h);
    *out = buf;
    *len = total;
    return 0;
}

int fl_safetensors_save(const char *path, const fl_params_t *p)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = fl_safetensors_encode(p, &buf, &len);
    if (rc)
        return rc;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(buf);
        return FL_EINVAL;
    }
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        FL_LOG_E("safetensors", "%s: cannot create: %s", tmp, strerror(errno));
        free(buf);
        return FL_EIO;
    }
    int ok = fwrite(buf, 1, len, f) == len;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    free(buf);
    if (!ok || rename(tmp, path) != 0) {
        FL_LOG_E("safetensors", "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return FL_EIO;
    }
    return 0;
}

/* ---- decoding ---- */

typedef struct {
    char name[FL_PARAM_NAME_MAX];
    int ndim;
    int64_t shape[FL_PARAM_MAX_DIMS];
    uint64_t begin, end;
} entry_t;

/* Parses the JSON header into entries (metadata skipped). Returns 0 or an
 * FL_E* code after logging. */
static int parse_header(const char *json, size_t jlen, const char *what, entry_t **out,
                        size_t *count)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL, *sh = NULL;
    entry_t *e = NULL;
    size_t n = 0, cap = 0;
    int rc = FL_EFORMAT;
    *out = NULL;
    *count = 0;
    if (sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_MEMORY, NULL) !=
        SQLITE_OK) {
        rc = FL_ENOMEM;
        goto out;
    }
    if (sqlite3_prepare_v2(db, "SELECT json_valid(?1) AND json_type(?1) = 'object'", -1, &st,
                           NULL) != SQLITE_OK) {
        rc = FL_ENOMEM;
        goto out;
    }
    sqlite3_bind_text(st, 1, json, (int)jlen, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_int(st, 0) != 1) {
        FL_LOG_E("safetensors", "%s: the header is not a JSON object", what);
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_prepare_v2(
            db,
            "SELECT j.key, j.type,"
            " CASE WHEN j.type = 'object' THEN json_type(j.value, '$.dtype') END,"
            " CASE WHEN j.type = 'object' THEN json_extract(j.value, '$.dtype') END,"
            " CASE WHEN j.type = 'object' THEN json_type(j.value, '$.shape') END,"
            " CASE WHEN j.type = 'object' THEN json_array_length(j.value, '$.data_offsets') END,"
            " CASE WHEN j.type = 'object' THEN json_type(j.value, '$.data_offsets[0]') END,"
            " CASE WHEN j.type = 'object' THEN json_type(j.value, '$.data_offsets[1]') END,"
            " CASE WHEN j.type = 'object' THEN json_extract(j.value, '$.data_offsets[0]') END,"
            " CASE WHEN j.type = 'object' THEN json_extract(j.value, '$.data_offsets[1]') END,"
            " j.value"
            " FROM json_each(?1) AS j",
            -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT type, value FROM json_each(?1, '$.shape')", -1, &sh,
                           NULL) != SQLITE_OK) {
        FL_LOG_E("safetensors", "%s: SQLite cannot parse JSON: %s", what, sqlite3_errmsg(db));
        rc = FL_EUNSUPPORTED;
        goto out;
    }
    sqlite3_bind_text(st, 1, json, (int)jlen, SQLITE_STATIC);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        const char *type = (const char *)sqlite3_column_text(st, 1);
        if (!key || !type) {
            FL_LOG_E("safetensors", "%s: a header entry has no name", what);
            goto out;
        }
        if (strcmp(key, "__metadata__") == 0)
            continue;
        if (strcmp(type, "object") != 0) {
            FL_LOG_E("safetensors", "%s: tensor '%s' is not a JSON object", what, key);
            goto out;
        }
        if (strlen(key) >= FL_PARAM_NAME_MAX) {
            FL_LOG_E("safetensors", "%s: tensor name '%.40s...' is too long", what, key);
            goto out;
        }
        const char *dt_type = (const char *)sqlite3_column_text(st, 2);
        const char *dtype = (const char *)sqlite3_column_text(st, 3);
        const char *shape_type = (const char *)sqlite3_column_text(st, 4);
        const char *o0t = (const char *)sqlite3_column_text(st, 6);
        const char *o1t = (const char *)sqlite3_column_text(st, 7);
        if (!dt_type || strcmp(dt_type, "text") != 0 || !dtype) {
            FL_LOG_E("safetensors", "%s: tensor '%s' has no dtype", what, key);
            goto out;
        }
        if (strcmp(dtype, "F32") != 0) {
            FL_LOG_E("safetensors", "%s: tensor '%s' has dtype %s; only F32 is supported", what,
                     key, dtype);
            rc = FL_EUNSUPPORTED;
            goto out;
        }
        if (!shape_type || strcmp(shape_type, "array") != 0) {
            FL_LOG_E("safetensors", "%s: tensor '%s' has no shape array", what, key);
            goto out;
        }
        if (sqlite3_column_type(st, 5) != SQLITE_INTEGER || sqlite3_column_int64(st, 5) != 2 ||
            !o0t || !o1t || strcmp(o0t, "integer") || strcmp(o1t, "integer") ||
            sqlite3_column_int64(st, 8) < 0 || sqlite3_column_int64(st, 9) < 0) {
            FL_LOG_E("safetensors", "%s: tensor '%s' has bad data_offsets (need [begin, end])",
                     what, key);
            goto out;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            entry_t *ne = realloc(e, nc * sizeof *ne);
            if (!ne) {
                rc = FL_ENOMEM;
                goto out;
            }
            e = ne;
            cap = nc;
        }
        entry_t *t = &e[n];
        memset(t, 0, sizeof *t);
        strcpy(t->name, key);
        t->begin = (uint64_t)sqlite3_column_int64(st, 8);
        t->end = (uint64_t)sqlite3_column_int64(st, 9);
        sqlite3_reset(sh);
        sqlite3_bind_text(sh, 1, (const char *)sqlite3_column_text(st, 10), -1, SQLITE_TRANSIENT);
        int s2;
        while ((s2 = sqlite3_step(sh)) == SQLITE_ROW) {
            const char *et = (const char *)sqlite3_column_text(sh, 0);
            int64_t v = sqlite3_column_int64(sh, 1);
            if (!et || strcmp(et, "integer") != 0 || v < 0) {
                FL_LOG_E("safetensors", "%s: tensor '%s' has a shape entry that is not a "
                                        "non-negative integer", what, key);
                goto out;
            }
            if (t->ndim == FL_PARAM_MAX_DIMS) {
                FL_LOG_E("safetensors", "%s: tensor '%s' has more than %d dimensions", what, key,
                         FL_PARAM_MAX_DIMS);
                rc = FL_EUNSUPPORTED;
                goto out;
            }
            t->shape[t->ndim++] = v;
        }
        if (s2 != SQLITE_DONE) {
            FL_LOG_E("safetensors", "%s: tensor '%s': bad shape", what, key);
            goto out;
        }
        n++;
    }
    if (s != SQLITE_DONE) {
        FL_LOG_E("safetensors", "%s: bad header: %s", what, sqlite3_errmsg(db));
        goto out;
    }
    *out = e;
    *count = n;
    e = NULL;
    rc = 0;
out:
    free(e);
    sqlite3_finalize(st);
    sqlite3_finalize(sh);
    sqlite3_close(db);
    return rc;
}

/* Splits buf into header and data after checking the length prefix. */
static int split(const uint8_t *buf, size_t len, const char *what, const char **json,
                 size_t *jlen, const uint8_t **data, size_t *dlen)
{
    if (len < 8) {
        FL_LOG_E("safetensors", "%s: truncated: %zu bytes, not even the header length", what, len);
        return FL_ETRUNCATED;
    }
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)buf[i] << (8 * i);
    if (n > FL_SAFETENSORS_MAX_HEADER) {
        FL_LOG_E("safetensors", "%s: header length %" PRIu64 " exceeds the %u-byte limit", what, n,
                 FL_SAFETENSORS_MAX_HEADER);
        return FL_ETOOBIG;
    }
    if (n > len - 8) {
        FL_LOG_E("safetensors", "%s: truncated: header of %" PRIu64 " bytes, file has %zu", what,
                 n, len - 8);
        return FL_ETRUNCATED;
    }
    if (n < 2 || buf[8] != '{') {
        FL_LOG_E("safetensors", "%s: not a safetensors file (header does not start with '{')",
                 what);
        return FL_EFORMAT;
    }
    *json = (const char *)buf + 8;
    *jlen = (size_t)n;
    *data = buf + 8 + n;
    *dlen = len - 8 - (size_t)n;
    return 0;
}

static int check_extent(const entry_t *t, size_t numel, size_t dlen, const char *what)
{
    if (t->begin > t->end || t->end > dlen) {
        FL_LOG_E("safetensors", "%s: tensor '%s' data [%" PRIu64 ", %" PRIu64
                                ") lies outside the %zu data bytes (truncated file?)",
                 what, t->name, t->begin, t->end, dlen);
        return t->end > dlen ? FL_ETRUNCATED : FL_EFORMAT;
    }
    if (t->end - t->begin != (uint64_t)numel * sizeof(float)) {
        FL_LOG_E("safetensors", "%s: tensor '%s' has %" PRIu64 " data bytes, its shape needs %zu",
                 what, t->name, t->end - t->begin, numel * sizeof(float));
        return FL_EFORMAT;
    }
    return 0;
}

static int shape_numel(const entry_t *t, size_t *numel)
{
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] && (uint64_t)t->shape[i] > (SIZE_MAX / sizeof(float)) / n)
            return FL_ETOOBIG;
        n *= (size_t)t->shape[i];
    }
    *numel = n;
    return 0;
}

static void shape_str(const int64_t *s, int nd, char *buf, size_t len)
{
    size_t u = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < nd && u < len; i++)
        u += (size_t)snprintf(buf + u, len - u, "%s%" PRId64, i ? ", " : "", s[i]);
    if (u < len)
        snprintf(buf + u, len - u, "]");
}

/* Writes the checked entries e[0..n) of the data section into p, whose
 * layout holds every one of them or (PyTorch's LSTM bias_hh) its bias_ih
 * partner: tensors are copied first, then each bias_hh is added into its
 * partner, since fedopt keeps one bias per gate. */
static void copy_tensors(const entry_t *e, size_t n, const uint8_t *data, fl_params_t *p)
{
    for (size_t i = 0; i < n; i++) {
        const fl_param_view_t *v = fl_params_find(p, e[i].name);
        if (v)
            memcpy(p->data + v->offset, data + e[i].begin, v->numel * sizeof(float));
    }
    for (size_t i = 0; i < n; i++) {
        char partner[FL_PARAM_NAME_MAX];
        if (fl_params_find(p, e[i].name) ||
            !lstm_bias_partner(e[i].name, 1, partner, sizeof partner))
            continue;
        const fl_param_view_t *v = fl_params_find(p, partner);
        float *dst = p->data + v->offset;
        for (size_t j = 0; j < v->numel; j++) {
            float add;
            memcpy(&add, data + e[i].begin + j * sizeof(float), sizeof add);
            dst[j] += add;
        }
    }
}

int fl_safetensors_decode(const uint8_t *buf, size_t len, const char *what, fl_params_t *p)
{
    if (!buf || !p || !p->data)
        return FL_EINVAL;
    if (!what)
        what = "safetensors";
    const char *json;
    size_t jlen, dlen;
    const uint8_t *data;
    int rc = split(buf, len, what, &json, &jlen, &data, &dlen);
    if (rc)
        return rc;
    entry_t *e = NULL;
    size_t n = 0;
    unsigned char *seen = NULL;
    if ((rc = parse_header(json, jlen, what, &e, &n)))
        return rc;
    rc = FL_ENOMEM;
    seen = calloc(p->nviews ? p->nviews : 1, 1);
    if (!seen)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const fl_param_view_t *v = fl_params_find(p, e[i].name);
        char partner[FL_PARAM_NAME_MAX];
        if (!v && lstm_bias_partner(e[i].name, 1, partner, sizeof partner) &&
            (v = fl_params_find(p, partner)) != NULL) {
            /* A PyTorch bias_hh: same checks, added into bias_ih below. */
            for (size_t j = 0; j < i; j++)
                if (strcmp(e[j].name, e[i].name) == 0) {
                    FL_LOG_E("safetensors", "%s: tensor '%s' appears twice", what, e[i].name);
                    rc = FL_EFORMAT;
                    goto out;
                }
            if (e[i].ndim != v->ndim || e[i].shape[0] != v->shape[0]) {
                FL_LOG_E("safetensors", "%s: tensor '%s' does not match '%s'", what, e[i].name,
                         v->name);
                rc = FL_ESHAPE;
                goto out;
            }
            if ((rc = check_extent(&e[i], v->numel, dlen, what)))
                goto out;
            continue;
        }
        if (!v) {
            FL_LOG_E("safetensors", "%s: unexpected tensor '%s' (not part of this model)", what,
                     e[i].name);
            rc = FL_ESHAPE;
            goto out;
        }
        size_t k = (size_t)(v - p->views);
        if (seen[k]++) {
            FL_LOG_E("safetensors", "%s: tensor '%s' appears twice", what, e[i].name);
            rc = FL_EFORMAT;
            goto out;
        }
        if (e[i].ndim != v->ndim ||
            memcmp(e[i].shape, v->shape, sizeof(int64_t) * (size_t)v->ndim) != 0) {
            char a[96], b[96];
            shape_str(e[i].shape, e[i].ndim, a, sizeof a);
            shape_str(v->shape, v->ndim, b, sizeof b);
            FL_LOG_E("safetensors", "%s: tensor '%s' has shape %s, the model needs %s", what,
                     e[i].name, a, b);
            rc = FL_ESHAPE;
            goto out;
        }
        if ((rc = check_extent(&e[i], v->numel, dlen, what)))
            goto out;
    }
    for (size_t k = 0; k < p->nviews; k++)
        if (!seen[k]) {
            FL_LOG_E("safetensors", "%s: missing tensor '%s'", what, p->views[k].name);
            rc = FL_ESHAPE;
            goto out;
        }
    /* Everything checked: only now touch the caller's parameters. */
    copy_tensors(e, n, data, p);
    rc = 0;
out:
    free(seen);
    free(e);
    return rc;
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    char *b = NULL;
    int rc = fl_file_read_all(path, (size_t)FL_SAFETENSORS_MAX_FILE, &b, len);
    *buf = (uint8_t *)b;
    return rc;
}

int fl_safetensors_load(const char *path, fl_params_t *p)
{
    uint8_t *buf;
    size_t len;
    if (!path || !p)
        return FL_EINVAL;
    int rc = read_file(path, &buf, &len);
    if (rc)
        return rc;
    rc = fl_safetensors_decode(buf, len, path, p);
    free(buf);
    return rc;
}

static int cmp_begin(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int fl_safetensors_load_any(const char *path, fl_params_t *p)
{
    uint8_t *buf = NULL;
    size_t len;
    entry_t *e = NULL;
    size_t n = 0;
    if (!path || !p || p->data || p->nviews)
        return FL_EINVAL;
    int rc = read_file(path, &buf, &len);
    if (rc)
        return rc;
    const char *json;
    size_t jlen, dlen;
    const uint8_t *data;
    if ((rc = split(buf, len, path, &json, &jlen, &data, &dlen)) ||
        (rc = parse_header(json, jlen, path, &e, &n)))
        goto out;
    qsort(e, n, sizeof *e, cmp_begin);
    for (size_t i = 0; i < n; i++) {
        size_t numel;
        if ((rc = shape_numel(&e[i], &numel)) || (rc = check_extent(&e[i], numel, dlen, path)))
            goto out;
        if (e[i].ndim == 0 || numel == 0) {
            FL_LOG_E("safetensors", "%s: tensor '%s' is empty or a scalar (unsupported)", path,
                     e[i].name);
            rc = FL_EUNSUPPORTED;
            goto out;
        }
        if ((rc = fl_params_add(p, e[i].name, e[i].ndim, e[i].shape, 0))) {
            FL_LOG_E("safetensors", "%s: tensor '%s': %s", path, e[i].name, fl_strerror(rc));
            if (rc == FL_EEXIST)
                rc = FL_EFORMAT;
            goto out;
        }
    }
    if ((rc = fl_params_alloc(p)))
        goto out;
    copy_tensors(e, n, data, p);
out:
    if (rc)
        fl_params_free(p);
    free(e);
    free(buf);
    return rc;
}
