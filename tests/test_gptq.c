/* test_gptq.c: the streamed Hessian equals 2 X^T X / N; GPTQ equals a plain
 * unblocked column-by-column implementation written here (its own U through
 * column-major LAPACKE) for every grid kind, act-order, static and dynamic
 * groups; H = I gives RTN's codes; with strongly correlated inputs GPTQ's
 * output error is well below RTN's at 4 and 3 bits; dead inputs; damping
 * escalation and the RTN fallback; the Hessian-based relative error equals
 * the directly computed one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/gptq.h"
#include "nanogptq/quant.h"
#include "nanogptq/rng.h"

/* ---- fixtures ------------------------------------------------------------- */

/* x (n, cols): 8 latent factors mixed into all columns, small noise, and
 * column scales from 0.2 to 2 so that diag H varies. */
static float *correlated_inputs(int64_t n, int64_t cols, uint64_t seed)
{
    enum { K = 8 };
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 2);
    float *mix = malloc((size_t)(K * cols) * sizeof *mix);
    float *colscale = malloc((size_t)cols * sizeof *colscale);
    float *x = malloc((size_t)(n * cols) * sizeof *x);
    assert_non_null(mix);
    assert_non_null(colscale);
    assert_non_null(x);
    for (int64_t i = 0; i < K * cols; i++) mix[i] = ngq_rng_normal(&rng);
    for (int64_t j = 0; j < cols; j++) colscale[j] = 0.2f + 1.8f * ngq_rng_uniform(&rng);
    for (int64_t r = 0; r < n; r++) {
        float z[K];
        for (int k = 0; k < K; k++) z[k] = ngq_rng_normal(&rng);
        for (int64_t j = 0; j < cols; j++) {
            float v = 0.05f * ngq_rng_normal(&rng);
            for (int k = 0; k < K; k++) v += z[k] * mix[k * cols + j];
            x[r * cols + j] = colscale[j] * v;
        }
    }
    free(mix);
    free(colscale);
    return x;
}

static float *random_weights(int64_t rows, int64_t cols, uint64_t seed)
{
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 3);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    assert_non_null(w);
    for (int64_t i = 0; i < rows * cols; i++) w[i] = 0.05f * ngq_rng_normal(&rng);
    return w;
}

static void hessian_of(const float *x, int64_t n, int64_t cols, ngq_hessian *h)
{
    ngq_error err = {0};
    assert_int_equal(ngq_hessian_init(h, cols, &err), NGQ_OK);
    assert_int_equal(ngq_hessian_add(h, x, n, &err), NGQ_OK);
    assert_int_equal(ngq_hessian_finalize(h, &err), NGQ_OK);
}

/* ---- an unblocked reference ----------------------------------------------- */

typedef struct {
    int act_order, static_groups;
    double percdamp;
} ref_options;

/* Plain GPTQ: every column's error goes straight into all later columns.
 * codes (rows, cols) and qv (rows, cols) in original column order. */
static void reference_gptq(const float *w, int64_t rows, int64_t cols, const double *hessian, const ngq_qgrid *grid,
                           ref_options o, uint8_t *codes, float *qv)
{
    const int maxq = ngq_qgrid_maxq(grid);
    const int group = grid->granularity == NGQ_GRAN_GROUP;
    const int64_t gs = group ? grid->group_size : cols;
    const int64_t ngroups = cols / gs;
    ngq_error err = {0};
    double *wd = malloc((size_t)(rows * cols) * sizeof *wd);
    double *hc = malloc((size_t)(cols * cols) * sizeof *hc);
    double *u = malloc((size_t)(cols * cols) * sizeof *u);
    int64_t *perm = malloc((size_t)cols * sizeof *perm);
    ngq_qparams *prm = malloc((size_t)(rows * ngroups) * sizeof *prm);
    float *buf = malloc((size_t)(rows * cols) * sizeof *buf);
    assert_true(wd && hc && u && perm && prm && buf);
    for (int64_t i = 0; i < rows * cols; i++) wd[i] = w[i];
    memcpy(hc, hessian, (size_t)(cols * cols) * sizeof *hc);
    if (!group) { /* from the original weights */
        for (int64_t r = 0; r < rows; r++) {
            if (grid->granularity == NGQ_GRAN_TENSOR)
                assert_int_equal(ngq_quant_find_params(grid, w, rows * cols, &prm[r], &err), NGQ_OK);
            else
                assert_int_equal(ngq_quant_find_params(grid, w + r * cols, cols, &prm[r], &err), NGQ_OK);
        }
    }
    for (int64_t i = 0; i < cols; i++)
        if (hc[i * cols + i] == 0.0) {
            hc[i * cols + i] = 1.0;
            for (int64_t r = 0; r < rows; r++) wd[r * cols + i] = 0.0;
        }
    if (group && o.static_groups)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t g = 0; g < ngroups; g++) {
                for (int64_t k = 0; k < gs; k++) buf[k] = (float)wd[r * cols + g * gs + k];
                assert_int_equal(ngq_quant_find_params(grid, buf, gs, &prm[r * ngroups + g], &err), NGQ_OK);
            }
    /* stable descending order of diag H by insertion */
    for (int64_t i = 0; i < cols; i++) perm[i] = i;
    if (o.act_order)
        for (int64_t i = 1; i < cols; i++) {
            int64_t v = perm[i], k = i;
            while (k > 0 && hc[perm[k - 1] * cols + perm[k - 1]] < hc[v * cols + v]) {
                perm[k] = perm[k - 1];
                k--;
            }
            perm[k] = v;
        }
    double mean = 0.0;
    for (int64_t a = 0; a < cols; a++) mean += hc[perm[a] * cols + perm[a]];
    mean /= (double)cols;
    for (int64_t a = 0; a < cols; a++)
        for (int64_t b = 0; b < cols; b++) u[a * cols + b] = hc[perm[a] * cols + perm[b]];
    for (int64_t a = 0; a < cols; a++) u[a * cols + a] += o.percdamp * mean;
    /* column-major 'L' on the symmetric matrix: the row-major upper triangle */
    assert_int_equal(LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)cols, u, (lapack_int)cols), 0);
    assert_int_equal(LAPACKE_dpotri(LAPACK_COL_MAJOR, 'L', (lapack_int)cols, u, (lapack_int)cols), 0);
    for (int64_t a = 0; a < cols; a++)
        for (int64_t b = a + 1; b < cols; b++) u[b * cols + a] = u[a * cols + b];
    assert_int_equal(LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)cols, u, (lapack_int)cols), 0);
    /* W in processing order */
    double *wp = malloc((size_t)(rows * cols) * sizeof *wp);
    assert_non_null(wp);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) wp[r * cols + c] = wd[r * cols + perm[c]];
    for (int64_t c = 0; c < cols; c++) {
        const int64_t orig = perm[c];
        for (int64_t r = 0; r < rows; r++) {
            ngq_qparams p;
            if (!group) {
                p = prm[r];
            } else if (o.static_groups) {
                p = prm[r * ngroups + orig / gs];
            } else {
                if (c % gs == 0) {
                    for (int64_t k = 0; k < gs; k++) buf[k] = (float)wp[r * cols + c + k];
                    assert_int_equal(ngq_quant_find_params(grid, buf, gs, &prm[r * ngroups + c / gs], &err), NGQ_OK);
                }
                p = prm[r * ngroups + c / gs];
            }
            const double wv = wp[r * cols + c];
            const uint8_t code = ngq_quant_code((float)wv, p, maxq);
            const float q = ngq_quant_value(code, p);
            const double e = (wv - q) / u[c * cols + c];
            for (int64_t j = c + 1; j < cols; j++) wp[r * cols + j] -= e * u[c * cols + j];
            codes[r * cols + orig] = code;
            qv[r * cols + orig] = q;
        }
    }
    free(wd);
    free(wp);
    free(hc);
    free(u);
    free(perm);
    free(prm);
    free(buf);
}

/* Runs both implementations and requires identical codes and values. */
static void assert_matches_reference(const float *w, int64_t rows, int64_t cols, const double *h, const ngq_qgrid *g,
                                     const ngq_gptq_options *opts)
{
    uint8_t *rc = malloc((size_t)(rows * cols));
    uint8_t *lc = malloc((size_t)(rows * cols));
    float *rq = malloc((size_t)(rows * cols) * sizeof *rq);
    float *lq = malloc((size_t)(rows * cols) * sizeof *lq);
    assert_true(rc && lc && rq && lq);
    ref_options o = {opts->act_order, opts->static_groups, opts->percdamp};
    reference_gptq(w, rows, cols, h, g, o, rc, rq);
    ngq_qtensor q;
    ngq_gptq_report rep;
    ngq_error err = {0};
    ngq_status st = ngq_gptq_quantize(w, rows, cols, h, g, opts, &q, &rep, &err);
    if (st) fail_msg("GPTQ: %s", err.message);
    assert_int_equal(rep.fell_back_to_rtn, 0);
    assert_int_equal(rep.escalations, 0);
    assert_true(rep.loss > 0.0 && isfinite(rep.loss));
    assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_OK);
    for (int64_t r = 0; r < rows; r++) ngq_qtensor_get_row_codes(&q, r, lc + r * cols);
    ngq_qtensor_dequantize(&q, lq);
    int64_t code_diffs = 0;
    for (int64_t i = 0; i < rows * cols; i++) code_diffs += lc[i] != rc[i];
    if (code_diffs)
        fail_msg("%lld of %lld codes differ from the unblocked reference (block %lld, act_order %d, static %d)",
                 (long long)code_diffs, (long long)(rows * cols), (long long)opts->block_size, opts->act_order,
                 opts->static_groups);
    assert_memory_equal(lq, rq, (size_t)(rows * cols) * sizeof *lq);
    ngq_qtensor_free(&q);
    free(rc);
    free(lc);
    free(rq);
    free(lq);
}

/* ---- tests -------------------------------------------------------------- */

static void test_hessian_streaming(void **state)
{
    (void)state;
    const int64_t cols = 37, n = 2600; /* more than one internal chunk */
    float *x = correlated_inputs(n, cols, 1);
    ngq_hessian h;
    ngq_error err = {0};
    assert_int_equal(ngq_hessian_init(&h, cols, &err), NGQ_OK);
    const int64_t batches[] = {1, 7, 300, 2292};
    int64_t at = 0;
    for (int b = 0; b < 4; b++) {
        assert_int_equal(ngq_hessian_add(&h, x + at * cols, batches[b], &err), NGQ_OK);
        at += batches[b];
    }
    assert_int_equal(at, n);
    assert_int_equal(h.nsamples, n);
    assert_int_equal(ngq_hessian_finalize(&h, &err), NGQ_OK);
    double maxabs = 0.0, maxdiff = 0.0;
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++) {
            double s = 0.0;
            for (int64_t r = 0; r < n; r++) s += (double)x[r * cols + i] * x[r * cols + j];
            s *= 2.0 / (double)n;
            maxabs = fmax(maxabs, fabs(s));
            maxdiff = fmax(maxdiff, fabs(s - h.h[i * cols + j]));
            assert_true(h.h[i * cols + j] == h.h[j * cols + i]);
        }
    assert_true(maxdiff <= 1e-6 * maxabs);
    /* misuse is reported */
    assert_int_equal(ngq_hessian_add(&h, x, 1, &err), NGQ_ERR_INTERNAL);
    assert_non_null(strstr(err.message, "after finalize"));
    assert_int_equal(ngq_hessian_finalize(&h, &err), NGQ_ERR_INTERNAL);
    ngq_hessian_free(&h);
    assert_int_equal(ngq_hessian_init(&h, cols, &err), NGQ_OK);
    assert_int_equal(ngq_hessian_finalize(&h, &err), NGQ_ERR_NUMERIC);
    ngq_hessian_free(&h);
    assert_int_equal(ngq_hessian_init(&h, cols, &err), NGQ_OK);
    x[3 * cols + 5] = INFINITY;
    assert_int_equal(ngq_hessian_add(&h, x, 10, &err), NGQ_ERR_NUMERIC);
    assert_non_null(strstr(err.message, "row 3 column 5"));
    ngq_hessian_free(&h);
    free(x);
}

static void test_identity_hessian_gives_rtn_codes(void **state)
{
    (void)state;
    const int64_t rows = 24, cols = 64;
    float *w = random_weights(rows, cols, 2);
    double *h = calloc((size_t)(cols * cols), sizeof *h);
    assert_non_null(h);
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] = 1.0;
    ngq_error err = {0};
    for (int variant = 0; variant < 5; variant++) {
        ngq_qgrid g;
        ngq_qgrid_default(&g, 4);
        ngq_gptq_options o;
        ngq_gptq_options_default(&o);
        o.block_size = 16;
        if (variant == 1) {
            g.granularity = NGQ_GRAN_GROUP;
            g.group_size = 16;
            g.symmetric = 1;
        } else if (variant == 2) {
            g.granularity = NGQ_GRAN_GROUP;
            g.group_size = 16;
            o.static_groups = 1;
            o.act_order = 1;
        } else if (variant == 3) {
            g.granularity = NGQ_GRAN_TENSOR;
            g.bits = 3;
        } else if (variant == 4) {
            ngq_qgrid_int8_compat(&g);
        }
        ngq_qtensor qg, qr;
        ngq_gptq_report rep;
        assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &qg, &rep, &err), NGQ_OK);
        assert_int_equal(ngq_quant_rtn(w, rows, cols, &g, &qr, &err), NGQ_OK);
        assert_int_equal(rep.fell_back_to_rtn, 0);
        assert_memory_equal(qg.codes, qr.codes, (size_t)(rows * qg.row_bytes));
        ngq_qtensor_part pg[NGQ_QTENSOR_MAX_PARTS], pr[NGQ_QTENSOR_MAX_PARTS];
        int n = ngq_qtensor_get_parts(&qg, pg);
        assert_int_equal(ngq_qtensor_get_parts(&qr, pr), n);
        for (int i = 0; i < n; i++) assert_memory_equal(pg[i].data, pr[i].data, pg[i].bytes);
        ngq_qtensor_free(&qg);
        ngq_qtensor_free(&qr);
    }
    free(h);
    free(w);
}

static void test_gptq_beats_rtn_on_correlated_inputs(void **state)
{
    (void)state;
    const int64_t rows = 96, cols = 128, n = 4096;
    float *x = correlated_inputs(n, cols, 3);
    float *w = random_weights(rows, cols, 4);
    ngq_hessian h;
    hessian_of(x, n, cols, &h);
    ngq_error err = {0};
    for (int bits = 3; bits <= 4; bits++)
        for (int act = 0; act <= 1; act++) {
            ngq_qgrid g;
            ngq_qgrid_default(&g, bits);
            ngq_gptq_options o;
            ngq_gptq_options_default(&o);
            o.act_order = act;
            ngq_qtensor qg, qr;
            ngq_gptq_report rep;
            assert_int_equal(ngq_gptq_quantize(w, rows, cols, h.h, &g, &o, &qg, &rep, &err), NGQ_OK);
            assert_int_equal(ngq_quant_rtn(w, rows, cols, &g, &qr, &err), NGQ_OK);
            double eg, er;
            assert_int_equal(ngq_gptq_relative_error(h.h, cols, w, rows, &qg, &eg, &err), NGQ_OK);
            assert_int_equal(ngq_gptq_relative_error(h.h, cols, w, rows, &qr, &er, &err), NGQ_OK);
            print_message("bits %d act_order %d: relative output error GPTQ %.3e, RTN %.3e (ratio %.3f)\n", bits, act,
                          eg, er, eg / er);
            assert_true(eg < 0.1 * er); /* measured: 0.002 to 0.02 */
            ngq_qtensor_free(&qg);
            ngq_qtensor_free(&qr);
        }
    ngq_hessian_free(&h);
    free(x);
    free(w);
}

static void test_relative_error_matches_direct(void **state)
{
    (void)state;
    const int64_t rows = 20, cols = 48, n = 500;
    float *x = correlated_inputs(n, cols, 5);
    float *w = random_weights(rows, cols, 6);
    ngq_hessian h;
    hessian_of(x, n, cols, &h);
    ngq_qgrid g;
    ngq_qgrid_default(&g, 3);
    ngq_qtensor q;
    ngq_error err = {0};
    assert_int_equal(ngq_quant_rtn(w, rows, cols, &g, &q, &err), NGQ_OK);
    float *qd = malloc((size_t)(rows * cols) * sizeof *qd);
    assert_non_null(qd);
    ngq_qtensor_dequantize(&q, qd);
    double num = 0.0, den = 0.0;
    for (int64_t k = 0; k < n; k++)
        for (int64_t r = 0; r < rows; r++) {
            double yw = 0.0, yq = 0.0;
            for (int64_t j = 0; j < cols; j++) {
                yw += (double)x[k * cols + j] * w[r * cols + j];
                yq += (double)x[k * cols + j] * qd[r * cols + j];
            }
            num += (yw - yq) * (yw - yq);
            den += yw * yw;
        }
    double rel;
    assert_int_equal(ngq_gptq_relative_error(h.h, cols, w, rows, &q, &rel, &err), NGQ_OK);
    assert_true(fabs(rel - num / den) <= 1e-5 * (num / den));
    /* a zero weight has no output energy */
    memset(w, 0, (size_t)(rows * cols) * sizeof *w);
    assert_int_equal(ngq_gptq_relative_error(h.h, cols, w, rows, &q, &rel, &err), NGQ_ERR_NUMERIC);
    ngq_qtensor_free(&q);
    ngq_hessian_free(&h);
    free(qd);
    free(x);
    free(w);
}

static void test_blocked_equals_unblocked(void **state)
{
    (void)state;
    const int64_t rows = 40, cols = 96, n = 1500;
    float *x = correlated_inputs(n, cols, 7);
    float *w = random_weights(rows, cols, 8);
    ngq_hessian h;
    hessian_of(x, n, cols, &h);
    /* block sizes that do and do not divide cols; for dynamic groups the
     * group size is a multiple of the block (see gptq.h) */
    static const struct {
        ngq_granularity gran;
        int64_t group, block;
        int act, stat, sym, bits;
    } cases[] = {
        {NGQ_GRAN_CHANNEL, 0, 128, 0, 0, 0, 4}, {NGQ_GRAN_CHANNEL, 0, 7, 0, 0, 0, 4},
        {NGQ_GRAN_CHANNEL, 0, 40, 1, 0, 1, 3},  {NGQ_GRAN_TENSOR, 0, 32, 0, 0, 0, 4},
        {NGQ_GRAN_GROUP, 32, 16, 0, 0, 0, 4},   {NGQ_GRAN_GROUP, 32, 32, 1, 0, 1, 3},
        {NGQ_GRAN_GROUP, 16, 16, 1, 1, 0, 4},   {NGQ_GRAN_GROUP, 16, 40, 1, 1, 0, 2},
        {NGQ_GRAN_GROUP, 24, 24, 0, 0, 0, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ngq_qgrid g;
        ngq_qgrid_default(&g, cases[i].bits);
        g.granularity = cases[i].gran;
        g.group_size = cases[i].group;
        g.symmetric = cases[i].sym;
        ngq_gptq_options o;
        ngq_gptq_options_default(&o);
        o.block_size = cases[i].block;
        o.act_order = cases[i].act;
        o.static_groups = cases[i].stat;
        assert_matches_reference(w, rows, cols, h.h, &g, &o);
    }
    ngq_hessian_free(&h);
    free(x);
    free(w);
}

static void test_act_order_groups_round_trip(void **state)
{
    (void)state;
    const int64_t rows = 32, cols = 96, n = 1200;
    float *x = correlated_inputs(n, cols, 9);
    float *w = random_weights(rows, cols, 10);
    ngq_hessian h;
    hessian_of(x, n, cols, &h);
    ngq_error err = {0};
    for (int stat = 1; stat >= 0; stat--) {
        ngq_qgrid g;
        ngq_qgrid_default(&g, 4);
        g.granularity = NGQ_GRAN_GROUP;
        g.group_size = 16;
        g.scale_dtype = NGQ_SCALE_F16;
        ngq_gptq_options o;
        ngq_gptq_options_default(&o);
        o.act_order = 1;
        o.static_groups = stat;
        o.block_size = 16;
        ngq_qtensor q, copy;
        assert_int_equal(ngq_gptq_quantize(w, rows, cols, h.h, &g, &o, &q, NULL, &err), NGQ_OK);
        if (stat) {
            /* static groups: no g_idx, and each group's parameters are those
             * of the original weights in original column order */
            assert_null(q.g_idx);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t grp = 0; grp < cols / 16; grp++) {
                    ngq_qparams want, got = ngq_qtensor_get_params(&q, r, grp);
                    assert_int_equal(ngq_quant_find_params(&g, w + r * cols + grp * 16, 16, &want, &err), NGQ_OK);
                    assert_true(want.scale == got.scale && want.zero == got.zero);
                }
        } else {
            /* dynamic groups: g_idx records each column's group, the groups
             * being runs of 16 columns in descending diag H order */
            assert_non_null(q.g_idx);
            for (int64_t a = 0; a < cols; a++)
                for (int64_t b = 0; b < cols; b++)
                    if (q.g_idx[a] < q.g_idx[b]) assert_true(h.h[a * cols + a] >= h.h[b * cols + b]);
        }
        assert_int_equal(ngq_qtensor_validate(&q, &err), NGQ_OK);
        /* parts round trip into a fresh tensor */
        assert_int_equal(ngq_qtensor_init(&copy, rows, cols, &g, q.g_idx != NULL, &err), NGQ_OK);
        ngq_qtensor_part pq[NGQ_QTENSOR_MAX_PARTS], pc[NGQ_QTENSOR_MAX_PARTS];
        int np = ngq_qtensor_get_parts(&q, pq);
        assert_int_equal(ngq_qtensor_get_parts(&copy, pc), np);
        for (int i = 0; i < np; i++) {
            assert_int_equal(ngq_qtensor_check_part(&copy, pq[i].name, pq[i].dtype, pq[i].ndim, pq[i].shape,
                                                    pq[i].bytes, &err), NGQ_OK);
            memcpy(pc[i].data, pq[i].data, pq[i].bytes);
        }
        assert_int_equal(ngq_qtensor_validate(&copy, &err), NGQ_OK);
        float *d1 = malloc((size_t)(rows * cols) * sizeof *d1), *d2 = malloc((size_t)(rows * cols) * sizeof *d2);
        assert_true(d1 && d2);
        ngq_qtensor_dequantize(&q, d1);
        ngq_qtensor_dequantize(&copy, d2);
        assert_memory_equal(d1, d2, (size_t)(rows * cols) * sizeof *d1);
        free(d1);
        free(d2);
        ngq_qtensor_free(&q);
        ngq_qtensor_free(&copy);
        /* and both agree with the unblocked reference */
        o.block_size = 16;
        assert_matches_reference(w, rows, cols, h.h, &g, &o);
    }
    ngq_hessian_free(&h);
    free(x);
    free(w);
}

static void test_dead_column(void **state)
{
    (void)state;
    const int64_t rows = 16, cols = 32, n = 600;
    float *x = correlated_inputs(n, cols, 11);
    for (int64_t r = 0; r < n; r++) x[r * cols + 5] = 0.0f;
    float *w = random_weights(rows, cols, 12);
    ngq_hessian h;
    hessian_of(x, n, cols, &h);
    assert_true(h.h[5 * cols + 5] == 0.0);
    ngq_qgrid g;
    ngq_qgrid_default(&g, 4);
    ngq_gptq_options o;
    ngq_gptq_options_default(&o);
    o.act_order = 1;
    ngq_qtensor q;
    ngq_gptq_report rep;
    ngq_error err = {0};
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h.h, &g, &o, &q, &rep, &err), NGQ_OK);
    assert_int_equal(rep.dead_columns, 1);
    assert_true(h.h[5 * cols + 5] == 0.0); /* the caller's Hessian is untouched */
    float d[32];
    for (int64_t r = 0; r < rows; r++) {
        ngq_qtensor_dequantize_row(&q, r, d);
        assert_true(d[5] == 0.0f);
        for (int j = 0; j < 32; j++) assert_true(isfinite(d[j]));
    }
    ngq_qtensor_free(&q);
    assert_matches_reference(w, rows, cols, h.h, &g, &o);
    ngq_hessian_free(&h);
    free(x);
    free(w);
}

static void test_damping_escalation_and_fallback(void **state)
{
    (void)state;
    const int64_t rows = 8, cols = 64;
    float *w = random_weights(rows, cols, 13);
    double *h = calloc((size_t)(cols * cols), sizeof *h);
    assert_non_null(h);
    ngq_qgrid g;
    ngq_qgrid_default(&g, 4);
    ngq_gptq_options o;
    ngq_gptq_options_default(&o);
    ngq_gptq_report rep;
    ngq_qtensor q, qr;
    ngq_error err = {0};
    assert_int_equal(ngq_quant_rtn(w, rows, cols, &g, &qr, &err), NGQ_OK);

    /* rank deficient (two identical inputs, exact pivots) with percdamp 0:
     * the first factorisation fails, percdamp 0.01 succeeds */
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] = 1.0;
    h[0] = h[1] = h[cols] = h[cols + 1] = 4.0;
    o.percdamp = 0.0;
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &q, &rep, &err), NGQ_OK);
    assert_int_equal(rep.escalations, 1);
    assert_int_equal(rep.fell_back_to_rtn, 0);
    assert_true(rep.percdamp_used == 0.01);
    assert_non_null(strstr(rep.note, "after 1 escalations"));
    ngq_qtensor_free(&q);

    /* a negative diagonal entry that enough damping repairs: 0.01 -> 0.1 -> 1 -> 10 */
    memset(h, 0, (size_t)(cols * cols) * sizeof *h);
    for (int64_t i = 0; i < cols; i++) h[i * cols + i] = 1.0;
    h[3 * cols + 3] = -5.0;
    o.percdamp = 0.01;
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &q, &rep, &err), NGQ_OK);
    assert_int_equal(rep.escalations, 3);
    assert_int_equal(rep.fell_back_to_rtn, 0);
    assert_true(fabs(rep.percdamp_used - 10.0) < 1e-12);
    ngq_qtensor_free(&q);

    /* hopeless within 4 escalations: RTN fallback with RTN's codes */
    h[3 * cols + 3] = -60.0;
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &q, &rep, &err), NGQ_OK);
    assert_int_equal(rep.escalations, 4);
    assert_int_equal(rep.fell_back_to_rtn, 1);
    assert_non_null(strstr(rep.note, "fell back to RTN"));
    assert_memory_equal(q.codes, qr.codes, (size_t)(rows * q.row_bytes));
    ngq_qtensor_free(&q);

    /* a negative mean diagonal cannot be damped: immediate fallback */
    h[3 * cols + 3] = -100.0;
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &q, &rep, &err), NGQ_OK);
    assert_int_equal(rep.escalations, 0);
    assert_int_equal(rep.fell_back_to_rtn, 1);
    assert_non_null(strstr(rep.note, "mean of diag(H)"));
    assert_memory_equal(q.codes, qr.codes, (size_t)(rows * q.row_bytes));
    ngq_qtensor_free(&q);

    /* bad options and inputs are errors */
    o.block_size = 0;
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &q, &rep, &err), NGQ_ERR_CONFIG);
    assert_non_null(strstr(err.message, "block_size = 0"));
    ngq_gptq_options_default(&o);
    o.percdamp = -1.0;
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &q, &rep, &err), NGQ_ERR_CONFIG);
    ngq_gptq_options_default(&o);
    h[7] = NAN;
    assert_int_equal(ngq_gptq_quantize(w, rows, cols, h, &g, &o, &q, &rep, &err), NGQ_ERR_NUMERIC);
    assert_non_null(strstr(err.message, "Hessian [0, 7]"));
    ngq_qtensor_free(&qr);
    free(h);
    free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hessian_streaming),
        cmocka_unit_test(test_identity_hessian_gives_rtn_codes),
        cmocka_unit_test(test_gptq_beats_rtn_on_correlated_inputs),
        cmocka_unit_test(test_relative_error_matches_direct),
        cmocka_unit_test(test_blocked_equals_unblocked),
        cmocka_unit_test(test_act_order_groups_round_trip),
        cmocka_unit_test(test_dead_column),
        cmocka_unit_test(test_damping_escalation_and_fallback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
