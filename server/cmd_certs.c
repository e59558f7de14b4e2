/* fedopt-server certs: creates a fleet's CA, server and client certificates
 * (common/net/certs does the work). */
#include <mbedtls/base64.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/error.h"
#include "common/net/certs.h"
#include "server/commands.h"

void fl_server_cmd_certs_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-server certs init DIR [--server-name NAME]\n"
            "       fedopt-server certs issue DIR NAME\n"
            "       fedopt-server certs k8s DIR [--namespace NS]\n\n"
            "init   creates DIR/ca.crt, ca.key (the fleet CA) and server.crt, server.key\n"
            "       (CN and DNS names NAME and localhost; NAME defaults to localhost)\n"
            "issue  creates DIR/clients/NAME.crt and NAME.key signed by the fleet CA;\n"
            "       NAME (1-64 of A-Z a-z 0-9 . _ -) is the client's identity\n"
            "k8s    writes DIR's PKI to stdout as Kubernetes Secret manifests: fedopt-server-pki\n"
            "       (ca.crt, server.crt, server.key) and fedopt-fleet-pki (ca.crt, ca.key, for the\n"
            "       fleet Job that issues its clients' certificates); see deploy/k8s/\n"
            "Keys are ECDSA P-256 (mode 0600); existing files are never overwritten.\n");
}

/* Prints "  KEY: BASE64" for DIR/KEY. Returns 0 or 1 (reported). */
static int put_file_b64(const char *dir, const char *key)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, key);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fedopt-server certs k8s: cannot read %s (made by certs init?)\n", path);
        return 1;
    }
    /* Certificates and P-256 keys are a few KiB; anything far larger is not one. */
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    int big = n == sizeof buf, err = ferror(f);
    fclose(f);
    if (big || err || n == 0) {
        fprintf(stderr, "fedopt-server certs k8s: %s is %s\n", path, err ? "unreadable" : n ? "too large" : "empty");
        return 1;
    }
    size_t olen = 0;
    mbedtls_base64_encode(NULL, 0, &olen, buf, n);
    unsigned char *b64 = malloc(olen);
    if (!b64 || mbedtls_base64_encode(b64, olen, &olen, buf, n)) {
        free(b64);
        fprintf(stderr, "fedopt-server certs k8s: out of memory\n");
        return 1;
    }
    printf("  %s: %s\n", key, b64);
    free(b64);
    return 0;
}

static int valid_k8s_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static int certs_k8s(const char *dir, const char *ns)
{
    static const char *const server_keys[] = {"ca.crt", "server.crt", "server.key", NULL};
    static const char *const fleet_keys[] = {"ca.crt", "ca.key", NULL};
    static const struct {
        const char *name, *what;
        const char *const *keys;
    } secrets[] = {
        {"fedopt-server-pki", "the server's certificate and key, and the fleet CA that verifies clients",
         server_keys},
        {"fedopt-fleet-pki", "the fleet CA with its key: fleets issue their clients' certificates", fleet_keys},
    };
    printf("# Made by `fedopt-server certs k8s %s`: the PKI as Kubernetes Secrets.\n"
           "# kubectl apply -f THIS_FILE (keep it as secret as %s/ca.key).\n",
           dir, dir);
    for (size_t i = 0; i < 2; i++) {
        printf("---\n# %s\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n", secrets[i].what,
               secrets[i].name);
        if (ns)
            printf("  namespace: %s\n", ns);
        printf("  labels:\n    app.kubernetes.io/name: fedopt\ntype: Opaque\ndata:\n");
        for (const char *const *k = secrets[i].keys; *k; k++)
            if (put_file_b64(dir, *k))
                return 1;
    }
    return 0;
}

int fl_server_cmd_certs(int argc, char **argv)
{
    enum { O_SNAME = 1, O_NS };
    static const fl_cli_opt_t opts[] = {{"server-name", 1, O_SNAME}, {"namespace", 1, O_NS}, {NULL, 0, 0}};
    const char *pos[3], *name = NULL, *ns = NULL;
    int n = 0, id;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "certs", opts, NULL, argc, argv);
    while ((id = fl_cli_next(&cli)) != FL_CLI_END) {
        if (id == FL_CLI_ERR)
            return FL_CLI_USAGE;
        if (id == O_SNAME)
            name = cli.val;
        else if (id == O_NS)
            ns = cli.val;
        else if (n == 3)
            return fl_cli_error(&cli, "unexpected argument '%s'", cli.val);
        else
            pos[n++] = cli.val;
    }
    int init = n >= 1 && strcmp(pos[0], "init") == 0, issue = n >= 1 && strcmp(pos[0], "issue") == 0;
    int k8s = n >= 1 && strcmp(pos[0], "k8s") == 0;
    if (!init && !issue && !k8s)
        return n ? fl_cli_error(&cli, "unknown subcommand '%s' (init, issue or k8s)", pos[0])
                 : fl_cli_error(&cli, "which subcommand? (init, issue or k8s)");
    if (ns && !k8s)
        return fl_cli_error(&cli, "--namespace is for certs k8s");
    if (k8s) {
        if (n != 2 || name)
            return fl_cli_error(&cli, "certs k8s wants DIR [--namespace NS]");
        if (ns && !valid_k8s_name(ns))
            return fl_cli_error(&cli, "--namespace wants a DNS label (a-z 0-9 -, at most 63), not '%s'", ns);
        return certs_k8s(pos[1], ns);
    }
    if (init && n != 2)
        return fl_cli_error(&cli, "certs init wants DIR [--server-name NAME]");
    if (issue && (n != 3 || name))
        return fl_cli_error(&cli, "certs issue wants DIR NAME");
    int rc;
    if (init) {
        if (!name)
            name = "localhost";
        if ((rc = fl_certs_init(pos[1], name))) {
            fprintf(stderr, "fedopt-server certs init: %s\n", fl_strerror(rc));
            return 1;
        }
        printf("created %s/ca.crt, ca.key, server.crt, server.key (server name %s)\n", pos[1], name);
        return 0;
    }
    if ((rc = fl_certs_issue(pos[1], pos[2]))) {
        fprintf(stderr, "fedopt-server certs issue: %s\n", fl_strerror(rc));
        return 1;
    }
    printf("created %s/clients/%s.crt and %s.key\n", pos[1], pos[2], pos[2]);
    return 0;
}
