/* safetensors.c: the safetensors writer (streams caller-owned tensor data
 * into an atomically written file, header serialised by hand so every integer
 * is printed exactly) and the strict reader (loads a whole file or buffer,
 * validates header, offsets, metadata and checksum, aligns the data).
 * It never converts dtypes and never prints. */
#include "nanogptq/safetensors.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Integers above 2^53 cannot be represented exactly by cJSON's doubles. */
#define ST_MAX_EXACT_INTEGER 9007199254740992.0
#define ST_CHECKSUM_PREFIX "fnv1a64:"

/* ---- dtypes ------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} st_dtypes[NGQ_ST_DTYPE_COUNT] = {
    [NGQ_ST_BOOL] = {"BOOL", 1}, [NGQ_ST_U8] = {"U8", 1},     [NGQ_ST_I8] = {"I8", 1},
    [NGQ_ST_U16] = {"U16", 2},   [NGQ_ST_I16] = {"I16", 2},   [NGQ_ST_F16] = {"F16", 2},
    [NGQ_ST_BF16] = {"BF16", 2}, [NGQ_ST_U32] = {"U32", 4},   [NGQ_ST_I32] = {"I32", 4},
    [NGQ_ST_F32] = {"F32", 4},   [NGQ_ST_U64] = {"U64", 8},   [NGQ_ST_I64] = {"I64", 8},
    [NGQ_ST_F64] = {"F64", 8},
};

const char *ngq_st_dtype_name(ngq_st_dtype dtype)
{
    return (unsigned)dtype < NGQ_ST_DTYPE_COUNT ? st_dtypes[dtype].name : "?";
}

size_t ngq_st_dtype_size(ngq_st_dtype dtype)
{
    return (unsigned)dtype < NGQ_ST_DTYPE_COUNT ? st_dtypes[dtype].size : 0;
}

int ngq_st_dtype_parse(const char *name, ngq_st_dtype *dtype)
{
    for (int i = 0; i < NGQ_ST_DTYPE_COUNT; i++) {
        if (strcmp(name, st_dtypes[i].name) == 0) {
            *dtype = (ngq_st_dtype)i;
            return 1;
        }
    }
    return 0;
}

/* ---- helpers shared by reader and writer -------------------------------- */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
 * Returns the offset of the first invalid byte, or size if all is valid. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t size)
{
    size_t i = 0;
    while (i < size) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            return i;
        }
        if (size - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
        i += len;
    }
    return size;
}

static int utf8_valid_string(const char *s)
{
    size_t n = strlen(s);
    return utf8_valid_prefix((const unsigned char *)s, n) == n;
}

/* Formats "[2, 3]" into buf (truncated to cap). */
static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t n = 0;
    buf[0] = '\0';
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* Element count x element size, or 0 with *overflow set when it does not fit. */
static uint64_t shape_byte_size(int ndim, const int64_t *shape, size_t elem_size, int *overflow)
{
    *overflow = 0;
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) return 0;
    uint64_t n = elem_size;
    for (int d = 0; d < ndim; d++) {
        uint64_t dim = (uint64_t)shape[d];
        if (n > UINT64_MAX / dim) {
            *overflow = 1;
            return 0;
        }
        n *= dim;
    }
    if (n > SIZE_MAX) {
        *overflow = 1;
        return 0;
    }
    return n;
}

/* ---- writer ------------------------------------------------------------- */

void ngq_st_writer_init(ngq_st_writer *w)
{
    memset(w, 0, sizeof *w);
}

void ngq_st_writer_free(ngq_st_writer *w)
{
    for (size_t i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
    for (size_t i = 0; i < w->n_metadata; i++) {
        free(w->metadata_keys[i]);
        free(w->metadata_values[i]);
    }
    free(w->tensors);
    free(w->metadata_keys);
    free(w->metadata_values);
    memset(w, 0, sizeof *w);
}

ngq_status ngq_st_writer_add_tensor(ngq_st_writer *w, const char *name, ngq_st_dtype dtype, int ndim,
                                    const int64_t *shape, const void *data, size_t nbytes,
                                    ngq_error *err)
{
    if (!name) return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor name is NULL");
    if (strcmp(name, "__metadata__") == 0)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor name \"__metadata__\" is reserved");
    if (!utf8_valid_string(name))
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor name '%s' is not valid UTF-8", name);
    if ((unsigned)dtype >= NGQ_ST_DTYPE_COUNT)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor '%s': unknown dtype %d", name,
                        (int)dtype);
    if (ndim < 0 || ndim > NGQ_ST_MAX_DIMS)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor '%s': %d dimensions (supported: 0 to %d)",
                        name, ndim, NGQ_ST_MAX_DIMS);
    if (ndim > 0 && !shape)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor '%s': shape is NULL", name);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (double)shape[d] > ST_MAX_EXACT_INTEGER)
            return ngq_fail(err, NGQ_ERR_INTERNAL,
                            "safetensors writer: tensor '%s': dimension %d is %" PRId64
                            " (must be between 0 and 2^53)",
                            name, d, shape[d]);
    }
    char shape_text[256];
    format_shape(shape_text, sizeof shape_text, ndim, shape);
    int overflow;
    uint64_t need = shape_byte_size(ndim, shape, st_dtypes[dtype].size, &overflow);
    if (overflow)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor '%s': shape %s is too large", name,
                        shape_text);
    if (need != nbytes)
        return ngq_fail(err, NGQ_ERR_INTERNAL,
                        "safetensors writer: tensor '%s': shape %s of %s needs %" PRIu64
                        " bytes but %zu were given",
                        name, shape_text, st_dtypes[dtype].name, need, nbytes);
    if (nbytes > 0 && !data)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: tensor '%s': data is NULL", name);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: duplicate tensor name '%s'", name);

    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        ngq_st_writer_entry *grown = realloc(w->tensors, cap * sizeof *grown);
        if (!grown) return ngq_fail(err, NGQ_ERR_NOMEM, "safetensors writer: out of memory");
        w->tensors = grown;
        w->cap_tensors = cap;
    }
    ngq_st_writer_entry *e = &w->tensors[w->n_tensors];
    memset(e, 0, sizeof *e);
    e->name = ngq_strdup_printf("%s", name);
    if (!e->name) return ngq_fail(err, NGQ_ERR_NOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (int d = 0; d < ndim; d++) e->shape[d] = shape[d];
    e->data = data;
    e->nbytes = nbytes;
    w->n_tensors++;
    return NGQ_OK;
}

ngq_status ngq_st_writer_add_metadata(ngq_st_writer *w, const char *key, const char *value, ngq_error *err)
{
    if (!key || !value)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: metadata key or value is NULL");
    if (strcmp(key, NGQ_ST_CHECKSUM_KEY) == 0)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: metadata key '%s' is reserved", key);
    if (!utf8_valid_string(key) || !utf8_valid_string(value))
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: metadata '%s' is not valid UTF-8", key);
    for (size_t i = 0; i < w->n_metadata; i++)
        if (strcmp(w->metadata_keys[i], key) == 0)
            return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: duplicate metadata key '%s'", key);
    if (w->n_metadata == w->cap_metadata) {
        size_t cap = w->cap_metadata ? 2 * w->cap_metadata : 8;
        char **keys = realloc(w->metadata_keys, cap * sizeof *keys);
        if (!keys) return ngq_fail(err, NGQ_ERR_NOMEM, "safetensors writer: out of memory");
        w->metadata_keys = keys;
        char **values = realloc(w->metadata_values, cap * sizeof *values);
        if (!values) return ngq_fail(err, NGQ_ERR_NOMEM, "safetensors writer: out of memory");
        w->metadata_values = values;
        w->cap_metadata = cap;
    }
    char *k = ngq_strdup_printf("%s", key);
    char *v = ngq_strdup_printf("%s", value);
    if (!k || !v) {
        free(k);
        free(v);
        return ngq_fail(err, NGQ_ERR_NOMEM, "safetensors writer: out of memory");
    }
    w->metadata_keys[w->n_metadata] = k;
    w->metadata_values[w->n_metadata] = v;
    w->n_metadata++;
    return NGQ_OK;
}

/* A growing text buffer for the header; failed is set on allocation failure. */
typedef struct {
    char *text;
    size_t len, cap;
    int failed;
} st_text;

static void text_append(st_text *t, const char *s, size_t n)
{
    if (t->failed) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (t->len + n + 1 > cap) cap *= 2;
        char *grown = realloc(t->text, cap);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->text = grown;
        t->cap = cap;
    }
    memcpy(t->text + t->len, s, n);
    t->len += n;
    t->text[t->len] = '\0';
}

static void text_puts(st_text *t, const char *s)
{
    text_append(t, s, strlen(s));
}

static void text_u64(st_text *t, uint64_t v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRIu64, v);
    text_append(t, buf, (size_t)n);
}

/* A JSON string literal: quotes, backslashes and control bytes escaped,
 * UTF-8 passed through. */
static void text_json_string(st_text *t, const char *s)
{
    text_append(t, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            text_append(t, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*p);
            text_append(t, esc, 6);
        } else {
            text_append(t, (const char *)p, 1);
        }
    }
    text_append(t, "\"", 1);
}

ngq_status ngq_st_writer_write_to(const ngq_st_writer *w, ngq_atomic_file *af, ngq_error *err)
{
    /* One read-only pass over the caller's data for the checksum; the data
     * is then streamed tensor by tensor, never gathered into one buffer. */
    uint64_t hash = NGQ_FNV1A64_INIT;
    size_t total = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (w->tensors[i].nbytes > SIZE_MAX - total)
            return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: total data size overflows");
        total += w->tensors[i].nbytes;
        hash = ngq_fnv1a64(w->tensors[i].data, w->tensors[i].nbytes, hash);
    }

    st_text t = {0};
    text_puts(&t, "{\"__metadata__\":{");
    for (size_t i = 0; i < w->n_metadata; i++) {
        text_json_string(&t, w->metadata_keys[i]);
        text_puts(&t, ":");
        text_json_string(&t, w->metadata_values[i]);
        text_puts(&t, ",");
    }
    char checksum[64];
    snprintf(checksum, sizeof checksum, ST_CHECKSUM_PREFIX "%016" PRIx64, hash);
    text_json_string(&t, NGQ_ST_CHECKSUM_KEY);
    text_puts(&t, ":");
    text_json_string(&t, checksum);
    text_puts(&t, "}");
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const ngq_st_writer_entry *e = &w->tensors[i];
        text_puts(&t, ",");
        text_json_string(&t, e->name);
        text_puts(&t, ":{\"dtype\":\"");
        text_puts(&t, st_dtypes[e->dtype].name);
        text_puts(&t, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) text_puts(&t, ",");
            text_u64(&t, (uint64_t)e->shape[d]);
        }
        text_puts(&t, "],\"data_offsets\":[");
        text_u64(&t, offset);
        text_puts(&t, ",");
        offset += e->nbytes;
        text_u64(&t, offset);
        text_puts(&t, "]}");
    }
    text_puts(&t, "}");
    while (!t.failed && (8 + t.len) % 8 != 0) text_puts(&t, " ");
    if (t.failed) {
        free(t.text);
        return ngq_fail(err, NGQ_ERR_NOMEM, "safetensors writer: out of memory for the header");
    }
    if (t.len > NGQ_ST_MAX_HEADER_BYTES) {
        size_t len = t.len;
        free(t.text);
        return ngq_fail(err, NGQ_ERR_INTERNAL, "safetensors writer: header of %zu bytes exceeds the limit of %u",
                        len, NGQ_ST_MAX_HEADER_BYTES);
    }

    unsigned char length_field[8];
    for (int k = 0; k < 8; k++) length_field[k] = (unsigned char)((uint64_t)t.len >> (8 * k));
    ngq_status st = ngq_atomic_write(af, length_field, sizeof length_field, err);
    if (!st) st = ngq_atomic_write(af, t.text, t.len, err);
    free(t.text);
    for (size_t i = 0; i < w->n_tensors && !st; i++)
        st = ngq_atomic_write(af, w->tensors[i].data, w->tensors[i].nbytes, err);
    return st;
}

ngq_status ngq_st_writer_write(const ngq_st_writer *w, const char *path, ngq_error *err)
{
    ngq_atomic_file af;
    ngq_status st = ngq_atomic_open(&af, path, err);
    if (st) return st;
    st = ngq_st_writer_write_to(w, &af, err);
    if (st) {
        ngq_atomic_abort(&af);
        return st;
    }
    return ngq_atomic_commit(&af, err);
}

/* ---- reader ------------------------------------------------------------- */

typedef struct {
    ngq_st_tensor pub;
    uint64_t begin, end;
    size_t header_index;
    void *copy; /* aligned copy of a misaligned tensor, owned */
} st_entry;

struct ngq_st_file {
    char *name;        /* path or display name, for messages */
    char *buffer;      /* the whole file, owned */
    size_t size;
    cJSON *header;     /* owns every name, key and value string */
    st_entry *entries; /* file order */
    size_t n_entries;
    st_entry **by_name;
    const char **metadata_keys;
    const char **metadata_values;
    size_t n_metadata;
};

/* Records a format error prefixed with the file's name. */
static ngq_status st_fail(ngq_error *err, ngq_status status, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static ngq_status st_fail(ngq_error *err, ngq_status status, const char *file, const char *fmt, ...)
{
    char msg[NGQ_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ngq_fail(err, status, "%s: %s", file, msg);
}

/* A JSON number that is a non-negative integer no larger than 2^53. */
static int json_exact_u64(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= 0.0 && v <= ST_MAX_EXACT_INTEGER)) return 0;
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return 0;
    *out = u;
    return 1;
}

static int compare_offsets(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->header_index < y->header_index ? -1 : x->header_index > y->header_index;
}

static int compare_entry_names(const void *a, const void *b)
{
    const st_entry *const *x = a, *const *y = b;
    return strcmp((*x)->pub.name, (*y)->pub.name);
}

static int compare_strings(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

static ngq_status parse_entry(const char *file, const cJSON *item, st_entry *e, size_t data_size,
                              ngq_error *err)
{
    const char *name = item->string;
    e->pub.name = name;
    if (!cJSON_IsObject(item))
        return st_fail(err, NGQ_ERR_FORMAT, file, "tensor '%s': entry is not a JSON object", name);

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dtype))
        return st_fail(err, NGQ_ERR_FORMAT, file, "tensor '%s': missing or non-string \"dtype\"", name);
    if (!ngq_st_dtype_parse(dtype->valuestring, &e->pub.dtype))
        return st_fail(err, NGQ_ERR_FORMAT, file, "tensor '%s': unknown dtype \"%s\"", name, dtype->valuestring);

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsArray(shape))
        return st_fail(err, NGQ_ERR_FORMAT, file, "tensor '%s': missing or non-array \"shape\"", name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > NGQ_ST_MAX_DIMS)
        return st_fail(err, NGQ_ERR_FORMAT, file, "tensor '%s': shape has %d dimensions, more than the supported %d",
                       name, ndim, NGQ_ST_MAX_DIMS);
    e->pub.ndim = ndim;
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        uint64_t v;
        if (!json_exact_u64(dim, &v))
            return st_fail(err, NGQ_ERR_FORMAT, file,
                           "tensor '%s': shape[%d] is not a non-negative integer (at most 2^53)", name, d);
        e->pub.shape[d] = (int64_t)v;
    }

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return st_fail(err, NGQ_ERR_FORMAT, file, "tensor '%s': \"data_offsets\" must be an array of two integers",
                       name);
    if (!json_exact_u64(offsets->child, &e->begin) || !json_exact_u64(offsets->child->next, &e->end))
        return st_fail(err, NGQ_ERR_FORMAT, file,
                       "tensor '%s': \"data_offsets\" values must be non-negative integers (at most 2^53)", name);
    if (e->end < e->begin)
        return st_fail(err, NGQ_ERR_FORMAT, file,
                       "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before they begin", name, e->begin,
                       e->end);

    char shape_text[256];
    format_shape(shape_text, sizeof shape_text, ndim, e->pub.shape);
    int overflow;
    uint64_t need = shape_byte_size(ndim, e->pub.shape, st_dtypes[e->pub.dtype].size, &overflow);
    if (overflow)
        return st_fail(err, NGQ_ERR_FORMAT, file, "tensor '%s': shape %s is too large (its byte size overflows)",
                       name, shape_text);
    if (need != e->end - e->begin)
        return st_fail(err, NGQ_ERR_FORMAT, file,
                       "tensor '%s': shape %s of %s needs %" PRIu64 " bytes but data_offsets [%" PRIu64
                       ", %" PRIu64 "] span %" PRIu64,
                       name, shape_text, st_dtypes[e->pub.dtype].name, need, e->begin, e->end, e->end - e->begin);
    if (e->end > data_size)
        return st_fail(err, NGQ_ERR_FORMAT, file,
                       "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] lie outside the data section (%zu bytes)",
                       name, e->begin, e->end, data_size);
    e->pub.nbytes = (size_t)need;
    return NGQ_OK;
}

static ngq_status parse_metadata(ngq_st_file *f, const cJSON *meta, ngq_error *err)
{
    if (!cJSON_IsObject(meta))
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "\"__metadata__\" is not a JSON object");
    size_t n = 0;
    for (const cJSON *it = meta->child; it; it = it->next) n++;
    if (n == 0) return NGQ_OK;
    f->metadata_keys = calloc(n, sizeof *f->metadata_keys);
    f->metadata_values = calloc(n, sizeof *f->metadata_values);
    const char **sorted = calloc(n, sizeof *sorted);
    if (!f->metadata_keys || !f->metadata_values || !sorted) {
        free(sorted);
        return st_fail(err, NGQ_ERR_NOMEM, f->name, "out of memory for %zu metadata entries", n);
    }
    for (const cJSON *it = meta->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
            free(sorted);
            return st_fail(err, NGQ_ERR_FORMAT, f->name, "\"__metadata__\" value for key '%s' is not a string",
                           it->string);
        }
        f->metadata_keys[f->n_metadata] = it->string;
        f->metadata_values[f->n_metadata] = it->valuestring;
        sorted[f->n_metadata] = it->string;
        f->n_metadata++;
    }
    qsort(sorted, n, sizeof *sorted, compare_strings);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) {
            ngq_status st = st_fail(err, NGQ_ERR_FORMAT, f->name, "duplicate \"__metadata__\" key '%s'", sorted[i]);
            free(sorted);
            return st;
        }
    }
    free(sorted);
    return NGQ_OK;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static ngq_status verify_checksum(const ngq_st_file *f, const unsigned char *data, size_t data_size,
                                  ngq_error *err)
{
    const char *text = ngq_st_metadata_value(f, NGQ_ST_CHECKSUM_KEY);
    if (!text) return NGQ_OK;
    size_t prefix = strlen(ST_CHECKSUM_PREFIX);
    uint64_t expected = 0;
    int ok = strncmp(text, ST_CHECKSUM_PREFIX, prefix) == 0 && strlen(text) == prefix + 16;
    for (size_t i = 0; ok && i < 16; i++) {
        int h = hex_digit(text[prefix + i]);
        if (h < 0) ok = 0;
        expected = (expected << 4) | (uint64_t)(h < 0 ? 0 : h);
    }
    if (!ok)
        return st_fail(err, NGQ_ERR_FORMAT, f->name,
                       "malformed checksum \"%s\" (expected \"" ST_CHECKSUM_PREFIX "\" and 16 hex digits)", text);
    uint64_t actual = ngq_fnv1a64(data, data_size, NGQ_FNV1A64_INIT);
    if (actual != expected)
        return st_fail(err, NGQ_ERR_FORMAT, f->name,
                       "checksum mismatch: file is corrupted (header says %s, data hashes to " ST_CHECKSUM_PREFIX
                       "%016" PRIx64 ")",
                       text, actual);
    return NGQ_OK;
}

/* Validates f->buffer (f->size bytes, followed by one spare byte) and fills
 * the tables. On failure the caller closes f. */
static ngq_status parse_file(ngq_st_file *f, ngq_error *err)
{
    const unsigned char *bytes = (const unsigned char *)f->buffer;
    if (f->size < 8)
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "file is %zu bytes, shorter than the 8-byte header length",
                       f->size);
    uint64_t header_len = 0;
    for (int k = 7; k >= 0; k--) header_len = (header_len << 8) | bytes[k];
    if (header_len > NGQ_ST_MAX_HEADER_BYTES)
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "header length %" PRIu64 " exceeds the limit of %u bytes",
                       header_len, NGQ_ST_MAX_HEADER_BYTES);
    if (header_len > f->size - 8)
        return st_fail(err, NGQ_ERR_FORMAT, f->name,
                       "header length %" PRIu64 " is larger than the file (%zu bytes after the length field)",
                       header_len, f->size - 8);
    size_t hlen = (size_t)header_len;
    const unsigned char *header_bytes = bytes + 8;
    const unsigned char *data = header_bytes + hlen;
    size_t data_size = f->size - 8 - hlen;

    if (memchr(header_bytes, '\0', hlen))
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "header contains a NUL byte");
    size_t valid = utf8_valid_prefix(header_bytes, hlen);
    if (valid != hlen)
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "header is not valid UTF-8 (at byte %zu of the header)", valid);

    /* The parser gets its own NUL-terminated copy, so nothing it does can
     * reach past the header into the data section. */
    char *text = malloc(hlen + 1);
    if (!text) return st_fail(err, NGQ_ERR_NOMEM, f->name, "out of memory for a %zu-byte header", hlen);
    memcpy(text, header_bytes, hlen);
    text[hlen] = '\0';
    const char *end = NULL;
    f->header = cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
    size_t stop = end && end >= text && end <= text + hlen ? (size_t)(end - text) : hlen;
    if (!f->header) {
        free(text);
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "header is not valid JSON (parse error near byte %zu)", stop);
    }
    for (size_t i = stop; i < hlen; i++) {
        char c = text[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            free(text);
            return st_fail(err, NGQ_ERR_FORMAT, f->name,
                           "header has bytes other than whitespace after the JSON value (at byte %zu)", i);
        }
    }
    free(text);
    if (!cJSON_IsObject(f->header))
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "header is not a JSON object");

    size_t n = 0, n_meta = 0;
    const cJSON *meta = NULL;
    for (const cJSON *it = f->header->child; it; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0) {
            n_meta++;
            meta = it;
        } else {
            n++;
        }
    }
    if (n_meta > 1) return st_fail(err, NGQ_ERR_FORMAT, f->name, "header has more than one \"__metadata__\"");
    if (meta) {
        ngq_status st = parse_metadata(f, meta, err);
        if (st) return st;
    }

    if (n > 0) {
        f->entries = calloc(n, sizeof *f->entries);
        f->by_name = calloc(n, sizeof *f->by_name);
        if (!f->entries || !f->by_name)
            return st_fail(err, NGQ_ERR_NOMEM, f->name, "out of memory for %zu tensors", n);
    }
    for (const cJSON *it = f->header->child; it; it = it->next) {
        if (it == meta) continue;
        st_entry *e = &f->entries[f->n_entries];
        e->header_index = f->n_entries;
        f->n_entries++;
        ngq_status st = parse_entry(f->name, it, e, data_size, err);
        if (st) return st;
    }

    if (n > 0) qsort(f->entries, n, sizeof *f->entries, compare_offsets);
    for (size_t i = 0; i < n; i++) f->by_name[i] = &f->entries[i];
    if (n > 0) qsort(f->by_name, n, sizeof *f->by_name, compare_entry_names);
    for (size_t i = 1; i < n; i++)
        if (strcmp(f->by_name[i - 1]->pub.name, f->by_name[i]->pub.name) == 0)
            return st_fail(err, NGQ_ERR_FORMAT, f->name, "duplicate tensor name '%s'", f->by_name[i]->pub.name);

    uint64_t covered = 0;
    for (size_t i = 0; i < n; i++) {
        const st_entry *e = &f->entries[i];
        if (e->begin > covered) {
            if (i == 0)
                return st_fail(err, NGQ_ERR_FORMAT, f->name,
                               "hole of %" PRIu64 " bytes at the start of the data section, before tensor '%s'",
                               e->begin, e->pub.name);
            return st_fail(err, NGQ_ERR_FORMAT, f->name, "hole of %" PRIu64 " bytes between tensors '%s' and '%s'",
                           e->begin - covered, f->entries[i - 1].pub.name, e->pub.name);
        }
        if (e->begin < covered)
            return st_fail(err, NGQ_ERR_FORMAT, f->name, "tensors '%s' and '%s' overlap in the data section",
                           f->entries[i - 1].pub.name, e->pub.name);
        covered = e->end;
    }
    if (covered != data_size)
        return st_fail(err, NGQ_ERR_FORMAT, f->name,
                       "data section is %zu bytes but the tensors cover %" PRIu64 " (%" PRIu64 " bytes left over)",
                       data_size, covered, (uint64_t)data_size - covered);

    ngq_status st = verify_checksum(f, data, data_size, err);
    if (st) return st;

    /* Alignment: move the data section to the (malloc-aligned) start of the
     * buffer when the header length leaves it misaligned; the header bytes
     * are no longer needed. Tensors whose offset is not a multiple of their
     * element size get an aligned copy of their own. */
    unsigned char *base = (unsigned char *)f->buffer + 8 + hlen;
    if (((uintptr_t)base % 8) != 0 && data_size > 0) {
        memmove(f->buffer, base, data_size);
        base = (unsigned char *)f->buffer;
    }
    for (size_t i = 0; i < n; i++) {
        st_entry *e = &f->entries[i];
        if (e->pub.nbytes == 0) continue;
        const unsigned char *p = base + e->begin;
        if ((uintptr_t)p % st_dtypes[e->pub.dtype].size != 0) {
            e->copy = malloc(e->pub.nbytes);
            if (!e->copy)
                return st_fail(err, NGQ_ERR_NOMEM, f->name, "out of memory aligning tensor '%s'", e->pub.name);
            memcpy(e->copy, p, e->pub.nbytes);
            p = e->copy;
        }
        e->pub.data = p;
    }
    return NGQ_OK;
}

static ngq_status finish_open(ngq_st_file *f, ngq_st_file **out, ngq_error *err)
{
    ngq_status st = parse_file(f, err);
    if (st) {
        ngq_st_close(f);
        return st;
    }
    *out = f;
    return NGQ_OK;
}

ngq_status ngq_st_open(ngq_st_file **out, const char *path, ngq_error *err)
{
    *out = NULL;
    ngq_st_file *f = calloc(1, sizeof *f);
    if (!f) return ngq_fail(err, NGQ_ERR_NOMEM, "%s: out of memory", path);
    f->name = ngq_strdup_printf("%s", path);
    if (!f->name) {
        free(f);
        return ngq_fail(err, NGQ_ERR_NOMEM, "%s: out of memory", path);
    }
    ngq_status st = ngq_read_file(path, &f->buffer, &f->size, err);
    if (st) {
        ngq_st_close(f);
        return st;
    }
    return finish_open(f, out, err);
}

ngq_status ngq_st_open_memory(ngq_st_file **out, const void *data, size_t size, const char *display_name,
                              ngq_error *err)
{
    *out = NULL;
    if (!display_name) display_name = "(memory)";
    if (!data && size > 0) return ngq_fail(err, NGQ_ERR_INTERNAL, "%s: buffer is NULL", display_name);
    if (size == SIZE_MAX) return ngq_fail(err, NGQ_ERR_NOMEM, "%s: buffer too large", display_name);
    ngq_st_file *f = calloc(1, sizeof *f);
    if (!f) return ngq_fail(err, NGQ_ERR_NOMEM, "%s: out of memory", display_name);
    f->name = ngq_strdup_printf("%s", display_name);
    f->buffer = malloc(size + 1);
    if (!f->name || !f->buffer) {
        ngq_st_close(f);
        return ngq_fail(err, NGQ_ERR_NOMEM, "%s: out of memory for %zu bytes", display_name, size);
    }
    if (size) memcpy(f->buffer, data, size);
    f->buffer[size] = '\0';
    f->size = size;
    return finish_open(f, out, err);
}

void ngq_st_close(ngq_st_file *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_entries; i++) free(f->entries[i].copy);
    free(f->entries);
    free(f->by_name);
    free(f->metadata_keys);
    free(f->metadata_values);
    cJSON_Delete(f->header);
    free(f->buffer);
    free(f->name);
    free(f);
}

size_t ngq_st_tensor_count(const ngq_st_file *f)
{
    return f->n_entries;
}

const ngq_st_tensor *ngq_st_tensor_at(const ngq_st_file *f, size_t index)
{
    return index < f->n_entries ? &f->entries[index].pub : NULL;
}

const ngq_st_tensor *ngq_st_find_tensor(const ngq_st_file *f, const char *name)
{
    size_t lo = 0, hi = f->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->by_name[mid]->pub.name, name);
        if (c == 0) return &f->by_name[mid]->pub;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

ngq_status ngq_st_require_tensor(const ngq_st_file *f, const char *name, ngq_st_dtype dtype, int ndim,
                                 const int64_t *shape, const ngq_st_tensor **out, ngq_error *err)
{
    *out = NULL;
    const ngq_st_tensor *t = ngq_st_find_tensor(f, name);
    if (!t) return st_fail(err, NGQ_ERR_FORMAT, f->name, "no tensor named '%s'", name);
    int same = t->dtype == dtype && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char want[256], got[256];
        int want_ndim = ndim < 0 ? 0 : ndim > NGQ_ST_MAX_DIMS ? NGQ_ST_MAX_DIMS : ndim;
        format_shape(want, sizeof want, want_ndim, shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        return st_fail(err, NGQ_ERR_FORMAT, f->name, "tensor '%s': expected %s %s, got %s %s", name,
                       ngq_st_dtype_name(dtype), want, ngq_st_dtype_name(t->dtype), got);
    }
    *out = t;
    return NGQ_OK;
}

size_t ngq_st_metadata_count(const ngq_st_file *f)
{
    return f->n_metadata;
}

void ngq_st_metadata_at(const ngq_st_file *f, size_t index, const char **key, const char **value)
{
    *key = index < f->n_metadata ? f->metadata_keys[index] : NULL;
    *value = index < f->n_metadata ? f->metadata_values[index] : NULL;
}

const char *ngq_st_metadata_value(const ngq_st_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_metadata; i++)
        if (strcmp(f->metadata_keys[i], key) == 0) return f->metadata_values[i];
    return NULL;
}
