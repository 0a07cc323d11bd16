/* quantize.c: the quantize step (see quantize.h). */
#include "nanogptq/quantize.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/gptq.h"
#include "nanogptq/model.h"
#include "nanogptq/ops.h"
#include "nanogptq/qcheckpoint.h"
#include "nanogptq/rng.h"
#include "nanogptq/tokens.h"

ngq_status ngq_quantize_options_from_config(const ngq_config *cfg, ngq_quantize_options *o, ngq_error *err)
{
    memset(o, 0, sizeof *o);
    const ngq_config *c = cfg;
    snprintf(o->method, sizeof o->method, "%.15s", c->quantize.method);
    if (c->quantize.int8_compat) {
        ngq_qgrid_int8_compat(&o->grid);
    } else {
        ngq_qgrid_default(&o->grid, c->quantize.bits);
        o->grid.symmetric = c->quantize.symmetric;
        const char *g = c->quantize.granularity;
        o->grid.granularity = strcmp(g, "tensor") == 0 ? NGQ_GRAN_TENSOR
                              : strcmp(g, "group") == 0 ? NGQ_GRAN_GROUP
                                                        : NGQ_GRAN_CHANNEL;
        o->grid.group_size = o->grid.granularity == NGQ_GRAN_GROUP ? c->quantize.group_size : 0;
        o->grid.range = strcmp(c->quantize.range, "mse") == 0 ? NGQ_RANGE_MSE : NGQ_RANGE_MINMAX;
        o->grid.scale_dtype = strcmp(c->quantize.scale_dtype, "f16") == 0 ? NGQ_SCALE_F16 : NGQ_SCALE_F32;
    }
    o->quantize_embedding = c->quantize.quantize_embedding;
    o->quantize_position = c->quantize.quantize_position;
    o->n_samples = c->quantize.n_samples;
    o->percdamp = c->quantize.percdamp;
    o->block_size = c->quantize.block_size;
    o->act_order = c->quantize.act_order;
    o->static_groups = c->quantize.static_groups;
    snprintf(o->calibration, sizeof o->calibration, "%s", c->quantize.calibration);
    o->seed = (uint64_t)c->run.seed;
    ngq_status st = ngq_qgrid_validate(&o->grid, 0, err);
    return st ? ngq_error_prefix(err, "[quantize]") : NGQ_OK;
}

ngq_status ngq_quantize_apply_variant(ngq_quantize_options *o, const char *variant, ngq_error *err)
{
    char method[16], gran[32];
    int bits, consumed = 0;
    if (sscanf(variant, " %15[a-z]:%d:%31[a-z0-9] %n", method, &bits, gran, &consumed) != 3 ||
        variant[consumed] != '\0')
        return ngq_fail(err, NGQ_ERR_USAGE, "variant '%s': expected METHOD:BITS:GRANULARITY, e.g. gptq:4:g64", variant);
    if (strcmp(method, "naive") != 0 && strcmp(method, "gptq") != 0)
        return ngq_fail(err, NGQ_ERR_USAGE, "variant '%s': method must be naive or gptq", variant);
    if (bits < NGQ_QUANT_MIN_BITS || bits > NGQ_QUANT_MAX_BITS)
        return ngq_fail(err, NGQ_ERR_USAGE, "variant '%s': bits must be in [2, 8]", variant);
    snprintf(o->method, sizeof o->method, "%s", method);
    ngq_qgrid grid = o->grid;
    grid.bits = bits;
    grid.int8_compat = 0;
    if (strcmp(gran, "tensor") == 0) {
        grid.granularity = NGQ_GRAN_TENSOR;
        grid.group_size = 0;
    } else if (strcmp(gran, "channel") == 0) {
        grid.granularity = NGQ_GRAN_CHANNEL;
        grid.group_size = 0;
    } else if (strcmp(gran, "int8compat") == 0) {
        if (bits != 8) return ngq_fail(err, NGQ_ERR_USAGE, "variant '%s': int8compat is an 8-bit grid", variant);
        ngq_qgrid_int8_compat(&grid);
    } else if (gran[0] == 'g') {
        char *end;
        errno = 0;
        long g = strtol(gran + 1, &end, 10);
        if (*end || errno || g < 2 || g > 65536)
            return ngq_fail(err, NGQ_ERR_USAGE, "variant '%s': group size '%s' must be gNN with 2 <= NN <= 65536",
                            variant, gran);
        grid.granularity = NGQ_GRAN_GROUP;
        grid.group_size = g;
    } else {
        return ngq_fail(err, NGQ_ERR_USAGE, "variant '%s': granularity must be tensor, channel, gNN or int8compat",
                        variant);
    }
    ngq_status st = ngq_qgrid_validate(&grid, 0, err);
    if (st) return ngq_error_prefix(err, "variant '%s'", variant);
    o->grid = grid;
    return NGQ_OK;
}

void ngq_quantize_options_label(const ngq_quantize_options *o, char *buf, size_t size)
{
    ngq_quant_label(o->method, &o->grid, buf, size);
}

void ngq_quantize_result_free(ngq_quantize_result *r)
{
    free(r->layers);
    memset(r, 0, sizeof *r);
}

ngq_status ngq_quantize_write_layer_csv(const char *path, const ngq_quantize_result *r, ngq_error *err)
{
    size_t cap = 128 + (size_t)r->n_layers * 200, n = 0;
    char *buf = malloc(cap);
    if (!buf) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    n += (size_t)snprintf(buf, cap, "layer,tensor,rows,cols,rtn_rel_error,gptq_rel_error,damping,escalations,fallback,seconds\n");
    for (int i = 0; i < r->n_layers; i++) {
        const ngq_quantize_layer_report *l = &r->layers[i];
        char rtn[32] = "", gptq[32] = "", damp[32] = "";
        if (!isnan(l->rtn_error)) snprintf(rtn, sizeof rtn, "%.6e", l->rtn_error);
        if (!isnan(l->gptq_error)) snprintf(gptq, sizeof gptq, "%.6e", l->gptq_error);
        if (!isnan(l->damping)) snprintf(damp, sizeof damp, "%g", l->damping);
        n += (size_t)snprintf(buf + n, cap - n, "%d,%s,%d,%d,%s,%s,%s,%d,%d,%.3f\n", l->layer, l->tensor, l->rows,
                              l->cols, rtn, gptq, damp, l->escalations, l->fallback, l->seconds);
    }
    ngq_status st = ngq_write_file_atomic(path, buf, n, err);
    free(buf);
    return st;
}

/* ---- calibration ---------------------------------------------------------- */

static ngq_status read_offsets(const char *path, size_t max_offset, int64_t **offsets, int *count, ngq_error *err)
{
    char *text;
    size_t size;
    ngq_status st = ngq_read_file(path, &text, &size, err);
    if (st) return st;
    int cap = 64, n = 0, line = 0;
    int64_t *out = malloc((size_t)cap * sizeof *out);
    char *p = text;
    while (out && *p) {
        line++;
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        char *s = p;
        while (*s == ' ' || *s == '\t' || *s == '\r') s++;
        if (*s && *s != '#') {
            char *end;
            errno = 0;
            long long v = strtoll(s, &end, 10);
            while (*end == ' ' || *end == '\t' || *end == '\r') end++;
            if (*end || errno || v < 0 || (size_t)v > max_offset) {
                ngq_fail(err, NGQ_ERR_FORMAT, "%s:%d: '%.40s' is not a window offset in [0, %zu]", path, line, s,
                         max_offset);
                free(out);
                free(text); /* s points into text: the message is made first */
                return NGQ_ERR_FORMAT;
            }
            if (n == cap) {
                cap *= 2;
                int64_t *grown = realloc(out, (size_t)cap * sizeof *out);
                if (!grown) break;
                out = grown;
            }
            out[n++] = v;
        }
        if (!nl) break;
        p = nl + 1;
    }
    free(text);
    if (!out) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    if (n == 0) {
        free(out);
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: no calibration offsets", path);
    }
    *offsets = out;
    *count = n;
    return NGQ_OK;
}

/* ---- the run --------------------------------------------------------------------- */

typedef struct {
    ngq_model model;
    ngq_vocab vocab;
    ngq_checkpoint_meta meta;
    ngq_tokens train;
    ngq_qtensor **q;          /* per tensor */
    const float **fp;         /* per tensor (NULL when quantized) */
    ngq_quantize_result *res;
    int64_t *offsets;
    int n_windows;
    /* calibration activations for the current block, N = n_windows * T rows */
    float *x, *ln, *qkv, *atty, *xmid, *fch, *tmp, *att, *deq;
} qstate;

static void qstate_free(qstate *s, int n_tensors)
{
    for (int i = 0; s->q && i < n_tensors; i++)
        if (s->q[i]) {
            ngq_qtensor_free(s->q[i]);
            free(s->q[i]);
        }
    free(s->q);
    free((void *)s->fp);
    free(s->offsets);
    free(s->x);
    free(s->ln);
    free(s->qkv);
    free(s->atty);
    free(s->xmid);
    free(s->fch);
    free(s->tmp);
    free(s->att);
    free(s->deq);
    ngq_tokens_free(&s->train);
    ngq_model_free(&s->model);
    ngq_vocab_free(&s->vocab);
}

static ngq_quantize_layer_report *add_report(qstate *s, const ngq_tensor_info *info)
{
    ngq_quantize_layer_report *r = &s->res->layers[s->res->n_layers++];
    memset(r, 0, sizeof *r);
    r->layer = info->layer;
    snprintf(r->tensor, sizeof r->tensor, "%s", info->name);
    r->rows = info->shape[0];
    r->cols = info->shape[1];
    r->rtn_error = r->gptq_error = r->damping = NAN;
    return r;
}

/* Quantizes tensor `index` by RTN (h == NULL, or method naive) or GPTQ with
 * Hessian h; measures both errors when h is given. Leaves the dequantized
 * weight in s->deq for the calibration forward. */
static ngq_status quantize_tensor(qstate *s, const ngq_quantize_options *o, int index, const double *h,
                                  ngq_quantize_callback cb, void *user, int total, ngq_error *err)
{
    ngq_tensor_info info;
    ngq_status st = ngq_model_tensor_info(&s->model.config, index, &info, err);
    if (st) return st;
    const float *w = s->model.params + info.offset;
    int64_t rows = info.shape[0], cols = info.shape[1];
    if ((st = ngq_qgrid_validate(&o->grid, cols, err))) return ngq_error_prefix(err, "%s", info.name);
    ngq_quantize_layer_report *r = add_report(s, &info);
    double t0 = ngq_now_seconds();
    ngq_qtensor *q = calloc(1, sizeof *q);
    if (!q) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    s->q[index] = q;
    s->fp[index] = NULL;
    int use_gptq = h && strcmp(o->method, "gptq") == 0;
    if (use_gptq) {
        ngq_gptq_options go;
        ngq_gptq_options_default(&go);
        go.block_size = o->block_size;
        go.percdamp = o->percdamp;
        go.act_order = o->act_order;
        go.static_groups = o->static_groups;
        ngq_gptq_report gr;
        if ((st = ngq_gptq_quantize(w, rows, cols, h, &o->grid, &go, q, &gr, err)))
            return ngq_error_prefix(err, "%s", info.name);
        r->damping = gr.fell_back_to_rtn ? NAN : gr.percdamp_used;
        r->escalations = gr.escalations;
        r->fallback = gr.fell_back_to_rtn;
        snprintf(r->note, sizeof r->note, "%s", gr.note);
        if ((st = ngq_gptq_relative_error(h, cols, w, rows, q, &r->gptq_error, err)))
            return ngq_error_prefix(err, "%s", info.name);
        ngq_qtensor rtn;
        if ((st = ngq_quant_rtn(w, rows, cols, &o->grid, &rtn, err))) return ngq_error_prefix(err, "%s", info.name);
        st = ngq_gptq_relative_error(h, cols, w, rows, &rtn, &r->rtn_error, err);
        ngq_qtensor_free(&rtn);
        if (st) return ngq_error_prefix(err, "%s", info.name);
    } else {
        if ((st = ngq_quant_rtn(w, rows, cols, &o->grid, q, err))) return ngq_error_prefix(err, "%s", info.name);
        if (h && (st = ngq_gptq_relative_error(h, cols, w, rows, q, &r->rtn_error, err)))
            return ngq_error_prefix(err, "%s", info.name);
    }
    ngq_qtensor_dequantize(q, s->deq);
    r->seconds = ngq_now_seconds() - t0;
    if (cb) cb(r, s->res->n_layers - 1, total, user);
    return NGQ_OK;
}

static ngq_status hessian_of(const float *x, int64_t n, int64_t cols, ngq_hessian *h, ngq_error *err)
{
    ngq_status st = ngq_hessian_init(h, cols, err);
    if (st == NGQ_OK) st = ngq_hessian_add(h, x, n, err);
    if (st == NGQ_OK) st = ngq_hessian_finalize(h, err);
    if (st) ngq_hessian_free(h);
    return st;
}

static int index_of(const ngq_model_config *c, int layer, ngq_tensor_kind kind)
{
    int n = ngq_model_tensor_count(c);
    for (int i = 0; i < n; i++) {
        ngq_tensor_info info;
        if (ngq_model_tensor_info(c, i, &info, NULL) == NGQ_OK && info.layer == layer && info.kind == kind) return i;
    }
    return -1;
}

static const float *bias_of(const ngq_model *m, int layer, ngq_tensor_kind kind)
{
    int i = index_of(&m->config, layer, kind);
    if (i < 0) return NULL;
    ngq_tensor_info info;
    ngq_model_tensor_info(&m->config, i, &info, NULL);
    return m->params + info.offset;
}

/* Quantizes one linear layer with GPTQ (or RTN) from its calibration input
 * x (N, cols), then computes y (N, rows) = x @ deq^T + bias. */
static ngq_status quantize_linear(qstate *s, const ngq_quantize_options *o, int layer, ngq_tensor_kind kind,
                                  ngq_tensor_kind bias_kind, const float *x, int64_t N, float *y,
                                  ngq_quantize_callback cb, void *user, int total, double *calib_seconds,
                                  ngq_error *err)
{
    int index = index_of(&s->model.config, layer, kind);
    ngq_tensor_info info;
    ngq_status st = ngq_model_tensor_info(&s->model.config, index, &info, err);
    if (st) return st;
    double t0 = ngq_now_seconds();
    ngq_hessian h;
    if ((st = hessian_of(x, N, info.shape[1], &h, err))) return ngq_error_prefix(err, "%s", info.name);
    *calib_seconds += ngq_now_seconds() - t0;
    st = quantize_tensor(s, o, index, h.h, cb, user, total, err);
    ngq_hessian_free(&h);
    if (st) return st;
    t0 = ngq_now_seconds();
    ngq_linear_forward(y, x, s->deq, bias_of(&s->model, layer, bias_kind), (int)N, info.shape[1], info.shape[0]);
    *calib_seconds += ngq_now_seconds() - t0;
    return NGQ_OK;
}

/* Refuses up front a calibration set whose activations do not fit in memory:
 * the buffers of run_gptq are only touched as the layers go, so without this
 * a too-large n_samples runs for a long time and ends in the out-of-memory
 * killer rather than a message. */
static ngq_status check_calibration_memory(const ngq_model_config *c, int W, int window_batch, ngq_error *err)
{
    const double N = (double)W * c->block_size, C = c->n_embd, widest = 4.0 * C;
    double need = 12.0 * N * C * sizeof(float) /* x, ln, qkv, atty, xmid, fch, tmp */
                  + (double)window_batch * c->n_head * (double)c->block_size * c->block_size * sizeof(float)
                  + N * sizeof(uint16_t) + widest * widest * (sizeof(double) + sizeof(float)); /* widest Hessian */
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    double have = (double)pages * (double)page_size;
    if (pages > 0 && page_size > 0 && need > have)
        return ngq_fail(err, NGQ_ERR_NOMEM,
                        "GPTQ calibration on %d windows of %d tokens needs %.2f GiB, more than the %.2f GiB of memory "
                        "here: lower [quantize] n_samples",
                        W, c->block_size, need / (1 << 30), have / (1 << 30));
    return NGQ_OK;
}

static ngq_status run_gptq(qstate *s, const ngq_config *cfg, const ngq_quantize_options *o, ngq_quantize_callback cb,
                           void *user, int total, ngq_error *err)
{
    const ngq_model_config *c = &s->model.config;
    const int T = c->block_size, C = c->n_embd, NH = c->n_head, W = s->n_windows;
    const int64_t N = (int64_t)W * T;
    (void)cfg;
    const int window_batch = 8;
    ngq_status st = check_calibration_memory(c, W, window_batch, err);
    if (st) return st;
    s->x = malloc((size_t)N * C * sizeof(float));
    s->ln = malloc((size_t)N * C * sizeof(float));
    s->qkv = malloc((size_t)N * 3 * C * sizeof(float));
    s->atty = malloc((size_t)N * C * sizeof(float));
    s->xmid = malloc((size_t)N * C * sizeof(float));
    s->fch = malloc((size_t)N * 4 * C * sizeof(float));
    s->tmp = malloc((size_t)N * C * sizeof(float));
    s->att = malloc(ngq_attention_matrix_elements(window_batch, NH, T) * sizeof(float));
    if (!s->x || !s->ln || !s->qkv || !s->atty || !s->xmid || !s->fch || !s->tmp || !s->att)
        return ngq_fail(err, NGQ_ERR_NOMEM, "cannot hold calibration activations for %d windows of %d tokens", W, T);
    double calib = 0, t0 = ngq_now_seconds();
    /* embeddings of the calibration windows */
    uint16_t *tokens = malloc((size_t)N * sizeof *tokens);
    if (!tokens) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    for (int w = 0; w < W; w++)
        memcpy(tokens + (size_t)w * T, s->train.tokens + s->offsets[w], (size_t)T * sizeof *tokens);
    ngq_embedding_forward(s->x, tokens, s->model.p.wte, s->model.p.wpe, W, T, C);
    free(tokens);
    calib += ngq_now_seconds() - t0;
    for (int l = 0; l < c->n_layer; l++) {
        const ngq_block_tensors *b = &s->model.p.blocks[l];
        t0 = ngq_now_seconds();
        ngq_layernorm_forward(s->ln, NULL, NULL, s->x, b->ln_1_weight, b->ln_1_bias, (int)N, C);
        calib += ngq_now_seconds() - t0;
        if ((st = quantize_linear(s, o, l, NGQ_TENSOR_ATTN_C_ATTN_WEIGHT, NGQ_TENSOR_ATTN_C_ATTN_BIAS, s->ln, N, s->qkv,
                                  cb, user, total, &calib, err)))
            return st;
        t0 = ngq_now_seconds();
        for (int w0 = 0; w0 < W; w0 += window_batch) {
            int nb = W - w0 < window_batch ? W - w0 : window_batch;
            ngq_attention_forward(s->atty + (size_t)w0 * T * C, s->att, NULL, s->qkv + (size_t)w0 * T * 3 * C, NULL,
                                  1.0f, nb, T, C, NH);
        }
        calib += ngq_now_seconds() - t0;
        if ((st = quantize_linear(s, o, l, NGQ_TENSOR_ATTN_C_PROJ_WEIGHT, NGQ_TENSOR_ATTN_C_PROJ_BIAS, s->atty, N,
                                  s->tmp, cb, user, total, &calib, err)))
            return st;
        t0 = ngq_now_seconds();
        ngq_residual_forward(s->xmid, s->x, s->tmp, (size_t)N * C);
        ngq_layernorm_forward(s->ln, NULL, NULL, s->xmid, b->ln_2_weight, b->ln_2_bias, (int)N, C);
        calib += ngq_now_seconds() - t0;
        if ((st = quantize_linear(s, o, l, NGQ_TENSOR_MLP_C_FC_WEIGHT, NGQ_TENSOR_MLP_C_FC_BIAS, s->ln, N, s->fch, cb,
                                  user, total, &calib, err)))
            return st;
        t0 = ngq_now_seconds();
        ngq_gelu_forward(s->fch, s->fch, (size_t)N * 4 * C);
        calib += ngq_now_seconds() - t0;
        if ((st = quantize_linear(s, o, l, NGQ_TENSOR_MLP_C_PROJ_WEIGHT, NGQ_TENSOR_MLP_C_PROJ_BIAS, s->fch, N,
                                  s->tmp, cb, user, total, &calib, err)))
            return st;
        t0 = ngq_now_seconds();
        ngq_residual_forward(s->x, s->xmid, s->tmp, (size_t)N * C);
        calib += ngq_now_seconds() - t0;
    }
    if (o->quantize_embedding) {
        /* the (tied) head sees ln_f's outputs */
        t0 = ngq_now_seconds();
        ngq_layernorm_forward(s->ln, NULL, NULL, s->x, s->model.p.ln_f_weight, s->model.p.ln_f_bias, (int)N, C);
        ngq_hessian h;
        if ((st = hessian_of(s->ln, N, C, &h, err))) return st;
        calib += ngq_now_seconds() - t0;
        st = quantize_tensor(s, o, index_of(c, -1, NGQ_TENSOR_WTE), h.h, cb, user, total, err);
        ngq_hessian_free(&h);
        if (st) return st;
    }
    s->res->calibration_seconds = calib;
    return NGQ_OK;
}

ngq_status ngq_quantize_run(const ngq_config *cfg, const char *in_path, const char *out_path,
                            const ngq_quantize_options *o, ngq_quantize_callback callback, void *user,
                            ngq_quantize_result *result, ngq_error *err)
{
    double t_start = ngq_now_seconds();
    memset(result, 0, sizeof *result);
    ngq_quantize_options_label(o, result->label, sizeof result->label);
    qstate s;
    memset(&s, 0, sizeof s);
    s.res = result;
    int n_tensors = 0;
    char *calib_json = NULL;
    ngq_status st = ngq_checkpoint_load(in_path, &s.model, &s.vocab, &s.meta, err);
    if (st) return st;
    const ngq_model_config *c = &s.model.config;
    n_tensors = ngq_model_tensor_count(c);
    s.q = calloc((size_t)n_tensors, sizeof *s.q);
    s.fp = calloc((size_t)n_tensors, sizeof *s.fp);
    result->layers = calloc((size_t)n_tensors, sizeof *result->layers);
    size_t max_numel = 0;
    for (int i = 0; i < n_tensors; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(c, i, &info, NULL);
        if (info.numel > max_numel) max_numel = info.numel;
    }
    s.deq = malloc(max_numel * sizeof(float));
    if (!s.q || !s.fp || !result->layers || !s.deq) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    int total = 0;
    for (int i = 0; i < n_tensors; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(c, i, &info, NULL);
        s.fp[i] = s.model.params + info.offset;
        int target = info.is_block_linear || (info.kind == NGQ_TENSOR_WTE && o->quantize_embedding) ||
                     (info.kind == NGQ_TENSOR_WPE && o->quantize_position);
        if (target && (st = ngq_qgrid_validate(&o->grid, info.shape[1], err))) {
            ngq_error_prefix(err, "%s (%d x %d)", info.name, info.shape[0], info.shape[1]);
            goto done;
        }
        total += target;
    }
    if (strcmp(o->method, "gptq") == 0) {
        char *train_path = ngq_config_data_path(cfg, "train.tok");
        st = ngq_tokens_read(&s.train, train_path, err);
        if (st == NGQ_OK && s.train.vocab_hash != s.vocab.hash)
            st = ngq_fail(err, NGQ_ERR_FORMAT, "%s was made with another vocabulary than %s", train_path, in_path);
        const int T = c->block_size;
        if (st == NGQ_OK && s.train.count < (size_t)T + 1)
            st = ngq_fail(err, NGQ_ERR_FORMAT, "%s holds fewer than block_size + 1 tokens", train_path);
        free(train_path);
        if (st) goto done;
        size_t max_offset = s.train.count - (size_t)T - 1;
        if (o->calibration[0]) {
            if ((st = read_offsets(o->calibration, max_offset, &s.offsets, &s.n_windows, err))) goto done;
        } else {
            s.n_windows = o->n_samples;
            s.offsets = malloc((size_t)s.n_windows * sizeof *s.offsets);
            if (!s.offsets) {
                st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
                goto done;
            }
            ngq_rng rng;
            ngq_rng_seed(&rng, o->seed, 3);
            for (int w = 0; w < s.n_windows; w++) s.offsets[w] = ngq_rng_below(&rng, (uint32_t)max_offset + 1);
        }
        size_t cap = 4 + (size_t)s.n_windows * 22, n = 0;
        calib_json = malloc(cap);
        if (!calib_json) {
            st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
            goto done;
        }
        n += (size_t)snprintf(calib_json, cap, "[");
        for (int w = 0; w < s.n_windows; w++)
            n += (size_t)snprintf(calib_json + n, cap - n, "%s%lld", w ? ", " : "", (long long)s.offsets[w]);
        snprintf(calib_json + n, cap - n, "]");
        if ((st = run_gptq(&s, cfg, o, callback, user, total, err))) goto done;
    } else {
        for (int i = 0; i < n_tensors; i++) {
            ngq_tensor_info info;
            ngq_model_tensor_info(c, i, &info, NULL);
            if (info.is_block_linear || (info.kind == NGQ_TENSOR_WTE && o->quantize_embedding))
                if ((st = quantize_tensor(&s, o, i, NULL, callback, user, total, err))) goto done;
        }
    }
    if (o->quantize_position) {
        int i = index_of(c, -1, NGQ_TENSOR_WPE);
        if ((st = quantize_tensor(&s, o, i, NULL, callback, user, total, err))) goto done;
    }

    ngq_quant_meta qmeta = {.grid = o->grid,
                            .act_order = o->act_order,
                            .static_groups = o->static_groups,
                            .block_size = o->block_size,
                            .n_samples = s.n_windows,
                            .percdamp = o->percdamp,
                            .calibration_json = calib_json};
    snprintf(qmeta.method, sizeof qmeta.method, "%s", o->method);
    snprintf(qmeta.label, sizeof qmeta.label, "%s", result->label);
    if ((st = ngq_qcheckpoint_save(out_path, c, &s.vocab, &s.meta, &qmeta, s.fp, (const ngq_qtensor *const *)s.q,
                                   err)))
        goto done;
    int64_t qbits = 0;
    for (int i = 0; i < n_tensors; i++)
        if (s.q[i]) {
            ngq_qtensor_sizes sizes;
            ngq_qtensor_get_sizes(s.q[i], &sizes);
            qbits += sizes.total_bytes * 8;
            result->quantized_weights += s.q[i]->rows * s.q[i]->cols;
        }
    result->bits_per_weight = result->quantized_weights ? (double)qbits / (double)result->quantized_weights : 32.0;
    struct stat sb;
    result->input_bytes = stat(in_path, &sb) == 0 ? (int64_t)sb.st_size : -1;
    result->output_bytes = stat(out_path, &sb) == 0 ? (int64_t)sb.st_size : -1;
done:
    result->seconds = ngq_now_seconds() - t_start;
    free(calib_json);
    qstate_free(&s, n_tensors);
    if (st) {
        free(result->layers);
        result->layers = NULL;
        result->n_layers = 0;
    }
    return st;
}
