/* clientopt: the client optimizer (SGD with optional momentum and L2 weight
 * decay) and the learning-rate schedules across rounds.
 *
 * The server owns the schedule: it evaluates fl_lr_schedule_at for the round
 * and sends the client the resulting rate in the task, so a client needs no
 * knowledge of the schedule itself. */
#ifndef FL_CLIENTOPT_H
#define FL_CLIENTOPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/base/params.h"

typedef struct {
    float lr;
    float momentum;     /* 0 = plain SGD (the paper) */
    float weight_decay; /* L2 coefficient, applied to views flagged FL_PARAM_DECAY */
} fl_sgd_config_t;

/* SGD state: the config and, with momentum, a velocity buffer of P floats. */
typedef struct {
    fl_sgd_config_t cfg;
    float *velocity; /* NULL without momentum */
    size_t n;
} fl_sgd_t;

/* Prepares *s for parameters with p's layout (velocity zeroed when momentum > 0).
 * Returns 0, FL_EINVAL (negative/non-finite settings, momentum >= 1) or FL_ENOMEM. */
int fl_sgd_init(fl_sgd_t *s, const fl_sgd_config_t *cfg, const fl_params_t *p);

/* Releases the velocity buffer. Accepts NULL. */
void fl_sgd_free(fl_sgd_t *s);

/* Clears the velocity (start of a new local training). */
void fl_sgd_reset(fl_sgd_t *s);

/* One SGD step: for each element g' = g + wd*x (decayed views only),
 * vel = momentum*vel + g', x -= lr*vel (or x -= lr*g' without momentum).
 * `grad` has the same layout as `p`. */
void fl_sgd_step(fl_sgd_t *s, fl_params_t *p, const fl_params_t *grad);

typedef enum {
    FL_LR_CONSTANT = 0,
    FL_LR_EXP = 1,        /* lr * rate^(t/steps) */
    FL_LR_INV_LINEAR = 2, /* lr / (1 + rate * t/steps) */
    FL_LR_INV_SQRT = 3,   /* lr / sqrt(1 + rate * t/steps) */
} fl_lr_kind_t;

typedef struct {
    fl_lr_kind_t kind;
    double lr;           /* base rate */
    double rate;         /* decay rate */
    double steps;        /* rounds per decay period (> 0) */
    int staircase;       /* floor(t/steps): decay in steps instead of smoothly */
    uint32_t warmup;     /* first `warmup` rounds ramp linearly up to the schedule */
} fl_lr_schedule_t;

/* Parses a schedule: "constant", "exp:RATE:STEPS", "invlin:RATE:STEPS",
 * "invsqrt:RATE:STEPS", each optionally followed by ":stair" and/or
 * ":warmup=N". The base lr is given separately. Returns 0 or FL_EINVAL. */
int fl_lr_schedule_parse(const char *spec, double base_lr, fl_lr_schedule_t *out);

/* The client learning rate for 0-based round t. */
double fl_lr_schedule_at(const fl_lr_schedule_t *s, uint64_t t);

#endif
