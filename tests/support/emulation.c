#include "tests/support/emulation.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int fl_emu_active(void)
{
    const char *w = getenv("FEDOPT_TEST_WRAPPER");
    return w && *w;
}

double fl_emu_time_factor(void)
{
    if (!fl_emu_active())
        return 1.0;
    const char *e = getenv("FEDOPT_TEST_TIME_FACTOR");
    if (e && *e) {
        char *end;
        double f = strtod(e, &end);
        if (*end == '\0' && f >= 1.0 && f <= 1000.0)
            return f;
    }
    return 20.0;
}

uint64_t fl_emu_ms(uint64_t ms) { return (uint64_t)((double)ms * fl_emu_time_factor()); }

size_t fl_emu_size(const char *what, size_t native, size_t emulated)
{
    if (!fl_emu_active())
        return native;
    fl_emu_note("%s: %zu instead of %zu", what, emulated, native);
    return emulated;
}

void fl_emu_note(const char *fmt, ...)
{
    if (!fl_emu_active())
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("emulated: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}
