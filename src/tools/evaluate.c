/* evaluate: scores checkpoints on identical tokens (the [eval] split, a token
 * file or a text file) with the sliding-window protocol of eval.h, compares
 * every checkpoint with the first (the baseline), prints the table and writes
 * it as CSV and Markdown with a JSON description of the run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/eval.h"
#include "nanogptq/infer.h"
#include "nanogptq/tokens.h"
#include "tool.h"

static const ngq_cli_option OPTIONS[] = {
    {"--tokens", "PATH", "score this token file instead of the [eval] split"},
    {"--text", "PATH", "score this UTF-8 text file, encoded with the checkpoints' vocabulary"},
    {"--out", "PREFIX", "write PREFIX.csv, PREFIX.md, PREFIX_windows.csv, PREFIX_meta.json "
                        "(default run_dir/results/eval)"},
    {"--list", NULL, "print the study's checkpoints (baseline and [quantize] variants) with their paths and exit"},
    {"--info", NULL, "print the metadata of each checkpoint (kind, step, tokens seen, val loss) and exit"},
};

static const ngq_cli_spec SPEC = {
    .program = "evaluate",
    .summary = "Score checkpoints on the same tokens with sliding windows of block_size tokens ([eval] stride,\n"
               "batch_size, max_windows): loss, perplexity, bits/char with a standard error, and against the\n"
               "first checkpoint (the baseline) KL divergence, top-1 agreement and perplexity change.\n"
               "Without CHECKPOINTs: run_dir/checkpoints/best.safetensors, then each [quantize] variant found.",
    .positional = "[CHECKPOINT ...]",
    .options = OPTIONS,
    .option_count = sizeof OPTIONS / sizeof OPTIONS[0],
    .epilog = "examples:\n  evaluate --config configs/tinystories.ini\n"
              "  evaluate --config configs/tinystories.ini runs/tinystories/checkpoints/best.safetensors \\\n"
              "           runs/tinystories/checkpoints/gptq-4b-g64.safetensors --text story.txt --out /tmp/story",
};

typedef struct {
    double last_print;
} progress_state;

static void on_progress(const ngq_eval_progress *p, void *user)
{
    progress_state *ps = user;
    int done = p->windows_done == p->windows_total;
    if (!done && p->elapsed_seconds - ps->last_print < 1.0) return;
    ps->last_print = p->elapsed_seconds;
    char elapsed[32], eta[32];
    ngq_format_duration(p->elapsed_seconds, elapsed, sizeof elapsed);
    ngq_format_duration(p->eta_seconds, eta, sizeof eta);
    double rate = p->elapsed_seconds > 0 ? (double)p->tokens_done * p->n_models / p->elapsed_seconds : 0.0;
    printf("eval %zu/%zu windows (%.0f%%) | %d models | %.0f scored tok/s | %s elapsed | eta %s\n", p->windows_done,
           p->windows_total, 100.0 * (double)p->windows_done / (double)p->windows_total, p->n_models, rate, elapsed,
           eta);
    fflush(stdout);
}

static int print_info(char **paths, int n)
{
    int rc = 0;
    for (int i = 0; i < n; i++) {
        ngq_error err = {0};
        ngq_st_file *f = NULL;
        ngq_checkpoint_meta meta;
        ngq_vocab vocab = {0};
        ngq_status st = ngq_st_open(&f, paths[i], &err);
        if (!st) st = ngq_checkpoint_read_metadata(f, paths[i], &meta, &vocab, &err);
        if (st) {
            rc = ngq_tool_fail(&SPEC, st, &err);
        } else {
            const char *label = ngq_st_metadata_value(f, "nanogptq.quant.label");
            printf("%s: kind=%s label=%s step=%lld tokens_seen=%lld val_loss=%.6g vocab=%d block_size=%d "
                   "n_layer=%d n_embd=%d\n",
                   paths[i], meta.kind, label ? label : "fp32", (long long)meta.step, (long long)meta.tokens_seen,
                   meta.val_loss, vocab.size, meta.model.block_size, meta.model.n_layer, meta.model.n_embd);
        }
        ngq_vocab_free(&vocab);
        ngq_st_close(f);
    }
    return rc;
}

int main(int argc, char **argv)
{
    ngq_cli cli;
    int rc = ngq_tool_start(argc, argv, &SPEC, &cli);
    if (rc >= 0) return rc;
    const ngq_config *cfg = &cli.cfg;
    ngq_error err = {0};
    const char *tokens_path = ngq_cli_get(&cli, &SPEC, "--tokens");
    const char *text_path = ngq_cli_get(&cli, &SPEC, "--text");
    const char *out_prefix = ngq_cli_get(&cli, &SPEC, "--out");
    if (tokens_path && text_path) {
        fprintf(stderr, "evaluate: give --tokens or --text, not both\n");
        return 2;
    }

    /* which checkpoints */
    ngq_eval_study study = {0};
    ngq_status st = ngq_eval_study_init(&study, cfg, &err);
    if (st) return ngq_tool_fail(&SPEC, st, &err);
    if (ngq_cli_get(&cli, &SPEC, "--list")) {
        for (int i = 0; i < study.count; i++) {
            const ngq_eval_study_entry *e = &study.entries[i];
            printf("%s %s %s %s %s\n", i == 0 ? "baseline" : "variant", i == 0 ? "-" : e->variant, e->label,
                   e->path, ngq_file_exists(e->path) ? "present" : "missing");
        }
        ngq_eval_study_free(&study);
        return 0;
    }
    int n = cli.positional_count;
    char **paths = calloc((size_t)(n ? n : study.count), sizeof *paths);
    if (!paths) {
        ngq_eval_study_free(&study);
        return ngq_tool_fail(&SPEC, ngq_fail(&err, NGQ_ERR_NOMEM, "out of memory"), &err);
    }
    if (n) {
        for (int i = 0; i < n; i++) paths[i] = ngq_strdup_printf("%s", cli.positional[i]);
    } else {
        for (int i = 0; i < study.count; i++) {
            const ngq_eval_study_entry *e = &study.entries[i];
            if (i > 0 && !ngq_file_exists(e->path)) {
                printf("skipping %s: %s not found (run quantize --variant %s)\n", e->variant, e->path, e->variant);
                continue;
            }
            paths[n++] = ngq_strdup_printf("%s", e->path);
        }
    }
    ngq_eval_study_free(&study);
    if (ngq_cli_get(&cli, &SPEC, "--info")) {
        rc = print_info(paths, n);
        for (int i = 0; i < n; i++) free(paths[i]);
        free(paths);
        return rc;
    }

    ngq_infer **models = calloc((size_t)n, sizeof *models);
    uint16_t *tokens = NULL;
    size_t n_tokens = 0;
    char *split_path = NULL, *prefix_default = NULL, *results_dir = NULL;
    ngq_tokens tok = {0};
    ngq_eval_plan plan = {0};
    ngq_eval_result result = {0};
    if (!models) st = ngq_fail(&err, NGQ_ERR_NOMEM, "out of memory");
    for (int i = 0; st == NGQ_OK && i < n; i++) {
        if ((st = ngq_infer_load(&models[i], paths[i], &err))) break;
        const ngq_infer_info *info = ngq_infer_get_info(models[i]);
        printf("%s %s: %s | %.3f bits/weight | %.1f KiB\n", i == 0 ? "baseline" : "model   ", paths[i], info->label,
               info->bits_per_weight, (double)info->file_bytes / 1024.0);
    }
    if (st == NGQ_OK) st = ngq_eval_check_models((const ngq_infer *const *)models, (const char *const *)paths, n, &err);

    /* which tokens */
    const ngq_vocab *vocab = st == NGQ_OK ? ngq_infer_vocab(models[0]) : NULL;
    const char *source = "split", *source_path = NULL;
    if (st == NGQ_OK && text_path) {
        char *text = NULL;
        size_t size = 0, unknown = 0;
        source = "text";
        source_path = text_path;
        st = ngq_read_file(text_path, &text, &size, &err);
        if (st == NGQ_OK && !(tokens = malloc((size + 1) * sizeof *tokens)))
            st = ngq_fail(&err, NGQ_ERR_NOMEM, "out of memory for %zu characters", size);
        if (st == NGQ_OK) st = ngq_vocab_encode(vocab, text, size, tokens, &n_tokens, &unknown, text_path, &err);
        if (st == NGQ_OK)
            printf("encoded %s: %zu characters, %zu not in the vocabulary (mapped to the unknown id)\n", text_path,
                   n_tokens, unknown);
        free(text);
    } else if (st == NGQ_OK) {
        if (tokens_path) {
            source = "tokens";
            source_path = tokens_path;
        } else {
            char name[NGQ_CONFIG_STRING_MAX + 8];
            snprintf(name, sizeof name, "%s.tok", cfg->eval.split);
            source_path = split_path = ngq_config_data_path(cfg, name);
        }
        st = ngq_tokens_read(&tok, source_path, &err);
        if (st == NGQ_OK && (tok.vocab_hash != vocab->hash || tok.vocab_size != vocab->size))
            st = ngq_fail(&err, NGQ_ERR_FORMAT,
                          "%s was encoded with another vocabulary (%d ids, hash %016llx) than the checkpoints "
                          "(%d ids, hash %016llx)",
                          source_path, tok.vocab_size, (unsigned long long)tok.vocab_hash, vocab->size,
                          (unsigned long long)vocab->hash);
        tokens = tok.tokens;
        n_tokens = tok.count;
    }

    /* windows and scoring */
    if (st == NGQ_OK)
        st = ngq_eval_plan_init(&plan, n_tokens, ngq_infer_config(models[0])->block_size, cfg->eval.stride,
                                cfg->eval.max_windows, &err);
    if (st == NGQ_OK) {
        char what[NGQ_CONFIG_STRING_MAX + 32];
        if (split_path) snprintf(what, sizeof what, "the %s split", cfg->eval.split);
        else snprintf(what, sizeof what, "a %s file", source);
        printf("scoring %s (%s): %zu tokens | %zu windows of %d tokens, stride %d%s | %zu targets, each scored "
               "once | batch %d | %d models\n",
               source_path, what, n_tokens, plan.count, plan.T, plan.stride,
               plan.count < plan.full_count ? " (limited by [eval] max_windows)" : "", plan.scored,
               cfg->eval.batch_size, n);
        fflush(stdout);
        progress_state ps = {-1e9};
        st = ngq_eval_run((const ngq_infer *const *)models, n, tokens, n_tokens, &plan, cfg->eval.batch_size,
                          on_progress, &ps, &result, &err);
    }

    /* tables */
    if (st == NGQ_OK) {
        ngq_table md;
        if ((st = ngq_eval_table_markdown(&result, &md, &err)) == NGQ_OK) {
            printf("\n");
            st = ngq_table_write_markdown(&md, stdout, &err);
            ngq_table_free(&md);
        }
        char took[32];
        ngq_format_duration(result.seconds, took, sizeof took);
        printf("\nscored %zu tokens in %zu windows (T %d, stride %d) per model | unknown-id targets: %zu | %s\n",
               result.scored, result.windows, result.T, result.stride, result.unknown_targets, took);
        printf("SE: per-window cluster standard error of the mean loss; KL in nats, p95 nearest-rank\n");
    }
    if (st == NGQ_OK) {
        if (!out_prefix) {
            results_dir = ngq_config_results_path(cfg, "");
            out_prefix = prefix_default = ngq_config_results_path(cfg, "eval");
            st = ngq_make_dirs(results_dir, &err);
        }
        ngq_eval_source src = {.source = source, .split = split_path ? cfg->eval.split : NULL, .path = source_path,
                               .config_path = cfg->source_path, .max_windows = cfg->eval.max_windows,
                               .checkpoints = (const char *const *)paths};
        if (st == NGQ_OK) st = ngq_eval_save(&result, &plan, &src, out_prefix, &err);
        if (st == NGQ_OK)
            printf("wrote %s.csv, %s.md, %s_windows.csv, %s_meta.json\n", out_prefix, out_prefix, out_prefix,
                   out_prefix);
    }
    rc = st ? ngq_tool_fail(&SPEC, st, &err) : 0;

    ngq_eval_result_free(&result);
    ngq_eval_plan_free(&plan);
    if (tok.tokens) ngq_tokens_free(&tok);
    else free(tokens);
    for (int i = 0; i < n; i++) {
        if (models) ngq_infer_free(models[i]);
        free(paths[i]);
    }
    free(models);
    free(paths);
    free(split_path);
    free(prefix_default);
    free(results_dir);
    return rc;
}
