/* gptq.h: GPTQ (Frantar et al., ICLR 2023) on one linear layer, following the
 * reference implementation (IST-DASLab gptq.py `fasterquant`), plus the streamed
 * Hessian it needs and the output-error measure used to compare it with RTN.
 *
 * Use per layer (the quantize tool runs it layer by layer, feeding each layer
 * the inputs produced by the already-quantized earlier layers):
 *   ngq_hessian h; ngq_hessian_init(&h, cols, err);
 *   for each calibration batch: ngq_hessian_add(&h, X, n, err);   X (n, cols)
 *   ngq_hessian_finalize(&h, err);
 *   ngq_gptq_quantize(W, rows, cols, h.h, &grid, &opts, &q, &report, err);
 *   ngq_gptq_relative_error(h.h, cols, W, rows, &q, &rel, err);   (and for RTN)
 *   ngq_hessian_free(&h);
 *
 * Hessian: H = 2 X^T X / N over all N rows added (the reference divides by the
 * number of sequences instead of rows; a constant factor that GPTQ is
 * invariant to). Activations are never stored beyond one chunk: rows are
 * gathered into chunks of NGQ_HESSIAN_CHUNK_ROWS (a batch at least that large
 * is used in place), each chunk is multiplied in float32 (ssyrk/sgemm, split
 * over two OpenMP slices) and the chunk products are summed in double, which
 * is more precise than the reference's float32 running average.
 *
 * The algorithm (row-major W [rows, cols], all in double except the rounding,
 * which, like the reference, quantizes the float32 value of each weight):
 *   - group parameters: per tensor / per channel from the original W before
 *     anything else, as the reference does;
 *   - dead inputs (H[i,i] == 0): H[i,i] = 1 and W[:, i] = 0;
 *   - static groups (per-group grids with static_groups): parameters of every
 *     group, in original column order, from that W, before any update;
 *   - act-order: columns processed by descending H[i,i] (a stable sort: ties
 *     keep the lower column first);
 *   - damping lambda = percdamp * mean(diag H); U = upper Cholesky factor of
 *     (H + lambda I)^-1 via LAPACKE dpotrf, dpotri (the other triangle filled
 *     here) and dpotrf. If a factorisation fails, percdamp is raised (times
 *     escalation_factor, or to 0.01 from 0) up to max_escalations times; if it
 *     still fails, or mean(diag H) <= 0, the layer falls back to RTN on the
 *     original W (reported, not an error);
 *   - blocks of block_size columns: column by column, q = quant(w),
 *     err = (w - q) / U[i,i], pushed into the later columns of the block
 *     through row i of U; after the block W[:, end:] -= Err U[block, end:]
 *     (cblas_dgemm);
 *   - dynamic groups: a group's parameters are found when the column loop
 *     reaches its first column, from W as it stands after the previous blocks'
 *     lazy updates (exactly the reference's W[:, i:i+G], which does not see
 *     the current block's in-block updates). With act-order the groups are runs
 *     of G consecutive columns in processing order, so the qtensor records
 *     g_idx[col] and every dequantizer honours it; codes stay in original
 *     column order in every case.
 * Rows are independent in GPTQ: they are split into static slices across
 * OpenMP threads, each running the whole blocked algorithm with its own dgemm,
 * so results are bit-identical for a given thread count. */
#ifndef NANOGPTQ_GPTQ_H
#define NANOGPTQ_GPTQ_H

#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/quant.h"

#define NGQ_HESSIAN_CHUNK_ROWS 1024

typedef struct {
    int64_t cols;
    int64_t nsamples; /* rows of X added so far                                    */
    double *h;        /* cols x cols: sum X^T X (upper triangle) until finalize, then
                         the full symmetric H = 2 X^T X / nsamples                  */
    float *chunk;     /* cols x cols scratch for one chunk's float32 product        */
    float *pending;   /* NGQ_HESSIAN_CHUNK_ROWS x cols rows not yet multiplied      */
    int64_t npending;
    int finalized;
} ngq_hessian;

ngq_status ngq_hessian_init(ngq_hessian *h, int64_t cols, ngq_error *err);
/* Adds x (n, cols); NaN/Inf inputs are an error. Not after finalize. */
ngq_status ngq_hessian_add(ngq_hessian *h, const float *x, int64_t n, ngq_error *err);
/* Scales by 2 / nsamples and fills both triangles of h->h. */
ngq_status ngq_hessian_finalize(ngq_hessian *h, ngq_error *err);
void ngq_hessian_free(ngq_hessian *h);

#define NGQ_GPTQ_DEFAULT_BLOCK_SIZE 128
#define NGQ_GPTQ_DEFAULT_PERCDAMP 0.01

typedef struct {
    int64_t block_size;         /* lazy-update block, default 128                  */
    double percdamp;            /* damping as a fraction of mean(diag H), 0.01     */
    int act_order;              /* process columns by descending diag H, default 0 */
    int static_groups;          /* per-group grids: parameters up front, default 0 */
    int max_escalations;        /* damping increases before RTN fallback, 4        */
    double escalation_factor;   /* percdamp multiplier per increase, 10            */
} ngq_gptq_options;

void ngq_gptq_options_default(ngq_gptq_options *opts);

typedef struct {
    double percdamp_requested;
    double percdamp_used;       /* after escalations (meaningless after a fallback) */
    double damp;                /* lambda added to the diagonal                      */
    int escalations;            /* times percdamp was raised                         */
    int fell_back_to_rtn;       /* 1: the layer was quantized with RTN               */
    int64_t dead_columns;       /* inputs with H[i,i] == 0                           */
    double loss;                /* the reference's "error": sum (w-q)^2 / U[i,i]^2 / 2 */
    double seconds;             /* wall time of ngq_gptq_quantize                    */
    char note[256];             /* why damping rose or RTN was used; "" otherwise    */
} ngq_gptq_report;

/* Quantizes w (rows, cols) with the Hessian hessian (cols, cols, symmetric,
 * e.g. ngq_hessian.h after finalize; not modified) into *out, which it
 * initializes. report may be NULL. */
ngq_status ngq_gptq_quantize(const float *w, int64_t rows, int64_t cols, const double *hessian,
                             const ngq_qgrid *grid, const ngq_gptq_options *opts, ngq_qtensor *out,
                             ngq_gptq_report *report, ngq_error *err);

/* Relative output error of q against w on the inputs summarised by hessian:
 * tr((W-Q) H (W-Q)^T) / tr(W H W^T), which equals ||X W^T - X Q^T||^2 / ||X W^T||^2
 * for H = 2 X^T X / N. Fails when tr(W H W^T) is not positive. */
ngq_status ngq_gptq_relative_error(const double *hessian, int64_t cols, const float *w, int64_t rows,
                                   const ngq_qtensor *q, double *rel, ngq_error *err);

#endif
