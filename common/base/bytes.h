/* bytes: little-endian integer packing and CRC-32 over byte ranges of any
 * length, shared by everything that writes fedopt's own binary formats
 * (optimizer state, checkpoints, tensors on the wire). */
#ifndef FL_BYTES_H
#define FL_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* Continues a CRC-32 (zlib's crc32_z: the IEEE polynomial) over len bytes;
 * start with crc = 0. len may exceed 4 GiB. */
uint32_t fl_crc32(uint32_t crc, const void *data, size_t len);

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
