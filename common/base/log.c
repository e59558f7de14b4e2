#include "common/base/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "common/base/error.h"

static _Atomic int g_level = FL_LOG_INFO;
static FILE *g_sink;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void fl_log_set_level(fl_log_level_t level) { atomic_store(&g_level, (int)level); }

fl_log_level_t fl_log_get_level(void) { return (fl_log_level_t)atomic_load(&g_level); }

const char *const fl_log_level_names[] = {"error", "warn", "info", "debug", NULL};

int fl_log_parse_level(const char *s, fl_log_level_t *out)
{
    if (!s || !out)
        return FL_EINVAL;
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, fl_log_level_names[i]) == 0) {
            *out = (fl_log_level_t)i;
            return 0;
        }
    }
    return FL_EINVAL;
}

void fl_log_set_sink(FILE *sink)
{
    pthread_mutex_lock(&g_lock);
    g_sink = sink;
    pthread_mutex_unlock(&g_lock);
}

void fl_logv(fl_log_level_t level, const char *who, const char *fmt, va_list ap)
{
    static const char *const tags[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
    if ((int)level > atomic_load(&g_level))
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    pthread_mutex_lock(&g_lock);
    FILE *out = g_sink ? g_sink : stderr;
    fprintf(out, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: %s\n", tm.tm_year + 1900,
            tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
            tags[level < 0 ? 0 : level > 3 ? 3 : level], who ? who : "-", msg);
    fflush(out);
    pthread_mutex_unlock(&g_lock);
}

void fl_log(fl_log_level_t level, const char *who, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fl_logv(level, who, fmt, ap);
    va_end(ap);
}
