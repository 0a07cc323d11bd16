/* config.h: the one INI configuration every executable reads.
 *
 * A value comes from the defaults in the schema table (config.c), then the
 * INI file, then `--set section.key=value` overrides, in that order, and from
 * nowhere else. Every key is declared once in the schema with its type, range
 * and a one-line description; parsing rejects unknown sections and keys
 * (naming file:line, with a did-you-mean), wrong types and out-of-range values
 * (naming key, value and range), and cross-key violations (naming both keys).
 * Nothing is clamped. This module does not know what the values are used for. */
#ifndef NANOGPTQ_CONFIG_H
#define NANOGPTQ_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nanogptq/common.h"

#define NGQ_CONFIG_STRING_MAX 1024
/* Longest text value (or list item): it must fit on one INI line when the
 * effective configuration is written out. */
#define NGQ_CONFIG_LINE_VALUE_MAX 160

typedef char ngq_config_string[NGQ_CONFIG_STRING_MAX];

typedef struct {
    /* [run] settings shared by every executable */
    struct {
        int64_t seed;  /* master seed for every random choice */
        int threads;   /* OpenMP threads (OpenBLAS always runs single-threaded) */
    } run;
    /* [data] the corpus and its split */
    struct {
        ngq_config_string inputs;    /* comma-separated UTF-8 text files */
        ngq_config_string delimiter; /* line that separates stories */
        ngq_config_string split;     /* "contiguous" or "shuffled" */
        double val_fraction;
        double test_fraction;
    } data;
    /* [model] architecture (vocab_size comes from the vocabulary file) */
    struct {
        int n_layer, n_head, n_embd, block_size;
        int bias, tie_embeddings;
        double dropout, init_std;
    } model;
    /* [train] optimisation */
    struct {
        int batch_size, grad_accum, max_steps, warmup_steps;
        double learning_rate, min_lr, beta1, beta2, eps, weight_decay, grad_clip;
        int eval_interval, eval_windows, checkpoint_interval, log_interval;
    } train;
    /* [quantize] grids and methods */
    struct {
        ngq_config_string method;      /* naive | gptq */
        int bits;
        int symmetric;
        ngq_config_string granularity; /* tensor | channel | group */
        int group_size;
        ngq_config_string range;       /* minmax | mse */
        int int8_compat;
        ngq_config_string scale_dtype; /* f32 | f16 */
        int quantize_embedding, quantize_position;
        int n_samples;
        double percdamp;
        int block_size;
        int act_order, static_groups;
        ngq_config_string calibration; /* optional file of window offsets */
        ngq_config_string checkpoint;  /* input fp32 checkpoint */
        ngq_config_string variants;    /* the study's list of variants */
    } quantize;
    /* [eval] perplexity protocol */
    struct {
        ngq_config_string split; /* test | val */
        int stride;              /* 0 = block_size / 2 */
        int batch_size;
        int max_windows;         /* 0 = all */
    } eval;
    /* [sample] generation */
    struct {
        ngq_config_string checkpoint;
        ngq_config_string prompt;
        int max_new_tokens;
        double temperature;
        int top_k;
        double top_p;
    } sample;
    /* [demo] local web app */
    struct {
        ngq_config_string host;
        int port;
        ngq_config_string variants;
        int max_prompt_chars, max_new_tokens, max_body_bytes;
    } demo;
    /* [paths] where outputs go */
    struct {
        ngq_config_string run_dir;
        ngq_config_string figures_dir;
        ngq_config_string report_dir;
    } paths;

    /* bookkeeping, filled by the loader */
    ngq_config_string source_path; /* the INI file read, or "" */
} ngq_config;

/* Fills cfg with every key's default. */
void ngq_config_defaults(ngq_config *cfg);

/* Reads an INI file over the current values. Errors name path:line. */
ngq_status ngq_config_load_file(ngq_config *cfg, const char *path, ngq_error *err);

/* Parses INI text (name is used in messages in place of a path). */
ngq_status ngq_config_load_string(ngq_config *cfg, const char *text, const char *name, ngq_error *err);

/* Applies one "section.key=value" override. */
ngq_status ngq_config_apply_override(ngq_config *cfg, const char *assignment, ngq_error *err);

/* Cross-key rules, run after the file and all overrides are applied. */
ngq_status ngq_config_validate(const ngq_config *cfg, ngq_error *err);

/* Writes the effective configuration as INI (used in run directories and
 * checkpoint metadata), with every key, in schema order. */
ngq_status ngq_config_write(const ngq_config *cfg, FILE *fp, ngq_error *err);

/* The reference: every section and key with type, default, range and meaning,
 * as Markdown (the README's config reference is generated from it). */
void ngq_config_write_reference(FILE *fp);

/* Splits a comma-separated list into trimmed, non-empty items. *items is
 * malloc'd (free with ngq_config_list_free). */
ngq_status ngq_config_split_list(const char *list, char ***items, int *count, ngq_error *err);
void ngq_config_list_free(char **items, int count);

/* Paths derived from [paths] run_dir. malloc'd strings. */
char *ngq_config_data_path(const ngq_config *cfg, const char *name);       /* run_dir/data/name */
char *ngq_config_checkpoint_path(const ngq_config *cfg, const char *name); /* run_dir/checkpoints/name */
char *ngq_config_results_path(const ngq_config *cfg, const char *name);    /* run_dir/results/name */

#endif
