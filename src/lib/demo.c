/* demo.c: the web demo's variants, its JSON API and the libmicrohttpd server
 * around it (the API is described in demo.h). Requests are answered by
 * ngq_demo_handle, which knows nothing about sockets; the server part only
 * collects a bounded body and passes it on. The page itself is embedded
 * (demo_assets.h). Nothing here prints or handles signals. */
#include "nanogptq/demo.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "demo_assets.h"
#include "nanogptq/quantize.h"
#include "nanogptq/sample.h"
#include "nanogptq/table.h"

#define SEED_MAX 9007199254740992.0 /* 2^53, the [run] seed range */

struct ngq_demo {
    ngq_config cfg;
    int count;
    ngq_demo_variant variants[NGQ_DEMO_MAX_VARIANTS];
    ngq_demo_variant_spec specs[NGQ_DEMO_MAX_VARIANTS];
    ngq_infer *models[NGQ_DEMO_MAX_VARIANTS];
    char perplexity_source[NGQ_ERROR_MESSAGE_MAX + 64];
    int default_max_new;
    atomic_int stopping;
    struct MHD_Daemon *daemon;
    int port;
};

/* ---- which checkpoints ------------------------------------------------------------ */

void ngq_demo_variant_list_free(ngq_demo_variant_list *list)
{
    free(list->items);
    for (int i = 0; i < list->missing_count; i++) free(list->missing[i]);
    free(list->missing);
    memset(list, 0, sizeof *list);
}

static int valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= NGQ_DEMO_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                 c == '_' || c == '.' || c == '+';
        if (!ok) return 0;
    }
    return 1;
}

static ngq_status list_add(ngq_demo_variant_list *list, const char *name, const char *path, ngq_error *err)
{
    if (list->count == NGQ_DEMO_MAX_VARIANTS)
        return ngq_fail(err, NGQ_ERR_CONFIG, "[demo] variants: more than %d checkpoints", NGQ_DEMO_MAX_VARIANTS);
    for (int i = 0; i < list->count; i++)
        if (strcmp(list->items[i].name, name) == 0)
            return ngq_fail(err, NGQ_ERR_CONFIG, "[demo] variants: the name '%s' is used twice", name);
    if (strlen(path) >= NGQ_CONFIG_STRING_MAX)
        return ngq_fail(err, NGQ_ERR_CONFIG, "[demo] variants: the path of '%s' is too long", name);
    ngq_demo_variant_spec *grown = realloc(list->items, (size_t)(list->count + 1) * sizeof *grown);
    if (!grown) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    list->items = grown;
    ngq_demo_variant_spec *v = &list->items[list->count++];
    snprintf(v->name, sizeof v->name, "%s", name);
    snprintf(v->path, sizeof v->path, "%s", path);
    return NGQ_OK;
}

static ngq_status list_add_missing(ngq_demo_variant_list *list, const char *path, ngq_error *err)
{
    char **grown = realloc(list->missing, (size_t)(list->missing_count + 1) * sizeof *grown);
    if (!grown) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    list->missing = grown;
    if (!(list->missing[list->missing_count] = ngq_strdup_printf("%s", path)))
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    list->missing_count++;
    return NGQ_OK;
}

/* The baseline and every study variant whose checkpoint exists. */
static ngq_status list_study_variants(const ngq_config *cfg, ngq_demo_variant_list *list, ngq_error *err)
{
    char *baseline = ngq_config_checkpoint_path(cfg, "best.safetensors");
    if (!baseline) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    ngq_status st = list_add(list, "baseline", baseline, err);
    free(baseline);
    if (st) return st;
    char **items = NULL;
    int n = 0;
    if ((st = ngq_config_split_list(cfg->quantize.variants, &items, &n, err))) return st;
    ngq_quantize_options base;
    if (n > 0 && (st = ngq_quantize_options_from_config(cfg, &base, err))) {
        ngq_config_list_free(items, n);
        ngq_error_prefix(err, "[quantize]");
        return NGQ_ERR_CONFIG;
    }
    for (int i = 0; i < n && !st; i++) {
        ngq_quantize_options o = base;
        if ((st = ngq_quantize_apply_variant(&o, items[i], err))) {
            ngq_error_prefix(err, "[quantize] variants");
            st = NGQ_ERR_CONFIG;
            break;
        }
        char label[64], file[96];
        ngq_quantize_options_label(&o, label, sizeof label);
        snprintf(file, sizeof file, "%s.safetensors", label);
        char *path = ngq_config_checkpoint_path(cfg, file);
        if (!path) {
            st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
            break;
        }
        if (!ngq_file_exists(path))
            st = list_add_missing(list, path, err);
        else if (valid_name(label))
            st = list_add(list, label, path, err);
        else
            st = ngq_fail(err, NGQ_ERR_CONFIG, "[quantize] variants: the label '%s' is not a usable name", label);
        free(path);
    }
    ngq_config_list_free(items, n);
    return st;
}

ngq_status ngq_demo_list_variants(const ngq_config *cfg, ngq_demo_variant_list *list, ngq_error *err)
{
    memset(list, 0, sizeof *list);
    char **items = NULL;
    int n = 0;
    ngq_status st = ngq_config_split_list(cfg->demo.variants, &items, &n, err);
    if (st) return st;
    if (n == 0) {
        st = list_study_variants(cfg, list, err);
    } else {
        for (int i = 0; i < n && !st; i++) {
            char *eq = strchr(items[i], '=');
            if (!eq) {
                st = ngq_fail(err, NGQ_ERR_CONFIG, "[demo] variants: '%s' is not name=path", items[i]);
                break;
            }
            *eq = '\0';
            char name[NGQ_CONFIG_STRING_MAX], path[NGQ_CONFIG_STRING_MAX];
            /* trim around the '=' */
            const char *a = items[i], *b = eq + 1;
            size_t na = strlen(a);
            while (na > 0 && (a[na - 1] == ' ' || a[na - 1] == '\t')) na--;
            while (*b == ' ' || *b == '\t') b++;
            snprintf(name, sizeof name, "%.*s", (int)na, a);
            snprintf(path, sizeof path, "%s", b);
            if (!valid_name(name))
                st = ngq_fail(err, NGQ_ERR_CONFIG,
                              "[demo] variants: the name '%s' must be 1 to %d letters, digits or '-_.+'", name,
                              NGQ_DEMO_NAME_MAX - 1);
            else if (!path[0])
                st = ngq_fail(err, NGQ_ERR_CONFIG, "[demo] variants: '%s' has no checkpoint path", name);
            else
                st = list_add(list, name, path, err);
        }
    }
    ngq_config_list_free(items, n);
    if (st) ngq_demo_variant_list_free(list);
    return st;
}

/* ---- loading ------------------------------------------------------------------------ */

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static int same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* Perplexities from eval.csv (columns label, perplexity and, optionally,
 * checkpoint): the row of the same checkpoint file, else the one row with
 * the same label and (when the column exists) a checkpoint of the same file
 * name, so evaluate may have run from another directory but another fp32
 * checkpoint does not take the baseline's number. */
static void read_perplexities(ngq_demo *d)
{
    for (int i = 0; i < d->count; i++) d->variants[i].perplexity = NAN;
    char *path = ngq_config_results_path(&d->cfg, "eval.csv");
    if (!path) {
        snprintf(d->perplexity_source, sizeof d->perplexity_source, "perplexity n/a: out of memory");
        return;
    }
    if (!ngq_file_exists(path)) {
        snprintf(d->perplexity_source, sizeof d->perplexity_source, "perplexity n/a: no %s (run evaluate)", path);
        free(path);
        return;
    }
    ngq_table t;
    ngq_error err = {0};
    if (ngq_table_load_csv(&t, path, &err)) {
        snprintf(d->perplexity_source, sizeof d->perplexity_source, "perplexity n/a: %s", err.message);
        free(path);
        return;
    }
    int c_label = ngq_table_column(&t, "label"), c_ppl = ngq_table_column(&t, "perplexity"),
        c_ckpt = ngq_table_column(&t, "checkpoint");
    if (c_label < 0 || c_ppl < 0) {
        snprintf(d->perplexity_source, sizeof d->perplexity_source,
                 "perplexity n/a: %s has no 'label' and 'perplexity' columns", path);
        ngq_table_free(&t);
        free(path);
        return;
    }
    int found = 0;
    for (int i = 0; i < d->count; i++) {
        long match = -1;
        for (size_t r = 0; c_ckpt >= 0 && r < t.n_rows && match < 0; r++)
            if (same_file(ngq_table_get(&t, r, c_ckpt), d->variants[i].path)) match = (long)r;
        if (match < 0) {
            int hits = 0;
            for (size_t r = 0; r < t.n_rows; r++)
                if (strcmp(ngq_table_get(&t, r, c_label), d->variants[i].info->label) == 0 &&
                    (c_ckpt < 0 ||
                     strcmp(base_name(ngq_table_get(&t, r, c_ckpt)), base_name(d->variants[i].path)) == 0)) {
                    hits++;
                    match = (long)r;
                }
            if (hits != 1) match = -1;
        }
        double ppl;
        if (match >= 0 && ngq_table_get_double(&t, (size_t)match, c_ppl, &ppl) && isfinite(ppl)) {
            d->variants[i].perplexity = ppl;
            found++;
        }
    }
    snprintf(d->perplexity_source, sizeof d->perplexity_source, "perplexity from %s (%d of %d checkpoints)", path,
             found, d->count);
    ngq_table_free(&t);
    free(path);
}

ngq_status ngq_demo_init(ngq_demo **out, const ngq_config *cfg, const ngq_demo_variant_spec *variants, int count,
                         ngq_error *err)
{
    *out = NULL;
    if (count < 1 || count > NGQ_DEMO_MAX_VARIANTS)
        return ngq_fail(err, NGQ_ERR_USAGE, "the demo needs 1 to %d checkpoints, got %d", NGQ_DEMO_MAX_VARIANTS,
                        count);
    ngq_demo *d = calloc(1, sizeof *d);
    if (!d) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    d->cfg = *cfg;
    atomic_init(&d->stopping, 0);
    ngq_status st = NGQ_OK;
    for (int i = 0; i < count; i++) {
        d->specs[i] = variants[i];
        if ((st = ngq_infer_load(&d->models[i], d->specs[i].path, err))) {
            ngq_error_prefix(err, "demo variant '%s'", d->specs[i].name);
            break;
        }
        d->count = i + 1;
        ngq_demo_variant *v = &d->variants[i];
        v->name = d->specs[i].name;
        v->path = d->specs[i].path;
        v->model = d->models[i];
        v->info = ngq_infer_get_info(d->models[i]);
        const ngq_vocab *a = ngq_infer_vocab(d->models[0]), *b = ngq_infer_vocab(d->models[i]);
        if (a->size != b->size || a->hash != b->hash) {
            st = ngq_fail(err, NGQ_ERR_FORMAT, "demo variant '%s' (%s) has another vocabulary than '%s' (%s)",
                          v->name, v->path, d->variants[0].name, d->variants[0].path);
            break;
        }
    }
    if (st) {
        ngq_demo_free(d);
        return st;
    }
    d->default_max_new = cfg->sample.max_new_tokens < cfg->demo.max_new_tokens ? cfg->sample.max_new_tokens
                                                                                : cfg->demo.max_new_tokens;
    read_perplexities(d);
    *out = d;
    return NGQ_OK;
}

void ngq_demo_free(ngq_demo *d)
{
    if (!d) return;
    ngq_demo_stop(d);
    for (int i = 0; i < d->count; i++) ngq_infer_free(d->models[i]);
    free(d);
}

int ngq_demo_variant_count(const ngq_demo *d) { return d->count; }

const ngq_demo_variant *ngq_demo_get_variant(const ngq_demo *d, int index)
{
    return index >= 0 && index < d->count ? &d->variants[index] : NULL;
}

const char *ngq_demo_perplexity_source(const ngq_demo *d) { return d->perplexity_source; }

/* ---- responses ---------------------------------------------------------------------- */

void ngq_demo_response_free(ngq_demo_response *response)
{
    if (!response->is_static) free(response->body);
    memset(response, 0, sizeof *response);
}

static const char *const JSON_TYPE = "application/json; charset=utf-8";

/* Takes ownership of obj. */
static void respond_json(ngq_demo_response *r, int status, cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    memset(r, 0, sizeof *r);
    r->content_type = JSON_TYPE;
    if (!text) {
        static const char nomem[] = "{\"error\":\"out of memory\",\"field\":null}";
        r->status = 500;
        r->body = (char *)nomem;
        r->size = sizeof nomem - 1;
        r->is_static = 1;
        return;
    }
    r->status = status;
    r->body = text;
    r->size = strlen(text);
}

static void respond_error(ngq_demo_response *r, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void respond_error(ngq_demo_response *r, int status, const char *field, const char *fmt, ...)
{
    char message[NGQ_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    cJSON *obj = cJSON_CreateObject();
    if (obj) {
        cJSON_AddStringToObject(obj, "error", message);
        if (field)
            cJSON_AddStringToObject(obj, "field", field);
        else
            cJSON_AddNullToObject(obj, "field");
    }
    respond_json(r, status, obj);
}

static void add_number_or_null(cJSON *obj, const char *key, double value)
{
    if (isfinite(value))
        cJSON_AddNumberToObject(obj, key, value);
    else
        cJSON_AddNullToObject(obj, key);
}

static void handle_variants(ngq_demo *d, ngq_demo_response *r)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(root, "variants");
    for (int i = 0; i < d->count; i++) {
        const ngq_demo_variant *v = &d->variants[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(list, o);
        cJSON_AddStringToObject(o, "name", v->name);
        cJSON_AddStringToObject(o, "label", v->info->label);
        cJSON_AddStringToObject(o, "method", v->info->method);
        cJSON_AddNumberToObject(o, "bits", v->info->bits);
        cJSON_AddStringToObject(o, "file", base_name(v->path));
        cJSON_AddNumberToObject(o, "file_bytes", (double)v->info->file_bytes);
        add_number_or_null(o, "bits_per_weight", v->info->bits_per_weight);
        add_number_or_null(o, "model_bits_per_weight", v->info->model_bits_per_weight);
        cJSON_AddNumberToObject(o, "block_size", ngq_infer_config(v->model)->block_size);
        add_number_or_null(o, "perplexity", v->perplexity);
    }
    cJSON_AddStringToObject(root, "perplexity_source", d->perplexity_source);
    cJSON *limits = cJSON_AddObjectToObject(root, "limits");
    cJSON_AddNumberToObject(limits, "max_prompt_chars", d->cfg.demo.max_prompt_chars);
    cJSON_AddNumberToObject(limits, "max_new_tokens", d->cfg.demo.max_new_tokens);
    cJSON_AddNumberToObject(limits, "max_body_bytes", d->cfg.demo.max_body_bytes);
    cJSON *defaults = cJSON_AddObjectToObject(root, "defaults");
    cJSON_AddStringToObject(defaults, "prompt", d->cfg.sample.prompt);
    cJSON_AddNumberToObject(defaults, "max_new_tokens", d->default_max_new);
    cJSON_AddNumberToObject(defaults, "temperature", d->cfg.sample.temperature);
    cJSON_AddNumberToObject(defaults, "top_k", d->cfg.sample.top_k);
    cJSON_AddNumberToObject(defaults, "top_p", d->cfg.sample.top_p);
    cJSON_AddNumberToObject(defaults, "seed", (double)d->cfg.run.seed);
    respond_json(r, 200, root);
}

/* ---- POST /api/generate --------------------------------------------------------------- */

typedef struct {
    const char *prompt;
    int max_new;
    ngq_sampler_config sampler;
    double temperature, top_p; /* as asked, for the reply (the sampler holds floats) */
    uint64_t seed;
    int selected[NGQ_DEMO_MAX_VARIANTS];
    int n_selected;
} generate_request;

typedef struct {
    char field[NGQ_DEMO_NAME_MAX];
    char message[NGQ_ERROR_MESSAGE_MAX];
} request_error;

static int bad(request_error *e, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int bad(request_error *e, const char *field, const char *fmt, ...)
{
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return 0;
}

/* A whole number in [min, max]. */
static int get_integer(const cJSON *item, const char *key, double min, double max, double *out, request_error *e)
{
    if (!cJSON_IsNumber(item)) return bad(e, key, "%s must be a number", key);
    double v = item->valuedouble;
    if (!(v == floor(v)) || v < min || v > max)
        return bad(e, key, "%s must be a whole number from %.0f to %.0f", key, min, max);
    *out = v;
    return 1;
}

static int count_chars(const char *s)
{
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static const char *const REQUEST_KEYS[] = {"prompt", "top_k", "top_p", "seed", "temperature", "max_new_tokens",
                                           "variants"};
#define REQUEST_KEY_COUNT ((int)(sizeof REQUEST_KEYS / sizeof REQUEST_KEYS[0]))

/* Checks a parsed request object; returns 1 when req is filled, 0 with e set. */
static int parse_generate(const ngq_demo *d, const cJSON *root, generate_request *req, request_error *e)
{
    memset(req, 0, sizeof *req);
    if (!cJSON_IsObject(root)) return bad(e, "body", "the body must be a JSON object");
    const cJSON *values[REQUEST_KEY_COUNT] = {0};
    for (const cJSON *item = root->child; item; item = item->next) {
        int k = 0;
        while (k < REQUEST_KEY_COUNT && strcmp(item->string, REQUEST_KEYS[k]) != 0) k++;
        if (k == REQUEST_KEY_COUNT) {
            char shown[NGQ_DEMO_NAME_MAX];
            snprintf(shown, sizeof shown, "%s", item->string);
            return bad(e, shown,
                       "unknown key '%s' (expected prompt, max_new_tokens, temperature, top_k, top_p, seed, variants)",
                       shown);
        }
        if (values[k]) return bad(e, REQUEST_KEYS[k], "%s is given twice", REQUEST_KEYS[k]);
        values[k] = item;
    }
    const cJSON *prompt = values[0], *top_k = values[1], *top_p = values[2], *seed = values[3],
                *temperature = values[4], *max_new = values[5], *variants = values[6];

    if (!prompt) return bad(e, "prompt", "prompt is required (it may be empty)");
    if (!cJSON_IsString(prompt)) return bad(e, "prompt", "prompt must be a string");
    ngq_error uerr = {0};
    if (ngq_utf8_validate(prompt->valuestring, strlen(prompt->valuestring), "the prompt", &uerr))
        return bad(e, "prompt", "%s", uerr.message);
    int chars = count_chars(prompt->valuestring);
    if (chars > d->cfg.demo.max_prompt_chars)
        return bad(e, "prompt", "the prompt has %d characters; at most %d are accepted", chars,
                   d->cfg.demo.max_prompt_chars);
    req->prompt = prompt->valuestring;

    double v = 0.0;
    req->max_new = d->default_max_new;
    if (max_new) {
        if (!get_integer(max_new, "max_new_tokens", 1, d->cfg.demo.max_new_tokens, &v, e)) return 0;
        req->max_new = (int)v;
    }
    req->temperature = d->cfg.sample.temperature;
    if (temperature) {
        if (!cJSON_IsNumber(temperature)) return bad(e, "temperature", "temperature must be a number");
        v = temperature->valuedouble;
        if (!(v >= 0.0 && v <= 100.0))
            return bad(e, "temperature", "temperature must be from 0 (greedy) to 100");
        req->temperature = v;
    }
    req->sampler.temperature = (float)req->temperature;
    req->sampler.top_k = d->cfg.sample.top_k;
    if (top_k) {
        if (!get_integer(top_k, "top_k", 0, 65535, &v, e)) return 0;
        req->sampler.top_k = (int)v;
    }
    req->top_p = d->cfg.sample.top_p;
    if (top_p) {
        if (!cJSON_IsNumber(top_p)) return bad(e, "top_p", "top_p must be a number");
        v = top_p->valuedouble;
        if (!(v > 0.0 && v <= 1.0) || (float)v <= 0.0f)
            return bad(e, "top_p", "top_p must be above 0 and at most 1 (1 = all)");
        req->top_p = v;
    }
    req->sampler.top_p = (float)req->top_p;
    req->seed = (uint64_t)d->cfg.run.seed;
    if (seed) {
        if (!get_integer(seed, "seed", 0, SEED_MAX, &v, e)) return 0;
        req->seed = (uint64_t)v;
    }
    if (!variants) {
        for (int i = 0; i < d->count; i++) req->selected[i] = i;
        req->n_selected = d->count;
    } else {
        if (!cJSON_IsArray(variants)) return bad(e, "variants", "variants must be an array of names");
        int n = cJSON_GetArraySize(variants);
        if (n < 1) return bad(e, "variants", "variants must name at least one checkpoint");
        if (n > d->count) return bad(e, "variants", "variants names %d checkpoints; there are %d", n, d->count);
        const cJSON *item;
        cJSON_ArrayForEach(item, variants)
        {
            if (!cJSON_IsString(item)) return bad(e, "variants", "variants must be an array of names");
            int found = -1;
            for (int i = 0; i < d->count && found < 0; i++)
                if (strcmp(item->valuestring, d->variants[i].name) == 0) found = i;
            if (found < 0) {
                char shown[NGQ_DEMO_NAME_MAX];
                snprintf(shown, sizeof shown, "%s", item->valuestring);
                return bad(e, "variants", "no checkpoint is named '%s'", shown);
            }
            for (int i = 0; i < req->n_selected; i++)
                if (req->selected[i] == found) return bad(e, "variants", "'%s' is named twice", d->variants[found].name);
            req->selected[req->n_selected++] = found;
        }
    }
    /* the prompt must be in every selected model's vocabulary */
    for (int i = 0; i < req->n_selected; i++) {
        const ngq_infer *m = d->variants[req->selected[i]].model;
        ngq_sample_prompt p;
        ngq_error perr = {0};
        ngq_status st = ngq_sample_encode_prompt(ngq_infer_vocab(m), ngq_infer_config(m)->block_size, req->prompt,
                                                 strlen(req->prompt), &p, &perr);
        ngq_sample_prompt_free(&p);
        if (st == NGQ_ERR_USAGE) return bad(e, "prompt", "%s", perr.message);
        if (st) return bad(e, "", "%s", perr.message); /* out of memory: not the client's fault */
    }
    return 1;
}

typedef struct {
    char *text;
    size_t len, cap;
    const atomic_int *stopping;
} text_sink;

static int append_token(int token, const char *utf8, void *user)
{
    (void)token;
    text_sink *s = user;
    size_t n = strlen(utf8);
    if (s->len + n < s->cap) {
        memcpy(s->text + s->len, utf8, n);
        s->len += n;
        s->text[s->len] = '\0';
    }
    return atomic_load(s->stopping) != 0;
}

static void handle_generate(ngq_demo *d, const char *body, size_t size, ngq_demo_response *r)
{
    if (size == 0) {
        respond_error(r, 400, "body", "the body must be a JSON object, and it is empty");
        return;
    }
    const char *at = NULL; /* where parsing stopped (cJSON_GetErrorPtr is shared by all threads) */
    cJSON *root = cJSON_ParseWithLengthOpts(body, size, &at, 0);
    if (!root) {
        size_t offset = at && at >= body && at <= body + size ? (size_t)(at - body) : 0;
        respond_error(r, 400, "body", "the body is not valid JSON (near byte %zu)", offset);
        return;
    }
    while (at < body + size && (*at == ' ' || *at == '\t' || *at == '\r' || *at == '\n')) at++;
    if (at < body + size) {
        cJSON_Delete(root);
        respond_error(r, 400, "body", "the body has more after its JSON value (at byte %zu)", (size_t)(at - body));
        return;
    }
    generate_request req;
    request_error e;
    if (!parse_generate(d, root, &req, &e)) {
        respond_error(r, e.field[0] ? 400 : 500, e.field[0] ? e.field : NULL, "%s", e.message);
        cJSON_Delete(root);
        return;
    }

    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "prompt", req.prompt);
    cJSON *settings = cJSON_AddObjectToObject(out, "settings");
    cJSON_AddNumberToObject(settings, "max_new_tokens", req.max_new);
    cJSON_AddNumberToObject(settings, "temperature", req.temperature);
    cJSON_AddNumberToObject(settings, "top_k", req.sampler.top_k);
    cJSON_AddNumberToObject(settings, "top_p", req.top_p);
    cJSON_AddNumberToObject(settings, "seed", (double)req.seed);
    cJSON *results = cJSON_AddArrayToObject(out, "results");
    text_sink sink = {.cap = (size_t)req.max_new * 4 + 1, .stopping = &d->stopping};
    sink.text = malloc(sink.cap);
    if (!sink.text || !results) {
        free(sink.text);
        cJSON_Delete(out);
        cJSON_Delete(root);
        respond_error(r, 500, NULL, "out of memory");
        return;
    }
    /* A new connection thread starts its OpenMP team on its first parallel
     * region; start it here so the first column's speed does not include it. */
    #pragma omp parallel
    {
    }
    for (int i = 0; i < req.n_selected; i++) {
        const ngq_demo_variant *v = &d->variants[req.selected[i]];
        sink.len = 0;
        sink.text[0] = '\0';
        ngq_sample_stats stats;
        ngq_error gerr = {0};
        ngq_status st = ngq_sample_generate(v->model, req.prompt, req.max_new, &req.sampler, req.seed, append_token,
                                            &sink, &stats, &gerr);
        if (st || stats.stopped) {
            free(sink.text);
            cJSON_Delete(out);
            cJSON_Delete(root);
            if (st)
                respond_error(r, 500, NULL, "generating with '%s': %s", v->name, gerr.message);
            else
                respond_error(r, 503, NULL, "the server is shutting down");
            return;
        }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(results, o);
        cJSON_AddStringToObject(o, "name", v->name);
        cJSON_AddStringToObject(o, "label", v->info->label);
        cJSON_AddStringToObject(o, "text", sink.text);
        cJSON_AddNumberToObject(o, "generated_tokens", stats.generated_tokens);
        cJSON_AddNumberToObject(o, "tokens_per_second", stats.tokens_per_second);
        cJSON_AddNumberToObject(o, "seconds", stats.generate_seconds + stats.prompt_seconds);
        cJSON_AddNumberToObject(o, "prompt_tokens", stats.prompt_tokens);
        cJSON_AddBoolToObject(o, "prompt_truncated", stats.prompt_truncated);
        cJSON_AddBoolToObject(o, "from_newline", stats.from_newline);
        cJSON_AddNumberToObject(o, "file_bytes", (double)v->info->file_bytes);
        add_number_or_null(o, "bits_per_weight", v->info->bits_per_weight);
        add_number_or_null(o, "perplexity", v->perplexity);
    }
    free(sink.text);
    cJSON_Delete(root);
    respond_json(r, 200, out);
}

/* ---- routing ---------------------------------------------------------------------------- */

void ngq_demo_handle(ngq_demo *d, const char *method, const char *path, const char *body, size_t body_size,
                     ngq_demo_response *response)
{
    memset(response, 0, sizeof *response);
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    if (strcmp(path, "/api/generate") == 0) {
        if (post) {
            handle_generate(d, body, body_size, response);
        } else {
            respond_error(response, 405, NULL, "%s is not allowed on %s: use POST", method, path);
            response->allow = "POST";
        }
        return;
    }
    if (strcmp(path, "/api/variants") == 0) {
        if (get) {
            handle_variants(d, response);
        } else {
            respond_error(response, 405, NULL, "%s is not allowed on %s: use GET", method, path);
            response->allow = "GET, HEAD";
        }
        return;
    }
    const char *asset_path = strcmp(path, "/") == 0 ? "/index.html" : path;
    for (int i = 0; i < ngq_demo_asset_count; i++) {
        const ngq_demo_asset *a = &ngq_demo_assets[i];
        if (strcmp(asset_path, a->path) != 0) continue;
        if (!get) {
            respond_error(response, 405, NULL, "%s is not allowed on %s: use GET", method, path);
            response->allow = "GET, HEAD";
            return;
        }
        response->status = 200;
        response->content_type = a->content_type;
        response->body = (char *)a->data;
        response->size = a->size;
        response->is_static = 1;
        return;
    }
    char shown[128];
    snprintf(shown, sizeof shown, "%s", path);
    respond_error(response, 404, NULL, "no such page: %s", shown);
}

/* ---- the server ------------------------------------------------------------------------ */

/* One request's body, collected up to the limit. */
typedef struct {
    char *body;
    size_t size, cap;
    int too_large;
} request_state;

static enum MHD_Result send_response(struct MHD_Connection *c, ngq_demo_response *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r->size, r->body, r->is_static ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        ngq_demo_response_free(r);
        return MHD_NO;
    }
    r->body = NULL; /* MHD owns it now */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    if (r->allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void too_large_response(const ngq_demo *d, ngq_demo_response *r)
{
    respond_error(r, 413, "body", "the body is larger than %d bytes", d->cfg.demo.max_body_bytes);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    ngq_demo *d = cls;
    request_state *s = *con_cls;
    const size_t limit = (size_t)d->cfg.demo.max_body_bytes;
    if (!s) {
        /* headers only: refuse an announced oversized body before reading it */
        if (!(s = calloc(1, sizeof *s))) return MHD_NO;
        *con_cls = s;
        const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(length, &end, 10);
            if (errno || end == length || n > limit) {
                ngq_demo_response r;
                too_large_response(d, &r);
                return send_response(c, &r);
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (s->too_large || s->size + n > limit) {
            s->too_large = 1;
            return MHD_YES;
        }
        if (s->size + n + 1 > s->cap) {
            size_t cap = s->cap ? s->cap : 1024;
            while (cap < s->size + n + 1) cap *= 2;
            char *grown = realloc(s->body, cap);
            if (!grown) return MHD_NO;
            s->body = grown;
            s->cap = cap;
        }
        memcpy(s->body + s->size, upload_data, n);
        s->size += n;
        s->body[s->size] = '\0';
        return MHD_YES;
    }
    ngq_demo_response r;
    if (s->too_large)
        too_large_response(d, &r);
    else
        ngq_demo_handle(d, method, url, s->body ? s->body : "", s->size, &r);
    return send_response(c, &r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    request_state *s = *con_cls;
    if (s) {
        free(s->body);
        free(s);
    }
    *con_cls = NULL;
}

ngq_status ngq_demo_start(ngq_demo *d, const char *host, int port, ngq_error *err)
{
    if (d->daemon) return ngq_fail(err, NGQ_ERR_INTERNAL, "the demo server is already running");
    if (port < 0 || port > 65535) return ngq_fail(err, NGQ_ERR_USAGE, "port %d is not in 0..65535", port);
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *found = NULL;
    int gai = getaddrinfo(host, service, &hints, &found);
    if (gai != 0) return ngq_fail(err, NGQ_ERR_IO, "cannot resolve host '%s': %s", host, gai_strerror(gai));
    int fd = -1, family = 0, saved = 0;
    for (struct addrinfo *a = found; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
            continue;
        }
        family = a->ai_family;
    }
    freeaddrinfo(found);
    if (fd < 0) return ngq_fail(err, NGQ_ERR_IO, "cannot listen on %s port %d: %s", host, port, strerror(saved));
    struct sockaddr_storage bound;
    socklen_t len = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &len) != 0) {
        saved = errno;
        close(fd);
        return ngq_fail(err, NGQ_ERR_IO, "getsockname: %s", strerror(saved));
    }
    int bound_port = family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&bound)->sin_port);

    atomic_store(&d->stopping, 0);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO;
    if (family == AF_INET6) flags |= MHD_USE_IPv6;
    d->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, d,
                                 MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)NGQ_DEMO_MAX_CONNECTIONS,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)NGQ_DEMO_CONNECTION_TIMEOUT_SECONDS,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                 MHD_OPTION_END);
    if (!d->daemon) {
        close(fd);
        return ngq_fail(err, NGQ_ERR_IO, "libmicrohttpd could not start a server on %s port %d", host, bound_port);
    }
    d->port = bound_port;
    return NGQ_OK;
}

int ngq_demo_port(const ngq_demo *d) { return d->daemon ? d->port : 0; }

void ngq_demo_stop(ngq_demo *d)
{
    if (!d || !d->daemon) return;
    atomic_store(&d->stopping, 1);
    MHD_stop_daemon(d->daemon); /* closes the listening socket and joins every connection thread */
    d->daemon = NULL;
    d->port = 0;
}
