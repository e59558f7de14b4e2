#include "common/base/bytes.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#if FL_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#include "common/base/error.h"

uint32_t fl_crc32(uint32_t crc, const void *data, size_t len)
{
    /* Both take a size_t length (zlib >= 1.2.9), so no slicing here; zlib
     * answers 0 for a NULL buffer, where nothing to add must leave crc.
     * libdeflate's is the same CRC, faster on x86-64 (the carry-less
     * multiply): every received tensor is checksummed (bench_tls). */
    if (!len)
        return crc;
#if FL_HAVE_LIBDEFLATE
    return libdeflate_crc32(crc, data, len);
#else
    return (uint32_t)crc32_z(crc, data, len);
#endif
}

int fl_bytes_reserve(fl_bytes_t *b, size_t extra)
{
    if (!b || extra > SIZE_MAX - b->len)
        return b ? FL_ENOMEM : FL_EINVAL;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return FL_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int fl_bytes_append(fl_bytes_t *b, const void *p, size_t n)
{
    if (!b || (!p && n))
        return FL_EINVAL;
    if (!n)
        return 0;
    int rc = fl_bytes_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int fl_bytes_prepend(fl_bytes_t *b, const void *p, size_t n)
{
    if (!b || (!p && n))
        return FL_EINVAL;
    if (!n)
        return 0;
    int rc = fl_bytes_reserve(b, n);
    if (rc)
        return rc;
    memmove(b->data + n, b->data, b->len);
    memcpy(b->data, p, n);
    b->len += n;
    return 0;
}

void fl_bytes_consume(fl_bytes_t *b, size_t n)
{
    if (!b)
        return;
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void fl_bytes_free(fl_bytes_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
