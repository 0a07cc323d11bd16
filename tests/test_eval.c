/* test_eval.c: the evaluation protocol and its outputs: the window planner
 * (every target scored exactly once, context, tail window, max_windows), the
 * standard error and percentile, perplexity of a model whose distribution is
 * known (uniform), KL = 0 / 100 % agreement against itself, the one-pass
 * batched scoring against a window-by-window recomputation, vocabulary
 * checks, the study's checkpoint list, and the CSV / Markdown writers and
 * reader (escaping, atomic writes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/config.h"
#include "nanogptq/eval.h"
#include "nanogptq/infer.h"
#include "nanogptq/rng.h"
#include "nanogptq/table.h"

#include "test_util.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    return test_make_tmpdir(tmpdir, sizeof tmpdir, "ngq_test_eval");
}

static int teardown(void **state)
{
    (void)state;
    return test_remove_tree(tmpdir);
}

/* ---- planner ------------------------------------------------------------------ */

/* Checks every property of the protocol for one (N, block, stride, max). */
static void check_plan(size_t N, int block, int stride, long long max_windows)
{
    ngq_eval_plan plan;
    ngq_error err = {0};
    if (ngq_eval_plan_init(&plan, N, block, stride, max_windows, &err))
        fail_msg("plan N=%zu block=%d stride=%d: %s", N, block, stride, err.message);
    int T = plan.T, S = plan.stride;
    assert_int_equal(T, (size_t)block < N - 1 ? block : (int)(N - 1));
    if (stride) assert_int_equal(S, stride < T ? stride : T);
    else assert_int_equal(S, T / 2 > 0 ? T / 2 : 1);
    unsigned char *seen = calloc(N, 1);
    size_t scored = 0;
    for (size_t w = 0; w < plan.count; w++) {
        const ngq_eval_window *win = &plan.windows[w];
        assert_true(win->start + (size_t)T <= N - 1); /* inputs and targets inside the sequence */
        assert_int_equal(win->scored_before, scored);
        if (w == 0) assert_int_equal(win->score_begin, 0);
        else if (!(win->score_begin >= T - S && win->score_begin < T))
            fail_msg("N=%zu T=%d S=%d window %zu scores from %d", N, T, S, w, win->score_begin);
        for (int p = win->score_begin; p < T; p++) {
            size_t target = win->start + (size_t)p + 1;
            if (seen[target]) fail_msg("N=%zu T=%d S=%d: target %zu scored twice", N, T, S, target);
            seen[target] = 1;
            scored++;
            /* targets are scored in order: this one follows the previous */
            assert_int_equal(target, scored);
        }
    }
    assert_int_equal(plan.scored, scored);
    if (max_windows == 0 || (size_t)max_windows >= plan.full_count) {
        assert_int_equal(plan.count, plan.full_count);
        assert_int_equal(scored, N - 1); /* every token after the first, exactly once */
        for (size_t i = 1; i < N; i++) assert_true(seen[i]);
    } else {
        assert_int_equal(plan.count, (size_t)max_windows);
        assert_true(scored < N - 1);
    }
    assert_false(seen[0]);
    free(seen);
    ngq_eval_plan_free(&plan);
}

static void test_plan_scores_every_token_once(void **state)
{
    (void)state;
    const size_t lengths[] = {2, 3, 5, 16, 17, 18, 33, 64, 100, 101, 257, 1000, 1023};
    const int blocks[] = {1, 2, 7, 16, 32};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++)
        for (size_t j = 0; j < sizeof blocks / sizeof blocks[0]; j++)
            for (int stride = 0; stride <= blocks[j]; stride++) check_plan(lengths[i], blocks[j], stride, 0);
    check_plan(1000, 16, 0, 5);
    check_plan(1000, 16, 3, 1);
    check_plan(1000, 16, 16, 10000); /* more than there are: all */
}

static void test_plan_shape(void **state)
{
    (void)state;
    ngq_eval_plan plan;
    ngq_error err = {0};
    /* N = 20, T = 8, S = 4: starts 0, 4, 8 (8 + 8 = 16 <= 19), then a tail at 11
     * scoring targets 17..19 (positions 5..7) */
    assert_int_equal(ngq_eval_plan_init(&plan, 20, 8, 4, 0, &err), NGQ_OK);
    assert_int_equal(plan.count, 4);
    assert_int_equal(plan.windows[0].start, 0);
    assert_int_equal(plan.windows[1].start, 4);
    assert_int_equal(plan.windows[1].score_begin, 4);
    assert_int_equal(plan.windows[2].start, 8);
    assert_int_equal(plan.windows[3].start, 11);
    assert_int_equal(plan.windows[3].score_begin, 5);
    assert_int_equal(plan.scored, 19);
    ngq_eval_plan_free(&plan);
    /* exact fit: no tail window */
    assert_int_equal(ngq_eval_plan_init(&plan, 17, 8, 4, 0, &err), NGQ_OK);
    assert_int_equal(plan.count, 3);
    assert_int_equal(plan.windows[2].start, 8);
    ngq_eval_plan_free(&plan);
    /* errors */
    assert_int_equal(ngq_eval_plan_init(&plan, 1, 8, 4, 0, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "at least 2");
    assert_int_equal(ngq_eval_plan_init(&plan, 100, 8, 9, 0, &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "stride");
    assert_null(plan.windows);
}

/* ---- statistics ------------------------------------------------------------------ */

static void test_standard_error_and_percentile(void **state)
{
    (void)state;
    /* equal weights: sd / sqrt(n). values 1,2,3,4: mean 2.5, sd = sqrt(5/3) */
    const double v[] = {1, 2, 3, 4}, w1[] = {8, 8, 8, 8};
    assert_float_equal(ngq_eval_cluster_se(v, w1, 4, 2.5), sqrt(5.0 / 3.0) / 2.0, 1e-12);
    /* unequal weights, by hand: weights 1,3, values 0,4: mean 3;
     * sum c^2 (m - 3)^2 = 9 + 9 = 18; sqrt(2 * 18) / 4 = 1.5 */
    const double v2[] = {0, 4}, w2[] = {1, 3};
    assert_float_equal(ngq_eval_cluster_se(v2, w2, 2, 3.0), 1.5, 1e-12);
    assert_true(isnan(ngq_eval_cluster_se(v2, w2, 1, 0.0)));
    float p[] = {5, 1, 4, 2, 3, 10, 9, 8, 7, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    assert_float_equal(ngq_eval_percentile(p, 20, 95.0), 19.0, 0);  /* rank ceil(19) = 19 */
    assert_float_equal(ngq_eval_percentile(p, 20, 100.0), 20.0, 0);
    assert_float_equal(ngq_eval_percentile(p, 20, 50.0), 10.0, 0);
    float one[] = {7};
    assert_float_equal(ngq_eval_percentile(one, 1, 95.0), 7.0, 0);
    assert_true(isnan(ngq_eval_percentile(one, 0, 95.0)));
}

/* ---- models ------------------------------------------------------------------------ */

static void make_vocab(ngq_vocab *vocab, int n_chars)
{
    uint32_t cps[64];
    for (int i = 0; i < n_chars; i++) cps[i] = (uint32_t)('a' + i);
    ngq_error err = {0};
    assert_int_equal(ngq_vocab_from_codepoints(vocab, cps, n_chars, &err), NGQ_OK);
}

/* Writes an fp32 checkpoint: random weights from seed, or (seed 0) all-zero
 * token embeddings, which with the tied head give all-zero logits. */
static char *write_model(const char *name, uint64_t seed, int n_chars)
{
    ngq_model_config mc = {.vocab_size = n_chars + 1, .block_size = 16, .n_layer = 2, .n_head = 2, .n_embd = 16,
                           .bias = 0, .tie_embeddings = 1, .dropout = 0.0f, .init_std = 0.3f};
    ngq_model model;
    ngq_error err = {0};
    assert_int_equal(ngq_model_init(&model, &mc, &err), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, seed ? seed : 1, 1);
    ngq_model_init_weights(&model, &rng);
    if (seed == 0) memset(model.p.wte, 0, (size_t)mc.vocab_size * (size_t)mc.n_embd * sizeof(float));
    ngq_vocab vocab;
    make_vocab(&vocab, n_chars);
    ngq_checkpoint_meta meta = {.step = 1, .seed = seed, .tokens_seen = 0, .val_loss = NAN};
    char *path = ngq_path_join(tmpdir, name);
    if (ngq_checkpoint_save(path, &model, &vocab, &meta, NULL, &err)) fail_msg("save %s: %s", path, err.message);
    ngq_vocab_free(&vocab);
    ngq_model_free(&model);
    return path;
}

static ngq_infer *load(const char *path)
{
    ngq_infer *m = NULL;
    ngq_error err = {0};
    if (ngq_infer_load(&m, path, &err)) fail_msg("load %s: %s", path, err.message);
    return m;
}

static uint16_t *random_tokens(size_t n, int vocab_size, uint64_t seed)
{
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 3);
    uint16_t *t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) t[i] = (uint16_t)(ngq_rng_below(&rng, (uint32_t)vocab_size));
    return t;
}

static void test_uniform_model_perplexity_is_vocab_size(void **state)
{
    (void)state;
    char *path = write_model("uniform.safetensors", 0, 11); /* 12 ids */
    ngq_infer *m = load(path);
    const size_t N = 300;
    uint16_t *tokens = random_tokens(N, 12, 5);
    ngq_eval_plan plan;
    ngq_eval_result r;
    ngq_error err = {0};
    assert_int_equal(ngq_eval_plan_init(&plan, N, 16, 0, 0, &err), NGQ_OK);
    const ngq_infer *models[] = {m};
    assert_int_equal(ngq_eval_run(models, 1, tokens, N, &plan, 4, NULL, NULL, &r, &err), NGQ_OK);
    assert_int_equal(r.scored, N - 1);
    assert_float_equal(r.models[0].perplexity, 12.0, 1e-9);
    assert_float_equal(r.models[0].mean_loss, log(12.0), 1e-12);
    assert_float_equal(r.models[0].bits_per_char, log2(12.0), 1e-12);
    assert_float_equal(r.models[0].loss_se, 0.0, 1e-12); /* every window has the same loss */
    /* unknown-id targets are counted: the unknown id is 11 */
    size_t unknown = 0;
    for (size_t i = 1; i < N; i++) unknown += tokens[i] == 11;
    assert_true(unknown > 0);
    assert_int_equal(r.unknown_targets, unknown);
    ngq_eval_result_free(&r);
    ngq_eval_plan_free(&plan);
    free(tokens);
    ngq_infer_free(m);
    free(path);
}

/* Mean loss and KL recomputed window by window, one forward per window. */
static void reference_scores(const ngq_infer *base, const ngq_infer *var, const uint16_t *tokens,
                             const ngq_eval_plan *plan, double *loss_base, double *loss_var, double *kl)
{
    ngq_infer_workspace *wb, *wv;
    ngq_error err = {0};
    assert_int_equal(ngq_infer_workspace_init(&wb, base, 1, plan->T, &err), NGQ_OK);
    assert_int_equal(ngq_infer_workspace_init(&wv, var, 1, plan->T, &err), NGQ_OK);
    const int V = ngq_infer_config(base)->vocab_size;
    double lb = 0, lv = 0, k = 0;
    for (size_t w = 0; w < plan->count; w++) {
        const ngq_eval_window *win = &plan->windows[w];
        const float *xb, *xv;
        assert_int_equal(ngq_infer_forward(base, wb, tokens + win->start, 1, plan->T, &xb, &err), NGQ_OK);
        assert_int_equal(ngq_infer_forward(var, wv, tokens + win->start, 1, plan->T, &xv, &err), NGQ_OK);
        for (int p = win->score_begin; p < plan->T; p++) {
            const float *a = xb + (size_t)p * V, *b = xv + (size_t)p * V;
            double za = 0, zb = 0;
            for (int v = 0; v < V; v++) {
                za += exp(a[v]);
                zb += exp(b[v]);
            }
            int t = tokens[win->start + (size_t)p + 1];
            lb += log(za) - a[t];
            lv += log(zb) - b[t];
            for (int v = 0; v < V; v++) {
                double pa = exp(a[v]) / za;
                k += pa * ((a[v] - log(za)) - (b[v] - log(zb)));
            }
        }
    }
    *loss_base = lb / (double)plan->scored;
    *loss_var = lv / (double)plan->scored;
    *kl = k / (double)plan->scored;
    ngq_infer_workspace_free(wb);
    ngq_infer_workspace_free(wv);
}

static void test_against_itself_and_another_model(void **state)
{
    (void)state;
    char *pa = write_model("a.safetensors", 11, 20), *pb = write_model("b.safetensors", 12, 20);
    ngq_infer *a1 = load(pa), *a2 = load(pa), *b = load(pb);
    const size_t N = 211;
    uint16_t *tokens = random_tokens(N, 21, 9);
    ngq_eval_plan plan;
    ngq_error err = {0};
    assert_int_equal(ngq_eval_plan_init(&plan, N, 16, 5, 0, &err), NGQ_OK);

    /* the same checkpoint twice: KL 0, agreement 100 %, no change */
    const ngq_infer *same[] = {a1, a2};
    ngq_eval_result r;
    assert_int_equal(ngq_eval_run(same, 2, tokens, N, &plan, 3, NULL, NULL, &r, &err), NGQ_OK);
    assert_float_equal(r.models[1].kl_mean, 0.0, 0);
    assert_float_equal(r.models[1].kl_p95, 0.0, 0);
    assert_float_equal(r.models[1].top1_agreement_pct, 100.0, 0);
    assert_float_equal(r.models[1].delta_loss, 0.0, 0);
    assert_float_equal(r.models[1].delta_ppl_pct, 0.0, 0);
    assert_float_equal(r.models[1].delta_loss_se, 0.0, 0);
    assert_string_equal(r.models[0].label, "fp32");
    assert_string_equal(r.models[1].label, "fp32#2"); /* unique labels for the tables */
    ngq_eval_result_free(&r);

    /* another model: compare with a window-by-window recomputation */
    const ngq_infer *pair[] = {a1, b};
    assert_int_equal(ngq_eval_run(pair, 2, tokens, N, &plan, 4, NULL, NULL, &r, &err), NGQ_OK);
    double lb, lv, kl;
    reference_scores(a1, b, tokens, &plan, &lb, &lv, &kl);
    assert_float_equal(r.models[0].mean_loss, lb, 1e-6);
    assert_float_equal(r.models[1].mean_loss, lv, 1e-6);
    assert_float_equal(r.models[1].kl_mean, kl, 1e-6);
    assert_true(r.models[1].kl_mean > 1e-3);
    assert_true(r.models[1].kl_p95 >= r.models[1].kl_mean * 0.5);
    assert_true(r.models[1].top1_agreement_pct < 100.0);
    assert_float_equal(r.models[1].delta_ppl_pct, 100.0 * (r.models[1].perplexity / r.models[0].perplexity - 1),
                       1e-9);
    assert_true(r.models[0].loss_se > 0 && r.models[1].delta_loss_se > 0);

    /* batch size does not change the numbers */
    ngq_eval_result r1;
    assert_int_equal(ngq_eval_run(pair, 2, tokens, N, &plan, 1, NULL, NULL, &r1, &err), NGQ_OK);
    assert_float_equal(r1.models[1].mean_loss, r.models[1].mean_loss, 1e-12);
    assert_float_equal(r1.models[1].kl_mean, r.models[1].kl_mean, 1e-12);

    /* the files */
    char *prefix = ngq_path_join(tmpdir, "out/eval");
    char *outdir = ngq_path_join(tmpdir, "out");
    assert_int_equal(ngq_make_dirs(outdir, &err), NGQ_OK);
    const char *paths[] = {pa, pb};
    ngq_eval_source src = {.source = "tokens", .path = "x.tok", .config_path = "", .max_windows = 0,
                           .checkpoints = paths};
    assert_int_equal(ngq_eval_save(&r, &plan, &src, prefix, &err), NGQ_OK);
    ngq_table t;
    char *csv = ngq_strdup_printf("%s.csv", prefix), *win = ngq_strdup_printf("%s_windows.csv", prefix);
    char *meta = ngq_strdup_printf("%s_meta.json", prefix);
    assert_int_equal(ngq_table_load_csv(&t, csv, &err), NGQ_OK);
    assert_int_equal(t.n_rows, 2);
    double v;
    assert_true(ngq_table_get_double(&t, 1, ngq_table_column(&t, "kl_mean"), &v));
    assert_float_equal(v, r.models[1].kl_mean, 1e-9 * v);
    assert_string_equal(ngq_table_get(&t, 1, ngq_table_column(&t, "checkpoint")), pb);
    assert_string_equal(ngq_table_get(&t, 0, ngq_table_column(&t, "delta_loss_se")), ""); /* NaN: empty */
    ngq_table_free(&t);
    assert_int_equal(ngq_table_load_csv(&t, win, &err), NGQ_OK);
    assert_int_equal(t.n_rows, plan.count);
    assert_int_equal(t.n_cols, 5);
    ngq_table_free(&t);
    char *text;
    size_t size;
    assert_int_equal(ngq_read_file(meta, &text, &size, &err), NGQ_OK);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_int_equal((size_t)cJSON_GetObjectItem(j, "scored_tokens")->valuedouble, N - 1);
    assert_int_equal(cJSON_GetObjectItem(j, "stride")->valueint, 5);
    assert_int_equal(cJSON_GetObjectItem(j, "windows")->valueint, (int)plan.count);
    cJSON_Delete(j);
    free(text);

    free(csv);
    free(win);
    free(meta);
    free(prefix);
    free(outdir);
    ngq_eval_result_free(&r);
    ngq_eval_result_free(&r1);
    ngq_eval_plan_free(&plan);
    free(tokens);
    ngq_infer_free(a1);
    ngq_infer_free(a2);
    ngq_infer_free(b);
    free(pa);
    free(pb);
}

static void test_vocabulary_and_token_checks(void **state)
{
    (void)state;
    char *pa = write_model("v20.safetensors", 3, 20), *pb = write_model("v19.safetensors", 3, 19);
    ngq_infer *a = load(pa), *b = load(pb);
    const ngq_infer *models[] = {a, b};
    const char *names[] = {pa, pb};
    ngq_error err = {0};
    assert_int_equal(ngq_eval_check_models(models, names, 2, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "another vocabulary");
    assert_contains(err.message, "v19.safetensors");
    /* a token outside the vocabulary is refused */
    uint16_t tokens[40];
    for (int i = 0; i < 40; i++) tokens[i] = (uint16_t)(i % 20);
    tokens[30] = 21;
    ngq_eval_plan plan;
    ngq_eval_result r;
    assert_int_equal(ngq_eval_plan_init(&plan, 40, 16, 0, 0, &err), NGQ_OK);
    assert_int_equal(ngq_eval_run(models, 1, tokens, 40, &plan, 2, NULL, NULL, &r, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "offset 30");
    ngq_eval_plan_free(&plan);
    ngq_infer_free(a);
    ngq_infer_free(b);
    free(pa);
    free(pb);
}

static void test_study_checkpoint_list(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_config_defaults(&cfg);
    ngq_error err = {0};
    snprintf(cfg.paths.run_dir, sizeof cfg.paths.run_dir, "runs/x");
    snprintf(cfg.quantize.variants, sizeof cfg.quantize.variants, "naive:8:channel, gptq:4:g64,gptq:3:tensor");
    ngq_eval_study s;
    assert_int_equal(ngq_eval_study_init(&s, &cfg, &err), NGQ_OK);
    assert_int_equal(s.count, 4);
    assert_string_equal(s.entries[0].path, "runs/x/checkpoints/best.safetensors");
    assert_null(s.entries[0].layers_csv);
    assert_string_equal(s.entries[1].label, "naive-8b-channel");
    assert_string_equal(s.entries[2].variant, "gptq:4:g64");
    assert_string_equal(s.entries[2].path, "runs/x/checkpoints/gptq-4b-g64.safetensors");
    assert_string_equal(s.entries[2].layers_csv, "runs/x/results/layers-gptq-4b-g64.csv");
    assert_string_equal(s.entries[3].label, "gptq-3b-tensor");
    ngq_eval_study_free(&s);
    snprintf(cfg.quantize.checkpoint, sizeof cfg.quantize.checkpoint, "other.safetensors");
    snprintf(cfg.quantize.variants, sizeof cfg.quantize.variants, "gptq:4:g64, gptq:4:g64");
    assert_int_equal(ngq_eval_study_init(&s, &cfg, &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "same variant");
    snprintf(cfg.quantize.variants, sizeof cfg.quantize.variants, "rtn:4:g64");
    assert_int_equal(ngq_eval_study_init(&s, &cfg, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "rtn:4:g64");
    cfg.quantize.variants[0] = '\0';
    assert_int_equal(ngq_eval_study_init(&s, &cfg, &err), NGQ_OK);
    assert_int_equal(s.count, 1);
    assert_string_equal(s.entries[0].path, "other.safetensors");
    ngq_eval_study_free(&s);
}

/* ---- tables ------------------------------------------------------------------------- */

static char *table_text(const ngq_table *t, int markdown)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&buf, &size);
    ngq_error err = {0};
    assert_int_equal(markdown ? ngq_table_write_markdown(t, fp, &err) : ngq_table_write_csv(t, fp, &err), NGQ_OK);
    fclose(fp);
    return buf;
}

static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static void test_csv_and_markdown_writers(void **state)
{
    (void)state;
    const char *cols[] = {"name", "value", "note"};
    ngq_table t;
    ngq_error err = {0};
    assert_int_equal(ngq_table_init(&t, cols, 3, &err), NGQ_OK);
    ngq_table_align_right(&t, 1, 1);
    size_t r;
    assert_int_equal(ngq_table_add_row(&t, &r, &err), NGQ_OK);
    ngq_table_set(&t, r, 0, "plain", &err);
    ngq_table_setf(&t, r, 1, &err, "%.2f", 1.5);
    ngq_table_set(&t, r, 2, "a,b", &err);
    assert_int_equal(ngq_table_add_row(&t, &r, &err), NGQ_OK);
    ngq_table_set(&t, r, 0, "say \"hi\"", &err);
    ngq_table_set(&t, r, 1, "12", &err);
    ngq_table_set(&t, r, 2, "two\nlines | pipe \\ slash", &err);
    assert_int_equal(ngq_table_add_row(&t, &r, &err), NGQ_OK);
    ngq_table_set(&t, r, 0, " padded", &err);
    ngq_table_set(&t, r, 1, "Δ", &err);
    assert_int_equal(ngq_table_set(&t, 9, 0, "x", &err), NGQ_ERR_INTERNAL);

    char *csv = table_text(&t, 0);
    assert_string_equal(csv, "name,value,note\n"
                             "plain,1.50,\"a,b\"\n"
                             "\"say \"\"hi\"\"\",12,\"two\nlines | pipe \\ slash\"\n"
                             "\" padded\",Δ,\n");
    /* and back */
    ngq_table back;
    assert_int_equal(ngq_table_parse_csv(&back, csv, strlen(csv), "mem", &err), NGQ_OK);
    assert_int_equal(back.n_rows, 3);
    for (size_t i = 0; i < 3; i++)
        for (int c = 0; c < 3; c++) assert_string_equal(ngq_table_get(&back, i, c), ngq_table_get(&t, i, c));
    double v;
    assert_true(ngq_table_get_double(&back, 0, 1, &v));
    assert_float_equal(v, 1.5, 0);
    assert_false(ngq_table_get_double(&back, 0, 2, &v));
    assert_false(ngq_table_get_double(&back, 2, 2, &v));
    assert_int_equal(ngq_table_column(&back, "note"), 2);
    assert_int_equal(ngq_table_column(&back, "missing"), -1);
    ngq_table_free(&back);

    char *md = table_text(&t, 1);
    assert_string_equal(md, "| name     | value | note                          |\n"
                            "| -------- | ----: | ----------------------------- |\n"
                            "| plain    |  1.50 | a,b                           |\n"
                            "| say \"hi\" |    12 | two<br>lines \\| pipe \\\\ slash |\n"
                            "|  padded  |     Δ |                               |\n");
    free(md);

    /* atomic save: the file appears whole, no temporary is left, and a failed
     * save leaves the old file untouched */
    char *path = ngq_path_join(tmpdir, "t.csv");
    assert_int_equal(ngq_table_save_csv(&t, path, &err), NGQ_OK);
    char *text;
    size_t size;
    assert_int_equal(ngq_read_file(path, &text, &size, &err), NGQ_OK);
    assert_string_equal(text, csv);
    free(text);
    assert_int_equal(count_temp_files(tmpdir), 0);
    char *bad = ngq_path_join(tmpdir, "no/such/dir/t.md");
    assert_int_not_equal(ngq_table_save_markdown(&t, bad, &err), NGQ_OK);
    assert_false(ngq_file_exists(bad));
    free(bad);

    /* malformed CSV names the line */
    const char *wrong = "a,b\n1,2\n3\n";
    assert_int_equal(ngq_table_parse_csv(&back, wrong, strlen(wrong), "w.csv", &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "w.csv:3");
    const char *open_quote = "a,b\n\"1,2\n";
    assert_int_equal(ngq_table_parse_csv(&back, open_quote, strlen(open_quote), "q.csv", &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "not closed");
    assert_int_equal(ngq_table_parse_csv(&back, "", 0, "e.csv", &err), NGQ_ERR_FORMAT);
    const char *crlf = "a,b\r\n1,2\r\n";
    assert_int_equal(ngq_table_parse_csv(&back, crlf, strlen(crlf), "c.csv", &err), NGQ_OK);
    assert_string_equal(ngq_table_get(&back, 0, 1), "2");
    ngq_table_free(&back);

    free(csv);
    free(path);
    ngq_table_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_scores_every_token_once),
        cmocka_unit_test(test_plan_shape),
        cmocka_unit_test(test_standard_error_and_percentile),
        cmocka_unit_test(test_uniform_model_perplexity_is_vocab_size),
        cmocka_unit_test(test_against_itself_and_another_model),
        cmocka_unit_test(test_vocabulary_and_token_checks),
        cmocka_unit_test(test_study_checkpoint_list),
        cmocka_unit_test(test_csv_and_markdown_writers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
