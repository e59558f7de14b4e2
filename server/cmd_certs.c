/* fedopt-server certs: creates a fleet's CA, server and client certificates
 * (common/certs does the work). */
#include <stdio.h>
#include <string.h>

#include "common/net/certs.h"
#include "common/base/error.h"
#include "server/commands.h"

static void certs_usage(FILE *out)
{
    fprintf(out,
            "usage: fedopt-server certs init DIR [--server-name NAME]\n"
            "       fedopt-server certs issue DIR NAME\n\n"
            "init   creates DIR/ca.crt, ca.key (the fleet CA) and server.crt, server.key\n"
            "       (CN and DNS names NAME and localhost; NAME defaults to localhost)\n"
            "issue  creates DIR/clients/NAME.crt and NAME.key signed by the fleet CA;\n"
            "       NAME (1-64 of A-Z a-z 0-9 . _ -) is the client's identity\n"
            "Keys are ECDSA P-256 (mode 0600); existing files are never overwritten.\n");
}

int fl_server_cmd_certs(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        certs_usage(stdout);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "init") == 0) {
        const char *name = "localhost";
        if (argc == 5 && strcmp(argv[3], "--server-name") == 0)
            name = argv[4];
        else if (argc != 3) {
            certs_usage(stderr);
            return 2;
        }
        int rc = fl_certs_init(argv[2], name);
        if (rc) {
            fprintf(stderr, "fedopt-server certs init: %s\n", fl_strerror(rc));
            return 1;
        }
        printf("created %s/ca.crt, ca.key, server.crt, server.key (server name %s)\n", argv[2], name);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "issue") == 0) {
        int rc = fl_certs_issue(argv[2], argv[3]);
        if (rc) {
            fprintf(stderr, "fedopt-server certs issue: %s\n", fl_strerror(rc));
            return 1;
        }
        printf("created %s/clients/%s.crt and %s.key\n", argv[2], argv[3], argv[3]);
        return 0;
    }
    certs_usage(stderr);
    return 2;
}
