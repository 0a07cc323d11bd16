/* test_ops.c: every kernel of ops.h. Backward passes are checked against
 * central finite differences of a scalar loss L = sum(out * R) (R fixed and
 * random, so dout = R), accumulated in double. The fast paths (sgemm slices,
 * blocked attention, vectorized exp/GELU) are compared with the plain-loop
 * references, results are compared bit for bit between 1 and 2 OpenMP
 * threads, and dropout masks are checked for reproducibility and rate.
 *
 * Finite-difference tolerances: forward passes run in float, so L carries a
 * rounding error of roughly 1e-7 * sum|out*R|; divided by the step 2*eps
 * (eps = 1e-2, inputs of size ~1) this is the noise floor of the numerical
 * derivative. The worst |analytic - numeric| observed is ~1e-4 for gradients
 * of size 1..10 (6e-6 for cross-entropy, whose gradients are ~0.25), so each
 * check accepts |analytic - numeric| <= atol + rtol * |numeric| with
 * atol = 5e-4 (5e-5 for cross-entropy) and rtol = 1e-3: about 4x above the
 * noise, and 100x below the O(1) relative change of a missing term, a wrong
 * factor or a sign error in a backward formula. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanogptq/ops.h"
#include "nanogptq/rng.h"

/* ---- helpers -------------------------------------------------------------- */

static float *random_floats(size_t n, float scale, uint64_t seed)
{
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 11);
    for (size_t i = 0; i < n; i++) x[i] = ngq_rng_normal(&rng) * scale;
    return x;
}

static float *zero_floats(size_t n)
{
    float *x = calloc(n ? n : 1, sizeof *x);
    assert_non_null(x);
    return x;
}

static double dot_double(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

#define FD_EPS 1e-2f
#define FD_ATOL 5e-4
#define FD_ATOL_CE 5e-5
#define FD_RTOL 1e-3

typedef double (*loss_fn)(void *ctx);

/* Compares g (analytic dL/dx) with central differences of f at up to
 * `samples` indices of x (all of them when n <= samples). */
static void check_gradient(const char *what, float *x, const float *g, size_t n, loss_fn f,
                           void *ctx, float eps, double atol, double rtol, int samples,
                           uint64_t seed)
{
    ngq_rng rng;
    ngq_rng_seed(&rng, seed, 5);
    double worst = 0.0, worst_abs = 0.0, largest = 0.0;
    size_t count = n <= (size_t)samples ? n : (size_t)samples;
    for (size_t s = 0; s < count; s++) {
        size_t i = n <= (size_t)samples ? s : ngq_rng_below(&rng, (uint32_t)n);
        float orig = x[i];
        float up = orig + eps, down = orig - eps;
        x[i] = up;
        double lp = f(ctx);
        x[i] = down;
        double lm = f(ctx);
        x[i] = orig;
        double numeric = (lp - lm) / ((double)up - (double)down);
        double diff = fabs(numeric - (double)g[i]);
        double allowed = atol + rtol * fabs(numeric);
        if (diff / allowed > worst) worst = diff / allowed;
        if (diff > worst_abs) worst_abs = diff;
        if (fabs(numeric) > largest) largest = fabs(numeric);
        if (diff > allowed) {
            print_error("%s[%zu]: analytic %.8g numeric %.8g (diff %.3g > %.3g)\n", what, i,
                        (double)g[i], numeric, diff, allowed);
            fail();
        }
    }
    if (getenv("NGQ_TEST_VERBOSE"))
        print_message("%-28s worst diff / allowed = %.3f (worst diff %.2g, "
                      "largest gradient %.2g)\n", what, worst, worst_abs, largest);
}

static void assert_close(const char *what, const float *a, const float *b, size_t n,
                         double atol, double rtol)
{
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)a[i] - (double)b[i]);
        if (!(diff <= atol + rtol * fabs((double)b[i]))) {
            print_error("%s[%zu]: %.9g vs %.9g (diff %.3g)\n", what, i, (double)a[i],
                        (double)b[i], diff);
            fail();
        }
    }
}

static void assert_same_bits(const char *what, const float *a, const float *b, size_t n)
{
    if (memcmp(a, b, n * sizeof *a) != 0) {
        for (size_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], sizeof *a) != 0) {
                print_error("%s differs at %zu: %.9g vs %.9g\n", what, i, (double)a[i],
                            (double)b[i]);
                break;
            }
        fail();
    }
}

/* ---- exp and GELU ------------------------------------------------------------ */

static void test_exp_fast_accuracy(void **state)
{
    (void)state;
    double worst = 0.0;
    for (int i = 0; i <= 200000; i++) {
        float x = -87.0f + 175.0f * (float)i / 200000.0f;
        double truth = exp((double)x);
        double rel = fabs((double)ngq_exp_fast(x) - truth) / truth;
        if (rel > worst) worst = rel;
    }
    /* about 2 ulp of float (2^-23 = 1.19e-7) */
    assert_true(worst < 2.5e-7);
    assert_true(ngq_exp_fast(0.0f) == 1.0f);
    assert_true(ngq_exp_fast(-100.0f) == 0.0f);
    assert_true(ngq_exp_fast(-INFINITY) == 0.0f);
    assert_true(isinf(ngq_exp_fast(100.0f)));
    assert_true(isnan(ngq_exp_fast(NAN)));
}

static void test_gelu_fast_accuracy(void **state)
{
    (void)state;
    /* Against double precision: relative error in the bulk (x >= -6, where
     * |gelu| >= 6e-9), relative error in the far tail (values down to 1e-35,
     * limited by rounding the exponent argument x^2/2 ~ 80 to float), and
     * absolute error of the derivative (which crosses zero near -0.75). */
    double worst_bulk = 0.0, worst_tail = 0.0, worst_grad = 0.0;
    for (int i = 0; i <= 200000; i++) {
        float x = -13.0f + 26.0f * (float)i / 200000.0f;
        double xd = x;
        double cdf = 0.5 * erfc(-xd / sqrt(2.0));
        double pdf = exp(-0.5 * xd * xd) / sqrt(2.0 * M_PI);
        double value = xd * cdf, grad = cdf + xd * pdf;
        if (value != 0.0) {
            double rel = fabs(ngq_gelu_fast(x) - value) / fabs(value);
            if (x >= -6.0f) {
                if (rel > worst_bulk) worst_bulk = rel;
            } else if (fabs(value) > 1e-35 && rel > worst_tail) {
                worst_tail = rel;
            }
        }
        double err = fabs(ngq_gelu_grad_fast(x) - grad);
        if (err > worst_grad) worst_grad = err;
    }
    if (getenv("NGQ_TEST_VERBOSE"))
        print_message("gelu fast: relative error bulk %.3g, tail %.3g; grad absolute %.3g\n",
                      worst_bulk, worst_tail, worst_grad);
    assert_true(worst_bulk < 2e-6);
    assert_true(worst_tail < 1e-5);
    assert_true(worst_grad < 5e-7);
    /* The textbook form loses the tail to cancellation in 1 + erf(x)... */
    assert_true(ngq_gelu_reference(-12.0f) == 0.0f);
    assert_true(ngq_gelu_fast(-12.0f) < 0.0f);
    /* ...but in the bulk the fast and reference forms agree to a few ulp. */
    for (int i = 0; i <= 10000; i++) {
        float x = -3.0f + 6.0f * (float)i / 10000.0f;
        assert_true(fabs(ngq_gelu_fast(x) - ngq_gelu_reference(x)) <= 4e-7 * (fabs(x) + 1e-3));
        assert_true(fabs(ngq_gelu_grad_fast(x) - ngq_gelu_grad_reference(x)) <= 1e-6);
    }
}

static void test_gelu_arrays_match_scalar_and_reference(void **state)
{
    (void)state;
    const size_t n = 100003; /* odd length: vector body and scalar tail */
    float *x = random_floats(n, 3.0f, 1);
    float *fast = zero_floats(n), *ref = zero_floats(n);
    ngq_gelu_forward(fast, x, n);
    ngq_gelu_forward_reference(ref, x, n);
    for (size_t i = 0; i < n; i++) {
        float scalar = ngq_gelu_fast(x[i]);
        assert_memory_equal(&fast[i], &scalar, sizeof scalar);
    }
    assert_close("gelu forward", fast, ref, n, 1e-6, 1e-6);
    float *dout = random_floats(n, 1.0f, 2);
    float *dfast = random_floats(n, 1.0f, 3), *dref = random_floats(n, 1.0f, 3);
    ngq_gelu_backward(dfast, x, dout, n);
    ngq_gelu_backward_reference(dref, x, dout, n);
    assert_close("gelu backward", dfast, dref, n, 2e-6, 1e-6);
    /* in place */
    memcpy(ref, x, n * sizeof *x);
    ngq_gelu_forward(ref, ref, n);
    assert_memory_equal(ref, fast, n * sizeof *fast);
    free(x), free(fast), free(ref), free(dout), free(dfast), free(dref);
}

/* ---- embedding ----------------------------------------------------------------- */

typedef struct {
    float *out, *wte, *wpe, *R;
    uint16_t *tokens;
    int B, T, C;
} embedding_ctx;

static double embedding_loss(void *p)
{
    embedding_ctx *c = p;
    ngq_embedding_forward(c->out, c->tokens, c->wte, c->wpe, c->B, c->T, c->C);
    return dot_double(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void test_embedding_gradients(void **state)
{
    (void)state;
    embedding_ctx c = {.B = 3, .T = 5, .C = 7};
    const int V = 4, N = c.B * c.T;
    c.wte = random_floats((size_t)V * c.C, 1.0f, 1);
    c.wpe = random_floats((size_t)c.T * c.C, 1.0f, 2);
    c.R = random_floats((size_t)N * c.C, 1.0f, 3);
    c.out = zero_floats((size_t)N * c.C);
    c.tokens = malloc((size_t)N * sizeof *c.tokens);
    for (int i = 0; i < N; i++) c.tokens[i] = (uint16_t)((i * 7 + 1) % V); /* repeats */
    float *dwte = zero_floats((size_t)V * c.C), *dwpe = zero_floats((size_t)c.T * c.C);
    ngq_embedding_backward(dwte, dwpe, c.R, c.tokens, c.B, c.T, c.C);
    /* L is linear in the tables: differences are exact up to rounding. */
    check_gradient("embedding dwte", c.wte, dwte, (size_t)V * c.C, embedding_loss, &c, FD_EPS,
                   FD_ATOL, FD_RTOL, 1000, 1);
    check_gradient("embedding dwpe", c.wpe, dwpe, (size_t)c.T * c.C, embedding_loss, &c, FD_EPS,
                   FD_ATOL, FD_RTOL, 1000, 2);
    free(c.wte), free(c.wpe), free(c.R), free(c.out), free(c.tokens), free(dwte), free(dwpe);
}

/* ---- layernorm ----------------------------------------------------------------- */

typedef struct {
    float *out, *inp, *w, *b, *R;
    int N, C;
} layernorm_ctx;

static double layernorm_loss(void *p)
{
    layernorm_ctx *c = p;
    ngq_layernorm_forward(c->out, NULL, NULL, c->inp, c->w, c->b, c->N, c->C);
    return dot_double(c->out, c->R, (size_t)c->N * c->C);
}

static void run_layernorm_gradients(int with_bias)
{
    layernorm_ctx c = {.N = 6, .C = 37}; /* C not a multiple of 8: tails */
    size_t NC = (size_t)c.N * c.C;
    c.inp = random_floats(NC, 2.0f, 1);
    for (size_t i = 0; i < NC; i++) c.inp[i] += 0.5f; /* nonzero mean */
    c.w = random_floats((size_t)c.C, 1.0f, 2);
    c.b = with_bias ? random_floats((size_t)c.C, 1.0f, 3) : NULL;
    c.R = random_floats(NC, 1.0f, 4);
    c.out = zero_floats(NC);
    float *mean = zero_floats((size_t)c.N), *rstd = zero_floats((size_t)c.N);
    ngq_layernorm_forward(c.out, mean, rstd, c.inp, c.w, c.b, c.N, c.C);
    /* out rows are normalised (before the affine part) */
    float *din = zero_floats(NC), *dw = zero_floats((size_t)c.C);
    float *db = with_bias ? zero_floats((size_t)c.C) : NULL;
    ngq_layernorm_backward(din, dw, db, c.R, c.inp, c.w, mean, rstd, c.N, c.C);
    check_gradient(with_bias ? "layernorm dinp (bias)" : "layernorm dinp", c.inp, din, NC,
                   layernorm_loss, &c, FD_EPS, FD_ATOL, FD_RTOL, 120, 1);
    check_gradient("layernorm dweight", c.w, dw, (size_t)c.C, layernorm_loss, &c, FD_EPS, FD_ATOL,
                   FD_RTOL, 100, 2);
    if (with_bias)
        check_gradient("layernorm dbias", c.b, db, (size_t)c.C, layernorm_loss, &c, FD_EPS,
                       FD_ATOL, FD_RTOL, 100, 3);
    free(c.inp), free(c.w), free(c.b), free(c.R), free(c.out), free(mean), free(rstd), free(din),
        free(dw), free(db);
}

static void test_layernorm_gradients(void **state)
{
    (void)state;
    run_layernorm_gradients(1);
    run_layernorm_gradients(0);
}

static void test_layernorm_normalises(void **state)
{
    (void)state;
    const int N = 5, C = 64;
    float *x = random_floats((size_t)N * C, 3.0f, 9), *out = zero_floats((size_t)N * C);
    float *w = zero_floats((size_t)C);
    for (int c = 0; c < C; c++) w[c] = 1.0f;
    float mean[5], rstd[5];
    ngq_layernorm_forward(out, mean, rstd, x, w, NULL, N, C);
    for (int n = 0; n < N; n++) {
        double s = 0, s2 = 0;
        for (int c = 0; c < C; c++) {
            s += out[n * C + c];
            s2 += (double)out[n * C + c] * out[n * C + c];
        }
        assert_true(fabs(s / C) < 1e-6);
        assert_true(fabs(s2 / C - 1.0) < 1e-3); /* eps 1e-5 against variance ~9 */
    }
    free(x), free(out), free(w);
}

/* ---- linear ---------------------------------------------------------------------- */

typedef struct {
    float *out, *inp, *w, *b, *R;
    int N, K, M;
} linear_ctx;

static double linear_loss(void *p)
{
    linear_ctx *c = p;
    ngq_linear_forward(c->out, c->inp, c->w, c->b, c->N, c->K, c->M);
    return dot_double(c->out, c->R, (size_t)c->N * c->M);
}

static void run_linear_gradients(int with_bias)
{
    linear_ctx c = {.N = 9, .K = 13, .M = 11};
    c.inp = random_floats((size_t)c.N * c.K, 1.0f, 1);
    c.w = random_floats((size_t)c.M * c.K, 1.0f, 2);
    c.b = with_bias ? random_floats((size_t)c.M, 1.0f, 3) : NULL;
    c.R = random_floats((size_t)c.N * c.M, 1.0f, 4);
    c.out = zero_floats((size_t)c.N * c.M);
    float *din = zero_floats((size_t)c.N * c.K), *dw = zero_floats((size_t)c.M * c.K);
    float *db = with_bias ? zero_floats((size_t)c.M) : NULL;
    ngq_linear_backward(din, dw, db, c.R, c.inp, c.w, c.N, c.K, c.M);
    /* L is bilinear: central differences are exact up to float rounding. */
    check_gradient("linear dinp", c.inp, din, (size_t)c.N * c.K, linear_loss, &c, FD_EPS, FD_ATOL,
                   FD_RTOL, 200, 1);
    check_gradient("linear dweight", c.w, dw, (size_t)c.M * c.K, linear_loss, &c, FD_EPS, FD_ATOL,
                   FD_RTOL, 200, 2);
    if (with_bias)
        check_gradient("linear dbias", c.b, db, (size_t)c.M, linear_loss, &c, FD_EPS, FD_ATOL,
                       FD_RTOL, 200, 3);
    free(c.inp), free(c.w), free(c.b), free(c.R), free(c.out), free(din), free(dw), free(db);
}

static void test_linear_gradients(void **state)
{
    (void)state;
    run_linear_gradients(1);
    run_linear_gradients(0);
}

/* Fast (sliced sgemm) against the double-accumulating reference, for shapes
 * that take the row-sliced path, the column-sliced path (few rows) and odd
 * sizes. Tolerance: float sgemm vs double sums over K <= 768 terms of size ~1. */
static void test_linear_matches_reference(void **state)
{
    (void)state;
    const int shapes[][3] = {
        {300, 48, 144}, {3, 40, 200}, {1, 192, 768}, {257, 96, 88}, {64, 33, 17}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], K = shapes[s][1], M = shapes[s][2];
        float *inp = random_floats((size_t)N * K, 1.0f, 10 + s);
        float *w = random_floats((size_t)M * K, 1.0f, 20 + s);
        float *b = random_floats((size_t)M, 1.0f, 30 + s);
        float *res = random_floats((size_t)N * M, 1.0f, 40 + s);
        float *fast = zero_floats((size_t)N * M), *ref = zero_floats((size_t)N * M);
        double tol = 2e-6 * K;
        ngq_linear_forward(fast, inp, w, b, N, K, M);
        ngq_linear_forward_reference(ref, inp, w, b, N, K, M);
        assert_close("linear forward", fast, ref, (size_t)N * M, tol, 1e-5);
        ngq_linear_forward(fast, inp, w, NULL, N, K, M);
        ngq_linear_forward_reference(ref, inp, w, NULL, N, K, M);
        assert_close("linear forward (no bias)", fast, ref, (size_t)N * M, tol, 1e-5);
        /* residual fused: out = res + inp W^T + b, out-of-place and in place */
        ngq_linear_residual_forward(fast, res, inp, w, b, N, K, M);
        ngq_linear_forward_reference(ref, inp, w, b, N, K, M);
        for (size_t i = 0; i < (size_t)N * M; i++) ref[i] += res[i];
        assert_close("linear residual", fast, ref, (size_t)N * M, tol, 1e-5);
        ngq_linear_residual_forward(res, res, inp, w, b, N, K, M);
        assert_close("linear residual in place", res, ref, (size_t)N * M, tol, 1e-5);
        /* linear + gelu */
        float *pre = zero_floats((size_t)N * M), *g = zero_floats((size_t)N * M);
        ngq_linear_gelu_forward(pre, g, inp, w, b, N, K, M);
        ngq_linear_forward_reference(ref, inp, w, b, N, K, M);
        assert_close("linear gelu pre", pre, ref, (size_t)N * M, tol, 1e-5);
        for (size_t i = 0; i < (size_t)N * M; i++) assert_true(g[i] == ngq_gelu_fast(pre[i]));
        /* backward, accumulating into nonzero buffers */
        float *dout = random_floats((size_t)N * M, 1.0f, 50 + s);
        float *din_f = random_floats((size_t)N * K, 1.0f, 60);
        float *din_r = random_floats((size_t)N * K, 1.0f, 60);
        float *dw_f = random_floats((size_t)M * K, 1.0f, 61);
        float *dw_r = random_floats((size_t)M * K, 1.0f, 61);
        float *db_f = random_floats((size_t)M, 1.0f, 62);
        float *db_r = random_floats((size_t)M, 1.0f, 62);
        ngq_linear_backward(din_f, dw_f, db_f, dout, inp, w, N, K, M);
        ngq_linear_backward_reference(din_r, dw_r, db_r, dout, inp, w, N, K, M);
        assert_close("linear dinp", din_f, din_r, (size_t)N * K, 2e-6 * M, 1e-5);
        assert_close("linear dweight", dw_f, dw_r, (size_t)M * K, 2e-6 * N, 1e-5);
        assert_close("linear dbias", db_f, db_r, (size_t)M, 2e-6 * N, 1e-5);
        free(inp), free(w), free(b), free(res), free(fast), free(ref), free(pre), free(g),
            free(dout), free(din_f), free(din_r), free(dw_f), free(dw_r), free(db_f), free(db_r);
    }
}

static void test_linear_backward_accumulates(void **state)
{
    (void)state;
    const int N = 130, K = 24, M = 40;
    float *inp = random_floats((size_t)N * K, 1.0f, 1), *w = random_floats((size_t)M * K, 1.0f, 2);
    float *dout = random_floats((size_t)N * M, 1.0f, 3);
    float *din1 = zero_floats((size_t)N * K), *din2 = zero_floats((size_t)N * K);
    float *dw1 = zero_floats((size_t)M * K), *dw2 = zero_floats((size_t)M * K);
    float *db1 = zero_floats((size_t)M), *db2 = zero_floats((size_t)M);
    ngq_linear_backward(din1, dw1, db1, dout, inp, w, N, K, M);
    ngq_linear_backward(din2, dw2, db2, dout, inp, w, N, K, M);
    ngq_linear_backward(din2, dw2, db2, dout, inp, w, N, K, M);
    for (size_t i = 0; i < (size_t)N * K; i++) assert_true(din2[i] == 2.0f * din1[i]);
    for (size_t i = 0; i < (size_t)M * K; i++) assert_true(dw2[i] == 2.0f * dw1[i]);
    for (size_t i = 0; i < (size_t)M; i++) assert_true(db2[i] == 2.0f * db1[i]);
    free(inp), free(w), free(dout), free(din1), free(dw1), free(db1), free(din2), free(dw2),
         free(db2);
}

/* ---- attention --------------------------------------------------------------------- */

typedef struct {
    float *out, *att, *scratch, *qkv, *R;
    uint8_t *mask;
    float keep;
    int B, T, C, NH;
} attention_ctx;

static double attention_loss(void *p)
{
    attention_ctx *c = p;
    ngq_attention_forward(c->out, c->att, c->scratch, c->qkv, c->mask, c->keep, c->B, c->T, c->C,
                          c->NH);
    return dot_double(c->out, c->R, (size_t)c->B * c->T * c->C);
}

static void run_attention_gradients(int with_dropout)
{
    attention_ctx c = {.B = 2, .T = 7, .C = 12, .NH = 3};
    size_t N = (size_t)c.B * c.T, TT = ngq_attention_matrix_elements(c.B, c.NH, c.T);
    c.qkv = random_floats(N * 3 * c.C, 1.0f, 1);
    c.R = random_floats(N * c.C, 1.0f, 2);
    c.out = zero_floats(N * c.C);
    c.att = zero_floats(TT);
    c.scratch = zero_floats(TT);
    c.keep = 1.0f;
    if (with_dropout) {
        c.mask = malloc(TT);
        ngq_dropout_fill_causal_mask(c.mask, c.B, c.NH, c.T, 0.3f, 77);
        c.keep = ngq_dropout_keep_scale(0.3f);
    }
    attention_loss(&c);
    float *dqkv = zero_floats(N * 3 * c.C);
    ngq_attention_backward(dqkv, c.scratch, c.R, c.qkv, c.att, c.mask, c.keep, c.B, c.T, c.C, c.NH);
    check_gradient(with_dropout ? "attention dqkv (dropout)" : "attention dqkv", c.qkv, dqkv,
                   N * 3 * c.C, attention_loss, &c, FD_EPS, FD_ATOL, FD_RTOL, 300, 1);
    free(c.qkv), free(c.R), free(c.out), free(c.att), free(c.scratch), free(c.mask), free(dqkv);
}

static void test_attention_gradients(void **state)
{
    (void)state;
    run_attention_gradients(0);
    run_attention_gradients(1);
}

/* Blocked sgemm attention against the plain loops, for T below, at and above
 * the block size (64) and not a multiple of it. */
static void run_attention_vs_reference(int B, int T, int C, int NH, int with_dropout)
{
    size_t N = (size_t)B * T, TT = ngq_attention_matrix_elements(B, NH, T);
    float *qkv = random_floats(N * 3 * C, 1.0f, (uint64_t)T);
    float *out_f = zero_floats(N * C), *out_r = zero_floats(N * C);
    float *att_f = zero_floats(TT), *att_r = zero_floats(TT), *scratch = zero_floats(TT);
    uint8_t *mask = NULL;
    float keep = 1.0f;
    if (with_dropout) {
        mask = malloc(TT);
        ngq_dropout_fill_causal_mask(mask, B, NH, T, 0.2f, 5);
        keep = ngq_dropout_keep_scale(0.2f);
    }
    ngq_attention_forward(out_f, att_f, scratch, qkv, mask, keep, B, T, C, NH);
    ngq_attention_forward_reference(out_r, att_r, qkv, mask, keep, B, T, C, NH);
    assert_close("attention out", out_f, out_r, N * C, 2e-6, 1e-5);
    for (size_t r = 0; r < (size_t)B * NH * T; r++) {
        size_t i = r % (size_t)T;
        assert_close("attention probabilities", att_f + r * T, att_r + r * T, i + 1, 1e-7, 1e-5);
    }
    float *dout = random_floats(N * C, 1.0f, 99);
    float *dq_f = random_floats(N * 3 * C, 1.0f, 7), *dq_r = random_floats(N * 3 * C, 1.0f, 7);
    ngq_attention_backward(dq_f, scratch, dout, qkv, att_f, mask, keep, B, T, C, NH);
    ngq_attention_backward_reference(dq_r, dout, qkv, att_r, mask, keep, B, T, C, NH);
    assert_close("attention dqkv", dq_f, dq_r, N * 3 * C, 1e-5, 1e-4);
    free(qkv), free(out_f), free(out_r), free(att_f), free(att_r), free(scratch), free(mask),
        free(dout), free(dq_f), free(dq_r);
}

static void test_attention_matches_reference(void **state)
{
    (void)state;
    run_attention_vs_reference(2, 5, 16, 2, 0);
    run_attention_vs_reference(1, 64, 32, 2, 0);
    run_attention_vs_reference(2, 150, 48, 3, 0);
    run_attention_vs_reference(2, 150, 48, 3, 1);
}

/* The KV-cached path: all positions at once (pos0 = 0) and one token at a
 * time against the training forward. */
static void test_attention_cached(void **state)
{
    (void)state;
    const int T = 70, C = 24, NH = 3;
    float *qkv = random_floats((size_t)T * 3 * C, 1.0f, 3);
    float *out = zero_floats((size_t)T * C), *att = zero_floats((size_t)NH * T * T);
    ngq_attention_forward(out, att, NULL, qkv, NULL, 1.0f, 1, T, C, NH);
    float *cached = zero_floats((size_t)T * C);
    float *scratch = zero_floats(ngq_attention_cached_scratch_floats(0, T, NH));
    ngq_attention_forward_cached(cached, qkv, 3 * C, qkv + C, 3 * C, qkv + 2 * C, 3 * C, scratch, 0,
                                 T, C, NH);
    assert_close("cached, all positions", cached, out, (size_t)T * C, 1e-6, 1e-5);
    /* incremental: keys and values in separate caches, as a sampler keeps them */
    float *kc = zero_floats((size_t)T * C), *vc = zero_floats((size_t)T * C);
    float *step_out = zero_floats((size_t)C);
    for (int t = 0; t < T; t++) {
        memcpy(kc + (size_t)t * C, qkv + (size_t)t * 3 * C + C, (size_t)C * sizeof(float));
        memcpy(vc + (size_t)t * C, qkv + (size_t)t * 3 * C + 2 * C, (size_t)C * sizeof(float));
        assert_true(ngq_attention_cached_scratch_floats(t, 1, NH) <= (size_t)NH * T);
        ngq_attention_forward_cached(step_out, qkv + (size_t)t * 3 * C, 3 * C, kc, C, vc, C,
                                     scratch, t, 1, C, NH);
        assert_close("cached, one token", step_out, out + (size_t)t * C, (size_t)C, 1e-6, 1e-5);
    }
    free(qkv), free(out), free(att), free(cached), free(scratch), free(kc), free(vc),
         free(step_out);
}

/* ---- gelu, residual, dropout, cross-entropy gradients ---------------------------------- */

typedef struct {
    float *out, *inp, *R;
    size_t n;
} gelu_ctx;

static double gelu_loss(void *p)
{
    gelu_ctx *c = p;
    ngq_gelu_forward(c->out, c->inp, c->n);
    return dot_double(c->out, c->R, c->n);
}

static void test_gelu_gradients(void **state)
{
    (void)state;
    gelu_ctx c = {.n = 101};
    c.inp = random_floats(c.n, 2.0f, 1);
    c.R = random_floats(c.n, 1.0f, 2);
    c.out = zero_floats(c.n);
    float *din = zero_floats(c.n);
    ngq_gelu_backward(din, c.inp, c.R, c.n);
    check_gradient("gelu dinp", c.inp, din, c.n, gelu_loss, &c, FD_EPS, FD_ATOL, FD_RTOL, 101, 1);
    free(c.inp), free(c.R), free(c.out), free(din);
}

typedef struct {
    float *out, *a, *b, *R;
    uint8_t *mask;
    float keep;
    size_t n;
} elementwise_ctx;

static double residual_loss(void *p)
{
    elementwise_ctx *c = p;
    ngq_residual_forward(c->out, c->a, c->b, c->n);
    return dot_double(c->out, c->R, c->n);
}

static double dropout_loss(void *p)
{
    elementwise_ctx *c = p;
    ngq_dropout_forward(c->out, c->a, c->mask, c->keep, c->n);
    return dot_double(c->out, c->R, c->n);
}

static void test_residual_and_dropout_gradients(void **state)
{
    (void)state;
    elementwise_ctx c = {.n = 77};
    c.a = random_floats(c.n, 1.0f, 1);
    c.b = random_floats(c.n, 1.0f, 2);
    c.R = random_floats(c.n, 1.0f, 3);
    c.out = zero_floats(c.n);
    float *da = zero_floats(c.n), *db = zero_floats(c.n);
    ngq_residual_backward(da, db, c.R, c.n);
    check_gradient("residual da", c.a, da, c.n, residual_loss, &c, FD_EPS, FD_ATOL, FD_RTOL, 77, 1);
    check_gradient("residual db", c.b, db, c.n, residual_loss, &c, FD_EPS, FD_ATOL, FD_RTOL, 77, 2);

    c.mask = malloc(c.n);
    ngq_dropout_fill_mask(c.mask, 1, c.n, 0.4f, 1234);
    c.keep = ngq_dropout_keep_scale(0.4f);
    float *dd = zero_floats(c.n);
    ngq_dropout_backward(dd, c.R, c.mask, c.keep, c.n);
    check_gradient("dropout dinp", c.a, dd, c.n, dropout_loss, &c, FD_EPS, FD_ATOL, FD_RTOL, 77, 3);
    int dropped = 0;
    for (size_t i = 0; i < c.n; i++) {
        dropped += c.mask[i] == 0;
        if (!c.mask[i]) assert_true(dd[i] == 0.0f);
    }
    assert_true(dropped > 0 && dropped < (int)c.n);
    /* fused residual dropout = residual + dropout */
    float *fused = zero_floats(c.n);
    ngq_dropout_residual_forward(fused, c.b, c.a, c.mask, c.keep, c.n);
    ngq_dropout_forward(c.out, c.a, c.mask, c.keep, c.n);
    for (size_t i = 0; i < c.n; i++) assert_true(fused[i] == c.b[i] + c.out[i]);
    free(c.a), free(c.b), free(c.R), free(c.out), free(da), free(db), free(c.mask), free(dd),
        free(fused);
}

typedef struct {
    float *logits, *probs, *losses;
    uint16_t *targets;
    int N, V;
} ce_ctx;

static double ce_loss(void *p)
{
    ce_ctx *c = p;
    ngq_softmax_cross_entropy_forward(c->probs, c->losses, c->logits, c->targets, c->N, c->V);
    double s = 0.0;
    for (int n = 0; n < c->N; n++) s += c->losses[n];
    return s * 0.25; /* dloss = 0.25 */
}

static void test_cross_entropy_gradients(void **state)
{
    (void)state;
    ce_ctx c = {.N = 6, .V = 19};
    c.logits = random_floats((size_t)c.N * c.V, 2.0f, 1);
    c.probs = zero_floats((size_t)c.N * c.V);
    c.losses = zero_floats((size_t)c.N);
    c.targets = malloc((size_t)c.N * sizeof *c.targets);
    for (int n = 0; n < c.N; n++) c.targets[n] = (uint16_t)((n * 5 + 2) % c.V);
    ce_loss(&c);
    float *dl = zero_floats((size_t)c.N * c.V);
    ngq_softmax_cross_entropy_backward(dl, c.probs, c.targets, 0.25f, c.N, c.V);
    check_gradient("cross-entropy dlogits", c.logits, dl, (size_t)c.N * c.V, ce_loss, &c, FD_EPS,
                   FD_ATOL_CE, FD_RTOL, 200, 1);
    free(c.logits), free(c.probs), free(c.losses), free(c.targets), free(dl);
}

static void test_cross_entropy_matches_reference(void **state)
{
    (void)state;
    const int N = 50, V = 88;
    float *logits = random_floats((size_t)N * V, 5.0f, 4);
    logits[3] = -200.0f; /* far below the max: exp underflows to 0 */
    uint16_t targets[50];
    for (int n = 0; n < N; n++) targets[n] = (uint16_t)((n * 13) % V);
    float *p_f = zero_floats((size_t)N * V), *p_r = zero_floats((size_t)N * V);
    float l_f[50], l_r[50];
    ngq_softmax_cross_entropy_forward(p_f, l_f, logits, targets, N, V);
    ngq_softmax_cross_entropy_forward_reference(p_r, l_r, logits, targets, N, V);
    assert_close("softmax", p_f, p_r, (size_t)N * V, 1e-8, 1e-5);
    assert_close("cross-entropy", l_f, l_r, (size_t)N, 1e-5, 1e-5);
    for (int n = 0; n < N; n++) {
        double s = 0.0;
        for (int v = 0; v < V; v++) s += p_f[n * V + v];
        assert_true(fabs(s - 1.0) < 1e-5);
    }
    /* in place (probs over logits) gives the same */
    ngq_softmax_cross_entropy_forward(logits, l_r, logits, targets, N, V);
    assert_memory_equal(logits, p_f, (size_t)N * V * sizeof(float));
    assert_memory_equal(l_r, l_f, sizeof l_f);
    free(logits), free(p_f), free(p_r);
}

/* ---- dropout masks ------------------------------------------------------------------------ */

static void test_dropout_masks(void **state)
{
    (void)state;
    const size_t rows = 300, len = 1000;
    uint8_t *a = malloc(rows * len), *b = malloc(rows * len);
    ngq_dropout_fill_mask(a, rows, len, 0.2f, ngq_dropout_key(1, 2, 3, 1));
    ngq_dropout_fill_mask(b, rows, len, 0.2f, ngq_dropout_key(1, 2, 3, 1));
    assert_memory_equal(a, b, rows * len);
    size_t kept = 0;
    for (size_t i = 0; i < rows * len; i++) {
        assert_true(a[i] == 0 || a[i] == 1);
        kept += a[i];
    }
    double rate = 1.0 - (double)kept / (double)(rows * len);
    assert_true(fabs(rate - 0.2) < 0.005); /* 300k draws: sd 0.0007 */
    /* row r depends only on (key, r): a shorter fill is a prefix */
    ngq_dropout_fill_mask(b, 10, len, 0.2f, ngq_dropout_key(1, 2, 3, 1));
    assert_memory_equal(a, b, 10 * len);
    /* every key component matters */
    uint64_t keys[4] = {ngq_dropout_key(9, 2, 3, 1), ngq_dropout_key(1, 9, 3, 1),
                        ngq_dropout_key(1, 2, 9, 1), ngq_dropout_key(1, 2, 3, 9)};
    for (int k = 0; k < 4; k++) {
        ngq_dropout_fill_mask(b, rows, len, 0.2f, keys[k]);
        assert_true(memcmp(a, b, rows * len) != 0);
    }
    /* p = 0 keeps everything */
    ngq_dropout_fill_mask(b, rows, len, 0.0f, 1);
    for (size_t i = 0; i < rows * len; i++) assert_int_equal(b[i], 1);
    assert_true(ngq_dropout_keep_scale(0.2f) == 1.0f / 0.8f);
    /* causal masks: zero above the diagonal, rate right below it */
    const int B = 2, NH = 3, T = 50;
    uint8_t *m = malloc(ngq_attention_matrix_elements(B, NH, T));
    ngq_dropout_fill_causal_mask(m, B, NH, T, 0.5f, 42);
    size_t below = 0, kept_below = 0;
    for (size_t r = 0; r < (size_t)B * NH * T; r++) {
        size_t i = r % T;
        for (size_t j = 0; j < (size_t)T; j++) {
            if (j > i) assert_int_equal(m[r * T + j], 0);
            else {
                below++;
                kept_below += m[r * T + j];
            }
        }
    }
    assert_true(fabs((double)kept_below / (double)below - 0.5) < 0.03);
    free(a), free(b), free(m);
}

/* ---- thread-count independence ------------------------------------------------------ */

typedef struct {
    float *lin_out, *lin_din, *lin_dw, *lin_db;
    float *att_out, *att, *att_d;
    float *ln_out, *ln_din, *ln_dw, *ln_db;
    float *emb_dwte, *emb_dwpe;
    float *gelu_out;
} thread_results;

enum { TB = 4, TT_ = 200, TC = 96, TNH = 3, TV = 50, TM = 288 };

static void run_ops_with_threads(int threads, thread_results *r)
{
    omp_set_num_threads(threads);
    const int N = TB * TT_;
    float *x = random_floats((size_t)N * TC, 1.0f, 1), *w = random_floats((size_t)TM * TC, 1.0f, 2);
    float *b = random_floats(TM, 1.0f, 3), *dout = random_floats((size_t)N * TM, 1.0f, 4);
    r->lin_out = zero_floats((size_t)N * TM);
    r->lin_din = zero_floats((size_t)N * TC);
    r->lin_dw = zero_floats((size_t)TM * TC);
    r->lin_db = zero_floats(TM);
    ngq_linear_forward(r->lin_out, x, w, b, N, TC, TM);
    ngq_linear_backward(r->lin_din, r->lin_dw, r->lin_db, dout, x, w, N, TC, TM);

    size_t TT = ngq_attention_matrix_elements(TB, TNH, TT_);
    uint8_t *mask = malloc(TT);
    ngq_dropout_fill_causal_mask(mask, TB, TNH, TT_, 0.1f, 3);
    float *scratch = zero_floats(TT);
    r->att_out = zero_floats((size_t)N * TC);
    r->att = zero_floats(TT);
    r->att_d = zero_floats((size_t)N * TM);
    ngq_attention_forward(r->att_out, r->att, scratch, r->lin_out, mask, 1.0f / 0.9f, TB, TT_, TC,
                          TNH);
    ngq_attention_backward(r->att_d, scratch, x, r->lin_out, r->att, mask, 1.0f / 0.9f, TB, TT_,
                           TC, TNH);

    float *mean = zero_floats(N), *rstd = zero_floats(N);
    r->ln_out = zero_floats((size_t)N * TC);
    r->ln_din = zero_floats((size_t)N * TC);
    r->ln_dw = zero_floats(TC);
    r->ln_db = zero_floats(TC);
    ngq_layernorm_forward(r->ln_out, mean, rstd, x, b, b + TC, N, TC);
    ngq_layernorm_backward(r->ln_din, r->ln_dw, r->ln_db, r->att_out, x, b, mean, rstd, N, TC);

    uint16_t *tokens = malloc((size_t)N * sizeof *tokens);
    for (int i = 0; i < N; i++) tokens[i] = (uint16_t)((i * 31) % TV);
    r->emb_dwte = zero_floats((size_t)TV * TC);
    r->emb_dwpe = zero_floats((size_t)TT_ * TC);
    ngq_embedding_backward(r->emb_dwte, r->emb_dwpe, x, tokens, TB, TT_, TC);

    r->gelu_out = zero_floats((size_t)N * TM);
    ngq_gelu_forward(r->gelu_out, dout, (size_t)N * TM);
    ngq_gelu_backward(r->gelu_out, x, dout, (size_t)N * TC);

    free(x), free(w), free(b), free(dout), free(mask), free(scratch), free(mean), free(rstd),
        free(tokens);
}

static void free_thread_results(thread_results *r)
{
    free(r->lin_out), free(r->lin_din), free(r->lin_dw), free(r->lin_db), free(r->att_out),
        free(r->att), free(r->att_d), free(r->ln_out), free(r->ln_din), free(r->ln_dw),
        free(r->ln_db), free(r->emb_dwte), free(r->emb_dwpe), free(r->gelu_out);
}

static void test_results_independent_of_thread_count(void **state)
{
    (void)state;
    thread_results one, two;
    int saved = omp_get_max_threads();
    run_ops_with_threads(1, &one);
    run_ops_with_threads(2, &two);
    omp_set_num_threads(saved);
    const size_t N = TB * TT_;
    assert_same_bits("linear out", one.lin_out, two.lin_out, N * TM);
    assert_same_bits("linear dinp", one.lin_din, two.lin_din, N * TC);
    assert_same_bits("linear dweight", one.lin_dw, two.lin_dw, (size_t)TM * TC);
    assert_same_bits("linear dbias", one.lin_db, two.lin_db, TM);
    assert_same_bits("attention out", one.att_out, two.att_out, N * TC);
    assert_same_bits("attention dqkv", one.att_d, two.att_d, N * TM);
    assert_same_bits("layernorm out", one.ln_out, two.ln_out, N * TC);
    assert_same_bits("layernorm dinp", one.ln_din, two.ln_din, N * TC);
    assert_same_bits("layernorm dweight", one.ln_dw, two.ln_dw, TC);
    assert_same_bits("layernorm dbias", one.ln_db, two.ln_db, TC);
    assert_same_bits("embedding dwte", one.emb_dwte, two.emb_dwte, (size_t)TV * TC);
    assert_same_bits("embedding dwpe", one.emb_dwpe, two.emb_dwpe, (size_t)TT_ * TC);
    assert_same_bits("gelu", one.gelu_out, two.gelu_out, N * TM);
    free_thread_results(&one);
    free_thread_results(&two);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_fast_accuracy),
        cmocka_unit_test(test_gelu_fast_accuracy),
        cmocka_unit_test(test_gelu_arrays_match_scalar_and_reference),
        cmocka_unit_test(test_embedding_gradients),
        cmocka_unit_test(test_layernorm_gradients),
        cmocka_unit_test(test_layernorm_normalises),
        cmocka_unit_test(test_linear_gradients),
        cmocka_unit_test(test_linear_matches_reference),
        cmocka_unit_test(test_linear_backward_accumulates),
        cmocka_unit_test(test_attention_gradients),
        cmocka_unit_test(test_attention_matches_reference),
        cmocka_unit_test(test_attention_cached),
        cmocka_unit_test(test_gelu_gradients),
        cmocka_unit_test(test_residual_and_dropout_gradients),
        cmocka_unit_test(test_cross_entropy_gradients),
        cmocka_unit_test(test_cross_entropy_matches_reference),
        cmocka_unit_test(test_dropout_masks),
        cmocka_unit_test(test_results_independent_of_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
