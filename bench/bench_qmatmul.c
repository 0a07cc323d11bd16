/* bench_qmatmul.c: throughput of the packed matmul (8-bit and 4-bit, RTN
 * per-channel) against fp32 cblas_sgemv / cblas_sgemm on the reference
 * model's linear shapes, at n = 1 (generation) and n = 4096 (evaluation),
 * plus a sweep over all 24 layers at n = 1 where the fp32 weights no longer
 * sit in the core's cache. Baselines: OpenBLAS on one thread, and the same
 * call split into output-row slices over the OpenMP threads (what a caller
 * would do with fp32 weights). Prints GFLOP/s and ratios; it is not a test. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "nanogptq/common.h"
#include "nanogptq/qmatmul.h"
#include "nanogptq/quant.h"
#include "nanogptq/rng.h"

#define NLAYERS 24

static const int64_t shapes[4][2] = {{576, 192}, {192, 192}, {768, 192}, {192, 768}};
static const char *const shape_names[4] = {"c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"};

/* y (n, rows) = x (n, cols) @ w^T, fp32, output rows split over threads. */
static void fp32_split(const float *w, int64_t rows, int64_t cols, const float *x, int64_t n, float *y)
{
    int64_t ns = omp_get_max_threads();
    #pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < ns; s++) {
        int64_t r0 = rows * s / ns, r1 = rows * (s + 1) / ns;
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)(r1 - r0), (int)cols, 1.0f, w + r0 * cols, (int)cols, x, 1,
                        0.0f, y + r0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)(r1 - r0), (int)cols, 1.0f, x, (int)cols,
                        w + r0 * cols, (int)cols, 0.0f, y + r0, (int)rows);
    }
}

static void fp32_single(const float *w, int64_t rows, int64_t cols, const float *x, int64_t n, float *y)
{
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)cols, 1.0f, w, (int)cols, x, 1, 0.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)rows, (int)cols, 1.0f, x, (int)cols, w,
                    (int)cols, 0.0f, y, (int)rows);
}

typedef struct {
    float *w[NLAYERS];
    ngq_qtensor q8[NLAYERS], q4[NLAYERS];
    int64_t rows[NLAYERS], cols[NLAYERS];
} model;

static void run_variant(model *m, int variant, int l0, int l1, const float *x, int64_t n, float *y)
{
    ngq_error err = {0};
    for (int l = l0; l < l1; l++) {
        switch (variant) {
        case 0: fp32_single(m->w[l], m->rows[l], m->cols[l], x, n, y); break;
        case 1: fp32_split(m->w[l], m->rows[l], m->cols[l], x, n, y); break;
        case 2: ngq_qmatmul(&m->q8[l], x, n, NULL, y, &err); break;
        case 3: ngq_qmatmul(&m->q4[l], x, n, NULL, y, &err); break;
        }
    }
}

/* Seconds per pass over layers [l0, l1) of the given variant (0 fp32 single,
 * 1 fp32 split, 2 q8, 3 q4): the best of repeated trials of about 5 ms each
 * over min_seconds, so that time slices lost to other processes on a shared
 * machine do not count. */
static double time_variant(model *m, int variant, int l0, int l1, const float *x, int64_t n, float *y,
                           double min_seconds)
{
    run_variant(m, variant, l0, l1, x, n, y); /* warm up */
    double t0 = ngq_now_seconds();
    run_variant(m, variant, l0, l1, x, n, y);
    double once = ngq_now_seconds() - t0;
    long reps = once > 0.005 ? 1 : (long)(0.005 / (once > 1e-7 ? once : 1e-7)) + 1;
    double best = 1e30, start = ngq_now_seconds();
    do {
        t0 = ngq_now_seconds();
        for (long i = 0; i < reps; i++) run_variant(m, variant, l0, l1, x, n, y);
        double t = (ngq_now_seconds() - t0) / (double)reps;
        if (t < best) best = t;
    } while (ngq_now_seconds() - start < min_seconds);
    return best;
}

int main(void)
{
    openblas_set_num_threads(1);
    printf("bench_qmatmul | nanogptq %s | %d OpenMP threads, OpenBLAS single-threaded (%s)\n", NGQ_VERSION_STRING,
           omp_get_max_threads(), openblas_get_config());
    model m;
    ngq_rng rng;
    ngq_rng_seed(&rng, 1, 0);
    ngq_error err = {0};
    ngq_qgrid g8, g4;
    ngq_qgrid_default(&g8, 8);
    ngq_qgrid_default(&g4, 4);
    for (int l = 0; l < NLAYERS; l++) {
        m.rows[l] = shapes[l % 4][0];
        m.cols[l] = shapes[l % 4][1];
        int64_t sz = m.rows[l] * m.cols[l];
        m.w[l] = malloc((size_t)sz * sizeof(float));
        if (!m.w[l]) return 1;
        for (int64_t i = 0; i < sz; i++) m.w[l][i] = 0.02f * ngq_rng_normal(&rng);
        if (ngq_quant_rtn(m.w[l], m.rows[l], m.cols[l], &g8, &m.q8[l], &err) ||
            ngq_quant_rtn(m.w[l], m.rows[l], m.cols[l], &g4, &m.q4[l], &err)) {
            fprintf(stderr, "bench_qmatmul: %s\n", err.message);
            return 1;
        }
    }
    const int64_t nbig = 4096;
    float *x = malloc((size_t)(nbig * 768) * sizeof *x);
    float *y = malloc((size_t)(nbig * 768) * sizeof *y);
    if (!x || !y) return 1;
    for (int64_t i = 0; i < nbig * 768; i++) x[i] = ngq_rng_normal(&rng);

    static const char *const vname[4] = {"fp32 1-thread", "fp32 split", "q8", "q4"};
    for (int ni = 0; ni < 2; ni++) {
        const int64_t n = ni == 0 ? 1 : nbig;
        printf("\nn = %lld (%s)\n", (long long)n, n == 1 ? "sgemv baseline" : "sgemm baseline");
        printf("%-12s %-10s %12s %12s %12s %12s | %9s %9s\n", "layer", "shape", vname[0], vname[1], vname[2], vname[3],
               "q8/split", "q4/split");
        for (int s = 0; s < 4; s++) {
            double sec[4], flops = 2.0 * (double)n * (double)(shapes[s][0] * shapes[s][1]);
            for (int v = 0; v < 4; v++) sec[v] = time_variant(&m, v, s, s + 1, x, n, y, n == 1 ? 0.2 : 0.5);
            char shape[32];
            snprintf(shape, sizeof shape, "%lldx%lld", (long long)shapes[s][0], (long long)shapes[s][1]);
            printf("%-12s %-10s", shape_names[s], shape);
            for (int v = 0; v < 4; v++) printf(" %7.2f GF/s", flops / sec[v] * 1e-9);
            printf(" | %8.2fx %8.2fx\n", sec[1] / sec[2], sec[1] / sec[3]);
        }
    }

    /* All 24 layers one after the other at n = 1: fp32 weights (10.6 MB)
     * spill out of L2, packed ones (1.3-2.7 MB) much less. */
    double flops = 0.0, sec[4];
    for (int l = 0; l < NLAYERS; l++) flops += 2.0 * (double)(m.rows[l] * m.cols[l]);
    for (int v = 0; v < 4; v++) sec[v] = time_variant(&m, v, 0, NLAYERS, x, 1, y, 0.5);
    printf("\nall %d layers at n = 1 (one generated token's linear layers):\n", NLAYERS);
    for (int v = 0; v < 4; v++)
        printf("  %-14s %8.1f us/token  %7.2f GFLOP/s  %5.2fx vs fp32 split\n", vname[v], sec[v] * 1e6,
               flops / sec[v] * 1e-9, sec[1] / sec[v]);

    /* One layer far larger than the caches (64 MiB of fp32 weights): at
     * n = 1 the fp32 product is bound by memory bandwidth. */
    {
        const int64_t rows = 4096, cols = 4096;
        model big;
        big.rows[0] = rows;
        big.cols[0] = cols;
        big.w[0] = malloc((size_t)(rows * cols) * sizeof(float));
        float *xb = malloc((size_t)cols * sizeof *xb), *yb = malloc((size_t)rows * sizeof *yb);
        if (!big.w[0] || !xb || !yb) return 1;
        for (int64_t i = 0; i < rows * cols; i++) big.w[0][i] = 0.02f * ngq_rng_normal(&rng);
        for (int64_t i = 0; i < cols; i++) xb[i] = ngq_rng_normal(&rng);
        if (ngq_quant_rtn(big.w[0], rows, cols, &g8, &big.q8[0], &err) ||
            ngq_quant_rtn(big.w[0], rows, cols, &g4, &big.q4[0], &err)) {
            fprintf(stderr, "bench_qmatmul: %s\n", err.message);
            return 1;
        }
        double f = 2.0 * (double)(rows * cols), sb[4];
        for (int v = 0; v < 4; v++) sb[v] = time_variant(&big, v, 0, 1, xb, 1, yb, 0.5);
        printf("\none 4096x4096 layer at n = 1 (fp32 weights 64 MiB, beyond the caches):\n");
        for (int v = 0; v < 4; v++)
            printf("  %-14s %8.1f us  %7.2f GFLOP/s  %5.2fx vs fp32 split\n", vname[v], sb[v] * 1e6, f / sb[v] * 1e-9,
                   sb[1] / sb[v]);
        free(big.w[0]);
        ngq_qtensor_free(&big.q8[0]);
        ngq_qtensor_free(&big.q4[0]);
        free(xb);
        free(yb);
    }
    for (int l = 0; l < NLAYERS; l++) {
        free(m.w[l]);
        ngq_qtensor_free(&m.q8[l]);
        ngq_qtensor_free(&m.q4[l]);
    }
    free(x);
    free(y);
    return 0;
}
