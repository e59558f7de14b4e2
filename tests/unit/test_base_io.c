/* common/base's I/O helpers: the JSON writer (fl_json), reading a whole file
 * (fl_file_read_all) and the CRC-32 (fl_crc32: libdeflate's, or zlib's crc32_z).
 *
 * - JSON: strings escape '"', '\' and every control character (as \u00XX),
 *   and pass UTF-8 through; commas between values and members at any depth;
 *   integers exact at their limits; doubles read back exactly at 17 digits
 *   (0), with the digits asked for otherwise, and NaN/Inf as null; the FILE
 *   writer writes what the buffer writer builds; nesting past the limit and
 *   a bad FILE are errors that stick;
 * - files: contents and length exact (binary, NULs included) plus a
 *   terminating NUL; an empty file gives "" and 0; a missing file, a
 *   directory and an unreadable file are FL_EIO; more than max bytes is
 *   FL_ETOOBIG (exactly max is accepted); a pipe reads to its end;
 * - CRC-32: the standard check value of "123456789", continuation in pieces
 *   equals one pass, and an empty continuation leaves the CRC as it was;
 *   zlib's crc32_z's values at every length to 300 and every start
 *   alignment, and over a few MiB in uneven pieces (the build's CRC may be
 *   libdeflate's, whose vector paths depend on length and alignment);
 * - growable bytes (fl_bytes_*): appends and prepends keep every byte in
 *   order across many reallocations, consume drops from the front (all of
 *   it past the end), a size that would overflow is FL_ENOMEM and leaves
 *   the buffer as it was, bad arguments are FL_EINVAL, free accepts NULL and
 *   an empty buffer holds no memory. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "common/base/bytes.h"
#include "common/base/error.h"
#include "common/base/file.h"
#include "common/base/json.h"
#include "common/base/log.h"

static char *done(fl_json_t *j)
{
    char *out = NULL;
    assert_int_equal(fl_json_finish(j, &out, NULL), 0);
    assert_non_null(out);
    return out;
}

static void test_json_strings(void **state)
{
    (void)state;
    fl_json_t j;
    fl_json_init_buf(&j);
    fl_json_arr_begin(&j);
    fl_json_str(&j, "plain");
    fl_json_str(&j, "quote \" backslash \\ slash /");
    fl_json_str(&j, "\n\t\r\b\f\x01\x1f end");
    fl_json_str(&j, "\x7f caf\xc3\xa9 \xe2\x82\xac");
    fl_json_strn(&j, "a\0b", 3);
    fl_json_str(&j, "");
    fl_json_str(&j, NULL);
    fl_json_arr_end(&j);
    char *s = done(&j);
    assert_string_equal(s, "[\"plain\","
                           "\"quote \\\" backslash \\\\ slash /\","
                           "\"\\u000a\\u0009\\u000d\\u0008\\u000c\\u0001\\u001f end\","
                           "\"\x7f caf\xc3\xa9 \xe2\x82\xac\","
                           "\"a\\u0000b\","
                           "\"\","
                           "null]");
    free(s);
}

static void test_json_structure(void **state)
{
    (void)state;
    fl_json_t j;
    fl_json_init_buf(&j);
    fl_json_obj_begin(&j);
    fl_json_key(&j, "a");
    fl_json_arr_begin(&j);
    fl_json_arr_end(&j);
    fl_json_key(&j, "b\"");
    fl_json_obj_begin(&j);
    fl_json_obj_end(&j);
    fl_json_key(&j, "c");
    fl_json_arr_begin(&j);
    fl_json_i64(&j, 1);
    fl_json_obj_begin(&j);
    fl_json_key(&j, "d");
    fl_json_bool(&j, 1);
    fl_json_key(&j, "e");
    fl_json_bool(&j, 0);
    fl_json_obj_end(&j);
    fl_json_arr_begin(&j);
    fl_json_null(&j);
    fl_json_raw(&j, "[1, 2]");
    fl_json_arr_end(&j);
    fl_json_arr_end(&j);
    fl_json_key(&j, "f");
    fl_json_i64(&j, INT64_MIN);
    fl_json_key(&j, "g");
    fl_json_u64(&j, UINT64_MAX);
    fl_json_obj_end(&j);
    char *s = done(&j);
    assert_string_equal(s, "{\"a\":[],\"b\\\"\":{},\"c\":[1,{\"d\":true,\"e\":false},[null,[1, 2]]],"
                           "\"f\":-9223372036854775808,\"g\":18446744073709551615}");
    free(s);

    /* Nothing written: the empty text. */
    fl_json_init_buf(&j);
    s = done(&j);
    assert_string_equal(s, "");
    free(s);
}

static void test_json_numbers(void **state)
{
    (void)state;
    const double v[] = {0.1, 1.0 / 3, -2.5e-300, 1e300, 123456789.0123456789, 4.9406564584124654e-324, -0.0};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        fl_json_t j;
        fl_json_init_buf(&j);
        fl_json_double(&j, v[i], 0);
        char *s = done(&j);
        double back = strtod(s, NULL);
        assert_memory_equal(&back, &v[i], sizeof back); /* bit for bit, the sign of -0 too */
        free(s);
    }
    fl_json_t j;
    fl_json_init_buf(&j);
    fl_json_arr_begin(&j);
    fl_json_double(&j, 0.1234567891, 6);
    fl_json_double(&j, 2.0, 6);
    fl_json_fixed(&j, 2.0 / 3, 3);
    fl_json_fixed(&j, 1e20, 1);
    /* JSON has no NaN or infinity: null, whatever the precision. */
    fl_json_double(&j, NAN, 0);
    fl_json_double(&j, INFINITY, 6);
    fl_json_fixed(&j, -INFINITY, 3);
    fl_json_fixed(&j, NAN, 2);
    fl_json_arr_end(&j);
    char *s = done(&j);
    assert_string_equal(s, "[0.123457,2,0.667,100000000000000000000.0,null,null,null,null]");
    free(s);
}

static void test_json_file_and_errors(void **state)
{
    (void)state;
    char *mem = NULL;
    size_t memlen = 0;
    FILE *f = open_memstream(&mem, &memlen);
    assert_non_null(f);
    fl_json_t j, b;
    fl_json_init_file(&j, f);
    fl_json_init_buf(&b);
    fl_json_t *w[2] = {&j, &b};
    for (int k = 0; k < 2; k++) {
        fl_json_obj_begin(w[k]);
        fl_json_key(w[k], "x\n");
        fl_json_double(w[k], 0.5, 0);
        fl_json_key(w[k], "y");
        fl_json_str(w[k], "\"");
        fl_json_obj_end(w[k]);
    }
    char *out = (char *)1;
    assert_int_equal(fl_json_finish(&j, &out, NULL), 0);
    assert_null(out); /* a FILE writer hands back no text */
    fclose(f);
    char *s = done(&b);
    assert_string_equal(mem, s);
    assert_string_equal(s, "{\"x\\u000a\":0.5,\"y\":\"\\\"\"}");
    free(s);
    free(mem);

    /* Deeper than the limit: an error that sticks, and no text. */
    fl_json_init_buf(&j);
    for (int d = 0; d <= FL_JSON_MAX_DEPTH; d++)
        fl_json_arr_begin(&j);
    assert_int_equal(fl_json_error(&j), FL_ERANGE);
    fl_json_str(&j, "ignored");
    assert_int_equal(fl_json_finish(&j, &out, NULL), FL_ERANGE);
    assert_null(out);

    /* No FILE; a FILE that cannot be written. */
    fl_json_init_file(&j, NULL);
    assert_int_equal(fl_json_error(&j), FL_EINVAL);
    FILE *ro = fopen("/dev/null", "r");
    assert_non_null(ro);
    fl_json_init_file(&j, ro);
    fl_json_str(&j, "x");
    fl_json_str(&j, "y"); /* nothing more after the first failure */
    assert_int_equal(fl_json_finish(&j, NULL, NULL), FL_EIO);
    fclose(ro);
    FILE *full = fopen("/dev/full", "w");
    if (full) {
        setvbuf(full, NULL, _IONBF, 0);
        fl_json_init_file(&j, full);
        fl_json_str(&j, "x");
        assert_int_equal(fl_json_finish(&j, NULL, NULL), FL_EIO);
        fclose(full);
    }
}

/* ---- files ---------------------------------------------------------------- */

static char dir[] = "/tmp/fedopt-test-base-io-XXXXXX";

static const char *path_in(const char *name)
{
    static char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void test_file_read_all(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(dir));
    fl_log_set_level(FL_LOG_ERROR);
    FILE *devnull = fopen("/dev/null", "w");
    fl_log_set_sink(devnull); /* the refusals' log lines are expected */
    char *b = NULL;
    size_t n = 99;

    /* Binary contents with NULs, bigger than one read. */
    size_t big = 200000;
    unsigned char *want = malloc(big);
    assert_non_null(want);
    for (size_t i = 0; i < big; i++)
        want[i] = (unsigned char)(i * 7 + i / 256);
    want[10] = 0;
    write_bytes(path_in("bin"), want, big);
    assert_int_equal(fl_file_read_all(path_in("bin"), big, &b, &n), 0);
    assert_int_equal(n, big);
    assert_memory_equal(b, want, big);
    assert_int_equal(b[big], 0);
    free(b);
    /* One byte under the size: too big, and nothing handed back. */
    b = (char *)1;
    assert_int_equal(fl_file_read_all(path_in("bin"), big - 1, &b, &n), FL_ETOOBIG);
    assert_null(b);
    assert_int_equal(n, 0);

    /* Empty. */
    write_bytes(path_in("empty"), "", 0);
    assert_int_equal(fl_file_read_all(path_in("empty"), 0, &b, &n), 0);
    assert_int_equal(n, 0);
    assert_string_equal(b, "");
    free(b);

    /* Text. */
    write_bytes(path_in("text"), "hello\n", 6);
    assert_int_equal(fl_file_read_all(path_in("text"), 100, &b, &n), 0);
    assert_int_equal(n, 6);
    assert_string_equal(b, "hello\n");
    free(b);

    /* Missing, a directory. */
    assert_int_equal(fl_file_read_all(path_in("missing"), 100, &b, &n), FL_EIO);
    assert_null(b);
    assert_int_equal(fl_file_read_all(dir, 100, &b, &n), FL_EIO);
    assert_null(b);
    assert_int_equal(fl_file_read_all(NULL, 100, &b, &n), FL_EINVAL);
    assert_int_equal(fl_file_read_all(path_in("text"), 100, NULL, &n), FL_EINVAL);

    /* Unreadable (root reads anything: then only the other cases count). */
    write_bytes(path_in("secret"), "x", 1);
    assert_int_equal(chmod(path_in("secret"), 0), 0);
    if (geteuid() != 0) {
        assert_int_equal(fl_file_read_all(path_in("secret"), 100, &b, &n), FL_EIO);
        assert_null(b);
    }

    /* A pipe: read to its end, the limit still holds. */
    FILE *p = popen("head -c 100000 /dev/zero", "r");
    assert_non_null(p);
    char fdpath[64];
    snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fileno(p));
    assert_int_equal(fl_file_read_all(fdpath, 100000, &b, &n), 0);
    assert_int_equal(n, 100000);
    assert_int_equal(b[99999], 0);
    free(b);
    pclose(p);
    p = popen("head -c 5000 /dev/zero", "r");
    assert_non_null(p);
    snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fileno(p));
    assert_int_equal(fl_file_read_all(fdpath, 4999, &b, &n), FL_ETOOBIG);
    pclose(p);

    free(want);
    unlink(path_in("bin"));
    unlink(path_in("empty"));
    unlink(path_in("text"));
    unlink(path_in("secret"));
    rmdir(dir);
    fl_log_set_sink(NULL);
    if (devnull)
        fclose(devnull);
}

/* ---- CRC-32 ---------------------------------------------------------------- */

static void test_crc32(void **state)
{
    (void)state;
    /* The check value of CRC-32/ISO-HDLC (zlib's, PNG's, gzip's). */
    assert_int_equal(fl_crc32(0, "123456789", 9), 0xCBF43926u);
    unsigned char b[1000];
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (unsigned char)(i * 31 + 5);
    uint32_t whole = fl_crc32(0, b, sizeof b);
    uint32_t c = fl_crc32(0, b, 1);
    c = fl_crc32(c, b + 1, 499);
    c = fl_crc32(c, b + 500, 0);
    c = fl_crc32(c, NULL, 0); /* nothing added, even from NULL */
    c = fl_crc32(c, b + 500, 500);
    assert_int_equal(c, whole);
    assert_int_equal(fl_crc32(0, NULL, 0), 0);

    /* The same values as zlib's at every short length and alignment, and
     * continued from a nonzero CRC. */
    for (size_t off = 0; off < 64; off++)
        for (size_t len = 0; len <= 300; len++) {
            uLong z = crc32_z(0, b + off, len);
            assert_int_equal(fl_crc32(0, b + off, len), (uint32_t)z);
            assert_int_equal(fl_crc32(0x12345678u, b + off, len), (uint32_t)crc32_z(0x12345678u, b + off, len));
        }
    /* A few MiB in uneven pieces. */
    size_t big = (3u << 20) + 77;
    unsigned char *m = malloc(big);
    assert_non_null(m);
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        m[i] = (unsigned char)x;
    }
    uLong zw = crc32_z(0, m, big);
    assert_int_equal(fl_crc32(0, m, big), (uint32_t)zw);
    uint32_t p = 0;
    for (size_t at = 0, step = 1; at < big; at += step, step = step * 3 + 1) {
        size_t k = big - at < step ? big - at : step;
        p = fl_crc32(p, m + at, k);
    }
    assert_int_equal(p, (uint32_t)zw);
    free(m);
}

static void test_bytes(void **state)
{
    (void)state;
    fl_bytes_t b = {0};
    /* 10,000 appends of 1..7 bytes: the content is the running counter. */
    size_t total = 0;
    uint8_t next = 0;
    for (int i = 0; i < 10000; i++) {
        uint8_t piece[7];
        size_t n = 1 + (size_t)(i % 7);
        for (size_t k = 0; k < n; k++)
            piece[k] = next++;
        assert_int_equal(fl_bytes_append(&b, piece, n), 0);
        total += n;
    }
    assert_int_equal(b.len, total);
    assert_true(b.cap >= b.len);
    for (size_t k = 0; k < total; k++)
        assert_int_equal(b.data[k], (uint8_t)k);
    /* consume from the front, then put the bytes back with prepend */
    uint8_t head[100];
    memcpy(head, b.data, sizeof head);
    fl_bytes_consume(&b, 100);
    assert_int_equal(b.len, total - 100);
    assert_int_equal(b.data[0], 100);
    assert_int_equal(fl_bytes_prepend(&b, head, sizeof head), 0);
    assert_int_equal(b.len, total);
    for (size_t k = 0; k < total; k++)
        assert_int_equal(b.data[k], (uint8_t)k);
    /* overflow: refused, nothing changed */
    uint8_t *data = b.data;
    size_t cap = b.cap;
    assert_int_equal(fl_bytes_reserve(&b, SIZE_MAX), FL_ENOMEM);
    assert_int_equal(fl_bytes_reserve(&b, SIZE_MAX - b.len + 1), FL_ENOMEM);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.len, total);
    /* nothing to add, bad arguments */
    assert_int_equal(fl_bytes_append(&b, NULL, 0), 0);
    assert_int_equal(fl_bytes_prepend(&b, NULL, 0), 0);
    assert_int_equal(b.len, total);
    assert_int_equal(fl_bytes_append(&b, NULL, 1), FL_EINVAL);
    assert_int_equal(fl_bytes_append(NULL, "x", 1), FL_EINVAL);
    assert_int_equal(fl_bytes_reserve(NULL, 1), FL_EINVAL);
    /* consume past the end empties it; the memory stays for reuse */
    fl_bytes_consume(&b, total + 5);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap);
    fl_bytes_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    fl_bytes_free(NULL);
    fl_bytes_consume(NULL, 3);
    /* prepend into an empty buffer */
    assert_int_equal(fl_bytes_prepend(&b, "abc", 3), 0);
    assert_int_equal(fl_bytes_prepend(&b, "xy", 2), 0);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "xyabc", 5);
    fl_bytes_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_strings),         cmocka_unit_test(test_json_structure),
        cmocka_unit_test(test_json_numbers),         cmocka_unit_test(test_json_file_and_errors),
        cmocka_unit_test(test_file_read_all),        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
