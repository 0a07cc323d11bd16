/* test_safetensors.c: the safetensors writer and reader round-trip every
 * dtype (0-d and empty tensors, metadata with characters that need escaping),
 * agree with an independent Python reader, reject each kind of corrupted file
 * with the expected message, keep an existing file when a write fails, and
 * survive thousands of random mutations of a valid file (run under ASan). */
#define _XOPEN_SOURCE 700 /* nftw */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nanogptq/common.h"
#include "nanogptq/rng.h"
#include "nanogptq/safetensors.h"

/* ---- fixtures ------------------------------------------------------------ */

static char test_dir[256];

static char *test_path(const char *name)
{
    char *p = ngq_path_join(test_dir, name);
    assert_non_null(p);
    return p;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(test_dir, sizeof test_dir, "st_test_XXXXXX");
    return mkdtemp(test_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    return nftw(test_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The sample tensors: every dtype, a scalar, two empty tensors, and a U8
 * tensor of odd length so the tensors after it are misaligned in the file. */
static const float wte[12] = {-1, -0.5f, 0, 0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f, 4, 4.5f};
static const double scale = 3.25;
static const uint8_t codes[5] = {1, 2, 3, 250, 255};
static const uint16_t halfs[4] = {0x3C00, 0x4000, 0xB800, 0x3400};  /* 1, 2, -0.5, 0.25 */
static const uint16_t bfloats[3] = {0x3F80, 0x4020, 0xC040};        /* 1, 2.5, -3 */
static const int64_t longs[2] = {-5, INT64_C(1) << 40};
static const uint8_t flags[3] = {1, 0, 1};
static const uint16_t ushorts[2] = {65535, 7};
static const int16_t shorts[3] = {-32768, 5, 100};
static const uint32_t uints[2] = {4000000000u, 1};
static const uint64_t ulongs[1] = {UINT64_C(123456789012345)};
static const int8_t bytes_i8[4] = {-128, 127, 0, -1};
static const int32_t ints[4] = {-7, 8, 9, -10};

typedef struct {
    const char *name;
    ngq_st_dtype dtype;
    int ndim;
    int64_t shape[3];
    const void *data;
    size_t nbytes;
} sample_tensor;

static const sample_tensor samples[] = {
    {"wte", NGQ_ST_F32, 2, {4, 3}, wte, sizeof wte},
    {"scale", NGQ_ST_F64, 0, {0}, &scale, sizeof scale},
    {"empty", NGQ_ST_F32, 1, {0}, NULL, 0},
    {"codes", NGQ_ST_U8, 1, {5}, codes, sizeof codes},
    {"h.0.half", NGQ_ST_F16, 2, {2, 2}, halfs, sizeof halfs},
    {"bf", NGQ_ST_BF16, 1, {3}, bfloats, sizeof bfloats},
    {"longs", NGQ_ST_I64, 1, {2}, longs, sizeof longs},
    {"flags", NGQ_ST_BOOL, 1, {3}, flags, sizeof flags},
    {"ushorts", NGQ_ST_U16, 1, {2}, ushorts, sizeof ushorts},
    {"shorts", NGQ_ST_I16, 1, {3}, shorts, sizeof shorts},
    {"uints", NGQ_ST_U32, 1, {2}, uints, sizeof uints},
    {"ulongs", NGQ_ST_U64, 1, {1}, ulongs, sizeof ulongs},
    {"i8", NGQ_ST_I8, 1, {4}, bytes_i8, sizeof bytes_i8},
    {"ints \"quoted\"", NGQ_ST_I32, 2, {2, 2}, ints, sizeof ints},
    {"empty2d", NGQ_ST_I32, 3, {2, 0, 5}, NULL, 0},
};
#define N_SAMPLES (sizeof samples / sizeof samples[0])

static const char *meta_keys[] = {"format", "text"};
static const char *meta_values[] = {"nanogptq-test", "h\xc3\xa9llo \xe2\x9c\x93 \"q\" \\ \n\ttab"};

static void build_sample_writer(ngq_st_writer *w)
{
    ngq_error err;
    ngq_st_writer_init(w);
    for (size_t i = 0; i < N_SAMPLES; i++) {
        const sample_tensor *s = &samples[i];
        ngq_status st = ngq_st_writer_add_tensor(w, s->name, s->dtype, s->ndim, s->shape, s->data, s->nbytes, &err);
        if (st) fail_msg("add %s: %s", s->name, err.message);
    }
    for (size_t i = 0; i < 2; i++) assert_int_equal(ngq_st_writer_add_metadata(w, meta_keys[i], meta_values[i], &err), NGQ_OK);
}

static char *write_sample_file(const char *name)
{
    ngq_st_writer w;
    ngq_error err;
    build_sample_writer(&w);
    char *path = test_path(name);
    ngq_status st = ngq_st_writer_write(&w, path, &err);
    if (st) fail_msg("write: %s", err.message);
    ngq_st_writer_free(&w);
    return path;
}

static unsigned char *read_bytes(const char *path, size_t *size)
{
    char *data;
    ngq_error err;
    if (ngq_read_file(path, &data, size, &err)) fail_msg("%s", err.message);
    return (unsigned char *)data;
}

static unsigned char *sample_bytes(size_t *size)
{
    char *path = write_sample_file("sample_bytes.safetensors");
    unsigned char *b = read_bytes(path, size);
    free(path);
    return b;
}

/* A raw file: length field + header text exactly as given + data. */
static unsigned char *make_raw(const char *header, const void *data, size_t data_len, size_t *size)
{
    size_t hlen = strlen(header);
    *size = 8 + hlen + data_len;
    unsigned char *b = malloc(*size ? *size : 1);
    assert_non_null(b);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)hlen >> (8 * k));
    memcpy(b + 8, header, hlen);
    if (data_len) memcpy(b + 8 + hlen, data, data_len);
    return b;
}

static void set_length_field(unsigned char *b, uint64_t n)
{
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(n >> (8 * k));
}

static uint64_t get_length_field(const unsigned char *b)
{
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = (n << 8) | b[k];
    return n;
}

#define BAD_NAME "corrupt.safetensors"

static void expect_reject_impl(const void *buf, size_t len, const char *expected, int line)
{
    ngq_st_file *f = (ngq_st_file *)1;
    ngq_error err;
    ngq_error_clear(&err);
    ngq_status st = ngq_st_open_memory(&f, buf, len, BAD_NAME, &err);
    if (st == NGQ_OK) {
        ngq_st_close(f);
        fail_msg("line %d: accepted, expected an error containing \"%s\"", line, expected);
    }
    assert_null(f);
    if (st != NGQ_ERR_FORMAT) fail_msg("line %d: status %s (%s)", line, ngq_status_name(st), err.message);
    if (strncmp(err.message, BAD_NAME ": ", strlen(BAD_NAME) + 2) != 0)
        fail_msg("line %d: message does not name the file: %s", line, err.message);
    if (!strstr(err.message, expected))
        fail_msg("line %d: message \"%s\" lacks \"%s\"", line, err.message, expected);
}
#define expect_reject(buf, len, expected) expect_reject_impl((buf), (len), (expected), __LINE__)

static void expect_reject_header_impl(const char *header, size_t data_len, const char *expected, int line)
{
    unsigned char data[64] = {0};
    assert_true(data_len <= sizeof data);
    size_t size;
    unsigned char *b = make_raw(header, data, data_len, &size);
    expect_reject_impl(b, size, expected, line);
    free(b);
}
#define expect_reject_header(header, data_len, expected) \
    expect_reject_header_impl((header), (data_len), (expected), __LINE__)

static ngq_st_file *open_ok(const void *buf, size_t len)
{
    ngq_st_file *f;
    ngq_error err;
    if (ngq_st_open_memory(&f, buf, len, "ok.safetensors", &err)) fail_msg("%s", err.message);
    return f;
}

/* ---- decoding for the value checks ------------------------------------ */

static double half_to_double(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return (h >> 15) ? -v : v;
}

static double tensor_sum(ngq_st_dtype dtype, const void *data, size_t nbytes)
{
    size_t n = nbytes / ngq_st_dtype_size(dtype);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        switch (dtype) {
        case NGQ_ST_BOOL: sum += ((const uint8_t *)data)[i] != 0; break;
        case NGQ_ST_U8: sum += ((const uint8_t *)data)[i]; break;
        case NGQ_ST_I8: sum += ((const int8_t *)data)[i]; break;
        case NGQ_ST_U16: sum += ((const uint16_t *)data)[i]; break;
        case NGQ_ST_I16: sum += ((const int16_t *)data)[i]; break;
        case NGQ_ST_F16: sum += half_to_double(((const uint16_t *)data)[i]); break;
        case NGQ_ST_BF16: {
            uint32_t bits = (uint32_t)((const uint16_t *)data)[i] << 16;
            float f;
            memcpy(&f, &bits, sizeof f);
            sum += f;
            break;
        }
        case NGQ_ST_U32: sum += ((const uint32_t *)data)[i]; break;
        case NGQ_ST_I32: sum += ((const int32_t *)data)[i]; break;
        case NGQ_ST_F32: sum += ((const float *)data)[i]; break;
        case NGQ_ST_U64: sum += (double)((const uint64_t *)data)[i]; break;
        case NGQ_ST_I64: sum += (double)((const int64_t *)data)[i]; break;
        case NGQ_ST_F64: sum += ((const double *)data)[i]; break;
        default: fail_msg("bad dtype");
        }
    }
    return sum;
}

/* ---- round trip --------------------------------------------------------- */

static void check_sample_file(const ngq_st_file *f)
{
    assert_int_equal(ngq_st_tensor_count(f), N_SAMPLES);
    for (size_t i = 0; i < N_SAMPLES; i++) {
        const sample_tensor *s = &samples[i];
        const ngq_st_tensor *t = ngq_st_tensor_at(f, i);
        assert_non_null(t);
        assert_string_equal(t->name, s->name); /* file order is insertion order */
        assert_ptr_equal(ngq_st_find_tensor(f, s->name), t);
        assert_int_equal(t->dtype, s->dtype);
        assert_int_equal(t->ndim, s->ndim);
        for (int d = 0; d < s->ndim; d++) assert_int_equal(t->shape[d], s->shape[d]);
        assert_int_equal(t->nbytes, s->nbytes);
        if (s->nbytes == 0) {
            assert_null(t->data);
        } else {
            assert_non_null(t->data);
            assert_int_equal((uintptr_t)t->data % ngq_st_dtype_size(t->dtype), 0);
            assert_memory_equal(t->data, s->data, s->nbytes);
        }
    }
    assert_null(ngq_st_tensor_at(f, N_SAMPLES));
    assert_null(ngq_st_find_tensor(f, "missing"));
    assert_null(ngq_st_find_tensor(f, ""));

    assert_int_equal(ngq_st_metadata_count(f), 3);
    for (size_t i = 0; i < 2; i++) {
        const char *k, *v;
        ngq_st_metadata_at(f, i, &k, &v);
        assert_string_equal(k, meta_keys[i]);
        assert_string_equal(v, meta_values[i]);
        assert_string_equal(ngq_st_metadata_value(f, meta_keys[i]), meta_values[i]);
    }
    const char *sum = ngq_st_metadata_value(f, NGQ_ST_CHECKSUM_KEY);
    assert_non_null(sum);
    assert_int_equal(strlen(sum), strlen("fnv1a64:") + 16);
    assert_int_equal(strncmp(sum, "fnv1a64:", 8), 0);
    assert_null(ngq_st_metadata_value(f, "absent"));
}

static void test_round_trip(void **state)
{
    (void)state;
    char *path = write_sample_file("round_trip.safetensors");
    ngq_st_file *f;
    ngq_error err;
    if (ngq_st_open(&f, path, &err)) fail_msg("%s", err.message);
    check_sample_file(f);
    ngq_st_close(f);

    /* The data section starts at a multiple of 8, and the same bytes load
     * identically from memory. */
    size_t size;
    unsigned char *b = read_bytes(path, &size);
    assert_int_equal((8 + get_length_field(b)) % 8, 0);
    assert_int_equal(b[8], '{');
    f = open_ok(b, size);
    check_sample_file(f);
    ngq_st_close(f);
    free(b);

    /* Writing again gives the same bytes (deterministic), over the old file. */
    size_t size2;
    unsigned char *b1 = read_bytes(path, &size);
    free(write_sample_file("round_trip.safetensors"));
    unsigned char *b2 = read_bytes(path, &size2);
    assert_int_equal(size, size2);
    assert_memory_equal(b1, b2, size);
    free(b1);
    free(b2);
    free(path);
}

static void test_empty_writer_and_write_to(void **state)
{
    (void)state;
    ngq_st_writer w;
    ngq_error err;
    ngq_st_writer_init(&w);
    char *path = test_path("empty.safetensors");
    ngq_atomic_file af;
    assert_int_equal(ngq_atomic_open(&af, path, &err), NGQ_OK);
    assert_int_equal(ngq_st_writer_write_to(&w, &af, &err), NGQ_OK);
    assert_int_equal(ngq_atomic_commit(&af, &err), NGQ_OK);
    ngq_st_writer_free(&w);

    ngq_st_file *f;
    if (ngq_st_open(&f, path, &err)) fail_msg("%s", err.message);
    assert_int_equal(ngq_st_tensor_count(f), 0);
    assert_null(ngq_st_tensor_at(f, 0));
    assert_null(ngq_st_find_tensor(f, "x"));
    assert_int_equal(ngq_st_metadata_count(f), 1);
    /* FNV-1a of nothing is the offset basis. */
    assert_string_equal(ngq_st_metadata_value(f, NGQ_ST_CHECKSUM_KEY), "fnv1a64:cbf29ce484222325");
    ngq_st_close(f);
    free(path);
}

static void test_dtype_table(void **state)
{
    (void)state;
    for (int i = 0; i < NGQ_ST_DTYPE_COUNT; i++) {
        ngq_st_dtype d;
        assert_int_equal(ngq_st_dtype_parse(ngq_st_dtype_name((ngq_st_dtype)i), &d), 1);
        assert_int_equal(d, i);
        size_t s = ngq_st_dtype_size(d);
        assert_true(s == 1 || s == 2 || s == 4 || s == 8);
    }
    ngq_st_dtype d;
    assert_int_equal(ngq_st_dtype_parse("f32", &d), 0);
    assert_int_equal(ngq_st_dtype_parse("F8_E4M3", &d), 0);
    assert_int_equal(ngq_st_dtype_size(NGQ_ST_BF16), 2);
    assert_int_equal(ngq_st_dtype_size(NGQ_ST_DTYPE_COUNT), 0);
    assert_string_equal(ngq_st_dtype_name(NGQ_ST_DTYPE_COUNT), "?");
}

/* ---- independent Python reader ----------------------------------------- */

static void test_python_reader_agrees(void **state)
{
    (void)state;
    const char *root = getenv("NGQ_SOURCE_ROOT");
    if (!root || access("/usr/bin/python3", X_OK) != 0 ||
        system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
        skip();
    }
    char *path = write_sample_file("python.safetensors");
    char *cmd = ngq_strdup_printf("/usr/bin/python3 '%s/scripts/safetensors_check.py' '%s'", root, path);
    assert_non_null(cmd);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t got;
    while ((got = fread(out + len, 1, cap - 1 - len, p)) > 0) len += got;
    out[len] = '\0';
    int status = pclose(p);
    if (status != 0) fail_msg("%s exited with %d: %s", cmd, status, out);

    cJSON *json = cJSON_Parse(out);
    if (!json) fail_msg("python output is not JSON: %s", out);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(json, "checksum_ok")));
    const cJSON *start = cJSON_GetObjectItemCaseSensitive(json, "data_start");
    assert_true(cJSON_IsNumber(start));
    assert_int_equal((long)start->valuedouble % 8, 0);

    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(json, "metadata");
    assert_int_equal(cJSON_GetArraySize(meta), 3);
    for (size_t i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, meta_keys[i]);
        assert_true(cJSON_IsString(v));
        assert_string_equal(v->valuestring, meta_values[i]);
    }

    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(json, "tensors");
    assert_int_equal(cJSON_GetArraySize(tensors), N_SAMPLES);
    size_t i = 0;
    for (const cJSON *t = tensors->child; t; t = t->next, i++) {
        const sample_tensor *s = &samples[i];
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "name")->valuestring, s->name);
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, ngq_st_dtype_name(s->dtype));
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
        assert_int_equal(cJSON_GetArraySize(shape), s->ndim);
        for (int d = 0; d < s->ndim; d++)
            assert_int_equal((int64_t)cJSON_GetArrayItem(shape, d)->valuedouble, s->shape[d]);
        assert_int_equal((size_t)cJSON_GetObjectItemCaseSensitive(t, "nbytes")->valuedouble, s->nbytes);
        double want = s->nbytes ? tensor_sum(s->dtype, s->data, s->nbytes) : 0.0;
        double have = cJSON_GetObjectItemCaseSensitive(t, "sum")->valuedouble;
        if (fabs(want - have) > 1e-9 * (1 + fabs(want)))
            fail_msg("tensor %s: C sum %.17g, Python sum %.17g", s->name, want, have);
    }
    cJSON_Delete(json);
    free(out);
    free(cmd);
    free(path);
}

/* ---- rejected files ------------------------------------------------------ */

static void test_reject_truncated(void **state)
{
    (void)state;
    size_t size;
    unsigned char *b = sample_bytes(&size);
    size_t hlen = (size_t)get_length_field(b);
    expect_reject(b, 0, "file is 0 bytes, shorter than the 8-byte header length");
    expect_reject(b, 1, "shorter than the 8-byte header length");
    expect_reject(b, 7, "file is 7 bytes, shorter than the 8-byte header length");
    expect_reject(b, 8, "is larger than the file");
    expect_reject(b, 8 + hlen / 2, "is larger than the file");
    expect_reject(b, 8 + hlen - 1, "is larger than the file");
    expect_reject(b, 8 + hlen, "lie outside the data section (0 bytes)");
    expect_reject(b, size - 1, "lie outside the data section");
    expect_reject(b, size - 20, "lie outside the data section");

    /* From a path, the message names the path. */
    char *path = test_path("truncated.safetensors");
    ngq_error err;
    assert_int_equal(ngq_write_file_atomic(path, b, size - 3, &err), NGQ_OK);
    ngq_st_file *f;
    assert_int_equal(ngq_st_open(&f, path, &err), NGQ_ERR_FORMAT);
    assert_null(f);
    assert_int_equal(strncmp(err.message, path, strlen(path)), 0);
    assert_non_null(strstr(err.message, "outside the data section"));
    free(path);
    free(b);
}

static void test_reject_header_length(void **state)
{
    (void)state;
    size_t size;
    unsigned char *b = sample_bytes(&size);
    set_length_field(b, UINT64_MAX);
    expect_reject(b, size, "header length 18446744073709551615 exceeds the limit of 100000000 bytes");
    set_length_field(b, UINT64_C(1) << 63);
    expect_reject(b, size, "exceeds the limit of 100000000 bytes");
    set_length_field(b, 100000001);
    expect_reject(b, size, "header length 100000001 exceeds the limit");
    set_length_field(b, size - 7);
    expect_reject(b, size, "is larger than the file");
    free(b);
}

static void test_reject_bad_json(void **state)
{
    (void)state;
    expect_reject_header("", 0, "header is not valid JSON");
    expect_reject_header("{\"a\":", 0, "header is not valid JSON");
    expect_reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "not valid JSON");
    expect_reject_header("[1,2]", 0, "header is not a JSON object");
    expect_reject_header("\"text\"", 0, "header is not a JSON object");
    expect_reject_header("{} x", 0, "bytes other than whitespace after the JSON value");
    expect_reject_header("{}{}", 0, "bytes other than whitespace after the JSON value");
    expect_reject_header("{\"\xff\":1}", 0, "header is not valid UTF-8 (at byte 2");
    expect_reject_header("{\"\xc0\xaf\":1}", 0, "header is not valid UTF-8"); /* overlong '/' */
    expect_reject_header("{\"\xed\xa0\x80\":1}", 0, "header is not valid UTF-8"); /* surrogate */
    expect_reject_header("{\"\xe2\x9c\":1}", 0, "header is not valid UTF-8");     /* cut short */

    unsigned char nul[] = {3, 0, 0, 0, 0, 0, 0, 0, '{', 0, '}'};
    expect_reject(nul, sizeof nul, "header contains a NUL byte");

    /* Trailing whitespace padding is fine, and so is an empty header object. */
    size_t size;
    unsigned char *b = make_raw("{}   \t\n ", NULL, 0, &size);
    ngq_st_file *f = open_ok(b, size);
    assert_int_equal(ngq_st_tensor_count(f), 0);
    assert_int_equal(ngq_st_metadata_count(f), 0);
    ngq_st_close(f);
    free(b);
}

static void test_reject_bad_entries(void **state)
{
    (void)state;
    static const struct {
        const char *header;
        size_t data_len;
        const char *expected;
    } cases[] = {
        {"{\"a\":5}", 0, "tensor 'a': entry is not a JSON object"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-string \"dtype\""},
        {"{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-string \"dtype\""},
        {"{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': unknown dtype \"F128\""},
        {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': unknown dtype \"f32\""},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-array \"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing or non-array \"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'a': shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1.5],\"data_offsets\":[0,4]}}", 4,
         "tensor 'a': shape[1] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
         "tensor 'a': shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4,
         "tensor 'a': shape[0] is not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'a': shape has 9 dimensions, more than the supported 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a': \"data_offsets\" must be an array of two integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "\"data_offsets\" must be an array of two"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "\"data_offsets\" must be an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}", 4, "\"data_offsets\" must be an array"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 4,
         "tensor 'a': \"data_offsets\" values must be non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
         "\"data_offsets\" values must be non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
         "tensor 'a': data_offsets [4, 0] end before they begin"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
         "tensor 'a': shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8,
         "tensor 'a': shape [] of F32 needs 4 bytes but data_offsets [0, 8] span 8"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
         "tensor 'a': shape [4294967296, 4294967296, 4294967296] is too large"},
        {"{\"a\":{\"dtype\":\"F64\",\"shape\":[9007199254740992,9007199254740992],\"data_offsets\":[0,0]}}", 0,
         "is too large"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16,
         "tensor 'a': data_offsets [0, 400] lie outside the data section (16 bytes)"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, "tensors 'a' and 'b' overlap"},
        {"{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
         8, "tensors 'b' and 'a' overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
         12, "hole of 4 bytes between tensors 'a' and 'b'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
         "hole of 4 bytes at the start of the data section, before tensor 'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
         "data section is 8 bytes but the tensors cover 4"},
        {"{}", 4, "data section is 4 bytes but the tensors cover 0"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, "duplicate tensor name 'a'"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "\"__metadata__\" value for key 'k' is not a string"},
        {"{\"__metadata__\":{\"k\":\"v\",\"n\":null}}", 0, "\"__metadata__\" value for key 'n' is not a string"},
        {"{\"__metadata__\":\"x\"}", 0, "\"__metadata__\" is not a JSON object"},
        {"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}", 0, "duplicate \"__metadata__\" key 'k'"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "more than one \"__metadata__\""},
        {"{\"__metadata__\":{\"nanogptq.checksum\":\"crc32:1234\"}}", 0, "malformed checksum \"crc32:1234\""},
        {"{\"__metadata__\":{\"nanogptq.checksum\":\"fnv1a64:cbf29ce48422232g\"}}", 0, "malformed checksum"},
        {"{\"__metadata__\":{\"nanogptq.checksum\":\"fnv1a64:0000000000000000\"}}", 0,
         "checksum mismatch: file is corrupted"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_reject_header_impl(cases[i].header, cases[i].data_len, cases[i].expected, (int)(10000 + i));
}

static unsigned char *find_bytes(unsigned char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0) return hay + i;
    fail_msg("\"%s\" not found", needle);
    return NULL;
}

static void test_reject_flipped_bytes(void **state)
{
    (void)state;
    size_t size;
    unsigned char *orig = sample_bytes(&size);
    unsigned char *b = malloc(size);
    assert_non_null(b);
    size_t hlen = (size_t)get_length_field(orig);

    /* Any flipped bit in the data section breaks the checksum. */
    size_t positions[] = {8 + hlen, 8 + hlen + 1, 8 + hlen + 57, size - 1};
    for (size_t i = 0; i < 4; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            memcpy(b, orig, size);
            b[positions[i]] ^= (unsigned char)(1u << bit);
            expect_reject(b, size, "checksum mismatch: file is corrupted");
        }
    }

    /* Flips in the header: structure, dtype, offsets, shape, length field. */
    memcpy(b, orig, size);
    b[8] ^= 0x01; /* '{' -> 'z' */
    expect_reject(b, size, "header is not valid JSON");

    memcpy(b, orig, size);
    find_bytes(b, 8 + hlen, "\"wte\":{\"dtype\":\"F32\"")[17] ^= 0x02; /* F32 -> F12 */
    expect_reject(b, size, "tensor 'wte': unknown dtype \"F12\"");

    memcpy(b, orig, size);
    find_bytes(b, 8 + hlen, "\"data_offsets\":[0,48]")[19] ^= 0x01; /* 48 -> 49 */
    expect_reject(b, size, "tensor 'wte': shape [4, 3] of F32 needs 48 bytes but data_offsets [0, 49] span 49");

    memcpy(b, orig, size);
    find_bytes(b, 8 + hlen, "\"shape\":[4,3]")[9] ^= 0x01; /* [4,3] -> [5,3] */
    expect_reject(b, size, "tensor 'wte': shape [5, 3] of F32 needs 60 bytes");

    memcpy(b, orig, size);
    find_bytes(b, 8 + hlen, "\"data_offsets\":[48,56]")[16] ^= 0x01; /* 48 -> 58 */
    expect_reject(b, size, "tensor 'scale': data_offsets [58, 56] end before they begin");

    memcpy(b, orig, size);
    find_bytes(b, 8 + hlen, "\"format\":\"nanogptq-test\"")[9] = '1'; /* opening quote -> broken JSON */
    expect_reject(b, size, "header is not valid JSON");

    memcpy(b, orig, size);
    b[0] ^= 0x08; /* header length +- 8: cut the JSON short, or take in data bytes (wte[0] = -1.0f has zeros) */
    expect_reject(b, size, get_length_field(b) > hlen ? "header contains a NUL byte" : "not valid JSON");

    free(b);
    free(orig);
}

/* ---- reading details --------------------------------------------------- */

static void test_misaligned_external_file(void **state)
{
    (void)state;
    /* A file from elsewhere: unpadded header (data section at an odd offset)
     * and a F32 tensor right after a 3-byte U8 tensor; header order differs
     * from data order. */
    unsigned char data[11] = {7, 8, 9};
    const float values[2] = {1.5f, -2.25f};
    memcpy(data + 3, values, sizeof values);
    const char *header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[3,11]},"
                         "\"c\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},\"__metadata__\":{\"x\":\"yz\"}}";
    size_t size;
    unsigned char *b = make_raw(header, data, sizeof data, &size);
    assert_int_equal((8 + strlen(header)) % 2, 1);

    char *path = test_path("external.safetensors");
    ngq_error err;
    assert_int_equal(ngq_write_file_atomic(path, b, size, &err), NGQ_OK);
    for (int from_path = 0; from_path < 2; from_path++) {
        ngq_st_file *f;
        if (from_path) {
            if (ngq_st_open(&f, path, &err)) fail_msg("%s", err.message);
        } else {
            f = open_ok(b, size);
        }
        assert_int_equal(ngq_st_tensor_count(f), 2);
        assert_string_equal(ngq_st_tensor_at(f, 0)->name, "c"); /* data order */
        assert_string_equal(ngq_st_tensor_at(f, 1)->name, "w");
        const ngq_st_tensor *w;
        const int64_t shape[1] = {2};
        assert_int_equal(ngq_st_require_tensor(f, "w", NGQ_ST_F32, 1, shape, &w, &err), NGQ_OK);
        assert_int_equal((uintptr_t)w->data % sizeof(float), 0);
        const float *p = w->data;
        assert_true(p[0] == 1.5f && p[1] == -2.25f);
        assert_memory_equal(ngq_st_find_tensor(f, "c")->data, data, 3);
        assert_string_equal(ngq_st_metadata_value(f, "x"), "yz");
        assert_null(ngq_st_metadata_value(f, NGQ_ST_CHECKSUM_KEY));
        ngq_st_close(f);
    }
    free(path);
    free(b);
}

static void test_require_tensor(void **state)
{
    (void)state;
    size_t size;
    unsigned char *b = sample_bytes(&size);
    ngq_st_file *f = open_ok(b, size);
    ngq_error err;
    const ngq_st_tensor *t;
    const int64_t s43[2] = {4, 3}, s34[2] = {3, 4};
    assert_int_equal(ngq_st_require_tensor(f, "wte", NGQ_ST_F32, 2, s43, &t, &err), NGQ_OK);
    assert_ptr_equal(t, ngq_st_find_tensor(f, "wte"));
    assert_int_equal(ngq_st_require_tensor(f, "scale", NGQ_ST_F64, 0, NULL, &t, &err), NGQ_OK);
    assert_true(*(const double *)t->data == 3.25);

    assert_int_equal(ngq_st_require_tensor(f, "wte", NGQ_ST_F16, 2, s43, &t, &err), NGQ_ERR_FORMAT);
    assert_null(t);
    assert_string_equal(err.message, "ok.safetensors: tensor 'wte': expected F16 [4, 3], got F32 [4, 3]");
    assert_int_equal(ngq_st_require_tensor(f, "wte", NGQ_ST_F32, 2, s34, &t, &err), NGQ_ERR_FORMAT);
    assert_string_equal(err.message, "ok.safetensors: tensor 'wte': expected F32 [3, 4], got F32 [4, 3]");
    assert_int_equal(ngq_st_require_tensor(f, "wte", NGQ_ST_F32, 1, s43, &t, &err), NGQ_ERR_FORMAT);
    assert_string_equal(err.message, "ok.safetensors: tensor 'wte': expected F32 [4], got F32 [4, 3]");
    assert_int_equal(ngq_st_require_tensor(f, "nope", NGQ_ST_F32, 2, s43, &t, &err), NGQ_ERR_FORMAT);
    assert_string_equal(err.message, "ok.safetensors: no tensor named 'nope'");
    ngq_st_close(f);
    free(b);
}

static void test_open_missing_or_directory(void **state)
{
    (void)state;
    ngq_st_file *f;
    ngq_error err;
    char *path = test_path("does-not-exist.safetensors");
    assert_int_equal(ngq_st_open(&f, path, &err), NGQ_ERR_IO);
    assert_null(f);
    assert_non_null(strstr(err.message, path));
    assert_int_equal(ngq_st_open(&f, test_dir, &err), NGQ_ERR_IO);
    assert_non_null(strstr(err.message, "not a regular file"));
    free(path);
}

/* ---- writer ------------------------------------------------------------- */

static void expect_writer_error(ngq_status st, const ngq_error *err, const char *expected)
{
    assert_int_equal(st, NGQ_ERR_INTERNAL);
    if (!strstr(err->message, expected)) fail_msg("message \"%s\" lacks \"%s\"", err->message, expected);
}

static void test_writer_rejects(void **state)
{
    (void)state;
    ngq_st_writer w;
    ngq_error err;
    ngq_st_writer_init(&w);
    float buf[6] = {0};
    const int64_t s23[2] = {2, 3}, neg[2] = {2, -3}, big[1] = {INT64_C(1) << 54};
    const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(ngq_st_writer_add_tensor(&w, "a", NGQ_ST_F32, 2, s23, buf, sizeof buf, &err), NGQ_OK);
    expect_writer_error(ngq_st_writer_add_tensor(&w, "a", NGQ_ST_F32, 2, s23, buf, sizeof buf, &err), &err,
                        "duplicate tensor name 'a'");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "__metadata__", NGQ_ST_F32, 2, s23, buf, sizeof buf, &err),
                        &err, "tensor name \"__metadata__\" is reserved");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "b", NGQ_ST_F32, 2, s23, buf, 20, &err), &err,
                        "tensor 'b': shape [2, 3] of F32 needs 24 bytes but 20 were given");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "c", NGQ_ST_F16, 2, s23, buf, sizeof buf, &err), &err,
                        "tensor 'c': shape [2, 3] of F16 needs 12 bytes but 24 were given");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "d", NGQ_ST_F32, 2, neg, buf, sizeof buf, &err), &err,
                        "tensor 'd': dimension 1 is -3");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "e", NGQ_ST_U8, 1, big, buf, sizeof buf, &err), &err,
                        "tensor 'e': dimension 0 is 18014398509481984");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "f", NGQ_ST_U8, 9, nine, buf, 1, &err), &err,
                        "tensor 'f': 9 dimensions");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "g", NGQ_ST_DTYPE_COUNT, 2, s23, buf, sizeof buf, &err), &err,
                        "tensor 'g': unknown dtype");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "h", NGQ_ST_F32, 2, s23, NULL, sizeof buf, &err), &err,
                        "tensor 'h': data is NULL");
    expect_writer_error(ngq_st_writer_add_tensor(&w, "bad\xff", NGQ_ST_F32, 2, s23, buf, sizeof buf, &err), &err,
                        "is not valid UTF-8");
    assert_int_equal(ngq_st_writer_add_metadata(&w, "k", "v", &err), NGQ_OK);
    expect_writer_error(ngq_st_writer_add_metadata(&w, "k", "w", &err), &err, "duplicate metadata key 'k'");
    expect_writer_error(ngq_st_writer_add_metadata(&w, NGQ_ST_CHECKSUM_KEY, "x", &err), &err,
                        "metadata key 'nanogptq.checksum' is reserved");
    expect_writer_error(ngq_st_writer_add_metadata(&w, "u", "\xc3", &err), &err, "not valid UTF-8");

    /* The rejected calls left nothing behind: the file holds a and k only. */
    assert_int_equal(w.n_tensors, 1);
    assert_int_equal(w.n_metadata, 1);
    char *path = test_path("writer_rejects.safetensors");
    assert_int_equal(ngq_st_writer_write(&w, path, &err), NGQ_OK);
    ngq_st_writer_free(&w);
    ngq_st_file *f;
    if (ngq_st_open(&f, path, &err)) fail_msg("%s", err.message);
    assert_int_equal(ngq_st_tensor_count(f), 1);
    assert_int_equal(ngq_st_metadata_count(f), 2);
    assert_string_equal(ngq_st_metadata_value(f, "k"), "v");
    ngq_st_close(f);
    free(path);
}

static void test_failed_write_keeps_old_file(void **state)
{
    (void)state;
    char *path = write_sample_file("keep.safetensors");
    size_t size;
    unsigned char *before = read_bytes(path, &size);

    ngq_st_writer w;
    ngq_error err;
    ngq_st_writer_init(&w);
    const float x[2] = {1, 2};
    const int64_t s[1] = {2};
    assert_int_equal(ngq_st_writer_add_tensor(&w, "x", NGQ_ST_F32, 1, s, x, sizeof x, &err), NGQ_OK);

    /* The temporary file cannot be created: a directory sits at its path. */
    char *tmp = ngq_strdup_printf("%s.tmp.%ld", path, (long)getpid());
    assert_non_null(tmp);
    assert_int_equal(mkdir(tmp, 0700), 0);
    assert_int_equal(ngq_st_writer_write(&w, path, &err), NGQ_ERR_IO);
    assert_non_null(strstr(err.message, "cannot create"));
    assert_int_equal(rmdir(tmp), 0);
    size_t after_size;
    unsigned char *after = read_bytes(path, &after_size);
    assert_int_equal(after_size, size);
    assert_memory_equal(after, before, size);
    free(after);

    /* The rename fails: the target is a non-empty directory. Its contents
     * survive and no temporary file is left behind. */
    char *dir = test_path("target_dir");
    char *inside = ngq_path_join(dir, "keep.txt");
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(ngq_write_file_atomic(inside, "keep", 4, &err), NGQ_OK);
    assert_int_equal(ngq_st_writer_write(&w, dir, &err), NGQ_ERR_IO);
    assert_non_null(strstr(err.message, "cannot rename"));
    char *dir_tmp = ngq_strdup_printf("%s.tmp.%ld", dir, (long)getpid());
    assert_false(ngq_file_exists(dir_tmp));
    assert_true(ngq_file_exists(inside));

    /* A successful write does replace the file. */
    assert_int_equal(ngq_st_writer_write(&w, path, &err), NGQ_OK);
    ngq_st_file *f;
    if (ngq_st_open(&f, path, &err)) fail_msg("%s", err.message);
    assert_int_equal(ngq_st_tensor_count(f), 1);
    assert_string_equal(ngq_st_tensor_at(f, 0)->name, "x");
    ngq_st_close(f);

    ngq_st_writer_free(&w);
    free(dir_tmp);
    free(inside);
    free(dir);
    free(tmp);
    free(before);
    free(path);
}

/* ---- fuzzing ------------------------------------------------------------ */

/* Opens a mutated buffer; on success touches every byte of every tensor and
 * checks the tables are consistent. Returns 1 if the buffer was accepted. */
static int open_mutant(const unsigned char *buf, size_t len)
{
    ngq_st_file *f;
    ngq_error err;
    ngq_error_clear(&err);
    ngq_status st = ngq_st_open_memory(&f, buf, len, "mutant", &err);
    if (st != NGQ_OK) {
        assert_null(f);
        if (st != NGQ_ERR_FORMAT) fail_msg("status %s: %s", ngq_status_name(st), err.message);
        assert_int_equal(strncmp(err.message, "mutant: ", 8), 0);
        assert_true(strlen(err.message) > 8);
        return 0;
    }
    size_t n = ngq_st_tensor_count(f), total = 0;
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++) {
        const ngq_st_tensor *t = ngq_st_tensor_at(f, i);
        assert_ptr_equal(ngq_st_find_tensor(f, t->name), t);
        size_t count = 1;
        for (int d = 0; d < t->ndim; d++) count *= (size_t)t->shape[d];
        assert_int_equal(count * ngq_st_dtype_size(t->dtype), t->nbytes);
        if (t->nbytes) assert_int_equal((uintptr_t)t->data % ngq_st_dtype_size(t->dtype), 0);
        const unsigned char *p = t->data;
        for (size_t k = 0; k < t->nbytes; k++) acc += p[k];
        total += t->nbytes;
    }
    assert_true(total <= len);
    for (size_t i = 0; i < ngq_st_metadata_count(f); i++) {
        const char *k, *v;
        ngq_st_metadata_at(f, i, &k, &v);
        assert_ptr_equal(ngq_st_metadata_value(f, k), v);
        acc += (unsigned)strlen(v);
    }
    (void)acc;
    ngq_st_close(f);
    return 1;
}

static void test_fuzz_mutations(void **state)
{
    (void)state;
    size_t size;
    unsigned char *base = sample_bytes(&size);
    size_t hlen = (size_t)get_length_field(base);
    /* A second base without a checksum entry (same length), so that data
     * mutations are accepted and exercised too. */
    unsigned char *unchecked = malloc(size);
    assert_non_null(unchecked);
    memcpy(unchecked, base, size);
    memcpy(find_bytes(unchecked, 8 + hlen, NGQ_ST_CHECKSUM_KEY), "nanogptq.unchecked", strlen(NGQ_ST_CHECKSUM_KEY));

    ngq_rng rng;
    ngq_rng_seed(&rng, 20240611, 0);
    unsigned char *buf = malloc(size + 16);
    assert_non_null(buf);
    int accepted = 0, rejected = 0;
    const int iterations = 12000;
    for (int it = 0; it < iterations; it++) {
        const unsigned char *src = (it & 1) ? unchecked : base;
        memcpy(buf, src, size);
        size_t len = size;
        int kind = (int)ngq_rng_below(&rng, 7);
        int edits = 1 + (int)ngq_rng_below(&rng, 4);
        for (int e = 0; e < edits; e++) {
            switch (kind) {
            case 0: /* flip a bit anywhere */
                buf[ngq_rng_below(&rng, (uint32_t)len)] ^= (unsigned char)(1u << ngq_rng_below(&rng, 8));
                break;
            case 1: /* random byte in the header */
                buf[8 + ngq_rng_below(&rng, (uint32_t)hlen)] = (unsigned char)ngq_rng_u32(&rng);
                break;
            case 2: { /* replace a header byte by a JSON-significant one */
                static const char pool[] = "{}[]\":,-.0123456789eE \\u";
                buf[8 + ngq_rng_below(&rng, (uint32_t)hlen)] = (unsigned char)pool[ngq_rng_below(&rng, sizeof pool - 1)];
                break;
            }
            case 3: /* truncate */
                len = ngq_rng_below(&rng, (uint32_t)len + 1);
                break;
            case 4: /* perturb the length field */
                if (ngq_rng_below(&rng, 2)) set_length_field(buf, get_length_field(buf) + ngq_rng_below(&rng, 17) - 8);
                else buf[ngq_rng_below(&rng, 8)] = (unsigned char)ngq_rng_u32(&rng);
                break;
            case 5: /* change a digit in the header (shapes, offsets) */
                for (int tries = 0; tries < 64; tries++) {
                    size_t pos = 8 + ngq_rng_below(&rng, (uint32_t)hlen);
                    if (buf[pos] >= '0' && buf[pos] <= '9') {
                        buf[pos] = (unsigned char)('0' + ngq_rng_below(&rng, 10));
                        break;
                    }
                }
                break;
            default: /* flip a bit in the data section */
                if (len > 8 + hlen) buf[8 + hlen + ngq_rng_below(&rng, (uint32_t)(len - 8 - hlen))] ^= 0x10;
                break;
            }
            if (len < 9) break;
        }
        if (open_mutant(buf, len)) accepted++;
        else rejected++;
    }
    /* Both outcomes occur: data flips without a checksum are accepted. */
    assert_true(accepted > 100);
    assert_true(rejected > 1000);

    /* Pure random bytes behind a plausible length field, and every prefix
     * of the base file. */
    for (int it = 0; it < 500; it++) {
        size_t n = 8 + ngq_rng_below(&rng, 200);
        for (size_t k = 0; k < n; k++) buf[k] = (unsigned char)ngq_rng_u32(&rng);
        set_length_field(buf, ngq_rng_below(&rng, (uint32_t)n));
        if (it % 2) buf[8] = '{';
        assert_int_equal(open_mutant(buf, n), 0);
    }
    for (size_t n = 0; n < size; n++) assert_int_equal(open_mutant(base, n), 0);
    assert_int_equal(open_mutant(base, size), 1);

    free(buf);
    free(unchecked);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_table),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_writer_and_write_to),
        cmocka_unit_test(test_python_reader_agrees),
        cmocka_unit_test(test_reject_truncated),
        cmocka_unit_test(test_reject_header_length),
        cmocka_unit_test(test_reject_bad_json),
        cmocka_unit_test(test_reject_bad_entries),
        cmocka_unit_test(test_reject_flipped_bytes),
        cmocka_unit_test(test_misaligned_external_file),
        cmocka_unit_test(test_require_tensor),
        cmocka_unit_test(test_open_missing_or_directory),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_failed_write_keeps_old_file),
        cmocka_unit_test(test_fuzz_mutations),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
