/* metrics: the registry, the text exposition and the HTTP listener (a real
 * libmicrohttpd daemon on loopback, read with a plain socket). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/base/error.h"
#include "common/net/metrics.h"

static void test_define_and_update(void **s)
{
    fl_metrics_t *m;
    assert_int_equal(fl_metrics_create(&m), 0);
    assert_int_equal(fl_metrics_define(m, "fl_round", FL_METRIC_GAUGE, "Round.", NULL, NULL, 0), 0);
    assert_int_equal(fl_metrics_define(m, "fl_refused_total", FL_METRIC_COUNTER, "Refused.", "reason", NULL, 0), 0);
    /* Same name and type again: no-op; another type: refused. */
    assert_int_equal(fl_metrics_define(m, "fl_round", FL_METRIC_GAUGE, "Round.", NULL, NULL, 0), 0);
    assert_int_equal(fl_metrics_define(m, "fl_round", FL_METRIC_COUNTER, "Round.", NULL, NULL, 0), FL_EINVAL);
    /* Bad names, bad buckets. */
    assert_int_equal(fl_metrics_define(m, "9lives", FL_METRIC_GAUGE, "", NULL, NULL, 0), FL_EINVAL);
    assert_int_equal(fl_metrics_define(m, "a-b", FL_METRIC_GAUGE, "", NULL, NULL, 0), FL_EINVAL);
    assert_int_equal(fl_metrics_define(m, "x", FL_METRIC_GAUGE, "", "bad-label", NULL, 0), FL_EINVAL);
    double down[] = {2, 1};
    assert_int_equal(fl_metrics_define(m, "h", FL_METRIC_HISTOGRAM, "", NULL, down, 2), FL_EINVAL);
    assert_int_equal(fl_metrics_define(m, "h", FL_METRIC_HISTOGRAM, "", NULL, NULL, 0), FL_EINVAL);
    double one[] = {1};
    assert_int_equal(fl_metrics_define(m, "h", FL_METRIC_HISTOGRAM, "", "le", one, 1), FL_EINVAL);

    assert_int_equal(fl_metrics_set(m, "fl_round", NULL, 7), 0);
    assert_int_equal(fl_metrics_add(m, "fl_round", NULL, -2), 0); /* gauges go both ways */
    assert_int_equal(fl_metrics_add(m, "fl_refused_total", "full", 1), 0);
    assert_int_equal(fl_metrics_add(m, "fl_refused_total", "full", 2), 0);
    assert_int_equal(fl_metrics_add(m, "fl_refused_total", "version", 1), 0);
    /* Counters never go down; sets are for gauges; labels must match the family. */
    assert_int_equal(fl_metrics_add(m, "fl_refused_total", "full", -1), FL_EINVAL);
    assert_int_equal(fl_metrics_set(m, "fl_refused_total", "full", 0), FL_EINVAL);
    assert_int_equal(fl_metrics_add(m, "fl_refused_total", NULL, 1), FL_EINVAL);
    assert_int_equal(fl_metrics_set(m, "fl_round", "x", 1), FL_EINVAL);
    assert_int_equal(fl_metrics_add(m, "nope", NULL, 1), FL_EINVAL);
    assert_int_equal(fl_metrics_set(m, "fl_round", NULL, 0.0 / 0.0), FL_EINVAL);

    double v;
    assert_int_equal(fl_metrics_get(m, "fl_round", NULL, &v), 0);
    assert_true(v == 5);
    assert_int_equal(fl_metrics_get(m, "fl_refused_total", "full", &v), 0);
    assert_true(v == 3);
    assert_int_equal(fl_metrics_get(m, "fl_refused_total", "other", &v), FL_ENOTFOUND);
    fl_metrics_free(m);
    fl_metrics_free(NULL);
}

static void test_render(void **s)
{
    fl_metrics_t *m;
    assert_int_equal(fl_metrics_create(&m), 0);
    double b[] = {0.5, 1, 10};
    assert_int_equal(fl_metrics_define(m, "fl_round_seconds", FL_METRIC_HISTOGRAM, "Round time.", NULL, b, 3), 0);
    assert_int_equal(fl_metrics_define(m, "fl_tls_fail_total", FL_METRIC_COUNTER, "Line one\nback\\slash",
                                       "reason", NULL, 0),
                     0);
    assert_int_equal(fl_metrics_observe(m, "fl_round_seconds", NULL, 0.25), 0);
    assert_int_equal(fl_metrics_observe(m, "fl_round_seconds", NULL, 1), 0); /* le is inclusive */
    assert_int_equal(fl_metrics_observe(m, "fl_round_seconds", NULL, 2), 0);
    assert_int_equal(fl_metrics_observe(m, "fl_round_seconds", NULL, 100), 0);
    assert_int_equal(fl_metrics_add(m, "fl_tls_fail_total", "say \"hi\"\\\n", 1), 0);
    char *out;
    size_t len;
    assert_int_equal(fl_metrics_render(m, &out, &len), 0);
    assert_int_equal(strlen(out), len);
    assert_non_null(strstr(out, "# TYPE fl_round_seconds histogram\n"));
    assert_non_null(strstr(out, "fl_round_seconds_bucket{le=\"0.5\"} 1\n"));
    assert_non_null(strstr(out, "fl_round_seconds_bucket{le=\"1\"} 2\n"));
    assert_non_null(strstr(out, "fl_round_seconds_bucket{le=\"10\"} 3\n"));
    assert_non_null(strstr(out, "fl_round_seconds_bucket{le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(out, "fl_round_seconds_sum 103.25\n"));
    assert_non_null(strstr(out, "fl_round_seconds_count 4\n"));
    assert_non_null(strstr(out, "# HELP fl_tls_fail_total Line one\\nback\\\\slash\n"));
    assert_non_null(strstr(out, "fl_tls_fail_total{reason=\"say \\\"hi\\\"\\\\\\n\"} 1\n"));
    /* The process's own resident memory is always there, and not zero. */
    const char *rss = strstr(out, "\nprocess_resident_memory_bytes ");
    assert_non_null(rss);
    assert_true(strtod(rss + strlen("\nprocess_resident_memory_bytes "), NULL) > 1e5);
    free(out);
    double v;
    assert_int_equal(fl_metrics_get(m, "fl_round_seconds", NULL, &v), 0);
    assert_true(v == 4);
    fl_metrics_free(m);
}

/* GET `path` from 127.0.0.1:port with HTTP/1.0; returns the whole answer. */
static char *http_get(int port, const char *method, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: x\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    close(fd);
    return buf;
}

static void test_http(void **s)
{
    fl_metrics_t *m;
    assert_int_equal(fl_metrics_create(&m), 0);
    assert_int_equal(fl_metrics_define(m, "fl_round", FL_METRIC_GAUGE, "Round.", NULL, NULL, 0), 0);
    assert_int_equal(fl_metrics_set(m, "fl_round", NULL, 42), 0);
    fl_metrics_http_t *h;
    assert_int_equal(fl_metrics_http_start(m, "nonsense", &h, NULL), FL_EINVAL);
    assert_int_equal(fl_metrics_http_start(m, "127.0.0.1:99999", &h, NULL), FL_EINVAL);
    int port = 0;
    assert_int_equal(fl_metrics_http_start(m, "127.0.0.1:0", &h, &port), 0);
    assert_true(port > 0);
    /* The port is taken: a second listener there fails cleanly. */
    char busy[64];
    snprintf(busy, sizeof busy, "127.0.0.1:%d", port);
    fl_metrics_http_t *h2 = NULL;
    assert_int_equal(fl_metrics_http_start(m, busy, &h2, NULL), FL_ENET);

    char *r = http_get(port, "GET", "/metrics");
    assert_non_null(strstr(r, " 200 "));
    assert_non_null(strstr(r, "text/plain; version=0.0.4"));
    assert_non_null(strstr(r, "\nfl_round 42\n"));
    free(r);
    r = http_get(port, "GET", "/healthz");
    assert_non_null(strstr(r, " 200 "));
    free(r);
    r = http_get(port, "GET", "/readyz");
    assert_non_null(strstr(r, " 503 "));
    free(r);
    fl_metrics_set_ready(m, 1);
    r = http_get(port, "GET", "/readyz");
    assert_non_null(strstr(r, " 200 "));
    free(r);
    r = http_get(port, "GET", "/nothing");
    assert_non_null(strstr(r, " 404 "));
    free(r);
    r = http_get(port, "POST", "/metrics");
    assert_non_null(strstr(r, " 405 "));
    free(r);
    /* Updates show in the next scrape. */
    assert_int_equal(fl_metrics_set(m, "fl_round", NULL, 43), 0);
    r = http_get(port, "GET", "/metrics");
    assert_non_null(strstr(r, "\nfl_round 43\n"));
    free(r);
    fl_metrics_http_stop(h);
    fl_metrics_http_stop(NULL);
    fl_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_define_and_update),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
