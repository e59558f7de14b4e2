#include "common/data/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/log.h"

void fl_augment_image(const float *x, int C, int H, int W, int crop, int train, fl_rng_t *rng,
                      float *out)
{
    int top = (H - crop) / 2, left = (W - crop) / 2, flip = 0;
    if (train) {
        top = (int)fl_rng_below(rng, (uint64_t)(H - crop + 1));
        left = (int)fl_rng_below(rng, (uint64_t)(W - crop + 1));
        flip = (int)(fl_rng_u32(rng) & 1);
    }
    const size_t n = (size_t)C * crop * crop;
    double sum = 0.0;
    for (int c = 0; c < C; c++)
        for (int h = 0; h < crop; h++) {
            const float *row = x + ((size_t)c * H + top + h) * W + left;
            float *o = out + ((size_t)c * crop + h) * crop;
            for (int w = 0; w < crop; w++) {
                o[w] = row[flip ? crop - 1 - w : w];
                sum += o[w];
            }
        }
    const double mean = sum / (double)n;
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (out[i] - mean) * (out[i] - mean);
    double sd = sqrt(ss / (double)n);
    const double floor_sd = 1.0 / sqrt((double)n); /* a flat image must not divide by ~0 */
    if (sd < floor_sd)
        sd = floor_sd;
    const float m = (float)mean, inv = (float)(1.0 / sd);
    for (size_t i = 0; i < n; i++)
        out[i] = (out[i] - m) * inv;
}

int fl_augment_dataset(const fl_dataset_t *src, int crop, int train, fl_rng_t *rng,
                       fl_dataset_t *out)
{
    if (!src || !out || (train && !rng))
        return FL_EINVAL;
    if (src->ndim != 3 || crop < 1 || src->shape[1] < crop || src->shape[2] < crop) {
        FL_LOG_E("augment", "cannot crop %dx%d from examples of rank %d (%lldx%lld)", crop, crop,
                 src->ndim, src->ndim == 3 ? (long long)src->shape[1] : 0LL,
                 src->ndim == 3 ? (long long)src->shape[2] : 0LL);
        return FL_EINVAL;
    }
    const int C = (int)src->shape[0], H = (int)src->shape[1], W = (int)src->shape[2];
    const int64_t shape[3] = {C, crop, crop};
    const size_t ld = src->label_dim ? src->label_dim : 1;
    int rc = fl_dataset_alloc_labels(out, src->n, 3, shape, ld, src->num_classes);
    if (rc)
        return rc;
    for (size_t i = 0; i < src->n; i++)
        fl_augment_image(src->x + i * src->dim, C, H, W, crop, train, rng, out->x + i * out->dim);
    memcpy(out->y, src->y, src->n * ld * sizeof(int32_t));
    if (src->coarse) {
        out->coarse = malloc((src->n ? src->n : 1) * sizeof(int32_t));
        if (!out->coarse)
            goto nomem;
        memcpy(out->coarse, src->coarse, src->n * sizeof(int32_t));
        out->num_coarse = src->num_coarse;
    }
    if (src->group) {
        out->group = malloc((src->n ? src->n : 1) * sizeof(uint32_t));
        if (!out->group)
            goto nomem;
        memcpy(out->group, src->group, src->n * sizeof(uint32_t));
        /* Names are not copied: the groups were already split into clients. */
    }
    return 0;
nomem:
    fl_dataset_free(out);
    return FL_ENOMEM;
}
