#include "common/base/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/base/error.h"
#include "common/base/json.h"

static _Atomic int g_level = FL_LOG_INFO;
static _Atomic int g_format = FL_LOG_TEXT;
static _Atomic long long g_run = -1, g_round = -1;
/* Guarded by g_lock. */
static FILE *g_sink;
static char g_client[128];
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

void fl_log_set_format(fl_log_format_t format) { atomic_store(&g_format, (int)format); }

fl_log_format_t fl_log_get_format(void) { return (fl_log_format_t)atomic_load(&g_format); }

int fl_log_parse_format(const char *s, fl_log_format_t *out)
{
    if (!s || !out)
        return FL_EINVAL;
    if (strcmp(s, "text") == 0)
        *out = FL_LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = FL_LOG_JSON;
    else
        return FL_EINVAL;
    return 0;
}

int fl_log_take_args(int *argc, char **argv)
{
    if (!argc || !argv)
        return FL_EINVAL;
    const char *value = getenv("FEDOPT_LOG_FORMAT");
    int from_env = value && *value, out = 0, i = 0;
    for (; i < *argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            break;
        if (strcmp(a, "--log-format") == 0) {
            if (i + 1 >= *argc)
                return FL_EINVAL;
            value = argv[++i];
            from_env = 0;
            continue;
        }
        if (strncmp(a, "--log-format=", 13) == 0) {
            value = a + 13;
            from_env = 0;
            continue;
        }
        argv[out++] = argv[i];
    }
    for (; i < *argc; i++)
        argv[out++] = argv[i];
    argv[out] = NULL;
    *argc = out;
    if (!value || (from_env && !*value))
        return 0;
    fl_log_format_t f;
    if (fl_log_parse_format(value, &f))
        return FL_EINVAL;
    fl_log_set_format(f);
    return 0;
}

void fl_log_set_run(long long run) { atomic_store(&g_run, run); }

void fl_log_set_round(long long round) { atomic_store(&g_round, round); }

void fl_log_set_client(const char *name)
{
    pthread_mutex_lock(&g_lock);
    snprintf(g_client, sizeof g_client, "%s", name ? name : "");
    pthread_mutex_unlock(&g_lock);
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 when it is not one. */
static int utf8_len(const unsigned char *s)
{
    int n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
    if (s[0] > 0xf4)
        return 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((n == 3 && s[0] == 0xe0 && s[1] < 0xa0) || (n == 3 && s[0] == 0xed && s[1] >= 0xa0) ||
        (n == 4 && s[0] == 0xf0 && s[1] < 0x90) || (n == 4 && s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return n;
}

/* Copies s into out (n bytes with the NUL) with every byte that is not part
 * of valid UTF-8 (a file name, a peer's text) replaced by U+FFFD, so that a
 * JSON line is always valid JSON. */
static void utf8_clean(const char *str, char *out, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t o = 0;
    while (*s && o + 4 < n) {
        int len = *s < 0x80 ? 1 : utf8_len(s);
        if (len) {
            memcpy(out + o, s, (size_t)len);
            o += (size_t)len;
            s += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            s++;
        }
    }
    out[o] = 0;
}

/* The JSON line (common/base/json writes it), malloc'd; NULL when out of memory. */
static char *json_line(const char *when, const char *level, const char *who, const char *msg)
{
    char cwho[128], cmsg[1536], cclient[sizeof g_client * 2];
    utf8_clean(who, cwho, sizeof cwho);
    utf8_clean(msg, cmsg, sizeof cmsg);
    utf8_clean(g_client, cclient, sizeof cclient);
    fl_json_t j;
    fl_json_init_buf(&j);
    fl_json_obj_begin(&j);
    fl_json_key(&j, "time");
    fl_json_str(&j, when);
    fl_json_key(&j, "level");
    fl_json_str(&j, level);
    fl_json_key(&j, "module");
    fl_json_str(&j, cwho);
    fl_json_key(&j, "message");
    fl_json_str(&j, cmsg);
    long long run = atomic_load(&g_run), round = atomic_load(&g_round);
    if (run >= 0) {
        fl_json_key(&j, "run");
        fl_json_i64(&j, run);
    }
    if (round >= 0) {
        fl_json_key(&j, "round");
        fl_json_i64(&j, round);
    }
    if (cclient[0]) {
        fl_json_key(&j, "client");
        fl_json_str(&j, cclient);
    }
    fl_json_obj_end(&j);
    char *line = NULL;
    if (fl_json_finish(&j, &line, NULL))
        return NULL;
    return line;
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
    char raw[1024], msg[4 * sizeof raw];
    vsnprintf(raw, sizeof raw, fmt, ap);
    /* Messages quote what files, flags and peers said: control bytes (a
     * newline that would forge a log line, a terminal escape) are written
     * as \xNN so that one call is one plain line (a JSON line escapes them
     * the JSON way, \u00NN, from the raw text). */
    size_t o = 0;
    for (const unsigned char *c = (const unsigned char *)raw; *c; c++) {
        if (*c < 0x20 || *c == 0x7f)
            o += (size_t)snprintf(msg + o, sizeof msg - o, "\\x%02x", *c);
        else
            msg[o++] = (char)*c;
    }
    msg[o] = 0;
    char when[80];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
    int li = level < 0 ? 0 : level > 3 ? 3 : (int)level;
    pthread_mutex_lock(&g_lock);
    FILE *out = g_sink ? g_sink : stderr;
    if (atomic_load(&g_format) == FL_LOG_JSON) {
        static const char *const names[] = {"error", "warn", "info", "debug"};
        /* Built under the lock (it reads the client name) and written with
         * one fprintf, so lines never interleave. */
        char *line = json_line(when, names[li], who ? who : "-", raw);
        if (line) {
            fprintf(out, "%s\n", line);
            free(line);
            fflush(out);
            pthread_mutex_unlock(&g_lock);
            return;
        }
        /* Out of memory: the text line below still says what happened. */
    }
    fprintf(out, "%s %s %s: %s\n", when, tags[li], who ? who : "-", msg);
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
