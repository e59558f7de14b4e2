/* fedopt-server certs: creates a fleet's CA, server and client certificates
 * (common/net/certs does the work). */
#include <stdio.h>
#include <string.h>

#include "common/base/error.h"
#include "common/net/certs.h"
#include "server/commands.h"

void fl_server_cmd_certs_usage(FILE *out)
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
    enum { O_SNAME = 1 };
    static const fl_cli_opt_t opts[] = {{"server-name", 1, O_SNAME}, {NULL, 0, 0}};
    const char *pos[3], *name = NULL;
    int n = 0, id;
    fl_cli_t cli;
    fl_cli_init(&cli, "fedopt-server", "certs", opts, NULL, argc, argv);
    while ((id = fl_cli_next(&cli)) != FL_CLI_END) {
        if (id == FL_CLI_ERR)
            return FL_CLI_USAGE;
        if (id == O_SNAME)
            name = cli.val;
        else if (n == 3)
            return fl_cli_error(&cli, "unexpected argument '%s'", cli.val);
        else
            pos[n++] = cli.val;
    }
    int init = n >= 1 && strcmp(pos[0], "init") == 0, issue = n >= 1 && strcmp(pos[0], "issue") == 0;
    if (!init && !issue)
        return n ? fl_cli_error(&cli, "unknown subcommand '%s' (init or issue)", pos[0])
                 : fl_cli_error(&cli, "which subcommand? (init or issue)");
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
