/* qmatmul.h: matrix products with packed weights,
 *   Y (n, rows) = X (n, cols) @ dequant(Q)^T (+ bias (rows)),
 * where Q is an ngq_qtensor in PyTorch Linear layout (rows = out_features).
 * The weight is dequantized inside the loops: no full float copy of it is
 * ever made (each thread holds at most one row, or a tile of rows of at most
 * NGQ_QMATMUL_TILE_FLOATS floats).
 *
 * Kernels, chosen per call (see ngq_qmatmul_kernel_name):
 *   n < NGQ_QMATMUL_SMALL_N (token-by-token generation):
 *     8-bit and 4-bit: fused AVX2+FMA kernels that decode codes in registers
 *       and accumulate sum_j x_j (code_j - zero) per group, times the group's
 *       scale (4-bit needs groups of a multiple of 16 codes and reads a
 *       de-interleaved copy of x, even then odd elements of every 16; other
 *       group sizes take the generic kernel);
 *     n = 1, 8-bit and 4-bit: "q8_gemv_*"/"q4_gemv_*" (avx512 with AVX-512F,
 *       else avx2) take 8 weight rows per pass sharing every load of x, and
 *       move the zero point out of the inner loop: per group g,
 *       scale_g * (sum_j x_j code_j - zero_g * sum_j x_j), the group sums of
 *       x computed once per call (x itself is never quantized); 4-bit groups
 *       must be multiples of 32 codes (AVX-512) or 16 (AVX2), else the fused
 *       kernel above runs;
 *     other widths, act-order g_idx, or a build without AVX2: the generic
 *       kernel dequantizes one row into a buffer and takes dot products.
 *   n >= NGQ_QMATMUL_SMALL_N (evaluation): every thread takes a static slice
 *     of output rows, dequantizes it tile by tile and calls single-threaded
 *     cblas_sgemm on each tile.
 * Output rows (or row slices) are split statically across OpenMP threads and
 * each output element is computed by exactly one thread, so results are
 * bit-identical run to run for a given thread count. Results agree with the
 * reference (dequantize, then cblas_sgemm) to float rounding: the tests bound
 * |y - y_ref| by 1e-5 * sum_j |x_j * w_j| + 1e-30.
 * It does not quantize (quant.h) and does not know the model. */
#ifndef NANOGPTQ_QMATMUL_H
#define NANOGPTQ_QMATMUL_H

#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/quant.h"

/* Below this many input rows the per-row kernels are used. */
#define NGQ_QMATMUL_SMALL_N 8
/* Largest dequantized tile one thread holds in the sgemm path (256 KiB). */
#define NGQ_QMATMUL_TILE_FLOATS 65536

/* y (n, q->rows) = x (n, q->cols) @ dequant(q)^T + bias; bias may be NULL.
 * x and y must not overlap. n = 0 is a no-op. */
ngq_status ngq_qmatmul(const ngq_qtensor *q, const float *x, int64_t n, const float *bias, float *y,
                       ngq_error *err);

/* The reference path: dequantizes the whole weight, then one cblas_sgemm. */
ngq_status ngq_qmatmul_reference(const ngq_qtensor *q, const float *x, int64_t n, const float *bias, float *y,
                                 ngq_error *err);

/* Name of the kernel ngq_qmatmul uses for q and n: "q8_gemv_avx512",
 * "q4_gemv_avx512", "q8_gemv_avx2", "q4_gemv_avx2" (n = 1), "q8_avx2",
 * "q4_avx2", "row_generic" or "tile_sgemm". */
const char *ngq_qmatmul_kernel_name(const ngq_qtensor *q, int64_t n);

#endif
