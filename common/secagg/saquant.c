/* quant: see quant.h. */
#include "common/secagg/saquant.h"

#include <math.h>
#include <string.h>

#include "common/base/error.h"

#define INT32_LIM 2147483647.0

int fl_saquant_init(fl_saquant_t *q, uint32_t n, double clip, uint32_t max_weight)
{
    if (!q || n == 0 || !(clip > 0) || !isfinite(clip) || max_weight == 0)
        return FL_EINVAL;
    memset(q, 0, sizeof *q);
    if ((double)n * max_weight > INT32_LIM)
        return FL_ERANGE;
    /* n * (scale * W * c + 1/2) <= 2^31 - 1 */
    double scale = (INT32_LIM / n - 0.5) / ((double)max_weight * clip);
    if (!(scale >= 1.0))
        return FL_ERANGE;
    q->clip = clip;
    q->scale = scale;
    q->max_weight = max_weight;
    q->n = n;
    return 0;
}

uint32_t fl_saquant_weight(const fl_saquant_t *q, double w)
{
    if (!(w > 0))
        return 0;
    if (w > q->max_weight)
        w = q->max_weight;
    return (uint32_t)llround(w);
}

int fl_saquant_encode(const fl_saquant_t *q, const float *delta, size_t p, double w, uint32_t *out)
{
    if (!q || (!delta && p) || !out)
        return FL_EINVAL;
    if (!isfinite(w) || w < 0)
        return FL_ENONFINITE;
    for (size_t j = 0; j < p; j++)
        if (!isfinite(delta[j]))
            return FL_ENONFINITE;
    uint32_t wq = fl_saquant_weight(q, w);
    double f = q->scale * wq;
    for (size_t j = 0; j < p; j++) {
        double d = delta[j];
        if (d > q->clip)
            d = q->clip;
        else if (d < -q->clip)
            d = -q->clip;
        int64_t v = llround(f * d);
        out[j] = (uint32_t)v; /* two's complement modulo 2^32 */
    }
    out[p] = wq;
    return 0;
}

static int32_t as_i32(uint32_t v)
{
    return v < 0x80000000u ? (int32_t)v : -(int32_t)(0xffffffffu - v) - 1;
}

int fl_saquant_decode(const fl_saquant_t *q, const uint32_t *sum, size_t p, float *mean,
                      double *weight)
{
    if (!q || !sum || (!mean && p))
        return FL_EINVAL;
    double wsum = (double)as_i32(sum[p]);
    if (!(wsum > 0))
        return FL_EEMPTY;
    double f = 1.0 / (q->scale * wsum);
    for (size_t j = 0; j < p; j++)
        mean[j] = (float)((double)as_i32(sum[j]) * f);
    if (weight)
        *weight = wsum;
    return 0;
}
