/* optim.c: AdamW, the learning-rate schedule and gradient clipping. */
#include "nanogptq/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ngq_lr_at(const ngq_lr_schedule *s, int step)
{
    if (step < s->warmup_steps) return s->learning_rate * (double)(step + 1) / (double)s->warmup_steps;
    if (step >= s->max_steps) return s->min_lr;
    int decay_steps = s->max_steps - s->warmup_steps;
    if (decay_steps <= 0) return s->learning_rate;
    double ratio = (double)(step - s->warmup_steps) / (double)decay_steps;
    double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
    return s->min_lr + coeff * (s->learning_rate - s->min_lr);
}

ngq_status ngq_adamw_init(ngq_adamw *opt, size_t n, double beta1, double beta2, double eps, double weight_decay,
                          const ngq_range *decay, int decay_count, ngq_error *err)
{
    memset(opt, 0, sizeof *opt);
    opt->n = n;
    opt->beta1 = beta1;
    opt->beta2 = beta2;
    opt->eps = eps;
    opt->weight_decay = weight_decay;
    opt->m = calloc(2 * n, sizeof(float));
    opt->decay_mask = calloc(n, 1);
    opt->decay = malloc((size_t)(decay_count > 0 ? decay_count : 1) * sizeof *decay);
    if (!opt->m || !opt->decay_mask || !opt->decay) {
        ngq_adamw_free(opt);
        return ngq_fail(err, NGQ_ERR_NOMEM, "cannot allocate optimizer state for %zu parameters (%zu MiB)", n,
                        (2 * n * sizeof(float)) >> 20);
    }
    opt->v = opt->m + n;
    for (int i = 0; i < decay_count; i++) {
        if (decay[i].begin > decay[i].end || decay[i].end > n) {
            ngq_adamw_free(opt);
            return ngq_fail(err, NGQ_ERR_INTERNAL, "weight-decay range %d [%zu, %zu) outside %zu parameters", i,
                            decay[i].begin, decay[i].end, n);
        }
        memset(opt->decay_mask + decay[i].begin, 1, decay[i].end - decay[i].begin);
        opt->decay[i] = decay[i];
    }
    opt->decay_count = decay_count;
    return NGQ_OK;
}

void ngq_adamw_free(ngq_adamw *opt)
{
    free(opt->m);
    free(opt->decay_mask);
    free(opt->decay);
    memset(opt, 0, sizeof *opt);
}

void ngq_adamw_step(ngq_adamw *opt, float *params, const float *grads, float grad_scale, double lr)
{
    opt->t++;
    const float b1 = (float)opt->beta1, b2 = (float)opt->beta2;
    const float bias1 = (float)(1.0 - pow(opt->beta1, (double)opt->t));
    const float bias2 = (float)(1.0 - pow(opt->beta2, (double)opt->t));
    const float step_size = (float)lr / bias1;
    const float bias2_sqrt = sqrtf(bias2);
    const float eps = (float)opt->eps;
    const float decay_factor = (float)(1.0 - lr * opt->weight_decay);
    float *m = opt->m, *v = opt->v;
    const unsigned char *mask = opt->decay_mask;
    const long n = (long)opt->n;
    /* Same arithmetic as torch.optim.AdamW (single-tensor path): decay first,
     * then moments, then p -= step_size * m / (sqrt(v)/sqrt(bias2) + eps). */
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) {
        float g = grads[i] * grad_scale;
        float p = params[i];
        if (mask[i]) p *= decay_factor;
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bias2_sqrt + eps;
        params[i] = p - step_size * mi / denom;
    }
}

double ngq_grad_norm(const float *grads, size_t n)
{
    /* fixed chunks summed in order: the result does not depend on threads */
    enum { CHUNK = 16384 };
    long chunks = (long)((n + CHUNK - 1) / CHUNK);
    double *partial = malloc((size_t)(chunks > 0 ? chunks : 1) * sizeof *partial);
    double total = 0;
#pragma omp parallel for schedule(static) if (partial)
    for (long c = 0; c < chunks; c++) {
        size_t begin = (size_t)c * CHUNK, end = begin + CHUNK < n ? begin + CHUNK : n;
        double s = 0;
        for (size_t i = begin; i < end; i++) s += (double)grads[i] * grads[i];
        if (partial) partial[c] = s;
        else total += s; /* no memory for partials: serial, same order */
    }
    if (partial) {
        for (long c = 0; c < chunks; c++) total += partial[c];
        free(partial);
    }
    return sqrt(total);
}

float ngq_clip_scale(double norm, double max_norm)
{
    if (max_norm <= 0) return 1.0f;
    double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}
