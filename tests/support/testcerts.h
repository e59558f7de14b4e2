/* testcerts: throw-away fleet certificates for tests (common/certs).
 *
 * fl_testcerts_make creates, in a fresh temporary directory:
 *   ca.crt/.key, server.crt/.key (CN localhost)      the fleet (fl_certs_init)
 *   clients/alice.*, clients/bob.*                   valid clients
 *   clients/old.*                                    a client whose certificate expired
 *   other/ca.*, other/clients/mallory.*              a second, unrelated CA and its client
 * Paths are built with fl_testcerts_path. */
#ifndef FL_TESTCERTS_H
#define FL_TESTCERTS_H

#include <stddef.h>

typedef struct {
    char dir[256];
} fl_testcerts_t;

/* Creates the directory and every certificate above. Returns 0 or an FL_E* code. */
int fl_testcerts_make(fl_testcerts_t *t);

/* Writes "<dir>/<rel>" into a static buffer of `slot` (0..7) and returns it,
 * so a call may use several paths at once. */
const char *fl_testcerts_path(const fl_testcerts_t *t, int slot, const char *rel);

/* Removes the directory and everything in it. Accepts an unmade t. */
void fl_testcerts_remove(fl_testcerts_t *t);

#endif
