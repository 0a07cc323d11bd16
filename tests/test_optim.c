/* test_optim.c: the learning-rate schedule, AdamW against a double-precision
 * transcription of torch.optim.AdamW, gradient norm and clipping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>

#include "nanogptq/optim.h"

static void test_schedule(void **state)
{
    (void)state;
    ngq_lr_schedule s = {1e-3, 1e-4, 10, 110};
    assert_float_equal(ngq_lr_at(&s, 0), 1e-4, 1e-12);     /* (0+1)/10 * lr */
    assert_float_equal(ngq_lr_at(&s, 9), 1e-3, 1e-12);     /* end of warmup */
    assert_float_equal(ngq_lr_at(&s, 10), 1e-3, 1e-12);    /* cosine starts at lr */
    assert_float_equal(ngq_lr_at(&s, 60), 5.5e-4, 1e-12);  /* halfway: mean of lr and min_lr */
    assert_float_equal(ngq_lr_at(&s, 110), 1e-4, 1e-12);   /* at and past the end: min_lr */
    for (int step = 11; step < 110; step++) assert_true(ngq_lr_at(&s, step) < ngq_lr_at(&s, step - 1));
    ngq_lr_schedule no_warmup = {1e-3, 0, 0, 100};
    assert_float_equal(ngq_lr_at(&no_warmup, 0), 1e-3, 1e-12);
}

static void test_adamw_matches_reference(void **state)
{
    (void)state;
    enum { N = 37 };
    float params[N], grads[N];
    double ref_p[N], ref_m[N] = {0}, ref_v[N] = {0};
    for (int i = 0; i < N; i++) {
        params[i] = (float)(0.1 * sin(i + 1.0));
        ref_p[i] = params[i];
    }
    ngq_range decay = {5, 30};
    ngq_adamw opt;
    ngq_error err = {0};
    assert_int_equal(ngq_adamw_init(&opt, N, 0.9, 0.99, 1e-8, 0.1, &decay, 1, &err), NGQ_OK);
    for (int t = 1; t <= 5; t++) {
        for (int i = 0; i < N; i++) grads[i] = (float)(0.01 * cos(i * 0.7 + t));
        double lr = 1e-2 * t;
        ngq_adamw_step(&opt, params, grads, 0.5f, lr);
        for (int i = 0; i < N; i++) {
            double g = 0.5 * (double)grads[i];
            if (i >= 5 && i < 30) ref_p[i] *= 1.0 - lr * 0.1;
            ref_m[i] = 0.9 * ref_m[i] + 0.1 * g;
            ref_v[i] = 0.99 * ref_v[i] + 0.01 * g * g;
            double mhat = ref_m[i] / (1 - pow(0.9, t));
            double denom = sqrt(ref_v[i]) / sqrt(1 - pow(0.99, t)) + 1e-8;
            ref_p[i] -= lr * mhat / denom;
        }
    }
    for (int i = 0; i < N; i++) assert_float_equal(params[i], ref_p[i], 1e-5 * (1 + fabs(ref_p[i])));
    assert_int_equal(opt.t, 5);
    ngq_adamw_free(&opt);
}

static void test_adamw_bad_range(void **state)
{
    (void)state;
    ngq_range decay = {5, 50};
    ngq_adamw opt;
    ngq_error err = {0};
    assert_int_equal(ngq_adamw_init(&opt, 10, 0.9, 0.99, 1e-8, 0.1, &decay, 1, &err), NGQ_ERR_INTERNAL);
}

static void test_grad_norm_and_clip(void **state)
{
    (void)state;
    size_t n = 100003;
    float *g = malloc(n * sizeof *g);
    double ref = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = (float)((i % 7) - 3) * 0.5f;
        ref += (double)g[i] * g[i];
    }
    assert_float_equal(ngq_grad_norm(g, n), sqrt(ref), 1e-9 * sqrt(ref));
    assert_float_equal(ngq_clip_scale(10.0, 1.0), 1.0 / (10.0 + 1e-6), 1e-7);
    assert_float_equal(ngq_clip_scale(0.5, 1.0), 1.0, 0);
    assert_float_equal(ngq_clip_scale(100.0, 0.0), 1.0, 0);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_adamw_matches_reference),
        cmocka_unit_test(test_adamw_bad_range),
        cmocka_unit_test(test_grad_norm_and_clip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
