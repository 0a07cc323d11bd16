/* report.h: the study's REPORT.md, generated from the files the other steps
 * wrote: the token files and vocabulary (data sizes), the baseline checkpoint's
 * metadata (model, steps, tokens trained), train_log.csv, results/eval.csv,
 * eval_meta.json and eval_windows.csv, results/layers-LABEL.csv, and
 * figures_dir/figures.csv; plus the machine (CPU model, cores, memory).
 *
 * Observations are produced by fixed rules from those numbers:
 *   - a variant is "within the baseline's standard error" when |Δ loss| is at
 *     most the baseline's standard error of the mean loss;
 *   - a difference d with standard error s (paired, per window) is called
 *     "not resolved" when |d| < s, "weak" when s <= |d| < 2s, and a
 *     difference otherwise; GPTQ vs naive on the same bits and granularity,
 *     and groups vs per channel, are compared this way;
 *   - the share of naive's loss increase that GPTQ wins back is given only
 *     when naive's increase itself is at least 2 standard errors;
 *   - per-layer: in how many layers GPTQ's output error is below RTN's, and
 *     the median ratio.
 * Nothing else is claimed. Missing inputs are named in the report instead of
 * failing, so the report can be written at any point of the study.
 * This module does not run any step and does not print. */
#ifndef NANOGPTQ_REPORT_H
#define NANOGPTQ_REPORT_H

#include "nanogptq/common.h"
#include "nanogptq/config.h"

typedef struct {
    int models;          /* rows of eval.csv (0 when missing) */
    int figures_linked;  /* figures with a PNG, linked from the report */
    int figures_missing; /* figures listed as missing */
    int observations;    /* rule-based observations written */
    char path[4096];     /* the REPORT.md written */
} ngq_report_summary;

/* Writes [paths] report_dir/REPORT.md atomically. */
ngq_status ngq_report_write(const ngq_config *cfg, ngq_report_summary *summary, ngq_error *err);

/* The relative path from directory from_dir to path (both may be relative to
 * the working directory; neither has to exist). malloc'd. */
char *ngq_report_relative_path(const char *from_dir, const char *path);

#endif
