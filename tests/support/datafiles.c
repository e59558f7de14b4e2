#include "tests/support/datafiles.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int fl_test_mkdtemp(char *out, size_t size)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, size, "%s/fedopt-test-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(out) ? 0 : -1;
}

int fl_test_write(const char *path, const void *data, size_t len, int gz)
{
    if (gz) {
        gzFile g = gzopen(path, "wb");
        if (!g)
            return -1;
        int ok = len == 0 || gzwrite(g, data, (unsigned)len) == (int)len;
        return (gzclose(g) == Z_OK && ok) ? 0 : -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = len == 0 || fwrite(data, 1, len, f) == len;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

int fl_test_write_str(const char *path, const char *text)
{
    return fl_test_write(path, text, strlen(text), 0);
}

void fl_test_rmtree(const char *dir)
{
    char cmd[4200];
    if (!dir || !strstr(dir, "fedopt-test-"))
        return; /* only ever our own temp directories */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}
