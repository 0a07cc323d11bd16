/* quant.h: quantization grids, round-to-nearest (RTN) quantization, bit packing
 * and the packed tensor (ngq_qtensor) that both RTN and GPTQ produce.
 *
 * It works on plain float matrices in PyTorch Linear layout: W is
 * [rows = out_features, cols = in_features], row-major float32. It knows nothing
 * about the model, about files (the parts of a qtensor are exposed as raw arrays
 * with shapes and safetensors dtype names so a checkpoint module can write and
 * read them) or about matmul (see qmatmul.h).
 *
 * Grid conventions (those of the GPTQ reference `quant.py` `Quantizer`, all in
 * float32, rounding half-to-even with rintf):
 *   maxq = 2^bits - 1.
 *   xmin = min(min(x), 0), xmax = max(max(x), 0)   (the range always holds 0).
 *   symmetric:  xmax = max(|xmin|, xmax), xmin = -xmax. (The reference only
 *               mirrors xmin when xmin < 0, which leaves an all-non-negative
 *               group with half its range clipped; here xmin = -xmax always.)
 *   xmin == xmax (both 0): xmin = -1, xmax = +1, as the reference does.
 *   scale = (xmax - xmin) / maxq
 *   zero  = symmetric ? (maxq + 1) / 2 : rintf(-xmin / scale)
 *   code  = clamp(rintf(x / scale) + zero, 0, maxq)
 *   value = scale * (code - zero)
 * MSE range search (range = NGQ_RANGE_MSE, the reference's mse=True): for
 * i = 0 .. 79 (maxshrink 0.8 x grid 100), p = 1 - i/100, the candidate range
 * (p*xmin, p*xmax) gives scale1 and (asymmetric) zero1 = rintf(-p*xmin/scale1)
 * (symmetric keeps zero); the candidate with the smallest sum |value - x|^2.4
 * wins (first one on ties; p = 1, the min/max range, is always a candidate).
 * fp16 scales: the float32 scale is rounded to fp16 (round-to-nearest-even)
 * first, and the zero point and codes are computed with the rounded scale, so
 * quantization and dequantization agree exactly. A scale that is zero or
 * infinite in fp16 is an error.
 * int8_compat: per row, symmetric, scale = absmax/127 (an all-zero row uses
 * absmax = 1), levels -127..127 stored as codes 0..254 with the implicit zero
 * point 127: code = clamp(rintf(x/scale) + 127, 0, 254). It requires bits 8,
 * symmetric, per-channel, min/max range and fp32 scales.
 *
 * Granularity: per tensor (one scale, and one zero, for the whole matrix), per
 * channel (one per output row) or per group (one per row and per group of G
 * consecutive input columns; cols must be divisible by G).
 *
 * Packing: codes are packed row by row, each row starting on a byte boundary
 * (row_bytes = ceil(cols * bits / 8)). Within a row the codes form a
 * little-endian bit stream: code k occupies bits [k*bits, (k+1)*bits), least
 * significant bit first, so 8 codes always fill exactly `bits` bytes (the
 * format's block); 4-bit puts code 2k in the low nibble of byte k. Unused bits
 * of a row's last byte are zero. Codes are kept in the original column order.
 * When GPTQ used act-order with dynamic groups, a column's group is not
 * col / G; g_idx[col] then names it and every dequantizer honours it. */
#ifndef NANOGPTQ_QUANT_H
#define NANOGPTQ_QUANT_H

#include <stdint.h>
#include <stddef.h>

#include "nanogptq/common.h"

#define NGQ_QUANT_MIN_BITS 2
#define NGQ_QUANT_MAX_BITS 8
/* The reference Quantizer's MSE search constants (mse=True). */
#define NGQ_QUANT_MSE_NORM 2.4
#define NGQ_QUANT_MSE_GRID 100
#define NGQ_QUANT_MSE_MAXSHRINK 0.8
#define NGQ_QUANT_MSE_CANDIDATES 80 /* int(MAXSHRINK * GRID) */
/* int8_compat: levels -127..127 as codes 0..254 around this zero point. */
#define NGQ_QUANT_INT8_COMPAT_ZERO 127
#define NGQ_QUANT_INT8_COMPAT_MAXQ 254

typedef enum {
    NGQ_GRAN_TENSOR = 0, /* one scale (and zero) for the whole matrix */
    NGQ_GRAN_CHANNEL,    /* one per output row                        */
    NGQ_GRAN_GROUP       /* one per row and group of G input columns  */
} ngq_granularity;

typedef enum {
    NGQ_RANGE_MINMAX = 0, /* range from min/max (default)                */
    NGQ_RANGE_MSE         /* shrink the range to minimise sum |err|^2.4  */
} ngq_range_method;

typedef enum {
    NGQ_SCALE_F32 = 0,
    NGQ_SCALE_F16
} ngq_scale_dtype;

/* A quantization grid. */
typedef struct {
    int bits;                    /* 2..8                                    */
    int symmetric;               /* 1: implicit zero (maxq+1)/2, no zeros stored */
    ngq_granularity granularity;
    int64_t group_size;          /* G, for NGQ_GRAN_GROUP only (else 0)     */
    ngq_range_method range;
    int int8_compat;             /* the earlier study's naive int8 (see top) */
    ngq_scale_dtype scale_dtype;
} ngq_qgrid;

/* Per-channel, asymmetric, min/max range, fp32 scales (the reference GPTQ
 * scripts' defaults) with the given bits. */
void ngq_qgrid_default(ngq_qgrid *grid, int bits);
/* The int8_compat grid. */
void ngq_qgrid_int8_compat(ngq_qgrid *grid);

/* Checks the grid on its own and, when cols > 0, against a matrix with that
 * many columns (cols divisible by the group size). */
ngq_status ngq_qgrid_validate(const ngq_qgrid *grid, int64_t cols, ngq_error *err);

/* Largest code: 2^bits - 1, or 254 for int8_compat. */
int ngq_qgrid_maxq(const ngq_qgrid *grid);
/* Groups in one row: 1 for tensor and channel, cols / G for group. */
int64_t ngq_qgrid_groups_per_row(const ngq_qgrid *grid, int64_t cols);

/* A canonical one-line text form, e.g.
 * "bits=4,sym=0,gran=group,group_size=128,range=minmax,int8_compat=0,scale=f16",
 * for file metadata and logs; parse reads exactly that form back (any key
 * order, every key required once). */
ngq_status ngq_qgrid_format(const ngq_qgrid *grid, char *buf, size_t size, ngq_error *err);
ngq_status ngq_qgrid_parse(const char *text, ngq_qgrid *grid, ngq_error *err);

/* ---- parameters and rounding -------------------------------------------- */

/* One group's parameters: value = scale * (code - zero). zero is integral. */
typedef struct {
    float scale;
    float zero;
} ngq_qparams;

/* Finds the parameters of one group of n values (a row, a row's group, or the
 * whole matrix for per-tensor) following the conventions at the top. Fails on
 * NaN/Inf input or a scale that fp16 cannot hold. */
ngq_status ngq_quant_find_params(const ngq_qgrid *grid, const float *x, int64_t n,
                                 ngq_qparams *params, ngq_error *err);

/* code = clamp(rintf(x / scale) + zero, 0, maxq). */
uint8_t ngq_quant_code(float x, ngq_qparams params, int maxq);
/* value = scale * (code - zero). */
float ngq_quant_value(uint8_t code, ngq_qparams params);

/* IEEE binary16 conversions; float -> half rounds to nearest, ties to even,
 * overflows to infinity and keeps NaN a NaN. */
uint16_t ngq_f32_to_f16(float x);
float ngq_f16_to_f32(uint16_t h);

/* ---- the format table ----------------------------------------------------- */

/* Every width packs 8 codes into `bits` bytes. */
#define NGQ_QBLOCK_CODES 8

typedef struct {
    const char *name;    /* "q2" .. "q8"                   */
    int bits;
    int block_codes;     /* NGQ_QBLOCK_CODES               */
    int block_bytes;     /* bytes of one packed block      */
    void (*pack_block)(const uint8_t *codes, uint8_t *out);   /* 8 codes -> block_bytes */
    void (*unpack_block)(const uint8_t *in, uint8_t *codes);  /* block_bytes -> 8 codes */
} ngq_qformat;

/* The packed format for 2..8 bits, or NULL. */
const ngq_qformat *ngq_qformat_for_bits(int bits);

/* Bytes holding n codes of the given width: ceil(n * bits / 8). */
int64_t ngq_quant_packed_bytes(int bits, int64_t n);
/* Packs n codes (each < 2^bits, else NGQ_ERR_INTERNAL) into
 * ngq_quant_packed_bytes(bits, n) bytes; unused trailing bits are zero. */
ngq_status ngq_quant_pack_codes(int bits, const uint8_t *codes, int64_t n, uint8_t *out,
                                ngq_error *err);
/* Unpacks n codes. */
void ngq_quant_unpack_codes(int bits, const uint8_t *in, int64_t n, uint8_t *codes);

/* ---- packed tensors ------------------------------------------------------- */

typedef struct {
    int64_t rows, cols;
    ngq_qgrid grid;
    int64_t groups_per_row;   /* see ngq_qgrid_groups_per_row                  */
    int64_t nparams;          /* 1 (tensor), rows (channel), rows*groups_per_row */
    int64_t row_bytes;        /* packed bytes of one row                        */
    uint8_t *codes;           /* rows x row_bytes                               */
    float *scales_f32;        /* nparams, when grid.scale_dtype == F32, else NULL */
    uint16_t *scales_f16;     /* nparams, when F16, else NULL                   */
    uint8_t *zeros;           /* nparams, asymmetric grids only, else NULL      */
    int32_t *g_idx;           /* cols, only for act-order with dynamic groups   */
} ngq_qtensor;

/* Allocates a zero-filled qtensor for the grid (validated against cols).
 * with_g_idx allocates g_idx (group grids only), filled with col / G. */
ngq_status ngq_qtensor_init(ngq_qtensor *q, int64_t rows, int64_t cols, const ngq_qgrid *grid,
                            int with_g_idx, ngq_error *err);
void ngq_qtensor_free(ngq_qtensor *q);

/* Index into scales/zeros of row r's group g (0 for per-tensor). */
int64_t ngq_qtensor_param_index(const ngq_qtensor *q, int64_t row, int64_t group);
ngq_qparams ngq_qtensor_get_params(const ngq_qtensor *q, int64_t row, int64_t group);
/* Stores params (the scale must already be representable in the grid's scale
 * dtype, as ngq_quant_find_params returns it; zero must be in 0..maxq for
 * asymmetric grids and equal the implicit zero for symmetric ones). */
ngq_status ngq_qtensor_set_params(ngq_qtensor *q, int64_t row, int64_t group, ngq_qparams params,
                                  ngq_error *err);
/* The group of column col (g_idx[col] when present, else col / G, or 0). */
int64_t ngq_qtensor_group_of(const ngq_qtensor *q, int64_t col);

/* Packs cols codes into row r / unpacks row r into cols codes. */
ngq_status ngq_qtensor_set_row_codes(ngq_qtensor *q, int64_t row, const uint8_t *codes, ngq_error *err);
void ngq_qtensor_get_row_codes(const ngq_qtensor *q, int64_t row, uint8_t *codes);

/* Round-to-nearest: quantizes w (rows, cols) into *q, which it initializes. */
ngq_status ngq_quant_rtn(const float *w, int64_t rows, int64_t cols, const ngq_qgrid *grid,
                         ngq_qtensor *q, ngq_error *err);

/* w (rows, cols) = dequant(q); or one row into out (cols). */
void ngq_qtensor_dequantize(const ngq_qtensor *q, float *w);
void ngq_qtensor_dequantize_row(const ngq_qtensor *q, int64_t row, float *out);

/* ---- sizes ------------------------------------------------------------------ */

typedef struct {
    int64_t code_bytes;
    int64_t scale_bytes;
    int64_t zero_bytes;
    int64_t g_idx_bytes;
    int64_t total_bytes;
    double bits_per_weight;   /* total_bytes * 8 / (rows * cols)  */
} ngq_qtensor_sizes;

void ngq_qtensor_get_sizes(const ngq_qtensor *q, ngq_qtensor_sizes *sizes);

/* ---- the parts, for safetensors --------------------------------------------- */

#define NGQ_QTENSOR_MAX_PARTS 4

/* One raw array of a qtensor: "codes" U8 [rows, row_bytes]; "scales" F32 or
 * F16 [rows, groups_per_row] ([1, 1] per tensor); "zeros" U8, same shape
 * (asymmetric only); "g_idx" I32 [cols] (only when present). dtype is the
 * safetensors dtype name. data points into the qtensor: write from it, or,
 * after ngq_qtensor_init with the same rows/cols/grid, read a file's bytes
 * into it. cols cannot be recovered from row_bytes for widths below 8, so a
 * file must also record rows, cols and the grid (ngq_qgrid_format) in its
 * metadata; check each part read with ngq_qtensor_check_part and the filled
 * tensor with ngq_qtensor_validate. */
typedef struct {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[2];
    void *data;
    size_t bytes;
} ngq_qtensor_part;

/* Fills parts (capacity NGQ_QTENSOR_MAX_PARTS) and returns how many. */
int ngq_qtensor_get_parts(const ngq_qtensor *q, ngq_qtensor_part *parts);

/* Checks one array read from a file (its name, safetensors dtype, shape and
 * byte count) against what q expects for that part. */
ngq_status ngq_qtensor_check_part(const ngq_qtensor *q, const char *name, const char *dtype,
                                  int ndim, const int64_t *shape, size_t bytes, ngq_error *err);

/* Checks a filled qtensor: sizes consistent with rows/cols/grid, every code
 * <= maxq and zero padding bits, scales finite and > 0, zeros <= maxq,
 * g_idx in range with exactly G columns per group. */
ngq_status ngq_qtensor_validate(const ngq_qtensor *q, ngq_error *err);

#endif
