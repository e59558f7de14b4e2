#include "common/net/certs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "common/base/error.h"
#include "common/base/log.h"

#define WHO "certs"
#define DAY (24 * 3600)

int fl_certs_valid_name(const char *name)
{
    if (!name || !name[0] || name[0] == '.' || name[0] == '-')
        return 0;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        if (!ok || n >= FL_CERTS_NAME_MAX)
            return 0;
    }
    return 1;
}

static void tls_err(const char *what, int ret)
{
    char buf[160];
    mbedtls_strerror(ret, buf, sizeof buf);
    FL_LOG_E(WHO, "%s: %s (-0x%04x)", what, buf, (unsigned)-ret);
}

/* Writes a whole file that must not exist yet. */
static int write_new(const char *path, const unsigned char *data, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        FL_LOG_E(WHO, "%s: cannot create: %s", path, strerror(e));
        return e == EEXIST ? FL_EEXIST : FL_EIO;
    }
    int rc = 0;
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, data + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            FL_LOG_E(WHO, "%s: write failed: %s", path, strerror(errno));
            rc = FL_EIO;
            break;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0 && !rc)
        rc = FL_EIO;
    if (rc)
        unlink(path);
    return rc;
}

static void fmt_time(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(out, 32, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* DER of the subjectAltName extension value: SEQUENCE OF [2] IA5String. The
 * asn1write functions write backwards from the end of buf. */
static int san_der(const char *const *names, size_t n, unsigned char *buf, size_t size,
                   unsigned char **start, size_t *len)
{
    unsigned char *p = buf + size;
    size_t total = 0;
    int ret;
    for (size_t i = n; i-- > 0;) {
        size_t l = strlen(names[i]);
        size_t k = 0;
        if ((ret = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)names[i], l)) < 0)
            return ret;
        k += (size_t)ret;
        if ((ret = mbedtls_asn1_write_len(&p, buf, l)) < 0)
            return ret;
        k += (size_t)ret;
        if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)) < 0)
            return ret;
        k += (size_t)ret;
        total += k;
    }
    if ((ret = mbedtls_asn1_write_len(&p, buf, total)) < 0)
        return ret;
    total += (size_t)ret;
    if ((ret = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
        return ret;
    total += (size_t)ret;
    *start = p;
    *len = total;
    return 0;
}

int fl_certs_make(const fl_certs_spec_t *spec)
{
    if (!spec || !spec->out_crt || !spec->out_key || !fl_certs_valid_name(spec->cn) ||
        spec->not_after <= spec->not_before || (!spec->issuer_crt != !spec->issuer_key)) {
        FL_LOG_E(WHO, "invalid certificate request (name '%s')", spec && spec->cn ? spec->cn : "");
        return FL_EINVAL;
    }
    for (size_t i = 0; i < spec->n_dns; i++)
        if (!fl_certs_valid_name(spec->dns_names[i])) {
            FL_LOG_E(WHO, "invalid DNS name '%s'", spec->dns_names[i]);
            return FL_EINVAL;
        }
    if (access(spec->out_crt, F_OK) == 0 || access(spec->out_key, F_OK) == 0) {
        FL_LOG_E(WHO, "%s or %s already exists; not overwriting", spec->out_crt, spec->out_key);
        return FL_EEXIST;
    }

    int rc = FL_ETLS, ret;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context key, issuer_key;
    mbedtls_x509_crt issuer;
    mbedtls_x509write_cert crt;
    mbedtls_mpi serial;
    unsigned char *pem = NULL;
    const size_t pem_size = 8192;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_pk_init(&key);
    mbedtls_pk_init(&issuer_key);
    mbedtls_x509_crt_init(&issuer);
    mbedtls_x509write_crt_init(&crt);
    mbedtls_mpi_init(&serial);

    static const char pers[] = "fedopt-certs";
    if ((ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                                     (const unsigned char *)pers, sizeof pers - 1)) != 0) {
        tls_err("seeding the random generator", ret);
        goto out;
    }
    if ((ret = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) != 0 ||
        (ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                   mbedtls_ctr_drbg_random, &drbg)) != 0) {
        tls_err("generating a P-256 key", ret);
        goto out;
    }

    char subject[FL_CERTS_NAME_MAX + 16], issuer_name[512];
    snprintf(subject, sizeof subject, "CN=%s,O=fedopt", spec->cn);
    mbedtls_pk_context *signer = &key;
    if (spec->issuer_crt) {
        if ((ret = mbedtls_x509_crt_parse_file(&issuer, spec->issuer_crt)) != 0) {
            tls_err(spec->issuer_crt, ret);
            rc = FL_EFORMAT;
            goto out;
        }
        if ((ret = mbedtls_pk_parse_keyfile(&issuer_key, spec->issuer_key, NULL)) != 0) {
            tls_err(spec->issuer_key, ret);
            rc = FL_EFORMAT;
            goto out;
        }
        if (mbedtls_x509_dn_gets(issuer_name, sizeof issuer_name, &issuer.subject) < 0) {
            FL_LOG_E(WHO, "%s: unreadable subject", spec->issuer_crt);
            rc = FL_EFORMAT;
            goto out;
        }
        signer = &issuer_key;
    } else {
        snprintf(issuer_name, sizeof issuer_name, "%s", subject);
    }

    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, &key);
    mbedtls_x509write_crt_set_issuer_key(&crt, signer);
    unsigned char rnd[16];
    if ((ret = mbedtls_ctr_drbg_random(&drbg, rnd, sizeof rnd)) != 0)
        goto fail;
    rnd[0] &= 0x7f; /* a positive serial */
    rnd[0] |= 0x01; /* and never zero */
    char nb[32], na[32];
    fmt_time(spec->not_before, nb);
    fmt_time(spec->not_after, na);
    if ((ret = mbedtls_mpi_read_binary(&serial, rnd, sizeof rnd)) != 0 ||
        (ret = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_name(&crt, subject)) != 0 ||
        (ret = mbedtls_x509write_crt_set_issuer_name(&crt, issuer_name)) != 0 ||
        (ret = mbedtls_x509write_crt_set_validity(&crt, nb, na)) != 0 ||
        (ret = mbedtls_x509write_crt_set_basic_constraints(&crt, spec->is_ca, spec->is_ca ? 0 : -1)) != 0 ||
        (ret = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
        (ret = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0 ||
        (ret = mbedtls_x509write_crt_set_key_usage(
             &crt, spec->is_ca ? (MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN)
                               : MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) != 0)
        goto fail;
    if (spec->n_dns) {
        unsigned char der[1024], *start;
        size_t len;
        if ((ret = san_der(spec->dns_names, spec->n_dns, der, sizeof der, &start, &len)) != 0 ||
            (ret = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                                       MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME),
                                                       0, start, len)) != 0)
            goto fail;
    }

    pem = calloc(1, pem_size);
    if (!pem) {
        rc = FL_ENOMEM;
        goto out;
    }
    if ((ret = mbedtls_pk_write_key_pem(&key, pem, pem_size)) != 0)
        goto fail;
    if ((rc = write_new(spec->out_key, pem, strlen((char *)pem), 0600)) != 0)
        goto out;
    memset(pem, 0, pem_size);
    if ((ret = mbedtls_x509write_crt_pem(&crt, pem, pem_size, mbedtls_ctr_drbg_random, &drbg)) != 0) {
        unlink(spec->out_key);
        goto fail;
    }
    if ((rc = write_new(spec->out_crt, pem, strlen((char *)pem), 0644)) != 0) {
        unlink(spec->out_key);
        goto out;
    }
    rc = 0;
    goto out;
fail:
    tls_err("writing the certificate", ret);
    rc = FL_ETLS;
out:
    if (pem) {
        mbedtls_platform_zeroize(pem, pem_size);
        free(pem);
    }
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&crt);
    mbedtls_x509_crt_free(&issuer);
    mbedtls_pk_free(&issuer_key);
    mbedtls_pk_free(&key);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    return rc;
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST)
        return 0;
    FL_LOG_E(WHO, "%s: cannot create directory: %s", dir, strerror(errno));
    return FL_EIO;
}

int fl_certs_init(const char *dir, const char *server_name)
{
    if (!dir || !fl_certs_valid_name(server_name)) {
        FL_LOG_E(WHO, "invalid server name '%s'", server_name ? server_name : "");
        return FL_EINVAL;
    }
    int rc = make_dir(dir);
    if (rc)
        return rc;
    char ca_crt[4096], ca_key[4096], srv_crt[4096], srv_key[4096];
    snprintf(ca_crt, sizeof ca_crt, "%s/ca.crt", dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", dir);
    snprintf(srv_crt, sizeof srv_crt, "%s/server.crt", dir);
    snprintf(srv_key, sizeof srv_key, "%s/server.key", dir);
    int64_t now = (int64_t)time(NULL);
    fl_certs_spec_t ca = {.cn = "fedopt-ca", .is_ca = 1, .not_before = now - DAY,
                          .not_after = now + 3650LL * DAY, .out_crt = ca_crt, .out_key = ca_key};
    if ((rc = fl_certs_make(&ca)) != 0)
        return rc;
    const char *dns[2] = {server_name, "localhost"};
    fl_certs_spec_t srv = {.cn = server_name, .dns_names = dns,
                           .n_dns = strcmp(server_name, "localhost") ? 2 : 1,
                           .not_before = now - DAY, .not_after = now + 730LL * DAY,
                           .issuer_crt = ca_crt, .issuer_key = ca_key,
                           .out_crt = srv_crt, .out_key = srv_key};
    return fl_certs_make(&srv);
}

int fl_certs_issue(const char *dir, const char *name)
{
    if (!dir || !fl_certs_valid_name(name)) {
        FL_LOG_E(WHO, "invalid client name '%s' (use 1-64 of A-Z a-z 0-9 . _ -)", name ? name : "");
        return FL_EINVAL;
    }
    char sub[4096], crt[4200], key[4200], ca_crt[4096], ca_key[4096];
    snprintf(ca_crt, sizeof ca_crt, "%s/ca.crt", dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", dir);
    if (access(ca_crt, R_OK) != 0 || access(ca_key, R_OK) != 0) {
        FL_LOG_E(WHO, "%s: no readable fleet CA there (run 'fedopt-server certs init %s' first)",
                 ca_crt, dir);
        return FL_ENOTFOUND;
    }
    snprintf(sub, sizeof sub, "%s/clients", dir);
    int rc = make_dir(sub);
    if (rc)
        return rc;
    snprintf(crt, sizeof crt, "%s/%s.crt", sub, name);
    snprintf(key, sizeof key, "%s/%s.key", sub, name);
    int64_t now = (int64_t)time(NULL);
    fl_certs_spec_t c = {.cn = name, .not_before = now - DAY, .not_after = now + 730LL * DAY,
                         .issuer_crt = ca_crt, .issuer_key = ca_key, .out_crt = crt, .out_key = key};
    return fl_certs_make(&c);
}
