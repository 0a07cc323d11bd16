/* tokens.h: token files. A 48-byte little-endian header, then uint16 tokens:
 *
 *   offset  size  field
 *        0     8  magic "NGQTOKS\0"
 *        8     4  format version (1)
 *       12     4  dtype (1 = uint16)
 *       16     4  vocab size
 *       20     4  reserved (0)
 *       24     8  token count
 *       32     8  vocabulary hash (must match the vocabulary used to read it)
 *       40     8  FNV-1a 64 of the token bytes
 *
 * The reader checks every field, the file size and every token id, so a
 * truncated, corrupted or foreign file gets a clear error. */
#ifndef NANOGPTQ_TOKENS_H
#define NANOGPTQ_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"

#define NGQ_TOKENS_MAGIC "NGQTOKS"
#define NGQ_TOKENS_VERSION 1
#define NGQ_TOKENS_DTYPE_U16 1
#define NGQ_TOKENS_HEADER_SIZE 48

typedef struct {
    uint16_t *tokens;
    size_t count;
    int vocab_size;
    uint64_t vocab_hash;
} ngq_tokens;

ngq_status ngq_tokens_write(const char *path, const uint16_t *tokens, size_t count, int vocab_size,
                            uint64_t vocab_hash, ngq_error *err);
ngq_status ngq_tokens_read(ngq_tokens *out, const char *path, ngq_error *err);
/* Parses a token file held in memory (name is used in messages). */
ngq_status ngq_tokens_parse(ngq_tokens *out, const unsigned char *data, size_t size, const char *name,
                            ngq_error *err);
void ngq_tokens_free(ngq_tokens *t);

#endif
