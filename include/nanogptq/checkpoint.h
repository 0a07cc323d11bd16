/* checkpoint.h: model checkpoints as safetensors files that PyTorch code can
 * read, and the training state that makes `train --resume` bit-exact.
 *
 * A checkpoint holds the model's tensors under nanoGPT's state_dict names
 * ([out, in] weights), float32, plus (when tied) `lm_head.weight` as a copy
 * of `transformer.wte.weight` so nanoGPT's load_state_dict finds every key.
 * Its __metadata__ carries (all values are strings):
 *   nanogptq.format          "nanogptq-checkpoint"
 *   nanogptq.format_version  "1"
 *   nanogptq.kind            "fp32" or "quantized"
 *   nanogptq.model           JSON: vocab_size, block_size, n_layer, n_head, n_embd, bias,
 *                            tie_embeddings, dropout, init_std
 *   nanogptq.vocab           JSON array of the vocabulary's code points (the unknown id is implicit: last)
 *   nanogptq.step, nanogptq.seed, nanogptq.tokens_seen, nanogptq.val_loss
 *   nanogptq.checksum        FNV-1a 64 of the data section (added and verified by safetensors.c)
 * Quantized checkpoints (qcheckpoint.h) share this metadata.
 *
 * The training state (`<name>.state.safetensors`) holds AdamW's m and v and,
 * in metadata, the step, the optimizer step count, the data RNG state, the
 * best validation loss and the checksum of the checkpoint it belongs to. */
#ifndef NANOGPTQ_CHECKPOINT_H
#define NANOGPTQ_CHECKPOINT_H

#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/model.h"
#include "nanogptq/optim.h"
#include "nanogptq/rng.h"
#include "nanogptq/safetensors.h"
#include "nanogptq/vocab.h"

#define NGQ_CHECKPOINT_FORMAT "nanogptq-checkpoint"
#define NGQ_CHECKPOINT_VERSION 1
#define NGQ_TRAIN_STATE_FORMAT "nanogptq-train-state"

typedef struct {
    ngq_model_config model;
    char kind[16];        /* "fp32" or "quantized" */
    int64_t step;         /* optimizer steps done */
    uint64_t seed;
    int64_t tokens_seen;
    double val_loss;      /* NaN when never evaluated */
    char checksum[40];    /* nanogptq.checksum of the file, when read */
} ngq_checkpoint_meta;

/* Adds the shared metadata keys to a writer (kind from meta). */
ngq_status ngq_checkpoint_add_metadata(ngq_st_writer *w, const ngq_checkpoint_meta *meta, const ngq_vocab *vocab,
                                       ngq_error *err);
/* Reads and checks the shared metadata of an open file. */
ngq_status ngq_checkpoint_read_metadata(const ngq_st_file *f, const char *path, ngq_checkpoint_meta *meta,
                                        ngq_vocab *vocab, ngq_error *err);

/* Writes model (fp32) atomically. meta->model and meta->kind are taken from
 * the model. checksum (may be NULL) receives the file's nanogptq.checksum. */
ngq_status ngq_checkpoint_save(const char *path, const ngq_model *model, const ngq_vocab *vocab,
                               const ngq_checkpoint_meta *meta, char checksum[40], ngq_error *err);
/* Reads an fp32 checkpoint: initialises model (no gradients) and vocab. */
ngq_status ngq_checkpoint_load(const char *path, ngq_model *model, ngq_vocab *vocab, ngq_checkpoint_meta *meta,
                               ngq_error *err);

typedef struct {
    int64_t step;
    ngq_rng data_rng;
    double best_val_loss;   /* +inf when none yet */
    int64_t tokens_seen;
    char checkpoint_checksum[40];
} ngq_train_state;

ngq_status ngq_train_state_save(const char *path, const ngq_adamw *opt, const ngq_train_state *state,
                                ngq_error *err);
/* opt must be initialised for the same parameter count. */
ngq_status ngq_train_state_load(const char *path, ngq_adamw *opt, ngq_train_state *state, ngq_error *err);

#endif
