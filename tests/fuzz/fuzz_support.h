/* Shared by the libFuzzer targets whose parser reads a file by path: one
 * scratch file per process, rewritten with each input. */
#ifndef FL_FUZZ_SUPPORT_H
#define FL_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/base/log.h"

/* Sends log lines to /dev/null: parsers log every refusal, and thousands of
 * lines a second would drown libFuzzer's own output. */
static inline void fl_fuzz_quiet(void)
{
    static FILE *null;
    if (!null && (null = fopen("/dev/null", "w")))
        fl_log_set_sink(null);
}

static char fl_fuzz_path[256];

static inline void fl_fuzz_remove(void) { remove(fl_fuzz_path); }

/* Writes data to the process's scratch file and returns its path (NULL if
 * the file cannot be written, which the target then skips). The file is
 * removed when the fuzzer exits normally. */
static inline const char *fl_fuzz_file(const uint8_t *data, size_t size)
{
    char *path = fl_fuzz_path;
    if (!path[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(path, sizeof fl_fuzz_path, "%s/fedopt-fuzz-%ld", t && *t ? t : "/tmp",
                 (long)getpid());
        atexit(fl_fuzz_remove);
        fl_fuzz_quiet();
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return NULL;
    size_t w = size ? fwrite(data, 1, size, f) : 0;
    if (fclose(f) != 0 || w != size)
        return NULL;
    return path;
}

#endif
