/* metrics: Prometheus counters, gauges and histograms, and the HTTP listener
 * that exposes them (libmicrohttpd) with /metrics, /healthz and /readyz.
 *
 * A registry holds metric families (a name, a help line, a type and at most
 * one label name); a family's series are made on first use, one per label
 * value. Updates and rendering take the registry's lock, so the event loop,
 * the thread pool and the listener's own thread may all touch it. It lives in
 * common/ because both the server and the client's fleet expose metrics.
 *
 * Names and label values come from fedopt's own code, but label values may
 * carry text from elsewhere (a TLS error string): they are escaped as the
 * text exposition format (version 0.0.4) requires.
 *
 * Errors: FL_EINVAL (bad name, type mismatch, unknown family), FL_ENOMEM,
 * FL_ENET (the listener could not bind). Free functions accept NULL. */
#ifndef FL_METRICS_H
#define FL_METRICS_H

#include <stddef.h>

typedef enum {
    FL_METRIC_COUNTER = 0,
    FL_METRIC_GAUGE = 1,
    FL_METRIC_HISTOGRAM = 2,
} fl_metric_type_t;

typedef struct fl_metrics fl_metrics_t;
typedef struct fl_metrics_http fl_metrics_http_t;

/* Makes an empty registry. It always exposes process_resident_memory_bytes
 * (read from /proc/self/statm when rendered). Returns 0 or FL_ENOMEM. */
int fl_metrics_create(fl_metrics_t **out);

void fl_metrics_free(fl_metrics_t *m);

/* Declares a family. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*; `label` is
 * NULL (no label) or a label name. A histogram needs `nbuckets` strictly
 * increasing finite upper bounds (+Inf is added); other types pass NULL/0.
 * Declaring the same name again with the same type is a no-op (0); with
 * another type it is FL_EINVAL. */
int fl_metrics_define(fl_metrics_t *m, const char *name, fl_metric_type_t type, const char *help,
                      const char *label, const double *buckets, size_t nbuckets);

/* Counter: adds v (>= 0, finite). Gauge: adds v (any finite sign).
 * `label_value` is NULL for an unlabelled family and required otherwise. */
int fl_metrics_add(fl_metrics_t *m, const char *name, const char *label_value, double v);

/* Gauge: sets the value. */
int fl_metrics_set(fl_metrics_t *m, const char *name, const char *label_value, double v);

/* Histogram: records one observation (finite). */
int fl_metrics_observe(fl_metrics_t *m, const char *name, const char *label_value, double v);

/* Current value of a counter or gauge series, or a histogram's count, for
 * tests and the fleet's summary. Returns 0 or FL_ENOTFOUND. */
int fl_metrics_get(fl_metrics_t *m, const char *name, const char *label_value, double *out);

/* Readiness reported by /readyz (default: not ready). */
void fl_metrics_set_ready(fl_metrics_t *m, int ready);

/* Renders every family in the text exposition format into a malloc'd,
 * NUL-terminated buffer (*out, caller frees; *len without the NUL). */
int fl_metrics_render(fl_metrics_t *m, char **out, size_t *len);

/* Starts the listener on `listen` ("HOST:PORT", "[IPv6]:PORT"; port 0 picks
 * a free one) in a thread of its own. GET /metrics renders the registry,
 * /healthz answers 200 while the process serves, /readyz 200 when ready and
 * 503 otherwise; other paths 404, other methods 405. *port_out (may be NULL)
 * gets the bound port. The registry must outlive the listener. Returns 0,
 * FL_EINVAL (bad address) or FL_ENET. */
int fl_metrics_http_start(fl_metrics_t *m, const char *listen, fl_metrics_http_t **out, int *port_out);

/* Stops the listener (joins its thread) and frees it. */
void fl_metrics_http_stop(fl_metrics_http_t *h);

#endif
