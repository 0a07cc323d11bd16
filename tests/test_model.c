/* test_model.c: the GPT model module: configuration validation, the tensor
 * table (names, order, shapes, offsets, parameter count of the reference
 * model), nanoGPT initialisation (statistics and draw order), the forward
 * pass (initial loss, eval vs training, dropout reproducibility), whole-model
 * gradients against central finite differences on tiny configurations (bias
 * on/off, tied/untied, dropout), gradient accumulation, bit-identical results
 * for 1 and 2 OpenMP threads, and error paths.
 *
 * Whole-model finite differences: parameters are perturbed by eps = 1e-2
 * (init_std 0.3, so relative steps of a few percent); the loss is the double
 * mean of the float per-position losses. Float rounding through two blocks
 * leaves |analytic - numeric| below ~3e-5 on gradients up to ~0.3 (measured),
 * so we accept 2e-4 + 2e-2 * |numeric|: a dropped term or wrong factor moves a
 * gradient by far more. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/model.h"
#include "nanogptq/rng.h"

static void tiny_config(ngq_model_config *cfg, int bias, int tied, float dropout)
{
    cfg->vocab_size = 11;
    cfg->block_size = 8;
    cfg->n_layer = 2;
    cfg->n_head = 2;
    cfg->n_embd = 16;
    cfg->bias = bias;
    cfg->tie_embeddings = tied;
    cfg->dropout = dropout;
    cfg->init_std = 0.3f;
}

static void random_tokens(uint16_t *x, size_t n, int V, uint64_t seed)
{
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 3);
    for (size_t i = 0; i < n; i++) x[i] = (uint16_t)ngq_rng_below(&rng, (uint32_t)V);
}

/* ---- configuration ----------------------------------------------------------- */

static void test_reference_param_count(void **state)
{
    (void)state;
    ngq_model_config cfg;
    ngq_model_config_reference(&cfg);
    assert_int_equal(ngq_model_config_validate(&cfg, NULL), NGQ_OK);
    assert_int_equal(ngq_model_param_count(&cfg), 2722752);
    assert_int_equal(ngq_model_tensor_count(&cfg), 2 + 6 * 6 + 1);
    ngq_model model;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    assert_int_equal(model.param_count, 2722752);
    assert_ptr_equal(model.p.lm_head_weight, model.p.wte);
    assert_null(model.p.blocks[0].attn_c_attn_bias);
    assert_null(model.p.ln_f_bias);
    ngq_model_free(&model);
}

static void test_validation_messages(void **state)
{
    (void)state;
    ngq_model_config cfg;
    ngq_error err;
    ngq_model_config_reference(&cfg);
    cfg.n_embd = 100;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "n_embd = 100"));
    assert_non_null(strstr(err.message, "n_head = 6"));

    ngq_model_config_reference(&cfg);
    cfg.n_layer = 1000000000;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "n_layer = 1000000000"));

    ngq_model_config_reference(&cfg);
    cfg.block_size = 0;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "block_size = 0"));

    ngq_model_config_reference(&cfg);
    cfg.vocab_size = 70000;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "vocab_size = 70000"));

    ngq_model_config_reference(&cfg);
    cfg.dropout = 1.0f;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "dropout"));
    cfg.dropout = NAN;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);

    ngq_model_config_reference(&cfg);
    cfg.init_std = -1.0f;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "init_std"));

    ngq_model_config_reference(&cfg);
    cfg.n_head = 0;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "n_head = 0"));

    /* every field in range, but the product is absurd: rejected by size */
    ngq_model_config_reference(&cfg);
    cfg.n_layer = 1024;
    cfg.n_embd = 65536;
    cfg.n_head = 64;
    assert_int_equal(ngq_model_config_validate(&cfg, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "parameters"));
    ngq_model model;
    assert_int_equal(ngq_model_init(&model, &cfg, &err), NGQ_ERR_CONFIG);
    assert_null(model.params);
    assert_true(ngq_model_memory_bytes(&cfg, 1, 1) == SIZE_MAX);
}

static void test_memory_sizes(void **state)
{
    (void)state;
    ngq_model_config cfg;
    ngq_model_config_reference(&cfg);
    size_t acts = ngq_activations_bytes(&cfg, 16, 256);
    size_t total = ngq_model_memory_bytes(&cfg, 16, 256);
    assert_true(acts != SIZE_MAX);
    assert_int_equal(total, acts + 2 * 2722752 * sizeof(float));
    /* the attention probabilities alone: 6 layers x 16 x 6 x 256 x 256 floats */
    assert_true(acts > (size_t)6 * 16 * 6 * 256 * 256 * 4);
    assert_true(acts < (size_t)2 << 30);
    assert_true(ngq_activations_bytes(&cfg, 32, 256) > acts);
    assert_true(ngq_activations_bytes(&cfg, 16, 257) == SIZE_MAX); /* T > block_size */
    assert_true(ngq_activations_bytes(&cfg, 0, 256) == SIZE_MAX);

    ngq_activations a;
    ngq_error err;
    assert_int_equal(ngq_activations_init(&a, &cfg, 16, 300, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "T = 300"));
    assert_int_equal(ngq_activations_init(&a, &cfg, 1 << 24, 256, &err), NGQ_ERR_CONFIG);
    assert_null(a.float_memory);
}

/* ---- tensor table --------------------------------------------------------------- */

static void check_table(const ngq_model_config *cfg)
{
    int count = ngq_model_tensor_count(cfg);
    size_t offset = 0;
    int linears = 0;
    ngq_tensor_info info;
    for (int i = 0; i < count; i++) {
        assert_int_equal(ngq_model_tensor_info(cfg, i, &info, NULL), NGQ_OK);
        assert_int_equal(info.offset, offset);
        assert_int_equal(info.numel, (size_t)info.shape[0] * info.shape[1]);
        assert_int_equal(info.is_matrix, info.ndim == 2);
        offset += info.numel;
        linears += info.is_block_linear;
        ngq_tensor_info found;
        assert_int_equal(ngq_model_tensor_find(cfg, info.name, &found, NULL), NGQ_OK);
        assert_int_equal(found.offset, info.offset);
        if (!cfg->bias) assert_null(strstr(info.name, "bias"));
    }
    assert_int_equal(offset, ngq_model_param_count(cfg));
    assert_int_equal(linears, 4 * cfg->n_layer);
    ngq_error err;
    assert_int_equal(ngq_model_tensor_info(cfg, count, &info, &err), NGQ_ERR_INTERNAL);
    assert_int_equal(ngq_model_tensor_find(cfg, "transformer.h.99.ln_1.weight", &info, &err),
                     NGQ_ERR_FORMAT);
    assert_int_equal(ngq_model_tensor_find(cfg, "lm_head.weight", &info, NULL),
                     cfg->tie_embeddings ? NGQ_ERR_FORMAT : NGQ_OK);
}

static void test_tensor_table(void **state)
{
    (void)state;
    ngq_model_config cfg;
    tiny_config(&cfg, 1, 0, 0.0f);
    check_table(&cfg);
    /* the state_dict order of nanoGPT, with shapes */
    const char *names[] = {"transformer.wte.weight", "transformer.wpe.weight",
                           "transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias",
                           "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias",
                           "transformer.h.0.attn.c_proj.weight", "transformer.h.0.attn.c_proj.bias",
                           "transformer.h.0.ln_2.weight", "transformer.h.0.ln_2.bias",
                           "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.bias",
                           "transformer.h.0.mlp.c_proj.weight", "transformer.h.0.mlp.c_proj.bias"};
    const int shapes[][2] = {{11, 16}, {8, 16}, {16, 1}, {16, 1}, {48, 16}, {48, 1}, {16, 16},
                             {16, 1}, {16, 1}, {16, 1}, {64, 16}, {64, 1}, {16, 64}, {16, 1}};
    ngq_tensor_info info;
    for (int i = 0; i < 14; i++) {
        ngq_model_tensor_info(&cfg, i, &info, NULL);
        assert_string_equal(info.name, names[i]);
        assert_int_equal(info.shape[0], shapes[i][0]);
        assert_int_equal(info.shape[1], shapes[i][1]);
        assert_int_equal(info.layer, i < 2 ? -1 : 0);
    }
    int count = ngq_model_tensor_count(&cfg);
    ngq_model_tensor_info(&cfg, count - 3, &info, NULL);
    assert_string_equal(info.name, "transformer.ln_f.weight");
    ngq_model_tensor_info(&cfg, count - 2, &info, NULL);
    assert_string_equal(info.name, "transformer.ln_f.bias");
    ngq_model_tensor_info(&cfg, count - 1, &info, NULL);
    assert_string_equal(info.name, "lm_head.weight");
    assert_int_equal(info.shape[0], 11);
    ngq_model_tensor_info(&cfg, 12, &info, NULL);
    assert_true(info.is_block_linear && info.kind == NGQ_TENSOR_MLP_C_PROJ_WEIGHT);

    tiny_config(&cfg, 0, 1, 0.0f);
    check_table(&cfg);
    ngq_model_config_reference(&cfg);
    check_table(&cfg);
}

/* ---- initialisation --------------------------------------------------------------- */

static void moments(const float *x, size_t n, double *mean, double *std)
{
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    *mean = s / n;
    *std = sqrt(s2 / n - *mean * *mean);
}

static void test_init_statistics(void **state)
{
    (void)state;
    ngq_model_config cfg;
    ngq_model_config_reference(&cfg);
    ngq_model model;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 1337, 0);
    ngq_model_init_weights(&model, &rng);
    const size_t C = 192;
    double mean, std;
    const double proj_std = 0.02 / sqrt(12.0);
    for (int l = 0; l < cfg.n_layer; l++) {
        const ngq_block_tensors *b = &model.p.blocks[l];
        moments(b->attn_c_proj_weight, C * C, &mean, &std); /* 36864 draws: sd of std ~0.4% */
        assert_true(fabs(std / proj_std - 1.0) < 0.02);
        assert_true(fabs(mean) < 4.0 * proj_std / sqrt((double)C * C));
        moments(b->mlp_c_proj_weight, 4 * C * C, &mean, &std);
        assert_true(fabs(std / proj_std - 1.0) < 0.02);
        moments(b->attn_c_attn_weight, 3 * C * C, &mean, &std);
        assert_true(fabs(std / 0.02 - 1.0) < 0.02);
        moments(b->mlp_c_fc_weight, 4 * C * C, &mean, &std);
        assert_true(fabs(std / 0.02 - 1.0) < 0.02);
        for (size_t c = 0; c < C; c++) {
            assert_true(b->ln_1_weight[c] == 1.0f);
            assert_true(b->ln_2_weight[c] == 1.0f);
        }
    }
    moments(model.p.wte, 88 * C, &mean, &std);
    assert_true(fabs(std / 0.02 - 1.0) < 0.03);
    moments(model.p.wpe, 256 * C, &mean, &std);
    assert_true(fabs(std / 0.02 - 1.0) < 0.03);
    for (size_t c = 0; c < C; c++) assert_true(model.p.ln_f_weight[c] == 1.0f);

    /* documented draw order: wte row-major, then wpe, then block 0's c_attn */
    ngq_rng_seed(&rng, 1337, 0);
    assert_true(model.p.wte[0] == ngq_rng_normal(&rng) * 0.02f);
    for (size_t i = 1; i < 88 * C; i++) ngq_rng_normal(&rng);
    assert_true(model.p.wpe[0] == ngq_rng_normal(&rng) * 0.02f);
    for (size_t i = 1; i < 256 * C; i++) ngq_rng_normal(&rng);
    assert_true(model.p.blocks[0].attn_c_attn_weight[0] == ngq_rng_normal(&rng) * 0.02f);

    /* same seed, same weights */
    ngq_model again;
    assert_int_equal(ngq_model_init(&again, &cfg, NULL), NGQ_OK);
    ngq_rng_seed(&rng, 1337, 0);
    ngq_model_init_weights(&again, &rng);
    assert_memory_equal(model.params, again.params, model.param_count * sizeof(float));
    ngq_model_free(&again);
    ngq_model_free(&model);
}

/* ---- forward --------------------------------------------------------------------------- */

static void test_initial_loss_and_outputs(void **state)
{
    (void)state;
    ngq_model_config cfg;
    ngq_model_config_reference(&cfg);
    cfg.n_layer = 2;
    ngq_model model;
    ngq_activations acts;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 7, 0);
    ngq_model_init_weights(&model, &rng);
    assert_int_equal(ngq_activations_init(&acts, &cfg, 2, 64, NULL), NGQ_OK);
    uint16_t tokens[2 * 64], targets[2 * 64];
    random_tokens(tokens, 128, 88, 1);
    random_tokens(targets, 128, 88, 2);
    float loss = 0.0f;
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 64, NULL, &loss, NULL),
                     NGQ_OK);
    /* Small weights: nearly uniform predictions. Tied logits have std about
     * init_std * sqrt(C) = 0.28, which raises the expected cross-entropy above
     * ln V by about std^2 / 2 = 0.04. */
    assert_true(loss > log(88.0) && loss < log(88.0) + 0.1);
    double sum = 0.0;
    for (int n = 0; n < 128; n++) sum += acts.losses[n];
    assert_true(fabs(sum / 128 - loss) < 1e-6);
    for (int n = 0; n < 128; n++) {
        double s = 0.0;
        for (int v = 0; v < 88; v++) s += acts.probs[n * 88 + v];
        assert_true(fabs(s - 1.0) < 1e-5);
    }
    /* shorter batch in the same buffers; no targets gives NaN loss */
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, NULL, 1, 10, NULL, &loss, NULL),
                     NGQ_OK);
    assert_true(isnan(loss));
    assert_ptr_equal(ngq_activations_linear_input(&acts, 1, NGQ_TENSOR_MLP_C_FC_WEIGHT),
                     acts.blocks[1].ln_2);
    assert_ptr_equal(ngq_activations_linear_input(&acts, 0, NGQ_TENSOR_MLP_C_PROJ_WEIGHT),
                     acts.blocks[0].fch_gelu);
    assert_null(ngq_activations_linear_input(&acts, 0, NGQ_TENSOR_WTE));
    assert_null(ngq_activations_linear_input(&acts, 2, NGQ_TENSOR_MLP_C_FC_WEIGHT));
    ngq_activations_free(&acts);
    ngq_model_free(&model);
}

/* A causal model: the logits at position t do not depend on tokens after t. */
static void test_causality(void **state)
{
    (void)state;
    ngq_model_config cfg;
    tiny_config(&cfg, 1, 1, 0.0f);
    ngq_model model;
    ngq_activations acts;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 3, 0);
    ngq_model_init_weights(&model, &rng);
    assert_int_equal(ngq_activations_init(&acts, &cfg, 1, 8, NULL), NGQ_OK);
    uint16_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, NULL, 1, 8, NULL, NULL, NULL),
                     NGQ_OK);
    float before[8 * 11];
    memcpy(before, acts.logits, sizeof before);
    tokens[5] = 0;
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, NULL, 1, 8, NULL, NULL, NULL),
                     NGQ_OK);
    assert_memory_equal(before, acts.logits, 5 * 11 * sizeof(float));
    assert_true(memcmp(before + 5 * 11, acts.logits + 5 * 11, 11 * sizeof(float)) != 0);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
}

static void test_dropout_modes(void **state)
{
    (void)state;
    ngq_model_config cfg, plain;
    tiny_config(&cfg, 0, 1, 0.2f);
    plain = cfg;
    plain.dropout = 0.0f;
    ngq_model model, model_plain;
    ngq_activations acts, acts_plain;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    assert_int_equal(ngq_model_init(&model_plain, &plain, NULL), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 5, 0);
    ngq_model_init_weights(&model, &rng);
    memcpy(model_plain.params, model.params, model.param_count * sizeof(float));
    assert_int_equal(ngq_activations_init(&acts, &cfg, 2, 8, NULL), NGQ_OK);
    assert_int_equal(ngq_activations_init(&acts_plain, &plain, 2, 8, NULL), NGQ_OK);
    uint16_t tokens[16], targets[16];
    random_tokens(tokens, 16, 11, 1);
    random_tokens(targets, 16, 11, 2);
    float eval, plain_loss, train_a, train_b, train_c;
    /* evaluation mode ignores dropout */
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, NULL, &eval, NULL),
                     NGQ_OK);
    assert_int_equal(ngq_model_forward(&model_plain, &acts_plain, tokens, targets, 2, 8, NULL,
                                       &plain_loss, NULL), NGQ_OK);
    assert_true(eval == plain_loss);
    ngq_forward_mode not_training = {.training = 0, .seed = 1, .step = 1};
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, &not_training,
                                       &train_a, NULL), NGQ_OK);
    assert_true(train_a == eval);
    /* training: reproducible from (seed, step), different across steps */
    ngq_forward_mode mode = {.training = 1, .seed = 42, .step = 3};
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, &mode, &train_a,
                     NULL), NGQ_OK);
    assert_int_equal(acts.dropout_active, 1);
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, &mode, &train_b,
                     NULL), NGQ_OK);
    assert_true(train_a == train_b);
    assert_true(train_a != eval);
    mode.step = 4;
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, &mode, &train_c,
                     NULL), NGQ_OK);
    assert_true(train_c != train_a);
    /* a model without dropout never draws masks */
    assert_int_equal(ngq_model_forward(&model_plain, &acts_plain, tokens, targets, 2, 8, &mode,
                                       &train_c, NULL), NGQ_OK);
    assert_int_equal(acts_plain.dropout_active, 0);
    assert_null(acts_plain.blocks[0].att_mask);
    assert_true(train_c == plain_loss);
    ngq_activations_free(&acts);
    ngq_activations_free(&acts_plain);
    ngq_model_free(&model);
    ngq_model_free(&model_plain);
}

/* ---- gradients ---------------------------------------------------------------------------- */

typedef struct {
    ngq_model *model;
    ngq_activations *acts;
    uint16_t *tokens, *targets;
    int B, T;
    const ngq_forward_mode *mode;
} model_ctx;

static double model_loss(model_ctx *c)
{
    assert_int_equal(ngq_model_forward(c->model, c->acts, c->tokens, c->targets, c->B, c->T,
                                       c->mode, NULL, NULL), NGQ_OK);
    double s = 0.0;
    for (int n = 0; n < c->B * c->T; n++) s += c->acts->losses[n];
    return s / (c->B * c->T);
}

static void run_model_gradients(int bias, int tied, float dropout)
{
    ngq_model_config cfg;
    tiny_config(&cfg, bias, tied, dropout);
    ngq_model model;
    ngq_activations acts;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    assert_int_equal(ngq_model_init_grads(&model, NULL), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 100 + bias * 2 + tied, 0);
    ngq_model_init_weights(&model, &rng);
    /* move LayerNorm parameters and biases off their constant init */
    int count = ngq_model_tensor_count(&cfg);
    for (int i = 0; i < count; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(&cfg, i, &info, NULL);
        if (info.ndim == 1)
            for (size_t e = 0; e < info.numel; e++)
                model.params[info.offset + e] += 0.2f * ngq_rng_normal(&rng);
    }
    const int B = 2, T = 8;
    assert_int_equal(ngq_activations_init(&acts, &cfg, B, T, NULL), NGQ_OK);
    uint16_t tokens[16], targets[16];
    random_tokens(tokens, 16, cfg.vocab_size, 7);
    random_tokens(targets, 16, cfg.vocab_size, 8);
    ngq_forward_mode mode = {.training = 1, .seed = 9, .step = 2};
    model_ctx c = {&model, &acts, tokens, targets, B, T, dropout > 0 ? &mode : NULL};
    model_loss(&c);
    ngq_model_zero_grad(&model);
    assert_int_equal(ngq_model_backward(&model, &acts, 1.0f, NULL), NGQ_OK);
    float *grads = malloc(model.param_count * sizeof(float));
    memcpy(grads, model.grads, model.param_count * sizeof(float));

    const float eps = 1e-2f;
    double worst = 0.0, worst_abs = 0.0;
    for (int i = 0; i < count; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(&cfg, i, &info, NULL);
        int samples = info.numel < 6 ? (int)info.numel : 6;
        for (int s = 0; s < samples; s++) {
            size_t e = info.offset + ngq_rng_below(&rng, (uint32_t)info.numel);
            float orig = model.params[e];
            model.params[e] = orig + eps;
            double lp = model_loss(&c);
            model.params[e] = orig - eps;
            double lm = model_loss(&c);
            model.params[e] = orig;
            double numeric = (lp - lm) / ((double)(orig + eps) - (double)(orig - eps));
            double diff = fabs(numeric - grads[e]);
            double allowed = 2e-4 + 2e-2 * fabs(numeric);
            if (diff / allowed > worst) worst = diff / allowed;
            if (diff > worst_abs) worst_abs = diff;
            if (diff > allowed) {
                print_error("%s (bias %d, tied %d, dropout %.1f) element %zu: analytic %.8g "
                            "numeric %.8g\n", info.name, bias, tied, (double)dropout,
                            e - info.offset, (double)grads[e], numeric);
                fail();
            }
        }
    }
    if (getenv("NGQ_TEST_VERBOSE"))
        print_message("model gradients bias %d tied %d dropout %.1f: worst diff/allowed %.3f "
                      "(worst diff %.2g)\n", bias, tied, (double)dropout, worst, worst_abs);
    free(grads);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
}

static void test_model_gradients(void **state)
{
    (void)state;
    run_model_gradients(1, 1, 0.0f);
    run_model_gradients(0, 1, 0.0f);
    run_model_gradients(1, 0, 0.0f);
    run_model_gradients(0, 0, 0.2f);
}

static void test_backward_accumulates_and_scales(void **state)
{
    (void)state;
    ngq_model_config cfg;
    tiny_config(&cfg, 1, 1, 0.0f);
    ngq_model model;
    ngq_activations acts;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    assert_int_equal(ngq_model_init_grads(&model, NULL), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 1, 0);
    ngq_model_init_weights(&model, &rng);
    assert_int_equal(ngq_activations_init(&acts, &cfg, 2, 8, NULL), NGQ_OK);
    uint16_t tokens[16], targets[16];
    random_tokens(tokens, 16, 11, 1);
    random_tokens(targets, 16, 11, 2);
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, NULL, NULL, NULL),
                     NGQ_OK);
    assert_int_equal(ngq_model_backward(&model, &acts, 1.0f, NULL), NGQ_OK);
    size_t n = model.param_count;
    float *once = malloc(n * sizeof(float));
    memcpy(once, model.grads, n * sizeof(float));
    double norm = 0.0;
    for (size_t i = 0; i < n; i++) norm += (double)once[i] * once[i];
    assert_true(norm > 0.0);
    /* a second backward adds the same gradient again */
    assert_int_equal(ngq_model_backward(&model, &acts, 1.0f, NULL), NGQ_OK);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(model.grads[i] - 2.0f * once[i]) <= 1e-6f * (fabs(once[i]) + 1e-6f));
    /* loss_scale scales it */
    ngq_model_zero_grad(&model);
    for (size_t i = 0; i < n; i++) assert_true(model.grads[i] == 0.0f);
    assert_int_equal(ngq_model_backward(&model, &acts, 0.25f, NULL), NGQ_OK);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(model.grads[i] - 0.25f * once[i]) <= 1e-6f * (fabs(once[i]) + 1e-6f));
    free(once);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
}

/* ---- threads ---------------------------------------------------------------------------- */

static void run_step(int threads, float *loss, float *grads, float *logits)
{
    omp_set_num_threads(threads);
    ngq_model_config cfg = {.vocab_size = 50, .block_size = 80, .n_layer = 2, .n_head = 4,
                            .n_embd = 64, .bias = 1, .tie_embeddings = 1, .dropout = 0.1f,
                            .init_std = 0.1f};
    ngq_model model;
    ngq_activations acts;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    assert_int_equal(ngq_model_init_grads(&model, NULL), NGQ_OK);
    ngq_rng rng;
    ngq_rng_seed(&rng, 2, 0);
    ngq_model_init_weights(&model, &rng);
    const int B = 4, T = 80;
    assert_int_equal(ngq_activations_init(&acts, &cfg, B, T, NULL), NGQ_OK);
    uint16_t tokens[4 * 80], targets[4 * 80];
    random_tokens(tokens, B * T, 50, 1);
    random_tokens(targets, B * T, 50, 2);
    ngq_forward_mode mode = {.training = 1, .seed = 5, .step = 1};
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, B, T, &mode, loss, NULL),
                     NGQ_OK);
    assert_int_equal(ngq_model_backward(&model, &acts, 1.0f, NULL), NGQ_OK);
    memcpy(grads, model.grads, model.param_count * sizeof(float));
    memcpy(logits, acts.logits, (size_t)B * T * 50 * sizeof(float));
    ngq_activations_free(&acts);
    ngq_model_free(&model);
}

static void test_identical_for_one_and_two_threads(void **state)
{
    (void)state;
    const size_t n = 200000, nl = 4 * 80 * 50;
    float *g1 = calloc(n, sizeof(float)), *g2 = calloc(n, sizeof(float));
    float *l1 = calloc(nl, sizeof(float)), *l2 = calloc(nl, sizeof(float));
    float loss1, loss2;
    int saved = omp_get_max_threads();
    run_step(1, &loss1, g1, l1);
    run_step(2, &loss2, g2, l2);
    omp_set_num_threads(saved);
    assert_memory_equal(&loss1, &loss2, sizeof loss1);
    assert_memory_equal(l1, l2, nl * sizeof(float));
    assert_memory_equal(g1, g2, n * sizeof(float));
    free(g1), free(g2), free(l1), free(l2);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_forward_backward_errors(void **state)
{
    (void)state;
    ngq_model_config cfg;
    tiny_config(&cfg, 0, 1, 0.0f);
    ngq_model model;
    ngq_activations acts;
    ngq_error err;
    assert_int_equal(ngq_model_init(&model, &cfg, NULL), NGQ_OK);
    assert_int_equal(ngq_activations_init(&acts, &cfg, 2, 8, NULL), NGQ_OK);
    uint16_t tokens[16] = {0}, targets[16] = {0};
    tokens[9] = 11; /* == vocab_size */
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, NULL, NULL, &err),
                     NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "token id 11 at batch row 1, position 1"));
    tokens[9] = 0;
    targets[3] = 200;
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, NULL, NULL, &err),
                     NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "target id 200"));
    targets[3] = 0;
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 3, 8, NULL, NULL, &err),
                     NGQ_ERR_INTERNAL);
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 9, NULL, NULL, &err),
                     NGQ_ERR_INTERNAL);
    /* backward without gradients, then without targets */
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, NULL, NULL, &err),
                     NGQ_OK);
    assert_int_equal(ngq_model_backward(&model, &acts, 1.0f, &err), NGQ_ERR_INTERNAL);
    assert_non_null(strstr(err.message, "ngq_model_init_grads"));
    assert_int_equal(ngq_model_init_grads(&model, NULL), NGQ_OK);
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, NULL, 2, 8, NULL, NULL, &err),
                     NGQ_OK);
    assert_int_equal(ngq_model_backward(&model, &acts, 1.0f, &err), NGQ_ERR_INTERNAL);
    assert_non_null(strstr(err.message, "targets"));
    /* activations for another configuration */
    ngq_model other;
    ngq_model_config other_cfg = cfg;
    other_cfg.n_layer = 3;
    assert_int_equal(ngq_model_init(&other, &other_cfg, NULL), NGQ_OK);
    assert_int_equal(ngq_model_forward(&other, &acts, tokens, targets, 2, 8, NULL, NULL, &err),
                     NGQ_ERR_INTERNAL);
    /* a non-finite loss is reported */
    model.p.ln_f_weight[0] = NAN;
    assert_int_equal(ngq_model_forward(&model, &acts, tokens, targets, 2, 8, NULL, NULL, &err),
                     NGQ_ERR_NUMERIC);
    ngq_model_free(&other);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_param_count),
        cmocka_unit_test(test_validation_messages),
        cmocka_unit_test(test_memory_sizes),
        cmocka_unit_test(test_tensor_table),
        cmocka_unit_test(test_init_statistics),
        cmocka_unit_test(test_initial_loss_and_outputs),
        cmocka_unit_test(test_causality),
        cmocka_unit_test(test_dropout_modes),
        cmocka_unit_test(test_model_gradients),
        cmocka_unit_test(test_backward_accumulates_and_scales),
        cmocka_unit_test(test_identical_for_one_and_two_threads),
        cmocka_unit_test(test_forward_backward_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
