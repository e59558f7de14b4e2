#include "server/dp.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include "common/base/error.h"
#include "common/base/log.h"

/* Uniforms are drawn in blocks: one DRBG call per block instead of per number. */
#define BLOCK 64

struct fl_dp_noise {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    uint64_t buf[BLOCK];
    size_t left;
};

int fl_dp_noise_create(fl_dp_noise_t **out)
{
    fl_dp_noise_t *g = calloc(1, sizeof *g);
    if (!g)
        return FL_ENOMEM;
    mbedtls_entropy_init(&g->entropy);
    mbedtls_ctr_drbg_init(&g->drbg);
    static const unsigned char pers[] = "fedopt dp-fedavg noise";
    int r = mbedtls_ctr_drbg_seed(&g->drbg, mbedtls_entropy_func, &g->entropy, pers, sizeof pers - 1);
    if (r) {
        FL_LOG_E("dp", "seeding CTR_DRBG from the OS entropy failed (mbedtls -0x%04x)", (unsigned)-r);
        fl_dp_noise_free(g);
        return FL_EIO;
    }
    *out = g;
    return 0;
}

void fl_dp_noise_free(fl_dp_noise_t *g)
{
    if (!g)
        return;
    mbedtls_ctr_drbg_free(&g->drbg);
    mbedtls_entropy_free(&g->entropy);
    memset(g->buf, 0, sizeof g->buf);
    free(g);
}

/* A uniform in (0, 1]: 53 random bits, offset by one so log() never sees 0. */
static int uniform(fl_dp_noise_t *g, double *u)
{
    if (!g->left) {
        if (mbedtls_ctr_drbg_random(&g->drbg, (unsigned char *)g->buf, sizeof g->buf))
            return FL_EIO;
        g->left = BLOCK;
    }
    uint64_t x = g->buf[--g->left] >> 11;
    *u = ((double)x + 1) * 0x1p-53;
    return 0;
}

int fl_dp_noise_add(fl_dp_noise_t *g, double *x, size_t n, double stddev)
{
    if (!g || (n && !x) || !(stddev >= 0) || !isfinite(stddev))
        return FL_EINVAL;
    if (stddev == 0)
        return 0;
    for (size_t i = 0; i < n; i += 2) {
        double u1, u2;
        if (uniform(g, &u1) || uniform(g, &u2))
            return FL_EIO;
        double r = stddev * sqrt(-2 * log(u1)), t = 2 * M_PI * u2;
        x[i] += r * cos(t);
        if (i + 1 < n)
            x[i + 1] += r * sin(t);
    }
    return 0;
}

int fl_dp_estimate(fl_dp_noise_t *g, double *sum, size_t n, double sigma, double clip, double denominator,
                   float *out)
{
    if (!(denominator > 0) || !(sigma >= 0) || !(clip >= 0) || (n && (!sum || !out)))
        return FL_EINVAL;
    int rc = fl_dp_noise_add(g, sum, n, sigma * clip);
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(sum[i] / denominator);
    return 0;
}

int fl_dp_update_multiplier(double z, double count_stddev, double *sigma_update)
{
    if (!sigma_update || !(z > 0) || !isfinite(z) || !(count_stddev > 0) || !isfinite(count_stddev))
        return FL_EINVAL;
    double rest = 1 / (z * z) - 1 / (4 * count_stddev * count_stddev);
    if (!(rest > 0))
        return FL_EINVAL;
    *sigma_update = 1 / sqrt(rest);
    return 0;
}
