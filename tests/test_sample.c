/* test_sample.c: the sampling filters on hand-made distributions (greedy ties,
 * temperature, top-k, top-p, both), the draw's frequencies and determinism,
 * prompt encoding (unknown characters, invalid UTF-8, truncation, the empty
 * prompt), and generation from a tiny model trained here on one repeated
 * sentence: its greedy continuation must reproduce the sentence exactly, from
 * the fp32 checkpoint and from its 8-bit round-to-nearest version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/cli.h"
#include "nanogptq/config.h"
#include "nanogptq/infer.h"
#include "nanogptq/preprocess.h"
#include "nanogptq/quantize.h"
#include "nanogptq/sample.h"
#include "nanogptq/train.h"

static char tmpdir[256];
static char *fp32_path, *q8_path;

/* The corpus: one story, repeated. Greedy decoding of a model that learned it
 * continues any prefix with the rest of the period, over and over. */
static const char PERIOD[] = "the quick brown fox jumps over the lazy dog.\n<|endoftext|>\n";

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle)) fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* Trains the fixture model (2 layers, C 32, T 32, 100 steps) and writes its
 * 8-bit per-channel round-to-nearest version. */
static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ngq_test_sample_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    char *corpus = ngq_path_join(tmpdir, "corpus.txt");
    FILE *fp = fopen(corpus, "w");
    if (!fp) return -1;
    for (int i = 0; i < 200; i++) fputs(PERIOD, fp);
    fclose(fp);

    ngq_config cfg;
    ngq_config_defaults(&cfg);
    snprintf(cfg.data.inputs, sizeof cfg.data.inputs, "%s", corpus);
    snprintf(cfg.paths.run_dir, sizeof cfg.paths.run_dir, "%s/run", tmpdir);
    free(corpus);
    cfg.data.val_fraction = 0.1;
    cfg.data.test_fraction = 0.1;
    cfg.model.n_layer = 2;
    cfg.model.n_head = 2;
    cfg.model.n_embd = 32;
    cfg.model.block_size = 32;
    cfg.train.batch_size = 8;
    cfg.train.grad_accum = 1;
    cfg.train.max_steps = 100;
    cfg.train.warmup_steps = 5;
    cfg.train.eval_interval = 100;
    cfg.train.eval_windows = 4;
    cfg.train.checkpoint_interval = 100;
    cfg.train.learning_rate = 1e-2;
    cfg.train.min_lr = 1e-3;
    ngq_runtime_setup(&cfg);
    ngq_error err = {0};
    ngq_preprocess_stats ps;
    ngq_train_options opts = {0};
    ngq_train_result tr;
    if (ngq_config_validate(&cfg, &err) || ngq_preprocess_run(&cfg, &ps, &err) ||
        ngq_train_run(&cfg, &opts, &tr, &err)) {
        fprintf(stderr, "fixture: %s\n", err.message);
        return -1;
    }
    fp32_path = ngq_config_checkpoint_path(&cfg, "best.safetensors");
    q8_path = ngq_config_checkpoint_path(&cfg, "naive-8b-channel.safetensors");
    ngq_quantize_options qo;
    ngq_quantize_result qr;
    if (ngq_quantize_options_from_config(&cfg, &qo, &err) || ngq_quantize_apply_variant(&qo, "naive:8:channel", &err) ||
        ngq_quantize_run(&cfg, fp32_path, q8_path, &qo, NULL, NULL, &qr, &err)) {
        fprintf(stderr, "fixture: %s\n", err.message);
        return -1;
    }
    ngq_quantize_result_free(&qr);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(fp32_path);
    free(q8_path);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* logits = log(p) so that softmax at temperature 1 gives p back */
static void logits_of(const double *p, int V, float *logits)
{
    for (int i = 0; i < V; i++) logits[i] = p[i] > 0 ? (float)log(p[i]) : -INFINITY;
}

/* ---- filters ------------------------------------------------------------------------- */

static void test_greedy_lowest_id_on_ties(void **state)
{
    (void)state;
    ngq_sample_candidate out[5];
    ngq_sampler_config greedy = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
    const float tie[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f};
    assert_int_equal(ngq_sample_filter(tie, 5, &greedy, out), 1);
    assert_int_equal(out[0].id, 1);
    assert_true(out[0].probability == 1.0f);
    const float neg[3] = {-INFINITY, -3.0f, -2.5f};
    assert_int_equal(ngq_sample_filter(neg, 3, &greedy, out), 1);
    assert_int_equal(out[0].id, 2);
    /* greedy does not touch the RNG */
    ngq_rng a, b;
    ngq_rng_seed(&a, 9, 1);
    b = a;
    assert_int_equal(ngq_sample_next(tie, 5, &greedy, &a, out), 1);
    assert_memory_equal(&a, &b, sizeof a);
    /* nothing to choose from */
    const float bad[3] = {0.0f, NAN, 1.0f};
    const float none[2] = {-INFINITY, -INFINITY};
    const float inf[2] = {0.0f, INFINITY};
    ngq_sampler_config warm = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f};
    assert_int_equal(ngq_sample_filter(bad, 3, &greedy, out), 0);
    assert_int_equal(ngq_sample_filter(bad, 3, &warm, out), 0);
    assert_int_equal(ngq_sample_filter(none, 2, &warm, out), 0);
    assert_int_equal(ngq_sample_filter(inf, 2, &warm, out), 0);
    assert_int_equal(ngq_sample_next(none, 2, &warm, &a, out), -1);
}

static void test_temperature(void **state)
{
    (void)state;
    const double p[4] = {0.1, 0.4, 0.2, 0.3};
    float logits[4];
    logits_of(p, 4, logits);
    ngq_sample_candidate out[4];
    /* T = 1: the distribution itself, ids in increasing order (no filter) */
    ngq_sampler_config one = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f};
    assert_int_equal(ngq_sample_filter(logits, 4, &one, out), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out[i].id, i);
        assert_float_equal(out[i].probability, p[i], 1e-6);
    }
    /* T = 2: p^(1/2), renormalised */
    ngq_sampler_config two = {.temperature = 2.0f, .top_k = 0, .top_p = 1.0f};
    assert_int_equal(ngq_sample_filter(logits, 4, &two, out), 4);
    double z = 0;
    for (int i = 0; i < 4; i++) z += sqrt(p[i]);
    for (int i = 0; i < 4; i++) assert_float_equal(out[i].probability, sqrt(p[i]) / z, 1e-6);
    /* T = 0.5: p^2 */
    ngq_sampler_config half = {.temperature = 0.5f, .top_k = 0, .top_p = 1.0f};
    assert_int_equal(ngq_sample_filter(logits, 4, &half, out), 4);
    z = 0;
    for (int i = 0; i < 4; i++) z += p[i] * p[i];
    for (int i = 0; i < 4; i++) assert_float_equal(out[i].probability, p[i] * p[i] / z, 1e-6);
}

static void test_top_k(void **state)
{
    (void)state;
    const double p[5] = {0.1, 0.4, 0.05, 0.3, 0.15};
    float logits[5];
    logits_of(p, 5, logits);
    ngq_sample_candidate out[5];
    ngq_sampler_config cfg = {.temperature = 1.0f, .top_k = 2, .top_p = 1.0f};
    assert_int_equal(ngq_sample_filter(logits, 5, &cfg, out), 2);
    assert_int_equal(out[0].id, 1);
    assert_int_equal(out[1].id, 3);
    assert_float_equal(out[0].probability, 0.4 / 0.7, 1e-6);
    assert_float_equal(out[1].probability, 0.3 / 0.7, 1e-6);
    cfg.top_k = 1;
    assert_int_equal(ngq_sample_filter(logits, 5, &cfg, out), 1);
    assert_int_equal(out[0].id, 1);
    assert_true(out[0].probability == 1.0f);
    cfg.top_k = 5; /* k >= V: no filter */
    assert_int_equal(ngq_sample_filter(logits, 5, &cfg, out), 5);
    assert_int_equal(out[2].id, 2);
    /* ties at the cut: exactly k ids, the lower ids first */
    const float tied[5] = {1.0f, 3.0f, 1.0f, 1.0f, 0.0f};
    cfg.top_k = 3;
    assert_int_equal(ngq_sample_filter(tied, 5, &cfg, out), 3);
    assert_int_equal(out[0].id, 1);
    assert_int_equal(out[1].id, 0);
    assert_int_equal(out[2].id, 2);
}

static void test_top_p(void **state)
{
    (void)state;
    const double p[4] = {0.15, 0.5, 0.1, 0.25};
    float logits[4];
    logits_of(p, 4, logits);
    ngq_sample_candidate out[4];
    ngq_sampler_config cfg = {.temperature = 1.0f, .top_k = 0, .top_p = 0.5f};
    /* the most likely id alone reaches 0.5 */
    assert_int_equal(ngq_sample_filter(logits, 4, &cfg, out), 1);
    assert_int_equal(out[0].id, 1);
    /* 0.5 + 0.25 = 0.75 reaches 0.7 and 0.75, not 0.76 */
    cfg.top_p = 0.7f;
    assert_int_equal(ngq_sample_filter(logits, 4, &cfg, out), 2);
    assert_int_equal(out[1].id, 3);
    assert_float_equal(out[0].probability, 0.5 / 0.75, 1e-6);
    cfg.top_p = 0.75f;
    assert_int_equal(ngq_sample_filter(logits, 4, &cfg, out), 2);
    cfg.top_p = 0.76f;
    assert_int_equal(ngq_sample_filter(logits, 4, &cfg, out), 3);
    assert_int_equal(out[2].id, 0);
    assert_float_equal(out[2].probability, 0.15 / 0.9, 1e-6);
    cfg.top_p = 0.95f;
    assert_int_equal(ngq_sample_filter(logits, 4, &cfg, out), 4);
    assert_int_equal(out[3].id, 2);
    /* top-k first, then top-p on the renormalised survivors: k = 3 keeps
     * 0.5, 0.25, 0.15 (sum 0.9); 0.5/0.9 + 0.25/0.9 = 0.833 reaches 0.8 */
    cfg.top_k = 3;
    cfg.top_p = 0.8f;
    assert_int_equal(ngq_sample_filter(logits, 4, &cfg, out), 2);
    assert_float_equal(out[0].probability, 0.5 / 0.75, 1e-6);
    /* without top-k, 0.75 < 0.8 needs a third id */
    cfg.top_k = 0;
    assert_int_equal(ngq_sample_filter(logits, 4, &cfg, out), 3);
    /* exact masses: "reaches p" includes equality; ties keep the lower ids */
    const float uniform[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    cfg.top_p = 0.5f;
    assert_int_equal(ngq_sample_filter(uniform, 4, &cfg, out), 2);
    assert_int_equal(out[0].id, 0);
    assert_int_equal(out[1].id, 1);
    assert_true(out[0].probability == 0.5f);
    cfg.top_p = 0.75f;
    assert_int_equal(ngq_sample_filter(uniform, 4, &cfg, out), 3);
}

static void test_config_validate(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_sampler_config ok = {.temperature = 0.8f, .top_k = 40, .top_p = 0.9f};
    assert_int_equal(ngq_sampler_config_validate(&ok, &err), NGQ_OK);
    ngq_sampler_config c = ok;
    c.temperature = -0.1f;
    assert_int_equal(ngq_sampler_config_validate(&c, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "temperature");
    c = ok;
    c.temperature = NAN;
    assert_int_equal(ngq_sampler_config_validate(&c, &err), NGQ_ERR_USAGE);
    c = ok;
    c.top_k = -1;
    assert_int_equal(ngq_sampler_config_validate(&c, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "top_k");
    c = ok;
    c.top_p = 0.0f;
    assert_int_equal(ngq_sampler_config_validate(&c, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "top_p");
    c.top_p = 1.5f;
    assert_int_equal(ngq_sampler_config_validate(&c, &err), NGQ_ERR_USAGE);
}

/* ---- draws ------------------------------------------------------------------------------ */

static void test_draw_frequencies_and_determinism(void **state)
{
    (void)state;
    const double p[5] = {0.1, 0.4, 0.05, 0.3, 0.15};
    float logits[5];
    logits_of(p, 5, logits);
    ngq_sample_candidate scratch[5];
    const int draws = 40000;
    /* no filter, then top-k 3 (ids 1, 3, 4: 0.4, 0.3, 0.15 of 0.85), then top-p 0.6 (ids 1, 3) */
    const ngq_sampler_config configs[3] = {{1.0f, 0, 1.0f}, {1.0f, 3, 1.0f}, {1.0f, 0, 0.6f}};
    const double expected[3][5] = {{0.1, 0.4, 0.05, 0.3, 0.15},
                                   {0, 0.4 / 0.85, 0, 0.3 / 0.85, 0.15 / 0.85},
                                   {0, 0.4 / 0.7, 0, 0.3 / 0.7, 0}};
    for (int c = 0; c < 3; c++) {
        ngq_rng rng;
        ngq_rng_seed(&rng, 1234, NGQ_SAMPLE_RNG_STREAM);
        int counts[5] = {0};
        for (int i = 0; i < draws; i++) {
            int id = ngq_sample_next(logits, 5, &configs[c], &rng, scratch);
            assert_true(id >= 0 && id < 5);
            counts[id]++;
        }
        for (int i = 0; i < 5; i++) {
            double f = (double)counts[i] / draws;
            if (expected[c][i] == 0.0)
                assert_int_equal(counts[i], 0);
            else if (fabs(f - expected[c][i]) > 0.01)
                fail_msg("config %d id %d: frequency %.4f, expected %.4f", c, i, f, expected[c][i]);
        }
    }
    /* the same seed gives the same ids; another seed does not */
    int a[64], b[64], other[64];
    ngq_rng ra, rb, rc;
    ngq_rng_seed(&ra, 42, NGQ_SAMPLE_RNG_STREAM);
    ngq_rng_seed(&rb, 42, NGQ_SAMPLE_RNG_STREAM);
    ngq_rng_seed(&rc, 43, NGQ_SAMPLE_RNG_STREAM);
    int differ = 0;
    for (int i = 0; i < 64; i++) {
        a[i] = ngq_sample_next(logits, 5, &configs[0], &ra, scratch);
        b[i] = ngq_sample_next(logits, 5, &configs[0], &rb, scratch);
        other[i] = ngq_sample_next(logits, 5, &configs[0], &rc, scratch);
        differ += a[i] != other[i];
    }
    assert_memory_equal(a, b, sizeof a);
    assert_true(differ > 0);
}

/* ---- prompts ----------------------------------------------------------------------------- */

static void test_encode_prompt(void **state)
{
    (void)state;
    const uint32_t cps[] = {'\n', ' ', 'a', 'b', 'c', 0xE9};
    ngq_vocab vocab;
    ngq_error err = {0};
    assert_int_equal(ngq_vocab_from_codepoints(&vocab, cps, 6, &err), NGQ_OK);
    ngq_sample_prompt p;

    const char *text = "ab c\xC3\xA9";
    assert_int_equal(ngq_sample_encode_prompt(&vocab, 8, text, strlen(text), &p, &err), NGQ_OK);
    assert_int_equal(p.count, 5);
    assert_int_equal(p.chars, 5);
    assert_false(p.truncated);
    const uint16_t want[5] = {2, 3, 1, 4, 5};
    assert_memory_equal(p.tokens, want, sizeof want);
    ngq_sample_prompt_free(&p);

    /* longer than block_size: the last 3 characters */
    assert_int_equal(ngq_sample_encode_prompt(&vocab, 3, text, strlen(text), &p, &err), NGQ_OK);
    assert_int_equal(p.count, 3);
    assert_int_equal(p.chars, 5);
    assert_true(p.truncated);
    assert_int_equal(p.kept_offset, 2);
    assert_memory_equal(p.tokens, want + 2, 3 * sizeof *want);
    ngq_sample_prompt_free(&p);

    /* unknown characters are listed, each once, as U+XXXX and the character */
    const char *bad = "aXb\xE4\xB8\xAD" "X\t";
    assert_int_equal(ngq_sample_encode_prompt(&vocab, 8, bad, strlen(bad), &p, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "4 characters outside");
    assert_contains(err.message, "U+0058 'X'");
    assert_contains(err.message, "U+4E2D '\xE4\xB8\xAD'");
    assert_contains(err.message, "U+0009 (control)");
    assert_null(strstr(strstr(err.message, "U+0058") + 1, "U+0058"));
    assert_null(p.tokens);

    /* invalid UTF-8 names the byte */
    const char *broken = "ab\xC3";
    assert_int_equal(ngq_sample_encode_prompt(&vocab, 8, broken, strlen(broken), &p, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "UTF-8");
    assert_contains(err.message, "byte 2");

    /* empty: a newline */
    assert_int_equal(ngq_sample_encode_prompt(&vocab, 8, "", 0, &p, &err), NGQ_OK);
    assert_int_equal(p.count, 1);
    assert_int_equal(p.tokens[0], 0);
    assert_true(p.from_newline);
    ngq_sample_prompt_free(&p);
    ngq_vocab_free(&vocab);

    /* empty without a newline in the vocabulary */
    assert_int_equal(ngq_vocab_from_codepoints(&vocab, cps + 1, 5, &err), NGQ_OK);
    assert_int_equal(ngq_sample_encode_prompt(&vocab, 8, "", 0, &p, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "empty");
    ngq_vocab_free(&vocab);
}

/* ---- generation --------------------------------------------------------------------------- */

typedef struct {
    char text[4096];
    size_t len;
    int calls, stop_after;
} collected;

static int collect(int token, const char *utf8, void *user)
{
    collected *c = user;
    assert_true(token >= 0);
    size_t n = strlen(utf8);
    assert_true(n >= 1 && n <= 4);
    assert_true(c->len + n < sizeof c->text);
    memcpy(c->text + c->len, utf8, n + 1);
    c->len += n;
    c->calls++;
    return c->stop_after > 0 && c->calls >= c->stop_after;
}

/* The golden: after "the quick", the rest of PERIOD, then PERIOD again, 118 characters. */
static void golden(char *out, size_t size, int n)
{
    const char *rest = PERIOD + strlen("the quick");
    char buf[512];
    snprintf(buf, sizeof buf, "%s%s%s", rest, PERIOD, PERIOD);
    snprintf(out, size, "%.*s", n, buf);
}

static void check_greedy_golden(const char *path)
{
    ngq_infer *m;
    ngq_error err = {0};
    if (ngq_infer_load(&m, path, &err)) fail_msg("%s", err.message);
    ngq_sampler_config greedy = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f};
    collected c = {0};
    ngq_sample_stats stats;
    const int n = 118; /* two periods: the context window (32) is re-encoded several times on the way */
    assert_int_equal(ngq_sample_generate(m, "the quick", n, &greedy, 1, collect, &c, &stats, &err), NGQ_OK);
    char want[256];
    golden(want, sizeof want, n);
    assert_string_equal(c.text, want);
    assert_int_equal(stats.generated_tokens, n);
    assert_int_equal(c.calls, n);
    assert_int_equal(stats.prompt_tokens, 9);
    assert_false(stats.prompt_truncated);
    assert_false(stats.stopped);
    assert_true(stats.tokens_per_second > 0);

    /* the model is sure of every character of the sentence: the golden does
     * not hang on a near tie (each probability of the right one > 0.5) */
    ngq_infer_session *s;
    assert_int_equal(ngq_infer_session_init(&s, m, &err), NGQ_OK);
    const ngq_vocab *v = ngq_infer_vocab(m);
    char text[512];
    snprintf(text, sizeof text, "the quick%s", want);
    for (size_t i = 0; i + 1 < strlen(text); i++) {
        uint16_t t = (uint16_t)ngq_vocab_id(v, (unsigned char)text[i]);
        const float *logits;
        assert_int_equal(ngq_infer_session_feed(s, &t, 1, &logits, &err), NGQ_OK);
        if (i < 8) continue;
        ngq_sample_candidate cand[128];
        ngq_sampler_config one = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f};
        int kept = ngq_sample_filter(logits, v->size, &one, cand);
        int next = ngq_vocab_id(v, (unsigned char)text[i + 1]);
        double pnext = 0;
        for (int k = 0; k < kept; k++)
            if (cand[k].id == next) pnext = cand[k].probability;
        if (!(pnext > 0.5)) fail_msg("%s: p(%c | ...%.8s) = %.3f", path, text[i + 1], text + i - 7, pnext);
    }
    ngq_infer_session_free(s);

    /* a long prompt keeps its last block_size characters; an empty one starts from "\n" */
    char long_prompt[256];
    snprintf(long_prompt, sizeof long_prompt, "%s%sthe quick", PERIOD, PERIOD);
    memset(&c, 0, sizeof c);
    assert_int_equal(ngq_sample_generate(m, long_prompt, 10, &greedy, 1, collect, &c, &stats, &err), NGQ_OK);
    assert_true(stats.prompt_truncated);
    assert_int_equal(stats.prompt_tokens, 32);
    assert_string_equal(c.text, " brown fox");
    memset(&c, 0, sizeof c);
    assert_int_equal(ngq_sample_generate(m, "", 20, &greedy, 1, collect, &c, &stats, &err), NGQ_OK);
    assert_true(stats.from_newline);
    assert_int_equal(stats.generated_tokens, 20);
    /* unknown characters fail before anything is generated */
    memset(&c, 0, sizeof c);
    assert_int_equal(ngq_sample_generate(m, "the QUICK", 10, &greedy, 1, collect, &c, &stats, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "U+0051 'Q'");
    assert_int_equal(c.calls, 0);
    ngq_infer_free(m);
}

static void test_greedy_golden_fp32(void **state)
{
    (void)state;
    check_greedy_golden(fp32_path);
}

static void test_greedy_golden_8bit(void **state)
{
    (void)state;
    check_greedy_golden(q8_path);
}

static void test_sampled_generation_per_seed(void **state)
{
    (void)state;
    ngq_infer *m;
    ngq_error err = {0};
    assert_int_equal(ngq_infer_load(&m, fp32_path, &err), NGQ_OK);
    ngq_sampler_config hot = {.temperature = 2.0f, .top_k = 0, .top_p = 1.0f};
    collected a = {0}, b = {0}, other = {0};
    assert_int_equal(ngq_sample_generate(m, "the", 100, &hot, 7, collect, &a, NULL, &err), NGQ_OK);
    assert_int_equal(ngq_sample_generate(m, "the", 100, &hot, 7, collect, &b, NULL, &err), NGQ_OK);
    assert_int_equal(ngq_sample_generate(m, "the", 100, &hot, 8, collect, &other, NULL, &err), NGQ_OK);
    assert_int_equal(a.calls, 100);
    assert_string_equal(a.text, b.text);
    assert_string_not_equal(a.text, other.text);

    /* top-k 1 is greedy whatever the temperature and seed */
    ngq_sampler_config k1 = {.temperature = 2.0f, .top_k = 1, .top_p = 1.0f};
    collected g = {0};
    assert_int_equal(ngq_sample_generate(m, "the quick", 40, &k1, 99, collect, &g, NULL, &err), NGQ_OK);
    char want[64];
    golden(want, sizeof want, 40);
    assert_string_equal(g.text, want);

    /* the callback stops the generation */
    collected s = {.stop_after = 5};
    ngq_sample_stats stats;
    assert_int_equal(ngq_sample_generate(m, "the", 100, &hot, 7, collect, &s, &stats, &err), NGQ_OK);
    assert_int_equal(stats.generated_tokens, 5);
    assert_true(stats.stopped);
    assert_memory_equal(s.text, a.text, s.len);

    /* bad arguments */
    assert_int_equal(ngq_sample_generate(m, "the", 0, &hot, 7, NULL, NULL, NULL, &err), NGQ_ERR_USAGE);
    ngq_sampler_config bad = {.temperature = 1.0f, .top_k = 0, .top_p = 0.0f};
    assert_int_equal(ngq_sample_generate(m, "the", 5, &bad, 7, NULL, NULL, NULL, &err), NGQ_ERR_USAGE);
    ngq_infer_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_lowest_id_on_ties),
        cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_config_validate),
        cmocka_unit_test(test_draw_frequencies_and_determinism),
        cmocka_unit_test(test_encode_prompt),
        cmocka_unit_test(test_greedy_golden_fp32),
        cmocka_unit_test(test_greedy_golden_8bit),
        cmocka_unit_test(test_sampled_generation_per_seed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
