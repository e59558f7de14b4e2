/* bytes: little-endian integer packing and CRC-32 over byte ranges of any
 * length, shared by everything that writes fedopt's own binary formats
 * (optimizer state, checkpoints, tensors on the wire), and a growable byte
 * buffer (fl_bytes_t) for bytes that arrive in pieces. */
#ifndef FL_BYTES_H
#define FL_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC-32 (zlib's crc32_z: the IEEE polynomial; computed by
 * libdeflate in a build with LIBDEFLATE=1, the native default) over len bytes;
 * start with crc = 0. len may exceed 4 GiB. */
uint32_t fl_crc32(uint32_t crc, const void *data, size_t len);

/* A growable byte buffer: data[0..len) are the bytes, cap is allocated.
 * All zeros ({0}) is an empty buffer that holds no memory. The buffer owns
 * data; fl_bytes_free releases it. Growth doubles the capacity, so n appends
 * cost O(total bytes). Moving a buffer by struct assignment moves its
 * ownership (leave the source zeroed). */
typedef struct {
    uint8_t *data;
    size_t len, cap;
} fl_bytes_t;

/* Makes room for at least extra more bytes beyond len. Returns 0, or
 * FL_ENOMEM (allocation failed, or len + extra overflows); b is unchanged
 * on failure. */
int fl_bytes_reserve(fl_bytes_t *b, size_t extra);

/* Appends n bytes from p (p may be NULL when n is 0; p must not point into
 * b's own data). Returns 0 or FL_ENOMEM (b unchanged). */
int fl_bytes_append(fl_bytes_t *b, const void *p, size_t n);

/* Inserts n bytes from p before the first byte (p must not point into b's
 * own data). Returns 0 or FL_ENOMEM (b unchanged). */
int fl_bytes_prepend(fl_bytes_t *b, const void *p, size_t n);

/* Drops the first n bytes (all of them when n >= len); keeps the memory. */
void fl_bytes_consume(fl_bytes_t *b, size_t n);

/* Frees the memory and makes b empty. Accepts NULL. */
void fl_bytes_free(fl_bytes_t *b);

/* Stores v little-endian at p (4 or 8 bytes). */
static inline void fl_put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void fl_put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Loads a little-endian value from p (4 or 8 bytes). */
static inline uint32_t fl_get_u32le(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static inline uint64_t fl_get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#endif
