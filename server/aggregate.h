/* aggregate: how a round's accepted deltas become the pseudo-gradient D that
 * the ServerOpt applies.
 *
 *   mean          the weighted mean, streamed into the ServerOpt's own
 *                 accumulator as each delta arrives (memory O(model));
 *   median, trimmed_mean:BETA, krum:F,M
 *                 the rules of server/robust.h: the round's deltas are kept
 *                 (K x model floats, bounded by aggregator_memory_mb) and
 *                 combined at the close; every client counts the same;
 *   DP-FedAvg     (dp_noise_multiplier z > 0, mean only) each delta clipped
 *                 to C, summed unweighted, N(0, z^2 C^2) added once to the
 *                 sum (server/dp.h), divided by a fixed denominator
 *                 (clients_per_round: see fl_agg_config_t). With adaptive
 *                 clipping (Andrew et al. 2021) the bound moves with a
 *                 noised count of the updates within it (stddev sigma_b),
 *                 and the sum's noise multiplier becomes
 *                 (z^-2 - (2 sigma_b)^-2)^-1/2, so the round as a whole is
 *                 still the Gaussian mechanism of multiplier z
 *                 (fl_dp_update_multiplier).
 * Clipping (server/clip.h) applies to every rule: each delta is scaled by
 * min(1, C/||delta||) as it is folded in. Whatever the rule, D reaches the
 * ServerOpt as one update of weight 1, so every optimizer (FedAvg ... FedYogi)
 * runs unchanged on top: DP-FedAvg with fedadam is DP-FedAdam.
 *
 * A round: fl_agg_begin (after fl_serveropt_begin), fl_agg_add for each
 * delta (one at a time; safe off the event loop like fl_serveropt_add),
 * fl_agg_finish instead of fl_serveropt_finish. */
#ifndef FL_SERVER_AGGREGATE_H
#define FL_SERVER_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include "server/clip.h"
#include "server/serveropt.h"

typedef enum {
    FL_AGG_MEAN = 0,
    FL_AGG_MEDIAN = 1,
    FL_AGG_TRIMMED_MEAN = 2,
    FL_AGG_KRUM = 3,
} fl_agg_rule_t;

typedef struct {
    fl_agg_rule_t rule;
    double beta;     /* trimmed_mean: fraction trimmed at each end, [0, 0.5) */
    uint32_t f, m;   /* krum: assumed attackers, deltas averaged (m >= 1) */
} fl_agg_spec_t;

/* Parses "mean", "median", "trimmed_mean:BETA" or "krum:F,M" ("krum:F" is
 * M = 1). Returns 0 or FL_EINVAL. */
int fl_agg_parse(const char *s, fl_agg_spec_t *out);

typedef struct {
    fl_agg_spec_t spec;
    uint32_t capacity;          /* K: most deltas one round accepts */
    fl_clip_config_t clip;
    double dp_noise_multiplier; /* z; 0 = no DP */
    /* The fixed denominator of the DP estimate. The server passes
     * clients_per_round: the round closes at K accepted updates, so K is the
     * expected count q*N of McMahan et al. (q = K/N) and does not depend on
     * who reported, which keeps one client's influence on D at C/K; dividing
     * by the actual count would leak that count and raise the sensitivity. */
    double dp_denominator;
    /* Adaptive clipping under DP: sigma_b, the stddev of the noise on each
     * round's count of updates within the bound (in records; > z/2). */
    double dp_count_stddev;
} fl_agg_config_t;

/* Memory the aggregator holds beyond the ServerOpt, in bytes, for models of
 * n parameters (SIZE_MAX when it would overflow). */
size_t fl_agg_memory_bytes(const fl_agg_config_t *cfg, size_t n);

/* Checks the combination: DP needs the mean and a clip bound (adaptive: with
 * dp_count_stddev > dp_noise_multiplier / 2); krum
 * needs capacity >= F + 3 and M <= capacity. Returns 0 or FL_ECONFIG
 * (logged). */
int fl_agg_config_validate(const fl_agg_config_t *cfg);

typedef struct fl_agg fl_agg_t;

/* Creates the aggregator (validates, allocates the buffers, seeds the DP
 * generator from the OS). Returns 0, FL_ECONFIG, FL_ENOMEM or FL_EIO. */
int fl_agg_create(const fl_agg_config_t *cfg, size_t n, fl_agg_t **out);

/* Frees it. Accepts NULL. */
void fl_agg_free(fl_agg_t *a);

/* Opens a round (the ServerOpt's round must be open too). */
void fl_agg_begin(fl_agg_t *a);

/* Folds in one delta of n floats with its weight. *norm (may be NULL)
 * receives the delta's L2 norm before clipping (NaN when refused). Returns 0
 * or what fl_serveropt_add would refuse it with: FL_ENONFINITE, FL_ESHAPE,
 * FL_EINVAL (weight); FL_ESTATE when more than capacity deltas arrive. */
int fl_agg_add(fl_agg_t *a, fl_serveropt_t *opt, const float *delta, size_t n, double num_examples, double *norm);

/* fl_agg_add for `count` deltas; the plain mean without clipping uses
 * fl_serveropt_add_batch's single pass (the path the server had before). */
int fl_agg_add_batch(fl_agg_t *a, fl_serveropt_t *opt, const float *const *deltas, const double *num_examples,
                     size_t count, size_t n, int *rc, double *norm);

/* Closes the round: forms D by the rule, hands it to the ServerOpt and runs
 * fl_serveropt_finish on x. res->accepted counts the deltas that entered the
 * rule. Then the adaptive clip bound moves. Returns 0 or an FL_E* code. */
int fl_agg_finish(fl_agg_t *a, fl_serveropt_t *opt, float *x, size_t n, fl_serveropt_round_t *res);

/* Whether the rule lets the round's last batch and the finish run as one
 * pass (fl_agg_add_batch_finish): the plain mean, without clipping or DP. */
int fl_agg_can_fuse(const fl_agg_t *a);

/* fl_agg_add_batch for the round's last `count` deltas, then fl_agg_finish,
 * in one pass over the model (fl_serveropt_add_batch_finish): x, the
 * optimizer state and res as the two calls would leave them, bit for bit.
 * Every delta must already be known finite (the server checks each as it
 * arrives: fl_wire_event_t.finite); should one not be, FL_ENONFINITE is
 * returned with the round closed and x stepped in part, as
 * fl_serveropt_add_batch_finish says. Returns 0, FL_EUNSUPPORTED (the rule
 * cannot fuse: fl_agg_can_fuse), FL_ENONFINITE, or FL_EINVAL, FL_ESHAPE,
 * FL_ESTATE, FL_ENOMEM with the round still open and untouched. */
int fl_agg_add_batch_finish(fl_agg_t *a, fl_serveropt_t *opt, const float *const *deltas,
                            const double *num_examples, size_t count, size_t n, int *rc, double *norm,
                            float *x, fl_serveropt_round_t *res);

/* The current clip bound (0 when clipping is off): read it before
 * fl_agg_finish moves it. */
double fl_agg_clip_bound(const fl_agg_t *a);

/* After fl_agg_finish: the fraction of the round's updates within the bound
 * that the adaptive rule stepped with (under DP the noised estimate, the only
 * one the round releases; otherwise the exact fraction). NaN when the round
 * had no update. This is what the round log keeps and resume replays. */
double fl_agg_clip_within(const fl_agg_t *a);

/* The noise multiplier applied to the round's sum: z, or under adaptive
 * clipping the larger sigma_update of fl_dp_update_multiplier (0 without DP). */
double fl_agg_update_multiplier(const fl_agg_t *a);

/* Resume: replays one committed round's clip record (the bound it used and
 * the fraction within), leaving the bound where that round's close left it.
 * Returns 0 or FL_EINVAL (clipping off, or a bad bound). */
int fl_agg_clip_replay(fl_agg_t *a, double used, double within);

/* Deltas accepted in the open round. */
uint32_t fl_agg_count(const fl_agg_t *a);

#endif
