/* rng.c: PCG32 (XSH RR variant). Small, fast, statistically sound, and its
 * whole state is two integers, which makes bit-exact resume trivial. */
#include "nanogptq/rng.h"

#include <math.h>

void ngq_rng_seed(ngq_rng *rng, uint64_t seed, uint64_t stream)
{
    rng->state = 0;
    rng->inc = (stream << 1u) | 1u;
    ngq_rng_u32(rng);
    rng->state += seed;
    ngq_rng_u32(rng);
}

uint32_t ngq_rng_u32(ngq_rng *rng)
{
    uint64_t old = rng->state;
    rng->state = old * 6364136223846793005ULL + rng->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

uint32_t ngq_rng_below(ngq_rng *rng, uint32_t bound)
{
    uint32_t threshold = (uint32_t)(-bound) % bound;
    for (;;) {
        uint32_t r = ngq_rng_u32(rng);
        if (r >= threshold) return r % bound;
    }
}

float ngq_rng_uniform(ngq_rng *rng)
{
    return (float)(ngq_rng_u32(rng) >> 8) * (1.0f / 16777216.0f);
}

float ngq_rng_normal(ngq_rng *rng)
{
    /* u1 in (0, 1] so log() is finite. */
    double u1 = ((double)(ngq_rng_u32(rng) >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(ngq_rng_u32(rng) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
