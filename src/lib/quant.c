/* quant.c: quantization grids (min/max and MSE ranges, int8_compat), RTN
 * rounding, fp16 scale conversion, bit packing through a table of formats, and
 * the packed tensor with its sizes, parts and validation. The conventions are
 * documented in quant.h. It does not do matmul (qmatmul.c) or GPTQ (gptq.c),
 * and it does not read or write files. */
#include "nanogptq/quant.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- grids ------------------------------------------------------------- */

void ngq_qgrid_default(ngq_qgrid *grid, int bits)
{
    memset(grid, 0, sizeof *grid);
    grid->bits = bits;
    grid->symmetric = 0;
    grid->granularity = NGQ_GRAN_CHANNEL;
    grid->group_size = 0;
    grid->range = NGQ_RANGE_MINMAX;
    grid->int8_compat = 0;
    grid->scale_dtype = NGQ_SCALE_F32;
}

void ngq_qgrid_int8_compat(ngq_qgrid *grid)
{
    ngq_qgrid_default(grid, 8);
    grid->symmetric = 1;
    grid->int8_compat = 1;
}

static const char *granularity_name(ngq_granularity g)
{
    switch (g) {
    case NGQ_GRAN_TENSOR: return "tensor";
    case NGQ_GRAN_CHANNEL: return "channel";
    case NGQ_GRAN_GROUP: return "group";
    }
    return "?";
}

ngq_status ngq_qgrid_validate(const ngq_qgrid *grid, int64_t cols, ngq_error *err)
{
    if (!grid) return ngq_fail(err, NGQ_ERR_INTERNAL, "quantization grid is NULL");
    if (grid->bits < NGQ_QUANT_MIN_BITS || grid->bits > NGQ_QUANT_MAX_BITS)
        return ngq_fail(err, NGQ_ERR_CONFIG, "quantization grid: bits = %d, expected %d..%d", grid->bits,
                        NGQ_QUANT_MIN_BITS, NGQ_QUANT_MAX_BITS);
    if (grid->symmetric != 0 && grid->symmetric != 1)
        return ngq_fail(err, NGQ_ERR_CONFIG, "quantization grid: symmetric = %d, expected 0 or 1",
                        grid->symmetric);
    if (grid->int8_compat != 0 && grid->int8_compat != 1)
        return ngq_fail(err, NGQ_ERR_CONFIG, "quantization grid: int8_compat = %d, expected 0 or 1",
                        grid->int8_compat);
    if (grid->granularity != NGQ_GRAN_TENSOR && grid->granularity != NGQ_GRAN_CHANNEL &&
        grid->granularity != NGQ_GRAN_GROUP)
        return ngq_fail(err, NGQ_ERR_CONFIG, "quantization grid: unknown granularity %d",
                        (int)grid->granularity);
    if (grid->range != NGQ_RANGE_MINMAX && grid->range != NGQ_RANGE_MSE)
        return ngq_fail(err, NGQ_ERR_CONFIG, "quantization grid: unknown range method %d", (int)grid->range);
    if (grid->scale_dtype != NGQ_SCALE_F32 && grid->scale_dtype != NGQ_SCALE_F16)
        return ngq_fail(err, NGQ_ERR_CONFIG, "quantization grid: unknown scale dtype %d",
                        (int)grid->scale_dtype);
    if (grid->granularity == NGQ_GRAN_GROUP) {
        if (grid->group_size < 1)
            return ngq_fail(err, NGQ_ERR_CONFIG,
                            "quantization grid: per-group granularity needs group_size >= 1, got %lld",
                            (long long)grid->group_size);
    } else if (grid->group_size != 0) {
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "quantization grid: group_size = %lld given with per-%s granularity "
                        "(set granularity to group, or group_size to 0)",
                        (long long)grid->group_size, granularity_name(grid->granularity));
    }
    if (grid->int8_compat) {
        if (grid->bits != 8 || !grid->symmetric || grid->granularity != NGQ_GRAN_CHANNEL ||
            grid->range != NGQ_RANGE_MINMAX || grid->scale_dtype != NGQ_SCALE_F32)
            return ngq_fail(err, NGQ_ERR_CONFIG,
                            "quantization grid: int8_compat requires bits 8, symmetric, per-channel, "
                            "min/max range and f32 scales (got bits %d, %s, per-%s, %s, %s)",
                            grid->bits, grid->symmetric ? "symmetric" : "asymmetric",
                            granularity_name(grid->granularity),
                            grid->range == NGQ_RANGE_MSE ? "mse" : "minmax",
                            grid->scale_dtype == NGQ_SCALE_F16 ? "f16" : "f32");
    }
    if (cols > 0 && grid->granularity == NGQ_GRAN_GROUP && cols % grid->group_size != 0)
        return ngq_fail(err, NGQ_ERR_CONFIG,
                        "quantization grid: %lld columns are not divisible by group_size %lld",
                        (long long)cols, (long long)grid->group_size);
    return NGQ_OK;
}

int ngq_qgrid_maxq(const ngq_qgrid *grid)
{
    if (grid->int8_compat) return NGQ_QUANT_INT8_COMPAT_MAXQ;
    return (1 << grid->bits) - 1;
}

int64_t ngq_qgrid_groups_per_row(const ngq_qgrid *grid, int64_t cols)
{
    if (grid->granularity == NGQ_GRAN_GROUP && grid->group_size > 0) return cols / grid->group_size;
    return 1;
}

ngq_status ngq_qgrid_format(const ngq_qgrid *grid, char *buf, size_t size, ngq_error *err)
{
    ngq_status st = ngq_qgrid_validate(grid, 0, err);
    if (st) return st;
    int n = snprintf(buf, size, "bits=%d,sym=%d,gran=%s,group_size=%lld,range=%s,int8_compat=%d,scale=%s",
                     grid->bits, grid->symmetric, granularity_name(grid->granularity),
                     (long long)grid->group_size, grid->range == NGQ_RANGE_MSE ? "mse" : "minmax",
                     grid->int8_compat, grid->scale_dtype == NGQ_SCALE_F16 ? "f16" : "f32");
    if (n < 0 || (size_t)n >= size)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "quantization grid text needs %d bytes, buffer has %zu", n, size);
    return NGQ_OK;
}

static int parse_int64(const char *s, int64_t *out)
{
    if (!*s) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

ngq_status ngq_qgrid_parse(const char *text, ngq_qgrid *grid, ngq_error *err)
{
    static const char *const keys[] = {"bits", "sym", "gran", "group_size", "range", "int8_compat", "scale"};
    enum { NKEYS = sizeof keys / sizeof keys[0] };
    int seen[NKEYS] = {0};
    ngq_qgrid g;
    memset(&g, 0, sizeof g);
    char buf[256];
    size_t len = strlen(text);
    if (len >= sizeof buf)
        return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid text is %zu bytes long, at most %zu expected",
                        len, sizeof buf - 1);
    memcpy(buf, text, len + 1);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': item '%s' is not key=value", text, item);
        *eq = '\0';
        const char *key = item, *val = eq + 1;
        int k = 0;
        while (k < NKEYS && strcmp(keys[k], key) != 0) k++;
        if (k == NKEYS) return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': unknown key '%s'", text, key);
        if (seen[k]) return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': key '%s' given twice", text, key);
        seen[k] = 1;
        int64_t v = 0;
        switch (k) {
        case 0:
        case 1:
        case 3:
        case 5:
            if (!parse_int64(val, &v) || v < 0 || v > INT32_MAX)
                return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': %s = '%s' is not a non-negative integer",
                                text, key, val);
            if (k == 0) g.bits = (int)v;
            if (k == 1) g.symmetric = (int)v;
            if (k == 3) g.group_size = v;
            if (k == 5) g.int8_compat = (int)v;
            break;
        case 2:
            if (strcmp(val, "tensor") == 0) g.granularity = NGQ_GRAN_TENSOR;
            else if (strcmp(val, "channel") == 0) g.granularity = NGQ_GRAN_CHANNEL;
            else if (strcmp(val, "group") == 0) g.granularity = NGQ_GRAN_GROUP;
            else return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': gran = '%s', expected tensor, channel or group", text, val);
            break;
        case 4:
            if (strcmp(val, "minmax") == 0) g.range = NGQ_RANGE_MINMAX;
            else if (strcmp(val, "mse") == 0) g.range = NGQ_RANGE_MSE;
            else return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': range = '%s', expected minmax or mse", text, val);
            break;
        case 6:
            if (strcmp(val, "f32") == 0) g.scale_dtype = NGQ_SCALE_F32;
            else if (strcmp(val, "f16") == 0) g.scale_dtype = NGQ_SCALE_F16;
            else return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': scale = '%s', expected f32 or f16", text, val);
            break;
        }
    }
    for (int k = 0; k < NKEYS; k++)
        if (!seen[k]) return ngq_fail(err, NGQ_ERR_FORMAT, "quantization grid '%s': key '%s' is missing", text, keys[k]);
    ngq_status st = ngq_qgrid_validate(&g, 0, err);
    if (st) {
        ngq_error_prefix(err, "quantization grid '%s'", text);
        if (err) err->status = NGQ_ERR_FORMAT;
        return NGQ_ERR_FORMAT;
    }
    *grid = g;
    return NGQ_OK;
}

/* ---- fp16 ---------------------------------------------------------------- */

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t ngq_f32_to_f16(float x)
{
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t ax = u & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* Inf or NaN (NaN stays quiet NaN) */
        return (uint16_t)(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: a half subnormal or zero */
        if (ax <= 0x33000000u) return sign; /* <= 2^-25 (a tie with 0 goes to 0) */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* value / 2^-24 = m * 2^(e - 126) */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = (ax >> 13) - (112u << 10); /* rebias the exponent 127 -> 15 */
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

float ngq_f16_to_f32(uint16_t hv)
{
    uint32_t sign = (uint32_t)(hv & 0x8000u) << 16;
    uint32_t e = (hv >> 10) & 0x1fu;
    uint32_t m = hv & 0x3ffu;
    if (e == 0x1fu) return f32_from_bits(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0) return f32_from_bits(sign);
        /* subnormal: m * 2^-24, exact in float */
        float v = (float)m * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

/* ---- parameters ------------------------------------------------------------- */

uint8_t ngq_quant_code(float x, ngq_qparams params, int maxq)
{
    float c = rintf(x / params.scale) + params.zero;
    if (c < 0.0f) c = 0.0f;
    if (c > (float)maxq) c = (float)maxq;
    return (uint8_t)c;
}

float ngq_quant_value(uint8_t code, ngq_qparams params)
{
    return params.scale * ((float)code - params.zero);
}

/* The scale as stored: rounded to fp16 when the grid asks. Returns 0 when the
 * stored scale would be zero or infinite. */
static int stored_scale(const ngq_qgrid *grid, float scale, float *out)
{
    if (grid->scale_dtype == NGQ_SCALE_F16) scale = ngq_f16_to_f32(ngq_f32_to_f16(scale));
    if (!(scale > 0.0f) || isinf(scale)) return 0;
    *out = scale;
    return 1;
}

static float asym_zero(float xmin, float scale, int maxq)
{
    float z = rintf(-xmin / scale);
    if (z < 0.0f) z = 0.0f;
    if (z > (float)maxq) z = (float)maxq;
    return z;
}

ngq_status ngq_quant_find_params(const ngq_qgrid *grid, const float *x, int64_t n, ngq_qparams *params,
                                 ngq_error *err)
{
    if (n <= 0) return ngq_fail(err, NGQ_ERR_INTERNAL, "find_params on %lld values", (long long)n);
    const int maxq = ngq_qgrid_maxq(grid);
    float xmin = 0.0f, xmax = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v))
            return ngq_fail(err, NGQ_ERR_NUMERIC, "cannot quantize: value %lld of the group is %g", (long long)i,
                            (double)v);
        if (v < xmin) xmin = v;
        if (v > xmax) xmax = v;
    }
    if (grid->int8_compat) {
        float absmax = fmaxf(-xmin, xmax);
        if (absmax == 0.0f) absmax = 1.0f;
        params->scale = absmax / 127.0f;
        params->zero = (float)NGQ_QUANT_INT8_COMPAT_ZERO;
        return NGQ_OK;
    }
    if (grid->symmetric) {
        xmax = fmaxf(-xmin, xmax);
        xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    const float sym_zero = (float)(maxq + 1) / 2.0f;
    float scale;
    if (!stored_scale(grid, (xmax - xmin) / (float)maxq, &scale))
        return ngq_fail(err, NGQ_ERR_NUMERIC,
                        "scale %g (range %g..%g) is not representable as a positive finite fp16 number",
                        (double)((xmax - xmin) / (float)maxq), (double)xmin, (double)xmax);
    params->scale = scale;
    params->zero = grid->symmetric ? sym_zero : asym_zero(xmin, scale, maxq);
    if (grid->range != NGQ_RANGE_MSE) return NGQ_OK;

    double best = INFINITY;
    for (int i = 0; i < NGQ_QUANT_MSE_CANDIDATES; i++) {
        float p = (float)(1.0 - (double)i / NGQ_QUANT_MSE_GRID);
        float xmin1 = p * xmin, xmax1 = p * xmax;
        ngq_qparams cand;
        if (!stored_scale(grid, (xmax1 - xmin1) / (float)maxq, &cand.scale)) continue;
        cand.zero = grid->symmetric ? sym_zero : asym_zero(xmin1, cand.scale, maxq);
        double e = 0.0;
        for (int64_t k = 0; k < n; k++) {
            float d = ngq_quant_value(ngq_quant_code(x[k], cand, maxq), cand) - x[k];
            e += pow(fabs((double)d), NGQ_QUANT_MSE_NORM);
        }
        if (e < best) {
            best = e;
            *params = cand;
        }
    }
    return NGQ_OK;
}

/* ---- the format table ------------------------------------------------------- */

static inline void pack_block_bits(int bits, const uint8_t *codes, uint8_t *out)
{
    uint64_t v = 0;
    for (int k = 0; k < NGQ_QBLOCK_CODES; k++) v |= (uint64_t)codes[k] << (k * bits);
    for (int b = 0; b < bits; b++) out[b] = (uint8_t)(v >> (8 * b));
}

static inline void unpack_block_bits(int bits, const uint8_t *in, uint8_t *codes)
{
    uint64_t v = 0;
    for (int b = 0; b < bits; b++) v |= (uint64_t)in[b] << (8 * b);
    const uint64_t mask = (1u << bits) - 1u;
    for (int k = 0; k < NGQ_QBLOCK_CODES; k++) codes[k] = (uint8_t)((v >> (k * bits)) & mask);
}

#define NGQ_DEFINE_BLOCK_FUNCTIONS(B)                                                                   \
    _Static_assert((B) * NGQ_QBLOCK_CODES % 8 == 0 && (B) * NGQ_QBLOCK_CODES / 8 == (B),              \
                   "a block of 8 codes of " #B " bits must fill exactly " #B " bytes");                \
    static void pack_block_q##B(const uint8_t *codes, uint8_t *out) { pack_block_bits(B, codes, out); } \
    static void unpack_block_q##B(const uint8_t *in, uint8_t *codes) { unpack_block_bits(B, in, codes); }

NGQ_DEFINE_BLOCK_FUNCTIONS(2)
NGQ_DEFINE_BLOCK_FUNCTIONS(3)
NGQ_DEFINE_BLOCK_FUNCTIONS(4)
NGQ_DEFINE_BLOCK_FUNCTIONS(5)
NGQ_DEFINE_BLOCK_FUNCTIONS(6)
NGQ_DEFINE_BLOCK_FUNCTIONS(7)
NGQ_DEFINE_BLOCK_FUNCTIONS(8)

#define NGQ_FORMAT_ROW(B) {"q" #B, B, NGQ_QBLOCK_CODES, B, pack_block_q##B, unpack_block_q##B}

static const ngq_qformat format_table[] = {
    NGQ_FORMAT_ROW(2), NGQ_FORMAT_ROW(3), NGQ_FORMAT_ROW(4), NGQ_FORMAT_ROW(5),
    NGQ_FORMAT_ROW(6), NGQ_FORMAT_ROW(7), NGQ_FORMAT_ROW(8),
};
_Static_assert(sizeof format_table / sizeof format_table[0] == NGQ_QUANT_MAX_BITS - NGQ_QUANT_MIN_BITS + 1,
               "one format per bit width");
/* Blocks of the widths that the fast matmul kernels read directly. */
_Static_assert(NGQ_QBLOCK_CODES * 8 / 8 == 8, "8-bit: one code per byte");
_Static_assert(NGQ_QBLOCK_CODES * 4 / 8 == 4, "4-bit: two codes per byte");
_Static_assert(NGQ_QBLOCK_CODES * 3 / 8 == 3, "3-bit: 8 codes in 3 bytes");

const ngq_qformat *ngq_qformat_for_bits(int bits)
{
    if (bits < NGQ_QUANT_MIN_BITS || bits > NGQ_QUANT_MAX_BITS) return NULL;
    return &format_table[bits - NGQ_QUANT_MIN_BITS];
}

int64_t ngq_quant_packed_bytes(int bits, int64_t n)
{
    return (n * bits + 7) / 8;
}

ngq_status ngq_quant_pack_codes(int bits, const uint8_t *codes, int64_t n, uint8_t *out, ngq_error *err)
{
    const ngq_qformat *f = ngq_qformat_for_bits(bits);
    if (!f) return ngq_fail(err, NGQ_ERR_INTERNAL, "pack: no format for %d bits", bits);
    uint8_t over = 0;
    for (int64_t i = 0; i < n; i++) over |= (uint8_t)(codes[i] >> bits);
    if (bits < 8 && over) {
        for (int64_t i = 0; i < n; i++)
            if (codes[i] >> bits)
                return ngq_fail(err, NGQ_ERR_INTERNAL, "pack: code %u at %lld does not fit in %d bits",
                                (unsigned)codes[i], (long long)i, bits);
    }
    int64_t full = n / NGQ_QBLOCK_CODES;
    for (int64_t b = 0; b < full; b++) f->pack_block(codes + b * NGQ_QBLOCK_CODES, out + b * f->block_bytes);
    int64_t tail = n - full * NGQ_QBLOCK_CODES;
    if (tail) {
        uint8_t block[NGQ_QBLOCK_CODES] = {0}, packed[8];
        memcpy(block, codes + full * NGQ_QBLOCK_CODES, (size_t)tail);
        f->pack_block(block, packed);
        memcpy(out + full * f->block_bytes, packed, (size_t)ngq_quant_packed_bytes(bits, tail));
    }
    return NGQ_OK;
}

void ngq_quant_unpack_codes(int bits, const uint8_t *in, int64_t n, uint8_t *codes)
{
    const ngq_qformat *f = ngq_qformat_for_bits(bits);
    if (!f) return;
    int64_t full = n / NGQ_QBLOCK_CODES;
    for (int64_t b = 0; b < full; b++) f->unpack_block(in + b * f->block_bytes, codes + b * NGQ_QBLOCK_CODES);
    int64_t tail = n - full * NGQ_QBLOCK_CODES;
    if (tail) {
        uint8_t packed[8] = {0}, block[NGQ_QBLOCK_CODES];
        memcpy(packed, in + full * f->block_bytes, (size_t)ngq_quant_packed_bytes(bits, tail));
        f->unpack_block(packed, block);
        memcpy(codes + full * NGQ_QBLOCK_CODES, block, (size_t)tail);
    }
}

/* ---- packed tensors ------------------------------------------------------- */

static int implicit_zero(const ngq_qgrid *grid, float *zero)
{
    if (grid->int8_compat) {
        *zero = (float)NGQ_QUANT_INT8_COMPAT_ZERO;
        return 1;
    }
    if (grid->symmetric) {
        *zero = (float)(ngq_qgrid_maxq(grid) + 1) / 2.0f;
        return 1;
    }
    return 0;
}

static int64_t nparams_for(const ngq_qgrid *grid, int64_t rows, int64_t cols)
{
    if (grid->granularity == NGQ_GRAN_TENSOR) return 1;
    return rows * ngq_qgrid_groups_per_row(grid, cols);
}

ngq_status ngq_qtensor_init(ngq_qtensor *q, int64_t rows, int64_t cols, const ngq_qgrid *grid, int with_g_idx,
                            ngq_error *err)
{
    memset(q, 0, sizeof *q);
    ngq_status st = ngq_qgrid_validate(grid, cols, err);
    if (st) return st;
    if (rows <= 0 || cols <= 0 || rows > (INT64_C(1) << 31) || cols > (INT64_C(1) << 31))
        return ngq_fail(err, NGQ_ERR_INTERNAL, "qtensor shape [%lld, %lld] is out of range", (long long)rows,
                        (long long)cols);
    if (with_g_idx && grid->granularity != NGQ_GRAN_GROUP)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "a g_idx needs a per-group grid");
    q->rows = rows;
    q->cols = cols;
    q->grid = *grid;
    q->groups_per_row = ngq_qgrid_groups_per_row(grid, cols);
    q->nparams = nparams_for(grid, rows, cols);
    q->row_bytes = ngq_quant_packed_bytes(grid->bits, cols);
    q->codes = calloc((size_t)(rows * q->row_bytes), 1);
    if (grid->scale_dtype == NGQ_SCALE_F16) q->scales_f16 = calloc((size_t)q->nparams, sizeof *q->scales_f16);
    else q->scales_f32 = calloc((size_t)q->nparams, sizeof *q->scales_f32);
    int need_zeros = !grid->symmetric && !grid->int8_compat;
    if (need_zeros) q->zeros = calloc((size_t)q->nparams, 1);
    if (with_g_idx) q->g_idx = calloc((size_t)cols, sizeof *q->g_idx);
    if (!q->codes || (!q->scales_f16 && !q->scales_f32) || (need_zeros && !q->zeros) || (with_g_idx && !q->g_idx)) {
        ngq_qtensor_free(q);
        return ngq_fail(err, NGQ_ERR_NOMEM, "cannot allocate a qtensor of [%lld, %lld]", (long long)rows,
                        (long long)cols);
    }
    if (with_g_idx)
        for (int64_t c = 0; c < cols; c++) q->g_idx[c] = (int32_t)(c / grid->group_size);
    return NGQ_OK;
}

void ngq_qtensor_free(ngq_qtensor *q)
{
    if (!q) return;
    free(q->codes);
    free(q->scales_f32);
    free(q->scales_f16);
    free(q->zeros);
    free(q->g_idx);
    memset(q, 0, sizeof *q);
}

int64_t ngq_qtensor_param_index(const ngq_qtensor *q, int64_t row, int64_t group)
{
    if (q->grid.granularity == NGQ_GRAN_TENSOR) return 0;
    return row * q->groups_per_row + group;
}

ngq_qparams ngq_qtensor_get_params(const ngq_qtensor *q, int64_t row, int64_t group)
{
    int64_t i = ngq_qtensor_param_index(q, row, group);
    ngq_qparams p;
    p.scale = q->scales_f16 ? ngq_f16_to_f32(q->scales_f16[i]) : q->scales_f32[i];
    if (!implicit_zero(&q->grid, &p.zero)) p.zero = (float)q->zeros[i];
    return p;
}

ngq_status ngq_qtensor_set_params(ngq_qtensor *q, int64_t row, int64_t group, ngq_qparams params, ngq_error *err)
{
    if (row < 0 || row >= q->rows || group < 0 || group >= q->groups_per_row)
        return ngq_fail(err, NGQ_ERR_INTERNAL, "set_params: row %lld group %lld out of range", (long long)row,
                        (long long)group);
    int64_t i = ngq_qtensor_param_index(q, row, group);
    if (!(params.scale > 0.0f) || isinf(params.scale))
        return ngq_fail(err, NGQ_ERR_INTERNAL, "set_params: scale %g is not positive and finite", (double)params.scale);
    if (q->scales_f16) {
        uint16_t h = ngq_f32_to_f16(params.scale);
        if (ngq_f16_to_f32(h) != params.scale)
            return ngq_fail(err, NGQ_ERR_INTERNAL, "set_params: scale %.9g is not an fp16 value", (double)params.scale);
        q->scales_f16[i] = h;
    } else {
        q->scales_f32[i] = params.scale;
    }
    float zero;
    if (implicit_zero(&q->grid, &zero)) {
        if (params.zero != zero)
            return ngq_fail(err, NGQ_ERR_INTERNAL, "set_params: zero %g differs from the grid's implicit zero %g",
                            (double)params.zero, (double)zero);
    } else {
        int maxq = ngq_qgrid_maxq(&q->grid);
        if (!(params.zero >= 0.0f && params.zero <= (float)maxq) || params.zero != rintf(params.zero))
            return ngq_fail(err, NGQ_ERR_INTERNAL, "set_params: zero %g is not an integer in 0..%d",
                            (double)params.zero, maxq);
        q->zeros[i] = (uint8_t)params.zero;
    }
    return NGQ_OK;
}

int64_t ngq_qtensor_group_of(const ngq_qtensor *q, int64_t col)
{
    if (q->g_idx) return q->g_idx[col];
    if (q->grid.granularity == NGQ_GRAN_GROUP) return col / q->grid.group_size;
    return 0;
}

ngq_status ngq_qtensor_set_row_codes(ngq_qtensor *q, int64_t row, const uint8_t *codes, ngq_error *err)
{
    int maxq = ngq_qgrid_maxq(&q->grid);
    for (int64_t c = 0; c < q->cols; c++)
        if (codes[c] > maxq)
            return ngq_fail(err, NGQ_ERR_INTERNAL, "row %lld column %lld: code %u exceeds maxq %d", (long long)row,
                            (long long)c, (unsigned)codes[c], maxq);
    return ngq_quant_pack_codes(q->grid.bits, codes, q->cols, q->codes + row * q->row_bytes, err);
}

void ngq_qtensor_get_row_codes(const ngq_qtensor *q, int64_t row, uint8_t *codes)
{
    ngq_quant_unpack_codes(q->grid.bits, q->codes + row * q->row_bytes, q->cols, codes);
}

/* Codes are unpacked in chunks of this many (a multiple of the block). */
#define DEQUANT_CHUNK 256
_Static_assert(DEQUANT_CHUNK % NGQ_QBLOCK_CODES == 0, "chunks start on block boundaries");

void ngq_qtensor_dequantize_row(const ngq_qtensor *q, int64_t row, float *out)
{
    const int bits = q->grid.bits;
    const uint8_t *packed = q->codes + row * q->row_bytes;
    const int64_t gsize = q->grid.granularity == NGQ_GRAN_GROUP ? q->grid.group_size : q->cols;
    uint8_t buf[DEQUANT_CHUNK];
    int64_t group = -1, group_end = 0;
    ngq_qparams p = {1.0f, 0.0f};
    for (int64_t c0 = 0; c0 < q->cols; c0 += DEQUANT_CHUNK) {
        int64_t n = q->cols - c0 < DEQUANT_CHUNK ? q->cols - c0 : DEQUANT_CHUNK;
        ngq_quant_unpack_codes(bits, packed + c0 / NGQ_QBLOCK_CODES * bits, n, buf);
        if (q->g_idx) {
            for (int64_t k = 0; k < n; k++) {
                ngq_qparams pk = ngq_qtensor_get_params(q, row, q->g_idx[c0 + k]);
                out[c0 + k] = ngq_quant_value(buf[k], pk);
            }
            continue;
        }
        for (int64_t k = 0; k < n; k++) {
            int64_t c = c0 + k;
            if (c >= group_end) {
                group = c / gsize;
                group_end = (group + 1) * gsize;
                p = ngq_qtensor_get_params(q, row, group);
            }
            out[c] = ngq_quant_value(buf[k], p);
        }
    }
}

void ngq_qtensor_dequantize(const ngq_qtensor *q, float *w)
{
    #pragma omp parallel for schedule(static) if (q->rows * q->cols > 65536)
    for (int64_t r = 0; r < q->rows; r++) ngq_qtensor_dequantize_row(q, r, w + r * q->cols);
}

/* ---- RTN ------------------------------------------------------------------ */

/* Finds row r's parameters (per channel or per group) and stores them. */
static ngq_status rtn_row_params(ngq_qtensor *q, const float *wrow, int64_t r, ngq_error *err)
{
    int64_t gsize = q->cols / q->groups_per_row;
    for (int64_t g = 0; g < q->groups_per_row; g++) {
        ngq_qparams p;
        ngq_status st = ngq_quant_find_params(&q->grid, wrow + g * gsize, gsize, &p, err);
        if (st) {
            ngq_error_prefix(err, "row %lld group %lld", (long long)r, (long long)g);
            return st;
        }
        st = ngq_qtensor_set_params(q, r, g, p, err);
        if (st) return st;
    }
    return NGQ_OK;
}

static ngq_status rtn_row_codes(ngq_qtensor *q, const float *wrow, int64_t r, uint8_t *codes, ngq_error *err)
{
    int maxq = ngq_qgrid_maxq(&q->grid);
    int64_t gsize = q->cols / q->groups_per_row;
    for (int64_t g = 0; g < q->groups_per_row; g++) {
        ngq_qparams p = ngq_qtensor_get_params(q, r, g);
        for (int64_t c = g * gsize; c < (g + 1) * gsize; c++) codes[c] = ngq_quant_code(wrow[c], p, maxq);
    }
    return ngq_qtensor_set_row_codes(q, r, codes, err);
}

ngq_status ngq_quant_rtn(const float *w, int64_t rows, int64_t cols, const ngq_qgrid *grid, ngq_qtensor *q,
                         ngq_error *err)
{
    ngq_status st = ngq_qtensor_init(q, rows, cols, grid, 0, err);
    if (st) return st;
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(w[i])) {
            ngq_qtensor_free(q);
            return ngq_fail(err, NGQ_ERR_NUMERIC, "RTN: weight [%lld, %lld] is %g", (long long)(i / cols),
                            (long long)(i % cols), (double)w[i]);
        }
    if (grid->granularity == NGQ_GRAN_TENSOR) {
        ngq_qparams p;
        st = ngq_quant_find_params(grid, w, rows * cols, &p, err);
        if (!st) st = ngq_qtensor_set_params(q, 0, 0, p, err);
        if (st) {
            ngq_qtensor_free(q);
            return st;
        }
    }
    /* Rows are independent; a failing row is found again serially so the
     * message is the first failing row's, whatever the thread count. */
    int64_t first_bad = rows;
    int nomem = 0;
    #pragma omp parallel reduction(min : first_bad) reduction(max : nomem) if (rows * cols > 16384)
    {
        uint8_t *codes = malloc((size_t)cols);
        if (!codes) nomem = 1;
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!codes) continue;
            const float *wrow = w + r * cols;
            ngq_status rs = NGQ_OK;
            if (grid->granularity != NGQ_GRAN_TENSOR) rs = rtn_row_params(q, wrow, r, NULL);
            if (!rs) rs = rtn_row_codes(q, wrow, r, codes, NULL);
            if (rs && r < first_bad) first_bad = r;
        }
        free(codes);
    }
    if (nomem) {
        ngq_qtensor_free(q);
        return ngq_fail(err, NGQ_ERR_NOMEM, "RTN: cannot allocate a row buffer of %lld bytes", (long long)cols);
    }
    if (first_bad < rows) {
        st = rtn_row_params(q, w + first_bad * cols, first_bad, err);
        if (!st) st = ngq_fail(err, NGQ_ERR_INTERNAL, "RTN: row %lld failed", (long long)first_bad);
        ngq_qtensor_free(q);
        ngq_error_prefix(err, "RTN");
        return st;
    }
    return NGQ_OK;
}

/* ---- sizes and parts -------------------------------------------------------- */

void ngq_qtensor_get_sizes(const ngq_qtensor *q, ngq_qtensor_sizes *s)
{
    s->code_bytes = q->rows * q->row_bytes;
    s->scale_bytes = q->nparams * (q->grid.scale_dtype == NGQ_SCALE_F16 ? 2 : 4);
    s->zero_bytes = q->zeros ? q->nparams : 0;
    s->g_idx_bytes = q->g_idx ? q->cols * (int64_t)sizeof(int32_t) : 0;
    s->total_bytes = s->code_bytes + s->scale_bytes + s->zero_bytes + s->g_idx_bytes;
    s->bits_per_weight = (double)s->total_bytes * 8.0 / ((double)q->rows * (double)q->cols);
}

int ngq_qtensor_get_parts(const ngq_qtensor *q, ngq_qtensor_part *parts)
{
    int n = 0;
    int64_t prow = q->grid.granularity == NGQ_GRAN_TENSOR ? 1 : q->rows;
    int64_t pcol = q->grid.granularity == NGQ_GRAN_TENSOR ? 1 : q->groups_per_row;
    parts[n++] = (ngq_qtensor_part){"codes", "U8", 2, {q->rows, q->row_bytes}, q->codes,
                                    (size_t)(q->rows * q->row_bytes)};
    if (q->scales_f16)
        parts[n++] = (ngq_qtensor_part){"scales", "F16", 2, {prow, pcol}, q->scales_f16,
                                        (size_t)q->nparams * sizeof(uint16_t)};
    else
        parts[n++] = (ngq_qtensor_part){"scales", "F32", 2, {prow, pcol}, q->scales_f32,
                                        (size_t)q->nparams * sizeof(float)};
    if (q->zeros) parts[n++] = (ngq_qtensor_part){"zeros", "U8", 2, {prow, pcol}, q->zeros, (size_t)q->nparams};
    if (q->g_idx)
        parts[n++] = (ngq_qtensor_part){"g_idx", "I32", 1, {q->cols, 0}, q->g_idx,
                                        (size_t)q->cols * sizeof(int32_t)};
    return n;
}

ngq_status ngq_qtensor_check_part(const ngq_qtensor *q, const char *name, const char *dtype, int ndim,
                                  const int64_t *shape, size_t bytes, ngq_error *err)
{
    ngq_qtensor_part parts[NGQ_QTENSOR_MAX_PARTS];
    int n = ngq_qtensor_get_parts(q, parts);
    const ngq_qtensor_part *p = NULL;
    for (int i = 0; i < n; i++)
        if (strcmp(parts[i].name, name) == 0) p = &parts[i];
    if (!p)
        return ngq_fail(err, NGQ_ERR_FORMAT, "unexpected part '%s' for a %s %s grid (expected codes, scales%s%s)",
                        name, q->grid.symmetric ? "symmetric" : "asymmetric",
                        granularity_name(q->grid.granularity), q->zeros ? ", zeros" : "",
                        q->g_idx ? ", g_idx" : "");
    if (strcmp(p->dtype, dtype) != 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "part '%s' has dtype %s, expected %s", name, dtype, p->dtype);
    if (ndim != p->ndim)
        return ngq_fail(err, NGQ_ERR_FORMAT, "part '%s' has %d dimensions, expected %d", name, ndim, p->ndim);
    for (int d = 0; d < ndim; d++)
        if (shape[d] != p->shape[d])
            return ngq_fail(err, NGQ_ERR_FORMAT, "part '%s' dimension %d is %lld, expected %lld", name, d,
                            (long long)shape[d], (long long)p->shape[d]);
    if (bytes != p->bytes)
        return ngq_fail(err, NGQ_ERR_FORMAT, "part '%s' holds %zu bytes, expected %zu", name, bytes, p->bytes);
    return NGQ_OK;
}

ngq_status ngq_qtensor_validate(const ngq_qtensor *q, ngq_error *err)
{
    ngq_status st = ngq_qgrid_validate(&q->grid, q->cols, err);
    if (st) {
        ngq_error_prefix(err, "qtensor");
        return st;
    }
    if (q->rows <= 0 || q->cols <= 0)
        return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor shape [%lld, %lld] is empty", (long long)q->rows,
                        (long long)q->cols);
    if (q->groups_per_row != ngq_qgrid_groups_per_row(&q->grid, q->cols) ||
        q->nparams != nparams_for(&q->grid, q->rows, q->cols) ||
        q->row_bytes != ngq_quant_packed_bytes(q->grid.bits, q->cols))
        return ngq_fail(err, NGQ_ERR_FORMAT,
                        "qtensor sizes (groups_per_row %lld, nparams %lld, row_bytes %lld) do not match "
                        "its shape [%lld, %lld] and grid",
                        (long long)q->groups_per_row, (long long)q->nparams, (long long)q->row_bytes,
                        (long long)q->rows, (long long)q->cols);
    int f16 = q->grid.scale_dtype == NGQ_SCALE_F16;
    int need_zeros = !q->grid.symmetric && !q->grid.int8_compat;
    if (!q->codes || (f16 ? !q->scales_f16 || q->scales_f32 : !q->scales_f32 || q->scales_f16) ||
        (need_zeros != (q->zeros != NULL)))
        return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor parts do not match its grid (codes %s, %s scales, zeros %s)",
                        q->codes ? "present" : "missing", f16 ? "f16" : "f32", q->zeros ? "present" : "absent");
    if (q->g_idx && q->grid.granularity != NGQ_GRAN_GROUP)
        return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor has a g_idx but its grid is not per-group");
    const int maxq = ngq_qgrid_maxq(&q->grid);
    const int bits = q->grid.bits;
    const int64_t used_bits = q->cols * bits;
    const int pad_bits = (int)(q->row_bytes * 8 - used_bits);
    uint8_t buf[DEQUANT_CHUNK];
    for (int64_t r = 0; r < q->rows; r++) {
        const uint8_t *row = q->codes + r * q->row_bytes;
        if (pad_bits && (row[q->row_bytes - 1] >> (8 - pad_bits)))
            return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor row %lld: padding bits of the last byte are not zero",
                            (long long)r);
        if (maxq == (1 << bits) - 1) continue; /* every bit pattern is a valid code */
        for (int64_t c0 = 0; c0 < q->cols; c0 += DEQUANT_CHUNK) {
            int64_t n = q->cols - c0 < DEQUANT_CHUNK ? q->cols - c0 : DEQUANT_CHUNK;
            ngq_quant_unpack_codes(bits, row + c0 / NGQ_QBLOCK_CODES * bits, n, buf);
            for (int64_t k = 0; k < n; k++)
                if (buf[k] > maxq)
                    return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor [%lld, %lld]: code %u exceeds maxq %d",
                                    (long long)r, (long long)(c0 + k), (unsigned)buf[k], maxq);
        }
    }
    for (int64_t i = 0; i < q->nparams; i++) {
        float s = f16 ? ngq_f16_to_f32(q->scales_f16[i]) : q->scales_f32[i];
        if (!(s > 0.0f) || isinf(s))
            return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor scale %lld is %g, expected positive and finite",
                            (long long)i, (double)s);
        if (q->zeros && q->zeros[i] > maxq)
            return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor zero %lld is %u, exceeds maxq %d", (long long)i,
                            (unsigned)q->zeros[i], maxq);
    }
    if (q->g_idx) {
        int64_t *count = calloc((size_t)q->groups_per_row, sizeof *count);
        if (!count) return ngq_fail(err, NGQ_ERR_NOMEM, "out of memory");
        for (int64_t c = 0; c < q->cols; c++) {
            int32_t g = q->g_idx[c];
            if (g < 0 || g >= q->groups_per_row) {
                free(count);
                return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor g_idx[%lld] = %d, expected 0..%lld", (long long)c,
                                (int)g, (long long)q->groups_per_row - 1);
            }
            count[g]++;
        }
        for (int64_t g = 0; g < q->groups_per_row; g++)
            if (count[g] != q->grid.group_size) {
                int64_t got = count[g];
                free(count);
                return ngq_fail(err, NGQ_ERR_FORMAT, "qtensor g_idx gives group %lld %lld columns, expected %lld",
                                (long long)g, (long long)got, (long long)q->grid.group_size);
            }
        free(count);
    }
    return NGQ_OK;
}
