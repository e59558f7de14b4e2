#include "common/nn/loss.h"

#include <math.h>
#include <string.h>

/* Softmax cross-entropy skipping rows whose label is negative, out of range
 * or equal to `pad` (pass -1 for no pad class). */
static double softmax_ce(const float *logits, size_t rows, size_t classes, const int32_t *labels,
                         int32_t pad, float *grad, fl_loss_stats_t *st)
{
    size_t counted = 0;
    for (size_t r = 0; r < rows; r++)
        if (labels[r] >= 0 && (size_t)labels[r] < classes && labels[r] != pad)
            counted++;
    double sum = 0.0, hits = 0.0;
    const float inv = counted ? 1.0f / (float)counted : 0.0f;
    for (size_t r = 0; r < rows; r++) {
        const float *z = logits + r * classes;
        float *g = grad ? grad + r * classes : NULL;
        int32_t y = labels[r];
        if (y < 0 || (size_t)y >= classes || y == pad) {
            if (g)
                memset(g, 0, classes * sizeof(float));
            continue;
        }
        size_t arg = 0;
        float mx = z[0];
        for (size_t j = 1; j < classes; j++)
            if (z[j] > mx) {
                mx = z[j];
                arg = j;
            }
        double se = 0.0;
        for (size_t j = 0; j < classes; j++)
            se += exp((double)z[j] - mx);
        double lse = mx + log(se);
        sum += lse - z[y];
        hits += arg == (size_t)y;
        if (g) {
            for (size_t j = 0; j < classes; j++)
                g[j] = (float)exp((double)z[j] - lse) * inv;
            g[y] -= inv;
        }
    }
    if (st) {
        st->hits += hits;
        st->total += (double)counted;
    }
    return counted ? sum / (double)counted : 0.0;
}

double fl_loss_softmax_ce(const float *logits, size_t rows, size_t classes, const int32_t *labels,
                          float *grad, fl_loss_stats_t *st)
{
    return softmax_ce(logits, rows, classes, labels, -1, grad, st);
}

double fl_loss_softmax_ce_pad(const float *logits, size_t rows, size_t classes,
                              const int32_t *labels, int32_t pad, float *grad, fl_loss_stats_t *st)
{
    return softmax_ce(logits, rows, classes, labels, pad, grad, st);
}

double fl_loss_sigmoid_bce(const float *logits, size_t n, size_t c, const int32_t *targets,
                           float *grad, fl_loss_stats_t *st)
{
    double sum = 0.0;
    const double m = (double)n * (double)c;
    const float inv = m > 0 ? (float)(1.0 / m) : 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float *z = logits + i * c;
        const int32_t *t = targets + i * c;
        for (size_t j = 0; j < c; j++) {
            double x = z[j];
            double y = t[j] != 0;
            /* max(x,0) - x*y + log(1 + exp(-|x|)): stable for any x. */
            sum += (x > 0 ? x : 0) - x * y + log1p(exp(-fabs(x)));
            if (grad) {
                double s = x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
                grad[i * c + j] = (float)(s - y) * inv;
            }
        }
        if (st) {
            /* The 5 largest logits, by repeated selection (c is a few hundred). */
            size_t top[5];
            size_t k = c < 5 ? c : 5;
            for (size_t a = 0; a < k; a++) {
                size_t best = (size_t)-1;
                for (size_t j = 0; j < c; j++) {
                    int taken = 0;
                    for (size_t b = 0; b < a; b++)
                        taken |= top[b] == j;
                    if (!taken && (best == (size_t)-1 || z[j] > z[best]))
                        best = j;
                }
                top[a] = best;
            }
            for (size_t j = 0; j < c; j++)
                st->total += t[j] != 0;
            for (size_t a = 0; a < k; a++)
                st->hits += t[top[a]] != 0;
        }
    }
    return m > 0 ? sum / m : 0.0;
}

double fl_loss_mse(const float *out, const float *target, size_t n, size_t d, float *grad)
{
    const double m = (double)n * (double)d;
    if (m == 0)
        return 0.0;
    const float k = (float)(2.0 / m);
    double sum = 0.0;
    for (size_t i = 0; i < n * d; i++) {
        float e = out[i] - target[i];
        sum += (double)e * e;
        if (grad)
            grad[i] = k * e;
    }
    return sum / m;
}
