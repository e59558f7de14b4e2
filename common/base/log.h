/* log: leveled logging to stderr (or a FILE the caller owns).
 *
 * One process-wide level and sink. Lines look like
 *   2026-11-29T20:31:02.123Z INFO  server: round 3 closed
 * Logging is thread-safe: each line is written with a single fprintf under a
 * lock, so lines from the thread pool and the event loop never interleave. */
#ifndef FL_LOG_H
#define FL_LOG_H

#include <stdarg.h>
#include <stdio.h>

typedef enum {
    FL_LOG_ERROR = 0,
    FL_LOG_WARN = 1,
    FL_LOG_INFO = 2,
    FL_LOG_DEBUG = 3,
} fl_log_level_t;

/* Sets the most verbose level that is printed (default FL_LOG_INFO). */
void fl_log_set_level(fl_log_level_t level);

/* Returns the current level. */
fl_log_level_t fl_log_get_level(void);

/* The level names, indexed by fl_log_level_t, NULL-terminated (a choice
 * list for fl_cli_get_choice). */
extern const char *const fl_log_level_names[];

/* Parses "error", "warn", "info" or "debug" into *out. Returns 0 or FL_EINVAL. */
int fl_log_parse_level(const char *s, fl_log_level_t *out);

/* Redirects log lines to `sink` (NULL restores stderr). The caller keeps
 * ownership of the FILE and must keep it open while it is the sink. */
void fl_log_set_sink(FILE *sink);

/* Writes one line at `level` from component `who` (a short module name). */
void fl_log(fl_log_level_t level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* va_list form of fl_log. */
void fl_logv(fl_log_level_t level, const char *who, const char *fmt, va_list ap);

#define FL_LOG_E(who, ...) fl_log(FL_LOG_ERROR, who, __VA_ARGS__)
#define FL_LOG_W(who, ...) fl_log(FL_LOG_WARN, who, __VA_ARGS__)
#define FL_LOG_I(who, ...) fl_log(FL_LOG_INFO, who, __VA_ARGS__)
#define FL_LOG_D(who, ...) fl_log(FL_LOG_DEBUG, who, __VA_ARGS__)

#endif
