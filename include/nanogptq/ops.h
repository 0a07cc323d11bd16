/* ops.h: the GPT model's kernels as forward/backward pairs on raw pointers:
 * embedding, layernorm, linear (cblas_sgemm), causal multi-head attention
 * (training and KV-cached inference), GELU (erf form), residual add, dropout
 * with explicit masks, and fused softmax + cross-entropy.
 *
 * Conventions
 * - Shapes are given above each function; arrays are row-major and contiguous
 *   unless a leading dimension is passed. N is a number of rows (usually B*T).
 * - Backward functions ADD into every gradient they produce (dinp, dweight,
 *   dbias): callers zero gradient buffers when they want plain assignment.
 * - Forward outputs are overwritten, never accumulated (except where a name
 *   says "residual").
 * - Work is split over OpenMP threads in pieces that depend only on the
 *   shapes, never on the thread count, and every reduction runs in a fixed
 *   order: results are bit-identical for any number of threads. OpenBLAS must
 *   be single-threaded (openblas_set_num_threads(1)); each thread calls
 *   cblas_sgemm on its own disjoint slice.
 * - The fast paths (BLAS, vectorized exp/erf) each have a plain-loop
 *   "_reference" twin used by the tests; the references are slow and simple.
 * - Kernels do not validate their arguments (token ids < V, sizes > 0): the
 *   model module does that once per call. They never allocate, print or fail.
 * What this module does not do: parameter layout, activation buffers and the
 * order in which kernels run (model.h), optimisation (optim). */
#ifndef NANOGPTQ_OPS_H
#define NANOGPTQ_OPS_H

#include <stddef.h>
#include <stdint.h>

/* ---- elementwise math ------------------------------------------------- */

/* exp(x) with a Cephes-style polynomial, max error about 2 ulp for
 * -87.3 <= x <= 88; returns 0 below -87.3 (no denormal results), +inf above
 * 88, NaN for NaN. The same arithmetic is used in the vectorized kernels, so
 * scalar tails and vector bodies agree bit for bit. */
float ngq_exp_fast(float x);

/* GELU, exact erf form as in PyTorch nn.GELU(): x * Phi(x) with
 * Phi(x) = 0.5 * (1 + erf(x / sqrt 2)). ngq_gelu_fast computes Phi from an
 * erfc approximation, without cancellation in the negative tail: relative
 * error below 2e-6 for x >= -6 and below 1e-5 down to |gelu| ~ 1e-35 (the
 * derivative: absolute error below 5e-7). ngq_gelu_reference is the textbook
 * formula with erff, which loses the tail (it returns 0 below x ~ -10). */
float ngq_gelu_fast(float x);
float ngq_gelu_reference(float x);
/* d gelu / dx = Phi(x) + x * phi(x) */
float ngq_gelu_grad_fast(float x);
float ngq_gelu_grad_reference(float x);

/* ---- embedding -------------------------------------------------------- */

/* tokens (B,T), wte (V,C), wpe (>=T,C) -> out (B,T,C) = wte[token] + wpe[t] */
void ngq_embedding_forward(float *out, const uint16_t *tokens, const float *wte,
                           const float *wpe, int B, int T, int C);
/* dout (B,T,C) -> dwte (V,C) +=, dwpe (>=T,C) += */
void ngq_embedding_backward(float *dwte, float *dwpe, const float *dout,
                            const uint16_t *tokens, int B, int T, int C);

/* ---- layernorm (eps 1e-5) ------------------------------------------- */

#define NGQ_LAYERNORM_EPS 1e-5f

/* inp (N,C), weight (C), bias (C) or NULL -> out (N,C), mean (N), rstd (N).
 * mean and rstd may be NULL (inference). out must not alias inp. */
void ngq_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int N, int C);
/* dout (N,C), inp (N,C), weight (C), mean (N), rstd (N)
 *   -> dinp (N,C) +=, dweight (C) +=, dbias (C) += (dbias may be NULL) */
void ngq_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const float *mean,
                            const float *rstd, int N, int C);

/* ---- linear: out = inp @ weight^T + bias, weight stored (M,K) -------- */

/* inp (N,K), weight (M,K), bias (M) or NULL -> out (N,M) */
void ngq_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int N, int K, int M);
/* Same with a residual fused in: out (N,M) = residual (N,M) + inp @ weight^T + bias.
 * residual may equal out (in-place add) but must not partially overlap it. */
void ngq_linear_residual_forward(float *out, const float *residual, const float *inp,
                                 const float *weight, const float *bias, int N, int K, int M);
/* Linear followed by GELU, fused per row slice while the slice is in cache:
 * inp (N,K), weight (M,K), bias (M) or NULL -> pre (N,M) = inp @ weight^T + bias,
 * out (N,M) = gelu(pre). pre is kept for the backward pass. */
void ngq_linear_gelu_forward(float *pre, float *out, const float *inp, const float *weight,
                             const float *bias, int N, int K, int M);
/* dout (N,M), inp (N,K), weight (M,K)
 *   -> dinp (N,K) +=, dweight (M,K) +=, dbias (M) +=. Any output may be NULL. */
void ngq_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int N, int K, int M);

/* ---- attention (causal, multi-head, heads split as nanoGPT) ------------
 * qkv (B,T,3C) holds q, k, v in that order along the last axis; head h uses
 * columns [h*hs, (h+1)*hs) of each, hs = C/NH. Scores are scaled by 1/sqrt(hs).
 * att (B,NH,T,T) receives the softmax probabilities P (before dropout). Only
 * entries j <= i of row i are meaningful; entries above the diagonal are not
 * all written and must not be read. Attention dropout is given as a mask
 * (B,NH,T,T) of 0/1 bytes and keep_scale = 1/(1-p); mask NULL = no dropout. */

/* Elements of an att, mask or scratch array: B*NH*T*T (T*T per (b,h) pair). */
size_t ngq_attention_matrix_elements(int B, int NH, int T);

/* qkv (B,T,3C) -> out (B,T,C), att (B,NH,T,T).
 * scratch (B,NH,T,T) receives P*mask*keep_scale when mask is given; with
 * mask NULL it is not touched and may be NULL. */
void ngq_attention_forward(float *out, float *att, float *scratch, const float *qkv,
                           const uint8_t *mask, float keep_scale, int B, int T, int C, int NH);
/* dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T) from the forward, mask as in the
 * forward -> dqkv (B,T,3C) +=. scratch (B,NH,T,T) is overwritten. */
void ngq_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                            const float *att, const uint8_t *mask, float keep_scale,
                            int B, int T, int C, int NH);

/* KV-cached inference for one sequence: Tq new queries at positions
 * pos0 .. pos0+Tq-1 attend to keys/values of positions 0 .. pos0+Tq-1.
 * q (Tq, ldq) (first C columns used), k (pos0+Tq, ldk), v (pos0+Tq, ldv)
 *   -> out (Tq, C). scratch holds NH * Tq * (pos0+Tq) floats.
 * With pos0 = 0 and Tq = T this equals the causal forward without dropout.
 * Cost is O((pos0+Tq) * Tq * C): one new token costs O(T * C). */
void ngq_attention_forward_cached(float *out, const float *q, int ldq, const float *k, int ldk,
                                  const float *v, int ldv, float *scratch, int pos0, int Tq,
                                  int C, int NH);
size_t ngq_attention_cached_scratch_floats(int pos0, int Tq, int NH);

/* ---- GELU ------------------------------------------------------------- */

/* inp (n) -> out (n) = gelu(inp). out may equal inp. */
void ngq_gelu_forward(float *out, const float *inp, size_t n);
/* inp (n), dout (n) -> dinp (n) += dout * gelu'(inp) */
void ngq_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* ---- residual --------------------------------------------------------- */

/* a (n), b (n) -> out (n) = a + b */
void ngq_residual_forward(float *out, const float *a, const float *b, size_t n);
/* dout (n) -> da (n) +=, db (n) += */
void ngq_residual_backward(float *da, float *db, const float *dout, size_t n);

/* ---- dropout ---------------------------------------------------------
 * A mask is 0/1 bytes; an element is dropped (0) with probability p, decided
 * by comparing a 32-bit draw with floor(p * 2^32). Masks are reproducible
 * from a 64-bit key alone, independent of the thread count: row r of a mask
 * draws from ngq_rng seeded with (key, stream r), one draw per element in
 * order. */

/* Mixes (seed, step, layer, site) into a key (splitmix64 chain). */
uint64_t ngq_dropout_key(uint64_t seed, uint64_t step, int layer, int site);
/* 1 / (1 - p) */
float ngq_dropout_keep_scale(float p);
/* mask (rows, row_len) */
void ngq_dropout_fill_mask(uint8_t *mask, size_t rows, size_t row_len, float p, uint64_t key);
/* Attention mask (B,NH,T,T): row (b,h,i) is mask row r = (b*NH+h)*T + i and
 * draws only its i+1 causal entries; entries above the diagonal are set 0. */
void ngq_dropout_fill_causal_mask(uint8_t *mask, int B, int NH, int T, float p, uint64_t key);
/* inp (n), mask (n) -> out (n) = inp * mask * keep_scale. out may equal inp. */
void ngq_dropout_forward(float *out, const float *inp, const uint8_t *mask, float keep_scale,
                         size_t n);
/* dout (n), mask (n) -> dinp (n) += dout * mask * keep_scale */
void ngq_dropout_backward(float *dinp, const float *dout, const uint8_t *mask, float keep_scale,
                          size_t n);
/* Fused residual dropout: residual (n), inp (n), mask (n)
 *   -> out (n) = residual + inp * mask * keep_scale. out may equal residual. */
void ngq_dropout_residual_forward(float *out, const float *residual, const float *inp,
                                  const uint8_t *mask, float keep_scale, size_t n);

/* ---- softmax + cross-entropy ----------------------------------------- */

/* logits (N,V), targets (N) or NULL -> probs (N,V) = softmax(logits),
 * losses (N) = -log softmax(logits)[target] (computed as logsumexp - logit,
 * not from probs; losses untouched when targets is NULL). probs may equal
 * logits (in place). */
void ngq_softmax_cross_entropy_forward(float *probs, float *losses, const float *logits,
                                       const uint16_t *targets, int N, int V);
/* probs (N,V), targets (N) -> dlogits (N,V) += (probs - onehot(target)) * dloss,
 * i.e. the gradient of dloss * sum_n losses[n]. */
void ngq_softmax_cross_entropy_backward(float *dlogits, const float *probs,
                                        const uint16_t *targets, float dloss, int N, int V);

/* ---- plain-loop references (tests only; single-threaded, libm) -------- */

void ngq_linear_forward_reference(float *out, const float *inp, const float *weight,
                                  const float *bias, int N, int K, int M);
void ngq_linear_backward_reference(float *dinp, float *dweight, float *dbias, const float *dout,
                                   const float *inp, const float *weight, int N, int K, int M);
/* att (B,NH,T,T) is written in full (zeros above the diagonal); no scratch. */
void ngq_attention_forward_reference(float *out, float *att, const float *qkv,
                                     const uint8_t *mask, float keep_scale, int B, int T, int C,
                                     int NH);
void ngq_attention_backward_reference(float *dqkv, const float *dout, const float *qkv,
                                      const float *att, const uint8_t *mask, float keep_scale,
                                      int B, int T, int C, int NH);
void ngq_gelu_forward_reference(float *out, const float *inp, size_t n);
void ngq_gelu_backward_reference(float *dinp, const float *inp, const float *dout, size_t n);
void ngq_softmax_cross_entropy_forward_reference(float *probs, float *losses,
                                                 const float *logits, const uint16_t *targets,
                                                 int N, int V);

#endif
