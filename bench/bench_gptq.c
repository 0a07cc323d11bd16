/* bench_gptq.c: GPTQ at 4 bits (per-channel, and groups of 64) on 24 layers
 * shaped like the reference model (C = 192; per block c_attn [576,192],
 * attn.c_proj [192,192], c_fc [768,192], mlp.c_proj [192,768]), each with a
 * Hessian streamed from 128 batches x 256 = 32,768 synthetic correlated input
 * rows. Times the Hessian accumulation and GPTQ (this module's share of a
 * quantize run; the calibration forward passes are not included) and RTN on
 * the same layers as the baseline. Synthetic-input generation is not timed.
 * Prints times, ratios and the mean relative output errors; not a test. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "nanogptq/common.h"
#include "nanogptq/gptq.h"
#include "nanogptq/quant.h"
#include "nanogptq/rng.h"

#define NLAYERS 24
#define NBATCH 128
#define BATCH_ROWS 256
#define LATENT 16

static const int64_t shapes[4][2] = {{576, 192}, {192, 192}, {768, 192}, {192, 768}};

/* Writes one batch x (BATCH_ROWS, cols) = z mix + noise, where z are fresh
 * latent draws, mix (LATENT, cols) is the layer's, and the noise is a window
 * of a pre-drawn pool (drawing 100M normals would dominate the run). */
static void make_batch(ngq_rng *rng, const float *mix, const float *noise, int64_t noise_len, int64_t cols, float *z,
                       float *x)
{
    for (int64_t i = 0; i < BATCH_ROWS * LATENT; i++) z[i] = ngq_rng_normal(rng);
    int64_t off = (int64_t)ngq_rng_below(rng, (uint32_t)(noise_len - BATCH_ROWS * cols));
    for (int64_t i = 0; i < BATCH_ROWS * cols; i++) x[i] = noise[off + i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, BATCH_ROWS, (int)cols, LATENT, 1.0f, z, LATENT, mix,
                (int)cols, 1.0f, x, (int)cols);
}

int main(void)
{
    openblas_set_num_threads(1);
    printf("bench_gptq | nanogptq %s | %d OpenMP threads, OpenBLAS single-threaded | %d layers, %d x %d calibration "
           "rows each, 4 bits\n",
           NGQ_VERSION_STRING, omp_get_max_threads(), NLAYERS, NBATCH, BATCH_ROWS);
    ngq_rng rng;
    ngq_rng_seed(&rng, 7, 0);
    ngq_error err = {0};
    const int64_t noise_len = 4 * BATCH_ROWS * 768;
    float *noise = malloc((size_t)noise_len * sizeof *noise);
    float *x = malloc((size_t)(BATCH_ROWS * 768) * sizeof *x);
    float *z = malloc((size_t)(BATCH_ROWS * LATENT) * sizeof *z);
    float *mix = malloc((size_t)(LATENT * 768) * sizeof *mix);
    float *w = malloc((size_t)(768 * 192) * sizeof *w);
    if (!noise || !x || !z || !mix || !w) return 1;
    for (int64_t i = 0; i < noise_len; i++) noise[i] = 0.3f * ngq_rng_normal(&rng);

    double t_hessian = 0.0, t_gptq[2] = {0.0, 0.0}, t_rtn[2] = {0.0, 0.0};
    double err_gptq[2] = {0.0, 0.0}, err_rtn[2] = {0.0, 0.0};
    int escalations = 0, fallbacks = 0;
    for (int l = 0; l < NLAYERS; l++) {
        const int64_t rows = shapes[l % 4][0], cols = shapes[l % 4][1];
        for (int64_t i = 0; i < LATENT * cols; i++) mix[i] = ngq_rng_normal(&rng);
        for (int64_t i = 0; i < rows * cols; i++) w[i] = 0.02f * ngq_rng_normal(&rng);
        ngq_hessian h;
        if (ngq_hessian_init(&h, cols, &err)) goto fail;
        for (int b = 0; b < NBATCH; b++) {
            make_batch(&rng, mix, noise, noise_len, cols, z, x);
            double t0 = ngq_now_seconds();
            if (ngq_hessian_add(&h, x, BATCH_ROWS, &err)) goto fail;
            t_hessian += ngq_now_seconds() - t0;
        }
        double t0 = ngq_now_seconds();
        if (ngq_hessian_finalize(&h, &err)) goto fail;
        t_hessian += ngq_now_seconds() - t0;
        for (int v = 0; v < 2; v++) {
            ngq_qgrid g;
            ngq_qgrid_default(&g, 4);
            if (v == 1) {
                g.granularity = NGQ_GRAN_GROUP;
                g.group_size = 64;
            }
            ngq_gptq_options o;
            ngq_gptq_options_default(&o);
            ngq_gptq_report rep;
            ngq_qtensor qg, qr;
            t0 = ngq_now_seconds();
            if (ngq_gptq_quantize(w, rows, cols, h.h, &g, &o, &qg, &rep, &err)) goto fail;
            t_gptq[v] += ngq_now_seconds() - t0;
            escalations += rep.escalations;
            fallbacks += rep.fell_back_to_rtn;
            t0 = ngq_now_seconds();
            if (ngq_quant_rtn(w, rows, cols, &g, &qr, &err)) goto fail;
            t_rtn[v] += ngq_now_seconds() - t0;
            double eg, er;
            if (ngq_gptq_relative_error(h.h, cols, w, rows, &qg, &eg, &err) ||
                ngq_gptq_relative_error(h.h, cols, w, rows, &qr, &er, &err))
                goto fail;
            err_gptq[v] += eg / NLAYERS;
            err_rtn[v] += er / NLAYERS;
            ngq_qtensor_free(&qg);
            ngq_qtensor_free(&qr);
        }
        ngq_hessian_free(&h);
    }
    printf("Hessian accumulation (24 layers x 32768 rows): %7.3f s\n", t_hessian);
    static const char *const vname[2] = {"per-channel", "group 64"};
    for (int v = 0; v < 2; v++) {
        printf("%-12s GPTQ %7.3f s | RTN %7.3f s | GPTQ/RTN time %7.1fx | Hessian+GPTQ %7.3f s "
               "(%.1fx RTN) | mean rel. output error GPTQ %.3e RTN %.3e (%.2fx)\n",
               vname[v], t_gptq[v], t_rtn[v], t_gptq[v] / t_rtn[v], t_hessian + t_gptq[v],
               (t_hessian + t_gptq[v]) / t_rtn[v], err_gptq[v], err_rtn[v], err_gptq[v] / err_rtn[v]);
    }
    printf("damping escalations %d, RTN fallbacks %d\n", escalations, fallbacks);
    free(noise);
    free(x);
    free(z);
    free(mix);
    free(w);
    return 0;
fail:
    fprintf(stderr, "bench_gptq: %s\n", err.message);
    return 1;
}
