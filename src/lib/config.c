/* config.c: the schema of every configuration key, and loading it from an INI
 * file (parsed by inih) and from --set overrides, with validation.
 *
 * The schema table below is the single source of truth: defaults, types,
 * ranges and one-line documentation. The README's config reference and the
 * effective-config dumps are generated from it. */
#include "nanogptq/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum { KEY_INT, KEY_INT64, KEY_FLOAT, KEY_BOOL, KEY_STRING, KEY_LIST, KEY_ENUM } key_type;

typedef struct {
    const char *section;
    const char *key;
    key_type type;
    size_t offset;
    double min, max;     /* numeric types: inclusive range */
    const char *choices; /* KEY_ENUM: "a|b|c" */
    const char *def;     /* default, parsed by the same code as the file */
    const char *doc;     /* meaning, unit */
} key_spec;

#define OFF(field) offsetof(ngq_config, field)
#define INT(s, k, field, lo, hi, d, doc) {s, k, KEY_INT, OFF(field), lo, hi, NULL, d, doc}
#define INT64(s, k, field, lo, hi, d, doc) {s, k, KEY_INT64, OFF(field), lo, hi, NULL, d, doc}
#define FLOAT(s, k, field, lo, hi, d, doc) {s, k, KEY_FLOAT, OFF(field), lo, hi, NULL, d, doc}
#define BOOL(s, k, field, d, doc) {s, k, KEY_BOOL, OFF(field), 0, 1, NULL, d, doc}
#define STRING(s, k, field, d, doc) {s, k, KEY_STRING, OFF(field), 0, 0, NULL, d, doc}
#define LIST(s, k, field, d, doc) {s, k, KEY_LIST, OFF(field), 0, 0, NULL, d, doc}
#define ENUM(s, k, field, choices, d, doc) {s, k, KEY_ENUM, OFF(field), 0, 0, choices, d, doc}

static const key_spec SCHEMA[] = {
    INT64("run", "seed", run.seed, 0, 9007199254740992.0, "1337",
          "master seed for every random choice (split, init, batches, dropout, calibration, sampling)"),
    INT("run", "threads", run.threads, 1, 256, "2",
        "OpenMP threads for all compute; OpenBLAS always runs single-threaded inside them"),

    LIST("data", "inputs", data.inputs, "data/tinystories/train.txt, data/tinystories/val.txt",
         "comma-separated UTF-8 text files, read in order and concatenated"),
    STRING("data", "delimiter", data.delimiter, "<|endoftext|>",
           "a line holding exactly this text ends a story"),
    ENUM("data", "split", data.split, "contiguous|shuffled", "contiguous",
         "contiguous: train, val, test are consecutive runs of stories; shuffled: stories assigned by the seeded RNG"),
    FLOAT("data", "val_fraction", data.val_fraction, 0.0, 0.5, "0.0496",
          "fraction of stories in the validation split (rounded to whole stories)"),
    FLOAT("data", "test_fraction", data.test_fraction, 0.0, 0.5, "0.0494",
          "fraction of stories in the test split (rounded to whole stories)"),

    INT("model", "n_layer", model.n_layer, 1, 128, "6", "transformer blocks"),
    INT("model", "n_head", model.n_head, 1, 128, "6", "attention heads per block"),
    INT("model", "n_embd", model.n_embd, 1, 8192, "192", "embedding width C (divisible by n_head)"),
    INT("model", "block_size", model.block_size, 1, 8192, "256", "context length T in tokens"),
    BOOL("model", "bias", model.bias, "false", "biases in Linear layers and LayerNorms"),
    BOOL("model", "tie_embeddings", model.tie_embeddings, "true",
         "LM head shares the token embedding matrix"),
    FLOAT("model", "dropout", model.dropout, 0.0, 0.95, "0.0",
          "dropout probability on embeddings, attention and residuals (0 = off, no cost)"),
    FLOAT("model", "init_std", model.init_std, 1e-6, 1.0, "0.02",
          "std of the normal weight init (residual projections get std/sqrt(2*n_layer))"),

    INT("train", "batch_size", train.batch_size, 1, 4096, "16", "sequences per micro-batch"),
    INT("train", "grad_accum", train.grad_accum, 1, 4096, "4",
        "micro-batches per optimizer step (tokens per step = batch_size*grad_accum*block_size)"),
    INT("train", "max_steps", train.max_steps, 1, 100000000, "793", "optimizer steps"),
    INT("train", "warmup_steps", train.warmup_steps, 0, 100000000, "40",
        "steps of linear learning-rate warmup (at most max_steps)"),
    FLOAT("train", "learning_rate", train.learning_rate, 1e-8, 10.0, "1e-3", "peak learning rate"),
    FLOAT("train", "min_lr", train.min_lr, 0.0, 10.0, "1e-4",
          "learning rate at the end of the cosine decay (at most learning_rate)"),
    FLOAT("train", "beta1", train.beta1, 0.0, 0.999999, "0.9", "AdamW first-moment decay"),
    FLOAT("train", "beta2", train.beta2, 0.0, 0.999999, "0.99", "AdamW second-moment decay"),
    FLOAT("train", "eps", train.eps, 1e-12, 1.0, "1e-8", "AdamW epsilon"),
    FLOAT("train", "weight_decay", train.weight_decay, 0.0, 10.0, "0.1",
          "decoupled weight decay, applied to 2-D weights only"),
    FLOAT("train", "grad_clip", train.grad_clip, 0.0, 1e6, "1.0",
          "clip gradients to this global L2 norm (0 = no clipping)"),
    INT("train", "eval_interval", train.eval_interval, 1, 100000000, "100",
        "steps between validation-loss evaluations (also at the last step)"),
    INT("train", "eval_windows", train.eval_windows, 1, 1000000, "64",
        "fixed validation windows of block_size tokens scored at each evaluation"),
    INT("train", "checkpoint_interval", train.checkpoint_interval, 1, 100000000, "100",
        "steps between writes of the 'last' checkpoint"),
    INT("train", "log_interval", train.log_interval, 1, 100000000, "10",
        "steps between progress lines on the console"),

    ENUM("quantize", "method", quantize.method, "naive|gptq", "gptq",
         "naive: round each weight to the nearest grid point; gptq: GPTQ with calibration"),
    INT("quantize", "bits", quantize.bits, 2, 8, "4", "bits per weight code"),
    BOOL("quantize", "symmetric", quantize.symmetric, "false",
         "symmetric grid around zero (else asymmetric with a zero point)"),
    ENUM("quantize", "granularity", quantize.granularity, "tensor|channel|group", "channel",
         "one scale per tensor, per output row, or per group of group_size input columns"),
    INT("quantize", "group_size", quantize.group_size, 2, 65536, "64",
        "input columns per group when granularity = group"),
    ENUM("quantize", "range", quantize.range, "minmax|mse", "minmax",
         "grid range from min/max, or an MSE-optimal shrink search"),
    BOOL("quantize", "int8_compat", quantize.int8_compat, "false",
         "naive only: per-row symmetric absmax/127 grid with levels -127..127"),
    ENUM("quantize", "scale_dtype", quantize.scale_dtype, "f32|f16", "f32", "storage type of scales"),
    BOOL("quantize", "quantize_embedding", quantize.quantize_embedding, "false",
         "also quantize the token embedding (with tied weights this is also the LM head)"),
    BOOL("quantize", "quantize_position", quantize.quantize_position, "false",
         "also quantize the position embedding"),
    INT("quantize", "n_samples", quantize.n_samples, 1, 1000000, "128",
        "gptq: calibration windows of block_size tokens from the train split"),
    FLOAT("quantize", "percdamp", quantize.percdamp, 0.0, 10.0, "0.01",
          "gptq: damping as a fraction of the mean Hessian diagonal"),
    INT("quantize", "block_size", quantize.block_size, 1, 65536, "128",
        "gptq: columns per lazy-update block"),
    BOOL("quantize", "act_order", quantize.act_order, "true",
         "gptq: quantize columns in order of decreasing Hessian diagonal"),
    BOOL("quantize", "static_groups", quantize.static_groups, "true",
         "gptq with act_order and groups: fix group grids up front (no column index at inference)"),
    STRING("quantize", "calibration", quantize.calibration, "",
           "gptq: file of calibration window offsets, one per line (empty = drawn by the seed)"),
    STRING("quantize", "checkpoint", quantize.checkpoint, "",
           "fp32 checkpoint to quantize (empty = run_dir/checkpoints/best.safetensors)"),
    LIST("quantize", "variants", quantize.variants, "",
         "the study's variants, comma-separated, each method:bits:granularity (e.g. gptq:4:g64)"),

    ENUM("eval", "split", eval.split, "test|val", "test", "token split that evaluate scores"),
    INT("eval", "stride", eval.stride, 0, 8192, "0",
        "tokens between window starts (0 = block_size/2; at most block_size)"),
    INT("eval", "batch_size", eval.batch_size, 1, 4096, "8", "windows per forward pass"),
    INT("eval", "max_windows", eval.max_windows, 0, 1000000000, "0",
        "score at most this many windows (0 = all)"),

    STRING("sample", "checkpoint", sample.checkpoint, "",
           "checkpoint to sample from (empty = run_dir/checkpoints/best.safetensors)"),
    STRING("sample", "prompt", sample.prompt, "Once upon a time", "text the generation continues"),
    INT("sample", "max_new_tokens", sample.max_new_tokens, 1, 1000000, "500", "characters to generate"),
    FLOAT("sample", "temperature", sample.temperature, 0.0, 100.0, "0.8",
          "softmax temperature (0 = greedy)"),
    INT("sample", "top_k", sample.top_k, 0, 65535, "0", "keep only the k most likely tokens (0 = all)"),
    FLOAT("sample", "top_p", sample.top_p, 1e-6, 1.0, "1.0",
          "keep the smallest set of tokens whose probability reaches p (1 = all)"),

    STRING("demo", "host", demo.host, "127.0.0.1", "address the web demo binds to"),
    INT("demo", "port", demo.port, 1, 65535, "8080", "TCP port of the web demo"),
    LIST("demo", "variants", demo.variants, "",
         "name=checkpoint pairs shown side by side (empty = the baseline and the study's variants)"),
    INT("demo", "max_prompt_chars", demo.max_prompt_chars, 1, 1000000, "2000",
        "longest prompt the demo accepts"),
    INT("demo", "max_new_tokens", demo.max_new_tokens, 1, 100000, "1000",
        "most characters one demo request may generate"),
    INT("demo", "max_body_bytes", demo.max_body_bytes, 64, 10000000, "65536",
        "largest request body the demo accepts"),

    STRING("paths", "run_dir", paths.run_dir, "runs/tinystories",
           "root of this config's outputs: data/, checkpoints/, results/"),
    STRING("paths", "figures_dir", paths.figures_dir, "figures", "where figures and their gnuplot scripts go"),
    STRING("paths", "report_dir", paths.report_dir, "report", "where the generated report goes"),
};

#define SCHEMA_COUNT (sizeof SCHEMA / sizeof SCHEMA[0])

static const char *const SECTIONS[] = {"run", "data", "model", "train", "quantize", "eval", "sample", "demo", "paths"};
#define SECTION_COUNT (sizeof SECTIONS / sizeof SECTIONS[0])

/* ---- small helpers ---------------------------------------------------- */

static void *field_ptr(ngq_config *cfg, const key_spec *spec) { return (char *)cfg + spec->offset; }
static const void *field_cptr(const ngq_config *cfg, const key_spec *spec)
{
    return (const char *)cfg + spec->offset;
}

static const key_spec *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < SCHEMA_COUNT; i++)
        if (strcmp(SCHEMA[i].section, section) == 0 && strcmp(SCHEMA[i].key, key) == 0) return &SCHEMA[i];
    return NULL;
}

static int is_section(const char *section)
{
    for (size_t i = 0; i < SECTION_COUNT; i++)
        if (strcmp(SECTIONS[i], section) == 0) return 1;
    return 0;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    size_t row[65];
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* The closest known key: in the same section first, then anywhere. */
static void suggest_key(const char *section, const char *key, char *buf, size_t size)
{
    const key_spec *best = NULL;
    size_t best_d = 3; /* suggest only within distance 2 */
    for (size_t i = 0; i < SCHEMA_COUNT; i++) {
        size_t d = edit_distance(key, SCHEMA[i].key);
        if (strcmp(SCHEMA[i].section, section) != 0) d += 1;
        if (d < best_d) {
            best_d = d;
            best = &SCHEMA[i];
        }
    }
    if (best) snprintf(buf, size, " (did you mean [%s] %s?)", best->section, best->key);
    else buf[0] = '\0';
}

static void suggest_section(const char *section, char *buf, size_t size)
{
    buf[0] = '\0';
    for (size_t i = 0; i < SECTION_COUNT; i++)
        if (edit_distance(section, SECTIONS[i]) <= 2) {
            snprintf(buf, size, " (did you mean [%s]?)", SECTIONS[i]);
            return;
        }
}

static const char *type_name(const key_spec *spec)
{
    switch (spec->type) {
    case KEY_INT:
    case KEY_INT64: return "an integer";
    case KEY_FLOAT: return "a number";
    case KEY_BOOL: return "true or false";
    case KEY_STRING: return "text";
    case KEY_LIST: return "a comma-separated list";
    case KEY_ENUM: return "one of";
    }
    return "?";
}

static void trim_copy(const char *in, char *out, size_t size)
{
    while (isspace((unsigned char)*in)) in++;
    size_t n = strlen(in);
    while (n && isspace((unsigned char)in[n - 1])) n--;
    if (n >= size) n = size - 1;
    memcpy(out, in, n);
    out[n] = '\0';
}

static int enum_has(const char *choices, const char *value)
{
    size_t len = strlen(value);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

/* Parses value into cfg's field. append: a list key seen again continues its list.
 * Messages name the key and the value but not the location; callers add it. */
static ngq_status set_value(ngq_config *cfg, const key_spec *spec, const char *raw, int append, ngq_error *err)
{
    char value[NGQ_CONFIG_STRING_MAX];
    if (strlen(raw) >= sizeof value)
        return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s: value longer than %d characters", spec->section,
                        spec->key, NGQ_CONFIG_STRING_MAX - 1);
    trim_copy(raw, value, sizeof value);
    if (strpbrk(value, "\r\n"))
        return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s: the value contains a line break", spec->section, spec->key);
    if ((spec->type == KEY_STRING || spec->type == KEY_ENUM) && strlen(value) > NGQ_CONFIG_LINE_VALUE_MAX)
        return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s: value longer than %d characters (one INI line)", spec->section,
                        spec->key, NGQ_CONFIG_LINE_VALUE_MAX);
    void *dst = field_ptr(cfg, spec);
    char *end = NULL;
    switch (spec->type) {
    case KEY_INT:
    case KEY_INT64: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno == ERANGE)
            return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s = '%s': expected %s in [%.0f, %.0f]", spec->section,
                            spec->key, value, type_name(spec), spec->min, spec->max);
        if ((double)v < spec->min || (double)v > spec->max)
            return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s = %lld is out of range: allowed [%.0f, %.0f]",
                            spec->section, spec->key, v, spec->min, spec->max);
        if (spec->type == KEY_INT) *(int *)dst = (int)v;
        else *(int64_t *)dst = (int64_t)v;
        return NGQ_OK;
    }
    case KEY_FLOAT: {
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || *end || errno == ERANGE || !isfinite(v))
            return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s = '%s': expected %s in [%g, %g]", spec->section, spec->key,
                            value, type_name(spec), spec->min, spec->max);
        if (v < spec->min || v > spec->max)
            return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s = %g is out of range: allowed [%g, %g]", spec->section,
                            spec->key, v, spec->min, spec->max);
        *(double *)dst = v;
        return NGQ_OK;
    }
    case KEY_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (strcmp(value, yes[i]) == 0) {
                *(int *)dst = 1;
                return NGQ_OK;
            }
            if (strcmp(value, no[i]) == 0) {
                *(int *)dst = 0;
                return NGQ_OK;
            }
        }
        return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s = '%s': expected true or false", spec->section, spec->key,
                        value);
    }
    case KEY_ENUM:
        if (!enum_has(spec->choices, value))
            return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s = '%s': expected one of %s", spec->section, spec->key,
                            value, spec->choices);
        memcpy(dst, value, strlen(value) + 1);
        return NGQ_OK;
    case KEY_STRING:
        memcpy(dst, value, strlen(value) + 1);
        return NGQ_OK;
    case KEY_LIST: {
        /* each item is written on a line of its own: it must fit and must not read as a comment */
        for (const char *item = value; *item;) {
            while (*item == ' ' || *item == '\t' || *item == ',') item++;
            size_t len = strcspn(item, ",");
            if (len && (*item == ';' || *item == '#'))
                return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s: item '%.*s' starts with a comment character",
                                spec->section, spec->key, (int)len, item);
            if (len > NGQ_CONFIG_LINE_VALUE_MAX)
                return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s: an item is longer than %d characters", spec->section,
                                spec->key, NGQ_CONFIG_LINE_VALUE_MAX);
            item += len;
        }
        char *list = dst;
        if (append && list[0] && value[0]) {
            size_t have = strlen(list), add = strlen(value);
            if (have + 2 + add >= NGQ_CONFIG_STRING_MAX)
                return ngq_fail(err, NGQ_ERR_CONFIG, "[%s] %s: list longer than %d characters", spec->section,
                                spec->key, NGQ_CONFIG_STRING_MAX - 1);
            const char *sep = list[have - 1] == ',' ? " " : ", ";
            size_t sep_len = strlen(sep);
            memcpy(list + have, sep, sep_len);
            memcpy(list + have + sep_len, value, add + 1);
        } else {
            memcpy(list, value, strlen(value) + 1);
        }
        return NGQ_OK;
    }
    }
    return ngq_fail(err, NGQ_ERR_INTERNAL, "unknown key type");
}

void ngq_config_defaults(ngq_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < SCHEMA_COUNT; i++) {
        ngq_status st = set_value(cfg, &SCHEMA[i], SCHEMA[i].def, 0, NULL);
        (void)st; /* every default is checked by the config test suite */
    }
}

/* ---- INI loading ------------------------------------------------------ */

typedef struct {
    ngq_config *cfg;
    ngq_error *err;
    int failed;      /* line of the first error the handler reported, 0 if none */
    const char *next; /* the reader's position in the text */
    int line;        /* the line the reader returned last */
    unsigned char seen[SCHEMA_COUNT];
} parse_state;

/* Hands inih one line at a time, so the handler knows which line it is on. */
static char *read_line(char *buf, int size, void *stream)
{
    parse_state *ps = stream;
    if (!*ps->next) return NULL;
    const char *nl = strchr(ps->next, '\n');
    size_t len = nl ? (size_t)(nl - ps->next) + 1 : strlen(ps->next);
    if (len > (size_t)size - 1) len = (size_t)size - 1; /* cannot happen: long lines are refused first */
    memcpy(buf, ps->next, len);
    buf[len] = '\0';
    ps->next += len;
    ps->line++;
    return buf;
}

static int on_ini_entry(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    if (ps->failed) return 1; /* report only the first error */
    char hint[128];
    if (!is_section(section)) {
        suggest_section(section, hint, sizeof hint);
        if (!*section)
            ngq_fail(ps->err, NGQ_ERR_CONFIG, "key '%s' appears before any [section] header", name);
        else
            ngq_fail(ps->err, NGQ_ERR_CONFIG, "unknown section [%s]%s", section, hint);
        ps->failed = ps->line;
        return 0;
    }
    const key_spec *spec = find_key(section, name);
    if (!spec) {
        suggest_key(section, name, hint, sizeof hint);
        ngq_fail(ps->err, NGQ_ERR_CONFIG, "unknown key '%s' in [%s]%s", name, section, hint);
        ps->failed = ps->line;
        return 0;
    }
    size_t index = (size_t)(spec - SCHEMA);
    if (ps->seen[index] && spec->type != KEY_LIST) {
        ngq_fail(ps->err, NGQ_ERR_CONFIG, "[%s] %s is given more than once", section, name);
        ps->failed = ps->line;
        return 0;
    }
    if (set_value(ps->cfg, spec, value, ps->seen[index], ps->err) != NGQ_OK) {
        ps->failed = ps->line;
        return 0;
    }
    ps->seen[index] = 1;
    return 1;
}

ngq_status ngq_config_load_string(ngq_config *cfg, const char *text, const char *name, ngq_error *err)
{
    /* inih reads at most INI_MAX_LINE-1 characters a line and would split a
     * longer one silently, so refuse such lines with their number. */
    int line = 1;
    size_t len = 0;
    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            line++;
            len = 0;
        } else if (++len >= INI_MAX_LINE - 1) {
            return ngq_fail(err, NGQ_ERR_CONFIG,
                            "%s:%d: line longer than %d characters; continue long lists on indented lines",
                            name, line, INI_MAX_LINE - 2);
        }
    }
    parse_state ps;
    memset(&ps, 0, sizeof ps);
    ps.cfg = cfg;
    ps.err = err;
    ps.next = text;
    int rc = ini_parse_stream(read_line, &ps, on_ini_entry, &ps);
    if (rc > 0) {
        /* inih returns the first line with any error; ours is the handler's, unless a syntax error came first */
        if (!ps.failed || rc < ps.failed)
            return ngq_fail(err, NGQ_ERR_CONFIG, "%s:%d: syntax error: expected '[section]' or 'key = value'", name,
                            rc);
        return ngq_error_prefix(err, "%s:%d", name, ps.failed);
    }
    if (rc < 0) return ngq_fail(err, NGQ_ERR_NOMEM, "%s: out of memory while parsing", name);
    return NGQ_OK;
}

ngq_status ngq_config_load_file(ngq_config *cfg, const char *path, ngq_error *err)
{
    char *text = NULL;
    size_t size = 0;
    ngq_status st = ngq_read_file(path, &text, &size, err);
    if (st) return st;
    if (strlen(text) != size) {
        free(text);
        return ngq_fail(err, NGQ_ERR_CONFIG, "%s: contains a NUL byte; not a text file", path);
    }
    st = ngq_config_load_string(cfg, text, path, err);
    free(text);
    if (st == NGQ_OK) trim_copy(path, cfg->source_path, sizeof cfg->source_path);
    return st;
}

ngq_status ngq_config_apply_override(ngq_config *cfg, const char *assignment, ngq_error *err)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq)
        return ngq_fail(err, NGQ_ERR_CONFIG, "--set '%s': expected section.key=value", assignment);
    char section[64], key[64];
    size_t ls = (size_t)(dot - assignment), lk = (size_t)(eq - dot - 1);
    if (ls == 0 || ls >= sizeof section || lk == 0 || lk >= sizeof key)
        return ngq_fail(err, NGQ_ERR_CONFIG, "--set '%s': expected section.key=value", assignment);
    memcpy(section, assignment, ls);
    section[ls] = '\0';
    memcpy(key, dot + 1, lk);
    key[lk] = '\0';
    char hint[128];
    if (!is_section(section)) {
        suggest_section(section, hint, sizeof hint);
        return ngq_fail(err, NGQ_ERR_CONFIG, "--set %s: unknown section [%s]%s", assignment, section, hint);
    }
    const key_spec *spec = find_key(section, key);
    if (!spec) {
        suggest_key(section, key, hint, sizeof hint);
        return ngq_fail(err, NGQ_ERR_CONFIG, "--set %s: unknown key '%s' in [%s]%s", assignment, key, section,
                        hint);
    }
    ngq_status st = set_value(cfg, spec, eq + 1, 0, err);
    if (st) return ngq_error_prefix(err, "--set %s", assignment);
    return NGQ_OK;
}

ngq_status ngq_config_validate(const ngq_config *cfg, ngq_error *err)
{
    const char *src = cfg->source_path[0] ? cfg->source_path : "config";
    if (cfg->model.n_embd % cfg->model.n_head != 0)
        return ngq_fail(err, NGQ_ERR_CONFIG, "%s: [model] n_embd = %d must be divisible by [model] n_head = %d", src,
                        cfg->model.n_embd, cfg->model.n_head);
    if (cfg->train.warmup_steps > cfg->train.max_steps)
        return ngq_fail(err, NGQ_ERR_CONFIG, "%s: [train] warmup_steps = %d exceeds [train] max_steps = %d", src,
                        cfg->train.warmup_steps, cfg->train.max_steps);
    if (cfg->train.min_lr > cfg->train.learning_rate)
        return ngq_fail(err, NGQ_ERR_CONFIG, "%s: [train] min_lr = %g exceeds [train] learning_rate = %g", src,
                        cfg->train.min_lr, cfg->train.learning_rate);
    if (cfg->data.val_fraction + cfg->data.test_fraction >= 0.9)
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "%s: [data] val_fraction + [data] test_fraction = %g leaves less than 10%% for training", src,
                        cfg->data.val_fraction + cfg->data.test_fraction);
    if (cfg->eval.stride > cfg->model.block_size)
        return ngq_fail(err, NGQ_ERR_CONFIG, "%s: [eval] stride = %d exceeds [model] block_size = %d", src,
                        cfg->eval.stride, cfg->model.block_size);
    if (strcmp(cfg->quantize.granularity, "group") == 0 && cfg->model.n_embd % cfg->quantize.group_size != 0)
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "%s: [quantize] group_size = %d must divide [model] n_embd = %d (every quantized layer's input width is a multiple of n_embd)",
                        src, cfg->quantize.group_size, cfg->model.n_embd);
    if (cfg->quantize.int8_compat && (cfg->quantize.bits != 8 || strcmp(cfg->quantize.method, "naive") != 0))
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "%s: [quantize] int8_compat = true needs [quantize] method = naive and [quantize] bits = 8 (got %s, %d)",
                        src, cfg->quantize.method, cfg->quantize.bits);
    if (!cfg->data.delimiter[0])
        return ngq_fail(err, NGQ_ERR_CONFIG, "%s: [data] delimiter must not be empty", src);
    return NGQ_OK;
}

/* ---- writing ------------------------------------------------------------ */

static void format_value(const ngq_config *cfg, const key_spec *spec, char *buf, size_t size)
{
    const void *p = field_cptr(cfg, spec);
    switch (spec->type) {
    case KEY_INT: snprintf(buf, size, "%d", *(const int *)p); break;
    case KEY_INT64: snprintf(buf, size, "%lld", (long long)*(const int64_t *)p); break;
    case KEY_FLOAT: {
        /* the shortest form that reads back as the same double */
        double v = *(const double *)p;
        for (int digits = 6; digits <= 17; digits++) {
            snprintf(buf, size, "%.*g", digits, v);
            if (strtod(buf, NULL) == v) break;
        }
        break;
    }
    case KEY_BOOL: snprintf(buf, size, "%s", *(const int *)p ? "true" : "false"); break;
    default: snprintf(buf, size, "%s", (const char *)p); break;
    }
}

/* " [range 1 .. 128]" etc., for comments and the reference. */
static void describe_range(const key_spec *spec, char *buf, size_t size)
{
    switch (spec->type) {
    case KEY_INT:
    case KEY_INT64: snprintf(buf, size, " [%.0f .. %.0f]", spec->min, spec->max); break;
    case KEY_FLOAT: snprintf(buf, size, " [%g .. %g]", spec->min, spec->max); break;
    case KEY_BOOL: snprintf(buf, size, " [true|false]"); break;
    case KEY_ENUM: snprintf(buf, size, " [%s]", spec->choices); break;
    default: buf[0] = '\0'; break;
    }
}

ngq_status ngq_config_write(const ngq_config *cfg, FILE *fp, ngq_error *err)
{
    const char *current = "";
    char value[NGQ_CONFIG_STRING_MAX + 32];
    for (size_t i = 0; i < SCHEMA_COUNT; i++) {
        const key_spec *spec = &SCHEMA[i];
        if (strcmp(spec->section, current) != 0) {
            fprintf(fp, "%s[%s]\n", i ? "\n" : "", spec->section);
            current = spec->section;
        }
        format_value(cfg, spec, value, sizeof value);
        char range[160];
        describe_range(spec, range, sizeof range);
        fprintf(fp, "; %s%s\n%s = ", spec->doc, range, spec->key);
        if (spec->type == KEY_LIST && strlen(value) > 80) {
            /* one item a line: inih reads indented lines as a continuation */
            for (const char *p = value; *p;) {
                const char *comma = strchr(p, ',');
                size_t n = comma ? (size_t)(comma - p + 1) : strlen(p);
                fprintf(fp, "%s%.*s\n", p == value ? "" : "    ", (int)n, p);
                p += n;
                while (*p == ' ') p++;
            }
        } else {
            fprintf(fp, "%s\n", value);
        }
    }
    if (ferror(fp)) return ngq_fail(err, NGQ_ERR_IO, "writing the configuration failed");
    return NGQ_OK;
}

/* Markdown table cell: '|' escaped so it does not end the cell. */
static void write_table_cell(FILE *fp, const char *text, int code)
{
    if (code) fputc('`', fp);
    for (const char *c = text; *c; c++) {
        if (*c == '|') fputc('\\', fp);
        fputc(*c, fp);
    }
    if (code) fputc('`', fp);
}

void ngq_config_write_reference(FILE *fp)
{
    const char *current = "";
    for (size_t i = 0; i < SCHEMA_COUNT; i++) {
        const key_spec *spec = &SCHEMA[i];
        if (strcmp(spec->section, current) != 0) {
            fprintf(fp, "%s| `[%s]` key | type | default | range | meaning |\n|---|---|---|---|---|\n", i ? "\n" : "",
                    spec->section);
            current = spec->section;
        }
        char range[96] = "";
        const char *type = "";
        switch (spec->type) {
        case KEY_INT:
        case KEY_INT64:
            type = "int";
            snprintf(range, sizeof range, "%.0f .. %.0f", spec->min, spec->max);
            break;
        case KEY_FLOAT:
            type = "float";
            snprintf(range, sizeof range, "%g .. %g", spec->min, spec->max);
            break;
        case KEY_BOOL: type = "bool"; snprintf(range, sizeof range, "true, false"); break;
        case KEY_ENUM: type = "enum"; snprintf(range, sizeof range, "%s", spec->choices); break;
        case KEY_STRING: type = "text"; break;
        case KEY_LIST: type = "list"; break;
        }
        for (char *c = range; *c; c++)
            if (*c == '|') *c = ',';
        fprintf(fp, "| `%s` | %s | ", spec->key, type);
        write_table_cell(fp, spec->def[0] ? spec->def : "(empty)", spec->def[0] != 0);
        fprintf(fp, " | %s | ", range);
        write_table_cell(fp, spec->doc, 0);
        fprintf(fp, " |\n");
    }
}

/* ---- lists and paths ------------------------------------------------------ */

ngq_status ngq_config_split_list(const char *list, char ***items, int *count, ngq_error *err)
{
    *items = NULL;
    *count = 0;
    int cap = 0;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        char buf[NGQ_CONFIG_STRING_MAX];
        if (n >= sizeof buf) n = sizeof buf - 1;
        memcpy(buf, p, n);
        buf[n] = '\0';
        char item[NGQ_CONFIG_STRING_MAX];
        trim_copy(buf, item, sizeof item);
        if (item[0]) {
            if (*count == cap) {
                cap = cap ? cap * 2 : 8;
                char **grown = realloc(*items, (size_t)cap * sizeof *grown);
                if (!grown) {
                    ngq_config_list_free(*items, *count);
                    *items = NULL;
                    *count = 0;
                    return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
                }
                *items = grown;
            }
            (*items)[(*count)++] = ngq_strdup_printf("%s", item);
        }
        if (!comma) break;
        p = comma + 1;
    }
    return NGQ_OK;
}

void ngq_config_list_free(char **items, int count)
{
    for (int i = 0; i < count; i++) free(items[i]);
    free(items);
}

char *ngq_config_data_path(const ngq_config *cfg, const char *name)
{
    return ngq_strdup_printf("%s/data/%s", cfg->paths.run_dir, name);
}

char *ngq_config_checkpoint_path(const ngq_config *cfg, const char *name)
{
    return ngq_strdup_printf("%s/checkpoints/%s", cfg->paths.run_dir, name);
}

char *ngq_config_results_path(const ngq_config *cfg, const char *name)
{
    return ngq_strdup_printf("%s/results/%s", cfg->paths.run_dir, name);
}
