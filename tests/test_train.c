/* test_train.c: checkpoints (round trip, tied head, corruption, wrong kind),
 * the training state, and the training loop on a tiny corpus written by the
 * test: determinism, bit-exact resume, the NaN stop, the up-front memory
 * check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/cli.h"
#include "nanogptq/config.h"
#include "nanogptq/preprocess.h"
#include "nanogptq/train.h"

#include "test_util.h"

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    if (test_make_tmpdir(tmpdir, sizeof tmpdir, "ngq_test_train")) return -1;
    /* a small corpus with learnable structure */
    char *path = ngq_path_join(tmpdir, "corpus.txt");
    FILE *fp = fopen(path, "w");
    const char *names[] = {"Tom", "Lily", "Ben", "Sue"};
    const char *things[] = {"ball", "cat", "tree", "cake"};
    for (int i = 0; i < 300; i++)
        fprintf(fp, "%s saw a %s. %s liked the %s very much.\n<|endoftext|>\n", names[i % 4], things[(i / 4) % 4],
                names[i % 4], things[(i / 4) % 4]);
    fclose(fp);
    free(path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return test_remove_tree(tmpdir);
}

static void tiny_config(ngq_config *cfg, const char *run)
{
    ngq_config_defaults(cfg);
    snprintf(cfg->data.inputs, sizeof cfg->data.inputs, "%s/corpus.txt", tmpdir);
    snprintf(cfg->paths.run_dir, sizeof cfg->paths.run_dir, "%s/%s", tmpdir, run);
    cfg->data.val_fraction = 0.1;
    cfg->data.test_fraction = 0.1;
    cfg->model.n_layer = 2;
    cfg->model.n_head = 2;
    cfg->model.n_embd = 16;
    cfg->model.block_size = 16;
    cfg->train.batch_size = 4;
    cfg->train.grad_accum = 2;
    cfg->train.max_steps = 40;
    cfg->train.warmup_steps = 2;
    cfg->train.eval_interval = 10;
    cfg->train.eval_windows = 6;
    cfg->train.checkpoint_interval = 15;
    cfg->train.learning_rate = 1e-2;
    cfg->train.min_lr = 1e-3;
    ngq_error err = {0};
    ngq_preprocess_stats stats;
    assert_int_equal(ngq_config_validate(cfg, &err), NGQ_OK);
    if (ngq_preprocess_run(cfg, &stats, &err)) fail_msg("preprocess: %s", err.message);
}

static char *run_file(const ngq_config *cfg, const char *name)
{
    return ngq_strdup_printf("%s/%s", cfg->paths.run_dir, name);
}

static void test_val_offsets(void **state)
{
    (void)state;
    size_t off[5];
    ngq_train_val_offsets(1000, 16, 5, off);
    assert_int_equal(off[0], 0);
    assert_int_equal(off[4], 1000 - 16 - 1);
    for (int i = 1; i < 5; i++) assert_true(off[i] > off[i - 1]);
}

static void test_checkpoint_round_trip(void **state)
{
    (void)state;
    ngq_model_config mc = {.vocab_size = 7, .block_size = 8, .n_layer = 2, .n_head = 2, .n_embd = 8,
                           .bias = 1, .tie_embeddings = 1, .dropout = 0.0f, .init_std = 0.02f};
    ngq_model model;
    ngq_error err = {0};
    assert_int_equal(ngq_model_init(&model, &mc, &err), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 5, 1);
    ngq_model_init_weights(&model, &rng);
    const uint32_t cps[] = {'a', 'b', 'c', 'd', 'e', 0x201C};
    ngq_vocab vocab;
    assert_int_equal(ngq_vocab_from_codepoints(&vocab, cps, 6, &err), NGQ_OK);
    ngq_checkpoint_meta meta = {.step = 42, .seed = 7, .tokens_seen = 1234, .val_loss = 1.5};
    char *path = ngq_path_join(tmpdir, "ck.safetensors");
    char sum[40];
    assert_int_equal(ngq_checkpoint_save(path, &model, &vocab, &meta, sum, &err), NGQ_OK);

    ngq_model loaded;
    ngq_vocab lv;
    ngq_checkpoint_meta lm;
    assert_int_equal(ngq_checkpoint_load(path, &loaded, &lv, &lm, &err), NGQ_OK);
    assert_int_equal(loaded.param_count, model.param_count);
    assert_memory_equal(loaded.params, model.params, model.param_count * sizeof(float));
    assert_int_equal(lm.step, 42);
    assert_int_equal(lm.tokens_seen, 1234);
    assert_int_equal(lm.model.bias, 1);
    assert_int_equal(lm.model.n_layer, 2);
    assert_float_equal(lm.val_loss, 1.5, 1e-9);
    assert_string_equal(lm.kind, "fp32");
    assert_string_equal(lm.checksum, sum);
    assert_true(lv.hash == vocab.hash);
    ngq_model_free(&loaded);
    ngq_vocab_free(&lv);

    /* the tied head is stored and must equal wte */
    ngq_st_file *f;
    assert_int_equal(ngq_st_open(&f, path, &err), NGQ_OK);
    assert_non_null(ngq_st_find_tensor(f, "lm_head.weight"));
    assert_non_null(ngq_st_find_tensor(f, "transformer.h.1.mlp.c_proj.bias"));
    ngq_st_close(f);

    /* a flipped data byte is caught by the checksum */
    char *data;
    size_t size;
    assert_int_equal(ngq_read_file(path, &data, &size, &err), NGQ_OK);
    data[size - 5] ^= 0x40;
    char *bad = ngq_path_join(tmpdir, "bad.safetensors");
    assert_int_equal(ngq_write_file_atomic(bad, data, size, &err), NGQ_OK);
    assert_int_equal(ngq_checkpoint_load(bad, &loaded, &lv, &lm, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "checksum");
    free(data);

    /* a safetensors file that is not a nanogptq checkpoint */
    ngq_st_writer w;
    ngq_st_writer_init(&w);
    float x[3] = {1, 2, 3};
    int64_t shape[1] = {3};
    assert_int_equal(ngq_st_writer_add_tensor(&w, "x", NGQ_ST_F32, 1, shape, x, sizeof x, &err), NGQ_OK);
    assert_int_equal(ngq_st_writer_write(&w, bad, &err), NGQ_OK);
    ngq_st_writer_free(&w);
    assert_int_equal(ngq_checkpoint_load(bad, &loaded, &lv, &lm, &err), NGQ_ERR_FORMAT);
    assert_contains(err.message, "nanogptq.format");

    free(bad);
    free(path);
    ngq_vocab_free(&vocab);
    ngq_model_free(&model);
}

static void test_train_deterministic_and_resume_bit_exact(void **state)
{
    (void)state;
    ngq_config a, b;
    tiny_config(&a, "run_a");
    tiny_config(&b, "run_b");
    ngq_train_options opts = {0};
    ngq_train_result ra, rb;
    ngq_error err = {0};
    assert_int_equal(ngq_train_run(&a, &opts, &ra, &err), NGQ_OK);
    assert_int_equal(ra.steps_done, 40);
    /* it learned something: well below the uniform distribution's loss */
    if (!(ra.final_val_loss < 2.5)) fail_msg("val loss %g after 40 steps", ra.final_val_loss);

    /* b: stop at step 17, resume to 40 */
    opts.stop_at_step = 17;
    assert_int_equal(ngq_train_run(&b, &opts, &rb, &err), NGQ_OK);
    assert_true(rb.stopped_early);
    assert_int_equal(rb.steps_done, 17);
    opts.stop_at_step = 0;
    opts.resume = 1;
    assert_int_equal(ngq_train_run(&b, &opts, &rb, &err), NGQ_OK);
    assert_int_equal(rb.steps_done, 40);
    assert_true(rb.final_val_loss == ra.final_val_loss);

    const char *files[] = {"checkpoints/last.safetensors", "checkpoints/best.safetensors",
                           "checkpoints/last.state.safetensors"};
    for (int i = 0; i < 3; i++) {
        char *fa = run_file(&a, files[i]), *fb = run_file(&b, files[i]);
        if (!test_files_equal(fa, fb)) fail_msg("%s differs between one run and stop+resume", files[i]);
        free(fa);
        free(fb);
    }
    /* the loss trace is the same (all but the timing columns) */
    char *la = run_file(&a, "train_log.csv"), *lb = run_file(&b, "train_log.csv");
    char *ta, *tb;
    size_t na, nb;
    assert_int_equal(ngq_read_file(la, &ta, &na, &err), NGQ_OK);
    assert_int_equal(ngq_read_file(lb, &tb, &nb, &err), NGQ_OK);
    int rows_a = 0, rows_b = 0;
    for (char *pa = ta, *pb = tb; pa && pb; rows_a++, rows_b++) {
        /* compare the first five columns of each row */
        int commas = 0;
        size_t k = 0;
        while (pa[k] && pa[k] != '\n' && commas < 5) commas += pa[k++] == ',';
        assert_memory_equal(pa, pb, k);
        pa = strchr(pa, '\n');
        pb = strchr(pb, '\n');
        pa = pa && pa[1] ? pa + 1 : NULL;
        pb = pb && pb[1] ? pb + 1 : NULL;
        if (!pa || !pb) assert_true(!pa && !pb);
    }
    assert_int_equal(rows_a, 41); /* header + 40 steps */
    free(ta);
    free(tb);
    free(la);
    free(lb);

    /* same seed, another thread count: the same bytes */
    ngq_config c;
    tiny_config(&c, "run_c");
    c.run.threads = 1;
    ngq_runtime_setup(&c);
    ngq_train_options plain = {0};
    ngq_train_result rc;
    assert_int_equal(ngq_train_run(&c, &plain, &rc, &err), NGQ_OK);
    ngq_runtime_setup(&a);
    char *fa = run_file(&a, files[0]), *fc = run_file(&c, files[0]);
    assert_true(test_files_equal(fa, fc));
    free(fa);
    free(fc);
}

static void test_train_nan_stops_and_keeps_checkpoint(void **state)
{
    (void)state;
    ngq_config cfg;
    tiny_config(&cfg, "run_nan");
    ngq_train_options opts = {.stop_at_step = 5};
    ngq_train_result r;
    ngq_error err = {0};
    assert_int_equal(ngq_train_run(&cfg, &opts, &r, &err), NGQ_OK);
    /* poison the saved weights, keeping the pair consistent */
    char *last = run_file(&cfg, "checkpoints/last.safetensors");
    char *state_path = run_file(&cfg, "checkpoints/last.state.safetensors");
    ngq_model model;
    ngq_vocab vocab;
    ngq_checkpoint_meta meta;
    assert_int_equal(ngq_checkpoint_load(last, &model, &vocab, &meta, &err), NGQ_OK);
    model.params[model.param_count - 1] = NAN;
    ngq_adamw opt;
    assert_int_equal(ngq_adamw_init(&opt, model.param_count, 0.9, 0.99, 1e-8, 0.1, NULL, 0, &err), NGQ_OK);
    ngq_train_state ts;
    assert_int_equal(ngq_train_state_load(state_path, &opt, &ts, &err), NGQ_OK);
    assert_int_equal(ngq_checkpoint_save(last, &model, &vocab, &meta, ts.checkpoint_checksum, &err), NGQ_OK);
    assert_int_equal(ngq_train_state_save(state_path, &opt, &ts, &err), NGQ_OK);
    char *before;
    size_t before_size;
    assert_int_equal(ngq_read_file(last, &before, &before_size, &err), NGQ_OK);

    opts.stop_at_step = 0;
    opts.resume = 1;
    assert_int_equal(ngq_train_run(&cfg, &opts, &r, &err), NGQ_ERR_NUMERIC);
    assert_contains(err.message, "step 6");
    assert_contains(err.message, "last good checkpoint (step 5)");
    char *after;
    size_t after_size;
    assert_int_equal(ngq_read_file(last, &after, &after_size, &err), NGQ_OK);
    assert_int_equal(before_size, after_size);
    assert_memory_equal(before, after, before_size);
    free(before);
    free(after);
    free(last);
    free(state_path);
    ngq_adamw_free(&opt);
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
}

static void test_resume_refuses_other_model(void **state)
{
    (void)state;
    ngq_config cfg;
    tiny_config(&cfg, "run_other");
    ngq_train_options opts = {.stop_at_step = 3};
    ngq_train_result r;
    ngq_error err = {0};
    assert_int_equal(ngq_train_run(&cfg, &opts, &r, &err), NGQ_OK);
    cfg.model.n_layer = 3;
    opts.resume = 1;
    opts.stop_at_step = 0;
    assert_int_equal(ngq_train_run(&cfg, &opts, &r, &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "another [model] configuration");
}

static void test_huge_model_fails_up_front(void **state)
{
    (void)state;
    ngq_config cfg;
    tiny_config(&cfg, "run_huge");
    ngq_train_options opts = {0};
    ngq_train_result r;
    ngq_error err = {0};
    /* 100 G parameters: refused by validation */
    cfg.model.n_embd = 8192;
    cfg.model.n_head = 64;
    cfg.model.n_layer = 128;
    assert_int_equal(ngq_train_run(&cfg, &opts, &r, &err), NGQ_ERR_CONFIG);
    /* 2 G parameters: valid, but parameters, gradients and moments need 32 GiB */
    cfg.model.n_embd = 2048;
    cfg.model.n_head = 16;
    cfg.model.n_layer = 40;
    assert_int_equal(ngq_train_run(&cfg, &opts, &r, &err), NGQ_ERR_NOMEM);
    assert_contains(err.message, "GiB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_val_offsets),
        cmocka_unit_test(test_checkpoint_round_trip),
        cmocka_unit_test(test_train_deterministic_and_resume_bit_exact),
        cmocka_unit_test(test_train_nan_stops_and_keeps_checkpoint),
        cmocka_unit_test(test_resume_refuses_other_model),
        cmocka_unit_test(test_huge_model_fails_up_front),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
