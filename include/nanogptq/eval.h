/* eval.h: scoring checkpoints on a token sequence, all on identical windows,
 * and comparing every model with the first one (the baseline).
 *
 * The protocol (sliding windows):
 *   - The sequence x[0..N) has N - 1 targets: x[i] is predicted from
 *     x[..i-1]. Windows are T = min(block_size, N - 1) inputs long; window w
 *     reads x[s_w .. s_w + T) and predicts x[s_w + 1 .. s_w + T].
 *   - Windows start at s_w = w * S (stride S, [eval] stride; 0 means T/2,
 *     at least 1). The first window scores all of its T positions; every
 *     later window scores only its last S positions, so every target is
 *     scored exactly once and, after the first window, with at least T - S
 *     (>= T/2 for the default stride) tokens of context.
 *   - When the regular windows stop short of the end, one last window is
 *     aligned to the end of the sequence (s = N - 1 - T) and scores only the
 *     targets no window has scored yet (fewer than S of them).
 *   - [eval] max_windows keeps only the first windows (0 = all); the scored
 *     targets are then a prefix of the sequence.
 * Per model: mean loss (nats per character) over every scored target,
 * perplexity exp(loss), bits per character loss / ln 2, and the standard
 * error of the mean loss. The standard error treats windows as the sampling
 * units (their scored targets are disjoint): with m_w the mean loss of window
 * w's c_w scored targets and m the token-weighted mean,
 *     SE = sqrt(n / (n - 1) * sum_w c_w^2 (m_w - m)^2) / sum_w c_w
 * (the ratio/cluster estimator; with equal c_w it is sd(m_w) / sqrt(n)).
 * Neighbouring windows are not independent, so this is a lower bound rather
 * than an exact error. The difference of a variant from the baseline gets the
 * same estimator on the per-window differences (a paired standard error).
 * Against the baseline, per scored position: KL(baseline || variant) of the
 * next-character distributions (reported as the mean and the 95th percentile,
 * nearest-rank), and whether both models' most likely character (first index
 * on ties) agree.
 * It also writes the result files (tables and a JSON description of the run).
 * What it does not do: read checkpoints or token files, print, or choose
 * checkpoints (the evaluate tool does), or run a forward pass itself
 * (infer.h does). */
#ifndef NANOGPTQ_EVAL_H
#define NANOGPTQ_EVAL_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/config.h"
#include "nanogptq/infer.h"
#include "nanogptq/table.h"

/* ---- the window planner ------------------------------------------------ */

typedef struct {
    size_t start;        /* offset of the window's first input token */
    int score_begin;     /* first scored position; positions score_begin..T-1 */
    size_t scored_before; /* scored targets in earlier windows */
} ngq_eval_window;

typedef struct {
    int T;              /* window length */
    int stride;         /* S actually used */
    size_t n_tokens;    /* N */
    size_t count;       /* windows kept */
    size_t full_count;  /* windows of the whole sequence (before max_windows) */
    size_t scored;      /* targets scored by the kept windows */
    ngq_eval_window *windows;
} ngq_eval_plan;

/* Plans the windows for N = n_tokens tokens (N >= 2), block_size >= 1,
 * 0 <= stride <= block_size (0 = T/2, at least 1), max_windows >= 0 (0 = all).
 * On failure the plan is left empty (ngq_eval_plan_free is still safe). */
ngq_status ngq_eval_plan_init(ngq_eval_plan *plan, size_t n_tokens, int block_size, int stride, long long max_windows,
                              ngq_error *err);
void ngq_eval_plan_free(ngq_eval_plan *plan);

/* ---- statistics ----------------------------------------------------------- */

/* The standard error above: values[i] are per-window means, weights[i] the
 * scored counts (> 0), mean the weighted mean. NaN for fewer than 2 windows. */
double ngq_eval_cluster_se(const double *values, const double *weights, size_t n, double mean);

/* The nearest-rank p-th percentile (0 < p <= 100) of values[0..n); sorts
 * values in place. NaN for n == 0. */
double ngq_eval_percentile(float *values, size_t n, double p);

/* ---- scoring -------------------------------------------------------------- */

typedef struct {
    char label[64];        /* info.label, made unique with "#2", "#3" ... */
    ngq_infer_info info;
    char granularity[32];  /* "channel", "g64", "tensor", "" for fp32 */
    size_t scored;
    double mean_loss;      /* nats per character */
    double loss_se;
    double perplexity;
    double bits_per_char;
    /* against the baseline (the baseline against itself: 0, 0, 100 %, 0) */
    double delta_loss;     /* mean_loss - baseline mean_loss */
    double delta_loss_se;  /* paired, per window; NaN for the baseline */
    double delta_ppl_pct;  /* 100 * (perplexity / baseline perplexity - 1) */
    double kl_mean;        /* nats */
    double kl_p95;
    double top1_agreement_pct;
    double *window_loss;   /* [plan.count] mean loss of each window's scored targets */
} ngq_eval_model_result;

typedef struct {
    int n_models;
    ngq_eval_model_result *models; /* models[0] is the baseline */
    size_t windows;
    size_t scored;
    size_t unknown_targets;       /* scored targets equal to the vocabulary's unknown id */
    int T, stride, batch_size;
    double seconds;
} ngq_eval_result;

typedef struct {
    size_t windows_done, windows_total;
    size_t tokens_done;   /* scored targets done, per model */
    int n_models;
    double elapsed_seconds, eta_seconds;
} ngq_eval_progress;

/* Called after every batch of windows. */
typedef void (*ngq_eval_callback)(const ngq_eval_progress *progress, void *user);

/* Checks that every model shares the baseline's vocabulary (size and hash);
 * names[i] are used in messages. */
ngq_status ngq_eval_check_models(const ngq_infer *const *models, const char *const *names, int n_models,
                                 ngq_error *err);

/* Scores every model on the plan's windows of tokens[0..n_tokens), batch_size
 * windows per forward pass: baseline logits for a batch, then each variant,
 * so memory is one batch of logits per model. Every token must be below the
 * vocabulary size and every model's block size at least plan->T (the plan
 * comes from the baseline's block size). callback may be NULL. The result is
 * filled on success (free it with ngq_eval_result_free either way). */
ngq_status ngq_eval_run(const ngq_infer *const *models, int n_models, const uint16_t *tokens, size_t n_tokens,
                        const ngq_eval_plan *plan, int batch_size, ngq_eval_callback callback, void *user,
                        ngq_eval_result *result, ngq_error *err);
void ngq_eval_result_free(ngq_eval_result *r);

/* ---- tables --------------------------------------------------------------- */

/* The results table with full precision, one row per model:
 * label,method,bits,granularity,file_bytes,bits_per_weight,model_bits_per_weight,
 * scored_tokens,mean_loss,loss_se,perplexity,bits_per_char,delta_loss,delta_loss_se,
 * delta_ppl_pct,kl_mean,kl_p95,top1_agreement_pct,checkpoint
 * (paths[i] fills the checkpoint column). */
ngq_status ngq_eval_table_csv(const ngq_eval_result *r, const char *const *paths, ngq_table *out, ngq_error *err);
/* The same results rounded for reading (Markdown). */
ngq_status ngq_eval_table_markdown(const ngq_eval_result *r, ngq_table *out, ngq_error *err);
/* One row per window: window,start,scored,<label of each model>... (the
 * per-window mean losses; the report's paired standard errors use them). */
ngq_status ngq_eval_table_windows(const ngq_eval_result *r, const ngq_eval_plan *plan, ngq_table *out,
                                  ngq_error *err);

/* What was scored, for the JSON description. */
typedef struct {
    const char *source;      /* "split", "tokens" or "text" */
    const char *split;       /* "test" / "val" for a split, else NULL */
    const char *path;        /* the token or text file */
    const char *config_path; /* the INI file, may be "" */
    long long max_windows;
    const char *const *checkpoints; /* [n_models] paths */
} ngq_eval_source;

/* Writes PREFIX.csv (ngq_eval_table_csv), PREFIX.md (the Markdown table),
 * PREFIX_windows.csv and PREFIX_meta.json (split, tokens, windows, stride,
 * estimators, checkpoints), each atomically. */
ngq_status ngq_eval_save(const ngq_eval_result *r, const ngq_eval_plan *plan, const ngq_eval_source *src,
                         const char *prefix, ngq_error *err);

/* ---- the study's checkpoints ----------------------------------------------- */

typedef struct {
    char variant[64];  /* "gptq:4:g64"; "" for the baseline */
    char label[64];    /* "gptq-4b-g64" (the quantize tool's label); "baseline" for entry 0 */
    char *path;        /* run_dir/checkpoints/LABEL.safetensors; the baseline: [quantize]
                          checkpoint, else run_dir/checkpoints/best.safetensors */
    char *layers_csv;  /* run_dir/results/layers-LABEL.csv; NULL for the baseline */
} ngq_eval_study_entry;

typedef struct {
    int count;                      /* 1 + number of [quantize] variants */
    ngq_eval_study_entry *entries;  /* entries[0] is the baseline */
} ngq_eval_study;

/* The baseline and every [quantize] variants entry, with the file names the
 * quantize tool gives them. Whether the files exist is not checked. */
ngq_status ngq_eval_study_init(ngq_eval_study *study, const ngq_config *cfg, ngq_error *err);
void ngq_eval_study_free(ngq_eval_study *study);

/* "channel", "tensor" or "gNN" from a grid string (ngq_qgrid_format), "" when
 * grid is empty (fp32). */
void ngq_eval_granularity_name(const char *grid, char *buf, size_t size);

#endif
