/* ops.c: forward/backward kernels of the GPT model (see ops.h for shapes and
 * conventions). Matrix products go through single-threaded cblas_sgemm calls
 * on disjoint slices, one slice per OpenMP loop iteration; the slicing depends
 * only on the shapes, so results do not depend on the thread count. exp and
 * GELU have AVX2+FMA bodies and scalar tails that perform the same operations
 * (so vector and scalar lanes agree bit for bit); without AVX2 the scalar code
 * runs alone. Plain-loop references sit at the end of the file.
 * This file does not allocate, validate arguments or know about the model. */
#include "nanogptq/ops.h"
#include "nanogptq/rng.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NGQ_OPS_AVX2 1
#else
#define NGQ_OPS_AVX2 0
#endif

/* ---- slicing ----------------------------------------------------------- */

/* Number of slices for n items with at least min_items each: a power of two
 * no larger than max_slices. Depends on the shape only. */
static int slice_count(size_t n, size_t min_items, int max_slices)
{
    int count = 1;
    while (count * 2 <= max_slices && n / (size_t)(count * 2) >= min_items) count *= 2;
    return count;
}

static size_t slice_begin(int index, int count, size_t n)
{
    return n * (size_t)index / (size_t)count;
}

#define ELEMENTWISE_CHUNK ((size_t)16384)
/* Loops over fewer elements than this stay on one thread (a parallel region
 * costs a few microseconds). */
#define PARALLEL_MIN_WORK 16384

/* ---- small deterministic reductions (8 lanes, fixed order) ----------------- */

static inline float reduce_lanes(const float acc[8])
{
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static inline float sum_f(const float *x, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += x[i + l];
    float s = reduce_lanes(acc);
    for (; i < n; i++) s += x[i];
    return s;
}

static inline float dot_f(const float *x, const float *y, int n)
{
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += x[i + l] * y[i + l];
    float s = reduce_lanes(acc);
    for (; i < n; i++) s += x[i] * y[i];
    return s;
}

static inline float max_f(const float *x, int n)
{
    float m = -INFINITY;
    for (int i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* ---- exp, erf, GELU ------------------------------------------------------ */

#define EXP_LOWER -87.33654f /* ln(FLT_MIN): below this the result is flushed to 0 */
#define EXP_UPPER 88.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_C1 0.693359375f
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

float ngq_exp_fast(float x)
{
    if (isnan(x)) return x;
    if (x < EXP_LOWER) return 0.0f;
    if (x > EXP_UPPER) return INFINITY;
    float n = nearbyintf(x * EXP_LOG2E);
    float r = fmaf(n, -EXP_C1, x);
    r = fmaf(n, -EXP_C2, r);
    float y = EXP_P0;
    y = fmaf(y, r, EXP_P1);
    y = fmaf(y, r, EXP_P2);
    y = fmaf(y, r, EXP_P3);
    y = fmaf(y, r, EXP_P4);
    y = fmaf(y, r, EXP_P5);
    y = fmaf(y, r * r, r);
    y = y + 1.0f;
    int32_t bits = ((int32_t)n + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* Normal CDF Phi(x) = 0.5 * erfc(-x / sqrt 2), with erfc from the Chebyshev
 * fit of Numerical Recipes (erfcc: fractional error < 1.2e-7 everywhere).
 * For x <= 0 it is 0.5 * erfc(|x|/sqrt 2) directly, without cancellation. */
#define ERFC_Q0 -1.26551223f
#define ERFC_Q1 1.00002368f
#define ERFC_Q2 0.37409196f
#define ERFC_Q3 0.09678418f
#define ERFC_Q4 -0.18628806f
#define ERFC_Q5 0.27886807f
#define ERFC_Q6 -1.13520398f
#define ERFC_Q7 1.48851587f
#define ERFC_Q8 -0.82215223f
#define ERFC_Q9 0.17087277f
#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

static inline float normal_cdf_fast(float x)
{
    float z = fabsf(x) * INV_SQRT2;
    float t = 1.0f / fmaf(0.5f, z, 1.0f);
    float q = ERFC_Q9;
    q = fmaf(q, t, ERFC_Q8);
    q = fmaf(q, t, ERFC_Q7);
    q = fmaf(q, t, ERFC_Q6);
    q = fmaf(q, t, ERFC_Q5);
    q = fmaf(q, t, ERFC_Q4);
    q = fmaf(q, t, ERFC_Q3);
    q = fmaf(q, t, ERFC_Q2);
    q = fmaf(q, t, ERFC_Q1);
    q = fmaf(q, t, ERFC_Q0);
    /* -x^2/2 + q with one rounding (0.5 * x is exact) */
    float half_erfc = 0.5f * (t * ngq_exp_fast(fmaf(-0.5f * x, x, q)));
    return x <= 0.0f ? half_erfc : 1.0f - half_erfc;
}

float ngq_gelu_fast(float x)
{
    return x * normal_cdf_fast(x);
}

float ngq_gelu_grad_fast(float x)
{
    float density = ngq_exp_fast((x * x) * -0.5f) * INV_SQRT_2PI;
    return normal_cdf_fast(x) + x * density;
}

float ngq_gelu_reference(float x)
{
    return 0.5f * x * (1.0f + erff(x * INV_SQRT2));
}

float ngq_gelu_grad_reference(float x)
{
    float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
    float density = expf(-0.5f * x * x) * INV_SQRT_2PI;
    return cdf + x * density;
}

#if NGQ_OPS_AVX2
static inline __m256 exp_avx2(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-EXP_C1), x);
    r = _mm256_fmadd_ps(n, _mm256_set1_ps(-EXP_C2), r);
    __m256 y = _mm256_set1_ps(EXP_P0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(EXP_P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(EXP_P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(EXP_P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(EXP_P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(EXP_P5));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, one);
    /* Lanes outside [EXP_LOWER, EXP_UPPER] get garbage exponents here and are
     * replaced below; NaN lanes stay NaN through y. */
    __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
    __m256 below = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LOWER), _CMP_LT_OQ);
    __m256 above = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_UPPER), _CMP_GT_OQ);
    y = _mm256_blendv_ps(y, _mm256_setzero_ps(), below);
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), above);
}

static inline __m256 normal_cdf_avx2(__m256 x)
{
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 z = _mm256_mul_ps(_mm256_and_ps(x, abs_mask), _mm256_set1_ps(INV_SQRT2));
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5f), z, one));
    __m256 q = _mm256_set1_ps(ERFC_Q9);
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q8));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q7));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q6));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q5));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q4));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q3));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q2));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q1));
    q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(ERFC_Q0));
    __m256 arg = _mm256_fnmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), x, q);
    __m256 half_erfc = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_mul_ps(t, exp_avx2(arg)));
    __m256 upper = _mm256_sub_ps(_mm256_set1_ps(1.0f), half_erfc);
    return _mm256_blendv_ps(upper, half_erfc, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LE_OQ));
}

static inline __m256 gelu_avx2(__m256 x)
{
    return _mm256_mul_ps(x, normal_cdf_avx2(x));
}

static inline __m256 gelu_grad_avx2(__m256 x)
{
    __m256 arg = _mm256_mul_ps(_mm256_mul_ps(x, x), _mm256_set1_ps(-0.5f));
    __m256 density = _mm256_mul_ps(exp_avx2(arg), _mm256_set1_ps(INV_SQRT_2PI));
    return _mm256_add_ps(normal_cdf_avx2(x), _mm256_mul_ps(x, density));
}
#endif

/* out (n) = gelu(inp), serial */
static void gelu_span(float *out, const float *inp, size_t n)
{
    size_t i = 0;
#if NGQ_OPS_AVX2
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, gelu_avx2(_mm256_loadu_ps(inp + i)));
#endif
    for (; i < n; i++) out[i] = ngq_gelu_fast(inp[i]);
}

/* dinp (n) += dout * gelu'(inp), serial */
static void gelu_backward_span(float *dinp, const float *inp, const float *dout, size_t n)
{
    size_t i = 0;
#if NGQ_OPS_AVX2
    for (; i + 8 <= n; i += 8) {
        __m256 grad = gelu_grad_avx2(_mm256_loadu_ps(inp + i));
        __m256 g = _mm256_mul_ps(_mm256_loadu_ps(dout + i), grad);
        _mm256_storeu_ps(dinp + i, _mm256_add_ps(_mm256_loadu_ps(dinp + i), g));
    }
#endif
    for (; i < n; i++) dinp[i] += dout[i] * ngq_gelu_grad_fast(inp[i]);
}

/* x[0..n) <- exp(x - shift); returns the sum in a fixed lane order. */
static float exp_shift_sum(float *x, int n, float shift)
{
    int i = 0;
    float sum = 0.0f;
#if NGQ_OPS_AVX2
    __m256 acc = _mm256_setzero_ps();
    __m256 s = _mm256_set1_ps(shift);
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    sum = reduce_lanes(lanes);
#endif
    for (; i < n; i++) {
        x[i] = ngq_exp_fast(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

/* ---- embedding --------------------------------------------------------- */

void ngq_embedding_forward(float *out, const uint16_t *tokens, const float *wte,
                           const float *wpe, int B, int T, int C)
{
    long rows = (long)B * T;
#pragma omp parallel for schedule(static) if (rows * C > PARALLEL_MIN_WORK)
    for (long r = 0; r < rows; r++) {
        int t = (int)(r % T);
        const float *te = wte + (size_t)tokens[r] * C;
        const float *pe = wpe + (size_t)t * C;
        float *o = out + (size_t)r * C;
        for (int c = 0; c < C; c++) o[c] = te[c] + pe[c];
    }
}

#define EMBEDDING_CHANNEL_SLICE 32

void ngq_embedding_backward(float *dwte, float *dwpe, const float *dout,
                            const uint16_t *tokens, int B, int T, int C)
{
    /* dwte: each channel slice walks all tokens in order (no write races, a
     * fixed summation order whatever the thread count). */
    int nslices = (C + EMBEDDING_CHANNEL_SLICE - 1) / EMBEDDING_CHANNEL_SLICE;
    long rows = (long)B * T;
#pragma omp parallel for schedule(static) if (rows * C > PARALLEL_MIN_WORK)
    for (int s = 0; s < nslices; s++) {
        int c0 = s * EMBEDDING_CHANNEL_SLICE;
        int c1 = c0 + EMBEDDING_CHANNEL_SLICE < C ? c0 + EMBEDDING_CHANNEL_SLICE : C;
        for (long r = 0; r < rows; r++) {
            float *dst = dwte + (size_t)tokens[r] * C;
            const float *src = dout + (size_t)r * C;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
    /* dwpe[t] += sum over b, in b order. */
#pragma omp parallel for schedule(static) if (rows * C > PARALLEL_MIN_WORK)
    for (int t = 0; t < T; t++) {
        float *dst = dwpe + (size_t)t * C;
        for (int b = 0; b < B; b++) {
            const float *src = dout + ((size_t)b * T + t) * C;
            for (int c = 0; c < C; c++) dst[c] += src[c];
        }
    }
}

/* ---- layernorm --------------------------------------------------------- */

void ngq_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int N, int C)
{
#pragma omp parallel for schedule(static) if ((long)N * C > PARALLEL_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *o = out + (size_t)n * C;
        float m = sum_f(x, C) / (float)C;
        float acc[8] = {0};
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int l = 0; l < 8; l++) {
                float d = x[c + l] - m;
                acc[l] += d * d;
            }
        float v = reduce_lanes(acc);
        for (; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float s = 1.0f / sqrtf(v / (float)C + NGQ_LAYERNORM_EPS);
        if (bias)
            for (c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
        else
            for (c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}

#define LAYERNORM_CHANNEL_SLICE 32

void ngq_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const float *mean,
                            const float *rstd, int N, int C)
{
    /* dinp: row-local reductions. */
#pragma omp parallel for schedule(static) if ((long)N * C > PARALLEL_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *g = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        float acc_a[8] = {0}, acc_b[8] = {0};
        int c = 0;
        for (; c + 8 <= C; c += 8)
            for (int l = 0; l < 8; l++) {
                float dnorm = g[c + l] * weight[c + l];
                acc_a[l] += dnorm;
                acc_b[l] += dnorm * ((x[c + l] - m) * s);
            }
        float sum_dnorm = reduce_lanes(acc_a), sum_dnorm_xhat = reduce_lanes(acc_b);
        for (; c < C; c++) {
            float dnorm = g[c] * weight[c];
            sum_dnorm += dnorm;
            sum_dnorm_xhat += dnorm * ((x[c] - m) * s);
        }
        float mean_dnorm = sum_dnorm / (float)C, mean_dnorm_xhat = sum_dnorm_xhat / (float)C;
        for (c = 0; c < C; c++) {
            float xhat = (x[c] - m) * s;
            dx[c] += (g[c] * weight[c] - mean_dnorm - xhat * mean_dnorm_xhat) * s;
        }
    }
    /* dweight, dbias: each channel slice sums over all rows in row order. */
    int nslices = (C + LAYERNORM_CHANNEL_SLICE - 1) / LAYERNORM_CHANNEL_SLICE;
#pragma omp parallel for schedule(static) if ((long)N * C > PARALLEL_MIN_WORK)
    for (int sl = 0; sl < nslices; sl++) {
        int c0 = sl * LAYERNORM_CHANNEL_SLICE;
        int w = C - c0 < LAYERNORM_CHANNEL_SLICE ? C - c0 : LAYERNORM_CHANNEL_SLICE;
        float acc_w[LAYERNORM_CHANNEL_SLICE] = {0}, acc_b[LAYERNORM_CHANNEL_SLICE] = {0};
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C + c0;
            const float *g = dout + (size_t)n * C + c0;
            float m = mean[n], s = rstd[n];
            for (int l = 0; l < w; l++) {
                acc_w[l] += g[l] * ((x[l] - m) * s);
                acc_b[l] += g[l];
            }
        }
        for (int l = 0; l < w; l++) dweight[c0 + l] += acc_w[l];
        if (dbias)
            for (int l = 0; l < w; l++) dbias[c0 + l] += acc_b[l];
    }
}

/* ---- linear ------------------------------------------------------------ */

#define LINEAR_MIN_ROWS 64    /* rows per forward / dinp slice */
#define LINEAR_MAX_SLICES 16
#define LINEAR_MIN_COLS 64    /* columns per slice when rows are too few */
#define LINEAR_WEIGHT_MIN 64  /* rows (or columns) of dweight per slice */
#define LINEAR_WEIGHT_MAX_SLICES 8

/* out[n0:n1, m0:m1] = (residual) + inp[n0:n1] @ weight[m0:m1]^T + bias[m0:m1],
 * then gelu_out = gelu(out) over the same block when gelu_out is given. */
static void linear_forward_block(float *out, const float *residual, float *gelu_out,
                                 const float *inp, const float *weight, const float *bias,
                                 int n0, int n1, int m0, int m1, int K, int M)
{
    int rows = n1 - n0, cols = m1 - m0;
    if (rows <= 0 || cols <= 0) return;
    float beta = 0.0f;
    if (residual) {
        if (residual != out)
            for (int n = n0; n < n1; n++)
                memcpy(out + (size_t)n * M + m0, residual + (size_t)n * M + m0,
                       (size_t)cols * sizeof(float));
        beta = 1.0f;
    }
    if (bias) {
        for (int n = n0; n < n1; n++) {
            float *o = out + (size_t)n * M;
            if (beta != 0.0f)
                for (int m = m0; m < m1; m++) o[m] += bias[m];
            else
                for (int m = m0; m < m1; m++) o[m] = bias[m];
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, K, 1.0f,
                inp + (size_t)n0 * K, K, weight + (size_t)m0 * K, K, beta,
                out + (size_t)n0 * M + m0, M);
    if (gelu_out)
        for (int n = n0; n < n1; n++)
            gelu_span(gelu_out + (size_t)n * M + m0, out + (size_t)n * M + m0, (size_t)cols);
}

static void linear_forward_any(float *out, const float *residual, float *gelu_out,
                               const float *inp, const float *weight, const float *bias,
                               int N, int K, int M)
{
    int row_slices = slice_count((size_t)N, LINEAR_MIN_ROWS, LINEAR_MAX_SLICES);
    if (row_slices > 1 || M < 2 * LINEAR_MIN_COLS) {
#pragma omp parallel for schedule(static) if (row_slices > 1)
        for (int s = 0; s < row_slices; s++)
            linear_forward_block(out, residual, gelu_out, inp, weight, bias,
                                 (int)slice_begin(s, row_slices, (size_t)N),
                                 (int)slice_begin(s + 1, row_slices, (size_t)N), 0, M, K, M);
    } else {
        /* Few rows (inference): split the output features instead. */
        int col_slices = slice_count((size_t)M, LINEAR_MIN_COLS, LINEAR_MAX_SLICES);
        int parallel = (long)N * M * K > 100000;
#pragma omp parallel for schedule(static) if (parallel)
        for (int s = 0; s < col_slices; s++)
            linear_forward_block(out, residual, gelu_out, inp, weight, bias, 0, N,
                                 (int)slice_begin(s, col_slices, (size_t)M),
                                 (int)slice_begin(s + 1, col_slices, (size_t)M), K, M);
    }
}

void ngq_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int K, int M)
{
    linear_forward_any(out, NULL, NULL, inp, weight, bias, N, K, M);
}

void ngq_linear_residual_forward(float *out, const float *residual, const float *inp,
                                 const float *weight, const float *bias, int N, int K, int M)
{
    linear_forward_any(out, residual, NULL, inp, weight, bias, N, K, M);
}

void ngq_linear_gelu_forward(float *pre, float *out, const float *inp, const float *weight,
                             const float *bias, int N, int K, int M)
{
    linear_forward_any(pre, NULL, out, inp, weight, bias, N, K, M);
}

void ngq_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int K, int M)
{
    if (dinp) {
        /* dinp (N,K) += dout (N,M) @ weight (M,K) */
        int row_slices = slice_count((size_t)N, LINEAR_MIN_ROWS, LINEAR_MAX_SLICES);
        if (row_slices > 1 || K < 2 * LINEAR_MIN_COLS) {
#pragma omp parallel for schedule(static) if (row_slices > 1)
            for (int s = 0; s < row_slices; s++) {
                int n0 = (int)slice_begin(s, row_slices, (size_t)N);
                int n1 = (int)slice_begin(s + 1, row_slices, (size_t)N);
                if (n1 > n0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n1 - n0, K, M, 1.0f,
                                dout + (size_t)n0 * M, M, weight, K, 1.0f,
                                dinp + (size_t)n0 * K, K);
            }
        } else {
            int col_slices = slice_count((size_t)K, LINEAR_MIN_COLS, LINEAR_MAX_SLICES);
#pragma omp parallel for schedule(static) if ((long)N * M * K > 100000)
            for (int s = 0; s < col_slices; s++) {
                int k0 = (int)slice_begin(s, col_slices, (size_t)K);
                int k1 = (int)slice_begin(s + 1, col_slices, (size_t)K);
                if (k1 > k0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, k1 - k0, M, 1.0f,
                                dout, M, weight + k0, K, 1.0f, dinp + k0, K);
            }
        }
    }
    if (dweight) {
        /* dweight (M,K) += dout^T (M,N) @ inp (N,K), sliced along the longer side. */
        if (M >= K) {
            int slices = slice_count((size_t)M, LINEAR_WEIGHT_MIN, LINEAR_WEIGHT_MAX_SLICES);
#pragma omp parallel for schedule(static) if (slices > 1)
            for (int s = 0; s < slices; s++) {
                int m0 = (int)slice_begin(s, slices, (size_t)M);
                int m1 = (int)slice_begin(s + 1, slices, (size_t)M);
                if (m1 > m0)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m1 - m0, K, N, 1.0f,
                                dout + m0, M, inp, K, 1.0f, dweight + (size_t)m0 * K, K);
            }
        } else {
            int slices = slice_count((size_t)K, LINEAR_WEIGHT_MIN, LINEAR_WEIGHT_MAX_SLICES);
#pragma omp parallel for schedule(static) if (slices > 1)
            for (int s = 0; s < slices; s++) {
                int k0 = (int)slice_begin(s, slices, (size_t)K);
                int k1 = (int)slice_begin(s + 1, slices, (size_t)K);
                if (k1 > k0)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, k1 - k0, N, 1.0f,
                                dout, M, inp + k0, K, 1.0f, dweight + k0, K);
            }
        }
    }
    if (dbias) {
        /* dbias (M) += column sums of dout, each column summed in row order. */
        int slices = (M + LINEAR_MIN_COLS - 1) / LINEAR_MIN_COLS;
#pragma omp parallel for schedule(static) if ((long)N * M > PARALLEL_MIN_WORK)
        for (int s = 0; s < slices; s++) {
            int m0 = s * LINEAR_MIN_COLS;
            int w = M - m0 < LINEAR_MIN_COLS ? M - m0 : LINEAR_MIN_COLS;
            float acc[LINEAR_MIN_COLS] = {0};
            for (int n = 0; n < N; n++) {
                const float *g = dout + (size_t)n * M + m0;
                for (int l = 0; l < w; l++) acc[l] += g[l];
            }
            for (int l = 0; l < w; l++) dbias[m0 + l] += acc[l];
        }
    }
}

/* ---- attention --------------------------------------------------------- */

/* Query rows per block: block i0..i0+ni attends to keys 0..i0+ni-1 only, so
 * the products skip (almost) all of the masked upper triangle. */
#define ATTENTION_BLOCK 64

size_t ngq_attention_matrix_elements(int B, int NH, int T)
{
    return (size_t)B * (size_t)NH * (size_t)T * (size_t)T;
}

/* row[0..len) <- softmax(row[0..len)), in place */
static void softmax_inplace(float *row, int len)
{
    float m = max_f(row, len);
    float sum = exp_shift_sum(row, len, m);
    float inv = 1.0f / sum;
    for (int j = 0; j < len; j++) row[j] *= inv;
}

/* One (batch, head) pair. q, k, v: (T, 3C) strided; out: (T, C) strided;
 * P, Pd: (T,T) */
static void attention_pair_forward(float *out, float *P, float *Pd, const float *q,
                                   const float *k, const float *v, const uint8_t *mask,
                                   float keep_scale, int T, int C, int hs, float scale)
{
    const int ld = 3 * C;
    for (int i0 = 0; i0 < T; i0 += ATTENTION_BLOCK) {
        int ni = T - i0 < ATTENTION_BLOCK ? T - i0 : ATTENTION_BLOCK;
        int nj = i0 + ni;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, nj, hs, scale,
                    q + (size_t)i0 * ld, ld, k, ld, 0.0f, P + (size_t)i0 * T, T);
        for (int i = i0; i < i0 + ni; i++) {
            float *row = P + (size_t)i * T;
            softmax_inplace(row, i + 1);
            for (int j = i + 1; j < nj; j++) row[j] = 0.0f;
            if (mask) {
                const uint8_t *mrow = mask + (size_t)i * T;
                float *drow = Pd + (size_t)i * T;
                for (int j = 0; j < nj; j++) drow[j] = mrow[j] ? row[j] * keep_scale : 0.0f;
            }
        }
        const float *A = mask ? Pd : P;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, hs, nj, 1.0f,
                    A + (size_t)i0 * T, T, v, ld, 0.0f, out + (size_t)i0 * C, C);
    }
}

void ngq_attention_forward(float *out, float *att, float *scratch, const float *qkv,
                           const uint8_t *mask, float keep_scale, int B, int T, int C, int NH)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t TT = (size_t)T * T;
    const long pairs = (long)B * NH;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < pairs; p++) {
        long b = p / NH;
        int h = (int)(p % NH);
        const float *q = qkv + (size_t)b * T * 3 * C + (size_t)h * hs;
        attention_pair_forward(out + (size_t)b * T * C + (size_t)h * hs, att + (size_t)p * TT,
                               mask ? scratch + (size_t)p * TT : NULL, q, q + C, q + 2 * C,
                               mask ? mask + (size_t)p * TT : NULL, keep_scale, T, C, hs, scale);
    }
}

static void attention_pair_backward(float *dq, float *D, const float *dout, const float *q,
                                    const float *P, const uint8_t *mask, float keep_scale,
                                    int T, int C, int hs, float scale)
{
    const int ld = 3 * C;
    const float *k = q + C, *v = q + 2 * C;
    float *dk = dq + C, *dv = dq + 2 * C;
    for (int i0 = 0; i0 < T; i0 += ATTENTION_BLOCK) {
        int ni = T - i0 < ATTENTION_BLOCK ? T - i0 : ATTENTION_BLOCK;
        int nj = i0 + ni;
        const float *A = P;
        if (mask) {
            for (int i = i0; i < i0 + ni; i++) {
                const float *prow = P + (size_t)i * T;
                const uint8_t *mrow = mask + (size_t)i * T;
                float *drow = D + (size_t)i * T;
                for (int j = 0; j < nj; j++) drow[j] = mrow[j] ? prow[j] * keep_scale : 0.0f;
            }
            A = D;
        }
        /* dv[0:nj] += Pd[i0:i0+ni, 0:nj]^T @ dout[i0:i0+ni] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nj, hs, ni, 1.0f,
                    A + (size_t)i0 * T, T, dout + (size_t)i0 * C, C, 1.0f, dv, ld);
        /* dPd = dout @ v^T (overwrites the Pd rows, no longer needed) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, nj, hs, 1.0f,
                    dout + (size_t)i0 * C, C, v, ld, 0.0f, D + (size_t)i0 * T, T);
        for (int i = i0; i < i0 + ni; i++) {
            float *drow = D + (size_t)i * T;
            const float *prow = P + (size_t)i * T;
            int len = i + 1;
            if (mask) {
                const uint8_t *mrow = mask + (size_t)i * T;
                for (int j = 0; j < len; j++) drow[j] = mrow[j] ? drow[j] * keep_scale : 0.0f;
            }
            float d = dot_f(prow, drow, len);
            for (int j = 0; j < len; j++) drow[j] = prow[j] * (drow[j] - d);
            for (int j = len; j < nj; j++) drow[j] = 0.0f;
        }
        /* dq[i0:i0+ni] += scale * dS @ k[0:nj];  dk[0:nj] += scale * dS^T @ q[i0:i0+ni] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, hs, nj, scale,
                    D + (size_t)i0 * T, T, k, ld, 1.0f, dq + (size_t)i0 * ld, ld);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nj, hs, ni, scale,
                    D + (size_t)i0 * T, T, q + (size_t)i0 * ld, ld, 1.0f, dk, ld);
    }
}

void ngq_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                            const float *att, const uint8_t *mask, float keep_scale,
                            int B, int T, int C, int NH)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const size_t TT = (size_t)T * T;
    const long pairs = (long)B * NH;
#pragma omp parallel for schedule(static)
    for (long p = 0; p < pairs; p++) {
        long b = p / NH;
        int h = (int)(p % NH);
        size_t qoff = (size_t)b * T * 3 * C + (size_t)h * hs;
        attention_pair_backward(dqkv + qoff, scratch + (size_t)p * TT,
                                dout + (size_t)b * T * C + (size_t)h * hs, qkv + qoff,
                                att + (size_t)p * TT, mask ? mask + (size_t)p * TT : NULL,
                                keep_scale, T, C, hs, scale);
    }
}

size_t ngq_attention_cached_scratch_floats(int pos0, int Tq, int NH)
{
    return (size_t)NH * (size_t)Tq * (size_t)(pos0 + Tq);
}

void ngq_attention_forward_cached(float *out, const float *q, int ldq, const float *k, int ldk,
                                  const float *v, int ldv, float *scratch, int pos0, int Tq,
                                  int C, int NH)
{
    const int hs = C / NH;
    const int Tk = pos0 + Tq;
    const float scale = 1.0f / sqrtf((float)hs);
    int parallel = (long)Tq * Tk * C > 200000;
#pragma omp parallel for schedule(static) if (parallel)
    for (int h = 0; h < NH; h++) {
        float *S = scratch + (size_t)h * Tq * Tk;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, Tk, hs, scale,
                    q + (size_t)h * hs, ldq, k + (size_t)h * hs, ldk, 0.0f, S, Tk);
        for (int r = 0; r < Tq; r++) {
            float *row = S + (size_t)r * Tk;
            int len = pos0 + r + 1;
            softmax_inplace(row, len);
            for (int j = len; j < Tk; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, Tk, 1.0f, S, Tk,
                    v + (size_t)h * hs, ldv, 0.0f, out + (size_t)h * hs, C);
    }
}

/* ---- GELU, residual, dropout -------------------------------------------- */

void ngq_gelu_forward(float *out, const float *inp, size_t n)
{
    size_t chunks = (n + ELEMENTWISE_CHUNK - 1) / ELEMENTWISE_CHUNK;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (size_t ch = 0; ch < chunks; ch++) {
        size_t a = ch * ELEMENTWISE_CHUNK;
        size_t e = a + ELEMENTWISE_CHUNK < n ? a + ELEMENTWISE_CHUNK : n;
        gelu_span(out + a, inp + a, e - a);
    }
}

void ngq_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    size_t chunks = (n + ELEMENTWISE_CHUNK - 1) / ELEMENTWISE_CHUNK;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (size_t ch = 0; ch < chunks; ch++) {
        size_t a = ch * ELEMENTWISE_CHUNK;
        size_t e = a + ELEMENTWISE_CHUNK < n ? a + ELEMENTWISE_CHUNK : n;
        gelu_backward_span(dinp + a, inp + a, dout + a, e - a);
    }
}

void ngq_residual_forward(float *out, const float *a, const float *b, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 4 * ELEMENTWISE_CHUNK)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void ngq_residual_backward(float *da, float *db, const float *dout, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 4 * ELEMENTWISE_CHUNK)
    for (size_t i = 0; i < n; i++) {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t ngq_dropout_key(uint64_t seed, uint64_t step, int layer, int site)
{
    uint64_t key = splitmix64(seed);
    key = splitmix64(key ^ step);
    key = splitmix64(key ^ (((uint64_t)(uint32_t)layer << 32) | (uint32_t)site));
    return key;
}

float ngq_dropout_keep_scale(float p)
{
    return 1.0f / (1.0f - p);
}

static uint32_t dropout_threshold(float p)
{
    double t = (double)p * 4294967296.0;
    if (!(t > 0.0)) return 0;
    if (t >= 4294967295.0) return 4294967295u;
    return (uint32_t)t;
}

static void dropout_fill_row(uint8_t *mask, size_t len, uint32_t threshold, uint64_t key,
                             uint64_t row)
{
    ngq_rng rng;
    ngq_rng_seed(&rng, key, row);
    for (size_t j = 0; j < len; j++) mask[j] = ngq_rng_u32(&rng) >= threshold;
}

void ngq_dropout_fill_mask(uint8_t *mask, size_t rows, size_t row_len, float p, uint64_t key)
{
    uint32_t threshold = dropout_threshold(p);
#pragma omp parallel for schedule(static) if (rows * row_len > PARALLEL_MIN_WORK)
    for (size_t r = 0; r < rows; r++)
        dropout_fill_row(mask + r * row_len, row_len, threshold, key, r);
}

void ngq_dropout_fill_causal_mask(uint8_t *mask, int B, int NH, int T, float p, uint64_t key)
{
    uint32_t threshold = dropout_threshold(p);
    size_t rows = (size_t)B * NH * T;
#pragma omp parallel for schedule(static) if (rows * (size_t)T > PARALLEL_MIN_WORK)
    for (size_t r = 0; r < rows; r++) {
        size_t i = r % (size_t)T;
        uint8_t *row = mask + r * (size_t)T;
        dropout_fill_row(row, i + 1, threshold, key, r);
        memset(row + i + 1, 0, (size_t)T - i - 1);
    }
}

void ngq_dropout_forward(float *out, const float *inp, const uint8_t *mask, float keep_scale,
                         size_t n)
{
#pragma omp parallel for schedule(static) if (n > 4 * ELEMENTWISE_CHUNK)
    for (size_t i = 0; i < n; i++) out[i] = mask[i] ? inp[i] * keep_scale : 0.0f;
}

void ngq_dropout_backward(float *dinp, const float *dout, const uint8_t *mask, float keep_scale,
                          size_t n)
{
#pragma omp parallel for schedule(static) if (n > 4 * ELEMENTWISE_CHUNK)
    for (size_t i = 0; i < n; i++) dinp[i] += mask[i] ? dout[i] * keep_scale : 0.0f;
}

void ngq_dropout_residual_forward(float *out, const float *residual, const float *inp,
                                  const uint8_t *mask, float keep_scale, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 4 * ELEMENTWISE_CHUNK)
    for (size_t i = 0; i < n; i++) out[i] = residual[i] + (mask[i] ? inp[i] * keep_scale : 0.0f);
}

/* ---- softmax + cross-entropy --------------------------------------------- */

void ngq_softmax_cross_entropy_forward(float *probs, float *losses, const float *logits,
                                       const uint16_t *targets, int N, int V)
{
#pragma omp parallel for schedule(static) if ((long)N * V > PARALLEL_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *p = probs + (size_t)n * V;
        float m = max_f(l, V);
        float target_logit = targets ? l[targets[n]] : 0.0f;
        if (p != l) memcpy(p, l, (size_t)V * sizeof(float));
        float sum = exp_shift_sum(p, V, m);
        float inv = 1.0f / sum;
        for (int v = 0; v < V; v++) p[v] *= inv;
        if (targets) losses[n] = logf(sum) - (target_logit - m);
    }
}

void ngq_softmax_cross_entropy_backward(float *dlogits, const float *probs,
                                        const uint16_t *targets, float dloss, int N, int V)
{
#pragma omp parallel for schedule(static) if ((long)N * V > PARALLEL_MIN_WORK)
    for (int n = 0; n < N; n++) {
        const float *p = probs + (size_t)n * V;
        float *d = dlogits + (size_t)n * V;
        int t = targets[n];
        for (int v = 0; v < V; v++) d[v] += (p[v] - (v == t ? 1.0f : 0.0f)) * dloss;
    }
}

/* ---- plain-loop references ---------------------------------------------- */

void ngq_linear_forward_reference(float *out, const float *inp, const float *weight,
                                  const float *bias, int N, int K, int M)
{
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            double acc = bias ? bias[m] : 0.0;
            for (int k = 0; k < K; k++)
                acc += (double)inp[(size_t)n * K + k] * weight[(size_t)m * K + k];
            out[(size_t)n * M + m] = (float)acc;
        }
}

void ngq_linear_backward_reference(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, int N, int K, int M)
{
    if (dinp)
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                double acc = 0.0;
                for (int m = 0; m < M; m++)
                    acc += (double)dout[(size_t)n * M + m] * weight[(size_t)m * K + k];
                dinp[(size_t)n * K + k] += (float)acc;
            }
    if (dweight)
        for (int m = 0; m < M; m++)
            for (int k = 0; k < K; k++) {
                double acc = 0.0;
                for (int n = 0; n < N; n++)
                    acc += (double)dout[(size_t)n * M + m] * inp[(size_t)n * K + k];
                dweight[(size_t)m * K + k] += (float)acc;
            }
    if (dbias)
        for (int m = 0; m < M; m++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * M + m];
            dbias[m] += (float)acc;
        }
}

void ngq_attention_forward_reference(float *out, float *att, const float *qkv,
                                     const uint8_t *mask, float keep_scale, int B, int T, int C,
                                     int NH)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
                size_t row = (((size_t)b * NH + h) * T + t) * T;
                float *a = att + row;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *k = qkv + ((size_t)b * T + t2) * 3 * C + C + (size_t)h * hs;
                    float s = 0.0f;
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    s *= scale;
                    a[t2] = s;
                    if (s > maxv) maxv = s;
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    a[t2] = expf(a[t2] - maxv);
                    sum += a[t2];
                }
                for (int t2 = 0; t2 < T; t2++) a[t2] = t2 <= t ? a[t2] / sum : 0.0f;
                float *o = out + ((size_t)b * T + t) * C + (size_t)h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + (size_t)h * hs;
                    float w = a[t2];
                    if (mask) w = mask[row + t2] ? w * keep_scale : 0.0f;
                    for (int i = 0; i < hs; i++) o[i] += w * v[i];
                }
            }
}

void ngq_attention_backward_reference(float *dqkv, const float *dout, const float *qkv,
                                      const float *att, const uint8_t *mask, float keep_scale,
                                      int B, int T, int C, int NH)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                size_t row = (((size_t)b * NH + h) * T + t) * T;
                const float *a = att + row;
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
                float *dq = dqkv + ((size_t)b * T + t) * 3 * C + (size_t)h * hs;
                const float *g = dout + ((size_t)b * T + t) * C + (size_t)h * hs;
                /* dP[t2] = (g . v[t2]) * mask * keep; first pass: D = sum P dP */
                float D = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + (size_t)h * hs;
                    float dp = 0.0f;
                    for (int i = 0; i < hs; i++) dp += g[i] * v[i];
                    if (mask) dp = mask[row + t2] ? dp * keep_scale : 0.0f;
                    D += a[t2] * dp;
                }
                for (int t2 = 0; t2 <= t; t2++) {
                    size_t krow = ((size_t)b * T + t2) * 3 * C + (size_t)h * hs;
                    const float *k = qkv + krow + C, *v = qkv + krow + 2 * C;
                    float *dk = dqkv + krow + C, *dv = dqkv + krow + 2 * C;
                    float w = a[t2], dp = 0.0f;
                    for (int i = 0; i < hs; i++) dp += g[i] * v[i];
                    if (mask) {
                        w = mask[row + t2] ? w * keep_scale : 0.0f;
                        dp = mask[row + t2] ? dp * keep_scale : 0.0f;
                    }
                    for (int i = 0; i < hs; i++) dv[i] += w * g[i];
                    float ds = a[t2] * (dp - D) * scale;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += ds * k[i];
                        dk[i] += ds * q[i];
                    }
                }
            }
}

void ngq_gelu_forward_reference(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = ngq_gelu_reference(inp[i]);
}

void ngq_gelu_backward_reference(float *dinp, const float *inp, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * ngq_gelu_grad_reference(inp[i]);
}

void ngq_softmax_cross_entropy_forward_reference(float *probs, float *losses,
                                                 const float *logits, const uint16_t *targets,
                                                 int N, int V)
{
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float *p = probs + (size_t)n * V;
        float m = -INFINITY;
        for (int v = 0; v < V; v++)
            if (l[v] > m) m = l[v];
        float target_logit = targets ? l[targets[n]] : 0.0f;
        double sum = 0.0;
        for (int v = 0; v < V; v++) sum += exp((double)l[v] - m);
        for (int v = 0; v < V; v++) p[v] = (float)(exp((double)l[v] - m) / sum);
        if (targets) losses[n] = (float)(log(sum) - ((double)target_logit - m));
    }
}
