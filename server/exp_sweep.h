/* exp_sweep: an experiment directory and the sweep over its cells, for
 * `fedopt-server experiment run|status`.
 *
 *   DIR/grid.ini    a copy of the grid file of the last run
 *   DIR/fixed.txt   the settings every cell shares (exp_grid_fixed_text)
 *   DIR/cells.txt   every cell of the grid: canonical index, TAB, key
 *   DIR/cells/KEY/  one cell (exp_cell.h)
 *
 * A run against an existing DIR must have the same fixed.txt; a grid with
 * other cells is refused unless `extend` is set (new cells are added, cells
 * already run stay and are reported). Finished cells are skipped, an
 * interrupted one resumes from its last committed round. With a shard I/N
 * only the cells whose canonical index mod N == I run (every shard writes the
 * same fixed.txt and cells.txt, so shards may share DIR or each have their
 * own; `report` takes several DIRs). */
#ifndef FL_SERVER_EXP_SWEEP_H
#define FL_SERVER_EXP_SWEEP_H

#include <stddef.h>
#include <stdio.h>

#include "server/exp_cell.h"

typedef struct {
    const char *grid_path;
    const char *out;
    size_t parallel;         /* cells at once (>= 1) */
    size_t shard_i, shard_n; /* shard_n = 0: every cell */
    int dry_run, extend;
} fl_exp_sweep_opts_t;

/* Runs (or with dry_run lists) the grid's cells into o->out, progress on
 * `log`. Returns 0 when every cell of the share is finished, FL_ECONFIG for
 * a grid or directory it refuses (said on stderr), or FL_EIO when cells
 * failed (each said on log; running it again retries them). */
int fl_exp_sweep_run(const fl_exp_sweep_opts_t *o, const fl_exp_env_t *env, FILE *log);

/* Prints each cell of DIR with its state (done, R/N rounds, not started)
 * and the totals. Returns 0 or FL_ENOTFOUND (not an experiment directory). */
int fl_exp_sweep_status(const char *out, FILE *f);

#endif
