/* sample: generates text from a checkpoint (fp32 or quantized) with the KV
 * cache, streaming each character to stdout as it is drawn. Notes and the
 * closing tokens/s line go to stderr, so stdout is the banner line and then
 * the text (prompt and continuation). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/infer.h"
#include "nanogptq/sample.h"
#include "tool.h"

static const ngq_cli_option OPTIONS[] = {
    {"--checkpoint", "PATH", "checkpoint to sample from (default [sample] checkpoint, else run_dir/checkpoints/best.safetensors)"},
    {"--prompt", "TEXT", "text to continue (default [sample] prompt; empty = start from a newline)"},
    {"--max-new-tokens", "N", "characters to generate (default [sample] max_new_tokens)"},
    {"--temperature", "T", "softmax temperature, 0 = greedy (default [sample] temperature)"},
    {"--top-k", "K", "keep the K most likely characters, 0 = all (default [sample] top_k)"},
    {"--top-p", "P", "keep the smallest most likely set with mass P, 1 = all (default [sample] top_p)"},
    {"--seed", "S", "seed of the sampling RNG (default [run] seed)"},
};

static const ngq_cli_spec SPEC = {
    .program = "sample",
    .summary = "Generate text from a checkpoint, fp32 or quantized, with the KV cache.\n"
               "The text streams to stdout; notes and the tokens/s line go to stderr.\n"
               "Temperature, then top-k, then top-p; the same seed gives the same text.\n"
               "SIGINT/SIGTERM stop the generation after the current character.",
    .positional = NULL,
    .options = OPTIONS,
    .option_count = sizeof OPTIONS / sizeof OPTIONS[0],
    .epilog = "examples:\n  sample --config configs/quick.ini\n"
              "  sample --config configs/tinystories.ini --checkpoint runs/tinystories/checkpoints/gptq-4b-g64.safetensors\n"
              "  sample --config configs/quick.ini --prompt 'Tom and Lily' --temperature 0 --max-new-tokens 200",
};

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int on_token(int token, const char *utf8, void *user)
{
    (void)token;
    (void)user;
    fputs(utf8, stdout);
    fflush(stdout);
    return stop_requested != 0;
}

int main(int argc, char **argv)
{
    ngq_cli cli;
    int rc = ngq_tool_start(argc, argv, &SPEC, &cli);
    if (rc >= 0) return rc;
    ngq_error err = {0};
    ngq_status st = NGQ_OK;
    const ngq_config *cfg = &cli.cfg;

    /* each option overrides its [sample] key (or [run] seed) */
    const char *prompt = cfg->sample.prompt, *value;
    long long max_new = cfg->sample.max_new_tokens, seed = cfg->run.seed, top_k = cfg->sample.top_k;
    double temperature = cfg->sample.temperature, top_p = cfg->sample.top_p;
    if ((value = ngq_cli_get(&cli, &SPEC, "--prompt"))) prompt = value;
    if ((value = ngq_cli_get(&cli, &SPEC, "--max-new-tokens")))
        st = ngq_cli_parse_int("--max-new-tokens", value, 1, 1000000, &max_new, &err);
    if (!st && (value = ngq_cli_get(&cli, &SPEC, "--temperature")))
        st = ngq_cli_parse_double("--temperature", value, 0.0, 100.0, &temperature, &err);
    if (!st && (value = ngq_cli_get(&cli, &SPEC, "--top-k")))
        st = ngq_cli_parse_int("--top-k", value, 0, 65535, &top_k, &err);
    if (!st && (value = ngq_cli_get(&cli, &SPEC, "--top-p")))
        st = ngq_cli_parse_double("--top-p", value, 1e-6, 1.0, &top_p, &err);
    if (!st && (value = ngq_cli_get(&cli, &SPEC, "--seed")))
        st = ngq_cli_parse_int("--seed", value, 0, 9007199254740992LL, &seed, &err);
    if (st) return ngq_tool_fail(&SPEC, st, &err);
    ngq_sampler_config sampler = {.temperature = (float)temperature, .top_k = (int)top_k, .top_p = (float)top_p};

    char *path = NULL;
    if ((value = ngq_cli_get(&cli, &SPEC, "--checkpoint")))
        path = ngq_strdup_printf("%s", value);
    else if (cfg->sample.checkpoint[0])
        path = ngq_strdup_printf("%s", cfg->sample.checkpoint);
    else
        path = ngq_config_checkpoint_path(cfg, "best.safetensors");
    if (!path) {
        ngq_fail(&err, NGQ_ERR_NOMEM, "out of memory");
        return ngq_tool_fail(&SPEC, NGQ_ERR_NOMEM, &err);
    }

    ngq_infer *model = NULL;
    if ((st = ngq_infer_load(&model, path, &err))) {
        free(path);
        return ngq_tool_fail(&SPEC, st, &err);
    }
    const ngq_infer_info *info = ngq_infer_get_info(model);
    const ngq_model_config *mc = ngq_infer_config(model);
    fprintf(stderr, "checkpoint %s | %s | %.2f bits/weight | %lld bytes | block_size %d | temperature %g | top_k %d | "
            "top_p %g | seed %lld\n", path, info->label, info->bits_per_weight, (long long)info->file_bytes,
            mc->block_size, (double)sampler.temperature, sampler.top_k, (double)sampler.top_p, seed);

    /* check the prompt first, so its notes come before the text */
    ngq_sample_prompt encoded;
    if ((st = ngq_sample_encode_prompt(ngq_infer_vocab(model), mc->block_size, prompt, strlen(prompt), &encoded,
                                       &err))) {
        ngq_infer_free(model);
        free(path);
        return ngq_tool_fail(&SPEC, st, &err);
    }
    if (encoded.truncated)
        fprintf(stderr, "note: the prompt has %zu characters, more than block_size %d: keeping the last %d\n",
                encoded.chars, mc->block_size, mc->block_size);
    if (encoded.from_newline) fprintf(stderr, "note: empty prompt: starting from a newline\n");
    const char *shown = prompt + encoded.kept_offset;
    ngq_sample_prompt_free(&encoded);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    fputs(shown, stdout);
    fflush(stdout);
    ngq_sample_stats stats;
    st = ngq_sample_generate(model, prompt, (int)max_new, &sampler, (uint64_t)seed, on_token, NULL, &stats, &err);
    fputc('\n', stdout);
    fflush(stdout);
    ngq_infer_free(model);
    free(path);
    if (st) return ngq_tool_fail(&SPEC, st, &err);
    fprintf(stderr, "%s %d tokens in %.3f s | %.0f tok/s | prompt %d tokens in %.3f s\n",
            stats.stopped ? "stopped after" : "generated", stats.generated_tokens, stats.generate_seconds,
            stats.tokens_per_second, stats.prompt_tokens, stats.prompt_seconds);
    return 0;
}
