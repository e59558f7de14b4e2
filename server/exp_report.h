/* exp_report: the report of one or more experiment directories (shards
 * together): report.md, grid.csv (every cell), best.csv (the best setting per
 * task and ServerOpt) and gnuplot plots in PNG and SVG.
 *
 * The selection rule is the paper's: a cell's score is its example-weighted
 * client training accuracy (rounds.train_accuracy) averaged over its last
 * 100 closed rounds, or over all of them when it has fewer; for an MSE task
 * the training loss, lower being better. A setting (a cell without its seed)
 * scores the mean of its seeds' scores, and the best setting per task and
 * optimizer is reported with its final test metric (the last evaluated
 * round's) as mean, sample standard deviation and range over seeds. A log
 * without training accuracy (a server or clients from before it) is ranked
 * by test accuracy over the same window instead, and report.md says so.
 * Cells still running are reported with the rounds they have (marked
 * partial), so a report of a sweep in progress is honest about it; with
 * FL_EXP_REPORT_FINISHED_ONLY they are left out instead (and counted), so a
 * setting's seed mean is never drawn from a cell cut short.
 *
 * Cells are found as DIR/cells/KEY/cell.ini; a key present in several DIRs
 * is taken once (a finished copy first, else the one with most rounds). */
#ifndef FL_SERVER_EXP_REPORT_H
#define FL_SERVER_EXP_REPORT_H

#include <stddef.h>
#include <stdio.h>

/* The selection window: the last this-many closed rounds. */
#define FL_EXP_REPORT_WINDOW 100

/* Flags of fl_exp_report_write. */
#define FL_EXP_REPORT_FINISHED_ONLY 1u

/* Writes the report into outdir (created). Plots need `gnuplot` on PATH
 * (deploy/install-deps.sh installs gnuplot-nox). Returns 0, FL_ENOTFOUND
 * (no cells in dirs), FL_EIO (a file, or gnuplot failed: the text report is
 * still written) or FL_ENOMEM; progress and problems on log. flags: 0 or
 * FL_EXP_REPORT_FINISHED_ONLY (FL_ENOTFOUND when no cell has finished). */
int fl_exp_report_write(const char *const *dirs, size_t ndirs, const char *outdir, unsigned flags, FILE *log);

#endif
