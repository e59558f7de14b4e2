#include "common/data/partition.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/log.h"
#include "common/base/rng.h"

static int parse_double(const char *s, char **end, double *out)
{
    errno = 0;
    double v = strtod(s, end);
    if (*end == s || errno || !isfinite(v) || v <= 0.0)
        return FL_EINVAL;
    *out = v;
    return 0;
}

int fl_partition_parse(const char *text, fl_partition_spec_t *out)
{
    if (!text || !out)
        return FL_EINVAL;
    memset(out, 0, sizeof *out);
    char *end;
    if (strcmp(text, "none") == 0) {
        out->kind = FL_PARTITION_NONE;
        return 0;
    }
    if (strcmp(text, "iid") == 0) {
        out->kind = FL_PARTITION_IID;
        return 0;
    }
    if (strcmp(text, "natural") == 0) {
        out->kind = FL_PARTITION_NATURAL;
        return 0;
    }
    if (strcmp(text, "shards") == 0 || strncmp(text, "shards:", 7) == 0) {
        out->kind = FL_PARTITION_SHARDS;
        out->shards = 2;
        if (text[6] == ':') {
            errno = 0;
            long s = strtol(text + 7, &end, 10);
            if (end == text + 7 || *end || errno || s < 1 || s > 1000000)
                goto bad;
            out->shards = (int)s;
        }
        return 0;
    }
    if (strncmp(text, "dirichlet:", 10) == 0) {
        out->kind = FL_PARTITION_DIRICHLET;
        if (parse_double(text + 10, &end, &out->alpha))
            goto bad;
        if (*end == ',') {
            const char *f = end + 1;
            if (parse_double(f, &end, &out->alpha_fine))
                goto bad;
        }
        if (*end)
            goto bad;
        return 0;
    }
bad:
    FL_LOG_E("partition", "bad partition '%s' (expected iid, dirichlet:ALPHA, "
                          "dirichlet:COARSE,FINE, shards[:S], natural or none)", text);
    memset(out, 0, sizeof *out);
    return FL_EINVAL;
}

void fl_partition_format(const fl_partition_spec_t *spec, char *buf, size_t size)
{
    if (!buf || size == 0)
        return;
    switch (spec ? spec->kind : FL_PARTITION_NONE) {
    case FL_PARTITION_IID:
        snprintf(buf, size, "iid");
        break;
    case FL_PARTITION_DIRICHLET:
        if (spec->alpha_fine > 0)
            snprintf(buf, size, "dirichlet:%g,%g", spec->alpha, spec->alpha_fine);
        else
            snprintf(buf, size, "dirichlet:%g", spec->alpha);
        break;
    case FL_PARTITION_SHARDS:
        snprintf(buf, size, "shards:%d", spec->shards);
        break;
    case FL_PARTITION_NATURAL:
        snprintf(buf, size, "natural");
        break;
    default:
        snprintf(buf, size, "none");
        break;
    }
}

void fl_partition_free(fl_partition_t *p)
{
    if (!p)
        return;
    free(p->offsets);
    free(p->index);
    memset(p, 0, sizeof *p);
}

const uint32_t *fl_partition_client(const fl_partition_t *p, size_t c, size_t *count)
{
    if (!p || c >= p->clients) {
        if (count)
            *count = 0;
        return NULL;
    }
    if (count)
        *count = p->offsets[c + 1] - p->offsets[c];
    return p->index + p->offsets[c];
}

static int alloc_result(fl_partition_t *out, size_t clients, size_t total)
{
    out->clients = clients;
    out->offsets = calloc(clients + 1, sizeof(size_t));
    out->index = malloc((total ? total : 1) * sizeof(uint32_t));
    if (!out->offsets || !out->index) {
        fl_partition_free(out);
        return FL_ENOMEM;
    }
    return 0;
}

/* Equal shares: client c gets floor(n/K), plus one for the first n mod K. */
static size_t share(size_t n, size_t k, size_t c) { return n / k + (c < n % k ? 1 : 0); }

static int make_iid(const fl_dataset_t *d, size_t k, fl_rng_t *r, fl_partition_t *out)
{
    int rc = alloc_result(out, k, d->n);
    if (rc)
        return rc;
    for (size_t i = 0; i < d->n; i++)
        out->index[i] = (uint32_t)i;
    fl_rng_shuffle_u32(r, out->index, d->n);
    for (size_t c = 0; c < k; c++)
        out->offsets[c + 1] = out->offsets[c] + share(d->n, k, c);
    return 0;
}

/* Indices grouped by label: byl[start[l] .. start[l+1]) hold label l in
 * dataset order (a counting sort, so stable). */
static int by_label(const fl_dataset_t *d, int classes, uint32_t **byl, size_t **start)
{
    *byl = malloc((d->n ? d->n : 1) * sizeof(uint32_t));
    *start = calloc((size_t)classes + 1, sizeof(size_t));
    size_t *fill = calloc((size_t)classes + 1, sizeof(size_t));
    if (!*byl || !*start || !fill) {
        free(fill);
        return FL_ENOMEM;
    }
    for (size_t i = 0; i < d->n; i++)
        (*start)[d->y[i * d->label_dim] + 1]++;
    for (int l = 0; l < classes; l++)
        (*start)[l + 1] += (*start)[l];
    memcpy(fill, *start, ((size_t)classes + 1) * sizeof(size_t));
    for (size_t i = 0; i < d->n; i++)
        (*byl)[fill[d->y[i * d->label_dim]]++] = (uint32_t)i;
    free(fill);
    return 0;
}

static int make_shards(const fl_dataset_t *d, size_t k, int s, fl_rng_t *r, fl_partition_t *out)
{
    uint32_t *byl = NULL, *perm = NULL;
    size_t *start = NULL;
    size_t nshards = k * (size_t)s;
    if (nshards / (size_t)s != k || nshards > d->n || nshards > UINT32_MAX) {
        FL_LOG_E("partition", "shards: %zu clients x %d shards is more than %zu examples", k, s,
                 d->n);
        return FL_ERANGE;
    }
    size_t m = d->n / nshards;
    int rc = by_label(d, d->num_classes, &byl, &start);
    if (rc)
        goto done;
    perm = malloc(nshards * sizeof(uint32_t));
    if (!perm) {
        rc = FL_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < nshards; i++)
        perm[i] = (uint32_t)i;
    fl_rng_shuffle_u32(r, perm, nshards);
    if ((rc = alloc_result(out, k, nshards * m)))
        goto done;
    size_t pos = 0;
    for (size_t c = 0; c < k; c++) {
        for (int j = 0; j < s; j++) {
            size_t sh = perm[c * (size_t)s + (size_t)j];
            memcpy(out->index + pos, byl + sh * m, m * sizeof(uint32_t));
            pos += m;
        }
        out->offsets[c + 1] = pos;
    }
done:
    free(byl);
    free(start);
    free(perm);
    return rc;
}

/* Draws a Dirichlet(alpha) vector over the entries of w[0..n) with avail[i] != 0
 * (the rest get 0). If every gamma draw underflows to 0 (possible for tiny
 * alpha), all the mass goes to one available entry chosen uniformly, which is
 * the limit of the distribution as alpha -> 0. */
static void draw_dirichlet(fl_rng_t *r, double alpha, const size_t *avail, double *w, size_t n)
{
    double sum = 0;
    size_t navail = 0;
    for (size_t i = 0; i < n; i++) {
        w[i] = avail[i] ? fl_rng_gamma(r, alpha) : 0.0;
        sum += w[i];
        navail += avail[i] ? 1 : 0;
    }
    if (sum > 0 || navail == 0)
        return;
    size_t pick = (size_t)fl_rng_below(r, navail);
    for (size_t i = 0; i < n; i++)
        if (avail[i] && pick-- == 0)
            w[i] = 1.0;
}

/* Samples an index i in [0, n) with avail[i] != 0, proportional to w[i].
 * Returns n when the available entries carry no weight. */
static size_t sample(fl_rng_t *r, const double *w, const size_t *avail, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if (avail[i])
            sum += w[i];
    if (!(sum > 0))
        return n;
    double u = fl_rng_uniform(r) * sum;
    size_t last = n;
    for (size_t i = 0; i < n; i++) {
        if (!avail[i] || !(w[i] > 0))
            continue;
        last = i;
        if (u < w[i])
            return i;
        u -= w[i];
    }
    return last; /* rounding left u just past the end */
}

/* Two-level Dirichlet: picks a fine label of coarse group g with examples
 * left, proportional to wl (the client's fine proportions); when the
 * remaining labels of g carry no weight, they get fresh Dir(alpha) weights. */
static size_t pick_fine(fl_rng_t *r, size_t g, const size_t *gof, const size_t *left, double *wl,
                        size_t L, double alpha)
{
    double sum = 0;
    size_t ng = 0;
    for (size_t i = 0; i < L; i++)
        if (gof[i] == g && left[i]) {
            sum += wl[i];
            ng++;
        }
    if (!(sum > 0)) {
        for (size_t i = 0; i < L; i++)
            if (gof[i] == g && left[i]) {
                wl[i] = fl_rng_gamma(r, alpha);
                sum += wl[i];
            }
        if (!(sum > 0)) { /* every gamma underflowed: all mass on one label */
            size_t pick = (size_t)fl_rng_below(r, ng);
            for (size_t i = 0; i < L; i++)
                if (gof[i] == g && left[i] && pick-- == 0)
                    wl[i] = 1.0;
            sum = 1.0;
        }
    }
    double u = fl_rng_uniform(r) * sum;
    size_t last = L;
    for (size_t i = 0; i < L; i++) {
        if (gof[i] != g || !left[i] || !(wl[i] > 0))
            continue;
        last = i;
        if (u < wl[i])
            return i;
        u -= wl[i];
    }
    return last;
}

/* The label-Dirichlet rule, one or two levels. Labels are grouped into
 * "coarse" groups: with one level every label is its own group, so the fine
 * draw is trivial. left[l] counts label l's unused examples; pool[l] holds
 * them in a random order and is consumed from its end. */
static int make_dirichlet(const fl_dataset_t *d, size_t k, const fl_partition_spec_t *spec,
                          fl_rng_t *r, fl_partition_t *out)
{
    const int two = spec->alpha_fine > 0;
    const size_t L = (size_t)d->num_classes;
    const size_t G = two ? (size_t)d->num_coarse : L;
    uint32_t *byl = NULL;
    size_t *start = NULL, *left = NULL, *gleft = NULL, *gof = NULL;
    double *wg = NULL, *wl = NULL;
    int rc = by_label(d, d->num_classes, &byl, &start);
    if (rc)
        goto done;
    left = calloc(L, sizeof(size_t));
    gof = calloc(L, sizeof(size_t));
    gleft = calloc(G, sizeof(size_t));
    wg = calloc(G, sizeof(double));
    wl = calloc(L, sizeof(double));
    if (!left || !gof || !gleft || !wg || !wl) {
        rc = FL_ENOMEM;
        goto done;
    }
    /* The coarse group of a fine label: every example of the label must agree. */
    for (size_t l = 0; l < L; l++) {
        left[l] = start[l + 1] - start[l];
        gof[l] = l;
        if (two && left[l]) {
            int32_t g = d->coarse[byl[start[l]]];
            for (size_t j = start[l]; j < start[l + 1]; j++)
                if (d->coarse[byl[j]] != g) {
                    FL_LOG_E("partition", "fine label %zu appears under two coarse labels", l);
                    rc = FL_EINVAL;
                    goto done;
                }
            gof[l] = (size_t)g;
        }
        gleft[gof[l]] += left[l];
        fl_rng_shuffle_u32(r, byl + start[l], left[l]);
    }
    if ((rc = alloc_result(out, k, d->n)))
        goto done;
    size_t pos = 0;
    for (size_t c = 0; c < k; c++) {
        size_t want = share(d->n, k, c);
        draw_dirichlet(r, spec->alpha, gleft, wg, G);
        if (two)
            for (size_t l = 0; l < L; l++)
                wl[l] = left[l] ? fl_rng_gamma(r, spec->alpha_fine) : 0.0;
        for (size_t t = 0; t < want; t++) {
            size_t g = sample(r, wg, gleft, G);
            if (g == G) {
                /* Every class this client favoured ran out: its proportions
                 * over what is left are undefined after renormalising, so it
                 * draws fresh ones over the remaining classes. */
                draw_dirichlet(r, spec->alpha, gleft, wg, G);
                g = sample(r, wg, gleft, G);
                if (g == G) {
                    rc = FL_EINVAL; /* cannot happen: n examples remain for n draws */
                    goto done;
                }
            }
            size_t l = g;
            if (two)
                l = pick_fine(r, g, gof, left, wl, L, spec->alpha_fine);
            left[l]--;
            gleft[g]--;
            out->index[pos++] = byl[start[l] + left[l]];
        }
        out->offsets[c + 1] = pos;
    }
done:
    free(byl);
    free(start);
    free(left);
    free(gof);
    free(gleft);
    free(wg);
    free(wl);
    if (rc)
        fl_partition_free(out);
    return rc;
}

static int make_natural(const fl_dataset_t *d, size_t k, fl_partition_t *out)
{
    if (!d->group || d->num_groups == 0) {
        FL_LOG_E("partition", "natural: this data has no user/client ids (use iid, "
                              "dirichlet or shards)");
        return FL_EINVAL;
    }
    if (k == 0)
        k = d->num_groups;
    if (k > d->num_groups) {
        FL_LOG_E("partition", "natural: %zu clients asked but the data has %zu users", k,
                 d->num_groups);
        return FL_ERANGE;
    }
    size_t *count = calloc(k + 1, sizeof(size_t));
    if (!count)
        return FL_ENOMEM;
    size_t total = 0;
    for (size_t i = 0; i < d->n; i++)
        if (d->group[i] < k) {
            count[d->group[i] + 1]++;
            total++;
        }
    int rc = alloc_result(out, k, total);
    if (rc) {
        free(count);
        return rc;
    }
    for (size_t c = 0; c < k; c++)
        out->offsets[c + 1] = out->offsets[c] + count[c + 1];
    memcpy(count, out->offsets, k * sizeof(size_t));
    for (size_t i = 0; i < d->n; i++)
        if (d->group[i] < k)
            out->index[count[d->group[i]]++] = (uint32_t)i;
    free(count);
    return 0;
}

int fl_partition_make(const fl_dataset_t *d, const fl_partition_spec_t *spec, size_t clients,
                      uint64_t seed, fl_partition_t *out)
{
    if (!d || !spec || !out || d->n > UINT32_MAX)
        return FL_EINVAL;
    memset(out, 0, sizeof *out);
    if (spec->kind == FL_PARTITION_NATURAL)
        return make_natural(d, clients, out);
    if (spec->kind == FL_PARTITION_NONE)
        clients = 1;
    if (clients == 0 || clients > d->n) {
        FL_LOG_E("partition", "cannot split %zu examples into %zu clients", d->n, clients);
        return clients ? FL_ERANGE : FL_EINVAL;
    }
    if (spec->kind == FL_PARTITION_DIRICHLET || spec->kind == FL_PARTITION_SHARDS) {
        if (d->label_dim != 1) {
            FL_LOG_E("partition", "dirichlet and shards need one class label per example; "
                                  "use iid or natural for sequence or multi-label data");
            return FL_EUNSUPPORTED;
        }
        for (size_t i = 0; i < d->n; i++)
            if (d->y[i] < 0 || d->y[i] >= d->num_classes)
                return FL_EINVAL;
        if (spec->kind == FL_PARTITION_DIRICHLET && !(spec->alpha > 0))
            return FL_EINVAL;
        if (spec->kind == FL_PARTITION_DIRICHLET && spec->alpha_fine > 0) {
            if (!d->coarse || d->num_coarse < 1) {
                FL_LOG_E("partition", "two-level dirichlet needs coarse labels (CIFAR-100)");
                return FL_EINVAL;
            }
            for (size_t i = 0; i < d->n; i++)
                if (d->coarse[i] < 0 || d->coarse[i] >= d->num_coarse)
                    return FL_EINVAL;
        }
        if (spec->kind == FL_PARTITION_SHARDS && spec->shards < 1)
            return FL_EINVAL;
    }
    fl_rng_t r;
    uint64_t ids[2] = {(uint64_t)clients, FL_RNG_PARTITION};
    fl_rng_stream(&r, seed, ids, 2);
    switch (spec->kind) {
    case FL_PARTITION_NONE:
    case FL_PARTITION_IID:
        return make_iid(d, clients, &r, out);
    case FL_PARTITION_DIRICHLET:
        return make_dirichlet(d, clients, spec, &r, out);
    case FL_PARTITION_SHARDS:
        return make_shards(d, clients, spec->shards, &r, out);
    default:
        return FL_EINVAL;
    }
}

int fl_partition_stats(const fl_dataset_t *d, const fl_partition_t *p, fl_partition_stats_t *st)
{
    if (!d || !p || !st || d->num_classes < 1)
        return FL_EINVAL;
    memset(st, 0, sizeof *st);
    size_t L = (size_t)d->num_classes;
    double *global = calloc(L, sizeof(double));
    size_t *h = calloc(L, sizeof(size_t));
    if (!global || !h) {
        free(global);
        free(h);
        return FL_ENOMEM;
    }
    for (size_t i = 0; i < d->n; i++) {
        int32_t l = d->y[i * d->label_dim];
        if (l >= 0 && (size_t)l < L)
            global[l] += 1.0 / (double)d->n;
    }
    st->min_size = p->clients ? SIZE_MAX : 0;
    double sum_labels = 0, sum_tv = 0;
    for (size_t c = 0; c < p->clients; c++) {
        size_t m;
        const uint32_t *ix = fl_partition_client(p, c, &m);
        memset(h, 0, L * sizeof(size_t));
        for (size_t j = 0; j < m; j++) {
            int32_t l = d->y[(size_t)ix[j] * d->label_dim];
            if (l >= 0 && (size_t)l < L)
                h[l]++;
        }
        size_t distinct = 0;
        double tv = 0;
        for (size_t l = 0; l < L; l++) {
            distinct += h[l] ? 1 : 0;
            tv += fabs((m ? (double)h[l] / (double)m : 0.0) - global[l]);
        }
        sum_labels += (double)distinct;
        sum_tv += tv / 2;
        if (distinct > st->max_labels)
            st->max_labels = distinct;
        if (m < st->min_size)
            st->min_size = m;
        if (m > st->max_size)
            st->max_size = m;
        st->used += m;
    }
    if (p->clients) {
        st->mean_size = (double)st->used / (double)p->clients;
        st->mean_labels = sum_labels / (double)p->clients;
        st->mean_tv = sum_tv / (double)p->clients;
    }
    free(global);
    free(h);
    return 0;
}
