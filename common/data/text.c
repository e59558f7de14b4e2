#include "common/data/text.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/error.h"
#include "common/base/file.h"
#include "common/base/log.h"

/* The largest text file read whole. */
#define FL_TEXT_MAX_FILE ((size_t)1 << 30)

/* ---- characters ---- */

static signed char char_ids[256];
static pthread_once_t char_ids_once = PTHREAD_ONCE_INIT;

/* Builds the byte -> id table once; trainer threads may encode text at the
 * same time. */
static void char_ids_init(void)
{
    const char *set = FL_CHAR_SET;
    for (int i = 0; i < 256; i++)
        char_ids[i] = FL_CHAR_OOV;
    for (int i = 0; set[i]; i++)
        char_ids[(unsigned char)set[i]] = (signed char)(i + 1);
}

int fl_text_char_id(unsigned char c)
{
    pthread_once(&char_ids_once, char_ids_init);
    return char_ids[c];
}

char fl_text_char_of(int id)
{
    return (id >= 1 && id <= 86) ? FL_CHAR_SET[id - 1] : 0;
}

/* Decodes text into char ids: one id per ASCII byte, one OOV per multi-byte
 * UTF-8 code point (continuation bytes are skipped). Returns the count. */
static size_t char_encode(const char *text, size_t len, int32_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x80 && c < 0xC0)
            continue;
        out[n++] = c < 0x80 ? fl_text_char_id(c) : FL_CHAR_OOV;
    }
    return n;
}

int fl_text_chars_init(fl_dataset_t *d)
{
    int64_t shape[1] = {FL_CHAR_SEQ};
    int rc = fl_dataset_alloc_labels(d, 0, 1, shape, FL_CHAR_SEQ, FL_CHAR_VOCAB);
    if (!rc && (rc = fl_dataset_enable_groups(d)))
        fl_dataset_free(d);
    return rc;
}

int fl_text_chars_append(fl_dataset_t *d, const char *text, size_t len, uint32_t group)
{
    if (!d || (!text && len))
        return FL_EINVAL;
    if (len > FL_TEXT_MAX_FILE)
        return FL_ETOOBIG;
    int32_t *ids = malloc((len + 2) * sizeof(int32_t));
    if (!ids)
        return FL_ENOMEM;
    ids[0] = FL_CHAR_BOS;
    size_t n = 1 + char_encode(text, len, ids + 1);
    ids[n++] = FL_CHAR_EOS;
    int rc = 0;
    float x[FL_CHAR_SEQ];
    int32_t y[FL_CHAR_SEQ], chunk[FL_CHAR_SEQ + 1];
    for (size_t at = 0; at < n && !rc; at += FL_CHAR_SEQ + 1) {
        for (size_t j = 0; j < FL_CHAR_SEQ + 1; j++)
            chunk[j] = at + j < n ? ids[at + j] : FL_CHAR_PAD;
        for (size_t j = 0; j < FL_CHAR_SEQ; j++) {
            x[j] = (float)chunk[j];
            y[j] = chunk[j + 1];
        }
        rc = fl_dataset_append(d, x, y, group);
    }
    free(ids);
    return rc;
}

int fl_text_leaf_window(fl_dataset_t *d, const char *xs, const char *next, uint32_t group)
{
    if (!d || !xs || !next)
        return FL_EINVAL;
    size_t xl = strlen(xs), nl = strlen(next);
    if (xl > 8 * FL_CHAR_SEQ || nl > 8)
        return FL_EFORMAT;
    int32_t ids[8 * FL_CHAR_SEQ + 8], nid[8];
    size_t n = char_encode(xs, xl, ids), m = char_encode(next, nl, nid);
    if (n != FL_CHAR_SEQ || m != 1)
        return FL_EFORMAT;
    float x[FL_CHAR_SEQ];
    int32_t y[FL_CHAR_SEQ];
    for (size_t j = 0; j < FL_CHAR_SEQ; j++) {
        x[j] = (float)ids[j];
        y[j] = j + 1 < FL_CHAR_SEQ ? ids[j + 1] : nid[0];
    }
    return fl_dataset_append(d, x, y, group);
}

/* ---- vocabularies: an open-addressing hash of tokens with counts ---- */

typedef struct {
    char *tok;
    uint32_t len;
    long id;        /* after finish: the kept id, or -1 */
    uint64_t count;
} vslot_t;

struct fl_vocab {
    vslot_t *slots;
    size_t cap, used;
    char **kept;
    size_t nkept;
};

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

fl_vocab_t *fl_vocab_new(void)
{
    fl_vocab_t *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->cap = 1024;
    v->slots = calloc(v->cap, sizeof(vslot_t));
    if (!v->slots) {
        free(v);
        return NULL;
    }
    return v;
}

void fl_vocab_free(fl_vocab_t *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->cap; i++)
        free(v->slots[i].tok);
    free(v->slots);
    free(v->kept);
    free(v);
}

static vslot_t *find(const fl_vocab_t *v, const char *tok, size_t len)
{
    size_t i = (size_t)hash(tok, len) & (v->cap - 1);
    for (;;) {
        vslot_t *s = &v->slots[i];
        if (!s->tok || (s->len == len && memcmp(s->tok, tok, len) == 0))
            return s;
        i = (i + 1) & (v->cap - 1);
    }
}

static int grow_table(fl_vocab_t *v)
{
    size_t ocap = v->cap;
    vslot_t *old = v->slots;
    v->cap *= 2;
    v->slots = calloc(v->cap, sizeof(vslot_t));
    if (!v->slots) {
        v->slots = old;
        v->cap = ocap;
        return FL_ENOMEM;
    }
    for (size_t i = 0; i < ocap; i++)
        if (old[i].tok)
            *find(v, old[i].tok, old[i].len) = old[i];
    free(old);
    return 0;
}

static int add_token(fl_vocab_t *v, const char *tok, size_t len)
{
    if (len > FL_TEXT_MAX_WORD)
        len = FL_TEXT_MAX_WORD;
    vslot_t *s = find(v, tok, len);
    if (!s->tok) {
        if ((v->used + 1) * 2 > v->cap) {
            if (grow_table(v))
                return FL_ENOMEM;
            s = find(v, tok, len);
        }
        s->tok = malloc(len + 1);
        if (!s->tok)
            return FL_ENOMEM;
        memcpy(s->tok, tok, len);
        s->tok[len] = 0;
        s->len = (uint32_t)len;
        s->id = -1;
        v->used++;
    }
    s->count++;
    return 0;
}

/* Runs the statements (the variadic part) for each token of text, a run of
 * bytes none of which is in seps, with tok and tlen naming it. */
#define FOR_TOKENS(text, len, seps, tok, tlen, ...)                                        \
    for (size_t i_ = 0; i_ < (len);) {                                                      \
        while (i_ < (len) && strchr((seps), (text)[i_]) && (text)[i_])                      \
            i_++;                                                                           \
        size_t s_ = i_;                                                                     \
        while (i_ < (len) && !(strchr((seps), (text)[i_]) && (text)[i_]))                   \
            i_++;                                                                           \
        if (i_ > s_) {                                                                      \
            const char *tok = (text) + s_;                                                  \
            size_t tlen = i_ - s_;                                                          \
            __VA_ARGS__                                                                     \
        }                                                                                   \
    }

int fl_vocab_count(fl_vocab_t *v, const char *text, size_t len, const char *seps)
{
    if (!v || (!text && len) || !seps || v->kept)
        return FL_EINVAL;
    FOR_TOKENS(text, len, seps, tok, tlen, {
        if (add_token(v, tok, tlen))
            return FL_ENOMEM;
    })
    return 0;
}

static int by_count(const void *a, const void *b)
{
    const vslot_t *x = *(const vslot_t *const *)a, *y = *(const vslot_t *const *)b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->tok, y->tok);
}

int fl_vocab_finish(fl_vocab_t *v, size_t keep)
{
    if (!v || v->kept)
        return FL_EINVAL;
    vslot_t **all = malloc((v->used ? v->used : 1) * sizeof(vslot_t *));
    if (!all)
        return FL_ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < v->cap; i++)
        if (v->slots[i].tok)
            all[n++] = &v->slots[i];
    qsort(all, n, sizeof *all, by_count);
    v->nkept = n < keep ? n : keep;
    v->kept = malloc((v->nkept ? v->nkept : 1) * sizeof(char *));
    if (!v->kept) {
        free(all);
        return FL_ENOMEM;
    }
    for (size_t i = 0; i < v->nkept; i++) {
        all[i]->id = (long)i;
        v->kept[i] = all[i]->tok;
    }
    free(all);
    return 0;
}

long fl_vocab_id(const fl_vocab_t *v, const char *tok, size_t len)
{
    if (!v || !tok)
        return -1;
    if (len > FL_TEXT_MAX_WORD)
        len = FL_TEXT_MAX_WORD;
    const vslot_t *s = find(v, tok, len);
    return s->tok ? s->id : -1;
}

size_t fl_vocab_size(const fl_vocab_t *v) { return v ? v->nkept : 0; }

const char *fl_vocab_token(const fl_vocab_t *v, size_t i)
{
    return v && v->kept && i < v->nkept ? v->kept[i] : NULL;
}

/* ---- words and bag of words ---- */

int fl_text_words_init(fl_dataset_t *d)
{
    int64_t shape[1] = {FL_WORD_SEQ};
    int rc = fl_dataset_alloc_labels(d, 0, 1, shape, FL_WORD_SEQ, FL_WORD_IDS);
    if (!rc && (rc = fl_dataset_enable_groups(d)))
        fl_dataset_free(d);
    return rc;
}

int fl_text_words_append(fl_dataset_t *d, const fl_vocab_t *words, const char *text, size_t len,
                         uint32_t group)
{
    if (!d || !words || (!text && len))
        return FL_EINVAL;
    int32_t seq[FL_WORD_SEQ + 1];
    size_t n = 0;
    seq[n++] = FL_WORD_VOCAB + 2; /* BOS */
    FOR_TOKENS(text, len, " \t\r\n", tok, tlen, {
        if (n < FL_WORD_SEQ + 1) {
            long id = fl_vocab_id(words, tok, tlen);
            seq[n++] = id >= 0 ? (int32_t)id + 1 : FL_WORD_VOCAB + 1;
        }
    })
    if (n < FL_WORD_SEQ + 1)
        seq[n++] = FL_WORD_VOCAB + 3; /* EOS */
    while (n < FL_WORD_SEQ + 1)
        seq[n++] = 0;
    float x[FL_WORD_SEQ];
    for (size_t j = 0; j < FL_WORD_SEQ; j++)
        x[j] = (float)seq[j];
    return fl_dataset_append(d, x, seq + 1, group);
}

int fl_text_bow_init(fl_dataset_t *d)
{
    int64_t shape[1] = {FL_WORD_VOCAB};
    /* num_classes is the tag count, as bowlr's 500 sigmoid outputs; the 0/1
     * values lie in [0, num_classes) like any label. */
    int rc = fl_dataset_alloc_labels(d, 0, 1, shape, FL_TAG_VOCAB, FL_TAG_VOCAB);
    if (!rc && (rc = fl_dataset_enable_groups(d)))
        fl_dataset_free(d);
    if (!rc)
        d->multi_hot = 1;
    return rc;
}

int fl_text_bow_append(fl_dataset_t *d, const fl_vocab_t *words, const fl_vocab_t *tags,
                       const char *text, size_t tlen, const char *tagtext, size_t taglen,
                       uint32_t group)
{
    if (!d || !words || !tags || (!text && tlen) || (!tagtext && taglen))
        return FL_EINVAL;
    float *x = calloc(FL_WORD_VOCAB, sizeof(float));
    int32_t *y = calloc(FL_TAG_VOCAB, sizeof(int32_t));
    if (!x || !y) {
        free(x);
        free(y);
        return FL_ENOMEM;
    }
    size_t known = 0;
    FOR_TOKENS(text, tlen, " \t\r\n", tok, wl, {
        long id = fl_vocab_id(words, tok, wl);
        if (id >= 0 && id < FL_WORD_VOCAB) {
            x[id] += 1.0f;
            known++;
        }
    })
    if (known)
        for (size_t j = 0; j < FL_WORD_VOCAB; j++)
            x[j] /= (float)known;
    FOR_TOKENS(tagtext, taglen, "|", tok, gl, {
        long id = fl_vocab_id(tags, tok, gl);
        if (id >= 0 && id < FL_TAG_VOCAB)
            y[id] = 1;
    })
    int rc = fl_dataset_append(d, x, y, group);
    free(x);
    free(y);
    return rc;
}

/* ---- text:PATH ---- */

typedef struct {
    char *name;
    char *text; /* the client's text, turns joined by newlines */
    size_t len, cap;
} passage_t;

typedef struct {
    passage_t *p;
    size_t n;
    fl_vocab_t *names; /* speaker name -> passage index (in its count field) */
} passages_t;

static void passages_free(passages_t *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->p[i].name);
        free(ps->p[i].text);
    }
    free(ps->p);
    fl_vocab_free(ps->names);
    memset(ps, 0, sizeof *ps);
}


static int passage_add(passages_t *ps, const char *name, size_t nlen, const char *text, size_t len)
{
    /* The speaker's index lives in the name map; new speakers get a new passage. */
    size_t idx;
    if (!ps->names && !(ps->names = fl_vocab_new()))
        return FL_ENOMEM;
    vslot_t *s = NULL;
    if (nlen <= FL_TEXT_MAX_WORD)
        s = find(ps->names, name, nlen);
    if (s && s->tok) {
        idx = (size_t)s->count;
    } else {
        passage_t *np = realloc(ps->p, (ps->n + 1) * sizeof *np);
        if (!np)
            return FL_ENOMEM;
        ps->p = np;
        memset(&ps->p[ps->n], 0, sizeof(passage_t));
        ps->p[ps->n].name = strndup(name, nlen);
        if (!ps->p[ps->n].name)
            return FL_ENOMEM;
        idx = ps->n++;
        if (nlen <= FL_TEXT_MAX_WORD) {
            if (add_token(ps->names, name, nlen))
                return FL_ENOMEM;
            find(ps->names, name, nlen)->count = idx;
        }
    }
    passage_t *p = &ps->p[idx];
    if (p->len + len + 2 > p->cap) {
        size_t ncap = p->cap ? p->cap : 256;
        while (ncap < p->len + len + 2)
            ncap *= 2;
        char *nt = realloc(p->text, ncap);
        if (!nt)
            return FL_ENOMEM;
        p->text = nt;
        p->cap = ncap;
    }
    if (p->len)
        p->text[p->len++] = '\n';
    memcpy(p->text + p->len, text, len);
    p->len += len;
    p->text[p->len] = 0;
    return 0;
}

/* A speaker mark at the start of line: an upper-case name of 2+ letters
 * (spaces, apostrophes and hyphens inside) then ':' or '.', then a space or
 * the end of line. Returns 1 for a mark, setting the name's length and where
 * the speech starts; 2 for the headings "ACT ..." and "SCENE ...", which end
 * a turn; 0 otherwise. */
static int speaker_mark(const char *l, size_t len, size_t *nlen, size_t *speech)
{
    size_t i = 0, letters = 0;
    for (; i < len; i++) {
        char c = l[i];
        if (c >= 'A' && c <= 'Z')
            letters++;
        else if (i == 0 || (c != ' ' && c != '\'' && c != '-'))
            break;
    }
    while (i > 0 && l[i - 1] == ' ')
        i--;
    if (letters < 2 || i == 0 || i >= len || (l[i] != ':' && l[i] != '.'))
        return 0;
    if (i + 1 < len && l[i + 1] != ' ' && l[i + 1] != '\t' && l[i + 1] != '\r')
        return 0;
    /* Play headings look like speaker marks ("ACT I.", "SCENE II."). */
    if ((i >= 3 && memcmp(l, "ACT", 3) == 0 && (i == 3 || l[3] == ' ')) ||
        (i >= 5 && memcmp(l, "SCENE", 5) == 0 && (i == 5 || l[5] == ' ')))
        return 2;
    *nlen = i;
    *speech = i + 1;
    while (*speech < len && (l[*speech] == ' ' || l[*speech] == '\t'))
        (*speech)++;
    return 1;
}

static int split_speakers(const char *path, const char *text, size_t len, passages_t *ps)
{
    const char *cur = NULL;
    size_t curlen = 0;
    int any = 0, rc;
    for (size_t at = 0; at < len;) {
        const char *l = text + at;
        const char *nl = memchr(l, '\n', len - at);
        size_t ll = nl ? (size_t)(nl - l) : len - at;
        at += ll + (nl ? 1 : 0);
        size_t nlen, sp;
        int mark = speaker_mark(l, ll, &nlen, &sp);
        if (mark == 2) {
            cur = NULL;
        } else if (mark == 1) {
            cur = l;
            curlen = nlen;
            any = 1;
            if ((rc = passage_add(ps, cur, curlen, l + sp, ll - sp)))
                return rc;
        } else if (cur && ll) {
            if ((rc = passage_add(ps, cur, curlen, l, ll)))
                return rc;
        }
    }
    if (!any) {
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        return passage_add(ps, base, strlen(base), text, len);
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int collect(const char *path, passages_t *ps)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        FL_LOG_E("text", "%s: no such file or directory", path);
        return FL_ENOTFOUND;
    }
    char *text;
    size_t len;
    int rc;
    if (!S_ISDIR(st.st_mode)) {
        if ((rc = fl_file_read_all(path, FL_TEXT_MAX_FILE, &text, &len)))
            return rc;
        rc = split_speakers(path, text, len, ps);
        free(text);
        return rc;
    }
    DIR *dp = opendir(path);
    if (!dp) {
        FL_LOG_E("text", "%s: cannot open directory", path);
        return FL_EIO;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    rc = 0;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.')
            continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        char **nn = realloc(names, (n + 1) * sizeof(char *));
        if (!nn || !(nn[n] = strdup(e->d_name))) {
            names = nn ? nn : names;
            rc = FL_ENOMEM;
            break;
        }
        names = nn;
        n++;
    }
    closedir(dp);
    if (!rc)
        qsort(names, n, sizeof(char *), cmp_str);
    for (size_t i = 0; i < n && !rc; i++) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (!(rc = fl_file_read_all(full, FL_TEXT_MAX_FILE, &text, &len))) {
            rc = passage_add(ps, names[i], strlen(names[i]), text, len);
            free(text);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (!rc && ps->n == 0) {
        FL_LOG_E("text", "%s: no text files", path);
        rc = FL_EEMPTY;
    }
    return rc;
}

/* The train share of k items: the first ceil(0.8 k). */
static size_t train_count(size_t k) { return (k * 4 + 4) / 5; }

/* Lines of a passage: calls body with (line, length) for each non-empty line. */
#define FOR_LINES(text, len, line, llen, ...)                                              \
    for (size_t a_ = 0; a_ < (len);) {                                                      \
        const char *line = (text) + a_;                                                     \
        const char *e_ = memchr(line, '\n', (len) - a_);                                    \
        size_t llen = e_ ? (size_t)(e_ - line) : (len) - a_;                                \
        a_ += llen + (e_ ? 1 : 0);                                                          \
        if (llen && line[llen - 1] == '\r')                                                 \
            llen--;                                                                         \
        if (llen) {                                                                         \
            __VA_ARGS__                                                                     \
        }                                                                                   \
    }

static size_t count_lines(const passage_t *p)
{
    size_t k = 0;
    FOR_LINES(p->text, p->len, line, llen, {
        (void)line;
        (void)llen;
        k++;
    })
    return k;
}

/* Splits a bow line "tags<TAB>words" (no tab: no tags). */
static void bow_split(const char *line, size_t llen, const char **tags, size_t *tl,
                      const char **words, size_t *wl)
{
    const char *tab = memchr(line, '\t', llen);
    if (tab) {
        *tags = line;
        *tl = (size_t)(tab - line);
        *words = tab + 1;
        *wl = llen - *tl - 1;
    } else {
        *tags = line;
        *tl = 0;
        *words = line;
        *wl = llen;
    }
}

int fl_text_load(const char *path, const char *split, fl_data_view_t view, fl_dataset_t *d)
{
    passages_t ps = {0};
    fl_vocab_t *words = NULL, *tags = NULL;
    fl_dataset_t tmp;
    fl_dataset_init(&tmp);
    if (!path || !split || !d)
        return FL_EINVAL;
    int train = strcmp(split, "train") == 0;
    if (!train && strcmp(split, "test") != 0)
        return FL_EINVAL;
    if (view == FL_DATA_VIEW_AUTO)
        view = FL_DATA_VIEW_CHARS;
    int rc = collect(path, &ps);
    if (rc)
        goto done;
    if (view == FL_DATA_VIEW_CHARS) {
        if ((rc = fl_text_chars_init(d)))
            goto done;
        for (size_t g = 0; g < ps.n && !rc; g++) {
            uint32_t gid;
            fl_dataset_free(&tmp);
            if ((rc = fl_text_chars_init(&tmp)) ||
                (rc = fl_text_chars_append(&tmp, ps.p[g].text, ps.p[g].len, 0)))
                break;
            size_t k = train_count(tmp.n), from = train ? 0 : k, to = train ? k : tmp.n;
            if ((rc = fl_dataset_add_group(d, ps.p[g].name, &gid)))
                break;
            for (size_t i = from; i < to && !rc; i++)
                rc = fl_dataset_append(d, tmp.x + i * tmp.dim, tmp.y + i * tmp.label_dim, gid);
        }
        goto done;
    }
    /* Words and bow: vocabularies from the train share of every client. */
    words = fl_vocab_new();
    tags = fl_vocab_new();
    if (!words || !tags) {
        rc = FL_ENOMEM;
        goto done;
    }
    for (size_t g = 0; g < ps.n && !rc; g++) {
        size_t k = train_count(count_lines(&ps.p[g])), i = 0;
        FOR_LINES(ps.p[g].text, ps.p[g].len, line, llen, {
            if (i++ < k && !rc) {
                const char *t, *w;
                size_t tl, wl;
                if (view == FL_DATA_VIEW_BOW) {
                    bow_split(line, llen, &t, &tl, &w, &wl);
                    rc = fl_vocab_count(tags, t, tl, "|");
                } else {
                    w = line;
                    wl = llen;
                }
                if (!rc)
                    rc = fl_vocab_count(words, w, wl, " \t");
            }
        })
    }
    if (rc || (rc = fl_vocab_finish(words, FL_WORD_VOCAB)) ||
        (rc = fl_vocab_finish(tags, FL_TAG_VOCAB)))
        goto done;
    if ((rc = view == FL_DATA_VIEW_BOW ? fl_text_bow_init(d) : fl_text_words_init(d)))
        goto done;
    for (size_t g = 0; g < ps.n && !rc; g++) {
        size_t k = train_count(count_lines(&ps.p[g])), i = 0;
        uint32_t gid;
        if ((rc = fl_dataset_add_group(d, ps.p[g].name, &gid)))
            break;
        FOR_LINES(ps.p[g].text, ps.p[g].len, line, llen, {
            int mine = train ? i < k : i >= k;
            i++;
            if (mine && !rc) {
                if (view == FL_DATA_VIEW_BOW) {
                    const char *t, *w;
                    size_t tl, wl;
                    bow_split(line, llen, &t, &tl, &w, &wl);
                    rc = fl_text_bow_append(d, words, tags, w, wl, t, tl, gid);
                } else {
                    rc = fl_text_words_append(d, words, line, llen, gid);
                }
            }
        })
    }
done:
    if (!rc && d->n == 0) {
        FL_LOG_E("text", "%s: no %s examples", path, split);
        rc = FL_EEMPTY;
    }
    if (rc)
        fl_dataset_free(d);
    else
        fl_dataset_trim(d);
    fl_dataset_free(&tmp);
    fl_vocab_free(words);
    fl_vocab_free(tags);
    passages_free(&ps);
    return rc;
}
