/* test_rng.c: the PCG32 generator is deterministic, seeds and streams differ,
 * bounded draws stay in range and the normal draws have the right moments. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "nanogptq/rng.h"

static void test_same_seed_same_stream(void **state)
{
    (void)state;
    ngq_rng a, b;
    ngq_rng_seed(&a, 1337, 7);
    ngq_rng_seed(&b, 1337, 7);
    for (int i = 0; i < 1000; i++) assert_int_equal(ngq_rng_u32(&a), ngq_rng_u32(&b));
}

static void test_different_seed_or_stream(void **state)
{
    (void)state;
    ngq_rng a, b, c;
    ngq_rng_seed(&a, 1, 0);
    ngq_rng_seed(&b, 2, 0);
    ngq_rng_seed(&c, 1, 1);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < 100; i++) {
        uint32_t x = ngq_rng_u32(&a);
        same_ab += x == ngq_rng_u32(&b);
        same_ac += x == ngq_rng_u32(&c);
    }
    assert_true(same_ab < 3);
    assert_true(same_ac < 3);
}

static void test_below_in_range_and_covers(void **state)
{
    (void)state;
    ngq_rng r;
    ngq_rng_seed(&r, 42, 0);
    int seen[7] = {0};
    for (int i = 0; i < 7000; i++) {
        uint32_t v = ngq_rng_below(&r, 7);
        assert_true(v < 7);
        seen[v]++;
    }
    for (int k = 0; k < 7; k++) assert_in_range(seen[k], 850, 1150);
}

static void test_normal_moments(void **state)
{
    (void)state;
    ngq_rng r;
    ngq_rng_seed(&r, 3, 0);
    double sum = 0, sum2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = ngq_rng_normal(&r);
        assert_true(isfinite(x));
        sum += x;
        sum2 += x * x;
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    assert_true(fabs(mean) < 0.01);
    assert_true(fabs(var - 1.0) < 0.02);
}

static void test_uniform_range(void **state)
{
    (void)state;
    ngq_rng r;
    ngq_rng_seed(&r, 9, 0);
    for (int i = 0; i < 100000; i++) {
        float u = ngq_rng_uniform(&r);
        assert_true(u >= 0.0f && u < 1.0f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_seed_same_stream),
        cmocka_unit_test(test_different_seed_or_stream),
        cmocka_unit_test(test_below_in_range_and_covers),
        cmocka_unit_test(test_normal_moments),
        cmocka_unit_test(test_uniform_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
