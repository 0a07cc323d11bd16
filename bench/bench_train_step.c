/* bench_train_step.c: throughput of one full training step of the reference
 * model (forward, backward, zero_grad and a plain AdamW update over the
 * parameter buffer) at B=16, T=256 with 2 OpenMP threads and single-threaded
 * OpenBLAS. Prints the time per phase, the share of thread time spent inside
 * cblas_sgemm and its achieved rate, and one greppable result line:
 *
 *     tokens_per_second <float>
 *
 * sgemm is timed by interposing cblas_sgemm in this executable: the library's
 * calls resolve to the wrapper below, which forwards to OpenBLAS through
 * dlsym(RTLD_NEXT) and adds the elapsed time to the calling thread's counter.
 * It also prints tokens per CPU-second (process CPU time of all threads),
 * which other processes competing for the cores disturb much less than wall
 * time. This is a benchmark, not a test: it checks nothing but that the loss
 * is finite. */
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nanogptq/common.h"
#include "nanogptq/model.h"
#include "nanogptq/rng.h"

/* ---- cblas_sgemm interposition --------------------------------------------- */

#define MAX_TIMED_THREADS 64

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint, const blasint,
                         const float, const float *, const blasint, const float *, const blasint,
                         const float, float *, const blasint);

static sgemm_fn real_sgemm;
/* Padded so that the two threads' counters do not share a cache line. */
static struct {
    double seconds;
    double flops;
    long calls;
    char pad[40];
} sgemm_stats[MAX_TIMED_THREADS];

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
                 const enum CBLAS_TRANSPOSE tb, const blasint M, const blasint N,
                 const blasint K, const float alpha, const float *A, const blasint lda,
                 const float *B, const blasint ldb, const float beta, float *C, const blasint ldc)
{
    double t0 = ngq_now_seconds();
    real_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    double dt = ngq_now_seconds() - t0;
    int t = omp_get_thread_num();
    if (t < MAX_TIMED_THREADS) {
        sgemm_stats[t].seconds += dt;
        sgemm_stats[t].flops += 2.0 * M * N * K;
        sgemm_stats[t].calls++;
    }
}

static void sgemm_stats_totals(double *seconds, double *flops, long *calls)
{
    *seconds = *flops = 0.0;
    *calls = 0;
    for (int t = 0; t < MAX_TIMED_THREADS; t++) {
        *seconds += sgemm_stats[t].seconds;
        *flops += sgemm_stats[t].flops;
        *calls += sgemm_stats[t].calls;
    }
}

static double process_cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- AdamW -------------------------------------------------------------------- */

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} adamw_params;

/* One AdamW step over the whole buffer (decoupled weight decay on 2-D tensors). */
static void adamw_step(ngq_model *model, float *m, float *v, int step, const adamw_params *hp)
{
    const float bc1 = 1.0f - powf(hp->beta1, (float)step);
    const float bc2 = 1.0f - powf(hp->beta2, (float)step);
    int count = ngq_model_tensor_count(&model->config);
#pragma omp parallel
    for (int i = 0; i < count; i++) {
        ngq_tensor_info info;
        ngq_model_tensor_info(&model->config, i, &info, NULL);
        const float wd = info.is_matrix ? hp->weight_decay : 0.0f;
        float *p = model->params + info.offset, *g = model->grads + info.offset;
        float *mi = m + info.offset, *vi = v + info.offset;
        long n = (long)info.numel;
#pragma omp for schedule(static)
        for (long e = 0; e < n; e++) {
            float grad = g[e];
            mi[e] = hp->beta1 * mi[e] + (1.0f - hp->beta1) * grad;
            vi[e] = hp->beta2 * vi[e] + (1.0f - hp->beta2) * grad * grad;
            float mhat = mi[e] / bc1, vhat = vi[e] / bc2;
            p[e] -= hp->lr * (mhat / (sqrtf(vhat) + hp->eps) + wd * p[e]);
        }
    }
}

static void usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--batch B] [--seq T] [--steps N] [--warmup N] [--threads N] "
                    "[--dropout P]\n", prog);
}

int main(int argc, char **argv)
{
    int B = 16, T = 256, steps = 5, warmup = 2, threads = 2;
    float dropout = 0.0f;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) {
            usage(argv[0]);
            return 2;
        }
        if (strcmp(argv[i], "--batch") == 0) B = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seq") == 0) T = atoi(argv[++i]);
        else if (strcmp(argv[i], "--steps") == 0) steps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--warmup") == 0) warmup = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--dropout") == 0) dropout = (float)atof(argv[++i]);
        else {
            usage(argv[0]);
            return 2;
        }
    }
    if (B < 1 || T < 1 || steps < 1 || warmup < 0 || threads < 1) {
        usage(argv[0]);
        return 2;
    }
    real_sgemm = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
    if (!real_sgemm) {
        fprintf(stderr, "bench_train_step: cannot find the real cblas_sgemm: %s\n", dlerror());
        return 1;
    }
    openblas_set_num_threads(1);
    omp_set_num_threads(threads);

    ngq_model_config cfg;
    ngq_model_config_reference(&cfg);
    cfg.dropout = dropout;
    ngq_model model;
    ngq_activations acts;
    ngq_error err;
    if (ngq_model_init(&model, &cfg, &err) != NGQ_OK || ngq_model_init_grads(&model,
        &err) != NGQ_OK ||
        ngq_activations_init(&acts, &cfg, B, T, &err) != NGQ_OK) {
        fprintf(stderr, "bench_train_step: %s\n", err.message);
        return ngq_exit_code(err.status);
    }
    ngq_rng rng;
    ngq_rng_seed(&rng, 1337, 0);
    ngq_model_init_weights(&model, &rng);
    float *m = calloc(model.param_count, sizeof(float)), *v = calloc(model.param_count,
                      sizeof(float));
    uint16_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    uint16_t *targets = malloc((size_t)B * T * sizeof *targets);
    if (!m || !v || !tokens || !targets) {
        fprintf(stderr, "bench_train_step: out of memory\n");
        return 1;
    }
    const adamw_params hp = {1e-3f, 0.9f, 0.99f, 1e-8f, 0.1f};
    const char *wait_policy = getenv("OMP_WAIT_POLICY");
    printf("nanogptq %s | %s | OpenMP threads %d (OMP_WAIT_POLICY=%s) | params %zu | B %d T %d "
           "dropout %.2f | memory %.0f MiB\n", NGQ_VERSION_STRING, openblas_get_config(), threads,
           wait_policy ? wait_policy : "unset", model.param_count, B, T, (double)dropout,
           (double)ngq_model_memory_bytes(&cfg, B, T) / 1048576.0);

    double t_forward = 0, t_backward = 0, t_update = 0, t_total = 0, cpu_total = 0;
    float loss = 0.0f;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) memset(sgemm_stats, 0, sizeof sgemm_stats);
        for (int i = 0; i < B * T; i++) {
            tokens[i] = (uint16_t)ngq_rng_below(&rng, (uint32_t)cfg.vocab_size);
            targets[i] = (uint16_t)ngq_rng_below(&rng, (uint32_t)cfg.vocab_size);
        }
        ngq_forward_mode mode = {.training = 1, .seed = 1, .step = (uint64_t)s};
        double c0 = process_cpu_seconds();
        double t0 = ngq_now_seconds();
        if (ngq_model_forward(&model, &acts, tokens, targets, B, T, &mode, &loss, &err) != NGQ_OK) {
            fprintf(stderr, "bench_train_step: %s\n", err.message);
            return 1;
        }
        double t1 = ngq_now_seconds();
        if (ngq_model_backward(&model, &acts, 1.0f, &err) != NGQ_OK) {
            fprintf(stderr, "bench_train_step: %s\n", err.message);
            return 1;
        }
        double t2 = ngq_now_seconds();
        adamw_step(&model, m, v, s + 1, &hp);
        ngq_model_zero_grad(&model);
        double t3 = ngq_now_seconds();
        double c1 = process_cpu_seconds();
        if (s >= warmup) {
            cpu_total += c1 - c0;
            t_forward += t1 - t0;
            t_backward += t2 - t1;
            t_update += t3 - t2;
            t_total += t3 - t0;
        }
    }
    double sg_seconds, sg_flops;
    long sg_calls;
    sgemm_stats_totals(&sg_seconds, &sg_flops, &sg_calls);
    double tokens_per_second = (double)B * T * steps / t_total;
    printf("per step: forward %.1f ms | backward %.1f ms | zero_grad+AdamW %.1f ms | total %.1f ms "
           "| last loss %.4f\n", 1e3 * t_forward / steps, 1e3 * t_backward / steps,
           1e3 * t_update / steps, 1e3 * t_total / steps, (double)loss);
    printf("sgemm: %.1f%% of thread time (%d threads x wall), %ld calls/step, %.1f GFLOP/step at "
           "%.1f GFLOP/s per thread; everything else %.1f%%\n",
           100.0 * sg_seconds / (threads * t_total), threads, sg_calls / steps,
           sg_flops / steps / 1e9, sg_flops / sg_seconds / 1e9,
           100.0 - 100.0 * sg_seconds / (threads * t_total));
    printf("cpu: %.1f ms of CPU time per step (%.2f cores busy on average)\n",
           1e3 * cpu_total / steps, cpu_total / t_total);
    printf("tokens_per_cpu_second %.1f\n", (double)B * T * steps / cpu_total);
    printf("tokens_per_second %.1f\n", tokens_per_second);
    if (!isfinite(loss)) {
        fprintf(stderr, "bench_train_step: loss is not finite\n");
        return 1;
    }
    free(m), free(v), free(tokens), free(targets);
    ngq_activations_free(&acts);
    ngq_model_free(&model);
    return 0;
}
