#include "common/base/bytes.h"

#include <zlib.h>

uint32_t fl_crc32(uint32_t crc, const void *data, size_t len)
{
    /* crc32_z takes a size_t length (zlib >= 1.2.9), so no slicing here;
     * it answers 0 for a NULL buffer, where nothing to add must leave crc. */
    if (!len)
        return crc;
    return (uint32_t)crc32_z(crc, data, len);
}
