#include "common/base/bytes.h"

#include <zlib.h>

uint32_t fl_crc32(uint32_t crc, const void *data, size_t len)
{
    /* zlib takes a uInt length: feed it in slices of 1 GiB. */
    const unsigned char *b = data;
    uLong c = crc;
    while (len) {
        uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;
        c = crc32(c, b, chunk);
        b += chunk;
        len -= chunk;
    }
    return (uint32_t)c;
}
