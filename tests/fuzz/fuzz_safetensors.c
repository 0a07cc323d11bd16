/* fuzz_safetensors.c: libFuzzer target for the safetensors reader.
 *
 * The input is opened as a safetensors file from memory. When the reader
 * accepts it, every tensor and every metadata entry is walked and checked
 * against what the reader promises: a known dtype, nbytes equal to the
 * element count times the dtype size, data aligned for the dtype and readable
 * to its last byte, tensor sizes adding up to exactly the data section,
 * lookups by name that find each tensor, and metadata whose lookups agree
 * with the list. */
#include <stdint.h>
#include <stdlib.h>

#include "nanogptq/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tensor(const ngq_st_file *f, const ngq_st_tensor *t)
{
    if (!t->name) abort();
    size_t elem = ngq_st_dtype_size(t->dtype);
    if (elem == 0 || t->ndim < 0 || t->ndim > NGQ_ST_MAX_DIMS) abort();
    uint64_t need = elem;
    for (int d = 0; d < NGQ_ST_MAX_DIMS; d++) {
        if (d >= t->ndim) {
            if (t->shape[d] != 0) abort();
            continue;
        }
        if (t->shape[d] < 0) abort();
        need *= (uint64_t)t->shape[d]; /* the reader has ruled out overflow */
    }
    if (need != t->nbytes) abort();
    if (t->nbytes == 0) {
        if (t->data) abort();
    } else {
        if (!t->data || (uintptr_t)t->data % elem != 0) abort();
        /* touch every byte, so the sanitizer sees any out-of-bounds view */
        const unsigned char *p = t->data;
        unsigned acc = 0;
        for (size_t i = 0; i < t->nbytes; i++) acc += p[i];
        volatile unsigned sink = acc;
        (void)sink;
    }
    if (ngq_st_find_tensor(f, t->name) != t) abort();
    const ngq_st_tensor *same = NULL;
    ngq_error err = {0};
    if (ngq_st_require_tensor(f, t->name, t->dtype, t->ndim, t->shape, &same, &err) != NGQ_OK || same != t) abort();
    /* a different dtype must be refused with a message */
    ngq_st_dtype other = t->dtype == NGQ_ST_F32 ? NGQ_ST_I8 : NGQ_ST_F32;
    if (ngq_st_require_tensor(f, t->name, other, t->ndim, t->shape, &same, &err) != NGQ_ERR_FORMAT || same ||
        !err.message[0])
        abort();
}

static void walk(const ngq_st_file *f, const uint8_t *data, size_t size)
{
    /* the data section is what follows the 8-byte length and the header */
    if (size < 8) abort();
    uint64_t header_len = 0;
    for (int k = 7; k >= 0; k--) header_len = (header_len << 8) | data[k];
    if (header_len > size - 8) abort();

    size_t n = ngq_st_tensor_count(f);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const ngq_st_tensor *t = ngq_st_tensor_at(f, i);
        if (!t) abort();
        check_tensor(f, t);
        total += t->nbytes;
    }
    if (ngq_st_tensor_at(f, n) != NULL) abort();
    if (total != size - 8 - header_len) abort();
    if (ngq_st_find_tensor(f, "__metadata__") != NULL) abort();

    size_t m = ngq_st_metadata_count(f);
    for (size_t i = 0; i < m; i++) {
        const char *key = NULL, *value = NULL;
        ngq_st_metadata_at(f, i, &key, &value);
        if (!key || !value) abort();
        /* keys are unique as C strings, so the lookup finds this entry */
        if (ngq_st_metadata_value(f, key) != value) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngq_st_file *f = NULL;
    ngq_error err = {0};
    ngq_status st = ngq_st_open_memory(&f, data, size, "fuzz.safetensors", &err);
    if (st != NGQ_OK) {
        if (f || err.status != st || !err.message[0]) abort();
        return 0;
    }
    walk(f, data, size);
    ngq_st_close(f);
    return 0;
}
