/* test_certs: certificates made by common/certs parse, carry the requested
 * names, validity and constraints, verify against their CA (and not against
 * another), and bad requests are refused without leaving files behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "common/net/certs.h"
#include "common/base/error.h"
#include "common/base/log.h"
#include "tests/support/testcerts.h"

static fl_testcerts_t g_certs;

static void load(mbedtls_x509_crt *c, const char *rel)
{
    mbedtls_x509_crt_init(c);
    assert_int_equal(mbedtls_x509_crt_parse_file(c, fl_testcerts_path(&g_certs, 7, rel)), 0);
}

static void cn_of(const mbedtls_x509_crt *c, char *out, size_t n)
{
    out[0] = '\0';
    for (const mbedtls_x509_name *x = &c->subject; x; x = x->next)
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &x->oid) == 0)
            snprintf(out, n, "%.*s", (int)x->val.len, (const char *)x->val.p);
}

static uint32_t verify(mbedtls_x509_crt *leaf, mbedtls_x509_crt *ca, const char *name)
{
    uint32_t flags = 0;
    mbedtls_x509_crt_verify(leaf, ca, NULL, name, &flags, NULL, NULL);
    return flags;
}

static void test_fleet_certificates(void **state)
{
    mbedtls_x509_crt ca, srv, alice, old, other_ca, mallory;
    load(&ca, "ca.crt");
    load(&srv, "server.crt");
    load(&alice, "clients/alice.crt");
    load(&old, "clients/old.crt");
    load(&other_ca, "other/ca.crt");
    load(&mallory, "other/clients/mallory.crt");
    char cn[80];
    cn_of(&srv, cn, sizeof cn);
    assert_string_equal(cn, "localhost");
    cn_of(&alice, cn, sizeof cn);
    assert_string_equal(cn, "alice");
    /* Constraints: the CA is a CA, peers are not; P-256 keys everywhere. */
    assert_int_equal(ca.ca_istrue, 1);
    assert_int_equal(alice.ca_istrue, 0);
    assert_int_equal(mbedtls_pk_get_type(&alice.pk), MBEDTLS_PK_ECKEY);
    assert_int_equal(mbedtls_pk_ec(alice.pk)->grp.id, MBEDTLS_ECP_DP_SECP256R1);
    assert_int_equal(alice.sig_md, MBEDTLS_MD_SHA256);
    /* Chains: alice and the server verify against the fleet CA (the server
     * with its name), nobody verifies against the other CA, and the expired
     * certificate says so. */
    assert_int_equal(verify(&srv, &ca, "localhost"), 0);
    assert_int_equal(verify(&alice, &ca, NULL), 0);
    assert_true(verify(&srv, &ca, "evil.example") & MBEDTLS_X509_BADCERT_CN_MISMATCH);
    assert_true(verify(&mallory, &ca, NULL) & MBEDTLS_X509_BADCERT_NOT_TRUSTED);
    assert_true(verify(&alice, &other_ca, NULL) & MBEDTLS_X509_BADCERT_NOT_TRUSTED);
    assert_int_equal(verify(&old, &ca, NULL), MBEDTLS_X509_BADCERT_EXPIRED);
    /* Validity: about two years for issued certificates. */
    int years = alice.valid_to.year - alice.valid_from.year;
    assert_true(years == 2 || years == 3);
    mbedtls_x509_crt_free(&ca);
    mbedtls_x509_crt_free(&srv);
    mbedtls_x509_crt_free(&alice);
    mbedtls_x509_crt_free(&old);
    mbedtls_x509_crt_free(&other_ca);
    mbedtls_x509_crt_free(&mallory);
}

static void test_names(void **state)
{
    assert_true(fl_certs_valid_name("client-001"));
    assert_true(fl_certs_valid_name("a.b_c-D9"));
    assert_false(fl_certs_valid_name(""));
    assert_false(fl_certs_valid_name(NULL));
    assert_false(fl_certs_valid_name("-x"));
    assert_false(fl_certs_valid_name(".x"));
    assert_false(fl_certs_valid_name("a b"));
    assert_false(fl_certs_valid_name("a,CN=admin"));
    assert_false(fl_certs_valid_name("a/b"));
    char longn[FL_CERTS_NAME_MAX + 2];
    memset(longn, 'a', sizeof longn - 1);
    longn[sizeof longn - 1] = '\0';
    assert_false(fl_certs_valid_name(longn));
    longn[FL_CERTS_NAME_MAX] = '\0';
    assert_true(fl_certs_valid_name(longn));
}

static void test_refusals(void **state)
{
    int64_t now = (int64_t)time(NULL);
    const char *crt = fl_testcerts_path(&g_certs, 4, "x.crt");
    const char *key = fl_testcerts_path(&g_certs, 5, "x.key");
    fl_certs_spec_t s = {.cn = "x", .not_before = now, .not_after = now - 1, .out_crt = crt,
                         .out_key = key};
    assert_int_equal(fl_certs_make(&s), FL_EINVAL); /* ends before it starts */
    s.not_after = now + 100;
    s.cn = "bad name";
    assert_int_equal(fl_certs_make(&s), FL_EINVAL);
    s.cn = "x";
    s.issuer_crt = "/nonexistent/ca.crt";
    s.issuer_key = "/nonexistent/ca.key";
    assert_int_equal(fl_certs_make(&s), FL_EFORMAT);
    s.issuer_key = NULL; /* a certificate without its key */
    assert_int_equal(fl_certs_make(&s), FL_EINVAL);
    assert_int_not_equal(access(crt, F_OK), 0);
    assert_int_not_equal(access(key, F_OK), 0);
    /* Existing files are never overwritten. */
    assert_int_equal(fl_certs_issue(g_certs.dir, "alice"), FL_EEXIST);
    assert_int_equal(fl_certs_init(g_certs.dir, "localhost"), FL_EEXIST);
    /* No CA in the directory. */
    assert_int_equal(fl_certs_issue(fl_testcerts_path(&g_certs, 6, "clients"), "zed"), FL_ENOTFOUND);
}

static int setup(void **state)
{
    fl_log_set_level(FL_LOG_ERROR);
    static FILE *null;
    null = fopen("/dev/null", "w");
    fl_log_set_sink(null); /* the refusals log; the return codes are what is tested */
    return fl_testcerts_make(&g_certs) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    fl_log_set_sink(NULL);
    fl_testcerts_remove(&g_certs);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fleet_certificates),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
