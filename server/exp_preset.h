/* exp_preset: the paper's tasks as experiment presets (model, data, partition,
 * clients per round, batch, rounds, metric, and the best learning rates and τ
 * the paper reports per ServerOpt), for `fedopt-server experiment`.
 *
 * Only Fashion-MNIST ships on a Debian machine, so `fmnist_cr` (cnn,
 * Dirichlet label skew) stands in for EMNIST CR and `fmnist_ae` for EMNIST AE
 * with those tasks' rates; the other presets have no data of their own (the
 * grid names the user's files). The table is static and read-only. */
#ifndef FL_SERVER_EXP_PRESET_H
#define FL_SERVER_EXP_PRESET_H

#include <stdio.h>

/* The five ServerOpts in the paper's table order. */
#define FL_EXP_NOPTS 5
extern const char *const fl_exp_opt_names[FL_EXP_NOPTS];

/* The paper's best rates for one optimizer, as log10 exponents; tau is NaN
 * where the optimizer has none (FedAvg, FedAvgM). */
typedef struct {
    double client_lr, server_lr, tau;
} fl_exp_rates_t;

typedef struct {
    const char *name;       /* "fmnist_cr" */
    const char *stands_for; /* the paper's task it follows */
    const char *model;
    const char *data;      /* a data spec source, or NULL: the grid must give one */
    const char *eval_data; /* central evaluation data, or NULL: same as data when set */
    const char *partition; /* "dirichlet" (α from the alpha axis), "natural", ... */
    double alpha;          /* default α for "dirichlet"; NaN otherwise */
    long clients;          /* clients the data is split into (0: natural groups, the grid must say) */
    long clients_per_round, batch_size, rounds;
    const char *metric; /* "accuracy", "mse" or "recall@5" */
    int has_rates; /* 0: the paper gives no rates for this task here */
    fl_exp_rates_t best[FL_EXP_NOPTS]; /* in fl_exp_opt_names order */
} fl_exp_preset_t;

/* The preset called name, or NULL. */
const fl_exp_preset_t *fl_exp_preset_find(const char *name);

/* The index of a ServerOpt name in fl_exp_opt_names, or -1. */
int fl_exp_opt_index(const char *name);

/* Prints the preset names, one per line with what they stand for. */
void fl_exp_preset_list(FILE *out);

#endif
