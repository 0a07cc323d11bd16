/* infer.h: the forward pass used by evaluate, sample and the demo, on any
 * checkpoint: fp32 (from train) or quantized (from quantize, packed weights).
 *
 * A loaded ngq_infer is read-only after ngq_infer_load and may be shared by
 * any number of threads; all per-call state lives in a workspace (windows of
 * B x T tokens: logits for every position) or a session (one sequence with a
 * KV cache, for generation). Quantized linear layers run through qmatmul,
 * dequantizing in the inner loop: no float copy of a quantized weight is kept.
 * What it does not do: training (model.h), sampling strategies (sample.h). */
#ifndef NANOGPTQ_INFER_H
#define NANOGPTQ_INFER_H

#include <stdint.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/common.h"
#include "nanogptq/model.h"
#include "nanogptq/vocab.h"

typedef struct ngq_infer ngq_infer;

typedef struct {
    int quantized;           /* 0 for an fp32 checkpoint */
    char method[16];         /* "fp32", "naive" or "gptq" */
    int bits;                /* 32 for fp32 */
    char grid[200];          /* the quantization grid, "" for fp32 */
    char label[64];          /* short name for tables: "fp32", "gptq-4b-g64", "naive-8b-channel" ... */
    int64_t file_bytes;      /* size of the checkpoint file on disk */
    int64_t quantized_weights;   /* weights stored as codes */
    double bits_per_weight;      /* of the quantized tensors, scales and zeros included (32 for fp32) */
    double model_bits_per_weight; /* over every parameter of the model, fp32 ones at 32 */
} ngq_infer_info;

/* Loads an fp32 or quantized checkpoint (kind from its metadata). */
ngq_status ngq_infer_load(ngq_infer **out, const char *path, ngq_error *err);
void ngq_infer_free(ngq_infer *m);

const ngq_model_config *ngq_infer_config(const ngq_infer *m);
const ngq_vocab *ngq_infer_vocab(const ngq_infer *m);
const ngq_checkpoint_meta *ngq_infer_meta(const ngq_infer *m);
const ngq_infer_info *ngq_infer_get_info(const ngq_infer *m);

/* ---- windows: logits for every position of B sequences of T tokens ---- */

typedef struct ngq_infer_workspace ngq_infer_workspace;

ngq_status ngq_infer_workspace_init(ngq_infer_workspace **ws, const ngq_infer *m, int max_B, int max_T,
                                    ngq_error *err);
void ngq_infer_workspace_free(ngq_infer_workspace *ws);

/* tokens (B,T) -> *logits (B,T,V), valid until the next call with ws.
 * 1 <= B <= max_B, 1 <= T <= max_T; tokens must be < vocab_size. */
ngq_status ngq_infer_forward(const ngq_infer *m, ngq_infer_workspace *ws, const uint16_t *tokens, int B, int T,
                             const float **logits, ngq_error *err);

/* ---- sessions: one sequence, KV cache, for generation ----------------- */

typedef struct ngq_infer_session ngq_infer_session;

ngq_status ngq_infer_session_init(ngq_infer_session **s, const ngq_infer *m, ngq_error *err);
void ngq_infer_session_free(ngq_infer_session *s);
/* Forgets the sequence (keeps the memory). */
void ngq_infer_session_reset(ngq_infer_session *s);

/* Feeds of at most this many tokens run on the calling thread alone. */
#define NGQ_INFER_SERIAL_TOKENS 8

/* Appends n >= 1 tokens to the sequence and returns the logits (V) that
 * predict the token after the last one, valid until the next call. Position
 * embeddings are absolute, so when the sequence would pass block_size the
 * session keeps its last 3/4 * block_size tokens, re-encodes them from
 * position 0 and goes on (the context then grows again). */
ngq_status ngq_infer_session_feed(ngq_infer_session *s, const uint16_t *tokens, int n, const float **logits,
                                  ngq_error *err);
/* Tokens currently in the context (<= block_size). */
int ngq_infer_session_length(const ngq_infer_session *s);

#endif
