#include "server/robust.h"

#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

/* Insertion sort: k is a round's client count, small. */
static void sort_small(float *v, size_t k)
{
    for (size_t i = 1; i < k; i++) {
        float x = v[i];
        size_t j = i;
        for (; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

static int check(const float *const *d, size_t k, const float *out)
{
    if (!d || !k || !out)
        return FL_EINVAL;
    for (size_t i = 0; i < k; i++)
        if (!d[i])
            return FL_EINVAL;
    return 0;
}

int fl_robust_median(const float *const *d, size_t k, size_t n, float *out)
{
    int rc = check(d, k, out);
    if (rc)
        return rc;
    float *v = malloc(k * sizeof *v);
    if (!v)
        return FL_ENOMEM;
    for (size_t j = 0; j < n; j++) {
        for (size_t i = 0; i < k; i++)
            v[i] = d[i][j];
        sort_small(v, k);
        out[j] = k % 2 ? v[k / 2] : (float)(((double)v[k / 2 - 1] + v[k / 2]) / 2);
    }
    free(v);
    return 0;
}

int fl_robust_trimmed_mean(const float *const *d, size_t k, size_t n, double beta, float *out)
{
    int rc = check(d, k, out);
    if (rc)
        return rc;
    if (!(beta >= 0 && beta < 0.5))
        return FL_EINVAL;
    size_t b = (size_t)(beta * (double)k);
    if (2 * b >= k)
        return FL_EINVAL;
    float *v = malloc(k * sizeof *v);
    if (!v)
        return FL_ENOMEM;
    for (size_t j = 0; j < n; j++) {
        for (size_t i = 0; i < k; i++)
            v[i] = d[i][j];
        sort_small(v, k);
        double s = 0;
        for (size_t i = b; i < k - b; i++)
            s += v[i];
        out[j] = (float)(s / (double)(k - 2 * b));
    }
    free(v);
    return 0;
}

int fl_robust_krum(const float *const *d, size_t k, size_t n, size_t f, size_t m, float *out, uint8_t *chosen)
{
    int rc = check(d, k, out);
    if (rc)
        return rc;
    if (k < f + 3 || m < 1 || m > k)
        return FL_EINVAL;
    size_t nb = k - f - 2; /* neighbours each score sums over */
    double *dist = calloc(k * k, sizeof *dist), *score = malloc(k * sizeof *score), *row = malloc(k * sizeof *row);
    size_t *order = malloc(k * sizeof *order);
    rc = FL_ENOMEM;
    if (!dist || !score || !row || !order)
        goto out;
    for (size_t a = 0; a < k; a++)
        for (size_t b = a + 1; b < k; b++) {
            double s = 0;
            for (size_t j = 0; j < n; j++) {
                double t = (double)d[a][j] - d[b][j];
                s += t * t;
            }
            dist[a * k + b] = dist[b * k + a] = s;
        }
    for (size_t a = 0; a < k; a++) {
        size_t r = 0;
        for (size_t b = 0; b < k; b++)
            if (b != a)
                row[r++] = dist[a * k + b];
        /* the nb smallest of the k - 1 distances: partial selection sort */
        double s = 0;
        for (size_t t = 0; t < nb; t++) {
            size_t best = t;
            for (size_t u = t + 1; u < r; u++)
                if (row[u] < row[best])
                    best = u;
            double x = row[t];
            row[t] = row[best];
            row[best] = x;
            s += row[t];
        }
        score[a] = s;
        order[a] = a;
    }
    /* stable selection of the m lowest scores (ties: lower index first) */
    for (size_t t = 0; t < m; t++) {
        size_t best = t;
        for (size_t u = t + 1; u < k; u++)
            if (score[order[u]] < score[order[best]] ||
                (score[order[u]] == score[order[best]] && order[u] < order[best]))
                best = u;
        size_t x = order[t];
        order[t] = order[best];
        order[best] = x;
    }
    if (chosen) {
        memset(chosen, 0, k);
        for (size_t t = 0; t < m; t++)
            chosen[order[t]] = 1;
    }
    for (size_t j = 0; j < n; j++) {
        double s = 0;
        for (size_t t = 0; t < m; t++)
            s += d[order[t]][j];
        out[j] = (float)(s / (double)m);
    }
    rc = 0;
out:
    free(dist);
    free(score);
    free(row);
    free(order);
    return rc;
}
