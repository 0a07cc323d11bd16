/* optim.h: AdamW over one flat parameter buffer, the learning-rate schedule
 * (linear warmup, cosine decay to min_lr) and global-norm gradient clipping.
 * The optimizer knows nothing of the model: which elements get weight decay
 * is given as a list of [begin, end) ranges (the 2-D weights). */
#ifndef NANOGPTQ_OPTIM_H
#define NANOGPTQ_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "nanogptq/common.h"

typedef struct {
    double learning_rate, min_lr;
    int warmup_steps, max_steps;
} ngq_lr_schedule;

/* Learning rate for 0-based step: (step+1)/warmup * lr during warmup, then
 * cosine from lr to min_lr over the remaining steps. */
double ngq_lr_at(const ngq_lr_schedule *s, int step);

typedef struct {
    size_t begin, end;
} ngq_range;

typedef struct {
    size_t n;            /* parameters */
    float *m, *v;        /* first and second moments, n each (one allocation) */
    int64_t t;           /* updates done so far */
    double beta1, beta2, eps, weight_decay;
    ngq_range *decay;    /* ranges of parameters that get weight decay */
    int decay_count;
    unsigned char *decay_mask; /* derived: 1 where decayed */
} ngq_adamw;

ngq_status ngq_adamw_init(ngq_adamw *opt, size_t n, double beta1, double beta2, double eps, double weight_decay,
                          const ngq_range *decay, int decay_count, ngq_error *err);
void ngq_adamw_free(ngq_adamw *opt);

/* One update: params -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * params)
 * (decoupled decay, as torch.optim.AdamW), grads scaled by grad_scale first
 * (the clipping factor). Deterministic for a fixed thread count. */
void ngq_adamw_step(ngq_adamw *opt, float *params, const float *grads, float grad_scale, double lr);

/* L2 norm of grads, accumulated in double in fixed-size chunks (the result
 * does not depend on the thread count). */
double ngq_grad_norm(const float *grads, size_t n);

/* The factor that scales a gradient of norm `norm` to at most max_norm
 * (1 when max_norm is 0 or the norm is already small), as
 * torch.nn.utils.clip_grad_norm_: max_norm / (norm + 1e-6). */
float ngq_clip_scale(double norm, double max_norm);

#endif
