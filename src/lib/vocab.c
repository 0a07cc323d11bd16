/* vocab.c: strict UTF-8 decoding, the character vocabulary and its file. */
#include "nanogptq/vocab.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

size_t ngq_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
    if (len == 0) return 0;
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t n;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        v = c & 0x1F;
        min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        v = c & 0x0F;
        min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        v = c & 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

size_t ngq_utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

ngq_status ngq_utf8_validate(const char *data, size_t size, const char *name, ngq_error *err)
{
    const unsigned char *s = (const unsigned char *)data;
    size_t i = 0;
    while (i < size) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = ngq_utf8_decode(s + i, size - i, &cp);
        if (!n) return ngq_fail(err, NGQ_ERR_FORMAT, "%s: invalid UTF-8 at byte offset %zu (byte 0x%02X)", name, i, s[i]);
        i += n;
    }
    return NGQ_OK;
}

static uint64_t codepoints_hash(const uint32_t *cps, int n)
{
    uint64_t h = NGQ_FNV1A64_INIT;
    for (int i = 0; i < n; i++) {
        unsigned char b[4] = {(unsigned char)cps[i], (unsigned char)(cps[i] >> 8), (unsigned char)(cps[i] >> 16),
                              (unsigned char)(cps[i] >> 24)};
        h = ngq_fnv1a64(b, 4, h);
    }
    return h;
}

static ngq_status vocab_alloc(ngq_vocab *vocab, int n, ngq_error *err)
{
    memset(vocab, 0, sizeof *vocab);
    if (n < 1 || n + 1 > NGQ_VOCAB_MAX)
        return ngq_fail(err, NGQ_ERR_FORMAT, "vocabulary of %d characters: must be between 1 and %d", n,
                        NGQ_VOCAB_MAX - 1);
    vocab->codepoints = calloc((size_t)n, sizeof *vocab->codepoints);
    vocab->counts = calloc((size_t)n, sizeof *vocab->counts);
    if (!vocab->codepoints || !vocab->counts) {
        ngq_vocab_free(vocab);
        return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    }
    vocab->size = n + 1;
    vocab->unknown_id = n;
    return NGQ_OK;
}

ngq_status ngq_vocab_from_counts(ngq_vocab *vocab, const uint64_t *hist, size_t hist_len, ngq_error *err)
{
    int n = 0;
    for (size_t cp = 0; cp < hist_len; cp++) n += hist[cp] != 0;
    ngq_status st = vocab_alloc(vocab, n, err);
    if (st) return st;
    int k = 0;
    for (size_t cp = 0; cp < hist_len; cp++)
        if (hist[cp]) {
            vocab->codepoints[k] = (uint32_t)cp;
            vocab->counts[k++] = hist[cp];
        }
    vocab->hash = codepoints_hash(vocab->codepoints, n);
    return NGQ_OK;
}

ngq_status ngq_vocab_from_codepoints(ngq_vocab *vocab, const uint32_t *codepoints, int n, ngq_error *err)
{
    for (int i = 1; i < n; i++)
        if (codepoints[i] <= codepoints[i - 1])
            return ngq_fail(err, NGQ_ERR_FORMAT, "vocabulary code points are not strictly increasing at index %d", i);
    ngq_status st = vocab_alloc(vocab, n, err);
    if (st) return st;
    memcpy(vocab->codepoints, codepoints, (size_t)n * sizeof *codepoints);
    vocab->hash = codepoints_hash(vocab->codepoints, n);
    return NGQ_OK;
}

void ngq_vocab_free(ngq_vocab *vocab)
{
    free(vocab->codepoints);
    free(vocab->counts);
    memset(vocab, 0, sizeof *vocab);
}

ngq_status ngq_vocab_write(const ngq_vocab *vocab, const char *path, ngq_error *err)
{
    size_t cap = 128 + (size_t)vocab->size * 48;
    char *buf = malloc(cap);
    if (!buf) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
    size_t n = (size_t)snprintf(buf, cap, "nanogptq-vocab 1\nsize %d\nunknown_id %d\nhash %016" PRIx64
                                "\nid codepoint count\n", vocab->size, vocab->unknown_id, vocab->hash);
    for (int i = 0; i < vocab->size - 1; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%d U+%04" PRIX32 " %" PRIu64 "\n", i, vocab->codepoints[i],
                              vocab->counts[i]);
    ngq_status st = ngq_write_file_atomic(path, buf, n, err);
    free(buf);
    return st;
}

/* Reads the next line of text[pos..size) into line (NUL-terminated). */
static int next_line(const char *text, size_t size, size_t *pos, char *line, size_t cap)
{
    if (*pos >= size) return 0;
    size_t start = *pos, end = start;
    while (end < size && text[end] != '\n') end++;
    size_t n = end - start;
    if (n >= cap) n = cap - 1;
    memcpy(line, text + start, n);
    line[n] = '\0';
    *pos = end < size ? end + 1 : end;
    return 1;
}

ngq_status ngq_vocab_parse(ngq_vocab *vocab, const char *text, size_t size, const char *name, ngq_error *err)
{
    memset(vocab, 0, sizeof *vocab);
    /* Every numeric field has a width that keeps its value representable:
     * sscanf's behaviour on a value that does not fit is undefined (glibc
     * silently wraps "size 4294967299" to 3). */
    char line[256];
    size_t pos = 0;
    int lineno = 0, declared_size = 0, unknown_id = 0;
    uint64_t declared_hash = 0;
    char rest[64];
    if (!next_line(text, size, &pos, line, sizeof line) || strcmp(line, "nanogptq-vocab 1") != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s:1: not a nanogptq vocabulary (expected first line 'nanogptq-vocab 1')",
                        name);
    lineno = 1;
    if (!next_line(text, size, &pos, line, sizeof line) || sscanf(line, "size %9d%63s", &declared_size, rest) != 1 ||
        declared_size < 2 || declared_size > NGQ_VOCAB_MAX)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s:2: expected 'size N' with 2 <= N <= %d", name, NGQ_VOCAB_MAX);
    if (!next_line(text, size, &pos, line, sizeof line) || sscanf(line, "unknown_id %9d%63s", &unknown_id, rest) != 1 ||
        unknown_id != declared_size - 1)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s:3: expected 'unknown_id %d'", name, declared_size - 1);
    if (!next_line(text, size, &pos, line, sizeof line) || sscanf(line, "hash %16" SCNx64 "%63s", &declared_hash, rest) != 1)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s:4: expected 'hash HEX'", name);
    if (!next_line(text, size, &pos, line, sizeof line) || strcmp(line, "id codepoint count") != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s:5: expected the column line 'id codepoint count'", name);
    lineno = 5;
    int n = declared_size - 1;
    ngq_status st = vocab_alloc(vocab, n, err);
    if (st) return st;
    for (int i = 0; i < n; i++) {
        lineno++;
        int id;
        unsigned int cp;
        uint64_t count;
        if (!next_line(text, size, &pos, line, sizeof line)) {
            ngq_vocab_free(vocab);
            return ngq_fail(err, NGQ_ERR_FORMAT, "%s: truncated: %d of %d entries", name, i, n);
        }
        if (sscanf(line, "%9d U+%8X %19" SCNu64 "%63s", &id, &cp, &count, rest) != 3 || id != i || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF) || (i > 0 && cp <= vocab->codepoints[i - 1])) {
            ngq_vocab_free(vocab);
            return ngq_fail(err, NGQ_ERR_FORMAT,
                            "%s:%d: expected '%d U+XXXX COUNT' with code points strictly increasing", name, lineno, i);
        }
        vocab->codepoints[i] = cp;
        vocab->counts[i] = count;
    }
    if (next_line(text, size, &pos, line, sizeof line) && line[0]) {
        ngq_vocab_free(vocab);
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s:%d: unexpected text after %d entries", name, lineno + 1, n);
    }
    vocab->hash = codepoints_hash(vocab->codepoints, n);
    if (vocab->hash != declared_hash) {
        uint64_t actual = vocab->hash;
        ngq_vocab_free(vocab);
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: hash %016" PRIx64 " does not match its entries (%016" PRIx64 "): corrupted",
                        name, declared_hash, actual);
    }
    return NGQ_OK;
}

ngq_status ngq_vocab_read(ngq_vocab *vocab, const char *path, ngq_error *err)
{
    char *text;
    size_t size;
    ngq_status st = ngq_read_file(path, &text, &size, err);
    if (st) return st;
    st = ngq_vocab_parse(vocab, text, size, path, err);
    free(text);
    return st;
}

int ngq_vocab_id(const ngq_vocab *vocab, uint32_t cp)
{
    int lo = 0, hi = vocab->size - 2;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (vocab->codepoints[mid] == cp) return mid;
        if (vocab->codepoints[mid] < cp) lo = mid + 1;
        else hi = mid - 1;
    }
    return vocab->unknown_id;
}

uint32_t ngq_vocab_codepoint(const ngq_vocab *vocab, int id)
{
    if (id < 0 || id >= vocab->unknown_id) return 0xFFFD;
    return vocab->codepoints[id];
}

ngq_status ngq_vocab_encode(const ngq_vocab *vocab, const char *text, size_t size, uint16_t *tokens,
                            size_t *count, size_t *unknown, const char *name, ngq_error *err)
{
    const unsigned char *s = (const unsigned char *)text;
    /* ASCII fast path table */
    int ascii[128];
    for (uint32_t c = 0; c < 128; c++) ascii[c] = ngq_vocab_id(vocab, c);
    size_t i = 0, n = 0, unk = 0;
    while (i < size) {
        uint32_t cp;
        int id;
        if (s[i] < 0x80) {
            id = ascii[s[i]];
            i++;
        } else {
            size_t len = ngq_utf8_decode(s + i, size - i, &cp);
            if (!len)
                return ngq_fail(err, NGQ_ERR_FORMAT, "%s: invalid UTF-8 at byte offset %zu (byte 0x%02X)", name, i, s[i]);
            id = ngq_vocab_id(vocab, cp);
            i += len;
        }
        unk += id == vocab->unknown_id;
        tokens[n++] = (uint16_t)id;
    }
    *count = n;
    if (unknown) *unknown = unk;
    return NGQ_OK;
}

char *ngq_vocab_decode(const ngq_vocab *vocab, const uint16_t *tokens, size_t count)
{
    char *out = malloc(count * 4 + 1);
    if (!out) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < count; i++) n += ngq_utf8_encode(ngq_vocab_codepoint(vocab, tokens[i]), out + n);
    out[n] = '\0';
    return out;
}
