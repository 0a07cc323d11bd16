/* test_demo.c: the demo's checkpoint list ([demo] variants and the default of
 * baseline + existing study variants), and its HTTP API end to end on an
 * ephemeral loopback port with a plain socket client: the page and its
 * assets, /api/variants (with perplexities read from an eval.csv written
 * here), /api/generate (its texts equal in-process generation), every 400,
 * oversized bodies (413), 404 and 405, concurrent clients, and shutdown.
 * Fixtures: small random-initialised checkpoints and an 8-bit version. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "nanogptq/checkpoint.h"
#include "nanogptq/cli.h"
#include "nanogptq/demo.h"
#include "nanogptq/quantize.h"
#include "nanogptq/sample.h"

#define MAX_PROMPT 50
#define MAX_NEW 64
#define MAX_BODY 1024

static char tmpdir[256];
static ngq_config cfg;
static char *baseline_path, *other_path, *q8_path;

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle)) fail_msg("expected \"%s\" in \"%s\"", needle, haystack);
}

/* A random-initialised model with vocabulary "\n", " ", a..z. */
static int save_random_model(const char *path, uint64_t seed)
{
    uint32_t cps[28];
    cps[0] = '\n';
    cps[1] = ' ';
    for (int i = 0; i < 26; i++) cps[2 + i] = 'a' + (uint32_t)i;
    ngq_vocab vocab;
    ngq_error err = {0};
    if (ngq_vocab_from_codepoints(&vocab, cps, 28, &err)) return -1;
    ngq_model_config mc = {.vocab_size = vocab.size, .block_size = 32, .n_layer = 2, .n_head = 2, .n_embd = 32,
                           .bias = 0, .tie_embeddings = 1, .dropout = 0.0f, .init_std = 0.3f};
    ngq_model model;
    if (ngq_model_init(&model, &mc, &err)) return -1;
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 1);
    ngq_model_init_weights(&model, &rng);
    ngq_checkpoint_meta meta = {.val_loss = NAN};
    int rc = ngq_checkpoint_save(path, &model, &vocab, &meta, NULL, &err) ? -1 : 0;
    if (rc) fprintf(stderr, "fixture: %s\n", err.message);
    ngq_model_free(&model);
    ngq_vocab_free(&vocab);
    return rc;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ngq_test_demo_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    ngq_config_defaults(&cfg);
    snprintf(cfg.paths.run_dir, sizeof cfg.paths.run_dir, "%s/run", tmpdir);
    snprintf(cfg.quantize.variants, sizeof cfg.quantize.variants, "naive:8:channel, gptq:4:g16");
    snprintf(cfg.sample.prompt, sizeof cfg.sample.prompt, "once upon");
    cfg.sample.max_new_tokens = 500;
    cfg.demo.max_prompt_chars = MAX_PROMPT;
    cfg.demo.max_new_tokens = MAX_NEW;
    cfg.demo.max_body_bytes = MAX_BODY;
    ngq_runtime_setup(&cfg);
    ngq_error err = {0};
    char *dir = ngq_config_checkpoint_path(&cfg, "");
    char *results = ngq_config_results_path(&cfg, "");
    if (ngq_make_dirs(dir, &err) || ngq_make_dirs(results, &err)) return -1;
    free(dir);
    free(results);
    baseline_path = ngq_config_checkpoint_path(&cfg, "best.safetensors");
    other_path = ngq_path_join(tmpdir, "other.safetensors");
    q8_path = ngq_config_checkpoint_path(&cfg, "naive-8b-channel.safetensors");
    if (save_random_model(baseline_path, 11) || save_random_model(other_path, 12)) return -1;
    ngq_quantize_options qo;
    ngq_quantize_result qr;
    if (ngq_quantize_options_from_config(&cfg, &qo, &err) || ngq_quantize_apply_variant(&qo, "naive:8:channel", &err) ||
        ngq_quantize_run(&cfg, baseline_path, q8_path, &qo, NULL, NULL, &qr, &err)) {
        fprintf(stderr, "fixture: %s\n", err.message);
        return -1;
    }
    ngq_quantize_result_free(&qr);
    /* perplexities: the baseline's row found by its checkpoint path, the
     * 8-bit one by its label; a row for a checkpoint that is not shown */
    char *csv = ngq_config_results_path(&cfg, "eval.csv");
    FILE *fp = fopen(csv, "w");
    if (!fp) return -1;
    fprintf(fp, "label,method,bits,perplexity,checkpoint\n"
                "fp32,fp32,32,4.25,%s\n"
                "naive-8b-channel,naive,8,4.5,elsewhere/naive-8b-channel.safetensors\n"
                "gptq-3b-g64,gptq,3,9.75,elsewhere/gptq-3b-g64.safetensors\n",
            baseline_path);
    fclose(fp);
    free(csv);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(baseline_path);
    free(other_path);
    free(q8_path);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- the checkpoint list ------------------------------------------------------------ */

static void test_list_variants(void **state)
{
    (void)state;
    ngq_demo_variant_list list;
    ngq_error err = {0};
    /* default: the baseline, then the study variants that exist */
    assert_int_equal(ngq_demo_list_variants(&cfg, &list, &err), NGQ_OK);
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].name, "baseline");
    assert_string_equal(list.items[0].path, baseline_path);
    assert_string_equal(list.items[1].name, "naive-8b-channel");
    assert_string_equal(list.items[1].path, q8_path);
    assert_int_equal(list.missing_count, 1);
    assert_contains(list.missing[0], "gptq-4b-g16.safetensors");
    ngq_demo_variant_list_free(&list);

    ngq_config c = cfg;
    snprintf(c.demo.variants, sizeof c.demo.variants, "fp32 = %s, other=%s", baseline_path, other_path);
    assert_int_equal(ngq_demo_list_variants(&c, &list, &err), NGQ_OK);
    assert_int_equal(list.count, 2);
    assert_string_equal(list.items[0].name, "fp32");
    assert_string_equal(list.items[0].path, baseline_path);
    assert_string_equal(list.items[1].name, "other");
    assert_int_equal(list.missing_count, 0);
    ngq_demo_variant_list_free(&list);

    const struct {
        const char *value, *message;
    } bad[] = {
        {"justapath.safetensors", "not name=path"},
        {"a=x, a=y", "used twice"},
        {"bad name=x", "letters, digits"},
        {"=x", "letters, digits"},
        {"a=", "no checkpoint path"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(c.demo.variants, sizeof c.demo.variants, "%s", bad[i].value);
        assert_int_equal(ngq_demo_list_variants(&c, &list, &err), NGQ_ERR_CONFIG);
        assert_contains(err.message, bad[i].message);
        assert_int_equal(list.count, 0);
    }
    c = cfg;
    snprintf(c.quantize.variants, sizeof c.quantize.variants, "naive:8:channel, gptq:banana");
    assert_int_equal(ngq_demo_list_variants(&c, &list, &err), NGQ_ERR_CONFIG);
    assert_contains(err.message, "[quantize] variants");
}

static void test_init_errors(void **state)
{
    (void)state;
    ngq_demo *d = NULL;
    ngq_error err = {0};
    ngq_demo_variant_spec missing = {.name = "gone"};
    snprintf(missing.path, sizeof missing.path, "%s/nothing.safetensors", tmpdir);
    assert_int_not_equal(ngq_demo_init(&d, &cfg, &missing, 1, &err), NGQ_OK);
    assert_contains(err.message, "gone");
    assert_null(d);
    assert_int_equal(ngq_demo_init(&d, &cfg, &missing, 0, &err), NGQ_ERR_USAGE);
}

/* ---- a plain HTTP client ---------------------------------------------------------------- */

typedef struct {
    int status;
    char head[4096];
    char *body;
    size_t body_len;
} http_reply;

static void reply_free(http_reply *r)
{
    free(r->body);
    r->body = NULL;
}

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends raw bytes and reads the reply until the server closes. 0 on success. */
static int http_raw(int port, const char *raw, size_t raw_len, http_reply *r)
{
    memset(r, 0, sizeof *r);
    int fd = connect_loopback(port);
    if (fd < 0) return -1;
    for (size_t sent = 0; sent < raw_len;) {
        ssize_t n = send(fd, raw + sent, raw_len - sent, MSG_NOSIGNAL);
        if (n <= 0) break; /* the server may answer (413) before reading everything */
        sent += (size_t)n;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (len < 12 || !end || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1) {
        free(buf);
        return -1;
    }
    snprintf(r->head, sizeof r->head, "%.*s", (int)(end - buf), buf);
    r->body_len = len - (size_t)(end + 4 - buf);
    r->body = malloc(r->body_len + 1);
    memcpy(r->body, end + 4, r->body_len);
    r->body[r->body_len] = '\0';
    free(buf);
    return 0;
}

static int http(int port, const char *method, const char *path, const char *body, http_reply *r)
{
    char raw[8192];
    int n;
    if (body)
        n = snprintf(raw, sizeof raw,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, strlen(body), body);
    else
        n = snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", method, path);
    if (n < 0 || (size_t)n >= sizeof raw) return -1;
    return http_raw(port, raw, (size_t)n, r);
}

/* The header's value (case-insensitive name), copied into out; 0 if absent. */
static int header(const http_reply *r, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    for (const char *line = strstr(r->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            h += n + 1;
            while (*h == ' ') h++;
            const char *e = strstr(h, "\r\n");
            snprintf(out, size, "%.*s", (int)(e ? (size_t)(e - h) : strlen(h)), h);
            return 1;
        }
    }
    return 0;
}

/* ---- the server ---------------------------------------------------------------------------- */

typedef struct {
    ngq_demo *demo;
    int port;
} server;

static void start_server(server *s)
{
    ngq_demo_variant_spec specs[3] = {{.name = "baseline"}, {.name = "naive8"}, {.name = "other"}};
    snprintf(specs[0].path, sizeof specs[0].path, "%s", baseline_path);
    snprintf(specs[1].path, sizeof specs[1].path, "%s", q8_path);
    snprintf(specs[2].path, sizeof specs[2].path, "%s", other_path);
    ngq_error err = {0};
    if (ngq_demo_init(&s->demo, &cfg, specs, 3, &err)) fail_msg("%s", err.message);
    if (ngq_demo_start(s->demo, "127.0.0.1", 0, &err)) fail_msg("%s", err.message);
    s->port = ngq_demo_port(s->demo);
    assert_true(s->port > 0 && s->port < 65536);
}

/* What /api/generate must return for one checkpoint: generated in-process. */
static char *expected_text(const char *path, const char *prompt, int max_new, float temperature, int top_k, float top_p,
                           uint64_t seed);

static void test_http_pages_and_variants(void **state)
{
    (void)state;
    server s;
    start_server(&s);
    http_reply r;
    char value[256];

    assert_int_equal(http(s.port, "GET", "/", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(header(&r, "Content-Type", value, sizeof value));
    assert_contains(value, "text/html");
    assert_contains(r.body, "<script src=\"/app.js\"></script>");
    assert_null(strstr(r.body, "http://")); /* nothing external */
    assert_null(strstr(r.body, "https://"));
    reply_free(&r);
    const char *assets[][2] = {{"/app.js", "text/javascript"}, {"/style.css", "text/css"}, {"/index.html", "text/html"}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(http(s.port, "GET", assets[i][0], NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_true(header(&r, "Content-Type", value, sizeof value));
        assert_contains(value, assets[i][1]);
        assert_true(r.body_len > 100);
        reply_free(&r);
    }
    assert_int_equal(http(s.port, "GET", "/app.js", NULL, &r), 0);
    assert_contains(r.body, "/api/generate");
    reply_free(&r);

    assert_int_equal(http(s.port, "GET", "/api/variants", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(header(&r, "Content-Type", value, sizeof value));
    assert_contains(value, "application/json");
    cJSON *root = cJSON_Parse(r.body);
    assert_non_null(root);
    cJSON *list = cJSON_GetObjectItem(root, "variants");
    assert_int_equal(cJSON_GetArraySize(list), 3);
    const char *names[3] = {"baseline", "naive8", "other"};
    const char *labels[3] = {"fp32", "naive-8b-channel", "fp32"};
    for (int i = 0; i < 3; i++) {
        cJSON *v = cJSON_GetArrayItem(list, i);
        assert_string_equal(cJSON_GetObjectItem(v, "name")->valuestring, names[i]);
        assert_string_equal(cJSON_GetObjectItem(v, "label")->valuestring, labels[i]);
        assert_true(cJSON_GetObjectItem(v, "file_bytes")->valuedouble > 1000);
    }
    cJSON *v0 = cJSON_GetArrayItem(list, 0), *v1 = cJSON_GetArrayItem(list, 1), *v2 = cJSON_GetArrayItem(list, 2);
    /* perplexity: the baseline by checkpoint path, the 8-bit one by label and file name; none
     * for "other", an fp32 checkpoint too but not the file eval.csv scored */
    assert_float_equal(cJSON_GetObjectItem(v0, "perplexity")->valuedouble, 4.25, 1e-12);
    assert_float_equal(cJSON_GetObjectItem(v1, "perplexity")->valuedouble, 4.5, 1e-12);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(v2, "perplexity")));
    assert_float_equal(cJSON_GetObjectItem(v0, "bits_per_weight")->valuedouble, 32.0, 1e-12);
    double bpw = cJSON_GetObjectItem(v1, "bits_per_weight")->valuedouble;
    assert_true(bpw > 8.0 && bpw < 10.0);
    assert_int_equal((int)cJSON_GetObjectItem(cJSON_GetObjectItem(root, "limits"), "max_new_tokens")->valuedouble,
                     MAX_NEW);
    cJSON *defaults = cJSON_GetObjectItem(root, "defaults");
    assert_string_equal(cJSON_GetObjectItem(defaults, "prompt")->valuestring, "once upon");
    /* the smaller of [sample] 500 and [demo] 64 */
    assert_int_equal((int)cJSON_GetObjectItem(defaults, "max_new_tokens")->valuedouble, MAX_NEW);
    assert_contains(cJSON_GetObjectItem(root, "perplexity_source")->valuestring, "eval.csv");
    cJSON_Delete(root);
    reply_free(&r);
    ngq_demo_free(s.demo);
}

static void test_http_generate(void **state)
{
    (void)state;
    server s;
    start_server(&s);
    http_reply r;
    assert_int_equal(http(s.port, "POST", "/api/generate",
                          "{\"prompt\": \"the cat\", \"max_new_tokens\": 40, \"temperature\": 0.9, \"top_k\": 10, "
                          "\"top_p\": 0.95, \"seed\": 5}",
                          &r),
                     0);
    assert_int_equal(r.status, 200);
    cJSON *root = cJSON_Parse(r.body);
    assert_non_null(root);
    assert_string_equal(cJSON_GetObjectItem(root, "prompt")->valuestring, "the cat");
    cJSON *settings = cJSON_GetObjectItem(root, "settings");
    assert_true(cJSON_GetObjectItem(settings, "temperature")->valuedouble == 0.9);
    assert_true(cJSON_GetObjectItem(settings, "top_p")->valuedouble == 0.95);
    assert_int_equal((int)cJSON_GetObjectItem(settings, "seed")->valuedouble, 5);
    cJSON *results = cJSON_GetObjectItem(root, "results");
    assert_int_equal(cJSON_GetArraySize(results), 3);
    const char *paths[3] = {baseline_path, q8_path, other_path};
    const char *names[3] = {"baseline", "naive8", "other"};
    for (int i = 0; i < 3; i++) {
        cJSON *o = cJSON_GetArrayItem(results, i);
        assert_string_equal(cJSON_GetObjectItem(o, "name")->valuestring, names[i]);
        char *want = expected_text(paths[i], "the cat", 40, 0.9f, 10, 0.95f, 5);
        assert_string_equal(cJSON_GetObjectItem(o, "text")->valuestring, want);
        free(want);
        assert_int_equal((int)cJSON_GetObjectItem(o, "generated_tokens")->valuedouble, 40);
        assert_int_equal((int)cJSON_GetObjectItem(o, "prompt_tokens")->valuedouble, 7);
        assert_true(cJSON_GetObjectItem(o, "tokens_per_second")->valuedouble > 0);
        assert_true(cJSON_IsFalse(cJSON_GetObjectItem(o, "prompt_truncated")));
    }
    /* the two fp32 models differ, so the texts really come from each checkpoint */
    assert_string_not_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(results, 0), "text")->valuestring,
                            cJSON_GetObjectItem(cJSON_GetArrayItem(results, 2), "text")->valuestring);
    cJSON_Delete(root);
    reply_free(&r);

    /* defaults, a chosen subset in the order asked, a prompt longer than the context, the empty prompt */
    assert_int_equal(http(s.port, "POST", "/api/generate",
                          "{\"prompt\": \"abcdefghijklmnopqrstuvwxyz abcdefghijklmnopq\", "
                          "\"variants\": [\"other\", \"baseline\"], \"temperature\": 0}",
                          &r),
                     0);
    assert_int_equal(r.status, 200);
    root = cJSON_Parse(r.body);
    results = cJSON_GetObjectItem(root, "results");
    assert_int_equal(cJSON_GetArraySize(results), 2);
    cJSON *first = cJSON_GetArrayItem(results, 0);
    assert_string_equal(cJSON_GetObjectItem(first, "name")->valuestring, "other");
    assert_int_equal((int)cJSON_GetObjectItem(first, "generated_tokens")->valuedouble, MAX_NEW);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(first, "prompt_truncated")));
    assert_int_equal((int)cJSON_GetObjectItem(first, "prompt_tokens")->valuedouble, 32);
    char *want = expected_text(other_path, "abcdefghijklmnopqrstuvwxyz abcdefghijklmnopq", MAX_NEW, 0.0f, 0,
                               1.0f, 1337);
    assert_string_equal(cJSON_GetObjectItem(first, "text")->valuestring, want);
    free(want);
    cJSON_Delete(root);
    reply_free(&r);

    assert_int_equal(http(s.port, "POST", "/api/generate", "{\"prompt\": \"\", \"max_new_tokens\": 3}", &r), 0);
    assert_int_equal(r.status, 200);
    root = cJSON_Parse(r.body);
    first = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "results"), 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(first, "from_newline")));
    cJSON_Delete(root);
    reply_free(&r);
    ngq_demo_free(s.demo);
}

static void expect_error(int port, const char *body, int status, const char *field, const char *message)
{
    http_reply r;
    if (http(port, "POST", "/api/generate", body, &r)) fail_msg("no reply to %s", body);
    if (r.status != status) fail_msg("%s: status %d, expected %d (%s)", body, r.status, status, r.body);
    cJSON *root = cJSON_Parse(r.body);
    if (!root) fail_msg("%s: reply is not JSON: %s", body, r.body);
    cJSON *f = cJSON_GetObjectItem(root, "field"), *e = cJSON_GetObjectItem(root, "error");
    if (!cJSON_IsString(f) || strcmp(f->valuestring, field) != 0)
        fail_msg("%s: field %s, expected %s", body, r.body, field);
    assert_true(cJSON_IsString(e));
    if (message) assert_contains(e->valuestring, message);
    cJSON_Delete(root);
    reply_free(&r);
}

static void test_http_bad_requests(void **state)
{
    (void)state;
    server s;
    start_server(&s);
    const struct {
        const char *body, *field, *message;
    } cases[] = {
        {"", "body", "empty"},
        {"not json", "body", "not valid JSON"},
        {"{\"prompt\": \"ab\"", "body", "not valid JSON"},
        {"[1, 2]", "body", "JSON object"},
        {"{\"prompt\": \"ab\"} {}", "body", "more after"},
        {"{\"max_new_tokens\": 5}", "prompt", "required"},
        {"{\"prompt\": 5}", "prompt", "string"},
        {"{\"prompt\": null}", "prompt", "string"},
        {"{\"prompt\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", "prompt", "at most 50"},
        {"{\"prompt\": \"hello World\"}", "prompt", "U+0057 'W'"},
        {"{\"prompt\": \"ab\xff\"}", "prompt", "UTF-8"},
        {"{\"prompt\": \"ab\", \"max_new_tokens\": 0}", "max_new_tokens", "1 to 64"},
        {"{\"prompt\": \"ab\", \"max_new_tokens\": 65}", "max_new_tokens", "1 to 64"},
        {"{\"prompt\": \"ab\", \"max_new_tokens\": 2.5}", "max_new_tokens", "whole number"},
        {"{\"prompt\": \"ab\", \"max_new_tokens\": \"5\"}", "max_new_tokens", "number"},
        {"{\"prompt\": \"ab\", \"temperature\": -0.5}", "temperature", "0 (greedy) to 100"},
        {"{\"prompt\": \"ab\", \"temperature\": 101}", "temperature", "to 100"},
        {"{\"prompt\": \"ab\", \"temperature\": \"hot\"}", "temperature", "number"},
        {"{\"prompt\": \"ab\", \"top_k\": -1}", "top_k", "0 to 65535"},
        {"{\"prompt\": \"ab\", \"top_k\": 1.5}", "top_k", "whole number"},
        {"{\"prompt\": \"ab\", \"top_p\": 0}", "top_p", "above 0"},
        {"{\"prompt\": \"ab\", \"top_p\": 1.01}", "top_p", "at most 1"},
        {"{\"prompt\": \"ab\", \"seed\": -1}", "seed", "whole number"},
        {"{\"prompt\": \"ab\", \"seed\": 1e300}", "seed", "whole number"},
        {"{\"prompt\": \"ab\", \"variants\": \"baseline\"}", "variants", "array"},
        {"{\"prompt\": \"ab\", \"variants\": []}", "variants", "at least one"},
        {"{\"prompt\": \"ab\", \"variants\": [\"nope\"]}", "variants", "'nope'"},
        {"{\"prompt\": \"ab\", \"variants\": [\"other\", \"other\"]}", "variants", "twice"},
        {"{\"prompt\": \"ab\", \"variants\": [1]}", "variants", "array of names"},
        {"{\"prompt\": \"ab\", \"colour\": \"red\"}", "colour", "unknown key"},
        {"{\"prompt\": \"ab\", \"prompt\": \"cd\"}", "prompt", "twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error(s.port, cases[i].body, 400, cases[i].field, cases[i].message);

    /* oversized: announced by Content-Length (refused before the body is sent) */
    http_reply r;
    char raw[512];
    int n = snprintf(raw, sizeof raw,
                     "POST /api/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n",
                     MAX_BODY + 1);
    assert_int_equal(http_raw(s.port, raw, (size_t)n, &r), 0);
    assert_int_equal(r.status, 413);
    assert_contains(r.body, "\"field\":\"body\"");
    reply_free(&r);
    /* and a chunked body that grows past the limit (read, then refused) */
    size_t cap = 8192, len = 0;
    char *big = malloc(cap);
    len += (size_t)snprintf(big, cap,
                            "POST /api/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n");
    for (int chunk = 0; chunk < 3; chunk++) {
        len += (size_t)snprintf(big + len, cap - len, "200\r\n");
        memset(big + len, 'a', 0x200);
        len += 0x200;
        len += (size_t)snprintf(big + len, cap - len, "\r\n");
    }
    len += (size_t)snprintf(big + len, cap - len, "0\r\n\r\n");
    assert_int_equal(http_raw(s.port, big, len, &r), 0);
    assert_int_equal(r.status, 413);
    assert_contains(r.body, "larger than 1024 bytes");
    reply_free(&r);
    free(big);
    /* a body right at the limit is read and judged on its content */
    char exact[MAX_BODY + 1];
    int head = snprintf(exact, sizeof exact, "{\"prompt\": \"ab\", \"max_new_tokens\": 1}");
    memset(exact + head, ' ', (size_t)(MAX_BODY - head));
    exact[MAX_BODY] = '\0';
    assert_int_equal(http(s.port, "POST", "/api/generate", exact, &r), 0);
    assert_int_equal(r.status, 200);
    reply_free(&r);

    /* unknown routes and wrong methods */
    char allow[64];
    assert_int_equal(http(s.port, "GET", "/nope", NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_contains(r.body, "\"error\"");
    reply_free(&r);
    assert_int_equal(http(s.port, "POST", "/api/nothing", "{}", &r), 0);
    assert_int_equal(r.status, 404);
    reply_free(&r);
    assert_int_equal(http(s.port, "GET", "/api/generate", NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_true(header(&r, "Allow", allow, sizeof allow));
    assert_string_equal(allow, "POST");
    reply_free(&r);
    assert_int_equal(http(s.port, "POST", "/api/variants", "{}", &r), 0);
    assert_int_equal(r.status, 405);
    assert_true(header(&r, "Allow", allow, sizeof allow));
    assert_contains(allow, "GET");
    reply_free(&r);
    assert_int_equal(http(s.port, "DELETE", "/", NULL, &r), 0);
    assert_int_equal(r.status, 405);
    reply_free(&r);
    ngq_demo_free(s.demo);
}

/* ---- concurrency and shutdown ------------------------------------------------------------------ */

#define CLIENTS 6
#define REQUESTS_PER_CLIENT 3

typedef struct {
    int port, index;
    char *expected[REQUESTS_PER_CLIENT][3];
    int ok;
    char failure[256];
} client_job;

static void *client_main(void *arg)
{
    client_job *job = arg;
    job->ok = 1;
    for (int k = 0; k < REQUESTS_PER_CLIENT && job->ok; k++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"prompt\": \"the dog\", \"max_new_tokens\": 24, \"temperature\": 1.0, \"seed\": %d}",
                 job->index * 100 + k);
        http_reply r;
        if (http(job->port, "POST", "/api/generate", body, &r) || r.status != 200) {
            snprintf(job->failure, sizeof job->failure, "client %d request %d: status %d", job->index, k, r.status);
            job->ok = 0;
            reply_free(&r);
            break;
        }
        cJSON *root = cJSON_Parse(r.body);
        cJSON *results = root ? cJSON_GetObjectItem(root, "results") : NULL;
        for (int v = 0; v < 3 && job->ok; v++) {
            cJSON *text = cJSON_GetObjectItem(cJSON_GetArrayItem(results, v), "text");
            if (!cJSON_IsString(text) || strcmp(text->valuestring, job->expected[k][v]) != 0) {
                snprintf(job->failure, sizeof job->failure, "client %d request %d variant %d: wrong text", job->index,
                         k, v);
                job->ok = 0;
            }
        }
        cJSON_Delete(root);
        reply_free(&r);
    }
    return NULL;
}

static void test_http_concurrent_clients(void **state)
{
    (void)state;
    server s;
    start_server(&s);
    const char *paths[3] = {baseline_path, q8_path, other_path};
    client_job jobs[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) {
        jobs[c].port = s.port;
        jobs[c].index = c;
        for (int k = 0; k < REQUESTS_PER_CLIENT; k++)
            for (int v = 0; v < 3; v++)
                jobs[c].expected[k][v] = expected_text(paths[v], "the dog", 24, 1.0f, 0, 1.0f, (uint64_t)(c * 100 + k));
    }
    double t0 = ngq_now_seconds();
    pthread_t threads[CLIENTS];
    for (int c = 0; c < CLIENTS; c++) assert_int_equal(pthread_create(&threads[c], NULL, client_main, &jobs[c]), 0);
    for (int c = 0; c < CLIENTS; c++) pthread_join(threads[c], NULL);
    double seconds = ngq_now_seconds() - t0;
    for (int c = 0; c < CLIENTS; c++) {
        if (!jobs[c].ok) fail_msg("%s", jobs[c].failure);
        for (int k = 0; k < REQUESTS_PER_CLIENT; k++)
            for (int v = 0; v < 3; v++) free(jobs[c].expected[k][v]);
    }
    if (seconds > 8.0) fail_msg("%d concurrent requests took %.1f s", CLIENTS * REQUESTS_PER_CLIENT, seconds);

    /* stop: the port is closed, and stopping twice is harmless */
    int port = s.port;
    ngq_demo_stop(s.demo);
    assert_int_equal(ngq_demo_port(s.demo), 0);
    int fd = connect_loopback(port);
    if (fd >= 0) {
        close(fd);
        fail_msg("port %d still accepts connections after stop", port);
    }
    ngq_demo_stop(s.demo);
    ngq_demo_free(s.demo);

    /* a port in use is an error, not a crash */
    server a;
    start_server(&a);
    ngq_demo *b = NULL;
    ngq_error err = {0};
    ngq_demo_variant_spec one = {.name = "x"};
    snprintf(one.path, sizeof one.path, "%s", baseline_path);
    assert_int_equal(ngq_demo_init(&b, &cfg, &one, 1, &err), NGQ_OK);
    assert_int_equal(ngq_demo_start(b, "127.0.0.1", a.port, &err), NGQ_ERR_IO);
    assert_contains(err.message, "cannot listen");
    assert_int_equal(ngq_demo_start(b, "no-such-host.invalid", 0, &err), NGQ_ERR_IO);
    ngq_demo_free(b);
    ngq_demo_free(a.demo);
}

typedef struct {
    char *text;
    size_t len;
} text_buffer;

static int append(int token, const char *utf8, void *user)
{
    (void)token;
    text_buffer *b = user;
    size_t n = strlen(utf8);
    b->text = realloc(b->text, b->len + n + 1);
    memcpy(b->text + b->len, utf8, n + 1);
    b->len += n;
    return 0;
}

static char *expected_text(const char *path, const char *prompt, int max_new, float temperature, int top_k, float top_p,
                           uint64_t seed)
{
    ngq_infer *m;
    ngq_error err = {0};
    if (ngq_infer_load(&m, path, &err)) fail_msg("%s", err.message);
    ngq_sampler_config sc = {.temperature = temperature, .top_k = top_k, .top_p = top_p};
    text_buffer b = {.text = calloc(1, 1)};
    if (ngq_sample_generate(m, prompt, max_new, &sc, seed, append, &b, NULL, &err)) fail_msg("%s", err.message);
    ngq_infer_free(m);
    return b.text;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_variants),
        cmocka_unit_test(test_init_errors),
        cmocka_unit_test(test_http_pages_and_variants),
        cmocka_unit_test(test_http_generate),
        cmocka_unit_test(test_http_bad_requests),
        cmocka_unit_test(test_http_concurrent_clients),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
