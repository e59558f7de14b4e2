/* exp_grid: an experiment's grid file (INI, read with inih) and the cells it
 * expands to, for `fedopt-server experiment`.
 *
 *   [experiment]   preset, rounds, seeds, eval_every, eval_max_examples, jobs,
 *                  and overrides of the preset: model, data, eval_data,
 *                  partition, clients, batch_size, data_seed
 *   [axes]         server_opt, server_lr, client_lr, tau, clients_per_round,
 *                  local_epochs, alpha; server_lr.OPT / client_lr.OPT / tau.OPT
 *                  give one optimizer its own values
 *   [server]       any other `fedopt-server run` setting, passed as --NAME VALUE
 *
 * An axis is a comma-separated list of items; an item is a number (0.1), a
 * power of ten (10^-1.5), a log lattice (10^-3..10^0 step 0.5: the exponents
 * -3, -2.5, ..., 0, which must be a whole number of steps), or `paper` (the
 * preset's best value for each optimizer). A lattice point's value is exactly
 * what its label (10^-2.5) parses to, so a grid written either way runs the
 * same cells.
 *
 * Cells, in the canonical order: for each server_opt (in the file's order),
 * server_lr, client_lr, tau, clients_per_round, local_epochs, alpha (each in
 * the file's order), then seed innermost. τ means nothing to FedAvg and
 * FedAvgM: their cells take no τ (the axis collapses to one cell, key "tau=-").
 * A cell's key names every value (its directory under DIR/cells); cells with
 * equal keys but the seed form one setting, over which `report` averages.
 *
 * Sharding: `--shard I/N` runs the cells whose canonical index mod N == I. */
#ifndef FL_SERVER_EXP_GRID_H
#define FL_SERVER_EXP_GRID_H

#include <stddef.h>
#include <stdint.h>

#include "server/exp_preset.h"

#define FL_EXP_MAX_VALUES 64
#define FL_EXP_MAX_SEEDS 64
#define FL_EXP_MAX_PASS 32

/* One value of an axis: the number and its canonical label ("10^-2.5",
 * "0.1"), which is what keys and tables show. */
typedef struct {
    double v;
    char label[32];
} fl_exp_value_t;

typedef struct {
    size_t n;
    int paper; /* `paper`: the preset's best value, per optimizer */
    fl_exp_value_t v[FL_EXP_MAX_VALUES];
} fl_exp_axis_t;

/* The numeric axes, in the canonical order. */
enum { FL_EXP_SERVER_LR, FL_EXP_CLIENT_LR, FL_EXP_TAU, FL_EXP_K, FL_EXP_E, FL_EXP_ALPHA, FL_EXP_NAXES };
extern const char *const fl_exp_axis_names[FL_EXP_NAXES];

typedef struct {
    char task[64]; /* the preset's name, or "custom" */
    const fl_exp_preset_t *preset;
    char model[64], data[1024], eval_data[1024], partition[128], metric[16];
    long clients, batch_size, rounds, eval_every, eval_max_examples, jobs, data_seed;
    size_t nseeds;
    uint64_t seeds[FL_EXP_MAX_SEEDS];
    size_t nopts;
    char opts[FL_EXP_NOPTS][16];
    fl_exp_axis_t axis[FL_EXP_NAXES];
    int has_opt_axis[FL_EXP_NOPTS][3];      /* server_lr.OPT, client_lr.OPT, tau.OPT given */
    fl_exp_axis_t opt_axis[FL_EXP_NOPTS][3]; /* their values */
    size_t npass;
    char pass_name[FL_EXP_MAX_PASS][64], pass_value[FL_EXP_MAX_PASS][256];
} fl_exp_grid_t;

typedef struct {
    size_t index; /* canonical position */
    char server_opt[16];
    fl_exp_value_t val[FL_EXP_NAXES]; /* tau: label "-" for FedAvg/FedAvgM; alpha: "-" without Dirichlet */
    uint64_t seed;
    char setting[256]; /* key without the seed */
    char key[288];     /* setting + ",seed=S": the cell's directory name */
} fl_exp_cell_t;

/* Parses one axis item list into ax (appending). Returns 0, FL_EINVAL (the
 * message in err) or FL_ERANGE (more than FL_EXP_MAX_VALUES values). */
int fl_exp_axis_parse(const char *text, fl_exp_axis_t *ax, char *err, size_t errlen);

/* Reads a grid from INI text (path names it in messages) or from a file.
 * Every problem (unknown key, bad value, missing data for a preset without
 * its own, `paper` for a task without rates, ...) is FL_ECONFIG with a
 * message in err naming the line's key. */
int fl_exp_grid_parse(const char *text, const char *path, fl_exp_grid_t *g, char *err, size_t errlen);
int fl_exp_grid_load(const char *path, fl_exp_grid_t *g, char *err, size_t errlen);

/* Expands the grid into its cells in the canonical order: *cells is
 * malloc'ed (free it), *n their count. Returns 0, FL_ENOMEM or FL_ECONFIG
 * (a `paper` value the preset does not have, in err). */
int fl_exp_grid_cells(const fl_exp_grid_t *g, fl_exp_cell_t **cells, size_t *n, char *err, size_t errlen);

/* The settings every cell shares, one "name=value" line each, in a fixed
 * order: what a rerun must not change (the sweep's DIR/fixed.txt). Returns a
 * malloc'ed string or NULL. */
char *fl_exp_grid_fixed_text(const fl_exp_grid_t *g);

/* Parses "I/N" (0 <= I < N). */
int fl_exp_shard_parse(const char *s, size_t *i, size_t *n);

/* Whether the cell at canonical index belongs to shard i of n. */
static inline int fl_exp_shard_has(size_t index, size_t i, size_t n)
{
    return n == 0 || index % n == i;
}

#endif
