/* test_qmatmul.c: the packed matmul kernels agree with the reference path
 * (dequantize, then cblas_sgemm) to float rounding for every width, grid and
 * n (1, small, large; with and without bias; groups, tails, act-order g_idx),
 * pick the documented kernel, and are deterministic.
 * Tolerance: |y - y_ref| <= 1e-5 * sum_j |x_j w_j| + 1e-30 per element. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/qmatmul.h"
#include "nanogptq/quant.h"
#include "nanogptq/rng.h"

static void fill_normal(ngq_rng *rng, float *v, int64_t n, float sd)
{
    for (int64_t i = 0; i < n; i++) v[i] = sd * ngq_rng_normal(rng);
}

/* Compares ngq_qmatmul with the reference for q and n inputs; returns the
 * largest error relative to the per-element bound. */
static double check_against_reference(const ngq_qtensor *q, int64_t n, int with_bias, uint64_t seed)
{
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 1);
    const int64_t rows = q->rows, cols = q->cols;
    float *x = malloc((size_t)(n * cols) * sizeof *x);
    float *bias = malloc((size_t)rows * sizeof *bias);
    float *y = malloc((size_t)(n * rows) * sizeof *y);
    float *yref = malloc((size_t)(n * rows) * sizeof *yref);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    assert_non_null(x);
    assert_non_null(bias);
    assert_non_null(y);
    assert_non_null(yref);
    assert_non_null(w);
    fill_normal(&rng, x, n * cols, 1.0f);
    fill_normal(&rng, bias, rows, 0.1f);
    ngq_error err = {0};
    assert_int_equal(ngq_qmatmul(q, x, n, with_bias ? bias : NULL, y, &err), NGQ_OK);
    assert_int_equal(ngq_qmatmul_reference(q, x, n, with_bias ? bias : NULL, yref, &err), NGQ_OK);
    ngq_qtensor_dequantize(q, w);
    double worst = 0.0;
    for (int64_t k = 0; k < n; k++)
        for (int64_t r = 0; r < rows; r++) {
            double mag = 0.0;
            for (int64_t j = 0; j < cols; j++) mag += fabs((double)x[k * cols + j] * w[r * cols + j]);
            double bound = 1e-5 * mag + 1e-30;
            double diff = fabs((double)y[k * rows + r] - yref[k * rows + r]);
            assert_true(isfinite(y[k * rows + r]));
            if (diff / bound > worst) worst = diff / bound;
        }
    /* determinism: the same call again gives the same bits */
    float *y2 = malloc((size_t)(n * rows) * sizeof *y2);
    assert_non_null(y2);
    assert_int_equal(ngq_qmatmul(q, x, n, with_bias ? bias : NULL, y2, &err), NGQ_OK);
    assert_memory_equal(y, y2, (size_t)(n * rows) * sizeof *y);
    free(y2);
    free(x);
    free(bias);
    free(y);
    free(yref);
    free(w);
    return worst;
}

static void make_rtn(int64_t rows, int64_t cols, const ngq_qgrid *g, uint64_t seed, ngq_qtensor *q)
{
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 0);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    assert_non_null(w);
    fill_normal(&rng, w, rows * cols, 0.05f);
    ngq_error err = {0};
    ngq_status st = ngq_quant_rtn(w, rows, cols, g, q, &err);
    if (st) fail_msg("RTN: %s", err.message);
    free(w);
}

static void test_kernels_match_reference(void **state)
{
    (void)state;
    static const int64_t ns[] = {1, 2, 3, 5, 7, 8, 33};
    static const int bits_list[] = {8, 4, 3, 2, 5, 6, 7};
    for (size_t b = 0; b < sizeof bits_list / sizeof bits_list[0]; b++) {
        const int bits = bits_list[b];
        for (int variant = 0; variant < 4; variant++) {
            ngq_qgrid g;
            ngq_qgrid_default(&g, bits);
            int64_t rows = 37, cols = 192;
            if (variant == 1) { /* groups, symmetric, fp16 scales */
                g.granularity = NGQ_GRAN_GROUP;
                g.group_size = 32;
                g.symmetric = 1;
                g.scale_dtype = NGQ_SCALE_F16;
            } else if (variant == 2) { /* per tensor, a width with vector tails */
                g.granularity = NGQ_GRAN_TENSOR;
                cols = 100;
            } else if (variant == 3) { /* groups of 24: 8-code steps and scalar tails */
                g.granularity = NGQ_GRAN_GROUP;
                g.group_size = 24;
                cols = 120;
            }
            ngq_qtensor q;
            make_rtn(rows, cols, &g, 100 + (uint64_t)(bits * 10 + variant), &q);
            for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
                double worst = check_against_reference(&q, ns[i], (int)(i % 2), 7 + i);
                if (worst > 1.0)
                    fail_msg("bits %d variant %d n %lld: error %.3g x the bound", bits, variant, (long long)ns[i],
                             worst);
            }
            ngq_qtensor_free(&q);
        }
    }
}

static void test_model_shapes_n1_and_large(void **state)
{
    (void)state;
    /* the reference model's shapes at 8 and 4 bits, n = 1 and n = 300 */
    static const int64_t shapes[4][2] = {{576, 192}, {192, 192}, {768, 192}, {192, 768}};
    for (int bits = 4; bits <= 8; bits += 4)
        for (int s = 0; s < 4; s++) {
            ngq_qgrid g;
            ngq_qgrid_default(&g, bits);
            if (s % 2) {
                g.granularity = NGQ_GRAN_GROUP;
                g.group_size = 64;
            }
            ngq_qtensor q;
            make_rtn(shapes[s][0], shapes[s][1], &g, 500 + (uint64_t)s, &q);
            assert_true(check_against_reference(&q, 1, 1, 1) <= 1.0);
            assert_true(check_against_reference(&q, 300, 0, 2) <= 1.0);
            ngq_qtensor_free(&q);
        }
}

static void test_g_idx_and_odd_groups(void **state)
{
    (void)state;
    ngq_rng rng;
    ngq_rng_seed(&rng, 4, 0);
    /* an act-order style g_idx: a random permutation split into groups */
    for (int bits = 3; bits <= 8; bits++) {
        ngq_qgrid g;
        ngq_qgrid_default(&g, bits);
        g.granularity = NGQ_GRAN_GROUP;
        g.group_size = 16;
        const int64_t rows = 20, cols = 64;
        ngq_qtensor q;
        ngq_error err = {0};
        assert_int_equal(ngq_qtensor_init(&q, rows, cols, &g, 1, &err), NGQ_OK);
        int32_t perm[64];
        for (int i = 0; i < 64; i++) perm[i] = i;
        for (int i = 63; i > 0; i--) {
            int j = (int)ngq_rng_below(&rng, (uint32_t)i + 1);
            int32_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int j = 0; j < 64; j++) q.g_idx[perm[j]] = j / 16;
        uint8_t codes[64];
        int maxq = (1 << bits) - 1;
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t grp = 0; grp < 4; grp++) {
                ngq_qparams p = {0.01f * (float)(1 + ngq_rng_below(&rng, 10)), (float)ngq_rng_below(&rng, (uint32_t)maxq + 1)};
                assert_int_equal(ngq_qtensor_set_params(&q, r, grp, p, &err), NGQ_OK);
            }
            for (int c = 0; c < 64; c++) codes[c] = (uint8_t)ngq_rng_below(&rng, (uint32_t)maxq + 1);
            assert_int_equal(ngq_qtensor_set_row_codes(&q, r, codes, &err), NGQ_OK);
        }
        assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_OK);
        assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "row_generic");
        assert_true(check_against_reference(&q, 1, 1, 3) <= 1.0);
        assert_true(check_against_reference(&q, 3, 0, 4) <= 1.0);
        assert_true(check_against_reference(&q, 20, 1, 5) <= 1.0);
        ngq_qtensor_free(&q);
    }
    /* 4-bit with odd groups: groups do not start on a byte -> generic kernel */
    ngq_qgrid g;
    ngq_qgrid_default(&g, 4);
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 5;
    ngq_qtensor q;
    make_rtn(9, 45, &g, 77, &q);
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "row_generic");
    assert_true(check_against_reference(&q, 1, 0, 6) <= 1.0);
    assert_true(check_against_reference(&q, 2, 1, 7) <= 1.0);
    ngq_qtensor_free(&q);
}

static void test_kernel_names_and_edge_cases(void **state)
{
    (void)state;
    ngq_qgrid g;
    ngq_qgrid_default(&g, 8);
    ngq_qtensor q;
    make_rtn(16, 64, &g, 1, &q);
#if defined(__AVX512F__)
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "q8_gemv_avx512");
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 2), "q8_avx2");
#elif defined(__AVX2__)
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "q8_gemv_avx2");
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 2), "q8_avx2");
#else
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "row_generic");
#endif
    assert_string_equal(ngq_qmatmul_kernel_name(&q, NGQ_QMATMUL_SMALL_N), "tile_sgemm");
    ngq_error err = {0};
    /* n = 0 is a no-op; a negative n is refused */
    float y = 42.0f;
    assert_int_equal(ngq_qmatmul(&q, NULL, 0, NULL, &y, &err), NGQ_OK);
    assert_true(y == 42.0f);
    assert_int_equal(ngq_qmatmul(&q, &y, -1, NULL, &y, &err), NGQ_ERR_INTERNAL);
    ngq_qtensor_free(&q);
    ngq_qgrid_default(&g, 4);
    make_rtn(16, 64, &g, 2, &q);
#ifdef __AVX2__
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 3), "q4_avx2");
#endif
    ngq_qtensor_free(&q);
    /* 4-bit groups must be multiples of 16 codes for the fused kernel */
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 16;
    make_rtn(16, 64, &g, 5, &q);
#if defined(__AVX512F__) /* the n = 1 kernel needs groups of 32 codes */
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "q4_avx2");
#elif defined(__AVX2__)
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "q4_gemv_avx2");
#endif
    assert_true(check_against_reference(&q, 1, 1, 12) <= 1.0);
    assert_true(check_against_reference(&q, 3, 0, 13) <= 1.0);
    ngq_qtensor_free(&q);
    g.group_size = 8;
    make_rtn(16, 64, &g, 6, &q);
    assert_string_equal(ngq_qmatmul_kernel_name(&q, 1), "row_generic");
    assert_true(check_against_reference(&q, 1, 1, 11) <= 1.0);
    ngq_qtensor_free(&q);
    /* a single column and a single row */
    ngq_qgrid_default(&g, 4);
    make_rtn(1, 1, &g, 3, &q);
    assert_true(check_against_reference(&q, 1, 1, 8) <= 1.0);
    assert_true(check_against_reference(&q, 9, 1, 9) <= 1.0);
    ngq_qtensor_free(&q);
    /* a tile smaller than the slice: cols large enough that several tiles run */
    ngq_qgrid_default(&g, 8);
    make_rtn(40, NGQ_QMATMUL_TILE_FLOATS / 8, &g, 4, &q);
    assert_true(check_against_reference(&q, 10, 1, 10) <= 1.0);
    ngq_qtensor_free(&q);
}

/* The n = 1 kernels take several weight rows per pass: every row count
 * (short last blocks), per-channel, group and fp16 grids, symmetric and
 * asymmetric, agree with the reference and give the same bits on one thread
 * and on several. */
static void test_gemv_rows_and_threads(void **state)
{
    (void)state;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int variant = 0; variant < 3; variant++)
            for (int64_t rows = 1; rows <= 19; rows += 3) {
                ngq_qgrid g;
                ngq_qgrid_default(&g, bits);
                int64_t cols = 192;
                if (variant == 1) {
                    g.granularity = NGQ_GRAN_GROUP;
                    g.group_size = 64;
                } else if (variant == 2) {
                    g.granularity = NGQ_GRAN_GROUP;
                    g.group_size = 32;
                    g.symmetric = 1;
                    g.scale_dtype = NGQ_SCALE_F16;
                    cols = 160;
                }
                ngq_qtensor q;
                make_rtn(rows, cols, &g, 900 + (uint64_t)(rows * 10 + variant), &q);
#ifdef __AVX2__
                assert_non_null(strstr(ngq_qmatmul_kernel_name(&q, 1), "_gemv_"));
#endif
                double worst = check_against_reference(&q, 1, (int)(rows % 2), 40 + (uint64_t)rows);
                if (worst > 1.0)
                    fail_msg("bits %d variant %d rows %lld: error %.3g x the bound", bits, variant, (long long)rows,
                             worst);
                ngq_qtensor_free(&q);
            }
    /* large enough to run in parallel: 1 thread and 2 threads agree bit for bit */
    ngq_qgrid g;
    ngq_qgrid_default(&g, 8);
    ngq_qtensor q8, q4;
    make_rtn(301, 192, &g, 31, &q8);
    ngq_qgrid_default(&g, 4);
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 64;
    make_rtn(301, 192, &g, 32, &q4);
    float x[192], y1[301], y2[301];
    ngq_rng rng;
    ngq_rng_seed(&rng, 33, 0);
    fill_normal(&rng, x, 192, 1.0f);
    const ngq_qtensor *qs[2] = {&q8, &q4};
    const int saved = omp_get_max_threads();
    for (int i = 0; i < 2; i++) {
        ngq_error err = {0};
        omp_set_num_threads(1);
        assert_int_equal(ngq_qmatmul(qs[i], x, 1, NULL, y1, &err), NGQ_OK);
        omp_set_num_threads(2);
        assert_int_equal(ngq_qmatmul(qs[i], x, 1, NULL, y2, &err), NGQ_OK);
        assert_memory_equal(y1, y2, sizeof y1);
    }
    omp_set_num_threads(saved);
    ngq_qtensor_free(&q8);
    ngq_qtensor_free(&q4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_match_reference),
        cmocka_unit_test(test_model_shapes_n1_and_large),
        cmocka_unit_test(test_g_idx_and_odd_groups),
        cmocka_unit_test(test_kernel_names_and_edge_cases),
        cmocka_unit_test(test_gemv_rows_and_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
