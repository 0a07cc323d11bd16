/* rng.h: the toolkit's own random number generator (PCG32, O'Neill 2014).
 * Every random choice (data split, batches, init, dropout, calibration windows,
 * sampling) draws from an ngq_rng seeded from the config, so a run is
 * reproducible from its seed alone. The state is plain data and is saved in
 * checkpoints so that resumed training continues the same stream. */
#ifndef NANOGPTQ_RNG_H
#define NANOGPTQ_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
    uint64_t inc;
} ngq_rng;

/* Seeds the generator; stream selects an independent sequence for the same seed. */
void ngq_rng_seed(ngq_rng *rng, uint64_t seed, uint64_t stream);
uint32_t ngq_rng_u32(ngq_rng *rng);
/* Uniform integer in [0, bound), without modulo bias. bound must be > 0. */
uint32_t ngq_rng_below(ngq_rng *rng, uint32_t bound);
/* Uniform float in [0, 1) with 24 random bits. */
float ngq_rng_uniform(ngq_rng *rng);
/* Standard normal (Box-Muller, no cached second value: the state alone defines the stream). */
float ngq_rng_normal(ngq_rng *rng);

#endif
