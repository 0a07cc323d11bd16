/* qmatmul.c: Y = X @ dequant(Q)^T (+ bias) on packed weights: fused AVX2
 * kernels for 8-bit and 4-bit codes at small n (multi-row ones at n = 1), a generic row kernel for the
 * other widths, and a tiled dequantize-then-sgemm path for large n (see
 * qmatmul.h). It never materializes the whole float weight except in the
 * reference path. It does not quantize. */
#include "nanogptq/qmatmul.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

/* ---- shared helpers --------------------------------------------------------- */

static ngq_status check_args(const ngq_qtensor *q, const float *x, int64_t n, const float *y, ngq_error *err)
{
    if (!q || !q->codes) return ngq_fail(err, NGQ_ERR_INTERNAL, "qmatmul: empty qtensor");
    if (n < 0) return ngq_fail(err, NGQ_ERR_INTERNAL, "qmatmul: n = %lld", (long long)n);
    if (n > 0 && (!x || !y)) return ngq_fail(err, NGQ_ERR_INTERNAL, "qmatmul: NULL input or output");
    if (n > INT32_MAX || q->rows > INT32_MAX || q->cols > INT32_MAX)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "qmatmul: n = %lld with a [%lld, %lld] weight exceeds BLAS int sizes",
                        (long long)n, (long long)q->rows, (long long)q->cols);
    return NGQ_OK;
}

/* dot (n) = sum_j a_j b_j with 4 vector accumulators. */
static float dot_f32(const float *a, const float *b, int64_t n)
{
    int64_t j = 0;
    float tail = 0.0f;
#ifdef __AVX2__
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; j + 32 <= n; j += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 16), _mm256_loadu_ps(b + j + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 24), _mm256_loadu_ps(b + j + 24), s3);
    }
    for (; j + 8 <= n; j += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    tail = _mm_cvtss_f32(h);
#else
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (; j + 4 <= n; j += 4)
        for (int k = 0; k < 4; k++) s[k] += a[j + k] * b[j + k];
    tail = (s[0] + s[1]) + (s[2] + s[3]);
#endif
    for (; j < n; j++) tail += a[j] * b[j];
    return tail;
}

/* ---- the generic row kernel ------------------------------------------------- */

/* Row r against n inputs: w = dequant(row r) into buf (cols), then
 * y[k*rows + r] = dot(x_k, w) (+ bias[r]).  x (n, cols) -> y (n, rows). */
static void row_generic(const ngq_qtensor *q, int64_t r, const float *x, int64_t n, const float *bias, float *y,
                        float *buf)
{
    ngq_qtensor_dequantize_row(q, r, buf);
    float b = bias ? bias[r] : 0.0f;
    for (int64_t k = 0; k < n; k++) y[k * q->rows + r] = dot_f32(x + k * q->cols, buf, q->cols) + b;
}

/* ---- fused AVX2 kernels for 8-bit and 4-bit codes ------------------------------ */

#ifdef __AVX2__
static inline float hsum256(__m256 s)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

/* 16 codes from column j as floats minus the zero point, in the order of the
 * vector input xv (for 8-bit: d0 codes j..j+7, d1 codes j+8..j+15). */
static inline void decode16_q8(const uint8_t *row, int64_t j, __m256 vz, __m256 *d0, __m256 *d1)
{
    __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(row + j));
    *d0 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), vz);
    *d1 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(b, b))), vz);
}

/* 4-bit: the 8 bytes at column j (a multiple of 16) hold codes j+2k (low
 * nibble of byte k) and j+2k+1 (high nibble): d0 gets the even codes
 * j, j+2, .., j+14, d1 the odd ones, to be multiplied with the de-interleaved
 * input (see deinterleave_block, blocks of 16). */
static inline void decode16_q4(const uint8_t *row, int64_t j, __m256 vz, __m256 *d0, __m256 *d1)
{
    __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(row + (j >> 1))));
    *d0 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15))), vz);
    *d1 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)), vz);
}

static inline float code_q8(const uint8_t *row, int64_t j)
{
    return (float)row[j];
}

static inline float code_q4(const uint8_t *row, int64_t j)
{
    return (float)((row[j >> 1] >> ((j & 1) * 4)) & 15);
}

/* The fused kernels, for one format (DECODE16, CODE):
 *   out = sum_g scale_g * sum_{j in g} x_j (code_j - zero_g).
 * Vector loads read the input as xv (x itself for 8-bit, its de-interleaved
 * copy for 4-bit), scalar tails read x.
 * fused_one: one input, weight row r: x (cols) -> out (1).
 * fused_pair: two inputs, weight row r: x0, x1 (cols) -> out0, out1.
 * fused_rows2: one input, weight rows r, r+1: x (cols) -> out0, out1.
 * rows_fused: weight rows [r0, r1) against x (n, cols) -> y (n, rows). */
#define DEFINE_FUSED_KERNELS(NAME, DECODE16, CODE)                                                       \
    static float fused_one_##NAME(const ngq_qtensor *q, int64_t r, const float *x, const float *xv)    \
    {                                                                                                   \
        const uint8_t *row = q->codes + r * q->row_bytes;                                               \
        const int64_t gsize = q->cols / q->groups_per_row;                                             \
        __m256 acc = _mm256_setzero_ps();                                                               \
        float tail = 0.0f;                                                                              \
        for (int64_t g = 0; g < q->groups_per_row; g++) {                                               \
            ngq_qparams p = ngq_qtensor_get_params(q, r, g);                                            \
            const __m256 vz = _mm256_set1_ps(p.zero);                                                   \
            const int64_t c1 = (g + 1) * gsize;                                                         \
            int64_t j = g * gsize;                                                                      \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                  \
            __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();                                  \
            float t = 0.0f;                                                                             \
            for (; j + 32 <= c1; j += 32) {                                                             \
                __m256 d0, d1, d2, d3;                                                                  \
                DECODE16(row, j, vz, &d0, &d1);                                                         \
                DECODE16(row, j + 16, vz, &d2, &d3);                                                    \
                a0 = _mm256_fmadd_ps(d0, _mm256_loadu_ps(xv + j), a0);                                   \
                a1 = _mm256_fmadd_ps(d1, _mm256_loadu_ps(xv + j + 8), a1);                               \
                a2 = _mm256_fmadd_ps(d2, _mm256_loadu_ps(xv + j + 16), a2);                              \
                a3 = _mm256_fmadd_ps(d3, _mm256_loadu_ps(xv + j + 24), a3);                              \
            }                                                                                           \
            for (; j + 16 <= c1; j += 16) {                                                             \
                __m256 d0, d1;                                                                          \
                DECODE16(row, j, vz, &d0, &d1);                                                         \
                a0 = _mm256_fmadd_ps(d0, _mm256_loadu_ps(xv + j), a0);                                   \
                a1 = _mm256_fmadd_ps(d1, _mm256_loadu_ps(xv + j + 8), a1);                               \
            }                                                                                           \
            for (; j < c1; j++) t += (CODE(row, j) - p.zero) * x[j];                           \
            __m256 a = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));                     \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(p.scale), a, acc);                                     \
            tail += p.scale * t;                                                                        \
        }                                                                                               \
        return hsum256(acc) + tail;                                                                     \
    }                                                                                                   \
    static void fused_pair_##NAME(const ngq_qtensor *q, int64_t r, const float *x0, const float *x1,    \
                                  const float *xv0, const float *xv1, float *out0, float *out1)         \
    {                                                                                                   \
        const uint8_t *row = q->codes + r * q->row_bytes;                                               \
        const int64_t gsize = q->cols / q->groups_per_row;                                             \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                  \
        float tail0 = 0.0f, tail1 = 0.0f;                                                               \
        for (int64_t g = 0; g < q->groups_per_row; g++) {                                               \
            ngq_qparams p = ngq_qtensor_get_params(q, r, g);                                            \
            const __m256 vz = _mm256_set1_ps(p.zero);                                                   \
            const int64_t c1 = (g + 1) * gsize;                                                         \
            int64_t j = g * gsize;                                                                      \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                  \
            __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();                                  \
            float t0 = 0.0f, t1 = 0.0f;                                                                 \
            for (; j + 16 <= c1; j += 16) {                                                             \
                __m256 d0, d1;                                                                          \
                DECODE16(row, j, vz, &d0, &d1);                                                         \
                a0 = _mm256_fmadd_ps(d0, _mm256_loadu_ps(xv0 + j), a0);                                  \
                a1 = _mm256_fmadd_ps(d1, _mm256_loadu_ps(xv0 + j + 8), a1);                              \
                b0 = _mm256_fmadd_ps(d0, _mm256_loadu_ps(xv1 + j), b0);                                  \
                b1 = _mm256_fmadd_ps(d1, _mm256_loadu_ps(xv1 + j + 8), b1);                              \
            }                                                                                           \
            for (; j < c1; j++) {                                                                       \
                float cz = CODE(row, j) - p.zero;                                              \
                t0 += cz * x0[j];                                                                       \
                t1 += cz * x1[j];                                                                       \
            }                                                                                           \
            const __m256 vs = _mm256_set1_ps(p.scale);                                                  \
            acc0 = _mm256_fmadd_ps(vs, _mm256_add_ps(a0, a1), acc0);                                    \
            acc1 = _mm256_fmadd_ps(vs, _mm256_add_ps(b0, b1), acc1);                                    \
            tail0 += p.scale * t0;                                                                      \
            tail1 += p.scale * t1;                                                                      \
        }                                                                                               \
        *out0 = hsum256(acc0) + tail0;                                                                  \
        *out1 = hsum256(acc1) + tail1;                                                                  \
    }                                                                                                   \
    static void fused_rows2_##NAME(const ngq_qtensor *q, int64_t r, const float *x, const float *xv,    \
                                   float *out0, float *out1)                                            \
    {                                                                                                   \
        const uint8_t *row0 = q->codes + r * q->row_bytes, *row1 = row0 + q->row_bytes;                 \
        const int64_t gsize = q->cols / q->groups_per_row;                                             \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                                  \
        float tail0 = 0.0f, tail1 = 0.0f;                                                               \
        for (int64_t g = 0; g < q->groups_per_row; g++) {                                               \
            ngq_qparams p0 = ngq_qtensor_get_params(q, r, g), p1 = ngq_qtensor_get_params(q, r + 1, g); \
            const __m256 vz0 = _mm256_set1_ps(p0.zero), vz1 = _mm256_set1_ps(p1.zero);                  \
            const int64_t c1 = (g + 1) * gsize;                                                         \
            int64_t j = g * gsize;                                                                      \
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                  \
            __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();                                  \
            float t0 = 0.0f, t1 = 0.0f;                                                                 \
            for (; j + 16 <= c1; j += 16) {                                                             \
                const __m256 x0 = _mm256_loadu_ps(xv + j), x1 = _mm256_loadu_ps(xv + j + 8);              \
                __m256 d0, d1, e0, e1;                                                                  \
                DECODE16(row0, j, vz0, &d0, &d1);                                                       \
                DECODE16(row1, j, vz1, &e0, &e1);                                                       \
                a0 = _mm256_fmadd_ps(d0, x0, a0);                                                       \
                a1 = _mm256_fmadd_ps(d1, x1, a1);                                                       \
                b0 = _mm256_fmadd_ps(e0, x0, b0);                                                       \
                b1 = _mm256_fmadd_ps(e1, x1, b1);                                                       \
            }                                                                                           \
            for (; j < c1; j++) {                                                                       \
                t0 += (CODE(row0, j) - p0.zero) * x[j];                                        \
                t1 += (CODE(row1, j) - p1.zero) * x[j];                                        \
            }                                                                                           \
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(p0.scale), _mm256_add_ps(a0, a1), acc0);              \
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(p1.scale), _mm256_add_ps(b0, b1), acc1);              \
            tail0 += p0.scale * t0;                                                                     \
            tail1 += p1.scale * t1;                                                                     \
        }                                                                                               \
        *out0 = hsum256(acc0) + tail0;                                                                  \
        *out1 = hsum256(acc1) + tail1;                                                                  \
    }                                                                                                   \
    static void rows_fused_##NAME(const ngq_qtensor *q, int64_t r0, int64_t r1, const float *x,         \
                                  const float *xv, int64_t n, const float *bias, float *y)              \
    {                                                                                                   \
        for (int64_t r = r0; r < r1; r++) {                                                             \
            const float b = bias ? bias[r] : 0.0f;                                                      \
            if (n == 1 && r + 1 < r1) {                                                                 \
                float o0, o1;                                                                           \
                fused_rows2_##NAME(q, r, x, xv, &o0, &o1);                                                  \
                y[r] = o0 + b;                                                                          \
                y[r + 1] = o1 + (bias ? bias[r + 1] : 0.0f);                                            \
                r++;                                                                                    \
                continue;                                                                               \
            }                                                                                           \
            int64_t k = 0;                                                                              \
            for (; k + 2 <= n; k += 2) {                                                                \
                float o0, o1;                                                                           \
                fused_pair_##NAME(q, r, x + k * q->cols, x + (k + 1) * q->cols, xv + k * q->cols,       \
                                  xv + (k + 1) * q->cols, &o0, &o1);                                    \
                y[k * q->rows + r] = o0 + b;                                                            \
                y[(k + 1) * q->rows + r] = o1 + b;                                                      \
            }                                                                                           \
            if (k < n) y[k * q->rows + r] = fused_one_##NAME(q, r, x + k * q->cols, xv + k * q->cols) + b; \
        }                                                                                               \
    }

DEFINE_FUSED_KERNELS(q8, decode16_q8, code_q8)
DEFINE_FUSED_KERNELS(q4, decode16_q4, code_q4)
#endif

/* ---- n = 1: GEMV_ROWS weight rows per pass ------------------------------------- */

/* One input against GEMV_ROWS weight rows at a time, so every load of x serves
 * all of them, with two vector accumulators per row. The zero point leaves
 * the inner loop:
 *   out_r = sum_g scale_g * (sum_{j in g} x_j code_j) - sum_g scale_g zero_g xsum_g,
 * with xsum_g = sum_{j in g} x_j computed once per call. Every row goes
 * through the same operations in the same order wherever it sits in a block
 * (a short last block repeats its last row), so results do not depend on the
 * blocking or on the thread count. Vectors are GEMV_W floats: 16 with
 * AVX-512F, else 8 with AVX2. */
#ifdef __AVX2__
#define GEMV_ROWS 8

#ifdef __AVX512F__
#define GEMV_W 16
#define GEMV_SUFFIX "avx512"
typedef __m512 gemv_vec;
static inline gemv_vec gv_zero(void) { return _mm512_setzero_ps(); }
static inline gemv_vec gv_load(const float *p) { return _mm512_loadu_ps(p); }
static inline gemv_vec gv_set1(float v) { return _mm512_set1_ps(v); }
static inline gemv_vec gv_add(gemv_vec a, gemv_vec b) { return _mm512_add_ps(a, b); }
static inline gemv_vec gv_fmadd(gemv_vec a, gemv_vec b, gemv_vec c) { return _mm512_fmadd_ps(a, b, c); }
/* The 16 bytes at p zero-extended to 16 dwords in order: the bytes broadcast to
 * every 128-bit lane, and an in-lane byte shuffle (cheaper than the
 * cross-lane vpmovzxbd zmm). */
static inline __m512i gv_widen16(const uint8_t *p)
{
    const __m512i pick = _mm512_set_epi32(
        (int)0x8080800f, (int)0x8080800e, (int)0x8080800d, (int)0x8080800c, (int)0x8080800b, (int)0x8080800a,
        (int)0x80808009, (int)0x80808008, (int)0x80808007, (int)0x80808006, (int)0x80808005, (int)0x80808004,
        (int)0x80808003, (int)0x80808002, (int)0x80808001, (int)0x80808000);
    return _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)p)), pick);
}
/* 16 8-bit codes from p, as floats. */
static inline gemv_vec gv_decode_q8(const uint8_t *p)
{
    return _mm512_cvtepi32_ps(gv_widen16(p));
}
/* 32 4-bit codes from the 16 bytes at p: the even codes into *even, the odd
 * ones into *odd (the order of deinterleave_block with 32-element blocks). */
static inline void gv_decode_q4(const uint8_t *p, gemv_vec *even, gemv_vec *odd)
{
    __m512i b = gv_widen16(p);
    *even = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)));
    *odd = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
}
/* The four sums of 16 lanes, each a fixed tree: halves, then as hsum4_256. */
static inline __m256 gv_fold(gemv_vec a)
{
    return _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
}
#else
#define GEMV_W 8
#define GEMV_SUFFIX "avx2"
typedef __m256 gemv_vec;
static inline gemv_vec gv_zero(void) { return _mm256_setzero_ps(); }
static inline gemv_vec gv_load(const float *p) { return _mm256_loadu_ps(p); }
static inline gemv_vec gv_set1(float v) { return _mm256_set1_ps(v); }
static inline gemv_vec gv_add(gemv_vec a, gemv_vec b) { return _mm256_add_ps(a, b); }
static inline gemv_vec gv_fmadd(gemv_vec a, gemv_vec b, gemv_vec c) { return _mm256_fmadd_ps(a, b, c); }
/* 8 8-bit codes from p, as floats. */
static inline gemv_vec gv_decode_q8(const uint8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p)));
}
/* 16 4-bit codes from the 8 bytes at p: even codes into *even, odd into *odd. */
static inline void gv_decode_q4(const uint8_t *p, gemv_vec *even, gemv_vec *odd)
{
    __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
    *even = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15)));
    *odd = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
}
static inline __m256 gv_fold(gemv_vec a)
{
    return a;
}
#endif

/* out[i] = the sum of the 8 lanes of v[i], i < 4, as one fixed tree. */
static inline void hsum4_256(const __m256 v[4], float out[4])
{
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
}

/* The parameters of row r, group g, read in place (zero_implicit is the
 * symmetric grid's zero point when the tensor stores no zeros). */
static inline ngq_qparams gemv_params(const ngq_qtensor *q, int64_t r, int64_t g, float zero_implicit)
{
    const int64_t i = q->grid.granularity == NGQ_GRAN_TENSOR ? 0 : r * q->groups_per_row + g;
    ngq_qparams p;
#ifdef __F16C__
    p.scale = q->scales_f16 ? _cvtsh_ss(q->scales_f16[i]) : q->scales_f32[i];
#else
    p.scale = q->scales_f16 ? ngq_f16_to_f32(q->scales_f16[i]) : q->scales_f32[i];
#endif
    p.zero = q->zeros ? (float)q->zeros[i] : zero_implicit;
    return p;
}

/* Rows r[0..GEMV_ROWS) against x (cols) -> out: the 8-bit kernel. xv is x;
 * xsum (groups_per_row) the group sums of x. */
static void gemv_rows_q8(const ngq_qtensor *q, const int64_t *r, const float *x, const float *xv, const float *xsum,
                         float zero_implicit, int64_t gsize, float *out)
{
    const uint8_t *row[GEMV_ROWS];
    for (int i = 0; i < GEMV_ROWS; i++) row[i] = q->codes + r[i] * q->row_bytes;
    gemv_vec acc[GEMV_ROWS];
    float tail[GEMV_ROWS], zterm[GEMV_ROWS];
    for (int i = 0; i < GEMV_ROWS; i++) {
        acc[i] = gv_zero();
        tail[i] = zterm[i] = 0.0f;
    }
    for (int64_t g = 0; g < q->groups_per_row; g++) {
        const int64_t c1 = (g + 1) * gsize;
        int64_t j = g * gsize;
        gemv_vec a[GEMV_ROWS], b[GEMV_ROWS];
        for (int i = 0; i < GEMV_ROWS; i++) a[i] = b[i] = gv_zero();
        for (; j + 2 * GEMV_W <= c1; j += 2 * GEMV_W) {
            const gemv_vec x0 = gv_load(xv + j), x1 = gv_load(xv + j + GEMV_W);
            for (int i = 0; i < GEMV_ROWS; i++) {
                a[i] = gv_fmadd(gv_decode_q8(row[i] + j), x0, a[i]);
                b[i] = gv_fmadd(gv_decode_q8(row[i] + j + GEMV_W), x1, b[i]);
            }
        }
        for (; j + GEMV_W <= c1; j += GEMV_W) {
            const gemv_vec x0 = gv_load(xv + j);
            for (int i = 0; i < GEMV_ROWS; i++) a[i] = gv_fmadd(gv_decode_q8(row[i] + j), x0, a[i]);
        }
        float t[GEMV_ROWS] = {0.0f};
        for (; j < c1; j++)
            for (int i = 0; i < GEMV_ROWS; i++) t[i] += code_q8(row[i], j) * x[j];
        for (int i = 0; i < GEMV_ROWS; i++) {
            const ngq_qparams p = gemv_params(q, r[i], g, zero_implicit);
            acc[i] = gv_fmadd(gv_set1(p.scale), gv_add(a[i], b[i]), acc[i]);
            tail[i] += p.scale * t[i];
            zterm[i] += p.scale * p.zero * xsum[g];
        }
    }
    __m256 folded[GEMV_ROWS];
    float sums[GEMV_ROWS];
    for (int i = 0; i < GEMV_ROWS; i++) folded[i] = gv_fold(acc[i]);
    for (int i = 0; i < GEMV_ROWS; i += 4) hsum4_256(folded + i, sums + i);
    for (int i = 0; i < GEMV_ROWS; i++) out[i] = (sums[i] + tail[i]) - zterm[i];
}

/* The 4-bit kernel: as gemv_rows_q8, with xv the copy of x de-interleaved in
 * blocks of 2 * GEMV_W (deinterleave_block). */
static void gemv_rows_q4(const ngq_qtensor *q, const int64_t *r, const float *x, const float *xv, const float *xsum,
                         float zero_implicit, int64_t gsize, float *out)
{
    const uint8_t *row[GEMV_ROWS];
    for (int i = 0; i < GEMV_ROWS; i++) row[i] = q->codes + r[i] * q->row_bytes;
    gemv_vec acc[GEMV_ROWS];
    float tail[GEMV_ROWS], zterm[GEMV_ROWS];
    for (int i = 0; i < GEMV_ROWS; i++) {
        acc[i] = gv_zero();
        tail[i] = zterm[i] = 0.0f;
    }
    for (int64_t g = 0; g < q->groups_per_row; g++) {
        const int64_t c1 = (g + 1) * gsize;
        int64_t j = g * gsize;
        gemv_vec a[GEMV_ROWS], b[GEMV_ROWS];
        for (int i = 0; i < GEMV_ROWS; i++) a[i] = b[i] = gv_zero();
        for (; j + 2 * GEMV_W <= c1; j += 2 * GEMV_W) {
            const gemv_vec x0 = gv_load(xv + j), x1 = gv_load(xv + j + GEMV_W);
            for (int i = 0; i < GEMV_ROWS; i++) {
                gemv_vec even, odd;
                gv_decode_q4(row[i] + (j >> 1), &even, &odd);
                a[i] = gv_fmadd(even, x0, a[i]);
                b[i] = gv_fmadd(odd, x1, b[i]);
            }
        }
        float t[GEMV_ROWS] = {0.0f};
        for (; j < c1; j++)
            for (int i = 0; i < GEMV_ROWS; i++) t[i] += code_q4(row[i], j) * x[j];
        for (int i = 0; i < GEMV_ROWS; i++) {
            const ngq_qparams p = gemv_params(q, r[i], g, zero_implicit);
            acc[i] = gv_fmadd(gv_set1(p.scale), gv_add(a[i], b[i]), acc[i]);
            tail[i] += p.scale * t[i];
            zterm[i] += p.scale * p.zero * xsum[g];
        }
    }
    __m256 folded[GEMV_ROWS];
    float sums[GEMV_ROWS];
    for (int i = 0; i < GEMV_ROWS; i++) folded[i] = gv_fold(acc[i]);
    for (int i = 0; i < GEMV_ROWS; i += 4) hsum4_256(folded + i, sums + i);
    for (int i = 0; i < GEMV_ROWS; i++) out[i] = (sums[i] + tail[i]) - zterm[i];
}

typedef void (*gemv_rows_fn)(const ngq_qtensor *q, const int64_t *r, const float *x, const float *xv,
                             const float *xsum, float zero_implicit, int64_t gsize, float *out);
#endif

/* xd (cols) = x with each aligned run of `block` elements reordered as its
 * even then its odd elements, the order the 4-bit decoders yield codes in; a
 * tail shorter than block is copied as is (the kernels read it from x). */
static void deinterleave_block(const float *x, int64_t cols, int64_t block, float *xd)
{
    const int64_t half = block / 2;
    int64_t j = 0;
    for (; j + block <= cols; j += block)
        for (int64_t k = 0; k < half; k++) {
            xd[j + k] = x[j + 2 * k];
            xd[j + half + k] = x[j + 2 * k + 1];
        }
    for (; j < cols; j++) xd[j] = x[j];
}

/* ---- the kernel table ------------------------------------------------------- */

/* Weight rows [r0, r1) against x (n, cols) -> y (n, rows); xv is x, or for
 * 4-bit its de-interleaved copy. */
typedef void (*row_kernel_fn)(const ngq_qtensor *q, int64_t r0, int64_t r1, const float *x, const float *xv,
                              int64_t n, const float *bias, float *y);

typedef struct {
    int bits;
    const char *name;
    row_kernel_fn fused; /* NULL: the generic row kernel */
} qmatmul_kernel;

#ifdef __AVX2__
#define FUSED(f) f
#else
#define FUSED(f) NULL
#endif

static const qmatmul_kernel kernel_table[] = {
    {2, "row_generic", NULL},
    {3, "row_generic", NULL},
    {4, "q4_avx2", FUSED(rows_fused_q4)},
    {5, "row_generic", NULL},
    {6, "row_generic", NULL},
    {7, "row_generic", NULL},
    {8, "q8_avx2", FUSED(rows_fused_q8)},
};
_Static_assert(sizeof kernel_table / sizeof kernel_table[0] == NGQ_QUANT_MAX_BITS - NGQ_QUANT_MIN_BITS + 1,
               "one kernel entry per bit width");
/* The fused kernels decode 16 codes at a time: 16 bytes of 8-bit codes, or
 * two 4-byte blocks of 4-bit codes. */
_Static_assert(16 % NGQ_QBLOCK_CODES == 0, "16 codes are whole packed blocks");

/* The fused kernel usable for q, or NULL. */
static row_kernel_fn fused_kernel_for(const ngq_qtensor *q)
{
    const qmatmul_kernel *k = &kernel_table[q->grid.bits - NGQ_QUANT_MIN_BITS];
    if (!k->fused || q->g_idx) return NULL;
    int64_t gsize = q->cols / q->groups_per_row;
    if (q->grid.bits == 4 && q->groups_per_row > 1 && gsize % 16 != 0) return NULL; /* groups start on blocks */
    return k->fused;
}

#ifdef __AVX2__
/* The n = 1 kernel usable for q, or NULL: that of the fused kernel's format,
 * when 4-bit groups start on whole de-interleaved blocks of 2 * GEMV_W. */
static gemv_rows_fn gemv_kernel_for(const ngq_qtensor *q)
{
    if (!fused_kernel_for(q)) return NULL;
    if (q->grid.bits == 8) return gemv_rows_q8;
    if (q->groups_per_row > 1 && (q->cols / q->groups_per_row) % (2 * GEMV_W) != 0) return NULL;
    return gemv_rows_q4;
}
#endif

const char *ngq_qmatmul_kernel_name(const ngq_qtensor *q, int64_t n)
{
    if (n >= NGQ_QMATMUL_SMALL_N) return "tile_sgemm";
#ifdef __AVX2__
    if (n == 1 && gemv_kernel_for(q)) return q->grid.bits == 8 ? "q8_gemv_" GEMV_SUFFIX : "q4_gemv_" GEMV_SUFFIX;
#endif
    if (fused_kernel_for(q)) return kernel_table[q->grid.bits - NGQ_QUANT_MIN_BITS].name;
    return "row_generic";
}

/* ---- the two paths ------------------------------------------------------------ */

#ifdef __AVX2__
/* Rows [blk * GEMV_ROWS, (blk + 1) * GEMV_ROWS) of y (rows) = x @ dequant(q)^T
 * + bias; a short last block repeats its last row and stores only its own. */
static inline void gemv_block(const ngq_qtensor *q, gemv_rows_fn gemv, int64_t blk, const float *x, const float *xv,
                              const float *xsum, float zero_implicit, int64_t gsize, const float *bias, float *y)
{
    int64_t r[GEMV_ROWS];
    float out[GEMV_ROWS];
    for (int i = 0; i < GEMV_ROWS; i++) {
        r[i] = blk * GEMV_ROWS + i;
        if (r[i] >= q->rows) r[i] = q->rows - 1;
    }
    gemv(q, r, x, xv, xsum, zero_implicit, gsize, out);
    for (int i = 0; i < GEMV_ROWS && blk * GEMV_ROWS + i < q->rows; i++)
        y[r[i]] = out[i] + (bias ? bias[r[i]] : 0.0f);
}

/* x (cols) -> y (rows) with an n = 1 kernel, blocks of GEMV_ROWS rows split
 * statically over the threads. */
static ngq_status qmatmul_gemv(const ngq_qtensor *q, gemv_rows_fn gemv, const float *x, const float *bias, float *y,
                               int parallel, ngq_error *err)
{
    const int64_t rows = q->rows, cols = q->cols, groups = q->groups_per_row;
    const int64_t extra = q->grid.bits == 4 ? cols : 0;
    float stack_buf[1024];
    float *buf = stack_buf;
    if (groups + extra > (int64_t)(sizeof stack_buf / sizeof stack_buf[0])) {
        buf = malloc((size_t)(groups + extra) * sizeof *buf);
        if (!buf) return ngq_fail(err, NGQ_ERR_NOMEM, "qmatmul: cannot allocate %lld floats", (long long)(groups + extra));
    }
    float *xsum = buf;
    const float *xv = x;
    if (extra) {
        deinterleave_block(x, cols, 2 * GEMV_W, buf + groups);
        xv = buf + groups;
    }
    const int64_t gsize = cols / groups;
    for (int64_t g = 0; g < groups; g++) {
        float s = 0.0f;
        for (int64_t j = g * gsize; j < (g + 1) * gsize; j++) s += x[j];
        xsum[g] = s;
    }
    const float zero_implicit = q->zeros ? 0.0f : ngq_qtensor_get_params(q, 0, 0).zero;
    const int64_t nblocks = (rows + GEMV_ROWS - 1) / GEMV_ROWS;
    const int nthreads = parallel ? omp_get_max_threads() : 1;
    if (nthreads > 1) { /* a team of one still costs a parallel region's set-up */
        #pragma omp parallel for schedule(static)
        for (int64_t blk = 0; blk < nblocks; blk++) gemv_block(q, gemv, blk, x, xv, xsum, zero_implicit, gsize, bias, y);
    } else {
        for (int64_t blk = 0; blk < nblocks; blk++) gemv_block(q, gemv, blk, x, xv, xsum, zero_implicit, gsize, bias, y);
    }
    if (buf != stack_buf) free(buf);
    return NGQ_OK;
}
#endif

/* x (n, cols) -> y (n, rows), one output row at a time, rows split statically. */
static ngq_status qmatmul_rows(const ngq_qtensor *q, const float *x, int64_t n, const float *bias, float *y,
                               ngq_error *err)
{
    row_kernel_fn fused = fused_kernel_for(q);
    const int64_t rows = q->rows, cols = q->cols;
    const int parallel = rows * cols * n > 32768;
#ifdef __AVX2__
    gemv_rows_fn gemv = n == 1 ? gemv_kernel_for(q) : NULL;
    if (gemv) return qmatmul_gemv(q, gemv, x, bias, y, parallel, err);
#endif
    if (fused) { /* pairs of rows, so a pair never straddles two threads */
        float *xd = NULL;
        if (q->grid.bits == 4) {
            xd = malloc((size_t)(n * cols) * sizeof *xd);
            if (!xd) return ngq_fail(err, NGQ_ERR_NOMEM, "qmatmul: cannot allocate %lld floats", (long long)(n * cols));
            for (int64_t k = 0; k < n; k++) deinterleave_block(x + k * cols, cols, 16, xd + k * cols);
        }
        const float *xv = xd ? xd : x;
        const int64_t npairs = (rows + 1) / 2;
        #pragma omp parallel for schedule(static) if (parallel)
        for (int64_t p = 0; p < npairs; p++)
            fused(q, 2 * p, 2 * p + 2 < rows ? 2 * p + 2 : rows, x, xv, n, bias, y);
        free(xd);
        return NGQ_OK;
    }
    int nomem = 0;
    #pragma omp parallel if (parallel) reduction(max : nomem)
    {
        float *buf = malloc((size_t)cols * sizeof *buf);
        if (!buf) nomem = 1;
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            if (buf) row_generic(q, r, x, n, bias, y, buf);
        free(buf);
    }
    if (nomem) return ngq_fail(err, NGQ_ERR_NOMEM, "qmatmul: cannot allocate a row buffer of %lld floats", (long long)cols);
    return NGQ_OK;
}

/* x (n, cols) -> y (n, rows): slice s of the output rows is dequantized tile by
 * tile into a per-slice buffer and multiplied with cblas_sgemm. */
static ngq_status qmatmul_tiles(const ngq_qtensor *q, const float *x, int64_t n, const float *bias, float *y,
                                ngq_error *err)
{
    const int64_t rows = q->rows, cols = q->cols;
    int64_t nslices = omp_get_max_threads();
    if (nslices > rows) nslices = rows;
    if (nslices < 1) nslices = 1;
    int64_t tile = NGQ_QMATMUL_TILE_FLOATS / cols;
    if (tile < 1) tile = 1;
    int nomem = 0;
    #pragma omp parallel for schedule(static) reduction(max : nomem)
    for (int64_t s = 0; s < nslices; s++) {
        const int64_t r0 = rows * s / nslices, r1 = rows * (s + 1) / nslices;
        const int64_t t = tile < r1 - r0 ? tile : r1 - r0;
        float *buf = malloc((size_t)(t * cols) * sizeof *buf);
        if (!buf) {
            nomem = 1;
            continue;
        }
        for (int64_t rt = r0; rt < r1; rt += t) {
            const int64_t nr = r1 - rt < t ? r1 - rt : t;
            for (int64_t i = 0; i < nr; i++) ngq_qtensor_dequantize_row(q, rt + i, buf + i * cols);
            /* y[:, rt:rt+nr] = x @ buf^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)nr, (int)cols, 1.0f, x, (int)cols, buf,
                        (int)cols, 0.0f, y + rt, (int)rows);
            if (bias)
                for (int64_t k = 0; k < n; k++)
                    for (int64_t i = 0; i < nr; i++) y[k * rows + rt + i] += bias[rt + i];
        }
        free(buf);
    }
    if (nomem) return ngq_fail(err, NGQ_ERR_NOMEM, "qmatmul: cannot allocate a tile of %lld x %lld floats",
                               (long long)tile, (long long)cols);
    return NGQ_OK;
}

ngq_status ngq_qmatmul(const ngq_qtensor *q, const float *x, int64_t n, const float *bias, float *y, ngq_error *err)
{
    ngq_status st = check_args(q, x, n, y, err);
    if (st || n == 0) return st;
    if (n >= NGQ_QMATMUL_SMALL_N) return qmatmul_tiles(q, x, n, bias, y, err);
    return qmatmul_rows(q, x, n, bias, y, err);
}

ngq_status ngq_qmatmul_reference(const ngq_qtensor *q, const float *x, int64_t n, const float *bias, float *y,
                                 ngq_error *err)
{
    ngq_status st = check_args(q, x, n, y, err);
    if (st || n == 0) return st;
    float *w = malloc((size_t)(q->rows * q->cols) * sizeof *w);
    if (!w) return ngq_fail(err, NGQ_ERR_NOMEM, "qmatmul reference: cannot allocate [%lld, %lld] floats",
                            (long long)q->rows, (long long)q->cols);
    ngq_qtensor_dequantize(q, w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)q->rows, (int)q->cols, 1.0f, x, (int)q->cols, w,
                (int)q->cols, 0.0f, y, (int)q->rows);
    if (bias)
        for (int64_t k = 0; k < n; k++)
            for (int64_t r = 0; r < q->rows; r++) y[k * q->rows + r] += bias[r];
    free(w);
    return NGQ_OK;
}
