/* gradcheck: finite-difference checks of layer and model gradients, for
 * tests. Float32 kernels are compared with central differences of a loss
 * accumulated in double, on small shapes so every element (or a random
 * sample of a big tensor) is checked in milliseconds.
 *
 * An element passes when |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
 * Elements where the function has a kink within +-eps (one-sided slopes
 * disagree) are skipped and counted.
 * Each check prints its worst element, so a failure says where and by how much. */
#ifndef FL_TEST_GRADCHECK_H
#define FL_TEST_GRADCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "common/nn/models.h"
#include "common/nn/layer.h"

typedef struct {
    double eps;          /* finite-difference step (default 1e-3) */
    double rtol, atol;   /* tolerances (defaults 2e-2, 1e-4) */
    size_t max_per_tensor; /* check at most this many elements per tensor, sampled (0 = all) */
    uint64_t seed;       /* inputs, probe weights, parameter init and the sample */
    /* Optional input generator (e.g. token ids for an embedding); default U(-1, 1). */
    void (*gen_input)(float *x, size_t count, uint64_t seed, void *ud);
    void *ud;
    int check_input;     /* also check dL/dx (default for layers: yes, set by fl_gc_defaults) */
    size_t tensor_stride; /* fl_gc_model: check every tensor_stride-th parameter tensor,
                             the last one always (0 or 1 = every tensor) */
} fl_gc_opts_t;

typedef struct {
    size_t checked;  /* elements compared */
    size_t failed;   /* elements outside the tolerance */
    size_t skipped;  /* elements at a kink of the function (not compared); a check
                        fails when they exceed a quarter of the compared ones */
    double worst;    /* largest |a - n| / (atol + rtol * max(|a|, |n|)): <= 1 passes */
} fl_gc_result_t;

/* Default options. */
fl_gc_opts_t fl_gc_defaults(void);

/* Checks layer l, freshly created into *layout (which it alone populated), on
 * a batch of n examples: L = sum(y .* r) with random probe r, so dL/dy = r.
 * Checks every parameter tensor and, with o->check_input, the input. The
 * layer's params are initialised with ops->init. Stochastic layers see the
 * same random stream for every evaluation. Returns 0 when every element
 * passes, -1 otherwise (or on allocation failure); *res may be NULL. */
int fl_gc_layer(fl_layer_t *l, fl_params_t *layout, size_t n, const fl_gc_opts_t *o,
                fl_gc_result_t *res);

/* Checks model m's loss (fl_model_loss, training mode with fixed dropout masks)
 * against finite differences in its parameters, on x[n, in_dim] and labels y
 * (NULL for MSE-input models). Parameters are those currently in m. */
int fl_gc_model(fl_model_t *m, const float *x, const int32_t *y, size_t n, const fl_gc_opts_t *o,
                fl_gc_result_t *res);

#endif
