/* quantize.h: turning an fp32 checkpoint into a quantized one, by
 * round-to-nearest ("naive") or GPTQ, on one grid for every quantized tensor.
 *
 * GPTQ runs sequentially through the blocks on calibration windows from the
 * train split: each linear layer's Hessian is accumulated from the inputs the
 * model produces with every earlier layer already quantized (true-sequential
 * inside a block: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), and the
 * calibration activations are kept only for the block being quantized.
 * Which tensors: the four linear layers of every block; with
 * quantize_embedding also transformer.wte.weight (with tied weights that is
 * the LM head too: GPTQ quantizes it as the head, on ln_f's outputs); with
 * quantize_position the position embedding (round-to-nearest in both methods:
 * it is a lookup table, not a layer with inputs). */
#ifndef NANOGPTQ_QUANTIZE_H
#define NANOGPTQ_QUANTIZE_H

#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/config.h"
#include "nanogptq/quant.h"

typedef struct {
    char method[16]; /* "naive" or "gptq" */
    ngq_qgrid grid;
    int quantize_embedding, quantize_position;
    int n_samples;
    double percdamp;
    int block_size;
    int act_order, static_groups;
    char calibration[NGQ_CONFIG_STRING_MAX]; /* file of window offsets, "" = drawn by the seed */
    uint64_t seed;
} ngq_quantize_options;

/* Everything from [quantize] and [run] seed. */
ngq_status ngq_quantize_options_from_config(const ngq_config *cfg, ngq_quantize_options *o, ngq_error *err);
/* Applies "METHOD:BITS:GRAN" (GRAN = tensor | channel | gNN | int8compat). */
ngq_status ngq_quantize_apply_variant(ngq_quantize_options *o, const char *variant, ngq_error *err);
/* The label used for file names and tables: "gptq-4b-g64" etc. */
void ngq_quantize_options_label(const ngq_quantize_options *o, char *buf, size_t size);

typedef struct {
    int layer;         /* block index, -1 for embeddings */
    char tensor[64];   /* nanoGPT name */
    int rows, cols;
    double rtn_error;  /* relative output error on the calibration inputs; NaN when not measured */
    double gptq_error; /* NaN for naive */
    double damping;    /* percdamp used (gptq) */
    int escalations;
    int fallback;      /* GPTQ fell back to RTN */
    double seconds;
    char note[256];
} ngq_quantize_layer_report;

typedef struct {
    ngq_quantize_layer_report *layers;
    int n_layers;
    char label[64];
    int64_t input_bytes, output_bytes;
    double bits_per_weight;      /* of the quantized tensors */
    int64_t quantized_weights;
    double calibration_seconds;  /* forward passes and Hessians */
    double seconds;
} ngq_quantize_result;

typedef void (*ngq_quantize_callback)(const ngq_quantize_layer_report *layer, int index, int total, void *user);

/* Reads in_path (fp32), quantizes, writes out_path atomically. For gptq the
 * calibration windows come from run_dir/data/train.tok. */
ngq_status ngq_quantize_run(const ngq_config *cfg, const char *in_path, const char *out_path,
                            const ngq_quantize_options *o, ngq_quantize_callback callback, void *user,
                            ngq_quantize_result *result, ngq_error *err);
void ngq_quantize_result_free(ngq_quantize_result *r);

/* layer,tensor,rows,cols,rtn_rel_error,gptq_rel_error,damping,escalations,fallback,seconds */
ngq_status ngq_quantize_write_layer_csv(const char *path, const ngq_quantize_result *r, ngq_error *err);

#endif
