/* bench_generate.c: batch-1 generation speed (tokens per second through
 * ngq_sample_generate: KV-cached forward, sampling, one token at a time) of the
 * reference model (6 layers, C 192, T 256, V 88), fp32 against its packed
 * 8-bit per-channel and 4-bit group-64 round-to-nearest versions, with ratios
 * against fp32 measured in the same run. The fixtures are made here: a
 * randomly initialised model saved with ngq_checkpoint_save and quantized with
 * ngq_quantize_run, in a temporary directory that is removed afterwards.
 * Speed does not depend on the weights' values, so random weights measure the
 * same work as trained ones. Further checkpoints given on the command line
 * are measured too. Prints a table; it is not a test.
 *
 * usage: bench_generate [--tokens N] [--runs R] [--threads T] [CHECKPOINT ...] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_fixture.h"
#include "nanogptq/checkpoint.h"
#include "nanogptq/cli.h"
#include "nanogptq/quantize.h"
#include "nanogptq/sample.h"

#define MAX_CHECKPOINTS 16

static int die(const char *what, const ngq_error *err)
{
    fprintf(stderr, "bench_generate: %s: %s\n", what, err->message);
    return 1;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    int tokens = 500, runs = 5, threads = 2;
    const char *extra[MAX_CHECKPOINTS];
    int n_extra = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (argv[i][0] != '-' && n_extra < MAX_CHECKPOINTS)
            extra[n_extra++] = argv[i];
        else {
            fprintf(stderr, "usage: bench_generate [--tokens N] [--runs R] [--threads T] [CHECKPOINT ...]\n");
            return 2;
        }
    }
    if (tokens < 1 || runs < 1 || threads < 1 || threads > 256) {
        fprintf(stderr, "bench_generate: --tokens and --runs must be >= 1, --threads 1..256\n");
        return 2;
    }

    ngq_config cfg;
    ngq_config_defaults(&cfg);
    cfg.run.threads = threads;
    ngq_runtime_setup(&cfg);
    ngq_error err = {0};
    char dir[] = "/tmp/ngq_bench_generate_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_generate: mkdtemp");
        return 1;
    }
    snprintf(cfg.paths.run_dir, sizeof cfg.paths.run_dir, "%s", dir);

    const char *variants[2] = {"naive:8:channel", "naive:4:g64"};
    char *paths[2 + MAX_CHECKPOINTS + 1] = {0};
    int n = 0;
    paths[n++] = ngq_path_join(dir, "fp32.safetensors");
    int rc = 0;
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

    printf("bench_generate: %d new tokens after a 1-character prompt, temperature 0.8, best and median of %d runs, "
           "%d threads\n", tokens, runs, threads);
    printf("%-22s %9s %8s %12s %12s %9s\n", "checkpoint", "MB", "bits/w", "best tok/s", "median tok/s", "vs fp32");
    double fp32_best = 0;
    ngq_sampler_config sampler = {.temperature = 0.8f, .top_k = 0, .top_p = 1.0f};
    for (int i = 0; i < n; i++) {
        ngq_infer *m;
        if (ngq_infer_load(&m, paths[i], &err)) {
            rc = die(paths[i], &err);
            goto cleanup;
        }
        ngq_sample_stats warm;
        if (ngq_sample_generate(m, "\n", tokens < 32 ? tokens : 32, &sampler, 0, NULL, NULL, &warm, &err)) {
            ngq_infer_free(m);
            rc = die(paths[i], &err);
            goto cleanup;
        }
        double *speed = calloc((size_t)runs, sizeof *speed);
        for (int r = 0; r < runs; r++) {
            ngq_sample_stats stats;
            if (ngq_sample_generate(m, "\n", tokens, &sampler, (uint64_t)r, NULL, NULL, &stats, &err)) {
                free(speed);
                ngq_infer_free(m);
                rc = die(paths[i], &err);
                goto cleanup;
            }
            speed[r] = stats.tokens_per_second;
        }
        qsort(speed, (size_t)runs, sizeof *speed, by_value);
        double best = speed[runs - 1], median = speed[runs / 2];
        if (i == 0) fp32_best = best;
        const ngq_infer_info *info = ngq_infer_get_info(m);
        printf("%-22s %9.2f %8.2f %12.0f %12.0f %8.2fx\n", info->label, info->file_bytes / 1e6,
               info->bits_per_weight, best, median, best / fp32_best);
        fflush(stdout);
        free(speed);
        ngq_infer_free(m);
    }

cleanup:
    for (int i = 0; i < 2 + MAX_CHECKPOINTS + 1; i++) {
        if (paths[i] && i < 3) unlink(paths[i]);
        free(paths[i]);
    }
    rmdir(dir);
    return rc;
}
