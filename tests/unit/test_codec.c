/* test_codec: the update codecs against hand-computed values: binary16
 * rounding of known numbers, int8 scales per block and the round-trip bound,
 * top-k selection with ties and error feedback across rounds, and the
 * streaming decoder fed in pieces of every size (records split across
 * chunks), plus its refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/net/codec.h"

static void test_names(void **st)
{
    (void)st;
    fl_codec_t c;
    assert_int_equal(fl_codec_parse("int8", &c), 0);
    assert_int_equal(c, FL_CODEC_INT8);
    assert_int_equal(fl_codec_parse("topk", &c), 0);
    assert_int_equal(c, FL_CODEC_TOPK);
    assert_int_equal(fl_codec_parse("fp17", &c), FL_EINVAL);
    assert_string_equal(fl_codec_name(FL_CODEC_F16), "f16");
    assert_null(fl_codec_name(4));
    assert_null(fl_codec_name(-1));
}

static void test_f16_known(void **st)
{
    (void)st;
    assert_int_equal(fl_codec_f16_from_float(1.0f), 0x3c00);
    assert_int_equal(fl_codec_f16_from_float(-2.0f), 0xc000);
    assert_int_equal(fl_codec_f16_from_float(0.0f), 0x0000);
    assert_int_equal(fl_codec_f16_from_float(-0.0f), 0x8000);
    assert_int_equal(fl_codec_f16_from_float(65504.0f), 0x7bff);
    assert_int_equal(fl_codec_f16_from_float(1.0f / 3.0f), 0x3555);
    assert_int_equal(fl_codec_f16_from_float(0.1f), 0x2e66);
    /* ties go to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 */
    assert_int_equal(fl_codec_f16_from_float(1.0f + ldexpf(1, -11)), 0x3c00);
    assert_int_equal(fl_codec_f16_from_float(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
    /* subnormals: 2^-24 is the smallest; 2^-25 ties to 0; 1.5 * 2^-24 to 2 */
    assert_int_equal(fl_codec_f16_from_float(ldexpf(1, -24)), 0x0001);
    assert_int_equal(fl_codec_f16_from_float(ldexpf(1, -25)), 0x0000);
    assert_int_equal(fl_codec_f16_from_float(1.5f * ldexpf(1, -24)), 0x0002);
    assert_int_equal(fl_codec_f16_from_float(ldexpf(1, -14)), 0x0400);
    /* saturation instead of infinity */
    assert_int_equal(fl_codec_f16_from_float(65520.0f), 0x7bff);
    assert_int_equal(fl_codec_f16_from_float(-1e9f), 0xfbff);
    assert_int_equal(fl_codec_f16_from_float(65519.0f), 0x7bff);
    assert_true(isnan(fl_codec_f16_to_float(fl_codec_f16_from_float(NAN))));
    /* back: exact */
    assert_true(fl_codec_f16_to_float(0x3555) == 0.333251953125f);
    assert_true(fl_codec_f16_to_float(0x0001) == ldexpf(1, -24));
    assert_true(fl_codec_f16_to_float(0xfbff) == -65504.0f);
    assert_true(isinf(fl_codec_f16_to_float(0x7c00)));
    /* every finite half converts back to itself */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00)
            continue;
        assert_int_equal(fl_codec_f16_from_float(fl_codec_f16_to_float((uint16_t)h)), h);
    }
}

/* Decodes buf (len bytes of n values) feeding pieces of `piece` bytes. */
static int decode(fl_codec_t c, const uint8_t *buf, size_t len, size_t n, size_t piece, float *out)
{
    fl_codec_decoder_t d;
    int rc = fl_codec_decode_begin(&d, c, n, len, out);
    for (size_t o = 0; rc == 0 && o < len; o += piece)
        rc = fl_codec_decode_feed(&d, buf + o, len - o < piece ? len - o : piece);
    return rc ? rc : fl_codec_decode_end(&d);
}

static void test_f16_roundtrip(void **st)
{
    (void)st;
    enum { N = 1000 };
    float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = sinf((float)i) * (float)(i % 7) * 0.01f;
    uint8_t *b;
    size_t len;
    assert_int_equal(fl_codec_encode(FL_CODEC_F16, x, N, 0, NULL, &b, &len), 0);
    assert_int_equal(len, 2 * N);
    for (size_t piece = 1; piece <= 7; piece += 2) {
        assert_int_equal(decode(FL_CODEC_F16, b, len, N, piece, y), 0);
        for (int i = 0; i < N; i++) {
            /* round to nearest: within half an ulp of binary16 (2^-11 relative)
             * for normals, 2^-25 absolute for subnormals */
            float tol = fmaxf(fabsf(x[i]) * ldexpf(1, -11), ldexpf(1, -25));
            assert_true(fabsf(y[i] - x[i]) <= tol);
        }
    }
    free(b);
}

static void test_int8_blocks(void **st)
{
    (void)st;
    /* two blocks: the first has max |x| 127 (scale 1), the second (3 values)
     * max |x| 0.5 (scale 0.5/127) */
    enum { N = FL_CODEC_INT8_BLOCK + 3 };
    float *x = calloc(N, sizeof *x), *y = calloc(N, sizeof *y);
    x[0] = 127.0f;
    x[1] = -3.4f;  /* -> -3 */
    x[2] = 2.5f;   /* -> 2 (nearest even) */
    x[3] = -127.0f;
    x[FL_CODEC_INT8_BLOCK] = 0.5f;
    x[FL_CODEC_INT8_BLOCK + 1] = -0.2f; /* -> round(-50.8) = -51 */
    x[FL_CODEC_INT8_BLOCK + 2] = 0.0f;
    uint8_t *b;
    size_t len;
    assert_int_equal(fl_codec_encode(FL_CODEC_INT8, x, N, 0, NULL, &b, &len), 0);
    assert_int_equal(len, N + 8);
    float s0, s1;
    memcpy(&s0, b, 4);
    memcpy(&s1, b + 4 + FL_CODEC_INT8_BLOCK, 4);
    assert_true(s0 == 1.0f);
    assert_true(s1 == 0.5f / 127.0f);
    assert_int_equal((int8_t)b[4], 127);
    assert_int_equal((int8_t)b[5], -3);
    assert_int_equal((int8_t)b[6], 2);
    assert_int_equal((int8_t)b[7], -127);
    assert_int_equal((int8_t)b[8 + FL_CODEC_INT8_BLOCK], 127);
    assert_int_equal((int8_t)b[9 + FL_CODEC_INT8_BLOCK], -51);
    assert_int_equal((int8_t)b[10 + FL_CODEC_INT8_BLOCK], 0);
    assert_int_equal(decode(FL_CODEC_INT8, b, len, N, 3, y), 0);
    assert_true(y[1] == -3.0f);
    assert_true(y[FL_CODEC_INT8_BLOCK + 1] == -51.0f * s1);
    for (int i = 0; i < N; i++) /* within half a step of the value's block */
        assert_true(fabsf(y[i] - x[i]) <= 0.5f * (i < (int)FL_CODEC_INT8_BLOCK ? s0 : s1) * 1.0001f);
    free(b);

    /* a block of zeros: scale 0, decodes to zeros */
    memset(x, 0, N * sizeof *x);
    assert_int_equal(fl_codec_encode(FL_CODEC_INT8, x, N, 0, NULL, &b, &len), 0);
    assert_int_equal(decode(FL_CODEC_INT8, b, len, N, len, y), 0);
    for (int i = 0; i < N; i++)
        assert_true(y[i] == 0.0f);
    /* refusals: a negative scale, a -128 value */
    float neg = -1.0f;
    memcpy(b, &neg, 4);
    assert_int_equal(decode(FL_CODEC_INT8, b, len, N, 100, y), FL_EFORMAT);
    neg = 1.0f;
    memcpy(b, &neg, 4);
    b[10] = 0x80;
    assert_int_equal(decode(FL_CODEC_INT8, b, len, N, 100, y), FL_EFORMAT);
    free(b);
    free(x);
    free(y);
}

static void test_topk_select(void **st)
{
    (void)st;
    float x[8] = {0.1f, -5.0f, 2.0f, 0.0f, 2.0f, -2.0f, 3.0f, 0.5f};
    float y[8];
    uint8_t *b;
    size_t len;
    /* k = 3: -5 (index 1), 3 (index 6), then the tie among |2| at 2, 4, 5: index 2 */
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, x, 8, 3, NULL, &b, &len), 0);
    assert_int_equal(len, 24);
    uint32_t idx[3];
    for (int i = 0; i < 3; i++)
        memcpy(&idx[i], b + 8 * i, 4);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 2);
    assert_int_equal(idx[2], 6);
    assert_int_equal(decode(FL_CODEC_TOPK, b, len, 8, 5, y), 0);
    const float want[8] = {0, -5.0f, 2.0f, 0, 0, 0, 3.0f, 0};
    assert_memory_equal(y, want, sizeof want);
    free(b);
    /* k beyond n/2 is refused */
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, x, 8, 5, NULL, &b, &len), FL_EINVAL);
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, x, 8, 0, NULL, &b, &len), FL_EINVAL);
}

static void test_topk_error_feedback(void **st)
{
    (void)st;
    fl_codec_ef_t ef;
    assert_int_equal(fl_codec_ef_init(&ef, 4), 0);
    float x[4] = {1.0f, 0.6f, -0.7f, 0.2f}, y[4];
    uint8_t *b;
    size_t len;
    /* round 1: sends index 0 (1.0); residual {0, 0.6, -0.7, 0.2} */
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, x, 4, 1, &ef, &b, &len), 0);
    assert_int_equal(decode(FL_CODEC_TOPK, b, len, 4, 8, y), 0);
    assert_true(y[0] == 1.0f && y[1] == 0 && y[2] == 0 && y[3] == 0);
    assert_true(ef.residual[0] == 0.0f && ef.residual[1] == 0.6f && ef.residual[2] == -0.7f &&
                ef.residual[3] == 0.2f);
    free(b);
    /* round 2, same x: x + residual = {1, 1.2, -1.4, 0.4}: sends index 2 (-1.4) */
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, x, 4, 1, &ef, &b, &len), 0);
    assert_int_equal(decode(FL_CODEC_TOPK, b, len, 4, 3, y), 0);
    assert_true(y[2] == -1.4f && y[0] == 0 && y[1] == 0 && y[3] == 0);
    assert_true(ef.residual[0] == 1.0f && ef.residual[1] == 1.2f && ef.residual[2] == 0.0f &&
                ef.residual[3] == 0.4f);
    free(b);
    /* what was sent plus what is left is everything, every round */
    /* a residual of the wrong size is refused */
    fl_codec_ef_t small;
    assert_int_equal(fl_codec_ef_init(&small, 3), 0);
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, x, 4, 1, &small, &b, &len), FL_EINVAL);
    fl_codec_ef_free(&small);
    fl_codec_ef_free(&ef);
    fl_codec_ef_free(NULL);
}

static void test_decoder_refusals(void **st)
{
    (void)st;
    float y[8];
    fl_codec_decoder_t d;
    /* sizes that cannot be */
    assert_int_equal(fl_codec_decode_begin(&d, FL_CODEC_F16, 8, 15, y), FL_EINVAL);
    assert_int_equal(fl_codec_decode_begin(&d, FL_CODEC_TOPK, 8, 12, y), FL_EINVAL);
    assert_int_equal(fl_codec_decode_begin(&d, FL_CODEC_TOPK, 8, 40, y), FL_EINVAL);
    assert_int_equal(fl_codec_decode_begin(&d, 9, 8, 32, y), FL_EINVAL);
    /* indices out of order, repeated, or past n */
    uint8_t rec[16] = {0};
    rec[0] = 3;
    rec[8] = 3;
    assert_int_equal(decode(FL_CODEC_TOPK, rec, 16, 8, 16, y), FL_EFORMAT);
    rec[8] = 2;
    assert_int_equal(decode(FL_CODEC_TOPK, rec, 16, 8, 16, y), FL_EFORMAT);
    rec[8] = 8;
    assert_int_equal(decode(FL_CODEC_TOPK, rec, 16, 8, 16, y), FL_EFORMAT);
    rec[8] = 7;
    assert_int_equal(decode(FL_CODEC_TOPK, rec, 16, 8, 16, y), 0);
    /* a non-finite value */
    float inf = INFINITY;
    memcpy(rec + 12, &inf, 4);
    assert_int_equal(decode(FL_CODEC_TOPK, rec, 16, 8, 16, y), FL_ENONFINITE);
    uint16_t hinf[8] = {0x3c00, 0x7c00};
    assert_int_equal(decode(FL_CODEC_F16, (uint8_t *)hinf, 16, 8, 16, y), FL_ENONFINITE);
    /* too many bytes, too few */
    assert_int_equal(fl_codec_decode_begin(&d, FL_CODEC_F16, 2, 4, y), 0);
    assert_int_equal(fl_codec_decode_feed(&d, rec, 3), 0);
    assert_int_equal(fl_codec_decode_end(&d), FL_ETRUNCATED);
    assert_int_equal(fl_codec_decode_feed(&d, rec, 2), FL_ETOOBIG);
    /* the encoder refuses non-finite input */
    float bad[2] = {1.0f, NAN};
    uint8_t *b;
    size_t len;
    assert_int_equal(fl_codec_encode(FL_CODEC_INT8, bad, 2, 0, NULL, &b, &len), FL_ENONFINITE);
    assert_int_equal(fl_codec_encode(FL_CODEC_TOPK, bad, 2, 1, NULL, &b, &len), FL_ENONFINITE);
    /* f32 is the identity */
    float x[3] = {1.5f, -2.25f, 1e-30f}, z[3];
    assert_int_equal(fl_codec_encode(FL_CODEC_F32, x, 3, 0, NULL, &b, &len), 0);
    assert_int_equal(decode(FL_CODEC_F32, b, len, 3, 5, z), 0);
    assert_memory_equal(x, z, sizeof x);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_f16_known),
        cmocka_unit_test(test_f16_roundtrip),
        cmocka_unit_test(test_int8_blocks),
        cmocka_unit_test(test_topk_select),
        cmocka_unit_test(test_topk_error_feedback),
        cmocka_unit_test(test_decoder_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
