#include "common/data/tff.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "proto/tf_example.pb-c.h"

static const Tfex__Feature *feature(const Tfex__Example *ex, const char *name)
{
    if (!ex || !ex->features)
        return NULL;
    for (size_t i = 0; i < ex->features->n_feature; i++) {
        const Tfex__Features__FeatureEntry *e = ex->features->feature[i];
        if (e && e->key && strcmp(e->key, name) == 0)
            return e->value;
    }
    return NULL;
}

static Tfex__Example *unpack(const uint8_t *blob, size_t len)
{
    if (!blob || len > FL_TFF_MAX_BLOB)
        return NULL;
    return tfex__example__unpack(NULL, len, blob);
}

int fl_tff_detect(const uint8_t *blob, size_t len, fl_tff_kind_t *kind)
{
    Tfex__Example *ex = unpack(blob, len);
    *kind = FL_TFF_UNKNOWN;
    if (!ex)
        return FL_EFORMAT;
    if (feature(ex, "pixels"))
        *kind = FL_TFF_EMNIST;
    else if (feature(ex, "snippets"))
        *kind = FL_TFF_SHAKESPEARE;
    else if (feature(ex, "tokens"))
        *kind = FL_TFF_STACKOVERFLOW;
    else if (feature(ex, "image"))
        *kind = FL_TFF_CIFAR100;
    tfex__example__free_unpacked(ex, NULL);
    return *kind == FL_TFF_UNKNOWN ? FL_EFORMAT : 0;
}

int fl_tff_setup(const fl_tff_ctx_t *ctx, int digits, fl_dataset_t *d)
{
    int rc;
    if (!ctx || !d)
        return FL_EINVAL;
    switch (ctx->kind) {
    case FL_TFF_EMNIST: {
        int64_t shape[3] = {1, 28, 28};
        rc = fl_dataset_alloc(d, 0, 3, shape, digits ? 10 : 62);
        break;
    }
    case FL_TFF_CIFAR100: {
        int64_t shape[3] = {3, 32, 32};
        if ((rc = fl_dataset_alloc(d, 0, 3, shape, 100)))
            return rc;
        d->coarse = malloc(sizeof(int32_t));
        d->num_coarse = 20;
        rc = d->coarse ? 0 : FL_ENOMEM;
        break;
    }
    case FL_TFF_SHAKESPEARE:
        return fl_text_chars_init(d);
    case FL_TFF_STACKOVERFLOW:
        return ctx->view == FL_DATA_VIEW_BOW ? fl_text_bow_init(d) : fl_text_words_init(d);
    default:
        return FL_EINVAL;
    }
    if (!rc)
        rc = fl_dataset_enable_groups(d);
    if (rc)
        fl_dataset_free(d);
    return rc;
}

/* The one bytes value of feature `name`, or NULL (with a log line). */
static const ProtobufCBinaryData *bytes1(const fl_tff_ctx_t *ctx, const Tfex__Example *ex,
                                         const char *name)
{
    const Tfex__Feature *f = feature(ex, name);
    if (!f || f->kind_case != TFEX__FEATURE__KIND_BYTES_LIST || !f->bytes_list ||
        f->bytes_list->n_value < 1) {
        FL_LOG_E("tff", "%s: example lacks bytes feature '%s'", ctx->where, name);
        return NULL;
    }
    return &f->bytes_list->value[0];
}

/* The int64 list of feature `name` with exactly n values, or NULL. */
static const int64_t *ints(const fl_tff_ctx_t *ctx, const Tfex__Example *ex, const char *name,
                           size_t n)
{
    const Tfex__Feature *f = feature(ex, name);
    if (!f || f->kind_case != TFEX__FEATURE__KIND_INT64_LIST || !f->int64_list ||
        f->int64_list->n_value != n) {
        FL_LOG_E("tff", "%s: example lacks int64 feature '%s' of %zu values", ctx->where, name, n);
        return NULL;
    }
    return f->int64_list->value;
}

static int append_emnist(const fl_tff_ctx_t *ctx, const Tfex__Example *ex, uint32_t group,
                         fl_dataset_t *d)
{
    const Tfex__Feature *f = feature(ex, "pixels");
    if (!f || f->kind_case != TFEX__FEATURE__KIND_FLOAT_LIST || !f->float_list ||
        f->float_list->n_value != 784) {
        FL_LOG_E("tff", "%s: example lacks float feature 'pixels' of 784 values", ctx->where);
        return FL_EFORMAT;
    }
    const int64_t *label = ints(ctx, ex, "label", 1);
    if (!label)
        return FL_EFORMAT;
    if (*label < 0 || *label >= d->num_classes) {
        FL_LOG_E("tff", "%s: label %lld out of range [0, %d)", ctx->where, (long long)*label,
                 d->num_classes);
        return FL_EFORMAT;
    }
    int32_t y = (int32_t)*label;
    return fl_dataset_append(d, f->float_list->value, &y, group);
}

static int append_cifar(const fl_tff_ctx_t *ctx, const Tfex__Example *ex, uint32_t group,
                        fl_dataset_t *d)
{
    const int64_t *img = ints(ctx, ex, "image", 3072), *label = ints(ctx, ex, "label", 1),
                  *coarse = ints(ctx, ex, "coarse_label", 1);
    if (!img || !label || !coarse)
        return FL_EFORMAT;
    if (*label < 0 || *label >= 100 || *coarse < 0 || *coarse >= 20) {
        FL_LOG_E("tff", "%s: labels %lld / %lld out of range", ctx->where, (long long)*label,
                 (long long)*coarse);
        return FL_EFORMAT;
    }
    float x[3072];
    for (size_t p = 0; p < 1024; p++)
        for (size_t c = 0; c < 3; c++) {
            int64_t v = img[p * 3 + c];
            if (v < 0 || v > 255) {
                FL_LOG_E("tff", "%s: pixel value %lld out of range", ctx->where, (long long)v);
                return FL_EFORMAT;
            }
            x[c * 1024 + p] = (float)v / 255.0f; /* HWC in the file, CHW here */
        }
    int32_t y = (int32_t)*label;
    int rc = fl_dataset_append(d, x, &y, group);
    if (!rc)
        d->coarse[d->n - 1] = (int32_t)*coarse;
    return rc;
}

static int append_so(const fl_tff_ctx_t *ctx, const Tfex__Example *ex, uint32_t group,
                     fl_dataset_t *d)
{
    const ProtobufCBinaryData *tok = bytes1(ctx, ex, "tokens");
    if (!tok)
        return FL_EFORMAT;
    if (ctx->view != FL_DATA_VIEW_BOW)
        return fl_text_words_append(d, ctx->words, (const char *)tok->data, tok->len, group);
    const ProtobufCBinaryData *title = bytes1(ctx, ex, "title"), *tags = bytes1(ctx, ex, "tags");
    if (!title || !tags)
        return FL_EFORMAT;
    char *text = malloc(tok->len + title->len + 2);
    if (!text)
        return FL_ENOMEM;
    memcpy(text, tok->data, tok->len);
    text[tok->len] = ' ';
    memcpy(text + tok->len + 1, title->data, title->len);
    int rc = fl_text_bow_append(d, ctx->words, ctx->tags, text, tok->len + 1 + title->len,
                                (const char *)tags->data, tags->len, group);
    free(text);
    return rc;
}

int fl_tff_append(const fl_tff_ctx_t *ctx, const uint8_t *blob, size_t len, uint32_t group,
                  fl_dataset_t *d)
{
    if (!ctx || !d || !d->x)
        return FL_EINVAL;
    if (len > FL_TFF_MAX_BLOB) {
        FL_LOG_E("tff", "%s: a %zu-byte example is over the %zu-byte limit", ctx->where, len,
                 FL_TFF_MAX_BLOB);
        return FL_ETOOBIG;
    }
    Tfex__Example *ex = unpack(blob, len);
    if (!ex) {
        FL_LOG_E("tff", "%s: a blob is not a tf.train.Example", ctx->where);
        return FL_EFORMAT;
    }
    int rc = 0;
    switch (ctx->kind) {
    case FL_TFF_EMNIST:
        rc = append_emnist(ctx, ex, group, d);
        break;
    case FL_TFF_CIFAR100:
        rc = append_cifar(ctx, ex, group, d);
        break;
    case FL_TFF_STACKOVERFLOW:
        if (!ctx->words || (ctx->view == FL_DATA_VIEW_BOW && !ctx->tags))
            rc = FL_EINVAL;
        else
            rc = append_so(ctx, ex, group, d);
        break;
    case FL_TFF_SHAKESPEARE: {
        const Tfex__Feature *f = feature(ex, "snippets");
        if (!f || f->kind_case != TFEX__FEATURE__KIND_BYTES_LIST || !f->bytes_list) {
            FL_LOG_E("tff", "%s: example lacks bytes feature 'snippets'", ctx->where);
            rc = FL_EFORMAT;
            break;
        }
        for (size_t i = 0; i < f->bytes_list->n_value && !rc; i++)
            rc = fl_text_chars_append(d, (const char *)f->bytes_list->value[i].data,
                                      f->bytes_list->value[i].len, group);
        break;
    }
    default:
        rc = FL_EINVAL;
    }
    tfex__example__free_unpacked(ex, NULL);
    return rc;
}

/* ---- the SQLite file ---- */

typedef struct {
    char file[4096];
    char train[256], test[256];
    sqlite3 *db;
    char **ids; /* the split's client ids, sorted */
    size_t nids;
} tff_t;

static void tff_close(tff_t *t)
{
    for (size_t i = 0; i < t->nids; i++)
        free(t->ids[i]);
    free(t->ids);
    t->ids = NULL;
    t->nids = 0;
    sqlite3_close(t->db);
    t->db = NULL;
}

static int db_error(tff_t *t, const char *what)
{
    FL_LOG_E("tff", "%s: %s: %s (not a TFF SQLite dataset?)", t->file, what,
             t->db ? sqlite3_errmsg(t->db) : "cannot open");
    return FL_EFORMAT;
}

static int has_split(tff_t *t, const char *split, int *yes)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->db, "SELECT 1 FROM client_metadata WHERE split_name = ?1 LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return db_error(t, "reading client_metadata");
    sqlite3_bind_text(st, 1, split, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    *yes = s == SQLITE_ROW;
    sqlite3_finalize(st);
    return (s == SQLITE_ROW || s == SQLITE_DONE) ? 0 : db_error(t, "reading client_metadata");
}

/* Opens "FILE[:SPLIT]" and works out the train and test split names. */
static int tff_open(tff_t *t, const char *source)
{
    memset(t, 0, sizeof *t);
    snprintf(t->file, sizeof t->file, "%s", source);
    const char *colon = strrchr(source, ':');
    int given = colon && colon[1] && !strchr(colon, '/');
    if (given) {
        t->file[colon - source] = 0;
        snprintf(t->train, sizeof t->train, "%s", colon + 1);
    }
    /* The connection is private to this load: no SQLite mutexes needed. */
    if (sqlite3_open_v2(t->file, &t->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        FL_LOG_E("tff", "%s: cannot open: %s", t->file, t->db ? sqlite3_errmsg(t->db) : "");
        sqlite3_close(t->db);
        t->db = NULL;
        return FL_EIO;
    }
    int yes, rc;
    if (!given) {
        if ((rc = has_split(t, "train", &yes)))
            return rc;
        snprintf(t->train, sizeof t->train, "%s", yes ? "train" : "all_train");
    }
    if ((rc = has_split(t, t->train, &yes)))
        return rc;
    if (!yes) {
        FL_LOG_E("tff", "%s: no split '%s' in client_metadata", t->file, t->train);
        return FL_ENOTFOUND;
    }
    /* The test split: "train" in the name becomes "test". */
    const char *tr = strstr(t->train, "train");
    if (tr)
        snprintf(t->test, sizeof t->test, "%.*stest%s", (int)(tr - t->train), t->train, tr + 5);
    else
        snprintf(t->test, sizeof t->test, "test");
    return 0;
}

static int list_clients(tff_t *t, const char *split)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(t->db,
                           "SELECT DISTINCT client_id FROM client_metadata WHERE split_name = ?1 "
                           "ORDER BY client_id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_error(t, "listing clients");
    sqlite3_bind_text(st, 1, split, -1, SQLITE_STATIC);
    int s, rc = 0;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        char **ni = realloc(t->ids, (t->nids + 1) * sizeof(char *));
        if (!ni) {
            rc = FL_ENOMEM;
            break;
        }
        t->ids = ni;
        if (!(t->ids[t->nids] = strdup(id ? id : ""))) {
            rc = FL_ENOMEM;
            break;
        }
        t->nids++;
    }
    if (!rc && s != SQLITE_DONE)
        rc = db_error(t, "listing clients");
    sqlite3_finalize(st);
    if (!rc && t->nids == 0) {
        FL_LOG_E("tff", "%s: split '%s' has no clients", t->file, split);
        rc = FL_EEMPTY;
    }
    return rc;
}

/* Runs `sql` (binding ?1 = split, ?2 = client when given) and calls fn for
 * every (client_id, blob) row. */
typedef int (*row_cb)(void *arg, const char *client, const uint8_t *blob, size_t len);

static int scan(tff_t *t, const char *split, const char *client, row_cb fn, void *arg)
{
    sqlite3_stmt *st;
    const char *sql = client ? "SELECT client_id, serialized_example_proto FROM examples "
                               "WHERE split_name = ?1 AND client_id = ?2"
                             : "SELECT client_id, serialized_example_proto FROM examples "
                               "WHERE split_name = ?1";
    if (sqlite3_prepare_v2(t->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(t, "reading examples");
    sqlite3_bind_text(st, 1, split, -1, SQLITE_STATIC);
    if (client)
        sqlite3_bind_text(st, 2, client, -1, SQLITE_STATIC);
    int s, rc = 0;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const uint8_t *blob = sqlite3_column_blob(st, 1);
        size_t len = (size_t)sqlite3_column_bytes(st, 1);
        rc = fn(arg, id ? id : "", blob ? blob : (const uint8_t *)"", len);
    }
    if (!rc && s != SQLITE_DONE)
        rc = db_error(t, "reading examples");
    sqlite3_finalize(st);
    return rc;
}

typedef struct {
    tff_t *t;
    fl_tff_ctx_t ctx;
    fl_vocab_t *words, *tags, *clients;
    fl_dataset_t *d;
    char where[512];
    size_t fixed_group; /* load_client: every row is group 0 */
    int one_client;
} load_t;

static int detect_cb(void *arg, const char *client, const uint8_t *blob, size_t len)
{
    load_t *l = arg;
    if (fl_tff_detect(blob, len, &l->ctx.kind)) {
        FL_LOG_E("tff", "%s: client %s: the first example is not a tf.train.Example of a known "
                        "dataset (pixels, snippets, tokens or image)", l->t->file, client);
        return FL_EFORMAT;
    }
    return 1; /* stop after one row */
}

static int count_cb(void *arg, const char *client, const uint8_t *blob, size_t len)
{
    load_t *l = arg;
    Tfex__Example *ex = unpack(blob, len);
    if (!ex) {
        FL_LOG_E("tff", "%s: client %s: a blob is not a tf.train.Example", l->t->file, client);
        return FL_EFORMAT;
    }
    snprintf(l->where, sizeof l->where, "%.300s: client %.150s", l->t->file, client);
    l->ctx.where = l->where;
    int rc = 0;
    const ProtobufCBinaryData *tok = bytes1(&l->ctx, ex, "tokens");
    if (!tok)
        rc = FL_EFORMAT;
    else
        rc = fl_vocab_count(l->words, (const char *)tok->data, tok->len, " ");
    if (!rc && l->ctx.view == FL_DATA_VIEW_BOW) {
        const ProtobufCBinaryData *title = bytes1(&l->ctx, ex, "title"),
                                  *tags = bytes1(&l->ctx, ex, "tags");
        if (!title || !tags)
            rc = FL_EFORMAT;
        else if (!(rc = fl_vocab_count(l->words, (const char *)title->data, title->len, " ")))
            rc = fl_vocab_count(l->tags, (const char *)tags->data, tags->len, "|");
    }
    tfex__example__free_unpacked(ex, NULL);
    return rc;
}

static int load_cb(void *arg, const char *client, const uint8_t *blob, size_t len)
{
    load_t *l = arg;
    size_t group = l->fixed_group;
    if (!l->one_client) {
        long id = fl_vocab_id(l->clients, client, strlen(client));
        if (id < 0 || strcmp(l->t->ids[id], client) != 0) {
            FL_LOG_E("tff", "%s: examples of client %s, who is not in client_metadata",
                     l->t->file, client);
            return FL_EFORMAT;
        }
        group = (size_t)id;
    }
    snprintf(l->where, sizeof l->where, "%.300s: client %.150s", l->t->file, client);
    l->ctx.where = l->where;
    return fl_tff_append(&l->ctx, blob, len, (uint32_t)group, l->d);
}

/* Shared by both loads: opens, detects, builds vocabularies, sets up *d. */
static int prepare(load_t *l, tff_t *t, const char *source, const char *split,
                   fl_data_view_t view, fl_dataset_t *d, const char **which)
{
    int rc;
    memset(l, 0, sizeof *l);
    l->t = t;
    l->d = d;
    if (strcmp(split, "train") != 0 && strcmp(split, "test") != 0)
        return FL_EINVAL;
    if ((rc = tff_open(t, source)))
        return rc;
    *which = strcmp(split, "train") == 0 ? t->train : t->test;
    rc = scan(t, t->train, NULL, detect_cb, l);
    if (rc == 0) {
        FL_LOG_E("tff", "%s: split '%s' has no examples", t->file, t->train);
        return FL_EEMPTY;
    }
    if (rc != 1)
        return rc;
    l->ctx.view = view == FL_DATA_VIEW_AUTO ? FL_DATA_VIEW_WORDS : view;
    if (l->ctx.kind == FL_TFF_STACKOVERFLOW) {
        if (l->ctx.view == FL_DATA_VIEW_CHARS) {
            FL_LOG_E("tff", "%s: Stack Overflow data has views words and bow, not chars", t->file);
            return FL_EINVAL;
        }
        l->words = fl_vocab_new();
        l->tags = fl_vocab_new();
        if (!l->words || !l->tags)
            return FL_ENOMEM;
        if ((rc = scan(t, t->train, NULL, count_cb, l)) ||
            (rc = fl_vocab_finish(l->words, FL_WORD_VOCAB)) ||
            (rc = fl_vocab_finish(l->tags, FL_TAG_VOCAB)))
            return rc;
        l->ctx.words = l->words;
        l->ctx.tags = l->tags;
    } else if (view != FL_DATA_VIEW_AUTO &&
               !(view == FL_DATA_VIEW_CHARS && l->ctx.kind == FL_TFF_SHAKESPEARE)) {
        FL_LOG_E("tff", "%s: --data-view applies to text datasets only", t->file);
        return FL_EINVAL;
    }
    return fl_tff_setup(&l->ctx, strncmp(t->train, "digits_only", 11) == 0, d);
}

static void finish(load_t *l, tff_t *t, fl_dataset_t *d, int rc)
{
    fl_vocab_free(l->words);
    fl_vocab_free(l->tags);
    fl_vocab_free(l->clients);
    tff_close(t);
    if (rc)
        fl_dataset_free(d);
    else
        fl_dataset_trim(d);
}

int fl_tff_load(const char *source, const char *split, fl_data_view_t view, fl_dataset_t *d)
{
    load_t l;
    tff_t t;
    const char *which;
    if (!source || !split || !d)
        return FL_EINVAL;
    int rc = prepare(&l, &t, source, split, view, d, &which);
    if (rc)
        goto done;
    if ((rc = list_clients(&t, which)))
        goto done;
    /* Client id -> group: a name index whose ids are the sorted ranks (all
     * counts are 1, so fl_vocab_finish orders by bytes, as ORDER BY did). */
    if (!(l.clients = fl_vocab_new())) {
        rc = FL_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < t.nids && !rc; i++)
        rc = fl_vocab_count(l.clients, t.ids[i], strlen(t.ids[i]), "");
    if (!rc)
        rc = fl_vocab_finish(l.clients, t.nids);
    for (size_t i = 0; i < t.nids && !rc; i++) {
        if (fl_vocab_id(l.clients, t.ids[i], strlen(t.ids[i])) != (long)i) {
            FL_LOG_E("tff", "%s: client ids that cannot be told apart (empty or over %d bytes)",
                     t.file, FL_TEXT_MAX_WORD);
            rc = FL_EFORMAT;
            break;
        }
        rc = fl_dataset_add_group(d, t.ids[i], NULL);
    }
    if (!rc)
        rc = scan(&t, which, NULL, load_cb, &l);
    if (!rc && d->n == 0) {
        FL_LOG_E("tff", "%s: split '%s' has no examples", t.file, which);
        rc = FL_EEMPTY;
    }
done:
    finish(&l, &t, d, rc);
    return rc;
}

int fl_tff_load_client(const char *source, const char *split, fl_data_view_t view, size_t index,
                       fl_dataset_t *d)
{
    load_t l;
    tff_t t;
    const char *which;
    if (!source || !split || !d)
        return FL_EINVAL;
    int rc = prepare(&l, &t, source, split, view, d, &which);
    if (rc)
        goto done;
    if ((rc = list_clients(&t, which)))
        goto done;
    if (index >= t.nids) {
        FL_LOG_E("tff", "%s: client index %zu, but split '%s' has %zu clients", t.file, index,
                 which, t.nids);
        rc = FL_ERANGE;
        goto done;
    }
    l.one_client = 1;
    if (!(rc = fl_dataset_add_group(d, t.ids[index], NULL)))
        rc = scan(&t, which, t.ids[index], load_cb, &l);
done:
    finish(&l, &t, d, rc);
    return rc;
}
