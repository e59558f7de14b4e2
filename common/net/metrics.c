#include "common/net/metrics.h"

#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/base/error.h"
#include "common/base/log.h"

#define WHO "metrics"

typedef struct {
    char *label_value;      /* NULL for an unlabelled family */
    double value;           /* counter / gauge; histogram: the sum */
    unsigned long long count; /* histogram: observations */
    unsigned long long *bucket_counts; /* histogram: per bucket, not cumulative */
} series_t;

typedef struct {
    char *name, *help, *label;
    fl_metric_type_t type;
    double *buckets;
    size_t nbuckets;
    series_t *series;
    size_t nseries, cap;
} family_t;

struct fl_metrics {
    pthread_mutex_t lock;
    family_t *fam;
    size_t nfam, cap;
    atomic_int ready;
};

struct fl_metrics_http {
    struct MHD_Daemon *d;
    fl_metrics_t *m;
};

static int valid_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        if (!alpha && !(p != s && *p >= '0' && *p <= '9'))
            return 0;
    }
    return 1;
}

int fl_metrics_create(fl_metrics_t **out)
{
    if (!out)
        return FL_EINVAL;
    fl_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return FL_ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    atomic_init(&m->ready, 0);
    int rc = fl_metrics_define(m, "process_resident_memory_bytes", FL_METRIC_GAUGE,
                               "Resident memory size in bytes.", NULL, NULL, 0);
    if (rc) {
        fl_metrics_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void fl_metrics_free(fl_metrics_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfam; i++) {
        family_t *f = &m->fam[i];
        for (size_t j = 0; j < f->nseries; j++) {
            free(f->series[j].label_value);
            free(f->series[j].bucket_counts);
        }
        free(f->series);
        free(f->name);
        free(f->help);
        free(f->label);
        free(f->buckets);
    }
    free(m->fam);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static family_t *find_family(fl_metrics_t *m, const char *name)
{
    for (size_t i = 0; i < m->nfam; i++)
        if (strcmp(m->fam[i].name, name) == 0)
            return &m->fam[i];
    return NULL;
}

int fl_metrics_define(fl_metrics_t *m, const char *name, fl_metric_type_t type, const char *help,
                      const char *label, const double *buckets, size_t nbuckets)
{
    if (!m || !valid_name(name) || (label && (!valid_name(label) || strchr(label, ':'))) ||
        type > FL_METRIC_HISTOGRAM)
        return FL_EINVAL;
    if (type == FL_METRIC_HISTOGRAM) {
        if (!buckets || nbuckets == 0)
            return FL_EINVAL;
        for (size_t i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
                return FL_EINVAL;
        /* "le" is the histogram's own label. */
        if (label && strcmp(label, "le") == 0)
            return FL_EINVAL;
    } else if (buckets || nbuckets) {
        return FL_EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    family_t *old = find_family(m, name);
    if (old) {
        rc = old->type == type && !old->label == !label && (!label || strcmp(old->label, label) == 0) ? 0
                                                                                                     : FL_EINVAL;
        goto out;
    }
    if (m->nfam == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        family_t *nf = realloc(m->fam, cap * sizeof *nf);
        if (!nf) {
            rc = FL_ENOMEM;
            goto out;
        }
        m->fam = nf;
        m->cap = cap;
    }
    family_t f = {0};
    f.type = type;
    f.name = strdup(name);
    f.help = strdup(help ? help : "");
    f.label = label ? strdup(label) : NULL;
    if (type == FL_METRIC_HISTOGRAM) {
        f.buckets = malloc(nbuckets * sizeof *f.buckets);
        if (f.buckets)
            memcpy(f.buckets, buckets, nbuckets * sizeof *f.buckets);
        f.nbuckets = nbuckets;
    }
    if (!f.name || !f.help || (label && !f.label) || (type == FL_METRIC_HISTOGRAM && !f.buckets)) {
        free(f.name);
        free(f.help);
        free(f.label);
        free(f.buckets);
        rc = FL_ENOMEM;
        goto out;
    }
    m->fam[m->nfam++] = f;
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* The series of `f` for `label_value`, made when `create`; NULL when absent
 * or out of memory (*rc says which). Called under the lock. */
static series_t *get_series(family_t *f, const char *label_value, int create, int *rc)
{
    *rc = 0;
    if (!f->label != !label_value) {
        *rc = FL_EINVAL;
        return NULL;
    }
    for (size_t i = 0; i < f->nseries; i++) {
        series_t *s = &f->series[i];
        if (!label_value || strcmp(s->label_value, label_value) == 0)
            return s;
    }
    if (!create) {
        *rc = FL_ENOTFOUND;
        return NULL;
    }
    if (f->nseries == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        series_t *ns = realloc(f->series, cap * sizeof *ns);
        if (!ns)
            goto oom;
        f->series = ns;
        f->cap = cap;
    }
    series_t s = {0};
    if (label_value && !(s.label_value = strdup(label_value)))
        goto oom;
    if (f->type == FL_METRIC_HISTOGRAM && !(s.bucket_counts = calloc(f->nbuckets, sizeof *s.bucket_counts))) {
        free(s.label_value);
        goto oom;
    }
    f->series[f->nseries] = s;
    return &f->series[f->nseries++];
oom:
    *rc = FL_ENOMEM;
    return NULL;
}

enum { OP_ADD, OP_SET, OP_OBSERVE };

static int update(fl_metrics_t *m, const char *name, const char *label_value, double v, int op)
{
    if (!m || !name || !isfinite(v))
        return FL_EINVAL;
    int rc;
    pthread_mutex_lock(&m->lock);
    family_t *f = find_family(m, name);
    if (!f) {
        rc = FL_EINVAL;
        goto out;
    }
    int ok = (op == OP_ADD && (f->type == FL_METRIC_GAUGE || (f->type == FL_METRIC_COUNTER && v >= 0))) ||
             (op == OP_SET && f->type == FL_METRIC_GAUGE) || (op == OP_OBSERVE && f->type == FL_METRIC_HISTOGRAM);
    if (!ok) {
        rc = FL_EINVAL;
        goto out;
    }
    series_t *s = get_series(f, label_value, 1, &rc);
    if (!s)
        goto out;
    if (op == OP_ADD)
        s->value += v;
    else if (op == OP_SET)
        s->value = v;
    else {
        s->value += v;
        s->count++;
        for (size_t i = 0; i < f->nbuckets; i++)
            if (v <= f->buckets[i]) {
                s->bucket_counts[i]++;
                break;
            }
    }
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

int fl_metrics_add(fl_metrics_t *m, const char *name, const char *label_value, double v)
{
    return update(m, name, label_value, v, OP_ADD);
}

int fl_metrics_set(fl_metrics_t *m, const char *name, const char *label_value, double v)
{
    return update(m, name, label_value, v, OP_SET);
}

int fl_metrics_observe(fl_metrics_t *m, const char *name, const char *label_value, double v)
{
    return update(m, name, label_value, v, OP_OBSERVE);
}

int fl_metrics_get(fl_metrics_t *m, const char *name, const char *label_value, double *out)
{
    if (!m || !name || !out)
        return FL_EINVAL;
    int rc = FL_ENOTFOUND;
    pthread_mutex_lock(&m->lock);
    family_t *f = find_family(m, name);
    if (f) {
        series_t *s = get_series(f, label_value, 0, &rc);
        if (s)
            *out = f->type == FL_METRIC_HISTOGRAM ? (double)s->count : s->value;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void fl_metrics_set_ready(fl_metrics_t *m, int ready)
{
    if (m)
        atomic_store(&m->ready, ready ? 1 : 0);
}

/* ---- text exposition ------------------------------------------------------ */

/* Writes s with the escapes of the format: backslash and newline always,
 * the double quote too inside a label value. */
static void put_escaped(FILE *o, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", o);
        else if (*s == '\n')
            fputs("\\n", o);
        else if (quote && *s == '"')
            fputs("\\\"", o);
        else
            fputc(*s, o);
    }
}

static void put_value(FILE *o, double v)
{
    if (isinf(v))
        fputs(v > 0 ? "+Inf" : "-Inf", o);
    else
        fprintf(o, "%.17g", v);
}

/* name{label="value",le="bound"} — with whichever labels apply. */
static void put_sample_name(FILE *o, const family_t *f, const series_t *s, const char *suffix, const char *le)
{
    fprintf(o, "%s%s", f->name, suffix);
    if (!s->label_value && !le)
        return;
    fputc('{', o);
    if (s->label_value) {
        fprintf(o, "%s=\"", f->label);
        put_escaped(o, s->label_value, 1);
        fputc('"', o);
    }
    if (le)
        fprintf(o, "%sle=\"%s\"", s->label_value ? "," : "", le);
    fputc('}', o);
}

static double resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, rss = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    long pg = sysconf(_SC_PAGESIZE);
    return (double)rss * (double)(pg > 0 ? pg : 4096);
}

int fl_metrics_render(fl_metrics_t *m, char **out, size_t *len)
{
    if (!m || !out || !len)
        return FL_EINVAL;
    fl_metrics_set(m, "process_resident_memory_bytes", NULL, resident_bytes());
    char *buf = NULL;
    size_t n = 0;
    FILE *o = open_memstream(&buf, &n);
    if (!o)
        return FL_ENOMEM;
    static const char *const types[] = {"counter", "gauge", "histogram"};
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nfam; i++) {
        const family_t *f = &m->fam[i];
        fprintf(o, "# HELP %s ", f->name);
        put_escaped(o, f->help, 0);
        fprintf(o, "\n# TYPE %s %s\n", f->name, types[f->type]);
        for (size_t j = 0; j < f->nseries; j++) {
            const series_t *s = &f->series[j];
            if (f->type != FL_METRIC_HISTOGRAM) {
                put_sample_name(o, f, s, "", NULL);
                fputc(' ', o);
                put_value(o, s->value);
                fputc('\n', o);
                continue;
            }
            unsigned long long cum = 0;
            char le[64];
            for (size_t b = 0; b < f->nbuckets; b++) {
                cum += s->bucket_counts[b];
                snprintf(le, sizeof le, "%.17g", f->buckets[b]);
                put_sample_name(o, f, s, "_bucket", le);
                fprintf(o, " %llu\n", cum);
            }
            put_sample_name(o, f, s, "_bucket", "+Inf");
            fprintf(o, " %llu\n", s->count);
            put_sample_name(o, f, s, "_sum", NULL);
            fputc(' ', o);
            put_value(o, s->value);
            fputc('\n', o);
            put_sample_name(o, f, s, "_count", NULL);
            fprintf(o, " %llu\n", s->count);
        }
    }
    pthread_mutex_unlock(&m->lock);
    int bad = ferror(o);
    if (fclose(o) || bad || !buf) {
        free(buf);
        return FL_ENOMEM;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* ---- HTTP listener --------------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *body, size_t len, int owned,
                             const char *type)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        if (owned)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls)
{
    fl_metrics_t *m = cls;
    static char ok[] = "ok\n", notready[] = "not ready\n", nf[] = "not found\n", na[] = "method not allowed\n";
    const char *text = "text/plain; charset=utf-8";
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, na, sizeof na - 1, 0, text);
    if (strcmp(url, "/metrics") == 0) {
        char *body;
        size_t len;
        if (fl_metrics_render(m, &body, &len))
            return MHD_NO;
        return reply(c, MHD_HTTP_OK, body, len, 1, "text/plain; version=0.0.4; charset=utf-8");
    }
    if (strcmp(url, "/healthz") == 0)
        return reply(c, MHD_HTTP_OK, ok, sizeof ok - 1, 0, text);
    if (strcmp(url, "/readyz") == 0) {
        if (atomic_load(&m->ready))
            return reply(c, MHD_HTTP_OK, ok, sizeof ok - 1, 0, text);
        return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, notready, sizeof notready - 1, 0, text);
    }
    return reply(c, MHD_HTTP_NOT_FOUND, nf, sizeof nf - 1, 0, text);
}

/* Splits "HOST:PORT" / "[V6]:PORT" into host and port text. */
static int split_addr(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
    const char *colon;
    size_t hl;
    const char *h = s;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return FL_EINVAL;
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return FL_EINVAL;
        hl = (size_t)(colon - s);
    }
    size_t pl = strlen(colon + 1);
    if (hl == 0 || hl >= hlen || pl == 0 || pl >= plen || strspn(colon + 1, "0123456789") != pl)
        return FL_EINVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    memcpy(port, colon + 1, pl + 1);
    return atol(port) <= 65535 ? 0 : FL_EINVAL;
}

int fl_metrics_http_start(fl_metrics_t *m, const char *listen, fl_metrics_http_t **out, int *port_out)
{
    if (!m || !listen || !out)
        return FL_EINVAL;
    char host[256], port[8];
    if (split_addr(listen, host, sizeof host, port, sizeof port))
        return FL_EINVAL;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    if (getaddrinfo(host, port, &hints, &ai) || !ai) {
        FL_LOG_E(WHO, "metrics_listen %s: cannot resolve %s", listen, host);
        return FL_EINVAL;
    }
    fl_metrics_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return FL_ENOMEM;
    }
    h->m = m;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, m, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)30, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        FL_LOG_E(WHO, "metrics_listen %s: cannot listen there", listen);
        free(h);
        return FL_ENET;
    }
    if (port_out) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
        *port_out = di ? (int)di->port : 0;
    }
    *out = h;
    return 0;
}

void fl_metrics_http_stop(fl_metrics_http_t *h)
{
    if (!h)
        return;
    if (h->d)
        MHD_stop_daemon(h->d);
    free(h);
}
