/* test_config.c: defaults, INI parsing, overrides, and every class of
 * configuration error with the message it must carry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nanogptq/cli.h"
#include "nanogptq/config.h"

#include "test_util.h"

static ngq_status load(ngq_config *cfg, const char *text, ngq_error *err)
{
    ngq_config_defaults(cfg);
    ngq_status st = ngq_config_load_string(cfg, text, "test.ini", err);
    if (st) return st;
    return ngq_config_validate(cfg, err);
}

static void test_defaults_are_valid(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    ngq_config_defaults(&cfg);
    assert_int_equal(ngq_config_validate(&cfg, &err), NGQ_OK);
    assert_int_equal(cfg.model.n_layer, 6);
    assert_int_equal(cfg.model.n_embd, 192);
    assert_int_equal(cfg.model.tie_embeddings, 1);
    assert_float_equal(cfg.train.learning_rate, 1e-3, 1e-12);
    assert_string_equal(cfg.data.delimiter, "<|endoftext|>");
    assert_string_equal(cfg.quantize.method, "gptq");
}

static void test_values_parsed(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    const char *ini = "; comment\n# another\n[model]\nn_layer = 2\nn_head=4\nn_embd = 64\nbias = yes\n"
                      "dropout = 0.1\n[quantize]\nmethod = naive\nbits = 3\n[run]\nseed = 42\n";
    assert_int_equal(load(&cfg, ini, &err), NGQ_OK);
    assert_int_equal(cfg.model.n_layer, 2);
    assert_int_equal(cfg.model.n_head, 4);
    assert_int_equal(cfg.model.bias, 1);
    assert_float_equal(cfg.model.dropout, 0.1, 1e-12);
    assert_string_equal(cfg.quantize.method, "naive");
    assert_int_equal(cfg.quantize.bits, 3);
    assert_int_equal(cfg.run.seed, 42);
}

static void test_unknown_key_names_line_and_suggests(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    assert_int_equal(load(&cfg, "[train]\nbatch_size = 4\nlearning_rte = 0.1\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:3");
    assert_contains(err.message, "learning_rte");
    assert_contains(err.message, "did you mean [train] learning_rate?");
}

static void test_key_in_wrong_section_suggests_right_one(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    assert_int_equal(load(&cfg, "[train]\nn_layer = 4\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:2");
    assert_contains(err.message, "[model] n_layer");
}

static void test_unknown_section(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    assert_int_equal(load(&cfg, "[model]\nn_layer = 2\n\n[trian]\nmax_steps = 3\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:5");
    assert_contains(err.message, "unknown section [trian]");
    assert_contains(err.message, "did you mean [train]?");
}

static void test_wrong_type_names_key_value_range(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    assert_int_equal(load(&cfg, "[model]\nn_layer = six\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:2");
    assert_contains(err.message, "[model] n_layer = 'six'");
    assert_contains(err.message, "[1, 128]");
    assert_int_equal(load(&cfg, "[model]\nbias = maybe\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "true or false");
    assert_int_equal(load(&cfg, "[model]\nn_layer = 2.5\n", &err), NGQ_ERR_CONFIG);
    assert_int_equal(load(&cfg, "[train]\nlearning_rate = nan\n", &err), NGQ_ERR_CONFIG);
    assert_int_equal(load(&cfg, "[quantize]\nmethod = awq\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "naive|gptq");
}

static void test_out_of_range_not_clamped(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    assert_int_equal(load(&cfg, "[model]\nn_layer = 1000000000\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "[model] n_layer = 1000000000 is out of range");
    assert_int_equal(load(&cfg, "[model]\nblock_size = 0\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "block_size = 0 is out of range");
    assert_int_equal(load(&cfg, "[quantize]\nbits = 9\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "allowed [2, 8]");
    assert_int_equal(load(&cfg, "[model]\ndropout = 1.5\n", &err), NGQ_ERR_CONFIG);
    assert_int_equal(load(&cfg, "[model]\nn_layer = 99999999999999999999\n", &err), NGQ_ERR_CONFIG);
}

static void test_cross_key_rules_name_both_keys(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    assert_int_equal(load(&cfg, "[model]\nn_embd = 100\nn_head = 3\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "[model] n_embd = 100");
    assert_contains(err.message, "[model] n_head = 3");
    assert_int_equal(load(&cfg, "[train]\nmax_steps = 10\nwarmup_steps = 20\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "[train] warmup_steps = 20");
    assert_contains(err.message, "[train] max_steps = 10");
    assert_int_equal(load(&cfg, "[train]\nlearning_rate = 0.001\nmin_lr = 0.01\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "min_lr");
    assert_int_equal(load(&cfg, "[model]\nblock_size = 64\n[eval]\nstride = 65\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "[eval] stride = 65");
    assert_int_equal(load(&cfg, "[quantize]\ngranularity = group\ngroup_size = 100\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "group_size = 100");
}

static void test_syntax_error_and_duplicate(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    assert_int_equal(load(&cfg, "[model]\nn_layer = 2\nthis line has no equals\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:3");
    assert_contains(err.message, "syntax error");
    assert_int_equal(load(&cfg, "[model]\nn_layer = 2\nn_layer = 3\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:3");
    assert_contains(err.message, "more than once");
    assert_int_equal(load(&cfg, "n_layer = 2\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "before any [section]");
}

static void test_long_line_rejected_and_list_continuation(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    char text[600];
    snprintf(text, sizeof text, "[data]\ninputs = %0300d\n", 7);
    assert_int_equal(load(&cfg, text, &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:2");
    assert_contains(err.message, "longer than");
    assert_int_equal(load(&cfg, "[quantize]\nvariants = naive:8:channel,\n  gptq:4:g64\n", &err), NGQ_OK);
    char **items;
    int n;
    assert_int_equal(ngq_config_split_list(cfg.quantize.variants, &items, &n, &err), NGQ_OK);
    assert_int_equal(n, 2);
    assert_string_equal(items[0], "naive:8:channel");
    assert_string_equal(items[1], "gptq:4:g64");
    ngq_config_list_free(items, n);
}

static void test_error_line_is_the_first_error(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    /* a handler error on line 2 before a syntax error on line 4 */
    assert_int_equal(load(&cfg, "[model]\nn_layers = 2\n\nbare words\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:2: unknown key 'n_layers'");
    /* a syntax error on line 2 before a handler error on line 5 */
    assert_int_equal(load(&cfg, "[run]\nseed\n[model]\nn_layer = 2\nn_layers = 3\n", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:2: syntax error");
    /* a continuation line keeps counting */
    assert_int_equal(load(&cfg, "[quantize]\nvariants = naive:8:channel,\n  gptq:4:g64\n[eval]\nstrid = 3\n", &err),
                     NGQ_ERR_CONFIG);
    assert_contains(err.message, "test.ini:5:");
}

static void test_values_that_would_not_survive_a_dump(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    ngq_config_defaults(&cfg);
    assert_int_equal(ngq_config_apply_override(&cfg, "sample.prompt=x\n[model]\nn_layer=1", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "line break");
    char long_value[300];
    memset(long_value, 'a', sizeof long_value);
    memcpy(long_value, "paths.run_dir=", 14);
    long_value[299] = '\0';
    assert_int_equal(ngq_config_apply_override(&cfg, long_value, &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "longer than 160");
    assert_int_equal(ngq_config_apply_override(&cfg, "quantize.variants=naive:8:channel, #gptq:4:g64", &err),
                     NGQ_ERR_CONFIG);
    assert_contains(err.message, "comment character");
}

static void test_overrides(void **state)
{
    (void)state;
    ngq_config cfg;
    ngq_error err = {0};
    ngq_config_defaults(&cfg);
    assert_int_equal(ngq_config_apply_override(&cfg, "model.n_layer=3", &err), NGQ_OK);
    assert_int_equal(cfg.model.n_layer, 3);
    assert_int_equal(ngq_config_apply_override(&cfg, "sample.prompt=Once upon", &err), NGQ_OK);
    assert_string_equal(cfg.sample.prompt, "Once upon");
    assert_int_equal(ngq_config_apply_override(&cfg, "model.n_layr=3", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "did you mean [model] n_layer?");
    assert_int_equal(ngq_config_apply_override(&cfg, "model.n_layer=0", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "--set model.n_layer=0");
    assert_contains(err.message, "out of range");
    assert_int_equal(ngq_config_apply_override(&cfg, "n_layer=3", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "section.key=value");
    assert_int_equal(ngq_config_apply_override(&cfg, "modle.n_layer=3", &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "did you mean [model]?");
}

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/ngq_test_config_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static const ngq_cli_option TOOL_OPTIONS[] = {{"--method", "NAME", "method"}, {"--dry-run", NULL, "flag"}};
static const ngq_cli_spec TOOL = {"tool", "a tool", "[FILE ...]", TOOL_OPTIONS, 2, NULL};

static void test_cli_file_then_sets_in_order(void **state)
{
    (void)state;
    char *path = write_temp("[model]\nn_layer = 2\n[train]\nmax_steps = 50\n");
    char *argv[] = {"tool", "--config", path, "--set", "model.n_layer=4", "--set=model.n_layer=5", "--method", "gptq",
                    "--dry-run", "a.safetensors", "b.safetensors", NULL};
    ngq_cli cli;
    ngq_error err = {0};
    assert_int_equal(ngq_cli_parse(11, argv, &TOOL, &cli, &err), NGQ_OK);
    assert_int_equal(cli.cfg.model.n_layer, 5);
    assert_int_equal(cli.cfg.train.max_steps, 50);
    assert_string_equal(ngq_cli_get(&cli, &TOOL, "--method"), "gptq");
    assert_string_equal(ngq_cli_get(&cli, &TOOL, "--dry-run"), "1");
    assert_int_equal(cli.positional_count, 2);
    assert_string_equal(cli.cfg.source_path, path);
    unlink(path);
    free(path);
}

static void test_cli_errors(void **state)
{
    (void)state;
    ngq_cli cli;
    ngq_error err = {0};
    char *no_config[] = {"tool", NULL};
    assert_int_equal(ngq_cli_parse(1, no_config, &TOOL, &cli, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "--config");
    char *unknown[] = {"tool", "--config", "x.ini", "--frobnicate", NULL};
    assert_int_equal(ngq_cli_parse(4, unknown, &TOOL, &cli, &err), NGQ_ERR_USAGE);
    assert_contains(err.message, "--frobnicate");
    char *missing_value[] = {"tool", "--config", "x.ini", "--method", NULL};
    assert_int_equal(ngq_cli_parse(4, missing_value, &TOOL, &cli, &err), NGQ_ERR_USAGE);
    char *missing_file[] = {"tool", "--config", "/nonexistent/x.ini", NULL};
    assert_int_equal(ngq_cli_parse(3, missing_file, &TOOL, &cli, &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "/nonexistent/x.ini");
    char *help[] = {"tool", "--help", NULL};
    assert_int_equal(ngq_cli_parse(2, help, &TOOL, &cli, &err), NGQ_OK);
    assert_true(cli.help);
    assert_int_equal(ngq_exit_code(NGQ_ERR_USAGE), 2);
    assert_int_equal(ngq_exit_code(NGQ_ERR_CONFIG), 2);
    assert_int_equal(ngq_exit_code(NGQ_ERR_IO), 1);
}

static void test_shipped_configs_load(void **state)
{
    (void)state;
    const char *root = getenv("NGQ_SOURCE_ROOT");
    if (!root) skip();
    const char *names[] = {"tinystories.ini", "quick.ini", "ci.ini"};
    for (int i = 0; i < 3; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/configs/%s", root, names[i]);
        ngq_config cfg;
        ngq_error err = {0};
        ngq_config_defaults(&cfg);
        ngq_status st = ngq_config_load_file(&cfg, path, &err);
        if (st == NGQ_OK) st = ngq_config_validate(&cfg, &err);
        if (st) fail_msg("%s: %s", path, err.message);
    }
}

/* The README's configuration reference is the schema's, byte for byte. */
static void test_readme_reference_is_current(void **state)
{
    (void)state;
    const char *root = getenv("NGQ_SOURCE_ROOT");
    if (!root) skip();
    char path[1024];
    snprintf(path, sizeof path, "%s/README.md", root);
    char *readme;
    size_t size;
    ngq_error err = {0};
    assert_int_equal(ngq_read_file(path, &readme, &size, &err), NGQ_OK);
    const char *begin_marker = "<!-- config-reference:begin -->\n", *end_marker = "<!-- config-reference:end -->";
    char *begin = strstr(readme, begin_marker), *end = strstr(readme, end_marker);
    assert_non_null(begin);
    assert_non_null(end);
    begin += strlen(begin_marker);
    char *expected = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&expected, &len);
    ngq_config_write_reference(fp);
    fclose(fp);
    if ((size_t)(end - begin) != len || memcmp(begin, expected, len) != 0)
        fail_msg("README.md's configuration reference is out of date: regenerate it with preprocess --help-config");
    free(expected);
    free(readme);
}

static void test_write_round_trips(void **state)
{
    (void)state;
    ngq_config a, b;
    ngq_error err = {0};
    ngq_config_defaults(&a);
    assert_int_equal(ngq_config_apply_override(&a, "train.learning_rate=0.000123456789", &err), NGQ_OK);
    assert_int_equal(ngq_config_apply_override(&a, "quantize.variants=naive:8:channel, gptq:4:g64", &err), NGQ_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    assert_int_equal(ngq_config_write(&a, fp, &err), NGQ_OK);
    fclose(fp);
    ngq_config_defaults(&b);
    assert_int_equal(ngq_config_load_string(&b, buf, "dump", &err), NGQ_OK);
    assert_float_equal(b.train.learning_rate, a.train.learning_rate, 0);
    assert_string_equal(b.quantize.variants, a.quantize.variants);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_valid),
        cmocka_unit_test(test_values_parsed),
        cmocka_unit_test(test_unknown_key_names_line_and_suggests),
        cmocka_unit_test(test_key_in_wrong_section_suggests_right_one),
        cmocka_unit_test(test_unknown_section),
        cmocka_unit_test(test_wrong_type_names_key_value_range),
        cmocka_unit_test(test_out_of_range_not_clamped),
        cmocka_unit_test(test_cross_key_rules_name_both_keys),
        cmocka_unit_test(test_syntax_error_and_duplicate),
        cmocka_unit_test(test_long_line_rejected_and_list_continuation),
        cmocka_unit_test(test_error_line_is_the_first_error),
        cmocka_unit_test(test_values_that_would_not_survive_a_dump),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_cli_file_then_sets_in_order),
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_shipped_configs_load),
        cmocka_unit_test(test_write_round_trips),
        cmocka_unit_test(test_readme_reference_is_current),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
