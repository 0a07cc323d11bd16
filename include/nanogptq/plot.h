/* plot.h: the study's figures, drawn by gnuplot from the toolkit's own CSVs.
 *
 * For each figure it writes, into [paths] figures_dir, a small data file
 * (NAME.dat, taken from the CSV) and the gnuplot script (NAME.gp) that draws
 * NAME.png from it, so `cd figures_dir && gnuplot NAME.gp` redraws a figure by
 * hand. Then it runs gnuplot on each script, writing the PNG atomically, and
 * records what was drawn in figures_dir/figures.csv
 * (name,file,title,source,status): status is "rendered", or says why not.
 * The figures:
 *   loss         train and validation loss vs step (run_dir/train_log.csv)
 *   ppl_bits     perplexity vs bits per weight code, one series per method and
 *                granularity, the fp32 baseline as a line (results/eval.csv)
 *   size_ppl     perplexity vs size on disk (results/eval.csv)
 *   layers-LABEL per-layer relative output error of RTN and GPTQ on the same
 *                grid, log scale (results/layers-LABEL.csv, GPTQ variants)
 * A figure whose CSV is missing is skipped (status says so). This module
 * does not compute any result itself and does not print. */
#ifndef NANOGPTQ_PLOT_H
#define NANOGPTQ_PLOT_H

#include <stddef.h>

#include "nanogptq/common.h"
#include "nanogptq/config.h"

typedef struct {
    char name[96];     /* "loss", "ppl_bits", "size_ppl", "layers-gptq-4b-g64" */
    char title[256];
    char *source;      /* the CSV it is drawn from */
    char *script;      /* figures_dir/NAME.gp */
    char *png;         /* figures_dir/NAME.png */
    int prepared;      /* data and script written */
    int rendered;      /* PNG written in this run */
    char status[512];  /* "rendered" or why not */
} ngq_plot_figure;

typedef struct {
    int count;
    ngq_plot_figure *figures;
    char *dir;         /* figures_dir */
} ngq_plot_set;

/* Writes the data files and scripts of every figure whose CSV exists. */
ngq_status ngq_plot_prepare(ngq_plot_set *set, const ngq_config *cfg, ngq_error *err);

/* Runs gnuplot (the executable path given) on every prepared script, in
 * figures_dir; a failing script stops with gnuplot's message. */
ngq_status ngq_plot_render(ngq_plot_set *set, const char *gnuplot, ngq_error *err);

/* Marks every prepared figure as not rendered, with reason (e.g. no gnuplot). */
void ngq_plot_mark_unrendered(ngq_plot_set *set, const char *reason);

/* Writes figures_dir/figures.csv atomically. */
ngq_status ngq_plot_write_manifest(const ngq_plot_set *set, ngq_error *err);

void ngq_plot_set_free(ngq_plot_set *set);

/* Finds an executable named name on $PATH (or name itself when it holds a
 * '/'); 1 with the path in buf, else 0. */
int ngq_plot_find_program(const char *name, char *buf, size_t size);

#endif
