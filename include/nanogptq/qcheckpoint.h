/* qcheckpoint.h: quantized checkpoints. The same safetensors container and
 * shared metadata as fp32 checkpoints (checkpoint.h, nanogptq.kind =
 * "quantized"); tensors that stay fp32 keep their nanoGPT names, and each
 * quantized tensor NAME is stored as its packed parts
 *   NAME.codes   U8  [rows, row_bytes]     packed integer codes
 *   NAME.scales  F32 or F16 [rows, groups] (one row [1, 1] per tensor)
 *   NAME.zeros   U8  same shape             (asymmetric grids only)
 *   NAME.g_idx   I32 [cols]                 (act-order with dynamic groups only)
 * The metadata adds:
 *   nanogptq.quant.method     "naive" | "gptq"
 *   nanogptq.quant.label      e.g. "gptq-4b-g64"
 *   nanogptq.quant.grid       the grid (ngq_qgrid_format)
 *   nanogptq.quant.tensors    JSON array of the quantized tensor names
 *   nanogptq.quant.gptq       JSON: act_order, static_groups, percdamp, block_size, n_samples (gptq only)
 *   nanogptq.quant.calibration JSON array of calibration window offsets (gptq only)
 * A tied LM head is not stored again: it is transformer.wte.weight. */
#ifndef NANOGPTQ_QCHECKPOINT_H
#define NANOGPTQ_QCHECKPOINT_H

#include "nanogptq/checkpoint.h"
#include "nanogptq/quant.h"

typedef struct {
    char method[16];
    char label[64];
    ngq_qgrid grid;
    int act_order, static_groups, block_size, n_samples;
    double percdamp;
    const char *calibration_json; /* may be NULL */
} ngq_quant_meta;

/* fp[i] / q[i] for tensor i of the model's table: exactly one is non-NULL. */
ngq_status ngq_qcheckpoint_save(const char *path, const ngq_model_config *cfg, const ngq_vocab *vocab,
                                const ngq_checkpoint_meta *meta, const ngq_quant_meta *qmeta, const float *const *fp,
                                const ngq_qtensor *const *q, ngq_error *err);

/* Reads the quantization metadata of an open quantized checkpoint. */
ngq_status ngq_qcheckpoint_read_meta(const ngq_st_file *f, const char *path, ngq_quant_meta *qmeta,
                                     ngq_error *err);

/* "naive-8b-channel", "gptq-4b-g64", "gptq-3b-tensor"; "-int8compat" for that grid. */
void ngq_quant_label(const char *method, const ngq_qgrid *grid, char *buf, size_t size);

#endif
