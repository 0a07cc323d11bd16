/* preprocess: corpus -> vocabulary + train/val/test token files, or
 * (--encode) any text file -> token file with an existing vocabulary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/preprocess.h"
#include "nanogptq/vocab.h"
#include "tool.h"

static const ngq_cli_option OPTIONS[] = {
    {"--encode", "TEXT", "encode this UTF-8 file with the existing vocabulary instead of preprocessing [data]"},
    {"--out", "PATH", "with --encode: the token file to write (default: TEXT with .tok appended)"},
    {"--vocab", "PATH", "with --encode: the vocabulary to use (default: run_dir/data/vocab.txt)"},
};

static const ngq_cli_spec SPEC = {
    .program = "preprocess",
    .summary = "Split the [data] corpus into train/val/test by whole stories, build the character vocabulary\n"
               "from the train split, and write run_dir/data/{vocab.txt,train.tok,val.tok,test.tok}.",
    .positional = NULL,
    .options = OPTIONS,
    .option_count = sizeof OPTIONS / sizeof OPTIONS[0],
    .epilog = "examples:\n  preprocess --config configs/tinystories.ini\n"
              "  preprocess --config configs/tinystories.ini --encode my_story.txt --out my_story.tok",
};

static void print_split(const char *name, const ngq_split_stats *s)
{
    printf("%-6s %9zu stories %11zu chars %11zu tokens %8zu unknown", name, s->stories, s->chars, s->tokens,
           s->unknown);
    if (s->unknown_example_count) {
        printf(" (");
        for (int i = 0; i < s->unknown_example_count; i++) printf("%sU+%04X", i ? " " : "", s->unknown_examples[i]);
        printf(")");
    }
    printf("\n");
}

static int run_encode(const ngq_cli *cli)
{
    ngq_error err = {0};
    const char *text = ngq_cli_get(cli, &SPEC, "--encode");
    const char *out = ngq_cli_get(cli, &SPEC, "--out");
    const char *vocab = ngq_cli_get(cli, &SPEC, "--vocab");
    char *default_out = out ? NULL : ngq_strdup_printf("%s.tok", text);
    char *default_vocab = vocab ? NULL : ngq_config_data_path(&cli->cfg, "vocab.txt");
    ngq_split_stats stats;
    ngq_status st = ngq_preprocess_encode(vocab ? vocab : default_vocab, text, out ? out : default_out, &stats, &err);
    int rc = 0;
    if (st) {
        rc = ngq_tool_fail(&SPEC, st, &err);
    } else {
        print_split("text", &stats);
        printf("wrote %s\n", out ? out : default_out);
    }
    free(default_out);
    free(default_vocab);
    return rc;
}

int main(int argc, char **argv)
{
    ngq_cli cli;
    int rc = ngq_tool_start(argc, argv, &SPEC, &cli);
    if (rc >= 0) return rc;
    if (ngq_cli_get(&cli, &SPEC, "--encode")) return run_encode(&cli);
    if (ngq_cli_get(&cli, &SPEC, "--out") || ngq_cli_get(&cli, &SPEC, "--vocab")) {
        fprintf(stderr, "preprocess: --out and --vocab go with --encode\n");
        return 2;
    }
    ngq_error err = {0};
    ngq_preprocess_stats stats;
    ngq_status st = ngq_preprocess_run(&cli.cfg, &stats, &err);
    if (st) {
        rc = ngq_tool_fail(&SPEC, st, &err);
        if (st == NGQ_ERR_IO && strstr(err.message, "tinystories"))
            fprintf(stderr, "preprocess: the TinyStories corpus is missing; see data/README.md "
                            "(scripts/setup_data links ../shared/data/tinystories when it is there)\n");
        return rc;
    }
    for (int s = 0; s < NGQ_SPLIT_COUNT; s++) print_split(ngq_split_name(s), &stats.split[s]);
    printf("vocabulary %d ids (%d characters + 1 unknown) | %zu bytes in %.3f s | wrote %s/data/\n", stats.vocab_size,
           stats.vocab_size - 1, stats.input_bytes, stats.seconds, cli.cfg.paths.run_dir);
    return 0;
}
