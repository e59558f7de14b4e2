#include "common/net/codec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"

/* Encoded values are the host's little-endian bytes (wire.c refuses to build
 * on a big-endian host for the same reason). */

static const char *const g_names[FL_CODEC_COUNT] = {"f32", "f16", "int8", "topk"};

const char *fl_codec_name(int codec)
{
    return codec >= 0 && codec < FL_CODEC_COUNT ? g_names[codec] : NULL;
}

int fl_codec_parse(const char *name, fl_codec_t *codec)
{
    if (!name || !codec)
        return FL_EINVAL;
    for (int i = 0; i < FL_CODEC_COUNT; i++)
        if (strcmp(name, g_names[i]) == 0) {
            *codec = (fl_codec_t)i;
            return 0;
        }
    return FL_EINVAL;
}

/* ---- binary16 ------------------------------------------------------------ */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t fl_codec_f16_from_float(float x)
{
    uint32_t u = f2u(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u); /* NaN */
    /* 65520 and above would round to infinity: an update saturates instead. */
    if (u >= 0x477ff000u)
        return (uint16_t)(sign | 0x7bffu);
    if (u < 0x38800000u) {
        /* Below the smallest normal half (2^-14): adding 0.5 aligns the
         * half's subnormal bits with the float's low mantissa bits, and the
         * float addition rounds them to nearest even. */
        float f = u2f(u) + 0.5f;
        return (uint16_t)(sign | (uint16_t)(f2u(f) - f2u(0.5f)));
    }
    /* Normal: rebias the exponent, round the 13 dropped bits to nearest even. */
    uint32_t odd = (u >> 13) & 1u;
    u += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    return (uint16_t)(sign | (uint16_t)(u >> 13));
}

float fl_codec_f16_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) {
        float v = ldexpf((float)mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (mant << 13));
    return u2f(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* ---- sizes -------------------------------------------------------------- */

size_t fl_codec_encoded_size(fl_codec_t codec, size_t n, size_t k)
{
    if (n == 0)
        return 0;
    switch (codec) {
    case FL_CODEC_F32:
        return n * 4;
    case FL_CODEC_F16:
        return n * 2;
    case FL_CODEC_INT8:
        return n + 4 * ((n + FL_CODEC_INT8_BLOCK - 1) / FL_CODEC_INT8_BLOCK);
    case FL_CODEC_TOPK:
        return k * 8;
    }
    return 0;
}

/* ---- error feedback ----------------------------------------------------- */

int fl_codec_ef_init(fl_codec_ef_t *ef, size_t n)
{
    if (!ef || n == 0)
        return FL_EINVAL;
    ef->residual = calloc(n, sizeof *ef->residual);
    ef->n = ef->residual ? n : 0;
    return ef->residual ? 0 : FL_ENOMEM;
}

void fl_codec_ef_free(fl_codec_ef_t *ef)
{
    if (!ef)
        return;
    free(ef->residual);
    ef->residual = NULL;
    ef->n = 0;
}

/* ---- encoding ----------------------------------------------------------- */

static void put_f32(uint8_t *p, float v) { memcpy(p, &v, 4); }

static float get_f32(const uint8_t *p)
{
    float v;
    memcpy(&v, p, 4);
    return v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void encode_int8(const float *x, size_t n, uint8_t *p)
{
    for (size_t b = 0; b < n; b += FL_CODEC_INT8_BLOCK) {
        size_t m = n - b < FL_CODEC_INT8_BLOCK ? n - b : FL_CODEC_INT8_BLOCK;
        float amax = 0.0f;
        for (size_t i = 0; i < m; i++)
            amax = fmaxf(amax, fabsf(x[b + i]));
        float s = amax / 127.0f;
        put_f32(p, s);
        p += 4;
        for (size_t i = 0; i < m; i++) {
            long q = s > 0.0f ? lrintf(x[b + i] / s) : 0;
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            *p++ = (uint8_t)(int8_t)q;
        }
    }
}

/* Descending order of magnitudes: selection by sorting is O(n log n), small
 * next to the local training that produced the update. */
static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static int encode_topk(const float *x, size_t n, size_t k, fl_codec_ef_t *ef, uint8_t *p)
{
    float *v = malloc(n * sizeof *v), *mag = malloc(n * sizeof *mag);
    int rc = FL_ENOMEM;
    if (!v || !mag)
        goto done;
    for (size_t i = 0; i < n; i++) {
        v[i] = ef ? x[i] + ef->residual[i] : x[i];
        if (!isfinite(v[i])) {
            rc = FL_ENONFINITE;
            goto done;
        }
        mag[i] = fabsf(v[i]);
    }
    qsort(mag, n, sizeof *mag, cmp_desc);
    float t = mag[k - 1];
    size_t above = 0;
    for (size_t i = 0; i < n; i++)
        above += fabsf(v[i]) > t;
    size_t ties = k - above; /* values equal to t to take, lowest index first */
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        int take = a > t || (a == t && ties > 0);
        if (take && a == t)
            ties--;
        if (take) {
            put_u32(p, (uint32_t)i);
            put_f32(p + 4, v[i]);
            p += 8;
        }
        if (ef)
            ef->residual[i] = take ? 0.0f : v[i];
    }
    rc = 0;
done:
    free(v);
    free(mag);
    return rc;
}

int fl_codec_encode(fl_codec_t codec, const float *x, size_t n, size_t k, fl_codec_ef_t *ef,
                    uint8_t **out, size_t *out_len)
{
    if (!out || !out_len || !x || n == 0 || !fl_codec_name((int)codec))
        return FL_EINVAL;
    *out = NULL;
    *out_len = 0;
    if (codec == FL_CODEC_TOPK &&
        (k == 0 || k > n / 2 || n > UINT32_MAX || (ef && (ef->n != n || !ef->residual))))
        return FL_EINVAL;
    if (codec != FL_CODEC_TOPK)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(x[i]))
                return FL_ENONFINITE;
    size_t len = fl_codec_encoded_size(codec, n, k);
    uint8_t *p = malloc(len);
    if (!p)
        return FL_ENOMEM;
    int rc = 0;
    switch (codec) {
    case FL_CODEC_F32:
        memcpy(p, x, len);
        break;
    case FL_CODEC_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = fl_codec_f16_from_float(x[i]);
            p[2 * i] = (uint8_t)h;
            p[2 * i + 1] = (uint8_t)(h >> 8);
        }
        break;
    case FL_CODEC_INT8:
        encode_int8(x, n, p);
        break;
    case FL_CODEC_TOPK:
        rc = encode_topk(x, n, k, ef, p);
        break;
    }
    if (rc < 0) {
        free(p);
        return rc;
    }
    *out = p;
    *out_len = len;
    return 0;
}

/* ---- decoding ----------------------------------------------------------- */

int fl_codec_decode_begin(fl_codec_decoder_t *d, fl_codec_t codec, size_t n, uint64_t total,
                          float *out)
{
    if (!d || !out || n == 0 || !fl_codec_name((int)codec))
        return FL_EINVAL;
    if (codec == FL_CODEC_TOPK) {
        if (total == 0 || total % 8 || total / 8 > n / 2 || n > UINT32_MAX)
            return FL_EINVAL;
    } else if (total != fl_codec_encoded_size(codec, n, 0)) {
        return FL_EINVAL;
    }
    memset(d, 0, sizeof *d);
    d->codec = codec;
    d->n = n;
    d->out = out;
    d->total = total;
    d->last_index = -1;
    if (codec == FL_CODEC_TOPK)
        memset(out, 0, n * sizeof *out);
    return 0;
}

/* Bytes of the next record: a value, an int8 block's scale, a top-k pair. */
static size_t record_size(const fl_codec_decoder_t *d)
{
    switch (d->codec) {
    case FL_CODEC_F32:
        return 4;
    case FL_CODEC_F16:
        return 2;
    case FL_CODEC_INT8:
        return d->block_left ? 1 : 4;
    case FL_CODEC_TOPK:
        return 8;
    }
    return 1;
}

static int put_value(fl_codec_decoder_t *d, size_t i, float v)
{
    if (!isfinite(v))
        return FL_ENONFINITE;
    d->out[i] = v;
    return 0;
}

static int record(fl_codec_decoder_t *d, const uint8_t *p)
{
    switch (d->codec) {
    case FL_CODEC_F32:
        return put_value(d, d->pos++, get_f32(p));
    case FL_CODEC_F16:
        return put_value(d, d->pos++, fl_codec_f16_to_float((uint16_t)(p[0] | p[1] << 8)));
    case FL_CODEC_INT8:
        if (!d->block_left) {
            float s = get_f32(p);
            if (!isfinite(s) || s < 0.0f)
                return FL_EFORMAT;
            d->scale = s;
            d->block_left = d->n - d->pos < FL_CODEC_INT8_BLOCK ? d->n - d->pos : FL_CODEC_INT8_BLOCK;
            return 0;
        }
        if ((int8_t)p[0] == -128)
            return FL_EFORMAT;
        d->block_left--;
        return put_value(d, d->pos++, (float)(int8_t)p[0] * d->scale);
    case FL_CODEC_TOPK: {
        uint32_t idx = get_u32(p);
        if ((int64_t)idx <= d->last_index || idx >= d->n)
            return FL_EFORMAT;
        d->last_index = idx;
        d->pos++;
        return put_value(d, idx, get_f32(p + 4));
    }
    }
    return FL_EINVAL;
}

int fl_codec_decode_feed(fl_codec_decoder_t *d, const uint8_t *p, size_t len)
{
    if (!d || (!p && len))
        return FL_EINVAL;
    if (len > d->total - d->bytes)
        return FL_ETOOBIG;
    d->bytes += len;
    while (len > 0) {
        size_t rs = record_size(d);
        if (d->carry_len || len < rs) {
            size_t take = rs - d->carry_len < len ? rs - d->carry_len : len;
            memcpy(d->carry + d->carry_len, p, take);
            d->carry_len += take;
            p += take;
            len -= take;
            if (d->carry_len < rs)
                break;
            d->carry_len = 0;
            int rc = record(d, d->carry);
            if (rc < 0)
                return rc;
            continue;
        }
        int rc = record(d, p);
        if (rc < 0)
            return rc;
        p += rs;
        len -= rs;
    }
    return 0;
}

int fl_codec_decode_end(const fl_codec_decoder_t *d)
{
    if (!d)
        return FL_EINVAL;
    return d->bytes == d->total && d->carry_len == 0 ? 0 : FL_ETRUNCATED;
}
