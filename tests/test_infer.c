/* test_infer.c: the inference path against the training forward pass, the KV
 * cache against whole windows, quantized checkpoints against their
 * dequantized weights, and the quantize step (naive = RTN, GPTQ beats RTN,
 * calibration files, label/variant parsing, bad input). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/config.h"
#include "nanogptq/infer.h"
#include "nanogptq/preprocess.h"
#include "nanogptq/quantize.h"
#include "nanogptq/safetensors.h"
#include "nanogptq/train.h"

#include "test_util.h"

static char tmpdir[256];
static ngq_config cfg; /* tiny model trained once in setup */
static char *baseline;

static int setup(void **state)
{
    (void)state;
    if (test_make_tmpdir(tmpdir, sizeof tmpdir, "ngq_test_infer")) return -1;
    char *path = ngq_path_join(tmpdir, "corpus.txt");
    FILE *fp = fopen(path, "w");
    for (int i = 0; i < 200; i++)
        fprintf(fp, "The %s dog ran to the %s park. It was fun!\n<|endoftext|>\n", i % 3 ? "big" : "small",
                i % 2 ? "green" : "old");
    fclose(fp);
    ngq_config_defaults(&cfg);
    snprintf(cfg.data.inputs, sizeof cfg.data.inputs, "%s", path);
    snprintf(cfg.paths.run_dir, sizeof cfg.paths.run_dir, "%s/run", tmpdir);
    free(path);
    cfg.data.val_fraction = 0.1;
    cfg.data.test_fraction = 0.1;
    cfg.model.n_layer = 2;
    cfg.model.n_head = 2;
    cfg.model.n_embd = 32;
    cfg.model.block_size = 24;
    cfg.model.bias = 1;
    cfg.train.batch_size = 4;
    cfg.train.grad_accum = 1;
    cfg.train.max_steps = 30;
    cfg.train.warmup_steps = 2;
    cfg.train.learning_rate = 1e-2;
    cfg.train.min_lr = 1e-3;
    cfg.train.eval_interval = 30;
    cfg.train.eval_windows = 4;
    cfg.train.checkpoint_interval = 30;
    cfg.quantize.n_samples = 16;
    cfg.quantize.group_size = 16;
    ngq_error err = {0};
    ngq_preprocess_stats ps;
    ngq_train_options to = {0};
    ngq_train_result tr;
    if (ngq_preprocess_run(&cfg, &ps, &err) || ngq_train_run(&cfg, &to, &tr, &err)) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    baseline = ngq_config_checkpoint_path(&cfg, "best.safetensors");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(baseline);
    return test_remove_tree(tmpdir);
}

static void fill_tokens(uint16_t *t, int n, int V, unsigned seed)
{
    for (int i = 0; i < n; i++) t[i] = (uint16_t)((seed * 2654435761u + (unsigned)i * 40503u) % (unsigned)(V - 1));
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

static void test_fp32_matches_training_forward(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_infer *m;
    assert_int_equal(ngq_infer_load(&m, baseline, &err), NGQ_OK);
    const ngq_model_config *c = ngq_infer_config(m);
    assert_string_equal(ngq_infer_get_info(m)->label, "fp32");
    assert_int_equal(ngq_infer_get_info(m)->quantized, 0);
    ngq_model model;
    ngq_vocab vocab;
    ngq_checkpoint_meta meta;
    assert_int_equal(ngq_checkpoint_load(baseline, &model, &vocab, &meta, &err), NGQ_OK);
    ngq_activations acts;
    int B = 3, T = c->block_size;
    assert_int_equal(ngq_activations_init(&acts, c, B, T, &err), NGQ_OK);
    uint16_t tokens[3 * 24];
    fill_tokens(tokens, B * T, c->vocab_size, 7);
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, NULL, B, T, NULL, NULL, &err), NGQ_OK);
    ngq_infer_workspace *ws;
    assert_int_equal(ngq_infer_workspace_init(&ws, m, B, T, &err), NGQ_OK);
    const float *logits;
    assert_int_equal(ngq_infer_forward(m, ws, tokens, B, T, &logits, &err), NGQ_OK);
    size_t n = (size_t)B * T * c->vocab_size;
    assert_true(max_abs_diff(logits, acts.logits, n) < 1e-4);
    /* a token outside the vocabulary is refused */
    tokens[5] = (uint16_t)c->vocab_size;
    assert_int_equal(ngq_infer_forward(m, ws, tokens, B, T, &logits, &err), NGQ_ERR_FORMAT);
    ngq_infer_workspace_free(ws);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
    ngq_infer_free(m);
}

static void check_session_matches_windows(const char *path)
{
    ngq_error err = {0};
    ngq_infer *m;
    assert_int_equal(ngq_infer_load(&m, path, &err), NGQ_OK);
    const ngq_model_config *c = ngq_infer_config(m);
    int T = c->block_size, V = c->vocab_size;
    uint16_t tokens[24];
    fill_tokens(tokens, T, V, 3);
    ngq_infer_workspace *ws;
    assert_int_equal(ngq_infer_workspace_init(&ws, m, 1, T, &err), NGQ_OK);
    const float *full;
    assert_int_equal(ngq_infer_forward(m, ws, tokens, 1, T, &full, &err), NGQ_OK);
    ngq_infer_session *s;
    assert_int_equal(ngq_infer_session_init(&s, m, &err), NGQ_OK);
    /* a 5-token prefix at once, then one token at a time */
    const float *logits;
    assert_int_equal(ngq_infer_session_feed(s, tokens, 5, &logits, &err), NGQ_OK);
    assert_true(max_abs_diff(logits, full + (size_t)4 * V, (size_t)V) < 1e-4);
    for (int t = 5; t < T; t++) {
        assert_int_equal(ngq_infer_session_feed(s, tokens + t, 1, &logits, &err), NGQ_OK);
        double d = max_abs_diff(logits, full + (size_t)t * V, (size_t)V);
        if (d > 1e-4) fail_msg("position %d: KV-cached logits differ by %g", t, d);
    }
    assert_int_equal(ngq_infer_session_length(s), T);
    /* past the block: the context is cut to 3/4 of a block and re-encoded */
    uint16_t next = tokens[0];
    assert_int_equal(ngq_infer_session_feed(s, &next, 1, &logits, &err), NGQ_OK);
    int keep = T - T / 4;
    assert_int_equal(ngq_infer_session_length(s), keep);
    uint16_t window[24];
    memcpy(window, tokens + (T - keep + 1), (size_t)(keep - 1) * sizeof *window);
    window[keep - 1] = next;
    assert_int_equal(ngq_infer_forward(m, ws, window, 1, keep, &full, &err), NGQ_OK);
    assert_true(max_abs_diff(logits, full + (size_t)(keep - 1) * V, (size_t)V) < 1e-4);
    ngq_infer_session_free(s);
    ngq_infer_workspace_free(ws);
    ngq_infer_free(m);
}

static void test_session_matches_windows_fp32(void **state)
{
    (void)state;
    check_session_matches_windows(baseline);
}

/* Logits of a quantized checkpoint equal those of the fp32 model whose
 * quantized weights are replaced by their dequantized values. */
static void check_quantized_matches_dequantized(const char *variant)
{
    ngq_error err = {0};
    ngq_quantize_options o;
    assert_int_equal(ngq_quantize_options_from_config(&cfg, &o, &err), NGQ_OK);
    assert_int_equal(ngq_quantize_apply_variant(&o, variant, &err), NGQ_OK);
    char label[64];
    ngq_quantize_options_label(&o, label, sizeof label);
    char *out = ngq_strdup_printf("%s/%s.safetensors", tmpdir, label);
    ngq_quantize_result res;
    if (ngq_quantize_run(&cfg, baseline, out, &o, NULL, NULL, &res, &err)) fail_msg("%s: %s", variant, err.message);
    assert_int_equal(res.n_layers, 4 * cfg.model.n_layer);
    assert_true(res.output_bytes > 0 && res.output_bytes < res.input_bytes);
    ngq_quantize_result_free(&res);

    ngq_infer *qm;
    assert_int_equal(ngq_infer_load(&qm, out, &err), NGQ_OK);
    const ngq_infer_info *info = ngq_infer_get_info(qm);
    assert_int_equal(info->quantized, 1);
    assert_string_equal(info->label, label);
    assert_true(info->bits_per_weight > o.grid.bits && info->bits_per_weight < o.grid.bits + 8);

    /* the reference: fp32 model with each quantized tensor dequantized */
    ngq_model model;
    ngq_vocab vocab;
    ngq_checkpoint_meta meta;
    assert_int_equal(ngq_checkpoint_load(baseline, &model, &vocab, &meta, &err), NGQ_OK);
    ngq_st_file *f;
    assert_int_equal(ngq_st_open(&f, out, &err), NGQ_OK);
    int n = ngq_model_tensor_count(&model.config);
    for (int i = 0; i < n; i++) {
        ngq_tensor_info ti;
        ngq_model_tensor_info(&model.config, i, &ti, NULL);
        if (!ti.is_block_linear) continue;
        ngq_qtensor q;
        assert_int_equal(ngq_qtensor_init(&q, ti.shape[0], ti.shape[1], &o.grid, 0, &err), NGQ_OK);
        ngq_qtensor_part parts[NGQ_QTENSOR_MAX_PARTS];
        int np = ngq_qtensor_get_parts(&q, parts);
        for (int k = 0; k < np; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s", ti.name, parts[k].name);
            const ngq_st_tensor *t = ngq_st_find_tensor(f, name);
            assert_non_null(t);
            assert_int_equal(t->nbytes, parts[k].bytes);
            memcpy(parts[k].data, t->data, t->nbytes);
        }
        ngq_qtensor_dequantize(&q, model.params + ti.offset);
        ngq_qtensor_free(&q);
    }
    ngq_st_close(f);
    int B = 2, T = cfg.model.block_size;
    ngq_activations acts;
    assert_int_equal(ngq_activations_init(&acts, &model.config, B, T, &err), NGQ_OK);
    uint16_t tokens[2 * 24];
    fill_tokens(tokens, B * T, model.config.vocab_size, 11);
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, NULL, B, T, NULL, NULL, &err), NGQ_OK);
    ngq_infer_workspace *ws;
    assert_int_equal(ngq_infer_workspace_init(&ws, qm, B, T, &err), NGQ_OK);
    const float *logits;
    assert_int_equal(ngq_infer_forward(qm, ws, tokens, B, T, &logits, &err), NGQ_OK);
    double d = max_abs_diff(logits, acts.logits, (size_t)B * T * model.config.vocab_size);
    if (d > 1e-3) fail_msg("%s: packed forward differs from dequantized fp32 by %g", variant, d);
    ngq_infer_workspace_free(ws);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
    ngq_infer_free(qm);
    check_session_matches_windows(out);
    free(out);
}

static void test_quantized_naive8(void **state)
{
    (void)state;
    check_quantized_matches_dequantized("naive:8:channel");
}

static void test_quantized_gptq4_groups(void **state)
{
    (void)state;
    check_quantized_matches_dequantized("gptq:4:g16");
}

static void test_quantized_gptq3_tensor(void **state)
{
    (void)state;
    check_quantized_matches_dequantized("gptq:3:tensor");
}

static void test_gptq_beats_rtn_per_layer(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_quantize_options o;
    assert_int_equal(ngq_quantize_options_from_config(&cfg, &o, &err), NGQ_OK);
    assert_int_equal(ngq_quantize_apply_variant(&o, "gptq:3:channel", &err), NGQ_OK);
    char *out = ngq_path_join(tmpdir, "g3.safetensors");
    ngq_quantize_result res;
    assert_int_equal(ngq_quantize_run(&cfg, baseline, out, &o, NULL, NULL, &res, &err), NGQ_OK);
    for (int i = 0; i < res.n_layers; i++) {
        const ngq_quantize_layer_report *r = &res.layers[i];
        if (!(r->gptq_error < r->rtn_error))
            fail_msg("%s: gptq %g not below rtn %g", r->tensor, r->gptq_error, r->rtn_error);
    }
    char *csv = ngq_path_join(tmpdir, "layers.csv");
    assert_int_equal(ngq_quantize_write_layer_csv(csv, &res, &err), NGQ_OK);
    char *text;
    size_t size;
    assert_int_equal(ngq_read_file(csv, &text, &size, &err), NGQ_OK);
    assert_true(strncmp(text, "layer,tensor,rows,cols,rtn_rel_error,gptq_rel_error", 51) == 0);
    int lines = 0;
    for (char *p = text; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, res.n_layers + 1);
    free(text);
    free(csv);
    ngq_quantize_result_free(&res);
    free(out);
}

static void test_calibration_file(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_quantize_options o;
    assert_int_equal(ngq_quantize_options_from_config(&cfg, &o, &err), NGQ_OK);
    char *calib = ngq_path_join(tmpdir, "calib.txt");
    FILE *fp = fopen(calib, "w");
    fprintf(fp, "# offsets\n0\n100\n  250\n");
    fclose(fp);
    snprintf(o.calibration, sizeof o.calibration, "%s", calib);
    char *out = ngq_path_join(tmpdir, "calib.safetensors");
    ngq_quantize_result res;
    assert_int_equal(ngq_quantize_run(&cfg, baseline, out, &o, NULL, NULL, &res, &err), NGQ_OK);
    ngq_quantize_result_free(&res);
    ngq_st_file *f;
    assert_int_equal(ngq_st_open(&f, out, &err), NGQ_OK);
    assert_string_equal(ngq_st_metadata_value(f, "nanogptq.quant.calibration"), "[0, 100, 250]");
    ngq_st_close(f);
    /* an offset past the end of the train split, named by its line */
    fp = fopen(calib, "w");
    fprintf(fp, "0\n99999999\n");
    fclose(fp);
    assert_int_equal(ngq_quantize_run(&cfg, baseline, out, &o, NULL, NULL, &res, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, ":2:");
    free(out);
    free(calib);
}

static void test_variants_and_labels(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_quantize_options o;
    char label[64];
    assert_int_equal(ngq_quantize_options_from_config(&cfg, &o, &err), NGQ_OK);
    assert_int_equal(ngq_quantize_apply_variant(&o, "gptq:4:g64", &err), NGQ_OK);
    ngq_quantize_options_label(&o, label, sizeof label);
    assert_string_equal(label, "gptq-4b-g64");
    assert_int_equal(ngq_quantize_apply_variant(&o, "naive:8:channel", &err), NGQ_OK);
    ngq_quantize_options_label(&o, label, sizeof label);
    assert_string_equal(label, "naive-8b-channel");
    assert_int_equal(ngq_quantize_apply_variant(&o, "naive:8:int8compat", &err), NGQ_OK);
    ngq_quantize_options_label(&o, label, sizeof label);
    assert_string_equal(label, "naive-8b-int8compat");
    assert_int_equal(ngq_quantize_apply_variant(&o, "awq:4:g64", &err), NGQ_ERR_USAGE);
    assert_int_equal(ngq_quantize_apply_variant(&o, "gptq:9:g64", &err), NGQ_ERR_USAGE);
    assert_int_equal(ngq_quantize_apply_variant(&o, "gptq:4:g1", &err), NGQ_ERR_USAGE);
    assert_int_equal(ngq_quantize_apply_variant(&o, "gptq:4", &err), NGQ_ERR_USAGE);
    /* a group size that does not divide a layer's width is named */
    assert_int_equal(ngq_quantize_apply_variant(&o, "naive:4:g24", &err), NGQ_OK);
    char *out = ngq_path_join(tmpdir, "bad.safetensors");
    ngq_quantize_result res;
    assert_int_not_equal(ngq_quantize_run(&cfg, baseline, out, &o, NULL, NULL, &res, &err), NGQ_OK);
    assert_contains(err.message, "transformer.h.0");
    free(out);
}

static void test_quantized_file_damage(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_quantize_options o;
    assert_int_equal(ngq_quantize_options_from_config(&cfg, &o, &err), NGQ_OK);
    assert_int_equal(ngq_quantize_apply_variant(&o, "naive:4:channel", &err), NGQ_OK);
    char *out = ngq_path_join(tmpdir, "n4.safetensors");
    ngq_quantize_result res;
    assert_int_equal(ngq_quantize_run(&cfg, baseline, out, &o, NULL, NULL, &res, &err), NGQ_OK);
    ngq_quantize_result_free(&res);
    /* quantize refuses a quantized input */
    char *again = ngq_path_join(tmpdir, "again.safetensors");
    assert_int_equal(ngq_quantize_run(&cfg, out, again, &o, NULL, NULL, &res, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "quantized checkpoint");
    /* a truncated file */
    char *data;
    size_t size;
    assert_int_equal(ngq_read_file(out, &data, &size, &err), NGQ_OK);
    char *cut = ngq_path_join(tmpdir, "cut.safetensors");
    assert_int_equal(ngq_write_file_atomic(cut, data, size - 100, &err), NGQ_OK);
    ngq_infer *m;
    assert_int_equal(ngq_infer_load(&m, cut, &err), NGQ_ERR_FORMAT);
    free(data);
    free(cut);
    free(again);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp32_matches_training_forward),
        cmocka_unit_test(test_session_matches_windows_fp32),
        cmocka_unit_test(test_quantized_naive8),
        cmocka_unit_test(test_quantized_gptq4_groups),
        cmocka_unit_test(test_quantized_gptq3_tensor),
        cmocka_unit_test(test_gptq_beats_rtn_per_layer),
        cmocka_unit_test(test_calibration_file),
        cmocka_unit_test(test_variants_and_labels),
        cmocka_unit_test(test_quantized_file_damage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
