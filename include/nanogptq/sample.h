/* sample.h: text generation from any loaded checkpoint (infer.h): the
 * sampling filters (temperature, top-k, top-p) and the generation loop that
 * encodes a prompt, feeds it through a KV-cached session and draws one
 * character at a time, handing each to a callback as it comes.
 *
 * Sampling of one token, given logits l (V) and a ngq_sampler_config:
 *   temperature == 0: greedy, the argmax of l (the lowest id on ties); no
 *     random number is drawn.
 *   otherwise: p = softmax(l / temperature) (in double, max subtracted; ids
 *     whose probability underflows to 0 are dropped), then
 *     top-k (k > 0 and k < V): keep the k most likely ids;
 *     top-p (p < 1): keep the smallest set of most likely ids (of those top-k
 *       kept, their probabilities renormalised) whose mass reaches p (within
 *       1e-6, so rounding does not add an id);
 *     renormalise what is kept and draw with one ngq_rng_uniform (always
 *     exactly one per sampled token, even when one id is left): the first
 *     kept id, in order of decreasing probability, whose cumulative mass
 *     exceeds the uniform number. Order "most likely" is by probability, the
 *     lower id first on ties, so top-k keeps exactly k ids. With no filter
 *     active the draw walks the ids in increasing order instead (no sort).
 * The same logits, configuration and RNG state always give the same id.
 *
 * Prompts: UTF-8 text, every character must be in the vocabulary (the
 * vocabulary's unknown id is not a character); an error lists those that are
 * not. A prompt longer than block_size keeps its last block_size characters;
 * an empty prompt starts from "\n" when the vocabulary has it.
 *
 * What it does not do: the forward pass (infer.h), printing, timing beyond
 * the generation it runs. */
#ifndef NANOGPTQ_SAMPLE_H
#define NANOGPTQ_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"
#include "nanogptq/infer.h"
#include "nanogptq/rng.h"
#include "nanogptq/vocab.h"

/* The RNG stream of sampling: ngq_rng_seed(&rng, seed, NGQ_SAMPLE_RNG_STREAM). */
#define NGQ_SAMPLE_RNG_STREAM 0x5a3b1e00u

/* Out-of-vocabulary characters named in a prompt error, at most. */
#define NGQ_SAMPLE_MAX_LISTED_CHARS 16

typedef struct {
    float temperature; /* 0 = greedy; else > 0 and finite              */
    int top_k;         /* 0 = all; else keep the k most likely ids      */
    float top_p;       /* in (0, 1]; 1 = all                            */
} ngq_sampler_config;

/* temperature 0 .. 100, top_k >= 0, 0 < top_p <= 1 (the config schema's
 * ranges); NGQ_ERR_USAGE naming the field otherwise. */
ngq_status ngq_sampler_config_validate(const ngq_sampler_config *cfg, ngq_error *err);

/* One kept id and its probability. */
typedef struct {
    float probability;
    int id;
} ngq_sample_candidate;

/* Temperature, top-k and top-p on logits (V) -> the kept ids in out (at least
 * V entries), most likely first, probabilities renormalised to sum to 1.
 * Returns how many were kept (>= 1), or 0 when the logits hold a NaN or +inf
 * or no finite value. Greedy (temperature 0) keeps the one argmax id with
 * probability 1. Without an active filter the ids stay in increasing order. */
int ngq_sample_filter(const float *logits, int V, const ngq_sampler_config *cfg, ngq_sample_candidate *out);

/* Draws the next token id from logits (V); scratch holds at least V
 * candidates. Returns -1 when ngq_sample_filter finds no candidate. */
int ngq_sample_next(const float *logits, int V, const ngq_sampler_config *cfg, ngq_rng *rng,
                    ngq_sample_candidate *scratch);

/* ---- prompts ---------------------------------------------------------------- */

typedef struct {
    uint16_t *tokens;  /* malloc'd, count entries                              */
    int count;         /* tokens to feed (>= 1)                                 */
    size_t chars;      /* characters of the prompt as given                     */
    int truncated;     /* the prompt was longer than block_size                 */
    size_t kept_offset;/* byte offset in the text where the kept part begins    */
    int from_newline;  /* the prompt was empty: the tokens are one "\n"         */
} ngq_sample_prompt;

/* Encodes prompt text (size bytes) for a model with this vocabulary and
 * block_size. Invalid UTF-8, characters outside the vocabulary (listed as
 * "U+XXXX 'c'", up to NGQ_SAMPLE_MAX_LISTED_CHARS distinct ones), or an empty
 * prompt without "\n" in the vocabulary: NGQ_ERR_USAGE. */
ngq_status ngq_sample_encode_prompt(const ngq_vocab *vocab, int block_size, const char *text, size_t size,
                                    ngq_sample_prompt *prompt, ngq_error *err);
void ngq_sample_prompt_free(ngq_sample_prompt *prompt);

/* ---- generation --------------------------------------------------------------- */

/* Called with every generated token as soon as it is drawn: its id and its
 * character as a NUL-terminated UTF-8 string (the unknown id gives U+FFFD).
 * Return nonzero to stop the generation after this token. */
typedef int (*ngq_sample_callback)(int token, const char *utf8, void *user);

typedef struct {
    int prompt_tokens;        /* tokens fed before the first draw               */
    size_t prompt_chars;      /* characters of the prompt as given              */
    int prompt_truncated;     /* the prompt lost its first characters           */
    int from_newline;         /* the prompt was empty and "\n" was fed          */
    int generated_tokens;     /* tokens drawn (< max_new when stopped)          */
    int stopped;              /* the callback asked to stop                     */
    double prompt_seconds;    /* encoding and feeding the prompt                */
    double generate_seconds;  /* from the first draw to the last token          */
    double tokens_per_second; /* generated_tokens / generate_seconds            */
} ngq_sample_stats;

/* Generates up to max_new (>= 1) tokens after prompt (NUL-terminated UTF-8)
 * with a session of its own, so any number of threads may generate from one
 * shared model at once. The RNG is seeded with (seed, NGQ_SAMPLE_RNG_STREAM):
 * the same model, prompt, configuration and seed give the same tokens.
 * callback and stats may be NULL. Prompt errors are NGQ_ERR_USAGE (see
 * ngq_sample_encode_prompt); NaN logits are NGQ_ERR_NUMERIC. */
ngq_status ngq_sample_generate(const ngq_infer *model, const char *prompt, int max_new, const ngq_sampler_config *cfg,
                               uint64_t seed, ngq_sample_callback callback, void *user, ngq_sample_stats *stats,
                               ngq_error *err);

#endif
