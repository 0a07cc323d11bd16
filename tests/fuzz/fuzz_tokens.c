/* fuzz_tokens.c: libFuzzer target for the token-file reader.
 *
 * The input is parsed as a token file as it is. A mutated file almost never
 * carries the right FNV-1a checksum of its token bytes, which would stop the
 * fuzzer at that check, so the input is parsed a second time with the
 * checksum field rewritten to match its body: that reaches the length, id
 * and allocation logic behind the check. A parsed file must satisfy what the
 * header promises (count, vocabulary size, every id inside the vocabulary). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse_and_check(const unsigned char *data, size_t size)
{
    ngq_tokens t;
    ngq_error err = {0};
    ngq_status st = ngq_tokens_parse(&t, data, size, "fuzz.tok", &err);
    if (st != NGQ_OK) {
        if (err.status != st || err.message[0] == '\0' || t.tokens) abort();
        return;
    }
    if (size < NGQ_TOKENS_HEADER_SIZE || t.count != (size - NGQ_TOKENS_HEADER_SIZE) / 2) abort();
    if (t.vocab_size < 2 || t.vocab_size > 65535) abort();
    for (size_t i = 0; i < t.count; i++)
        if (t.tokens[i] >= t.vocab_size) abort();
    ngq_tokens_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parse_and_check(data, size);
    if (size < NGQ_TOKENS_HEADER_SIZE) return 0;

    unsigned char *fixed = malloc(size);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    uint64_t sum = ngq_fnv1a64(fixed + NGQ_TOKENS_HEADER_SIZE, size - NGQ_TOKENS_HEADER_SIZE, NGQ_FNV1A64_INIT);
    for (int i = 0; i < 8; i++) fixed[40 + i] = (unsigned char)(sum >> (8 * i));
    parse_and_check(fixed, size);
    free(fixed);
    return 0;
}
