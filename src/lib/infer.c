/* infer.c: loading fp32 or quantized checkpoints and running the forward pass
 * on them, for whole windows (evaluation) or one sequence with a KV cache
 * (generation). Quantized linear layers go through qmatmul; embeddings that
 * are quantized are dequantized one row at a time. */
#include "nanogptq/infer.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nanogptq/ops.h"
#include "nanogptq/qcheckpoint.h"
#include "nanogptq/qmatmul.h"

/* One weight of the model: fp32 data or a packed tensor. */
typedef struct {
    const float *fp;
    ngq_qtensor *q;
} weight;

typedef struct {
    weight ln_1_w, ln_1_b, c_attn_w, c_attn_b, attn_proj_w, attn_proj_b;
    weight ln_2_w, ln_2_b, c_fc_w, c_fc_b, mlp_proj_w, mlp_proj_b;
} block_weights;

struct ngq_infer {
    ngq_model_config cfg;
    ngq_vocab vocab;
    ngq_checkpoint_meta meta;
    ngq_infer_info info;
    int n_tensors;
    float **fp;        /* per tensor: fp32 copy, or NULL */
    ngq_qtensor **q;   /* per tensor: packed, or NULL */
    weight wte, wpe, ln_f_w, ln_f_b, lm_head;
    block_weights *blocks;
};

const ngq_model_config *ngq_infer_config(const ngq_infer *m) { return &m->cfg; }
const ngq_vocab *ngq_infer_vocab(const ngq_infer *m) { return &m->vocab; }
const ngq_checkpoint_meta *ngq_infer_meta(const ngq_infer *m) { return &m->meta; }
const ngq_infer_info *ngq_infer_get_info(const ngq_infer *m) { return &m->info; }

void ngq_infer_free(ngq_infer *m)
{
    if (!m) return;
    for (int i = 0; i < m->n_tensors; i++) {
        if (m->fp) free(m->fp[i]);
        if (m->q && m->q[i]) {
            ngq_qtensor_free(m->q[i]);
            free(m->q[i]);
        }
    }
    free(m->fp);
    free(m->q);
    free(m->blocks);
    ngq_vocab_free(&m->vocab);
    free(m);
}

static weight weight_of(const ngq_infer *m, int index)
{
    weight w = {NULL, NULL};
    if (index >= 0) {
        w.fp = m->fp[index];
        w.q = m->q[index];
    }
    return w;
}

/* Reads quantized tensor `name` (rows x cols) from its parts. */
static ngq_status read_qtensor(const ngq_st_file *f, const char *path, const char *name, int64_t rows, int64_t cols,
                               const ngq_qgrid *grid, ngq_qtensor **out, ngq_error *err)
{
    char g_idx_name[NGQ_TENSOR_NAME_MAX + 16];
    snprintf(g_idx_name, sizeof g_idx_name, "%s.g_idx", name);
    int with_g_idx = ngq_st_find_tensor(f, g_idx_name) != NULL;
    ngq_qtensor *q = calloc(1, sizeof *q);
    if (!q) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    ngq_status st = ngq_qtensor_init(q, rows, cols, grid, with_g_idx, err);
    if (st) {
        free(q);
        return ngq_error_prefix(err, "%s: %s", path, name);
    }
    ngq_qtensor_part parts[NGQ_QTENSOR_MAX_PARTS];
    int n = ngq_qtensor_get_parts(q, parts);
    for (int k = 0; k < n && st == NGQ_OK; k++) {
        char part_name[NGQ_TENSOR_NAME_MAX + 16];
        snprintf(part_name, sizeof part_name, "%s.%s", name, parts[k].name);
        const ngq_st_tensor *t = ngq_st_find_tensor(f, part_name);
        if (!t) {
            st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: tensor '%s' is missing", path, part_name);
            break;
        }
        st = ngq_qtensor_check_part(q, parts[k].name, ngq_st_dtype_name(t->dtype), t->ndim, t->shape, t->nbytes, err);
        if (st) {
            ngq_error_prefix(err, "%s: %s", path, part_name);
            break;
        }
        memcpy(parts[k].data, t->data, t->nbytes);
    }
    if (st == NGQ_OK && (st = ngq_qtensor_validate(q, err))) ngq_error_prefix(err, "%s: %s", path, name);
    if (st) {
        ngq_qtensor_free(q);
        free(q);
        return st;
    }
    *out = q;
    return NGQ_OK;
}

static int name_in_list(const cJSON *list, const char *name)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, list)
    {
        if (cJSON_IsString(item) && strcmp(item->valuestring, name) == 0) return 1;
    }
    return 0;
}

static ngq_status load_tensors(ngq_infer *m, const ngq_st_file *f, const char *path, ngq_error *err)
{
    int quantized = strcmp(m->meta.kind, "quantized") == 0;
    ngq_quant_meta qmeta;
    cJSON *qnames = NULL;
    ngq_status st = NGQ_OK;
    if (quantized) {
        if ((st = ngq_qcheckpoint_read_meta(f, path, &qmeta, err))) return st;
        const char *names = ngq_st_metadata_value(f, "nanogptq.quant.tensors");
        qnames = names ? cJSON_Parse(names) : NULL;
        if (!cJSON_IsArray(qnames)) {
            cJSON_Delete(qnames);
            return ngq_fail(err, NGQ_ERR_FORMAT, "%s: nanogptq.quant.tensors is missing or not a JSON array", path);
        }
        snprintf(m->info.method, sizeof m->info.method, "%s", qmeta.method);
        snprintf(m->info.label, sizeof m->info.label, "%s", qmeta.label);
        m->info.bits = qmeta.grid.bits;
        ngq_qgrid_format(&qmeta.grid, m->info.grid, sizeof m->info.grid, err);
    } else {
        snprintf(m->info.method, sizeof m->info.method, "fp32");
        snprintf(m->info.label, sizeof m->info.label, "fp32");
        m->info.bits = 32;
    }
    m->n_tensors = ngq_model_tensor_count(&m->cfg);
    m->fp = calloc((size_t)m->n_tensors, sizeof *m->fp);
    m->q = calloc((size_t)m->n_tensors, sizeof *m->q);
    if (!m->fp || !m->q) {
        cJSON_Delete(qnames);
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    }
    size_t stored = 0, params_total = 0;
    int64_t qweights = 0;
    double qbits = 0;
    for (int i = 0; i < m->n_tensors && st == NGQ_OK; i++) {
        ngq_tensor_info info;
        if ((st = ngq_model_tensor_info(&m->cfg, i, &info, err))) break;
        params_total += info.numel;
        if (qnames && name_in_list(qnames, info.name)) {
            if (info.ndim != 2) {
                st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: %s is 1-D and cannot be quantized", path, info.name);
                break;
            }
            st = read_qtensor(f, path, info.name, info.shape[0], info.shape[1], &qmeta.grid, &m->q[i], err);
            if (st == NGQ_OK) {
                ngq_qtensor_sizes sizes;
                ngq_qtensor_get_sizes(m->q[i], &sizes);
                qweights += (int64_t)info.numel;
                qbits += (double)sizes.total_bytes * 8.0;
                stored += ngq_qtensor_get_parts(m->q[i], (ngq_qtensor_part[NGQ_QTENSOR_MAX_PARTS]){0});
            }
            continue;
        }
        int64_t shape[2] = {info.shape[0], info.shape[1]};
        const ngq_st_tensor *t;
        if ((st = ngq_st_require_tensor(f, info.name, NGQ_ST_F32, info.ndim, shape, &t, err))) break;
        m->fp[i] = malloc(info.numel * sizeof(float));
        if (!m->fp[i]) {
            st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(m->fp[i], t->data, info.numel * sizeof(float));
        stored++;
    }
    if (st == NGQ_OK && m->cfg.tie_embeddings && ngq_st_find_tensor(f, "lm_head.weight")) stored++;
    if (st == NGQ_OK && qnames && (size_t)cJSON_GetArraySize(qnames) != (size_t)0) {
        const cJSON *item;
        cJSON_ArrayForEach(item, qnames)
        {
            ngq_tensor_info info;
            if (!cJSON_IsString(item) || ngq_model_tensor_find(&m->cfg, item->valuestring, &info, NULL) != NGQ_OK) {
                st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: nanogptq.quant.tensors names an unknown tensor", path);
                break;
            }
        }
    }
    if (st == NGQ_OK && stored != ngq_st_tensor_count(f))
        st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: %zu tensors stored, %zu expected for this model", path,
                      ngq_st_tensor_count(f), stored);
    cJSON_Delete(qnames);
    if (st) return st;
    m->info.quantized = quantized;
    m->info.quantized_weights = qweights;
    m->info.bits_per_weight = qweights ? qbits / (double)qweights : 32.0;
    m->info.model_bits_per_weight =
        params_total ? (qbits + 32.0 * (double)(params_total - (size_t)qweights)) / (double)params_total : 32.0;
    return NGQ_OK;
}

static int find_index(const ngq_model_config *cfg, int layer, ngq_tensor_kind kind)
{
    int n = ngq_model_tensor_count(cfg);
    for (int i = 0; i < n; i++) {
        ngq_tensor_info info;
        if (ngq_model_tensor_info(cfg, i, &info, NULL) == NGQ_OK && info.kind == kind && info.layer == layer) return i;
    }
    return -1;
}

ngq_status ngq_infer_load(ngq_infer **out, const char *path, ngq_error *err)
{
    *out = NULL;
    ngq_infer *m = calloc(1, sizeof *m);
    if (!m) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    ngq_st_file *f = NULL;
    ngq_status st = ngq_st_open(&f, path, err);
    if (st == NGQ_OK) st = ngq_checkpoint_read_metadata(f, path, &m->meta, &m->vocab, err);
    if (st == NGQ_OK) {
        m->cfg = m->meta.model;
        st = load_tensors(m, f, path, err);
    }
    ngq_st_close(f);
    if (st) {
        ngq_infer_free(m);
        return st;
    }
    struct stat sb;
    m->info.file_bytes = stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;

    const ngq_model_config *c = &m->cfg;
    m->blocks = calloc((size_t)c->n_layer, sizeof *m->blocks);
    if (!m->blocks) {
        ngq_infer_free(m);
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    }
    m->wte = weight_of(m, find_index(c, -1, NGQ_TENSOR_WTE));
    m->wpe = weight_of(m, find_index(c, -1, NGQ_TENSOR_WPE));
    m->ln_f_w = weight_of(m, find_index(c, -1, NGQ_TENSOR_LN_F_WEIGHT));
    m->ln_f_b = weight_of(m, find_index(c, -1, NGQ_TENSOR_LN_F_BIAS));
    m->lm_head = c->tie_embeddings ? m->wte : weight_of(m, find_index(c, -1, NGQ_TENSOR_LM_HEAD_WEIGHT));
    for (int l = 0; l < c->n_layer; l++) {
        block_weights *b = &m->blocks[l];
        b->ln_1_w = weight_of(m, find_index(c, l, NGQ_TENSOR_LN_1_WEIGHT));
        b->ln_1_b = weight_of(m, find_index(c, l, NGQ_TENSOR_LN_1_BIAS));
        b->c_attn_w = weight_of(m, find_index(c, l, NGQ_TENSOR_ATTN_C_ATTN_WEIGHT));
        b->c_attn_b = weight_of(m, find_index(c, l, NGQ_TENSOR_ATTN_C_ATTN_BIAS));
        b->attn_proj_w = weight_of(m, find_index(c, l, NGQ_TENSOR_ATTN_C_PROJ_WEIGHT));
        b->attn_proj_b = weight_of(m, find_index(c, l, NGQ_TENSOR_ATTN_C_PROJ_BIAS));
        b->ln_2_w = weight_of(m, find_index(c, l, NGQ_TENSOR_LN_2_WEIGHT));
        b->ln_2_b = weight_of(m, find_index(c, l, NGQ_TENSOR_LN_2_BIAS));
        b->c_fc_w = weight_of(m, find_index(c, l, NGQ_TENSOR_MLP_C_FC_WEIGHT));
        b->c_fc_b = weight_of(m, find_index(c, l, NGQ_TENSOR_MLP_C_FC_BIAS));
        b->mlp_proj_w = weight_of(m, find_index(c, l, NGQ_TENSOR_MLP_C_PROJ_WEIGHT));
        b->mlp_proj_b = weight_of(m, find_index(c, l, NGQ_TENSOR_MLP_C_PROJ_BIAS));
        if (b->ln_1_w.q || b->ln_2_w.q || b->ln_1_b.q || b->ln_2_b.q || b->c_attn_b.q || b->attn_proj_b.q ||
            b->c_fc_b.q || b->mlp_proj_b.q) {
            ngq_infer_free(m);
            return ngq_fail(err, NGQ_ERR_FORMAT, "%s: LayerNorm parameters and biases must be stored as fp32", path);
        }
    }
    *out = m;
    return NGQ_OK;
}

/* ---- shared pieces of the forward pass ------------------------------------- */

/* y (n, rows) = x (n, cols) @ W^T + bias */
static ngq_status linear(const weight *w, const weight *bias, const float *x, int n, int cols, int rows, float *y,
                         ngq_error *err)
{
    if (w->q) return ngq_qmatmul(w->q, x, n, bias->fp, y, err);
    if (n == 1) {
        /* one row (generation): a matrix-vector product, without sgemm's packing */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w->fp, cols, x, 1, 0.0f, y, 1);
        if (bias->fp)
            for (int r = 0; r < rows; r++) y[r] += bias->fp[r];
        return NGQ_OK;
    }
    ngq_linear_forward(y, x, w->fp, bias->fp, n, cols, rows);
    return NGQ_OK;
}

/* out (n, C) = wte[tokens] + wpe[pos0 + i] */
static void embed(const ngq_infer *m, const uint16_t *tokens, int n, int pos0, int T, float *out, float *row)
{
    const int C = m->cfg.n_embd;
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * C;
        int pos = pos0 + (T > 0 ? i % T : i);
        const float *te, *pe;
        if (m->wte.q) {
            ngq_qtensor_dequantize_row(m->wte.q, tokens[i], row);
            te = row;
        } else {
            te = m->wte.fp + (size_t)tokens[i] * C;
        }
        if (m->wpe.q) {
            ngq_qtensor_dequantize_row(m->wpe.q, pos, row + C);
            pe = row + C;
        } else {
            pe = m->wpe.fp + (size_t)pos * C;
        }
        for (int c = 0; c < C; c++) o[c] = te[c] + pe[c];
    }
}

static void add_into(float *x, const float *y, size_t n)
{
    ngq_residual_forward(x, x, y, n);
}

/* Buffers of one forward over n rows. */
typedef struct {
    float *x, *ln, *qkv, *atty, *tmp, *fch;
} row_buffers;

/* The attention step of block l: qkv (n, 3C) -> atty (n, C). Windows attend
 * within each sequence; a session attends over its KV cache. */
typedef void (*attention_step)(void *ctx, int layer, const float *qkv, float *atty, int n);

/* Runs every block on buf->x (n rows) in place. */
static ngq_status run_blocks(const ngq_infer *m, const row_buffers *buf, int n, attention_step attend, void *ctx,
                             ngq_error *err)
{
    const ngq_model_config *c = &m->cfg;
    const int C = c->n_embd;
    ngq_status st;
    for (int l = 0; l < c->n_layer; l++) {
        const block_weights *b = &m->blocks[l];
        ngq_layernorm_forward(buf->ln, NULL, NULL, buf->x, b->ln_1_w.fp, b->ln_1_b.fp, n, C);
        if ((st = linear(&b->c_attn_w, &b->c_attn_b, buf->ln, n, C, 3 * C, buf->qkv, err))) return st;
        attend(ctx, l, buf->qkv, buf->atty, n);
        if ((st = linear(&b->attn_proj_w, &b->attn_proj_b, buf->atty, n, C, C, buf->tmp, err))) return st;
        add_into(buf->x, buf->tmp, (size_t)n * C);
        ngq_layernorm_forward(buf->ln, NULL, NULL, buf->x, b->ln_2_w.fp, b->ln_2_b.fp, n, C);
        if ((st = linear(&b->c_fc_w, &b->c_fc_b, buf->ln, n, C, 4 * C, buf->fch, err))) return st;
        ngq_gelu_forward(buf->fch, buf->fch, (size_t)n * 4 * C);
        if ((st = linear(&b->mlp_proj_w, &b->mlp_proj_b, buf->fch, n, 4 * C, C, buf->tmp, err))) return st;
        add_into(buf->x, buf->tmp, (size_t)n * C);
    }
    return NGQ_OK;
}

/* ln_f, then the LM head: x (n, C) -> logits (n, V). ln is scratch (n, C). */
static ngq_status head(const ngq_infer *m, const float *x, float *ln, int n, float *logits, ngq_error *err)
{
    const int C = m->cfg.n_embd;
    ngq_layernorm_forward(ln, NULL, NULL, x, m->ln_f_w.fp, m->ln_f_b.fp, n, C);
    weight none = {NULL, NULL};
    return linear(&m->lm_head, &none, ln, n, C, m->cfg.vocab_size, logits, err);
}

/* ---- windows ----------------------------------------------------------------- */

struct ngq_infer_workspace {
    int max_B, max_T;
    float *x, *ln, *qkv, *atty, *tmp, *fch, *att, *logits, *row;
};

void ngq_infer_workspace_free(ngq_infer_workspace *ws)
{
    if (!ws) return;
    free(ws->x);
    free(ws->ln);
    free(ws->qkv);
    free(ws->atty);
    free(ws->tmp);
    free(ws->fch);
    free(ws->att);
    free(ws->logits);
    free(ws->row);
    free(ws);
}

ngq_status ngq_infer_workspace_init(ngq_infer_workspace **out, const ngq_infer *m, int max_B, int max_T,
                                    ngq_error *err)
{
    *out = NULL;
    const ngq_model_config *c = &m->cfg;
    if (max_B < 1 || max_T < 1 || max_T > c->block_size)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "workspace %d x %d for a model with block_size %d", max_B, max_T,
                        c->block_size);
    ngq_infer_workspace *ws = calloc(1, sizeof *ws);
    if (!ws) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    size_t N = (size_t)max_B * max_T, C = (size_t)c->n_embd;
    ws->max_B = max_B;
    ws->max_T = max_T;
    ws->x = malloc(N * C * sizeof(float));
    ws->ln = malloc(N * C * sizeof(float));
    ws->qkv = malloc(N * 3 * C * sizeof(float));
    ws->atty = malloc(N * C * sizeof(float));
    ws->tmp = malloc(N * C * sizeof(float));
    ws->fch = malloc(N * 4 * C * sizeof(float));
    ws->att = malloc(ngq_attention_matrix_elements(max_B, c->n_head, max_T) * sizeof(float));
    ws->logits = malloc(N * (size_t)c->vocab_size * sizeof(float));
    ws->row = malloc(2 * C * sizeof(float));
    if (!ws->x || !ws->ln || !ws->qkv || !ws->atty || !ws->tmp || !ws->fch || !ws->att || !ws->logits || !ws->row) {
        ngq_infer_workspace_free(ws);
        return ngq_fail(err, NGQ_ERR_NOMEM, "cannot allocate an inference workspace for %d x %d tokens", max_B,
                        max_T);
    }
    *out = ws;
    return NGQ_OK;
}

static ngq_status check_tokens(const ngq_infer *m, const uint16_t *tokens, size_t n, ngq_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (tokens[i] >= m->cfg.vocab_size)
            return ngq_fail(err, NGQ_ERR_FORMAT, "token %zu has id %u, outside the vocabulary of %d", i, tokens[i],
                            m->cfg.vocab_size);
    return NGQ_OK;
}

typedef struct {
    const ngq_infer *m;
    ngq_infer_workspace *ws;
    int B, T;
} window_attention;

/* Causal attention within each of the B sequences of T rows. */
static void attend_windows(void *ctx, int layer, const float *qkv, float *atty, int n)
{
    (void)layer;
    (void)n;
    const window_attention *w = ctx;
    ngq_attention_forward(atty, w->ws->att, NULL, qkv, NULL, 1.0f, w->B, w->T, w->m->cfg.n_embd, w->m->cfg.n_head);
}

ngq_status ngq_infer_forward(const ngq_infer *m, ngq_infer_workspace *ws, const uint16_t *tokens, int B, int T,
                             const float **logits, ngq_error *err)
{
    if (B < 1 || B > ws->max_B || T < 1 || T > ws->max_T)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "forward of %d x %d tokens on a %d x %d workspace", B, T, ws->max_B,
                        ws->max_T);
    ngq_status st = check_tokens(m, tokens, (size_t)B * T, err);
    if (st) return st;
    const int N = B * T;
    embed(m, tokens, N, 0, T, ws->x, ws->row);
    row_buffers buf = {ws->x, ws->ln, ws->qkv, ws->atty, ws->tmp, ws->fch};
    window_attention ctx = {m, ws, B, T};
    if ((st = run_blocks(m, &buf, N, attend_windows, &ctx, err)) || (st = head(m, ws->x, ws->ln, N, ws->logits, err)))
        return st;
    *logits = ws->logits;
    return NGQ_OK;
}

/* ---- sessions --------------------------------------------------------------------- */

struct ngq_infer_session {
    const ngq_infer *m;
    int len;           /* tokens in the cache */
    uint16_t *context; /* the tokens in the cache, block_size */
    uint16_t *pending; /* re-encoding buffer, 2 * block_size */
    float *k, *v;      /* n_layer x block_size x C each */
    float *x, *ln, *qkv, *atty, *tmp, *fch, *scratch, *logits, *row;
};

void ngq_infer_session_free(ngq_infer_session *s)
{
    if (!s) return;
    free(s->context);
    free(s->pending);
    free(s->k);
    free(s->v);
    free(s->x);
    free(s->ln);
    free(s->qkv);
    free(s->atty);
    free(s->tmp);
    free(s->fch);
    free(s->scratch);
    free(s->logits);
    free(s->row);
    free(s);
}

ngq_status ngq_infer_session_init(ngq_infer_session **out, const ngq_infer *m, ngq_error *err)
{
    *out = NULL;
    const ngq_model_config *c = &m->cfg;
    ngq_infer_session *s = calloc(1, sizeof *s);
    if (!s) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    size_t T = (size_t)c->block_size, C = (size_t)c->n_embd;
    s->m = m;
    s->context = malloc(T * sizeof *s->context);
    s->pending = malloc(2 * T * sizeof *s->pending);
    s->k = malloc((size_t)c->n_layer * T * C * sizeof(float));
    s->v = malloc((size_t)c->n_layer * T * C * sizeof(float));
    s->x = malloc(T * C * sizeof(float));
    s->ln = malloc(T * C * sizeof(float));
    s->qkv = malloc(T * 3 * C * sizeof(float));
    s->atty = malloc(T * C * sizeof(float));
    s->tmp = malloc(T * C * sizeof(float));
    s->fch = malloc(T * 4 * C * sizeof(float));
    s->scratch = malloc(ngq_attention_cached_scratch_floats(0, (int)T, c->n_head) * sizeof(float));
    s->logits = malloc((size_t)c->vocab_size * sizeof(float));
    s->row = malloc(2 * C * sizeof(float));
    if (!s->context || !s->pending || !s->k || !s->v || !s->x || !s->ln || !s->qkv || !s->atty || !s->tmp ||
        !s->fch || !s->scratch || !s->logits || !s->row) {
        ngq_infer_session_free(s);
        return ngq_fail(err, NGQ_ERR_NOMEM, "cannot allocate a generation session");
    }
    *out = s;
    return NGQ_OK;
}

void ngq_infer_session_reset(ngq_infer_session *s) { s->len = 0; }

int ngq_infer_session_length(const ngq_infer_session *s) { return s->len; }

/* Appends the new rows' keys and values to layer l's cache, then attends
 * over positions 0 .. len + n - 1. */
static void attend_cached(void *ctx, int layer, const float *qkv, float *atty, int n)
{
    ngq_infer_session *s = ctx;
    const ngq_model_config *c = &s->m->cfg;
    const int C = c->n_embd, T = c->block_size, pos0 = s->len;
    float *kc = s->k + (size_t)layer * T * C, *vc = s->v + (size_t)layer * T * C;
    for (int i = 0; i < n; i++) {
        memcpy(kc + (size_t)(pos0 + i) * C, qkv + (size_t)i * 3 * C + C, (size_t)C * sizeof(float));
        memcpy(vc + (size_t)(pos0 + i) * C, qkv + (size_t)i * 3 * C + 2 * C, (size_t)C * sizeof(float));
    }
    ngq_attention_forward_cached(atty, qkv, 3 * C, kc, C, vc, C, s->scratch, pos0, n, C, c->n_head);
}

/* Runs n tokens (all fitting: len + n <= block_size) through the model and
 * leaves the logits of the last one in s->logits. */
static ngq_status session_run(ngq_infer_session *s, const uint16_t *tokens, int n, ngq_error *err)
{
    const ngq_infer *m = s->m;
    const int C = m->cfg.n_embd;
    embed(m, tokens, n, s->len, 0, s->x, s->row);
    row_buffers buf = {s->x, s->ln, s->qkv, s->atty, s->tmp, s->fch};
    ngq_status st = run_blocks(m, &buf, n, attend_cached, s, err);
    if (st) return st;
    memcpy(s->context + s->len, tokens, (size_t)n * sizeof *tokens);
    s->len += n;
    return head(m, s->x + (size_t)(n - 1) * C, s->ln, 1, s->logits, err);
}

static ngq_status session_feed(ngq_infer_session *s, const uint16_t *tokens, int n, ngq_error *err);

ngq_status ngq_infer_session_feed(ngq_infer_session *s, const uint16_t *tokens, int n, const float **logits,
                                  ngq_error *err)
{
    if (n < 1) return ngq_fail(err, NGQ_ERR_INTERNAL, "feeding %d tokens", n);
    ngq_status st = check_tokens(s->m, tokens, (size_t)n, err);
    if (st) return st;
    /* A few new tokens are a few hundred thousand multiply-adds per layer:
     * less than the cost of waking a second thread for each of the dozens of
     * small kernels a token goes through. Run them on the calling thread
     * (results do not depend on the thread count). */
    const int saved_threads = omp_get_max_threads();
    if (n <= NGQ_INFER_SERIAL_TOKENS) omp_set_num_threads(1);
    st = session_feed(s, tokens, n, err);
    if (n <= NGQ_INFER_SERIAL_TOKENS) omp_set_num_threads(saved_threads);
    if (st) return st;
    *logits = s->logits;
    return NGQ_OK;
}

static ngq_status session_feed(ngq_infer_session *s, const uint16_t *tokens, int n, ngq_error *err)
{
    ngq_status st;
    const int T = s->m->cfg.block_size;
    if (s->len + n > T) {
        /* keep the last 3/4 of a block (and every new token), re-encode from position 0 */
        int keep = T - T / 4;
        if (keep < 1) keep = 1;
        if (n >= keep) {
            memcpy(s->pending, tokens + (n - keep), (size_t)keep * sizeof *tokens);
        } else {
            int from_context = keep - n;
            if (from_context > s->len) from_context = s->len;
            memcpy(s->pending, s->context + (s->len - from_context), (size_t)from_context * sizeof *tokens);
            memcpy(s->pending + from_context, tokens, (size_t)n * sizeof *tokens);
            keep = from_context + n;
        }
        s->len = 0;
        st = session_run(s, s->pending, keep, err);
    } else {
        st = session_run(s, tokens, n, err);
    }
    return st;
}
