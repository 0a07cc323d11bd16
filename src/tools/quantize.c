/* quantize: fp32 checkpoint -> quantized checkpoint (naive RTN or GPTQ). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/quantize.h"
#include "tool.h"

static const ngq_cli_option OPTIONS[] = {
    {"--method", "naive|gptq", "quantization method (overrides [quantize] method)"},
    {"--bits", "N", "bits per weight, 2..8 (overrides [quantize] bits)"},
    {"--variant", "M:B:G", "method, bits and granularity at once: e.g. gptq:4:g64, naive:8:channel, gptq:3:tensor"},
    {"--in", "PATH", "fp32 checkpoint to read (default [quantize] checkpoint, else run_dir/checkpoints/best.safetensors)"},
    {"--out", "PATH", "quantized checkpoint to write (default run_dir/checkpoints/LABEL.safetensors)"},
    {"--calibration", "FILE", "gptq: calibration window offsets, one per line (overrides [quantize] calibration)"},
};

static const ngq_cli_spec SPEC = {
    .program = "quantize",
    .summary = "Quantize an fp32 checkpoint by round-to-nearest (naive) or GPTQ on the [quantize] grid.\n"
               "Writes a packed checkpoint and run_dir/results/layers-LABEL.csv with each layer's relative\n"
               "output error on the calibration inputs (GPTQ and RTN on the same grid).",
    .positional = NULL,
    .options = OPTIONS,
    .option_count = sizeof OPTIONS / sizeof OPTIONS[0],
    .epilog = "examples:\n  quantize --config configs/tinystories.ini --method gptq --bits 4\n"
              "  quantize --config configs/tinystories.ini --variant naive:8:channel\n"
              "  quantize --config configs/tinystories.ini --variant gptq:4:g64 --out /tmp/q4.safetensors",
};

static void on_layer(const ngq_quantize_layer_report *r, int index, int total, void *user)
{
    (void)user;
    printf("[%2d/%2d] %-36s %4dx%-4d", index + 1, total, r->tensor, r->rows, r->cols);
    if (!isnan(r->rtn_error)) printf(" | rtn err %.3e", r->rtn_error);
    if (!isnan(r->gptq_error))
        printf(" | gptq err %.3e (%.1fx lower)", r->gptq_error,
               r->gptq_error > 0 ? r->rtn_error / r->gptq_error : INFINITY);
    if (!isnan(r->damping)) printf(" | damp %g", r->damping);
    printf(" | %.2fs\n", r->seconds);
    if (r->escalations || r->fallback) printf("        note: %s\n", r->note);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    ngq_cli cli;
    int rc = ngq_tool_start(argc, argv, &SPEC, &cli);
    if (rc >= 0) return rc;
    ngq_error err = {0};
    ngq_config *cfg = &cli.cfg;
    const char *method = ngq_cli_get(&cli, &SPEC, "--method");
    const char *bits = ngq_cli_get(&cli, &SPEC, "--bits");
    const char *calibration = ngq_cli_get(&cli, &SPEC, "--calibration");
    ngq_status st = NGQ_OK;
    if (method) {
        char set[64];
        snprintf(set, sizeof set, "quantize.method=%s", method);
        st = ngq_config_apply_override(cfg, set, &err);
    }
    if (st == NGQ_OK && bits) {
        char set[64];
        snprintf(set, sizeof set, "quantize.bits=%s", bits);
        st = ngq_config_apply_override(cfg, set, &err);
    }
    if (st == NGQ_OK && calibration) snprintf(cfg->quantize.calibration, sizeof cfg->quantize.calibration, "%s", calibration);
    if (st == NGQ_OK) st = ngq_config_validate(cfg, &err);
    ngq_quantize_options opts;
    if (st == NGQ_OK) st = ngq_quantize_options_from_config(cfg, &opts, &err);
    const char *variant = ngq_cli_get(&cli, &SPEC, "--variant");
    if (st == NGQ_OK && variant) {
        if (method || bits) {
            fprintf(stderr, "quantize: --variant sets method and bits; do not combine it with --method or --bits\n");
            return 2;
        }
        st = ngq_quantize_apply_variant(&opts, variant, &err);
    }
    if (st) return ngq_tool_fail(&SPEC, st == NGQ_ERR_USAGE ? st : NGQ_ERR_CONFIG, &err);

    const char *in = ngq_cli_get(&cli, &SPEC, "--in");
    char *default_in = NULL, *default_out = NULL, *csv = NULL, *results_dir = NULL;
    if (!in) {
        if (cfg->quantize.checkpoint[0]) in = cfg->quantize.checkpoint;
        else in = default_in = ngq_config_checkpoint_path(cfg, "best.safetensors");
    }
    char label[64];
    ngq_quantize_options_label(&opts, label, sizeof label);
    const char *out = ngq_cli_get(&cli, &SPEC, "--out");
    if (!out) {
        char name[96];
        snprintf(name, sizeof name, "%s.safetensors", label);
        out = default_out = ngq_config_checkpoint_path(cfg, name);
    }
    char csv_name[96];
    snprintf(csv_name, sizeof csv_name, "layers-%s.csv", label);
    csv = ngq_config_results_path(cfg, csv_name);
    results_dir = ngq_config_results_path(cfg, "");
    printf("quantize %s -> %s (%s)\n", in, out, label);
    fflush(stdout);
    ngq_quantize_result res;
    st = ngq_make_dirs(results_dir, &err);
    if (st == NGQ_OK) st = ngq_quantize_run(cfg, in, out, &opts, on_layer, NULL, &res, &err);
    if (st == NGQ_OK) st = ngq_quantize_write_layer_csv(csv, &res, &err);
    if (st) {
        rc = ngq_tool_fail(&SPEC, st, &err);
    } else {
        printf("%s: %d tensors quantized (%lld weights) at %.3f bits/weight incl. scales and zeros | "
               "%.2f MB -> %.2f MB (%.2fx smaller) | %.2f s (calibration %.2f s)\nwrote %s and %s\n",
               label, res.n_layers, (long long)res.quantized_weights, res.bits_per_weight, res.input_bytes / 1e6,
               res.output_bytes / 1e6, res.output_bytes > 0 ? (double)res.input_bytes / res.output_bytes : 0.0,
               res.seconds, res.calibration_seconds, out, csv);
        ngq_quantize_result_free(&res);
        rc = 0;
    }
    free(default_in);
    free(default_out);
    free(csv);
    free(results_dir);
    return rc;
}
