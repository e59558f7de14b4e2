#include "client/attack.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/base/rng.h"

static int number(const char *s, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(x))
        return FL_EINVAL;
    *out = x;
    return 0;
}

int fl_attack_parse(const char *s, fl_attack_t *out)
{
    if (!s || !out)
        return FL_EINVAL;
    fl_attack_t a = {FL_ATTACK_NONE, 0};
    if (strncmp(s, "scale:", 6) == 0) {
        a.kind = FL_ATTACK_SCALE;
        if (number(s + 6, &a.param))
            return FL_EINVAL;
    } else if (strcmp(s, "signflip") == 0) {
        a.kind = FL_ATTACK_SIGNFLIP;
    } else if (strncmp(s, "gaussian:", 9) == 0) {
        a.kind = FL_ATTACK_GAUSSIAN;
        if (number(s + 9, &a.param) || a.param < 0)
            return FL_EINVAL;
    } else if (strcmp(s, "labelflip") == 0) {
        a.kind = FL_ATTACK_LABELFLIP;
    } else if (strcmp(s, "secagg-key") == 0) {
        a.kind = FL_ATTACK_SECAGG_KEY;
    } else if (strcmp(s, "secagg-share") == 0) {
        a.kind = FL_ATTACK_SECAGG_SHARE;
    } else if (strcmp(s, "secagg-replay") == 0) {
        a.kind = FL_ATTACK_SECAGG_REPLAY;
    } else {
        return FL_EINVAL;
    }
    *out = a;
    return 0;
}

int fl_attack_is_byzantine(uint64_t id, size_t clients, double rate)
{
    if (!(rate > 0))
        return 0;
    double k = floor(rate * (double)clients + 0.5);
    return (double)id < k;
}

void fl_attack_delta(const fl_attack_t *a, float *delta, size_t n, uint64_t seed, uint64_t id, uint64_t round)
{
    switch (a->kind) {
    case FL_ATTACK_SCALE:
        for (size_t i = 0; i < n; i++)
            delta[i] = (float)(a->param * delta[i]);
        break;
    case FL_ATTACK_SIGNFLIP:
        for (size_t i = 0; i < n; i++)
            delta[i] = -delta[i];
        break;
    case FL_ATTACK_GAUSSIAN: {
        fl_rng_t g;
        uint64_t ids[4] = {id, round, FL_RNG_CHAOS, 0xA77AC4};
        fl_rng_stream(&g, seed, ids, 4);
        for (size_t i = 0; i < n; i++)
            delta[i] = (float)(a->param * fl_rng_normal(&g));
        break;
    }
    default:
        break;
    }
}

int fl_attack_flip_labels(const fl_attack_t *a, fl_dataset_t *d)
{
    if (a->kind != FL_ATTACK_LABELFLIP || !d || d->label_dim != 1 || d->num_classes < 2 || d->multi_hot)
        return 0;
    for (size_t i = 0; i < d->n; i++)
        d->y[i] = d->num_classes - 1 - d->y[i];
    return 1;
}
