/* sasim: a whole secure-aggregation round in memory, n saclient parties
 * and one saserver, with dropouts at chosen phases and a few attacks; the
 * protocol tests and bench_secagg share it. Every party's input is drawn
 * from a stream of (seed, party), and the plain sum over the parties whose
 * masked input the server received is computed beside the protocol, so a
 * caller compares the two. */
#ifndef FL_TEST_SASIM_H
#define FL_TEST_SASIM_H

#include <stddef.h>
#include <stdint.h>

#include "common/secagg/saserver.h"

/* Where a party stops: before its advert, its shares, its masked input,
 * its unmasking answer (or never). */
enum { FL_SASIM_STAY = 0, FL_SASIM_DROP_ADVERT, FL_SASIM_DROP_SHARE, FL_SASIM_DROP_MASK,
       FL_SASIM_DROP_UNMASK };

typedef struct {
    uint32_t n, k, t, dim;
    uint64_t seed;
    const uint8_t *drop_at;    /* [n] FL_SASIM_*, or NULL: nobody drops */
    int shared_sign_key;       /* 1: one certificate key for all (fast) */
    const uint32_t *const *inputs; /* [n][dim] the parties' inputs, or NULL:
                                      drawn from (seed, party) */
    /* attacks (-1: none) */
    int substitute_key_of;     /* the server forwards this party's advert
                                  with another c key to its first neighbour */
    int lying_revealer;        /* this party flips a bit of each share it reveals */
    int tampered_cipher_of;    /* this party's ciphertexts arrive altered (as a
                                  replay from another round would: no tag fits) */
    uint32_t tampered_ciphers; /* how many of them (0: all) */
    int replay_masked_of;      /* this party's masked input is sent twice */
} fl_sasim_cfg_t;

typedef struct {
    int rc;                    /* the server's finish (or the phase end that failed) */
    uint32_t *sum;             /* [dim] the unmasked sum (valid when rc == 0) */
    uint32_t *plain;           /* [dim] the plain sum over U3 */
    fl_saserver_stats_t st;
    uint32_t client_eauth;     /* parties that refused a forwarded advert */
    uint32_t client_failed;    /* parties that stopped on any other error */
    uint32_t bad_ciphers;      /* ciphertexts parties could not open */
    int replay_rc;             /* the server's answer to the replayed input */
    double client_cpu_s;       /* all parties' protocol calls, CPU seconds */
    double client_cpu_max_s;   /* the busiest party's */
    double server_cpu_s;
    double bytes_up, bytes_down; /* per party that stayed, protocol payload */
} fl_sasim_result_t;

/* Runs the round; 0 when the simulation itself ran (res->rc holds the
 * protocol's outcome), a negative FL_E* code on a harness failure. The
 * caller frees res with fl_sasim_result_free. */
int fl_sasim_run(const fl_sasim_cfg_t *cfg, fl_sasim_result_t *res);
void fl_sasim_result_free(fl_sasim_result_t *res);

#endif
