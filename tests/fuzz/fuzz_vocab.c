/* fuzz_vocab.c: libFuzzer target for the vocabulary reader and the UTF-8
 * decoder.
 *
 * Every input is first run through the strict UTF-8 decoder at every byte
 * offset: whatever it accepts must re-encode to exactly the bytes it read,
 * and ngq_utf8_validate must agree with a decode of the whole buffer.
 *
 * The input is then parsed as a vocabulary file. A mutated file almost never
 * carries the right hash of its code points, which would stop the fuzzer at
 * that last check, so a failed parse is retried with the 'hash' line rewritten
 * to the hash of the code points its entry lines name. A parsed vocabulary
 * must be well formed; it then encodes the input bytes themselves and decodes
 * the ids, and when no character was unknown the text must come back
 * unchanged. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/vocab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns 1 if the decoder reads all of s as UTF-8, checking each code point
 * it accepts along the way. */
static int check_utf8(const unsigned char *s, size_t size)
{
    int valid = 1;
    for (size_t i = 0; i < size;) {
        uint32_t cp = 0;
        size_t n = ngq_utf8_decode(s + i, size - i, &cp);
        if (n == 0) {
            valid = 0;
            i++;
            continue;
        }
        if (n > 4 || n > size - i || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) abort();
        char out[4];
        if (ngq_utf8_encode(cp, out) != n || memcmp(out, s + i, n) != 0) abort();
        i += n;
    }
    ngq_error err = {0};
    if ((ngq_utf8_validate((const char *)s, size, "fuzz", &err) == NGQ_OK) != valid) abort();
    return valid;
}

static void check_vocab(const ngq_vocab *v)
{
    if (v->size < 2 || v->size > NGQ_VOCAB_MAX || v->unknown_id != v->size - 1) abort();
    for (int i = 0; i < v->size - 1; i++) {
        uint32_t cp = v->codepoints[i];
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) abort();
        if (i > 0 && cp <= v->codepoints[i - 1]) abort();
        if (ngq_vocab_id(v, cp) != i || ngq_vocab_codepoint(v, i) != cp) abort();
    }
    if (ngq_vocab_codepoint(v, v->unknown_id) != 0xFFFD) abort();
}

/* Encodes the input bytes with the vocabulary and decodes them again. */
static void round_trip(const ngq_vocab *v, const unsigned char *text, size_t size, int valid_utf8)
{
    uint16_t *ids = malloc((size ? size : 1) * sizeof *ids);
    if (!ids) return;
    size_t count = 0, unknown = 0;
    ngq_error err = {0};
    ngq_status st = ngq_vocab_encode(v, (const char *)text, size, ids, &count, &unknown, "fuzz", &err);
    if ((st == NGQ_OK) != valid_utf8) abort();
    if (st == NGQ_OK) {
        if (count > size || unknown > count) abort();
        for (size_t i = 0; i < count; i++)
            if (ids[i] >= v->size) abort();
        char *back = ngq_vocab_decode(v, ids, count);
        if (back && unknown == 0 && (strlen(back) != size || memcmp(back, text, size) != 0)) {
            /* an input with a NUL byte decodes to a string strlen stops at */
            if (memchr(text, 0, size) == NULL) abort();
        }
        free(back);
    }
    free(ids);
}

/* Parses hex digits after "U+" (at most 8); returns 0 if there are none. */
static int read_codepoint(const char *line, size_t len, uint32_t *cp)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (line[i] != 'U' || line[i + 1] != '+') continue;
        uint32_t v = 0;
        size_t digits = 0;
        for (size_t k = i + 2; k < len && digits < 8; k++, digits++) {
            char c = line[k];
            int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                   : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (h < 0) break;
            v = (v << 4) | (uint32_t)h;
        }
        if (!digits) return 0;
        *cp = v;
        return 1;
    }
    return 0;
}

/* A copy of text whose fourth line is "hash <hash of the entry lines' code
 * points>", or NULL when the text has no entry lines to hash. */
static char *with_matching_hash(const char *text, size_t size, size_t *out_size)
{
    size_t starts[6], line = 0;
    starts[0] = 0;
    for (size_t i = 0; i < size && line < 5; i++)
        if (text[i] == '\n') starts[++line] = i + 1;
    if (line < 5) return NULL;

    size_t lines = 1;
    for (size_t i = starts[5]; i < size; i++) lines += text[i] == '\n';
    if (lines > NGQ_VOCAB_MAX - 1) lines = NGQ_VOCAB_MAX - 1;
    uint32_t *cps = malloc(lines * sizeof *cps);
    if (!cps) return NULL;
    int n = 0;
    for (size_t pos = starts[5]; pos < size && (size_t)n < lines;) {
        const char *nl = memchr(text + pos, '\n', size - pos);
        size_t len = nl ? (size_t)(nl - (text + pos)) : size - pos;
        if (!read_codepoint(text + pos, len, &cps[n])) break;
        n++;
        pos += len + 1;
    }
    ngq_vocab tmp;
    ngq_error err = {0};
    ngq_status st = n > 0 ? ngq_vocab_from_codepoints(&tmp, cps, n, &err) : NGQ_ERR_FORMAT;
    free(cps);
    if (st != NGQ_OK) return NULL;
    char hash_line[32];
    int hash_len = snprintf(hash_line, sizeof hash_line, "hash %016" PRIx64 "\n", tmp.hash);
    ngq_vocab_free(&tmp);

    size_t head = starts[3], tail = starts[4];
    char *out = malloc(head + (size_t)hash_len + (size - tail));
    if (!out) return NULL;
    memcpy(out, text, head);
    memcpy(out + head, hash_line, (size_t)hash_len);
    memcpy(out + head + (size_t)hash_len, text + tail, size - tail);
    *out_size = head + (size_t)hash_len + (size - tail);
    return out;
}

/* Parses text as a vocabulary; on success checks it and round-trips
 * original through it. Returns the status of the parse. */
static ngq_status parse_and_use(const char *text, size_t size, const unsigned char *original, size_t original_size,
                                int valid_utf8)
{
    ngq_vocab v;
    ngq_error err = {0};
    ngq_status st = ngq_vocab_parse(&v, text, size, "fuzz.vocab", &err);
    if (st != NGQ_OK) {
        if (err.status != st || err.message[0] == '\0' || v.codepoints || v.counts) abort();
        return st;
    }
    check_vocab(&v);
    round_trip(&v, original, original_size, valid_utf8);
    ngq_vocab_free(&v);
    return NGQ_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int valid_utf8 = check_utf8(data, size);
    if (parse_and_use((const char *)data, size, data, size, valid_utf8) == NGQ_OK) return 0;
    size_t fixed_size = 0;
    char *fixed = with_matching_hash((const char *)data, size, &fixed_size);
    if (fixed) {
        parse_and_use(fixed, fixed_size, data, size, valid_utf8);
        free(fixed);
    }
    return 0;
}
