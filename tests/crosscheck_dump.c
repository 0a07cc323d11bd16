/* crosscheck_dump: writes a small model and everything the PyTorch
 * cross-check (scripts/torch_crosscheck.py) compares against: one batch's
 * logits, loss and every parameter gradient, then the losses of five AdamW
 * steps (with clipping and a warmup schedule) and the parameters after them.
 *
 * usage: crosscheck_dump OUT_DIR tied|untied-bias
 * writes OUT_DIR/model.safetensors (the initial checkpoint) and
 *        OUT_DIR/dump.safetensors */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/model.h"
#include "nanogptq/optim.h"
#include "nanogptq/rng.h"
#include "nanogptq/safetensors.h"

enum { B = 3, STEPS = 5, BATCHES = STEPS + 1 };

static int die(const char *what, const ngq_error *err)
{
    fprintf(stderr, "crosscheck_dump: %s: %s\n", what, err->message);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "tied") != 0 && strcmp(argv[2], "untied-bias") != 0)) {
        fprintf(stderr, "usage: crosscheck_dump OUT_DIR tied|untied-bias\n");
        return 2;
    }
    int tied = strcmp(argv[2], "tied") == 0;
    ngq_model_config mc = {.vocab_size = 23, .block_size = 16, .n_layer = 2, .n_head = 2, .n_embd = 24,
                           .bias = !tied, .tie_embeddings = tied, .dropout = 0.0f, .init_std = 0.02f};
    const int T = mc.block_size, V = mc.vocab_size;
    ngq_error err = {0};
    ngq_model model;
    ngq_activations acts;
    if (ngq_model_init(&model, &mc, &err) || ngq_model_init_grads(&model, &err) ||
        ngq_activations_init(&acts, &mc, B, T, &err))
        return die("init", &err);
    ngq_rng rng;
    ngq_rng_seed(&rng, 1234, 1);
    ngq_model_init_weights(&model, &rng);
    /* larger than init-scale LayerNorm gains and biases, so their gradients are exercised */
    for (size_t i = 0; i < model.param_count; i++) model.params[i] += 0.05f * ngq_rng_normal(&rng);

    uint32_t cps[22];
    for (int i = 0; i < V - 1; i++) cps[i] = 'a' + (uint32_t)i;
    ngq_vocab vocab;
    if (ngq_vocab_from_codepoints(&vocab, cps, V - 1, &err)) return die("vocab", &err);
    char *model_path = ngq_path_join(argv[1], "model.safetensors");
    char *dump_path = ngq_path_join(argv[1], "dump.safetensors");
    ngq_checkpoint_meta meta = {.val_loss = NAN};
    if (ngq_checkpoint_save(model_path, &model, &vocab, &meta, NULL, &err)) return die("save model", &err);

    int32_t tokens[BATCHES][B][16], targets[BATCHES][B][16];
    uint16_t in16[B * 16], tg16[B * 16];
    ngq_rng data;
    ngq_rng_seed(&data, 99, 2);
    for (int s = 0; s < BATCHES; s++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                tokens[s][b][t] = (int32_t)ngq_rng_below(&data, (uint32_t)V);
                targets[s][b][t] = (int32_t)ngq_rng_below(&data, (uint32_t)V);
            }

    /* batch 0: logits, loss, gradients */
    for (int i = 0; i < B * T; i++) {
        in16[i] = (uint16_t)tokens[0][i / T][i % T];
        tg16[i] = (uint16_t)targets[0][i / T][i % T];
    }
    float loss0;
    ngq_model_zero_grad(&model);
    if (ngq_model_forward(&model, &acts, in16, tg16, B, T, NULL, &loss0, &err) ||
        ngq_model_backward(&model, &acts, 1.0f, &err))
        return die("forward/backward", &err);
    float *logits = malloc((size_t)B * T * V * sizeof(float));
    float *grads = malloc(model.param_count * sizeof(float));
    memcpy(logits, acts.logits, (size_t)B * T * V * sizeof(float));
    memcpy(grads, model.grads, model.param_count * sizeof(float));

    /* five AdamW steps on batches 1..5 */
    int n_tensors = ngq_model_tensor_count(&mc);
    ngq_range decay[64];
    int n_decay = 0;
    for (int i = 0; i < n_tensors; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(&mc, i, &info, NULL);
        if (info.is_matrix) decay[n_decay++] = (ngq_range){info.offset, info.offset + info.numel};
    }
    ngq_adamw opt;
    if (ngq_adamw_init(&opt, model.param_count, 0.9, 0.99, 1e-8, 0.1, decay, n_decay, &err)) return die("adamw", &err);
    ngq_lr_schedule schedule = {1e-2, 1e-3, 2, STEPS};
    float step_losses[STEPS], norms[STEPS];
    double lrs[STEPS];
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < B * T; i++) {
            in16[i] = (uint16_t)tokens[s + 1][i / T][i % T];
            tg16[i] = (uint16_t)targets[s + 1][i / T][i % T];
        }
        ngq_model_zero_grad(&model);
        if (ngq_model_forward(&model, &acts, in16, tg16, B, T, NULL, &step_losses[s], &err) ||
            ngq_model_backward(&model, &acts, 1.0f, &err))
            return die("step", &err);
        double norm = ngq_grad_norm(model.grads, model.param_count);
        norms[s] = (float)norm;
        lrs[s] = ngq_lr_at(&schedule, s);
        ngq_adamw_step(&opt, model.params, model.grads, ngq_clip_scale(norm, 1.0), lrs[s]);
    }

    ngq_st_writer w;
    ngq_st_writer_init(&w);
    int64_t tshape[3] = {BATCHES, B, T}, lshape[3] = {B, T, V}, one[1] = {1}, steps[1] = {STEPS};
    ngq_status st = ngq_st_writer_add_tensor(&w, "tokens", NGQ_ST_I32, 3, tshape, tokens, sizeof tokens, &err);
    if (!st) st = ngq_st_writer_add_tensor(&w, "targets", NGQ_ST_I32, 3, tshape, targets, sizeof targets, &err);
    if (!st) st = ngq_st_writer_add_tensor(&w, "logits", NGQ_ST_F32, 3, lshape, logits, (size_t)B * T * V * 4, &err);
    if (!st) st = ngq_st_writer_add_tensor(&w, "loss", NGQ_ST_F32, 1, one, &loss0, 4, &err);
    if (!st) st = ngq_st_writer_add_tensor(&w, "step_losses", NGQ_ST_F32, 1, steps, step_losses, sizeof step_losses, &err);
    if (!st) st = ngq_st_writer_add_tensor(&w, "grad_norms", NGQ_ST_F32, 1, steps, norms, sizeof norms, &err);
    if (!st) st = ngq_st_writer_add_tensor(&w, "lrs", NGQ_ST_F64, 1, steps, lrs, sizeof lrs, &err);
    char names[2][64][96];
    for (int i = 0; i < n_tensors && !st; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(&mc, i, &info, NULL);
        int64_t shape[2] = {info.shape[0], info.shape[1]};
        snprintf(names[0][i], sizeof names[0][i], "grad.%s", info.name);
        snprintf(names[1][i], sizeof names[1][i], "final.%s", info.name);
        st = ngq_st_writer_add_tensor(&w, names[0][i], NGQ_ST_F32, info.ndim, shape, grads + info.offset,
                                      info.numel * 4, &err);
        if (!st)
            st = ngq_st_writer_add_tensor(&w, names[1][i], NGQ_ST_F32, info.ndim, shape, model.params + info.offset,
                                          info.numel * 4, &err);
    }
    if (!st) st = ngq_st_writer_write(&w, dump_path, &err);
    if (st) return die("write dump", &err);
    ngq_st_writer_free(&w);
    printf("wrote %s and %s (loss %.6f)\n", model_path, dump_path, loss0);
    free(logits);
    free(grads);
    free(model_path);
    free(dump_path);
    ngq_adamw_free(&opt);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
    return 0;
}
