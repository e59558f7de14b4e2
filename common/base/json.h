/* json: the one JSON writer of fedopt (command --json outputs, the server's
 * config record, safetensors headers).
 *
 * A writer appends compact JSON (no spaces, no newlines) either to a FILE or
 * to a growing NUL-terminated buffer of its own. Commas are its business:
 * values inside an array and keys inside an object are separated for the
 * caller. Strings are escaped as RFC 8259 requires: '"' and '\' with a
 * backslash, the control characters U+0000..U+001F as \u00XX (lowercase
 * hex); other bytes, UTF-8 included, pass as they are.
 *
 * Numbers: integers exactly; doubles with the precision asked for (digits
 * significant digits, 0 = 17: enough to read back the same double) or a fixed
 * count of decimals. JSON has no NaN or infinity: a non-finite double is
 * written as null.
 *
 * Errors are sticky: after a failed write (FL_ENOMEM growing the buffer,
 * FL_EIO writing the FILE, FL_ERANGE nesting deeper than FL_JSON_MAX_DEPTH)
 * every later call does nothing, and fl_json_finish / fl_json_error report
 * the first failure. The writer does not check that the calls make a
 * well-formed document (a key outside an object, say): that is the caller's. */
#ifndef FL_JSON_H
#define FL_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define FL_JSON_MAX_DEPTH 32

typedef struct {
    FILE *f;          /* output, or NULL: the buffer */
    char *buf;        /* the buffer's text (NUL-terminated; NULL until written) */
    size_t len, cap;
    int err;          /* first error (0 = none) */
    int depth;
    int after_key;    /* the next value follows a key: no comma */
    uint8_t has_item[FL_JSON_MAX_DEPTH + 1]; /* per level: something written already */
} fl_json_t;

/* Starts a writer into its own growing buffer (take it with fl_json_finish). */
void fl_json_init_buf(fl_json_t *j);

/* Starts a writer onto f (not closed or flushed by the writer). */
void fl_json_init_file(fl_json_t *j, FILE *f);

void fl_json_obj_begin(fl_json_t *j); /* { */
void fl_json_obj_end(fl_json_t *j);   /* } */
void fl_json_arr_begin(fl_json_t *j); /* [ */
void fl_json_arr_end(fl_json_t *j);   /* ] */

/* An object's key (escaped like a string); its value comes next. */
void fl_json_key(fl_json_t *j, const char *key);

/* A string value; NULL writes null. */
void fl_json_str(fl_json_t *j, const char *s);

/* n bytes of s as a string value (s need not be NUL-terminated). */
void fl_json_strn(fl_json_t *j, const char *s, size_t n);

void fl_json_i64(fl_json_t *j, int64_t v);
void fl_json_u64(fl_json_t *j, uint64_t v);
void fl_json_bool(fl_json_t *j, int v);
void fl_json_null(fl_json_t *j);

/* A double with `digits` significant digits (printf %.*g; 0 = 17, which
 * reads back as the same double); null when v is NaN or infinite. */
void fl_json_double(fl_json_t *j, double v, int digits);

/* A double with `decimals` digits after the point (printf %.*f); null when
 * v is NaN or infinite. */
void fl_json_fixed(fl_json_t *j, double v, int decimals);

/* Text that is already JSON (a number formatted elsewhere, a stored
 * document), written as one value. */
void fl_json_raw(fl_json_t *j, const char *text);

/* The first error so far (0 = none). */
int fl_json_error(const fl_json_t *j);

/* Ends a writer. For a buffer writer without error, *out (when out is not
 * NULL) becomes the caller's NUL-terminated text (free(); "" when nothing
 * was written) and *len (may be NULL) its length; otherwise the buffer is
 * freed. Returns 0 or the first error. */
int fl_json_finish(fl_json_t *j, char **out, size_t *len);

#endif
