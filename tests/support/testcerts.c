#include "tests/support/testcerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/net/certs.h"
#include "common/base/error.h"

const char *fl_testcerts_path(const fl_testcerts_t *t, int slot, const char *rel)
{
    static char bufs[8][512];
    char *b = bufs[slot & 7];
    snprintf(b, sizeof bufs[0], "%s/%s", t->dir, rel);
    return b;
}

int fl_testcerts_make(fl_testcerts_t *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/fedopt-certs-XXXXXX");
    if (!mkdtemp(t->dir))
        return FL_EIO;
    int rc = fl_certs_init(t->dir, "localhost");
    if (!rc)
        rc = fl_certs_issue(t->dir, "alice");
    if (!rc)
        rc = fl_certs_issue(t->dir, "bob");
    int64_t now = (int64_t)time(NULL);
    if (!rc) {
        /* Expired yesterday. */
        fl_certs_spec_t old = {.cn = "old", .not_before = now - 30 * 86400, .not_after = now - 86400,
                               .issuer_crt = fl_testcerts_path(t, 0, "ca.crt"),
                               .issuer_key = fl_testcerts_path(t, 1, "ca.key"),
                               .out_crt = fl_testcerts_path(t, 2, "clients/old.crt"),
                               .out_key = fl_testcerts_path(t, 3, "clients/old.key")};
        rc = fl_certs_make(&old);
    }
    if (!rc) {
        mkdir(fl_testcerts_path(t, 0, "other"), 0700);
        mkdir(fl_testcerts_path(t, 0, "other/clients"), 0700);
        fl_certs_spec_t ca = {.cn = "fedopt-ca", .is_ca = 1, .not_before = now - 86400,
                              .not_after = now + 86400 * 365,
                              .out_crt = fl_testcerts_path(t, 0, "other/ca.crt"),
                              .out_key = fl_testcerts_path(t, 1, "other/ca.key")};
        rc = fl_certs_make(&ca);
    }
    if (!rc) {
        /* Same CA name as the fleet's, different key: only the signature tells. */
        fl_certs_spec_t m = {.cn = "mallory", .not_before = now - 86400, .not_after = now + 86400 * 365,
                             .issuer_crt = fl_testcerts_path(t, 0, "other/ca.crt"),
                             .issuer_key = fl_testcerts_path(t, 1, "other/ca.key"),
                             .out_crt = fl_testcerts_path(t, 2, "other/clients/mallory.crt"),
                             .out_key = fl_testcerts_path(t, 3, "other/clients/mallory.key")};
        rc = fl_certs_make(&m);
    }
    return rc;
}

void fl_testcerts_remove(fl_testcerts_t *t)
{
    if (!t || !t->dir[0])
        return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "testcerts: could not remove %s\n", t->dir);
    t->dir[0] = '\0';
}
