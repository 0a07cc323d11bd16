/* model.h: the GPT-2-style model of nanoGPT's model.py (token + learned
 * position embedding, pre-LayerNorm blocks with causal self-attention and a
 * GELU MLP, final LayerNorm, LM head tied to the token embedding by default):
 * its configuration and validation, the parameter layout (one contiguous
 * buffer described by a tensor table in nanoGPT state_dict order, the same
 * layout for gradients and optimizer moments), initialisation, activation
 * buffers, and the training forward/backward pass.
 * What it does not do: file I/O (checkpoint), the optimizer step (optim),
 * KV-cached generation (sample, built on ops.h), quantized weights (quant). */
#ifndef NANOGPTQ_MODEL_H
#define NANOGPTQ_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/rng.h"

typedef struct {
    int vocab_size, block_size, n_layer, n_head, n_embd;
    int bias;           /* Linear layers and LayerNorms carry biases */
    int tie_embeddings; /* the LM head shares transformer.wte.weight */
    float dropout;      /* p for embedding, attention and residual dropout */
    float init_std;     /* 0.02 in nanoGPT */
} ngq_model_config;

/* Limits enforced by ngq_model_config_validate (tokens are uint16). */
#define NGQ_MODEL_MAX_VOCAB 65536
#define NGQ_MODEL_MAX_BLOCK_SIZE 16384
#define NGQ_MODEL_MAX_LAYERS 1024
#define NGQ_MODEL_MAX_HEADS 1024
#define NGQ_MODEL_MAX_EMBD 65536
#define NGQ_MODEL_MAX_PARAMS ((size_t)1 << 31) /* 8 GiB of float32 */

/* The study's reference model: V 88, block 256, 6 layers, 6 heads, C 192, no
 * bias, tied, dropout 0, init_std 0.02 (2,722,752 parameters). */
void ngq_model_config_reference(ngq_model_config *cfg);

/* Every field in range, n_embd divisible by n_head, parameter count within
 * NGQ_MODEL_MAX_PARAMS. NGQ_ERR_CONFIG with a message naming the key(s). */
ngq_status ngq_model_config_validate(const ngq_model_config *cfg, ngq_error *err);

/* ---- tensor table ---------------------------------------------------- */

typedef enum {
    NGQ_TENSOR_WTE,                /* transformer.wte.weight      (V, C)  */
    NGQ_TENSOR_WPE,                /* transformer.wpe.weight      (block_size, C) */
    NGQ_TENSOR_LN_1_WEIGHT,        /* transformer.h.L.ln_1.weight (C)     */
    NGQ_TENSOR_LN_1_BIAS,          /* ...ln_1.bias                (C)     */
    NGQ_TENSOR_ATTN_C_ATTN_WEIGHT, /* ...attn.c_attn.weight       (3C, C) */
    NGQ_TENSOR_ATTN_C_ATTN_BIAS,   /* ...attn.c_attn.bias         (3C)    */
    NGQ_TENSOR_ATTN_C_PROJ_WEIGHT, /* ...attn.c_proj.weight       (C, C)  */
    NGQ_TENSOR_ATTN_C_PROJ_BIAS,   /* ...attn.c_proj.bias         (C)     */
    NGQ_TENSOR_LN_2_WEIGHT,        /* ...ln_2.weight              (C)     */
    NGQ_TENSOR_LN_2_BIAS,          /* ...ln_2.bias                (C)     */
    NGQ_TENSOR_MLP_C_FC_WEIGHT,    /* ...mlp.c_fc.weight          (4C, C) */
    NGQ_TENSOR_MLP_C_FC_BIAS,      /* ...mlp.c_fc.bias            (4C)    */
    NGQ_TENSOR_MLP_C_PROJ_WEIGHT,  /* ...mlp.c_proj.weight        (C, 4C) */
    NGQ_TENSOR_MLP_C_PROJ_BIAS,    /* ...mlp.c_proj.bias          (C)     */
    NGQ_TENSOR_LN_F_WEIGHT,        /* transformer.ln_f.weight     (C)     */
    NGQ_TENSOR_LN_F_BIAS,          /* transformer.ln_f.bias       (C)     */
    NGQ_TENSOR_LM_HEAD_WEIGHT      /* lm_head.weight (V, C), only when untied */
} ngq_tensor_kind;

#define NGQ_TENSOR_NAME_MAX 64

typedef struct {
    char name[NGQ_TENSOR_NAME_MAX]; /* nanoGPT state_dict key */
    ngq_tensor_kind kind;
    int layer;           /* block index, -1 outside the blocks */
    int ndim;            /* 1 or 2 */
    int shape[2];        /* PyTorch shape; shape[1] = 1 when ndim == 1 */
    size_t offset;       /* in floats, into params (and grads, m, v) */
    size_t numel;
    int is_matrix;       /* 2-D: AdamW weight decay applies (nanoGPT rule) */
    int is_block_linear; /* c_attn, attn.c_proj, c_fc, mlp.c_proj weight:
                            the quantization targets */
} ngq_tensor_info;

/* Tensors in state_dict order: wte, wpe, per block ln_1.{weight,bias},
 * attn.c_attn.{weight,bias}, attn.c_proj.{weight,bias}, ln_2.{weight,bias},
 * mlp.c_fc.{weight,bias}, mlp.c_proj.{weight,bias} (biases only with
 * cfg->bias), ln_f.{weight,bias}, and lm_head.weight when untied. Offsets are
 * consecutive: the buffer has no padding. ngq_model_tensor_count and
 * ngq_model_param_count expect a valid cfg; ngq_model_tensor_info returns
 * NGQ_ERR_CONFIG for an invalid cfg and NGQ_ERR_INTERNAL for an index outside
 * [0, count). */
int ngq_model_tensor_count(const ngq_model_config *cfg);
ngq_status ngq_model_tensor_info(const ngq_model_config *cfg, int index, ngq_tensor_info *out,
                                 ngq_error *err);
/* Looks a tensor up by its state_dict name; NGQ_ERR_FORMAT if absent. */
ngq_status ngq_model_tensor_find(const ngq_model_config *cfg, const char *name,
                                 ngq_tensor_info *out, ngq_error *err);
/* Number of floats in the parameter buffer (tied weights counted once). */
size_t ngq_model_param_count(const ngq_model_config *cfg);

/* ---- the model: parameters and gradients ----------------------------- */

/* Named views into a parameter-shaped buffer; bias pointers are NULL when
 * cfg.bias is 0. */
typedef struct {
    float *ln_1_weight, *ln_1_bias;
    float *attn_c_attn_weight, *attn_c_attn_bias;
    float *attn_c_proj_weight, *attn_c_proj_bias;
    float *ln_2_weight, *ln_2_bias;
    float *mlp_c_fc_weight, *mlp_c_fc_bias;
    float *mlp_c_proj_weight, *mlp_c_proj_bias;
} ngq_block_tensors;

typedef struct {
    float *wte, *wpe;
    ngq_block_tensors *blocks; /* n_layer entries */
    float *ln_f_weight, *ln_f_bias;
    float *lm_head_weight;     /* == wte when tie_embeddings */
} ngq_model_tensors;

typedef struct {
    ngq_model_config config;
    size_t param_count;
    float *params;       /* param_count floats, tensor-table layout */
    ngq_model_tensors p; /* views into params */
    float *grads;        /* NULL until ngq_model_init_grads */
    ngq_model_tensors g; /* views into grads */
} ngq_model;

/* Validates cfg and allocates a zeroed parameter buffer (no gradients).
 * On failure the model is left freed (ngq_model_free is still safe). */
ngq_status ngq_model_init(ngq_model *model, const ngq_model_config *cfg, ngq_error *err);
/* Allocates a zeroed gradient buffer in the parameter layout. */
ngq_status ngq_model_init_grads(ngq_model *model, ngq_error *err);
void ngq_model_free(ngq_model *model);
void ngq_model_zero_grad(ngq_model *model);

/* nanoGPT initialisation: every Linear weight and both embeddings
 * normal(0, init_std), every c_proj.weight (attention and MLP) normal(0,
 * init_std / sqrt(2 n_layer)), biases 0, LayerNorm weights 1. Draw order:
 * tensors in table order, elements in row-major order, one ngq_rng_normal
 * per element of each normally-initialised tensor (constant tensors draw
 * nothing). */
void ngq_model_init_weights(ngq_model *model, ngq_rng *rng);

/* ---- activations -------------------------------------------------------- */

typedef enum {
    NGQ_DROPOUT_SITE_EMBEDDING = 0,     /* layer -1 */
    NGQ_DROPOUT_SITE_ATTENTION = 1,     /* attention probabilities */
    NGQ_DROPOUT_SITE_ATTN_RESIDUAL = 2, /* after attn.c_proj */
    NGQ_DROPOUT_SITE_MLP_RESIDUAL = 3   /* after mlp.c_proj */
} ngq_dropout_site;

/* Activations of one block for the last forward (rows = B*T of that call). */
typedef struct {
    float *residual_in;                  /* (B,T,C)   x entering the block (block 0:
                                            the embedding after dropout; block l+1:
                                            the output of block l)               */
    float *ln_1, *ln_1_mean, *ln_1_rstd; /* (B,T,C), (B,T), (B,T)  input of c_attn */
    float *qkv;                          /* (B,T,3C)                                */
    float *att;                          /* (B,NH,T,T) softmax probabilities        */
    float *atty;                         /* (B,T,C)   input of attn.c_proj          */
    float *residual_mid;                 /* (B,T,C)   x after the attention branch  */
    float *ln_2, *ln_2_mean, *ln_2_rstd; /* (B,T,C)   input of c_fc                 */
    float *fch;                          /* (B,T,4C)  c_fc output before GELU       */
    float *fch_gelu;                     /* (B,T,4C)  input of mlp.c_proj           */
    uint8_t *att_mask;                   /* (B,NH,T,T) dropout masks, NULL when     */
    uint8_t *attn_resid_mask;            /* (B,T,C)    config.dropout == 0          */
    uint8_t *mlp_resid_mask;             /* (B,T,C)                                 */
} ngq_block_activations;

typedef struct {
    ngq_model_config config;
    int max_B, max_T;
    /* The last forward: */
    int B, T;
    int have_targets;   /* the last forward had targets: backward is possible */
    int dropout_active; /* masks were drawn and applied */
    uint16_t *tokens, *targets; /* copies, (B,T) */
    ngq_block_activations *blocks; /* n_layer entries */
    float *residual_final;      /* (B,T,C) output of the last block, input of ln_f */
    uint8_t *embedding_mask;    /* (B,T,C) or NULL */
    float *ln_f, *ln_f_mean, *ln_f_rstd;
    float *logits;              /* (B,T,V) */
    float *probs;               /* (B,T,V) softmax of logits */
    float *losses;              /* (B,T) per-position cross-entropy (with targets) */
    /* Backward scratch (also the pre-dropout branch output in the forward). */
    float *d_residual, *d_ln, *d_branch, *d_atty, *d_qkv, *d_fch, *d_fch_gelu, *d_logits;
    float *att_scratch;         /* (B,NH,T,T) */
    /* Storage: one allocation holding float_count floats followed by
     * byte_count bytes; every pointer above points into it. */
    float *float_memory;
    uint8_t *byte_memory;
    size_t float_count, byte_count;
} ngq_activations;

/* Bytes of an activation set for batches up to B x T (0 < T <= block_size),
 * SIZE_MAX when cfg is invalid or the size does not fit in size_t. */
size_t ngq_activations_bytes(const ngq_model_config *cfg, int B, int T);
/* Parameters + gradients + activations for training at B x T (optimizer
 * moments are 2 * param_count * 4 bytes more). SIZE_MAX as above. */
size_t ngq_model_memory_bytes(const ngq_model_config *cfg, int B, int T);

ngq_status ngq_activations_init(ngq_activations *acts, const ngq_model_config *cfg, int max_B,
                                int max_T, ngq_error *err);
void ngq_activations_free(ngq_activations *acts);

/* The input of a block's linear layer in the last forward, (B*T, in_features):
 * ln_1 for c_attn, atty for attn.c_proj, ln_2 for c_fc, fch_gelu for
 * mlp.c_proj; NULL for other kinds or an out-of-range layer. */
const float *ngq_activations_linear_input(const ngq_activations *acts, int layer,
                                          ngq_tensor_kind kind);

/* ---- forward / backward ----------------------------------------------- */

typedef struct {
    int training;  /* nonzero: dropout is applied (when config.dropout > 0) */
    uint64_t seed; /* dropout masks depend on (seed, step, layer, site, row) only */
    uint64_t step;
} ngq_forward_mode;

/* tokens (B,T), targets (B,T) or NULL -> acts->logits, acts->probs (B,T,V) and,
 * with targets, acts->losses (B,T) and *mean_loss (NaN without targets).
 * mode NULL = evaluation (no dropout). 1 <= B <= max_B, 1 <= T <= max_T; every
 * token and target must be < vocab_size (NGQ_ERR_FORMAT otherwise).
 * mean_loss may be NULL. Deterministic for any OpenMP thread count. */
ngq_status ngq_model_forward(const ngq_model *model, ngq_activations *acts,
                             const uint16_t *tokens, const uint16_t *targets, int B, int T,
                             const ngq_forward_mode *mode, float *mean_loss, ngq_error *err);

/* Backward of loss_scale * mean_loss for the last forward (which must have
 * had targets): ADDS into model->grads, so calls accumulate (gradient
 * accumulation: loss_scale = 1 / micro_steps). Overwrites the scratch parts of
 * acts but keeps the forward activations. */
ngq_status ngq_model_backward(ngq_model *model, ngq_activations *acts, float loss_scale,
                              ngq_error *err);

#endif
