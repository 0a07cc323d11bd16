/* bench_eval.c: evaluation throughput (ngq_eval_run: sliding windows of
 * block_size tokens, stride T/2, batches of 8 windows, per-position log-softmax
 * and loss) of the reference model (6 layers, C 192, T 256, V 88), fp32
 * against its packed 8-bit per-channel and 4-bit group-64 round-to-nearest
 * versions, each scored alone, with ratios against fp32 measured in the same
 * run; then all of them in one comparison pass (baseline logits, then each
 * variant's, with KL and top-1 agreement), against the sum of the separate
 * runs. The fixtures are made here: a randomly initialised model saved with
 * ngq_checkpoint_save and quantized with ngq_quantize_run, in a temporary
 * directory removed afterwards; speed does not depend on the weights' values.
 * Further checkpoints given on the command line (same vocabulary size) are
 * measured too. Prints a table; it is not a test.
 *
 * usage: bench_eval [--tokens N] [--runs R] [--threads T] [--batch B] [CHECKPOINT ...] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_fixture.h"
#include "nanogptq/checkpoint.h"
#include "nanogptq/cli.h"
#include "nanogptq/eval.h"
#include "nanogptq/quantize.h"

#define MAX_CHECKPOINTS 16

static int die(const char *what, const ngq_error *err)
{
    fprintf(stderr, "bench_eval: %s: %s\n", what, err->message);
    return 1;
}

/* Best wall time of runs evaluations of models[0..n) on the plan. */
static ngq_status time_eval(const ngq_infer *const *models, int n, const uint16_t *tokens, size_t n_tokens,
                            const ngq_eval_plan *plan, int batch, int runs, double *best, ngq_error *err)
{
    *best = INFINITY;
    for (int r = 0; r < runs; r++) {
        ngq_eval_result res;
        double t0 = ngq_now_seconds();
        ngq_status st = ngq_eval_run(models, n, tokens, n_tokens, plan, batch, NULL, NULL, &res, err);
        double dt = ngq_now_seconds() - t0;
        ngq_eval_result_free(&res);
        if (st) return st;
        if (dt < *best) *best = dt;
    }
    return NGQ_OK;
}

int main(int argc, char **argv)
{
    int tokens = 4097, runs = 3, threads = 2, batch = 8;
    const char *extra[MAX_CHECKPOINTS];
    int n_extra = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (argv[i][0] != '-' && n_extra < MAX_CHECKPOINTS)
            extra[n_extra++] = argv[i];
        else {
            fprintf(stderr, "usage: bench_eval [--tokens N] [--runs R] [--threads T] [--batch B] [CHECKPOINT ...]\n");
            return 2;
        }
    }
    if (tokens < 2 || runs < 1 || threads < 1 || threads > 256 || batch < 1 || batch > 4096) {
        fprintf(stderr, "bench_eval: --tokens >= 2, --runs >= 1, --threads 1..256, --batch 1..4096\n");
        return 2;
    }

    ngq_config cfg;
    ngq_config_defaults(&cfg);
    cfg.run.threads = threads;
    ngq_runtime_setup(&cfg);
    ngq_error err = {0};
    char dir[] = "/tmp/ngq_bench_eval_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_eval: mkdtemp");
        return 1;
    }
    snprintf(cfg.paths.run_dir, sizeof cfg.paths.run_dir, "%s", dir);

    const char *variants[2] = {"naive:8:channel", "naive:4:g64"};
    char *paths[3 + MAX_CHECKPOINTS] = {0};
    ngq_infer *models[3 + MAX_CHECKPOINTS] = {0};
    uint16_t *data = NULL;
    ngq_eval_plan plan = {0};
    int n = 0, rc = 0;
    paths[n++] = ngq_path_join(dir, "fp32.safetensors");
    if (bench_make_fixture(paths[0], &err)) {
        rc = die("fixture", &err);
        goto cleanup;
    }
    for (int v = 0; v < 2; v++) {
        ngq_quantize_options o;
        ngq_quantize_result r;
        char name[96], label[64];
        if (ngq_quantize_options_from_config(&cfg, &o, &err) || ngq_quantize_apply_variant(&o, variants[v], &err)) {
            rc = die(variants[v], &err);
            goto cleanup;
        }
        ngq_quantize_options_label(&o, label, sizeof label);
        snprintf(name, sizeof name, "%s.safetensors", label);
        paths[n] = ngq_path_join(dir, name);
        if (ngq_quantize_run(&cfg, paths[0], paths[n], &o, NULL, NULL, &r, &err)) {
            rc = die(variants[v], &err);
            goto cleanup;
        }
        ngq_quantize_result_free(&r);
        n++;
    }
    for (int i = 0; i < n_extra; i++) paths[n++] = ngq_strdup_printf("%s", extra[i]);
    for (int i = 0; i < n; i++)
        if (ngq_infer_load(&models[i], paths[i], &err)) {
            rc = die(paths[i], &err);
            goto cleanup;
        }
    if (ngq_eval_check_models((const ngq_infer *const *)models, (const char *const *)paths, n, &err)) {
        rc = die("checkpoints", &err);
        goto cleanup;
    }

    /* random tokens: the work does not depend on them */
    const int V = ngq_infer_config(models[0])->vocab_size;
    data = malloc((size_t)tokens * sizeof *data);
    if (!data) {
        fprintf(stderr, "bench_eval: out of memory\n");
        rc = 1;
        goto cleanup;
    }
    ngq_rng rng;
    ngq_rng_seed(&rng, 7, 5);
    for (int i = 0; i < tokens; i++) data[i] = (uint16_t)ngq_rng_below(&rng, (uint32_t)V);
    if (ngq_eval_plan_init(&plan, (size_t)tokens, ngq_infer_config(models[0])->block_size, 0, 0, &err)) {
        rc = die("plan", &err);
        goto cleanup;
    }
    printf("bench_eval: %d tokens, %zu windows of %d (stride %d), %zu scored, batch %d, best of %d runs, "
           "%d threads\n",
           tokens, plan.count, plan.T, plan.stride, plan.scored, batch, runs, threads);
    printf("%-22s %9s %8s %10s %14s %14s %9s\n", "checkpoint", "MB", "bits/w", "seconds", "scored tok/s",
           "forward tok/s", "vs fp32");
    double fp32 = 0, sum = 0;
    for (int i = 0; i < n; i++) {
        const ngq_infer *one[1] = {models[i]};
        double best;
        /* one untimed run warms caches and page-faults the weights in */
        if (time_eval(one, 1, data, (size_t)tokens, &plan, batch, 1, &best, &err) ||
            time_eval(one, 1, data, (size_t)tokens, &plan, batch, runs, &best, &err)) {
            rc = die(paths[i], &err);
            goto cleanup;
        }
        if (i == 0) fp32 = best;
        sum += best;
        const ngq_infer_info *info = ngq_infer_get_info(models[i]);
        printf("%-22s %9.2f %8.2f %10.3f %14.0f %14.0f %8.2fx\n", info->label, info->file_bytes / 1e6,
               info->bits_per_weight, best, plan.scored / best, (double)plan.count * plan.T / best, fp32 / best);
        fflush(stdout);
    }
    double together;
    if (time_eval((const ngq_infer *const *)models, n, data, (size_t)tokens, &plan, batch, runs, &together, &err)) {
        rc = die("comparison pass", &err);
        goto cleanup;
    }
    printf("one comparison pass over all %d (KL, top-1 vs fp32): %.3f s = %.2fx the sum of the separate runs "
           "(%.3f s)\n",
           n, together, together / sum, sum);

cleanup:
    ngq_eval_plan_free(&plan);
    free(data);
    for (int i = 0; i < 3 + MAX_CHECKPOINTS; i++) {
        ngq_infer_free(models[i]);
        if (paths[i] && i < 3) unlink(paths[i]);
        free(paths[i]);
    }
    rmdir(dir);
    return rc;
}
