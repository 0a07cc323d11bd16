/* qcheckpoint.c: writing quantized checkpoints and reading their quantization
 * metadata (the tensors themselves are read by infer.c). */
#include "nanogptq/qcheckpoint.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ngq_quant_label(const char *method, const ngq_qgrid *grid, char *buf, size_t size)
{
    if (grid->int8_compat) {
        snprintf(buf, size, "%s-8b-int8compat", method);
        return;
    }
    char gran[32];
    switch (grid->granularity) {
    case NGQ_GRAN_TENSOR: snprintf(gran, sizeof gran, "tensor"); break;
    case NGQ_GRAN_CHANNEL: snprintf(gran, sizeof gran, "channel"); break;
    default: snprintf(gran, sizeof gran, "g%lld", (long long)grid->group_size); break;
    }
    snprintf(buf, size, "%s-%db-%s%s%s%s", method, grid->bits, gran, grid->symmetric ? "-sym" : "",
             grid->range == NGQ_RANGE_MSE ? "-mse" : "", grid->scale_dtype == NGQ_SCALE_F16 ? "-f16" : "");
}

/* The order tensors are written in: widest element first, so that every
 * tensor's offset in the data section is aligned for its dtype. */
static int dtype_rank(const char *dtype)
{
    if (strcmp(dtype, "F32") == 0 || strcmp(dtype, "I32") == 0) return 0;
    if (strcmp(dtype, "F16") == 0) return 1;
    return 2;
}

ngq_status ngq_qcheckpoint_save(const char *path, const ngq_model_config *cfg, const ngq_vocab *vocab,
                                const ngq_checkpoint_meta *meta, const ngq_quant_meta *qmeta, const float *const *fp,
                                const ngq_qtensor *const *q, ngq_error *err)
{
    ngq_checkpoint_meta m = *meta;
    m.model = *cfg;
    snprintf(m.kind, sizeof m.kind, "quantized");
    ngq_st_writer w;
    ngq_st_writer_init(&w);
    ngq_status st = ngq_checkpoint_add_metadata(&w, &m, vocab, err);
    char grid[256];
    if (st == NGQ_OK) st = ngq_qgrid_format(&qmeta->grid, grid, sizeof grid, err);
    int count = ngq_model_tensor_count(cfg);
    cJSON *names = cJSON_CreateArray();
    char **part_names = calloc((size_t)count * NGQ_QTENSOR_MAX_PARTS, sizeof *part_names);
    if (!names || !part_names) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    for (int rank = 0; rank < 3 && st == NGQ_OK; rank++) {
        for (int i = 0; i < count && st == NGQ_OK; i++) {
            ngq_tensor_info info;
            if ((st = ngq_model_tensor_info(cfg, i, &info, err))) break;
            if ((fp[i] != NULL) == (q[i] != NULL)) {
                st = ngq_fail(err, NGQ_ERR_INTERNAL, "tensor %s: exactly one of fp32 or quantized data expected",
                              info.name);
                break;
            }
            if (fp[i]) {
                if (rank != 0) continue;
                int64_t shape[2] = {info.shape[0], info.shape[1]};
                st = ngq_st_writer_add_tensor(&w, info.name, NGQ_ST_F32, info.ndim, shape, fp[i],
                                              info.numel * sizeof(float), err);
                continue;
            }
            if (rank == 0) cJSON_AddItemToArray(names, cJSON_CreateString(info.name));
            ngq_qtensor_part parts[NGQ_QTENSOR_MAX_PARTS];
            int n = ngq_qtensor_get_parts(q[i], parts);
            for (int k = 0; k < n && st == NGQ_OK; k++) {
                if (dtype_rank(parts[k].dtype) != rank) continue;
                ngq_st_dtype dtype;
                if (!ngq_st_dtype_parse(parts[k].dtype, &dtype)) {
                    st = ngq_fail(err, NGQ_ERR_INTERNAL, "unknown part dtype %s", parts[k].dtype);
                    break;
                }
                char *name = ngq_strdup_printf("%s.%s", info.name, parts[k].name);
                part_names[(size_t)i * NGQ_QTENSOR_MAX_PARTS + (size_t)k] = name;
                st = ngq_st_writer_add_tensor(&w, name, dtype, parts[k].ndim, parts[k].shape, parts[k].data,
                                              parts[k].bytes, err);
            }
        }
    }
    char *names_json = names ? cJSON_PrintUnformatted(names) : NULL;
    char *gptq_json = ngq_strdup_printf(
        "{\"act_order\": %s, \"static_groups\": %s, \"percdamp\": %.9g, \"block_size\": %d, \"n_samples\": %d}",
        qmeta->act_order ? "true" : "false", qmeta->static_groups ? "true" : "false", qmeta->percdamp,
        qmeta->block_size, qmeta->n_samples);
    if (st == NGQ_OK && (!names_json || !gptq_json)) st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    if (st == NGQ_OK) st = ngq_st_writer_add_metadata(&w, "nanogptq.quant.method", qmeta->method, err);
    if (st == NGQ_OK) st = ngq_st_writer_add_metadata(&w, "nanogptq.quant.label", qmeta->label, err);
    if (st == NGQ_OK) st = ngq_st_writer_add_metadata(&w, "nanogptq.quant.grid", grid, err);
    if (st == NGQ_OK) st = ngq_st_writer_add_metadata(&w, "nanogptq.quant.tensors", names_json, err);
    if (st == NGQ_OK && strcmp(qmeta->method, "gptq") == 0) {
        st = ngq_st_writer_add_metadata(&w, "nanogptq.quant.gptq", gptq_json, err);
        if (st == NGQ_OK && qmeta->calibration_json)
            st = ngq_st_writer_add_metadata(&w, "nanogptq.quant.calibration", qmeta->calibration_json, err);
    }
    if (st == NGQ_OK) st = ngq_st_writer_write(&w, path, err);
    ngq_st_writer_free(&w);
    for (size_t i = 0; part_names && i < (size_t)count * NGQ_QTENSOR_MAX_PARTS; i++) free(part_names[i]);
    free(part_names);
    cJSON_free(names_json);
    free(gptq_json);
    cJSON_Delete(names);
    return st;
}

ngq_status ngq_qcheckpoint_read_meta(const ngq_st_file *f, const char *path, ngq_quant_meta *qmeta, ngq_error *err)
{
    memset(qmeta, 0, sizeof *qmeta);
    const char *method = ngq_st_metadata_value(f, "nanogptq.quant.method");
    const char *label = ngq_st_metadata_value(f, "nanogptq.quant.label");
    const char *grid = ngq_st_metadata_value(f, "nanogptq.quant.grid");
    if (!method || !label || !grid)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: quantized checkpoint without nanogptq.quant.method/label/grid", path);
    if (strcmp(method, "naive") != 0 && strcmp(method, "gptq") != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: unknown quantization method '%s'", path, method);
    snprintf(qmeta->method, sizeof qmeta->method, "%s", method);
    snprintf(qmeta->label, sizeof qmeta->label, "%s", label);
    ngq_status st = ngq_qgrid_parse(grid, &qmeta->grid, err);
    if (st) return ngq_error_prefix(err, "%s: nanogptq.quant.grid", path);
    const char *gptq = ngq_st_metadata_value(f, "nanogptq.quant.gptq");
    if (gptq) {
        cJSON *obj = cJSON_Parse(gptq);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, "act_order");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, "static_groups");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(obj, "percdamp");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(obj, "block_size");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(obj, "n_samples");
        int ok = cJSON_IsBool(a) && cJSON_IsBool(s) && cJSON_IsNumber(p) && cJSON_IsNumber(b) && cJSON_IsNumber(n);
        if (ok) {
            qmeta->act_order = cJSON_IsTrue(a);
            qmeta->static_groups = cJSON_IsTrue(s);
            qmeta->percdamp = p->valuedouble;
            qmeta->block_size = (int)b->valuedouble;
            qmeta->n_samples = (int)n->valuedouble;
        }
        cJSON_Delete(obj);
        if (!ok) return ngq_fail(err, NGQ_ERR_FORMAT, "%s: nanogptq.quant.gptq is malformed", path);
    }
    return NGQ_OK;
}
