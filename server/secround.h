/* secround: the server's side of a secure-aggregation round on the wire
 * (secure_aggregation = true; docs/secure-aggregation.md, proto/README.md
 * "Secure aggregation").
 *
 * It translates between the fedopt messages (SecAggAdvert, SecAggKeys,
 * SecAggShares, SecAggUnmask, SecAggReveal and the masked Update) and the
 * socket-free state machine of common/secagg/saserver, and runs the four
 * phases with a deadline each: a phase ends when every party of it has
 * answered or is gone, or at its deadline (phases 1, 2 and 4: phase_timeout
 * seconds after they began; phase 3, the masked inputs: the round's
 * deadline). The daemon owns the sockets: messages go out through the
 * `send` callback (by party name), and a party the protocol refuses (a bad
 * signature, a message out of phase) is handed to `exclude`, which records
 * and closes it.
 *
 * Only the running sum of the masked inputs is kept, never one of them.
 * When the round is done (fl_secround_done), fl_secround_result gives the
 * weighted mean of the survivors' quantized updates and their total weight,
 * or the reason the round was abandoned: nothing is unmasked unless every
 * secret needed was rebuilt and checked.
 *
 * The unmasking itself (rebuilding the secrets from their shares and
 * regenerating every mask to remove, numel + 1 words each) grows with the
 * model and the dropouts (bench_secagg measures it): with a loop in the
 * config it runs in libuv's thread pool, and the round is busy
 * (fl_secround_busy) until the job's result is back on the loop, where the
 * `done` callback says so. While busy, messages, drops and deadlines leave
 * the round as it is (the survivors are fixed when the reveals end); the
 * job touches only the unmasking's own state, never a party's.
 *
 * One round at a time; every call on the loop thread. */
#ifndef FL_SERVER_SECROUND_H
#define FL_SERVER_SECROUND_H

#include <stddef.h>
#include <stdint.h>

#include <mbedtls/x509_crt.h>
#include <uv.h>

#include "common/net/wire.h"
#include "common/secagg/saserver.h"

typedef struct {
    double dropout;       /* secagg_dropout: parties that may vanish, fraction */
    double corrupt;       /* secagg_corrupt: parties that may collude with the server */
    double clip;          /* secagg_clip: coordinates clamped to [-clip, clip] */
    uint32_t max_weight;  /* secagg_max_weight: weights capped here (1 under uniform weighting) */
    double phase_timeout; /* seconds for phases 1, 2 and 4 */
    uint64_t seed;        /* the graph seed's stream {seed, run, round, FL_RNG_SECAGG} */
    size_t numel;         /* the model's parameters (a masked input has numel + 1 words) */
    uv_loop_t *loop;      /* the unmasking runs in this loop's thread pool; NULL: inline */
} fl_secround_config_t;

/* Security parameters (bits): privacy and correctness of sagraph's bounds. */
#define FL_SECROUND_SIGMA 40.0
#define FL_SECROUND_ETA 20.0

/* The parameters a round of n parties gets. */
typedef struct {
    uint32_t n, k, t;
    int complete;
    double scale;
    double log2_fail_correct, log2_fail_private;
} fl_secround_plan_t;

/* Chooses k and t (fl_sagraph_choose at FL_SECROUND_SIGMA/ETA) and the
 * quantization scale (fl_saquant_init) for n parties. FL_ERANGE when no
 * graph meets the tolerances for n (too few parties) or k exceeds what one
 * SecAggKeys message may carry (FL_WIRE_MAX_REPEATED); FL_EINVAL. */
int fl_secround_plan(uint32_t n, double dropout, double corrupt, double clip, uint32_t max_weight,
                     fl_secround_plan_t *out);

typedef struct {
    /* Sends env to the connected party `name`; nonzero: it is gone. */
    int (*send)(void *ud, const char *name, const Fedopt__Envelope *env);
    /* The protocol refuses party `name` (why: one line); the daemon records
     * it and closes its connection. */
    void (*exclude)(void *ud, const char *name, const char *why);
    /* Optional: the unmasking job of the round is back (done, or closed by
     * fl_secround_end while busy); on the loop thread. */
    void (*done)(void *ud);
} fl_secround_cbs_t;

typedef struct fl_secround fl_secround_t;

int fl_secround_create(const fl_secround_config_t *cfg, const fl_secround_cbs_t *cbs, void *ud,
                       fl_secround_t **out);
void fl_secround_free(fl_secround_t *s);

/* Opens round `round` of run `run_id` over the selected names[0..n) (party i = names[i]),
 * at monotonic time now; the masked inputs are due by masked_deadline.
 * FL_ESTATE when a round is open, fl_secround_plan's and saserver's codes. */
int fl_secround_begin(fl_secround_t *s, int64_t run_id, int64_t round, const char *const *names, size_t n, double now,
                      double masked_deadline);

/* Party i's setup for its TaskOffer (points into s: valid until the next
 * begin). */
const Fedopt__SecAggSetup *fl_secround_setup(fl_secround_t *s, size_t i);

/* The messages of a selected party, by its name. cert is the party's TLS
 * certificate (its key checks the advert's signature; its DER is forwarded
 * to the neighbours). A refusal is logged, and the party excluded when the
 * refusal is a lie rather than lateness; the return is 0 or the code. */
int fl_secround_on_advert(fl_secround_t *s, const char *name, const Fedopt__SecAggAdvert *a,
                          const mbedtls_x509_crt *cert, double now);
int fl_secround_on_shares(fl_secround_t *s, const char *name, const Fedopt__SecAggShares *m, double now);
/* A masked input: nbytes of little-endian words (numel + 1 of them). */
int fl_secround_on_masked(fl_secround_t *s, const char *name, uint64_t round, const uint8_t *bytes,
                          size_t nbytes, double now);
int fl_secround_on_reveal(fl_secround_t *s, const char *name, const Fedopt__SecAggReveal *m, double now);

/* A party's connection is gone (or it was never reached, or declined).
 * When too few parties are left for the round to reach its threshold, it
 * is abandoned at once (done, FL_ECANCELED, the counts in *why) instead of
 * waiting out its phase. */
void fl_secround_drop(fl_secround_t *s, const char *name, double now);

/* Ends phases whose deadline passed (call it from the daemon's tick). */
void fl_secround_tick(fl_secround_t *s, double now);

/* The open round's number (0 when none), and 1 when it is done. */
int64_t fl_secround_round(const fl_secround_t *s);
int fl_secround_done(const fl_secround_t *s);

/* 1 while the unmasking job runs in the thread pool (not done yet; the
 * secround must not be freed until it is back: the loop runs it home). */
int fl_secround_busy(const fl_secround_t *s);

/* 1 when party `name`'s masked input is in the sum. */
int fl_secround_masked(const fl_secround_t *s, const char *name);

/* After done: 0 with the weighted mean of the survivors' updates in mean
 * (numel floats) and their total weight, or the round's failure
 * (FL_ECANCELED, FL_EAUTH, ...) with *why (one line, valid until the next
 * begin). */
int fl_secround_result(fl_secround_t *s, float *mean, double *weight, const char **why);

/* After a successful fl_secround_result: the unmasked sum itself (numel + 1
 * words: the weighted, scaled coordinates and the total weight; what the
 * server learns), for a test's exact comparison. NULL otherwise. */
const uint32_t *fl_secround_sum(const fl_secround_t *s);

/* Closes the round (done or not: a stop abandons it); the next begin may
 * follow. While busy, the round closes when the job is back (its result
 * discarded, `done` called). */
void fl_secround_end(fl_secround_t *s);

/* The saserver counters of the round last opened, its k and t (zeros
 * while busy). */
void fl_secround_stats(const fl_secround_t *s, fl_saserver_stats_t *out, uint32_t *k, uint32_t *t);

#endif
