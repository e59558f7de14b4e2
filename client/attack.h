/* attack: Byzantine clients for testing the server's robust aggregation
 * (fedopt-client fleet --byzantine-rate R --attack SPEC).
 *
 *   scale:S      upload S times the honest delta (S may be negative);
 *   signflip     upload the negated honest delta;
 *   gaussian:SD  upload N(0, SD^2) noise in place of the delta;
 *   labelflip    train on flipped labels (label -> classes - 1 - label) and
 *                upload that honest-looking delta;
 *   secagg-key, secagg-share, secagg-replay
 *                in a secure-aggregation round, lie in the protocol rather
 *                than in the delta (client/secure.h): advertise a mask key
 *                other than the signed one, reveal a wrong share, or send
 *                the key advertisement twice.
 * An attacker still reports its true example count. Which clients attack is
 * fixed for the fleet: the first round(R * clients) client ids of the
 * partition, so a run's attackers are the same whatever the seed and the
 * count is exact. The Gaussian attack draws from the reproducible stream
 * {seed, client id, round, FL_RNG_CHAOS, 0xA77AC4} (the fleet's faults are
 * meant to be replayable; nothing here needs secrecy). */
#ifndef FL_CLIENT_ATTACK_H
#define FL_CLIENT_ATTACK_H

#include <stddef.h>
#include <stdint.h>

#include "common/data/dataset.h"

typedef enum {
    FL_ATTACK_NONE = 0,
    FL_ATTACK_SCALE,
    FL_ATTACK_SIGNFLIP,
    FL_ATTACK_GAUSSIAN,
    FL_ATTACK_LABELFLIP,
    FL_ATTACK_SECAGG_KEY,    /* secure rounds: advertise a key other than the signed one */
    FL_ATTACK_SECAGG_SHARE,  /* secure rounds: reveal a wrong share at unmasking */
    FL_ATTACK_SECAGG_REPLAY, /* secure rounds: send the key advertisement twice */
} fl_attack_kind_t;

typedef struct {
    fl_attack_kind_t kind;
    double param; /* S (scale) or SD (gaussian) */
} fl_attack_t;

/* Parses "scale:S", "signflip", "gaussian:SD" (SD >= 0), "labelflip",
 * "secagg-key", "secagg-share" or "secagg-replay".
 * Returns 0 or FL_EINVAL. */
int fl_attack_parse(const char *s, fl_attack_t *out);

/* 1 when client `id` of a partition of `clients` attacks at rate R in [0, 1]. */
int fl_attack_is_byzantine(uint64_t id, size_t clients, double rate);

/* Turns the honest delta (n floats) into the attack's upload in place;
 * labelflip and none leave it. */
void fl_attack_delta(const fl_attack_t *a, float *delta, size_t n, uint64_t seed, uint64_t id, uint64_t round);

/* labelflip: flips every label of d in place (classification data with one
 * label per example; others are left as they are). Returns 1 when labels
 * were flipped, else 0. */
int fl_attack_flip_labels(const fl_attack_t *a, fl_dataset_t *d);

#endif
