/* preprocess.c: corpus -> stories -> splits -> vocabulary -> token files.
 * Reads every input whole (the corpora this toolkit targets are megabytes). */
#include "nanogptq/preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/rng.h"
#include "nanogptq/tokens.h"

#define CODEPOINT_LIMIT 0x110000u

const char *ngq_split_name(int split)
{
    static const char *const names[NGQ_SPLIT_COUNT] = {"train", "val", "test"};
    return split >= 0 && split < NGQ_SPLIT_COUNT ? names[split] : "?";
}

ngq_status ngq_find_stories(const char *text, size_t size, const char *delimiter, int input, ngq_story **stories,
                            size_t *count, ngq_error *err)
{
    size_t cap = 64, n = 0, dlen = strlen(delimiter);
    ngq_story *out = malloc(cap * sizeof *out);
    if (!out) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    size_t story_begin = 0, line_begin = 0;
    while (line_begin < size) {
        const char *nl = memchr(text + line_begin, '\n', size - line_begin);
        size_t line_end = nl ? (size_t)(nl - text) : size;       /* excludes '\n' */
        size_t next = nl ? line_end + 1 : size;
        size_t len = line_end - line_begin;
        if (len > 0 && text[line_end - 1] == '\r') len--; /* a CRLF line still matches */
        if (len == dlen && memcmp(text + line_begin, delimiter, dlen) == 0) {
            if (n == cap) {
                cap *= 2;
                ngq_story *grown = realloc(out, cap * sizeof *out);
                if (!grown) {
                    free(out);
                    return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
                }
                out = grown;
            }
            out[n++] = (ngq_story){input, story_begin, next};
            story_begin = next;
        }
        line_begin = next;
    }
    if (story_begin < size) { /* trailing text without a delimiter: a last story */
        if (n == cap) {
            ngq_story *grown = realloc(out, (cap + 1) * sizeof *out);
            if (!grown) {
                free(out);
                return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
            }
            out = grown;
        }
        out[n++] = (ngq_story){input, story_begin, size};
    }
    *stories = out;
    *count = n;
    return NGQ_OK;
}

void ngq_assign_splits(size_t story_count, const char *mode, double val_fraction, double test_fraction,
                       uint64_t seed, unsigned char *out)
{
    size_t n_val = (size_t)llround(val_fraction * (double)story_count);
    size_t n_test = (size_t)llround(test_fraction * (double)story_count);
    if (n_val + n_test > story_count) n_test = story_count > n_val ? story_count - n_val : 0;
    if (n_val > story_count) n_val = story_count;
    size_t n_train = story_count - n_val - n_test;
    if (strcmp(mode, "shuffled") != 0) {
        for (size_t i = 0; i < story_count; i++)
            out[i] = i < n_train ? NGQ_SPLIT_TRAIN : i < n_train + n_val ? NGQ_SPLIT_VAL : NGQ_SPLIT_TEST;
        return;
    }
    size_t *order = malloc(story_count * sizeof *order);
    if (!order) { /* degrade to the contiguous split rather than fail silently: callers check */
        for (size_t i = 0; i < story_count; i++) out[i] = 255;
        return;
    }
    for (size_t i = 0; i < story_count; i++) order[i] = i;
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 0x5eed5917u);
    for (size_t i = story_count; i > 1; i--) {
        size_t j = ngq_rng_below(&rng, (uint32_t)i);
        size_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    for (size_t k = 0; k < story_count; k++)
        out[order[k]] = k < n_val ? NGQ_SPLIT_VAL : k < n_val + n_test ? NGQ_SPLIT_TEST : NGQ_SPLIT_TRAIN;
    free(order);
}

/* Counts code points of text into hist (may be NULL); returns the count. Text is valid UTF-8. */
static size_t count_codepoints(const char *text, size_t size, uint64_t *hist)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0, n = 0;
    while (i < size) {
        uint32_t cp = s[i];
        size_t len = cp < 0x80 ? 1 : ngq_utf8_decode(s + i, size - i, &cp);
        if (hist) hist[cp]++;
        i += len ? len : 1;
        n++;
    }
    return n;
}

static void note_unknowns(const ngq_vocab *vocab, const char *text, size_t size, ngq_split_stats *st)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < size && st->unknown_example_count < 8) {
        uint32_t cp = s[i];
        size_t len = cp < 0x80 ? 1 : ngq_utf8_decode(s + i, size - i, &cp);
        if (ngq_vocab_id(vocab, cp) == vocab->unknown_id) {
            int seen = 0;
            for (int k = 0; k < st->unknown_example_count; k++) seen |= st->unknown_examples[k] == cp;
            if (!seen) st->unknown_examples[st->unknown_example_count++] = cp;
        }
        i += len ? len : 1;
    }
}

typedef struct {
    char **names;
    int count;
    char **texts;
    size_t *sizes;
    ngq_story *stories;
    size_t story_count;
    unsigned char *split_of;
} corpus;

static void corpus_free(corpus *c)
{
    for (int i = 0; i < c->count; i++) free(c->texts ? c->texts[i] : NULL);
    free(c->texts);
    free(c->sizes);
    ngq_config_list_free(c->names, c->count);
    free(c->stories);
    free(c->split_of);
    memset(c, 0, sizeof *c);
}

static ngq_status corpus_load(corpus *c, const ngq_config *cfg, ngq_error *err)
{
    memset(c, 0, sizeof *c);
    ngq_status st = ngq_config_split_list(cfg->data.inputs, &c->names, &c->count, err);
    if (st) return st;
    if (c->count == 0) return ngq_fail(err, NGQ_ERR_CONFIG, "[data] inputs is empty: name at least one text file");
    c->texts = calloc((size_t)c->count, sizeof *c->texts);
    c->sizes = calloc((size_t)c->count, sizeof *c->sizes);
    if (!c->texts || !c->sizes) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->count; i++) {
        if ((st = ngq_read_file(c->names[i], &c->texts[i], &c->sizes[i], err))) return st;
        if ((st = ngq_utf8_validate(c->texts[i], c->sizes[i], c->names[i], err))) return st;
        ngq_story *stories;
        size_t n;
        if ((st = ngq_find_stories(c->texts[i], c->sizes[i], cfg->data.delimiter, i, &stories, &n, err))) return st;
        ngq_story *grown = realloc(c->stories, (c->story_count + n + 1) * sizeof *grown);
        if (!grown) {
            free(stories);
            return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        }
        c->stories = grown;
        memcpy(c->stories + c->story_count, stories, n * sizeof *stories);
        c->story_count += n;
        free(stories);
    }
    if (c->story_count == 0) return ngq_fail(err, NGQ_ERR_FORMAT, "[data] inputs hold no text");
    c->split_of = malloc(c->story_count);
    if (!c->split_of) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    ngq_assign_splits(c->story_count, cfg->data.split, cfg->data.val_fraction, cfg->data.test_fraction,
                      (uint64_t)cfg->run.seed, c->split_of);
    if (c->split_of[0] == 255) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    return NGQ_OK;
}

ngq_status ngq_preprocess_run(const ngq_config *cfg, ngq_preprocess_stats *stats, ngq_error *err)
{
    double t0 = ngq_now_seconds();
    memset(stats, 0, sizeof *stats);
    corpus c;
    ngq_vocab vocab = {0};
    uint64_t *hist = NULL;
    uint16_t *tokens[NGQ_SPLIT_COUNT] = {NULL, NULL, NULL};
    char *path = NULL;
    ngq_status st = corpus_load(&c, cfg, err);
    if (st) goto done;

    hist = calloc(CODEPOINT_LIMIT, sizeof *hist);
    if (!hist) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t s = 0; s < c.story_count; s++) {
        const ngq_story *story = &c.stories[s];
        int split = c.split_of[s];
        ngq_split_stats *ss = &stats->split[split];
        size_t len = story->end - story->begin;
        ss->stories++;
        ss->bytes += len;
        ss->chars += count_codepoints(c.texts[story->input] + story->begin, len, split == NGQ_SPLIT_TRAIN ? hist : NULL);
        stats->input_bytes += len;
    }
    if (stats->split[NGQ_SPLIT_TRAIN].chars == 0) {
        st = ngq_fail(err, NGQ_ERR_FORMAT, "the train split is empty: %zu stories in all, val_fraction %g, test_fraction %g",
                      c.story_count, cfg->data.val_fraction, cfg->data.test_fraction);
        goto done;
    }
    if ((st = ngq_vocab_from_counts(&vocab, hist, CODEPOINT_LIMIT, err))) goto done;
    stats->vocab_size = vocab.size;

    for (int split = 0; split < NGQ_SPLIT_COUNT; split++) {
        tokens[split] = malloc((stats->split[split].chars + 1) * sizeof(uint16_t));
        if (!tokens[split]) {
            st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
            goto done;
        }
    }
    for (size_t s = 0; s < c.story_count; s++) {
        const ngq_story *story = &c.stories[s];
        ngq_split_stats *ss = &stats->split[c.split_of[s]];
        const char *text = c.texts[story->input] + story->begin;
        size_t len = story->end - story->begin, n = 0, unknown = 0;
        if ((st = ngq_vocab_encode(&vocab, text, len, tokens[c.split_of[s]] + ss->tokens, &n, &unknown,
                                   c.names[story->input], err)))
            goto done;
        ss->tokens += n;
        ss->unknown += unknown;
        if (unknown) note_unknowns(&vocab, text, len, ss);
    }

    if ((st = ngq_make_dirs(cfg->paths.run_dir, err))) goto done;
    path = ngq_config_data_path(cfg, "");
    if ((st = ngq_make_dirs(path, err))) goto done;
    free(path);
    path = ngq_config_data_path(cfg, "vocab.txt");
    if ((st = ngq_vocab_write(&vocab, path, err))) goto done;
    for (int split = 0; split < NGQ_SPLIT_COUNT; split++) {
        free(path);
        path = ngq_strdup_printf("%s/data/%s.tok", cfg->paths.run_dir, ngq_split_name(split));
        if ((st = ngq_tokens_write(path, tokens[split], stats->split[split].tokens, vocab.size, vocab.hash, err)))
            goto done;
    }
    stats->seconds = ngq_now_seconds() - t0;
done:
    free(path);
    for (int split = 0; split < NGQ_SPLIT_COUNT; split++) free(tokens[split]);
    free(hist);
    ngq_vocab_free(&vocab);
    corpus_free(&c);
    return st;
}

ngq_status ngq_preprocess_encode(const char *vocab_path, const char *text_path, const char *out_path,
                                 ngq_split_stats *stats, ngq_error *err)
{
    memset(stats, 0, sizeof *stats);
    ngq_vocab vocab;
    ngq_status st = ngq_vocab_read(&vocab, vocab_path, err);
    if (st) return st;
    char *text = NULL;
    size_t size = 0;
    uint16_t *tokens = NULL;
    if ((st = ngq_read_file(text_path, &text, &size, err))) goto done;
    tokens = malloc((size + 1) * sizeof *tokens);
    if (!tokens) {
        st = ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = ngq_vocab_encode(&vocab, text, size, tokens, &stats->tokens, &stats->unknown, text_path, err))) goto done;
    stats->chars = stats->tokens;
    stats->bytes = size;
    stats->stories = 1;
    if (stats->unknown) note_unknowns(&vocab, text, size, stats);
    st = ngq_tokens_write(out_path, tokens, stats->tokens, vocab.size, vocab.hash, err);
done:
    free(tokens);
    free(text);
    ngq_vocab_free(&vocab);
    return st;
}
