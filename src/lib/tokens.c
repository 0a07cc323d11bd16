/* tokens.c: reading and writing token files (see tokens.h for the layout). */
#include "nanogptq/tokens.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

ngq_status ngq_tokens_write(const char *path, const uint16_t *tokens, size_t count, int vocab_size,
                            uint64_t vocab_hash, ngq_error *err)
{
    if (!ngq_host_is_little_endian())
        return ngq_fail(err, NGQ_ERR_INTERNAL, "token files are little-endian; this host is not");
    unsigned char header[NGQ_TOKENS_HEADER_SIZE] = {0};
    memcpy(header, NGQ_TOKENS_MAGIC, 8);
    put_u32(header + 8, NGQ_TOKENS_VERSION);
    put_u32(header + 12, NGQ_TOKENS_DTYPE_U16);
    put_u32(header + 16, (uint32_t)vocab_size);
    put_u64(header + 24, (uint64_t)count);
    put_u64(header + 32, vocab_hash);
    put_u64(header + 40, ngq_fnv1a64(tokens, count * sizeof *tokens, NGQ_FNV1A64_INIT));
    ngq_atomic_file af;
    ngq_status st = ngq_atomic_open(&af, path, err);
    if (st) return st;
    if ((st = ngq_atomic_write(&af, header, sizeof header, err)) ||
        (st = ngq_atomic_write(&af, tokens, count * sizeof *tokens, err))) {
        ngq_atomic_abort(&af);
        return st;
    }
    return ngq_atomic_commit(&af, err);
}

ngq_status ngq_tokens_parse(ngq_tokens *out, const unsigned char *data, size_t size, const char *name,
                            ngq_error *err)
{
    memset(out, 0, sizeof *out);
    if (size < NGQ_TOKENS_HEADER_SIZE || memcmp(data, NGQ_TOKENS_MAGIC, 8) != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: not a nanogptq token file (no '%s' header); run preprocess to make one",
                        name, NGQ_TOKENS_MAGIC);
    uint32_t version = get_u32(data + 8), dtype = get_u32(data + 12), vocab_size = get_u32(data + 16);
    uint64_t count = get_u64(data + 24), vocab_hash = get_u64(data + 32), data_hash = get_u64(data + 40);
    if (version != NGQ_TOKENS_VERSION)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: token file version %" PRIu32 " is not supported (expected %d)", name,
                        version, NGQ_TOKENS_VERSION);
    if (dtype != NGQ_TOKENS_DTYPE_U16)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: token dtype %" PRIu32 " is not supported (expected 1 = uint16)", name,
                        dtype);
    if (vocab_size < 2 || vocab_size > 65535)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: vocabulary size %" PRIu32 " is out of range", name, vocab_size);
    if (get_u32(data + 20) != 0) return ngq_fail(err, NGQ_ERR_FORMAT, "%s: reserved header field is not zero", name);
    uint64_t payload = (uint64_t)(size - NGQ_TOKENS_HEADER_SIZE);
    if (count > payload / 2 || payload != count * 2)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: header says %" PRIu64 " tokens (%" PRIu64 " bytes) but the file holds %" PRIu64
                        " bytes of tokens: %s", name, count, count * 2, payload, payload < count * 2 ? "truncated" : "trailing bytes");
    const unsigned char *body = data + NGQ_TOKENS_HEADER_SIZE;
    if (ngq_fnv1a64(body, (size_t)payload, NGQ_FNV1A64_INIT) != data_hash)
        return ngq_fail(err, NGQ_ERR_FORMAT, "%s: checksum mismatch: token data is corrupted", name);
    uint16_t *tokens = malloc(count ? (size_t)count * 2 : 1);
    if (!tokens) return ngq_fail(err, NGQ_ERR_NOMEM, "%s: cannot allocate %" PRIu64 " tokens", name, count);
    memcpy(tokens, body, (size_t)count * 2);
    for (size_t i = 0; i < count; i++)
        if (tokens[i] >= vocab_size) {
            unsigned id = tokens[i];
            free(tokens);
            return ngq_fail(err, NGQ_ERR_FORMAT, "%s: token %zu has id %u, outside the vocabulary of %" PRIu32, name, i,
                            id, vocab_size);
        }
    out->tokens = tokens;
    out->count = (size_t)count;
    out->vocab_size = (int)vocab_size;
    out->vocab_hash = vocab_hash;
    return NGQ_OK;
}

ngq_status ngq_tokens_read(ngq_tokens *out, const char *path, ngq_error *err)
{
    char *data;
    size_t size;
    ngq_status st = ngq_read_file(path, &data, &size, err);
    if (st) return st;
    st = ngq_tokens_parse(out, (const unsigned char *)data, size, path, err);
    free(data);
    return st;
}

void ngq_tokens_free(ngq_tokens *t)
{
    free(t->tokens);
    memset(t, 0, sizeof *t);
}
