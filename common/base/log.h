/* log: leveled logging to stderr (or a FILE the caller owns).
 *
 * One process-wide level and sink. Lines look like
 *   2026-11-29T20:31:02.123Z INFO  server: round 3 closed
 * or, with the JSON format (--log-format json), one object per line for
 * journald and log shippers:
 *   {"time":"2026-11-29T20:31:02.123Z","level":"info","module":"server",
 *    "message":"round 3 closed","run":1,"round":3}
 * with "run", "round" and "client" present only while they are set.
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

typedef enum {
    FL_LOG_TEXT = 0,
    FL_LOG_JSON = 1,
} fl_log_format_t;

/* Sets the line format (default FL_LOG_TEXT). */
void fl_log_set_format(fl_log_format_t format);

fl_log_format_t fl_log_get_format(void);

/* Parses "text" or "json" into *out. Returns 0 or FL_EINVAL. */
int fl_log_parse_format(const char *s, fl_log_format_t *out);

/* Takes the process-wide logging options out of argv before a command parses
 * it: every "--log-format F" / "--log-format=F" up to a "--" is removed
 * (argv and *argc are rewritten in place) and applied. Without the flag the
 * environment variable FEDOPT_LOG_FORMAT applies. Returns 0, or FL_EINVAL
 * for a bad or missing value (the caller prints its usage). */
int fl_log_take_args(int *argc, char **argv);

/* The context every JSON line carries: the run and round (process-wide, set
 * by the server; a negative value clears) and the client name (NULL clears;
 * a single-client process sets it once). Text lines do not show them. */
void fl_log_set_run(long long run);
void fl_log_set_round(long long round);
void fl_log_set_client(const char *name);

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
