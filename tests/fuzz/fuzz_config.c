/* fuzz_config.c: libFuzzer target for the configuration reader.
 *
 * The input bytes, cut at the first NUL as a file read into a C string would
 * be, are parsed as an INI file over the defaults and then validated; on
 * success the effective configuration is written out (the same code that
 * dumps it into run directories) and its list keys are split. The same bytes
 * are then applied as one `--set` override to fresh defaults and validated.
 * It checks that nothing crashes, reads out of bounds or leaks, and that every
 * failure leaves a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require_message(ngq_status st, const ngq_error *err)
{
    if (st != NGQ_OK && (err->status != st || err->message[0] == '\0')) abort();
}

static void split_and_free(const char *list)
{
    char **items = NULL;
    int count = 0;
    ngq_error err = {0};
    if (ngq_config_split_list(list, &items, &count, &err) != NGQ_OK) abort();
    for (int i = 0; i < count; i++)
        if (!items[i] || !items[i][0]) abort();
    ngq_config_list_free(items, count);
}

static void use_config(const ngq_config *cfg)
{
    ngq_error err = {0};
    ngq_status st = ngq_config_validate(cfg, &err);
    require_message(st, &err);
    if (st != NGQ_OK) return;
    char *dump = NULL;
    size_t dump_size = 0;
    FILE *fp = open_memstream(&dump, &dump_size);
    if (!fp) return;
    st = ngq_config_write(cfg, fp, &err);
    fclose(fp);
    free(dump);
    if (st != NGQ_OK) abort();
    split_and_free(cfg->data.inputs);
    split_and_free(cfg->quantize.variants);
    split_and_free(cfg->demo.variants);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* static: the struct holds a few dozen fixed-size strings */
    static ngq_config cfg;
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    ngq_error err = {0};
    ngq_config_defaults(&cfg);
    ngq_status st = ngq_config_load_string(&cfg, text, "fuzz.ini", &err);
    require_message(st, &err);
    if (st == NGQ_OK) use_config(&cfg);

    ngq_error_clear(&err);
    ngq_config_defaults(&cfg);
    st = ngq_config_apply_override(&cfg, text, &err);
    require_message(st, &err);
    if (st == NGQ_OK) use_config(&cfg);

    free(text);
    return 0;
}
