#include "common/base/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

void fl_json_init_buf(fl_json_t *j)
{
    memset(j, 0, sizeof *j);
}

void fl_json_init_file(fl_json_t *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
    if (!f)
        j->err = FL_EINVAL;
}

static void put(fl_json_t *j, const char *t, size_t n)
{
    if (j->err || !n)
        return;
    if (j->f) {
        if (fwrite(t, 1, n, j->f) != n)
            j->err = FL_EIO;
        return;
    }
    if (j->len + n + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 256;
        while (cap < j->len + n + 1) {
            if (cap > SIZE_MAX / 2) {
                j->err = FL_ENOMEM;
                return;
            }
            cap *= 2;
        }
        char *b = realloc(j->buf, cap);
        if (!b) {
            j->err = FL_ENOMEM;
            return;
        }
        j->buf = b;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, t, n);
    j->len += n;
    j->buf[j->len] = 0;
}

static void put_text(fl_json_t *j, const char *t) { put(j, t, strlen(t)); }

/* Before a value or a key: the comma that separates it from the previous one. */
static void sep(fl_json_t *j)
{
    if (j->after_key) {
        j->after_key = 0;
        return;
    }
    if (j->has_item[j->depth])
        put(j, ",", 1);
    j->has_item[j->depth] = 1;
}

static void open_level(fl_json_t *j, char c)
{
    sep(j);
    if (j->depth >= FL_JSON_MAX_DEPTH) {
        if (!j->err)
            j->err = FL_ERANGE;
        return;
    }
    put(j, &c, 1);
    j->has_item[++j->depth] = 0;
}

static void close_level(fl_json_t *j, char c)
{
    if (j->depth > 0)
        j->depth--;
    j->after_key = 0;
    put(j, &c, 1);
}

void fl_json_obj_begin(fl_json_t *j) { open_level(j, '{'); }
void fl_json_obj_end(fl_json_t *j) { close_level(j, '}'); }
void fl_json_arr_begin(fl_json_t *j) { open_level(j, '['); }
void fl_json_arr_end(fl_json_t *j) { close_level(j, ']'); }

static void escaped(fl_json_t *j, const char *s, size_t n)
{
    put(j, "\"", 1);
    size_t run = 0; /* bytes that pass as they are, written in one go */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c != '"' && c != '\\' && c >= 0x20) {
            run++;
            continue;
        }
        put(j, s + i - run, run);
        run = 0;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            put(j, esc, 2);
        } else {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            put(j, esc, 6);
        }
    }
    put(j, s + n - run, run);
    put(j, "\"", 1);
}

void fl_json_key(fl_json_t *j, const char *key)
{
    sep(j);
    escaped(j, key ? key : "", key ? strlen(key) : 0);
    put(j, ":", 1);
    j->after_key = 1;
}

void fl_json_strn(fl_json_t *j, const char *s, size_t n)
{
    sep(j);
    escaped(j, s ? s : "", s ? n : 0);
}

void fl_json_str(fl_json_t *j, const char *s)
{
    if (!s) {
        fl_json_null(j);
        return;
    }
    fl_json_strn(j, s, strlen(s));
}

void fl_json_i64(fl_json_t *j, int64_t v)
{
    char t[32];
    snprintf(t, sizeof t, "%" PRId64, v);
    fl_json_raw(j, t);
}

void fl_json_u64(fl_json_t *j, uint64_t v)
{
    char t[32];
    snprintf(t, sizeof t, "%" PRIu64, v);
    fl_json_raw(j, t);
}

void fl_json_bool(fl_json_t *j, int v) { fl_json_raw(j, v ? "true" : "false"); }
void fl_json_null(fl_json_t *j) { fl_json_raw(j, "null"); }

void fl_json_double(fl_json_t *j, double v, int digits)
{
    if (!isfinite(v)) {
        fl_json_null(j);
        return;
    }
    char t[64];
    snprintf(t, sizeof t, "%.*g", digits > 0 ? digits : 17, v);
    fl_json_raw(j, t);
}

void fl_json_fixed(fl_json_t *j, double v, int decimals)
{
    if (!isfinite(v)) {
        fl_json_null(j);
        return;
    }
    /* %f of a huge double is long: size the text first. */
    int n = snprintf(NULL, 0, "%.*f", decimals, v);
    char small[64], *t = small;
    if (n < 0) {
        if (!j->err)
            j->err = FL_EINVAL;
        return;
    }
    if ((size_t)n >= sizeof small && !(t = malloc((size_t)n + 1))) {
        if (!j->err)
            j->err = FL_ENOMEM;
        return;
    }
    snprintf(t, (size_t)n + 1, "%.*f", decimals, v);
    fl_json_raw(j, t);
    if (t != small)
        free(t);
}

void fl_json_raw(fl_json_t *j, const char *text)
{
    sep(j);
    put_text(j, text ? text : "null");
}

int fl_json_error(const fl_json_t *j) { return j->err; }

int fl_json_finish(fl_json_t *j, char **out, size_t *len)
{
    int rc = j->err;
    if (out)
        *out = NULL;
    if (len)
        *len = 0;
    if (!rc && !j->f && out) {
        if (!j->buf && !(j->buf = calloc(1, 1)))
            rc = FL_ENOMEM;
        else {
            *out = j->buf;
            if (len)
                *len = j->len;
            j->buf = NULL;
        }
    }
    free(j->buf);
    j->buf = NULL;
    j->len = j->cap = 0;
    return rc;
}
