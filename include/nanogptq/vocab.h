/* vocab.h: the character-level vocabulary and strict UTF-8 handling.
 *
 * A vocabulary is the sorted set of Unicode code points seen in the training
 * split, with their counts, plus one reserved id for code points it has never
 * seen (the last id). The vocabulary file is small, self-describing text:
 *
 *     nanogptq-vocab 1
 *     size 89
 *     unknown_id 88
 *     hash 0123456789abcdef
 *     id codepoint count
 *     0 U+000A 27193
 *     ...
 *
 * This module does not split corpora or write token files (see tokens.h). */
#ifndef NANOGPTQ_VOCAB_H
#define NANOGPTQ_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"

#define NGQ_VOCAB_MAX 65535 /* token ids are uint16 */

typedef struct {
    int size;              /* number of ids, including the unknown id */
    int unknown_id;        /* == size - 1 */
    uint32_t *codepoints;  /* [size - 1], strictly increasing */
    uint64_t *counts;      /* [size - 1], occurrences in the training split */
    uint64_t hash;         /* identifies the vocabulary (FNV-1a of its code points) */
} ngq_vocab;

/* Decodes one code point from s[0..len) strictly (no overlongs, no
 * surrogates, nothing above U+10FFFF). Returns the bytes used, or 0 if the
 * bytes at s are not valid UTF-8. */
size_t ngq_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);
/* Encodes cp into out (at least 4 bytes); returns bytes written. */
size_t ngq_utf8_encode(uint32_t cp, char *out);
/* Checks a whole buffer; on failure names `name` and the byte offset. */
ngq_status ngq_utf8_validate(const char *data, size_t size, const char *name, ngq_error *err);

/* Builds a vocabulary from per-code-point counts (hist indexed by code point,
 * length hist_len). */
ngq_status ngq_vocab_from_counts(ngq_vocab *vocab, const uint64_t *hist, size_t hist_len, ngq_error *err);
/* Builds a vocabulary from an explicit sorted code-point list (counts zero). */
ngq_status ngq_vocab_from_codepoints(ngq_vocab *vocab, const uint32_t *codepoints, int n, ngq_error *err);
void ngq_vocab_free(ngq_vocab *vocab);

ngq_status ngq_vocab_write(const ngq_vocab *vocab, const char *path, ngq_error *err);
ngq_status ngq_vocab_read(ngq_vocab *vocab, const char *path, ngq_error *err);
/* Parses the file format from memory (name is used in messages). */
ngq_status ngq_vocab_parse(ngq_vocab *vocab, const char *text, size_t size, const char *name, ngq_error *err);

/* The id of a code point, or unknown_id. */
int ngq_vocab_id(const ngq_vocab *vocab, uint32_t cp);
/* The code point of an id; the unknown id maps to U+FFFD. */
uint32_t ngq_vocab_codepoint(const ngq_vocab *vocab, int id);

/* Encodes UTF-8 text into ids. tokens must hold at least size entries.
 * *unknown counts code points mapped to the unknown id. Invalid UTF-8 fails
 * with the byte offset (name used in the message). */
ngq_status ngq_vocab_encode(const ngq_vocab *vocab, const char *text, size_t size, uint16_t *tokens,
                            size_t *count, size_t *unknown, const char *name, ngq_error *err);
/* Decodes ids into a malloc'd UTF-8 string. */
char *ngq_vocab_decode(const ngq_vocab *vocab, const uint16_t *tokens, size_t count);

#endif
