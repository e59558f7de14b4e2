/* certs: a fleet's X.509 certificates (ECDSA P-256, SHA-256), written with
 * mbedTLS's x509 write API so nobody needs OpenSSL know-how.
 *
 * A fleet directory holds
 *   ca.crt, ca.key                 the fleet CA (signs everything below)
 *   server.crt, server.key         the server (CN and DNS names: the server name)
 *   clients/NAME.crt, NAME.key     one per client; NAME is the client's
 *                                  identity (certificate CN) in logs and the DB
 * Keys are PEM, written with mode 0600; nothing is ever overwritten. */
#ifndef FL_CERTS_H
#define FL_CERTS_H

#include <stddef.h>
#include <stdint.h>

/* Longest common name accepted. */
#define FL_CERTS_NAME_MAX 64

/* Everything about one certificate to make. */
typedef struct {
    const char *cn;               /* subject common name (fl_certs_valid_name) */
    const char *const *dns_names; /* subjectAltName DNS entries, may be NULL */
    size_t n_dns;
    int is_ca;                 /* 1: a CA (keyCertSign), 0: a TLS peer */
    int64_t not_before;        /* unix seconds */
    int64_t not_after;         /* unix seconds */
    const char *issuer_crt;    /* PEM of the signing CA; NULL = self-signed */
    const char *issuer_key;
    const char *out_crt;       /* files to create (must not exist) */
    const char *out_key;
} fl_certs_spec_t;

/* True when name is a usable CN: 1..FL_CERTS_NAME_MAX characters from
 * [A-Za-z0-9._-], not starting with '.' or '-'. */
int fl_certs_valid_name(const char *name);

/* Creates a fresh P-256 key and a certificate as spec says. Returns 0,
 * FL_EINVAL (bad spec or name), FL_EEXIST (an output exists), FL_EIO,
 * FL_EFORMAT (unreadable issuer files) or FL_ETLS (mbedTLS failed). Logs the
 * reason. */
int fl_certs_make(const fl_certs_spec_t *spec);

/* Creates dir (mode 0700) if needed, then ca.* (10 years) and server.* (2
 * years, CN server_name, DNS names server_name and "localhost"). Returns as
 * fl_certs_make; FL_EEXIST if dir already has a CA. */
int fl_certs_init(const char *dir, const char *server_name);

/* Issues dir/clients/NAME.crt and .key (2 years) signed by dir's CA.
 * Returns as fl_certs_make, or FL_ENOTFOUND when dir has no CA. */
int fl_certs_issue(const char *dir, const char *name);

#endif
