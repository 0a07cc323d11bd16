/* sample.c: sampling filters (temperature, top-k, top-p), prompt encoding and
 * the KV-cached generation loop. The rules are in sample.h; the forward pass
 * is infer.c's. Nothing here prints. */
#include "nanogptq/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Top-p compares the cumulative mass with p within this tolerance, so a set
 * whose mass is p up to rounding is enough. */
#define TOP_P_TOLERANCE 1e-6

ngq_status ngq_sampler_config_validate(const ngq_sampler_config *cfg, ngq_error *err)
{
    if (!(cfg->temperature >= 0.0f && cfg->temperature <= 100.0f))
        return ngq_fail(err, NGQ_ERR_USAGE, "temperature must be in [0, 100] (0 = greedy), got %g",
                        (double)cfg->temperature);
    if (cfg->top_k < 0) return ngq_fail(err, NGQ_ERR_USAGE, "top_k must be >= 0 (0 = all), got %d", cfg->top_k);
    if (!(cfg->top_p > 0.0f && cfg->top_p <= 1.0f))
        return ngq_fail(err, NGQ_ERR_USAGE, "top_p must be in (0, 1] (1 = all), got %g", (double)cfg->top_p);
    return NGQ_OK;
}

/* Most likely first; the lower id first on equal probability. */
static int by_probability(const void *a, const void *b)
{
    const ngq_sample_candidate *x = a, *y = b;
    if (x->probability > y->probability) return -1;
    if (x->probability < y->probability) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

int ngq_sample_filter(const float *logits, int V, const ngq_sampler_config *cfg, ngq_sample_candidate *out)
{
    if (V < 1) return 0;
    int argmax = -1;
    for (int i = 0; i < V; i++) {
        float l = logits[i];
        if (isnan(l) || l == INFINITY) return 0;
        if (l == -INFINITY) continue;
        if (argmax < 0 || l > logits[argmax]) argmax = i;
    }
    if (argmax < 0) return 0;
    if (cfg->temperature == 0.0f) {
        out[0].probability = 1.0f;
        out[0].id = argmax;
        return 1;
    }

    /* softmax(l / T), in double; ids of probability 0 are dropped */
    const double max = logits[argmax], inv_t = 1.0 / (double)cfg->temperature;
    double sum = 0.0;
    int n = 0;
    for (int i = 0; i < V; i++) {
        double e = exp(((double)logits[i] - max) * inv_t);
        if (!(e > 0.0)) continue;
        out[n].probability = (float)e;
        out[n].id = i;
        sum += e;
        n++;
    }
    int filtered = 0;
    if (cfg->top_k > 0 && cfg->top_k < n) {
        qsort(out, (size_t)n, sizeof *out, by_probability);
        filtered = 1;
        n = cfg->top_k;
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += out[i].probability;
    }
    if (cfg->top_p < 1.0f) {
        if (!filtered) qsort(out, (size_t)n, sizeof *out, by_probability);
        double cumulative = 0.0, target = (double)cfg->top_p * sum;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cumulative += out[i].probability;
            if (cumulative + TOP_P_TOLERANCE * sum >= target) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
        sum = 0.0;
        for (int i = 0; i < n; i++) sum += out[i].probability;
    }
    for (int i = 0; i < n; i++) out[i].probability = (float)(out[i].probability / sum);
    return n;
}

int ngq_sample_next(const float *logits, int V, const ngq_sampler_config *cfg, ngq_rng *rng,
                    ngq_sample_candidate *scratch)
{
    int n = ngq_sample_filter(logits, V, cfg, scratch);
    if (n == 0) return -1;
    if (n == 1) {
        /* greedy, or one id left: a sampled step still draws, so the stream
         * does not depend on how many ids a filter happened to keep */
        if (cfg->temperature != 0.0f) (void)ngq_rng_uniform(rng);
        return scratch[0].id;
    }
    double u = ngq_rng_uniform(rng), cumulative = 0.0;
    for (int i = 0; i < n; i++) {
        cumulative += scratch[i].probability;
        if (cumulative > u) return scratch[i].id;
    }
    return scratch[n - 1].id; /* u above the rounded total mass */
}

/* ---- prompts ---------------------------------------------------------------------- */

void ngq_sample_prompt_free(ngq_sample_prompt *prompt)
{
    free(prompt->tokens);
    memset(prompt, 0, sizeof *prompt);
}

/* "U+00E9 'é'" (control and invisible characters without the quote). */
static void describe_codepoint(uint32_t cp, char *buf, size_t size)
{
    char utf8[5] = {0};
    int printable = cp >= 0x20 && cp != 0x7f && !(cp >= 0x80 && cp < 0xa0) && cp != 0x2028 && cp != 0x2029;
    if (printable) utf8[ngq_utf8_encode(cp, utf8)] = '\0';
    if (printable)
        snprintf(buf, size, "U+%04X '%s'", (unsigned)cp, utf8);
    else
        snprintf(buf, size, "U+%04X (control)", (unsigned)cp);
}

ngq_status ngq_sample_encode_prompt(const ngq_vocab *vocab, int block_size, const char *text, size_t size,
                                    ngq_sample_prompt *prompt, ngq_error *err)
{
    memset(prompt, 0, sizeof *prompt);
    if (block_size < 1) return ngq_fail(err, NGQ_ERR_INTERNAL, "block_size %d", block_size);
    const unsigned char *s = (const unsigned char *)text;

    /* pass 1: valid UTF-8, every character known; count them */
    uint32_t unknown[NGQ_SAMPLE_MAX_LISTED_CHARS];
    int unknown_listed = 0;
    size_t unknown_total = 0, chars = 0;
    for (size_t at = 0; at < size;) {
        uint32_t cp;
        size_t used = ngq_utf8_decode(s + at, size - at, &cp);
        if (used == 0) return ngq_fail(err, NGQ_ERR_USAGE, "the prompt is not valid UTF-8 (at byte %zu)", at);
        if (ngq_vocab_id(vocab, cp) == vocab->unknown_id) {
            int seen = 0;
            for (int i = 0; i < unknown_listed; i++) seen |= unknown[i] == cp;
            if (!seen && unknown_listed < NGQ_SAMPLE_MAX_LISTED_CHARS) unknown[unknown_listed++] = cp;
            unknown_total++;
        }
        chars++;
        at += used;
    }
    if (unknown_total > 0) {
        char list[NGQ_ERROR_MESSAGE_MAX / 2] = "";
        size_t len = 0;
        for (int i = 0; i < unknown_listed && len < sizeof list; i++) {
            char one[48];
            describe_codepoint(unknown[i], one, sizeof one);
            int w = snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", one);
            if (w < 0) break;
            len += (size_t)w;
        }
        return ngq_fail(err, NGQ_ERR_USAGE,
                        "the prompt has %zu character%s outside the model's vocabulary: %s%s", unknown_total,
                        unknown_total == 1 ? "" : "s", list,
                        unknown_listed == NGQ_SAMPLE_MAX_LISTED_CHARS ? ", ..." : "");
    }
    prompt->chars = chars;

    if (chars == 0) {
        int newline = ngq_vocab_id(vocab, '\n');
        if (newline == vocab->unknown_id)
            return ngq_fail(err, NGQ_ERR_USAGE,
                            "the prompt is empty and the vocabulary has no newline character to start from");
        prompt->tokens = malloc(sizeof *prompt->tokens);
        if (!prompt->tokens) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        prompt->tokens[0] = (uint16_t)newline;
        prompt->count = 1;
        prompt->from_newline = 1;
        return NGQ_OK;
    }

    /* pass 2: encode the last block_size characters */
    size_t skip = chars > (size_t)block_size ? chars - (size_t)block_size : 0;
    size_t keep = chars - skip;
    prompt->tokens = malloc(keep * sizeof *prompt->tokens);
    if (!prompt->tokens) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    prompt->truncated = skip > 0;
    size_t index = 0, at = 0;
    while (at < size) {
        uint32_t cp;
        size_t used = ngq_utf8_decode(s + at, size - at, &cp);
        if (index == skip) prompt->kept_offset = at;
        if (index >= skip) prompt->tokens[index - skip] = (uint16_t)ngq_vocab_id(vocab, cp);
        index++;
        at += used;
    }
    prompt->count = (int)keep;
    return NGQ_OK;
}

/* ---- generation ------------------------------------------------------------------- */

ngq_status ngq_sample_generate(const ngq_infer *model, const char *prompt, int max_new, const ngq_sampler_config *cfg,
                               uint64_t seed, ngq_sample_callback callback, void *user, ngq_sample_stats *stats,
                               ngq_error *err)
{
    ngq_sample_stats local;
    if (!stats) stats = &local;
    memset(stats, 0, sizeof *stats);
    if (max_new < 1) return ngq_fail(err, NGQ_ERR_USAGE, "max_new_tokens must be >= 1, got %d", max_new);
    ngq_status st = ngq_sampler_config_validate(cfg, err);
    if (st) return st;

    const ngq_model_config *mc = ngq_infer_config(model);
    const ngq_vocab *vocab = ngq_infer_vocab(model);
    const int V = mc->vocab_size;
    double t0 = ngq_now_seconds();
    ngq_sample_prompt p;
    if ((st = ngq_sample_encode_prompt(vocab, mc->block_size, prompt, strlen(prompt), &p, err))) return st;
    stats->prompt_tokens = p.count;
    stats->prompt_chars = p.chars;
    stats->prompt_truncated = p.truncated;
    stats->from_newline = p.from_newline;

    ngq_infer_session *session = NULL;
    ngq_sample_candidate *scratch = malloc((size_t)V * sizeof *scratch);
    if (!scratch) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = ngq_infer_session_init(&session, model, err))) goto done;
    const float *logits;
    if ((st = ngq_infer_session_feed(session, p.tokens, p.count, &logits, err))) goto done;
    double t1 = ngq_now_seconds();
    stats->prompt_seconds = t1 - t0;

    ngq_rng rng;
    ngq_rng_seed(&rng, seed, NGQ_SAMPLE_RNG_STREAM);
    for (int i = 0; i < max_new; i++) {
        int id = ngq_sample_next(logits, V, cfg, &rng, scratch);
        if (id < 0) {
            st = ngq_fail(err, NGQ_ERR_NUMERIC, "the logits of generated token %d hold a NaN or infinity", i + 1);
            goto done;
        }
        char utf8[5];
        utf8[ngq_utf8_encode(ngq_vocab_codepoint(vocab, id), utf8)] = '\0';
        stats->generated_tokens++;
        if (callback && callback(id, utf8, user)) {
            stats->stopped = stats->generated_tokens < max_new;
            break;
        }
        if (i + 1 == max_new) break;
        uint16_t token = (uint16_t)id;
        if ((st = ngq_infer_session_feed(session, &token, 1, &logits, err))) goto done;
    }
    stats->generate_seconds = ngq_now_seconds() - t1;
    stats->tokens_per_second =
        stats->generate_seconds > 0 ? stats->generated_tokens / stats->generate_seconds : 0.0;
done:
    ngq_infer_session_free(session);
    free(scratch);
    ngq_sample_prompt_free(&p);
    return st;
}
