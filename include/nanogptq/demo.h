/* demo.h: the local web demo. One page (embedded in the library at build
 * time: no files and no internet at run time) where a prompt is continued by
 * several checkpoints side by side, the baseline and its quantized variants,
 * each shown with its perplexity (from run_dir/results/eval.csv when that
 * exists), size on disk, bits per weight and generation speed.
 *
 * HTTP API (JSON bodies, UTF-8):
 *   GET  /                the page (also /index.html, /app.js, /style.css)
 *   GET  /api/variants    {"variants": [{name, label, method, bits, file,
 *                          file_bytes, bits_per_weight, model_bits_per_weight,
 *                          block_size, perplexity (null when unknown)}...],
 *                          "limits": {...}, "defaults": {...}, "perplexity_source"}
 *   POST /api/generate    {"prompt": str, "max_new_tokens": int, "temperature":
 *                          num, "top_k": int, "top_p": num, "seed": int,
 *                          "variants": [name...]}; only prompt is required,
 *                          the rest default to [sample] / [run] seed (length:
 *                          the smaller of [sample] and [demo] max_new_tokens),
 *                          variants to all of them. Returns {"prompt",
 *                          "settings", "results": [{name, label, text,
 *                          generated_tokens, tokens_per_second, seconds,
 *                          prompt_tokens, prompt_truncated, ...}...]}; every
 *                          variant draws with the same seed.
 * Errors are JSON {"error": message, "field": name-or-null}: bad input 400
 * (the field is the offending key, or "body" when the body is not a JSON
 * object), a body above [demo] max_body_bytes 413 (field "body"), an unknown
 * path 404, a known path with another method 405 (with an Allow header),
 * a request cut short by shutdown 503, a failed generation 500.
 * Limits: prompt <= [demo] max_prompt_chars characters, 1 <= max_new_tokens <=
 * [demo] max_new_tokens, body <= [demo] max_body_bytes; unknown keys are
 * rejected (a misspelt key is an error, not a silent default).
 *
 * Threads: models are loaded once and only read afterwards; every request
 * generates with sessions of its own (sample.h), one connection per thread
 * (libmicrohttpd, at most NGQ_DEMO_MAX_CONNECTIONS at once).
 * What it does not do: print, handle signals (the demo tool does), TLS. */
#ifndef NANOGPTQ_DEMO_H
#define NANOGPTQ_DEMO_H

#include <stddef.h>

#include "nanogptq/common.h"
#include "nanogptq/config.h"
#include "nanogptq/infer.h"

#define NGQ_DEMO_NAME_MAX 64
#define NGQ_DEMO_MAX_VARIANTS 64
#define NGQ_DEMO_MAX_CONNECTIONS 32
#define NGQ_DEMO_CONNECTION_TIMEOUT_SECONDS 60

/* ---- which checkpoints ------------------------------------------------------ */

typedef struct {
    char name[NGQ_DEMO_NAME_MAX];     /* shown on the page and used in requests */
    char path[NGQ_CONFIG_STRING_MAX]; /* checkpoint file */
} ngq_demo_variant_spec;

typedef struct {
    ngq_demo_variant_spec *items;
    int count;
    char **missing;    /* study variants without a checkpoint file (their paths) */
    int missing_count;
} ngq_demo_variant_list;

/* [demo] variants as "name=path" items (names unique, made of letters,
 * digits and "-_.+"; at most NGQ_DEMO_MAX_VARIANTS); or, when empty,
 * "baseline" = run_dir/checkpoints/best.safetensors followed by every
 * [quantize] variants entry whose checkpoint run_dir/checkpoints/<label>.safetensors
 * exists, named by its label (the others are listed in missing). The
 * files are not opened here. Errors are NGQ_ERR_CONFIG. */
ngq_status ngq_demo_list_variants(const ngq_config *cfg, ngq_demo_variant_list *list, ngq_error *err);
void ngq_demo_variant_list_free(ngq_demo_variant_list *list);

/* ---- the demo ------------------------------------------------------------------ */

typedef struct ngq_demo ngq_demo;

typedef struct {
    const char *name;
    const char *path;
    const ngq_infer *model;
    const ngq_infer_info *info;
    double perplexity; /* from eval.csv; NaN when not known */
} ngq_demo_variant;

/* Loads every checkpoint (1 <= count <= NGQ_DEMO_MAX_VARIANTS; all must share
 * the first one's vocabulary) and reads the perplexities from
 * run_dir/results/eval.csv when it exists (a missing or unreadable file only
 * leaves them unknown: see ngq_demo_perplexity_source). cfg is copied. */
ngq_status ngq_demo_init(ngq_demo **out, const ngq_config *cfg, const ngq_demo_variant_spec *variants, int count,
                         ngq_error *err);
/* Stops the server if it runs, then frees everything. NULL is fine. */
void ngq_demo_free(ngq_demo *d);

int ngq_demo_variant_count(const ngq_demo *d);
const ngq_demo_variant *ngq_demo_get_variant(const ngq_demo *d, int index);
/* Where the perplexities came from, or why there are none (one line). */
const char *ngq_demo_perplexity_source(const ngq_demo *d);

/* ---- requests, without HTTP ---------------------------------------------------- */

typedef struct {
    int status;               /* HTTP status */
    const char *content_type;
    const char *allow;        /* the Allow header for 405, else NULL */
    char *body;               /* malloc'd unless is_static */
    size_t size;
    int is_static;            /* body points at embedded data */
} ngq_demo_response;

/* Answers one request: method ("GET", "POST", ...), path (without the query
 * string) and body. Safe to call from many threads at once. */
void ngq_demo_handle(ngq_demo *d, const char *method, const char *path, const char *body, size_t body_size,
                     ngq_demo_response *response);
void ngq_demo_response_free(ngq_demo_response *response);

/* ---- the server ------------------------------------------------------------------ */

/* Starts serving on host (a name or numeric IPv4/IPv6 address) and port
 * (0 = an ephemeral port; see ngq_demo_port). NGQ_ERR_IO when the address
 * cannot be resolved or bound. */
ngq_status ngq_demo_start(ngq_demo *d, const char *host, int port, ngq_error *err);
/* The port the server listens on, 0 when not running. */
int ngq_demo_port(const ngq_demo *d);
/* Asks running generations to stop, closes the listening socket and every
 * connection, and waits for their threads. Idempotent. */
void ngq_demo_stop(ngq_demo *d);

#endif
