/* test_quant.c: grids and RTN codes on hand-computed vectors (symmetric,
 * asymmetric, per tensor/channel/group, int8_compat, ties to even), the MSE
 * range search, fp16 conversion, packing for every width, qtensor parts,
 * sizes and validation, and the grid text form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef __F16C__
#include <immintrin.h>
#endif

#include "nanogptq/quant.h"
#include "nanogptq/rng.h"

/* RTN of w (rows, cols) on grid; checks the status and returns the codes. */
static void rtn_codes(const float *w, int64_t rows, int64_t cols, const ngq_qgrid *grid, ngq_qtensor *q,
                      uint8_t *codes)
{
    ngq_error err = {0};
    ngq_status st = ngq_quant_rtn(w, rows, cols, grid, q, &err);
    if (st) fail_msg("RTN failed: %s", err.message);
    for (int64_t r = 0; r < rows; r++) ngq_qtensor_get_row_codes(q, r, codes + r * cols);
}

static void assert_codes(const uint8_t *got, const uint8_t *want, int n)
{
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("code %d: got %u, want %u", i, (unsigned)got[i], (unsigned)want[i]);
}

static void test_asym_channel_ties_to_even(void **state)
{
    (void)state;
    /* 3 bits: xmin 0, xmax 7 -> scale 1, zero 0; the .5 values are ties. */
    const float w[8] = {0.5f, 1.5f, 2.5f, 3.5f, 7.0f, 0.0f, 6.5f, 4.5f};
    const uint8_t want[8] = {0, 2, 2, 4, 7, 0, 6, 4};
    ngq_qgrid g;
    ngq_qgrid_default(&g, 3);
    ngq_qtensor q;
    uint8_t codes[8];
    rtn_codes(w, 1, 8, &g, &q, codes);
    assert_codes(codes, want, 8);
    ngq_qparams p = ngq_qtensor_get_params(&q, 0, 0);
    assert_true(p.scale == 1.0f && p.zero == 0.0f);
    assert_non_null(q.zeros);
    ngq_qtensor_free(&q);

    /* 2 bits: xmin -1, xmax 2 -> scale 1, zero rint(1) = 1; 0.5 ties to 0. */
    const float w2[4] = {-1.0f, 0.5f, 2.0f, 0.25f};
    const uint8_t want2[4] = {0, 1, 3, 1};
    ngq_qgrid_default(&g, 2);
    rtn_codes(w2, 1, 4, &g, &q, codes);
    assert_codes(codes, want2, 4);
    float deq[4];
    ngq_qtensor_dequantize_row(&q, 0, deq);
    assert_true(deq[0] == -1.0f && deq[1] == 0.0f && deq[2] == 2.0f && deq[3] == 0.0f);
    ngq_qtensor_free(&q);

    /* A row with only positive values still holds 0: xmin = 0. */
    const float w3[4] = {2.0f, 4.0f, 6.0f, 8.0f}; /* 2 bits: scale 8/3, zero 0 */
    const uint8_t want3[4] = {1, 2, 2, 3};         /* 0.75 -> 1, 1.5 -> 2, 2.25 -> 2, 3 */
    rtn_codes(w3, 1, 4, &g, &q, codes);
    assert_codes(codes, want3, 4);
    ngq_qtensor_free(&q);
}

static void test_sym_channel(void **state)
{
    (void)state;
    /* 2 bits symmetric: xmax 3 -> xmin -3, scale 2, zero (3+1)/2 = 2.
     * -3/2 = -1.5 -> -2; 1.5/2 -> 1; 1/2 = 0.5 -> 0; 3/2 = 1.5 -> 2 -> clamp 3. */
    const float w[6] = {-3.0f, 1.5f, 1.0f, 3.0f, -1.0f, 0.0f};
    const uint8_t want[6] = {0, 3, 2, 3, 2, 2};
    ngq_qgrid g;
    ngq_qgrid_default(&g, 2);
    g.symmetric = 1;
    ngq_qtensor q;
    uint8_t codes[6];
    rtn_codes(w, 1, 6, &g, &q, codes);
    assert_codes(codes, want, 6);
    assert_null(q.zeros);
    ngq_qparams p = ngq_qtensor_get_params(&q, 0, 0);
    assert_true(p.scale == 2.0f && p.zero == 2.0f);
    ngq_qtensor_free(&q);

    /* All non-negative row, symmetric: xmin = -xmax (documented choice). */
    const float w2[4] = {0.0f, 1.0f, 2.0f, 3.0f};
    rtn_codes(w2, 1, 4, &g, &q, codes);
    p = ngq_qtensor_get_params(&q, 0, 0);
    assert_true(p.scale == 2.0f && p.zero == 2.0f);
    ngq_qtensor_free(&q);
}

static void test_zero_row(void **state)
{
    (void)state;
    /* xmin == xmax == 0: range -1..1 as the reference; 4-bit asym scale 2/15
     * and zero rintf(1 / (2/15)) = 7 in float32 (the quotient is just below
     * 7.5); every code is the zero point and dequantizes to exactly 0. */
    float w[5] = {0};
    ngq_qgrid g;
    ngq_qgrid_default(&g, 4);
    ngq_qtensor q;
    uint8_t codes[5];
    rtn_codes(w, 1, 5, &g, &q, codes);
    ngq_qparams p = ngq_qtensor_get_params(&q, 0, 0);
    assert_true(p.scale == 2.0f / 15.0f);
    assert_true(p.zero == rintf(1.0f / (2.0f / 15.0f)));
    assert_true(p.zero == 7.0f);
    for (int i = 0; i < 5; i++) assert_int_equal(codes[i], 7);
    float deq[5];
    ngq_qtensor_dequantize_row(&q, 0, deq);
    for (int i = 0; i < 5; i++) assert_true(deq[i] == 0.0f);
    ngq_qtensor_free(&q);
}

static void test_per_tensor_and_group(void **state)
{
    (void)state;
    /* Per tensor, 2 bits asym over the whole 2x3 matrix: xmin -1, xmax 2,
     * scale 1, zero 1. */
    const float w[6] = {-1.0f, 0.0f, 1.0f, 2.0f, 0.5f, 1.5f};
    const uint8_t want[6] = {0, 1, 2, 3, 1, 3}; /* 0.5 -> 0 + 1, 1.5 -> 2 + 1 */
    ngq_qgrid g;
    ngq_qgrid_default(&g, 2);
    g.granularity = NGQ_GRAN_TENSOR;
    ngq_qtensor q;
    uint8_t codes[8];
    rtn_codes(w, 2, 3, &g, &q, codes);
    assert_codes(codes, want, 6);
    assert_int_equal(q.nparams, 1);
    ngq_qtensor_free(&q);

    /* Per group of 2, 2 bits asym; each group has its own range:
     * row 0: [0, 3] scale 1 zero 0; [-3, 0] scale 1 zero 3.
     * row 1: [-6, 3] scale 3 zero 2; [0.5, 1.5] xmin 0 scale 0.5 zero 0. */
    const float wg[8] = {0.0f, 3.0f, -3.0f, -1.0f, -6.0f, 3.0f, 0.5f, 1.5f};
    const uint8_t wantg[8] = {0, 3, 0, 2, 0, 3, 1, 3};
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 2;
    rtn_codes(wg, 2, 4, &g, &q, codes);
    assert_codes(codes, wantg, 8);
    assert_int_equal(q.groups_per_row, 2);
    assert_int_equal(q.nparams, 4);
    ngq_qparams p = ngq_qtensor_get_params(&q, 1, 0);
    assert_true(p.scale == 3.0f && p.zero == 2.0f);
    p = ngq_qtensor_get_params(&q, 0, 1);
    assert_true(p.scale == 1.0f && p.zero == 3.0f);
    float deq[8];
    ngq_qtensor_dequantize(&q, deq);
    const float want_deq[8] = {0.0f, 3.0f, -3.0f, -1.0f, -6.0f, 3.0f, 0.5f, 1.5f};
    for (int i = 0; i < 8; i++) assert_true(deq[i] == want_deq[i]);
    ngq_qtensor_free(&q);

    /* cols not divisible by the group size: a clear error */
    ngq_error err = {0};
    g.group_size = 3;
    assert_int_equal(ngq_quant_rtn(wg, 2, 4, &g, &q, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "not divisible by group_size 3"));
}

static void test_int8_compat(void **state)
{
    (void)state;
    /* absmax 127 -> scale 1; levels rint(x) in -127..127 stored as +127. */
    const float w[12] = {127.0f, -63.5f, 0.5f, -0.5f, 1.5f, 2.0f, /* row 1: all zero */ 0, 0, 0, 0, 0, 0};
    const uint8_t want[12] = {254, 63, 127, 127, 129, 129, 127, 127, 127, 127, 127, 127};
    ngq_qgrid g;
    ngq_qgrid_int8_compat(&g);
    ngq_qtensor q;
    uint8_t codes[12];
    rtn_codes(w, 2, 6, &g, &q, codes);
    assert_codes(codes, want, 12);
    ngq_qparams p = ngq_qtensor_get_params(&q, 0, 0);
    assert_true(p.scale == 1.0f && p.zero == 127.0f);
    p = ngq_qtensor_get_params(&q, 1, 0);
    assert_true(p.scale == 1.0f / 127.0f);
    assert_null(q.zeros);
    float deq[12];
    ngq_qtensor_dequantize(&q, deq);
    assert_true(deq[0] == 127.0f && deq[1] == -64.0f && deq[4] == 2.0f);
    for (int i = 6; i < 12; i++) assert_true(deq[i] == 0.0f);
    ngq_qtensor_free(&q);

    /* The naive study's formula on a random row: levels = rint(w / (absmax/127)). */
    ngq_rng rng;
    ngq_rng_seed(&rng, 5, 0);
    float wr[64];
    float absmax = 0.0f;
    for (int i = 0; i < 64; i++) {
        wr[i] = 0.05f * ngq_rng_normal(&rng);
        absmax = fmaxf(absmax, fabsf(wr[i]));
    }
    uint8_t c2[64];
    rtn_codes(wr, 1, 64, &g, &q, c2);
    for (int i = 0; i < 64; i++) {
        float level = rintf(wr[i] / (absmax / 127.0f));
        assert_true(level >= -127.0f && level <= 127.0f);
        assert_int_equal((int)c2[i] - 127, (int)level);
    }
    ngq_qtensor_free(&q);

    /* int8_compat constraints */
    ngq_error err = {0};
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 32;
    assert_int_equal(ngq_qgrid_validate(&g, 64, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "int8_compat requires"));
}

static void test_grid_validation_messages(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_qgrid g;
    ngq_qgrid_default(&g, 9);
    assert_int_equal(ngq_qgrid_validate(&g, 0, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "bits = 9, expected 2..8"));
    ngq_qgrid_default(&g, 4);
    g.group_size = 64;
    assert_int_equal(ngq_qgrid_validate(&g, 0, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "group_size = 64 given with per-channel"));
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 0;
    assert_int_equal(ngq_qgrid_validate(&g, 0, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "group_size >= 1"));
    g.group_size = 64;
    assert_int_equal(ngq_qgrid_validate(&g, 192, &err), NGQ_OK);
    assert_int_equal(ngq_qgrid_validate(&g, 200, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "200 columns are not divisible by group_size 64"));
}

static void test_grid_text_round_trip(void **state)
{
    (void)state;
    ngq_error err = {0};
    ngq_qgrid g, back;
    ngq_qgrid_default(&g, 3);
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 128;
    g.range = NGQ_RANGE_MSE;
    g.scale_dtype = NGQ_SCALE_F16;
    char text[200];
    assert_int_equal(ngq_qgrid_format(&g, text, sizeof text, &err), NGQ_OK);
    assert_string_equal(text, "bits=3,sym=0,gran=group,group_size=128,range=mse,int8_compat=0,scale=f16");
    assert_int_equal(ngq_qgrid_parse(text, &back, &err), NGQ_OK);
    assert_memory_equal(&g, &back, sizeof g);
    ngq_qgrid_int8_compat(&g);
    assert_int_equal(ngq_qgrid_format(&g, text, sizeof text, &err), NGQ_OK);
    assert_int_equal(ngq_qgrid_parse(text, &back, &err), NGQ_OK);
    assert_memory_equal(&g, &back, sizeof g);

    assert_int_equal(ngq_qgrid_parse("bits=4,sym=0,gran=row,group_size=0,range=minmax,int8_compat=0,scale=f32",
                                     &back, &err), NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "gran = 'row'"));
    assert_int_equal(ngq_qgrid_parse("bits=4,sym=0,gran=channel,group_size=0,range=minmax,int8_compat=0", &back, &err),
                     NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "key 'scale' is missing"));
    assert_int_equal(ngq_qgrid_parse("bits=12,sym=0,gran=channel,group_size=0,range=minmax,int8_compat=0,scale=f32",
                                     &back, &err), NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "bits = 12"));
    assert_int_equal(ngq_qgrid_parse("bits=4x,sym=0,gran=channel,group_size=0,range=minmax,int8_compat=0,scale=f32",
                                     &back, &err), NGQ_ERR_FORMAT);
}

/* Sum |Q(x) - x|^2.4 for the given params. */
static double norm_error(const float *x, int n, ngq_qparams p, int maxq)
{
    double e = 0.0;
    for (int i = 0; i < n; i++) e += pow(fabs((double)ngq_quant_value(ngq_quant_code(x[i], p, maxq), p) - x[i]), 2.4);
    return e;
}

static void test_mse_range(void **state)
{
    (void)state;
    ngq_rng rng;
    ngq_rng_seed(&rng, 11, 0);
    float x[256];
    for (int i = 0; i < 256; i++) x[i] = ngq_rng_normal(&rng);
    x[17] = 12.0f; /* an outlier: min/max wastes most of the grid */
    ngq_error err = {0};
    for (int sym = 0; sym <= 1; sym++) {
        ngq_qgrid g;
        ngq_qgrid_default(&g, 3);
        g.symmetric = sym;
        ngq_qparams pm, pe;
        assert_int_equal(ngq_quant_find_params(&g, x, 256, &pm, &err), NGQ_OK);
        g.range = NGQ_RANGE_MSE;
        assert_int_equal(ngq_quant_find_params(&g, x, 256, &pe, &err), NGQ_OK);
        assert_true(pe.scale < pm.scale);
        double em = norm_error(x, 256, pm, 7), ee = norm_error(x, 256, pe, 7);
        assert_true(ee < 0.8 * em);
        /* the winner is the best of the 80 candidates p = 1 - i/100 */
        for (int i = 0; i < NGQ_QUANT_MSE_CANDIDATES; i++) {
            float p = (float)(1.0 - i / 100.0);
            float xmin = -12.0f, xmax = 12.0f;
            if (!sym) {
                xmin = 0.0f;
                for (int k = 0; k < 256; k++) xmin = fminf(xmin, x[k]);
            }
            ngq_qparams c;
            c.scale = (p * xmax - p * xmin) / 7.0f;
            c.zero = sym ? 4.0f : rintf(-(p * xmin) / c.scale);
            assert_true(norm_error(x, 256, c, 7) >= ee);
        }
    }
}

static void test_fp16_conversion(void **state)
{
    (void)state;
    /* every finite half and infinity survives half -> float -> half */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ngq_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(ngq_f16_to_f32(ngq_f32_to_f16(f))));
            continue;
        }
        assert_int_equal(ngq_f32_to_f16(f), h);
    }
    assert_true(ngq_f16_to_f32(0x3c00) == 1.0f);
    assert_true(ngq_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(ngq_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    /* ties to even */
    assert_int_equal(ngq_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);        /* between 1 and 1+2^-10 -> 1 */
    assert_int_equal(ngq_f32_to_f16(1.0f + 3.0f * ldexpf(1.0f, -11)), 0x3c02); /* -> even 1+2^-9 */
    assert_int_equal(ngq_f32_to_f16(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)), 0x3c01);
    assert_int_equal(ngq_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(ngq_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(ngq_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(ngq_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);         /* tie with 0 -> 0 */
    assert_int_equal(ngq_f32_to_f16(ldexpf(1.5f, -25)), 0x0001);
    assert_int_equal(ngq_f32_to_f16(ldexpf(3.0f, -25)), 0x0002);         /* 1.5 units -> even 2 */
    assert_int_equal(ngq_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400);      /* rounds up into the normals */
    assert_int_equal(ngq_f32_to_f16(-0.0f), 0x8000);
#ifdef __F16C__
    /* the hardware conversion agrees on a million random bit patterns */
    ngq_rng rng;
    ngq_rng_seed(&rng, 99, 0);
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = ngq_rng_u32(&rng);
        float f;
        memcpy(&f, &u, sizeof f);
        if (isnan(f)) continue;
        uint16_t hw = (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        if (hw != ngq_f32_to_f16(f)) fail_msg("0x%08x: hardware 0x%04x, ours 0x%04x", u, hw, ngq_f32_to_f16(f));
    }
#endif
}

static void test_f16_scales_consistent(void **state)
{
    (void)state;
    ngq_rng rng;
    ngq_rng_seed(&rng, 21, 0);
    enum { R = 4, C = 64 };
    float w[R * C];
    for (int i = 0; i < R * C; i++) w[i] = 0.03f * ngq_rng_normal(&rng);
    ngq_qgrid g;
    ngq_qgrid_default(&g, 4);
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 16;
    g.scale_dtype = NGQ_SCALE_F16;
    ngq_qtensor q;
    uint8_t codes[R * C];
    rtn_codes(w, R, C, &g, &q, codes);
    assert_non_null(q.scales_f16);
    assert_null(q.scales_f32);
    float deq[R * C];
    ngq_qtensor_dequantize(&q, deq);
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            ngq_qparams p = ngq_qtensor_get_params(&q, r, c / 16);
            /* scale is an fp16 value; codes were made with it */
            assert_true(ngq_f16_to_f32(ngq_f32_to_f16(p.scale)) == p.scale);
            assert_int_equal(codes[r * C + c], ngq_quant_code(w[r * C + c], p, 15));
            assert_true(deq[r * C + c] == p.scale * ((float)codes[r * C + c] - p.zero));
            assert_true(fabsf(deq[r * C + c] - w[r * C + c]) <= 0.51f * p.scale);
        }
    ngq_qtensor_sizes sz;
    ngq_qtensor_get_sizes(&q, &sz);
    assert_int_equal(sz.code_bytes, R * C / 2);
    assert_int_equal(sz.scale_bytes, R * (C / 16) * 2);
    assert_int_equal(sz.zero_bytes, R * (C / 16));
    assert_true(fabs(sz.bits_per_weight - (4.0 + 16.0 / 16 + 8.0 / 16)) < 1e-12);
    ngq_qtensor_free(&q);

    /* a scale below the fp16 range is an error, not a silent zero */
    float tiny[4] = {1e-9f, -1e-9f, 0.0f, 5e-10f};
    ngq_error err = {0};
    g.granularity = NGQ_GRAN_CHANNEL;
    g.group_size = 0;
    assert_int_equal(ngq_quant_rtn(tiny, 1, 4, &g, &q, &err), NGQ_ERR_NUMERIC);
    assert_non_null(strstr(err.message, "fp16"));
}

static void test_pack_round_trip_all_widths(void **state)
{
    (void)state;
    ngq_rng rng;
    ngq_rng_seed(&rng, 3, 0);
    uint8_t codes[200], back[200], packed[200];
    ngq_error err = {0};
    for (int bits = 2; bits <= 8; bits++) {
        const ngq_qformat *f = ngq_qformat_for_bits(bits);
        assert_non_null(f);
        assert_int_equal(f->bits, bits);
        assert_int_equal(f->block_bytes * 8, f->block_codes * bits);
        for (int n = 0; n <= 67; n++) {
            for (int i = 0; i < n; i++) codes[i] = (uint8_t)ngq_rng_below(&rng, 1u << bits);
            int64_t nb = ngq_quant_packed_bytes(bits, n);
            assert_int_equal(nb, (n * bits + 7) / 8);
            memset(packed, 0xAA, sizeof packed);
            assert_int_equal(ngq_quant_pack_codes(bits, codes, n, packed, &err), NGQ_OK);
            assert_int_equal(packed[nb], 0xAA); /* nothing written past the end */
            int pad = (int)(nb * 8 - n * bits);
            if (pad) assert_int_equal(packed[nb - 1] >> (8 - pad), 0);
            memset(back, 0xFF, sizeof back);
            ngq_quant_unpack_codes(bits, packed, n, back);
            assert_memory_equal(codes, back, (size_t)n);
            assert_int_equal(back[n], 0xFF);
        }
    }
    assert_null(ngq_qformat_for_bits(1));
    assert_null(ngq_qformat_for_bits(9));
    /* the documented bit layout */
    const uint8_t c4[3] = {1, 2, 15};
    assert_int_equal(ngq_quant_pack_codes(4, c4, 3, packed, &err), NGQ_OK);
    assert_int_equal(packed[0], 0x21);
    assert_int_equal(packed[1], 0x0F);
    const uint8_t c3[8] = {1, 2, 3, 4, 5, 6, 7, 0};
    assert_int_equal(ngq_quant_pack_codes(3, c3, 8, packed, &err), NGQ_OK);
    uint32_t v = (uint32_t)packed[0] | (uint32_t)packed[1] << 8 | (uint32_t)packed[2] << 16;
    for (int k = 0; k < 8; k++) assert_int_equal((v >> (3 * k)) & 7, c3[k]);
    /* an out-of-range code is refused */
    const uint8_t bad[2] = {3, 4};
    assert_int_equal(ngq_quant_pack_codes(2, bad, 2, packed, &err), NGQ_ERR_INTERNAL);
    assert_non_null(strstr(err.message, "does not fit in 2 bits"));
}

static void test_parts_round_trip_and_validate(void **state)
{
    (void)state;
    ngq_rng rng;
    ngq_rng_seed(&rng, 8, 0);
    enum { R = 6, C = 40 };
    float w[R * C];
    for (int i = 0; i < R * C; i++) w[i] = ngq_rng_normal(&rng);
    ngq_error err = {0};
    for (int bits = 2; bits <= 8; bits++) {
        ngq_qgrid g;
        ngq_qgrid_default(&g, bits);
        g.granularity = NGQ_GRAN_GROUP;
        g.group_size = 8;
        g.symmetric = bits % 2;
        g.scale_dtype = bits % 3 ? NGQ_SCALE_F32 : NGQ_SCALE_F16;
        ngq_qtensor q, copy;
        assert_int_equal(ngq_quant_rtn(w, R, C, &g, &q, &err), NGQ_OK);
        assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_OK);
        ngq_qtensor_part parts[NGQ_QTENSOR_MAX_PARTS], cparts[NGQ_QTENSOR_MAX_PARTS];
        int n = ngq_qtensor_get_parts(&q, parts);
        assert_int_equal(n, g.symmetric ? 2 : 3);
        assert_string_equal(parts[0].name, "codes");
        assert_int_equal(parts[0].shape[1], (C * bits + 7) / 8);
        assert_string_equal(parts[1].dtype, g.scale_dtype == NGQ_SCALE_F16 ? "F16" : "F32");
        assert_int_equal(parts[1].shape[0], R);
        assert_int_equal(parts[1].shape[1], C / 8);
        /* "read back": a fresh qtensor, each part checked then copied */
        assert_int_equal(ngq_qtensor_init(&copy, R, C, &g, 0, &err), NGQ_OK);
        int m = ngq_qtensor_get_parts(&copy, cparts);
        assert_int_equal(m, n);
        for (int i = 0; i < n; i++) {
            assert_int_equal(ngq_qtensor_check_part(&copy, parts[i].name, parts[i].dtype, parts[i].ndim,
                                                    parts[i].shape, parts[i].bytes, &err), NGQ_OK);
            memcpy(cparts[i].data, parts[i].data, parts[i].bytes);
        }
        assert_int_equal(ngq_qtensor_validate(&copy, &err), NGQ_OK);
        float d1[R * C], d2[R * C];
        ngq_qtensor_dequantize(&q, d1);
        ngq_qtensor_dequantize(&copy, d2);
        assert_memory_equal(d1, d2, sizeof d1);
        /* dequantize_row agrees with dequantize */
        for (int r = 0; r < R; r++) {
            ngq_qtensor_dequantize_row(&q, r, d2);
            assert_memory_equal(d1 + r * C, d2, C * sizeof(float));
        }
        /* a mismatched shape or dtype from a file is caught */
        int64_t badshape[2] = {R, C / 8 + 1};
        assert_int_equal(ngq_qtensor_check_part(&copy, "scales", parts[1].dtype, 2, badshape, parts[1].bytes, &err),
                         NGQ_ERR_FORMAT);
        assert_non_null(strstr(err.message, "dimension 1"));
        assert_int_equal(ngq_qtensor_check_part(&copy, "codes", "I8", 2, parts[0].shape, parts[0].bytes, &err),
                         NGQ_ERR_FORMAT);
        assert_int_equal(ngq_qtensor_check_part(&copy, "g_idx", "I32", 1, parts[0].shape, 4, &err), NGQ_ERR_FORMAT);
        assert_non_null(strstr(err.message, "unexpected part 'g_idx'"));
        /* corrupt values are caught */
        if (copy.scales_f32) copy.scales_f32[3] = 0.0f;
        else copy.scales_f16[3] = 0x7c00;
        assert_int_equal(ngq_qtensor_validate(&copy, &err), NGQ_ERR_FORMAT);
        assert_non_null(strstr(err.message, "scale 3"));
        ngq_qtensor_free(&q);
        ngq_qtensor_free(&copy);
    }
    /* int8_compat: code 255 is out of range; padding bits must be zero */
    ngq_qgrid g;
    ngq_qgrid_int8_compat(&g);
    ngq_qtensor q;
    assert_int_equal(ngq_quant_rtn(w, R, C, &g, &q, &err), NGQ_OK);
    q.codes[5] = 255;
    assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "exceeds maxq 254"));
    ngq_qtensor_free(&q);
    ngq_qgrid_default(&g, 5);
    float w7[R * 7];
    for (int i = 0; i < R * 7; i++) w7[i] = w[i];
    assert_int_equal(ngq_quant_rtn(w7, R, 7, &g, &q, &err), NGQ_OK); /* 35 bits: 5 padding bits */
    assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_OK);
    q.codes[q.row_bytes - 1] |= 0x80;
    assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "padding bits"));
    ngq_qtensor_free(&q);
}

static void test_g_idx_dequantize_and_validate(void **state)
{
    (void)state;
    /* Two groups of 2 over 4 columns, assigned [1, 0, 0, 1]. */
    ngq_qgrid g;
    ngq_qgrid_default(&g, 4);
    g.granularity = NGQ_GRAN_GROUP;
    g.group_size = 2;
    ngq_qtensor q;
    ngq_error err = {0};
    assert_int_equal(ngq_qtensor_init(&q, 1, 4, &g, 1, &err), NGQ_OK);
    q.g_idx[0] = 1;
    q.g_idx[1] = 0;
    q.g_idx[2] = 0;
    q.g_idx[3] = 1;
    assert_int_equal(ngq_qtensor_set_params(&q, 0, 0, (ngq_qparams){0.5f, 3.0f}, &err), NGQ_OK);
    assert_int_equal(ngq_qtensor_set_params(&q, 0, 1, (ngq_qparams){2.0f, 1.0f}, &err), NGQ_OK);
    const uint8_t codes[4] = {4, 4, 5, 0};
    assert_int_equal(ngq_qtensor_set_row_codes(&q, 0, codes, &err), NGQ_OK);
    float d[4];
    ngq_qtensor_dequantize_row(&q, 0, d);
    assert_true(d[0] == 6.0f && d[1] == 0.5f && d[2] == 1.0f && d[3] == -2.0f);
    assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_OK);
    ngq_qtensor_sizes sz;
    ngq_qtensor_get_sizes(&q, &sz);
    assert_int_equal(sz.g_idx_bytes, 16);
    q.g_idx[3] = 0; /* group 0 now has 3 columns */
    assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "g_idx gives group 0 3 columns, expected 2"));
    q.g_idx[3] = 2;
    assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_ERR_FORMAT);
    assert_non_null(strstr(err.message, "g_idx[3] = 2"));
    ngq_qtensor_free(&q);
    /* set_params refuses a zero outside the grid and a non-fp16 scale */
    g.scale_dtype = NGQ_SCALE_F16;
    assert_int_equal(ngq_qtensor_init(&q, 1, 4, &g, 0, &err), NGQ_OK);
    assert_int_equal(ngq_qtensor_set_params(&q, 0, 0, (ngq_qparams){0.1f, 3.0f}, &err), NGQ_ERR_INTERNAL);
    assert_int_equal(ngq_qtensor_set_params(&q, 0, 0, (ngq_qparams){0.5f, 16.0f}, &err), NGQ_ERR_INTERNAL);
    ngq_qtensor_free(&q);
}

static void test_rtn_rejects_nan(void **state)
{
    (void)state;
    float w[4] = {1.0f, NAN, 0.0f, 2.0f};
    ngq_qgrid g;
    ngq_qgrid_default(&g, 4);
    ngq_qtensor q;
    ngq_error err = {0};
    assert_int_equal(ngq_quant_rtn(w, 2, 2, &g, &q, &err), NGQ_ERR_NUMERIC);
    assert_non_null(strstr(err.message, "weight [0, 1]"));
    assert_null(q.codes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_asym_channel_ties_to_even),
        cmocka_unit_test(test_sym_channel),
        cmocka_unit_test(test_zero_row),
        cmocka_unit_test(test_per_tensor_and_group),
        cmocka_unit_test(test_int8_compat),
        cmocka_unit_test(test_grid_validation_messages),
        cmocka_unit_test(test_grid_text_round_trip),
        cmocka_unit_test(test_mse_range),
        cmocka_unit_test(test_fp16_conversion),
        cmocka_unit_test(test_f16_scales_consistent),
        cmocka_unit_test(test_pack_round_trip_all_widths),
        cmocka_unit_test(test_parts_round_trip_and_validate),
        cmocka_unit_test(test_g_idx_dequantize_and_validate),
        cmocka_unit_test(test_rtn_rejects_nan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
