#include "common/base/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/base/error.h"
#include "common/base/log.h"

#define WHO "file"

int fl_file_read_all(const char *path, size_t max, char **out, size_t *len)
{
    if (out)
        *out = NULL;
    if (len)
        *len = 0;
    if (!path || !out || !len)
        return FL_EINVAL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        FL_LOG_E(WHO, "%s: cannot open: %s", path, strerror(errno));
        return FL_EIO;
    }
    int rc = 0;
    char *b = NULL;
    size_t n = 0, cap = 0;
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || S_ISDIR(sb.st_mode)) {
        FL_LOG_E(WHO, "%s: not a file", path);
        rc = FL_EIO;
        goto out;
    }
    if (S_ISREG(sb.st_mode) && (unsigned long long)sb.st_size > max) {
        FL_LOG_E(WHO, "%s: %lld bytes, more than the %zu accepted", path, (long long)sb.st_size, max);
        rc = FL_ETOOBIG;
        goto out;
    }
    /* A regular file's size is the first guess (one allocation, one read,
     * one probe for the end); the loop still reads to the end, for files
     * that grow and for pipes. */
    cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size + 1 : 65536;
    for (;;) {
        if (n + 1 >= cap || n >= max) {
            /* No room left, or max read: one more byte decides. */
            int c = fgetc(f);
            if (c == EOF) {
                if (!ferror(f))
                    break;
                FL_LOG_E(WHO, "%s: read error: %s", path, strerror(errno));
                rc = FL_EIO;
                goto out;
            }
            if (n >= max) {
                FL_LOG_E(WHO, "%s: more than the %zu bytes accepted", path, max);
                rc = FL_ETOOBIG;
                goto out;
            }
            size_t ncap = cap < max / 2 ? cap * 2 : max + 1; /* > n + 1: n < max, n < cap */
            char *nb = realloc(b, ncap);
            if (!nb) {
                rc = FL_ENOMEM;
                goto out;
            }
            b = nb;
            cap = ncap;
            b[n++] = (char)c;
        } else if (!b && !(b = malloc(cap))) {
            rc = FL_ENOMEM;
            goto out;
        }
        size_t want = cap - 1 - n;
        if (want > max - n)
            want = max - n;
        size_t got = fread(b + n, 1, want, f);
        n += got;
        if (got < want) {
            if (ferror(f)) {
                FL_LOG_E(WHO, "%s: read error: %s", path, strerror(errno));
                rc = FL_EIO;
                goto out;
            }
            break;
        }
    }
    if (!b && !(b = malloc(1))) {
        rc = FL_ENOMEM;
        goto out;
    }
    b[n] = 0;
    *out = b;
    *len = n;
    b = NULL;
out:
    free(b);
    fclose(f);
    return rc;
}
