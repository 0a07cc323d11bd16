/* model.c: configuration checks, the tensor table and parameter layout,
 * nanoGPT initialisation, activation buffers and the training forward and
 * backward passes of the GPT model, written as a sequence of ops.h kernels.
 * It does not read or write files, step an optimizer or generate text. */
#include "nanogptq/model.h"
#include "nanogptq/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ngq_model_config_reference(ngq_model_config *cfg)
{
    cfg->vocab_size = 88;
    cfg->block_size = 256;
    cfg->n_layer = 6;
    cfg->n_head = 6;
    cfg->n_embd = 192;
    cfg->bias = 0;
    cfg->tie_embeddings = 1;
    cfg->dropout = 0.0f;
    cfg->init_std = 0.02f;
}

/* ---- tensor table -------------------------------------------------------- */

typedef struct {
    ngq_tensor_kind kind;
    const char *suffix;
    int ndim;
    int rows_per_embd; /* shape[0] = rows_per_embd * C */
    int cols_per_embd; /* shape[1] = cols_per_embd * C (2-D only) */
} block_tensor_desc;

/* One block in state_dict order; odd entries are the biases. */
static const block_tensor_desc block_tensors[12] = {
    {NGQ_TENSOR_LN_1_WEIGHT, "ln_1.weight", 1, 1, 0},
    {NGQ_TENSOR_LN_1_BIAS, "ln_1.bias", 1, 1, 0},
    {NGQ_TENSOR_ATTN_C_ATTN_WEIGHT, "attn.c_attn.weight", 2, 3, 1},
    {NGQ_TENSOR_ATTN_C_ATTN_BIAS, "attn.c_attn.bias", 1, 3, 0},
    {NGQ_TENSOR_ATTN_C_PROJ_WEIGHT, "attn.c_proj.weight", 2, 1, 1},
    {NGQ_TENSOR_ATTN_C_PROJ_BIAS, "attn.c_proj.bias", 1, 1, 0},
    {NGQ_TENSOR_LN_2_WEIGHT, "ln_2.weight", 1, 1, 0},
    {NGQ_TENSOR_LN_2_BIAS, "ln_2.bias", 1, 1, 0},
    {NGQ_TENSOR_MLP_C_FC_WEIGHT, "mlp.c_fc.weight", 2, 4, 1},
    {NGQ_TENSOR_MLP_C_FC_BIAS, "mlp.c_fc.bias", 1, 4, 0},
    {NGQ_TENSOR_MLP_C_PROJ_WEIGHT, "mlp.c_proj.weight", 2, 1, 4},
    {NGQ_TENSOR_MLP_C_PROJ_BIAS, "mlp.c_proj.bias", 1, 1, 0},
};

static int block_tensor_count(const ngq_model_config *cfg)
{
    return cfg->bias ? 12 : 6;
}

static size_t block_desc_numel(const block_tensor_desc *d, size_t C)
{
    size_t n = (size_t)d->rows_per_embd * C;
    return d->ndim == 2 ? n * (size_t)d->cols_per_embd * C : n;
}

static size_t block_param_count(const ngq_model_config *cfg)
{
    size_t total = 0;
    for (int j = 0; j < block_tensor_count(cfg); j++)
        total += block_desc_numel(&block_tensors[cfg->bias ? j : 2 * j], (size_t)cfg->n_embd);
    return total;
}

/* Parameter count in double precision, safe for any values in the checked ranges. */
static double param_count_estimate(const ngq_model_config *cfg)
{
    double C = cfg->n_embd, L = cfg->n_layer;
    double per_block = 12.0 * C * C + (cfg->bias ? 13.0 * C : 2.0 * C);
    return (double)cfg->vocab_size * C * (cfg->tie_embeddings ? 1.0 : 2.0) +
           (double)cfg->block_size * C + L * per_block + (cfg->bias ? 2.0 : 1.0) * C;
}

ngq_status ngq_model_config_validate(const ngq_model_config *cfg, ngq_error *err)
{
    if (cfg->vocab_size < 1 || cfg->vocab_size > NGQ_MODEL_MAX_VOCAB)
        return ngq_fail(err, NGQ_ERR_CONFIG, "vocab_size = %d is out of range [1, %d]",
                        cfg->vocab_size, NGQ_MODEL_MAX_VOCAB);
    if (cfg->block_size < 1 || cfg->block_size > NGQ_MODEL_MAX_BLOCK_SIZE)
        return ngq_fail(err, NGQ_ERR_CONFIG, "block_size = %d is out of range [1, %d]",
                        cfg->block_size, NGQ_MODEL_MAX_BLOCK_SIZE);
    if (cfg->n_layer < 1 || cfg->n_layer > NGQ_MODEL_MAX_LAYERS)
        return ngq_fail(err, NGQ_ERR_CONFIG, "n_layer = %d is out of range [1, %d]", cfg->n_layer,
                        NGQ_MODEL_MAX_LAYERS);
    if (cfg->n_head < 1 || cfg->n_head > NGQ_MODEL_MAX_HEADS)
        return ngq_fail(err, NGQ_ERR_CONFIG, "n_head = %d is out of range [1, %d]", cfg->n_head,
                        NGQ_MODEL_MAX_HEADS);
    if (cfg->n_embd < 1 || cfg->n_embd > NGQ_MODEL_MAX_EMBD)
        return ngq_fail(err, NGQ_ERR_CONFIG, "n_embd = %d is out of range [1, %d]", cfg->n_embd,
                        NGQ_MODEL_MAX_EMBD);
    if (cfg->n_embd % cfg->n_head != 0)
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "n_embd = %d is not divisible by n_head = %d (head size must be whole)",
                        cfg->n_embd, cfg->n_head);
    if (cfg->bias != 0 && cfg->bias != 1)
        return ngq_fail(err, NGQ_ERR_CONFIG, "bias = %d must be 0 or 1", cfg->bias);
    if (cfg->tie_embeddings != 0 && cfg->tie_embeddings != 1)
        return ngq_fail(err, NGQ_ERR_CONFIG, "tie_embeddings = %d must be 0 or 1",
                        cfg->tie_embeddings);
    if (!(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return ngq_fail(err, NGQ_ERR_CONFIG, "dropout = %g must be in [0, 1)",
                        (double)cfg->dropout);
    if (!(cfg->init_std > 0.0f && isfinite(cfg->init_std)))
        return ngq_fail(err, NGQ_ERR_CONFIG, "init_std = %g must be positive and finite",
                        (double)cfg->init_std);
    double params = param_count_estimate(cfg);
    if (params > (double)NGQ_MODEL_MAX_PARAMS)
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "the model would have %.3g parameters (%.3g GiB), more than the limit of "
                        "%zu (n_layer = %d, n_embd = %d, vocab_size = %d, block_size = %d)",
                        params, params * 4.0 / 1073741824.0, NGQ_MODEL_MAX_PARAMS, cfg->n_layer,
                        cfg->n_embd, cfg->vocab_size, cfg->block_size);
    return NGQ_OK;
}

int ngq_model_tensor_count(const ngq_model_config *cfg)
{
    return 2 + cfg->n_layer * block_tensor_count(cfg) + (cfg->bias ? 2 : 1) +
           (cfg->tie_embeddings ? 0 : 1);
}

size_t ngq_model_param_count(const ngq_model_config *cfg)
{
    size_t C = (size_t)cfg->n_embd;
    return (size_t)cfg->vocab_size * C * (cfg->tie_embeddings ? 1 : 2) +
           (size_t)cfg->block_size * C + (size_t)cfg->n_layer * block_param_count(cfg) +
           (cfg->bias ? 2 : 1) * C;
}

static void set_info(ngq_tensor_info *out, ngq_tensor_kind kind, int layer, int ndim, int rows,
                     int cols, size_t offset)
{
    out->kind = kind;
    out->layer = layer;
    out->ndim = ndim;
    out->shape[0] = rows;
    out->shape[1] = ndim == 2 ? cols : 1;
    out->offset = offset;
    out->numel = (size_t)rows * (size_t)out->shape[1];
    out->is_matrix = ndim == 2;
    out->is_block_linear = kind == NGQ_TENSOR_ATTN_C_ATTN_WEIGHT ||
                           kind == NGQ_TENSOR_ATTN_C_PROJ_WEIGHT ||
                           kind == NGQ_TENSOR_MLP_C_FC_WEIGHT ||
                           kind == NGQ_TENSOR_MLP_C_PROJ_WEIGHT;
}

ngq_status ngq_model_tensor_info(const ngq_model_config *cfg, int index, ngq_tensor_info *out,
                                 ngq_error *err)
{
    ngq_status st = ngq_model_config_validate(cfg, err);
    if (st != NGQ_OK) return st;
    int count = ngq_model_tensor_count(cfg);
    if (index < 0 || index >= count)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "tensor index %d is out of range [0, %d)", index,
                        count);
    memset(out, 0, sizeof *out);
    const int C = cfg->n_embd, V = cfg->vocab_size, L = cfg->n_layer;
    const int per_block = block_tensor_count(cfg);
    const size_t wte_numel = (size_t)V * C, wpe_numel = (size_t)cfg->block_size * C;
    const size_t blocks_offset = wte_numel + wpe_numel;
    const size_t block_numel = block_param_count(cfg);
    if (index == 0) {
        set_info(out, NGQ_TENSOR_WTE, -1, 2, V, C, 0);
        snprintf(out->name, sizeof out->name, "transformer.wte.weight");
    } else if (index == 1) {
        set_info(out, NGQ_TENSOR_WPE, -1, 2, cfg->block_size, C, wte_numel);
        snprintf(out->name, sizeof out->name, "transformer.wpe.weight");
    } else if (index < 2 + L * per_block) {
        int layer = (index - 2) / per_block, local = (index - 2) % per_block;
        size_t offset = blocks_offset + (size_t)layer * block_numel;
        for (int j = 0; j < local; j++)
            offset += block_desc_numel(&block_tensors[cfg->bias ? j : 2 * j], (size_t)C);
        const block_tensor_desc *d = &block_tensors[cfg->bias ? local : 2 * local];
        set_info(out, d->kind, layer, d->ndim, d->rows_per_embd * C, d->cols_per_embd * C, offset);
        snprintf(out->name, sizeof out->name, "transformer.h.%d.%s", layer, d->suffix);
    } else {
        int rest = index - 2 - L * per_block;
        size_t offset = blocks_offset + (size_t)L * block_numel;
        if (rest == 0) {
            set_info(out, NGQ_TENSOR_LN_F_WEIGHT, -1, 1, C, 0, offset);
            snprintf(out->name, sizeof out->name, "transformer.ln_f.weight");
        } else if (rest == 1 && cfg->bias) {
            set_info(out, NGQ_TENSOR_LN_F_BIAS, -1, 1, C, 0, offset + (size_t)C);
            snprintf(out->name, sizeof out->name, "transformer.ln_f.bias");
        } else {
            set_info(out, NGQ_TENSOR_LM_HEAD_WEIGHT, -1, 2, V, C,
                     offset + (size_t)(cfg->bias ? 2 : 1) * C);
            snprintf(out->name, sizeof out->name, "lm_head.weight");
        }
    }
    return NGQ_OK;
}

ngq_status ngq_model_tensor_find(const ngq_model_config *cfg, const char *name,
                                 ngq_tensor_info *out, ngq_error *err)
{
    ngq_status st = ngq_model_config_validate(cfg, err);
    if (st != NGQ_OK) return st;
    int count = ngq_model_tensor_count(cfg);
    for (int i = 0; i < count; i++) {
        st = ngq_model_tensor_info(cfg, i, out, err);
        if (st != NGQ_OK) return st;
        if (strcmp(out->name, name) == 0) return NGQ_OK;
    }
    return ngq_fail(err, NGQ_ERR_FORMAT, "the model has no tensor named '%s' (bias = %d, "
                    "tie_embeddings = %d, n_layer = %d)", name, cfg->bias, cfg->tie_embeddings,
                    cfg->n_layer);
}

/* ---- model ------------------------------------------------------------------ */

/* Points views at the tensors of a parameter-shaped buffer; cfg is valid and
 * views->blocks has n_layer entries. */
static void model_tensor_views(const ngq_model_config *cfg, float *base, ngq_model_tensors *views)
{
    ngq_block_tensors *blocks = views->blocks;
    memset(blocks, 0, sizeof *blocks * (size_t)cfg->n_layer);
    memset(views, 0, sizeof *views);
    views->blocks = blocks;
    int count = ngq_model_tensor_count(cfg);
    for (int i = 0; i < count; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(cfg, i, &info, NULL);
        float *ptr = base + info.offset;
        ngq_block_tensors *b = info.layer >= 0 ? &blocks[info.layer] : NULL;
        switch (info.kind) {
        case NGQ_TENSOR_WTE: views->wte = ptr; break;
        case NGQ_TENSOR_WPE: views->wpe = ptr; break;
        case NGQ_TENSOR_LN_1_WEIGHT: b->ln_1_weight = ptr; break;
        case NGQ_TENSOR_LN_1_BIAS: b->ln_1_bias = ptr; break;
        case NGQ_TENSOR_ATTN_C_ATTN_WEIGHT: b->attn_c_attn_weight = ptr; break;
        case NGQ_TENSOR_ATTN_C_ATTN_BIAS: b->attn_c_attn_bias = ptr; break;
        case NGQ_TENSOR_ATTN_C_PROJ_WEIGHT: b->attn_c_proj_weight = ptr; break;
        case NGQ_TENSOR_ATTN_C_PROJ_BIAS: b->attn_c_proj_bias = ptr; break;
        case NGQ_TENSOR_LN_2_WEIGHT: b->ln_2_weight = ptr; break;
        case NGQ_TENSOR_LN_2_BIAS: b->ln_2_bias = ptr; break;
        case NGQ_TENSOR_MLP_C_FC_WEIGHT: b->mlp_c_fc_weight = ptr; break;
        case NGQ_TENSOR_MLP_C_FC_BIAS: b->mlp_c_fc_bias = ptr; break;
        case NGQ_TENSOR_MLP_C_PROJ_WEIGHT: b->mlp_c_proj_weight = ptr; break;
        case NGQ_TENSOR_MLP_C_PROJ_BIAS: b->mlp_c_proj_bias = ptr; break;
        case NGQ_TENSOR_LN_F_WEIGHT: views->ln_f_weight = ptr; break;
        case NGQ_TENSOR_LN_F_BIAS: views->ln_f_bias = ptr; break;
        case NGQ_TENSOR_LM_HEAD_WEIGHT: views->lm_head_weight = ptr; break;
        }
    }
    if (cfg->tie_embeddings) views->lm_head_weight = views->wte;
}

/* n zeroed floats, 64-byte aligned; NULL on failure. */
static float *alloc_floats(size_t n)
{
    if (n == 0) n = 1;
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    void *ptr = NULL;
    if (posix_memalign(&ptr, 64, n * sizeof(float)) != 0) return NULL;
    memset(ptr, 0, n * sizeof(float));
    return ptr;
}

ngq_status ngq_model_init(ngq_model *model, const ngq_model_config *cfg, ngq_error *err)
{
    memset(model, 0, sizeof *model);
    ngq_status st = ngq_model_config_validate(cfg, err);
    if (st != NGQ_OK) return st;
    model->config = *cfg;
    model->param_count = ngq_model_param_count(cfg);
    model->params = alloc_floats(model->param_count);
    model->p.blocks = calloc((size_t)cfg->n_layer, sizeof *model->p.blocks);
    if (!model->params || !model->p.blocks) {
        ngq_model_free(model);
        return ngq_fail(err, NGQ_ERR_NOMEM, "allocating %zu model parameters (%zu bytes)",
                        ngq_model_param_count(cfg), ngq_model_param_count(cfg) * sizeof(float));
    }
    model_tensor_views(cfg, model->params, &model->p);
    return NGQ_OK;
}

ngq_status ngq_model_init_grads(ngq_model *model, ngq_error *err)
{
    if (!model->params)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "gradients need an initialised model "
                        "(ngq_model_init first)");
    if (model->grads) return NGQ_OK;
    model->grads = alloc_floats(model->param_count);
    model->g.blocks = calloc((size_t)model->config.n_layer, sizeof *model->g.blocks);
    if (!model->grads || !model->g.blocks) {
        free(model->grads);
        free(model->g.blocks);
        model->grads = NULL;
        memset(&model->g, 0, sizeof model->g);
        return ngq_fail(err, NGQ_ERR_NOMEM, "allocating gradients for %zu parameters (%zu bytes)",
                        model->param_count, model->param_count * sizeof(float));
    }
    model_tensor_views(&model->config, model->grads, &model->g);
    return NGQ_OK;
}

void ngq_model_free(ngq_model *model)
{
    free(model->params);
    free(model->p.blocks);
    free(model->grads);
    free(model->g.blocks);
    memset(model, 0, sizeof *model);
}

void ngq_model_zero_grad(ngq_model *model)
{
    if (model->grads) memset(model->grads, 0, model->param_count * sizeof(float));
}

void ngq_model_init_weights(ngq_model *model, ngq_rng *rng)
{
    const ngq_model_config *cfg = &model->config;
    const float proj_std = cfg->init_std / sqrtf(2.0f * (float)cfg->n_layer);
    int count = ngq_model_tensor_count(cfg);
    for (int i = 0; i < count; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(cfg, i, &info, NULL);
        float *ptr = model->params + info.offset;
        switch (info.kind) {
        case NGQ_TENSOR_LN_1_WEIGHT:
        case NGQ_TENSOR_LN_2_WEIGHT:
        case NGQ_TENSOR_LN_F_WEIGHT:
            for (size_t e = 0; e < info.numel; e++) ptr[e] = 1.0f;
            break;
        case NGQ_TENSOR_LN_1_BIAS:
        case NGQ_TENSOR_LN_2_BIAS:
        case NGQ_TENSOR_LN_F_BIAS:
        case NGQ_TENSOR_ATTN_C_ATTN_BIAS:
        case NGQ_TENSOR_ATTN_C_PROJ_BIAS:
        case NGQ_TENSOR_MLP_C_FC_BIAS:
        case NGQ_TENSOR_MLP_C_PROJ_BIAS:
            memset(ptr, 0, info.numel * sizeof(float));
            break;
        case NGQ_TENSOR_ATTN_C_PROJ_WEIGHT:
        case NGQ_TENSOR_MLP_C_PROJ_WEIGHT:
            for (size_t e = 0; e < info.numel; e++) ptr[e] = ngq_rng_normal(rng) * proj_std;
            break;
        case NGQ_TENSOR_WTE:
        case NGQ_TENSOR_WPE:
        case NGQ_TENSOR_ATTN_C_ATTN_WEIGHT:
        case NGQ_TENSOR_MLP_C_FC_WEIGHT:
        case NGQ_TENSOR_LM_HEAD_WEIGHT:
            for (size_t e = 0; e < info.numel; e++) ptr[e] = ngq_rng_normal(rng) * cfg->init_std;
            break;
        }
    }
}

/* ---- activations ---------------------------------------------------------- */

typedef struct {
    size_t floats, bytes;
    int overflow;
    float *fbase;
    uint8_t *bbase;
} layout;

static size_t mul_checked(layout *lo, size_t a, size_t b)
{
    if (a != 0 && b > SIZE_MAX / a) {
        lo->overflow = 1;
        return 0;
    }
    return a * b;
}

static void add_checked(layout *lo, size_t *total, size_t n)
{
    if (n > SIZE_MAX - *total) lo->overflow = 1;
    else *total += n;
}

/* Reserves n floats (64-byte aligned); returns NULL while only counting. */
static float *take_floats(layout *lo, size_t n)
{
    size_t offset = lo->floats;
    add_checked(lo, &lo->floats, n);
    add_checked(lo, &lo->floats, (16 - lo->floats % 16) % 16);
    return lo->fbase && !lo->overflow ? lo->fbase + offset : NULL;
}

static uint8_t *take_bytes(layout *lo, size_t n)
{
    size_t offset = lo->bytes;
    add_checked(lo, &lo->bytes, n);
    add_checked(lo, &lo->bytes, (64 - lo->bytes % 64) % 64);
    return lo->bbase && !lo->overflow ? lo->bbase + offset : NULL;
}

/* Lays out (or only counts, when the bases are NULL) every activation array
 * for batches up to B x T. blocks may be NULL while counting. */
static void activations_layout(layout *lo, ngq_activations *a, const ngq_model_config *cfg,
                               int B, int T)
{
    const size_t C = (size_t)cfg->n_embd, V = (size_t)cfg->vocab_size;
    const size_t N = mul_checked(lo, (size_t)B, (size_t)T);
    const size_t NC = mul_checked(lo, N, C);
    const size_t BH = mul_checked(lo, (size_t)B, (size_t)cfg->n_head);
    const size_t BHTT = mul_checked(lo, mul_checked(lo, BH, (size_t)T), (size_t)T);
    const size_t NV = mul_checked(lo, N, V);
    const int masks = cfg->dropout > 0.0f;
    ngq_block_activations scratch_block;

    a->tokens = (uint16_t *)take_bytes(lo, mul_checked(lo, N, sizeof(uint16_t)));
    a->targets = (uint16_t *)take_bytes(lo, mul_checked(lo, N, sizeof(uint16_t)));
    a->embedding_mask = masks ? take_bytes(lo, NC) : NULL;
    for (int l = 0; l < cfg->n_layer; l++) {
        ngq_block_activations *b = a->blocks ? &a->blocks[l] : &scratch_block;
        b->residual_in = take_floats(lo, NC);
        b->ln_1 = take_floats(lo, NC);
        b->ln_1_mean = take_floats(lo, N);
        b->ln_1_rstd = take_floats(lo, N);
        b->qkv = take_floats(lo, mul_checked(lo, 3, NC));
        b->att = take_floats(lo, BHTT);
        b->atty = take_floats(lo, NC);
        b->residual_mid = take_floats(lo, NC);
        b->ln_2 = take_floats(lo, NC);
        b->ln_2_mean = take_floats(lo, N);
        b->ln_2_rstd = take_floats(lo, N);
        b->fch = take_floats(lo, mul_checked(lo, 4, NC));
        b->fch_gelu = take_floats(lo, mul_checked(lo, 4, NC));
        b->att_mask = masks ? take_bytes(lo, BHTT) : NULL;
        b->attn_resid_mask = masks ? take_bytes(lo, NC) : NULL;
        b->mlp_resid_mask = masks ? take_bytes(lo, NC) : NULL;
    }
    a->residual_final = take_floats(lo, NC);
    a->ln_f = take_floats(lo, NC);
    a->ln_f_mean = take_floats(lo, N);
    a->ln_f_rstd = take_floats(lo, N);
    a->logits = take_floats(lo, NV);
    a->probs = take_floats(lo, NV);
    a->losses = take_floats(lo, N);
    a->d_residual = take_floats(lo, NC);
    a->d_ln = take_floats(lo, NC);
    a->d_branch = take_floats(lo, NC);
    a->d_atty = take_floats(lo, NC);
    a->d_qkv = take_floats(lo, mul_checked(lo, 3, NC));
    a->d_fch = take_floats(lo, mul_checked(lo, 4, NC));
    a->d_fch_gelu = take_floats(lo, mul_checked(lo, 4, NC));
    a->d_logits = take_floats(lo, NV);
    a->att_scratch = take_floats(lo, BHTT);
}

static ngq_status check_batch_shape(const ngq_model_config *cfg, int B, int T, ngq_error *err)
{
    if (B < 1)
        return ngq_fail(err, NGQ_ERR_CONFIG, "batch size B = %d must be at least 1", B);
    if (T < 1 || T > cfg->block_size)
        return ngq_fail(err, NGQ_ERR_CONFIG, "sequence length T = %d is out of range [1, "
                        "block_size = %d]", T, cfg->block_size);
    return NGQ_OK;
}

size_t ngq_activations_bytes(const ngq_model_config *cfg, int B, int T)
{
    if (ngq_model_config_validate(cfg, NULL) != NGQ_OK ||
        check_batch_shape(cfg, B, T, NULL) != NGQ_OK)
        return SIZE_MAX;
    layout lo = {0};
    ngq_activations a;
    memset(&a, 0, sizeof a);
    activations_layout(&lo, &a, cfg, B, T);
    size_t bytes = mul_checked(&lo, lo.floats, sizeof(float));
    add_checked(&lo, &bytes, lo.bytes);
    return lo.overflow ? SIZE_MAX : bytes;
}

size_t ngq_model_memory_bytes(const ngq_model_config *cfg, int B, int T)
{
    size_t acts = ngq_activations_bytes(cfg, B, T);
    if (acts == SIZE_MAX) return SIZE_MAX;
    size_t params = ngq_model_param_count(cfg) * sizeof(float);
    if (acts > SIZE_MAX - 2 * params) return SIZE_MAX;
    return acts + 2 * params;
}

ngq_status ngq_activations_init(ngq_activations *acts, const ngq_model_config *cfg, int max_B,
                                int max_T, ngq_error *err)
{
    memset(acts, 0, sizeof *acts);
    ngq_status st = ngq_model_config_validate(cfg, err);
    if (st != NGQ_OK) return st;
    st = check_batch_shape(cfg, max_B, max_T, err);
    if (st != NGQ_OK) return st;
    layout lo = {0};
    activations_layout(&lo, acts, cfg, max_B, max_T);
    if (lo.overflow || lo.floats > (SIZE_MAX - lo.bytes) / sizeof(float) ||
        (double)max_B * max_T > (double)INT32_MAX)
        return ngq_fail(err, NGQ_ERR_CONFIG, "activations for B = %d, T = %d do not fit in memory "
                        "addressing (n_layer = %d, n_embd = %d, n_head = %d)", max_B, max_T,
                        cfg->n_layer, cfg->n_embd, cfg->n_head);
    acts->config = *cfg;
    acts->max_B = max_B;
    acts->max_T = max_T;
    acts->float_count = lo.floats;
    acts->byte_count = lo.bytes;
    acts->blocks = calloc((size_t)cfg->n_layer, sizeof *acts->blocks);
    /* One allocation: the float arrays, then the byte arrays (masks, token
     * copies). lo.floats is a multiple of 16, so the byte part stays 64-byte
     * aligned. */
    size_t total = lo.floats * sizeof(float) + lo.bytes;
    void *memory = NULL;
    if (posix_memalign(&memory, 64, total ? total : 64) != 0) memory = NULL;
    if (!acts->blocks || !memory) {
        free(memory);
        ngq_activations_free(acts);
        return ngq_fail(err, NGQ_ERR_NOMEM, "allocating activations for B = %d, T = %d: %zu bytes "
                        "(%.2f GiB)", max_B, max_T, total, (double)total / 1073741824.0);
    }
    memset(memory, 0, total);
    acts->float_memory = memory;
    acts->byte_memory = (uint8_t *)memory + lo.floats * sizeof(float);
    layout placed = {0};
    placed.fbase = acts->float_memory;
    placed.bbase = acts->byte_memory;
    activations_layout(&placed, acts, cfg, max_B, max_T);
    return NGQ_OK;
}

void ngq_activations_free(ngq_activations *acts)
{
    free(acts->float_memory); /* byte_memory lives in the same allocation */
    free(acts->blocks);
    memset(acts, 0, sizeof *acts);
}

const float *ngq_activations_linear_input(const ngq_activations *acts, int layer,
                                          ngq_tensor_kind kind)
{
    if (layer < 0 || layer >= acts->config.n_layer) return NULL;
    const ngq_block_activations *b = &acts->blocks[layer];
    switch (kind) {
    case NGQ_TENSOR_ATTN_C_ATTN_WEIGHT: return b->ln_1;
    case NGQ_TENSOR_ATTN_C_PROJ_WEIGHT: return b->atty;
    case NGQ_TENSOR_MLP_C_FC_WEIGHT: return b->ln_2;
    case NGQ_TENSOR_MLP_C_PROJ_WEIGHT: return b->fch_gelu;
    default: return NULL;
    }
}

/* ---- forward / backward ----------------------------------------------------- */

static int config_equal(const ngq_model_config *a, const ngq_model_config *b)
{
    return a->vocab_size == b->vocab_size && a->block_size == b->block_size &&
           a->n_layer == b->n_layer && a->n_head == b->n_head && a->n_embd == b->n_embd &&
           a->bias == b->bias && a->tie_embeddings == b->tie_embeddings &&
           a->dropout == b->dropout && a->init_std == b->init_std;
}

static ngq_status check_ids(const uint16_t *ids, size_t n, int V, const char *what, int T,
                            ngq_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= V)
            return ngq_fail(err, NGQ_ERR_FORMAT, "%s id %u at batch row %zu, position %zu is not "
                            "below vocab_size = %d", what, (unsigned)ids[i], i / (size_t)T,
                            i % (size_t)T, V);
    return NGQ_OK;
}

ngq_status ngq_model_forward(const ngq_model *model, ngq_activations *acts,
                             const uint16_t *tokens, const uint16_t *targets, int B, int T,
                             const ngq_forward_mode *mode, float *mean_loss, ngq_error *err)
{
    const ngq_model_config *cfg = &model->config;
    if (!config_equal(cfg, &acts->config))
        return ngq_fail(err, NGQ_ERR_INTERNAL, "activations were sized for a different model "
                        "configuration");
    if (B < 1 || B > acts->max_B || T < 1 || T > acts->max_T)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "batch %d x %d exceeds the activations' capacity "
                        "%d x %d", B, T, acts->max_B, acts->max_T);
    const int C = cfg->n_embd, V = cfg->vocab_size, L = cfg->n_layer, NH = cfg->n_head;
    const int N = B * T;
    const size_t NC = (size_t)N * C;
    ngq_status st = check_ids(tokens, (size_t)N, V, "token", T, err);
    if (st == NGQ_OK && targets) st = check_ids(targets, (size_t)N, V, "target", T, err);
    if (st != NGQ_OK) {
        acts->have_targets = 0;
        return st;
    }
    acts->B = B;
    acts->T = T;
    acts->have_targets = targets != NULL;
    memcpy(acts->tokens, tokens, (size_t)N * sizeof *tokens);
    if (targets) memcpy(acts->targets, targets, (size_t)N * sizeof *targets);
    const int dropout = mode && mode->training && cfg->dropout > 0.0f;
    acts->dropout_active = dropout;
    const float p = cfg->dropout;
    const float keep = dropout ? ngq_dropout_keep_scale(p) : 1.0f;
    const uint64_t seed = mode ? mode->seed : 0, step = mode ? mode->step : 0;

    if (dropout) {
        ngq_embedding_forward(acts->d_branch, acts->tokens, model->p.wte, model->p.wpe, B, T, C);
        ngq_dropout_fill_mask(acts->embedding_mask, (size_t)N, (size_t)C, p,
                              ngq_dropout_key(seed, step, -1, NGQ_DROPOUT_SITE_EMBEDDING));
        ngq_dropout_forward(acts->blocks[0].residual_in, acts->d_branch, acts->embedding_mask,
                            keep, NC);
    } else {
        ngq_embedding_forward(acts->blocks[0].residual_in, acts->tokens, model->p.wte,
                              model->p.wpe, B, T, C);
    }

    for (int l = 0; l < L; l++) {
        ngq_block_activations *a = &acts->blocks[l];
        const ngq_block_tensors *w = &model->p.blocks[l];
        float *out = l + 1 < L ? acts->blocks[l + 1].residual_in : acts->residual_final;

        ngq_layernorm_forward(a->ln_1, a->ln_1_mean, a->ln_1_rstd, a->residual_in, w->ln_1_weight,
                              w->ln_1_bias, N, C);
        ngq_linear_forward(a->qkv, a->ln_1, w->attn_c_attn_weight, w->attn_c_attn_bias, N, C,
                           3 * C);
        if (dropout) {
            uint64_t key = ngq_dropout_key(seed, step, l, NGQ_DROPOUT_SITE_ATTENTION);
            ngq_dropout_fill_causal_mask(a->att_mask, B, NH, T, p, key);
            ngq_attention_forward(a->atty, a->att, acts->att_scratch, a->qkv, a->att_mask, keep, B,
                                  T, C, NH);
            ngq_linear_forward(acts->d_branch, a->atty, w->attn_c_proj_weight, w->attn_c_proj_bias,
                               N, C, C);
            ngq_dropout_fill_mask(a->attn_resid_mask, (size_t)N, (size_t)C, p,
                                  ngq_dropout_key(seed, step, l, NGQ_DROPOUT_SITE_ATTN_RESIDUAL));
            ngq_dropout_residual_forward(a->residual_mid, a->residual_in, acts->d_branch,
                                         a->attn_resid_mask, keep, NC);
        } else {
            ngq_attention_forward(a->atty, a->att, NULL, a->qkv, NULL, 1.0f, B, T, C, NH);
            ngq_linear_residual_forward(a->residual_mid, a->residual_in, a->atty,
                                        w->attn_c_proj_weight, w->attn_c_proj_bias, N, C, C);
        }

        ngq_layernorm_forward(a->ln_2, a->ln_2_mean, a->ln_2_rstd, a->residual_mid, w->ln_2_weight,
                              w->ln_2_bias, N, C);
        ngq_linear_gelu_forward(a->fch, a->fch_gelu, a->ln_2, w->mlp_c_fc_weight, w->mlp_c_fc_bias,
                                N, C, 4 * C);
        if (dropout) {
            ngq_linear_forward(acts->d_branch, a->fch_gelu, w->mlp_c_proj_weight,
                               w->mlp_c_proj_bias, N, 4 * C, C);
            ngq_dropout_fill_mask(a->mlp_resid_mask, (size_t)N, (size_t)C, p,
                                  ngq_dropout_key(seed, step, l, NGQ_DROPOUT_SITE_MLP_RESIDUAL));
            ngq_dropout_residual_forward(out, a->residual_mid, acts->d_branch, a->mlp_resid_mask,
                                         keep, NC);
        } else {
            ngq_linear_residual_forward(out, a->residual_mid, a->fch_gelu, w->mlp_c_proj_weight,
                                        w->mlp_c_proj_bias, N, 4 * C, C);
        }
    }

    ngq_layernorm_forward(acts->ln_f, acts->ln_f_mean, acts->ln_f_rstd, acts->residual_final,
                          model->p.ln_f_weight, model->p.ln_f_bias, N, C);
    ngq_linear_forward(acts->logits, acts->ln_f, model->p.lm_head_weight, NULL, N, C, V);
    ngq_softmax_cross_entropy_forward(acts->probs, targets ? acts->losses : NULL, acts->logits,
                                      targets ? acts->targets : NULL, N, V);
    float loss = NAN;
    if (targets) {
        double sum = 0.0;
        for (int n = 0; n < N; n++) sum += acts->losses[n];
        loss = (float)(sum / N);
    }
    if (mean_loss) *mean_loss = loss;
    if (targets && !isfinite(loss))
        return ngq_fail(err, NGQ_ERR_NUMERIC, "the mean loss is not finite (%g)", (double)loss);
    return NGQ_OK;
}

static void zero_floats(float *x, size_t n)
{
    memset(x, 0, n * sizeof *x);
}

ngq_status ngq_model_backward(ngq_model *model, ngq_activations *acts, float loss_scale,
                              ngq_error *err)
{
    const ngq_model_config *cfg = &model->config;
    if (!model->grads)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "backward needs gradients: call "
                        "ngq_model_init_grads first");
    if (!config_equal(cfg, &acts->config))
        return ngq_fail(err, NGQ_ERR_INTERNAL, "activations were sized for a different model "
                        "configuration");
    if (!acts->have_targets)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "backward needs a preceding forward with targets");
    const int B = acts->B, T = acts->T;
    const int C = cfg->n_embd, V = cfg->vocab_size, L = cfg->n_layer, NH = cfg->n_head;
    const int N = B * T;
    const size_t NC = (size_t)N * C;
    const int dropout = acts->dropout_active;
    const float keep = dropout ? ngq_dropout_keep_scale(cfg->dropout) : 1.0f;

    /* Cross-entropy and LM head. */
    zero_floats(acts->d_logits, (size_t)N * V);
    ngq_softmax_cross_entropy_backward(acts->d_logits, acts->probs, acts->targets,
                                       loss_scale / (float)N, N, V);
    zero_floats(acts->d_ln, NC);
    ngq_linear_backward(acts->d_ln, model->g.lm_head_weight, NULL, acts->d_logits, acts->ln_f,
                        model->p.lm_head_weight, N, C, V);
    zero_floats(acts->d_residual, NC);
    ngq_layernorm_backward(acts->d_residual, model->g.ln_f_weight, model->g.ln_f_bias, acts->d_ln,
                           acts->residual_final, model->p.ln_f_weight, acts->ln_f_mean,
                           acts->ln_f_rstd, N, C);

    for (int l = L - 1; l >= 0; l--) {
        ngq_block_activations *a = &acts->blocks[l];
        const ngq_block_tensors *w = &model->p.blocks[l];
        const ngq_block_tensors *g = &model->g.blocks[l];

        /* MLP branch: out = mid + dropout(c_proj(gelu(c_fc(ln_2(mid))))) */
        const float *d_proj = acts->d_residual;
        if (dropout) {
            zero_floats(acts->d_branch, NC);
            ngq_dropout_backward(acts->d_branch, acts->d_residual, a->mlp_resid_mask, keep, NC);
            d_proj = acts->d_branch;
        }
        zero_floats(acts->d_fch_gelu, 4 * NC);
        ngq_linear_backward(acts->d_fch_gelu, g->mlp_c_proj_weight, g->mlp_c_proj_bias, d_proj,
                            a->fch_gelu, w->mlp_c_proj_weight, N, 4 * C, C);
        zero_floats(acts->d_fch, 4 * NC);
        ngq_gelu_backward(acts->d_fch, a->fch, acts->d_fch_gelu, 4 * NC);
        zero_floats(acts->d_ln, NC);
        ngq_linear_backward(acts->d_ln, g->mlp_c_fc_weight, g->mlp_c_fc_bias, acts->d_fch, a->ln_2,
                            w->mlp_c_fc_weight, N, C, 4 * C);
        ngq_layernorm_backward(acts->d_residual, g->ln_2_weight, g->ln_2_bias, acts->d_ln,
                               a->residual_mid, w->ln_2_weight, a->ln_2_mean, a->ln_2_rstd, N, C);

        /* Attention branch: mid = in + dropout(c_proj(attention(c_attn(ln_1(in))))) */
        d_proj = acts->d_residual;
        if (dropout) {
            zero_floats(acts->d_branch, NC);
            ngq_dropout_backward(acts->d_branch, acts->d_residual, a->attn_resid_mask, keep, NC);
            d_proj = acts->d_branch;
        }
        zero_floats(acts->d_atty, NC);
        ngq_linear_backward(acts->d_atty, g->attn_c_proj_weight, g->attn_c_proj_bias, d_proj,
                            a->atty, w->attn_c_proj_weight, N, C, C);
        zero_floats(acts->d_qkv, 3 * NC);
        ngq_attention_backward(acts->d_qkv, acts->att_scratch, acts->d_atty, a->qkv, a->att,
                               dropout ? a->att_mask : NULL, keep, B, T, C, NH);
        zero_floats(acts->d_ln, NC);
        ngq_linear_backward(acts->d_ln, g->attn_c_attn_weight, g->attn_c_attn_bias, acts->d_qkv,
                            a->ln_1, w->attn_c_attn_weight, N, C, 3 * C);
        ngq_layernorm_backward(acts->d_residual, g->ln_1_weight, g->ln_1_bias, acts->d_ln,
                               a->residual_in, w->ln_1_weight, a->ln_1_mean, a->ln_1_rstd, N, C);
    }

    const float *d_embedding = acts->d_residual;
    if (dropout) {
        zero_floats(acts->d_branch, NC);
        ngq_dropout_backward(acts->d_branch, acts->d_residual, acts->embedding_mask, keep, NC);
        d_embedding = acts->d_branch;
    }
    ngq_embedding_backward(model->g.wte, model->g.wpe, d_embedding, acts->tokens, B, T, C);
    return NGQ_OK;
}
