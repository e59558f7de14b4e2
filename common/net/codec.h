/* codec: compressed encodings of a float32 update (a client's delta) for the
 * wire, and their streaming decoders.
 *
 * Encodings (all little-endian; proto/README.md "Update compression" is the
 * normative description, these must match it):
 *   FL_CODEC_F32   n float32 values (the uncompressed transfer).
 *   FL_CODEC_F16   n IEEE binary16 values, rounded to nearest even; values
 *                  beyond the binary16 range saturate at +-65504.
 *   FL_CODEC_INT8  blocks of FL_CODEC_INT8_BLOCK values (the last one
 *                  shorter): a float32 scale s >= 0, then one int8 q per value
 *                  (-127..127); the value is q * s. The encoder uses
 *                  s = max|x| / 127 of the block, q = round(x / s).
 *   FL_CODEC_TOPK  k records (uint32 index, float32 value), indices strictly
 *                  increasing and < n; every other value is 0. The encoder
 *                  keeps the k largest magnitudes (ties: lower index first)
 *                  and, with an error-feedback state, carries what it did not
 *                  send into the next round's update (fl_codec_ef_*).
 *
 * The decoder takes the encoded bytes in pieces of any size (the wire's
 * chunks) and writes floats straight into the receiver's buffer of n values,
 * so a receiver never holds more than the model-sized buffer and a record
 * split across two chunks (a few bytes carried) at once. */
#ifndef FL_CODEC_H
#define FL_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FL_CODEC_F32 = 0,
    FL_CODEC_F16 = 1,
    FL_CODEC_INT8 = 2,
    FL_CODEC_TOPK = 3,
} fl_codec_t;

#define FL_CODEC_COUNT 4
/* Values per int8 block (each block has its own scale). */
#define FL_CODEC_INT8_BLOCK 1024u

/* The codec's name ("f32", "f16", "int8", "topk") or NULL for an unknown one. */
const char *fl_codec_name(int codec);

/* Parses a name as above into *codec. Returns 0 or FL_EINVAL. */
int fl_codec_parse(const char *name, fl_codec_t *codec);

/* Converts one float to binary16 bits (round to nearest even, saturating at
 * +-65504; NaN stays NaN) and back (exact). */
uint16_t fl_codec_f16_from_float(float x);
float fl_codec_f16_to_float(uint16_t h);

/* Encoded size of n values: exact for F32/F16/INT8; for TOPK, the size of k
 * records. Returns 0 for an unknown codec or n == 0. */
size_t fl_codec_encoded_size(fl_codec_t codec, size_t n, size_t k);

/* Error-feedback state of one sender for TOPK: the residual (what was not
 * sent so far) of an n-value update, kept across rounds. */
typedef struct {
    size_t n;
    float *residual; /* n values, zero at first */
} fl_codec_ef_t;

/* Makes *ef a zero residual of n values. Returns 0, FL_EINVAL or FL_ENOMEM. */
int fl_codec_ef_init(fl_codec_ef_t *ef, size_t n);
/* Frees the residual; *ef becomes empty. Accepts NULL. */
void fl_codec_ef_free(fl_codec_ef_t *ef);

/* Encodes x[0..n) with codec into a new buffer (*out, malloc'd, the
 * caller's; *out_len bytes). For TOPK, k (1..n/2) values are kept; with ef
 * (n values) the encoder sends the top k of x + residual and the residual
 * becomes what was left unsent; without ef, of x alone. k and ef are ignored
 * by the other codecs. x is only read. Returns 0, FL_EINVAL (bad codec, n, k
 * or ef size), FL_ENONFINITE (x has a NaN or Inf) or FL_ENOMEM. */
int fl_codec_encode(fl_codec_t codec, const float *x, size_t n, size_t k, fl_codec_ef_t *ef,
                    uint8_t **out, size_t *out_len);

/* Streaming decoder of one transfer into out[0..n). */
typedef struct {
    fl_codec_t codec;
    size_t n;
    float *out;
    uint64_t bytes;     /* encoded bytes consumed so far */
    uint64_t total;     /* encoded bytes announced */
    size_t pos;         /* F16/INT8: next value; TOPK: records done */
    int64_t last_index; /* TOPK: index of the previous record, -1 at first */
    float scale;        /* INT8: the current block's scale */
    size_t block_left;  /* INT8: values left in the current block (0: a scale is next) */
    uint8_t carry[8];   /* a record split across pieces */
    size_t carry_len;
} fl_codec_decoder_t;

/* Starts decoding total encoded bytes of n values into out (n floats, the
 * caller's; TOPK zero-fills it). Returns 0, or FL_EINVAL (bad codec, n 0, or
 * total impossible for codec and n: F32/F16/INT8 need their exact size, TOPK
 * a positive multiple of 8 up to 8 * n/2 records). */
int fl_codec_decode_begin(fl_codec_decoder_t *d, fl_codec_t codec, size_t n, uint64_t total,
                          float *out);

/* Decodes the next len bytes of the transfer. Returns 0, FL_ETOOBIG (past
 * the announced total), FL_EFORMAT (a TOPK index out of order or >= n, an
 * int8 scale that is negative or not finite) or FL_ENONFINITE (a decoded
 * value is NaN or Inf). After an error the decoder must not be fed again. */
int fl_codec_decode_feed(fl_codec_decoder_t *d, const uint8_t *p, size_t len);

/* Checks the transfer is complete. Returns 0 or FL_ETRUNCATED. */
int fl_codec_decode_end(const fl_codec_decoder_t *d);

#endif
