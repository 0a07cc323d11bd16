/* checkpoint.c: fp32 model checkpoints and training state (see checkpoint.h). */
#include "nanogptq/checkpoint.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- metadata ------------------------------------------------------------- */

static char *model_config_json(const ngq_model_config *c)
{
    return ngq_strdup_printf("{\"vocab_size\": %d, \"block_size\": %d, \"n_layer\": %d, \"n_head\": %d, "
                             "\"n_embd\": %d, \"bias\": %s, \"tie_embeddings\": %s, \"dropout\": %.9g, "
                             "\"init_std\": %.9g}",
                             c->vocab_size, c->block_size, c->n_layer, c->n_head, c->n_embd,
                             c->bias ? "true" : "false", c->tie_embeddings ? "true" : "false", (double)c->dropout,
                             (double)c->init_std);
}

static char *vocab_json(const ngq_vocab *v)
{
    size_t cap = 16 + (size_t)v->size * 9, n = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    s[n++] = '[';
    for (int i = 0; i < v->size - 1; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s%" PRIu32, i ? ", " : "", v->codepoints[i]);
    snprintf(s + n, cap - n, "]");
    return s;
}

ngq_status ngq_checkpoint_add_metadata(ngq_st_writer *w, const ngq_checkpoint_meta *meta, const ngq_vocab *vocab,
                                       ngq_error *err)
{
    char *model = model_config_json(&meta->model);
    char *voc = vocab_json(vocab);
    char step[32], seed[32], tokens[32], loss[32], version[8];
    snprintf(step, sizeof step, "%" PRId64, meta->step);
    snprintf(seed, sizeof seed, "%" PRIu64, meta->seed);
    snprintf(tokens, sizeof tokens, "%" PRId64, meta->tokens_seen);
    snprintf(loss, sizeof loss, "%.9g", meta->val_loss);
    snprintf(version, sizeof version, "%d", NGQ_CHECKPOINT_VERSION);
    ngq_status st = NGQ_OK;
    if (!model || !voc) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    const char *pairs[][2] = {
        {"format", "pt"},
        {"nanogptq.format", NGQ_CHECKPOINT_FORMAT},
        {"nanogptq.format_version", version},
        {"nanogptq.kind", meta->kind},
        {"nanogptq.model", model},
        {"nanogptq.vocab", voc},
        {"nanogptq.step", step},
        {"nanogptq.seed", seed},
        {"nanogptq.tokens_seen", tokens},
        {"nanogptq.val_loss", loss},
    };
    for (size_t i = 0; st == NGQ_OK && i < sizeof pairs / sizeof pairs[0]; i++)
        st = ngq_st_writer_add_metadata(w, pairs[i][0], pairs[i][1], err);
    free(model);
    free(voc);
    return st;
}

static ngq_status json_int(const cJSON *obj, const char *key, int *out, const char *path, ngq_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(item) || item->valuedouble != (double)(int)item->valuedouble)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: metadata nanogptq.model: '%s' missing or not an integer", path, key);
    *out = (int)item->valuedouble;
    return NGQ_OK;
}

static ngq_status json_bool(const cJSON *obj, const char *key, int *out, const char *path, ngq_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsBool(item))
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: metadata nanogptq.model: '%s' missing or not true/false", path, key);
    *out = cJSON_IsTrue(item);
    return NGQ_OK;
}

static ngq_status json_float(const cJSON *obj, const char *key, float *out, const char *path, ngq_error *err)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(item))
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: metadata nanogptq.model: '%s' missing or not a number", path, key);
    *out = (float)item->valuedouble;
    return NGQ_OK;
}

static ngq_status parse_i64(const char *text, int64_t *out)
{
    if (!text || !*text) return NGQ_ERR_FORMAT;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (*end || errno) return NGQ_ERR_FORMAT;
    *out = v;
    return NGQ_OK;
}

static const char *require_meta(const ngq_st_file *f, const char *key, const char *path, ngq_error *err)
{
    const char *v = ngq_st_metadata_value(f, key);
    if (!v) ngq_fail(err, NGQ_ERR_FORMAT, "%s: metadata key '%s' is missing (not a nanogptq checkpoint?)", path, key);
    return v;
}

ngq_status ngq_checkpoint_read_metadata(const ngq_st_file *f, const char *path, ngq_checkpoint_meta *meta,
                                        ngq_vocab *vocab, ngq_error *err)
{
    memset(meta, 0, sizeof *meta);
    memset(vocab, 0, sizeof *vocab);
    const char *format = require_meta(f, "nanogptq.format", path, err);
    if (!format) return NGQ_ERR_FORMAT;
    if (strcmp(format, NGQ_CHECKPOINT_FORMAT) != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: nanogptq.format is '%s', expected '%s'", path, format,
                        NGQ_CHECKPOINT_FORMAT);
    const char *version = require_meta(f, "nanogptq.format_version", path, err);
    if (!version) return NGQ_ERR_FORMAT;
    if (strcmp(version, "1") != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: checkpoint format version %s is not supported (this build reads %d)",
                        path, version, NGQ_CHECKPOINT_VERSION);
    const char *kind = require_meta(f, "nanogptq.kind", path, err);
    if (!kind) return NGQ_ERR_FORMAT;
    if (strcmp(kind, "fp32") != 0 && strcmp(kind, "quantized") != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: nanogptq.kind '%s' is neither fp32 nor quantized", path, kind);
    snprintf(meta->kind, sizeof meta->kind, "%s", kind);

    const char *model_text = require_meta(f, "nanogptq.model", path, err);
    if (!model_text) return NGQ_ERR_FORMAT;
    cJSON *model = cJSON_Parse(model_text);
    if (!cJSON_IsObject(model)) {
        cJSON_Delete(model);
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: metadata nanogptq.model is not a JSON object", path);
    }
    ngq_model_config *c = &meta->model;
    ngq_status st;
    if ((st = json_int(model, "vocab_size", &c->vocab_size, path, err)) ||
        (st = json_int(model, "block_size", &c->block_size, path, err)) ||
        (st = json_int(model, "n_layer", &c->n_layer, path, err)) ||
        (st = json_int(model, "n_head", &c->n_head, path, err)) ||
        (st = json_int(model, "n_embd", &c->n_embd, path, err)) ||
        (st = json_bool(model, "bias", &c->bias, path, err)) ||
        (st = json_bool(model, "tie_embeddings", &c->tie_embeddings, path, err)) ||
        (st = json_float(model, "dropout", &c->dropout, path, err)) ||
        (st = json_float(model, "init_std", &c->init_std, path, err))) {
        cJSON_Delete(model);
        return st;
    }
    cJSON_Delete(model);
    if ((st = ngq_model_config_validate(c, err))) return ngq_error_prefix(err, "%s: nanogptq.model", path);

    const char *vocab_text = require_meta(f, "nanogptq.vocab", path, err);
    if (!vocab_text) return NGQ_ERR_FORMAT;
    cJSON *arr = cJSON_Parse(vocab_text);
    int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
    if (n < 1 || n + 1 != c->vocab_size) {
        cJSON_Delete(arr);
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: metadata nanogptq.vocab must list vocab_size - 1 = %d code points",
                        path, c->vocab_size - 1);
    }
    uint32_t *cps = malloc((size_t)n * sizeof *cps);
    if (!cps) {
        cJSON_Delete(arr);
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    }
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr)
    {
        if (!cJSON_IsNumber(item) || item->valuedouble < 0 || item->valuedouble > 0x10FFFF ||
            item->valuedouble != (double)(uint32_t)item->valuedouble)
            break;
        cps[i++] = (uint32_t)item->valuedouble;
    }
    cJSON_Delete(arr);
    if (i != n) {
        free(cps);
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: metadata nanogptq.vocab entry %d is not a code point", path, i);
    }
    st = ngq_vocab_from_codepoints(vocab, cps, n, err);
    free(cps);
    if (st) return ngq_error_prefix(err, "%s: nanogptq.vocab", path);

    const char *step = require_meta(f, "nanogptq.step", path, err);
    const char *seed = step ? require_meta(f, "nanogptq.seed", path, err) : NULL;
    const char *tokens = seed ? require_meta(f, "nanogptq.tokens_seen", path, err) : NULL;
    const char *loss = tokens ? require_meta(f, "nanogptq.val_loss", path, err) : NULL;
    int64_t seed_value = 0;
    if (!loss || parse_i64(step, &meta->step) || parse_i64(seed, &seed_value) ||
        parse_i64(tokens, &meta->tokens_seen)) {
        ngq_vocab_free(vocab);
        return loss ? ngq_fail(err, NGQ_ERR_FORMAT, "%s: step, seed or tokens_seen metadata is not an integer", path)
                    : NGQ_ERR_FORMAT;
    }
    meta->seed = (uint64_t)seed_value;
    meta->val_loss = strtod(loss, NULL);
    const char *sum = ngq_st_metadata_value(f, NGQ_ST_CHECKSUM_KEY);
    snprintf(meta->checksum, sizeof meta->checksum, "%s", sum ? sum : "");
    return NGQ_OK;
}

/* ---- fp32 checkpoints ------------------------------------------------------ */

ngq_status ngq_checkpoint_save(const char *path, const ngq_model *model, const ngq_vocab *vocab,
                               const ngq_checkpoint_meta *meta, char checksum[40], ngq_error *err)
{
    const ngq_model_config *cfg = &model->config;
    if (vocab->size != cfg->vocab_size)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "vocabulary of %d ids for a model of vocab_size %d", vocab->size,
                        cfg->vocab_size);
    ngq_checkpoint_meta m = *meta;
    m.model = *cfg;
    snprintf(m.kind, sizeof m.kind, "fp32");
    ngq_st_writer w;
    ngq_st_writer_init(&w);
    ngq_status st = ngq_checkpoint_add_metadata(&w, &m, vocab, err);
    uint64_t hash = NGQ_FNV1A64_INIT;
    int count = ngq_model_tensor_count(cfg);
    for (int i = 0; st == NGQ_OK && i < count; i++) {
        ngq_tensor_info info;
        if ((st = ngq_model_tensor_info(cfg, i, &info, err))) break;
        int64_t shape[2] = {info.shape[0], info.shape[1]};
        const float *data = model->params + info.offset;
        st = ngq_st_writer_add_tensor(&w, info.name, NGQ_ST_F32, info.ndim, shape, data, info.numel * sizeof(float),
                                      err);
        hash = ngq_fnv1a64(data, info.numel * sizeof(float), hash);
    }
    if (st == NGQ_OK && cfg->tie_embeddings) {
        /* nanoGPT's state_dict lists the tied head too; store it so strict loading works */
        int64_t shape[2] = {cfg->vocab_size, cfg->n_embd};
        size_t bytes = (size_t)cfg->vocab_size * (size_t)cfg->n_embd * sizeof(float);
        st = ngq_st_writer_add_tensor(&w, "lm_head.weight", NGQ_ST_F32, 2, shape, model->p.wte, bytes, err);
        hash = ngq_fnv1a64(model->p.wte, bytes, hash);
    }
    if (st == NGQ_OK) st = ngq_st_writer_write(&w, path, err);
    ngq_st_writer_free(&w);
    if (st == NGQ_OK && checksum) snprintf(checksum, 40, "fnv1a64:%016" PRIx64, hash);
    return st;
}

ngq_status ngq_checkpoint_load(const char *path, ngq_model *model, ngq_vocab *vocab, ngq_checkpoint_meta *meta,
                               ngq_error *err)
{
    memset(model, 0, sizeof *model);
    ngq_st_file *f = NULL;
    ngq_status st = ngq_st_open(&f, path, err);
    if (st) return st;
    if ((st = ngq_checkpoint_read_metadata(f, path, meta, vocab, err))) goto done;
    if (strcmp(meta->kind, "fp32") != 0) {
        st = ngq_fail(err, NGQ_ERR_FORMAT,
                      "%s is a %s checkpoint; this step needs an fp32 one (quantize reads the trained checkpoint)", path,
                      meta->kind);
        goto fail_vocab;
    }
    if ((st = ngq_model_init(model, &meta->model, err))) goto fail_vocab;
    int count = ngq_model_tensor_count(&meta->model);
    size_t expected = (size_t)count + (meta->model.tie_embeddings ? 1 : 0);
    for (int i = 0; i < count; i++) {
        ngq_tensor_info info;
        const ngq_st_tensor *t;
        if ((st = ngq_model_tensor_info(&meta->model, i, &info, err))) goto fail_model;
        int64_t shape[2] = {info.shape[0], info.shape[1]};
        if ((st = ngq_st_require_tensor(f, info.name, NGQ_ST_F32, info.ndim, shape, &t, err))) goto fail_model;
        memcpy(model->params + info.offset, t->data, t->nbytes);
    }
    if (meta->model.tie_embeddings) {
        const ngq_st_tensor *head = ngq_st_find_tensor(f, "lm_head.weight");
        size_t bytes = (size_t)meta->model.vocab_size * (size_t)meta->model.n_embd * sizeof(float);
        if (!head) {
            expected--;
        } else if (head->dtype != NGQ_ST_F32 || head->nbytes != bytes || memcmp(head->data, model->p.wte, bytes) != 0) {
            st = ngq_fail(err, NGQ_ERR_FORMAT,
                          "%s: the model ties its LM head to wte, but lm_head.weight differs from transformer.wte.weight",
                          path);
            goto fail_model;
        }
    }
    if (ngq_st_tensor_count(f) != expected) {
        st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: %zu tensors, expected %zu for this model configuration", path,
                      ngq_st_tensor_count(f), expected);
        goto fail_model;
    }
    goto done;
fail_model:
    ngq_model_free(model);
fail_vocab:
    ngq_vocab_free(vocab);
done:
    ngq_st_close(f);
    return st;
}

/* ---- training state ----------------------------------------------------------- */

ngq_status ngq_train_state_save(const char *path, const ngq_adamw *opt, const ngq_train_state *state,
                                ngq_error *err)
{
    ngq_st_writer w;
    ngq_st_writer_init(&w);
    char step[32], t[32], rng_state[40], rng_inc[40], best[40], tokens[32];
    snprintf(step, sizeof step, "%" PRId64, state->step);
    snprintf(t, sizeof t, "%" PRId64, opt->t);
    snprintf(rng_state, sizeof rng_state, "%016" PRIx64, state->data_rng.state);
    snprintf(rng_inc, sizeof rng_inc, "%016" PRIx64, state->data_rng.inc);
    snprintf(best, sizeof best, "%a", state->best_val_loss); /* hex float: exact */
    snprintf(tokens, sizeof tokens, "%" PRId64, state->tokens_seen);
    const char *pairs[][2] = {
        {"nanogptq.format", NGQ_TRAIN_STATE_FORMAT},
        {"nanogptq.format_version", "1"},
        {"nanogptq.step", step},
        {"nanogptq.adamw_t", t},
        {"nanogptq.data_rng_state", rng_state},
        {"nanogptq.data_rng_inc", rng_inc},
        {"nanogptq.best_val_loss", best},
        {"nanogptq.tokens_seen", tokens},
        {"nanogptq.checkpoint_checksum", state->checkpoint_checksum},
    };
    ngq_status st = NGQ_OK;
    for (size_t i = 0; st == NGQ_OK && i < sizeof pairs / sizeof pairs[0]; i++)
        st = ngq_st_writer_add_metadata(&w, pairs[i][0], pairs[i][1], err);
    int64_t shape[1] = {(int64_t)opt->n};
    if (st == NGQ_OK) st = ngq_st_writer_add_tensor(&w, "adamw.m", NGQ_ST_F32, 1, shape, opt->m, opt->n * 4, err);
    if (st == NGQ_OK) st = ngq_st_writer_add_tensor(&w, "adamw.v", NGQ_ST_F32, 1, shape, opt->v, opt->n * 4, err);
    if (st == NGQ_OK) st = ngq_st_writer_write(&w, path, err);
    ngq_st_writer_free(&w);
    return st;
}

ngq_status ngq_train_state_load(const char *path, ngq_adamw *opt, ngq_train_state *state, ngq_error *err)
{
    memset(state, 0, sizeof *state);
    ngq_st_file *f = NULL;
    ngq_status st = ngq_st_open(&f, path, err);
    if (st) return st;
    const char *format = ngq_st_metadata_value(f, "nanogptq.format");
    const char *step = ngq_st_metadata_value(f, "nanogptq.step");
    const char *t = ngq_st_metadata_value(f, "nanogptq.adamw_t");
    const char *rs = ngq_st_metadata_value(f, "nanogptq.data_rng_state");
    const char *ri = ngq_st_metadata_value(f, "nanogptq.data_rng_inc");
    const char *best = ngq_st_metadata_value(f, "nanogptq.best_val_loss");
    const char *tokens = ngq_st_metadata_value(f, "nanogptq.tokens_seen");
    const char *sum = ngq_st_metadata_value(f, "nanogptq.checkpoint_checksum");
    const ngq_st_tensor *m, *v;
    int64_t shape[1] = {(int64_t)opt->n};
    char *end1 = NULL, *end2 = NULL;
    if (!format || strcmp(format, NGQ_TRAIN_STATE_FORMAT) != 0) {
        st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: not a nanogptq training state", path);
    } else if (!rs || !ri || !best || !sum || parse_i64(step, &state->step) || parse_i64(t, &opt->t) ||
               parse_i64(tokens, &state->tokens_seen)) {
        st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: training-state metadata missing or malformed", path);
    } else {
        state->data_rng.state = strtoull(rs, &end1, 16);
        state->data_rng.inc = strtoull(ri, &end2, 16);
        state->best_val_loss = strtod(best, NULL);
        snprintf(state->checkpoint_checksum, sizeof state->checkpoint_checksum, "%s", sum);
        if (*end1 || *end2 || !(state->data_rng.inc & 1))
            st = ngq_fail(err, NGQ_ERR_FORMAT, "%s: data RNG state is malformed", path);
        else if ((st = ngq_st_require_tensor(f, "adamw.m", NGQ_ST_F32, 1, shape, &m, err)) == NGQ_OK &&
                 (st = ngq_st_require_tensor(f, "adamw.v", NGQ_ST_F32, 1, shape, &v, err)) == NGQ_OK) {
            memcpy(opt->m, m->data, opt->n * 4);
            memcpy(opt->v, v->data, opt->n * 4);
        }
    }
    ngq_st_close(f);
    return st;
}
