/* graph: see graph.h. */
#include "common/secagg/sagraph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/rng.h"

/* log2 P[Binomial(k, p) >= m], summed in log space (k is at most a few
 * thousand here). */
static double log2_tail_ge(uint32_t k, double p, uint32_t m)
{
    if (m == 0)
        return 0.0;
    if (m > k)
        return -INFINITY;
    if (p <= 0.0)
        return -INFINITY;
    if (p >= 1.0)
        return 0.0;
    double lp = log(p), lq = log1p(-p), mx = -INFINITY;
    double terms[8192];
    uint32_t cnt = 0;
    for (uint32_t i = m; i <= k && cnt < sizeof terms / sizeof terms[0]; i++, cnt++) {
        double l = lgamma((double)k + 1) - lgamma((double)i + 1) - lgamma((double)(k - i) + 1) +
                   i * lp + (k - i) * lq;
        terms[cnt] = l;
        if (l > mx)
            mx = l;
    }
    double s = 0;
    for (uint32_t i = 0; i < cnt; i++)
        s += exp(terms[i] - mx);
    return (mx + log(s)) / log(2.0);
}

int fl_sagraph_choose(uint32_t n, double dropout, double corrupt, double sigma, double eta,
                      fl_sagraph_choice_t *out)
{
    if (!out || n < 2 || n > 1000000 || !(dropout >= 0 && dropout < 1) ||
        !(corrupt >= 0 && corrupt < 1) || dropout + corrupt >= 0.5 || !(sigma > 0) || !(eta > 0))
        return FL_EINVAL;
    memset(out, 0, sizeof *out);
    double ln = log2((double)n);
    for (uint32_t k = 2; k + 1 < n && k <= 4000; k += 2) {
        double conn = ln + (k / 2) * log2(dropout + corrupt);
        if (dropout + corrupt > 0 && conn > -sigma)
            continue;
        /* smallest t with the privacy bound, then check correctness there
         * (a larger t only hurts correctness) */
        for (uint32_t t = k / 2 + 1; t <= k; t++) {
            double priv = ln + log2_tail_ge(k, corrupt, 2 * t - k);
            if (priv > -sigma)
                continue;
            /* fewer than t survive = at least k-t+1 drop */
            double corr = ln + log2_tail_ge(k, dropout, k - t + 1);
            if (corr > -eta)
                break;
            out->k = k;
            out->t = t;
            out->complete = 0;
            out->log2_fail_correct = corr;
            out->log2_fail_private = priv > conn ? priv : conn;
            return 0;
        }
    }
    /* complete graph: counts instead of probabilities (as large as a
     * round's degree may be: samsg.h's FL_SAMSG_MAX_DEGREE) */
    if (n - 1 > 4096)
        return FL_ERANGE;
    uint32_t k = n - 1;
    uint32_t corrupt_n = (uint32_t)ceil(corrupt * n);
    uint32_t drop_n = (uint32_t)ceil(dropout * n);
    uint32_t t = k / 2 + 1;
    if (2 * t <= k + corrupt_n)
        t = (k + corrupt_n) / 2 + 1;
    if (t > k || drop_n > k || k - drop_n < t)
        return FL_ERANGE;
    out->k = k;
    out->t = t;
    out->complete = 1;
    out->log2_fail_correct = -INFINITY;
    out->log2_fail_private = -INFINITY;
    return 0;
}

int fl_sagraph_init(fl_sagraph_t *g, uint32_t n, uint32_t k, uint64_t seed)
{
    if (!g)
        return FL_EINVAL;
    memset(g, 0, sizeof *g);
    if (n < 2 || k == 0 || (k < n - 1 && (k & 1)))
        return FL_EINVAL;
    g->n = n;
    g->k = k >= n - 1 ? n - 1 : k;
    g->pos = malloc((size_t)n * sizeof *g->pos);
    g->at = malloc((size_t)n * sizeof *g->at);
    if (!g->pos || !g->at) {
        fl_sagraph_free(g);
        return FL_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++)
        g->at[i] = i;
    fl_rng_t r;
    uint64_t ids[1] = {0x5ecA99};
    fl_rng_stream(&r, seed, ids, 1);
    fl_rng_shuffle_u32(&r, g->at, n);
    for (uint32_t i = 0; i < n; i++)
        g->pos[g->at[i]] = i;
    return 0;
}

void fl_sagraph_free(fl_sagraph_t *g)
{
    if (!g)
        return;
    free(g->pos);
    free(g->at);
    g->pos = g->at = NULL;
}

int fl_sagraph_adjacent(const fl_sagraph_t *g, uint32_t u, uint32_t v)
{
    if (u == v || u >= g->n || v >= g->n)
        return 0;
    if (g->k >= g->n - 1)
        return 1;
    uint32_t a = g->pos[u], b = g->pos[v];
    uint32_t d = a > b ? a - b : b - a;
    if (g->n - d < d)
        d = g->n - d;
    return d <= g->k / 2;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

uint32_t fl_sagraph_neighbours(const fl_sagraph_t *g, uint32_t u, uint32_t *out)
{
    uint32_t cnt = 0;
    if (g->k >= g->n - 1) {
        for (uint32_t v = 0; v < g->n; v++)
            if (v != u)
                out[cnt++] = v;
        return cnt;
    }
    uint32_t p = g->pos[u];
    for (uint32_t d = 1; d <= g->k / 2; d++) {
        out[cnt++] = g->at[(p + d) % g->n];
        out[cnt++] = g->at[(p + g->n - d) % g->n];
    }
    qsort(out, cnt, sizeof *out, cmp_u32);
    return cnt;
}
