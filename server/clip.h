/* clip: server-side L2 clipping of each client delta, with a fixed bound or
 * one adapted every round towards a quantile of the norms (Andrew et al.
 * 2021, "Differentially Private Learning with Adaptive Clipping").
 *
 * The norm of a delta is known once the delta has fully arrived, which is
 * when the server folds it into its accumulator: fl_clip_scale gives the
 * factor min(1, C / norm) to fold it with, so clipping costs no extra copy
 * of the model. fl_clip_observe counts whether the norm was within C;
 * fl_clip_end_round moves C geometrically,
 *   C <- C * exp(-lr * (b - gamma)),
 * b the fraction of this round's updates with norm <= C, gamma the target
 * quantile: C grows when fewer than gamma of the updates fit, shrinks when
 * more do. Without DP the fraction is used as is; under DP the aggregator
 * (server/aggregate.h) steps with the paper's private estimate instead,
 * fl_clip_noised_within, whose noise server/dp.h accounts for.
 *
 * Not thread-safe; one instance per run. */
#ifndef FL_SERVER_CLIP_H
#define FL_SERVER_CLIP_H

#include <stdint.h>

typedef enum {
    FL_CLIP_NONE = 0,
    FL_CLIP_FIXED = 1,
    FL_CLIP_ADAPTIVE = 2,
} fl_clip_mode_t;

typedef struct {
    fl_clip_mode_t mode;
    double norm;     /* C (fixed), or C's starting value (adaptive); > 0 */
    double quantile; /* gamma in [0, 1] (adaptive) */
    double lr;       /* eta > 0, the geometric step (adaptive) */
} fl_clip_config_t;

/* Parses "none", a positive number ("1.5": fixed C), or "adaptive" with an
 * optional starting C ("adaptive", "adaptive:0.1"); quantile and lr are
 * left as they are in *out (set them first). Returns 0 or FL_EINVAL. */
int fl_clip_parse(const char *s, fl_clip_config_t *out);

typedef struct {
    fl_clip_config_t cfg;
    double c;              /* the current bound */
    uint32_t seen, within; /* this round's updates, and those with norm <= c */
} fl_clip_t;

/* Starts at cfg->norm. Returns 0 or FL_EINVAL (bad ranges). */
int fl_clip_init(fl_clip_t *c, const fl_clip_config_t *cfg);

/* The factor to scale a delta of this norm by: min(1, C / norm), 1 when
 * clipping is off or the norm is 0. A non-finite norm gives 0 (the caller
 * refuses such a delta before). */
double fl_clip_scale(const fl_clip_t *c, double norm);

/* Counts one accepted update's (unclipped) norm for the adaptive rule. */
void fl_clip_observe(fl_clip_t *c, double norm);

/* Ends the round: the adaptive rule moves C (no change when no update was
 * seen, or the mode is not adaptive); the counts restart. */
void fl_clip_end_round(fl_clip_t *c);

/* The adaptive rule's step for a round where a fraction `within` of the
 * updates had norm <= C (NaN: no update, no step); no-op unless adaptive.
 * fl_clip_end_round applies it to the counted updates; resume replays it
 * from the round log. */
void fl_clip_step(fl_clip_t *c, double within);

/* The fraction of this round's observed norms within C (NaN when none). */
double fl_clip_within(const fl_clip_t *c);

/* The paper's private estimate of the fraction within C: the count of this
 * round's observed norms within C, each record centred to +-1/2 (so one
 * client moves the sum by at most 1/2), plus `noise` (the caller's draw of
 * N(0, sigma_b^2)), over the fixed denominator (> 0), shifted back by 1/2 and
 * clamped to [0, 1]:
 *   b = clamp((within - seen/2 + noise) / denominator + 1/2, 0, 1).
 * With noise 0 and denominator = seen it is fl_clip_within. NaN when no norm
 * was observed (the round releases nothing). */
double fl_clip_noised_within(const fl_clip_t *c, double noise, double denominator);

/* The current bound (0 when clipping is off). */
double fl_clip_bound(const fl_clip_t *c);

/* Sets the current bound (restored on resume). Returns 0 or FL_EINVAL. */
int fl_clip_set_bound(fl_clip_t *c, double bound);

#endif
